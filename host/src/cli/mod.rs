//! One module per command (`bench` is a folder: one file per scenario).

pub mod bench;
pub mod client;
pub mod demo;
pub mod locks;
pub mod new;
pub mod run;
pub mod serve;
