//! The engine over a fake kernel: heap memory as UMEM and rings, the test
//! playing the kernel's side of each ring.
#![allow(clippy::cast_possible_truncation)] // test offsets are small; x86-64 and arm64 only

use std::cell::RefCell;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::sys::{
    Mapping, SockaddrXdp, XdpDesc, XdpMmapOffsets, XdpRingOffset, XdpStatistics, XdpUmemReg,
};
use super::*;
use crate::dataplane::frame::FrameBuf;

/// Heap memory standing in for a mapping (8-byte aligned, zeroed).
struct HeapMap(Box<[u64]>);

impl Mapping for HeapMap {
    fn as_ptr(&self) -> NonNull<u8> {
        NonNull::new(self.0.as_ptr().cast_mut().cast()).unwrap()
    }
    fn len(&self) -> usize {
        self.0.len() * 8
    }
}

/// Every ring: producer at 0, consumer at 64, flags at 128, entries at 192.
const OFF: XdpRingOffset = XdpRingOffset {
    producer: 0,
    consumer: 64,
    desc: 192,
    flags: 128,
};

#[derive(Default)]
struct Seen {
    /// (mmap page offset or -1 for the UMEM, base address, length)
    maps: Vec<(i64, usize, usize)>,
    bind_flags: Option<u16>,
    kicks: usize,
    kick_error: Option<i32>,
}

#[derive(Clone, Default)]
struct FakeSys(Rc<RefCell<Seen>>);

impl FakeSys {
    fn region(&self, pgoff: i64) -> (usize, usize) {
        let s = self.0.borrow();
        let m = s.maps.iter().find(|m| m.0 == pgoff).expect("mapped");
        (m.1, m.2)
    }
    fn word(&self, pgoff: i64, off: u64) -> &AtomicU32 {
        let (base, _) = self.region(pgoff);
        // SAFETY: test memory, alive while the engine is, aligned.
        unsafe { &*((base + off as usize) as *const AtomicU32) }
    }
    fn entry<T: Copy>(&self, pgoff: i64, index: u32, size: u32) -> *mut T {
        let (base, _) = self.region(pgoff);
        (base + OFF.desc as usize + (index & (size - 1)) as usize * std::mem::size_of::<T>())
            as *mut T
    }
}

impl Sys for FakeSys {
    type Map = HeapMap;
    fn xdp_socket(&self) -> io::Result<OwnedFd> {
        std::fs::File::open("/dev/null").map(OwnedFd::from)
    }
    fn map_umem(&self, len: usize) -> io::Result<HeapMap> {
        let m = HeapMap(vec![0u64; len.div_ceil(8)].into_boxed_slice());
        let base = m.as_ptr().as_ptr() as usize;
        self.0.borrow_mut().maps.push((-1, base, len));
        Ok(m)
    }
    fn register_umem(&self, _: BorrowedFd<'_>, _: &XdpUmemReg) -> io::Result<()> {
        Ok(())
    }
    fn set_ring_size(&self, _: BorrowedFd<'_>, _: libc::c_int, _: u32) -> io::Result<()> {
        Ok(())
    }
    fn mmap_offsets(&self, _: BorrowedFd<'_>) -> io::Result<XdpMmapOffsets> {
        Ok(XdpMmapOffsets {
            rx: OFF,
            tx: OFF,
            fr: OFF,
            cr: OFF,
        })
    }
    fn map_ring(&self, _: BorrowedFd<'_>, pgoff: i64, len: usize) -> io::Result<HeapMap> {
        let m = HeapMap(vec![0u64; len.div_ceil(8)].into_boxed_slice());
        let base = m.as_ptr().as_ptr() as usize;
        self.0.borrow_mut().maps.push((pgoff, base, len));
        Ok(m)
    }
    fn bind(&self, _: BorrowedFd<'_>, addr: &SockaddrXdp) -> io::Result<()> {
        self.0.borrow_mut().bind_flags = Some(addr.flags);
        Ok(())
    }
    fn zero_copy(&self, _: BorrowedFd<'_>) -> io::Result<bool> {
        Ok(false)
    }
    fn kick_tx(&self, _: BorrowedFd<'_>) -> io::Result<()> {
        let mut s = self.0.borrow_mut();
        s.kicks += 1;
        match s.kick_error {
            Some(e) => Err(io::Error::from_raw_os_error(e)),
            None => Ok(()),
        }
    }
    fn wake_rx(&self, _: BorrowedFd<'_>) -> io::Result<()> {
        Ok(())
    }
    fn statistics(&self, _: BorrowedFd<'_>) -> io::Result<XdpStatistics> {
        Ok(XdpStatistics::default())
    }
    fn if_index(&self, _: &str) -> io::Result<u32> {
        Ok(7)
    }
}

