//! The control socket's requests, answered from the running daemon.

use super::{Daemon, fib_timing, lock};
use crate::config::{Config, RuleActionsConfig, RuleConfig};
use crate::control::proto::{
    DoneBody, FlowFilter, FlowRow, FlowSelect, FlowSummary, MAX_ECHO_BYTES, Placement, Request,
    Response, ResponseBody, RuleRow, TraceBody, TunnelRow, elide,
};
use crate::control::server::ControlHandler;
use datapath::Megaflow;
use datapath::PortId;
use datapath::cache::FlowEntry;
use offload::backend::HwState;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Answers flowctl.
pub struct Handler(pub Arc<Daemon>);

fn software(reason: &offload::SoftwareReason) -> Placement {
    Placement {
        offloaded: false,
        dp: "sw".into(),
        reason: Some(reason.to_string()),
        category: Some(reason.category().to_string()),
        ..Placement::default()
    }
}

fn placement(d: &Daemon, e: &FlowEntry) -> Placement {
    let Some(o) = &d.offload else {
        return software(&offload::SoftwareReason::Off);
    };
    match o.placement(e.id()) {
        Some(offload::Placement::Offloaded {
            backend,
            device,
            in_hw,
        }) => Placement {
            offloaded: true,
            dp: backend.to_string(),
            in_hw: match in_hw {
                HwState::InHw { .. } => Some(true),
                HwState::NotInHw => Some(false),
                _ => None,
            },
            reason: None,
            category: None,
            device: Some(device),
        },
        Some(offload::Placement::Software { reason }) => software(&reason),
        _ => software(&offload::SoftwareReason::Pending),
    }
}

/// A [`FlowSelect`] resolved against the daemon's ports and configuration.
struct Selector {
    port: Option<PortId>,
    /// The network's representors and VNI.
    network: Option<(Vec<PortId>, Option<u32>)>,
    remote: Option<IpAddr>,
    reason: Option<String>,
    limit: u64,
}

impl Selector {
    fn resolve(d: &Daemon, s: &FlowSelect) -> Result<Self, String> {
        let ports = d.ports.table();
        let port_id = |name: &str| {
            ports
                .iter()
                .find(|p| p.name == name)
                .map(|p| p.id)
                .ok_or_else(|| format!("no port named `{name}` (see `flowctl show`)"))
        };
        let port = s.port.as_deref().map(port_id).transpose()?;
        let network = match &s.network {
            None => None,
            Some(name) => {
                let cfg = lock(&d.config);
                let n = cfg
                    .networks
                    .iter()
                    .find(|n| n.name == *name)
                    .ok_or_else(|| format!("no network named `{name}` in the configuration"))?;
                let vni = match n.segment {
                    crate::config::Segment::Vni(v) => Some(v),
                    crate::config::Segment::Vlan(_) => None,
                };
                // A representor not plugged now has no flows to select.
                let reps = n.members.iter().filter_map(|m| port_id(m).ok()).collect();
                Some((reps, vni))
            }
        };
        Ok(Self {
            port,
            network,
            remote: s.remote,
            reason: s.reason.clone(),
            limit: s.limit.unwrap_or(u64::MAX),
        })
    }

    /// Whether the flow passes the conditions its key and actions decide.
    fn matches(&self, e: &FlowEntry) -> bool {
        let key = e.key();
        let in_port = PortId(key.in_port);
        if self.port.is_some_and(|p| p != in_port) {
            return false;
        }
        let tunnels = || {
            e.actions().as_slice().iter().filter_map(|a| match a {
                datapath::actions::Action::SetTunnel(t) => Some(t),
                _ => None,
            })
        };
        if let Some(r) = self.remote
            && key.tunnel_src() != Some(r)
            && !tunnels().any(|t| t.dst == r)
        {
            return false;
        }
        if let Some((reps, vni)) = &self.network {
            let decap = key.tunnel_src().is_some();
            let ours = (!decap && reps.contains(&in_port))
                || vni
                    .is_some_and(|v| (decap && key.tun_vni == v) || tunnels().any(|t| t.vni == v));
            if !ours {
                return false;
            }
        }
        true
    }

