//! The offload state machine: for each flow, translate, validate, install through a
//! backend, and keep [`Placement`] honest. Synchronous and deterministic; the
//! [`worker`](crate::worker) runs it on its own thread behind a bounded queue.
//!
//! Invariant: a flow is [`Placement::Offloaded`] exactly when the backend holds a rule
//! for it (checked by the tests after random operations and faults).

use crate::backend::{BackendError, HwState, KernelErrno, OffloadBackend, RuleHandle, RuleStats};
use crate::error::OffloadError;
use crate::placement::{Placement, SoftwareReason};
use crate::ports::PortTable;
use crate::rule::{FlowerMatch, FlowerRule};
use crate::translate::translate;
use crate::validate::{ValidateCtx, validate};
use datapath::tunnel::TunnelResolver;
use datapath::{Actions, FlowId, IfIndex, Megaflow};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to do with a flow.
// Requests travel by value through a bounded queue; boxing the megaflow would cost an
// allocation per request for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlowRequest {
    /// The flow was installed (or its actions changed): offload it.
    Put {
        /// The flow.
        flow: FlowId,
        /// Its megaflow.
        megaflow: Megaflow,
        /// Its actions.
        actions: Actions,
    },
    /// The flow is gone: remove its rule.
    Remove {
        /// The flow.
        flow: FlowId,
    },
}

impl FlowRequest {
    /// The flow the request is about.
    pub fn flow(&self) -> FlowId {
        match self {
            FlowRequest::Put { flow, .. } | FlowRequest::Remove { flow } => *flow,
        }
    }
}

#[derive(Debug, Clone)]
struct FlowEntry {
    placement: Placement,
    installed: Option<(RuleHandle, FlowerRule)>,
    stats: RuleStats,
}

/// A rule a previous run left installed, waiting for a flow to adopt it.
#[derive(Debug, Clone)]
struct Kept {
    handle: RuleHandle,
    rule: FlowerRule,
    hw: HwState,
    stats: RuleStats,
}

/// What an adoption round did (see [`Offloader::load_kept`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdoptionReport {
    /// Kept rules found at start.
    pub kept: usize,
    /// Taken over by a flow unchanged (no netlink request).
    pub adopted: usize,
    /// Taken over by a flow whose actions changed (replaced in place).
    pub replaced: usize,
    /// Kept rules no flow claimed, and other orphans: removed.
    pub removed: usize,
}

/// Drives a backend for a set of flows.
pub struct Offloader {
    backend: Box<dyn OffloadBackend>,
    ports: PortTable,
    resolver: Arc<dyn TunnelResolver>,
    deadline: Duration,
    flows: HashMap<FlowId, FlowEntry>,
    /// Rules a previous run left, by ingress and match, until the adoption ends.
    kept: HashMap<(IfIndex, FlowerMatch), Kept>,
    adoption: AdoptionReport,
}

/// The placement of a flow whose rule `backend` holds on `ingress`.
fn offloaded(
    backend: &dyn OffloadBackend,
    ports: &PortTable,
    ingress: IfIndex,
    in_hw: HwState,
) -> Placement {
    Placement::Offloaded {
        backend: backend.name(),
        device: ports.name_of(ingress),
        in_hw,
    }
}

fn to_unsupported(e: OffloadError) -> SoftwareReason {
    match e {
        OffloadError::Unsupported(u) => SoftwareReason::Unsupported(u),
        OffloadError::UnknownPort(p) => SoftwareReason::UnknownPort(p),
    }
}

impl Offloader {
    /// An offloader over a backend. Answers slower than `deadline` count as failures
    /// (the rule is withdrawn and the flow stays in software).
    pub fn new(
        backend: Box<dyn OffloadBackend>,
        ports: PortTable,
        resolver: Arc<dyn TunnelResolver>,
        deadline: Duration,
    ) -> Self {
        Self {
            backend,
            ports,
            resolver,
            deadline,
            flows: HashMap::new(),
            kept: HashMap::new(),
            adoption: AdoptionReport::default(),
        }
    }

