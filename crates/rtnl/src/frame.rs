//! Framing: a netlink-packet-route message into request bytes, and a received datagram
//! back into its messages (raw, or decoded with undecodable ones skipped and counted).
//! Nothing here panics on hostile input: a length that does not fit ends the walk.

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};

/// `sizeof(struct nlmsghdr)`.
pub const HEADER_LEN: usize = 16;
use netlink_packet_route::RouteNetlinkMessage;

/// A request as bytes: the netlink header (`flags`, `seq`, pid 0) and the message.
pub fn request_bytes(payload: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    frame_into(&mut bytes, payload, flags, seq);
    bytes
}

/// Appends one framed request (header with `flags` and `seq`, pid 0) to `buf`, for
/// callers that send many requests in one `sendmsg`.
pub fn frame_into(buf: &mut Vec<u8>, payload: RouteNetlinkMessage, flags: u16, seq: u32) {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
    msg.finalize();
    let start = buf.len();
    buf.resize(start + msg.buffer_len(), 0);
    msg.serialize(&mut buf[start..]);
}

/// One message's bytes decoded, if it is a route-family message.
pub fn to_route_message(bytes: &[u8]) -> Option<RouteNetlinkMessage> {
    match NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
        .ok()?
        .payload
    {
        NetlinkPayload::InnerMessage(m) => Some(m),
        _ => None,
    }
}

/// One message of a datagram, undecoded: its header fields and its bytes (header
/// included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawMessage<'a> {
    /// `nlmsg_type`.
    pub ty: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// The whole message, header included.
    pub bytes: &'a [u8],
}

/// The messages of a datagram without decoding them (no allocation). The walk ends
/// at a length that does not fit; [`RawWalk::truncated`] tells whether it did.
pub fn raw_messages(buf: &[u8]) -> RawWalk<'_> {
    RawWalk {
        rest: buf,
        truncated: false,
    }
}

/// The iterator of [`raw_messages`].
#[derive(Debug, Clone)]
pub struct RawWalk<'a> {
    rest: &'a [u8],
    truncated: bool,
}

impl RawWalk<'_> {
    /// Whether the walk stopped at a message whose length did not fit (a truncated
    /// or malformed tail), rather than at the end of the datagram.
    pub fn truncated(&self) -> bool {
        self.truncated
    }
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

impl<'a> Iterator for RawWalk<'a> {
    type Item = RawMessage<'a>;

    fn next(&mut self) -> Option<RawMessage<'a>> {
        let buf = self.rest;
        if buf.len() < HEADER_LEN {
            return None;
        }
        let len = u32_at(buf, 0) as usize;
        if len < HEADER_LEN || len > buf.len() {
            self.rest = &[];
            self.truncated = true;
            return None;
        }
        let (bytes, rest) = buf.split_at(len);
        self.rest = rest.get(len.next_multiple_of(4) - len..).unwrap_or(&[]);
        Some(RawMessage {
            ty: u16_at(buf, 4),
            flags: u16_at(buf, 6),
            seq: u32_at(buf, 8),
            bytes,
        })
    }
}

/// The raw bytes of each message of a datagram (a truncated tail is left out).
pub fn split_raw(buf: &[u8]) -> Vec<&[u8]> {
    raw_messages(buf).map(|m| m.bytes).collect()
}

/// Splits a datagram into decoded messages, counting the undecodable ones (and a
/// truncated tail) in `undecodable`.
pub fn split(buf: &[u8], undecodable: &mut u64) -> Vec<NetlinkMessage<RouteNetlinkMessage>> {
    let mut out = Vec::new();
    let mut walk = raw_messages(buf);
    for m in walk.by_ref() {
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(m.bytes) {
            Ok(m) => out.push(m),
            Err(e) => {
                *undecodable += 1;
                tracing::debug!(error = %e, "skipping undecodable netlink message");
            }
        }
    }
    if walk.truncated() {
        *undecodable += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::NLM_F_REQUEST;
    use netlink_packet_route::link::LinkMessage;

    #[test]
    fn a_request_frames_and_decodes_back() {
        let mut m = LinkMessage::default();
        m.header.index = 7;
        let bytes = request_bytes(RouteNetlinkMessage::GetLink(m.clone()), NLM_F_REQUEST, 42);
        assert_eq!(
            u32::from_ne_bytes(bytes[..4].try_into().unwrap()) as usize,
            bytes.len()
        );
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 42);
        assert_eq!(
            to_route_message(&bytes),
            Some(RouteNetlinkMessage::GetLink(m))
        );
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes);
        assert_eq!(split_raw(&two).len(), 2);
        let mut bad = 0;
        assert_eq!(split(&two, &mut bad).len(), 2);
        assert_eq!(bad, 0);
    }

    #[test]
    fn frames_append_and_walk_back_with_their_headers() {
        let mut buf = Vec::new();
        for seq in 1..=3 {
            frame_into(
                &mut buf,
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
                NLM_F_REQUEST,
                seq,
            );
        }
        let seqs: Vec<u32> = raw_messages(&buf).map(|m| m.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert!(raw_messages(&buf).all(|m| m.flags == NLM_F_REQUEST && m.ty == 18));
        let mut walk = raw_messages(&buf[..buf.len() - 1]);
        assert_eq!(walk.by_ref().count(), 2);
        assert!(walk.truncated());
    }

    #[test]
    fn garbage_and_truncation_are_counted_never_a_panic() {
        let mut bad = 0;
        assert!(split(&[0xff; 40], &mut bad).is_empty());
        assert_eq!(bad, 1);
        let bytes = request_bytes(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_REQUEST,
            1,
        );
        let mut bad = 0;
        assert!(split(&bytes[..bytes.len() - 1], &mut bad).is_empty());
        assert_eq!(bad, 1);
        for n in 0..bytes.len() {
            let _ = split(&bytes[..n], &mut bad);
            let _ = split_raw(&bytes[..n]);
        }
    }
}
