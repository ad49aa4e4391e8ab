//! The job scheduler `pinlock run` and `pinlock serve` share: a bounded
//! number of slots, a registry of the jobs running now (id → worker, start
//! time, lock engine job, cancel token), and each job either on a tokio task
//! of its own ([`Scheduler::start`]: whoever waits for it, an HTTP request,
//! may go away without skipping its clean-up) or in a batch lane's task
//! ([`Scheduler::run`], which hands the slot back when the guest ends, so
//! the lane's next guest runs while the last job's release finishes). Any
//! running job can be cancelled by its id; a cancelled job still releases
//! its locks before it reports.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::db::Database;
use crate::runtime::{EndedJob, JobOutcome, Runtime, Worker};

/// Identifies a job to the scheduler: the queue's id in `serve`, the job's
/// number in `run`.
pub type JobId = i64;

/// One job to start.
pub struct JobSpec {
    /// Its id (unique among the jobs running at once).
    pub id: JobId,
    /// The worker's name (for the registry and logs).
    pub worker_name: Arc<str>,
    /// The worker that runs it.
    pub worker: Arc<Worker>,
    /// Its input bytes.
    pub input: Vec<u8>,
    /// Most locks it may hold (the host's limit when `None`).
    pub max_locks: Option<usize>,
}

/// A job running now, as the registry shows it.
#[derive(Debug, Clone)]
pub struct RunningJob {
    /// Its id.
    pub id: JobId,
    /// Its worker's name.
    pub worker: Arc<str>,
    /// When it started (wall clock).
    pub started_at: SystemTime,
    /// Its id in the lock engine ([`crate::db::JobSession::job_id`]), which
    /// [`Database::lock_activity`] reports.
    pub lock_job: u64,
}

struct Entry {
    worker: Arc<str>,
    started_at: SystemTime,
    lock_job: u64,
    cancel: CancellationToken,
    /// Tells this run from another of the same id.
    run: u64,
}

/// Numbers runs, so that a run only ever removes its own registry entry.
static NEXT_RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The right to run one job; a job started with [`Scheduler::start`] holds
/// it (it is only ever dropped) until it has reported, one run with
/// [`Scheduler::run`] until its guest has ended.
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

/// A job's place in the registry: dropped, it removes the entry (its own
/// run's only, should the id have been started again meanwhile).
struct Registered {
    running: Arc<Mutex<HashMap<JobId, Entry>>>,
    id: JobId,
    run: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut running) = self.running.lock()
            && running.get(&self.id).is_some_and(|entry| entry.run == self.run)
        {
            running.remove(&self.id);
        }
    }
}

/// Bounded slots and the jobs in them.
pub struct Scheduler {
    runtime: Arc<Runtime>,
    db: Arc<Database>,
    slots: Arc<Semaphore>,
    capacity: usize,
    running: Arc<Mutex<HashMap<JobId, Entry>>>,
    /// Parent of every job's cancel token: cancelling it stops them all.
    all: CancellationToken,
}

