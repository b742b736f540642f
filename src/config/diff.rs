//! What changed between two configurations: the one diff a reload applies. It is
//! computed once ([`Config::diff`]) and consumed by the reload (sections, networks,
//! rules) and by hot-plug (representors): the daemon never compares configurations
//! itself.

use super::*;
use std::collections::BTreeMap;

pub(super) fn diff_named<T: PartialEq>(
    old: &[T],
    new: &[T],
    name: impl Fn(&T) -> String,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let o: BTreeMap<String, &T> = old.iter().map(|x| (name(x), x)).collect();
    let n: BTreeMap<String, &T> = new.iter().map(|x| (name(x), x)).collect();
    let added = n.keys().filter(|k| !o.contains_key(*k)).cloned().collect();
    let removed = o.keys().filter(|k| !n.contains_key(*k)).cloned().collect();
    let changed = n
        .iter()
        .filter(|(k, v)| o.get(*k).is_some_and(|ov| ov != *v))
        .map(|(k, _)| k.clone())
        .collect();
    (added, removed, changed)
}

/// What a reload changes. Names are sorted; a changed port or network is one whose
/// settings differ under the same name (the daemon re-applies it as remove + add).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigDiff {
    /// Ports only in the new configuration.
    pub ports_added: Vec<String>,
    /// Ports only in the old configuration.
    pub ports_removed: Vec<String>,
    /// Ports in both whose settings (role, id, vf, switch id, MTU) differ.
    pub ports_changed: Vec<String>,
    /// Networks only in the new configuration.
    pub networks_added: Vec<String>,
    /// Networks only in the old configuration.
    pub networks_removed: Vec<String>,
    /// Networks in both whose settings differ.
    pub networks_changed: Vec<String>,
    /// Rules to add (new, or same priority and match with new actions).
    pub rules_added: Vec<RuleConfig>,
    /// Rules to delete (gone, or replaced by a rule in `rules_added`).
    pub rules_removed: Vec<RuleConfig>,
    /// `[datapath]` differs.
    pub datapath_changed: bool,
    /// `[offload]` differs.
    pub offload_changed: bool,
    /// `[metrics]` differs.
    pub metrics_changed: bool,
    /// `[control]` differs.
    pub control_changed: bool,
    /// `[discovery]` differs.
    pub discovery_changed: bool,
    /// Representors to plug and unplug while traffic flows.
    pub hotplug: Hotplug,
    /// Ports whose change needs a restart: uplinks and the tunnel device (added,
    /// removed or changed in more than their MTU), and a port changing role.
    pub ports_restart: Vec<String>,
    /// `[datapath]` keys that size what the datapath allocates at start changed
    /// (`upcall_queue`, `handler_threads`, `threads`, `batch`, `mac_table_size`, `ring_kib`): a
    /// restart.
    pub datapath_restart: bool,
    /// `[datapath] flow_limit` or `max_idle_ms` changed: applied live.
    pub flow_limits_changed: bool,
    /// `[offload] policy`, `backend`, `queue` or `sim_capacity` changed: a restart.
    pub offload_restart: bool,
    /// `[offload] coalesce_ms` or `settle_ms` changed: applied live.
    pub fib_timing_changed: bool,
    /// `[evpn]` (the BGP side's settings, fixed when it starts) changed: a restart.
    pub evpn_restart: bool,
}

/// Representors a reload plugs and unplugs (see `daemon::hotplug`). A port whose only
/// change is its `mtu` is not here: the MTU goes on its netdev, and its live facts
/// follow.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hotplug {
    /// Representors only in the new configuration.
    pub plugged: Vec<PortConfig>,
    /// Representors only in the old configuration.
    pub unplugged: Vec<PortConfig>,
    /// Representors in both whose settings other than `mtu` changed (VF number,
    /// switch id, `ring_kib`), as (old, new): unplugged, then plugged again under the
    /// same port number, with a new socket.
    pub replugged: Vec<(PortConfig, PortConfig)>,
}

impl Hotplug {
    /// Whether no representor comes or goes.
    pub fn is_empty(&self) -> bool {
        self.plugged.is_empty() && self.unplugged.is_empty() && self.replugged.is_empty()
    }

    /// The ports that leave the switch: the unplugged ones, and the old form of the
    /// replugged ones.
    pub fn leaving(&self) -> impl Iterator<Item = &PortConfig> {
        self.unplugged
            .iter()
            .chain(self.replugged.iter().map(|c| &c.0))
    }

