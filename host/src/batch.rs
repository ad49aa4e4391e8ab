//! Runs many jobs of one worker, a bounded number at a time, on tokio tasks
//! (so guests run on every core), and hands each outcome to the caller as it
//! finishes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::db::Database;
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
    /// Stops the jobs still running (each still releases its locks).
    pub cancel: CancellationToken,
}

impl Batch {
    /// Runs every job; calls `on_done` with each outcome as it arrives.
    pub async fn run(self, mut on_done: impl FnMut(JobOutcome)) {
        let next = Arc::new(AtomicU64::new(0));
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        for _ in 0..self.concurrency.max(1) {
            let (runtime, worker, db) = (self.runtime.clone(), self.worker.clone(), self.db.clone());
            let (input, cancel, next, done_tx) =
                (self.input.clone(), self.cancel.clone(), next.clone(), done_tx.clone());
            let jobs = self.jobs;
            tokio::spawn(async move {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= jobs || cancel.is_cancelled() {
                        break;
                    }
                    let job = db.job_session();
                    let outcome = runtime.run_job(&worker, job, &input(index), &cancel).await;
                    if done_tx.send(outcome).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        while let Some(outcome) = done_rx.recv().await {
            on_done(outcome);
        }
    }
}
