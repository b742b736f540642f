//! Parsing the datapath flow syntax: `FromStr` for [`Megaflow`] (every form `Display`
//! prints, each field group checked against the protocol the match fixes) and for
//! [`Actions`].

use super::print::VLAN_NONE_MASK;
use super::{Mac, ParseError, bad};
use crate::PortId;
use crate::actions::{Action, Actions, TunnelAttrs};
use crate::flow::key::{FlowKey, FlowMask, Megaflow, addr_to, frag, tun_flags, vlan};
use std::net::IpAddr;

/// Splits `s` at top-level commas (not inside parentheses).
fn split_top(s: &str) -> Result<Vec<&str>, ParseError> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(ParseError::Syntax(s[i..].to_string()));
                }
            }
            ',' if depth == 0 => {
                parts.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(ParseError::Syntax(s.to_string()));
    }
    let last = s[start..].trim();
    if !last.is_empty() || !parts.is_empty() {
        parts.push(last);
    }
    Ok(parts)
}

/// Splits `name(args)` into name and args.
fn call(s: &str) -> Result<(&str, &str), ParseError> {
    let open = s
        .find('(')
        .ok_or_else(|| ParseError::Syntax(s.to_string()))?;
    let inner = s[open + 1..]
        .strip_suffix(')')
        .ok_or_else(|| ParseError::Syntax(s.to_string()))?;
    Ok((s[..open].trim(), inner))
}

/// Splits `k=v` items of a group.
fn items(args: &str) -> Result<Vec<(&str, &str)>, ParseError> {
    split_top(args)?
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(|p| {
            if let Some((k, v)) = p.split_once('=') {
                Ok((k.trim(), v.trim()))
            } else if let Ok((k, v)) = call(p) {
                Ok((k, v)) // flags(...)
            } else {
                Err(ParseError::Syntax(p.to_string()))
            }
        })
        .collect()
}

fn parse_u64(field: &str, s: &str) -> Result<u64, ParseError> {
    let r = if let Some(h) = s.strip_prefix("0x") {
        u64::from_str_radix(h, 16)
    } else {
        s.parse()
    };
    r.map_err(|_| bad(field, s))
}

/// `v` or `v/m` for an integer field of `bits` bits.
fn parse_int(field: &str, s: &str, full: u64) -> Result<(u64, u64), ParseError> {
    let (v, m) = match s.split_once('/') {
        Some((v, m)) => (parse_u64(field, v)?, parse_u64(field, m)?),
        None => (parse_u64(field, s)?, full),
    };
    if v > full || m > full {
        return Err(bad(field, s));
    }
    Ok((v & m, m))
}

fn parse_mac(field: &str, s: &str) -> Result<([u8; 6], [u8; 6]), ParseError> {
    let (v, m) = match s.split_once('/') {
        Some((v, m)) => (v.parse::<Mac>()?, m.parse::<Mac>()?),
        None => (s.parse::<Mac>()?, Mac([0xff; 6])),
    };
    let mut out = v.0;
    for (o, mb) in out.iter_mut().zip(m.0) {
        *o &= mb;
    }
    let _ = field;
    Ok((out, m.0))
}

/// `addr`, `addr/len` or `addr/mask`; returns (value, mask, is_v6).
fn parse_ip(field: &str, s: &str) -> Result<([u8; 16], [u8; 16], bool), ParseError> {
    let (a, m) = match s.split_once('/') {
        Some((a, m)) => (a, Some(m)),
        None => (s, None),
    };
    let addr: IpAddr = a.parse().map_err(|_| bad(field, s))?;
    let len = if addr.is_ipv6() { 16 } else { 4 };
    let mut mask = [0u8; 16];
    match m {
        None => mask[..len].fill(0xff),
        Some(m) if m.contains('.') || m.contains(':') => {
            let ma: IpAddr = m.parse().map_err(|_| bad(field, s))?;
            if ma.is_ipv6() != addr.is_ipv6() {
                return Err(bad(field, s));
            }
            mask = addr_to(ma);
        }
        Some(m) => {
            let p: usize = m.parse().map_err(|_| bad(field, s))?;
            if p > len * 8 {
                return Err(bad(field, s));
            }
            for (i, b) in mask.iter_mut().enumerate().take(len) {
                let bits = p.saturating_sub(i * 8).min(8);
                *b = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
            }
        }
    }
    let mut v = addr_to(addr);
    for (x, mb) in v.iter_mut().zip(mask) {
        *x &= mb;
    }
    Ok((v, mask, addr.is_ipv6()))
}