impl Scheduler {
    /// A scheduler running at most `capacity` jobs at once.
    pub fn new(runtime: Arc<Runtime>, db: Arc<Database>, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            runtime,
            db,
            slots: Arc::new(Semaphore::new(capacity)),
            capacity,
            running: Arc::new(Mutex::new(HashMap::new())),
            all: CancellationToken::new(),
        }
    }

    /// Waits for a free slot.
    pub async fn slot(&self) -> Slot {
        // The semaphore is never closed.
        Slot(self.slots.clone().acquire_owned().await.expect("the scheduler's semaphore is never closed"))
    }

    /// A free slot now, if there is one.
    pub fn try_slot(&self) -> Option<Slot> {
        self.slots.clone().try_acquire_owned().ok().map(Slot)
    }

    /// Free slots now.
    pub fn free_slots(&self) -> usize {
        self.slots.available_permits()
    }

    /// How many jobs may run at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Starts `spec` in `slot` on a task of its own; `report` gets the
    /// outcome once the job's locks are released. The job is in the
    /// registry (and cancellable) from now until just before `report`.
    pub fn start(&self, slot: Slot, spec: JobSpec, report: impl FnOnce(JobOutcome) + Send + 'static) {
        let job = self.job(spec);
        crate::shard::spawn(async move {
            let (ended, registered) = job.await;
            let outcome = ended.finish().await;
            // Out of the registry only now: `serve` renews the leases of the
            // jobs there, and a job's lease must outlast its release.
            drop(registered);
            // Reported before the slot is free: once every slot is free (see
            // `idle`), every outcome has been handed over.
            report(outcome);
            drop(slot);
        });
    }

    /// Runs the guest of `spec` in `slot` in the caller's task, for a caller
    /// that runs jobs one after another (a batch's lanes): no task per job.
    /// The job is in the registry (and cancellable) until its guest has
    /// ended; then the slot is free, and the caller finishes the job
    /// ([`EndedJob::finish`], its report) while it runs the next one (see
    /// [`Runtime::run_guest`]). Dropped midway, it still releases its locks.
    pub async fn run(&self, slot: Slot, spec: JobSpec) -> EndedJob {
        let (ended, registered) = self.job(spec).await;
        drop((registered, slot));
        ended
    }

    /// The job's guest as a future that owns all it needs, registered now;
    /// it stays in the registry until the returned [`Registered`] is dropped.
    fn job(&self, spec: JobSpec) -> impl Future<Output = (EndedJob, Registered)> + Send + 'static {
        let cancel = self.all.child_token();
        let run = NEXT_RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let job = self.db.job_session();
        if let Some(max) = spec.max_locks {
            job.set_max_locks(max);
        }
        let entry = Entry {
            worker: spec.worker_name.clone(),
            started_at: SystemTime::now(),
            lock_job: job.job_id(),
            cancel: cancel.clone(),
            run,
        };
        if let Ok(mut running) = self.running.lock() {
            running.insert(spec.id, entry);
        }
        let runtime = self.runtime.clone();
        let registered = Registered { running: self.running.clone(), id: spec.id, run };
        // Every log line of the job (the guest's included) carries its id and worker.
        let span = tracing::info_span!("job", id = spec.id, worker = %spec.worker_name);
        let job = async move {
            let started = Instant::now();
            let ended = runtime.run_guest(&spec.worker, job, &spec.input, &cancel).await;
            tracing::debug!(took = ?started.elapsed(), result = ?ended.result().as_ref().map(|_| ()), "job ended");
            (ended, registered)
        };
        tracing::Instrument::instrument(job, span)
    }

    /// Whether a job `id` is running here now.
    pub fn is_running(&self, id: JobId) -> bool {
        self.running.lock().is_ok_and(|running| running.contains_key(&id))
    }

    /// Cancels the running job `id`. Returns whether it was running.
    pub fn cancel(&self, id: JobId) -> bool {
        let running = self.running.lock().ok();
        match running.as_ref().and_then(|r| r.get(&id)) {
            Some(entry) => {
                entry.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Cancels every running job (and every job started afterwards).
    pub fn cancel_all(&self) {
        self.all.cancel();
    }

    /// Cancels the jobs running now; later jobs run normally.
    pub fn cancel_all_running(&self) {
        if let Ok(running) = self.running.lock() {
            running.values().for_each(|entry| entry.cancel.cancel());
        }
    }

    /// The jobs running now.
    pub fn running(&self) -> Vec<RunningJob> {
        let Ok(running) = self.running.lock() else {
            return Vec::new();
        };
        running
            .iter()
            .map(|(&id, e)| RunningJob { id, worker: e.worker.clone(), started_at: e.started_at, lock_job: e.lock_job })
            .collect()
    }

    /// How many jobs are running now.
    pub fn in_flight(&self) -> usize {
        self.capacity - self.slots.available_permits()
    }

    /// Waits until no job is running: every job [`Self::start`]ed has
    /// reported, every guest [`Self::run`] has ended.
    pub async fn idle(&self) {
        let all = u32::try_from(self.capacity).unwrap_or(u32::MAX);
        // Taking every slot means every such job is done; give them back at once.
        let _all = self.slots.acquire_many(all).await;
    }
}
