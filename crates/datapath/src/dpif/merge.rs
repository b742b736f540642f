//! Counters of several datapath threads as one: [`DpStats::merge`] adds another thread's
//! counters and its ports', [`PortStats::merge`] one port's over the sockets the threads
//! hold on it (`PACKET_FANOUT`). Every field is destructured: a new counter breaks the
//! build here until it says how it sums.

use super::DpStats;
use crate::PortId;
use crate::exec::ExecStats;
use crate::port::PortStats;

impl DpStats {
    /// Adds `other`'s counters (another datapath thread's) to these; a port both have
    /// is merged ([`PortStats::merge`]), one only `other` has is added, in id order.
    pub fn merge(&mut self, other: &DpStats) {
        let DpStats {
            rx,
            decap,
            hits,
            misses,
            upcall_drops,
            rx_dropped,
            malformed,
            packet_outs,
            tc_carried,
            ipsec_rx,
            ipsec_clear_dropped,
            kernel_rx_ignored,
            tx_dropped,
            exec,
            ports,
        } = other;
        self.rx += rx;
        self.decap += decap;
        self.hits += hits;
        self.misses += misses;
        self.upcall_drops += upcall_drops;
        self.rx_dropped += rx_dropped;
        for (m, o) in self.malformed.iter_mut().zip(malformed) {
            *m += o;
        }
        self.packet_outs += packet_outs;
        self.tc_carried += tc_carried;
        self.ipsec_rx += ipsec_rx;
        self.ipsec_clear_dropped += ipsec_clear_dropped;
        self.kernel_rx_ignored += kernel_rx_ignored;
        self.tx_dropped += tx_dropped;
        self.exec.add(exec);
        for (id, st) in ports {
            match self.ports.binary_search_by_key(id, |(i, _)| *i) {
                Ok(i) => self.ports[i].1.merge(st),
                Err(i) => self.ports.insert(i, (*id, *st)),
            }
        }
    }

    /// The counters of several threads, summed.
    pub fn sum<'a>(threads: impl IntoIterator<Item = &'a DpStats>) -> DpStats {
        let mut total = DpStats::default();
        for t in threads {
            total.merge(t);
        }
        total
    }

    /// One port's counters, if it has I/O.
    pub fn port(&self, id: PortId) -> Option<&PortStats> {
        self.ports.iter().find(|(i, _)| *i == id).map(|(_, s)| s)
    }
}

impl PortStats {
    /// Adds the counters of another socket on the same port: counts and ring frames add
    /// up; the port is down if any socket is; the frame size and the MTU the rings were
    /// sized for are the smallest of the sockets that have a ring (the one that
    /// truncates first).
    pub fn merge(&mut self, other: &PortStats) {
        let PortStats {
            rx_truncated,
            rx_large,
            rx_gso,
            kernel_drops,
            tx_dropped,
            errors,
            down,
            ring_frames,
            ring_frame_size,
            ring_mtu,
            rx_malformed,
            upcall_drops,
        } = *other;
        let least = |a: u32, b: u32| match (a, b) {
            (0, b) => b,
            (a, 0) => a,
            (a, b) => a.min(b),
        };
        self.rx_truncated += rx_truncated;
        self.rx_large += rx_large;
        self.rx_gso += rx_gso;
        self.kernel_drops += kernel_drops;
        self.tx_dropped += tx_dropped;
        self.errors += errors;
        self.down |= down;
        self.ring_frames += ring_frames;
        self.ring_frame_size = least(self.ring_frame_size, ring_frame_size);
        self.ring_mtu = least(self.ring_mtu, ring_mtu);
        self.rx_malformed += rx_malformed;
        self.upcall_drops += upcall_drops;
    }
}

impl ExecStats {
    /// Adds another executor's counters.
    pub fn add(&mut self, other: &ExecStats) {
        let ExecStats {
            outputs,
            sink_drops,
            no_route,
            next_hop_unresolved,
            not_managed,
            ipsec_blocked,
            kernel_out,
            ipsec_no_sa,
            encap_too_big,
            too_big_replies,
            fragmented,
            invalid,
            userspace,
            gso_passed,
            gso_segmented,
            gso_segments,
            udp_super_frames,
            tunnel_super_frames,
            csum_completed,
            offload_invalid,
        } = *other;
        self.outputs += outputs;
        self.sink_drops += sink_drops;
        self.no_route += no_route;
        self.next_hop_unresolved += next_hop_unresolved;
        self.not_managed += not_managed;
        self.ipsec_blocked += ipsec_blocked;
        self.kernel_out += kernel_out;
        self.ipsec_no_sa += ipsec_no_sa;
        self.encap_too_big += encap_too_big;
        self.too_big_replies += too_big_replies;
        self.fragmented += fragmented;
        self.invalid += invalid;
        self.userspace += userspace;
        self.gso_passed += gso_passed;
        self.gso_segmented += gso_segmented;
        self.gso_segments += gso_segments;
        self.udp_super_frames += udp_super_frames;
        self.tunnel_super_frames += tunnel_super_frames;
        self.csum_completed += csum_completed;
        self.offload_invalid += offload_invalid;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(kernel_drops: u64, ring_frames: u32, ring_mtu: u32, down: bool) -> PortStats {
        PortStats {
            kernel_drops,
            ring_frames,
            ring_frame_size: if ring_frames > 0 { 2048 } else { 0 },
            ring_mtu,
            down,
            tx_dropped: 1,
            ..PortStats::default()
        }
    }

    #[test]
    fn threads_sum_and_ports_merge_by_id() {
        let mut a = DpStats {
            rx: 10,
            hits: 7,
            ports: vec![
                (PortId(1), port(3, 1024, 1500, false)),
                (PortId(5), port(0, 1024, 1500, false)),
            ],
            ..DpStats::default()
        };
        a.malformed[0] = 2;
        a.exec.outputs = 9;
        let mut b = DpStats {
            rx: 5,
            misses: 1,
            ports: vec![
                (PortId(1), port(4, 1024, 1450, true)),
                (PortId(3), port(1, 0, 0, false)),
            ],
            ..DpStats::default()
        };
        b.malformed[0] = 1;
        b.exec.outputs = 4;
        let s = DpStats::sum([&a, &b]);
        assert_eq!((s.rx, s.hits, s.misses), (15, 7, 1));
        assert_eq!((s.malformed[0], s.exec.outputs), (3, 13));
        let ids: Vec<u32> = s.ports.iter().map(|(i, _)| i.0).collect();
        assert_eq!(ids, [1, 3, 5]);
        let p1 = s.port(PortId(1)).expect("port 1");
        assert_eq!(
            (
                p1.kernel_drops,
                p1.ring_frames,
                p1.ring_mtu,
                p1.down,
                p1.tx_dropped
            ),
            (7, 2048, 1450, true, 2)
        );
        assert_eq!(s.port(PortId(3)).map(|p| p.ring_mtu), Some(0));
        // One thread: the sum is that thread's counters.
        assert_eq!(DpStats::sum([&a]), a);
    }
}
