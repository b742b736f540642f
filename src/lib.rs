//! flowd: daemon and CLI wiring of the datapath, offload and fibwatch crates.
