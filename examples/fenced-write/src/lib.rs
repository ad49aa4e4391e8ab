//! Fenced write: a worker writes to a downstream store through its lock's
//! fencing token, and the store refuses a write carrying a token older than
//! one it has already seen, so a job that lost its lock (and does not know
//! it, or ignores it) cannot overwrite the work of the job that holds it now.
//! See README.md.

use std::{fmt, thread, time::Duration};

use pinlock_guest::{Entity, JsonWorker, LockError, Uuid, export_worker, kv::Bucket, kv::KvError, lock, warn};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
enum Request {
    /// Under an exclusive lock on `resource`, writes `value` to the store
    /// with the lock's fencing token.
    Write {
        resource: Uuid,
        value: String,
        /// Work under the lock before the write.
        #[serde(default)]
        hold_ms: u64,
        /// Write with this token instead of the lock's: a stale write, on
        /// purpose.
        token_override: Option<u64>,
        /// A buggy worker: when the write answers `lost`, drop the lost guard
        /// and write anyway with the old token (the store must refuse it).
        #[serde(default)]
        write_after_loss: bool,
    },
    /// Reads the store's record for `resource`.
    Read { resource: Uuid },
}

#[derive(Debug)]
enum Error {
    Lock(LockError),
    Kv(KvError),
    /// The lock was lost before the write: nothing was written.
    LostBeforeWrite {
        token: u64,
    },
}

impl From<LockError> for Error {
    fn from(e: LockError) -> Self {
        Self::Lock(e)
    }
}

impl From<KvError> for Error {
    fn from(e: KvError) -> Self {
        Self::Kv(e)
    }
}

impl Error {
    fn is_lost(&self) -> bool {
        matches!(self, Self::Lock(LockError::Lost) | Self::Kv(KvError::Lost))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Lock(e) => e.fmt(f),
            Self::Kv(e) => e.fmt(f),
            Self::LostBeforeWrite { token } => {
                write!(f, "lock lost before the write (fencing token {token}); nothing written")
            }
        }
    }
}

struct FencedWrite;

impl JsonWorker for FencedWrite {
    type Input = Request;
    type Output = Value;
    type Error = Error;

    fn run(request: Request) -> Result<Value, Error> {
        let (resource, value, hold_ms, token_override, write_after_loss) = match request {
            Request::Read { resource } => return Ok(json!({ "record": Store::open()?.read(resource)? })),
            Request::Write { resource, value, hold_ms, token_override, write_after_loss } => {
                (resource, value, hold_ms, token_override, write_after_loss)
            }
        };
        let guard = lock(resource).acquire()?;
        let token = token_override.unwrap_or(guard.fencing_token());
        thread::sleep(Duration::from_millis(hold_ms)); // the work
        let written = match Store::open().and_then(|store| store.write(resource, token, &value)) {
            Err(e) if e.is_lost() && write_after_loss => {
                warn!("lock lost; writing anyway with token {token} (the bug this example shows)");
                drop(guard); // acknowledges the loss: the job's calls reach the database again
                let written = Store::open()?.write(resource, token, &value)?;
                return Ok(json!({ "lost": true, "token": token, "outcome": written }));
            }
            Err(e) if e.is_lost() => return Err(Error::LostBeforeWrite { token }),
            written => written?,
        };
        guard.release()?;
        Ok(json!({ "token": token, "outcome": written }))
    }
}

export_worker!(json FencedWrite);

/// What the store keeps per resource.
#[derive(Serialize, Deserialize)]
struct Record {
    /// The highest fencing token of any write it has accepted.
    highest_token: u64,
    value: String,
}

/// What a write came to.
#[derive(Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
enum Written {
    Accepted,
    /// The store has seen a newer token than the write's.
    Refused {
        highest_token: u64,
    },
}

/// The downstream store: a record per resource in bucket "fenced-store".
///
/// It stands in for a system outside pinlock (a database, an object store,
/// an API) that checks the token and writes in one atomic step, like
/// `UPDATE records SET value = $2, token = $1 WHERE id = $3 AND token <= $1`.
/// Here the check and the write run under a lock of the store's own, on an
/// entity of its own, so they are atomic whatever the writer's lock is.
struct Store(Bucket);

impl Store {
    fn open() -> Result<Self, Error> {
        Ok(Self(Bucket::open("fenced-store")?))
    }

    fn read(&self, resource: Uuid) -> Result<Option<Record>, Error> {
        Ok(self.0.get_json(&resource.to_string())?)
    }

    /// Accepts the write unless the store has seen a newer token.
    fn write(&self, resource: Uuid, token: u64, value: &str) -> Result<Written, Error> {
        lock(Entity::named(&format!("fenced-store:{resource}"))).run(|_| {
            if let Some(record) = self.read(resource)?
                && token < record.highest_token
            {
                return Ok(Written::Refused { highest_token: record.highest_token });
            }
            self.0.set_json(&resource.to_string(), &Record { highest_token: token, value: value.to_owned() })?;
            Ok(Written::Accepted)
        })
    }
}
