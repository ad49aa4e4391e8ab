//! `pinlock serve` on real parts: real `pinlock serve` processes on loopback
//! against the real database, driven over HTTP with a blocking client (the
//! harness is `common/serve.rs`).
//!
//! Each test makes a database of its own (`pinlock_serve_<uuid>` on the test
//! server, dropped at the end), so tests running in parallel never claim each
//! other's jobs, and starts its own hosts from a configuration in a temporary
//! folder that serves the scripted fixture as worker `scripted`. Every host
//! is killed when its guard drops, so a failed assertion leaves no process
//! behind.

mod common;

use std::time::{Duration, Instant};

use common::serve::*;
use serde_json::{Value, json};
use uuid::Uuid;

fn sleep_steps(ms: u64) -> Value {
    json!([{ "op": "sleep", "ms": ms }])
}

// ---------------------------------------------------------------------------
// 1. The API.

/// Proves the API round trips on one real host: submit (202 + id) then get
/// until `succeeded` with the guest's output; a synchronous run (200 with the
/// output); list by worker and state; cancel a scheduled job (`cancelled` at
/// once) and a running one holding a lock (stopped well before its 10 s
/// sleep, its advisory lock gone from pg_locks, and shown in `/v1/locks`
/// with its entity while it ran); `/v1/workers`, the probes and `/metrics`;
/// a unique key submitted twice gives one job; a failing job with
/// `max_attempts: 2` is retried once after a backoff, then `failed`.
#[test]
fn the_api_round_trips_on_a_real_host() {
    let mut fx = Fixture::new(&config("", "", ""));
    fx.start(1);
    let (db, host) = (&fx.db, &fx.hosts[0]);
    let api = host.api();

    for probe in ["/livez", "/readyz"] {
        let answer = api.get(probe);
        assert_eq!((answer.status, answer.text.as_str()), (200, "ok"), "{probe}");
    }

    // Started first: its retry backoff runs while the rest is checked.
    let failing = api.submit(json!([{ "op": "fail", "message": "x" }]), json!({ "max_attempts": 2 }));

    // Submit, then get until succeeded.
    let entity = Uuid::new_v4();
    let answer = api.post(
        "/v1/jobs",
        &json!({ "worker": "scripted", "input": { "steps": [{ "op": "acquire", "entity": entity }, { "op": "echo" }] } }),
    );
    assert_eq!(answer.status, 202, "{}", answer.text);
    assert_eq!(answer.body["duplicate"], false);
    assert_eq!(answer.body["state"], "queued");
    let submitted = answer.body["id"].as_i64().expect("id");
    let job = api.wait_state(submitted, "succeeded", Duration::from_secs(15));
    let results = job["output"]["results"].as_array().expect("scripted output").clone();
    assert!(results[0]["ok"]["fence"].as_u64().is_some(), "the lock was granted: {job}");
    assert_eq!(results[1], json!({ "echo": true }));
    assert_eq!(job["attempt"], 1);
    assert_eq!(job["host"], host.name.as_str());
    assert_eq!(job["worker"], "scripted");
    assert!(job["finished_at"].is_string(), "{job}");

    // Synchronous run.
    let answer = api.post("/v1/jobs/run", &json!({ "worker": "scripted", "input": { "steps": [{ "op": "echo" }] } }));
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["state"], "succeeded");
    assert_eq!(answer.body["output"], json!({ "results": [{ "echo": true }] }));
    let ran = answer.body["id"].as_i64().expect("run id");
    assert_eq!(api.job(ran)["state"], "succeeded", "the synchronous run is recorded");

    // List by worker and state.
    let answer = api.get("/v1/jobs?worker=scripted&state=succeeded");
    assert_eq!(answer.status, 200, "{}", answer.text);
    let listed = answer.body["jobs"].as_array().expect("jobs").clone();
    let ids: Vec<i64> = listed.iter().filter_map(|j| j["id"].as_i64()).collect();
    assert!(ids.contains(&submitted) && ids.contains(&ran), "{ids:?}");
    assert!(listed.iter().all(|j| j["state"] == "succeeded" && j["worker"] == "scripted"));
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let answer = api.get("/v1/jobs?state=queued");
    assert!(answer.body["jobs"].as_array().expect("jobs").iter().all(|j| j["state"] == "queued"));

    // A scheduled job is cancelled at once.
    let later = api.submit(json!([{ "op": "echo" }]), json!({ "run_at": db.timestamp_in("1 hour") }));
    assert_eq!(api.job(later)["state"], "queued");
    let answer = api.post(&format!("/v1/jobs/{later}/cancel"), &json!({}));
    assert_eq!((answer.status, &answer.body["state"]), (200, &json!("cancelled")), "{}", answer.text);
    let job = api.job(later);
    assert_eq!(job["state"], "cancelled");
    assert_eq!(job["attempt"], 0, "it never ran");

    // A unique key: the second submit is the same job.
    let key = format!("order-{}", Uuid::new_v4());
    let first = api.post(
        "/v1/jobs",
        &json!({ "worker": "scripted", "input": { "steps": [] }, "unique_key": key, "run_at": db.timestamp_in("1 hour") }),
    );
    let second = api.post("/v1/jobs", &json!({ "worker": "scripted", "input": { "steps": [] }, "unique_key": key }));
    assert_eq!((first.status, second.status), (202, 202), "{} / {}", first.text, second.text);
    assert_eq!(first.body["duplicate"], false);
    assert_eq!(second.body["duplicate"], true);
    assert_eq!(first.body["id"], second.body["id"]);
    assert_eq!(db.count("SELECT count(*) FROM pinlock.jobs WHERE unique_key = $1", &[&key]), 1);

    // A running job holding a lock is cancelled: it stops and its lock goes.
    let entity = Uuid::new_v4();
    let lock_key = db.key(entity);
    let long = api.submit(json!([{ "op": "acquire", "entity": entity }, { "op": "sleep", "ms": 10_000 }]), json!({}));
    api.wait_state(long, "running", Duration::from_secs(10));
    let held = wait_for(Duration::from_secs(10), "the long job's lock", || {
        let rows = db.locks(lock_key);
        if rows.iter().any(|r| r.granted) { Ok(rows) } else { Err(format!("{rows:?}")) }
    });
    let answer = api.get("/v1/locks");
    assert_eq!(answer.status, 200, "{}", answer.text);
    let shown = answer.body["locks"].as_array().expect("locks").clone();
    let lock = shown.iter().find(|l| l["entity"] == entity.to_string()).unwrap_or_else(|| panic!("{shown:?}"));
    assert_eq!(lock["granted"], true);
    assert_eq!(lock["application"], host.name.as_str());
    assert_eq!(lock["pid"], held[0].pid);
    let answer = api.get("/v1/workers");
    assert_eq!(answer.status, 200, "{}", answer.text);
    let workers = answer.body["workers"].as_array().expect("workers").clone();
    assert_eq!(workers.len(), 1, "{workers:?}");
    assert_eq!(workers[0]["name"], "scripted");
    assert_eq!(workers[0]["running"], 1, "the long job runs: {workers:?}");
    assert_eq!(workers[0]["capabilities"], json!(["lock", "key-value", "logging"]));
    let asked = Instant::now();
    let answer = api.post(&format!("/v1/jobs/{long}/cancel"), &json!({}));
    assert_eq!((answer.status, &answer.body["state"]), (200, &json!("cancelling")), "{}", answer.text);
    let job = api.wait_state(long, "cancelled", Duration::from_secs(5));
    assert!(asked.elapsed() < Duration::from_secs(5), "stopped long before its 10 s sleep ended");
    assert!(job["finished_at"].is_string() && job["output"].is_null(), "{job}");
    let rows = wait_for(Duration::from_secs(5), "the cancelled job's lock to go", || {
        let rows = db.locks(lock_key);
        if rows.is_empty() { Ok(rows) } else { Err(format!("{rows:?}")) }
    });
    assert!(rows.is_empty());

    // Metrics, after jobs that waited for locks.
    let answer = api.get("/metrics");
    assert_eq!(answer.status, 200);
    for family in
        ["pinlock_jobs_total", "pinlock_lock_wait_seconds", "pinlock_queue_depth", "pinlock_job_duration_seconds"]
    {
        assert!(answer.text.contains(family), "{family} missing from:\n{}", answer.text);
    }
    assert!(
        answer.text.contains(r#"pinlock_jobs_total{worker="scripted",result="succeeded"} 2"#),
        "two succeeded jobs counted:\n{}",
        answer.text
    );
    let waits = answer
        .text
        .lines()
        .find_map(|l| l.strip_prefix("pinlock_lock_wait_seconds_count "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .expect("lock wait count");
    assert!(waits >= 2, "both lock grants observed: {waits}");

    // The failing job: retried once after a backoff (1 s ± 25 %), then failed.
    let job = api.wait_state(failing, "failed", Duration::from_secs(15));
    assert_eq!(job["attempt"], 2, "{job}");
    assert_eq!(job["max_attempts"], 2);
    assert!(job["error"].as_str().is_some_and(|e| e.contains('x')), "{job}");
    let took: f64 = db.rows(
        "SELECT extract(epoch FROM finished_at - created_at)::float8 FROM pinlock.jobs WHERE id = $1",
        &[&failing],
    )[0]
    .get(0);
    assert!((0.7..10.0).contains(&took), "the retry waited for its backoff: {took} s");
}

// ---------------------------------------------------------------------------
// 2. Bad requests and bad configurations.

const TOKEN: &str = "secret-token-1";

/// Proves bad requests get a 4xx with a stable JSON error code and enqueue
/// nothing: a missing, wrong or malformed bearer token (401, probes exempt),
/// an unknown worker (404 `unknown_worker`, naming what is served), malformed
/// JSON and unknown fields (400 `bad_json`), input over `max_input_bytes` and
/// a body over the limit (413 `too_large`), an unknown route (404), a bad job
/// id (400) and a bad state filter (400). A good request with the token goes
/// through, so the refusals are the checks' doing.
#[test]
fn bad_requests_are_refused_and_enqueue_nothing() {
    let mut fx = Fixture::new(&config(&format!("tokens = [{TOKEN:?}]\nmax_input_bytes = 256"), "", ""));
    fx.start(1);
    let (db, host) = (&fx.db, &fx.hosts[0]);
    let api = Api::new(&host.base, Some(TOKEN));
    let good = json!({ "worker": "scripted", "input": { "steps": [] }, "run_at": db.timestamp_in("1 hour") });

    // Auth.
    for (token, what) in [
        (None, "no token"),
        (Some("secret-token-2"), "a wrong token"),
        (Some("secret-token-1x"), "a longer token"),
        (Some("secret"), "a prefix"),
    ] {
        let answer = api.with_token(token).post("/v1/jobs", &good);
        assert_eq!((answer.status, answer.error_code()), (401, "unauthorized"), "{what}: {}", answer.text);
    }
    let answer = Api::new(&host.base, None).with_token(None).get("/v1/jobs");
    assert_eq!(answer.status, 401, "listing needs the token too");
    let raw = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let answer = Api::answer(
        raw.get(format!("{}/v1/jobs", host.base)).header("Authorization", TOKEN).call(),
        "token without Bearer",
    );
    assert_eq!(answer.status, 401, "the scheme is required: {}", answer.text);
    for path in ["/metrics", "/v1/workers", "/v1/locks"] {
        assert_eq!(api.with_token(None).get(path).status, 401, "{path}");
    }
    for probe in ["/livez", "/readyz"] {
        assert_eq!(api.with_token(None).get(probe).status, 200, "{probe} needs no token");
    }
    assert_eq!(db.jobs(), 0, "nothing enqueued without a token");

    // With the token a good submit goes through.
    let answer = api.post("/v1/jobs", &good);
    assert_eq!(answer.status, 202, "{}", answer.text);
    assert_eq!(db.jobs(), 1);

    let expect = |answer: Answer, status: u16, code: &str, what: &str| {
        assert_eq!((answer.status, answer.error_code()), (status, code), "{what}: {}", answer.text);
        assert!(answer.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: a message");
        answer
    };
    let answer = expect(
        api.post("/v1/jobs", &json!({ "worker": "nope", "input": {} })),
        404,
        "unknown_worker",
        "unknown worker",
    );
    assert!(answer.body["error"]["message"].as_str().is_some_and(|m| m.contains("nope") && m.contains("scripted")));
    expect(
        api.post("/v1/jobs/run", &json!({ "worker": "nope", "input": {} })),
        404,
        "unknown_worker",
        "run of an unknown worker",
    );
    expect(api.post_raw("/v1/jobs", "{\"worker\": \"scripted\", "), 400, "bad_json", "malformed JSON");
    expect(api.post_raw("/v1/jobs", ""), 400, "bad_json", "empty body");
    expect(api.post("/v1/jobs", &json!({ "worker": "scripted", "inptu": {} })), 400, "bad_json", "unknown field");
    expect(api.post("/v1/jobs", &json!({ "input": {} })), 400, "bad_json", "no worker");
    let big = json!({ "worker": "scripted", "input": { "steps": [], "pad": "p".repeat(1000) } });
    let answer = expect(api.post("/v1/jobs", &big), 413, "too_large", "oversize input");
    assert!(answer.body["error"]["message"].as_str().is_some_and(|m| m.contains("256")), "{}", answer.text);
    expect(api.post("/v1/jobs/run", &big), 413, "too_large", "oversize input of a run");
    let huge = json!({ "worker": "scripted", "input": { "pad": "p".repeat(80 * 1024) } });
    expect(api.post("/v1/jobs", &huge), 413, "too_large", "a body over the limit");
    expect(
        api.post("/v1/jobs", &json!({ "worker": "scripted", "input": {}, "max_attempts": 0 })),
        400,
        "bad_request",
        "max_attempts 0",
    );
    expect(
        api.post("/v1/jobs", &json!({ "worker": "scripted", "input": {}, "run_at": "tomorrow-ish" })),
        400,
        "bad_request",
        "a bad run_at",
    );
    expect(api.get("/v1/nope"), 404, "not_found", "unknown route");
    expect(api.with_token(None).get("/v1/nope"), 401, "unauthorized", "an unknown route still needs the token");
    expect(api.post("/v1/workers", &json!({})), 405, "method_not_allowed", "a known route, another method");
    expect(api.get("/v1/jobs/abc"), 400, "bad_request", "bad job id");
    expect(api.post("/v1/jobs/abc/cancel", &json!({})), 400, "bad_request", "bad job id to cancel");
    expect(api.get("/v1/jobs/987654321"), 404, "unknown_job", "no such job");
    expect(api.get("/v1/jobs?state=bogus"), 400, "bad_request", "bad state filter");
    expect(api.get("/v1/jobs?limit=many"), 400, "bad_request", "bad limit");
    assert_eq!(db.jobs(), 1, "no bad request enqueued anything");
}

/// Proves misconfigurations stop the process at start (non-zero exit, a
/// clear message): a non-loopback address without tokens, and a worker whose
/// capabilities lack `key-value` while the component imports it (the message
/// names the interface).
#[test]
fn misconfigurations_are_refused_at_start() {
    let fx = Fixture::new("");
    let dir = fx.config.parent().expect("config folder").to_owned();
    let refused = |name: &str, text: &str| -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write config");
        let mut command = pinlock_serve(&fx.db.url, &host_name());
        command.arg("--config").arg(&path).arg("--cache-dir").arg(cache_dir());
        let (mut process, _stdout) = Guarded::spawn(&mut command);
        let status = process.wait_exit(START_LIMIT).unwrap_or_else(|| panic!("{name}: still running"));
        // The stderr reader may lag the exit a little.
        std::thread::sleep(Duration::from_millis(100));
        let stderr = process.stderr();
        assert!(!status.success(), "{name}: must exit non-zero; stderr:\n{stderr}");
        stderr
    };

    // TEST-NET-1: never bound, even if the check were missing.
    let public = config("", "", "").replace("127.0.0.1:0", "192.0.2.1:0");
    let stderr = refused("public.toml", &public);
    assert!(stderr.contains("not loopback") && stderr.contains("server.tokens"), "{stderr}");

    let stderr = refused("no-kv.toml", &config("", "", "capabilities = [\"lock\", \"logging\"]"));
    assert!(stderr.contains("pinlock:host/key-value"), "names the interface: {stderr}");
    assert!(stderr.contains("worker scripted") && stderr.contains("\"key-value\""), "says what to grant: {stderr}");
    assert_eq!(
        fx.db.count("SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'pinlock'", &[]),
        0,
        "refused before touching the database"
    );
}

// ---------------------------------------------------------------------------
// 3. Several hosts.

/// Proves three hosts share one queue: 60 short jobs submitted through one
/// host's API all succeed, each exactly once, and were run by at least two
/// hosts (each may run only 2 at once, so one host cannot keep up alone);
/// another host's API shows them.
#[test]
fn three_hosts_share_the_queue() {
    let mut fx = Fixture::new(&config("", "", "concurrency = 2"));
    fx.start(3);
    let apis: Vec<Api> = fx.hosts.iter().map(Host::api).collect();
    // All through one host: the others can only get work from the queue.
    let ids: Vec<i64> = (0..60).map(|_| apis[0].submit(sleep_steps(50), json!({}))).collect();
    let db = &fx.db;
    wait_for(Duration::from_secs(30), "60 jobs to succeed", || {
        let done = db.count("SELECT count(*) FROM pinlock.jobs WHERE state = 'succeeded'", &[]);
        if done == 60 { Ok(()) } else { Err(format!("{done} succeeded")) }
    });
    assert_eq!(db.jobs(), 60, "no extra job");
    assert_eq!(db.count("SELECT count(*) FROM pinlock.jobs WHERE attempt <> 1", &[]), 0, "each ran once");
    let spread: Vec<(String, i64)> = db
        .rows("SELECT host, count(*) FROM pinlock.jobs GROUP BY host ORDER BY host", &[])
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    eprintln!("jobs per host: {spread:?}");
    assert!(spread.len() >= 2, "jobs spread across hosts: {spread:?}");
    let names: Vec<&str> = fx.hosts.iter().map(|h| h.name.as_str()).collect();
    assert!(spread.iter().all(|(h, _)| names.contains(&h.as_str())), "{spread:?}");
    assert_eq!(apis[1].job(ids[0])["state"], "succeeded", "any host shows any job");
}

// ---------------------------------------------------------------------------
// 4. A host dies.

/// Proves a host killed with SIGKILL mid-job loses nothing: its running jobs
/// (each holding a lock, sleeping 2 s) are rescued after their 3 s lease and
/// completed by the other host as attempt 2; every job succeeds; the dead
/// host's advisory locks are gone from pg_locks.
#[test]
fn a_killed_host_s_jobs_complete_elsewhere_after_the_lease() {
    let mut fx = Fixture::new(&config("", "lease_secs = 3", ""));
    fx.start(2);
    let api = fx.hosts[0].api();
    let entities: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let keys: Vec<i64> = entities.iter().map(|e| fx.db.key(*e)).collect();
    let ids: Vec<i64> = entities
        .iter()
        .map(|e| api.submit(json!([{ "op": "acquire", "entity": e }, { "op": "sleep", "ms": 2000 }]), json!({})))
        .collect();
    // Where each runs, once all hold their lock.
    let placed: Vec<String> = wait_for(Duration::from_secs(10), "every job running with its lock", || {
        let jobs: Vec<Value> = ids.iter().map(|id| api.job(*id)).collect();
        let locked = keys.iter().all(|k| fx.db.locks(*k).iter().any(|r| r.granted));
        if jobs.iter().all(|j| j["state"] == "running") && locked {
            Ok(jobs.iter().map(|j| j["host"].as_str().expect("host").to_owned()).collect())
        } else {
            Err(format!("{jobs:?}"))
        }
    });
    let victim = fx.hosts.iter().position(|h| h.name == placed[0]).expect("a host of ours");
    let survivor = 1 - victim;
    let victim_name = fx.hosts[victim].name.clone();
    let on_victim: Vec<usize> = (0..ids.len()).filter(|&i| placed[i] == victim_name).collect();
    let victim_pids: Vec<i32> =
        on_victim.iter().flat_map(|&i| fx.db.locks(keys[i])).filter(|r| r.granted).map(|r| r.pid).collect();
    assert_eq!(victim_pids.len(), on_victim.len(), "each of the victim's jobs holds its lock");
    assert_eq!(fx.db.advisory_locks_of(&victim_name), on_victim.len() as i64);

    let killed = Instant::now();
    fx.hosts[victim].kill9();

    let survivor_api = fx.hosts[survivor].api();
    let all_done = || fx.db.count("SELECT count(*) FROM pinlock.jobs WHERE state <> 'succeeded'", &[]) == 0;
    let deadline = Instant::now() + Duration::from_secs(25);
    while !all_done() {
        if Instant::now() > deadline {
            let jobs: Vec<String> = fx
                .db
                .rows("SELECT row_to_json(j)::text FROM (SELECT id, state, host, attempt, lease_expires_at, now() AS now, error FROM pinlock.jobs) j", &[])
                .iter()
                .map(|r| r.get(0))
                .collect();
            panic!(
                "the jobs did not all succeed within 25 s of the kill:\n{}\nsurvivor's log:\n{}",
                jobs.join("\n"),
                fx.hosts[survivor].process.stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for (i, id) in ids.iter().enumerate() {
        let job = survivor_api.wait_state(*id, "succeeded", Duration::from_secs(1));
        if on_victim.contains(&i) {
            assert_eq!(job["attempt"], 2, "rescued and run again: {job}");
            assert_eq!(job["host"], fx.hosts[survivor].name.as_str(), "{job}");
        } else {
            assert_eq!(job["attempt"], 1, "{job}");
        }
    }
    let rescued_after = killed.elapsed();
    assert!(rescued_after >= Duration::from_secs(3), "the rescue waited for the lease: {rescued_after:?}");
    assert_eq!(fx.db.jobs(), ids.len() as i64, "no job lost or duplicated");
    let stale =
        fx.db.count("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = ANY($1)", &[&victim_pids]);
    assert_eq!(stale, 0, "the dead host's locks are gone");
    assert_eq!(fx.db.advisory_locks_of(&victim_name), 0);
    for key in &keys {
        assert!(fx.db.locks(*key).is_empty(), "no lock left on {key}");
    }
}

// ---------------------------------------------------------------------------
// 5. Drain.

/// Proves a drain under load: SIGTERM makes the host's `/readyz` answer 503
/// at once; the process exits within its 1 s grace plus a few seconds; the
/// jobs it could not finish in the grace are given back (not counted as an
/// attempt) and completed by the other host; every job succeeds exactly once
/// and none ran on the drained host past the grace.
#[test]
fn a_draining_host_gives_back_its_jobs() {
    const GRACE_SECS: u64 = 1;
    let mut fx = Fixture::new(&config(&format!("drain_grace_secs = {GRACE_SECS}"), "", "concurrency = 4"));
    fx.start(2);
    let api = fx.hosts[1].api();
    let ids: Vec<i64> = (0..20).map(|_| api.submit(sleep_steps(1500), json!({}))).collect();
    let (db, drained) = (&fx.db, &fx.hosts[0]);
    // SIGTERM while the drained host runs jobs that started moments ago, so
    // that some cannot finish within the grace.
    wait_for(Duration::from_secs(10), "fresh jobs on the host to drain", || {
        let fresh = db.count(
            "SELECT count(*) FROM pinlock.jobs WHERE state = 'running' AND host = $1
                AND started_at > clock_timestamp() - interval '300 ms'",
            &[&drained.name],
        );
        if fresh > 0 { Ok(()) } else { Err("none".into()) }
    });
    let running: Vec<i64> = db
        .rows("SELECT id FROM pinlock.jobs WHERE state = 'running' AND host = $1", &[&drained.name])
        .iter()
        .map(|r| r.get(0))
        .collect();
    let sigterm_at: Value = db.rows("SELECT to_json(clock_timestamp())", &[])[0].get(0);
    let signalled = Instant::now();
    drained.sigterm();
    let drained_api = drained.api();
    wait_for(Duration::from_secs(1), "readyz to fail", || {
        let answer = drained_api.get("/readyz");
        if answer.status == 503 { Ok(()) } else { Err(format!("{} {}", answer.status, answer.text)) }
    });
    let unready_after = signalled.elapsed();
    assert!(unready_after < Duration::from_millis(900), "readiness failed at once: {unready_after:?}");
    let drained_name = drained.name.clone();
    let status = fx.hosts[0]
        .process
        .wait_exit(Duration::from_secs(GRACE_SECS + 5))
        .unwrap_or_else(|| panic!("the drained host still runs:\n{}", fx.hosts[0].process.stderr()));
    let exited_after = signalled.elapsed();
    assert!(status.success(), "a drain exits cleanly: {status}\n{}", fx.hosts[0].process.stderr());

    let other = fx.hosts[1].api();
    for id in &ids {
        other.wait_state(*id, "succeeded", Duration::from_secs(30));
    }
    assert_eq!(db.jobs(), ids.len() as i64, "no job lost or duplicated");
    assert_eq!(
        db.count("SELECT count(*) FROM pinlock.jobs WHERE attempt <> 1", &[]),
        0,
        "a given-back run is no attempt"
    );
    // What ran on the drained host at SIGTERM either finished there within
    // the grace or was given back and completed by the other host.
    let given_back =
        db.count("SELECT count(*) FROM pinlock.jobs WHERE id = ANY($1) AND host = $2", &[&running, &fx.hosts[1].name]);
    let finished_in_grace =
        db.count("SELECT count(*) FROM pinlock.jobs WHERE id = ANY($1) AND host = $2", &[&running, &drained_name]);
    assert!(given_back >= 1, "some unfinished job was given back: {running:?}");
    assert_eq!(given_back + finished_in_grace, running.len() as i64);
    let late = db.count(
        "SELECT count(*) FROM pinlock.jobs WHERE state = 'succeeded' AND host = $1
            AND finished_at > ($2::json #>> '{}')::timestamptz + make_interval(secs => $3)",
        &[&drained_name, &sigterm_at, &((GRACE_SECS + 1) as f64)],
    );
    assert_eq!(late, 0, "nothing ran past the grace on the drained host");
    assert_eq!(db.advisory_locks_of(&drained_name), 0);
    eprintln!(
        "drain: unready after {unready_after:?}, exited after {exited_after:?}; of {} running, {given_back} given back",
        running.len()
    );
}

// ---------------------------------------------------------------------------
// 6. Out of the box.

/// Proves `pinlock serve` with no configuration serves the embedded examples:
/// `/v1/workers` lists the examples (`inventory` among them), and a synchronous run of it answers.
#[test]
fn without_a_config_it_serves_the_embedded_examples() {
    let fx = Fixture::new("");
    let name = host_name();
    let mut command = pinlock_serve(&fx.db.url, &name);
    command.args(["--listen", "127.0.0.1:0", "--no-cache"]);
    let host = start_host(&name, &mut command);
    let api = host.api();
    let answer = api.get("/v1/workers");
    assert_eq!(answer.status, 200, "{}", answer.text);
    let names: Vec<&str> =
        answer.body["workers"].as_array().expect("workers").iter().filter_map(|w| w["name"].as_str()).collect();
    assert_eq!(names, ["fenced-write", "inventory", "report", "singleton", "transfer"]);
    let product = Uuid::new_v4();
    let answer = api.post(
        "/v1/jobs/run",
        &json!({ "worker": "inventory", "input": { "action": "restock", "product": product, "quantity": 3 } }),
    );
    assert_eq!((answer.status, &answer.body["state"]), (200, &json!("succeeded")), "{}", answer.text);
    assert_eq!(api.get("/readyz").status, 200);
    drop(host);
}
