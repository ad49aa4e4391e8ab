//! One PostgreSQL session, pinned to whoever checked it out: its client, the
//! token that cancels its running statement, its prepared statements, its
//! backend pid, and what is known of its health: lost, interrupted mid-call,
//! cancel requests that may still arrive, and whether it may hold a lock that
//! pinlock does not track.
//!
//! **Stale cancels** (the one place this story is told). A cancel request
//! is delivered by a separate connection and lands asynchronously on
//! whatever the backend runs *then*: a cancel sent for a wait that was
//! granted anyway may hit a later statement. And one request may cancel
//! **two** statements: the postmaster signals the backend's pid and then
//! its process group (`signal_child`), and should the backend handle the
//! first signal before the second arrives (the sender preempted between
//! its two `kill`s), the second cancels whatever runs next. So each request
//! sent counts [`DELIVERIES_PER_CANCEL`] 57014s that may still come; each
//! one seen is absorbed (a plain statement is sent again, a lock statement
//! is settled by asking the server whether the lock is held, see
//! `super::locks`), and a session with any still to come is closed when its
//! job ends, never reused by another job.
//!
//! A session that holds advisory locks is never reset or shared; see
//! [`super::pool`] for how sessions come and go.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use tokio_postgres::types::ToSql;
use tokio_postgres::{CancelToken, Client, NoTls, Row, Statement};

use super::driver::Driver;
use super::error::{code_of, sqlstate};
use super::table::SessionId;
use super::{DbConfig, DbError, Fencing, LockMode, liveness, sql};

/// How many statements one cancel request may cancel (see the module docs).
pub(crate) const DELIVERIES_PER_CANCEL: u32 = 2;

/// Numbers sessions within the process (the lock table records where each
/// lock is held).
static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// Called once with the session's id when its connection ends, however it
/// ends (the server freed every lock it held).
pub(crate) type OnEnd = Arc<dyn Fn(SessionId) + Send + Sync>;

/// Declares [`Statements`]: one field per statement, each prepared from its
/// SQL in `sql.rs`. Adding a statement is one line here.
macro_rules! statements {
    ($($name:ident = $sql:path),* $(,)?) => {
        /// The statements every session prepares once, when it opens.
        pub(crate) struct Statements {
            $(pub $name: Statement,)*
        }

        impl Statements {
            /// Prepares them all, pipelined: one round trip's worth of waiting.
            async fn prepare(client: &Client) -> Result<Self, DbError> {
                let prepare = async |text: &'static str| {
                    client.prepare(text).await.map_err(DbError::query("preparing a statement"))
                };
                let ($($name,)*) = tokio::try_join!($(prepare($sql),)*)?;
                Ok(Self { $($name,)* })
            }
        }
    };
}

statements! {
    lock_exclusive = sql::LOCK_EXCLUSIVE,
    lock_shared = sql::LOCK_SHARED,
    try_exclusive = sql::TRY_EXCLUSIVE,
    try_shared = sql::TRY_SHARED,
    lock_exclusive_unfenced = sql::LOCK_EXCLUSIVE_UNFENCED,
    lock_shared_unfenced = sql::LOCK_SHARED_UNFENCED,
    try_exclusive_unfenced = sql::TRY_EXCLUSIVE_UNFENCED,
    try_shared_unfenced = sql::TRY_SHARED_UNFENCED,
    next_fence = sql::NEXT_FENCE,
    unlock_exclusive = sql::UNLOCK_EXCLUSIVE,
    unlock_shared = sql::UNLOCK_SHARED,
    unlock_all = sql::UNLOCK_ALL,
    holds = sql::HOLDS,
    find_key = sql::FIND_KEY,
    upsert_key = sql::UPSERT_KEY,
    kv_get = sql::KV_GET,
    kv_set = sql::KV_SET,
    kv_delete = sql::KV_DELETE,
    kv_exists = sql::KV_EXISTS,
    kv_increment = sql::KV_INCREMENT,
    kv_insert_new = sql::KV_INSERT_NEW,
    kv_swap = sql::KV_SWAP,
    kv_get_many = sql::KV_GET_MANY,
    kv_set_many = sql::KV_SET_MANY,
    kv_delete_many = sql::KV_DELETE_MANY,
    kv_list_keys = sql::KV_LIST_KEYS,
}

