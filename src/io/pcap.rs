//! The capture-file port: `cutover replay` runs the real data path with a
//! pcap file as its NIC.
//!
//! One [`PcapPort`] reads frames from an input capture (its receive side)
//! and writes what the pipeline forwards to an output capture (its transmit
//! side), so the worker loop drives it exactly as it drives a NIC. Each
//! frame keeps the time it was captured, and the port exposes the time of
//! the last frame read so that replay can use capture time as the
//! pipeline's `now`: idle timeouts and drain timers then behave as they did
//! on the wire, however fast the file is read.
//!
//! Input is classic pcap (micro- or nanosecond, either byte order) or pcapng,
//! Ethernet link type only, since the pipeline parses from the Ethernet
//! header. Output is classic pcap, Ethernet, snaplen 65535, microsecond
//! timestamps (the format every tool reads). [`read_pcap`] and
//! [`write_pcap`] load and store whole captures for tests and tools; they are
//! not for the fast path.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::{DataLink, Endianness, PcapError, TsResolution};

use crate::dataplane::frame::{FrameBuf, PacketBuf, MAX_FRAME};
use crate::io::Port;

/// Snaplen of the captures this module writes: the classic maximum, far
/// above [`MAX_FRAME`], so no frame the pipeline emits is ever cut.
pub const SNAPLEN: u32 = 65535;

/// What went wrong opening, reading or writing a capture. Every message
/// names the file, and for a bad record, the packet.
///
/// The port's `rx_burst`/`tx_burst` return [`io::Error`] (the [`Port`]
/// contract); they carry this type inside, with kind `InvalidData` for a bad
/// capture.
#[derive(Debug, thiserror::Error)]
pub enum PcapPortError {
    /// The file could not be opened, read or written.
    #[error("{}: {error}", path.display())]
    Io {
        /// The capture file.
        path: PathBuf,
        /// The operating system's error.
        error: io::Error,
    },
    /// The file is not a capture, or a record in it is malformed.
    #[error("{}: {detail}", path.display())]
    Format {
        /// The capture file.
        path: PathBuf,
        /// What is wrong, and where in the file.
        detail: String,
    },
    /// The capture's link layer is not Ethernet.
    #[error(
        "{}: link type {linktype} is not supported; cutover reads Ethernet captures (link type 1)",
        path.display()
    )]
    LinkType {
        /// The capture file.
        path: PathBuf,
        /// The link type found, by name and number (`RAW (101)`).
        linktype: String,
    },
}

impl From<PcapPortError> for io::Error {
    fn from(err: PcapPortError) -> Self {
        let kind = match &err {
            PcapPortError::Io { error, .. } => error.kind(),
            PcapPortError::Format { .. } | PcapPortError::LinkType { .. } => {
                io::ErrorKind::InvalidData
            }
        };
        io::Error::new(kind, err)
    }
}

/// A [`Port`] over capture files: receives from an input capture, sends to
/// an output capture. Either side may be absent.
///
/// One struct rather than a reader and a writer, because a worker drives a
/// single port and replay needs both directions on it; and because the
/// transmit side stamps each frame with the capture time of the receive
/// side (see [`set_timestamp`](Self::set_timestamp)).
///
/// Buffers come from a pool preallocated at [`open`](Self::open) and return
/// to it through `tx_burst` (once written) and `free`, so a replay loop that
/// hands every buffer back reads the whole file without allocating per
/// packet. If the caller holds on to buffers until the pool is empty,
/// `rx_burst` allocates rather than stalling: a stalled file reader would
/// look like an idle link forever.
#[derive(Debug)]
pub struct PcapPort {
    input: Option<Capture>,
    output: Option<Output>,
    pool: Vec<PacketBuf>,
    eof: bool,
    /// An error met after some frames of a burst were read; returned by the
    /// next `rx_burst` so that those frames are not lost.
    pending_error: Option<PcapPortError>,
    last_timestamp: Duration,
    tx_timestamp: Duration,
    oversized: u64,
    truncated: u64,
}

impl PcapPort {
    /// Opens `input` for reading (classic pcap or pcapng, Ethernet) and
    /// creates or truncates `output` for writing, with `pool_size` buffers.
    ///
    /// Fails when the input cannot be read, is not a capture, or has
    /// another link type than Ethernet (for pcapng, the first interface is
    /// checked here, later ones when they are reached).
    pub fn open(
        input: Option<&Path>,
        output: Option<&Path>,
        pool_size: usize,
    ) -> Result<Self, PcapPortError> {
        let input = input.map(Capture::open).transpose()?;
        let output = output.map(Output::create).transpose()?;
        Ok(PcapPort {
            input,
            output,
            pool: (0..pool_size).map(|_| PacketBuf::new()).collect(),
            eof: false,
            pending_error: None,
            last_timestamp: Duration::ZERO,
            tx_timestamp: Duration::ZERO,
            oversized: 0,
            truncated: 0,
        })
    }

