//! flowd's FIB watcher: keeps, for every tunnel lookup key in use (remote VTEP, fixed
//! source or none, mark), which uplink, source IP, next-hop MAC and path MTU it resolves
//! to, and reports exactly the keys whose path changed when the kernel's routes, rules,
//! neighbours or links change, and the links that changed.
//!
//! # Design
//! ```text
//! rtnetlink events ─┐                        ┌─> Event channel (bounded) -> daemon
//!   (netlink)       ├─> Mirror ──Dirty──> KeyIndex     (links, then path facts)
//! dumps (resync) ───┘   (links, addresses,     (lookup key -> path facts)
//!                        routes, rules, neighs)
//! ```
//! - [`netlink`] is the only module that sees netlink types. It subscribes to the link,
//!   neighbour, IPv4/IPv6 address, route and rule groups, dumps, probes neighbours, and
//!   turns messages into flowd's own [`Change`]s (`ipnet`, [`IfIndex`], own structs).
//! - [`Mirror`] holds the state, each entry tagged with the generation it was last seen
//!   in. Applying a change records what it may affect in a [`Dirty`] set: the route
//!   prefix, the (interface, neighbour) pair, the link (state, MTU, MAC, addresses), or
//!   everything for a policy rule change.
//! - [`fib`] resolves an endpoint from the mirror like the kernel's output lookup: rules
//!   (from, to, fwmark/mask, iif, oif, goto, suppress_prefixlength, terminal actions),
//!   longest prefix match per table, throw/unreachable semantics, ECMP next hops, source
//!   address selection, neighbour state, path MTU (route `mtu`, else link MTU). Tests
//!   check it against `ip route get`.
//! - [`KeyIndex`] tracks lookup keys ([`LookupKey`]: remote VTEP, fixed source or none,
//!   mark; the daemon tracks the keys its flows use) and holds each key's current
//!   [`PathFacts`](vocab::PathFacts): the path (egress uplink, source, gateway, next-hop
//!   MAC, path MTU) or why there is none. Keys are kept sorted by remote
//!   (`BTreeMap<IpAddr, _>`), so the keys inside a changed prefix are a range scan;
//!   reverse maps from next hop and from link serve neighbour and link changes. Only
//!   those keys are re-resolved: the cost follows the affected keys, never the number
//!   of flows (see `benches/fibwatch.rs`).
//! - Events are plain messages ([`Event`]): a link that changed (MTU, state, MAC, switch
//!   id, name), a link gone, and a tracked key whose facts changed. Nothing is sent for
//!   a key whose facts did not change. fibwatch does not place flows: the offload layer
//!   judges placement on these facts together with the ports' live facts.
//! - Whatever a flow's placement, its path must work: the watcher asks the kernel to
//!   resolve the next hop of every tracked key that has none yet (RTM_NEWNEIGH with
//!   NTF_USE), at most once per `probe_interval` per next hop.
//!
//! # ECMP
//! A key keeps one next hop: FNV-1a over the key (remote, fixed source, mark), modulo
//! the total weight of the route's live next hops in kernel order, picks it
//! ([`ecmp_pick`]). The hash does not depend on the route or on the kernel's random
//! multipath seed, so a key stays on its next hop across restarts and across changes
//! that keep the next-hop set. `ip route get` agrees on the route and the set of next
//! hops, not necessarily on which one (the kernel hashes its own fields with a
//! per-boot seed).
//!
//! # Coalescing
//! Changes come in bursts (one `ip route replace` is one message; a link going down is a
//! link, address, route and neighbour message each). Every change is applied to the
//! mirror at once and its dirty entries accumulate; the burst ends when no change came
//! for [`Config::settle`] (2 ms), or at the latest [`Config::coalesce`] (20 ms) after its
//! first change. Then affected keys are re-resolved once and each key's new facts are
//! compared with the last ones reported. Nothing is lost (the mirror saw
//! every change; the dirty set is a union), and a route that flaps back within the
//! burst produces no event. A lone change is decided `settle` after it arrives, not a
//! whole window later: that wait is on the failover path.
//!
//! # Resync
//! The watcher subscribes before it dumps. Events queued during the dump are applied
//! after it; each event carries its object's full state at that time, so the last one
//! per object wins and the mirror converges. On ENOBUFS (events lost) it discards what
//! is queued, bumps the generation, re-dumps everything, upserts, and sweeps entries of
//! older generations: the mirror then equals a fresh dump, and only actual differences
//! mark entries dirty. The kernel removes IPv4 routes silently when a link goes down or
//! an address goes away, and flags next hops dead without notice: such link/address
//! changes trigger a route-only re-dump before decisions are made.
//!
//! # Limits
//! Routes are identified by (table, prefix, tos, metric); IPv4 alternative routes with
//! equal metric (`ip route append`) and IPv6 `append` notifications collapse to the last
//! one seen. Rules with selectors fibwatch cannot evaluate for a tunnel packet (tun_id,
//! l3mdev, suppress_ifgroup) never match. IPv6 source selection is a simplified RFC 6724.

pub mod error;
pub mod fib;
pub mod index;
pub mod mirror;
pub mod model;
pub mod netlink;
pub mod sys;
pub mod watcher;
pub mod xfrm;

pub use datapath::{FlowId, IfIndex};
pub use error::{Error, Result};
pub use fib::{Hop, LookupKey, NoRoute, Paths};
pub use index::{ApplyStats, KeyIndex, PathUpdate, ecmp_pick, facts_of, key_hash};
pub use mirror::{Dirty, Kinds, Mirror};
pub use model::{
    Address, Change, Family, Link, Mac, Neighbour, NextHop, NudState, Route, RouteKey, RouteKind,
    Rule, RuleAction, SwitchId,
};
pub use sys::{enter_netns, in_netns};
pub use watcher::{Config, Event, Watcher, WatcherStats, dump_mirror};
pub use xfrm::{Inbound, Xfrm};