fn opts() -> AfXdpOptions {
    AfXdpOptions {
        frame_size: 2048,
        frame_count: 64,
        fill_size: 16,
        comp_size: 16,
        rx_size: 16,
        tx_size: 16,
        ..AfXdpOptions::default()
    }
}

/// Plays the kernel receiving `frame` into the next fill-ring frame at
/// offset 256 (XDP headroom, as copy mode does).
fn kernel_receive(fake: &FakeSys, n: u32, frame: &[u8]) {
    let fr_cons = fake.word(sys::XDP_UMEM_PGOFF_FILL_RING, OFF.consumer);
    let c = fr_cons.load(Ordering::Relaxed);
    // SAFETY: test memory laid out by the fake.
    let addr = unsafe { *fake.entry::<u64>(sys::XDP_UMEM_PGOFF_FILL_RING, c, 16) };
    fr_cons.store(c + 1, Ordering::Release);
    let (umem, _) = fake.region(-1);
    let data = addr + 256;
    // SAFETY: in the fake UMEM (2048-byte frames, frame < 1792 bytes).
    unsafe {
        std::ptr::copy_nonoverlapping(
            frame.as_ptr(),
            (umem + data as usize) as *mut u8,
            frame.len(),
        );
        *fake.entry::<XdpDesc>(sys::XDP_PGOFF_RX_RING, n, 16) = XdpDesc {
            addr: data,
            len: u32::try_from(frame.len()).unwrap(),
            options: 0,
        };
    }
    fake.word(sys::XDP_PGOFF_RX_RING, OFF.producer)
        .store(n + 1, Ordering::Release);
}

const RING: u32 = 16;
const FRAME: u64 = 2048;
const FRAMES: u64 = 64;

/// Plays the kernel's side of the four rings over a [`FakeSys`], keeping
/// the chunks it holds, and checks every chunk it is handed is not held
/// twice.
struct FakeKernel {
    fake: FakeSys,
    /// Chunks taken from the fill ring, not yet received into.
    filled: Vec<u64>,
    /// Descriptors taken from the TX ring, not yet completed.
    sending: Vec<XdpDesc>,
    /// (first byte, length) of every frame taken from the TX ring.
    sent: Vec<(u8, u32)>,
}

impl FakeKernel {
    fn new(fake: &FakeSys) -> Self {
        FakeKernel {
            fake: fake.clone(),
            filled: Vec::new(),
            sending: Vec::new(),
            sent: Vec::new(),
        }
    }

    fn idx(&self, pgoff: i64, off: u64) -> u32 {
        self.fake.word(pgoff, off).load(Ordering::Acquire)
    }

    /// Takes everything in the fill ring.
    fn take_fill(&mut self) {
        let pg = sys::XDP_UMEM_PGOFF_FILL_RING;
        let (prod, mut cons) = (self.idx(pg, OFF.producer), self.idx(pg, OFF.consumer));
        while cons != prod {
            // SAFETY: test memory laid out by the fake.
            let addr = unsafe { *self.fake.entry::<u64>(pg, cons, RING) };
            assert_eq!(addr % FRAME, 0, "fill ring entries are chunk bases");
            assert!(!self.filled.contains(&addr), "chunk {addr} filled twice");
            assert!(
                !self.sending.iter().any(|d| d.addr / FRAME == addr / FRAME),
                "chunk {addr} filled while being sent"
            );
            self.filled.push(addr);
            cons = cons.wrapping_add(1);
        }
        self.fake
            .word(pg, OFF.consumer)
            .store(cons, Ordering::Release);
    }

