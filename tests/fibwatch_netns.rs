//! fibwatch against the host kernel, inside network namespaces each test creates (and
//! removes on drop, even when it fails). Needs root. Traffic stays inside the namespaces.
//!
//! Topology (`Lab::new`): namespace `hv` (the hypervisor, where fibwatch runs) has two
//! uplinks, veths `up1` 10.1.0.1/24 and `up2` 10.2.0.1/24, to namespace `rm` (`r1`
//! 10.1.0.2, `r2` 10.2.0.2), which holds the tunnel endpoints on its loopback
//! (192.0.2.1-3/32).

use fibwatch::{
    Config, Event, IfIndex, LookupKey, Paths, Watcher, dump_mirror, ecmp_pick, in_netns,
};
use flowd::netns::Netns;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use vocab::{PathFacts, PathProblem};

const E1: &str = "192.0.2.1";
const E2: &str = "192.0.2.2";
const E3: &str = "192.0.2.3";

struct Lab {
    // Field order: the watcher stops before the namespaces go.
    w: Watcher,
    hv: Netns,
    rm: Netns,
    up1: IfIndex,
    up2: IfIndex,
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn key(ep: &str) -> LookupKey {
    LookupKey::to(ip(ep))
}

/// Path updates by key, and link events, as collected.
#[derive(Debug, Default)]
struct Got {
    paths: BTreeMap<LookupKey, Vec<PathFacts>>,
    links: Vec<Event>,
    inbound: Vec<fibwatch::Inbound>,
}

impl Got {
    fn keys(&self) -> Vec<LookupKey> {
        self.paths.keys().copied().collect()
    }

    /// The one update of `k`.
    fn single(&self, k: &LookupKey) -> PathFacts {
        let v = self
            .paths
            .get(k)
            .unwrap_or_else(|| panic!("no update for {k}: {self:#?}"));
        assert_eq!(v.len(), 1, "{k}: {v:#?}");
        v[0]
    }

    fn add(&mut self, ev: Event) {
        match ev {
            Event::Path(u) => self.paths.entry(u.key).or_default().push(u.facts),
            Event::Inbound(i) => self.inbound.push(i),
            other => self.links.push(other),
        }
    }
}

fn uplink(f: &PathFacts) -> Option<IfIndex> {
    f.as_ref().ok().map(|p| p.uplink)
}

impl Lab {
    fn new(tag: &str) -> Lab {
        Lab::with(tag, |c| c)
    }

    /// A lab whose watcher runs with `tune` applied to the test's usual settings.
    fn with(tag: &str, tune: impl FnOnce(Config) -> Config) -> Lab {
        let id = std::process::id() % 100_000;
        let hv = Netns::named(&format!("fwhv{tag}{id}")).expect("netns");
        let rm = Netns::named(&format!("fwrm{tag}{id}")).expect("netns");
        for (up, r, net) in [("up1", "r1", 1), ("up2", "r2", 2)] {
            hv.ip(&format!(
                "link add {up} type veth peer name {r} netns {}",
                rm.name
            ));
            hv.ip(&format!("addr add 10.{net}.0.1/24 dev {up}"));
            rm.ip(&format!("addr add 10.{net}.0.2/24 dev {r}"));
            hv.ip(&format!("addr add fd00:{net}::1/64 dev {up} nodad"));
            rm.ip(&format!("addr add fd00:{net}::2/64 dev {r} nodad"));
            hv.ip(&format!("link set {up} up"));
            rm.ip(&format!("link set {r} up"));
        }
        for e in [E1, E2, E3] {
            rm.ip(&format!("addr add {e}/32 dev lo"));
        }
        hv.ip(&format!("route add {E1}/32 via 10.1.0.2"));
        hv.ip(&format!("route add {E2}/32 via 10.1.0.2"));
        // Resolve both gateways now so that first paths are complete.
        for gw in ["10.1.0.2", "10.2.0.2"] {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !hv.try_exec(&format!("ping -c1 -W1 {gw}")).0 {
                assert!(Instant::now() < deadline, "{gw} unreachable");
            }
        }
        let up1 = hv.ifindex("up1").expect("up1");
        let up2 = hv.ifindex("up2").expect("up2");
        let cfg = Config {
            coalesce: Duration::from_millis(10),
            netns: Some(hv.path()),
            probe_interval: Duration::from_millis(500),
            ..Config::default()
        };
        let w = Watcher::spawn(tune(cfg)).expect("spawn watcher");
        Lab {
            w,
            hv,
            rm,
            up1,
            up2,
        }
    }

