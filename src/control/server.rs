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

/// Answers one request line, streamed or whole; `false` when the client did not take
/// the answer within `timeout` (the connection then ends).
async fn answer<W: AsyncWriteExt + Unpin>(
    line: &[u8],
    handler: &Arc<dyn ControlHandler>,
    wr: &mut W,
    timeout: Duration,
) -> io::Result<bool> {
    let resp = match serde_json::from_slice::<Request>(line) {
        Ok(req) if req.streams() => return stream_answer(handler, req, wr, timeout).await,
        Ok(req) => {
            let h = Arc::clone(handler);
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
    match tokio::time::timeout(timeout, write_response(wr, &resp)).await {
        Ok(r) => r.map(|()| true),
        Err(_) => Ok(false),
    }
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
        if !answer(line, &handler, &mut wr, options.answer_timeout).await? {
            slot.timed_out();
            return Ok(());
        }
        slot.idle();
        deadline = Instant::now() + options.idle_timeout;
    }
}

#[cfg(test)]
mod tests;
