//! The few raw syscalls fibwatch needs: entering a network namespace, an eventfd to wake
//! the watcher, poll(2), and SO_RCVBUFFORCE.

use crate::error::{Error, Result};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

/// Moves the calling thread into the network namespace at `path` (e.g.
/// `/var/run/netns/NAME`). Sockets opened afterwards by this thread (and threads it
/// spawns) belong to that namespace.
pub fn enter_netns(path: &Path) -> Result<()> {
    let err = |source| Error::Netns {
        path: path.display().to_string(),
        source,
    };
    let f = File::open(path).map_err(err)?;
    // SAFETY: setns on a valid, open namespace fd; affects only this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(())
}

/// Runs `f` on a new thread inside the network namespace at `path`, and returns its
/// result. The caller's namespace is untouched.
pub fn in_netns<T: Send>(path: &Path, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(path)?;
            f()
        })
        .join()
        .unwrap_or(Err(Error::Stopped))
    })
}

/// A non-blocking eventfd.
#[derive(Debug)]
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: plain syscall; the returned fd is owned below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(rtnl::Error::Socket {
                op: "eventfd",
                source: io::Error::last_os_error(),
            }
            .into());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    pub(crate) fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        let _ = unsafe { libc::write(self.fd(), (&raw const one).cast(), 8) };
    }

    pub(crate) fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from our non-blocking eventfd.
        let _ = unsafe { libc::read(self.fd(), (&raw mut v).cast(), 8) };
    }
}

/// Waits until one of `fds` is readable or `timeout` passes.
pub(crate) fn poll_readable(fds: &[RawFd], timeout: Duration) {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: *fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.as_millis().clamp(0, 60_000) as libc::c_int;
    // SAFETY: p is a valid array of pollfd of the given length.
    let _ = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
}

/// Sets the receive buffer beyond rmem_max when allowed (CAP_NET_ADMIN); false otherwise.
pub(crate) fn force_rcvbuf(fd: RawFd, bytes: usize) -> bool {
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: setsockopt with a valid int option value.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const v).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}
