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
mod test {
    use super::*;
    use crate::wire::VlanTag;
    use crate::wire::checksum;
    use crate::wire::testutil::*;
    use proptest::prelude::*;

    const QINQ: [(u16, u16); 2] = [(0x88a8, 0xa064), (0x8100, 0x00c8)];

    fn v4(len: usize, df: bool) -> Vec<u8> {
        ipv4_frame(&[], ipv4_repr(len, df), &pattern(len))
    }

    fn v6(len: usize) -> Vec<u8> {
        ipv6_frame(&[], ipv6_repr(len), &pattern(len))
    }

    fn reply(frame: &[u8], mtu: u32) -> Vec<u8> {
        let mut out = vec![0u8; 2048];
        let n = too_big_reply(frame, mtu, &mut out);
        out.truncate(n);
        out
    }

    /// Checks the reply's Ethernet header against the original's; returns the L3 offset.
    fn check_l2(orig: &[u8], r: &[u8]) -> usize {
        let (o, a) = (L2Info::parse(orig).unwrap(), L2Info::parse(r).unwrap());
        assert_eq!((a.src_addr, a.dst_addr), (o.dst_addr, o.src_addr));
        assert_eq!(
            (a.n_tags, a.tags, a.ethertype),
            (o.n_tags, o.tags, o.ethertype)
        );
        assert_eq!(a.l3_offset, o.l3_offset);
        a.l3_offset
    }

    /// Verifies every field of an ICMPv4 reply to `orig`; returns the quoted bytes.
    fn check_v4_reply(orig: &[u8], r: &[u8], mtu: u16) -> Vec<u8> {
        let l3 = check_l2(orig, r);
        let o = Ipv4Packet::new_checked(&orig[l3..]).unwrap();
        let p = Ipv4Packet::new_checked(&r[l3..]).unwrap();
        assert_eq!(usize::from(p.total_len()), r.len() - l3, "no padding after");
        assert!(usize::from(p.total_len()) <= IPV4_MAX_ERROR_LEN);
        assert!(p.verify_checksum());
        assert_eq!(
            checksum::checksum(p.header()),
            0,
            "header checksum by the helper"
        );
        let ip = Ipv4Repr::parse(&p).unwrap();
        assert_eq!(ip.src_addr, o.dst_addr());
        assert_eq!(ip.dst_addr, o.src_addr());
        assert_eq!(
            (ip.protocol, ip.ttl, ip.tos, ip.ident),
            (1, REPLY_TTL, 0, 0)
        );
        assert!(ip.dont_frag && !ip.more_frags && ip.frag_offset == 0);
        assert_eq!(p.header_len(), 20);
        let m = IcmpPacket::new_checked(p.payload()).unwrap();
        assert!(m.verify_checksum_v4());
        assert_eq!(checksum::checksum(p.payload()), 0);
        let icmp = IcmpRepr::parse_v4(&m).unwrap();
        assert_eq!((icmp.msg_type, icmp.code), (3, 4));
        assert_eq!(
            icmp.rest_of_header,
            u32::from(mtu),
            "unused 16 bits, then MTU"
        );
        let quoted = m.payload().to_vec();
        let total = usize::from(o.total_len());
        let original = &o.into_inner()[..total];
        assert_eq!(quoted.len(), original.len().min(576 - 28));
        assert_eq!(&quoted[..], &original[..quoted.len()]);
        quoted
    }

