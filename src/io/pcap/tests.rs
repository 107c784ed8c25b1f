//! Captures written and read back in every format the port accepts, and
//! the errors that name the file and the packet.

use std::borrow::Cow;

use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;

use super::*;

/// A frame whose bytes say which frame it is, so that a reordering or
/// a mix-up between frames shows.
fn frame(i: usize, len: usize) -> Vec<u8> {
    let tag = i.to_le_bytes();
    (0..len)
        .map(|j| tag[0].wrapping_mul(31).wrapping_add(j.to_le_bytes()[0]))
        .collect()
}

/// Microsecond-aligned, so they survive the microsecond output format.
fn time(i: usize) -> Duration {
    Duration::from_secs(1_700_000_000) + Duration::from_micros(1_000 * i as u64 + 7)
}

fn write_with_port(path: &Path, frames: &[(Duration, Vec<u8>)]) {
    let mut port = PcapPort::open(None, Some(path), 8).unwrap();
    for (ts, bytes) in frames {
        let mut buf = port.alloc().unwrap();
        assert!(buf.set_len(bytes.len()));
        buf.bytes_mut().copy_from_slice(bytes);
        port.set_timestamp(*ts);
        let mut burst = vec![buf];
        assert_eq!(port.tx_burst(&mut burst).unwrap(), 1);
    }
    port.finish().unwrap();
}

#[test]
fn reads_back_what_the_writer_wrote_in_bursts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.pcap");
    let frames: Vec<(Duration, Vec<u8>)> =
        (0..100).map(|i| (time(i), frame(i, 60 + i * 14))).collect();
    write_with_port(&path, &frames);

    let mut port = PcapPort::open(Some(&path), None, 64).unwrap();
    assert_eq!(port.last_timestamp(), Duration::ZERO);
    let mut burst = Vec::with_capacity(32);
    let mut sizes = Vec::new();
    let mut seen = 0;
    loop {
        let n = port.rx_burst(&mut burst, 32).unwrap();
        sizes.push(n);
        assert_eq!(n, burst.len());
        for buf in burst.drain(..) {
            assert_eq!(buf.bytes(), &frames[seen].1[..], "frame {seen}");
            seen += 1;
            port.free(buf);
        }
        if n == 0 {
            break;
        }
        assert_eq!(port.last_timestamp(), frames[seen - 1].0);
    }
    assert_eq!(sizes, [32, 32, 32, 4, 0]);
    assert!(port.is_eof());
    assert_eq!(port.rx_burst(&mut burst, 32).unwrap(), 0);
    assert_eq!((port.oversized(), port.truncated()), (0, 0));
    // Every buffer came back: the pool never had to grow past 64.
    assert_eq!(port.pool.len(), 64);
}

#[test]
fn timestamps_survive_write_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.pcap");
    let frames: Vec<(Duration, Vec<u8>)> = (0..10).map(|i| (time(i * 997), frame(i, 64))).collect();
    write_pcap(&path, &frames).unwrap();
    assert_eq!(read_pcap(&path).unwrap(), frames);
}

#[test]
fn nanosecond_captures_keep_nanoseconds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.pcap");
    let header = PcapHeader {
        ts_resolution: TsResolution::NanoSecond,
        endianness: Endianness::Big,
        ..PcapHeader::default()
    };
    let mut writer = PcapWriter::with_header(File::create(&path).unwrap(), header).unwrap();
    let ts = Duration::new(1_700_000_000, 123_456_789);
    let data = frame(1, 60);
    writer
        .write_packet(&PcapPacket::new(ts, 60, &data))
        .unwrap();
    drop(writer);

    let mut port = PcapPort::open(Some(&path), None, 4).unwrap();
    let mut burst = Vec::new();
    assert_eq!(port.rx_burst(&mut burst, 32).unwrap(), 1);
    assert_eq!(port.last_timestamp(), ts);
    assert_eq!(burst[0].bytes(), &data[..]);
}

