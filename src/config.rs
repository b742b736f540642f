//! The daemon's TOML configuration: parsing, validation with line numbers, and the diff
//! that a reload (SIGHUP, `flowctl reload`) applies.
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

use datapath::flow::Mac;
use datapath::{Actions, Megaflow, PortId};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

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
}

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
}

impl PortConfig {
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

/// One configuration error, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line and column, when the error has a place in the text.
    pub location: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

/// Every error found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file name used in messages (`<config>` for text not from a file).
    pub file: String,
    /// The errors, in text order.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            match e.location {
                Some((line, col)) => write!(f, "{}:{line}:{col}: {}", self.file, e.message)?,
                None => write!(f, "{}: {}", self.file, e.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors against the text they point into.
struct Errors<'t> {
    text: &'t str,
    list: Vec<(Option<usize>, String)>,
    /// Where each line starts, computed once when a position is first needed: a file
    /// with many errors is reported in linear time.
    lines: std::cell::OnceCell<Vec<usize>>,
}

impl<'t> Errors<'t> {
    fn new(text: &'t str) -> Self {
        Self {
            text,
            list: Vec::new(),
            lines: std::cell::OnceCell::new(),
        }
    }

    /// The 1-based line and column (in characters) of byte `offset`.
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let starts = self.lines.get_or_init(|| {
            std::iter::once(0)
                .chain(self.text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        });
        line_col(self.text, starts, offset)
    }

    /// The 1-based line of byte `offset`.
    fn line(&self, offset: usize) -> usize {
        self.line_col(offset).0
    }

    fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.list.push((Some(span.start), message.into()));
    }

    fn toml(&mut self, e: &toml::de::Error) {
        let msg = e.message().trim_end().to_string();
        self.list.push((e.span().map(|s| s.start), msg));
    }

    fn finish(self, file: &str) -> Result<(), ConfigErrors> {
        if self.list.is_empty() {
            return Ok(());
        }
        Err(self.into_errors(file))
    }