    fn check_v6_reply(orig: &[u8], r: &[u8], mtu: u32) -> Vec<u8> {
        let l3 = check_l2(orig, r);
        let o = Ipv6Packet::new_checked(&orig[l3..]).unwrap();
        let p = Ipv6Packet::new_checked(&r[l3..]).unwrap();
        assert_eq!(40 + usize::from(p.payload_len()), r.len() - l3);
        assert!(r.len() - l3 <= IPV6_MAX_ERROR_LEN);
        let ip = Ipv6Repr::parse(&p).unwrap();
        assert_eq!(ip.src_addr, o.dst_addr());
        assert_eq!(ip.dst_addr, o.src_addr());
        assert_eq!((ip.next_header, ip.hop_limit), (58, REPLY_TTL));
        assert_eq!((ip.traffic_class, ip.flow_label), (0, 0));
        let m = IcmpPacket::new_checked(p.payload()).unwrap();
        assert!(m.verify_checksum_v6(&ip.src_addr, &ip.dst_addr));
        let (s, d) = (ip.src_addr.into(), ip.dst_addr.into());
        assert_eq!(checksum::upper_layer(&s, &d, 58, p.payload()), 0);
        let icmp = IcmpRepr::parse_v6(&m, &ip.src_addr, &ip.dst_addr).unwrap();
        assert_eq!((icmp.msg_type, icmp.code, icmp.rest_of_header), (2, 0, mtu));
        let quoted = m.payload().to_vec();
        let total = 40 + usize::from(o.payload_len());
        let original = &o.into_inner()[..total];
        assert_eq!(quoted.len(), original.len().min(1280 - 48));
        assert_eq!(&quoted[..], &original[..quoted.len()]);
        quoted
    }

    #[test]
    fn reply_v4_fields_and_quote_limit() {
        let f = v4(1480, true);
        let r = reply(&f, 1450);
        assert_eq!(r.len(), 14 + 576);
        assert_eq!(check_v4_reply(&f, &r, 1450).len(), 548);
        // Exact bytes of the head: a reference for the field layout.
        assert_eq!(&r[..14], &hex("e411 1111 1110 828a 29ad 4eef 0800")[..]);
        assert_eq!(&r[14..22], &hex("4500 0240 0000 4000")[..]);
        assert_eq!(&r[22..24], &[64, 1]);
        assert_eq!(&r[26..34], &hex("0a00 0002 0a00 0001")[..]);
        assert_eq!(&r[34..36], &[3, 4]);
        assert_eq!(&r[38..42], &hex("0000 05aa")[..]);
        // A 16-bit field: larger MTUs are reported as 65535.
        let r = reply(&f, 70_000);
        check_v4_reply(&f, &r, 0xffff);
    }

    #[test]
    fn reply_v4_quotes_a_short_packet_whole_without_padding() {
        let mut f = v4(60, true);
        let r = reply(&f, 68);
        assert_eq!(r.len(), 14 + 28 + 80);
        check_v4_reply(&f, &r, 68);
        f.extend_from_slice(&[0xee; 10]); // Ethernet padding
        assert_eq!(reply(&f, 68), r);
    }

    #[test]
    fn reply_v6_fields_and_quote_limit() {
        let f = v6(1460);
        let r = reply(&f, 1400);
        assert_eq!(r.len(), 14 + 1280);
        assert_eq!(check_v6_reply(&f, &r, 1400).len(), 1232);
        assert_eq!(&r[12..14], &[0x86, 0xdd]);
        assert_eq!(&r[14..22], &hex("6000 0000 04d8 3a40")[..]);
        assert_eq!(&r[54..56], &[2, 0]);
        assert_eq!(&r[58..62], &hex("0000 0578")[..]);
        // IPv6 reports the full 32 bits.
        let r = reply(&f, 70_000);
        check_v6_reply(&f, &r, 70_000);
        let short = v6(100);
        let r = reply(&short, 1280);
        assert_eq!(r.len(), 14 + 48 + 140);
        check_v6_reply(&short, &r, 1280);
    }

    #[test]
    fn reply_keeps_tags_in_order() {
        let f = ipv4_frame(&QINQ, ipv4_repr(1400, true), &pattern(1400));
        let r = reply(&f, 1300);
        assert_eq!(r.len(), 22 + 576);
        assert_eq!(&r[12..22], &f[12..22]);
        assert_eq!(VlanTag::new_checked(&r[14..]).unwrap().vid(), 100);
        check_v4_reply(&f, &r, 1300);

        let f = ipv6_frame(&[(0x8100, 0x2005)], ipv6_repr(1400), &pattern(1400));
        let r = reply(&f, 1300);
        assert_eq!(r.len(), 18 + 1280);
        assert_eq!(&r[12..18], &f[12..18]);
        check_v6_reply(&f, &r, 1300);
    }

