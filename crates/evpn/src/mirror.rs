//! The shadow devices' FDB as flowd needs it, from the kernel's entries: no I/O, time or
//! sockets here, so that every rule is a unit test.
//!
//! Per VNI it keeps the bridge's entries (which port holds each MAC, and whether the
//! entry is static), the vxlan device's own entries (the VTEP behind each MAC) and its
//! flood entries (the all-zero MAC, one per VTEP). From them:
//!
//! - a **remote station** is a MAC the bridge holds on the vxlan port *and* the vxlan
//!   device has a VTEP for. Both are needed: when a station moves here, the bridge entry
//!   moves to the advertise port, but zebra leaves the vxlan device's entry behind;
//!   when a station moves away, zebra moves the bridge entry to the vxlan port;
//! - the **flood list** is the set of flood entries' VTEPs;
//! - the **local stations** in the kernel are the static bridge entries on the advertise
//!   port.
//!
//! Remote stations and flood lists are reported as [`RemoteEvent`]s by
//! [`Mirror::settle`], after a batch of entries was applied: only what changed since the
//! last report (zebra's remote MAC arrives as two notifications, the bridge's and the
//! vxlan device's; settling after both reports the station once, at its new VTEP). Local stations are reconciled by [`Mirror::diff_local`]: the
//! requests that make the kernel's local stations the wanted ones (applied, they make the
//! next diff empty: the property test below).

use crate::fdb::{FdbEntry, FdbEvent, nud};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use vocab::{IfIndex, Mac};

/// One network's shadow devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shadow {
    /// The VNI.
    pub vni: u32,
    /// The bridge.
    pub bridge: IfIndex,
    /// The vxlan device.
    pub vxlan: IfIndex,
    /// The advertise port.
    pub adv: IfIndex,
}

/// A change of a network's remote side, for the slow path.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoteEvent {
    /// `mac` lives behind `vtep` (new, or moved).
    Station {
        /// The VNI.
        vni: u32,
        /// The station.
        mac: Mac,
        /// Its VTEP.
        vtep: IpAddr,
    },
    /// `mac` no longer lives behind `vtep`.
    StationGone {
        /// The VNI.
        vni: u32,
        /// The station.
        mac: Mac,
        /// The VTEP it was behind.
        vtep: IpAddr,
    },
    /// The VNI's flood list is now `vteps` (sorted).
    FloodList {
        /// The VNI.
        vni: u32,
        /// The VTEPs.
        vteps: Vec<IpAddr>,
    },
}

/// A request on the advertise port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum LocalOp {
    /// Add (or move here) a static entry.
    Add(Mac),
    /// Remove the entry.
    Del(Mac),
}

#[derive(Debug, Default)]
struct Vni {
    shadow: Option<Shadow>,
    /// Bridge entries other than permanent ones: port and `NUD_*` state.
    port: HashMap<Mac, (IfIndex, u16)>,
    /// The vxlan device's own entries.
    vtep: HashMap<Mac, IpAddr>,
    /// Flood entries.
    flood: BTreeSet<IpAddr>,
    /// Remote stations as last reported.
    reported: HashMap<Mac, IpAddr>,
    /// The flood list as last reported.
    reported_flood: Vec<IpAddr>,
    /// MACs whose entries changed since the last settle.
    dirty: BTreeSet<Mac>,
    /// Whether the flood entries changed since the last settle.
    flood_dirty: bool,
}

impl Vni {
    fn remote(&self, mac: &Mac) -> Option<IpAddr> {
        let sh = self.shadow?;
        match self.port.get(mac) {
            Some((p, _)) if *p == sh.vxlan => self.vtep.get(mac).copied(),
            _ => None,
        }
    }

    fn settle(&mut self, vni: u32, mac: Mac, out: &mut Vec<RemoteEvent>) {
        let now = self.remote(&mac);
        let was = self.reported.get(&mac).copied();
        if now == was {
            return;
        }
        match now {
            Some(vtep) => {
                self.reported.insert(mac, vtep);
                out.push(RemoteEvent::Station { vni, mac, vtep });
            }
            None => {
                self.reported.remove(&mac);
                if let Some(vtep) = was {
                    out.push(RemoteEvent::StationGone { vni, mac, vtep });
                }
            }
        }
    }

