//! BGP EVPN through FRR: carries stations between the slow path and the `evpn` crate's
//! shadow devices.
//!
//! ```text
//! slow path --StationObserver (keys)--> dirty set --+
//!                                                   v
//!                          flowd-evpn thread: Fabric::set_local / sync_local --> evad-N FDB --> zebra
//! slow path <--RemoteStations (updates)-- Fabric::poll (evvx-N FDB) <------------------------- zebra
//! ```
//!
//! - **Local stations out.** The slow path tells which stations' entries changed; the
//!   thread reads each one's entry (never a stale copy: see
//!   `datapath::slowpath::remote`) and makes the kernel agree: a station learned or
//!   configured on a representor of an EVPN network is a static entry on the network's
//!   advertise port, any other is not. Every 30 s, and whenever the devices were
//!   re-created or the event socket overflowed, a full dump and diff repairs whatever
//!   changed behind flowd's back.
//! - **Remote stations in.** zebra's entries on the shadow vxlan device become
//!   [`RemoteUpdate`]s: control-plane stations and flood lists in the slow path, whose
//!   changes revalidate only the flows they affect.
//! - **Restart.** Shadow devices that exist are adopted (zebra sees no change); the
//!   static entries a previous run left stay advertised for `[evpn] restart_grace_ms`
//!   unless the slow path learns them again (they become its own) or zebra hears that
//!   they moved; then the rest is removed. A clean stop removes the devices (zebra
//!   withdraws the networks); a stop with `--keep-offloads` or a crash leaves them.

use super::DaemonError;
use super::lock;
use crate::config::{Config, EvpnConfig};
use datapath::flow::Mac;
use datapath::slowpath::{
    Engine, Location, MacKey, MacKind, NetworkId, RemoteStations, RemoteUpdate, StationObserver,
};
use evpn::{Fabric, RemoteEvent, ShadowSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest the thread waits for a netlink event; station changes and commands wake
/// it at once.
const TICK: Duration = Duration::from_millis(500);
/// How often every network's local stations are dumped and diffed.
const FULL_SYNC: Duration = Duration::from_secs(30);

/// The EVPN networks of a configuration: network id -> shadow device spec, with the
/// `[evpn]` settings of `settings` (those in force since the start).
pub fn specs(cfg: &Config, settings: &EvpnConfig) -> BTreeMap<NetworkId, ShadowSpec> {
    cfg.networks
        .iter()
        .filter(|n| n.evpn)
        .filter_map(|n| {
            let crate::config::Segment::Vni(vni) = n.segment else {
                return None;
            };
            let Some(IpAddr::V4(local)) = n.local_vtep else {
                return None;
            };
            let spec = ShadowSpec {
                vni,
                local,
                udp_port: settings.udp_port,
            };
            Some((super::build::network_id(n), spec))
        })
        .collect()
}

/// What the thread shares with the daemon.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// Remove the shadow devices when stopping.
    remove_on_stop: AtomicBool,
    /// Stations whose entries changed.
    dirty: Mutex<BTreeSet<(NetworkId, [u8; 6])>>,
    /// A new set of networks to apply (a reload).
    pending: Mutex<Option<BTreeMap<NetworkId, ShadowSpec>>>,
    /// The EVPN networks in force (what the observer keeps keys of).
    networks: Mutex<BTreeSet<NetworkId>>,
    /// Counters, for `flowctl stats`.
    stats: Mutex<EvpnStats>,
    /// Wakes the thread (its netlink wait).
    waker: std::sync::OnceLock<evpn::netlink::Waker>,
}

impl Shared {
    fn wake(&self) {
        if let Some(w) = self.waker.get() {
            w.wake();
        }
    }
}

