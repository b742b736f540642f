use super::*;
use crate::control::proto::{DoneBody, ResponseBody};
use crate::control::stream::{FlowRows, MAX_STREAM_LINE, StreamError, read_line_max};
use std::io::{BufRead, Write};

/// Answers every request with `done`, after `delay`.
struct Slow(Duration);

impl ControlHandler for Slow {
    fn handle(&self, _: Request) -> Response {
        std::thread::sleep(self.0);
        Response::Ok(ResponseBody::Done(DoneBody {
            message: "done".into(),
            count: None,
        }))
    }
}

fn ask(path: &Path) -> io::Result<String> {
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = serde_json::to_vec(&Request::Show).map_err(io::Error::other)?;
    req.push(b'\n');
    s.write_all(&req)?;
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line)?;
    Ok(line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_to_a_new_socket_and_lets_old_connections_finish() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a.sock"), dir.path().join("sub/b.sock"));
    let handler: Arc<dyn ControlHandler> = Arc::new(Slow(Duration::from_millis(300)));
    let old = ControlServer::bind(&a, ServerOptions::default())
        .expect("bind a")
        .spawn(handler.clone());
    // A request in progress on the old socket while it moves.
    let a2 = a.clone();
    let pending = tokio::task::spawn_blocking(move || ask(&a2));
    tokio::time::sleep(Duration::from_millis(100)).await;

    let new = ControlServer::bind(&b, ServerOptions::default())
        .expect("bind b")
        .spawn(handler);
    assert_eq!(new.path(), b.as_path());
    old.stop().await;
    assert!(!a.exists(), "the old socket file is removed");
    assert!(std::os::unix::net::UnixStream::connect(&a).is_err());
    let mode = std::fs::metadata(&b).expect("b").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dmode = std::fs::metadata(b.parent().expect("parent"))
        .expect("dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dmode, 0o700);

    let answered = pending
        .await
        .expect("join")
        .expect("old connection answered");
    assert!(answered.contains("done"), "{answered}");
    let via_new = tokio::task::spawn_blocking(move || ask(&b))
        .await
        .expect("join")
        .expect("new socket answers");
    assert!(via_new.contains("done"), "{via_new}");
    let b = new.path().to_path_buf();
    new.stop().await;
    assert!(!b.exists());
}

#[tokio::test]
async fn a_path_that_cannot_be_bound_is_an_error_and_the_running_socket_stays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a.sock");
    let handler: Arc<dyn ControlHandler> = Arc::new(Slow(Duration::ZERO));
    let running = ControlServer::bind(&a, ServerOptions::default())
        .expect("bind a")
        .spawn(handler);
    let file = dir.path().join("file");
    std::fs::write(&file, b"").expect("file");
    let err = ControlServer::bind(&file.join("sub/b.sock"), ServerOptions::default())
        .expect_err("a directory under a file");
    assert!(matches!(err, ServeError::Io { .. }), "{err}");
    // The same socket again: another server answers there.
    let err = ControlServer::bind(&a, ServerOptions::default()).expect_err("in use");
    assert!(matches!(err, ServeError::AlreadyRunning(_)), "{err}");
    assert!(a.exists());
    drop(running);
}

