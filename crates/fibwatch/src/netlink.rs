//! The only module that speaks netlink: sockets, dumps, requests, and the translation of
//! netlink-packet-route messages into flowd's own [`Change`]s. Malformed or unexpected
//! messages are skipped (and counted), never a panic.

use crate::error::{Error, Result};
use crate::mirror::Kinds;
use crate::model::{
    Address, Change, Family, Link, Mac, Neighbour, NextHop, NudState, Route, RouteKey, RouteKind,
    Rule, RuleAction as OwnRuleAction, SwitchId,
};
use datapath::IfIndex;
use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE, NetlinkPayload};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric,
    RouteNextHopFlags, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, protocols::NETLINK_ROUTE};
use rtnl::split;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};

/// rtnetlink multicast groups fibwatch listens to (`RTNLGRP_*`).
const GROUPS: [u32; 8] = [
    1,  // LINK
    3,  // NEIGH
    5,  // IPV4_IFADDR
    7,  // IPV4_ROUTE
    8,  // IPV4_RULE
    9,  // IPV6_IFADDR
    11, // IPV6_ROUTE
    19, // IPV6_RULE
];

const RECV_BUF: usize = 1 << 20;

/// What one read of the event socket gave.
#[derive(Debug)]
#[non_exhaustive]
pub enum Received {
    /// Changes (possibly none if the datagram held nothing fibwatch mirrors).
    Changes(usize),
    /// Nothing to read now.
    WouldBlock,
    /// The socket overflowed: events were lost.
    Overrun,
}

/// The subscribed, non-blocking event socket.
pub struct EventSocket {
    socket: Socket,
    buf: Vec<u8>,
    /// Messages that could not be decoded.
    pub undecodable: u64,
}

impl std::fmt::Debug for EventSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSocket")
            .field("fd", &self.socket.as_raw_fd())
            .finish()
    }
}

fn sock_err(op: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| rtnl::Error::Socket { op, source }.into()
}

impl EventSocket {
    /// Opens the socket in the calling thread's network namespace and joins the groups.
    pub fn open(rcvbuf: usize) -> Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(sock_err("socket"))?;
        socket.bind_auto().map_err(sock_err("bind"))?;
        for g in GROUPS {
            socket
                .add_membership(g)
                .map_err(sock_err("add_membership"))?;
        }
        if !crate::sys::force_rcvbuf(socket.as_raw_fd(), rcvbuf) {
            socket
                .set_rx_buf_sz(rcvbuf)
                .map_err(sock_err("SO_RCVBUF"))?;
        }
        socket
            .set_non_blocking(true)
            .map_err(sock_err("O_NONBLOCK"))?;
        Ok(EventSocket {
            socket,
            buf: Vec::with_capacity(RECV_BUF),
            undecodable: 0,
        })
    }

    /// The file descriptor, for poll(2).
    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Reads one datagram and appends its changes to `out`.
    pub fn recv(&mut self, out: &mut Vec<Change>) -> Result<Received> {
        self.buf.clear();
        self.buf.reserve(RECV_BUF);
        match self.socket.recv(&mut self.buf, 0) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Received::WouldBlock),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(Received::Overrun),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Received::Changes(0)),
            Err(e) => {
                return Err(rtnl::Error::Socket {
                    op: "recv",
                    source: e,
                }
                .into());
            }
        }
        let before = out.len();
        for msg in split(&self.buf, &mut self.undecodable) {
            if let NetlinkPayload::InnerMessage(inner) = msg.payload {
                out.extend(to_change(inner));
            }
        }
        Ok(Received::Changes(out.len() - before))
    }
}

/// A blocking request socket: dumps, neighbour probes, route and MTU changes (framing,
/// acknowledgements and dump retries are the shared [`rtnl::Requester`]'s).
#[derive(Debug)]
pub struct Requester {
    inner: rtnl::Requester,
}

impl Requester {
    /// Opens a request socket in the calling thread's network namespace.
    pub fn open() -> Result<Self> {
        Ok(Requester {
            inner: rtnl::Requester::open()?,
        })
    }

    /// Dumps one kind of object, translated into changes.
    fn dump(&mut self, what: &'static str, req: RouteNetlinkMessage) -> Result<Vec<Change>> {
        Ok(self
            .inner
            .dump(what, req)?
            .into_iter()
            .filter_map(to_change)
            .collect())
    }

