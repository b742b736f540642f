//! [`KernelTunnel`]: the tunnel port's I/O through the kernel's own IP stack, for tunnel
//! paths the host's IPsec policy covers.
//!
//! flowd's fast path writes encapsulated frames straight onto an uplink (AF_PACKET) and
//! reads them off it, beneath the kernel's IP layer, where no IPsec policy applies. On a
//! path an outbound policy protects, that would put the VMs' traffic on the wire in
//! clear; on one an inbound policy protects, the packets arrive as ESP and only the
//! kernel can decrypt them. So such paths go through the kernel:
//!
//! - **Transmit.** The executor encapsulates as usual (VXLAN header, the outer IP and
//!   UDP headers it would send) into this port's transmit batch; the outer Ethernet
//!   header is not sent, its destination carries the tunnel's mark ([`mark_mac`]). The
//!   port sends each VXLAN payload from a UDP socket bound to the outer source address
//!   with that mark (`SO_MARK`), DF (`IP_MTU_DISCOVER`), checksum (`SO_NO_CHECK`), TOS and
//!   TTL as the outer header says, to the remote VTEP's UDP port: the kernel routes it
//!   exactly as fibwatch resolved the key (destination, source, mark), applies the
//!   policy (encrypts; drops while there is no SA, asking the key manager for one) and
//!   builds the outer headers. Over ESP the outer UDP source port is hidden, so the
//!   socket's one port costs no load-balancing entropy on the wire.
//! - **Receive.** A raw socket per family (`SOCK_RAW`, `IPPROTO_UDP`) gets a copy of
//!   every UDP packet the kernel delivers locally, after decryption and after the
//!   kernel checked the socket against its inbound policy (`raw_rcv`'s
//!   `xfrm_policy_check`): a packet that should have come encrypted and did not never
//!   reaches it. A classic BPF filter keeps only VXLAN (UDP to the tunnel port), and only
//!   while the daemon says some inbound policy may cover it ([`RxControl::set`]); the
//!   kernel discards the rest without waking flowd. Each packet becomes a frame as it
//!   would have been on the wire (an Ethernet header of zeros, the IPv4 header as
//!   received, or an IPv6 header rebuilt from the addresses, hop limit and traffic
//!   class the kernel reports), which the datapath decapsulates like a frame from an
//!   uplink. Which copy counts, this one or the uplink's, is the datapath's decision
//!   (per remote: see `dpif`).
//!
//! Why not the kernel's VXLAN device: in external (collect-metadata) mode it strips the
//! outer header into metadata that an AF_PACKET tap on the device does not show, so the
//! VNI and outer addresses a decapsulated flow is keyed by would be lost. Why not a UDP
//! socket on the VXLAN port: the kernel's VXLAN device owns it.

#![allow(unsafe_code)]

use super::{PacketBatch, Port, PortError, PortStats};
use crate::IfIndex;
use socket2::{Domain, Protocol, SockAddr, SockFilter, Socket, Type};
use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The outer Ethernet destination a frame for this port carries: the tunnel's mark in
/// its first four bytes (the rest of the Ethernet header is not sent).
pub fn mark_mac(mark: u32) -> [u8; 6] {
    let b = mark.to_be_bytes();
    [b[0], b[1], b[2], b[3], 0, 0]
}

/// What one transmit socket is bound to and configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TxKey {
    src: IpAddr,
    mark: u32,
    df: bool,
    csum: bool,
}

#[derive(Debug)]
struct TxSocket {
    sock: Socket,
    /// TOS / traffic class and TTL / hop limit set on it (0: the kernel's default).
    tos: u8,
    ttl: u8,
}

/// An outer packet as the executor built it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outer {
    key: TxKey,
    dst: SocketAddr,
    tos: u8,
    ttl: u8,
    /// Where the UDP payload (the VXLAN header) starts.
    payload: usize,
}

