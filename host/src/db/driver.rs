//! Who polls a session's connection future, and so when its statements are
//! written. tokio-postgres queues a statement for the connection future,
//! which writes whatever is queued when it is polled. Two kinds of poll:
//! - the session's **task** polls it whenever it is woken (an answer
//!   arrived, a statement was queued), one scheduler turn late
//!   ([`coalesced`]), so that the statements the thread's ready jobs queue
//!   in that turn go out in one `send`;
//! - on a session a job has **to itself** (its own session, or a shared one
//!   with no other tenant: at most [`EAGER_WRITE_TENANTS`]), a job that
//!   waits for an answer polls it itself, right after queueing the
//!   statement ([`Driver::write_now`]), so the server starts on it at once.
//!
//! Why both (BENCHMARKS.md, "Issue 8, sixth pass" and "eighth pass"): with
//! other jobs on a session, the thread has other jobs to run while the
//! server answers, and one write per turn carries several statements. A job
//! alone has nobody to share a write with: waiting a turn would only delay
//! it. (In the sixth pass, four jobs on a session fell into lockstep without
//! eager writes, and writing at once up to four tenants helped; since a
//! batch lane runs its next guest while the last job's release finishes,
//! seventh pass, they no longer do, and at four the extra sends cost more.)
//!
//! Every poll passes the task's waker, so whatever the connection waits for
//! (the socket, the queue) wakes the task, whoever polled. The future sits
//! behind a mutex; a job's poll is skipped while another thread polls it.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{Connection, Socket};

/// Up to this many jobs on a session, a statement a job waits for is
/// written at once (see the module docs). Measured at C = 4 (four jobs on
/// one session, after scenario 1): 1 gave 35.4–37.2k jobs/s where 4 gave
/// 31.9–34.7k (each extra `send` wakes the backend, which a VM pays dearly
/// for); at 8 and more tenants writing at once cost 17–24 % (sixth pass).
pub(crate) const EAGER_WRITE_TENANTS: usize = 1;

type Driven = Pin<Box<Connection<Socket, NoTlsStream>>>;

/// A session's connection future, shared by its task and its jobs.
pub(crate) struct Driver {
    state: Mutex<State>,
    /// Jobs whose home the session is (0 for a job's own session): the
    /// pool packs jobs by it, and it decides whether jobs write at once.
    tenants: AtomicUsize,
}

struct State {
    /// `None` once it ended, or once its task was dropped (aborted): the
    /// socket closes then, whatever a job still had queued.
    connection: Option<Driven>,
    /// The task's waker (`None` until the task's first poll).
    task: Option<Waker>,
    /// How it ended, when a job's poll saw it end (the task reports it).
    ended: Option<Result<(), tokio_postgres::Error>>,
}

impl Driver {
    /// Spawns the task that drives `connection`. `on_end` runs when the task
    /// ends, however it ends (aborted included), after the socket closed.
    /// Returns the driver and the task's abort handle.
    pub(crate) fn spawn(
        connection: Connection<Socket, NoTlsStream>,
        on_end: impl FnOnce() + Send + 'static,
    ) -> (Arc<Driver>, tokio::task::AbortHandle) {
        let state = State { connection: Some(Box::pin(connection)), task: None, ended: None };
        let driver = Arc::new(Driver { state: Mutex::new(state), tenants: AtomicUsize::new(0) });
        let polled = driver.clone();
        let task = tokio::spawn(async move {
            let _ended = OnDrop(Some(|| {
                polled.close();
                on_end();
            }));
            // Ends when the server closes the socket (backend terminated,
            // network gone) or when the client is dropped.
            if let Err(err) = coalesced(std::future::poll_fn(|cx| polled.poll_task(cx))).await {
                tracing::debug!(error = %super::error::describe(&err), "session connection ended");
            }
        });
        (driver, task.abort_handle())
    }

    /// Writes what is queued now, if few jobs share the session (see the
    /// module docs): a job calls it when it starts waiting for an answer.
    pub(crate) fn write_now(&self) {
        if self.tenants() > EAGER_WRITE_TENANTS {
            return;
        }
        let Ok(mut state) = self.state.try_lock() else { return };
        let State { connection: Some(connection), task: Some(task), .. } = &mut *state else { return };
        let task = task.clone();
        if let Poll::Ready(ended) = connection.as_mut().poll(&mut Context::from_waker(&task)) {
            state.connection = None;
            state.ended = Some(ended);
            task.wake();
        }
    }

    /// Runs `call`, a statement queued through this session's client that
    /// the caller waits for: once its first poll queued it, writes it at
    /// once if few jobs share the session.
    pub(crate) async fn awaited<T>(&self, call: impl Future<Output = T>) -> T {
        let mut call = std::pin::pin!(call);
        let mut queued = false;
        std::future::poll_fn(|cx| {
            let polled = call.as_mut().poll(cx);
            if polled.is_pending() && !std::mem::replace(&mut queued, true) {
                self.write_now();
            }
            polled
        })
        .await
    }

    /// Jobs whose home the session is now.
    pub(crate) fn tenants(&self) -> usize {
        self.tenants.load(Ordering::Relaxed)
    }

    /// Counts one more job whose home the session is.
    pub(crate) fn add_tenant(&self) {
        self.tenants.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one fewer.
    pub(crate) fn remove_tenant(&self) {
        self.tenants.fetch_sub(1, Ordering::Relaxed);
    }

    /// The task's poll.
    fn poll_task(&self, cx: &mut Context<'_>) -> Poll<Result<(), tokio_postgres::Error>> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !state.task.as_ref().is_some_and(|task| task.will_wake(cx.waker())) {
            state.task = Some(cx.waker().clone());
        }
        if let Some(ended) = state.ended.take() {
            return Poll::Ready(ended);
        }
        let Some(connection) = state.connection.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let polled = connection.as_mut().poll(cx);
        if polled.is_ready() {
            state.connection = None;
        }
        polled
    }

    /// Drops the connection, which closes the socket.
    pub(crate) fn close(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).connection = None;
    }
}

/// Drives the connection future, polling it one scheduler turn after each
/// wake-up rather than at once. A job that sends a statement wakes the
/// connection task, and on a multi-thread runtime tokio runs a task woken
/// that way next, before the other ready tasks: alone, each statement of the
/// jobs sharing the session would go out in a `send` of its own (on
/// loopback, a send also delivers the packet and wakes the backend, on this
/// process's CPU). Yielding once lets the other ready jobs queue their
/// statements first; the connection then writes them all in one `send`, and
/// the server answers them together (BENCHMARKS.md, "Issue 8, fourth pass":
/// less server CPU per job). The yield wakes the task at once, to the back
/// of the run queue: `tokio::task::yield_now` would wait for the next poll
/// of the I/O driver, which measured slower (fifth pass). On the
/// current-thread runtimes pinlock's commands use, a woken task goes to the
/// back of the run queue anyway, and the yield measured neither faster nor
/// slower (sixth pass): it matters for a program that runs the library on a
/// multi-thread runtime.
async fn coalesced<F: Future>(connection: F) -> F::Output {
    let mut connection = std::pin::pin!(connection);
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if !std::mem::replace(&mut yielded, true) {
            // Back of the run queue, behind the jobs that are ready now.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        // Polled until pending; the next wake-up yields first again.
        yielded = false;
        connection.as_mut().poll(cx)
    })
    .await
}

/// Runs a closure when dropped.
struct OnDrop<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}
