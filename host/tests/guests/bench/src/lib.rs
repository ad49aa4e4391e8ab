//! Benchmark fixture: times lock operations from inside a job.
//!
//! Input is JSON with an `"op"`; see [`Op`]. Times are nanoseconds: durations
//! from the monotonic clock, instants (`handoff`) from the wall clock since the
//! Unix epoch, so that they compare across jobs.

use std::{
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use pinlock_guest::{Guard, LockError, Mode, Uuid, Worker, export_worker, lock};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Op {
    /// Returns empty output at once, with no host calls.
    Empty,
    /// Acquires and releases each entity in turn: `{"ns":[...]}`.
    LockRelease {
        entities: Vec<Uuid>,
        #[serde(default)]
        mode: ModeArg,
    },
    /// Acquires and releases `entity` (exclusive) once: empty output.
    Once { entity: Uuid },
    /// `rounds` times: acquires `entity`, notes the grant time, notes the
    /// release time, releases: `{"grants":[...],"releases":[...]}`.
    Handoff { entity: Uuid, rounds: usize },
    /// Acquires every entity, times one acquire and release of `probe` (if
    /// any) while holding them, holds them `hold_ms` more, releases them:
    /// `{"probe_ns":N|null}`.
    Hold { entities: Vec<Uuid>, hold_ms: u64, probe: Option<Uuid> },
}

#[derive(Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ModeArg {
    #[default]
    Exclusive,
    Shared,
}

impl From<ModeArg> for Mode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Exclusive => Mode::Exclusive,
            ModeArg::Shared => Mode::Shared,
        }
    }
}

struct Bench;

impl Worker for Bench {
    fn run(input: Vec<u8>) -> Result<Vec<u8>, String> {
        let op = serde_json::from_slice(&input).map_err(|e| format!("bad input: {e}"))?;
        let output = match op {
            Op::Empty => return Ok(Vec::new()),
            Op::LockRelease { entities, mode } => {
                let ns = entities
                    .into_iter()
                    .map(|entity| timed(|| lock_release(entity, mode.into())))
                    .collect::<Result<Vec<_>, _>>()?;
                json!({ "ns": ns })
            }
            Op::Once { entity } => {
                lock_release(entity, Mode::Exclusive)?;
                return Ok(Vec::new());
            }
            Op::Handoff { entity, rounds } => {
                let (mut grants, mut releases) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
                for _ in 0..rounds {
                    let guard = acquire(entity, Mode::Exclusive)?;
                    grants.push(wall_clock_ns()?);
                    releases.push(wall_clock_ns()?);
                    release(guard)?;
                }
                json!({ "grants": grants, "releases": releases })
            }
            Op::Hold { entities, hold_ms, probe } => {
                let guards =
                    entities.into_iter().map(|e| acquire(e, Mode::Exclusive)).collect::<Result<Vec<_>, _>>()?;
                let probe_ns = probe.map(|probe| timed(|| lock_release(probe, Mode::Exclusive))).transpose()?;
                thread::sleep(Duration::from_millis(hold_ms));
                guards.into_iter().try_for_each(release)?;
                json!({ "probe_ns": probe_ns })
            }
        };
        serde_json::to_vec(&output).map_err(|e| e.to_string())
    }
}

export_worker!(Bench);

fn acquire(entity: Uuid, mode: Mode) -> Result<Guard, String> {
    lock(entity).mode(mode).acquire().map_err(|e| lock_failed("acquire", &e))
}

fn release(guard: Guard) -> Result<(), String> {
    guard.release().map_err(|e| lock_failed("release", &e))
}

fn lock_release(entity: Uuid, mode: Mode) -> Result<(), String> {
    release(acquire(entity, mode)?)
}

fn lock_failed(what: &str, error: &LockError) -> String {
    format!("{what} failed: {error}")
}

/// Runs `f`, returning how long it took in nanoseconds.
fn timed(f: impl FnOnce() -> Result<(), String>) -> Result<u64, String> {
    let start = Instant::now();
    f()?;
    Ok(nanos(start.elapsed()))
}

fn wall_clock_ns() -> Result<u64, String> {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?;
    Ok(nanos(since_epoch))
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
