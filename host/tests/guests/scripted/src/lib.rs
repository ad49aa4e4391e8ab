//! Test fixture: a worker that runs a script of steps, so host tests can make
//! a job do anything, including misbehave.
//!
//! Input `{"steps":[...]}`, output `{"results":[...]}` with one result per
//! step. Each granted lock goes into a new slot, numbered from 0 in grant
//! order, which later steps name. Lock and key-value failures are step
//! results (`{"err":"<code>"}`); a malformed script, an empty slot and the
//! `fail` step fail the job.

use std::{
    thread,
    time::{Duration, Instant},
};

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
    Fail {
        message: String,
    },
    Panic,
    Spin,
    Oom,
    Log {
        message: String,
    },
    Echo,
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
                match request.acquire() {
                    Ok(guard) => self.granted(guard),
                    Err(e) => lock_err(&e),
                }
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
                json!({ "held": held })
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
            Step::Log { message } => {
                log::info(&message);
                json!({ "logged": true })
            }
            Step::Echo => json!({ "echo": true }),
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
        kv::KvError::Other(_) => "other",
        kv::KvError::NotUtf8(_) => "not-utf8",
    };
    json!({ "err": code })
}
