//! The offload worker: an [`Offloader`] on its own thread behind a bounded queue, so the
//! datapath never waits on netlink.
//!
//! Nothing offered is ever lost. A request that finds the queue full goes to a backlog
//! (one entry per flow, the latest request wins; a flow with a request in the backlog
//! keeps its later ones there too, so its requests stay in order) and the flow stays
//! `pending`; the worker takes the backlog after the queue. Path and port facts travel
//! through the same queue, waiting for room, so that the worker sees facts and requests
//! in the order they happened. Retries of failed installs (see [`Offloader`]) are run
//! by the worker when they are due.

use crate::backend::RuleStats;
use crate::offloader::{AdoptionReport, FlowRequest, OffloadCounters, Offloader};
use crate::placement::{Placement, SoftwareReason};
use crate::ports::PortInfo;
use datapath::fastmap::FastMap;
use datapath::{FlowId, PortId};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vocab::{LookupKey, PathFacts};

/// What the worker publishes: each known flow's placement and last pulled counters,
/// and its own counters.
#[derive(Debug, Default)]
pub struct Published {
    /// Each known flow, in one map: a slot per flow rather than one in a map of
    /// placements and another in a map of counters (issue 15's memory per flow: a map
    /// of a million entries is 8 bytes of key, a control byte and as much again of
    /// empty room per flow, just past a doubling).
    pub flows: FastMap<FlowId, PublishedFlow>,
    /// The offloader's counters.
    pub counters: OffloadCounters,
}

/// What the worker publishes of one flow.
#[derive(Debug, Clone)]
pub struct PublishedFlow {
    /// The flow's placement, shared with the offloader and with every flow of the same
    /// placement (see [`Offloader::placement_shared`]).
    pub placement: Arc<Placement>,
    /// Its last pulled counters (`None` until pulled once: not offloaded, or not yet).
    pub stats: Option<RuleStats>,
}

/// How long after pulling every offloaded flow's counters, which took `took`, to pull
/// them again: `interval`, or nine times `took` when that is longer (a million flows
/// pulled every second would keep a core busy; this holds it to a tenth).
fn stats_rest(interval: Duration, took: Duration) -> Duration {
    interval.max(took * 9)
}

/// Flows whose counters [`OffloadWorker::stats_each`] reads per hold of the lock.
pub const STATS_CHUNK: usize = 4096;

/// Worker settings.
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    /// Queue capacity (requests); beyond it requests wait in the backlog.
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

/// What travels to the worker thread.
enum Msg {
    /// A flow request.
    Req(FlowRequest),
    /// A lookup key's path facts.
    Path(LookupKey, PathFacts),
    /// Ports plugged, changed and unplugged (after the requests queued before them);
    /// the refusals are answered if asked for.
    Ports(PortChange, Option<SyncSender<Vec<String>>>),
    /// End the adoption round (after the requests queued before it).
    EndAdoption(SyncSender<AdoptionReport>),
}

/// Ports plugged, changed and unplugged while running.
#[derive(Debug, Clone, Default)]
pub struct PortChange {
    /// Ports added, or whose facts changed (MTU, state, switch id, a re-created netdev's
    /// new index).
    pub plugged: Vec<PortInfo>,
    /// Ports removed (their flows' rules should have been removed first).
    pub unplugged: Vec<PortId>,
}

/// The backlog and its length, readable without the lock: a handler offering a new
/// flow takes the lock only when something waits there (the order of a flow's requests
/// is kept through it).
#[derive(Debug, Default)]
struct SharedBacklog {
    queue: Mutex<Backlog>,
    len: AtomicUsize,
}

impl SharedBacklog {
    fn put(&self, req: FlowRequest) {
        self.put_locked(&mut lock(&self.queue), req);
    }

    /// [`Self::put`] through a hold of the lock the caller has already.
    fn put_locked(&self, b: &mut Backlog, req: FlowRequest) {
        b.put(req);
        self.len.store(b.order.len(), Ordering::Release);
    }

    fn take(&self, max: usize) -> Vec<FlowRequest> {
        if self.is_empty() {
            return Vec::new();
        }
        let mut b = lock(&self.queue);
        let out = b.take(max);
        self.len.store(b.order.len(), Ordering::Release);
        out
    }

    fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }
}

/// Requests that found the queue full, one per flow, in arrival order.
#[derive(Debug, Default)]
struct Backlog {
    reqs: FastMap<FlowId, FlowRequest>,
    order: VecDeque<FlowId>,
}

impl Backlog {
    fn put(&mut self, req: FlowRequest) {
        let flow = req.flow();
        if self.reqs.insert(flow, req).is_none() {
            self.order.push_back(flow);
        }
    }

    fn take(&mut self, max: usize) -> Vec<FlowRequest> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(f) = self.order.pop_front() else {
                break;
            };
            out.extend(self.reqs.remove(&f));
        }
        out
    }
}

/// The datapath's handle on the worker.
pub struct OffloadWorker {
    tx: Option<SyncSender<Msg>>,
    backlog: Arc<SharedBacklog>,
    deferred: Arc<AtomicU64>,
    published: Arc<Mutex<Published>>,
    /// The placement of a flow offered and not decided yet, shared by all of them.
    pending: Arc<Placement>,
    thread: Option<JoinHandle<Offloader>>,
}

/// Told of every placement the worker decides, on the worker's thread (keep it short).
pub type PlacementObserver = Arc<dyn Fn(FlowId, &Placement) + Send + Sync>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

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
        let backlog = Arc::new(SharedBacklog::default());
        let worker = Worker {
            rx,
            backlog: backlog.clone(),
            published: published.clone(),
            cfg,
            observer,
        };
        let thread = std::thread::Builder::new()
            .name("flowd-offload".into())
            .spawn(move || {
                if let Err(e) = offloader.sweep_orphans() {
                    tracing::warn!(error = %e, "offload: start-up sweep failed");
                }
                worker.run(offloader)
            })
            .ok();
        Self {
            tx: Some(tx),
            backlog,
            deferred: Arc::new(AtomicU64::new(0)),
            published,
            pending: Arc::new(Placement::software(SoftwareReason::Pending)),
            thread,
        }
    }

    /// Queues a request without blocking: when the queue is full, the request waits in
    /// the backlog (counted in [`Self::deferred`]) and the flow stays pending. Returns
    /// false only when the worker is gone.
    pub fn offer(&self, req: FlowRequest) -> bool {
        let Some(tx) = &self.tx else { return false };
        self.mark_pending(&req);
        // With an empty backlog no earlier request of this flow waits there: straight
        // to the queue, without the backlog's lock.
        let mut backlog = (!self.backlog.is_empty()).then(|| lock(&self.backlog.queue));
        if let Some(b) = backlog
            .as_mut()
            .filter(|b| b.reqs.contains_key(&req.flow()))
        {
            // Behind an earlier request of the same flow: keep their order.
            self.backlog.put_locked(b, req);
            self.deferred.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        match tx.try_send(Msg::Req(req)) {
            Ok(()) => true,
            Err(TrySendError::Full(Msg::Req(req))) => {
                match backlog.as_mut() {
                    Some(b) => self.backlog.put_locked(b, req),
                    None => self.backlog.put(req),
                }
                self.deferred.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    /// Queues a request, waiting for room (start-up adoption). Returns false when the
    /// worker is gone.
    pub fn offer_wait(&self, req: FlowRequest) -> bool {
        self.mark_pending(&req);
        self.send(Msg::Req(req))
    }

    /// A lookup key's path facts changed (or became known): the flows that use it are
    /// judged again. Waits for room in the queue (facts are never dropped).
    pub fn path_changed(&self, key: LookupKey, facts: PathFacts) -> bool {
        self.send(Msg::Path(key, facts))
    }

    /// Ports' facts changed (MTU, state, switch id, a re-created netdev): the flows
    /// that use them are judged again. Does not wait for the worker.
    pub fn update_ports(&self, change: PortChange) -> bool {
        self.send(Msg::Ports(change, None))
    }

    fn send(&self, m: Msg) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(m).is_ok())
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
        let answer = if self.send(Msg::Ports(change, Some(tx))) {
            rx.recv().ok()
        } else {
            None
        };
        answer.unwrap_or_else(|| vec!["the offload worker stopped".into()])
    }

    /// Marks a new flow pending *before* its put is queued: the worker may answer before
    /// the offering thread runs again, and its answer must not be overwritten by
    /// "pending". A flow the worker placed already keeps its placement until the worker
    /// decides again (it publishes only what changed).
    fn mark_pending(&self, req: &FlowRequest) {
        if let FlowRequest::Put { .. } = req {
            lock(&self.published)
                .flows
                .entry(req.flow())
                .or_insert_with(|| PublishedFlow {
                    placement: self.pending.clone(),
                    stats: None,
                });
        }
    }

    /// Requests that found the queue full and waited in the backlog (none is lost).
    pub fn deferred(&self) -> u64 {
        self.deferred.load(Ordering::Relaxed)
    }

    /// Requests waiting in the backlog now.
    pub fn backlog(&self) -> usize {
        self.backlog.len.load(Ordering::Acquire)
    }

    /// The offloader's counters, as of its last round.
    pub fn counters(&self) -> OffloadCounters {
        lock(&self.published).counters
    }

    /// A flow's placement.
    pub fn placement(&self, flow: FlowId) -> Option<Placement> {
        lock(&self.published)
            .flows
            .get(&flow)
            .map(|p| Placement::clone(&p.placement))
    }

    /// How many flows a filter carries, and how many are in software by reason
    /// category (`SoftwareReason::category`): one pass over the placements under one
    /// lock, nothing cloned, so that `stats` and the metrics stay cheap at a million
    /// flows.
    pub fn placement_counts(&self) -> (u64, BTreeMap<&'static str, u64>) {
        let p = lock(&self.published);
        let mut offloaded = 0;
        let mut software = BTreeMap::new();
        for pf in p.flows.values() {
            match &*pf.placement {
                Placement::Software { reason } => {
                    *software.entry(reason.category()).or_default() += 1;
                }
                pl if pl.is_offloaded() => offloaded += 1,
                _ => {}
            }
        }
        (offloaded, software)
    }

    /// A flow's last pulled counters.
    pub fn stats(&self, flow: FlowId) -> Option<RuleStats> {
        lock(&self.published).flows.get(&flow).and_then(|p| p.stats)
    }

    /// The last pulled counters of each of `flows` that has some, to `f` with its index
    /// in `flows`, under one hold of the lock per [`STATS_CHUNK`] flows (a sweep asks
    /// for every flow).
    pub fn stats_each(&self, flows: &[FlowId], mut f: impl FnMut(usize, RuleStats)) {
        for (c, chunk) in flows.chunks(STATS_CHUNK).enumerate() {
            let p = lock(&self.published);
            for (i, id) in chunk.iter().enumerate() {
                if let Some(s) = p.flows.get(id).and_then(|p| p.stats) {
                    f(c * STATS_CHUNK + i, s);
                }
            }
        }
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

/// The worker thread's side.
struct Worker {
    rx: Receiver<Msg>,
    backlog: Arc<SharedBacklog>,
    published: Arc<Mutex<Published>>,
    cfg: WorkerConfig,
    observer: PlacementObserver,
}

impl Worker {
    fn run(self, mut off: Offloader) -> Offloader {
        let batch_max = self.cfg.batch.max(1);
        let mut next_stats = Instant::now() + self.cfg.stats_interval;
        loop {
            let now = Instant::now();
            let mut wake = next_stats;
            if let Some(r) = off.next_retry() {
                wake = wake.min(r);
            }
            if !self.backlog.is_empty() {
                wake = now;
            }
            // Requests up to the first other message, which is handled after them.
            let mut batch = Vec::new();
            let mut other = None;
            match self.rx.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(Msg::Req(r)) => batch.push(r),
                Ok(m) => other = Some(m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    // Nothing offered is lost: what waits in the backlog goes first.
                    let rest = self.backlog.take(usize::MAX);
                    self.apply(&mut off, rest);
                    return off;
                }
            }
            while other.is_none() && !batch.is_empty() && batch.len() < batch_max {
                match self.rx.try_recv() {
                    Ok(Msg::Req(r)) => batch.push(r),
                    Ok(m) => other = Some(m),
                    Err(_) => break,
                }
            }
            self.apply(&mut off, batch);
            match other {
                Some(Msg::Path(key, facts)) => {
                    let touched = off.path_changed(key, facts);
                    self.publish(&off, touched, &[]);
                }
                Some(Msg::Ports(change, answer)) => {
                    let (refused, touched) = off.change_ports(change);
                    self.publish(&off, touched, &[]);
                    if let Some(a) = answer {
                        let _ = a.send(refused);
                    }
                }
                Some(Msg::EndAdoption(answer)) => {
                    let _ = answer.send(off.end_adoption());
                }
                Some(Msg::Req(_)) | None => {}
            }
            // The backlog after the queue: its requests came after what the queue held
            // when they were offered.
            let waiting = self.backlog.take(batch_max);
            self.apply(&mut off, waiting);
            let touched = off.retry_due(Instant::now(), batch_max);
            self.publish(&off, touched, &[]);
            if Instant::now() >= next_stats {
                let started = Instant::now();
                // A chunk at a time: no list of every flow's counters (at a million
                // flows it was 56 MB for a moment, and glibc kept it).
                off.sync_stats_each(STATS_CHUNK, |chunk| {
                    let mut p = lock(&self.published);
                    for (flow, s) in chunk {
                        if let Some(pf) = p.flows.get_mut(flow) {
                            pf.stats = Some(*s);
                        }
                    }
                });
                lock(&self.published).counters = off.counters();
                next_stats =
                    Instant::now() + stats_rest(self.cfg.stats_interval, started.elapsed());
            }
        }
    }

    /// Processes requests and publishes what they decided.
    fn apply(&self, off: &mut Offloader, batch: Vec<FlowRequest>) {
        if batch.is_empty() {
            return;
        }
        let removed: Vec<FlowId> = batch
            .iter()
            .filter(|r| matches!(r, FlowRequest::Remove { .. }))
            .map(FlowRequest::flow)
            .collect();
        let touched = off.process(batch);
        self.publish(off, touched, &removed);
    }

    /// Publishes placements (of flows the offloader still knows) and forgets removed
    /// flows, then tells the observer.
    fn publish(&self, off: &Offloader, touched: Vec<(FlowId, Placement)>, removed: &[FlowId]) {
        if touched.is_empty() && removed.is_empty() {
            return;
        }
        let mut p = lock(&self.published);
        for f in removed {
            if off.placement(*f).is_none() {
                p.flows.remove(f);
            }
        }
        let touched: Vec<_> = touched
            .into_iter()
            .filter(|(f, _)| off.placement(*f).is_some())
            .collect();
        for (f, pl) in &touched {
            // The offloader's own copy when it is this placement (it is, unless the
            // flow was placed twice in the round).
            let shared = match off.placement_shared(*f) {
                Some(s) if **s == *pl => s.clone(),
                _ => Arc::new(pl.clone()),
            };
            match p.flows.get_mut(f) {
                Some(pf) => pf.placement = shared,
                None => {
                    p.flows.insert(
                        *f,
                        PublishedFlow {
                            placement: shared,
                            stats: None,
                        },
                    );
                }
            }
        }
        p.counters = off.counters();
        drop(p);
        for (f, pl) in &touched {
            (self.observer)(*f, pl);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory (issue 15): one slot per flow holds its placement (shared) and its
    /// counters; a field by value creeping in fails here.
    #[test]
    fn a_published_flow_stays_small() {
        let n = std::mem::size_of::<PublishedFlow>();
        assert!(n <= 64, "{n}");
    }

    #[test]
    fn counters_are_pulled_at_most_a_tenth_of_the_time() {
        let ms = Duration::from_millis;
        assert_eq!(stats_rest(ms(1000), ms(3)), ms(1000));
        assert_eq!(stats_rest(ms(1000), ms(200)), ms(1800));
    }

    #[test]
    fn the_backlog_keeps_one_request_per_flow_in_arrival_order() {
        let mut b = Backlog::default();
        b.put(FlowRequest::Remove { flow: FlowId(1) });
        b.put(FlowRequest::Remove { flow: FlowId(2) });
        b.put(FlowRequest::Remove { flow: FlowId(1) });
        let first = b.take(1);
        assert_eq!(first, vec![FlowRequest::Remove { flow: FlowId(1) }]);
        assert_eq!(b.take(10).len(), 1);
        assert!(b.take(10).is_empty());
    }
}
