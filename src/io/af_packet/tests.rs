//! The driver over the fake kernel of `sys::fake`: the test plays the
//! kernel's part by writing ring headers into heap memory.
#![allow(clippy::cast_possible_truncation)] // small test constants

use super::ring::field;
use super::sys::fake::FakeSys;
use super::*;

const RX_BLOCK: usize = 4096;
const RX_BLOCKS: usize = 4;
const TX_BLOCK: usize = 8192;
const TX_FRAME: usize = 2112;
const MAC_OFF: usize = 80;

fn opts() -> AfPacketOptions {
    AfPacketOptions {
        rx_block_size: RX_BLOCK as u32,
        rx_block_count: RX_BLOCKS as u32,
        rx_frame_size: 2048,
        tx_block_size: TX_BLOCK as u32,
        tx_block_count: 2,
        tx_frame_size: TX_FRAME as u32,
        fanout_group: Some(0x1234),
        pool_size: 8,
        ..AfPacketOptions::default()
    }
}

fn engine() -> (Engine<FakeSys>, FakeSys) {
    let sys = FakeSys::default();
    let e = Engine::open(sys.clone(), "fake0", &opts()).expect("open over the fake");
    (e, sys)
}

/// Runs `f` over the whole fake mapping, playing the kernel.
fn with_mem<R>(e: &Engine<FakeSys>, f: impl FnOnce(&mut [u8]) -> R) -> R {
    // SAFETY: the mapping is heap memory owned by `e`, valid for `len`
    // bytes; the rings hold only raw pointers and are not used while `f`
    // runs (single thread, `e` borrowed).
    let mem = unsafe { std::slice::from_raw_parts_mut(e.map.as_ptr().as_ptr(), e.map.len()) };
    f(mem)
}

fn put32(m: &mut [u8], off: usize, v: u32) {
    m[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn get32(m: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(m[off..off + 4].try_into().unwrap())
}

#[derive(Clone, Default)]
struct RxFrame {
    data: Vec<u8>,
    status: u32,
    vlan: Option<(u16, u16)>,
    pkttype: u8,
    /// tp_len when the kernel truncated the frame (snaplen < len).
    len: Option<u32>,
}

fn frame(data: &[u8]) -> RxFrame {
    RxFrame {
        data: data.to_vec(),
        ..RxFrame::default()
    }
}

/// Writes a block handed to user space holding `frames`, as the kernel
/// lays it out.
fn write_block(m: &mut [u8], block: usize, frames: &[RxFrame]) {
    let b = block * RX_BLOCK;
    let mut off = field::BLOCK_DESC_LEN;
    for (i, f) in frames.iter().enumerate() {
        let h = b + off;
        let next = (MAC_OFF + f.data.len()).next_multiple_of(8);
        let last = i + 1 == frames.len();
        put32(
            m,
            h + field::NEXT_OFFSET,
            if last { 0 } else { next as u32 },
        );
        put32(m, h + field::SNAPLEN, f.data.len() as u32);
        put32(m, h + field::LEN, f.len.unwrap_or(f.data.len() as u32));
        let mut status = f.status | libc::TP_STATUS_USER;
        if let Some((tpid, tci)) = f.vlan {
            status |= libc::TP_STATUS_VLAN_VALID | libc::TP_STATUS_VLAN_TPID_VALID;
            put32(m, h + field::VLAN_TCI, u32::from(tci));
            m[h + field::VLAN_TPID..h + field::VLAN_TPID + 2].copy_from_slice(&tpid.to_ne_bytes());
        }
        put32(m, h + field::STATUS, status);
        m[h + field::MAC..h + field::MAC + 2].copy_from_slice(&(MAC_OFF as u16).to_ne_bytes());
        m[h + field::PKTTYPE] = f.pkttype;
        m[h + MAC_OFF..h + MAC_OFF + f.data.len()].copy_from_slice(&f.data);
        off += next;
    }
    put32(m, b + field::BLOCK_NUM_PKTS, frames.len() as u32);
    put32(m, b + field::BLOCK_FIRST_PKT, field::BLOCK_DESC_LEN as u32);
    put32(m, b + field::BLOCK_STATUS, libc::TP_STATUS_USER);
}

fn block_status(e: &Engine<FakeSys>, block: usize) -> u32 {
    with_mem(e, |m| get32(m, block * RX_BLOCK + field::BLOCK_STATUS))
}

fn eth(tag: u8, len: usize) -> Vec<u8> {
    let mut v = vec![tag; len];
    v[12] = 0x08;
    v[13] = 0x00;
    v
}

#[test]
fn layout_matches_libc() {
    use std::mem::{offset_of, size_of};
    assert_eq!(
        field::BLOCK_STATUS,
        offset_of!(libc::tpacket_block_desc, hdr) + offset_of!(libc::tpacket_hdr_v1, block_status)
    );
    assert_eq!(
        field::BLOCK_NUM_PKTS,
        8 + offset_of!(libc::tpacket_hdr_v1, num_pkts)
    );
    assert_eq!(
        field::BLOCK_FIRST_PKT,
        8 + offset_of!(libc::tpacket_hdr_v1, offset_to_first_pkt)
    );
    assert_eq!(field::BLOCK_DESC_LEN, size_of::<libc::tpacket_block_desc>());
    assert_eq!(
        field::NEXT_OFFSET,
        offset_of!(libc::tpacket3_hdr, tp_next_offset)
    );
    assert_eq!(field::SNAPLEN, offset_of!(libc::tpacket3_hdr, tp_snaplen));
    assert_eq!(field::LEN, offset_of!(libc::tpacket3_hdr, tp_len));
    assert_eq!(field::STATUS, offset_of!(libc::tpacket3_hdr, tp_status));
    assert_eq!(field::MAC, offset_of!(libc::tpacket3_hdr, tp_mac));
    let hv1 = offset_of!(libc::tpacket3_hdr, hv1);
    assert_eq!(
        field::VLAN_TCI,
        hv1 + offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tci)
    );
    assert_eq!(
        field::VLAN_TPID,
        hv1 + offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tpid)
    );
    assert_eq!(
        field::HDR_LEN + size_of::<libc::sockaddr_ll>(),
        libc::TPACKET3_HDRLEN
    );
    assert_eq!(
        field::PKTTYPE - field::HDR_LEN,
        offset_of!(libc::sockaddr_ll, sll_pkttype)
    );
}

