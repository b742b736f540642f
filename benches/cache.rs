//! Flow cache benchmark: per-packet lookup cost of each tier and memory per megaflow.
//!
//! `cargo bench --bench cache` prints one row per measurement with its target. Lookups
//! run in memory on prebuilt 128-byte keys (what a 64-byte packet's parse produces); the
//! figure includes hashing the key. Memory is measured with a counting global allocator:
//! the live heap bytes of a `FlowTable` + one datapath thread's `FlowCache` holding 1M
//! megaflows, divided by 1M (requested bytes; the allocator's own per-chunk overhead is
//! not included).

use datapath::cache::{CacheConfig, FlowCache, FlowEntry, FlowTable, key_hash};
use datapath::{Action, Actions, FlowKey, FlowMask, Megaflow, PortId};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::time::Instant;

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees carry over; the counter has no effect on the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// xorshift64*: deterministic keys without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A TCP/IPv4 packet key from port `port` with random addresses and ports.
fn packet(rng: &mut Rng, port: u32) -> FlowKey {
    let r = rng.next();
    let s = rng.next();
    let mut k = FlowKey {
        in_port: port,
        eth_type: 0x0800,
        ip_proto: 6,
        ip_ttl: 64,
        tp_src: r as u16,
        tp_dst: (r >> 16) as u16,
        eth_src: [2, 0, 0, 0, (port >> 8) as u8, port as u8],
        eth_dst: [2, 0, 0, 1, (s >> 8) as u8, s as u8],
        ..FlowKey::default()
    };
    k.ip_src[..4].copy_from_slice(&((s >> 32) as u32).to_be_bytes());
    k.ip_dst[..4].copy_from_slice(&(r >> 32).to_be_bytes()[4..]);
    k
}

/// Mask number `i` (`i < 32`): in_port, eth_type, ip_src and an ip_dst prefix of `i + 1`
/// bits, a distinct mask for each `i`; 4 non-zero words.
fn mask(i: u32) -> FlowMask {
    let mut m = FlowMask(FlowKey {
        in_port: u32::MAX,
        eth_type: 0xffff,
        ..FlowKey::default()
    });
    m.ip_src[..4].fill(0xff);
    let bits = (i + 1).min(32);
    m.ip_dst[..4].copy_from_slice(&(u32::MAX << (32 - bits)).to_be_bytes());
    m
}

fn actions(port: u32) -> Actions {
    Actions::new(vec![Action::Output(PortId(port))])
}

/// Cost per call of `f`, in ns: the best of a few rounds of `iters` calls.
fn time(iters: u64, mut f: impl FnMut(u64)) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for i in 0..iters {
            f(i);
        }
        best = best.min(t.elapsed().as_nanos() as f64 / iters as f64);
    }
    best
}

struct Row {
    name: String,
    value: f64,
    unit: &'static str,
    target: Option<f64>,
}

impl Row {
    /// A per-packet row; `target_ns` is the most ns allowed.
    fn lookup(name: &str, ns: f64, target_ns: Option<f64>) -> Self {
        Self {
            name: name.into(),
            value: ns,
            unit: "ns/op",
            target: target_ns,
        }
    }

    fn print(&self) {
        let (mpps, target, verdict) = match (self.unit, self.target) {
            ("ns/op", Some(t)) => (
                format!("{:.1}", 1e3 / self.value),
                format!(">= {:.0} Mpps", 1e3 / t),
                if self.value <= t { "PASS" } else { "MISS" },
            ),
            ("ns/op", None) => (format!("{:.1}", 1e3 / self.value), "-".into(), "info"),
            (_, Some(t)) => (
                "-".into(),
                format!("<= {t:.0} {}", self.unit),
                if self.value <= t { "PASS" } else { "MISS" },
            ),
            (_, None) => ("-".into(), "-".into(), "info"),
        };
        println!(
            "{:<44} {:>10.1} {:<10} {:>8} {:>16} {:>6}",
            self.name, self.value, self.unit, mpps, target, verdict
        );
    }
}

