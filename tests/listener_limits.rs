//! Idle, slow and oversized clients of the real daemon's listeners (issue 16): clients
//! that hold every control slot with blank lines do not lock flowctl out, slow senders
//! do not starve Prometheus, and an error answer does not echo a 1 MiB request back.
//! The daemon runs in the lab's hypervisor namespace; the clients are this process.

use flowd::control::client;
use flowd::control::proto::{Request, Response, ResponseBody};
use flowd::control::server::MAX_CLIENTS;
use flowd::daemon::metrics::MAX_SCRAPES;
use flowd::lab::{self, Lab};
use flowd::netns::can_netns;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Hostile clients beyond a listener's slots.
const EXTRA: usize = 4;

/// Builds a lab named `prefix` and starts the daemon on it, with `[metrics]` on
/// `metrics` if given; `None` (the test skips) without network namespaces.
fn lab_with_daemon(prefix: &str, metrics: Option<SocketAddr>) -> Option<Lab> {
    if !can_netns() {
        eprintln!("skipped: needs root and iproute2");
        return None;
    }
    let mut l = lab::build(prefix).expect("lab topology");
    let exe = Lab::flowd_exe(env!("CARGO_BIN_EXE_flowd"));
    let mut text = lab::config_text("sim", &l.socket());
    if let Some(addr) = metrics {
        text.push_str(&format!("\n[metrics]\nlisten = \"{addr}\"\n"));
    }
    l.start_daemon_config(&exe, &text, &[])
        .expect("flowd starts");
    Some(l)
}

/// Waits up to 20 s for `f`; panics with the daemon's log if it never holds.
fn eventually(l: &Lab, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}\n--- daemon log:\n{}", l.log());
}

/// The daemon's `other` counter `name` (0 when absent).
fn counter(l: &Lab, name: &str) -> u64 {
    let req = Request::Stats;
    match client::request_with_timeout(&l.socket(), &req, Duration::from_secs(10)) {
        Ok(Response::Ok(ResponseBody::Stats(s))) => s.other.get(name).copied().unwrap_or(0),
        other => panic!("stats: {other:?}\n{}", l.log()),
    }
}

