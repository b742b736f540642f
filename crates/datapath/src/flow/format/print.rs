//! Printing flows and actions in the datapath flow syntax: `Display` for [`Megaflow`],
//! [`FlowKey`] (the fields a packet's key makes relevant), [`Action`], [`Actions`] and
//! [`TunnelAttrs`]; masks print as `value/mask`, or `/len` where they are a prefix.

use super::Mac;
use crate::actions::{Action, Actions, TunnelAttrs};
use crate::flow::key::{FlowKey, FlowMask, Megaflow, addr_from, frag, tun_flags, vlan};
use std::fmt::{self, Display, Formatter, Write};

/// Collects `name=value[/mask]` items of one group.
struct Group<'a> {
    out: &'a mut String,
    started: bool,
}

impl<'a> Group<'a> {
    fn new(out: &'a mut String, name: &str) -> Self {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(name);
        out.push('(');
        Group {
            out,
            started: false,
        }
    }

    fn item(&mut self, name: &str, value: impl Display) {
        if self.started {
            self.out.push(',');
        }
        self.started = true;
        let _ = write!(self.out, "{name}={value}");
    }

    /// An integer field: nothing if unmasked, `v` if exact, `v/m` otherwise.
    fn int(&mut self, name: &str, v: u64, m: u64, full: u64, hex: bool) {
        if m == 0 {
            return;
        }
        let fmt = |x: u64| {
            if hex {
                format!("{x:#x}")
            } else {
                x.to_string()
            }
        };
        if m == full {
            self.item(name, fmt(v));
        } else {
            self.item(name, format!("{}/{:#x}", fmt(v), m));
        }
    }

    fn mac(&mut self, name: &str, v: [u8; 6], m: [u8; 6]) {
        if m == [0; 6] {
            return;
        }
        if m == [0xff; 6] {
            self.item(name, Mac(v));
        } else {
            self.item(name, format!("{}/{}", Mac(v), Mac(m)));
        }
    }

    fn ip(&mut self, name: &str, v: [u8; 16], m: [u8; 16], v6: bool) {
        let len = if v6 { 16 } else { 4 };
        if m[..len].iter().all(|b| *b == 0) {
            return;
        }
        let addr = addr_from(v, v6);
        match prefix_len(&m[..len]) {
            Some(p) if p == len * 8 => self.item(name, addr),
            Some(p) => self.item(name, format!("{addr}/{p}")),
            None => self.item(name, format!("{addr}/{}", addr_from(m, v6))),
        }
    }

    fn end(self) {
        self.out.push(')');
    }
}

/// The prefix length of a contiguous mask, or `None` if the mask has holes.
fn prefix_len(m: &[u8]) -> Option<usize> {
    let ones: usize = m.iter().map(|b| b.count_ones() as usize).sum();
    let mut expect = [0u8; 16];
    for (i, b) in expect.iter_mut().enumerate().take(m.len()) {
        let bits = ones.saturating_sub(i * 8).min(8);
        *b = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
    }
    (expect[..m.len()] == *m).then_some(ones)
}

fn frag_name(v: u8) -> &'static str {
    match v & (frag::ANY | frag::LATER) {
        0 => "no",
        x if x == frag::ANY => "first",
        _ => "later",
    }
}

fn tun_flag_names(v: u16) -> String {
    let mut names = Vec::new();
    for (bit, name) in [
        (tun_flags::KEY, "key"),
        (tun_flags::CSUM, "csum"),
        (tun_flags::DONT_FRAGMENT, "df"),
    ] {
        if v & bit != 0 {
            names.push(name);
        }
    }
    names.join("|")
}

