//! Executing a flow's actions on one packet in software.
//!
//! [`Executor::execute`] walks the action list over a [`Packet`]: a frame and its
//! [`Offload`] metadata (what the kernel said the frame still needs: a partial checksum
//! to complete, a super-frame to segment; see [`crate::wire::vnet`]). The frame is read in
//! place until an action modifies it (push/pop VLAN), at which point it is copied once
//! into the executor's scratch buffer (allocated once, reused); the metadata's offsets
//! move with the bytes. Outputs go to a [`PacketSink`] (the datapath's per-port transmit
//! batches); an output to the tunnel port is a VXLAN encapsulation written straight into
//! the egress uplink's batch slot.
//!
//! # Super-frames and partial checksums
//!
//! A VM (or the host) that offloads segmentation and checksums hands its NIC — here its
//! representor, a veth — super-frames of up to 64 KiB and TCP/UDP checksums left
//! partial; GRO on a receiving device does the same. What the executor does with them:
//!
//! - **plain output** to a port that takes offload metadata ([`PacketSink::offloads`]: an
//!   AF_PACKET port with a vnet header): the frame goes out whole with its metadata, and
//!   the kernel or the device segments it and completes the checksum (no per-segment
//!   work here). A super-frame whose checksum is not partial (GRO's) is first given the
//!   partial checksum the kernel expects ([`gso::prepare_partial`]). To a port that does
//!   not take metadata, flowd segments and completes in software (`gso_segmented`,
//!   `csum_completed`).
//! - **VXLAN output**: the kernel offers no UDP-tunnel segmentation through AF_PACKET
//!   (checked on Linux 6.18: a vnet header with `VIRTIO_NET_HDR_GSO_UDP_TUNNEL_*` is
//!   refused with `EINVAL`, and `PACKET_VNET_HDR_SZ` only takes 10 or 12 bytes; see
//!   [`crate::port`]), so flowd segments the inner TCP (or UDP) super-frame itself
//!   ([`gso::Segmenter`]), each segment written straight into the uplink's transmit
//!   slot behind room for the outer headers, then encapsulated in place: one copy of the
//!   payload, one checksum pass. A partial checksum of a complete frame is completed in
//!   the uplink's slot, before the outer UDP checksum covers it. Where the uplink takes
//!   UDP super-frames ([`PacketSink::udp_segmentation`]: AF_PACKET on Linux 6.2 or
//!   later), the VXLAN packets of one super-frame are written one after the other behind
//!   one set of outer headers, as one UDP datagram the kernel or the NIC cuts at the
//!   VXLAN packet size (`udp_super_frames`): one skb and one trip through the stack for
//!   up to 64 packets. That cut needs the outer UDP checksum, so such packets carry one
//!   even where `udp_csum` is off (the NIC computes it; a checksum is always valid).
//! - A super-frame whose segments would not fit the tunnel's path MTU is answered as a
//!   packet of that segment size would be (below); an IPv4 TCP one without DF is instead
//!   segmented to the payload that fits (better than fragmenting each segment).
//! - Metadata that does not describe the frame (GSO type and headers disagree, a
//!   checksum start that is not the L4 header) drops the frame (`offload_invalid`).
//!
//! The outer UDP source port is [`crate::wire::vxlan::source_port`] of the packet's
//! [`Packet::flow_hash`] (the inner connection's addresses, protocol and ports:
//! `FlowKey::flow_hash`), so every segment and every packet of a connection leave with
//! the same one. The outer IPv4 identification comes from a per-executor counter, one
//! per outer packet (RFC 6864: never a constant ID on a datagram that may be
//! fragmented; DF is set when the tunnel's `df` says so).
//!
//! # Too big for the path
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
use crate::wire::gso::{self, Layout, Segmenter};
use crate::wire::pmtu::{self, TooBig};
use crate::wire::vxlan::{self, OuterHeaders};
use crate::wire::{L2Info, Offload};
use std::net::IpAddr;

/// Where executed packets go.
pub trait PacketSink {
    /// Queues a copy of `frame` with its offload metadata for transmission on `port`
    /// (metadata other than [`Offload::NONE`] only to a port that [`Self::offloads`]);
    /// false if it was dropped.
    fn send(&mut self, port: PortId, frame: &[u8], offload: Offload) -> bool;
    /// Queues a frame that `fill` writes into a buffer of at least `len` bytes, returning
    /// its length (0: nothing to send), with its offload metadata; false if it was
    /// dropped.
    fn send_with(
        &mut self,
        port: PortId,
        len: usize,
        offload: Offload,
        fill: &mut dyn FnMut(&mut [u8]) -> usize,
    ) -> bool;
    /// Whether `port` transmits frames with their offload metadata (its
    /// [`crate::port::Port::offloads`]); false for an unknown port.
    fn offloads(&self, port: PortId) -> bool;
    /// Whether `port` also takes UDP super-frames for the kernel to cut (its
    /// [`crate::port::Port::udp_segmentation`]); false by default.
    fn udp_segmentation(&self, _port: PortId) -> bool {
        false
    }
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

/// The packet an execution starts from.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// The frame as received (decapsulated, for a packet from a tunnel).
    pub frame: &'a [u8],
    /// What the frame still needs (a super-frame, a partial checksum).
    pub offload: Offload,
    /// The inner connection's hash (`FlowKey::flow_hash`): the VXLAN source port.
    pub flow_hash: u32,
}

