//! The control socket server (tokio).
//!
//! Each connection sends requests, one JSON object per line, and gets one response line
//! per request. A malformed line gets an error response (quoting at most
//! [`MAX_ECHO_BYTES`] of what it could not read) and the connection goes on; a line
//! longer than [`MAX_REQUEST_BYTES`] gets an error response and the connection is closed
//! (the stream cannot be resynchronised).
//!
//! Idle and slow clients cannot lock the operator out:
//! - a request must arrive complete within [`ServerOptions::idle_timeout`] of the
//!   connection's accept or of its previous answer; blank lines and partial bytes do not
//!   renew that deadline. A client that misses it is told so and closed. An answer must
//!   be taken within [`ServerOptions::answer_timeout`].
//! - at most [`ServerOptions::max_clients`] connections are served at once
//!   ([`super::slots`]); when all are taken, the connection idle the longest is closed
//!   (with a message saying why) to make room for the new one. Only when every
//!   connection is running a command is the new one refused (`too many control
//!   clients`).
//!
//! [`CONTROL_CONNECTIONS`] counts the connections closed for a deadline, evicted and
//! refused (`flowctl stats`: `control_conns_*`).
//!
//! The handler is synchronous and runs on tokio's blocking pool, so a slow command (a
//! trace, a reload) never stalls the socket for other clients. A panicking handler
//! yields an error response, not a dead server.
//!
//! A streamed answer ([`Request::streams`], [`super::stream`]) is written by the
//! handler on its blocking thread into a [`LineSink`]: chunks of about
//! [`CHUNK_BYTES`](super::stream::CHUNK_BYTES), at most
//! [`CHUNKS_QUEUED`](super::stream::CHUNKS_QUEUED) ahead of the socket, so its memory is
//! bounded and the client's reading paces the handler. Each chunk must be taken within
//! [`ServerOptions::answer_timeout`]; a client that does not is closed (counted as a
//! deadline), which stops the handler at its next line and frees the slot.
//!
//! The socket can move while the daemon runs: bind the new one, [`ControlServer::spawn`]
//! it, then [`RunningServer::stop`] the old one (which removes its file). Connections
//! already accepted on the old socket go on until they end.

use super::proto::{MAX_ECHO_BYTES, MAX_REQUEST_BYTES, Request, Response, elide};
use super::slots::{ConnCounters, Slot, Slots};
use super::stream::{CHUNKS_QUEUED, Closed, DumpLine, LineSink};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What the daemon plugs into the server.
pub trait ControlHandler: Send + Sync {
    /// Answers one request. Called on a blocking thread.
    fn handle(&self, req: Request) -> Response;

    /// Answers a request whose answer streams ([`Request::streams`]) by writing its
    /// lines on `out`; stops at the first [`Closed`]. Called on a blocking thread. The
    /// default writes [`Self::handle`]'s answer as its one line.
    fn stream(&self, req: Request, out: &mut LineSink) -> Result<(), Closed> {
        out.line(&self.handle(req))
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Another daemon answers on the socket.
    #[error("another flowd answers on {0}")]
    AlreadyRunning(PathBuf),
    /// The path exists and is not a socket: refuse to remove it.
    #[error("{0} exists and is not a socket")]
    NotASocket(PathBuf),
    /// Creating the directory, binding or setting permissions failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Connections the control socket serves at once (the default of
/// [`ServerOptions::max_clients`]).
pub const MAX_CLIENTS: usize = 16;

/// How long a connection has to send a complete request, from its accept or from its
/// previous answer (the default of [`ServerOptions::idle_timeout`]).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a client has to take an answer (the default of
/// [`ServerOptions::answer_timeout`]).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the server tries to tell a client why it is closed, before closing anyway.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(1);

/// The control socket's connection counters (every server of the process).
pub static CONTROL_CONNECTIONS: ConnCounters = ConnCounters::new();

/// Server limits.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Connections served at once; when all are taken, the one idle the longest makes
    /// room for a new client.
    pub max_clients: usize,
    /// A complete request must arrive within this of the connection's accept or of its
    /// previous answer (blank lines do not count), or the connection is closed.
    pub idle_timeout: Duration,
    /// An answer not taken by the client within this closes the connection.
    pub answer_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_clients: MAX_CLIENTS,
            idle_timeout: IDLE_TIMEOUT,
            answer_timeout: ANSWER_TIMEOUT,
        }
    }
}

/// A bound control socket, not yet serving.
#[derive(Debug)]
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    options: ServerOptions,
}

fn io_err<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> ServeError + 'p {
    move |source| ServeError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Creates the socket's parent directory (mode 0700) when it does not exist.
fn make_parent(path: &Path) -> Result<(), ServeError> {
    let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    if parent.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .map_err(io_err("cannot create directory", parent))
}

