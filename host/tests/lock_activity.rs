//! `Database::lock_activity` on the real database: what a host's jobs hold
//! and wait for, as the dashboard publishes it.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Setup, database, setup};
use pinlock::db::{ActivityState, Database, JobSession, LockActivity, LockMode};

/// `db`'s rows of `job`.
fn rows_of(db: &Database, job: &JobSession) -> Vec<LockActivity> {
    db.lock_activity().into_iter().filter(|a| a.job == job.job_id()).collect()
}

/// Polls until `job` shows on `db` in `state` (at most 5 s).
async fn until_shown(db: &Database, job: &JobSession, state: ActivityState) -> LockActivity {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(row) = rows_of(db, job).into_iter().find(|a| a.state == state) {
            return row;
        }
        assert!(Instant::now() < deadline, "job {} never showed {state:?}: {:?}", job.job_id(), rows_of(db, job));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn spawn_acquire(job: &Arc<JobSession>, entity: uuid::Uuid) -> tokio::task::JoinHandle<bool> {
    let job = job.clone();
    tokio::spawn(async move { job.acquire(entity, LockMode::Exclusive, Some(Duration::from_secs(10))).await.is_ok() })
}

/// Proves a hold shows (entity, key, mode) from its grant to its release,
/// and a wait from its start to its grant, both for a waiter on the same
/// host (it waits in the host's lock table) and on another host (it waits
/// on the server); a waiter whose future is dropped stops showing at once; a
/// try that finds the entity taken never shows as a wait (the control: the
/// same entity, no wait).
#[tokio::test(flavor = "multi_thread")]
async fn holds_and_waits_show_while_they_last() {
    let Setup { db, entity, key, .. } = setup().await;
    let other_host = database().await;

    let holder = db.job_session();
    let grant = holder.acquire(entity, LockMode::Exclusive, None).await.expect("granted");
    let held = until_shown(&db, &holder, ActivityState::Held).await;
    assert_eq!((held.entity, held.key, held.mode), (entity, key, LockMode::Exclusive));

    let trier = db.job_session();
    assert_eq!(trier.try_acquire(entity, LockMode::Exclusive).await, Ok(None), "taken");
    assert!(rows_of(&db, &trier).is_empty(), "a try never shows as a wait: {:?}", rows_of(&db, &trier));

    let local = db.job_session();
    let remote = other_host.job_session();
    let local_wait = spawn_acquire(&local, entity);
    let remote_wait = spawn_acquire(&remote, entity);
    let waiting = until_shown(&db, &local, ActivityState::Waiting).await;
    assert_eq!((waiting.entity, waiting.key), (entity, key));
    until_shown(&other_host, &remote, ActivityState::Waiting).await;
    assert!(waiting.since >= held.since, "the wait started after the grant");

    // A dropped waiter's wait ends with it.
    let dropped = db.job_session();
    let dropped_wait = spawn_acquire(&dropped, entity);
    until_shown(&db, &dropped, ActivityState::Waiting).await;
    dropped_wait.abort();
    let _ = dropped_wait.await;
    drop(dropped);
    let deadline = Instant::now() + Duration::from_secs(5);
    while db.lock_activity().iter().filter(|a| a.entity == entity && a.state == ActivityState::Waiting).count() > 1 {
        assert!(Instant::now() < deadline, "the dropped waiter still shows: {:?}", db.lock_activity());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    holder.release(grant.id).await.expect("released");
    assert!(rows_of(&db, &holder).is_empty(), "released: {:?}", rows_of(&db, &holder));
    // One waiter gets it and holds it until its job ends; then the other.
    let mut waits = vec![(local, local_wait, db.clone()), (remote, remote_wait, other_host.clone())];
    while !waits.is_empty() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let first = loop {
            if let Some(i) = waits.iter().position(|(job, _, host)| {
                !rows_of(host, job).is_empty() && rows_of(host, job).iter().all(|a| a.state == ActivityState::Held)
            }) {
                break i;
            }
            assert!(Instant::now() < deadline, "no waiter was granted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let (job, wait, host) = waits.remove(first);
        assert!(wait.await.expect("the waiter ran"), "granted");
        job.release_all().await;
        assert!(rows_of(&host, &job).is_empty(), "nothing after the job's end: {:?}", rows_of(&host, &job));
    }
}
