//! The daemon's counters as one typed [`Snapshot`], taken in one place from where each
//! lives (the datapath thread's published counters, the slow path and its flow table,
//! the MAC table, the offload worker, fibwatch, the EVPN side, the daemon's own loops
//! and the listeners' connection counters).
//!
//! Two readers, neither going through the other: `flowctl stats` renders it as its wire
//! body ([`Snapshot::body`], the control protocol's [`StatsBody`], unchanged), and the
//! metrics endpoint publishes it under Prometheus names
//! ([`super::metrics::publish`]). Every counter's stable name is written once, here:
//! the datapath-wide ones in [`Snapshot::other`], each port's in
//! [`PortCounters::named`], each with its [`Kind`] (a total since start, or a level
//! now) so that the metrics know a counter from a gauge without looking at its name.
//! Flows in software are counted by their offload reason's stable category
//! ([`offload::SoftwareReason::category`]); nothing parses a reason's text.
//!
//! Cost: one pass over the offload placements (under the worker's lock), a clone of the
//! datapath's published counters and a read of the MAC table; nothing on the packet
//! path.

use super::Daemon;
use super::evpn::EvpnStats;
use crate::control::proto::StatsBody;
use crate::control::server::CONTROL_CONNECTIONS;
use crate::control::slots::ConnStats;
use datapath::PortId;
use datapath::cache::PortFlowStats;
use datapath::dpif::DpStats;
use datapath::flow::Malformed;
use datapath::port::PortStats;
use datapath::slowpath::mac::PortMacStats;
use datapath::slowpath::upcall::UpcallStats;
use datapath::slowpath::{MacStats, RevalStats};
use fibwatch::WatcherStats;
use offload::{AdoptionReport, OffloadCounters};
use std::collections::BTreeMap;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;

/// How a counter is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A total since the daemon started: it only grows (a Prometheus counter).
    Total,
    /// How things are now: it goes up and down (a Prometheus gauge).
    Level,
}

/// The flow table's size and limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flows {
    /// Flows in the cache now.
    pub installed: u64,
    /// The flow limit (`[datapath] flow_limit`).
    pub limit: u64,
    /// The most flows one ingress port may own.
    pub port_quota: u64,
}

/// The MAC table's size, limits and counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Macs {
    /// Stations in the table now.
    pub entries: u64,
    /// The table's size (`[datapath] mac_table_size`).
    pub limit: u64,
    /// The most learned stations one port may hold.
    pub port_quota: u64,
    /// Its counters (evictions, ...).
    pub stats: MacStats,
}

/// What the offload worker reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offload {
    /// Flows a filter carries.
    pub offloaded: u64,
    /// Flows in software, by their reason's stable category (only categories with
    /// flows; [`offload::SoftwareReason::CATEGORIES`] lists them all).
    pub software: BTreeMap<&'static str, u64>,
    /// The offloader's decisions (re-judged, retries, migrations, ...).
    pub counters: OffloadCounters,
    /// Flows whose offload waits (deferred).
    pub deferred: u64,
    /// Requests queued for the worker.
    pub backlog: u64,
}

/// One datapath port's counters, from each table that knows the port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Its I/O counters and ring (a port with a socket or a memory port).
    pub io: Option<PortStats>,
    /// The stations learned behind it.
    pub macs: Option<PortMacStats>,
    /// The flows it owns as ingress.
    pub flows: Option<PortFlowStats>,
}

impl PortCounters {
    /// Its counters under their stable names (`flowctl stats`' per-port rows, the
    /// metrics' `flowd_port_total` and `flowd_port`), each with its kind.
    pub fn named(&self) -> Vec<(&'static str, Kind, u64)> {
        use Kind::{Level, Total};
        let mut out = Vec::with_capacity(15);
        if let Some(p) = &self.io {
            out.extend([
                ("rx_truncated", Total, p.rx_truncated),
                ("rx_large", Total, p.rx_large),
                ("rx_gso", Total, p.rx_gso),
                ("kernel_drops", Total, p.kernel_drops),
                ("tx_dropped", Total, p.tx_dropped),
                ("errors", Total, p.errors),
                ("down", Level, u64::from(p.down)),
                ("ring_frames", Level, u64::from(p.ring_frames)),
                ("ring_mtu", Level, u64::from(p.ring_mtu)),
                ("rx_malformed", Total, p.rx_malformed),
                ("upcall_drops", Total, p.upcall_drops),
            ]);
        }
        if let Some(m) = &self.macs {
            out.push(("mac_entries", Level, m.entries as u64));
            out.push(("mac_quota_evictions", Total, m.quota_evicted));
        }
        if let Some(f) = &self.flows {
            out.push(("flows", Level, f.flows as u64));
            out.push(("flow_quota_refusals", Total, f.refused));
        }
        out
    }
}

