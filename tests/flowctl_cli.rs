//! The real `flowctl` binary against the control server, run in-process on a temporary
//! socket with a fake handler: outputs, `--json`, exit codes 0/1/2, and a server that
//! keeps serving through junk, oversized requests, panicking handlers and crowds.

use flowd::control::proto::{
    DoneBody, FlowFilter, FlowRow, FlowSummary, MAX_REQUEST_BYTES, Placement, PortRow, RuleRow,
    StatsBody, TraceBody, TunnelRow,
};
use flowd::control::{
    ControlHandler, ControlServer, Request, Response, ResponseBody, ServeError, ServerOptions,
};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A daemon stand-in with fixed content; counts the requests it sees.
#[derive(Default)]
struct Fake {
    requests: AtomicUsize,
    /// Ends the long command (`trace in_port(777)`).
    release: AtomicBool,
    rules: Mutex<Vec<RuleRow>>,
}

fn flows() -> Vec<FlowRow> {
    vec![
        FlowRow {
            id: 1,
            flow: "in_port(1),eth(src=02:00:00:00:00:01,dst=02:00:00:00:00:02),eth_type(0x0800)"
                .into(),
            packets: 1200,
            sw_packets: 3,
            bytes: 180_000,
            used_ms_ago: Some(512),
            placement: Placement {
                offloaded: true,
                dp: "tc".into(),
                in_hw: Some(true),
                reason: None,
                category: None,
                device: Some("rep0".into()),
            },
            actions: "2".into(),
        },
        FlowRow {
            id: 2,
            flow: "in_port(2),eth_type(0x0800)".into(),
            packets: 3,
            sw_packets: 3,
            bytes: 4500,
            used_ms_ago: None,
            placement: Placement {
                offloaded: false,
                dp: "sw".into(),
                in_hw: None,
                reason: Some("mtu: 1500 + 50 > 1500".into()),
                category: Some("mtu".into()),
                device: None,
            },
            actions: "set(tunnel(tun_id=0x64,dst=198.51.100.2,ttl=64,tp_dst=4789,flags(df))),100"
                .into(),
        },
    ]
}

