//! tc actions: [`FlowerAction`]s to and from netlink-packet-route's [`TcAction`]s,
//! with the cookie on the first action, `TCA_ACT_FLAGS` on each, and the counters and
//! last use the kernel reports.
//!
//! netlink-packet-route 0.34 models `tunnel_key` and `mirred`; the `gact` (drop),
//! `vlan` and `skbedit` (mark) actions it lacks are built and read here, once, in
//! [`ext`], as [`DefaultNla`]s.

use crate::backend::RuleStats;
use crate::rule::{FlowerAction, TunnelKeySet};
use datapath::IfIndex;
use netlink_packet_core::{DecodeError, DefaultNla, Emitable, Nla};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirrorOption, TcActionOption,
    TcActionTunnelKeyOption, TcActionType, TcMirror, TcMirrorActionType, TcStats2, TcTunnelKey,
    Tcf,
};
use std::net::{IpAddr, Ipv4Addr};

use super::flower::{v4, v6};

const TC_ACT_PIPE: i32 = 3;
const TCA_TUNNEL_KEY_ACT_SET: i32 = 1;
const TCA_TUNNEL_KEY_ACT_RELEASE: i32 = 2;

/// The tc actions netlink-packet-route 0.34 does not model, as raw attributes.
pub mod ext {
    use super::*;

    /// `gact` kind.
    pub const GACT: &str = "gact";
    /// `vlan` kind.
    pub const VLAN: &str = "vlan";
    /// `skbedit` kind.
    pub const SKBEDIT: &str = "skbedit";
    /// `tunnel_key`'s `nofrag` flag (DF on the outer header; a kernel without it, such as 6.1, ignores it).
    pub const TCA_TUNNEL_KEY_NO_FRAG: u16 = 14;
    const TCA_SKBEDIT_PARMS: u16 = 2;
    const TCA_SKBEDIT_MARK: u16 = 5;
    const TCA_GACT_PARMS: u16 = 2;
    const TCA_VLAN_PARMS: u16 = 2;
    const TCA_VLAN_PUSH_VLAN_ID: u16 = 3;
    const TCA_VLAN_PUSH_VLAN_PROTOCOL: u16 = 4;
    const TCA_VLAN_PUSH_VLAN_PRIORITY: u16 = 6;
    /// `TCA_VLAN_ACT_POP`.
    pub const VLAN_ACT_POP: i32 = 1;
    /// `TCA_VLAN_ACT_PUSH`.
    pub const VLAN_ACT_PUSH: i32 = 2;
    /// `sizeof(struct tc_gen)`.
    const TC_GEN_LEN: usize = 20;

    fn tc_gen(action: i32) -> Vec<u8> {
        let mut g = TcActionGeneric::default();
        g.action = TcActionType::from(action);
        let mut b = vec![0u8; TC_GEN_LEN];
        g.emit(&mut b);
        b
    }

    /// The options of `gact drop`.
    pub fn gact_drop() -> Vec<TcActionOption> {
        vec![TcActionOption::Other(DefaultNla::new(
            TCA_GACT_PARMS,
            tc_gen(2),
        ))]
    }

    /// The options of `vlan pop` / `vlan push`.
    pub fn vlan(push: Option<(u16, u16, u8)>) -> Vec<TcActionOption> {
        let mut parms = tc_gen(TC_ACT_PIPE);
        let v_action = if push.is_some() {
            VLAN_ACT_PUSH
        } else {
            VLAN_ACT_POP
        };
        parms.extend_from_slice(&v_action.to_ne_bytes());
        let mut out = vec![TcActionOption::Other(DefaultNla::new(
            TCA_VLAN_PARMS,
            parms,
        ))];
        if let Some((tpid, vid, prio)) = push {
            out.push(TcActionOption::Other(DefaultNla::new(
                TCA_VLAN_PUSH_VLAN_ID,
                vid.to_ne_bytes().to_vec(),
            )));
            out.push(TcActionOption::Other(DefaultNla::new(
                TCA_VLAN_PUSH_VLAN_PROTOCOL,
                tpid.to_be_bytes().to_vec(),
            )));
            out.push(TcActionOption::Other(DefaultNla::new(
                TCA_VLAN_PUSH_VLAN_PRIORITY,
                vec![prio],
            )));
        }
        out
    }

