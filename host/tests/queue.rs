//! The job queue's statements against real PostgreSQL, without a server:
//! enqueue (unique keys, run_at, unknown workers), batched claim within
//! per-worker and total limits, finish (each outcome, fenced by host and
//! attempt), retries with backoff, lease renewal and rescue, cancel, prune,
//! listing, depth and notices.

mod common;

use std::time::Duration;

use pinlock::db::{Database, DbConfig, DbSettings};
use pinlock::queue::{Finished, NewJob, Notice, Outcome, Queue};
use serde_json::json;
use tokio_postgres::Client;
use uuid::Uuid;

/// A migrated database of its own (so no other test's hosts claim its jobs).
struct Fresh {
    admin: Client,
    name: String,
    config: DbConfig,
}

impl Fresh {
    async fn new() -> Self {
        let admin = common::observer().await;
        let name = format!("pinlock_queue_{}", Uuid::new_v4().simple());
        admin.execute(&format!("CREATE DATABASE {name}"), &[]).await.expect("create database");
        let config = DbConfig::parse(&format!("{} dbname={name}", common::database_url())).expect("url");
        Database::new(config.clone(), DbSettings::default()).migrate().await.expect("migrate");
        Self { admin, name, config }
    }

    async fn queue(&self, host: &str, workers: &[&str]) -> Queue {
        let queue = Queue::new(self.config.clone(), host);
        let names: Vec<String> = workers.iter().map(|w| w.to_string()).collect();
        queue.register_workers(&names).await.expect("register");
        queue
    }

    async fn drop_database(self) {
        self.admin.execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name), &[]).await.expect("drop database");
    }
}

fn job(worker: &str) -> NewJob {
    NewJob { worker: worker.into(), input: json!({"n": 1}), run_at: None, max_attempts: 3, unique_key: None }
}

fn finished(id: i64, attempt: i32, outcome: Outcome) -> Finished {
    let output = (outcome == Outcome::Succeeded).then(|| b"{\"ok\":true}".to_vec());
    let error = (outcome != Outcome::Succeeded).then(|| "boom".to_owned());
    Finished { id, attempt, outcome, output, error }
}

const LEASE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn jobs_go_from_enqueue_through_claim_to_their_end() {
    let fresh = Fresh::new().await;
    let queue = fresh.queue("host-a", &["alpha", "beta"]).await;

    // Enqueue: ids in order; a unique key returns the same job; unknown workers are refused.
    let mut keyed = job("alpha");
    keyed.unique_key = Some("only-once".into());
    let ids = queue.enqueue(&[job("alpha"), job("alpha"), job("beta"), keyed.clone()]).await.expect("enqueue");
    assert!(ids.iter().all(|(_, duplicate)| !duplicate));
    assert_eq!(queue.enqueue(&[keyed]).await.expect("again"), vec![(ids[3].0, true)]);
    assert!(queue.enqueue(&[job("nobody")]).await.is_err(), "a worker no host serves is refused");
    let mut later = job("alpha");
    later.run_at = Some("2099-01-01T00:00:00Z".into());
    let later_id = queue.enqueue(&[later]).await.expect("scheduled")[0].0;
    let depth = queue.depth().await.expect("depth");
    assert_eq!(depth.iter().find(|d| d.worker == "alpha").map(|d| d.queued), Some(3), "{depth:?}");

    // Claim within limits: at most 2 alpha, at most 2 in all; the scheduled job is not due.
    let claimed = queue.claim(&[("alpha".into(), 2), ("beta".into(), 5)], 2, LEASE).await.expect("claim");
    assert_eq!(claimed.len(), 2);
    assert!(claimed.iter().all(|c| c.attempt == 1 && c.id != later_id));
    let rest = queue.claim(&[("alpha".into(), 5), ("beta".into(), 5)], 10, LEASE).await.expect("claim the rest");
    assert_eq!(rest.len(), 2, "two more due jobs");
    assert!(queue.claim(&[("alpha".into(), 5)], 5, LEASE).await.expect("nothing").is_empty());

    // Finish: succeeded keeps the output; an error is retried later (not claimable now);
    // a stale attempt is ignored; released goes back without counting.
    let [a, b] = [&claimed[0], &claimed[1]];
    let [c, d] = [&rest[0], &rest[1]];
    let done = queue
        .finish(&[
            finished(a.id, a.attempt, Outcome::Succeeded),
            finished(b.id, b.attempt, Outcome::Error),
            finished(c.id, c.attempt + 1, Outcome::Succeeded),
            finished(d.id, d.attempt, Outcome::Released),
        ])
        .await
        .expect("finish");
    assert_eq!(done.len(), 3, "the stale attempt was fenced off: {done:?}");
    let a_now = queue.get(a.id).await.expect("get").expect("a");
    assert_eq!((a_now.state.as_str(), a_now.output.clone()), ("succeeded", Some(json!({"ok": true}))));
    assert_eq!(a_now.host.as_deref(), Some("host-a"), "the host that ran it is kept");
    let b_now = queue.get(b.id).await.expect("get").expect("b");
    assert_eq!((b_now.state.as_str(), b_now.attempt), ("queued", 1), "retried later");
    assert_eq!(b_now.error.as_deref(), Some("boom"));
    let d_now = queue.get(d.id).await.expect("get").expect("d");
    assert_eq!((d_now.state.as_str(), d_now.attempt), ("queued", 0), "released without counting");
    let c_now = queue.get(c.id).await.expect("get").expect("c");
    assert_eq!(c_now.state, "running", "still running: its finish carried another attempt");
    let next = queue.next_due(&["alpha".into(), "beta".into()]).await.expect("next due");
    assert!(next.is_some());

    // Cancel: a queued job at once; a running one is flagged for its host.
    assert_eq!(queue.cancel(later_id).await.expect("cancel"), Some("cancelled".into()));
    assert_eq!(queue.cancel(c.id).await.expect("cancel running"), Some("cancelling".into()));
    let renewed = queue.renew(&[c.id, a.id], LEASE).await.expect("renew");
    assert_eq!(renewed, vec![(c.id, true)], "the running job is renewed and told of the cancel; a finished one is not");
    queue.finish(&[finished(c.id, c.attempt, Outcome::Cancelled)]).await.expect("finish cancelled");
    assert_eq!(queue.get(c.id).await.expect("get").expect("c").state, "cancelled");
    assert_eq!(queue.cancel(i64::MAX).await.expect("unknown"), None);

    // Listing, newest first, by worker and state.
    let listed = queue.list(Some("alpha"), Some("cancelled"), None, 10).await.expect("list");
    assert_eq!(listed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![later_id]);
    assert!(queue.list(None, None, None, 2).await.expect("list").len() == 2);

    // Prune: everything finished more than 0 s ago goes.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(queue.prune(Duration::ZERO).await.expect("prune") >= 3);
    assert!(queue.get(a.id).await.expect("get").is_none());
    fresh.drop_database().await;
}