/// Removes a stale socket left by a daemon that died; refuses if one still answers.
fn remove_stale(path: &Path) -> Result<(), ServeError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("cannot inspect", path)(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ServeError::NotASocket(path.to_path_buf()));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(ServeError::AlreadyRunning(path.to_path_buf())),
        Err(_) => std::fs::remove_file(path).map_err(io_err("cannot remove stale socket", path)),
    }
}

impl ControlServer {
    /// Binds the socket at `path` (mode 0600; parent directory created 0700 if missing;
    /// a stale socket removed only if no daemon answers on it). Needs a tokio runtime.
    pub fn bind(path: &Path, options: ServerOptions) -> Result<Self, ServeError> {
        make_parent(path)?;
        remove_stale(path)?;
        let listener = UnixListener::bind(path).map_err(io_err("cannot bind", path))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err("cannot set permissions on", path))?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
            options,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves until `shutdown` completes, then removes the socket file.
    pub async fn run(
        self,
        handler: Arc<dyn ControlHandler>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let slots = Slots::new(self.options.max_clients, &CONTROL_CONNECTIONS);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => self.spawn_client(stream, &slots, &handler),
                    // Out of descriptors and the like: back off instead of spinning.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                },
            }
        }
        // Refuse new connections before the path disappears; accepted ones go on.
        drop(self.listener);
        let _ = std::fs::remove_file(&self.path);
    }

    /// Serves on a task of its own until [`RunningServer::stop`] (or until the
    /// [`RunningServer`] is dropped), then removes the socket file. Needs a tokio runtime.
    pub fn spawn(self, handler: Arc<dyn ControlHandler>) -> RunningServer {
        let (stop, stopped) = oneshot::channel::<()>();
        let path = self.path.clone();
        let task = tokio::spawn(self.run(handler, async move {
            // A send or a dropped sender: either way, stop.
            let _ = stopped.await;
        }));
        RunningServer {
            path,
            stop: Some(stop),
            task,
        }
    }

    fn spawn_client(
        &self,
        stream: UnixStream,
        slots: &Arc<Slots>,
        handler: &Arc<dyn ControlHandler>,
    ) {
        let Some(slot) = slots.admit() else {
            // Every connection is running a command. One attempt to say so, without a
            // task: a flood of connections must not pile up writers.
            let msg = format!(
                "too many control clients: all {} are running a command; try again",
                self.options.max_clients.max(1)
            );
            refuse(stream, &response_line(&Response::err(msg)));
            return;
        };
        let handler = Arc::clone(handler);
        let options = self.options.clone();
        tokio::spawn(async move {
            let _ = serve_client(stream, handler, &options, slot).await;
        });
    }
}

/// One non-blocking attempt to write `msg` on `stream`, then closes it. A fresh
/// connection's buffer takes a short message whole; tokio's own `try_write` could
/// refuse before the reactor has seen the socket writable.
fn refuse(stream: UnixStream, msg: &[u8]) {
    if let Ok(s) = stream.into_std() {
        let _ = std::io::Write::write(&mut &s, msg);
    }
}

/// A control socket served by a task of its own ([`ControlServer::spawn`]). Dropping it
/// stops the server too, without waiting.
#[derive(Debug)]
pub struct RunningServer {
    path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl RunningServer {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting connections and removes the socket file; returns once both are
    /// done. Connections already accepted go on until they end.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Binds `path` with default options and serves forever.
pub async fn serve(path: &Path, handler: Arc<dyn ControlHandler>) -> Result<(), ServeError> {
    let server = ControlServer::bind(path, ServerOptions::default())?;
    server.run(handler, std::future::pending()).await;
    Ok(())
}

/// `resp` as one line.
fn response_line(resp: &Response) -> Vec<u8> {
    let mut line = serde_json::to_vec(resp).unwrap_or_else(|e| {
        serde_json::to_vec(&Response::err(format!("cannot encode response: {e}")))
            .unwrap_or_default()
    });
    line.push(b'\n');
    line
}

async fn write_response<W: AsyncWriteExt + Unpin>(w: &mut W, resp: &Response) -> io::Result<()> {
    w.write_all(&response_line(resp)).await?;
    w.flush().await
}

/// Tells the client why it is closed, if it takes the message within
/// [`FAREWELL_TIMEOUT`].
async fn farewell<W: AsyncWriteExt + Unpin>(w: &mut W, why: String) {
    let _ = tokio::time::timeout(FAREWELL_TIMEOUT, write_response(w, &Response::err(why))).await;
}

/// Reads one line of at most `MAX_REQUEST_BYTES`. `Ok(None)` at end of stream;
/// `Err(InvalidData)` if the line is too long.
async fn read_line<R: AsyncBufReadExt + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> io::Result<Option<()>> {
    buf.clear();
    let n = r
        .take(MAX_REQUEST_BYTES as u64)
        .read_until(b'\n', buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') && n >= MAX_REQUEST_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "request too large",
        ));
    }
    Ok(Some(()))
}

