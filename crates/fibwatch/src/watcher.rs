//! The watcher thread: owns the sockets, the mirror and the key index.
//!
//! Loop: poll the event socket and a wake-up eventfd; handle control messages (track,
//! untrack, snapshot, resync); read up to a bounded number of datagrams and apply them
//! to the mirror, accumulating a [`Dirty`] set; once the burst of changes has settled
//! (no change for [`Config::settle`], or [`Config::coalesce`] after its first), re-dump
//! routes if a link or address change made the kernel change routes silently, report
//! the links that changed and then the tracked keys whose path facts changed ([`Event`])
//! on the bounded event channel (blocking when it is full: backpressure, and a socket
//! overrun is recovered by a resync), and probe the next hops tracked keys wait for.
//!
//! IPsec policies and states come on their own socket (`NETLINK_XFRM`): any of their
//! events joins the burst, and when it is decided the IPsec databases are dumped again;
//! if they changed, every tracked key is re-judged and only those whose protection
//! changed are reported.

use crate::error::{Error, Result};
use crate::fib::LookupKey;
use crate::index::{ApplyStats, KeyIndex, PathUpdate};
use crate::mirror::{Dirty, Kinds, Mirror};
use crate::model::{Change, Link, NudState};
use crate::netlink::{EventSocket, Received, Requester};
use crate::sys::{EventFd, enter_netns, poll_readable};
use crate::xfrm::{self, Inbound, XfrmEvents};
use datapath::IfIndex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Watcher settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The longest a burst of changes is held: decisions are made at the latest this long
    /// after its first change.
    pub coalesce: Duration,
    /// A burst ends when no change arrived for this long: decisions are made then, unless
    /// `coalesce` ends it earlier.
    pub settle: Duration,
    /// Network namespace file to watch (None: the namespace of the caller of `spawn`).
    pub netns: Option<PathBuf>,
    /// Capacity of the event channel.
    pub event_capacity: usize,
    /// Capacity of the control channel.
    pub control_capacity: usize,
    /// Event socket receive buffer (forced past rmem_max when privileged).
    pub rcvbuf: usize,
    /// Minimum interval between two probes of the same unresolved next hop.
    pub probe_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            coalesce: Duration::from_millis(20),
            settle: Duration::from_millis(2),
            netns: None,
            event_capacity: 1 << 16,
            control_capacity: 1024,
            rcvbuf: 8 << 20,
            probe_interval: Duration::from_secs(1),
        }
    }
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatcherStats {
    /// Changes read from the event socket.
    pub changes: u64,
    /// Event socket overruns (each followed by a full resync).
    pub overruns: u64,
    /// Full resyncs (initial dump included).
    pub full_resyncs: u64,
    /// Route-only resyncs (after link/address changes).
    pub route_resyncs: u64,
    /// Path updates sent (tracked keys whose facts changed).
    pub path_updates: u64,
    /// Link events sent.
    pub link_events: u64,
    /// Neighbour probes sent.
    pub probes: u64,
    /// Loop errors (each recovered by a full resync).
    pub errors: u64,
    /// Undecodable netlink messages skipped.
    pub undecodable: u64,
    /// Counters of the last index update.
    pub last_apply: ApplyStats,
    /// IPsec database dumps (initial one included).
    pub xfrm_dumps: u64,
    /// Whether the IPsec databases are mirrored (false: the kernel has no
    /// `NETLINK_XFRM`, so no policy can be configured through it).
    pub xfrm_watched: bool,
}

/// What the watcher reports, in order: within one burst, links first, then paths.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A link appeared or changed (name, MTU, state, MAC or switch id).
    Link(Link),
    /// A link disappeared.
    LinkGone(IfIndex),
    /// A tracked key's path facts changed.
    Path(PathUpdate),
    /// The inbound IPsec policies changed (also sent once at start): which remotes'
    /// VXLAN counts only as the kernel decrypts and delivers it.
    Inbound(Inbound),
}

enum Control {
    Track(LookupKey, SyncSender<vocab::PathFacts>),
    Untrack(LookupKey),
    Mirror(SyncSender<Mirror>),
    Stats(SyncSender<WatcherStats>),
    Resync,
    Timing(Duration, Duration),
    Stop,
}

