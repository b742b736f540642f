//! Prometheus metrics: the daemon's counters ([`super::stats::Snapshot`]), published
//! every second under stable names through the `metrics` crate and its Prometheus
//! exporter, and served over HTTP.
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
//! | `flowd_port_total` | counter | `port`, `counter` (rx_large, rx_gso, rx_truncated, kernel_drops, tx_dropped, errors, ...) |
//! | `flowd_port` | gauge | `port`, `fact` (down, ring_frames, ring_mtu, mac_entries, flows) |
//! | `flowd_mac_table_entries`, `flowd_mac_table_limit`, `flowd_mac_port_quota` | gauge | |
//! | `flowd_mac_evictions_total` | counter | `cause` = table_full, port_quota |
//! | `flowd_flow_limit`, `flowd_flow_port_quota` | gauge | |
//! | `flowd_upcall_port_share_drops_total` | counter | |
//! | `flowd_malformed_total` | counter | `reason` (ipv4_ihl, tcp_truncated, ...) |
//!
//! The numbers come from one typed snapshot, the one `flowctl stats` renders
//! ([`publish`]); a port counter is a gauge or a counter by its
//! [`Kind`](super::stats::Kind), not by its name.
//!
//! The recorder is installed once per process ([`recorder`]). The endpoint
//! ([`MetricsEndpoint`]) is hyper's HTTP/1.1 server connection on a listener of flowd's
//! own, so that a configuration reload can move it to another address, start it or stop
//! it: bind the new endpoint, then stop the old one. Any `GET` (or `HEAD`), whatever its
//! path, gets the Prometheus text format (`Connection: close`: one request per
//! connection); other methods get `405`. The limits:
//! - a request head hyper cannot parse gets `400`, one larger than
//!   [`MAX_REQUEST_HEAD`] (hyper's read buffer limit) `431`;
//! - a head not complete within [`REQUEST_TIMEOUT`] of the accept gets `408` and the
//!   connection is closed, however steadily its bytes trickle in (hyper's header read
//!   timeout, on tokio's timer: bytes do not extend it);
//! - the answer must be taken within [`REQUEST_TIMEOUT`] of the complete head, or the
//!   connection is closed;
//! - after its answer, the endpoint reads and discards what the client still sends for
//!   a moment (the rest of an oversized head), so that closing does not reset the
//!   connection before the client has read the answer.
//!
//! At most [`MAX_SCRAPES`] connections are served at once, with the control socket's
//! rule ([`crate::control::slots`]): when all are taken, the one idle the longest (still
//! sending its head, or lingering after its answer) is closed to make room, so slow
//! clients cannot starve a scrape; only when every one is being answered is a new one
//! refused (`503`). [`SCRAPE_CONNECTIONS`] counts them (`flowctl stats`:
//! `metrics_conns_*`).

use super::Daemon;
use super::stats::{Kind, Snapshot};
use crate::control::slots::{ConnCounters, Eviction, Slot, Slots};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics::{counter, gauge};
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The largest request head the endpoint reads (request line and headers): hyper's
/// read buffer limit (its smallest allowed).
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

/// What the endpoint serves: the Prometheus text (a recorder handle's `render`).
type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// The endpoint's bounds (constants but in tests).
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// [`REQUEST_TIMEOUT`].
    request_timeout: Duration,
    /// [`MAX_SCRAPES`].
    max_scrapes: usize,
}