    /// Starts an adoption round: dumps the backend and holds every rule of flowd's
    /// (its owner tag) that decodes and that the backend finds adoptable (tc: created
    /// under the policy in force), so that a flow offered with the same ingress and
    /// match takes it over instead of installing a new one. Returns the held rules (to
    /// derive their flows, see [`crate::adopt`]). Rules flowd owns but cannot decode
    /// or adopt, and duplicates, stay orphans. [`Self::end_adoption`] sweeps what is left.
    pub fn load_kept(&mut self) -> Result<Vec<FlowerRule>, BackendError> {
        let mut out = Vec::new();
        for d in self.backend.dump()? {
            let (Some(_), Some(rule)) = (d.owner, &d.rule) else {
                continue;
            };
            let key = (rule.ingress, rule.matches);
            if self.kept.contains_key(&key) || !self.backend.adoptable(&d) {
                continue;
            }
            let rule = rule.clone();
            out.push(rule.clone());
            self.kept.insert(
                key,
                Kept {
                    handle: d.handle,
                    rule,
                    hw: d.hw,
                    stats: d.stats,
                },
            );
        }
        self.adoption.kept = out.len();
        if !out.is_empty() {
            tracing::info!(
                kept = out.len(),
                "offload: rules of a previous run held for adoption"
            );
        }
        Ok(out)
    }

