//! The receive side of the datapath loop, per frame: decapsulation of VXLAN to a local
//! VTEP (and which copy of an IPsec-protected packet counts), key extraction (malformed
//! frames counted by reason), the cache lookup, execution of a hit, and the upcall of a
//! miss. A UDP super-frame of VXLAN packets is cut into its datagrams first.

use super::tx::TxSink;
use super::upcall::Upcaller;
use super::{Datapath, PortRole};
use crate::PortId;
use crate::cache::key_hash;
use crate::exec::{ExecEnv, Packet};
use crate::flow::{FlowKey, Malformed, TunnelMeta, extract_checked};
use crate::port::PacketBatch;
use crate::wire::gso::{self, Segmenter};
use crate::wire::{GsoKind, Offload, vxlan};

/// What [`Datapath::try_decap`] found.
enum Decap<'f> {
    /// Not VXLAN to us: processed as it is.
    No,
    /// VXLAN to us: the tunnel metadata, the inner frame, the tunnel port, where the
    /// inner frame starts.
    Yes(TunnelMeta, &'f [u8], PortId, usize),
    /// Off an uplink, from a remote an inbound IPsec policy covers: dropped.
    ClearRefused,
    /// From the kernel, from a remote no inbound policy covers: the uplink's copy counts.
    KernelCopyIgnored,
}
impl Datapath {
    /// Processes a received batch.
    pub fn process(&mut self, in_port: PortId, role: PortRole, batch: &PacketBatch, now: u64) {
        for (frame, offload) in batch.iter_offload() {
            self.stats.rx += 1;
            if frame.is_empty() {
                self.stats.rx_dropped += 1;
                continue;
            }
            self.process_one(in_port, role, frame, offload, now);
        }
        self.flush();
    }

    /// One received frame: decapsulated if it is VXLAN to us, its key extracted, looked
    /// up and executed, or handed to the slow path.
    #[inline]
    fn process_one(
        &mut self,
        in_port: PortId,
        role: PortRole,
        frame: &[u8],
        offload: Offload,
        now: u64,
    ) {
        let Some((key, inner, offload)) = self.classify(in_port, role, frame, offload, now) else {
            return;
        };
        let pkt = Packet {
            frame: inner,
            offload,
            flow_hash: key.flow_hash(),
        };
        self.forward(in_port, &key, pkt, now);
    }