    fn settle_flood(&mut self, vni: u32, out: &mut Vec<RemoteEvent>) {
        let now: Vec<IpAddr> = self.flood.iter().copied().collect();
        if now != self.reported_flood {
            self.reported_flood = now.clone();
            out.push(RemoteEvent::FloodList { vni, vteps: now });
        }
    }

    fn settle_dirty(&mut self, vni: u32, out: &mut Vec<RemoteEvent>) {
        for mac in std::mem::take(&mut self.dirty) {
            self.settle(vni, mac, out);
        }
        if std::mem::take(&mut self.flood_dirty) {
            self.settle_flood(vni, out);
        }
    }

    fn mark_all(&mut self) {
        let reported: Vec<Mac> = self.reported.keys().copied().collect();
        self.dirty.extend(reported);
        self.dirty.extend(self.port.keys().copied());
        self.flood_dirty = true;
    }
}

/// The shadow devices' FDB. See the module docs.
#[derive(Debug, Default)]
pub struct Mirror {
    vnis: BTreeMap<u32, Vni>,
    by_if: HashMap<IfIndex, u32>,
}

impl Mirror {
    /// No networks.
    pub fn new() -> Self {
        Self::default()
    }

    /// The networks and their devices from now on. A network gone, or whose devices
    /// changed, forgets its entries; what it reported is withdrawn (stations gone, an
    /// empty flood list) for a network that stays, and simply dropped for one that goes.
    pub fn set_shadows(&mut self, shadows: &[Shadow], out: &mut Vec<RemoteEvent>) {
        let want: BTreeMap<u32, Shadow> = shadows.iter().map(|s| (s.vni, *s)).collect();
        self.vnis.retain(|vni, _| want.contains_key(vni));
        self.by_if.clear();
        for (vni, sh) in &want {
            let v = self.vnis.entry(*vni).or_default();
            if v.shadow != Some(*sh) {
                v.shadow = Some(*sh);
                v.port.clear();
                v.vtep.clear();
                v.flood.clear();
                v.mark_all();
                v.settle_dirty(*vni, out);
            }
            for i in [sh.bridge, sh.vxlan, sh.adv] {
                self.by_if.insert(i, *vni);
            }
        }
    }

    /// The networks' devices.
    pub fn shadows(&self) -> impl Iterator<Item = &Shadow> {
        self.vnis.values().filter_map(|v| v.shadow.as_ref())
    }

    /// Whether `ifindex` is one of the shadow devices.
    pub fn is_shadow(&self, ifindex: IfIndex) -> bool {
        self.by_if.contains_key(&ifindex)
    }

    /// Forgets every entry before a full dump is applied (the reported state stays, so
    /// that the next [`Mirror::settle`] reports only the difference).
    pub fn begin_resync(&mut self) {
        for v in self.vnis.values_mut() {
            v.mark_all();
            v.port.clear();
            v.vtep.clear();
            v.flood.clear();
        }
    }

    /// Reports what changed on the remote side since the last report, for the entries
    /// applied since.
    pub fn settle(&mut self, out: &mut Vec<RemoteEvent>) {
        for (vni, v) in self.vnis.iter_mut() {
            v.settle_dirty(*vni, out);
        }
    }

