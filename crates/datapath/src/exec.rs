//! Executing a flow's actions on one packet in software.
//!
//! [`Executor::execute`] walks the action list over a frame. The frame is read in place
//! until an action modifies it (push/pop VLAN), at which point it is copied once into the
//! executor's scratch buffer (allocated once, reused). Outputs go to a [`PacketSink`]
//! (the datapath's per-port transmit batches); an output to the tunnel port is a VXLAN
//! encapsulation written straight into the egress uplink's batch slot.
//!
//! Encapsulation asks the [`TunnelResolver`] for the egress uplink, source IP and MACs.
//! On a path the host's IPsec policy protects ([`Via::Kernel`]) the frame goes to the
//! tunnel port instead, whose I/O hands it to the kernel's IP output
//! ([`KernelTunnel`](crate::port::KernelTunnel)); a path whose policy blocks is dropped
//! and counted (`ipsec_blocked`); nothing on a protected path is ever written to an
//! uplink.
//! A packet whose encapsulated size would exceed the path MTU is answered the way a
//! router answers a packet too big for its next link (see [`crate::wire::pmtu`]):
//!
//! - IPv4 with DF, and IPv6: an ICMP "fragmentation needed" / ICMPv6 "packet too big"
//!   carrying the inner MTU that fits goes back out of the port the packet came in on
//!   ([`ExecEnv::in_port`]), so the sender's path MTU discovery learns it;
//! - IPv4 without DF: the packet is fragmented and each fragment encapsulated;
//! - anything else (not IP, malformed, or a packet ICMP must not answer): dropped.
//!
//! All three count `encap_too_big`; replies count `too_big_replies`, fragmented packets
//! `fragmented`. Without an answer, a VM whose MTU is larger than the tunnel allows
//! would see its large packets vanish and its TCP connections hang (a PMTU black hole):
//! no router sits between the VM and the tunnel to send the ICMP error. The kernel's own
//! bridged VXLAN answers such packets the same way (since 2020; Linux 5.10 has it). The
//! representor MTU rule (representor MTU + 50 <= uplink MTU, checked at offload time)
//! still keeps this path rare; `encap_too_big` shows when it is not.
//!
//! The reported MTU is the largest inner IP packet that fits: the path MTU less the
//! outer IP, UDP and VXLAN headers and the inner Ethernet header and VLAN tags (1450 for
//! an untagged frame over a 1500-byte IPv4 path). The reply is built from the frame as
//! received, so it carries the VLAN tags of the port it goes back to, not those actions
//! pushed or popped. Neither replies nor fragments allocate: a reply is written straight
//! into the in-port's transmit slot, fragments are built in a second scratch buffer and
//! encapsulated into the uplink's slots.

use crate::PortId;
use crate::actions::{Action, TunnelAttrs};
use crate::port::mark_mac;
use crate::tunnel::{TunnelResolver, TunnelRoute, Unroutable, Via};
use crate::wire::L2Info;
use crate::wire::pmtu::{self, TooBig};
use crate::wire::vxlan::{self, OuterHeaders};
use std::net::IpAddr;

/// Where executed packets go.
pub trait PacketSink {
    /// Queues a copy of `frame` for transmission on `port`; false if it was dropped.
    fn send(&mut self, port: PortId, frame: &[u8]) -> bool;
    /// Queues a frame that `fill` writes into a buffer of at least the port's frame
    /// size, returning its length (0: nothing to send); false if it was dropped.
    fn send_with(&mut self, port: PortId, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> bool;
}

/// What an execution needs besides the packet.
pub struct ExecEnv<'a> {
    /// Resolves remote VTEPs to routes.
    pub resolver: &'a dyn TunnelResolver,
    /// The VXLAN tunnel port: outputs to it encapsulate.
    pub tunnel_port: Option<PortId>,
    /// The port the packet came in on (its flow key's `in_port`): ICMP errors about it
    /// go back there. `None`, or the tunnel port (a decapsulated packet: flowd does not
    /// encapsulate replies back to the remote VTEP), means there is nowhere to answer.
    pub in_port: Option<PortId>,
}

