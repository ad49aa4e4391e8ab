//! What this host remembers for the dashboard, in memory only: a ring of
//! samples (one per `dashboard.sample_secs`, an hour of them) of lock wait
//! and hold percentiles, acquires by result, jobs by result, queue depth and
//! load; and the lock wait and hold times of the last jobs it ran, for their
//! detail pages. A restart forgets both.
//!
//! Waits and holds are counted when their job ends (that is when a job's
//! times are handed over), so a long job's waits land in the sample of its
//! end.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::db::{AcquireResult, DbStats, LockStats};
use crate::latency::CompactHist;

/// How many finished jobs' lock times are kept.
const RECENT_JOBS: usize = 2000;

/// Percentiles of one set of lock times, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Spread {
    /// How many.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest (the middle of its bucket, within ±6 %).
    pub max: f64,
}

impl Spread {
    fn of(hist: &CompactHist) -> Self {
        let ms = |q| hist.quantile(q).map_or(0.0, |d: Duration| d.as_secs_f64() * 1000.0);
        Self { count: hist.count(), p50: ms(0.5), p90: ms(0.9), p99: ms(0.99), max: ms(1.0) }
    }
}

/// One sample: what happened on this host since the previous one, and the
/// gauges at its time.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// When it was taken (Unix seconds).
    pub t: u64,
    /// Lock waits of the jobs that ended in the interval.
    pub wait_ms: Spread,
    /// Lock holds of the jobs that ended in the interval.
    pub hold_ms: Spread,
    /// Acquires and try-acquires in the interval, by result (zeros left out).
    pub acquires: BTreeMap<&'static str, u64>,
    /// Jobs that ended in the interval, by result.
    pub jobs: BTreeMap<String, u64>,
    /// Due jobs waiting in the shared queue (every worker); `None` when the
    /// database did not answer.
    pub queue_depth: Option<i64>,
    /// Jobs running on this host.
    pub running: usize,
    /// Locks this host's jobs hold.
    pub locks_held: i64,
}

/// A finished job's lock times, as this host recorded them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct JobLockTimes {
    /// From each acquire call to its grant.
    pub wait_ms: Spread,
    /// From each grant to its release (or the job's end).
    pub hold_ms: Spread,
}

/// The ring and the recent jobs.
pub(crate) struct History {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    samples: VecDeque<Sample>,
    /// What the current interval has seen so far.
    waits: CompactHist,
    holds: CompactHist,
    jobs: BTreeMap<String, u64>,
    /// The acquire counters at the previous sample.
    acquires_before: Option<Vec<(AcquireResult, u64)>>,
    recent: VecDeque<(i64, JobLockTimes)>,
}

impl History {
    /// Keeps an hour of samples taken every `every`.
    pub(crate) fn new(every: Duration) -> Self {
        let capacity = (3600 / every.as_secs().max(1)) as usize;
        Self { capacity, inner: Mutex::default() }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> Option<T> {
        self.inner.lock().ok().map(|mut inner| f(&mut inner))
    }

    /// Records a job that ended with `result` and its lock times.
    pub(crate) fn job_finished(&self, id: i64, result: &str, locks: &LockStats) {
        let times = JobLockTimes { wait_ms: Spread::of(&locks.waits), hold_ms: Spread::of(&locks.holds) };
        self.with(|inner| {
            inner.waits.merge(&locks.waits);
            inner.holds.merge(&locks.holds);
            *inner.jobs.entry(result.to_owned()).or_default() += 1;
            if inner.recent.len() >= RECENT_JOBS {
                inner.recent.pop_front();
            }
            inner.recent.push_back((id, times));
        });
    }

    /// Closes the current interval into a sample taken at `at`.
    pub(crate) fn sample(&self, at: SystemTime, db: &DbStats, queue_depth: Option<i64>, running: usize) {
        self.with(|inner| {
            let before = inner.acquires_before.replace(db.acquires.clone());
            let acquires = db
                .acquires
                .iter()
                .map(|(result, now)| {
                    let then = before.iter().flatten().find(|(r, _)| r == result).map_or(0, |(_, n)| *n);
                    (result.label(), now.saturating_sub(then))
                })
                .filter(|(_, n)| *n > 0)
                .collect();
            let sample = Sample {
                t: at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
                wait_ms: Spread::of(&std::mem::take(&mut inner.waits)),
                hold_ms: Spread::of(&std::mem::take(&mut inner.holds)),
                acquires,
                jobs: std::mem::take(&mut inner.jobs),
                queue_depth,
                running,
                locks_held: db.locks_held,
            };
            if inner.samples.len() >= self.capacity {
                inner.samples.pop_front();
            }
            inner.samples.push_back(sample);
        });
    }

    /// The samples, oldest first.
    pub(crate) fn samples(&self) -> Vec<Sample> {
        self.with(|inner| inner.samples.iter().cloned().collect()).unwrap_or_default()
    }

    /// Job `id`'s lock times, if this host ran it recently.
    pub(crate) fn job_locks(&self, id: i64) -> Option<JobLockTimes> {
        self.with(|inner| inner.recent.iter().rev().find(|(job, _)| *job == id).map(|(_, t)| *t)).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(granted: u64, timeout: u64) -> DbStats {
        DbStats {
            acquires: vec![(AcquireResult::Granted, granted), (AcquireResult::Timeout, timeout)],
            locks_held: 1,
            sessions_busy: 0,
            sessions_idle: 0,
            sessions_shared: 0,
            sessions_opened: 0,
            jobs_abandoned: 0,
            late_grants_undone: 0,
        }
    }

    #[test]
    fn samples_hold_the_interval_and_the_ring_keeps_an_hour() {
        let history = History::new(Duration::from_secs(600));
        let mut locks = LockStats::default();
        locks.waits.record(Duration::from_millis(20));
        locks.holds.record(Duration::from_millis(300));
        history.job_finished(41, "succeeded", &locks);
        history.job_finished(42, "error", &LockStats::default());
        let at = UNIX_EPOCH + Duration::from_secs(1_000);
        history.sample(at, &stats(5, 1), Some(3), 2);
        history.sample(at, &stats(7, 1), None, 0);

        let samples = history.samples();
        assert_eq!(samples.len(), 2);
        let first = &samples[0];
        assert_eq!(first.t, 1_000);
        assert_eq!(first.acquires.get("granted"), Some(&5));
        assert_eq!(first.jobs.get("succeeded"), Some(&1));
        assert_eq!(first.jobs.get("error"), Some(&1));
        assert_eq!((first.wait_ms.count, first.hold_ms.count), (1, 1));
        assert!((first.hold_ms.p50 - 300.0).abs() < 20.0, "{:?}", first.hold_ms);
        assert_eq!(first.queue_depth, Some(3));
        // The next interval counts only what happened since.
        let second = &samples[1];
        assert_eq!(second.acquires.get("granted"), Some(&2));
        assert_eq!(second.acquires.get("timeout"), None, "no new timeouts");
        assert!(second.jobs.is_empty() && second.wait_ms.count == 0);

        assert!(history.job_locks(41).is_some_and(|t| t.wait_ms.count == 1));
        assert_eq!(history.job_locks(43), None);
        for _ in 0..10 {
            history.sample(at, &stats(7, 1), None, 0);
        }
        assert_eq!(history.samples().len(), 6, "an hour of 10-minute samples");
    }
}
