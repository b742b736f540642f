//! The slow-path engine: upcall queues (full queues, flooding ports), handlers that
//! install, coalesce and return packets, revalidation after learning, rule and remote
//! changes, idle and limit-driven eviction, the threads, and what observers hear.

use super::*;
use crate::FlowId;
use crate::cache::{FlowEntry, FlowTable};
use crate::slowpath::upcall::{Upcall, UpcallConfig, UpcallCounters, UpcallDrop, upcall_queues};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<String>>,
    keep_alive: std::sync::atomic::AtomicU64,
    /// The flows of each `refresh_used` call.
    refreshed: Mutex<Vec<Vec<FlowId>>>,
}

impl FlowObserver for Recorder {
    fn installed(&self, f: &Arc<FlowEntry>) {
        self.events.lock().unwrap().push(format!("add {}", f.id()));
    }
    fn modified(&self, old: &Arc<FlowEntry>, new: &Arc<FlowEntry>) {
        self.events
            .lock()
            .unwrap()
            .push(format!("mod {} {}", old.id(), new.id()));
    }
    fn deleted(&self, f: &Arc<FlowEntry>, why: DeleteReason) {
        self.events
            .lock()
            .unwrap()
            .push(format!("del {} {why:?}", f.id()));
    }
    fn refresh_used(&self, flows: &[Arc<FlowEntry>]) {
        self.refreshed
            .lock()
            .unwrap()
            .push(flows.iter().map(|f| f.id()).collect());
        let now = self.keep_alive.load(std::sync::atomic::Ordering::Relaxed);
        if now > 0 {
            flows.iter().for_each(|f| f.touch(now));
        }
    }
}

fn engine(limit: usize) -> (Engine, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let cfg = EngineConfig {
        flow_limit: limit,
        ..EngineConfig::default()
    };
    let table = Arc::new(FlowTable::new(limit));
    let counters = Arc::new(UpcallCounters::default());
    (Engine::new(lab(), table, rec.clone(), cfg, counters), rec)
}

fn up(k: FlowKey) -> Upcall {
    Upcall {
        key: k,
        in_port: PortId(k.in_port),
        packet: vec![k.eth_src[5]; 60],
        origin: 0,
    }
}

fn events(rec: &Recorder) -> Vec<String> {
    std::mem::take(&mut *rec.events.lock().unwrap())
}

#[test]
fn full_queue_drops_and_counts() {
    let counters = Arc::new(UpcallCounters::default());
    let cfg = UpcallConfig {
        capacity: 2,
        max_frame: 100,
        ..UpcallConfig::default()
    };
    let (tx, rx) = upcall_queues(cfg, counters.clone());
    let k = frame(1, mac(0xa), mac(0xb));
    let k2 = frame(2, mac(0xb), mac(0xa));
    assert!(tx.send(&k, &[0; 60]).is_ok());
    assert!(tx.send(&k2, &[0; 60]).is_ok());
    assert_eq!(
        tx.send(&frame(3, mac(0xc), mac(0xa)), &[0; 60]),
        Err(UpcallDrop::QueueFull)
    );
    assert_eq!(tx.send(&k, &[0; 101]), Err(UpcallDrop::TooBig(101)));
    let s = counters.snapshot();
    assert_eq!((s.queued, s.queue_full, s.dropped_other), (2, 1, 1));
    assert_eq!(rx[0].try_iter().count(), 2);
}

