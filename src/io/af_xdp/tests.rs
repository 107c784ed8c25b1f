//! The engine over a fake kernel: heap memory as UMEM and rings, the test
//! playing the kernel's side of each ring.
#![allow(clippy::cast_possible_truncation)] // test offsets are small; x86-64 and arm64 only

use super::sys::{XdpMmapOffsets, XdpRingOffset, XdpStatistics};
use super::*;

use std::cell::RefCell;
use std::os::fd::BorrowedFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};

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
        pool_size: 8,
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
    assert!(bad(AfXdpOptions {
        pool_size: 0,
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
fn received_frames_are_copied_out_and_their_umem_frames_refilled() {
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
    // The three frames went back to the fill ring, chunk-aligned.
    let fr_prod = fake.word(sys::XDP_UMEM_PGOFF_FILL_RING, OFF.producer);
    assert_eq!(fr_prod.load(Ordering::Relaxed), 19);
    // SAFETY: test memory laid out by the fake.
    let back = unsafe { *fake.entry::<u64>(sys::XDP_UMEM_PGOFF_FILL_RING, 16, 16) };
    assert_eq!(back % 2048, 0);
    assert_eq!(
        fake.word(sys::XDP_PGOFF_RX_RING, OFF.consumer)
            .load(Ordering::Relaxed),
        3
    );
    // The pool is bounded: 8 buffers, 2 handed out.
    assert_eq!(e.pool.len(), 6);
    for b in out.drain(..) {
        e.give_back(b);
    }
    assert_eq!(e.pool.len(), 8);
}

#[test]
fn sent_frames_are_copied_in_kicked_once_and_reclaimed_on_completion() {
    let fake = FakeSys::default();
    let mut e = Engine::open(fake.clone(), "eth0", 0, &opts()).unwrap();
    let free0 = e.frames.len();
    // The kernel wants a wake-up for TX (copy mode).
    fake.word(sys::XDP_PGOFF_TX_RING, OFF.flags)
        .store(sys::XDP_RING_NEED_WAKEUP, Ordering::Relaxed);
    let mut pkts: Vec<PacketBuf> = (0..20u8).map(|i| PacketBuf::from_slice(&[i; 64])).collect();
    let mut big = PacketBuf::new();
    // Longer than a 2048-byte UMEM frame (grown into the headroom).
    assert!(big.prepend(100) && big.set_len(2100));
    pkts.insert(1, big);
    // 16 TX slots: 16 queued, the oversized one dropped, 4 left over.
    assert_eq!(e.tx_burst(&mut pkts).unwrap(), 16);
    assert_eq!(pkts.len(), 4);
    assert_eq!(e.stats.tx_bad_len, 1);
    assert_eq!(fake.0.borrow().kicks, 1);
    assert_eq!(e.frames.len(), free0 - 16);
    let tx_prod = fake.word(sys::XDP_PGOFF_TX_RING, OFF.producer);
    assert_eq!(tx_prod.load(Ordering::Relaxed), 16);
    // SAFETY: test memory laid out by the fake.
    let d = unsafe { *fake.entry::<XdpDesc>(sys::XDP_PGOFF_TX_RING, 1, 16) };
    assert_eq!(d.len, 64);
    let (umem, _) = fake.region(-1);
    // SAFETY: in the fake UMEM.
    assert_eq!(unsafe { *((umem + d.addr as usize) as *const u8) }, 1);
    // The kernel sends everything and completes it.
    fake.word(sys::XDP_PGOFF_TX_RING, OFF.consumer)
        .store(16, Ordering::Release);
    for i in 0..16u32 {
        // SAFETY: test memory laid out by the fake.
        unsafe {
            let d = *fake.entry::<XdpDesc>(sys::XDP_PGOFF_TX_RING, i, 16);
            *fake.entry::<u64>(sys::XDP_UMEM_PGOFF_COMPLETION_RING, i, 16) = d.addr;
        }
    }
    fake.word(sys::XDP_UMEM_PGOFF_COMPLETION_RING, OFF.producer)
        .store(16, Ordering::Release);
    assert_eq!(e.tx_burst(&mut pkts).unwrap(), 4);
    assert!(pkts.is_empty());
    assert_eq!(e.frames.len(), free0 - 4);
    assert_eq!(fake.0.borrow().kicks, 2);
}

#[test]
fn a_busy_kick_keeps_frames_queued_and_retries() {
    let fake = FakeSys::default();
    let mut e = Engine::open(fake.clone(), "eth0", 0, &opts()).unwrap();
    fake.word(sys::XDP_PGOFF_TX_RING, OFF.flags)
        .store(sys::XDP_RING_NEED_WAKEUP, Ordering::Relaxed);
    fake.0.borrow_mut().kick_error = Some(libc::EAGAIN);
    let mut pkts = vec![PacketBuf::from_slice(&[0; 60])];
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
    let mut pkts = vec![PacketBuf::from_slice(&[0; 60])];
    assert!(e.tx_burst(&mut pkts).is_err());
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
