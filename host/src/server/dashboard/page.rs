//! The dashboard's HTML, rendered on the server with maud, which escapes
//! every value it interpolates: a worker's error, a job's input or output,
//! a host or worker name can never become markup. The live updates fetch
//! the same section renderings again (see `assets/dashboard.js`), so there
//! is one rendering of each section and it is escaped the same way.

use std::time::Duration;

use maud::{DOCTYPE, Markup, html};

use super::data::{EntityLocks, JobRow, JobsPanel, LockRow, LocksNow, Search};
use super::history::{JobLockTimes, Sample, Spread};
use crate::queue::JobRecord;

/// Most bytes of a job's input or output shown on its page.
const SHOWN_BYTES: usize = 16 * 1024;
/// Samples in the "over time" table (the charts show them all).
const TABLE_SAMPLES: usize = 6;

/// What every page knows.
pub(crate) struct Context<'a> {
    /// This host's id.
    pub(crate) host: &'a str,
    /// Holds and waits at least this long are marked.
    pub(crate) slow: Duration,
    /// Seconds between "over time" samples.
    pub(crate) sample_secs: u64,
    /// How long finished jobs are kept.
    pub(crate) retention_hours: u64,
}

/// `12 ms`, `3.4 s`, `5 min 2 s`, `2 h 5 min`.
pub(crate) fn duration(secs: f64) -> String {
    let secs = secs.max(0.0);
    if secs < 1.0 {
        format!("{:.0} ms", secs * 1000.0)
    } else if secs < 60.0 {
        format!("{secs:.1} s")
    } else if secs < 3600.0 {
        format!("{} min {} s", (secs / 60.0) as u64, secs as u64 % 60)
    } else {
        format!("{} h {} min", (secs / 3600.0) as u64, (secs as u64 % 3600) / 60)
    }
}

fn ms(value: f64) -> String {
    duration(value / 1000.0)
}

fn layout(ctx: &Context, title: &str, refresh_without_js: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · pinlock" }
                link rel="stylesheet" href="/dashboard/assets/uPlot.min.css";
                link rel="stylesheet" href="/dashboard/assets/dashboard.css";
                @if refresh_without_js {
                    // Without JavaScript the page still stays live, by reloading.
                    noscript { meta http-equiv="refresh" content="5"; }
                }
            }
            body {
                header {
                    a.brand href="/" { "pinlock" }
                    span.host { "host " code { (ctx.host) } }
                    nav { a href="/#locks" { "Locks now" } a href="/#jobs" { "Jobs" } a href="/#history" { "Over time" } }
                    span #live .live { "static page" }
                }
                main { (body) }
                script src="/dashboard/assets/uPlot.iife.min.js" {}
                script src="/dashboard/assets/dashboard.js" {}
            }
        }
    }
}

/// The dashboard: locks now, jobs, over time.
pub(crate) fn index(
    ctx: &Context,
    query: &str,
    worker: Option<&str>,
    locks: Markup,
    jobs: Markup,
    samples: &[Sample],
) -> Markup {
    let body = html! {
        section #locks {
            h2 { "Locks now" }
            form.search method="get" action="/" {
                input type="search" name="q" value=(query) placeholder="entity UUID or name, worker, host, job id"
                    aria-label="Search locks" autocomplete="off";
                @if let Some(worker) = worker { input type="hidden" name="worker" value=(worker); }
                button type="submit" { "Search" }
            }
            div #locks-body data-live="/dashboard/locks" data-every="1000" { (locks) }
        }
        section #jobs {
            h2 { "Jobs" }
            div #jobs-body data-live="/dashboard/jobs" data-every="2000" { (jobs) }
        }
        section #history {
            h2 { "Over time " small { "this host's jobs, one sample every " (ctx.sample_secs) " s, the last hour" } }
            div #charts .charts data-every=(ctx.sample_secs * 1000) {
                p.muted { "The charts need JavaScript; the table below has the latest samples." }
            }
            div #history-body data-live="/dashboard/history-table" data-every=(ctx.sample_secs * 1000) {
                (history_table(samples))
            }
        }
    };
    layout(ctx, "Dashboard", true, body)
}