#[test]
fn a_flooding_port_leaves_the_queue_to_the_others() {
    let counters = Arc::new(UpcallCounters::default());
    let cfg = UpcallConfig {
        capacity: 16,
        ..UpcallConfig::default()
    };
    assert_eq!(cfg.port_share(), 4);
    let (tx, rx) = upcall_queues(cfg, counters.clone());
    // Port 1 floods: it gets slots until the queue is half full, no more.
    let flood: Vec<_> = (0..100u8)
        .map(|i| tx.send(&frame(1, mac(i), mac(0xff)), &[0; 60]))
        .collect();
    assert_eq!(flood.iter().filter(|r| r.is_ok()).count(), 8);
    assert!(flood[8..].iter().all(|r| *r == Err(UpcallDrop::PortShare)));
    // Ports 2 and 3 each still get their share, and more while room is left.
    for p in [2, 3] {
        for i in 0..4 {
            assert_eq!(tx.send(&frame(p, mac(0x40 + i), mac(1)), &[0; 60]), Ok(()));
        }
    }
    assert_eq!(
        tx.send(&frame(2, mac(0x50), mac(1)), &[0; 60]),
        Err(UpcallDrop::PortShare)
    );
    let s = counters.snapshot();
    assert_eq!((s.queued, s.port_share, s.queue_full), (16, 93, 0));
    // Taking upcalls gives their slots back.
    assert_eq!(rx[0].try_iter().count(), 16);
    assert_eq!(tx.send(&frame(1, mac(0x60), mac(1)), &[0; 60]), Ok(()));
}

#[test]
fn handler_installs_coalesces_and_returns_packets() {
    let (e, rec) = engine(100);
    let k = frame(1, mac(0xa), mac(0xb));
    let v = e.handle(vec![up(k), up(k), up(k)], secs(0));
    assert_eq!(v.len(), 3);
    assert!(
        v.iter()
            .all(|v| v.packet == vec![0xa; 60] && v.actions.as_slice().len() == 5)
    );
    assert!(v.iter().all(|x| x.flow == v[0].flow && x.flow.is_some()));
    let s = e.counters().snapshot();
    assert_eq!((s.translated, s.coalesced, s.installed), (1, 2, 1));
    assert_eq!(e.table().len(), 1);
    assert_eq!(events(&rec).len(), 1);
    // Learning queued a change; the sweep finds nothing stale.
    let r = e.sweep(secs(1));
    assert_eq!((r.revalidated, r.modified, r.stale), (1, 0, 0));
}

#[test]
fn learning_revalidates_flooded_flows() {
    let (e, rec) = engine(100);
    let to_b = frame(1, mac(0xa), mac(0xb));
    e.handle(vec![up(to_b)], secs(0));
    e.sweep(secs(0));
    // B speaks: the flow that flooded to B must now go to port 2 only.
    e.handle(vec![up(frame(2, mac(0xb), mac::BROADCAST))], secs(1));
    let r = e.sweep(secs(1));
    assert_eq!(r.modified, 1);
    let f = e.table().lookup(&to_b).unwrap();
    assert_eq!(f.actions().as_slice(), &[Action::Output(PortId(2))]);
    assert!(events(&rec).iter().any(|ev| ev.starts_with("mod")));
}

#[test]
fn preinstall_learns_every_source_first_and_tells_no_observer() {
    let (e, rec) = engine(100);
    // Two directions of a conversation, and a remote station behind VTEP .2: each
    // key's destination is learned only from another key.
    let a_to_b = frame(1, mac(0xa), mac(0xb));
    let b_to_a = frame(2, mac(0xb), mac(0xa));
    let c_to_a = from_vtep(16, "10.0.0.2", mac(0xc), mac(0xa));
    let a_to_c = frame(1, mac(0xa), mac(0xc));
    let flows = e.preinstall(&[a_to_b, b_to_a, c_to_a, a_to_c], secs(0));
    assert_eq!(flows.len(), 4);
    assert!(
        events(&rec).is_empty(),
        "the caller announces preinstalled flows"
    );
    let acts_of = |k: &FlowKey| e.table().lookup(k).unwrap().actions().as_slice().to_vec();
    assert_eq!(acts_of(&a_to_b), vec![out(2)]);
    assert_eq!(acts_of(&b_to_a), vec![out(1)]);
    assert_eq!(acts_of(&c_to_a), vec![out(1)]);
    assert_eq!(acts_of(&a_to_c), encap(16, "10.0.0.2").to_vec());
    // Learning happened and the flows agree with it: revalidation keeps them all.
    let r = e.sweep(secs(1));
    assert_eq!((r.modified, r.stale), (0, 0));
    // The same keys again install nothing new.
    assert!(e.preinstall(&[a_to_b], secs(1)).is_empty());
}

