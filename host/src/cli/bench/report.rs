//! Everything a run measured, as one JSON-ready value, and its rendering as
//! the table `pinlock bench` prints: one block per scenario, then the targets
//! and whether each was met.

use std::fmt::Write as _;

use serde::Serialize;

use pinlock::report::human_us;

use super::handoff::Handoff;
use super::held::Held;
use super::machine::Machine;
use super::mapping::Mapping;
use super::overhead::Overhead;
use super::plan::Plan;
use super::queue::QueueBench;
use super::stats::ratio;
use super::throughput::Throughput;
use super::uncontended::Uncontended;

/// The settings a run used.
#[derive(Debug, Clone, Serialize)]
pub struct RunSettings {
    /// `user@host:port/db`.
    pub database: String,
    /// This host's `application_name`.
    pub application_name: String,
    /// `--max-sessions` (scenarios 2, 3 and 6 set their own: C, N and 1).
    pub max_sessions: usize,
    /// `--lock-timeout-ms`.
    pub lock_timeout_ms: u64,
    /// `--time-limit-ms`.
    pub time_limit_ms: u64,
    /// `--memory-limit-mib`.
    pub memory_limit_mib: usize,
    /// Instances the runtime's pool holds.
    pub max_concurrent_jobs: usize,
    /// `--threads`.
    pub threads: u16,
    /// Whether the binary was built with optimizations.
    pub release_build: bool,
}

/// Every figure of a run.
#[derive(Debug, Serialize)]
pub struct Results {
    /// The command line that produced it.
    pub command: String,
    /// Where it ran.
    pub machine: Machine,
    /// With which settings.
    pub settings: RunSettings,
    /// How much of each scenario.
    pub plan: Plan,
    /// Scenario 1 (`None`: not run).
    pub uncontended: Option<Uncontended>,
    /// Scenario 2 (`None`: not run).
    pub throughput: Option<Throughput>,
    /// Scenario 3 (`None`: not run).
    pub handoff: Option<Handoff>,
    /// Scenario 4 (`None`: not run).
    pub overhead: Option<Overhead>,
    /// Scenario 5 (`None`: not run).
    pub held: Option<Held>,
    /// Scenario 6 (`None`: not run).
    pub mapping: Option<Mapping>,
    /// Scenario 7 (`None`: not run).
    pub queue: Option<QueueBench>,
    /// The targets and whether each was met.
    pub targets: Vec<TargetCheck>,
    /// Wall time of the scenarios, in s.
    pub wall_secs: f64,
}

/// One target of the issue, checked against this run.
#[derive(Debug, Serialize)]
pub struct TargetCheck {
    /// What is wanted, e.g. "uncontended p50 ≤ 1.25 × floor".
    pub target: String,
    /// What this run measured, as text.
    pub measured: String,
    /// Whether the target was met (`None`: not measured in this run).
    pub met: Option<bool>,
}

