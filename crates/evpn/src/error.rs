//! The crate's error type.

use std::io;

/// Why an EVPN operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A netlink socket operation failed.
    #[error("netlink {op}: {source}")]
    Socket {
        /// What was being done.
        op: &'static str,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused a request.
    #[error("{op}: {source}")]
    Kernel {
        /// The request, in words (`create bridge evbr-100`).
        op: String,
        /// The kernel's errno.
        #[source]
        source: io::Error,
    },
    /// A dump kept being interrupted by concurrent changes.
    #[error("{what} dump interrupted too many times")]
    DumpInterrupted {
        /// What was dumped.
        what: &'static str,
    },
    /// A shadow device exists but is something else and cannot be adopted.
    #[error("device {name}: {why}")]
    Device {
        /// The device.
        name: String,
        /// Why it cannot be used.
        why: String,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<rtnl::Error> for Error {
    fn from(e: rtnl::Error) -> Self {
        match e {
            rtnl::Error::Socket { op, source } => Error::Socket { op, source },
            rtnl::Error::Kernel { op, source } => Error::Kernel { op, source },
            rtnl::Error::DumpInterrupted { what } => Error::DumpInterrupted { what },
            other => Error::Socket {
                op: "netlink",
                source: std::io::Error::other(other.to_string()),
            },
        }
    }
}
