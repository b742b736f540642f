//! flowd's software datapath.
//!
//! Everything a packet meets on the fast path lives here:
//! - [`wire`]: zero-copy views and `Repr`s for every header flowd parses or emits;
//! - [`flow`]: [`FlowKey`], [`FlowMask`], key extraction and the datapath flow syntax;
//! - [`cache`]: the exact-match cache and the megaflow classifier (tuple-space search);
//! - [`actions`]: what a flow does, and its execution in software (VXLAN encap included);
//! - [`port`]: the port trait with in-memory and AF_PACKET implementations.
//!
//! Processing takes a batch and the current time and returns verdicts; the crate does no
//! I/O of its own beyond the port implementations.

#![deny(unsafe_code)]

pub mod actions;
pub mod cache;
pub mod dpif;
pub mod exec;
pub mod flow;
pub mod port;
pub mod slowpath;
pub mod tunnel;
pub mod wire;

pub use actions::{Action, Actions, TunnelAttrs};
pub use flow::{FlowKey, FlowMask, Megaflow};

/// A datapath port number (`in_port(N)` in the flow syntax). Ports are numbered by flowd,
/// not by the kernel: a port's netdev ifindex is a property of the port, not its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PortId(pub u32);

impl std::fmt::Display for PortId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A Linux network interface index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfIndex(pub u32);

impl std::fmt::Display for IfIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A flow's identity, stable for its life in the cache, shared with offload and fibwatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowId(pub u64);

impl std::fmt::Display for FlowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}
