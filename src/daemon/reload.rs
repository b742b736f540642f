//! A configuration reload (SIGHUP, `flowctl reload`): the file is read and checked
//! again, [`Config::diff`] says what changed (once), and each part is applied from that
//! one diff: port MTUs, representors plugged and unplugged ([`super::hotplug`]), the
//! flow limits, fibwatch's timing, networks and rules, the EVPN side, then the
//! listeners follow the published configuration.
//!
//! Everything that can fail for the whole reload (the file, discovery, a plugged
//! representor's netdev) fails before anything is applied; what the slow path then
//! refuses (a network, a rule) or what needs a restart is not applied, said in the
//! report, and left as it was.

use super::build::fib_timing;
use super::{Daemon, build, kernel, listeners::Listener, lock};
use crate::config::{Config, ConfigDiff, ConfigErrors, RuleConfig};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Why a reload was refused; nothing was applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The daemon was started without a configuration file.
    #[error("no configuration file to reload")]
    NoFile,
    /// The file is not a valid configuration.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// Discovery, a network member, or a plugged representor's netdev.
    #[error(transparent)]
    Build(#[from] build::BuildError),
    /// The file has no representor while some are plugged.
    #[error(
        "{} has no representor: it would unplug all {count} and stop their traffic \
         (to do that, `flowctl reload --allow-empty`)",
        path.display()
    )]
    WouldUnplugAll {
        /// The file.
        path: PathBuf,
        /// Representors plugged now.
        count: usize,
    },
    /// The links could not be listed (for discovery and plugged representors).
    #[error("listing links: {0}")]
    Links(#[source] std::io::Error),
    /// A netlink request (MTU, fibwatch's timing) failed.
    #[error(transparent)]
    Kernel(#[from] kernel::KernelError),
}

/// What a reload did not apply (the answer is then an error that says what was).
#[derive(Debug)]
pub enum NotApplied {
    /// Sections or ports whose change needs a restart.
    Restart(Vec<String>),
    /// A network the slow path refused (it stays as it was, or absent).
    Network {
        /// Its name.
        name: String,
        /// Why.
        why: String,
    },
    /// A rule the slow path refused (it stays absent).
    Rule {
        /// Its priority.
        priority: u16,
        /// Its match.
        matches: String,
        /// Why.
        why: String,
    },
    /// The EVPN side could not start for the networks.
    Evpn(super::DaemonError),
    /// A listener (control socket, metrics endpoint) could not move; it serves where it
    /// was.
    Listener {
        /// Which.
        which: Listener,
        /// Why.
        why: String,
    },
    /// The listeners did not confirm in time.
    ListenersSilent(Duration),
}

impl fmt::Display for NotApplied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not applied: ")?;
        match self {
            NotApplied::Restart(what) => write!(
                f,
                "{} changes need a restart (systemctl restart flowd; add --keep-offloads \
                 to keep traffic)",
                what.join(", ")
            ),
            NotApplied::Network { name, why } => write!(f, "network `{name}`: {why}"),
            NotApplied::Rule {
                priority,
                matches,
                why,
            } => write!(f, "rule priority {priority} match {matches}: {why}"),
            NotApplied::Evpn(why) => write!(f, "{why}"),
            NotApplied::Listener { which, why } => write!(f, "{} {why}", which.section()),
            NotApplied::ListenersSilent(within) => write!(
                f,
                "the listeners did not confirm within {} s (see the log)",
                within.as_secs()
            ),
        }
    }
}

/// What a reload applied, and what it did not.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// One line per change applied (the diff's summary, then what applying it did).
    pub applied: Vec<String>,
    /// What was asked for and not applied.
    pub not_applied: Vec<NotApplied>,
}

impl ReloadReport {
    /// The applied lines, less the listener sections that did not move ("[control]
    /// changed" when the control socket stayed where it was).
    pub fn applied_lines(&self) -> Vec<&str> {
        let stayed = |section: &str| {
            self.not_applied.iter().any(
                |n| matches!(n, NotApplied::Listener { which, .. } if which.section() == section),
            )
        };
        self.applied
            .iter()
            .filter(|l| {
                !["[control]", "[metrics]"]
                    .iter()
                    .any(|s| stayed(s) && **l == format!("{s} changed"))
            })
            .map(String::as_str)
            .collect()
    }
}

