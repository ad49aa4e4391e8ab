//! The examples under `examples/`, run as real components on the real
//! database: each shows the pattern its README promises.
//!
//! - transfer: concurrent opposite transfers keep the sum; locking in the
//!   reverse order is told `deadlock`, which the guest retries;
//! - singleton: of many jobs on two hosts (`pinlock run` processes), exactly
//!   one does the work, and a later job skips it too;
//! - report: readers hold shared locks together (seen in `pg_locks`), the
//!   writer waits for them and holds later readers off;
//! - fenced-write: a holder whose session was terminated is refused, by the
//!   host (`lost`) and by the store (an older fencing token).

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::*;
use pinlock::db::{Database, DbSettings};
use pinlock::runtime::{JobError, Runtime, RuntimeSettings, Worker};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A runtime with room for the deliberate waits below (a deadlock takes the
/// server's `deadlock_timeout`, 1 s by default, to be found).
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Runtime::new(RuntimeSettings {
            max_concurrent_jobs: 64,
            memory_limit: MEMORY_LIMIT,
            time_limit: Duration::from_secs(30),
        })
        .expect("runtime")
    })
}

/// The example component `file`, compiled once per test binary.
fn example(file: &'static str) -> &'static Worker {
    static WORKERS: OnceLock<Mutex<HashMap<&'static str, &'static Worker>>> = OnceLock::new();
    let mut workers = WORKERS.get_or_init(Default::default).lock().expect("workers");
    workers.entry(file).or_insert_with(|| {
        let worker = runtime().load_file(guest_path(file).as_ref()).unwrap_or_else(|e| panic!("{file} loads: {e}"));
        Box::leak(Box::new(worker))
    })
}

/// Runs one job of `file` on `input`: its JSON output, or how it failed.
async fn run(db: &Arc<Database>, file: &'static str, input: Value) -> Result<Value, JobError> {
    let input = serde_json::to_vec(&input).expect("input json");
    let outcome = runtime().run_job(example(file), db.job_session(), &input, &CancellationToken::new()).await;
    outcome.result.map(|output| serde_json::from_slice(&output).expect("the output is JSON"))
}

fn spawn(db: &Arc<Database>, file: &'static str, input: Value) -> tokio::task::JoinHandle<Result<Value, JobError>> {
    let db = db.clone();
    tokio::spawn(async move { run(&db, file, input).await })
}

async fn ok(job: tokio::task::JoinHandle<Result<Value, JobError>>) -> Value {
    job.await.expect("job task").unwrap_or_else(|e| panic!("job failed: {e}"))
}

/// A database with fewer sessions than the default, so that the tests of
/// this binary running at once stay well inside `max_connections`. Each job
/// starts on a shared session of its own while there is one, so that jobs
/// of one host holding an entity together show in `pg_locks` as one row
/// each (packed on one session, their shared locks would be one row).
async fn small_database() -> Arc<Database> {
    database_with(DbSettings { max_sessions: 8, jobs_per_shared_session: 1, ..DbSettings::default() }).await
}

// ---------------------------------------------------------------- transfer

const TRANSFER: &str = "transfer.wasm";

async fn open_accounts(db: &Arc<Database>, balance: u64) -> (Uuid, Uuid) {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    for account in [a, b] {
        let opened = run(db, TRANSFER, json!({"action": "deposit", "account": account, "amount": balance})).await;
        assert_eq!(opened.expect("deposit")["balance"], balance);
    }
    (a, b)
}

async fn balance(db: &Arc<Database>, account: Uuid) -> u64 {
    let balance = run(db, TRANSFER, json!({"action": "balance", "account": account})).await.expect("balance");
    balance["balance"].as_u64().expect("a number")
}

/// 20 transfers a→b and 20 b→a at once, each pausing between its two locks:
/// every one goes through without a deadlock (both directions lock in UUID
/// order), and the sum of the balances is what it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opposite_transfers_keep_the_sum() {
    let db = small_database().await;
    let (a, b) = open_accounts(&db, 1000).await;
    let transfer = |from: Uuid, to: Uuid, amount: u64| {
        spawn(&db, TRANSFER, json!({"action": "transfer", "from": from, "to": to, "amount": amount, "think_ms": 5}))
    };
    let jobs: Vec<_> = (0..20).flat_map(|_| [transfer(a, b, 7), transfer(b, a, 5)]).collect();
    for job in jobs {
        let output = ok(job).await;
        assert_eq!(output["transferred"], true, "{output}");
        assert_eq!(output["retries"], 0, "the fixed order never deadlocks: {output}");
        let order = output["lock_order"].as_array().expect("lock order");
        assert!(order[0].as_str() < order[1].as_str(), "smaller UUID first: {output}");
    }
    let (after_a, after_b) = (balance(&db, a).await, balance(&db, b).await);
    assert_eq!((after_a, after_b), (1000 - 20 * 7 + 20 * 5, 1000 + 20 * 7 - 20 * 5));
    assert_eq!(after_a + after_b, 2000, "the sum is kept");
}