fn parse_outer(frame: &[u8]) -> Option<Outer> {
    let mac = frame.get(..6)?;
    let mark = u32::from_be_bytes([mac[0], mac[1], mac[2], mac[3]]);
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = frame.get(14..)?;
    let (src, dst, tos, ttl, df, l4): (IpAddr, IpAddr, u8, u8, bool, usize) = match ethertype {
        0x0800 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            if ip.first()? >> 4 != 4 || ihl < 20 || *ip.get(9)? != 17 {
                return None;
            }
            let a = |o: usize| -> Option<IpAddr> {
                let b: [u8; 4] = ip.get(o..o + 4)?.try_into().ok()?;
                Some(IpAddr::V4(Ipv4Addr::from(b)))
            };
            (a(12)?, a(16)?, ip[1], ip[8], ip[6] & 0x40 != 0, ihl)
        }
        0x86dd => {
            if ip.first()? >> 4 != 6 || *ip.get(6)? != 17 {
                return None;
            }
            let a = |o: usize| -> Option<IpAddr> {
                let b: [u8; 16] = ip.get(o..o + 16)?.try_into().ok()?;
                Some(IpAddr::V6(Ipv6Addr::from(b)))
            };
            let tclass = (ip[0] << 4) | (ip[1] >> 4);
            (a(8)?, a(24)?, tclass, ip[7], false, 40)
        }
        _ => return None,
    };
    let udp = ip.get(l4..l4 + 8)?;
    let dport = u16::from_be_bytes([udp[2], udp[3]]);
    let csum = dst.is_ipv6() || udp[6..8] != [0, 0];
    Some(Outer {
        key: TxKey {
            src,
            mark,
            df,
            csum,
        },
        dst: SocketAddr::new(dst, dport),
        tos,
        ttl,
        payload: 14 + l4 + 8,
    })
}

fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: a plain setsockopt with a pointer to a live int and its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn tx_socket(k: &TxKey) -> io::Result<Socket> {
    let sock = Socket::new(
        Domain::for_address(SocketAddr::new(k.src, 0)),
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )?;
    if k.mark != 0 {
        sock.set_mark(k.mark)?;
    }
    sock.bind(&SockAddr::from(SocketAddr::new(k.src, 0)))?;
    // Nothing is read from it.
    sock.set_recv_buffer_size(0)?;
    let fd = sock.as_raw_fd();
    if k.src.is_ipv4() {
        let pmtu = if k.df {
            libc::IP_PMTUDISC_DO
        } else {
            libc::IP_PMTUDISC_DONT
        };
        setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, pmtu)?;
        if !k.csum {
            setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_NO_CHECK, 1)?;
        }
    }
    Ok(sock)
}

const BPF_LD: u16 = 0x00;
const BPF_LDX: u16 = 0x01;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_H: u16 = 0x08;
const BPF_B: u16 = 0x10;
const BPF_ABS: u16 = 0x20;
const BPF_IND: u16 = 0x40;
const BPF_MSH: u16 = 0xa0;
const BPF_JEQ: u16 = 0x10;
const BPF_K: u16 = 0x00;

/// The receive filter: UDP to `port` (IPv4 data starts at the IP header, IPv6 data at
/// the UDP header), or nothing at all.
fn rx_filter(v6: bool, port: Option<u16>) -> Vec<SockFilter> {
    let Some(port) = port else {
        return vec![SockFilter::new(BPF_RET | BPF_K, 0, 0, 0)];
    };
    let mut f = Vec::new();
    if v6 {
        f.push(SockFilter::new(BPF_LD | BPF_H | BPF_ABS, 0, 0, 2));
    } else {
        f.push(SockFilter::new(BPF_LDX | BPF_B | BPF_MSH, 0, 0, 0));
        f.push(SockFilter::new(BPF_LD | BPF_H | BPF_IND, 0, 0, 2));
    }
    f.push(SockFilter::new(
        BPF_JMP | BPF_JEQ | BPF_K,
        0,
        1,
        u32::from(port),
    ));
    f.push(SockFilter::new(BPF_RET | BPF_K, 0, 0, 0x0004_0000));
    f.push(SockFilter::new(BPF_RET | BPF_K, 0, 0, 0));
    f
}

fn rx_socket(domain: Domain) -> io::Result<Socket> {
    let sock = Socket::new(
        domain,
        Type::RAW.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )?;
    let v6 = domain == Domain::IPV6;
    sock.attach_filter(&rx_filter(v6, None))?;
    sock.set_recv_buffer_size(4 << 20)?;
    if v6 {
        let fd = sock.as_raw_fd();
        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
        sock.set_recv_hoplimit_v6(true)?;
        sock.set_recv_tclass_v6(true)?;
    }
    Ok(sock)
}

/// Switches the port's receive filters from another thread (the daemon, when the IPsec
/// policies change).
#[derive(Debug)]
pub struct RxControl {
    rx4: Socket,
    rx6: Socket,
    port: u16,
}

impl RxControl {
    /// Takes VXLAN packets of each family from the kernel (`true`), or none.
    pub fn set(&self, v4: bool, v6: bool) -> io::Result<()> {
        self.rx4
            .attach_filter(&rx_filter(false, v4.then_some(self.port)))?;
        self.rx6
            .attach_filter(&rx_filter(true, v6.then_some(self.port)))
    }
}

