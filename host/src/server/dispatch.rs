//! The loops that move jobs between the queue and the scheduler: claim due
//! jobs while this host has free slots (woken by `NOTIFY`, a poll, or a slot
//! coming free), report finished runs in batches, renew the leases of
//! running jobs (and act on cancel requests), rescue expired leases and
//! prune old jobs. The runtime knows nothing of any of it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;

use super::Service;
use crate::jobs::JobSpec;
use crate::queue::{Claimed, Finished, Notice, Outcome};
use crate::runtime::{JobError, JobOutcome};

/// Most runs reported in one statement.
const FINISH_BATCH: usize = 64;
/// How often the janitor rescues expired leases (± 20 %).
const RESCUE_EVERY: Duration = Duration::from_secs(5);
/// How often it prunes finished jobs.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// What one claim found.
enum Claim {
    /// As many jobs as it asked for: more may be due.
    Full,
    /// Fewer: nothing more is due now.
    Short,
    /// No free slot (on the host, or of any worker): nothing was asked.
    NoRoom,
}

/// A run that ended, on its way to the queue.
pub(crate) struct Ended {
    pub(crate) id: i64,
    pub(crate) attempt: i32,
    pub(crate) worker: Arc<str>,
    pub(crate) outcome: JobOutcome,
}

impl Service {
    /// Starts claimed (or synchronous) job `id` in a slot this host holds.
    pub(crate) fn start_job(
        self: &Arc<Self>,
        slot: crate::jobs::Slot,
        worker_permit: OwnedSemaphorePermit,
        worker: &super::workers::ServedWorker,
        id: i64,
        attempt: i32,
        input: &serde_json::Value,
    ) {
        let spec = JobSpec {
            id,
            worker_name: worker.name.clone(),
            worker: worker.worker.clone(),
            input: serde_json::to_vec(input).unwrap_or_default(),
            max_locks: Some(worker.section.max_locks_per_job),
        };
        let (ended, name) = (self.ended.clone(), worker.name.clone());
        self.scheduler.start(slot, spec, move |outcome| {
            drop(worker_permit);
            let _ = ended.send(Ended { id, attempt, worker: name, outcome });
        });
    }

