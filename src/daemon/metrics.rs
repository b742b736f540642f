//! Prometheus metrics: the `flowctl stats` counters, published every second under
//! stable names through the `metrics` crate and its Prometheus exporter.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `flowd_flows` | gauge | `placement` = offloaded, software |
//! | `flowd_upcalls_total`, `flowd_upcall_drops_total` | counter | |
//! | `flowd_flow_setups_total` | counter | |
//! | `flowd_offload_software_flows` | gauge | `reason` (the reason's stable category) |
//! | `flowd_migrations_total` | counter | `kind` |
//! | `flowd_fib_events_total`, `flowd_fib_resyncs_total` | counter | |
//! | `flowd_revalidator_runs_total` | counter | |
//! | `flowd_datapath_total` | counter | `counter` (rx_packets, cache_hits, ..., `control_conns_*`, `metrics_conns_*`) |
//! | `flowd_port_total` | counter | `port`, `counter` (rx_large, rx_gso, rx_truncated, kernel_drops, tx_dropped, errors) |
//! | `flowd_port` | gauge | `port`, `fact` (down, ring_frames, ring_mtu, mac_entries, flows) |
//! | `flowd_mac_table_entries`, `flowd_mac_table_limit`, `flowd_mac_port_quota` | gauge | |
//! | `flowd_mac_evictions_total` | counter | `cause` = table_full, port_quota |
//! | `flowd_flow_limit`, `flowd_flow_port_quota` | gauge | |
//! | `flowd_upcall_port_share_drops_total` | counter | |
//! | `flowd_malformed_total` | counter | `reason` (ipv4_ihl, tcp_truncated, ...) |
//!
//! The recorder is installed once per process ([`recorder`]); the endpoint is a small
//! HTTP server of flowd's own ([`MetricsEndpoint`]), so that a configuration reload can
//! move it to another address, start it or stop it: bind the new endpoint, then stop the
//! old one. Any `GET` (or `HEAD`), whatever its path, gets the Prometheus text format;
//! a request head larger than [`MAX_REQUEST_HEAD`] or not complete within
//! [`REQUEST_TIMEOUT`] of the accept is refused and the connection closed, however
//! steadily its bytes trickle in.
//!
//! At most [`MAX_SCRAPES`] connections are served at once, with the control socket's
//! rule ([`crate::control::slots`]): when all are taken, the one idle the longest (still
//! sending its head, or lingering after its answer) is closed to make room, so slow
//! clients cannot starve a scrape; only when every one is being answered is a new one
//! refused (`503`). [`SCRAPE_CONNECTIONS`] counts them (`flowctl stats`:
//! `metrics_conns_*`).

use super::handler::Handler;
use crate::control::proto::{Request, Response, ResponseBody};
use crate::control::server::ControlHandler;
use crate::control::slots::{ConnCounters, Slot, Slots};
use metrics::{counter, gauge};
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};
use std::io;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The largest request head the endpoint reads (request line and headers).
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// How long a client has to send its request head, and then to take the response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long, and how many bytes at most, the endpoint reads and discards after its
/// answer before closing.
const LINGER: Duration = Duration::from_secs(1);
const MAX_LINGER_BYTES: usize = 64 * 1024;

/// Connections served at once by one endpoint; one more takes the slot of the one idle
/// the longest, or is refused when all are being answered.
pub const MAX_SCRAPES: usize = 8;

/// The metrics endpoint's connection counters (every endpoint of the process).
pub static SCRAPE_CONNECTIONS: ConnCounters = ConnCounters::new();

/// Why metrics cannot be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The Prometheus recorder could not be installed (another global recorder is).
    #[error("cannot install the metrics recorder: {0}")]
    Recorder(#[source] BuildError),
    /// The endpoint could not listen on its address (in use, not local, ...).
    #[error("metrics endpoint on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl MetricsError {
    /// Whether the address is already in use (by another socket, or by an endpoint of
    /// ours on an overlapping address such as `0.0.0.0` and `127.0.0.1` on one port).
    pub fn addr_in_use(&self) -> bool {
        matches!(self, Self::Bind { source, .. } if source.kind() == io::ErrorKind::AddrInUse)
    }
}

