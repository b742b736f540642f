//! The control protocol: one JSON object per line each way over a Unix socket.
//!
//! A request names its command in `"command"`:
//! `{"command":"dump_flows","filter":"offloaded"}`,
//! `{"command":"dump_flows","select":{"remote":"10.0.0.2"},"summary":true}`,
//! `{"command":"show"}`,
//! `{"command":"rules_add","priority":100,"match":"in_port(1)","actions":"normal"}`.
//! The answer is `{"ok":{"type":"flows","data":[...]}}` or `{"err":{"message":"..."}}`.
//! A `dump_flows` request with `"stream":1` is answered line by line instead (a header,
//! one line per flow, a trailer): see [`super::stream`].
//! Unknown fields are ignored and fields added later carry `#[serde(default)]`, so older
//! clients and daemons keep understanding each other.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The largest request line the server accepts, in bytes (newline included).
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// How much of a request an error answer quotes back, in bytes: a longer quote is cut
/// there and followed by `... (N bytes)` (see [`elide`]).
pub const MAX_ECHO_BYTES: usize = 200;

/// `text` when it is at most `max` bytes long, else its first `max` bytes (cut at a
/// character boundary) followed by `... (N bytes)`, N being its whole length: what an
/// error answer quotes of a client's input.
pub fn elide(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}... ({} bytes)", &text[..cut], text.len()).into()
}

/// Which flows `dump-flows` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowFilter {
    /// Every flow.
    #[default]
    All,
    /// Flows with a filter installed (tc or simulated eswitch).
    Offloaded,
    /// Flows in flowd's software datapath only.
    Software,
}

impl Request {
    /// `dump-flows` of every flow `filter` accepts, as rows.
    pub fn dump_flows(filter: FlowFilter) -> Self {
        Request::DumpFlows {
            filter,
            select: FlowSelect::default(),
            summary: false,
            stream: 0,
        }
    }

    /// `dump-flows` of the flows `filter` and `select` pass, streamed
    /// ([`super::stream`]).
    pub fn dump_flows_streamed(filter: FlowFilter, select: FlowSelect) -> Self {
        Request::DumpFlows {
            filter,
            select,
            summary: false,
            stream: super::stream::STREAM_VERSION,
        }
    }

    /// Whether the answer is streamed: rows (not a summary) asked with `stream`.
    pub fn streams(&self) -> bool {
        matches!(self, Request::DumpFlows { stream, summary: false, .. } if *stream > 0)
    }
}

impl FlowFilter {
    /// Whether a flow placed as `p` passes the filter.
    pub fn accepts(self, p: &Placement) -> bool {
        match self {
            FlowFilter::All => true,
            FlowFilter::Offloaded => p.offloaded,
            FlowFilter::Software => !p.offloaded,
        }
    }
}

/// Which flows `dump-flows` lists besides their placement: every condition given must
/// hold. Names are resolved by the daemon (an unknown one is an error answer).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FlowSelect {
    /// Flows entering on this port (its name, as `show` lists it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// Flows of this network: entering on one of its representors, or carried in its
    /// VNI (encapsulated toward a remote VTEP or decapsulated from one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Flows toward this remote VTEP (encapsulated to it) or from it (decapsulated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<std::net::IpAddr>,
    /// Software flows kept there for this reason category (`mtu`, `no_route`, ... as
    /// `dump-flows` shows them and `stats` counts them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// At most this many flows (the first ones found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

impl FlowSelect {
    /// Whether it selects every flow (nothing set).
    pub fn is_all(&self) -> bool {
        *self == Self::default()
    }
}

/// `dump-flows --summary`: how many flows the selection holds, by placement and port.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FlowSummary {
    /// Flows selected.
    pub flows: u64,
    /// Of which a filter carries (tc or the simulated eswitch).
    pub offloaded: u64,
    /// Of which are in flowd's software datapath only.
    pub software: u64,
    /// Flows by placement: `tc`, `sim`, or `software (<reason category>)`.
    pub by_placement: BTreeMap<String, u64>,
    /// Flows by the port they enter on.
    pub by_port: BTreeMap<String, u64>,
}

