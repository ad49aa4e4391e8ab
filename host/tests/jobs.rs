//! Guest-visible behaviour, driving real components (the scripted fixture
//! under tests/guests/scripted) against real PostgreSQL: locks released on
//! every kind of job end, shared/exclusive semantics, try and timeout,
//! fencing, deadlock, lost sessions, and bad input that leaves the host serving.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pinlock::batch::Batch;
use pinlock::db::{Database, DbConfig, DbSettings, ReleaseOutcome};
use pinlock::runtime::{JobError, JobOutcome, WorkerError};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Runs a job that takes a lock on a fresh entity and then ends by `ending`.
/// While it runs the lock is visible in `pg_locks` (so the check below could
/// fail); once the job's outcome is back, nothing holds the key.
async fn assert_released_after(ending: Value, expected: fn(&Result<Vec<u8>, JobError>) -> bool) {
    let Setup { db, observer, entity, key } = setup().await;
    let steps = json!([{"op": "acquire", "entity": entity}, {"op": "sleep", "ms": 200}, ending]);
    let job = spawn_script(&db, steps);
    let during = wait_for_locks(&observer, key, |rows| !rows.is_empty()).await;
    assert!(during.iter().any(|r| r.granted), "the job holds the lock while it runs");
    let outcome = job.await.expect("job task");
    assert!(expected(&outcome.result), "unexpected outcome {:?}", outcome.result);
    assert_eq!(locks_on(&observer, key).await, vec![], "the lock outlived the job ({:?})", outcome.result);
}