    /// Dumps the kinds asked for, as upserts.
    pub fn dump_kinds(&mut self, kinds: Kinds) -> Result<Vec<Change>> {
        let mut out = Vec::new();
        if kinds.links {
            out.extend(self.dump(
                "links",
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
            )?);
        }
        if kinds.addrs {
            let m = AddressMessage::default();
            out.extend(self.dump("addresses", RouteNetlinkMessage::GetAddress(m))?);
        }
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            if kinds.routes {
                let mut m = RouteMessage::default();
                m.header.address_family = family;
                out.extend(self.dump("routes", RouteNetlinkMessage::GetRoute(m))?);
            }
            if kinds.rules {
                let mut m = RuleMessage::default();
                m.header.family = family;
                out.extend(self.dump("rules", RouteNetlinkMessage::GetRule(m))?);
            }
            if kinds.neighs {
                let mut m = NeighbourMessage::default();
                m.header.family = family;
                out.extend(self.dump("neighbours", RouteNetlinkMessage::GetNeighbour(m))?);
            }
        }
        Ok(out)
    }

    /// Asks the kernel to resolve a neighbour now (RTM_NEWNEIGH with NTF_USE, creating the
    /// entry if needed): the kernel sends ARP/ND solicitations without waiting for traffic.
    pub fn probe_neighbour(&mut self, ifindex: IfIndex, ip: IpAddr) -> Result<()> {
        let mut m = NeighbourMessage::default();
        m.header.family = match ip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        m.header.ifindex = ifindex.0;
        m.header.state = NeighbourState::None;
        m.header.flags = NeighbourFlags::Use;
        m.attributes.push(NeighbourAttribute::Destination(match ip {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        }));
        Ok(self.inner.request(
            "neighbour probe",
            RouteNetlinkMessage::NewNeighbour(m),
            NLM_F_CREATE,
        )?)
    }

    /// Replaces (or adds) a unicast route `dst` via `gateway` out of `oif` in the main
    /// table, as `ip route replace` does; returns once the kernel acknowledged it. For
    /// tools and tests that must know when a route changed (the lab's failover timing).
    pub fn replace_route(&mut self, dst: IpNet, gateway: IpAddr, oif: IfIndex) -> Result<()> {
        let addr = |ip: IpAddr| match ip {
            IpAddr::V4(a) => RouteAddress::Inet(a),
            IpAddr::V6(a) => RouteAddress::Inet6(a),
        };
        let mut m = RouteMessage::default();
        m.header.address_family = match dst {
            IpNet::V4(_) => AddressFamily::Inet,
            IpNet::V6(_) => AddressFamily::Inet6,
        };
        m.header.destination_prefix_length = dst.prefix_len();
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        m.attributes.extend([
            RouteAttribute::Destination(addr(dst.addr())),
            RouteAttribute::Gateway(addr(gateway)),
            RouteAttribute::Oif(oif.0),
        ]);
        Ok(self.inner.request(
            "route replace",
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )?)
    }

    /// Sets a link's MTU (`ip link set DEV mtu N`); returns once the kernel
    /// acknowledged it, or with its refusal (an MTU outside the device's range).
    pub fn set_mtu(&mut self, ifindex: IfIndex, mtu: u32) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = ifindex.0;
        m.attributes.push(LinkAttribute::Mtu(mtu));
        Ok(self
            .inner
            .request("set link mtu", RouteNetlinkMessage::SetLink(m), 0)?)
    }
}

/// Translates one message into a change, if it is about something fibwatch mirrors.
pub fn to_change(msg: RouteNetlinkMessage) -> Option<Change> {
    match msg {
        RouteNetlinkMessage::NewLink(m) => link(&m).map(Change::LinkUp),
        RouteNetlinkMessage::DelLink(m) => (m.header.interface_family == AddressFamily::Unspec
            && m.header.index != 0)
            .then_some(Change::LinkGone(IfIndex(m.header.index))),
        RouteNetlinkMessage::NewAddress(m) => address(&m).map(Change::AddrUp),
        RouteNetlinkMessage::DelAddress(m) => address(&m).map(Change::AddrGone),
        RouteNetlinkMessage::NewRoute(m) => route(&m).map(Change::RouteUp),
        RouteNetlinkMessage::DelRoute(m) => route(&m).map(|r| Change::RouteGone(r.key)),
        RouteNetlinkMessage::NewRule(m) => rule(&m).map(Change::RuleUp),
        RouteNetlinkMessage::DelRule(m) => rule(&m).map(Change::RuleGone),
        RouteNetlinkMessage::NewNeighbour(m) => neighbour(&m).map(Change::NeighUp),
        RouteNetlinkMessage::DelNeighbour(m) => neighbour(&m).map(|n| Change::NeighGone {
            ifindex: n.ifindex,
            ip: n.ip,
        }),
        _ => None,
    }
}

fn mac(bytes: &[u8]) -> Option<Mac> {
    <[u8; 6]>::try_from(bytes).ok()
}

