//! Polling: receiving a batch from one port, and one round of the datapath thread's
//! loop ([`Datapath::run_once`]): `poll()` over the kernel ports (skipped under load),
//! errors `poll()` reports (a port whose device is gone is marked down and leaves the
//! poll set), then a batch from each readable port.

use super::Datapath;
use crate::PortId;
use crate::port::{PacketBatch, Poller, PortError, Waker};

impl Datapath {
    /// Receives one batch from `port` and processes it. Returns the frames received. A
    /// port that is down is not read; one whose device turns out gone is marked down
    /// (Ok(0)); a transient error is Ok(0).
    pub fn poll_port(&mut self, port: PortId, now: u64) -> Result<usize, PortError> {
        let Some(Some(p)) = self.ports.get_mut(port.0 as usize) else {
            return Ok(0);
        };
        let role = p.role;
        if p.down {
            return Ok(0);
        }
        let Some(io) = p.io.as_mut() else {
            return Ok(0);
        };
        let mut rx = std::mem::replace(&mut self.rx, PacketBatch::new(0, 0));
        rx.clear();
        let n = match io.recv(&mut rx) {
            Err(e) if e.is_device_gone() => {
                p.set_down();
                Ok(0)
            }
            Err(e) if e.is_transient() => Ok(0),
            n => n,
        };
        if let Ok(n) = n
            && n > 0
        {
            self.process(port, role, &rx, now);
        }
        self.rx = rx;
        n
    }

    /// Waits up to `timeout_ms` for traffic on the kernel-backed ports, then processes one
    /// batch from each readable port and drains the queues. Ports without a file
    /// descriptor (in-memory) are polled every call. Under load (the previous call received
    /// frames) it does not wait: every port is read directly, which saves a `poll()`
    /// system call per round (and costs nothing for a port with a receive ring). Ports
    /// marked down leave the poll set.
    pub fn run_once(&mut self, timeout_ms: i32, now: u64) -> Result<usize, PortError> {
        self.drain_queues(now);
        // A port marked down since the poll set was built (a failed transmit) leaves it.
        let stale = self.poller.as_ref().is_some_and(|(_, fd_ids, mem_ids)| {
            fd_ids.iter().chain(mem_ids).any(|&id| self.is_down(id))
        });
        if stale {
            self.poller = None;
        }
        let (mut poller, fd_ids, mem_ids) = match self.poller.take() {
            Some(p) => p,
            None => self.build_poller(),
        };
        let mut ready = std::mem::take(&mut self.ready);
        let waited = if self.busy {
            ready.clear();
            ready.extend(0..fd_ids.len());
            Ok(())
        } else {
            poller.wait(timeout_ms, &mut ready)
        };
        let mut result = waited.map(|()| 0).map_err(|source| PortError::Io {
            op: "poll",
            port: "*".into(),
            source,
        });
        if let Some(w) = &self.waker
            && ready.contains(&fd_ids.len())
        {
            // Woken for queued work: drained at the top of the next round.
            w.reset();
        }
        if !self.busy {
            for &i in &ready {
                let Some(&id) = fd_ids.get(i) else { continue };
                if let Err(e) = self.poll_error(id, poller.revents(i)) {
                    result = Err(e);
                }
            }
        }
        let ids = ready.iter().filter_map(|&i| fd_ids.get(i)).chain(&mem_ids);
        for &id in ids {
            let Ok(total) = result.as_mut() else { break };
            match self.poll_port(id, now) {
                Ok(n) => *total += n,
                Err(e) => result = Err(e),
            }
        }
        self.poller = Some((poller, fd_ids, mem_ids));
        self.ready = ready;
        self.busy = matches!(result, Ok(n) if n > 0);
        result
    }

    /// The ports the last round's poll set holds (kernel ports, then the others).
    #[cfg(test)]
    pub(crate) fn poll_set(&self) -> Vec<PortId> {
        self.poller
            .as_ref()
            .map(|(_, fd_ids, mem_ids)| fd_ids.iter().chain(mem_ids).copied().collect())
            .unwrap_or_default()
    }

    /// Whether port `id` exists and is marked down.
    fn is_down(&self, id: PortId) -> bool {
        matches!(self.ports.get(id.0 as usize), Some(Some(p)) if p.down)
    }

    /// Acts on an error condition `poll()` reported for port `id` (`revents`): a hung-up
    /// or invalid descriptor marks the port down; a pending socket error is read, and
    /// marks the port down if its device is gone. Other errors are returned.
    fn poll_error(&mut self, id: PortId, revents: i16) -> Result<(), PortError> {
        let Some(Some(p)) = self.ports.get_mut(id.0 as usize) else {
            return Ok(());
        };
        let Some(io) = p.io.as_mut() else {
            return Ok(());
        };
        if revents & (libc::POLLHUP | libc::POLLNVAL) != 0 {
            p.set_down();
            return Ok(());
        }
        if revents & libc::POLLERR == 0 {
            return Ok(());
        }
        match io.take_error() {
            Err(e) if e.is_device_gone() => {
                p.set_down();
                Ok(())
            }
            Err(e) if e.is_transient() => Ok(()),
            r => r,
        }
    }

    /// A poller over the ports with a file descriptor, their ids, and the other ports
    /// (ports marked down left out).
    fn build_poller(&self) -> (Poller, Vec<PortId>, Vec<PortId>) {
        let mut fds = Vec::new();
        let mut fd_ids = Vec::new();
        let mut mem_ids = Vec::new();
        for (i, p) in self.ports.iter().enumerate() {
            let Some(io) = p.as_ref().filter(|p| !p.down).and_then(|p| p.io.as_ref()) else {
                continue;
            };
            match io.raw_fd() {
                Some(fd) => {
                    fds.push(fd);
                    fd_ids.push(PortId(i as u32));
                }
                None => mem_ids.push(PortId(i as u32)),
            }
        }
        // The waker goes last: its index is `fd_ids.len()`.
        fds.extend(self.waker.as_ref().map(Waker::raw_fd));
        (Poller::new(&fds), fd_ids, mem_ids)
    }
}
