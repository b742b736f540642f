//! A streamed `dump-flows` through the real daemon (namespaces `dstm-*`, backend
//! `sim`): a few thousand NORMAL + VXLAN flows from vf0 (frames to distinct unknown
//! MACs), a few from vf1; the streamed dump with a port filter lists rep0's flows, its
//! trailer counts them, and it lists what the one-line dump lists for the same table;
//! a limit cuts it and says so; `flowctl` prints it, and a reader that stops early
//! (`| head`) ends flowctl quietly without hurting the daemon.
//!
//! Needs root and iproute2 (skipped otherwise).

mod common;

use common::lab::{ping, wait};
use common::{exe, skip_without_netns};
use flowd::control::client::{Answer, request_streamed};
use flowd::control::proto::{FlowFilter, FlowRow, FlowSelect, Request, ResponseBody};
use flowd::control::stream::DumpEnd;
use flowd::lab::{self, Lab};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Flows vf0 offers (at least half must be installed).
const FLOWS: u32 = 3000;

/// Frames from vf0 to `n` distinct unknown MACs: one megaflow each.
fn offer(ns: &str, n: u32) {
    flowd::lab::burst::offer(ns, "vf0", 0xf1, 0..u64::from(n)).expect("send the frames");
}

fn flow_count(l: &Lab) -> u64 {
    match l.request(Request::Stats) {
        Ok(ResponseBody::Stats(s)) => s.flows,
        other => panic!("stats: {other:?}"),
    }
}

/// The streamed dump: its rows and its trailer.
fn streamed(l: &Lab, select: FlowSelect) -> (Vec<FlowRow>, DumpEnd) {
    let req = Request::dump_flows_streamed(FlowFilter::All, select);
    match request_streamed(&l.socket(), &req, Duration::from_secs(30)) {
        Ok(Answer::Rows(mut rows)) => {
            let got: Vec<FlowRow> = rows.by_ref().map(|r| r.expect("row")).collect();
            (got, rows.end().expect("trailer"))
        }
        Ok(Answer::Whole(other)) => panic!("not streamed: {other:?}"),
        Err(e) => panic!("streamed dump-flows: {e}"),
    }
}

fn whole(l: &Lab, select: FlowSelect) -> Vec<FlowRow> {
    match l.request(Request::DumpFlows {
        filter: FlowFilter::All,
        select,
        summary: false,
        stream: 0,
    }) {
        Ok(ResponseBody::Flows(rows)) => rows,
        other => panic!("dump-flows: {other:?}"),
    }
}

/// What does not move while the table is still: id, match, actions, placement.
fn stable(rows: &[FlowRow]) -> Vec<(u64, String, String, bool)> {
    let mut v: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.id,
                r.flow.clone(),
                r.actions.clone(),
                r.placement.offloaded,
            )
        })
        .collect();
    v.sort();
    v
}

fn rep0() -> FlowSelect {
    FlowSelect {
        port: Some("rep0".into()),
        ..FlowSelect::default()
    }
}