/// The daemon's counters at one moment; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The upcall queue and the handlers.
    pub upcalls: UpcallStats,
    /// The datapath thread's counters (its per-port rows are in [`Snapshot::ports`]).
    pub datapath: DpStats,
    /// First packets dropped because the packet-out queue was full.
    pub packet_out_drops: u64,
    /// The revalidator's sweeps and what they removed.
    pub reval: RevalStats,
    /// The flow table.
    pub flows: Flows,
    /// The MAC table.
    pub macs: Macs,
    /// The offload worker, if offload runs.
    pub offload: Option<Offload>,
    /// fibwatch, if it runs.
    pub fib: Option<WatcherStats>,
    /// fibwatch events the daemon handled, by kind (`path`, `link`, `link_gone`).
    pub fib_events: BTreeMap<String, u64>,
    /// Port sockets reopened.
    pub ports_reopened: u64,
    /// Reopens that failed.
    pub port_reopen_errors: u64,
    /// What start-up adoption of a previous run's filters did.
    pub adoption: AdoptionReport,
    /// The EVPN side, if it runs.
    pub evpn: Option<EvpnStats>,
    /// The control socket's connections closed for a deadline, evicted, refused.
    pub control_conns: ConnStats,
    /// The metrics endpoint's.
    pub metrics_conns: ConnStats,
    /// Each port's counters, by name.
    pub ports: BTreeMap<String, PortCounters>,
}

impl Snapshot {
    /// The daemon's counters now.
    pub fn take(d: &Daemon) -> Self {
        let engine = d.switch.engine();
        let mut datapath = d.switch.datapath_stats();
        let io = std::mem::take(&mut datapath.ports);
        let (macs, mac_ports) = {
            let sp = engine.read();
            let t = sp.macs();
            let cfg = t.config();
            let macs = Macs {
                entries: t.len() as u64,
                limit: cfg.max_entries as u64,
                port_quota: cfg.port_quota() as u64,
                stats: t.stats(),
            };
            (macs, t.port_stats())
        };
        let table = engine.table();
        let flows = Flows {
            installed: table.len() as u64,
            limit: table.limit() as u64,
            port_quota: table.port_quota() as u64,
        };
        let ports = ports_by_name(d, io, mac_ports, table.port_stats());
        let fib_events = d
            .counters
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Self {
            upcalls: engine.counters().snapshot(),
            datapath,
            packet_out_drops: d.switch.packet_out_drops(),
            reval: engine.reval_stats(),
            flows,
            macs,
            offload: offload(d),
            fib: d.watcher.as_ref().and_then(|w| w.stats().ok()),
            fib_events,
            ports_reopened: d.counters.ports_reopened.load(Ordering::Relaxed),
            port_reopen_errors: d.counters.reopen_errors.load(Ordering::Relaxed),
            adoption: d.adoption,
            evpn: d.evpn.stats(),
            control_conns: CONTROL_CONNECTIONS.snapshot(),
            metrics_conns: super::metrics::SCRAPE_CONNECTIONS.snapshot(),
            ports,
        }
    }

    /// Misses dropped: queue full, too big or no handler, and port share.
    pub fn upcall_drops(&self) -> u64 {
        let u = &self.upcalls;
        u.queue_full + u.dropped_other + u.port_share
    }

    /// Flows a filter carries (0 without offload).
    pub fn offloaded(&self) -> u64 {
        self.offload.as_ref().map_or(0, |o| o.offloaded)
    }

    /// Flows in software by reason category (empty without offload).
    pub fn software_by_category(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.offload
            .iter()
            .flat_map(|o| o.software.iter().map(|(k, v)| (*k, *v)))
    }

    /// Flows in software for reasons of `category` (0 without offload).
    pub fn software(&self, category: &str) -> u64 {
        let by = self.offload.as_ref().map(|o| &o.software);
        by.and_then(|m| m.get(category)).copied().unwrap_or(0)
    }

    /// Offloaded flows that moved, by kind (none without offload).
    pub fn migrations(&self) -> Vec<(&'static str, u64)> {
        self.offload.as_ref().map_or_else(Vec::new, |o| {
            let c = &o.counters;
            vec![
                ("moved", c.moved),
                ("to_software", c.to_software),
                ("to_offload", c.to_offload),
            ]
        })
    }

    /// Route, neighbour and link events fibwatch read.
    pub fn fib_changes(&self) -> u64 {
        self.fib.map_or(0, |f| f.changes)
    }

    /// Full re-dumps after an overrun (the initial dump not counted).
    pub fn fib_resyncs(&self) -> u64 {
        self.fib.map_or(0, |f| f.full_resyncs.saturating_sub(1))
    }

    /// Malformed frames dropped, by reason (every reason).
    pub fn malformed(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Malformed::ALL
            .iter()
            .map(|m| (m.name(), self.datapath.malformed[m.index()]))
    }