/// Per-executor drop counters (read by the datapath's statistics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecStats {
    /// Packets output (each output counts once).
    pub outputs: u64,
    /// Outputs the sink refused (transmit batch full, unknown port).
    pub sink_drops: u64,
    /// Tunnel outputs with no usable route to the remote VTEP.
    pub no_route: u64,
    /// Tunnel outputs held back while the next hop's MAC is being resolved.
    pub next_hop_unresolved: u64,
    /// Tunnel outputs whose path leaves by an interface flowd does not manage.
    pub not_managed: u64,
    /// Tunnel outputs dropped because the host's IPsec policy blocks their path.
    pub ipsec_blocked: u64,
    /// Tunnel outputs handed to the kernel's IP output (IPsec protects their path).
    pub kernel_out: u64,
    /// Of those, outputs on a path whose policy has no SA yet: the kernel drops them
    /// (and asks its key manager for an SA); never sent in clear.
    pub ipsec_no_sa: u64,
    /// Tunnel outputs whose encapsulated packet exceeded the path MTU (whether then
    /// answered, fragmented or dropped).
    pub encap_too_big: u64,
    /// ICMP "fragmentation needed" / ICMPv6 "packet too big" replies sent back to the
    /// in-port for too-big packets.
    pub too_big_replies: u64,
    /// Too-big IPv4 packets without DF that were fragmented before encapsulation (once
    /// per packet, however many fragments).
    pub fragmented: u64,
    /// Outputs to the tunnel port with no tunnel set, or malformed frames.
    pub invalid: u64,
    /// `userspace` actions executed.
    pub userspace: u64,
}

/// Largest frame the scratch buffer holds (a 64 KiB GSO frame plus tags).
const SCRATCH: usize = 65_536 + 64;

/// Runs action lists; one per datapath thread.
#[derive(Debug)]
pub struct Executor {
    scratch: Vec<u8>,
    /// Where fragments are built: the packet being fragmented may be in `scratch`.
    frag_scratch: Vec<u8>,
    /// Drop and output counters.
    pub stats: ExecStats,
}

impl Default for Executor {
    fn default() -> Self {
        Self::new()
    }
}

impl Executor {
    /// An executor with its scratch buffer allocated.
    pub fn new() -> Self {
        Self {
            scratch: vec![0; SCRATCH],
            frag_scratch: vec![0; SCRATCH],
            stats: ExecStats::default(),
        }
    }

    /// Executes `actions` on `frame`; the hash of its flow key, `key_hash`, seeds the VXLAN
    /// source port. Returns true if a `userspace` action asked for the slow path.
    pub fn execute(
        &mut self,
        frame: &[u8],
        key_hash: u64,
        actions: &[Action],
        env: &ExecEnv<'_>,
        sink: &mut dyn PacketSink,
    ) -> bool {
        // `len == None`: the packet is still `frame`; `Some(n)`: it is scratch[..n].
        let mut len: Option<usize> = None;
        let mut tunnel: Option<TunnelAttrs> = None;
        let mut to_userspace = false;
        for action in actions {
            match *action {
                Action::Output(port) => {
                    let pkt = match len {
                        Some(n) => &self.scratch[..n],
                        None => frame,
                    };
                    if Some(port) == env.tunnel_port {
                        match tunnel {
                            Some(t) => {
                                let pkts = Packets {
                                    received: frame,
                                    inner: pkt,
                                };
                                let frag = &mut self.frag_scratch;
                                encap(pkts, &t, key_hash, env, sink, frag, &mut self.stats);
                            }
                            None => self.stats.invalid += 1,
                        }
                    } else if sink.send(port, pkt) {
                        self.stats.outputs += 1;
                    } else {
                        self.stats.sink_drops += 1;
                    }
                }
                Action::PushVlan { tpid, tci } => {
                    let n = self.make_mut(frame, len);
                    match push_vlan(&mut self.scratch, n, tpid, tci) {
                        Some(n) => len = Some(n),
                        None => {
                            self.stats.invalid += 1;
                            return to_userspace;
                        }
                    }
                }
                Action::PopVlan => {
                    let n = self.make_mut(frame, len);
                    len = Some(pop_vlan(&mut self.scratch, n));
                }
                Action::SetTunnel(t) => tunnel = Some(t),
                Action::Userspace => {
                    self.stats.userspace += 1;
                    to_userspace = true;
                }
            }
        }
        to_userspace
    }

    /// Copies `frame` into scratch if it is not there yet; returns its length.
    fn make_mut(&mut self, frame: &[u8], len: Option<usize>) -> usize {
        match len {
            Some(n) => n,
            None => {
                let n = frame.len().min(self.scratch.len() - 4);
                self.scratch[..n].copy_from_slice(&frame[..n]);
                n
            }
        }
    }
}

