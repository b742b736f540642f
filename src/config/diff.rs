//! What changed between two configurations: the diff a reload applies.

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
}

impl ConfigDiff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        *self == ConfigDiff::default()
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
        ] {
            if changed {
                out.push(what.to_string());
            }
        }
        out
    }
}
