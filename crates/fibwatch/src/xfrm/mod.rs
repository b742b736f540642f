//! The IPsec mirror: the kernel's XFRM policies and states (SAs), from `NETLINK_XFRM`
//! dumps and the `XFRMNLGRP_POLICY`/`XFRMNLGRP_SA` event groups, and what they mean for
//! a tunnel path.
//!
//! A tunnel path (outer source, remote VTEP, UDP to 4789, mark) is *protected* when an
//! outbound policy of the main type may select it: the kernel then encrypts (or, for a
//! `block` policy, drops) every packet of it that goes through its IP output. The
//! decision errs on the safe side on purpose: the outer UDP source port varies per inner
//! flow, so a policy with a source-port selector selects some of the path's packets; if
//! it protects (or blocks), the path counts as protected; if it is a bypass (an allow
//! without templates), it does not count. A protected path only means "send through the
//! kernel, which applies the policy"; a path wrongly called unprotected would leak in
//! clear. The destination port is VXLAN's ([`VXLAN_PORT`](vocab::VXLAN_PORT)).
//!
//! For a protected path the facts also name the template (ESP or AH, transport or
//! tunnel mode, reqid), the SA the kernel would use if one exists (its SPI, the bytes ESP
//! adds with its algorithms, and whether it has packet offload on a device), or that
//! there is none yet (the kernel holds and drops the path's packets and asks a key
//! manager for one).
//!
//! This module is the only one that speaks `NETLINK_XFRM`: netlink-packet-route has no
//! XFRM messages, and the one crate that has them (netlink-packet-xfrm) is built on an
//! older netlink-packet-core; the few structures read here (`xfrm_userpolicy_info`,
//! `xfrm_user_tmpl`, `xfrm_usersa_info` and their attributes) are decoded from the
//! kernel's uapi layout, bounds-checked, never panicking.

use crate::error::{Error, Result};
use datapath::IfIndex;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_XFRM};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, RawFd};
use vocab::{Ipsec, IpsecSa, LookupKey, Path};

const XFRM_MSG_NEWSA: u16 = 0x10;
const XFRM_MSG_GETSA: u16 = 0x12;
const XFRM_MSG_NEWPOLICY: u16 = 0x13;
const XFRM_MSG_GETPOLICY: u16 = 0x15;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;

const XFRMA_ALG_AUTH: u16 = 1;
const XFRMA_ALG_CRYPT: u16 = 2;
const XFRMA_TMPL: u16 = 5;
const XFRMA_POLICY_TYPE: u16 = 16;
const XFRMA_ALG_AEAD: u16 = 18;
const XFRMA_ALG_AUTH_TRUNC: u16 = 20;
const XFRMA_MARK: u16 = 21;
const XFRMA_OFFLOAD_DEV: u16 = 28;

/// `XFRMNLGRP_SA` and `XFRMNLGRP_POLICY`.
const GROUPS: [u32; 2] = [3, 4];

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_UDP: u8 = 17;
/// ESP.
pub const IPPROTO_ESP: u8 = 50;
/// AH.
pub const IPPROTO_AH: u8 = 51;
const XFRM_POLICY_IN: u8 = 0;
const XFRM_POLICY_OUT: u8 = 1;
const XFRM_POLICY_BLOCK: u8 = 1;
const XFRM_POLICY_TYPE_MAIN: u8 = 0;
/// Transport mode.
pub const XFRM_MODE_TRANSPORT: u8 = 0;
/// Tunnel mode.
pub const XFRM_MODE_TUNNEL: u8 = 1;
const XFRM_OFFLOAD_INBOUND: u8 = 2;
const XFRM_OFFLOAD_PACKET: u8 = 4;

/// `sizeof(struct xfrm_selector)`.
const SEL_LEN: usize = 56;
/// `sizeof(struct xfrm_userpolicy_info)`.
const POLICY_LEN: usize = 168;
/// `sizeof(struct xfrm_user_tmpl)`.
const TMPL_LEN: usize = 64;
/// `sizeof(struct xfrm_usersa_info)`.
const SA_LEN: usize = 224;

/// A traffic selector (`struct xfrm_selector`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selector {
    /// Destination prefix.
    pub daddr: IpAddr,
    /// Its length.
    pub prefixlen_d: u8,
    /// Source prefix.
    pub saddr: IpAddr,
    /// Its length.
    pub prefixlen_s: u8,
    /// Destination port and mask (host order).
    pub dport: (u16, u16),
    /// Source port and mask (host order).
    pub sport: (u16, u16),
    /// IP protocol (0: any).
    pub proto: u8,
    /// Interface (0: any).
    pub ifindex: i32,
}

