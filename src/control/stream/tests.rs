use super::*;
use crate::control::proto::{Placement, Response, ResponseBody};
use proptest::prelude::*;

fn row(id: u64) -> FlowRow {
    FlowRow {
        id,
        flow: format!("in_port(1),eth(dst=02:f0:00:00:00:{:02x})", id % 256),
        packets: 10 * id,
        sw_packets: id,
        bytes: 1000 * id,
        used_ms_ago: id.is_multiple_of(2).then_some(512),
        placement: Placement {
            offloaded: id.is_multiple_of(3),
            dp: "sim".into(),
            ..Placement::default()
        },
        actions: "set(tunnel(tun_id=0x10,dst=10.0.0.2)),4".into(),
    }
}

/// What a sink sends for `lines`, gathered by a reader thread (the sink blocks on a
/// full queue, as on the daemon's blocking pool).
fn encode(write: impl FnOnce(&mut LineSink) -> Result<(), Closed>) -> Vec<u8> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(CHUNKS_QUEUED);
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        while let Some(chunk) = rx.blocking_recv() {
            assert!(chunk.len() < CHUNK_BYTES + MAX_STREAM_LINE);
            all.extend_from_slice(&chunk);
        }
        all
    });
    let mut sink = LineSink::new(tx);
    write(&mut sink).expect("the reader takes everything");
    sink.flush().expect("flush");
    drop(sink);
    reader.join().expect("reader")
}

/// A whole stream: header, `rows`, trailer.
fn stream_of(rows: &[FlowRow], limited: bool) -> Vec<u8> {
    let rows = rows.to_vec();
    encode(move |s| {
        let start = DumpStart {
            version: STREAM_VERSION,
            flows_in_table: rows.len() as u64,
        };
        s.line(&Response::Ok(ResponseBody::FlowStream(start)))?;
        for r in &rows {
            s.line(&DumpLine::Flow(r.clone()))?;
        }
        s.line(&DumpLine::End(DumpEnd {
            flows: rows.len() as u64,
            limited,
        }))
    })
}

/// Reads a stream as the client does: its header, then its rows to the end.
fn read(bytes: &[u8]) -> (Response, Vec<Result<FlowRow, StreamError>>, Option<DumpEnd>) {
    let mut r = std::io::BufReader::new(bytes);
    let mut first = Vec::new();
    assert!(read_line_max(&mut r, &mut first, MAX_STREAM_LINE).unwrap());
    let header = serde_json::from_slice(&first).expect("header");
    let mut rows = FlowRows::new(r);
    let got: Vec<_> = rows.by_ref().collect();
    (header, got, rows.end())
}

