//! Executing a flow's actions on one packet in software.
//!
//! [`Executor::execute`] walks the action list over a frame. The frame is read in place
//! until an action modifies it (push/pop VLAN), at which point it is copied once into the
//! executor's scratch buffer (allocated once, reused). Outputs go to a [`PacketSink`]
//! (the datapath's per-port transmit batches); an output to the tunnel port is a VXLAN
//! encapsulation written straight into the egress uplink's batch slot.
//!
//! Encapsulation asks the [`TunnelResolver`] for the egress uplink, source IP and MACs.
//! A packet whose encapsulated size would exceed the path MTU is **dropped and counted**
//! (`encap_too_big`), not answered with ICMP: the representor MTU rule (representor MTU +
//! 50 <= uplink MTU) is what keeps VMs from sending such packets, and flowd refuses to
//! offload flows that break it, so a drop here points at a misconfigured MTU.

use crate::PortId;
use crate::actions::{Action, TunnelAttrs};
use crate::tunnel::TunnelResolver;
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
}

/// Per-executor drop counters (read by the datapath's statistics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecStats {
    /// Packets output (each output counts once).
    pub outputs: u64,
    /// Outputs the sink refused (transmit batch full, unknown port).
    pub sink_drops: u64,
    /// Tunnel outputs with no route or an unresolved next hop.
    pub no_route: u64,
    /// Tunnel outputs whose encapsulated packet exceeded the path MTU.
    pub encap_too_big: u64,
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
                            Some(t) => encap(pkt, &t, key_hash, env, sink, &mut self.stats),
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

/// VXLAN-encapsulates `inner` toward `t.dst` into the egress uplink's transmit batch.
fn encap(
    inner: &[u8],
    t: &TunnelAttrs,
    key_hash: u64,
    env: &ExecEnv<'_>,
    sink: &mut dyn PacketSink,
    stats: &mut ExecStats,
) {
    let Some(route) = env.resolver.resolve(t.dst) else {
        stats.no_route += 1;
        return;
    };
    let overhead = match t.dst {
        IpAddr::V4(_) => vxlan::VXLAN_OVERHEAD_V4,
        IpAddr::V6(_) => vxlan::VXLAN_OVERHEAD_V6,
    };
    // The outer IP packet is everything but the outer Ethernet header.
    if inner.len() + overhead - 14 > usize::from(route.mtu) {
        stats.encap_too_big += 1;
        return;
    }
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
    let mut failed = false;
    let sent = sink.send_with(route.egress, &mut |slot| {
        vxlan::encapsulate(inner, &outer, slot).unwrap_or_else(|_| {
            failed = true;
            0
        })
    });
    if sent {
        stats.outputs += 1;
    } else if failed {
        stats.invalid += 1;
    } else {
        stats.sink_drops += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::Actions;
    use crate::tunnel::{StaticResolver, TunnelRoute};

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
        let a: Actions = actions.parse().unwrap();
        let mut ex = Executor::new();
        let mut sink = Collect::default();
        let env = ExecEnv {
            resolver,
            tunnel_port: Some(PortId(9)),
        };
        ex.execute(&frame(), 42, a.as_slice(), &env, &mut sink);
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

    #[test]
    fn tunnel_output_without_set_is_invalid() {
        let (s, st) = run("9", &StaticResolver::new());
        assert!(s.0.is_empty());
        assert_eq!(st.invalid, 1);
    }
}
