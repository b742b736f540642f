//! [`Fabric`]: the shadow devices of this host's EVPN networks, kept as wanted, and
//! their FDB mirrored: the I/O around [`Mirror`]. Synchronous and single-threaded: its
//! owner (flowd's daemon) runs it on one thread and calls it in a loop.

use crate::error::{Error, Result};
use crate::fdb::{self, FdbEvent};
use crate::link::{self, LinkFacts, Names, Role, ShadowSpec};
use crate::mirror::{LocalOp, Mirror, RemoteEvent, Shadow};
use crate::netlink::{Events, Received, Requester};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::RouteNetlinkMessage;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;
use vocab::{IfIndex, Mac};

/// What [`Fabric::set_networks`] did to the devices, for the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetupReport {
    /// Devices created.
    pub created: Vec<String>,
    /// Devices found as wanted and kept (a restart).
    pub adopted: Vec<String>,
    /// Devices deleted and created again (their parameters differed).
    pub recreated: Vec<String>,
    /// Devices of networks no longer wanted, deleted.
    pub removed: Vec<String>,
}

/// What one [`Fabric::poll`] saw besides remote changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollReport {
    /// FDB notifications read.
    pub fdb_events: usize,
    /// A shadow device was deleted behind flowd's back: call
    /// [`Fabric::set_networks`] again.
    pub devices_lost: bool,
    /// The event socket overflowed; the FDB was dumped again.
    pub resynced: bool,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FabricStats {
    /// FDB notifications read.
    pub fdb_events: u64,
    /// Full FDB dumps (start, and after overruns).
    pub resyncs: u64,
    /// Local stations written to an advertise port.
    pub local_added: u64,
    /// Local stations removed.
    pub local_removed: u64,
    /// Requests the kernel refused.
    pub errors: u64,
}

/// The shadow devices and their FDB. See the module docs.
pub struct Fabric {
    events: Events,
    req: Requester,
    mirror: Mirror,
    specs: BTreeMap<u32, ShadowSpec>,
    stats: FabricStats,
}

impl std::fmt::Debug for Fabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fabric")
            .field("specs", &self.specs)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// `/proc/sys/net/ipv6/conf/DEV/disable_ipv6` = 1: the host must not speak on a shadow
/// device (a kernel without IPv6 has no such file, which is fine).
fn disable_ipv6(name: &str) {
    let path = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    if std::path::Path::new(&path).exists()
        && let Err(e) = std::fs::write(&path, "1")
    {
        tracing::warn!(device = name, error = %e, "evpn: cannot disable IPv6");
    }
}

impl Fabric {
    /// Opens the event socket (subscribed first, so nothing is missed between a dump and
    /// the events) and the request socket, in the calling thread's network namespace.
    pub fn open() -> Result<Self> {
        let events = Events::open(4 << 20)?;
        let req = Requester::open()?;
        Ok(Self {
            events,
            req,
            mirror: Mirror::new(),
            specs: BTreeMap::new(),
            stats: FabricStats::default(),
        })
    }

    /// A handle that ends a [`Fabric::poll`] wait from another thread.
    pub fn waker(&self) -> crate::netlink::Waker {
        self.events.waker()
    }

    /// The counters.
    pub fn stats(&self) -> FabricStats {
        self.stats
    }