    fn into_errors(mut self, file: &str) -> ConfigErrors {
        self.list.sort_by_key(|(off, _)| off.unwrap_or(0));
        self.list.dedup();
        let errors = std::mem::take(&mut self.list)
            .into_iter()
            .map(|(off, message)| ConfigError {
                location: off.map(|o| self.line_col(o)),
                message,
            })
            .collect();
        ConfigErrors {
            file: file.to_string(),
            errors,
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, starts: &[usize], offset: usize) -> (usize, usize) {
    let mut off = offset.min(text.len());
    while !text.is_char_boundary(off) {
        off -= 1;
    }
    let line = starts.partition_point(|&st| st <= off).max(1);
    let start = starts[line - 1];
    (line, text[start..off].chars().count() + 1)
}

// ---------------------------------------------------------------------------------------
// The raw, spanned form of each section

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a metrics section")]
struct RawMetrics {
    listen: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a control section")]
struct RawControl {
    socket: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a discovery section")]
struct RawDiscovery {
    pf: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a port table")]
struct RawPort {
    name: Spanned<String>,
    role: PortRole,
    id: Option<Spanned<u32>>,
    vf: Option<Spanned<u32>>,
    switch_id: Option<Spanned<String>>,
    mtu: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a static MAC table")]
struct RawStaticMac {
    mac: Spanned<String>,
    vtep: Option<Spanned<String>>,
    port: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a network table")]
struct RawNetwork {
    name: Spanned<String>,
    vni: Option<Spanned<u32>>,
    vlan: Option<Spanned<u16>>,
    #[serde(default)]
    members: Vec<Spanned<String>>,
    local_vtep: Option<Spanned<String>>,
    #[serde(default)]
    remote_vteps: Vec<Spanned<String>>,
    fwmark: Option<Spanned<u32>>,
    df: Option<Spanned<bool>>,
    udp_csum: Option<Spanned<bool>>,
    #[serde(default)]
    static_macs: Vec<Spanned<RawStaticMac>>,
    evpn: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a rule table")]
struct RawRule {
    priority: Spanned<u16>,
    #[serde(rename = "match")]
    matches: Spanned<String>,
    actions: Spanned<String>,
}

/// What deserialized, section by section, with the spans validation needs.
#[derive(Default)]
struct Raw {
    datapath: Option<Spanned<DatapathConfig>>,
    offload: Option<Spanned<OffloadConfig>>,
    metrics: Option<RawMetrics>,
    control: Option<RawControl>,
    discovery: Option<RawDiscovery>,
    evpn: Option<Spanned<EvpnConfig>>,
    ports: Vec<Spanned<RawPort>>,
    networks: Vec<Spanned<RawNetwork>>,
    rules: Vec<Spanned<RawRule>>,
}

fn de_one<'i, T: Deserialize<'i>>(value: Spanned<DeValue<'i>>, errs: &mut Errors) -> Option<T> {
    match T::deserialize(ValueDeserializer::from(value)) {
        Ok(v) => Some(v),
        Err(e) => {
            errs.toml(&e);
            None
        }
    }
}

fn de_array<'i, T: Deserialize<'i>>(
    key: &str,
    value: Spanned<DeValue<'i>>,
    errs: &mut Errors,
) -> Vec<Spanned<T>> {
    let span = value.span();
    match value.into_inner() {
        DeValue::Array(items) => items
            .into_iter()
            .filter_map(|item| de_one::<Spanned<T>>(item, errs))
            .collect(),
        _ => {
            errs.at(
                span,
                format!("`{key}` must be an array of tables: write `[[{key}]]`"),
            );
            Vec::new()
        }
    }
}

const SECTIONS: &str = "datapath, offload, metrics, control, discovery, evpn, port, network, rule";

fn parse_raw<'i>(root: DeTable<'i>, errs: &mut Errors) -> Raw {
    let mut raw = Raw::default();
    for (key, value) in root {
        match key.get_ref().as_ref() {
            "datapath" => raw.datapath = de_one(value, errs),
            "offload" => raw.offload = de_one(value, errs),
            "metrics" => raw.metrics = de_one(value, errs),
            "control" => raw.control = de_one(value, errs),
            "discovery" => raw.discovery = de_one(value, errs),
            "evpn" => raw.evpn = de_one(value, errs),
            "port" => raw.ports = de_array("port", value, errs),
            "network" => raw.networks = de_array("network", value, errs),
            "rule" => raw.rules = de_array("rule", value, errs),
            other => errs.at(
                key.span(),
                format!("unknown section `{other}`, expected one of {SECTIONS}"),
            ),
        }
    }
    raw
}

// ---------------------------------------------------------------------------------------
// Validation

fn parse_ip(s: &Spanned<String>, what: &str, errs: &mut Errors) -> Option<IpAddr> {
    match s.get_ref().parse() {
        Ok(ip) => Some(ip),
        Err(_) => {
            errs.at(
                s.span(),
                format!("bad IP address `{}` for {what}", s.get_ref()),
            );
            None
        }
    }
}

/// A VTEP address: a unicast address a tunnel can be sent to or from. The unspecified
/// address, broadcast, multicast (flowd replicates head-end, it joins no group) and
/// IPv4-mapped IPv6 addresses are refused.
fn parse_vtep(s: &Spanned<String>, what: &str, errs: &mut Errors) -> Option<IpAddr> {
    let ip = parse_ip(s, what, errs)?;
    let why = match ip {
        _ if ip.is_unspecified() => Some("the unspecified address"),
        _ if ip.is_multicast() => {
            Some("a multicast address (flowd replicates to each remote VTEP; it joins no group)")
        }
        IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            Some("an IPv4-mapped IPv6 address (write the IPv4 address)")
        }
        _ => None,
    };
    match why {
        Some(why) => {
            errs.at(
                s.span(),
                format!("{what}: `{}` is {why}, not a VTEP", s.get_ref()),
            );
            None
        }
        None => Some(ip),
    }
}

fn parse_switch_id(s: &Spanned<String>, errs: &mut Errors) -> Option<String> {
    let raw = s.get_ref().trim();
    let hex = raw
        .strip_prefix("0x")
        .or_else(|| raw.strip_prefix("0X"))
        .unwrap_or(raw)
        .to_ascii_lowercase();
    let ok = !hex.is_empty()
        && hex.len().is_multiple_of(2)
        && hex.len() <= 2 * MAX_SWITCH_ID_BYTES
        && hex.bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Some(hex)
    } else {
        errs.at(
            s.span(),
            format!(
                "bad switch_id `{raw}`: expected an even number of hex digits (at most {} bytes), \
                 as in /sys/class/net/DEV/phys_switch_id",
                MAX_SWITCH_ID_BYTES
            ),
        );
        None
    }
}

/// Validates ports; returns them with ids assigned, and name -> (role, span).
fn build_ports(raw: &[Spanned<RawPort>], errs: &mut Errors) -> Vec<PortConfig> {
    let mut names: HashMap<&str, Range<usize>> = HashMap::new();
    let mut ids: HashMap<u32, Range<usize>> = HashMap::new();
    let mut tunnel: Option<Range<usize>> = None;
    for p in raw {
        let p = p.get_ref();
        let name = p.name.get_ref().as_str();
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\t']) {
            errs.at(
                p.name.span(),
                format!(
                    "bad port name `{name}`: a netdev name has 1 to 15 characters, no `/` or spaces"
                ),
            );
        }
        if let Some(first) = names.insert(name, p.name.span()) {
            let l = errs.line(first.start);
            errs.at(
                p.name.span(),
                format!("duplicate port name `{name}` (first on line {l})"),
            );
        }
        if let Some(id) = &p.id {
            if *id.get_ref() == 0 {
                errs.at(id.span(), "port id 0 is reserved; use 1 or more");
            } else if let Some(first) = ids.insert(*id.get_ref(), id.span()) {
                let l = errs.line(first.start);
                errs.at(
                    id.span(),
                    format!("duplicate port id {} (first on line {l})", id.get_ref()),
                );
            }
        }
        if let Some(vf) = &p.vf
            && p.role != PortRole::Representor
        {
            errs.at(
                vf.span(),
                format!(
                    "`vf` is only for representors, and port `{name}` is {}",
                    p.role.with_article()
                ),
            );
        }
        if let Some(mtu) = &p.mtu
            && !(MIN_MTU..=MAX_MTU).contains(mtu.get_ref())
        {
            errs.at(
                mtu.span(),
                format!("mtu {} out of range {MIN_MTU}..={MAX_MTU}", mtu.get_ref()),
            );
        }
        if p.role == PortRole::Tunnel {
            if let Some(first) = &tunnel {
                let l = errs.line(first.start);
                errs.at(p.name.span(), format!("a second tunnel port `{name}`: flowd uses one tunnel device (first on line {l})"));
            }
            tunnel.get_or_insert(p.name.span());
        }
    }
    let mut next = 1u32;
    let mut out = Vec::with_capacity(raw.len());
    for p in raw {
        let p = p.get_ref();
        let (id, explicit) = match &p.id {
            Some(id) => (*id.get_ref(), true),
            None => {
                while ids.contains_key(&next) {
                    next += 1;
                }
                next += 1;
                (next - 1, false)
            }
        };
        out.push(PortConfig {
            name: p.name.get_ref().clone(),
            role: p.role,
            id: PortId(id),
            id_explicit: explicit,
            vf: p.vf.as_ref().map(|v| *v.get_ref()),
            switch_id: p.switch_id.as_ref().and_then(|s| parse_switch_id(s, errs)),
            mtu: p.mtu.as_ref().map(|m| *m.get_ref()),
        });
    }
    out
}

/// What network validation needs to know about ports.
struct PortIndex<'a> {
    roles: HashMap<&'a str, PortRole>,
    has_tunnel: bool,
    /// Set once "no tunnel port" has been reported, so it is reported once.
    tunnel_reported: std::cell::Cell<bool>,
    discovery: bool,
}

fn build_segment(n: &Spanned<RawNetwork>, errs: &mut Errors) -> Option<Segment> {
    let r = n.get_ref();
    let name = r.name.get_ref();
    match (&r.vni, &r.vlan) {
        (Some(vni), None) => {
            if *vni.get_ref() == 0 || *vni.get_ref() > 0x00ff_ffff {
                errs.at(
                    vni.span(),
                    format!("vni {} out of range 1..=16777215", vni.get_ref()),
                );
                return None;
            }
            Some(Segment::Vni(*vni.get_ref()))
        }
        (None, Some(vlan)) => {
            if !(1..=4094).contains(vlan.get_ref()) {
                errs.at(
                    vlan.span(),
                    format!("vlan {} out of range 1..=4094", vlan.get_ref()),
                );
                return None;
            }
            Some(Segment::Vlan(*vlan.get_ref()))
        }
        (Some(_), Some(vlan)) => {
            errs.at(
                vlan.span(),
                format!("network `{name}` has both `vni` and `vlan`; give one"),
            );
            None
        }
        (None, None) => {
            errs.at(
                r.name.span(),
                format!("network `{name}` has neither `vni` nor `vlan`; give one"),
            );
            None
        }
    }
}

fn build_members(r: &RawNetwork, ports: &PortIndex, errs: &mut Errors) -> Vec<String> {
    let mut seen = BTreeSet::new();
    for m in &r.members {
        let name = m.get_ref().as_str();
        match ports.roles.get(name) {
            Some(PortRole::Representor) => {}
            Some(role) => errs.at(
                m.span(),
                format!("member `{name}` is {}, not a representor", role.with_article()),
            ),
            None if ports.discovery => {}
            None => errs.at(
                m.span(),
                format!("member `{name}` is not a declared port (declare it in a [[port]] with role = \"representor\", or use [discovery])"),
            ),
        }
        if !seen.insert(name) {
            errs.at(m.span(), format!("member `{name}` listed twice"));
        }
    }
    r.members.iter().map(|m| m.get_ref().clone()).collect()
}

fn build_static_macs(
    r: &RawNetwork,
    segment: Option<Segment>,
    ports: &PortIndex,
    errs: &mut Errors,
) -> Vec<StaticMac> {
    let mut out = Vec::new();
    for s in &r.static_macs {
        let e = s.get_ref();
        let mac = match e.mac.get_ref().parse::<Mac>() {
            Ok(m) if m.0[0] & 1 == 0 => Some(m),
            Ok(_) => {
                errs.at(
                    e.mac.span(),
                    format!("static MAC `{}` is a multicast address", e.mac.get_ref()),
                );
                None
            }
            Err(_) => {
                errs.at(
                    e.mac.span(),
                    format!(
                        "bad MAC address `{}` (expected xx:xx:xx:xx:xx:xx)",
                        e.mac.get_ref()
                    ),
                );
                None
            }
        };
        let location = match (&e.vtep, &e.port) {
            (Some(v), None) => {
                if matches!(segment, Some(Segment::Vlan(_))) {
                    errs.at(v.span(), "a static MAC behind a VTEP needs a VNI network");
                }
                parse_ip(v, "static MAC vtep", errs).map(MacLocation::Vtep)
            }
            (None, Some(p)) => {
                let name = p.get_ref().as_str();
                if !ports.roles.contains_key(name) && !ports.discovery {
                    errs.at(
                        p.span(),
                        format!("static MAC port `{name}` is not a declared port"),
                    );
                }
                Some(MacLocation::Port(name.to_string()))
            }
            _ => {
                errs.at(
                    s.span(),
                    "a static MAC needs exactly one of `vtep` and `port`",
                );
                None
            }
        };
        if let (Some(mac), Some(location)) = (mac, location) {
            out.push(StaticMac { mac, location });
        }
    }
    out
}

fn build_network(
    n: &Spanned<RawNetwork>,
    ports: &PortIndex,
    errs: &mut Errors,
) -> Option<NetworkConfig> {
    let r = n.get_ref();
    let name = r.name.get_ref();
    let segment = build_segment(n, errs);
    let members = build_members(r, ports, errs);
    let local_vtep = r
        .local_vtep
        .as_ref()
        .and_then(|v| parse_vtep(v, "local_vtep", errs));
    let remote_vteps: Vec<IpAddr> = r
        .remote_vteps
        .iter()
        .filter_map(|v| parse_vtep(v, "remote_vteps", errs))
        .collect();
    match segment {
        Some(Segment::Vni(_)) if !ports.has_tunnel && !ports.tunnel_reported.replace(true) => {
            errs.at(
                r.vni.as_ref().map_or(r.name.span(), |v| v.span()),
                format!("network `{name}` has a vni but no port has role = \"tunnel\""),
            );
        }
        Some(Segment::Vni(_)) => {}
        Some(Segment::Vlan(_)) => {
            for (key, span) in [
                ("fwmark", r.fwmark.as_ref().map(|v| v.span())),
                ("df", r.df.as_ref().map(|v| v.span())),
                ("udp_csum", r.udp_csum.as_ref().map(|v| v.span())),
            ] {
                if let Some(span) = span {
                    errs.at(
                        span,
                        format!("`{key}` on network `{name}`, which is a VLAN network"),
                    );
                }
            }
            if let Some(v) = &r.local_vtep {
                errs.at(
                    v.span(),
                    format!("`local_vtep` on network `{name}`, which is a VLAN network"),
                );
            }
            if let Some(v) = r.remote_vteps.first() {
                errs.at(
                    v.span(),
                    format!("`remote_vteps` on network `{name}`, which is a VLAN network"),
                );
            }
        }
        None => {}
    }
    if let (Some(local), Some(v)) = (local_vtep, remote_vteps.first())
        && local.is_ipv4() != v.is_ipv4()
    {
        errs.at(
            r.remote_vteps[0].span(),
            format!("remote VTEP {v} and local_vtep {local} are not the same IP version"),
        );
    }
    let static_macs = build_static_macs(r, segment, ports, errs);
    let evpn = check_evpn(r, segment, local_vtep, errs);
    Some(NetworkConfig {
        name: name.clone(),
        segment: segment?,
        members,
        local_vtep,
        remote_vteps,
        fwmark: r.fwmark.as_ref().map(|m| *m.get_ref()).filter(|m| *m != 0),
        df: r.df.as_ref().map(|v| *v.get_ref()),
        udp_csum: r.udp_csum.as_ref().map(|v| *v.get_ref()),
        static_macs,
        evpn,
    })
}

/// `evpn = true` needs a VNI network with an IPv4 `local_vtep` (the VTEP zebra
/// announces; FRR's EVPN speaks IPv4 VTEPs).
fn check_evpn(
    r: &RawNetwork,
    segment: Option<Segment>,
    local_vtep: Option<IpAddr>,
    errs: &mut Errors,
) -> bool {
    let Some(e) = r.evpn.as_ref().filter(|e| *e.get_ref()) else {
        return false;
    };
    let name = r.name.get_ref();
    match (segment, local_vtep) {
        (Some(Segment::Vlan(_)), _) => errs.at(
            e.span(),
            format!("`evpn` on network `{name}`, which is a VLAN network"),
        ),
        (Some(Segment::Vni(_)), None) => errs.at(
            e.span(),
            format!("network `{name}` has `evpn = true` but no `local_vtep` (the VTEP zebra announces)"),
        ),
        (Some(Segment::Vni(_)), Some(IpAddr::V6(ip))) => errs.at(
            e.span(),
            format!("network `{name}`: `evpn` needs an IPv4 `local_vtep` (FRR's EVPN VTEPs are IPv4), not {ip}"),
        ),
        _ => {}
    }
    true
}

fn build_networks(
    raw: &[Spanned<RawNetwork>],
    ports: &PortIndex,
    errs: &mut Errors,
) -> Vec<NetworkConfig> {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut segments: HashMap<Segment, usize> = HashMap::new();
    let mut members: HashMap<&str, (&str, usize)> = HashMap::new();
    let mut out = Vec::new();
    for n in raw {
        let r = n.get_ref();
        for m in &r.members {
            let (port, net) = (m.get_ref().as_str(), r.name.get_ref().as_str());
            match members.get(port) {
                Some((other, first)) if *other != net => {
                    let l = errs.line(*first);
                    errs.at(
                        m.span(),
                        format!(
                            "representor `{port}` is already a member of network `{other}` (line {l}): a representor belongs to one network"
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    members.insert(port, (net, m.span().start));
                }
            }
        }
        if let Some(first) = names.insert(r.name.get_ref(), r.name.span().start) {
            let l = errs.line(first);
            errs.at(
                r.name.span(),
                format!(
                    "duplicate network name `{}` (first on line {l})",
                    r.name.get_ref()
                ),
            );
        }
        let Some(net) = build_network(n, ports, errs) else {
            continue;
        };
        let seg_span = match net.segment {
            Segment::Vni(_) => r.vni.as_ref().map(|v| v.span()),
            Segment::Vlan(_) => r.vlan.as_ref().map(|v| v.span()),
        }
        .unwrap_or(r.name.span());
        if let Some(first) = segments.insert(net.segment, seg_span.start) {
            let l = errs.line(first);
            errs.at(
                seg_span,
                format!("duplicate {} (first on line {l})", net.segment),
            );
        }
        out.push(net);
    }
    out
}

fn build_rules(raw: &[Spanned<RawRule>], errs: &mut Errors) -> Vec<RuleConfig> {
    let mut keys: HashMap<(u16, Megaflow), usize> = HashMap::new();
    let mut out = Vec::new();
    for r in raw {
        let r = r.get_ref();
        let matches = match r.matches.get_ref().parse::<Megaflow>() {
            Ok(m) => Some(m),
            Err(e) => {
                errs.at(
                    r.matches.span(),
                    format!("bad rule match `{}`: {e}", r.matches.get_ref()),
                );
                None
            }
        };
        let actions = match r.actions.get_ref().parse::<RuleActionsConfig>() {
            Ok(a) => Some(a),
            Err(e) => {
                errs.at(
                    r.actions.span(),
                    format!("bad rule actions `{}`: {e}", r.actions.get_ref()),
                );
                None
            }
        };
        let (Some(matches), Some(actions)) = (matches, actions) else {
            continue;
        };
        let priority = *r.priority.get_ref();
        if let Some(first) = keys.insert((priority, matches), r.matches.span().start) {
            let l = errs.line(first);
            errs.at(
                r.matches.span(),
                format!(
                    "duplicate rule: priority {priority} with the same match (first on line {l})"
                ),
            );
        }
        out.push(RuleConfig {
            priority,
            matches,
            actions,
        });
    }
    out
}

fn build(raw: Raw, errs: &mut Errors) -> Config {
    let metrics = raw
        .metrics
        .as_ref()
        .and_then(|m| match m.listen.get_ref().parse() {
            Ok(listen) => Some(MetricsConfig { listen }),
            Err(_) => {
                errs.at(
                    m.listen.span(),
                    format!(
                        "bad metrics listen address `{}` (expected IP:PORT, e.g. 127.0.0.1:9369)",
                        m.listen.get_ref()
                    ),
                );
                None
            }
        });
    let control = match &raw.control {
        Some(c) if !c.socket.get_ref().starts_with('/') => {
            errs.at(
                c.socket.span(),
                format!(
                    "control socket `{}` must be an absolute path",
                    c.socket.get_ref()
                ),
            );
            ControlConfig::default()
        }
        Some(c) => ControlConfig {
            socket: PathBuf::from(c.socket.get_ref()),
        },
        None => ControlConfig::default(),
    };
    let discovery = raw.discovery.as_ref().map(|d| DiscoveryConfig {
        pf: d.pf.get_ref().clone(),
    });
    let datapath = match raw.datapath {
        Some(d) => {
            check_datapath(d.get_ref(), d.span(), errs);
            d.into_inner()
        }
        None => DatapathConfig::default(),
    };
    let ports = build_ports(&raw.ports, errs);
    let index = PortIndex {
        roles: ports.iter().map(|p| (p.name.as_str(), p.role)).collect(),
        has_tunnel: ports.iter().any(|p| p.role == PortRole::Tunnel),
        tunnel_reported: std::cell::Cell::new(false),
        discovery: discovery.is_some(),
    };
    let networks = build_networks(&raw.networks, &index, errs);
    let rules = build_rules(&raw.rules, errs);
    let evpn = raw.evpn.map_or_else(EvpnConfig::default, |e| {
        check_evpn_section(e.get_ref(), e.span(), errs);
        e.into_inner()
    });
    let offload = raw.offload.map_or_else(OffloadConfig::default, |o| {
        check_offload(o.get_ref(), o.span(), errs);
        o.into_inner()
    });
    Config {
        datapath,
        offload,
        metrics,
        control,
        discovery,
        evpn,
        ports,
        networks,
        rules,
    }
}

/// Upper bounds of the numeric keys: what the daemon can honour on a hypervisor (each
/// sizes something allocated up front, or a timer). Checked with the key's line.
pub mod limits {
    /// `[datapath] flow_limit`: megaflows.
    pub const FLOW_LIMIT: u64 = 16 << 20;
    /// `[datapath] max_idle_ms`: one day.
    pub const MAX_IDLE_MS: u64 = 86_400_000;
    /// `[datapath] upcall_queue`: packets waiting for the slow path.
    pub const UPCALL_QUEUE: u64 = 1 << 20;
    /// `[datapath] handler_threads`.
    pub const HANDLER_THREADS: u64 = 64;
    /// `[datapath] batch`: frames per receive batch.
    pub const BATCH: u64 = 1024;
    /// `[offload] coalesce_ms` and `settle_ms`.
    pub const OFFLOAD_MS: u64 = 60_000;
    /// `[evpn] restart_grace_ms`: one day.
    pub const RESTART_GRACE_MS: u64 = 86_400_000;
}

/// The span of `key = ...` inside a section's span, for an error on that key's line (the
/// section's own span when the key is not written: a default is never out of range).
fn key_span(errs: &Errors, section: &Range<usize>, key: &str) -> Range<usize> {
    // The section's table runs from its header to the next header (a dotted key or an
    // inline table stays on its lines too).
    let text = errs.text.get(section.start..).unwrap_or_default();
    let mut off = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let t = line.trim_start();
        if i > 0 && t.starts_with('[') {
            break;
        }
        if let Some(rest) = t.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            let at = section.start + off + (line.len() - t.len());
            return at..at + key.len();
        }
        off += line.len();
    }
    section.clone()
}

/// Reports `value` outside `min..=max` at `key`'s line.
fn check_range(
    errs: &mut Errors,
    section: (&str, &Range<usize>),
    key: &str,
    value: u64,
    (min, max): (u64, u64),
) {
    if !(min..=max).contains(&value) {
        let at = key_span(errs, section.1, key);
        errs.at(
            at,
            format!("[{}] {key} = {value} out of range {min}..={max}", section.0),
        );
    }
}

fn check_datapath(d: &DatapathConfig, at: Range<usize>, errs: &mut Errors) {
    let s = ("datapath", &at);
    check_range(
        errs,
        s,
        "flow_limit",
        d.flow_limit as u64,
        (1, limits::FLOW_LIMIT),
    );
    check_range(
        errs,
        s,
        "max_idle_ms",
        d.max_idle_ms,
        (1, limits::MAX_IDLE_MS),
    );
    check_range(
        errs,
        s,
        "upcall_queue",
        d.upcall_queue as u64,
        (1, limits::UPCALL_QUEUE),
    );
    check_range(
        errs,
        s,
        "handler_threads",
        d.handler_threads as u64,
        (1, limits::HANDLER_THREADS),
    );
    check_range(errs, s, "batch", d.batch as u64, (1, limits::BATCH));
    check_range(
        errs,
        s,
        "mac_table_size",
        d.mac_table_size as u64,
        (1, MAX_MAC_TABLE_SIZE as u64),
    );
}

fn check_offload(o: &OffloadConfig, at: Range<usize>, errs: &mut Errors) {
    let s = ("offload", &at);
    if let Some(q) = o.queue {
        check_range(errs, s, "queue", q as u64, (1, MAX_OFFLOAD_QUEUE as u64));
    }
    if let Some(c) = o.sim_capacity {
        check_range(
            errs,
            s,
            "sim_capacity",
            c as u64,
            (1, MAX_SIM_CAPACITY as u64),
        );
    }
    for (key, v) in [("coalesce_ms", o.coalesce_ms), ("settle_ms", o.settle_ms)] {
        if let Some(v) = v {
            check_range(errs, s, key, v, (0, limits::OFFLOAD_MS));
        }
    }
}

fn check_evpn_section(e: &EvpnConfig, at: Range<usize>, errs: &mut Errors) {
    if e.udp_port == 4789 || e.udp_port == 0 {
        let span = key_span(errs, &at, "udp_port");
        errs.at(
            span,
            "[evpn] udp_port must not be 0 or 4789: the shadow vxlan devices must never take data traffic",
        );
    }
    check_range(
        errs,
        ("evpn", &at),
        "restart_grace_ms",
        e.restart_grace_ms,
        (0, limits::RESTART_GRACE_MS),
    );
}

// ---------------------------------------------------------------------------------------
// Loading

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
        }
    }
}

