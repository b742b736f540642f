//! fibwatch against the host kernel, inside network namespaces each test creates (and
//! removes on drop, even when it fails). Needs root. Traffic stays inside the namespaces.
//!
//! Topology (`Lab::new`): namespace `hv` (the hypervisor, where fibwatch runs) has two
//! uplinks, veths `up1` 10.1.0.1/24 and `up2` 10.2.0.1/24, to namespace `rm` (`r1`
//! 10.1.0.2, `r2` 10.2.0.2), which holds the tunnel endpoints on its loopback
//! (192.0.2.1-3/32).

use fibwatch::{
    Config, Decision, DecisionKind, FlowId, FlowInfo, IfIndex, LookupKey, Paths, Role,
    SoftwareReason, StaticSwitchIds, SwitchId, Watcher, dump_mirror, ecmp_pick, in_netns,
};
use flowd::netns::Netns;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

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
        // Resolve both gateways now so that first placements are offloads.
        for gw in ["10.1.0.2", "10.2.0.2"] {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !hv.try_exec(&format!("ping -c1 -W1 {gw}")).0 {
                assert!(Instant::now() < deadline, "{gw} unreachable");
            }
        }
        let up1 = hv.ifindex("up1").expect("up1");
        let up2 = hv.ifindex("up2").expect("up2");
        let ids = StaticSwitchIds(HashMap::from([
            ("up1".to_string(), SwitchId(vec![1])),
            ("up2".to_string(), SwitchId(vec![1])),
        ]));
        let cfg = Config {
            coalesce: Duration::from_millis(10),
            netns: Some(hv.path()),
            probe_interval: Duration::from_millis(500),
            ..Config::default()
        };
        let w = Watcher::spawn(tune(cfg), Box::new(ids)).expect("spawn watcher");
        Lab {
            w,
            hv,
            rm,
            up1,
            up2,
        }
    }

    fn register(&self, id: u64, ep: &str, role: Role) {
        self.w.register(flow(id, ep, role)).unwrap();
    }

    /// Decisions until none came for `quiet` (at most 10 s), by flow.
    fn settle(&self) -> BTreeMap<u64, Vec<DecisionKind>> {
        settle_for(&self.w, Duration::from_millis(400))
    }

    /// Decisions until `done` holds for what was collected (or 15 s).
    fn until(&self, done: impl Fn(&[Decision]) -> bool) -> Vec<Decision> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while !done(&got) && Instant::now() < deadline {
            if let Ok(d) = self.w.decisions().recv_timeout(Duration::from_millis(50)) {
                got.push(d);
            }
        }
        assert!(done(&got), "condition not reached; got {got:#?}");
        got
    }
}

fn settle_for(w: &Watcher, quiet: Duration) -> BTreeMap<u64, Vec<DecisionKind>> {
    let mut out: BTreeMap<u64, Vec<DecisionKind>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match w.decisions().recv_timeout(quiet) {
            Ok(d) => out.entry(d.flow.0).or_default().push(d.kind),
            Err(_) => break,
        }
    }
    out
}

fn flow(id: u64, ep: &str, role: Role) -> FlowInfo {
    FlowInfo {
        id: FlowId(id),
        endpoint: ip(ep),
        role,
        vni: id as u32,
        local: None,
        mark: 0,
        rep_mtu: 1450,
        switch_id: Some(SwitchId(vec![1])),
    }
}

fn offloaded_on(k: &DecisionKind, dev: IfIndex) -> bool {
    matches!(k, DecisionKind::Offload { to } | DecisionKind::BackToOffload { to }
        if to.ifindex == dev)
}

fn moved(k: &DecisionKind, from: IfIndex, to_dev: IfIndex) -> bool {
    matches!(k, DecisionKind::Move { from: f, to } if f.ifindex == from && to.ifindex == to_dev)
}

fn to_software(k: &DecisionKind, want: fn(&SoftwareReason) -> bool) -> bool {
    matches!(k, DecisionKind::ToSoftware { reason, .. } if want(reason))
}

fn single(got: &BTreeMap<u64, Vec<DecisionKind>>, id: u64) -> &DecisionKind {
    let v = got
        .get(&id)
        .unwrap_or_else(|| panic!("no decision for flow {id}: {got:#?}"));
    assert_eq!(v.len(), 1, "flow {id}: {v:#?}");
    &v[0]
}