#[test]
fn wire_form() {
    let start = Response::Ok(ResponseBody::FlowStream(DumpStart {
        version: 1,
        flows_in_table: 3,
    }));
    assert_eq!(
        serde_json::to_string(&start).unwrap(),
        r#"{"ok":{"type":"flow_stream","data":{"version":1,"flows_in_table":3}}}"#
    );
    let end = DumpLine::End(DumpEnd {
        flows: 2,
        limited: true,
    });
    assert_eq!(
        serde_json::to_string(&end).unwrap(),
        r#"{"end":{"flows":2,"limited":true}}"#
    );
    let line = serde_json::to_string(&DumpLine::Flow(row(1))).unwrap();
    assert!(
        line.starts_with(r#"{"flow":{"id":1,"flow":"in_port(1),"#),
        "{line}"
    );
    // A row is the one-line answer's row, inside `flow`.
    let whole = serde_json::to_string(&ResponseBody::Flows(vec![row(1)])).unwrap();
    let inner = &line[r#"{"flow":"#.len()..line.len() - 1];
    assert!(whole.contains(inner), "{whole}\n{inner}");
    // An error mid-way reads like an error response (what a failure before the header
    // is), so a client reading either line understands it.
    let failed = serde_json::to_string(&DumpLine::Err {
        message: "boom".into(),
    })
    .unwrap();
    assert_eq!(
        failed,
        serde_json::to_string(&Response::err("boom")).unwrap()
    );
    // A newer daemon's extra header fields are ignored.
    let newer: DumpStart = serde_json::from_str(r#"{"version":1,"x":2}"#).unwrap();
    assert_eq!(newer.flows_in_table, 0);
}

#[test]
fn a_whole_stream_reads_back_with_its_trailer() {
    let rows: Vec<_> = (0..2000).map(row).collect();
    let bytes = stream_of(&rows, true);
    assert!(bytes.len() > 2 * CHUNK_BYTES, "several chunks");
    let (header, got, end) = read(&bytes);
    assert!(matches!(
        header,
        Response::Ok(ResponseBody::FlowStream(DumpStart { version: 1, .. }))
    ));
    let got: Vec<FlowRow> = got.into_iter().map(Result::unwrap).collect();
    assert_eq!(got, rows);
    assert_eq!(
        end,
        Some(DumpEnd {
            flows: 2000,
            limited: true
        })
    );
    let (_, none, end) = read(&stream_of(&[], false));
    assert!(none.is_empty());
    assert_eq!(end, Some(DumpEnd::default()));
}

/// The daemon dying mid-dump: whatever byte the stream stops at, the reader ends in an
/// error, never with a short table taken for whole.
#[test]
fn a_stream_cut_anywhere_is_an_error() {
    let rows: Vec<_> = (0..5).map(row).collect();
    let bytes = stream_of(&rows, false);
    let header_end = bytes.iter().position(|b| *b == b'\n').unwrap() + 1;
    for cut in header_end..bytes.len() {
        let (_, got, end) = read(&bytes[..cut]);
        assert_eq!(end, None, "cut at {cut}");
        let Some(Err(e)) = got.last() else {
            panic!("cut at {cut}: no error: {got:?}");
        };
        let whole_rows = got.iter().filter(|r| r.is_ok()).count() as u64;
        assert!(
            matches!(e, StreamError::Truncated { rows } if *rows == whole_rows),
            "cut at {cut}: {e}"
        );
        assert!(e.to_string().contains("the dump was cut after"), "{e}");
    }
}

#[test]
fn failures_miscounts_junk_and_long_lines_are_errors() {
    let line = |l: &DumpLine| serde_json::to_string(l).unwrap() + "\n";
    let header = "{\"ok\":{\"type\":\"flow_stream\",\"data\":{\"version\":1}}}\n";
    let failed = format!(
        "{header}{}{}",
        line(&DumpLine::Flow(row(1))),
        line(&DumpLine::Err {
            message: "internal error".into()
        })
    );
    let (_, got, _) = read(failed.as_bytes());
    assert!(matches!(
        got.last(),
        Some(Err(StreamError::Failed { rows: 1, message })) if message == "internal error"
    ));
    let miscounted = format!(
        "{header}{}{}",
        line(&DumpLine::Flow(row(1))),
        line(&DumpLine::End(DumpEnd {
            flows: 2,
            limited: false
        }))
    );
    let (_, got, end) = read(miscounted.as_bytes());
    assert!(matches!(
        got.last(),
        Some(Err(StreamError::Miscounted {
            announced: 2,
            rows: 1
        }))
    ));
    assert_eq!(end, None);
    let (_, got, _) = read(format!("{header}{{\"flow\":1}}\n").as_bytes());
    assert!(matches!(
        got[..],
        [Err(StreamError::Unreadable { rows: 0, .. })]
    ));
    let long = format!("{header}{}\n", "x".repeat(MAX_STREAM_LINE + 10));
    let (_, got, _) = read(long.as_bytes());
    assert!(matches!(got[..], [Err(StreamError::LineTooLong)]));
    // Nothing more is read after an error.
    let mut rows = FlowRows::new(std::io::BufReader::new(failed.as_bytes()));
    let _ = rows.by_ref().count();
    assert!(rows.next().is_none());
}

/// Backpressure: the sink holds at most a few chunks ahead of a reader that does not
/// read, and stops with `Closed` once the reader is gone.
#[test]
fn a_full_queue_blocks_the_writer_and_a_gone_reader_stops_it() {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(CHUNKS_QUEUED);
    let (sent_tx, sent_rx) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        let mut sink = LineSink::new(tx);
        let mut n = 0u64;
        loop {
            if let Err(c) = sink.line(&DumpLine::Flow(row(n))) {
                return (n, c);
            }
            n += 1;
            let _ = sent_tx.send(n);
        }
    });
    // The writer stalls once the queue is full: it wrote at most the queued chunks
    // plus the one it is filling.
    let per_row = serde_json::to_vec(&DumpLine::Flow(row(1))).unwrap().len() as u64 + 1;
    let most = ((CHUNKS_QUEUED + 1) * CHUNK_BYTES) as u64 / per_row + 2;
    let mut last = 0;
    while let Ok(n) = sent_rx.recv_timeout(std::time::Duration::from_millis(300)) {
        last = n;
        assert!(n <= most, "{n} rows written, the queue holds about {most}");
    }
    assert!(last > 0);
    assert!(rx.blocking_recv().is_some());
    drop(rx);
    let (n, closed) = writer.join().unwrap();
    assert_eq!(closed, Closed);
    assert!(n <= most + (CHUNK_BYTES as u64 / per_row + 2), "{n}");
}

fn arb_row() -> impl Strategy<Value = FlowRow> {
    (
        any::<u64>(),
        "\\PC{0,80}",
        any::<(u64, u64, u64)>(),
        proptest::option::of(any::<u64>()),
        any::<bool>(),
        proptest::option::of("\\PC{0,40}"),
        "[ -~]{0,60}",
    )
        .prop_map(
            |(id, flow, (packets, sw_packets, bytes), used_ms_ago, offloaded, reason, actions)| {
                FlowRow {
                    id,
                    flow,
                    packets,
                    sw_packets,
                    bytes,
                    used_ms_ago,
                    placement: Placement {
                        offloaded,
                        dp: if offloaded { "tc" } else { "sw" }.into(),
                        category: reason.as_ref().map(|_| "mtu".into()),
                        reason,
                        ..Placement::default()
                    },
                    actions,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// The streamed rows are the one-line answer's rows, in the same order.
    #[test]
    fn streamed_rows_equal_the_whole_answer(rows in proptest::collection::vec(arb_row(), 0..100)) {
        let whole = serde_json::to_vec(&Response::Ok(ResponseBody::Flows(rows.clone()))).unwrap();
        let Response::Ok(ResponseBody::Flows(from_whole)) =
            serde_json::from_slice::<Response>(&whole).unwrap()
        else {
            panic!("not flows");
        };
        let (_, got, end) = read(&stream_of(&rows, false));
        let streamed: Vec<FlowRow> = got.into_iter().map(Result::unwrap).collect();
        prop_assert_eq!(&streamed, &from_whole);
        prop_assert_eq!(end.map(|e| e.flows), Some(rows.len() as u64));
    }
}
