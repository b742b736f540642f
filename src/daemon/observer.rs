//! [`FlowHooks`]: what the daemon does when the slow path installs, changes or deletes a
//! flow: register its tunnel endpoints with fibwatch, keep the route table current, offer
//! the flow to the offload worker, and move `used` forward from tc's counters.
//!
//! A flow may reach several remote endpoints (head-end replication of a flood), but
//! fibwatch tracks one endpoint per registration, so each (flow, endpoint) pair is its
//! own *tunnel registration* with an id of its own; decisions about a registration are
//! mapped back to its flow.

use super::routes::RouteTable;
use crate::switch::Clock;
use arc_swap::ArcSwap;
use datapath::FlowId;
use datapath::actions::Action;
use datapath::cache::FlowEntry;
use datapath::flow::tun_flags;
use datapath::slowpath::{DeleteReason, FlowObserver};
use fibwatch::{DecisionKind, FlowInfo, Role, SwitchId, Watcher};
use offload::worker::OffloadWorker;
use offload::{FlowRequest, PortTable};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One tunnel endpoint of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelUse {
    /// The remote endpoint.
    pub endpoint: IpAddr,
    /// Encap (toward it) or decap (from it).
    pub role: Role,
    /// The VNI.
    pub vni: u32,
    /// A fixed outer source address, if the action sets one.
    pub local: Option<IpAddr>,
}

/// The tunnel endpoints a flow uses: the destinations of its `set(tunnel)` actions, or
/// the outer source it matches when it comes from the tunnel port.
pub fn tunnel_uses(entry: &FlowEntry, tunnel_port: Option<datapath::PortId>) -> Vec<TunnelUse> {
    let mut uses: Vec<TunnelUse> = entry
        .actions()
        .as_slice()
        .iter()
        .filter_map(|a| match a {
            Action::SetTunnel(t) => Some(TunnelUse {
                endpoint: t.dst,
                role: Role::Encap,
                vni: t.vni,
                local: t.src,
            }),
            _ => None,
        })
        .collect();
    let key = entry.key();
    let from_tunnel =
        tunnel_port.is_some_and(|p| key.in_port == p.0) && key.tun_flags & tun_flags::PRESENT != 0;
    let src_matched = entry.mask().tun_src != [0; 16];
    if from_tunnel
        && src_matched
        && let Some(src) = key.tunnel_src()
    {
        uses.push(TunnelUse {
            endpoint: src,
            role: Role::Decap,
            vni: key.tun_vni,
            local: key.tunnel_dst().filter(|_| entry.mask().tun_dst != [0; 16]),
        });
    }
    uses.dedup();
    uses
}

/// Counters the daemon reports.
#[derive(Debug, Default)]
pub struct HookCounters {
    /// Flows offered to the offload worker.
    pub offered: AtomicU64,
    /// Tunnel registrations made.
    pub registrations: AtomicU64,
    /// Registration failures (fibwatch stopped).
    pub registration_errors: AtomicU64,
}

/// The daemon's flow observer.
pub struct FlowHooks {
    /// fibwatch, when running.
    pub watcher: Option<Arc<Watcher>>,
    /// The routes the datapath and offload validation use.
    pub routes: Arc<RouteTable>,
    /// The offload worker, unless offload is off.
    pub offload: Option<Arc<OffloadWorker>>,
    /// The ports as offload knows them (MTU, switch id per port); replaced when ports
    /// are plugged or unplugged.
    pub ports: ArcSwap<PortTable>,
    /// The tunnel port.
    pub tunnel_port: Option<datapath::PortId>,
    /// The switch's clock (tc's counters turn into the cache's `used` on it).
    pub clock: Clock,
    /// Each offloaded flow's packet count at the last refresh.
    last_packets: Mutex<HashMap<FlowId, u64>>,
    /// Registration id -> flow.
    regs: Mutex<Registrations>,
    /// Counters.
    pub counters: HookCounters,
}

#[derive(Default)]
struct Registrations {
    next: u64,
    by_reg: HashMap<FlowId, (FlowId, IpAddr, Role)>,
    by_flow: HashMap<FlowId, Vec<FlowId>>,
}

/// The representor a flow serves: its ingress port for encap flows, its first output
/// port for decap flows (whose ingress is the tunnel device).
fn representor_of(entry: &FlowEntry, role: Role) -> datapath::PortId {
    match role {
        Role::Decap => entry
            .actions()
            .as_slice()
            .iter()
            .find_map(|a| match a {
                Action::Output(p) => Some(*p),
                _ => None,
            })
            .unwrap_or(datapath::PortId(entry.key().in_port)),
        _ => datapath::PortId(entry.key().in_port),
    }
}

impl FlowHooks {
    /// Hooks over these parts.
    pub fn new(
        watcher: Option<Arc<Watcher>>,
        routes: Arc<RouteTable>,
        offload: Option<Arc<OffloadWorker>>,
        ports: PortTable,
        tunnel_port: Option<datapath::PortId>,
        clock: Clock,
    ) -> Self {
        Self {
            watcher,
            routes,
            offload,
            ports: ArcSwap::from_pointee(ports),
            tunnel_port,
            clock,
            last_packets: Mutex::new(HashMap::new()),
            regs: Mutex::new(Registrations::default()),
            counters: HookCounters::default(),
        }
    }

    /// The flow, endpoint and role a tunnel registration belongs to.
    pub fn flow_of(&self, reg: FlowId) -> Option<(FlowId, IpAddr, Role)> {
        self.regs.lock().ok()?.by_reg.get(&reg).copied()
    }