#[test]
fn replay_stamps_answers_with_the_time_of_their_burst() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.pcap");
    let output = dir.path().join("out.pcap");
    let frames: Vec<(Duration, Vec<u8>)> = (0..5).map(|i| (time(i), frame(i, 80))).collect();
    write_pcap(&input, &frames).unwrap();

    let mut port = PcapPort::open(Some(&input), Some(&output), 8).unwrap();
    let mut burst = Vec::new();
    // Two bursts: frames 0-2 answered at time(2), frames 3-4 at time(4).
    port.rx_burst(&mut burst, 3).unwrap();
    assert_eq!(port.tx_burst(&mut burst).unwrap(), 3);
    port.rx_burst(&mut burst, 3).unwrap();
    // A caller-set time overrides the capture time...
    port.set_timestamp(time(50));
    let last = burst.pop().unwrap();
    assert_eq!(port.tx_burst(&mut burst).unwrap(), 1);
    // ...until the next frame is read.
    port.set_timestamp(time(4));
    burst.push(last);
    port.tx_burst(&mut burst).unwrap();
    port.finish().unwrap();
    assert!(port.tx_burst(&mut vec![PacketBuf::new()]).is_err());

    let written = read_pcap(&output).unwrap();
    let stamps: Vec<Duration> = written.iter().map(|(ts, _)| *ts).collect();
    assert_eq!(stamps, [time(2), time(2), time(2), time(50), time(4)]);
    let bytes: Vec<Vec<u8>> = written.into_iter().map(|(_, b)| b).collect();
    let expected: Vec<Vec<u8>> = frames.into_iter().map(|(_, b)| b).collect();
    assert_eq!(bytes, expected);
    assert_eq!(port.pool.len(), 8);
}

#[test]
fn refuses_a_capture_that_is_not_ethernet() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raw.pcap");
    let header = PcapHeader {
        datalink: DataLink::RAW,
        ..PcapHeader::default()
    };
    let mut writer = PcapWriter::with_header(File::create(&path).unwrap(), header).unwrap();
    writer
        .write_packet(&PcapPacket::new(Duration::ZERO, 20, &[0x45; 20]))
        .unwrap();
    drop(writer);

    let err = PcapPort::open(Some(&path), None, 4).unwrap_err();
    assert!(matches!(err, PcapPortError::LinkType { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("raw.pcap"), "{msg}");
    assert!(
        msg.contains("link type RAW (101) is not supported"),
        "{msg}"
    );

    let err = read_pcap(&path).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("Ethernet"), "{err}");
}

#[test]
fn refuses_a_pcapng_capture_that_is_not_ethernet() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raw.pcapng");
    let mut writer = PcapNgWriter::new(File::create(&path).unwrap()).unwrap();
    writer
        .write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::RAW, 0))
        .unwrap();
    drop(writer);

    let err = PcapPort::open(Some(&path), None, 4).unwrap_err();
    assert!(err.to_string().contains("link type RAW (101)"), "{err}");
}

#[test]
fn reads_pcapng_with_its_timestamp_units() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.pcapng");
    let mut writer = PcapNgWriter::new(File::create(&path).unwrap()).unwrap();
    // Interface 0: default unit, microseconds. Interface 1: nanoseconds.
    writer
        .write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0))
        .unwrap();
    let mut ns = InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0);
    ns.options.push(InterfaceDescriptionOption::IfTsResol(9));
    writer.write_pcapng_block(ns).unwrap();
    let a = frame(1, 61);
    let b = frame(2, 99);
    for (interface_id, units, data) in [(0, 1_500_000, &a), (1, 2_000_000_123, &b)] {
        // pcap-file writes the Duration's nanoseconds as the raw units.
        writer
            .write_pcapng_block(EnhancedPacketBlock {
                interface_id,
                timestamp: Duration::from_nanos(units),
                original_len: u32::try_from(data.len()).unwrap(),
                data: Cow::Borrowed(data),
                options: vec![],
            })
            .unwrap();
    }
    drop(writer);

    let got = read_pcap(&path).unwrap();
    assert_eq!(
        got,
        [
            (Duration::from_millis(1_500), a),
            (Duration::new(2, 123), b)
        ]
    );
}

