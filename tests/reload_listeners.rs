//! A reload moves the daemon's listeners: the control socket (`[control] socket`) and
//! the Prometheus endpoint (`[metrics] listen`), on the real daemon running in the lab's
//! hypervisor namespace. A move binds the new listener first; one that cannot bind is
//! logged and the old listener keeps serving; the next reload tries again. A reload asked
//! through the control socket answers whether each move took effect.

mod common;

use flowd::control::client;
use flowd::control::proto::{Request, Response, ResponseBody};
use flowd::lab::{self, Lab};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Rewrites the lab's configuration with this control socket and metrics address.
fn write_config(l: &Lab, socket: &Path, metrics: Option<SocketAddr>) {
    let mut text = lab::config_text("sim", socket);
    if let Some(addr) = metrics {
        text.push_str(&format!("\n[metrics]\nlisten = \"{addr}\"\n"));
    }
    std::fs::write(l.dir.join("flowd.toml"), text).expect("write the configuration");
}

/// One request on `socket`, with a short timeout.
fn ask(socket: &Path, req: Request) -> Result<ResponseBody, String> {
    match client::request_with_timeout(socket, &req, Duration::from_secs(10)) {
        Ok(Response::Ok(body)) => Ok(body),
        Ok(Response::Err { message }) => Err(message),
        Err(e) => Err(e.to_string()),
    }
}

/// `flowctl reload` on `socket`; the daemon's answer.
fn reload(l: &Lab, socket: &Path) -> String {
    match ask(socket, Request::Reload { allow_empty: false }) {
        Ok(ResponseBody::Done(d)) => d.message,
        other => panic!("reload: {other:?}\n{}", l.log()),
    }
}

/// SIGHUP to the daemon (`ip netns exec` execs flowd in place: the child is it).
fn sighup(l: &Lab) {
    let pid = l.daemon.as_ref().expect("daemon").id();
    // SAFETY: sending SIGHUP to our own child.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
}

fn answers(socket: &Path) -> bool {
    matches!(ask(socket, Request::Show), Ok(ResponseBody::Ports(_)))
}

/// How many lines of the daemon's log contain `what`.
fn log_lines(l: &Lab, what: &str) -> usize {
    l.log().lines().filter(|s| s.contains(what)).count()
}

fn alive(l: &mut Lab) -> bool {
    matches!(l.daemon.as_mut().map(|d| d.try_wait()), Some(Ok(None)))
}

/// Waits up to 60 s (a loaded machine) for `f`; panics with the daemon's log if it never holds.
fn eventually(l: &Lab, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}\n--- daemon log:\n{}", l.log());
}

/// Runs `f` on a thread inside the lab's hypervisor namespace (where the daemon is).
fn in_hv<T: Send>(l: &Lab, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    fibwatch::in_netns(&l.hv.path(), || Ok(f()))
        .map_err(|e| io::Error::other(format!("entering {}: {e}", l.hv.name)))?
}

/// Sends `request` to `addr` in the hypervisor namespace; everything the server said
/// until it closed.
fn exchange(l: &Lab, addr: SocketAddr, request: &[u8]) -> io::Result<String> {
    in_hv(l, || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.set_write_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(request)?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    })
}

/// `GET /metrics` on `addr`: the body, if the answer is a well-formed 200 with flowd's
/// counters in it.
fn scrape(l: &Lab, addr: SocketAddr) -> Result<String, String> {
    let resp = exchange(l, addr, b"GET /metrics HTTP/1.1\r\nHost: flowd\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end: {resp:?}"))?;
    let mut lines = head.lines();
    if lines.next() != Some("HTTP/1.1 200 OK") {
        return Err(format!("not a 200: {head}"));
    }
    let headers: Vec<(String, String)> = lines
        .filter_map(|h| h.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if header("content-type") != Some("text/plain; version=0.0.4") {
        return Err(format!("content type: {head}"));
    }
    if header("connection") != Some("close") {
        return Err(format!("connection: {head}"));
    }
    if header("content-length") != Some(&body.len().to_string()) {
        return Err(format!("content length vs {} bytes: {head}", body.len()));
    }
    if !body.contains("flowd_flows") {
        return Err(format!("no flowd_flows yet: {body}"));
    }
    Ok(body.to_string())
}

