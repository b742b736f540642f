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
pub mod fastmap;
pub mod flow;
pub mod port;
pub mod slowpath;
pub mod tunnel;
pub mod wire;

pub use actions::{Action, Actions, TunnelAttrs};
pub use flow::{FlowKey, FlowMask, Megaflow};

pub use vocab::{FlowId, IfIndex, PortId};