/// Counters of the EVPN side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EvpnStats {
    /// FDB notifications read from the shadow devices.
    pub fdb_events: u64,
    /// Remote station updates given to the slow path (added, moved, withdrawn).
    pub remote_updates: u64,
    /// Flood list updates given to the slow path.
    pub flood_updates: u64,
    /// Local stations written to advertise ports.
    pub local_added: u64,
    /// Local stations removed from advertise ports.
    pub local_removed: u64,
    /// Full dumps of the FDB (start, overruns).
    pub resyncs: u64,
    /// Requests the kernel refused.
    pub errors: u64,
    /// Entries a previous run left, kept while the restart grace lasts.
    pub kept: u64,
}

/// Hears the slow path's station changes (cheap: inserts keys into a set).
struct Observer(Arc<Shared>);

impl StationObserver for Observer {
    fn stations_changed(&self, stations: &[MacKey]) {
        let nets = lock(&self.0.networks);
        let mut dirty = lock(&self.0.dirty);
        let was_empty = dirty.is_empty();
        dirty.extend(
            stations
                .iter()
                .filter(|(n, _)| nets.contains(n))
                .map(|(n, m)| (*n, m.0)),
        );
        if was_empty && !dirty.is_empty() {
            self.0.wake();
        }
    }
}

/// The running EVPN side (absent when no network has `evpn = true`).
pub struct Evpn {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The daemon's handle: starts the EVPN side when a network needs it.
#[derive(Default)]
pub struct EvpnHandle {
    running: Mutex<Option<Evpn>>,
    /// `[evpn]` as read at start (a reload does not change it).
    settings: EvpnConfig,
}

/// The local stations of a network in the slow path: learned or configured on a local
/// attachment (never a control-plane entry).
fn local_stations(engine: &Engine, network: NetworkId) -> BTreeSet<[u8; 6]> {
    engine
        .read()
        .macs()
        .iter()
        .filter(|((n, _), e)| *n == network && is_local(e.location(), e.kind()))
        .map(|((_, m), _)| m.0)
        .collect()
}

fn is_local(loc: Location, kind: MacKind) -> bool {
    matches!(loc, Location::Local(_)) && kind != MacKind::Control
}

/// The thread's state.
struct Worker {
    fabric: Fabric,
    engine: Arc<Engine>,
    shared: Arc<Shared>,
    specs: BTreeMap<NetworkId, ShadowSpec>,
    /// Static entries a previous run left, kept until `grace_until` (per VNI).
    kept: BTreeMap<u32, BTreeSet<[u8; 6]>>,
    grace_until: Instant,
    last_full: Instant,
}

impl Worker {
    fn network_of(&self, vni: u32) -> Option<NetworkId> {
        self.specs
            .iter()
            .find(|(_, s)| s.vni == vni)
            .map(|(n, _)| *n)
    }

    /// Gives remote changes to the slow path.
    fn remote(&mut self, events: Vec<RemoteEvent>) {
        if events.is_empty() {
            return;
        }
        let mut updates = Vec::with_capacity(events.len());
        let (mut stations, mut floods) = (0u64, 0u64);
        for ev in events {
            match ev {
                RemoteEvent::Station { vni, mac, vtep } => {
                    // zebra says it lives elsewhere: a previous run's entry is not kept.
                    if let Some(k) = self.kept.get_mut(&vni) {
                        k.remove(&mac);
                    }
                    let Some(network) = self.network_of(vni) else {
                        continue;
                    };
                    tracing::debug!(vni, mac = %Mac(mac), %vtep, "evpn: remote station");
                    stations += 1;
                    updates.push(RemoteUpdate::Station {
                        network,
                        mac: Mac(mac),
                        vtep,
                    });
                }
                RemoteEvent::StationGone { vni, mac, vtep } => {
                    let Some(network) = self.network_of(vni) else {
                        continue;
                    };
                    tracing::debug!(vni, mac = %Mac(mac), %vtep, "evpn: remote station withdrawn");
                    stations += 1;
                    updates.push(RemoteUpdate::StationGone {
                        network,
                        mac: Mac(mac),
                        vtep,
                    });
                }
                RemoteEvent::FloodList { vni, vteps } => {
                    let Some(network) = self.network_of(vni) else {
                        continue;
                    };
                    tracing::info!(vni, vteps = ?vteps, "evpn: flood list");
                    floods += 1;
                    updates.push(RemoteUpdate::FloodList { network, vteps });
                }
                other => tracing::debug!(event = ?other, "evpn: event not for the slow path"),
            }
        }
        let report = self.engine.apply_remote(&updates);
        for (u, e) in &report.refused {
            tracing::warn!(update = ?u, error = %e, "evpn: the slow path refused an update");
        }
        let mut st = lock(&self.shared.stats);
        st.remote_updates += stations;
        st.flood_updates += floods;
    }