    /// Registrations per endpoint: (flows, registration ids).
    pub fn flows_by_endpoint(&self) -> HashMap<IpAddr, Vec<FlowId>> {
        let mut out: HashMap<IpAddr, Vec<FlowId>> = HashMap::new();
        if let Ok(r) = self.regs.lock() {
            for (flow, ep, _) in r.by_reg.values() {
                out.entry(*ep).or_default().push(*flow);
            }
        }
        out
    }

    fn register(&self, entry: &FlowEntry) {
        let Some(w) = &self.watcher else { return };
        for u in tunnel_uses(entry, self.tunnel_port) {
            let ports = self.ports.load();
            let rep = ports.get(representor_of(entry, u.role));
            let reg = {
                let Ok(mut r) = self.regs.lock() else { return };
                r.next += 1;
                let reg = FlowId((1 << 63) | r.next);
                r.by_reg.insert(reg, (entry.id(), u.endpoint, u.role));
                r.by_flow.entry(entry.id()).or_default().push(reg);
                reg
            };
            let info = FlowInfo {
                id: reg,
                endpoint: u.endpoint,
                role: u.role,
                vni: u.vni,
                local: u.local,
                mark: 0,
                rep_mtu: rep.map_or(1500, |p| p.mtu),
                switch_id: rep.and_then(|p| p.switch_id.clone()).map(SwitchId),
            };
            self.counters.registrations.fetch_add(1, Ordering::Relaxed);
            match w.register_sync(info) {
                Ok(d) if u.role == Role::Encap => self.apply_route(d.endpoint, &d.kind),
                Ok(_) => {}
                Err(e) => {
                    self.counters
                        .registration_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(flow = %entry.id(), error = %e, "fibwatch registration failed");
                }
            }
        }
    }

    /// Records what an encap registration's decision says about its endpoint's path
    /// (decap decisions say nothing about the way out).
    pub fn apply_route(&self, endpoint: IpAddr, kind: &DecisionKind) {
        match kind {
            DecisionKind::Offload { to }
            | DecisionKind::Move { to, .. }
            | DecisionKind::BackToOffload { to } => self.routes.update(endpoint, Some(*to), None),
            DecisionKind::ToSoftware {
                reason, current, ..
            } => self
                .routes
                .update(endpoint, *current, Some(reason.to_string())),
            _ => {}
        }
    }

    fn unregister(&self, flow: FlowId) {
        let regs = match self.regs.lock() {
            Ok(mut r) => {
                let regs = r.by_flow.remove(&flow).unwrap_or_default();
                for reg in &regs {
                    r.by_reg.remove(reg);
                }
                regs
            }
            Err(_) => return,
        };
        if let Some(w) = &self.watcher {
            for reg in regs {
                let _ = w.unregister(reg);
            }
        }
    }

    /// Offers a flow (again) to the offload worker.
    pub fn offer(&self, entry: &FlowEntry) {
        if let Some(o) = &self.offload {
            self.counters.offered.fetch_add(1, Ordering::Relaxed);
            o.offer(put_request(entry));
        }
    }

    /// Announces a flow the slow path installed without an upcall (start-up adoption):
    /// registered like any new flow, then offered, waiting for room in the queue.
    pub fn announce(&self, entry: &FlowEntry) {
        self.register(entry);
        if let Some(o) = &self.offload {
            self.counters.offered.fetch_add(1, Ordering::Relaxed);
            o.offer_wait(put_request(entry));
        }
    }

    fn withdraw(&self, flow: FlowId) {
        if let Some(o) = &self.offload {
            o.offer(FlowRequest::Remove { flow });
        }
    }
}

/// The offload request for a flow as it is now.
fn put_request(entry: &FlowEntry) -> FlowRequest {
    FlowRequest::Put {
        flow: entry.id(),
        megaflow: entry.megaflow(),
        actions: entry.actions().clone(),
    }
}

impl FlowObserver for FlowHooks {
    fn installed(&self, flow: &Arc<FlowEntry>) {
        self.register(flow);
        self.offer(flow);
    }

    fn modified(&self, old: &Arc<FlowEntry>, new: &Arc<FlowEntry>) {
        self.unregister(old.id());
        self.withdraw(old.id());
        self.register(new);
        self.offer(new);
    }

    fn deleted(&self, flow: &Arc<FlowEntry>, _reason: DeleteReason) {
        self.unregister(flow.id());
        self.withdraw(flow.id());
    }

    fn refresh_used(&self, flows: &[Arc<FlowEntry>]) {
        let Some(o) = &self.offload else { return };
        let now = self.clock.now_ms();
        let Ok(mut last) = self.last_packets.lock() else {
            return;
        };
        for f in flows {
            let Some(st) = o.stats(f.id()) else { continue };
            // Packets counted since the last refresh: used now (within a stats period),
            // whatever the unit of the kernel's own "last use".
            let before = last.insert(f.id(), st.packets).unwrap_or(0);
            if st.packets > before {
                f.touch(now);
            } else if let Some(ago) = st.last_used_ms_ago {
                f.touch(now.saturating_sub(ago));
            }
        }
        // Forget flows that are gone.
        if last.len() > flows.len() * 2 + 1024 {
            let live: std::collections::HashSet<FlowId> = flows.iter().map(|f| f.id()).collect();
            last.retain(|k, _| live.contains(k));
        }
    }
}
