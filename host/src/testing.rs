//! Testing workers from plain `cargo test`, and the database tests run
//! against.
//!
//! [`TestHost`] is a host in your test process: a wasmtime runtime and a
//! migrated database handle. Load a component, run jobs (one, or many at
//! once), get typed outputs and errors. [`WorkerBuild`] builds your worker
//! crate for `wasm32-wasip2` from a test, so `cargo test` alone is enough.
//!
//! ```no_run
//! // tests/host.rs of a worker crate; Cargo.toml:
//! // [dev-dependencies]
//! // pinlock = { path = "…/pinlock/host" }
//! // tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
//! // serde_json = "1"
//! use pinlock::testing::{TestHost, WorkerBuild};
//! use serde_json::{Value, json};
//!
//! #[tokio::test(flavor = "multi_thread")]
//! async fn counts_under_the_lock() {
//!     // Builds this crate (`cargo build --release --target wasm32-wasip2`,
//!     // in a target dir of its own) and returns the .wasm path.
//!     let wasm = WorkerBuild::new(env!("CARGO_MANIFEST_DIR")).build().expect("build the worker");
//!     let host = TestHost::new().await.expect("test host");
//!     let worker = host.load(&wasm).expect("load");
//!     let out: Value = host.run_json(&worker, &json!({"counter": "c1"})).await.expect("job");
//!     assert_eq!(out["value"], 1);
//!     // Ten jobs at once, typed:
//!     let outs = host.run_json_concurrently::<_, Value>(&worker, &vec![json!({"counter": "c2"}); 10]).await;
//!     assert!(outs.iter().all(|o| o.is_ok()));
//! }
//! # fn main() {}
//! ```
//!
//! The database ([`database_url`]), found the same way by every test binary
//! (and by plugin authors' tests):
//!
//! 1. `PINLOCK_TEST_DATABASE_URL`, when set (a libpq `key=value` string or URL);
//! 2. else the local server at 127.0.0.1:5432, database `test`, user
//!    `postgres` (the database is created when missing);
//! 3. else, when PostgreSQL server binaries are installed, a throwaway
//!    cluster started once per process and stopped when the process ends
//!    (see [`crate::scratch`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::db::{Database, DbConfig, DbError, DbSettings};
use crate::runtime::{JobError, JobOutcome, Runtime, RuntimeError, RuntimeSettings, Worker, WorkerError};
use crate::scratch::ScratchCluster;

/// The local server tests use when nothing else is named.
const LOCAL: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

/// The test database's connection string (resolved once per process).
///
/// Panics with a message saying what to install or set when there is none:
/// a test without a database cannot run.
pub fn database_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        // Resolved on a plain thread: callers may be inside a tokio runtime.
        std::thread::spawn(resolve).join().unwrap_or_else(|_| panic!("resolving the test database panicked"))
    })
    .clone()
}

fn resolve() -> String {
    if let Ok(url) = std::env::var("PINLOCK_TEST_DATABASE_URL") {
        return url;
    }
    let local_answers =
        std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], 5432).into(), Duration::from_secs(1)).is_ok();
    if local_answers {
        create_database_if_missing("host=127.0.0.1 port=5432 user=postgres dbname=postgres", "test");
        return LOCAL.to_owned();
    }
    let Some(bin) = ScratchCluster::find_server() else {
        panic!(
            "no test database: nothing answers at 127.0.0.1:5432, PINLOCK_TEST_DATABASE_URL is not set, \
             and no PostgreSQL server binaries are installed under /usr/lib/postgresql to start one"
        );
    };
    eprintln!("pinlock tests: nothing answers at 127.0.0.1:5432; starting a throwaway cluster from {}", bin.display());
    let cluster = ScratchCluster::start(&bin).unwrap_or_else(|e| panic!("cannot start a throwaway cluster: {e}"));
    let url = cluster.url.clone();
    // Kept for the whole process; its watchdog stops it when the process ends.
    std::mem::forget(cluster);
    url
}

/// Creates `name` through the maintenance database at `admin_url` unless it exists.
fn create_database_if_missing(admin_url: &str, name: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    runtime.block_on(async {
        let Ok((client, connection)) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await else {
            return; // the tests will report the connection problem themselves
        };
        let task = tokio::spawn(connection);
        let exists = client.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name]).await;
        if matches!(exists, Ok(None)) {
            // Identifier, not a value: `name` is a constant of this module.
            if let Err(e) = client.batch_execute(&format!("CREATE DATABASE {name}")).await {
                // Another test binary may have created it at the same moment.
                eprintln!("pinlock tests: CREATE DATABASE {name}: {e}");
            }
        }
        drop(client);
        let _ = task.await;
    });
}

// ------------------------------------------------------------------ TestHost