    /// Whether a flow placed as `p` passes the reason condition.
    fn matches_placement(&self, p: &Placement) -> bool {
        match &self.reason {
            None => true,
            Some(r) => !p.offloaded && p.category.as_deref() == Some(r.as_str()),
        }
    }
}

fn flow_row_placed(d: &Daemon, e: &FlowEntry, placement: Placement, now_ms: u64) -> FlowRow {
    let mut st = e.stats();
    let sw_packets = st.packets;
    if let Some(rs) = d.offload.as_ref().and_then(|o| o.stats(e.id())) {
        // An offloaded flow's packets are counted by tc (and the hardware), not here.
        st.packets += rs.packets;
        st.bytes += rs.bytes;
    }
    FlowRow {
        id: e.id().0,
        flow: e.megaflow().to_string(),
        packets: st.packets,
        sw_packets,
        bytes: st.bytes,
        used_ms_ago: (st.packets > 0).then(|| now_ms.saturating_sub(st.used)),
        placement,
        actions: e.actions().to_string(),
    }
}

impl Handler {
    /// `dump-flows`: the flows the filter and the selection pass, as rows or counted.
    /// The conditions on keys and actions are checked first; a flow's row is formatted
    /// only once it is selected.
    fn dump_flows(&self, filter: FlowFilter, select: &FlowSelect, summary: bool) -> Response {
        let d = &self.0;
        let sel = match Selector::resolve(d, select) {
            Ok(s) => s,
            Err(e) => return Response::err(e),
        };
        let now = d.switch.clock().now_ms();
        let ports = d.ports.table();
        let mut rows = Vec::new();
        let mut sum = FlowSummary::default();
        let mut taken = 0u64;
        for e in d.switch.engine().table().snapshot().iter() {
            if taken >= sel.limit {
                break;
            }
            if !sel.matches(e) {
                continue;
            }
            let p = placement(d, e);
            if !filter.accepts(&p) || !sel.matches_placement(&p) {
                continue;
            }
            taken += 1;
            if !summary {
                rows.push(flow_row_placed(d, e, p, now));
                continue;
            }
            sum.flows += 1;
            let at = if p.offloaded {
                sum.offloaded += 1;
                p.dp.clone()
            } else {
                sum.software += 1;
                format!("software ({})", p.category.as_deref().unwrap_or("-"))
            };
            *sum.by_placement.entry(at).or_default() += 1;
            let port = ports
                .get(PortId(e.key().in_port))
                .map_or_else(|| format!("port {}", e.key().in_port), |p| p.name.clone());
            *sum.by_port.entry(port).or_default() += 1;
        }
        if summary {
            ResponseBody::FlowSummary(sum).into()
        } else {
            ResponseBody::Flows(rows).into()
        }
    }

