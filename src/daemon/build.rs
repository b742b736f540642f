//! From a validated [`Config`] (and the kernel's facts) to the daemon's parts: the slow
//! path's networks, rules and static MACs, the datapath's ports, the switch's settings,
//! the offload backend. Functions of their inputs; the order they are called in is
//! [`super::start`]'s.
//!
//! Conventions (documented in docs/operations.md):
//! - the rule table always ends in a priority-0 `normal` rule, so a config without rules
//!   is an L2 learning switch;
//! - a VLAN network attaches its representors untagged and every uplink tagged with the
//!   network's VLAN id;
//! - a VNI network without `local_vtep` lets the tunnel source follow the route to each
//!   remote VTEP (one VTEP address per uplink).

use crate::config::{
    Config, DatapathConfig, MacLocation, NetworkConfig, OffloadBackendKind, OffloadPolicy,
    PortConfig, PortRole as CfgRole, RuleConfig, Segment,
};
use crate::switch::{SwitchConfig, SwitchPort};
use datapath::dpif::DpConfig;
use datapath::dpif::PortRole;
use datapath::port::{AfPacketPort, KernelTunnel, Port, PortError, PortOptions, RxControl, TxMode};
use datapath::slowpath::EngineConfig;
use datapath::slowpath::upcall::UpcallConfig;
use datapath::slowpath::{
    Attachment, Location, MacConfig, Network, NetworkId, Rule, SlowPath, SlowPathError,
    VxlanSegment,
};
use datapath::{IfIndex, PortId};
use offload::{OffloadBackend, PortKind, PortTable, TcPolicy};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

/// Why the configuration could not be turned into a running switch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A port's netdev could not be opened.
    #[error("port `{name}`: {source}")]
    Port {
        /// The port.
        name: String,
        /// Why.
        #[source]
        source: PortError,
    },
    /// The slow path refused a network, rule or static MAC.
    #[error("{what}: {source}")]
    SlowPath {
        /// Which item.
        what: String,
        /// Why.
        #[source]
        source: SlowPathError,
    },
    /// A network names a member that is neither declared nor discovered.
    #[error("network `{network}`: member `{member}` is not a declared or discovered port")]
    UnknownMember {
        /// The network.
        network: String,
        /// The member.
        member: String,
    },
    /// `[discovery]` could not be done.
    #[error("discovery on `{pf}`: {why}")]
    Discovery {
        /// The PF.
        pf: String,
        /// Why.
        why: String,
    },
    /// A configured port has no netdev.
    #[error("port `{0}`: no such interface `{0}`")]
    NoSuchInterface(String),
    /// A rule's datapath actions cannot be a rule (e.g. `userspace`).
    #[error("rule at priority {priority}: {source}")]
    RuleAction {
        /// The rule's priority.
        priority: u16,
        /// Why.
        #[source]
        source: crate::config::RuleActionError,
    },
}

/// The network id of the `index`-th configured network.
pub fn network_id(cfg: &NetworkConfig) -> NetworkId {
    match cfg.segment {
        Segment::Vni(v) => NetworkId(v),
        // VLAN networks live above the 24-bit VNI space.
        Segment::Vlan(v) => NetworkId(0x0100_0000 | u32::from(v)),
    }
}

/// The slow path a configuration describes.
pub fn slowpath(cfg: &Config) -> Result<SlowPath, BuildError> {
    let mut sp = SlowPath::with_normal(MacConfig {
        max_entries: cfg.datapath.mac_table_size,
        ..MacConfig::default()
    });
    for net in &cfg.networks {
        let id = network_id(net);
        sp.add_network(id, network(cfg, net))
            .map_err(|source| BuildError::SlowPath {
                what: format!("network `{}`", net.name),
                source,
            })?;
        for m in &net.static_macs {
            let loc = match &m.location {
                MacLocation::Vtep(ip) => Location::Remote(*ip),
                MacLocation::Port(p) => {
                    let port = cfg.port(p).map_or(PortId(0), |p| p.id);
                    Location::Local(Attachment::untagged(port))
                }
            };
            sp.set_static_mac(id, m.mac, loc)
                .map_err(|source| BuildError::SlowPath {
                    what: format!("network `{}`: static MAC {}", net.name, m.mac),
                    source,
                })?;
        }
    }
    for r in &cfg.rules {
        sp.add_rule(rule(cfg, r)?)
            .map_err(|source| BuildError::SlowPath {
                what: format!("rule at priority {}", r.priority),
                source,
            })?;
    }
    Ok(sp)
}

