//! An in-memory port: the driver for unit tests, integration tests and the
//! criterion benchmarks.
//!
//! Tests put frames on the receive queue, run the worker or the pipeline
//! over the port, and read what it sent from the transmit log. Benchmarks use
//! the same port so that the measured loop is the real one (receive, process,
//! send, recycle) minus the NIC. Like a real driver it owns a fixed pool of
//! [`PacketBuf`]s that cycles through receive, transmit and free, so
//! `rx_burst`, `tx_burst`, `free` and `alloc` never allocate once the pool is
//! warm; only the test-side helpers (`push_rx` on an empty pool, `take_tx`,
//! `tx_frames`) may.

use std::collections::VecDeque;

use crate::dataplane::frame::{FrameBuf, PacketBuf};
use crate::io::Port;

/// A port whose wire is two queues in memory.
///
/// Buffers move between four places: the free pool, the receive queue, the
/// caller (between `rx_burst` and `tx_burst`/`free`) and the transmit log.
/// [`MemoryPort::allocated`] counts every buffer ever created, so a test can
/// assert that a warm loop creates none.
#[derive(Debug)]
pub struct MemoryPort {
    pool: Vec<PacketBuf>,
    rx: VecDeque<PacketBuf>,
    tx: Vec<PacketBuf>,
    tx_limit: Option<usize>,
    allocated: usize,
}

impl MemoryPort {
    /// A port with `pool_size` preallocated buffers, an empty receive queue
    /// and an unbounded transmit log.
    ///
    /// The queues get `pool_size` slots up front, so moving pooled buffers
    /// between them does not grow them either.
    pub fn new(pool_size: usize) -> Self {
        MemoryPort {
            pool: (0..pool_size).map(|_| PacketBuf::new()).collect(),
            rx: VecDeque::with_capacity(pool_size),
            tx: Vec::with_capacity(pool_size),
            tx_limit: None,
            allocated: pool_size,
        }
    }

    /// Bounds the transmit log to `limit` frames, like a TX ring that the
    /// NIC does not drain: once it holds `limit` frames, `tx_burst` accepts
    /// no more and leaves the rest in the caller's vector, until the test
    /// drains it with [`take_tx`](Self::take_tx) or
    /// [`clear_tx`](Self::clear_tx).
    pub fn with_tx_limit(mut self, limit: usize) -> Self {
        self.tx_limit = Some(limit);
        self
    }

    /// Queues a copy of `frame` for a later `rx_burst`.
    ///
    /// The copy goes into a pooled buffer; only when the pool is empty is a
    /// new buffer allocated (and counted in [`allocated`](Self::allocated)).
    /// Like [`PacketBuf::load`], a frame longer than
    /// [`MAX_FRAME`](crate::dataplane::frame::MAX_FRAME) is truncated.
    pub fn push_rx(&mut self, frame: &[u8]) {
        let mut buf = self.take_buf();
        buf.load(frame);
        self.rx.push_back(buf);
    }

    /// Queues a copy of every frame of `frames`, in order.
    pub fn push_rx_frames<I>(&mut self, frames: I)
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        for frame in frames {
            self.push_rx(frame.as_ref());
        }
    }

    /// Frames waiting to be received.
    pub fn rx_pending(&self) -> usize {
        self.rx.len()
    }

    /// Frames in the transmit log.
    pub fn tx_len(&self) -> usize {
        self.tx.len()
    }

    /// Moves the transmit log out, oldest first. The buffers leave the port;
    /// hand them back with [`Port::free`] if the pool should keep them.
    pub fn take_tx(&mut self) -> Vec<PacketBuf> {
        let capacity = self.tx.capacity();
        std::mem::replace(&mut self.tx, Vec::with_capacity(capacity))
    }

    /// Copies of the frames in the transmit log, oldest first. The log is
    /// left as it is; [`clear_tx`](Self::clear_tx) empties it.
    pub fn tx_frames(&self) -> Vec<Vec<u8>> {
        self.tx.iter().map(|b| b.bytes().to_vec()).collect()
    }

    /// Empties the transmit log into the pool without allocating: what a
    /// benchmark calls after each burst, where the frames sent do not matter.
    pub fn clear_tx(&mut self) {
        self.pool.append(&mut self.tx);
    }

    /// Buffers waiting in the free pool.
    pub fn pool_available(&self) -> usize {
        self.pool.len()
    }

    /// Buffers created since the port was made: the initial pool plus every
    /// buffer `push_rx` had to allocate because the pool was empty.
    pub fn allocated(&self) -> usize {
        self.allocated
    }

    fn take_buf(&mut self) -> PacketBuf {
        match self.pool.pop() {
            Some(buf) => buf,
            None => {
                self.allocated += 1;
                PacketBuf::new()
            }
        }
    }
}

impl Port for MemoryPort {
    type Buf = PacketBuf;

    fn rx_burst(&mut self, out: &mut Vec<PacketBuf>, max: usize) -> std::io::Result<usize> {
        let n = max.min(self.rx.len());
        out.extend(self.rx.drain(..n));
        Ok(n)
    }

