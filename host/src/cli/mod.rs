//! One module per command (`bench` is a folder: one file per scenario), and
//! the throwaway cluster the demo may start.

pub mod bench;
pub mod demo;
pub mod locks;
pub mod run;
mod scratch_cluster;
