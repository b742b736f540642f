//! The slow path's side of a miss ([`Upcaller`]): a complete frame goes to the
//! [`MissHandler`](super::MissHandler) and a synchronous verdict is executed at once; a
//! super-frame goes up as its segments, a partial checksum completed first (the slow
//! path takes complete frames).

use super::tx::TxSink;
use super::{Miss, MissHandler, MissVerdict};
use crate::exec::{ExecEnv, Executor, Packet};
use crate::flow::FlowKey;
use crate::wire::gso::{self, Segmenter};

/// The slow path's side of one packet's miss, borrowed from the datapath.
pub(super) struct Upcaller<'a> {
    pub(super) handler: &'a mut dyn MissHandler,
    pub(super) exec: &'a mut Executor,
    pub(super) misses: &'a mut u64,
    pub(super) drops: &'a mut u64,
    pub(super) env: &'a ExecEnv<'a>,
    pub(super) now: u64,
}

impl Upcaller<'_> {
    /// Hands a complete frame to the slow path, and runs a synchronous verdict on it.
    pub(super) fn one(&mut self, key: &FlowKey, pkt: Packet<'_>, sink: &mut TxSink<'_>) {
        *self.misses += 1;
        let miss = Miss {
            key,
            frame: pkt.frame,
            now: self.now,
        };
        match self.handler.miss(miss) {
            MissVerdict::Execute(actions) => {
                self.exec.execute(pkt, actions.as_slice(), self.env, sink);
            }
            MissVerdict::Queued => {}
            MissVerdict::Dropped => *self.drops += 1,
        }
    }

    /// The slow path takes complete frames: a super-frame goes up as its segments (each
    /// key with the segment's TCP flags: CWR only on the first, FIN and PSH only on the
    /// last), a partial checksum completed first; both built in `scratch`.
    pub(super) fn incomplete(
        &mut self,
        key: &FlowKey,
        pkt: Packet<'_>,
        scratch: &mut [u8],
        sink: &mut TxSink<'_>,
    ) {
        let o = pkt.offload;
        let Some(g) = o.gso else {
            let n = pkt.frame.len().min(scratch.len());
            scratch[..n].copy_from_slice(&pkt.frame[..n]);
            let done = o.csum.map(|c| gso::complete_checksum(&mut scratch[..n], c));
            if !matches!(done, Some(Ok(()))) {
                self.exec.stats.offload_invalid += 1;
                return;
            }
            self.exec.stats.csum_completed += 1;
            self.one(key, Packet::new(&scratch[..n], pkt.flow_hash), sink);
            return;
        };
        let Ok(mut segs) = Segmenter::new(pkt.frame, g.kind, usize::from(g.size)) else {
            self.exec.stats.offload_invalid += 1;
            return;
        };
        self.exec.stats.gso_segmented += 1;
        let l4 = segs.layout().l4;
        while let Ok(Some(n)) = segs.write_next(scratch) {
            self.exec.stats.gso_segments += 1;
            let seg = &scratch[..n];
            let mut k = *key;
            if key.ip_proto == crate::wire::ip_proto::TCP
                && let Some(&[hi, lo]) = seg.get(l4 + 12..l4 + 14)
            {
                k.tcp_flags = u16::from_be_bytes([hi, lo]) & crate::wire::tcp::flags::MASK;
            }
            self.one(&k, Packet::new(seg, pkt.flow_hash), sink);
        }
    }
}
