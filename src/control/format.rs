//! flowctl's human output.
//!
//! `dump-flows` prints one line per flow the way `ovs-appctl dpctl/dump-flows -m` does:
//! ```text
//! in_port(1),eth_type(0x0800), packets:10, bytes:1000, used:0.512s, offloaded:yes dp:tc in_hw, actions:2
//! in_port(2),eth_type(0x0800), packets:3, bytes:300, used:never, offloaded:no (mtu: 1500 + 50 > 1500), actions:set(tunnel(...)),100
//! ```
//! A tc filter the hardware refused but the kernel's software tc path carries reads
//! `offloaded:yes dp:tc not_in_hw`: tc, not flowd, forwards it. The other commands print
//! aligned tables.

use super::proto::{
    DoneBody, FdbNetworkRow, FlowRow, FlowSummary, Placement, PortRow, ResponseBody, RuleRow,
    StatsBody, TraceBody, TunnelRow,
};
use std::fmt::Write;

/// Human text for a response body (ends with a newline unless empty).
pub fn body(b: &ResponseBody) -> String {
    match b {
        ResponseBody::Flows(f) => flows(f),
        ResponseBody::Ports(p) => ports(p),
        ResponseBody::Tunnels(t) => tunnels(t),
        ResponseBody::Trace(t) => trace(t),
        ResponseBody::Stats(s) => stats(s),
        ResponseBody::Rules(r) => rules(r),
        ResponseBody::Done(d) => done(d),
        ResponseBody::Fdb(f) => fdb(f),
        ResponseBody::FlowSummary(s) => flow_summary(s),
        // A streamed dump's header: its rows follow on their own lines.
        ResponseBody::FlowStream(_) => String::new(),
    }
}

/// `dump-flows --summary`.
pub fn flow_summary(s: &FlowSummary) -> String {
    let mut out = format!(
        "flows: {} (offloaded {}, software {})\n",
        s.flows, s.offloaded, s.software
    );
    let counts = |m: &std::collections::BTreeMap<String, u64>| -> Vec<Vec<String>> {
        m.iter()
            .map(|(k, n)| vec![k.clone(), n.to_string()])
            .collect()
    };
    if !s.by_placement.is_empty() {
        out.push('\n');
        out.push_str(&table(&["PLACEMENT", "FLOWS"], &counts(&s.by_placement)));
    }
    if !s.by_port.is_empty() {
        out.push('\n');
        out.push_str(&table(&["IN_PORT", "FLOWS"], &counts(&s.by_port)));
    }
    out
}

/// `used:` as OVS prints it: seconds with milliseconds, or `never`.
pub fn used(ms_ago: Option<u64>) -> String {
    match ms_ago {
        Some(ms) => format!("{}.{:03}s", ms / 1000, ms % 1000),
        None => "never".to_string(),
    }
}

/// Where a flow lives: `offloaded:yes dp:tc in_hw` or `offloaded:no (reason)`.
pub fn placement(p: &Placement) -> String {
    if p.offloaded {
        let mut s = format!("offloaded:yes dp:{}", p.dp);
        match p.in_hw {
            Some(true) => s.push_str(" in_hw"),
            Some(false) => s.push_str(" not_in_hw"),
            None => {}
        }
        s
    } else {
        match &p.reason {
            Some(r) => format!("offloaded:no ({r})"),
            None => "offloaded:no".to_string(),
        }
    }
}

/// One `dump-flows` line, without the newline.
pub fn flow(f: &FlowRow) -> String {
    format!(
        "{}, packets:{}, bytes:{}, used:{}, {}, actions:{}",
        f.flow,
        f.packets,
        f.bytes,
        used(f.used_ms_ago),
        placement(&f.placement),
        f.actions
    )
}

/// All `dump-flows` lines.
pub fn flows(list: &[FlowRow]) -> String {
    list.iter().map(|f| flow(f) + "\n").collect()
}