/// What flowctl asks the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Request {
    /// List flows.
    DumpFlows {
        /// Which ones, by placement.
        #[serde(default)]
        filter: FlowFilter,
        /// Which ones, by port, network, remote VTEP or reason; and how many.
        #[serde(default, skip_serializing_if = "FlowSelect::is_all")]
        select: FlowSelect,
        /// Counts only ([`ResponseBody::FlowSummary`]), no rows.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        summary: bool,
        /// The highest stream version the client reads ([`super::stream`]); 0: the
        /// whole answer in one line. A summary is always one line.
        #[serde(default, skip_serializing_if = "is_zero")]
        stream: u32,
    },
    /// List ports.
    Show,
    /// List remote tunnel endpoints and how they resolve.
    Tunnels,
    /// Explain what the slow path does with a flow (datapath flow syntax).
    Trace {
        /// The flow, e.g. `in_port(1),eth(src=..,dst=..),eth_type(0x0800)`.
        flow: String,
    },
    /// Delete every flow (software and offloaded); they come back on the next packet.
    DelFlows,
    /// Counters.
    Stats,
    /// Add a rule at run time.
    RulesAdd {
        /// Higher wins.
        priority: u16,
        /// Datapath flow syntax.
        r#match: String,
        /// Datapath actions, `normal` or `drop`.
        actions: String,
    },
    /// Delete the rule with this priority and match.
    RulesDel {
        /// Its priority.
        priority: u16,
        /// Its match, in datapath flow syntax.
        r#match: String,
    },
    /// List rules.
    RulesList,
    /// Re-read the configuration file and apply what changed.
    Reload {
        /// Apply a file with no representor (which unplugs them all).
        #[serde(default)]
        allow_empty: bool,
    },
    /// Each network's stations and flood list, with their origin (static, evpn,
    /// learned).
    Fdb {
        /// Only this network (by name).
        #[serde(default)]
        network: Option<String>,
    },
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Success, with a body.
    Ok(ResponseBody),
    /// Failure, with a message for the operator.
    Err {
        /// What went wrong.
        message: String,
    },
}

impl Response {
    /// An error response.
    pub fn err(message: impl Into<String>) -> Self {
        Response::Err {
            message: message.into(),
        }
    }
}

/// A successful answer's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResponseBody {
    /// `dump-flows`.
    Flows(Vec<FlowRow>),
    /// `show`.
    Ports(Vec<PortRow>),
    /// `tunnels`.
    Tunnels(Vec<TunnelRow>),
    /// `trace`.
    Trace(TraceBody),
    /// `stats`.
    Stats(Box<StatsBody>),
    /// `rules list`.
    Rules(Vec<RuleRow>),
    /// A command that changes something (`del-flows`, `rules add|del`, `reload`).
    Done(DoneBody),
    /// `fdb`.
    Fdb(Vec<FdbNetworkRow>),
    /// `dump-flows --summary`.
    FlowSummary(FlowSummary),
    /// A streamed `dump-flows`' header: its rows follow, one line each
    /// ([`super::stream`]).
    FlowStream(super::stream::DumpStart),
}

impl ResponseBody {
    /// The body's content as JSON, without the type tag (what `--json` prints).
    pub fn to_json(&self) -> serde_json::Value {
        let tagged = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        match tagged {
            serde_json::Value::Object(mut m) => m.remove("data").unwrap_or(serde_json::Value::Null),
            other => other,
        }
    }
}

/// Where a flow lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Placement {
    /// Whether a filter carries it.
    pub offloaded: bool,
    /// `tc`, `sim` or `sw`.
    pub dp: String,
    /// For tc filters: whether the hardware holds it (`in_hw`) or only the kernel's
    /// software tc path (`not_in_hw`); `None` when unknown or not applicable.
    #[serde(default)]
    pub in_hw: Option<bool>,
    /// Why the flow is in software.
    #[serde(default)]
    pub reason: Option<String>,
    /// The reason's stable category (`mtu`, `no_route`, `neighbour`, ...): what
    /// `flowctl stats` and the metrics count software flows by.
    #[serde(default)]
    pub category: Option<String>,
    /// The device the filter sits on.
    #[serde(default)]
    pub device: Option<String>,
}