#[test]
fn open_sets_up_v3_rings_then_binds_and_joins_fanout() {
    let (_e, sys) = engine();
    let log = sys.log.borrow();
    assert!(log.ints.contains(&(
        libc::PACKET_VERSION,
        libc::tpacket_versions::TPACKET_V3 as i32
    )));
    assert!(log.ints.contains(&(libc::PACKET_QDISC_BYPASS, 1)));
    assert!(log.ints.contains(&(libc::PACKET_IGNORE_OUTGOING, 1)));
    assert!(log.ints.contains(&(libc::PACKET_LOSS, 1)));
    let fanout = log
        .ints
        .iter()
        .find(|(n, _)| *n == libc::PACKET_FANOUT)
        .expect("fanout set");
    assert_eq!(
        fanout.1 as u32,
        0x1234 | (libc::PACKET_FANOUT_FLAG_DEFRAG << 16)
    );
    // Fanout needs a bound socket: it is the last option.
    assert_eq!(log.ints.last().map(|x| x.0), Some(libc::PACKET_FANOUT));
    let (rx_name, rx) = log.rings[0];
    assert_eq!(rx_name, libc::PACKET_RX_RING);
    assert_eq!(
        (
            rx.tp_block_size,
            rx.tp_block_nr,
            rx.tp_frame_size,
            rx.tp_frame_nr
        ),
        (4096, 4, 2048, 8)
    );
    assert!(rx.tp_retire_blk_tov > 0);
    let (tx_name, tx) = log.rings[1];
    assert_eq!(tx_name, libc::PACKET_TX_RING);
    assert_eq!(
        (
            tx.tp_block_size,
            tx.tp_block_nr,
            tx.tp_frame_size,
            tx.tp_frame_nr
        ),
        (8192, 2, 2112, 6)
    );
    assert_eq!(
        (
            tx.tp_retire_blk_tov,
            tx.tp_sizeof_priv,
            tx.tp_feature_req_word
        ),
        (0, 0, 0)
    );
    assert_eq!(log.mapped, 4 * 4096 + 2 * 8192);
    assert_eq!(log.bound, Some(7));
}

