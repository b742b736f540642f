//! [`Switch`]: the running software switch: one datapath thread, upcall handler threads
//! and the revalidator, wired around the slow path's [`Engine`].
//!
//! ```text
//! datapath thread: ports -> Datapath (EMC, classifier) --miss--> UpcallSender
//!                      ^  ^                                         |
//!      FlowOp queue ---'  '--- PacketOut queue <-- handler threads <'
//!   (FlowTable::subscribe)       (first packets)   (Engine::run_handler: xlate, install)
//! revalidator thread: Engine::run_revalidator (idle, limit, re-xlate after changes)
//! ```
//!
//! Every queue is bounded: a full upcall queue drops the packet (counted), a full
//! packet-out queue drops the first packet (counted), and flow ops wait for the datapath
//! (they must not be lost). Time is one monotonic clock for everyone: a `Duration` since
//! the switch started, in milliseconds where the cache wants a `u64`.

use datapath::PortId;
use datapath::cache::FlowTable;
use datapath::dpif::{
    Datapath, DpConfig, DpStats, Miss, MissHandler, MissVerdict, PacketOut, PortOp, PortRole,
};
use datapath::port::Port;
use datapath::port::Waker;
use datapath::slowpath::upcall::{UpcallConfig, UpcallCounters, UpcallSender, upcall_queues};
use datapath::slowpath::{Engine, EngineConfig, FlowObserver, SlowPath};
use datapath::tunnel::TunnelResolver;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Settings of a [`Switch`].
#[derive(Debug, Clone)]
pub struct SwitchConfig {
    /// The datapath thread.
    pub datapath: DpConfig,
    /// Upcall queues and handler count.
    pub upcall: UpcallConfig,
    /// Slow path: idle time, flow limit.
    pub engine: EngineConfig,
    /// Revalidator period when nothing changes.
    pub revalidate_every: Duration,
    /// Capacity of the packet-out and flow-op queues.
    pub queue: usize,
    /// The clock every part of the switch reads (flow `used` times are on it).
    pub clock: Clock,
    /// Start without receiving: the datapath thread only applies flow changes until
    /// [`Switch::resume`] (start-up adoption installs the flows of a previous run's
    /// filters before any packet is looked at).
    pub paused: bool,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        Self {
            datapath: DpConfig::default(),
            upcall: UpcallConfig::default(),
            engine: EngineConfig::default(),
            revalidate_every: Duration::from_millis(500),
            queue: 4096,
            clock: Clock::new(),
            paused: false,
        }
    }
}

/// A port handed to the switch.
pub struct SwitchPort {
    /// Its datapath number.
    pub id: PortId,
    /// What it is.
    pub role: PortRole,
    /// Its I/O (none for the tunnel port).
    pub io: Option<Box<dyn Port>>,
}

/// The switch's shared clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Self {
        Self(Instant::now())
    }

    /// Time since the switch started.
    pub fn now(&self) -> Duration {
        self.0.elapsed()
    }

    /// The same, in the cache's milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.now().as_millis() as u64
    }
}

/// Forwards misses to the upcall queues without blocking.
struct UpcallMiss(UpcallSender);

impl MissHandler for UpcallMiss {
    fn miss(&mut self, miss: Miss<'_>) -> MissVerdict {
        match self.0.send(miss.key, miss.frame) {
            Ok(()) => MissVerdict::Queued,
            Err(_) => MissVerdict::Dropped,
        }
    }
}

/// The running switch.
pub struct Switch {
    engine: Arc<Engine>,
    clock: Clock,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    dp_stats: Arc<Mutex<DpStats>>,
    packet_out_drops: Arc<AtomicU64>,
    port_ops: Mutex<Sender<PortOp>>,
    waker: Option<Waker>,
    paused: Arc<AtomicBool>,
}

impl Switch {
    /// Starts the threads on `table` (sized by the caller: the daemon shares it with the
    /// offload worker's placement observer). `observer` hears of every flow install, change and delete
    /// (offload); `resolver` routes tunnel endpoints for encapsulation.
    pub fn start(
        cfg: SwitchConfig,
        table: Arc<FlowTable>,
        slowpath: SlowPath,
        ports: Vec<SwitchPort>,
        resolver: Arc<dyn TunnelResolver>,
        observer: Arc<dyn FlowObserver>,
    ) -> std::io::Result<Self> {
        let clock = cfg.clock;
        let counters = Arc::new(UpcallCounters::default());
        let engine = Arc::new(Engine::new(
            slowpath,
            table.clone(),
            observer,
            cfg.engine,
            counters.clone(),
        ));
        let (sender, receivers) = upcall_queues(cfg.upcall, counters);
        let (po_tx, po_rx) = sync_channel::<PacketOut>(cfg.queue);
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(cfg.paused));
        let dp_stats = Arc::new(Mutex::new(DpStats::default()));
        let packet_out_drops = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();

