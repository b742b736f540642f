//! [`Engine`]: the slow path shared by handler threads and the revalidator.
//!
//! - **Handlers** ([`Engine::handle`]) translate a batch of upcalls, learning sources as
//!   a side effect, install each megaflow into the [`FlowTable`] and return every packet
//!   with its actions ([`Verdict`]). Misses of a flow already installed in the same batch
//!   are answered from it (coalesced); a racing duplicate install returns the existing
//!   entry.
//! - **The revalidator** ([`Engine::sweep`]) deletes flows idle longer than `max_idle`,
//!   keeps MAC stations behind used flows alive and ages out the others, re-translates
//!   the flows that pending [`Change`]s may affect (modifying or deleting the stale
//!   ones), and evicts the least recently used flows when the table is full.
//! - **Observers** ([`FlowObserver`]) learn of every install, modify and delete (offload
//!   follows the table), and refresh `used` of offloaded flows before each sweep.
//!
//! Time is passed in as a [`Duration`] since the epoch of the caller's monotonic clock;
//! the flow table's `used` values are milliseconds of that same clock.
//!
//! # Thread-safety
//! The [`SlowPath`] sits behind an `RwLock`: translations take the read lock, learning a
//! new or moved station and configuration changes the write lock. Per-flow metadata
//! (for revalidation) is behind a mutex held briefly. A handler that translated before a
//! change and installs after the revalidator swept for it would leave a stale flow: a
//! sequence number bumped by every change detects this, and the handler rechecks its
//! flow.

use super::remote::{StationObserver, stations};
use super::upcall::{Upcall, UpcallCounters, UpcallReceiver, Verdict};
use super::{Change, ChangeSet, FlowMeta, Revalidation, SlowPath, Xlation};
use crate::actions::{Actions, SharedActions};
use crate::cache::key_hash;
use crate::cache::{FlowEntry, FlowTable, SNAPSHOT_CHUNK};
use crate::fastmap::FastMap;
use crate::flow::{FlowKey, FlowMask, Megaflow};
use crate::{FlowId, PortId};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{
    Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, RwLockReadGuard,
    RwLockWriteGuard,
};
use std::time::{Duration, Instant};

mod metas;
mod sweep;

use metas::Metas;

/// Why a flow was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeleteReason {
    /// Idle longer than `max_idle`.
    Idle,
    /// Evicted (least recently used) to stay under the flow limit.
    Evicted,
    /// Its translation changed mask, or its source must be learned again.
    Stale,
}

/// Hooks for whoever mirrors the flow table (offload).
pub trait FlowObserver: Send + Sync {
    /// A flow was installed.
    fn installed(&self, _flow: &Arc<FlowEntry>) {}
    /// A flow's actions changed: `old` was replaced by `new` (same megaflow).
    fn modified(&self, _old: &Arc<FlowEntry>, _new: &Arc<FlowEntry>) {}
    /// A flow was deleted.
    fn deleted(&self, _flow: &Arc<FlowEntry>, _reason: DeleteReason) {}
    /// In each sweep, before its idle flows are picked, for each chunk of the table it
    /// walks (every flow once a sweep, a chunk at a time: not a list of every flow): move
    /// `used` (and stats) of offloaded flows forward from their hardware counters, with
    /// [`FlowEntry::record`] or [`FlowEntry::touch`].
    fn refresh_used(&self, _flows: &[Arc<FlowEntry>]) {}
}

/// An observer that does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl FlowObserver for NoObserver {}

/// Engine settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Flows idle longer than this are deleted (default 10 s).
    pub max_idle: Duration,
    /// The most flows (default 200,000); at the limit the revalidator evicts the least
    /// recently used tenth.
    pub flow_limit: usize,
    /// Most upcalls a handler takes at once (default 64).
    pub batch: usize,
    /// Threads a sweep re-translates on when many flows are affected (default: the
    /// machine's parallelism, at most 4).
    pub revalidator_threads: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_idle: Duration::from_secs(10),
            flow_limit: 200_000,
            batch: 64,
            revalidator_threads: std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(4),
        }
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Flows in the table at the start.
    pub flows: usize,
    /// Deleted for idleness.
    pub idle: usize,
    /// Re-translated because a change may affect them.
    pub revalidated: usize,
    /// Given new actions.
    pub modified: usize,
    /// Deleted as stale.
    pub stale: usize,
    /// Evicted for the flow limit.
    pub evicted: usize,
    /// MAC stations aged out.
    pub macs_expired: usize,
}

