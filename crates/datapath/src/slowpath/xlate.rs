//! Translation: a flow key -> actions + the wildcard mask of every bit consulted.
//!
//! Every decision reads the key only through bits it first adds to the mask (`wc`), and
//! which bits it adds depends only on bits already added. So every key that agrees with
//! the translated key on the mask takes the same path, gets the same actions *and the
//! same mask*: megaflows are equivalence classes, hence correct for every packet they
//! match and pairwise disjoint.

use super::mac::{Location, Mac, MacTable, is_group};
use super::network::{Attachment, NetworkId, Networks};
use super::rules::{RuleAction, RuleId, RuleTable};
use super::trace::TraceStep;
use crate::actions::{Action, Actions};
use crate::fastmap::FastMap;
use crate::flow::{FlowKey, FlowMask, Megaflow, vlan};
use std::time::Duration;

/// The rule that decided a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleRef {
    /// Its id.
    pub id: RuleId,
    /// Its priority.
    pub priority: u16,
}

/// The station a flow's packets show (their source MAC at their ingress), which NORMAL
/// learns on the upcall and refreshes while the flow is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LearnRef {
    /// The ingress network.
    pub network: NetworkId,
    /// The source MAC.
    pub mac: Mac,
    /// The ingress location.
    pub location: Location,
}

/// What the slow path keeps about an installed flow to revalidate it. Flows with the
/// same value share it (the engine keeps each distinct value once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowMeta {
    /// The winning rule; `None` when no rule matched (dropped).
    pub rule: Option<RuleRef>,
    /// The station learned from the flow's packets, if NORMAL ran.
    pub learn: Option<LearnRef>,
    /// Whether NORMAL ran (the decision consulted the MAC table).
    pub normal: bool,
    /// The network whose remote VTEPs NORMAL replicated the flow's frames to (head-end
    /// replication, whatever the list held): a change of that network's flood list
    /// revalidates the flow.
    pub flood: Option<NetworkId>,
}

/// The result of translating a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xlation {
    /// What to do with the packet (and every packet of the megaflow).
    pub actions: Actions,
    /// The bits of the key the decision consulted.
    pub mask: FlowMask,
    /// For revalidation.
    pub meta: FlowMeta,
    /// Learning this packet's source would change the MAC table: an upcall learns then
    /// translates again; a revalidated flow in this state is deleted so that its next
    /// packet comes up and is learned.
    pub needs_learning: bool,
}

impl Xlation {
    /// The megaflow of `key` under this translation's mask.
    pub fn megaflow(&self, key: &FlowKey) -> Megaflow {
        Megaflow::new(key, &self.mask)
    }
}

/// Receives trace steps; the no-op implementation compiles away.
pub(crate) trait Tracer {
    fn step(&mut self, f: impl FnOnce() -> TraceStep);
}

/// A tracer that records nothing.
pub(crate) struct NoTrace;

impl Tracer for NoTrace {
    #[inline(always)]
    fn step(&mut self, _f: impl FnOnce() -> TraceStep) {}
}

impl Tracer for Vec<TraceStep> {
    fn step(&mut self, f: impl FnOnce() -> TraceStep) {
        self.push(f());
    }
}

/// The state translation reads.
#[derive(Clone, Copy)]
pub(crate) struct Env<'a> {
    pub rules: &'a RuleTable,
    pub networks: &'a Networks,
    pub macs: &'a MacTable,
    /// Control-plane flood lists (head-end replication) per network, besides the
    /// segments' configured remotes.
    pub flood: &'a FastMap<NetworkId, Vec<std::net::IpAddr>>,
}

/// The VLAN stack as actions so far left it: tags pushed by actions (known, consulting
/// nothing) over the packet's own tags, of which `popped` were removed.
#[derive(Debug, Default)]
pub(crate) struct VlanState {
    pushed: Vec<u16>,
    popped: usize,
}

impl VlanState {
    /// The outermost VLAN id, consulting the packet's tag if that is what is on top.
    pub fn outer(&self, key: &FlowKey, wc: &mut FlowMask) -> Option<u16> {
        if let Some(tci) = self.pushed.last() {
            return Some(tci & vlan::VID_MASK);
        }
        let slot = self.popped;
        let tci = *key.vlan_tci.get(slot)?;
        wc.vlan_tci[slot] |= vlan::PRESENT | vlan::VID_MASK;
        if tci & vlan::PRESENT == 0 {
            // "No tag here" is only expressible downstream (tc flower, NICs) through the
            // ethertype: a filter for `protocol ip` never sees an 802.1Q frame, one for
            // `protocol all` sees both. So an untagged decision consults the ethertype.
            wc.eth_type = u16::MAX;
        }
        (tci & vlan::PRESENT != 0).then_some(tci & vlan::VID_MASK)
    }