/// Sends `chunk` every 50 ms on `s` until the server closes the connection or 20 s
/// pass; what the server said.
fn trickle(mut s: std::os::unix::net::UnixStream, first: &[u8], chunk: &[u8]) -> String {
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let _ = s.write_all(first);
    let mut said = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let _ = s.write_all(chunk);
        let mut buf = [0u8; 512];
        match std::io::Read::read(&mut s, &mut buf) {
            Ok(0) => return String::from_utf8_lossy(&said).into_owned(),
            Ok(n) => said.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
    }
    panic!("still open after 20 s: {}", String::from_utf8_lossy(&said));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blank_lines_and_partial_bytes_do_not_renew_the_deadline_answers_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.sock");
    let options = ServerOptions {
        idle_timeout: Duration::from_millis(300),
        ..ServerOptions::default()
    };
    let handler: Arc<dyn ControlHandler> = Arc::new(Slow(Duration::ZERO));
    let server = ControlServer::bind(&path, options)
        .expect("bind")
        .spawn(handler);
    let p = path.clone();
    let (blank, partial) = tokio::task::spawn_blocking(move || {
        let connect = || std::os::unix::net::UnixStream::connect(&p).expect("connect");
        (
            trickle(connect(), b"", b"\n"),
            trickle(connect(), b"{\"command\":", b" "),
        )
    })
    .await
    .expect("join");
    for said in [blank, partial] {
        assert!(
            said.contains("closed: no complete request within 0.3 s"),
            "{said}"
        );
    }

    // Requests answered more often than the deadline keep the connection open.
    let options = ServerOptions {
        idle_timeout: Duration::from_secs(2),
        ..ServerOptions::default()
    };
    let path = dir.path().join("d.sock");
    let handler: Arc<dyn ControlHandler> = Arc::new(Slow(Duration::ZERO));
    let renewed = ControlServer::bind(&path, options)
        .expect("bind")
        .spawn(handler);
    tokio::task::spawn_blocking(move || {
        let s = std::os::unix::net::UnixStream::connect(&path).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut r = std::io::BufReader::new(s);
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            r.get_mut()
                .write_all(b"{\"command\":\"show\"}\n")
                .expect("send");
            let mut line = String::new();
            r.read_line(&mut line).expect("answer");
            assert!(line.contains("done"), "{line}");
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .expect("join");
    server.stop().await;
    renewed.stop().await;
}

/// Streams `rows` flow lines (endless when `None`) for a streamed request; records
/// how its last stream ended.
struct Streamer {
    rows: Option<u64>,
    ended: std::sync::Mutex<Option<Result<u64, Closed>>>,
}

impl ControlHandler for Streamer {
    fn handle(&self, _: Request) -> Response {
        Response::Ok(ResponseBody::Done(DoneBody::message("whole")))
    }

    fn stream(&self, _: Request, out: &mut LineSink) -> Result<(), Closed> {
        use crate::control::stream::{DumpEnd, DumpStart};
        let start = DumpStart {
            version: 1,
            flows_in_table: 0,
        };
        let mut n = 0;
        let r = (|| {
            out.line(&Response::Ok(ResponseBody::FlowStream(start)))?;
            while self.rows.is_none_or(|r| n < r) {
                let row = crate::control::proto::FlowRow {
                    id: n,
                    flow: "in_port(1)".into(),
                    packets: 0,
                    sw_packets: 0,
                    bytes: 0,
                    used_ms_ago: None,
                    placement: Default::default(),
                    actions: "drop".into(),
                };
                out.line(&DumpLine::Flow(row))?;
                n += 1;
            }
            out.line(&DumpLine::End(DumpEnd {
                flows: n,
                limited: false,
            }))
        })();
        *self.ended.lock().unwrap() = Some(r.map(|()| n));
        r
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_arrives_whole_and_the_connection_goes_on() {
    use crate::control::client::{Answer, request_streamed};
    use crate::control::proto::{FlowFilter, FlowSelect};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.sock");
    let h = Arc::new(Streamer {
        rows: Some(50_000),
        ended: Default::default(),
    });
    let server = ControlServer::bind(&path, ServerOptions::default())
        .expect("bind")
        .spawn(h.clone());
    let p = path.clone();
    let (rows, end) = tokio::task::spawn_blocking(move || {
        let req = Request::dump_flows_streamed(FlowFilter::All, FlowSelect::default());
        let Ok(Answer::Rows(mut rows)) = request_streamed(&p, &req, Duration::from_secs(10)) else {
            panic!("not streamed");
        };
        let ids: Vec<u64> = rows.by_ref().map(|r| r.expect("row").id).collect();
        (ids, rows.end())
    })
    .await
    .expect("join");
    assert_eq!(rows, (0..50_000).collect::<Vec<_>>());
    assert_eq!(end.map(|e| e.flows), Some(50_000));
    assert_eq!(*h.ended.lock().unwrap(), Some(Ok(50_000)));
    // A request that does not stream is answered whole.
    let whole = tokio::task::spawn_blocking(move || ask(&path))
        .await
        .expect("join")
        .expect("answer");
    assert!(whole.contains("whole"), "{whole}");
    server.stop().await;
}

/// A client that asks for a stream and does not read it is closed after the answer
/// timeout; the handler stops at its next line and the slot is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_does_not_read_is_closed_and_stops_the_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.sock");
    let options = ServerOptions {
        max_clients: 1,
        answer_timeout: Duration::from_millis(300),
        ..ServerOptions::default()
    };
    let h = Arc::new(Streamer {
        rows: None,
        ended: Default::default(),
    });
    let server = ControlServer::bind(&path, options)
        .expect("bind")
        .spawn(h.clone());
    let mut s = std::os::unix::net::UnixStream::connect(&path).expect("connect");
    s.write_all(b"{\"command\":\"dump_flows\",\"stream\":1}\n")
        .expect("ask");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while h.ended.lock().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the stream never stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(*h.ended.lock().unwrap(), Some(Err(Closed)));
    // What the client still reads ends without a trailer: a cut dump.
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut r = std::io::BufReader::new(s);
    let mut header = Vec::new();
    assert!(read_line_max(&mut r, &mut header, MAX_STREAM_LINE).expect("header"));
    let last = FlowRows::new(r).last();
    assert!(
        matches!(last, Some(Err(StreamError::Truncated { .. }))),
        "{last:?}"
    );
    // The only slot is free again.
    let p = path.clone();
    let whole = tokio::task::spawn_blocking(move || ask(&p))
        .await
        .expect("join")
        .expect("answer");
    assert!(whole.contains("whole"), "{whole}");
    server.stop().await;
}
