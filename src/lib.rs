//! flowd: daemon and CLI wiring of the datapath, offload and fibwatch crates.

pub mod config;
pub mod control;
pub mod daemon;
pub mod lab;
pub mod netns;
pub mod switch;