/// One flow in `dump-flows`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRow {
    /// The flow's id.
    pub id: u64,
    /// The masked key in datapath syntax.
    pub flow: String,
    /// Packets (software and offloaded together).
    pub packets: u64,
    /// Of which flowd's software datapath forwarded (the rest: tc or the NIC).
    #[serde(default)]
    pub sw_packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// Milliseconds since the last packet; `None` if never used.
    pub used_ms_ago: Option<u64>,
    /// Where the flow lives.
    pub placement: Placement,
    /// Its actions in datapath syntax.
    pub actions: String,
}

/// One port in `show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRow {
    /// Netdev name.
    pub name: String,
    /// Interface index, if the netdev exists.
    pub ifindex: Option<u32>,
    /// Datapath port number.
    pub id: u32,
    /// `representor`, `uplink` or `tunnel`.
    pub role: String,
    /// MTU, as the kernel reports it now.
    pub mtu: Option<u32>,
    /// Whether the netdev is up (administratively and operationally) now; `false` while
    /// it is gone.
    #[serde(default)]
    pub up: Option<bool>,
    /// Switch id (hex), if any.
    pub switch_id: Option<String>,
    /// VF number for representors.
    pub vf: Option<u32>,
}

/// One tunnel lookup key in `tunnels`: a remote VTEP, with the fixed source and the mark
/// its flows use (flows toward one remote with different sources or marks may take
/// different paths, each its own row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelRow {
    /// The remote VTEP address.
    pub endpoint: String,
    /// The key's fixed source (a network's `local_vtep`); `None`: the route's source.
    #[serde(default)]
    pub from: Option<String>,
    /// The key's mark (a network's `fwmark`; 0: none).
    #[serde(default)]
    pub mark: u32,
    /// The egress uplink, if resolved.
    pub uplink: Option<String>,
    /// The outer source address.
    pub source_ip: Option<String>,
    /// The next hop (gateway, or the endpoint when on-link).
    pub next_hop: Option<String>,
    /// The next hop's MAC, if resolved.
    pub mac: Option<String>,
    /// Why the key has no usable route, if so.
    #[serde(default)]
    pub problem: Option<String>,
    /// The path MTU (the uplink's MTU).
    pub path_mtu: Option<u32>,
    /// Flows toward this endpoint.
    pub flows: u64,
    /// Of which offloaded.
    pub offloaded: u64,
    /// Of which in software.
    pub software: u64,
    /// What the host's IPsec policy does to the path (`policy 12 esp transport spi
    /// 0x3`, `policy 12 esp transport (no SA)`, `policy 4 block`); `None`: nothing, the
    /// path is in clear.
    #[serde(default)]
    pub ipsec: Option<String>,
}

/// `trace`'s answer: the slow path's reasoning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceBody {
    /// The steps, one per line, already indented.
    pub lines: Vec<String>,
    /// The resulting datapath actions.
    pub actions: String,
    /// The megaflow that would be installed.
    pub megaflow: String,
}

