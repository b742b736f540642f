//! Megaflow + actions -> [`FlowerRule`], failing closed.
//!
//! Like OVS's `netdev-offload-tc`, every masked field is either consumed into a flower
//! key or refused with [`Unsupported`](crate::Unsupported); the key and the mask are destructured fully so
//! a new [`FlowKey`] field breaks the build here until it is handled.
//!
//! Where flower can only match a *subset* of the megaflow's packets the filter is still
//! correct (the rest miss to software): an unmasked VLAN-present bit is translated as
//! "untagged", an unmasked VLAN TPID as 802.1Q.

use crate::error::OffloadError;
use crate::ports::{PortKind, PortTable};
use crate::rule::{
    FlowerAction, FlowerMatch, FlowerRule, Masked, TunnelKeySet, TunnelMatch, VlanMatch,
};
use datapath::flow::{addr_from, frag, tun_flags, vlan};
use datapath::{Action, Actions, FlowKey, Megaflow, PortId};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// ETH_P_ALL: the protocol of a filter that matches every ethertype.
pub const ETH_P_ALL: u16 = 0x0003;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_SCTP: u8 = 132;

type Result<T> = std::result::Result<T, OffloadError>;

/// Translates a megaflow and its actions into a flower rule.
///
/// A `SetTunnel` without a source IP yields an unspecified source, which
/// [`crate::judge`] fills in from the tunnel's path; a `SetTunnel` with a mark is
/// preceded by `skbedit mark` (the mark itself is part of the path's lookup key).
pub fn translate(mf: &Megaflow, actions: &Actions, ports: &PortTable) -> Result<FlowerRule> {
    let (in_port, matches) = translate_match(&mf.key, &mf.mask.0)?;
    let ingress = ports
        .get(in_port)
        .ok_or(OffloadError::UnknownPort(in_port))?;
    let decap = ingress.kind == PortKind::Tunnel;
    if !matches.tunnel.is_empty() && !decap {
        return Err(OffloadError::field("tun_flags"));
    }
    let actions = translate_actions(actions, decap, ports)?;
    Ok(FlowerRule {
        ingress: ingress.ifindex,
        matches,
        actions,
    })
}

fn is_zero<T: Default + PartialEq>(x: &T) -> bool {
    *x == T::default()
}

fn masked<T: Default + PartialEq + Copy>(value: T, mask: T) -> Option<Masked<T>> {
    (!is_zero(&mask)).then_some(Masked::new(value, mask))
}

/// `Some(value)` for an exact mask, `None` for no mask, else unsupported.
fn exact<T: Default + PartialEq + Copy>(
    value: T,
    mask: T,
    full: T,
    field: &'static str,
) -> Result<Option<T>> {
    if is_zero(&mask) {
        Ok(None)
    } else if mask == full {
        Ok(Some(value))
    } else {
        Err(OffloadError::field(field))
    }
}

fn ip_masked(
    value: [u8; 16],
    mask: [u8; 16],
    v6: bool,
    field: &'static str,
) -> Result<Option<Masked<IpAddr>>> {
    if !v6 && value[4..].iter().any(|b| *b != 0) {
        return Err(OffloadError::field(field));
    }
    let relevant = if v6 { &mask[..] } else { &mask[..4] };
    Ok(relevant
        .iter()
        .any(|b| *b != 0)
        .then(|| Masked::new(addr_from(value, v6), addr_from(mask, v6))))
}

/// A 16-bit key field that holds an 8-bit value (ICMP type/code, ARP opcode).
fn u8_of(value: u16, mask: u16, field: &'static str) -> Result<Option<Masked<u8>>> {
    if value > 0xff {
        return Err(OffloadError::field(field));
    }
    Ok(masked(value as u8, (mask & 0xff) as u8))
}

