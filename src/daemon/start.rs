//! The daemon's assembly, in one place and in dependency order. Each step builds from
//! what the steps before it built, and nothing is filled in later:
//!
//! 1. **The configuration against the machine**: `[discovery]` adds the PF and its
//!    representors, every network member must be a port, configured MTUs go on the
//!    netdevs (everything after sees the netdevs as they will be).
//! 2. **Kernel facts**: fibwatch starts; its first dump gives the links (the ports' live
//!    facts and the offload port table), the uplinks' addresses and the IPsec policies.
//! 3. **Parts without threads** ([`build`]): the slow path (networks, rules, static
//!    MACs), the ports' sockets, the route table.
//! 4. **The flow table**, which the switch and the offload worker's placement observer
//!    share.
//! 5. **Offload**: the backend, a previous run's filters held for adoption, the worker.
//! 6. **Flow hooks** (fibwatch registrations, offload requests), then **the switch**
//!    (paused while there are filters to adopt), then **EVPN** (it advertises what the
//!    switch learns, adoption's stations included).
//! 7. **Adoption**, then the datapath receives; then the **daemon** and its event loop.
//!
//! Start-up fails as a whole, before any thread runs, with the reason.

use super::{Daemon, DaemonCounters, DaemonError, build, evpn, kernel, listeners, lock};
use crate::config::{Config, OffloadPolicy};
use crate::switch::Switch;
use datapath::FlowId;
use datapath::cache::FlowTable;
use fibwatch::Watcher;
use offload::worker::{OffloadWorker, WorkerConfig};
use offload::{Offloader, PortTable};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::observer::FlowHooks;
use super::ports::LivePorts;
use super::routes::RouteTable;

/// Step 2: what the kernel says, from fibwatch's first dump.
struct Facts {
    watcher: Arc<Watcher>,
    live: LivePorts,
    table: PortTable,
    /// Addresses of the uplinks (local VTEPs for networks without a fixed one).
    uplink_addrs: Vec<IpAddr>,
    inbound: fibwatch::xfrm::Inbound,
}

/// Step 5: the offload worker, its backend's name, and the filters to adopt.
struct Offload {
    worker: Option<Arc<OffloadWorker>>,
    backend: &'static str,
    kept: Vec<offload::FlowerRule>,
}