impl<'a> Packet<'a> {
    /// A complete frame.
    pub fn new(frame: &'a [u8], flow_hash: u32) -> Self {
        Self {
            frame,
            offload: Offload::NONE,
            flow_hash,
        }
    }
}

/// Per-executor drop counters (read by the datapath's statistics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecStats {
    /// Packets output (each output counts once, a super-frame too).
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
    /// Super-frames handed whole, with their metadata, to a port that segments them.
    pub gso_passed: u64,
    /// Super-frames segmented by flowd (VXLAN output, or a port without offloads).
    pub gso_segmented: u64,
    /// The segments those made.
    pub gso_segments: u64,
    /// UDP super-frames of VXLAN packets handed to an uplink to cut
    /// ([`crate::port::Port::udp_segmentation`]), each carrying up to 64 of those
    /// segments.
    pub udp_super_frames: u64,
    /// Partial checksums flowd completed.
    pub csum_completed: u64,
    /// Frames dropped because their offload metadata does not describe them.
    pub offload_invalid: u64,
}

/// Largest frame the scratch buffers hold (a 64 KiB super-frame plus tags).
const SCRATCH: usize = gso::MAX_FRAME + 64;

/// Runs action lists; one per datapath thread.
#[derive(Debug)]
pub struct Executor {
    scratch: Vec<u8>,
    /// Where fragments are built: the packet being fragmented may be in `scratch`.
    frag_scratch: Vec<u8>,
    /// The next outer IPv4 identification.
    ip_id: u16,
    /// Drop and output counters.
    pub stats: ExecStats,
}

impl Default for Executor {
    fn default() -> Self {
        Self::new()
    }
}

/// The state of the packet as the actions go: where it is, and its metadata.
#[derive(Clone, Copy)]
struct Cur {
    /// `None`: still the received frame; `Some(n)`: `scratch[..n]`.
    len: Option<usize>,
    offload: Offload,
}

impl Executor {
    /// An executor with its scratch buffers allocated.
    pub fn new() -> Self {
        Self {
            scratch: vec![0; SCRATCH],
            frag_scratch: vec![0; SCRATCH],
            // Distinct executors (and restarts) start at distinct IDs.
            ip_id: (std::process::id() as u16).wrapping_mul(0x9e37),
            stats: ExecStats::default(),
        }
    }

