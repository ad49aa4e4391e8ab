//! Test fixture: a worker that runs a script of steps, so host tests can make
//! a job do anything, including misbehave.
//!
//! Input `{"steps":[...]}`, output `{"results":[...]}` with one result per
//! step. Each granted lock goes into a new slot, numbered from 0 in grant
//! order, which later steps name. Lock and key-value failures are step
//! results (`{"err":"<code>"}`); a malformed script, an empty slot and the
//! `fail` step fail the job.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

/// Written by the `scribble` step; a new instance must find it 0 again.
static MARK: AtomicU64 = AtomicU64::new(0);

use pinlock_guest::{Guard, LockError, Mode, Uuid, Worker, export_worker, kv, lock, log};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Script {
    steps: Vec<Step>,
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Step {
    Acquire {
        entity: Uuid,
        #[serde(default)]
        mode: ModeArg,
        timeout_ms: Option<u64>,
    },
    Try {
        entity: Uuid,
        #[serde(default)]
        mode: ModeArg,
    },
    Release {
        slot: usize,
    },
    Drop {
        slot: usize,
    },
    IsHeld {
        slot: usize,
    },
    WaitUntilLost {
        slot: usize,
        max_ms: u64,
    },
    Sleep {
        ms: u64,
    },
    KvSet {
        bucket: String,
        key: String,
        value: String,
    },
    KvGet {
        bucket: String,
        key: String,
    },
    KvIncrement {
        bucket: String,
        key: String,
        delta: i64,
    },
    /// Compare-and-swap; `expected: null` means "only if absent".
    KvCas {
        bucket: String,
        key: String,
        expected: Option<String>,
        value: String,
    },
    KvGetMany {
        bucket: String,
        keys: Vec<String>,
    },
    KvSetMany {
        bucket: String,
        entries: Vec<(String, String)>,
    },
    KvDeleteMany {
        bucket: String,
        keys: Vec<String>,
    },
    /// Every key of the bucket, through `Bucket::keys` (page by page).
    KvKeys {
        bucket: String,
    },
    Fail {
        message: String,
    },
    Panic,
    Spin,
    Oom,
    /// Reports what this instance's memory held before it wrote anything:
    /// a static's value and how many bytes of a fresh zeroed buffer of
    /// `bytes` are not zero. Then leaves a mark in both (the static, and a
    /// leaked buffer of `bytes` filled with 0xAB) for a later instance in the
    /// same slot to find, if memory were not reset between jobs.
    Scribble {
        bytes: usize,
    },
    Log {
        message: String,
    },
    /// Writes `lines` lines to stderr.
    Stderr {
        lines: u64,
    },
    Echo,
    /// Read-modify-write of a ledger (a JSON array of tokens under one key):
    /// under an exclusive lock on the ledger's entity (unless `unlocked`),
    /// read it, pause, write it back with this job's random token appended.
    /// The ledger is one of `ledgers`, picked by the token.
    Append {
        prefix: String,
        #[serde(default = "one")]
        ledgers: u64,
        bucket: String,
        #[serde(default)]
        pause_ms: u64,
        #[serde(default)]
        unlocked: bool,
        timeout_ms: Option<u64>,
    },
}

fn one() -> u64 {
    1
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

struct Scripted;

impl Worker for Scripted {
    fn run(input: Vec<u8>) -> Result<Vec<u8>, String> {
        let script: Script = serde_json::from_slice(&input).map_err(|e| format!("bad script: {e}"))?;
        let mut runner = Runner::default();
        let mut results = Vec::with_capacity(script.steps.len());
        for step in script.steps {
            results.push(runner.step(step)?);
        }
        serde_json::to_vec(&json!({ "results": results })).map_err(|e| e.to_string())
    }
}

export_worker!(Scripted);

/// The guards granted so far; `None` once released or dropped.
#[derive(Default)]
struct Runner {
    slots: Vec<Option<Guard>>,
}

impl Runner {
    /// Runs one step: its result, or the error that ends the job.
    fn step(&mut self, step: Step) -> Result<Value, String> {
        Ok(match step {
            Step::Acquire { entity, mode, timeout_ms } => {
                let request = lock(entity).mode(mode.into());
                let request = match timeout_ms {
                    Some(ms) => request.timeout(Duration::from_millis(ms)),
                    None => request,
                };
                let started = Instant::now();
                let mut result = match request.acquire() {
                    Ok(guard) => self.granted(guard),
                    Err(e) => lock_err(&e),
                };
                result["waited_ms"] = json!(started.elapsed().as_millis() as u64);
                result
            }
            Step::Try { entity, mode } => match lock(entity).mode(mode.into()).try_acquire() {
                Ok(Some(guard)) => self.granted(guard),
                Ok(None) => json!({ "none": true }),
                Err(e) => lock_err(&e),
            },
            Step::Release { slot } => match self.take(slot)?.release() {
                Ok(()) => json!({ "released": true }),
                Err(e) => lock_err(&e),
            },
            Step::Drop { slot } => {
                drop(self.take(slot)?);
                json!({ "dropped": true })
            }
            Step::IsHeld { slot } => json!({ "held": self.guard(slot)?.is_held() }),
            Step::WaitUntilLost { slot, max_ms } => {
                let guard = self.guard(slot)?;
                let deadline = Instant::now() + Duration::from_millis(max_ms);
                let held = loop {
                    let held = guard.is_held();
                    if !held || Instant::now() >= deadline {
                        break held;
                    }
                    thread::sleep(Duration::from_millis(10));
                };
                json!({ "held": held, "at_unix_ms": unix_ms() })
            }
            Step::Sleep { ms } => {
                thread::sleep(Duration::from_millis(ms));
                json!({ "slept": ms })
            }
            Step::KvSet { bucket, key, value } => {
                match kv::Bucket::open(&bucket).and_then(|b| b.set_string(&key, &value)) {
                    Ok(()) => json!({ "value": value }),
                    Err(e) => kv_err(&e),
                }
            }
            Step::KvGet { bucket, key } => match kv::Bucket::open(&bucket).and_then(|b| b.get_string(&key)) {
                Ok(value) => json!({ "value": value }),
                Err(e) => kv_err(&e),
            },
            Step::KvIncrement { bucket, key, delta } => {
                match kv::Bucket::open(&bucket).and_then(|b| b.increment(&key, delta)) {
                    Ok(value) => json!({ "value": value }),
                    Err(e) => kv_err(&e),
                }
            }
            Step::KvCas { bucket, key, expected, value } => {
                let expected = expected.as_ref().map(String::as_bytes);
                match kv::Bucket::open(&bucket).and_then(|b| b.compare_and_swap(&key, expected, value.as_bytes())) {
                    Ok(swapped) => json!({ "swapped": swapped }),
                    Err(e) => kv_err(&e),
                }
            }
            Step::KvGetMany { bucket, keys } => match kv::Bucket::open(&bucket).and_then(|b| b.get_many(&keys)) {
                Ok(values) => {
                    let values: Vec<Option<String>> =
                        values.into_iter().map(|v| v.map(|v| String::from_utf8_lossy(&v).into_owned())).collect();
                    json!({ "values": values })
                }
                Err(e) => kv_err(&e),
            },
            Step::KvSetMany { bucket, entries } => match kv::Bucket::open(&bucket).and_then(|b| b.set_many(&entries)) {
                Ok(()) => json!({ "set": entries.len() }),
                Err(e) => kv_err(&e),
            },
            Step::KvDeleteMany { bucket, keys } => match kv::Bucket::open(&bucket).and_then(|b| b.delete_many(&keys)) {
                Ok(()) => json!({ "deleted": keys.len() }),
                Err(e) => kv_err(&e),
            },
            Step::KvKeys { bucket } => {
                match kv::Bucket::open(&bucket).and_then(|b| b.keys().collect::<Result<Vec<_>, _>>()) {
                    Ok(keys) => json!({ "keys": keys }),
                    Err(e) => kv_err(&e),
                }
            }
            Step::Fail { message } => return Err(message),
            Step::Panic => panic!("scripted panic"),
            Step::Spin => loop {
                std::hint::black_box(());
            },
            Step::Oom => {
                let mut hoard = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![0xa5_u8; 1 << 20]));
                }
            }
            Step::Scribble { bytes } => {
                let before = MARK.load(Ordering::Relaxed);
                let fresh = vec![0_u8; bytes];
                let nonzero = std::hint::black_box(&fresh).iter().filter(|&&b| b != 0).count();
                MARK.store(0xDEAD_BEEF, Ordering::Relaxed);
                std::hint::black_box(vec![0xab_u8; bytes]).leak();
                json!({ "static_before": before, "nonzero": nonzero })
            }
            Step::Log { message } => {
                log::info(&message);
                json!({ "logged": true })
            }
            Step::Echo => json!({ "echo": true }),
            Step::Stderr { lines } => {
                for i in 0..lines {
                    eprintln!("chatty guest line {i} of {lines}");
                }
                json!({ "wrote": lines })
            }
            Step::Append { prefix, ledgers, bucket, pause_ms, unlocked, timeout_ms } => {
                append(&prefix, ledgers, &bucket, pause_ms, unlocked, timeout_ms)
            }
        })
    }

    fn granted(&mut self, guard: Guard) -> Value {
        let fence = guard.fencing_token();
        self.slots.push(Some(guard));
        json!({ "ok": { "slot": self.slots.len() - 1, "fence": fence } })
    }

    fn guard(&self, slot: usize) -> Result<&Guard, String> {
        self.slots.get(slot).and_then(Option::as_ref).ok_or_else(|| format!("slot {slot} holds no guard"))
    }

    fn take(&mut self, slot: usize) -> Result<Guard, String> {
        self.slots.get_mut(slot).and_then(Option::take).ok_or_else(|| format!("slot {slot} holds no guard"))
    }
}

