//! The offload worker: an [`Offloader`] on its own thread behind a bounded queue, so the
//! datapath never waits on netlink. A full queue drops the request (counted) and the
//! flow stays in software with the reason `offload queue full`.

use crate::backend::RuleStats;
use crate::offloader::{AdoptionReport, FlowRequest, Offloader};
use crate::placement::{Placement, SoftwareReason};
use crate::ports::PortInfo;
use datapath::{FlowId, PortId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the worker publishes: placements and pulled counters.
#[derive(Debug, Default)]
pub struct Published {
    /// Each known flow's placement.
    pub placements: HashMap<FlowId, Placement>,
    /// Each offloaded flow's last counters.
    pub stats: HashMap<FlowId, RuleStats>,
}

/// Worker settings.
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    /// Queue capacity (requests).
    pub queue: usize,
    /// Requests processed per backend round.
    pub batch: usize,
    /// How often counters are pulled.
    pub stats_interval: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            queue: 4096,
            batch: 256,
            stats_interval: Duration::from_secs(1),
        }
    }
}

/// What travels to the worker thread (by value, as requests always did: boxing would
/// cost an allocation per request).
#[allow(clippy::large_enum_variant)]
enum Msg {
    /// A flow request.
    Req(FlowRequest),
    /// End the adoption round (after the requests queued before it).
    EndAdoption(SyncSender<AdoptionReport>),
    /// Ports plugged and unplugged while running (after the requests queued before it).
    Ports(PortChange, SyncSender<Vec<String>>),
}

/// Ports plugged and unplugged while running.
#[derive(Debug, Clone, Default)]
pub struct PortChange {
    /// Ports added or replaced.
    pub plugged: Vec<PortInfo>,
    /// Ports removed (their flows' rules should have been removed first).
    pub unplugged: Vec<PortId>,
}

/// The datapath's handle on the worker.
pub struct OffloadWorker {
    tx: Option<SyncSender<Msg>>,
    drops: Arc<AtomicU64>,
    published: Arc<Mutex<Published>>,
    thread: Option<JoinHandle<Offloader>>,
}

/// Told of every placement the worker decides, on the worker's thread (keep it short).
pub type PlacementObserver = Arc<dyn Fn(FlowId, &Placement) + Send + Sync>;

impl OffloadWorker {
    /// Starts the worker thread. It first sweeps orphan rules (a previous run's, except
    /// those an adoption round holds: see [`Offloader::load_kept`]).
    pub fn spawn(offloader: Offloader, cfg: WorkerConfig) -> Self {
        Self::spawn_observed(offloader, cfg, Arc::new(|_: FlowId, _: &Placement| {}))
    }

    /// As [`Self::spawn`], calling `observer` with each placement as it is decided.
    pub fn spawn_observed(
        mut offloader: Offloader,
        cfg: WorkerConfig,
        observer: PlacementObserver,
    ) -> Self {
        let (tx, rx) = sync_channel(cfg.queue.max(1));
        let published = Arc::new(Mutex::new(Published::default()));
        let pubc = Arc::clone(&published);
        let thread = std::thread::Builder::new()
            .name("flowd-offload".into())
            .spawn(move || {
                if let Err(e) = offloader.sweep_orphans() {
                    tracing::warn!(error = %e, "offload: start-up sweep failed");
                }
                run(offloader, rx, pubc, cfg, observer)
            })
            .ok();
        Self {
            tx: Some(tx),
            drops: Arc::new(AtomicU64::new(0)),
            published,
            thread,
        }
    }

