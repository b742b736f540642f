//! The rule table: OpenFlow-like rules (priority, masked match, actions), changed at run
//! time, each change bumping a version.
//!
//! Rules are kept sorted by priority (highest first, then by id, oldest first), which is
//! the order translation examines them in. For each rule it examines, translation
//! un-wildcards just enough bits to prove the rule matches or does not (see
//! [`Rule::unwildcard`]).

use super::error::SlowPathError;
use super::fields::{FIELDS, PAD};
use crate::PortId;
use crate::actions::TunnelAttrs;
use crate::flow::{FlowKey, FlowMask, Megaflow};

/// The most actions a rule may have.
pub const MAX_RULE_ACTIONS: usize = 64;

/// A rule's identity, assigned by the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleId(pub u64);

impl std::fmt::Display for RuleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a rule does with a packet it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RuleAction {
    /// Send the packet out of a port.
    Output(PortId),
    /// Stop: the rule's later actions are ignored (outputs before it still happen). A rule
    /// with no outputs drops the packet.
    Drop,
    /// Push a VLAN tag.
    PushVlan {
        /// 0x8100 or 0x88a8.
        tpid: u16,
        /// The tag control information (PCP, DEI, VID).
        tci: u16,
    },
    /// Pop the outermost VLAN tag.
    PopVlan,
    /// Encapsulate in VXLAN with these outer parameters and send out of a tunnel port.
    Tunnel {
        /// The tunnel port.
        port: PortId,
        /// The outer header parameters.
        attrs: TunnelAttrs,
    },
    /// Forward as an L2 learning switch (see the `normal` module).
    Normal,
}

impl std::fmt::Display for RuleAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuleAction::Output(p) => write!(f, "output:{p}"),
            RuleAction::Drop => f.write_str("drop"),
            RuleAction::PushVlan { tpid, tci } => write!(f, "push_vlan({tpid:#06x},{tci:#06x})"),
            RuleAction::PopVlan => f.write_str("pop_vlan"),
            RuleAction::Tunnel { port, attrs } => write!(f, "set({attrs}),output:{port}"),
            RuleAction::Normal => f.write_str("NORMAL"),
        }
    }
}

impl RuleAction {
    fn validate(&self) -> Result<(), SlowPathError> {
        match self {
            RuleAction::PushVlan { tpid, .. } if *tpid != 0x8100 && *tpid != 0x88a8 => {
                Err(SlowPathError::InvalidTpid(*tpid))
            }
            RuleAction::Tunnel { attrs, .. } if attrs.vni >= 1 << 24 => {
                Err(SlowPathError::InvalidVni(attrs.vni))
            }
            _ => Ok(()),
        }
    }
}

/// A rule: a priority, a masked match and actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Higher wins; among equal priorities the older rule wins.
    pub priority: u16,
    /// The match (a masked key).
    pub matches: Megaflow,
    /// The actions, in order.
    pub actions: Vec<RuleAction>,
}

impl Rule {
    /// A rule matching `key` under `mask`.
    pub fn new(priority: u16, key: &FlowKey, mask: &FlowMask, actions: Vec<RuleAction>) -> Self {
        Self {
            priority,
            matches: Megaflow::new(key, mask),
            actions,
        }
    }

    /// A rule matching every packet.
    pub fn catch_all(priority: u16, actions: Vec<RuleAction>) -> Self {
        Self::new(
            priority,
            &FlowKey::default(),
            &FlowMask::wildcard_all(),
            actions,
        )
    }

    fn validate(&self) -> Result<(), SlowPathError> {
        if self.actions.len() > MAX_RULE_ACTIONS {
            return Err(SlowPathError::TooManyActions(self.actions.len()));
        }
        self.actions.iter().try_for_each(RuleAction::validate)
    }
}

/// A rule in the table, with the fields its mask touches precomputed.
#[derive(Debug, Clone)]
pub struct RuleEntry {
    /// The rule's id.
    pub id: RuleId,
    /// The rule.
    pub rule: Rule,
    fields: Vec<u8>,
}