    /// Receives up to `n` frames of `len` bytes (first byte `tag`) into
    /// filled chunks, at the XDP headroom; returns how many.
    fn receive(&mut self, n: usize, len: usize, tag: u8) -> usize {
        self.take_fill();
        let pg = sys::XDP_PGOFF_RX_RING;
        let (mut prod, cons) = (self.idx(pg, OFF.producer), self.idx(pg, OFF.consumer));
        let (umem, _) = self.fake.region(-1);
        let mut done = 0;
        while done < n && prod.wrapping_sub(cons) < RING {
            let Some(chunk) = self.filled.pop() else {
                break;
            };
            let addr = chunk + u64::from(DATA_OFFSET);
            // SAFETY: in the fake UMEM; the frame fits its chunk.
            unsafe {
                std::ptr::write_bytes((umem + addr as usize) as *mut u8, tag, len);
                *self.fake.entry::<XdpDesc>(pg, prod, RING) = XdpDesc {
                    addr,
                    len: len as u32,
                    options: 0,
                };
            }
            prod = prod.wrapping_add(1);
            done += 1;
        }
        self.fake
            .word(pg, OFF.producer)
            .store(prod, Ordering::Release);
        done
    }

    /// Takes everything in the TX ring, reading each frame from the UMEM.
    fn take_tx(&mut self) {
        let pg = sys::XDP_PGOFF_TX_RING;
        let (prod, mut cons) = (self.idx(pg, OFF.producer), self.idx(pg, OFF.consumer));
        let (umem, len) = self.fake.region(-1);
        while cons != prod {
            // SAFETY: test memory laid out by the fake.
            let d = unsafe { *self.fake.entry::<XdpDesc>(pg, cons, RING) };
            assert!(d.len > 0 && (d.addr + u64::from(d.len)) as usize <= len);
            assert_eq!(d.addr / FRAME, (d.addr + u64::from(d.len) - 1) / FRAME);
            assert!(
                !self.filled.iter().any(|c| *c == d.addr / FRAME * FRAME),
                "chunk {} sent while in the fill ring",
                d.addr
            );
            assert!(
                !self
                    .sending
                    .iter()
                    .any(|s| s.addr / FRAME == d.addr / FRAME),
                "chunk {} sent twice",
                d.addr
            );
            // SAFETY: in the fake UMEM (checked above).
            let first = unsafe { *((umem + d.addr as usize) as *const u8) };
            self.sent.push((first, d.len));
            self.sending.push(d);
            cons = cons.wrapping_add(1);
        }
        self.fake
            .word(pg, OFF.consumer)
            .store(cons, Ordering::Release);
    }

    /// Completes up to `n` sent frames, oldest first.
    fn complete(&mut self, n: usize) {
        let pg = sys::XDP_UMEM_PGOFF_COMPLETION_RING;
        let (mut prod, cons) = (self.idx(pg, OFF.producer), self.idx(pg, OFF.consumer));
        let mut done = 0;
        while done < n && !self.sending.is_empty() && prod.wrapping_sub(cons) < RING {
            let d = self.sending.remove(0);
            // SAFETY: test memory laid out by the fake.
            unsafe { *self.fake.entry::<u64>(pg, prod, RING) = d.addr };
            prod = prod.wrapping_add(1);
            done += 1;
        }
        self.fake
            .word(pg, OFF.producer)
            .store(prod, Ordering::Release);
    }

