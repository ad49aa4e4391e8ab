//! Shared test harness: the test database, a wasmtime runtime and the guest
//! fixtures (compiled once per test binary), an observer session that reads
//! `pg_locks`, and helpers to run scripted jobs.
#![allow(dead_code)] // each test binary uses its own subset

pub mod serve;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use pinlock::db::{Database, DbConfig, DbSettings};
use pinlock::runtime::{JobOutcome, Runtime, RuntimeSettings, Worker};

/// The database tests use (see `pinlock::testing`).
pub fn database_url() -> String {
    pinlock::testing::database_url()
}

/// Wall-clock limit of test jobs.
pub const TIME_LIMIT: Duration = Duration::from_secs(3);
/// Memory limit of test jobs.
pub const MEMORY_LIMIT: usize = 32 << 20;

pub fn guest_path(file: &str) -> String {
    format!("{}/{file}", env!("PINLOCK_GUESTS_DIR"))
}

/// One runtime per test binary (compiling components is the slow part).
pub fn runtime() -> &'static Arc<Runtime> {
    static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Arc::new(
            Runtime::new(RuntimeSettings {
                max_concurrent_jobs: 64,
                memory_limit: MEMORY_LIMIT,
                time_limit: TIME_LIMIT,
            })
            .expect("runtime"),
        )
    })
}

/// The scripted fixture: does whatever its input script says.
pub fn scripted() -> &'static Arc<Worker> {
    static WORKER: OnceLock<Arc<Worker>> = OnceLock::new();
    WORKER.get_or_init(|| {
        Arc::new(
            runtime().load_file(guest_path("pinlock_test_scripted.wasm").as_ref()).expect("scripted fixture loads"),
        )
    })
}

/// A host's database handle on the test database, migrated.
pub async fn database() -> Arc<Database> {
    database_with(DbSettings::default()).await
}

pub async fn database_with(settings: DbSettings) -> Arc<Database> {
    let mut config = DbConfig::parse(&database_url()).expect("test database url");
    config.set_application_name("pinlock-test");
    let db = Database::new(config, settings);
    db.migrate().await.expect("migrate the test database");
    db
}

/// What most tests start with: a host's database, an observer session, and a
/// fresh entity with its advisory key.
pub struct Setup {
    pub db: Arc<Database>,
    pub observer: Client,
    pub entity: Uuid,
    pub key: i64,
}

pub async fn setup() -> Setup {
    let db = database().await;
    let observer = observer().await;
    let entity = Uuid::new_v4();
    let key = key_of(&observer, entity).await;
    Setup { db, observer, entity, key }
}

/// A plain session for looking at (and holding) locks from outside pinlock.
pub async fn observer() -> Client {
    let (client, connection) = tokio_postgres::connect(&database_url(), NoTls).await.expect("observer connects");
    tokio::spawn(connection);
    client
}

/// Sends `signal` (`-STOP`, `-CONT`) to a process: a pinlock host, or a
/// PostgreSQL backend (the tests run as root).
pub fn signal(signal: &str, pid: impl std::fmt::Display) {
    let status = std::process::Command::new("kill").args([signal, &pid.to_string()]).status().expect("run kill");
    assert!(status.success(), "kill {signal} {pid} failed");
}

/// The advisory key pinlock uses for `entity` (maps it if new).
pub async fn key_of(observer: &Client, entity: Uuid) -> i64 {
    observer
        .query_one(
            "INSERT INTO pinlock.entity_keys (entity) VALUES ($1)
             ON CONFLICT (entity) DO UPDATE SET entity = EXCLUDED.entity RETURNING key",
            &[&entity],
        )
        .await
        .expect("map entity")
        .get(0)
}

/// One row of `pg_locks` for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRow {
    pub pid: i32,
    pub mode: String,
    pub granted: bool,
}

/// Every backend holding or awaiting the bigint advisory key `key`.
pub async fn locks_on(observer: &Client, key: i64) -> Vec<LockRow> {
    observer
        .query(
            "SELECT pid, mode, granted FROM pg_locks
             WHERE locktype = 'advisory' AND objsubid = 1
               AND classid = (($1::int8 >> 32) & 4294967295)::oid AND objid = ($1::int8 & 4294967295)::oid
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
             ORDER BY granted DESC, pid",
            &[&key],
        )
        .await
        .expect("read pg_locks")
        .iter()
        .map(|r| LockRow { pid: r.get(0), mode: r.get(1), granted: r.get(2) })
        .collect()
}

/// Polls until `check` holds for the locks on `key` (at most 5 s).
pub async fn wait_for_locks(observer: &Client, key: i64, check: impl Fn(&[LockRow]) -> bool) -> Vec<LockRow> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let rows = locks_on(observer, key).await;
        if check(&rows) || tokio::time::Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs the scripted fixture with `steps`.
pub async fn run_script(db: &Arc<Database>, steps: Value) -> JobOutcome {
    run_script_cancellable(db, steps, &CancellationToken::new()).await
}

/// Runs the scripted fixture with `steps` on its own task.
pub fn spawn_script(db: &Arc<Database>, steps: Value) -> tokio::task::JoinHandle<JobOutcome> {
    let db = db.clone();
    tokio::spawn(async move { run_script(&db, steps).await })
}

pub async fn run_script_cancellable(db: &Arc<Database>, steps: Value, cancel: &CancellationToken) -> JobOutcome {
    let input = serde_json::to_vec(&json!({ "steps": steps })).expect("script json");
    runtime().run_job(scripted(), db.job_session(), &input, cancel).await
}

/// The `results` array of a job that returned.
pub fn results(outcome: &JobOutcome) -> Vec<Value> {
    let output = outcome.result.as_ref().unwrap_or_else(|e| panic!("job failed: {e}"));
    let value: Value = serde_json::from_slice(output).expect("scripted output is JSON");
    value["results"].as_array().cloned().expect("results array")
}

/// The fence of an `{"ok":{"slot":..,"fence":..}}` result.
pub fn fence(result: &Value) -> u64 {
    result["ok"]["fence"].as_u64().unwrap_or_else(|| panic!("not a grant: {result}"))
}

/// The value stored under `key` in `bucket`, read straight from the store.
pub async fn stored_value(observer: &Client, bucket: &str, key: &str) -> Option<Vec<u8>> {
    observer
        .query_opt("SELECT value FROM pinlock.kv WHERE bucket = $1 AND key = $2", &[&bucket, &key])
        .await
        .expect("read pinlock.kv")
        .map(|row| row.get(0))
}
