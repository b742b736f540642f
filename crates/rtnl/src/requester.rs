//! The blocking request socket: single requests and batches (many per `sendmsg`, each
//! acknowledgement matched to its request), dumps retried when the kernel marks them
//! interrupted, and raw transactions whose echoes (`NLM_F_ECHO`) come back with their
//! acknowledgements, received many datagrams per `recvmmsg`.

use crate::answer::{Nack, nack};
use crate::frame::{raw_messages, request_bytes, split};
use crate::{BATCH, DUMP_RETRIES, Error, RECV_BUF, Result};
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

fn sock_err(op: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Socket { op, source }
}

/// How a request socket is set up beyond the defaults of [`Requester::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// `NETLINK_EXT_ACK` and `NETLINK_CAP_ACK`: refusals carry the kernel's message
    /// and not a copy of the request.
    pub ext_ack: bool,
    /// Receive buffer (`SO_RCVBUF`).
    pub rcvbuf: usize,
    /// Send buffer (`None`: the system's).
    pub sndbuf: Option<usize>,
    /// Whether to set the buffers past `rmem_max` / `wmem_max` where the process may
    /// (`SO_*BUFFORCE`, needs CAP_NET_ADMIN; the plain option otherwise).
    pub force_buffers: bool,
    /// Receive timeout: a request left unanswered that long fails with a `WouldBlock`
    /// socket error (`None`: wait for ever).
    pub timeout: Option<Duration>,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            ext_ack: false,
            rcvbuf: RECV_BUF,
            sndbuf: None,
            force_buffers: false,
            timeout: None,
        }
    }
}

/// The answers to one request of a [`Requester::transact`].
#[derive(Debug, Default)]
pub struct Reply {
    /// Whether its acknowledgement came.
    pub acked: bool,
    /// The refusal (`None`: acknowledged, or not acknowledged yet).
    pub error: Option<Nack>,
    /// The last other message with its sequence number (the echo of an `NLM_F_ECHO`
    /// request), raw.
    pub echo: Option<Vec<u8>>,
}

/// Size of one `recvmmsg` slot: an echo fits in `NLMSG_GOODSIZE`.
const SLOT: usize = 16 << 10;
/// Datagrams per `recvmmsg`.
const SLOTS: usize = 64;

/// A blocking request socket: requests with acknowledgements, and dumps.
pub struct Requester {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
    /// `recvmmsg` slots of [`Requester::transact`] (allocated on first use).
    slots: Vec<u8>,
    /// Messages that could not be decoded.
    pub undecodable: u64,
}

impl std::fmt::Debug for Requester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requester").field("seq", &self.seq).finish()
    }
}

fn setsockopt<T>(fd: i32, opt: libc::c_int, v: &T) -> bool {
    // SAFETY: setsockopt with a valid fd and a pointer to a live value of the given size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        ) == 0
    }
}

fn set_buf(fd: i32, force: bool, forced: libc::c_int, plain: libc::c_int, size: usize) {
    let size = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SO_*BUFFORCE needs CAP_NET_ADMIN; the plain option is the fallback.
    if !(force && setsockopt(fd, forced, &size)) {
        setsockopt(fd, plain, &size);
    }
}

impl Requester {
    /// Opens a request socket in the calling thread's network namespace.
    pub fn open() -> Result<Self> {
        Self::open_tuned(Tuning::default())
    }