/// The slow path's view of one network.
pub fn network(cfg: &Config, net: &NetworkConfig) -> Network {
    let members = net
        .members
        .iter()
        .filter_map(|m| cfg.port(m))
        .map(|p| Attachment::untagged(p.id));
    match net.segment {
        Segment::Vni(vni) => Network {
            members: members.collect(),
            vxlan: cfg.tunnel_port().map(|t| VxlanSegment {
                mark: net.fwmark.unwrap_or(0),
                df: net.df.unwrap_or(true),
                udp_csum: net.udp_csum,
                ..VxlanSegment::new(vni, t.id, net.local_vtep, net.remote_vteps.clone())
            }),
        },
        Segment::Vlan(vid) => {
            let uplinks = cfg
                .ports
                .iter()
                .filter(|p| p.role == CfgRole::Uplink)
                .map(|p| Attachment::tagged(p.id, vid));
            Network {
                members: members.chain(uplinks).collect(),
                vxlan: None,
            }
        }
    }
}

/// A configured rule as the slow path's rule (its actions checked by
/// [`crate::config::RuleActionsConfig::to_rule_actions`], the configuration's own check).
pub fn rule(cfg: &Config, r: &RuleConfig) -> Result<Rule, BuildError> {
    let actions = r
        .actions
        .to_rule_actions(cfg.tunnel_port().map(|t| t.id))
        .map_err(|source| BuildError::RuleAction {
            priority: r.priority,
            source,
        })?;
    Ok(Rule::new(
        r.priority,
        &r.matches.key,
        &r.matches.mask,
        actions,
    ))
}

/// Every network member must be a port (declared, or discovered on the PF).
pub fn check_members(cfg: &Config) -> Result<(), BuildError> {
    for n in &cfg.networks {
        if let Some(m) = n.members.iter().find(|m| cfg.port(m).is_none()) {
            return Err(BuildError::UnknownMember {
                network: n.name.clone(),
                member: m.clone(),
            });
        }
    }
    Ok(())
}

/// `[discovery] pf`: adds the PF (as an uplink) and the representors on its eswitch
/// (same switch id, `phys_port_name` `pfNvfM`) that the file does not declare, with ids
/// after the highest configured one. Returns the names added.
pub fn discover_ports(
    cfg: &mut Config,
    links: &[offload::discover::LinkFacts],
) -> Result<Vec<String>, BuildError> {
    use offload::PortKind;
    let Some(d) = cfg.discovery.clone() else {
        return Ok(Vec::new());
    };
    let err = |why: String| BuildError::Discovery {
        pf: d.pf.clone(),
        why,
    };
    let pf = links
        .iter()
        .find(|l| l.name == d.pf)
        .ok_or_else(|| err("no such interface".into()))?;
    let sw = pf
        .switch_id
        .clone()
        .ok_or_else(|| err("no switch id: is its eswitch in switchdev mode?".into()))?;
    let mut next = cfg.ports.iter().map(|p| p.id.0).max().unwrap_or(0) + 1;
    let mut added = Vec::new();
    for l in links {
        if l.switch_id.as_ref() != Some(&sw) || cfg.port(&l.name).is_some() {
            continue;
        }
        let (role, vf) = match l.port_kind() {
            Some(PortKind::Representor { vf }) => (CfgRole::Representor, Some(u32::from(vf))),
            _ if l.name == d.pf => (CfgRole::Uplink, None),
            _ => continue,
        };
        cfg.ports.push(crate::config::PortConfig {
            name: l.name.clone(),
            role,
            id: PortId(next),
            id_explicit: false,
            vf,
            switch_id: None,
            mtu: None,
            ring_kib: None,
        });
        next += 1;
        added.push(l.name.clone());
    }
    Ok(added)
}

/// The datapath's role for a configured port.
pub fn role(r: CfgRole) -> PortRole {
    match r {
        CfgRole::Representor => PortRole::Representor,
        CfgRole::Uplink => PortRole::Uplink,
        CfgRole::Tunnel => PortRole::Tunnel,
    }
}

/// The ports as opened, and the control of the tunnel port's kernel path.
pub struct Opened {
    /// Every configured port.
    pub ports: Vec<SwitchPort>,
    /// Switches the kernel path's receive sockets (`None`: no tunnel port, or its
    /// sockets could not be opened).
    pub rx: Option<RxControl>,
}