    pub fn push(&mut self, tci: u16) {
        self.pushed.push(tci);
    }

    pub fn pop(&mut self) {
        if self.pushed.pop().is_none() {
            self.popped = (self.popped + 1).min(2);
        }
    }
}

/// One translation in progress.
pub(crate) struct Ctx<'a, T: Tracer> {
    pub env: Env<'a>,
    pub key: &'a FlowKey,
    pub now: Duration,
    pub wc: FlowMask,
    pub out: Vec<Action>,
    pub vlan: VlanState,
    pub meta: FlowMeta,
    pub needs_learning: bool,
    pub trace: &'a mut T,
}

/// Translates `key`.
pub(crate) fn xlate<T: Tracer>(
    env: Env<'_>,
    key: &FlowKey,
    now: Duration,
    trace: &mut T,
) -> Xlation {
    let mut cx = Ctx {
        env,
        key,
        now,
        wc: FlowMask::default(),
        out: Vec::new(),
        vlan: VlanState::default(),
        meta: FlowMeta::default(),
        needs_learning: false,
        trace,
    };
    cx.run_rules();
    Xlation {
        actions: Actions::new(cx.out),
        mask: cx.wc,
        meta: cx.meta,
        needs_learning: cx.needs_learning,
    }
}

impl<T: Tracer> Ctx<'_, T> {
    fn run_rules(&mut self) {
        let rules = self.env.rules;
        for e in rules.entries() {
            let (id, priority) = (e.id, e.rule.priority);
            if e.unwildcard(self.key, &mut self.wc) {
                self.meta.rule = Some(RuleRef { id, priority });
                self.trace.step(|| TraceStep::RuleMatched {
                    id,
                    priority,
                    actions: e.rule.actions.clone(),
                });
                self.run_actions(&e.rule.actions);
                return;
            }
            self.trace.step(|| TraceStep::RuleSkipped { id, priority });
        }
        self.trace.step(|| TraceStep::TableMiss);
    }

    fn run_actions(&mut self, actions: &[RuleAction]) {
        for a in actions {
            match *a {
                RuleAction::Output(p) => self.out.push(Action::Output(p)),
                RuleAction::Drop => {
                    self.trace.step(|| TraceStep::RuleDrop);
                    return;
                }
                RuleAction::PushVlan { tpid, tci } => {
                    self.out.push(Action::PushVlan { tpid, tci });
                    self.vlan.push(tci);
                }
                RuleAction::PopVlan => {
                    self.out.push(Action::PopVlan);
                    self.vlan.pop();
                }
                RuleAction::Tunnel { port, attrs } => {
                    self.out.push(Action::SetTunnel(attrs));
                    self.out.push(Action::Output(port));
                }
                RuleAction::Normal => self.normal(),
            }
        }
    }

    /// Rewrites the outer tag to `want` (pop, push), consulting the packet's tags as they
    /// surface, and updates the VLAN state.
    pub fn set_vlan(&mut self, want: Option<u16>) {
        let mut cur = self.vlan.outer(self.key, &mut self.wc);
        // At most the pushed tags plus the packet's two.
        while cur.is_some() && cur != want {
            self.out.push(Action::PopVlan);
            self.vlan.pop();
            cur = self.vlan.outer(self.key, &mut self.wc);
        }
        if let Some(vid) = want
            && cur != want
        {
            self.out.push(Action::PushVlan {
                tpid: 0x8100,
                tci: vid,
            });
            self.vlan.push(vid);
        }
    }

    /// Un-wildcards the whole source MAC and returns it.
    pub fn eth_src(&mut self) -> Mac {
        self.wc.eth_src = [0xff; 6];
        Mac(self.key.eth_src)
    }

    /// Whether the destination is a group address, consulting only the group bit.
    pub fn dst_is_group(&mut self) -> bool {
        self.wc.eth_dst[0] |= 0x01;
        is_group(Mac(self.key.eth_dst))
    }

    /// Un-wildcards the whole destination MAC and returns it.
    pub fn eth_dst(&mut self) -> Mac {
        self.wc.eth_dst = [0xff; 6];
        Mac(self.key.eth_dst)
    }

    /// Outputs to a local attachment with its VLAN.
    pub fn output_local(&mut self, a: Attachment) {
        self.set_vlan(a.vlan);
        self.out.push(Action::Output(a.port));
    }
}