#[test]
fn rule_changes_fix_or_delete_flows() {
    let (e, rec) = engine(100);
    for i in 0..10 {
        e.handle(vec![up(frame(1, mac(0xa), mac(0x10 + i)))], secs(0));
    }
    e.sweep(secs(0));
    events(&rec);
    let mut key = FlowKey::default();
    key.in_port = 1;
    let mut mask = FlowMask::default();
    mask.in_port = u32::MAX;
    let id = e.configure(|sp| {
        let (id, c) = sp
            .add_rule(Rule::new(10, &key, &mask, vec![RuleAction::Drop]))
            .unwrap();
        (id, vec![c])
    });
    let r = e.sweep(secs(1));
    // Masks shrink to in_port only: every flow is deleted, none survive stale.
    assert_eq!((r.revalidated, r.stale), (10, 10));
    assert!(e.table().is_empty());
    let v = e.handle(vec![up(frame(1, mac(0xa), mac(0x10)))], secs(1));
    assert!(v[0].actions.is_drop());
    assert_eq!(
        e.flow_meta(v[0].flow.unwrap()).unwrap().rule.unwrap().id,
        id
    );
    assert_eq!(
        events(&rec)
            .iter()
            .filter(|ev| ev.contains("Stale"))
            .count(),
        10
    );
}

/// The engine's metadata agrees with the table: one per flow, its distinct values those
/// of the flows (each kept once).
fn assert_metas_match_the_table(e: &Engine) -> (usize, usize) {
    let mut distinct: Vec<FlowMeta> = Vec::new();
    let flows = e.table().snapshot();
    for f in &flows {
        let m = e.flow_meta(f.id()).expect("every flow has metadata");
        if !distinct.contains(&m) {
            distinct.push(m);
        }
    }
    assert_eq!(e.meta_counts(), (flows.len(), distinct.len()));
    (flows.len(), distinct.len())
}

#[test]
fn flows_share_their_stations_metadata_until_the_last_goes() {
    let (e, _rec) = engine(100);
    // Station a on port 1 to 10 destinations, station b on port 2 to 5: unknown
    // unicast, flooded; each station's flows carry the same metadata.
    for i in 0..10 {
        e.handle(vec![up(frame(1, mac(0xa), mac(0x10 + i)))], secs(0));
    }
    for i in 0..5 {
        e.handle(vec![up(frame(2, mac(0xb), mac(0x30 + i)))], secs(0));
    }
    assert_eq!(assert_metas_match_the_table(&e), (15, 2));
    // Station a moves to port 2: its port-1 flows must be learned again (deleted), the
    // new one carries the moved station (another value).
    e.handle(vec![up(frame(2, mac(0xa), mac(0x40)))], secs(1));
    let r = e.sweep(secs(1));
    assert_eq!(r.stale, 10, "{r:?}");
    assert_eq!(assert_metas_match_the_table(&e), (6, 2));
    let moved = e.table().lookup(&frame(2, mac(0xa), mac(0x40))).unwrap();
    let learn = e.flow_meta(moved.id()).unwrap().learn.unwrap();
    let port2 = Location::Local(Attachment::untagged(PortId(2)));
    assert_eq!((learn.mac, learn.location), (mac(0xa), port2));
    // Idle: every flow goes, and with the last of each station's flows its value.
    assert_eq!(e.sweep(secs(30)).idle, 6);
    assert_eq!(assert_metas_match_the_table(&e), (0, 0));
}