#[test]
fn a_streamed_dump_through_the_daemon_filters_counts_and_matches_the_whole_one() {
    if skip_without_netns() {
        return;
    }
    let mut l = lab::build("dstm").expect("lab");
    // Flows stay while the test reads them.
    let cfg =
        lab::config_text("sim", &l.socket()).replace("max_idle_ms = 10000", "max_idle_ms = 600000");
    l.start_daemon_config(&exe(), &cfg, &[]).expect("flowd");
    for (vf, dst) in [(0, "1.1.1.3"), (1, "2.2.2.3")] {
        let (ok, out) = ping(&l.vfs[vf], dst);
        assert!(ok, "vf{vf}: {out}\n{}", l.log());
    }
    // Enough flows for several of the server's chunks and more than a pipe holds; what
    // the ring or the upcall queue drops under load gets its flow from a later pass.
    for _ in 0..5 {
        offer(&l.vfs[0].name, FLOWS);
        if wait(5, || flow_count(&l) >= u64::from(FLOWS)) {
            break;
        }
    }
    assert!(
        flow_count(&l) >= u64::from(FLOWS) / 2,
        "{} flows: {:?}\n{}",
        flow_count(&l),
        l.request(Request::Stats),
        l.log()
    );
    // The placements settle (the simulated eswitch takes them), then the table is still.
    let offloaded = || match l.request(Request::Stats) {
        Ok(ResponseBody::Stats(s)) => (s.flows, s.flows_offloaded),
        other => panic!("stats: {other:?}"),
    };
    let (mut last, mut still) = (offloaded(), 0);
    assert!(wait(30, || {
        let now = offloaded();
        still = if now == last { still + 1 } else { 0 };
        last = now;
        still >= 5
    }));

    let (rows, end) = streamed(&l, rep0());
    assert!(rows.len() as u64 >= u64::from(FLOWS) / 2, "{}", rows.len());
    assert!(rows.iter().all(|r| r.flow.starts_with("in_port(1)")));
    assert_eq!(
        end,
        DumpEnd {
            flows: rows.len() as u64,
            limited: false
        }
    );
    // vf1's flows (rep1) are not in rep0's dump, but are in the whole table's.
    let (all, all_end) = streamed(&l, FlowSelect::default());
    assert!(all.len() > rows.len(), "{} vs {}", all.len(), rows.len());
    assert_eq!(all_end.flows, all.len() as u64);
    // The same flows as the one-line answer, and as the summary counts.
    assert_eq!(stable(&rows), stable(&whole(&l, rep0())));
    assert_eq!(stable(&all), stable(&whole(&l, FlowSelect::default())));
    let sum = match l.request(Request::DumpFlows {
        filter: FlowFilter::All,
        select: rep0(),
        summary: true,
        stream: 1,
    }) {
        Ok(ResponseBody::FlowSummary(s)) => s,
        other => panic!("a summary is answered whole: {other:?}"),
    };
    assert_eq!(sum.flows, rows.len() as u64);
    // A limit cuts the dump and says so; one above the count does not.
    let (some, end) = streamed(
        &l,
        FlowSelect {
            limit: Some(100),
            ..rep0()
        },
    );
    assert_eq!((some.len(), end.flows, end.limited), (100, 100, true));
    let (every, end) = streamed(
        &l,
        FlowSelect {
            limit: Some(rows.len() as u64),
            ..rep0()
        },
    );
    assert_eq!((every.len(), end.limited), (rows.len(), false));
    // An unknown name is an error answer before any row.
    let req = Request::dump_flows_streamed(
        FlowFilter::All,
        FlowSelect {
            port: Some("rep9".into()),
            ..FlowSelect::default()
        },
    );
    match request_streamed(&l.socket(), &req, Duration::from_secs(30)) {
        Ok(Answer::Whole(flowd::control::Response::Err { message })) => {
            assert!(message.contains("rep9"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    flowctl_prints_and_stops_quietly(&l, rows.len());
}

/// `flowctl dump-flows --port rep0` prints every row; read one line and closed, it
/// exits 0 quietly, and the daemon answers the next request.
fn flowctl_prints_and_stops_quietly(l: &Lab, rows: usize) {
    let flowctl = || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_flowctl"));
        c.arg("--socket").arg(l.socket());
        c
    };
    let o = flowctl()
        .args(["dump-flows", "--port", "rep0"])
        .output()
        .expect("flowctl");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), rows);
    let mut child = flowctl()
        .arg("dump-flows")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("flowctl");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("a line");
    assert!(first.starts_with("in_port("), "{first}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < deadline, "flowctl still runs");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("stderr");
    assert!(status.success() && err.is_empty(), "{status:?}: {err}");
    assert!(flow_count(l) > 0, "the daemon still answers");
}
