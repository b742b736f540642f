//! Upcalls: cache misses queued from datapath threads to handler threads.
//!
//! Each handler has its own bounded queue; a miss goes to the queue chosen by its key's
//! hash, so every miss of one flow reaches the same handler, which coalesces them. The
//! datapath never blocks: when the queue is full, or the frame is larger than the
//! configured maximum, the packet is dropped and counted. The frame is copied into the
//! upcall (memory is bounded by queue capacity x maximum frame size) and handed back
//! with its actions in a [`Verdict`], so the first packets of a flow are forwarded too.
//!
//! **Fair share.** One port must not fill a queue with its misses (a VM flooding new
//! flows or random source MACs) and starve its neighbours' first packets. Each queue
//! counts the upcalls each ingress port has in it: a port holding a quarter of the
//! queue or more ([`UpcallConfig::port_share`]) gets a slot only while the queue is less
//! than half full. A port flooding alone thus leaves at least half of every queue to
//! the others, and a port with fewer than its share queued is refused only by a queue
//! that is really full. A refusal is counted (`port_share`), and by the datapath per
//! port.
//!
//! Thread-safety: [`UpcallSender`] is `Clone + Send + Sync` (one per datapath thread or
//! shared); a handler owns its [`UpcallReceiver`], which gives each upcall's slot back
//! as it takes it. Counters are relaxed atomics: with several datapath threads a port
//! may briefly exceed its share by one upcall per thread.

use crate::actions::Actions;
use crate::cache::key_hash;
use crate::flow::FlowKey;
use crate::{FlowId, PortId};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{
    Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError, sync_channel,
};
use std::time::Duration;

/// Ports whose queued upcalls are counted apart: port ids beyond share a counter with
/// the id modulo this (and so a share).
pub const PORT_SLOTS: usize = 1024;

/// One cache miss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upcall {
    /// The packet's key.
    pub key: FlowKey,
    /// The ingress port.
    pub in_port: PortId,
    /// A copy of the frame.
    pub packet: Vec<u8>,
    /// The datapath thread that sent it (its index; 0 with one thread): its
    /// [`Verdict`] goes back to that thread, which keeps a flow's packets in order.
    pub origin: usize,
}

/// A handled upcall: the packet and what to do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The packet's key (with the tunnel metadata of a decapsulated packet, which the
    /// inner frame alone does not carry).
    pub key: FlowKey,
    /// The ingress port.
    pub in_port: PortId,
    /// The frame, as received.
    pub packet: Vec<u8>,
    /// The actions to execute on it.
    pub actions: Actions,
    /// The flow installed for it, if any (none when the table refused it).
    pub flow: Option<FlowId>,
    /// The datapath thread the upcall came from ([`Upcall::origin`]).
    pub origin: usize,
}

/// Upcall queue settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpcallConfig {
    /// Number of handler queues.
    pub handlers: usize,
    /// Capacity of each queue (default 4,096 upcalls).
    pub capacity: usize,
    /// Largest frame copied into an upcall (default 9,216 bytes); larger ones are dropped.
    pub max_frame: usize,
}

impl UpcallConfig {
    /// The upcalls one port may have in a queue once it is half full: a quarter of
    /// its capacity (at least 1).
    pub fn port_share(&self) -> usize {
        (self.capacity / 4).max(1)
    }
}

impl Default for UpcallConfig {
    fn default() -> Self {
        Self {
            handlers: 1,
            capacity: 4096,
            max_frame: 9216,
        }
    }
}

/// Why an upcall was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpcallDrop {
    /// The handler's queue was full.
    #[error("upcall queue full")]
    QueueFull,
    /// The frame exceeded the maximum upcall size.
    #[error("frame of {0} bytes exceeds the upcall limit")]
    TooBig(usize),
    /// The handler has exited.
    #[error("upcall handler gone")]
    Disconnected,
    /// The ingress port has its share of a queue that is half full or more.
    #[error("the port has its share of the upcall queue")]
    PortShare,
}

/// Upcall counters.
#[derive(Debug, Default)]
pub struct UpcallCounters {
    /// Upcalls queued.
    pub queued: AtomicU64,
    /// Dropped: queue full.
    pub queue_full: AtomicU64,
    /// Dropped: frame too big or handler gone.
    pub dropped_other: AtomicU64,
    /// Dropped: the ingress port had its share of the queue (see the module docs).
    pub port_share: AtomicU64,
    /// Upcalls translated.
    pub translated: AtomicU64,
    /// Upcalls answered by a flow installed earlier in the same batch (coalesced).
    pub coalesced: AtomicU64,
    /// Flows installed.
    pub installed: AtomicU64,
    /// Installs refused by the flow table (limit or overlap); the packet is still
    /// forwarded.
    pub install_failed: AtomicU64,
}

/// A snapshot of [`UpcallCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpcallStats {
    /// Upcalls queued.
    pub queued: u64,
    /// Dropped: queue full.
    pub queue_full: u64,
    /// Dropped: frame too big or handler gone.
    pub dropped_other: u64,
    /// Dropped: the ingress port had its share of the queue.
    pub port_share: u64,
    /// Upcalls translated.
    pub translated: u64,
    /// Upcalls coalesced with an earlier one.
    pub coalesced: u64,
    /// Flows installed.
    pub installed: u64,
    /// Installs refused by the flow table.
    pub install_failed: u64,
}

