//! The configuration's tests: parsing, errors at their lines, bounds, diffs.

use super::*;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// The errors of a bad file as `LINE:COL: message`.
fn errors_of(name: &str) -> Vec<String> {
    let e = Config::load(&data(name)).expect_err(name);
    let prefix = format!("{}:", data(name).display());
    e.to_string()
        .lines()
        .map(|l| l.strip_prefix(&prefix).unwrap_or(l).to_string())
        .collect()
}

#[test]
fn good_lab() {
    let c = Config::load(&data("good_lab.toml")).unwrap();
    assert_eq!(c.datapath.flow_limit, 10000);
    assert_eq!(c.datapath.max_idle_ms, 5000);
    assert_eq!(c.datapath.upcall_queue, 4096);
    assert_eq!(c.datapath.mac_table_size, 65_536);
    assert!(
        Config::from_str("[datapath]\nmac_table_size = 1024\n")
            .is_ok_and(|c| c.datapath.mac_table_size == 1024)
    );
    assert_eq!(c.offload.policy, OffloadPolicy::SkipHw);
    assert_eq!(c.metrics.unwrap().listen, "127.0.0.1:9369".parse().unwrap());
    assert_eq!(c.control.socket, PathBuf::from("/tmp/flowd-lab/flowd.sock"));
    let ids: Vec<(&str, u32, bool)> = c
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.id.0, p.id_explicit))
        .collect();
    assert_eq!(
        ids,
        [
            ("rep0", 1, false),
            ("rep1", 2, false),
            ("up0", 10, true),
            ("up1", 11, true),
            ("vxlan_sys_4789", 100, true)
        ]
    );
    let rep0 = c.port("rep0").unwrap();
    assert_eq!(rep0.switch_id.as_deref(), Some("00aabbccddee"));
    assert_eq!(
        c.port("up0").unwrap().switch_id.as_deref(),
        Some("00aabbccddee")
    );
    assert_eq!(c.port("rep1").unwrap().mtu, Some(1450));
    assert_eq!(c.tunnel_port().unwrap().id, PortId(100));
    let a = &c.networks[0];
    assert_eq!(a.segment, Segment::Vni(100));
    assert_eq!(a.local_vtep, Some("192.0.2.1".parse().unwrap()));
    assert_eq!(a.static_macs.len(), 2);
    assert_eq!(a.static_macs[1].location, MacLocation::Port("rep0".into()));
    assert_eq!(c.networks[2].segment, Segment::Vlan(30));
    assert_eq!(c.rules.len(), 3);
    assert_eq!(c.rules[0].actions, RuleActionsConfig::Normal);
    assert!(matches!(&c.rules[1].actions, RuleActionsConfig::Datapath(a) if a.is_drop()));
    // Output to the tunnel port (100) comes after its set(tunnel): the configuration's
    // check refuses a bare `100` (see daemon::build's tests).
    assert_eq!(
        c.rules[2].actions.to_string(),
        "set(tunnel(tun_id=0x64,dst=198.51.100.2,tos=0x0,ttl=64,tp_dst=4789,flags(key|df))),100"
    );
    assert_eq!(
        c.rules[0].matches.to_string(),
        "in_port(10),eth_type(0x0806)"
    );
}

#[test]
fn defaults_and_packaging_example() {
    let c = Config::load(&data("good_minimal.toml")).unwrap();
    assert_eq!(c.datapath, DatapathConfig::default());
    assert_eq!(c.datapath.flow_limit, 200_000);
    assert_eq!(c.offload.policy, OffloadPolicy::None);
    assert_eq!(c.metrics, None);
    assert_eq!(c.control.socket, PathBuf::from(DEFAULT_CONTROL_SOCKET));
    assert_eq!(c.discovery.unwrap().pf, "enp3s0f0");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/flowd.toml");
    Config::load(&example).unwrap_or_else(|e| panic!("{e}"));
    assert!(Config::from_str("").is_ok());
}

