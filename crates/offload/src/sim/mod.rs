//! A simulated eswitch fabric for tests, benchmarks and labs on kernels without
//! cls_flower.
//!
//! Several eswitches, each with a switch id, uplinks, representors (each paired with
//! its VF port), a rule capacity (full: ENOSPC), supported keys and actions
//! (otherwise EOPNOTSUPP) and per-rule counters. A packet injected on a VF port hits an
//! installed rule ("in hardware", counted) or misses to the VF's representor.
//! [`SimFaults`] injects errors and slow answers.

use crate::backend::{
    BackendError, DumpedRule, HwState, Installed, KernelErrno, OffloadBackend, RuleHandle,
    RuleStats,
};
use crate::ports::{PortInfo, PortKind};
use crate::rule::{FlowerAction, FlowerMatch, FlowerRule, Masked};
use datapath::flow::{addr_from, tun_flags, vlan};
use datapath::{FlowId, FlowKey, IfIndex};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

mod filter;
mod rules;
use filter::{ActionLists, SimFilter};
use rules::Slab;

/// Match features (bits of [`SimCaps::keys`]).
pub mod keys {
    /// Ethernet addresses.
    pub const ETH: u32 = 1 << 0;
    /// VLAN tags.
    pub const VLAN: u32 = 1 << 1;
    /// IP addresses, protocol, TOS, TTL.
    pub const IP: u32 = 1 << 2;
    /// Fragment flags.
    pub const FRAG: u32 = 1 << 3;
    /// L4 ports.
    pub const L4: u32 = 1 << 4;
    /// TCP flags.
    pub const TCP_FLAGS: u32 = 1 << 5;
    /// ICMP type/code.
    pub const ICMP: u32 = 1 << 6;
    /// ARP fields.
    pub const ARP: u32 = 1 << 7;
    /// Tunnel (enc_*) keys.
    pub const ENC: u32 = 1 << 8;
    /// Everything.
    pub const ALL: u32 = u32::MAX;
}

/// Action features (bits of [`SimCaps::actions`]).
pub mod acts {
    /// tunnel_key set.
    pub const ENCAP: u32 = 1 << 0;
    /// tunnel_key unset.
    pub const DECAP: u32 = 1 << 1;
    /// mirred redirect.
    pub const REDIRECT: u32 = 1 << 2;
    /// mirred mirror.
    pub const MIRROR: u32 = 1 << 3;
    /// vlan push/pop.
    pub const VLAN: u32 = 1 << 4;
    /// drop.
    pub const DROP: u32 = 1 << 5;
    /// skbedit mark.
    pub const MARK: u32 = 1 << 6;
    /// Everything.
    pub const ALL: u32 = u32::MAX;
}

/// What an eswitch can offload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimCaps {
    /// [`keys`] bits.
    pub keys: u32,
    /// [`acts`] bits.
    pub actions: u32,
}

impl Default for SimCaps {
    fn default() -> Self {
        Self {
            keys: keys::ALL,
            actions: acts::ALL,
        }
    }
}

/// One representor and the VF port behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimRep {
    /// VF number.
    pub vf: u16,
    /// The representor netdev.
    pub rep: IfIndex,
    /// The VF's own port (where its VM's packets enter the eswitch).
    pub vf_port: IfIndex,
}

/// How to build one eswitch.
#[derive(Debug, Clone)]
pub struct SimSwitchSpec {
    /// IFLA_PHYS_SWITCH_ID.
    pub switch_id: Vec<u8>,
    /// The uplink netdevs (two on a multiport eswitch or a LAG).
    pub uplinks: Vec<IfIndex>,
    /// Tunnel devices whose rules this eswitch holds (decap).
    pub tunnels: Vec<IfIndex>,
    /// Representors.
    pub reps: Vec<SimRep>,
    /// Maximum rules.
    pub capacity: usize,
    /// Supported keys and actions.
    pub caps: SimCaps,
}

/// Injected faults.
#[derive(Debug, Clone, Default)]
pub struct SimFaults {
    /// Errors returned by the next installs/replaces, in order.
    pub fail_next: VecDeque<KernelErrno>,
    /// Every install/replace takes this long (a slow answer).
    pub latency: Duration,
}

