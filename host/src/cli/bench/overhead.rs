//! Scenario 4, job overhead: an empty job (guest op `empty`, no host call):
//! a fresh store and instance, the call, the teardown and the end-of-job
//! release (nothing to release, no session). Timed one at a time, then run
//! as a batch with one job per core for the rate.
//!
//! For the breakdown of a job that locks, the same is timed for a job that
//! acquires and releases one (mapped) entity, with the guest-visible time of
//! that pair: job = empty job + lock pair + what the lock adds around it
//! (session checkout and return).

use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use super::harness::{Host, fresh_entities, ns_list, parse_output};
use super::plan::Plan;
use super::stats::{Hist, Latency};

/// Jobs of each kind run before timing.
const WARM_UP_JOBS: usize = 200;
/// Entities the one-lock jobs take turns on.
const ONE_LOCK_ENTITIES: usize = 64;

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
    /// A job that acquires and releases one entity, start to outcome.
    pub one_lock_job: Latency,
    /// The acquire + release inside it, as the guest timed it.
    pub one_lock_guest: Latency,
}

/// Runs scenario 4.
pub async fn run(host: &Host, plan: &Plan, cores: usize) -> anyhow::Result<Overhead> {
    let db = host.database(host.db_settings.max_sessions);
    let input = serde_json::to_vec(&json!({"op": "empty"}))?;
    for _ in 0..WARM_UP_JOBS {
        host.run(&db, &input).await.result?;
    }
    let mut hist = Hist::new();
    let started = Instant::now();
    for _ in 0..plan.overhead_jobs {
        let job_started = Instant::now();
        host.run(&db, &input).await.result?;
        hist.record(job_started.elapsed());
    }
    let sequential_secs = started.elapsed().as_secs_f64();
    let parallel_jobs = cores.max(1);
    let batch = host.batch(&db, vec![input; plan.overhead_jobs], parallel_jobs).await?;
    let (one_lock_job, one_lock_guest) = one_lock_jobs(host, &db, plan.overhead_jobs).await?;
    Ok(Overhead {
        job: hist.latency(),
        sequential_per_sec: plan.overhead_jobs as f64 / sequential_secs.max(f64::EPSILON),
        parallel_per_sec: batch.outputs.len() as f64 / batch.wall.as_secs_f64().max(f64::EPSILON),
        parallel_jobs,
        one_lock_job,
        one_lock_guest,
    })
}

/// `jobs` one-lock jobs, one at a time: the job's time and the guest's.
async fn one_lock_jobs(
    host: &Host,
    db: &std::sync::Arc<pinlock::db::Database>,
    jobs: usize,
) -> anyhow::Result<(Latency, Latency)> {
    let entities = fresh_entities(ONE_LOCK_ENTITIES);
    host.premap(db, &entities).await?;
    let inputs = entities
        .iter()
        .map(|entity| serde_json::to_vec(&json!({"op": "lock_release", "entities": [entity]})))
        .collect::<Result<Vec<_>, _>>()?;
    let (mut job, mut guest) = (Hist::new(), Hist::new());
    for i in 0..WARM_UP_JOBS + jobs {
        let started = Instant::now();
        let output = host.run(db, &inputs[i % inputs.len()]).await.result?;
        if i >= WARM_UP_JOBS {
            job.record(started.elapsed());
            guest.record_all(ns_list(&parse_output(&output)?)?);
        }
    }
    Ok((job.latency(), guest.latency()))
}