/// The match half: returns the ingress port and the flower match.
fn translate_match(k: &FlowKey, m: &FlowKey) -> Result<(PortId, FlowerMatch)> {
    let FlowKey {
        tun_src,
        tun_dst,
        ip_src,
        ip_dst,
        in_port,
        tun_vni,
        tun_tp_dst,
        tun_tos,
        tun_ttl,
        tun_flags: k_tun_flags,
        eth_type,
        eth_src,
        eth_dst,
        vlan_tci,
        vlan_tpid,
        ip_proto,
        ip_tos,
        ip_ttl,
        ip_frag,
        tp_src,
        tp_dst,
        tcp_flags,
        arp_sha,
        arp_tha,
        pad: _,
    } = *k;
    // The key is destructured in full (a new field breaks the build here until it is
    // handled); its mask is read field by field.

    let in_port =
        exact(in_port, m.in_port, u32::MAX, "in_port")?.ok_or(OffloadError::field("in_port"))?;
    let mut f = FlowerMatch {
        eth_dst: masked(eth_dst, m.eth_dst),
        eth_src: masked(eth_src, m.eth_src),
        ..FlowerMatch::default()
    };

    // Tunnel metadata.
    let tun = TunKeys {
        src: (tun_src, m.tun_src),
        dst: (tun_dst, m.tun_dst),
        vni: (tun_vni, m.tun_vni),
        tp_dst: (tun_tp_dst, m.tun_tp_dst),
        tos: (tun_tos, m.tun_tos),
        ttl: (tun_ttl, m.tun_ttl),
        flags: (k_tun_flags, m.tun_flags),
    };
    f.tunnel = translate_tunnel(&tun)?;

    // Ethertype and VLAN tags.
    let eth_type = exact(eth_type, m.eth_type, 0xffff, "eth_type")?;
    let vlans = VlanKeys {
        tci: (vlan_tci, m.vlan_tci),
        tpid: (vlan_tpid, m.vlan_tpid),
    };
    translate_vlans(&vlans, eth_type, &mut f)?;

    // L3 and L4.
    let l3 = L3Keys {
        ip_src: (ip_src, m.ip_src),
        ip_dst: (ip_dst, m.ip_dst),
        ip_proto: (ip_proto, m.ip_proto),
        ip_tos: (ip_tos, m.ip_tos),
        ip_ttl: (ip_ttl, m.ip_ttl),
        ip_frag: (ip_frag, m.ip_frag),
        tp_src: (tp_src, m.tp_src),
        tp_dst: (tp_dst, m.tp_dst),
        tcp_flags: (tcp_flags, m.tcp_flags),
        arp_sha: (arp_sha, m.arp_sha),
        arp_tha: (arp_tha, m.arp_tha),
    };
    match eth_type {
        Some(ETH_P_IP) => translate_ip(&l3, false, &mut f)?,
        Some(ETH_P_IPV6) => translate_ip(&l3, true, &mut f)?,
        Some(ETH_P_ARP) => translate_arp(&l3, &mut f)?,
        _ => l3.refuse_any()?,
    }
    Ok((PortId(in_port), f))
}

/// A megaflow's VLAN fields: (key, mask) of the TCIs and TPIDs, outer first.
struct VlanKeys {
    tci: ([u16; 2], [u16; 2]),
    tpid: ([u16; 2], [u16; 2]),
}

/// The VLAN tags and the filter's protocol: the outer TPID for a tagged flow, else the
/// ethertype (`eth_type`, already checked exact).
fn translate_vlans(v: &VlanKeys, eth_type: Option<u16>, f: &mut FlowerMatch) -> Result<()> {
    let ((tci, m_tci), (tpid, m_tpid)) = (v.tci, v.tpid);
    let tagged = m_tci[0] & vlan::PRESENT != 0 && tci[0] & vlan::PRESENT != 0;
    // Tag fields matched without matching whether a tag is there: flower cannot.
    if m_tci[0] & vlan::PRESENT == 0 && (m_tci != [0, 0] || m_tpid != [0, 0]) {
        return Err(OffloadError::field("vlan_tci"));
    }
    if tagged {
        let tpid0 = exact(tpid[0], m_tpid[0], 0xffff, "vlan_tpid")?.unwrap_or(ETH_P_8021Q);
        f.protocol = tpid0;
        let inner = m_tci[1] & vlan::PRESENT != 0 && tci[1] & vlan::PRESENT != 0;
        let mut outer = vlan_match(tci[0], m_tci[0])?;
        if inner {
            outer.eth_type =
                Some(exact(tpid[1], m_tpid[1], 0xffff, "vlan_tpid")?.unwrap_or(ETH_P_8021Q));
            let mut c = vlan_match(tci[1], m_tci[1])?;
            c.eth_type = eth_type;
            f.cvlan = Some(c);
        } else {
            if m_tci[1] & vlan::PRESENT == 0 && (m_tci[1] != 0 || m_tpid[1] != 0) {
                return Err(OffloadError::field("vlan_tci"));
            }
            outer.eth_type = eth_type;
        }
        f.vlan = Some(outer);
    } else {
        // "No tag" (the present bit matched as absent) has no flower key of its own: only
        // an exact ethertype says it (a `protocol ip` filter never sees an 802.1Q frame,
        // a `protocol all` filter sees both). Without one, refuse rather than over-match.
        if m_tci[0] & vlan::PRESENT != 0 && eth_type.is_none() {
            return Err(OffloadError::field("vlan_tci"));
        }
        f.protocol = eth_type.unwrap_or(crate::translate::ETH_P_ALL);
    }
    Ok(())
}

