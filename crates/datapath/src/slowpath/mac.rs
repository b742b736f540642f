//! The MAC table: per network, where each station MAC lives (a local attachment or a
//! remote VTEP), learned from traffic with aging, configured statically, or installed by
//! a control plane (remote stations a routing protocol such as BGP EVPN announced; see
//! [`super::remote`]).
//!
//! Precedence: a configured station is never moved; a control-plane station is not moved
//! by what the data plane sees from the tunnel (the control plane is authoritative for
//! remote locations), but a local sighting moves it (the station came here: MAC
//! mobility); a learned station moves to wherever it is seen, and the control plane
//! replaces it.
//!
//! **Per-port quota.** Learned stations behind one local port may hold at most
//! [`MacConfig::port_quota`] entries (a quarter of the table): a port at its quota that
//! shows a new source evicts its own oldest learned station, never another port's, so a
//! VM flooding random source MACs cannot push its neighbours' stations out (nor make
//! every network flood). Static and control-plane stations, and stations behind remote
//! VTEPs, do not count against any port.
//!
//! Time is passed in (`now`, a monotonic [`Duration`] since an arbitrary epoch); the table
//! never reads a clock. An entry older than the aging time is treated as absent at once and
//! removed by [`MacTable::expire`], whose result drives revalidation.
//!
//! Thread-safety: lookups and [`MacTable::refresh`] take `&self` (the last-seen time is
//! atomic), so handlers share the table behind a read lock and only take the write lock
//! to learn a new or moved station.

use super::network::{Attachment, NetworkId};
use crate::PortId;
use crate::fastmap::FastMap;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use crate::flow::Mac;

/// Whether a MAC is a group (multicast or broadcast) address.
pub fn is_group(mac: Mac) -> bool {
    mac.0[0] & 1 != 0
}

/// The broadcast address.
pub const BROADCAST: Mac = Mac([0xff; 6]);

/// Where a station lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Location {
    /// Behind a local attachment (a representor, possibly with a VLAN).
    Local(Attachment),
    /// Behind a remote VTEP of the network's VXLAN segment.
    Remote(IpAddr),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(a) => write!(f, "{a}"),
            Location::Remote(ip) => write!(f, "remote VTEP {ip}"),
        }
    }
}

/// How an entry got into the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MacKind {
    /// Learned from traffic; ages out.
    Dynamic,
    /// Configured; never ages, never moved by learning.
    Static,
    /// A remote station a control plane announced; never ages, replaced or withdrawn by
    /// the control plane, moved only by a local sighting.
    Control,
}

/// One station.
#[derive(Debug)]
pub struct MacEntry {
    location: Location,
    kind: MacKind,
    last_seen: AtomicU64,
    seq: u64,
}

impl MacEntry {
    /// Where the station lives.
    pub fn location(&self) -> Location {
        self.location
    }

    /// Learned or static.
    pub fn kind(&self) -> MacKind {
        self.kind
    }

    /// When the station was last seen (nanoseconds since the epoch of `now`).
    pub fn last_seen(&self) -> Duration {
        Duration::from_nanos(self.last_seen.load(Ordering::Relaxed))
    }
}

/// MAC table settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacConfig {
    /// How long a learned station lives without traffic (default 300 s).
    pub aging: Duration,
    /// The most entries, all networks together (default 65,536); when full, learning a
    /// new station evicts the oldest learned one.
    pub max_entries: usize,
}

impl Default for MacConfig {
    fn default() -> Self {
        Self {
            aging: Duration::from_secs(300),
            max_entries: 65_536,
        }
    }
}

/// A port's share of the MAC table: [`MacConfig::port_quota`] is the table's size
/// divided by this.
pub const PORT_SHARE_DIVISOR: usize = 4;

impl MacConfig {
    /// The most learned stations one local port may hold: a quarter of the table (at
    /// least 1).
    pub fn port_quota(&self) -> usize {
        (self.max_entries / PORT_SHARE_DIVISOR).max(1)
    }
}

/// The station whose entry changed: flows that consulted it need revalidation.
pub type MacKey = (NetworkId, Mac);

