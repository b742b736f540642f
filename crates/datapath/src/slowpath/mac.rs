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
//! Time is passed in (`now`, a monotonic [`Duration`] since an arbitrary epoch); the table
//! never reads a clock. An entry older than the aging time is treated as absent at once and
//! removed by [`MacTable::expire`], whose result drives revalidation.
//!
//! Thread-safety: lookups and [`MacTable::refresh`] take `&self` (the last-seen time is
//! atomic), so handlers share the table behind a read lock and only take the write lock
//! to learn a new or moved station.

use super::hash::FastMap;
use super::network::{Attachment, NetworkId};
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
}

/// The MAC table.
#[derive(Debug, Default)]
pub struct MacTable {
    config: MacConfig,
    map: FastMap<(NetworkId, [u8; 6]), MacEntry>,
    /// Learned entries, oldest learned first: (key, seq); stale when the entry's seq differs.
    order: VecDeque<((NetworkId, [u8; 6]), u64)>,
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
        self.map.insert(key, entry);
        if kind == MacKind::Dynamic {
            self.order.push_back((key, self.seq));
            self.compact();
        }
    }

    /// Evicts the oldest learned entry if the table is full.
    fn make_room(&mut self) -> Option<MacKey> {
        if self.map.len() < self.config.max_entries {
            return None;
        }
        while let Some((key, seq)) = self.order.pop_front() {
            if self.map.get(&key).is_some_and(|e| e.seq == seq) {
                self.map.remove(&key);
                self.stats.evicted += 1;
                return Some((key.0, Mac(key.1)));
            }
        }
        None
    }

    /// Drops stale order records once they outnumber live entries.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.order
                .retain(|(k, s)| map.get(k).is_some_and(|e| e.seq == *s));
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
        self.map.remove(&(net, mac.0)).map(|_| (net, mac))
    }

    /// Removes every entry of a network (or those matching `pred`), returning them.
    pub fn remove_where(
        &mut self,
        mut pred: impl FnMut(&MacKey, &MacEntry) -> bool,
    ) -> Vec<MacKey> {
        let mut gone = Vec::new();
        self.map.retain(|k, e| {
            let key = (k.0, Mac(k.1));
            let drop = pred(&key, e);
            if drop {
                gone.push(key);
            }
            !drop
        });
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
            max_entries: 2,
            ..MacConfig::default()
        };
        let mut t = MacTable::new(cfg);
        let m = |i| Mac([0, 0, 0, 0, 1, i]);
        t.learn(NET, m(1), port(1), secs(0));
        t.learn(NET, m(2), port(1), secs(1));
        let (_, changed) = t.learn(NET, m(3), port(1), secs(2));
        assert_eq!(changed, vec![(NET, m(3)), (NET, m(1))]);
        assert_eq!(t.len(), 2);
        assert_eq!(t.stats().evicted, 1);
    }
}