const LIMITS: Limits = Limits {
    request_timeout: REQUEST_TIMEOUT,
    max_scrapes: MAX_SCRAPES,
};

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
        Self::bind_with(addr, Arc::new(move || handle.render()), LIMITS)
    }

    fn bind_with(addr: SocketAddr, render: Render, limits: Limits) -> Result<Self, MetricsError> {
        let bind_err = |source| MetricsError::Bind { addr, source };
        let std_listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        let listener = TcpListener::from_std(std_listener).map_err(bind_err)?;
        // The address actually bound (port 0 picks one).
        let addr = listener.local_addr().map_err(bind_err)?;
        let task = tokio::spawn(serve(listener, render, limits));
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

async fn serve(listener: TcpListener, render: Render, limits: Limits) {
    let slots = Slots::new(limits.max_scrapes, &SCRAPE_CONNECTIONS);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let Some(slot) = slots.admit() else {
                    // Every connection is being answered. One attempt to say so, without
                    // a task: a flood of connections must not pile up writers.
                    refuse(stream);
                    continue;
                };
                tokio::spawn(scrape(stream, render.clone(), slot, limits));
            }
            // Out of descriptors and the like: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// One non-blocking attempt to answer `503`, then closes the connection (a fresh
/// connection's buffer takes it whole; tokio's own `try_write` could refuse before the
/// reactor has seen the socket writable). Not through hyper, which answers only a
/// request it has read.
fn refuse(stream: TcpStream) {
    if let Ok(s) = stream.into_std() {
        let _ = io::Write::write(&mut &s, &plain(StatusCode::SERVICE_UNAVAILABLE));
    }
}

/// A complete answer with `status` and its reason as the body, for the two answers
/// hyper does not give: `503` to a connection that gets no slot and `408` to a head
/// that came too slowly (hyper closes those without a word).
fn plain(status: StatusCode) -> Vec<u8> {
    let reason = status.canonical_reason().unwrap_or_default();
    let body = format!("{reason}\n");
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// How hyper's connection ended.
enum Served {
    /// Answered (or refused by hyper with `400` or `431`, or closed by the client).
    Done,
    /// The head did not come within the deadline.
    HeadTooSlow,
    /// The answer was not taken within the deadline.
    AnswerTooSlow,
    /// Evicted for a new client while idle.
    Evicted,
}

/// Serves one connection in its slot: hyper answers the request, then the endpoint
/// answers `408` if hyper gave up on the head, and lingers.
async fn scrape(mut stream: TcpStream, render: Render, mut slot: Slot, limits: Limits) {
    let mut eviction = slot.take_eviction();
    let served = http(&mut stream, &*render, &slot, &mut eviction, limits).await;
    match served {
        Served::Done => {}
        Served::Evicted => return,
        Served::AnswerTooSlow => return slot.timed_out(),
        Served::HeadTooSlow => {
            slot.timed_out();
            if !slot.busy() {
                return;
            }
            let sent = tokio::time::timeout(limits.request_timeout, async {
                stream
                    .write_all(&plain(StatusCode::REQUEST_TIMEOUT))
                    .await?;
                stream.shutdown().await
            })
            .await;
            if sent.is_err() {
                slot.timed_out();
            }
            if !matches!(sent, Ok(Ok(()))) {
                return;
            }
        }
    }
    slot.idle();
    linger(&mut stream, &mut eviction).await;
}

/// Hyper's HTTP/1.1 server connection on `stream`, one request, within the deadlines;
/// the connection is busy in its slot while the request is answered.
async fn http(
    stream: &mut TcpStream,
    render: &(dyn Fn() -> String + Send + Sync),
    slot: &Slot,
    eviction: &mut Eviction,
    limits: Limits,
) -> Served {
    let answering = Notify::new();
    let service = service_fn(|req: Request<Incoming>| {
        // A complete head: busy (not evictable) until answered, unless evicted already.
        let answer = if slot.busy() {
            answering.notify_one();
            Ok(answer(req.method(), render))
        } else {
            Err(Evicted)
        };
        std::future::ready(answer)
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_timeout)
        .max_buf_size(MAX_REQUEST_HEAD)
        .keep_alive(false)
        .title_case_headers(true)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = pin!(conn);
    // A backstop until the head is complete (hyper's own timer bounds the head, and
    // its `400` and `431` fit any socket buffer), then the deadline of the answer.
    let mut deadline = pin!(tokio::time::sleep(2 * limits.request_timeout));
    let mut answered = false;
    loop {
        tokio::select! {
            done = &mut conn => {
                return match done {
                    Err(e) if e.is_timeout() => Served::HeadTooSlow,
                    _ => Served::Done,
                };
            }
            () = eviction.wait() => return Served::Evicted,
            () = answering.notified(), if !answered => {
                answered = true;
                deadline.as_mut().reset(Instant::now() + limits.request_timeout);
            }
            () = &mut deadline => return Served::AnswerTooSlow,
        }
    }
}

/// A service's refusal to answer: the connection was evicted before its head was
/// complete.
#[derive(Debug, thiserror::Error)]
#[error("evicted for a new client")]
struct Evicted;

/// The answer to a request with a complete head: the metrics to a `GET` or `HEAD`
/// (hyper leaves out the body of the latter), `405` to anything else, which is not
/// rendered.
fn answer(method: &Method, render: &dyn Fn() -> String) -> Response<Full<Bytes>> {
    let close = HeaderValue::from_static("close");
    if method != Method::GET && method != Method::HEAD {
        let reason = StatusCode::METHOD_NOT_ALLOWED.canonical_reason();
        let mut r = Response::new(Full::from(format!("{}\n", reason.unwrap_or_default())));
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        let h = r.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        h.insert(CONNECTION, close);
        return r;
    }
    let mut r = Response::new(Full::from(render()));
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    h.insert(CONNECTION, close);
    r
}

/// Lingering close: reads what the client still sends (the rest of an oversized head),
/// so that closing with unread data does not reset the connection before the client
/// has read the answer. A new client may cut it short.
async fn linger(stream: &mut TcpStream, eviction: &mut Eviction) {
    let read = tokio::time::timeout(LINGER, async {
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
        _ = read => {}
        () = eviction.wait() => {}
    }
}

/// Publishes the daemon's counters now.
pub fn publish(d: &Daemon) {
    publish_snapshot(&Snapshot::take(d));
}

/// Publishes `s` under the metrics' names (see the module docs).
fn publish_snapshot(s: &Snapshot) {
    let offloaded = s.offloaded();
    gauge!("flowd_flows", "placement" => "offloaded").set(offloaded as f64);
    gauge!("flowd_flows", "placement" => "software")
        .set(s.flows.installed.saturating_sub(offloaded) as f64);
    counter!("flowd_upcalls_total").absolute(s.upcalls.queued);
    counter!("flowd_upcall_drops_total").absolute(s.upcall_drops());
    counter!("flowd_flow_setups_total").absolute(s.upcalls.installed);
    // Every category, so that one that emptied reads 0 rather than its last value.
    for reason in offload::SoftwareReason::CATEGORIES {
        let n = s.software(reason);
        gauge!("flowd_offload_software_flows", "reason" => reason).set(n as f64);
    }
    for (kind, n) in s.migrations() {
        counter!("flowd_migrations_total", "kind" => kind).absolute(n);
    }
    counter!("flowd_fib_events_total").absolute(s.fib_changes());
    counter!("flowd_fib_resyncs_total").absolute(s.fib_resyncs());
    counter!("flowd_revalidator_runs_total").absolute(s.reval.sweeps);
    publish_tables(s);
    for (reason, n) in s.malformed() {
        counter!("flowd_malformed_total", "reason" => reason).absolute(n);
    }
    for (name, n) in s.other() {
        counter!("flowd_datapath_total", "counter" => name).absolute(n);
    }
    for (port, counters) in &s.ports {
        for (name, kind, n) in counters.named() {
            let port = port.clone();
            match kind {
                Kind::Level => gauge!("flowd_port", "port" => port, "fact" => name).set(n as f64),
                Kind::Total => {
                    counter!("flowd_port_total", "port" => port, "counter" => name).absolute(n)
                }
            }
        }
    }
}

/// The MAC and flow tables' sizes, limits and evictions.
fn publish_tables(s: &Snapshot) {
    let m = &s.macs;
    gauge!("flowd_mac_table_entries").set(m.entries as f64);
    gauge!("flowd_mac_table_limit").set(m.limit as f64);
    gauge!("flowd_mac_port_quota").set(m.port_quota as f64);
    counter!("flowd_mac_evictions_total", "cause" => "table_full").absolute(m.stats.evicted);
    counter!("flowd_mac_evictions_total", "cause" => "port_quota").absolute(m.stats.quota_evicted);
    gauge!("flowd_flow_limit").set(s.flows.limit as f64);
    gauge!("flowd_flow_port_quota").set(s.flows.port_quota as f64);
    counter!("flowd_upcall_port_share_drops_total").absolute(s.upcalls.port_share);
}

#[cfg(test)]
mod tests;