    fn kept_has(&self, vni: u32, mac: &[u8; 6]) -> bool {
        self.kept.get(&vni).is_some_and(|k| k.contains(mac))
    }

    /// Makes the kernel agree with the slow path on the stations that changed.
    fn local_changes(&mut self) {
        let keys = std::mem::take(&mut *lock(&self.shared.dirty));
        if keys.is_empty() {
            return;
        }
        let wanted: Vec<(u32, [u8; 6], bool)> = {
            let sp = self.engine.read();
            keys.iter()
                .filter_map(|(n, m)| {
                    let vni = self.specs.get(n)?.vni;
                    let local = sp
                        .macs()
                        .get(*n, Mac(*m))
                        .is_some_and(|e| is_local(e.location(), e.kind()));
                    Some((vni, *m, local))
                })
                .collect()
        };
        let mut events = Vec::new();
        for (vni, mac, local) in wanted {
            let local = local || self.kept_has(vni, &mac);
            self.fabric.set_local(vni, mac, local, &mut events);
        }
        self.remote(events);
    }

    /// Dumps and diffs every network's local stations.
    fn full_sync(&mut self) {
        let mut events = Vec::new();
        let specs: Vec<(NetworkId, u32)> = self.specs.iter().map(|(n, s)| (*n, s.vni)).collect();
        for (network, vni) in specs {
            let mut want = local_stations(&self.engine, network);
            if Instant::now() < self.grace_until
                && let Some(k) = self.kept.get(&vni)
            {
                want.extend(k.iter().copied());
            }
            let ops = self.fabric.sync_local(vni, &want, &mut events);
            if !ops.is_empty() {
                tracing::info!(vni, requests = ops.len(), "evpn: local stations reconciled");
            }
        }
        self.remote(events);
        self.last_full = Instant::now();
    }

    /// (Re)creates the devices of `specs` and reads their FDB.
    fn set_networks(&mut self, specs: BTreeMap<NetworkId, ShadowSpec>) -> evpn::Result<()> {
        self.withdraw_leaving(&specs);
        let list: Vec<ShadowSpec> = specs.values().copied().collect();
        *lock(&self.shared.networks) = specs.keys().copied().collect();
        self.specs = specs;
        let mut events = Vec::new();
        let report = self.fabric.set_networks(&list, &mut events)?;
        if report != evpn::SetupReport::default() {
            tracing::info!(
                created = ?report.created, adopted = ?report.adopted,
                recreated = ?report.recreated, removed = ?report.removed,
                "evpn: shadow devices"
            );
        }
        self.remote(events);
        Ok(())
    }

