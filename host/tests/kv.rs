//! The key-value calls beyond get/set/delete/exists, on the real database
//! through [`pinlock::db::JobSession`] (the lock engine's own session), and
//! through pinlock's WIT interface from the scripted guest:
//!
//! - `increment` never loses an update across concurrent jobs (the twin: a
//!   read-then-write in the same interleaving loses one);
//! - `increment` refuses a value that is not an integer, and an overflow,
//!   changing nothing;
//! - compare-and-swap stores only over the expected value, and counts
//!   exactly under concurrency;
//! - batches: order, missing keys, last value wins, limits, all or none;
//! - `list-keys` pages through a bucket, in order, and only that bucket;
//! - after the session under a job's lock is lost, every new call is fenced
//!   until the lost grant is released.

mod common;

use std::sync::Arc;

use common::*;
use pinlock::db::{Database, JobSession, KvError, LIST_PAGE, LockMode, MAX_BATCH};
use serde_json::json;
use uuid::Uuid;

fn fresh_bucket(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4().simple())
}

/// Jobs that each add 1 to one counter, `rounds` times, all at once.
async fn count_concurrently(db: &Arc<Database>, bucket: &str, jobs: usize, rounds: usize) {
    let tasks: Vec<_> = (0..jobs)
        .map(|_| {
            let (job, bucket) = (db.job_session(), bucket.to_owned());
            tokio::spawn(async move {
                for _ in 0..rounds {
                    job.kv_increment(&bucket, "n", 1).await.expect("increment");
                    cas_increment(&job, &bucket, "n-cas").await;
                }
                job.release_all().await;
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("job");
    }
}

/// +1 by read, compute, compare-and-swap, retried until it swaps.
async fn cas_increment(job: &JobSession, bucket: &str, key: &str) {
    loop {
        let before = job.kv_get(bucket, key).await.expect("get");
        let n: u64 = before.as_deref().map_or(0, |b| String::from_utf8_lossy(b).parse().expect("a number"));
        let next = (n + 1).to_string();
        if job.kv_compare_and_swap(bucket, key, before.as_deref(), next.as_bytes()).await.expect("cas") {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn increment_and_compare_and_swap_never_lose_an_update() {
    let db = database().await;
    let observer = observer().await;
    let bucket = fresh_bucket("kv-count");
    count_concurrently(&db, &bucket, 16, 25).await;
    assert_eq!(stored_value(&observer, &bucket, "n").await.as_deref(), Some(&b"400"[..]));
    assert_eq!(stored_value(&observer, &bucket, "n-cas").await.as_deref(), Some(&b"400"[..]));

    // The twin: two jobs read, then both write the +1 they computed — the
    // interleaving that loses an update without an atomic step.
    let (a, b) = (db.job_session(), db.job_session());
    a.kv_set(&bucket, "naive", b"0").await.expect("set");
    let read_a = a.kv_get(&bucket, "naive").await.expect("get").expect("value");
    let read_b = b.kv_get(&bucket, "naive").await.expect("get").expect("value");
    for (job, read) in [(&a, read_a), (&b, read_b)] {
        let next = String::from_utf8_lossy(&read).parse::<u64>().expect("n") + 1;
        job.kv_set(&bucket, "naive", next.to_string().as_bytes()).await.expect("set");
    }
    assert_eq!(stored_value(&observer, &bucket, "naive").await.as_deref(), Some(&b"1"[..]), "one update lost");
    // The same interleaving with compare-and-swap: the second swap is refused.
    let before = a.kv_get(&bucket, "naive").await.expect("get");
    assert!(a.kv_compare_and_swap(&bucket, "naive", before.as_deref(), b"2").await.expect("cas"));
    assert!(!b.kv_compare_and_swap(&bucket, "naive", before.as_deref(), b"2").await.expect("cas"));
}

#[tokio::test(flavor = "multi_thread")]
async fn increment_refuses_what_is_not_an_integer_and_changes_nothing() {
    let db = database().await;
    let job = db.job_session();
    let bucket = fresh_bucket("kv-increment");
    assert_eq!(job.kv_increment(&bucket, "fresh", -3).await, Ok(-3), "a missing key counts as 0");
    assert_eq!(job.kv_get(&bucket, "fresh").await, Ok(Some(b"-3".to_vec())), "stored as decimal text");
    for (value, why) in
        [(&b"seven"[..], "invalid input syntax"), (&i64::MAX.to_string().into_bytes()[..], "out of range")]
    {
        job.kv_set(&bucket, "bad", value).await.expect("set");
        match job.kv_increment(&bucket, "bad", 1).await {
            Err(KvError::InvalidInput(message)) => {
                assert!(message.starts_with("cannot add 1 to the value under \"bad\""), "{message}");
                assert!(message.contains(why), "{message}");
            }
            other => panic!("expected invalid input, got {other:?}"),
        }
        assert_eq!(job.kv_get(&bucket, "bad").await, Ok(Some(value.to_vec())), "unchanged");
    }
    // The session is fine after a refused value: the job goes on.
    job.kv_set(&bucket, "bad", b"41").await.expect("set");
    assert_eq!(job.kv_increment(&bucket, "bad", 1).await, Ok(42));
}

#[tokio::test(flavor = "multi_thread")]
async fn compare_and_swap_stores_only_over_the_expected_value() {
    let db = database().await;
    let job = db.job_session();
    let bucket = fresh_bucket("kv-cas");
    let cas = |expected: Option<&'static [u8]>, value: &'static [u8]| {
        let (job, bucket) = (job.clone(), bucket.clone());
        async move { job.kv_compare_and_swap(&bucket, "k", expected, value).await.expect("cas") }
    };
    assert!(cas(None, b"a").await, "absent, expected absent: stores");
    assert!(!cas(None, b"b").await, "present, expected absent: refused");
    assert!(!cas(Some(b"x"), b"b").await, "another value: refused");
    assert_eq!(job.kv_get(&bucket, "k").await, Ok(Some(b"a".to_vec())));
    assert!(cas(Some(b"a"), b"b").await, "the expected value: stores");
    assert_eq!(job.kv_get(&bucket, "k").await, Ok(Some(b"b".to_vec())));
    assert!(!job.kv_compare_and_swap(&bucket, "gone", Some(b"b"), b"c").await.expect("cas"), "absent: refused");
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_keep_order_and_limits_and_write_all_or_none() {
    let db = database().await;
    let job = db.job_session();
    let bucket = fresh_bucket("kv-batch");
    let entries: Vec<(String, Vec<u8>)> =
        [("a", "1"), ("b", "2"), ("a", "3")].iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect();
    job.kv_set_many(&bucket, &entries).await.expect("set many");
    let keys: Vec<String> = ["b", "missing", "a"].iter().map(|k| k.to_string()).collect();
    assert_eq!(
        job.kv_get_many(&bucket, &keys).await,
        Ok(vec![Some(b"2".to_vec()), None, Some(b"3".to_vec())]),
        "in the order asked, the last value of a repeated key"
    );
    assert_eq!(job.kv_get_many(&bucket, &[]).await, Ok(vec![]));

    // One bad pair refuses the whole batch: nothing of it is written.
    let bad = vec![("c".to_owned(), b"4".to_vec()), (String::new(), b"5".to_vec())];
    assert!(matches!(job.kv_set_many(&bucket, &bad).await, Err(KvError::InvalidInput(_))));
    assert_eq!(job.kv_exists(&bucket, "c").await, Ok(false));
    let too_many: Vec<String> = (0..=MAX_BATCH).map(|i| format!("k{i}")).collect();
    assert!(matches!(job.kv_get_many(&bucket, &too_many).await, Err(KvError::InvalidInput(_))));
    assert!(matches!(job.kv_delete_many(&bucket, &too_many).await, Err(KvError::InvalidInput(_))));

    job.kv_delete_many(&bucket, &keys).await.expect("delete many");
    assert_eq!(job.kv_get_many(&bucket, &keys).await, Ok(vec![None, None, None]));
}

#[tokio::test(flavor = "multi_thread")]
async fn key_pages_cover_one_bucket_in_order() {
    let db = database().await;
    let job = db.job_session();
    let (bucket, other) = (fresh_bucket("kv-list"), fresh_bucket("kv-list-other"));
    let mut keys: Vec<String> = (0..2 * LIST_PAGE + 7).map(|i| format!("key-{i:06}")).collect();
    for chunk in keys.chunks(MAX_BATCH) {
        let entries: Vec<(String, Vec<u8>)> = chunk.iter().map(|k| (k.clone(), b"v".to_vec())).collect();
        job.kv_set_many(&bucket, &entries).await.expect("set many");
    }
    job.kv_set(&other, "key-000000", b"other").await.expect("set");
    let (mut listed, mut pages, mut cursor) = (Vec::new(), Vec::new(), None);
    loop {
        let page = job.kv_list_keys(&bucket, cursor.as_deref()).await.expect("list");
        pages.push(page.keys.len());
        listed.extend(page.keys);
        cursor = page.cursor;
        if cursor.is_none() {
            break;
        }
    }
    keys.sort();
    assert_eq!(pages, vec![LIST_PAGE, LIST_PAGE, 7]);
    assert_eq!(listed, keys, "every key once, in order, none of the other bucket");
    let empty = job.kv_list_keys(&fresh_bucket("kv-list-empty"), None).await.expect("list");
    assert!(empty.keys.is_empty() && empty.cursor.is_none());
}

/// The new calls are fenced like the old ones: after the session under a
/// held lock is terminated, each answers `lost` without reaching the
/// database until the lost grant is released. The twin without the kill
/// goes through.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_loss_every_new_call_is_fenced_until_the_release() {
    for kill in [true, false] {
        let Setup { db, observer, entity, key } = setup().await;
        let job = db.job_session();
        let bucket = fresh_bucket("kv-fenced");
        let grant = job.acquire(entity, LockMode::Exclusive, None).await.expect("acquire");
        if kill {
            let rows = locks_on(&observer, key).await;
            observer.execute("SELECT pg_terminate_backend($1)", &[&rows[0].pid]).await.expect("terminate");
            // The connection notices the terminated backend.
            for _ in 0..200 {
                if !job.is_held(grant.id).await {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
        let keys = vec!["a".to_owned()];
        let results = [
            job.kv_increment(&bucket, "n", 1).await.err(),
            job.kv_compare_and_swap(&bucket, "c", None, b"x").await.err(),
            job.kv_set_many(&bucket, &[("a".to_owned(), b"1".to_vec())]).await.err(),
            job.kv_get_many(&bucket, &keys).await.err(),
            job.kv_delete_many(&bucket, &keys).await.err(),
            job.kv_list_keys(&bucket, None).await.err(),
        ];
        let expected = if kill { Some(KvError::Lost) } else { None };
        assert!(results.iter().all(|r| *r == expected), "kill {kill}: {results:?}");
        let released = job.release(grant.id).await;
        assert_eq!(released.is_err(), kill, "the release reports the loss");
        assert_eq!(job.kv_increment(&bucket, "n", 1).await, Ok(if kill { 1 } else { 2 }), "then calls go through");
        job.release_all().await;
        let written = stored_value(&observer, &bucket, "c").await;
        assert_eq!(written.is_some(), !kill, "nothing of the fenced calls was written");
    }
}

/// The same calls through pinlock's own WIT interface, from a guest.
#[tokio::test(flavor = "multi_thread")]
async fn a_guest_uses_them_through_pinlocks_interface() {
    let db = database().await;
    let bucket = fresh_bucket("kv-guest");
    let outcome = run_script(
        &db,
        json!([
            {"op": "kv_increment", "bucket": bucket, "key": "n", "delta": 5},
            {"op": "kv_increment", "bucket": bucket, "key": "n", "delta": -2},
            {"op": "kv_cas", "bucket": bucket, "key": "c", "expected": null, "value": "one"},
            {"op": "kv_cas", "bucket": bucket, "key": "c", "expected": "zero", "value": "two"},
            {"op": "kv_cas", "bucket": bucket, "key": "c", "expected": "one", "value": "two"},
            {"op": "kv_set_many", "bucket": bucket, "entries": [["x", "1"], ["y", "2"]]},
            {"op": "kv_get_many", "bucket": bucket, "keys": ["y", "nope", "c", "n"]},
            {"op": "kv_keys", "bucket": bucket},
            {"op": "kv_delete_many", "bucket": bucket, "keys": ["x", "y"]},
            {"op": "kv_keys", "bucket": bucket},
            {"op": "kv_increment", "bucket": bucket, "key": "c", "delta": 1},
        ]),
    )
    .await;
    let steps = results(&outcome);
    assert_eq!(steps[0], json!({"value": 5}));
    assert_eq!(steps[1], json!({"value": 3}));
    assert_eq!(steps[2], json!({"swapped": true}));
    assert_eq!(steps[3], json!({"swapped": false}));
    assert_eq!(steps[4], json!({"swapped": true}));
    assert_eq!(steps[6], json!({"values": ["2", null, "two", "3"]}));
    assert_eq!(steps[7], json!({"keys": ["c", "n", "x", "y"]}));
    assert_eq!(steps[9], json!({"keys": ["c", "n"]}));
    assert_eq!(steps[10], json!({"err": "invalid-input"}));
}