/// A transfer in the fixed order and one in the reverse order, each pausing
/// while it holds its first lock: they wait for each other, and the server
/// tells one `deadlock`. Without retries that job fails saying so; with
/// retries it backs off, tries again, and reports how many it needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_order_transfers_are_told_deadlock_and_retry() {
    let db = small_database().await;
    for max_retries in [0, 5] {
        let (a, b) = open_accounts(&db, 100).await;
        let transfer = |from: Uuid, to: Uuid, reverse: bool| {
            spawn(
                &db,
                TRANSFER,
                json!({"action": "transfer", "from": from, "to": to, "amount": 10,
                       "reverse_order": reverse, "think_ms": 500, "max_retries": max_retries}),
            )
        };
        let (fixed, reverse) = (transfer(a, b, false), transfer(b, a, true));
        let outcomes = [fixed.await.expect("task"), reverse.await.expect("task")];
        let (oks, errors): (Vec<_>, Vec<_>) = outcomes.into_iter().partition(Result::is_ok);
        let oks: Vec<Value> = oks.into_iter().map(Result::unwrap).collect();
        if max_retries == 0 {
            assert_eq!((oks.len(), errors.len()), (1, 1), "one job is told deadlock: {oks:?} {errors:?}");
            let error = errors[0].as_ref().unwrap_err().to_string();
            assert!(error.contains("deadlock"), "{error}");
            assert_eq!(oks[0]["retries"], 0);
            assert_eq!(balance(&db, a).await + balance(&db, b).await, 200, "the failed one wrote nothing");
        } else {
            assert!(errors.is_empty(), "{errors:?}");
            let mut retries: Vec<u64> = oks.iter().map(|o| o["retries"].as_u64().expect("retries")).collect();
            retries.sort();
            assert_eq!(retries[0], 0, "the winner went through at once: {oks:?}");
            assert!(retries[1] >= 1, "the loser was told deadlock and retried: {oks:?}");
            assert!(oks.iter().all(|o| o["transferred"] == true));
            assert_eq!((balance(&db, a).await, balance(&db, b).await), (100, 100), "10 went each way");
        }
    }
}

/// A typed worker given input that does not parse fails with a message
/// saying what is wrong, before it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_fails_the_job_clearly() {
    let db = small_database().await;
    let error = run(&db, TRANSFER, json!({"action": "transfer", "from": Uuid::new_v4()})).await.unwrap_err();
    let JobError::Failed(message) = error else { panic!("expected a job error, got {error:?}") };
    assert!(message.starts_with("invalid input: missing field `to`"), "{message}");
}

// --------------------------------------------------------------- singleton

fn pinlock_run(file: &str, input: &Value, jobs: u64) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pinlock"));
    command
        .arg("run")
        .arg(guest_path(file))
        .args(["--jobs", &jobs.to_string(), "--concurrency", &jobs.to_string(), "--max-sessions", "8"])
        .args(["--input", &input.to_string(), "--print-outputs"])
        .env("DATABASE_URL", database_url())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Two hosts (`pinlock run` processes) start 6 jobs each for one date at
/// once: exactly one job does the work; the rest skip it, either because
/// another job is on it or because it is done. A job that comes later skips
/// it as done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn singleton_exactly_one_of_many_jobs_does_the_work() {
    let date = format!("test-{}", Uuid::new_v4());
    let input = json!({"date": date, "work_ms": 500});
    let hosts: Vec<_> =
        (0..2).map(|_| pinlock_run("singleton.wasm", &input, 6).spawn().expect("spawn pinlock run")).collect();
    let mut outputs = Vec::new();
    for host in hosts {
        let output = host.wait_with_output().expect("pinlock run");
        assert!(output.status.success(), "pinlock run failed: {}", String::from_utf8_lossy(&output.stderr));
        for line in String::from_utf8_lossy(&output.stdout).lines().filter(|l| l.starts_with('{')) {
            outputs.push(serde_json::from_str::<Value>(line).expect("output JSON"));
        }
    }
    assert_eq!(outputs.len(), 12, "{outputs:?}");
    let ran: Vec<_> = outputs.iter().filter(|o| o["ran"] == true).collect();
    assert_eq!(ran.len(), 1, "exactly one job did the work: {outputs:?}");
    for skipped in outputs.iter().filter(|o| o["ran"] == false) {
        let reason = skipped["reason"].as_str().expect("a reason");
        assert!(reason == "another job is running it" || reason == "already done", "{skipped}");
    }
    let db = small_database().await;
    let later = run(&db, "singleton.wasm", json!({"date": date, "work_ms": 0})).await.expect("a later job");
    assert_eq!(later["ran"], false);
    assert_eq!(later["reason"], "already done");
    assert_eq!(later["done_by"], ran[0]["fencing_token"], "the marker names the job that did it");
    let other_day = run(&db, "singleton.wasm", json!({"date": format!("{date}-next"), "work_ms": 0})).await;
    assert_eq!(other_day.expect("another date")["ran"], true, "another date's work is another singleton");
}