impl std::str::FromStr for Config {
    type Err = ConfigErrors;

    fn from_str(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse_named(text, "<config>")
    }
}

fn diff_named<T: PartialEq>(
    old: &[T],
    new: &[T],
    name: impl Fn(&T) -> String,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let o: BTreeMap<String, &T> = old.iter().map(|x| (name(x), x)).collect();
    let n: BTreeMap<String, &T> = new.iter().map(|x| (name(x), x)).collect();
    let added = n.keys().filter(|k| !o.contains_key(*k)).cloned().collect();
    let removed = o.keys().filter(|k| !n.contains_key(*k)).cloned().collect();
    let changed = n
        .iter()
        .filter(|(k, v)| o.get(*k).is_some_and(|ov| ov != *v))
        .map(|(k, _)| k.clone())
        .collect();
    (added, removed, changed)
}

/// What a reload changes. Names are sorted; a changed port or network is one whose
/// settings differ under the same name (the daemon re-applies it as remove + add).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigDiff {
    /// Ports only in the new configuration.
    pub ports_added: Vec<String>,
    /// Ports only in the old configuration.
    pub ports_removed: Vec<String>,
    /// Ports in both whose settings (role, id, vf, switch id, MTU) differ.
    pub ports_changed: Vec<String>,
    /// Networks only in the new configuration.
    pub networks_added: Vec<String>,
    /// Networks only in the old configuration.
    pub networks_removed: Vec<String>,
    /// Networks in both whose settings differ.
    pub networks_changed: Vec<String>,
    /// Rules to add (new, or same priority and match with new actions).
    pub rules_added: Vec<RuleConfig>,
    /// Rules to delete (gone, or replaced by a rule in `rules_added`).
    pub rules_removed: Vec<RuleConfig>,
    /// `[datapath]` differs.
    pub datapath_changed: bool,
    /// `[offload]` differs.
    pub offload_changed: bool,
    /// `[metrics]` differs.
    pub metrics_changed: bool,
    /// `[control]` differs.
    pub control_changed: bool,
    /// `[discovery]` differs.
    pub discovery_changed: bool,
}