#[derive(Debug, Clone)]
struct SimRule {
    filter: SimFilter,
    owner: FlowId,
    packets: u64,
    bytes: u64,
    last_used: Option<Instant>,
}

#[derive(Debug)]
struct SimSwitch {
    spec: SimSwitchSpec,
    rules: Slab<SimRule>,
}

/// Where an injected packet went.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SimVerdict {
    /// Forwarded by a rule "in hardware".
    Hit {
        /// The rule.
        handle: RuleHandle,
        /// What it did.
        actions: Vec<FlowerAction>,
    },
    /// Missed: delivered to the representor (the software datapath).
    Miss {
        /// The representor.
        representor: IfIndex,
    },
    /// The port is no VF port of any eswitch.
    UnknownPort,
}

/// Several simulated eswitches behind one backend.
#[derive(Debug, Default)]
pub struct SimFabric {
    switches: Vec<SimSwitch>,
    by_device: HashMap<IfIndex, usize>,
    /// The filters' action lists, shared.
    actions: ActionLists,
    /// Fault injection.
    pub faults: SimFaults,
}

impl SimFabric {
    /// A fabric of eswitches.
    pub fn new(specs: Vec<SimSwitchSpec>) -> Self {
        let mut f = Self::default();
        for (i, spec) in specs.into_iter().enumerate() {
            for u in &spec.uplinks {
                f.by_device.insert(*u, i);
            }
            for t in &spec.tunnels {
                f.by_device.insert(*t, i);
            }
            for r in &spec.reps {
                f.by_device.insert(r.rep, i);
            }
            f.switches.push(SimSwitch {
                spec,
                rules: Slab::default(),
            });
        }
        f
    }

    /// Rules held by all eswitches.
    pub fn len(&self) -> usize {
        self.switches.iter().map(|s| s.rules.len()).sum()
    }

    /// Whether no rule is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every rule with its owner.
    pub fn rules(&self) -> impl Iterator<Item = (FlowId, FlowerRule)> + '_ {
        self.switches
            .iter()
            .flat_map(|s| s.rules.iter().map(|(_, r)| (r.owner, r.filter.rule())))
    }

    /// Injects a packet (its key and length) on a VF port.
    pub fn inject(&mut self, vf_port: IfIndex, key: &FlowKey, len: u64) -> SimVerdict {
        let found = self.switches.iter_mut().find_map(|s| {
            let rep = s.spec.reps.iter().find(|r| r.vf_port == vf_port)?.rep;
            Some((s, rep))
        });
        let Some((sw, rep)) = found else {
            return SimVerdict::UnknownPort;
        };
        for (h, r) in sw.rules.iter_mut() {
            if r.filter.ingress == rep && matches_key(&r.filter.matches(), key) {
                r.packets += 1;
                r.bytes += len;
                r.last_used = Some(Instant::now());
                let handle = RuleHandle {
                    device: rep,
                    prio: 1,
                    protocol: r.filter.protocol,
                    handle: h,
                };
                return SimVerdict::Hit {
                    handle,
                    actions: r.filter.actions().to_vec(),
                };
            }
        }
        SimVerdict::Miss { representor: rep }
    }

    fn check_caps(caps: &SimCaps, rule: &FlowerRule) -> Result<(), BackendError> {
        let (k, a) = features(rule);
        let missing_k = k & !caps.keys;
        let missing_a = a & !caps.actions;
        if missing_k != 0 || missing_a != 0 {
            return Err(BackendError::Kernel {
                errno: KernelErrno::NotSupported,
                extack: Some(format!(
                    "sim: unsupported keys {missing_k:#x} actions {missing_a:#x}"
                )),
            });
        }
        Ok(())
    }

    fn install_one(&mut self, owner: FlowId, rule: &FlowerRule) -> Result<Installed, BackendError> {
        if let Some(e) = self.faults.fail_next.pop_front() {
            return Err(BackendError::Kernel {
                errno: e,
                extack: Some("sim: injected fault".into()),
            });
        }
        let &i = self
            .by_device
            .get(&rule.ingress)
            .ok_or(BackendError::UnknownDevice(rule.ingress))?;
        let sw = &mut self.switches[i];
        Self::check_caps(&sw.spec.caps, rule)?;
        if sw.rules.len() >= sw.spec.capacity {
            return Err(BackendError::Kernel {
                errno: KernelErrno::NoSpace,
                extack: Some("sim: eswitch full".into()),
            });
        }
        let filter = SimFilter::new(rule, &mut self.actions);
        let sw = &mut self.switches[i];
        let handle = sw
            .rules
            .insert(SimRule {
                filter,
                owner,
                packets: 0,
                bytes: 0,
                last_used: None,
            })
            .ok_or(BackendError::Kernel {
                errno: KernelErrno::NoSpace,
                extack: Some("sim: out of handles".into()),
            })?;
        Ok(Installed {
            handle: RuleHandle {
                device: rule.ingress,
                prio: 1,
                protocol: rule.matches.protocol,
                handle,
            },
            hw: HwState::InHw { count: 1 },
        })
    }

    fn remove_one(&mut self, h: &RuleHandle) -> Result<SimRule, BackendError> {
        let &i = self
            .by_device
            .get(&h.device)
            .ok_or(BackendError::UnknownDevice(h.device))?;
        self.switches[i]
            .rules
            .remove(h.handle)
            .ok_or(BackendError::errno(KernelErrno::NotFound))
    }

    fn slow(&self) {
        if !self.faults.latency.is_zero() {
            std::thread::sleep(self.faults.latency);
        }
    }
}

