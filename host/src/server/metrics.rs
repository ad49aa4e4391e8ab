//! Prometheus metrics at `/metrics` (OpenMetrics text), named as
//! Prometheus asks (base units, `_total` counters): what jobs did (recorded as
//! they finish, with their lock wait and hold times) and, read at scrape
//! time, the lock engine's counters, sessions and the queue's depth.

use std::fmt::Write;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::config::valid_worker_name;
use crate::db::DbStats;
use crate::queue::Depth;
use crate::runtime::JobOutcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    worker: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
}

/// The metrics a server records.
pub struct Metrics {
    registry: Registry,
    jobs: Family<JobLabels, Counter>,
    job_duration: Family<WorkerLabels, Histogram>,
    lock_wait: Histogram,
    lock_hold: Histogram,
    /// Serializes encoding (the registry is read-only after setup).
    encoding: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let jobs = Family::<JobLabels, Counter>::default();
        registry.register("pinlock_jobs", "Jobs finished on this host, by worker and result", jobs.clone());
        let job_duration = Family::<WorkerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_1, 4.0, 12))
        });
        registry.register(
            "pinlock_job_duration_seconds",
            "Wall time of jobs from start to locks released",
            job_duration.clone(),
        );
        let lock_wait = Histogram::new(exponential_buckets(0.000_01, 4.0, 14));
        registry.register("pinlock_lock_wait_seconds", "From an acquire call to its grant", lock_wait.clone());
        let lock_hold = Histogram::new(exponential_buckets(0.000_01, 4.0, 14));
        registry.register("pinlock_lock_hold_seconds", "From a grant to its release", lock_hold.clone());
        Self { registry, jobs, job_duration, lock_wait, lock_hold, encoding: Mutex::new(()) }
    }
}

impl Metrics {
    /// Records a finished job.
    pub fn job_finished(&self, worker: &str, result: &str, outcome: &JobOutcome) {
        self.jobs.get_or_create(&JobLabels { worker: worker.into(), result: result.into() }).inc();
        self.job_duration
            .get_or_create(&WorkerLabels { worker: worker.into() })
            .observe(outcome.duration.as_secs_f64());
        for (ns, count) in outcome.locks.waits.buckets() {
            (0..count).for_each(|_| self.lock_wait.observe(ns as f64 / 1e9));
        }
        for (ns, count) in outcome.locks.holds.buckets() {
            (0..count).for_each(|_| self.lock_hold.observe(ns as f64 / 1e9));
        }
    }

    /// The OpenMetrics text of everything, with the scrape-time values.
    pub fn encode(&self, db: &DbStats, depth: Option<&[Depth]>, running: usize, draining: bool) -> String {
        let mut text = String::new();
        {
            let _guard = self.encoding.lock();
            let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        }
        // The registry ends with `# EOF`; the scrape-time families go before it.
        if let Some(end) = text.rfind("# EOF") {
            text.truncate(end);
        }
        let family = |text: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(&mut text, "pinlock_lock_acquires", "counter", "Acquires and try-acquires by result.");
        for (result, count) in &db.acquires {
            let _ = writeln!(text, "pinlock_lock_acquires_total{{result=\"{}\"}} {count}", result.label());
        }
        family(&mut text, "pinlock_locks_held", "gauge", "Locks held by this host's jobs now.");
        let _ = writeln!(text, "pinlock_locks_held {}", db.locks_held);
        family(&mut text, "pinlock_db_sessions", "gauge", "PostgreSQL sessions of this host by state.");
        let _ = writeln!(text, "pinlock_db_sessions{{state=\"busy\"}} {}", db.sessions_busy);
        let _ = writeln!(text, "pinlock_db_sessions{{state=\"idle\"}} {}", db.sessions_idle);
        let _ = writeln!(text, "pinlock_db_sessions_shared {}", db.sessions_shared);
        family(&mut text, "pinlock_jobs_running", "gauge", "Jobs running on this host now.");
        let _ = writeln!(text, "pinlock_jobs_running {running}");
        family(&mut text, "pinlock_draining", "gauge", "1 while this host drains.");
        let _ = writeln!(text, "pinlock_draining {}", u8::from(draining));
        if let Some(depth) = depth {
            family(&mut text, "pinlock_queue_depth", "gauge", "Due jobs waiting in the queue, by worker.");
            // Names come from the database: only well-formed ones are labels.
            let depth: Vec<&Depth> = depth.iter().filter(|d| valid_worker_name(&d.worker)).collect();
            for d in &depth {
                let _ = writeln!(text, "pinlock_queue_depth{{worker=\"{}\"}} {}", d.worker, d.queued);
            }
            family(
                &mut text,
                "pinlock_queue_oldest_age_seconds",
                "gauge",
                "Age of the oldest due job waiting, by worker.",
            );
            for d in &depth {
                let _ =
                    writeln!(text, "pinlock_queue_oldest_age_seconds{{worker=\"{}\"}} {}", d.worker, d.oldest_age_secs);
            }
        }
        text.push_str("# EOF\n");
        text
    }
}