#[test]
fn open_rejects_bad_geometry_and_unknown_interface() {
    let bad = [
        AfPacketOptions {
            rx_block_size: 1000,
            ..opts()
        },
        AfPacketOptions {
            rx_block_count: 0,
            ..opts()
        },
        AfPacketOptions {
            rx_frame_size: 2050,
            ..opts()
        },
        AfPacketOptions {
            tx_frame_size: 1024,
            ..opts()
        },
        AfPacketOptions {
            tx_frame_size: 16384,
            ..opts()
        },
        AfPacketOptions {
            pool_size: 0,
            ..opts()
        },
        AfPacketOptions {
            rx_retire_timeout_ms: 0,
            ..opts()
        },
    ];
    for o in bad {
        let r = Engine::open(FakeSys::default(), "fake0", &o);
        assert!(matches!(r, Err(AfPacketError::InvalidOptions(_))), "{o:?}");
    }
    let r = Engine::open(FakeSys::default(), "nope0", &opts());
    assert!(matches!(r, Err(AfPacketError::Interface { .. })));
    geometry(&AfPacketOptions::default()).expect("defaults are valid");
}

#[test]
fn rx_empty_ring_returns_zero() {
    let (mut e, _) = engine();
    let mut out = Vec::new();
    assert_eq!(e.rx_burst(&mut out, 32), 0);
    assert!(out.is_empty());
}

#[test]
fn rx_reads_a_block_and_gives_it_back() {
    let (mut e, _) = engine();
    let frames = [frame(&eth(1, 60)), frame(&eth(2, 1514)), frame(&eth(3, 14))];
    with_mem(&e, |m| write_block(m, 0, &frames));
    let mut out = Vec::new();
    assert_eq!(e.rx_burst(&mut out, 32), 3);
    for (got, want) in out.iter().zip(&frames) {
        assert_eq!(got.bytes(), &want.data[..]);
    }
    assert_eq!(block_status(&e, 0), libc::TP_STATUS_KERNEL);
    assert_eq!(e.rx_burst(&mut out, 32), 0);
    assert_eq!(e.stats().rx_packets, 3);
    assert_eq!(e.pool.len(), 8 - 3);
}

#[test]
fn rx_burst_limit_keeps_the_block_until_consumed() {
    let (mut e, _) = engine();
    let frames: Vec<_> = (0..5).map(|i| frame(&eth(i, 64))).collect();
    with_mem(&e, |m| write_block(m, 0, &frames));
    let mut out = Vec::new();
    assert_eq!(e.rx_burst(&mut out, 2), 2);
    assert_eq!(block_status(&e, 0), libc::TP_STATUS_USER);
    assert_eq!(e.rx_burst(&mut out, 2), 2);
    assert_eq!(e.rx_burst(&mut out, 2), 1);
    assert_eq!(block_status(&e, 0), libc::TP_STATUS_KERNEL);
    let tags: Vec<u8> = out.iter().map(|b| b.bytes()[0]).collect();
    assert_eq!(tags, [0, 1, 2, 3, 4]);
}

#[test]
fn rx_walks_blocks_in_order_and_wraps() {
    let (mut e, _) = engine();
    let mut out = Vec::new();
    for round in 0..3u8 {
        for b in 0..RX_BLOCKS {
            let tag = round * 10 + b as u8;
            with_mem(&e, |m| write_block(m, b, &[frame(&eth(tag, 60))]));
        }
        assert_eq!(e.rx_burst(&mut out, 32), RX_BLOCKS);
        let tags: Vec<u8> = out.iter().map(|b| b.bytes()[0]).collect();
        assert_eq!(
            tags,
            (0..RX_BLOCKS as u8)
                .map(|b| round * 10 + b)
                .collect::<Vec<_>>()
        );
        for b in out.drain(..) {
            e.free(b);
        }
    }
}

#[test]
fn rx_stops_when_the_pool_is_empty_and_resumes() {
    let (mut e, _) = engine();
    let frames: Vec<_> = (0..10).map(|i| frame(&eth(i, 60))).collect();
    with_mem(&e, |m| write_block(m, 0, &frames));
    let mut out = Vec::new();
    assert_eq!(e.rx_burst(&mut out, 32), 8);
    assert_eq!(e.rx_burst(&mut out, 32), 0);
    assert_eq!(block_status(&e, 0), libc::TP_STATUS_USER);
    for b in out.drain(..) {
        e.free(b);
    }
    assert_eq!(e.rx_burst(&mut out, 32), 2);
    assert_eq!(out[1].bytes()[0], 9);
    assert_eq!(block_status(&e, 0), libc::TP_STATUS_KERNEL);
}