/// A running watcher. Dropping it stops the thread.
pub struct Watcher {
    ctl: SyncSender<Control>,
    wake: Arc<EventFd>,
    events: Mutex<Receiver<Event>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

impl Watcher {
    /// Starts the watcher thread: it enters `config.netns` if set, subscribes, dumps, and
    /// returns once the mirror holds the initial dump.
    pub fn spawn(config: Config) -> Result<Self> {
        let (ctl, ctl_rx) = sync_channel(config.control_capacity);
        let (out_tx, events) = sync_channel(config.event_capacity);
        let (ready_tx, ready_rx) = sync_channel(1);
        let wake = Arc::new(EventFd::new()?);
        let thread_wake = Arc::clone(&wake);
        let thread = std::thread::Builder::new()
            .name("fibwatch".into())
            .spawn(move || {
                let res = Loop::start(config, thread_wake, out_tx, ctl_rx);
                match res {
                    Ok(mut l) => {
                        let _ = ready_tx.send(Ok(()));
                        l.run()
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        Ok(())
                    }
                }
            })
            .map_err(|source| rtnl::Error::Socket {
                op: "spawn thread",
                source,
            })?;
        ready_rx.recv().map_err(|_| Error::Stopped)??;
        Ok(Watcher {
            ctl,
            wake,
            events: Mutex::new(events),
            thread: Some(thread),
        })
    }

    fn send(&self, c: Control) -> Result<()> {
        self.ctl.send(c).map_err(|_| Error::Stopped)?;
        self.wake.wake();
        Ok(())
    }

    /// Starts tracking a lookup key (idempotent) and returns its path facts now: the
    /// caller needs them before a flow's first packet is encapsulated. A newly tracked
    /// key's facts are also sent on [`events`](Self::events), ahead of its later
    /// changes, so an event consumer sees each key's facts in order.
    pub fn track(&self, key: LookupKey) -> Result<vocab::PathFacts> {
        let (tx, rx) = sync_channel(1);
        self.send(Control::Track(key, tx))?;
        rx.recv().map_err(|_| Error::Stopped)
    }

    /// Stops tracking a lookup key.
    pub fn untrack(&self, key: LookupKey) -> Result<()> {
        self.send(Control::Untrack(key))
    }

    /// The event stream (one consumer at a time: the receiver is behind a lock so that a
    /// `Watcher` can be shared between threads).
    pub fn events(&self) -> MutexGuard<'_, Receiver<Event>> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of the current mirror.
    pub fn mirror(&self) -> Result<Mirror> {
        let (tx, rx) = sync_channel(1);
        self.send(Control::Mirror(tx))?;
        rx.recv().map_err(|_| Error::Stopped)
    }

    /// Counters.
    pub fn stats(&self) -> Result<WatcherStats> {
        let (tx, rx) = sync_channel(1);
        self.send(Control::Stats(tx))?;
        rx.recv().map_err(|_| Error::Stopped)
    }

    /// Forces a full resync.
    pub fn resync(&self) -> Result<()> {
        self.send(Control::Resync)
    }

