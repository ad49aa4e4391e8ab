//! The floor: what raw tokio-postgres does with the same locks, no pinlock in
//! between. Plain connections (named `<host>/floor` in `pg_stat_activity`),
//! prepared `pg_advisory_lock` / `pg_advisory_unlock`, and keys from a range
//! pinlock's entity keys (a small positive identity) never reach.
//!
//! The "fenced" floor runs pinlock's own lock statement instead (the grant
//! plus `nextval` of the fencing-token sequence): the server-side share of
//! pinlock's cost, without the host. It draws real tokens, which only leaves
//! gaps in the sequence (tokens are only ever compared, never counted).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use rand::Rng;
use tokio_postgres::{Client, NoTls, Statement};

use pinlock::db::DbConfig;

/// Lowest floor key: 2^62. Entity keys count up from 1 and never get here.
const FLOOR_KEY_MIN: i64 = 1 << 62;

/// A random key in [2^62, 2^63), for the floor only.
pub fn floor_key() -> i64 {
    rand::rng().random_range(FLOOR_KEY_MIN..=i64::MAX)
}

/// `n` distinct floor keys.
pub fn distinct_floor_keys(n: usize) -> Vec<i64> {
    let mut keys = std::collections::HashSet::with_capacity(n);
    while keys.len() < n {
        keys.insert(floor_key());
    }
    keys.into_iter().collect()
}

/// pinlock's exclusive lock statement: the grant, then the fencing token.
const FENCED_LOCK: &str = pinlock::db::LOCK_EXCLUSIVE_SQL;

/// Which lock statement a floor connection runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockSql {
    /// `SELECT pg_advisory_lock($1)`.
    Plain,
    /// pinlock's statement: the lock, then a fencing token.
    Fenced,
}

/// One raw connection with the three statements prepared.
pub struct FloorConn {
    client: Client,
    lock: Statement,
    fenced_lock: Statement,
    unlock: Statement,
}

impl FloorConn {
    /// Opens a connection to the configured database as `<app>/<role>`.
    pub async fn connect(config: &DbConfig, app: &str, role: &str) -> anyhow::Result<Self> {
        let mut driver = config.driver_config().clone();
        driver.application_name(format!("{app}/{role}"));
        let (client, connection) = driver
            .connect(NoTls)
            .await
            .with_context(|| format!("opening a raw connection to {}", config.display_target()))?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%err, "floor connection ended");
            }
        });
        let lock = client.prepare("SELECT pg_advisory_lock($1)").await.context("preparing the floor lock")?;
        let fenced_lock = client.prepare(FENCED_LOCK).await.context("preparing the fenced floor lock")?;
        let unlock = client.prepare("SELECT pg_advisory_unlock($1)").await.context("preparing the floor unlock")?;
        Ok(Self { client, lock, fenced_lock, unlock })
    }

    /// Opens `n` connections at once.
    pub async fn connect_many(config: &DbConfig, app: &str, n: usize) -> anyhow::Result<Vec<Self>> {
        futures_util::future::try_join_all((0..n).map(|_| Self::connect(config, app, "floor"))).await
    }

    /// The raw client, for ad-hoc queries (version, monitoring).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Waits for the exclusive lock on `key` with the chosen statement.
    pub async fn lock_with(&self, sql: LockSql, key: i64) -> anyhow::Result<()> {
        let statement = match sql {
            LockSql::Plain => &self.lock,
            LockSql::Fenced => &self.fenced_lock,
        };
        self.client.query_one(statement, &[&key]).await.context("floor lock")?;
        Ok(())
    }

    /// Releases `key`; an error if it was not held.
    pub async fn unlock(&self, key: i64) -> anyhow::Result<()> {
        let row = self.client.query_one(&self.unlock, &[&key]).await.context("floor pg_advisory_unlock")?;
        if !row.try_get::<_, bool>(0)? {
            bail!("floor unlock of {key}: not held");
        }
        Ok(())
    }

    /// One lock and unlock, sequentially; returns how long the pair took.
    pub async fn lock_unlock(&self, sql: LockSql, key: i64) -> anyhow::Result<u64> {
        let started = Instant::now();
        self.lock_with(sql, key).await?;
        self.unlock(key).await?;
        Ok(nanos_since(started))
    }

    /// `rounds` times: lock `key`, note the grant and release instants (wall
    /// clock, like the bench guest's `handoff`), unlock.
    pub async fn handoff(&self, sql: LockSql, key: i64, rounds: usize) -> anyhow::Result<Vec<(u64, u64)>> {
        let mut events = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            self.lock_with(sql, key).await?;
            let grant = wall_clock_ns();
            let release = wall_clock_ns();
            self.unlock(key).await?;
            events.push((grant, release));
        }
        Ok(events)
    }
}

/// Nanoseconds since `started`.
pub fn nanos_since(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Nanoseconds since the Unix epoch (0 if the clock is before it).
pub fn wall_clock_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)).unwrap_or(0)
}
