//! The durable job queue in PostgreSQL that every `pinlock serve` host on a
//! database shares (why it is ours and not a crate's, and its design:
//! docs/decisions/job-queue.md). Producers enqueue over HTTP or with
//! `pinlock.enqueue(...)` in their own transaction; hosts claim batches with
//! `FOR UPDATE SKIP LOCKED`, hold a lease per running job that they renew,
//! and rescue the jobs of a host whose leases expired. Delivery is at least
//! once.
//!
//! The queue uses connections of its own, never a lock session: one for its
//! statements (reopened when it drops) and one that `LISTEN`s.

mod sql;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, Row};

use crate::db::{DbConfig, DbError, SharedClient};

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The worker that runs it.
    pub worker: String,
    /// Its input (the guest gets its JSON text).
    pub input: Value,
    /// When it may start (RFC 3339; `None`: now).
    pub run_at: Option<String>,
    /// Attempts before it fails for good.
    pub max_attempts: i32,
    /// At most one queued, running or succeeded job of the worker has it.
    pub unique_key: Option<String>,
}

/// A job this host claimed.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Its id.
    pub id: i64,
    /// Its worker.
    pub worker: String,
    /// Its input.
    pub input: Value,
    /// Which attempt this is (fences its finish).
    pub attempt: i32,
}

/// How a job's run ended, for [`Queue::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It returned output.
    Succeeded,
    /// It failed (retried while attempts remain).
    Error,
    /// It was cancelled on request.
    Cancelled,
    /// The host gave it back unfinished (drain): not counted as an attempt.
    Released,
}

impl Outcome {
    /// Its name, in the queue's SQL and in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Error => "error",
            Outcome::Cancelled => "cancelled",
            Outcome::Released => "released",
        }
    }
}

/// One finished run.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The job.
    pub id: i64,
    /// The attempt that ran.
    pub attempt: i32,
    /// How it ended.
    pub outcome: Outcome,
    /// Its output, when it succeeded.
    pub output: Option<Vec<u8>>,
    /// Its error, when it did not.
    pub error: Option<String>,
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobRecord {
    /// Its id.
    pub id: i64,
    /// Its worker.
    pub worker: String,
    /// queued, running, succeeded, failed or cancelled.
    pub state: String,
    /// Its input.
    pub input: Value,
    /// Attempts started.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Its unique key.
    pub unique_key: Option<String>,
    /// The host running it.
    pub host: Option<String>,
    /// Its output: JSON when the output is JSON, else text (lossy UTF-8).
    pub output: Option<Value>,
    /// Its last error.
    pub error: Option<String>,
    /// When it was enqueued.
    pub created_at: Value,
    /// When it may (next) start.
    pub run_at: Value,
    /// When its last attempt started.
    pub started_at: Value,
    /// When it finished.
    pub finished_at: Value,
}

/// Queue depth of one worker.
#[derive(Debug, Clone, Serialize)]
pub struct Depth {
    /// The worker.
    pub worker: String,
    /// Due jobs waiting.
    pub queued: i64,
    /// Age of the oldest due job, in seconds.
    pub oldest_age_secs: f64,
}

/// What the queue's `LISTEN` connection heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A job of this worker became due.
    Queued(String),
    /// Cancel job `id` running on host `host`.
    Cancel {
        /// The host running it.
        host: String,
        /// The job.
        id: i64,
    },
    /// The listening connection was (re)opened: notices may have been missed.
    Reconnected,
}

/// A host's handle on the queue.
pub struct Queue {
    host: String,
    client: SharedClient,
}

impl Queue {
    /// The queue as host `host` (its `application_name`) sees it. Does no I/O.
    pub fn new(config: DbConfig, host: impl Into<String>) -> Self {
        // Queue statements never wait long for a row a producer's open
        // transaction holds (a renewal must not hang behind `pinlock.cancel`).
        let client = SharedClient::new(config, "SET lock_timeout = '2s'; SET statement_timeout = '30s'");
        Self { host: host.into(), client }
    }

    /// This host's id in the queue.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The statement connection, reopened if it dropped.
    async fn client(&self) -> Result<Arc<Client>, DbError> {
        self.client.get().await
    }

