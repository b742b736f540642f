//! The daemon's TOML configuration: parsing, validation with line numbers, and the diff
//! that a reload (SIGHUP, `flowctl reload`) applies.
//!
//! The model (the types below) is here; [`parse`] turns text into it, [`check`] holds
//! the numeric bounds, [`diff`] compares two configurations, [`error`] reports mistakes
//! at their lines.
//!
//! # Parsing in two steps
//! The text is first parsed into a spanned document ([`toml::de::DeTable`]), which
//! reports every syntax error it can recover from. Then each section and each element of
//! `[[port]]`, `[[network]]` and `[[rule]]` is deserialized on its own (unknown keys
//! denied), so that a mistake in one port does not hide a mistake in another. Finally the
//! semantic checks (duplicates, references between sections, addresses, rule syntax) run
//! on what deserialized, each error pointing at the line and column of the value at
//! fault. [`Config::from_str`] returns either a complete, valid [`Config`] or every error
//! found: a bad configuration never yields a half-configured switch.
//!
//! # Port ids
//! A port's datapath id (`in_port(N)`) is its `id` key when given; otherwise ids are
//! assigned in file order from 1, skipping the ids taken explicitly. On reload,
//! [`Config::inherit_port_ids`] keeps the ids ports already had, so adding a port never
//! renumbers the others. Rules that name `in_port(N)` should use ports with explicit ids.

use datapath::actions::Action;
use datapath::flow::Mac;
use datapath::slowpath::RuleAction;
use datapath::{Actions, Megaflow, PortId};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use toml::de::DeTable;

mod check;
mod diff;
mod error;
mod parse;
#[cfg(test)]
mod tests;

pub use check::limits;
use diff::diff_named;
pub use diff::{ConfigDiff, Hotplug};
use error::Errors;
pub use error::{ConfigError, ConfigErrors};
use parse::{build, parse_raw};

/// The default control socket.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/flowd/flowd.sock";
/// The largest MTU a port may declare.
const MAX_MTU: u32 = 65535;
/// The smallest MTU a port may declare (IPv4's minimum).
const MIN_MTU: u32 = 68;
/// The longest physical switch id the kernel reports (`MAX_PHYS_ITEM_ID_LEN`).
const MAX_SWITCH_ID_BYTES: usize = 32;

/// The largest configuration file flowd reads (16 MiB: a hypervisor's thousands of rules
/// and networks fit many times over).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
// ---------------------------------------------------------------------------------------
// The validated configuration

/// A complete, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[datapath]`: cache and upcall sizing.
    pub datapath: DatapathConfig,
    /// `[offload]`: the tc policy.
    pub offload: OffloadConfig,
    /// `[metrics]`: the Prometheus endpoint, absent when the section is absent.
    pub metrics: Option<MetricsConfig>,
    /// `[control]`: the control socket.
    pub control: ControlConfig,
    /// `[discovery]`: a switchdev PF whose representors the daemon discovers.
    pub discovery: Option<DiscoveryConfig>,
    /// `[evpn]`: settings of the networks with `evpn = true` (BGP EVPN through FRR).
    pub evpn: EvpnConfig,
    /// `[[port]]`, in file order.
    pub ports: Vec<PortConfig>,
    /// `[[network]]`, in file order.
    pub networks: Vec<NetworkConfig>,
    /// `[[rule]]`, in file order.
    pub rules: Vec<RuleConfig>,
}

/// `[datapath]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatapathConfig {
    /// The most megaflows the cache holds (default 200000).
    pub flow_limit: usize,
    /// A flow unused for this long is removed (default 10000 ms).
    pub max_idle_ms: u64,
    /// Capacity of the upcall queue (default 4096); a miss beyond it is dropped and
    /// counted.
    pub upcall_queue: usize,
    /// Slow-path handler threads (default 1).
    pub handler_threads: usize,
    /// Packets received per port per poll (default 32).
    pub batch: usize,
    /// The most stations the MAC table holds, all networks together (default 65536,
    /// at most [`MAX_MAC_TABLE_SIZE`]); one port may hold a quarter of them.
    pub mac_table_size: usize,
    /// Receive ring memory per port, in KiB (default 2048: 1024 frames at MTU 1500). A
    /// burst of new flows larger than the ring, arriving while the datapath thread is
    /// busy, is dropped by the kernel (`kernel_drops`); the ring is kernel memory each
    /// port pins.
    pub ring_kib: usize,
    /// Datapath threads (default 1, at most 64). Each opens its own socket on every
    /// port, the sockets of a port in one `PACKET_FANOUT_HASH` group: the kernel spreads
    /// the port's flows over the threads (a flow stays on one).
    pub threads: usize,
}