/// `dump-flows` rows written as they arrive, in constant memory: the text lines
/// ([`flow`]), or with `json` one JSON array holding one row per line
/// (`[\n{...},\n{...}\n]`), opened at the first row and closed by [`Self::finish`]: a
/// dump cut short leaves it unclosed, so that no JSON reader takes it for whole.
#[derive(Debug)]
pub struct RowWriter<W> {
    out: W,
    json: bool,
    rows: u64,
}

impl<W: std::io::Write> RowWriter<W> {
    /// Writes to `out` (buffer it: a row is one small write).
    pub fn new(out: W, json: bool) -> Self {
        Self { out, json, rows: 0 }
    }

    /// Writes one row.
    pub fn row(&mut self, f: &FlowRow) -> std::io::Result<()> {
        if self.json {
            self.out
                .write_all(if self.rows == 0 { b"[\n" } else { b",\n" })?;
            serde_json::to_writer(&mut self.out, f)?;
        } else {
            writeln!(self.out, "{}", flow(f))?;
        }
        self.rows += 1;
        Ok(())
    }

    /// Flushes what is written (before waiting for more rows).
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    /// Ends a complete dump (closes the JSON array) and flushes.
    pub fn finish(mut self) -> std::io::Result<()> {
        if self.json {
            let end: &[u8] = if self.rows == 0 { b"[]\n" } else { b"\n]\n" };
            self.out.write_all(end)?;
        }
        self.out.flush()
    }
}

/// An aligned table: columns separated by two spaces, the last one not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = w.saturating_sub(cell.chars().count());
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_string(), T::to_string)
}

/// `show`.
pub fn ports(list: &[PortRow]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|p| {
            vec![
                p.id.to_string(),
                p.name.clone(),
                opt(&p.ifindex),
                p.role.clone(),
                opt(&p.mtu),
                match p.up {
                    Some(true) => "up".into(),
                    Some(false) => "down".into(),
                    None => "-".into(),
                },
                opt(&p.switch_id),
                opt(&p.vf),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "NAME",
            "IFINDEX",
            "ROLE",
            "MTU",
            "STATE",
            "SWITCH_ID",
            "VF",
        ],
        &rows,
    )
}

/// `tunnels`.
pub fn tunnels(list: &[TunnelRow]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|t| {
            vec![
                t.endpoint.clone(),
                t.from.clone().unwrap_or_else(|| "route".into()),
                if t.mark == 0 {
                    "-".into()
                } else {
                    format!("{:#x}", t.mark)
                },
                opt(&t.uplink),
                opt(&t.source_ip),
                opt(&t.next_hop),
                match (&t.mac, &t.problem) {
                    (_, Some(p)) => format!("({p})"),
                    (m, None) => opt(m),
                },
                opt(&t.path_mtu),
                t.flows.to_string(),
                t.offloaded.to_string(),
                t.software.to_string(),
                t.ipsec.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            "ENDPOINT",
            "FROM",
            "MARK",
            "UPLINK",
            "SOURCE",
            "NEXT_HOP",
            "MAC",
            "PMTU",
            "FLOWS",
            "OFFLOADED",
            "SOFTWARE",
            "IPSEC",
        ],
        &rows,
    )
}

/// `trace`: the steps, then the megaflow and the datapath actions.
pub fn trace(t: &TraceBody) -> String {
    let mut out = String::new();
    for l in &t.lines {
        out.push_str(l);
        out.push('\n');
    }
    if !t.lines.is_empty() {
        out.push('\n');
    }
    let _ = writeln!(out, "Megaflow: {}", t.megaflow);
    let _ = writeln!(out, "Datapath actions: {}", t.actions);
    out
}

