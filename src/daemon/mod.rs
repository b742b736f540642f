//! The flowd daemon: builds the switch from the configuration and runs it.
//!
//! ```text
//! config -> ports (AF_PACKET), slow path (networks, rules), offload port table
//! fibwatch Watcher ----decisions----> decision loop -> RouteTable, offload requests
//! Switch (datapath, handlers, revalidator) --FlowHooks--> fibwatch, RouteTable, offload
//! control socket (flowctl) -> Handler;  metrics -> Prometheus endpoint
//! ```
//!
//! Start-up fails as a whole: a missing port, a refused network or an unreachable
//! netlink socket stops the daemon before any thread runs, with the reason.

pub mod build;
pub mod handler;
mod hotplug;
pub mod metrics;
pub mod observer;
pub mod routes;

use crate::config::{Config, OffloadBackendKind, OffloadPolicy, PortRole as CfgRole};
use crate::control::proto::PortRow;
use crate::switch::{Switch, SwitchConfig};
use datapath::cache::FlowTable;
use datapath::dpif::DpConfig;
use datapath::slowpath::upcall::UpcallConfig;
use datapath::slowpath::{DeleteReason, EngineConfig, FlowObserver};
use datapath::{FlowId, IfIndex, PortId};
use fibwatch::{DecisionKind, StaticSwitchIds, SwitchId, Watcher};
use observer::FlowHooks;
use offload::discover::LinkFacts;
use offload::worker::{OffloadWorker, WorkerConfig};
use offload::{OffloadBackend, Offloader, PortInfo, PortKind, PortTable, TcPolicy};
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
    /// fibwatch decisions handled, by kind.
    pub migrations: Mutex<BTreeMap<String, u64>>,
    /// Decisions about flows already gone.
    pub stale_decisions: AtomicU64,
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
    /// Ports, as `flowctl show` prints them.
    pub ports: Mutex<Vec<PortRow>>,
    /// What start-up adoption of a previous run's filters did.
    pub adoption: offload::AdoptionReport,
    /// Counters.
    pub counters: Arc<DaemonCounters>,
    /// The configuration in force, published after start and after every successful
    /// reload, even one that changed nothing (the control socket and the metrics
    /// listener follow it, and retry a move that failed).
    applied: tokio::sync::watch::Sender<Arc<Config>>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Facts about every configured port, from rtnetlink.
fn port_facts(cfg: &Config) -> Result<HashMap<String, LinkFacts>, DaemonError> {
    let links = offload::discover::links()?;
    let mut by_name: HashMap<String, LinkFacts> =
        links.into_iter().map(|l| (l.name.clone(), l)).collect();
    let mut out = HashMap::new();
    for p in &cfg.ports {
        let facts = by_name
            .remove(&p.name)
            .ok_or_else(|| build::BuildError::Port {
                name: p.name.clone(),
                source: datapath::port::PortError::NoSuchInterface(p.name.clone()),
            })?;
        out.insert(p.name.clone(), facts);
    }
    Ok(out)
}

/// The offload layer's port table: each port's kind, MTU and switch id (the kernel's, or
/// the one the config declares for lab veths).
fn port_table(cfg: &Config, facts: &HashMap<String, LinkFacts>) -> PortTable {
    let mut t = PortTable::new();
    for p in &cfg.ports {
        if let Some(f) = facts.get(&p.name) {
            t.insert(port_info(p, f));
        }
    }
    t
}

/// A configured port as the offload layer sees it.
fn port_info(p: &crate::config::PortConfig, f: &LinkFacts) -> PortInfo {
    let kind = match p.role {
        CfgRole::Representor => PortKind::Representor {
            vf: p.vf.unwrap_or(0) as u16,
        },
        CfgRole::Uplink => PortKind::Uplink,
        CfgRole::Tunnel => PortKind::Tunnel,
    };
    PortInfo {
        id: p.id,
        name: p.name.clone(),
        ifindex: f.ifindex,
        kind,
        mtu: p.mtu.unwrap_or(f.mtu),
        switch_id: f.switch_id.clone().or(p.switch_id_bytes()),
    }
}