// ------------------------------------------------------------------ report

const REPORT: &str = "report.wasm";

fn span(output: &Value) -> (u64, u64) {
    (output["granted_unix_ms"].as_u64().expect("granted"), output["done_unix_ms"].as_u64().expect("done"))
}

/// Four readers hold the document's lock together (four granted share
/// locks in `pg_locks` at once, their spans overlapping); a writer arriving
/// meanwhile waits for all of them (its exclusive request is seen waiting),
/// and two readers arriving after it wait for the writer and read its
/// version. No reader ever sees a half-written document. Readers, writer
/// and late readers run on three hosts, so that every wait is the server's
/// and shows in `pg_locks` (a host's own jobs wait in its lock table).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_share_the_lock_and_the_writer_excludes_them() {
    let db = small_database().await;
    let (writer_host, late_host) = (small_database().await, small_database().await);
    let observer = observer().await;
    let doc = Uuid::new_v4();
    let key = key_of(&observer, doc).await;
    let first = run(&db, REPORT, json!({"action": "write", "doc": doc, "text": "draft"})).await.expect("first write");
    assert_eq!((first["mode"].as_str(), first["version"].as_u64()), (Some("exclusive"), Some(1)));

    let read = |host: &Arc<Database>| spawn(host, REPORT, json!({"action": "read", "doc": doc, "hold_ms": 1500}));
    let readers: Vec<_> = (0..4).map(|_| read(&db)).collect();
    let rows = wait_for_locks(&observer, key, |rows| rows.iter().filter(|r| r.granted).count() == 4).await;
    assert!(rows.iter().all(|r| r.granted && r.mode == "ShareLock"), "four readers at once: {rows:?}");

    let writer = spawn(&writer_host, REPORT, json!({"action": "write", "doc": doc, "text": "final", "hold_ms": 300}));
    let rows = wait_for_locks(&observer, key, |rows| rows.iter().any(|r| !r.granted)).await;
    let waiting: Vec<_> = rows.iter().filter(|r| !r.granted).collect();
    assert_eq!(waiting.len(), 1, "{rows:?}");
    assert_eq!(waiting[0].mode, "ExclusiveLock", "the writer waits for the readers: {rows:?}");
    let late_readers: Vec<_> = (0..2).map(|_| read(&late_host)).collect();
    let rows = wait_for_locks(&observer, key, |rows| rows.iter().filter(|r| !r.granted).count() == 3).await;
    assert_eq!(rows.iter().filter(|r| !r.granted).count(), 3, "late readers queue behind the writer: {rows:?}");

    let mut early = Vec::new();
    for reader in readers {
        early.push(ok(reader).await);
    }
    let writer = ok(writer).await;
    let mut late = Vec::new();
    for reader in late_readers {
        late.push(ok(reader).await);
    }
    let latest_grant = early.iter().map(|r| span(r).0).max().expect("readers");
    let earliest_done = early.iter().map(|r| span(r).1).min().expect("readers");
    assert!(latest_grant < earliest_done, "the early readers held the lock at the same time: {early:?}");
    assert_eq!(writer["mode"], "exclusive");
    assert_eq!(writer["version"], 2);
    let (write_start, write_end) = span(&writer);
    for reader in &early {
        assert_eq!((reader["mode"].as_str(), reader["version"].as_u64()), (Some("shared"), Some(1)), "{reader}");
        assert!(span(reader).1 <= write_start, "the writer started after every early reader: {reader} {writer}");
    }
    for reader in &late {
        assert_eq!(reader["version"], 2, "late readers read the writer's version: {reader}");
        assert!(span(reader).0 >= write_end, "late readers started after the writer: {reader} {writer}");
    }
    assert!(early.iter().chain(&late).all(|r| r["consistent"] == true && r["mode"] == "shared"));
    assert_eq!(late[0]["text"], "final");
}