/// Opens every configured port's netdev, and for the tunnel port its path through the
/// kernel's IP stack (for IPsec-protected paths; without it, protected paths drop and
/// count, never fall back to an uplink): one I/O per datapath thread (`[datapath]
/// threads`). Fails on the first netdev that cannot be opened: a switch with a missing
/// port is not started half-configured.
pub fn open_ports(cfg: &Config) -> Result<Opened, BuildError> {
    let mut rx = None;
    let ports = cfg
        .ports
        .iter()
        .map(|p| {
            let io = match p.role {
                CfgRole::Tunnel => tunnel_io(&p.name, cfg.datapath.threads, &mut rx),
                _ => open_port(p, &cfg.datapath)?,
            };
            Ok(SwitchPort {
                id: p.id,
                role: role(p.role),
                io,
            })
        })
        .collect::<Result<_, BuildError>>()?;
    Ok(Opened { ports, rx })
}

/// The tunnel port's kernel path, one per datapath thread; `rx` gets the control of the
/// first one's receive sockets: the others only transmit (their receive filters take
/// nothing unless told, and nobody tells them). None at all if it cannot be opened.
fn tunnel_io(name: &str, threads: usize, rx: &mut Option<RxControl>) -> Vec<Box<dyn Port>> {
    let mut io: Vec<Box<dyn Port>> = Vec::new();
    for i in 0..threads.max(1) {
        match KernelTunnel::open(name, vocab::VXLAN_PORT) {
            Ok(k) => {
                if i == 0 {
                    *rx = k
                        .rx_control()
                        .map_err(|e| tracing::warn!(error = %e, "kernel tunnel receive control"))
                        .ok();
                }
                io.push(Box::new(k));
            }
            Err(e) => {
                tracing::warn!(error = %e, "no kernel path for IPsec-protected tunnels");
                return Vec::new();
            }
        }
    }
    io
}

/// How a port's socket is opened: `[datapath]`'s batch, and the port's receive ring
/// (its own `ring_kib`, or `[datapath]`'s).
pub fn port_options(p: &PortConfig, d: &DatapathConfig) -> PortOptions {
    PortOptions {
        batch: d.batch,
        ring_bytes: p.ring_kib(d) << 10,
        tx: TxMode::from_env(TxMode::Ring),
        qdisc_bypass: std::env::var_os("FLOWD_QDISC_BYPASS").is_some_and(|v| v == "1"),
        ..PortOptions::default()
    }
}

/// Opens a port's AF_PACKET sockets as its configuration says: one per datapath thread
/// (`[datapath] threads`), in one `PACKET_FANOUT` group when there are several, each
/// with its own receive ring.
pub fn open_port(p: &PortConfig, d: &DatapathConfig) -> Result<Vec<Box<dyn Port>>, BuildError> {
    let mut sockets = AfPacketPort::open_fanout(&p.name, port_options(p, d), d.threads.max(1))
        .map_err(|source| BuildError::Port {
            name: p.name.clone(),
            source,
        })?;
    if p.role == CfgRole::Uplink {
        super::tunnel_gso::attach(&p.name, &mut sockets);
    }
    if let Some(s) = sockets.first() {
        match s.tx_ring_error() {
            Some(e) => tracing::warn!(
                port = %p.name, error = %e,
                "no transmit ring (PACKET_TX_RING): sending with sendmmsg"
            ),
            None => tracing::info!(
                port = %p.name, tx = ?s.tx_mode(), tx_ring_frames = s.tx_ring_frames(),
                "port transmits"
            ),
        }
    }
    Ok(sockets
        .into_iter()
        .map(|s| Box::new(s) as Box<dyn Port>)
        .collect())
}

/// Local VTEP addresses: VXLAN to one of these is decapsulated. The networks' explicit
/// `local_vtep`s, plus `extra` (addresses of the uplinks, for networks whose source
/// follows the route).
pub fn local_vteps(cfg: &Config, extra: &[IpAddr]) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = cfg
        .networks
        .iter()
        .filter_map(|n| n.local_vtep)
        .chain(extra.iter().copied())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// fibwatch's (coalesce, settle) from `[offload]`.
pub fn fib_timing(o: &crate::config::OffloadConfig) -> (Duration, Duration) {
    (
        Duration::from_millis(o.coalesce_ms.unwrap_or(20)),
        Duration::from_millis(o.settle_ms.unwrap_or(2)),
    )
}