/// Why a test helper call failed. A job's own failure is [`TestError::Job`]:
/// match on it to test a worker's errors (`JobError::Failed(message)` carries
/// the text of a typed worker's error).
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    /// The WebAssembly runtime could not be set up.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The database could not be reached or migrated.
    #[error("test database: {0}")]
    Database(#[from] DbError),
    /// The component could not be loaded.
    #[error("loading the worker: {0}")]
    Load(#[from] WorkerError),
    /// Building the worker crate failed.
    #[error("building the worker: {0}")]
    Build(String),
    /// The job failed (returned an error, trapped, hit a limit, …).
    #[error(transparent)]
    Job(#[from] JobError),
    /// The input could not be serialized to JSON.
    #[error("the input is not serializable to JSON: {0}")]
    Input(serde_json::Error),
    /// The job succeeded but its output is not JSON of the expected type.
    #[error("the job's output is not the expected JSON ({error}): {output}")]
    Output {
        /// The parse error.
        error: serde_json::Error,
        /// The output, as text.
        output: String,
    },
}

impl TestError {
    /// The job's error, when the job itself failed.
    pub fn job_error(&self) -> Option<&JobError> {
        match self {
            TestError::Job(e) => Some(e),
            _ => None,
        }
    }
}

/// Limits of a [`TestHost`].
#[derive(Debug, Clone)]
pub struct TestHostSettings {
    /// The database (default: [`database_url`]).
    pub database_url: Option<String>,
    /// Jobs that may run at once, memory and time limit of each job.
    pub runtime: RuntimeSettings,
    /// Sessions, lock timeout and lock count of the database side. Jobs
    /// beyond `max_sessions` wait for a session (and `try_acquire` answers
    /// `unavailable` when none is free): keep it at least the number of
    /// jobs a test runs at once.
    pub db: DbSettings,
}

impl Default for TestHostSettings {
    fn default() -> Self {
        Self {
            database_url: None,
            runtime: RuntimeSettings {
                max_concurrent_jobs: 64,
                memory_limit: 64 << 20,
                time_limit: Duration::from_secs(30),
            },
            db: DbSettings { max_sessions: 32, ..DbSettings::default() },
        }
    }
}

/// A pinlock host inside a test: a runtime and a migrated database handle
/// (`application_name` `pinlock-test`). Cheap enough to make one per test;
/// share loaded [`Worker`]s within a test, loading compiles the component.
pub struct TestHost {
    runtime: Runtime,
    db: Arc<Database>,
}

impl TestHost {
    /// A host on the test database ([`database_url`]), migrated, with
    /// [`TestHostSettings::default`] limits.
    pub async fn new() -> Result<Self, TestError> {
        Self::with_settings(TestHostSettings::default()).await
    }

    /// A host with the given limits (and database, if named).
    pub async fn with_settings(settings: TestHostSettings) -> Result<Self, TestError> {
        let url = settings.database_url.unwrap_or_else(database_url);
        let mut config = DbConfig::parse(&url)?;
        config.set_application_name("pinlock-test");
        let db = Database::new(config, settings.db);
        db.migrate().await?;
        let runtime = Runtime::new(settings.runtime)?;
        Ok(Self { runtime, db })
    }

    /// Loads (compiles) a worker component from a file.
    pub fn load(&self, path: impl AsRef<Path>) -> Result<Worker, TestError> {
        Ok(self.runtime.load_file(path.as_ref())?)
    }

    /// Loads (compiles) a worker component from its bytes.
    pub fn load_bytes(&self, bytes: &[u8]) -> Result<Worker, TestError> {
        Ok(self.runtime.load(bytes)?)
    }

    /// Runs one job; its output bytes or why it failed. Every lock the job
    /// held is released before this returns.
    pub async fn run(&self, worker: &Worker, input: &[u8]) -> Result<Vec<u8>, JobError> {
        self.run_outcome(worker, input).await.result
    }

    /// Runs one job and returns everything known about it (lock statistics,
    /// what the end-of-job release did).
    pub async fn run_outcome(&self, worker: &Worker, input: &[u8]) -> JobOutcome {
        self.runtime.run_job(worker, self.db.job_session(), input, &CancellationToken::new()).await
    }

    /// Runs one job of a typed worker: `input` as JSON in, the output parsed
    /// as `O`.
    pub async fn run_json<I: Serialize + ?Sized, O: DeserializeOwned>(
        &self,
        worker: &Worker,
        input: &I,
    ) -> Result<O, TestError> {
        let input = serde_json::to_vec(input).map_err(TestError::Input)?;
        parse_output(self.run(worker, &input).await?)
    }

    /// Runs one job per input, all at once; results in the order of `inputs`.
    pub async fn run_concurrently<B: AsRef<[u8]>>(
        &self,
        worker: &Worker,
        inputs: impl IntoIterator<Item = B>,
    ) -> Vec<Result<Vec<u8>, JobError>> {
        let inputs: Vec<B> = inputs.into_iter().collect();
        futures_util::future::join_all(inputs.iter().map(|input| self.run(worker, input.as_ref()))).await
    }

    /// [`run_json`](Self::run_json) for each input, all at once; results in
    /// the order of `inputs`.
    pub async fn run_json_concurrently<I: Serialize, O: DeserializeOwned>(
        &self,
        worker: &Worker,
        inputs: &[I],
    ) -> Vec<Result<O, TestError>> {
        futures_util::future::join_all(inputs.iter().map(|input| self.run_json(worker, input))).await
    }

    /// The runtime (to load with a cache, or run jobs with a cancel token).
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The database handle (job sessions of your own, statistics).
    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }
}

fn parse_output<O: DeserializeOwned>(output: Vec<u8>) -> Result<O, TestError> {
    serde_json::from_slice(&output)
        .map_err(|error| TestError::Output { error, output: String::from_utf8_lossy(&output).into_owned() })
}

// --------------------------------------------------------------- WorkerBuild

/// Builds a worker crate for `wasm32-wasip2` from a test, with a nested
/// `cargo build` in a target dir of its own (the `cargo test` running the
/// test holds the lock on the usual one), and returns the component's path.
///
/// Defaults: the `release` profile; target dir `pinlock-workers` inside the
/// crate's (workspace's) target dir, so it is built once and cached.
#[derive(Debug, Clone)]
pub struct WorkerBuild {
    crate_dir: PathBuf,
    profile: String,
    target_dir: Option<PathBuf>,
}

impl WorkerBuild {
    /// The crate in `crate_dir` (the directory of its `Cargo.toml`; in a test,
    /// `env!("CARGO_MANIFEST_DIR")`).
    pub fn new(crate_dir: impl Into<PathBuf>) -> Self {
        Self { crate_dir: crate_dir.into(), profile: "release".into(), target_dir: None }
    }

    /// Builds with this cargo profile instead of `release`.
    pub fn profile(mut self, profile: &str) -> Self {
        self.profile = profile.into();
        self
    }

    /// Builds in this target dir instead of `<target dir>/pinlock-workers`.
    pub fn target_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.target_dir = Some(dir.into());
        self
    }

    /// Runs the build (a no-op when nothing changed) and returns the `.wasm`
    /// component's path. Cargo's diagnostics go to the test's stderr.
    pub fn build(&self) -> Result<PathBuf, TestError> {
        let fail = |m: String| TestError::Build(m);
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let crate_dir = self
            .crate_dir
            .canonicalize()
            .map_err(|e| fail(format!("no crate at {}: {e}", self.crate_dir.display())))?;
        let manifest = crate_dir.join("Cargo.toml");
        let target_dir = match &self.target_dir {
            Some(dir) => dir.clone(),
            None => cargo_target_dir(&cargo, &crate_dir)?.join("pinlock-workers"),
        };
        let output = std::process::Command::new(&cargo)
            // Cargo reads `.cargo/config.toml` (the stack-size rustflag) from
            // the directory it runs in.
            .current_dir(&crate_dir)
            .args(["build", "--target", "wasm32-wasip2", "--message-format=json-render-diagnostics"])
            .args(["--profile", &self.profile, "--manifest-path"])
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", &target_dir)
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| fail(format!("cannot run {cargo}: {e}")))?;
        if !output.status.success() {
            return Err(fail(format!(
                "`cargo build --target wasm32-wasip2 --profile {}` in {} failed ({}; see its output above). \
                 Is the target installed? `rustup target add wasm32-wasip2`",
                self.profile,
                crate_dir.display(),
                output.status
            )));
        }
        // The component: the cdylib artifact of the crate in `crate_dir`.
        let stdout = String::from_utf8_lossy(&output.stdout);
        let wasm = stdout
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|m| m["reason"] == "compiler-artifact")
            .filter(|m| {
                m["manifest_path"]
                    .as_str()
                    .and_then(|p| Path::new(p).canonicalize().ok())
                    .is_some_and(|p| p == manifest)
            })
            .flat_map(|m| m["filenames"].as_array().cloned().unwrap_or_default())
            .filter_map(|f| f.as_str().map(PathBuf::from))
            .find(|f| f.extension().is_some_and(|e| e == "wasm"));
        wasm.ok_or_else(|| {
            fail(format!(
                "the build of {} produced no .wasm file: is it a `crate-type = [\"cdylib\"]` library?",
                crate_dir.display()
            ))
        })
    }
}

/// Builds the worker crate in `crate_dir` with [`WorkerBuild`]'s defaults.
pub fn build_worker(crate_dir: impl Into<PathBuf>) -> Result<PathBuf, TestError> {
    WorkerBuild::new(crate_dir).build()
}

/// The target dir cargo uses for the crate in `crate_dir`.
fn cargo_target_dir(cargo: &str, crate_dir: &Path) -> Result<PathBuf, TestError> {
    let output = std::process::Command::new(cargo)
        .current_dir(crate_dir)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| TestError::Build(format!("cannot run {cargo} metadata: {e}")))?;
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| TestError::Build(format!("`cargo metadata` in {}: {e}", crate_dir.display())))?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| TestError::Build(format!("`cargo metadata` in {} names no target dir", crate_dir.display())))
}