/// A cache with `flows_per_mask` megaflows in each of `masks` masks, and `n_keys` packet
/// keys hitting them; `pick(rng, i)` picks which mask key `i` hits.
fn classifier_setup(
    masks: u32,
    flows_per_mask: u32,
    n_keys: usize,
    emc: usize,
    pick: impl Fn(&mut Rng, usize) -> u32,
) -> (FlowCache, Vec<FlowKey>) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut cache = FlowCache::new(CacheConfig::with_emc_entries(emc));
    let mut flows: Vec<Vec<Arc<FlowEntry>>> = Vec::new();
    let mut id = 0;
    for m in 0..masks {
        // in_port = mask number: megaflows of different masks never overlap.
        let mask = Arc::new(mask(m));
        let mut list = Vec::new();
        for _ in 0..flows_per_mask {
            id += 1;
            let key = packet(&mut rng, m);
            let e = Arc::new(FlowEntry::new(
                datapath::FlowId(id),
                &key,
                Arc::clone(&mask),
                actions(m),
                0,
            ));
            cache.insert(Arc::clone(&e));
            list.push(e);
        }
        flows.push(list);
    }
    let keys = (0..n_keys)
        .map(|i| {
            let m = pick(&mut rng, i) % masks;
            let list = &flows[m as usize];
            let e = &list[(rng.next() % list.len() as u64) as usize];
            // A packet of that flow: its masked key, with the wildcarded bits random.
            let noise = packet(&mut rng, m);
            let mut k = *e.key();
            for ((w, n), mw) in k
                .words_mut()
                .iter_mut()
                .zip(noise.words())
                .zip(e.mask().words())
            {
                *w |= n & !mw;
            }
            assert!(e.matches(&k));
            k
        })
        .collect();
    (cache, keys)
}

fn bench_lookups(cache: &mut FlowCache, keys: &[FlowKey], iters: u64) -> f64 {
    let n = keys.len() as u64;
    // Warm up (fills the EMC when there is one).
    for k in keys {
        black_box(cache.lookup(k));
    }
    let ns = time(iters, |i| {
        let k = &keys[(i % n) as usize];
        black_box(cache.lookup(black_box(k)).is_some());
    });
    assert_eq!(cache.counters().misses, 0, "every key must hit");
    ns
}

fn emc_rows(rows: &mut Vec<Row>) {
    // 1024 flows; 1024 packet keys chosen to fall in distinct slots of the 8192-slot EMC,
    // so every measured lookup is an EMC hit.
    const EMC: usize = 8192;
    let (mut cache, candidates) = classifier_setup(1, 1024, 4096, EMC, |_, _| 0);
    let mut used = vec![false; EMC];
    let keys: Vec<FlowKey> = candidates
        .into_iter()
        .filter(|k| !std::mem::replace(&mut used[key_hash(k) as usize % EMC], true))
        .take(1024)
        .collect();
    let ns = bench_lookups(&mut cache, &keys, 4_000_000);
    let c = cache.counters();
    let ratio = c.emc_hits as f64 / (c.emc_hits + c.megaflow_hits) as f64;
    rows.push(Row::lookup(
        &format!("exact-match hit (EMC hit ratio {:.1}%)", ratio * 100.0),
        ns,
        Some(40.0),
    ));

    let hash_ns = time(4_000_000, |i| {
        black_box(key_hash(black_box(&keys[i as usize % keys.len()])));
    });
    rows.push(Row::lookup("  of which key_hash", hash_ns, None));

    let ns = time(4_000_000, |i| {
        if let Some(e) = cache.lookup(black_box(&keys[i as usize % keys.len()])) {
            e.record(1, 64, 0, i);
        }
    });
    rows.push(Row::lookup("exact-match hit + stats record", ns, None));
}

