//! Everything wasmtime: the engine, loaded workers, one job's store and its
//! imports. No SQL here: lock and key-value calls go through
//! [`crate::db::JobSession`].

mod engine;
mod imports;
mod job;
mod stderr;
mod worker;

pub use engine::{Runtime, RuntimeError, RuntimeSettings};
pub use imports::SERVED_INTERFACES;
pub use job::{EndedJob, JobError, JobOutcome};
pub use worker::{JobLimits, Worker, WorkerError};