fn covers(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let len = u32::from(len.min(32));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            n.to_bits() & mask == a.to_bits() & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let len = u32::from(len.min(128));
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            n.to_bits() & mask == a.to_bits() & mask
        }
        _ => false,
    }
}

impl Selector {
    /// Whether it may select a VXLAN packet from `src` to `dst` (UDP to `dport`) leaving
    /// by `uplink` (`None`: arriving by any interface). The UDP source port varies per
    /// flow (it carries the inner flow's entropy), and packets may arrive by several
    /// interfaces: a selector on either selects some of the path's packets, so it
    /// answers `partly` (see the module docs).
    fn may_select(
        &self,
        src: IpAddr,
        dst: IpAddr,
        dport: u16,
        uplink: Option<IfIndex>,
        partly: bool,
    ) -> bool {
        covers(self.saddr, self.prefixlen_s, src)
            && covers(self.daddr, self.prefixlen_d, dst)
            && (self.proto == 0 || self.proto == IPPROTO_UDP)
            && (self.proto == 0 || (dport & self.dport.1) == (self.dport.0 & self.dport.1))
            && (self.ifindex == 0 || uplink.map_or(partly, |u| self.ifindex as u32 == u.0))
            && (self.proto == 0 || self.sport.1 == 0 || partly)
    }
}

/// A policy template (`struct xfrm_user_tmpl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template {
    /// The SA's destination (unspecified: the packet's).
    pub daddr: IpAddr,
    /// The SA's source (unspecified: the packet's).
    pub saddr: IpAddr,
    /// ESP or AH.
    pub proto: u8,
    /// Transport or tunnel.
    pub mode: u8,
    /// Request id (0: any).
    pub reqid: u32,
    /// An optional template (`level use`).
    pub optional: bool,
}

/// A policy (`struct xfrm_userpolicy_info` with its templates and mark).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The selector.
    pub sel: Selector,
    /// Lower first.
    pub priority: u32,
    /// The kernel's index.
    pub index: u32,
    /// 0 in, 1 out, 2 fwd.
    pub dir: u8,
    /// 0 allow, 1 block.
    pub action: u8,
    /// Main (0) or sub (1).
    pub kind: u8,
    /// Mark value and mask (`XFRMA_MARK`; (0, 0) when absent).
    pub mark: (u32, u32),
    /// The templates, in order.
    pub templates: Vec<Template>,
}

/// A state (`struct xfrm_usersa_info` and what matters of its attributes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// Destination.
    pub daddr: IpAddr,
    /// Source.
    pub saddr: IpAddr,
    /// SPI (host order).
    pub spi: u32,
    /// ESP or AH.
    pub proto: u8,
    /// Transport or tunnel.
    pub mode: u8,
    /// Request id.
    pub reqid: u32,
    /// The most bytes the transform adds to a packet (header, IV, padding, trailer,
    /// ICV; the outer IP header in tunnel mode); `None` when it has no algorithm (a
    /// larval state waiting for a key manager).
    pub overhead: Option<u32>,
    /// The device holding it with packet offload (outbound), if any.
    pub packet_offload: Option<IfIndex>,
}

/// The kernel's IPsec databases, as last dumped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Xfrm {
    /// Policies.
    pub policies: Vec<Policy>,
    /// States.
    pub states: Vec<State>,
}

fn unspecified(a: IpAddr) -> bool {
    a.is_unspecified()
}

impl Xfrm {
    /// What IPsec does to a tunnel `path` for `key` (UDP to `dport`): `None` when no
    /// outbound policy may select it.
    pub fn protection(&self, key: &LookupKey, path: &Path, dport: u16) -> Option<Ipsec> {
        let src = path.src?;
        let pol = self
            .policies
            .iter()
            .filter(|p| {
                // A policy that protects or blocks selects the path if it selects any of
                // its packets; a bypass only if it selects all of them.
                let protects = p.action == XFRM_POLICY_BLOCK || !p.templates.is_empty();
                p.dir == XFRM_POLICY_OUT
                    && p.kind == XFRM_POLICY_TYPE_MAIN
                    && (key.mark & p.mark.1) == p.mark.0
                    && p.sel
                        .may_select(src, key.dst, dport, Some(path.uplink), protects)
            })
            .min_by_key(|p| (p.priority, p.index))?;
        if pol.action == XFRM_POLICY_BLOCK {
            return Some(Ipsec {
                policy: pol.index,
                blocks: true,
                proto: 0,
                mode: 0,
                reqid: 0,
                sa: None,
            });
        }
        // An allow policy without a template is a bypass.
        let t = pol.templates.iter().find(|t| !t.optional)?;
        let (daddr, saddr) = (
            if unspecified(t.daddr) {
                key.dst
            } else {
                t.daddr
            },
            if unspecified(t.saddr) { src } else { t.saddr },
        );
        let sa = self
            .states
            .iter()
            .filter(|s| {
                s.daddr == daddr
                    && s.saddr == saddr
                    && s.proto == t.proto
                    && s.mode == t.mode
                    && (t.reqid == 0 || s.reqid == t.reqid)
            })
            .find_map(|s| {
                Some(IpsecSa {
                    spi: s.spi,
                    overhead: s.overhead?,
                    packet_offload: s.packet_offload,
                })
            });
        Some(Ipsec {
            policy: pol.index,
            blocks: false,
            proto: t.proto,
            mode: t.mode,
            reqid: t.reqid,
            sa,
        })
    }
}

