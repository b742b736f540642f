//! Checks of the configuration, each reported at the line of the value at fault:
//! numeric bounds of the keys, and each port's own rules. (Checks across items,
//! such as network members and rule duplicates, run where [`super::parse`] builds them.)

use super::parse::RawPort;
use super::*;
use std::ops::Range;

/// Upper bounds of the numeric keys: what the daemon can honour on a hypervisor (each
/// sizes something allocated up front, or a timer). Checked with the key's line.
pub mod limits {
    /// `[datapath] flow_limit`: megaflows.
    pub const FLOW_LIMIT: u64 = 16 << 20;
    /// `[datapath] max_idle_ms`: one day.
    pub const MAX_IDLE_MS: u64 = 86_400_000;
    /// `[datapath] upcall_queue`: packets waiting for the slow path.
    pub const UPCALL_QUEUE: u64 = 1 << 20;
    /// `[datapath] handler_threads`.
    pub const HANDLER_THREADS: u64 = 64;
    /// `[datapath] threads`: datapath threads (sockets in one port's fanout group).
    pub const THREADS: u64 = 64;
    /// `[datapath] batch`: frames per receive batch.
    pub const BATCH: u64 = 1024;
    /// `[datapath] ring_kib`: the smallest receive ring per port (64 frames of 2 KiB).
    pub const MIN_RING_KIB: u64 = 128;
    /// `[datapath] ring_kib`: the largest (256 MiB of pinned kernel memory per port).
    pub const MAX_RING_KIB: u64 = 256 << 10;
    /// `[offload] coalesce_ms` and `settle_ms`.
    pub const OFFLOAD_MS: u64 = 60_000;
    /// `[evpn] restart_grace_ms`: one day.
    pub const RESTART_GRACE_MS: u64 = 86_400_000;
}

/// The span of `key = ...` inside a section's span, for an error on that key's line (the
/// section's own span when the key is not written: a default is never out of range).
pub(super) fn key_span(errs: &Errors, section: &Range<usize>, key: &str) -> Range<usize> {
    // The section's table runs from its header to the next header (a dotted key or an
    // inline table stays on its lines too).
    let text = errs.text.get(section.start..).unwrap_or_default();
    let mut off = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let t = line.trim_start();
        if i > 0 && t.starts_with('[') {
            break;
        }
        if let Some(rest) = t.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            let at = section.start + off + (line.len() - t.len());
            return at..at + key.len();
        }
        off += line.len();
    }
    section.clone()
}

/// Reports `value` outside `min..=max` at `key`'s line.
pub(super) fn check_range(
    errs: &mut Errors,
    section: (&str, &Range<usize>),
    key: &str,
    value: u64,
    (min, max): (u64, u64),
) {
    if !(min..=max).contains(&value) {
        let at = key_span(errs, section.1, key);
        errs.at(
            at,
            format!("[{}] {key} = {value} out of range {min}..={max}", section.0),
        );
    }
}

pub(super) fn check_datapath(d: &DatapathConfig, at: Range<usize>, errs: &mut Errors) {
    let s = ("datapath", &at);
    check_range(
        errs,
        s,
        "flow_limit",
        d.flow_limit as u64,
        (1, limits::FLOW_LIMIT),
    );
    check_range(
        errs,
        s,
        "max_idle_ms",
        d.max_idle_ms,
        (1, limits::MAX_IDLE_MS),
    );
    check_range(
        errs,
        s,
        "upcall_queue",
        d.upcall_queue as u64,
        (1, limits::UPCALL_QUEUE),
    );
    check_range(
        errs,
        s,
        "handler_threads",
        d.handler_threads as u64,
        (1, limits::HANDLER_THREADS),
    );
    check_range(errs, s, "threads", d.threads as u64, (1, limits::THREADS));
    check_range(errs, s, "batch", d.batch as u64, (1, limits::BATCH));
    check_range(
        errs,
        s,
        "ring_kib",
        d.ring_kib as u64,
        (limits::MIN_RING_KIB, limits::MAX_RING_KIB),
    );
    check_range(
        errs,
        s,
        "mac_table_size",
        d.mac_table_size as u64,
        (1, MAX_MAC_TABLE_SIZE as u64),
    );
}