impl ConfigDiff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        *self == ConfigDiff::default()
    }

    /// One line per change, for logs and `flowctl reload`.
    pub fn summary(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut names = |what: &str, list: &[String]| {
            if !list.is_empty() {
                out.push(format!("{what}: {}", list.join(", ")));
            }
        };
        names("ports added", &self.ports_added);
        names("ports removed", &self.ports_removed);
        names("ports changed", &self.ports_changed);
        names("networks added", &self.networks_added);
        names("networks removed", &self.networks_removed);
        names("networks changed", &self.networks_changed);
        for r in &self.rules_removed {
            out.push(format!(
                "rule removed: priority={} match={}",
                r.priority, r.matches
            ));
        }
        for r in &self.rules_added {
            out.push(format!(
                "rule added: priority={} match={} actions={}",
                r.priority, r.matches, r.actions
            ));
        }
        for (changed, what) in [
            (self.datapath_changed, "[datapath] changed"),
            (self.offload_changed, "[offload] changed"),
            (self.metrics_changed, "[metrics] changed"),
            (self.control_changed, "[control] changed"),
            (self.discovery_changed, "[discovery] changed"),
        ] {
            if changed {
                out.push(what.to_string());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(c.rules[2].actions.to_string(), "100");
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
                "3:1: unknown field `flow_limt`, expected one of `flow_limit`, `max_idle_ms`, `upcall_queue`, `handler_threads`, `batch`, `mac_table_size`",
                "6:10: unknown variant `sometimes`, expected one of `none`, `skip_sw`, `skip_hw`, `off`",
                "9:10: bad metrics listen address `localhost` (expected IP:PORT, e.g. 127.0.0.1:9369)",
                "17:8: duplicate port name `rep0` (first on line 12)",
                "19:6: duplicate port id 1 (first on line 14)",
                "25:1: unknown field `colour`, expected one of `name`, `role`, `id`, `vf`, `switch_id`, `mtu`",
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
            .replace("actions = \"100\"", "actions = \"drop\"")
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
        assert_eq!(removed, [(50, "100".into()), (200, "drop".into())]);
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
}