fn features(rule: &FlowerRule) -> (u32, u32) {
    let m = &rule.matches;
    let mut k = 0;
    if m.eth_dst.is_some() || m.eth_src.is_some() {
        k |= keys::ETH;
    }
    if m.vlan.is_some() || m.cvlan.is_some() {
        k |= keys::VLAN;
    }
    if m.ip_proto.is_some()
        || m.ip_src.is_some()
        || m.ip_dst.is_some()
        || m.ip_tos.is_some()
        || m.ip_ttl.is_some()
    {
        k |= keys::IP;
    }
    if m.ip_frag.is_some() {
        k |= keys::FRAG;
    }
    if m.l4_src.is_some() || m.l4_dst.is_some() {
        k |= keys::L4;
    }
    if m.tcp_flags.is_some() {
        k |= keys::TCP_FLAGS;
    }
    if m.icmp_type.is_some() || m.icmp_code.is_some() {
        k |= keys::ICMP;
    }
    if m.arp_op.is_some()
        || m.arp_sip.is_some()
        || m.arp_tip.is_some()
        || m.arp_sha.is_some()
        || m.arp_tha.is_some()
    {
        k |= keys::ARP;
    }
    if !m.tunnel.is_empty() {
        k |= keys::ENC;
    }
    let mut a = 0;
    for act in &rule.actions {
        a |= match act {
            FlowerAction::TunnelSet(_) => acts::ENCAP,
            FlowerAction::TunnelUnset => acts::DECAP,
            FlowerAction::Redirect(_) => acts::REDIRECT,
            FlowerAction::Mirror(_) => acts::MIRROR,
            FlowerAction::VlanPush { .. } | FlowerAction::VlanPop => acts::VLAN,
            FlowerAction::Drop => acts::DROP,
            FlowerAction::SetMark(_) => acts::MARK,
        };
    }
    (k, a)
}

fn hit<T: Copy + PartialEq>(m: &Option<Masked<T>>, v: T, and: impl Fn(T, T) -> T) -> bool {
    m.as_ref().is_none_or(|m| and(v, m.mask) == m.value)
}

fn and6(a: [u8; 6], b: [u8; 6]) -> [u8; 6] {
    std::array::from_fn(|i| a[i] & b[i])
}

fn and_ip(a: IpAddr, b: IpAddr) -> IpAddr {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => IpAddr::V4((a.to_bits() & b.to_bits()).into()),
        (IpAddr::V6(a), IpAddr::V6(b)) => IpAddr::V6((a.to_bits() & b.to_bits()).into()),
        _ => a,
    }
}