    /// Opens a request socket set up as `t` says.
    pub fn open_tuned(t: Tuning) -> Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(sock_err("socket"))?;
        socket.bind_auto().map_err(sock_err("bind"))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(sock_err("connect"))?;
        if t.ext_ack {
            socket
                .set_ext_ack(true)
                .map_err(sock_err("NETLINK_EXT_ACK"))?;
            socket
                .set_cap_ack(true)
                .map_err(sock_err("NETLINK_CAP_ACK"))?;
        }
        let fd = socket.as_raw_fd();
        if t.force_buffers {
            set_buf(fd, true, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, t.rcvbuf);
        } else {
            socket
                .set_rx_buf_sz(t.rcvbuf)
                .map_err(sock_err("SO_RCVBUF"))?;
        }
        if let Some(s) = t.sndbuf {
            set_buf(
                fd,
                t.force_buffers,
                libc::SO_SNDBUFFORCE,
                libc::SO_SNDBUF,
                s,
            );
        }
        if let Some(d) = t.timeout {
            let tv = libc::timeval {
                tv_sec: d.as_secs().try_into().unwrap_or(libc::time_t::MAX),
                tv_usec: d.subsec_micros().into(),
            };
            setsockopt(fd, libc::SO_RCVTIMEO, &tv);
        }
        Ok(Requester {
            socket,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
            slots: Vec::new(),
            undecodable: 0,
        })
    }

    /// Sets the sequence number the next request follows (its own is `seq + 1`), for
    /// callers that number their own [`Requester::transact`]s on this socket.
    pub fn set_seq(&mut self, seq: u32) {
        self.seq = seq;
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
                crate::frame::frame_into(
                    &mut bytes,
                    m,
                    flags | NLM_F_REQUEST | NLM_F_ACK,
                    self.seq,
                );
                n += 1;
            }
            if let Err(e) = self.socket.send(&bytes, 0) {
                results.extend((0..n).map(|_| Err(io::Error::new(e.kind(), e.to_string()))));
                continue;
            }
            results.extend(self.acks(first, n));
        }
        results
    }

    /// The acknowledgements of `n` requests numbered from `first`, in order.
    fn acks(&mut self, first: u32, n: usize) -> Vec<io::Result<()>> {
        let mut chunk: Vec<Option<io::Result<()>>> = (0..n).map(|_| None).collect();
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
                let (Some(slot), NetlinkPayload::Error(e)) = (chunk.get_mut(i), msg.payload) else {
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
        chunk.into_iter().map(|r| r.unwrap_or(Ok(()))).collect()
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

    /// Sends framed requests (see [`crate::frame_into`]; each with `NLM_F_ACK`, the
    /// caller's sequence numbers `seqs`) in one `sendmsg` and collects, per sequence
    /// number, its acknowledgement or refusal (with extack) and its echo. Messages of
    /// other sequence numbers are ignored. A socket with a [`Tuning::timeout`] fails
    /// with a `WouldBlock` socket error when answers stop coming.
    pub fn transact(&mut self, buf: &[u8], seqs: &[u32]) -> Result<HashMap<u32, Reply>> {
        self.socket.send(buf, 0).map_err(sock_err("send"))?;
        if self.slots.len() < SLOT * SLOTS {
            self.slots = vec![0; SLOT * SLOTS];
        }
        let wanted: HashSet<u32> = seqs.iter().copied().collect();
        let mut replies: HashMap<u32, Reply> = HashMap::with_capacity(seqs.len());
        let mut pending = wanted.len();
        while pending > 0 {
            let mut lens = [0usize; SLOTS];
            let got = recv_many(self.socket.as_raw_fd(), &mut self.slots, &mut lens)
                .map_err(sock_err("recvmmsg"))?;
            for (i, len) in lens.iter().enumerate().take(got) {
                let dgram = &self.slots[i * SLOT..i * SLOT + len];
                for m in raw_messages(dgram).filter(|m| wanted.contains(&m.seq)) {
                    match m.ty {
                        NLMSG_ERROR => {
                            let error = nack(&m).map_err(Error::Decode)?;
                            let r = replies.entry(m.seq).or_default();
                            if !r.acked {
                                r.acked = true;
                                r.error = error;
                                pending -= 1;
                            }
                        }
                        NLMSG_DONE | NLMSG_NOOP => {}
                        _ => replies.entry(m.seq).or_default().echo = Some(m.bytes.to_vec()),
                    }
                }
            }
        }
        Ok(replies)
    }
}

/// Receives up to [`SLOTS`] datagrams in one syscall, blocking for the first; returns
/// how many, and the length of each in `lens`.
fn recv_many(fd: i32, slots: &mut [u8], lens: &mut [usize; SLOTS]) -> io::Result<usize> {
    let mut iov: [libc::iovec; SLOTS] = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; SLOTS];
    // SAFETY: all-zero is a valid mmsghdr (null pointers, zero lengths).
    let mut hdrs: [libc::mmsghdr; SLOTS] = unsafe { std::mem::zeroed() };
    for (i, chunk) in slots.chunks_exact_mut(SLOT).take(SLOTS).enumerate() {
        iov[i] = libc::iovec {
            iov_base: chunk.as_mut_ptr().cast(),
            iov_len: SLOT,
        };
        hdrs[i].msg_hdr.msg_iov = &mut iov[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    loop {
        // SAFETY: every header points at its own iovec, which points into `slots`, all
        // alive and exclusively borrowed for the duration of the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                SLOTS as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let n = n as usize;
        for i in 0..n {
            // A truncated datagram (MSG_TRUNC) is cut to the slot; its parse fails cleanly.
            lens[i] = (hdrs[i].msg_len as usize).min(SLOT);
        }
        return Ok(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::frame_into;
    use netlink_packet_core::NLM_F_ECHO;
    use netlink_packet_route::link::LinkMessage;

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

    /// A raw transaction against the running kernel: per request, its refusal (with the
    /// kernel's extack where it gives one) or its acknowledgement, and an echo.
    #[test]
    fn a_transaction_answers_each_request() {
        let Ok(mut r) = Requester::open_tuned(Tuning {
            ext_ack: true,
            timeout: Some(Duration::from_secs(10)),
            ..Tuning::default()
        }) else {
            eprintln!("skipped: no netlink socket");
            return;
        };
        let mut buf = Vec::new();
        let mut missing = LinkMessage::default();
        missing.header.index = 0x7fff_fff0;
        frame_into(
            &mut buf,
            RouteNetlinkMessage::DelLink(missing),
            NLM_F_REQUEST | NLM_F_ACK,
            100,
        );
        let mut lo = LinkMessage::default();
        lo.header.index = 1;
        frame_into(
            &mut buf,
            RouteNetlinkMessage::GetLink(lo),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_ECHO,
            101,
        );
        let replies = r.transact(&buf, &[100, 101]).expect("transact");
        let refused = &replies[&100];
        assert!(refused.acked);
        assert!(
            refused.error.as_ref().is_some_and(|n| n.errno > 0),
            "{refused:?}"
        );
        let got = &replies[&101];
        assert!(got.acked && got.error.is_none(), "{got:?}");
        let echo = got.echo.as_deref().expect("the link comes back");
        assert!(matches!(
            crate::to_route_message(echo),
            Some(RouteNetlinkMessage::NewLink(l)) if l.header.index == 1
        ));
    }
}
