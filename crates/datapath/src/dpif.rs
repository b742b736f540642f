//! [`Datapath`]: one datapath thread's ports, flow cache and packet loop.
//!
//! Per received batch: each frame from an uplink that is VXLAN to a local VTEP is
//! decapsulated (its key gets `in_port` = the tunnel port and the outer headers as tunnel
//! metadata); the key is extracted and looked up in the [`FlowCache`] (EMC, then the
//! megaflow classifier); a hit runs the flow's actions through the [`Executor`] into the
//! ports' transmit batches, a miss goes to the [`MissHandler`] (the upcall). Transmit
//! batches are flushed at the end of every receive batch. A frame a NIC would drop
//! (see [`crate::flow::extract_checked`]: IHL < 5, lengths beyond the frame, TCP or UDP
//! headers cut short, ...) is dropped before the lookup and counted by reason
//! ([`DpStats::malformed`]) and per port; a miss the slow path refuses is counted per
//! port too.
//!
//! # Ports whose device is gone
//! A port that fails with an error for which [`PortError::is_device_gone`] holds (on
//! receive, on transmit, or when `poll()` reported an error on it and
//! [`Port::take_error`] read a gone device), that reports [`PortStats::down`], or whose
//! descriptor `poll()` reports hung up or invalid (`POLLHUP`, `POLLNVAL`) is marked down:
//! it leaves the poll set (a dead socket would otherwise keep waking `poll()`), is not
//! read any more, and what is sent to it is dropped, counted in the executor's
//! `sink_drops` and in the port's [`PortStats::tx_dropped`]. [`Datapath::down_ports`] lists
//! such ports and [`DpStats::ports`] flags them; a [`PortOp::Add`] with the same id
//! replaces the port and brings it back. Transient errors (interrupted, would block) never
//! mark a port down.
//!
//! # Thread-safety
//! A `Datapath` is owned by its thread; nothing on the per-packet path locks or
//! allocates. Flow changes arrive as [`FlowOp`]s and slow-path decisions for upcalled
//! packets as [`PacketOut`]s, both through bounded queues drained between batches.

use crate::PortId;
use crate::actions::Actions;
use crate::cache::{CacheConfig, FlowCache, FlowOp, key_hash};
use crate::exec::{ExecEnv, ExecStats, Executor, Packet, PacketSink};
use crate::flow::{FlowKey, Malformed, TunnelMeta, extract_checked};
use crate::port::{PacketBatch, Poller, Port, PortError, PortStats, Waker};
use crate::tunnel::TunnelResolver;
use crate::wire::gso::{self, Segmenter};
use crate::wire::{GsoKind, Offload, vxlan};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};

pub use vocab::PortRole;

/// Datapath settings.
#[derive(Debug, Clone)]
pub struct DpConfig {
    /// Frames per receive batch.
    pub batch: usize,
    /// Largest complete frame sent (bytes, L2): each port's transmit batch holds `batch`
    /// of them, and one GSO super-frame of up to [`gso::MAX_FRAME`] bytes besides. The
    /// receive batch holds `batch` super-frames.
    pub max_frame: usize,
    /// UDP port VXLAN arrives on.
    pub vxlan_port: u16,
    /// Local VTEP addresses: VXLAN to one of these is decapsulated.
    pub local_vteps: Vec<IpAddr>,
    /// Cache sizing.
    pub cache: CacheConfig,
}

impl Default for DpConfig {
    fn default() -> Self {
        Self {
            batch: 32,
            max_frame: 9216 + 18,
            vxlan_port: 4789,
            local_vteps: Vec::new(),
            cache: CacheConfig::default(),
        }
    }
}

/// A packet that missed the cache, handed to the slow path.
#[derive(Debug)]
pub struct Miss<'a> {
    /// The key (for decapsulated packets, with `in_port` = the tunnel port).
    pub key: &'a FlowKey,
    /// The frame (the inner frame for decapsulated packets).
    pub frame: &'a [u8],
    /// The caller's clock.
    pub now: u64,
}

/// What the slow path did with a miss.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MissVerdict {
    /// Decided synchronously: execute these actions on the packet now.
    Execute(Actions),
    /// Queued for a handler thread; its decision comes back as a [`PacketOut`].
    Queued,
    /// Dropped (upcall queue full); counted by the handler.
    Dropped,
}

/// The slow path, as the datapath sees it.
pub trait MissHandler: Send {
    /// Handles one miss without blocking.
    fn miss(&mut self, miss: Miss<'_>) -> MissVerdict;
}

/// Drops every miss (a datapath with static flows only).
#[derive(Debug, Default, Clone, Copy)]
pub struct DropMisses;

impl MissHandler for DropMisses {
    fn miss(&mut self, _: Miss<'_>) -> MissVerdict {
        MissVerdict::Dropped
    }
}

/// A slow-path decision for an upcalled packet, executed by the datapath thread.
#[derive(Debug, Clone)]
pub struct PacketOut {
    /// The packet's key (with tunnel metadata, if it was decapsulated).
    pub key: FlowKey,
    /// The frame.
    pub frame: Vec<u8>,
    /// What to do with it.
    pub actions: Actions,
}

/// A port change for a running datapath thread (ports plugged or unplugged while it
/// runs: a VM's representor).
#[non_exhaustive]
pub enum PortOp {
    /// Adds (or replaces) a port, as [`Datapath::add_port`].
    Add {
        /// Its number.
        id: PortId,
        /// What it is.
        role: PortRole,
        /// Its I/O (none for the tunnel port).
        io: Option<Box<dyn Port>>,
    },
    /// Removes a port, as [`Datapath::remove_port`]; its I/O is closed.
    Remove(PortId),
}

impl std::fmt::Debug for PortOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortOp::Add { id, role, io } => f
                .debug_struct("Add")
                .field("id", id)
                .field("role", role)
                .field("io", &io.is_some())
                .finish(),
            PortOp::Remove(id) => f.debug_tuple("Remove").field(id).finish(),
        }
    }
}

/// Datapath counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DpStats {
    /// Frames received.
    pub rx: u64,
    /// Frames decapsulated from VXLAN.
    pub decap: u64,
    /// Cache hits (EMC or megaflow).
    pub hits: u64,
    /// Cache misses handed to the slow path.
    pub misses: u64,
    /// Misses the slow path dropped (upcall queue full).
    pub upcall_drops: u64,
    /// Frames dropped on receive (truncated, empty).
    pub rx_dropped: u64,
    /// Malformed frames dropped, by reason (indexed by [`Malformed::index`]; see
    /// [`crate::flow::extract_checked`]): what a NIC would drop is never switched.
    pub malformed: [u64; Malformed::COUNT],
    /// Packet-outs executed.
    pub packet_outs: u64,
    /// Hits on flows a tc filter carries (seen by the tap, forwarded by tc, not here).
    pub tc_carried: u64,
    /// VXLAN frames the kernel delivered (decrypted, its inbound IPsec policy checked)
    /// through the tunnel port and decapsulated.
    pub ipsec_rx: u64,
    /// VXLAN frames read off an uplink from a remote an inbound IPsec policy covers:
    /// dropped (only what the kernel decrypted and checked counts; the kernel itself
    /// drops cleartext where the policy requires ESP).
    pub ipsec_clear_dropped: u64,
    /// Copies of VXLAN the kernel delivered from a remote no inbound policy covers:
    /// ignored (the uplink's copy is the one processed).
    pub kernel_rx_ignored: u64,
    /// Frames dropped by a port on transmit.
    pub tx_dropped: u64,
    /// Execution counters.
    pub exec: ExecStats,
    /// Each port's counters and state (ports with I/O, by id).
    pub ports: Vec<(PortId, PortStats)>,
}

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