/// The issues' targets against these figures (only the scenarios that ran).
/// The moonshot's two rows are reported like targets but are not required.
pub fn check_targets(results: &Results) -> Vec<TargetCheck> {
    let ratio_check = |target: String, ratio: Option<f64>, ok: fn(f64) -> bool| TargetCheck {
        target,
        measured: ratio.map_or_else(|| "n/a".into(), |r| format!("{r:.2} × floor")),
        met: ratio.map(ok),
    };
    let mut checks = Vec::new();
    if let Some(u) = &results.uncontended {
        checks.push(ratio_check("uncontended p50 ≤ 1.0 × floor".into(), u.ratio_p50, |r| r <= 1.0));
        checks.push(ratio_check("moonshot: uncontended p50 ≤ 0.6 × floor".into(), u.ratio_p50, |r| r <= 0.6));
    }
    if let Some(t) = &results.throughput {
        for point in t.points.iter().filter(|p| [4, 16, 64].contains(&p.concurrency)) {
            let target = format!("throughput at C={} ≥ 0.7 × floor", point.concurrency);
            checks.push(ratio_check(target, point.ratio, |r| r >= 0.7));
        }
        if let Some(point) = t.points.iter().find(|p| p.concurrency == 16) {
            checks.push(ratio_check("moonshot: throughput at C=16 ≥ 1.0 × floor".into(), point.ratio, |r| r >= 1.0));
        }
    }
    if let Some(h) = &results.handoff {
        for point in &h.points {
            let target = format!("hand-off p50 ≤ 1.5 × floor, N={}", point.waiters);
            checks.push(ratio_check(target, point.ratio_p50, |r| r <= 1.5));
        }
    }
    if let Some(o) = &results.overhead {
        checks.push(TargetCheck {
            target: "job overhead p50 ≤ 20 µs".into(),
            measured: human_us(o.job.p50_us),
            met: Some(o.job.p50_us <= 20.0),
        });
    }
    if let Some(point) = results.held.iter().flat_map(|h| &h.points).find(|p| (p.jobs, p.locks_per_job) == (1000, 10)) {
        checks.push(TargetCheck {
            target: "1000×10 held: wall ≤ 1.5 s".into(),
            measured: format!("{:.2} s", point.wall_secs),
            met: Some(point.wall_secs <= 1.5),
        });
        checks.push(TargetCheck {
            target: "1000×10 held: sessions ≤ 16".into(),
            measured: point.peak_sessions.max(point.sessions_opened as i64).to_string(),
            met: Some(point.peak_sessions <= 16 && point.sessions_opened <= 16),
        });
        checks.push(TargetCheck {
            target: "1000×10 held: RSS ≤ 230 MiB".into(),
            measured: format!("{:.0} MiB", point.rss_peak_mib),
            met: Some(point.rss_peak_mib <= 230.0),
        });
    }
    if let Some(queue) = &results.queue {
        for point in &queue.points {
            checks.push(TargetCheck {
                target: format!("queue, {} ≥ 0.6 × run", hosts(point.hosts)),
                measured: point.ratio.map_or_else(|| "n/a".into(), |r| format!("{r:.2} × run")),
                met: point.ratio.map(|r| r >= 0.6),
            });
        }
        let pickup = &queue.pickup;
        checks.push(TargetCheck {
            target: "queue pickup p50 ≤ 5 ms".into(),
            measured: if pickup.count == 0 { "n/a".into() } else { human_us(pickup.p50_us) },
            met: (pickup.count > 0).then_some(pickup.p50_us <= 5000.0),
        });
    }
    checks
}

fn hosts(n: usize) -> String {
    if n == 1 { "1 host".into() } else { format!("{n} hosts") }
}

/// Columns of the table: scenario, measure, pinlock, floor, ratio, fenced
/// floor, ratio to it. The first two are left-aligned, the rest right-aligned.
const COLUMNS: usize = 7;

/// A table of rows under a header; columns padded to fit.
struct Table {
    rows: Vec<[String; COLUMNS]>,
}

impl Table {
    /// A row of the first `cells.len()` columns; the rest stay empty.
    fn row(&mut self, cells: &[String]) {
        let mut row: [String; COLUMNS] = Default::default();
        for (slot, cell) in row.iter_mut().zip(cells) {
            slot.clone_from(cell);
        }
        self.rows.push(row);
    }

    /// A row of pinlock alone.
    fn only(&mut self, scenario: &str, measure: &str, pinlock: String) {
        self.row(&[scenario.into(), measure.into(), pinlock]);
    }

    /// A row of pinlock against the floor (and the fenced floor, if given),
    /// with values shown by `show`.
    fn compare(&mut self, scenario: &str, measure: &str, values: (f64, f64, Option<f64>), show: fn(f64) -> String) {
        let (pinlock, floor, fenced) = values;
        let mut cells = vec![scenario.into(), measure.into(), show(pinlock), show(floor), ratio_text(pinlock, floor)];
        if let Some(fenced) = fenced {
            cells.extend([show(fenced), ratio_text(pinlock, fenced)]);
        }
        self.row(&cells);
    }