/// `stats`: named counters. Unknown counters go in `other`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct StatsBody {
    /// Misses sent to the slow path.
    pub upcalls: u64,
    /// Misses dropped because the upcall queue was full.
    pub upcall_drops: u64,
    /// Flows in the cache now.
    pub flows: u64,
    /// Of which offloaded.
    pub flows_offloaded: u64,
    /// Flows installed since start.
    pub flow_setups: u64,
    /// Successful offloads since start.
    pub offload_ok: u64,
    /// Refused or failed offloads by reason (`mtu`, `neighbour`, `switch_id`, ...).
    pub offload_failed_by_reason: BTreeMap<String, u64>,
    /// Migrations by kind (`moved`, `to_software`, `to_hardware`, ...).
    pub migrations_by_kind: BTreeMap<String, u64>,
    /// Route, neighbour and link events seen.
    pub fib_events: u64,
    /// Full re-dumps after a netlink overrun.
    pub resyncs: u64,
    /// Revalidator passes.
    pub revalidator_runs: u64,
    /// Stations in the MAC table now (every network; `flowctl fdb` per network).
    pub mac_entries: u64,
    /// The MAC table's size (`[datapath] mac_table_size`).
    pub mac_limit: u64,
    /// The most learned stations one port may hold (a quarter of the table).
    pub mac_port_quota: u64,
    /// Stations evicted because the table was full (the oldest learned).
    pub mac_evictions: u64,
    /// Stations evicted because their port held its quota (that port's oldest).
    pub mac_quota_evictions: u64,
    /// The flow limit (`[datapath] flow_limit`).
    pub flow_limit: u64,
    /// The most flows one ingress port may own (a quarter of the limit).
    pub flow_port_quota: u64,
    /// Misses dropped because their port had its share of the upcall queue (included
    /// in `upcall_drops`).
    pub upcall_port_share_drops: u64,
    /// Malformed frames dropped, by reason (`ipv4_ihl`, `tcp_truncated`, ...; every
    /// reason listed).
    pub malformed: BTreeMap<String, u64>,
    /// Other counters.
    pub other: BTreeMap<String, u64>,
    /// Per datapath port (by name): `rx_large` (frames past a ring frame, received whole),
    /// `rx_gso` (super-frames), `rx_truncated` (frames that could not be read whole),
    /// `kernel_drops` (the ring or socket buffer was full), `tx_dropped`, `errors`,
    /// `down` (1 while its netdev is gone), `ring_frames`, `ring_mtu`; and what the port
    /// holds of the shared tables: `rx_malformed` (malformed frames dropped),
    /// `upcall_drops` (its misses the slow path did not take), `mac_entries` (stations
    /// learned behind it), `mac_quota_evictions`, `flows` (flows it owns as ingress),
    /// `flow_quota_refusals`.
    pub ports: BTreeMap<String, BTreeMap<String, u64>>,
}

/// One rule in `rules list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRow {
    /// The rule's id.
    pub id: u64,
    /// Higher wins.
    pub priority: u16,
    /// Datapath flow syntax.
    pub r#match: String,
    /// Actions (datapath syntax, `normal` or `drop`).
    pub actions: String,
    /// `config` (from the file) or `runtime` (`flowctl rules add`).
    #[serde(default)]
    pub origin: String,
}

/// One network in `fdb`: its flood list and its stations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbNetworkRow {
    /// The network's name.
    pub network: String,
    /// `vni 100` or `vlan 30`.
    pub segment: String,
    /// With `evpn = true`: its shadow devices (`evbr-100 evvx-100 evad-100`).
    #[serde(default)]
    pub evpn: Option<String>,
    /// Remote VTEPs that get a copy of flooded frames (head-end replication).
    #[serde(default)]
    pub flood: Vec<FloodRow>,
    /// Known stations.
    #[serde(default)]
    pub stations: Vec<StationRow>,
    /// The network's stations by origin (`learned`, `static`, `evpn`).
    #[serde(default)]
    pub counts: BTreeMap<String, u64>,
    /// The whole MAC table (every network): stations, size, a port's quota.
    #[serde(default)]
    pub table: Option<MacTableRow>,
}

/// The MAC table as a whole, in `fdb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct MacTableRow {
    /// Stations now, every network.
    pub entries: u64,
    /// Its size.
    pub limit: u64,
    /// The most learned stations one port may hold.
    pub port_quota: u64,
    /// Evicted because the table was full.
    pub evictions: u64,
    /// Evicted because their port held its quota.
    pub quota_evictions: u64,
}

/// A remote VTEP of a flood list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloodRow {
    /// The VTEP.
    pub vtep: String,
    /// `static` (`remote_vteps`) or `evpn` (a type-3 route, through zebra).
    pub origin: String,
}

/// A station in `fdb`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StationRow {
    /// Its MAC.
    pub mac: String,
    /// A local port (`rep0`, `rep0 vlan 20`) or `vtep 192.0.2.2`.
    pub location: String,
    /// `learned` (from traffic), `static` (`static_macs`) or `evpn` (a type-2 route,
    /// through zebra).
    pub origin: String,
    /// For learned stations, milliseconds since last seen.
    #[serde(default)]
    pub age_ms: Option<u64>,
}

/// The answer to a command that changes something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DoneBody {
    /// What was done, for a human.
    pub message: String,
    /// How many things were affected (flows deleted, rules added...), when it applies.
    #[serde(default)]
    pub count: Option<u64>,
}

