//! Packets too big for the path: the router's answers.
//!
//! A bridged tunnel (flowd's VXLAN output) sits where a router would: a frame whose
//! encapsulation exceeds the path MTU is too big for the "link" the tunnel offers. The
//! Linux kernel's bridged VXLAN has answered such packets itself since 2020 (Linux 5.10
//! has it: `skb_tunnel_check_pmtu`, net/ipv4/ip_tunnel_core.c), because no IP
//! forwarding path is there to do it. This module does the same, without allocating:
//!
//! - [`too_big_action`] says what a router does with a too-big frame: IPv4 with DF and
//!   any IPv6 get an ICMP error, IPv4 without DF is fragmented, anything else dropped.
//! - [`too_big_reply`] builds the ICMPv4 "fragmentation needed" (RFC 792, RFC 1191) or
//!   ICMPv6 "packet too big" (RFC 4443, RFC 8201) Ethernet frame answering a frame.
//! - [`fragment_ipv4`] splits an IPv4 frame without DF into fragments (RFC 791).
//!
//! # The reply
//!
//! As the kernel builds it (`iptunnel_pmtud_build_icmp(v6)`): Ethernet source and
//! destination swapped (VLAN tags kept, in the same order), IP source = the original's
//! destination, IP destination = the original's source, IPv4 TOS 0, ID 0 and DF set,
//! IPv6 traffic class and flow label 0. The original IP packet is quoted from its IP
//! header on (Ethernet padding excluded), cut so that the reply's IP datagram is at most
//! 576 bytes (IPv4, RFC 1812 4.3.2.3) or 1280 bytes (IPv6, RFC 4443 2.4(c)).
//!
//! The TTL / hop limit is [`REPLY_TTL`] (64). The kernel copies the original packet's
//! TTL instead; flowd originates the message, so it uses the default TTL of an
//! originated datagram (RFC 1122 3.2.1.7, RFC 1812 4.2.2.9) rather than echo a value
//! that may be 0 or 1.
//!
//! The ICMPv4 next-hop MTU field is 16 bits: an `mtu` above 65535 is reported as 65535.
//!
//! No reply is built (the functions return 0) for: a frame that is not IPv4/IPv6 after
//! at most two VLAN tags; truncated or malformed headers (an IPv4 header checksum that
//! fails counts as malformed: a router discards such a packet, RFC 1812 5.2.2); a
//! non-first IPv4 or IPv6 fragment; an ICMPv4 error (types 3, 4, 5, 11, 12) or an
//! ICMPv6 error (types below 128) or redirect (137, as the kernel); a source address
//! that is unspecified (0.0.0.0/8, ::), loopback, multicast or the IPv4 broadcast; a
//! destination that is multicast, broadcast or unspecified (the reply would come
//! from it: RFC 1812 4.3.2.7 forbids ICMPv4 errors about such packets, and an ICMPv6
//! error about a multicast packet must come from a unicast address flowd does not
//! have); a multicast Ethernet source or destination (same reason one layer down); an
//! `out` too small; an `mtu` below the protocol's minimum.
//!
//! The minimums: 68 for IPv4 (RFC 791). The kernel does not answer below 576; flowd
//! does, because a Linux host that learns an MTU below its `min_pmtu` (552) locks the
//! path MTU and stops setting DF, and flowd fragments packets without DF. For IPv6,
//! 1280 (RFC 8200 section 5): below it there is **no reply**, as in the kernel. Reporting
//! 1280 instead would not help: the sender would keep sending 1280-byte packets that
//! still do not fit (RFC 8201 section 4 forbids it to go lower), so each would be
//! answered again. Such a path breaks IPv6's minimum link MTU; the drop counter is
//! where an operator sees it.
//!
//! # Fragmentation
//!
//! Each fragment is built in a caller's scratch buffer and handed to a callback: the
//! original Ethernet header and tags, then the IPv4 header with the same ID, total
//! length, MF and offset (in 8-byte units) of the fragment and a fresh checksum, then
//! the data. MF is set on every fragment but the last, and on the last too when the
//! original was itself a non-last fragment. Options are kept: the first fragment carries
//! them all; in later ones the options without the "copied" flag are overwritten with
//! NOPs (RFC 791 allows either dropping them or this; the header length stays the same
//! so every fragment carries the same amount of data, as in Linux's
//! `ip_options_fragment`).

use super::ethernet::ethertype;
use super::icmp::{IcmpPacket, IcmpRepr, v4_type, v6_type};
use super::ipv4::{self, Ipv4Packet, Ipv4Repr};
use super::ipv6::{self, Ipv6Packet, Ipv6Repr, skip_extension_headers};
use super::vlan::L2Info;
use super::{icmp, ip_proto};
use std::net::{Ipv4Addr, Ipv6Addr};