/// Whether a connection to `addr` in the hypervisor namespace is refused.
fn refused(l: &Lab, addr: SocketAddr) -> bool {
    matches!(
        in_hv(l, || TcpStream::connect_timeout(&addr, Duration::from_secs(2))),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
    )
}

#[test]
fn control_socket_moves_on_reload_and_is_removed_on_shutdown() {
    let Some(mut l) = common::lab_with_sim_daemon("rlc") else {
        return;
    };
    let old = l.socket();
    // A directory that does not exist yet: created 0700, as at start-up.
    let new = l.dir.join("moved").join("ctl.sock");
    write_config(&l, &new, None);
    let said = reload(&l, &old);
    assert!(said.contains("[control]"), "{said}");
    eventually(&l, "the new socket answering and the old one gone", || {
        answers(&new) && !old.exists()
    });
    assert!(!answers(&old), "nothing answers on the old path");
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&new), 0o600, "the new socket's mode");
    assert_eq!(
        mode(new.parent().expect("dir")),
        0o700,
        "its directory's mode"
    );
    assert!(alive(&mut l));

    // And back, by SIGHUP this time.
    write_config(&l, &old, None);
    sighup(&l);
    eventually(&l, "the socket back at its first path", || {
        answers(&old) && !new.exists()
    });

    // Once more, then shut down: the socket in use at the time is removed.
    write_config(&l, &new, None);
    reload(&l, &old);
    eventually(&l, "the socket moved again", || {
        answers(&new) && !old.exists()
    });
    let status = l.stop_daemon().expect("flowd stops on SIGTERM");
    assert!(status.success(), "exit status {status}\n{}", l.log());
    assert!(!new.exists(), "the current socket is removed on shutdown");
    assert!(!old.exists());
}