/// `stats`: a two-column table; counters by reason or kind indented under their name.
pub fn stats(s: &StatsBody) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row = |name: String, v: u64| rows.push(vec![name, v.to_string()]);
    row("upcalls".into(), s.upcalls);
    row("upcall_drops".into(), s.upcall_drops);
    row("flows".into(), s.flows);
    row("flows_offloaded".into(), s.flows_offloaded);
    row("flow_setups".into(), s.flow_setups);
    row("offload_ok".into(), s.offload_ok);
    row(
        "offload_failed".into(),
        s.offload_failed_by_reason.values().sum(),
    );
    for (k, v) in &s.offload_failed_by_reason {
        row(format!("  {k}"), *v);
    }
    row("migrations".into(), s.migrations_by_kind.values().sum());
    for (k, v) in &s.migrations_by_kind {
        row(format!("  {k}"), *v);
    }
    row("fib_events".into(), s.fib_events);
    row("resyncs".into(), s.resyncs);
    row("revalidator_runs".into(), s.revalidator_runs);
    row("mac_entries".into(), s.mac_entries);
    row("mac_limit".into(), s.mac_limit);
    row("mac_port_quota".into(), s.mac_port_quota);
    row("mac_evictions".into(), s.mac_evictions);
    row("mac_quota_evictions".into(), s.mac_quota_evictions);
    row("flow_limit".into(), s.flow_limit);
    row("flow_port_quota".into(), s.flow_port_quota);
    row("upcall_port_share_drops".into(), s.upcall_port_share_drops);
    row("malformed".into(), s.malformed.values().sum());
    for (k, v) in &s.malformed {
        row(format!("  {k}"), *v);
    }
    for (k, v) in &s.other {
        row(k.clone(), *v);
    }
    for (port, counters) in &s.ports {
        for (k, v) in counters {
            row(format!("port {port} {k}"), *v);
        }
    }
    table(&["COUNTER", "VALUE"], &rows)
}

/// `rules list`.
pub fn rules(list: &[RuleRow]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.priority.to_string(),
                r.origin.clone(),
                r.r#match.clone(),
                r.actions.clone(),
            ]
        })
        .collect();
    table(&["ID", "PRIORITY", "ORIGIN", "MATCH", "ACTIONS"], &rows)
}