    /// Chunks in a ring between consumer and producer.
    fn in_ring<T: Copy>(&self, pg: i64, addr: impl Fn(T) -> u64) -> Vec<u64> {
        let (prod, mut cons) = (self.idx(pg, OFF.producer), self.idx(pg, OFF.consumer));
        let mut v = Vec::new();
        while cons != prod {
            // SAFETY: test memory laid out by the fake.
            v.push(addr(unsafe { *self.fake.entry::<T>(pg, cons, RING) }) / FRAME * FRAME);
            cons = cons.wrapping_add(1);
        }
        v
    }

    /// Every chunk of the UMEM is in exactly one place: the engine's free
    /// list, a ring, the kernel's hands, or `lent`.
    fn assert_partition<S: Sys>(&self, e: &Engine<S>, lent: &[u64]) {
        let mut all: Vec<u64> = e.frames.clone();
        all.extend(self.in_ring::<u64>(sys::XDP_UMEM_PGOFF_FILL_RING, |a| a));
        all.extend(&self.filled);
        all.extend(self.in_ring::<XdpDesc>(sys::XDP_PGOFF_RX_RING, |d| d.addr));
        all.extend(lent);
        all.extend(self.in_ring::<XdpDesc>(sys::XDP_PGOFF_TX_RING, |d| d.addr));
        all.extend(self.sending.iter().map(|d| d.addr / FRAME * FRAME));
        all.extend(self.in_ring::<u64>(sys::XDP_UMEM_PGOFF_COMPLETION_RING, |a| a));
        all.sort_unstable();
        let want: Vec<u64> = (0..FRAMES).map(|i| i * FRAME).collect();
        assert_eq!(all, want, "a chunk is lost or in two places");
        assert_eq!(e.lent, lent.len());
    }
}

#[test]
fn options_are_checked() {
    assert!(check(&AfXdpOptions::default()).is_ok());
    let bad = |o: AfXdpOptions| check(&o).is_err();
    assert!(bad(AfXdpOptions {
        frame_size: 3000,
        ..Default::default()
    }));
    assert!(bad(AfXdpOptions {
        rx_size: 1000,
        ..Default::default()
    }));
    assert!(bad(AfXdpOptions {
        frame_count: 2048,
        ..Default::default()
    }));
}

#[test]
fn open_fills_the_fill_ring_and_binds_with_need_wakeup() {
    let fake = FakeSys::default();
    let e = Engine::open(fake.clone(), "eth0", 0, &opts()).unwrap();
    assert_eq!(
        fake.word(sys::XDP_UMEM_PGOFF_FILL_RING, OFF.producer)
            .load(Ordering::Relaxed),
        16
    );
    assert_eq!(e.frames.len(), 64 - 16);
    assert_eq!(fake.0.borrow().bind_flags, Some(sys::XDP_USE_NEED_WAKEUP));
}

#[test]
fn received_frames_are_lent_in_place() {
    let fake = FakeSys::default();
    let mut e = Engine::open(fake.clone(), "eth0", 0, &opts()).unwrap();
    let mut out = Vec::new();
    assert_eq!(e.rx_burst(&mut out, 32).unwrap(), 0);
    let frame: Vec<u8> = (0..60u8).collect();
    kernel_receive(&fake, 0, &frame);
    kernel_receive(&fake, 1, &frame[..20]);
    kernel_receive(&fake, 2, &frame[..10]); // a runt: dropped
    assert_eq!(e.rx_burst(&mut out, 32).unwrap(), 2);
    assert_eq!(out[0].bytes(), &frame[..]);
    assert_eq!(out[1].bytes(), &frame[..20]);
    assert_eq!(e.stats.rx_bad_len, 1);
    assert_eq!(e.stats.rx_packets, 2);
    assert_eq!(e.lent, 2);
    // Not copied: the frame's bytes are the UMEM's, at the descriptor.
    let (umem, _) = fake.region(-1);
    // SAFETY: test memory laid out by the fake.
    let d0 = unsafe { *fake.entry::<XdpDesc>(sys::XDP_PGOFF_RX_RING, 0, 16) };
    assert_eq!(out[0].bytes().as_ptr() as usize, umem + d0.addr as usize);
    assert_eq!(out[0].headroom(), DATA_OFFSET as usize);
    // The fill ring got back what the kernel took before; the runt's
    // chunk is idle, the lent ones are not.
    let fr_prod = fake.word(sys::XDP_UMEM_PGOFF_FILL_RING, OFF.producer);
    assert_eq!(fr_prod.load(Ordering::Relaxed), 19);
    assert_eq!(e.frames.len(), 64 - 19 + 1);
    assert!(!e.frames.contains(&out[0].chunk()));
    assert_eq!(
        fake.word(sys::XDP_PGOFF_RX_RING, OFF.consumer)
            .load(Ordering::Relaxed),
        3
    );
    for b in out.drain(..) {
        e.give_back(b);
    }
    assert_eq!(e.lent, 0);
    assert_eq!(e.frames.len(), 64 - 19 + 3);
}

