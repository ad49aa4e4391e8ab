//! `pinlock serve`: the long-running host a platform team deploys. It
//! serves the workers of its configuration ([`config`], [`workers`]), takes
//! jobs from the queue every host on the database shares ([`crate::queue`])
//! and runs them on the shared scheduler ([`crate::jobs`]) through the loops
//! in [`dispatch`], and answers HTTP ([`api`]: the `/v1` API, probes,
//! [`metrics`] and the dashboard at `/`, see [`dashboard`]). On
//! SIGTERM/SIGINT it drains: readiness fails at once, no new claims, running
//! jobs get a grace period, then are cancelled (their locks released, their
//! leases given back so another host takes them at once).

pub mod api;
pub mod config;
mod dashboard;
mod dispatch;
pub mod metrics;
pub mod workers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::db::{Database, DbConfig, DbSettings};
use crate::jobs::Scheduler;
use crate::queue::{Finished, Queue};
use crate::runtime::{JobOutcome, Runtime, RuntimeSettings};
pub use config::ServeConfig;
use dispatch::Ended;
use metrics::Metrics;
use workers::WorkerSet;

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The WebAssembly runtime.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// A worker.
    #[error(transparent)]
    Worker(#[from] workers::LoadError),
    /// The database.
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    /// The listening socket.
    #[error("cannot listen on {addr}: {cause}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        cause: std::io::Error,
    },
}

/// Everything a running server shares between its loops and handlers.
pub(crate) struct Service {
    pub(crate) config: ServeConfig,
    pub(crate) workers: WorkerSet,
    pub(crate) scheduler: Scheduler,
    pub(crate) queue: Queue,
    pub(crate) db: Arc<Database>,
    pub(crate) db_config: DbConfig,
    pub(crate) metrics: Metrics,
    pub(crate) dashboard: dashboard::Dashboard,
    /// Set when the drain starts: readiness fails, no more claims.
    pub(crate) draining: AtomicBool,
    /// Wakes the dispatcher (a job became due, a slot came free).
    pub(crate) wake: Notify,
    /// Synchronous runs waiting for their outcome, by job id.
    pub(crate) waiters: Mutex<HashMap<i64, oneshot::Sender<JobOutcome>>>,
    pub(crate) ended: mpsc::UnboundedSender<Ended>,
    pub(crate) ended_release: mpsc::UnboundedSender<Finished>,
}

/// Where a server's database is and what it calls itself.
pub struct ServeTarget {
    /// The database (with this host's `application_name`).
    pub db: DbConfig,
    /// This host's id in the queue (its `application_name`).
    pub host_id: String,
    /// Where compiled components are cached (`None`: no cache).
    pub cache_dir: Option<PathBuf>,
    /// Lock engine defaults (`[database] max_sessions` overrides its session bound).
    pub db_settings: DbSettings,
}

/// A started server.
pub struct Server {
    service: Arc<Service>,
    addr: SocketAddr,
    http: tokio::task::JoinHandle<()>,
    stop_http: CancellationToken,
    /// Claims jobs; stopped cooperatively (a claim that committed must
    /// start its jobs, or they would sit `running` with nobody renewing them).
    dispatcher: tokio::task::JoinHandle<()>,
    loops: Vec<tokio::task::JoinHandle<()>>,
    completer: tokio::task::JoinHandle<()>,
    stop_completer: CancellationToken,
}

