//! flowd's offload layer: megaflows into tc flower through netlink, and a simulated
//! eswitch.
//!
//! The layers, each its own module:
//! - [`translate`]: a megaflow (masked [`FlowKey`](datapath::FlowKey)) and its
//!   [`Actions`](datapath::Actions) become flowd's own [`FlowerRule`]; whatever flower
//!   cannot express fails closed with [`Unsupported`];
//! - [`validate`]: switch id, MTU and next-hop checks against the [`PortTable`] and a
//!   [`TunnelResolver`](datapath::tunnel::TunnelResolver);
//! - [`netlink`]: the only module that knows tc's netlink attributes: [`FlowerRule`] to and from
//!   netlink-packet-route's tc types (plus the `gact` and `vlan` actions it lacks),
//!   request building, ACK/extack decoding; [`echo`] verifies the kernel's echo of each
//!   created filter against the request, on the bytes;
//! - [`backend`]: the [`OffloadBackend`] trait, with [`tc::TcBackend`] (Linux tc over
//!   netlink) and [`sim::SimFabric`] (simulated eswitches);
//! - [`offloader`]: the per-flow state machine ([`Placement`]) driving a backend, and
//!   [`worker`]: the same behind a bounded queue on its own thread;
//! - [`discover`]: ports, switch ids and representor names from rtnetlink and sysfs
//!   (link messages only).
//!
//! Sockets live in [`tc`] (batched requests, several sockets for large calls) and
//! [`discover`]; everything above [`backend`] sees only flowd's own types.
//!
//! Thread-safety: translation and validation are pure; a backend is owned by one
//! thread (the worker); placements are published through a lock the readers only
//! take briefly.

pub mod adopt;
pub mod backend;
pub mod discover;
pub mod echo;
pub mod error;
pub mod netlink;
pub mod offloader;
pub mod placement;
pub mod ports;
pub mod rule;
pub mod sim;
pub mod tc;
pub mod translate;
pub mod validate;
pub mod worker;

pub use backend::{
    BackendError, HwState, Installed, KernelErrno, OffloadBackend, RuleHandle, RuleStats,
};
pub use error::{OffloadError, Unsupported};

pub use offloader::{AdoptionReport, FlowRequest, Offloader};
pub use placement::{Placement, SoftwareReason};
pub use ports::{PortInfo, PortKind, PortTable};
pub use rule::{
    FlowerAction, FlowerMatch, FlowerRule, Masked, TcPolicy, TunnelKeySet, TunnelMatch, VlanMatch,
};

#[cfg(test)]
mod tests;
