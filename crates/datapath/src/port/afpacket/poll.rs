//! Waiting for traffic: [`Poller`] (`poll()` over the ports' sockets) and [`Waker`] (an
//! eventfd that ends a wait early when the slow path queued work).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Wakes a datapath thread blocked in [`Poller::wait`]: an eventfd the poller also
/// watches. Slow-path handlers wake it after queueing a first packet's verdict, so the
/// packet does not wait for the poll timeout.
#[derive(Debug, Clone)]
pub struct Waker {
    fd: std::sync::Arc<OwnedFd>,
}

impl Waker {
    /// A new eventfd.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain system call; the result is checked.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Self {
            fd: std::sync::Arc::new(fd),
        })
    }

    /// Makes the poller's next (or current) wait return.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd; a full counter (EAGAIN)
        // only means a wake is already pending.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Clears pending wakes.
    pub fn reset(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our non-blocking eventfd.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }

    /// The descriptor to poll.
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

/// Waits until some of the given file descriptors are readable (or report an error).
#[derive(Debug, Default)]
pub struct Poller {
    fds: Vec<libc::pollfd>,
}

// SAFETY: pollfd holds only integers.
unsafe impl Send for Poller {}

impl Poller {
    /// A poller over `fds`.
    pub fn new(fds: &[i32]) -> Self {
        Self {
            fds: fds
                .iter()
                .map(|&fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect(),
        }
    }

    /// Waits up to `timeout_ms`; returns the indices (in the order given to `new`) of the
    /// descriptors that are readable or report an error condition (see [`Self::revents`])
    /// through `ready`.
    pub fn wait(&mut self, timeout_ms: i32, ready: &mut Vec<usize>) -> io::Result<()> {
        ready.clear();
        for p in &mut self.fds {
            p.revents = 0;
        }
        // SAFETY: `fds` is a valid array of its length for the call.
        let r = unsafe {
            libc::poll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                timeout_ms,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        ready.extend(
            self.fds
                .iter()
                .enumerate()
                .filter(|(_, p)| {
                    p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
                })
                .map(|(i, _)| i),
        );
        Ok(())
    }

    /// What the last [`Self::wait`] reported for descriptor `i` (0 past the end): `POLLIN`;
    /// `POLLERR`, a socket error is pending; `POLLHUP`, hung up; `POLLNVAL`, not an open
    /// descriptor.
    pub fn revents(&self, i: usize) -> i16 {
        self.fds.get(i).map_or(0, |p| p.revents)
    }
}
