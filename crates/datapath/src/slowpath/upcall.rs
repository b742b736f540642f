//! Upcalls: cache misses queued from datapath threads to handler threads.
//!
//! Each handler has its own bounded queue; a miss goes to the queue chosen by its key's
//! hash, so every miss of one flow reaches the same handler, which coalesces them. The
//! datapath never blocks: when the queue is full, or the frame is larger than the
//! configured maximum, the packet is dropped and counted. The frame is copied into the
//! upcall (memory is bounded by queue capacity x maximum frame size) and handed back
//! with its actions in a [`Verdict`], so the first packets of a flow are forwarded too.
//!
//! Thread-safety: [`UpcallSender`] is `Clone + Send + Sync` (one per datapath thread or
//! shared); a handler owns its `Receiver`. Counters are relaxed atomics.

use crate::actions::Actions;
use crate::cache::key_hash;
use crate::flow::FlowKey;
use crate::{FlowId, PortId};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

/// One cache miss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upcall {
    /// The packet's key.
    pub key: FlowKey,
    /// The ingress port.
    pub in_port: PortId,
    /// A copy of the frame.
    pub packet: Vec<u8>,
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
            translated: self.translated.load(Relaxed),
            coalesced: self.coalesced.load(Relaxed),
            installed: self.installed.load(Relaxed),
            install_failed: self.install_failed.load(Relaxed),
        }
    }
}

/// The datapath's end of the upcall queues.
#[derive(Debug, Clone)]
pub struct UpcallSender {
    queues: Vec<SyncSender<Upcall>>,
    max_frame: usize,
    counters: Arc<UpcallCounters>,
}

/// Creates the queues: the sender and one receiver per handler.
pub fn upcall_queues(
    config: UpcallConfig,
    counters: Arc<UpcallCounters>,
) -> (UpcallSender, Vec<Receiver<Upcall>>) {
    let (queues, receivers) = (0..config.handlers.max(1))
        .map(|_| sync_channel(config.capacity))
        .unzip();
    let sender = UpcallSender {
        queues,
        max_frame: config.max_frame,
        counters,
    };
    (sender, receivers)
}

impl UpcallSender {
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
        let up = Upcall {
            key: *key,
            in_port: PortId(key.in_port),
            packet: frame.to_vec(),
        };
        match queue.try_send(up) {
            Ok(()) => {
                self.counters.queued.fetch_add(1, Relaxed);
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                self.counters.queue_full.fetch_add(1, Relaxed);
                Err(UpcallDrop::QueueFull)
            }
            Err(TrySendError::Disconnected(_)) => {
                self.counters.dropped_other.fetch_add(1, Relaxed);
                Err(UpcallDrop::Disconnected)
            }
        }
    }
}