    /// Executes `actions` on `pkt`. Returns true if a `userspace` action asked for the
    /// slow path.
    pub fn execute(
        &mut self,
        pkt: Packet<'_>,
        actions: &[Action],
        env: &ExecEnv<'_>,
        sink: &mut dyn PacketSink,
    ) -> bool {
        let mut cur = Cur {
            len: None,
            offload: pkt.offload,
        };
        let mut tunnel: Option<TunnelAttrs> = None;
        let mut to_userspace = false;
        for action in actions {
            match *action {
                Action::Output(port) if Some(port) == env.tunnel_port => match tunnel {
                    Some(t) => self.tunnel_output(pkt, &mut cur, &t, env, sink),
                    None => self.stats.invalid += 1,
                },
                Action::Output(port) => self.output(pkt.frame, cur, port, sink),
                Action::PushVlan { tpid, tci } => {
                    let n = self.make_mut(pkt.frame, cur.len);
                    match (
                        push_vlan(&mut self.scratch, n, tpid, tci),
                        cur.offload.shifted(12, 4),
                    ) {
                        (Some(n), Some(o)) => {
                            cur = Cur {
                                len: Some(n),
                                offload: o,
                            }
                        }
                        _ => {
                            self.stats.invalid += 1;
                            return to_userspace;
                        }
                    }
                }
                Action::PopVlan => {
                    let n = self.make_mut(pkt.frame, cur.len);
                    let m = pop_vlan(&mut self.scratch, n);
                    let o = if m == n {
                        Some(cur.offload)
                    } else {
                        cur.offload.shifted(12, -4)
                    };
                    match o {
                        Some(o) => {
                            cur = Cur {
                                len: Some(m),
                                offload: o,
                            }
                        }
                        None => {
                            self.stats.offload_invalid += 1;
                            return to_userspace;
                        }
                    }
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

    /// The next outer IPv4 identification.
    fn next_ip_id(&mut self) -> u16 {
        self.ip_id = self.ip_id.wrapping_add(1);
        self.ip_id
    }

    /// Counts what became of one output.
    fn count(&mut self, sent: Sent) {
        match sent {
            Sent::Yes => self.stats.outputs += 1,
            Sent::Invalid => self.stats.invalid += 1,
            Sent::Refused => self.stats.sink_drops += 1,
        }
    }

    /// Sends the current packet out of `port` (not the tunnel port).
    fn output(&mut self, frame: &[u8], cur: Cur, port: PortId, sink: &mut dyn PacketSink) {
        let pkt = cur_bytes(&self.scratch, frame, cur);
        let o = cur.offload;
        if o.is_complete() {
            let sent = if sink.send(port, pkt, Offload::NONE) {
                Sent::Yes
            } else {
                Sent::Refused
            };
            self.count(sent);
            return;
        }
        let sent = if sink.offloads(port) {
            pass_through(pkt, o, port, sink, &mut self.stats)
        } else {
            finish_in_software(pkt, o, port, sink, &mut self.stats)
        };
        self.count(sent);
    }

    /// VXLAN-encapsulates the current packet toward `t.dst` into the egress uplink's
    /// transmit batch; see the module documentation for super-frames, partial checksums
    /// and frames too big for the path.
    fn tunnel_output(
        &mut self,
        pkt: Packet<'_>,
        cur: &mut Cur,
        t: &TunnelAttrs,
        env: &ExecEnv<'_>,
        sink: &mut dyn PacketSink,
    ) {
        let route = match env.resolver.resolve(&t.lookup_key()) {
            Ok(r) => r,
            Err(why) => {
                *match why {
                    Unroutable::NextHopUnresolved => &mut self.stats.next_hop_unresolved,
                    Unroutable::NotManaged => &mut self.stats.not_managed,
                    Unroutable::IpsecBlocked => &mut self.stats.ipsec_blocked,
                    _ => &mut self.stats.no_route,
                } += 1;
                return;
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
                    return;
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
            udp_src: vxlan::source_port(pkt.flow_hash),
            udp_dst: t.tp_dst,
            vni: t.vni,
            udp_csum: t.csum,
        };
        let path = Path {
            route,
            overhead,
            outer,
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
        if inner_len + overhead - 14 > usize::from(route.mtu) {
            self.stats.encap_too_big += 1;
            if let Some(c) = cur.offload.csum {
                // Fragments and replies are built from a complete frame.
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
                overhead,
                &outer,
                env,
                sink,
                &mut self.frag_scratch,
                &mut self.stats,
            );
            return;
        }
        let outer = OuterHeaders {
            ident: self.next_ip_id(),
            ..path.outer
        };
        let csum = cur.offload.csum;
        let inner = cur_bytes(&self.scratch, pkt.frame, *cur);
        let sent = send_encapsulated(inner, csum, &outer, route.egress, sink);
        if csum.is_some() && sent == Sent::Yes {
            self.stats.csum_completed += 1;
        }
        self.count(sent);
    }
}

/// The current packet's bytes: the received frame, or the scratch buffer's copy.
fn cur_bytes<'s>(scratch: &'s [u8], frame: &'s [u8], cur: Cur) -> &'s [u8] {
    match cur.len {
        Some(n) => scratch.get(..n).unwrap_or(&[]),
        None => frame,
    }
}

/// Where a tunnel output goes.
struct Path {
    route: TunnelRoute,
    /// Outer headers' length (50 or 70).
    overhead: usize,
    /// The outer headers (the IPv4 identification filled per packet).
    outer: OuterHeaders,
}

/// Hands a frame that still needs work to a port that does it (an AF_PACKET port with a
/// vnet header), after checking that the metadata describes the frame; a super-frame
/// whose checksum is not partial gets one.
fn pass_through(
    pkt: &[u8],
    o: Offload,
    port: PortId,
    sink: &mut dyn PacketSink,
    stats: &mut ExecStats,
) -> Sent {
    let Some(g) = o.gso else {
        // A partial checksum alone: the kernel completes it.
        return if sink.send(port, pkt, o) {
            Sent::Yes
        } else {
            Sent::Refused
        };
    };
    let lay = match Layout::parse(pkt) {
        Ok(l) if l.matches(g.kind) && o.csum.is_none_or(|c| c == l.partial_csum()) => l,
        _ => {
            stats.offload_invalid += 1;
            return Sent::Invalid;
        }
    };
    let hdr_len = lay.header_len() as u16;
    let sent = if o.csum.is_some() {
        sink.send(port, pkt, Offload { hdr_len, ..o })
    } else {
        // GRO's super-frame: its checksum is whole (or stale); the kernel wants the
        // pseudo-header's sum there, as TSO's sender leaves it.
        let mut c = None;
        let fill = &mut |slot: &mut [u8]| {
            let Some(dst) = slot.get_mut(..pkt.len()) else {
                return 0;
            };
            dst.copy_from_slice(pkt);
            c = gso::prepare_partial(dst, &lay).ok();
            if c.is_some() { pkt.len() } else { 0 }
        };
        let o = Offload {
            csum: Some(lay.partial_csum()),
            csum_valid: false,
            hdr_len,
            ..o
        };
        sink.send_with(port, pkt.len(), o, fill)
    };
    if sent {
        stats.gso_passed += 1;
        Sent::Yes
    } else {
        Sent::Refused
    }
}

/// Segments a super-frame and completes a partial checksum in software, into the
/// transmit batch of a port that cannot do it.
fn finish_in_software(
    pkt: &[u8],
    o: Offload,
    port: PortId,
    sink: &mut dyn PacketSink,
    stats: &mut ExecStats,
) -> Sent {
    let Some(g) = o.gso else {
        let Some(c) = o.csum else {
            return Sent::Invalid;
        };
        let mut ok = true;
        let fill = &mut |slot: &mut [u8]| {
            let Some(dst) = slot.get_mut(..pkt.len()) else {
                return 0;
            };
            dst.copy_from_slice(pkt);
            ok = gso::complete_checksum(dst, c).is_ok();
            if ok { pkt.len() } else { 0 }
        };
        return match (sink.send_with(port, pkt.len(), Offload::NONE, fill), ok) {
            (true, _) => {
                stats.csum_completed += 1;
                Sent::Yes
            }
            (false, false) => {
                stats.offload_invalid += 1;
                Sent::Invalid
            }
            (false, true) => Sent::Refused,
        };
    };
    let mut seg = match Segmenter::new(pkt, g.kind, usize::from(g.size)) {
        Ok(s) => s,
        Err(_) => {
            stats.offload_invalid += 1;
            return Sent::Invalid;
        }
    };
    stats.gso_segmented += 1;
    let max = seg.max_len();
    let mut outcome = Sent::Yes;
    while seg.remaining() > 0 {
        let fill = &mut |slot: &mut [u8]| seg.write_next(slot).ok().flatten().unwrap_or(0);
        if !sink.send_with(port, max, Offload::NONE, fill) {
            outcome = Sent::Refused;
            break;
        }
        stats.gso_segments += 1;
    }
    outcome
}

/// Segments a super-frame and encapsulates each segment, or answers it as too big.
/// Returns what became of the output (None: already counted, as too big).
fn encap_super(
    pkts: Packets<'_>,
    o: Offload,
    path: &Path,
    env: &ExecEnv<'_>,
    sink: &mut dyn PacketSink,
    ip_id: &mut u16,
    stats: &mut ExecStats,
) -> Option<Sent> {
    let g = o.gso?;
    let lay = match Layout::parse(pkts.inner) {
        Ok(l) if l.matches(g.kind) && o.csum.is_none_or(|c| c == l.partial_csum()) => l,
        _ => {
            stats.offload_invalid += 1;
            return Some(Sent::Invalid);
        }
    };
    // The largest inner frame the path takes, and the payload per segment that fits.
    let room = (usize::from(path.route.mtu) + 14).saturating_sub(path.overhead);
    let fits = room.saturating_sub(lay.header_len());
    let mut size = usize::from(g.size);
    if lay.header_len() + size.min(lay.payload_len()) > room {
        stats.encap_too_big += 1;
        let tcp_no_df = lay.proto == crate::wire::ip_proto::TCP
            && pmtu::too_big_action(pkts.inner) == TooBig::Fragment;
        if !tcp_no_df || fits == 0 {
            // As a packet of the segment size would be: answered, or dropped.
            reply_too_big(pkts, path, env, sink, stats);
            return None;
        }
        size = fits;
    }
    let mut seg = match Segmenter::with_layout(pkts.inner, lay, size) {
        Ok(s) => s,
        Err(_) => {
            stats.offload_invalid += 1;
            return Some(Sent::Invalid);
        }
    };
    stats.gso_segmented += 1;
    if sink.udp_segmentation(path.route.egress)
        && let Some(sent) = encap_as_udp_super(&mut seg, path, sink, ip_id, stats)
    {
        return Some(sent);
    }
    let overhead = path.overhead;
    let len = overhead + seg.max_len();
    while seg.remaining() > 0 {
        *ip_id = ip_id.wrapping_add(1);
        let outer = OuterHeaders {
            ident: *ip_id,
            ..path.outer
        };
        let mut failed = false;
        let fill = &mut |slot: &mut [u8]| {
            let n = match slot.get_mut(overhead..).map(|s| seg.write_next(s)) {
                Some(Ok(Some(n))) => n,
                _ => {
                    failed = true;
                    return 0;
                }
            };
            vxlan::encapsulate_in_place(slot, n, &outer).unwrap_or_else(|_| {
                failed = true;
                0
            })
        };
        if !sink.send_with(path.route.egress, len, Offload::NONE, fill) {
            return Some(if failed { Sent::Invalid } else { Sent::Refused });
        }
        stats.gso_segments += 1;
    }
    Some(Sent::Yes)
}

/// Most VXLAN packets one UDP super-frame carries: the kernel's `UDP_MAX_SEGMENTS` (64;
/// 128 since Linux 6.9).
const UDP_MAX_SEGMENTS: usize = 64;

/// Writes the segments of `seg`, each behind a VXLAN header, into UDP super-frames for
/// the egress to cut at the unit size (USO; see [`crate::port::Port::udp_segmentation`]):
/// one frame, one skb and one trip through the kernel's stack for up to 64 VXLAN packets
/// instead of one each. Every unit but the last of a frame is exactly the unit size, as
/// UDP segmentation requires: the segmenter's segments all have the first one's length
/// but the last. The outer UDP checksum is left partial for the cut to complete (the
/// kernel requires it: segments leave with a checksum even where `udp_csum` is off), and
/// the outer IPv4 identification counts one per segment, as the kernel numbers them.
/// None, with nothing written, where two units would not fit one datagram.
fn encap_as_udp_super(
    seg: &mut Segmenter<'_>,
    path: &Path,
    sink: &mut dyn PacketSink,
    ip_id: &mut u16,
    stats: &mut ExecStats,
) -> Option<Sent> {
    let overhead = path.overhead;
    // Outer Ethernet, IP and UDP headers, then the first unit.
    let first = overhead - vxlan::HEADER_LEN;
    let udp_at = first - crate::wire::udp::HEADER_LEN;
    let unit = vxlan::HEADER_LEN + seg.max_len();
    // The outer IP packet within 64 KiB: IPv4's total length counts its header, IPv6's
    // payload length does not.
    let v6 = matches!(path.outer.dst_ip, IpAddr::V6(_));
    let ip_header = if v6 {
        0
    } else {
        udp_at - crate::wire::ethernet::HEADER_LEN
    };
    let room = 65_535 - ip_header - crate::wire::udp::HEADER_LEN;
    let per_frame = (room / unit).min(UDP_MAX_SEGMENTS);
    if per_frame < 2 {
        return None;
    }
    let o = Offload {
        csum: Some(crate::wire::PartialCsum {
            start: udp_at as u16,
            offset: 6,
        }),
        csum_valid: false,
        gso: Some(crate::wire::Gso {
            kind: crate::wire::GsoKind::Udp,
            size: unit as u16,
            ecn: false,
        }),
        hdr_len: first as u16,
    };
    let vni = path.outer.vni;
    while seg.remaining() > 0 {
        let k = seg.remaining().min(per_frame);
        let outer = OuterHeaders {
            ident: ip_id.wrapping_add(1),
            ..path.outer
        };
        let mut failed = false;
        let fill = &mut |slot: &mut [u8]| {
            let mut at = first;
            for _ in 0..k {
                let Some(u) = slot.get_mut(at..) else {
                    failed = true;
                    return 0;
                };
                let n = match (vxlan::emit_header(u, vni), u.get_mut(vxlan::HEADER_LEN..)) {
                    (Ok(()), Some(body)) => match seg.write_next(body) {
                        Ok(Some(n)) => n,
                        _ => {
                            failed = true;
                            return 0;
                        }
                    },
                    _ => {
                        failed = true;
                        return 0;
                    }
                };
                at += vxlan::HEADER_LEN + n;
            }
            match vxlan::encapsulate_for_segmentation(slot, at - overhead, &outer) {
                Ok((n, _)) => n,
                Err(_) => {
                    failed = true;
                    0
                }
            }
        };
        if !sink.send_with(path.route.egress, first + k * unit, o, fill) {
            return Some(if failed { Sent::Invalid } else { Sent::Refused });
        }
        *ip_id = ip_id.wrapping_add(k as u16);
        stats.gso_segments += k as u64;
        stats.udp_super_frames += 1;
    }
    Some(Sent::Yes)
}

/// Answers a super-frame whose segments do not fit the path as a too-big packet of
/// the segment size: an ICMP reply to the in-port (IPv4 with DF, IPv6), or a drop.
fn reply_too_big(
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

/// What became of one encapsulated frame.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sent {
    Yes,
    /// Encapsulation failed (the frame or outer headers are unusable).
    Invalid,
    /// The sink refused it.
    Refused,
}

/// Encapsulates a complete frame (or one whose checksum `csum` is partial, completed in
/// the copy) into the egress uplink's batch.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::Actions;
    use crate::tunnel::{StaticResolver, TunnelRoute};
    use crate::wire::icmp::{IcmpPacket, IcmpRepr};
    use crate::wire::testutil::{
        ipv4_frame, ipv4_repr, ipv6_frame, ipv6_repr, l2_header, pattern, tcp_frame,
    };
    use crate::wire::{Gso, GsoKind, Ipv4Packet, Ipv4Repr, Ipv6Packet, TcpPacket, ip_proto};

    /// What the executor sent: frames by port, their metadata, and whether the ports
    /// take metadata.
    #[derive(Default)]
    struct Collect(Vec<(PortId, Vec<u8>)>, Vec<Offload>, bool);

    impl PacketSink for Collect {
        fn send(&mut self, port: PortId, frame: &[u8], offload: Offload) -> bool {
            assert!(
                self.2 || offload.is_complete(),
                "metadata to a port without"
            );
            self.0.push((port, frame.to_vec()));
            self.1.push(offload);
            true
        }
        fn send_with(
            &mut self,
            port: PortId,
            len: usize,
            offload: Offload,
            fill: &mut dyn FnMut(&mut [u8]) -> usize,
        ) -> bool {
            assert!(
                self.2 || offload.is_complete(),
                "metadata to a port without"
            );
            let mut buf = vec![0u8; len.max(2048)];
            let n = fill(&mut buf);
            if n == 0 {
                return false;
            }
            assert!(n <= len, "{n} bytes written for a {len}-byte request");
            buf.truncate(n);
            self.0.push((port, buf));
            self.1.push(offload);
            true
        }
        fn offloads(&self, _: PortId) -> bool {
            self.2
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
        ex.execute(Packet::new(frame, 42), a.as_slice(), &env, &mut sink);
        (sink, ex.stats)
    }

    /// Runs `actions` on `frame` with `offload` from port 1, into ports that take
    /// offload metadata if `offloads`.
    fn run_offload(
        actions: &str,
        resolver: &StaticResolver,
        frame: &[u8],
        offload: Offload,
        offloads: bool,
    ) -> (Collect, ExecStats) {
        let a: Actions = actions.parse().unwrap();
        let mut ex = Executor::new();
        let mut sink = Collect(Vec::new(), Vec::new(), offloads);
        let env = ExecEnv {
            resolver,
            tunnel_port: Some(PortId(9)),
            in_port: Some(PortId(1)),
        };
        let pkt = Packet {
            frame,
            offload,
            flow_hash: 42,
        };
        ex.execute(pkt, a.as_slice(), &env, &mut sink);
        (sink, ex.stats)
    }

    /// A TCP super-frame as a VM's TSO hands it over: `payload` bytes, segments of
    /// `size`, its checksum partial.
    fn tso_frame(v6: bool, tags: &[(u16, u16)], payload: usize, size: u16) -> (Vec<u8>, Offload) {
        use crate::wire::tcp::flags::{ACK, PSH};
        let mut f = tcp_frame(v6, tags, payload, ACK | PSH);
        let lay = Layout::parse(&f).unwrap();
        let c = gso::prepare_partial(&mut f, &lay).unwrap();
        let kind = if v6 { GsoKind::TcpV6 } else { GsoKind::TcpV4 };
        let o = Offload {
            csum: Some(c),
            gso: Some(Gso {
                kind,
                size,
                ecn: false,
            }),
            hdr_len: lay.header_len() as u16,
            ..Offload::NONE
        };
        (f, o)
    }

    /// Checks that `segs` (inner frames) are a correct segmentation of `orig`'s payload
    /// with `size` bytes each: checksums, and the payload in order.
    fn check_segments(orig: &[u8], segs: &[Vec<u8>], size: usize) {
        let lay = Layout::parse(orig).unwrap();
        let mut data = Vec::new();
        for s in segs {
            let l = Layout::parse(s).unwrap();
            let (src, dst) = if l.v6 {
                let ip = Ipv6Packet::new_checked(&s[l.l3..]).unwrap();
                (IpAddr::from(ip.src_addr()), IpAddr::from(ip.dst_addr()))
            } else {
                let ip = Ipv4Packet::new_checked(&s[l.l3..]).unwrap();
                assert!(ip.verify_checksum());
                (IpAddr::from(ip.src_addr()), IpAddr::from(ip.dst_addr()))
            };
            let t = TcpPacket::new_checked(&s[l.l4..l.end]).unwrap();
            assert!(t.verify_checksum(&src, &dst));
            assert!(t.payload().len() <= size);
            data.extend_from_slice(t.payload());
        }
        assert_eq!(data, &orig[lay.header_len()..lay.end]);
    }

    #[test]
    fn super_frames_go_whole_to_ports_that_take_them_and_cut_to_others() {
        let r = StaticResolver::new();
        let (f, o) = tso_frame(false, &[], 10_000, 1448);
        let (s, st) = run_offload("2", &r, &f, o, true);
        assert_eq!(s.0, vec![(PortId(2), f.clone())], "whole, untouched");
        assert_eq!(s.1, vec![o]);
        assert_eq!((st.outputs, st.gso_passed, st.gso_segmented), (1, 1, 0));

        let (s, st) = run_offload("2", &r, &f, o, false);
        assert_eq!(s.0.len(), 7);
        assert!(s.1.iter().all(Offload::is_complete));
        let segs: Vec<_> = s.0.iter().map(|(_, p)| p.clone()).collect();
        check_segments(&f, &segs, 1448);
        assert_eq!((st.outputs, st.gso_segmented, st.gso_segments), (1, 1, 7));

        // A tag pushed first: the metadata moves with the bytes.
        let (s, _) = run_offload("push_vlan(vid=10),2", &r, &f, o, true);
        assert_eq!(s.1[0].csum.unwrap().start, o.csum.unwrap().start + 4);
        assert_eq!(s.1[0].hdr_len, o.hdr_len + 4);
        let (s, _) = run_offload("push_vlan(vid=10),2", &r, &f, o, false);
        assert_eq!(s.0.len(), 7);
        assert!(s.0.iter().all(|(_, p)| p[12..14] == [0x81, 0x00]));
    }

    #[test]
    fn a_gro_super_frame_is_handed_over_with_a_partial_checksum() {
        // GRO's: checksum whole and verified, no checksum start.
        let f = tcp_frame(true, &[(0x8100, 5)], 20_000, crate::wire::tcp::flags::ACK);
        let o = Offload {
            csum_valid: true,
            gso: Some(Gso {
                kind: GsoKind::TcpV6,
                size: 1428,
                ecn: false,
            }),
            ..Offload::NONE
        };
        let (s, st) = run_offload("2", &StaticResolver::new(), &f, o, true);
        assert_eq!(st.gso_passed, 1);
        let sent = s.1[0];
        let c = sent.csum.expect("a partial checksum");
        assert_eq!((c.start, c.offset), (18 + 40, 16));
        assert_eq!(sent.gso, o.gso);
        let mut back = s.0[0].1.clone();
        assert_ne!(back, f);
        gso::complete_checksum(&mut back, c).unwrap();
        assert_eq!(
            back, f,
            "what the kernel will complete is the frame's checksum"
        );
    }

    #[test]
    fn metadata_that_does_not_describe_the_frame_drops_it() {
        let (f, mut o) = tso_frame(false, &[], 5000, 1448);
        o.gso = Some(Gso {
            kind: GsoKind::TcpV6,
            size: 1448,
            ecn: false,
        });
        for offloads in [true, false] {
            let (s, st) = run_offload("2", &StaticResolver::new(), &f, o, offloads);
            assert!(s.0.is_empty());
            assert_eq!(st.offload_invalid, 1);
        }
        let (f, mut o) = tso_frame(false, &[], 5000, 1448);
        o.csum = Some(crate::wire::PartialCsum {
            start: 14,
            offset: 16,
        });
        let (s, st) = run_offload(TUN4, &resolver(1500), &f, o, true);
        assert!(s.0.is_empty());
        assert_eq!(st.offload_invalid, 1);
    }

    /// Decapsulates what the executor sent to the uplink: the inner frames, checking
    /// each outer frame's length, IPv4 checksum and UDP source port.
    fn inner_frames(s: &Collect, mtu: usize) -> (Vec<Vec<u8>>, Vec<u16>) {
        let mut inner = Vec::new();
        let mut ids = Vec::new();
        for (port, pkt) in &s.0 {
            assert_eq!(*port, PortId(2));
            assert!(pkt.len() <= mtu + 14, "{} > {}", pkt.len(), mtu + 14);
            let d = vxlan::decapsulate(pkt, 4789).unwrap().expect("vxlan");
            assert_eq!(d.udp_src, vxlan::source_port(42), "one source port");
            if let Ok(ip) = Ipv4Packet::new_checked(&pkt[14..]) {
                assert!(ip.verify_checksum());
                ids.push(ip.ident());
            }
            let udp = crate::wire::UdpPacket::new_checked(&pkt[d.inner_offset - 16..]).unwrap();
            assert!(udp.verify_checksum(&d.src, &d.dst));
            inner.push(d.inner(pkt).to_vec());
        }
        (inner, ids)
    }

    #[test]
    fn vxlan_output_segments_super_frames_in_software() {
        // A VF at MTU 1450 over a 1500-byte IPv4 path: segments of 1398 bytes fit.
        let (f, o) = tso_frame(false, &[], 10_000, 1398);
        let (s, st) = run_offload(TUN4, &resolver(1500), &f, o, true);
        assert_eq!(s.0.len(), 8);
        assert!(s.1.iter().all(Offload::is_complete));
        let (segs, ids) = inner_frames(&s, 1500);
        check_segments(&f, &segs, 1398);
        assert_eq!(
            (
                st.outputs,
                st.gso_segmented,
                st.gso_segments,
                st.encap_too_big
            ),
            (1, 1, 8, 0)
        );
        // One outer ID per packet, counting.
        for w in ids.windows(2) {
            assert_eq!(w[1], w[0].wrapping_add(1));
        }
        // IPv6 inner over an IPv6 underlay, tagged: the outer UDP checksum covers the
        // segments' completed checksums.
        let (f, o) = tso_frame(true, &[(0x8100, 3)], 9_000, 1354);
        let (s, st) = run_offload(TUN6, &resolver(1500), &f, o, false);
        assert_eq!(st.gso_segments, 7);
        let (segs, _) = inner_frames(&s, 1500);
        check_segments(&f, &segs, 1354);
    }

    /// A [`Collect`] whose ports also take UDP super-frames.
    struct UsoCollect(Collect);

    impl PacketSink for UsoCollect {
        fn send(&mut self, port: PortId, frame: &[u8], offload: Offload) -> bool {
            self.0.send(port, frame, offload)
        }
        fn send_with(
            &mut self,
            port: PortId,
            len: usize,
            offload: Offload,
            fill: &mut dyn FnMut(&mut [u8]) -> usize,
        ) -> bool {
            self.0.send_with(port, len, offload, fill)
        }
        fn offloads(&self, _: PortId) -> bool {
            true
        }
        fn udp_segmentation(&self, _: PortId) -> bool {
            true
        }
    }

    /// To an uplink that takes UDP super-frames, VXLAN output hands over the VXLAN
    /// packets of a super-frame as few datagrams for the kernel to cut: cut as the
    /// kernel would ([`Segmenter`] on UDP), they are the very packets written one by one
    /// otherwise, but for the outer UDP checksum, which they always carry.
    #[test]
    fn vxlan_output_hands_segments_to_udp_segmentation_as_one_datagram() {
        for (v6, tun, payload, frames) in [
            (false, TUN4, 10_000, 1),
            (false, TUN4, 65_000, 2),
            (true, TUN6, 9_000, 1),
        ] {
            let (f, o) = tso_frame(v6, &[], payload, 1354);
            let (one_by_one, _) = run_offload(tun, &resolver(1500), &f, o, true);
            let a: Actions = tun.parse().unwrap();
            let mut ex = Executor::new();
            let mut sink = UsoCollect(Collect(Vec::new(), Vec::new(), true));
            let env = ExecEnv {
                resolver: &resolver(1500),
                tunnel_port: Some(PortId(9)),
                in_port: Some(PortId(1)),
            };
            let pkt = Packet {
                frame: &f,
                offload: o,
                flow_hash: 42,
            };
            ex.execute(pkt, a.as_slice(), &env, &mut sink);
            let (sent, offloads) = (&sink.0.0, &sink.0.1);
            assert_eq!(sent.len(), frames, "payload {payload}");
            assert_eq!(ex.stats.udp_super_frames, frames as u64);
            assert_eq!(ex.stats.gso_segments, one_by_one.0.len() as u64);
            let mut cut = Vec::new();
            for ((port, frame), o) in sent.iter().zip(offloads) {
                assert_eq!(*port, PortId(2));
                let g = o.gso.expect("a UDP super-frame");
                assert_eq!(g.kind, GsoKind::Udp);
                let over = if v6 { 70 } else { 50 };
                assert_eq!(
                    o.csum.map(|c| (c.start, c.offset)),
                    Some((over as u16 - 16, 6))
                );
                assert_eq!(usize::from(o.hdr_len), over - 8);
                assert!(frame.len() - 14 <= 65_535 + if v6 { 40 } else { 0 });
                let mut seg = Segmenter::new(frame, GsoKind::Udp, usize::from(g.size)).unwrap();
                let mut buf = vec![0u8; 65_600];
                while let Some(n) = seg.write_next(&mut buf).unwrap() {
                    cut.push(buf[..n].to_vec());
                }
            }
            assert_eq!(cut.len(), one_by_one.0.len(), "payload {payload}");
            for (i, (c, (_, w))) in cut.iter_mut().zip(&one_by_one.0).enumerate() {
                let d = vxlan::decapsulate(c, 4789).unwrap().expect("vxlan");
                let udp = crate::wire::UdpPacket::new_checked(&c[d.inner_offset - 16..]).unwrap();
                assert!(udp.checksum() != 0 && udp.verify_checksum(&d.src, &d.dst));
                let mut w = w.clone();
                if !v6 {
                    // Written one by one over IPv4, the outer checksum is off by default.
                    c[40..42].fill(0);
                    w[40..42].fill(0);
                }
                assert_eq!(*c, w, "segment {i} of {payload}");
            }
        }
    }

    #[test]
    fn a_super_frame_whose_segments_do_not_fit_is_answered() {
        // A VF at MTU 1500 (segments of 1448) over a 1500-byte path: 1514 > 1464.
        let (f, o) = tso_frame(false, &[], 10_000, 1448);
        let (s, st) = run_offload(TUN4, &resolver(1500), &f, o, true);
        assert_eq!(s.0.len(), 1);
        assert_eq!(s.0[0].0, PortId(1), "an ICMP reply to the in-port");
        check_frag_needed(&f, &s.0[0].1, 14, 1450);
        assert_eq!(
            (st.encap_too_big, st.too_big_replies, st.outputs),
            (1, 1, 0)
        );

        // Without DF, TCP is cut to the payload that fits instead: 1464 - 66.
        let mut nodf = f.clone();
        let mut ip = Ipv4Packet::new_unchecked(&mut nodf[14..34]);
        ip.set_frag(false, false, 0);
        ip.fill_checksum();
        let (s, st) = run_offload(TUN4, &resolver(1500), &nodf, o, true);
        assert_eq!((st.encap_too_big, st.gso_segments), (1, 8));
        let (segs, _) = inner_frames(&s, 1500);
        check_segments(&nodf, &segs, 1398);
    }

    #[test]
    fn partial_checksums_are_completed_in_the_tunnel() {
        let mut f = tcp_frame(false, &[], 1000, crate::wire::tcp::flags::ACK);
        let full = f.clone();
        let lay = Layout::parse(&f).unwrap();
        let c = gso::prepare_partial(&mut f, &lay).unwrap();
        let o = Offload {
            csum: Some(c),
            ..Offload::NONE
        };
        for tun in [TUN4, TUN6] {
            let (s, st) = run_offload(tun, &resolver(1500), &f, o, true);
            assert_eq!((st.outputs, st.csum_completed), (1, 1));
            let (inner, _) = inner_frames(&s, 1500);
            assert_eq!(inner, vec![full.clone()]);
        }
        // To a port without offloads, in place of the kernel.
        let (s, st) = run_offload("2", &resolver(1500), &f, o, false);
        assert_eq!(s.0[0].1, full);
        assert_eq!(st.csum_completed, 1);
        // Too big for the path without DF: completed, then fragmented.
        let mut big = tcp_frame(false, &[], 3000, crate::wire::tcp::flags::ACK);
        let mut ip = Ipv4Packet::new_unchecked(&mut big[14..34]);
        ip.set_frag(false, false, 0);
        ip.fill_checksum();
        let full = big.clone();
        let lay = Layout::parse(&big).unwrap();
        let c = gso::prepare_partial(&mut big, &lay).unwrap();
        let o = Offload {
            csum: Some(c),
            ..Offload::NONE
        };
        let (s, st) = run_offload(TUN4, &resolver(1500), &big, o, true);
        assert_eq!((st.fragmented, st.csum_completed), (1, 1));
        let mut data = Vec::new();
        for (_, pkt) in &s.0 {
            let d = vxlan::decapsulate(pkt, 4789).unwrap().unwrap();
            let ip = Ipv4Packet::new_checked(&d.inner(pkt)[14..]).unwrap();
            data.extend_from_slice(ip.payload());
        }
        assert_eq!(
            data,
            &full[34..],
            "the fragments carry the completed segment"
        );
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