    /// The ports that join it: the new form of the replugged ones, and the plugged ones.
    pub fn joining(&self) -> impl Iterator<Item = &PortConfig> {
        self.replugged.iter().map(|c| &c.1).chain(&self.plugged)
    }
}

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

/// Representor changes, and the ports whose change needs a restart.
pub(super) fn port_changes(old: &Config, new: &Config) -> (Hotplug, Vec<String>) {
    let next: BTreeMap<&str, &PortConfig> =
        new.ports.iter().map(|p| (p.name.as_str(), p)).collect();
    let rep = |p: &PortConfig| p.role == PortRole::Representor;
    let mut hotplug = Hotplug::default();
    let mut restart = Vec::new();
    for p in &old.ports {
        match next.get(p.name.as_str()) {
            Some(n) if !differs(n, p) => {}
            None if rep(p) => hotplug.unplugged.push(p.clone()),
            Some(n) if rep(p) && rep(n) => hotplug.replugged.push((p.clone(), (*n).clone())),
            _ => restart.push(p.name.clone()),
        }
    }
    for n in &new.ports {
        if old.port(&n.name).is_none() {
            if rep(n) {
                hotplug.plugged.push(n.clone());
            } else {
                restart.push(n.name.clone());
            }
        }
    }
    (hotplug, restart)
}

impl ConfigDiff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        *self == ConfigDiff::default()
    }

    /// The configuration in force once a reload applied what it applies live: the
    /// representor changes and every port's MTU (ports needing a restart stay as they
    /// are), the flow limits and routing timing, networks, rules, `[control]`,
    /// and `[metrics]` from `new`; the rest of `[datapath]` and `[offload]`,
    /// `[discovery]` and `[evpn]`, as in force (they need a restart). Networks and rules the
    /// slow path then refuses are the reload's to take back out.
    pub fn in_force(&self, cur: &Config, new: &Config) -> Config {
        let ports = cur
            .ports
            .iter()
            .filter_map(|p| match new.port(&p.name) {
                _ if self.ports_restart.contains(&p.name) => Some(p.clone()),
                Some(n) => Some(n.clone()),
                None => None,
            })
            .chain(self.hotplug.plugged.iter().cloned())
            .collect();
        Config {
            ports,
            datapath: DatapathConfig {
                flow_limit: new.datapath.flow_limit,
                max_idle_ms: new.datapath.max_idle_ms,
                ..cur.datapath
            },
            offload: OffloadConfig {
                coalesce_ms: new.offload.coalesce_ms,
                settle_ms: new.offload.settle_ms,
                ..cur.offload
            },
            discovery: cur.discovery.clone(),
            evpn: cur.evpn,
            ..new.clone()
        }
    }

    /// What needs a restart, by section (empty: everything was applied).
    pub fn needs_restart(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.ports_restart.is_empty() {
            out.push(format!("port ({})", self.ports_restart.join(", ")));
        }
        if self.datapath_restart {
            out.push(
                "[datapath] upcall_queue, handler_threads, threads, batch, mac_table_size and \
                 ring_kib"
                    .into(),
            );
        }
        if self.offload_restart {
            out.push("[offload] policy, backend, queue and sim_capacity".into());
        }
        if self.discovery_changed {
            out.push("[discovery]".into());
        }
        if self.evpn_restart {
            out.push("[evpn]".into());
        }
        out
    }

    /// One line per change, for logs and `flowctl reload`.
    pub fn summary(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut names = |what: &str, list: &[String]| {
            if !list.is_empty() {
                out.push(format!("{what}: {}", list.join(", ")));
            }
        };
        names("ports added", &self.ports_added);
        names("ports removed", &self.ports_removed);
        names("ports changed", &self.ports_changed);
        names("networks added", &self.networks_added);
        names("networks removed", &self.networks_removed);
        names("networks changed", &self.networks_changed);
        for r in &self.rules_removed {
            out.push(format!(
                "rule removed: priority={} match={}",
                r.priority, r.matches
            ));
        }
        for r in &self.rules_added {
            out.push(format!(
                "rule added: priority={} match={} actions={}",
                r.priority, r.matches, r.actions
            ));
        }
        for (changed, what) in [
            (self.datapath_changed, "[datapath] changed"),
            (self.offload_changed, "[offload] changed"),
            (self.metrics_changed, "[metrics] changed"),
            (self.control_changed, "[control] changed"),
            (self.discovery_changed, "[discovery] changed"),
            (self.evpn_restart, "[evpn] changed"),
        ] {
            if changed {
                out.push(what.to_string());
            }
        }
        out
    }
}