    fn tunnels(&self) -> ResponseBody {
        let d = &self.0;
        let by_key = d.hooks.flows_by_key();
        let table = d.switch.engine().table();
        let ports = d.ports.table();
        let rows =
            d.routes
                .keys()
                .into_iter()
                .map(|(key, st)| {
                    let flows = by_key.get(&key).cloned().unwrap_or_default();
                    let offloaded = flows
                        .iter()
                        .filter(|f| {
                            table.get(**f).is_some()
                                && d.offload
                                    .as_ref()
                                    .and_then(|o| o.placement(**f))
                                    .is_some_and(|p| p.is_offloaded())
                        })
                        .count() as u64;
                    let path = st.facts.and_then(Result::ok);
                    let problem = match (&st.facts, st.route) {
                        (None, _) => Some("path not resolved yet".to_string()),
                        (Some(Err(why)), _) => Some(why.to_string()),
                        (Some(Ok(p)), Err(datapath::tunnel::Unroutable::NextHopUnresolved)) => {
                            Some(format!("next hop {} unresolved", p.neighbour))
                        }
                        (Some(Ok(p)), Err(datapath::tunnel::Unroutable::NotManaged)) => Some(
                            format!("leaves by {}, not a flowd uplink", ports.name_of(p.uplink)),
                        ),
                        (Some(Ok(_)), Err(_)) => Some("no source address".to_string()),
                        (Some(Ok(_)), Ok(_)) => None,
                    };
                    TunnelRow {
                        endpoint: key.dst.to_string(),
                        from: key.src.map(|s| s.to_string()),
                        mark: key.mark,
                        uplink: path.map(|p| ports.name_of(p.uplink)),
                        source_ip: path.and_then(|p| p.src).map(|s| s.to_string()),
                        next_hop: path.map(|p| p.gateway.unwrap_or(key.dst).to_string()),
                        mac: path
                            .and_then(|p| p.next_hop_mac)
                            .map(|m| datapath::flow::Mac(m).to_string()),
                        problem,
                        path_mtu: path.map(|p| p.mtu),
                        flows: flows.len() as u64,
                        offloaded,
                        software: flows.len() as u64 - offloaded,
                        ipsec: path.and_then(|p| p.ipsec).map(|i| i.to_string()),
                    }
                })
                .collect();
        ResponseBody::Tunnels(rows)
    }

    fn trace(&self, flow: &str) -> Response {
        let mf: Megaflow = match flow.parse() {
            Ok(m) => m,
            Err(e) => return Response::err(format!("bad flow: {}", echo(&e))),
        };
        let d = &self.0;
        let trace = d
            .switch
            .engine()
            .read()
            .trace(&mf.key, d.switch.clock().now());
        let text = trace.to_string();
        ResponseBody::Trace(TraceBody {
            lines: text.lines().map(str::to_string).collect(),
            actions: trace.xlation.actions.to_string(),
            megaflow: Megaflow::new(&mf.key, &trace.xlation.mask).to_string(),
        })
        .into()
    }

    fn rules_list(&self) -> ResponseBody {
        // The configuration lock first, then the slow path's: a reload takes them in
        // that order (the other order deadlocks against it).
        let cfg_rules: Vec<(u16, String)> = self
            .0
            .config
            .lock()
            .map(|c| c.rules.iter().map(RuleConfig::key).collect())
            .unwrap_or_default();
        let sp = self.0.switch.engine().read();
        let rows = sp
            .rules()
            .entries()
            .iter()
            .map(|e| {
                let key = (e.rule.priority, e.rule.matches.to_string());
                let origin = if e.rule.priority == 0 && e.rule.matches.mask.is_wildcard_all() {
                    "default"
                } else if cfg_rules.contains(&key) {
                    "config"
                } else {
                    "runtime"
                };
                RuleRow {
                    id: e.id.0,
                    priority: e.rule.priority,
                    r#match: e.rule.matches.to_string(),
                    actions: e
                        .rule
                        .actions
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    origin: origin.into(),
                }
            })
            .collect();
        ResponseBody::Rules(rows)
    }

    fn rules_add(&self, priority: u16, m: &str, actions: &str) -> Response {
        let d = &self.0;
        let matches: Megaflow = match m.parse() {
            Ok(v) => v,
            Err(e) => return Response::err(format!("bad match: {}", echo(&e))),
        };
        let actions: RuleActionsConfig = match actions.parse() {
            Ok(v) => v,
            Err(e) => return Response::err(format!("bad actions: {}", echo(&e))),
        };
        let rc = RuleConfig {
            priority,
            matches,
            actions,
        };
        let cfg = d.config.lock().map(|c| c.clone());
        let Ok(cfg) = cfg else {
            return Response::err("configuration unavailable");
        };
        let rule = match super::build::rule(&cfg, &rc) {
            Ok(r) => r,
            Err(e) => return Response::err(e.to_string()),
        };
        let res = d.switch.engine().configure(|sp| match sp.add_rule(rule) {
            Ok((id, change)) => (Ok(id), vec![change]),
            Err(e) => (Err(e), vec![]),
        });
        match res {
            Ok(id) => done(format!("rule {} added", id.0), Some(id.0)),
            Err(e) => Response::err(e.to_string()),
        }
    }