    /// Tracks a key; its first facts (also sent as an event, which this drains).
    fn track(&self, k: LookupKey) -> PathFacts {
        let f = self.w.track(k).unwrap();
        let got = self.until(|g| g.paths.contains_key(&k));
        assert_eq!(got.paths[&k], vec![f], "the first event repeats the answer");
        f
    }

    /// Events until none came for 400 ms (at most 10 s).
    fn settle(&self) -> Got {
        settle_for(&self.w, Duration::from_millis(400))
    }

    /// Events until `done` holds for what was collected (or 15 s).
    fn until(&self, done: impl Fn(&Got) -> bool) -> Got {
        let mut got = Got::default();
        let deadline = Instant::now() + Duration::from_secs(15);
        while !done(&got) && Instant::now() < deadline {
            if let Ok(ev) = self.w.events().recv_timeout(Duration::from_millis(50)) {
                got.add(ev);
            }
        }
        assert!(done(&got), "condition not reached; got {got:#?}");
        got
    }
}

fn settle_for(w: &Watcher, quiet: Duration) -> Got {
    let mut out = Got::default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match w.events().recv_timeout(quiet) {
            Ok(ev) => out.add(ev),
            Err(_) => break,
        }
    }
    out
}

/// A burst ends when the changes stop (`settle`), not a whole `coalesce` window later;
/// changes within one burst are one decision round, so a flap back produces nothing.
#[test]
fn a_burst_is_decided_once_it_settles() {
    let lab = Lab::with("st", |c| Config {
        coalesce: Duration::from_secs(60),
        settle: Duration::from_millis(300),
        ..c
    });
    assert_eq!(uplink(&lab.track(key(E1))), Some(lab.up1));

    // Away and back in one `ip -batch`: well within 300 ms of each other.
    let path = lab.hv.path();
    let batch = format!(
        "ip netns exec {} ip -batch - <<'EOF'\nroute replace {E1}/32 via 10.2.0.2\n\
         route replace {E1}/32 via 10.1.0.2\nEOF",
        lab.hv.name
    );
    flowd::netns::sh(&batch);
    let got = settle_for(&lab.w, Duration::from_millis(1500));
    assert!(got.paths.is_empty(), "a flap within one burst: {got:#?}");

    // A lone change (through fibwatch's own route request) is decided once it settles,
    // long before the 60 s bound (`until` gives up after 15 s).
    let up2 = lab.up2;
    in_netns(&path, || {
        fibwatch::netlink::Requester::open()?.replace_route(
            format!("{E1}/32").parse().unwrap(),
            ip("10.2.0.2"),
            up2,
        )
    })
    .expect("route replace over netlink");
    let routes = lab.hv.ip(&format!("route show {E1}/32"));
    assert!(routes.contains("via 10.2.0.2 dev up2"), "{routes}");
    let got = lab.until(|g| !g.paths.is_empty());
    assert_eq!(uplink(&got.single(&key(E1))), Some(lab.up2), "{got:#?}");

    // Timings changed while running. Both bounds at 60 s: a change waits.
    lab.w
        .set_timing(Duration::from_secs(60), Duration::from_secs(60))
        .unwrap();
    lab.hv.ip(&format!("route replace {E1}/32 via 10.1.0.2"));
    let got = settle_for(&lab.w, Duration::from_millis(1000));
    assert!(got.paths.is_empty(), "held for 60 s: {got:#?}");
    // The other bound: a burst that does not settle is decided `coalesce` after its
    // first change, here at once.
    lab.w
        .set_timing(Duration::from_millis(100), Duration::from_secs(60))
        .unwrap();
    let got = lab.until(|g| !g.paths.is_empty());
    assert_eq!(uplink(&got.single(&key(E1))), Some(lab.up1), "{got:#?}");
}