#[test]
fn every_error_with_its_line() {
    assert_eq!(
        errors_of("bad_many.toml"),
        [
            "3:1: unknown field `flow_limt`, expected one of `flow_limit`, `max_idle_ms`, `upcall_queue`, `handler_threads`, `batch`, `mac_table_size`, `ring_kib`, `threads`",
            "6:10: unknown variant `sometimes`, expected one of `none`, `skip_sw`, `skip_hw`, `off`",
            "9:10: bad metrics listen address `localhost` (expected IP:PORT, e.g. 127.0.0.1:9369)",
            "17:8: duplicate port name `rep0` (first on line 12)",
            "19:6: duplicate port id 1 (first on line 14)",
            "25:1: unknown field `colour`, expected one of `name`, `role`, `id`, `vf`, `switch_id`, `mtu`, `ring_kib`",
            "29:7: network `a` has a vni but no port has role = \"tunnel\"",
            "30:12: member `up0` is not a declared port (declare it in a [[port]] with role = \"representor\", or use [discovery])",
            "30:19: member `nosuch` is not a declared port (declare it in a [[port]] with role = \"representor\", or use [discovery])",
            "31:14: bad IP address `192.0.2.300` for local_vtep",
            "33:24: bad MAC address `02:00:00:00:00:zz` (expected xx:xx:xx:xx:xx:xx)",
            "38:8: network `b` has both `vni` and `vlan`; give one",
            "42:8: network `c` has neither `vni` nor `vlan`; give one",
            "48:9: bad rule match `in_port(1),bogus(3)`: unknown field `bogus`",
            "49:11: bad rule actions `output(x)`: bad value for `output`: `x`",
            "51:2: unknown section `wat`, expected one of datapath, offload, metrics, control, discovery, evpn, port, network, rule",
        ]
    );
}

/// The errors of `text` as `LINE:COL: message`.
fn errors_in(text: &str) -> Vec<String> {
    Config::from_str(text)
        .expect_err(text)
        .to_string()
        .lines()
        .map(|l| l.strip_prefix("<config>:").unwrap_or(l).to_string())
        .collect()
}

#[test]
fn hostile_values_are_refused_on_their_line() {
    let ports = "[[port]]\nname = \"rep0\"\nrole = \"representor\"\n[[port]]\nname = \"vx\"\nrole = \"tunnel\"\n";
    let e = errors_in(&format!(
        "{ports}[[network]]\nname = \"a\"\nvni = 1\nmembers = [\"rep0\"]\n[[network]]\nname = \"b\"\nvni = 2\nmembers = [\"rep0\"]\n"
    ));
    assert_eq!(
        e,
        [
            "14:12: representor `rep0` is already a member of network `a` (line 10): a representor belongs to one network"
        ]
    );
    let e = errors_in(&format!(
        "{ports}[[network]]\nname = \"a\"\nvni = 1\nremote_vteps = [\"0.0.0.0\", \"::\", \"255.255.255.255\", \"239.1.1.1\", \"::ffff:10.0.0.1\", \"10.0.0.2\"]\n"
    ));
    assert_eq!(e.len(), 5, "{e:?}");
    assert!(
        e[0].starts_with("10:17: remote_vteps: `0.0.0.0` is the unspecified address"),
        "{e:?}"
    );
    assert!(e[3].contains("`239.1.1.1` is a multicast address"), "{e:?}");
    assert!(e[4].contains("IPv4-mapped"), "{e:?}");
    let e = errors_in(
        "[datapath]\nflow_limit = 5\nupcall_queue = 9223372036854775807\n# a comment\nhandler_threads = 100000\nbatch = 2000\n[offload]\nsettle_ms = 99999999\n[evpn]\nrestart_grace_ms = 18446744073709551615\n",
    );
    assert_eq!(
        e,
        [
            "3:1: [datapath] upcall_queue = 9223372036854775807 out of range 1..=1048576",
            "5:1: [datapath] handler_threads = 100000 out of range 1..=64",
            "6:1: [datapath] batch = 2000 out of range 1..=1024",
            "8:1: [offload] settle_ms = 99999999 out of range 0..=60000",
            "10:1: [evpn] restart_grace_ms = 18446744073709551615 out of range 0..=86400000",
        ]
    );
    // Floats are not integers.
    let e = errors_in("[datapath]\nupcall_queue = 1e8\n");
    assert!(e[0].contains("invalid type: floating point"), "{e:?}");
}

#[test]
fn many_errors_are_reported_each_with_its_line() {
    // 40,000 bad rules: every one reported, with its line (the line index is built
    // once: this took over a minute when each error rescanned the text).
    let mut text = String::new();
    for i in 0..40_000 {
        text.push_str(&format!(
            "[[rule]]\npriority = 1\nmatch = \"bogus({i})\"\nactions = \"drop\"\n"
        ));
    }
    let e = errors_in(&text);
    assert_eq!(e.len(), 40_000);
    assert!(
        e[39_999].starts_with("159999:9: bad rule match `bogus(39999)`"),
        "{}",
        e[39_999]
    );
}

