//! flowd's offload layer: megaflows into tc flower through netlink, and a simulated
//! eswitch.
//!
//! The layers, each its own module:
//! - [`translate`]: a megaflow (masked [`FlowKey`](datapath::FlowKey)) and its
//!   [`Actions`](datapath::Actions) become flowd's own [`FlowerRule`]; whatever flower
//!   cannot express fails closed with [`Unsupported`];
//! - [`judge`]: where a flow belongs, one pure function over the ports' live facts
//!   ([`PortTable`]: MTU, state, switch id) and the path facts of its tunnel lookup
//!   keys (uplink, next hop, path MTU): offloaded, or software with a
//!   [`SoftwareReason`];
//! - [`netlink`]: the only module that knows tc's netlink attributes, one module per
//!   object (flower match, actions with the `gact`, `vlan` and `skbedit` netlink-packet-route
//!   lacks, filter messages, qdisc): [`FlowerRule`] to and from netlink-packet-route's tc
//!   types and each request's flags; framing, ACK/extack and echoes are [`rtnl`]'s;
//!   [`echo`] verifies the kernel's echo of each created filter against the request, on
//!   the bytes;
//! - [`backend`]: the [`OffloadBackend`] trait, with [`tc::TcBackend`] (Linux tc over
//!   netlink) and [`sim::SimFabric`] (simulated eswitches);
//! - [`offloader`]: the per-flow state machine ([`Placement`]) driving a backend; it holds
//!   the facts, indexes its flows by port and lookup key, and re-judges exactly the
//!   flows a changed fact concerns; failures that may pass are retried;
//!   [`worker`]: the same behind a bounded queue on its own thread, with a backlog that
//!   delays requests the queue has no room for instead of losing them;
//! - [`discover`]: ports, switch ids and representor names from a link dump and sysfs;
//!   [`devlink`]: the eswitch mode, over generic netlink (neli).
//!
//! rtnetlink sockets are [`rtnl::Requester`]s, held by [`tc`] (batched requests,
//! several sockets for large calls) and [`discover`]; everything above [`backend`]
//! sees only flowd's own types.
//!
//! Thread-safety: translation and the judge are pure; a backend is owned by one
//! thread (the worker); placements are published through a lock the readers only
//! take briefly.

pub mod adopt;
pub mod backend;
pub mod devlink;
pub mod discover;
pub mod echo;
pub mod error;
pub mod judge;
pub mod netlink;
pub mod offloader;
pub mod placement;
pub mod ports;
pub mod rule;
pub mod sim;
pub mod tc;
pub mod translate;
pub mod worker;

pub use backend::{
    BackendError, HwState, Installed, KernelErrno, OffloadBackend, RuleHandle, RuleStats,
};
pub use error::{OffloadError, Unsupported};

pub use offloader::{AdoptionReport, FlowRequest, OffloadCounters, Offloader};
pub use placement::{Placement, SoftwareReason};
pub use ports::{PortInfo, PortKind, PortTable};
pub use rule::{
    FlowerAction, FlowerMatch, FlowerRule, Masked, TcPolicy, TunnelKeySet, TunnelMatch, VlanMatch,
};

#[cfg(test)]
mod tests;