impl UpcallCounters {
    /// A snapshot.
    pub fn snapshot(&self) -> UpcallStats {
        UpcallStats {
            queued: self.queued.load(Relaxed),
            queue_full: self.queue_full.load(Relaxed),
            dropped_other: self.dropped_other.load(Relaxed),
            port_share: self.port_share.load(Relaxed),
            translated: self.translated.load(Relaxed),
            coalesced: self.coalesced.load(Relaxed),
            installed: self.installed.load(Relaxed),
            install_failed: self.install_failed.load(Relaxed),
        }
    }
}

/// What one queue holds: in all, and per ingress port (by id modulo [`PORT_SLOTS`]).
#[derive(Debug)]
struct QueueLoad {
    total: AtomicUsize,
    ports: Box<[AtomicU32]>,
}

impl QueueLoad {
    fn new() -> Self {
        Self {
            total: AtomicUsize::new(0),
            ports: (0..PORT_SLOTS).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    fn port(&self, port: PortId) -> Option<&AtomicU32> {
        self.ports.get(port.0 as usize % PORT_SLOTS)
    }

    /// An upcall of `port` left the queue.
    fn taken(&self, port: PortId) {
        let dec = |n: u32| Some(n.saturating_sub(1));
        let _ = self
            .total
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
        if let Some(p) = self.port(port) {
            let _ = p.fetch_update(Relaxed, Relaxed, dec);
        }
    }
}

/// One queue's sending end and load.
#[derive(Debug, Clone)]
struct Queue {
    tx: SyncSender<Upcall>,
    load: Arc<QueueLoad>,
}

/// The datapath's end of the upcall queues.
#[derive(Debug, Clone)]
pub struct UpcallSender {
    queues: Vec<Queue>,
    max_frame: usize,
    /// Half of a queue's capacity, and a port's share of it.
    half: usize,
    share: usize,
    counters: Arc<UpcallCounters>,
    /// The datapath thread this sender belongs to ([`Upcall::origin`]).
    origin: usize,
}

/// A handler's end of its upcall queue.
#[derive(Debug)]
pub struct UpcallReceiver {
    rx: Receiver<Upcall>,
    load: Arc<QueueLoad>,
}

impl UpcallReceiver {
    /// Waits up to `timeout` for an upcall.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Upcall, RecvTimeoutError> {
        let up = self.rx.recv_timeout(timeout)?;
        self.load.taken(up.in_port);
        Ok(up)
    }

    /// An upcall, if one is queued.
    pub fn try_recv(&self) -> Result<Upcall, TryRecvError> {
        let up = self.rx.try_recv()?;
        self.load.taken(up.in_port);
        Ok(up)
    }

    /// The upcalls queued now.
    pub fn try_iter(&self) -> impl Iterator<Item = Upcall> + '_ {
        std::iter::from_fn(|| self.try_recv().ok())
    }
}

/// Creates the queues: the sender and one receiver per handler.
pub fn upcall_queues(
    config: UpcallConfig,
    counters: Arc<UpcallCounters>,
) -> (UpcallSender, Vec<UpcallReceiver>) {
    let (queues, receivers) = (0..config.handlers.max(1))
        .map(|_| {
            let (tx, rx) = sync_channel(config.capacity);
            let load = Arc::new(QueueLoad::new());
            let rx = UpcallReceiver {
                rx,
                load: load.clone(),
            };
            (Queue { tx, load }, rx)
        })
        .unzip();
    let sender = UpcallSender {
        queues,
        max_frame: config.max_frame,
        half: config.capacity / 2,
        share: config.port_share(),
        counters,
        origin: 0,
    };
    (sender, receivers)
}

impl UpcallSender {
    /// The sender of datapath thread `origin`: the same queues, its upcalls marked as
    /// that thread's.
    pub fn for_thread(&self, origin: usize) -> Self {
        Self {
            origin,
            ..self.clone()
        }
    }

    /// Queues a miss without blocking; on failure the packet is dropped and counted.
    pub fn send(&self, key: &FlowKey, frame: &[u8]) -> Result<(), UpcallDrop> {
        if frame.len() > self.max_frame {
            self.counters.dropped_other.fetch_add(1, Relaxed);
            return Err(UpcallDrop::TooBig(frame.len()));
        }
        let n = self.queues.len() as u64;
        let Some(queue) = self.queues.get((key_hash(key) % n.max(1)) as usize) else {
            return Err(UpcallDrop::Disconnected);
        };
        let in_port = PortId(key.in_port);
        let (load, Some(mine)) = (&queue.load, queue.load.port(in_port)) else {
            return Err(UpcallDrop::Disconnected);
        };
        if mine.load(Relaxed) as usize >= self.share && load.total.load(Relaxed) >= self.half {
            self.counters.port_share.fetch_add(1, Relaxed);
            return Err(UpcallDrop::PortShare);
        }
        mine.fetch_add(1, Relaxed);
        load.total.fetch_add(1, Relaxed);
        let up = Upcall {
            key: *key,
            in_port,
            packet: frame.to_vec(),
            origin: self.origin,
        };
        match queue.tx.try_send(up) {
            Ok(()) => {
                self.counters.queued.fetch_add(1, Relaxed);
                Ok(())
            }
            Err(e) => {
                load.taken(in_port);
                if let TrySendError::Full(_) = e {
                    self.counters.queue_full.fetch_add(1, Relaxed);
                    Err(UpcallDrop::QueueFull)
                } else {
                    self.counters.dropped_other.fetch_add(1, Relaxed);
                    Err(UpcallDrop::Disconnected)
                }
            }
        }
    }
}