    /// Changes [`Config::coalesce`] and [`Config::settle`] while running (from the
    /// next burst on).
    pub fn set_timing(&self, coalesce: Duration, settle: Duration) -> Result<()> {
        self.send(Control::Timing(coalesce, settle))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.ctl.try_send(Control::Stop);
        self.wake.wake();
        if let Some(t) = self.thread.take() {
            // Unblock a thread waiting on a full event channel.
            while !t.is_finished() {
                while self.events().try_recv().is_ok() {}
                std::thread::sleep(Duration::from_millis(1));
                let _ = self.ctl.try_send(Control::Stop);
                self.wake.wake();
            }
            match t.join() {
                Ok(Err(e)) => tracing::warn!(error = %e, "fibwatch thread ended with an error"),
                Err(_) => tracing::error!("fibwatch thread panicked"),
                Ok(Ok(())) => {}
            }
        }
    }
}

/// Longest wait for a quiet socket before the re-dump that follows an overrun.
const MAX_RESYNC_DELAY: Duration = Duration::from_millis(500);

/// Datagrams read per loop turn before control messages are looked at again.
const READ_BUDGET: usize = 512;

struct Loop {
    cfg: Config,
    events: EventSocket,
    req: Requester,
    /// `None` when the kernel offers no XFRM netlink.
    xfrm: Option<XfrmEvents>,
    xfrm_resync: bool,
    /// The inbound policies as last reported.
    inbound: Inbound,
    wake: Arc<EventFd>,
    out: SyncSender<Event>,
    ctl: Receiver<Control>,
    mirror: Mirror,
    index: KeyIndex,
    /// Each link as last reported (or dumped at start): events are sent for changes only.
    links: HashMap<IfIndex, Link>,
    dirty: Dirty,
    deadline: Option<Instant>,
    /// The pending burst of changes: (its first change, its last change).
    burst: Option<(Instant, Instant)>,
    route_resync: bool,
    /// Set by an overrun: (first overrun, last event seen) while waiting for a quiet
    /// moment to re-dump.
    overrun: Option<(Instant, Instant)>,
    probed: HashMap<(IfIndex, IpAddr), Instant>,
    next_probe: Instant,
    stats: WatcherStats,
    scratch: Vec<Change>,
}

impl Loop {
    fn start(
        cfg: Config,
        wake: Arc<EventFd>,
        out: SyncSender<Event>,
        ctl: Receiver<Control>,
    ) -> Result<Self> {
        if let Some(ns) = &cfg.netns {
            enter_netns(ns)?;
        }
        // Subscribe first, then dump: nothing that happens in between is missed.
        let events = EventSocket::open(cfg.rcvbuf)?;
        let req = Requester::open()?;
        let xfrm = match XfrmEvents::open() {
            Ok(x) => Some(x),
            Err(e) => {
                tracing::warn!(error = %e, "no XFRM netlink: IPsec policies are not watched");
                None
            }
        };
        let mut l = Loop {
            cfg,
            events,
            req,
            xfrm,
            xfrm_resync: false,
            inbound: Inbound::default(),
            wake,
            out,
            ctl,
            mirror: Mirror::new(),
            index: KeyIndex::new(),
            links: HashMap::new(),
            dirty: Dirty::default(),
            deadline: None,
            burst: None,
            route_resync: false,
            overrun: None,
            probed: HashMap::new(),
            next_probe: Instant::now(),
            stats: WatcherStats::default(),
            scratch: Vec::new(),
        };
        l.resync(Kinds::ALL)?;
        l.dirty = Dirty::default();
        if l.inbound.is_empty() {
            // The dump reported policies if there were any; otherwise say there are none.
            l.emit(Event::Inbound(Inbound::default()));
        }
        l.links = l.mirror.links().map(|k| (k.index, k.clone())).collect();
        Ok(l)
    }

    fn run(&mut self) -> Result<()> {
        loop {
            match self.turn() {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => {
                    // Never die on a netlink error: count it and recover by a full resync
                    // once things are quiet (as after an overrun).
                    self.stats.errors += 1;
                    tracing::warn!(error = %e, "fibwatch loop error; will resynchronise");
                    let now = Instant::now();
                    self.overrun = Some((self.overrun.map_or(now, |(f, _)| f), now));
                    std::thread::sleep(self.cfg.coalesce.min(MAX_RESYNC_DELAY));
                }
            }
        }
    }

    /// One turn of the loop; false to stop.
    fn turn(&mut self) -> Result<bool> {
        let now = Instant::now();
        let timeout = match self.deadline {
            Some(d) => d.saturating_duration_since(now),
            None => self.cfg.probe_interval.min(Duration::from_millis(500)),
        };
        let xfd = self.xfrm.as_ref().map(XfrmEvents::fd);
        match xfd {
            Some(x) => poll_readable(&[self.events.fd(), self.wake.fd(), x], timeout),
            None => poll_readable(&[self.events.fd(), self.wake.fd()], timeout),
        }
        self.wake.drain();
        while let Ok(c) = self.ctl.try_recv() {
            if !self.control(c)? {
                return Ok(false);
            }
        }
        let mut changed = self.read_events()?;
        if let Some(x) = &mut self.xfrm
            && x.drain()?
        {
            self.xfrm_resync = true;
            changed = true;
        }
        self.resync_after_overrun()?;
        if self.overrun.is_none()
            && (!self.dirty.is_empty() || self.route_resync || self.xfrm_resync)
        {
            let now = Instant::now();
            let (first, last) = self.burst.get_or_insert((now, now));
            if changed {
                *last = now;
            }
            let d = (*first + self.cfg.coalesce).min(*last + self.cfg.settle);
            self.deadline = Some(d);
            if now >= d {
                self.flush()?;
            }
        }
        if Instant::now() >= self.next_probe {
            self.probe_waiting();
        }
        Ok(true)
    }

