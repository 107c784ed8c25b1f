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
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, PcapError, TsResolution};

use crate::dataplane::frame::{FrameBuf, PacketBuf, MAX_FRAME};
use crate::io::Port;

mod input;

use input::Capture;

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
mod tests;
