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