#[test]
fn route_replace_updates_exactly_that_remotes_keys() {
    let lab = Lab::new("rr");
    let sourced = LookupKey {
        src: Some(ip("10.1.0.1")),
        ..key(E1)
    };
    for k in [key(E1), sourced, key(E2)] {
        assert_eq!(uplink(&lab.track(k)), Some(lab.up1));
    }
    // Tracking again changes nothing and sends nothing.
    assert_eq!(uplink(&lab.w.track(key(E1)).unwrap()), Some(lab.up1));

    lab.hv.ip(&format!("route replace {E1}/32 via 10.2.0.2"));
    let got = lab.settle();
    assert_eq!(got.keys(), vec![key(E1), sourced], "{got:#?}");
    let p = got.single(&key(E1)).expect("a path");
    assert_eq!((p.uplink, p.src), (lab.up2, Some(ip("10.2.0.1"))));
    assert!(p.next_hop_mac.is_some());
    let p = got.single(&sourced).expect("a path");
    assert_eq!(
        (p.uplink, p.src),
        (lab.up2, Some(ip("10.1.0.1"))),
        "a fixed source stays the source"
    );

    lab.hv.ip(&format!("route del {E1}/32"));
    let got = lab.settle();
    assert_eq!(got.keys(), vec![key(E1), sourced], "{got:#?}");
    assert_eq!(got.single(&key(E1)), Err(PathProblem::NoRoute));

    lab.hv.ip(&format!("route add {E1}/32 via 10.1.0.2"));
    let got = lab.settle();
    assert_eq!(got.keys(), vec![key(E1), sourced], "{got:#?}");
    assert_eq!(uplink(&got.single(&key(E1))), Some(lab.up1));

    // Replacing a route with the same path: the key is re-resolved, nothing is sent.
    lab.hv.ip(&format!("route replace {E2}/32 via 10.1.0.2"));
    assert!(
        lab.settle().paths.is_empty(),
        "an identical replace changes nothing"
    );
    // An untracked key is not followed.
    lab.w.untrack(key(E2)).unwrap();
    lab.hv.ip(&format!("route replace {E2}/32 via 10.2.0.2"));
    assert!(lab.settle().paths.is_empty());
}

#[test]
fn policy_rules_and_second_table() {
    let lab = Lab::new("pr");
    lab.hv.ip("addr add 10.9.0.1/32 dev lo");
    lab.hv
        .ip(&format!("route add {E1}/32 via 10.2.0.2 table 100"));
    let marked = LookupKey {
        mark: 0x10,
        ..key(E1)
    };
    let sourced = LookupKey {
        src: Some(ip("10.9.0.1")),
        ..key(E1)
    };
    for k in [key(E1), marked, sourced] {
        assert_eq!(uplink(&lab.track(k)), Some(lab.up1));
    }

    lab.hv.ip("rule add fwmark 0x10 lookup 100 pref 100");
    let got = lab.settle();
    assert_eq!(got.keys(), vec![marked], "{got:#?}");
    assert_eq!(uplink(&got.single(&marked)), Some(lab.up2));
    let kernel = lab.hv.ip(&format!("route get {E1} mark 0x10"));
    assert!(kernel.contains("dev up2"), "{kernel}");

    lab.hv.ip("rule add from 10.9.0.1 lookup 100 pref 110");
    let got = lab.settle();
    assert_eq!(got.keys(), vec![sourced], "{got:#?}");
    let p = got.single(&sourced).expect("a path");
    assert_eq!(p.uplink, lab.up2);
    assert_eq!(
        p.src,
        Some(ip("10.9.0.1")),
        "the fixed local address stays the source"
    );
    assert_eq!(p.table, 100);
    let kernel = lab.hv.ip(&format!("route get {E1} from 10.9.0.1"));
    assert!(kernel.contains("dev up2"), "{kernel}");

    lab.hv.ip("rule del fwmark 0x10 lookup 100 pref 100");
    let got = lab.settle();
    assert_eq!(got.keys(), vec![marked], "{got:#?}");
    assert_eq!(uplink(&got.single(&marked)), Some(lab.up1));

    // A rule sending the mark to an unreachable rule: refused.
    lab.hv.ip("rule add fwmark 0x10 unreachable pref 90");
    let got = lab.settle();
    assert_eq!(got.keys(), vec![marked], "{got:#?}");
    assert_eq!(got.single(&marked), Err(PathProblem::Refused));
}