    #[test]
    fn reply_mtu_minimums() {
        let f = v4(1000, true);
        assert!(reply(&f, 67).is_empty());
        check_v4_reply(&f, &reply(&f, 68), 68);
        let f = v6(1400);
        assert!(reply(&f, 1279).is_empty());
        assert!(reply(&f, 0).is_empty());
        check_v6_reply(&f, &reply(&f, 1280), 1280);
    }

    #[test]
    fn reply_needs_room() {
        for f in [v4(1000, true), v6(1400)] {
            let need = reply(&f, 1280).len();
            for n in 0..need {
                let mut out = vec![0u8; n];
                assert_eq!(too_big_reply(&f, 1280, &mut out), 0, "out {n}");
            }
            let mut out = vec![0u8; need];
            assert_eq!(too_big_reply(&f, 1280, &mut out), need);
        }
    }

    #[test]
    fn no_reply_to_non_ip_or_truncated() {
        let arp = hex(VXLAN_V4_ARP);
        assert!(reply(&arp[INNER_V4..], 1400).is_empty());
        let three_tags = ipv4_frame(
            &[(0x8100, 1), (0x8100, 2), (0x8100, 3)],
            ipv4_repr(100, true),
            &pattern(100),
        );
        assert!(reply(&three_tags, 1400).is_empty());
        for f in [
            v4(200, true),
            v6(200),
            ipv4_frame(&QINQ, ipv4_repr(200, true), &pattern(200)),
        ] {
            for n in 0..f.len() {
                assert!(reply(&f[..n], 1400).is_empty(), "len {n}");
            }
        }
    }

    #[test]
    fn no_reply_to_malformed_ip() {
        let f = v4(200, true);
        let mut bad = f.clone();
        bad[22] = 63; // TTL changed: the header checksum fails
        assert!(reply(&bad, 1400).is_empty());
        let mut bad = f.clone();
        bad[14] = 0x55; // version 5, checksum refreshed
        Ipv4Packet::new_unchecked(&mut bad[14..]).fill_checksum();
        assert!(reply(&bad, 1400).is_empty());
        let mut bad = f.clone();
        bad[14] = 0x44; // IHL 4
        assert!(reply(&bad, 1400).is_empty());
        let mut bad = v6(200);
        bad[14] = 0x40;
        assert!(reply(&bad, 1400).is_empty());
        // IPv6 extension header chain running off the end.
        let mut bad = v6(200);
        bad[20] = ip_proto::HOPOPTS;
        bad[55] = 200;
        assert!(reply(&bad, 1400).is_empty());
    }

    #[test]
    fn no_reply_to_later_fragments() {
        let first = Ipv4Repr {
            more_frags: true,
            ..ipv4_repr(0, true)
        };
        let f = ipv4_frame(&[], first, &pattern(200));
        check_v4_reply(&f, &reply(&f, 100), 100);
        let later = Ipv4Repr {
            frag_offset: 1480,
            ..first
        };
        assert!(reply(&ipv4_frame(&[], later, &pattern(200)), 100).is_empty());
        let last = Ipv4Repr {
            more_frags: false,
            ..later
        };
        assert!(reply(&ipv4_frame(&[], last, &pattern(200)), 100).is_empty());

        // IPv6: fragment header, first (offset 0, M) then later (offset 1448).
        let v6frag = |off_flags: u16| {
            let mut pl = vec![ip_proto::UDP, 0];
            pl.extend_from_slice(&off_flags.to_be_bytes());
            pl.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
            pl.extend_from_slice(&pattern(1300));
            let ip = Ipv6Repr {
                next_header: ip_proto::FRAGMENT,
                ..ipv6_repr(0)
            };
            ipv6_frame(&[], ip, &pl)
        };
        let f = v6frag(1);
        check_v6_reply(&f, &reply(&f, 1280), 1280);
        assert!(reply(&v6frag(1448 | 1), 1280).is_empty());
        assert!(reply(&v6frag(1448), 1280).is_empty());
    }