/// The process's Prometheus recorder: installed as the global `metrics` recorder on the
/// first call, the same handle afterwards.
pub fn recorder() -> Result<PrometheusHandle, MetricsError> {
    static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);
    let mut slot = HANDLE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(h) = &*slot {
        return Ok(h.clone());
    }
    let h = PrometheusBuilder::new()
        .install_recorder()
        .map_err(MetricsError::Recorder)?;
    *slot = Some(h.clone());
    Ok(h)
}

/// A Prometheus text endpoint listening on one address, served by a task of its own.
/// Dropping it stops it too.
#[derive(Debug)]
pub struct MetricsEndpoint {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsEndpoint {
    /// Listens on `addr` and serves `handle.render()` there. Needs a tokio runtime.
    pub fn bind(addr: SocketAddr, handle: PrometheusHandle) -> Result<Self, MetricsError> {
        let bind_err = |source| MetricsError::Bind { addr, source };
        let std_listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        let listener = TcpListener::from_std(std_listener).map_err(bind_err)?;
        // The address actually bound (port 0 picks one).
        let addr = listener.local_addr().map_err(bind_err)?;
        let task = tokio::spawn(serve(listener, handle));
        Ok(Self { addr, task })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening (new connections are refused once this returns); scrapes in
    /// progress finish.
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, handle: PrometheusHandle) {
    let slots = Slots::new(MAX_SCRAPES, &SCRAPE_CONNECTIONS);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let Some(slot) = slots.admit() else {
                    // Every connection is being answered. One attempt to say so, without
                    // a task: a flood of connections must not pile up writers.
                    refuse(stream);
                    continue;
                };
                let handle = handle.clone();
                tokio::spawn(async move {
                    let _ = scrape(stream, &handle, slot).await;
                });
            }
            // Out of descriptors and the like: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// One non-blocking attempt to answer `503`, then closes the connection (a fresh
/// connection's buffer takes it whole; tokio's own `try_write` could refuse before the
/// reactor has seen the socket writable).
fn refuse(stream: TcpStream) {
    if let Ok(s) = stream.into_std() {
        let _ = io::Write::write(&mut &s, &plain(503, "Service Unavailable", &[]));
    }
}

async fn scrape(
    mut stream: TcpStream,
    handle: &PrometheusHandle,
    mut slot: Slot,
) -> io::Result<()> {
    // Counted from the accept: bytes trickling in do not extend it.
    let head = tokio::select! {
        head = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)) => match head {
            Ok(head) => head?,
            Err(_) => Head::TooSlow,
        },
        // Evicted for a new client: close without a word.
        () = slot.evicted() => return Ok(()),
    };
    if head == Head::TooSlow {
        slot.timed_out();
    }
    if !slot.busy() {
        return Ok(());
    }
    let Some(resp) = response(&head, || handle.render()) else {
        return Ok(());
    };
    let sent = tokio::time::timeout(REQUEST_TIMEOUT, async {
        stream.write_all(&resp).await?;
        stream.shutdown().await
    })
    .await;
    if sent.is_err() {
        slot.timed_out();
    }
    if !matches!(sent, Ok(Ok(()))) {
        return Ok(());
    }
    slot.idle();
    // Lingering close: read what the client still sends (the rest of an oversized
    // head), so that closing with unread data does not reset the connection before the
    // client has read the answer. A new client may cut it short.
    let linger = tokio::time::timeout(LINGER, async {
        let mut sink = [0u8; 1024];
        let mut left = MAX_LINGER_BYTES;
        while left > 0 {
            let n = stream.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
        io::Result::Ok(())
    });
    tokio::select! {
        _ = linger => {}
        () = slot.evicted() => {}
    }
    Ok(())
}

/// What a client sent.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// A request head, complete or cut by the end of the stream.
    Request(Vec<u8>),
    /// More than [`MAX_REQUEST_HEAD`] bytes without the blank line that ends a head.
    TooLarge,
    /// Not all of it within [`REQUEST_TIMEOUT`].
    TooSlow,
}