fn family(f: AddressFamily) -> Option<Family> {
    match f {
        AddressFamily::Inet => Some(Family::V4),
        AddressFamily::Inet6 => Some(Family::V6),
        _ => None,
    }
}

fn link(m: &LinkMessage) -> Option<Link> {
    let f = rtnl::LinkFacts::decode(m)?;
    Some(Link {
        index: IfIndex(f.index),
        name: f.name,
        mtu: f.mtu,
        admin_up: f.admin_up,
        oper_up: f.oper_up,
        mac: f.mac,
        switch_id: f.switch_id.map(SwitchId),
    })
}

fn address(m: &AddressMessage) -> Option<Address> {
    let fam = family(m.header.family)?;
    let mut addr = None;
    let mut local = None;
    let mut flags = AddressFlags::from_bits_retain(u32::from(m.header.flags.bits()));
    for a in &m.attributes {
        match a {
            AddressAttribute::Address(ip) => addr = Some(*ip),
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Flags(f) => flags = *f,
            _ => {}
        }
    }
    let addr = match fam {
        Family::V4 => local.or(addr)?,
        Family::V6 => addr.or(local)?,
    };
    Some(Address {
        ifindex: IfIndex(m.header.index),
        addr,
        prefix_len: m.header.prefix_len,
        scope: u8::from(m.header.scope),
        secondary: flags.contains(AddressFlags::Secondary),
        tentative: flags.intersects(AddressFlags::Tentative | AddressFlags::Dadfailed),
        deprecated: flags.contains(AddressFlags::Deprecated),
    })
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

fn unspecified(f: Family) -> IpAddr {
    match f {
        Family::V4 => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        Family::V6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

fn route_kind(t: RouteType) -> RouteKind {
    match t {
        RouteType::Unicast => RouteKind::Unicast,
        RouteType::Local => RouteKind::Local,
        RouteType::Broadcast => RouteKind::Broadcast,
        RouteType::Anycast => RouteKind::Anycast,
        RouteType::Multicast => RouteKind::Multicast,
        RouteType::BlackHole => RouteKind::Blackhole,
        RouteType::Unreachable => RouteKind::Unreachable,
        RouteType::Prohibit => RouteKind::Prohibit,
        RouteType::Throw => RouteKind::Throw,
        other => RouteKind::Other(u8::from(other)),
    }
}

fn route(m: &RouteMessage) -> Option<Route> {
    let fam = family(m.header.address_family)?;
    if m.header.flags.contains(RouteFlags::Cloned) {
        return None;
    }
    let h = &m.header;
    let mut table = u32::from(h.table);
    let (mut dst, mut src, mut metric) = (None, None, 0);
    let (mut oif, mut gateway, mut prefsrc, mut mtu) = (None, None, None, None);
    let mut multipath = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => dst = route_ip(d),
            RouteAttribute::Source(s) => src = route_ip(s),
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Oif(i) => oif = Some(IfIndex(*i)),
            RouteAttribute::Gateway(g) => gateway = route_ip(g),
            RouteAttribute::PrefSource(p) => prefsrc = route_ip(p),
            RouteAttribute::Metrics(ms) => {
                for x in ms {
                    if let RouteMetric::Mtu(v) = x {
                        mtu = Some(*v);
                    }
                }
            }
            RouteAttribute::MultiPath(hops) => multipath = Some(hops),
            _ => {}
        }
    }
    let dst = IpNet::new(dst.unwrap_or(unspecified(fam)), h.destination_prefix_length)
        .ok()?
        .trunc();
    let src_prefix = match src {
        Some(s) if h.source_prefix_length > 0 => {
            Some(IpNet::new(s, h.source_prefix_length).ok()?.trunc())
        }
        _ => None,
    };
    let nexthops = match multipath {
        Some(hops) => hops
            .iter()
            .map(|nh| NextHop {
                ifindex: (nh.interface_index != 0).then_some(IfIndex(nh.interface_index)),
                gateway: nh.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(g) => route_ip(g),
                    _ => None,
                }),
                weight: u32::from(nh.hops) + 1,
                dead: nh.flags.contains(RouteNextHopFlags::Dead),
            })
            .collect(),
        None if oif.is_some() || gateway.is_some() => vec![NextHop {
            ifindex: oif,
            gateway,
            weight: 1,
            dead: h.flags.contains(RouteFlags::Dead),
        }],
        None => Vec::new(),
    };
    Some(Route {
        key: RouteKey {
            table,
            dst,
            tos: h.tos,
            metric,
        },
        kind: route_kind(h.kind),
        scope: u8::from(h.scope),
        src_prefix,
        prefsrc,
        mtu,
        nexthops,
    })
}

