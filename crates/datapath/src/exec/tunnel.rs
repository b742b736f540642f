//! VXLAN output: the route to the remote VTEP (an uplink, or the kernel's IP output on a
//! path IPsec protects), the outer headers, encapsulation of a complete frame into the
//! uplink's batch, and the answers to a frame too big for the path (ICMP reply to the
//! in-port, fragmentation, or a drop). Super-frames go on to [`super::segment`].

use super::segment::encap_super;
use super::{Cur, ExecEnv, ExecStats, Executor, Packet, PacketSink, Sent, cur_bytes};
use crate::PortId;
use crate::actions::TunnelAttrs;
use crate::port::mark_mac;
use crate::tunnel::{TunnelRoute, Unroutable, Via};
use crate::wire::gso;
use crate::wire::pmtu::{self, TooBig};
use crate::wire::vxlan::{self, OuterHeaders};
use crate::wire::{L2Info, Offload};
use std::net::IpAddr;

impl Executor {
    /// VXLAN-encapsulates the current packet toward `t.dst` into the egress uplink's
    /// transmit batch; see the module documentation for super-frames, partial checksums
    /// and frames too big for the path.
    #[inline]
    pub(super) fn tunnel_output(
        &mut self,
        pkt: Packet<'_>,
        cur: &mut Cur,
        t: &TunnelAttrs,
        env: &ExecEnv<'_>,
        sink: &mut dyn PacketSink,
    ) {
        let Some(path) = self.path(t, env, pkt.flow_hash) else {
            return;
        };
        if cur.offload.gso.is_some() {
            // The packet may live in `scratch`; segments go to the sink.
            let inner = cur_bytes(&self.scratch, pkt.frame, *cur);
            let mut ids = self.ip_id;
            let received = pkt.frame;
            let sent = encap_super(
                Packets { received, inner },
                cur.offload,
                &path,
                env,
                sink,
                &mut ids,
                &mut self.stats,
            );
            self.ip_id = ids;
            if let Some(s) = sent {
                self.count(s);
            }
            return;
        }
        // The inner packet that fits the path: the path MTU less the outer IP, UDP and
        // VXLAN headers (its Ethernet header is not counted in the MTU).
        let inner_len = cur_bytes(&self.scratch, pkt.frame, *cur).len();
        if inner_len + path.overhead - 14 > usize::from(path.route.mtu) {
            self.tunnel_too_big(pkt, cur, &path, env, sink);
            return;
        }
        let outer = OuterHeaders {
            ident: self.next_ip_id(),
            ..path.outer
        };
        let csum = cur.offload.csum;
        let inner = cur_bytes(&self.scratch, pkt.frame, *cur);
        let sent = send_encapsulated(inner, csum, &outer, path.route.egress, sink);
        if csum.is_some() && sent == Sent::Yes {
            self.stats.csum_completed += 1;
        }
        self.count(sent);
    }

