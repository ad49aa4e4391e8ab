//! pinlock runs sandboxed WebAssembly jobs that hold distributed locks.
#![warn(missing_docs)]

pub mod batch;
pub mod db;
pub mod latency;
pub mod report;
pub mod runtime;
