//! A blocking client for the control socket (what flowctl uses).
//!
//! [`request`] reads a whole answer; [`request_streamed`] reads a streamed one
//! ([`super::stream`]) row by row, and a whole one from a daemon that does not stream.

use super::proto::{Request, Response, ResponseBody};
use super::stream::{CHUNK_BYTES, FlowRows, STREAM_VERSION, StreamError, read_line_max};
use std::io::{self, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long [`request`] waits for the daemon.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest one-line response the client reads (an older daemon's whole dump of many
/// flows is large).
const MAX_RESPONSE_BYTES: usize = 1 << 30;

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
    /// The answer's first line is longer than the client reads.
    #[error("flowd's answer is longer than {MAX_RESPONSE_BYTES} bytes")]
    TooLong,
    /// A streamed answer in a format this client does not read.
    #[error("flowd streams version {0}, this flowctl reads up to {STREAM_VERSION}")]
    StreamVersion(u32),
    /// A streamed answer could not be read to its end.
    #[error(transparent)]
    Stream(#[from] StreamError),
}

/// A stream's rows as [`request_streamed`] gives them: read from the socket.
pub type SocketRows = FlowRows<BufReader<UnixStream>>;

/// What [`request_streamed`] read.
#[derive(Debug)]
pub enum Answer {
    /// A whole answer (an error, a summary, or a daemon that does not stream).
    Whole(Response),
    /// The header said rows follow: read them (each read waits at most the timeout).
    Rows(SocketRows),
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
    let (mut reader, wrote) = send(path, req, timeout)?;
    first_line(&mut reader, wrote, timeout)
}

/// Sends a request whose answer may stream ([`Request::dump_flows_streamed`]); waits
/// at most `timeout` for each read and write, the rows' included.
pub fn request_streamed(
    path: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<Answer, ClientError> {
    let (mut reader, wrote) = send(path, req, timeout)?;
    match first_line(&mut reader, wrote, timeout)? {
        Response::Ok(ResponseBody::FlowStream(start)) if start.version > STREAM_VERSION => {
            Err(ClientError::StreamVersion(start.version))
        }
        Response::Ok(ResponseBody::FlowStream(_)) => Ok(Answer::Rows(FlowRows::new(reader))),
        whole => Ok(Answer::Whole(whole)),
    }
}

/// Connects and sends `req`; the reader of the answer, and whether the write failed.
fn send(
    path: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<(BufReader<UnixStream>, Option<io::Error>), ClientError> {
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
    let wrote = stream.write_all(&line).and_then(|()| stream.flush()).err();
    // A streamed dump arrives in the server's chunks: read them in as few calls.
    Ok((BufReader::with_capacity(CHUNK_BYTES, stream), wrote))
}

/// Reads the answer's first line (a whole [`Response`]); `wrote`: the request's write
/// error, reported when nothing came back.
fn first_line(
    r: &mut BufReader<UnixStream>,
    wrote: Option<io::Error>,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let mut answer = Vec::new();
    match read_line_max(r, &mut answer, MAX_RESPONSE_BYTES) {
        Ok(false) => Err(wrote.map_or(ClientError::NoAnswer, |e| io_error(e, timeout))),
        Ok(true) => serde_json::from_slice(&answer).map_err(ClientError::Protocol),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(ClientError::TooLong),
        Err(e) => Err(io_error(e, timeout)),
    }
}