    /// Claims and starts due jobs until draining.
    pub(crate) async fn dispatch(self: Arc<Self>) {
        let poll = Duration::from_millis(self.config.queue.poll_ms.max(10));
        let lease = Duration::from_secs(self.config.queue.lease_secs);
        while !self.draining.load(Ordering::Acquire) {
            let claimed = match self.claim_once(lease).await {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming jobs failed; retrying");
                    tokio::time::sleep(poll).await;
                    continue;
                }
            };
            let nap = match claimed {
                Claim::Full => continue, // More may be due: claim again while slots are free.
                // Every slot is taken: the next job to end wakes this loop,
                // so when a queued job falls due does not matter yet (and
                // reading it walks the queued index, dead entries included).
                Claim::NoRoom => poll,
                Claim::Short => {
                    let next_due = self.queue.next_due(&self.workers.names()).await.ok().flatten();
                    next_due.map_or(poll, |due| due.min(poll)).max(Duration::from_millis(1))
                }
            };
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(nap) => {}
            }
        }
    }

    /// One claim for every worker with free slots.
    async fn claim_once(self: &Arc<Self>, lease: Duration) -> Result<Claim, crate::db::DbError> {
        let total = self.scheduler.free_slots();
        let mut permits = Vec::new();
        for worker in self.workers.iter() {
            let free = worker.slots.available_permits().min(total);
            if free > 0 {
                permits.push((worker.name.to_string(), free as i32));
            }
        }
        if total == 0 || permits.is_empty() {
            return Ok(Claim::NoRoom);
        }
        let asked = permits.iter().map(|(_, n)| *n).sum::<i32>().min(total as i32);
        let claimed = self.queue.claim(&permits, asked, lease).await?;
        let got = claimed.len() as i32;
        for job in claimed {
            self.start_claimed(job);
        }
        Ok(if got > 0 && got >= asked { Claim::Full } else { Claim::Short })
    }

    fn start_claimed(self: &Arc<Self>, job: Claimed) {
        // Rescued from under this host while still running here, then claimed
        // back: the run in progress goes on (its lost lease cancels it).
        let worker = self.workers.get(&job.worker).filter(|_| !self.scheduler.is_running(job.id));
        let slots = worker.map(|w| (w.slots.clone().try_acquire_owned(), self.scheduler.try_slot()));
        match (worker, slots) {
            (Some(worker), Some((Ok(permit), Some(slot)))) => {
                self.start_job(slot, permit, worker, job.id, job.attempt, &job.input)
            }
            // Claimed more than there is room for (another path took a
            // slot meanwhile): give it back at once, not counted as an attempt.
            _ => {
                let _ = self.ended_release.send(Finished {
                    id: job.id,
                    attempt: job.attempt,
                    outcome: Outcome::Released,
                    output: None,
                    error: None,
                });
            }
        }
    }

    /// Reports ended runs to the queue in batches; wakes synchronous callers
    /// and the dispatcher.
    pub(crate) async fn complete(
        self: Arc<Self>,
        mut ended: mpsc::UnboundedReceiver<Ended>,
        mut released: mpsc::UnboundedReceiver<Finished>,
        stop: CancellationToken,
    ) {
        loop {
            let mut batch = Vec::new();
            let mut runs = Vec::new();
            tokio::select! {
                biased;
                Some(run) = ended.recv() => runs.push(run),
                Some(finished) = released.recv() => batch.push(finished),
                // Stopping, and nothing is left to report.
                () = stop.cancelled() => return,
            }
            while runs.len() + batch.len() < FINISH_BATCH {
                match ended.try_recv() {
                    Ok(run) => runs.push(run),
                    Err(_) => break,
                }
            }
            while let Ok(finished) = released.try_recv() {
                batch.push(finished);
            }
            let draining = self.draining.load(Ordering::Acquire);
            for run in &runs {
                let (outcome, output, error) = classify(&run.outcome, draining);
                self.metrics.job_finished(&run.worker, outcome.as_str(), &run.outcome);
                self.dashboard.job_finished(run.id, outcome.as_str(), &run.outcome.locks);
                batch.push(Finished { id: run.id, attempt: run.attempt, outcome, output, error });
            }
            self.finish_with_retry(&batch).await;
            for run in runs {
                if let Some(waiter) = self.waiters.lock().ok().and_then(|mut w| w.remove(&run.id)) {
                    let _ = waiter.send(run.outcome);
                }
            }
            self.wake.notify_one();
        }
    }

    /// Writes a batch of finishes, retrying while the database is away (up
    /// to a lease: after that the jobs are another host's to rescue anyway).
    async fn finish_with_retry(&self, batch: &[Finished]) {
        let give_up = Instant::now() + Duration::from_secs(self.config.queue.lease_secs);
        loop {
            match self.queue.finish(batch).await {
                Ok(_) => return,
                Err(e) if Instant::now() < give_up => {
                    tracing::warn!(error = %e, jobs = batch.len(), "reporting finished jobs failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, jobs = batch.len(), "could not report finished jobs; their leases will expire");
                    return;
                }
            }
        }
    }

    /// Renews the leases of this host's running jobs every third of a lease;
    /// cancels jobs whose cancel was requested or whose lease was lost, and
    /// every job if renewals keep failing (before another host could rescue
    /// them: fail closed, as lock sessions do).
    pub(crate) async fn keep_leases(self: Arc<Self>) {
        let lease = Duration::from_secs(self.config.queue.lease_secs);
        let every = lease / 3;
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(every).await;
            let running: Vec<i64> = self.scheduler.running().iter().map(|j| j.id).collect();
            if running.is_empty() {
                last_renewed = Instant::now();
                continue;
            }
            let sent = Instant::now();
            // A renewal that hangs (a row lock, a dead socket) counts as failed.
            let renewing = tokio::time::timeout(every, self.queue.renew(&running, lease)).await;
            let renewing =
                renewing.unwrap_or_else(|_| Err(crate::db::DbError::Config("lease renewal timed out".into())));
            match renewing {
                Ok(renewed) => {
                    last_renewed = sent;
                    let kept: HashSet<i64> = renewed.iter().map(|(id, _)| *id).collect();
                    for (id, cancel) in renewed {
                        if cancel {
                            self.scheduler.cancel(id);
                        }
                    }
                    for id in running.iter().filter(|id| !kept.contains(id)) {
                        tracing::warn!(job = id, "lease lost; cancelling the job here");
                        self.scheduler.cancel(*id);
                    }
                }
                Err(e) if last_renewed.elapsed() + every >= lease => {
                    tracing::error!(error = %e, "leases could not be renewed; cancelling every running job");
                    self.scheduler.cancel_all_running();
                }
                Err(e) => tracing::warn!(error = %e, "renewing leases failed; retrying"),
            }
        }
    }

    /// Rescues expired leases and prunes finished jobs, forever.
    pub(crate) async fn janitor(self: Arc<Self>) {
        let retention = Duration::from_secs(self.config.queue.retention_hours * 3600);
        let mut last_prune: Option<Instant> = None;
        loop {
            let jitter = rand::rng().random_range(0.8..1.2);
            tokio::time::sleep(RESCUE_EVERY.mul_f64(jitter)).await;
            match self.queue.rescue().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(jobs = n, "rescued jobs whose host stopped renewing"),
                Err(e) => tracing::warn!(error = %e, "rescuing jobs failed"),
            }
            if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(Instant::now());
                if let Err(e) = self.queue.prune(retention).await {
                    tracing::warn!(error = %e, "pruning finished jobs failed");
                }
            }
        }
    }

    /// Acts on queue notices: wakes the dispatcher, cancels this host's jobs.
    pub(crate) async fn on_notices(self: Arc<Self>, mut notices: mpsc::UnboundedReceiver<Notice>) {
        while let Some(notice) = notices.recv().await {
            match notice {
                Notice::Queued(_) | Notice::Reconnected => self.wake.notify_one(),
                Notice::Cancel { host, id } if host == self.queue.host() => {
                    self.scheduler.cancel(id);
                }
                Notice::Cancel { .. } => {}
            }
        }
    }
}

/// How a run ends up in the queue: outcome, output, error.
fn classify(outcome: &JobOutcome, draining: bool) -> (Outcome, Option<Vec<u8>>, Option<String>) {
    match &outcome.result {
        Ok(output) => (Outcome::Succeeded, Some(output.clone()), None),
        // Stopped by this host (drain, lost lease, renewals failing) or on
        // request: given back either way. The queue records it `cancelled`
        // only when a cancel was requested (`pinlock.cancel` flags the row),
        // so a cancel this host made for its own reasons never ends a job.
        Err(JobError::Cancelled) => {
            let why = if draining { "the host drained" } else { "stopped by its host" };
            (Outcome::Released, None, Some(why.into()))
        }
        Err(e) => (Outcome::Error, None, Some(e.to_string())),
    }
}
