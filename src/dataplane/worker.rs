//! The poll loop around the pipeline: one per core.
//!
//! receive a burst → load the snapshot → pipeline → transmit. The snapshot
//! is loaded on every poll, empty ones included, so an idle worker never
//! keeps a released version alive; the clock is read once per poll. The
//! only shared memory touched per poll is the snapshot cell and the stop
//! flag, both read-only here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::dataplane::frame::FrameBuf;
use crate::dataplane::pipeline::{Pipeline, Verdict};
use crate::dataplane::stats::DropReason;
use crate::io::Port;
use crate::snapshot::SnapshotCell;

/// What a worker does when a poll finds nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleMode {
    /// Spin: lowest latency, one core at 100 %.
    Busy,
    /// Spin a while, then sleep in growing steps up to `max_sleep`: gives
    /// the core back on a quiet link at the cost of some wake-up latency.
    Adaptive {
        /// Longest sleep between polls.
        max_sleep: Duration,
    },
}

/// Polls spun before an adaptive worker starts to sleep.
const SPIN_POLLS: u32 = 1024;

/// Runs the poll loop on `port` until `stop` is set; the burst in flight
/// is finished first. Returns the port so the caller can close it.
pub fn run<P: Port>(
    mut port: P,
    cell: &SnapshotCell,
    pipe: &mut Pipeline,
    stop: &AtomicBool,
    burst: usize,
    idle: IdleMode,
    epoch: Instant,
) -> P {
    let mut rx: Vec<P::Buf> = Vec::with_capacity(burst);
    let mut tx: Vec<P::Buf> = Vec::with_capacity(burst * 5);
    let mut verdicts = vec![Verdict::Drop(DropReason::NoService); burst];
    let mut empty_polls: u32 = 0;
    port.attach_thread();
    while !stop.load(Ordering::Relaxed) {
        // A failed receive is an empty poll: the driver logs and recovers.
        let n = port.rx_burst(&mut rx, burst).unwrap_or_default();
        let snap = cell.load();
        let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        pipe.process(&snap, now, &mut rx[..n], &mut verdicts[..n]);
        drop(snap);
        if n == 0 {
            pipe.stats().idle_polls.add(1);
            empty_polls = empty_polls.saturating_add(1);
            back_off(idle, empty_polls);
            continue;
        }
        empty_polls = 0;
        for (buf, v) in rx.drain(..).zip(verdicts.iter()) {
            if v.is_tx() {
                tx.push(buf);
            } else {
                port.free(buf);
            }
        }
        for frame in pipe.extra() {
            match port.alloc() {
                Some(mut b) => {
                    if b.copy_from(frame.bytes()) {
                        tx.push(b);
                    } else {
                        port.free(b);
                        pipe.stats().drop_packet(DropReason::TxFull);
                    }
                }
                None => pipe.stats().drop_packet(DropReason::TxFull),
            }
        }
        pipe.recycle_extra();
        transmit(&mut port, &mut tx, pipe);
    }
    port.detach_thread();
    port
}

/// Sends `tx`; what the ring does not take is counted as `tx_full`.
fn transmit<P: Port>(port: &mut P, tx: &mut Vec<P::Buf>, pipe: &Pipeline) {
    let before = tx.len();
    let sent = port.tx_burst(tx).unwrap_or(0);
    pipe.stats().tx_packets.add(sent as u64);
    debug_assert_eq!(before - sent, tx.len());
    for buf in tx.drain(..) {
        pipe.stats().drop_packet(DropReason::TxFull);
        port.free(buf);
    }
}

fn back_off(idle: IdleMode, empty_polls: u32) {
    match idle {
        IdleMode::Busy => std::hint::spin_loop(),
        IdleMode::Adaptive { max_sleep } => {
            if empty_polls < SPIN_POLLS {
                std::hint::spin_loop();
            } else {
                let steps = (empty_polls - SPIN_POLLS) / 64;
                let sleep = Duration::from_micros(10u64 << steps.min(10)).min(max_sleep);
                std::thread::sleep(sleep);
            }
        }
    }
}