#[tokio::test(flavor = "multi_thread")]
async fn locks_are_released_when_the_job_returns() {
    assert_released_after(json!({"op": "echo"}), |r| r.is_ok()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn locks_are_released_when_the_job_returns_an_error() {
    assert_released_after(json!({"op": "fail", "message": "boom"}), |r| *r == Err(JobError::Failed("boom".into())))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn locks_are_released_when_the_guest_traps() {
    assert_released_after(
        json!({"op": "panic"}),
        |r| matches!(r, Err(JobError::Trap(message)) if message.contains("panicked")),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn locks_are_released_when_the_guest_spins_past_its_time_limit() {
    assert_released_after(json!({"op": "spin"}), |r| matches!(r, Err(JobError::TimeLimit(_)))).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn locks_are_released_when_the_guest_exceeds_its_memory_limit() {
    assert_released_after(json!({"op": "oom"}), |r| matches!(r, Err(JobError::MemoryLimit(_)))).await;
}

/// The job is killed by its time limit while waiting in `pg_advisory_lock`:
/// the wait is cancelled and is never granted afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_killed_while_waiting_for_a_lock_never_gets_it_later() {
    let db = database().await;
    let observer = observer().await;
    let (mine, contended) = (Uuid::new_v4(), Uuid::new_v4());
    let (mine_key, contended_key) = (key_of(&observer, mine).await, key_of(&observer, contended).await);
    observer.execute("SELECT pg_advisory_lock($1)", &[&contended_key]).await.expect("hold");
    let steps = json!([
        {"op": "acquire", "entity": mine},
        {"op": "acquire", "entity": contended, "timeout_ms": 600_000},
    ]);
    let outcome = run_script(&db, steps).await;
    assert!(matches!(outcome.result, Err(JobError::TimeLimit(_))), "{:?}", outcome.result);
    assert_eq!(locks_on(&observer, mine_key).await, vec![]);
    observer.execute("SELECT pg_advisory_unlock($1)", &[&contended_key]).await.expect("unlock");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(locks_on(&observer, contended_key).await, vec![], "the abandoned wait was granted");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_job_releases_its_locks() {
    let Setup { db, observer, entity, key } = setup().await;
    let cancel = CancellationToken::new();
    let job = tokio::spawn({
        let (db, cancel) = (db.clone(), cancel.clone());
        async move {
            let steps = json!([{"op": "acquire", "entity": entity}, {"op": "sleep", "ms": 10_000}]);
            run_script_cancellable(&db, steps, &cancel).await
        }
    });
    wait_for_locks(&observer, key, |rows| !rows.is_empty()).await;
    cancel.cancel();
    let outcome = job.await.expect("job task");
    assert_eq!(outcome.result, Err(JobError::Cancelled));
    assert_eq!(locks_on(&observer, key).await, vec![]);
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_holders_coexist_and_exclusive_waits_for_them() {
    // Readers and writer on two hosts, so that the writer's wait is the
    // server's (a local job would wait in the host's lock table instead).
    let Setup { db, observer, entity, key } = setup().await;
    // A shared session per reader, so that each shows in `pg_locks` (packed
    // on one session, their four shared locks would be one row).
    let readers_host = database_with(DbSettings { jobs_per_shared_session: 1, ..DbSettings::default() }).await;
    let shared = json!([{"op": "acquire", "entity": entity, "mode": "shared"}, {"op": "sleep", "ms": 600}]);
    let readers: Vec<_> = (0..4).map(|_| spawn_script(&readers_host, shared.clone())).collect();
    let rows = wait_for_locks(&observer, key, |rows| rows.iter().filter(|r| r.granted).count() == 4).await;
    assert_eq!(rows.iter().filter(|r| r.granted && r.mode == "ShareLock").count(), 4, "{rows:?}");
    // An exclusive request waits while the readers hold it.
    let writer =
        spawn_script(&db, json!([{"op": "acquire", "entity": entity, "timeout_ms": 2500}, {"op": "sleep", "ms": 300}]));
    let rows = wait_for_locks(&observer, key, |rows| rows.iter().any(|r| !r.granted)).await;
    assert!(rows.iter().any(|r| !r.granted && r.mode == "ExclusiveLock"), "writer waits: {rows:?}");
    for reader in readers {
        results(&reader.await.expect("reader"));
    }
    // Once the writer holds it, a shared request waits (and here times out).
    wait_for_locks(&observer, key, |rows| rows.iter().any(|r| r.granted && r.mode == "ExclusiveLock")).await;
    let late = run_script(&db, json!([{"op": "acquire", "entity": entity, "mode": "shared", "timeout_ms": 100}])).await;
    assert_eq!(results(&late)[0]["err"], "timeout");
    let writer = writer.await.expect("writer");
    assert!(results(&writer)[0]["ok"].is_object());
}

#[tokio::test(flavor = "multi_thread")]
async fn try_acquire_and_timeout_from_a_guest() {
    let Setup { db, observer, entity, key } = setup().await;
    observer.execute("SELECT pg_advisory_lock_shared($1)", &[&key]).await.expect("hold shared");
    let outcome = run_script(
        &db,
        json!([
            {"op": "try", "entity": entity},
            {"op": "try", "entity": entity, "mode": "shared"},
            {"op": "acquire", "entity": entity, "timeout_ms": 150},
        ]),
    )
    .await;
    let results = results(&outcome);
    assert_eq!(results[0], json!({"none": true}), "exclusive is taken by the shared holder");
    assert!(results[1]["ok"].is_object(), "shared is compatible: {}", results[1]);
    assert_eq!(results[2]["err"], "timeout");
    let rows = locks_on(&observer, key).await;
    assert_eq!(rows.len(), 1, "only the observer holds it after the job: {rows:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn fencing_tokens_increase_across_successive_jobs() {
    let db = database().await;
    let entity = Uuid::new_v4();
    // Job i asks at 100·i ms and holds for 150 ms, so they queue up and are
    // granted in order (the host's table and PostgreSQL both grant waiters
    // first come, first served). The spacing leaves room for a loaded
    // machine: the other tests of this file run beside it.
    let holders: Vec<_> = (0..6u64)
        .map(|i| {
            let steps = json!([
                {"op": "sleep", "ms": 100 * i},
                {"op": "acquire", "entity": entity},
                {"op": "sleep", "ms": 150},
            ]);
            spawn_script(&db, steps)
        })
        .collect();
    let mut fences = Vec::new();
    for holder in holders {
        fences.push(fence(&results(&holder.await.expect("job"))[1]));
    }
    assert!(fences.windows(2).all(|w| w[0] < w[1]), "each later holder has a larger token: {fences:?}");
}

/// Two jobs lock a and b in opposite orders: one is told `deadlock`, and it
/// keeps the lock it already held (so the other is granted only when the
/// loser's job ends, 600 ms later; had the loser lost its first lock, the
/// winner would be granted at once).
#[tokio::test(flavor = "multi_thread")]
async fn a_deadlock_is_reported_to_one_guest_which_keeps_what_it_held() {
    let db = database().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let crossed = |first: Uuid, second: Uuid| {
        spawn_script(
            &db,
            json!([
                {"op": "acquire", "entity": first},
                {"op": "sleep", "ms": 200},
                {"op": "acquire", "entity": second, "timeout_ms": 5000},
                {"op": "is_held", "slot": 0},
                {"op": "sleep", "ms": 600},
            ]),
        )
    };
    let (one, two) = (crossed(a, b), crossed(b, a));
    let outcomes = [results(&one.await.expect("one")), results(&two.await.expect("two"))];
    let loser = outcomes.iter().find(|r| r[2]["err"] == "deadlock").expect("one job is told deadlock");
    let winner = outcomes.iter().find(|r| r[2]["ok"].is_object()).expect("the other one proceeds");
    assert_eq!(loser[3]["held"], true, "the loser still holds its first lock");
    let (loser_waited, winner_waited) = (loser[2]["waited_ms"].as_u64(), winner[2]["waited_ms"].as_u64());
    let (loser_waited, winner_waited) = (loser_waited.expect("ms"), winner_waited.expect("ms"));
    assert!(
        winner_waited >= loser_waited + 500,
        "the winner waited {winner_waited} ms, the loser was told after {loser_waited} ms: \
         the loser's first lock was not kept until its end"
    );
}

/// The session under a held lock is terminated: the guest's guard turns to
/// not-held and its release reports `lost`. The twin run without the kill
/// keeps the lock and releases cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_session_turns_the_guard_to_lost() {
    for kill in [true, false] {
        let Setup { db, observer, entity, key } = setup().await;
        let job = spawn_script(
            &db,
            json!([
                {"op": "acquire", "entity": entity},
                {"op": "wait_until_lost", "slot": 0, "max_ms": 1500},
                {"op": "release", "slot": 0},
            ]),
        );
        let rows = wait_for_locks(&observer, key, |rows| !rows.is_empty()).await;
        if kill {
            observer.execute("SELECT pg_terminate_backend($1)", &[&rows[0].pid]).await.expect("terminate");
        }
        let results = results(&job.await.expect("job"));
        if kill {
            assert_eq!(results[1]["held"], json!(false));
            assert_eq!(results[2], json!({"err": "lost"}));
        } else {
            assert_eq!(results[1]["held"], json!(true));
            assert_eq!(results[2], json!({"released": true}));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_a_clear_error_and_the_host_keeps_serving() {
    let runtime = runtime();
    assert!(matches!(runtime.load(b"hello, not wasm"), Err(WorkerError::NotWasm)));
    assert!(matches!(runtime.load(b"\0asm\x01\0\0\0"), Err(WorkerError::CoreModule)));
    // An empty component: valid, but not of the worker world.
    assert!(matches!(runtime.load(b"\0asm\x0d\0\x01\0"), Err(WorkerError::WrongWorld(_))));
    assert!(matches!(runtime.load(b"\0asm\x0d\0\x01\0\xff\xff"), Err(WorkerError::Invalid(_))));

    let db = database().await;
    let good = Uuid::new_v4();
    let outcome = run_script(
        &db,
        json!([
            {"op": "acquire", "entity": Uuid::nil()},
            {"op": "acquire", "entity": good},
            {"op": "kv_set", "bucket": "", "key": "k", "value": "v"},
        ]),
    )
    .await;
    let steps = results(&outcome);
    assert_eq!(steps[0]["err"], "invalid-input");
    assert!(steps[1]["ok"].is_object(), "the job goes on after a refused entity");
    assert_eq!(steps[2], json!({"err": "no-such-store"}));

    // A host whose database is unreachable reports `unavailable` to the guest…
    let down =
        Database::new(DbConfig::parse("host=127.0.0.1 port=1 user=postgres").expect("config"), DbSettings::default());
    let outcome = run_script(&down, json!([{"op": "acquire", "entity": Uuid::new_v4()}])).await;
    assert_eq!(results(&outcome)[0]["err"], "unavailable");
    // …and the same runtime keeps serving jobs on a healthy database.
    let outcome = run_script(&db, json!([{"op": "acquire", "entity": Uuid::new_v4()}])).await;
    assert!(results(&outcome)[0]["ok"].is_object());
}

/// Dropping a guard releases its lock at once, while the job goes on; an
/// explicit release reports success; `is-held` follows both.
#[tokio::test(flavor = "multi_thread")]
async fn dropping_a_guard_releases_its_lock_before_the_job_ends() {
    let Setup { db, observer, entity, key } = setup().await;
    let job = spawn_script(
        &db,
        json!([
            {"op": "acquire", "entity": entity},
            {"op": "is_held", "slot": 0},
            {"op": "sleep", "ms": 300},
            {"op": "drop", "slot": 0},
            {"op": "sleep", "ms": 1000},
        ]),
    );
    wait_for_locks(&observer, key, |rows| !rows.is_empty()).await;
    let rows = wait_for_locks(&observer, key, |rows| rows.is_empty()).await;
    assert!(rows.is_empty(), "still held after the guard was dropped: {rows:?}");
    assert!(!job.is_finished(), "released by the drop, not by the job's end");
    let results = results(&job.await.expect("job"));
    assert_eq!(results[1], json!({"held": true}));
    assert_eq!(results[3], json!({"dropped": true}));
}

/// Fail closed, as a guest sees it: after the session under its lock is
/// terminated, the job's key-value write and its next lock answer `lost`
/// and reach no database; once the lost guard is released, the job may
/// write again. The twin without the kill writes on its one session.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_loss_a_guest_cannot_write_until_it_releases_the_lost_guard() {
    for kill in [true, false] {
        let Setup { db, observer, entity, key } = setup().await;
        let value_key = Uuid::new_v4().to_string();
        let job = spawn_script(
            &db,
            json!([
                {"op": "acquire", "entity": entity},
                {"op": "wait_until_lost", "slot": 0, "max_ms": 1000},
                {"op": "kv_set", "bucket": "fenced", "key": value_key, "value": "late"},
                {"op": "acquire", "entity": Uuid::new_v4()},
                {"op": "try", "entity": Uuid::new_v4()},
                {"op": "release", "slot": 0},
                {"op": "kv_set", "bucket": "fenced", "key": value_key, "value": "after"},
            ]),
        );
        let rows = wait_for_locks(&observer, key, |rows| !rows.is_empty()).await;
        if kill {
            observer.execute("SELECT pg_terminate_backend($1)", &[&rows[0].pid]).await.expect("terminate");
        }
        let results = results(&job.await.expect("job"));
        if kill {
            assert_eq!(results[1]["held"], false);
            assert_eq!(results[2], json!({"err": "lost"}), "the write after the loss is fenced");
            assert_eq!(results[3]["err"], "lost", "so is the next acquire");
            assert_eq!(results[4]["err"], "lost", "and a try");
            assert_eq!(results[5], json!({"err": "lost"}), "the release acknowledges the loss");
            assert_eq!(results[6], json!({"value": "after"}), "then the job may write again");
        } else {
            assert_eq!(results[1]["held"], true);
            assert_eq!(results[2], json!({"value": "late"}));
            assert_eq!(results[5], json!({"released": true}));
        }
        assert_eq!(stored_value(&observer, "fenced", &value_key).await.as_deref(), Some(&b"after"[..]));
    }
}

/// A guest that writes far more than the kept tail to stderr is not
/// trapped for it (a full pipe would make its `eprintln!` panic).
#[tokio::test(flavor = "multi_thread")]
async fn a_chatty_guest_is_not_stopped_by_its_own_stderr() {
    let db = database().await;
    let outcome = run_script(&db, json!([{"op": "stderr", "lines": 20_000}, {"op": "echo"}])).await;
    assert_eq!(results(&outcome)[1], json!({"echo": true}), "{:?}", outcome.result);
}

/// Dropping the future of a running job at any await point (waiting for a
/// lock, for a session, in a key-value call) still releases every lock it
/// held: none of its advisory locks remain in `pg_locks` shortly after, the
/// abandoned wait is never granted later, and the next job on the same
/// host (one session) runs normally. `dropping_a_waiting_future_is_not_enough`
/// in lock_engine.rs is the twin: a plain dropped wait keeps the lock.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_dropped_at_any_await_point_leaves_no_lock_behind() {
    for point in ["lock", "session", "kv"] {
        let db = database_with(DbSettings { max_sessions: 1, ..DbSettings::default() }).await;
        let observer = observer().await;
        let (mine, contended) = (Uuid::new_v4(), Uuid::new_v4());
        let (mine_key, contended_key) = (key_of(&observer, mine).await, key_of(&observer, contended).await);
        let row_key = Uuid::new_v4().to_string();
        // What the dropped job waits for, held from outside pinlock.
        let (blocker, blocker_job) = match point {
            "lock" => {
                observer.execute("SELECT pg_advisory_lock($1)", &[&contended_key]).await.expect("hold");
                (None, None)
            }
            "session" => {
                let holder = db.job_session();
                holder.acquire(Uuid::new_v4(), pinlock::db::LockMode::Exclusive, None).await.expect("take the session");
                (None, Some(holder))
            }
            _ => {
                // An open transaction holding the row the job will write.
                let (client, connection) =
                    tokio_postgres::connect(&database_url(), tokio_postgres::NoTls).await.expect("connect");
                tokio::spawn(connection);
                client
                    .batch_execute(&format!(
                        "INSERT INTO pinlock.kv (bucket, key, value) VALUES ('drop', '{row_key}', '')
                         ON CONFLICT DO NOTHING; BEGIN; UPDATE pinlock.kv SET value = 'x'
                         WHERE bucket = 'drop' AND key = '{row_key}'"
                    ))
                    .await
                    .expect("hold the row");
                (Some(client), None)
            }
        };
        let steps = match point {
            "lock" => json!([
                {"op": "acquire", "entity": mine},
                {"op": "acquire", "entity": contended, "timeout_ms": 600_000},
            ]),
            "session" => json!([{"op": "acquire", "entity": mine, "timeout_ms": 600_000}]),
            _ => json!([
                {"op": "acquire", "entity": mine},
                {"op": "kv_set", "bucket": "drop", "key": row_key, "value": "v"},
            ]),
        };
        let abandoned_before = db.jobs_abandoned();
        let input = serde_json::to_vec(&json!({ "steps": steps })).expect("json");
        let cancel = CancellationToken::new();
        let job = runtime().run_job(scripted(), db.job_session(), &input, &cancel);
        let dropped = tokio::time::timeout(Duration::from_millis(400), job).await;
        assert!(dropped.is_err(), "{point}: the job was still waiting when its future was dropped");
        if let Some(holder) = blocker_job {
            holder.release_all().await;
        }
        if point == "session" {
            assert_eq!(db.jobs_abandoned(), abandoned_before, "session: it never got a session to clean up");
        } else {
            assert_eq!(db.jobs_abandoned(), abandoned_before + 1, "{point}: the drop clean-up ran");
        }
        let rows = wait_for_locks(&observer, mine_key, |rows| rows.is_empty()).await;
        assert!(rows.is_empty(), "{point}: the dropped job still holds its lock: {rows:?}");
        if point == "lock" {
            let rows = wait_for_locks(&observer, contended_key, |rows| rows.len() == 1).await;
            assert_eq!(rows.len(), 1, "lock: the abandoned wait is gone: {rows:?}");
            observer.execute("SELECT pg_advisory_unlock($1)", &[&contended_key]).await.expect("unlock");
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(locks_on(&observer, contended_key).await, vec![], "lock: the abandoned wait was granted");
        }
        if let Some(client) = blocker {
            client.batch_execute("ROLLBACK").await.expect("release the row");
        }
        // The next job on this one-session host is unaffected.
        let next = run_script(&db, json!([{"op": "acquire", "entity": mine, "timeout_ms": 5000}])).await;
        assert!(results(&next)[0]["ok"].is_object(), "{point}: the next job: {:?}", results(&next));
    }
}

/// A worker that never calls `fencing-token` does not import it (a
/// component imports only what its code calls), so its grants draw no token:
/// one sequence write less per grant. The scripted fixture reads tokens
/// (the control), so its grants draw them.
#[tokio::test(flavor = "multi_thread")]
async fn only_workers_that_read_fencing_tokens_draw_them() {
    assert!(scripted().reads_fences(), "the scripted fixture reads tokens");
    let bench = runtime().load_file(guest_path("pinlock_test_bench.wasm").as_ref()).expect("bench guest loads");
    assert!(!bench.reads_fences(), "the bench guest never calls fencing-token, so it cannot import it");
    // Its jobs still lock: one holds the entity while another finds it taken.
    let Setup { db, observer, entity, key } = setup().await;
    let holder = spawn_script(&db, json!([{"op": "acquire", "entity": entity}, {"op": "sleep", "ms": 300}]));
    wait_for_locks(&observer, key, |rows| rows.iter().any(|r| r.granted)).await;
    let input = serde_json::to_vec(&json!({"op": "once", "entity": entity})).expect("json");
    let job = db.job_session();
    let started = std::time::Instant::now();
    let outcome = runtime().run_job(&bench, job, &input, &CancellationToken::new()).await;
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    assert!(started.elapsed() >= Duration::from_millis(100), "it waited for the holder");
    holder.await.expect("holder");
    assert_eq!(locks_on(&observer, key).await, vec![], "nothing left held");
}

/// A job never sees what an earlier job left in memory: its instance gets a
/// slot whose memory was reset (only the pages the last job touched, found
/// with `PAGEMAP_SCAN` where the kernel has it; see
/// `host/src/runtime/engine.rs`). A runtime with one slot makes every job
/// reuse the same one. Each job checks a static and a fresh zeroed buffer
/// of 512 KiB, then marks both. The control: a second `scribble` step in the
/// same job finds the mark in the static, so a leak would be seen.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_never_sees_an_earlier_jobs_memory() {
    let runtime = pinlock::runtime::Runtime::new(pinlock::runtime::RuntimeSettings {
        max_concurrent_jobs: 1,
        ..Default::default()
    })
    .expect("runtime");
    let worker = runtime.load_file(guest_path("pinlock_test_scripted.wasm").as_ref()).expect("scripted fixture loads");
    let db = database().await;
    let scribble = json!({"op": "scribble", "bytes": 512 << 10});
    let input = serde_json::to_vec(&json!({ "steps": [scribble, scribble] })).expect("json");
    for job in 0..3 {
        let outcome = runtime.run_job(&worker, db.job_session(), &input, &CancellationToken::new()).await;
        let results = results(&outcome);
        assert_eq!(results[0], json!({"static_before": 0, "nonzero": 0}), "job {job} starts from clean memory");
        assert_eq!(results[1]["static_before"], 0xDEAD_BEEF_u64, "control: job {job} sees its own mark");
    }
}

/// A batch of the scripted worker, `concurrency` lanes, job `i` running
/// `steps(i)`; returns the outcomes in the order they were reported, and
/// when each job's input was taken (the job's start) and reported.
async fn run_batch(
    db: &Arc<Database>,
    concurrency: usize,
    jobs: u64,
    steps: impl Fn(u64) -> Value + Send + Sync + 'static,
) -> (Vec<JobOutcome>, Vec<Instant>, Vec<Instant>) {
    let started = Arc::new(std::sync::Mutex::new(Vec::new()));
    let taken = started.clone();
    let batch = Batch {
        runtime: runtime().clone(),
        worker: scripted().clone(),
        db: db.clone(),
        jobs,
        concurrency,
        input: Arc::new(move |i| {
            taken.lock().expect("not poisoned").push(Instant::now());
            serde_json::to_vec(&json!({ "steps": steps(i) })).expect("json")
        }),
        cancel: CancellationToken::new(),
    };
    let (mut outcomes, mut reported) = (Vec::new(), Vec::new());
    batch
        .run(|outcome| {
            reported.push(Instant::now());
            outcomes.push(outcome);
        })
        .await;
    let started = started.lock().expect("not poisoned").clone();
    (outcomes, started, reported)
}

/// A batch lane starts its next guest before the last job's release has
/// finished (the answer to the unlock its guest sent), so that unlock leaves
/// with the next job's first statement; each job is still reported only
/// once its lock is released. One lane, so jobs start and report in order:
/// job `i + 1` starts before job `i`'s release ends (its start plus its
/// duration, which runs to the release's end). Every reported job's key is
/// free in `pg_locks` when it is reported (the keys are distinct, so a
/// later look can only see less), and a job's lock is seen there while it
/// sleeps (so the look could fail). The control runs the same jobs one
/// after another with `run_job`: no job starts before the last one's
/// release ended, so the overlap check tells the two apart.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_lane_runs_its_next_guest_while_the_last_job_releases_and_reports_after_the_release() {
    const JOBS: u64 = 12;
    let db = database().await;
    let observer = observer().await;
    let entities: Vec<Uuid> = (0..JOBS).map(|_| Uuid::new_v4()).collect();
    let mut keys = Vec::new();
    for &entity in &entities {
        keys.push(key_of(&observer, entity).await);
    }
    let script = {
        let entities = entities.clone();
        move |i: u64| {
            let nap = if i == 0 { 300 } else { 0 };
            json!([{"op": "acquire", "entity": entities[i as usize]}, {"op": "sleep", "ms": nap}, {"op": "drop", "slot": 0}])
        }
    };
    let (batch_db, held_key) = (db.clone(), keys[0]);
    let batch = tokio::spawn({
        let script = script.clone();
        async move { run_batch(&batch_db, 1, JOBS, script).await }
    });
    let during = wait_for_locks(&observer, held_key, |rows| rows.iter().any(|r| r.granted)).await;
    assert!(during.iter().any(|r| r.granted), "the first job's lock is seen while it sleeps");
    let (outcomes, started, reported) = batch.await.expect("batch task");
    assert_eq!(outcomes.len(), JOBS as usize);
    for (outcome, &key) in outcomes.iter().zip(&keys) {
        assert!(outcome.result.is_ok(), "{:?}", outcome.result);
        assert_eq!(outcome.release, ReleaseOutcome::NothingHeld, "the guest released its lock itself");
        assert_eq!(locks_on(&observer, key).await, vec![], "reported before its lock was released");
    }
    let overlapped = |started: &[Instant], durations: &[Duration]| {
        (1..started.len()).filter(|&i| started[i] < started[i - 1] + durations[i - 1]).count()
    };
    let durations: Vec<Duration> = outcomes.iter().map(|o| o.duration).collect();
    assert!(reported.windows(2).all(|w| w[0] <= w[1]));
    // Every job could overlap; a thread preempted between taking a job's
    // input and starting it could hide one, so half is the bar.
    let batch_overlaps = overlapped(&started, &durations);
    assert!(batch_overlaps >= (JOBS as usize - 1) / 2, "only {batch_overlaps} of {} jobs overlapped", JOBS - 1);

    // The control: one after another.
    let (mut started, mut durations) = (Vec::new(), Vec::new());
    for i in 0..JOBS {
        started.push(Instant::now());
        let outcome = run_script(&db, script(i)).await;
        durations.push(outcome.duration);
    }
    assert_eq!(overlapped(&started, &durations), 0, "run_job reports before the next job starts");
}

/// A job that ends holding a lock (its guest trapped, so no drop hook
/// released it) is finished before its lane's next job starts: that job's
/// try on the same entity finds it free. The branch ran: the first job's
/// release unlocked one lock. The control: while a holder sleeps on the
/// entity, the same try finds it taken.
#[tokio::test(flavor = "multi_thread")]
async fn a_lane_releases_what_a_trapped_job_held_before_its_next_job_starts() {
    let Setup { db, observer, entity, key } = setup().await;
    let script = move |i: u64| match i {
        0 => json!([{"op": "acquire", "entity": entity}, {"op": "panic"}]),
        _ => json!([{"op": "try", "entity": entity}]),
    };
    let (outcomes, _, _) = run_batch(&db, 1, 2, script).await;
    assert!(matches!(outcomes[0].result, Err(JobError::Trap(_))), "{:?}", outcomes[0].result);
    assert_eq!(outcomes[0].release, ReleaseOutcome::Released { count: 1 }, "the trapped job held its lock");
    assert!(results(&outcomes[1])[0]["ok"].is_object(), "the next job's try: {:?}", results(&outcomes[1]));

    let holder = spawn_script(&db, json!([{"op": "acquire", "entity": entity}, {"op": "sleep", "ms": 300}]));
    wait_for_locks(&observer, key, |rows| rows.iter().any(|r| r.granted)).await;
    let taken = run_script(&db, json!([{"op": "try", "entity": entity}])).await;
    assert_eq!(results(&taken)[0], json!({"none": true}), "taken while the holder sleeps");
    holder.await.expect("holder");
}

/// A short job that touches no database runs to its end in one poll: its
/// guest does not yield at its first epoch check (a store's epoch deadline
/// starts at 0, already passed, unless the host sets it; a guest that
/// yielded there gave its thread away once per job). The epoch ticks every
/// 10 ms and may still fall inside a job, so one of five tries is enough;
/// with the deadline unset none would be. The control: a guest that sleeps
/// never ends in one poll, so a pending poll is seen.
#[test]
fn a_short_job_does_not_yield_at_its_first_epoch_check() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let db = rt.block_on(database());
    let one_poll = |steps: Value| {
        let input = serde_json::to_vec(&json!({ "steps": steps })).expect("json");
        let _entered = rt.enter();
        (0..5)
            .filter(|_| {
                let cancel = CancellationToken::new();
                let job = runtime().run_job(scripted(), db.job_session(), &input, &cancel);
                futures_util::FutureExt::now_or_never(job).is_some()
            })
            .count()
    };
    assert!(one_poll(json!([{"op": "echo"}])) >= 1, "an echo job ends in one poll");
    assert_eq!(one_poll(json!([{"op": "sleep", "ms": 5}])), 0, "a sleeping job cannot");
}

/// A job's release dropped while it waits for the answer to an unlock its
/// guest sent still unlocks what the job held at its end, on a task of its
/// own: dropping the future that reports a job (an abandoned caller) never
/// leaves its locks behind. The job releases one lock itself (its unlock's
/// answer is what the release waits for) and panics holding another. On a
/// current-thread runtime the first poll of the release cannot have that
/// answer yet, so it is dropped mid-wait (the branch ran: the host counts an
/// abandoned clean-up). The held key is then freed, in `pg_locks` and in the
/// host's table (another job's try gets it).
#[test]
fn a_release_dropped_mid_wait_still_unlocks_what_the_job_held() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let db = database().await;
        let observer = observer().await;
        let (released, held) = (Uuid::new_v4(), Uuid::new_v4());
        let held_key = key_of(&observer, held).await;
        let steps = json!([
            {"op": "acquire", "entity": released},
            {"op": "acquire", "entity": held},
            {"op": "drop", "slot": 0},
            {"op": "panic"},
        ]);
        let input = serde_json::to_vec(&json!({ "steps": steps })).expect("json");
        let cancel = CancellationToken::new();
        let ended = runtime().run_guest(scripted(), db.job_session(), &input, &cancel).await;
        assert!(matches!(ended.result(), Err(JobError::Trap(_))), "{:?}", ended.result());
        // No await from here to the drop: the unlock's answer must not be read before.
        assert!(ended.holds_locks(), "the job ended holding a lock");
        let abandoned = db.jobs_abandoned();
        assert!(futures_util::FutureExt::now_or_never(ended.finish()).is_none(), "the release waits for an answer");
        assert_eq!(db.jobs_abandoned(), abandoned + 1, "the dropped release was taken over");
        let rows = wait_for_locks(&observer, held_key, |rows| rows.is_empty()).await;
        assert!(rows.is_empty(), "the held lock outlived its dropped release: {rows:?}");
        let next = run_script(&db, json!([{"op": "try", "entity": held}])).await;
        assert!(results(&next)[0]["ok"].is_object(), "the host's table let go: {:?}", results(&next));
    });
}