impl Statements {
    /// `pg_advisory_lock*` (waits), returning the fencing token (0 when
    /// `fencing` is off).
    pub(crate) fn lock(&self, mode: LockMode, fencing: Fencing) -> &Statement {
        match (mode, fencing) {
            (LockMode::Exclusive, Fencing::Drawn) => &self.lock_exclusive,
            (LockMode::Shared, Fencing::Drawn) => &self.lock_shared,
            (LockMode::Exclusive, Fencing::Off) => &self.lock_exclusive_unfenced,
            (LockMode::Shared, Fencing::Off) => &self.lock_shared_unfenced,
        }
    }

    /// `pg_try_advisory_lock*`, returning the fencing token (0 when
    /// `fencing` is off) or NULL.
    pub(crate) fn try_lock(&self, mode: LockMode, fencing: Fencing) -> &Statement {
        match (mode, fencing) {
            (LockMode::Exclusive, Fencing::Drawn) => &self.try_exclusive,
            (LockMode::Shared, Fencing::Drawn) => &self.try_shared,
            (LockMode::Exclusive, Fencing::Off) => &self.try_exclusive_unfenced,
            (LockMode::Shared, Fencing::Off) => &self.try_shared_unfenced,
        }
    }

    /// `pg_advisory_unlock*`.
    pub(crate) fn unlock(&self, mode: LockMode) -> &Statement {
        match mode {
            LockMode::Exclusive => &self.unlock_exclusive,
            LockMode::Shared => &self.unlock_shared,
        }
    }
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
    /// 57014s that cancel requests sent may still cause (see the module
    /// docs).
    stale_cancels: AtomicU32,
    /// A statement failed in a way that may have left a lock held that the
    /// job does not track: unlock everything before reuse.
    suspect: AtomicBool,
    pid: i32,
    id: SessionId,
    /// The shard whose runtime drives its connection (see [`crate::shard`]).
    shard: usize,
    connection: tokio::task::AbortHandle,
    /// Polls its connection (see [`super::driver`]).
    driver: Arc<Driver>,
}

impl Session {
    /// Opens a session, starts its connection task and prepares statements;
    /// `on_end` runs when the connection ends.
    pub(crate) async fn open(config: &DbConfig, on_end: Option<OnEnd>) -> Result<Session, DbError> {
        let (client, connection) = config.open().await?;
        let id = SessionId(NEXT_SESSION.fetch_add(1, Ordering::Relaxed));
        let lost = Arc::new(AtomicBool::new(false));
        let lost_flag = lost.clone();
        // Runs `on_end` however the task ends, aborted included.
        let (driver, connection) = Driver::spawn(connection, move || {
            lost_flag.store(true, Ordering::Release);
            if let Some(on_end) = on_end {
                on_end(id);
            }
        });
        // Sent together: one round trip's worth of waiting.
        let (names, values): (Vec<&str>, Vec<&str>) = liveness::SERVER_SETTINGS.iter().copied().unzip();
        let (stmts, setup) = tokio::try_join!(Statements::prepare(&client), async {
            client
                .query_one(sql::SESSION_SETUP, &[&names, &values])
                .await
                .map_err(DbError::query("setting up the session"))
        })?;
        let pid: i32 = setup.try_get(0).map_err(DbError::query("reading the backend pid"))?;
        let missing: Vec<String> = setup.try_get(1).map_err(DbError::query("reading the session settings"))?;
        liveness::warn_missing(&missing);
        let cancel = client.cancel_token();
        Ok(Session {
            client,
            cancel,
            stmts,
            lost,
            in_flight: AtomicBool::new(false),
            stale_cancels: AtomicU32::new(0),
            suspect: AtomicBool::new(false),
            pid,
            id,
            shard: crate::shard::current(),
            connection,
            driver,
        })
    }

    /// The session's number in this process.
    pub(crate) fn id(&self) -> SessionId {
        self.id
    }

    /// The shard whose runtime drives its connection: statements sent from
    /// another shard cross threads.
    pub(crate) fn shard(&self) -> usize {
        self.shard
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
        self.absorbing(|| self.awaited(self.client.query_one(statement, params))).await
    }

