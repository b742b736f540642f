//! rtnetlink requests, written once: framing a netlink-packet-route message
//! ([`frame`]), sending requests many per `sendmsg` and matching each acknowledgement
//! (or refusal, with the kernel's extack message) and echo to its request, dumps
//! (retried when the kernel marks them interrupted) ([`requester`]), and splitting a
//! datagram into answers or decoded messages, with undecodable ones skipped and
//! counted, never a panic ([`answer`], [`frame`]).
//!
//! fibwatch (links, addresses, routes, rules, neighbours; probes and route changes) and
//! evpn (shadow devices and bridge FDB entries) each keep their own message building
//! and translation; what crosses the socket goes through [`Requester`]. offload (tc
//! filters and qdiscs) frames its batches with [`frame_into`] and sends them with
//! [`Requester::transact`], which returns each request's refusal and echo (its
//! sockets are [`Tuning`]: extack, large buffers, a timeout); its link discovery is a
//! [`Requester::dump`]. Subscribed event sockets stay with their crates (their groups
//! and wake-ups differ) but split datagrams with [`split`]. Links are decoded once,
//! into [`LinkFacts`], for fibwatch's mirror and offload's discovery.

pub mod answer;
pub mod frame;
pub mod link;
pub mod requester;

pub use answer::{Answer, Nack, answers};
pub use frame::{
    RawMessage, frame_into, raw_messages, request_bytes, split, split_raw, to_route_message,
};
pub use link::LinkFacts;
pub use requester::{Reply, Requester, Tuning};

use std::io;

/// A request socket's receive buffer: room for a large dump datagram.
pub const RECV_BUF: usize = 1 << 20;
/// Attempts of a dump the kernel keeps marking interrupted (`NLM_F_DUMP_INTR`).
pub const DUMP_RETRIES: usize = 8;
/// Requests per `sendmsg`.
pub const BATCH: usize = 64;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A socket operation failed.
    #[error("netlink {op}: {source}")]
    Socket {
        /// What was being done.
        op: &'static str,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused the request.
    #[error("{op}: {source}")]
    Kernel {
        /// The request, in words (`neighbour probe`, `create bridge evbr-100`).
        op: String,
        /// The kernel's errno.
        #[source]
        source: io::Error,
    },
    /// An answer that could not be decoded.
    #[error("undecodable netlink answer")]
    Decode(#[source] netlink_packet_core::DecodeError),
    /// A dump kept being interrupted by concurrent changes.
    #[error("{what} dump interrupted too many times")]
    DumpInterrupted {
        /// What was dumped.
        what: &'static str,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