/// Counters of the kernel path beyond [`PortStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelTunnelStats {
    /// VXLAN payloads handed to the kernel.
    pub tx: u64,
    /// Refused by the kernel because its path MTU (IPsec overhead included) is smaller.
    pub tx_too_big: u64,
    /// Refused because a policy blocks the path (`EPERM`).
    pub tx_blocked: u64,
    /// Frames received from the kernel (after decryption).
    pub rx: u64,
}

/// The tunnel port's kernel I/O (module docs).
#[derive(Debug)]
pub struct KernelTunnel {
    name: String,
    tx: HashMap<TxKey, TxSocket>,
    rx4: Socket,
    rx6: Socket,
    epoll: OwnedFd,
    port: u16,
    stats: PortStats,
    /// Kernel path counters.
    pub counters: KernelTunnelStats,
}

fn epoll_add(epoll: RawFd, fd: RawFd) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: fd as u64,
    };
    // SAFETY: valid descriptors and a live event structure.
    let r = unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut ev) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl KernelTunnel {
    /// Opens the receive sockets (receiving nothing until [`RxControl::set`] says so)
    /// for VXLAN to UDP `port`, in the calling thread's network namespace. `name` is the
    /// tunnel device's, for reports.
    pub fn open(name: &str, port: u16) -> Result<Self, PortError> {
        let err = |op| {
            let name = name.to_string();
            move |source| PortError::Io {
                op,
                port: name,
                source,
            }
        };
        let rx4 = rx_socket(Domain::IPV4).map_err(err("raw IPv4 UDP socket"))?;
        let rx6 = rx_socket(Domain::IPV6).map_err(err("raw IPv6 UDP socket"))?;
        // SAFETY: plain system call; the result is checked.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(err("epoll_create1")(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
        epoll_add(raw, rx4.as_raw_fd()).map_err(err("epoll_ctl"))?;
        epoll_add(raw, rx6.as_raw_fd()).map_err(err("epoll_ctl"))?;
        Ok(Self {
            name: name.to_string(),
            tx: HashMap::new(),
            rx4,
            rx6,
            epoll,
            port,
            stats: PortStats::default(),
            counters: KernelTunnelStats::default(),
        })
    }

    /// A handle that switches the receive filters from another thread.
    pub fn rx_control(&self) -> io::Result<RxControl> {
        Ok(RxControl {
            rx4: self.rx4.try_clone()?,
            rx6: self.rx6.try_clone()?,
            port: self.port,
        })
    }

    fn send_one(&mut self, frame: &[u8]) -> bool {
        let Some(o) = parse_outer(frame) else {
            self.stats.tx_dropped += 1;
            return false;
        };
        let sock = match self.tx.entry(o.key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => match tx_socket(&o.key) {
                Ok(sock) => v.insert(TxSocket {
                    sock,
                    tos: 0,
                    ttl: 0,
                }),
                Err(_) => {
                    self.stats.errors += 1;
                    self.stats.tx_dropped += 1;
                    return false;
                }
            },
        };
        if sock.tos != o.tos || sock.ttl != o.ttl {
            let set = if o.key.src.is_ipv4() {
                sock.sock
                    .set_tos_v4(u32::from(o.tos))
                    .and_then(|()| sock.sock.set_ttl_v4(u32::from(o.ttl.max(1))))
            } else {
                sock.sock
                    .set_tclass_v6(u32::from(o.tos))
                    .and_then(|()| sock.sock.set_unicast_hops_v6(u32::from(o.ttl.max(1))))
            };
            match set {
                Ok(()) => (sock.tos, sock.ttl) = (o.tos, o.ttl),
                Err(_) => self.stats.errors += 1,
            }
        }
        let payload = &frame[o.payload..];
        match sock.sock.send_to(payload, &SockAddr::from(o.dst)) {
            Ok(_) => {
                self.counters.tx += 1;
                true
            }
            Err(e) => {
                self.stats.tx_dropped += 1;
                match e.raw_os_error() {
                    Some(libc::EMSGSIZE) => self.counters.tx_too_big += 1,
                    Some(libc::EPERM) => self.counters.tx_blocked += 1,
                    Some(libc::EAGAIN | libc::ENOBUFS) => {}
                    _ => self.stats.errors += 1,
                }
                false
            }
        }
    }

    /// Reads IPv4 packets into `batch` as frames; whether the socket ran dry.
    fn recv4(&mut self, batch: &mut PacketBatch) -> bool {
        while !batch.is_full() {
            let mut dry = false;
            let mut failed = false;
            let sock = &self.rx4;
            let pushed = batch.push_with(|slot| {
                if slot.len() < 14 + 28 {
                    return 0;
                }
                slot[..12].fill(0);
                slot[12..14].copy_from_slice(&[0x08, 0x00]);
                match (&*sock).read(&mut slot[14..]) {
                    Ok(n) => 14 + n,
                    Err(e) => {
                        dry = e.kind() == io::ErrorKind::WouldBlock;
                        failed = !dry && e.kind() != io::ErrorKind::Interrupted;
                        0
                    }
                }
            });
            if failed {
                self.stats.errors += 1;
            }
            if dry {
                return true;
            }
            if pushed {
                self.counters.rx += 1;
            } else if !failed {
                // Nothing read (interrupted, or an empty datagram): try again.
                continue;
            } else {
                return false;
            }
        }
        false
    }

    /// Reads IPv6 UDP packets into `batch`, rebuilding their IPv6 header; whether the
    /// socket ran dry.
    fn recv6(&mut self, batch: &mut PacketBatch) -> bool {
        let fd = self.rx6.as_raw_fd();
        while !batch.is_full() {
            let mut dry = false;
            let mut failed = false;
            let pushed = batch.push_with(|slot| {
                if slot.len() < 14 + 40 + 8 {
                    return 0;
                }
                match recv6_into(fd, slot) {
                    Ok(n) => n,
                    Err(e) => {
                        dry = e.kind() == io::ErrorKind::WouldBlock;
                        failed = !dry && e.kind() != io::ErrorKind::Interrupted;
                        0
                    }
                }
            });
            if failed {
                self.stats.errors += 1;
            }
            if dry {
                return true;
            }
            if pushed {
                self.counters.rx += 1;
            } else if failed {
                return false;
            }
        }
        false
    }
}