impl Server {
    /// Loads the workers, migrates the database, binds the address and
    /// starts serving.
    pub async fn start(config: ServeConfig, target: ServeTarget) -> Result<Server, ServeError> {
        let memory_limit = config.workers.values().map(|w| w.memory_limit_mib << 20).max().unwrap_or(64 << 20);
        let runtime = Arc::new(Runtime::new(RuntimeSettings {
            max_concurrent_jobs: u32::try_from(config.server.max_jobs).unwrap_or(u32::MAX),
            memory_limit,
            ..RuntimeSettings::default()
        })?);
        let workers = WorkerSet::load(&runtime, &config.workers, target.cache_dir.as_deref())?;
        let settings = DbSettings {
            max_sessions: config.database.max_sessions.unwrap_or(target.db_settings.max_sessions),
            max_locks_per_job: workers.iter().map(|w| w.section.max_locks_per_job).max().unwrap_or(64),
            ..target.db_settings
        };
        let db = Database::new(target.db.clone(), settings);
        db.migrate().await?;
        let queue = Queue::new(target.db.clone(), target.host_id);
        queue.register_workers(&workers.names()).await?;
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .map_err(|cause| ServeError::Listen { addr: config.server.listen, cause })?;
        let addr = listener.local_addr().map_err(|cause| ServeError::Listen { addr: config.server.listen, cause })?;

        let (ended_tx, ended_rx) = mpsc::unbounded_channel();
        let (release_tx, release_rx) = mpsc::unbounded_channel();
        let (notice_tx, notice_rx) = mpsc::unbounded_channel();
        let service = Arc::new(Service {
            scheduler: Scheduler::new(runtime, db.clone(), config.server.max_jobs),
            dashboard: dashboard::Dashboard::new(&config.dashboard, target.db.clone()),
            config,
            workers,
            queue,
            db,
            db_config: target.db,
            metrics: Metrics::default(),
            draining: AtomicBool::new(false),
            wake: Notify::new(),
            waiters: Mutex::new(HashMap::new()),
            ended: ended_tx,
            ended_release: release_tx,
        });
        let stop_completer = CancellationToken::new();
        let completer = tokio::spawn(service.clone().complete(ended_rx, release_rx, stop_completer.clone()));
        let listen = {
            let service = service.clone();
            tokio::spawn(async move { service.queue.listen(notice_tx, Duration::from_secs(1)).await })
        };
        let dispatcher = tokio::spawn(service.clone().dispatch());
        let mut loops = vec![
            tokio::spawn(service.clone().keep_leases()),
            tokio::spawn(service.clone().janitor()),
            tokio::spawn(service.clone().on_notices(notice_rx)),
            listen,
        ];
        loops.extend(dashboard::spawn(&service));
        let stop_http = CancellationToken::new();
        let app = api::router(service.clone());
        let http = {
            let stop = stop_http.clone();
            tokio::spawn(async move {
                let serving = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await });
                if let Err(e) = serving.await {
                    tracing::error!(error = %e, "the HTTP server failed");
                }
            })
        };
        Ok(Server { service, addr, http, stop_http, dispatcher, loops, completer, stop_completer })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drains and stops: readiness fails at once, no new claims; running
    /// jobs get `grace`, then are cancelled (locks released, their jobs given
    /// back to the queue). Returns early, cancelling at once, if `hurry`
    /// fires (a second signal).
    pub async fn drain(self, grace: Duration, hurry: impl Future<Output = ()>) {
        let service = self.service.clone();
        service.draining.store(true, Ordering::Release);
        service.wake.notify_one();
        tracing::info!(running = service.scheduler.in_flight(), ?grace, "draining");
        // The dispatcher sees the flag at its next turn; a claim under way
        // finishes and starts its jobs (they drain like the others).
        if tokio::time::timeout(Duration::from_secs(35), self.dispatcher).await.is_err() {
            tracing::warn!("the dispatcher did not stop in time");
        }
        tokio::pin!(hurry);
        tokio::select! {
            () = service.scheduler.idle() => {}
            () = tokio::time::sleep(grace) => tracing::info!("grace period over; cancelling running jobs"),
            () = &mut hurry => tracing::info!("second signal; cancelling running jobs now"),
        }
        service.scheduler.cancel_all();
        service.scheduler.idle().await;
        for task in &self.loops {
            task.abort();
        }
        // Every job has stopped: this host holds and waits for nothing.
        dashboard::withdraw(&service).await;
        // Every job has handed its outcome over: the completer writes what
        // is left (a biased select takes queued outcomes before the stop).
        self.stop_completer.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.completer).await;
        self.stop_http.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.http).await;
    }
}