    /// The options of `skbedit mark MARK` (the whole mark: no mask).
    pub fn skbedit_mark(mark: u32) -> Vec<TcActionOption> {
        vec![
            TcActionOption::Other(DefaultNla::new(TCA_SKBEDIT_PARMS, tc_gen(TC_ACT_PIPE))),
            TcActionOption::Other(DefaultNla::new(
                TCA_SKBEDIT_MARK,
                mark.to_ne_bytes().to_vec(),
            )),
        ]
    }

    /// Decodes `skbedit` options: only `mark` (without a mask) is flowd's.
    pub fn decode_skbedit(opts: &[TcActionOption]) -> Result<FlowerAction, DecodeError> {
        let mut mark = None;
        for o in opts {
            let TcActionOption::Other(nla) = o else {
                continue;
            };
            let v = nla_value(nla);
            match nla.kind() {
                TCA_SKBEDIT_MARK => mark = i32_at(&v, 0).map(|m| m as u32),
                // A mask, a priority, a queue mapping: not flowd's.
                3 | 4 | 7 | 8 => {
                    return Err(DecodeError::from(format!(
                        "skbedit attribute {} is not flowd's",
                        nla.kind()
                    )));
                }
                _ => {}
            }
        }
        mark.map(FlowerAction::SetMark)
            .ok_or_else(|| DecodeError::from("skbedit without a mark"))
    }

    /// The value bytes of a raw attribute.
    pub fn nla_value(nla: &DefaultNla) -> Vec<u8> {
        let mut v = vec![0u8; nla.value_len()];
        nla.emit_value(&mut v);
        v
    }

    fn i32_at(b: &[u8], off: usize) -> Option<i32> {
        Some(i32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
    }

    /// Decodes `gact` options: only `drop` is flowd's.
    pub fn decode_gact(opts: &[TcActionOption]) -> Result<FlowerAction, DecodeError> {
        for o in opts {
            if let TcActionOption::Other(nla) = o
                && nla.kind() == TCA_GACT_PARMS
            {
                let v = nla_value(nla);
                return match i32_at(&v, 8) {
                    Some(2) => Ok(FlowerAction::Drop),
                    Some(a) => Err(DecodeError::from(format!("gact action {a} is not drop"))),
                    None => Err(DecodeError::from("short TCA_GACT_PARMS")),
                };
            }
        }
        Err(DecodeError::from("gact without TCA_GACT_PARMS"))
    }

    /// Decodes `vlan` options.
    pub fn decode_vlan(opts: &[TcActionOption]) -> Result<FlowerAction, DecodeError> {
        let (mut v_action, mut vid, mut tpid, mut prio) = (None, 0u16, 0x8100u16, 0u8);
        for o in opts {
            let TcActionOption::Other(nla) = o else {
                continue;
            };
            let v = nla_value(nla);
            match nla.kind() {
                TCA_VLAN_PARMS => v_action = i32_at(&v, TC_GEN_LEN),
                TCA_VLAN_PUSH_VLAN_ID if v.len() >= 2 => vid = u16::from_ne_bytes([v[0], v[1]]),
                TCA_VLAN_PUSH_VLAN_PROTOCOL if v.len() >= 2 => {
                    tpid = u16::from_be_bytes([v[0], v[1]])
                }
                TCA_VLAN_PUSH_VLAN_PRIORITY if !v.is_empty() => prio = v[0],
                _ => {}
            }
        }
        match v_action {
            Some(VLAN_ACT_POP) => Ok(FlowerAction::VlanPop),
            Some(VLAN_ACT_PUSH) => Ok(FlowerAction::VlanPush { tpid, vid, prio }),
            Some(a) => Err(DecodeError::from(format!("vlan action {a} not handled"))),
            None => Err(DecodeError::from("vlan without TCA_VLAN_PARMS")),
        }
    }
}

/// `TCA_ACT_FLAGS`: an `nla_bitfield32` of `TCA_ACT_FLAGS_*`.
const TCA_ACT_FLAGS: u16 = 7;
/// `TCA_ACT_FLAGS_NO_PERCPU_STATS`: plain counters instead of per-CPU ones (far cheaper
/// to create and delete; the per-CPU allocator dominates filter setup at scale).
pub const ACT_FLAGS_NO_PERCPU_STATS: u32 = 1 << 0;

/// The tc actions of a rule; the cookie goes on the first one; `act_flags` are
/// `TCA_ACT_FLAGS_*` set on every action.
pub fn encode_actions(
    actions: &[FlowerAction],
    cookie: Option<[u8; 16]>,
    act_flags: u32,
) -> Vec<TcAction> {
    let mut out = Vec::with_capacity(actions.len());
    for (i, a) in actions.iter().enumerate() {
        let (kind, options) = encode_action(a);
        let mut act = TcAction::default();
        act.tab = (i + 1) as u16;
        act.attributes
            .push(TcActionAttribute::Kind(kind.to_string()));
        act.attributes.push(TcActionAttribute::Options(options));
        if let (0, Some(c)) = (i, cookie) {
            act.attributes.push(TcActionAttribute::Cookie(c.to_vec()));
        }
        if act_flags != 0 {
            let mut bf = act_flags.to_ne_bytes().to_vec();
            bf.extend(act_flags.to_ne_bytes());
            act.attributes
                .push(TcActionAttribute::Other(DefaultNla::new(TCA_ACT_FLAGS, bf)));
        }
        out.push(act);
    }
    out
}

fn generic(action: TcActionType) -> TcActionGeneric {
    let mut g = TcActionGeneric::default();
    g.action = action;
    g
}

fn mirred(
    ifindex: IfIndex,
    eaction: TcMirrorActionType,
    action: TcActionType,
) -> Vec<TcActionOption> {
    let mut m = TcMirror::default();
    m.generic = generic(action);
    m.eaction = eaction;
    m.ifindex = ifindex.0;
    vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(m))]
}

