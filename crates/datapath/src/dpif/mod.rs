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
//! A port that fails with an error for which
//! [`PortError::is_device_gone`](crate::port::PortError::is_device_gone) holds (on
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

mod merge;
mod poll;
mod rx;
#[cfg(test)]
mod tests;
mod tx;
mod upcall;

use crate::PortId;
use crate::actions::Actions;
use crate::cache::{CacheConfig, FlowCache, FlowOp};
use crate::exec::{ExecEnv, ExecStats, Executor, Packet};
use crate::flow::{FlowKey, Malformed};
use crate::port::{PacketBatch, Poller, Port, PortStats, Waker};
use crate::tunnel::TunnelResolver;
use crate::wire::gso;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use tx::{DpPort, TxSink, flush_port};

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
        let tunnel_segmentation = io.as_ref().is_some_and(|p| p.tunnel_segmentation());
        let direct = io.as_ref().is_some_and(|p| p.sends_direct());
        let frame = self.cfg.max_frame + 128;
        let bytes = self.cfg.batch * PacketBatch::new(1, frame).max_frame() + gso::MAX_FRAME;
        self.ports[idx] = Some(DpPort {
            role,
            io,
            offloads,
            udp_segmentation,
            tunnel_segmentation,
            direct,
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

    /// Sends every port's pending transmit batch.
    pub fn flush(&mut self) {
        for p in self.ports.iter_mut().flatten() {
            flush_port(p, &mut self.stats.tx_dropped);
        }
    }
}
