//! Allocation-free verification of an echoed filter (NLM_F_ECHO) against the request
//! that created it, straight on the bytes.
//!
//! Decoding every echo into netlink-packet-route's object tree costs more than the
//! kernel's own insert (measured in the VM), so creates are checked here instead: the
//! header (device, handle, priority, protocol), every flower key attribute (value and
//! mask bytes, as a multiset), the policy flags, and per action its kind, cookie and
//! parameters. What the kernel adds (action index, counters, timestamps, padding,
//! in_hw flags) is skipped. Any difference is a failed offload. Malformed input is a
//! mismatch, never a panic.

use crate::backend::HwState;
use crate::netlink::cls_flags;
use netlink_packet_core::{DecodeError, NLA_HEADER_SIZE, NlasIterator};

const TC_HDR: usize = 20;
const NL_HDR: usize = 16;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_FLOWER_ACT: u16 = 3;
const TCA_FLOWER_KEY_ETH_TYPE: u16 = 8;
const TCA_FLOWER_FLAGS: u16 = 22;
const TCA_FLOWER_IN_HW_COUNT: u16 = 86;
const TCA_ACT_KIND: u16 = 1;
const TCA_ACT_OPTIONS: u16 = 2;
const TCA_ACT_COOKIE: u16 = 6;
const MAX_ATTRS: usize = 96;

/// The attributes of a nested attribute payload, (type, value), through
/// netlink-packet-core's [`NlasIterator`] (no allocation; a malformed attribute ends
/// the walk with an error).
fn nlas(b: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), DecodeError>> {
    NlasIterator::new(b).map(|nla| {
        let nla = nla?;
        let (kind, len) = (nla.kind(), usize::from(nla.length()));
        let bytes: &[u8] = nla.into_inner();
        Ok((kind, &bytes[NLA_HEADER_SIZE..len]))
    })
}

fn find(b: &[u8], ty: u16) -> Option<&[u8]> {
    nlas(b)
        .filter_map(Result::ok)
        .find(|(t, _)| *t == ty)
        .map(|x| x.1)
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// A fixed-capacity sorted list of attributes.
struct AttrSet<'a> {
    items: [(u16, &'a [u8]); MAX_ATTRS],
    n: usize,
}

impl<'a> AttrSet<'a> {
    fn new() -> Self {
        Self {
            items: [(0, &[]); MAX_ATTRS],
            n: 0,
        }
    }
    fn push(&mut self, t: u16, v: &'a [u8]) -> Result<(), String> {
        let slot = self.items.get_mut(self.n).ok_or("too many attributes")?;
        *slot = (t, v);
        self.n += 1;
        Ok(())
    }
    fn sorted(mut self) -> Self {
        self.items[..self.n].sort_unstable();
        self
    }
    fn same(&self, o: &Self) -> bool {
        self.items[..self.n] == o.items[..o.n]
    }
    /// The attribute types present in one set and not in the other, or with another
    /// value (for the mismatch message).
    fn differences(&self, o: &Self) -> Vec<u16> {
        let (a, b) = (&self.items[..self.n], &o.items[..o.n]);
        let mut d: Vec<u16> = a
            .iter()
            .filter(|x| !b.contains(x))
            .chain(b.iter().filter(|x| !a.contains(x)))
            .map(|x| x.0)
            .collect();
        d.sort_unstable();
        d.dedup();
        d
    }
}

struct Filter<'a> {
    hdr: &'a [u8],
    opts: &'a [u8],
}

fn filter(msg: &[u8]) -> Result<Filter<'_>, String> {
    let hdr = msg.get(NL_HDR..NL_HDR + TC_HDR).ok_or("short message")?;
    let attrs = msg.get(NL_HDR + TC_HDR..).ok_or("short message")?;
    if find(attrs, TCA_KIND) != Some(b"flower\0") {
        return Err("not a flower filter".into());
    }
    let opts = find(attrs, TCA_OPTIONS).ok_or("no options")?;
    Ok(Filter { hdr, opts })
}

/// Why an echo does not match its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// The one difference: `tunnel_key`'s `nofrag` flag is missing from the echo. A
    /// kernel without it (6.1, for one) accepts the attribute and ignores it (the packets
    /// would leave without DF): the backend stops asking for it.
    NoFragIgnored,
    /// Anything else.
    Other(String),
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mismatch::NoFragIgnored => f.write_str("the kernel ignored tunnel_key nofrag"),
            Mismatch::Other(s) => f.write_str(s),
        }
    }
}

impl From<String> for Mismatch {
    fn from(s: String) -> Self {
        Mismatch::Other(s)
    }
}

impl From<&str> for Mismatch {
    fn from(s: &str) -> Self {
        Mismatch::Other(s.into())
    }
}