fn write_tunnel(out: &mut String, k: &FlowKey, m: &FlowKey) {
    // A key without tunnel metadata prints no tunnel group: flows tell tunneled packets
    // apart by in_port (only the tunnel port carries metadata).
    if k.tun_flags & tun_flags::PRESENT == 0 {
        return;
    }
    let v6 = k.tun_flags & tun_flags::IPV6 != 0;
    let any = m.tun_vni != 0
        || m.tun_src != [0; 16]
        || m.tun_dst != [0; 16]
        || m.tun_tos != 0
        || m.tun_ttl != 0
        || m.tun_tp_dst != 0
        || m.tun_flags != 0;
    if !any {
        return;
    }
    let mut g = Group::new(out, "tunnel");
    g.int(
        "tun_id",
        k.tun_vni.into(),
        m.tun_vni.into(),
        0xffff_ffff,
        true,
    );
    let (src, dst) = if v6 {
        ("ipv6_src", "ipv6_dst")
    } else {
        ("src", "dst")
    };
    g.ip(src, k.tun_src, m.tun_src, v6);
    g.ip(dst, k.tun_dst, m.tun_dst, v6);
    g.int("tos", k.tun_tos.into(), m.tun_tos.into(), 0xff, false);
    g.int("ttl", k.tun_ttl.into(), m.tun_ttl.into(), 0xff, false);
    g.int(
        "tp_dst",
        k.tun_tp_dst.into(),
        m.tun_tp_dst.into(),
        0xffff,
        false,
    );
    // PRESENT and IPV6 are implied by the group and the address form; print the rest.
    let shown = m.tun_flags & !(tun_flags::PRESENT | tun_flags::IPV6);
    if shown != 0 {
        let names = tun_flag_names(k.tun_flags & shown);
        if shown == tun_flags::KEY | tun_flags::CSUM | tun_flags::DONT_FRAGMENT {
            g.item("flags", format!("({names})"));
        } else {
            g.item("flags", format!("({names}/{})", tun_flag_names(shown)));
        }
    }
    // `flags=(..)` reads worse than OVS's `flags(..)`: rewrite the one item.
    let fixed = g.out.replace("flags=(", "flags(");
    *g.out = fixed;
    g.end();
}

/// The mask of a flow that matches "no tag" in a VLAN slot (as NORMAL's megaflows do):
/// the present bit and the VID, printed as `vlan(none)`.
pub(super) const VLAN_NONE_MASK: u16 = vlan::PRESENT | vlan::VID_MASK;

fn write_vlan(out: &mut String, name: &str, tci: u16, tpid: u16, mtci: u16, mtpid: u16) {
    if mtci == 0 && mtpid == 0 {
        return;
    }
    if tci == 0 && tpid == 0 && mtci == VLAN_NONE_MASK && mtpid == 0 {
        let g = Group::new(out, name);
        g.out.push_str("none");
        g.end();
        return;
    }
    let mut g = Group::new(out, name);
    if mtpid != 0 && !(tpid == 0x8100 && mtpid == 0xffff) {
        g.int("tpid", tpid.into(), mtpid.into(), 0xffff, true);
    }
    g.int(
        "vid",
        (tci & vlan::VID_MASK).into(),
        (mtci & vlan::VID_MASK).into(),
        vlan::VID_MASK.into(),
        false,
    );
    g.int(
        "pcp",
        (tci >> vlan::PCP_SHIFT).into(),
        (mtci >> vlan::PCP_SHIFT).into(),
        7,
        false,
    );
    g.end();
}