#[test]
fn frames_grow_in_front_and_go_to_tx_as_they_are() {
    let fake = FakeSys::default();
    let mut e = Engine::open(fake.clone(), "eth0", 0, &opts()).unwrap();
    let mut k = FakeKernel::new(&fake);
    fake.word(sys::XDP_PGOFF_TX_RING, OFF.flags)
        .store(sys::XDP_RING_NEED_WAKEUP, Ordering::Relaxed);
    assert_eq!(k.receive(3, 60, 0xab), 3);
    let mut rx = Vec::new();
    assert_eq!(e.rx_burst(&mut rx, 32).unwrap(), 3);
    let free0 = e.frames.len();
    // IP-in-IP style: 20 bytes more in front, inside the same chunk.
    let chunk = rx[0].chunk();
    assert!(rx[0].prepend(20));
    rx[0].bytes_mut()[0] = 0x11;
    assert_eq!(rx[0].len(), 80);
    assert!(!rx[1].prepend(DATA_OFFSET as usize + 1));
    assert!(rx[1].set_len(2048 - DATA_OFFSET as usize));
    assert!(!rx[1].set_len(2048 - DATA_OFFSET as usize + 1));
    assert!(rx[1].set_len(60));
    // An empty frame is dropped, not sent (the kernel would lose it).
    assert!(rx[2].set_len(0));
    assert_eq!(e.tx_burst(&mut rx).unwrap(), 2);
    assert!(rx.is_empty());
    assert_eq!(e.stats.tx_bad_len, 1);
    assert_eq!(fake.0.borrow().kicks, 1);
    // SAFETY: test memory laid out by the fake.
    let d = unsafe { *fake.entry::<XdpDesc>(sys::XDP_PGOFF_TX_RING, 0, 16) };
    assert_eq!(d.addr, chunk + u64::from(DATA_OFFSET) - 20);
    assert_eq!(d.len, 80);
    // No frame was taken from the free list: nothing was copied; the empty
    // one came back.
    assert_eq!(e.frames.len(), free0 + 1);
    assert_eq!(e.lent, 0);
    k.take_tx();
    assert_eq!(k.sent, vec![(0x11, 80), (0xab, 60)]);
    k.complete(2);
    e.reap_completions();
    assert_eq!(e.frames.len(), free0 + 3);
    assert!(e.frames.contains(&chunk));
    k.assert_partition(&e, &[]);
}

#[test]
fn a_full_tx_ring_leaves_frames_with_the_caller() {
    let fake = FakeSys::default();
    let mut e = Engine::open(fake.clone(), "eth0", 0, &opts()).unwrap();
    let mut k = FakeKernel::new(&fake);
    let mut tx: Vec<XdpFrame> = (0..20).map(|_| e.alloc().unwrap()).collect();
    for f in &mut tx {
        assert!(f.copy_from(&[7; 64]));
    }
    assert_eq!(e.tx_burst(&mut tx).unwrap(), 16);
    assert_eq!(tx.len(), 4);
    assert_eq!(e.lent, 4);
    for f in tx.drain(..) {
        e.give_back(f);
    }
    k.assert_partition(&e, &[]);
    k.take_tx();
    assert_eq!(k.sent.len(), 16);
    assert!(k.sent.iter().all(|s| *s == (7, 64)));
}