/// A host that stops renewing loses its jobs: after the lease any host
/// rescues them (the run counted as an attempt), and the first host's late
/// finish and renewal are ignored. A job out of attempts fails instead.
#[tokio::test(flavor = "multi_thread")]
async fn expired_leases_are_rescued_and_the_old_host_is_fenced_off() {
    let fresh = Fresh::new().await;
    let (a, b) = (fresh.queue("host-a", &["w"]).await, fresh.queue("host-b", &["w"]).await);
    let mut last_try = job("w");
    last_try.max_attempts = 1;
    a.enqueue(&[job("w"), last_try]).await.expect("enqueue");
    let claimed = a.claim(&[("w".into(), 2)], 2, Duration::from_secs(1)).await.expect("claim");
    assert_eq!(claimed.len(), 2);
    assert_eq!(b.rescue().await.expect("rescue early"), 0, "leases still valid");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(b.rescue().await.expect("rescue"), 2);
    let mut states = Vec::new();
    for c in &claimed {
        let job = b.get(c.id).await.expect("get").expect("job");
        states.push((job.state, job.attempt));
    }
    assert!(states.contains(&("queued".into(), 1)), "{states:?}");
    assert!(states.contains(&("failed".into(), 1)), "the job out of attempts fails: {states:?}");
    let again = b.claim(&[("w".into(), 5)], 5, LEASE).await.expect("claim again");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
    let late = a.finish(&[finished(again[0].id, 1, Outcome::Succeeded)]).await.expect("late finish");
    assert!(late.is_empty(), "host A's late finish is fenced off");
    assert!(a.renew(&[again[0].id], LEASE).await.expect("renew").is_empty(), "and so is its renewal");
    fresh.drop_database().await;
}

/// `LISTEN` hears new due jobs and cancel requests (with the host's id).
#[tokio::test(flavor = "multi_thread")]
async fn notices_announce_due_jobs_and_cancels() {
    let fresh = Fresh::new().await;
    let queue = std::sync::Arc::new(fresh.queue("host with spaces/1", &["w"]).await);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let listener = tokio::spawn({
        let queue = queue.clone();
        async move { queue.listen(tx, Duration::from_millis(100)).await }
    });
    let next = async |rx: &mut tokio::sync::mpsc::UnboundedReceiver<Notice>| {
        tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("a notice in time").expect("open")
    };
    assert_eq!(next(&mut rx).await, Notice::Reconnected);
    let id = queue.enqueue(&[job("w")]).await.expect("enqueue")[0].0;
    assert_eq!(next(&mut rx).await, Notice::Queued("w".into()));
    queue.claim(&[("w".into(), 1)], 1, LEASE).await.expect("claim");
    queue.cancel(id).await.expect("cancel");
    assert_eq!(next(&mut rx).await, Notice::Cancel { host: "host with spaces/1".into(), id });
    listener.abort();
    fresh.drop_database().await;
}