fn rule(m: &RuleMessage) -> Option<Rule> {
    let fam = family(m.header.family)?;
    let h = &m.header;
    let mut r = Rule {
        action: match h.action {
            RuleAction::ToTable => OwnRuleAction::ToTable,
            RuleAction::Goto => OwnRuleAction::Goto,
            RuleAction::Nop => OwnRuleAction::Nop,
            RuleAction::Blackhole => OwnRuleAction::Blackhole,
            RuleAction::Unreachable => OwnRuleAction::Unreachable,
            RuleAction::Prohibit => OwnRuleAction::Prohibit,
            other => OwnRuleAction::Other(u8::from(other)),
        },
        tos: h.tos,
        invert: h.flags.contains(RuleFlags::Invert),
        ..Rule::to_table(fam, 0, u32::from(h.table))
    };
    let mut mask_seen = false;
    for a in &m.attributes {
        match a {
            RuleAttribute::Table(t) => r.table = *t,
            RuleAttribute::Priority(p) => r.priority = *p,
            RuleAttribute::Goto(g) => r.goto = Some(*g),
            RuleAttribute::Source(ip) => r.src = IpNet::new(*ip, h.src_len).ok().map(|n| n.trunc()),
            RuleAttribute::Destination(ip) => {
                r.dst = IpNet::new(*ip, h.dst_len).ok().map(|n| n.trunc());
            }
            RuleAttribute::FwMark(v) => r.fwmark = *v,
            RuleAttribute::FwMask(v) => {
                r.fwmask = *v;
                mask_seen = true;
            }
            RuleAttribute::Iifname(n) => r.iif = Some(n.clone()),
            RuleAttribute::Oifname(n) => r.oif = Some(n.clone()),
            RuleAttribute::IpProtocol(p) => r.ip_proto = Some(u8::from(*p)),
            RuleAttribute::SourcePortRange(p) => r.sport = Some((p.start, p.end)),
            RuleAttribute::DestinationPortRange(p) => r.dport = Some((p.start, p.end)),
            RuleAttribute::UidRange(u) => r.uid_range = Some((u.start, u.end)),
            RuleAttribute::SuppressPrefixLen(v) if *v != u32::MAX => {
                r.suppress_prefixlen = Some(*v);
            }
            RuleAttribute::SuppressIfGroup(v) if *v != u32::MAX => r.unsupported = true,
            RuleAttribute::TunId(v) if *v != 0 => r.unsupported = true,
            RuleAttribute::L3MDev(true) => r.unsupported = true,
            _ => {}
        }
    }
    if r.fwmark != 0 && !mask_seen {
        r.fwmask = u32::MAX;
    }
    Some(r)
}

fn neighbour(m: &NeighbourMessage) -> Option<Neighbour> {
    family(m.header.family)?;
    if m.header.flags.contains(NeighbourFlags::Proxy) {
        return None;
    }
    let mut ip = None;
    let mut lladdr = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => ip = Some(IpAddr::V4(*v)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v)) => {
                ip = Some(IpAddr::V6(*v));
            }
            NeighbourAttribute::LinkLayerAddress(b) => lladdr = mac(b),
            _ => {}
        }
    }
    let ip = ip?;
    if ip.is_multicast() {
        // Created silently (NOARP) by the kernel; never a unicast next hop.
        return None;
    }
    Some(Neighbour {
        ifindex: IfIndex(m.header.ifindex),
        ip,
        state: NudState(u16::from(m.header.state)),
        mac: lladdr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_never_panics() {
        let mut skipped = 0;
        for len in 0..64u8 {
            let mut buf: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37)).collect();
            if buf.len() >= 4 {
                buf[..4].copy_from_slice(&u32::from(len).to_ne_bytes());
            }
            for m in split(&buf, &mut skipped) {
                if let NetlinkPayload::InnerMessage(inner) = m.payload {
                    let _ = to_change(inner);
                }
            }
        }
    }

    #[test]
    fn route_message_translates() {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.destination_prefix_length = 24;
        m.header.table = 254;
        m.header.kind = RouteType::Unicast;
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(
                [10, 0, 0, 7].into(),
            )));
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(
                [10, 1, 0, 2].into(),
            )));
        m.attributes.push(RouteAttribute::Oif(4));
        let Some(Change::RouteUp(r)) = to_change(RouteNetlinkMessage::NewRoute(m)) else {
            panic!("not a route");
        };
        assert_eq!(r.key.dst, "10.0.0.0/24".parse::<IpNet>().unwrap());
        assert_eq!(r.nexthops[0].ifindex, Some(IfIndex(4)));
        assert_eq!(r.nexthops[0].gateway, Some("10.1.0.2".parse().unwrap()));
    }
}