fn encode_action(a: &FlowerAction) -> (&'static str, Vec<TcActionOption>) {
    use TcActionTunnelKeyOption as T;
    match *a {
        FlowerAction::TunnelSet(t) => {
            let parms = TcTunnelKey {
                generic: generic(TcActionType::Pipe),
                t_action: TCA_TUNNEL_KEY_ACT_SET,
            };
            let mut o = vec![T::Parms(parms)];
            match (t.src, t.dst) {
                (IpAddr::V6(_), _) | (_, IpAddr::V6(_)) => {
                    o.extend([T::EncIpv6Src(v6(t.src)), T::EncIpv6Dst(v6(t.dst))]);
                }
                _ => o.extend([T::EncIpv4Src(v4(t.src)), T::EncIpv4Dst(v4(t.dst))]),
            }
            o.push(T::EncKeyId(t.id));
            if t.dst_port != 0 {
                o.push(T::EncDstPort(t.dst_port));
            }
            o.push(T::NoCsum(!t.csum));
            if t.df {
                // A flag: no value.
                o.push(T::Other(DefaultNla::new(
                    ext::TCA_TUNNEL_KEY_NO_FRAG,
                    Vec::new(),
                )));
            }
            if t.tos != 0 {
                o.push(T::EncTos(t.tos));
            }
            if t.ttl != 0 {
                o.push(T::EncTtl(t.ttl));
            }
            (
                "tunnel_key",
                o.into_iter().map(TcActionOption::TunnelKey).collect(),
            )
        }
        FlowerAction::TunnelUnset => {
            let parms = TcTunnelKey {
                generic: generic(TcActionType::Pipe),
                t_action: TCA_TUNNEL_KEY_ACT_RELEASE,
            };
            (
                "tunnel_key",
                vec![TcActionOption::TunnelKey(T::Parms(parms))],
            )
        }
        FlowerAction::Redirect(dev) => (
            "mirred",
            mirred(dev, TcMirrorActionType::EgressRedir, TcActionType::Stolen),
        ),
        FlowerAction::Mirror(dev) => (
            "mirred",
            mirred(dev, TcMirrorActionType::EgressMirror, TcActionType::Pipe),
        ),
        FlowerAction::VlanPush { tpid, vid, prio } => {
            (ext::VLAN, ext::vlan(Some((tpid, vid, prio))))
        }
        FlowerAction::VlanPop => (ext::VLAN, ext::vlan(None)),
        FlowerAction::Drop => (ext::GACT, ext::gact_drop()),
        FlowerAction::SetMark(m) => (ext::SKBEDIT, ext::skbedit_mark(m)),
    }
}

fn tcf_last_used(tm: &Tcf) -> Option<u64> {
    // tcf_t is dumped relative to now in USER_HZ (1/100 s) ticks; firstuse 0 = never.
    (tm.firstuse != 0 || tm.lastuse < tm.install).then_some(tm.lastuse * 10)
}

/// A filter's actions, the first action's cookie, and the counters.
pub type DecodedActions = (Vec<FlowerAction>, Option<Vec<u8>>, RuleStats);

