//! rtnetlink requests, written once: framing a netlink-packet-route message, sending
//! requests many per `sendmsg` and matching each acknowledgement to its request, dumps
//! (retried when the kernel marks them interrupted), and splitting a datagram into
//! decoded messages with undecodable ones skipped and counted, never a panic.
//!
//! fibwatch (links, addresses, routes, rules, neighbours; probes and route changes) and
//! evpn (shadow devices and bridge FDB entries) each keep their own message building
//! and translation; what crosses the socket goes through [`Requester`]. Subscribed event
//! sockets stay with their crates (their groups and wake-ups differ) but split datagrams
//! with [`split`].

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
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
    /// A dump kept being interrupted by concurrent changes.
    #[error("{what} dump interrupted too many times")]
    DumpInterrupted {
        /// What was dumped.
        what: &'static str,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn sock_err(op: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Socket { op, source }
}

/// A request as bytes: the netlink header (`flags`, `seq`, pid 0) and the message.
pub fn request_bytes(payload: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
    msg.finalize();
    let mut bytes = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut bytes);
    bytes
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

/// The raw bytes of each message of a datagram (a truncated tail is left out).
pub fn split_raw(buf: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while buf.len().saturating_sub(off) >= 16 {
        let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]);
        let len = len as usize;
        if len < 16 || off + len > buf.len() {
            break;
        }
        out.push(&buf[off..off + len]);
        off += (len + 3) & !3;
    }
    out
}

/// Splits a datagram into decoded messages, counting the undecodable ones (and a
/// truncated tail) in `undecodable`.
pub fn split(buf: &[u8], undecodable: &mut u64) -> Vec<NetlinkMessage<RouteNetlinkMessage>> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while buf.len().saturating_sub(off) >= 16 {
        let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]);
        let len = len as usize;
        if len < 16 || off + len > buf.len() {
            *undecodable += 1;
            break;
        }
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..off + len]) {
            Ok(m) => out.push(m),
            Err(e) => {
                *undecodable += 1;
                tracing::debug!(error = %e, "skipping undecodable netlink message");
            }
        }
        off += (len + 3) & !3;
    }
    out
}

/// A blocking request socket: requests with acknowledgements, and dumps.
pub struct Requester {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
    /// Messages that could not be decoded.
    pub undecodable: u64,
}

impl std::fmt::Debug for Requester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requester").field("seq", &self.seq).finish()
    }
}