/// TTL (IPv4) and hop limit (IPv6) of the ICMP replies.
pub const REPLY_TTL: u8 = 64;

/// Smallest MTU an IPv4 link may have (RFC 791); no reply below it.
pub const IPV4_MIN_MTU: u32 = 68;

/// Smallest MTU an IPv6 link may have (RFC 8200); no reply below it.
pub const IPV6_MIN_MTU: u32 = 1280;

/// Largest IPv4 datagram an ICMPv4 error may be (RFC 1812 4.3.2.3).
pub const IPV4_MAX_ERROR_LEN: usize = 576;

/// Largest IPv6 packet an ICMPv6 error may be (RFC 4443 2.4(c)).
pub const IPV6_MAX_ERROR_LEN: usize = 1280;

/// ICMPv4 code "fragmentation needed and DF set" of type 3.
const FRAG_NEEDED: u8 = 4;

/// ICMPv6 redirect (never answered with an error, as in the kernel).
const V6_REDIRECT: u8 = 137;

/// The copied flag of an IPv4 option type: the option goes into every fragment.
const OPT_COPIED: u8 = 0x80;
const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;

/// What a router does with a frame too big for the next link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TooBig {
    /// Answer with ICMPv4 "fragmentation needed" (IPv4 with DF) or ICMPv6 "packet too
    /// big" (IPv6): see [`too_big_reply`].
    Reply,
    /// Fragment it (IPv4 without DF): see [`fragment_ipv4`].
    Fragment,
    /// Drop it (not IP, or headers truncated or malformed).
    Drop,
}

/// What to do with `frame` (Ethernet, up to two VLAN tags) if it is too big for the
/// path. Reads the headers only: [`too_big_reply`] and [`fragment_ipv4`] check the rest
/// and may still refuse.
pub fn too_big_action(frame: &[u8]) -> TooBig {
    let Ok(l2) = L2Info::parse(frame) else {
        return TooBig::Drop;
    };
    let Some(l3) = frame.get(l2.l3_offset..) else {
        return TooBig::Drop;
    };
    match l2.ethertype {
        ethertype::IPV4 => match Ipv4Packet::new_checked(l3) {
            Ok(p) if p.version() == 4 && p.dont_frag() => TooBig::Reply,
            Ok(p) if p.version() == 4 => TooBig::Fragment,
            _ => TooBig::Drop,
        },
        ethertype::IPV6 => match Ipv6Packet::new_checked(l3) {
            Ok(p) if p.version() == 6 => TooBig::Reply,
            _ => TooBig::Drop,
        },
        _ => TooBig::Drop,
    }
}

/// Writes into `out` the Ethernet frame answering `frame` with ICMPv4 "fragmentation
/// needed" (type 3 code 4, next-hop MTU `mtu`) or ICMPv6 "packet too big" (type 2 code
/// 0, MTU `mtu`), and returns its length; 0 if `frame` must not be answered (see the
/// module docs for the fields and the refusals). The DF flag is not looked at: that is
/// [`too_big_action`]'s business.
pub fn too_big_reply(frame: &[u8], mtu: u32, out: &mut [u8]) -> usize {
    build_reply(frame, mtu, out).unwrap_or(0)
}

fn build_reply(frame: &[u8], mtu: u32, out: &mut [u8]) -> Option<usize> {
    let l2 = L2Info::parse(frame).ok()?;
    if is_multicast_mac(l2.src_addr) || is_multicast_mac(l2.dst_addr) {
        return None;
    }
    let hdr = l2.l3_offset;
    let l3 = frame.get(hdr..)?;
    let l3_out = out.get_mut(hdr..)?;
    let n = match l2.ethertype {
        ethertype::IPV4 => reply_v4(l3, mtu, l3_out)?,
        ethertype::IPV6 => reply_v6(l3, mtu, l3_out)?,
        _ => return None,
    };
    // Same header and tags, addresses swapped.
    let eth = out.get_mut(..hdr)?;
    eth.copy_from_slice(frame.get(..hdr)?);
    eth[..6].copy_from_slice(&l2.src_addr);
    eth[6..12].copy_from_slice(&l2.dst_addr);
    Some(hdr + n)
}

fn is_multicast_mac(mac: [u8; 6]) -> bool {
    mac[0] & 1 != 0
}

/// Whether `a` may be the source of a packet that gets an ICMPv4 error.
fn v4_src_ok(a: Ipv4Addr) -> bool {
    a.octets()[0] != 0 && !a.is_loopback() && !a.is_multicast() && !a.is_broadcast()
}

