//! pinlock runs sandboxed WebAssembly jobs that hold distributed locks.
//!
//! A *worker* is a component of the `pinlock:host/worker` world
//! (`guest-sdk/wit/`), or a WASI command using the standard interfaces the
//! host also serves (`host/wit/`: `wasi:keyvalue`, `wasi:logging`, the
//! `wasi:distributed-lock` draft). Each
//! job of it gets a fresh instance, and the locks it takes on entities (UUIDs)
//! are PostgreSQL advisory locks held on the job's home session from grant to
//! release (a session shared by many jobs' locks, behind the host's lock
//! table; see `docs/design/sessions.md`). Whatever way the job ends, the host releases what it
//! still holds before the job's outcome is returned.
//!
//! The crate has two halves that meet only through [`db::JobSession`]:
//! - [`db`]: everything PostgreSQL (sessions, pool, keys, locks, key-value);
//!   no WebAssembly in it.
//! - [`runtime`]: everything wasmtime (engine, workers, jobs, imports); no SQL
//!   in it.
//!
//! [`jobs`] schedules jobs in bounded slots (`run` and `serve` share it);
//! [`batch`] runs many jobs of one worker; [`report`] and [`latency`] summarize them.
//! [`shard`] runs the host's threads, each a current-thread runtime that keeps
//! a job and its sessions' I/O together (`docs/design/threads.md`).
//! [`scratch`] starts throwaway PostgreSQL clusters and [`testing`] finds the
//! database tests run against.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use pinlock::db::{Database, DbConfig, DbSettings};
//! use pinlock::runtime::{Runtime, RuntimeSettings};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn example() -> anyhow::Result<()> {
//! let runtime = Runtime::new(RuntimeSettings::default())?;
//! let worker = runtime.load_file("inventory.wasm".as_ref())?;
//! let db = Database::new(DbConfig::parse("host=127.0.0.1 user=postgres")?, DbSettings::default());
//! db.migrate().await?;
//!
//! let job = db.job_session();
//! let input = br#"{"action":"stock","product":"5b6f0c1e-8f3a-4d7e-9c2b-1a2b3c4d5e6f"}"#;
//! let outcome = runtime.run_job(&worker, job, input, &CancellationToken::new()).await;
//! println!("{:?} (locks released: {:?})", outcome.result, outcome.release);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod batch;
pub mod db;
pub mod jobs;
pub mod latency;
pub mod queue;
pub mod report;
pub mod runtime;
pub mod scratch;
pub mod server;
pub mod shard;
pub mod testing;
