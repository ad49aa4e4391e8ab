//! The lock engine (`db::JobSession`) against real PostgreSQL, without wasm:
//! pinning, timeouts and their race with the grant, fencing, stacking,
//! limits, the session bound, migrations and key mapping.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pinlock::db::{Database, DbConfig, DbSettings, Fencing, KvError, LockError, LockMode};
use tokio_postgres::NoTls;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread")]
async fn a_held_lock_stays_on_one_backend_from_grant_to_release() {
    let db = database().await;
    let observer = observer().await;
    let job = db.job_session();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let grant_a = job.acquire(a, LockMode::Exclusive, None).await.expect("a");
    let pid = job.backend_pid().await.expect("session");
    job.kv_set("pinning", &a.to_string(), b"x").await.expect("kv");
    let grant_b = job.acquire(b, LockMode::Shared, None).await.expect("b");
    assert_eq!(job.backend_pid().await, Some(pid), "every call of the job stays on one session");
    for (entity, mode) in [(a, "ExclusiveLock"), (b, "ShareLock")] {
        let rows = locks_on(&observer, key_of(&observer, entity).await).await;
        assert_eq!(rows, vec![LockRow { pid, mode: mode.into(), granted: true }]);
    }
    job.release(grant_a.id).await.expect("release a");
    job.release(grant_b.id).await.expect("release b");
    assert_eq!(job.backend_pid().await, Some(pid));
    // A release on a shared session sends its unlock without waiting for it.
    let key = key_of(&observer, a).await;
    assert!(wait_for_locks(&observer, key, <[_]>::is_empty).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn try_acquire_never_waits_and_reports_taken() {
    let db = database().await;
    let (holder, other) = (db.job_session(), db.job_session());
    let entity = Uuid::new_v4();
    let held = holder.try_acquire(entity, LockMode::Exclusive).await.expect("free");
    assert!(held.is_some());
    let started = Instant::now();
    assert_eq!(other.try_acquire(entity, LockMode::Shared).await, Ok(None));
    assert!(started.elapsed() < Duration::from_secs(1));
    holder.release_all().await;
    assert!(other.try_acquire(entity, LockMode::Shared).await.expect("free again").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timed_out_wait_is_typed_and_leaves_nothing_held() {
    let Setup { db, observer, entity, key } = setup().await;
    observer.execute("SELECT pg_advisory_lock($1)", &[&key]).await.expect("hold");
    let waiter = db.job_session();
    let started = Instant::now();
    let result = waiter.acquire(entity, LockMode::Exclusive, Some(Duration::from_millis(150))).await;
    assert_eq!(result, Err(LockError::Timeout));
    assert!(started.elapsed() >= Duration::from_millis(150));
    observer.execute("SELECT pg_advisory_unlock($1)", &[&key]).await.expect("unlock");
    // The cancelled wait must not be granted later.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(locks_on(&observer, key).await.is_empty(), "the cancelled wait was granted after all");
    // The session is still usable.
    assert!(waiter.acquire(entity, LockMode::Exclusive, None).await.is_ok());
}

/// The grant and the timeout race: the holder releases just as the waiter's
/// timeout fires. Whatever the waiter is told must match what the server holds.
#[tokio::test(flavor = "multi_thread")]
async fn timeout_racing_the_grant_never_leaves_a_stray_lock() {
    let db = database().await;
    let observer = observer().await;
    let (mut timeouts, mut grants) = (0, 0);
    // At least 40 rounds, and on until the race itself (granted after the
    // timeout fired, undone before `Timeout` is reported) has happened.
    for round in 0..400u64 {
        if round >= 40 && db.late_grants_undone() > 0 {
            break;
        }
        let entity = Uuid::new_v4();
        let key = key_of(&observer, entity).await;
        observer.execute("SELECT pg_advisory_lock($1)", &[&key]).await.expect("hold");
        let waiter = db.job_session();
        let wait = {
            let waiter = waiter.clone();
            tokio::spawn(
                async move { waiter.acquire(entity, LockMode::Exclusive, Some(Duration::from_millis(30))).await },
            )
        };
        // Release around the moment the timeout fires (27..33 ms).
        tokio::time::sleep(Duration::from_micros(27_000 + (round % 7) * 1_000)).await;
        observer.execute("SELECT pg_advisory_unlock($1)", &[&key]).await.expect("unlock");
        let result = wait.await.expect("task");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let rows = locks_on(&observer, key).await;
        match result {
            Ok(_) => {
                grants += 1;
                assert_eq!(rows.len(), 1, "granted: exactly the waiter holds it");
            }
            Err(LockError::Timeout) => {
                timeouts += 1;
                assert!(rows.is_empty(), "timed out, yet the server holds it: {rows:?}");
            }
            Err(e) => panic!("unexpected {e}"),
        }
        // A cancel sent for that wait may land late, on whatever runs next:
        // it must not fail the job's next calls.
        tokio::time::sleep(Duration::from_micros(500 * (round % 5))).await;
        waiter.kv_set("race", &entity.to_string(), b"x").await.expect("next call after a cancel");
        let next = waiter.acquire(Uuid::new_v4(), LockMode::Exclusive, None).await;
        assert!(next.is_ok(), "next acquire after a cancel: {next:?}");
        waiter.release_all().await;
    }
    let late = db.late_grants_undone();
    eprintln!("race rounds: {grants} granted, {timeouts} timed out, of which {late} granted late and undone");
    assert!(late > 0, "the race branch never ran: the test did not test it");
}

/// Why the engine cancels instead of dropping the wait: the naive way (drop
/// the future on timeout) leaves the server to grant the lock later.
#[tokio::test(flavor = "multi_thread")]
async fn dropping_a_waiting_future_is_not_enough() {
    let observer = observer().await;
    let (naive, connection) = tokio_postgres::connect(&database_url(), NoTls).await.expect("connect");
    tokio::spawn(connection);
    let naive_pid: i32 = naive.query_one("SELECT pg_backend_pid()", &[]).await.expect("pid").get(0);
    let key = key_of(&observer, Uuid::new_v4()).await;
    observer.execute("SELECT pg_advisory_lock($1)", &[&key]).await.expect("hold");
    let waited =
        tokio::time::timeout(Duration::from_millis(100), naive.execute("SELECT pg_advisory_lock($1)", &[&key])).await;
    assert!(waited.is_err(), "the naive wait timed out client-side");
    observer.execute("SELECT pg_advisory_unlock($1)", &[&key]).await.expect("unlock");
    let rows = wait_for_locks(&observer, key, |rows| rows.iter().any(|r| r.granted)).await;
    assert_eq!(rows.first().map(|r| (r.pid, r.granted)), Some((naive_pid, true)), "the dropped wait got the lock");
}

#[tokio::test(flavor = "multi_thread")]
async fn fencing_tokens_increase_across_holders_and_hosts() {
    let (host_a, host_b) = (database().await, database().await);
    let entity = Uuid::new_v4();
    let mut last = None;
    for round in 0..10 {
        let db = if round % 2 == 0 { &host_a } else { &host_b };
        let job = db.job_session();
        let grant = job.acquire(entity, LockMode::Exclusive, None).await.expect("grant");
        assert!(grant.fence > last, "token {:?} after {last:?}", grant.fence);
        last = grant.fence;
        job.release_all().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_entity_twice_in_one_job_needs_two_releases() {
    let Setup { db, observer, entity, key } = setup().await;
    let job = db.job_session();
    let first = job.acquire(entity, LockMode::Exclusive, None).await.expect("first");
    let second = job.acquire(entity, LockMode::Exclusive, Some(Duration::ZERO)).await.expect("stacked");
    assert!(second.fence > first.fence);
    job.release(first.id).await.expect("release first");
    assert_eq!(locks_on(&observer, key).await.len(), 1, "still held by the second grant");
    assert!(job.is_held(second.id).await);
    job.release(second.id).await.expect("release second");
    // Its unlock is sent, not waited for (the job's end waits for it).
    assert!(wait_for_locks(&observer, key, <[_]>::is_empty).await.is_empty());
    assert!(matches!(job.release(second.id).await, Err(LockError::InvalidInput(_))), "double release");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_entities_and_limits_are_typed_errors() {
    let db = database_with(DbSettings { max_locks_per_job: 3, ..DbSettings::default() }).await;
    let job = db.job_session();
    assert!(matches!(job.acquire(Uuid::nil(), LockMode::Exclusive, None).await, Err(LockError::InvalidInput(_))));
    assert!(matches!(job.try_acquire(Uuid::max(), LockMode::Shared).await, Err(LockError::InvalidInput(_))));
    for _ in 0..3 {
        job.acquire(Uuid::new_v4(), LockMode::Shared, None).await.expect("within the limit");
    }
    assert!(matches!(job.acquire(Uuid::new_v4(), LockMode::Shared, None).await, Err(LockError::LimitExceeded(_))));
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_beyond_the_session_bound_wait_instead_of_failing() {
    let db = database_with(DbSettings { max_sessions: 1, ..DbSettings::default() }).await;
    let first = db.job_session();
    first.acquire(Uuid::new_v4(), LockMode::Exclusive, None).await.expect("first");
    let second = db.job_session();
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        second.acquire(Uuid::new_v4(), LockMode::Exclusive, None).await.map(|_| started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "the second job must wait for the only session");
    first.release_all().await;
    let waited = waiting.await.expect("task").expect("granted once the session is free");
    assert!(waited >= Duration::from_millis(200));
    assert_eq!(db.sessions_opened(), 1, "the session was reused, not reopened");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_database_is_unavailable_not_a_crash() {
    let config = DbConfig::parse("host=127.0.0.1 port=1 user=postgres dbname=test").expect("config");
    let db = Database::new(config, DbSettings::default());
    assert!(db.migrate().await.is_err());
    let job = db.job_session();
    match job.acquire(Uuid::new_v4(), LockMode::Exclusive, None).await {
        Err(LockError::Unavailable(message)) => assert!(message.contains("127.0.0.1:1"), "{message}"),
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert!(job.kv_get("bucket", "key").await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_hosts_migrate_an_empty_database_cleanly() {
    let admin = observer().await;
    let name = format!("pinlock_migrate_{}", Uuid::new_v4().simple());
    admin.execute(&format!("CREATE DATABASE {name}"), &[]).await.expect("create database");
    // In a libpq key=value string the last dbname wins.
    let url = format!("{} dbname={name}", database_url());
    let migrations = (0..8).map(|_| {
        let db = Database::new(DbConfig::parse(&url).expect("url"), DbSettings::default());
        tokio::spawn(async move { db.migrate().await })
    });
    let results = futures_util::future::join_all(migrations).await;
    admin.execute(&format!("DROP DATABASE {name} WITH (FORCE)"), &[]).await.expect("drop database");
    for result in results {
        result.expect("task").expect("every host migrates cleanly");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn entity_keys_are_stable_across_hosts_and_distinct() {
    let (host_a, host_b) = (database().await, database().await);
    let observer = observer().await;
    let entity = Uuid::new_v4();
    let (ja, jb) = (host_a.job_session(), host_b.job_session());
    let a = ja.acquire(entity, LockMode::Shared, None).await.expect("a");
    let b = jb.acquire(entity, LockMode::Shared, None).await.expect("b");
    assert_eq!(a.key, b.key);
    assert_eq!(a.key, key_of(&observer, entity).await);
    let other = ja.acquire(Uuid::new_v4(), LockMode::Shared, None).await.expect("other");
    assert_ne!(other.key, a.key);
    assert!(other.key >= 1 << 48, "new keys leave the small-integer range: {}", other.key);
}

#[tokio::test(flavor = "multi_thread")]
async fn key_value_round_trip_and_validation() {
    let db = database().await;
    let job = db.job_session();
    let key = Uuid::new_v4().to_string();
    assert_eq!(job.kv_get("kv-test", &key).await, Ok(None));
    assert_eq!(job.kv_exists("kv-test", &key).await, Ok(false));
    job.kv_set("kv-test", &key, b"one").await.expect("set");
    job.kv_set("kv-test", &key, b"two").await.expect("overwrite");
    assert_eq!(job.kv_get("kv-test", &key).await, Ok(Some(b"two".to_vec())));
    assert_eq!(job.kv_exists("kv-test", &key).await, Ok(true));
    job.kv_delete("kv-test", &key).await.expect("delete");
    job.kv_delete("kv-test", &key).await.expect("deleting a missing key is fine");
    assert_eq!(job.kv_get("kv-test", &key).await, Ok(None));
    assert!(matches!(job.kv_get("", &key).await, Err(pinlock::db::KvError::NoSuchStore(_))));
    assert!(matches!(job.kv_set("kv-test", "", b"v").await, Err(pinlock::db::KvError::InvalidInput(_))));
    assert!(matches!(job.kv_set("kv-test", "a\0b", b"v").await, Err(pinlock::db::KvError::InvalidInput(_))));
}

/// Every grant of a job whose backend is terminated reports `lost`, stacked
/// ones included; the job then carries on with a fresh session.
#[tokio::test(flavor = "multi_thread")]
async fn every_grant_on_a_terminated_session_is_lost() {
    let Setup { db, observer, entity, .. } = setup().await;
    let job = db.job_session();
    let first = job.acquire(entity, LockMode::Exclusive, None).await.expect("first");
    let second = job.acquire(entity, LockMode::Exclusive, None).await.expect("stacked");
    let pid = job.backend_pid().await.expect("pid");
    observer.execute("SELECT pg_terminate_backend($1, 5000)", &[&pid]).await.expect("terminate");
    for _ in 0..100 {
        if !job.is_held(first.id).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!job.is_held(first.id).await && !job.is_held(second.id).await);
    assert_eq!(job.release(first.id).await, Err(LockError::Lost));
    assert_eq!(job.release(second.id).await, Err(LockError::Lost));
    let again = job.acquire(entity, LockMode::Exclusive, None).await.expect("a fresh session");
    assert_ne!(job.backend_pid().await, Some(pid));
    assert!(job.is_held(again.id).await);
}

/// Fail closed in the lock engine: once the session under a job's grants is
/// terminated, every lock and key-value call answers `Lost` without reaching
/// the database (no new session is opened, the stored value is unchanged),
/// until every lost grant has been released; then the job works again, on a
/// new session. The twin without the kill writes on the same session.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_session_fences_the_job_until_every_lost_grant_is_released() {
    for kill in [true, false] {
        let Setup { db, observer, entity, .. } = setup().await;
        let job = db.job_session();
        let value_key = Uuid::new_v4().to_string();
        let first = job.acquire(entity, LockMode::Exclusive, None).await.expect("first");
        let stacked = job.acquire(entity, LockMode::Exclusive, None).await.expect("stacked");
        let other = job.acquire(Uuid::new_v4(), LockMode::Shared, None).await.expect("other");
        job.kv_set("fence", &value_key, b"before").await.expect("write under the locks");
        let pid = job.backend_pid().await.expect("pid");
        if kill {
            observer.execute("SELECT pg_terminate_backend($1, 5000)", &[&pid]).await.expect("terminate");
            for _ in 0..200 {
                if !job.is_held(first.id).await {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let opened = db.sessions_opened();
        let write = job.kv_set("fence", &value_key, b"late").await;
        if !kill {
            assert_eq!(write, Ok(()));
            assert_eq!(job.backend_pid().await, Some(pid), "the write ran on the session holding the locks");
            continue;
        }
        assert!(!job.is_held(first.id).await && !job.is_held(other.id).await);
        assert_eq!(write, Err(KvError::Lost));
        assert_eq!(job.kv_get("fence", &value_key).await, Err(KvError::Lost));
        assert_eq!(job.acquire(Uuid::new_v4(), LockMode::Exclusive, None).await, Err(LockError::Lost));
        assert_eq!(job.try_acquire(Uuid::new_v4(), LockMode::Shared).await, Err(LockError::Lost));
        // Acknowledging some lost grants is not enough.
        assert_eq!(job.release(first.id).await, Err(LockError::Lost));
        assert_eq!(job.release(stacked.id).await, Err(LockError::Lost));
        assert_eq!(job.kv_set("fence", &value_key, b"late").await, Err(KvError::Lost));
        assert_eq!(db.sessions_opened(), opened, "nothing of the fenced job reached the database");
        assert_eq!(stored_value(&observer, "fence", &value_key).await.as_deref(), Some(&b"before"[..]));
        // The last lost grant is released: the fence lifts.
        assert_eq!(job.release(other.id).await, Err(LockError::Lost));
        job.kv_set("fence", &value_key, b"after").await.expect("writes again once acknowledged");
        assert_ne!(job.backend_pid().await, Some(pid), "on a new session");
        assert_eq!(job.kv_get("fence", &value_key).await, Ok(Some(b"after".to_vec())));
    }
}

/// `try_acquire` never waits for another job, for a session either: with
/// the only session taken it answers `Unavailable` at once. An acquire's
/// timeout covers the wait for a session: it ends in `Timeout` on time.
#[tokio::test(flavor = "multi_thread")]
async fn waiting_for_a_session_is_bounded_by_what_the_guest_asked() {
    let db = database_with(DbSettings { max_sessions: 1, ..DbSettings::default() }).await;
    let holder = db.job_session();
    holder.acquire(Uuid::new_v4(), LockMode::Exclusive, None).await.expect("takes the only session");
    let other = db.job_session();
    let started = Instant::now();
    let tried = other.try_acquire(Uuid::new_v4(), LockMode::Exclusive).await;
    assert!(matches!(tried, Err(LockError::Unavailable(ref m)) if m.contains("in use")), "{tried:?}");
    assert!(started.elapsed() < Duration::from_millis(100), "try waited {:?}", started.elapsed());
    let started = Instant::now();
    let waited = other.acquire(Uuid::new_v4(), LockMode::Exclusive, Some(Duration::from_millis(300))).await;
    assert_eq!(waited, Err(LockError::Timeout));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_millis(1000), "took {took:?}");
    // Control: once the session is free, the same calls succeed.
    holder.release_all().await;
    assert!(other.try_acquire(Uuid::new_v4(), LockMode::Exclusive).await.expect("free").is_some());
}

/// The fencing token is drawn after the grant: a waiter queued behind a
/// holder that then takes a stacked grant on the same entity gets a larger
/// token than that stacked grant. (Drawn when the wait began, the waiter's
/// token would be the smaller one.)
#[tokio::test(flavor = "multi_thread")]
async fn a_waiter_gets_a_token_larger_than_the_holders_later_grants() {
    let Setup { db, observer, entity, key } = setup().await;
    let holder = db.job_session();
    let first = holder.acquire(entity, LockMode::Exclusive, None).await.expect("holder");
    // Another host, so that the wait is the server's.
    let waiter = database().await.job_session();
    let waiting = {
        let waiter = waiter.clone();
        tokio::spawn(async move { waiter.acquire(entity, LockMode::Exclusive, Some(Duration::from_secs(5))).await })
    };
    wait_for_locks(&observer, key, |rows| rows.iter().any(|r| !r.granted)).await;
    let stacked = holder.acquire(entity, LockMode::Exclusive, None).await.expect("stacked");
    assert!(stacked.fence > first.fence);
    holder.release_all().await;
    let granted = waiting.await.expect("task").expect("granted after the holder ends");
    assert!(granted.fence > stacked.fence, "waiter {:?} vs stacked {:?}", granted.fence, stacked.fence);
}

/// Server and role defaults that would end or cancel a pinned session or a
/// lock wait (`idle_session_timeout`, `statement_timeout`, `lock_timeout`,
/// `idle_in_transaction_session_timeout`) do not reach pinlock's sessions:
/// a lock held across idle time and a lock wait longer than every timeout
/// both succeed. The twin, a plain session on the same database, is ended
/// by `idle_session_timeout`.
#[tokio::test(flavor = "multi_thread")]
async fn server_timeouts_do_not_reach_pinned_sessions() {
    let admin = observer().await;
    let name = format!("pinlock_timeouts_{}", Uuid::new_v4().simple());
    admin.execute(&format!("CREATE DATABASE {name}"), &[]).await.expect("create database");
    for setting in [
        "idle_session_timeout = '300ms'",
        "statement_timeout = '200ms'",
        "lock_timeout = '100ms'",
        "idle_in_transaction_session_timeout = '100ms'",
    ] {
        admin.execute(&format!("ALTER DATABASE {name} SET {setting}"), &[]).await.expect("set a default");
    }
    let url = format!("{} dbname={name}", database_url());
    let db = Database::new(DbConfig::parse(&url).expect("url"), DbSettings::default());
    db.migrate().await.expect("migrate");

    // The twin: a plain session idles past idle_session_timeout and is ended.
    let (plain, connection) = tokio_postgres::connect(&url, NoTls).await.expect("plain session");
    let plain_ended = tokio::spawn(connection);
    plain.simple_query("SELECT 1").await.expect("plain query");

    let (holder, contended) = (db.job_session(), Uuid::new_v4());
    let (other, connection) = tokio_postgres::connect(&url, NoTls).await.expect("other");
    tokio::spawn(connection);
    let job = db.job_session();
    let held = job.acquire(Uuid::new_v4(), LockMode::Exclusive, None).await.expect("grant");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(job.is_held(held.id).await, "the pinned session outlived idle_session_timeout");
    job.kv_set("timeouts", "k", b"v").await.expect("the session still serves");
    holder.acquire(contended, LockMode::Exclusive, None).await.expect("holder");
    let waiting = {
        let job = job.clone();
        tokio::spawn(async move { job.acquire(contended, LockMode::Exclusive, Some(Duration::from_secs(5))).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    holder.release_all().await;
    waiting.await.expect("task").expect("a wait longer than statement_timeout and lock_timeout is granted");
    assert!(plain_ended.is_finished(), "control: idle_session_timeout ends a plain session");
    job.release_all().await;
    drop(other);
    drop((job, holder, db));
    admin.execute(&format!("DROP DATABASE {name} WITH (FORCE)"), &[]).await.expect("drop database");
}

/// A job with fencing off is granted the same locks, on the server, without
/// tokens: by a try, by a wait on the server, and stacked. The default job
/// beside it (the control) gets a token each time.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_with_fencing_off_is_granted_locks_without_tokens() {
    let Setup { db, observer, entity, key } = setup().await;
    let fenced = db.job_session();
    let granted = fenced.acquire(entity, LockMode::Exclusive, None).await.expect("fenced grant");
    assert!(granted.fence.is_some(), "the default draws a token");
    fenced.release_all().await;

    let job = db.job_session();
    job.set_fencing(Fencing::Off);
    let first = job.try_acquire(entity, LockMode::Shared).await.expect("try").expect("free");
    let stacked = job.acquire(entity, LockMode::Shared, None).await.expect("stacked");
    assert_eq!((first.fence, stacked.fence), (None, None));
    assert!(locks_on(&observer, key).await.iter().any(|r| r.granted), "held on the server");
    job.release_all().await;

    // A wait the server answers (the holder is another host).
    let other = database().await.job_session();
    other.acquire(entity, LockMode::Exclusive, None).await.expect("other host");
    let waiter = db.job_session();
    waiter.set_fencing(Fencing::Off);
    let waiting = {
        let waiter = waiter.clone();
        tokio::spawn(async move { waiter.acquire(entity, LockMode::Exclusive, Some(Duration::from_secs(5))).await })
    };
    wait_for_locks(&observer, key, |rows| rows.iter().any(|r| !r.granted)).await;
    other.release_all().await;
    let granted = waiting.await.expect("task").expect("granted after the other host");
    assert_eq!(granted.fence, None);
    waiter.release_all().await;
    assert_eq!(locks_on(&observer, key).await, vec![]);
}
