//! The crate's error type.

/// Why an EVPN operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A netlink request, dump or socket operation failed (the shared [`rtnl`] layer's
    /// error; the event socket reports its own the same way).
    #[error(transparent)]
    Netlink(#[from] rtnl::Error),
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
