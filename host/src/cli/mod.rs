//! One file per command.

pub mod bench;
pub mod demo;
pub mod locks;
pub mod run;
mod scratch_cluster;