impl Requester {
    /// Opens a request socket in the calling thread's network namespace.
    pub fn open() -> Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(sock_err("socket"))?;
        socket.bind_auto().map_err(sock_err("bind"))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(sock_err("connect"))?;
        socket
            .set_rx_buf_sz(RECV_BUF)
            .map_err(sock_err("SO_RCVBUF"))?;
        Ok(Requester {
            socket,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
            undecodable: 0,
        })
    }

    fn recv(&mut self, op: &'static str) -> Result<Vec<NetlinkMessage<RouteNetlinkMessage>>> {
        self.buf.clear();
        self.buf.reserve(RECV_BUF);
        loop {
            match self.socket.recv(&mut self.buf, 0) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Socket { op, source: e }),
            }
        }
        Ok(split(&self.buf, &mut self.undecodable))
    }

    /// Sends one request (`flags` besides `NLM_F_REQUEST | NLM_F_ACK`, e.g.
    /// `NLM_F_CREATE`) and waits for its acknowledgement; `what` names it in errors.
    pub fn request(&mut self, what: &str, msg: RouteNetlinkMessage, flags: u16) -> Result<()> {
        self.batch(vec![msg], flags)
            .pop()
            .unwrap_or(Ok(()))
            .map_err(|source| Error::Kernel {
                op: what.to_string(),
                source,
            })
    }

    /// Sends requests (many per `sendmsg`) and waits for every acknowledgement: one
    /// result per request, in order.
    pub fn batch(&mut self, msgs: Vec<RouteNetlinkMessage>, flags: u16) -> Vec<io::Result<()>> {
        let mut results = Vec::with_capacity(msgs.len());
        let mut msgs = msgs.into_iter().peekable();
        while msgs.peek().is_some() {
            let first = self.seq.wrapping_add(1);
            let mut bytes = Vec::new();
            let mut n = 0usize;
            for m in msgs.by_ref().take(BATCH) {
                self.seq = self.seq.wrapping_add(1);
                bytes.extend(request_bytes(
                    m,
                    flags | NLM_F_REQUEST | NLM_F_ACK,
                    self.seq,
                ));
                n += 1;
            }
            let mut chunk: Vec<Option<io::Result<()>>> = (0..n).map(|_| None).collect();
            if let Err(e) = self.socket.send(&bytes, 0) {
                results.extend((0..n).map(|_| Err(io::Error::new(e.kind(), e.to_string()))));
                continue;
            }
            let mut pending = n;
            while pending > 0 {
                let got = match self.recv("recv ack") {
                    Ok(v) => v,
                    Err(e) => {
                        for slot in chunk.iter_mut().filter(|s| s.is_none()) {
                            *slot = Some(Err(io::Error::other(e.to_string())));
                        }
                        break;
                    }
                };
                for msg in got {
                    let i = msg.header.sequence_number.wrapping_sub(first) as usize;
                    let (Some(slot), NetlinkPayload::Error(e)) = (chunk.get_mut(i), msg.payload)
                    else {
                        continue;
                    };
                    if slot.is_none() {
                        *slot = Some(match e.code {
                            None => Ok(()),
                            Some(_) => Err(e.to_io()),
                        });
                        pending -= 1;
                    }
                }
            }
            results.extend(chunk.into_iter().map(|r| r.unwrap_or(Ok(()))));
        }
        results
    }

    fn dump_once(&mut self, req: RouteNetlinkMessage) -> Result<Option<Vec<RouteNetlinkMessage>>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = request_bytes(req, NLM_F_REQUEST | NLM_F_DUMP, seq);
        self.socket.send(&bytes, 0).map_err(sock_err("send dump"))?;
        let mut out = Vec::new();
        let mut interrupted = false;
        loop {
            for msg in self.recv("recv dump")? {
                if msg.header.sequence_number != seq {
                    continue;
                }
                interrupted |= msg.header.flags & NLM_F_DUMP_INTR != 0;
                match msg.payload {
                    NetlinkPayload::Done(_) => {
                        return Ok((!interrupted).then_some(out));
                    }
                    NetlinkPayload::Error(e) => {
                        return Err(Error::Kernel {
                            op: "dump".into(),
                            source: e.to_io(),
                        });
                    }
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    _ => {}
                }
            }
        }
    }

    /// Dumps the objects `req` asks for (retrying an interrupted dump); `what` names
    /// them in errors and logs.
    pub fn dump(
        &mut self,
        what: &'static str,
        req: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        for _ in 0..DUMP_RETRIES {
            if let Some(v) = self.dump_once(req.clone())? {
                return Ok(v);
            }
            tracing::debug!(what, "dump interrupted, retrying");
        }
        Err(Error::DumpInterrupted { what })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    /// A dump and an acknowledged request against the running kernel (any namespace).
    #[test]
    fn dumps_links_and_reports_a_refusal() {
        let Ok(mut r) = Requester::open() else {
            eprintln!("skipped: no netlink socket");
            return;
        };
        let links = r
            .dump(
                "links",
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
            )
            .expect("dump links");
        assert!(
            links
                .iter()
                .any(|m| matches!(m, RouteNetlinkMessage::NewLink(l) if l.header.index == 1)),
            "loopback is link 1"
        );
        // Deleting a link that cannot exist: the kernel's refusal, with the words given.
        let mut m = LinkMessage::default();
        m.header.index = 0x7fff_fff0;
        match r.request("delete link 2147483632", RouteNetlinkMessage::DelLink(m), 0) {
            Err(Error::Kernel { op, source }) => {
                assert_eq!(op, "delete link 2147483632");
                assert!(source.raw_os_error().is_some(), "{source}");
            }
            other => panic!("deleting a missing link answered {other:?}"),
        }
    }
}