struct DpPort {
    role: PortRole,
    io: Option<Box<dyn Port>>,
    /// The port transmits offload metadata ([`Port::offloads`]).
    offloads: bool,
    /// The port takes UDP super-frames ([`Port::udp_segmentation`]; re-read after each
    /// transmit: the kernel may refuse them).
    udp_segmentation: bool,
    tx: PacketBatch,
    /// The port's device is gone: not polled, not transmitted to.
    down: bool,
    /// Frames dropped because the port was down.
    down_drops: u64,
    /// Malformed frames received on the port.
    malformed: u64,
    /// Misses of frames received on the port that the slow path did not take.
    upcall_drops: u64,
}

impl DpPort {
    /// Marks the port down; its pending transmit batch is dropped and counted.
    fn set_down(&mut self) {
        self.down = true;
        self.down_drops += self.tx.len() as u64;
        self.tx.clear();
    }
}

/// The transmit side, as the executor sees it.
struct TxSink<'a> {
    ports: &'a mut [Option<DpPort>],
    tx_dropped: &'a mut u64,
}

impl TxSink<'_> {
    /// The transmit batch of `port`, flushed first if a frame of `len` bytes does not
    /// fit; None (the frame is dropped) for a port that is unknown, has no I/O or is
    /// down.
    fn batch(&mut self, port: PortId, len: usize) -> Option<&mut PacketBatch> {
        let p = self.ports.get_mut(port.0 as usize)?.as_mut()?;
        p.io.as_ref()?;
        if !p.down && !p.tx.fits(len) {
            flush_port(p, self.tx_dropped);
        }
        if p.down {
            p.down_drops += 1;
            return None;
        }
        Some(&mut p.tx)
    }
}

impl PacketSink for TxSink<'_> {
    fn send(&mut self, port: PortId, frame: &[u8], offload: Offload) -> bool {
        self.batch(port, frame.len())
            .is_some_and(|b| b.push_offload(frame, offload))
    }

    fn send_with(
        &mut self,
        port: PortId,
        len: usize,
        offload: Offload,
        fill: &mut dyn FnMut(&mut [u8]) -> usize,
    ) -> bool {
        self.batch(port, len)
            .is_some_and(|b| b.push_with_offload(offload, fill))
    }

    fn offloads(&self, port: PortId) -> bool {
        matches!(self.ports.get(port.0 as usize), Some(Some(p)) if p.offloads)
    }

    fn udp_segmentation(&self, port: PortId) -> bool {
        matches!(self.ports.get(port.0 as usize), Some(Some(p)) if p.udp_segmentation)
    }
}

/// Sends the port's pending transmit batch; what the port did not send is counted in
/// `dropped`. A port whose device is gone is marked down.
fn flush_port(p: &mut DpPort, dropped: &mut u64) {
    let Some(io) = p.io.as_mut() else { return };
    if p.tx.is_empty() || p.down {
        return;
    }
    let sent = match io.send(&p.tx) {
        Ok(n) => n,
        Err(e) => {
            if e.is_device_gone() {
                p.down = true;
            }
            0
        }
    };
    *dropped += (p.tx.len() - sent) as u64;
    p.udp_segmentation = io.udp_segmentation();
    p.tx.clear();
}

/// The slow path's side of one packet's miss, borrowed from the datapath.
struct Upcaller<'a> {
    handler: &'a mut dyn MissHandler,
    exec: &'a mut Executor,
    misses: &'a mut u64,
    drops: &'a mut u64,
    env: &'a ExecEnv<'a>,
    now: u64,
}