#[test]
fn idle_flows_are_deleted_unless_offload_keeps_them_used() {
    let (e, rec) = engine(100);
    e.handle(vec![up(frame(1, mac(0xa), mac(0xb)))], secs(0));
    e.handle(vec![up(frame(2, mac(0xb), mac(0xa)))], secs(0));
    assert_eq!(e.sweep(secs(10)).idle, 0);
    rec.keep_alive
        .store(15_000, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(e.sweep(secs(20)).idle, 0, "offload counters moved used");
    rec.keep_alive
        .store(0, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(e.sweep(secs(26)).idle, 2);
    assert!(e.table().is_empty());
    assert!(events(&rec).iter().any(|ev| ev.ends_with("Idle")));
}

#[test]
fn a_chunked_sweep_sees_every_flow_once_across_chunks_with_holes() {
    let (e, rec) = engine(100);
    for i in 0..20 {
        e.handle(vec![up(frame(1, mac(0xa), mac(0x10 + i)))], secs(0));
    }
    // Holes in the table: every third flow removed behind the slow path's back.
    let mut ids: Vec<FlowId> = e.table().snapshot().iter().map(|f| f.id()).collect();
    ids.sort();
    let gone: Vec<FlowId> = ids.iter().copied().step_by(3).collect();
    for id in &gone {
        assert!(e.table().remove(*id).is_some());
    }
    let live: Vec<FlowId> = ids.iter().copied().filter(|i| !gone.contains(i)).collect();
    // A rule for every flow, so that the second walk re-translates them all.
    let mut key = FlowKey::default();
    key.in_port = 1;
    let mut mask = FlowMask::default();
    mask.in_port = u32::MAX;
    e.configure(|sp| {
        let (_, c) = sp
            .add_rule(Rule::new(10, &key, &mask, vec![RuleAction::Drop]))
            .unwrap();
        ((), vec![c])
    });
    rec.refreshed.lock().unwrap().clear();
    let r = e.sweep_chunked(secs(1), 3);
    let chunks = std::mem::take(&mut *rec.refreshed.lock().unwrap());
    assert!(
        chunks.iter().all(|c| !c.is_empty() && c.len() <= 3),
        "{chunks:?}"
    );
    let mut seen: Vec<FlowId> = chunks.concat();
    seen.sort();
    assert_eq!(seen, live, "each live flow once, the removed ones not");
    assert_eq!((r.flows, r.idle), (live.len(), 0));
    assert_eq!((r.revalidated, r.stale), (live.len(), live.len()));
    assert!(e.table().is_empty());
    // The removed flows' metadata is forgotten, as is that of the deleted ones.
    assert!(ids.iter().all(|id| e.flow_meta(*id).is_none()));
}

#[test]
fn a_chunked_sweep_deletes_idle_flows_in_every_chunk() {
    let (e, rec) = engine(100);
    for i in 0..10 {
        e.handle(vec![up(frame(1, mac(0xa), mac(0x10 + i)))], secs(0));
    }
    let r = e.sweep_chunked(secs(30), 4);
    assert_eq!((r.flows, r.idle), (10, 10));
    assert!(e.table().is_empty());
    let chunks = rec.refreshed.lock().unwrap().clone();
    assert_eq!(
        chunks.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![4, 4, 2]
    );
}

#[test]
fn flow_limit_evicts_least_recently_used() {
    let (e, _) = engine(12);
    // Four ports, each owning its quota (12 / 4 = 3 flows), fill the table.
    for i in 0..14 {
        let port = [1u8, 2, 3, 5][usize::from(i) % 4];
        let src = if port == 1 { mac(0xa) } else { mac(port) };
        e.handle(vec![up(frame(port.into(), src, mac(0x10 + i)))], secs(0));
    }
    let s = e.counters().snapshot();
    assert_eq!((s.installed, s.install_failed), (12, 2));
    let owned: Vec<_> = e
        .table()
        .port_stats()
        .iter()
        .map(|(_, s)| (s.flows, s.refused))
        .collect();
    assert_eq!(owned, vec![(3, 0); 4]);
    let first = e.table().lookup(&frame(1, mac(0xa), mac(0x10))).unwrap();
    first.touch(500);
    let r = e.sweep(secs(1));
    assert_eq!(r.evicted, 1);
    assert!(
        e.table().get(first.id()).is_some(),
        "recently used survives"
    );
}

#[test]
fn limits_changed_while_running_apply_at_the_next_sweep() {
    let (e, _) = engine(100);
    for i in 0..20 {
        e.handle(vec![up(frame(1, mac(0xa), mac(0x10 + i)))], secs(0));
    }
    assert_eq!(e.sweep(secs(1)).evicted, 0);
    e.set_limits(secs(5), 10);
    let r = e.sweep(secs(2));
    assert!(r.evicted >= 10, "{r:?}");
    assert!(e.table().len() <= 10);
    // The new limit also bounds installs.
    for i in 0..20 {
        e.handle(vec![up(frame(2, mac(0xb), mac(0x40 + i)))], secs(2));
    }
    assert!(e.table().len() <= 10);
    // And the new idle time: 5 s, not the default.
    assert_eq!(e.sweep(secs(4)).idle, 0);
    assert!(e.sweep(secs(8)).idle > 0);
}

#[test]
fn handler_thread_and_revalidator_run_and_stop() {
    let (e, _) = engine(100);
    let e = Arc::new(e);
    let counters = e.counters().clone();
    let (tx, mut rx) = upcall_queues(UpcallConfig::default(), counters);
    let rx = rx.remove(0);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clock = || Duration::from_secs(1);
    let got = std::thread::scope(|s| {
        let (e2, stop2) = (&e, &stop);
        let h = s.spawn(move || {
            let (e, stop) = (e2, stop2);
            let mut got = Vec::new();
            e.run_handler(&rx, &clock, stop, &mut |v| got.extend(v));
            got
        });
        s.spawn(|| e.run_revalidator(&clock, &stop, Duration::from_millis(10)));
        tx.send(&frame(1, mac(0xa), mac(0xb)), &[1; 60]).unwrap();
        while e.counters().snapshot().translated == 0 {
            std::thread::yield_now();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        h.join().unwrap()
    });
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].packet, vec![1; 60]);
}

#[test]
fn an_upcall_from_an_unplugged_port_installs_nothing_until_it_is_plugged_again() {
    let (e, rec) = engine(100);
    // An upcall still queued when its port left (hot-plug forgets the port first).
    e.configure(|sp| ((), sp.forget_port(PortId(1))));
    let v = e.handle(vec![up(frame(1, mac(0xa), mac(0xb)))], secs(0));
    assert_eq!(v.len(), 1, "the packet still gets its verdict");
    assert_eq!(v[0].flow, None);
    assert_eq!(e.table().len(), 0, "no flow enters by an unplugged port");
    assert!(
        rec.events.lock().unwrap().is_empty(),
        "the observer heard of none"
    );
    // Another port is not affected; the port plugged again installs again.
    e.handle(vec![up(frame(2, mac(0xb), mac(0xa)))], secs(0));
    assert_eq!(e.table().len(), 1);
    e.configure(|sp| {
        sp.plug_port(PortId(1));
        ((), Vec::new())
    });
    let v = e.handle(vec![up(frame(1, mac(0xa), mac(0xb)))], secs(1));
    assert!(v[0].flow.is_some());
    assert_eq!(e.table().len(), 2);
}

#[test]
fn preinstall_does_not_deadlock_with_a_writer_waiting() {
    // preinstall holds the slow path's read lock over its installs: taking it again
    // there deadlocked as soon as a writer (learning, configuration) queued between.
    let e = Arc::new(engine(10_000).0);
    let keys: Vec<FlowKey> = (0..3000u32)
        .map(|i| {
            let b = i.to_be_bytes();
            frame(1 + i % 2, Mac([0x02, 0, 1, b[1], b[2], b[3]]), mac(0xb))
        })
        .collect();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (e, done) = (e.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                e.configure(|_| ((), Vec::new()));
            }
        })
    };
    let (tx, rx) = std::sync::mpsc::channel();
    // Detached: if it deadlocks, the test fails on the deadline instead of hanging.
    let e2 = e.clone();
    std::thread::spawn(move || {
        let _ = tx.send(e2.preinstall(&keys, secs(1)).len());
    });
    let got = rx.recv_timeout(Duration::from_secs(60));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(
        got.is_ok_and(|n| n > 0),
        "preinstall never returned: {got:?}"
    );
    writer.join().unwrap();
}

