//! The offload state machine: for each flow, translate, judge, install through a
//! backend, and keep [`Placement`] honest. Synchronous and deterministic; the
//! [`worker`](crate::worker) runs it on its own thread behind a bounded queue.
//!
//! The offloader holds the facts the [judge](crate::judge) reads: the ports' live facts
//! and the path facts of every tunnel lookup key its flows use. It indexes its flows by
//! port and by lookup key, so that a changed fact re-judges exactly the flows that
//! depend on it ([`Offloader::path_changed`], [`Offloader::change_ports`]), in both
//! directions: to software with the reason, back to offload when it clears.
//!
//! Failures that may pass are retried, never abandoned: a full backend (ENOSPC) when
//! filters are removed and on a schedule, a transient failure (EBUSY, ENOMEM, a late
//! answer, ...) on a schedule (100 ms, doubling up to 30 s).
//!
//! Invariant: a flow is [`Placement::Offloaded`] exactly when the backend holds a rule
//! for it (checked by the tests after random operations and faults).

use crate::backend::{BackendError, HwState, KernelErrno, OffloadBackend, RuleHandle, RuleStats};
use crate::error::OffloadError;
use crate::judge::{Facts, judge};
use crate::placement::{Placement, PlacementCache, SoftwareReason};
use crate::ports::PortTable;
use crate::rule::{FlowerMatch, FlowerRule};
use crate::translate::translate;
use datapath::cache::FlowEntry as CacheEntry;
use datapath::fastmap::{FastMap, FastSet};
use datapath::{Action, Actions, FlowId, IfIndex, Megaflow, PortId};
use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashSet};
use std::hash::BuildHasher;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vocab::{LookupKey, PathFacts, TunnelPath, TunnelRole};

mod batch;

/// What to do with a flow.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum FlowRequest {
    /// The flow was installed (or its actions changed): offload it.
    Put {
        /// The flow as the datapath holds it (id, masked key, mask, actions): the flow
        /// table's own entry, shared rather than copied (a megaflow by value is 256
        /// bytes, and the offloader keeps what it is offered for as long as the flow
        /// lives).
        entry: Arc<CacheEntry>,
        /// The tunnel paths it depends on (encapsulations: the lookup key of each
        /// `set(tunnel)`; decapsulations: the key toward the remote it decapsulates
        /// from). Their facts must be known to the offloader first
        /// ([`Offloader::path_changed`]). Shared: flows with the same paths may hold
        /// one list (the daemon's observer interns them).
        paths: Arc<[TunnelPath]>,
    },
    /// The flow is gone: remove its rule.
    Remove {
        /// The flow.
        flow: FlowId,
    },
}

impl FlowRequest {
    /// A put of a megaflow and its actions that no flow table holds (tests, benches,
    /// tools): builds the entry the request carries.
    pub fn put(flow: FlowId, megaflow: Megaflow, actions: Actions, paths: Vec<TunnelPath>) -> Self {
        let entry = CacheEntry::new(flow, &megaflow.key, Arc::new(megaflow.mask), actions, 0);
        FlowRequest::Put {
            entry: Arc::new(entry),
            paths: paths.into(),
        }
    }

    /// The flow the request is about.
    pub fn flow(&self) -> FlowId {
        match self {
            FlowRequest::Put { entry, .. } => entry.id(),
            FlowRequest::Remove { flow } => *flow,
        }
    }
}

/// Whether two flows are the same flow with the same match, actions and paths.
fn same_flow(
    a: &CacheEntry,
    a_paths: &[TunnelPath],
    b: &CacheEntry,
    b_paths: &[TunnelPath],
) -> bool {
    a.id() == b.id()
        && a.key() == b.key()
        && a.mask() == b.mask()
        && a.actions() == b.actions()
        && a_paths == b_paths
}

impl PartialEq for FlowRequest {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                FlowRequest::Put {
                    entry: a,
                    paths: pa,
                },
                FlowRequest::Put {
                    entry: b,
                    paths: pb,
                },
            ) => same_flow(a, pa, b, pb),
            (FlowRequest::Remove { flow: a }, FlowRequest::Remove { flow: b }) => a == b,
            _ => false,
        }
    }
}

impl Eq for FlowRequest {}

/// The rule a flow has installed: where it is, and a fingerprint of what it is (a keyed
/// 64-bit hash of the [`FlowerRule`], compared with the rule a new verdict prepares),
/// rather than a second copy of the rule (about 400 bytes; the backend holds the rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InstalledRule {
    handle: RuleHandle,
    /// Never zero: an `Option` of it takes no more room.
    fingerprint: NonZeroU64,
}

