//! `pinlock serve`'s configuration: a TOML file (`--config`), every field
//! optional. With no file at all the server serves the embedded examples on
//! loopback. Flags and environment variables override the file (see the
//! CLI's `serve` command); the database falls back to `DATABASE_URL` and the
//! libpq variables as for every other command.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:7878"
//! tokens = ["change-me"]          # bearer tokens; required unless loopback only
//! max_jobs = 64                   # jobs running at once on this host
//! drain_grace_secs = 30           # on SIGTERM: how long running jobs may finish
//!
//! [database]
//! url = "host=db.internal user=pinlock dbname=pinlock"
//! max_sessions = 16
//!
//! [queue]
//! lease_secs = 30                 # a host that stops renewing loses its jobs after this
//! poll_ms = 1000                  # fallback when no NOTIFY arrives
//! retention_hours = 24            # finished jobs are pruned after this
//! max_attempts = 5                # default per job
//!
//! [dashboard]                     # the page at `/`
//! slow_secs = 10                  # holds and waits longer than this are marked
//! sample_secs = 10                # "over time" keeps one sample per this, for an hour
//!
//! [workers.inventory]
//! component = "workers/inventory.wasm"
//! time_limit_ms = 60000
//! memory_limit_mib = 64
//! max_locks_per_job = 64
//! concurrency = 16
//! capabilities = ["lock", "key-value", "logging"]
//! buckets = ["inventory"]         # key-value buckets it may open (default: any)
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why the configuration cannot be used (always the operator's to fix).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {cause}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        cause: std::io::Error,
    },
    /// The file is not valid TOML of this shape.
    #[error("invalid configuration in {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, with the line.
        message: String,
    },
    /// A value is not acceptable.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// The HTTP side.
    #[serde(default)]
    pub server: ServerSection,
    /// Where the database is.
    #[serde(default)]
    pub database: DatabaseSection,
    /// The job queue.
    #[serde(default)]
    pub queue: QueueSection,
    /// The dashboard.
    #[serde(default)]
    pub dashboard: DashboardSection,
    /// The workers this host runs, by name.
    #[serde(default)]
    pub workers: BTreeMap<String, WorkerSection>,
}

/// `[server]`.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Bearer tokens accepted (never logged or serialized). Required unless
    /// `listen` is a loopback address.
    #[serde(skip_serializing)]
    pub tokens: Vec<String>,
    /// Jobs running at once on this host.
    pub max_jobs: usize,
    /// On SIGTERM/SIGINT, how long running jobs may go on before they are
    /// cancelled.
    pub drain_grace_secs: u64,
    /// Largest job input accepted over HTTP, in bytes.
    pub max_input_bytes: usize,
}

/// Tokens are never printed.
impl std::fmt::Debug for ServerSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSection")
            .field("listen", &self.listen)
            .field("tokens", &format_args!("[{} redacted]", self.tokens.len()))
            .field("max_jobs", &self.max_jobs)
            .field("drain_grace_secs", &self.drain_grace_secs)
            .field("max_input_bytes", &self.max_input_bytes)
            .finish()
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            tokens: Vec::new(),
            max_jobs: 64,
            drain_grace_secs: 30,
            max_input_bytes: 1 << 20,
        }
    }
}

/// `[database]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSection {
    /// A `postgres://` URL or libpq `key=value` string (default:
    /// `DATABASE_URL`, else the libpq variables).
    pub url: Option<String>,
    /// Most sessions this host opens (default 16).
    pub max_sessions: Option<usize>,
}

/// `[queue]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSection {
    /// How long a claimed job's lease lasts; the running host renews it every
    /// third of that. A host that stops renewing loses its jobs to others.
    pub lease_secs: u64,
    /// How often a host looks for work when no notification arrives.
    pub poll_ms: u64,
    /// How long finished jobs are kept.
    pub retention_hours: u64,
    /// Default attempts per job (a submit may ask for another number).
    pub max_attempts: i32,
}

impl Default for QueueSection {
    fn default() -> Self {
        Self { lease_secs: 30, poll_ms: 1000, retention_hours: 24, max_attempts: 5 }
    }
}

/// `[dashboard]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardSection {
    /// Holds and waits longer than this are marked on the page.
    pub slow_secs: u64,
    /// Seconds between two samples of "over time" (an hour of them is kept).
    pub sample_secs: u64,
}

impl Default for DashboardSection {
    fn default() -> Self {
        Self { slow_secs: 10, sample_secs: 10 }
    }
}

/// What a worker may import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// `pinlock:host/distributed-lock` and the `wasi:distributed-lock` draft.
    Lock,
    /// `pinlock:host/key-value` and `wasi:keyvalue`.
    KeyValue,
    /// `pinlock:host/logging` and `wasi:logging`.
    Logging,
}

impl Capability {
    /// Every capability.
    pub const ALL: [Capability; 3] = [Capability::Lock, Capability::KeyValue, Capability::Logging];

    /// The WIT interfaces it grants (name prefixes, without the version).
    pub fn interfaces(self) -> &'static [&'static str] {
        match self {
            Capability::Lock => &["pinlock:host/distributed-lock", "wasi:distributed-lock/"],
            Capability::KeyValue => &["pinlock:host/key-value", "wasi:keyvalue/"],
            Capability::Logging => &["pinlock:host/logging", "wasi:logging/"],
        }
    }

    /// The capability that grants importing `interface`, if one does (WASI
    /// 0.2 needs none: the job's context grants no files, network or
    /// environment).
    pub fn needed_for(interface: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.interfaces().iter().any(|prefix| interface.starts_with(prefix)))
    }

    /// Its name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Lock => "lock",
            Capability::KeyValue => "key-value",
            Capability::Logging => "logging",
        }
    }
}