impl DoneBody {
    /// A body with a message.
    pub fn message(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            count: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt_req(r: Request) {
        let s = serde_json::to_string(&r).unwrap();
        assert!(!s.contains('\n'));
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r, "{s}");
    }

    fn rt_resp(r: Response) {
        let s = serde_json::to_string(&r).unwrap();
        assert!(!s.contains('\n'));
        assert_eq!(serde_json::from_str::<Response>(&s).unwrap(), r, "{s}");
    }

    #[test]
    fn requests_round_trip() {
        for r in [
            Request::dump_flows(FlowFilter::All),
            Request::dump_flows(FlowFilter::Offloaded),
            Request::dump_flows(FlowFilter::Software),
            Request::DumpFlows {
                filter: FlowFilter::Software,
                select: FlowSelect {
                    port: Some("rep0".into()),
                    network: Some("tenant-a".into()),
                    remote: Some("10.0.0.2".parse().unwrap()),
                    reason: Some("mtu".into()),
                    limit: Some(10),
                },
                summary: true,
                stream: 0,
            },
            Request::dump_flows_streamed(FlowFilter::Offloaded, FlowSelect::default()),
            Request::Show,
            Request::Tunnels,
            Request::Trace {
                flow: "in_port(1),eth_type(0x0800)".into(),
            },
            Request::DelFlows,
            Request::Stats,
            Request::RulesAdd {
                priority: 5,
                r#match: "in_port(1)".into(),
                actions: "normal".into(),
            },
            Request::RulesDel {
                priority: 5,
                r#match: "in_port(1)".into(),
            },
            Request::RulesList,
            Request::Reload { allow_empty: false },
            Request::Fdb { network: None },
            Request::Fdb {
                network: Some("tenant-a".into()),
            },
        ] {
            rt_req(r);
        }
    }