#[test]
fn pcapng_simple_packets_lose_their_padding() {
    use pcap_file::pcapng::blocks::simple_packet::SimplePacketBlock;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spb.pcapng");
    let mut writer = PcapNgWriter::new(File::create(&path).unwrap()).unwrap();
    writer
        .write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0))
        .unwrap();
    let data = frame(3, 61);
    writer
        .write_pcapng_block(SimplePacketBlock {
            original_len: 61,
            data: Cow::Borrowed(&data),
        })
        .unwrap();
    drop(writer);

    assert_eq!(read_pcap(&path).unwrap(), [(Duration::ZERO, data)]);
}

#[test]
fn oversized_frames_are_counted_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.pcap");
    let frames = vec![
        (time(0), frame(0, 60)),
        (time(1), frame(1, MAX_FRAME + 1)),
        (time(2), frame(2, 9000)),
        (time(3), frame(3, MAX_FRAME)),
    ];
    write_pcap(&path, &frames).unwrap();

    let mut port = PcapPort::open(Some(&path), None, 4).unwrap();
    let mut burst = Vec::new();
    assert_eq!(port.rx_burst(&mut burst, 32).unwrap(), 2);
    assert_eq!(burst[0].bytes(), &frames[0].1[..]);
    assert_eq!(burst[1].bytes(), &frames[3].1[..]);
    assert_eq!(port.oversized(), 2);
    assert!(port.is_eof());
    // The convenience reader keeps everything.
    assert_eq!(read_pcap(&path).unwrap().len(), 4);
}

#[test]
fn short_snaplen_frames_are_delivered_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap.pcap");
    let header = PcapHeader {
        snaplen: 64,
        ..PcapHeader::default()
    };
    let mut writer = PcapWriter::with_header(File::create(&path).unwrap(), header).unwrap();
    let data = frame(5, 64);
    writer
        .write_packet(&PcapPacket::new(time(0), 1500, &data))
        .unwrap();
    drop(writer);

    let mut port = PcapPort::open(Some(&path), None, 4).unwrap();
    let mut burst = Vec::new();
    assert_eq!(port.rx_burst(&mut burst, 32).unwrap(), 1);
    assert_eq!(burst[0].bytes(), &data[..]);
    assert_eq!(port.truncated(), 1);
}

#[test]
fn a_capture_cut_mid_record_yields_its_frames_then_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.pcap");
    let frames: Vec<(Duration, Vec<u8>)> = (0..3).map(|i| (time(i), frame(i, 100))).collect();
    write_pcap(&path, &frames).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 10)
        .unwrap();

    let mut port = PcapPort::open(Some(&path), None, 4).unwrap();
    let mut burst = Vec::new();
    assert_eq!(port.rx_burst(&mut burst, 32).unwrap(), 2);
    assert!(!port.is_eof());
    let err = port.rx_burst(&mut burst, 32).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    let msg = err.to_string();
    assert!(msg.contains("cut.pcap: packet 3: the file ends"), "{msg}");
    assert!(port.is_eof());
    assert_eq!(port.rx_burst(&mut burst, 32).unwrap(), 0);
}

#[test]
fn refuses_files_that_are_not_captures() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, b"hello, world\n").unwrap();
    let err = PcapPort::open(Some(&path), None, 4).unwrap_err();
    assert!(
        err.to_string()
            .contains("notes.txt: not a pcap or pcapng capture"),
        "{err}"
    );
    std::fs::write(&path, b"hi").unwrap();
    assert!(PcapPort::open(Some(&path), None, 4).is_err());
    let missing = dir.path().join("missing.pcap");
    let err = read_pcap(&missing).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(err.to_string().contains("missing.pcap"), "{err}");
}

#[test]
fn a_port_without_output_refuses_to_send() {
    let mut port = PcapPort::open(None, None, 2).unwrap();
    assert!(port.is_eof());
    let mut burst = Vec::new();
    assert_eq!(port.rx_burst(&mut burst, 32).unwrap(), 0);
    let buf = port.alloc().unwrap();
    let mut pkts = vec![buf];
    let err = port.tx_burst(&mut pkts).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Unsupported);
    assert_eq!(pkts.len(), 1);
}

