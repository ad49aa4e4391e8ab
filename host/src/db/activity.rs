//! What this host's jobs hold and wait for right now, read from memory
//! without touching the database or a job's own lock: the dashboard's
//! "locks now" is built from it (each serving host publishes it, see
//! `server::dashboard`).
//!
//! `pg_locks` cannot tell this: it knows backend pids, not jobs, and one
//! session may carry the locks of many jobs. So every [`JobSession`] keeps a
//! small mirror of its grants and of the wait in progress (a
//! [`JobActivity`]), updated where its held set changes, and the host keeps a
//! registry of the mirrors of its live jobs. A mirror leaves the registry
//! when its job's handle is dropped.
//!
//! [`JobSession`]: super::JobSession

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use uuid::Uuid;

use super::locks::{GrantId, Held, LockMode};

/// Whether a job holds an entity or waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActivityState {
    /// Granted and not released.
    Held,
    /// Waiting in `pg_advisory_lock*` for the grant.
    Waiting,
}

/// One entity a job of this host holds or waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockActivity {
    /// The job's id in the lock engine ([`super::JobSession::job_id`]).
    pub job: u64,
    /// The entity.
    pub entity: Uuid,
    /// Its advisory key.
    pub key: i64,
    /// How it is held or asked for.
    pub mode: LockMode,
    /// Held or waiting.
    pub state: ActivityState,
    /// Since when: the grant, or the start of the wait (several grants of the
    /// same entity and mode by one job show once, with the first grant).
    pub since: Instant,
}

type Jobs = Mutex<HashMap<u64, Weak<JobActivity>>>;

/// The mirrors of a host's live jobs.
#[derive(Default)]
pub(crate) struct Registry {
    jobs: Arc<Jobs>,
}

impl Registry {
    /// A new, registered mirror for job `job`.
    pub(crate) fn register(&self, job: u64) -> Arc<JobActivity> {
        let activity = Arc::new(JobActivity { job, registry: Arc::downgrade(&self.jobs), now: Mutex::default() });
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.insert(job, Arc::downgrade(&activity));
        }
        activity
    }

    /// Everything the registered jobs hold or wait for now.
    pub(crate) fn snapshot(&self) -> Vec<LockActivity> {
        let live: Vec<Arc<JobActivity>> = match self.jobs.lock() {
            Ok(jobs) => jobs.values().filter_map(Weak::upgrade).collect(),
            Err(_) => return Vec::new(),
        };
        live.iter().flat_map(|job| job.snapshot()).collect()
    }
}

/// One job's mirror: its grants and the wait in progress.
#[derive(Default)]
pub(crate) struct JobActivity {
    job: u64,
    registry: Weak<Jobs>,
    now: Mutex<Now>,
}

#[derive(Default)]
struct Now {
    held: HashMap<GrantId, Mark>,
    waiting: Option<Mark>,
}

#[derive(Clone, Copy)]
struct Mark {
    entity: Uuid,
    key: i64,
    mode: LockMode,
    since: Instant,
}

impl JobActivity {
    fn update(&self, change: impl FnOnce(&mut Now)) {
        if let Ok(mut now) = self.now.lock() {
            change(&mut now);
        }
    }

    /// Grant `id` is held.
    pub(crate) fn held(&self, id: GrantId, held: &Held) {
        let mark = Mark { entity: held.entity, key: held.key, mode: held.mode, since: held.granted_at };
        self.update(|now| {
            now.held.insert(id, mark);
        });
    }

    /// Grant `id` is released (or lost).
    pub(crate) fn released(&self, id: GrantId) {
        self.update(|now| {
            now.held.remove(&id);
        });
    }

    /// Nothing is held any more (the job ended or its session went).
    pub(crate) fn cleared(&self) {
        self.update(|now| now.held.clear());
    }

    /// The job waits for `entity` until the returned mark is dropped.
    pub(crate) fn waiting(self: &Arc<Self>, entity: Uuid, key: i64, mode: LockMode) -> WaitMark {
        let mark = Mark { entity, key, mode, since: Instant::now() };
        self.update(|now| now.waiting = Some(mark));
        WaitMark(self.clone())
    }

    fn snapshot(&self) -> Vec<LockActivity> {
        let Ok(now) = self.now.lock() else {
            return Vec::new();
        };
        // One row per (entity, mode): stacked grants of a pair show once.
        let mut held: HashMap<(Uuid, LockMode), Mark> = HashMap::new();
        for mark in now.held.values() {
            match held.entry((mark.entity, mark.mode)) {
                Entry::Occupied(mut first) if first.get().since > mark.since => {
                    first.insert(*mark);
                }
                Entry::Occupied(_) => {}
                Entry::Vacant(slot) => {
                    slot.insert(*mark);
                }
            }
        }
        let row = |mark: &Mark, state| LockActivity {
            job: self.job,
            entity: mark.entity,
            key: mark.key,
            mode: mark.mode,
            state,
            since: mark.since,
        };
        let mut rows: Vec<LockActivity> = held.values().map(|m| row(m, ActivityState::Held)).collect();
        rows.extend(now.waiting.iter().map(|m| row(m, ActivityState::Waiting)));
        rows
    }
}

impl Drop for JobActivity {
    fn drop(&mut self) {
        if let Some(jobs) = self.registry.upgrade()
            && let Ok(mut jobs) = jobs.lock()
        {
            jobs.remove(&self.job);
        }
    }
}

/// A wait in progress; dropping it (the grant came, the wait failed, or the
/// job's future was dropped) ends the wait in the mirror.
pub(crate) struct WaitMark(Arc<JobActivity>);

impl Drop for WaitMark {
    fn drop(&mut self) {
        self.0.update(|now| now.waiting = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(entity: Uuid, key: i64, mode: LockMode) -> Held {
        Held { entity, key, mode, granted_at: Instant::now() }
    }

    #[test]
    fn holds_and_waits_show_until_released_and_a_job_leaves_when_dropped() {
        let registry = Registry::default();
        let job = registry.register(7);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        job.held(GrantId(1), &held(a, 1, LockMode::Exclusive));
        // The same pair granted again: one row, with the first grant's time.
        job.held(GrantId(2), &held(a, 1, LockMode::Exclusive));
        let wait = job.waiting(b, 2, LockMode::Shared);
        let mut rows = registry.snapshot();
        rows.sort_by_key(|r| r.key);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!((rows[0].job, rows[0].entity, rows[0].state), (7, a, ActivityState::Held));
        assert_eq!((rows[1].entity, rows[1].mode, rows[1].state), (b, LockMode::Shared, ActivityState::Waiting));
        assert!(rows[1].since >= rows[0].since);

        drop(wait);
        job.released(GrantId(1));
        assert_eq!(registry.snapshot().len(), 1, "grant 2 still holds the entity");
        job.cleared();
        assert!(registry.snapshot().is_empty());

        job.held(GrantId(3), &held(b, 2, LockMode::Exclusive));
        assert_eq!(registry.snapshot().len(), 1);
        drop(job);
        assert!(registry.snapshot().is_empty());
        assert!(registry.jobs.lock().expect("registry").is_empty(), "a dropped job leaves the registry");
    }
}