    /// Where a tunnel output toward `t.dst` goes: the route (an uplink, or the tunnel
    /// port's kernel I/O on a path IPsec protects) and the outer headers (the IPv4
    /// identification left 0, the UDP source port from `flow_hash`). None, counted, if
    /// there is no usable route.
    #[inline]
    fn path(&mut self, t: &TunnelAttrs, env: &ExecEnv<'_>, flow_hash: u32) -> Option<Path> {
        let route = match env.resolver.resolve(&t.lookup_key()) {
            Ok(r) => r,
            Err(why) => {
                *match why {
                    Unroutable::NextHopUnresolved => &mut self.stats.next_hop_unresolved,
                    Unroutable::NotManaged => &mut self.stats.not_managed,
                    Unroutable::IpsecBlocked => &mut self.stats.ipsec_blocked,
                    _ => &mut self.stats.no_route,
                } += 1;
                return None;
            }
        };
        // A protected path goes through the kernel: the tunnel port's kernel I/O sends
        // the VXLAN payload from the outer source with the mark the Ethernet header
        // carries.
        let route = match route.via {
            Via::Uplink => route,
            Via::Kernel { sa } => {
                let Some(tport) = env.tunnel_port else {
                    self.stats.invalid += 1;
                    return None;
                };
                self.stats.kernel_out += 1;
                if !sa {
                    self.stats.ipsec_no_sa += 1;
                }
                TunnelRoute {
                    egress: tport,
                    src_mac: [0; 6],
                    dst_mac: mark_mac(t.mark),
                    ..route
                }
            }
        };
        let overhead = match t.dst {
            IpAddr::V4(_) => vxlan::VXLAN_OVERHEAD_V4,
            IpAddr::V6(_) => vxlan::VXLAN_OVERHEAD_V6,
        };
        let outer = OuterHeaders {
            src_mac: route.src_mac,
            dst_mac: route.dst_mac,
            src_ip: t.src.unwrap_or(route.src_ip),
            dst_ip: t.dst,
            tos: t.tos,
            ttl: if t.ttl == 0 { 64 } else { t.ttl },
            df: t.df,
            ident: 0,
            udp_src: vxlan::source_port(flow_hash),
            udp_dst: t.tp_dst,
            vni: t.vni,
            udp_csum: t.csum,
        };
        Some(Path {
            route,
            overhead,
            outer,
        })
    }

    /// A complete frame (or one with a partial checksum) too big for `path`: counted,
    /// its checksum completed (fragments and replies are built from a complete frame),
    /// then answered, fragmented or dropped ([`too_big`]).
    fn tunnel_too_big(
        &mut self,
        pkt: Packet<'_>,
        cur: &mut Cur,
        path: &Path,
        env: &ExecEnv<'_>,
        sink: &mut dyn PacketSink,
    ) {
        self.stats.encap_too_big += 1;
        if let Some(c) = cur.offload.csum {
            let n = self.make_mut(pkt.frame, cur.len);
            if gso::complete_checksum(&mut self.scratch[..n], c).is_err() {
                self.stats.offload_invalid += 1;
                return;
            }
            self.stats.csum_completed += 1;
            *cur = Cur {
                len: Some(n),
                offload: Offload::NONE,
            };
        }
        let outer = OuterHeaders {
            ident: self.next_ip_id(),
            ..path.outer
        };
        let inner = cur_bytes(&self.scratch, pkt.frame, *cur);
        let pkts = Packets {
            received: pkt.frame,
            inner,
        };
        too_big(
            pkts,
            &path.route,
            path.overhead,
            &outer,
            env,
            sink,
            &mut self.frag_scratch,
            &mut self.stats,
        );
    }
}

/// Where a tunnel output goes.
pub(super) struct Path {
    pub(super) route: TunnelRoute,
    /// Outer headers' length (50 or 70).
    pub(super) overhead: usize,
    /// The outer headers (the IPv4 identification filled per packet).
    pub(super) outer: OuterHeaders,
}

/// The packet being encapsulated, as received and as it is now.
#[derive(Clone, Copy)]
pub(super) struct Packets<'a> {
    /// The frame as it came in on the in-port (ICMP replies are built from it).
    pub(super) received: &'a [u8],
    /// The frame after the actions so far (what goes into the tunnel).
    pub(super) inner: &'a [u8],
}

/// Encapsulates a complete frame (or one whose checksum `csum` is partial, completed in
/// the copy) into the egress uplink's batch.
#[inline]
fn send_encapsulated(
    inner: &[u8],
    csum: Option<crate::wire::PartialCsum>,
    outer: &OuterHeaders,
    egress: PortId,
    sink: &mut dyn PacketSink,
) -> Sent {
    let mut failed = false;
    let len = inner.len() + vxlan::VXLAN_OVERHEAD_V6;
    let fill = &mut |slot: &mut [u8]| {
        vxlan::encapsulate_completing(inner, csum, outer, slot).unwrap_or_else(|_| {
            failed = true;
            0
        })
    };
    match (sink.send_with(egress, len, Offload::NONE, fill), failed) {
        (true, _) => Sent::Yes,
        (false, true) => Sent::Invalid,
        (false, false) => Sent::Refused,
    }
}