// ------------------------------------------------------------ fenced-write

const FENCED: &str = "fenced_write.wasm";

/// The store's record for `resource`, read straight from the key-value table.
async fn record(observer: &tokio_postgres::Client, resource: Uuid) -> Value {
    let bytes = stored_value(observer, "fenced-store", &resource.to_string()).await.expect("a record");
    serde_json::from_slice(&bytes).expect("record JSON")
}

/// Starts a writer that holds `resource`'s lock for 2.5 s before its write,
/// terminates its backend once its lock is granted, and has a second writer
/// take the lock and write. Returns the stale writer's task and the second
/// writer's output.
async fn overtaken_writer(
    db: &Arc<Database>,
    observer: &tokio_postgres::Client,
    resource: Uuid,
    stale: Value,
) -> (tokio::task::JoinHandle<Result<Value, JobError>>, Value) {
    let key = key_of(observer, resource).await;
    let stale = spawn(db, FENCED, stale);
    let rows = wait_for_locks(observer, key, |rows| rows.iter().any(|r| r.granted)).await;
    let pid = rows.first().expect("the stale writer holds the lock").pid;
    observer.execute("SELECT pg_terminate_backend($1, 5000)", &[&pid]).await.expect("terminate");
    let fresh = run(db, FENCED, json!({"action": "write", "resource": resource, "value": "fresh"})).await;
    let fresh = fresh.expect("the fresh writer takes the lock and writes");
    assert_eq!(fresh["outcome"]["result"], "accepted", "{fresh}");
    (stale, fresh)
}

/// A writer whose session is terminated while it holds the lock is
/// overtaken: another job takes the lock (a newer fencing token) and writes.
/// The stale writer's write answers `lost` (the host's fence); a stale write
/// that does reach the store, on purpose (`token_override`) or by a buggy
/// worker ignoring `lost` (`write_after_loss`), is refused by the store,
/// which has seen a newer token. The record keeps the fresh write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_write_refuses_a_stale_holder() {
    let db = small_database().await;
    let observer = observer().await;
    let resource = Uuid::new_v4();
    let stale = |extra: Value| {
        let mut input = json!({"action": "write", "resource": resource, "value": "stale", "hold_ms": 2500});
        input.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
        input
    };

    // 1. The host's fence: the stale writer's write answers `lost`.
    let (stale_job, fresh) = overtaken_writer(&db, &observer, resource, stale(json!({}))).await;
    let fresh_token = fresh["token"].as_u64().expect("token");
    let error = stale_job.await.expect("task").expect_err("the stale write is refused").to_string();
    assert!(error.contains("lock lost before the write"), "{error}");
    let stale_token: u64 = error
        .split("fencing token ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("the error names the token: {error}"));
    assert!(stale_token < fresh_token, "fencing tokens grow: {stale_token} then {fresh_token}");
    assert_eq!(record(&observer, resource).await, json!({"highest_token": fresh_token, "value": "fresh"}));

    // 2. The store's own check: a write carrying the stale token is refused.
    let direct = run(&db, FENCED, stale(json!({"hold_ms": 0, "token_override": stale_token}))).await;
    let direct = direct.expect("the job runs");
    assert_eq!(direct["token"], stale_token);
    assert_eq!(direct["outcome"], json!({"result": "refused", "highest_token": fresh_token}), "{direct}");
    assert_eq!(record(&observer, resource).await["value"], "fresh");

    // 3. A buggy worker that drops its lost guard and writes anyway with its
    //    old token reaches the store, which refuses it.
    let (buggy, fresh) = overtaken_writer(&db, &observer, resource, stale(json!({"write_after_loss": true}))).await;
    let fresh_token = fresh["token"].as_u64().expect("token");
    let buggy = ok(buggy).await;
    assert_eq!(buggy["lost"], true, "{buggy}");
    assert!(buggy["token"].as_u64().expect("token") < fresh_token);
    assert_eq!(buggy["outcome"], json!({"result": "refused", "highest_token": fresh_token}), "{buggy}");
    assert_eq!(record(&observer, resource).await, json!({"highest_token": fresh_token, "value": "fresh"}));
    let read = run(&db, FENCED, json!({"action": "read", "resource": resource})).await.expect("read");
    assert_eq!(read["record"]["highest_token"], fresh_token);
}
