//! A loaded worker: a component compiled once, checked against what the
//! host serves, and pre-instantiated so each job only pays for a fresh
//! instance.
//!
//! A worker is entered one of two ways: a pinlock worker exports `run` (the
//! `pinlock:host/worker` world: input bytes in, output bytes or an error
//! message out); a WASI command exports `wasi:cli/run` and gets the job's
//! input on stdin and gives its output on stdout, so a component written
//! only against standard interfaces runs unchanged.

use std::path::Path;

use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;
use wasmtime_wasi::p2::bindings::CommandPre;

use super::Runtime;
use super::imports::{JobState, SERVED_INTERFACES, bindings, is_offered};

/// Why a file cannot be run as a worker (always the file's fault).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The file could not be read.
    #[error("cannot read {path}: {cause}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// Not WebAssembly at all.
    #[error("not a WebAssembly file (no \\0asm header)")]
    NotWasm,
    /// A core module, not a component.
    #[error(
        "this is a core WebAssembly module, not a component; build the worker with \
         `cargo build --target wasm32-wasip2` (a cdylib using pinlock-guest)"
    )]
    CoreModule,
    /// WebAssembly that does not compile.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// It imports an interface (or a version of one) the host does not serve.
    #[error(
        "the component imports {import}, which this host does not serve; it serves {}, \
         and WASI 0.2 (wasi:cli, wasi:clocks, wasi:filesystem, wasi:io, wasi:random, wasi:sockets \
         at 0.2.x, with no files, network or environment granted)",
        SERVED_INTERFACES.join(", ")
    )]
    UnknownImport {
        /// The import, as the component names it (`wasi:keyvalue/store@0.2.0-draft`).
        import: String,
    },
    /// A component of another world.
    #[error(
        "not a pinlock worker: it must export `run` (world pinlock:host/worker) or wasi:cli/run \
         (a WASI command): {0}"
    )]
    WrongWorld(String),
}

/// How a job enters a worker.
pub(crate) enum Entry {
    /// The `run` export of `pinlock:host/worker`.
    Worker(bindings::WorkerPre<JobState>),
    /// `wasi:cli/run`: input on stdin, output on stdout.
    Command(CommandPre<JobState>),
}

/// A component ready to run jobs.
pub struct Worker {
    pub(crate) entry: Entry,
    pub(crate) limits: JobLimits,
    /// Key-value buckets its jobs may open (`None`: any).
    pub(crate) buckets: Option<std::sync::Arc<[String]>>,
    imports: Vec<String>,
    reads_fences: bool,
}

/// Limits each job of one worker obeys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobLimits {
    /// Wall-clock limit of one job, waits included.
    pub time_limit: std::time::Duration,
    /// Linear memory one job may use, in bytes (at most the runtime's).
    pub memory_limit: usize,
}

impl Worker {
    /// The limits its jobs run under.
    pub fn limits(&self) -> JobLimits {
        self.limits
    }

    /// Sets the limits of its jobs; memory is capped at what the runtime's
    /// instance pool reserves.
    pub fn set_limits(&mut self, limits: JobLimits, runtime: &Runtime) {
        let memory_limit = limits.memory_limit.min(runtime.settings.memory_limit);
        self.limits = JobLimits { memory_limit, ..limits };
    }

    /// Restricts the key-value buckets its jobs may open (`None`: any).
    pub fn set_buckets(&mut self, buckets: Option<Vec<String>>) {
        self.buckets = buckets.map(std::sync::Arc::from);
    }

    /// The interfaces the component imports (`pinlock:host/key-value@0.2.0`,
    /// `wasi:cli/stderr@0.2.0`, ...), to check against what it is granted.
    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    /// Whether the component can read a lock's fencing token. When it
    /// cannot, its grants draw none (one sequence write less per grant).
    pub fn reads_fences(&self) -> bool {
        self.reads_fences
    }
}