    fn rules_del(&self, priority: u16, m: &str) -> Response {
        let d = &self.0;
        let matches: Megaflow = match m.parse() {
            Ok(v) => v,
            Err(e) => return Response::err(format!("bad match: {}", echo(&e))),
        };
        let id = d
            .switch
            .engine()
            .read()
            .rules()
            .entries()
            .iter()
            .find(|e| e.rule.priority == priority && e.rule.matches == matches)
            .map(|e| e.id);
        let Some(id) = id else {
            return Response::err(format!(
                "no rule with priority {priority} and match {matches}"
            ));
        };
        let res = d.switch.engine().configure(|sp| match sp.delete_rule(id) {
            Ok(change) => (Ok(()), vec![change]),
            Err(e) => (Err(e), vec![]),
        });
        match res {
            Ok(()) => done(format!("rule {} deleted", id.0), Some(id.0)),
            Err(e) => Response::err(e.to_string()),
        }
    }

    /// The answer states what was applied and what was not; anything asked for and not
    /// applied makes it an error (flowctl exits non-zero), the applied part included.
    fn reload(&self, allow_empty: bool) -> Response {
        match self.0.reload(allow_empty) {
            Ok(lines) => {
                let (refused, mut applied): (Vec<String>, Vec<String>) = lines
                    .into_iter()
                    .partition(|l| l.starts_with("not applied"));
                // A listener that could not move was not changed.
                for section in ["[control]", "[metrics]"] {
                    if refused.iter().any(|l| l.contains(section)) {
                        applied.retain(|l| *l != format!("{section} changed"));
                    }
                }
                let applied = if applied.is_empty() {
                    "no change".to_string()
                } else {
                    applied.join("; ")
                };
                if refused.is_empty() {
                    done(applied, None)
                } else {
                    Response::err(format!("applied: {applied}; {}", refused.join("; ")))
                }
            }
            Err(e) => Response::err(format!("reload refused, nothing applied: {e}")),
        }
    }
}

/// A parse error of a client's text, quoting at most [`MAX_ECHO_BYTES`] of it.
fn echo(e: &datapath::flow::ParseError) -> String {
    elide(&e.to_string(), MAX_ECHO_BYTES).into_owned()
}

fn done(message: String, count: Option<u64>) -> Response {
    Response::Ok(ResponseBody::Done(DoneBody { message, count }))
}

impl From<ResponseBody> for Response {
    fn from(b: ResponseBody) -> Self {
        Response::Ok(b)
    }
}