/// The default `[datapath] ring_kib`.
pub const DEFAULT_RING_KIB: usize = 2048;

/// The largest `[datapath] mac_table_size` (about 1 GiB of table at its worst).
pub const MAX_MAC_TABLE_SIZE: usize = 1 << 22;

impl Default for DatapathConfig {
    fn default() -> Self {
        Self {
            flow_limit: 200_000,
            max_idle_ms: 10_000,
            upcall_queue: 4096,
            handler_threads: 1,
            batch: 32,
            mac_table_size: 65_536,
            ring_kib: DEFAULT_RING_KIB,
            threads: 1,
        }
    }
}

/// How flows are offloaded to tc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OffloadPolicy {
    /// No flag: the kernel tries hardware and falls back to tc's software path (the
    /// default, as OVS's `tc-policy=none`).
    #[default]
    None,
    /// `skip_sw`: hardware only; a flow the NIC refuses stays in flowd's software path.
    SkipSw,
    /// `skip_hw`: tc's software path only (labs, NICs without switchdev).
    SkipHw,
    /// No tc filters at all: everything runs in flowd's software datapath.
    Off,
}

impl fmt::Display for OffloadPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OffloadPolicy::None => "none",
            OffloadPolicy::SkipSw => "skip_sw",
            OffloadPolicy::SkipHw => "skip_hw",
            OffloadPolicy::Off => "off",
        })
    }
}

/// Where offloaded flows go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OffloadBackendKind {
    /// Linux tc flower over netlink (the default; on a kernel without cls_flower every
    /// install fails and flows stay in software with the kernel's reason).
    #[default]
    Tc,
    /// The simulated eswitch (tests and labs on kernels without cls_flower): rules are
    /// kept and counted in flowd; traffic still crosses flowd's software datapath.
    Sim,
    /// tc when the kernel has cls_flower, else the simulated eswitch (labs).
    Auto,
}

impl fmt::Display for OffloadBackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OffloadBackendKind::Tc => "tc",
            OffloadBackendKind::Sim => "sim",
            OffloadBackendKind::Auto => "auto",
        })
    }
}

/// `[offload]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OffloadConfig {
    /// The tc policy (default `none`).
    pub policy: OffloadPolicy,
    /// The backend (default `tc`).
    pub backend: OffloadBackendKind,
    /// The longest, in milliseconds, fibwatch holds a burst of routing changes before
    /// deciding (default 20).
    pub coalesce_ms: Option<u64>,
    /// Milliseconds without a routing change that end a burst (default 2): a lone
    /// change is decided this long after it arrives.
    pub settle_ms: Option<u64>,
    /// Capacity of the offload worker's queue (default 4096, at most 1048576). A request
    /// that finds it full waits in a backlog (the flow stays `pending`): none is lost.
    pub queue: Option<usize>,
    /// Filters each simulated eswitch holds (backend `sim`; default 65536, at most
    /// 16777216): past it an install is refused with ENOSPC and the flow stays in
    /// software (`capacity`), as a NIC's full flow table refuses it.
    pub sim_capacity: Option<usize>,
}

/// A simulated eswitch's default capacity, in filters.
pub const DEFAULT_SIM_CAPACITY: usize = 65_536;
/// A simulated eswitch's largest capacity.
pub const MAX_SIM_CAPACITY: usize = 1 << 24;

/// The offload queue's default capacity.
pub const DEFAULT_OFFLOAD_QUEUE: usize = 4096;
/// The offload queue's largest capacity.
pub const MAX_OFFLOAD_QUEUE: usize = 1 << 20;

/// `[metrics]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Where the Prometheus text endpoint listens.
    pub listen: SocketAddr,
}

/// `[control]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    /// The Unix socket flowctl talks to (default `/run/flowd/flowd.sock`).
    pub socket: PathBuf,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
        }
    }
}

/// `[evpn]`: how flowd meets FRR's zebra (see docs/operations.md, *BGP EVPN*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvpnConfig {
    /// The UDP port of the shadow vxlan devices (default 61000): never 4789, never a
    /// port data traffic uses.
    pub udp_port: u16,
    /// After a start, how long local stations a previous run advertised stay advertised
    /// without being learned again (default 300000 ms, the MAC aging time).
    pub restart_grace_ms: u64,
}

