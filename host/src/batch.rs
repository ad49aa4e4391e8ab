//! Runs many jobs of one worker, a bounded number at a time, on the shared
//! [`Scheduler`] (one task per concurrent job, a lane that runs its jobs one
//! after another, so guests run on every core), and hands each outcome to
//! the caller as it finishes. A lane starts its next guest while the last
//! job's release finishes (the answers to the unlocks it sent), and reports
//! that job once its locks are released.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::db::Database;
use crate::jobs::{JobSpec, Scheduler};
use crate::runtime::{EndedJob, JobOutcome, Runtime, Worker};

/// What to run.
pub struct Batch {
    /// The engine and limits.
    pub runtime: Arc<Runtime>,
    /// The worker every job runs.
    pub worker: Arc<Worker>,
    /// The host's database handle.
    pub db: Arc<Database>,
    /// How many jobs.
    pub jobs: u64,
    /// How many at once.
    pub concurrency: usize,
    /// Input of job number `i` (0-based).
    pub input: Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync>,
    /// Stops the jobs still running (each still releases its locks) and
    /// starts no more.
    pub cancel: CancellationToken,
}

impl Batch {
    /// Runs every job; calls `on_done` with each outcome as it arrives.
    pub async fn run(self, mut on_done: impl FnMut(JobOutcome)) {
        let scheduler = Arc::new(Scheduler::new(self.runtime, self.db, self.concurrency));
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let worker_name: Arc<str> = Arc::from("batch");
        // One lane per concurrent job, each running its jobs one after
        // another in its own task (no task per job).
        let next = Arc::new(AtomicU64::new(0));
        let lanes: Vec<_> = (0..self.concurrency.max(1))
            .map(|_| {
                let (scheduler, next, done_tx) = (scheduler.clone(), next.clone(), done_tx.clone());
                let (worker, input, cancel) = (self.worker.clone(), self.input.clone(), self.cancel.clone());
                let worker_name = worker_name.clone();
                crate::shard::spawn(async move {
                    // The last job's release, finished while the next guest
                    // runs (see `Runtime::run_guest`).
                    let mut ended: Option<EndedJob> = None;
                    loop {
                        // Locks the last guest never released are unlocked
                        // first, so that the next job never finds them taken.
                        if ended.as_ref().is_some_and(EndedJob::holds_locks) {
                            finish(ended.take(), &done_tx).await;
                        }
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= self.jobs || cancel.is_cancelled() {
                            break;
                        }
                        let slot = tokio::select! {
                            slot = scheduler.slot() => slot,
                            () = cancel.cancelled() => break,
                        };
                        let spec = JobSpec {
                            id: index as i64,
                            worker_name: worker_name.clone(),
                            worker: worker.clone(),
                            input: input(index),
                            max_locks: None,
                        };
                        // The next guest is polled first: its first statement
                        // carries the last job's queued unlocks along.
                        let report = finish(ended.take(), &done_tx);
                        ended = Some(futures_util::future::join(scheduler.run(slot, spec), report).await.0);
                    }
                    finish(ended, &done_tx).await;
                })
            })
            .collect();
        drop(done_tx);
        let canceller = {
            let (scheduler, cancel) = (scheduler.clone(), self.cancel);
            tokio::spawn(async move {
                cancel.cancelled().await;
                scheduler.cancel_all();
            })
        };
        while let Some(outcome) = done_rx.recv().await {
            on_done(outcome);
        }
        for lane in lanes {
            let _ = lane.await;
        }
        canceller.abort();
    }
}

/// Finishes `ended`, if any, and hands its outcome over.
async fn finish(ended: Option<EndedJob>, done: &mpsc::UnboundedSender<JobOutcome>) {
    if let Some(ended) = ended {
        let _ = done.send(ended.finish().await);
    }
}