/// The body of "locks now".
pub(crate) fn locks(ctx: &Context, now: &LocksNow, search: Option<&Search>) -> Markup {
    let live: Vec<_> = now.hosts.iter().filter(|h| !h.stale()).collect();
    let stale: Vec<_> = now.hosts.iter().filter(|h| h.stale()).collect();
    html! {
        p.hosts {
            @if live.is_empty() {
                "No host is publishing its locks now."
            } @else {
                "Hosts publishing: "
                @for (i, host) in live.iter().enumerate() {
                    @if i > 0 { ", " }
                    code { (host.host) } " (" (duration(host.age_secs)) " ago)"
                }
            }
            @if !stale.is_empty() {
                span.stale {
                    " · silent, not shown: "
                    @for (i, host) in stale.iter().enumerate() {
                        @if i > 0 { ", " }
                        code { (host.host) } " (" (duration(host.age_secs)) ")"
                    }
                }
            }
        }
        @if now.entities.is_empty() {
            p.empty {
                @match search {
                    Some(_) => { "No lock held or awaited matches this search." }
                    None => { "No lock is held or awaited by a job of a live host." }
                }
            }
        } @else {
            table.locks {
                thead { tr { th { "Entity" } th { "State" } th { "Mode" } th { "Host" } th { "Worker" } th { "Job" } th { "For" } } }
                @for entity in &now.entities { (entity_rows(ctx, entity, search)) }
            }
        }
    }
}

fn entity_cell(entity: &EntityLocks, search: Option<&Search>) -> Markup {
    let named = entity.entity.get_version_num() == 5;
    html! {
        td.entity {
            code { (entity.entity) }
            @if let Some(name) = search.and_then(|s| s.name_of(entity.entity)) {
                " " span.badge.name title="the name you searched for gives this entity" { "named " q { (name) } }
            } @else if named {
                " " span.badge title="a UUIDv5, as Entity::named makes: the host never sees names; search by name to find one" { "named" }
            }
            br; small.muted { "key " (entity.key) }
        }
    }
}

fn entity_rows(ctx: &Context, entity: &EntityLocks, search: Option<&Search>) -> Markup {
    let slow = |row: &LockRow| row.age_secs >= ctx.slow.as_secs_f64();
    html! {
        tbody.entity data-entity=(entity.entity) {
            @for (i, row) in entity.holders.iter().enumerate() {
                tr.holder.slow[slow(row)] data-state="held" data-job=(row.job) {
                    @if i == 0 { (entity_cell(entity, search)) } @else { td {} }
                    td { "held" }
                    (row_cells(row, slow(row)))
                }
            }
            @if entity.holders.is_empty() {
                tr.holder.unknown data-state="unknown" {
                    (entity_cell(entity, search))
                    td colspan="6" {
                        "held by no job of a live host (another application, or a host that stopped publishing); "
                        code { "pinlock locks" } " lists every backend"
                    }
                }
            }
            @for (i, row) in entity.waiters.iter().enumerate() {
                tr.waiter.slow[slow(row)] data-state="waiting" data-job=(row.job) data-position=(i + 1) {
                    td.queue { "↳ #" (i + 1) " in queue" }
                    td { "waiting" }
                    (row_cells(row, slow(row)))
                }
            }
        }
    }
}

fn row_cells(row: &LockRow, slow: bool) -> Markup {
    html! {
        td { (row.mode) }
        td { code { (row.host) } }
        td { (row.worker) }
        td { a href={ "/jobs/" (row.job) } { (row.job) } }
        td.age { (duration(row.age_secs)) @if slow { " " span.badge.warn { "slow" } } }
    }
}