/// Handles a frame too big for the tunnel path: replies with ICMP to the in-port,
/// fragments, or drops (already counted in `encap_too_big`).
#[allow(clippy::too_many_arguments)]
fn too_big(
    pkts: Packets<'_>,
    route: &TunnelRoute,
    overhead: usize,
    outer: &OuterHeaders,
    env: &ExecEnv<'_>,
    sink: &mut dyn PacketSink,
    frag_scratch: &mut [u8],
    stats: &mut ExecStats,
) {
    // The inner frame may be route.mtu - (overhead - 14) bytes; its IP packet that much
    // less its Ethernet header and tags.
    let Ok(l2) = L2Info::parse(pkts.inner) else {
        return;
    };
    let mtu = (u32::from(route.mtu) + 14)
        .saturating_sub(overhead as u32)
        .saturating_sub(l2.l3_offset as u32);
    match pmtu::too_big_action(pkts.inner) {
        TooBig::Reply => send_reply(pkts, mtu, env, sink, stats),
        TooBig::Fragment => {
            let mut outcome = Sent::Yes;
            let mut outer = *outer;
            let n = pmtu::fragment_ipv4(pkts.inner, mtu, frag_scratch, &mut |f| {
                outcome = send_encapsulated(f, None, &outer, route.egress, sink);
                outer.ident = outer.ident.wrapping_add(1);
                outcome == Sent::Yes
            });
            if n == 0 && outcome == Sent::Yes {
                return; // could not be fragmented: dropped
            }
            stats.fragmented += 1;
            match outcome {
                Sent::Yes => stats.outputs += 1,
                Sent::Invalid => stats.invalid += 1,
                Sent::Refused => stats.sink_drops += 1,
            }
        }
        TooBig::Drop => {}
    }
}

/// Answers a super-frame whose segments do not fit the path as a too-big packet of
/// the segment size: an ICMP reply to the in-port (IPv4 with DF, IPv6), or a drop.
pub(super) fn reply_too_big(
    pkts: Packets<'_>,
    path: &Path,
    env: &ExecEnv<'_>,
    sink: &mut dyn PacketSink,
    stats: &mut ExecStats,
) {
    if pmtu::too_big_action(pkts.inner) != TooBig::Reply {
        return;
    }
    let Ok(l2) = L2Info::parse(pkts.inner) else {
        return;
    };
    let mtu = (u32::from(path.route.mtu) + 14)
        .saturating_sub(path.overhead as u32)
        .saturating_sub(l2.l3_offset as u32);
    send_reply(pkts, mtu, env, sink, stats);
}

/// Sends the ICMP too-big reply to `pkts.received` announcing `mtu` out of the in-port.
fn send_reply(
    pkts: Packets<'_>,
    mtu: u32,
    env: &ExecEnv<'_>,
    sink: &mut dyn PacketSink,
    stats: &mut ExecStats,
) {
    let Some(port) = env.in_port.filter(|&p| Some(p) != env.tunnel_port) else {
        return;
    };
    let mut built = false;
    let fill = &mut |slot: &mut [u8]| {
        let n = pmtu::too_big_reply(pkts.received, mtu, slot);
        built = n != 0;
        n
    };
    // The reply's IP datagram is at most 1280 bytes, behind Ethernet and two tags.
    let len = pmtu::IPV6_MAX_ERROR_LEN + 64;
    if sink.send_with(port, len, Offload::NONE, fill) {
        stats.too_big_replies += 1;
    } else if built {
        stats.sink_drops += 1;
    }
}