/// An offload backend and its name (`tc`, `sim`).
pub type Backend = (Box<dyn OffloadBackend>, &'static str);

pub fn backend(cfg: &Config, table: &PortTable) -> Result<Option<Backend>, offload::BackendError> {
    let policy = match cfg.offload.policy {
        OffloadPolicy::Off => return Ok(None),
        OffloadPolicy::None => TcPolicy::None,
        OffloadPolicy::SkipSw => TcPolicy::SkipSw,
        OffloadPolicy::SkipHw => TcPolicy::SkipHw,
    };
    let use_tc = match cfg.offload.backend {
        OffloadBackendKind::Tc => true,
        OffloadBackendKind::Sim => false,
        OffloadBackendKind::Auto => super::kernel::kernel_has_flower(),
    };
    if use_tc {
        let devices: Vec<IfIndex> = table.iter().map(|p| p.ifindex).collect();
        let tc = offload::tc::TcBackend::new(
            offload::tc::TcConfig {
                policy,
                ..Default::default()
            },
            &devices,
        )?;
        return Ok(Some((Box::new(tc), "tc")));
    }
    let capacity = cfg
        .offload
        .sim_capacity
        .unwrap_or(crate::config::DEFAULT_SIM_CAPACITY);
    Ok(Some((Box::new(sim_fabric(table, capacity)), "sim")))
}

/// One simulated eswitch per switch id, holding that id's uplink, representors and the
/// tunnel device.
fn sim_fabric(table: &PortTable, capacity: usize) -> offload::sim::SimFabric {
    use offload::sim::{SimCaps, SimRep, SimSwitchSpec};
    let tunnels: Vec<IfIndex> = table
        .iter()
        .filter(|p| p.kind == PortKind::Tunnel)
        .map(|p| p.ifindex)
        .collect();
    let mut specs: BTreeMap<Vec<u8>, SimSwitchSpec> = BTreeMap::new();
    for p in table.iter() {
        let Some(id) = &p.switch_id else { continue };
        let spec = specs.entry(id.0.clone()).or_insert_with(|| SimSwitchSpec {
            switch_id: id.0.clone(),
            uplinks: Vec::new(),
            tunnels: tunnels.clone(),
            reps: Vec::new(),
            capacity,
            caps: SimCaps::default(),
        });
        match p.kind {
            PortKind::Uplink => spec.uplinks.push(p.ifindex),
            PortKind::Representor { vf } => spec.reps.push(SimRep {
                vf,
                rep: p.ifindex,
                vf_port: p.ifindex,
            }),
            _ => {}
        }
    }
    offload::sim::SimFabric::new(specs.into_values().collect())
}

/// The switch's settings from `[datapath]`.
pub fn switch_config(
    cfg: &Config,
    local_vteps: Vec<IpAddr>,
    clock: crate::switch::Clock,
    paused: bool,
) -> SwitchConfig {
    let d = &cfg.datapath;
    SwitchConfig {
        datapath: DpConfig {
            batch: d.batch,
            local_vteps,
            ..DpConfig::default()
        },
        upcall: UpcallConfig {
            handlers: d.handler_threads.max(1),
            capacity: d.upcall_queue,
            ..UpcallConfig::default()
        },
        engine: EngineConfig {
            max_idle: Duration::from_millis(d.max_idle_ms),
            flow_limit: d.flow_limit,
            ..EngineConfig::default()
        },
        threads: d.threads.max(1),
        clock,
        paused,
        ..SwitchConfig::default()
    }
}

/// Each VNI network's `fwmark`.
pub fn network_marks(cfg: &Config) -> HashMap<u32, u32> {
    cfg.networks
        .iter()
        .filter_map(|n| match (n.segment, n.fwmark) {
            (crate::config::Segment::Vni(v), Some(m)) => Some((v, m)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = r#"
[[port]]
name = "rep0"
role = "representor"
[[port]]
name = "rep1"
role = "representor"
[[port]]
name = "up0"
role = "uplink"
id = 10
[[port]]
name = "vxlan_sys_4789"
role = "tunnel"
id = 100
[[network]]
name = "a"
vni = 16
members = ["rep0"]
remote_vteps = ["192.0.2.2"]
static_macs = [{ mac = "02:00:00:00:00:02", vtep = "192.0.2.2" }]
[[network]]
name = "b"
vlan = 30
members = ["rep1"]
[[rule]]
priority = 100
match = "in_port(1),eth_type(0x86dd)"
actions = "drop"
[[rule]]
priority = 90
match = "in_port(2)"
actions = "set(tunnel(tun_id=0x10,dst=192.0.2.2,ttl=64,tp_dst=4789)),100"
"#;

    #[test]
    fn config_becomes_networks_rules_and_macs() {
        let cfg: Config = CFG.parse().expect("config");
        let sp = slowpath(&cfg).expect("slow path");
        // normal + two rules
        assert_eq!(sp.rules().len(), 3);
        let a = sp.networks().get(NetworkId(16)).expect("vni 16");
        assert_eq!(a.members, vec![Attachment::untagged(PortId(1))]);
        let seg = a.vxlan.as_ref().expect("segment");
        assert_eq!((seg.port, seg.local_ip), (PortId(100), None));
        let b = sp
            .networks()
            .get(NetworkId(0x0100_0000 | 30))
            .expect("vlan 30");
        assert_eq!(
            b.members,
            vec![
                Attachment::untagged(PortId(2)),
                Attachment::tagged(PortId(10), 30)
            ]
        );
        assert_eq!(sp.macs().len(), 1);
    }

    #[test]
    fn discovery_adds_the_pf_and_its_representors() {
        use offload::discover::LinkFacts;
        let fact = |name: &str, ifindex, sw: Option<u8>, port: Option<&str>| LinkFacts {
            ifindex: datapath::IfIndex(ifindex),
            name: name.into(),
            mtu: 1500,
            up: true,
            switch_id: sw.map(|b| vec![0xaa, b]),
            port_name: port.map(str::to_string),
            kind: None,
        };
        let links = vec![
            fact("enp3s0f0", 2, Some(1), Some("p0")),
            fact("enp3s0f0_0", 3, Some(1), Some("pf0vf0")),
            fact("enp3s0f0_1", 4, Some(1), Some("pf0vf1")),
            fact("enp3s0f1_0", 5, Some(2), Some("pf1vf0")),
            fact("eth9", 6, None, None),
        ];
        let text = "[discovery]\npf = \"enp3s0f0\"\n[[port]]\nname = \"vxlan_sys_4789\"\n\
                    role = \"tunnel\"\nid = 100\n[[network]]\nname = \"n\"\nvni = 7\n\
                    members = [\"enp3s0f0_1\"]\n";
        let mut cfg: Config = text.parse().expect("config");
        assert!(check_members(&cfg).is_err(), "before discovery");
        let added = discover_ports(&mut cfg, &links).expect("discovery");
        assert_eq!(added, ["enp3s0f0", "enp3s0f0_0", "enp3s0f0_1"]);
        let rep = cfg.port("enp3s0f0_1").expect("discovered");
        assert_eq!(
            (rep.role, rep.vf, rep.id),
            (CfgRole::Representor, Some(1), PortId(103))
        );
        assert_eq!(cfg.port("enp3s0f0").map(|p| p.role), Some(CfgRole::Uplink));
        check_members(&cfg).expect("members resolve");
        let mut bad = cfg.clone();
        bad.discovery = Some(crate::config::DiscoveryConfig { pf: "eth9".into() });
        let e = discover_ports(&mut bad, &links).expect_err("no switch id");
        assert!(e.to_string().contains("switchdev"), "{e}");
    }

    #[test]
    fn userspace_is_not_a_rule_action() {
        // Refused by the configuration's check, at the line of the actions.
        let text = CFG.replace(r#"actions = "drop""#, r#"actions = "userspace""#);
        let e = text
            .parse::<Config>()
            .expect_err("userspace must be refused in a rule");
        assert_eq!(
            e.to_string(),
            "<config>:29:11: rule at priority 100: action `userspace` is not allowed in a rule"
        );
        // And by a rule built at run time (`flowctl rules add`), through the same check.
        let cfg: Config = CFG.parse().expect("config");
        let r = RuleConfig {
            actions: "userspace".parse().expect("actions"),
            ..cfg.rules[0].clone()
        };
        let e = rule(&cfg, &r).expect_err("refused");
        assert!(e.to_string().contains("userspace"), "{e}");
        let r = RuleConfig {
            actions: "100".parse().expect("actions"),
            ..cfg.rules[0].clone()
        };
        let e = rule(&cfg, &r).expect_err("tunnel output without set(tunnel)");
        assert!(e.to_string().contains("set(tunnel"), "{e}");
    }

    #[test]
    fn a_missing_netdev_is_a_clear_error() {
        let text = CFG.replace("rep0", "flowd-nosuch0");
        let cfg: Config = text.parse().expect("config");
        let Err(e) = open_ports(&cfg) else {
            panic!("a missing netdev must be refused");
        };
        assert_eq!(
            e.to_string(),
            "port `flowd-nosuch0`: no such interface `flowd-nosuch0`"
        );
    }
}
