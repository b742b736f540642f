//! `PACKET_FANOUT`: one port's sockets, one per datapath thread, sharing the port's
//! traffic by flow ([`AfPacketPort::open_fanout`](super::AfPacketPort::open_fanout)).
//!
//! The kernel hands each frame of the device to one socket of the group, chosen by
//! `PACKET_FANOUT_HASH`: the kernel's symmetric flow hash (addresses, protocol, ports),
//! so every frame of a connection, both ways, goes to the same socket and so to the same
//! datapath thread (no reordering within a flow). A GSO super-frame hashes as its
//! segments do (the hash reads its headers). Fragments hash on addresses and protocol
//! only (the kernel's dissector reads no ports in a fragment), so all fragments of a
//! datagram stay together. `PACKET_FANOUT_FLAG_DEFRAG` is not used: it would make the
//! kernel reassemble IPv4 datagrams before the hash and hand flowd the reassembled
//! packet, larger than the MTU, where a switch must forward the fragments as they came.
//! No `PACKET_FANOUT_FLAG_ROLLOVER` either: a thread that falls behind would see its
//! flows spread over the others (reordered); its ring drops instead, counted.
//!
//! Joining needs a bound socket (the kernel refuses an unbound one), and a bound socket
//! outside the group gets a copy of every frame while the group's members get theirs:
//! between its bind and its join a second socket would receive duplicates. So every
//! socket of the group is opened behind a classic BPF filter that drops everything
//! (attached before the bind, like the ring), joins, and only once the whole group is
//! joined are the filters taken off. What arrives before that is not received, as for a
//! single socket before its bind: the port is not open yet.
//!
//! Frames a member transmits never come back to the group (the kernel's tap skips the
//! sender's own group), but frames the host transmits on the device (its own ARP or
//! neighbour discovery, another socket's) would: a socket's own `PACKET_IGNORE_OUTGOING`
//! does not apply once it is in a group (the kernel taps through the group's hook). The
//! group is made with `PACKET_FANOUT_FLAG_IGNORE_OUTGOING`; a kernel without that flag
//! refuses it (`EINVAL`), and the group is then made without, each socket keeping a
//! filter that drops outgoing frames (`PACKET_OUTGOING`).
//!
//! Group ids are per network namespace and 16 bits: the first socket asks the kernel for
//! an unused one (`PACKET_FANOUT_FLAG_UNIQUEID`), the others join it by that id.

use super::sys::setsockopt_int;
use std::io;

pub(super) const PACKET_FANOUT: libc::c_int = 18;
const PACKET_FANOUT_HASH: u32 = 0;
const PACKET_FANOUT_FLAG_UNIQUEID: u32 = 0x2000;
const PACKET_FANOUT_FLAG_IGNORE_OUTGOING: u32 = 0x4000;

/// The most sockets flowd puts in one group (the kernel takes 256 by default).
pub const MAX_FANOUT: usize = 64;

/// Classic BPF: `ret #k` (BPF_RET | BPF_K).
const RET: u16 = 0x06;
/// Classic BPF: `ldb [k]` (BPF_LD | BPF_B | BPF_ABS).
const LDB: u16 = 0x30;
/// Classic BPF: `jeq #k, jt, jf` (BPF_JMP | BPF_JEQ | BPF_K).
const JEQ: u16 = 0x15;
/// The ancillary load of `skb->pkt_type` (SKF_AD_OFF + SKF_AD_PKTTYPE).
const AD_PKTTYPE: u32 = 0xffff_f000 + 4;
/// `skb->pkt_type` of a frame the host transmits, as a tap sees it.
const PACKET_OUTGOING: u32 = 4;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Drops every frame.
fn drop_all() -> Vec<libc::sock_filter> {
    vec![insn(RET, 0, 0, 0)]
}

/// Drops the frames the host transmits, keeps the rest whole.
fn drop_outgoing() -> Vec<libc::sock_filter> {
    vec![
        insn(LDB, 0, 0, AD_PKTTYPE),
        insn(JEQ, 0, 1, PACKET_OUTGOING),
        insn(RET, 0, 0, 0),
        insn(RET, 0, 0, u32::MAX),
    ]
}

fn attach(fd: i32, prog: &[libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` and the program it points to outlive the call; the kernel copies
    // the program.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn detach(fd: i32) -> io::Result<()> {
    let zero: libc::c_int = 0;
    // SAFETY: `zero` outlives the call and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_DETACH_FILTER,
            (&zero as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A group being made: its id once the first socket joined, and whether the kernel took
/// `PACKET_FANOUT_FLAG_IGNORE_OUTGOING`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Group {
    id: Option<u16>,
    ignore_outgoing: bool,
}

impl Group {
    /// A group no socket joined yet. `ignore_outgoing`: ask for the kernel's flag (false
    /// only to test the fallback).
    pub(super) fn new(ignore_outgoing: bool) -> Self {
        Self {
            id: None,
            ignore_outgoing,
        }
    }

    /// The kernel's id of the group (once a socket joined).
    pub(super) fn id(&self) -> Option<u16> {
        self.id
    }

    /// Before the bind: the socket receives nothing until [`Self::open_up`].
    pub(super) fn before_bind(fd: i32) -> io::Result<()> {
        attach(fd, &drop_all())
    }

    /// After the bind: the socket joins the group (the first one makes it).
    pub(super) fn join(&mut self, fd: i32) -> io::Result<()> {
        let flags = |ignore: bool| {
            PACKET_FANOUT_HASH
                | if ignore {
                    PACKET_FANOUT_FLAG_IGNORE_OUTGOING
                } else {
                    0
                }
        };
        if let Some(id) = self.id {
            let arg = u32::from(id) | (flags(self.ignore_outgoing) << 16);
            return setsockopt_int(fd, PACKET_FANOUT, arg as libc::c_int);
        }
        let first = |ignore: bool| {
            let arg = (flags(ignore) | PACKET_FANOUT_FLAG_UNIQUEID) << 16;
            setsockopt_int(fd, PACKET_FANOUT, arg as libc::c_int)
        };
        match first(self.ignore_outgoing) {
            Err(e) if self.ignore_outgoing && e.raw_os_error() == Some(libc::EINVAL) => {
                // A kernel without the flag: each socket filters outgoing frames.
                first(false)?;
                self.ignore_outgoing = false;
            }
            r => r?,
        }
        self.id = Some((fanout_arg(fd)? & 0xffff) as u16);
        Ok(())
    }

    /// Once every socket joined: the socket receives its share (and, without the
    /// kernel's flag, drops what the host transmits).
    pub(super) fn open_up(&self, fd: i32) -> io::Result<()> {
        if self.ignore_outgoing {
            detach(fd)
        } else {
            attach(fd, &drop_outgoing())
        }
    }
}

/// The socket's `PACKET_FANOUT` value: group id, type and flags.
fn fanout_arg(fd: i32) -> io::Result<u32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` outlive the call; `len` is the buffer's size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_PACKET,
            PACKET_FANOUT,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(v as u32)
    }
}
