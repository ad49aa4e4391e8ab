//! Settings from flags and environment: where the database is, and the
//! limits of sessions, locks and jobs.

use std::time::Duration;

use clap::Args;

use pinlock::db::{DbConfig, DbError, DbSettings};
use pinlock::runtime::RuntimeSettings;

/// Flags every command that talks to the database shares.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// PostgreSQL URL or libpq string. Default: PGHOST/PGPORT/PGUSER/PGDATABASE,
    /// else localhost:5432, user postgres.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Most PostgreSQL sessions this host opens; jobs beyond it wait.
    #[arg(long, env = "PINLOCK_MAX_SESSIONS", default_value_t = DbSettings::default().max_sessions, global = true)]
    pub max_sessions: usize,

    /// Lock wait limit when a guest gives none, in milliseconds.
    #[arg(long, env = "PINLOCK_LOCK_TIMEOUT_MS", default_value_t = DbSettings::default().default_lock_timeout.as_millis() as u64, global = true)]
    pub lock_timeout_ms: u64,

    /// Most locks one job may hold at once.
    #[arg(long, env = "PINLOCK_MAX_LOCKS_PER_JOB", default_value_t = DbSettings::default().max_locks_per_job, global = true)]
    pub max_locks_per_job: usize,

    /// How many of the sessions carry many jobs' locks at once (0: a session
    /// per job, as before multiplexing; see docs/design/sessions.md).
    #[arg(long, env = "PINLOCK_SHARED_SESSIONS", default_value_t = DbSettings::default().shared_sessions, global = true)]
    pub shared_sessions: usize,

    /// Most locks one shared session carries (each slows its session's
    /// statements by ~50 ns).
    #[arg(long, env = "PINLOCK_MAX_LOCKS_PER_SESSION", default_value_t = DbSettings::default().max_locks_per_session, global = true)]
    pub max_locks_per_session: usize,

    /// Jobs placed on one shared session before the next is used: their
    /// statements are pipelined (faster), but a slow one delays the others.
    #[arg(long, env = "PINLOCK_JOBS_PER_SHARED_SESSION", default_value_t = DbSettings::default().jobs_per_shared_session, global = true)]
    pub jobs_per_shared_session: usize,

    /// Wall-clock limit of one job, in milliseconds.
    #[arg(long, env = "PINLOCK_TIME_LIMIT_MS", default_value_t = RuntimeSettings::default().time_limit.as_millis() as u64, global = true)]
    pub time_limit_ms: u64,

    /// Memory limit of one job, in MiB.
    #[arg(long, env = "PINLOCK_MEMORY_LIMIT_MIB", default_value_t = RuntimeSettings::default().memory_limit >> 20, global = true)]
    pub memory_limit_mib: usize,

    /// Threads that run jobs, their WebAssembly and their sessions' I/O, each
    /// a shard with its own runtime (`pinlock::shard`). One (the default)
    /// makes no cross-thread wake-ups, which on a small machine beside its
    /// server is fastest; raise it for workers that compute more than they
    /// wait (see docs/design/threads.md).
    #[arg(long, env = "PINLOCK_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..), global = true)]
    pub threads: u16,

    /// This host's name in `application_name` (default: pinlock/<hostname>/<pid>).
    #[arg(long, env = "PINLOCK_HOST_ID", global = true)]
    pub host_id: Option<String>,
}

impl Settings {
    /// The async runtime every command runs on (a current-thread one: shard
    /// 0), with `threads - 1` more shards started beside it.
    pub fn async_runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        pinlock::shard::start(runtime.handle().clone(), usize::from(self.threads))?;
        Ok(runtime)
    }

    /// The database location, with this host's `application_name`.
    pub fn db_config(&self) -> Result<DbConfig, DbError> {
        let mut config = match &self.database_url {
            Some(url) => DbConfig::parse(url)?,
            None => DbConfig::from_pg_env()?,
        };
        config.set_application_name(&self.host_name());
        Ok(config)
    }

    /// Whether the user named a database (flag or any libpq variable).
    pub fn database_given(&self) -> bool {
        self.database_url.is_some()
            || ["PGHOST", "PGPORT", "PGUSER", "PGDATABASE"].iter().any(|v| std::env::var_os(v).is_some())
    }

    /// How this host names itself to PostgreSQL.
    pub fn host_name(&self) -> String {
        self.host_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "host".into());
            format!("pinlock/{host}/{}", std::process::id())
        })
    }

    /// Lock engine limits.
    pub fn db_settings(&self) -> DbSettings {
        DbSettings {
            max_sessions: self.max_sessions,
            default_lock_timeout: Duration::from_millis(self.lock_timeout_ms),
            max_locks_per_job: self.max_locks_per_job,
            shared_sessions: self.shared_sessions,
            max_locks_per_session: self.max_locks_per_session,
            jobs_per_shared_session: self.jobs_per_shared_session,
        }
    }

    /// Job limits, with room for `concurrency` jobs at once.
    pub fn runtime_settings(&self, concurrency: usize) -> RuntimeSettings {
        RuntimeSettings {
            max_concurrent_jobs: concurrency.clamp(1, 10_000) as u32,
            memory_limit: self.memory_limit_mib << 20,
            time_limit: Duration::from_millis(self.time_limit_ms),
        }
    }
}