    #[test]
    fn no_reply_to_icmp_errors() {
        let icmp = |t: u8| {
            let mut m = vec![t, 0, 0, 0, 0, 0, 0, 0];
            m.extend_from_slice(&pattern(600));
            IcmpPacket::new_unchecked(&mut m[..]).fill_checksum_v4();
            let ip = Ipv4Repr {
                protocol: ip_proto::ICMP,
                ..ipv4_repr(0, true)
            };
            ipv4_frame(&[], ip, &m)
        };
        for t in [3, 4, 5, 11, 12] {
            assert!(reply(&icmp(t), 576).is_empty(), "type {t}");
        }
        for t in [0, 8, 13, 14, 255] {
            let f = icmp(t);
            check_v4_reply(&f, &reply(&f, 576), 576);
        }
        // An ICMP packet with no ICMP byte at all is malformed.
        let ip = Ipv4Repr {
            protocol: ip_proto::ICMP,
            ..ipv4_repr(0, true)
        };
        assert!(reply(&ipv4_frame(&[], ip, &[]), 576).is_empty());

        let icmp6 = |t: u8, behind_dstopts: bool| {
            let mut pl = Vec::new();
            if behind_dstopts {
                pl.extend_from_slice(&[ip_proto::ICMPV6, 0, 1, 4, 0, 0, 0, 0]);
            }
            pl.extend_from_slice(&[t, 0, 0, 0, 0, 0, 0, 0]);
            pl.extend_from_slice(&pattern(1400));
            let next_header = if behind_dstopts {
                ip_proto::DSTOPTS
            } else {
                ip_proto::ICMPV6
            };
            let ip = Ipv6Repr {
                next_header,
                ..ipv6_repr(0)
            };
            ipv6_frame(&[], ip, &pl)
        };
        for ext in [false, true] {
            for t in [1, 2, 3, 4, 100, 127, 137] {
                assert!(reply(&icmp6(t, ext), 1280).is_empty(), "type {t}");
            }
            for t in [128, 129, 135, 136, 200] {
                let f = icmp6(t, ext);
                check_v6_reply(&f, &reply(&f, 1280), 1280);
            }
        }
    }

    #[test]
    fn no_reply_to_bad_addresses() {
        let with = |src: [u8; 4], dst: [u8; 4]| {
            let ip = Ipv4Repr {
                src_addr: src.into(),
                dst_addr: dst.into(),
                ..ipv4_repr(0, true)
            };
            ipv4_frame(&[], ip, &pattern(600))
        };
        let ok = [192, 0, 2, 1];
        for bad in [
            [0, 0, 0, 0],
            [0, 1, 2, 3],
            [127, 0, 0, 1],
            [224, 0, 0, 1],
            [239, 1, 1, 1],
            [255, 255, 255, 255],
        ] {
            assert!(reply(&with(bad, ok), 576).is_empty(), "src {bad:?}");
        }
        for bad in [[0, 0, 0, 0], [224, 0, 0, 5], [255, 255, 255, 255]] {
            assert!(reply(&with(ok, bad), 576).is_empty(), "dst {bad:?}");
        }
        let f = with([169, 254, 1, 1], [10, 9, 8, 7]);
        check_v4_reply(&f, &reply(&f, 576), 576);

        let with6 = |src: &str, dst: &str| {
            let ip = Ipv6Repr {
                src_addr: src.parse().unwrap(),
                dst_addr: dst.parse().unwrap(),
                ..ipv6_repr(0)
            };
            ipv6_frame(&[], ip, &pattern(1400))
        };
        for bad in ["::", "::1", "ff02::1", "ff0e::1:2"] {
            assert!(reply(&with6(bad, "fd00::2"), 1280).is_empty(), "{bad}");
            assert!(reply(&with6("fd00::1", bad), 1280).is_empty(), "{bad}");
        }
        let f = with6("fe80::1", "2001:db8::2");
        check_v6_reply(&f, &reply(&f, 1280), 1280);
    }