impl Default for EvpnConfig {
    fn default() -> Self {
        Self {
            udp_port: 61_000,
            restart_grace_ms: 300_000,
        }
    }
}

/// `[discovery]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// The switchdev PF netdev whose representors (and uplink) are discovered.
    pub pf: String,
}

/// What a port is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortRole {
    /// A VF's representor netdev.
    Representor,
    /// A physical uplink (PF or bond) toward the underlay.
    Uplink,
    /// The VXLAN tunnel device (e.g. `vxlan_sys_4789`).
    Tunnel,
}

impl PortRole {
    fn with_article(self) -> &'static str {
        match self {
            PortRole::Representor => "a representor",
            PortRole::Uplink => "an uplink",
            PortRole::Tunnel => "a tunnel",
        }
    }
}

impl fmt::Display for PortRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortRole::Representor => "representor",
            PortRole::Uplink => "uplink",
            PortRole::Tunnel => "tunnel",
        })
    }
}

/// `[[port]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    /// The netdev name.
    pub name: String,
    /// What the port is.
    pub role: PortRole,
    /// The datapath port number, given or assigned.
    pub id: PortId,
    /// Whether `id` was given in the file (an assigned id may be replaced by
    /// [`Config::inherit_port_ids`]).
    pub id_explicit: bool,
    /// For a representor, its VF number.
    pub vf: Option<u32>,
    /// The switch id as lowercase hex without `0x` (labs: veths declared members of a
    /// software eswitch); real representors report theirs.
    pub switch_id: Option<String>,
    /// An MTU to set on the netdev.
    pub mtu: Option<u32>,
    /// This port's receive ring in KiB, instead of `[datapath] ring_kib` (a
    /// representor whose VM opens many flows at once gets a large ring, the others
    /// keep the default).
    pub ring_kib: Option<usize>,
}

impl PortConfig {
    /// The receive ring this port is opened with, in KiB: its own `ring_kib`, or
    /// `[datapath]`'s.
    pub fn ring_kib(&self, datapath: &DatapathConfig) -> usize {
        self.ring_kib.unwrap_or(datapath.ring_kib)
    }

    /// The declared switch id as bytes (validated hex, so always decodable).
    pub fn switch_id_bytes(&self) -> Option<Vec<u8>> {
        let hex = self.switch_id.as_deref()?;
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect()
    }
}

/// A network's segment: its VXLAN VNI or its VLAN id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// A VXLAN network identifier (24 bits).
    Vni(u32),
    /// An 802.1Q VLAN id (1..=4094).
    Vlan(u16),
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Segment::Vni(v) => write!(f, "vni {v}"),
            Segment::Vlan(v) => write!(f, "vlan {v}"),
        }
    }
}

/// Where a static MAC lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MacLocation {
    /// Behind a remote VTEP.
    Vtep(IpAddr),
    /// On a local port (by name).
    Port(String),
}

/// One `static_macs` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticMac {
    /// The station's MAC.
    pub mac: Mac,
    /// Where it is.
    pub location: MacLocation,
}

/// `[[network]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The network's name (unique).
    pub name: String,
    /// VNI or VLAN.
    pub segment: Segment,
    /// Member representors, by name.
    pub members: Vec<String>,
    /// The local VTEP address (VNI networks).
    pub local_vtep: Option<IpAddr>,
    /// Remote VTEPs for head-end replication (VNI networks).
    pub remote_vteps: Vec<IpAddr>,
    /// The mark of this network's tunnel packets (VNI networks), which their route
    /// lookups use like `ip rule fwmark`, in software and in tc (`skbedit mark`).
    pub fwmark: Option<u32>,
    /// DF on the outer IPv4 header of this network's tunnel packets (VNI networks;
    /// `None`: the default, set).
    pub df: Option<bool>,
    /// The outer UDP checksum (VNI networks; `None`: the default, on over IPv6 only).
    pub udp_csum: Option<bool>,
    /// Configured stations.
    pub static_macs: Vec<StaticMac>,
    /// Remote stations and flood lists from BGP EVPN (FRR), and local stations
    /// advertised to it (VNI networks with an IPv4 `local_vtep`).
    pub evpn: bool,
}

/// What a configured rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleActionsConfig {
    /// The L2 learning switch (`normal`).
    Normal,
    /// Datapath actions (`drop` is the empty list).
    Datapath(Actions),
}

