//! Representors plugged and unplugged by a reload, while traffic flows.
//!
//! A VM's VF comes and goes with the VM: its representor must join and leave the switch
//! without a restart. A reload applies added, removed and changed representors:
//! - a plugged port's netdev is looked up and its AF_PACKET sockets opened first, one
//!   per datapath thread in one fanout group (a failure changes nothing and fails the
//!   reload);
//! - an unplugged port leaves every datapath thread, the stations learned behind it are
//!   forgotten (flows toward them are translated again), and every flow that enters by
//!   it or outputs to it is deleted with its filter;
//! - the offload worker, after the requests queued before, drops unplugged ports and
//!   prepares plugged ones (tc: the ingress qdisc); then plugged ports join the
//!   datapath threads, each its own socket.
//!
//! A changed representor (new VF number, switch id or `ring_kib`) is unplugged and plugged again
//! under the same port number. A changed `mtu` is not a port change: the reload sets
//! it on the netdev, and the live facts follow (see [`super::ports`]). Uplinks and the
//! tunnel device carry every tunnel and route decision: changing them still needs a
//! restart (`--keep-offloads` keeps the traffic), and a reload says so.

use super::build::BuildError;
use super::reload::ReloadError;
use super::{Daemon, kernel};
use crate::config::{Config, Hotplug, PortConfig};
use crate::switch::SwitchPort;
use datapath::PortId;
use datapath::actions::Action;
use datapath::dpif::PortRole;
use datapath::slowpath::{DeleteReason, FlowObserver};
use offload::worker::PortChange;
use std::collections::HashMap;

impl Daemon {
    /// Applies the representor changes of a reload's diff (`new` is the configuration
    /// read, whose port ids were inherited; `in_force` the ports once applied): the
    /// lines say what was done. Fails, changing nothing, if a plugged port cannot be
    /// found or opened.
    pub(super) fn apply_ports(
        &self,
        hotplug: &Hotplug,
        new: &Config,
        in_force: &[PortConfig],
    ) -> Result<Vec<String>, ReloadError> {
        if hotplug.is_empty() {
            return Ok(Vec::new());
        }
        // Everything that can fail, first.
        let links = kernel::dump_links()?;
        let facts: HashMap<&str, _> = links.iter().map(|l| (l.name.as_str(), l)).collect();
        let mut opened = Vec::new();
        for p in hotplug.joining() {
            let f = facts
                .get(p.name.as_str())
                .ok_or_else(|| BuildError::NoSuchInterface(p.name.clone()))?;
            let io = super::build::open_port(p, &new.datapath)?;
            opened.push((super::ports::info(p, f), io));
        }
        let gone: Vec<PortId> = hotplug.leaving().map(|p| p.id).collect();
        let deleted = self.unplug(&gone);
        let mut lines = Vec::new();
        if let Some(w) = &self.offload {
            lines.extend(w.change_ports(PortChange {
                plugged: opened.iter().map(|(info, _)| info.clone()).collect(),
                unplugged: gone.clone(),
            }));
        }
        lines.extend(summary(hotplug, deleted));
        self.ports.reconfigure(
            in_force.to_vec(),
            opened.iter().map(|(info, _)| info.clone()).collect(),
        );
        // A port plugged again (its id inherited) may install flows again.
        self.switch.engine().configure(|sp| {
            for (info, _) in &opened {
                sp.plug_port(info.id);
            }
            ((), Vec::new())
        });
        for (info, io) in opened {
            self.switch.plug(SwitchPort {
                id: info.id,
                role: PortRole::Representor,
                io,
            });
        }
        Ok(lines)
    }

    /// Takes ports out of the datapath thread, forgets the stations learned behind
    /// them, and deletes every flow that enters by them or outputs to them (with its
    /// filter); returns how many flows.
    fn unplug(&self, gone: &[PortId]) -> usize {
        for id in gone {
            self.switch.unplug(*id);
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
        deleted
    }
}

/// The lines a hot-plug answers with.
fn summary(hotplug: &Hotplug, deleted: usize) -> Vec<String> {
    let names = |list: &mut dyn Iterator<Item = &PortConfig>| {
        list.map(|p| p.name.clone()).collect::<Vec<_>>()
    };
    let plugged = names(&mut hotplug.plugged.iter());
    let unplugged = names(&mut hotplug.unplugged.iter());
    let replugged = names(&mut hotplug.replugged.iter().map(|c| &c.1));
    tracing::info!(?plugged, ?unplugged, ?replugged, deleted, "ports applied");
    let mut lines = Vec::new();
    for (what, list) in [
        ("plugged", &plugged),
        ("unplugged", &unplugged),
        ("plugged again", &replugged),
    ] {
        if !list.is_empty() {
            lines.push(format!("representors {what}: {}", list.join(", ")));
        }
    }
    if deleted > 0 {
        lines.push(format!("{deleted} flows of unplugged ports deleted"));
    }
    lines
}
