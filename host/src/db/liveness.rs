//! How each side of a session notices that the other is gone, and why the
//! holder always gives up first.
//!
//! A session lock is freed when the server's backend exits. In an outage
//! that closes no socket (a network partition, a host frozen or cut off),
//! the backend learns of it only through TCP: keepalive probes when the
//! connection is idle, retransmission when data is unacknowledged. The host
//! learns of it the same way. Both sides' timers are set explicitly here:
//!
//! | side | idle probes | unacknowledged data | gives up after the last packet it received |
//! |---|---|---|---|
//! | host (client) | [`CLIENT_KEEPALIVE_IDLE`] + [`CLIENT_KEEPALIVE_COUNT`] × [`CLIENT_KEEPALIVE_INTERVAL`] | [`CLIENT_TCP_USER_TIMEOUT`] | ≤ 6 s |
//! | server (backend) | `tcp_keepalives_idle` + count × interval ([`SERVER_SETTINGS`]) | `tcp_user_timeout` | 20 s |
//!
//! The host sees every packet the server sends and the server every packet
//! the host sends, and an idle host probes every
//! [`CLIENT_KEEPALIVE_IDLE`]; so when a partition starts at T, the host's
//! last packet from the server is at most T, the server's last from the
//! host at least T − 2 s, and:
//!
//! - the host declares the session lost (guards `is-held() == false`,
//!   writes fenced) by T + 6 s;
//! - the server cannot free the locks before T − 2 s + 20 s = T + 18 s, and
//!   does free them by about T + 20 s (a backend waiting for a lock notices
//!   through `client_connection_check_interval`, every 2 s);
//!
//! a margin of at least 12 s, for a 2 s requirement. `host/tests/partition.rs`
//! measures both deadlines with packets dropped in the kernel.
//!
//! A server that lacks one of these settings (older than PostgreSQL 14 has
//! no `client_connection_check_interval` or `idle_session_timeout`) keeps
//! working; the host warns once.

use std::time::Duration;

/// Idle time before the host's first keepalive probe.
pub(crate) const CLIENT_KEEPALIVE_IDLE: Duration = Duration::from_secs(2);
/// Time between the host's keepalive probes.
pub(crate) const CLIENT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// Unanswered probes after which the host drops the connection.
pub(crate) const CLIENT_KEEPALIVE_COUNT: u32 = 3;
/// How long data the host sent may stay unacknowledged.
pub(crate) const CLIENT_TCP_USER_TIMEOUT: Duration = Duration::from_secs(6);

/// Server settings every session pins at open, as (name, value). The
/// timeouts are off because a server or role default must not end or cancel
/// a pinned session, or a lock wait, behind the host's back (a 57014 from
/// `statement_timeout` would also look like a stale cancel). The rest are the
/// server's side of the table above.
pub(crate) const SERVER_SETTINGS: &[(&str, &str)] = &[
    ("statement_timeout", "0"),
    ("lock_timeout", "0"),
    ("idle_in_transaction_session_timeout", "0"),
    ("idle_session_timeout", "0"),
    // A backend waiting for a lock checks its client's socket this often (ms).
    ("client_connection_check_interval", "2000"),
    ("tcp_keepalives_idle", "10"),
    ("tcp_keepalives_interval", "2"),
    ("tcp_keepalives_count", "5"),
    ("tcp_user_timeout", "20000"),
];

/// Warns (once per process) about settings the server does not have.
pub(crate) fn warn_missing(missing: &[String]) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    if missing.is_empty() {
        return;
    }
    WARNED.call_once(|| {
        tracing::warn!(
            settings = %missing.join(", "),
            "this PostgreSQL server lacks some session settings pinlock pins; continuing without them"
        );
    });
}