    fn tx_burst(&mut self, pkts: &mut Vec<PacketBuf>) -> std::io::Result<usize> {
        let room = match self.tx_limit {
            Some(limit) => limit.saturating_sub(self.tx.len()),
            None => usize::MAX,
        };
        let n = room.min(pkts.len());
        self.tx.extend(pkts.drain(..n));
        Ok(n)
    }

    fn free(&mut self, buf: PacketBuf) {
        self.pool.push(buf);
    }

    fn alloc(&mut self) -> Option<PacketBuf> {
        let mut buf = self.pool.pop()?;
        // A recycled buffer may have been trimmed or grown at the front;
        // hand it out empty with the full headroom, as a fresh one.
        buf.load(&[]);
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(i: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|j| i.wrapping_add(j.to_le_bytes()[0]))
            .collect()
    }

    #[test]
    fn round_trip_keeps_frames_and_order() {
        let mut port = MemoryPort::new(8);
        let frames: Vec<Vec<u8>> = (0..5).map(|i| frame(i, 60 + usize::from(i))).collect();
        port.push_rx_frames(&frames);
        assert_eq!(port.rx_pending(), 5);

        let mut burst = Vec::with_capacity(32);
        assert_eq!(port.rx_burst(&mut burst, 3).unwrap(), 3);
        assert_eq!(port.rx_burst(&mut burst, 32).unwrap(), 2);
        assert_eq!(port.rx_burst(&mut burst, 32).unwrap(), 0);
        assert_eq!(burst.len(), 5);

        assert_eq!(port.tx_burst(&mut burst).unwrap(), 5);
        assert!(burst.is_empty());
        assert_eq!(port.tx_frames(), frames);
        // tx_frames only reads.
        assert_eq!(port.tx_len(), 5);

        let sent = port.take_tx();
        assert_eq!(sent.len(), 5);
        assert_eq!(sent[4].bytes(), &frames[4][..]);
        assert_eq!(port.tx_len(), 0);
    }

    #[test]
    fn pool_is_reused_after_warm_up() {
        let mut port = MemoryPort::new(64);
        let mut burst = Vec::with_capacity(32);
        let input: Vec<Vec<u8>> = (0..32).map(|i| frame(i, 100)).collect();
        for round in 0..100 {
            port.push_rx_frames(&input);
            port.rx_burst(&mut burst, 32).unwrap();
            // Drop half as the pipeline would, send the rest.
            for buf in burst.drain(16..) {
                port.free(buf);
            }
            if let Some(mut extra) = port.alloc() {
                assert!(extra.is_empty());
                assert!(extra.set_len(64));
                burst.push(extra);
            }
            port.tx_burst(&mut burst).unwrap();
            assert_eq!(port.tx_len(), 17, "round {round}");
            port.clear_tx();
            assert_eq!(port.allocated(), 64, "round {round}");
            assert_eq!(port.pool_available(), 64, "round {round}");
        }
    }

    #[test]
    fn push_rx_allocates_only_when_the_pool_is_empty() {
        let mut port = MemoryPort::new(2);
        port.push_rx_frames([[1u8; 60], [2; 60], [3; 60]]);
        assert_eq!(port.allocated(), 3);
        assert_eq!(port.pool_available(), 0);
        assert!(port.alloc().is_none());

        let mut burst = Vec::new();
        port.rx_burst(&mut burst, 32).unwrap();
        for buf in burst.drain(..) {
            port.free(buf);
        }
        assert_eq!(port.pool_available(), 3);
        port.push_rx(&[4; 60]);
        assert_eq!(port.allocated(), 3);
    }

    #[test]
    fn alloc_returns_an_empty_buffer_with_full_headroom() {
        let mut port = MemoryPort::new(1);
        port.push_rx(&[7; 60]);
        let mut burst = Vec::new();
        port.rx_burst(&mut burst, 1).unwrap();
        let mut buf = burst.pop().unwrap();
        assert!(buf.trim_front(14));
        port.free(buf);

        let mut buf = port.alloc().unwrap();
        assert!(buf.is_empty());
        assert!(buf.prepend(crate::dataplane::frame::HEADROOM));
    }

    #[test]
    fn tx_limit_leaves_the_rest_with_the_caller() {
        let mut port = MemoryPort::new(16).with_tx_limit(4);
        port.push_rx_frames((0..6).map(|i| frame(i, 60)));
        let mut burst = Vec::new();
        port.rx_burst(&mut burst, 32).unwrap();

        assert_eq!(port.tx_burst(&mut burst).unwrap(), 4);
        assert_eq!(burst.len(), 2);
        // The frames that did not fit are the last two, in order.
        assert_eq!(burst[0].bytes(), &frame(4, 60)[..]);
        assert_eq!(burst[1].bytes(), &frame(5, 60)[..]);

        // Full ring: nothing more is accepted until it is drained.
        assert_eq!(port.tx_burst(&mut burst).unwrap(), 0);
        assert_eq!(burst.len(), 2);

        assert_eq!(port.take_tx().len(), 4);
        assert_eq!(port.tx_burst(&mut burst).unwrap(), 2);
        assert!(burst.is_empty());
        assert_eq!(port.tx_frames(), vec![frame(4, 60), frame(5, 60)]);
    }
}