    /// Networks that leave EVPN but stay configured lose what EVPN gave them (the slow
    /// path keeps their learned and static stations).
    fn withdraw_leaving(&mut self, next: &BTreeMap<NetworkId, ShadowSpec>) {
        let leaving: Vec<(NetworkId, u32)> = self
            .specs
            .iter()
            .filter(|(n, s)| next.get(n).is_none_or(|t| t.vni != s.vni))
            .map(|(n, s)| (*n, s.vni))
            .collect();
        let mut updates = Vec::new();
        for (network, vni) in leaving {
            if self.engine.read().networks().get(network).is_none() {
                continue;
            }
            updates.extend(
                self.fabric
                    .remote_stations(vni)
                    .into_iter()
                    .map(|(mac, vtep)| RemoteUpdate::StationGone {
                        network,
                        mac: Mac(mac),
                        vtep,
                    }),
            );
            updates.push(RemoteUpdate::FloodList {
                network,
                vteps: Vec::new(),
            });
            tracing::info!(
                vni,
                "evpn: network leaves EVPN; its remote stations and flood list withdrawn"
            );
        }
        if !updates.is_empty() {
            self.engine.apply_remote(&updates);
        }
    }

    fn publish(&self) {
        let f = self.fabric.stats();
        let mut st = lock(&self.shared.stats);
        st.fdb_events = f.fdb_events;
        st.local_added = f.local_added;
        st.local_removed = f.local_removed;
        st.resyncs = f.resyncs;
        st.errors = f.errors;
        st.kept = self.kept.values().map(|k| k.len() as u64).sum();
    }