    fn links(&mut self) -> Result<HashMap<String, LinkFacts>> {
        let req = RouteNetlinkMessage::GetLink(Default::default());
        Ok(self
            .req
            .dump("links", req)?
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => link::facts(l),
                _ => None,
            })
            .map(|f| (f.name.clone(), f))
            .collect())
    }

    fn create(&mut self, what: &str, m: netlink_packet_route::link::LinkMessage) -> Result<()> {
        self.req
            .request(
                what,
                RouteNetlinkMessage::NewLink(m),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .map_err(Error::from)
    }

    fn delete(&mut self, name: &str, ifindex: IfIndex) -> Result<()> {
        self.req
            .request(
                &format!("delete {name}"),
                RouteNetlinkMessage::DelLink(link::delete(ifindex)),
                0,
            )
            .map_err(Error::from)
    }

    /// Creates, adopts, re-creates or deletes shadow devices so that exactly the networks
    /// of `specs` have them, all configured and up; then reads their FDB again. Remote
    /// changes go to `out`.
    pub fn set_networks(
        &mut self,
        specs: &[ShadowSpec],
        out: &mut Vec<RemoteEvent>,
    ) -> Result<SetupReport> {
        let mut report = SetupReport::default();
        let want: BTreeMap<u32, ShadowSpec> = specs.iter().map(|s| (s.vni, *s)).collect();
        let links = self.links()?;
        self.remove_unwanted(&links, &want, &mut report)?;
        for spec in want.values() {
            self.ensure(spec, &mut report)?;
        }
        let links = self.links()?;
        let mut shadows = Vec::new();
        for spec in want.values() {
            let n = Names::of(spec.vni);
            let get = |name: &str| {
                links
                    .get(name)
                    .map(|f| f.ifindex)
                    .ok_or_else(|| Error::Device {
                        name: name.to_string(),
                        why: "vanished while being configured".into(),
                    })
            };
            shadows.push(Shadow {
                vni: spec.vni,
                bridge: get(&n.bridge)?,
                vxlan: get(&n.vxlan)?,
                adv: get(&n.adv)?,
            });
            for name in [&n.bridge, &n.vxlan, &n.adv, &n.peer] {
                if let Some(f) = links.get(name.as_str())
                    && !f.up
                {
                    self.req
                        .request(
                            &format!("set {name} up"),
                            RouteNetlinkMessage::SetLink(link::set_up(f.ifindex)),
                            0,
                        )
                        .map_err(Error::from)?;
                }
            }
        }
        self.specs = want;
        self.mirror.set_shadows(&shadows, out);
        self.resync(out)?;
        Ok(report)
    }

    fn remove_unwanted(
        &mut self,
        links: &HashMap<String, LinkFacts>,
        want: &BTreeMap<u32, ShadowSpec>,
        report: &mut SetupReport,
    ) -> Result<()> {
        let mut names: Vec<&LinkFacts> = links
            .values()
            .filter(|f| Names::vni_of(&f.name).is_some_and(|v| !want.contains_key(&v)))
            .filter(|f| !f.name.starts_with("evpe-"))
            .filter(|f| matches!(f.kind.as_deref(), Some("bridge" | "vxlan" | "veth")))
            .collect();
        names.sort_by(|a, b| a.name.cmp(&b.name));
        for f in names {
            self.delete(&f.name, f.ifindex)?;
            report.removed.push(f.name.clone());
        }
        Ok(())
    }

    fn ensure(&mut self, spec: &ShadowSpec, report: &mut SetupReport) -> Result<()> {
        let n = Names::of(spec.vni);
        let links = self.links()?;
        let bridge = match links.get(&n.bridge) {
            Some(f) if f.kind.as_deref() == Some("bridge") => {
                report.adopted.push(n.bridge.clone());
                f.ifindex
            }
            Some(f) => {
                return Err(Error::Device {
                    name: n.bridge.clone(),
                    why: format!(
                        "exists and is a {} device, not flowd's bridge",
                        f.kind.as_deref().unwrap_or("plain")
                    ),
                });
            }
            None => {
                self.create(
                    &format!("create bridge {}", n.bridge),
                    link::new_bridge(&n.bridge),
                )?;
                disable_ipv6(&n.bridge);
                report.created.push(n.bridge.clone());
                self.links()?
                    .get(&n.bridge)
                    .map(|f| f.ifindex)
                    .ok_or_else(|| Error::Device {
                        name: n.bridge.clone(),
                        why: "not found after creation".into(),
                    })?
            }
        };
        // RTM_NEWLINK on an existing device (see `ensure_port`), before any port joins.
        let pvid = self
            .req
            .request(
                &format!("set {} vlan_default_pvid 0", n.bridge),
                RouteNetlinkMessage::NewLink(link::bridge_no_default_pvid(bridge)),
                0,
            )
            .map_err(Error::from);
        match pvid {
            Err(Error::Netlink(rtnl::Error::Kernel { source, .. }))
                if source.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
            other => other?,
        }
        let vx = link::new_vxlan(&n.vxlan, spec, bridge);
        self.ensure_port(&links, &n.vxlan, Role::Vxlan, spec, bridge, vx, report)?;
        let adv = link::new_veth(&n.adv, &n.peer, bridge);
        self.ensure_port(&links, &n.adv, Role::Adv, spec, bridge, adv, report)?;
        disable_ipv6(&n.peer);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn ensure_port(
        &mut self,
        links: &HashMap<String, LinkFacts>,
        name: &str,
        role: Role,
        spec: &ShadowSpec,
        bridge: IfIndex,
        create: netlink_packet_route::link::LinkMessage,
        report: &mut SetupReport,
    ) -> Result<()> {
        let existing = links.get(name);
        match existing.map(|f| link::mismatch(f, role, spec, bridge)) {
            Some(None) => report.adopted.push(name.to_string()),
            Some(Some(why)) => {
                let f = existing.ok_or_else(|| Error::Device {
                    name: name.into(),
                    why: why.clone(),
                })?;
                tracing::info!(device = name, %why, "evpn: re-creating a shadow device");
                self.delete(name, f.ifindex)?;
                self.create(&format!("create {name}"), create)?;
                report.recreated.push(name.to_string());
            }
            None => {
                self.create(&format!("create {name}"), create)?;
                report.created.push(name.to_string());
            }
        }
        disable_ipv6(name);
        let ifindex = self
            .links()?
            .get(name)
            .map(|f| f.ifindex)
            .ok_or_else(|| Error::Device {
                name: name.into(),
                why: "not found after creation".into(),
            })?;
        // RTM_NEWLINK on an existing device: RTM_SETLINK ignores IFLA_LINKINFO, where
        // the bridge port's settings are (`ip link set DEV type bridge_slave ...`).
        self.req
            .request(
                &format!("set {name} bridge port learning off"),
                RouteNetlinkMessage::NewLink(link::bridge_port(ifindex)),
                0,
            )
            .map_err(Error::from)
    }

    /// Dumps the FDB again and reports what differs from what was reported.
    pub fn resync(&mut self, out: &mut Vec<RemoteEvent>) -> Result<()> {
        let dump = crate::netlink::dump_fdb(&mut self.req)?;
        self.mirror.begin_resync();
        for e in dump {
            self.mirror.apply(&FdbEvent::New(e));
        }
        self.mirror.settle(out);
        self.stats.resyncs += 1;
        Ok(())
    }

    /// Waits up to `wait` for notifications and applies every one queued; remote changes
    /// go to `out`.
    pub fn poll(&mut self, wait: Duration, out: &mut Vec<RemoteEvent>) -> Result<PollReport> {
        let mut report = PollReport::default();
        let mut msgs = Vec::new();
        let mut got = self.events.recv(wait, &mut msgs)?;
        if got == Received::Messages {
            got = self.events.drain(&mut msgs)?;
        }
        if got == Received::Overrun {
            tracing::warn!("evpn: netlink events overflowed; dumping the FDB again");
            self.events.drain(&mut Vec::new())?;
            self.resync(out)?;
            report.resynced = true;
            report.devices_lost = true;
            return Ok(report);
        }
        for msg in msgs {
            let ev = match msg {
                RouteNetlinkMessage::NewNeighbour(n) => fdb::entry(&n).map(FdbEvent::New),
                RouteNetlinkMessage::DelNeighbour(n) => fdb::entry(&n).map(FdbEvent::Del),
                RouteNetlinkMessage::DelLink(l) => {
                    report.devices_lost |= self.mirror.is_shadow(IfIndex(l.header.index));
                    None
                }
                _ => None,
            };
            if let Some(ev) = ev {
                report.fdb_events += 1;
                self.mirror.apply(&ev);
            }
        }
        self.mirror.settle(out);
        self.stats.fdb_events += report.fdb_events as u64;
        Ok(report)
    }

    /// The networks with shadow devices, and the devices.
    pub fn shadows(&self) -> Vec<Shadow> {
        self.mirror.shadows().copied().collect()
    }

    /// The remote stations of a VNI.
    pub fn remote_stations(&self, vni: u32) -> Vec<(Mac, IpAddr)> {
        self.mirror.remote_stations(vni)
    }

    /// A VNI's flood list.
    pub fn flood_list(&self, vni: u32) -> Vec<IpAddr> {
        self.mirror.flood_list(vni).to_vec()
    }

    /// The local stations the kernel holds for a VNI (static entries on its advertise
    /// port).
    pub fn local_stations(&self, vni: u32) -> BTreeSet<Mac> {
        self.mirror.local_stations(vni)
    }

    /// Makes a VNI's local stations in the kernel exactly `want` (adding, moving here,
    /// removing entries on the advertise port). Returns the requests made; a refused one
    /// is logged and counted (the next sync retries it).
    pub fn sync_local(
        &mut self,
        vni: u32,
        want: &BTreeSet<Mac>,
        out: &mut Vec<RemoteEvent>,
    ) -> Vec<LocalOp> {
        let ops = self.mirror.diff_local(vni, want);
        self.write_local(vni, &ops, out);
        ops
    }

    /// Sets whether one station of a VNI is local (a no-op if the kernel already agrees).
    pub fn set_local(&mut self, vni: u32, mac: Mac, local: bool, out: &mut Vec<RemoteEvent>) {
        let have = self.mirror.local_stations(vni).contains(&mac);
        let op = match (local, have) {
            (true, false) => LocalOp::Add(mac),
            (false, true) => LocalOp::Del(mac),
            _ => return,
        };
        self.write_local(vni, &[op], out);
    }

    /// Writes local station requests for a VNI.
    pub fn write_local(&mut self, vni: u32, ops: &[LocalOp], out: &mut Vec<RemoteEvent>) {
        let Some(adv) = self.mirror.shadows().find(|s| s.vni == vni).map(|s| s.adv) else {
            return;
        };
        let (added, removed): (Vec<LocalOp>, Vec<LocalOp>) =
            ops.iter().partition(|o| matches!(o, LocalOp::Add(_)));
        let msgs = |v: &[LocalOp]| v.iter().map(|o| op_msg(adv, *o)).collect::<Vec<_>>();
        let r_add = self.req.batch(msgs(&added), NLM_F_CREATE | NLM_F_REPLACE);
        let r_del = self.req.batch(msgs(&removed), 0);
        for (op, r) in added.iter().zip(r_add).chain(removed.iter().zip(r_del)) {
            match r {
                Ok(()) => {
                    match op {
                        LocalOp::Add(_) => self.stats.local_added += 1,
                        LocalOp::Del(_) => self.stats.local_removed += 1,
                    }
                    self.mirror.applied(vni, *op);
                }
                // Already gone: what was wanted.
                Err(e)
                    if matches!(op, LocalOp::Del(_)) && e.raw_os_error() == Some(libc::ENOENT) =>
                {
                    self.mirror.applied(vni, *op);
                }
                Err(e) => {
                    self.stats.errors += 1;
                    let (verb, mac) = match op {
                        LocalOp::Add(m) => ("add", m),
                        LocalOp::Del(m) => ("remove", m),
                    };
                    tracing::warn!(vni, mac = %fdb::mac_str(mac), error = %e, "evpn: cannot {verb} a local station");
                }
            }
        }
        self.mirror.settle(out);
    }

    /// Deletes every shadow device (zebra withdraws the networks' routes).
    pub fn remove_all(&mut self) -> Result<Vec<String>> {
        let mut report = SetupReport::default();
        let links = self.links()?;
        self.remove_unwanted(&links, &BTreeMap::new(), &mut report)?;
        self.specs.clear();
        self.mirror.set_shadows(&[], &mut Vec::new());
        Ok(report.removed)
    }
}

fn op_msg(adv: IfIndex, op: LocalOp) -> RouteNetlinkMessage {
    match op {
        LocalOp::Add(mac) => RouteNetlinkMessage::NewNeighbour(fdb::local_station(adv, mac)),
        LocalOp::Del(mac) => RouteNetlinkMessage::DelNeighbour(fdb::local_station_gone(adv, mac)),
    }
}