impl Daemon {
    /// Builds and starts everything. `path` is where `cfg` came from (for reload).
    pub fn start(mut cfg: Config, path: Option<PathBuf>) -> Result<Arc<Self>, DaemonError> {
        // 1.
        if cfg.discovery.is_some() {
            let links = offload::discover::links()?;
            let added = build::discover_ports(&mut cfg, &links)?;
            tracing::info!(ports = ?added, "discovered");
        }
        build::check_members(&cfg)?;
        kernel::apply_mtus(&cfg.ports, &kernel::dump_links()?)?;
        // 2.
        let facts = Facts::gather(&cfg)?;
        // 3.
        let slowpath = build::slowpath(&cfg)?;
        let build::Opened { ports: opened, rx } = build::open_ports(&cfg)?;
        let routes = facts.routes(rx);
        // 4.
        let flows = Arc::new(FlowTable::new(cfg.datapath.flow_limit));
        // 5.
        let offload = Offload::start(&cfg, &facts.table, &flows)?;
        // 6.
        let clock = crate::switch::Clock::new();
        let hooks = Arc::new(FlowHooks::new(
            Some(facts.watcher.clone()),
            routes.clone(),
            offload.worker.clone(),
            cfg.tunnel_port().map(|p| p.id),
            build::network_marks(&cfg),
            clock,
        ));
        let local_vteps = build::local_vteps(&cfg, &facts.uplink_addrs);
        let paused = !offload.kept.is_empty();
        let switch = Switch::start(
            build::switch_config(&cfg, local_vteps, clock, paused),
            flows,
            slowpath,
            opened,
            routes.clone(),
            hooks.clone(),
        )?;
        let evpn = evpn::EvpnHandle::start(&cfg, switch.engine())?;
        // 7.
        let adoption = offload.adopt(&switch, &hooks, &facts.table, &cfg);
        let (applied, _) = tokio::sync::watch::channel(Arc::new(cfg.clone()));
        let daemon = Arc::new(Daemon {
            applied,
            config: Mutex::new(cfg),
            config_path: path,
            switch,
            hooks,
            routes,
            watcher: Some(facts.watcher),
            offload: offload.worker,
            backend: offload.backend.to_string(),
            ports: facts.live,
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
        lock(&daemon.threads).push(t);
        tracing::info!(backend = offload.backend, "flowd started");
        Ok(daemon)
    }
}

impl Facts {
    /// The route table tunnels are resolved through: the uplinks, the inbound IPsec
    /// policies, and the control of the kernel path's receive sockets.
    fn routes(&self, rx: Option<datapath::port::RxControl>) -> Arc<RouteTable> {
        let routes = Arc::new(RouteTable::new());
        routes.set_inbound(self.inbound.clone());
        if let Some(rx) = rx {
            routes.set_rx_control(rx);
        }
        routes.set_uplinks(self.live.uplinks());
        routes
    }

    fn gather(cfg: &Config) -> Result<Self, DaemonError> {
        let (coalesce, settle) = build::fib_timing(&cfg.offload);
        let watcher = Arc::new(Watcher::spawn(fibwatch::Config {
            coalesce,
            settle,
            ..fibwatch::Config::default()
        })?);
        let mirror = watcher.mirror()?;
        let links: Vec<fibwatch::Link> = mirror.links().cloned().collect();
        let live = LivePorts::new(&cfg.ports, &links)?;
        let table = (*live.table()).clone();
        let uplinks = live.uplinks();
        // VXLAN to any address of an uplink is ours (networks without a fixed local
        // VTEP use the address of whichever uplink the route picks).
        let uplink_addrs = mirror
            .addresses()
            .filter(|a| uplinks.contains_key(&a.ifindex))
            .map(|a| a.addr)
            .collect();
        let inbound = mirror.xfrm().inbound();
        drop(mirror);
        Ok(Self {
            watcher,
            live,
            table,
            uplink_addrs,
            inbound,
        })
    }
}

impl Offload {
    /// The backend `[offload]` asks for, a previous run's filters (held for adoption,
    /// not swept), and the worker, whose placement observer marks the flows tc's
    /// software path carries.
    fn start(cfg: &Config, table: &PortTable, flows: &Arc<FlowTable>) -> Result<Self, DaemonError> {
        let Some((backend, name)) = build::backend(cfg, table)? else {
            return Ok(Self {
                worker: None,
                backend: "off",
                kept: Vec::new(),
            });
        };
        let mut offloader = Offloader::new(backend, table.clone(), Duration::from_secs(2));
        let kept = offloader.load_kept().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "offload: could not list a previous run's filters; they will be swept");
            Vec::new()
        });
        let observer = tc_carried_observer(name == "tc" && carried_by_tc(cfg), flows.clone());
        let wcfg = WorkerConfig {
            queue: cfg
                .offload
                .queue
                .unwrap_or(crate::config::DEFAULT_OFFLOAD_QUEUE),
            ..WorkerConfig::default()
        };
        let worker = OffloadWorker::spawn_observed(offloader, wcfg, observer);
        Ok(Self {
            worker: Some(Arc::new(worker)),
            backend: name,
            kept,
        })
    }

    /// Adopts the filters a previous run left: one representative key per filter goes
    /// through the slow path (learning first) while the datapath does not receive yet;
    /// a resulting flow whose rule is a kept filter's is marked carried by tc from the
    /// start (when tc's software path forwards), so that no packet a kept filter
    /// forwards is also forwarded by flowd; the flows are announced as if installed by
    /// upcalls (their keys tracked, then an offer the worker matches against the kept
    /// filters); then the datapath receives, and the round ends with a sweep of what no
    /// flow took. Without filters to adopt, the datapath just receives.
    fn adopt(
        &self,
        switch: &Switch,
        hooks: &FlowHooks,
        ports: &PortTable,
        cfg: &Config,
    ) -> offload::AdoptionReport {
        let Some(worker) = self.worker.as_ref().filter(|_| !self.kept.is_empty()) else {
            switch.resume();
            return offload::AdoptionReport::default();
        };
        let carried_by_tc = self.backend == "tc" && carried_by_tc(cfg);
        let keys: Vec<datapath::FlowKey> = self
            .kept
            .iter()
            .filter_map(|r| offload::adopt::representative_key(r, ports))
            .collect();
        let flows = switch.engine().preinstall(&keys, switch.clock().now());
        let held: std::collections::HashSet<_> =
            self.kept.iter().map(|r| (r.ingress, r.matches)).collect();
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
}

/// Whether tc's software path forwards what a filter matches (the tc backend without
/// skip_sw): AF_PACKET taps see those packets before tc ingress, and the datapath must
/// not forward the copies.
fn carried_by_tc(cfg: &Config) -> bool {
    cfg.offload.policy != OffloadPolicy::SkipSw
}

/// Marks each flow whose tc filter carries its packets through tc's software path, as
/// the offload worker decides its placement.
fn tc_carried_observer(
    carried_by_tc: bool,
    flows: Arc<FlowTable>,
) -> offload::worker::PlacementObserver {
    Arc::new(move |flow: FlowId, placement: &offload::Placement| {
        if !carried_by_tc {
            return;
        }
        if let Some(entry) = flows.get(flow) {
            entry.set_in_tc(placement.is_offloaded());
        }
    })
}
