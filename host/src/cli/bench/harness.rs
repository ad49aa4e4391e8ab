//! The pinlock side of every scenario: the embedded bench guest, one runtime,
//! databases with the session bound a scenario needs, and helpers to run one
//! job or a batch of jobs and read their JSON output.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use pinlock::batch::Batch;
use pinlock::db::{Database, DbConfig, DbSettings};
use pinlock::runtime::{JobOutcome, Runtime, RuntimeSettings, Worker};

/// The bench guest (`host/tests/guests/bench`), built by build.rs.
pub const BENCH_WASM: &[u8] = include_bytes!(concat!(env!("PINLOCK_GUESTS_DIR"), "/pinlock_test_bench.wasm"));

/// Entities mapped per warm-up job.
const PREMAP_CHUNK: usize = 64;

/// A pinlock host as the bench drives it.
pub struct Host {
    pub runtime: Arc<Runtime>,
    pub worker: Arc<Worker>,
    pub config: DbConfig,
    pub db_settings: DbSettings,
}

/// Outputs of a batch and how long it took.
pub struct BatchRun {
    /// Each job's output, in the order the jobs finished.
    pub outputs: Vec<Vec<u8>>,
    /// Wall time from the first job's start to the last one's end.
    pub wall: Duration,
}

impl Host {
    /// Loads the bench guest into a runtime with room for `max_jobs` at once.
    pub fn new(config: DbConfig, db_settings: DbSettings, runtime_settings: RuntimeSettings) -> anyhow::Result<Self> {
        let runtime = Arc::new(Runtime::new(runtime_settings)?);
        let worker = Arc::new(runtime.load(BENCH_WASM).context("loading the bench guest")?);
        Ok(Self { runtime, worker, config, db_settings })
    }

    /// The name of the database the bench runs against.
    pub fn dbname(&self) -> String {
        self.config.driver_config().get_dbname().unwrap_or_default().to_owned()
    }

    /// A fresh database handle (own pool, own key cache) with `max_sessions`.
    pub fn database(&self, max_sessions: usize) -> Arc<Database> {
        let settings = DbSettings { max_sessions, ..self.db_settings.clone() };
        Database::new(self.config.clone(), settings)
    }

    /// Runs one job; its output parsed as JSON (`null` when empty).
    pub async fn job(&self, db: &Arc<Database>, input: &Value) -> anyhow::Result<Value> {
        let outcome = self.run(db, &serde_json::to_vec(input)?).await;
        parse_output(&job_output(outcome)?)
    }

    /// Runs one job of raw input and returns its outcome as is.
    pub async fn run(&self, db: &Arc<Database>, input: &[u8]) -> JobOutcome {
        let job = db.job_session();
        self.runtime.run_job(&self.worker, job, input, &CancellationToken::new()).await
    }

    /// Runs every input as one job, `concurrency` at a time, through
    /// [`Batch`]; fails on the first job that failed.
    pub async fn batch(
        &self,
        db: &Arc<Database>,
        inputs: Vec<Vec<u8>>,
        concurrency: usize,
    ) -> anyhow::Result<BatchRun> {
        let inputs = Arc::new(inputs);
        let batch = Batch {
            runtime: self.runtime.clone(),
            worker: self.worker.clone(),
            db: db.clone(),
            jobs: inputs.len() as u64,
            concurrency,
            input: {
                let inputs = inputs.clone();
                Arc::new(move |i| inputs.get(i as usize).cloned().unwrap_or_default())
            },
            cancel: CancellationToken::new(),
        };
        let mut outputs = Vec::with_capacity(inputs.len());
        let mut failures = Vec::new();
        let started = Instant::now();
        batch
            .run(|outcome| match job_output(outcome) {
                Ok(output) => outputs.push(output),
                Err(e) => failures.push(e),
            })
            .await;
        let wall = started.elapsed();
        if let Some(first) = failures.first() {
            bail!("{} of {} bench jobs failed; first: {first:#}", failures.len(), inputs.len());
        }
        Ok(BatchRun { outputs, wall })
    }

    /// Maps `entities` to keys in `db`'s cache (and the mapping table) by
    /// locking each once, in parallel jobs. Also leaves sessions idle in the
    /// pool, so the measured jobs that follow do not open any.
    pub async fn premap(&self, db: &Arc<Database>, entities: &[Uuid]) -> anyhow::Result<()> {
        let inputs = entities
            .chunks(PREMAP_CHUNK)
            .map(|chunk| serde_json::to_vec(&json!({"op": "lock_release", "entities": chunk})))
            .collect::<Result<Vec<_>, _>>()?;
        let concurrency = db.max_sessions().min(16);
        self.batch(db, inputs, concurrency).await.context("warm-up (mapping entities)")?;
        Ok(())
    }
}

/// The job's output, or its failure as an error.
fn job_output(outcome: JobOutcome) -> anyhow::Result<Vec<u8>> {
    let job = outcome.job_id;
    outcome.result.with_context(|| format!("bench job {job}"))
}

/// A job's output as JSON; empty output is `null`.
pub fn parse_output(output: &[u8]) -> anyhow::Result<Value> {
    if output.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(output).context("bench guest output is not JSON")
}

/// `count` fresh random entities.
pub fn fresh_entities(count: usize) -> Vec<Uuid> {
    (0..count).map(|_| Uuid::new_v4()).collect()
}

/// The `ns` list of a `lock_release` output.
pub fn ns_list(output: &Value) -> anyhow::Result<Vec<u64>> {
    u64_list(output, "ns")
}

/// A list of integers under `field` of a bench output.
pub fn u64_list(output: &Value, field: &str) -> anyhow::Result<Vec<u64>> {
    output[field]
        .as_array()
        .with_context(|| format!("bench output without a {field:?} list"))?
        .iter()
        .map(|v| v.as_u64().with_context(|| format!("non-integer in {field:?}")))
        .collect()
}