    /// True once the input has been read to its end (or when there is no
    /// input): `rx_burst` will return 0 from now on, so replay can stop.
    pub fn is_eof(&self) -> bool {
        self.input.is_none() || (self.eof && self.pending_error.is_none())
    }

    /// Capture time of the last frame read (zero before the first): the
    /// `now` replay gives the pipeline for the burst it just read.
    pub fn last_timestamp(&self) -> Duration {
        self.last_timestamp
    }

    /// Sets the timestamp written with the frames sent from now on.
    ///
    /// Transmitted frames carry the time most recently given here or, if a
    /// frame was read since, that frame's capture time; so a replay that
    /// never calls this writes each answer with the time of the burst it
    /// answers, and a generator without input sets the time itself.
    pub fn set_timestamp(&mut self, timestamp: Duration) {
        self.tx_timestamp = timestamp;
    }

    /// Input frames skipped because they are longer than [`MAX_FRAME`].
    ///
    /// They are skipped rather than cut to size: a cut frame would carry an
    /// IP length its bytes do not back, and forwarding part of a packet is
    /// worse than dropping it. Replay reports this count next to the drops.
    pub fn oversized(&self) -> u64 {
        self.oversized
    }

    /// Input frames delivered although the capture holds only their first
    /// bytes (a snaplen below the frame's length on the wire). They are
    /// passed on as captured for the pipeline to judge, which drops a frame
    /// shorter than its IP header says as malformed. A large count means
    /// the capture was taken with a `tcpdump -s` too small for replay.
    pub fn truncated(&self) -> u64 {
        self.truncated
    }

    /// Flushes the output and closes it; `tx_burst` fails afterwards.
    /// Call it at the end of a replay: dropping the port also flushes, but
    /// cannot report a write error.
    pub fn finish(&mut self) -> io::Result<()> {
        match self.output.take() {
            Some(output) => output.finish(),
            None => Ok(()),
        }
    }
}

impl Port for PcapPort {
    type Buf = PacketBuf;

    fn rx_burst(&mut self, out: &mut Vec<PacketBuf>, max: usize) -> io::Result<usize> {
        if let Some(err) = self.pending_error.take() {
            return Err(err.into());
        }
        let Some(input) = self.input.as_mut() else {
            return Ok(0);
        };
        let mut n = 0;
        while n < max && !self.eof {
            let mut buf = self.pool.pop().unwrap_or_default();
            let read = input.next(|pkt| {
                if pkt.data.len() > MAX_FRAME {
                    return None;
                }
                buf.load(pkt.data);
                Some((pkt.timestamp, pkt.truncated))
            });
            match read {
                Ok(Some(Some((timestamp, truncated)))) => {
                    out.push(buf);
                    n += 1;
                    self.last_timestamp = timestamp;
                    self.tx_timestamp = timestamp;
                    self.truncated += u64::from(truncated);
                }
                Ok(Some(None)) => {
                    self.pool.push(buf);
                    self.oversized += 1;
                }
                Ok(None) => {
                    self.pool.push(buf);
                    self.eof = true;
                }
                Err(err) => {
                    self.pool.push(buf);
                    // The file cannot be read past a bad record.
                    self.eof = true;
                    if n == 0 {
                        return Err(err.into());
                    }
                    self.pending_error = Some(err);
                }
            }
        }
        Ok(n)
    }

    fn tx_burst(&mut self, pkts: &mut Vec<PacketBuf>) -> io::Result<usize> {
        let Some(output) = self.output.as_mut() else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "pcap port has no output file (not given, or closed by finish)",
            ));
        };
        let mut sent = 0;
        let mut result = Ok(());
        for buf in pkts.iter() {
            if let Err(err) = output.write(self.tx_timestamp, buf.bytes()) {
                result = Err(err.into());
                break;
            }
            sent += 1;
        }
        self.pool.extend(pkts.drain(..sent));
        result.map(|()| sent)
    }

    fn free(&mut self, buf: PacketBuf) {
        self.pool.push(buf);
    }

    fn alloc(&mut self) -> Option<PacketBuf> {
        let mut buf = self.pool.pop()?;
        // Recycled buffers may have been trimmed or grown at the front.
        buf.load(&[]);
        Some(buf)
    }
}