/// A burst ends when the changes stop (`settle`), not a whole `coalesce` window later;
/// changes within one burst are one decision round, so a flap back produces none.
#[test]
fn a_burst_is_decided_once_it_settles() {
    let lab = Lab::with("st", |c| Config {
        coalesce: Duration::from_secs(60),
        settle: Duration::from_millis(300),
        ..c
    });
    lab.register(1, E1, Role::Encap);
    assert!(offloaded_on(single(&lab.settle(), 1), lab.up1));

    // Away and back in one `ip -batch`: well within 300 ms of each other.
    let path = lab.hv.path();
    let batch = format!(
        "ip netns exec {} ip -batch - <<'EOF'\nroute replace {E1}/32 via 10.2.0.2\n\
         route replace {E1}/32 via 10.1.0.2\nEOF",
        lab.hv.name
    );
    flowd::netns::sh(&batch);
    let got = settle_for(&lab.w, Duration::from_millis(1500));
    assert!(got.is_empty(), "a flap within one burst: {got:#?}");

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
    let got = lab.until(|d| !d.is_empty());
    assert!(moved(&got[0].kind, lab.up1, lab.up2), "{got:#?}");

    // Timings changed while running. Both bounds at 60 s: a change waits.
    lab.w
        .set_timing(Duration::from_secs(60), Duration::from_secs(60))
        .unwrap();
    lab.hv.ip(&format!("route replace {E1}/32 via 10.1.0.2"));
    let got = settle_for(&lab.w, Duration::from_millis(1000));
    assert!(got.is_empty(), "held for 60 s: {got:#?}");
    // The other bound: a burst that does not settle is decided `coalesce` after its
    // first change, here at once.
    lab.w
        .set_timing(Duration::from_millis(100), Duration::from_secs(60))
        .unwrap();
    let got = lab.until(|d| !d.is_empty());
    assert!(moved(&got[0].kind, lab.up2, lab.up1), "{got:#?}");
}

#[test]
fn route_replace_moves_exactly_that_endpoints_flows() {
    let lab = Lab::new("rr");
    lab.register(1, E1, Role::Encap);
    lab.register(2, E1, Role::Encap);
    lab.register(3, E1, Role::Decap);
    lab.register(4, E2, Role::Encap);
    lab.register(5, E2, Role::Decap);
    let got = lab.settle();
    for id in 1..=5 {
        assert!(offloaded_on(single(&got, id), lab.up1), "{got:#?}");
    }

    lab.hv.ip(&format!("route replace {E1}/32 via 10.2.0.2"));
    let got = lab.settle();
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 3],
        "{got:#?}"
    );
    for id in 1..=3 {
        let k = single(&got, id);
        assert!(moved(k, lab.up1, lab.up2), "{k:#?}");
        let DecisionKind::Move { to, .. } = k else {
            unreachable!()
        };
        assert_eq!(to.src, Some(ip("10.2.0.1")));
        if id != 3 {
            assert!(to.next_hop_mac.is_some());
        }
    }

    lab.hv.ip(&format!("route del {E1}/32"));
    let got = lab.settle();
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 3],
        "{got:#?}"
    );
    for id in 1..=3 {
        assert!(
            to_software(single(&got, id), |r| *r == SoftwareReason::NoRoute),
            "{got:#?}"
        );
    }

    lab.hv.ip(&format!("route add {E1}/32 via 10.1.0.2"));
    let got = lab.settle();
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 3],
        "{got:#?}"
    );
    for id in 1..=3 {
        assert!(offloaded_on(single(&got, id), lab.up1), "{got:#?}");
    }

    // Replacing a route with the same path: the endpoint is re-resolved, nothing moves.
    lab.hv.ip(&format!("route replace {E2}/32 via 10.1.0.2"));
    assert!(
        lab.settle().is_empty(),
        "an identical replace moves nothing"
    );
}

