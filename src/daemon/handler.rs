//! The control socket's requests, answered from the running daemon.

use super::{Daemon, lock};
use crate::config::{RuleActionsConfig, RuleConfig};
use crate::control::proto::{
    DoneBody, FlowFilter, FlowRow, FlowSelect, FlowSummary, MAX_ECHO_BYTES, Placement, Request,
    Response, ResponseBody, RuleRow, TraceBody, TunnelRow, elide,
};
use crate::control::server::ControlHandler;
use crate::control::stream::{Closed, DumpEnd, DumpLine, DumpStart, LineSink, STREAM_VERSION};
use datapath::Megaflow;
use datapath::PortId;
use datapath::cache::FlowEntry;
use offload::backend::HwState;
use std::net::IpAddr;
use std::sync::Arc;

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

/// Flows a dump takes from the table per lock: the table's lock (which the slow path's
/// writers take) is held for one chunk, never for the whole walk.
const WALK_CHUNK: usize = 1024;

/// What a dump's walk found.
#[derive(Debug, Clone, Copy)]
struct Walked {
    /// Flows selected and visited.
    flows: u64,
    /// Whether more flows matched than `limit`.
    limited: bool,
}

/// A summary's counts, one selected flow at a time.
fn count(sum: &mut FlowSummary, ports: &offload::PortTable, e: &FlowEntry, p: &Placement) {
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

impl Handler {
    /// Walks the flow table a chunk at a time ([`WALK_CHUNK`]), giving `visit` each flow
    /// the filter and the selection pass, with its placement, until `limit` or until
    /// `visit` breaks (its value is returned as the error). The conditions on keys and
    /// actions are checked first, the placement only for the flows they pass. A flow
    /// installed for the whole walk is visited once; one added or removed meanwhile
    /// may or may not be.
    fn walk<B>(
        &self,
        filter: FlowFilter,
        sel: &Selector,
        mut visit: impl FnMut(&FlowEntry, Placement) -> std::ops::ControlFlow<B>,
    ) -> Result<Walked, B> {
        let d = &self.0;
        let table = d.switch.engine().table();
        let mut chunk = Vec::with_capacity(WALK_CHUNK);
        let (mut from, mut flows) = (Some(0), 0u64);
        while let Some(at) = from {
            chunk.clear();
            from = table.snapshot_chunk(at, WALK_CHUNK, &mut chunk);
            for e in &chunk {
                if !sel.matches(e) {
                    continue;
                }
                let p = placement(d, e);
                if !filter.accepts(&p) || !sel.matches_placement(&p) {
                    continue;
                }
                if flows >= sel.limit {
                    return Ok(Walked {
                        flows,
                        limited: true,
                    });
                }
                flows += 1;
                if let std::ops::ControlFlow::Break(b) = visit(e, p) {
                    return Err(b);
                }
            }
        }
        Ok(Walked {
            flows,
            limited: false,
        })
    }

    /// `dump-flows` in one answer: the flows the filter and the selection pass, as rows
    /// or counted.
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
        let walked = self.walk(filter, &sel, |e, p| {
            if summary {
                count(&mut sum, &ports, e, &p);
            } else {
                rows.push(flow_row_placed(d, e, p, now));
            }
            std::ops::ControlFlow::<std::convert::Infallible>::Continue(())
        });
        let Ok(_) = walked;
        if summary {
            ResponseBody::FlowSummary(sum).into()
        } else {
            ResponseBody::Flows(rows).into()
        }
    }

    /// `dump-flows`, streamed ([`crate::control::stream`]): the header, a line per row
    /// as the walk finds it, the trailer. Stops when the client is gone.
    fn dump_flows_streamed(
        &self,
        filter: FlowFilter,
        select: &FlowSelect,
        out: &mut LineSink,
    ) -> Result<(), Closed> {
        let d = &self.0;
        let sel = match Selector::resolve(d, select) {
            Ok(s) => s,
            Err(e) => return out.line(&Response::err(e)),
        };
        let start = DumpStart {
            version: STREAM_VERSION,
            flows_in_table: d.switch.engine().table().len() as u64,
        };
        out.line(&Response::from(ResponseBody::FlowStream(start)))?;
        let now = d.switch.clock().now_ms();
        let walked = self.walk(filter, &sel, |e, p| {
            match out.line(&DumpLine::Flow(flow_row_placed(d, e, p, now))) {
                Ok(()) => std::ops::ControlFlow::Continue(()),
                Err(closed) => std::ops::ControlFlow::Break(closed),
            }
        })?;
        out.line(&DumpLine::End(DumpEnd {
            flows: walked.flows,
            limited: walked.limited,
        }))
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
            Ok(report) => {
                let applied = report.applied_lines();
                let applied = if applied.is_empty() {
                    "no change".to_string()
                } else {
                    applied.join("; ")
                };
                if report.not_applied.is_empty() {
                    return done(applied, None);
                }
                let refused: Vec<String> =
                    report.not_applied.iter().map(ToString::to_string).collect();
                Response::err(format!("applied: {applied}; {}", refused.join("; ")))
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
                stream: _,
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

    fn stream(&self, req: Request, out: &mut LineSink) -> Result<(), Closed> {
        match req {
            Request::DumpFlows {
                filter,
                select,
                summary: false,
                stream: 1..,
            } => self.dump_flows_streamed(filter, &select, out),
            other => out.line(&self.handle(other)),
        }
    }
}

/// Wraps a daemon for the control server.
pub fn handler(d: Arc<Daemon>) -> Arc<dyn ControlHandler> {
    Arc::new(Handler(d))
}
