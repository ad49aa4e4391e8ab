//! Runs many jobs of one worker, a bounded number at a time, on the shared
//! [`Scheduler`] (each job on its own task, so guests run on every core),
//! and hands each outcome to the caller as it finishes.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::db::Database;
use crate::jobs::{JobSpec, Scheduler};
use crate::runtime::{JobOutcome, Runtime, Worker};

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
        let feeder = {
            let scheduler = scheduler.clone();
            let (worker, input, cancel) = (self.worker, self.input, self.cancel.clone());
            tokio::spawn(async move {
                for index in 0..self.jobs {
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
                    let done_tx = done_tx.clone();
                    scheduler.start(slot, spec, move |outcome| {
                        let _ = done_tx.send(outcome);
                    });
                }
            })
        };
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
        let _ = feeder.await;
        canceller.abort();
    }
}
