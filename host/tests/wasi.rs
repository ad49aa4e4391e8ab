//! The standard interfaces, driven by components that know nothing of
//! pinlock: `pinlock-test-wasi-kv` (a counter written against
//! `wasi:keyvalue@0.2.0-draft2` and `wasi:logging` only) and
//! `pinlock-test-wasi-lock` (the `wasi:distributed-lock@0.1.0` draft), both
//! WASI commands built with wit-bindgen from the WIT files in `host/wit/`.
//! And what a host refuses at load: imports it does not serve.
//!
//! - the counter counts exactly under concurrency, with `increment` and with
//!   a compare-and-swap loop, in the same table pinlock's own interface uses;
//! - a stale `cas` handle fails its swap, and the handle it returns succeeds;
//! - batches and `list-keys` pages cover a bucket, in order;
//! - pinlock's errors arrive as the standard's (`no-such-store`,
//!   `access-denied`, `other("<pinlock case>: …")`);
//! - a standard write after the job's session was lost is fenced, like a
//!   pinlock one;
//! - a draft lease ends after its TTL while its job still runs, and another
//!   job takes the lock then; a lease longer than the job does not;
//! - a draft lock on a key and a pinlock lock on `Entity::named(key)` exclude
//!   each other;
//! - components importing an unknown interface or version are refused at
//!   load, naming it and listing what the host serves; every served
//!   interface (and an older compatible version) loads.

mod common;

use std::sync::OnceLock;

use common::*;
use pinlock::db::Database;
use pinlock::runtime::{JobOutcome, SERVED_INTERFACES, Worker, WorkerError};
use pinlock_guest::Entity;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn kv_guest() -> &'static Worker {
    static WORKER: OnceLock<Worker> = OnceLock::new();
    WORKER.get_or_init(|| {
        runtime().load_file(guest_path("pinlock-test-wasi-kv.wasm").as_ref()).expect("the wasi:keyvalue guest loads")
    })
}

fn lock_guest() -> &'static Worker {
    static WORKER: OnceLock<Worker> = OnceLock::new();
    WORKER.get_or_init(|| {
        runtime().load_file(guest_path("pinlock-test-wasi-lock.wasm").as_ref()).expect("the draft-lock guest loads")
    })
}

/// Runs `worker` once with `request` on stdin; its stdout as JSON.
async fn run(worker: &Worker, db: &std::sync::Arc<Database>, request: Value) -> Value {
    output(&run_outcome(worker, db, request).await)
}

async fn run_outcome(worker: &Worker, db: &std::sync::Arc<Database>, request: Value) -> JobOutcome {
    let input = serde_json::to_vec(&request).expect("request json");
    runtime().run_job(worker, db.job_session(), &input, &CancellationToken::new()).await
}

fn output(outcome: &JobOutcome) -> Value {
    let stdout = outcome.result.as_ref().unwrap_or_else(|e| panic!("job failed: {e}"));
    serde_json::from_slice(stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout:?}"))
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4().simple())
}

/// 40 jobs, 8 at a time, each add 1 with `atomics.increment` and 1 with a
/// compare-and-swap loop: both counters end at exactly 40, in `pinlock.kv`,
/// where pinlock's own interface reads them too. (The CAS twin below shows
/// the swap really compares.)
#[tokio::test(flavor = "multi_thread")]
async fn a_standard_keyvalue_counter_counts_exactly_under_concurrency() {
    let imports = kv_guest().imports();
    assert!(imports.iter().all(|i| i.starts_with("wasi:")), "standard interfaces only: {imports:?}");
    assert!(imports.iter().any(|i| i == "wasi:keyvalue/atomics@0.2.0-draft2"), "{imports:?}");
    let db = database().await;
    let observer = observer().await;
    let (bucket, key) = (unique("wasi-counter"), "visits".to_owned());
    let jobs: Vec<_> = (0..40)
        .map(|_| {
            let (db, request) = (db.clone(), json!({"op": "count", "bucket": bucket, "key": key}));
            tokio::spawn(async move { run(kv_guest(), &db, request).await })
        })
        .collect();
    let mut seen = Vec::new();
    for job in jobs {
        let answer = job.await.expect("job");
        assert!(answer["incremented"].is_i64(), "{answer}");
        seen.push(answer["incremented"].as_i64().unwrap_or(0));
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=40).collect::<Vec<_>>(), "every increment saw its own value");
    assert_eq!(stored_value(&observer, &bucket, "visits").await.as_deref(), Some(&b"40"[..]));
    assert_eq!(stored_value(&observer, &bucket, "visits-cas").await.as_deref(), Some(&b"40"[..]));
    // pinlock's own interface reads what the standard one wrote.
    let outcome = run_script(&db, json!([{"op": "kv_get", "bucket": bucket, "key": "visits"}])).await;
    assert_eq!(results(&outcome)[0], json!({"value": "40"}));
}