fn parse_tun_flags(s: &str) -> Result<(u16, u16), ParseError> {
    let one = |t: &str| -> Result<u16, ParseError> {
        let mut bits = 0;
        for name in t.split('|').filter(|n| !n.is_empty()) {
            bits |= match name {
                "key" => tun_flags::KEY,
                "csum" => tun_flags::CSUM,
                "df" => tun_flags::DONT_FRAGMENT,
                _ => return Err(bad("flags", s)),
            };
        }
        Ok(bits)
    };
    match s.split_once('/') {
        Some((v, m)) => {
            let m = one(m)?;
            Ok((one(v)? & m, m))
        }
        None => Ok((
            one(s)?,
            tun_flags::KEY | tun_flags::CSUM | tun_flags::DONT_FRAGMENT,
        )),
    }
}

/// Accumulates parsed fields into key and mask.
struct Builder {
    k: FlowKey,
    m: FlowKey,
    /// The protocol groups seen, checked against their prerequisites at the end.
    l3: Option<&'static str>,
    l4: Option<&'static str>,
    tcp_flags: bool,
}

fn needs(group: &str, needs: &str) -> ParseError {
    ParseError::Prerequisite {
        group: group.to_string(),
        needs: needs.to_string(),
    }
}

impl Builder {
    fn tunnel(&mut self, args: &str) -> Result<(), ParseError> {
        let (k, m) = (&mut self.k, &mut self.m);
        // The group implies "tunnel present" and fixes the outer family.
        k.tun_flags |= tun_flags::PRESENT;
        m.tun_flags |= tun_flags::PRESENT | tun_flags::IPV6;
        for (name, v) in items(args)? {
            match name {
                "tun_id" => {
                    let (x, y) = parse_int(name, v, 0xffff_ffff)?;
                    (k.tun_vni, m.tun_vni) = (x as u32, y as u32);
                }
                "src" | "dst" | "ipv6_src" | "ipv6_dst" => {
                    let (x, y, v6) = parse_ip(name, v)?;
                    if v6 {
                        k.tun_flags |= tun_flags::IPV6;
                    }
                    if name.ends_with("src") {
                        (k.tun_src, m.tun_src) = (x, y);
                    } else {
                        (k.tun_dst, m.tun_dst) = (x, y);
                    }
                }
                "tos" => {
                    let (x, y) = parse_int(name, v, 0xff)?;
                    (k.tun_tos, m.tun_tos) = (x as u8, y as u8);
                }
                "ttl" => {
                    let (x, y) = parse_int(name, v, 0xff)?;
                    (k.tun_ttl, m.tun_ttl) = (x as u8, y as u8);
                }
                "tp_dst" => {
                    let (x, y) = parse_int(name, v, 0xffff)?;
                    (k.tun_tp_dst, m.tun_tp_dst) = (x as u16, y as u16);
                }
                "flags" => {
                    let (x, y) = parse_tun_flags(v)?;
                    k.tun_flags |= x;
                    m.tun_flags |= y;
                }
                _ => return Err(ParseError::UnknownField(format!("tunnel.{name}"))),
            }
        }
        Ok(())
    }

    fn vlan(&mut self, idx: usize, args: &str) -> Result<(), ParseError> {
        let (k, m) = (&mut self.k, &mut self.m);
        if args.trim() == "none" {
            m.vlan_tci[idx] = VLAN_NONE_MASK;
            return Ok(());
        }
        // A printed vlan group always means "a tag is present".
        k.vlan_tci[idx] |= vlan::PRESENT;
        m.vlan_tci[idx] |= vlan::PRESENT;
        k.vlan_tpid[idx] = 0x8100;
        m.vlan_tpid[idx] = 0xffff;
        for (name, v) in items(args)? {
            match name {
                "tpid" => {
                    let (x, y) = parse_int(name, v, 0xffff)?;
                    (k.vlan_tpid[idx], m.vlan_tpid[idx]) = (x as u16, y as u16);
                }
                "vid" => {
                    let (x, y) = parse_int(name, v, vlan::VID_MASK.into())?;
                    k.vlan_tci[idx] |= x as u16;
                    m.vlan_tci[idx] |= y as u16;
                }
                "pcp" => {
                    let (x, y) = parse_int(name, v, 7)?;
                    k.vlan_tci[idx] |= (x as u16) << vlan::PCP_SHIFT;
                    m.vlan_tci[idx] |= (y as u16) << vlan::PCP_SHIFT;
                }
                _ => return Err(ParseError::UnknownField(format!("vlan.{name}"))),
            }
        }
        Ok(())
    }