    /// Applies a kernel notification (or a dumped entry, as `New`, after
    /// [`Mirror::begin_resync`]). [`Mirror::settle`] reports what it changed.
    pub fn apply(&mut self, ev: &FdbEvent) {
        let (e, new) = match ev {
            FdbEvent::New(e) => (e, true),
            FdbEvent::Del(e) => (e, false),
        };
        let Some(&vni) = self.by_if.get(&e.ifindex) else {
            return;
        };
        let Some(v) = self.vnis.get_mut(&vni) else {
            return;
        };
        let Some(sh) = v.shadow else { return };
        // The shadow bridge is VLAN-unaware: the entry without a VLAN is the station's
        // (a kernel that gave the ports a default VLAN adds a copy for it too).
        if e.vlan.is_some_and(|v| v != 0) {
            return;
        }
        if e.ifindex == sh.vxlan && !e.is_master() && e.dst.is_some() {
            Self::vxlan_entry(v, e, new);
        } else if e.master == Some(sh.bridge) && !e.is_permanent() && e.ifindex != sh.bridge {
            if new {
                v.port.insert(e.mac, (e.ifindex, e.state));
            } else if v.port.get(&e.mac).is_some_and(|(p, _)| *p == e.ifindex) {
                v.port.remove(&e.mac);
            }
            v.dirty.insert(e.mac);
        }
    }

    fn vxlan_entry(v: &mut Vni, e: &FdbEntry, new: bool) {
        let Some(dst) = e.dst else { return };
        if e.is_flood() {
            if new {
                v.flood.insert(dst);
            } else {
                v.flood.remove(&dst);
            }
            v.flood_dirty = true;
            return;
        }
        if new {
            v.vtep.insert(e.mac, dst);
        } else if v.vtep.get(&e.mac) == Some(&dst) {
            v.vtep.remove(&e.mac);
        }
        v.dirty.insert(e.mac);
    }