#[test]
fn the_revalidator_paces_itself_by_what_a_sweep_costs() {
    let ms = Duration::from_millis;
    let mut p = Pace::new(ms(500));
    // Before any sweep: changes are swept for at once, upkeep after the interval.
    assert_eq!(p.wait(true, ms(0)), ms(0));
    assert_eq!(p.wait(false, ms(100)), ms(400));
    // Cheap sweeps (a small table) change nothing.
    p.swept(ms(2));
    assert_eq!(p.wait(true, ms(0)), ms(2));
    assert_eq!(p.wait(true, ms(3)), ms(0));
    assert_eq!(p.wait(false, ms(0)), ms(500));
    // A sweep of 300 ms (a huge table): changes wait as long again (half a core at
    // most), upkeep nine times as long (a tenth of a core).
    p.swept(ms(300));
    assert_eq!(p.wait(true, ms(100)), ms(200));
    assert_eq!(p.wait(false, ms(0)), ms(2700));
    assert_eq!(p.wait(false, ms(2700)), ms(0));
}

#[test]
fn the_revalidator_stops_when_woken_without_waiting_for_its_interval() {
    let (e, _) = engine(100);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let clock = || Duration::from_secs(1);
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        let t = s.spawn(|| e.run_revalidator(&clock, &stop, Duration::from_secs(3600)));
        // Wait until it sleeps on its interval: one sweep would have counted.
        while !t.is_finished() && started.elapsed() < Duration::from_millis(50) {
            std::thread::yield_now();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        e.wake();
        t.join().unwrap();
    });
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "not its hour-long interval"
    );
    assert_eq!(e.reval_stats().sweeps, 0, "no sweep before the interval");
}

