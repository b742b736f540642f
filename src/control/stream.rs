//! The streamed `dump-flows` answer: one line per flow, written while the daemon walks
//! its flow table, so that neither the daemon nor flowctl holds the whole dump.
//!
//! A client asks for it with `"stream": 1` in its `dump_flows` request (the highest
//! stream version it reads; absent or 0: the whole answer in one line, as before). The
//! answer, one JSON object per line:
//! ```text
//! {"ok":{"type":"flow_stream","data":{"version":1,"flows_in_table":195000}}}   header
//! {"flow":{"id":7,"flow":"in_port(1),...","packets":10,...}}                      a row
//! {"flow":{...}}
//! {"end":{"flows":2,"limited":false}}                                             trailer
//! ```
//! - The header is a [`Response`](super::proto::Response): an error before the walk
//!   (an unknown port, say) is `{"err":{"message":...}}` in its place, and nothing
//!   follows. A daemon that predates streaming ignores `stream` and answers the whole
//!   `flows` body in one line: the client reads that too ([`super::client::Answer`]).
//! - Each row is a [`FlowRow`], exactly as in the one-line answer.
//! - The trailer counts the rows sent and says whether `limit` cut the dump (more flows
//!   matched). A stream that ends without it (the daemon died, or closed a reader that
//!   did not keep up) is an error for the client ([`FlowRows`]), never a short table;
//!   so is a trailer whose count is not the rows read.
//! - `{"err":{"message":...}}` in place of a row: the daemon failed mid-way.
//! - Lines never exceed [`MAX_STREAM_LINE`]. The server sends the lines in chunks of
//!   about [`CHUNK_BYTES`], at most [`CHUNKS_QUEUED`] queued ahead of the socket
//!   ([`LineSink`]): the daemon's memory for a dump is bounded whatever its size, and a
//!   reader that stops reading holds the walk (not the table's lock) until the
//!   server's answer timeout closes it.
//!
//! A later, incompatible stream format gets version 2; a daemon writes the highest
//! version both sides know, and says which in the header.

use super::proto::FlowRow;
use serde::{Deserialize, Serialize};
use std::io::{self, BufRead, Read};

/// The stream format this build writes and reads.
pub const STREAM_VERSION: u32 = 1;

/// The longest line of a stream (a row), newline included.
pub const MAX_STREAM_LINE: usize = 1 << 20;

/// The server sends a stream in chunks of about this many bytes.
pub const CHUNK_BYTES: usize = 64 << 10;

/// Chunks a stream's writer may queue ahead of the socket before it waits.
pub const CHUNKS_QUEUED: usize = 4;

/// The header's content: which stream format follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpStart {
    /// The stream format ([`STREAM_VERSION`]).
    pub version: u32,
    /// Flows in the table when the walk began (the selection may pass fewer).
    #[serde(default)]
    pub flows_in_table: u64,
}

/// The trailer's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DumpEnd {
    /// Rows sent.
    pub flows: u64,
    /// Whether `limit` cut the dump (more flows matched).
    pub limited: bool,
}

/// A line after the header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DumpLine {
    /// A flow.
    Flow(FlowRow),
    /// The trailer: the dump is complete.
    End(DumpEnd),
    /// The daemon failed mid-way.
    Err {
        /// What went wrong.
        message: String,
    },
}

/// The reader of a stream went away: stop producing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the control client is gone")]
pub struct Closed;

/// Where a streamed answer's producer writes its lines (on a blocking thread): lines
/// gather into a chunk of about [`CHUNK_BYTES`], handed to the socket's writer through
/// a queue of [`CHUNKS_QUEUED`]; a full queue blocks the producer until the client
/// reads (backpressure), a dropped one (the client is gone or too slow) is [`Closed`].
#[derive(Debug)]
pub struct LineSink {
    buf: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
}

impl LineSink {
    /// A sink feeding `tx` (a channel of [`CHUNKS_QUEUED`] chunks).
    pub fn new(tx: tokio::sync::mpsc::Sender<Vec<u8>>) -> Self {
        Self {
            buf: Vec::with_capacity(CHUNK_BYTES + 1024),
            tx,
        }
    }

    /// Appends `v` as one line; sends the chunk once it is full. Must not be called
    /// from an async task (it blocks).
    pub fn line<T: Serialize>(&mut self, v: &T) -> Result<(), Closed> {
        let start = self.buf.len();
        if let Err(e) = serde_json::to_writer(&mut self.buf, v) {
            self.buf.truncate(start);
            let failed = DumpLine::Err {
                message: format!("cannot encode a line: {e}"),
            };
            serde_json::to_writer(&mut self.buf, &failed).map_err(|_| Closed)?;
        }
        self.buf.push(b'\n');
        if self.buf.len() >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends what is gathered.
    pub fn flush(&mut self) -> Result<(), Closed> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES + 1024));
        self.tx.blocking_send(chunk).map_err(|_| Closed)
    }
}