/// What the offloader keeps per flow. Memory (issue 15): the match and actions are the
/// flow table's entry, shared; the paths and the placement are shared with every flow
/// that has the same; the installed rule is a handle and a fingerprint. See the test
/// `per_flow_state_stays_small`.
#[derive(Debug, Clone)]
struct Tracked {
    entry: Arc<CacheEntry>,
    paths: Arc<[TunnelPath]>,
    placement: Arc<Placement>,
    installed: Option<InstalledRule>,
    /// Failed attempts in a row of a retryable failure.
    attempts: u32,
}

impl Tracked {
    /// The ports the flow's rule involves (ingress and outputs).
    fn ports(&self) -> Vec<PortId> {
        let mut v: Vec<PortId> = self
            .entry
            .actions()
            .as_slice()
            .iter()
            .filter_map(|a| match a {
                Action::Output(p) => Some(*p),
                _ => None,
            })
            .collect();
        if self.entry.mask().0.in_port != 0 {
            v.push(PortId(self.entry.key().in_port));
        }
        v.sort();
        v.dedup();
        v
    }

    fn request(&self) -> FlowRequest {
        FlowRequest::Put {
            entry: self.entry.clone(),
            paths: self.paths.clone(),
        }
    }
}

/// A rule a previous run left installed, waiting for a flow to adopt it.
#[derive(Debug, Clone)]
struct Kept {
    handle: RuleHandle,
    rule: FlowerRule,
    hw: HwState,
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

/// Counters of the offloader's own decisions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OffloadCounters {
    /// Flows re-judged because a fact they depend on changed.
    pub rejudged: u64,
    /// Installs refused for capacity (ENOSPC).
    pub capacity_refusals: u64,
    /// Transient failures (EBUSY, ENOMEM, late answers, ...).
    pub transient_failures: u64,
    /// Retries made.
    pub retries: u64,
    /// Retries that offloaded the flow.
    pub retries_ok: u64,
    /// Offloaded flows whose rule was rewritten (a new path, uplink, source or next
    /// hop, or new actions).
    pub moved: u64,
    /// Offloaded flows taken back to software (their rule withdrawn).
    pub to_software: u64,
    /// Flows offloaded (first placement, or back from software).
    pub to_offload: u64,
}

/// How long the `n`-th retry waits: 100 ms, doubling, at most 30 s.
fn backoff(attempts: u32) -> Duration {
    let ms = 100u64.saturating_mul(1 << attempts.saturating_sub(1).min(9));
    Duration::from_millis(ms.min(30_000))
}

