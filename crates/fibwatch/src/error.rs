//! fibwatch's error type.

use std::io;

/// Errors at fibwatch's boundary.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A netlink socket operation failed.
    #[error("netlink {op}: {source}")]
    Socket {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The kernel answered a request with an error.
    #[error("kernel refused {op}: {source}")]
    Kernel {
        /// The request.
        op: String,
        /// The errno, as an I/O error.
        #[source]
        source: io::Error,
    },
    /// The event socket overflowed (ENOBUFS): events were lost, a resync is needed.
    #[error("netlink event socket overflowed")]
    Overrun,
    /// A dump was interrupted by a concurrent change (NLM_F_DUMP_INTR) too many times.
    #[error("netlink dump of {what} kept being interrupted")]
    DumpInterrupted {
        /// The object kind being dumped.
        what: &'static str,
    },
    /// Entering a network namespace failed.
    #[error("entering network namespace {path}: {source}")]
    Netns {
        /// The namespace file.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The watcher thread is gone.
    #[error("the fibwatch thread has stopped")]
    Stopped,
}

/// fibwatch's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<rtnl::Error> for Error {
    fn from(e: rtnl::Error) -> Self {
        match e {
            rtnl::Error::Socket { op, source } => Error::Socket { op, source },
            rtnl::Error::Kernel { op, source } => Error::Kernel { op, source },
            rtnl::Error::DumpInterrupted { what } => Error::DumpInterrupted { what },
            other => Error::Socket {
                op: "netlink",
                source: io::Error::other(other.to_string()),
            },
        }
    }
}