    /// Ends the adoption round: kept rules no flow took over are removed with every
    /// other orphan. Returns what the round did.
    pub fn end_adoption(&mut self) -> AdoptionReport {
        self.kept.clear();
        self.adoption.removed = match self.sweep_orphans() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "offload: sweep after adoption failed");
                0
            }
        };
        let r = self.adoption;
        tracing::info!(
            kept = r.kept,
            adopted = r.adopted,
            replaced = r.replaced,
            removed = r.removed,
            "offload: adoption finished"
        );
        r
    }

    /// What the adoption round did so far.
    pub fn adoption(&self) -> AdoptionReport {
        self.adoption
    }

    /// The backend.
    pub fn backend(&mut self) -> &mut dyn OffloadBackend {
        self.backend.as_mut()
    }

    /// The port table (for updates).
    pub fn ports_mut(&mut self) -> &mut PortTable {
        &mut self.ports
    }

    /// Ports plugged and unplugged while running: each plugged port is prepared in the
    /// backend (tc: its ingress qdisc) and enters the port table; a port the backend
    /// refuses stays out of it (its flows cannot be translated: they stay in software).
    /// Returns one message per refusal.
    pub fn change_ports(&mut self, change: crate::worker::PortChange) -> Vec<String> {
        for id in change.unplugged {
            self.ports.remove(id);
        }
        let mut refused = Vec::new();
        for p in change.plugged {
            match self.backend.add_port(&p) {
                Ok(()) => self.ports.insert(p),
                Err(e) => {
                    tracing::warn!(port = %p.name, error = %e, "offload: port refused");
                    self.ports.remove(p.id);
                    refused.push(format!("port `{}`: {e}", p.name));
                }
            }
        }
        refused
    }

    /// A flow's placement.
    pub fn placement(&self, flow: FlowId) -> Option<&Placement> {
        self.flows.get(&flow).map(|e| &e.placement)
    }

    /// A flow's last pulled counters.
    pub fn stats(&self, flow: FlowId) -> Option<RuleStats> {
        self.flows.get(&flow).map(|e| e.stats)
    }

    /// Every known flow's placement.
    pub fn placements(&self) -> impl Iterator<Item = (FlowId, &Placement)> {
        self.flows.iter().map(|(f, e)| (*f, &e.placement))
    }

    /// The handles of offloaded flows.
    pub fn offloaded(&self) -> impl Iterator<Item = (FlowId, RuleHandle)> + '_ {
        self.flows
            .iter()
            .filter_map(|(f, e)| e.installed.as_ref().map(|(h, _)| (*f, *h)))
    }

    /// Translates and validates a flow: the rule to install, or why not.
    pub fn prepare(
        &self,
        megaflow: &Megaflow,
        actions: &Actions,
    ) -> Result<FlowerRule, SoftwareReason> {
        let mut rule = translate(megaflow, actions, &self.ports).map_err(to_unsupported)?;
        let ctx = ValidateCtx {
            ports: &self.ports,
            resolver: self.resolver.as_ref(),
        };
        validate(&mut rule, &ctx)?;
        Ok(rule)
    }

    /// Processes requests in order, batching backend calls; returns the new
    /// placements of the flows touched.
    pub fn process(&mut self, reqs: Vec<FlowRequest>) -> Vec<(FlowId, Placement)> {
        let mut touched = Vec::with_capacity(reqs.len());
        let mut chunk: Vec<FlowRequest> = Vec::new();
        let mut seen = HashSet::new();
        for r in reqs {
            if !seen.insert(r.flow()) {
                self.process_chunk(std::mem::take(&mut chunk), &mut touched);
                seen.clear();
                seen.insert(r.flow());
            }
            chunk.push(r);
        }
        self.process_chunk(chunk, &mut touched);
        touched
    }

    /// One chunk: each flow at most once, so removes, replaces and installs can be
    /// batched independently.
    fn process_chunk(&mut self, chunk: Vec<FlowRequest>, touched: &mut Vec<(FlowId, Placement)>) {
        let mut removes: Vec<(FlowId, RuleHandle, bool)> = Vec::new(); // (flow, handle, forget flow)
        let mut replaces: Vec<(FlowId, RuleHandle, FlowerRule)> = Vec::new();
        let mut installs: Vec<(FlowId, FlowerRule)> = Vec::new();
        for r in chunk {
            match r {
                FlowRequest::Remove { flow } => {
                    if let Some(e) = self.flows.remove(&flow)
                        && let Some((h, _)) = e.installed
                    {
                        removes.push((flow, h, true));
                    }
                }
                FlowRequest::Put {
                    flow,
                    megaflow,
                    actions,
                } => {
                    let prepared = self.prepare(&megaflow, &actions);
                    let entry = self.flows.entry(flow).or_insert_with(|| FlowEntry {
                        placement: Placement::software(SoftwareReason::Pending),
                        installed: None,
                        stats: RuleStats::default(),
                    });
                    if entry.installed.is_none()
                        && !self.kept.is_empty()
                        && let Ok(rule) = &prepared
                        && let Some(k) = self.kept.remove(&(rule.ingress, rule.matches))
                    {
                        // A previous run's rule for this very match: take it over.
                        if k.rule == *rule {
                            self.adoption.adopted += 1;
                            entry.placement =
                                offloaded(self.backend.as_ref(), &self.ports, rule.ingress, k.hw);
                            touched.push((flow, entry.placement.clone()));
                        } else {
                            self.adoption.replaced += 1;
                        }
                        entry.installed = Some((k.handle, k.rule));
                        entry.stats = k.stats;
                    }
                    match (prepared, entry.installed.as_ref()) {
                        (Err(reason), installed) => {
                            if let Some((h, _)) = installed {
                                removes.push((flow, *h, false));
                            }
                            entry.installed = None;
                            entry.placement = Placement::software(reason);
                            touched.push((flow, entry.placement.clone()));
                        }
                        (Ok(rule), Some((_, old))) if *old == rule => {}
                        (Ok(rule), Some((h, _))) => replaces.push((flow, *h, rule)),
                        (Ok(rule), None) => installs.push((flow, rule)),
                    }
                }
            }
        }
        self.run_removes(&removes);
        self.run_replaces(replaces, touched);
        self.run_installs(installs, touched);
    }

    fn run_removes(&mut self, removes: &[(FlowId, RuleHandle, bool)]) {
        if removes.is_empty() {
            return;
        }
        let handles: Vec<RuleHandle> = removes.iter().map(|r| r.1).collect();
        for (r, res) in removes.iter().zip(self.backend.remove(&handles)) {
            match res {
                Ok(())
                | Err(BackendError::Kernel {
                    errno: KernelErrno::NotFound,
                    ..
                }) => {}
                Err(e) => {
                    tracing::warn!(flow = %r.0, error = %e, "offload: remove failed; the sweep retries")
                }
            }
        }
    }

    fn late(&self, started: Instant) -> Option<SoftwareReason> {
        let elapsed = started.elapsed();
        (elapsed > self.deadline).then_some(SoftwareReason::Timeout {
            elapsed_ms: elapsed.as_millis() as u64,
        })
    }

    fn run_installs(
        &mut self,
        installs: Vec<(FlowId, FlowerRule)>,
        touched: &mut Vec<(FlowId, Placement)>,
    ) {
        if installs.is_empty() {
            return;
        }
        let batch: Vec<(FlowId, &FlowerRule)> = installs.iter().map(|(f, r)| (*f, r)).collect();
        let started = Instant::now();
        let results = self.backend.install(&batch);
        let late = self.late(started);
        let mut withdraw = Vec::new();
        for ((flow, rule), res) in installs.into_iter().zip(results) {
            let (installed, placement) = self.outcome(res, late.as_ref(), &rule, &mut withdraw);
            self.settle(flow, installed.map(|h| (h, rule)), placement, touched);
        }
        self.withdraw(withdraw);
    }

    fn run_replaces(
        &mut self,
        replaces: Vec<(FlowId, RuleHandle, FlowerRule)>,
        touched: &mut Vec<(FlowId, Placement)>,
    ) {
        if replaces.is_empty() {
            return;
        }
        let batch: Vec<(FlowId, RuleHandle, &FlowerRule)> =
            replaces.iter().map(|(f, h, r)| (*f, *h, r)).collect();
        let started = Instant::now();
        let results = self.backend.replace(&batch);
        let late = self.late(started);
        let mut withdraw = Vec::new();
        for ((flow, old, rule), res) in replaces.into_iter().zip(results) {
            if res.is_err() {
                // The old rule no longer matches what the flow does: take it out.
                withdraw.push(old);
            }
            let (installed, placement) = self.outcome(res, late.as_ref(), &rule, &mut withdraw);
            self.settle(flow, installed.map(|h| (h, rule)), placement, touched);
        }
        self.withdraw(withdraw);
    }

    fn outcome(
        &self,
        res: Result<crate::backend::Installed, BackendError>,
        late: Option<&SoftwareReason>,
        rule: &FlowerRule,
        withdraw: &mut Vec<RuleHandle>,
    ) -> (Option<RuleHandle>, Placement) {
        match (res, late) {
            (Ok(i), Some(reason)) => {
                withdraw.push(i.handle);
                (None, Placement::software(reason.clone()))
            }
            (Ok(i), None) => (
                Some(i.handle),
                offloaded(self.backend.as_ref(), &self.ports, rule.ingress, i.hw),
            ),
            (Err(e), _) => (
                None,
                Placement::software(SoftwareReason::Backend(e.to_string())),
            ),
        }
    }

    fn settle(
        &mut self,
        flow: FlowId,
        installed: Option<(RuleHandle, FlowerRule)>,
        placement: Placement,
        touched: &mut Vec<(FlowId, Placement)>,
    ) {
        tracing::debug!(%flow, %placement, "offload: placed");
        touched.push((flow, placement.clone()));
        if let Some(e) = self.flows.get_mut(&flow) {
            e.installed = installed;
            e.placement = placement;
        }
    }

    fn withdraw(&mut self, handles: Vec<RuleHandle>) {
        if handles.is_empty() {
            return;
        }
        for res in self.backend.remove(&handles) {
            if let Err(e) = res
                && e.kernel_errno() != Some(KernelErrno::NotFound)
            {
                tracing::warn!(error = %e, "offload: withdrawing a rule failed; the sweep retries");
            }
        }
    }

    /// Pulls counters of every offloaded flow; returns them for the flows' `used` time.
    pub fn sync_stats(&mut self) -> Vec<(FlowId, RuleStats)> {
        let list: Vec<(FlowId, RuleHandle)> = self.offloaded().collect();
        let handles: Vec<RuleHandle> = list.iter().map(|x| x.1).collect();
        let mut out = Vec::with_capacity(list.len());
        for ((flow, _), res) in list.into_iter().zip(self.backend.stats(&handles)) {
            match res {
                Ok(s) => {
                    if let Some(e) = self.flows.get_mut(&flow) {
                        e.stats = s;
                    }
                    out.push((flow, s));
                }
                Err(e) => tracing::debug!(%flow, error = %e, "offload: stats failed"),
            }
        }
        out
    }

    /// Dumps the backend and removes every flowd rule no offloaded flow owns and no
    /// adoption round holds (after a restart without adoption: all of them). Returns
    /// how many were removed.
    pub fn sweep_orphans(&mut self) -> Result<usize, BackendError> {
        let mut mine: HashSet<RuleHandle> = self.offloaded().map(|x| x.1).collect();
        mine.extend(self.kept.values().map(|k| k.handle));
        let orphans: Vec<RuleHandle> = self
            .backend
            .dump()?
            .into_iter()
            .filter(|d| d.owner.is_some() && !mine.contains(&d.handle))
            .map(|d| d.handle)
            .collect();
        let n = orphans.len();
        if n > 0 {
            tracing::info!(orphans = n, "offload: removing orphan rules");
            self.withdraw(orphans);
        }
        Ok(n)
    }
}
