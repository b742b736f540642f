//! The scale bench's dump-flows phase: `--summary` and `--limit 1000` (one-line
//! answers), the whole table streamed through the real `flowctl` (text, then
//! `--json`) with its time, its bytes, the rows it printed, the daemon's RSS peak over
//! the dump (sampled every 10 ms) and flowctl's own peak RSS (`wait4`'s `ru_maxrss`),
//! beside `flowctl dump-flows --limit 1000`'s as a baseline; then, for comparison and
//! up to [`WHOLE_DUMP_MAX`] flows, the one-line answer read whole (what flowctl did
//! before streaming).

use flowd::control::client::request_with_timeout;
use flowd::control::proto::{FlowFilter, FlowSelect, Request, Response, ResponseBody};
use flowd::lab::Lab;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The one-line (whole) answer is measured up to this many flows: it holds the whole
/// dump in the daemon and in the client.
pub const WHOLE_DUMP_MAX: u64 = 200_000;

/// A one-line answer: its time, its size, its body.
type Timed = (Duration, usize, ResponseBody);

/// A dump through `flowctl`.
pub struct Streamed {
    what: &'static str,
    time: Duration,
    bytes: u64,
    lines: u64,
    /// The daemon's RSS before and its peak during the dump.
    daemon_rss: (u64, u64),
    /// flowctl's peak RSS.
    flowctl_maxrss: u64,
}

/// What the phase measured.
pub struct Dumps {
    summary: Timed,
    limited: Timed,
    streamed: Vec<Streamed>,
    /// The control: the daemon's RSS over as long as the longest streamed dump, idle
    /// (what grows without a dump: the revalidator, the offload worker at work).
    idle: (Duration, (u64, u64)),
    whole: Option<(Timed, (u64, u64))>,
}

