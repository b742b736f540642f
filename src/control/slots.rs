//! Connection slots for the daemon's listeners (the control socket and the metrics
//! endpoint): a bounded table in which an idle or slow client cannot lock out a new one.
//!
//! A listener serves at most `max` connections. A connection is *idle* from its accept,
//! and again from each answer it was given, until its next complete request; it is
//! *busy* while its request is executed and answered. When every slot is taken, the
//! new client gets one anyway: the connection idle the longest is told to close
//! ([`Slot::evicted`] completes for it) and its slot goes to the new one. Only when every
//! slot is busy is the new client refused. Each listener counts the connections it
//! closed for a deadline, evicted and refused in a [`ConnCounters`].
//!
//! Thread-safety: the table is a mutex held for a few comparisons (at most `max`
//! entries) by the accept loop and by each connection's task at its transitions; never
//! across an await.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::oneshot;

/// Connections a listener closed or turned away, since the process started.
#[derive(Debug, Default)]
pub struct ConnCounters {
    timed_out: AtomicU64,
    evicted: AtomicU64,
    refused: AtomicU64,
}

/// A snapshot of [`ConnCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnStats {
    /// Closed because a request (or the taking of an answer) missed its deadline.
    pub timed_out: u64,
    /// Closed while idle to make room for a new client.
    pub evicted: u64,
    /// New clients refused because every slot was busy.
    pub refused: u64,
}

impl ConnStats {
    /// The counters under their stable names, each prefixed with `prefix` (as
    /// `flowctl stats` and the metrics show them: `control_conns_evicted`, ...).
    pub fn named(&self, prefix: &str) -> [(String, u64); 3] {
        [
            (format!("{prefix}_conns_timed_out"), self.timed_out),
            (format!("{prefix}_conns_evicted"), self.evicted),
            (format!("{prefix}_conns_refused"), self.refused),
        ]
    }
}