    fn ip(&mut self, group: &str, args: &str) -> Result<(), ParseError> {
        let (k, m) = (&mut self.k, &mut self.m);
        for (name, v) in items(args)? {
            match name {
                "src" | "dst" | "sip" | "tip" => {
                    let (x, y, v6) = parse_ip(name, v)?;
                    if v6 != (group == "ipv6") {
                        return Err(bad(name, v));
                    }
                    if name == "src" || name == "sip" {
                        (k.ip_src, m.ip_src) = (x, y);
                    } else {
                        (k.ip_dst, m.ip_dst) = (x, y);
                    }
                }
                "proto" | "op" => {
                    let (x, y) = parse_int(name, v, 0xff)?;
                    (k.ip_proto, m.ip_proto) = (x as u8, y as u8);
                }
                "tos" | "tclass" => {
                    let (x, y) = parse_int(name, v, 0xff)?;
                    (k.ip_tos, m.ip_tos) = (x as u8, y as u8);
                }
                "ttl" | "hlimit" => {
                    let (x, y) = parse_int(name, v, 0xff)?;
                    (k.ip_ttl, m.ip_ttl) = (x as u8, y as u8);
                }
                "frag" => {
                    let all = frag::ANY | frag::LATER;
                    let (x, y) = match v {
                        "no" => (0, all),
                        "first" => (frag::ANY, all),
                        "later" => (all, all),
                        _ => {
                            let (x, y) = parse_int(name, v, all.into())?;
                            (x as u8, y as u8)
                        }
                    };
                    (k.ip_frag, m.ip_frag) = (x, y);
                }
                "sha" | "tha" => {
                    let (x, y) = parse_mac(name, v)?;
                    if name == "sha" {
                        (k.arp_sha, m.arp_sha) = (x, y);
                    } else {
                        (k.arp_tha, m.arp_tha) = (x, y);
                    }
                }
                _ => return Err(ParseError::UnknownField(format!("{group}.{name}"))),
            }
        }
        Ok(())
    }

    fn l4(&mut self, group: &str, args: &str) -> Result<(), ParseError> {
        let (k, m) = (&mut self.k, &mut self.m);
        for (name, v) in items(args)? {
            let (x, y) = parse_int(name, v, 0xffff)?;
            match name {
                "src" | "type" => (k.tp_src, m.tp_src) = (x as u16, y as u16),
                "dst" | "code" => (k.tp_dst, m.tp_dst) = (x as u16, y as u16),
                _ => return Err(ParseError::UnknownField(format!("{group}.{name}"))),
            }
        }
        Ok(())
    }

    fn group(&mut self, name: &str, args: &str) -> Result<(), ParseError> {
        match name {
            "tunnel" => self.tunnel(args)?,
            "in_port" => {
                self.k.in_port = parse_u64(name, args)?
                    .try_into()
                    .map_err(|_| bad(name, args))?;
                self.m.in_port = u32::MAX;
            }
            "eth" => {
                for (f, v) in items(args)? {
                    let (x, y) = parse_mac(f, v)?;
                    match f {
                        "src" => (self.k.eth_src, self.m.eth_src) = (x, y),
                        "dst" => (self.k.eth_dst, self.m.eth_dst) = (x, y),
                        _ => return Err(ParseError::UnknownField(format!("eth.{f}"))),
                    }
                }
            }
            "vlan" => self.vlan(0, args)?,
            "cvlan" => self.vlan(1, args)?,
            "eth_type" => {
                let (x, y) = parse_int(name, args, 0xffff)?;
                (self.k.eth_type, self.m.eth_type) = (x as u16, y as u16);
            }
            "ipv4" | "ipv6" | "arp" => {
                self.once_l3(group_name(name))?;
                self.ip(name, args)?;
            }
            "tcp" | "udp" | "icmp" | "icmpv6" | "tp" => {
                self.once_l4(group_name(name))?;
                self.l4(name, args)?;
            }
            "tcp_flags" => {
                let (x, y) = parse_int(name, args, 0x0fff)?;
                (self.k.tcp_flags, self.m.tcp_flags) = (x as u16, y as u16);
                self.tcp_flags = true;
            }
            _ => return Err(ParseError::UnknownField(name.to_string())),
        }
        Ok(())
    }
}

