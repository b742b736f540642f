//! flowd's own view of the kernel's routing state: links, addresses, routes, policy rules
//! and neighbours, free of netlink types (those stay in [`crate::netlink`]).

use datapath::IfIndex;
use ipnet::IpNet;
use std::net::IpAddr;

pub use vocab::{Mac, SwitchId};

/// Address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Its index.
    pub index: IfIndex,
    /// Its name.
    pub name: String,
    /// Its MTU.
    pub mtu: u32,
    /// Administratively up (IFF_UP).
    pub admin_up: bool,
    /// Carrier up (IFF_LOWER_UP).
    pub oper_up: bool,
    /// Its MAC address, if it is an Ethernet-like device.
    pub mac: Option<Mac>,
    /// The eswitch it belongs to, as the kernel reports it.
    pub switch_id: Option<SwitchId>,
}

impl Link {
    /// Up both administratively and in carrier.
    pub fn is_up(&self) -> bool {
        self.admin_up && self.oper_up
    }
}

/// Route and address scopes (rtnetlink `RT_SCOPE_*`).
pub mod scope {
    /// Global.
    pub const UNIVERSE: u8 = 0;
    /// Interior.
    pub const SITE: u8 = 200;
    /// On-link.
    pub const LINK: u8 = 253;
    /// This host.
    pub const HOST: u8 = 254;
}

/// An interface address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Address {
    /// The interface.
    pub ifindex: IfIndex,
    /// The local address.
    pub addr: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// Its scope (`scope::*`).
    pub scope: u8,
    /// IFA_F_SECONDARY.
    pub secondary: bool,
    /// Not usable as a source yet or any more (tentative, DAD failed).
    pub tentative: bool,
    /// IFA_F_DEPRECATED.
    pub deprecated: bool,
}

impl Address {
    /// True if `ip` is in this address's subnet.
    pub fn covers(&self, ip: &IpAddr) -> bool {
        IpNet::new(self.addr, self.prefix_len).is_ok_and(|n| n.contains(ip))
    }
}

/// What a route does with matching packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RouteKind {
    /// Forward (directly or via gateways).
    Unicast,
    /// Deliver locally.
    Local,
    /// Broadcast.
    Broadcast,
    /// Anycast.
    Anycast,
    /// Multicast.
    Multicast,
    /// Drop silently.
    Blackhole,
    /// Refuse with host unreachable.
    Unreachable,
    /// Refuse administratively.
    Prohibit,
    /// Stop looking in this table; the rule walk continues.
    Throw,
    /// Anything else.
    Other(u8),
}

/// The identity of a route in the kernel (what `ip route replace` replaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey {
    /// Routing table id.
    pub table: u32,
    /// Destination prefix (normalised).
    pub dst: IpNet,
    /// TOS selector.
    pub tos: u8,
    /// Metric (`RTA_PRIORITY`).
    pub metric: u32,
}

/// One next hop of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    /// Egress interface.
    pub ifindex: Option<IfIndex>,
    /// Gateway, if not directly connected.
    pub gateway: Option<IpAddr>,
    /// ECMP weight (1..=256).
    pub weight: u32,
    /// RTNH_F_DEAD: not usable.
    pub dead: bool,
}

/// A route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Identity.
    pub key: RouteKey,
    /// Type.
    pub kind: RouteKind,
    /// Scope (`scope::*`).
    pub scope: u8,
    /// Source prefix selector (IPv6 source routing).
    pub src_prefix: Option<IpNet>,
    /// Preferred source address.
    pub prefsrc: Option<IpAddr>,
    /// MTU metric.
    pub mtu: Option<u32>,
    /// Next hops (one unless multipath).
    pub nexthops: Vec<NextHop>,
}

/// What a policy rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RuleAction {
    /// Look up a table.
    ToTable,
    /// Jump to the rule with this priority (or the next one after).
    Goto,
    /// Do nothing.
    Nop,
    /// Drop.
    Blackhole,
    /// Refuse, unreachable.
    Unreachable,
    /// Refuse, prohibited.
    Prohibit,
    /// Anything else (never matches).
    Other(u8),
}