/// Writes `frames` to a new classic pcap file at `path` (Ethernet, snaplen
/// [`SNAPLEN`], microsecond timestamps), each with its timestamp.
///
/// For tests and tools that build captures; frames may be longer than
/// [`MAX_FRAME`] (up to [`SNAPLEN`]) so that tests can make oversized input.
pub fn write_pcap(path: impl AsRef<Path>, frames: &[(Duration, Vec<u8>)]) -> io::Result<()> {
    let mut output = Output::create(path.as_ref())?;
    for (timestamp, frame) in frames {
        output.write(*timestamp, frame)?;
    }
    output.finish()
}

/// Reads every frame of the capture at `path` (classic pcap or pcapng,
/// Ethernet) with its capture time, whatever its size.
///
/// For tests and tools; it loads the whole file into memory.
pub fn read_pcap(path: impl AsRef<Path>) -> io::Result<Vec<(Duration, Vec<u8>)>> {
    let mut capture = Capture::open(path.as_ref())?;
    let mut frames = Vec::new();
    while let Some(frame) = capture.next(|pkt| (pkt.timestamp, pkt.data.to_vec()))? {
        frames.push(frame);
    }
    Ok(frames)
}

/// One frame as the input file holds it.
struct Packet<'a> {
    timestamp: Duration,
    data: &'a [u8],
    /// The capture holds fewer bytes than the frame had on the wire.
    truncated: bool,
}

/// The receive side: an open input capture of either format.
struct Capture {
    path: PathBuf,
    format: Format,
    /// Frames returned so far; names the record in error messages.
    count: u64,
    /// Time of the last frame, for pcapng simple packet blocks (which have
    /// none of their own).
    last: Duration,
}

// The readers of pcap-file implement no `Debug` for pcapng; the path says
// which capture this is, which is what a debug print needs.
impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("path", &self.path)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

enum Format {
    Pcap {
        reader: PcapReader<File>,
        resolution: TsResolution,
    },
    PcapNg {
        reader: PcapNgReader<File>,
        /// Timestamp units of each interface of the current section, by
        /// interface id.
        interfaces: Vec<Clock>,
    },
}

/// File magics, as the first four bytes read big-endian.
const PCAPNG_MAGIC: u32 = 0x0A0D_0D0A;
const PCAP_MAGICS: [u32; 4] = [0xA1B2_C3D4, 0xD4C3_B2A1, 0xA1B2_3C4D, 0x4D3C_B2A1];