/// Drives a backend for a set of flows.
pub struct Offloader {
    backend: Box<dyn OffloadBackend>,
    ports: PortTable,
    paths: FastMap<LookupKey, PathFacts>,
    deadline: Duration,
    flows: FastMap<FlowId, Tracked>,
    /// Placements shared between flows (most flows have one of a few).
    shared: PlacementCache,
    /// The key of the installed rules' fingerprints (random per offloader: no input can
    /// be crafted to make two rules collide).
    fingerprints: RandomState,
    by_key: FastMap<LookupKey, FastSet<FlowId>>,
    by_port: FastMap<PortId, FastSet<FlowId>>,
    /// Flows waiting to be tried again: (when, flow).
    retries: BTreeSet<(Instant, FlowId)>,
    retry_at: FastMap<FlowId, Instant>,
    /// Flows refused for capacity, tried again as soon as filters are removed.
    capacity_waiting: FastSet<FlowId>,
    counters: OffloadCounters,
    /// Rules a previous run left, by ingress and match, until the adoption ends.
    kept: FastMap<(IfIndex, FlowerMatch), Kept>,
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

/// What a failed backend call means for the flow.
fn failure(e: &BackendError, attempts: u32) -> SoftwareReason {
    match e {
        BackendError::Kernel {
            errno: KernelErrno::NoSpace,
            ..
        } => SoftwareReason::Capacity(e.to_string()),
        BackendError::Kernel { errno, .. } if errno.is_transient() => SoftwareReason::Retrying {
            error: e.to_string(),
            attempts,
        },
        BackendError::Io(_) | BackendError::NoAnswer => SoftwareReason::Retrying {
            error: e.to_string(),
            attempts,
        },
        _ => SoftwareReason::Backend(e.to_string()),
    }
}

impl Offloader {
    /// An offloader over a backend and the ports' facts. Answers slower than
    /// `deadline` count as failures (the rule is withdrawn, the flow stays in software
    /// and is tried again later).
    pub fn new(backend: Box<dyn OffloadBackend>, ports: PortTable, deadline: Duration) -> Self {
        Self {
            backend,
            ports,
            paths: FastMap::default(),
            deadline,
            flows: FastMap::default(),
            shared: PlacementCache::default(),
            fingerprints: RandomState::new(),
            by_key: FastMap::default(),
            by_port: FastMap::default(),
            retries: BTreeSet::new(),
            retry_at: FastMap::default(),
            capacity_waiting: FastSet::default(),
            counters: OffloadCounters::default(),
            kept: FastMap::default(),
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

    /// The ports' facts.
    pub fn ports(&self) -> &PortTable {
        &self.ports
    }

    /// The path facts known for each lookup key.
    pub fn paths(&self) -> &FastMap<LookupKey, PathFacts> {
        &self.paths
    }

    /// Counters.
    pub fn counters(&self) -> OffloadCounters {
        self.counters
    }

    /// A lookup key's path facts changed (or became known): records them and re-judges
    /// the flows that use the key. Returns the placements that changed.
    pub fn path_changed(&mut self, key: LookupKey, facts: PathFacts) -> Vec<(FlowId, Placement)> {
        if self.paths.get(&key) == Some(&facts) {
            return Vec::new();
        }
        self.paths.insert(key, facts);
        let flows: Vec<FlowId> = self
            .by_key
            .get(&key)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        self.rejudge(flows)
    }

    /// Ports plugged, changed (a new MTU, state or switch id, or a netdev re-created
    /// under a new index) and unplugged while running. A new device is prepared in the
    /// backend (tc: its ingress qdisc); a port the backend refuses stays out of the
    /// table (its flows stay in software). Then every flow that uses a changed port
    /// (as ingress, output or the uplink of one of its paths) is judged again. Returns
    /// one message per refusal and the placements that changed.
    pub fn change_ports(
        &mut self,
        change: crate::worker::PortChange,
    ) -> (Vec<String>, Vec<(FlowId, Placement)>) {
        let mut affected_ports: Vec<PortId> = Vec::new();
        let mut affected_links: Vec<IfIndex> = Vec::new();
        for id in change.unplugged {
            if let Some(old) = self.ports.remove(id) {
                self.backend.remove_port(old.ifindex);
                self.forget_device(old.ifindex);
                affected_links.push(old.ifindex);
            }
            affected_ports.push(id);
        }
        let mut refused = Vec::new();
        for p in change.plugged {
            let old = self.ports.get(p.id).cloned();
            if old.as_ref() == Some(&p) {
                continue;
            }
            let new_device = old.as_ref().is_none_or(|o| o.ifindex != p.ifindex);
            if let Some(o) = old.as_ref().filter(|_| new_device) {
                // The old netdev is gone, and its filters with it.
                self.backend.remove_port(o.ifindex);
                self.forget_device(o.ifindex);
                affected_links.push(o.ifindex);
            }
            affected_ports.push(p.id);
            affected_links.push(p.ifindex);
            if new_device && let Err(e) = self.backend.add_port(&p) {
                tracing::warn!(port = %p.name, error = %e, "offload: port refused");
                self.ports.remove(p.id);
                refused.push(format!("port `{}`: {e}", p.name));
                continue;
            }
            self.ports.insert(p);
        }
        let mut flows: HashSet<FlowId> = HashSet::new();
        for id in &affected_ports {
            if let Some(s) = self.by_port.get(id) {
                flows.extend(s.iter().copied());
            }
        }
        for (key, facts) in &self.paths {
            if let Ok(p) = facts
                && affected_links.contains(&p.uplink)
                && let Some(s) = self.by_key.get(key)
            {
                flows.extend(s.iter().copied());
            }
        }
        (refused, self.rejudge(flows))
    }

    /// Forgets the rules installed on a device that went away (the kernel removed them
    /// with it).
    fn forget_device(&mut self, ifindex: IfIndex) {
        let pending = self
            .shared
            .get(Placement::software(SoftwareReason::Pending));
        for e in self.flows.values_mut() {
            if e.installed.is_some_and(|i| i.handle.device == ifindex) {
                e.installed = None;
                e.placement = pending.clone();
            }
        }
    }

    /// The fingerprint an installed rule is remembered by.
    fn fingerprint(&self, rule: &FlowerRule) -> NonZeroU64 {
        NonZeroU64::new(self.fingerprints.hash_one(rule)).unwrap_or(NonZeroU64::MIN)
    }

    /// A flow's placement.
    pub fn placement(&self, flow: FlowId) -> Option<&Placement> {
        self.flows.get(&flow).map(|e| &*e.placement)
    }

    /// A flow's placement as the offloader holds it, shared with the other flows of the
    /// same placement (the worker publishes it without a copy).
    pub fn placement_shared(&self, flow: FlowId) -> Option<&Arc<Placement>> {
        self.flows.get(&flow).map(|e| &e.placement)
    }

    /// An offloaded flow's counters, read from the backend now (`None`: not offloaded,
    /// or the backend could not say). The offloader keeps no copy: the worker publishes
    /// what it pulls (48 bytes a flow kept twice before, issue 15).
    pub fn stats(&mut self, flow: FlowId) -> Option<RuleStats> {
        let handle = self.flows.get(&flow)?.installed?.handle;
        self.backend.stats(&[handle]).pop()?.ok()
    }

    /// Every known flow's placement.
    pub fn placements(&self) -> impl Iterator<Item = (FlowId, &Placement)> {
        self.flows.iter().map(|(f, e)| (*f, &*e.placement))
    }

    /// The handles of offloaded flows.
    pub fn offloaded(&self) -> impl Iterator<Item = (FlowId, RuleHandle)> + '_ {
        self.flows
            .iter()
            .filter_map(|(f, e)| e.installed.map(|i| (*f, i.handle)))
    }

    /// Translates and judges a flow on the facts as they are: the rule to install, or
    /// why not.
    pub fn prepare(
        &self,
        megaflow: &Megaflow,
        actions: &Actions,
        paths: &[TunnelPath],
    ) -> Result<FlowerRule, SoftwareReason> {
        let mut rule = translate(megaflow, actions, &self.ports).map_err(to_unsupported)?;
        let decap: Vec<LookupKey> = paths
            .iter()
            .filter(|p| p.role == TunnelRole::Decap)
            .map(|p| p.key)
            .collect();
        let facts = Facts {
            ports: &self.ports,
            paths: &self.paths,
            hardware: self.backend.hardware(),
        };
        judge(&mut rule, &decap, &facts)?;
        Ok(rule)
    }

    /// Judges flows again on the current facts (same requests, new verdicts).
    fn rejudge(&mut self, flows: impl IntoIterator<Item = FlowId>) -> Vec<(FlowId, Placement)> {
        let reqs: Vec<FlowRequest> = flows
            .into_iter()
            .filter_map(|f| self.flows.get(&f).map(Tracked::request))
            .collect();
        self.counters.rejudged += reqs.len() as u64;
        self.process(reqs)
    }

    /// When the next retry is due, if any.
    pub fn next_retry(&self) -> Option<Instant> {
        self.retries.first().map(|(t, _)| *t)
    }

    /// Tries again the flows whose retry is due at `now` (at most `max`).
    pub fn retry_due(&mut self, now: Instant, max: usize) -> Vec<(FlowId, Placement)> {
        let mut due = Vec::new();
        while due.len() < max {
            match self.retries.first() {
                Some(&(t, f)) if t <= now => {
                    self.retries.remove(&(t, f));
                    self.retry_at.remove(&f);
                    due.push(f);
                }
                _ => break,
            }
        }
        self.counters.retries += due.len() as u64;
        let touched = self.rejudge(due.iter().copied());
        self.counters.retries_ok += touched
            .iter()
            .filter(|(f, p)| due.contains(f) && p.is_offloaded())
            .count() as u64;
        touched
    }

    fn schedule_retry(&mut self, flow: FlowId, attempts: u32) {
        self.cancel_retry(flow);
        let at = Instant::now() + backoff(attempts);
        self.retries.insert((at, flow));
        self.retry_at.insert(flow, at);
    }

    fn cancel_retry(&mut self, flow: FlowId) {
        if let Some(at) = self.retry_at.remove(&flow) {
            self.retries.remove(&(at, flow));
        }
    }

    /// `n` filters were removed: as many flows waiting for capacity are due now.
    fn capacity_freed(&mut self, n: usize) {
        let now = Instant::now();
        let ready: Vec<FlowId> = self.capacity_waiting.iter().take(n).copied().collect();
        for f in ready {
            self.capacity_waiting.remove(&f);
            self.cancel_retry(f);
            self.retries.insert((now, f));
            self.retry_at.insert(f, now);
        }
    }

    fn index(&mut self, flow: FlowId, e: &Tracked) {
        for p in e.ports() {
            self.by_port.entry(p).or_default().insert(flow);
        }
        for t in e.paths.iter() {
            self.by_key.entry(t.key).or_default().insert(flow);
        }
    }

    fn unindex(&mut self, flow: FlowId, e: &Tracked) {
        for p in e.ports() {
            if let Some(s) = self.by_port.get_mut(&p) {
                s.remove(&flow);
                if s.is_empty() {
                    self.by_port.remove(&p);
                }
            }
        }
        for t in e.paths.iter() {
            if let Some(s) = self.by_key.get_mut(&t.key) {
                s.remove(&flow);
                if s.is_empty() {
                    self.by_key.remove(&t.key);
                    // No flow uses the key any more: its facts go too.
                    self.paths.remove(&t.key);
                }
            }
        }
    }

    /// Pulls counters of every offloaded flow; returns them for the flows' `used` time.
    /// Lists every flow: see [`Self::sync_stats_each`] for a walk in chunks.
    pub fn sync_stats(&mut self) -> Vec<(FlowId, RuleStats)> {
        let mut out = Vec::new();
        self.sync_stats_each(usize::MAX, |c| out.extend_from_slice(c));
        out
    }

    /// Pulls counters of every offloaded flow, `chunk` flows (at least 1) per request
    /// to the backend, and gives each chunk's counters to `f`: no list of every flow
    /// (issue 15's transient memory at a million flows). Flows whose counters the
    /// backend could not read are left out.
    pub fn sync_stats_each(&mut self, chunk: usize, mut f: impl FnMut(&[(FlowId, RuleStats)])) {
        let chunk = chunk.clamp(1, 1 << 16);
        let (mut ids, mut handles, mut out) = (Vec::new(), Vec::new(), Vec::new());
        let mut offloaded = self
            .flows
            .iter()
            .filter_map(|(f, e)| e.installed.map(|i| (*f, i.handle)));
        loop {
            ids.clear();
            handles.clear();
            out.clear();
            for (flow, handle) in offloaded.by_ref().take(chunk) {
                ids.push(flow);
                handles.push(handle);
            }
            if ids.is_empty() {
                return;
            }
            for (flow, res) in ids.iter().zip(self.backend.stats(&handles)) {
                match res {
                    Ok(s) => out.push((*flow, s)),
                    Err(e) => tracing::debug!(%flow, error = %e, "offload: stats failed"),
                }
            }
            f(&out);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory (issue 15: <= 1 KB per megaflow, all in). What the offloader keeps per
    /// flow besides its map slot: the flow table's entry and the paths and placement
    /// are shared (`Arc`s), the installed rule is a handle and a fingerprint. Before,
    /// the megaflow (256 bytes), the actions, the paths' list, a placement by value and a
    /// second copy of the flower rule (about 400 bytes) made it over 800 bytes. A
    /// size is deterministic: this fails when a field by value creeps back in.
    #[test]
    fn per_flow_state_stays_small() {
        assert!(
            std::mem::size_of::<Tracked>() <= 64,
            "{}",
            std::mem::size_of::<Tracked>()
        );
        assert!(std::mem::size_of::<FlowRequest>() <= 32);
        assert!(std::mem::size_of::<Megaflow>() + std::mem::size_of::<FlowerRule>() > 600);
    }

    #[test]
    fn a_put_built_from_a_megaflow_is_that_flow() {
        let key = datapath::FlowKey {
            in_port: 3,
            eth_dst: [2, 0, 0, 0, 0, 1],
            ..Default::default()
        };
        let mask = datapath::FlowMask(datapath::FlowKey {
            in_port: u32::MAX,
            eth_dst: [0xff; 6],
            ..Default::default()
        });
        let mf = Megaflow::new(&key, &mask);
        let actions = Actions::new(vec![Action::Output(PortId(4))]);
        let r = FlowRequest::put(FlowId(9), mf, actions.clone(), Vec::new());
        assert_eq!(r.flow(), FlowId(9));
        let FlowRequest::Put { entry, paths } = &r else {
            panic!("a put")
        };
        assert_eq!(entry.megaflow(), mf);
        assert_eq!(entry.actions(), &actions);
        assert!(paths.is_empty());
        assert_eq!(
            r,
            FlowRequest::put(FlowId(9), mf, actions.clone(), Vec::new())
        );
        assert_ne!(r, FlowRequest::put(FlowId(8), mf, actions, Vec::new()));
    }
}