impl RuleEntry {
    fn new(id: RuleId, mut rule: Rule) -> Self {
        // Never match the padding, whatever the caller put there.
        rule.matches.mask.pad = [0; 6];
        rule.matches.key = rule.matches.key.masked(&rule.matches.mask);
        let fields = FIELDS[..PAD]
            .iter()
            .enumerate()
            .filter(|(_, f)| f.get(&rule.matches.mask) != 0)
            .map(|(i, _)| i as u8)
            .collect();
        Self { id, rule, fields }
    }

    /// Whether the rule matches `key`; either way, adds to `wc` the bits that decide it,
    /// such that every key agreeing with `key` on `wc` gets the same answer *and the same
    /// bits*, which keeps megaflows disjoint.
    ///
    /// A match needs the whole rule mask. A mismatch is proved by the first field, in
    /// staged order, that differs: the fields before it (which matched) are un-wildcarded
    /// whole, and the differing field whole or, for prefix fields, only up to its first
    /// differing bit.
    #[inline]
    pub fn unwildcard(&self, key: &FlowKey, wc: &mut FlowMask) -> bool {
        let m = &self.rule.matches;
        if m.matches(key) {
            for (w, r) in wc.0.words_mut().iter_mut().zip(m.mask.0.words()) {
                *w |= r;
            }
            return true;
        }
        for &i in &self.fields {
            let f = &FIELDS[usize::from(i)];
            let fm = f.get(&m.mask);
            let kv = f.get(key) & fm;
            let rv = f.get(&m.key);
            if kv == rv {
                f.or_into(&mut wc.0, fm);
            } else {
                let bits = if f.prefix {
                    f.prefix_through_first_diff(fm, kv, rv)
                } else {
                    fm
                };
                f.or_into(&mut wc.0, bits);
                break;
            }
        }
        false
    }
}

/// What a rule change touched, for revalidation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleChange {
    /// The table version after the change.
    pub version: u64,
    /// The highest priority of the rules added, removed or changed: flows decided by a
    /// rule of strictly higher priority cannot be affected.
    pub priority: u16,
}

/// The rule table.
#[derive(Debug, Clone, Default)]
pub struct RuleTable {
    rules: Vec<RuleEntry>,
    next_id: u64,
    version: u64,
}

impl RuleTable {
    /// An empty table (every packet is dropped).
    pub fn new() -> Self {
        Self::default()
    }