fn write_l3(out: &mut String, k: &FlowKey, m: &FlowKey) {
    let is_v6 = k.eth_type == 0x86dd;
    let any = m.ip_src != [0; 16]
        || m.ip_dst != [0; 16]
        || m.ip_proto != 0
        || m.ip_tos != 0
        || m.ip_ttl != 0
        || m.ip_frag != 0;
    if !any {
        return;
    }
    match k.eth_type {
        0x0800 | 0x86dd => {
            let mut g = Group::new(out, if is_v6 { "ipv6" } else { "ipv4" });
            g.ip("src", k.ip_src, m.ip_src, is_v6);
            g.ip("dst", k.ip_dst, m.ip_dst, is_v6);
            g.int("proto", k.ip_proto.into(), m.ip_proto.into(), 0xff, false);
            let (tos, ttl) = if is_v6 {
                ("tclass", "hlimit")
            } else {
                ("tos", "ttl")
            };
            g.int(tos, k.ip_tos.into(), m.ip_tos.into(), 0xff, true);
            g.int(ttl, k.ip_ttl.into(), m.ip_ttl.into(), 0xff, false);
            let fm = m.ip_frag & (frag::ANY | frag::LATER);
            if fm == frag::ANY | frag::LATER {
                g.item("frag", frag_name(k.ip_frag));
            } else if fm != 0 {
                g.item("frag", format!("{:#x}/{fm:#x}", k.ip_frag & fm));
            }
            g.end();
        }
        0x0806 => {
            let mut g = Group::new(out, "arp");
            g.ip("sip", k.ip_src, m.ip_src, false);
            g.ip("tip", k.ip_dst, m.ip_dst, false);
            g.int("op", k.ip_proto.into(), m.ip_proto.into(), 0xff, false);
            g.mac("sha", k.arp_sha, m.arp_sha);
            g.mac("tha", k.arp_tha, m.arp_tha);
            g.end();
        }
        _ => {}
    }
}

fn write_l4(out: &mut String, k: &FlowKey, m: &FlowKey) {
    if k.eth_type == 0x0806 {
        return;
    }
    let l4 = m.tp_src != 0 || m.tp_dst != 0;
    let name = match k.ip_proto {
        6 => "tcp",
        17 => "udp",
        1 if k.eth_type == 0x0800 => "icmp",
        58 if k.eth_type == 0x86dd => "icmpv6",
        _ => "tp",
    };
    if l4 {
        let mut g = Group::new(out, name);
        let (s, d) = if name.starts_with("icmp") {
            ("type", "code")
        } else {
            ("src", "dst")
        };
        g.int(s, k.tp_src.into(), m.tp_src.into(), 0xffff, false);
        g.int(d, k.tp_dst.into(), m.tp_dst.into(), 0xffff, false);
        g.end();
    }
    if m.tcp_flags != 0 {
        let g = Group::new(out, "tcp_flags");
        if m.tcp_flags == 0x0fff {
            let _ = write!(g.out, "{:#05x}", k.tcp_flags);
        } else {
            let _ = write!(g.out, "{:#05x}/{:#05x}", k.tcp_flags, m.tcp_flags);
        }
        g.end();
    }
}

/// Writes the megaflow syntax of `key` under `mask` into `out`.
fn write_flow(out: &mut String, k: &FlowKey, m: &FlowKey) {
    write_tunnel(out, k, m);
    if m.in_port != 0 {
        let _ = if out.is_empty() {
            write!(out, "in_port({})", k.in_port)
        } else {
            write!(out, ",in_port({})", k.in_port)
        };
    }
    if m.eth_src != [0; 6] || m.eth_dst != [0; 6] {
        let mut g = Group::new(out, "eth");
        g.mac("src", k.eth_src, m.eth_src);
        g.mac("dst", k.eth_dst, m.eth_dst);
        g.end();
    }
    write_vlan(
        out,
        "vlan",
        k.vlan_tci[0],
        k.vlan_tpid[0],
        m.vlan_tci[0],
        m.vlan_tpid[0],
    );
    write_vlan(
        out,
        "cvlan",
        k.vlan_tci[1],
        k.vlan_tpid[1],
        m.vlan_tci[1],
        m.vlan_tpid[1],
    );
    if m.eth_type != 0 {
        let g = Group::new(out, "eth_type");
        if m.eth_type == 0xffff {
            let _ = write!(g.out, "{:#06x}", k.eth_type);
        } else {
            let _ = write!(g.out, "{:#06x}/{:#06x}", k.eth_type, m.eth_type);
        }
        g.end();
    }
    write_l3(out, k, m);
    write_l4(out, k, m);
}

impl Display for Megaflow {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(160);
        write_flow(&mut s, &self.key, &self.mask.0);
        if s.is_empty() {
            s.push_str("<all>");
        }
        f.write_str(&s)
    }
}