fn vlan_match(tci: u16, mask: u16) -> Result<VlanMatch> {
    Ok(VlanMatch {
        id: exact(
            tci & vlan::VID_MASK,
            mask & vlan::VID_MASK,
            vlan::VID_MASK,
            "vlan_tci",
        )?,
        prio: exact(
            ((tci & vlan::PCP_MASK) >> vlan::PCP_SHIFT) as u8,
            ((mask & vlan::PCP_MASK) >> vlan::PCP_SHIFT) as u8,
            7,
            "vlan_tci",
        )?,
        eth_type: None,
    })
}

struct TunKeys {
    src: ([u8; 16], [u8; 16]),
    dst: ([u8; 16], [u8; 16]),
    vni: (u32, u32),
    tp_dst: (u16, u16),
    tos: (u8, u8),
    ttl: (u8, u8),
    flags: (u16, u16),
}

/// The VXLAN UDP port (IANA) the tunnel device receives on.
const VXLAN_PORT: u16 = 4789;

fn translate_tunnel(t: &TunKeys) -> Result<TunnelMatch> {
    let (flags, m_flags) = t.flags;
    let present = m_flags & tun_flags::PRESENT != 0 && flags & tun_flags::PRESENT != 0;
    if !present {
        // Either "not tunneled" (the PRESENT bit matched as zero: the masked key is all
        // zero, nothing to match on a non-tunnel device) or tunnel fields matched
        // without knowing whether there is a tunnel: flower cannot.
        let any_field = !is_zero(&t.src.1)
            || !is_zero(&t.dst.1)
            || t.vni.1 != 0
            || t.tp_dst.1 != 0
            || t.tos.1 != 0
            || t.ttl.1 != 0
            || m_flags != 0;
        if m_flags & tun_flags::PRESENT == 0 && any_field {
            return Err(OffloadError::field("tun_flags"));
        }
        return Ok(TunnelMatch::default());
    }
    // Flower (in netlink-packet-route's view) has no outer-flag keys: only the flags
    // implied by the other keys can be matched.
    if m_flags & (tun_flags::CSUM | tun_flags::DONT_FRAGMENT) != 0 {
        return Err(OffloadError::field("tun_flags"));
    }
    let addr_masked = !is_zero(&t.src.1) || !is_zero(&t.dst.1);
    if addr_masked && m_flags & tun_flags::IPV6 == 0 {
        return Err(OffloadError::field("tun_flags"));
    }
    let v6 = flags & tun_flags::IPV6 != 0;
    let key_id = match t.vni.1 {
        0 => None,
        0x00ff_ffff | u32::MAX => Some(t.vni.0 & 0x00ff_ffff),
        _ => return Err(OffloadError::field("tun_vni")),
    };
    Ok(TunnelMatch {
        key_id,
        src: ip_masked(t.src.0, t.src.1, v6, "tun_src")?,
        dst: ip_masked(t.dst.0, t.dst.1, v6, "tun_dst")?,
        // A decap match always names the VXLAN port, as the seed lab's filters and OVS
        // do: the tunnel device only receives on it, so this narrows nothing real.
        dst_port: masked(t.tp_dst.0, t.tp_dst.1).or(Some(Masked::new(VXLAN_PORT, u16::MAX))),
        tos: masked(t.tos.0, t.tos.1),
        ttl: masked(t.ttl.0, t.ttl.1),
    })
}

