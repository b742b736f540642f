//! Helpers for integration tests that build network namespaces: the library's own
//! [`flowd::netns`], plus what only tests need.
#![allow(dead_code, unused_imports)]

pub use flowd::netns::{Netns, can_netns, sh};

/// Enters `ns` from the calling thread (tests: panics on failure).
pub fn enter(ns: &Netns) {
    ns.enter().unwrap_or_else(|e| panic!("{e}"));
}