/// A swap whose handle another write made stale fails with `cas-failed`; the
/// fresh handle it returns sees the other write and swaps.
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_cas_handle_fails_and_the_fresh_one_swaps() {
    let db = database().await;
    let answer = run(kv_guest(), &db, json!({"op": "stale-cas", "bucket": unique("wasi-cas"), "key": "k"})).await;
    assert_eq!(answer["seen"], "first", "the handle holds the value it was made on");
    assert_eq!(answer["first_swap"], "cas-failed", "{answer}");
    assert_eq!(answer["fresh_current"], "intruder");
    assert_eq!(answer["second_swap"], true);
    assert_eq!(answer["value"], "mine");
}

/// 2300 keys through `set-many`, `get-many`, `list-keys` (three pages of at
/// most 1000, in order) and `delete-many`; a key of another bucket with the
/// same prefix is not listed.
#[tokio::test(flavor = "multi_thread")]
async fn batches_and_key_pages_cover_a_bucket() {
    let db = database().await;
    let observer = observer().await;
    let bucket = unique("wasi-batch");
    observer
        .execute("INSERT INTO pinlock.kv (bucket, key, value) VALUES ($1, 'k00000', 'x')", &[&unique("other")])
        .await
        .expect("a key in another bucket");
    let answer = run(kv_guest(), &db, json!({"op": "batch", "bucket": bucket, "prefix": "k", "n": 2300})).await;
    assert_eq!(answer["got"], json!([["k00000", "k00000"], ["kmissing", null]]), "{answer}");
    assert_eq!(answer["listed"], 2300);
    assert_eq!(answer["pages"], 3);
    assert_eq!(answer["in_order"], true);
    assert_eq!(answer["left"], 0);
}

/// Bad bucket names are `no-such-store`, buckets outside a worker's grant
/// `access-denied` (the granted one opens), and pinlock's `invalid-input`
/// is `other("invalid-input: …")`.
#[tokio::test(flavor = "multi_thread")]
async fn pinlock_errors_arrive_as_the_standard_ones() {
    let db = database().await;
    let answer = run(kv_guest(), &db, json!({"op": "open", "bucket": ""})).await;
    assert_eq!(answer["error"], "no-such-store");

    let bucket = unique("wasi-errors");
    run(kv_guest(), &db, json!({"op": "stale-cas", "bucket": bucket, "key": "word"})).await;
    let answer = run(kv_guest(), &db, json!({"op": "increment", "bucket": bucket, "key": "word", "delta": 1})).await;
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("other: invalid-input: cannot add 1 to the value under \"word\""), "{answer}");
    let answer = run(kv_guest(), &db, json!({"op": "increment", "bucket": bucket, "key": "n", "delta": 5})).await;
    assert_eq!(answer, json!({"value": 5}), "the control: an integer value increments");

    let mut granted = runtime().load_file(guest_path("pinlock-test-wasi-kv.wasm").as_ref()).expect("loads");
    granted.set_buckets(Some(vec!["public".into()]));
    let answer = run(&granted, &db, json!({"op": "open", "bucket": "secret"})).await;
    assert_eq!(answer["error"], "access-denied");
    let answer = run(&granted, &db, json!({"op": "open", "bucket": "public"})).await;
    assert_eq!(answer, json!({"opened": true}));
}