struct L3Keys {
    ip_src: ([u8; 16], [u8; 16]),
    ip_dst: ([u8; 16], [u8; 16]),
    ip_proto: (u8, u8),
    ip_tos: (u8, u8),
    ip_ttl: (u8, u8),
    ip_frag: (u8, u8),
    tp_src: (u16, u16),
    tp_dst: (u16, u16),
    tcp_flags: (u16, u16),
    arp_sha: ([u8; 6], [u8; 6]),
    arp_tha: ([u8; 6], [u8; 6]),
}

impl L3Keys {
    /// Refuses any L3/L4 value (for ethertypes flower has no L3 keys for). A field
    /// that does not exist in a packet is zero in its key, so a mask with a zero value
    /// there is always true and needs no flower key.
    fn refuse_any(&self) -> Result<()> {
        let checks: [(&'static str, bool); 11] = [
            ("ip_src", !is_zero(&self.ip_src.0)),
            ("ip_dst", !is_zero(&self.ip_dst.0)),
            ("ip_proto", self.ip_proto.0 != 0),
            ("ip_tos", self.ip_tos.0 != 0),
            ("ip_ttl", self.ip_ttl.0 != 0),
            ("ip_frag", self.ip_frag.0 != 0),
            ("tp_src", self.tp_src.0 != 0),
            ("tp_dst", self.tp_dst.0 != 0),
            ("tcp_flags", self.tcp_flags.0 != 0),
            ("arp_sha", !is_zero(&self.arp_sha.0)),
            ("arp_tha", !is_zero(&self.arp_tha.0)),
        ];
        match checks.iter().find(|(_, bad)| *bad) {
            Some((field, _)) => Err(OffloadError::field(field)),
            None => Ok(()),
        }
    }
}

fn translate_ip(l: &L3Keys, v6: bool, f: &mut FlowerMatch) -> Result<()> {
    if !is_zero(&l.arp_sha.0) {
        return Err(OffloadError::field("arp_sha"));
    }
    if !is_zero(&l.arp_tha.0) {
        return Err(OffloadError::field("arp_tha"));
    }
    f.ip_src = ip_masked(l.ip_src.0, l.ip_src.1, v6, "ip_src")?;
    f.ip_dst = ip_masked(l.ip_dst.0, l.ip_dst.1, v6, "ip_dst")?;
    f.ip_tos = masked(l.ip_tos.0, l.ip_tos.1);
    f.ip_ttl = masked(l.ip_ttl.0, l.ip_ttl.1);
    let (fr, m_fr) = l.ip_frag;
    let m_fr = m_fr & (frag::ANY | frag::LATER);
    if fr & !(frag::ANY | frag::LATER) != 0 || (m_fr & frag::LATER != 0 && m_fr & frag::ANY == 0) {
        return Err(OffloadError::field("ip_frag"));
    }
    f.ip_frag = masked(fr, m_fr);
    f.ip_proto = exact(l.ip_proto.0, l.ip_proto.1, 0xff, "ip_proto")?;
    let l4_any = l.tp_src.0 != 0 || l.tp_dst.0 != 0 || l.tcp_flags.0 != 0;
    match f.ip_proto {
        Some(IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP) => {
            f.l4_src = masked(l.tp_src.0, l.tp_src.1);
            f.l4_dst = masked(l.tp_dst.0, l.tp_dst.1);
            if f.ip_proto == Some(IPPROTO_TCP) {
                f.tcp_flags = masked(l.tcp_flags.0, l.tcp_flags.1);
            } else if l.tcp_flags.0 != 0 {
                return Err(OffloadError::field("tcp_flags"));
            }
        }
        Some(p) if (p == IPPROTO_ICMP && !v6) || (p == IPPROTO_ICMPV6 && v6) => {
            if l.tcp_flags.0 != 0 {
                return Err(OffloadError::field("tcp_flags"));
            }
            f.icmp_type = u8_of(l.tp_src.0, l.tp_src.1, "tp_src")?;
            f.icmp_code = u8_of(l.tp_dst.0, l.tp_dst.1, "tp_dst")?;
        }
        _ if l4_any => {
            let field = if l.tp_src.0 != 0 {
                "tp_src"
            } else if l.tp_dst.0 != 0 {
                "tp_dst"
            } else {
                "tcp_flags"
            };
            return Err(OffloadError::field(field));
        }
        _ => {}
    }
    Ok(())
}

fn translate_arp(l: &L3Keys, f: &mut FlowerMatch) -> Result<()> {
    for (field, bad) in [
        ("ip_tos", l.ip_tos.0 != 0),
        ("ip_ttl", l.ip_ttl.0 != 0),
        ("ip_frag", l.ip_frag.0 != 0),
        ("tp_src", l.tp_src.0 != 0),
        ("tp_dst", l.tp_dst.0 != 0),
        ("tcp_flags", l.tcp_flags.0 != 0),
    ] {
        if bad {
            return Err(OffloadError::field(field));
        }
    }
    f.arp_op = masked(l.ip_proto.0, l.ip_proto.1);
    f.arp_sip = ip_masked(l.ip_src.0, l.ip_src.1, false, "ip_src")?;
    f.arp_tip = ip_masked(l.ip_dst.0, l.ip_dst.1, false, "ip_dst")?;
    f.arp_sha = masked(l.arp_sha.0, l.arp_sha.1);
    f.arp_tha = masked(l.arp_tha.0, l.arp_tha.1);
    Ok(())
}

/// The unspecified address of an IP's family (the placeholder for "resolve the source").
pub fn unspecified_like(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// The action half. `decap`: the ingress is a tunnel device, so the tunnel metadata is
/// dropped first (`tunnel_key unset`).
fn translate_actions(
    actions: &Actions,
    decap: bool,
    ports: &PortTable,
) -> Result<Vec<FlowerAction>> {
    let list = actions.as_slice();
    let last_output = list.iter().rposition(|a| matches!(a, Action::Output(_)));
    let mut out = Vec::with_capacity(list.len() + 1);
    if decap {
        out.push(FlowerAction::TunnelUnset);
    }
    let Some(last_output) = last_output else {
        // No output: whatever the other actions do, the packet is dropped.
        if let Some(Action::Userspace) = list.iter().find(|a| matches!(a, Action::Userspace)) {
            return Err(OffloadError::action("userspace"));
        }
        return Ok(vec![FlowerAction::Drop]);
    };
    let mut pending_tunnel = None;
    // The mark the packet carries so far: the tunnel device routes the outer packet with
    // it, so a tunnel with a mark gets `skbedit mark` first (and a later tunnel of
    // another mark its own).
    let mut mark = 0;
    for (i, a) in list[..=last_output].iter().enumerate() {
        match a {
            Action::Output(p) => {
                let port = ports.get(*p).ok_or(OffloadError::UnknownPort(*p))?;
                if port.kind == PortKind::Tunnel {
                    let t: datapath::TunnelAttrs = pending_tunnel.take().ok_or_else(|| {
                        OffloadError::action(format!("output({p}) to a tunnel without set_tunnel"))
                    })?;
                    if t.mark != mark {
                        out.push(FlowerAction::SetMark(t.mark));
                        mark = t.mark;
                    }
                    out.push(FlowerAction::TunnelSet(tunnel_set(&t)?));
                }
                out.push(if i == last_output {
                    FlowerAction::Redirect(port.ifindex)
                } else {
                    FlowerAction::Mirror(port.ifindex)
                });
            }
            Action::PushVlan { tpid, tci } => out.push(FlowerAction::VlanPush {
                tpid: *tpid,
                vid: tci & vlan::VID_MASK,
                prio: ((tci & vlan::PCP_MASK) >> vlan::PCP_SHIFT) as u8,
            }),
            Action::PopVlan => out.push(FlowerAction::VlanPop),
            Action::SetTunnel(t) => pending_tunnel = Some(*t),
            Action::Userspace => return Err(OffloadError::action("userspace")),
            other => return Err(OffloadError::action(format!("{other:?}"))),
        }
    }
    Ok(out)
}

fn tunnel_set(t: &datapath::TunnelAttrs) -> Result<TunnelKeySet> {
    let datapath::TunnelAttrs {
        vni,
        src,
        dst,
        tos,
        ttl,
        tp_dst,
        csum,
        df,
        mark: _,
    } = *t;
    if vni > 0x00ff_ffff {
        return Err(OffloadError::action("set_tunnel(vni > 24 bits)"));
    }
    Ok(TunnelKeySet {
        id: vni,
        src: src.unwrap_or_else(|| unspecified_like(dst)),
        dst,
        dst_port: tp_dst,
        tos,
        ttl,
        csum,
        df,
    })
}