/// Where the blank line ending a request head is, if `buf` has one.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    crlf.into_iter().chain(lf).min()
}

async fn read_head<R: AsyncReadExt + Unpin>(r: &mut R) -> io::Result<Head> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Head::Request(buf));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buf) {
            buf.truncate(end);
            return Ok(Head::Request(buf));
        }
        if buf.len() > MAX_REQUEST_HEAD {
            return Ok(Head::TooLarge);
        }
    }
}

/// The bytes to answer `head` with (`None`: close without a word). `body` renders the
/// metrics, called only for a `GET` or a `HEAD`.
fn response(head: &Head, body: impl FnOnce() -> String) -> Option<Vec<u8>> {
    let request = match head {
        Head::Request(r) if r.iter().all(u8::is_ascii_whitespace) => return None,
        Head::Request(r) => r,
        Head::TooLarge => return Some(plain(431, "Request Header Fields Too Large", &[])),
        Head::TooSlow => return Some(plain(408, "Request Timeout", &[])),
    };
    let line = request.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut words = line
        .trim_ascii()
        .split(|&b| b == b' ')
        .filter(|w| !w.is_empty());
    let (Some(method), Some(_target)) = (words.next(), words.next()) else {
        return Some(plain(400, "Bad Request", &[]));
    };
    let head_only = match method {
        b"GET" => false,
        b"HEAD" => true,
        _ => return Some(plain(405, "Method Not Allowed", &["Allow: GET, HEAD"])),
    };
    let text = body();
    let mut resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        text.len()
    )
    .into_bytes();
    if !head_only {
        resp.extend_from_slice(text.as_bytes());
    }
    Some(resp)
}

