//! The only module that touches netlink sockets: the subscribed event socket, and the
//! FDB dump. Requests, acknowledgements and dumps go through the shared [`rtnl`] layer
//! (re-exported here). Messages are netlink-packet-route's; undecodable ones are skipped
//! and counted, never a panic.

use crate::error::{Error, Result};
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, protocols::NETLINK_ROUTE};
use rtnl::split;
pub use rtnl::{Requester, request_bytes, split_raw, to_route_message};
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// rtnetlink groups the event socket joins: `RTNLGRP_LINK` (a shadow device removed or
/// changed behind flowd's back) and `RTNLGRP_NEIGH` (FDB entries, `AF_BRIDGE`).
const GROUPS: [u32; 2] = [1, 3];
const RECV_BUF: usize = rtnl::RECV_BUF;

fn sock_err(op: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| rtnl::Error::Socket { op, source }.into()
}

/// Every bridge FDB entry of this namespace (an `AF_BRIDGE` neighbour dump).
pub fn dump_fdb(req: &mut Requester) -> Result<Vec<crate::fdb::FdbEntry>> {
    let mut m = netlink_packet_route::neighbour::NeighbourMessage::default();
    m.header.family = netlink_packet_route::AddressFamily::Bridge;
    Ok(req
        .dump("fdb", RouteNetlinkMessage::GetNeighbour(m))?
        .iter()
        .filter_map(|msg| match msg {
            RouteNetlinkMessage::NewNeighbour(n) => crate::fdb::entry(n),
            _ => None,
        })
        .collect())
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
            return Err(rtnl::Error::Socket {
                op: "eventfd",
                source: io::Error::last_os_error(),
            }
            .into());
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
                return Err(rtnl::Error::Socket {
                    op: "recv",
                    source: e,
                }
                .into());
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