/// A policy routing rule (`ip rule`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule {
    /// Family.
    pub family: Family,
    /// Priority (lower first).
    pub priority: u32,
    /// Action.
    pub action: RuleAction,
    /// Table for [`RuleAction::ToTable`].
    pub table: u32,
    /// Goto target priority.
    pub goto: Option<u32>,
    /// `from` selector.
    pub src: Option<IpNet>,
    /// `to` selector.
    pub dst: Option<IpNet>,
    /// `tos` selector.
    pub tos: u8,
    /// `fwmark` value.
    pub fwmark: u32,
    /// `fwmark` mask (0 when no fwmark selector).
    pub fwmask: u32,
    /// `iif` selector.
    pub iif: Option<String>,
    /// `oif` selector.
    pub oif: Option<String>,
    /// `not`.
    pub invert: bool,
    /// `ipproto` selector.
    pub ip_proto: Option<u8>,
    /// `sport` range.
    pub sport: Option<(u16, u16)>,
    /// `dport` range.
    pub dport: Option<(u16, u16)>,
    /// `uidrange`.
    pub uid_range: Option<(u32, u32)>,
    /// `suppress_prefixlength`.
    pub suppress_prefixlen: Option<u32>,
    /// Selectors fibwatch does not evaluate (tun_id, l3mdev, suppress_ifgroup, unknown
    /// attributes): such a rule never matches a tunnel lookup.
    pub unsupported: bool,
}

/// A neighbour's reachability state (`NUD_*` bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NudState(pub u16);

impl Rule {
    /// A rule without selectors sending every lookup of `family` to `table` at
    /// `priority` (the kernel's own `lookup main` is `to_table(V4, 32766, 254)`).
    pub fn to_table(family: Family, priority: u32, table: u32) -> Self {
        Self {
            family,
            priority,
            action: RuleAction::ToTable,
            table,
            goto: None,
            src: None,
            dst: None,
            tos: 0,
            fwmark: 0,
            fwmask: 0,
            iif: None,
            oif: None,
            invert: false,
            ip_proto: None,
            sport: None,
            dport: None,
            uid_range: None,
            suppress_prefixlen: None,
            unsupported: false,
        }
    }
}

impl NudState {
    /// NUD_INCOMPLETE.
    pub const INCOMPLETE: NudState = NudState(0x01);
    /// NUD_REACHABLE.
    pub const REACHABLE: NudState = NudState(0x02);
    /// NUD_STALE.
    pub const STALE: NudState = NudState(0x04);
    /// NUD_DELAY.
    pub const DELAY: NudState = NudState(0x08);
    /// NUD_PROBE.
    pub const PROBE: NudState = NudState(0x10);
    /// NUD_FAILED.
    pub const FAILED: NudState = NudState(0x20);
    /// NUD_NOARP.
    pub const NOARP: NudState = NudState(0x40);
    /// NUD_PERMANENT.
    pub const PERMANENT: NudState = NudState(0x80);

    /// NUD_VALID: the link-layer address can be used (what hardware encap needs).
    pub fn is_valid(self) -> bool {
        self.0 & 0xde != 0
    }

    /// Resolution is already under way (no need to probe again).
    pub fn is_resolving(self) -> bool {
        self.0 & (Self::INCOMPLETE.0 | Self::PROBE.0 | Self::DELAY.0) != 0
    }
}

/// A neighbour cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    /// Interface.
    pub ifindex: IfIndex,
    /// Protocol address.
    pub ip: IpAddr,
    /// State.
    pub state: NudState,
    /// Link-layer address, if known.
    pub mac: Option<Mac>,
}

impl Neighbour {
    /// The MAC hardware encap can use, if the entry is valid.
    pub fn usable_mac(&self) -> Option<Mac> {
        if self.state.is_valid() {
            self.mac
        } else {
            None
        }
    }
}

/// One change the kernel reported (or a dump entry).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// A link appeared or changed.
    LinkUp(Link),
    /// A link disappeared.
    LinkGone(IfIndex),
    /// An address appeared or changed.
    AddrUp(Address),
    /// An address disappeared.
    AddrGone(Address),
    /// A route appeared or was replaced.
    RouteUp(Route),
    /// A route disappeared.
    RouteGone(RouteKey),
    /// A rule appeared.
    RuleUp(Rule),
    /// A rule disappeared.
    RuleGone(Rule),
    /// A neighbour appeared or changed.
    NeighUp(Neighbour),
    /// A neighbour disappeared.
    NeighGone {
        /// Interface.
        ifindex: IfIndex,
        /// Protocol address.
        ip: IpAddr,
    },
}