impl ConnCounters {
    /// All zero (for a `static`).
    pub const fn new() -> Self {
        Self {
            timed_out: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Counts a connection closed for a missed deadline.
    pub fn timed_out(&self) {
        self.timed_out.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> ConnStats {
        ConnStats {
            timed_out: self.timed_out.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// The slot table of one listener.
#[derive(Debug)]
pub struct Slots {
    max: usize,
    counters: &'static ConnCounters,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Orders idle periods: a larger tick began later.
    tick: u64,
    next_id: u64,
    conns: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    /// When (in ticks) it became idle; `None` while busy.
    idle_since: Option<u64>,
    evict: oneshot::Sender<()>,
}

impl Slots {
    /// A table of `max` slots (at least one) counting into `counters`.
    pub fn new(max: usize, counters: &'static ConnCounters) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            counters,
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a new connection: a free one, else the one of the connection idle
    /// the longest (which is told to close). `None` (counted as refused) when every
    /// slot is busy.
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut inner = self.lock();
        if inner.conns.len() >= self.max {
            let oldest = inner
                .conns
                .iter()
                .enumerate()
                .filter_map(|(i, e)| e.idle_since.map(|t| (t, i)))
                .min();
            let Some((_, i)) = oldest else {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            let victim = inner.conns.swap_remove(i);
            // Its task may be gone already (a closed receiver): the slot is free anyway.
            let _ = victim.evict.send(());
            self.counters.evicted.fetch_add(1, Ordering::Relaxed);
        }
        inner.tick += 1;
        inner.next_id += 1;
        let (id, tick) = (inner.next_id, inner.tick);
        let (evict, evicted) = oneshot::channel();
        inner.conns.push(Entry {
            id,
            idle_since: Some(tick),
            evict,
        });
        Some(Slot {
            slots: Arc::clone(self),
            id,
            evicted,
        })
    }

    /// The listener's counters.
    pub fn counters(&self) -> &'static ConnCounters {
        self.counters
    }

    /// Connections holding a slot now.
    pub fn len(&self) -> usize {
        self.lock().conns.len()
    }

    /// Whether no connection holds a slot.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One connection's slot, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    evicted: oneshot::Receiver<()>,
}

impl Slot {
    /// Marks the connection busy (a complete request to execute and answer): it cannot
    /// be evicted until [`Slot::idle`]. `false` if it was evicted already: close it
    /// without executing the request.
    pub fn busy(&self) -> bool {
        let mut inner = self.slots.lock();
        match inner.conns.iter_mut().find(|e| e.id == self.id) {
            Some(e) => {
                e.idle_since = None;
                true
            }
            None => false,
        }
    }

    /// Marks the connection idle (answered; waiting for its next request): from now
    /// on it is the newest idle connection.
    pub fn idle(&self) {
        let mut inner = self.slots.lock();
        inner.tick += 1;
        let tick = inner.tick;
        if let Some(e) = inner.conns.iter_mut().find(|e| e.id == self.id) {
            e.idle_since = Some(tick);
        }
    }

    /// Completes when the connection was evicted for a new client (at once if it was
    /// already). Await it at most once to completion.
    pub async fn evicted(&mut self) {
        // A dropped sender means the entry is gone: evicted as well.
        let _ = (&mut self.evicted).await;
    }

    /// Counts this connection as closed for a missed deadline.
    pub fn timed_out(&self) {
        self.slots.counters.timed_out();
    }

    /// Takes the eviction notice out of the slot, for a task that waits for it while
    /// the slot itself is lent (shared) to the code that marks the connection busy and
    /// idle, such as an HTTP service. Afterwards [`Slot::evicted`] completes at once:
    /// wait on the [`Eviction`] instead.
    pub fn take_eviction(&mut self) -> Eviction {
        let (_, gone) = oneshot::channel();
        Eviction(std::mem::replace(&mut self.evicted, gone))
    }
}

/// A slot's eviction notice apart from the slot ([`Slot::take_eviction`]).
#[derive(Debug)]
pub struct Eviction(oneshot::Receiver<()>);

impl Eviction {
    /// Completes when the connection was evicted for a new client (at once if it was
    /// already). Await it at most once to completion.
    pub async fn wait(&mut self) {
        let _ = (&mut self.0).await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.slots.lock();
        if let Some(i) = inner.conns.iter().position(|e| e.id == self.id) {
            inner.conns.swap_remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evicted_now(s: &mut Slot) -> bool {
        !matches!(
            s.evicted.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        )
    }

    #[test]
    fn a_full_table_evicts_the_longest_idle_and_refuses_only_when_all_are_busy() {
        static C: ConnCounters = ConnCounters::new();
        let slots = Slots::new(3, &C);
        let mut a = slots.admit().expect("a");
        let mut b = slots.admit().expect("b");
        let mut c = slots.admit().expect("c");
        assert_eq!(slots.len(), 3);
        // `a` answered a request: it is now idle for less long than `b`.
        assert!(a.busy());
        a.idle();
        // `c` is executing a command: never evicted.
        assert!(c.busy());

        let mut d = slots.admit().expect("d evicts b");
        assert!(evicted_now(&mut b), "b had been idle the longest");
        assert!(!evicted_now(&mut a) && !evicted_now(&mut c));
        assert!(!b.busy(), "an evicted connection executes nothing");
        assert_eq!(slots.len(), 3);

        let _e = slots.admit().expect("e evicts a");
        assert!(evicted_now(&mut a));
        assert!(d.busy());
        // Every slot busy (`e` too): the next one is refused.
        assert!(_e.busy());
        assert!(slots.admit().is_none());
        assert_eq!(
            C.snapshot(),
            ConnStats {
                timed_out: 0,
                evicted: 2,
                refused: 1
            }
        );
        // A slot given back is free again.
        drop(c);
        assert!(!evicted_now(&mut d));
        let f = slots.admit().expect("a free slot");
        f.timed_out();
        assert_eq!(C.snapshot().timed_out, 1);
        drop((a, b));
        assert_eq!(slots.len(), 3, "evicted slots were already given back");
    }

    #[tokio::test]
    async fn an_eviction_taken_out_of_its_slot_still_hears_it() {
        static C: ConnCounters = ConnCounters::new();
        let slots = Slots::new(1, &C);
        let mut a = slots.admit().expect("a");
        let mut eviction = a.take_eviction();
        // The slot lent elsewhere still marks the connection busy and idle.
        assert!(a.busy());
        assert!(slots.admit().is_none(), "busy: not evicted");
        a.idle();
        let _b = slots.admit().expect("b evicts a");
        tokio::time::timeout(std::time::Duration::from_secs(5), eviction.wait())
            .await
            .expect("the eviction heard");
        assert!(!a.busy(), "an evicted connection executes nothing");
    }
}