impl fmt::Display for RuleActionsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleActionsConfig::Normal => f.write_str("normal"),
            RuleActionsConfig::Datapath(a) => write!(f, "{a}"),
        }
    }
}

impl std::str::FromStr for RuleActionsConfig {
    type Err = datapath::flow::ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("normal") {
            return Ok(RuleActionsConfig::Normal);
        }
        s.parse().map(RuleActionsConfig::Datapath)
    }
}

/// Why a rule's datapath actions cannot be a slow-path rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleActionError {
    /// An action only the datapath itself takes (e.g. `userspace`).
    #[error("action `{0}` is not allowed in a rule")]
    NotAllowed(String),
    /// Output to the tunnel port with no `set(tunnel(...))` before it.
    #[error(
        "action `{0}` is not allowed in a rule: output to the tunnel port needs set(tunnel(...)) before it"
    )]
    TunnelWithoutSet(String),
}

impl RuleActionsConfig {
    /// The slow path's actions for this list: `set(tunnel)` followed by output to the
    /// tunnel port is one tunnel action, plain outputs and VLAN pushes and pops stay, an
    /// empty list drops. The one place rule actions are validated: configuration
    /// checks (with the line), reload and `flowctl rules add` call it.
    pub fn to_rule_actions(
        &self,
        tunnel: Option<PortId>,
    ) -> Result<Vec<RuleAction>, RuleActionError> {
        let list = match self {
            RuleActionsConfig::Normal => return Ok(vec![RuleAction::Normal]),
            RuleActionsConfig::Datapath(list) => list.as_slice(),
        };
        let mut out = Vec::new();
        let mut pending_tunnel = None;
        for a in list {
            match *a {
                Action::SetTunnel(attrs) => pending_tunnel = Some(attrs),
                Action::Output(p) if Some(p) == tunnel => match pending_tunnel.take() {
                    Some(attrs) => out.push(RuleAction::Tunnel { port: p, attrs }),
                    None => return Err(RuleActionError::TunnelWithoutSet(a.to_string())),
                },
                Action::Output(p) => out.push(RuleAction::Output(p)),
                Action::PushVlan { tpid, tci } => out.push(RuleAction::PushVlan { tpid, tci }),
                Action::PopVlan => out.push(RuleAction::PopVlan),
                ref other => return Err(RuleActionError::NotAllowed(other.to_string())),
            }
        }
        if out.is_empty() {
            out.push(RuleAction::Drop);
        }
        Ok(out)
    }
}

/// `[[rule]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleConfig {
    /// Higher wins.
    pub priority: u16,
    /// The match, in datapath flow syntax.
    pub matches: Megaflow,
    /// The actions.
    pub actions: RuleActionsConfig,
}

impl RuleConfig {
    /// The rule's identity: priority and match (what `flowctl rules del` names).
    pub fn key(&self) -> (u16, String) {
        (self.priority, self.matches.to_string())
    }
}

// ---------------------------------------------------------------------------------------
// Errors

impl Config {
    /// Parses and validates a configuration; `Err` lists every error found.
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(text: &str) -> Result<Config, ConfigErrors> {
        Self::parse_named(text, "<config>")
    }

    /// Like [`Config::from_str`], naming `file` in the errors.
    pub fn parse_named(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        let mut errs = Errors::new(text);
        let (root, syntax) = DeTable::parse_recoverable(text);
        if !syntax.is_empty() {
            for e in &syntax {
                errs.toml(e);
            }
            return Err(errs.into_errors(file));
        }
        let raw = parse_raw(root.into_inner(), &mut errs);
        let config = build(raw, &mut errs);
        errs.finish(file)?;
        Ok(config)
    }