    /// The remote stations of a VNI, as reported.
    pub fn remote_stations(&self, vni: u32) -> Vec<(Mac, IpAddr)> {
        let mut v: Vec<(Mac, IpAddr)> = self
            .vnis
            .get(&vni)
            .map(|v| v.reported.iter().map(|(m, ip)| (*m, *ip)).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// A VNI's flood list, as reported.
    pub fn flood_list(&self, vni: u32) -> &[IpAddr] {
        self.vnis
            .get(&vni)
            .map_or(&[], |v| v.reported_flood.as_slice())
    }

    /// The static entries on a VNI's advertise port: its local stations in the kernel.
    pub fn local_stations(&self, vni: u32) -> BTreeSet<Mac> {
        let Some(v) = self.vnis.get(&vni) else {
            return BTreeSet::new();
        };
        let Some(sh) = v.shadow else {
            return BTreeSet::new();
        };
        v.port
            .iter()
            .filter(|(_, (p, st))| *p == sh.adv && st & nud::NOARP != 0)
            .map(|(m, _)| *m)
            .collect()
    }

    /// The requests that make a VNI's local stations in the kernel exactly `want`, in
    /// MAC order (removals and additions interleaved).
    pub fn diff_local(&self, vni: u32, want: &BTreeSet<Mac>) -> Vec<LocalOp> {
        let have = self.local_stations(vni);
        let mut ops: Vec<LocalOp> = want
            .difference(&have)
            .map(|m| LocalOp::Add(*m))
            .chain(have.difference(want).map(|m| LocalOp::Del(*m)))
            .collect();
        ops.sort_by_key(|op| match op {
            LocalOp::Add(m) | LocalOp::Del(m) => *m,
        });
        ops
    }

    /// Records a request the kernel acknowledged, before its notification arrives (so
    /// that a diff made meanwhile does not repeat it). [`Mirror::settle`] reports what
    /// it changed remotely (a station added here is no longer remote).
    pub fn applied(&mut self, vni: u32, op: LocalOp) {
        let Some(v) = self.vnis.get_mut(&vni) else {
            return;
        };
        let Some(sh) = v.shadow else { return };
        match op {
            LocalOp::Add(mac) => {
                v.port.insert(mac, (sh.adv, nud::NOARP));
                v.dirty.insert(mac);
            }
            LocalOp::Del(mac) => {
                if v.port.get(&mac).is_some_and(|(p, _)| *p == sh.adv) {
                    v.port.remove(&mac);
                }
                v.dirty.insert(mac);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fdb::{FLOOD_MAC, ntf};
    use proptest::prelude::*;

    const SH: Shadow = Shadow {
        vni: 100,
        bridge: IfIndex(10),
        vxlan: IfIndex(11),
        adv: IfIndex(12),
    };

    fn mac(last: u8) -> Mac {
        [2, 0, 0, 0, 0, last]
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// zebra's remote MAC: a bridge entry on the vxlan port and the vxlan's own entry.
    fn remote(m: Mac, vtep: &str) -> [FdbEvent; 2] {
        [
            FdbEvent::New(bridge_entry(m, SH.vxlan, nud::REACHABLE, ntf::EXT_LEARNED)),
            FdbEvent::New(vxlan_entry(m, vtep)),
        ]
    }

    fn bridge_entry(m: Mac, port: IfIndex, state: u16, flags: u8) -> FdbEntry {
        FdbEntry {
            ifindex: port,
            mac: m,
            dst: None,
            master: Some(SH.bridge),
            vlan: None,
            vni: None,
            state,
            flags: flags | ntf::MASTER,
        }
    }

    fn vxlan_entry(m: Mac, vtep: &str) -> FdbEntry {
        FdbEntry {
            ifindex: SH.vxlan,
            mac: m,
            dst: Some(ip(vtep)),
            master: None,
            vlan: None,
            vni: None,
            state: if m == FLOOD_MAC {
                nud::NOARP | nud::PERMANENT
            } else {
                nud::REACHABLE
            },
            flags: ntf::SELF | ntf::EXT_LEARNED,
        }
    }

    fn mirror() -> Mirror {
        let mut m = Mirror::new();
        m.set_shadows(&[SH], &mut Vec::new());
        m
    }

    fn apply_all(m: &mut Mirror, evs: &[FdbEvent]) -> Vec<RemoteEvent> {
        let mut out = Vec::new();
        evs.iter().for_each(|e| m.apply(e));
        m.settle(&mut out);
        out
    }

    #[test]
    fn a_remote_mac_needs_both_entries() {
        let mut m = mirror();
        let [b, x] = remote(mac(1), "192.168.0.2");
        assert!(apply_all(&mut m, &[b]).is_empty(), "bridge entry alone");
        let out = apply_all(&mut m, &[x]);
        assert_eq!(
            out,
            vec![RemoteEvent::Station {
                vni: 100,
                mac: mac(1),
                vtep: ip("192.168.0.2")
            }]
        );
        assert_eq!(m.remote_stations(100), vec![(mac(1), ip("192.168.0.2"))]);
        // The same again: nothing to report.
        assert!(apply_all(&mut m, &remote(mac(1), "192.168.0.2")).is_empty());
    }

    #[test]
    fn moves_and_withdrawals() {
        let mut m = mirror();
        apply_all(&mut m, &remote(mac(1), "192.168.0.2"));
        // zebra replaces the vxlan entry: the station moved to .3.
        let out = apply_all(&mut m, &[FdbEvent::New(vxlan_entry(mac(1), "192.168.0.3"))]);
        assert_eq!(
            out,
            vec![RemoteEvent::Station {
                vni: 100,
                mac: mac(1),
                vtep: ip("192.168.0.3")
            }]
        );
        // A late deletion of the old VTEP's entry changes nothing.
        assert!(apply_all(&mut m, &[FdbEvent::Del(vxlan_entry(mac(1), "192.168.0.2"))]).is_empty());
        // Withdrawn: both entries go (either order).
        let out = apply_all(
            &mut m,
            &[
                FdbEvent::Del(bridge_entry(
                    mac(1),
                    SH.vxlan,
                    nud::REACHABLE,
                    ntf::EXT_LEARNED,
                )),
                FdbEvent::Del(vxlan_entry(mac(1), "192.168.0.3")),
            ],
        );
        assert_eq!(
            out,
            vec![RemoteEvent::StationGone {
                vni: 100,
                mac: mac(1),
                vtep: ip("192.168.0.3")
            }]
        );
        assert!(m.remote_stations(100).is_empty());
    }

    #[test]
    fn a_station_that_moves_here_is_no_longer_remote() {
        let mut m = mirror();
        apply_all(&mut m, &remote(mac(1), "192.168.0.2"));
        // flowd's static entry on the advertise port replaces the bridge entry; zebra
        // leaves the vxlan device's entry behind.
        let out = apply_all(
            &mut m,
            &[FdbEvent::New(bridge_entry(
                mac(1),
                SH.adv,
                nud::NOARP,
                ntf::EXT_LEARNED,
            ))],
        );
        assert_eq!(
            out,
            vec![RemoteEvent::StationGone {
                vni: 100,
                mac: mac(1),
                vtep: ip("192.168.0.2")
            }]
        );
        assert_eq!(m.local_stations(100), BTreeSet::from([mac(1)]));
        // ...and when it moves away again, zebra moves the bridge entry to the vxlan port.
        let out = apply_all(&mut m, &remote(mac(1), "192.168.0.3"));
        assert_eq!(out.len(), 1);
        assert!(m.local_stations(100).is_empty());
    }

    #[test]
    fn flood_entries_make_the_flood_list() {
        let mut m = mirror();
        let out = apply_all(
            &mut m,
            &[
                FdbEvent::New(vxlan_entry(FLOOD_MAC, "192.168.0.3")),
                FdbEvent::New(vxlan_entry(FLOOD_MAC, "192.168.0.2")),
                FdbEvent::New(vxlan_entry(FLOOD_MAC, "192.168.0.2")),
            ],
        );
        assert_eq!(out.len(), 1, "one report for the batch");
        assert_eq!(m.flood_list(100), &[ip("192.168.0.2"), ip("192.168.0.3")]);
        let out = apply_all(
            &mut m,
            &[FdbEvent::Del(vxlan_entry(FLOOD_MAC, "192.168.0.3"))],
        );
        assert_eq!(
            out,
            vec![RemoteEvent::FloodList {
                vni: 100,
                vteps: vec![ip("192.168.0.2")]
            }]
        );
    }

    #[test]
    fn other_devices_and_permanent_entries_are_ignored() {
        let mut m = mirror();
        let mut own = bridge_entry(mac(9), SH.vxlan, nud::PERMANENT, 0);
        let mut other = bridge_entry(mac(8), IfIndex(99), nud::NOARP, 0);
        let mut out = apply_all(
            &mut m,
            &[FdbEvent::New(own.clone()), FdbEvent::New(other.clone())],
        );
        own.ifindex = SH.adv;
        other.master = Some(IfIndex(98));
        other.ifindex = SH.adv;
        out.extend(apply_all(
            &mut m,
            &[FdbEvent::New(own), FdbEvent::New(other)],
        ));
        assert!(out.is_empty());
        assert!(m.local_stations(100).is_empty());
    }

    #[test]
    fn vlan_copies_of_an_entry_are_ignored() {
        let mut m = mirror();
        apply_all(&mut m, &remote(mac(1), "192.168.0.2"));
        // A kernel whose ports have a default VLAN: each entry comes twice; the copy
        // for VLAN 1 going away first must not withdraw the station.
        let mut copy = bridge_entry(mac(1), SH.vxlan, nud::REACHABLE, ntf::EXT_LEARNED);
        copy.vlan = Some(1);
        assert!(apply_all(&mut m, &[FdbEvent::New(copy.clone())]).is_empty());
        assert!(apply_all(&mut m, &[FdbEvent::Del(copy)]).is_empty());
        assert_eq!(m.remote_stations(100).len(), 1);
    }

    #[test]
    fn resync_reports_only_the_difference() {
        let mut m = mirror();
        apply_all(&mut m, &remote(mac(1), "192.168.0.2"));
        apply_all(&mut m, &remote(mac(2), "192.168.0.2"));
        m.begin_resync();
        for e in remote(mac(1), "192.168.0.2")
            .iter()
            .chain(&remote(mac(3), "192.168.0.3"))
        {
            m.apply(e);
        }
        let mut out = Vec::new();
        m.settle(&mut out);
        assert_eq!(
            out,
            vec![
                RemoteEvent::StationGone {
                    vni: 100,
                    mac: mac(2),
                    vtep: ip("192.168.0.2")
                },
                RemoteEvent::Station {
                    vni: 100,
                    mac: mac(3),
                    vtep: ip("192.168.0.3")
                },
            ]
        );
    }

    #[test]
    fn new_devices_withdraw_what_the_old_ones_reported() {
        let mut m = mirror();
        apply_all(&mut m, &remote(mac(1), "192.168.0.2"));
        apply_all(
            &mut m,
            &[FdbEvent::New(vxlan_entry(FLOOD_MAC, "192.168.0.2"))],
        );
        let mut out = Vec::new();
        let again = Shadow {
            vxlan: IfIndex(21),
            ..SH
        };
        m.set_shadows(&[again], &mut out);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(m.is_shadow(IfIndex(21)) && !m.is_shadow(IfIndex(11)));
        m.set_shadows(&[], &mut out);
        assert_eq!(m.shadows().count(), 0);
    }

    /// The kernel's bridge, as far as flowd's requests go: `Add` puts a static entry on
    /// the advertise port (moving one from another port), `Del` removes the entry if it is
    /// on the advertise port. Returns the notifications it would send.
    fn kernel(entries: &mut HashMap<Mac, (IfIndex, u16)>, op: LocalOp) -> Vec<FdbEvent> {
        match op {
            LocalOp::Add(mac) => {
                entries.insert(mac, (SH.adv, nud::NOARP));
                vec![FdbEvent::New(bridge_entry(mac, SH.adv, nud::NOARP, 0))]
            }
            LocalOp::Del(mac) => match entries.get(&mac) {
                Some((p, st)) if *p == SH.adv => {
                    let st = *st;
                    entries.remove(&mac);
                    vec![FdbEvent::Del(bridge_entry(mac, SH.adv, st, 0))]
                }
                _ => Vec::new(),
            },
        }
    }

    proptest! {
        /// Dump and diff is idempotent: whatever the kernel holds (static and dynamic
        /// entries on the advertise port, remote ones on the vxlan port), applying the
        /// diff toward any wanted set leaves the kernel's local stations equal to it, and
        /// the next diff empty; applying the same requests again changes nothing.
        #[test]
        fn dump_and_diff_is_idempotent(
            held in prop::collection::vec((0u8..12, 0u8..3), 0..12),
            want in prop::collection::btree_set(0u8..12, 0..12),
            acknowledged_early in any::<bool>(),
        ) {
            let mut m = mirror();
            let mut entries = HashMap::new();
            for (i, kind) in held {
                let (port, state) = match kind {
                    0 => (SH.adv, nud::NOARP),
                    1 => (SH.adv, nud::REACHABLE),
                    _ => (SH.vxlan, nud::REACHABLE),
                };
                entries.insert(mac(i), (port, state));
                m.apply(&FdbEvent::New(bridge_entry(mac(i), port, state, 0)));
            }
            let want: BTreeSet<Mac> = want.into_iter().map(mac).collect();
            let ops = m.diff_local(100, &want);
            for op in &ops {
                if acknowledged_early {
                    m.applied(100, *op);
                }
                for ev in kernel(&mut entries, *op) {
                    m.apply(&ev);
                }
            }
            m.settle(&mut Vec::new());
            prop_assert_eq!(&m.local_stations(100), &want);
            prop_assert!(m.diff_local(100, &want).is_empty());
            let kernel_local: BTreeSet<Mac> = entries
                .iter()
                .filter(|(_, (p, st))| *p == SH.adv && st & nud::NOARP != 0)
                .map(|(m, _)| *m)
                .collect();
            prop_assert_eq!(&kernel_local, &want);
            for op in &ops {
                for ev in kernel(&mut entries, *op) {
                    m.apply(&ev);
                }
            }
            prop_assert_eq!(&m.local_stations(100), &want);
        }
    }
}