#[derive(Default)]
struct Stations(Mutex<Vec<MacKey>>);

impl StationObserver for Stations {
    fn stations_changed(&self, keys: &[MacKey]) {
        self.0.lock().unwrap().extend_from_slice(keys);
    }
}

#[test]
fn station_observer_hears_learning_aging_and_control_plane() {
    let (e, _) = engine(100);
    let obs = Arc::new(Stations::default());
    assert!(e.observe_stations(obs.clone()));
    assert!(!e.observe_stations(obs.clone()), "one observer");
    let take = || std::mem::take(&mut *obs.0.lock().unwrap());
    e.handle(vec![up(frame(1, mac(0xa), mac(0xb)))], secs(0));
    assert_eq!(take(), vec![(NET16, mac(0xa))]);
    e.handle(vec![up(frame(1, mac(0xa), mac(0xb)))], secs(1));
    assert!(take().is_empty(), "a refresh is no change");
    let r = e.apply_remote(&[station(mac(0xb), "10.0.0.9"), flood_list(&["10.0.0.9"])]);
    assert_eq!((r.changed, r.unchanged, r.refused.len()), (2, 0, 0));
    assert_eq!(take(), vec![(NET16, mac(0xb))]);
    e.sweep(secs(400));
    assert_eq!(take(), vec![(NET16, mac(0xa))], "aged out");
}

#[test]
fn remote_updates_revalidate_only_affected_flows() {
    let (e, _) = engine(100);
    let to_b = frame(1, mac(0xa), mac(0xb));
    let bcast = frame(2, mac(0xc), mac::BROADCAST);
    let other = frame(3, mac(0xe), mac(0xf));
    e.handle(vec![up(to_b), up(bcast), up(other)], secs(0));
    e.sweep(secs(0));
    e.apply_remote(&[station(mac(0xb), "10.0.0.9")]);
    let r = e.sweep(secs(1));
    assert_eq!(
        (r.revalidated, r.modified),
        (1, 1),
        "only the flow toward B"
    );
    let f = e.table().lookup(&to_b).unwrap();
    assert_eq!(f.actions().as_slice(), &encap(16, "10.0.0.9"));
    e.apply_remote(&[flood_list(&["10.0.0.8"])]);
    let r = e.sweep(secs(2));
    assert_eq!(
        (r.revalidated, r.modified),
        (1, 1),
        "only VNI 16's flooding flow"
    );
    let f = e.table().lookup(&bcast).unwrap();
    assert_eq!(f.actions().as_slice().len(), 7);
}