/// A small capture in `format` ("pcap" or "pcapng"), as bytes.
fn capture_bytes(format: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("valid");
    let frames: Vec<(Duration, Vec<u8>)> = (0..4).map(|i| (time(i), frame(i, 60 + i))).collect();
    if format == "pcap" {
        write_with_port(&path, &frames);
    } else {
        let mut writer = PcapNgWriter::new(File::create(&path).unwrap()).unwrap();
        writer
            .write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0))
            .unwrap();
        for (ts, data) in &frames {
            writer
                .write_pcapng_block(EnhancedPacketBlock {
                    interface_id: 0,
                    timestamp: *ts,
                    original_len: u32::try_from(data.len()).unwrap(),
                    data: Cow::Borrowed(data),
                    options: vec![],
                })
                .unwrap();
        }
    }
    std::fs::read(&path).unwrap()
}

/// Reads `bytes` as a capture the way replay does, to its end or its
/// first error. Whatever the bytes, this returns (no panic, no endless
/// loop) and every frame fits a buffer.
fn read_all(bytes: &[u8]) -> Result<usize, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("mangled");
    std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
    let Ok(mut port) = PcapPort::open(Some(&path), None, 8) else {
        return Ok(0);
    };
    let mut frames = 0;
    let mut burst = Vec::new();
    // Each burst reads at least one record (12 bytes at least) or ends.
    for _ in 0..bytes.len() + 2 {
        if port.is_eof() {
            return Ok(frames);
        }
        match port.rx_burst(&mut burst, 8) {
            Ok(_) => {
                for b in burst.drain(..) {
                    if b.len() > MAX_FRAME {
                        return Err(format!("a frame of {} bytes", b.len()));
                    }
                    frames += 1;
                    port.free(b);
                }
            }
            Err(_) => return Ok(frames),
        }
    }
    Err("the capture never ended".into())
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

    #[test]
    fn mangled_captures_end_in_frames_or_an_error(
        pcapng in proptest::bool::ANY,
        edits in proptest::collection::vec((0usize..400, proptest::num::u8::ANY), 0..8),
        cut in 0usize..400,
    ) {
        let mut bytes = capture_bytes(if pcapng { "pcapng" } else { "pcap" });
        for (i, b) in edits {
            if let Some(x) = bytes.get_mut(i) {
                *x = b;
            }
        }
        bytes.truncate(cut);
        let read = read_all(&bytes);
        proptest::prop_assert!(read.is_ok(), "{read:?}");
    }

    #[test]
    fn arbitrary_records_after_a_valid_header_end(
        pcapng in proptest::bool::ANY,
        tail in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
    ) {
        // The file header of a valid capture (pcap: 24 bytes; pcapng: the
        // section header and the interface block), then anything.
        let valid = capture_bytes(if pcapng { "pcapng" } else { "pcap" });
        // (`an_unmangled_capture_reads_whole` checks these lengths.)
        let head = if pcapng { 28 + 20 } else { 24 };
        let mut bytes = valid[..head].to_vec();
        bytes.extend_from_slice(&tail);
        let read = read_all(&bytes);
        proptest::prop_assert!(read.is_ok(), "{read:?}");
    }
}

#[test]
fn an_unmangled_capture_reads_whole() {
    // Guards the properties above: without damage both formats give
    // their four frames.
    assert_eq!(read_all(&capture_bytes("pcap")), Ok(4));
    assert_eq!(read_all(&capture_bytes("pcapng")), Ok(4));
    // And the headers the second property keeps open as captures.
    let dir = tempfile::tempdir().unwrap();
    for (format, head) in [("pcap", 24), ("pcapng", 28 + 20)] {
        let path = dir.path().join(format);
        std::fs::write(&path, &capture_bytes(format)[..head]).unwrap();
        assert!(PcapPort::open(Some(&path), None, 1).is_ok(), "{format}");
    }
}
