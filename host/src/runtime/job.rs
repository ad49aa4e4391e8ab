//! One job: a fresh `Store` and instance, the memory limit, the wall-clock
//! limit, cancellation — and, whatever happened, the release of every lock the
//! job still holds before its outcome is returned. A caller that runs jobs one
//! after another may start the next guest while the last job's release
//! finishes ([`Runtime::run_guest`], [`EndedJob::finish`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wasmtime::Store;

use super::imports::JobState;
use super::worker::Entry;
use super::{JobLimits, Runtime, Worker};
use crate::db::{Fencing, JobSession, LockStats, PendingRelease, ReleaseOutcome};

/// How a job failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// The guest returned an error message.
    #[error("job failed: {0}")]
    Failed(String),
    /// The guest trapped (a panic, an unreachable, a host bug).
    #[error("job trapped: {0}")]
    Trap(String),
    /// The guest ran past its wall-clock limit.
    #[error("job exceeded its time limit of {0:?}")]
    TimeLimit(Duration),
    /// The guest tried to use more memory than allowed.
    #[error("job exceeded its memory limit of {0} bytes")]
    MemoryLimit(usize),
    /// The host stopped the job.
    #[error("job cancelled")]
    Cancelled,
    /// The instance could not be created.
    #[error("job could not start: {0}")]
    Instantiate(String),
}

impl JobError {
    /// A short name for grouping failures in summaries (a guest's message
    /// is cut to its first 100 characters).
    pub fn kind(&self) -> String {
        match self {
            JobError::Failed(m) => format!("failed: {}", &m[..m.floor_char_boundary(100)]),
            JobError::Trap(_) => "trap".into(),
            JobError::TimeLimit(_) => "time limit".into(),
            JobError::MemoryLimit(_) => "memory limit".into(),
            JobError::Cancelled => "cancelled".into(),
            JobError::Instantiate(_) => "instantiate".into(),
        }
    }
}

/// Everything known about a finished job.
#[derive(Debug)]
pub struct JobOutcome {
    /// The job's id.
    pub job_id: u64,
    /// The output bytes, or why there are none.
    pub result: Result<Vec<u8>, JobError>,
    /// Wall time from start to locks released.
    pub duration: Duration,
    /// What the end-of-job release did.
    pub release: ReleaseOutcome,
    /// Lock wait and hold times.
    pub locks: LockStats,
}

/// How the guest call ended, before it is classified.
enum Ended {
    Returned(Result<Vec<u8>, String>),
    Trapped(wasmtime::Error),
    StartFailed(wasmtime::Error),
    TimedOut,
    Cancelled,
}

/// A job whose guest has ended, its locks' release still under way.
/// Dropped unfinished, the release still completes on a task of its own.
pub struct EndedJob {
    job_id: u64,
    result: Result<Vec<u8>, JobError>,
    started: Instant,
    db: Arc<JobSession>,
    release: PendingRelease,
}

impl EndedJob {
    /// What the guest answered.
    pub fn result(&self) -> &Result<Vec<u8>, JobError> {
        &self.result
    }

    /// Whether the job ended holding locks its guest never released (see
    /// [`PendingRelease::holds_locks`]): a lane finishes such a job before
    /// its next one, so that the next job never finds them taken.
    pub fn holds_locks(&self) -> bool {
        self.release.holds_locks()
    }

    /// Waits until the job's locks are released; the outcome is the job's
    /// report.
    pub async fn finish(self) -> JobOutcome {
        let EndedJob { job_id, result, started, db, release } = self;
        let release = release.finish().await;
        if let ReleaseOutcome::Closed { reason } = &release {
            tracing::debug!(job = job_id, %reason, "job session closed");
        }
        let locks = db.take_stats().await;
        JobOutcome { job_id, result, duration: started.elapsed(), release, locks }
    }
}

impl Runtime {
    /// Runs one job of `worker` with `input`. Always releases the job's
    /// locks before returning, whether the guest returned, failed, trapped,
    /// ran out of time or memory, or `cancel` fired. Safe to drop at any
    /// await point: the job's [`JobSession`] then cleans up on a task of
    /// its own.
    pub async fn run_job(
        &self,
        worker: &Worker,
        db: Arc<JobSession>,
        input: &[u8],
        cancel: &CancellationToken,
    ) -> JobOutcome {
        self.run_guest(worker, db, input, cancel).await.finish().await
    }