fn megaflow_rows(rows: &mut Vec<Row>) {
    for (masks, target) in [(1, Some(125.0)), (8, Some(125.0)), (32, None)] {
        let flows = 32_768 / masks;
        let (mut cache, keys) = classifier_setup(masks, flows, 8192, 0, |rng, _| {
            (rng.next() % u64::from(masks)) as u32
        });
        let ns = bench_lookups(&mut cache, &keys, 2_000_000);
        rows.push(Row::lookup(
            &format!("megaflow hit, {masks} masks (uniform, no EMC)"),
            ns,
            target,
        ));
    }
    // Skewed: 90% of packets hit one of 32 masks, which the hit-count sort moves first.
    let (mut cache, keys) = classifier_setup(32, 1024, 8192, 0, |rng, _| {
        if rng.next() % 10 == 0 {
            (rng.next() % 32) as u32
        } else {
            31
        }
    });
    cache.classifier_mut().resort();
    for k in &keys {
        black_box(cache.lookup(k));
    }
    cache.classifier_mut().resort();
    let ns = bench_lookups(&mut cache, &keys, 2_000_000);
    rows.push(Row::lookup(
        "megaflow hit, 32 masks (90% on one, sorted)",
        ns,
        None,
    ));
}

fn memory_rows(rows: &mut Vec<Row>) {
    const FLOWS: u32 = 1_000_000;
    let mut rng = Rng(42);
    let shared = actions(1);
    let mask = mask(23);
    let before = LIVE.load(Relaxed);
    let table = FlowTable::new(2 * FLOWS as usize);
    let sub = table.subscribe(1024);
    let mut cache = FlowCache::default();
    let t = Instant::now();
    let mut installed = 0u32;
    while installed < FLOWS {
        let mut key = packet(&mut rng, installed % 64);
        key.ip_src[..4].copy_from_slice(&installed.to_be_bytes());
        match table.put(&Megaflow::new(&key, &mask), shared.clone(), 0) {
            Ok(_) => installed += 1,
            Err(e) => panic!("put: {e}"),
        }
        if installed.is_multiple_of(512) {
            cache.drain(&sub.ops, usize::MAX);
        }
    }
    cache.drain(&sub.ops, usize::MAX);
    let put_ns = t.elapsed().as_nanos() as f64 / f64::from(FLOWS);
    let after = LIVE.load(Relaxed);
    assert_eq!(cache.len(), FLOWS as usize);
    assert_eq!(table.len(), FLOWS as usize);

    let per_flow = (after - before) as f64 / f64::from(FLOWS);
    rows.push(Row {
        name: "memory per megaflow at 1M flows (total)".into(),
        value: per_flow,
        unit: "B/flow",
        target: Some(256.0),
    });
    let entry = (std::mem::size_of::<FlowEntry>() + 16) as f64;
    for (name, v) in [
        ("  entry (Arc<FlowEntry>, incl. 16 B counts)", entry),
        (
            "  FlowTable index (slab + mask group)",
            table.heap_bytes() as f64 / f64::from(FLOWS),
        ),
        (
            "  FlowCache (subtable + EMC array)",
            cache.heap_bytes() as f64 / f64::from(FLOWS),
        ),
        (
            "  (not shared: one 1-action list, per flow)",
            (16 + std::mem::size_of::<Action>()) as f64,
        ),
    ] {
        rows.push(Row {
            name: name.into(),
            value: v,
            unit: "B/flow",
            target: None,
        });
    }
    rows.push(Row::lookup(
        "FlowTable::put + drain (flow setup)",
        put_ns,
        None,
    ));
    drop((cache, sub, table));
}

fn main() {
    let started = Instant::now();
    let mut rows = Vec::new();
    emc_rows(&mut rows);
    megaflow_rows(&mut rows);
    memory_rows(&mut rows);
    println!(
        "{:<44} {:>10} {:<10} {:>8} {:>16} {:>6}",
        "benchmark", "value", "unit", "Mpps", "target", "result"
    );
    for r in &rows {
        r.print();
    }
    println!("(total {:.1} s)", started.elapsed().as_secs_f64());
}