/// The protocol groups' names, for the builder's record of what it saw.
fn group_name(name: &str) -> &'static str {
    ["ipv4", "ipv6", "arp", "tcp", "udp", "icmp", "icmpv6", "tp"]
        .into_iter()
        .find(|g| *g == name)
        .unwrap_or("tp")
}

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_ARP: u16 = 0x0806;

impl Builder {
    fn once_l3(&mut self, name: &'static str) -> Result<(), ParseError> {
        match self.l3.replace(name) {
            Some(prev) => Err(ParseError::Syntax(format!("{prev}(..) and {name}(..)"))),
            None => Ok(()),
        }
    }

    fn once_l4(&mut self, name: &'static str) -> Result<(), ParseError> {
        match self.l4.replace(name) {
            Some(prev) => Err(ParseError::Syntax(format!("{prev}(..) and {name}(..)"))),
            None => Ok(()),
        }
    }

    /// The exact `eth_type`, if the match fixes one.
    fn eth_type(&self) -> Option<u16> {
        (self.m.eth_type == 0xffff).then_some(self.k.eth_type)
    }

    /// Makes the match fix `eth_type` to `want` (a group implies it), or refuses if it
    /// says otherwise.
    fn imply_eth_type(&mut self, group: &str, want: u16) -> Result<(), ParseError> {
        match (self.m.eth_type, self.eth_type()) {
            (0, _) => {
                (self.k.eth_type, self.m.eth_type) = (want, 0xffff);
                Ok(())
            }
            (_, Some(t)) if t == want => Ok(()),
            _ => Err(needs(group, &format!("eth_type({want:#06x})"))),
        }
    }

    /// Makes the match fix the IP protocol to `want`, or refuses if it says otherwise.
    fn imply_proto(&mut self, group: &str, want: u8) -> Result<(), ParseError> {
        match self.m.ip_proto {
            0 => {
                (self.k.ip_proto, self.m.ip_proto) = (want, 0xff);
                Ok(())
            }
            0xff if self.k.ip_proto == want => Ok(()),
            _ => Err(needs(group, &format!("proto={want}"))),
        }
    }

    /// Checks and completes the prerequisites of each group, as OVS does: a field is
    /// only meaningful under the protocols that carry it, so `ipv4(..)` implies
    /// `eth_type(0x0800)`, `tcp(..)` implies `proto=6` and needs the IP version, and so
    /// on. A match that contradicts a prerequisite is refused. The result prints back
    /// exactly (every masked field under a group that names its protocol).
    fn finish(mut self) -> Result<Megaflow, ParseError> {
        match self.l3 {
            Some("ipv4") => self.imply_eth_type("ipv4", ETH_IPV4)?,
            Some("ipv6") => self.imply_eth_type("ipv6", ETH_IPV6)?,
            Some("arp") => self.imply_eth_type("arp", ETH_ARP)?,
            _ => {}
        }
        match self.l4 {
            Some("tcp") => self.imply_proto("tcp", 6)?,
            Some("udp") => self.imply_proto("udp", 17)?,
            Some("icmp") => {
                self.imply_eth_type("icmp", ETH_IPV4)?;
                self.imply_proto("icmp", 1)?;
            }
            Some("icmpv6") => {
                self.imply_eth_type("icmpv6", ETH_IPV6)?;
                self.imply_proto("icmpv6", 58)?;
            }
            Some(_) => {
                // `tp(..)`: ports of another protocol; it must be named exactly, and
                // not be one with a group of its own.
                if self.m.ip_proto != 0xff {
                    return Err(needs("tp", "an exact proto= in ipv4(..) or ipv6(..)"));
                }
                let own = match (self.k.ip_proto, self.eth_type()) {
                    (6, _) => Some("tcp"),
                    (17, _) => Some("udp"),
                    (1, Some(ETH_IPV4)) => Some("icmp"),
                    (58, Some(ETH_IPV6)) => Some("icmpv6"),
                    _ => None,
                };
                if let Some(g) = own {
                    return Err(needs("tp", &format!("another protocol: use {g}(..)")));
                }
            }
            None => {}
        }
        if self.tcp_flags {
            self.imply_proto("tcp_flags", 6)?;
        }
        let ip_version =
            "the IP version: ipv4(..) or ipv6(..), or eth_type(0x0800) or eth_type(0x86dd)";
        if let Some(g) = self.l4.filter(|g| matches!(*g, "tcp" | "udp" | "tp"))
            && !matches!(self.eth_type(), Some(ETH_IPV4 | ETH_IPV6))
        {
            return Err(needs(g, ip_version));
        }
        if self.tcp_flags && !matches!(self.eth_type(), Some(ETH_IPV4 | ETH_IPV6)) {
            return Err(needs("tcp_flags", ip_version));
        }
        // An IP or ARP field without a group (eth_type given alone) is fine; an eth_type
        // group naming neither IP nor ARP cannot carry L3 or L4 fields: the groups above
        // already refused those.
        Ok(Megaflow::new(&self.k, &FlowMask(self.m)))
    }
}