    /// Runs the guest of one job, as [`Self::run_job`] does, and returns
    /// once it has ended and its store is gone: the job's database use is
    /// over ([`JobSession::end`]), the release of its locks is left to
    /// [`EndedJob::finish`]. A lane that runs jobs one after another starts
    /// its next guest before finishing the last job, so that job's queued
    /// unlocks leave with the next job's first statement (one write instead
    /// of two) and the thread has the next guest to run while the server
    /// answers them (BENCHMARKS.md, "Issue 8, seventh pass").
    pub async fn run_guest(
        &self,
        worker: &Worker,
        db: Arc<JobSession>,
        input: &[u8],
        cancel: &CancellationToken,
    ) -> EndedJob {
        let started = Instant::now();
        let job_id = db.job_id();
        let JobLimits { time_limit: limit, memory_limit } = worker.limits;
        // No lock or session wait of the job outlives its time limit.
        db.set_deadline(tokio::time::Instant::now() + limit);
        if !worker.reads_fences() {
            db.set_fencing(Fencing::Off);
        }
        let command_input = matches!(worker.entry, Entry::Command(_)).then_some(input);
        let state = JobState::new(db.clone(), memory_limit, worker.buckets.clone(), command_input);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        // A running guest yields at the next epoch tick, and then every tick.
        // (A store's deadline starts at 0, already passed: without setting
        // it, every guest yielded at its first epoch check, and its lane
        // with it: one more scheduler turn per job, and the last job's
        // queued unlocks went out alone instead of with this job's first
        // statement.)
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);

        let ended = {
            let call = async {
                match &worker.entry {
                    Entry::Worker(pre) => {
                        let instance = match pre.instantiate_async(&mut store).await {
                            Ok(instance) => instance,
                            Err(e) => return Ended::StartFailed(e),
                        };
                        match instance.call_run(&mut store, input).await {
                            Ok(returned) => Ended::Returned(returned),
                            Err(trap) => Ended::Trapped(trap),
                        }
                    }
                    Entry::Command(pre) => {
                        let command = match pre.instantiate_async(&mut store).await {
                            Ok(command) => command,
                            Err(e) => return Ended::StartFailed(e),
                        };
                        let ran = command.wasi_cli_run().call_run(&mut store).await;
                        command_ended(ran, &store)
                    }
                }
            };
            // Cancel first: a job cancelled before it starts never runs its guest.
            tokio::select! {
                biased;
                () = cancel.cancelled() => Ended::Cancelled,
                ended = tokio::time::timeout(limit, call) => ended.unwrap_or(Ended::TimedOut),
            }
        };
        let result = match ended {
            Ended::Returned(Ok(output)) => Ok(output),
            Ended::Returned(Err(message)) => Err(JobError::Failed(message)),
            Ended::Trapped(_) if store.data().limits.memory_exceeded => Err(JobError::MemoryLimit(memory_limit)),
            Ended::Trapped(trap) => Err(JobError::Trap(describe_trap(&trap, &store))),
            Ended::StartFailed(e) => Err(JobError::Instantiate(format!("{e:#}"))),
            Ended::TimedOut => Err(JobError::TimeLimit(limit)),
            Ended::Cancelled => Err(JobError::Cancelled),
        };
        // The guest is gone (its drop hooks may never have run): release
        // everything it held before reporting.
        drop(store);
        let release = db.end().await;
        EndedJob { job_id, result, started, db, release }
    }
}

/// How a WASI command ended: its stdout is the output when it returned
/// `ok` or exited with status 0; any other status fails the job, with the
/// end of its stderr as the message.
fn command_ended(ran: wasmtime::Result<Result<(), ()>>, store: &Store<JobState>) -> Ended {
    let status = match ran {
        Ok(Ok(())) => 0,
        Ok(Err(())) => 1,
        Err(trap) => match trap.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) => exit.0,
            None => return Ended::Trapped(trap),
        },
    };
    if status == 0 {
        let output = store.data().stdout.as_ref().map(|stdout| stdout.contents().to_vec()).unwrap_or_default();
        return Ended::Returned(Ok(output));
    }
    let tail = stderr_tail(store);
    let message = if tail.is_empty() { String::new() } else { format!(": {tail}") };
    Ended::Returned(Err(format!("the command exited with status {status}{message}")))
}

/// The last two non-empty lines the guest wrote to stderr.
fn stderr_tail(store: &Store<JobState>) -> String {
    let stderr = store.data().stderr.contents();
    let stderr = String::from_utf8_lossy(&stderr);
    let lines: Vec<&str> =
        stderr.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("note: run with")).collect();
    lines[lines.len().saturating_sub(2)..].join(" ")
}

/// The trap and the end of what the guest wrote to stderr (a Rust panic
/// writes "thread … panicked at FILE:LINE:COL:" and the message there).
fn describe_trap(trap: &wasmtime::Error, store: &Store<JobState>) -> String {
    let tail = stderr_tail(store);
    let root = trap.root_cause().to_string();
    if tail.is_empty() { root } else { format!("{root}; guest stderr: {tail}") }
}
