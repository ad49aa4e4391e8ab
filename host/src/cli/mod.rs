//! One file per command.

pub mod demo;
pub mod locks;
pub mod run;
mod scratch_cluster;