    async fn query(
        &self,
        context: &'static str,
        statement: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, DbError> {
        let client = self.client().await?;
        client.query(statement, params).await.map_err(DbError::query(context))
    }

    /// Records the workers this host serves (`pinlock.enqueue` refuses others).
    pub async fn register_workers(&self, names: &[String]) -> Result<(), DbError> {
        self.query("registering workers", sql::REGISTER_WORKERS, &[&names]).await.map(drop)
    }

    /// Enqueues `jobs` in one statement; returns each one's id and whether
    /// it was a duplicate of a job with the same unique key.
    pub async fn enqueue(&self, jobs: &[NewJob]) -> Result<Vec<(i64, bool)>, DbError> {
        let workers: Vec<&str> = jobs.iter().map(|j| j.worker.as_str()).collect();
        let inputs: Vec<&Value> = jobs.iter().map(|j| &j.input).collect();
        let run_at: Vec<Option<&str>> = jobs.iter().map(|j| j.run_at.as_deref()).collect();
        let attempts: Vec<i32> = jobs.iter().map(|j| j.max_attempts).collect();
        let keys: Vec<Option<&str>> = jobs.iter().map(|j| j.unique_key.as_deref()).collect();
        let rows = self.query("enqueueing", sql::ENQUEUE, &[&workers, &inputs, &run_at, &attempts, &keys]).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect::<Result<_, _>>().map_err(decode)
    }

    /// Claims due jobs: at most `per_worker[i].1` of worker `per_worker[i].0`
    /// and `total` in all, each leased for `lease`.
    pub async fn claim(
        &self,
        per_worker: &[(String, i32)],
        total: i32,
        lease: Duration,
    ) -> Result<Vec<Claimed>, DbError> {
        let workers: Vec<&str> = per_worker.iter().map(|(w, _)| w.as_str()).collect();
        let counts: Vec<i32> = per_worker.iter().map(|(_, n)| *n).collect();
        let rows = self
            .query("claiming jobs", sql::CLAIM, &[&self.host, &workers, &counts, &total, &lease.as_secs_f64()])
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Claimed { id: r.try_get(0)?, worker: r.try_get(1)?, input: r.try_get(2)?, attempt: r.try_get(3)? })
            })
            .collect::<Result<_, _>>()
            .map_err(decode)
    }

    /// Records a job that runs on this host right away (a synchronous run):
    /// its id, or `None` for a worker no host serves.
    pub async fn insert_running(&self, worker: &str, input: &Value, lease: Duration) -> Result<Option<i64>, DbError> {
        let rows = self
            .query(
                "recording a synchronous job",
                sql::INSERT_RUNNING,
                &[&self.host, &worker, input, &lease.as_secs_f64()],
            )
            .await?;
        rows.first().map(|r| r.try_get(0)).transpose().map_err(decode)
    }

    /// Records how runs ended, in one statement. Returns the ids whose record
    /// was updated (a job rescued meanwhile by another host is not).
    pub async fn finish(&self, batch: &[Finished]) -> Result<Vec<(i64, String)>, DbError> {
        let ids: Vec<i64> = batch.iter().map(|f| f.id).collect();
        let attempts: Vec<i32> = batch.iter().map(|f| f.attempt).collect();
        let outcomes: Vec<&str> = batch.iter().map(|f| f.outcome.as_str()).collect();
        let outputs: Vec<Option<&[u8]>> = batch.iter().map(|f| f.output.as_deref()).collect();
        let errors: Vec<Option<&str>> = batch.iter().map(|f| f.error.as_deref()).collect();
        let rows = self
            .query("finishing jobs", sql::FINISH, &[&self.host, &ids, &attempts, &outcomes, &outputs, &errors])
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect::<Result<_, _>>().map_err(decode)
    }

    /// Renews the leases of `ids` (running here); returns each renewed id and
    /// whether a cancel was requested for it. An id missing from the answer
    /// lost its lease.
    pub async fn renew(&self, ids: &[i64], lease: Duration) -> Result<Vec<(i64, bool)>, DbError> {
        let rows = self.query("renewing leases", sql::RENEW, &[&self.host, &ids, &lease.as_secs_f64()]).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect::<Result<_, _>>().map_err(decode)
    }

    /// Requeues the jobs of hosts whose leases expired; returns how many.
    pub async fn rescue(&self) -> Result<usize, DbError> {
        Ok(self.query("rescuing jobs", sql::RESCUE, &[&1000i32]).await?.len())
    }

    /// Deletes jobs finished longer than `retention` ago (in batches).
    pub async fn prune(&self, retention: Duration) -> Result<u64, DbError> {
        let client = self.client().await?;
        let mut total = 0;
        loop {
            let deleted = client
                .execute(sql::PRUNE, &[&retention.as_secs_f64(), &10_000i32])
                .await
                .map_err(DbError::query("pruning finished jobs"))?;
            total += deleted;
            if deleted < 10_000 {
                return Ok(total);
            }
        }
    }

    /// Cancels job `id`: a queued job at once, a running one through its
    /// host. Returns the job's state after the request (`None`: no such job).
    pub async fn cancel(&self, id: i64) -> Result<Option<String>, DbError> {
        let rows = self.query("cancelling a job", sql::CANCEL, &[&id]).await?;
        rows.first().map(|r| r.try_get::<_, Option<String>>(0)).transpose().map(Option::flatten).map_err(decode)
    }

    /// Job `id`.
    pub async fn get(&self, id: i64) -> Result<Option<JobRecord>, DbError> {
        let rows = self.query("reading a job", &sql::get_job(), &[&id]).await?;
        rows.first().map(record).transpose().map_err(decode)
    }

    /// Jobs, newest first.
    pub async fn list(
        &self,
        worker: Option<&str>,
        state: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<JobRecord>, DbError> {
        let rows = self.query("listing jobs", &sql::list_jobs(), &[&worker, &state, &before, &limit]).await?;
        rows.iter().map(record).collect::<Result<_, _>>().map_err(decode)
    }

    /// Due jobs waiting, per worker.
    pub async fn depth(&self) -> Result<Vec<Depth>, DbError> {
        let rows = self.query("reading the queue depth", sql::DEPTH, &[]).await?;
        rows.iter()
            .map(|r| Ok(Depth { worker: r.try_get(0)?, queued: r.try_get(1)?, oldest_age_secs: r.try_get(2)? }))
            .collect::<Result<_, _>>()
            .map_err(decode)
    }

    /// How long until the next queued job of `workers` is due (`None`: none queued).
    pub async fn next_due(&self, workers: &[String]) -> Result<Option<Duration>, DbError> {
        let rows = self.query("reading the next due job", sql::NEXT_DUE, &[&workers]).await?;
        let secs: Option<f64> = rows.first().map(|r| r.try_get(0)).transpose().map_err(decode)?.flatten();
        Ok(secs.map(|s| Duration::from_secs_f64(s.max(0.0))))
    }

    /// The schema version of the database.
    pub async fn schema_version(&self) -> Result<i32, DbError> {
        let rows = self.query("reading the schema version", sql::SCHEMA_VERSION, &[]).await?;
        rows.first().map(|r| r.try_get(0)).transpose().map_err(decode).map(|v| v.unwrap_or(0))
    }

    /// Listens for queue notices until `notices` is closed, reconnecting
    /// (after `retry`) whenever the listening connection drops.
    pub async fn listen(&self, notices: mpsc::UnboundedSender<Notice>, retry: Duration) {
        while !notices.is_closed() {
            match self.listen_once(&notices).await {
                Ok(()) => tracing::debug!("queue listener ended"),
                Err(e) => tracing::warn!(error = %e, "queue listener failed; retrying"),
            }
            tokio::time::sleep(retry).await;
        }
    }

    async fn listen_once(&self, notices: &mpsc::UnboundedSender<Notice>) -> Result<(), DbError> {
        let (client, mut connection) = self.client.config().open().await?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send(n.payload().to_owned()).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "queue listener connection ended");
                        break;
                    }
                }
            }
        });
        client.batch_execute(sql::LISTEN).await.map_err(DbError::query("listening for queue notices"))?;
        let _ = notices.send(Notice::Reconnected);
        while let Some(payload) = rx.recv().await {
            if let Some(notice) = parse_notice(&payload)
                && notices.send(notice).is_err()
            {
                break;
            }
        }
        drop(client);
        let _ = driver.await;
        Ok(())
    }
}