impl Daemon {
    /// Re-reads the configuration file and applies what changed: representors (plugged,
    /// unplugged, changed), networks, static MACs, configured rules (runtime rules
    /// stay), the control socket and the metrics listener. Flows the changes do not
    /// affect stay installed (the revalidator re-translates only affected flows).
    /// Uplink, tunnel device, `[datapath]` sizes, `[offload]` backend, `[discovery]` and
    /// `[evpn]` changes need a restart and are reported as such.
    ///
    /// A file that would unplug every representor (an empty or comment-only file, a
    /// truncated one) is refused unless `allow_empty`: it would stop every VF's traffic.
    pub fn reload(&self, allow_empty: bool) -> Result<ReloadReport, ReloadError> {
        let path = self.config_path.as_ref().ok_or(ReloadError::NoFile)?;
        let mut new = Config::load(path)?;
        if new.discovery.is_some() {
            let links = offload::discover::links().map_err(ReloadError::Links)?;
            build::discover_ports(&mut new, &links)?;
        }
        build::check_members(&new)?;
        let mut cur = lock(&self.config);
        let representors = |c: &Config| {
            c.ports
                .iter()
                .filter(|p| p.role == crate::config::PortRole::Representor)
                .count()
        };
        if !allow_empty && representors(&new) == 0 && representors(&cur) > 0 {
            return Err(ReloadError::WouldUnplugAll {
                path: path.clone(),
                count: representors(&cur),
            });
        }
        new.inherit_port_ids(&cur);
        let diff = Config::diff(&cur, &new);
        let mut report = ReloadReport::default();
        if diff.is_empty() {
            // Published all the same: a listener whose move failed retries it.
            report.not_applied = self.publish_config(&cur);
            return Ok(report);
        }
        report.applied = diff.summary();
        let mut target = diff.in_force(&cur, &new);
        // Configured MTUs go on the netdevs; the ports' live facts follow from the
        // kernel's link events.
        report
            .applied
            .extend(kernel::apply_mtus(&new.ports, &kernel::dump_links()?)?);
        report
            .applied
            .extend(self.apply_ports(&diff.hotplug, &new, &target.ports)?);
        let restart = diff.needs_restart();
        if !restart.is_empty() {
            report.not_applied.push(NotApplied::Restart(restart));
        }
        report
            .applied
            .extend(self.apply_live_settings(&diff, &new)?);
        // Decapsulating flows of a network look up the way back with its mark.
        self.hooks
            .marks
            .store(std::sync::Arc::new(build::network_marks(&target)));
        // Networks see the ports in force (a network may name a port whose change was
        // not applied: it is left out of the network until then).
        let refused = match self.apply_networks_and_rules(&cur, &target) {
            Ok(r) => r,
            Err(e) => {
                cur.ports = target.ports;
                return Err(e.into());
            }
        };
        refused.report(&mut report.not_applied);
        if let Err(e) = self.evpn.reconfigure(&target, self.switch.engine()) {
            report.not_applied.push(NotApplied::Evpn(e));
        }
        refused.take_back(&cur, &mut target);
        report.not_applied.extend(self.publish_config(&target));
        *cur = target;
        Ok(report)
    }

    /// The `[datapath]` flow limits and fibwatch's timing, which apply live.
    fn apply_live_settings(
        &self,
        diff: &ConfigDiff,
        new: &Config,
    ) -> Result<Vec<String>, ReloadError> {
        let mut lines = Vec::new();
        let d = &new.datapath;
        if diff.flow_limits_changed {
            self.switch
                .engine()
                .set_limits(Duration::from_millis(d.max_idle_ms), d.flow_limit);
            lines.push(format!(
                "flow limit {}, max idle {} ms",
                d.flow_limit, d.max_idle_ms
            ));
        }
        if diff.fib_timing_changed
            && let Some(w) = &self.watcher
        {
            let (coalesce, settle) = fib_timing(&new.offload);
            w.set_timing(coalesce, settle)
                .map_err(kernel::KernelError::Fibwatch)?;
            lines.push(format!(
                "routing changes: settle {} ms, coalesce at most {} ms",
                settle.as_millis(),
                coalesce.as_millis()
            ));
        }
        Ok(lines)
    }

