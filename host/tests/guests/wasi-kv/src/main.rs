//! Test fixture: a counter written for any host of `wasi:keyvalue@0.2.0-draft2`
//! and `wasi:logging` (Spin, wasmCloud, pinlock), with wit-bindgen and the
//! standard WIT files only: no pinlock SDK, no pinlock WIT. A WASI command:
//! one JSON request on stdin, one JSON answer on stdout.
//!
//! Requests (`{"op": ..., "bucket": ..., ...}`):
//! - `count` (`key`): +1 on `key` with `atomics.increment`, and +1 on
//!   `key-cas` with a compare-and-swap loop; logs both.
//! - `stale-cas` (`key`): a swap whose handle another write made stale
//!   must fail, and the retry with the handle it returns must succeed.
//! - `batch` (`prefix`, `n`): `set-many` of `n` keys, `get-many`, every
//!   key through `list-keys` pages, `delete-many`.
//! - `increment` (`key`, `delta`): one increment, as it is.
//! - `open`: only opens the bucket.
//! A store error is an answer (`{"error": "<case>[: text]"}`), not a failure.

use std::io::Read;

use serde_json::{Value, json};

wit_bindgen::generate!({
    inline: "
        package pinlock-test:wasi-kv;
        world counter {
            include wasi:keyvalue/imports@0.2.0-draft2;
            import wasi:logging/logging@0.1.0-draft;
        }
    ",
    path: ["../../../wit/deps/keyvalue-2024-10-17", "../../../wit/deps/logging"],
    world: "pinlock-test:wasi-kv/counter",
    generate_all,
});

use wasi::keyvalue::{atomics, batch, store};
use wasi::logging::logging::{Level, log};

fn main() {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).expect("stdin");
    let request: Value = serde_json::from_str(&input).expect("a JSON request");
    let answer = answer(&request).unwrap_or_else(|error| json!({ "error": describe(&error) }));
    println!("{answer}");
}

fn answer(request: &Value) -> Result<Value, store::Error> {
    let text = |name: &str| request[name].as_str().unwrap_or_default().to_owned();
    let bucket = store::open(&text("bucket"))?;
    Ok(match request["op"].as_str().unwrap_or_default() {
        "count" => count(&bucket, &text("key"))?,
        "stale-cas" => stale_cas(&bucket, &text("key"))?,
        "batch" => batch_round(&bucket, &text("prefix"), request["n"].as_u64().unwrap_or(0))?,
        "increment" => {
            json!({ "value": atomics::increment(&bucket, &text("key"), request["delta"].as_i64().unwrap_or(0))? })
        }
        "open" => json!({ "opened": true }),
        other => json!({ "error": format!("unknown op {other:?}") }),
    })
}

fn count(bucket: &store::Bucket, key: &str) -> Result<Value, store::Error> {
    let incremented = atomics::increment(bucket, key, 1)?;
    let cas_key = format!("{key}-cas");
    let mut cas = atomics::Cas::new(bucket, &cas_key)?;
    let mut retries = 0;
    let counted = loop {
        let next = match cas.current()? {
            Some(bytes) => String::from_utf8_lossy(&bytes).parse::<u64>().unwrap_or(0) + 1,
            None => 1,
        };
        match atomics::swap(cas, next.to_string().as_bytes()) {
            Ok(()) => break next,
            Err(atomics::CasError::CasFailed(fresh)) => {
                retries += 1;
                cas = fresh;
            }
            Err(atomics::CasError::StoreError(error)) => return Err(error),
        }
    };
    log(Level::Info, "counter", &format!("{key} = {incremented}, {cas_key} = {counted} after {retries} retries"));
    Ok(json!({ "incremented": incremented, "cas": counted, "cas_retries": retries }))
}

fn stale_cas(bucket: &store::Bucket, key: &str) -> Result<Value, store::Error> {
    bucket.set(key, b"first")?;
    let cas = atomics::Cas::new(bucket, key)?;
    let seen = cas.current()?;
    bucket.set(key, b"intruder")?;
    let (first_swap, fresh) = match atomics::swap(cas, b"mine") {
        Ok(()) => ("ok", None),
        Err(atomics::CasError::CasFailed(fresh)) => ("cas-failed", Some(fresh)),
        Err(atomics::CasError::StoreError(error)) => return Err(error),
    };
    let mut answer = json!({ "seen": seen.map(lossy), "first_swap": first_swap });
    if let Some(fresh) = fresh {
        answer["fresh_current"] = json!(fresh.current()?.map(lossy));
        answer["second_swap"] = json!(atomics::swap(fresh, b"mine").is_ok());
    }
    answer["value"] = json!(bucket.get(key)?.map(lossy));
    Ok(answer)
}

fn batch_round(bucket: &store::Bucket, prefix: &str, n: u64) -> Result<Value, store::Error> {
    let keys: Vec<String> = (0..n).map(|i| format!("{prefix}{i:05}")).collect();
    for chunk in keys.chunks(500) {
        let pairs: Vec<(String, Vec<u8>)> = chunk.iter().map(|key| (key.clone(), key.as_bytes().to_vec())).collect();
        batch::set_many(bucket, &pairs)?;
    }
    let probe = vec![keys.first().cloned().unwrap_or_default(), format!("{prefix}missing")];
    let got: Vec<Value> =
        batch::get_many(bucket, &probe)?.into_iter().map(|(key, value)| json!([key, value.map(lossy)])).collect();
    let (mut listed, mut pages, mut cursor) = (Vec::new(), 0, None);
    loop {
        let page = bucket.list_keys(cursor.as_deref())?;
        pages += 1;
        listed.extend(page.keys.into_iter().filter(|key| key.starts_with(prefix)));
        cursor = page.cursor;
        if cursor.is_none() {
            break;
        }
    }
    let in_order = listed == keys;
    for chunk in keys.chunks(500) {
        batch::delete_many(bucket, chunk)?;
    }
    let left = keys.iter().filter(|key| bucket.exists(key).unwrap_or(true)).count();
    log(Level::Debug, "batch", &format!("{n} keys in {pages} pages"));
    Ok(json!({ "got": got, "listed": listed.len(), "pages": pages, "in_order": in_order, "left": left }))
}

fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

fn describe(error: &store::Error) -> String {
    match error {
        store::Error::NoSuchStore => "no-such-store".into(),
        store::Error::AccessDenied => "access-denied".into(),
        store::Error::Other(text) => format!("other: {text}"),
    }
}