/// Whether a packet's key matches a flower match (the simulated hardware lookup).
pub fn matches_key(m: &FlowerMatch, k: &FlowKey) -> bool {
    let tagged = k.vlan_tci[0] & vlan::PRESENT != 0;
    let proto_ok = match (m.vlan, tagged) {
        (Some(v), true) => {
            m.protocol == k.vlan_tpid[0]
                && v.id.is_none_or(|id| id == k.vlan_tci[0] & vlan::VID_MASK)
                && v.prio
                    .is_none_or(|p| u16::from(p) == k.vlan_tci[0] >> vlan::PCP_SHIFT)
                && (m.cvlan.is_some() || v.eth_type.is_none_or(|t| t == k.eth_type))
        }
        (None, false) => m.protocol == crate::translate::ETH_P_ALL || m.protocol == k.eth_type,
        _ => false,
    };
    let v6 = k.is_ipv6();
    let band = |a: u8, b: u8| a & b;
    let band16 = |a: u16, b: u16| a & b;
    let t = &m.tunnel;
    let has_tun = k.tun_flags & tun_flags::PRESENT != 0;
    let tv6 = k.tun_flags & tun_flags::IPV6 != 0;
    proto_ok
        && hit(&m.eth_dst, k.eth_dst, and6)
        && hit(&m.eth_src, k.eth_src, and6)
        && m.ip_proto.is_none_or(|p| p == k.ip_proto)
        && hit(&m.ip_src, addr_from(k.ip_src, v6), and_ip)
        && hit(&m.ip_dst, addr_from(k.ip_dst, v6), and_ip)
        && hit(&m.ip_tos, k.ip_tos, band)
        && hit(&m.ip_ttl, k.ip_ttl, band)
        && hit(&m.ip_frag, k.ip_frag, band)
        && hit(&m.l4_src, k.tp_src, band16)
        && hit(&m.l4_dst, k.tp_dst, band16)
        && hit(&m.tcp_flags, k.tcp_flags, band16)
        && hit(&m.icmp_type, k.tp_src as u8, band)
        && hit(&m.icmp_code, k.tp_dst as u8, band)
        && hit(&m.arp_op, k.ip_proto, band)
        && hit(&m.arp_sip, addr_from(k.ip_src, false), and_ip)
        && hit(&m.arp_tip, addr_from(k.ip_dst, false), and_ip)
        && hit(&m.arp_sha, k.arp_sha, and6)
        && hit(&m.arp_tha, k.arp_tha, and6)
        && (t.is_empty()
            || (has_tun
                && t.key_id.is_none_or(|id| id == k.tun_vni)
                && hit(&t.src, addr_from(k.tun_src, tv6), and_ip)
                && hit(&t.dst, addr_from(k.tun_dst, tv6), and_ip)
                && hit(&t.dst_port, k.tun_tp_dst, band16)
                && hit(&t.tos, k.tun_tos, band)
                && hit(&t.ttl, k.tun_ttl, band)))
}