/// One `recvmsg` on the raw IPv6 socket into `slot[54..]`, with the Ethernet and IPv6
/// headers written in front from the source address, `IPV6_PKTINFO`, `IPV6_HOPLIMIT`
/// and `IPV6_TCLASS`. Returns the frame length (0: unusable, dropped).
fn recv6_into(fd: RawFd, slot: &mut [u8]) -> io::Result<usize> {
    let data = &mut slot[54..];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: zeroed plain C structures are valid.
    let mut from: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    let mut control = [0u64; 16];
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut from as *mut libc::sockaddr_in6).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: every pointer in `msg` refers to live buffers of the stated sizes.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    if msg.msg_flags & libc::MSG_TRUNC != 0 || n > usize::from(u16::MAX) {
        return Ok(0);
    }
    let clen = (msg.msg_controllen as usize).min(std::mem::size_of_val(&control));
    let cbytes: Vec<u8> = control.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let (mut dst, mut hops, mut tclass) = (None, 64u8, 0u8);
    for (level, ty, v) in cmsgs(&cbytes[..clen]) {
        if level != libc::IPPROTO_IPV6 {
            continue;
        }
        match ty {
            libc::IPV6_PKTINFO => {
                dst = v
                    .get(..16)
                    .and_then(|b| <[u8; 16]>::try_from(b).ok())
                    .map(Ipv6Addr::from);
            }
            libc::IPV6_HOPLIMIT => {
                hops = v.get(..4).map_or(64, |b| {
                    i32::from_ne_bytes([b[0], b[1], b[2], b[3]]).clamp(0, 255) as u8
                })
            }
            libc::IPV6_TCLASS => {
                tclass = v.get(..4).map_or(0, |b| {
                    i32::from_ne_bytes([b[0], b[1], b[2], b[3]]).clamp(0, 255) as u8
                })
            }
            _ => {}
        }
    }
    let Some(dst) = dst else { return Ok(0) };
    let src = Ipv6Addr::from(from.sin6_addr.s6_addr);
    slot[..12].fill(0);
    slot[12..14].copy_from_slice(&[0x86, 0xdd]);
    let ip = &mut slot[14..54];
    ip[0] = 0x60 | (tclass >> 4);
    ip[1] = tclass << 4;
    ip[2..4].fill(0);
    ip[4..6].copy_from_slice(&(n as u16).to_be_bytes());
    ip[6] = 17;
    ip[7] = hops;
    ip[8..24].copy_from_slice(&src.octets());
    ip[24..40].copy_from_slice(&dst.octets());
    Ok(54 + n)
}