    /// Applies the networks and rules of `new`; the ones the slow path refused.
    fn apply_networks_and_rules(
        &self,
        cur: &Config,
        new: &Config,
    ) -> Result<Refused, build::BuildError> {
        use build::{network, network_id, rule};
        // Build everything first: a bad item changes nothing.
        let nets: Vec<_> = new
            .networks
            .iter()
            .map(|n| (network_id(n), network(new, n), n.name.clone()))
            .collect();
        let new_rules = new
            .rules
            .iter()
            .filter(|r| !cur.rules.contains(r))
            .map(|r| rule(new, r))
            .collect::<Result<Vec<_>, _>>()?;
        let gone_rules: Vec<(u16, String)> = cur
            .rules
            .iter()
            .filter(|r| !new.rules.contains(r))
            .map(RuleConfig::key)
            .collect();
        let gone_nets: Vec<_> = cur
            .networks
            .iter()
            .filter(|n| !new.networks.iter().any(|m| network_id(m) == network_id(n)))
            .map(network_id)
            .collect();
        Ok(self.switch.engine().configure(|sp| {
            let mut refused = Refused::default();
            let mut changes = Vec::new();
            for id in gone_nets {
                changes.extend(sp.remove_network(id).ok());
            }
            for (id, net, name) in nets {
                let res = match sp.networks().get(id).cloned() {
                    Some(old) if old == net => Ok(None),
                    Some(_) => sp.replace_network(id, net).map(Some),
                    None => sp.add_network(id, net).map(Some),
                };
                match res {
                    Ok(c) => changes.extend(c),
                    Err(e) => {
                        tracing::warn!(network = %name, error = %e, "reload: network refused");
                        refused.networks.push((name, e.to_string()));
                    }
                }
            }
            let ids: Vec<_> = sp
                .rules()
                .entries()
                .iter()
                .filter(|e| gone_rules.contains(&(e.rule.priority, e.rule.matches.to_string())))
                .map(|e| e.id)
                .collect();
            for id in ids {
                changes.extend(sp.delete_rule(id).ok());
            }
            for r in new_rules {
                let key = (r.priority, r.matches.to_string());
                match sp.add_rule(r) {
                    Ok((_, c)) => changes.push(c),
                    Err(e) => {
                        tracing::warn!(priority = key.0, r#match = %key.1, error = %e, "reload: rule refused");
                        refused.rules.push((key, e.to_string()));
                    }
                }
            }
            (refused, changes)
        }))
    }
}

/// What the slow path refused of a reload.
#[derive(Debug, Default)]
struct Refused {
    /// Networks, by name, and why.
    networks: Vec<(String, String)>,
    /// Rules, by (priority, match), and why.
    rules: Vec<((u16, String), String)>,
}

impl Refused {
    /// Takes the refused networks and rules back out of the configuration in force (a
    /// refused network stays as it was in `cur`, or absent; a refused rule absent) and
    /// says so.
    fn take_back(&self, cur: &Config, target: &mut Config) {
        target.networks = std::mem::take(&mut target.networks)
            .into_iter()
            .filter_map(|n| {
                if self.networks.iter().any(|(name, _)| *name == n.name) {
                    cur.networks.iter().find(|c| c.name == n.name).cloned()
                } else {
                    Some(n)
                }
            })
            .collect();
        target
            .rules
            .retain(|r| !self.rules.iter().any(|(k, _)| *k == r.key()));
    }

    /// The refused networks and rules, as what was not applied.
    fn report(&self, not_applied: &mut Vec<NotApplied>) {
        for (name, why) in &self.networks {
            not_applied.push(NotApplied::Network {
                name: name.clone(),
                why: why.clone(),
            });
        }
        for ((priority, matches), why) in &self.rules {
            not_applied.push(NotApplied::Rule {
                priority: *priority,
                matches: matches.clone(),
                why: why.clone(),
            });
        }
    }
}
