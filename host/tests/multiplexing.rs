//! Many jobs' locks on a few shared sessions (docs/design/sessions.md),
//! against real PostgreSQL: the session count stays bounded, the host's lock
//! table keeps jobs that share a session apart, local cycles are refused at
//! once, and losing one session costs only the jobs whose locks were on it.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pinlock::db::{Database, DbSettings, LockError, LockMode};
use uuid::Uuid;

/// Sessions of this host (by application name) the server sees now.
async fn sessions_of(observer: &tokio_postgres::Client, pids: &HashSet<i32>) -> usize {
    let pids: Vec<i32> = pids.iter().copied().collect();
    let row = observer
        .query_one("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)", &[&pids])
        .await
        .expect("count sessions");
    row.get::<_, i64>(0) as usize
}

/// 200 jobs each holding 5 locks at once fit on the 3 shared sessions of a
/// 4-session host. The twin: with sharing off, the same host runs out of
/// sessions at the fifth job.
#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_jobs_hold_their_locks_on_three_sessions() {
    let observer = observer().await;
    let db = database_with(DbSettings { max_sessions: 4, shared_sessions: 3, ..DbSettings::default() }).await;
    let mut jobs = Vec::new();
    let mut pids = HashSet::new();
    for _ in 0..200 {
        let job = db.job_session();
        for _ in 0..5 {
            job.try_acquire(Uuid::new_v4(), LockMode::Exclusive).await.expect("granted").expect("free");
        }
        pids.insert(job.backend_pid().await.expect("a session"));
        jobs.push(job);
    }
    assert!(pids.len() <= 3, "{} sessions", pids.len());
    assert_eq!(sessions_of(&observer, &pids).await, pids.len());
    let pid_list: Vec<i32> = pids.iter().copied().collect();
    let held: i64 = observer
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = ANY($1)",
            &[&pid_list],
        )
        .await
        .expect("count locks")
        .get(0);
    assert_eq!(held, 1000);
    for job in &jobs {
        job.release_all().await;
    }
    let held: i64 = observer
        .query_one("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = ANY($1)", &[&pid_list])
        .await
        .expect("count locks")
        .get(0);
    assert_eq!(held, 0, "every lock released at the jobs' end");

    // Twin: a session per job.
    let dedicated = database_with(DbSettings { max_sessions: 4, shared_sessions: 0, ..DbSettings::default() }).await;
    let mut holders = Vec::new();
    for _ in 0..4 {
        let job = dedicated.job_session();
        job.try_acquire(Uuid::new_v4(), LockMode::Exclusive).await.expect("granted").expect("free");
        holders.push(job);
    }
    let fifth = dedicated.job_session().try_acquire(Uuid::new_v4(), LockMode::Exclusive).await;
    assert!(matches!(fifth, Err(LockError::Unavailable(_))), "{fifth:?}");
    for job in holders {
        job.release_all().await;
    }
}

