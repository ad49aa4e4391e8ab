//! Publishes what this host's jobs hold and wait for into
//! `pinlock.lock_activity` (schema.sql), about once a second, so that every
//! host's dashboard shows every host's locks. Each round replaces this
//! host's rows in one statement (so a reader sees the old set or the new
//! one, never half) when they changed, and beats the host's heartbeat
//! either way. On drain the host withdraws its rows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::super::Service;
use crate::db::{ActivityState, DbError, LockMode};

/// How often the rows are published.
pub(crate) const EVERY: Duration = Duration::from_secs(1);
/// How often a host forgets hosts that stopped beating long ago.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// Replaces host `$1`'s rows and beats its heartbeat. `$9` are ages in
/// seconds: `since` is computed on the database's clock, so every host's
/// rows compare on one clock.
const REPLACE: &str = "WITH beat AS (
         INSERT INTO pinlock.lock_hosts (host, heartbeat) VALUES ($1, now())
         ON CONFLICT (host) DO UPDATE SET heartbeat = now()),
     gone AS (DELETE FROM pinlock.lock_activity WHERE host = $1)
     INSERT INTO pinlock.lock_activity (host, job_id, worker, entity, key, mode, state, since)
     SELECT $1, r.job_id, r.worker, r.entity, r.key, r.mode, r.state, now() - make_interval(secs => r.age)
       FROM unnest($2::int8[], $3::text[], $4::uuid[], $5::int8[], $6::text[], $7::text[], $8::float8[])
            AS r(job_id, worker, entity, key, mode, state, age)";

/// Beats host `$1`'s heartbeat (its rows did not change).
const HEARTBEAT: &str = "INSERT INTO pinlock.lock_hosts (host, heartbeat) VALUES ($1, now())
     ON CONFLICT (host) DO UPDATE SET heartbeat = now()";

/// Removes host `$1` and its rows (it is stopping).
const WITHDRAW: &str = "WITH h AS (DELETE FROM pinlock.lock_hosts WHERE host = $1)
     DELETE FROM pinlock.lock_activity WHERE host = $1";

/// Removes hosts (and their rows) silent for ten minutes: they died
/// without withdrawing. Readers ignored them long before.
const FORGET: &str = "WITH stale AS (
         DELETE FROM pinlock.lock_hosts WHERE heartbeat < now() - interval '10 minutes' RETURNING host)
     DELETE FROM pinlock.lock_activity a USING stale WHERE a.host = stale.host";

/// One published row.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    job: i64,
    worker: Arc<str>,
    entity: Uuid,
    key: i64,
    mode: LockMode,
    state: ActivityState,
    since: Instant,
}

/// This host's jobs' holds and waits now, with their queue id and worker.
fn rows_now(service: &Service) -> Vec<Row> {
    let running = service.scheduler.running();
    let mut rows: Vec<Row> = service
        .db
        .lock_activity()
        .into_iter()
        .filter_map(|a| {
            // Jobs not started by the scheduler have no queue id: not shown.
            let job = running.iter().find(|j| j.lock_job == a.job)?;
            Some(Row {
                job: job.id,
                worker: job.worker.clone(),
                entity: a.entity,
                key: a.key,
                mode: a.mode,
                state: a.state,
                since: a.since,
            })
        })
        .collect();
    rows.sort_by_key(|r| (r.job, r.entity, r.state == ActivityState::Waiting));
    rows
}

/// Publishes until the task is aborted.
pub(crate) async fn run(service: Arc<Service>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut published: Option<Vec<Row>> = None;
    let mut forgotten = Instant::now();
    let mut failing = false;
    loop {
        tick.tick().await;
        let rows = rows_now(&service);
        let changed = published.as_ref() != Some(&rows);
        let result = if changed { replace(&service, &rows).await } else { heartbeat(&service).await };
        match result {
            Ok(()) => {
                failing = false;
                published = Some(rows);
            }
            Err(e) => {
                // Said once per outage; readers stop showing this host's rows
                // once its heartbeat is a few seconds old.
                if !failing {
                    tracing::warn!(error = %e, "publishing lock activity failed; retrying every second");
                }
                failing = true;
                published = None;
            }
        }
        if forgotten.elapsed() >= FORGET_EVERY {
            forgotten = Instant::now();
            if let Err(e) = execute(&service, "forgetting silent hosts", FORGET, &[]).await {
                tracing::debug!(error = %e, "forgetting silent hosts failed");
            }
        }
    }
}

/// Removes this host's rows (on drain, once its jobs have stopped).
pub(crate) async fn withdraw(service: &Service) {
    let host = service.queue.host();
    match tokio::time::timeout(Duration::from_secs(2), execute(service, "withdrawing", WITHDRAW, &[&host])).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "withdrawing lock activity failed"),
        Err(_) => tracing::debug!("withdrawing lock activity timed out"),
    }
}

async fn heartbeat(service: &Service) -> Result<(), DbError> {
    execute(service, "beating the lock activity heartbeat", HEARTBEAT, &[&service.queue.host()]).await
}

async fn replace(service: &Service, rows: &[Row]) -> Result<(), DbError> {
    let jobs: Vec<i64> = rows.iter().map(|r| r.job).collect();
    let workers: Vec<&str> = rows.iter().map(|r| &*r.worker).collect();
    let entities: Vec<Uuid> = rows.iter().map(|r| r.entity).collect();
    let keys: Vec<i64> = rows.iter().map(|r| r.key).collect();
    let modes: Vec<&str> = rows.iter().map(|r| mode_name(r.mode)).collect();
    let states: Vec<&str> = rows.iter().map(|r| state_name(r.state)).collect();
    let ages: Vec<f64> = rows.iter().map(|r| r.since.elapsed().as_secs_f64()).collect();
    let host = service.queue.host();
    execute(
        service,
        "publishing lock activity",
        REPLACE,
        &[&host, &jobs, &workers, &entities, &keys, &modes, &states, &ages],
    )
    .await
}

async fn execute(
    service: &Service,
    context: &'static str,
    statement: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<(), DbError> {
    let client = service.dashboard.client.get().await?;
    client.execute(statement, params).await.map(drop).map_err(DbError::query(context))
}

/// A mode as the table stores it.
fn mode_name(mode: LockMode) -> &'static str {
    match mode {
        LockMode::Exclusive => "exclusive",
        LockMode::Shared => "shared",
    }
}

fn state_name(state: ActivityState) -> &'static str {
    match state {
        ActivityState::Held => "held",
        ActivityState::Waiting => "waiting",
    }
}