impl ControlHandler for Handler {
    fn handle(&self, req: Request) -> Response {
        match req {
            Request::DumpFlows {
                filter,
                select,
                summary,
            } => self.dump_flows(filter, &select, summary),
            Request::Show => ResponseBody::Ports(self.0.port_rows()).into(),
            Request::Tunnels => self.tunnels().into(),
            Request::Trace { flow } => self.trace(&flow),
            Request::DelFlows => {
                let n = self.0.delete_flows();
                done(format!("{n} flows deleted"), Some(n as u64))
            }
            Request::Stats => {
                ResponseBody::Stats(Box::new(super::stats::Snapshot::take(&self.0).body())).into()
            }
            Request::RulesAdd {
                priority,
                r#match,
                actions,
            } => self.rules_add(priority, &r#match, &actions),
            Request::RulesDel { priority, r#match } => self.rules_del(priority, &r#match),
            Request::RulesList => self.rules_list().into(),
            Request::Reload { allow_empty } => self.reload(allow_empty),
            Request::Fdb { network } => super::evpn::fdb(&self.0, network.as_deref()),
        }
    }
}

impl Daemon {
    /// Re-reads the configuration file and applies what changed: representors (plugged,
    /// unplugged, changed), networks, static MACs, configured rules (runtime rules
    /// stay), the control socket and the metrics listener. Flows the changes do not
    /// affect stay installed (the revalidator re-translates only affected flows).
    /// Uplink, tunnel device, `[datapath]`, `[offload]` and `[discovery]` changes need a
    /// restart and are reported as such.
    ///
    /// A file that would unplug every representor (an empty or comment-only file, a
    /// truncated one) is refused unless `allow_empty`: it would stop every VF's traffic.
    /// The lines returned say what was applied; those starting with "not applied" what
    /// was asked for and not applied (the answer is then an error).
    pub fn reload(&self, allow_empty: bool) -> Result<Vec<String>, String> {
        let Some(path) = &self.config_path else {
            return Err("no configuration file to reload".into());
        };
        let mut new = Config::load(path).map_err(|e| e.to_string())?;
        if new.discovery.is_some() {
            let links = offload::discover::links().map_err(|e| e.to_string())?;
            super::build::discover_ports(&mut new, &links).map_err(|e| e.to_string())?;
        }
        super::build::check_members(&new).map_err(|e| e.to_string())?;
        let mut cur = self
            .config
            .lock()
            .map_err(|_| "configuration lock poisoned")?;
        let representors = |c: &Config| {
            c.ports
                .iter()
                .filter(|p| p.role == crate::config::PortRole::Representor)
                .count()
        };
        if !allow_empty && representors(&new) == 0 && representors(&cur) > 0 {
            return Err(format!(
                "{} has no representor: it would unplug all {} and stop their traffic                  (to do that, `flowctl reload --allow-empty`)",
                path.display(),
                representors(&cur)
            ));
        }
        new.inherit_port_ids(&cur);
        let diff = Config::diff(&cur, &new);
        if diff.is_empty() {
            // Published all the same: a listener whose move failed retries it.
            return Ok(self.publish_config(&cur));
        }
        let mut lines = diff.summary();
        // Configured MTUs go on the netdevs; the ports' live facts follow from the
        // kernel's link events.
        let links = super::dump_links().map_err(|e| e.to_string())?;
        lines.extend(super::apply_mtus(&new.ports, &links)?);
        let ports = self.apply_ports(&cur, &new)?;
        lines.extend(ports.lines);
        let mut restart = Vec::new();
        if !ports.restart.is_empty() {
            restart.push(format!("port ({})", ports.restart.join(", ")));
        }
        let (d0, d1) = (&cur.datapath, &new.datapath);
        if (
            d0.upcall_queue,
            d0.handler_threads,
            d0.batch,
            d0.mac_table_size,
        ) != (
            d1.upcall_queue,
            d1.handler_threads,
            d1.batch,
            d1.mac_table_size,
        ) {
            restart
                .push("[datapath] upcall_queue, handler_threads, batch and mac_table_size".into());
        }
        if (d0.flow_limit, d0.max_idle_ms) != (d1.flow_limit, d1.max_idle_ms) {
            self.switch
                .engine()
                .set_limits(Duration::from_millis(d1.max_idle_ms), d1.flow_limit);
            lines.push(format!(
                "flow limit {}, max idle {} ms",
                d1.flow_limit, d1.max_idle_ms
            ));
        }
        let (o0, o1) = (&cur.offload, &new.offload);
        if (o0.policy, o0.backend, o0.queue, o0.sim_capacity)
            != (o1.policy, o1.backend, o1.queue, o1.sim_capacity)
        {
            restart.push("[offload] policy, backend, queue and sim_capacity".into());
        }
        if (o0.coalesce_ms, o0.settle_ms) != (o1.coalesce_ms, o1.settle_ms)
            && let Some(w) = &self.watcher
        {
            let (coalesce, settle) = fib_timing(&new.offload);
            w.set_timing(coalesce, settle).map_err(|e| e.to_string())?;
            lines.push(format!(
                "routing changes: settle {} ms, coalesce at most {} ms",
                settle.as_millis(),
                coalesce.as_millis()
            ));
        }
        if diff.discovery_changed {
            restart.push("[discovery]".into());
        }
        if !restart.is_empty() {
            lines.push(format!(
                "not applied: {} changes need a restart (systemctl restart flowd; add \
                 --keep-offloads to keep traffic)",
                restart.join(", ")
            ));
        }
        // Networks see the ports in force (a network may name a port whose change was
        // not applied: it is left out of the network until then).
        let target = Config {
            ports: ports.ports.clone(),
            ..new.clone()
        };
        // Decapsulating flows of a network look up the way back with its mark.
        self.hooks
            .marks
            .store(std::sync::Arc::new(super::network_marks(&target)));
        let refused = match self.apply_networks_and_rules(&cur, &target) {
            Ok(r) => r,
            Err(e) => {
                cur.ports = ports.ports;
                return Err(e.to_string());
            }
        };
        for (name, why) in &refused.networks {
            lines.push(format!("not applied: network `{name}`: {why}"));
        }
        for ((priority, m), why) in &refused.rules {
            lines.push(format!(
                "not applied: rule priority {priority} match {m}: {why}"
            ));
        }
        // What is in force: a refused network stays as it was (or absent), a refused
        // rule absent.
        let networks: Vec<_> = new
            .networks
            .iter()
            .filter_map(|n| {
                if refused.networks.iter().any(|(name, _)| *name == n.name) {
                    cur.networks.iter().find(|c| c.name == n.name).cloned()
                } else {
                    Some(n.clone())
                }
            })
            .collect();
        let rules: Vec<_> = new
            .rules
            .iter()
            .filter(|r| !refused.rules.iter().any(|(k, _)| *k == r.key()))
            .cloned()
            .collect();
        if let Err(e) = self.evpn.reconfigure(&target, self.switch.engine()) {
            lines.push(format!("not applied: {e}"));
        }
        // Keep the sections that were not applied as they are in force. The control
        // socket and the metrics listener follow the published configuration.
        let datapath = crate::config::DatapathConfig {
            flow_limit: new.datapath.flow_limit,
            max_idle_ms: new.datapath.max_idle_ms,
            ..cur.datapath
        };
        let offload = crate::config::OffloadConfig {
            coalesce_ms: new.offload.coalesce_ms,
            settle_ms: new.offload.settle_ms,
            ..cur.offload
        };
        let applied = Config {
            ports: ports.ports,
            datapath,
            offload,
            networks,
            rules,
            control: new.control.clone(),
            metrics: new.metrics,
            ..cur.clone()
        };
        lines.extend(self.publish_config(&applied));
        *cur = applied;
        Ok(lines)
    }

    /// Applies the networks and rules of `new`; the ones the slow path refused, as
    /// (name or rule, why).
    fn apply_networks_and_rules(
        &self,
        cur: &Config,
        new: &Config,
    ) -> Result<Refused, super::build::BuildError> {
        use super::build::{network, network_id, rule};
        let engine = self.switch.engine();
        // Build everything first: a bad item changes nothing.
        let nets: Vec<_> = new
            .networks
            .iter()
            .map(|n| (network_id(n), network(new, n), n))
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
        let refused = engine.configure(|sp| {
            let mut refused = Refused::default();
            let mut changes = Vec::new();
            for id in gone_nets {
                if let Ok(c) = sp.remove_network(id) {
                    changes.push(c);
                }
            }
            for (id, net, cfgnet) in nets {
                let existing = sp.networks().get(id).cloned();
                let res = match existing {
                    Some(old) if old == net => Ok(None),
                    Some(_) => sp.replace_network(id, net).map(Some),
                    None => sp.add_network(id, net).map(Some),
                };
                match res {
                    Ok(Some(c)) => changes.push(c),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(network = %cfgnet.name, error = %e, "reload: network refused");
                        refused.networks.push((cfgnet.name.clone(), e.to_string()));
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
                if let Ok(c) = sp.delete_rule(id) {
                    changes.push(c);
                }
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
        });
        Ok(refused)
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

/// Wraps a daemon for the control server.
pub fn handler(d: Arc<Daemon>) -> Arc<dyn ControlHandler> {
    Arc::new(Handler(d))
}