/// Two jobs on one shared session both ask for one entity exclusively: the
/// second waits until the first releases, although PostgreSQL would grant
/// the same session the lock twice (the control shows it does).
#[tokio::test(flavor = "multi_thread")]
async fn jobs_sharing_a_session_exclude_each_other() {
    let Setup { observer, entity, key, .. } = setup().await;
    let db = database_with(DbSettings { max_sessions: 2, shared_sessions: 1, ..DbSettings::default() }).await;
    let (first, second) = (db.job_session(), db.job_session());
    let granted = first.acquire(entity, LockMode::Exclusive, None).await.expect("first");
    let waiting = {
        let second = second.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let grant = second.acquire(entity, LockMode::Exclusive, Some(Duration::from_secs(5))).await;
            (grant, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the second job waits while the first holds the entity");
    let pid = first.backend_pid().await.expect("session");
    first.release(granted.id).await.expect("release");
    let (grant, waited) = waiting.await.expect("task");
    grant.expect("granted once the first released");
    assert!(waited >= Duration::from_millis(300), "waited {waited:?}");
    assert_eq!(second.backend_pid().await, Some(pid), "both jobs' locks were on one session");
    let rows = locks_on(&observer, key).await;
    assert_eq!(rows.len(), 1, "one server lock, the second job's: {rows:?}");
    second.release_all().await;

    // Control: the server alone stacks a session's second exclusive request.
    let (client, connection) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    client.execute("SELECT pg_advisory_lock($1)", &[&key]).await.expect("first");
    let again =
        tokio::time::timeout(Duration::from_secs(2), client.execute("SELECT pg_advisory_lock($1)", &[&key])).await;
    assert!(matches!(again, Ok(Ok(_))), "the same session is granted again at once");
}

/// A cycle among a host's own jobs is refused with `deadlock` at once (well
/// within 100 ms), and the refused job keeps what it held. The control: the
/// same wait without a cycle is granted.
#[tokio::test(flavor = "multi_thread")]
async fn a_local_deadlock_is_reported_at_once() {
    let db = database().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let (one, two) = (db.job_session(), db.job_session());
    one.acquire(a, LockMode::Exclusive, None).await.expect("one holds a");
    let held_b = two.acquire(b, LockMode::Exclusive, None).await.expect("two holds b");
    let waiting = {
        let one = one.clone();
        tokio::spawn(async move { one.acquire(b, LockMode::Exclusive, Some(Duration::from_secs(10))).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let refused = two.acquire(a, LockMode::Exclusive, Some(Duration::from_secs(10))).await;
    let took = started.elapsed();
    assert_eq!(refused, Err(LockError::Deadlock));
    assert!(took < Duration::from_millis(100), "reported after {took:?}");
    assert!(two.is_held(held_b.id).await, "the refused job keeps what it held");
    two.release(held_b.id).await.expect("release b");
    waiting.await.expect("task").expect("one gets b once two let it go");
    // Control: no cycle, no refusal.
    let three = db.job_session();
    let c = Uuid::new_v4();
    three.acquire(c, LockMode::Exclusive, None).await.expect("three holds c");
    let four = db.job_session();
    let queued = {
        let four = four.clone();
        tokio::spawn(async move { four.acquire(c, LockMode::Exclusive, Some(Duration::from_secs(5))).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    three.release_all().await;
    queued.await.expect("task").expect("granted without a cycle");
    for job in [one, two, four] {
        job.release_all().await;
    }
}

/// `pg_terminate_backend` on one shared session turns exactly the jobs
/// whose locks were on it to `lost`; the jobs on the other session keep
/// their locks and go on (the branch under test ran: both groups are
/// non-empty, and the lost ones' locks are free for others at once).
#[tokio::test(flavor = "multi_thread")]
async fn losing_a_shared_session_costs_only_its_jobs() {
    let observer = observer().await;
    // Four jobs fill a session; the twelve spread over both.
    let settings =
        DbSettings { max_sessions: 3, shared_sessions: 2, jobs_per_shared_session: 4, ..DbSettings::default() };
    let db = database_with(settings).await;
    let mut by_pid: HashMap<i32, Vec<(Arc<pinlock::db::JobSession>, pinlock::db::Grant)>> = HashMap::new();
    for _ in 0..12 {
        let job = db.job_session();
        let grant = job.acquire(Uuid::new_v4(), LockMode::Exclusive, None).await.expect("granted");
        let pid = job.backend_pid().await.expect("session");
        by_pid.entry(pid).or_default().push((job, grant));
    }
    assert_eq!(by_pid.len(), 2, "jobs spread over both shared sessions");
    let victim = *by_pid.keys().min().expect("a pid");
    observer.execute("SELECT pg_terminate_backend($1, 5000)", &[&victim]).await.expect("terminate");
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (pid, jobs) in &by_pid {
        for (job, grant) in jobs {
            if *pid == victim {
                assert!(!job.is_held(grant.id).await, "a job on the killed session lost its lock");
                assert_eq!(job.acquire(Uuid::new_v4(), LockMode::Exclusive, None).await, Err(LockError::Lost));
                // Another job may take the lost entity at once.
                let other = db.job_session();
                other.try_acquire(grant.entity, LockMode::Exclusive).await.expect("try").expect("free");
                other.release_all().await;
            } else {
                assert!(job.is_held(grant.id).await, "a job on the other session keeps its lock");
                let more = job.acquire(Uuid::new_v4(), LockMode::Exclusive, None).await;
                assert!(more.is_ok(), "and goes on: {more:?}");
            }
        }
    }
    for jobs in by_pid.into_values() {
        for (job, _) in jobs {
            job.release_all().await;
        }
    }
}

/// A job that holds a lock on a shared session and must wait for another
/// host gets it once that host lets go (it tries from its home until its
/// deadline); a job that holds nothing yet waits on a dedicated session.
#[tokio::test(flavor = "multi_thread")]
async fn waiting_for_another_host_from_a_shared_session() {
    let Setup { observer, entity, key, .. } = setup().await;
    let db: Arc<Database> = database().await;
    observer.execute("SELECT pg_advisory_lock($1)", &[&key]).await.expect("another host holds it");
    let holding = db.job_session();
    holding.acquire(Uuid::new_v4(), LockMode::Exclusive, None).await.expect("a first lock");
    let home = holding.backend_pid().await;
    let fresh = db.job_session();
    let waits = |job: Arc<pinlock::db::JobSession>| {
        tokio::spawn(async move { job.acquire(entity, LockMode::Shared, Some(Duration::from_secs(5))).await })
    };
    let (polling, dedicated) = (waits(holding.clone()), waits(fresh.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows = locks_on(&observer, key).await;
    assert_eq!(rows.iter().filter(|r| !r.granted).count(), 1, "one waits on the server, one polls: {rows:?}");
    observer.execute("SELECT pg_advisory_unlock($1)", &[&key]).await.expect("let go");
    polling.await.expect("task").expect("the polling job is granted");
    dedicated.await.expect("task").expect("the dedicated waiter is granted");
    assert_eq!(holding.backend_pid().await, home, "the holding job never left its home");
    assert_ne!(fresh.backend_pid().await, home, "the fresh job moved to a session of its own");
    holding.release_all().await;
    fresh.release_all().await;
}

/// Two hosts hammering one entity get shares within 2:1: a host never hands
/// the entity from one local job to the next behind the server's back, so a
/// host queued on the server is served in turn. The control: each host alone
/// gets every grant (the count is real work, not zero on both sides).
#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_hammering_one_entity_share_it_fairly() {
    let entity = Uuid::new_v4();
    let hammer = |db: Arc<Database>, run_for: Duration| {
        tokio::spawn(async move {
            let until = Instant::now() + run_for;
            let jobs: Vec<_> = (0..4)
                .map(|_| {
                    let job = db.job_session();
                    tokio::spawn(async move {
                        let mut grants = 0u32;
                        while Instant::now() < until {
                            let grant = job.acquire(entity, LockMode::Exclusive, Some(Duration::from_secs(5))).await;
                            let grant = grant.expect("granted");
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            job.release(grant.id).await.expect("release");
                            grants += 1;
                        }
                        job.release_all().await;
                        grants
                    })
                })
                .collect();
            let mut total = 0;
            for job in jobs {
                total += job.await.expect("job");
            }
            total
        })
    };
    let (a, b) = (database().await, database().await);
    let (on_a, on_b) = (hammer(a.clone(), Duration::from_millis(1500)), hammer(b.clone(), Duration::from_millis(1500)));
    let (on_a, on_b) = (on_a.await.expect("host a"), on_b.await.expect("host b"));
    eprintln!("two hosts on one entity: {on_a} and {on_b} grants");
    assert!(on_a > 10 && on_b > 10, "both hosts were served: {on_a} and {on_b}");
    let ratio = f64::from(on_a.max(on_b)) / f64::from(on_a.min(on_b));
    assert!(ratio <= 2.0, "shares {on_a}:{on_b} (ratio {ratio:.2})");
    // Control: alone, a host gets many grants in the same time.
    let alone = hammer(a, Duration::from_millis(500)).await.expect("alone");
    assert!(alone > 20, "alone: {alone}");
}

/// A cycle across two hosts whose jobs wait from shared sessions is not
/// seen by any deadlock detector: it is ended by the lock timeout, as
/// docs/design/sessions.md says; each job keeps what it held.
#[tokio::test(flavor = "multi_thread")]
async fn a_cycle_across_hosts_is_ended_by_the_lock_timeout() {
    let (x, y) = (Uuid::new_v4(), Uuid::new_v4());
    let (a, b) = (database().await.job_session(), database().await.job_session());
    let held_x = a.acquire(x, LockMode::Exclusive, None).await.expect("a holds x");
    let held_y = b.acquire(y, LockMode::Exclusive, None).await.expect("b holds y");
    let started = Instant::now();
    let (a_waits, b_waits) = tokio::join!(
        a.acquire(y, LockMode::Exclusive, Some(Duration::from_millis(400))),
        b.acquire(x, LockMode::Exclusive, Some(Duration::from_millis(400))),
    );
    assert_eq!((a_waits, b_waits), (Err(LockError::Timeout), Err(LockError::Timeout)));
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(a.is_held(held_x.id).await && b.is_held(held_y.id).await);
    a.release_all().await;
    b.release_all().await;
}

/// A shared session carries at most `max_locks_per_session` locks: past it
/// the job gets a typed `limit-exceeded`, and the session keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_shared_session_answers_limit_exceeded() {
    let db = database_with(DbSettings {
        max_sessions: 2,
        shared_sessions: 1,
        max_locks_per_session: 10,
        ..DbSettings::default()
    })
    .await;
    let job = db.job_session();
    for _ in 0..10 {
        job.acquire(Uuid::new_v4(), LockMode::Exclusive, None).await.expect("under the cap");
    }
    let over = job.acquire(Uuid::new_v4(), LockMode::Exclusive, None).await;
    assert!(matches!(over, Err(LockError::LimitExceeded(_))), "{over:?}");
    job.release_all().await;
    let after = db.job_session();
    after.acquire(Uuid::new_v4(), LockMode::Exclusive, None).await.expect("room again after the release");
    after.release_all().await;
}

/// A host running one job at a time opens one shared session, not one per
/// job up to the bound: a new job goes to a session nobody uses before a
/// new one is opened, and an idle session is reused before opening another.
#[tokio::test(flavor = "multi_thread")]
async fn one_job_at_a_time_uses_one_session() {
    let db = database().await;
    for _ in 0..20 {
        let job = db.job_session();
        job.acquire(Uuid::new_v4(), LockMode::Exclusive, None).await.expect("granted");
        job.release_all().await;
    }
    assert_eq!(db.sessions_opened(), 1);
}

/// A local waiter that holds nothing yet follows the unlock that lets it in
/// onto the releaser's session, so its lock statement runs right after that
/// unlock (one round trip per hand-off). The control: a waiter that already
/// holds a lock elsewhere keeps its home (a job's locks never leave it).
#[tokio::test(flavor = "multi_thread")]
async fn a_waiter_that_holds_nothing_follows_the_unlock() {
    // A session per job, so that each starts on its own.
    let settings =
        DbSettings { max_sessions: 4, shared_sessions: 3, jobs_per_shared_session: 1, ..DbSettings::default() };
    let db = database_with(settings).await;
    let entity = Uuid::new_v4();
    let holder = db.job_session();
    let held = holder.acquire(entity, LockMode::Exclusive, None).await.expect("holder");
    let holder_pid = holder.backend_pid().await.expect("session");
    // Two waiters on other sessions: one holding nothing (its first call
    // was a key-value read), one holding a lock of its own.
    let (empty, loaded) = (db.job_session(), db.job_session());
    empty.kv_get("follow", "k").await.expect("kv");
    loaded.acquire(Uuid::new_v4(), LockMode::Exclusive, None).await.expect("its own lock");
    let (empty_pid, loaded_pid) = (empty.backend_pid().await, loaded.backend_pid().await);
    assert!(empty_pid != Some(holder_pid) && loaded_pid != Some(holder_pid), "three sessions in play");
    let wait = |job: Arc<pinlock::db::JobSession>| {
        tokio::spawn(async move {
            let grant = job.acquire(entity, LockMode::Exclusive, Some(Duration::from_secs(5))).await.expect("granted");
            let pid = job.backend_pid().await;
            job.release(grant.id).await.expect("release");
            pid
        })
    };
    let empty_waits = wait(empty.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let loaded_waits = wait(loaded.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    holder.release(held.id).await.expect("release");
    assert_eq!(empty_waits.await.expect("task"), Some(holder_pid), "the empty waiter followed the unlock");
    assert_eq!(loaded_waits.await.expect("task"), loaded_pid, "the loaded waiter kept its home");
    for job in [holder, empty, loaded] {
        job.release_all().await;
    }
}

/// An exclusive try runs in the job's own task. A job dropped while its try
/// is in flight leaves no lock behind: an unlock follows the try on the same
/// session, and the entity stays claimed in the host's table until it has
/// run. To hold the try in flight, another job's key-value write on the same
/// session is blocked first (an observer transaction holds the row), so the
/// try queues behind it. The control runs the same sequence without the
/// drop: the try is granted once the write is through, so the lock the
/// abandoned job leaves nothing of was really granted.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_dropped_mid_try_leaves_no_lock() {
    for abandon in [false, true] {
        let Setup { observer, entity, key, .. } = setup().await;
        let db = database_with(DbSettings { max_sessions: 2, shared_sessions: 1, ..DbSettings::default() }).await;
        let bucket = format!("mid-try-{}", Uuid::new_v4().simple());
        // The entity's key is cached first, so the try is the job's first statement.
        let mapper = db.job_session();
        mapper.try_acquire(entity, LockMode::Exclusive).await.expect("try").expect("free");
        mapper.release_all().await;
        observer.batch_execute("BEGIN").await.expect("begin");
        observer
            .execute("INSERT INTO pinlock.kv (bucket, key, value) VALUES ($1, 'k', '\\x00')", &[&bucket])
            .await
            .expect("the observer's row");
        let writer = db.job_session();
        let writing = {
            let (writer, bucket) = (writer.clone(), bucket.clone());
            tokio::spawn(async move { writer.kv_set(&bucket, "k", b"1").await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!writing.is_finished(), "the write waits for the observer's row");
        let mut trier = Some(db.job_session());
        let trying = {
            let trier = trier.clone().expect("the job");
            tokio::spawn(async move { trier.try_acquire(entity, LockMode::Exclusive).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        // A try never waits on the server: it is queued behind the write on
        // the one shared session.
        assert!(!trying.is_finished(), "the try is queued behind the write on the same session");
        let mut trying = Some(trying);
        if abandon {
            let aborted = trying.take().expect("the task");
            aborted.abort();
            assert!(aborted.await.expect_err("aborted").is_cancelled());
            trier = None;
            assert_eq!(db.tries_abandoned(), 1, "the abandoned try was followed by an unlock");
        }
        observer.batch_execute("ROLLBACK").await.expect("rollback");
        writing.await.expect("task").expect("the write goes through");
        if abandon {
            let rows = wait_for_locks(&observer, key, |rows| rows.is_empty()).await;
            assert_eq!(rows, vec![], "nothing of the abandoned try is held");
            let other = db.job_session();
            let granted = other.try_acquire(entity, LockMode::Exclusive).await.expect("try");
            assert!(granted.is_some(), "the host's table let the entity go too");
            other.release_all().await;
        } else {
            let trying = trying.take().expect("the task");
            let granted = trying.await.expect("task").expect("try").expect("granted after the write");
            assert!(locks_on(&observer, key).await.iter().any(|r| r.granted), "the try took the lock");
            assert!(granted.fence.is_some());
            assert_eq!(db.tries_abandoned(), 0);
            trier.take().expect("the job").release_all().await;
        }
        writer.release_all().await;
    }
}

/// Jobs are packed onto a shared session until it carries
/// `jobs_per_shared_session` of them (their statements then travel
/// pipelined), and only then does the next session open; once every shared
/// session is full they spread evenly. The control packs one job per session.
#[tokio::test(flavor = "multi_thread")]
async fn jobs_fill_a_shared_session_before_the_next_opens() {
    for per_session in [3, 1] {
        let settings = DbSettings {
            max_sessions: 4,
            shared_sessions: 3,
            jobs_per_shared_session: per_session,
            ..DbSettings::default()
        };
        let db = database_with(settings).await;
        let mut jobs = Vec::new();
        let mut pids = Vec::new();
        for _ in 0..12 {
            let job = db.job_session();
            job.try_acquire(Uuid::new_v4(), LockMode::Exclusive).await.expect("try").expect("free");
            pids.push(job.backend_pid().await.expect("a session"));
            jobs.push(job);
        }
        let mut per_pid: HashMap<i32, usize> = HashMap::new();
        for pid in &pids {
            *per_pid.entry(*pid).or_default() += 1;
        }
        let mut counts: Vec<usize> = per_pid.values().copied().collect();
        counts.sort_unstable();
        assert_eq!(counts, vec![4, 4, 4], "three sessions, evenly loaded once full ({per_session} per session)");
        if per_session == 3 {
            assert!(pids[..3].iter().all(|&p| p == pids[0]), "the first three jobs share one session: {pids:?}");
            assert!(pids[3..6].iter().all(|&p| p == pids[3] && p != pids[0]), "the next three the next: {pids:?}");
        } else {
            let first: HashSet<i32> = pids[..3].iter().copied().collect();
            assert_eq!(first.len(), 3, "one job per session: {pids:?}");
        }
        for job in jobs {
            job.release_all().await;
        }
    }
}

/// A job that holds nothing yet and is admitted for an entity whose unlock
/// is still on its way to the server (here: queued behind another tenant's
/// blocked write on the releasing job's session) moves its home to that
/// session, so its try runs right after the unlock, rather than finding the
/// entity still held from its own session and falling back to a dedicated
/// session's wait. The twin: the same job admitted after the unlock was
/// answered stays on its own session.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_admitted_while_an_unlock_is_in_flight_follows_it() {
    for in_flight in [true, false] {
        let observer = observer().await;
        // Two jobs per session: the holder and the blocker share one, the
        // newcomer starts on the next.
        let settings =
            DbSettings { max_sessions: 4, shared_sessions: 3, jobs_per_shared_session: 2, ..DbSettings::default() };
        let db = database_with(settings).await;
        let entity = Uuid::new_v4();
        let bucket = format!("in-flight-{}", Uuid::new_v4().simple());
        let holder = db.job_session();
        let held = holder.acquire(entity, LockMode::Exclusive, None).await.expect("holder");
        let holder_pid = holder.backend_pid().await.expect("session");
        // A second tenant on the holder's session: its write will block the
        // session while the observer holds the row.
        let blocker = db.job_session();
        blocker.kv_get(&bucket, "k").await.expect("placed");
        let newcomer = db.job_session();
        newcomer.kv_get(&bucket, "other").await.expect("placed");
        let newcomer_pid = newcomer.backend_pid().await.expect("session");
        assert_ne!(newcomer_pid, holder_pid, "the newcomer starts on a session of its own");
        assert_eq!(blocker.backend_pid().await, Some(holder_pid), "the blocker shares the holder's session");
        let writing = if in_flight {
            observer.batch_execute("BEGIN").await.expect("begin");
            observer
                .execute("INSERT INTO pinlock.kv (bucket, key, value) VALUES ($1, 'k', '\\x00')", &[&bucket])
                .await
                .expect("the observer's row");
            let (blocker, bucket) = (blocker.clone(), bucket.clone());
            let writing = tokio::spawn(async move { blocker.kv_set(&bucket, "k", b"1").await });
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(!writing.is_finished(), "the write waits for the observer's row");
            Some(writing)
        } else {
            None
        };
        holder.release(held.id).await.expect("release");
        if !in_flight {
            // The unlock's answer is read at the holder's end.
            holder.release_all().await;
        }
        let acquiring = {
            let newcomer = newcomer.clone();
            tokio::spawn(
                async move { newcomer.acquire(entity, LockMode::Exclusive, Some(Duration::from_secs(5))).await },
            )
        };
        if let Some(writing) = writing {
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(!acquiring.is_finished(), "the newcomer's try is queued behind the unlock");
            observer.batch_execute("ROLLBACK").await.expect("rollback");
            writing.await.expect("task").expect("the write goes through");
        }
        acquiring.await.expect("task").expect("granted");
        let pid = newcomer.backend_pid().await.expect("session");
        if in_flight {
            assert_eq!(pid, holder_pid, "the newcomer followed the unlock to the holder's session");
        } else {
            assert_eq!(pid, newcomer_pid, "admitted after the unlock was answered, it stayed home");
        }
        for job in [holder, blocker, newcomer] {
            job.release_all().await;
        }
    }
}

/// Stops a backend (SIGSTOP) until dropped, so that a failing test never
/// leaves one stopped.
struct Stopped(i32);

impl Stopped {
    fn new(pid: i32) -> Self {
        signal("-STOP", pid);
        Self(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal("-CONT", self.0);
    }
}

/// A released lock's unlock that its shared session's server never answers
/// (the backend is stopped) holds the job's end up only for the release
/// bound (5 s), then for the session's termination (at most 5 s more): the
/// session is closed, and the lock is free once the backend runs again and
/// takes its termination. Before the bound, the job's end waited as long as
/// the backend stayed stopped (the control: the unlock is unanswered, and
/// the end has not returned, after 3 s).
#[tokio::test(flavor = "multi_thread")]
async fn an_unanswered_unlock_on_a_shared_session_closes_it_within_the_release_bound() {
    let Setup { db, observer, entity, key } = setup().await;
    let job = db.job_session();
    let grant = job.acquire(entity, LockMode::Exclusive, None).await.expect("granted");
    let pid = job.backend_pid().await.expect("session");
    let stopped = Stopped::new(pid);
    job.release(grant.id).await.expect("release sent");
    let started = Instant::now();
    let ending = {
        let job = job.clone();
        tokio::spawn(async move { job.release_all().await })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!ending.is_finished(), "control: the end waits for the unlock's answer");
    assert_eq!(locks_on(&observer, key).await.len(), 1, "control: the stopped backend still holds the lock");
    let outcome = tokio::time::timeout(Duration::from_secs(15), ending).await;
    let waited = started.elapsed();
    drop(stopped);
    outcome.expect("the job's end returned while the backend was stopped").expect("task");
    assert!(waited >= Duration::from_secs(5), "the bound ran out first: {waited:?}");
    let left = wait_for_locks(&observer, key, <[_]>::is_empty).await;
    assert!(left.is_empty(), "the lock outlived its closed session: {left:?}");
    let other = db.job_session();
    other.try_acquire(entity, LockMode::Exclusive).await.expect("try").expect("the entity is free");
    other.release_all().await;
}