/// Milliseconds since the Unix epoch (the host's wall clock).
fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// See [`Step::Append`]. `{"appended":{"ledger":..,"token":..,"position":..,
/// "release":..}}` once the write returned (so it committed), else
/// `{"err":..,"at":"lock"|"get"|"set"}`.
fn append(prefix: &str, ledgers: u64, bucket: &str, pause_ms: u64, unlocked: bool, timeout_ms: Option<u64>) -> Value {
    use std::hash::BuildHasher;
    let token = format!("{:016x}", std::collections::hash_map::RandomState::new().hash_one(unix_ms()));
    let ledger = format!("{prefix}-{}", u64::from_str_radix(&token[..8], 16).unwrap_or(0) % ledgers.max(1));
    let guard = if unlocked {
        None
    } else {
        let request = lock(pinlock_guest::Entity::named(&ledger));
        let request = match timeout_ms {
            Some(ms) => request.timeout(Duration::from_millis(ms)),
            None => request,
        };
        match request.acquire() {
            Ok(guard) => Some(guard),
            Err(e) => return json!({ "err": lock_err(&e)["err"], "at": "lock" }),
        }
    };
    let store = match kv::Bucket::open(bucket) {
        Ok(store) => store,
        Err(e) => return json!({ "err": kv_err(&e)["err"], "at": "open" }),
    };
    let mut tokens: Vec<String> = match store.get(&ledger) {
        Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
            Ok(tokens) => tokens,
            Err(e) => return json!({ "err": format!("corrupt ledger: {e}"), "at": "get" }),
        },
        Ok(None) => Vec::new(),
        Err(e) => return json!({ "err": kv_err(&e)["err"], "at": "get" }),
    };
    if pause_ms > 0 {
        thread::sleep(Duration::from_millis(pause_ms));
    }
    tokens.push(token.clone());
    let bytes = serde_json::to_vec(&tokens).unwrap_or_default();
    if let Err(e) = store.set(&ledger, &bytes) {
        return json!({ "err": kv_err(&e)["err"], "at": "set" });
    }
    let release = match guard.map(Guard::release) {
        None => "unlocked".to_owned(),
        Some(Ok(())) => "ok".to_owned(),
        Some(Err(e)) => lock_err(&e)["err"].as_str().unwrap_or("?").to_owned(),
    };
    json!({ "appended": { "ledger": ledger, "token": token, "position": tokens.len(), "release": release } })
}

fn lock_err(error: &LockError) -> Value {
    let code = match error {
        LockError::Timeout => "timeout",
        LockError::Deadlock => "deadlock",
        LockError::Lost => "lost",
        LockError::InvalidInput(_) => "invalid-input",
        LockError::LimitExceeded(_) => "limit-exceeded",
        LockError::Unavailable(_) => "unavailable",
    };
    json!({ "err": code })
}

fn kv_err(error: &kv::KvError) -> Value {
    let code = match error {
        kv::KvError::NoSuchStore => "no-such-store",
        kv::KvError::InvalidInput(_) => "invalid-input",
        kv::KvError::Lost => "lost",
        kv::KvError::Unavailable(_) => "unavailable",
        kv::KvError::Other(_) => "other",
        kv::KvError::NotUtf8(_) => "not-utf8",
        kv::KvError::Json { .. } => "not-json",
    };
    json!({ "err": code })
}
