//! Zero-copy views over packet headers.
//!
//! Every header is a `Packet<T: AsRef<[u8]>>`-style view with `new_checked`
//! that validates lengths once; after that no accessor can panic. Nothing on
//! the fast path copies a header.

pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;

/// Why a buffer is not a valid header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The buffer is shorter than the header (or than a length field says).
    #[error("truncated header")]
    Truncated,
    /// A field holds a value that makes the header unusable (bad version,
    /// IHL below 5, length fields that contradict each other).
    #[error("malformed header")]
    Malformed,
}

/// Result of parsing a header view.
pub type Result<T> = core::result::Result<T, Error>;

// Big-endian field access shared by the views. Each caller passes a slice cut
// with one of its `field` ranges, whose length is exactly the width read, and
// `new_checked` has already proved the range lies inside the buffer.

fn read_u16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

fn read_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn write_u16(bytes: &mut [u8], value: u16) {
    bytes.copy_from_slice(&value.to_be_bytes());
}

fn write_u32(bytes: &mut [u8], value: u32) {
    bytes.copy_from_slice(&value.to_be_bytes());
}