/// The body of "jobs".
pub(crate) fn jobs(panel: &JobsPanel, worker: Option<&str>) -> Markup {
    html! {
        @if let Some(worker) = worker {
            p { "Worker " code { (worker) } " only · " a href="/#jobs" { "all workers" } }
        }
        @if panel.workers.is_empty() {
            p.empty { "No worker has been served yet." }
        } @else {
            table.workers {
                thead { tr {
                    th { "Worker" } th { "Due" } th { "Scheduled" } th { "Running" }
                    th { "Succeeded (1 h)" } th { "Failed (1 h)" } th { "Cancelled (1 h)" }
                } }
                tbody { @for w in &panel.workers {
                    tr {
                        td { a href={ "/?worker=" (urlencode(&w.worker)) "#jobs" } { (w.worker) } }
                        td.num { (w.due) } td.num { (w.scheduled) } td.num { (w.running) }
                        td.num { (w.succeeded) } td.num.bad[w.failed > 0] { (w.failed) } td.num { (w.cancelled) }
                    }
                } }
            }
        }
        div.lists {
            (job_list("Running", "running", &panel.running, "Running for", "No job is running."))
            (job_list("Queued", "queued", &panel.queued, "Due", "No job is queued."))
            (job_list("Failed in the last hour", "failed", &panel.failed, "Failed", "No job failed in the last hour."))
        }
    }
}

fn job_list(title: &str, id: &str, rows: &[JobRow], age: &str, empty: &str) -> Markup {
    html! {
        div.list id={ "jobs-" (id) } {
            h3 { (title) }
            @if rows.is_empty() {
                p.empty { (empty) }
            } @else {
                table.jobs {
                    thead { tr { th { "Job" } th { "Worker" } th { "Host" } th { "Attempt" } th { (age) } th { "Input" } th { "Error" } } }
                    tbody { @for job in rows {
                        tr data-job=(job.id) {
                            td { a href={ "/jobs/" (job.id) } { (job.id) } }
                            td { (job.worker) }
                            td { @if let Some(host) = &job.host { code { (host) } } }
                            td.num { (job.attempt) "/" (job.max_attempts) }
                            td { @if job.age_secs < 0.0 { "in " (duration(-job.age_secs)) } @else { (duration(job.age_secs)) @if job.state != "running" { " ago" } } }
                            td.num { (job.input_bytes) " B" }
                            td.error { @if let Some(error) = &job.error { (error) } }
                        }
                    } }
                }
            }
        }
    }
}

/// The latest samples, newest first.
pub(crate) fn history_table(samples: &[Sample]) -> Markup {
    let spread = |s: &Spread| if s.count == 0 { "–".to_owned() } else { format!("{} / {}", ms(s.p50), ms(s.p99)) };
    html! {
        @if samples.is_empty() {
            p.empty { "No sample yet: the first comes one interval after the host started." }
        } @else {
            table.samples {
                thead { tr {
                    th { "Sample (UTC)" } th { "Lock wait p50 / p99" } th { "Lock hold p50 / p99" }
                    th { "Acquires" } th { "Jobs" } th { "Queue depth" } th { "Running" } th { "Locks held" }
                } }
                tbody { @for sample in samples.iter().rev().take(TABLE_SAMPLES) {
                    tr {
                        td { (clock(sample.t)) }
                        td { (spread(&sample.wait_ms)) }
                        td { (spread(&sample.hold_ms)) }
                        td { (counts(sample.acquires.iter().map(|(k, v)| (*k, *v)))) }
                        td { (counts(sample.jobs.iter().map(|(k, v)| (k.as_str(), *v)))) }
                        td.num { @match sample.queue_depth { Some(depth) => (depth), None => "?" } }
                        td.num { (sample.running) }
                        td.num { (sample.locks_held) }
                    }
                } }
            }
        }
    }
}

fn counts<'a>(counts: impl Iterator<Item = (&'a str, u64)>) -> String {
    let text: Vec<String> = counts.map(|(k, v)| format!("{k} {v}")).collect();
    if text.is_empty() { "–".into() } else { text.join(", ") }
}

/// `HH:MM:SS` of a Unix time (UTC).
fn clock(t: u64) -> String {
    format!("{:02}:{:02}:{:02}", (t / 3600) % 24, (t / 60) % 60, t % 60)
}

/// A job's page. `job` is `None` for an unknown id (an empty state, not an error).
pub(crate) struct JobView {
    /// The id as asked for.
    pub(crate) asked: String,
    /// The job (`None`: no such job), or why it could not be read.
    pub(crate) job: Result<Option<JobRecord>, String>,
    /// What it holds and waits for now, on any live host.
    pub(crate) locks: Result<Vec<LockRow>, String>,
    /// Its lock times, if this host ran it.
    pub(crate) recorded: Option<JobLockTimes>,
}