    /// Handles one control message; false to stop.
    fn control(&mut self, c: Control) -> Result<bool> {
        match c {
            Control::Track(key, tx) => {
                let new = self.index.facts(&key).is_none();
                let facts = self.index.track(&self.mirror, key);
                let _ = tx.send(facts);
                if new {
                    // The first facts also go on the event stream, so that whoever
                    // applies events sees every key's facts in order from the start.
                    self.stats.path_updates += 1;
                    self.emit(Event::Path(PathUpdate { key, facts }));
                }
                if facts.is_ok_and(|p| p.next_hop_mac.is_none()) {
                    self.probe_waiting();
                }
            }
            Control::Untrack(key) => {
                self.index.untrack(&key);
            }
            Control::Mirror(tx) => {
                let _ = tx.send(self.mirror.clone());
            }
            Control::Stats(tx) => {
                let mut s = self.stats;
                s.undecodable = self.events.undecodable;
                s.last_apply = self.index.last_stats();
                s.xfrm_watched = self.xfrm.is_some();
                let _ = tx.send(s);
            }
            Control::Timing(coalesce, settle) => {
                self.cfg.coalesce = coalesce;
                self.cfg.settle = settle;
            }
            Control::Resync => {
                self.resync(Kinds::ALL)?;
                self.flush()?;
            }
            Control::Stop => return Ok(false),
        }
        Ok(true)
    }

    /// Reads what the event socket holds; whether any change was applied.
    fn read_events(&mut self) -> Result<bool> {
        let mut changed = false;
        for _ in 0..READ_BUDGET {
            self.scratch.clear();
            match self.events.recv(&mut self.scratch)? {
                Received::Changes(_) if self.overrun.is_some() => {
                    // The dump that follows covers these.
                    self.stats.changes += self.scratch.len() as u64;
                    if let Some((_, last)) = &mut self.overrun {
                        *last = Instant::now();
                    }
                }
                Received::Changes(_) => {
                    let changes = std::mem::take(&mut self.scratch);
                    self.stats.changes += changes.len() as u64;
                    changed |= !changes.is_empty();
                    for c in changes {
                        let applied = self.mirror.apply(c, &mut self.dirty);
                        self.route_resync |= applied.resync_routes;
                    }
                }
                Received::WouldBlock => return Ok(changed),
                Received::Overrun => {
                    self.stats.overruns += 1;
                    tracing::warn!("netlink event socket overran; resynchronising");
                    let now = Instant::now();
                    let first = self.overrun.map_or(now, |(f, _)| f);
                    self.overrun = Some((first, now));
                }
            }
        }
        Ok(changed)
    }

    /// After an overrun, queued and incoming events are dropped (they predate the dump
    /// that follows) until the socket has been quiet for one coalescing window, or for at
    /// most [`MAX_RESYNC_DELAY`] during a storm; then everything is re-dumped once.
    fn resync_after_overrun(&mut self) -> Result<()> {
        let Some((first, last)) = self.overrun else {
            return Ok(());
        };
        let now = Instant::now();
        if now.duration_since(last) < self.cfg.coalesce
            && now.duration_since(first) < MAX_RESYNC_DELAY
        {
            self.deadline = Some(last + self.cfg.coalesce);
            return Ok(());
        }
        self.resync(Kinds::ALL)?;
        self.overrun = None;
        self.flush()
    }

    /// Re-dumps `kinds` under a new generation and sweeps what the dump lacks.
    fn resync(&mut self, kinds: Kinds) -> Result<()> {
        self.mirror.bump_generation();
        let changes = self.req.dump_kinds(kinds)?;
        for c in changes {
            // Dumped routes after a link change are authoritative: no further resync.
            let _ = self.mirror.apply(c, &mut self.dirty);
        }
        self.mirror.sweep(kinds, &mut self.dirty);
        if kinds == Kinds::ALL {
            self.stats.full_resyncs += 1;
            self.route_resync = false;
            self.dump_xfrm()?;
        } else {
            self.stats.route_resyncs += 1;
        }
        tracing::debug!(
            generation = self.mirror.generation(),
            routes = self.mirror.route_count(),
            "resynced"
        );
        Ok(())
    }