#[test]
fn policy_rules_and_second_table() {
    let lab = Lab::new("pr");
    lab.hv.ip("addr add 10.9.0.1/32 dev lo");
    lab.hv
        .ip(&format!("route add {E1}/32 via 10.2.0.2 table 100"));
    let marked = FlowInfo {
        mark: 0x10,
        ..flow(2, E1, Role::Encap)
    };
    let sourced = FlowInfo {
        local: Some(ip("10.9.0.1")),
        ..flow(3, E1, Role::Encap)
    };
    lab.register(1, E1, Role::Encap);
    lab.w.register(marked).unwrap();
    lab.w.register(sourced).unwrap();
    let got = lab.settle();
    for id in 1..=3 {
        assert!(offloaded_on(single(&got, id), lab.up1), "{got:#?}");
    }

    lab.hv.ip("rule add fwmark 0x10 lookup 100 pref 100");
    let got = lab.settle();
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![2], "{got:#?}");
    assert!(moved(single(&got, 2), lab.up1, lab.up2));
    let kernel = lab.hv.ip(&format!("route get {E1} mark 0x10"));
    assert!(kernel.contains("dev up2"), "{kernel}");

    lab.hv.ip("rule add from 10.9.0.1 lookup 100 pref 110");
    let got = lab.settle();
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![3], "{got:#?}");
    let k = single(&got, 3);
    assert!(moved(k, lab.up1, lab.up2), "{k:#?}");
    let DecisionKind::Move { to, .. } = k else {
        unreachable!()
    };
    assert_eq!(
        to.src,
        Some(ip("10.9.0.1")),
        "the fixed local address stays the source"
    );
    assert_eq!(to.table, 100);

    lab.hv.ip("rule del fwmark 0x10 lookup 100 pref 100");
    let got = lab.settle();
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![2], "{got:#?}");
    assert!(moved(single(&got, 2), lab.up2, lab.up1));

    // A rule sending the mark to an unreachable rule: no route.
    lab.hv.ip("rule add fwmark 0x10 unreachable pref 90");
    let got = lab.settle();
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![2], "{got:#?}");
    assert!(to_software(single(&got, 2), |r| *r == SoftwareReason::NoRoute));
}

#[test]
fn ecmp_flows_keep_their_hashed_next_hop() {
    let lab = Lab::new("ec");
    lab.hv.ip(&format!(
        "route add {E3}/32 nexthop via 10.1.0.2 nexthop via 10.2.0.2"
    ));
    for id in 1..=16 {
        lab.register(id, E3, Role::Encap);
    }
    let got = lab.settle();
    let mirror = lab.w.mirror().unwrap();
    let Paths::Via { hops, .. } = mirror.resolve_paths(&LookupKey::to(ip(E3))) else {
        panic!("no ECMP route");
    };
    assert_eq!(hops.len(), 2);
    let mut on_up2 = Vec::new();
    for id in 1..=16 {
        let want = ecmp_pick(&hops, &flow(id, E3, Role::Encap))
            .unwrap()
            .ifindex;
        assert!(offloaded_on(single(&got, id), want), "{got:#?}");
        if want == lab.up2 {
            on_up2.push(id);
        }
    }
    assert!(
        !on_up2.is_empty() && on_up2.len() < 16,
        "16 VNIs spread over both next hops"
    );
    let kernel = lab.hv.ip(&format!("route get {E3}"));
    assert!(
        kernel.contains("dev up1") || kernel.contains("dev up2"),
        "{kernel}"
    );

    // Dropping the second next hop moves exactly the flows that used it.
    lab.hv.ip(&format!("route replace {E3}/32 via 10.1.0.2"));
    let got = lab.settle();
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), on_up2, "{got:#?}");
    for id in &on_up2 {
        assert!(moved(single(&got, *id), lab.up2, lab.up1));
    }
}

