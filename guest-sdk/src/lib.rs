//! Write pinlock workers in plain Rust.
//!
//! A pinlock worker is a WebAssembly component that a pinlock host runs as a
//! job. A job receives input (JSON from pinlock's CLI and queue), may take
//! distributed locks on entities (PostgreSQL advisory locks held by the
//! host), read and write a shared key-value store, and log; it returns output
//! or an error message. This crate wraps the `pinlock:host/worker` WIT world
//! in an idiomatic API, so a worker never deals with generated bindings:
//!
//! - [`JsonWorker`] (typed JSON in and out) or [`Worker`] (bytes), exported
//!   with [`export_worker!`]: the job entry point;
//! - [`lock()`], [`LockRequest::run`], [`with_lock`], [`Guard`] and
//!   [`LockError`]: locks on an [`Entity`] (a UUID, or [`Entity::named`]);
//! - [`kv::Bucket`]: the key-value store ([`get_json`](kv::Bucket::get_json),
//!   [`set_json`](kv::Bucket::set_json), …);
//! - [`info!`], [`warn!`], [`error!`], [`debug!`], [`trace!`] (or the
//!   functions in [`log`](mod@log)): lines in the host's log, tagged with the
//!   job.
//!
//! Build a worker as a `cdylib` for `wasm32-wasip2`
//! (`cargo build --release --target wasm32-wasip2`); cargo then produces a
//! component that `pinlock run` and `pinlock serve` load.
//!
//! # Example: a locked read-modify-write
//!
//! A counter per name, incremented by any number of jobs on any number of
//! hosts at once without losing an update:
//!
//! ```no_run,standalone_crate
//! use pinlock_guest::{BoxError, Entity, JsonWorker, export_worker, kv::Bucket, lock};
//!
//! struct Counter;
//!
//! impl JsonWorker for Counter {
//!     type Input = String; // the counter's name, e.g. "visits"
//!     type Output = u64; // its new value
//!     type Error = BoxError;
//!
//!     fn run(name: String) -> Result<u64, BoxError> {
//!         lock(Entity::named(&name)).run(|_guard| {
//!             let counters = Bucket::open("counters")?;
//!             let next = counters.get_json::<u64>(&name)?.unwrap_or(0) + 1;
//!             counters.set_json(&name, &next)?;
//!             Ok(next)
//!         })
//!     }
//! }
//!
//! export_worker!(json Counter);
//! ```
//!
//! `pinlock run counter.wasm --input '"visits"' --jobs 100 --concurrency 8`
//! then leaves exactly 100 under `visits`. Every `?` in the closure lands in
//! one error type: any `E: From<LockError>` works, and [`BoxError`] takes
//! every error of this crate (and `String`s). If the lock cannot be taken,
//! the closure does not run; if it was lost while the closure ran (see
//! [`LockError::Lost`]), `run` answers `Err(Lost)` and the write under it did
//! not commit.
#![warn(missing_docs)]

pub mod entity;
#[cfg(feature = "json")]
mod json;
pub mod kv;
pub mod lock;
pub mod log;

pub use entity::{Entity, PINLOCK_NAMESPACE};
#[cfg(feature = "json")]
pub use json::{Json, JsonWorker};
pub use lock::{Guard, LockError, LockRequest, Mode, lock, with_lock};
pub use uuid::Uuid;

/// An error of any kind, for workers that only report errors: every error of
/// this crate, `serde_json`'s, `String` and `&str` convert into it with `?`.
///
/// ```
/// use pinlock_guest::{BoxError, LockError};
///
/// fn parse(text: &str) -> Result<u64, BoxError> {
///     if text.is_empty() {
///         return Err("empty".into());
///     }
///     Ok(text.parse::<u64>()?)
/// }
/// assert_eq!(parse("7").unwrap(), 7);
/// let lost: BoxError = LockError::Lost.into();
/// assert_eq!(lost.downcast_ref::<LockError>(), Some(&LockError::Lost));
/// ```
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Bindings generated from `wit/pinlock.wit` (this crate's copy of the
/// contract, the one the host is built from too); use the wrappers instead.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "worker",
        pub_export_macro: true,
    });
}

/// A pinlock job on bytes: what the host calls for each job run by this
/// component. Most workers take and return JSON: implement [`JsonWorker`]
/// instead, and let the SDK do the parsing.
///
/// Export the implementing type with [`export_worker!`]:
///
/// ```no_run,standalone_crate
/// use pinlock_guest::{Worker, export_worker};
///
/// /// Returns its input reversed.
/// struct Reverse;
///
/// impl Worker for Reverse {
///     fn run(mut input: Vec<u8>) -> Result<Vec<u8>, String> {
///         input.reverse();
///         Ok(input)
///     }
/// }
///
/// export_worker!(Reverse);
/// ```
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

/// Exports a worker as this component's job entry point. Use it once, in a
/// `cdylib` crate.
///
/// - `export_worker!(MyWorker)` exports a [`Worker`] (bytes in, bytes out);
/// - `export_worker!(json MyWorker)` exports a [`JsonWorker`] (typed JSON in
///   and out; invalid input JSON fails the job with a message saying so).
///
/// The worker may be named by a path (`export_worker!(crate::jobs::Sync)`,
/// `export_worker!(json self::jobs::Sync)`).
///
/// ```no_run,standalone_crate
/// mod jobs {
///     pub struct Echo;
///
///     impl pinlock_guest::Worker for Echo {
///         fn run(input: Vec<u8>) -> Result<Vec<u8>, String> {
///             Ok(input)
///         }
///     }
/// }
///
/// pinlock_guest::export_worker!(crate::jobs::Echo);
/// # fn main() {}
/// ```
///
/// ```no_run,standalone_crate
/// use pinlock_guest::{JsonWorker, export_worker};
///
/// struct Double;
///
/// impl JsonWorker for Double {
///     type Input = i64;
///     type Output = i64;
///     type Error = String;
///
///     fn run(n: i64) -> Result<i64, String> {
///         n.checked_mul(2).ok_or_else(|| format!("{n} is too large to double"))
///     }
/// }
///
/// export_worker!(json Double);
/// ```
#[macro_export]
macro_rules! export_worker {
    (json $first:ident $(:: $rest:ident)*) => {
        $crate::export_worker!($crate::Json<$first $(:: $rest)*>);
    };
    ($($worker:tt)+) => {
        const _: () = {
            // The bindings' export macro takes a plain name, not a path.
            type PinlockExportedWorker = $($worker)+;
            $crate::bindings::export!(PinlockExportedWorker with_types_in $crate::bindings);
        };
    };
}