impl OffloadBackend for SimFabric {
    fn name(&self) -> &'static str {
        "sim"
    }

    /// A representor joins the eswitch of its switch id (as its own VF port); other
    /// ports, and ports of a switch id no simulated eswitch has, are not eswitch ports.
    fn add_port(&mut self, port: &PortInfo) -> Result<(), BackendError> {
        let (PortKind::Representor { vf }, Some(id)) = (port.kind, &port.switch_id) else {
            return Ok(());
        };
        let Some(i) = self.switches.iter().position(|s| s.spec.switch_id == id.0) else {
            return Ok(());
        };
        let reps = &mut self.switches[i].spec.reps;
        reps.retain(|r| r.vf != vf && r.rep != port.ifindex);
        reps.push(SimRep {
            vf,
            rep: port.ifindex,
            vf_port: port.ifindex,
        });
        self.by_device.insert(port.ifindex, i);
        Ok(())
    }

    fn install(&mut self, rules: &[(FlowId, &FlowerRule)]) -> Vec<Result<Installed, BackendError>> {
        self.slow();
        rules.iter().map(|(f, r)| self.install_one(*f, r)).collect()
    }

    fn replace(
        &mut self,
        rules: &[(FlowId, RuleHandle, &FlowerRule)],
    ) -> Vec<Result<Installed, BackendError>> {
        self.slow();
        rules
            .iter()
            .map(|(f, old, r)| {
                if let Some(e) = self.faults.fail_next.pop_front() {
                    return Err(BackendError::Kernel {
                        errno: e,
                        extack: Some("sim: injected fault".into()),
                    });
                }
                let &i = self
                    .by_device
                    .get(&r.ingress)
                    .ok_or(BackendError::UnknownDevice(r.ingress))?;
                Self::check_caps(&self.switches[i].spec.caps, r)?;
                if old.device == r.ingress {
                    if !self.switches[i].rules.contains(old.handle) {
                        return Err(BackendError::errno(KernelErrno::NotFound));
                    }
                    let filter = SimFilter::new(r, &mut self.actions);
                    let sr = self.switches[i]
                        .rules
                        .get_mut(old.handle)
                        .ok_or(BackendError::errno(KernelErrno::NotFound))?;
                    sr.filter = filter;
                    sr.owner = *f;
                    return Ok(Installed {
                        handle: RuleHandle {
                            protocol: r.matches.protocol,
                            ..*old
                        },
                        hw: HwState::InHw { count: 1 },
                    });
                }
                let new = self.install_one(*f, r)?;
                let _ = self.remove_one(old);
                Ok(new)
            })
            .collect()
    }

    fn remove(&mut self, handles: &[RuleHandle]) -> Vec<Result<(), BackendError>> {
        handles
            .iter()
            .map(|h| self.remove_one(h).map(|_| ()))
            .collect()
    }

    fn stats(&mut self, handles: &[RuleHandle]) -> Vec<Result<RuleStats, BackendError>> {
        let now = Instant::now();
        handles
            .iter()
            .map(|h| {
                let &i = self
                    .by_device
                    .get(&h.device)
                    .ok_or(BackendError::UnknownDevice(h.device))?;
                let r = self.switches[i]
                    .rules
                    .get(h.handle)
                    .ok_or(BackendError::errno(KernelErrno::NotFound))?;
                Ok(RuleStats {
                    packets: r.packets,
                    bytes: r.bytes,
                    hw_packets: r.packets,
                    hw_bytes: r.bytes,
                    last_used_ms_ago: r
                        .last_used
                        .map(|t| now.duration_since(t).as_millis() as u64),
                })
            })
            .collect()
    }

    fn dump(&mut self) -> Result<Vec<DumpedRule>, BackendError> {
        Ok(self
            .switches
            .iter()
            .flat_map(|s| {
                s.rules.iter().map(|(h, r)| DumpedRule {
                    handle: RuleHandle {
                        device: r.filter.ingress,
                        prio: 1,
                        protocol: r.filter.protocol,
                        handle: h,
                    },
                    owner: Some(r.owner),
                    rule: Some(r.filter.rule()),
                    hw: HwState::InHw { count: 1 },
                    policy: Some(crate::rule::TcPolicy::None),
                    stats: RuleStats {
                        packets: r.packets,
                        bytes: r.bytes,
                        ..RuleStats::default()
                    },
                })
            })
            .collect())
    }
}

/// A fabric shared between the offloader (which drives it) and a test or lab (which
/// injects packets and faults).
pub type SharedSim = std::sync::Arc<std::sync::Mutex<SimFabric>>;

fn lock(s: &SharedSim) -> std::sync::MutexGuard<'_, SimFabric> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl OffloadBackend for SharedSim {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn install(&mut self, rules: &[(FlowId, &FlowerRule)]) -> Vec<Result<Installed, BackendError>> {
        let latency = lock(self).faults.latency;
        if !latency.is_zero() {
            // Slow answers without holding the fabric (packets keep flowing).
            std::thread::sleep(latency);
        }
        let mut f = lock(self);
        rules.iter().map(|(o, r)| f.install_one(*o, r)).collect()
    }

    fn replace(
        &mut self,
        rules: &[(FlowId, RuleHandle, &FlowerRule)],
    ) -> Vec<Result<Installed, BackendError>> {
        lock(self).replace(rules)
    }

    fn remove(&mut self, handles: &[RuleHandle]) -> Vec<Result<(), BackendError>> {
        lock(self).remove(handles)
    }

    fn stats(&mut self, handles: &[RuleHandle]) -> Vec<Result<RuleStats, BackendError>> {
        lock(self).stats(handles)
    }

    fn dump(&mut self) -> Result<Vec<DumpedRule>, BackendError> {
        lock(self).dump()
    }
}