/// Fail closed through the standard interfaces: the session under a draft
/// lock is terminated while the job sleeps; its next `wasi:keyvalue` write
/// answers `lost` and reaches no database, the release reports the lease
/// gone, and then the job may write again. The twin without the kill
/// writes both values on its one session.
#[tokio::test(flavor = "multi_thread")]
async fn a_standard_write_after_a_lost_session_is_fenced() {
    for kill in [true, false] {
        let db = database().await;
        let observer = observer().await;
        let (bucket, name) = (unique("wasi-fenced"), unique("fenced"));
        let key = key_of(&observer, Entity::named(&name).uuid()).await;
        let request = json!({"op": "fenced-write", "key": name, "ttl": 60_000, "wait_ms": 700, "bucket": bucket});
        let job = {
            let db = db.clone();
            tokio::spawn(async move { run(lock_guest(), &db, request).await })
        };
        let rows = wait_for_locks(&observer, key, |rows| !rows.is_empty()).await;
        assert_eq!(rows.len(), 1, "the draft lock is a pinlock lock on Entity::named(key)");
        if kill {
            observer.execute("SELECT pg_terminate_backend($1)", &[&rows[0].pid]).await.expect("terminate");
        }
        let answer = job.await.expect("job");
        if kill {
            assert!(answer["late"].as_str().unwrap_or_default().starts_with("other: lost: "), "{answer}");
            assert!(answer["release"].as_str().unwrap_or_default().starts_with("lease-expired: lost: "), "{answer}");
        } else {
            assert_eq!(answer["late"], "ok");
            assert_eq!(answer["release"], "ok");
        }
        assert_eq!(answer["after"], "ok", "{answer}");
        assert_eq!(stored_value(&observer, &bucket, &name).await.as_deref(), Some(&b"after"[..]));
    }
}

/// A lease of 300 ms held by a job that sleeps 1.5 s: the host ends it after
/// its TTL, another job takes the lock while the first still runs, and the
/// first job's release says the lease expired. The twin with a TTL longer
/// than the job: the other job gets the lock only once the holder released
/// it, and that release succeeds (a second one is `already-released`).
#[tokio::test(flavor = "multi_thread")]
async fn a_lease_ends_after_its_ttl_while_its_job_still_runs() {
    for ttl in [300u64, 20_000] {
        let db = database().await;
        let observer = observer().await;
        let name = unique("lease");
        let key = key_of(&observer, Entity::named(&name).uuid()).await;
        let holder = {
            let (db, request) = (db.clone(), json!({"op": "hold", "key": name, "ttl": ttl, "hold_ms": 1500}));
            tokio::spawn(async move { run(lock_guest(), &db, request).await })
        };
        wait_for_locks(&observer, key, |rows| !rows.is_empty()).await;
        let taker = run(lock_guest(), &db, json!({"op": "take", "key": name, "ttl": 60_000, "max_ms": 5000})).await;
        let holder = holder.await.expect("holder");
        let (held_from, holder_ended) = (holder["acquired_at"].as_u64(), holder["ended_at"].as_u64());
        let (Some(held_from), Some(holder_ended), Some(taken_at)) =
            (held_from, holder_ended, taker["acquired_at"].as_u64())
        else {
            panic!("holder {holder}, taker {taker}");
        };
        assert!(taker["refusals"].as_u64().unwrap_or(0) > 0, "the taker was refused while the lease ran: {taker}");
        if ttl == 300 {
            assert!(taken_at >= held_from + 250, "taken {} ms into a 300 ms lease", taken_at - held_from);
            assert!(taken_at < holder_ended, "taken while the holder still ran");
            let release = holder["release"].as_str().unwrap_or_default();
            assert!(release.starts_with("lease-expired: the lease of 300 ms ran out"), "{holder}");
            assert!(holder["release_again"].as_str().unwrap_or_default().starts_with("lease-expired"), "{holder}");
        } else {
            assert!(taken_at >= held_from + 1500, "taken {} ms into a 1.5 s hold", taken_at - held_from);
            assert_eq!(holder["release"], "ok");
            assert!(holder["release_again"].as_str().unwrap_or_default().starts_with("already-released"), "{holder}");
        }
        assert_eq!(taker["release"], "ok");
    }
}