fn timed(l: &Lab, req: Request) -> Result<Timed, String> {
    let t = Instant::now();
    let line = serde_json::to_vec(&req).map_err(|e| e.to_string())?.len();
    match request_with_timeout(&l.socket(), &req, Duration::from_secs(300)) {
        Ok(Response::Ok(body)) => {
            let size = serde_json::to_vec(&body).map_or(0, |v| v.len()) + line;
            Ok((t.elapsed(), size, body))
        }
        Ok(Response::Err { message }) => Err(message),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs `f` while a thread samples the daemon's RSS every 10 ms; `f`'s result, the RSS
/// before and the highest sample.
fn with_rss_peak<T>(pid: u32, f: impl FnOnce() -> T) -> (T, (u64, u64)) {
    let before = super::rss(pid);
    let peak = Arc::new(AtomicU64::new(before));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (Arc::clone(&peak), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(super::rss(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let out = f();
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    peak.fetch_max(super::rss(pid), Ordering::Relaxed);
    (out, (before, peak.load(Ordering::Relaxed)))
}

/// Runs flowctl with `args`, reading its output as it comes (counting bytes and
/// lines); its time, bytes, lines and peak RSS (bytes).
fn flowctl(socket: &Path, args: &[&str]) -> Result<(Duration, u64, u64, u64), String> {
    let t = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_flowctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("flowctl: {e}"))?;
    let mut out = child.stdout.take().ok_or("no stdout")?;
    let (mut bytes, mut lines) = (0u64, 0u64);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = out
            .read(&mut buf)
            .map_err(|e| format!("flowctl's output: {e}"))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
    }
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid, and wait4 only writes through the two
    // pointers, which outlive the call; the child is ours and not yet reaped.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = t.elapsed();
    if r != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("flowctl {args:?} failed (status {status:#x})"));
    }
    Ok((elapsed, bytes, lines, usage.ru_maxrss as u64 * 1024))
}

/// The whole table through flowctl with `args`.
fn streamed(l: &Lab, pid: u32, what: &'static str, args: &[&str]) -> Result<Streamed, String> {
    let socket = l.socket();
    let (r, daemon_rss) = with_rss_peak(pid, || flowctl(&socket, args));
    let (time, bytes, lines, flowctl_maxrss) = r?;
    Ok(Streamed {
        what,
        time,
        bytes,
        lines,
        daemon_rss,
        flowctl_maxrss,
    })
}

/// dump-flows every way, on a table of `flows` flows of the daemon `pid`.
pub fn dumps(l: &mut Lab, pid: u32, flows: u64) -> Result<Dumps, String> {
    let ask = |select: FlowSelect, summary: bool| Request::DumpFlows {
        filter: FlowFilter::All,
        select,
        summary,
        stream: 0,
    };
    let limit = FlowSelect {
        limit: Some(1000),
        ..FlowSelect::default()
    };
    let summary = timed(l, ask(FlowSelect::default(), true))?;
    let limited = timed(l, ask(limit, false))?;
    let streamed = vec![
        streamed(l, pid, "--limit 1000", &["dump-flows", "--limit", "1000"])?,
        streamed(l, pid, "all, text", &["dump-flows"])?,
        streamed(l, pid, "all, --json", &["--json", "dump-flows"])?,
    ];
    let longest = streamed.iter().map(|s| s.time).max().unwrap_or_default();
    let ((), idle) = with_rss_peak(pid, || std::thread::sleep(longest));
    let whole = (flows <= WHOLE_DUMP_MAX)
        .then(|| {
            let (t, rss) = with_rss_peak(pid, || timed(l, Request::dump_flows(FlowFilter::All)));
            t.map(|t| (t, rss))
        })
        .transpose()?;
    Ok(Dumps {
        summary,
        limited,
        streamed,
        idle: (longest, idle),
        whole,
    })
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// Prints the phase's rows (`row` is the bench's table printer).
pub fn print(d: &Dumps, row: impl Fn(&str, String, &str, Option<bool>)) {
    let secs = |t: Duration| format!("{:.3} s", t.as_secs_f64());
    row("dump-flows --summary", secs(d.summary.0), "-", None);
    row(
        "dump-flows --limit 1000 (one line)",
        secs(d.limited.0),
        "-",
        None,
    );
    let base = d.streamed.first().map_or(0, |s| s.flowctl_maxrss);
    for s in &d.streamed {
        row(
            &format!("flowctl dump-flows {}: time, lines", s.what),
            format!("{} {}", secs(s.time), s.lines),
            "-",
            None,
        );
        row(
            "  bytes; per second",
            format!(
                "{:.0} MiB {:.0} MiB/s",
                mib(s.bytes),
                mib(s.bytes) / s.time.as_secs_f64().max(1e-9)
            ),
            "-",
            None,
        );
        let grown = s.daemon_rss.1.saturating_sub(s.daemon_rss.0);
        row(
            "  daemon RSS growth (peak - before)",
            format!("{:.1} MiB", mib(grown)),
            "constant",
            None,
        );
        row(
            "  flowctl peak RSS (--limit 1000's)",
            format!("{:.1} MiB ({:.1})", mib(s.flowctl_maxrss), mib(base)),
            "constant",
            None,
        );
    }
    row(
        &format!(
            "daemon RSS growth idle {:.1} s (control)",
            d.idle.0.as_secs_f64()
        ),
        format!("{:.1} MiB", mib(d.idle.1.1.saturating_sub(d.idle.1.0))),
        "-",
        None,
    );
    match &d.whole {
        Some(((t, size, _), rss)) => {
            row(
                "dump-flows whole, one JSON line (old way)",
                format!("{:.2} s {:.0} MiB", t.as_secs_f64(), mib(*size as u64)),
                "-",
                None,
            );
            row(
                "  daemon RSS growth (peak - before)",
                format!("{:.1} MiB", mib(rss.1.saturating_sub(rss.0))),
                "-",
                None,
            );
        }
        None => row(
            "dump-flows whole, one JSON line (old way)",
            format!("not run > {WHOLE_DUMP_MAX}"),
            "-",
            None,
        ),
    }
    if let ResponseBody::FlowSummary(s) = &d.summary.2 {
        println!(
            "summary: {} flows, by placement {:?}",
            s.flows, s.by_placement
        );
    }
}