    #[test]
    fn request_wire_form() {
        let s = serde_json::to_string(&Request::RulesDel {
            priority: 7,
            r#match: "in_port(2)".into(),
        })
        .unwrap();
        assert_eq!(
            s,
            r#"{"command":"rules_del","priority":7,"match":"in_port(2)"}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"command":"dump_flows"}"#).unwrap(),
            Request::dump_flows(FlowFilter::All)
        );
        assert_eq!(
            serde_json::to_string(&Request::Show).unwrap(),
            r#"{"command":"show"}"#
        );
        // The selection travels only when given: an older daemon reads a plain dump.
        assert_eq!(
            serde_json::to_string(&Request::dump_flows(FlowFilter::All)).unwrap(),
            r#"{"command":"dump_flows","filter":"all"}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(
                r#"{"command":"dump_flows","select":{"port":"rep0","limit":5},"summary":true}"#
            )
            .unwrap(),
            Request::DumpFlows {
                filter: FlowFilter::All,
                select: FlowSelect {
                    port: Some("rep0".into()),
                    limit: Some(5),
                    ..FlowSelect::default()
                },
                summary: true,
                stream: 0,
            }
        );
        // A streamed dump says so; a summary is never streamed.
        let streamed = Request::dump_flows_streamed(FlowFilter::All, FlowSelect::default());
        assert_eq!(
            serde_json::to_string(&streamed).unwrap(),
            r#"{"command":"dump_flows","filter":"all","stream":1}"#
        );
        assert!(streamed.streams());
        assert!(!Request::dump_flows(FlowFilter::All).streams());
        let summary: Request =
            serde_json::from_str(r#"{"command":"dump_flows","summary":true,"stream":1}"#).unwrap();
        assert!(!summary.streams());
        assert!(serde_json::from_str::<Request>(r#"{"command":"explode"}"#).is_err());
        // Fields a newer client adds are ignored by an older daemon.
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"command":"show","x":1}"#).unwrap(),
            Request::Show
        );
        assert!(serde_json::from_str::<Request>(r#"{"command":"trace"}"#).is_err());
        assert!(
            serde_json::from_str::<Request>(
                r#"{"command":"rules_add","priority":-1,"match":"","actions":""}"#
            )
            .is_err()
        );
    }

    #[test]
    fn responses_round_trip() {
        let flow = FlowRow {
            id: 1,
            flow: "in_port(1),eth_type(0x0800)".into(),
            packets: 10,
            sw_packets: 0,
            bytes: 1000,
            used_ms_ago: Some(512),
            placement: Placement {
                offloaded: true,
                dp: "tc".into(),
                in_hw: Some(true),
                reason: None,
                category: None,
                device: Some("rep0".into()),
            },
            actions: "2".into(),
        };
        let mut stats = StatsBody {
            upcalls: 3,
            ..Default::default()
        };
        stats.offload_failed_by_reason.insert("mtu".into(), 2);
        for r in [
            Response::Ok(ResponseBody::Flows(vec![flow])),
            Response::Ok(ResponseBody::Flows(vec![])),
            Response::Ok(ResponseBody::Ports(vec![PortRow {
                name: "rep0".into(),
                ifindex: Some(7),
                id: 1,
                role: "representor".into(),
                mtu: Some(1500),
                up: Some(true),
                switch_id: Some("00aabb".into()),
                vf: Some(0),
            }])),
            Response::Ok(ResponseBody::Tunnels(vec![TunnelRow {
                endpoint: "198.51.100.2".into(),
                from: Some("192.0.2.1".into()),
                mark: 5,
                uplink: None,
                source_ip: None,
                next_hop: None,
                mac: None,
                problem: Some("no route".into()),
                path_mtu: None,
                flows: 0,
                offloaded: 0,
                software: 0,
                ipsec: Some("policy 12 esp transport (no SA)".into()),
            }])),
            Response::Ok(ResponseBody::Trace(TraceBody {
                lines: vec!["rule 1".into()],
                actions: "drop".into(),
                megaflow: "in_port(1)".into(),
            })),
            Response::Ok(ResponseBody::Stats(Box::new(stats))),
            Response::Ok(ResponseBody::Rules(vec![RuleRow {
                id: 1,
                priority: 1,
                r#match: "<all>".into(),
                actions: "normal".into(),
                origin: "config".into(),
            }])),
            Response::Ok(ResponseBody::Done(DoneBody {
                message: "deleted 3 flows".into(),
                count: Some(3),
            })),
            Response::Ok(ResponseBody::Fdb(vec![FdbNetworkRow {
                network: "tenant-a".into(),
                segment: "vni 100".into(),
                evpn: Some("evbr-100 evvx-100 evad-100".into()),
                flood: vec![FloodRow {
                    vtep: "192.0.2.2".into(),
                    origin: "evpn".into(),
                }],
                stations: vec![StationRow {
                    mac: "02:00:00:00:00:01".into(),
                    location: "vtep 192.0.2.2".into(),
                    origin: "evpn".into(),
                    age_ms: None,
                }],
                counts: Default::default(),
                table: None,
            }])),
            Response::err("no such rule"),
        ] {
            rt_resp(r);
        }
    }

    #[test]
    fn response_wire_form_and_json_body() {
        let r = Response::err("boom");
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"err":{"message":"boom"}}"#
        );
        let body = ResponseBody::Done(DoneBody::message("ok"));
        assert_eq!(
            serde_json::to_string(&Response::Ok(body.clone())).unwrap(),
            r#"{"ok":{"type":"done","data":{"message":"ok","count":null}}}"#
        );
        assert_eq!(
            body.to_json(),
            serde_json::json!({"message": "ok", "count": null})
        );
        // Stats from a newer daemon with counters this client does not know still parse.
        let s: StatsBody = serde_json::from_str(r#"{"upcalls":1}"#).unwrap();
        assert_eq!(s.upcalls, 1);
    }

    #[test]
    fn elide_cuts_long_quotes_at_a_character_boundary() {
        assert_eq!(elide("short", 200), "short");
        let long = "x".repeat(1 << 20);
        let e = elide(&long, MAX_ECHO_BYTES);
        assert_eq!(e, format!("{}... (1048576 bytes)", "x".repeat(200)));
        // 'é' is two bytes: a cut inside it moves back.
        assert_eq!(elide("aéé", 2), "a... (5 bytes)");
    }
}