/// The control messages in a `msg_control` buffer: (level, type, data).
fn cmsgs(mut b: &[u8]) -> impl Iterator<Item = (i32, i32, &[u8])> {
    const HDR: usize = std::mem::size_of::<libc::cmsghdr>();
    std::iter::from_fn(move || {
        let len = usize::from_ne_bytes(b.get(..8)?.try_into().ok()?);
        let level = i32::from_ne_bytes(b.get(8..12)?.try_into().ok()?);
        let ty = i32::from_ne_bytes(b.get(12..16)?.try_into().ok()?);
        if len < HDR || len > b.len() {
            return None;
        }
        let v = &b[HDR..len];
        b = b.get(len.next_multiple_of(8)..).unwrap_or(&[]);
        Some((level, ty, v))
    })
}

impl Port for KernelTunnel {
    fn name(&self) -> &str {
        &self.name
    }

    fn ifindex(&self) -> Option<IfIndex> {
        None
    }

    fn mtu(&self) -> u32 {
        u32::from(u16::MAX)
    }

    fn recv(&mut self, batch: &mut PacketBatch) -> Result<usize, PortError> {
        let before = batch.len();
        // Drain the readiness notifications (level-triggered: they come back while data
        // waits).
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 2];
        // SAFETY: a valid epoll descriptor and a live array of the stated length.
        let _ = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), evs.as_mut_ptr(), 2, 0) };
        self.recv4(batch);
        self.recv6(batch);
        Ok(batch.len() - before)
    }

    fn send(&mut self, batch: &PacketBatch) -> Result<usize, PortError> {
        Ok(batch.iter().filter(|f| self.send_one(f)).count())
    }

    fn raw_fd(&self) -> Option<i32> {
        Some(self.epoll.as_raw_fd())
    }

    fn stats(&mut self) -> PortStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::vxlan::{self, OuterHeaders};

    fn outer(src: &str, dst: &str, df: bool, csum: bool, mark: u32) -> Vec<u8> {
        let o = OuterHeaders {
            src_mac: [0; 6],
            dst_mac: mark_mac(mark),
            src_ip: src.parse().unwrap(),
            dst_ip: dst.parse().unwrap(),
            tos: 0x10,
            ttl: 33,
            df,
            ident: 0,
            udp_src: 50000,
            udp_dst: 4789,
            vni: 7,
            udp_csum: csum,
        };
        let inner = [0xabu8; 60];
        let mut buf = vec![0u8; 256];
        let n = vxlan::encapsulate(&inner, &o, &mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn the_outer_header_says_how_to_send() {
        let f = outer("192.0.2.1", "198.51.100.2", true, false, 0x1234_5678);
        let o = parse_outer(&f).unwrap();
        assert_eq!(
            o.key,
            TxKey {
                src: "192.0.2.1".parse().unwrap(),
                mark: 0x1234_5678,
                df: true,
                csum: false
            }
        );
        assert_eq!(o.dst, "198.51.100.2:4789".parse().unwrap());
        assert_eq!((o.tos, o.ttl, o.payload), (0x10, 33, 14 + 20 + 8));
        assert_eq!(&f[o.payload..o.payload + 8], &[0x08, 0, 0, 0, 0, 0, 7, 0]);
        let f = outer("2001:db8::1", "2001:db8::2", false, true, 0);
        let o = parse_outer(&f).unwrap();
        assert_eq!((o.key.df, o.key.csum, o.key.mark), (false, true, 0));
        assert_eq!((o.tos, o.ttl, o.payload), (0x10, 33, 14 + 40 + 8));
        assert_eq!(o.dst, "[2001:db8::2]:4789".parse().unwrap());
        // Anything else is refused, never a panic.
        for cut in 0..f.len() {
            let _ = parse_outer(&f[..cut]);
        }
        assert_eq!(parse_outer(&[0u8; 60]), None);
    }

    #[test]
    fn control_messages_parse_and_garbage_stops() {
        let mut b = Vec::new();
        b.extend(20usize.to_ne_bytes());
        b.extend(libc::IPPROTO_IPV6.to_ne_bytes());
        b.extend(libc::IPV6_HOPLIMIT.to_ne_bytes());
        b.extend(7i32.to_ne_bytes());
        b.resize(24, 0);
        b.extend(1000usize.to_ne_bytes());
        let got: Vec<_> = cmsgs(&b).collect();
        assert_eq!(
            got,
            vec![(
                libc::IPPROTO_IPV6,
                libc::IPV6_HOPLIMIT,
                &7i32.to_ne_bytes()[..]
            )]
        );
    }
}