/// What learning did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LearnOutcome {
    /// Already known there; only its last-seen time was refreshed.
    Refreshed,
    /// A new station.
    Learned,
    /// A known station seen at a new location (a station move).
    Moved {
        /// Where it was.
        from: Location,
    },
    /// Not learned: the address is a group address or statically configured elsewhere.
    Refused,
}

/// Counters of the MAC table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MacStats {
    /// Stations learned.
    pub learned: u64,
    /// Station moves detected.
    pub moves: u64,
    /// Entries aged out.
    pub expired: u64,
    /// Entries evicted because the table was full.
    pub evicted: u64,
    /// Learned entries evicted because their port held its quota (each port's own
    /// oldest, to make room for its new station).
    pub quota_evicted: u64,
}

/// One local port's learned stations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortMacStats {
    /// Learned stations behind the port now.
    pub entries: usize,
    /// Its stations evicted because it held its quota.
    pub quota_evicted: u64,
}

type Key = (NetworkId, [u8; 6]);

/// A port's learned stations: how many, oldest learned first (stale records skipped as
/// in the table's own order), and its evictions.
#[derive(Debug, Default)]
struct PortMacs {
    entries: usize,
    order: VecDeque<(Key, u64)>,
    quota_evicted: u64,
}

/// The port a learned local station counts against, if it counts.
fn quota_port(e: &MacEntry) -> Option<PortId> {
    match (e.kind, e.location) {
        (MacKind::Dynamic, Location::Local(a)) => Some(a.port),
        _ => None,
    }
}

/// Forgets a removed entry from its port's count.
fn uncount(ports: &mut FastMap<PortId, PortMacs>, e: &MacEntry) {
    if let Some(p) = quota_port(e).and_then(|p| ports.get_mut(&p)) {
        p.entries = p.entries.saturating_sub(1);
    }
}

/// The MAC table.
#[derive(Debug, Default)]
pub struct MacTable {
    config: MacConfig,
    map: FastMap<(NetworkId, [u8; 6]), MacEntry>,
    /// Learned entries, oldest learned first: (key, seq); stale when the entry's seq differs.
    order: VecDeque<((NetworkId, [u8; 6]), u64)>,
    /// Learned local entries per port (the quota's accounting).
    ports: FastMap<PortId, PortMacs>,
    seq: u64,
    stats: MacStats,
}

fn nanos(t: Duration) -> u64 {
    u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)
}

