//! A blocking client for the control socket (what flowctl uses).

use super::proto::{Request, Response};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long [`request`] waits for the daemon.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest response the client reads (a dump of many flows is large).
const MAX_RESPONSE_BYTES: u64 = 1 << 30;

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No daemon listens on the socket (missing, or connection refused).
    #[error("flowd is not running (no daemon answers on {path}: {source})")]
    NotRunning {
        /// The socket path.
        path: PathBuf,
        /// The connect error.
        #[source]
        source: io::Error,
    },
    /// The socket exists but we may not use it.
    #[error("permission denied on {path} (flowctl needs root)")]
    PermissionDenied {
        /// The socket path.
        path: PathBuf,
    },
    /// The daemon did not answer in time.
    #[error("flowd did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed mid-way.
    #[error("control socket I/O: {0}")]
    Io(#[source] io::Error),
    /// The daemon closed the connection without answering.
    #[error("flowd closed the connection without answering")]
    NoAnswer,
    /// The answer is not a response this client understands.
    #[error("unreadable answer from flowd: {0}")]
    Protocol(#[source] serde_json::Error),
}

/// Sends one request and waits for its response, with [`DEFAULT_TIMEOUT`].
pub fn request(path: &Path, req: &Request) -> Result<Response, ClientError> {
    request_with_timeout(path, req, DEFAULT_TIMEOUT)
}

fn io_error(e: io::Error, timeout: Duration) -> ClientError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout(timeout),
        _ => ClientError::Io(e),
    }
}

/// Sends one request and waits at most `timeout` for each read and write.
pub fn request_with_timeout(
    path: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let mut stream = UnixStream::connect(path).map_err(|source| match source.kind() {
        io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
            path: path.to_path_buf(),
        },
        _ => ClientError::NotRunning {
            path: path.to_path_buf(),
            source,
        },
    })?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(ClientError::Io)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(ClientError::Io)?;
    let mut line = serde_json::to_vec(req).map_err(ClientError::Protocol)?;
    line.push(b'\n');
    // A server that refuses the connection (too many clients) answers and closes
    // without reading: a failed write still leaves its answer to read.
    let wrote = stream.write_all(&line).and_then(|()| stream.flush());
    let mut reader = BufReader::new(stream.take(MAX_RESPONSE_BYTES));
    let mut answer = Vec::new();
    match reader.read_until(b'\n', &mut answer) {
        Ok(0) => match wrote {
            Err(e) => Err(io_error(e, timeout)),
            Ok(()) => Err(ClientError::NoAnswer),
        },
        Ok(_) => serde_json::from_slice(&answer).map_err(ClientError::Protocol),
        Err(e) => Err(io_error(e, timeout)),
    }
}