/// An error response whose body is its reason.
fn plain(status: u16, reason: &str, headers: &[&str]) -> Vec<u8> {
    let mut extra = String::new();
    for h in headers {
        extra.push_str(h);
        extra.push_str("\r\n");
    }
    let body = format!("{reason}\n");
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Publishes the current counters once.
pub fn publish(h: &Handler) {
    let Response::Ok(ResponseBody::Stats(s)) = h.handle(Request::Stats) else {
        return;
    };
    gauge!("flowd_flows", "placement" => "offloaded").set(s.flows_offloaded as f64);
    gauge!("flowd_flows", "placement" => "software")
        .set(s.flows.saturating_sub(s.flows_offloaded) as f64);
    counter!("flowd_upcalls_total").absolute(s.upcalls);
    counter!("flowd_upcall_drops_total").absolute(s.upcall_drops);
    counter!("flowd_flow_setups_total").absolute(s.flow_setups);
    // Every category, so that one that emptied reads 0 rather than its last value.
    for reason in offload::SoftwareReason::CATEGORIES {
        let n = s.offload_failed_by_reason.get(reason).copied().unwrap_or(0);
        gauge!("flowd_offload_software_flows", "reason" => reason).set(n as f64);
    }
    for (kind, n) in &s.migrations_by_kind {
        counter!("flowd_migrations_total", "kind" => kind.clone()).absolute(*n);
    }
    counter!("flowd_fib_events_total").absolute(s.fib_events);
    counter!("flowd_fib_resyncs_total").absolute(s.resyncs);
    counter!("flowd_revalidator_runs_total").absolute(s.revalidator_runs);
    gauge!("flowd_mac_table_entries").set(s.mac_entries as f64);
    gauge!("flowd_mac_table_limit").set(s.mac_limit as f64);
    gauge!("flowd_mac_port_quota").set(s.mac_port_quota as f64);
    counter!("flowd_mac_evictions_total", "cause" => "table_full").absolute(s.mac_evictions);
    counter!("flowd_mac_evictions_total", "cause" => "port_quota").absolute(s.mac_quota_evictions);
    gauge!("flowd_flow_limit").set(s.flow_limit as f64);
    gauge!("flowd_flow_port_quota").set(s.flow_port_quota as f64);
    counter!("flowd_upcall_port_share_drops_total").absolute(s.upcall_port_share_drops);
    for (reason, n) in &s.malformed {
        counter!("flowd_malformed_total", "reason" => reason.clone()).absolute(*n);
    }
    for (name, n) in &s.other {
        counter!("flowd_datapath_total", "counter" => name.clone()).absolute(*n);
    }
    for (port, counters) in &s.ports {
        for (name, n) in counters {
            match name.as_str() {
                "down" | "ring_frames" | "ring_mtu" | "mac_entries" | "flows" => {
                    gauge!("flowd_port", "port" => port.clone(), "fact" => name.clone())
                        .set(*n as f64);
                }
                _ => {
                    counter!("flowd_port_total", "port" => port.clone(), "counter" => name.clone())
                        .absolute(*n)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn handle_with_flows() -> PrometheusHandle {
        let rec = PrometheusBuilder::new().build_recorder();
        let handle = rec.handle();
        metrics::with_local_recorder(&rec, || {
            gauge!("flowd_flows", "placement" => "software").set(3.0);
        });
        handle
    }

    fn exchange(addr: SocketAddr, request: &[u8]) -> io::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(request)?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn answers_get_and_head_refuses_the_rest() {
        let body = || "flowd_flows 1\n".to_string();
        let req = |s: &str| Head::Request(s.as_bytes().to_vec());
        let get = String::from_utf8(response(&req("GET /metrics HTTP/1.1"), body).unwrap());
        let get = get.unwrap();
        assert!(get.starts_with("HTTP/1.1 200 OK\r\n"), "{get}");
        assert!(get.contains("Content-Type: text/plain; version=0.0.4\r\n"));
        assert!(get.contains("Content-Length: 14\r\n"));
        assert!(get.contains("Connection: close\r\n"));
        assert!(get.ends_with("\r\n\r\nflowd_flows 1\n"), "{get}");
        let head = response(&req("HEAD / HTTP/1.0"), body).unwrap();
        assert!(head.ends_with(b"Content-Length: 14\r\nConnection: close\r\n\r\n"));
        let mut rendered = false;
        let post = response(&req("POST /metrics HTTP/1.1"), || {
            rendered = true;
            String::new()
        })
        .unwrap();
        assert!(post.starts_with(b"HTTP/1.1 405 "));
        assert!(!rendered, "only GET and HEAD render");
        for junk in ["GET", "\u{0}\u{1}\u{ff}", "  GET  ", "\r\n"] {
            let r = response(&req(junk), body);
            assert!(
                r.is_none()
                    || r.as_deref()
                        .is_some_and(|r| r.starts_with(b"HTTP/1.1 400 ")),
                "{junk:?}"
            );
        }
        assert!(
            response(&req(""), body).is_none(),
            "nothing sent: nothing said"
        );
        assert!(
            response(&Head::TooLarge, body)
                .unwrap()
                .starts_with(b"HTTP/1.1 431 ")
        );
        assert!(
            response(&Head::TooSlow, body)
                .unwrap()
                .starts_with(b"HTTP/1.1 408 ")
        );
    }

    #[tokio::test]
    async fn reads_a_head_within_bounds() {
        let mut ok: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest";
        assert_eq!(
            read_head(&mut ok).await.unwrap(),
            Head::Request(b"GET / HTTP/1.1\r\nHost: x".to_vec())
        );
        let mut bare: &[u8] = b"GET / HTTP/1.0\n\n";
        assert_eq!(
            read_head(&mut bare).await.unwrap(),
            Head::Request(b"GET / HTTP/1.0".to_vec())
        );
        let big = vec![b'a'; MAX_REQUEST_HEAD + 10];
        assert_eq!(
            read_head(&mut big.as_slice()).await.unwrap(),
            Head::TooLarge
        );
        let mut cut: &[u8] = b"GET / HT";
        assert_eq!(
            read_head(&mut cut).await.unwrap(),
            Head::Request(b"GET / HT".to_vec())
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_then_stops_listening() {
        let ep = MetricsEndpoint::bind("127.0.0.1:0".parse().unwrap(), handle_with_flows())
            .expect("bind");
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
        let big =
            tokio::task::spawn_blocking(move || exchange(addr, &[b'x'; 3 * MAX_REQUEST_HEAD]))
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
}