#[test]
fn ecmp_keys_keep_their_hashed_next_hop() {
    let lab = Lab::new("ec");
    lab.hv.ip(&format!(
        "route add {E3}/32 nexthop via 10.1.0.2 nexthop via 10.2.0.2"
    ));
    let keys: Vec<LookupKey> = (1..=16).map(|m| LookupKey { mark: m, ..key(E3) }).collect();
    let mirror = lab.w.mirror().unwrap();
    let Paths::Via { hops, .. } = mirror.resolve_paths(&key(E3)) else {
        panic!("no ECMP route");
    };
    assert_eq!(hops.len(), 2);
    let mut on_up2 = Vec::new();
    for k in &keys {
        let want = ecmp_pick(&hops, k).unwrap().ifindex;
        assert_eq!(uplink(&lab.track(*k)), Some(want));
        if want == lab.up2 {
            on_up2.push(*k);
        }
    }
    assert!(
        !on_up2.is_empty() && on_up2.len() < 16,
        "16 marks spread over both next hops"
    );
    let kernel = lab.hv.ip(&format!("route get {E3}"));
    assert!(
        kernel.contains("dev up1") || kernel.contains("dev up2"),
        "{kernel}"
    );

    // Dropping the second next hop moves exactly the keys that used it.
    lab.hv.ip(&format!("route replace {E3}/32 via 10.1.0.2"));
    let got = lab.settle();
    assert_eq!(got.keys(), on_up2, "{got:#?}");
    for k in &on_up2 {
        assert_eq!(uplink(&got.single(k)), Some(lab.up1));
    }
}