#[test]
fn an_endless_file_is_not_read_to_the_end() {
    let e = Config::load(Path::new("/dev/zero")).expect_err("/dev/zero");
    assert!(e.to_string().contains("larger than 16 MiB"), "{e}");
}

#[test]
fn cross_reference_errors() {
    assert_eq!(
        errors_of("bad_refs.toml"),
        [
            "9:6: `vf` is only for representors, and port `up0` is an uplink",
            "13:7: network `a` has a vni but no port has role = \"tunnel\"",
            "14:20: member `up0` is an uplink, not a representor",
            "19:7: duplicate vni 5000 (first on line 13)",
            "23:8: duplicate network name `a` (first on line 12)",
            "25:17: `remote_vteps` on network `a`, which is a VLAN network",
            "26:16: a static MAC needs exactly one of `vtep` and `port`",
            "35:9: duplicate rule: priority 1 with the same match (first on line 30)",
        ]
    );
}

#[test]
fn syntax_and_type_errors() {
    assert_eq!(
        errors_of("bad_syntax.toml"),
        ["5:13: invalid basic string, expected `\"`"]
    );
    assert_eq!(
        errors_of("bad_types.toml"),
        [
            "2:14: invalid type: string \"many\", expected usize",
            "4:1: missing field `role`",
            "9:8: unknown variant `repr`, expected one of `representor`, `uplink`, `tunnel`",
            "12:12: invalid value: integer `70000`, expected u16",
        ]
    );
}

#[test]
fn display_and_io_errors() {
    let e = Config::from_str("[offload]\npolicy = 3\n").unwrap_err();
    assert_eq!(e.errors.len(), 1);
    assert!(e.to_string().starts_with("<config>:2:10: "), "{e}");
    let e = Config::load(Path::new("/nonexistent/flowd.toml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/flowd.toml: cannot read: "),
        "{e}"
    );
    // Non-ASCII before the error: columns count characters.
    let e = Config::from_str("# é\n[[port]]\nname = \"é\"\nrole = \"x\"\n").unwrap_err();
    assert!(e.to_string().starts_with("<config>:4:8: "), "{e}");
    // Sections of the wrong shape.
    let e = Config::from_str("port = 3\ndatapath = 1\n").unwrap_err();
    assert_eq!(e.errors.len(), 2, "{e}");
    assert!(
        e.to_string()
            .contains("<config>:1:8: `port` must be an array of tables"),
        "{e}"
    );
    let e = "port = [1]\n".parse::<Config>().unwrap_err();
    assert!(
        e.to_string()
            .contains("1:9: invalid type: integer `1`, expected a port table"),
        "{e}"
    );
}