    /// The key of a received frame, the frame to process (the inner one, decapsulated)
    /// and its metadata; None if the frame went no further here (counted: malformed,
    /// refused, ignored; or a UDP super-frame, whose datagrams were processed one by one).
    #[inline]
    fn classify<'f>(
        &mut self,
        in_port: PortId,
        role: PortRole,
        frame: &'f [u8],
        offload: Offload,
        now: u64,
    ) -> Option<(FlowKey, &'f [u8], Offload)> {
        let (key, inner, offload) = match self.try_decap(role, frame) {
            Decap::Yes(meta, inner, tport, at) => {
                // The metadata of the inner frame: its offsets move with it. A partial
                // checksum of the outer headers leaves a complete inner frame; a
                // super-frame of outer datagrams is cut into them, each decapsulated.
                let o = match offload.shifted(0, -(at as isize)) {
                    Some(o) => o,
                    None if offload.gso.is_none() => Offload::NONE,
                    None if offload.gso.is_some_and(|g| g.kind == GsoKind::Udp) => {
                        self.split_datagrams(in_port, role, frame, offload, now);
                        return None;
                    }
                    None => {
                        self.exec.stats.offload_invalid += 1;
                        return None;
                    }
                };
                self.stats.decap += 1;
                if role == PortRole::Tunnel {
                    self.stats.ipsec_rx += 1;
                }
                (extract_checked(inner, tport, Some(&meta)), inner, o)
            }
            Decap::ClearRefused => {
                self.stats.ipsec_clear_dropped += 1;
                return None;
            }
            Decap::KernelCopyIgnored => {
                self.stats.kernel_rx_ignored += 1;
                return None;
            }
            Decap::No => (extract_checked(frame, in_port, None), frame, offload),
        };
        match key {
            (key, _, None) => Some((key, inner, offload)),
            (_, _, Some(why)) => {
                self.count_malformed(in_port, why);
                None
            }
        }
    }

    /// Looks `key` up and runs the flow's actions on `pkt`; a miss (or a `userspace`
    /// action) goes to the slow path, and what it refused is counted on `in_port`.
    #[inline]
    fn forward(&mut self, in_port: PortId, key: &FlowKey, pkt: Packet<'_>, now: u64) {
        let hash = key_hash(key);
        let env = ExecEnv {
            resolver: self.resolver.as_ref(),
            tunnel_port: self.tunnel_port,
            in_port: Some(PortId(key.in_port)),
        };
        let mut sink = TxSink {
            ports: &mut self.ports,
            tx_dropped: &mut self.stats.tx_dropped,
        };
        if let Some(entry) = self.cache.lookup_hashed(key, hash) {
            self.stats.hits += 1;
            if entry.in_tc() {
                // A copy of a packet tc forwards itself (taps run before tc ingress):
                // tc's counters account for it; forwarding it here would duplicate it.
                self.stats.tc_carried += 1;
                return;
            }
            let packets = pkt.offload.packets(pkt.frame.len());
            entry.record(packets, pkt.frame.len() as u64, key.tcp_flags, now);
            let up = self
                .exec
                .execute(pkt, entry.actions().as_slice(), &env, &mut sink);
            if !up {
                return;
            }
        }
        let mut up = Upcaller {
            handler: self.miss.as_mut(),
            exec: &mut self.exec,
            misses: &mut self.stats.misses,
            drops: &mut self.stats.upcall_drops,
            env: &env,
            now,
        };
        let dropped = *up.drops;
        if pkt.offload.is_complete() {
            up.one(key, pkt, &mut sink);
        } else {
            up.incomplete(key, pkt, &mut self.miss_scratch, &mut sink);
        }
        let dropped = self.stats.upcall_drops - dropped;
        if dropped > 0
            && let Some(Some(p)) = self.ports.get_mut(in_port.0 as usize)
        {
            p.upcall_drops += dropped;
        }
    }

    /// Counts a malformed frame received on `port` (dropped).
    fn count_malformed(&mut self, port: PortId, why: Malformed) {
        if let Some(n) = self.stats.malformed.get_mut(why.index()) {
            *n += 1;
        }
        if let Some(Some(p)) = self.ports.get_mut(port.0 as usize) {
            p.malformed += 1;
        }
    }

    /// Cuts a UDP super-frame of VXLAN packets (a sender's USO, as flowd's own VXLAN
    /// output sends; or GRO of forwarded UDP) into its datagrams and takes each as if
    /// received alone.
    fn split_datagrams(
        &mut self,
        in_port: PortId,
        role: PortRole,
        frame: &[u8],
        offload: Offload,
        now: u64,
    ) {
        let Some(g) = offload.gso else { return };
        let mut scratch = std::mem::take(&mut self.split_scratch);
        scratch.resize(gso::MAX_FRAME, 0);
        match Segmenter::new(frame, g.kind, usize::from(g.size)) {
            Ok(mut segs) => {
                self.exec.stats.gso_segmented += 1;
                while let Ok(Some(n)) = segs.write_next(&mut scratch) {
                    self.exec.stats.gso_segments += 1;
                    self.process_one(in_port, role, &scratch[..n], Offload::NONE, now);
                }
            }
            Err(_) => self.exec.stats.offload_invalid += 1,
        }
        self.split_scratch = scratch;
    }

    /// If `frame` is VXLAN to a local VTEP that arrived where it counts, its tunnel
    /// metadata, inner frame and the tunnel port. VXLAN from a remote an inbound IPsec
    /// policy covers counts only as the kernel delivered it through the tunnel port
    /// (decrypted, checked against the policy); any other counts only off an uplink: one
    /// copy of each packet is processed, and cleartext never passes for encrypted.
    fn try_decap<'f>(&self, role: PortRole, frame: &'f [u8]) -> Decap<'f> {
        if role != PortRole::Uplink && role != PortRole::Tunnel {
            return Decap::No;
        }
        let Some(tport) = self.tunnel_port else {
            return Decap::No;
        };
        let Ok(Some(d)) = vxlan::decapsulate(frame, self.cfg.vxlan_port) else {
            return Decap::No;
        };
        if !self.cfg.local_vteps.contains(&d.dst) {
            return Decap::No;
        }
        let protected = self.resolver.inbound_protected(d.src, d.dst);
        match (role, protected) {
            (PortRole::Uplink, true) => return Decap::ClearRefused,
            (PortRole::Tunnel, false) => return Decap::KernelCopyIgnored,
            _ => {}
        }
        match frame.get(d.inner_offset..d.inner_offset + d.inner_len) {
            Some(inner) => Decap::Yes(TunnelMeta::from(&d), inner, tport, d.inner_offset),
            None => Decap::No,
        }
    }
}