pub(super) fn check_offload(o: &OffloadConfig, at: Range<usize>, errs: &mut Errors) {
    let s = ("offload", &at);
    if let Some(q) = o.queue {
        check_range(errs, s, "queue", q as u64, (1, MAX_OFFLOAD_QUEUE as u64));
    }
    if let Some(c) = o.sim_capacity {
        check_range(
            errs,
            s,
            "sim_capacity",
            c as u64,
            (1, MAX_SIM_CAPACITY as u64),
        );
    }
    for (key, v) in [("coalesce_ms", o.coalesce_ms), ("settle_ms", o.settle_ms)] {
        if let Some(v) = v {
            check_range(errs, s, key, v, (0, limits::OFFLOAD_MS));
        }
    }
}

pub(super) fn check_evpn_section(e: &EvpnConfig, at: Range<usize>, errs: &mut Errors) {
    if e.udp_port == 4789 || e.udp_port == 0 {
        let span = key_span(errs, &at, "udp_port");
        errs.at(
            span,
            "[evpn] udp_port must not be 0 or 4789: the shadow vxlan devices must never take data traffic",
        );
    }
    check_range(
        errs,
        ("evpn", &at),
        "restart_grace_ms",
        e.restart_grace_ms,
        (0, limits::RESTART_GRACE_MS),
    );
}

/// Names, explicit ids and the tunnel port seen so far, with where.
#[derive(Default)]
pub(super) struct SeenPorts<'a> {
    names: HashMap<&'a str, Range<usize>>,
    pub(super) ids: HashMap<u32, Range<usize>>,
    tunnel: Option<Range<usize>>,
}

/// One port's checks: its name, id, `vf`, `mtu`, and at most one tunnel port.
pub(super) fn check_port<'a>(p: &'a RawPort, seen: &mut SeenPorts<'a>, errs: &mut Errors) {
    let name = p.name.get_ref().as_str();
    if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\t']) {
        errs.at(
            p.name.span(),
            format!(
                "bad port name `{name}`: a netdev name has 1 to 15 characters, no `/` or spaces"
            ),
        );
    }
    if let Some(first) = seen.names.insert(name, p.name.span()) {
        let l = errs.line(first.start);
        errs.at(
            p.name.span(),
            format!("duplicate port name `{name}` (first on line {l})"),
        );
    }
    if let Some(id) = &p.id {
        if *id.get_ref() == 0 {
            errs.at(id.span(), "port id 0 is reserved; use 1 or more");
        } else if let Some(first) = seen.ids.insert(*id.get_ref(), id.span()) {
            let l = errs.line(first.start);
            errs.at(
                id.span(),
                format!("duplicate port id {} (first on line {l})", id.get_ref()),
            );
        }
    }
    if let Some(vf) = &p.vf
        && p.role != PortRole::Representor
    {
        errs.at(
            vf.span(),
            format!(
                "`vf` is only for representors, and port `{name}` is {}",
                p.role.with_article()
            ),
        );
    }
    if let Some(mtu) = &p.mtu
        && !(MIN_MTU..=MAX_MTU).contains(mtu.get_ref())
    {
        errs.at(
            mtu.span(),
            format!("mtu {} out of range {MIN_MTU}..={MAX_MTU}", mtu.get_ref()),
        );
    }
    if let Some(r) = &p.ring_kib {
        let (min, max) = (limits::MIN_RING_KIB, limits::MAX_RING_KIB);
        if !(min..=max).contains(&(*r.get_ref() as u64)) {
            errs.at(
                r.span(),
                format!("ring_kib {} out of range {min}..={max}", r.get_ref()),
            );
        }
    }
    if p.role == PortRole::Tunnel {
        if let Some(first) = &seen.tunnel {
            let l = errs.line(first.start);
            errs.at(p.name.span(), format!("a second tunnel port `{name}`: flowd uses one tunnel device (first on line {l})"));
        }
        seen.tunnel.get_or_insert(p.name.span());
    }
}