#[test]
fn neighbour_failed_then_reachable_is_probed_back() {
    let lab = Lab::new("ne");
    lab.register(1, E1, Role::Encap);
    lab.register(2, E1, Role::Decap);
    let got = lab.settle();
    assert!(offloaded_on(single(&got, 1), lab.up1));
    assert!(offloaded_on(single(&got, 2), lab.up1));

    // The gateway stops answering ARP and its entry goes away: unresolved, probed by
    // fibwatch, and FAILED after the kernel's solicitations time out.
    lab.rm.ip("link set r1 arp off");
    lab.hv.ip("neigh flush dev up1");
    lab.until(|d| {
        d.iter().any(|d| {
            d.flow == FlowId(1)
                && to_software(&d.kind, |r| {
                    matches!(r, SoftwareReason::NextHopUnresolved { neighbour }
                        if *neighbour == ip("10.1.0.2"))
                })
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
    let got = lab.until(|d| {
        d.iter()
            .any(|d| d.flow == FlowId(1) && offloaded_on(&d.kind, lab.up1))
    });
    assert!(
        got.iter().all(|d| d.flow == FlowId(1)),
        "decap flow untouched: {got:#?}"
    );
}

#[test]
fn uplink_down_and_mtu() {
    let lab = Lab::new("ud");
    lab.register(1, E1, Role::Encap);
    lab.register(2, E1, Role::Decap);
    lab.register(3, E2, Role::Encap);
    let got = lab.settle();
    assert_eq!(got.len(), 3);

    // Carrier loss on up1 (peer down): the routes stay, the uplink is down.
    lab.rm.ip("link set r1 down");
    // Carrier events go through the kernel's linkwatch, up to a second late: wait.
    let got = lab.until(|d| (1..=3).all(|id| d.iter().any(|x| x.flow == FlowId(id))));
    assert_eq!(got.len(), 3, "{got:#?}");
    for d in &got {
        assert!(
            to_software(&d.kind, |r| *r == SoftwareReason::UplinkDown),
            "{got:#?}"
        );
    }
    lab.rm.ip("link set r1 up");
    // Carrier loss flushed the neighbour: encap flows may pass through "unresolved"
    // until fibwatch's probe resolves it; all end offloaded on up1.
    lab.until(|d| {
        (1..=3).all(|id| {
            d.iter()
                .rev()
                .find(|d| d.flow == FlowId(id))
                .is_some_and(|d| offloaded_on(&d.kind, lab.up1))
        })
    });
    let _ = lab.settle();

    // Administrative down: the kernel flushes the routes through up1 silently.
    lab.hv.ip("link set up1 down");
    let got = lab.settle();
    for id in 1..=3 {
        assert!(
            to_software(single(&got, id), |r| *r == SoftwareReason::NoRoute),
            "{got:#?}"
        );
    }
    lab.hv.ip("link set up1 up");
    lab.hv.ip(&format!("route add {E1}/32 via 10.1.0.2"));
    lab.hv.ip(&format!("route add {E2}/32 via 10.1.0.2"));
    lab.until(|d| {
        (1..=3).all(|id| {
            d.iter()
                .rev()
                .find(|d| d.flow == FlowId(id))
                .is_some_and(|d| offloaded_on(&d.kind, lab.up1))
        })
    });
    let _ = lab.settle();

    // MTU: representor 1450 + 50 = 1500 fits a 1500 uplink, not a 1450 one.
    lab.hv.ip("link set up1 mtu 1450");
    let got = lab.settle();
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        vec![1, 3],
        "decap unaffected: {got:#?}"
    );
    for id in [1, 3] {
        let k = single(&got, id);
        assert!(
            to_software(k, |r| *r
                == SoftwareReason::MtuTooSmall {
                    needed: 1500,
                    overhead: 50,
                    path_mtu: 1450
                }),
            "{k:#?}"
        );
    }
    lab.hv.ip("link set up1 mtu 1500");
    let got = lab.settle();
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        vec![1, 3],
        "{got:#?}"
    );

    // A route MTU wins over the link's.
    lab.hv
        .ip(&format!("route replace {E2}/32 via 10.1.0.2 mtu 1400"));
    let got = lab.settle();
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![3], "{got:#?}");
    assert!(to_software(single(&got, 3), |r| matches!(
        r,
        SoftwareReason::MtuTooSmall { path_mtu: 1400, .. }
    )));
}

#[test]
fn switch_id_mismatch_stays_in_software() {
    let lab = Lab::new("sw");
    let other = FlowInfo {
        switch_id: Some(SwitchId(vec![9])),
        ..flow(1, E1, Role::Encap)
    };
    lab.w.register(other).unwrap();
    let got = lab.settle();
    assert!(to_software(single(&got, 1), |r| *r == SoftwareReason::SwitchMismatch));
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
    let w = Watcher::spawn(cfg, Box::new(StaticSwitchIds::default())).unwrap();
    // A few flows so that decisions flow during the storm too.
    for i in 0..50u64 {
        let ep = format!("10.60.{}.{}", i / 10, i % 10 + 1);
        w.register(FlowInfo {
            switch_id: None,
            ..flow(i, &ep, Role::Encap)
        })
        .unwrap();
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
        while w.decisions().try_recv().is_ok() {}
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