#[test]
fn control_socket_that_cannot_be_bound_keeps_the_old_one_until_fixed() {
    let Some(mut l) = common::lab_with_sim_daemon("rlf") else {
        return;
    };
    let old = l.socket();
    // A directory that cannot be created: its parent is a regular file.
    let blocker = l.dir.join("blocker");
    std::fs::write(&blocker, b"not a directory").expect("blocker file");
    let bad = blocker.join("sub").join("ctl.sock");
    write_config(&l, &bad, None);
    sighup(&l);
    eventually(&l, "the failed move in the log", || {
        l.log().contains("cannot move the control socket")
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        log_lines(&l, "cannot move the control socket"),
        1,
        "one error per failed move\n{}",
        l.log()
    );
    assert!(answers(&old), "the old socket keeps answering");
    assert!(alive(&mut l), "the daemon is alive\n{}", l.log());
    assert!(!bad.exists());
    let log = l.log();
    let line = log
        .lines()
        .find(|s| s.contains("cannot move the control socket"))
        .unwrap_or_default();
    assert!(
        line.contains("ERROR") && line.contains("blocker"),
        "the reason, with the path: {line}"
    );
    // Asked through flowctl, the same reload answers that the move was not applied
    // (flowctl exits non-zero), and why.
    match ask(&old, Request::Reload { allow_empty: false }) {
        Err(m) => assert!(
            m.contains("not applied: [control] socket") && m.contains("blocker"),
            "{m}"
        ),
        other => panic!("a failed move answered {other:?}"),
    }
    assert!(answers(&old), "the old socket keeps answering");

    // Fixed: the same file reloaded again moves the socket (nothing changed in the
    // file, yet the move is retried).
    std::fs::remove_file(&blocker).expect("remove the blocker");
    let said = reload(&l, &old);
    assert!(said.contains("no change"), "{said}");
    eventually(&l, "the socket at the fixed path", || {
        answers(&bad) && !old.exists()
    });
    assert!(alive(&mut l));
}

#[test]
fn metrics_enabled_moved_refused_and_disabled_by_reload() {
    let Some(mut l) = common::lab_with_sim_daemon("rlm") else {
        return;
    };
    let sock = l.socket();
    let a: SocketAddr = "127.0.0.1:19101".parse().expect("addr");
    let b: SocketAddr = "127.0.0.1:19102".parse().expect("addr");
    let c: SocketAddr = "127.0.0.1:19103".parse().expect("addr");
    assert!(refused(&l, a), "no metrics before they are configured");

    // Disabled at start, enabled by reload.
    write_config(&l, &sock, Some(a));
    let said = reload(&l, &sock);
    assert!(said.contains("[metrics]"), "{said}");
    eventually(&l, "metrics on the first address", || scrape(&l, a).is_ok());
    // Junk and other methods get an error answer; the endpoint goes on.
    let junk = exchange(&l, a, b"\x00\x01garbage\r\n\r\n").expect("junk");
    assert!(junk.starts_with("HTTP/1.1 400 "), "{junk}");
    let post = exchange(&l, a, b"POST /metrics HTTP/1.1\r\n\r\n").expect("post");
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    let big = exchange(&l, a, &[b'G'; 64 * 1024]).expect("oversized head");
    assert!(big.starts_with("HTTP/1.1 431 "), "{big}");
    scrape(&l, a).expect("still serving after junk");

    // Moved: the new address serves, the old one refuses.
    write_config(&l, &sock, Some(b));
    reload(&l, &sock);
    eventually(&l, "metrics moved to the second address", || {
        scrape(&l, b).is_ok() && refused(&l, a)
    });

    // A port in use: the move is refused with its reason and the old address serves.
    let holder = in_hv(&l, || TcpListener::bind(c)).expect("hold the third port");
    write_config(&l, &sock, Some(c));
    sighup(&l);
    eventually(&l, "the failed metrics move in the log", || {
        l.log().contains("cannot move the metrics endpoint")
    });
    let log = l.log();
    let line = log
        .lines()
        .find(|s| s.contains("cannot move the metrics endpoint"))
        .unwrap_or_default();
    assert!(
        line.contains("ERROR") && line.contains("19103") && line.contains("in use"),
        "the reason: {line}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        log_lines(&l, "cannot move the metrics endpoint"),
        1,
        "one error per failed move\n{}",
        l.log()
    );
    scrape(&l, b).expect("the old address keeps serving");
    assert!(alive(&mut l));
    match ask(&sock, Request::Reload { allow_empty: false }) {
        Err(m) => assert!(
            m.contains("not applied: [metrics] listen") && m.contains("19103"),
            "{m}"
        ),
        other => panic!("a failed move answered {other:?}"),
    }

    // The port freed, the same file reloaded: the move is retried and succeeds.
    drop(holder);
    reload(&l, &sock);
    eventually(&l, "metrics moved to the third address", || {
        scrape(&l, c).is_ok() && refused(&l, b)
    });

    // The same port on the wildcard address, which overlaps the old one: the old
    // endpoint makes way for it.
    let any: SocketAddr = "0.0.0.0:19103".parse().expect("addr");
    write_config(&l, &sock, Some(any));
    reload(&l, &sock);
    eventually(&l, "metrics on the wildcard address", || {
        l.log()
            .lines()
            .any(|s| s.contains("metrics endpoint listening") && s.contains("0.0.0.0:19103"))
    });
    scrape(&l, c).expect("served on the wildcard address");

    // Disabled: nothing listens any more; the daemon goes on.
    write_config(&l, &sock, None);
    reload(&l, &sock);
    eventually(&l, "the metrics endpoint stopped", || refused(&l, c));
    assert!(answers(&sock));
    assert!(alive(&mut l));
}