    fn render(&self, out: &mut String) {
        let mut widths = [0; COLUMNS];
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for row in &self.rows {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
                let pad = " ".repeat(width - cell.chars().count());
                if i < 2 {
                    let _ = write!(line, "{cell}{pad}  ");
                } else {
                    let _ = write!(line, "{pad}{cell}  ");
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
}

fn ratio_text(pinlock: f64, floor: f64) -> String {
    ratio(pinlock, floor).map(|r| format!("{r:.2}")).unwrap_or_default()
}

fn rate(per_sec: f64) -> String {
    format!("{per_sec:.0}/s")
}

/// The whole report as printed.
pub fn render(results: &Results) -> String {
    let mut out = String::new();
    header(results, &mut out);
    let mut table = Table { rows: Vec::new() };
    let header = ["scenario", "measure", "pinlock", "floor", "ratio", "fenced floor", "ratio"];
    table.row(&header.map(String::from));
    results.uncontended.iter().for_each(|u| uncontended_rows(u, &mut table));
    results.throughput.iter().for_each(|t| throughput_rows(t, &mut table));
    results.handoff.iter().for_each(|h| handoff_rows(h, &mut table));
    results.overhead.iter().for_each(|o| overhead_rows(o, &mut table));
    results.held.iter().for_each(|h| held_rows(h, &mut table));
    results.mapping.iter().for_each(|m| mapping_rows(m, &mut table));
    results.queue.iter().for_each(|q| queue_rows(q, &mut table));
    table.render(&mut out);
    targets(&results.targets, &mut out);
    out
}

fn header(results: &Results, out: &mut String) {
    let (m, s) = (&results.machine, &results.settings);
    let _ = writeln!(
        out,
        "pinlock bench{}  ({:.0} s)",
        if results.plan.quick { " --quick" } else { "" },
        results.wall_secs
    );
    let _ = writeln!(out, "  machine   {} cores, {}, {} MiB", m.cores, m.cpu_model, m.memory_mib);
    let _ = writeln!(out, "  server    {} (max_connections {})", m.postgres, m.max_connections);
    let _ = writeln!(
        out,
        "  settings  {} as {:?}; max-sessions {}, lock timeout {} ms, {} instances, {} thread{}{}",
        s.database,
        s.application_name,
        s.max_sessions,
        s.lock_timeout_ms,
        s.max_concurrent_jobs,
        s.threads,
        if s.threads == 1 { "" } else { "s" },
        if s.release_build { "" } else { "; DEBUG BUILD: figures not representative" }
    );
    let _ =
        writeln!(out, "  floor     raw tokio-postgres pg_advisory_lock + pg_advisory_unlock on keys in [2^62, 2^63)\n");
}

fn uncontended_rows(u: &Uncontended, table: &mut Table) {
    let (p, f, x) = (&u.pinlock, &u.floor, &u.floor_fenced);
    let name = "1 uncontended lock+release";
    table.compare(name, "p50", (p.p50_us, f.p50_us, Some(x.p50_us)), human_us);
    table.compare("", "p90", (p.p90_us, f.p90_us, Some(x.p90_us)), human_us);
    table.compare("", "p99", (p.p99_us, f.p99_us, Some(x.p99_us)), human_us);
    table.compare("", "p99.9", (p.p999_us, f.p999_us, Some(x.p999_us)), human_us);
    let count = |n: u64| n.to_string();
    table.row(&["".into(), "samples".into(), count(p.count), count(f.count), String::new(), count(x.count)]);
}

fn throughput_rows(t: &Throughput, table: &mut Table) {
    for (i, point) in t.points.iter().enumerate() {
        let name = if i == 0 { "2 throughput (jobs | pairs)" } else { "" };
        let values = (point.pinlock_per_sec, point.floor_per_sec, Some(point.floor_fenced_per_sec));
        table.compare(name, &format!("C={}", point.concurrency), values, rate);
    }
    for point in &t.points {
        let cpu = (point.pinlock_cpu_us, point.floor_cpu_us, None);
        table.compare("", &format!("C={} client CPU each", point.concurrency), cpu, human_us);
    }
    for point in &t.points {
        if let (Some(pinlock), Some(floor)) = (point.pinlock_server_cpu_us, point.floor_server_cpu_us) {
            table.compare("", &format!("C={} server CPU each", point.concurrency), (pinlock, floor, None), human_us);
        }
    }
}

fn handoff_rows(h: &Handoff, table: &mut Table) {
    for (i, point) in h.points.iter().enumerate() {
        let name = if i == 0 { "3 hand-off on one entity" } else { "" };
        let n = point.waiters;
        let (p, f, x) = (&point.pinlock, &point.floor, &point.floor_fenced);
        table.compare(name, &format!("N={n} p50"), (p.p50_us, f.p50_us, Some(x.p50_us)), human_us);
        table.compare("", &format!("N={n} p99"), (p.p99_us, f.p99_us, Some(x.p99_us)), human_us);
        let fenced = Some(point.floor_fenced_grants_per_sec);
        let grants = (point.pinlock_grants_per_sec, point.floor_grants_per_sec, fenced);
        table.compare("", &format!("N={n} grants"), grants, rate);
    }
}

fn overhead_rows(o: &Overhead, table: &mut Table) {
    table.only("4 empty job", "p50", human_us(o.job.p50_us));
    table.only("", "p99", human_us(o.job.p99_us));
    table.only("", "1 at a time", rate(o.sequential_per_sec));
    table.only("", &format!("{} at a time", o.parallel_jobs), rate(o.parallel_per_sec));
    table.only("", "one-lock job p50", human_us(o.one_lock_job.p50_us));
    table.only("", "  its lock+release p50", human_us(o.one_lock_guest.p50_us));
}

fn held_rows(h: &Held, table: &mut Table) {
    for (i, p) in h.points.iter().enumerate() {
        let name = if i == 0 { "5 held locks (J×K)" } else { "" };
        let jk = format!("{}×{}", p.jobs, p.locks_per_job);
        table.only(name, &format!("{jk} wall (hold {} ms)", p.hold_ms), format!("{:.2} s", p.wall_secs));
        let sessions = format!("{} peak, {} opened", p.peak_sessions, p.sessions_opened);
        table.only("", &format!("{jk} sessions (max {})", p.max_sessions), sessions);
        table.only("", &format!("{jk} locks held at peak"), p.peak_locks.to_string());
        table.only("", &format!("{jk} RSS"), format!("{:.0} → {:.0} MiB", p.rss_before_mib, p.rss_peak_mib));
        let probe = format!("{} / {}", human_us(p.probe.p50_us), human_us(p.probe.p99_us));
        table.only("", &format!("{jk} probe p50 / p99"), probe);
    }
}

fn mapping_rows(m: &Mapping, table: &mut Table) {
    let cached = m.cached.p50_us;
    let with_ratio = |scenario: &str, measure: &str, value: f64| {
        vec![scenario.into(), measure.into(), human_us(value), String::new(), vs_cached(value, cached)]
    };
    table.only("6 entity mapping (p50)", "cached", human_us(cached));
    table.row(&with_ratio("", "new to this host", m.new_to_host.p50_us));
    table.row(&with_ratio("", "never seen", m.first_ever.p50_us));
}

fn queue_rows(q: &QueueBench, table: &mut Table) {
    let c = q.concurrency;
    table.only("7 job queue (floor: run)", &format!("run C={c}"), rate(q.run_per_sec));
    for point in &q.points {
        let measure = format!("{}, {c} slots each", hosts(point.hosts));
        table.compare("", &measure, (point.per_sec, q.run_per_sec, None), rate);
    }
    for point in &q.points {
        let cpu = (point.cpu_us, q.run_cpu_us, None);
        table.compare("", &format!("{} host CPU each", hosts(point.hosts)), cpu, human_us);
        if let (Some(queue), Some(run)) = (point.server_cpu_us, q.run_server_cpu_us) {
            table.compare("", &format!("{} server CPU each", hosts(point.hosts)), (queue, run, None), human_us);
        }
    }
    for point in &q.points {
        let name = hosts(point.hosts);
        let batches = format!("{:.1} / {:.1}", point.claim_batch, point.finish_batch);
        table.only("", &format!("{name} claim / finish batch"), batches);
        table.only("", &format!("{name} commits per job"), format!("{:.2}", point.commits_per_job));
        if point.hosts > 1 {
            table.only("", &format!("{name}: busiest's share"), format!("{:.0} %", point.busiest_host_share * 100.0));
        }
    }
    table.only("", "pickup p50 (NOTIFY)", human_us(q.pickup.p50_us));
    table.only("", "pickup p99", human_us(q.pickup.p99_us));
}

fn vs_cached(value: f64, cached: f64) -> String {
    ratio(value, cached).map(|r| format!("{r:.1}× cached")).unwrap_or_default()
}

fn targets(checks: &[TargetCheck], out: &mut String) {
    let _ = writeln!(out, "\ntargets (reported, not asserted)");
    let width = checks.iter().map(|c| c.target.chars().count()).max().unwrap_or(0);
    for check in checks {
        let verdict = match check.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        let pad = " ".repeat(width - check.target.chars().count());
        let _ = writeln!(out, "  {}{pad}  {:>14}  {verdict}", check.target, check.measured);
    }
}