impl FlowKey {
    /// The mask of the fields meaningful for this packet's protocols (what an exact-match
    /// flow for it consults): used to print a packet's key without irrelevant zeros.
    pub fn relevant_mask(&self) -> FlowMask {
        let mut m = FlowMask(FlowKey {
            in_port: u32::MAX,
            ..FlowKey::default()
        });
        if self.has_tunnel() {
            m.tun_vni = u32::MAX;
            let n = if self.tun_flags & tun_flags::IPV6 != 0 {
                16
            } else {
                4
            };
            m.tun_src[..n].fill(0xff);
            m.tun_dst[..n].fill(0xff);
            m.tun_tos = 0xff;
            m.tun_ttl = 0xff;
            m.tun_tp_dst = 0xffff;
            m.tun_flags = tun_flags::ALL;
        }
        m.eth_src = [0xff; 6];
        m.eth_dst = [0xff; 6];
        m.eth_type = 0xffff;
        for i in 0..2 {
            if self.vlan_tci[i] & vlan::PRESENT != 0 {
                m.vlan_tci[i] = 0xffff;
                m.vlan_tpid[i] = 0xffff;
            }
        }
        match self.eth_type {
            0x0800 | 0x86dd => {
                let n = if self.eth_type == 0x86dd { 16 } else { 4 };
                m.ip_src[..n].fill(0xff);
                m.ip_dst[..n].fill(0xff);
                m.ip_proto = 0xff;
                m.ip_tos = 0xff;
                m.ip_ttl = 0xff;
                m.ip_frag = frag::ANY | frag::LATER;
                if self.ip_frag & frag::LATER == 0 && matches!(self.ip_proto, 1 | 6 | 17 | 58) {
                    m.tp_src = 0xffff;
                    m.tp_dst = 0xffff;
                    if self.ip_proto == 6 {
                        m.tcp_flags = 0x0fff;
                    }
                }
            }
            0x0806 => {
                m.ip_src[..4].fill(0xff);
                m.ip_dst[..4].fill(0xff);
                m.ip_proto = 0xff;
                m.arp_sha = [0xff; 6];
                m.arp_tha = [0xff; 6];
            }
            _ => {}
        }
        m
    }
}

impl Display for FlowKey {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        Display::fmt(&Megaflow::new(self, &self.relevant_mask()), f)
    }
}

impl Display for TunnelAttrs {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "tunnel(tun_id={:#x}", self.vni)?;
        let (s, d) = if self.dst.is_ipv6() {
            ("ipv6_src", "ipv6_dst")
        } else {
            ("src", "dst")
        };
        if let Some(src) = self.src {
            write!(f, ",{s}={src}")?;
        }
        write!(
            f,
            ",{d}={},tos={:#x},ttl={},tp_dst={}",
            self.dst, self.tos, self.ttl, self.tp_dst
        )?;
        if self.mark != 0 {
            write!(f, ",mark={:#x}", self.mark)?;
        }
        let mut flags = vec!["key"];
        if self.csum {
            flags.push("csum");
        }
        if self.df {
            flags.push("df");
        }
        write!(f, ",flags({}))", flags.join("|"))
    }
}

impl Display for Action {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Action::Output(p) => write!(f, "{p}"),
            Action::PushVlan { tpid, tci } => {
                f.write_str("push_vlan(")?;
                if *tpid != 0x8100 {
                    write!(f, "tpid={tpid:#x},")?;
                }
                write!(
                    f,
                    "vid={},pcp={})",
                    tci & vlan::VID_MASK,
                    tci >> vlan::PCP_SHIFT
                )
            }
            Action::PopVlan => f.write_str("pop_vlan"),
            Action::SetTunnel(t) => write!(f, "set({t})"),
            Action::Userspace => f.write_str("userspace"),
        }
    }
}

impl Display for Actions {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if self.is_drop() {
            return f.write_str("drop");
        }
        for (i, a) in self.as_slice().iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}
