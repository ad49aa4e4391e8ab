//! The workers a server runs: each compiled once (the artefact cached on disk
//! by content hash), checked against what it is granted (a component that
//! imports a capability it was not given is refused at load, with a clear
//! message), and given its limits. With no configuration, the examples
//! embedded in the binary.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::config::{Capability, WorkerSection};
use crate::runtime::{JobLimits, Runtime, Worker, WorkerError};

/// The examples built into the binary (served when no configuration names
/// workers): name and component bytes.
pub const EMBEDDED: &[(&str, &[u8])] = &[
    ("inventory", include_bytes!(concat!(env!("PINLOCK_GUESTS_DIR"), "/inventory.wasm"))),
    ("transfer", include_bytes!(concat!(env!("PINLOCK_GUESTS_DIR"), "/transfer.wasm"))),
    ("singleton", include_bytes!(concat!(env!("PINLOCK_GUESTS_DIR"), "/singleton.wasm"))),
    ("report", include_bytes!(concat!(env!("PINLOCK_GUESTS_DIR"), "/report.wasm"))),
    ("fenced-write", include_bytes!(concat!(env!("PINLOCK_GUESTS_DIR"), "/fenced_write.wasm"))),
];

/// The embedded example named `name`.
pub fn embedded(name: &str) -> Option<&'static [u8]> {
    EMBEDDED.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes)
}

/// Why a worker cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("worker {name}: cannot read {path}: {cause}")]
    Read {
        /// The worker.
        name: String,
        /// Its component file.
        path: String,
        /// Why.
        cause: std::io::Error,
    },
    /// Not a worker component.
    #[error("worker {name}: {cause}")]
    Component {
        /// The worker.
        name: String,
        /// Why.
        cause: WorkerError,
    },
    /// It imports what it was not granted.
    #[error(
        "worker {name} imports {interface}, but its capabilities are [{granted}]; \
         add \"{capability}\" to workers.{name}.capabilities or rebuild it without that import"
    )]
    NotGranted {
        /// The worker.
        name: String,
        /// The interface it imports.
        interface: String,
        /// The capability that would grant it.
        capability: &'static str,
        /// What it was granted.
        granted: String,
    },
}

/// One worker, ready to serve.
pub struct ServedWorker {
    /// Its name (what jobs name).
    pub name: Arc<str>,
    /// The loaded component, with its limits.
    pub worker: Arc<Worker>,
    /// Its configuration.
    pub section: WorkerSection,
    /// Its jobs running on this host, at most `section.concurrency`.
    pub slots: Arc<Semaphore>,
}

/// Every worker of a server, by name.
pub struct WorkerSet {
    workers: BTreeMap<String, ServedWorker>,
}

impl WorkerSet {
    /// Loads the configured workers, or the embedded examples when none is
    /// configured. Compiled artefacts are kept in `cache`.
    pub fn load(
        runtime: &Runtime,
        sections: &BTreeMap<String, WorkerSection>,
        cache: Option<&Path>,
    ) -> Result<Self, LoadError> {
        let mut workers = BTreeMap::new();
        if sections.is_empty() {
            for (name, bytes) in EMBEDDED {
                let section = WorkerSection::new(format!("(embedded {name})"));
                workers.insert(name.to_string(), load_one(runtime, name, bytes, section, cache)?);
            }
        }
        for (name, section) in sections {
            let bytes = std::fs::read(&section.component).map_err(|cause| LoadError::Read {
                name: name.clone(),
                path: section.component.display().to_string(),
                cause,
            })?;
            workers.insert(name.clone(), load_one(runtime, name, &bytes, section.clone(), cache)?);
        }
        Ok(Self { workers })
    }

    /// The worker named `name`.
    pub fn get(&self, name: &str) -> Option<&ServedWorker> {
        self.workers.get(name)
    }

    /// Every worker, by name.
    pub fn iter(&self) -> impl Iterator<Item = &ServedWorker> {
        self.workers.values()
    }

    /// The workers' names.
    pub fn names(&self) -> Vec<String> {
        self.workers.keys().cloned().collect()
    }
}

fn load_one(
    runtime: &Runtime,
    name: &str,
    bytes: &[u8],
    section: WorkerSection,
    cache: Option<&Path>,
) -> Result<ServedWorker, LoadError> {
    let mut worker =
        runtime.load_cached(bytes, cache).map_err(|cause| LoadError::Component { name: name.into(), cause })?;
    for interface in worker.imports() {
        let Some(capability) = Capability::needed_for(interface) else {
            continue; // WASI 0.2: the job's context grants no files, network or environment.
        };
        if !section.capabilities.contains(&capability) {
            let granted: Vec<&str> = section.capabilities.iter().map(|c| c.name()).collect();
            return Err(LoadError::NotGranted {
                name: name.into(),
                interface: interface.clone(),
                capability: capability.name(),
                granted: granted.join(", "),
            });
        }
    }
    worker.set_limits(
        JobLimits {
            time_limit: Duration::from_millis(section.time_limit_ms),
            memory_limit: section.memory_limit_mib << 20,
        },
        runtime,
    );
    worker.set_buckets(section.buckets.clone());
    Ok(ServedWorker {
        name: Arc::from(name),
        worker: Arc::new(worker),
        slots: Arc::new(Semaphore::new(section.concurrency)),
        section,
    })
}
