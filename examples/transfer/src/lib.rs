//! Transfer: move an amount between two accounts, holding both accounts'
//! locks, taken in one fixed order (by UUID) so that two opposite transfers
//! never deadlock. `"reverse_order": true` takes them in the opposite order,
//! to show the `deadlock` error and the retry it calls for. See README.md.

use std::{
    fmt, thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use pinlock_guest::{JsonWorker, LockError, Uuid, export_worker, kv::Bucket, kv::KvError, lock, warn};
use serde::Deserialize;
use serde_json::{Value, json};

/// Balances: bucket "accounts", account UUID → balance (a JSON number).
const BUCKET: &str = "accounts";

#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
enum Request {
    /// Adds `amount` to `account`.
    Deposit { account: Uuid, amount: u64 },
    /// Reads the balance of `account` (0 when it has none).
    Balance { account: Uuid },
    /// Moves `amount` from `from` to `to`.
    Transfer {
        from: Uuid,
        to: Uuid,
        amount: u64,
        /// Lock the two accounts in the opposite of the fixed order.
        #[serde(default)]
        reverse_order: bool,
        /// Pause after taking the first lock, to make the race visible.
        #[serde(default)]
        think_ms: u64,
        /// Retries after a deadlock before giving up.
        #[serde(default = "default_max_retries")]
        max_retries: u32,
    },
}

fn default_max_retries() -> u32 {
    5
}

/// What can go wrong: a lock or a key-value call. `lock(..).run(..)` works
/// with any error type that a `LockError` converts into.
#[derive(Debug)]
enum Error {
    Lock(LockError),
    Kv(KvError),
    Invalid(&'static str),
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

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Lock(e) => e.fmt(f),
            Self::Kv(e) => e.fmt(f),
            Self::Invalid(message) => f.write_str(message),
        }
    }
}

struct Transfer;

impl JsonWorker for Transfer {
    type Input = Request;
    type Output = Value;
    type Error = Error;

    fn run(request: Request) -> Result<Value, Error> {
        match request {
            Request::Deposit { account, amount } => lock(account).run(|_| {
                let accounts = Bucket::open(BUCKET)?;
                let balance = balance(&accounts, account)?.checked_add(amount).ok_or(Error::Invalid("overflow"))?;
                accounts.set_json(&account.to_string(), &balance)?;
                Ok(json!({ "account": account, "balance": balance }))
            }),
            Request::Balance { account } => {
                let balance = lock(account).shared().run(|_| balance(&Bucket::open(BUCKET)?, account))?;
                Ok(json!({ "account": account, "balance": balance }))
            }
            Request::Transfer { from, to, amount, reverse_order, think_ms, max_retries } => {
                if from == to {
                    return Err(Error::Invalid("from and to are the same account"));
                }
                // The fixed order: smaller UUID first. Any total order works,
                // as long as every job uses the same one.
                let (first, second) = if (from < to) != reverse_order { (from, to) } else { (to, from) };
                let think = Duration::from_millis(think_ms);
                let mut retries = 0;
                loop {
                    match transfer(from, to, amount, first, second, think) {
                        Err(Error::Lock(LockError::Deadlock)) if retries < max_retries => {
                            retries += 1;
                            let backoff = backoff(retries);
                            warn!("deadlock locking {first} then {second}; retry {retries} in {backoff:?}");
                            thread::sleep(backoff);
                        }
                        Err(Error::Lock(LockError::Deadlock)) => {
                            return Err(Error::Invalid("deadlock on every attempt; gave up"));
                        }
                        Err(e) => return Err(e),
                        Ok(mut output) => {
                            output["retries"] = json!(retries);
                            output["lock_order"] = json!([first, second]);
                            return Ok(output);
                        }
                    }
                }
            }
        }
    }
}

export_worker!(json Transfer);

/// One attempt, holding both locks. A deadlock can only happen on the
/// second lock; it releases the first on its way out.
fn transfer(from: Uuid, to: Uuid, amount: u64, first: Uuid, second: Uuid, think: Duration) -> Result<Value, Error> {
    lock(first).run(|_| {
        thread::sleep(think);
        lock(second).run(|_| {
            let accounts = Bucket::open(BUCKET)?;
            let (from_balance, to_balance) = (balance(&accounts, from)?, balance(&accounts, to)?);
            if from_balance < amount {
                return Ok(
                    json!({ "transferred": false, "reason": "insufficient funds", "from_balance": from_balance }),
                );
            }
            let to_after = to_balance.checked_add(amount).ok_or(Error::Invalid("overflow"))?;
            // Two writes, each atomic on its own; both locks are held across them.
            accounts.set_json(&from.to_string(), &(from_balance - amount))?;
            accounts.set_json(&to.to_string(), &to_after)?;
            Ok(json!({ "transferred": true, "from_balance": from_balance - amount, "to_balance": to_after }))
        })
    })
}

fn balance(accounts: &Bucket, account: Uuid) -> Result<u64, Error> {
    Ok(accounts.get_json(&account.to_string())?.unwrap_or(0))
}

/// 25 ms, 50 ms, 100 ms, … (at most 1.6 s), plus up to half again of jitter
/// so that the two jobs of a cycle do not retry in step.
fn backoff(retry: u32) -> Duration {
    let base = 25u64 << retry.saturating_sub(1).min(6);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos() as u64).unwrap_or(0);
    Duration::from_millis(base + nanos % (base / 2 + 1))
}