    /// Dumps the IPsec databases again (if watched); a difference marks every key dirty.
    fn dump_xfrm(&mut self) -> Result<()> {
        self.xfrm_resync = false;
        if self.xfrm.is_none() {
            return Ok(());
        }
        let x = xfrm::dump()?;
        self.stats.xfrm_dumps += 1;
        if self.mirror.set_xfrm(x) {
            self.dirty.all = true;
            let inbound = self.mirror.xfrm().inbound();
            if inbound != self.inbound {
                self.inbound = inbound.clone();
                self.emit(Event::Inbound(inbound));
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.route_resync {
            self.route_resync = false;
            self.resync(Kinds::ROUTES)?;
        }
        if self.xfrm_resync {
            self.dump_xfrm()?;
        }
        let dirty = std::mem::take(&mut self.dirty);
        self.deadline = None;
        self.burst = None;
        for ev in self.link_events(&dirty) {
            self.stats.link_events += 1;
            self.emit(ev);
        }
        for u in self.index.apply(&self.mirror, &dirty) {
            self.stats.path_updates += 1;
            tracing::debug!(key = %u.key, facts = ?u.facts, "path update");
            self.emit(Event::Path(u));
        }
        self.probe_waiting();
        Ok(())
    }

    /// The links of a dirty set whose reported state changed (an address change marks
    /// its link dirty without changing the link itself).
    fn link_events(&mut self, dirty: &Dirty) -> Vec<Event> {
        let mut out = Vec::new();
        let mut indexes: Vec<IfIndex> = dirty.links.iter().copied().collect();
        if dirty.all {
            indexes.extend(self.links.keys().copied());
            indexes.extend(self.mirror.links().map(|l| l.index));
        }
        indexes.sort();
        indexes.dedup();
        for i in indexes {
            match self.mirror.link(i) {
                Some(l) if self.links.get(&i) == Some(l) => {}
                Some(l) => {
                    self.links.insert(i, l.clone());
                    out.push(Event::Link(l.clone()));
                }
                None => {
                    if self.links.remove(&i).is_some() {
                        out.push(Event::LinkGone(i));
                    }
                }
            }
        }
        out
    }

    fn emit(&mut self, ev: Event) {
        match self.out.try_send(ev) {
            Ok(()) => {}
            Err(TrySendError::Full(ev)) => {
                // Backpressure: wait for the consumer (kernel events queue up meanwhile;
                // an overrun is recovered by a resync).
                let _ = self.out.send(ev);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Asks the kernel to resolve next hops that flows are waiting for.
    fn probe_waiting(&mut self) {
        let now = Instant::now();
        self.next_probe = now + self.cfg.probe_interval;
        let waiting = self.index.unresolved_next_hops();
        self.probed.retain(|k, _| waiting.contains(k));
        for (ifindex, ip) in waiting {
            let state = self.mirror.neighbour(ifindex, ip).map(|n| n.state);
            if state.is_some_and(NudState::is_resolving) {
                continue;
            }
            if self
                .probed
                .get(&(ifindex, ip))
                .is_some_and(|t| now.duration_since(*t) < self.cfg.probe_interval)
            {
                continue;
            }
            self.probed.insert((ifindex, ip), now);
            self.stats.probes += 1;
            if let Err(e) = self.req.probe_neighbour(ifindex, ip) {
                tracing::debug!(%ifindex, %ip, error = %e, "neighbour probe refused");
            }
        }
    }
}

/// Dumps the current namespace's state into a fresh mirror (what a resync would build).
pub fn dump_mirror() -> Result<Mirror> {
    let mut req = Requester::open()?;
    let mut m = Mirror::new();
    let mut dirty = Dirty::default();
    for c in req.dump_kinds(Kinds::ALL)? {
        m.apply(c, &mut dirty);
    }
    // A kernel without XFRM netlink has no policies to mirror.
    if XfrmEvents::open().is_ok() {
        m.set_xfrm(xfrm::dump()?);
    }
    Ok(m)
}
