//! The netlink edge: flowd's [`FlowerRule`](crate::FlowerRule) to and from
//! netlink-packet-route's tc types, one module per object, as netlink-packet-route
//! lays them out:
//! - [`flower`]: the match (keys and masks), policy and hardware flags;
//! - [`actions`]: the action list, with the `gact`, `vlan` and `skbedit` actions
//!   netlink-packet-route lacks ([`ext`]), cookies and counters;
//! - [`filter`]: filter messages (position, handle, cookie, `tcm_info`);
//! - [`qdisc`]: the ingress qdisc;
//! - [`redirect`]: a device's whole ingress sent out of another (u32 + mirred).
//!
//! Here: which netlink flags each kind of request carries ([`push_request`]) and the
//! answers as offload sees them ([`parse_answers`]). Framing, acknowledgements with
//! extack, echoes and dumps are the shared [`rtnl`] layer's. Decoding never panics:
//! unknown or malformed attributes become [`DecodeError`]s.

pub mod actions;
pub mod filter;
pub mod flower;
pub mod qdisc;
pub mod redirect;

pub use actions::{ACT_FLAGS_NO_PERCPU_STATS, decode_actions, encode_actions, ext};
pub use filter::{
    COOKIE_MAGIC, FilterEntry, cookie, decode_filter_msg, del_filter, dump_filters, new_filter,
    parse_cookie, preserialized, split_tcm_info, tcm_info,
};
pub use flower::{DecodedFilter, cls_flags, decode_flower, encode_flower};
pub use qdisc::new_ingress_qdisc;
pub use redirect::{redirect_filter, redirect_ingress};

use crate::backend::KernelErrno;
use netlink_packet_core::{
    DecodeError, NLM_F_ACK, NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::tc::TcMessage;

/// What a request is, for its netlink flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestKind {
    /// New filter, fail if it exists, echo it back.
    Create,
    /// Change an existing filter in place, echo it back.
    Replace,
    /// Create without echo (verification off).
    CreateQuiet,
    /// Replace without echo (verification off).
    ReplaceQuiet,
    /// Delete.
    Delete,
    /// New qdisc.
    Qdisc,
}

/// Appends one framed request to `buf`.
pub fn push_request(buf: &mut Vec<u8>, kind: RequestKind, seq: u32, msg: TcMessage) {
    let (inner, flags) = match kind {
        RequestKind::Create => (
            RouteNetlinkMessage::NewTrafficFilter(msg),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO,
        ),
        RequestKind::Replace => (
            RouteNetlinkMessage::NewTrafficFilter(msg),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_ECHO,
        ),
        RequestKind::CreateQuiet => (
            RouteNetlinkMessage::NewTrafficFilter(msg),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        ),
        RequestKind::ReplaceQuiet => (
            RouteNetlinkMessage::NewTrafficFilter(msg),
            NLM_F_REQUEST | NLM_F_ACK,
        ),
        RequestKind::Delete => (
            RouteNetlinkMessage::DelTrafficFilter(msg),
            NLM_F_REQUEST | NLM_F_ACK,
        ),
        RequestKind::Qdisc => (
            RouteNetlinkMessage::NewQueueDiscipline(msg),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        ),
    };
    rtnl::frame_into(buf, inner, flags, seq);
}

/// One message of a netlink answer, as offload sees it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Answer {
    /// An ACK (errno 0) or a NACK, with the kernel's extack message.
    Ack {
        /// The request's sequence number.
        seq: u32,
        /// `None` for success.
        error: Option<(KernelErrno, Option<String>)>,
    },
    /// A filter (an echo or a dump entry).
    Filter {
        /// The sequence number.
        seq: u32,
        /// The tc message.
        msg: Box<TcMessage>,
    },
    /// End of a dump.
    Done {
        /// The sequence number.
        seq: u32,
    },
    /// Anything else (qdisc notifications, ...).
    Other {
        /// The sequence number.
        seq: u32,
    },
}

/// A refusal in offload's terms.
pub fn refusal(n: rtnl::Nack) -> (KernelErrno, Option<String>) {
    (KernelErrno::from_errno(n.errno), n.extack)
}

/// Splits a received buffer into answers ([`rtnl::answers`], with filters and errnos
/// in offload's terms). A malformed message yields an error for itself and ends the
/// walk (its length cannot be trusted).
pub fn parse_answers(buf: &[u8]) -> Vec<Result<Answer, DecodeError>> {
    rtnl::answers(buf)
        .into_iter()
        .map(|a| {
            Ok(match a? {
                rtnl::Answer::Ack { seq, error } => Answer::Ack {
                    seq,
                    error: error.map(refusal),
                },
                rtnl::Answer::Message { seq, msg } => match *msg {
                    RouteNetlinkMessage::NewTrafficFilter(m) => Answer::Filter {
                        seq,
                        msg: Box::new(m),
                    },
                    _ => Answer::Other { seq },
                },
                rtnl::Answer::Done { seq } => Answer::Done { seq },
                rtnl::Answer::Other { seq } => Answer::Other { seq },
                _ => return Err(DecodeError::from("an answer of a kind rtnl added")),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;

/// Attributes emitted once, as bytes (filters' options and action lists; the tests'
/// byte-exact captures).
pub(crate) fn emitted<T: netlink_packet_core::Nla>(attrs: &[T]) -> Vec<u8> {
    use netlink_packet_core::Emitable;
    let mut bytes = vec![0; attrs.buffer_len()];
    attrs.emit(&mut bytes);
    bytes
}

/// Attributes parsed back from bytes (the tests' round trips).
#[cfg(test)]
pub(crate) fn parsed<T>(bytes: &[u8]) -> Result<Vec<T>, netlink_packet_core::DecodeError>
where
    T: for<'a> netlink_packet_core::Parseable<netlink_packet_core::NlaBuffer<&'a [u8]>>,
{
    netlink_packet_core::NlasIterator::new(bytes)
        .map(|nla| T::parse(&nla?))
        .collect()
}