/// The empty state of a job id that is not in the queue (or not an id).
fn unknown_job(ctx: &Context, asked: &str) -> Markup {
    html! {
        p.empty {
            @if asked.parse::<i64>().is_ok() {
                "No job " code { (asked) } " in the queue. Finished jobs are kept for "
                (ctx.retention_hours) " h, then pruned."
            } @else {
                code { (asked) } " is not a job id."
            }
        }
        p { a href="/#jobs" { "All jobs" } }
    }
}

/// A notice that part of a page could not be read (the rest still shows).
pub(crate) fn unavailable(what: &str, error: &str) -> Markup {
    html! { p.error { "Could not read " (what) " from the database: " (error) } }
}

/// The body of a job's page.
pub(crate) fn job_body(ctx: &Context, view: &JobView) -> Markup {
    let job = match &view.job {
        Ok(Some(job)) => job,
        Ok(None) => return unknown_job(ctx, &view.asked),
        Err(e) => return unavailable("the job", e),
    };
    let input = serde_json::to_string_pretty(&job.input).unwrap_or_default();
    let input_bytes = serde_json::to_vec(&job.input).map_or(0, |v| v.len());
    let output = job.output.as_ref().map(|o| serde_json::to_string_pretty(o).unwrap_or_default());
    html! {
        dl.facts {
            dt { "Worker" } dd { (job.worker) }
            dt { "State" } dd.state { (job.state) }
            dt { "Attempt" } dd { (job.attempt) " of " (job.max_attempts) }
            dt { @if job.state == "running" { "Running on" } @else { "Host" } }
            dd { @match &job.host { Some(host) => { code { (host) } }, None => { "none yet" } } }
            dt { "Enqueued" } dd { (timestamp(&job.created_at)) }
            dt { "Started" } dd { (timestamp(&job.started_at)) }
            dt { "Finished" } dd { (timestamp(&job.finished_at)) }
            @if let Some(key) = &job.unique_key { dt { "Unique key" } dd { code { (key) } } }
        }
        h3 { "Locks" }
        @match &view.locks {
            Err(e) => { p.error { "Could not read its locks now: " (e) } }
            Ok(rows) if rows.is_empty() => { p.empty { "It holds and waits for nothing now (on any live host)." } }
            Ok(rows) => {
                table.locks {
                    thead { tr { th { "Entity" } th { "State" } th { "Mode" } th { "Host" } th { "For" } } }
                    tbody { @for row in rows {
                        tr data-state=(row.state) {
                            td { code { (row.entity) } } td { (row.state) } td { (row.mode) }
                            td { code { (row.host) } } td { (duration(row.age_secs)) }
                        }
                    } }
                }
            }
        }
        @match &view.recorded {
            Some(times) => {
                table.times {
                    thead { tr { th {} th { "Count" } th { "p50" } th { "p90" } th { "p99" } th { "Max" } } }
                    tbody {
                        (spread_row("Wait (acquire to grant)", &times.wait_ms))
                        (spread_row("Hold (grant to release)", &times.hold_ms))
                    }
                }
            }
            None => {
                p.muted {
                    "Wait and hold times are kept in memory by the host that ran the job, for its last 2000 jobs; "
                    "this host (" code { (ctx.host) } ") has none for it."
                }
            }
        }
        h3 { "Input " small { (input_bytes) " bytes" } }
        pre.data { (shown(&input)) }
        @if let Some(output) = &output {
            h3 { "Output" }
            pre.data { (shown(output)) }
        }
        @if let Some(error) = &job.error {
            h3 { @if job.state == "queued" { "Last error (it will be retried)" } @else { "Error" } }
            pre.data.error { (shown(error)) }
        }
    }
}

/// A job's whole page.
pub(crate) fn job_page(ctx: &Context, view: &JobView) -> Markup {
    let body = html! {
        p.back { a href="/#jobs" { "← all jobs" } }
        h2 { "Job " code { (view.asked) } }
        div #job-body data-live={ "/dashboard/job/" (urlencode(&view.asked)) } data-every="2000" { (job_body(ctx, view)) }
    };
    layout(ctx, &format!("Job {}", view.asked), matches!(view.job, Ok(Some(_))), body)
}