        let mut dp = Datapath::new(cfg.datapath.clone(), resolver, Box::new(UpcallMiss(sender)));
        let waker = dp.waker();
        for p in ports {
            dp.add_port(p.id, p.role, p.io);
        }
        let sub = table.subscribe(cfg.queue);
        for entry in sub.initial {
            dp.cache_mut().insert(entry);
        }
        dp.set_flow_ops(sub.ops);
        dp.set_packet_outs(po_rx);
        let (port_ops, port_rx) = channel();
        dp.set_port_ops(port_rx);
        threads.push(spawn("flowd-dp", {
            let (stop, stats, paused) = (stop.clone(), dp_stats.clone(), paused.clone());
            move || datapath_loop(dp, clock, &stop, &paused, &stats)
        })?);

        for (i, rx) in receivers.into_iter().enumerate() {
            let (engine, stop, tx, drops, waker) = (
                engine.clone(),
                stop.clone(),
                po_tx.clone(),
                packet_out_drops.clone(),
                waker.clone(),
            );
            threads.push(spawn(&format!("flowd-handler{i}"), move || {
                let mut deliver = |verdicts: Vec<_>| {
                    deliver_verdicts(verdicts, &tx, &drops);
                    if let Some(w) = &waker {
                        w.wake();
                    }
                };
                engine.run_handler(&rx, &|| clock.now(), &stop, &mut deliver);
            })?);
        }
        threads.push(spawn("flowd-reval", {
            let (engine, stop, every) = (engine.clone(), stop.clone(), cfg.revalidate_every);
            move || engine.run_revalidator(&|| clock.now(), &stop, every)
        })?);
        Ok(Self {
            engine,
            clock,
            stop,
            threads,
            dp_stats,
            packet_out_drops,
            port_ops: Mutex::new(port_ops),
            waker,
            paused,
        })
    }

    /// Starts receiving (after a start with [`SwitchConfig::paused`]; a no-op
    /// otherwise).
    pub fn resume(&self) {
        self.paused.store(false, Ordering::Release);
        if let Some(w) = &self.waker {
            w.wake();
        }
    }

    /// Adds a port to the running datapath (applied before its next round).
    pub fn plug(&self, port: SwitchPort) {
        self.port_op(PortOp::Add {
            id: port.id,
            role: port.role,
            io: port.io,
        });
    }

    /// Removes a port from the running datapath; its socket is closed.
    pub fn unplug(&self, id: PortId) {
        self.port_op(PortOp::Remove(id));
    }

    fn port_op(&self, op: PortOp) {
        let tx = self.port_ops.lock().unwrap_or_else(PoisonError::into_inner);
        // The datapath thread only stops with the switch.
        let _ = tx.send(op);
        if let Some(w) = &self.waker {
            w.wake();
        }
    }

    /// The slow path engine (rules, networks, MAC table, flow table).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The switch's clock.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// The datapath thread's counters, each port's included (published every 100 ms).
    pub fn datapath_stats(&self) -> DpStats {
        self.dp_stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// First packets dropped because the datapath's packet-out queue was full.
    pub fn packet_out_drops(&self) -> u64 {
        self.packet_out_drops.load(Ordering::Relaxed)
    }

    /// Stops every thread and waits for them.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.engine.wake();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.to_string()).spawn(f)
}

fn deliver_verdicts(
    verdicts: Vec<datapath::slowpath::upcall::Verdict>,
    tx: &SyncSender<PacketOut>,
    drops: &AtomicU64,
) {
    for v in verdicts {
        let po = PacketOut {
            key: v.key,
            frame: v.packet,
            actions: v.actions,
        };
        if tx.try_send(po).is_err() {
            drops.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn datapath_loop(
    mut dp: Datapath,
    clock: Clock,
    stop: &AtomicBool,
    paused: &AtomicBool,
    stats: &Mutex<DpStats>,
) {
    while paused.load(Ordering::Acquire) && !stop.load(Ordering::Relaxed) {
        // Flow changes must flow (their queue is bounded); packets wait in the rings.
        dp.drain_queues(clock.now_ms());
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut published = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = dp.run_once(10, clock.now_ms()) {
            tracing::warn!(error = %e, "datapath poll failed");
            std::thread::sleep(Duration::from_millis(10));
        }
        if published.elapsed() >= Duration::from_millis(100) {
            // Reads each port's kernel counters: before taking the lock.
            let snapshot = dp.stats();
            *stats.lock().unwrap_or_else(PoisonError::into_inner) = snapshot;
            published = Instant::now();
        }
    }
    *stats.lock().unwrap_or_else(PoisonError::into_inner) = dp.stats();
}
