//! From TOML text to a [`Config`]: the spanned document deserialized section by section
//! (each `[[port]]`, `[[network]]`, `[[rule]]` on its own), then built into the model
//! with the references between sections resolved, every mistake reported at its line.

use super::check::{SeenPorts, check_datapath, check_evpn_section, check_offload, check_port};
use super::*;
use datapath::flow::Mac;
use datapath::{Megaflow, PortId};
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a metrics section")]
pub(super) struct RawMetrics {
    pub(super) listen: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a control section")]
pub(super) struct RawControl {
    pub(super) socket: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a discovery section")]
pub(super) struct RawDiscovery {
    pub(super) pf: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a port table")]
pub(super) struct RawPort {
    pub(super) name: Spanned<String>,
    pub(super) role: PortRole,
    pub(super) id: Option<Spanned<u32>>,
    pub(super) vf: Option<Spanned<u32>>,
    pub(super) switch_id: Option<Spanned<String>>,
    pub(super) mtu: Option<Spanned<u32>>,
    pub(super) ring_kib: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a static MAC table")]
pub(super) struct RawStaticMac {
    pub(super) mac: Spanned<String>,
    pub(super) vtep: Option<Spanned<String>>,
    pub(super) port: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a network table")]
pub(super) struct RawNetwork {
    pub(super) name: Spanned<String>,
    pub(super) vni: Option<Spanned<u32>>,
    pub(super) vlan: Option<Spanned<u16>>,
    #[serde(default)]
    pub(super) members: Vec<Spanned<String>>,
    pub(super) local_vtep: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) remote_vteps: Vec<Spanned<String>>,
    pub(super) fwmark: Option<Spanned<u32>>,
    pub(super) df: Option<Spanned<bool>>,
    pub(super) udp_csum: Option<Spanned<bool>>,
    #[serde(default)]
    pub(super) static_macs: Vec<Spanned<RawStaticMac>>,
    pub(super) evpn: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a rule table")]
pub(super) struct RawRule {
    pub(super) priority: Spanned<u16>,
    #[serde(rename = "match")]
    pub(super) matches: Spanned<String>,
    pub(super) actions: Spanned<String>,
}

/// What deserialized, section by section, with the spans validation needs.
#[derive(Default)]
pub(super) struct Raw {
    pub(super) datapath: Option<Spanned<DatapathConfig>>,
    pub(super) offload: Option<Spanned<OffloadConfig>>,
    pub(super) metrics: Option<RawMetrics>,
    pub(super) control: Option<RawControl>,
    pub(super) discovery: Option<RawDiscovery>,
    pub(super) evpn: Option<Spanned<EvpnConfig>>,
    pub(super) ports: Vec<Spanned<RawPort>>,
    pub(super) networks: Vec<Spanned<RawNetwork>>,
    pub(super) rules: Vec<Spanned<RawRule>>,
}

pub(super) fn de_one<'i, T: Deserialize<'i>>(
    value: Spanned<DeValue<'i>>,
    errs: &mut Errors,
) -> Option<T> {
    match T::deserialize(ValueDeserializer::from(value)) {
        Ok(v) => Some(v),
        Err(e) => {
            errs.toml(&e);
            None
        }
    }
}

pub(super) fn de_array<'i, T: Deserialize<'i>>(
    key: &str,
    value: Spanned<DeValue<'i>>,
    errs: &mut Errors,
) -> Vec<Spanned<T>> {
    let span = value.span();
    match value.into_inner() {
        DeValue::Array(items) => items
            .into_iter()
            .filter_map(|item| de_one::<Spanned<T>>(item, errs))
            .collect(),
        _ => {
            errs.at(
                span,
                format!("`{key}` must be an array of tables: write `[[{key}]]`"),
            );
            Vec::new()
        }
    }
}

pub(super) const SECTIONS: &str =
    "datapath, offload, metrics, control, discovery, evpn, port, network, rule";

pub(super) fn parse_raw<'i>(root: DeTable<'i>, errs: &mut Errors) -> Raw {
    let mut raw = Raw::default();
    for (key, value) in root {
        match key.get_ref().as_ref() {
            "datapath" => raw.datapath = de_one(value, errs),
            "offload" => raw.offload = de_one(value, errs),
            "metrics" => raw.metrics = de_one(value, errs),
            "control" => raw.control = de_one(value, errs),
            "discovery" => raw.discovery = de_one(value, errs),
            "evpn" => raw.evpn = de_one(value, errs),
            "port" => raw.ports = de_array("port", value, errs),
            "network" => raw.networks = de_array("network", value, errs),
            "rule" => raw.rules = de_array("rule", value, errs),
            other => errs.at(
                key.span(),
                format!("unknown section `{other}`, expected one of {SECTIONS}"),
            ),
        }
    }
    raw
}

// ---------------------------------------------------------------------------------------
// Validation

pub(super) fn parse_ip(s: &Spanned<String>, what: &str, errs: &mut Errors) -> Option<IpAddr> {
    match s.get_ref().parse() {
        Ok(ip) => Some(ip),
        Err(_) => {
            errs.at(
                s.span(),
                format!("bad IP address `{}` for {what}", s.get_ref()),
            );
            None
        }
    }
}

/// A VTEP address: a unicast address a tunnel can be sent to or from. The unspecified
/// address, broadcast, multicast (flowd replicates head-end, it joins no group) and
/// IPv4-mapped IPv6 addresses are refused.
pub(super) fn parse_vtep(s: &Spanned<String>, what: &str, errs: &mut Errors) -> Option<IpAddr> {
    let ip = parse_ip(s, what, errs)?;
    let why = match ip {
        _ if ip.is_unspecified() => Some("the unspecified address"),
        _ if ip.is_multicast() => {
            Some("a multicast address (flowd replicates to each remote VTEP; it joins no group)")
        }
        IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            Some("an IPv4-mapped IPv6 address (write the IPv4 address)")
        }
        _ => None,
    };
    match why {
        Some(why) => {
            errs.at(
                s.span(),
                format!("{what}: `{}` is {why}, not a VTEP", s.get_ref()),
            );
            None
        }
        None => Some(ip),
    }
}

pub(super) fn parse_switch_id(s: &Spanned<String>, errs: &mut Errors) -> Option<String> {
    let raw = s.get_ref().trim();
    let hex = raw
        .strip_prefix("0x")
        .or_else(|| raw.strip_prefix("0X"))
        .unwrap_or(raw)
        .to_ascii_lowercase();
    let ok = !hex.is_empty()
        && hex.len().is_multiple_of(2)
        && hex.len() <= 2 * MAX_SWITCH_ID_BYTES
        && hex.bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Some(hex)
    } else {
        errs.at(
            s.span(),
            format!(
                "bad switch_id `{raw}`: expected an even number of hex digits (at most {} bytes), \
                 as in /sys/class/net/DEV/phys_switch_id",
                MAX_SWITCH_ID_BYTES
            ),
        );
        None
    }
}

/// Validates ports; returns them with ids assigned, and name -> (role, span).
pub(super) fn build_ports(raw: &[Spanned<RawPort>], errs: &mut Errors) -> Vec<PortConfig> {
    let mut seen = SeenPorts::default();
    for p in raw {
        check_port(p.get_ref(), &mut seen, errs);
    }
    let mut next = 1u32;
    let mut out = Vec::with_capacity(raw.len());
    for p in raw {
        let p = p.get_ref();
        let (id, explicit) = match &p.id {
            Some(id) => (*id.get_ref(), true),
            None => {
                while seen.ids.contains_key(&next) {
                    next += 1;
                }
                next += 1;
                (next - 1, false)
            }
        };
        out.push(PortConfig {
            name: p.name.get_ref().clone(),
            role: p.role,
            id: PortId(id),
            id_explicit: explicit,
            vf: p.vf.as_ref().map(|v| *v.get_ref()),
            switch_id: p.switch_id.as_ref().and_then(|s| parse_switch_id(s, errs)),
            mtu: p.mtu.as_ref().map(|m| *m.get_ref()),
            ring_kib: p.ring_kib.as_ref().map(|r| *r.get_ref()),
        });
    }
    out
}

/// What network validation needs to know about ports.
pub(super) struct PortIndex<'a> {
    pub(super) roles: HashMap<&'a str, PortRole>,
    pub(super) has_tunnel: bool,
    /// Set once "no tunnel port" has been reported, so it is reported once.
    pub(super) tunnel_reported: std::cell::Cell<bool>,
    pub(super) discovery: bool,
}

pub(super) fn build_segment(n: &Spanned<RawNetwork>, errs: &mut Errors) -> Option<Segment> {
    let r = n.get_ref();
    let name = r.name.get_ref();
    match (&r.vni, &r.vlan) {
        (Some(vni), None) => {
            if *vni.get_ref() == 0 || *vni.get_ref() > 0x00ff_ffff {
                errs.at(
                    vni.span(),
                    format!("vni {} out of range 1..=16777215", vni.get_ref()),
                );
                return None;
            }
            Some(Segment::Vni(*vni.get_ref()))
        }
        (None, Some(vlan)) => {
            if !(1..=4094).contains(vlan.get_ref()) {
                errs.at(
                    vlan.span(),
                    format!("vlan {} out of range 1..=4094", vlan.get_ref()),
                );
                return None;
            }
            Some(Segment::Vlan(*vlan.get_ref()))
        }
        (Some(_), Some(vlan)) => {
            errs.at(
                vlan.span(),
                format!("network `{name}` has both `vni` and `vlan`; give one"),
            );
            None
        }
        (None, None) => {
            errs.at(
                r.name.span(),
                format!("network `{name}` has neither `vni` nor `vlan`; give one"),
            );
            None
        }
    }
}

pub(super) fn build_members(r: &RawNetwork, ports: &PortIndex, errs: &mut Errors) -> Vec<String> {
    let mut seen = BTreeSet::new();
    for m in &r.members {
        let name = m.get_ref().as_str();
        match ports.roles.get(name) {
            Some(PortRole::Representor) => {}
            Some(role) => errs.at(
                m.span(),
                format!("member `{name}` is {}, not a representor", role.with_article()),
            ),
            None if ports.discovery => {}
            None => errs.at(
                m.span(),
                format!("member `{name}` is not a declared port (declare it in a [[port]] with role = \"representor\", or use [discovery])"),
            ),
        }
        if !seen.insert(name) {
            errs.at(m.span(), format!("member `{name}` listed twice"));
        }
    }
    r.members.iter().map(|m| m.get_ref().clone()).collect()
}

pub(super) fn build_static_macs(
    r: &RawNetwork,
    segment: Option<Segment>,
    ports: &PortIndex,
    errs: &mut Errors,
) -> Vec<StaticMac> {
    let mut out = Vec::new();
    for s in &r.static_macs {
        let e = s.get_ref();
        let mac = match e.mac.get_ref().parse::<Mac>() {
            Ok(m) if m.0[0] & 1 == 0 => Some(m),
            Ok(_) => {
                errs.at(
                    e.mac.span(),
                    format!("static MAC `{}` is a multicast address", e.mac.get_ref()),
                );
                None
            }
            Err(_) => {
                errs.at(
                    e.mac.span(),
                    format!(
                        "bad MAC address `{}` (expected xx:xx:xx:xx:xx:xx)",
                        e.mac.get_ref()
                    ),
                );
                None
            }
        };
        let location = match (&e.vtep, &e.port) {
            (Some(v), None) => {
                if matches!(segment, Some(Segment::Vlan(_))) {
                    errs.at(v.span(), "a static MAC behind a VTEP needs a VNI network");
                }
                parse_ip(v, "static MAC vtep", errs).map(MacLocation::Vtep)
            }
            (None, Some(p)) => {
                let name = p.get_ref().as_str();
                if !ports.roles.contains_key(name) && !ports.discovery {
                    errs.at(
                        p.span(),
                        format!("static MAC port `{name}` is not a declared port"),
                    );
                }
                Some(MacLocation::Port(name.to_string()))
            }
            _ => {
                errs.at(
                    s.span(),
                    "a static MAC needs exactly one of `vtep` and `port`",
                );
                None
            }
        };
        if let (Some(mac), Some(location)) = (mac, location) {
            out.push(StaticMac { mac, location });
        }
    }
    out
}

pub(super) fn build_network(
    n: &Spanned<RawNetwork>,
    ports: &PortIndex,
    errs: &mut Errors,
) -> Option<NetworkConfig> {
    let r = n.get_ref();
    let name = r.name.get_ref();
    let segment = build_segment(n, errs);
    let members = build_members(r, ports, errs);
    let local_vtep = r
        .local_vtep
        .as_ref()
        .and_then(|v| parse_vtep(v, "local_vtep", errs));
    let remote_vteps: Vec<IpAddr> = r
        .remote_vteps
        .iter()
        .filter_map(|v| parse_vtep(v, "remote_vteps", errs))
        .collect();
    match segment {
        Some(Segment::Vni(_)) if !ports.has_tunnel && !ports.tunnel_reported.replace(true) => {
            errs.at(
                r.vni.as_ref().map_or(r.name.span(), |v| v.span()),
                format!("network `{name}` has a vni but no port has role = \"tunnel\""),
            );
        }
        Some(Segment::Vni(_)) => {}
        Some(Segment::Vlan(_)) => {
            for (key, span) in [
                ("fwmark", r.fwmark.as_ref().map(|v| v.span())),
                ("df", r.df.as_ref().map(|v| v.span())),
                ("udp_csum", r.udp_csum.as_ref().map(|v| v.span())),
            ] {
                if let Some(span) = span {
                    errs.at(
                        span,
                        format!("`{key}` on network `{name}`, which is a VLAN network"),
                    );
                }
            }
            if let Some(v) = &r.local_vtep {
                errs.at(
                    v.span(),
                    format!("`local_vtep` on network `{name}`, which is a VLAN network"),
                );
            }
            if let Some(v) = r.remote_vteps.first() {
                errs.at(
                    v.span(),
                    format!("`remote_vteps` on network `{name}`, which is a VLAN network"),
                );
            }
        }
        None => {}
    }
    if let (Some(local), Some(v)) = (local_vtep, remote_vteps.first())
        && local.is_ipv4() != v.is_ipv4()
    {
        errs.at(
            r.remote_vteps[0].span(),
            format!("remote VTEP {v} and local_vtep {local} are not the same IP version"),
        );
    }
    let static_macs = build_static_macs(r, segment, ports, errs);
    let evpn = check_evpn(r, segment, local_vtep, errs);
    Some(NetworkConfig {
        name: name.clone(),
        segment: segment?,
        members,
        local_vtep,
        remote_vteps,
        fwmark: r.fwmark.as_ref().map(|m| *m.get_ref()).filter(|m| *m != 0),
        df: r.df.as_ref().map(|v| *v.get_ref()),
        udp_csum: r.udp_csum.as_ref().map(|v| *v.get_ref()),
        static_macs,
        evpn,
    })
}

/// `evpn = true` needs a VNI network with an IPv4 `local_vtep` (the VTEP zebra
/// announces; FRR's EVPN speaks IPv4 VTEPs).
pub(super) fn check_evpn(
    r: &RawNetwork,
    segment: Option<Segment>,
    local_vtep: Option<IpAddr>,
    errs: &mut Errors,
) -> bool {
    let Some(e) = r.evpn.as_ref().filter(|e| *e.get_ref()) else {
        return false;
    };
    let name = r.name.get_ref();
    match (segment, local_vtep) {
        (Some(Segment::Vlan(_)), _) => errs.at(
            e.span(),
            format!("`evpn` on network `{name}`, which is a VLAN network"),
        ),
        (Some(Segment::Vni(_)), None) => errs.at(
            e.span(),
            format!("network `{name}` has `evpn = true` but no `local_vtep` (the VTEP zebra announces)"),
        ),
        (Some(Segment::Vni(_)), Some(IpAddr::V6(ip))) => errs.at(
            e.span(),
            format!("network `{name}`: `evpn` needs an IPv4 `local_vtep` (FRR's EVPN VTEPs are IPv4), not {ip}"),
        ),
        _ => {}
    }
    true
}

pub(super) fn build_networks(
    raw: &[Spanned<RawNetwork>],
    ports: &PortIndex,
    errs: &mut Errors,
) -> Vec<NetworkConfig> {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut segments: HashMap<Segment, usize> = HashMap::new();
    let mut members: HashMap<&str, (&str, usize)> = HashMap::new();
    let mut out = Vec::new();
    for n in raw {
        let r = n.get_ref();
        for m in &r.members {
            let (port, net) = (m.get_ref().as_str(), r.name.get_ref().as_str());
            match members.get(port) {
                Some((other, first)) if *other != net => {
                    let l = errs.line(*first);
                    errs.at(
                        m.span(),
                        format!(
                            "representor `{port}` is already a member of network `{other}` (line {l}): a representor belongs to one network"
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    members.insert(port, (net, m.span().start));
                }
            }
        }
        if let Some(first) = names.insert(r.name.get_ref(), r.name.span().start) {
            let l = errs.line(first);
            errs.at(
                r.name.span(),
                format!(
                    "duplicate network name `{}` (first on line {l})",
                    r.name.get_ref()
                ),
            );
        }
        let Some(net) = build_network(n, ports, errs) else {
            continue;
        };
        let seg_span = match net.segment {
            Segment::Vni(_) => r.vni.as_ref().map(|v| v.span()),
            Segment::Vlan(_) => r.vlan.as_ref().map(|v| v.span()),
        }
        .unwrap_or(r.name.span());
        if let Some(first) = segments.insert(net.segment, seg_span.start) {
            let l = errs.line(first);
            errs.at(
                seg_span,
                format!("duplicate {} (first on line {l})", net.segment),
            );
        }
        out.push(net);
    }
    out
}

pub(super) fn build_rules(
    raw: &[Spanned<RawRule>],
    tunnel: Option<PortId>,
    errs: &mut Errors,
) -> Vec<RuleConfig> {
    let mut keys: HashMap<(u16, Megaflow), usize> = HashMap::new();
    let mut out = Vec::new();
    for r in raw {
        let r = r.get_ref();
        let matches = match r.matches.get_ref().parse::<Megaflow>() {
            Ok(m) => Some(m),
            Err(e) => {
                errs.at(
                    r.matches.span(),
                    format!("bad rule match `{}`: {e}", r.matches.get_ref()),
                );
                None
            }
        };
        let actions = match r.actions.get_ref().parse::<RuleActionsConfig>() {
            Ok(a) => Some(a),
            Err(e) => {
                errs.at(
                    r.actions.span(),
                    format!("bad rule actions `{}`: {e}", r.actions.get_ref()),
                );
                None
            }
        };
        let (Some(matches), Some(actions)) = (matches, actions) else {
            continue;
        };
        let priority = *r.priority.get_ref();
        if let Err(e) = actions.to_rule_actions(tunnel) {
            errs.at(
                r.actions.span(),
                format!("rule at priority {priority}: {e}"),
            );
        }
        if let Some(first) = keys.insert((priority, matches), r.matches.span().start) {
            let l = errs.line(first);
            errs.at(
                r.matches.span(),
                format!(
                    "duplicate rule: priority {priority} with the same match (first on line {l})"
                ),
            );
        }
        out.push(RuleConfig {
            priority,
            matches,
            actions,
        });
    }
    out
}

pub(super) fn build(raw: Raw, errs: &mut Errors) -> Config {
    let metrics = raw
        .metrics
        .as_ref()
        .and_then(|m| match m.listen.get_ref().parse() {
            Ok(listen) => Some(MetricsConfig { listen }),
            Err(_) => {
                errs.at(
                    m.listen.span(),
                    format!(
                        "bad metrics listen address `{}` (expected IP:PORT, e.g. 127.0.0.1:9369)",
                        m.listen.get_ref()
                    ),
                );
                None
            }
        });
    let control = match &raw.control {
        Some(c) if !c.socket.get_ref().starts_with('/') => {
            errs.at(
                c.socket.span(),
                format!(
                    "control socket `{}` must be an absolute path",
                    c.socket.get_ref()
                ),
            );
            ControlConfig::default()
        }
        Some(c) => ControlConfig {
            socket: PathBuf::from(c.socket.get_ref()),
        },
        None => ControlConfig::default(),
    };
    let discovery = raw.discovery.as_ref().map(|d| DiscoveryConfig {
        pf: d.pf.get_ref().clone(),
    });
    let datapath = match raw.datapath {
        Some(d) => {
            check_datapath(d.get_ref(), d.span(), errs);
            d.into_inner()
        }
        None => DatapathConfig::default(),
    };
    let ports = build_ports(&raw.ports, errs);
    let index = PortIndex {
        roles: ports.iter().map(|p| (p.name.as_str(), p.role)).collect(),
        has_tunnel: ports.iter().any(|p| p.role == PortRole::Tunnel),
        tunnel_reported: std::cell::Cell::new(false),
        discovery: discovery.is_some(),
    };
    let networks = build_networks(&raw.networks, &index, errs);
    let tunnel = ports
        .iter()
        .find(|p| p.role == PortRole::Tunnel)
        .map(|p| p.id);
    let rules = build_rules(&raw.rules, tunnel, errs);
    let evpn = raw.evpn.map_or_else(EvpnConfig::default, |e| {
        check_evpn_section(e.get_ref(), e.span(), errs);
        e.into_inner()
    });
    let offload = raw.offload.map_or_else(OffloadConfig::default, |o| {
        check_offload(o.get_ref(), o.span(), errs);
        o.into_inner()
    });
    Config {
        datapath,
        offload,
        metrics,
        control,
        discovery,
        evpn,
        ports,
        networks,
        rules,
    }
}