#[test]
fn rx_puts_back_a_stripped_vlan_tag() {
    let (mut e, _) = engine();
    let plain = eth(5, 60);
    let f = RxFrame {
        vlan: Some((0x88a8, 0x2064)),
        ..frame(&plain)
    };
    let g = RxFrame {
        vlan: Some((0x8100, 100)),
        ..frame(&plain)
    };
    with_mem(&e, |m| write_block(m, 0, &[f, g]));
    let mut out = Vec::new();
    assert_eq!(e.rx_burst(&mut out, 32), 2);
    let mut want = plain[..12].to_vec();
    want.extend_from_slice(&[0x88, 0xa8, 0x20, 0x64]);
    want.extend_from_slice(&plain[12..]);
    assert_eq!(out[0].bytes(), &want[..]);
    assert_eq!(&out[1].bytes()[12..16], &[0x81, 0x00, 0x00, 100]);
}

#[test]
fn rx_drops_runts_giants_truncated_and_outgoing() {
    let (mut e, _) = engine();
    let frames = [
        frame(&[0u8; 13]),
        RxFrame {
            len: Some(9000),
            ..frame(&eth(1, 100))
        },
        RxFrame {
            pkttype: 4,
            ..frame(&eth(2, 60))
        },
        RxFrame {
            status: libc::TP_STATUS_CSUMNOTREADY,
            ..frame(&eth(3, 60))
        },
    ];
    with_mem(&e, |m| write_block(m, 0, &frames));
    let mut out = Vec::new();
    assert_eq!(e.rx_burst(&mut out, 32), 1);
    assert_eq!(out[0].bytes()[0], 3);
    let s = e.stats();
    assert_eq!((s.rx_packets, s.rx_bad_len, s.rx_csum_not_ready), (1, 2, 1));
    // Giant: longer than MAX_FRAME (fits a bigger block).
    let mut big = opts();
    big.rx_block_size = 8192;
    let mut e = Engine::open(FakeSys::default(), "fake0", &big).expect("open");
    let giant = frame(&eth(4, MAX_FRAME + 1));
    // SAFETY: as in `with_mem`.
    let m = unsafe { std::slice::from_raw_parts_mut(e.map.as_ptr().as_ptr(), e.map.len()) };
    let b = field::BLOCK_DESC_LEN;
    put32(m, b + field::SNAPLEN, giant.data.len() as u32);
    put32(m, b + field::LEN, giant.data.len() as u32);
    m[b + field::MAC..b + field::MAC + 2].copy_from_slice(&(MAC_OFF as u16).to_ne_bytes());
    put32(m, field::BLOCK_NUM_PKTS, 1);
    put32(m, field::BLOCK_FIRST_PKT, b as u32);
    put32(m, field::BLOCK_STATUS, libc::TP_STATUS_USER);
    assert_eq!(e.rx_burst(&mut out, 32), 0);
    assert_eq!(e.stats().rx_bad_len, 1);
    assert_eq!(get32(m, field::BLOCK_STATUS), libc::TP_STATUS_KERNEL);
}

#[test]
fn rx_survives_corrupt_headers() {
    let (mut e, _) = engine();
    let frames: Vec<_> = (0..3).map(|i| frame(&eth(i, 60))).collect();
    let cases: [(usize, u32); 5] = [
        (field::BLOCK_FIRST_PKT, 4095), // first frame past the end
        (field::BLOCK_FIRST_PKT, 3),    // misaligned
        (field::BLOCK_DESC_LEN + field::SNAPLEN, 5000), // data past the end
        (field::BLOCK_DESC_LEN + field::NEXT_OFFSET, 0), // chain cut short
        (field::BLOCK_DESC_LEN + field::NEXT_OFFSET, 1 << 20), // chain jumps out
    ];
    let mut out = Vec::new();
    for (i, (off, val)) in cases.into_iter().enumerate() {
        let block = i % RX_BLOCKS;
        with_mem(&e, |m| {
            write_block(m, block, &frames);
            put32(m, block * RX_BLOCK + off, val);
            if off == field::BLOCK_DESC_LEN + field::SNAPLEN {
                put32(
                    m,
                    block * RX_BLOCK + field::BLOCK_DESC_LEN + field::LEN,
                    val,
                );
            }
        });
        e.rx_burst(&mut out, 32);
        assert_eq!(block_status(&e, block), libc::TP_STATUS_KERNEL, "case {i}");
        for b in out.drain(..) {
            e.free(b);
        }
    }
    assert_eq!(e.stats().rx_corrupt_blocks, 5);
}