    /// Queues a request without blocking. Returns false (and counts a drop) when the
    /// queue is full.
    pub fn offer(&self, req: FlowRequest) -> bool {
        let flow = req.flow();
        let is_put = matches!(req, FlowRequest::Put { .. });
        let Some(tx) = &self.tx else { return false };
        self.mark_pending(&req);
        match tx.try_send(Msg::Req(req)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.drops.fetch_add(1, Ordering::Relaxed);
                if is_put {
                    let mut p = self.lock();
                    if let Some(e) = p.placements.get_mut(&flow)
                        && !e.is_offloaded()
                    {
                        *e = Placement::software(SoftwareReason::QueueFull);
                    }
                }
                false
            }
        }
    }

    /// Queues a request, waiting for room (start-up adoption, which must not lose
    /// any). Returns false when the worker is gone.
    pub fn offer_wait(&self, req: FlowRequest) -> bool {
        self.mark_pending(&req);
        self.tx
            .as_ref()
            .is_some_and(|tx| tx.send(Msg::Req(req)).is_ok())
    }

    /// Ends the adoption round once the requests queued so far are processed: kept
    /// rules no flow took over are removed. Waits for the worker's answer.
    pub fn end_adoption(&self) -> Option<AdoptionReport> {
        let (tx, rx) = sync_channel(1);
        self.tx.as_ref()?.send(Msg::EndAdoption(tx)).ok()?;
        rx.recv().ok()
    }

    /// Applies port changes after the requests queued before them; returns one message
    /// per plugged port the backend could not prepare (its flows then stay in
    /// software: translation finds no eswitch device for it). Waits for the worker.
    pub fn change_ports(&self, change: PortChange) -> Vec<String> {
        let (tx, rx) = sync_channel(1);
        let sent = self
            .tx
            .as_ref()
            .is_some_and(|t| t.send(Msg::Ports(change, tx)).is_ok());
        let answer = if sent { rx.recv().ok() } else { None };
        answer.unwrap_or_else(|| vec!["the offload worker stopped".into()])
    }

    /// Marks a put's flow pending (unless offloaded) *before* it is queued: the worker
    /// may answer before the offering thread runs again, and its answer must not be
    /// overwritten by "pending".
    fn mark_pending(&self, req: &FlowRequest) {
        if let FlowRequest::Put { flow, .. } = req {
            let mut p = self.lock();
            let e = p
                .placements
                .entry(*flow)
                .or_insert_with(|| Placement::software(SoftwareReason::Pending));
            if !e.is_offloaded() {
                *e = Placement::software(SoftwareReason::Pending);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Published> {
        self.published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Requests dropped because the queue was full.
    pub fn drops(&self) -> u64 {
        self.drops.load(Ordering::Relaxed)
    }

    /// A flow's placement.
    pub fn placement(&self, flow: FlowId) -> Option<Placement> {
        self.published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .placements
            .get(&flow)
            .cloned()
    }

    /// A flow's last pulled counters.
    pub fn stats(&self, flow: FlowId) -> Option<RuleStats> {
        self.published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stats
            .get(&flow)
            .copied()
    }

    /// Stops the worker after the queued requests and returns the offloader.
    pub fn shutdown(mut self) -> Option<Offloader> {
        self.tx.take();
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl Drop for OffloadWorker {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    mut off: Offloader,
    rx: Receiver<Msg>,
    published: Arc<Mutex<Published>>,
    cfg: WorkerConfig,
    observer: PlacementObserver,
) -> Offloader {
    let mut next_stats = Instant::now() + cfg.stats_interval;
    loop {
        let wait = next_stats.saturating_duration_since(Instant::now());
        // An end of adoption is answered after the requests queued before it.
        let mut end = None;
        let first = match rx.recv_timeout(wait) {
            Ok(Msg::Req(r)) => Some(r),
            Ok(m) => {
                end = Some(m);
                None
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return off,
        };
        if let Some(first) = first {
            let mut batch = vec![first];
            while batch.len() < cfg.batch.max(1) {
                match rx.try_recv() {
                    Ok(Msg::Req(r)) => batch.push(r),
                    Ok(m) => {
                        end = Some(m);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let removed: Vec<FlowId> = batch
                .iter()
                .filter(|r| matches!(r, FlowRequest::Remove { .. }))
                .map(FlowRequest::flow)
                .collect();
            let touched = off.process(batch);
            let mut p = published.lock().unwrap_or_else(PoisonError::into_inner);
            for f in removed {
                if off.placement(f).is_none() {
                    p.placements.remove(&f);
                    p.stats.remove(&f);
                }
            }
            let touched: Vec<_> = touched
                .into_iter()
                .filter(|(f, _)| off.placement(*f).is_some())
                .collect();
            for (f, pl) in &touched {
                p.placements.insert(*f, pl.clone());
            }
            drop(p);
            for (f, pl) in &touched {
                observer(*f, pl);
            }
        }
        match end {
            Some(Msg::EndAdoption(answer)) => {
                let _ = answer.send(off.end_adoption());
            }
            Some(Msg::Ports(change, answer)) => {
                let _ = answer.send(off.change_ports(change));
            }
            Some(Msg::Req(_)) | None => {}
        }
        if Instant::now() >= next_stats {
            let stats = off.sync_stats();
            let mut p = published.lock().unwrap_or_else(PoisonError::into_inner);
            p.stats.extend(stats);
            next_stats = Instant::now() + cfg.stats_interval;
        }
    }
}