/// Hostile clients on threads of their own, each keeping one connection open and
/// opening another as soon as the daemon closes it; stopped on drop.
struct Crowd {
    stop: Arc<AtomicBool>,
    /// Sends done (a blank line, a byte of a head), over every client.
    sends: Arc<AtomicUsize>,
    /// Connections the daemon closed, over every client.
    closed: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

impl Crowd {
    /// `n` clients; `connect` opens a connection, `first` is sent on it once, then
    /// `each` every 200 ms until a send fails.
    fn start<S: Write + Send + 'static>(
        n: usize,
        connect: impl Fn() -> io::Result<S> + Send + Sync + 'static,
        first: &'static [u8],
        each: &'static [u8],
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sends = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let connect = Arc::new(connect);
        let threads = (0..n)
            .map(|_| {
                let (stop, sends, closed) = (stop.clone(), sends.clone(), closed.clone());
                let connect = connect.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(mut s) = connect() {
                            let mut ok = s.write_all(first).is_ok();
                            while ok && !stop.load(Ordering::Relaxed) {
                                std::thread::sleep(Duration::from_millis(200));
                                ok = s.write_all(each).is_ok();
                                if ok {
                                    sends.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            if !ok {
                                // Closed by the daemon: back at once, keeping the
                                // pressure on.
                                closed.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                })
            })
            .collect();
        Self {
            stop,
            sends,
            closed,
            threads,
        }
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn blank_line_senders_holding_every_control_slot_do_not_lock_out_flowctl() {
    let Some(l) = lab_with_daemon("llc", None) else {
        return;
    };
    let socket = l.socket();
    let path = socket.clone();
    // More connections than there are slots, each sending a blank line every 200 ms
    // and coming back as soon as it is closed: every slot is always taken.
    let crowd = Crowd::start(
        MAX_CLIENTS + EXTRA,
        move || UnixStream::connect(&path),
        b"\n",
        b"\n",
    );
    eventually(&l, "the crowd taking each other's slots", || {
        crowd.sends.load(Ordering::Relaxed) >= 2 * MAX_CLIENTS
            && crowd.closed.load(Ordering::Relaxed) >= 2 * EXTRA
    });

    for i in 0..5 {
        let started = Instant::now();
        let o = Command::new(env!("CARGO_BIN_EXE_flowctl"))
            .arg("--socket")
            .arg(&socket)
            .arg("show")
            .output()
            .expect("flowctl runs");
        let took = started.elapsed();
        assert!(
            o.status.success(),
            "flowctl show #{i} under {} blank-line senders: {}{}",
            MAX_CLIENTS + EXTRA,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        println!("flowctl show #{i}: answered in {} ms", took.as_millis());
        assert!(String::from_utf8_lossy(&o.stdout).contains("rep0"));
    }
    // Each client took the slot of the connection idle the longest; none was refused.
    let evicted = counter(&l, "control_conns_evicted");
    assert!(evicted >= 5, "control_conns_evicted = {evicted}");
    assert_eq!(counter(&l, "control_conns_refused"), 0);
    println!(
        "evicted {evicted}; the crowd saw {} connections closed",
        crowd.closed.load(Ordering::Relaxed)
    );
    drop(crowd);
}

/// `GET /metrics` on `addr` in the hypervisor namespace: whether the answer is a 200
/// with flowd's counters, else what came back.
fn scrape(l: &Lab, addr: SocketAddr) -> Result<(), String> {
    let resp = fibwatch::in_netns(&l.hv.path(), || {
        Ok((|| {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: flowd\r\n\r\n")?;
            let mut out = Vec::new();
            s.read_to_end(&mut out)?;
            io::Result::Ok(String::from_utf8_lossy(&out).into_owned())
        })())
    })
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    if resp.starts_with("HTTP/1.1 200 OK\r\n") && resp.contains("flowd_flows") {
        Ok(())
    } else {
        Err(format!("{:?}", &resp[..resp.len().min(200)]))
    }
}

#[test]
fn slow_senders_holding_every_metrics_slot_do_not_starve_scrapes() {
    let addr: SocketAddr = "127.0.0.1:19131".parse().expect("addr");
    let Some(l) = lab_with_daemon("llm", Some(addr)) else {
        return;
    };
    eventually(&l, "the first scrape", || scrape(&l, addr).is_ok());
    let hv = l.hv.path();
    // More connections than there are slots, each trickling its head a byte every
    // 200 ms (never finishing it) and coming back as soon as it is closed.
    let crowd = Crowd::start(
        MAX_SCRAPES + EXTRA,
        move || {
            fibwatch::in_netns(&hv, || Ok(TcpStream::connect(addr))).map_err(io::Error::other)?
        },
        b"GET /metrics HTTP/1.1\r\n",
        b"X",
    );
    eventually(&l, "the slow clients taking each other's slots", || {
        crowd.sends.load(Ordering::Relaxed) >= 2 * MAX_SCRAPES
            && crowd.closed.load(Ordering::Relaxed) >= 2 * EXTRA
    });

    let mut failed = Vec::new();
    for i in 0..10 {
        if let Err(e) = scrape(&l, addr) {
            failed.push(format!("scrape #{i}: {e}"));
        }
    }
    println!(
        "{} of 10 scrapes answered under {} slow senders",
        10 - failed.len(),
        MAX_SCRAPES + EXTRA
    );
    assert!(failed.is_empty(), "{failed:#?}");
    let evicted = counter(&l, "metrics_conns_evicted");
    assert!(evicted >= 1, "metrics_conns_evicted = {evicted}");
    println!("metrics_conns_evicted {evicted}");
    drop(crowd);
}

/// Sends `line` on a new connection to `socket`; the answer line.
fn raw_request(socket: &Path, line: &[u8]) -> String {
    let s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut r = BufReader::new(s);
    r.get_mut().write_all(line).expect("send");
    let mut answer = String::new();
    r.read_line(&mut answer).expect("answer");
    answer
}

#[test]
fn error_answers_quote_a_bounded_part_of_a_large_request() {
    let Some(l) = lab_with_daemon("lle", None) else {
        return;
    };
    let socket = l.socket();
    // Just under the 1 MiB request limit: each is read whole, and refused.
    let big = "9".repeat(1_000_000);
    let requests = [
        format!("{{\"command\":\"trace\",\"flow\":\"in_port({big})\"}}\n"),
        format!(
            "{{\"command\":\"rules_add\",\"priority\":1,\"match\":\"{big}\",\"actions\":\"drop\"}}\n"
        ),
        format!(
            "{{\"command\":\"rules_add\",\"priority\":1,\"match\":\"in_port(1)\",\"actions\":\"x{big}\"}}\n"
        ),
        format!("{{\"command\":\"fdb\",\"network\":\"{big}\"}}\n"),
        format!("{{\"command\":\"x{big}\"}}\n"),
    ];
    for req in &requests {
        let answer = raw_request(&socket, req.as_bytes());
        println!(
            "{} bytes asked, {} bytes answered: {}",
            req.len(),
            answer.len(),
            answer.trim_end()
        );
        assert!(answer.len() < 1024, "{} bytes: {answer:.300}", answer.len());
        let r: Response = serde_json::from_str(&answer).expect("an answer");
        assert!(
            matches!(&r, Response::Err { message } if message.contains(" bytes)")),
            "{r:?}"
        );
    }
}