/// Revalidator counters (totals of the sweeps).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RevalStats {
    /// Sweeps run.
    pub sweeps: u64,
    /// Totals.
    pub total: SweepReport,
}

/// The slow path shared by handlers and the revalidator. See the module docs.
pub struct Engine {
    sp: RwLock<SlowPath>,
    table: Arc<FlowTable>,
    /// Per-flow metadata, 8 bytes a flow ([`Metas`]).
    metas: Mutex<Metas>,
    /// The installed flows' action lists, shared between flows that do the same.
    actions: Mutex<SharedActions>,
    pending: Mutex<Vec<Change>>,
    wake: Condvar,
    seq: AtomicU64,
    observer: Arc<dyn FlowObserver>,
    config: EngineConfig,
    /// `config.max_idle` in ms and `config.flow_limit`, as set at run time.
    max_idle_ms: AtomicU64,
    flow_limit: AtomicUsize,
    counters: Arc<UpcallCounters>,
    reval: Mutex<RevalStats>,
    /// `used` value (ms) up to which stations were refreshed by the last sweep.
    refreshed_to: AtomicU64,
    /// Hears of every station change (a control plane advertising local stations).
    stations: OnceLock<Arc<dyn StationObserver>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("table", &self.table)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The ingress port a flow put for this key counts against ([`FlowTable::put_for`]):
/// its `in_port`, unless it came decapsulated from the fabric (remote hypervisors'
/// traffic shares the tunnel port and is not one port's).
fn owner(key: &FlowKey) -> Option<PortId> {
    (!key.has_tunnel()).then_some(PortId(key.in_port))
}

/// Below this many live flows a sweep re-translates on its own thread.
const PARALLEL_MIN: usize = 16_384;

/// Flows a sweep handles at a time ([`Engine::sweep_chunked`]): enough for its
/// re-translation to spread over four threads, few enough that its lists stay a few MB.
const SWEEP_CHUNK: usize = 4 * PARALLEL_MIN;

fn ms(t: Duration) -> u64 {
    u64::try_from(t.as_millis()).unwrap_or(u64::MAX)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A handler's memory of what it decided earlier in the batch.
struct Decided {
    megaflow: Megaflow,
    actions: Actions,
    flow: Option<FlowId>,
}

/// The batch's decisions, indexed by masked-key hash per distinct mask.
#[derive(Default)]
struct Batch {
    masks: Vec<FlowMask>,
    index: FastMap<(usize, u64), usize>,
    decided: Vec<Decided>,
}

impl Batch {
    fn find(&self, key: &FlowKey) -> Option<&Decided> {
        self.masks.iter().enumerate().find_map(|(mi, m)| {
            let i = *self.index.get(&(mi, key_hash(&key.masked(m))))?;
            self.decided.get(i).filter(|d| d.megaflow.matches(key))
        })
    }

    fn push(&mut self, d: Decided) {
        let mi = match self.masks.iter().position(|m| *m == d.megaflow.mask) {
            Some(mi) => mi,
            None => {
                self.masks.push(d.megaflow.mask);
                self.masks.len() - 1
            }
        };
        let h = key_hash(&d.megaflow.key);
        self.index.insert((mi, h), self.decided.len());
        self.decided.push(d);
    }
}

impl Engine {
    /// An engine over a slow path and a flow table (whose limit it sets).
    pub fn new(
        sp: SlowPath,
        table: Arc<FlowTable>,
        observer: Arc<dyn FlowObserver>,
        config: EngineConfig,
        counters: Arc<UpcallCounters>,
    ) -> Self {
        table.set_limit(config.flow_limit);
        Self {
            sp: RwLock::new(sp),
            table,
            metas: Mutex::new(Metas::default()),
            actions: Mutex::new(SharedActions::default()),
            pending: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            seq: AtomicU64::new(0),
            observer,
            max_idle_ms: AtomicU64::new(ms(config.max_idle)),
            flow_limit: AtomicUsize::new(config.flow_limit),
            config,
            counters,
            reval: Mutex::new(RevalStats::default()),
            refreshed_to: AtomicU64::new(0),
            stations: OnceLock::new(),
        }
    }

    /// Registers the observer of station changes (at most one; `false` if one was
    /// already registered). It hears of changes from then on: read the MAC table after
    /// registering to start from a complete picture.
    pub fn observe_stations(&self, observer: Arc<dyn StationObserver>) -> bool {
        self.stations.set(observer).is_ok()
    }

    fn tell_stations(&self, changes: &[Change]) {
        if let Some(o) = self.stations.get() {
            let keys = stations(changes);
            if !keys.is_empty() {
                o.stations_changed(&keys);
            }
        }
    }

    /// Changes the idle time and the flow limit while running (a reload); the next
    /// revalidator round applies them (deleting idle flows, evicting down to the limit).
    pub fn set_limits(&self, max_idle: Duration, flow_limit: usize) {
        self.max_idle_ms.store(ms(max_idle), Ordering::Relaxed);
        self.flow_limit.store(flow_limit, Ordering::Relaxed);
        self.table.set_limit(flow_limit);
        self.wake.notify_all();
    }

    /// The slow path, for translations and traces.
    pub fn read(&self) -> RwLockReadGuard<'_, SlowPath> {
        self.sp.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, SlowPath> {
        self.sp.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the configuration: `f` returns its result and the changes it made, which
    /// are queued for revalidation.
    pub fn configure<R>(&self, f: impl FnOnce(&mut SlowPath) -> (R, Vec<Change>)) -> R {
        let (r, changes) = f(&mut self.write());
        self.notify(changes);
        r
    }

    /// Queues changes for the revalidator and wakes it; stations that changed are told to
    /// the station observer.
    pub fn notify(&self, changes: impl IntoIterator<Item = Change>) {
        let changes: Vec<Change> = changes.into_iter().collect();
        if changes.is_empty() {
            return;
        }
        {
            let mut p = lock(&self.pending);
            p.extend_from_slice(&changes);
            self.seq.fetch_add(1, Ordering::AcqRel);
            self.wake.notify_all();
        }
        self.tell_stations(&changes);
    }

    /// Wakes the revalidator without a change (it then checks its `stop` flag).
    pub fn wake(&self) {
        let _pending = lock(&self.pending);
        self.wake.notify_all();
    }

    /// The flow table.
    pub fn table(&self) -> &Arc<FlowTable> {
        &self.table
    }

    /// The upcall counters.
    pub fn counters(&self) -> &Arc<UpcallCounters> {
        &self.counters
    }

    /// The revalidator's counters.
    pub fn reval_stats(&self) -> RevalStats {
        *lock(&self.reval)
    }

    /// The metadata kept for an installed flow.
    pub fn flow_meta(&self, id: FlowId) -> Option<FlowMeta> {
        lock(&self.metas).get(id)
    }

    /// Flows with metadata, and the distinct values they share.
    #[cfg(test)]
    pub(crate) fn meta_counts(&self) -> (usize, usize) {
        let m = lock(&self.metas);
        (m.len(), m.distinct())
    }

    /// Handles a batch of upcalls: one verdict per upcall, in order.
    pub fn handle(&self, batch: Vec<Upcall>, now: Duration) -> Vec<Verdict> {
        let mut decided = Batch::default();
        batch
            .into_iter()
            .map(|up| self.handle_one(up, now, &mut decided))
            .collect()
    }

    fn handle_one(&self, up: Upcall, now: Duration, decided: &mut Batch) -> Verdict {
        use std::sync::atomic::Ordering::Relaxed;
        if let Some(d) = decided.find(&up.key) {
            self.counters.coalesced.fetch_add(1, Relaxed);
            return Verdict {
                key: up.key,
                in_port: up.in_port,
                packet: up.packet,
                actions: d.actions.clone(),
                flow: d.flow,
                origin: up.origin,
            };
        }
        let seq = self.seq.load(Ordering::Acquire);
        let (x, changes) = self.translate(&up, now);
        self.counters.translated.fetch_add(1, Relaxed);
        let megaflow = x.megaflow(&up.key);
        let flow = self.install(&megaflow, &x, now, seq, owner(&up.key));
        self.notify(changes);
        decided.push(Decided {
            megaflow,
            actions: x.actions.clone(),
            flow,
        });
        Verdict {
            key: up.key,
            in_port: up.in_port,
            packet: up.packet,
            actions: x.actions,
            flow,
            origin: up.origin,
        }
    }

    /// Installs the flows of packet keys that did not come up as upcalls: after a
    /// restart, one key per filter a previous run left carrying traffic (see the offload
    /// crate's `adopt`). Sources are learned from every key first, as their upcalls
    /// would have, so that no key is translated against a MAC table missing a station
    /// another key shows. Unlike upcalls, the observer is *not* told: the caller
    /// announces the returned flows itself (start-up adoption must not drop any).
    pub fn preinstall(&self, keys: &[FlowKey], now: Duration) -> Vec<Arc<FlowEntry>> {
        let mut changes = Vec::new();
        {
            let mut sp = self.write();
            for k in keys {
                changes.extend(sp.upcall(k, now).1);
            }
        }
        self.notify(changes);
        let sp = self.read();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let x = sp.xlate(k, now);
            if x.needs_learning {
                continue;
            }
            let unplugged = |p| sp.is_unplugged(p);
            if let Some((entry, true)) = self.put(&x.megaflow(k), &x, now, owner(k), unplugged) {
                out.push(entry);
            }
        }
        out
    }

    fn translate(&self, up: &Upcall, now: Duration) -> (Xlation, Vec<Change>) {
        {
            let sp = self.read();
            let x = sp.xlate(&up.key, now);
            if !x.needs_learning {
                sp.refresh(&x.meta, now);
                return (x, Vec::new());
            }
        }
        self.write().upcall(&up.key, now)
    }

    fn install(
        &self,
        mf: &Megaflow,
        x: &Xlation,
        now: Duration,
        seq: u64,
        owner: Option<PortId>,
    ) -> Option<FlowId> {
        use std::sync::atomic::Ordering::Relaxed;
        if x.needs_learning {
            return None;
        }
        // The slow path's lock is not held here: taken for the one check.
        let unplugged = |p| self.read().is_unplugged(p);
        let (entry, new) = self.put(mf, x, now, owner, unplugged)?;
        if new {
            self.observer.installed(&entry);
        } else {
            self.counters.coalesced.fetch_add(1, Relaxed);
        }
        if self.seq.load(Ordering::Acquire) != seq {
            // A change raced this translation: check the flow against it now.
            return self.recheck(&entry, now);
        }
        Some(entry.id())
    }

    /// Puts a translated megaflow in the table with its metadata (counting installs and
    /// failures); the entry, and whether it is new (else an identical flow was there).
    /// `unplugged` says whether a port was unplugged ([`SlowPath::is_unplugged`]), read
    /// through whatever guard of the slow path the caller holds (its `RwLock` must not
    /// be taken twice by one thread: a writer waiting between would deadlock it).
    fn put(
        &self,
        mf: &Megaflow,
        x: &Xlation,
        now: Duration,
        owner: Option<PortId>,
        unplugged: impl Fn(PortId) -> bool,
    ) -> Option<(Arc<FlowEntry>, bool)> {
        use std::sync::atomic::Ordering::Relaxed;
        let actions = lock(&self.actions).get(&x.actions);
        let put = match owner {
            Some(p) => self.table.put_for(mf, actions, ms(now), p),
            None => self.table.put(mf, actions, ms(now)),
        };
        let Ok(entry) = put else {
            self.counters.install_failed.fetch_add(1, Relaxed);
            return None;
        };
        // Checked after the put: an unplug deletes the port's flows after marking it,
        // so a flow it did not see is seen here (the packet is still forwarded).
        if unplugged(PortId(mf.key.in_port)) {
            self.table.remove(entry.id());
            return None;
        }
        let new = lock(&self.metas).insert(entry.id(), &x.meta);
        if new {
            self.counters.installed.fetch_add(1, Relaxed);
        }
        Some((entry, new))
    }

    fn recheck(&self, entry: &Arc<FlowEntry>, now: Duration) -> Option<FlowId> {
        let meta = self.flow_meta(entry.id()).unwrap_or_default();
        let r = self
            .read()
            .revalidate(&entry.megaflow(), entry.actions(), &meta, now);
        self.apply(entry, r, &mut SweepReport::default())
    }

    /// Applies a revalidation decision; returns the flow's id after it (if still there).
    fn apply(
        &self,
        entry: &Arc<FlowEntry>,
        r: Revalidation,
        report: &mut SweepReport,
    ) -> Option<FlowId> {
        match r {
            Revalidation::Keep => Some(entry.id()),
            Revalidation::Modify(x) => {
                report.modified += 1;
                self.replace(entry, &x)
            }
            _ => {
                report.stale += 1;
                self.delete(entry, DeleteReason::Stale);
                None
            }
        }
    }

    fn replace(&self, old: &Arc<FlowEntry>, x: &Xlation) -> Option<FlowId> {
        let owner = self.table.owner(old.id());
        self.table.remove(old.id())?;
        lock(&self.metas).remove(old.id());
        let actions = lock(&self.actions).get(&x.actions);
        let (mf, used) = (old.megaflow(), old.used());
        let put = match owner {
            Some(p) => self.table.put_for(&mf, actions, used, p),
            None => self.table.put(&mf, actions, used),
        };
        match put {
            Ok(new) => {
                lock(&self.metas).insert(new.id(), &x.meta);
                self.observer.modified(old, &new);
                Some(new.id())
            }
            Err(_) => {
                self.observer.deleted(old, DeleteReason::Stale);
                None
            }
        }
    }

    fn delete(&self, entry: &Arc<FlowEntry>, reason: DeleteReason) {
        if self.table.remove(entry.id()).is_some() {
            lock(&self.metas).remove(entry.id());
            self.observer.deleted(entry, reason);
        }
    }

    /// Runs a handler thread's loop until `stop`: takes up to a batch of upcalls (waiting
    /// up to 100 ms for the first), handles them and passes the verdicts to `deliver`.
    pub fn run_handler(
        &self,
        rx: &UpcallReceiver,
        clock: &dyn Fn() -> Duration,
        stop: &AtomicBool,
        deliver: &mut dyn FnMut(Vec<Verdict>),
    ) {
        while !stop.load(Ordering::Relaxed) {
            let first = match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(up) => up,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = vec![first];
            batch.extend(rx.try_iter().take(self.config.batch.saturating_sub(1)));
            deliver(self.handle(batch, clock()));
        }
    }

    /// Runs the revalidator's loop until `stop`: a sweep every `interval`, or as soon as
    /// changes are notified, paced by what the last sweep cost (see [`Pace`]): a table so
    /// big that one sweep takes longer than `interval` is not swept back to back.
    pub fn run_revalidator(
        &self,
        clock: &dyn Fn() -> Duration,
        stop: &AtomicBool,
        interval: Duration,
    ) {
        let mut pace = Pace::new(interval);
        let mut ended = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            {
                let pending = lock(&self.pending);
                // Checked again under the lock: a `wake` after `stop` is not lost.
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let wait = pace.wait(!pending.is_empty(), ended.elapsed());
                if !wait.is_zero() {
                    // Woken early by a change, or spuriously: the loop decides again.
                    drop(
                        self.wake
                            .wait_timeout(pending, wait)
                            .unwrap_or_else(PoisonError::into_inner),
                    );
                    continue;
                }
            }
            let started = Instant::now();
            self.sweep(clock());
            ended = Instant::now();
            pace.swept(ended - started);
        }
    }
}

/// How often the revalidator sweeps. A sweep walks the whole table, so its cost grows
/// with it (about a quarter of a second at a million flows on a small host): sweeping
/// every `interval` regardless would keep a core busy. After a sweep that took `t`:
/// - pending changes (a rule, a station that moved) are swept for after a rest of `t`:
///   at most half a core while changes keep coming, and no delay for small tables;
/// - the periodic sweep (idle flows, station ages, the flow limit) comes after
///   `max(interval, PERIODIC_REST * t)`: at most a tenth of a core for upkeep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    interval: Duration,
    last: Duration,
}

/// The periodic sweep rests this many times its own duration.
const PERIODIC_REST: u32 = 9;

impl Pace {
    /// Before the first sweep: no rest.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: Duration::ZERO,
        }
    }

    /// Records what the last sweep took.
    pub fn swept(&mut self, took: Duration) {
        self.last = took;
    }

    /// How much longer to wait, `since` the last sweep ended, with or without pending
    /// changes; zero means sweep now.
    pub fn wait(&self, changes: bool, since: Duration) -> Duration {
        let rest = if changes {
            self.last
        } else {
            self.interval.max(self.last * PERIODIC_REST)
        };
        rest.saturating_sub(since)
    }
}