fn spread_row(label: &str, s: &Spread) -> Markup {
    html! {
        tr { th { (label) } td.num { (s.count) }
             td.num { (ms(s.p50)) } td.num { (ms(s.p90)) } td.num { (ms(s.p99)) } td.num { (ms(s.max)) } }
    }
}

fn shown(text: &str) -> String {
    if text.len() <= SHOWN_BYTES {
        return text.to_owned();
    }
    format!("{}\n… ({} more bytes)", &text[..text.floor_char_boundary(SHOWN_BYTES)], text.len() - SHOWN_BYTES)
}

/// A timestamp as the queue returns it (JSON text or null).
fn timestamp(value: &serde_json::Value) -> String {
    value.as_str().map_or_else(|| "–".to_owned(), |t| t.replace('T', " "))
}

/// The login form, for a browser without the token's cookie.
pub(crate) fn login(wrong: bool) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Sign in · pinlock" }
                link rel="stylesheet" href="/dashboard/assets/dashboard.css";
            }
            body.login {
                main {
                    h1 { "pinlock" }
                    p { "This host requires one of its API tokens (" code { "server.tokens" } ")." }
                    @if wrong { p.error { "That token is not one of this host's." } }
                    form method="post" action="/login" {
                        input #token type="password" name="token" placeholder="token" autocomplete="current-password" required;
                        button type="submit" { "Sign in" }
                    }
                }
            }
        }
    }
}

/// Percent-encodes a path or query component.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::dashboard::data::HostBeat;
    use uuid::Uuid;

    fn ctx() -> Context<'static> {
        Context { host: "h<1>", slow: Duration::from_secs(10), sample_secs: 10, retention_hours: 24 }
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(0.0123), "12 ms");
        assert_eq!(duration(3.44), "3.4 s");
        assert_eq!(duration(302.0), "5 min 2 s");
        assert_eq!(duration(7500.0), "2 h 5 min");
        assert_eq!(duration(-1.0), "0 ms");
        assert_eq!(urlencode("a b/<c>"), "a%20b%2F%3Cc%3E");
    }

    #[test]
    fn values_from_workers_and_jobs_are_escaped() {
        let evil = "<script>alert(1)</script><img src=x onerror=alert(2)>";
        let row = LockRow {
            host: evil.into(),
            job: 7,
            worker: evil.into(),
            entity: Uuid::new_v4(),
            mode: "exclusive".into(),
            state: "held".into(),
            age_secs: 11.0,
        };
        let now = LocksNow {
            entities: vec![EntityLocks { entity: row.entity, key: 1, holders: vec![row.clone()], waiters: vec![row] }],
            hosts: vec![HostBeat { host: evil.into(), age_secs: 0.5 }],
        };
        let html = locks(&ctx(), &now, None).into_string();
        assert!(!html.contains("<script>") && !html.contains("<img"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
        assert!(html.contains("data-position=\"1\""), "the waiter is numbered: {html}");
        assert!(html.contains("slow"), "an 11 s hold is marked: {html}");

        let job = JobRecord {
            id: 7,
            worker: "w".into(),
            state: "failed".into(),
            input: serde_json::json!({ "note": evil }),
            attempt: 1,
            max_attempts: 1,
            unique_key: Some(evil.into()),
            host: Some(evil.into()),
            output: None,
            error: Some(evil.into()),
            created_at: serde_json::Value::Null,
            run_at: serde_json::Value::Null,
            started_at: serde_json::Value::Null,
            finished_at: serde_json::Value::Null,
        };
        let view = JobView { asked: "7".into(), job: Ok(Some(job)), locks: Err(evil.into()), recorded: None };
        let html = job_page(&ctx(), &view).into_string();
        assert!(!html.contains("<img") && html.matches("<script").count() == 2, "only the page's own scripts: {html}");
        assert!(html.contains("&lt;img src=x onerror=alert(2)&gt;"), "{html}");

        let unknown = JobView { asked: "<b>".into(), job: Ok(None), locks: Ok(vec![]), recorded: None };
        let html = job_body(&ctx(), &unknown).into_string();
        assert!(html.contains("&lt;b&gt;") && html.contains("is not a job id"), "{html}");
    }
}