    /// The version, bumped by every change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The rules, in the order translation examines them.
    pub fn entries(&self) -> &[RuleEntry] {
        &self.rules
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// A rule by id.
    pub fn get(&self, id: RuleId) -> Option<&Rule> {
        self.rules.iter().find(|e| e.id == id).map(|e| &e.rule)
    }

    /// Adds a rule.
    pub fn add(&mut self, rule: Rule) -> Result<(RuleId, RuleChange), SlowPathError> {
        rule.validate()?;
        self.refuse_duplicate(&rule, None)?;
        self.next_id += 1;
        let id = RuleId(self.next_id);
        let priority = rule.priority;
        self.insert(RuleEntry::new(id, rule));
        Ok((id, self.bump(priority)))
    }

    /// Replaces a rule's priority, match and actions, keeping its id.
    pub fn modify(&mut self, id: RuleId, rule: Rule) -> Result<RuleChange, SlowPathError> {
        rule.validate()?;
        self.refuse_duplicate(&rule, Some(id))?;
        let old = self.remove(id)?;
        let priority = old.rule.priority.max(rule.priority);
        self.insert(RuleEntry::new(id, rule));
        Ok(self.bump(priority))
    }

    /// Deletes a rule.
    pub fn delete(&mut self, id: RuleId) -> Result<RuleChange, SlowPathError> {
        let old = self.remove(id)?;
        Ok(self.bump(old.rule.priority))
    }

    /// Two rules with the same priority and match would make the second one dead and
    /// "delete" ambiguous: refused, naming the rule that holds them.
    fn refuse_duplicate(&self, rule: &Rule, except: Option<RuleId>) -> Result<(), SlowPathError> {
        match self.rules.iter().find(|e| {
            Some(e.id) != except
                && e.rule.priority == rule.priority
                && e.rule.matches == rule.matches
        }) {
            Some(e) => Err(SlowPathError::DuplicateRule(e.id)),
            None => Ok(()),
        }
    }

    fn remove(&mut self, id: RuleId) -> Result<RuleEntry, SlowPathError> {
        let pos = self
            .rules
            .iter()
            .position(|e| e.id == id)
            .ok_or(SlowPathError::UnknownRule(id))?;
        Ok(self.rules.remove(pos))
    }

    fn insert(&mut self, e: RuleEntry) {
        let order = |x: &RuleEntry| (std::cmp::Reverse(x.rule.priority), x.id);
        let pos = self.rules.partition_point(|x| order(x) < order(&e));
        self.rules.insert(pos, e);
    }

    fn bump(&mut self, priority: u16) -> RuleChange {
        self.version += 1;
        RuleChange {
            version: self.version,
            priority,
        }
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;

    fn ip(a: [u8; 4]) -> [u8; 16] {
        let mut b = [0; 16];
        b[..4].copy_from_slice(&a);
        b
    }

    #[test]
    fn order_and_versions() {
        let mut t = RuleTable::new();
        let (a, _) = t.add(Rule::catch_all(1, vec![RuleAction::Normal])).unwrap();
        let (b, c) = t.add(Rule::catch_all(5, vec![RuleAction::Drop])).unwrap();
        assert_eq!(c.version, 2);
        assert_eq!(t.entries()[0].id, b);
        let c = t
            .modify(b, Rule::catch_all(0, vec![RuleAction::Drop]))
            .unwrap();
        assert_eq!(c.priority, 5);
        assert_eq!(t.entries()[0].id, a);
        t.delete(a).unwrap();
        assert_eq!(t.delete(a), Err(SlowPathError::UnknownRule(a)));
        assert_eq!(t.version(), 4);
    }

    #[test]
    fn invalid_actions_are_refused() {
        let mut t = RuleTable::new();
        let bad = RuleAction::PushVlan { tpid: 1, tci: 0 };
        assert_eq!(
            t.add(Rule::catch_all(1, vec![bad])),
            Err(SlowPathError::InvalidTpid(1))
        );
        let many = vec![RuleAction::PopVlan; MAX_RULE_ACTIONS + 1];
        assert!(t.add(Rule::catch_all(1, many)).is_err());
    }

    #[test]
    fn mismatch_unwildcards_prefix_only() {
        let mut key = FlowKey::default();
        key.eth_type = 0x0800;
        key.ip_dst = ip([10, 1, 2, 3]);
        let mut mask = FlowMask::default();
        mask.eth_type = 0xffff;
        mask.ip_dst = ip([255, 255, 0, 0]);
        let e = RuleEntry::new(RuleId(1), Rule::new(1, &key, &mask, vec![]));

        let mut pkt = key;
        pkt.ip_dst = ip([10, 129, 0, 1]);
        let mut wc = FlowMask::default();
        assert!(!e.unwildcard(&pkt, &mut wc));
        // eth_type matched (whole), ip_dst first differs at the top bit of octet 2.
        assert_eq!(wc.eth_type, 0xffff);
        assert_eq!(wc.ip_dst, ip([255, 128, 0, 0]));

        let mut wc = FlowMask::default();
        pkt.ip_dst = ip([10, 1, 9, 9]);
        assert!(e.unwildcard(&pkt, &mut wc));
        assert_eq!(wc, e.rule.matches.mask);

        // A non-IP packet fails at eth_type and never looks at the address.
        let mut wc = FlowMask::default();
        pkt.eth_type = 0x0806;
        assert!(!e.unwildcard(&pkt, &mut wc));
        assert_eq!(wc.ip_dst, [0; 16]);
    }
}
