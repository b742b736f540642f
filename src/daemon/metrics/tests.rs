//! The endpoint over real sockets (answers, limits, slots) and the names the counters
//! are published under.

use super::*;
use crate::daemon::stats::{Flows, Macs, Offload, PortCounters};
use datapath::port::PortStats;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant as StdInstant;

fn handle_with_flows() -> PrometheusHandle {
    let rec = PrometheusBuilder::new().build_recorder();
    let handle = rec.handle();
    metrics::with_local_recorder(&rec, || {
        gauge!("flowd_flows", "placement" => "software").set(3.0);
    });
    handle
}

/// Sends `request` (then half-closes if `close`); everything the server said until it
/// closed.
fn exchange_with(addr: SocketAddr, request: &[u8], close: bool) -> io::Result<String> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request)?;
    if close {
        s.shutdown(Shutdown::Write)?;
    }
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn exchange(addr: SocketAddr, request: &[u8]) -> io::Result<String> {
    exchange_with(addr, request, false)
}

/// An endpoint on a free local port serving `flowd_flows 1\n` (14 bytes) with
/// `limits`; how many times it rendered.
fn counting_endpoint(limits: Limits) -> (MetricsEndpoint, Arc<AtomicUsize>) {
    let rendered = Arc::new(AtomicUsize::new(0));
    let n = rendered.clone();
    let render: Render = Arc::new(move || {
        n.fetch_add(1, Ordering::Relaxed);
        "flowd_flows 1\n".to_string()
    });
    let ep =
        MetricsEndpoint::bind_with("127.0.0.1:0".parse().unwrap(), render, limits).expect("bind");
    (ep, rendered)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("no panic")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_get_and_head_refuses_the_rest() {
    let (ep, rendered) = counting_endpoint(LIMITS);
    let addr = ep.local_addr();
    let get = blocking(move || exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))
        .await
        .expect("get");
    assert!(get.starts_with("HTTP/1.1 200 OK\r\n"), "{get}");
    assert!(
        get.contains("Content-Type: text/plain; version=0.0.4\r\n"),
        "{get}"
    );
    assert!(get.contains("Content-Length: 14\r\n"), "{get}");
    assert!(get.contains("Connection: close\r\n"), "{get}");
    assert!(get.ends_with("\r\n\r\nflowd_flows 1\n"), "{get}");
    let head = blocking(move || exchange(addr, b"HEAD / HTTP/1.0\r\n\r\n"))
        .await
        .expect("head");
    // (HTTP/1.0 as asked.)
    assert!(head.contains(" 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Length: 14\r\n"), "{head}");
    assert!(head.contains("Connection: close\r\n"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "no body: {head}");
    assert_eq!(rendered.load(Ordering::Relaxed), 2);

    let post = blocking(move || exchange(addr, b"POST /metrics HTTP/1.1\r\n\r\n"))
        .await
        .expect("post");
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    assert!(post.contains("Allow: GET, HEAD\r\n"), "{post}");
    assert_eq!(
        rendered.load(Ordering::Relaxed),
        2,
        "only GET and HEAD render"
    );
    for junk in ["GET", "\u{0}\u{1}\u{ff}", "  GET  ", "\r\n", "GET\r\n\r\n"] {
        let r = blocking(move || exchange_with(addr, junk.as_bytes(), true))
            .await
            .expect("junk");
        assert!(
            r.is_empty() || r.starts_with("HTTP/1.1 400 "),
            "{junk:?}: {r}"
        );
    }
    let garbage = blocking(move || exchange(addr, b"\x00\x01garbage\r\n\r\n"))
        .await
        .expect("garbage");
    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
    let nothing = blocking(move || exchange_with(addr, b"", true))
        .await
        .expect("nothing");
    assert!(nothing.is_empty(), "nothing sent: nothing said: {nothing}");
    let big = blocking(move || exchange(addr, &[b'x'; 3 * MAX_REQUEST_HEAD]))
        .await
        .expect("oversized head");
    assert!(big.starts_with("HTTP/1.1 431 "), "{big}");
    assert_eq!(rendered.load(Ordering::Relaxed), 2);
    ep.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_head_gets_408_at_its_deadline() {
    let timeout = Duration::from_millis(600);
    let (ep, rendered) = counting_endpoint(Limits {
        request_timeout: timeout,
        ..LIMITS
    });
    let addr = ep.local_addr();
    let before = SCRAPE_CONNECTIONS.snapshot().timed_out;
    let (answer, took) = blocking(move || {
        let started = StdInstant::now();
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n").expect("send");
        // A byte every 50 ms, past the deadline: it must not move.
        while started.elapsed() < 2 * timeout {
            std::thread::sleep(Duration::from_millis(50));
            if s.write_all(b"X").is_err() {
                break;
            }
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        (
            String::from_utf8_lossy(&out).into_owned(),
            started.elapsed(),
        )
    })
    .await;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(took < 4 * timeout, "closed after {took:?}");
    assert!(SCRAPE_CONNECTIONS.snapshot().timed_out > before);
    assert_eq!(rendered.load(Ordering::Relaxed), 0);
    ep.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_with_503_only_when_every_slot_is_answering() {
    // One slot, held by a scrape whose answer is larger than the socket buffers and
    // that its client does not read yet: busy from the moment it is rendered.
    const BIG: usize = 32 << 20;
    let (entered_tx, entered) = std::sync::mpsc::channel::<()>();
    let entered_tx = Mutex::new(entered_tx);
    let render: Render = Arc::new(move || {
        let _ = entered_tx.lock().unwrap().send(());
        "#".repeat(BIG)
    });
    let limits = Limits {
        max_scrapes: 1,
        ..LIMITS
    };
    let ep =
        MetricsEndpoint::bind_with("127.0.0.1:0".parse().unwrap(), render, limits).expect("bind");
    let addr = ep.local_addr();
    let before = SCRAPE_CONNECTIONS.snapshot().refused;
    let mut first = std::net::TcpStream::connect(addr).expect("connect");
    first.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("send");
    // Once the first one is being answered (before, a new client would evict it).
    blocking(move || entered.recv_timeout(Duration::from_secs(10)))
        .await
        .expect("the first scrape rendering");
    // (Saying nothing: a request left unread when the refusal closes would reset the
    // connection, as it always did.)
    let busy = blocking(move || exchange(addr, b""))
        .await
        .expect("refused with an answer");
    assert!(busy.starts_with("HTTP/1.1 503 "), "{busy}");
    assert!(busy.ends_with("Service Unavailable\n"), "{busy}");
    assert!(SCRAPE_CONNECTIONS.snapshot().refused > before);
    // The first one gets its answer whole.
    let got = blocking(move || {
        first.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut out = Vec::new();
        first.read_to_end(&mut out).map(|_| out)
    })
    .await
    .expect("the first answer");
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(
        got.ends_with(&[b'#'; 64]) && got.len() > BIG,
        "{} bytes",
        got.len()
    );
    ep.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_then_stops_listening() {
    let ep =
        MetricsEndpoint::bind("127.0.0.1:0".parse().unwrap(), handle_with_flows()).expect("bind");
    let addr = ep.local_addr();
    assert_ne!(addr.port(), 0);
    let resp = tokio::task::spawn_blocking(move || {
        exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    })
    .await
    .unwrap()
    .expect("scrape");
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(
        resp.contains("flowd_flows{placement=\"software\"} 3"),
        "{resp}"
    );
    let big = tokio::task::spawn_blocking(move || exchange(addr, &[b'x'; 3 * MAX_REQUEST_HEAD]))
        .await
        .unwrap()
        .expect("oversized head");
    assert!(big.starts_with("HTTP/1.1 431 "), "{big}");

    // The same port on another endpoint: refused while this one listens.
    let err = MetricsEndpoint::bind(addr, handle_with_flows()).expect_err("in use");
    assert!(err.addr_in_use(), "{err}");

    ep.stop().await;
    let err = std::net::TcpStream::connect(addr).expect_err("stopped");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    // And the address can be served again at once.
    let again = MetricsEndpoint::bind(addr, handle_with_flows()).expect("rebind");
    drop(again);
}

#[test]
fn publishes_each_counter_under_its_name_and_kind() {
    let mut s = Snapshot {
        flows: Flows {
            installed: 5,
            limit: 100,
            port_quota: 25,
        },
        macs: Macs {
            entries: 7,
            ..Macs::default()
        },
        offload: Some(Offload {
            offloaded: 2,
            software: [("mtu", 3)].into_iter().collect(),
            ..Offload::default()
        }),
        ..Snapshot::default()
    };
    s.upcalls.queued = 11;
    s.datapath.rx = 42;
    let io = PortStats {
        rx_large: 4,
        ring_frames: 64,
        down: true,
        ..PortStats::default()
    };
    s.ports.insert(
        "rep0".into(),
        PortCounters {
            io: Some(io),
            ..PortCounters::default()
        },
    );
    let rec = PrometheusBuilder::new().build_recorder();
    let handle = rec.handle();
    metrics::with_local_recorder(&rec, || publish_snapshot(&s));
    let text = handle.render();
    for line in [
        "flowd_flows{placement=\"offloaded\"} 2",
        "flowd_flows{placement=\"software\"} 3",
        "flowd_upcalls_total 11",
        "flowd_offload_software_flows{reason=\"mtu\"} 3",
        // Every category, those with no flow at 0.
        "flowd_offload_software_flows{reason=\"neighbour\"} 0",
        "flowd_migrations_total{kind=\"moved\"} 0",
        "flowd_mac_table_entries 7",
        "flowd_flow_limit 100",
        "flowd_datapath_total{counter=\"rx_packets\"} 42",
        "flowd_datapath_total{counter=\"metrics_conns_refused\"}",
        "flowd_malformed_total{reason=\"ipv4_ihl\"} 0",
        "flowd_port_total{port=\"rep0\",counter=\"rx_large\"} 4",
        "flowd_port{port=\"rep0\",fact=\"ring_frames\"} 64",
        "flowd_port{port=\"rep0\",fact=\"down\"} 1",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    assert!(text.contains("# TYPE flowd_port gauge"), "{text}");
    assert!(text.contains("# TYPE flowd_port_total counter"), "{text}");
}