impl Capture {
    fn open(path: &Path) -> Result<Self, PcapPortError> {
        let io_err = |error| PcapPortError::Io {
            path: path.to_owned(),
            error,
        };
        let mut file = File::open(path).map_err(io_err)?;
        let mut magic = [0u8; 4];
        match file.read_exact(&mut magic) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(format_err(path, "file is too short to be a capture"));
            }
            Err(e) => return Err(io_err(e)),
        }
        file.rewind().map_err(io_err)?;

        let magic = u32::from_be_bytes(magic);
        let format = if magic == PCAPNG_MAGIC {
            let reader =
                PcapNgReader::new(file).map_err(|e| pcap_err(path, "section header", e))?;
            Format::PcapNg {
                reader,
                interfaces: Vec::new(),
            }
        } else if PCAP_MAGICS.contains(&magic) {
            let reader = PcapReader::new(file).map_err(|e| pcap_err(path, "file header", e))?;
            let header = reader.header();
            check_linktype(path, header.datalink)?;
            Format::Pcap {
                reader,
                resolution: header.ts_resolution,
            }
        } else {
            return Err(format_err(
                path,
                &format!("not a pcap or pcapng capture (magic {magic:#010x})"),
            ));
        };
        let mut capture = Capture {
            path: path.to_owned(),
            format,
            count: 0,
            last: Duration::ZERO,
        };
        capture.check_first_interface()?;
        Ok(capture)
    }

    /// Reads a pcapng file up to its first interface description, so that a
    /// non-Ethernet capture is refused at open, not at the first burst. No
    /// packet can precede it (packets name their interface).
    fn check_first_interface(&mut self) -> Result<(), PcapPortError> {
        let Format::PcapNg { reader, interfaces } = &mut self.format else {
            return Ok(());
        };
        while interfaces.is_empty() {
            let Some(block) = reader.next_block() else {
                return Ok(());
            };
            match block.map_err(|e| pcap_err(&self.path, "first block", e))? {
                Block::InterfaceDescription(idb) => {
                    check_linktype(&self.path, idb.linktype)?;
                    interfaces.push(Clock::of(&idb));
                }
                Block::EnhancedPacket(_) | Block::SimplePacket(_) | Block::Packet(_) => {
                    return Err(format_err(
                        &self.path,
                        "packet before any interface description",
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads the next frame and hands it to `f` while it is still borrowed
    /// from the reader's buffer (no copy besides the one `f` makes).
    /// `Ok(None)` at the end of the file.
    fn next<T>(&mut self, f: impl FnOnce(Packet<'_>) -> T) -> Result<Option<T>, PcapPortError> {
        let Capture {
            path,
            format,
            count,
            last,
        } = self;
        let number = *count + 1;
        let packet = match format {
            Format::Pcap { reader, resolution } => {
                let Some(raw) = reader.next_raw_packet() else {
                    return Ok(None);
                };
                let raw = raw.map_err(|e| pcap_err(path, &format!("packet {number}"), e))?;
                // The raw record, checked here rather than by pcap-file,
                // which refuses any capture whose snaplen is below the
                // frames' length on the wire.
                let nanos = match resolution {
                    TsResolution::MicroSecond => raw.ts_frac.checked_mul(1000),
                    TsResolution::NanoSecond => Some(raw.ts_frac),
                }
                .filter(|n| *n < 1_000_000_000)
                .ok_or_else(|| {
                    format_err(
                        path,
                        &format!(
                            "packet {number}: timestamp fraction {} out of range",
                            raw.ts_frac
                        ),
                    )
                })?;
                let timestamp = Duration::new(u64::from(raw.ts_sec), nanos);
                let truncated = u64::from(raw.orig_len) > raw.data.len() as u64;
                let value = f(Packet {
                    timestamp,
                    data: &raw.data,
                    truncated,
                });
                (timestamp, value)
            }
            Format::PcapNg { reader, interfaces } => loop {
                let context = || format!("block after packet {}", number - 1);
                let Some(block) = reader.next_block() else {
                    return Ok(None);
                };
                let (interface, units, orig_len, data, len) =
                    match block.map_err(|e| pcap_err(path, &context(), e))? {
                        Block::SectionHeader(_) => {
                            interfaces.clear();
                            continue;
                        }
                        Block::InterfaceDescription(idb) => {
                            check_linktype(path, idb.linktype)?;
                            interfaces.push(Clock::of(&idb));
                            continue;
                        }
                        // pcap-file reads the raw timestamp units as
                        // nanoseconds; `Clock` applies the real unit.
                        Block::EnhancedPacket(epb) => {
                            let len = epb.data.len();
                            (
                                epb.interface_id,
                                Some(epb.timestamp.as_nanos()),
                                epb.original_len,
                                epb.data,
                                len,
                            )
                        }
                        Block::Packet(pb) => {
                            let len = pb.data.len();
                            (
                                u32::from(pb.interface_id),
                                Some(u128::from(pb.timestamp)),
                                pb.original_len,
                                pb.data,
                                len,
                            )
                        }
                        // A simple packet block's data runs to the end of
                        // the block, padding included; its original length
                        // says where the frame ends.
                        Block::SimplePacket(spb) => {
                            let len = usize::try_from(spb.original_len)
                                .map_or(spb.data.len(), |n| n.min(spb.data.len()));
                            (0, None, spb.original_len, spb.data, len)
                        }
                        _ => continue,
                    };
                let Some(clock) = usize::try_from(interface)
                    .ok()
                    .and_then(|i| interfaces.get(i))
                else {
                    return Err(format_err(
                        path,
                        &format!("packet {number}: unknown interface {interface}"),
                    ));
                };
                let timestamp = units.map_or(*last, |units| clock.timestamp(units));
                let truncated = u64::from(orig_len) > len as u64;
                let value = f(Packet {
                    timestamp,
                    data: &data[..len],
                    truncated,
                });
                break (timestamp, value);
            },
        };
        *count = number;
        *last = packet.0;
        Ok(Some(packet.1))
    }
}

/// Timestamp units of one pcapng interface (`if_tsresol`, `if_tsoffset`).
struct Clock {
    resolution: u8,
    offset_secs: i64,
}

impl Clock {
    fn of(idb: &InterfaceDescriptionBlock<'_>) -> Self {
        // Microseconds unless the interface says otherwise (pcapng spec).
        let mut clock = Clock {
            resolution: 6,
            offset_secs: 0,
        };
        for option in &idb.options {
            match option {
                InterfaceDescriptionOption::IfTsResol(r) => clock.resolution = *r,
                // The field is signed in the spec; pcap-file reads it as u64.
                InterfaceDescriptionOption::IfTsOffset(o) => {
                    clock.offset_secs = i64::from_ne_bytes(o.to_ne_bytes());
                }
                _ => {}
            }
        }
        clock
    }

    /// The time of a packet stamped `units` ticks of this interface's clock.
    fn timestamp(&self, units: u128) -> Duration {
        let exponent = u32::from(self.resolution & 0x7f);
        let nanos = if self.resolution & 0x80 == 0 {
            // Ticks of 10^-exponent seconds.
            if exponent <= 9 {
                10u128
                    .checked_pow(9 - exponent)
                    .and_then(|m| units.checked_mul(m))
            } else {
                Some(10u128.checked_pow(exponent - 9).map_or(0, |d| units / d))
            }
        } else {
            // Ticks of 2^-exponent seconds.
            units
                .checked_mul(1_000_000_000)
                .map(|n| n.checked_shr(exponent).unwrap_or(0))
        };
        let nanos = nanos.unwrap_or(u128::MAX);
        let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
        let subsec = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
        let secs = secs.saturating_add_signed(self.offset_secs);
        Duration::new(secs, subsec)
    }
}

/// Bytes buffered before a write to the output file: a few hundred frames,
/// so replay makes one system call per several bursts, not per frame.
const WRITE_BUFFER: usize = 1 << 20;

/// The transmit side: a classic pcap file being written.
struct Output {
    path: PathBuf,
    writer: PcapWriter<BufWriter<File>>,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Output {
    fn create(path: &Path) -> Result<Self, PcapPortError> {
        let file = File::create(path).map_err(|error| PcapPortError::Io {
            path: path.to_owned(),
            error,
        })?;
        let header = PcapHeader {
            snaplen: SNAPLEN,
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::MicroSecond,
            endianness: Endianness::native(),
            ..PcapHeader::default()
        };
        let writer = PcapWriter::with_header(BufWriter::with_capacity(WRITE_BUFFER, file), header)
            .map_err(|e| pcap_err(path, "file header", e))?;
        Ok(Output {
            path: path.to_owned(),
            writer,
        })
    }

    fn write(&mut self, timestamp: Duration, frame: &[u8]) -> Result<(), PcapPortError> {
        let len = u32::try_from(frame.len())
            .ok()
            .filter(|n| *n <= SNAPLEN)
            .ok_or_else(|| {
                format_err(
                    &self.path,
                    &format!("frame of {} bytes exceeds snaplen {SNAPLEN}", frame.len()),
                )
            })?;
        self.writer
            .write_packet(&PcapPacket::new(timestamp, len, frame))
            .map_err(|e| pcap_err(&self.path, "writing a packet", e))?;
        Ok(())
    }

    fn finish(self) -> io::Result<()> {
        let path = self.path;
        self.writer
            .into_writer()
            .into_inner()
            .map_err(|e| PcapPortError::Io {
                path,
                error: e.into_error(),
            })?;
        Ok(())
    }
}

fn check_linktype(path: &Path, linktype: DataLink) -> Result<(), PcapPortError> {
    if linktype == DataLink::ETHERNET {
        return Ok(());
    }
    Err(PcapPortError::LinkType {
        path: path.to_owned(),
        linktype: format!("{linktype:?} ({})", u32::from(linktype)),
    })
}

fn format_err(path: &Path, detail: &str) -> PcapPortError {
    PcapPortError::Format {
        path: path.to_owned(),
        detail: detail.to_owned(),
    }
}

/// Names the record (`context`) in pcap-file's errors, whose own messages
/// say what but not where, and unwraps its I/O errors.
fn pcap_err(path: &Path, context: &str, err: PcapError) -> PcapPortError {
    match err {
        PcapError::IoError(e) if e.kind() == io::ErrorKind::UnexpectedEof => format_err(
            path,
            &format!("{context}: the file ends in the middle of the record"),
        ),
        PcapError::IoError(error) => PcapPortError::Io {
            path: path.to_owned(),
            error,
        },
        other => format_err(path, &format!("{context}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
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
        let frames: Vec<(Duration, Vec<u8>)> =
            (0..10).map(|i| (time(i * 997), frame(i, 64))).collect();
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
}
