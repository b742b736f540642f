//! The flowd daemon: builds the switch from the configuration and runs it.
//!
//! ```text
//! config -> ports' MTUs set, fibwatch (first dump: the ports' live facts),
//!           ports (AF_PACKET), slow path (networks, rules), flow table, offload
//! fibwatch Watcher ----events----> event loop: links -> LivePorts -> offload, datapath;
//!                                              paths -> RouteTable, offload
//! Switch (datapath, handlers, revalidator) --FlowHooks--> fibwatch (keys), offload
//! control socket (flowctl) -> Handler;  metrics -> Prometheus endpoint
//! ```
//!
//! [`start`] assembles the daemon in dependency order from the parts [`build`] makes;
//! [`reload`] applies a changed configuration from its one diff ([`hotplug`] for the
//! representors); [`kernel`] holds the daemon's own netlink requests.

pub mod build;
pub mod evpn;
pub mod handler;
mod hotplug;
pub mod kernel;
pub mod listeners;
pub mod malloc;
pub mod metrics;
pub mod observer;
pub mod ports;
pub mod reload;
pub mod routes;
mod start;
pub mod stats;
pub mod tunnel_gso;

use crate::config::{Config, PortRole as CfgRole};
use crate::control::proto::PortRow;
use crate::switch::{Switch, SwitchPort};
use datapath::slowpath::{DeleteReason, FlowObserver};
use fibwatch::{Event, Watcher};
pub use kernel::{KernelError, kernel_has_flower};
use observer::FlowHooks;
use offload::worker::{OffloadWorker, PortChange};
use ports::{LivePorts, PortUpdate};
pub use reload::{NotApplied, ReloadError, ReloadReport};
use routes::RouteTable;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    Offload(#[from] offload::BackendError),
    /// A netlink request of the daemon's own failed (links, MTUs).
    #[error(transparent)]
    Kernel(#[from] KernelError),
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

impl Daemon {
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
    /// their part: what they could not apply. The caller holds
    /// the configuration lock, so no other publication interleaves.
    pub(super) fn publish_config(&self, cfg: &Config) -> Vec<NotApplied> {
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
        if !self.ports.needs_reopen(&u.now) {
            return;
        }
        self.reopen(&u);
    }

    /// Opens a port's socket again and hands it to the datapath thread, which replaces
    /// the old one.
    fn reopen(&self, u: &PortUpdate) {
        let (port, datapath) = {
            let cfg = lock(&self.config);
            let port = cfg.ports.iter().find(|p| p.id == u.now.id).cloned();
            (port, cfg.datapath.clone())
        };
        // Unplugged by a reload meanwhile: nothing to reopen.
        let Some(port) = port else { return };
        match build::open_port(&port, &datapath) {
            Ok(io) => {
                self.ports.opened(&u.now);
                self.switch.plug(SwitchPort {
                    id: u.now.id,
                    role: build::role(u.role),
                    io,
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