/// Writes a streamed answer: the handler produces it on a blocking thread, the chunks
/// are written as they come, each within `answer_timeout`. `Ok(false)`: the client did
/// not take one in time (the handler stops when the queue it feeds is dropped).
async fn stream_answer<W: AsyncWriteExt + Unpin>(
    handler: &Arc<dyn ControlHandler>,
    req: Request,
    w: &mut W,
    answer_timeout: Duration,
) -> io::Result<bool> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(CHUNKS_QUEUED);
    let h = Arc::clone(handler);
    let task = tokio::task::spawn_blocking(move || {
        let mut sink = LineSink::new(tx);
        if h.stream(req, &mut sink).is_ok() {
            let _ = sink.flush();
        }
    });
    while let Some(chunk) = rx.recv().await {
        match tokio::time::timeout(answer_timeout, w.write_all(&chunk)).await {
            Ok(r) => r?,
            Err(_) => return Ok(false),
        }
    }
    if task.await.is_err() {
        // The handler panicked mid-way: the client must not take what it got for the
        // whole answer. The line reads as an error response before the header too.
        let failed = DumpLine::Err {
            message: "internal error: the command handler failed".into(),
        };
        let mut line = serde_json::to_vec(&failed).unwrap_or_default();
        line.push(b'\n');
        if tokio::time::timeout(answer_timeout, w.write_all(&line))
            .await
            .is_err()
        {
            return Ok(false);
        }
    }
    match tokio::time::timeout(answer_timeout, w.flush()).await {
        Ok(r) => r.map(|()| true),
        Err(_) => Ok(false),
    }
}

/// What ended a wait for the next request line.
enum Next {
    Line(io::Result<Option<()>>),
    TimedOut,
    Evicted,
}

async fn serve_client(
    stream: UnixStream,
    handler: Arc<dyn ControlHandler>,
    options: &ServerOptions,
    mut slot: Slot,
) -> io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut buf = Vec::new();
    // Counted from the accept, then from each answer; nothing else renews it.
    let mut deadline = Instant::now() + options.idle_timeout;
    loop {
        let next = tokio::select! {
            read = tokio::time::timeout_at(deadline, read_line(&mut rd, &mut buf)) => {
                read.map_or(Next::TimedOut, Next::Line)
            }
            () = slot.evicted() => Next::Evicted,
        };
        let line = match next {
            Next::Line(Ok(Some(()))) => &buf,
            Next::Line(Ok(None)) => return Ok(()),
            Next::Line(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                let msg = format!("request larger than {MAX_REQUEST_BYTES} bytes");
                let _ = tokio::time::timeout(
                    options.answer_timeout,
                    write_response(&mut wr, &Response::err(msg)),
                )
                .await;
                return Ok(());
            }
            Next::Line(Err(e)) => return Err(e),
            Next::TimedOut => {
                slot.timed_out();
                drop(slot);
                let why = format!(
                    "closed: no complete request within {} s",
                    options.idle_timeout.as_secs_f64()
                );
                farewell(&mut wr, why).await;
                return Ok(());
            }
            Next::Evicted => {
                let why = "closed: idle while every control slot was taken, and a new \
                           client needed one";
                farewell(&mut wr, why.into()).await;
                return Ok(());
            }
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if !slot.busy() {
            return Ok(()); // Evicted just now: the new client has the slot.
        }
        let resp = match serde_json::from_slice::<Request>(line) {
            Ok(req) if req.streams() => {
                if !stream_answer(&handler, req, &mut wr, options.answer_timeout).await? {
                    slot.timed_out();
                    return Ok(());
                }
                slot.idle();
                deadline = Instant::now() + options.idle_timeout;
                continue;
            }
            Ok(req) => {
                let h = Arc::clone(&handler);
                match tokio::task::spawn_blocking(move || h.handle(req)).await {
                    Ok(resp) => resp,
                    Err(_) => Response::err("internal error: the command handler failed"),
                }
            }
            Err(e) => Response::err(format!(
                "malformed request: {}",
                elide(&e.to_string(), MAX_ECHO_BYTES)
            )),
        };
        let sent =
            tokio::time::timeout(options.answer_timeout, write_response(&mut wr, &resp)).await;
        match sent {
            Ok(r) => r?,
            Err(_) => {
                slot.timed_out();
                return Ok(());
            }
        }
        slot.idle();
        deadline = Instant::now() + options.idle_timeout;
    }
}

#[cfg(test)]
mod tests {
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
            let Ok(Answer::Rows(mut rows)) = request_streamed(&p, &req, Duration::from_secs(10))
            else {
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
}