/// Whether `a` may be the source of an ICMPv4 error (the original's destination).
fn v4_dst_ok(a: Ipv4Addr) -> bool {
    a.octets()[0] != 0 && !a.is_multicast() && !a.is_broadcast()
}

fn v6_addr_ok(a: Ipv6Addr) -> bool {
    !a.is_unspecified() && !a.is_loopback() && !a.is_multicast()
}

/// ICMPv4 error types (the kernel's `icmp_is_err`): never answered with an error.
fn is_icmpv4_error(t: u8) -> bool {
    matches!(t, 3 | 4 | 5 | 11 | 12)
}

fn reply_v4(ip: &[u8], mtu: u32, out: &mut [u8]) -> Option<usize> {
    if mtu < IPV4_MIN_MTU {
        return None;
    }
    let p = Ipv4Packet::new_checked(ip).ok()?;
    if p.version() != 4 || !p.verify_checksum() || p.frag_offset() != 0 {
        return None;
    }
    let (src, dst) = (p.src_addr(), p.dst_addr());
    if !v4_src_ok(src) || !v4_dst_ok(dst) {
        return None;
    }
    if p.protocol() == ip_proto::ICMP && is_icmpv4_error(*p.payload().first()?) {
        return None;
    }
    let original = ip.get(..usize::from(p.total_len()))?;
    let head = ipv4::HEADER_LEN + icmp::HEADER_LEN;
    let quote = original.len().min(IPV4_MAX_ERROR_LEN - head);
    let out = out.get_mut(..head + quote)?;
    out[head..].copy_from_slice(original.get(..quote)?);
    Ipv4Repr {
        src_addr: dst,
        dst_addr: src,
        protocol: ip_proto::ICMP,
        payload_len: u16::try_from(icmp::HEADER_LEN + quote).ok()?,
        ttl: REPLY_TTL,
        tos: 0,
        ident: 0,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
    }
    .emit(&mut Ipv4Packet::new_unchecked(&mut out[..ipv4::HEADER_LEN]))
    .ok()?;
    IcmpRepr {
        msg_type: v4_type::DEST_UNREACHABLE,
        code: FRAG_NEEDED,
        rest_of_header: mtu.min(0xffff),
    }
    .emit_v4(&mut IcmpPacket::new_unchecked(&mut out[ipv4::HEADER_LEN..]));
    Some(out.len())
}