#[test]
fn a_frame_of_another_port_is_copied_and_not_kept() {
    let fake_a = FakeSys::default();
    let fake_b = FakeSys::default();
    let mut a = Engine::open(fake_a.clone(), "eth0", 0, &opts()).unwrap();
    let mut b = Engine::open(fake_b.clone(), "eth1", 0, &opts()).unwrap();
    let mut ka = FakeKernel::new(&fake_a);
    let mut kb = FakeKernel::new(&fake_b);
    assert_eq!(kb.receive(1, 60, 0x5a), 1);
    let mut rx = Vec::new();
    assert_eq!(b.rx_burst(&mut rx, 32).unwrap(), 1);
    let held = rx[0].chunk();
    let a_free = a.frames.len();
    assert_eq!(a.tx_burst(&mut rx).unwrap(), 1);
    // Copied into one of a's frames; b's chunk did not join a's list.
    assert_eq!(a.frames.len(), a_free - 1);
    assert_eq!(a.lent, 0);
    ka.take_tx();
    assert_eq!(ka.sent, vec![(0x5a, 60)]);
    // b never got its chunk back (it was let go): b still counts it lent.
    assert_eq!(b.lent, 1);
    kb.assert_partition(&b, &[held]);
}

#[test]
fn no_frame_is_lost_or_doubled_over_mixed_bursts() {
    let fake = FakeSys::default();
    let mut e = Engine::open(fake.clone(), "eth0", 0, &opts()).unwrap();
    let mut k = FakeKernel::new(&fake);
    fake.word(sys::XDP_PGOFF_TX_RING, OFF.flags)
        .store(sys::XDP_RING_NEED_WAKEUP, Ordering::Relaxed);
    let (mut forwarded, mut extras, mut dropped, mut expect_sent) = (0, 0, 0, 0usize);
    let mut rx: Vec<XdpFrame> = Vec::new();
    let mut tx: Vec<XdpFrame> = Vec::new();
    for burst in 0..500usize {
        let tag = (burst % 251) as u8 + 1;
        k.receive(burst * 7 % 13, 64 + burst % 5, tag);
        let n = e.rx_burst(&mut rx, 8).unwrap();
        assert!(n <= 8);
        let lent: Vec<u64> = rx.iter().map(XdpFrame::chunk).collect();
        k.assert_partition(&e, &lent);
        for (i, mut f) in rx.drain(..).enumerate() {
            // Frames left in the RX ring by an earlier burst carry its tag.
            let tag = f.bytes()[0];
            assert!(tag != 0 && f.bytes().iter().all(|b| *b == tag));
            match (burst + i) % 4 {
                0 | 1 => {
                    // Forward, sometimes IP-in-IP (20 bytes in front).
                    if i % 2 == 0 {
                        assert!(f.prepend(20));
                        f.bytes_mut()[..20].fill(tag);
                    }
                    tx.push(f);
                    forwarded += 1;
                }
                2 => {
                    e.give_back(f);
                    dropped += 1;
                }
                _ => {
                    // A reply plus a frame the pipeline made (a fragment).
                    tx.push(f);
                    forwarded += 1;
                    if let Some(mut x) = e.alloc() {
                        assert!(x.copy_from(&[tag; 90]));
                        tx.push(x);
                        extras += 1;
                    }
                }
            }
        }
        let want = tx.len();
        let sent = e.tx_burst(&mut tx).unwrap();
        assert_eq!(sent + tx.len(), want);
        expect_sent += sent;
        for f in tx.drain(..) {
            e.give_back(f);
        }
        k.assert_partition(&e, &[]);
        if burst % 3 != 2 {
            k.take_tx();
        }
        k.complete(if burst % 5 == 0 { usize::MAX } else { 3 });
        k.assert_partition(&e, &[]);
    }
    // Drain: the kernel sends and completes everything; the engine reaps.
    for _ in 0..100 {
        k.take_tx();
        k.complete(usize::MAX);
        e.rx_burst(&mut rx, 8).unwrap();
        for f in rx.drain(..) {
            e.give_back(f);
        }
        if k.sending.is_empty()
            && k.in_ring::<XdpDesc>(sys::XDP_PGOFF_RX_RING, |d| d.addr)
                .is_empty()
        {
            break;
        }
    }
    k.assert_partition(&e, &[]);
    assert!(forwarded > 500 && dropped > 200 && extras > 200);
    assert_eq!(k.sent.len(), expect_sent);
    assert_eq!(e.stats.tx_packets as usize, expect_sent);
    assert_eq!(e.lent, 0);
    // Every sent frame carries its burst's tag: the TX ring got the
    // frames the pipeline wrote, in place.
    assert!(k.sent.iter().all(|(b, _)| *b != 0));
}

