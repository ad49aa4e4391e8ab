//! One PostgreSQL session, pinned to whoever checked it out: its client, the
//! token that cancels its running statement, its prepared statements, its
//! backend pid and whether it is known to be lost.
//!
//! A session that holds advisory locks is never reset or shared; see
//! [`super::pool`] for how sessions come and go.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_postgres::types::ToSql;
use tokio_postgres::{CancelToken, Client, NoTls, Row, Statement};

use super::{DbConfig, DbError, sql};

/// The statements every session prepares once, when it opens.
pub(crate) struct Statements {
    pub lock_exclusive: Statement,
    pub lock_shared: Statement,
    pub try_exclusive: Statement,
    pub try_shared: Statement,
    pub next_fence: Statement,
    pub unlock_exclusive: Statement,
    pub unlock_shared: Statement,
    pub unlock_all: Statement,
    pub holds: Statement,
    pub upsert_key: Statement,
    pub kv_get: Statement,
    pub kv_set: Statement,
    pub kv_delete: Statement,
    pub kv_exists: Statement,
}

/// A live session and what pinlock knows about it.
pub struct Session {
    pub(crate) client: Client,
    cancel: CancelToken,
    pub(crate) stmts: Statements,
    lost: Arc<AtomicBool>,
    /// Set while a statement is out; stays set if its caller went away
    /// before the answer (the job was stopped mid-call).
    in_flight: AtomicBool,
    pid: i32,
}

impl Session {
    /// Opens a session, starts its connection task and prepares statements.
    pub async fn open(config: &DbConfig) -> Result<Session, DbError> {
        let (client, connection) = config.open().await?;
        let lost = Arc::new(AtomicBool::new(false));
        let lost_flag = lost.clone();
        tokio::spawn(async move {
            // Ends when the server closes the socket (backend terminated,
            // network gone) or when the client is dropped.
            if let Err(err) = connection.await {
                tracing::debug!(%err, "session connection ended");
            }
            lost_flag.store(true, Ordering::Release);
        });
        let prepare = |text: &'static str| {
            let client = &client;
            async move { client.prepare(text).await.map_err(DbError::query("preparing a statement")) }
        };
        // Sent together: one round trip's worth of waiting, not fourteen.
        let (lock_exclusive, lock_shared, try_exclusive, try_shared, next_fence, unlock_exclusive, unlock_shared) =
            tokio::try_join!(
                prepare(sql::LOCK_EXCLUSIVE),
                prepare(sql::LOCK_SHARED),
                prepare(sql::TRY_EXCLUSIVE),
                prepare(sql::TRY_SHARED),
                prepare(sql::NEXT_FENCE),
                prepare(sql::UNLOCK_EXCLUSIVE),
                prepare(sql::UNLOCK_SHARED),
            )?;
        let (unlock_all, holds, upsert_key, kv_get, kv_set, kv_delete, kv_exists, pid_row) = tokio::try_join!(
            prepare(sql::UNLOCK_ALL),
            prepare(sql::HOLDS),
            prepare(sql::UPSERT_KEY),
            prepare(sql::KV_GET),
            prepare(sql::KV_SET),
            prepare(sql::KV_DELETE),
            prepare(sql::KV_EXISTS),
            async {
                client
                    .query_one("SELECT pg_backend_pid()", &[])
                    .await
                    .map_err(DbError::query("reading the backend pid"))
            },
        )?;
        let pid: i32 = pid_row.try_get(0).map_err(DbError::query("reading the backend pid"))?;
        let cancel = client.cancel_token();
        Ok(Session {
            client,
            cancel,
            stmts: Statements {
                lock_exclusive,
                lock_shared,
                try_exclusive,
                try_shared,
                next_fence,
                unlock_exclusive,
                unlock_shared,
                unlock_all,
                holds,
                upsert_key,
                kv_get,
                kv_set,
                kv_delete,
                kv_exists,
            },
            lost,
            in_flight: AtomicBool::new(false),
            pid,
        })
    }

    /// The server process serving this session (`pg_backend_pid()`).
    pub fn backend_pid(&self) -> i32 {
        self.pid
    }

    /// Whether the connection is known to be gone (and every lock with it).
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire) || self.client.is_closed()
    }

    /// Whether a statement was sent whose caller stopped waiting for it: the
    /// server may still be running it (for example, still waiting for a lock).
    pub(crate) fn interrupted(&self) -> bool {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Runs a prepared statement that returns one row.
    pub(crate) async fn query_one(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, tokio_postgres::Error> {
        self.tracked(self.client.query_one(statement, params)).await
    }

    /// Runs a prepared statement that returns zero or one row.
    pub(crate) async fn query_opt(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        self.tracked(self.client.query_opt(statement, params)).await
    }

    /// Runs a prepared statement and returns the number of rows it touched.
    pub(crate) async fn execute(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        self.tracked(self.client.execute(statement, params)).await
    }

    /// Marks the session busy while `call` is out. If the caller stops
    /// waiting (its future is dropped), the mark stays: see [`Self::interrupted`].
    async fn tracked<T>(&self, call: impl Future<Output = T>) -> T {
        self.in_flight.store(true, Ordering::Release);
        let result = call.await;
        self.in_flight.store(false, Ordering::Release);
        result
    }

    /// Asks the server to cancel whatever this session is running now.
    /// Returns whether the request was delivered.
    pub(crate) async fn cancel_running(&self) -> bool {
        match self.cancel.cancel_query(NoTls).await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(pid = self.pid, %err, "could not send a cancel request");
                false
            }
        }
    }
}
