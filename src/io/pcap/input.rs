//! The receive side of the capture port: classic pcap (micro- or
//! nanosecond, either byte order) or pcapng, Ethernet only.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::TsResolution;

use super::{check_linktype, format_err, pcap_err, PcapPortError};

/// One frame as the input file holds it.
pub(super) struct Packet<'a> {
    pub(super) timestamp: Duration,
    pub(super) data: &'a [u8],
    /// The capture holds fewer bytes than the frame had on the wire.
    pub(super) truncated: bool,
}

/// The receive side: an open input capture of either format.
pub(super) struct Capture {
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
    pub(super) fn open(path: &Path) -> Result<Self, PcapPortError> {
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
    pub(super) fn check_first_interface(&mut self) -> Result<(), PcapPortError> {
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
    pub(super) fn next<T>(
        &mut self,
        f: impl FnOnce(Packet<'_>) -> T,
    ) -> Result<Option<T>, PcapPortError> {
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