fn port_rows(cfg: &Config, table: &PortTable) -> Vec<PortRow> {
    cfg.ports
        .iter()
        .map(|p| {
            let info = table.get(p.id);
            PortRow {
                name: p.name.clone(),
                ifindex: info.map(|i| i.ifindex.0),
                id: p.id.0,
                role: p.role.to_string(),
                mtu: info.map(|i| i.mtu),
                switch_id: info
                    .and_then(|i| i.switch_id.as_ref())
                    .map(|s| s.iter().map(|b| format!("{b:02x}")).collect()),
                vf: p.vf,
            }
        })
        .collect()
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
    Ok(Some((Box::new(sim_fabric(table)), "sim")))
}

/// One simulated eswitch per switch id, holding that id's uplink, representors and the
/// tunnel device.
fn sim_fabric(table: &PortTable) -> offload::sim::SimFabric {
    use offload::sim::{SimCaps, SimRep, SimSwitchSpec};
    let tunnels: Vec<IfIndex> = table
        .iter()
        .filter(|p| p.kind == PortKind::Tunnel)
        .map(|p| p.ifindex)
        .collect();
    let mut specs: BTreeMap<Vec<u8>, SimSwitchSpec> = BTreeMap::new();
    for p in table.iter() {
        let Some(id) = &p.switch_id else { continue };
        let spec = specs.entry(id.clone()).or_insert_with(|| SimSwitchSpec {
            switch_id: id.clone(),
            uplinks: Vec::new(),
            tunnels: tunnels.clone(),
            reps: Vec::new(),
            capacity: 65_536,
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
/// through the slow path (learning first), the resulting flows are announced as if
/// installed by upcalls (fibwatch registration, then an offer the worker matches
/// against the kept filters), and the round ends with a sweep of what no flow took.
fn adopt(
    switch: &Switch,
    hooks: &FlowHooks,
    worker: &OffloadWorker,
    ports: &PortTable,
    kept: &[offload::FlowerRule],
) -> offload::AdoptionReport {
    let keys: Vec<datapath::FlowKey> = kept
        .iter()
        .filter_map(|r| offload::adopt::representative_key(r, ports))
        .collect();
    let flows = switch.engine().preinstall(&keys, switch.clock().now());
    for f in &flows {
        hooks.announce(f);
    }
    let report = worker.end_adoption().unwrap_or_default();
    tracing::info!(
        kept = report.kept,
        flows = flows.len(),
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
        ..SwitchConfig::default()
    }
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
        let facts = port_facts(&cfg)?;
        let table = port_table(&cfg, &facts);
        let slowpath = build::slowpath(&cfg)?;
        let opened = build::open_ports(&cfg, cfg.datapath.batch)?;

        let routes = Arc::new(RouteTable::new());
        let uplinks: HashMap<IfIndex, PortId> = table
            .iter()
            .filter(|p| p.kind == PortKind::Uplink)
            .map(|p| (p.ifindex, p.id))
            .collect();
        routes.set_uplinks(uplinks.clone());

        let switch_ids: HashMap<String, SwitchId> = table
            .iter()
            .filter_map(|p| Some((p.name.clone(), SwitchId(p.switch_id.clone()?))))
            .collect();
        let (coalesce, settle) = fib_timing(&cfg.offload);
        let fib_cfg = fibwatch::Config {
            coalesce,
            settle,
            ..fibwatch::Config::default()
        };
        let watcher = Arc::new(Watcher::spawn(
            fib_cfg,
            Box::new(StaticSwitchIds(switch_ids)),
        )?);
        // VXLAN to any address of an uplink is ours (networks without a fixed local
        // VTEP use the address of whichever uplink the route picks).
        let uplink_addrs: Vec<IpAddr> = watcher
            .mirror()?
            .addresses()
            .filter(|a| uplinks.contains_key(&a.ifindex))
            .map(|a| a.addr)
            .collect();

        // Filled once the switch (and its flow table) exists; no flow is offered before.
        let flow_table: Arc<OnceLock<Arc<FlowTable>>> = Arc::new(OnceLock::new());
        let (offload, backend_name, kept) = match backend(&cfg, &table)? {
            Some((b, name)) => {
                let mut offloader =
                    Offloader::new(b, table.clone(), routes.clone(), Duration::from_secs(2));
                // Filters a previous run left (--keep-offloads, or a crash) are held for
                // adoption instead of being swept at start.
                let kept = offloader.load_kept().unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "offload: could not list a previous run's filters; they will be swept");
                    Vec::new()
                });
                let observer = tc_carried_observer(
                    name == "tc" && cfg.offload.policy != OffloadPolicy::SkipSw,
                    flow_table.clone(),
                );
                let worker =
                    OffloadWorker::spawn_observed(offloader, WorkerConfig::default(), observer);
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
            table.clone(),
            tunnel_port,
            clock,
        ));
        let switch = Switch::start(
            switch_config(&cfg, build::local_vteps(&cfg, &uplink_addrs), clock),
            slowpath,
            opened,
            routes.clone(),
            hooks.clone(),
        )?;
        let _ = flow_table.set(switch.engine().table().clone());
        let adoption = match &offload {
            Some(w) if !kept.is_empty() => adopt(&switch, &hooks, w, &table, &kept),
            _ => offload::AdoptionReport::default(),
        };
        let rows = port_rows(&cfg, &table);
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
            ports: Mutex::new(rows),
            adoption,
            counters: Arc::new(DaemonCounters::default()),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Mutex::new(Vec::new()),
        });
        let d = daemon.clone();
        let t = std::thread::Builder::new()
            .name("flowd-fib".into())
            .spawn(move || d.decision_loop())?;
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
        self.ports.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The configuration in force, now and after each reload that changes it.
    pub fn subscribe_config(&self) -> tokio::sync::watch::Receiver<Arc<Config>> {
        self.applied.subscribe()
    }

    /// Publishes the configuration in force to [`Self::subscribe_config`]'s receivers.
    pub(super) fn publish_config(&self, cfg: &Config) {
        self.applied.send_replace(Arc::new(cfg.clone()));
    }

    /// Applies fibwatch's decisions: the endpoint's route, then the flow's placement.
    fn decision_loop(&self) {
        let Some(w) = &self.watcher else { return };
        while !self.stop.load(Ordering::Relaxed) {
            match w.decisions().recv_timeout(Duration::from_millis(20)) {
                Ok(d) => self.apply_decision(d),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn apply_decision(&self, d: fibwatch::Decision) {
        let kind = match &d.kind {
            DecisionKind::Offload { .. } => "offload",
            DecisionKind::Move { .. } => "move",
            DecisionKind::ToSoftware { .. } => "to_software",
            DecisionKind::BackToOffload { .. } => "back_to_offload",
            _ => "unchanged",
        };
        *self
            .counters
            .migrations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind.to_string())
            .or_default() += 1;
        let Some((flow, _, role)) = self.hooks.flow_of(d.flow) else {
            self.counters
                .stale_decisions
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        if role == fibwatch::Role::Encap {
            self.hooks.apply_route(d.endpoint, &d.kind);
        }
        let Some(entry) = self.switch.engine().table().get(flow) else {
            self.counters
                .stale_decisions
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let why = match &d.kind {
            DecisionKind::ToSoftware { reason, .. } => reason.to_string(),
            DecisionKind::Move { to, .. }
            | DecisionKind::Offload { to }
            | DecisionKind::BackToOffload { to } => format!(
                "via if{} src {}",
                to.ifindex,
                to.src.map_or("?".to_string(), |s| s.to_string())
            ),
            _ => String::new(),
        };
        tracing::info!(flow = %flow, endpoint = %d.endpoint, ?role, kind, %why, "migration");
        // The route table now says where the endpoint goes (or that it cannot be
        // offloaded); offering the flow again re-validates it against that: a move
        // replaces the filter, a refusal withdraws it with the reason.
        self.hooks.offer(&entry);
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