    /// Reads, parses and validates a configuration file. A file larger than
    /// [`MAX_CONFIG_BYTES`] (or an endless one, such as `/dev/zero`) is refused without
    /// reading past the limit.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        let fail = |message: String| ConfigErrors {
            file: file.clone(),
            errors: vec![ConfigError {
                location: None,
                message,
            }],
        };
        let mut text = String::new();
        let read = std::fs::File::open(path).and_then(|f| {
            use std::io::Read;
            f.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text)
        });
        match read {
            Ok(n) if n as u64 > MAX_CONFIG_BYTES => Err(fail(format!(
                "larger than {} MiB: not a flowd configuration",
                MAX_CONFIG_BYTES >> 20
            ))),
            Ok(_) => Self::parse_named(&text, &file),
            Err(e) => Err(fail(format!("cannot read: {e}"))),
        }
    }

    /// The port with this name.
    pub fn port(&self, name: &str) -> Option<&PortConfig> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// The tunnel port, if one is declared.
    pub fn tunnel_port(&self) -> Option<&PortConfig> {
        self.ports.iter().find(|p| p.role == PortRole::Tunnel)
    }

    /// Gives ports without an explicit id the id they had in `old` (same name), so that a
    /// reload never renumbers existing ports; new ports get the lowest free ids.
    pub fn inherit_port_ids(&mut self, old: &Config) {
        let old_ids: HashMap<&str, PortId> =
            old.ports.iter().map(|p| (p.name.as_str(), p.id)).collect();
        let mut taken: BTreeSet<u32> = self
            .ports
            .iter()
            .filter(|p| p.id_explicit)
            .map(|p| p.id.0)
            .collect();
        let mut pending = Vec::new();
        for (i, p) in self.ports.iter_mut().enumerate() {
            if p.id_explicit {
                continue;
            }
            match old_ids.get(p.name.as_str()) {
                Some(id) if !taken.contains(&id.0) => {
                    p.id = *id;
                    taken.insert(id.0);
                }
                _ => pending.push(i),
            }
        }
        let mut next = 1u32;
        for i in pending {
            while taken.contains(&next) {
                next += 1;
            }
            self.ports[i].id = PortId(next);
            taken.insert(next);
        }
    }

    /// What changed from `old` to `new`. Call [`Config::inherit_port_ids`] on `new`
    /// first, or ports without an explicit id may show as changed.
    pub fn diff(old: &Config, new: &Config) -> ConfigDiff {
        let (ports_added, ports_removed, ports_changed) =
            diff_named(&old.ports, &new.ports, |p| p.name.clone());
        let (networks_added, networks_removed, networks_changed) =
            diff_named(&old.networks, &new.networks, |n| n.name.clone());
        let old_rules: BTreeMap<_, _> = old.rules.iter().map(|r| (r.key(), r)).collect();
        let new_rules: BTreeMap<_, _> = new.rules.iter().map(|r| (r.key(), r)).collect();
        let rules_removed = old_rules
            .iter()
            .filter(|(k, r)| new_rules.get(*k).is_none_or(|n| n != *r))
            .map(|(_, r)| (*r).clone())
            .collect();
        let rules_added = new_rules
            .iter()
            .filter(|(k, r)| old_rules.get(*k).is_none_or(|o| o != *r))
            .map(|(_, r)| (*r).clone())
            .collect();
        let (hotplug, ports_restart) = diff::port_changes(old, new);
        ConfigDiff {
            ports_added,
            ports_removed,
            ports_changed,
            networks_added,
            networks_removed,
            networks_changed,
            rules_added,
            rules_removed,
            datapath_changed: old.datapath != new.datapath,
            offload_changed: old.offload != new.offload,
            metrics_changed: old.metrics != new.metrics,
            control_changed: old.control != new.control,
            discovery_changed: old.discovery != new.discovery,
            hotplug,
            ports_restart,
            datapath_restart: {
                let (a, b) = (&old.datapath, &new.datapath);
                (
                    a.upcall_queue,
                    a.handler_threads,
                    a.batch,
                    a.mac_table_size,
                    a.ring_kib,
                    a.threads,
                ) != (
                    b.upcall_queue,
                    b.handler_threads,
                    b.batch,
                    b.mac_table_size,
                    b.ring_kib,
                    b.threads,
                )
            },
            flow_limits_changed: (old.datapath.flow_limit, old.datapath.max_idle_ms)
                != (new.datapath.flow_limit, new.datapath.max_idle_ms),
            offload_restart: {
                let (a, b) = (&old.offload, &new.offload);
                (a.policy, a.backend, a.queue, a.sim_capacity)
                    != (b.policy, b.backend, b.queue, b.sim_capacity)
            },
            fib_timing_changed: (old.offload.coalesce_ms, old.offload.settle_ms)
                != (new.offload.coalesce_ms, new.offload.settle_ms),
            evpn_restart: old.evpn != new.evpn,
        }
    }
}

impl std::str::FromStr for Config {
    type Err = ConfigErrors;

    fn from_str(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse_named(text, "<config>")
    }
}