impl MacTable {
    /// An empty table.
    pub fn new(config: MacConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// The settings.
    pub fn config(&self) -> MacConfig {
        self.config
    }

    /// The counters.
    pub fn stats(&self) -> MacStats {
        self.stats
    }

    /// Each local port's learned stations and quota evictions (ports that held some).
    pub fn port_stats(&self) -> Vec<(PortId, PortMacStats)> {
        let mut v: Vec<_> = self
            .ports
            .iter()
            .map(|(p, m)| {
                let st = PortMacStats {
                    entries: m.entries,
                    quota_evicted: m.quota_evicted,
                };
                (*p, st)
            })
            .collect();
        v.sort_by_key(|(p, _)| *p);
        v
    }

    /// The number of entries (expired ones included until [`MacTable::expire`]).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every entry, for display.
    pub fn iter(&self) -> impl Iterator<Item = (MacKey, &MacEntry)> {
        self.map.iter().map(|((n, m), e)| ((*n, Mac(*m)), e))
    }

    fn alive(&self, e: &MacEntry, now: Duration) -> bool {
        e.kind != MacKind::Dynamic
            || nanos(now).saturating_sub(e.last_seen.load(Ordering::Relaxed))
                <= nanos(self.config.aging)
    }

    /// The live entry of a station.
    pub fn lookup(&self, net: NetworkId, mac: Mac, now: Duration) -> Option<&MacEntry> {
        self.map.get(&(net, mac.0)).filter(|e| self.alive(e, now))
    }

    /// The entry of a station, aged or not (until [`MacTable::expire`] removes it): what
    /// an observer of the table compares its own state with.
    pub fn get(&self, net: NetworkId, mac: Mac) -> Option<&MacEntry> {
        self.map.get(&(net, mac.0))
    }

    /// Whether learning `mac` at `loc` would change the table (not counting the last-seen
    /// refresh).
    pub fn would_change(&self, net: NetworkId, mac: Mac, loc: Location, now: Duration) -> bool {
        if is_group(mac) {
            return false;
        }
        match self.lookup(net, mac, now) {
            None => true,
            Some(e) => match e.kind {
                MacKind::Dynamic => e.location != loc,
                MacKind::Static => false,
                MacKind::Control => matches!(loc, Location::Local(_)),
            },
        }
    }

    /// Refreshes a learned station's last-seen time if it is still at `loc`.
    pub fn refresh(&self, net: NetworkId, mac: Mac, loc: Location, seen: Duration) {
        if let Some(e) = self.map.get(&(net, mac.0))
            && e.kind == MacKind::Dynamic
            && e.location == loc
        {
            e.last_seen.fetch_max(nanos(seen), Ordering::Relaxed);
        }
    }

    /// Learns that `mac` was seen at `loc`. Returns what happened and the stations whose
    /// entries changed (the learned one, and one evicted to make room).
    pub fn learn(
        &mut self,
        net: NetworkId,
        mac: Mac,
        loc: Location,
        now: Duration,
    ) -> (LearnOutcome, Vec<MacKey>) {
        if is_group(mac) {
            return (LearnOutcome::Refused, Vec::new());
        }
        let existing = self.lookup(net, mac, now).map(|e| (e.kind, e.location));
        let outcome = match existing {
            Some((MacKind::Static, l)) if l != loc => return (LearnOutcome::Refused, Vec::new()),
            Some((MacKind::Control, _)) if matches!(loc, Location::Remote(_)) => {
                return (LearnOutcome::Refused, Vec::new());
            }
            Some((_, l)) if l == loc => {
                self.refresh(net, mac, loc, now);
                return (LearnOutcome::Refreshed, Vec::new());
            }
            Some((_, from)) => {
                self.stats.moves += 1;
                LearnOutcome::Moved { from }
            }
            None => {
                self.stats.learned += 1;
                LearnOutcome::Learned
            }
        };
        let mut changed = vec![(net, mac)];
        if let Location::Local(a) = loc {
            let counted = self
                .map
                .get(&(net, mac.0))
                .is_some_and(|e| quota_port(e) == Some(a.port));
            if !counted {
                changed.extend(self.make_port_room(a.port));
            }
        }
        if matches!(outcome, LearnOutcome::Learned) && !self.map.contains_key(&(net, mac.0)) {
            changed.extend(self.make_room());
        }
        self.insert((net, mac.0), loc, MacKind::Dynamic, now);
        (outcome, changed)
    }

    fn insert(
        &mut self,
        key: (NetworkId, [u8; 6]),
        location: Location,
        kind: MacKind,
        now: Duration,
    ) {
        self.seq += 1;
        let entry = MacEntry {
            location,
            kind,
            last_seen: AtomicU64::new(nanos(now)),
            seq: self.seq,
        };
        if let Location::Local(a) = location
            && kind == MacKind::Dynamic
        {
            let p = self.ports.entry(a.port).or_default();
            p.entries += 1;
            p.order.push_back((key, self.seq));
        }
        if let Some(old) = self.map.insert(key, entry) {
            uncount(&mut self.ports, &old);
        }
        if kind == MacKind::Dynamic {
            self.order.push_back((key, self.seq));
            self.compact();
        }
    }

    /// Evicts `port`'s oldest learned station if the port holds its quota.
    fn make_port_room(&mut self, port: PortId) -> Option<MacKey> {
        let quota = self.config.port_quota();
        let p = self.ports.get_mut(&port)?;
        if p.entries < quota {
            return None;
        }
        while let Some((key, seq)) = p.order.pop_front() {
            if self.map.get(&key).is_some_and(|e| e.seq == seq) {
                self.map.remove(&key);
                p.entries = p.entries.saturating_sub(1);
                p.quota_evicted += 1;
                self.stats.quota_evicted += 1;
                return Some((key.0, Mac(key.1)));
            }
        }
        None
    }

    /// Evicts the oldest learned entry if the table is full.
    fn make_room(&mut self) -> Option<MacKey> {
        if self.map.len() < self.config.max_entries {
            return None;
        }
        while let Some((key, seq)) = self.order.pop_front() {
            if self.map.get(&key).is_some_and(|e| e.seq == seq) {
                if let Some(e) = self.map.remove(&key) {
                    uncount(&mut self.ports, &e);
                }
                self.stats.evicted += 1;
                return Some((key.0, Mac(key.1)));
            }
        }
        None
    }

    /// Drops stale order records once they outnumber live entries (the table's, and
    /// each port's once they outnumber its entries), and ports left with nothing.
    fn compact(&mut self) {
        let map = &self.map;
        let live = |(k, s): &(Key, u64)| map.get(k).is_some_and(|e| e.seq == *s);
        if self.order.len() > 2 * map.len() + 64 {
            self.order.retain(live);
        }
        for p in self.ports.values_mut() {
            if p.order.len() > 2 * p.entries + 64 {
                p.order.retain(live);
            }
        }
    }

    /// Configures a static station (replacing any entry). The caller validates `loc`.
    pub fn set_static(&mut self, net: NetworkId, mac: Mac, loc: Location) -> MacKey {
        self.insert((net, mac.0), loc, MacKind::Static, Duration::ZERO);
        (net, mac)
    }

    /// Installs a control plane's remote station: `mac` lives behind `vtep` (replacing a
    /// learned or control-plane entry; a configured one stays). The changed station, if
    /// the table changed.
    pub fn set_control(&mut self, net: NetworkId, mac: Mac, vtep: IpAddr) -> Option<MacKey> {
        let loc = Location::Remote(vtep);
        match self.map.get(&(net, mac.0)) {
            Some(e) if e.kind == MacKind::Static => return None,
            Some(e) if e.kind == MacKind::Control && e.location == loc => return None,
            _ => {}
        }
        self.insert((net, mac.0), loc, MacKind::Control, Duration::ZERO);
        Some((net, mac))
    }

    /// Withdraws a control plane's remote station, if it is still the control plane's
    /// entry behind `vtep` (a station that moved here since, or was configured, stays).
    pub fn remove_control(&mut self, net: NetworkId, mac: Mac, vtep: IpAddr) -> Option<MacKey> {
        let e = self.map.get(&(net, mac.0))?;
        if e.kind != MacKind::Control || e.location != Location::Remote(vtep) {
            return None;
        }
        self.remove(net, mac)
    }

    /// Removes a station, static or learned.
    pub fn remove(&mut self, net: NetworkId, mac: Mac) -> Option<MacKey> {
        let e = self.map.remove(&(net, mac.0))?;
        uncount(&mut self.ports, &e);
        Some((net, mac))
    }

    /// Removes every entry of a network (or those matching `pred`), returning them.
    pub fn remove_where(
        &mut self,
        mut pred: impl FnMut(&MacKey, &MacEntry) -> bool,
    ) -> Vec<MacKey> {
        let mut gone = Vec::new();
        let ports = &mut self.ports;
        self.map.retain(|k, e| {
            let key = (k.0, Mac(k.1));
            let drop = pred(&key, e);
            if drop {
                gone.push(key);
                uncount(ports, e);
            }
            !drop
        });
        self.compact();
        gone
    }

    /// Removes the learned entries not seen for longer than the aging time.
    pub fn expire(&mut self, now: Duration) -> Vec<MacKey> {
        let (aging, now) = (nanos(self.config.aging), nanos(now));
        let gone = self.remove_where(|_, e| {
            e.kind == MacKind::Dynamic
                && now.saturating_sub(e.last_seen.load(Ordering::Relaxed)) > aging
        });
        self.stats.expired += gone.len() as u64;
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PortId;

    const NET: NetworkId = NetworkId(1);
    const A: Mac = Mac([0, 0, 0, 0, 0, 0xa]);

    fn port(p: u32) -> Location {
        Location::Local(Attachment::untagged(PortId(p)))
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn learn_refresh_move_and_age() {
        let mut t = MacTable::new(MacConfig::default());
        assert_eq!(t.learn(NET, A, port(1), secs(0)).0, LearnOutcome::Learned);
        assert!(!t.would_change(NET, A, port(1), secs(1)));
        assert!(t.would_change(NET, A, port(2), secs(1)));
        assert_eq!(
            t.learn(NET, A, port(1), secs(100)).0,
            LearnOutcome::Refreshed
        );
        let (o, changed) = t.learn(NET, A, port(2), secs(200));
        assert_eq!(o, LearnOutcome::Moved { from: port(1) });
        assert_eq!(changed, vec![(NET, A)]);
        assert_eq!(t.stats().moves, 1);
        t.refresh(NET, A, port(2), secs(400));
        assert!(t.expire(secs(700)).is_empty());
        assert!(
            t.lookup(NET, A, secs(701)).is_none(),
            "treated as absent once aged"
        );
        assert_eq!(t.expire(secs(701)), vec![(NET, A)]);
        assert!(t.is_empty());
    }

    #[test]
    fn statics_never_age_or_move() {
        let mut t = MacTable::new(MacConfig::default());
        let remote = Location::Remote("192.0.2.1".parse().unwrap());
        t.set_static(NET, A, remote);
        assert_eq!(t.learn(NET, A, port(1), secs(0)).0, LearnOutcome::Refused);
        assert!(!t.would_change(NET, A, port(1), secs(0)));
        assert!(t.expire(secs(1_000_000)).is_empty());
        assert_eq!(
            t.lookup(NET, A, secs(1_000_000)).unwrap().location(),
            remote
        );
    }

    #[test]
    fn control_stations_yield_to_local_sightings_only() {
        let mut t = MacTable::new(MacConfig::default());
        let (v2, v3): (IpAddr, IpAddr) =
            ("192.0.2.2".parse().unwrap(), "192.0.2.3".parse().unwrap());
        t.learn(NET, A, Location::Remote(v3), secs(0));
        assert_eq!(
            t.set_control(NET, A, v2),
            Some((NET, A)),
            "replaces a learned entry"
        );
        assert_eq!(t.set_control(NET, A, v2), None, "no change");
        assert!(!t.would_change(NET, A, Location::Remote(v3), secs(1)));
        assert_eq!(
            t.learn(NET, A, Location::Remote(v3), secs(1)).0,
            LearnOutcome::Refused,
            "the tunnel does not move a control-plane station"
        );
        assert!(t.expire(secs(1_000_000)).is_empty(), "never ages");
        assert_eq!(
            t.remove_control(NET, A, v3),
            None,
            "withdrawn elsewhere: stays"
        );
        assert!(t.would_change(NET, A, port(1), secs(2)));
        let (o, changed) = t.learn(NET, A, port(1), secs(2));
        assert_eq!(
            o,
            LearnOutcome::Moved {
                from: Location::Remote(v2)
            }
        );
        assert_eq!(changed, vec![(NET, A)]);
        assert_eq!(
            t.remove_control(NET, A, v2),
            None,
            "moved here since: stays"
        );
        assert_eq!(t.get(NET, A).map(MacEntry::kind), Some(MacKind::Dynamic));
        t.set_static(NET, A, port(2));
        assert_eq!(t.set_control(NET, A, v2), None, "configuration wins");
        t.remove(NET, A);
        t.set_control(NET, A, v2);
        assert_eq!(t.remove_control(NET, A, v2), Some((NET, A)));
        assert!(t.is_empty());
    }

    #[test]
    fn group_addresses_are_not_learned() {
        let mut t = MacTable::new(MacConfig::default());
        assert_eq!(
            t.learn(NET, BROADCAST, port(1), secs(0)).0,
            LearnOutcome::Refused
        );
        assert!(t.is_empty());
    }

    #[test]
    fn full_table_evicts_oldest_learned() {
        let cfg = MacConfig {
            max_entries: 8,
            ..MacConfig::default()
        };
        let mut t = MacTable::new(cfg);
        let m = |i| Mac([0, 0, 0, 0, 1, i]);
        // Four ports at their quota of 2 fill the table.
        for i in 1..=8u8 {
            t.learn(
                NET,
                m(i),
                port(u32::from(i).div_ceil(2)),
                secs(u64::from(i)),
            );
        }
        let (_, changed) = t.learn(NET, m(9), port(5), secs(9));
        assert_eq!(changed, vec![(NET, m(9)), (NET, m(1))]);
        assert_eq!(t.len(), 8);
        assert_eq!((t.stats().evicted, t.stats().quota_evicted), (1, 0));
    }

    #[test]
    fn a_port_at_its_quota_evicts_its_own_oldest_only() {
        let cfg = MacConfig {
            max_entries: 16,
            ..MacConfig::default()
        };
        assert_eq!(cfg.port_quota(), 4);
        let mut t = MacTable::new(cfg);
        let m = |p: u8, i: u8| Mac([2, 0, 0, 0, p, i]);
        // Port 2's stations, learned first (the oldest in the table).
        for i in 0..3 {
            t.learn(NET, m(2, i), port(2), secs(0));
        }
        // Port 1 floods 100 sources.
        for i in 0..100 {
            let (o, changed) = t.learn(NET, m(1, i), port(1), secs(1));
            assert_eq!(o, LearnOutcome::Learned);
            if i >= 4 {
                assert_eq!(changed, vec![(NET, m(1, i)), (NET, m(1, i - 4))]);
            }
        }
        for i in 0..3 {
            assert!(t.lookup(NET, m(2, i), secs(2)).is_some(), "neighbour kept");
        }
        assert_eq!(t.len(), 7);
        let st: Vec<_> = t.port_stats();
        assert_eq!(
            st,
            vec![
                (
                    PortId(1),
                    PortMacStats {
                        entries: 4,
                        quota_evicted: 96
                    }
                ),
                (
                    PortId(2),
                    PortMacStats {
                        entries: 3,
                        quota_evicted: 0
                    }
                ),
            ]
        );
        assert_eq!((t.stats().quota_evicted, t.stats().evicted), (96, 0));
        // A station moving to the full port counts there; statics do not count.
        t.learn(NET, m(2, 0), port(1), secs(3));
        assert_eq!(t.port_stats()[0].1.entries, 4);
        assert_eq!(t.port_stats()[1].1.entries, 2);
        t.set_static(NET, m(9, 9), port(1));
        assert_eq!(t.port_stats()[0].1.entries, 4);
        assert_eq!(t.remove_where(|_, _| true).len(), 7);
        assert!(t.port_stats().iter().all(|(_, s)| s.entries == 0));
    }

    /// The per-port accounting, recounted from the entries.
    fn recount(t: &MacTable) -> Vec<(PortId, usize)> {
        let mut n: std::collections::BTreeMap<PortId, usize> = Default::default();
        for (_, e) in t.iter() {
            if let Some(p) = quota_port(e) {
                *n.entry(p).or_default() += 1;
            }
        }
        n.into_iter().collect()
    }

    proptest::proptest! {
        /// Whatever is learned, moved, configured, removed or aged: no port holds more
        /// than its quota, the counts agree with the entries, and the table stays
        /// within its size.
        #[test]
        fn no_port_exceeds_its_quota(
            ops in proptest::collection::vec((0u8..6, 1u32..4, 0u8..40, 0u64..50), 1..300),
            size in 4usize..24,
        ) {
            let cfg = MacConfig { max_entries: size, aging: secs(20) };
            let mut t = MacTable::new(cfg);
            for (op, p, i, now) in ops {
                let mac = Mac([2, 0, 0, 0, 0, i]);
                match op {
                    0..=2 => { t.learn(NET, mac, port(p), secs(now)); }
                    3 => { t.set_static(NET, mac, port(p)); }
                    4 => { t.remove(NET, mac); }
                    _ => { t.expire(secs(now)); }
                }
                let counts = recount(&t);
                for (p, n) in &counts {
                    proptest::prop_assert!(*n <= cfg.port_quota(), "port {p}: {n}");
                }
                let kept: Vec<_> = t
                    .port_stats()
                    .into_iter()
                    .filter(|(_, s)| s.entries > 0)
                    .map(|(p, s)| (p, s.entries))
                    .collect();
                proptest::prop_assert_eq!(kept, counts);
                let learned = t.iter().filter(|(_, e)| e.kind() == MacKind::Dynamic).count();
                proptest::prop_assert!(learned <= size);
            }
        }
    }
}
