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
//! - **VXLAN output** to an uplink that takes UDP-tunnel super-frames
//!   ([`PacketSink::tunnel_segmentation`]: an AF_PACKET port with a
//!   [`TunnelInjector`](crate::port::TunnelInjector), Linux 6.17): a TCP super-frame goes
//!   out whole behind one set of outer headers, described by a [`crate::wire::TunnelGso`]
//!   for the kernel (or the NIC) to cut (`tunnel_super_frames`): no per-segment work.
//! - **VXLAN output** otherwise: the kernel offers no UDP-tunnel segmentation through AF_PACKET
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
//! On a path the host's IPsec policy protects
//! ([`Via::Kernel`](crate::tunnel::Via::Kernel)) the frame goes to the tunnel port
//! instead, whose I/O hands it to the kernel's IP output
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

mod offload;
mod segment;
mod tunnel;

use crate::PortId;
use crate::actions::{Action, TunnelAttrs};
use crate::tunnel::TunnelResolver;
use crate::wire::Offload;
use crate::wire::gso;
use offload::{finish_in_software, pass_through};

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
    /// Whether `port` takes UDP-tunnel super-frames (a VXLAN frame whose inner TCP
    /// super-frame the kernel cuts, [`crate::wire::TunnelGso`]; its
    /// [`crate::port::Port::tunnel_segmentation`]); false by default.
    fn tunnel_segmentation(&self, _port: PortId) -> bool {
        false
    }
    /// Sends one frame made of `parts` (at most two: outer headers and a frame) on
    /// `port` now, from the caller's buffers where the port can ([`crate::port::Port::
    /// send_direct`]: no copy into a transmit batch, for super-frames), else queued like
    /// [`Self::send_with`]; false if it was dropped.
    fn send_direct(&mut self, port: PortId, parts: &[&[u8]], offload: Offload) -> bool {
        send_parts_copied(self, port, parts, offload)
    }
}

/// Queues the frame made of `parts` on `port` through [`PacketSink::send_with`] (a copy):
/// [`PacketSink::send_direct`] for a port that cannot send directly.
pub fn send_parts_copied<S: PacketSink + ?Sized>(
    sink: &mut S,
    port: PortId,
    parts: &[&[u8]],
    offload: Offload,
) -> bool {
    let len = parts.iter().map(|p| p.len()).sum();
    sink.send_with(port, len, offload, &mut |slot: &mut [u8]| {
        let mut at = 0;
        for p in parts {
            match slot.get_mut(at..at + p.len()) {
                Some(d) => d.copy_from_slice(p),
                None => return 0,
            }
            at += p.len();
        }
        at
    })
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
    /// TCP super-frames handed whole to an uplink inside VXLAN, for the kernel's
    /// UDP-tunnel segmentation to cut ([`crate::port::Port::tunnel_segmentation`]).
    pub tunnel_super_frames: u64,
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
}

/// The current packet's bytes: the received frame, or the scratch buffer's copy.
fn cur_bytes<'s>(scratch: &'s [u8], frame: &'s [u8], cur: Cur) -> &'s [u8] {
    match cur.len {
        Some(n) => scratch.get(..n).unwrap_or(&[]),
        None => frame,
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

/// What became of one encapsulated frame.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sent {
    Yes,
    /// Encapsulation failed (the frame or outer headers are unusable).
    Invalid,
    /// The sink refused it.
    Refused,
}

#[cfg(test)]
mod tests;