/// Inserts an 802.1Q/802.1ad tag after the MAC addresses. None if the frame is too short
/// or too long for the buffer.
fn push_vlan(buf: &mut [u8], len: usize, tpid: u16, tci: u16) -> Option<usize> {
    if len < 12 || len + 4 > buf.len() {
        return None;
    }
    buf.copy_within(12..len, 16);
    buf[12..14].copy_from_slice(&tpid.to_be_bytes());
    buf[14..16].copy_from_slice(&tci.to_be_bytes());
    Some(len + 4)
}

/// Removes the outermost VLAN tag, if the frame has one.
fn pop_vlan(buf: &mut [u8], len: usize) -> usize {
    let tagged = len >= 18 && matches!(u16::from_be_bytes([buf[12], buf[13]]), 0x8100 | 0x88a8);
    if !tagged {
        return len;
    }
    buf.copy_within(16..len, 12);
    len - 4
}

/// The packet being encapsulated, as received and as it is now.
#[derive(Clone, Copy)]
struct Packets<'a> {
    /// The frame as it came in on the in-port (ICMP replies are built from it).
    received: &'a [u8],
    /// The frame after the actions so far (what goes into the tunnel).
    inner: &'a [u8],
}

/// VXLAN-encapsulates `pkts.inner` toward `t.dst` into the egress uplink's transmit
/// batch; a frame too big for the path is answered, fragmented or dropped (module docs).
fn encap(
    pkts: Packets<'_>,
    t: &TunnelAttrs,
    key_hash: u64,
    env: &ExecEnv<'_>,
    sink: &mut dyn PacketSink,
    frag_scratch: &mut [u8],
    stats: &mut ExecStats,
) {
    let route = match env.resolver.resolve(&t.lookup_key()) {
        Ok(r) => r,
        Err(why) => {
            *match why {
                Unroutable::NextHopUnresolved => &mut stats.next_hop_unresolved,
                Unroutable::NotManaged => &mut stats.not_managed,
                Unroutable::IpsecBlocked => &mut stats.ipsec_blocked,
                _ => &mut stats.no_route,
            } += 1;
            return;
        }
    };
    // A protected path goes through the kernel: the tunnel port's kernel I/O sends the
    // VXLAN payload from the outer source with the mark the Ethernet header carries.
    let route = match route.via {
        Via::Uplink => route,
        Via::Kernel { sa } => {
            let Some(tport) = env.tunnel_port else {
                stats.invalid += 1;
                return;
            };
            stats.kernel_out += 1;
            if !sa {
                stats.ipsec_no_sa += 1;
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
        udp_src: vxlan::source_port((key_hash ^ (key_hash >> 32)) as u32),
        udp_dst: t.tp_dst,
        vni: t.vni,
        udp_csum: t.csum,
    };
    // The outer IP packet is everything but the outer Ethernet header.
    if pkts.inner.len() + overhead - 14 > usize::from(route.mtu) {
        stats.encap_too_big += 1;
        too_big(
            pkts,
            &route,
            overhead,
            &outer,
            env,
            sink,
            frag_scratch,
            stats,
        );
        return;
    }
    match send_encapsulated(pkts.inner, &outer, route.egress, sink) {
        Sent::Yes => stats.outputs += 1,
        Sent::Invalid => stats.invalid += 1,
        Sent::Refused => stats.sink_drops += 1,
    }
}

/// What became of one encapsulated frame.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sent {
    Yes,
    /// Encapsulation failed (the frame or outer headers are unusable).
    Invalid,
    /// The sink refused it.
    Refused,
}

fn send_encapsulated(
    inner: &[u8],
    outer: &OuterHeaders,
    egress: PortId,
    sink: &mut dyn PacketSink,
) -> Sent {
    let mut failed = false;
    let sent = sink.send_with(egress, &mut |slot| {
        vxlan::encapsulate(inner, outer, slot).unwrap_or_else(|_| {
            failed = true;
            0
        })
    });
    match (sent, failed) {
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
        TooBig::Reply => {
            let Some(port) = env.in_port.filter(|&p| Some(p) != env.tunnel_port) else {
                return;
            };
            let mut built = false;
            let sent = sink.send_with(port, &mut |slot| {
                let n = pmtu::too_big_reply(pkts.received, mtu, slot);
                built = n != 0;
                n
            });
            if sent {
                stats.too_big_replies += 1;
            } else if built {
                stats.sink_drops += 1;
            }
        }
        TooBig::Fragment => {
            let mut outcome = Sent::Yes;
            let n = pmtu::fragment_ipv4(pkts.inner, mtu, frag_scratch, &mut |f| {
                outcome = send_encapsulated(f, outer, route.egress, sink);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::Actions;
    use crate::tunnel::{StaticResolver, TunnelRoute};
    use crate::wire::icmp::{IcmpPacket, IcmpRepr};
    use crate::wire::testutil::{ipv4_frame, ipv4_repr, ipv6_frame, ipv6_repr, l2_header, pattern};
    use crate::wire::{Ipv4Packet, Ipv4Repr, Ipv6Packet, ip_proto};

    #[derive(Default)]
    struct Collect(Vec<(PortId, Vec<u8>)>);

    impl PacketSink for Collect {
        fn send(&mut self, port: PortId, frame: &[u8]) -> bool {
            self.0.push((port, frame.to_vec()));
            true
        }
        fn send_with(&mut self, port: PortId, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
            let mut buf = vec![0u8; 2048];
            let n = fill(&mut buf);
            if n == 0 {
                return false;
            }
            buf.truncate(n);
            self.0.push((port, buf));
            true
        }
    }

    fn frame() -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&[0x82, 0x8a, 0x29, 0xad, 0x4e, 0xef]);
        f[6..12].copy_from_slice(&[0xe4, 0x11, 0x11, 0x11, 0x11, 0x10]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f
    }

    fn run(actions: &str, resolver: &StaticResolver) -> (Collect, ExecStats) {
        run_frame(actions, resolver, &frame(), Some(PortId(1)))
    }

    fn run_frame(
        actions: &str,
        resolver: &StaticResolver,
        frame: &[u8],
        in_port: Option<PortId>,
    ) -> (Collect, ExecStats) {
        let a: Actions = actions.parse().unwrap();
        let mut ex = Executor::new();
        let mut sink = Collect::default();
        let env = ExecEnv {
            resolver,
            tunnel_port: Some(PortId(9)),
            in_port,
        };
        ex.execute(frame, 42, a.as_slice(), &env, &mut sink);
        (sink, ex.stats)
    }

    #[test]
    fn output_push_pop() {
        let r = StaticResolver::new();
        let (s, st) = run("1,push_vlan(vid=10,pcp=5),2,pop_vlan,3", &r);
        assert_eq!(st.outputs, 3);
        assert_eq!(s.0[0], (PortId(1), frame()));
        let tagged = &s.0[1].1;
        assert_eq!(tagged.len(), 64);
        assert_eq!(&tagged[12..16], &[0x81, 0x00, 0xa0, 0x0a]);
        assert_eq!(&tagged[16..18], &[0x08, 0x00]);
        assert_eq!(s.0[2], (PortId(3), frame()));
    }

    #[test]
    fn pop_on_untagged_is_a_no_op() {
        let (s, _) = run("pop_vlan,1", &StaticResolver::new());
        assert_eq!(s.0[0].1, frame());
    }

    #[test]
    fn encap_needs_route_and_fitting_mtu() {
        let set = "set(tunnel(tun_id=0x10,dst=192.168.203.56,ttl=64,tp_dst=4789)),9";
        let (s, st) = run(set, &StaticResolver::new());
        assert!(s.0.is_empty());
        assert_eq!(st.no_route, 1);

        let mut r = StaticResolver::new();
        let route = TunnelRoute {
            egress: PortId(2),
            src_ip: "192.168.203.51".parse().unwrap(),
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            mtu: 1500,
            via: crate::tunnel::Via::Uplink,
        };
        r.insert("192.168.203.56".parse().unwrap(), route);
        let (s, st) = run(set, &r);
        assert_eq!(st.outputs, 1);
        let (port, pkt) = &s.0[0];
        assert_eq!(*port, PortId(2));
        assert_eq!(pkt.len(), 60 + 50);
        let d = vxlan::decapsulate(pkt, 4789).unwrap().expect("vxlan");
        assert_eq!(d.vni, 0x10);
        assert_eq!(
            &pkt[d.inner_offset..d.inner_offset + d.inner_len],
            &frame()[..]
        );

        r.insert(
            "192.168.203.56".parse().unwrap(),
            TunnelRoute { mtu: 90, ..route },
        );
        let (s, st) = run(set, &r);
        assert!(s.0.is_empty());
        assert_eq!(st.encap_too_big, 1);
    }

    const TUN4: &str = "set(tunnel(tun_id=0x10,dst=192.168.203.56,ttl=64,tp_dst=4789)),9";
    const TUN6: &str = "set(tunnel(tun_id=0x10,dst=fd00::56,ttl=64,tp_dst=4789)),9";

    /// Routes to both remote VTEPs of TUN4 and TUN6 over uplink 2 with path MTU `mtu`.
    fn resolver(mtu: u16) -> StaticResolver {
        let mut r = StaticResolver::new();
        let route = TunnelRoute {
            egress: PortId(2),
            src_ip: "192.168.203.51".parse().unwrap(),
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            mtu,
            via: crate::tunnel::Via::Uplink,
        };
        r.insert("192.168.203.56".parse().unwrap(), route);
        let v6 = TunnelRoute {
            src_ip: "fd00::51".parse().unwrap(),
            ..route
        };
        r.insert("fd00::56".parse().unwrap(), v6);
        r
    }

    /// Checks that `reply` is an ICMPv4 "fragmentation needed" answering `orig` with
    /// `mtu`, at L3 offset `l3`.
    fn check_frag_needed(orig: &[u8], reply: &[u8], l3: usize, mtu: u32) {
        let o = Ipv4Packet::new_checked(&orig[l3..]).unwrap();
        assert_eq!(&reply[..6], &orig[6..12]);
        assert_eq!(&reply[6..12], &orig[..6]);
        let ip = Ipv4Packet::new_checked(&reply[l3..]).unwrap();
        let r = Ipv4Repr::parse(&ip).unwrap();
        assert_eq!((r.src_addr, r.dst_addr), (o.dst_addr(), o.src_addr()));
        assert_eq!(r.protocol, ip_proto::ICMP);
        let m = IcmpPacket::new_checked(ip.payload()).unwrap();
        let icmp = IcmpRepr::parse_v4(&m).unwrap();
        assert_eq!((icmp.msg_type, icmp.code, icmp.rest_of_header), (3, 4, mtu));
        assert_eq!(m.payload(), &orig[l3..l3 + 548]);
    }

    #[test]
    fn df_too_big_gets_one_icmp_reply_on_in_port() {
        // 1500 - 50 = 1450 bytes of inner IP fit; 1451 do not.
        let r = resolver(1500);
        let fits = ipv4_frame(&[], ipv4_repr(1430, true), &pattern(1430));
        let (s, st) = run_frame(TUN4, &r, &fits, Some(PortId(1)));
        assert_eq!((st.outputs, st.encap_too_big), (1, 0));
        assert_eq!(s.0[0].0, PortId(2));
        assert_eq!(s.0[0].1.len(), 1514);

        let big = ipv4_frame(&[], ipv4_repr(1431, true), &pattern(1431));
        let (s, st) = run_frame(TUN4, &r, &big, Some(PortId(1)));
        assert_eq!(s.0.len(), 1, "exactly one packet, nothing on the uplink");
        let (port, reply) = &s.0[0];
        assert_eq!(*port, PortId(1));
        assert_eq!(reply.len(), 14 + 576);
        check_frag_needed(&big, reply, 14, 1450);
        assert_eq!((st.too_big_replies, st.encap_too_big), (1, 1));
        assert_eq!((st.outputs, st.fragmented, st.sink_drops), (0, 0, 0));
    }

    #[test]
    fn reply_uses_received_tags_and_mtu_counts_pushed_ones() {
        // The tag pushed before the tunnel output costs 4 bytes of the inner MTU, but
        // the reply goes back untagged, as the packet came in.
        let r = resolver(1500);
        let f = ipv4_frame(&[], ipv4_repr(1430, true), &pattern(1430));
        let acts = format!("push_vlan(vid=10),{TUN4}");
        let (s, st) = run_frame(&acts, &r, &f, Some(PortId(1)));
        assert_eq!(st.too_big_replies, 1);
        let (port, reply) = &s.0[0];
        assert_eq!(*port, PortId(1));
        assert_eq!(&reply[12..14], &[0x08, 0x00]);
        check_frag_needed(&f, reply, 14, 1446);
        // And a tagged arrival is answered with its tags.
        let tagged = ipv4_frame(&[(0x8100, 7)], ipv4_repr(1440, true), &pattern(1440));
        let (s, _) = run_frame(TUN4, &r, &tagged, Some(PortId(1)));
        assert_eq!(&s.0[0].1[12..18], &tagged[12..18]);
        check_frag_needed(&tagged, &s.0[0].1, 18, 1446);
    }

    #[test]
    fn non_df_too_big_is_fragmented_and_encapsulated() {
        let r = resolver(1500);
        let f = ipv4_frame(&[], ipv4_repr(3000, false), &pattern(3000));
        let (s, st) = run_frame(TUN4, &r, &f, Some(PortId(1)));
        assert_eq!((st.fragmented, st.encap_too_big, st.outputs), (1, 1, 1));
        assert_eq!(st.too_big_replies, 0);
        // 1450 - 20 = 1430, rounded down to 1424 bytes of data per fragment.
        assert_eq!(s.0.len(), 3);
        let mut data = Vec::new();
        for (i, (port, pkt)) in s.0.iter().enumerate() {
            assert_eq!(*port, PortId(2));
            assert!(pkt.len() <= 1514);
            let d = vxlan::decapsulate(pkt, 4789).unwrap().expect("vxlan");
            let inner = d.inner(pkt);
            assert_eq!(&inner[..14], &f[..14]);
            let ip = Ipv4Packet::new_checked(&inner[14..]).unwrap();
            let r = Ipv4Repr::parse(&ip).unwrap();
            assert_eq!(usize::from(r.frag_offset), data.len());
            assert_eq!(r.more_frags, i < 2);
            assert_eq!(r.ident, 0x1234);
            data.extend_from_slice(ip.payload());
        }
        assert_eq!(data, pattern(3000));
    }

    #[test]
    fn ipv6_too_big_gets_packet_too_big() {
        // Over an IPv6 underlay: 1500 - 70 = 1430 bytes of inner IP fit.
        let r = resolver(1500);
        let f = ipv6_frame(&[], ipv6_repr(1400), &pattern(1400));
        let (s, st) = run_frame(TUN6, &r, &f, Some(PortId(1)));
        assert_eq!(st.too_big_replies, 1);
        assert_eq!(s.0.len(), 1);
        let (port, reply) = &s.0[0];
        assert_eq!(*port, PortId(1));
        assert_eq!(reply.len(), 14 + 1280);
        let ip = Ipv6Packet::new_checked(&reply[14..]).unwrap();
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        assert_eq!(src, ipv6_repr(0).dst_addr);
        assert_eq!(dst, ipv6_repr(0).src_addr);
        let m = IcmpPacket::new_checked(ip.payload()).unwrap();
        let icmp = IcmpRepr::parse_v6(&m, &src, &dst).unwrap();
        assert_eq!(
            (icmp.msg_type, icmp.code, icmp.rest_of_header),
            (2, 0, 1430)
        );
        // The same packet fits an IPv4 underlay (1450).
        let (s, st) = run_frame(TUN4, &r, &f, Some(PortId(1)));
        assert_eq!((st.outputs, st.too_big_replies), (1, 0));
        assert_eq!(s.0[0].0, PortId(2));
    }

    #[test]
    fn too_big_without_an_answer_is_dropped() {
        let r = resolver(1500);
        let df = ipv4_frame(&[], ipv4_repr(1460, true), &pattern(1460));
        for in_port in [None, Some(PortId(9))] {
            let (s, st) = run_frame(TUN4, &r, &df, in_port);
            assert!(s.0.is_empty());
            assert_eq!((st.encap_too_big, st.too_big_replies), (1, 0));
        }
        // Not IP, and an IPv6 path below 1280: dropped.
        let mut other = l2_header(&[], 0x88b5);
        other.extend_from_slice(&pattern(1480));
        let v6 = ipv6_frame(&[], ipv6_repr(1300), &pattern(1300));
        for (f, mtu) in [(&other, 1500), (&v6, 1300)] {
            let (s, st) = run_frame(TUN4, &resolver(mtu), f, Some(PortId(1)));
            assert!(s.0.is_empty());
            assert_eq!(st.encap_too_big, 1);
            assert_eq!((st.too_big_replies, st.fragmented, st.outputs), (0, 0, 0));
        }
    }

    #[test]
    fn tunnel_output_without_set_is_invalid() {
        let (s, st) = run("9", &StaticResolver::new());
        assert!(s.0.is_empty());
        assert_eq!(st.invalid, 1);
    }
}