#[test]
fn neighbour_failed_then_reachable_is_probed_back() {
    let lab = Lab::new("ne");
    let p = lab.track(key(E1)).expect("a path");
    assert!(p.next_hop_mac.is_some());

    // The gateway stops answering ARP and its entry goes away: unresolved, probed by
    // fibwatch, and FAILED after the kernel's solicitations time out.
    lab.rm.ip("link set r1 arp off");
    lab.hv.ip("neigh flush dev up1");
    lab.until(|g| {
        g.paths.get(&key(E1)).is_some_and(|v| {
            v.iter()
                .any(|f| f.is_ok_and(|p| p.next_hop_mac.is_none() && p.neighbour == ip("10.1.0.2")))
        })
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = lab.w.mirror().unwrap();
        let st = m.neighbour(lab.up1, ip("10.1.0.2")).map(|n| n.state);
        if st == Some(fibwatch::NudState::FAILED) {
            break;
        }
        assert!(Instant::now() < deadline, "neighbour never FAILED: {st:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Answering again: fibwatch's periodic probe resolves it without any traffic.
    lab.rm.ip("link set r1 arp on");
    lab.until(|g| {
        g.paths
            .get(&key(E1))
            .and_then(|v| v.last())
            .is_some_and(|f| f.is_ok_and(|p| p.next_hop_mac.is_some()))
    });
}

#[test]
fn links_and_mtu_are_reported() {
    let lab = Lab::new("ud");
    for k in [key(E1), key(E2)] {
        let _ = lab.track(k);
    }

    // Carrier loss on up1 (peer down): the routes stay; the link says so.
    lab.rm.ip("link set r1 down");
    // Carrier events go through the kernel's linkwatch, up to a second late: wait.
    lab.until(|g| {
        g.links
            .iter()
            .any(|e| matches!(e, Event::Link(l) if l.index == lab.up1 && !l.oper_up))
    });
    lab.rm.ip("link set r1 up");
    lab.until(|g| {
        g.links
            .iter()
            .any(|e| matches!(e, Event::Link(l) if l.index == lab.up1 && l.is_up()))
    });
    let _ = lab.settle();

    // Administrative down: the kernel flushes the routes through up1 silently.
    lab.hv.ip("link set up1 down");
    let got = lab.settle();
    for k in [key(E1), key(E2)] {
        assert_eq!(got.single(&k), Err(PathProblem::NoRoute), "{got:#?}");
    }
    lab.hv.ip("link set up1 up");
    lab.hv.ip(&format!("route add {E1}/32 via 10.1.0.2"));
    lab.hv.ip(&format!("route add {E2}/32 via 10.1.0.2"));
    lab.until(|g| {
        [key(E1), key(E2)].iter().all(|k| {
            g.paths
                .get(k)
                .and_then(|v| v.last())
                .is_some_and(|f| uplink(f) == Some(lab.up1))
        })
    });
    let _ = lab.settle();

    // The uplink's MTU is the path MTU: a link event and a path update each.
    lab.hv.ip("link set up1 mtu 1450");
    let got = lab.settle();
    assert!(
        got.links
            .iter()
            .any(|e| matches!(e, Event::Link(l) if l.index == lab.up1 && l.mtu == 1450)),
        "{got:#?}"
    );
    for k in [key(E1), key(E2)] {
        assert_eq!(got.single(&k).map(|p| p.mtu), Ok(1450), "{got:#?}");
    }
    lab.hv.ip("link set up1 mtu 1500");
    let got = lab.settle();
    assert_eq!(got.keys(), vec![key(E1), key(E2)], "{got:#?}");

    // A route MTU wins over the link's.
    lab.hv
        .ip(&format!("route replace {E2}/32 via 10.1.0.2 mtu 1400"));
    let got = lab.settle();
    assert_eq!(got.keys(), vec![key(E2)], "{got:#?}");
    assert_eq!(got.single(&key(E2)).map(|p| p.mtu), Ok(1400));

    // A link deleted: gone.
    lab.hv.ip("link del up2");
    let got = lab.until(|g| {
        g.links
            .iter()
            .any(|e| matches!(e, Event::LinkGone(i) if *i == lab.up2))
    });
    assert!(!got.links.is_empty());
}

/// Parses `ip route get` output: (dev, via, src).
fn kernel_route(out: &str) -> (Option<String>, Option<String>, Option<String>) {
    let t: Vec<&str> = out.split_whitespace().collect();
    let after = |k: &str| {
        t.iter()
            .position(|x| *x == k)
            .and_then(|i| t.get(i + 1))
            .map(|s| s.to_string())
    };
    (after("dev"), after("via"), after("src"))
}

/// A small deterministic PRNG (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One `ip -batch` line: a route type goes before the prefix, next hops after.
fn route_line(what: &str, net: &str, table: &str) -> String {
    match what {
        "unreachable" | "blackhole" | "throw" => format!("route replace {what} {net}{table}\n"),
        _ => format!("route replace {net}{table} {what}\n"),
    }
}

#[test]
fn resolution_agrees_with_ip_route_get() {
    let lab = Lab::new("ag");
    let mut rng = Rng(0x5eed_f1b0 ^ u64::from(std::process::id()));
    let mut batch = String::new();
    lab.hv.ip("route add 172.16.0.0/12 via 10.1.0.2");
    lab.hv.ip("route add fd10::/16 via fd00:1::2");
    for _ in 0..300 {
        let len = 13 + rng.below(20) as u8;
        let addr = 0xac10_0000u32 | (rng.next() as u32 & 0x000f_ffff);
        let net = ipnet::Ipv4Net::new(addr.into(), len).unwrap().trunc();
        let table = if rng.below(4) == 0 { " table 100" } else { "" };
        let what = match rng.below(8) {
            0 => "unreachable".to_string(),
            1 => "blackhole".to_string(),
            2 => "dev up2".to_string(),
            3 => "via 10.2.0.2 src 10.1.0.1".to_string(),
            4 => "via 10.1.0.2 mtu 1300".to_string(),
            5 => "nexthop via 10.1.0.2 nexthop via 10.2.0.2".to_string(),
            6 => "throw".to_string(),
            _ => "via 10.2.0.2".to_string(),
        };
        let what = if what == "throw" && table.is_empty() {
            "via 10.1.0.2".into()
        } else {
            what
        };
        batch.push_str(&route_line(&what, &net.to_string(), table));
    }
    for _ in 0..100 {
        let len = 17 + rng.below(100) as u8;
        let addr =
            (0xfd10u128 << 112) | (u128::from(rng.next()) << 48 | u128::from(rng.next() as u16));
        let net = ipnet::Ipv6Net::new(addr.into(), len.min(128))
            .unwrap()
            .trunc();
        let what = match rng.below(3) {
            0 => "via fd00:2::2",
            1 => "unreachable",
            _ => "dev up1",
        };
        batch.push_str(&route_line(what, &net.to_string(), ""));
    }
    batch.push_str("rule add to 172.20.0.0/14 lookup 100 pref 100\n");
    let file = std::env::temp_dir().join(format!("fw-agree-{}.batch", std::process::id()));
    std::fs::write(&file, batch).unwrap();
    lab.hv.ip(&format!("-batch {}", file.display()));
    let _ = std::fs::remove_file(&file);
    std::thread::sleep(Duration::from_millis(300));
    let mirror = lab.w.mirror().unwrap();
    let names: HashMap<IfIndex, String> =
        mirror.links().map(|l| (l.index, l.name.clone())).collect();

    let mut checked = 0;
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut mismatches = Vec::new();
    for i in 0..400 {
        let ep: IpAddr = if i < 300 {
            std::net::Ipv4Addr::from(0xac10_0000u32 | (rng.next() as u32 & 0x000f_ffff)).into()
        } else {
            std::net::Ipv6Addr::from((0xfd10u128 << 112) | u128::from(rng.next()) << 48).into()
        };
        let kernel = lab.hv.try_ip(&format!("route get {ep}"));
        let ours = mirror.resolve_paths(&LookupKey::to(ep));
        checked += 1;
        *tally
            .entry(match &ours {
                Paths::Via { hops, table, .. } => {
                    format!("via table {table}, {} hop(s)", hops.len())
                }
                Paths::None(why) => format!("{why:?}"),
                _ => "other".to_string(),
            })
            .or_default() += 1;
        match (&kernel, &ours) {
            (Err(_), Paths::None(_)) => {}
            (Ok(out), Paths::Via { hops, .. }) => {
                let (dev, via, src) = kernel_route(out);
                let ok = hops.iter().any(|h| {
                    dev.as_deref() == names.get(&h.ifindex).map(String::as_str)
                        && via == h.gateway.map(|g| g.to_string())
                        && src == h.src.map(|s| s.to_string())
                });
                if !ok {
                    mismatches.push(format!("{ep}: kernel {out:?} ours {hops:?}"));
                }
            }
            (Ok(out), Paths::None(_))
                if out.contains("unreachable") || out.contains("blackhole") => {}
            _ => mismatches.push(format!("{ep}: kernel {kernel:?} ours {ours:?}")),
        }
    }
    eprintln!("checked {checked} endpoints against `ip route get`: {tally:?}");
    assert!(
        mismatches.is_empty(),
        "{} of {checked} differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn storm_of_route_changes_then_mirror_equals_a_fresh_dump() {
    let id = std::process::id() % 100_000;
    let hv = Netns::named(&format!("fwst{id}")).expect("netns");
    hv.ip("link add st0 type veth peer name st1");
    hv.ip("link set st1 up");
    hv.ip("addr add 10.50.0.1/16 dev st0");
    hv.ip("link set st0 up");
    let cfg = Config {
        coalesce: Duration::from_millis(10),
        netns: Some(hv.path()),
        rcvbuf: 4096, // tiny on purpose: the storm must overrun it
        ..Config::default()
    };
    let w = Watcher::spawn(cfg).unwrap();
    // A few tracked keys so that path updates flow during the storm too.
    for i in 0..50u64 {
        let ep = format!("10.60.{}.{}", i / 10, i % 10 + 1);
        let _ = w.track(key(&ep)).unwrap();
    }
    let mut batch = String::with_capacity(4 << 20);
    let mut rng = Rng(42);
    for n in 0..100_000u32 {
        // 5,000 prefixes keep the kernel's own work (not fibwatch's) to ~10 s.
        let p = rng.below(5_000) as u32;
        let net = format!("10.{}.{}.0/24", 60 + p / 256, p % 256);
        let gw = format!("10.50.{}.{}", rng.below(200), 2 + rng.below(200));
        match n % 4 {
            3 => batch.push_str(&format!("route del {net}\n")),
            _ => batch.push_str(&format!("route replace {net} via {gw}\n")),
        }
    }
    let file = std::env::temp_dir().join(format!("fw-storm-{id}.batch"));
    std::fs::write(&file, batch).unwrap();
    // -force: deleting an absent route is an error that must not stop the batch.
    let _ = hv.try_ip(&format!("-force -batch {}", file.display()));
    let _ = std::fs::remove_file(&file);

    let deadline = Instant::now() + Duration::from_secs(60);
    let drain = loop {
        while w.events().try_recv().is_ok() {}
        let mirror = w.mirror().unwrap();
        let fresh = in_netns(&hv.path(), dump_mirror).unwrap();
        let diff = mirror.differences(&fresh, 20);
        if diff.is_empty() {
            break Ok(mirror.route_count());
        }
        if Instant::now() > deadline {
            break Err(diff);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stats = w.stats().unwrap();
    eprintln!("storm: {stats:?}");
    match drain {
        Ok(routes) => eprintln!("mirror equals a fresh dump ({routes} routes)"),
        Err(diff) => panic!("mirror differs from a fresh dump:\n{}", diff.join("\n")),
    }
    assert!(
        stats.overruns > 0,
        "the storm was meant to overrun the socket: {stats:?}"
    );
}

/// IPsec policies are path facts: a policy that selects a key's outer packets protects
/// its path (here with no SA: the host kernel has no esp4, so states cannot be added;
/// the VM suite covers SAs), a change re-reports exactly the keys whose protection
/// changed, a route change that moves the source out of the selector unprotects it, and
/// a bypass or a policy for TCP protects nothing.
#[test]
fn ipsec_policies_protect_exactly_the_paths_they_select() {
    let lab = Lab::new("xf");
    for k in [key(E1), key(E2)] {
        assert_eq!(lab.track(k).expect("a path").ipsec, None);
    }
    let policy = |what: &str| {
        lab.hv.ip(&format!(
            "xfrm policy {what} src 10.1.0.1/32 dst {E1}/32 proto udp dir out priority 12 \
                          tmpl src 10.1.0.1 dst {E1} proto esp reqid 7 mode transport"
        ))
    };
    policy("add");
    let got = lab.settle();
    assert_eq!(got.keys(), vec![key(E1)], "only E1 is selected: {got:#?}");
    let ipsec = got
        .single(&key(E1))
        .expect("a path")
        .ipsec
        .expect("protected");
    assert_eq!(
        (ipsec.blocks, ipsec.proto, ipsec.mode, ipsec.reqid),
        (false, 50, 0, 7)
    );
    assert_eq!(ipsec.sa, None, "no SA");
    let listed = lab.hv.ip("-s xfrm policy list dir out");
    assert!(
        listed.contains(&format!("index {}", ipsec.policy)),
        "{listed}"
    );
    assert_eq!(lab.w.mirror().unwrap().xfrm().policies.len(), 1);
    assert!(lab.w.stats().unwrap().xfrm_watched);

    // A bypass of higher priority for the same packets: unprotected again.
    lab.hv.ip(&format!(
        "xfrm policy add src 10.1.0.1/32 dst {E1}/32 proto udp dport 4789 dir out priority 1"
    ));
    let got = lab.settle();
    assert_eq!(
        got.single(&key(E1)).expect("a path").ipsec,
        None,
        "{got:#?}"
    );
    // A bypass for some source ports only does not unprotect the path.
    lab.hv.ip(&format!(
        "xfrm policy del src 10.1.0.1/32 dst {E1}/32 proto udp dport 4789 dir out"
    ));
    lab.hv.ip(&format!(
        "xfrm policy add src 10.1.0.1/32 dst {E1}/32 proto udp sport 5000 dir out priority 1"
    ));
    let got = lab.settle();
    assert!(
        got.single(&key(E1)).expect("a path").ipsec.is_some(),
        "{got:#?}"
    );

    // The route moves E1 to up2 (source 10.2.0.1): the policy no longer selects it.
    lab.hv.ip(&format!("route replace {E1}/32 via 10.2.0.2"));
    let got = lab.settle();
    let p = got.single(&key(E1)).expect("a path");
    assert_eq!((p.uplink, p.ipsec), (lab.up2, None));
    lab.hv.ip(&format!("route replace {E1}/32 via 10.1.0.2"));
    assert!(
        lab.settle()
            .single(&key(E1))
            .expect("a path")
            .ipsec
            .is_some()
    );

    // An inbound policy from E1: reported as such (the outbound ones were not).
    assert!(got.inbound.is_empty(), "{got:#?}");
    lab.hv.ip(&format!(
        "xfrm policy add src {E1}/32 dst 10.1.0.1/32 dir in tmpl src {E1} dst 10.1.0.1 proto esp mode transport"
    ));
    let got = lab.until(|g| !g.inbound.is_empty());
    let inb = got.inbound.last().unwrap();
    assert!(inb.protects(ip(E1), ip("10.1.0.1"), 4789, 0));
    assert!(!inb.protects(ip(E2), ip("10.1.0.1"), 4789, 0));
    assert!(got.paths.is_empty(), "no path changed: {got:#?}");

    // A block policy for E2 of any protocol.
    lab.hv
        .ip(&format!("xfrm policy add dst {E2}/32 dir out action block"));
    let got = lab.settle();
    assert_eq!(got.keys(), vec![key(E2)], "{got:#?}");
    assert!(
        got.single(&key(E2))
            .expect("a path")
            .ipsec
            .is_some_and(|i| i.blocks)
    );

    // Flushing the policies unprotects both, in one burst.
    lab.hv.ip("xfrm policy flush");
    let got = lab.settle();
    assert_eq!(got.keys(), vec![key(E1), key(E2)], "{got:#?}");
    for k in [key(E1), key(E2)] {
        assert_eq!(got.single(&k).expect("a path").ipsec, None);
    }
    // A policy for TCP only selects no tunnel packet.
    lab.hv.ip(&format!(
        "xfrm policy add dst {E1}/32 proto tcp dir out tmpl proto esp mode transport"
    ));
    assert!(lab.settle().paths.is_empty());
}