fn parse_notice(payload: &str) -> Option<Notice> {
    if let Some(worker) = payload.strip_prefix("queued ") {
        return Some(Notice::Queued(worker.to_owned()));
    }
    // The host's id may contain spaces; the job id is the last word.
    let (host, id) = payload.strip_prefix("cancel ")?.rsplit_once(' ')?;
    Some(Notice::Cancel { host: host.to_owned(), id: id.parse().ok()? })
}

fn record(row: &Row) -> Result<JobRecord, tokio_postgres::Error> {
    let output: Option<Vec<u8>> = row.try_get(8)?;
    Ok(JobRecord {
        id: row.try_get(0)?,
        worker: row.try_get(1)?,
        state: row.try_get(2)?,
        input: row.try_get(3)?,
        attempt: row.try_get(4)?,
        max_attempts: row.try_get(5)?,
        unique_key: row.try_get(6)?,
        host: row.try_get(7)?,
        output: output.map(|bytes| output_value(&bytes)),
        error: row.try_get(9)?,
        created_at: row.try_get(10)?,
        run_at: row.try_get(11)?,
        started_at: row.try_get::<_, Option<Value>>(12)?.unwrap_or(Value::Null),
        finished_at: row.try_get::<_, Option<Value>>(13)?.unwrap_or(Value::Null),
    })
}

/// A job's output as JSON: itself when it is JSON, else its text.
pub fn output_value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

fn decode(cause: tokio_postgres::Error) -> DbError {
    DbError::Query { context: "decoding a queue row", cause }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_are_parsed_and_junk_is_ignored() {
        assert_eq!(parse_notice("queued inventory"), Some(Notice::Queued("inventory".into())));
        assert_eq!(parse_notice("cancel host-a 42"), Some(Notice::Cancel { host: "host-a".into(), id: 42 }));
        assert_eq!(parse_notice("cancel host-a x"), None);
        assert_eq!(
            parse_notice("cancel pinlock/box 1/77 9"),
            Some(Notice::Cancel { host: "pinlock/box 1/77".into(), id: 9 })
        );
        assert_eq!(parse_notice("hello"), None);
    }
}