/// Decodes a filter's actions, their cookie and counters.
pub fn decode_actions(acts: &[TcAction]) -> Result<DecodedActions, DecodeError> {
    let mut out = Vec::with_capacity(acts.len());
    let mut cookie = None;
    let mut stats = RuleStats::default();
    let mut acts: Vec<&TcAction> = acts.iter().collect();
    acts.sort_by_key(|a| a.tab);
    for a in acts {
        let mut kind = None;
        let mut opts: &[TcActionOption] = &[];
        for attr in &a.attributes {
            match attr {
                TcActionAttribute::Kind(k) => kind = Some(k.as_str()),
                TcActionAttribute::Options(o) => opts = o,
                TcActionAttribute::Cookie(c) if cookie.is_none() => cookie = Some(c.clone()),
                TcActionAttribute::Stats(s) => {
                    for st in s {
                        match st {
                            TcStats2::Basic(b) => {
                                stats.packets = stats.packets.max(u64::from(b.packets));
                                stats.bytes = stats.bytes.max(b.bytes);
                            }
                            TcStats2::BasicHw(b) => {
                                stats.hw_packets = stats.hw_packets.max(u64::from(b.packets));
                                stats.hw_bytes = stats.hw_bytes.max(b.bytes);
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        let action = match kind {
            Some("tunnel_key") => decode_tunnel_key(opts)?,
            Some("mirred") => decode_mirred(opts)?,
            Some(ext::GACT) => ext::decode_gact(opts)?,
            Some(ext::VLAN) => ext::decode_vlan(opts)?,
            Some(ext::SKBEDIT) => ext::decode_skbedit(opts)?,
            Some(k) => return Err(DecodeError::from(format!("action kind {k} is not flowd's"))),
            None => return Err(DecodeError::from("action without kind")),
        };
        for o in opts {
            let tm = match o {
                TcActionOption::TunnelKey(TcActionTunnelKeyOption::Tm(tm)) => Some(tm),
                TcActionOption::Mirror(TcActionMirrorOption::Tm(tm)) => Some(tm),
                _ => None,
            };
            if let Some(used) = tm.and_then(tcf_last_used) {
                stats.last_used_ms_ago = Some(stats.last_used_ms_ago.map_or(used, |u| u.min(used)));
            }
        }
        out.push(action);
    }
    Ok((out, cookie, stats))
}

fn decode_tunnel_key(opts: &[TcActionOption]) -> Result<FlowerAction, DecodeError> {
    use TcActionTunnelKeyOption as T;
    let mut t_action = None;
    let mut t = TunnelKeySet {
        id: 0,
        src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dst_port: 0,
        tos: 0,
        ttl: 0,
        csum: true,
        df: false,
    };
    for o in opts {
        let TcActionOption::TunnelKey(o) = o else {
            continue;
        };
        if let T::Other(nla) = o
            && nla.kind() == ext::TCA_TUNNEL_KEY_NO_FRAG
        {
            t.df = true;
            continue;
        }
        match o {
            T::Parms(p) => t_action = Some(p.t_action),
            T::EncIpv4Src(a) => t.src = (*a).into(),
            T::EncIpv4Dst(a) => t.dst = (*a).into(),
            T::EncIpv6Src(a) => t.src = (*a).into(),
            T::EncIpv6Dst(a) => t.dst = (*a).into(),
            T::EncKeyId(k) => t.id = *k,
            T::EncDstPort(p) => t.dst_port = *p,
            T::EncTos(x) => t.tos = *x,
            T::EncTtl(x) => t.ttl = *x,
            T::NoCsum(n) => t.csum = !*n,
            _ => {}
        }
    }
    match t_action {
        Some(TCA_TUNNEL_KEY_ACT_SET) => Ok(FlowerAction::TunnelSet(t)),
        Some(TCA_TUNNEL_KEY_ACT_RELEASE) => Ok(FlowerAction::TunnelUnset),
        Some(a) => Err(DecodeError::from(format!(
            "tunnel_key action {a} not handled"
        ))),
        None => Err(DecodeError::from("tunnel_key without parms")),
    }
}

fn decode_mirred(opts: &[TcActionOption]) -> Result<FlowerAction, DecodeError> {
    for o in opts {
        if let TcActionOption::Mirror(TcActionMirrorOption::Parms(p)) = o {
            return match p.eaction {
                TcMirrorActionType::EgressRedir => Ok(FlowerAction::Redirect(IfIndex(p.ifindex))),
                TcMirrorActionType::EgressMirror => Ok(FlowerAction::Mirror(IfIndex(p.ifindex))),
                other => Err(DecodeError::from(format!("mirred {other:?} not handled"))),
            };
        }
    }
    Err(DecodeError::from("mirred without parms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emit(items: &[TcAction]) -> Vec<u8> {
        super::super::emitted(items)
    }

    fn parse(bytes: &[u8]) -> Result<Vec<TcAction>, DecodeError> {
        super::super::parsed(bytes)
    }

    /// `action gact drop`: one action (tab 1) of kind "gact" whose options (2, with
    /// NLA_F_NESTED) hold TCA_GACT_PARMS, a `struct tc_gen` with `action` TC_ACT_SHOT (2).
    #[rustfmt::skip]
    const GACT_DROP: [u8; 44] = [
        44, 0, 1, 0,
        9, 0, 1, 0,  b'g', b'a', b'c', b't', 0, 0, 0, 0,
        28, 0, 2, 0x80,
        24, 0, 2, 0,  0, 0, 0, 0,  0, 0, 0, 0,  2, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,
    ];

    #[test]
    fn gact_drop_is_byte_exact_and_decodes_back() {
        let bytes = emit(&encode_actions(&[FlowerAction::Drop], None, 0));
        assert_eq!(bytes, GACT_DROP);
        let (acts, cookie, _) = decode_actions(&parse(&bytes).unwrap()).unwrap();
        assert_eq!(acts, [FlowerAction::Drop]);
        assert_eq!(cookie, None);
    }

    /// The actions flowd builds by hand (`vlan`, `skbedit`, `gact`) and the ones
    /// netlink-packet-route models, with a cookie and `TCA_ACT_FLAGS`, round-trip in
    /// order through their bytes.
    #[test]
    fn every_action_round_trips_through_bytes() {
        let all = [
            FlowerAction::VlanPush {
                tpid: 0x88a8,
                vid: 100,
                prio: 3,
            },
            FlowerAction::VlanPop,
            FlowerAction::SetMark(0x1234_5678),
            FlowerAction::Mirror(IfIndex(4)),
            FlowerAction::TunnelUnset,
            FlowerAction::Redirect(IfIndex(7)),
            FlowerAction::Drop,
        ];
        let c = [7u8; 16];
        let bytes = emit(&encode_actions(&all, Some(c), ACT_FLAGS_NO_PERCPU_STATS));
        let (acts, cookie, stats) = decode_actions(&parse(&bytes).unwrap()).unwrap();
        assert_eq!(acts, all);
        assert_eq!(cookie.as_deref(), Some(&c[..]));
        assert_eq!(stats, RuleStats::default());
    }

    #[test]
    fn foreign_or_malformed_actions_are_decode_errors() {
        let other = |kind: u16, v: Vec<u8>| vec![TcActionOption::Other(DefaultNla::new(kind, v))];
        // gact with another verdict, or a short tc_gen.
        let mut pass = vec![0u8; 20];
        pass[8] = 0; // TC_ACT_OK
        assert!(ext::decode_gact(&other(2, pass)).is_err());
        assert!(ext::decode_gact(&other(2, vec![0; 6])).is_err());
        assert!(ext::decode_gact(&[]).is_err());
        // skbedit with a priority (not flowd's), or without a mark.
        assert!(ext::decode_skbedit(&other(3, vec![0; 4])).is_err());
        assert!(ext::decode_skbedit(&other(2, vec![0; 20])).is_err());
        // vlan with a modify action (3), or without parameters.
        let mut modify = vec![0u8; 24];
        modify[20] = 3;
        assert!(ext::decode_vlan(&other(2, modify)).is_err());
        assert!(ext::decode_vlan(&[]).is_err());
        // An action kind flowd never installs.
        let mut a = TcAction::default();
        a.attributes.push(TcActionAttribute::Kind("pedit".into()));
        assert!(decode_actions(&[a]).is_err());
        assert!(decode_actions(&[TcAction::default()]).is_err());
    }

    #[test]
    fn truncated_or_flipped_action_bytes_never_panic() {
        let all = [
            FlowerAction::VlanPush {
                tpid: 0x8100,
                vid: 5,
                prio: 0,
            },
            FlowerAction::SetMark(1),
            FlowerAction::Drop,
        ];
        let bytes = emit(&encode_actions(&all, Some([1; 16]), 1));
        for cut in 0..bytes.len() {
            if let Ok(acts) = parse(&bytes[..cut]) {
                let _ = decode_actions(&acts);
            }
        }
        let mut x: u32 = 7;
        for _ in 0..3000 {
            let mut b = bytes.clone();
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let i = (x as usize) % b.len();
            b[i] = (x >> 8) as u8;
            if let Ok(acts) = parse(&b) {
                let _ = decode_actions(&acts);
            }
        }
    }
}
