//! The singleton worker under a real host, from plain `cargo test`:
//! `pinlock::testing` builds this crate for wasm32-wasip2, loads it, and runs
//! jobs against the test database (see `pinlock::testing::database_url`).
//!
//! Run from the repository root: `cargo test --release -p singleton`.

use std::path::PathBuf;
use std::sync::OnceLock;

use pinlock::runtime::JobError;
use pinlock::testing::{TestError, TestHost, WorkerBuild};
use serde::Deserialize;
use serde_json::json;

/// What a job answers (the worker's JSON output, typed).
#[derive(Debug, Deserialize)]
struct Outcome {
    ran: bool,
    date: String,
    reason: Option<String>,
    fencing_token: Option<u64>,
    done_by: Option<u64>,
}

/// This crate's component, built once per test binary
/// (`cargo build --release --target wasm32-wasip2`, in `target/pinlock-workers`).
fn component() -> &'static PathBuf {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| WorkerBuild::new(env!("CARGO_MANIFEST_DIR")).build().expect("build the singleton worker"))
}

/// A date no other test run has used: the "done" marker lives in the database.
fn fresh_date() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
    format!("test-{}-{nanos}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_many_concurrent_jobs_does_the_work() {
    let host = TestHost::new().await.expect("test host");
    let worker = host.load(component()).expect("load singleton.wasm");
    let date = fresh_date();

    // Twelve jobs at once, each working 300 ms if it gets the lock.
    let inputs = vec![json!({ "date": date, "work_ms": 300 }); 12];
    let outcomes: Vec<Outcome> = host
        .run_json_concurrently(&worker, &inputs)
        .await
        .into_iter()
        .collect::<Result<_, TestError>>()
        .expect("every job succeeds");
    let winners: Vec<&Outcome> = outcomes.iter().filter(|o| o.ran).collect();
    assert_eq!(winners.len(), 1, "exactly one job does the work: {outcomes:?}");
    let token = winners[0].fencing_token.expect("the winner reports its fencing token");
    for skipped in outcomes.iter().filter(|o| !o.ran) {
        assert_eq!(skipped.date, date);
        match skipped.reason.as_deref() {
            Some("another job is running it") => {}
            Some("already done") => assert_eq!(skipped.done_by, Some(token)),
            other => panic!("unexpected reason {other:?} in {skipped:?}"),
        }
    }

    // A job that starts later the same "day" finds the marker and skips.
    let later: Outcome = host.run_json(&worker, &json!({ "date": date })).await.expect("later job");
    assert!(!later.ran, "{later:?}");
    assert_eq!(later.reason.as_deref(), Some("already done"));
    assert_eq!(later.done_by, Some(token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_fails_the_job_with_a_clear_error() {
    let host = TestHost::new().await.expect("test host");
    let worker = host.load(component()).expect("load singleton.wasm");
    let error = host.run_json::<_, Outcome>(&worker, &json!({ "when": "today" })).await.expect_err("refused");
    match error.job_error() {
        Some(JobError::Failed(message)) => assert!(message.contains("when"), "{message}"),
        _ => panic!("expected a failed job, got {error}"),
    }
}
