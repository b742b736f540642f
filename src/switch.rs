//! [`Switch`]: the running software switch: its datapath threads, upcall handler threads
//! and the revalidator, wired around the slow path's [`Engine`].
//!
//! ```text
//! datapath thread i: its sockets -> Datapath (EMC, classifier) --miss--> UpcallSender
//!                           ^  ^                                (origin i)    |
//!   FlowOp queue (one per ---'  '--- PacketOut queue i <-- handler threads <--'
//!   thread: FlowTable::subscribe)      (first packets)     (Engine::run_handler)
//! revalidator thread: Engine::run_revalidator (idle, limit, re-xlate after changes)
//! ```
//!
//! **Threads** (`SwitchConfig::threads`, `[datapath] threads`). Each datapath thread
//! owns a whole [`Datapath`]: its flow cache, fed by its own subscription to the flow
//! table, and one I/O per port ([`SwitchPort::io`]: the daemon opens a port's AF_PACKET
//! sockets in one `PACKET_FANOUT_HASH` group, so each frame reaches one thread and a
//! flow's frames the same one). A thread transmits on its own sockets: nothing is shared
//! per packet, nothing locked. An upcall carries its thread's index and its verdict
//! comes back to that thread's packet-out queue (a flow's first packets leave from the
//! thread that took them, before its later ones). A port change ([`Switch::plug`],
//! [`Switch::unplug`]) goes to every thread; [`Switch::datapath_stats`] sums the threads'
//! counters, each port's over its sockets. With one thread (the default) there is no
//! fanout group and this is the single datapath thread it always was.
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
    /// Each datapath thread's settings.
    pub datapath: DpConfig,
    /// Datapath threads (at least 1): each port has one I/O per thread.
    pub threads: usize,
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
            threads: 1,
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
    /// Its I/O, one per datapath thread: thread `i` gets `io[i]` (a thread beyond has
    /// the port without I/O, and drops what it would send there). Empty for a tunnel
    /// port without a kernel path.
    pub io: Vec<Box<dyn Port>>,
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

/// One datapath thread's handles, as the switch keeps them.
struct DpHandle {
    port_ops: Sender<PortOp>,
    waker: Option<Waker>,
    stats: Arc<Mutex<DpStats>>,
}

/// Where handlers deliver a datapath thread's verdicts.
#[derive(Clone)]
struct Outbox {
    queue: SyncSender<PacketOut>,
    waker: Option<Waker>,
}

/// The running switch.
pub struct Switch {
    engine: Arc<Engine>,
    clock: Clock,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    packet_out_drops: Arc<AtomicU64>,
    datapaths: Mutex<Vec<DpHandle>>,
    paused: Arc<AtomicBool>,
}