/// `[workers.NAME]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSection {
    /// The component file (relative to the configuration file).
    pub component: PathBuf,
    /// Wall-clock limit of one job.
    #[serde(default = "default_time_limit_ms")]
    pub time_limit_ms: u64,
    /// Memory limit of one job.
    #[serde(default = "default_memory_limit_mib")]
    pub memory_limit_mib: usize,
    /// Most locks one job may hold.
    #[serde(default = "default_max_locks")]
    pub max_locks_per_job: usize,
    /// Most jobs of this worker running at once on this host.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// What it may import (default: everything).
    #[serde(default = "all_capabilities")]
    pub capabilities: Vec<Capability>,
    /// The key-value buckets it may open (default: any).
    #[serde(default)]
    pub buckets: Option<Vec<String>>,
}

fn default_time_limit_ms() -> u64 {
    60_000
}
fn default_memory_limit_mib() -> usize {
    64
}
fn default_max_locks() -> usize {
    64
}
fn default_concurrency() -> usize {
    16
}
fn all_capabilities() -> Vec<Capability> {
    Capability::ALL.to_vec()
}

impl WorkerSection {
    /// A worker with the default limits and every capability.
    pub fn new(component: impl Into<PathBuf>) -> Self {
        Self {
            component: component.into(),
            time_limit_ms: default_time_limit_ms(),
            memory_limit_mib: default_memory_limit_mib(),
            max_locks_per_job: default_max_locks(),
            concurrency: default_concurrency(),
            capabilities: all_capabilities(),
            buckets: None,
        }
    }
}

impl ServeConfig {
    /// Reads and checks a configuration file; component paths become
    /// relative to the file's folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|cause| ConfigError::Read { path: path.display().to_string(), cause })?;
        let mut config: ServeConfig = toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.display().to_string(), message: e.to_string() })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for worker in config.workers.values_mut() {
            if worker.component.is_relative() {
                worker.component = base.join(&worker.component);
            }
        }
        config.check()?;
        Ok(config)
    }

    /// Checks values that TOML types alone do not.
    pub fn check(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if !self.server.listen.ip().is_loopback() && self.server.tokens.is_empty() {
            return invalid(format!(
                "server.listen is {} (not loopback): set server.tokens (or PINLOCK_TOKENS) so the API requires a bearer token",
                self.server.listen
            ));
        }
        if self.server.tokens.iter().any(|t| t.len() < 8) {
            return invalid("server.tokens: each token must be at least 8 characters".into());
        }
        if self.server.max_jobs == 0 {
            return invalid("server.max_jobs must be at least 1".into());
        }
        if self.queue.lease_secs < 3 {
            return invalid("queue.lease_secs must be at least 3".into());
        }
        if self.queue.max_attempts < 1 {
            return invalid("queue.max_attempts must be at least 1".into());
        }
        if self.dashboard.slow_secs == 0 || !(1..=60).contains(&self.dashboard.sample_secs) {
            return invalid("dashboard.slow_secs must be at least 1 and dashboard.sample_secs 1 to 60".into());
        }
        for (name, worker) in &self.workers {
            if !valid_worker_name(name) {
                return invalid(format!("worker name {name:?}: use 1 to 64 letters, digits, '-' or '_'"));
            }
            if worker.concurrency == 0 || worker.time_limit_ms == 0 || worker.memory_limit_mib == 0 {
                return invalid(format!("workers.{name}: concurrency, time and memory limits must be above 0"));
            }
        }
        Ok(())
    }
}

/// Worker names: 1 to 64 of `[A-Za-z0-9_-]`.
pub fn valid_worker_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each capability grants pinlock's interface and its standard
    /// counterpart; WASI 0.2 needs none.
    #[test]
    fn capabilities_cover_the_standard_interfaces_too() {
        for (interface, needed) in [
            ("pinlock:host/key-value@0.2.1", Some(Capability::KeyValue)),
            ("wasi:keyvalue/atomics@0.2.0-draft2", Some(Capability::KeyValue)),
            ("pinlock:host/distributed-lock@0.2.0", Some(Capability::Lock)),
            ("wasi:distributed-lock/locker@0.1.0", Some(Capability::Lock)),
            ("pinlock:host/logging@0.2.1", Some(Capability::Logging)),
            ("wasi:logging/logging@0.1.0-draft", Some(Capability::Logging)),
            ("wasi:cli/stderr@0.2.0", None),
        ] {
            assert_eq!(Capability::needed_for(interface), needed, "{interface}");
        }
    }

    #[test]
    fn the_documented_example_parses_and_unknown_fields_are_refused() {
        let doc = include_str!("config.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| format!("{}\n", l.trim_start_matches("//!").trim_start()))
            .collect();
        let config: ServeConfig = toml::from_str(&example).expect("the example parses");
        config.check().expect("the example is valid");
        assert_eq!(config.workers["inventory"].capabilities.len(), 3);
        assert!(toml::from_str::<ServeConfig>("[server]\nlisen = \"127.0.0.1:1\"").is_err());
        let public = ServeConfig {
            server: ServerSection { listen: "0.0.0.0:7878".parse().expect("addr"), ..Default::default() },
            ..Default::default()
        };
        assert!(public.check().is_err(), "a public address needs tokens");
    }
}