fn reply_v6(ip: &[u8], mtu: u32, out: &mut [u8]) -> Option<usize> {
    if mtu < IPV6_MIN_MTU {
        return None;
    }
    let p = Ipv6Packet::new_checked(ip).ok()?;
    if p.version() != 6 {
        return None;
    }
    let (src, dst) = (p.src_addr(), p.dst_addr());
    if !v6_addr_ok(src) || !v6_addr_ok(dst) {
        return None;
    }
    let ext = skip_extension_headers(p.next_header(), p.payload()).ok()?;
    if ext.is_later_fragment() {
        return None;
    }
    if ext.protocol == ip_proto::ICMPV6 {
        let t = *p.payload().get(ext.offset)?;
        if t < v6_type::ECHO_REQUEST || t == V6_REDIRECT {
            return None;
        }
    }
    let original = ip.get(..ipv6::HEADER_LEN + usize::from(p.payload_len()))?;
    let head = ipv6::HEADER_LEN + icmp::HEADER_LEN;
    let quote = original.len().min(IPV6_MAX_ERROR_LEN - head);
    let out = out.get_mut(..head + quote)?;
    out[head..].copy_from_slice(original.get(..quote)?);
    Ipv6Repr {
        src_addr: dst,
        dst_addr: src,
        next_header: ip_proto::ICMPV6,
        payload_len: u16::try_from(icmp::HEADER_LEN + quote).ok()?,
        hop_limit: REPLY_TTL,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(&mut Ipv6Packet::new_unchecked(&mut out[..ipv6::HEADER_LEN]));
    IcmpRepr {
        msg_type: v6_type::PACKET_TOO_BIG,
        code: 0,
        rest_of_header: mtu,
    }
    .emit_v6(
        &mut IcmpPacket::new_unchecked(&mut out[ipv6::HEADER_LEN..]),
        &dst,
        &src,
    );
    Some(out.len())
}

/// Splits `frame` (Ethernet, up to two VLAN tags, IPv4 without DF) into fragments whose
/// IP datagram (header + data) is at most `mtu` bytes, and no longer than `scratch`
/// leaves room for after the Ethernet header. Each fragment is built in `scratch` and
/// passed to `emit`, which returns false if it could not send it; fragmenting stops
/// there. Returns the number of fragments `emit` accepted: 0 if the frame cannot be
/// fragmented (not IPv4, truncated or malformed headers or options, a failing header
/// checksum, DF set, or `mtu` too small to carry 8 bytes of data per fragment). A frame
/// that already fits is emitted whole, as one "fragment".
pub fn fragment_ipv4(
    frame: &[u8],
    mtu: u32,
    scratch: &mut [u8],
    emit: &mut dyn FnMut(&[u8]) -> bool,
) -> usize {
    let Some(plan) = Plan::new(frame, mtu, scratch.len()) else {
        return 0;
    };
    let l3 = plan.l3_offset;
    let Some(head) = frame.get(..l3 + plan.hlen) else {
        return 0;
    };
    let Some(data) = frame.get(l3 + plan.hlen..l3 + plan.total) else {
        return 0;
    };
    // Plan::new guarantees every fragment fits scratch.
    scratch[..head.len()].copy_from_slice(head);
    let mut sent = 0;
    let mut at = 0usize;
    loop {
        let rest = data.len() - at;
        let last = plan.hlen + rest <= plan.max_datagram;
        let n = if last { rest } else { plan.step };
        let (hdr, body) = scratch[l3..].split_at_mut(plan.hlen);
        body[..n].copy_from_slice(&data[at..at + n]);
        let mut ip = Ipv4Packet::new_unchecked(hdr);
        // plan.hlen + n <= max_datagram <= 65535 and offset <= 65535 (checked by Plan).
        ip.set_total_len((plan.hlen + n) as u16);
        ip.set_frag(false, !last || plan.more_frags, (plan.offset + at) as u16);
        ip.fill_checksum();
        if !emit(&scratch[..l3 + plan.hlen + n]) {
            return sent;
        }
        sent += 1;
        if last {
            return sent;
        }
        if at == 0 {
            // From the second fragment on, only options with the copied flag remain.
            let opts = &mut scratch[l3 + ipv4::HEADER_LEN..l3 + plan.hlen];
            strip_uncopied_options(opts);
        }
        at += n;
    }
}

/// How a frame is cut (all lengths in bytes).
struct Plan {
    l3_offset: usize,
    /// IPv4 header length (options included).
    hlen: usize,
    /// IPv4 total length.
    total: usize,
    /// Largest fragment datagram allowed.
    max_datagram: usize,
    /// Data per non-last fragment (a multiple of 8, at least 8).
    step: usize,
    /// The original's fragment offset.
    offset: usize,
    /// The original's MF flag.
    more_frags: bool,
}

impl Plan {
    fn new(frame: &[u8], mtu: u32, scratch_len: usize) -> Option<Self> {
        let l2 = L2Info::parse(frame).ok()?;
        if l2.ethertype != ethertype::IPV4 {
            return None;
        }
        let p = Ipv4Packet::new_checked(frame.get(l2.l3_offset..)?).ok()?;
        if p.version() != 4 || !p.verify_checksum() || p.dont_frag() {
            return None;
        }
        let hlen = usize::from(p.header_len());
        let total = usize::from(p.total_len());
        let offset = usize::from(p.frag_offset());
        // Every new offset stays a valid 13-bit field.
        if offset + (total - hlen) > usize::from(u16::MAX) {
            return None;
        }
        let mut opts = [0u8; 40];
        let opts = opts.get_mut(..p.options().len())?;
        opts.copy_from_slice(p.options());
        if !strip_uncopied_options(opts) {
            return None;
        }
        let max_datagram = usize::try_from(mtu)
            .unwrap_or(usize::MAX)
            .min(usize::from(u16::MAX))
            .min(scratch_len.saturating_sub(l2.l3_offset));
        let step = max_datagram.saturating_sub(hlen) & !7;
        // Every fragment then fits scratch: l3_offset + max_datagram <= scratch_len.
        if total > max_datagram && step < 8 {
            return None;
        }
        Some(Self {
            l3_offset: l2.l3_offset,
            hlen,
            total,
            max_datagram,
            step,
            offset,
            more_frags: p.more_frags(),
        })
    }
}

/// Walks IPv4 options, overwriting those without the copied flag with NOPs. Returns
/// false if an option's length is missing, below 2 or past the end.
fn strip_uncopied_options(opts: &mut [u8]) -> bool {
    let mut i = 0;
    while let Some(&t) = opts.get(i) {
        match t {
            OPT_END => break,
            OPT_NOP => i += 1,
            _ => {
                let Some(&len) = opts.get(i + 1) else {
                    return false;
                };
                let end = i + usize::from(len);
                if len < 2 || end > opts.len() {
                    return false;
                }
                if t & OPT_COPIED == 0 {
                    opts[i..end].fill(OPT_NOP);
                }
                i = end;
            }
        }
    }
    true
}

#[cfg(test)]
mod test;
