//! Write pinlock workers in plain Rust.
//!
//! A pinlock worker is a WebAssembly component that a pinlock host runs as a
//! job. A job receives input bytes, may take distributed locks on entities
//! (PostgreSQL advisory locks held by the host), read and write a shared
//! key-value store, and log; it returns output bytes or an error message.
//! This crate wraps the `pinlock:host/worker` WIT world in an idiomatic API,
//! so a worker never deals with generated bindings:
//!
//! - [`entity`]: [`Entity`], the UUID a lock is taken on;
//! - [`lock`](mod@lock): [`lock()`], [`Guard`], [`with_lock`] and [`LockError`];
//! - [`kv`]: the key-value store;
//! - [`log`]: log lines written by the host;
//! - [`Worker`] and [`export_worker!`]: the job entry point.
//!
//! Build a worker as a `cdylib` for `wasm32-wasip2`
//! (`cargo build --target wasm32-wasip2`); cargo then produces a component.
//!
//! # Example
//!
//! A job that only one host may run at a time, keeping a run counter:
//!
//! ```no_run
//! use pinlock_guest::{Entity, Mode, Worker, kv::Bucket, log, with_lock};
//!
//! struct NightlyReport;
//!
//! impl Worker for NightlyReport {
//!     fn run(_input: Vec<u8>) -> Result<Vec<u8>, String> {
//!         // Exclusive across every job of every host sharing the database.
//!         let runs = with_lock(Entity::named("nightly-report"), Mode::Exclusive, |guard| {
//!             log::info(&format!("reporting with fencing token {}", guard.fencing_token()));
//!             let reports = Bucket::open("reports")?;
//!             let runs = match reports.get_string("runs")? {
//!                 Some(runs) => runs.parse::<u64>()? + 1,
//!                 None => 1,
//!             };
//!             reports.set_string("runs", &runs.to_string())?;
//!             Ok::<_, Box<dyn std::error::Error>>(runs)
//!         });
//!         // Outer error: the lock (not granted, or lost); inner: the work under it.
//!         let runs = runs.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
//!         Ok(format!("run {runs}").into_bytes())
//!     }
//! }
//!
//! pinlock_guest::export_worker!(NightlyReport);
//! ```
#![warn(missing_docs)]

pub mod entity;
pub mod kv;
pub mod lock;
pub mod log;

pub use entity::{Entity, PINLOCK_NAMESPACE};
pub use lock::{Guard, LockError, LockRequest, Mode, lock, with_lock};
pub use uuid::Uuid;

/// Bindings generated from `wit/pinlock.wit`; use the wrappers instead.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "worker",
        pub_export_macro: true,
    });
}

/// A pinlock job: what the host calls for each job run by this component.
///
/// Export the implementing type with [`export_worker!`].
pub trait Worker {
    /// Runs one job on `input` (what the host was given for the job; JSON
    /// text from pinlock's CLI) and returns the job's output bytes, or a
    /// message saying why the job failed.
    ///
    /// Locks still held when this returns are released by the host.
    fn run(input: Vec<u8>) -> Result<Vec<u8>, String>;
}

impl<W: Worker> bindings::Guest for W {
    fn run(input: Vec<u8>) -> Result<Vec<u8>, String> {
        <W as Worker>::run(input)
    }
}

/// Exports a type implementing [`Worker`] as this component's job entry point.
///
/// Use it once, in a `cdylib` crate:
///
/// ```no_run,standalone_crate
/// struct Echo;
///
/// impl pinlock_guest::Worker for Echo {
///     fn run(input: Vec<u8>) -> Result<Vec<u8>, String> {
///         Ok(input)
///     }
/// }
///
/// pinlock_guest::export_worker!(Echo);
/// ```
#[macro_export]
macro_rules! export_worker {
    ($worker:ident) => {
        $crate::bindings::export!($worker with_types_in $crate::bindings);
    };
}