/// Why a stream could not be read to its end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// Reading the socket failed.
    #[error("control socket I/O after {rows} flows: {source}")]
    Io {
        /// Rows read.
        rows: u64,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Nothing arrived within the socket's read timeout.
    #[error("flowd sent nothing within the timeout after {rows} flows")]
    Stalled {
        /// Rows read.
        rows: u64,
    },
    /// The stream ended without its trailer.
    #[error(
        "the dump was cut after {rows} flows (flowd stopped, or closed a reader that did not keep up)"
    )]
    Truncated {
        /// Rows read.
        rows: u64,
    },
    /// The daemon reported a failure mid-way.
    #[error("flowd failed after {rows} flows: {message}")]
    Failed {
        /// Rows read.
        rows: u64,
        /// What the daemon said.
        message: String,
    },
    /// The trailer's count is not the rows read.
    #[error("flowd announced {announced} flows, {rows} arrived")]
    Miscounted {
        /// The trailer's count.
        announced: u64,
        /// Rows read.
        rows: u64,
    },
    /// A line longer than [`MAX_STREAM_LINE`].
    #[error("a line of the dump is longer than {MAX_STREAM_LINE} bytes")]
    LineTooLong,
    /// A line that is not a [`DumpLine`].
    #[error("unreadable line after {rows} flows: {source}")]
    Unreadable {
        /// Rows read.
        rows: u64,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

/// Reads one line of at most `max` bytes (newline included) into `buf`. `Ok(false)` at
/// the end of the stream (a partial last line counts as nothing: it was cut).
pub fn read_line_max<R: BufRead>(r: &mut R, buf: &mut Vec<u8>, max: usize) -> io::Result<bool> {
    buf.clear();
    let n = r.take(max as u64).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(false);
    }
    if buf.last() != Some(&b'\n') {
        if n >= max {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
        return Ok(false);
    }
    Ok(true)
}

/// The rows of a stream after its header, as they arrive: an iterator of rows that
/// ends with an error unless the trailer came and counts them ([`Self::end`]). Holds
/// one line at a time.
#[derive(Debug)]
pub struct FlowRows<R> {
    r: R,
    buf: Vec<u8>,
    rows: u64,
    end: Option<DumpEnd>,
    done: bool,
}

impl<R: BufRead> FlowRows<R> {
    /// Reads the rows that follow a header already read from `r`.
    pub fn new(r: R) -> Self {
        Self {
            r,
            buf: Vec::new(),
            rows: 0,
            end: None,
            done: false,
        }
    }

    /// The trailer, once the iterator ended without an error.
    pub fn end(&self) -> Option<DumpEnd> {
        self.end
    }

    fn next_row(&mut self) -> Result<Option<FlowRow>, StreamError> {
        let rows = self.rows;
        match read_line_max(&mut self.r, &mut self.buf, MAX_STREAM_LINE) {
            Ok(true) => {}
            Ok(false) => return Err(StreamError::Truncated { rows }),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(StreamError::LineTooLong);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(StreamError::Stalled { rows });
            }
            Err(source) => return Err(StreamError::Io { rows, source }),
        }
        let line = serde_json::from_slice::<DumpLine>(&self.buf)
            .map_err(|source| StreamError::Unreadable { rows, source })?;
        match line {
            DumpLine::Flow(row) => {
                self.rows += 1;
                Ok(Some(row))
            }
            DumpLine::End(end) if end.flows == rows => {
                self.end = Some(end);
                Ok(None)
            }
            DumpLine::End(end) => Err(StreamError::Miscounted {
                announced: end.flows,
                rows,
            }),
            DumpLine::Err { message } => Err(StreamError::Failed { rows, message }),
        }
    }
}

impl<T: Read> FlowRows<io::BufReader<T>> {
    /// Whether the next row needs a read from the socket (nothing is buffered): the
    /// moment to flush what was printed.
    pub fn would_wait(&self) -> bool {
        self.r.buffer().is_empty()
    }
}

impl<R: BufRead> Iterator for FlowRows<R> {
    type Item = Result<FlowRow, StreamError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_row() {
            Ok(Some(row)) => Some(Ok(row)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests;
