//! Scenario 4, job overhead: an empty job (guest op `empty`, no host call):
//! a fresh store and instance, the call, the teardown and the end-of-job
//! release (nothing to release, no session). Timed one at a time, then run
//! as a batch with one job per core for the rate.

use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use super::harness::Host;
use super::plan::Plan;
use super::stats::{Hist, Latency};

/// Empty jobs run before timing.
const WARM_UP_JOBS: usize = 200;

/// What scenario 4 measured.
#[derive(Debug, Serialize)]
pub struct Overhead {
    /// One empty job, start to outcome, run one at a time.
    pub job: Latency,
    /// Jobs per second one at a time.
    pub sequential_per_sec: f64,
    /// Jobs per second with one job per core at once.
    pub parallel_per_sec: f64,
    /// Jobs at once in the parallel run.
    pub parallel_jobs: usize,
}

/// Runs scenario 4.
pub async fn run(host: &Host, plan: &Plan, cores: usize) -> anyhow::Result<Overhead> {
    let db = host.database(host.db_settings.max_sessions);
    let input = serde_json::to_vec(&json!({"op": "empty"}))?;
    for _ in 0..WARM_UP_JOBS {
        host.run(&db, &input).await.result?;
    }
    let mut hist = Hist::new()?;
    let started = Instant::now();
    for _ in 0..plan.overhead_jobs {
        let job_started = Instant::now();
        host.run(&db, &input).await.result?;
        hist.record(job_started.elapsed());
    }
    let sequential_secs = started.elapsed().as_secs_f64();
    let parallel_jobs = cores.max(1);
    let batch = host.batch(&db, vec![input; plan.overhead_jobs], parallel_jobs).await?;
    Ok(Overhead {
        job: hist.latency(),
        sequential_per_sec: plan.overhead_jobs as f64 / sequential_secs.max(f64::EPSILON),
        parallel_per_sec: batch.outputs.len() as f64 / batch.wall.as_secs_f64().max(f64::EPSILON),
        parallel_jobs,
    })
}