/// `fdb`: the MAC table's fill, then per network its flood list, its stations' counts
/// and a table of its stations.
pub fn fdb(list: &[FdbNetworkRow]) -> String {
    let mut out = String::new();
    if let Some(t) = list.iter().find_map(|n| n.table) {
        let _ = writeln!(
            out,
            "MAC table: {} of {} stations, at most {} learned per port; evicted: {} (table full), {} (port quota)\n",
            t.entries, t.limit, t.port_quota, t.evictions, t.quota_evictions
        );
    }
    for (i, n) in list.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = write!(out, "network {} ({})", n.network, n.segment);
        if let Some(e) = &n.evpn {
            let _ = write!(out, ", evpn: {e}");
        }
        out.push('\n');
        let flood: Vec<String> = n
            .flood
            .iter()
            .map(|f| format!("{} ({})", f.vtep, f.origin))
            .collect();
        let flood = if flood.is_empty() {
            "-".to_string()
        } else {
            flood.join(", ")
        };
        let _ = writeln!(out, "  flood: {flood}");
        if !n.counts.is_empty() {
            let by: Vec<String> = n.counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let total: u64 = n.counts.values().sum();
            let _ = writeln!(out, "  stations: {total} ({})", by.join(", "));
        }
        let rows: Vec<Vec<String>> = n
            .stations
            .iter()
            .map(|s| {
                vec![
                    s.mac.clone(),
                    s.location.clone(),
                    s.origin.clone(),
                    s.age_ms.map_or_else(|| "-".into(), |ms| used(Some(ms))),
                ]
            })
            .collect();
        for line in table(&["MAC", "LOCATION", "ORIGIN", "AGE"], &rows).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

/// A change command's message.
pub fn done(d: &DoneBody) -> String {
    if d.message.is_empty() {
        String::new()
    } else {
        format!("{}\n", d.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn row(placement: Placement, used: Option<u64>) -> FlowRow {
        FlowRow {
            id: 7,
            flow: "in_port(1),eth_type(0x0800)".into(),
            packets: 10,
            sw_packets: 0,
            bytes: 1000,
            used_ms_ago: used,
            placement,
            actions: "2".into(),
        }
    }

    fn tc(in_hw: Option<bool>) -> Placement {
        Placement {
            offloaded: true,
            dp: "tc".into(),
            in_hw,
            reason: None,
            category: None,
            device: Some("rep0".into()),
        }
    }

    #[test]
    fn flow_lines() {
        assert_eq!(
            flow(&row(tc(Some(true)), Some(512))),
            "in_port(1),eth_type(0x0800), packets:10, bytes:1000, used:0.512s, offloaded:yes dp:tc in_hw, actions:2"
        );
        assert_eq!(
            flow(&row(tc(Some(false)), Some(61_005))),
            "in_port(1),eth_type(0x0800), packets:10, bytes:1000, used:61.005s, offloaded:yes dp:tc not_in_hw, actions:2"
        );
        let sim = Placement {
            dp: "sim".into(),
            ..tc(None)
        };
        assert!(flow(&row(sim, None)).contains("used:never, offloaded:yes dp:sim, actions:2"));
        let sw = Placement {
            offloaded: false,
            dp: "sw".into(),
            in_hw: None,
            reason: Some("mtu: 1500 + 50 > 1500".into()),
            category: Some("mtu".into()),
            device: None,
        };
        assert_eq!(
            flow(&row(sw, Some(0))),
            "in_port(1),eth_type(0x0800), packets:10, bytes:1000, used:0.000s, offloaded:no (mtu: 1500 + 50 > 1500), actions:2"
        );
        let bare = Placement {
            offloaded: false,
            dp: "sw".into(),
            ..Default::default()
        };
        assert!(flow(&row(bare, None)).contains(", offloaded:no, actions:2"));
        assert_eq!(flows(&[]), "");
    }

    #[test]
    fn row_writer_streams_text_and_one_json_array() {
        let rows = [row(tc(Some(true)), Some(512)), row(tc(None), None)];
        let mut w = RowWriter::new(Vec::new(), false);
        for r in &rows {
            w.row(r).unwrap();
        }
        assert_eq!(String::from_utf8(w.out.clone()).unwrap(), flows(&rows));
        for n in [0, 1, 2] {
            let mut w = RowWriter::new(Vec::new(), true);
            for r in &rows[..n] {
                w.row(r).unwrap();
            }
            let cut = w.out.clone();
            w.finish().unwrap();
            let mut out = Vec::new();
            let mut again = RowWriter::new(&mut out, true);
            for r in &rows[..n] {
                again.row(r).unwrap();
            }
            again.finish().unwrap();
            let back: Vec<FlowRow> = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, rows[..n].to_vec());
            // One row per line, between the brackets.
            assert_eq!(
                out.split(|b| *b == b'\n').count(),
                if n == 0 { 2 } else { n + 3 }
            );
            // A dump cut before its end is not valid JSON (unless nothing came yet).
            if n > 0 {
                assert!(serde_json::from_slice::<Vec<FlowRow>>(&cut).is_err());
            }
        }
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["A", "LONG"],
            &[vec!["xxx".into(), "y".into()], vec!["z".into(), "".into()]],
        );
        assert_eq!(t, "A    LONG\nxxx  y\nz\n");
        let p = ports(&[
            PortRow {
                name: "rep0".into(),
                ifindex: Some(12),
                id: 1,
                role: "representor".into(),
                mtu: Some(1500),
                up: Some(true),
                switch_id: Some("00aabbccddee".into()),
                vf: Some(0),
            },
            PortRow {
                name: "vxlan_sys_4789".into(),
                ifindex: None,
                id: 100,
                role: "tunnel".into(),
                mtu: None,
                up: None,
                switch_id: None,
                vf: None,
            },
        ]);
        assert_eq!(
            p,
            "ID   NAME            IFINDEX  ROLE         MTU   STATE  SWITCH_ID     VF\n\
             1    rep0            12       representor  1500  up     00aabbccddee  0\n\
             100  vxlan_sys_4789  -        tunnel       -     -      -             -\n"
        );
    }

    #[test]
    fn tunnels_table() {
        let t = tunnels(&[TunnelRow {
            endpoint: "198.51.100.2".into(),
            from: None,
            mark: 0,
            uplink: Some("up0".into()),
            source_ip: Some("192.0.2.1".into()),
            next_hop: Some("192.0.2.254".into()),
            mac: Some("02:00:00:00:00:fe".into()),
            problem: None,
            path_mtu: Some(1500),
            flows: 4,
            offloaded: 3,
            software: 1,
            ipsec: None,
        }]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("ENDPOINT      FROM   MARK  UPLINK  SOURCE     NEXT_HOP"),
            "{t}"
        );
        assert!(
            lines[1].starts_with("198.51.100.2  route  -     up0     192.0.2.1  192.0.2.254"),
            "{t}"
        );
        assert!(
            lines[1].ends_with("1500  4      3          1         -"),
            "{t}"
        );
    }

    #[test]
    fn stats_and_trace() {
        let s = StatsBody {
            upcalls: 12,
            offload_failed_by_reason: BTreeMap::from([("mtu".into(), 2), ("neighbour".into(), 1)]),
            ..Default::default()
        };
        let out = stats(&s);
        assert!(out.contains("\nupcalls                  12\n"), "{out}");
        assert!(
            out.contains(
                "\noffload_failed           3\n  mtu                    2\n  neighbour              1\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("\nmigrations               0\nfib_events"),
            "{out}"
        );
        let t = trace(&TraceBody {
            lines: vec![
                "rule 3: priority 100 in_port(1)".into(),
                "  -> NORMAL".into(),
            ],
            actions: "2".into(),
            megaflow: "in_port(1),eth(dst=02:00:00:00:00:02)".into(),
        });
        assert_eq!(
            t,
            "rule 3: priority 100 in_port(1)\n  -> NORMAL\n\nMegaflow: in_port(1),eth(dst=02:00:00:00:00:02)\nDatapath actions: 2\n"
        );
    }

    #[test]
    fn fdb_lists_flood_and_stations_with_origins() {
        use super::super::proto::{FloodRow, StationRow};
        let t = fdb(&[FdbNetworkRow {
            network: "tenant-a".into(),
            segment: "vni 100".into(),
            evpn: Some("evbr-100 evvx-100 evad-100".into()),
            flood: vec![
                FloodRow {
                    vtep: "192.0.2.2".into(),
                    origin: "evpn".into(),
                },
                FloodRow {
                    vtep: "192.0.2.9".into(),
                    origin: "static".into(),
                },
            ],
            stations: vec![
                StationRow {
                    mac: "02:00:00:00:00:01".into(),
                    location: "rep0".into(),
                    origin: "learned".into(),
                    age_ms: Some(1500),
                },
                StationRow {
                    mac: "02:00:00:00:00:02".into(),
                    location: "vtep 192.0.2.2".into(),
                    origin: "evpn".into(),
                    age_ms: None,
                },
            ],
            counts: BTreeMap::from([("evpn".into(), 1), ("learned".into(), 1)]),
            table: Some(super::super::proto::MacTableRow {
                entries: 9,
                limit: 1024,
                port_quota: 256,
                evictions: 0,
                quota_evictions: 3,
            }),
        }]);
        assert_eq!(
            t,
            "MAC table: 9 of 1024 stations, at most 256 learned per port; evicted: 0 (table full), 3 (port quota)\n\n\
             network tenant-a (vni 100), evpn: evbr-100 evvx-100 evad-100\n\
             \x20 flood: 192.0.2.2 (evpn), 192.0.2.9 (static)\n\
             \x20 stations: 2 (evpn 1, learned 1)\n\
             \x20 MAC                LOCATION        ORIGIN   AGE\n\
             \x20 02:00:00:00:00:01  rep0            learned  1.500s\n\
             \x20 02:00:00:00:00:02  vtep 192.0.2.2  evpn     -\n"
        );
    }

    #[test]
    fn rules_and_done() {
        let r = rules(&[RuleRow {
            id: 1,
            priority: 100,
            r#match: "in_port(1)".into(),
            actions: "normal".into(),
            origin: "config".into(),
        }]);
        assert_eq!(
            r,
            "ID  PRIORITY  ORIGIN  MATCH       ACTIONS\n1   100       config  in_port(1)  normal\n"
        );
        assert_eq!(
            done(&DoneBody::message("deleted 3 flows")),
            "deleted 3 flows\n"
        );
        assert_eq!(body(&ResponseBody::Done(DoneBody::default())), "");
    }
}