/// Whether `import` is pinlock's lock interface with `fencing-token` among
/// the functions the component uses. A component's imports list only what
/// its code calls (wit-component drops the rest), so a worker that never
/// reads a token does not import the function, and its grants can skip
/// drawing one.
fn imports_fencing_token(name: &str, import: &ComponentItem, engine: &Engine) -> bool {
    let ComponentItem::ComponentInstance(instance) = import else { return false };
    name.starts_with("pinlock:host/distributed-lock@")
        && instance.exports(engine).any(|(function, _)| function == "[method]lock-guard.fencing-token")
}

impl Runtime {
    /// Loads a worker from a `.wasm` file.
    pub fn load_file(&self, path: &Path) -> Result<Worker, WorkerError> {
        let bytes =
            std::fs::read(path).map_err(|cause| WorkerError::Read { path: path.display().to_string(), cause })?;
        self.load(&bytes)
    }

    /// Compiles `bytes` and checks it is a worker.
    pub fn load(&self, bytes: &[u8]) -> Result<Worker, WorkerError> {
        self.load_cached(bytes, None)
    }

    /// Like [`Self::load`], keeping the compiled artefact in `cache` (a
    /// folder) keyed by the component's content hash and this engine's
    /// compatibility hash, so a restart does not compile again. A cache file
    /// that cannot be used is replaced.
    pub fn load_cached(&self, bytes: &[u8], cache: Option<&Path>) -> Result<Worker, WorkerError> {
        const CORE_VERSION: [u8; 4] = [1, 0, 0, 0];
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err(WorkerError::NotWasm);
        }
        if bytes[4..8] == CORE_VERSION {
            return Err(WorkerError::CoreModule);
        }
        let component = match cache {
            Some(dir) => self.compile_cached(bytes, dir)?,
            None => self.compile(bytes)?,
        };
        let component_type = component.component_type();
        let imports: Vec<String> = component_type.imports(&self.engine).map(|(name, _)| name.to_owned()).collect();
        let reads_fences = component_type
            .imports(&self.engine)
            .any(|(name, import)| imports_fencing_token(name, &import.ty, &self.engine));
        if let Some(import) = imports.iter().find(|import| !is_offered(import)) {
            return Err(WorkerError::UnknownImport { import: import.clone() });
        }
        // Served names with another shape (a function missing or typed
        // otherwise) fail here, in wasmtime's words.
        let instance_pre =
            self.linker.instantiate_pre(&component).map_err(|e| WorkerError::WrongWorld(format!("{e:#}")))?;
        let entry = match bindings::WorkerPre::new(instance_pre.clone()) {
            Ok(pre) => Entry::Worker(pre),
            Err(not_worker) => match CommandPre::new(instance_pre) {
                Ok(pre) => Entry::Command(pre),
                Err(_) => return Err(WorkerError::WrongWorld(format!("{not_worker:#}"))),
            },
        };
        let limits = JobLimits { time_limit: self.settings.time_limit, memory_limit: self.settings.memory_limit };
        Ok(Worker { entry, limits, buckets: None, imports, reads_fences })
    }

    fn compile(&self, bytes: &[u8]) -> Result<Component, WorkerError> {
        Component::new(&self.engine, bytes).map_err(|e| WorkerError::Invalid(format!("{e:#}")))
    }

    fn compile_cached(&self, bytes: &[u8], dir: &Path) -> Result<Component, WorkerError> {
        use sha2::Digest;
        use std::hash::{Hash, Hasher};
        let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut engine_hash);
        let content = sha2::Sha256::digest(bytes);
        let hex: String = content.iter().map(|b| format!("{b:02x}")).collect();
        let path = dir.join(format!("{hex}-{:016x}.cwasm", engine_hash.finish()));
        if path.is_file() {
            // SAFETY: the file was written by `Component::serialize` of an
            // engine with the same compatibility hash, into the host's own
            // cache folder, under a name that is the hash of its source; a
            // file that fails wasmtime's own checks is compiled again.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(component) => return Ok(component),
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "unusable compile cache entry; compiling"),
            }
        }
        let component = self.compile(bytes)?;
        let written = component.serialize().map_err(std::io::Error::other).and_then(|artefact| {
            std::fs::create_dir_all(dir)?;
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, artefact)?;
            std::fs::rename(&tmp, &path)
        });
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the compile cache; going on without it");
        }
        Ok(component)
    }
}