    /// The other counters (all totals but `offload_deferred` and `offload_backlog`),
    /// under their stable names: `flowctl stats`' `other`, the metrics'
    /// `flowd_datapath_total`.
    pub fn other(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .datapath_named()
            .into_iter()
            .chain(self.offload_named())
            .chain(self.daemon_named())
            .chain(self.evpn_named())
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        out.extend(self.control_conns.named("control"));
        out.extend(self.metrics_conns.named("metrics"));
        out.extend(
            self.fib_events
                .iter()
                .map(|(kind, n)| (format!("fib_{kind}_events"), *n)),
        );
        out
    }

    fn datapath_named(&self) -> Vec<(&'static str, u64)> {
        let dp = &self.datapath;
        let x = &dp.exec;
        vec![
            ("rx_packets", dp.rx),
            ("cache_hits", dp.hits),
            ("decapsulated", dp.decap),
            ("tc_carried", dp.tc_carried),
            ("encap_no_route", x.no_route),
            ("encap_next_hop_unresolved", x.next_hop_unresolved),
            ("encap_not_managed", x.not_managed),
            ("encap_too_big", x.encap_too_big),
            ("encap_too_big_replies", x.too_big_replies),
            ("encap_fragmented", x.fragmented),
            ("gso_passed", x.gso_passed),
            ("gso_segmented", x.gso_segmented),
            ("gso_segments", x.gso_segments),
            ("udp_super_frames", x.udp_super_frames),
            ("tunnel_super_frames", x.tunnel_super_frames),
            ("csum_completed", x.csum_completed),
            ("offload_metadata_invalid", x.offload_invalid),
            ("ipsec_kernel_out", x.kernel_out),
            ("ipsec_no_sa", x.ipsec_no_sa),
            ("ipsec_blocked", x.ipsec_blocked),
            ("ipsec_rx", dp.ipsec_rx),
            ("ipsec_clear_dropped", dp.ipsec_clear_dropped),
            ("ipsec_kernel_rx_ignored", dp.kernel_rx_ignored),
            ("tx_dropped", dp.tx_dropped + x.sink_drops),
            ("packet_out_drops", self.packet_out_drops),
            ("flows_expired_idle", self.reval.total.idle as u64),
            ("flows_evicted", self.reval.total.evicted as u64),
        ]
    }

    fn offload_named(&self) -> Vec<(&'static str, u64)> {
        let Some(o) = &self.offload else {
            return Vec::new();
        };
        let c = &o.counters;
        vec![
            ("offload_deferred", o.deferred),
            ("offload_backlog", o.backlog),
            ("offload_rejudged", c.rejudged),
            ("offload_capacity_refusals", c.capacity_refusals),
            ("offload_transient_failures", c.transient_failures),
            ("offload_retries", c.retries),
            ("offload_retries_ok", c.retries_ok),
        ]
    }

