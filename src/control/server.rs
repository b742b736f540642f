//! The control socket server (tokio).
//!
//! Each connection sends requests, one JSON object per line, and gets one response line
//! per request. A malformed line gets an error response and the connection goes on; a
//! line longer than [`MAX_REQUEST_BYTES`] gets an error response and the connection is
//! closed (the stream cannot be resynchronised). At most [`ServerOptions::max_clients`]
//! connections are served at once; one more is told so and closed. A connection idle for
//! [`ServerOptions::idle_timeout`] is closed.
//!
//! The handler is synchronous and runs on tokio's blocking pool, so a slow command (a
//! trace, a reload) never stalls the socket for other clients. A panicking handler
//! yields an error response, not a dead server.
//!
//! The socket can move while the daemon runs: bind the new one, [`ControlServer::spawn`]
//! it, then [`RunningServer::stop`] the old one (which removes its file). Connections
//! already accepted on the old socket go on until they end.

use super::proto::{MAX_REQUEST_BYTES, Request, Response};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;

/// What the daemon plugs into the server.
pub trait ControlHandler: Send + Sync {
    /// Answers one request. Called on a blocking thread.
    fn handle(&self, req: Request) -> Response;
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

/// Server limits.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Connections served at once.
    pub max_clients: usize,
    /// A connection idle this long is closed.
    pub idle_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_clients: 16,
            idle_timeout: Duration::from_secs(60),
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
        let slots = Arc::new(Semaphore::new(self.options.max_clients.max(1)));
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
        mut stream: UnixStream,
        slots: &Arc<Semaphore>,
        handler: &Arc<dyn ControlHandler>,
    ) {
        let idle = self.options.idle_timeout;
        let handler = Arc::clone(handler);
        match Arc::clone(slots).try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(async move {
                    let _ = serve_client(stream, handler, idle).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tokio::spawn(async move {
                    let _ = write_response(
                        &mut stream,
                        &Response::err("too many control clients; try again"),
                    )
                    .await;
                });
            }
        }
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

async fn write_response<W: AsyncWriteExt + Unpin>(w: &mut W, resp: &Response) -> io::Result<()> {
    let mut line = serde_json::to_vec(resp).unwrap_or_else(|e| {
        serde_json::to_vec(&Response::err(format!("cannot encode response: {e}")))
            .unwrap_or_default()
    });
    line.push(b'\n');
    w.write_all(&line).await?;
    w.flush().await
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

async fn serve_client(
    stream: UnixStream,
    handler: Arc<dyn ControlHandler>,
    idle: Duration,
) -> io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut buf = Vec::new();
    loop {
        let line = match tokio::time::timeout(idle, read_line(&mut rd, &mut buf)).await {
            Err(_) | Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(()))) => &buf,
            Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                let msg = format!("request larger than {MAX_REQUEST_BYTES} bytes");
                return write_response(&mut wr, &Response::err(msg)).await;
            }
            Ok(Err(e)) => return Err(e),
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let resp = match serde_json::from_slice::<Request>(line) {
            Ok(req) => {
                let h = Arc::clone(&handler);
                match tokio::task::spawn_blocking(move || h.handle(req)).await {
                    Ok(resp) => resp,
                    Err(_) => Response::err("internal error: the command handler failed"),
                }
            }
            Err(e) => Response::err(format!("malformed request: {e}")),
        };
        write_response(&mut wr, &resp).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::proto::{DoneBody, ResponseBody};
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
}