/// The inbound policies, compiled for the datapath's question "does an inbound policy
/// cover VXLAN from this remote to this local address?" (asked per received VXLAN frame:
/// no allocation, a scan of a few selectors, nothing at all without policies).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inbound {
    /// Inbound main policies in the kernel's order (priority, then index): the selector,
    /// and whether it protects (templates) or blocks rather than bypasses.
    rules: Vec<(Selector, (u32, u32), bool)>,
}

impl Inbound {
    /// Whether no inbound policy exists.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether the first inbound policy that may select VXLAN (UDP to `dport`) from
    /// `remote` to `local` with `mark` protects or blocks it: then only what the kernel
    /// decrypted and checked may be taken for that remote's traffic. A selector on the
    /// source port selects some of the path's packets: it counts for a protecting
    /// policy, not for a bypass.
    pub fn protects(&self, remote: IpAddr, local: IpAddr, dport: u16, mark: u32) -> bool {
        self.rules
            .iter()
            .find(|(sel, m, protects)| {
                (mark & m.1) == m.0 && sel.may_select(remote, local, dport, None, *protects)
            })
            .is_some_and(|(_, _, protects)| *protects)
    }

    /// Whether some policy may protect IPv4 (`.0`) and IPv6 (`.1`) traffic: the kernel
    /// path's receive sockets listen only then.
    pub fn families(&self) -> (bool, bool) {
        let fam = |v6: bool| {
            self.rules
                .iter()
                .any(|(sel, _, protects)| *protects && sel.daddr.is_ipv6() == v6)
        };
        (fam(false), fam(true))
    }
}