impl ControlHandler for Fake {
    fn handle(&self, req: Request) -> Response {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let body = match req {
            Request::DumpFlows { select, .. } if select.port.as_deref() == Some("nope") => {
                return Response::err("no port named `nope` (see `flowctl show`)");
            }
            Request::DumpFlows {
                filter,
                select,
                summary: true,
                ..
            } => {
                let picked: Vec<FlowRow> = flows()
                    .into_iter()
                    .filter(|f| filter.accepts(&f.placement))
                    .filter(|f| {
                        select
                            .remote
                            .is_none_or(|r| f.actions.contains(&r.to_string()))
                    })
                    .collect();
                let offloaded = picked.iter().filter(|f| f.placement.offloaded).count() as u64;
                ResponseBody::FlowSummary(FlowSummary {
                    flows: picked.len() as u64,
                    offloaded,
                    software: picked.len() as u64 - offloaded,
                    by_placement: [("tc".to_string(), offloaded)].into_iter().collect(),
                    by_port: [("rep0".to_string(), picked.len() as u64)]
                        .into_iter()
                        .collect(),
                })
            }
            Request::DumpFlows { filter, select, .. } => ResponseBody::Flows(
                flows()
                    .into_iter()
                    .filter(|f| filter.accepts(&f.placement))
                    .take(select.limit.unwrap_or(u64::MAX) as usize)
                    .collect(),
            ),
            Request::Show => ResponseBody::Ports(vec![PortRow {
                name: "rep0".into(),
                ifindex: Some(12),
                id: 1,
                role: "representor".into(),
                mtu: Some(1500),
                up: Some(true),
                switch_id: Some("00aabbccddee".into()),
                vf: Some(0),
            }]),
            Request::Tunnels => ResponseBody::Tunnels(vec![TunnelRow {
                endpoint: "198.51.100.2".into(),
                from: None,
                mark: 0,
                uplink: Some("up0".into()),
                source_ip: Some("192.0.2.1".into()),
                next_hop: Some("192.0.2.254".into()),
                mac: Some("02:00:00:00:00:fe".into()),
                problem: None,
                path_mtu: Some(1500),
                flows: 2,
                offloaded: 1,
                software: 1,
                ipsec: Some("policy 12 esp transport spi 0x3".into()),
            }]),
            Request::Trace { flow } if flow.contains("in_port(666)") => {
                panic!("the fake handler panics on in_port(666)")
            }
            Request::Trace { flow } if flow.contains("in_port(777)") => {
                // A long command: busy until the test lets it go.
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                while !self.release.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                ResponseBody::Done(DoneBody::message("slow trace done"))
            }
            Request::Trace { flow } => ResponseBody::Trace(TraceBody {
                lines: vec![
                    format!("Flow: {flow}"),
                    "  rule 1, priority 0: NORMAL".into(),
                ],
                actions: "2".into(),
                megaflow: "in_port(1),eth(dst=02:00:00:00:00:02)".into(),
            }),
            Request::DelFlows => ResponseBody::Done(DoneBody {
                message: "deleted 2 flows".into(),
                count: Some(2),
            }),
            Request::Stats => ResponseBody::Stats(Box::new(StatsBody {
                upcalls: 42,
                flows: 2,
                offload_failed_by_reason: BTreeMap::from([("mtu".into(), 1)]),
                ..Default::default()
            })),
            Request::RulesAdd {
                priority,
                r#match,
                actions,
            } => {
                let mut rules = self.rules.lock().unwrap();
                let id = rules.len() as u64 + 1;
                rules.push(RuleRow {
                    id,
                    priority,
                    r#match,
                    actions,
                    origin: "runtime".into(),
                });
                ResponseBody::Done(DoneBody::message(format!("added rule {id}")))
            }
            Request::RulesDel { priority, r#match } => {
                let mut rules = self.rules.lock().unwrap();
                let before = rules.len();
                rules.retain(|r| !(r.priority == priority && r.r#match == r#match));
                if rules.len() == before {
                    return Response::err(format!(
                        "no rule with priority {priority} and match {}",
                        r#match
                    ));
                }
                ResponseBody::Done(DoneBody::message("deleted 1 rule"))
            }
            Request::RulesList => ResponseBody::Rules(self.rules.lock().unwrap().clone()),
            Request::Reload { .. } => {
                return Response::err("/etc/flowd/flowd.toml:3:1: unknown field `flow_limt`");
            }
            _ => return Response::err("unsupported"),
        };
        Response::Ok(body)
    }
}

/// A control server on its own runtime and temporary socket; stopped on drop.
struct Daemon {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    fake: Arc<Fake>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    fn start() -> Self {
        Self::start_with(ServerOptions::default())
    }

    fn start_with(options: ServerOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/flowd.sock");
        let fake = Arc::new(Fake::default());
        let handler: Arc<dyn ControlHandler> = fake.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let path = socket.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let server = ControlServer::bind(&path, options).unwrap();
                ready_tx.send(()).unwrap();
                server
                    .run(handler, async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        ready_rx.recv().unwrap();
        Daemon {
            _dir: dir,
            socket,
            fake,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn flowctl(&self, args: &[&str]) -> Output {
        flowctl_at(&self.socket, args)
    }

    fn requests(&self) -> usize {
        self.fake.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn flowctl_at(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

#[test]
fn dump_flows_reads_like_ovs() {
    let d = Daemon::start();
    let o = d.flowctl(&["dump-flows"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "in_port(1),eth(src=02:00:00:00:00:01,dst=02:00:00:00:00:02),eth_type(0x0800), packets:1200, bytes:180000, used:0.512s, offloaded:yes dp:tc in_hw, actions:2\n\
         in_port(2),eth_type(0x0800), packets:3, bytes:4500, used:never, offloaded:no (mtu: 1500 + 50 > 1500), actions:set(tunnel(tun_id=0x64,dst=198.51.100.2,ttl=64,tp_dst=4789,flags(df))),100\n"
    );
    let o = d.flowctl(&["dump-flows", "--offloaded"]);
    assert_eq!(stdout(&o).lines().count(), 1);
    assert!(stdout(&o).contains("offloaded:yes"));
    let o = d.flowctl(&["dump-flows", "--software"]);
    assert_eq!(stdout(&o).lines().count(), 1);
    assert!(stdout(&o).contains("offloaded:no"));
}

#[test]
fn dump_flows_selects_limits_and_summarizes() {
    let d = Daemon::start();
    let o = d.flowctl(&["dump-flows", "--limit", "1"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 1, "{}", stdout(&o));
    let o = d.flowctl(&["dump-flows", "--summary", "--remote", "198.51.100.2"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("flows: 1 (offloaded 0, software 1)\n"),
        "{out}"
    );
    assert!(out.contains("IN_PORT") && out.contains("rep0"), "{out}");
    let o = d.flowctl(&["--json", "dump-flows", "--summary"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["flows"], 2, "{v}");
    // A name the daemon does not know: its answer, exit 1.
    let o = d.flowctl(&["dump-flows", "--port", "nope"]);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("no port named `nope`"),
        "{}",
        stderr(&o)
    );
    // Malformed or contradictory selections never reach the daemon: exit 2.
    let before = d.requests();
    for args in [
        &["dump-flows", "--remote", "not-an-ip"][..],
        &["dump-flows", "--limit", "-3"],
        &["dump-flows", "--reason", "mtu", "--offloaded"],
    ] {
        let o = d.flowctl(args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
    }
    assert_eq!(d.requests(), before);
}

#[test]
fn json_on_every_command() {
    let d = Daemon::start();
    let o = d.flowctl(&["--json", "dump-flows", "--software"]);
    assert_eq!(code(&o), 0);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["placement"]["reason"], "mtu: 1500 + 50 > 1500");
    // Rows parse back into the protocol's types.
    let rows: Vec<FlowRow> = serde_json::from_value(v).unwrap();
    assert_eq!(rows[0].id, 2);
    for args in [
        &["show", "--json"][..],
        &["--json", "tunnels"],
        &["--json", "stats"],
        &["--json", "trace", "in_port(1),eth_type(0x0800)"],
        &["--json", "del-flows"],
        &["--json", "rules", "list"],
    ] {
        let o = d.flowctl(args);
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", stdout(&o)));
        assert!(!v.is_null(), "{args:?}");
    }
    let o = d.flowctl(&["--json", "stats"]);
    let s: StatsBody = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s.upcalls, 42);
}

#[test]
fn tables_trace_and_changes() {
    let d = Daemon::start();
    let o = d.flowctl(&["show"]);
    assert_eq!(
        stdout(&o),
        "ID  NAME  IFINDEX  ROLE         MTU   STATE  SWITCH_ID     VF\n\
         1   rep0  12       representor  1500  up     00aabbccddee  0\n"
    );
    let o = d.flowctl(&["tunnels"]);
    let out = stdout(&o);
    assert!(
        out.starts_with("ENDPOINT      FROM   MARK  UPLINK  SOURCE     NEXT_HOP     MAC"),
        "{out}"
    );
    assert!(
        out.contains(
            "198.51.100.2  route  -     up0     192.0.2.1  192.0.2.254  02:00:00:00:00:fe"
        ),
        "{out}"
    );
    assert!(
        out.lines()
            .nth(1)
            .is_some_and(|l| l.ends_with("policy 12 esp transport spi 0x3")),
        "the IPSEC column: {out}"
    );
    let o = d.flowctl(&["stats"]);
    assert!(
        stdout(&o).contains("\nupcalls                  42\n"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("\n  mtu                    1\n"),
        "{}",
        stdout(&o)
    );
    let o = d.flowctl(&["trace", "in_port(1),eth_type(0x0800)"]);
    assert_eq!(
        stdout(&o),
        "Flow: in_port(1),eth_type(0x0800)\n  rule 1, priority 0: NORMAL\n\n\
         Megaflow: in_port(1),eth(dst=02:00:00:00:00:02)\nDatapath actions: 2\n"
    );
    let o = d.flowctl(&["del-flows"]);
    assert_eq!((code(&o), stdout(&o)), (0, "deleted 2 flows\n".into()));

    let o = d.flowctl(&[
        "rules",
        "add",
        "--priority",
        "100",
        "--match",
        "in_port(1)",
        "--actions",
        "normal",
    ]);
    assert_eq!(
        (code(&o), stdout(&o)),
        (0, "added rule 1\n".into()),
        "{}",
        stderr(&o)
    );
    let o = d.flowctl(&["rules", "list"]);
    assert_eq!(
        stdout(&o),
        "ID  PRIORITY  ORIGIN   MATCH       ACTIONS\n1   100       runtime  in_port(1)  normal\n"
    );
    let o = d.flowctl(&["rules", "del", "--priority", "100", "--match", "in_port(1)"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn daemon_errors_exit_1() {
    let d = Daemon::start();
    let o = d.flowctl(&["rules", "del", "--priority", "5", "--match", "in_port(3)"]);
    assert_eq!(code(&o), 1);
    assert_eq!(
        stderr(&o),
        "flowctl: no rule with priority 5 and match in_port(3)\n"
    );
    assert!(o.stdout.is_empty());
    let o = d.flowctl(&["reload"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("flowd.toml:3:1: unknown field `flow_limt`"));
    let o = d.flowctl(&["--json", "reload"]);
    assert_eq!(code(&o), 1);
}

#[test]
fn usage_errors_exit_2_without_asking_the_daemon() {
    let d = Daemon::start();
    for args in [
        &[][..],
        &["frobnicate"],
        &["trace"],
        &["trace", "in_port(1),bogus(2)"],
        &["dump-flows", "--offloaded", "--software"],
        &[
            "rules",
            "add",
            "--priority",
            "x",
            "--match",
            "in_port(1)",
            "--actions",
            "drop",
        ],
        &[
            "rules",
            "add",
            "--priority",
            "1",
            "--match",
            "in_port(1)",
            "--actions",
            "explode",
        ],
        &[
            "rules",
            "add",
            "--priority",
            "1",
            "--match",
            "nope",
            "--actions",
            "drop",
        ],
        &[
            "rules",
            "del",
            "--priority",
            "70000",
            "--match",
            "in_port(1)",
        ],
    ] {
        let o = d.flowctl(args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).is_empty(), "{args:?}");
    }
    let o = d.flowctl(&["trace", "in_port(1),bogus(2)"]);
    assert_eq!(
        stderr(&o),
        "flowctl: bad flow `in_port(1),bogus(2)`: unknown field `bogus`\n"
    );
    assert_eq!(d.requests(), 0, "usage errors never reach the daemon");
    // And the daemon is unaffected.
    assert_eq!(code(&d.flowctl(&["show"])), 0);
}

#[test]
fn no_daemon_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing.sock");
    let o = flowctl_at(&missing, &["show"]);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).starts_with("flowctl: flowd is not running"),
        "{}",
        stderr(&o)
    );
    // A stale socket: bound, then its listener gone (connection refused).
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let o = flowctl_at(&stale, &["dump-flows"]);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).starts_with("flowctl: flowd is not running"),
        "{}",
        stderr(&o)
    );
}

fn raw_exchange(stream: &mut BufReader<UnixStream>, line: &[u8]) -> Response {
    stream.get_mut().write_all(line).unwrap();
    let mut answer = String::new();
    stream.read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer:?}"))
}

fn connect(path: &Path) -> BufReader<UnixStream> {
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    BufReader::new(s)
}

#[test]
fn junk_gets_an_error_and_the_server_keeps_serving() {
    let d = Daemon::start();
    let mut s = connect(&d.socket);
    for junk in [
        &b"this is not json\n"[..],
        b"{\"command\":\"explode\"}\n",
        b"{\"command\":\"rules_add\",\"priority\":\"high\"}\n",
        b"\xff\xfe\x00garbage\n",
        b"[1,2,3]\n",
    ] {
        match raw_exchange(&mut s, junk) {
            Response::Err { message } => {
                assert!(message.starts_with("malformed request"), "{message}")
            }
            other => panic!("{junk:?}: {other:?}"),
        }
    }
    // The same connection still works.
    let r = raw_exchange(&mut s, b"{\"command\":\"show\"}\n");
    assert!(matches!(r, Response::Ok(ResponseBody::Ports(_))), "{r:?}");

    // An oversized request: an error, then the connection is closed.
    let mut big = connect(&d.socket);
    let blob = vec![b'x'; MAX_REQUEST_BYTES + 10];
    let _ = big.get_mut().write_all(&blob);
    let mut answer = String::new();
    big.read_line(&mut answer).unwrap();
    let r: Response = serde_json::from_str(&answer).unwrap();
    assert!(
        matches!(&r, Response::Err { message } if message.contains("larger than")),
        "{r:?}"
    );
    let mut rest = Vec::new();
    let _ = big.read_to_end(&mut rest);
    assert!(rest.is_empty());

    // A handler that panics: an error response, and the server goes on.
    let r = raw_exchange(
        &mut s,
        b"{\"command\":\"trace\",\"flow\":\"in_port(666)\"}\n",
    );
    assert!(
        matches!(&r, Response::Err { message } if message.contains("internal error")),
        "{r:?}"
    );
    assert_eq!(code(&d.flowctl(&["dump-flows"])), 0);
    let o = d.flowctl(&["show"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn bounded_clients() {
    let d = Daemon::start_with(ServerOptions {
        max_clients: 1,
        ..ServerOptions::default()
    });
    let mut first = connect(&d.socket);
    assert!(matches!(
        raw_exchange(&mut first, b"{\"command\":\"show\"}\n"),
        Response::Ok(_)
    ));
    // The only slot is held by an idle client: it makes room for the new one, and is
    // told why it is closed.
    let o = d.flowctl(&["show"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let mut told = String::new();
    first.read_line(&mut told).unwrap();
    assert!(told.contains("closed: idle"), "{told}");
    let mut rest = Vec::new();
    let _ = first.read_to_end(&mut rest);
    assert!(rest.is_empty());

    // The only slot is held by a client whose command runs: the next one is refused.
    let mut busy = connect(&d.socket);
    let before = d.requests();
    busy.get_mut()
        .write_all(b"{\"command\":\"trace\",\"flow\":\"in_port(777)\"}\n")
        .unwrap();
    for _ in 0..1000 {
        if d.requests() > before {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(d.requests() > before, "the long command started");
    let o = d.flowctl(&["show"]);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("too many control clients: all 1 are running a command"),
        "{}",
        stderr(&o)
    );
    d.fake.release.store(true, Ordering::SeqCst);
    let mut answer = String::new();
    busy.read_line(&mut answer).unwrap();
    assert!(answer.contains("slow trace done"), "{answer}");
    // Answered, it is idle again: the next client takes its slot.
    let o = d.flowctl(&["show"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn socket_setup() {
    let d = Daemon::start();
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let dir_mode = std::fs::metadata(d.socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // A second daemon on a live socket is refused, and the first keeps its socket.
        let e = ControlServer::bind(&d.socket, ServerOptions::default()).unwrap_err();
        assert!(matches!(e, ServeError::AlreadyRunning(_)), "{e}");
        // A stale socket is replaced.
        let stale = d.socket.with_file_name("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        ControlServer::bind(&stale, ServerOptions::default()).unwrap();
        // A regular file is never removed.
        let file = d.socket.with_file_name("file.sock");
        std::fs::write(&file, b"keep me").unwrap();
        let e = ControlServer::bind(&file, ServerOptions::default()).unwrap_err();
        assert!(matches!(e, ServeError::NotASocket(_)), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    });
    assert_eq!(code(&d.flowctl(&["show"])), 0);
    let socket = d.socket.clone();
    drop(d);
    assert!(!socket.exists(), "the socket is removed on shutdown");
}

#[test]
fn filter_accepts() {
    let f = flows();
    assert!(FlowFilter::All.accepts(&f[0].placement));
    assert!(FlowFilter::Offloaded.accepts(&f[0].placement));
    assert!(!FlowFilter::Software.accepts(&f[0].placement));
}