    fn daemon_named(&self) -> [(&'static str, u64); 6] {
        let a = &self.adoption;
        [
            ("ports_reopened", self.ports_reopened),
            ("port_reopen_errors", self.port_reopen_errors),
            // Start-up adoption of a previous run's filters.
            ("kept_filters_found", a.kept as u64),
            ("kept_filters_adopted", a.adopted as u64),
            ("kept_filters_replaced", a.replaced as u64),
            ("kept_filters_removed", a.removed as u64),
        ]
    }

    fn evpn_named(&self) -> Vec<(&'static str, u64)> {
        let Some(s) = &self.evpn else {
            return Vec::new();
        };
        vec![
            ("evpn_fdb_events", s.fdb_events),
            ("evpn_remote_updates", s.remote_updates),
            ("evpn_flood_updates", s.flood_updates),
            ("evpn_local_added", s.local_added),
            ("evpn_local_removed", s.local_removed),
            ("evpn_resyncs", s.resyncs),
            ("evpn_errors", s.errors),
            ("evpn_kept_from_previous_run", s.kept),
        ]
    }

    /// `flowctl stats`' answer (the control protocol's wire body).
    pub fn body(&self) -> StatsBody {
        StatsBody {
            upcalls: self.upcalls.queued,
            upcall_drops: self.upcall_drops(),
            flows: self.flows.installed,
            flows_offloaded: self.offloaded(),
            flow_setups: self.upcalls.installed,
            offload_ok: self.offloaded(),
            offload_failed_by_reason: owned(self.software_by_category()),
            migrations_by_kind: owned(self.migrations()),
            fib_events: self.fib_changes(),
            resyncs: self.fib_resyncs(),
            revalidator_runs: self.reval.sweeps,
            mac_entries: self.macs.entries,
            mac_limit: self.macs.limit,
            mac_port_quota: self.macs.port_quota,
            mac_evictions: self.macs.stats.evicted,
            mac_quota_evictions: self.macs.stats.quota_evicted,
            flow_limit: self.flows.limit,
            flow_port_quota: self.flows.port_quota,
            upcall_port_share_drops: self.upcalls.port_share,
            malformed: owned(self.malformed()),
            other: self.other().into_iter().collect(),
            ports: self
                .ports
                .iter()
                .map(|(name, p)| {
                    (
                        name.clone(),
                        owned(p.named().into_iter().map(|(k, _, v)| (k, v))),
                    )
                })
                .collect(),
        }
    }
}

/// Named counters as the wire body's maps hold them.
fn owned(named: impl IntoIterator<Item = (&'static str, u64)>) -> BTreeMap<String, u64> {
    named.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The offload worker's counts, if offload runs.
fn offload(d: &Daemon) -> Option<Offload> {
    let o = d.offload.as_ref()?;
    let (offloaded, software) = o.placement_counts();
    Some(Offload {
        offloaded,
        software,
        counters: o.counters(),
        deferred: o.deferred(),
        backlog: o.backlog() as u64,
    })
}

/// Each port's counters from the three tables that know ports, under the port's name
/// (`port<id>` for an id the port table no longer knows).
fn ports_by_name(
    d: &Daemon,
    io: Vec<(PortId, PortStats)>,
    macs: Vec<(PortId, PortMacStats)>,
    flows: Vec<(PortId, PortFlowStats)>,
) -> BTreeMap<String, PortCounters> {
    let names = d.ports.table();
    let name_of = |id: PortId| {
        names
            .get(id)
            .map_or_else(|| format!("port{id}"), |p| p.name.clone())
    };
    let mut ports: BTreeMap<String, PortCounters> = BTreeMap::new();
    for (id, s) in io {
        ports.entry(name_of(id)).or_default().io = Some(s);
    }
    for (id, s) in macs {
        ports.entry(name_of(id)).or_default().macs = Some(s);
    }
    for (id, s) in flows {
        ports.entry(name_of(id)).or_default().flows = Some(s);
    }
    ports
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_body_names_every_counter_as_before() {
        let mut s = Snapshot {
            offload: Some(Offload {
                offloaded: 4,
                software: [("mtu", 2), ("pending", 1)].into_iter().collect(),
                ..Offload::default()
            }),
            evpn: Some(EvpnStats::default()),
            fib_events: [("link".to_string(), 3)].into_iter().collect(),
            ..Snapshot::default()
        };
        s.flows.installed = 7;
        s.upcalls.queue_full = 1;
        s.upcalls.port_share = 2;
        s.ports.insert(
            "rep0".into(),
            PortCounters {
                io: Some(PortStats::default()),
                macs: Some(PortMacStats {
                    entries: 5,
                    quota_evicted: 1,
                }),
                flows: None,
            },
        );
        s.ports.insert(
            "port9".into(),
            PortCounters {
                flows: Some(PortFlowStats {
                    flows: 3,
                    refused: 0,
                }),
                ..PortCounters::default()
            },
        );
        let b = s.body();
        assert_eq!((b.flows, b.flows_offloaded, b.offload_ok), (7, 4, 4));
        assert_eq!(b.upcall_drops, 3);
        assert_eq!(b.offload_failed_by_reason.get("mtu"), Some(&2));
        let kinds: Vec<_> = b.migrations_by_kind.keys().map(String::as_str).collect();
        assert_eq!(kinds, ["moved", "to_offload", "to_software"]);
        assert_eq!(b.malformed.len(), Malformed::ALL.len());
        let row = |p: &str| -> Vec<&str> { b.ports[p].keys().map(String::as_str).collect() };
        assert_eq!(
            row("rep0"),
            [
                "down",
                "errors",
                "kernel_drops",
                "mac_entries",
                "mac_quota_evictions",
                "ring_frames",
                "ring_mtu",
                "rx_gso",
                "rx_large",
                "rx_malformed",
                "rx_truncated",
                "tx_dropped",
                "upcall_drops"
            ]
        );
        assert_eq!(row("port9"), ["flow_quota_refusals", "flows"]);
        for name in [
            "rx_packets",
            "cache_hits",
            "tunnel_super_frames",
            "tx_dropped",
            "flows_evicted",
            "offload_backlog",
            "offload_retries_ok",
            "ports_reopened",
            "kept_filters_removed",
            "evpn_kept_from_previous_run",
            "control_conns_evicted",
            "metrics_conns_refused",
            "fib_link_events",
        ] {
            assert!(b.other.contains_key(name), "{name}");
        }
        assert_eq!(b.other.len(), 27 + 7 + 6 + 8 + 6 + 1);
        // Without offload nor EVPN: none of theirs.
        let bare = Snapshot::default().body();
        assert!(bare.migrations_by_kind.is_empty());
        assert_eq!(bare.other.len(), 27 + 6 + 6);
    }
}