/// A draft lock on a key is pinlock's exclusive lock on `Entity::named(key)`:
/// while a pinlock job holds that entity, the draft job is refused and gets
/// it once the holder's job ends. The control: a draft lock on another key
/// is granted at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_draft_lock_and_a_pinlock_lock_on_the_same_name_exclude_each_other() {
    let db = database().await;
    let observer = observer().await;
    let name = unique("shared-name");
    let entity = Entity::named(&name).uuid();
    let key = key_of(&observer, entity).await;
    let holder = spawn_script(&db, json!([{"op": "acquire", "entity": entity}, {"op": "sleep", "ms": 600}]));
    wait_for_locks(&observer, key, |rows| !rows.is_empty()).await;
    let held_since = unix_ms();
    let other = run(lock_guest(), &db, json!({"op": "take", "key": unique("other"), "ttl": 1000, "max_ms": 0})).await;
    assert_eq!(other["refusals"], 0, "another key is free: {other}");
    assert!(other["acquired_at"].is_u64(), "{other}");
    let taker = run(lock_guest(), &db, json!({"op": "take", "key": name, "ttl": 1000, "max_ms": 5000})).await;
    assert!(taker["refusals"].as_u64().unwrap_or(0) > 0, "refused while the pinlock job held it: {taker}");
    let taken_at = taker["acquired_at"].as_u64().unwrap_or_else(|| panic!("never taken: {taker}"));
    assert!(taken_at >= held_since + 300, "taken {} ms into a 600 ms hold", taken_at - held_since);
    assert!(holder.await.expect("holder").result.is_ok());
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64
}

/// A component made from WIT text with wit-component: a dummy core module
/// with the world `fixture`'s imports and exports, encoded as a component.
/// The text may use the packages of the host's WIT files when
/// `with_real_wit`.
fn component(world_wit: &str, with_real_wit: bool) -> Vec<u8> {
    use wit_component::{ComponentEncoder, StringEncoding};
    use wit_parser::{LiftLowerAbi, ManglingAndAbi, Resolve};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut resolve = Resolve::default();
    if with_real_wit {
        resolve.push_dir(root.join("wit")).expect("host/wit parses");
        resolve.push_dir(root.join("../guest-sdk/wit")).expect("guest-sdk/wit parses");
    }
    let package = resolve.push_str("fixture.wit", world_wit).expect("fixture WIT parses");
    let world = resolve.select_world(&[package], Some("fixture")).expect("world fixture");
    let mut module = wit_component::dummy_module(&resolve, world, ManglingAndAbi::Legacy(LiftLowerAbi::Sync));
    wit_component::embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8, false)
        .expect("embed the world");
    ComponentEncoder::default().validate(true).module(&module).expect("module").encode().expect("encode")
}

/// The fixture world importing `imports` (from `packages`, written inline,
/// or else from the host's WIT files) and exporting pinlock's `run`.
fn importing(imports: &str, packages: &str) -> Vec<u8> {
    let with_real_wit = packages.is_empty();
    component(
        &format!(
            "package test:fixture;
         {packages}
         world fixture {{
             {imports}
             export run: func(input: list<u8>) -> result<list<u8>, string>;
         }}"
        ),
        with_real_wit,
    )
}