#[test]
fn tx_queues_frames_and_kicks_once_per_burst() {
    let (mut e, sys) = engine();
    let mut pkts: Vec<PacketBuf> = (0..3)
        .map(|i| PacketBuf::from_slice(&eth(i, 60 + usize::from(i))))
        .collect();
    e.pool.truncate(5);
    assert_eq!(e.tx_burst(&mut pkts).unwrap(), 3);
    assert!(pkts.is_empty());
    assert_eq!(e.pool.len(), 8);
    assert_eq!(sys.log.borrow().kicks, 1);
    let tx0 = RX_BLOCK * RX_BLOCKS;
    with_mem(&e, |m| {
        for i in 0..3usize {
            let f = tx0 + i * TX_FRAME;
            assert_eq!(get32(m, f + field::STATUS), libc::TP_STATUS_SEND_REQUEST);
            assert_eq!(get32(m, f + field::LEN), 60 + i as u32);
            assert_eq!(get32(m, f + field::NEXT_OFFSET), 0);
            assert_eq!(
                &m[f + field::HDR_LEN..f + field::HDR_LEN + 60 + i],
                &eth(i as u8, 60 + i)[..]
            );
        }
    });
    // Nothing queued: no kick.
    assert_eq!(e.tx_burst(&mut Vec::new()).unwrap(), 0);
    assert_eq!(sys.log.borrow().kicks, 1);
    assert_eq!(e.stats().tx_packets, 3);
}

#[test]
fn tx_full_ring_leaves_frames_with_the_caller_and_reuses_sent_frames() {
    let (mut e, _) = engine();
    let frames = 6; // 2 blocks of 3 frames (8192 / 2112)
    let mut pkts: Vec<PacketBuf> = (0..8).map(|i| PacketBuf::from_slice(&eth(i, 60))).collect();
    assert_eq!(e.tx_burst(&mut pkts).unwrap(), frames);
    assert_eq!(pkts.len(), 2);
    assert_eq!(pkts[0].bytes()[0], 6);
    assert_eq!(e.tx_burst(&mut pkts).unwrap(), 0);
    // The kernel sends frame 0 (second block starts at 8192, not 3 * 2112).
    let tx0 = RX_BLOCK * RX_BLOCKS;
    with_mem(&e, |m| {
        assert_eq!(
            get32(m, tx0 + TX_BLOCK + field::STATUS),
            libc::TP_STATUS_SEND_REQUEST
        );
        put32(m, tx0 + field::STATUS, libc::TP_STATUS_AVAILABLE);
    });
    assert_eq!(e.tx_burst(&mut pkts).unwrap(), 1);
    assert_eq!(pkts.len(), 1);
    with_mem(&e, |m| assert_eq!(m[tx0 + field::HDR_LEN], 6));
}

#[test]
fn tx_drops_frames_that_do_not_fit() {
    let (mut e, _) = engine();
    let mut huge = PacketBuf::new();
    assert!(huge.set_len(MAX_FRAME));
    let mut pkts = vec![PacketBuf::new(), huge, PacketBuf::from_slice(&eth(1, 60))];
    // MAX_FRAME fits the default frame size: only the empty frame is bad.
    assert_eq!(e.tx_burst(&mut pkts).unwrap(), 2);
    assert!(pkts.is_empty());
    assert_eq!(e.stats().tx_bad_len, 1);
}

#[test]
fn pool_alloc_and_free_stay_bounded() {
    let (mut e, _) = engine();
    let bufs: Vec<_> = std::iter::from_fn(|| e.pool.pop()).collect();
    assert_eq!(bufs.len(), 8);
    for b in bufs {
        e.free(b);
    }
    e.free(PacketBuf::new());
    assert_eq!(e.pool.len(), 8);
    assert_eq!(e.pool.capacity(), 8);
}

proptest::proptest! {
    /// Arbitrary bytes in a block handed to user space never panic and the
    /// block always goes back to the kernel.
    #[test]
    fn rx_arbitrary_block_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, RX_BLOCK)) {
        let (mut e, _) = engine();
        with_mem(&e, |m| {
            m[..RX_BLOCK].copy_from_slice(&bytes);
            put32(m, field::BLOCK_STATUS, libc::TP_STATUS_USER);
            let n = get32(m, field::BLOCK_NUM_PKTS) % 64;
            put32(m, field::BLOCK_NUM_PKTS, n);
        });
        let mut out = Vec::new();
        for _ in 0..100 {
            e.rx_burst(&mut out, 32);
            for b in out.drain(..) {
                e.free(b);
            }
            if block_status(&e, 0) == libc::TP_STATUS_KERNEL {
                break;
            }
        }
        proptest::prop_assert_eq!(block_status(&e, 0), libc::TP_STATUS_KERNEL);
    }
}
