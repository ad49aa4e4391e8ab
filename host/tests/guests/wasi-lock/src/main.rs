//! Test fixture: a job written for the WASI distributed-lock draft
//! (`wasi:distributed-lock@0.1.0`) and `wasi:keyvalue@0.2.0-draft2`, with
//! wit-bindgen and the standard WIT files only (no pinlock SDK). A WASI
//! command: one JSON request on stdin, one JSON answer on stdout.
//!
//! Requests (`{"op": ..., "key": ..., ...}`):
//! - `hold` (`ttl`, `hold_ms`): takes the lease, sleeps, releases it twice;
//!   answers when it got it, how each release went and when it ended.
//! - `take` (`ttl`, `max_ms`): tries every 20 ms until it gets the lease
//!   (answers when, in Unix ms) or `max_ms` passes; then releases it.
//! - `fenced-write` (`ttl`, `wait_ms`, `bucket`): takes the lease, sleeps
//!   (the test may end its session meanwhile), writes `late`, releases,
//!   writes `after`; answers each step.

use std::io::Read;
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

wit_bindgen::generate!({
    inline: "
        package pinlock-test:wasi-lock;
        world job {
            include wasi:distributed-lock/imports@0.1.0;
            import wasi:keyvalue/store@0.2.0-draft2;
        }
    ",
    path: ["../../../wit/deps/distributed-lock", "../../../wit/deps/keyvalue-2024-10-17"],
    world: "pinlock-test:wasi-lock/job",
    generate_all,
});

use wasi::distributed_lock::locker::acquire;
use wasi::distributed_lock::types::Error;
use wasi::keyvalue::store;

fn main() {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).expect("stdin");
    let request: Value = serde_json::from_str(&input).expect("a JSON request");
    let key = request["key"].as_str().unwrap_or_default();
    let ttl = request["ttl"].as_u64().unwrap_or(0) as u32;
    let ms = |name: &str| Duration::from_millis(request[name].as_u64().unwrap_or(0));
    let answer = match request["op"].as_str().unwrap_or_default() {
        "hold" => hold(key, ttl, ms("hold_ms")),
        "take" => take(key, ttl, ms("max_ms")),
        "fenced-write" => fenced_write(key, ttl, ms("wait_ms"), request["bucket"].as_str().unwrap_or_default()),
        other => json!({ "error": format!("unknown op {other:?}") }),
    };
    println!("{answer}");
}

fn hold(key: &str, ttl: u32, hold_ms: Duration) -> Value {
    let lock = match acquire(key, ttl) {
        Ok(lock) => lock,
        Err(error) => return json!({ "acquire": describe(&error) }),
    };
    let acquired_at = unix_ms();
    sleep(hold_ms);
    let release = outcome(lock.release());
    let release_again = outcome(lock.release());
    json!({ "acquired_at": acquired_at, "release": release, "release_again": release_again, "ended_at": unix_ms() })
}

fn take(key: &str, ttl: u32, max: Duration) -> Value {
    let started = Instant::now();
    let mut refusals = 0;
    loop {
        match acquire(key, ttl) {
            Ok(lock) => {
                let acquired_at = unix_ms();
                return json!({ "acquired_at": acquired_at, "refusals": refusals, "release": outcome(lock.release()) });
            }
            Err(Error::NotAcquired(_)) if started.elapsed() < max => {
                refusals += 1;
                sleep(Duration::from_millis(20));
            }
            Err(error) => return json!({ "acquire": describe(&error), "refusals": refusals }),
        }
    }
}

fn fenced_write(key: &str, ttl: u32, wait: Duration, bucket: &str) -> Value {
    let lock = match acquire(key, ttl) {
        Ok(lock) => lock,
        Err(error) => return json!({ "acquire": describe(&error) }),
    };
    let store = match store::open(bucket) {
        Ok(store) => store,
        Err(error) => return json!({ "open": format!("{error:?}") }),
    };
    sleep(wait);
    let late = store.set(key, b"late").map_err(|e| store_error(&e));
    let release = outcome(lock.release());
    let after = store.set(key, b"after").map_err(|e| store_error(&e));
    json!({ "late": written(late), "release": release, "after": written(after) })
}

fn written(result: Result<(), String>) -> Value {
    match result {
        Ok(()) => json!("ok"),
        Err(error) => json!(error),
    }
}

fn outcome(result: Result<(), Error>) -> String {
    match result {
        Ok(()) => "ok".into(),
        Err(error) => describe(&error),
    }
}

fn describe(error: &Error) -> String {
    match error {
        Error::NotAcquired(text) => format!("not-acquired: {text}"),
        Error::LeaseExpired(text) => format!("lease-expired: {text}"),
        Error::AlreadyReleased(text) => format!("already-released: {text}"),
        Error::Unknown(text) => format!("unknown: {text}"),
    }
}

fn store_error(error: &store::Error) -> String {
    match error {
        store::Error::NoSuchStore => "no-such-store".into(),
        store::Error::AccessDenied => "access-denied".into(),
        store::Error::Other(text) => format!("other: {text}"),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