    /// [`Self::query_one`] for a statement nobody waits for yet (an unlock
    /// on a shared session): it goes out with the session's next write.
    pub(crate) async fn queue_one(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, tokio_postgres::Error> {
        self.absorbing(|| self.client.query_one(statement, params)).await
    }

    /// Runs a prepared statement that returns zero or one row.
    pub(crate) async fn query_opt(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        self.absorbing(|| self.awaited(self.client.query_opt(statement, params))).await
    }

    /// Runs a prepared statement and returns the number of rows it touched.
    pub(crate) async fn execute(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        self.absorbing(|| self.awaited(self.client.execute(statement, params))).await
    }

    /// Sends `call()`, and again each time a stale cancel hit it (safe for
    /// every statement but a lock, whose first attempt may have been
    /// granted). Each absorbed cancel is one fewer to come, so this ends.
    async fn absorbing<T, F>(&self, call: impl Fn() -> F) -> Result<T, tokio_postgres::Error>
    where
        F: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        match self.tracked(call()).await {
            // Boxed, as the rare path: a statement's future is KiBs, and
            // every caller's future holds the largest it may await.
            Err(e) if self.absorb_stale_cancel(&e) => Box::pin(self.absorbing(call)).await,
            result => result,
        }
    }

    /// Runs a lock statement, never retried: the caller settles a 57014
    /// itself, because the lock may have been granted before it.
    pub(crate) async fn lock_statement(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, tokio_postgres::Error> {
        self.tracked(self.awaited(self.client.query_one(statement, params))).await
    }

    /// Whether `err` is a cancel pinlock sent earlier; if so, counts it as
    /// arrived (one fewer that may still come).
    pub(crate) fn absorb_stale_cancel(&self, err: &tokio_postgres::Error) -> bool {
        code_of(err) == Some(sqlstate::QUERY_CANCELED)
            && self.stale_cancels.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok()
    }

    /// Whether a cancel request sent on this session may still arrive.
    pub(crate) fn cancel_may_arrive(&self) -> bool {
        self.stale_cancels.load(Ordering::Acquire) > 0
    }

    /// Notes that the server may hold a lock the job does not track.
    pub(crate) fn mark_suspect(&self) {
        self.suspect.store(true, Ordering::Release);
    }

    /// Whether [`Self::mark_suspect`] was called.
    pub(crate) fn is_suspect(&self) -> bool {
        self.suspect.load(Ordering::Acquire)
    }

    /// Stops the connection task (the socket closes at once, even with a
    /// statement pending).
    pub(crate) fn abort_connection(&self) {
        // Closed here rather than when the task next runs: no job's write
        // can reach the server in between.
        self.driver.close();
        self.connection.abort();
    }

    /// Runs `call`, a statement queued through this session's client that
    /// the caller waits for: written at once if no other job shares the
    /// session (see [`super::driver`]).
    pub(crate) async fn awaited<T>(&self, call: impl Future<Output = T>) -> T {
        self.driver.awaited(call).await
    }

    /// Writes what is queued on the session now if no other job shares it
    /// (a job's end, waiting for the answers to its unlocks).
    pub(crate) fn write_now(&self) {
        self.driver.write_now();
    }

    /// Jobs whose home it is now (0 for a job's own session; see
    /// `super::pool::Tenancy`).
    pub(crate) fn tenants(&self) -> usize {
        self.driver.tenants()
    }

    /// Counts one more job whose home it is.
    pub(crate) fn add_tenant(&self) {
        self.driver.add_tenant();
    }

    /// Counts one fewer.
    pub(crate) fn remove_tenant(&self) {
        self.driver.remove_tenant();
    }

    /// Marks the session busy while `call` is out. If the caller stops
    /// waiting (its future is dropped), the mark stays: see [`Self::interrupted`].
    async fn tracked<T>(&self, call: impl Future<Output = T>) -> T {
        self.in_flight.store(true, Ordering::Release);
        let result = call.await;
        self.in_flight.store(false, Ordering::Release);
        result
    }

    /// Counts the 57014s a cancel request just sent may still cause.
    fn count_cancel_sent(&self) {
        self.stale_cancels.fetch_add(DELIVERIES_PER_CANCEL, Ordering::AcqRel);
    }

    /// Asks the server to cancel whatever this session is running now.
    /// Returns whether the request was delivered.
    pub(crate) async fn cancel_running(&self) -> bool {
        match self.cancel.cancel_query(NoTls).await {
            Ok(()) => {
                self.count_cancel_sent();
                true
            }
            Err(err) => {
                tracing::warn!(pid = self.pid, %err, "could not send a cancel request");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config() -> DbConfig {
        DbConfig::parse(&crate::testing::database_url()).expect("test database url")
    }

    /// A session on a migrated test database (a session prepares statements
    /// on pinlock's tables, so the schema must exist first).
    async fn open_session() -> Session {
        let config = config();
        config
            .with_client(async |client| super::super::migrate::migrate(client).await)
            .await
            .expect("connect")
            .expect("migrate");
        Session::open(&config, None).await.expect("session")
    }

    /// Runs a 300 ms statement on `session` while another connection cancels
    /// it midway, as a late-arriving cancel request would.
    async fn sleep_hit_by_a_cancel(session: &Session) -> Result<Row, tokio_postgres::Error> {
        let sleep = session.client.prepare("SELECT pg_sleep(0.3)::text").await.expect("prepare");
        let (other, connection) = config().open().await.expect("second connection");
        tokio::spawn(connection);
        let pid = session.backend_pid();
        let canceller = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            other.execute("SELECT pg_cancel_backend($1)", &[&pid]).await.expect("cancel");
        });
        let result = session.query_one(&sleep, &[]).await;
        canceller.await.expect("canceller");
        result
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_stale_cancel_is_absorbed_by_one_retry() {
        let session = open_session().await;
        // A cancel pinlock sent earlier, which the server has not applied yet.
        session.stale_cancels.store(1, Ordering::Release);
        assert!(sleep_hit_by_a_cancel(&session).await.is_ok(), "absorbed and retried");
        assert!(!session.cancel_may_arrive());
    }

    /// One cancel request may cancel two statements (the postmaster signals
    /// the backend and its process group; see the module docs). Played here
    /// by two `pg_cancel_backend`s (each signals once) after counting a
    /// request as sent, so that the test does not depend on the request's
    /// own timing: the first cancels a running statement, the second its
    /// retry. Both are absorbed: the statement runs to its end on the third
    /// try, and no cancel is left to come. With one 57014 counted per
    /// request, the second fails the statement; the control is
    /// `without_a_pending_cancel_a_57014_is_an_error`.
    #[tokio::test(flavor = "multi_thread")]
    async fn one_cancel_request_may_cancel_two_statements() {
        let session = open_session().await;
        let sleep = session.client.prepare("SELECT pg_sleep(0.4)::text").await.expect("prepare");
        let (other, connection) = config().open().await.expect("second connection");
        tokio::spawn(connection);
        let pid = session.backend_pid();
        session.count_cancel_sent();
        let deliveries = tokio::spawn(async move {
            for pause in [100, 200] {
                tokio::time::sleep(Duration::from_millis(pause)).await;
                other.execute("SELECT pg_cancel_backend($1)", &[&pid]).await.expect("a delivery");
            }
        });
        let started = std::time::Instant::now();
        let result = session.query_one(&sleep, &[]).await;
        deliveries.await.expect("deliveries");
        assert!(result.is_ok(), "both deliveries absorbed: {result:?}");
        // Two tries cut short, then a whole one: the branch ran twice.
        assert!(started.elapsed() >= Duration::from_millis(650), "only {:?}", started.elapsed());
        assert!(!session.cancel_may_arrive(), "both deliveries seen");
    }

    /// A server without some setting pinlock pins (PostgreSQL 13 has no
    /// `client_connection_check_interval`) is served anyway: the setup sets
    /// what exists and names what is missing. The control: the settings that
    /// exist were set.
    #[tokio::test(flavor = "multi_thread")]
    async fn settings_the_server_lacks_are_named_not_fatal() {
        let (client, connection) = config().open().await.expect("connect");
        tokio::spawn(connection);
        let names = vec!["lock_timeout", "pinlock_no_such_setting"];
        let values = vec!["0", "1"];
        client.execute("SET lock_timeout = '5s'", &[]).await.expect("set");
        let row = client.query_one(sql::SESSION_SETUP, &[&names, &values]).await.expect("setup");
        let missing: Vec<String> = row.get(1);
        assert_eq!(missing, vec!["pinlock_no_such_setting".to_owned()]);
        let lock_timeout: String = client.query_one("SHOW lock_timeout", &[]).await.expect("show").get(0);
        assert_eq!(lock_timeout, "0");
    }

    /// Whether the server shows `pid` waiting for an advisory lock within
    /// `within`, asked from a thread of its own while the caller's thread
    /// stays blocked (so a current-thread runtime's tasks cannot run).
    fn seen_waiting(pid: i32, within: Duration) -> bool {
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                let (client, connection) = config().open().await.expect("observer");
                tokio::spawn(connection);
                let deadline = std::time::Instant::now() + within;
                loop {
                    let row = client
                        .query_one(
                            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1 AND NOT granted",
                            &[&pid],
                        )
                        .await
                        .expect("pg_locks");
                    if row.get::<_, i64>(0) > 0 {
                        return true;
                    }
                    if std::time::Instant::now() > deadline {
                        return false;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .join()
        .expect("observer thread")
    }

    /// On a session no other job shares, a statement a job waits for is
    /// written by the job's own poll: the server has it although the
    /// connection's task never ran (the thread is blocked right after the
    /// first poll). The twin: on a session jobs share, the same statement
    /// waits for the task's next turn (see `super::driver`); once the thread
    /// is free, the task writes it.
    #[test]
    fn a_waited_statement_is_written_at_once_only_where_a_job_is_alone() {
        use futures_util::FutureExt;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let session = open_session().await;
            let (holder, connection) = config().open().await.expect("holder");
            tokio::spawn(connection);
            let keys = [rand::random::<i64>() >> 1, rand::random::<i64>() >> 1];
            for key in keys {
                holder.execute("SELECT pg_advisory_lock($1)", &[&key]).await.expect("hold");
            }
            let lock = &session.stmts.lock_exclusive_unfenced;
            let pid = session.backend_pid();

            // A job's own session (no tenants): written by the first poll.
            let params: [&(dyn ToSql + Sync); 2] = [&keys[0], &keys[1]];
            let mut first = std::pin::pin!(session.awaited(session.client.query_one(lock, &params[..1])));
            assert!((&mut first).now_or_never().is_none(), "the key is held elsewhere");
            assert!(seen_waiting(pid, Duration::from_secs(2)), "written before the task ran");
            holder.execute("SELECT pg_advisory_unlock($1)", &[&keys[0]]).await.expect("unlock");
            first.await.expect("granted");

            // Shared by more than the eager bound: left for the task.
            for _ in 0..=crate::db::driver::EAGER_WRITE_TENANTS {
                session.add_tenant();
            }
            let mut second = std::pin::pin!(session.awaited(session.client.query_one(lock, &params[1..])));
            assert!((&mut second).now_or_never().is_none(), "the key is held elsewhere");
            assert!(!seen_waiting(pid, Duration::from_millis(500)), "not written before the task ran");
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(seen_waiting(pid, Duration::from_secs(2)), "written by the task once it ran");
            holder.execute("SELECT pg_advisory_unlock($1)", &[&keys[1]]).await.expect("unlock");
            second.await.expect("granted");
        });
    }

    /// Measures what [`DELIVERIES_PER_CANCEL`] rests on (run it with
    /// `--ignored --nocapture`): cancel requests, each sent while the backend
    /// has a queue of short statements to run, and how many statements each
    /// cancelled. On the machine of the fix, 18–23 % of them cancelled two
    /// (55 and 69 of 300 requests in two runs). Asserted: none cancels more
    /// than two, and the control, `pg_cancel_backend` (which signals once),
    /// at most one (a cancel that lands while the backend reads the next
    /// statement is ignored).
    #[tokio::test(flavor = "multi_thread")]
    #[ignore = "a measurement of the server, printed"]
    async fn count_the_statements_each_cancel_request_cancels() {
        let session = open_session().await;
        let (other, connection) = config().open().await.expect("second connection");
        tokio::spawn(connection);
        let short = session.client.prepare("SELECT pg_sleep(0.002)").await.expect("prepare");
        let pid = session.backend_pid();
        let cancelled = |by_request: bool| {
            let (session, other, short) = (&session, &other, &short);
            async move {
                // Pipelined: the backend always has a next statement.
                let queued = futures_util::future::join_all((0..40).map(|_| session.client.query(short, &[])));
                let cancel = async {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    if by_request {
                        session.cancel.cancel_query(NoTls).await.expect("cancel request");
                    } else {
                        other.execute("SELECT pg_cancel_backend($1)", &[&pid]).await.expect("cancel");
                    }
                };
                let (answers, ()) = tokio::join!(queued, cancel);
                answers.iter().filter(|a| a.is_err()).count()
            }
        };
        let (mut twice, rounds) = (0, 200);
        for _ in 0..rounds {
            let n = cancelled(true).await;
            assert!(n <= DELIVERIES_PER_CANCEL as usize, "one request cancelled {n}");
            twice += usize::from(n == 2);
            assert!(cancelled(false).await <= 1, "control: pg_cancel_backend cancels at most one");
        }
        eprintln!("{twice} of {rounds} cancel requests cancelled two statements");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn without_a_pending_cancel_a_57014_is_an_error() {
        let session = open_session().await;
        let err = sleep_hit_by_a_cancel(&session).await.expect_err("cancelled");
        assert_eq!(code_of(&err), Some(sqlstate::QUERY_CANCELED));
    }
}