#[test]
fn a_busy_kick_keeps_frames_queued_and_retries() {
    let fake = FakeSys::default();
    let mut e = Engine::open(fake.clone(), "eth0", 0, &opts()).unwrap();
    fake.word(sys::XDP_PGOFF_TX_RING, OFF.flags)
        .store(sys::XDP_RING_NEED_WAKEUP, Ordering::Relaxed);
    fake.0.borrow_mut().kick_error = Some(libc::EAGAIN);
    let mut pkts = vec![e.alloc().unwrap()];
    assert!(pkts[0].copy_from(&[0; 60]));
    assert_eq!(e.tx_burst(&mut pkts).unwrap(), 1);
    assert!(e.tx_pending);
    assert_eq!(e.stats.tx_kick_errors, 1);
    // The next burst, even an RX one, kicks again.
    fake.0.borrow_mut().kick_error = None;
    fake.word(sys::XDP_PGOFF_TX_RING, OFF.consumer)
        .store(1, Ordering::Release);
    e.rx_burst(&mut Vec::new(), 32).unwrap();
    assert!(!e.tx_pending);
    assert_eq!(fake.0.borrow().kicks, 2);
    // A hard error is reported.
    fake.0.borrow_mut().kick_error = Some(libc::ENXIO);
    let mut pkts = vec![e.alloc().unwrap()];
    assert!(pkts[0].copy_from(&[0; 60]));
    assert!(e.tx_burst(&mut pkts).is_err());
}

#[test]
fn a_kick_only_when_the_kernel_asks() {
    let fake = FakeSys::default();
    let mut e = Engine::open(fake.clone(), "eth0", 0, &opts()).unwrap();
    // The flag is clear (a zero-copy driver polling the TX ring itself).
    for _ in 0..3 {
        let mut pkts: Vec<XdpFrame> = (0..4).map(|_| e.alloc().unwrap()).collect();
        for f in &mut pkts {
            assert!(f.copy_from(&[1; 60]));
        }
        assert_eq!(e.tx_burst(&mut pkts).unwrap(), 4);
    }
    assert_eq!(fake.0.borrow().kicks, 0);
    fake.word(sys::XDP_PGOFF_TX_RING, OFF.flags)
        .store(sys::XDP_RING_NEED_WAKEUP, Ordering::Relaxed);
    let mut pkts: Vec<XdpFrame> = (0..4).map(|_| e.alloc().unwrap()).collect();
    for f in &mut pkts {
        assert!(f.copy_from(&[1; 60]));
    }
    assert_eq!(e.tx_burst(&mut pkts).unwrap(), 4);
    assert_eq!(
        fake.0.borrow().kicks,
        1,
        "one kick per burst, not per frame"
    );
}

#[test]
fn vip_keys_are_ipv4_mapped() {
    let k = program::vip_key("198.18.0.5".parse().unwrap());
    assert_eq!(k[..12], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
    assert_eq!(k[12..], [198, 18, 0, 5]);
    let k = program::vip_key("fd98::5".parse().unwrap());
    assert_eq!(k[0], 0xfd);
    assert_eq!(k[15], 5);
}