#[test]
fn value_checks() {
    let base = "[[port]]\nname = \"t\"\nrole = \"tunnel\"\n";
    for (extra, needle) in [
        (
            "[[port]]\nname = \"a\"\nrole = \"uplink\"\nmtu = 10\n",
            "mtu 10 out of range",
        ),
        (
            "[[port]]\nname = \"a\"\nrole = \"uplink\"\nswitch_id = \"abc\"\n",
            "bad switch_id `abc`",
        ),
        (
            "[[port]]\nname = \"a\"\nrole = \"uplink\"\nid = 0\n",
            "port id 0 is reserved",
        ),
        (
            "[[port]]\nname = \"averyveryverylongname\"\nrole = \"uplink\"\n",
            "bad port name",
        ),
        (
            "[[port]]\nname = \"t2\"\nrole = \"tunnel\"\n",
            "a second tunnel port `t2`",
        ),
        (
            "[[network]]\nname = \"n\"\nvni = 16777216\nlocal_vtep = \"10.0.0.1\"\n",
            "vni 16777216 out of range",
        ),
        (
            "[[network]]\nname = \"n\"\nvlan = 4095\n",
            "vlan 4095 out of range",
        ),
        (
            "[[network]]\nname = \"n\"\nvni = 1\nlocal_vtep = \"10.0.0.1\"\nremote_vteps = [\"2001:db8::1\"]\n",
            "not the same IP version",
        ),
        (
            "[[network]]\nname = \"n\"\nvni = 1\nlocal_vtep = \"10.0.0.1\"\nstatic_macs = [{ mac = \"01:00:5e:00:00:01\", vtep = \"10.0.0.2\" }]\n",
            "is a multicast address",
        ),
        (
            "[[network]]\nname = \"n\"\nvlan = 3\nstatic_macs = [{ mac = \"02:00:00:00:00:01\", vtep = \"10.0.0.2\" }]\n",
            "needs a VNI network",
        ),
        (
            "[[network]]\nname = \"n\"\nvlan = 3\nstatic_macs = [{ mac = \"02:00:00:00:00:01\", port = \"zz\" }]\n",
            "static MAC port `zz` is not a declared port",
        ),
        (
            "[datapath]\nbatch = 0\n",
            "[datapath] batch = 0 out of range 1..=1024",
        ),
        (
            "[control]\nsocket = \"relative.sock\"\n",
            "must be an absolute path",
        ),
        (
            "[[network]]\nname = \"n\"\nvlan = 3\nfwmark = 5\n",
            "`fwmark` on network `n`, which is a VLAN network",
        ),
        (
            "[[network]]\nname = \"n\"\nvlan = 3\ndf = false\n",
            "`df` on network `n`, which is a VLAN network",
        ),
        (
            "[[network]]\nname = \"n\"\nvlan = 3\nudp_csum = true\n",
            "`udp_csum` on network `n`, which is a VLAN network",
        ),
        (
            "[[network]]\nname = \"n\"\nvni = 3\nfwmark = -1\n",
            "7:10: invalid value: integer `-1`, expected u32",
        ),
        ("[offload]\nqueue = 0\n", "[offload] queue = 0 out of range"),
        (
            "[offload]\nsim_capacity = 0\n",
            "[offload] sim_capacity = 0 out of range",
        ),
        (
            "[offload]\nsim_capacity = 16777217\n",
            "[offload] sim_capacity = 16777217 out of range",
        ),
        (
            "[offload]\nqueue = 2000000\n",
            "[offload] queue = 2000000 out of range",
        ),
        (
            "[datapath]\nmac_table_size = 0\n",
            "[datapath] mac_table_size = 0 out of range 1..=4194304",
        ),
        (
            "[datapath]\nmac_table_size = 9223372036854775807\n",
            "[datapath] mac_table_size = 9223372036854775807 out of range",
        ),
    ] {
        let text = format!("{base}{extra}");
        let e = Config::from_str(&text).expect_err(extra);
        assert!(e.to_string().contains(needle), "{extra}: {e}");
    }
}

#[test]
fn tunnel_keys_of_a_network() {
    let text = "[[port]]\nname = \"t\"\nrole = \"tunnel\"\n\
                [[network]]\nname = \"n\"\nvni = 3\nfwmark = 0x10\ndf = false\n\
                udp_csum = true\n[[network]]\nname = \"m\"\nvni = 4\nfwmark = 0\n\
                [offload]\nqueue = 64\n";
    let c = Config::from_str(text).expect("valid");
    let n = &c.networks[0];
    assert_eq!(
        (n.fwmark, n.df, n.udp_csum),
        (Some(0x10), Some(false), Some(true))
    );
    assert_eq!(c.networks[1].fwmark, None, "0 means no mark");
    assert_eq!(c.offload.queue, Some(64));
}