    fn run(mut self) {
        while !self.shared.stop.load(Ordering::Relaxed) {
            let pending = lock(&self.shared.pending).take();
            if let Some(specs) = pending {
                if let Err(e) = self.set_networks(specs) {
                    tracing::error!(error = %e, "evpn: reconfiguration failed");
                }
                self.full_sync();
            }
            let mut events = Vec::new();
            match self.fabric.poll(TICK, &mut events) {
                Ok(r) if r.devices_lost => {
                    self.remote(events);
                    tracing::warn!("evpn: shadow devices changed behind flowd's back; restoring");
                    let specs = self.specs.clone();
                    if let Err(e) = self.set_networks(specs) {
                        tracing::error!(error = %e, "evpn: cannot restore the shadow devices");
                    }
                    self.full_sync();
                }
                Ok(_) => self.remote(events),
                Err(e) => {
                    tracing::warn!(error = %e, "evpn: netlink");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            self.local_changes();
            let now = Instant::now();
            if now >= self.grace_until && self.kept.values().any(|k| !k.is_empty()) {
                let n: usize = self.kept.values().map(BTreeSet::len).sum();
                tracing::info!(
                    stations = n,
                    "evpn: restart grace over; removing a previous run's stations not learned since"
                );
                self.kept.clear();
                self.full_sync();
            } else if now.duration_since(self.last_full) >= FULL_SYNC {
                self.full_sync();
            }
            self.publish();
        }
        if self.shared.remove_on_stop.load(Ordering::Relaxed) {
            match self.fabric.remove_all() {
                Ok(gone) => tracing::info!(devices = ?gone, "evpn: shadow devices removed"),
                Err(e) => tracing::warn!(error = %e, "evpn: cannot remove the shadow devices"),
            }
        }
    }
}

impl Evpn {
    /// Creates or adopts the shadow devices, gives the slow path what zebra installed
    /// already, reconciles the local stations (keeping a previous run's for the grace
    /// period), and starts the thread. Fails when the devices cannot be set up.
    fn start(cfg: &Config, engine: &Arc<Engine>) -> Result<Self, DaemonError> {
        let shared = Arc::new(Shared::default());
        let fabric = Fabric::open()?;
        let _ = shared.waker.set(fabric.waker());
        let mut w = Worker {
            fabric,
            engine: engine.clone(),
            shared: shared.clone(),
            specs: BTreeMap::new(),
            kept: BTreeMap::new(),
            grace_until: Instant::now() + Duration::from_millis(cfg.evpn.restart_grace_ms),
            last_full: Instant::now(),
        };
        w.set_networks(specs(cfg, &cfg.evpn))?;
        // From here on the slow path's changes are heard: its table read below is not
        // older than what the observer will report.
        if !engine.observe_stations(Arc::new(Observer(shared.clone()))) {
            tracing::warn!("evpn: another station observer is registered");
        }
        let specs: Vec<(NetworkId, u32)> = w.specs.iter().map(|(n, s)| (*n, s.vni)).collect();
        for (network, vni) in specs {
            let learned = local_stations(engine, network);
            let kept: BTreeSet<[u8; 6]> = w
                .fabric
                .local_stations(vni)
                .difference(&learned)
                .copied()
                .collect();
            if !kept.is_empty() {
                tracing::info!(
                    vni,
                    stations = kept.len(),
                    grace_ms = cfg.evpn.restart_grace_ms,
                    "evpn: keeping a previous run's local stations until learned again or the grace ends"
                );
            }
            w.kept.insert(vni, kept);
        }
        w.full_sync();
        w.publish();
        let thread = std::thread::Builder::new()
            .name("flowd-evpn".into())
            .spawn(move || w.run())?;
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    fn stop(&self, remove: bool) {
        self.shared.remove_on_stop.store(remove, Ordering::Relaxed);
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

impl EvpnHandle {
    /// Starts the EVPN side if a network has `evpn = true`; otherwise removes shadow
    /// devices a previous configuration left (best effort).
    pub fn start(cfg: &Config, engine: &Arc<Engine>) -> Result<Self, DaemonError> {
        let h = Self {
            running: Mutex::new(None),
            settings: cfg.evpn,
        };
        if specs(cfg, &h.settings).is_empty() {
            cleanup();
        } else {
            *lock(&h.running) = Some(Evpn::start(cfg, engine)?);
        }
        Ok(h)
    }

    /// A reload: applies the EVPN networks of `cfg` (starting the EVPN side if needed).
    pub fn reconfigure(&self, cfg: &Config, engine: &Arc<Engine>) -> Result<(), DaemonError> {
        let want = specs(cfg, &self.settings);
        let mut running = lock(&self.running);
        match running.as_ref() {
            Some(e) => {
                *lock(&e.shared.pending) = Some(want);
                e.shared.wake();
                Ok(())
            }
            None if want.is_empty() => Ok(()),
            None => {
                let cfg = Config {
                    evpn: self.settings,
                    ..cfg.clone()
                };
                *running = Some(Evpn::start(&cfg, engine)?);
                Ok(())
            }
        }
    }

    /// Stops the EVPN side; unless `keep`, removes the shadow devices (zebra withdraws
    /// the networks' routes).
    pub fn stop(&self, keep: bool) {
        if let Some(e) = lock(&self.running).take() {
            e.stop(!keep);
        }
    }

    /// The counters, if the EVPN side runs.
    pub fn stats(&self) -> Option<EvpnStats> {
        lock(&self.running).as_ref().map(|e| *lock(&e.shared.stats))
    }
}

/// Removes shadow devices left by a configuration that had EVPN networks.
fn cleanup() {
    let removed = Fabric::open().and_then(|mut f| f.remove_all());
    match removed {
        Ok(gone) if !gone.is_empty() => {
            tracing::info!(devices = ?gone, "evpn: removed shadow devices no network uses");
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "evpn: cleanup"),
    }
}

/// `flowctl fdb`: each network's flood list and stations, with their origin.
pub(crate) fn fdb(d: &super::Daemon, only: Option<&str>) -> crate::control::proto::Response {
    use crate::control::proto::{FdbNetworkRow, Response, ResponseBody};
    // The configuration lock first, then the slow path's (a reload's order).
    let Ok(cfg) = d.config.lock().map(|c| c.clone()) else {
        return Response::err("configuration unavailable");
    };
    let names = d.ports.table();
    let now = d.switch.clock().now();
    let sp = d.switch.engine().read();
    let (mac_stats, mac_cfg) = (sp.macs().stats(), sp.macs().config());
    let table = crate::control::proto::MacTableRow {
        entries: sp.macs().len() as u64,
        limit: mac_cfg.max_entries as u64,
        port_quota: mac_cfg.port_quota() as u64,
        evictions: mac_stats.evicted,
        quota_evictions: mac_stats.quota_evicted,
    };
    let mut rows = Vec::new();
    for net in cfg
        .networks
        .iter()
        .filter(|n| only.is_none_or(|o| o == n.name))
    {
        let id = super::build::network_id(net);
        let flood = flood_rows(&sp, id);
        let stations = station_rows(&sp, id, &names, now);
        let mut counts = std::collections::BTreeMap::new();
        for r in &stations {
            *counts.entry(r.origin.clone()).or_insert(0u64) += 1;
        }
        let evpn = net.evpn.then(|| {
            let n = match net.segment {
                crate::config::Segment::Vni(v) => evpn::Names::of(v),
                crate::config::Segment::Vlan(_) => return String::new(),
            };
            format!(
                "{} {} {} (dstport {})",
                n.bridge, n.vxlan, n.adv, cfg.evpn.udp_port
            )
        });
        rows.push(FdbNetworkRow {
            network: net.name.clone(),
            segment: net.segment.to_string(),
            evpn,
            flood,
            stations,
            counts,
            table: Some(table),
        });
    }
    match only {
        Some(name) if rows.is_empty() => Response::err(format!(
            "no network `{}`",
            crate::control::proto::elide(name, crate::control::proto::MAX_ECHO_BYTES)
        )),
        _ => Response::Ok(ResponseBody::Fdb(rows)),
    }
}

/// A network's flood list: its static remote VTEPs, then those EVPN added.
fn flood_rows(
    sp: &datapath::slowpath::SlowPath,
    id: datapath::slowpath::NetworkId,
) -> Vec<crate::control::proto::FloodRow> {
    use crate::control::proto::FloodRow;
    let statics: Vec<IpAddr> = sp
        .networks()
        .get(id)
        .and_then(|n| n.vxlan.as_ref())
        .map(|s| s.remotes.clone())
        .unwrap_or_default();
    let row = |ip: &IpAddr, origin: &str| FloodRow {
        vtep: ip.to_string(),
        origin: origin.into(),
    };
    let mut flood: Vec<FloodRow> = statics.iter().map(|ip| row(ip, "static")).collect();
    flood.extend(
        sp.flood_list(id)
            .iter()
            .filter(|ip| !statics.contains(ip))
            .map(|ip| row(ip, "evpn")),
    );
    flood
}

/// A network's stations, by MAC: where each is, learned (with its age), static or
/// from EVPN.
fn station_rows(
    sp: &datapath::slowpath::SlowPath,
    id: datapath::slowpath::NetworkId,
    names: &offload::PortTable,
    now: std::time::Duration,
) -> Vec<crate::control::proto::StationRow> {
    let mut stations: Vec<(Mac, crate::control::proto::StationRow)> = sp
        .macs()
        .iter()
        .filter(|((n, _), _)| *n == id)
        .map(|((_, mac), e)| {
            let location = match e.location() {
                Location::Local(a) => {
                    let port = names
                        .get(a.port)
                        .map_or_else(|| format!("port {}", a.port), |p| p.name.clone());
                    match a.vlan {
                        Some(v) => format!("{port} vlan {v}"),
                        None => port,
                    }
                }
                Location::Remote(ip) => format!("vtep {ip}"),
                _ => "-".into(),
            };
            let (origin, age_ms) = match e.kind() {
                MacKind::Dynamic => (
                    "learned",
                    Some(now.saturating_sub(e.last_seen()).as_millis() as u64),
                ),
                MacKind::Static => ("static", None),
                _ => ("evpn", None),
            };
            let row = crate::control::proto::StationRow {
                mac: mac.to_string(),
                location,
                origin: origin.into(),
                age_ms,
            };
            (mac, row)
        })
        .collect();
    stations.sort_by_key(|(m, _)| m.0);
    stations.into_iter().map(|(_, r)| r).collect()
}