/// What every datapath thread shares.
struct Shared {
    stop: Arc<AtomicBool>,
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
        let shared = Shared {
            stop: Arc::new(AtomicBool::new(false)),
            paused: Arc::new(AtomicBool::new(cfg.paused)),
        };
        let packet_out_drops = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        let n = cfg.threads.max(1);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        if n > cores {
            tracing::warn!(threads = n, cores, "more datapath threads than cores");
        }
        let mut datapaths = Vec::new();
        let mut outboxes = Vec::new();
        for (i, ports) in split_ports(ports, n).into_iter().enumerate() {
            let miss = Box::new(UpcallMiss(sender.for_thread(i)));
            let mut dp = Datapath::new(cfg.datapath.clone(), resolver.clone(), miss);
            let (handle, outbox) = connect(&mut dp, ports, &table, cfg.queue);
            let stats = handle.stats.clone();
            let (stop, paused) = (shared.stop.clone(), shared.paused.clone());
            let name = if n == 1 {
                "flowd-dp".to_string()
            } else {
                format!("flowd-dp{i}")
            };
            threads.push(spawn(&name, move || {
                datapath_loop(dp, clock, &stop, &paused, &stats)
            })?);
            datapaths.push(handle);
            outboxes.push(outbox);
        }
        for (i, rx) in receivers.into_iter().enumerate() {
            let (engine, stop, outboxes, drops) = (
                engine.clone(),
                shared.stop.clone(),
                outboxes.clone(),
                packet_out_drops.clone(),
            );
            threads.push(spawn(&format!("flowd-handler{i}"), move || {
                let mut deliver = |verdicts: Vec<_>| deliver_verdicts(verdicts, &outboxes, &drops);
                engine.run_handler(&rx, &|| clock.now(), &stop, &mut deliver);
            })?);
        }
        threads.push(spawn("flowd-reval", {
            let (engine, stop, every) = (engine.clone(), shared.stop.clone(), cfg.revalidate_every);
            move || engine.run_revalidator(&|| clock.now(), &stop, every)
        })?);
        Ok(Self {
            engine,
            clock,
            stop: shared.stop,
            threads,
            packet_out_drops,
            datapaths: Mutex::new(datapaths),
            paused: shared.paused,
        })
    }

    /// The number of datapath threads.
    pub fn datapath_threads(&self) -> usize {
        self.handles().len()
    }

    fn handles(&self) -> std::sync::MutexGuard<'_, Vec<DpHandle>> {
        self.datapaths
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts receiving (after a start with [`SwitchConfig::paused`]; a no-op
    /// otherwise).
    pub fn resume(&self) {
        self.paused.store(false, Ordering::Release);
        for h in self.handles().iter() {
            if let Some(w) = &h.waker {
                w.wake();
            }
        }
    }

    /// Adds a port to every datapath thread (applied before each one's next round):
    /// thread `i` gets `port.io[i]`.
    pub fn plug(&self, port: SwitchPort) {
        let handles = self.handles();
        let mut io = port.io.into_iter();
        for h in handles.iter() {
            send_op(
                h,
                PortOp::Add {
                    id: port.id,
                    role: port.role,
                    io: io.next(),
                },
            );
        }
    }

    /// Removes a port from every datapath thread; its sockets are closed.
    pub fn unplug(&self, id: PortId) {
        for h in self.handles().iter() {
            send_op(h, PortOp::Remove(id));
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

    /// The datapath threads' counters, summed, each port's included (summed over its
    /// sockets); each thread publishes its own every 100 ms.
    pub fn datapath_stats(&self) -> DpStats {
        match <[DpStats; 1]>::try_from(self.datapath_thread_stats()) {
            Ok([one]) => one,
            Err(all) => DpStats::sum(&all),
        }
    }

    /// Each datapath thread's own counters (its sockets' only), by thread.
    pub fn datapath_thread_stats(&self) -> Vec<DpStats> {
        self.handles()
            .iter()
            .map(|h| {
                h.stats
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
            })
            .collect()
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

/// Each thread's ports: thread `i` gets every port with its `io[i]` (or none).
fn split_ports(ports: Vec<SwitchPort>, threads: usize) -> Vec<Vec<SwitchPort>> {
    let mut per_thread: Vec<Vec<SwitchPort>> = (0..threads).map(|_| Vec::new()).collect();
    for p in ports {
        let mut io = p.io.into_iter();
        for list in &mut per_thread {
            list.push(SwitchPort {
                id: p.id,
                role: p.role,
                io: io.next().into_iter().collect(),
            });
        }
    }
    per_thread
}

/// Connects a datapath to its ports, the flow table and its queues; returns the
/// switch's handle on it and where its verdicts go.
fn connect(
    dp: &mut Datapath,
    ports: Vec<SwitchPort>,
    table: &FlowTable,
    queue: usize,
) -> (DpHandle, Outbox) {
    let waker = dp.waker();
    for p in ports {
        dp.add_port(p.id, p.role, p.io.into_iter().next());
    }
    let sub = table.subscribe(queue);
    for entry in sub.initial {
        dp.cache_mut().insert(entry);
    }
    dp.set_flow_ops(sub.ops);
    let (po_tx, po_rx) = sync_channel::<PacketOut>(queue);
    dp.set_packet_outs(po_rx);
    let (port_ops, port_rx) = channel();
    dp.set_port_ops(port_rx);
    let handle = DpHandle {
        port_ops,
        waker: waker.clone(),
        stats: Arc::new(Mutex::new(DpStats::default())),
    };
    (
        handle,
        Outbox {
            queue: po_tx,
            waker,
        },
    )
}

fn send_op(h: &DpHandle, op: PortOp) {
    // A datapath thread only stops with the switch.
    let _ = h.port_ops.send(op);
    if let Some(w) = &h.waker {
        w.wake();
    }
}

/// Queues each verdict to the datapath thread its upcall came from (thread 0 if that
/// index is unknown) and wakes the threads that got some.
fn deliver_verdicts(
    verdicts: Vec<datapath::slowpath::upcall::Verdict>,
    outboxes: &[Outbox],
    drops: &AtomicU64,
) {
    let mut woken = 0u64;
    for v in verdicts {
        let i = if v.origin < outboxes.len() {
            v.origin
        } else {
            0
        };
        let Some(out) = outboxes.get(i) else { return };
        let po = PacketOut {
            key: v.key,
            frame: v.packet,
            actions: v.actions,
        };
        if out.queue.try_send(po).is_err() {
            drops.fetch_add(1, Ordering::Relaxed);
        }
        woken |= 1 << (i % 64);
    }
    for (i, out) in outboxes.iter().enumerate() {
        if woken & (1 << (i % 64)) != 0
            && let Some(w) = &out.waker
        {
            w.wake();
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

#[cfg(test)]
mod tests {
    use super::*;
    use datapath::slowpath::upcall::Verdict;

    fn verdict(origin: usize, tag: u8) -> Verdict {
        Verdict {
            key: datapath::FlowKey::default(),
            in_port: PortId(1),
            packet: vec![tag],
            actions: datapath::Actions::new(Vec::new()),
            flow: None,
            origin,
        }
    }

    #[test]
    fn verdicts_go_back_to_the_thread_that_upcalled() {
        let (queues, outs): (Vec<_>, Vec<_>) = (0..2).map(|_| sync_channel(2)).unzip();
        let outboxes: Vec<Outbox> = queues
            .into_iter()
            .map(|queue| Outbox {
                queue,
                waker: Waker::new().ok(),
            })
            .collect();
        let drops = AtomicU64::new(0);
        let vs = vec![
            verdict(1, 10),
            verdict(0, 20),
            verdict(1, 11),
            verdict(7, 30),
        ];
        deliver_verdicts(vs, &outboxes, &drops);
        let got = |i: usize| -> Vec<u8> {
            outs[i]
                .try_iter()
                .map(|po: PacketOut| po.frame[0])
                .collect()
        };
        // An unknown thread's verdict goes to thread 0; a full queue drops and counts.
        assert_eq!(got(1), [10, 11]);
        assert_eq!(got(0), [20, 30]);
        deliver_verdicts(vec![verdict(1, 1); 3], &outboxes, &drops);
        assert_eq!(drops.load(Ordering::Relaxed), 1);
    }
}