#[test]
fn evpn_networks() {
    let base = "[[port]]\nname = \"t\"\nrole = \"tunnel\"\n[[network]]\nname = \"n\"\n";
    let c = Config::from_str(&format!(
        "{base}vni = 3\nlocal_vtep = \"10.0.0.1\"\nevpn = true\n[evpn]\nudp_port = 62000\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(c.networks[0].evpn);
    assert_eq!(c.evpn.udp_port, 62000);
    assert_eq!(c.evpn.restart_grace_ms, 300_000);
    for (extra, needle) in [
        (
            "vni = 3\nevpn = true\n",
            "has `evpn = true` but no `local_vtep`",
        ),
        (
            "vni = 3\nlocal_vtep = \"2001:db8::1\"\nevpn = true\n",
            "needs an IPv4 `local_vtep`",
        ),
        (
            "vlan = 3\nevpn = true\n",
            "`evpn` on network `n`, which is a VLAN network",
        ),
        (
            "vni = 3\nlocal_vtep = \"10.0.0.1\"\n[evpn]\nudp_port = 4789\n",
            "[evpn] udp_port must not be 0 or 4789",
        ),
        (
            "vni = 3\nlocal_vtep = \"10.0.0.1\"\n[evpn]\nport = 1\n",
            "unknown field `port`",
        ),
    ] {
        let e = Config::from_str(&format!("{base}{extra}")).expect_err(extra);
        assert!(e.to_string().contains(needle), "{extra}: {e}");
    }
}

#[test]
fn discovery_allows_undeclared_members() {
    let text = "[discovery]\npf = \"enp3s0f0\"\n[[port]]\nname = \"vxlan_sys_4789\"\nrole = \"tunnel\"\n\
                [[network]]\nname = \"n\"\nvni = 7\nmembers = [\"enp3s0f0_0\"]\nlocal_vtep = \"10.0.0.1\"\n";
    let c = Config::from_str(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.networks[0].members, ["enp3s0f0_0"]);
}

#[test]
fn stable_port_ids_and_diff() {
    let old = Config::load(&data("good_lab.toml")).unwrap();
    // A new representor declared first would take id 1 on a fresh start...
    let text = std::fs::read_to_string(data("good_lab.toml"))
        .unwrap()
        .replace(
            "[[port]]\nname = \"rep0\"",
            "[[port]]\nname = \"rep9\"\nrole = \"representor\"\n\n[[port]]\nname = \"rep0\"",
        );
    let text = text
        .replace("priority = 200\n", "priority = 201\n")
        .replace(
            "actions = \"set(tunnel(tun_id=0x64,dst=198.51.100.2,ttl=64,tp_dst=4789)),100\"",
            "actions = \"drop\"",
        )
        .replace("flow_limit = 10000", "flow_limit = 20000")
        .replace("vlan = 30", "vlan = 31");
    let mut new = Config::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(new.port("rep9").unwrap().id, PortId(1));
    // ...but on reload the existing ports keep theirs.
    new.inherit_port_ids(&old);
    assert_eq!(new.port("rep0").unwrap().id, PortId(1));
    assert_eq!(new.port("rep1").unwrap().id, PortId(2));
    assert_eq!(new.port("rep9").unwrap().id, PortId(3));
    let d = Config::diff(&old, &new);
    assert_eq!(d.ports_added, ["rep9"]);
    assert!(d.ports_removed.is_empty() && d.ports_changed.is_empty());
    assert_eq!(d.networks_changed, ["storage"]);
    assert!(d.networks_added.is_empty() && d.networks_removed.is_empty());
    let added: Vec<(u16, String)> = d
        .rules_added
        .iter()
        .map(|r| (r.priority, r.actions.to_string()))
        .collect();
    let removed: Vec<(u16, String)> = d
        .rules_removed
        .iter()
        .map(|r| (r.priority, r.actions.to_string()))
        .collect();
    assert_eq!(added, [(50, "drop".into()), (201, "drop".into())]);
    assert_eq!(removed[1], (200, "drop".into()));
    assert_eq!(removed[0].0, 50);
    assert!(removed[0].1.ends_with(",100"), "{removed:?}");
    assert!(d.datapath_changed && !d.offload_changed && !d.metrics_changed);
    assert_eq!(d.summary()[0], "ports added: rep9");
    assert!(Config::diff(&old, &old).is_empty());
    assert!(Config::diff(&old, &old).summary().is_empty());
}

#[test]
fn no_input_panics() {
    // Truncations of every configuration in tests/data parse or fail cleanly.
    for name in [
        "good_lab.toml",
        "bad_many.toml",
        "bad_refs.toml",
        "bad_types.toml",
    ] {
        let text = std::fs::read_to_string(data(name)).unwrap();
        for (i, _) in text.char_indices().step_by(7) {
            let _ = Config::from_str(&text[..i]);
        }
    }
}

#[test]
fn the_diff_says_what_a_reload_applies_and_what_needs_a_restart() {
    let old = Config::load(&data("good_lab.toml")).unwrap();
    let text = std::fs::read_to_string(data("good_lab.toml")).unwrap();
    // rep1 leaves, rep9 arrives, rep0 changes its VF; the flow limit,
    // the routing timing, the batch size and [evpn] change too.
    let edited = text
        .replace("rep1", "rep9")
        .replace("vf = 0\n", "vf = 3\n")
        .replace("flow_limit = 10000", "flow_limit = 20000\nbatch = 16")
        .replace(
            "[offload]",
            "[evpn]\nudp_port = 61001\n\n[offload]\ncoalesce_ms = 50",
        );
    let mut new = Config::from_str(&edited).unwrap_or_else(|e| panic!("{e}"));
    new.inherit_port_ids(&old);
    let d = Config::diff(&old, &new);
    let names = |ports: &[PortConfig]| ports.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&d.hotplug.plugged), ["rep9"]);
    assert_eq!(names(&d.hotplug.unplugged), ["rep1"]);
    let replugged: Vec<_> = d
        .hotplug
        .replugged
        .iter()
        .map(|(a, b)| (a.vf, b.vf))
        .collect();
    assert_eq!(replugged, [(Some(0), Some(3))]);
    assert!(d.ports_restart.is_empty());
    assert!(d.flow_limits_changed && d.datapath_restart && d.evpn_restart);
    assert!(d.fib_timing_changed && !d.offload_restart);
    assert_eq!(
        d.needs_restart(),
        [
            "[datapath] upcall_queue, handler_threads, threads, batch, mac_table_size and ring_kib",
            "[evpn]"
        ]
    );
    // In force: the representors changed, the live settings new, the rest as it was.
    let f = d.in_force(&old, &new);
    assert_eq!(
        names(&f.ports),
        names(&old.ports)
            .into_iter()
            .filter(|n| n != "rep1")
            .chain(["rep9".to_string()])
            .collect::<Vec<_>>()
    );
    assert_eq!(f.datapath.flow_limit, 20000);
    assert_eq!(f.datapath.batch, old.datapath.batch);
    assert_eq!(f.offload.coalesce_ms, Some(50));
    assert_eq!(f.evpn, old.evpn);
    // An uplink removed needs a restart, and stays in force.
    let no_uplink = Config::from_str(&text.replace("role = \"uplink\"", "role = \"representor\""))
        .unwrap_or_else(|e| panic!("{e}"));
    let d = Config::diff(&old, &no_uplink);
    assert!(!d.ports_restart.is_empty(), "{d:?}");
    assert!(
        d.in_force(&old, &no_uplink)
            .ports
            .iter()
            .any(|p| p.role == PortRole::Uplink)
    );
}

