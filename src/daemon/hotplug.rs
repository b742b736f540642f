//! Representors plugged and unplugged by a reload, while traffic flows.
//!
//! A VM's VF comes and goes with the VM: its representor must join and leave the switch
//! without a restart. A reload applies added, removed and changed representors:
//! - a plugged port's netdev is looked up and its AF_PACKET socket opened first (a
//!   failure changes nothing and fails the reload);
//! - an unplugged port leaves the datapath thread, the stations learned behind it are
//!   forgotten (flows toward them are translated again), and every flow that enters by
//!   it or outputs to it is deleted with its filter;
//! - the offload worker, after the requests queued before, drops unplugged ports and
//!   prepares plugged ones (tc: the ingress qdisc); then plugged ports join the
//!   datapath thread.
//!
//! A changed representor (new VF number or switch id) is unplugged and plugged again
//! under the same port number. A changed `mtu` is not a port change: the reload sets
//! it on the netdev, and the live facts follow (see [`super::ports`]). Uplinks and the
//! tunnel device carry every tunnel and route decision: changing them still needs a
//! restart (`--keep-offloads` keeps the traffic), and a reload says so.

use super::Daemon;
use crate::config::{Config, PortConfig, PortRole as CfgRole};
use crate::switch::SwitchPort;
use datapath::PortId;
use datapath::actions::Action;
use datapath::dpif::PortRole;
use datapath::port::AfPacketPort;
use datapath::slowpath::{DeleteReason, FlowObserver};
use offload::worker::PortChange;
use std::collections::HashMap;

/// Whether two configurations of a port differ in more than the MTU they ask for.
fn differs(a: &PortConfig, b: &PortConfig) -> bool {
    PortConfig {
        mtu: None,
        ..a.clone()
    } != PortConfig {
        mtu: None,
        ..b.clone()
    }
}

/// What applying a reload's port changes did.
#[derive(Debug, Default)]
pub(super) struct PortsApplied {
    /// The ports now in force (the configuration's, for the changes applied).
    pub ports: Vec<PortConfig>,
    /// One line per port applied or refused.
    pub lines: Vec<String>,
    /// Ports whose change needs a restart (uplinks, the tunnel device).
    pub restart: Vec<String>,
}

impl Daemon {
    /// Applies the representor changes from `cur` to `new` (whose port ids were
    /// inherited from `cur`). Fails, changing nothing, if a plugged port cannot be
    /// found or opened.
    pub(super) fn apply_ports(&self, cur: &Config, new: &Config) -> Result<PortsApplied, String> {
        let next: HashMap<&str, &PortConfig> =
            new.ports.iter().map(|p| (p.name.as_str(), p)).collect();
        let rep = |p: &PortConfig| p.role == CfgRole::Representor;
        let mut out = PortsApplied::default();
        // Representors only: (removed, changed as (old, new), added).
        let (mut removed, mut changed, mut added) = (Vec::new(), Vec::new(), Vec::new());
        for p in &cur.ports {
            match next.get(p.name.as_str()) {
                Some(n) if !differs(n, p) => {}
                None if rep(p) => removed.push(p),
                Some(n) if rep(p) && rep(n) => changed.push((p, *n)),
                _ => out.restart.push(p.name.clone()),
            }
        }
        for n in &new.ports {
            if cur.port(&n.name).is_none() {
                if rep(n) {
                    added.push(n);
                } else {
                    out.restart.push(n.name.clone());
                }
            }
        }
        let unplug: Vec<&PortConfig> = removed
            .iter()
            .copied()
            .chain(changed.iter().map(|c| c.0))
            .collect();
        let plug: Vec<&PortConfig> = changed
            .iter()
            .map(|c| c.1)
            .chain(added.iter().copied())
            .collect();
        let keep_mtus = |ports: &[PortConfig]| -> Vec<PortConfig> {
            ports
                .iter()
                .map(|p| match next.get(p.name.as_str()) {
                    Some(n) if !differs(n, p) => (*n).clone(),
                    _ => p.clone(),
                })
                .collect()
        };
        if unplug.is_empty() && plug.is_empty() {
            out.ports = keep_mtus(&cur.ports);
            return Ok(out);
        }

        // Everything that can fail, first.
        let links = super::dump_links().map_err(|e| e.to_string())?;
        let facts: HashMap<&str, _> = links.iter().map(|l| (l.name.as_str(), l)).collect();
        let mut opened = Vec::new();
        for p in &plug {
            let f = facts
                .get(p.name.as_str())
                .ok_or_else(|| format!("port `{}`: no such interface", p.name))?;
            let io = AfPacketPort::open(&p.name, new.datapath.batch)
                .map_err(|e| format!("port `{}`: {e}", p.name))?;
            opened.push((super::ports::info(p, f), io));
        }

        let gone: Vec<PortId> = unplug.iter().map(|p| p.id).collect();
        for p in &unplug {
            self.switch.unplug(p.id);
        }
        let engine = self.switch.engine();
        engine.configure(|sp| {
            let changes = gone.iter().flat_map(|id| sp.forget_port(*id)).collect();
            ((), changes)
        });
        let table = engine.table();
        let mut deleted = 0;
        for e in table.snapshot() {
            let touches = gone.iter().any(|id| {
                e.key().in_port == id.0
                    || e.actions()
                        .as_slice()
                        .iter()
                        .any(|a| matches!(a, Action::Output(o) if o == id))
            });
            if touches && table.remove(e.id()).is_some() {
                self.hooks.deleted(&e, DeleteReason::Stale);
                deleted += 1;
            }
        }

        if let Some(w) = &self.offload {
            out.lines.extend(w.change_ports(PortChange {
                plugged: opened.iter().map(|(info, _)| info.clone()).collect(),
                unplugged: gone.clone(),
            }));
        }

        let names = |list: &[&PortConfig]| list.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        let (unplugged, plugged) = (names(&removed), names(&added));
        let replugged: Vec<String> = changed.iter().map(|c| c.1.name.clone()).collect();
        for (what, list) in [
            ("plugged", &plugged),
            ("unplugged", &unplugged),
            ("plugged again", &replugged),
        ] {
            if !list.is_empty() {
                out.lines
                    .push(format!("representors {what}: {}", list.join(", ")));
            }
        }
        if deleted > 0 {
            out.lines
                .push(format!("{deleted} flows of unplugged ports deleted"));
        }
        tracing::info!(?plugged, ?unplugged, ?replugged, deleted, "ports applied");

        // In force: the old list with the representor changes applied.
        out.ports = keep_mtus(&cur.ports)
            .into_iter()
            .filter_map(|p| match next.get(p.name.as_str()) {
                _ if out.restart.contains(&p.name) => Some(p),
                Some(n) => Some((*n).clone()),
                None => None,
            })
            .chain(added.iter().map(|p| (*p).clone()))
            .collect();
        self.ports.reconfigure(
            out.ports.clone(),
            opened.iter().map(|(info, _)| info.clone()).collect(),
        );
        {
            let mut m = self.opened.lock().unwrap_or_else(|e| e.into_inner());
            m.retain(|id, _| !gone.contains(id));
            m.extend(
                opened
                    .iter()
                    .map(|(info, _)| (info.id, (info.ifindex, info.mtu))),
            );
        }
        for (info, io) in opened {
            self.switch.plug(SwitchPort {
                id: info.id,
                role: PortRole::Representor,
                io: Some(Box::new(io)),
            });
        }
        Ok(out)
    }
}