impl std::str::FromStr for Megaflow {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let mut b = Builder {
            k: FlowKey::default(),
            m: FlowKey::default(),
            l3: None,
            l4: None,
            tcp_flags: false,
        };
        let s = s.trim();
        if s != "<all>" {
            for part in split_top(s)? {
                let (name, args) = call(part)?;
                b.group(name, args)?;
            }
        }
        b.finish()
    }
}

fn parse_tunnel_action(args: &str) -> Result<TunnelAttrs, ParseError> {
    let mut vni = None;
    let mut src = None;
    let mut dst = None;
    let mut t = TunnelAttrs::vxlan(0, IpAddr::from([0, 0, 0, 0]));
    for (name, v) in items(args)? {
        match name {
            "tun_id" => vni = Some(parse_u64(name, v)?),
            "src" | "ipv6_src" => src = Some(v.parse().map_err(|_| bad(name, v))?),
            "dst" | "ipv6_dst" => dst = Some(v.parse().map_err(|_| bad(name, v))?),
            "tos" => t.tos = parse_int(name, v, 0xff)?.0 as u8,
            "ttl" => t.ttl = parse_int(name, v, 0xff)?.0 as u8,
            "tp_dst" => t.tp_dst = parse_int(name, v, 0xffff)?.0 as u16,
            "mark" => {
                t.mark = u32::try_from(parse_u64(name, v)?).map_err(|_| bad(name, v))?;
            }
            "flags" => {
                let (f, _) = parse_tun_flags(v)?;
                t.csum = f & tun_flags::CSUM != 0;
                t.df = f & tun_flags::DONT_FRAGMENT != 0;
            }
            _ => return Err(ParseError::UnknownField(format!("tunnel.{name}"))),
        }
    }
    t.vni = vni
        .filter(|v| *v <= 0x00ff_ffff)
        .ok_or_else(|| bad("tun_id", args))? as u32;
    t.dst = dst.ok_or_else(|| bad("dst", args))?;
    t.src = src;
    Ok(t)
}

fn parse_action(s: &str) -> Result<Action, ParseError> {
    match s {
        "pop_vlan" => return Ok(Action::PopVlan),
        "userspace" => return Ok(Action::Userspace),
        _ => {}
    }
    if let Ok(n) = s.parse::<u32>() {
        return Ok(Action::Output(PortId(n)));
    }
    let (name, args) = call(s)?;
    match name {
        "output" => Ok(Action::Output(PortId(
            args.parse().map_err(|_| bad(name, args))?,
        ))),
        "push_vlan" => {
            let mut tpid = 0x8100u16;
            let mut tci = 0u16;
            for (f, v) in items(args)? {
                match f {
                    "tpid" => tpid = parse_int(f, v, 0xffff)?.0 as u16,
                    "vid" => tci |= parse_int(f, v, vlan::VID_MASK.into())?.0 as u16,
                    "pcp" => tci |= (parse_int(f, v, 7)?.0 as u16) << vlan::PCP_SHIFT,
                    _ => return Err(ParseError::UnknownField(format!("push_vlan.{f}"))),
                }
            }
            Ok(Action::PushVlan { tpid, tci })
        }
        "set" => {
            let (inner, targs) = call(args)?;
            if inner != "tunnel" {
                return Err(ParseError::UnknownField(format!("set({inner})")));
            }
            Ok(Action::SetTunnel(parse_tunnel_action(targs)?))
        }
        _ => Err(ParseError::UnknownField(name.to_string())),
    }
}

impl std::str::FromStr for Actions {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let s = s.trim();
        let s = s.strip_prefix("actions:").unwrap_or(s);
        if s == "drop" {
            return Ok(Actions::drop());
        }
        let list = split_top(s)?
            .into_iter()
            .map(parse_action)
            .collect::<Result<Vec<_>, _>>()?;
        if list.is_empty() {
            return Err(ParseError::Syntax(s.to_string()));
        }
        Ok(Actions::new(list))
    }
}