#[test]
fn a_port_may_have_its_own_receive_ring() {
    let text = "[datapath]\nring_kib = 4096\n[[port]]\nname = \"rep0\"\nrole = \"representor\"\n\
                ring_kib = 65536\n[[port]]\nname = \"rep1\"\nrole = \"representor\"\n";
    let c = Config::from_str(text).unwrap_or_else(|e| panic!("{e}"));
    let rings: Vec<usize> = c.ports.iter().map(|p| p.ring_kib(&c.datapath)).collect();
    assert_eq!(rings, [65536, 4096]);
    // Out of range, at its line.
    let e = Config::from_str(&text.replace("65536", "64")).expect_err("too small");
    assert_eq!(
        e.to_string(),
        "<config>:6:12: ring_kib 64 out of range 128..=262144"
    );
    // A changed ring replugs a representor (its socket is opened again).
    let mut new = Config::from_str(&text.replace("65536", "8192")).unwrap();
    new.inherit_port_ids(&c);
    let d = Config::diff(&c, &new);
    assert_eq!(d.hotplug.replugged.len(), 1, "{d:?}");
}

#[test]
fn datapath_threads_are_bounded_at_their_line_and_need_a_restart() {
    let c = Config::from_str("").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.datapath.threads, 1, "one datapath thread by default");
    let text = "[datapath]\nflow_limit = 100\nthreads = 2\n";
    let two = Config::from_str(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(two.datapath.threads, 2);
    for bad in ["0", "65"] {
        let e = errors_in(&text.replace("threads = 2", &format!("threads = {bad}")));
        assert_eq!(
            e,
            [format!(
                "3:1: [datapath] threads = {bad} out of range 1..=64"
            )]
        );
    }
    let e = errors_in("[datapath]\nthreads = -1\n");
    assert_eq!(e.len(), 1, "{e:?}");
    // Each thread opened its sockets at start: a change is a restart, nothing else.
    let d = Config::diff(&c, &two);
    assert!(d.datapath_restart && d.hotplug.is_empty(), "{d:?}");
    assert!(!Config::diff(&two, &two).datapath_restart);
}
