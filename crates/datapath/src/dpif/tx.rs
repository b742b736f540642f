//! The transmit side of the datapath: each port's state and pending transmit batch
//! ([`DpPort`]), the executor's view of them ([`TxSink`]: a frame for a port that is
//! down is dropped and counted), and flushing a batch to the port's I/O.

use crate::PortId;
use crate::exec::{PacketSink, send_parts_copied};
use crate::port::{PacketBatch, Port};
use crate::wire::Offload;
use vocab::PortRole;

/// A port of the datapath: its I/O, what it offloads, its transmit batch and its state.
pub(super) struct DpPort {
    pub(super) role: PortRole,
    pub(super) io: Option<Box<dyn Port>>,
    /// The port transmits offload metadata ([`Port::offloads`]).
    pub(super) offloads: bool,
    /// The port takes UDP super-frames ([`Port::udp_segmentation`]; re-read after each
    /// transmit: the kernel may refuse them).
    pub(super) udp_segmentation: bool,
    /// The port takes UDP-tunnel super-frames ([`Port::tunnel_segmentation`]; re-read
    /// after each transmit, like `udp_segmentation`).
    pub(super) tunnel_segmentation: bool,
    /// The port sends single frames at once from the caller's buffers
    /// ([`Port::sends_direct`]).
    pub(super) direct: bool,
    pub(super) tx: PacketBatch,
    /// The port's device is gone: not polled, not transmitted to.
    pub(super) down: bool,
    /// Frames dropped because the port was down.
    pub(super) down_drops: u64,
    /// Malformed frames received on the port.
    pub(super) malformed: u64,
    /// Misses of frames received on the port that the slow path did not take.
    pub(super) upcall_drops: u64,
}

impl DpPort {
    /// Marks the port down; its pending transmit batch is dropped and counted.
    pub(super) fn set_down(&mut self) {
        self.down = true;
        self.down_drops += self.tx.len() as u64;
        self.tx.clear();
    }
}

/// The transmit side, as the executor sees it.
pub(super) struct TxSink<'a> {
    pub(super) ports: &'a mut [Option<DpPort>],
    pub(super) tx_dropped: &'a mut u64,
}

impl TxSink<'_> {
    /// The transmit batch of `port`, flushed first if a frame of `len` bytes does not
    /// fit; None (the frame is dropped) for a port that is unknown, has no I/O or is
    /// down.
    fn batch(&mut self, port: PortId, len: usize) -> Option<&mut PacketBatch> {
        let p = self.ports.get_mut(port.0 as usize)?.as_mut()?;
        p.io.as_ref()?;
        if !p.down && !p.tx.fits(len) {
            flush_port(p, self.tx_dropped);
        }
        if p.down {
            p.down_drops += 1;
            return None;
        }
        Some(&mut p.tx)
    }
}

impl PacketSink for TxSink<'_> {
    fn send(&mut self, port: PortId, frame: &[u8], offload: Offload) -> bool {
        self.batch(port, frame.len())
            .is_some_and(|b| b.push_offload(frame, offload))
    }

    fn send_with(
        &mut self,
        port: PortId,
        len: usize,
        offload: Offload,
        fill: &mut dyn FnMut(&mut [u8]) -> usize,
    ) -> bool {
        self.batch(port, len)
            .is_some_and(|b| b.push_with_offload(offload, fill))
    }

    fn send_direct(&mut self, port: PortId, parts: &[&[u8]], offload: Offload) -> bool {
        let direct = matches!(self.ports.get(port.0 as usize), Some(Some(p)) if p.direct);
        if !direct {
            return send_parts_copied(self, port, parts, offload);
        }
        let Some(p) = self.ports.get_mut(port.0 as usize).and_then(Option::as_mut) else {
            return false;
        };
        // What is queued goes first: frames keep their order.
        flush_port(p, self.tx_dropped);
        if p.down {
            p.down_drops += 1;
            return false;
        }
        let Some(io) = p.io.as_mut() else {
            return false;
        };
        let sent = match io.send_direct(parts, offload) {
            Ok(sent) => sent,
            Err(e) => {
                if e.is_device_gone() {
                    p.down = true;
                }
                false
            }
        };
        *self.tx_dropped += u64::from(!sent);
        p.udp_segmentation = io.udp_segmentation();
        p.tunnel_segmentation = io.tunnel_segmentation();
        sent
    }

    fn offloads(&self, port: PortId) -> bool {
        matches!(self.ports.get(port.0 as usize), Some(Some(p)) if p.offloads)
    }

    fn udp_segmentation(&self, port: PortId) -> bool {
        matches!(self.ports.get(port.0 as usize), Some(Some(p)) if p.udp_segmentation)
    }

    fn tunnel_segmentation(&self, port: PortId) -> bool {
        matches!(self.ports.get(port.0 as usize), Some(Some(p)) if p.tunnel_segmentation)
    }
}

/// Sends the port's pending transmit batch; what the port did not send is counted in
/// `dropped`. A port whose device is gone is marked down.
pub(super) fn flush_port(p: &mut DpPort, dropped: &mut u64) {
    let Some(io) = p.io.as_mut() else { return };
    if p.tx.is_empty() || p.down {
        return;
    }
    let sent = match io.send(&p.tx) {
        Ok(n) => n,
        Err(e) => {
            if e.is_device_gone() {
                p.down = true;
            }
            0
        }
    };
    *dropped += (p.tx.len() - sent) as u64;
    p.udp_segmentation = io.udp_segmentation();
    p.tunnel_segmentation = io.tunnel_segmentation();
    p.tx.clear();
}