impl Upcaller<'_> {
    /// Hands a complete frame to the slow path, and runs a synchronous verdict on it.
    fn one(&mut self, key: &FlowKey, pkt: Packet<'_>, sink: &mut TxSink<'_>) {
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
    fn incomplete(
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

/// One datapath thread's state.
pub struct Datapath {
    cfg: DpConfig,
    ports: Vec<Option<DpPort>>,
    tunnel_port: Option<PortId>,
    cache: FlowCache,
    flow_ops: Option<Receiver<FlowOp>>,
    packet_outs: Option<Receiver<PacketOut>>,
    port_ops: Option<Receiver<PortOp>>,
    exec: Executor,
    resolver: Arc<dyn TunnelResolver>,
    miss: Box<dyn MissHandler>,
    rx: PacketBatch,
    /// Where a super-frame that missed the cache is cut into the segments the slow path
    /// gets (it takes complete frames).
    miss_scratch: Vec<u8>,
    /// Datagrams cut from a UDP super-frame of VXLAN packets (allocated at the first).
    split_scratch: Vec<u8>,
    stats: DpStats,
    poller: Option<(Poller, Vec<PortId>, Vec<PortId>)>,
    waker: Option<Waker>,
    ready: Vec<usize>,
    /// The last [`Self::run_once`] received frames: skip `poll()` in the next one.
    busy: bool,
}

impl Datapath {
    /// A datapath with no ports.
    pub fn new(
        cfg: DpConfig,
        resolver: Arc<dyn TunnelResolver>,
        miss: Box<dyn MissHandler>,
    ) -> Self {
        Self {
            rx: PacketBatch::new(cfg.batch, gso::MAX_FRAME),
            miss_scratch: vec![0; gso::MAX_FRAME],
            split_scratch: Vec::new(),
            cache: FlowCache::new(cfg.cache),
            cfg,
            ports: Vec::new(),
            tunnel_port: None,
            flow_ops: None,
            packet_outs: None,
            port_ops: None,
            exec: Executor::new(),
            resolver,
            miss,
            stats: DpStats::default(),
            poller: None,
            waker: Waker::new().ok(),
            ready: Vec::new(),
            busy: false,
        }
    }

    /// Adds a port. The tunnel port has no I/O (`io` = None); other ports must have one.
    pub fn add_port(&mut self, id: PortId, role: PortRole, io: Option<Box<dyn Port>>) {
        let idx = id.0 as usize;
        if self.ports.len() <= idx {
            self.ports.resize_with(idx + 1, || None);
        }
        if role == PortRole::Tunnel {
            self.tunnel_port = Some(id);
        }
        let offloads = io.as_ref().is_some_and(|p| p.offloads());
        let udp_segmentation = io.as_ref().is_some_and(|p| p.udp_segmentation());
        let frame = self.cfg.max_frame + 128;
        let bytes = self.cfg.batch * PacketBatch::new(1, frame).max_frame() + gso::MAX_FRAME;
        self.ports[idx] = Some(DpPort {
            role,
            io,
            offloads,
            udp_segmentation,
            tx: PacketBatch::with_bytes(self.cfg.batch, gso::MAX_FRAME, bytes),
            down: false,
            down_drops: 0,
            malformed: 0,
            upcall_drops: 0,
        });
        self.poller = None;
    }

    /// Removes a port and returns its I/O (none if it had none or did not exist). Its
    /// pending transmit batch is dropped; flows that still output to it drop those
    /// packets (counted in `tx_dropped`) until they are deleted.
    pub fn remove_port(&mut self, id: PortId) -> Option<Box<dyn Port>> {
        let p = self.ports.get_mut(id.0 as usize)?.take()?;
        if self.tunnel_port == Some(id) {
            self.tunnel_port = None;
        }
        self.poller = None;
        p.io
    }

    /// Connects the queue of port changes (applied before each round).
    pub fn set_port_ops(&mut self, rx: Receiver<PortOp>) {
        self.port_ops = Some(rx);
    }

    /// Connects the queue of flow changes from the flow table.
    pub fn set_flow_ops(&mut self, rx: Receiver<FlowOp>) {
        self.flow_ops = Some(rx);
    }

    /// Connects the queue of slow-path decisions for upcalled packets.
    pub fn set_packet_outs(&mut self, rx: Receiver<PacketOut>) {
        self.packet_outs = Some(rx);
    }

    /// The flow cache (for direct installs in tests and single-threaded setups).
    pub fn cache_mut(&mut self) -> &mut FlowCache {
        &mut self.cache
    }

    /// Counters, with each port's ([`Self::port_stats`]: a system call per kernel port,
    /// so call it when publishing statistics, not per packet).
    pub fn stats(&mut self) -> DpStats {
        DpStats {
            exec: self.exec.stats,
            ports: self.port_stats(),
            ..self.stats.clone()
        }
    }

    /// Each port's counters and state ([`Port::stats`]; `down` and `tx_dropped` include
    /// the datapath's own marking and drops), by id, for the ports with I/O. A port that
    /// reports itself down is marked down here.
    pub fn port_stats(&mut self) -> Vec<(PortId, PortStats)> {
        let mut out = Vec::new();
        for (i, slot) in self.ports.iter_mut().enumerate() {
            let Some(p) = slot.as_mut() else { continue };
            let Some(io) = p.io.as_mut() else { continue };
            let mut st = io.stats();
            if st.down && !p.down {
                p.set_down();
            }
            st.down = p.down;
            st.tx_dropped += p.down_drops;
            st.rx_malformed += p.malformed;
            st.upcall_drops += p.upcall_drops;
            out.push((PortId(i as u32), st));
        }
        out
    }

    /// The ports marked down (their device is gone), by id, until replaced.
    pub fn down_ports(&self) -> Vec<PortId> {
        self.ports
            .iter()
            .enumerate()
            .filter(|(_, p)| p.as_ref().is_some_and(|p| p.down))
            .map(|(i, _)| PortId(i as u32))
            .collect()
    }

    /// Wakes this datapath from its poll (for whoever queues packet-outs or flow ops);
    /// `None` if the eventfd could not be made (the poll timeout then bounds the wait).
    pub fn waker(&self) -> Option<Waker> {
        self.waker.clone()
    }

    /// Applies queued flow changes and executes queued packet-outs.
    pub fn drain_queues(&mut self, now: u64) {
        if let Some(q) = self.port_ops.take() {
            while let Ok(op) = q.try_recv() {
                match op {
                    PortOp::Add { id, role, io } => self.add_port(id, role, io),
                    PortOp::Remove(id) => drop(self.remove_port(id)),
                }
            }
            self.port_ops = Some(q);
        }
        if let Some(q) = &self.flow_ops {
            self.cache.drain(q, 4096);
        }
        let Some(q) = self.packet_outs.take() else {
            return;
        };
        for _ in 0..1024 {
            match q.try_recv() {
                Ok(po) => {
                    self.stats.packet_outs += 1;
                    self.execute(&po.key, &po.frame, &po.actions);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        self.packet_outs = Some(q);
        self.flush();
        let _ = now;
    }

    /// Executes `actions` on a frame whose key is `key`.
    pub fn execute(&mut self, key: &FlowKey, frame: &[u8], actions: &Actions) {
        let env = ExecEnv {
            resolver: self.resolver.as_ref(),
            tunnel_port: self.tunnel_port,
            in_port: Some(PortId(key.in_port)),
        };
        let mut sink = TxSink {
            ports: &mut self.ports,
            tx_dropped: &mut self.stats.tx_dropped,
        };
        let pkt = Packet::new(frame, key.flow_hash());
        self.exec.execute(pkt, actions.as_slice(), &env, &mut sink);
    }

    /// Receives one batch from `port` and processes it. Returns the frames received. A
    /// port that is down is not read; one whose device turns out gone is marked down
    /// (Ok(0)); a transient error is Ok(0).
    pub fn poll_port(&mut self, port: PortId, now: u64) -> Result<usize, PortError> {
        let Some(Some(p)) = self.ports.get_mut(port.0 as usize) else {
            return Ok(0);
        };
        let role = p.role;
        if p.down {
            return Ok(0);
        }
        let Some(io) = p.io.as_mut() else {
            return Ok(0);
        };
        let mut rx = std::mem::replace(&mut self.rx, PacketBatch::new(0, 0));
        rx.clear();
        let n = match io.recv(&mut rx) {
            Err(e) if e.is_device_gone() => {
                p.set_down();
                Ok(0)
            }
            Err(e) if e.is_transient() => Ok(0),
            n => n,
        };
        if let Ok(n) = n
            && n > 0
        {
            self.process(port, role, &rx, now);
        }
        self.rx = rx;
        n
    }

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

    fn process_one(
        &mut self,
        in_port: PortId,
        role: PortRole,
        frame: &[u8],
        offload: Offload,
        now: u64,
    ) {
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
                        return;
                    }
                    None => {
                        self.exec.stats.offload_invalid += 1;
                        return;
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
                return;
            }
            Decap::KernelCopyIgnored => {
                self.stats.kernel_rx_ignored += 1;
                return;
            }
            Decap::No => (extract_checked(frame, in_port, None), frame, offload),
        };
        let key = match key {
            (key, _, None) => key,
            (_, _, Some(why)) => {
                self.count_malformed(in_port, why);
                return;
            }
        };
        let hash = key_hash(&key);
        let pkt = Packet {
            frame: inner,
            offload,
            flow_hash: key.flow_hash(),
        };
        let env = ExecEnv {
            resolver: self.resolver.as_ref(),
            tunnel_port: self.tunnel_port,
            in_port: Some(PortId(key.in_port)),
        };
        let mut sink = TxSink {
            ports: &mut self.ports,
            tx_dropped: &mut self.stats.tx_dropped,
        };
        if let Some(entry) = self.cache.lookup_hashed(&key, hash) {
            self.stats.hits += 1;
            if entry.in_tc() {
                // A copy of a packet tc forwards itself (taps run before tc ingress):
                // tc's counters account for it; forwarding it here would duplicate it.
                self.stats.tc_carried += 1;
                return;
            }
            let packets = offload.packets(inner.len());
            entry.record(packets, inner.len() as u64, key.tcp_flags, now);
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
        if offload.is_complete() {
            up.one(&key, pkt, &mut sink);
        } else {
            up.incomplete(&key, pkt, &mut self.miss_scratch, &mut sink);
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

    /// If `frame` is VXLAN to a local VTEP that arrived where it counts, its tunnel
    /// metadata, inner frame and the tunnel port. VXLAN from a remote an inbound IPsec
    /// policy covers counts only as the kernel delivered it through the tunnel port
    /// (decrypted, checked against the policy); any other counts only off an uplink: one
    /// copy of each packet is processed, and cleartext never passes for encrypted.
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

    /// Sends every port's pending transmit batch.
    pub fn flush(&mut self) {
        for p in self.ports.iter_mut().flatten() {
            flush_port(p, &mut self.stats.tx_dropped);
        }
    }

    /// Waits up to `timeout_ms` for traffic on the kernel-backed ports, then processes one
    /// batch from each readable port and drains the queues. Ports without a file
    /// descriptor (in-memory) are polled every call. Under load (the previous call received
    /// frames) it does not wait: every port is read directly, which saves a `poll()`
    /// system call per round (and costs nothing for a port with a receive ring). Ports
    /// marked down leave the poll set.
    pub fn run_once(&mut self, timeout_ms: i32, now: u64) -> Result<usize, PortError> {
        self.drain_queues(now);
        // A port marked down since the poll set was built (a failed transmit) leaves it.
        let stale = self.poller.as_ref().is_some_and(|(_, fd_ids, mem_ids)| {
            fd_ids.iter().chain(mem_ids).any(|&id| self.is_down(id))
        });
        if stale {
            self.poller = None;
        }
        let (mut poller, fd_ids, mem_ids) = match self.poller.take() {
            Some(p) => p,
            None => self.build_poller(),
        };
        let mut ready = std::mem::take(&mut self.ready);
        let waited = if self.busy {
            ready.clear();
            ready.extend(0..fd_ids.len());
            Ok(())
        } else {
            poller.wait(timeout_ms, &mut ready)
        };
        let mut result = waited.map(|()| 0).map_err(|source| PortError::Io {
            op: "poll",
            port: "*".into(),
            source,
        });
        if let Some(w) = &self.waker
            && ready.contains(&fd_ids.len())
        {
            // Woken for queued work: drained at the top of the next round.
            w.reset();
        }
        if !self.busy {
            for &i in &ready {
                let Some(&id) = fd_ids.get(i) else { continue };
                if let Err(e) = self.poll_error(id, poller.revents(i)) {
                    result = Err(e);
                }
            }
        }
        let ids = ready.iter().filter_map(|&i| fd_ids.get(i)).chain(&mem_ids);
        for &id in ids {
            let Ok(total) = result.as_mut() else { break };
            match self.poll_port(id, now) {
                Ok(n) => *total += n,
                Err(e) => result = Err(e),
            }
        }
        self.poller = Some((poller, fd_ids, mem_ids));
        self.ready = ready;
        self.busy = matches!(result, Ok(n) if n > 0);
        result
    }

    /// The ports the last round's poll set holds (kernel ports, then the others).
    #[cfg(test)]
    pub(crate) fn poll_set(&self) -> Vec<PortId> {
        self.poller
            .as_ref()
            .map(|(_, fd_ids, mem_ids)| fd_ids.iter().chain(mem_ids).copied().collect())
            .unwrap_or_default()
    }

    /// Whether port `id` exists and is marked down.
    fn is_down(&self, id: PortId) -> bool {
        matches!(self.ports.get(id.0 as usize), Some(Some(p)) if p.down)
    }

    /// Acts on an error condition `poll()` reported for port `id` (`revents`): a hung-up
    /// or invalid descriptor marks the port down; a pending socket error is read, and
    /// marks the port down if its device is gone. Other errors are returned.
    fn poll_error(&mut self, id: PortId, revents: i16) -> Result<(), PortError> {
        let Some(Some(p)) = self.ports.get_mut(id.0 as usize) else {
            return Ok(());
        };
        let Some(io) = p.io.as_mut() else {
            return Ok(());
        };
        if revents & (libc::POLLHUP | libc::POLLNVAL) != 0 {
            p.set_down();
            return Ok(());
        }
        if revents & libc::POLLERR == 0 {
            return Ok(());
        }
        match io.take_error() {
            Err(e) if e.is_device_gone() => {
                p.set_down();
                Ok(())
            }
            Err(e) if e.is_transient() => Ok(()),
            r => r,
        }
    }

    /// A poller over the ports with a file descriptor, their ids, and the other ports
    /// (ports marked down left out).
    fn build_poller(&self) -> (Poller, Vec<PortId>, Vec<PortId>) {
        let mut fds = Vec::new();
        let mut fd_ids = Vec::new();
        let mut mem_ids = Vec::new();
        for (i, p) in self.ports.iter().enumerate() {
            let Some(io) = p.as_ref().filter(|p| !p.down).and_then(|p| p.io.as_ref()) else {
                continue;
            };
            match io.raw_fd() {
                Some(fd) => {
                    fds.push(fd);
                    fd_ids.push(PortId(i as u32));
                }
                None => mem_ids.push(PortId(i as u32)),
            }
        }
        // The waker goes last: its index is `fd_ids.len()`.
        fds.extend(self.waker.as_ref().map(Waker::raw_fd));
        (Poller::new(&fds), fd_ids, mem_ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FlowId;
    use crate::cache::FlowEntry;
    use crate::flow::Megaflow;
    use crate::port::{MemPort, MemPortHandle};
    use crate::tunnel::{StaticResolver, TunnelRoute};

    const REP: PortId = PortId(1);
    const UPLINK: PortId = PortId(2);
    const TUN: PortId = PortId(3);

    fn datapath() -> (Datapath, MemPortHandle, MemPortHandle) {
        let mut r = StaticResolver::new();
        r.insert(
            "192.168.203.56".parse().unwrap(),
            TunnelRoute {
                egress: UPLINK,
                src_ip: "192.168.203.51".parse().unwrap(),
                src_mac: [2, 0, 0, 0, 0, 0x51],
                dst_mac: [2, 0, 0, 0, 0, 0x56],
                mtu: 1500,
                via: crate::tunnel::Via::Uplink,
            },
        );
        let cfg = DpConfig {
            local_vteps: vec!["192.168.203.51".parse().unwrap()],
            ..DpConfig::default()
        };
        let mut dp = Datapath::new(cfg, Arc::new(r), Box::new(DropMisses));
        let (rep, rep_h) = MemPort::new("rep0", 1450);
        let (up, up_h) = MemPort::new("up0", 1500);
        dp.add_port(REP, PortRole::Representor, Some(Box::new(rep)));
        dp.add_port(UPLINK, PortRole::Uplink, Some(Box::new(up)));
        dp.add_port(TUN, PortRole::Tunnel, None);
        (dp, rep_h, up_h)
    }

    fn install(dp: &mut Datapath, id: u64, flow: &str, actions: &str) {
        let mf: Megaflow = flow.parse().unwrap();
        let e = FlowEntry::new(
            FlowId(id),
            &mf.key,
            Arc::new(mf.mask),
            actions.parse().unwrap(),
            0,
        );
        dp.cache_mut().insert(Arc::new(e));
    }

    fn inner_frame() -> Vec<u8> {
        let mut f = vec![0u8; 64];
        f[..6].copy_from_slice(&[0x82, 0x8a, 0x29, 0xad, 0x4e, 0xef]);
        f[6..12].copy_from_slice(&[0xe4, 0x11, 0x11, 0x11, 0x11, 0x10]);
        f[12..14].copy_from_slice(&[0x88, 0xb5]);
        f
    }

    #[test]
    fn encap_then_decap_with_static_flows() {
        let (mut dp, rep, up) = datapath();
        install(
            &mut dp,
            1,
            "in_port(1)",
            "set(tunnel(tun_id=0x10,dst=192.168.203.56,ttl=64,tp_dst=4789)),3",
        );
        install(
            &mut dp,
            2,
            "tunnel(tun_id=0x10,src=192.168.203.56),in_port(3)",
            "1",
        );
        rep.inject(&inner_frame());
        assert_eq!(dp.run_once(0, 1).unwrap(), 1);
        let sent = up.take_sent();
        assert_eq!(sent.len(), 1);
        let outer = &sent[0];
        assert_eq!(&outer[..6], &[2, 0, 0, 0, 0, 0x56]);
        let d = vxlan::decapsulate(outer, 4789).unwrap().unwrap();
        assert_eq!(d.vni, 0x10);
        assert_eq!(d.inner(outer), &inner_frame()[..]);

        // The remote VTEP's answer: the same packet with the addresses swapped.
        let mut reply = outer.clone();
        let (src_ip, dst_ip) = (26..30, 30..34);
        let s: Vec<u8> = reply[src_ip.clone()].to_vec();
        reply.copy_within(dst_ip.clone(), src_ip.start);
        reply[dst_ip].copy_from_slice(&s);
        up.inject(&reply);
        dp.run_once(0, 2).unwrap();
        assert_eq!(rep.take_sent(), vec![inner_frame()]);
        let st = dp.stats();
        assert_eq!((st.rx, st.decap, st.hits, st.misses), (2, 1, 2, 0));
    }

    /// A UDP super-frame of VXLAN packets (what a peer's USO or GRO of forwarded UDP
    /// hands over) is cut into its datagrams, each decapsulated on its own.
    #[test]
    fn a_udp_super_frame_of_vxlan_packets_is_decapsulated_datagram_by_datagram() {
        use crate::wire::vxlan::OuterHeaders;
        use crate::wire::{Gso, GsoKind};
        let (mut dp, rep, up) = datapath();
        install(
            &mut dp,
            2,
            "tunnel(tun_id=0x10,src=192.168.203.56),in_port(3)",
            "1",
        );
        let inners: Vec<Vec<u8>> = (0..3u8)
            .map(|i| {
                let mut f = inner_frame();
                f[20..].fill(i);
                if i == 2 {
                    f.truncate(60);
                }
                f
            })
            .collect();
        let first = vxlan::VXLAN_OVERHEAD_V4 - vxlan::HEADER_LEN;
        let mut f = vec![0u8; first];
        for inner in &inners {
            let at = f.len();
            f.resize(at + vxlan::HEADER_LEN, 0);
            vxlan::emit_header(&mut f[at..], 0x10).unwrap();
            f.extend_from_slice(inner);
        }
        let outer = OuterHeaders {
            src_mac: [2, 0, 0, 0, 0, 0x56],
            dst_mac: [2, 0, 0, 0, 0, 0x51],
            src_ip: "192.168.203.56".parse().unwrap(),
            dst_ip: "192.168.203.51".parse().unwrap(),
            tos: 0,
            ttl: 64,
            df: true,
            ident: 1,
            udp_src: 50000,
            udp_dst: 4789,
            vni: 0x10,
            udp_csum: false,
        };
        let inner_len = f.len() - vxlan::VXLAN_OVERHEAD_V4;
        let (_, csum) = vxlan::encapsulate_for_segmentation(&mut f, inner_len, &outer).unwrap();
        let o = Offload {
            csum: Some(csum),
            csum_valid: false,
            gso: Some(Gso {
                kind: GsoKind::Udp,
                size: (vxlan::HEADER_LEN + 64) as u16,
                ecn: false,
            }),
            hdr_len: first as u16,
        };
        up.inject_offload(&f, o);
        dp.run_once(0, 1).unwrap();
        assert_eq!(rep.take_sent(), inners);
        let st = dp.stats();
        assert_eq!((st.rx, st.decap, st.hits), (1, 3, 3));
        assert_eq!((st.exec.gso_segmented, st.exec.gso_segments), (1, 3));
    }

    /// A path IPsec protects: encapsulated frames go to the tunnel port (the kernel's IP
    /// output), never the uplink; a blocked path drops; VXLAN from a protected remote
    /// counts only as the kernel delivers it, any other only off the uplink.
    #[test]
    fn protected_paths_go_through_the_kernel_and_only_its_copy_counts() {
        let route = TunnelRoute {
            egress: UPLINK,
            src_ip: "192.168.203.51".parse().unwrap(),
            src_mac: [2, 0, 0, 0, 0, 0x51],
            dst_mac: [2, 0, 0, 0, 0, 0x56],
            mtu: 1450,
            via: crate::tunnel::Via::Kernel { sa: true },
        };
        let mut r = StaticResolver::new();
        r.insert("192.168.203.56".parse().unwrap(), route);
        r.insert(
            "192.168.203.57".parse().unwrap(),
            TunnelRoute {
                via: crate::tunnel::Via::Kernel { sa: false },
                ..route
            },
        );
        r.insert(
            "192.168.203.58".parse().unwrap(),
            TunnelRoute {
                via: crate::tunnel::Via::Uplink,
                ..route
            },
        );
        r.protect_inbound("192.168.203.56".parse().unwrap());
        let cfg = DpConfig {
            local_vteps: vec!["192.168.203.51".parse().unwrap()],
            ..DpConfig::default()
        };
        let mut dp = Datapath::new(cfg, Arc::new(r), Box::new(DropMisses));
        let (rep, rep_h) = MemPort::new("rep0", 1400);
        let (up, up_h) = MemPort::new("up0", 1500);
        let (tun, tun_h) = MemPort::new("vxlan_sys_4789", 65535);
        dp.add_port(REP, PortRole::Representor, Some(Box::new(rep)));
        dp.add_port(UPLINK, PortRole::Uplink, Some(Box::new(up)));
        dp.add_port(TUN, PortRole::Tunnel, Some(Box::new(tun)));
        for (i, dst) in ["192.168.203.56", "192.168.203.57", "192.168.203.58"]
            .iter()
            .enumerate()
        {
            let mut f = inner_frame();
            f[5] = i as u8;
            install(
                &mut dp,
                i as u64 + 1,
                &format!("in_port(1),eth(dst=82:8a:29:ad:4e:{i:02x})"),
                &format!("set(tunnel(tun_id=0x10,dst={dst},ttl=64,tp_dst=4789,mark=0x7)),3"),
            );
            rep_h.inject(&f);
        }
        install(&mut dp, 9, "tunnel(tun_id=0x10),in_port(3)", "1");
        dp.run_once(0, 1).unwrap();
        let to_kernel = tun_h.take_sent();
        assert_eq!(to_kernel.len(), 2, "both protected paths go to the kernel");
        assert_eq!(&to_kernel[0][..6], &crate::port::mark_mac(7));
        let d = vxlan::decapsulate(&to_kernel[0], 4789).unwrap().unwrap();
        assert_eq!(d.dst, "192.168.203.56".parse::<IpAddr>().unwrap());
        let on_wire = up_h.take_sent();
        assert_eq!(
            on_wire.len(),
            1,
            "only the unprotected path uses the uplink"
        );
        let st = dp.stats();
        assert_eq!((st.exec.kernel_out, st.exec.ipsec_no_sa), (2, 1));

        // From the protected remote: the kernel's copy is decapsulated, the uplink's
        // dropped. From the unprotected one: the other way round.
        // (Each answer is the frame sent with its addresses swapped.)
        let answer = |sent: &[u8]| {
            let mut f = sent.to_vec();
            f.copy_within(30..34, 26);
            f[30..34].copy_from_slice(&sent[26..30]);
            f
        };
        let (protected, clear) = (answer(&to_kernel[0]), answer(&on_wire[0]));
        tun_h.inject(&protected);
        up_h.inject(&protected);
        tun_h.inject(&clear);
        up_h.inject(&clear);
        dp.run_once(0, 2).unwrap();
        dp.run_once(0, 3).unwrap();
        assert_eq!(rep_h.take_sent().len(), 2, "one copy of each");
        let st = dp.stats();
        assert_eq!(
            (
                st.decap,
                st.ipsec_rx,
                st.ipsec_clear_dropped,
                st.kernel_rx_ignored
            ),
            (2, 1, 1, 1)
        );
    }

    /// The remote VTEP's VXLAN frame (to 192.168.203.51, VNI 0x10) around `inner`, as
    /// its kernel hands a super-frame over: the inner TCP checksum partial.
    fn vxlan_from_remote(inner: &[u8]) -> Vec<u8> {
        let outer = vxlan::OuterHeaders {
            src_mac: [2, 0, 0, 0, 0, 0x56],
            dst_mac: [2, 0, 0, 0, 0, 0x51],
            src_ip: "192.168.203.56".parse().unwrap(),
            dst_ip: "192.168.203.51".parse().unwrap(),
            tos: 0,
            ttl: 64,
            df: true,
            ident: 7,
            udp_src: 50_000,
            udp_dst: 4789,
            vni: 0x10,
            udp_csum: false,
        };
        let mut out = vec![0u8; inner.len() + 50];
        let n = vxlan::encapsulate(inner, &outer, &mut out).unwrap();
        out.truncate(n);
        out
    }

    /// What a recording slow path saw: each miss's frame and TCP flags.
    type Seen = Arc<std::sync::Mutex<Vec<(Vec<u8>, u16)>>>;
    struct Record(Seen);

    impl MissHandler for Record {
        fn miss(&mut self, miss: Miss<'_>) -> MissVerdict {
            let mut v = self.0.lock().unwrap();
            v.push((miss.frame.to_vec(), miss.key.tcp_flags));
            MissVerdict::Queued
        }
    }

    #[test]
    fn a_decapsulated_super_frame_goes_whole_to_a_representor_that_takes_it() {
        use crate::wire::gso::{self, Layout};
        use crate::wire::testutil::tcp_frame;
        use crate::wire::{Gso, GsoKind, Offload};
        let (mut dp, _rep, up) = datapath();
        let (rep, rep_h) = MemPort::with_offloads("rep0", 1450);
        dp.add_port(REP, PortRole::Representor, Some(Box::new(rep)));
        install(
            &mut dp,
            2,
            "tunnel(tun_id=0x10,src=192.168.203.56),in_port(3)",
            "1",
        );
        // What Linux 6.18 reported for such a frame: TCPV4, csum_start at the inner TCP
        // header (50 + 34), the tunnel not mentioned.
        let mut inner = tcp_frame(false, &[], 20_000, crate::wire::tcp::flags::ACK);
        let lay = Layout::parse(&inner).unwrap();
        let c = gso::prepare_partial(&mut inner, &lay).unwrap();
        let gso = Some(Gso {
            kind: GsoKind::TcpV4,
            size: 1398,
            ecn: false,
        });
        let o = Offload {
            csum: Some(c),
            gso,
            hdr_len: 116,
            ..Offload::NONE
        }
        .shifted(0, 50)
        .unwrap();
        up.inject_offload(&vxlan_from_remote(&inner), o);
        dp.run_once(0, 1).unwrap();
        let sent = rep_h.take_sent_offload();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, inner);
        assert_eq!(sent[0].1.csum, Some(c));
        assert_eq!(sent[0].1.gso, gso);
        let st = dp.stats();
        assert_eq!((st.decap, st.exec.gso_passed), (1, 1));
        let entry = dp.cache_mut().iter().next().cloned().expect("flow");
        assert_eq!(
            entry.stats().packets,
            15,
            "20000 bytes in 1398-byte segments"
        );

        // A partial checksum of the outer headers leaves a complete inner frame.
        let small = tcp_frame(false, &[], 100, crate::wire::tcp::flags::ACK);
        let outer_csum = Offload {
            csum: Some(crate::wire::PartialCsum {
                start: 34,
                offset: 6,
            }),
            ..Offload::NONE
        };
        up.inject_offload(&vxlan_from_remote(&small), outer_csum);
        dp.run_once(0, 2).unwrap();
        assert_eq!(rep_h.take_sent_offload(), vec![(small, Offload::NONE)]);
    }

    #[test]
    fn a_super_frame_that_misses_goes_up_as_its_segments() {
        use crate::wire::testutil::tcp_frame;
        use crate::wire::{Gso, GsoKind, Offload};
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut dp = Datapath::new(
            DpConfig::default(),
            Arc::new(StaticResolver::new()),
            Box::new(Record(seen.clone())),
        );
        let (rep, rep_h) = MemPort::with_offloads("rep0", 1450);
        dp.add_port(REP, PortRole::Representor, Some(Box::new(rep)));
        use crate::wire::tcp::flags::{ACK, FIN, PSH};
        let f = tcp_frame(false, &[], 5000, ACK | PSH | FIN);
        let o = Offload {
            csum_valid: true,
            gso: Some(Gso {
                kind: GsoKind::TcpV4,
                size: 1398,
                ecn: false,
            }),
            ..Offload::NONE
        };
        rep_h.inject_offload(&f, o);
        dp.run_once(0, 1).unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 4);
        assert_eq!(dp.stats().misses, 4);
        for (i, (seg, flags)) in seen.iter().enumerate() {
            let ip = crate::wire::Ipv4Packet::new_checked(&seg[14..]).unwrap();
            let t = crate::wire::TcpPacket::new_checked(ip.payload()).unwrap();
            let (s, d) = (ip.src_addr().into(), ip.dst_addr().into());
            assert!(t.verify_checksum(&s, &d), "segment {i} is complete");
            let want = if i == 3 { ACK | PSH | FIN } else { ACK };
            assert_eq!(*flags, want, "segment {i}'s key has its own flags");
        }
    }

    #[test]
    fn flows_carried_by_tc_are_counted_not_forwarded() {
        let (mut dp, rep, up) = datapath();
        install(&mut dp, 1, "in_port(1)", "2");
        rep.inject(&inner_frame());
        dp.run_once(0, 1).unwrap();
        assert_eq!(up.take_sent().len(), 1);
        let entry = dp.cache_mut().iter().next().cloned().expect("flow");
        entry.set_in_tc(true);
        rep.inject(&inner_frame());
        dp.run_once(0, 2).unwrap();
        assert!(up.take_sent().is_empty(), "tc forwards it, not us");
        assert_eq!(dp.stats().tc_carried, 1);
        assert_eq!(entry.stats().packets, 1, "tc's counters account for it");
    }

    #[test]
    fn malformed_frames_are_dropped_and_counted_per_reason() {
        use crate::wire::testutil::tcp_frame;
        let (mut dp, rep, up) = datapath();
        install(&mut dp, 1, "in_port(1)", "2");
        let good = tcp_frame(false, &[], 10, crate::wire::tcp::flags::ACK);
        let mut ihl = good.clone();
        ihl[14] = 0x44;
        let mut long = good.clone();
        long[16..18].copy_from_slice(&2000u16.to_be_bytes());
        let mut doff = good.clone();
        doff[14 + 20 + 12] = 0x30;
        for f in [&ihl, &long, &doff, &good[..20].to_vec(), &good] {
            rep.inject(f);
        }
        dp.run_once(0, 1).unwrap();
        assert_eq!(up.take_sent(), vec![good], "only the well-formed frame");
        let st = dp.stats();
        let by = |m: Malformed| st.malformed[m.index()];
        assert_eq!(by(Malformed::Ipv4Ihl), 1);
        assert_eq!(by(Malformed::Ipv4TotalLen), 1);
        assert_eq!(by(Malformed::TcpTruncated), 1);
        assert_eq!(by(Malformed::Ipv4Truncated), 1);
        assert_eq!(st.malformed.iter().sum::<u64>(), 4);
        assert_eq!((st.hits, st.misses), (1, 0));
        assert_eq!(port_stats(&mut dp, REP).rx_malformed, 4);
    }

    #[test]
    fn ports_plugged_and_unplugged_through_the_queue() {
        let (mut dp, rep, up) = datapath();
        let (tx, rx) = std::sync::mpsc::channel();
        dp.set_port_ops(rx);
        install(&mut dp, 1, "in_port(1)", "4");
        install(&mut dp, 2, "in_port(4)", "1");
        // No port 4 yet: its flow's output is dropped, nothing panics.
        rep.inject(&inner_frame());
        dp.run_once(0, 1).unwrap();
        assert!(up.take_sent().is_empty());

        let (vf1, vf1_h) = MemPort::new("rep1", 1450);
        tx.send(PortOp::Add {
            id: PortId(4),
            role: PortRole::Representor,
            io: Some(Box::new(vf1)),
        })
        .unwrap();
        rep.inject(&inner_frame());
        dp.run_once(0, 2).unwrap();
        assert_eq!(vf1_h.take_sent(), vec![inner_frame()]);
        vf1_h.inject(&inner_frame());
        dp.run_once(0, 3).unwrap();
        assert_eq!(
            rep.take_sent(),
            vec![inner_frame()],
            "the new port is polled"
        );

        tx.send(PortOp::Remove(PortId(4))).unwrap();
        vf1_h.inject(&inner_frame());
        rep.inject(&inner_frame());
        let rx_before = dp.stats().rx;
        dp.run_once(0, 4).unwrap();
        assert_eq!(
            dp.stats().rx,
            rx_before + 1,
            "the removed port is not polled"
        );
        assert!(vf1_h.take_sent().is_empty() && rep.take_sent().is_empty());
        assert!(dp.remove_port(PortId(4)).is_none());
        assert!(dp.remove_port(PortId(99)).is_none());
        assert!(dp.remove_port(TUN).is_none(), "the tunnel port has no I/O");
    }

    #[test]
    fn a_wake_ends_the_poll_early() {
        let (mut dp, _rep, _up) = datapath();
        let w = dp.waker().expect("eventfd");
        w.wake();
        let t = std::time::Instant::now();
        dp.run_once(5_000, 1).unwrap();
        assert!(
            t.elapsed() < std::time::Duration::from_secs(2),
            "woken, not timed out"
        );
    }

    #[test]
    fn miss_goes_to_the_handler_and_vxlan_to_others_is_not_decapsulated() {
        let (mut dp, rep, up) = datapath();
        rep.inject(&inner_frame());
        dp.run_once(0, 1).unwrap();
        assert_eq!(dp.stats().misses, 1);
        assert_eq!(dp.stats().upcall_drops, 1);
        // VXLAN to an address that is not a local VTEP stays a plain uplink packet.
        install(
            &mut dp,
            1,
            "in_port(1)",
            "set(tunnel(tun_id=0x10,dst=192.168.203.56,ttl=64,tp_dst=4789)),3",
        );
        rep.inject(&inner_frame());
        dp.run_once(0, 2).unwrap();
        let outer = up.take_sent().remove(0);
        up.inject(&outer); // destined to .56, not to us
        dp.run_once(0, 3).unwrap();
        assert_eq!(dp.stats().decap, 0);
    }

    /// What the datapath reports for port `id`.
    fn port_stats(dp: &mut Datapath, id: PortId) -> PortStats {
        dp.stats()
            .ports
            .into_iter()
            .find(|&(p, _)| p == id)
            .map(|(_, st)| st)
            .expect("a port with I/O")
    }

    #[test]
    fn a_port_whose_device_is_gone_is_marked_down_until_replaced() {
        let (mut dp, rep, up) = datapath();
        let (tx, rx) = std::sync::mpsc::channel();
        dp.set_port_ops(rx);
        install(&mut dp, 1, "in_port(1)", "2");
        install(&mut dp, 2, "in_port(2)", "1");
        rep.fail_recv(std::io::ErrorKind::NetworkDown);
        rep.inject(&inner_frame());
        assert_eq!(dp.run_once(0, 1).unwrap(), 0, "handled, not an error");
        assert_eq!(dp.down_ports(), vec![REP]);
        let recvs = rep.recvs();
        for now in 2..5 {
            dp.run_once(0, now).unwrap();
        }
        assert_eq!(rep.recvs(), recvs, "not polled any more");
        assert_eq!(dp.poll_set(), vec![UPLINK]);

        // Frames for it are dropped and counted.
        up.inject(&inner_frame());
        dp.run_once(0, 5).unwrap();
        assert!(rep.take_sent().is_empty());
        let st = port_stats(&mut dp, REP);
        assert!(st.down);
        assert_eq!((st.tx_dropped, st.errors), (1, 1));
        assert_eq!(dp.stats().exec.sink_drops, 1);
        assert!(!port_stats(&mut dp, UPLINK).down);

        // The daemon reopened the device: the same id, a new port.
        let (rep2, rep2_h) = MemPort::new("rep0", 1450);
        tx.send(PortOp::Add {
            id: REP,
            role: PortRole::Representor,
            io: Some(Box::new(rep2)),
        })
        .unwrap();
        up.inject(&inner_frame());
        dp.run_once(0, 6).unwrap();
        assert!(dp.down_ports().is_empty());
        assert_eq!(rep2_h.take_sent(), vec![inner_frame()]);
        rep2_h.inject(&inner_frame());
        dp.run_once(0, 7).unwrap();
        assert_eq!(up.take_sent(), vec![inner_frame()], "polled again");
        assert!(!port_stats(&mut dp, REP).down);
    }

    #[test]
    fn a_transmit_to_a_gone_device_marks_the_port_down() {
        let (mut dp, rep, up) = datapath();
        install(&mut dp, 1, "in_port(1)", "2");
        up.fail_send(std::io::ErrorKind::NetworkDown);
        rep.inject(&inner_frame());
        dp.run_once(0, 1).unwrap();
        assert_eq!(dp.down_ports(), vec![UPLINK]);
        rep.inject(&inner_frame());
        dp.run_once(0, 2).unwrap();
        assert_eq!(up.recvs(), 0, "marked down before its turn, never polled");
        let st = dp.stats();
        assert_eq!(st.tx_dropped, 1, "the batch the port refused");
        assert_eq!(st.exec.sink_drops, 1, "the frame sent to it once down");
        let up_st = port_stats(&mut dp, UPLINK);
        assert!(up_st.down);
        assert_eq!(up_st.tx_dropped, 2);
    }

    #[test]
    fn transient_errors_never_mark_a_port_down() {
        let (mut dp, rep, up) = datapath();
        install(&mut dp, 1, "in_port(1)", "2");
        for (now, kind) in [
            (1, std::io::ErrorKind::Interrupted),
            (2, std::io::ErrorKind::WouldBlock),
        ] {
            rep.fail_recv(kind);
            rep.inject(&inner_frame());
            assert_eq!(dp.run_once(0, now).unwrap(), 0, "{kind:?}");
        }
        rep.heal();
        up.fail_send(std::io::ErrorKind::WouldBlock);
        assert_eq!(dp.run_once(0, 3).unwrap(), 2);
        assert!(up.take_sent().is_empty());
        up.heal();
        rep.inject(&inner_frame());
        dp.run_once(0, 4).unwrap();
        assert_eq!(up.take_sent(), vec![inner_frame()]);
        assert!(dp.down_ports().is_empty());
        let st = dp.stats();
        assert_eq!(st.tx_dropped, 2);
        let errors: Vec<_> = st
            .ports
            .iter()
            .map(|(id, p)| (*id, p.errors, p.down))
            .collect();
        assert_eq!(errors, vec![(REP, 2, false), (UPLINK, 1, false)]);
    }

    /// A port on one end of a socket pair: what `poll()` reports on it is the test's.
    struct SocketPort {
        sock: std::os::unix::net::UnixStream,
        recvs: Arc<std::sync::atomic::AtomicU64>,
    }

    impl Port for SocketPort {
        fn name(&self) -> &str {
            "sock"
        }

        fn ifindex(&self) -> Option<crate::IfIndex> {
            None
        }

        fn mtu(&self) -> u32 {
            1500
        }

        fn recv(&mut self, _: &mut PacketBatch) -> Result<usize, PortError> {
            self.recvs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(0)
        }

        fn send(&mut self, batch: &PacketBatch) -> Result<usize, PortError> {
            Ok(batch.len())
        }

        fn raw_fd(&self) -> Option<i32> {
            use std::os::fd::AsRawFd;
            Some(self.sock.as_raw_fd())
        }
    }

    #[test]
    fn a_hung_up_descriptor_leaves_the_poll_set() {
        let (mut dp, _rep, _up) = datapath();
        let (ours, peer) = std::os::unix::net::UnixStream::pair().expect("socket pair");
        let recvs = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let port = SocketPort {
            sock: ours,
            recvs: recvs.clone(),
        };
        dp.add_port(PortId(4), PortRole::Representor, Some(Box::new(port)));
        dp.run_once(0, 1).unwrap();
        assert!(dp.down_ports().is_empty(), "nothing reported yet");
        // The peer's close hangs the socket up: poll() reports it at once, every time.
        drop(peer);
        dp.run_once(0, 2).unwrap();
        assert_eq!(dp.down_ports(), vec![PortId(4)]);
        let n = recvs.load(std::sync::atomic::Ordering::Relaxed);
        for now in 3..6 {
            dp.run_once(0, now).unwrap();
        }
        assert_eq!(recvs.load(std::sync::atomic::Ordering::Relaxed), n);
        assert!(!dp.poll_set().contains(&PortId(4)), "out of the poll set");
    }
}
