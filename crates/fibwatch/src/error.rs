//! fibwatch's error type.

use std::io;

/// Errors at fibwatch's boundary.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A netlink request, dump or socket operation failed (the shared [`rtnl`] layer's
    /// error; fibwatch's own event and xfrm sockets report theirs the same way).
    #[error(transparent)]
    Netlink(#[from] rtnl::Error),
    /// The event socket overflowed (ENOBUFS): events were lost, a resync is needed.
    #[error("netlink event socket overflowed")]
    Overrun,
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
