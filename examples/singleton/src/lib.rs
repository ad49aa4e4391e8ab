//! Singleton: any number of jobs start; exactly one does the nightly work for
//! a date, the others skip. Two guards make that hold: `try_acquire` on the
//! entity named `nightly:<date>` (a job that finds it taken skips at once,
//! without waiting), and a "done" marker in the key-value store, written
//! under that lock, so a job that comes later the same day skips too.
//! See README.md.

use std::{
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use pinlock_guest::{BoxError, Entity, JsonWorker, export_worker, info, kv::Bucket, lock};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Done markers and reports: bucket "nightly".
const BUCKET: &str = "nightly";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    /// The day whose work this is (`YYYY-MM-DD`); default: today (UTC).
    date: Option<String>,
    /// How long the work takes.
    #[serde(default = "default_work_ms")]
    work_ms: u64,
}

fn default_work_ms() -> u64 {
    200
}

/// What the one job that did the work left behind.
#[derive(Serialize, Deserialize)]
struct Done {
    fencing_token: u64,
    finished_unix_ms: u64,
}

struct Nightly;

impl JsonWorker for Nightly {
    type Input = Option<Input>;
    type Output = Value;
    type Error = BoxError;

    fn run(input: Option<Input>) -> Result<Value, BoxError> {
        let Input { date, work_ms } = input.unwrap_or(Input { date: None, work_ms: default_work_ms() });
        let date = date.unwrap_or_else(today);
        let task = format!("nightly:{date}");
        // Not waiting: a job that finds the lock taken knows another is on it.
        let Some(guard) = lock(Entity::named(&task)).try_acquire()? else {
            return Ok(json!({ "ran": false, "date": date, "reason": "another job is running it" }));
        };
        let nightly = Bucket::open(BUCKET)?;
        // Under the lock: did a job finish it earlier today?
        if let Some(done) = nightly.get_json::<Done>(&task)? {
            return Ok(json!({ "ran": false, "date": date, "reason": "already done", "done_by": done.fencing_token }));
        }
        info!("{task}: doing the work with fencing token {}", guard.fencing_token());
        thread::sleep(Duration::from_millis(work_ms)); // the work
        let done = Done { fencing_token: guard.fencing_token(), finished_unix_ms: unix_ms() };
        nightly.set_json(&task, &done)?; // committed only if the lock was held
        guard.release()?; // Err(Lost): another job may have done it too
        Ok(json!({ "ran": true, "date": date, "fencing_token": done.fencing_token }))
    }
}

export_worker!(json Nightly);

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Today's date in UTC, `YYYY-MM-DD` (the host's clock).
fn today() -> String {
    let days = (unix_ms() / 86_400_000) as i64;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