impl Xfrm {
    /// The inbound policies, compiled (see [`Inbound`]).
    pub fn inbound(&self) -> Inbound {
        let mut pols: Vec<&Policy> = self
            .policies
            .iter()
            .filter(|p| p.dir == XFRM_POLICY_IN && p.kind == XFRM_POLICY_TYPE_MAIN)
            .collect();
        pols.sort_by_key(|p| (p.priority, p.index));
        Inbound {
            rules: pols
                .into_iter()
                .map(|p| {
                    // An optional template (`level use`) lets cleartext in too: the
                    // kernel's copy still holds all of it.
                    let protects = p.action == XFRM_POLICY_BLOCK || !p.templates.is_empty();
                    (p.sel, p.mark, protects)
                })
                .collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Decoding (bounds-checked; host byte order for the kernel's own fields, network order
// for addresses and ports).

fn u16_ne(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_ne(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u16_be(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_be(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn addr(b: &[u8], off: usize, family: u16) -> Option<IpAddr> {
    let raw: [u8; 16] = b.get(off..off + 16)?.try_into().ok()?;
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(raw))),
        _ => None,
    }
}

fn selector(b: &[u8]) -> Option<Selector> {
    let family = u16_ne(b, 40)?;
    Some(Selector {
        daddr: addr(b, 0, family)?,
        saddr: addr(b, 16, family)?,
        dport: (u16_be(b, 32)?, u16_be(b, 34)?),
        sport: (u16_be(b, 36)?, u16_be(b, 38)?),
        prefixlen_d: *b.get(42)?,
        prefixlen_s: *b.get(43)?,
        proto: *b.get(44)?,
        ifindex: u32_ne(b, 48)? as i32,
    })
}

/// The attributes after a fixed header: (type, value).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16_ne(b, 0)?);
        let ty = u16_ne(b, 2)? & 0x3fff;
        if len < 4 || len > b.len() {
            b = &[];
            return None;
        }
        let v = &b[4..len];
        b = b.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        Some((ty, v))
    })
}

fn template(b: &[u8], policy_family: u16) -> Option<Template> {
    let family = match u16_ne(b, 24)? {
        0 => policy_family,
        f => f,
    };
    Some(Template {
        daddr: addr(b, 0, family)?,
        proto: *b.get(20)?,
        saddr: addr(b, 28, family)?,
        reqid: u32_ne(b, 44)?,
        mode: *b.get(48)?,
        optional: *b.get(50)? != 0,
    })
}

/// Decodes an `XFRM_MSG_NEWPOLICY` payload (`xfrm_userpolicy_info` + attributes).
pub fn decode_policy(b: &[u8]) -> Option<Policy> {
    let sel = selector(b.get(..SEL_LEN)?)?;
    let family = u16_ne(b, 40)?;
    let mut p = Policy {
        sel,
        priority: u32_ne(b, 152)?,
        index: u32_ne(b, 156)?,
        dir: *b.get(160)?,
        action: *b.get(161)?,
        kind: XFRM_POLICY_TYPE_MAIN,
        mark: (0, 0),
        templates: Vec::new(),
    };
    for (ty, v) in attrs(b.get(POLICY_LEN..)?) {
        match ty {
            XFRMA_TMPL => {
                for t in v.chunks_exact(TMPL_LEN) {
                    p.templates.push(template(t, family)?);
                }
            }
            XFRMA_MARK => p.mark = (u32_ne(v, 0)?, u32_ne(v, 4)?),
            XFRMA_POLICY_TYPE => p.kind = *v.first()?,
            _ => {}
        }
    }
    Some(p)
}

/// The IV, block (padding alignment) and ICV sizes of an algorithm, by its kernel name;
/// `None` for one flowd does not know.
fn algorithm(name: &str) -> Option<(u32, u32, u32)> {
    let n = name.trim_end_matches('\0');
    Some(match n {
        // AEADs (RFC 4106, 4309, 7634): 8-byte IV, 4-byte alignment; ICV from the attr.
        _ if n.starts_with("rfc4106(") || n.starts_with("rfc4309(") => (8, 4, 0),
        "rfc7539esp(chacha20,poly1305)" => (8, 4, 0),
        "rfc4543(gcm(aes))" => (8, 4, 0),
        "cbc(aes)" | "cbc(camellia)" => (16, 16, 0),
        "cbc(des3_ede)" | "cbc(des)" => (8, 8, 0),
        "rfc3686(ctr(aes))" => (8, 4, 0),
        "ecb(cipher_null)" => (0, 4, 0),
        _ => return None,
    })
}

/// Decodes an `XFRM_MSG_NEWSA` payload (`xfrm_usersa_info` + attributes).
pub fn decode_state(b: &[u8]) -> Option<State> {
    let family = u16_ne(b, 212)?;
    let mode = *b.get(214)?;
    let proto = *b.get(76)?;
    let mut s = State {
        daddr: addr(b, 56, family)?,
        spi: u32_be(b, 72)?,
        proto,
        saddr: addr(b, 80, family)?,
        reqid: u32_ne(b, 208)?,
        mode,
        overhead: None,
        packet_offload: None,
    };
    // ESP: SPI + sequence number, IV, padding to the block size (at most block - 1),
    // pad length and next header; then the ICV. AH: its header with the ICV.
    let (mut iv, mut block, mut icv, mut known) = (0u32, 4u32, 0u32, false);
    for (ty, v) in attrs(b.get(SA_LEN..)?) {
        let name = || std::str::from_utf8(v.get(..64)?).ok();
        match ty {
            XFRMA_ALG_AEAD => {
                let (i, blk, _) = algorithm(name()?).unwrap_or((8, 4, 0));
                (iv, block) = (i, blk);
                icv = u32_ne(v, 68)? / 8;
                known = true;
            }
            XFRMA_ALG_CRYPT => {
                // An unknown cipher: the largest common IV and block.
                let (i, blk, _) = name().and_then(algorithm).unwrap_or((16, 16, 0));
                (iv, block) = (i, blk);
                known = true;
            }
            XFRMA_ALG_AUTH_TRUNC => {
                icv = u32_ne(v, 68)? / 8;
                known = true;
            }
            XFRMA_ALG_AUTH => {
                // Without truncation: the RFC default of 96 bits for the HMACs.
                icv = icv.max(12);
                known = true;
            }
            XFRMA_OFFLOAD_DEV => {
                let ifindex = u32_ne(v, 0)?;
                let flags = *v.get(4)?;
                if flags & XFRM_OFFLOAD_PACKET != 0 && flags & XFRM_OFFLOAD_INBOUND == 0 {
                    s.packet_offload = Some(IfIndex(ifindex));
                }
            }
            _ => {}
        }
    }
    if known {
        let outer = match (mode, family) {
            (XFRM_MODE_TUNNEL, AF_INET) => 20,
            (XFRM_MODE_TUNNEL, _) => 40,
            _ => 0,
        };
        let transform = match proto {
            IPPROTO_AH => 12 + icv.max(12),
            _ => 8 + iv + (block.max(4) - 1) + 2 + icv,
        };
        s.overhead = Some(outer + transform);
    }
    Some(s)
}

// ---------------------------------------------------------------------------------------
// Sockets

const RECV_BUF: usize = 1 << 16;

fn sock_err(op: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| rtnl::Error::Socket { op, source }.into()
}

/// The messages of a datagram: (type, payload).
fn messages(mut b: &[u8]) -> Vec<(u16, u32, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 16 {
        let (Some(len), Some(ty), Some(seq)) = (u32_ne(b, 0), u16_ne(b, 4), u32_ne(b, 8)) else {
            break;
        };
        let len = len as usize;
        if len < 16 || len > b.len() {
            break;
        }
        out.push((ty, seq, &b[16..len]));
        b = b.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    out
}

/// Dumps the kernel's XFRM policies and states (in the calling thread's namespace).
pub fn dump() -> Result<Xfrm> {
    let mut socket = Socket::new(NETLINK_XFRM).map_err(sock_err("xfrm socket"))?;
    socket.bind_auto().map_err(sock_err("xfrm bind"))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(sock_err("xfrm connect"))?;
    let mut x = Xfrm::default();
    for (seq, ty) in [(1u32, XFRM_MSG_GETPOLICY), (2, XFRM_MSG_GETSA)] {
        // A dump request: the header and a zeroed id structure.
        let body = if ty == XFRM_MSG_GETPOLICY { 64 } else { 24 };
        let len = 16 + body;
        let mut req = vec![0u8; len];
        req[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
        req[4..6].copy_from_slice(&ty.to_ne_bytes());
        req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req[8..12].copy_from_slice(&seq.to_ne_bytes());
        socket.send(&req, 0).map_err(sock_err("xfrm send"))?;
        let mut buf = Vec::with_capacity(RECV_BUF);
        'dump: loop {
            buf.clear();
            socket
                .recv(&mut buf, 0)
                .map_err(sock_err("xfrm recv dump"))?;
            for (mty, mseq, payload) in messages(&buf) {
                if mseq != seq {
                    continue;
                }
                match mty {
                    NLMSG_DONE => break 'dump,
                    NLMSG_ERROR => {
                        let errno = u32_ne(payload, 0).map_or(0, |e| -(e as i32));
                        if errno == 0 {
                            break 'dump;
                        }
                        return Err(rtnl::Error::Kernel {
                            op: "xfrm dump".into(),
                            source: io::Error::from_raw_os_error(errno),
                        }
                        .into());
                    }
                    XFRM_MSG_NEWPOLICY => x.policies.extend(decode_policy(payload)),
                    XFRM_MSG_NEWSA => x.states.extend(decode_state(payload)),
                    _ => {}
                }
            }
        }
    }
    Ok(x)
}

/// The socket subscribed to policy and SA events; any event means "dump again".
pub struct XfrmEvents {
    socket: Socket,
    buf: Vec<u8>,
}

impl std::fmt::Debug for XfrmEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XfrmEvents")
            .field("fd", &self.socket.as_raw_fd())
            .finish()
    }
}

impl XfrmEvents {
    /// Subscribes (in the calling thread's namespace).
    pub fn open() -> Result<Self> {
        let mut socket = Socket::new(NETLINK_XFRM).map_err(sock_err("xfrm socket"))?;
        socket.bind_auto().map_err(sock_err("xfrm bind"))?;
        for g in GROUPS {
            socket
                .add_membership(g)
                .map_err(sock_err("xfrm add_membership"))?;
        }
        socket
            .set_non_blocking(true)
            .map_err(sock_err("xfrm O_NONBLOCK"))?;
        Ok(Self {
            socket,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// The file descriptor, for poll(2).
    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Reads what is queued; whether anything was (an overrun counts: dump again).
    pub fn drain(&mut self) -> Result<bool> {
        let mut any = false;
        loop {
            self.buf.clear();
            self.buf.reserve(RECV_BUF);
            match self.socket.recv(&mut self.buf, 0) {
                Ok(_) => any = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(any),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => any = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(rtnl::Error::Socket {
                        op: "xfrm recv",
                        source: e,
                    }
                    .into());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
