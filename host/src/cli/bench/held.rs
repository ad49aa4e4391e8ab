//! Scenario 5, many held locks: J jobs started at once, each acquiring K
//! entities, timing one more acquire + release (the probe) while holding
//! them, holding them a while, releasing. A monitor connection samples what
//! the server sees of this host (sessions in `pg_stat_activity`, granted
//! advisory locks in `pg_locks`) and this process's RSS meanwhile.
//!
//! Jobs' locks share the host's shared sessions (`--shared-sessions`), so all
//! J jobs hold their locks at once; with `--shared-sessions 0` each job pins
//! a session of its own and past `--max-sessions` they hold theirs in waves.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tokio::sync::Notify;
use tokio_postgres::Client;

use super::floor::FloorConn;
use super::harness::{Host, fresh_entities, parse_output};
use super::machine::rss_kib;
use super::plan::Plan;
use super::stats::{Hist, Latency};

/// How often the monitor samples.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);

/// Sessions and granted advisory locks of one `application_name`.
/// (Not the monitor's own session, whatever its name was truncated to.)
const SAMPLE_SQL: &str = "SELECT (SELECT count(*) FROM pg_stat_activity
              WHERE application_name = $1 AND pid <> pg_backend_pid()),
            (SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = $1
                AND l.pid <> pg_backend_pid())";

/// One J × K run.
#[derive(Debug, Serialize)]
pub struct HeldPoint {
    /// Jobs started at once.
    pub jobs: usize,
    /// Locks each job holds.
    pub locks_per_job: usize,
    /// The session bound in force.
    pub max_sessions: usize,
    /// How long each job holds, in ms.
    pub hold_ms: u64,
    /// Wall time of all jobs, in s (all at once would take about hold_ms).
    pub wall_secs: f64,
    /// Sessions the pool opened (warm-up included): never more than its bound.
    pub sessions_opened: u64,
    /// Most sessions of this host seen at once in `pg_stat_activity`.
    pub peak_sessions: i64,
    /// Most advisory locks of this host seen granted at once.
    pub peak_locks: i64,
    /// RSS before the jobs, MiB.
    pub rss_before_mib: f64,
    /// Highest RSS sampled during the jobs, MiB.
    pub rss_peak_mib: f64,
    /// Acquire + release of one more entity while holding K.
    pub probe: Latency,
}

/// What scenario 5 measured.
#[derive(Debug, Serialize)]
pub struct Held {
    /// One point per J × K.
    pub points: Vec<HeldPoint>,
}

/// Runs scenario 5.
pub async fn run(host: &Host, plan: &Plan, app: &str) -> anyhow::Result<Held> {
    let mut points = Vec::new();
    for &(jobs, locks) in &plan.held {
        points.push(run_one(host, plan, app, jobs, locks).await?);
    }
    Ok(Held { points })
}

async fn run_one(host: &Host, plan: &Plan, app: &str, jobs: usize, locks: usize) -> anyhow::Result<HeldPoint> {
    let max_sessions = host.db_settings.max_sessions;
    let db = host.database(max_sessions);
    let entities = fresh_entities(jobs * (locks + 1));
    host.premap(&db, &entities).await?;
    let inputs = entities
        .chunks(locks + 1)
        .map(|chunk| {
            // The last entity of each chunk is the job's probe.
            let (probe, held) = (chunk.last(), &chunk[..chunk.len() - 1]);
            serde_json::to_vec(&json!({"op": "hold", "entities": held, "hold_ms": plan.held_ms, "probe": probe}))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let monitor = FloorConn::connect(&host.config, app, "monitor").await?;
    let rss_before = rss_kib();
    let stop = Arc::new(Notify::new());
    let sampling = sample_until(monitor, app.to_owned(), stop.clone());
    let running = async {
        let run = host.batch(&db, inputs, jobs).await;
        stop.notify_one();
        run
    };
    let (run, peaks) = tokio::join!(running, sampling);
    let (run, peaks) = (run?, peaks?);

    let mut probe = Hist::new();
    for output in &run.outputs {
        if let Some(ns) = parse_output(output)?["probe_ns"].as_u64() {
            probe.record_ns(ns);
        }
    }
    Ok(HeldPoint {
        jobs,
        locks_per_job: locks,
        max_sessions,
        hold_ms: plan.held_ms,
        wall_secs: run.wall.as_secs_f64(),
        sessions_opened: db.sessions_opened(),
        peak_sessions: peaks.sessions,
        peak_locks: peaks.locks,
        rss_before_mib: rss_before as f64 / 1024.0,
        rss_peak_mib: peaks.rss_kib.max(rss_before) as f64 / 1024.0,
        probe: probe.latency(),
    })
}

/// Highest values the monitor saw.
#[derive(Default)]
struct Peaks {
    sessions: i64,
    locks: i64,
    rss_kib: u64,
}

/// Samples every [`SAMPLE_EVERY`] until `stop` is notified.
async fn sample_until(monitor: FloorConn, app: String, stop: Arc<Notify>) -> anyhow::Result<Peaks> {
    let statement = monitor.client().prepare(SAMPLE_SQL).await?;
    let mut peaks = Peaks::default();
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        sample(monitor.client(), &statement, &app, &mut peaks).await?;
        tokio::select! {
            () = &mut stopped => return Ok(peaks),
            () = tokio::time::sleep(SAMPLE_EVERY) => {}
        }
    }
}

async fn sample(
    client: &Client,
    statement: &tokio_postgres::Statement,
    app: &str,
    peaks: &mut Peaks,
) -> anyhow::Result<()> {
    let row = client.query_one(statement, &[&app]).await?;
    peaks.sessions = peaks.sessions.max(row.try_get(0)?);
    peaks.locks = peaks.locks.max(row.try_get(1)?);
    peaks.rss_kib = peaks.rss_kib.max(rss_kib());
    Ok(())
}