    #[test]
    fn no_reply_to_multicast_ethernet() {
        let f = v4(600, true);
        let mut bad = f.clone();
        bad[6] |= 1; // multicast source
        assert!(reply(&bad, 576).is_empty());
        let mut bad = f.clone();
        bad[..6].copy_from_slice(&[0xff; 6]); // broadcast destination
        assert!(reply(&bad, 576).is_empty());
        let mut bad = v6(1400);
        bad[..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
        assert!(reply(&bad, 1280).is_empty());
    }

    #[test]
    fn action_by_kind() {
        assert_eq!(too_big_action(&v4(100, true)), TooBig::Reply);
        assert_eq!(too_big_action(&v4(100, false)), TooBig::Fragment);
        assert_eq!(too_big_action(&v6(100)), TooBig::Reply);
        let tagged = ipv4_frame(&QINQ, ipv4_repr(100, false), &pattern(100));
        assert_eq!(too_big_action(&tagged), TooBig::Fragment);
        let arp = hex(VXLAN_V4_ARP);
        assert_eq!(too_big_action(&arp[INNER_V4..]), TooBig::Drop);
        let f = v4(100, true);
        assert_eq!(too_big_action(&f[..30]), TooBig::Drop);
        let mut bad = v6(100);
        bad[14] = 0x40;
        assert_eq!(too_big_action(&bad), TooBig::Drop);
        assert_eq!(too_big_action(&[]), TooBig::Drop);
    }

    /// Collects the fragments of `frame`.
    fn fragments(frame: &[u8], mtu: u32) -> Vec<Vec<u8>> {
        let mut scratch = vec![0u8; 65_600];
        let mut out = Vec::new();
        let n = fragment_ipv4(frame, mtu, &mut scratch, &mut |f| {
            out.push(f.to_vec());
            true
        });
        assert_eq!(n, out.len());
        out
    }

    /// Checks every fragment against the original and returns the reassembled data.
    fn reassemble(orig: &[u8], frags: &[Vec<u8>], mtu: usize) -> Vec<u8> {
        let l3 = L2Info::parse(orig).unwrap().l3_offset;
        let o = Ipv4Packet::new_checked(&orig[l3..]).unwrap();
        let base = usize::from(o.frag_offset());
        let mut data = Vec::new();
        for (i, f) in frags.iter().enumerate() {
            assert_eq!(&f[..l3], &orig[..l3], "Ethernet header and tags kept");
            let p = Ipv4Packet::new_checked(&f[l3..]).unwrap();
            assert_eq!(f.len(), l3 + usize::from(p.total_len()));
            assert!(usize::from(p.total_len()) <= mtu);
            assert!(p.verify_checksum());
            let r = Ipv4Repr::parse(&p).unwrap();
            let last = i + 1 == frags.len();
            assert_eq!(r.more_frags, !last || o.more_frags(), "fragment {i}");
            assert!(!r.dont_frag);
            assert_eq!(usize::from(r.frag_offset), base + data.len());
            if !last {
                assert_eq!(p.payload().len() % 8, 0);
            }
            assert_eq!((r.ident, r.ttl, r.tos), (o.ident(), o.ttl(), o.tos()));
            assert_eq!((r.src_addr, r.dst_addr), (o.src_addr(), o.dst_addr()));
            assert_eq!(r.protocol, o.protocol());
            assert_eq!(p.header_len(), o.header_len());
            data.extend_from_slice(p.payload());
        }
        assert_eq!(data, o.payload());
        data
    }

    #[test]
    fn fragments_reassemble() {
        let f = v4(1480, false);
        let frags = fragments(&f, 576);
        assert_eq!(frags.len(), 3);
        let lens: Vec<_> = frags.iter().map(|f| f.len() - 14).collect();
        assert_eq!(lens, [572, 572, 396]); // 552 + 552 + 376 bytes of data
        reassemble(&f, &frags, 576);
        // An MTU that is not 20 + a multiple of 8 rounds the data down.
        let frags = fragments(&f, 1000);
        assert_eq!(frags.len(), 2);
        assert_eq!(frags[0].len() - 14, 20 + 976);
        reassemble(&f, &frags, 1000);
        // Smallest: 8 bytes per fragment.
        let small = v4(100, false);
        let frags = fragments(&small, 28);
        assert_eq!(frags.len(), 13);
        reassemble(&small, &frags, 28);
        assert!(fragments(&small, 27).is_empty());
        // Already fits: one fragment, identical.
        assert_eq!(fragments(&small, 120), vec![small.clone()]);
    }

    #[test]
    fn fragments_keep_tags_and_padding_is_dropped() {
        let mut f = ipv4_frame(&QINQ, ipv4_repr(3000, false), &pattern(3000));
        let frags = fragments(&f, 1400);
        assert_eq!(frags.len(), 3);
        reassemble(&f, &frags, 1400);
        f.extend_from_slice(&[0xee; 7]);
        assert_eq!(fragments(&f, 1400), frags);
    }

    #[test]
    fn fragmenting_a_fragment() {
        let ip = Ipv4Repr {
            more_frags: true,
            frag_offset: 1480,
            ..ipv4_repr(0, false)
        };
        let f = ipv4_frame(&[], ip, &pattern(1480));
        let frags = fragments(&f, 600);
        assert_eq!(frags.len(), 3);
        reassemble(&f, &frags, 600);
        let last = Ipv4Packet::new_checked(&frags[2][14..]).unwrap();
        assert!(last.more_frags());
        assert_eq!(last.frag_offset(), 1480 + 2 * 576);
        // The last fragment of a datagram stays the last.
        let ip = Ipv4Repr {
            more_frags: false,
            ..ip
        };
        let f = ipv4_frame(&[], ip, &pattern(1480));
        reassemble(&f, &fragments(&f, 600), 600);
        // Offsets that would leave the 13-bit field are refused.
        let ip = Ipv4Repr {
            frag_offset: 65528,
            ..ip
        };
        let f = ipv4_frame(&[], ip, &pattern(100));
        assert!(fragments(&f, 60).is_empty());
    }

    #[test]
    fn options_only_copied_ones_after_the_first() {
        // IHL 8: record route (7, not copied, 7 bytes), NOP, then a 4-byte option with
        // the copied flag (0x82).
        let opts = [7, 7, 4, 0, 0, 0, 0, 1, 0x82, 4, 0xab, 0xcd];
        let mut f = l2_header(&[], ethertype::IPV4);
        let mut hdr = hex("4800 0000 4242 0000 4011 0000 0a00 0001 0a00 0002");
        hdr.extend_from_slice(&opts);
        let total = (hdr.len() + 1000) as u16;
        hdr[2..4].copy_from_slice(&total.to_be_bytes());
        Ipv4Packet::new_unchecked(&mut hdr[..]).fill_checksum();
        f.extend_from_slice(&hdr);
        f.extend_from_slice(&pattern(1000));
        let frags = fragments(&f, 500);
        assert_eq!(frags.len(), 3);
        reassemble(&f, &frags, 500);
        let opts_of = |i: usize| {
            Ipv4Packet::new_checked(&frags[i][14..])
                .unwrap()
                .options()
                .to_vec()
        };
        assert_eq!(opts_of(0), opts);
        let later = [1, 1, 1, 1, 1, 1, 1, 1, 0x82, 4, 0xab, 0xcd];
        assert_eq!(opts_of(1), later);
        assert_eq!(opts_of(2), later);

        // Malformed options: length 1, then length past the end.
        for bad in [[7, 1, 0, 0], [0x82, 9, 0, 0]] {
            let mut h = hex("4600 0000 4242 0000 4011 0000 0a00 0001 0a00 0002");
            h.extend_from_slice(&bad);
            h[2..4].copy_from_slice(&(24u16 + 1000).to_be_bytes());
            Ipv4Packet::new_unchecked(&mut h[..]).fill_checksum();
            let mut f = l2_header(&[], ethertype::IPV4);
            f.extend_from_slice(&h);
            f.extend_from_slice(&pattern(1000));
            assert!(fragments(&f, 500).is_empty(), "{bad:?}");
        }
    }

    #[test]
    fn fragment_refusals() {
        assert!(fragments(&v4(1480, true), 576).is_empty(), "DF");
        assert!(fragments(&v6(1480), 576).is_empty());
        let arp = hex(VXLAN_V4_ARP);
        assert!(fragments(&arp[INNER_V4..], 576).is_empty());
        let f = v4(1480, false);
        let mut bad = f.clone();
        bad[22] = 1; // stale header checksum
        assert!(fragments(&bad, 576).is_empty());
        for n in 0..f.len() {
            assert!(fragments(&f[..n], 576).is_empty(), "len {n}");
        }
        assert!(fragments(&f, 27).is_empty());
        assert!(fragments(&f, 0).is_empty());
    }

    #[test]
    fn emit_failure_stops() {
        let f = v4(1480, false);
        let mut scratch = vec![0u8; 2048];
        let mut calls = 0;
        let n = fragment_ipv4(&f, 576, &mut scratch, &mut |_| {
            calls += 1;
            calls < 2
        });
        assert_eq!((n, calls), (1, 2));
    }

    #[test]
    fn small_scratch_makes_small_fragments() {
        let f = v4(1480, false);
        let mut scratch = vec![0u8; 14 + 20 + 400];
        let mut out = Vec::new();
        let n = fragment_ipv4(&f, 1500, &mut scratch, &mut |f| {
            out.push(f.to_vec());
            true
        });
        assert_eq!(n, 4); // 400 * 3 + 280
        reassemble(&f, &out, 420);
        let mut tiny = vec![0u8; 14 + 20 + 7];
        assert_eq!(fragment_ipv4(&f, 1500, &mut tiny, &mut |_| true), 0);
    }

    #[test]
    fn option_walk() {
        let mut o = [1, 1, 0, 7, 1];
        assert!(strip_uncopied_options(&mut o));
        assert_eq!(o, [1, 1, 0, 7, 1], "nothing after the end of list");
        let mut o = [0x44, 2];
        assert!(strip_uncopied_options(&mut o));
        assert_eq!(o, [1, 1]);
        assert!(!strip_uncopied_options(&mut [0x44]));
        assert!(strip_uncopied_options(&mut []));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(
            b in proptest::collection::vec(any::<u8>(), 0..1600),
            mtu in any::<u32>(),
            out_len in 0usize..1600,
            scratch_len in 0usize..1600,
        ) {
            let _ = too_big_action(&b);
            let mut out = vec![0u8; out_len];
            let n = too_big_reply(&b, mtu, &mut out);
            prop_assert!(n <= out_len);
            let mut scratch = vec![0u8; scratch_len];
            let l3 = L2Info::parse(&b).map(|l| l.l3_offset).unwrap_or(0);
            let mut max = 0;
            fragment_ipv4(&b, mtu, &mut scratch, &mut |f| {
                max = max.max(f.len());
                true
            });
            prop_assert!(max <= l3 + mtu.min(65535) as usize);
        }

        #[test]
        fn mutated_frames_never_panic(
            df in any::<bool>(),
            six in any::<bool>(),
            len in 0usize..1500,
            edits in proptest::collection::vec((0usize..80, any::<u8>()), 0..4),
            mtu in 0u32..2000,
        ) {
            let mut f = if six { v6(len) } else { v4(len, df) };
            for (i, v) in edits {
                if let Some(b) = f.get_mut(i) {
                    *b = v;
                }
            }
            let _ = too_big_action(&f);
            let mut out = vec![0u8; 1600];
            let _ = too_big_reply(&f, mtu, &mut out);
            let mut scratch = vec![0u8; 1600];
            let l3 = L2Info::parse(&f).map(|l| l.l3_offset).unwrap_or(0);
            fragment_ipv4(&f, mtu, &mut scratch, &mut |frag| {
                assert!(frag.len() <= l3 + mtu as usize);
                true
            });
        }

        #[test]
        fn fragments_always_reassemble(
            len in 0usize..4000,
            mtu in 28u32..3000,
            tags in 0usize..=2,
            offset in 0u16..100,
            mf in any::<bool>(),
        ) {
            let ip = Ipv4Repr {
                more_frags: mf,
                frag_offset: offset * 8,
                ..ipv4_repr(0, false)
            };
            let f = ipv4_frame(&QINQ[..tags], ip, &pattern(len));
            let frags = fragments(&f, mtu);
            prop_assert!(!frags.is_empty());
            // Full steps until the rest fits in one datagram, then the rest.
            let (room, step) = (mtu as usize - 20, (mtu as usize - 20) & !7);
            prop_assert_eq!(frags.len(), 1 + len.saturating_sub(room).div_ceil(step));
            reassemble(&f, &frags, mtu as usize);
        }
    }
}
