//! The flowd daemon: builds the switch from the configuration and runs it.
//!
//! ```text
//! config -> ports' MTUs set, fibwatch (first dump: the ports' live facts),
//!           ports (AF_PACKET), slow path (networks, rules), offload (port table)
//! fibwatch Watcher ----events----> event loop: links -> LivePorts -> offload, datapath;
//!                                              paths -> RouteTable, offload
//! Switch (datapath, handlers, revalidator) --FlowHooks--> fibwatch (keys), offload
//! control socket (flowctl) -> Handler;  metrics -> Prometheus endpoint
//! ```
//!
//! Start-up fails as a whole: a missing port, a refused network or an unreachable
//! netlink socket stops the daemon before any thread runs, with the reason.

pub mod build;
pub mod evpn;
pub mod handler;
mod hotplug;
pub mod listeners;
pub mod metrics;
pub mod observer;
pub mod ports;
pub mod routes;
pub mod stats;

use crate::config::{Config, OffloadBackendKind, OffloadPolicy, PortRole as CfgRole};
use crate::control::proto::PortRow;
use crate::switch::{Switch, SwitchConfig, SwitchPort};
use datapath::cache::FlowTable;
use datapath::dpif::DpConfig;
use datapath::port::AfPacketPort;
use datapath::slowpath::upcall::UpcallConfig;
use datapath::slowpath::{DeleteReason, EngineConfig, FlowObserver};
use datapath::{FlowId, IfIndex};
use fibwatch::{Event, Watcher};
use observer::FlowHooks;
use offload::worker::{OffloadWorker, PortChange, WorkerConfig};
use offload::{OffloadBackend, Offloader, PortKind, PortTable, TcPolicy};
use ports::{LivePorts, PortUpdate};
use routes::RouteTable;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// Why the daemon could not start (or reload).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The configuration is invalid.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigErrors),
    /// The configuration could not be built into a switch.
    #[error(transparent)]
    Build(#[from] build::BuildError),
    /// fibwatch could not start.
    #[error("fibwatch: {0}")]
    Fibwatch(#[from] fibwatch::Error),
    /// The EVPN side (shadow devices for FRR) could not start.
    #[error("evpn: {0}")]
    Evpn(#[from] ::evpn::Error),
    /// The offload backend could not start.
    #[error("offload backend: {0}")]
    Offload(String),
    /// A system call or thread failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Counters of the daemon's own loops.
#[derive(Debug, Default)]
pub struct DaemonCounters {
    /// fibwatch events handled, by kind (`path`, `link`, `link_gone`).
    pub events: Mutex<BTreeMap<String, u64>>,
    /// Port sockets reopened (a netdev re-created, or its MTU raised past what the
    /// receive ring was sized for).
    pub ports_reopened: AtomicU64,
    /// Reopens that failed (the port stays down until its netdev changes again).
    pub reopen_errors: AtomicU64,
}

/// The running daemon.
pub struct Daemon {
    /// The configuration in force.
    pub config: Mutex<Config>,
    /// Where it was read from (for reload).
    pub config_path: Option<PathBuf>,
    /// The switch.
    pub switch: Switch,
    /// Flow hooks (fibwatch registrations, offload requests).
    pub hooks: Arc<FlowHooks>,
    /// Tunnel routes.
    pub routes: Arc<RouteTable>,
    /// fibwatch.
    pub watcher: Option<Arc<Watcher>>,
    /// The offload worker.
    pub offload: Option<Arc<OffloadWorker>>,
    /// The offload backend's name (`tc`, `sim`, `off`).
    pub backend: String,
    /// The ports with their live facts.
    pub ports: LivePorts,
    /// The netdev and MTU each datapath port's socket was opened on (the MTU sizes its
    /// receive ring).
    opened: Mutex<HashMap<datapath::PortId, (IfIndex, u32)>>,
    /// What start-up adoption of a previous run's filters did.
    pub adoption: offload::AdoptionReport,
    /// Counters.
    pub counters: Arc<DaemonCounters>,
    /// BGP EVPN through FRR (networks with `evpn = true`).
    pub evpn: evpn::EvpnHandle,
    /// What the listener tasks made of the configuration published last.
    listeners: listeners::ListenerReports,
    /// The configuration in force, published after start and after every successful
    /// reload, even one that changed nothing (the control socket and the metrics
    /// listener follow it, and retry a move that failed).
    applied: tokio::sync::watch::Sender<Arc<Config>>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// fibwatch's (coalesce, settle) from `[offload]`.
pub(crate) fn fib_timing(o: &crate::config::OffloadConfig) -> (Duration, Duration) {
    (
        Duration::from_millis(o.coalesce_ms.unwrap_or(20)),
        Duration::from_millis(o.settle_ms.unwrap_or(2)),
    )
}

/// Whether this kernel has cls_flower (probed, not guessed from versions).
pub fn kernel_has_flower() -> bool {
    std::process::Command::new("modprobe")
        .args(["-q", "cls_flower"])
        .status()
        .is_ok_and(|s| s.success())
        || std::path::Path::new("/sys/module/cls_flower").exists()
}

/// An offload backend and its name (`tc`, `sim`).
type Backend = (Box<dyn OffloadBackend>, &'static str);

fn backend(cfg: &Config, table: &PortTable) -> Result<Option<Backend>, DaemonError> {
    let policy = match cfg.offload.policy {
        OffloadPolicy::Off => return Ok(None),
        OffloadPolicy::None => TcPolicy::None,
        OffloadPolicy::SkipSw => TcPolicy::SkipSw,
        OffloadPolicy::SkipHw => TcPolicy::SkipHw,
    };
    let use_tc = match cfg.offload.backend {
        OffloadBackendKind::Tc => true,
        OffloadBackendKind::Sim => false,
        OffloadBackendKind::Auto => kernel_has_flower(),
    };
    if use_tc {
        let devices: Vec<IfIndex> = table.iter().map(|p| p.ifindex).collect();
        let tc = offload::tc::TcBackend::new(
            offload::tc::TcConfig {
                policy,
                ..Default::default()
            },
            &devices,
        )
        .map_err(|e| DaemonError::Offload(e.to_string()))?;
        return Ok(Some((Box::new(tc), "tc")));
    }
    let capacity = cfg
        .offload
        .sim_capacity
        .unwrap_or(crate::config::DEFAULT_SIM_CAPACITY);
    Ok(Some((Box::new(sim_fabric(table, capacity)), "sim")))
}

/// One simulated eswitch per switch id, holding that id's uplink, representors and the
/// tunnel device.
fn sim_fabric(table: &PortTable, capacity: usize) -> offload::sim::SimFabric {
    use offload::sim::{SimCaps, SimRep, SimSwitchSpec};
    let tunnels: Vec<IfIndex> = table
        .iter()
        .filter(|p| p.kind == PortKind::Tunnel)
        .map(|p| p.ifindex)
        .collect();
    let mut specs: BTreeMap<Vec<u8>, SimSwitchSpec> = BTreeMap::new();
    for p in table.iter() {
        let Some(id) = &p.switch_id else { continue };
        let spec = specs.entry(id.0.clone()).or_insert_with(|| SimSwitchSpec {
            switch_id: id.0.clone(),
            uplinks: Vec::new(),
            tunnels: tunnels.clone(),
            reps: Vec::new(),
            capacity,
            caps: SimCaps::default(),
        });
        match p.kind {
            PortKind::Uplink => spec.uplinks.push(p.ifindex),
            PortKind::Representor { vf } => spec.reps.push(SimRep {
                vf,
                rep: p.ifindex,
                vf_port: p.ifindex,
            }),
            _ => {}
        }
    }
    offload::sim::SimFabric::new(specs.into_values().collect())
}

/// Marks each flow whose tc filter carries its packets through tc's software path
/// (`carried_by_tc`: the tc backend without skip_sw), as the offload worker decides its
/// placement: AF_PACKET taps see those packets before tc ingress, and the datapath must
/// not forward the copies.
fn tc_carried_observer(
    carried_by_tc: bool,
    flow_table: Arc<OnceLock<Arc<FlowTable>>>,
) -> offload::worker::PlacementObserver {
    Arc::new(move |flow: FlowId, placement: &offload::Placement| {
        if !carried_by_tc {
            return;
        }
        if let Some(entry) = flow_table.get().and_then(|t| t.get(flow)) {
            entry.set_in_tc(placement.is_offloaded());
        }
    })
}

/// Adopts the filters a previous run left: one representative key per filter goes
/// through the slow path (learning first) while the datapath does not receive yet; a
/// resulting flow whose rule is a kept filter's is marked carried by tc from the start
/// (when tc's software path forwards: `carried_by_tc`), so that no packet a kept filter
/// forwards is also forwarded by flowd; the flows are announced as if installed by
/// upcalls (their keys tracked, then an offer the worker matches against the kept
/// filters); then the datapath receives, and the round ends with a sweep of what no flow
/// took.
fn adopt(
    switch: &Switch,
    hooks: &FlowHooks,
    worker: &OffloadWorker,
    ports: &PortTable,
    kept: &[offload::FlowerRule],
    carried_by_tc: bool,
) -> offload::AdoptionReport {
    let keys: Vec<datapath::FlowKey> = kept
        .iter()
        .filter_map(|r| offload::adopt::representative_key(r, ports))
        .collect();
    let flows = switch.engine().preinstall(&keys, switch.clock().now());
    let held: std::collections::HashSet<_> = kept.iter().map(|r| (r.ingress, r.matches)).collect();
    let mut carried = 0;
    for f in &flows {
        let filter = offload::translate::translate(&f.megaflow(), f.actions(), ports);
        if carried_by_tc && filter.is_ok_and(|r| held.contains(&(r.ingress, r.matches))) {
            f.set_in_tc(true);
            carried += 1;
        }
    }
    // Announced before the datapath receives: an upcall racing an announcement could
    // otherwise be first to use a key, and the worker would judge the kept filters'
    // flows before it knows their paths.
    for f in &flows {
        hooks.announce(f);
    }
    switch.resume();
    let report = worker.end_adoption().unwrap_or_default();
    tracing::info!(
        kept = report.kept,
        flows = flows.len(),
        carried,
        adopted = report.adopted,
        replaced = report.replaced,
        removed = report.removed,
        "adopted a previous run's filters"
    );
    report
}

fn switch_config(
    cfg: &Config,
    local_vteps: Vec<IpAddr>,
    clock: crate::switch::Clock,
    paused: bool,
) -> SwitchConfig {
    let d = &cfg.datapath;
    SwitchConfig {
        datapath: DpConfig {
            batch: d.batch,
            local_vteps,
            ..DpConfig::default()
        },
        upcall: UpcallConfig {
            handlers: d.handler_threads.max(1),
            capacity: d.upcall_queue,
            ..UpcallConfig::default()
        },
        engine: EngineConfig {
            max_idle: Duration::from_millis(d.max_idle_ms),
            flow_limit: d.flow_limit,
            ..EngineConfig::default()
        },
        clock,
        paused,
        ..SwitchConfig::default()
    }
}

/// Each VNI network's `fwmark`.
pub(crate) fn network_marks(cfg: &Config) -> HashMap<u32, u32> {
    cfg.networks
        .iter()
        .filter_map(|n| match (n.segment, n.fwmark) {
            (crate::config::Segment::Vni(v), Some(m)) => Some((v, m)),
            _ => None,
        })
        .collect()
}

/// Sets the MTU a port's configuration asks for on its netdev (`mtu = N`); the lines
/// say what was applied, the error what the kernel refused.
pub(crate) fn apply_mtus(
    ports: &[crate::config::PortConfig],
    links: &[fibwatch::Link],
) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    let mut nl = None;
    for p in ports {
        let Some(mtu) = p.mtu else { continue };
        let Some(link) = links.iter().find(|l| l.name == p.name) else {
            continue;
        };
        if link.mtu == mtu {
            continue;
        }
        let nl = match &mut nl {
            Some(nl) => nl,
            None => nl.insert(
                fibwatch::netlink::Requester::open()
                    .map_err(|e| format!("port `{}`: mtu {mtu}: {e}", p.name))?,
            ),
        };
        nl.set_mtu(link.index, mtu)
            .map_err(|e| format!("port `{}`: mtu {mtu}: {e}", p.name))?;
        tracing::info!(port = %p.name, from = link.mtu, to = mtu, "port MTU set");
        lines.push(format!("port {}: mtu {} -> {mtu}", p.name, link.mtu));
    }
    Ok(lines)
}

/// The links of this namespace (a links-only dump).
fn dump_links() -> Result<Vec<fibwatch::Link>, DaemonError> {
    let changes = fibwatch::netlink::Requester::open()?.dump_kinds(fibwatch::Kinds::LINKS)?;
    Ok(changes
        .into_iter()
        .filter_map(|c| match c {
            fibwatch::Change::LinkUp(l) => Some(l),
            _ => None,
        })
        .collect())
}

impl Daemon {
    /// Builds and starts everything. `path` is where `cfg` came from (for reload).
    pub fn start(mut cfg: Config, path: Option<PathBuf>) -> Result<Arc<Self>, DaemonError> {
        if cfg.discovery.is_some() {
            let links = offload::discover::links()?;
            let added = build::discover_ports(&mut cfg, &links)?;
            tracing::info!(ports = ?added, "discovered");
        }
        build::check_members(&cfg)?;
        // Configured MTUs first: everything after sees the netdevs as they will be.
        apply_mtus(&cfg.ports, &dump_links()?).map_err(DaemonError::Offload)?;
        let (coalesce, settle) = fib_timing(&cfg.offload);
        let fib_cfg = fibwatch::Config {
            coalesce,
            settle,
            ..fibwatch::Config::default()
        };
        let watcher = Arc::new(Watcher::spawn(fib_cfg)?);
        let mirror = watcher.mirror()?;
        let links: Vec<fibwatch::Link> = mirror.links().cloned().collect();
        let live = LivePorts::new(&cfg.ports, &links).map_err(DaemonError::Offload)?;
        let table = (*live.table()).clone();
        let slowpath = build::slowpath(&cfg)?;
        let build::Opened { ports: opened, rx } = build::open_ports(&cfg, cfg.datapath.batch)?;
        let opened_on: HashMap<datapath::PortId, (IfIndex, u32)> = table
            .iter()
            .filter(|p| p.kind != PortKind::Tunnel)
            .map(|p| (p.id, (p.ifindex, p.mtu)))
            .collect();

        let routes = Arc::new(RouteTable::new());
        routes.set_inbound(mirror.xfrm().inbound());
        if let Some(rx) = rx {
            routes.set_rx_control(rx);
        }
        let uplinks = live.uplinks();
        routes.set_uplinks(uplinks.clone());
        // VXLAN to any address of an uplink is ours (networks without a fixed local
        // VTEP use the address of whichever uplink the route picks).
        let uplink_addrs: Vec<IpAddr> = mirror
            .addresses()
            .filter(|a| uplinks.contains_key(&a.ifindex))
            .map(|a| a.addr)
            .collect();

        // Filled once the switch (and its flow table) exists; no flow is offered before.
        let flow_table: Arc<OnceLock<Arc<FlowTable>>> = Arc::new(OnceLock::new());
        let carried_by_tc = cfg.offload.policy != OffloadPolicy::SkipSw;
        let (offload, backend_name, kept) = match backend(&cfg, &table)? {
            Some((b, name)) => {
                let mut offloader = Offloader::new(b, table.clone(), Duration::from_secs(2));
                // Filters a previous run left (--keep-offloads, or a crash) are held for
                // adoption instead of being swept at start.
                let kept = offloader.load_kept().unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "offload: could not list a previous run's filters; they will be swept");
                    Vec::new()
                });
                let observer =
                    tc_carried_observer(name == "tc" && carried_by_tc, flow_table.clone());
                let wcfg = WorkerConfig {
                    queue: cfg
                        .offload
                        .queue
                        .unwrap_or(crate::config::DEFAULT_OFFLOAD_QUEUE),
                    ..WorkerConfig::default()
                };
                let worker = OffloadWorker::spawn_observed(offloader, wcfg, observer);
                (Some(Arc::new(worker)), name, kept)
            }
            None => (None, "off", Vec::new()),
        };

        let clock = crate::switch::Clock::new();
        let tunnel_port = cfg.tunnel_port().map(|p| p.id);
        let hooks = Arc::new(FlowHooks::new(
            Some(watcher.clone()),
            routes.clone(),
            offload.clone(),
            tunnel_port,
            network_marks(&cfg),
            clock,
        ));
        // With filters to adopt, the datapath receives only once their flows exist.
        let switch = Switch::start(
            switch_config(
                &cfg,
                build::local_vteps(&cfg, &uplink_addrs),
                clock,
                !kept.is_empty(),
            ),
            slowpath,
            opened,
            routes.clone(),
            hooks.clone(),
        )?;
        let _ = flow_table.set(switch.engine().table().clone());
        // Before adoption: the stations it learns are advertised too.
        let evpn = evpn::EvpnHandle::start(&cfg, switch.engine())?;
        let adoption = match &offload {
            Some(w) if !kept.is_empty() => adopt(
                &switch,
                &hooks,
                w,
                &table,
                &kept,
                backend_name == "tc" && carried_by_tc,
            ),
            _ => {
                switch.resume();
                offload::AdoptionReport::default()
            }
        };
        let (applied, _) = tokio::sync::watch::channel(Arc::new(cfg.clone()));
        let daemon = Arc::new(Daemon {
            applied,
            config: Mutex::new(cfg),
            config_path: path,
            switch,
            hooks,
            routes,
            watcher: Some(watcher),
            offload,
            backend: backend_name.to_string(),
            ports: live,
            opened: Mutex::new(opened_on),
            adoption,
            counters: Arc::new(DaemonCounters::default()),
            evpn,
            listeners: listeners::ListenerReports::default(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Mutex::new(Vec::new()),
        });
        let d = daemon.clone();
        let t = std::thread::Builder::new()
            .name("flowd-fib".into())
            .spawn(move || d.event_loop())?;
        daemon
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(t);
        tracing::info!(backend = backend_name, "flowd started");
        Ok(daemon)
    }

    /// The ports as `flowctl show` prints them.
    pub fn port_rows(&self) -> Vec<PortRow> {
        self.ports.rows()
    }

    /// The configuration in force, now and after each reload that changes it.
    pub fn subscribe_config(&self) -> tokio::sync::watch::Receiver<Arc<Config>> {
        self.applied.subscribe()
    }

    /// Publishes the configuration in force to [`Self::subscribe_config`]'s receivers,
    /// then waits for the listener tasks that report (see [`listeners`]) to confirm
    /// their part: what they could not apply, as "not applied" lines. The caller holds
    /// the configuration lock, so no other publication interleaves.
    pub(super) fn publish_config(&self, cfg: &Config) -> Vec<String> {
        let n = self.listeners.published();
        self.applied.send_replace(Arc::new(cfg.clone()));
        self.listeners.wait(n, Duration::from_secs(10))
    }

    /// The reports of the control socket and metrics tasks (the binary attaches them).
    pub fn listener_reports(&self) -> &listeners::ListenerReports {
        &self.listeners
    }

    /// Applies fibwatch's events: links to the ports' live facts, path facts to the
    /// route table and the offload layer.
    fn event_loop(&self) {
        let Some(w) = &self.watcher else { return };
        while !self.stop.load(Ordering::Relaxed) {
            match w.events().recv_timeout(Duration::from_millis(20)) {
                Ok(ev) => self.apply_event(ev),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn count(&self, kind: &str) {
        *self
            .counters
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind.to_string())
            .or_default() += 1;
    }

    fn apply_event(&self, ev: Event) {
        match ev {
            Event::Path(u) => {
                self.count("path");
                match &u.facts {
                    Ok(p) => tracing::info!(
                        key = %u.key, uplink = %p.uplink,
                        src = ?p.src, mtu = p.mtu, resolved = p.next_hop_mac.is_some(),
                        "tunnel path"
                    ),
                    Err(why) => tracing::info!(key = %u.key, %why, "tunnel path"),
                }
                self.routes.update(u.key, u.facts);
                if let Some(o) = &self.offload {
                    o.path_changed(u.key, u.facts);
                }
            }
            Event::Link(link) => {
                self.count("link");
                if let Some(u) = self.ports.link_changed(&link) {
                    self.port_changed(u);
                }
            }
            Event::LinkGone(ifindex) => {
                self.count("link_gone");
                if let Some(u) = self.ports.link_gone(ifindex) {
                    self.port_changed(u);
                }
            }
            Event::Inbound(inbound) => {
                self.count("ipsec_inbound");
                tracing::info!(protecting = ?inbound.families(), "inbound IPsec policies");
                self.routes.set_inbound(inbound);
            }
            _ => {}
        }
    }

    /// A configured port's netdev changed: the judge re-decides its flows, a re-created
    /// uplink's routes follow it, and the datapath reopens the port's socket when the
    /// netdev is new or its MTU outgrew the receive ring.
    fn port_changed(&self, u: PortUpdate) {
        tracing::info!(
            port = %u.now.name,
            ifindex = %u.now.ifindex, mtu = u.now.mtu, up = u.now.up,
            was_ifindex = %u.before.ifindex, was_mtu = u.before.mtu, was_up = u.before.up,
            "port changed"
        );
        if u.role == CfgRole::Uplink && u.recreated() {
            self.routes.set_uplinks(self.ports.uplinks());
        }
        if let Some(o) = &self.offload {
            o.update_ports(PortChange {
                plugged: vec![u.now.clone()],
                unplugged: Vec::new(),
            });
        }
        if u.role == CfgRole::Tunnel || !u.now.up {
            return;
        }
        // The socket must be on the netdev as it is now, with a ring for its MTU.
        let opened = self
            .opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&u.now.id)
            .copied();
        if opened.is_some_and(|(ifindex, mtu)| ifindex == u.now.ifindex && mtu >= u.now.mtu) {
            return;
        }
        self.reopen(&u);
    }

    /// Opens a port's socket again and hands it to the datapath thread, which replaces
    /// the old one.
    fn reopen(&self, u: &PortUpdate) {
        let batch = self.config.lock().map_or(32, |c| c.datapath.batch);
        match AfPacketPort::open(&u.now.name, batch) {
            Ok(io) => {
                self.opened
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(u.now.id, (u.now.ifindex, u.now.mtu));
                self.switch.plug(SwitchPort {
                    id: u.now.id,
                    role: build::role(u.role),
                    io: Some(Box::new(io)),
                });
                self.counters.ports_reopened.fetch_add(1, Ordering::Relaxed);
                tracing::info!(port = %u.now.name, ifindex = %u.now.ifindex, mtu = u.now.mtu, "port reopened");
            }
            Err(e) => {
                self.counters.reopen_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(port = %u.now.name, error = %e, "port could not be reopened");
            }
        }
    }

    /// Deletes every flow (and its filter); returns how many.
    pub fn delete_flows(&self) -> usize {
        let table = self.switch.engine().table();
        let flows = table.snapshot();
        for e in &flows {
            if table.remove(e.id()).is_some() {
                self.hooks.deleted(e, DeleteReason::Stale);
            }
        }
        flows.len()
    }

    /// Stops the daemon. Unless `keep_offloads`, removes the filters it owns first.
    pub fn shutdown(&self, keep_offloads: bool) {
        self.stop.store(true, Ordering::Relaxed);
        self.evpn.stop(keep_offloads);
        if !keep_offloads {
            let n = self.delete_flows();
            tracing::info!(flows = n, "removed flows and their filters");
        }
        for t in self
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = t.join();
        }
    }
}

/// Locks a mutex of the daemon's; a panic elsewhere that poisoned it leaves the data as
/// it was (every holder keeps it consistent), so the daemon carries on.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