/// Verifies an echoed `RTM_NEWTFILTER` against the request; returns the hardware
/// state the kernel reported.
pub fn verify(request: &[u8], echo: &[u8]) -> Result<HwState, Mismatch> {
    let rq = filter(request)?;
    let ec = filter(echo)?;
    // tcm_ifindex, tcm_handle, tcm_info (the parent is reported in its own form).
    if rq.hdr[4..12] != ec.hdr[4..12] || rq.hdr[16..20] != ec.hdr[16..20] {
        return Err("device, handle, priority or protocol differ".into());
    }
    let protocol = u16::from_be_bytes([rq.hdr[18], rq.hdr[19]]);
    let vlan = matches!(protocol, 0x8100 | 0x88a8);
    let (mut keys_rq, mut keys_ec) = (AttrSet::new(), AttrSet::new());
    let (mut flags_rq, mut flags_ec, mut hw_count) = (0u32, 0u32, None);
    let (mut acts_rq, mut acts_ec) = (None, None);
    for (opts, keys, flags, acts) in [
        (rq.opts, &mut keys_rq, &mut flags_rq, &mut acts_rq),
        (ec.opts, &mut keys_ec, &mut flags_ec, &mut acts_ec),
    ] {
        for a in nlas(opts) {
            let (t, v) = a.map_err(|_| "malformed flower options")?;
            match t {
                TCA_FLOWER_ACT => *acts = Some(v),
                TCA_FLOWER_FLAGS => *flags = u32_at(v, 0).ok_or("short flags")?,
                TCA_FLOWER_IN_HW_COUNT => hw_count = u32_at(v, 0),
                // For VLAN filters the kernel reports the inner ethertype here.
                TCA_FLOWER_KEY_ETH_TYPE if vlan => {}
                _ => keys.push(t, v)?,
            }
        }
    }
    if !keys_rq.sorted().same(&keys_ec.sorted()) {
        return Err("flower keys differ".into());
    }
    let policy = cls_flags::SKIP_HW | cls_flags::SKIP_SW;
    if flags_rq & policy != flags_ec & policy {
        return Err("skip_hw/skip_sw flags differ".into());
    }
    verify_actions(acts_rq.unwrap_or(&[]), acts_ec.unwrap_or(&[]))?;
    Ok(if flags_ec & cls_flags::IN_HW != 0 {
        HwState::InHw {
            count: hw_count.unwrap_or(1),
        }
    } else if flags_ec & cls_flags::NOT_IN_HW != 0 {
        HwState::NotInHw
    } else {
        HwState::Unknown
    })
}

fn verify_actions(rq: &[u8], ec: &[u8]) -> Result<(), Mismatch> {
    let mut a = nlas(rq);
    let mut b = nlas(ec);
    loop {
        match (a.next(), b.next()) {
            (None, None) => return Ok(()),
            (Some(Ok((ta, va))), Some(Ok((tb, vb)))) if ta == tb => verify_action(va, vb)?,
            _ => return Err("action lists differ".into()),
        }
    }
}

/// Which option attributes carry the action's meaning, and the offsets in its
/// `*_PARMS` struct to compare (tc_gen's `action` at 8, then the action's own).
fn action_shape(kind: &[u8]) -> Option<(&'static [u16], &'static [usize])> {
    match kind {
        // TCA_TUNNEL_KEY_PARMS (2), ENC_* (3..=7), DST_PORT (9), NO_CSUM (10), TOS/TTL
        // (12, 13), NO_FRAG (14: a kernel that ignores it echoes none, a mismatch).
        b"tunnel_key\0" => Some((&[3, 4, 5, 6, 7, 9, 10, 12, 13, 14], &[8, 20])),
        // TCA_MIRRED_PARMS: action, eaction, ifindex.
        b"mirred\0" => Some((&[], &[8, 20, 24])),
        b"gact\0" => Some((&[], &[8])),
        // TCA_VLAN_PARMS v_action; PUSH_VLAN_ID (3), PROTOCOL (4).
        b"vlan\0" => Some((&[3, 4], &[8, 20])),
        // TCA_SKBEDIT_PARMS; MARK (5), MASK (8).
        b"skbedit\0" => Some((&[5, 8], &[8])),
        _ => None,
    }
}

fn verify_action(rq: &[u8], ec: &[u8]) -> Result<(), Mismatch> {
    let kind = find(rq, TCA_ACT_KIND).ok_or("action without kind")?;
    if find(ec, TCA_ACT_KIND) != Some(kind) {
        return Err("action kinds differ".into());
    }
    if find(rq, TCA_ACT_COOKIE) != find(ec, TCA_ACT_COOKIE) {
        return Err("action cookies differ".into());
    }
    let (attrs, parms) = action_shape(kind).ok_or("unknown action kind")?;
    let o_rq = find(rq, TCA_ACT_OPTIONS).unwrap_or(&[]);
    let o_ec = find(ec, TCA_ACT_OPTIONS).unwrap_or(&[]);
    let p_rq = find(o_rq, 2).ok_or("action without parms")?;
    let p_ec = find(o_ec, 2).ok_or("echoed action without parms")?;
    for off in parms {
        if u32_at(p_rq, *off) != u32_at(p_ec, *off) {
            return Err(format!("action parms differ at {off}").into());
        }
    }
    let (m_rq, m_ec) = (meaningful(o_rq, attrs)?, meaningful(o_ec, attrs)?);
    if !m_rq.same(&m_ec) {
        let diff = m_rq.differences(&m_ec);
        if kind == b"tunnel_key\0"
            && diff == [crate::netlink::ext::TCA_TUNNEL_KEY_NO_FRAG]
            && find(o_ec, crate::netlink::ext::TCA_TUNNEL_KEY_NO_FRAG).is_none()
        {
            return Err(Mismatch::NoFragIgnored);
        }
        return Err(format!("action parameters differ (attributes {diff:?})").into());
    }
    Ok(())
}

fn meaningful<'a>(opts: &'a [u8], attrs: &[u16]) -> Result<AttrSet<'a>, String> {
    let mut s = AttrSet::new();
    for a in nlas(opts) {
        let (t, v) = a.map_err(|_| "malformed action options")?;
        if attrs.contains(&t) {
            s.push(t, v)?;
        }
    }
    Ok(s.sorted())
}
