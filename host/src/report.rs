//! Run summaries: jobs ok and failed, failures grouped by kind, lock wait and
//! hold percentiles, wall time and throughput.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::latency::{Hist, Latency};
use crate::runtime::JobOutcome;

/// Most distinct failure kinds a summary lists; the rest are counted together.
const MAX_FAILURE_KINDS: usize = 32;
/// Where failures beyond [`MAX_FAILURE_KINDS`] kinds are counted.
const OTHER_FAILURES: &str = "other failures";

/// The summary of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Jobs finished.
    pub jobs: u64,
    /// Jobs that returned output.
    pub ok: u64,
    /// Jobs that did not.
    pub failed: u64,
    /// Failed jobs by kind of failure.
    pub failures: BTreeMap<String, u64>,
    /// Lock waits (acquire call to grant).
    pub lock_wait: Latency,
    /// Lock holds (grant to release).
    pub lock_hold: Latency,
    /// Job durations.
    pub job: Latency,
    /// Wall time of the run, in seconds.
    pub wall_secs: f64,
    /// Jobs per second.
    pub jobs_per_sec: f64,
}

/// Builds a [`Summary`] from outcomes as they arrive.
#[derive(Default)]
pub struct SummaryBuilder {
    ok: u64,
    failed: u64,
    failures: BTreeMap<String, u64>,
    wait: Hist,
    hold: Hist,
    job: Hist,
}

impl SummaryBuilder {
    /// Counts one outcome.
    pub fn add(&mut self, outcome: &JobOutcome) {
        match &outcome.result {
            Ok(_) => self.ok += 1,
            Err(e) => {
                self.failed += 1;
                let kind = e.kind();
                let kind = if self.failures.len() < MAX_FAILURE_KINDS || self.failures.contains_key(&kind) {
                    kind
                } else {
                    OTHER_FAILURES.to_owned()
                };
                *self.failures.entry(kind).or_default() += 1;
            }
        }
        outcome.locks.waits.merge_into(&mut self.wait);
        outcome.locks.holds.merge_into(&mut self.hold);
        self.job.record(outcome.duration);
    }

    /// The summary, given the run's wall time.
    pub fn finish(self, wall: Duration) -> Summary {
        let jobs = self.ok + self.failed;
        let wall_secs = wall.as_secs_f64();
        Summary {
            jobs,
            ok: self.ok,
            failed: self.failed,
            failures: self.failures,
            lock_wait: self.wait.latency(),
            lock_hold: self.hold.latency(),
            job: self.job.latency(),
            wall_secs,
            jobs_per_sec: if wall_secs > 0.0 { jobs as f64 / wall_secs } else { 0.0 },
        }
    }
}

/// A duration in µs as a short human string.
pub fn human_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2} s", us / 1_000_000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "jobs: {} ok, {} failed, {:.2} s wall, {:.0} jobs/s",
            self.ok, self.failed, self.wall_secs, self.jobs_per_sec
        )?;
        for (kind, count) in &self.failures {
            writeln!(f, "  {count} × {kind}")?;
        }
        if self.lock_wait.count > 0 {
            writeln!(
                f,
                "lock wait: p50 {} p99 {}   hold: p50 {} p99 {}   ({} grants)",
                human_us(self.lock_wait.p50_us),
                human_us(self.lock_wait.p99_us),
                human_us(self.lock_hold.p50_us),
                human_us(self.lock_hold.p99_us),
                self.lock_wait.count
            )?;
        }
        write!(f, "job time: p50 {} p99 {}", human_us(self.job.p50_us), human_us(self.job.p99_us))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{LockStats, ReleaseOutcome};
    use crate::runtime::JobError;

    /// A guest that fails with a new message every time does not grow the
    /// summary: past [`MAX_FAILURE_KINDS`] kinds, failures are counted together.
    #[test]
    fn failure_kinds_in_a_summary_are_bounded() {
        let mut summary = SummaryBuilder::default();
        for i in 0..1000 {
            summary.add(&JobOutcome {
                job_id: i,
                result: Err(JobError::Failed(format!("error number {i} {}", "x".repeat(500)))),
                duration: Duration::from_millis(1),
                release: ReleaseOutcome::NoSession,
                locks: LockStats::default(),
            });
        }
        let summary = summary.finish(Duration::from_secs(1));
        assert_eq!(summary.failed, 1000);
        assert_eq!(summary.failures.len(), MAX_FAILURE_KINDS + 1);
        assert_eq!(summary.failures[OTHER_FAILURES], 1000 - MAX_FAILURE_KINDS as u64);
        assert!(summary.failures.keys().all(|k| k.len() <= 110), "messages are cut");
    }
}
