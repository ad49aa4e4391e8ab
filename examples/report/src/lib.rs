//! Report: many readers read a document at once under shared locks; a
//! writer updates it under an exclusive lock, which waits for the readers and
//! holds new ones off while it writes. The document is two keys written one
//! after the other (its version, then its body), so a reader that ran during
//! a write would see them disagree; under the locks none does. The output
//! says which mode the job ran in. See README.md.

use std::{
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use pinlock_guest::{BoxError, JsonWorker, Mode, Uuid, export_worker, kv::Bucket, lock};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Documents: bucket "reports", keys `<doc>:version` and `<doc>:body`.
const BUCKET: &str = "reports";

#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
enum Request {
    /// Reads the document under a shared lock.
    Read {
        doc: Uuid,
        /// How long the reader holds the lock (rendering the report, say).
        #[serde(default)]
        hold_ms: u64,
    },
    /// Writes a new version of the document under an exclusive lock.
    Write {
        doc: Uuid,
        text: String,
        /// Pause between writing the version and the body.
        #[serde(default)]
        hold_ms: u64,
    },
}

#[derive(Serialize, Deserialize)]
struct Body {
    version: u64,
    text: String,
}

struct Report;

impl JsonWorker for Report {
    type Input = Request;
    type Output = Value;
    type Error = BoxError;

    fn run(request: Request) -> Result<Value, BoxError> {
        let (doc, mode, hold) = match &request {
            Request::Read { doc, hold_ms } => (*doc, Mode::Shared, Duration::from_millis(*hold_ms)),
            Request::Write { doc, hold_ms, .. } => (*doc, Mode::Exclusive, Duration::from_millis(*hold_ms)),
        };
        let waited_from = unix_ms();
        lock(doc).mode(mode).run(|guard| {
            let (granted, docs) = (unix_ms(), Bucket::open(BUCKET)?);
            let (version_key, body_key) = (format!("{doc}:version"), format!("{doc}:body"));
            let mut output = json!({
                "mode": if mode == Mode::Shared { "shared" } else { "exclusive" },
                "fencing_token": guard.fencing_token(),
                "waited_ms": granted.saturating_sub(waited_from),
                "granted_unix_ms": granted,
            });
            match request {
                Request::Read { .. } => {
                    let version = docs.get_json::<u64>(&version_key)?.unwrap_or(0);
                    thread::sleep(hold);
                    let body = docs.get_json::<Body>(&body_key)?;
                    output["version"] = json!(version);
                    output["text"] = json!(body.as_ref().map(|b| &b.text));
                    // A write between the two reads would show here.
                    output["consistent"] = json!(body.map_or(0, |b| b.version) == version);
                }
                Request::Write { text, .. } => {
                    let version = docs.get_json::<u64>(&version_key)?.unwrap_or(0) + 1;
                    docs.set_json(&version_key, &version)?;
                    thread::sleep(hold);
                    docs.set_json(&body_key, &Body { version, text })?;
                    output["version"] = json!(version);
                }
            }
            output["done_unix_ms"] = json!(unix_ms());
            Ok(output)
        })
    }
}

export_worker!(json Report);

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
