//! The only module that touches netlink sockets: requests with their acknowledgements
//! (many per `sendmsg`), dumps, and the subscribed event socket. Messages are
//! netlink-packet-route's; undecodable ones are skipped and counted, never a panic.

use crate::error::{Error, Result};
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// rtnetlink groups the event socket joins: `RTNLGRP_LINK` (a shadow device removed or
/// changed behind flowd's back) and `RTNLGRP_NEIGH` (FDB entries, `AF_BRIDGE`).
const GROUPS: [u32; 2] = [1, 3];
const RECV_BUF: usize = 1 << 20;
const DUMP_RETRIES: usize = 8;
/// Requests per `sendmsg`.
const BATCH: usize = 64;

fn sock_err(op: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Socket { op, source }
}

/// A request as bytes: the netlink header (`flags`, `seq`, pid 0) and the message.
pub(crate) fn request_bytes(payload: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
    msg.finalize();
    let mut bytes = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut bytes);
    bytes
}

/// One message's bytes decoded (tests, and the capture example).
pub fn to_route_message(bytes: &[u8]) -> Option<RouteNetlinkMessage> {
    match NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
        .ok()?
        .payload
    {
        NetlinkPayload::InnerMessage(m) => Some(m),
        _ => None,
    }
}

/// Splits a datagram into decoded messages, counting the undecodable ones.
fn split(buf: &[u8], undecodable: &mut u64) -> Vec<NetlinkMessage<RouteNetlinkMessage>> {
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

/// The raw bytes of each message of a datagram (the capture example).
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

    /// Sends one request and waits for its acknowledgement; `what` names it in errors.
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

    /// Dumps (retrying an interrupted dump).
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

impl Requester {
    /// Every bridge FDB entry of this namespace (an `AF_BRIDGE` neighbour dump).
    pub fn dump_fdb(&mut self) -> Result<Vec<crate::fdb::FdbEntry>> {
        let mut m = netlink_packet_route::neighbour::NeighbourMessage::default();
        m.header.family = netlink_packet_route::AddressFamily::Bridge;
        Ok(self
            .dump("fdb", RouteNetlinkMessage::GetNeighbour(m))?
            .iter()
            .filter_map(|msg| match msg {
                RouteNetlinkMessage::NewNeighbour(n) => crate::fdb::entry(n),
                _ => None,
            })
            .collect())
    }
}

/// What one read of the event socket gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Received {
    /// Messages (appended to the caller's vector).
    Messages,
    /// Nothing to read within the wait.
    Nothing,
    /// The socket overflowed: events were lost; dump again.
    Overrun,
}

/// The subscribed, non-blocking event socket (links and neighbours), and an eventfd that
/// ends a wait early ([`Waker`]).
pub struct Events {
    socket: Socket,
    wake: std::sync::Arc<std::os::fd::OwnedFd>,
    buf: Vec<u8>,
    /// Messages that could not be decoded.
    pub undecodable: u64,
}

/// Ends an [`Events::recv`] wait from another thread (cheap, never blocks).
#[derive(Debug, Clone)]
pub struct Waker(std::sync::Arc<std::os::fd::OwnedFd>);

impl Waker {
    /// Wakes the waiting thread (or its next wait).
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: an 8-byte write from a valid buffer to our eventfd; a full counter
        // (EAGAIN) means a wake-up is pending anyway.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("fd", &self.socket.as_raw_fd())
            .finish()
    }
}

impl Events {
    /// Opens the socket in the calling thread's network namespace and joins the groups.
    pub fn open(rcvbuf: usize) -> Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(sock_err("socket"))?;
        socket.bind_auto().map_err(sock_err("bind"))?;
        for g in GROUPS {
            socket
                .add_membership(g)
                .map_err(sock_err("add_membership"))?;
        }
        socket
            .set_rx_buf_sz(rcvbuf)
            .map_err(sock_err("SO_RCVBUF"))?;
        socket
            .set_non_blocking(true)
            .map_err(sock_err("O_NONBLOCK"))?;
        // SAFETY: creating a descriptor; its ownership moves into the OwnedFd at once.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::Socket {
                op: "eventfd",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let wake = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(Events {
            socket,
            wake: std::sync::Arc::new(wake),
            buf: Vec::with_capacity(RECV_BUF),
            undecodable: 0,
        })
    }

    /// A handle that ends this socket's waits.
    pub fn waker(&self) -> Waker {
        Waker(self.wake.clone())
    }

    /// Waits up to `wait` for a datagram (or a [`Waker`]) and appends the datagram's
    /// messages to `out`.
    pub fn recv(&mut self, wait: Duration, out: &mut Vec<RouteNetlinkMessage>) -> Result<Received> {
        let mut pfd = [
            libc::pollfd {
                fd: self.socket.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: two valid pollfds for the duration of the call.
        let n = unsafe { libc::poll(pfd.as_mut_ptr(), 2, ms) };
        if pfd[1].revents != 0 {
            let mut count = 0u64;
            // SAFETY: an 8-byte read into a valid buffer from our eventfd (resets it).
            let _ =
                unsafe { libc::read(self.wake.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
        }
        if n <= 0 || pfd[0].revents == 0 {
            return Ok(Received::Nothing);
        }
        self.buf.clear();
        self.buf.reserve(RECV_BUF);
        match self.socket.recv(&mut self.buf, 0) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Received::Nothing),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Received::Nothing),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(Received::Overrun),
            Err(e) => {
                return Err(Error::Socket {
                    op: "recv",
                    source: e,
                });
            }
        }
        for m in split(&self.buf, &mut self.undecodable) {
            if let NetlinkPayload::InnerMessage(inner) = m.payload {
                out.push(inner);
            }
        }
        Ok(Received::Messages)
    }

    /// Reads what is queued without waiting.
    pub fn drain(&mut self, out: &mut Vec<RouteNetlinkMessage>) -> Result<Received> {
        let mut got = Received::Nothing;
        loop {
            match self.recv(Duration::ZERO, out)? {
                Received::Nothing => return Ok(got),
                Received::Overrun => return Ok(Received::Overrun),
                Received::Messages => got = Received::Messages,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_skips_garbage_and_truncation() {
        let mut n = 0;
        assert!(split(&[0u8; 8], &mut n).is_empty());
        let mut bad = vec![0u8; 32];
        bad[0] = 200; // longer than the datagram
        assert!(split(&bad, &mut n).is_empty());
        assert_eq!(n, 1);
        assert!(split_raw(&bad).is_empty());
    }
}