fn refused_import(bytes: &[u8]) -> (String, String) {
    match runtime().load(bytes) {
        Err(err @ WorkerError::UnknownImport { .. }) => {
            let message = err.to_string();
            let WorkerError::UnknownImport { import } = err else { unreachable!() };
            (import, message)
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("loaded"),
    }
}

/// An import of an interface the host does not serve, or of a version it
/// does not know, is refused at load, naming the import and listing what
/// the host serves. The controls: an older compatible version of pinlock's
/// interfaces, and the served draft, load.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_imports_and_versions_are_refused_at_load() {
    let old_draft = importing(
        "import wasi:keyvalue/store@0.2.0-draft;",
        "package wasi:keyvalue@0.2.0-draft { interface store { open: func(identifier: string); } }",
    );
    let old_pinlock = importing(
        "import pinlock:host/logging@0.1.0;",
        "package pinlock:host@0.1.0 { interface logging { log: func(message: string); } }",
    );
    let foreign = importing(
        "import acme:queue/jobs@1.0.0;",
        "package acme:queue@1.0.0 { interface jobs { next: func() -> option<string>; } }",
    );
    for (bytes, name) in [
        (old_draft, "wasi:keyvalue/store@0.2.0-draft"),
        (old_pinlock, "pinlock:host/logging@0.1.0"),
        (foreign, "acme:queue/jobs@1.0.0"),
    ] {
        let (import, message) = refused_import(&bytes);
        assert_eq!(import, name);
        assert!(message.contains(&format!("imports {name}, which this host does not serve")), "{message}");
        assert!(message.contains("wasi:keyvalue/store@0.2.0-draft2"), "lists what is served: {message}");
        assert!(message.contains("pinlock:host/key-value@0.2.1"), "{message}");
    }

    // A served name with another shape is refused in wasmtime's words.
    let reshaped = importing(
        "import wasi:keyvalue/store@0.2.0-draft2;",
        "package wasi:keyvalue@0.2.0-draft2 { interface store { open: func(identifier: string) -> u32; } }",
    );
    match runtime().load(&reshaped) {
        Err(WorkerError::WrongWorld(message)) => {
            assert!(message.contains("wasi:keyvalue/store@0.2.0-draft2"), "{message}")
        }
        other => panic!("expected a type mismatch, got {:?}", other.err()),
    }

    // Controls: a component built for pinlock:host@0.2.0 (before 0.2.1
    // added functions) loads on a 0.2.1 host.
    let v020 = importing(
        "import pinlock:host/logging@0.2.0; import pinlock:host/key-value@0.2.0;",
        "package pinlock:host@0.2.0 {
             interface logging {
                 enum level { trace, debug, info, warn, error }
                 log: func(level: level, message: string);
             }
             interface key-value {
                 variant error { lost, unavailable(string), no-such-store, invalid-input(string), other(string) }
                 resource bucket { get: func(key: string) -> result<option<list<u8>>, error>; }
                 open: func(identifier: string) -> result<bucket, error>;
             }
         }",
    );
    let worker = runtime().load(&v020).expect("a 0.2.0 worker loads");
    assert!(worker.imports().iter().any(|import| import == "pinlock:host/key-value@0.2.0"));
}

/// Every interface listed as served loads, built from the real WIT files;
/// and every interface the WIT files' worlds import is listed. So the list
/// in the refusal message and the linker cannot drift apart.
#[tokio::test(flavor = "multi_thread")]
async fn every_served_interface_loads_and_every_wit_import_is_served() {
    for served in SERVED_INTERFACES {
        let bytes = importing(&format!("import {served};"), "");
        if let Err(err) = runtime().load(&bytes) {
            panic!("{served} is listed as served but does not load: {err}");
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut resolve = wit_parser::Resolve::default();
    let (standard, _) = resolve.push_dir(root.join("wit")).expect("host/wit");
    let (pinlock, _) = resolve.push_dir(root.join("../guest-sdk/wit")).expect("guest-sdk/wit");
    for (package, world) in [(standard, "standard"), (pinlock, "worker")] {
        let world = resolve.select_world(&[package], Some(world)).expect("world");
        for (key, _) in &resolve.worlds[world].imports {
            let wit_parser::WorldKey::Interface(id) = key else { continue };
            let name = resolve.id_of(*id).expect("named interface");
            assert!(SERVED_INTERFACES.contains(&name.as_str()), "{name} is imported by a served world but not listed");
        }
    }
}
