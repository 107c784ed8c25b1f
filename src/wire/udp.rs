//! UDP datagrams.
//!
//! For UDP services the pipeline reads the ports to build the flow key; the
//! length field bounds the payload so Ethernet padding never reaches the
//! checksum or a backend. Address and port rewrites patch the checksum
//! incrementally, leaving an absent (zero) IPv4 checksum absent.

use super::checksum;
use super::{read_u16, write_u16, Error, Result};

mod field {
    pub(crate) type Field = core::ops::Range<usize>;

    pub(crate) const SRC_PORT: Field = 0..2;
    pub(crate) const DST_PORT: Field = 2..4;
    pub(crate) const LENGTH: Field = 4..6;
    pub(crate) const CHECKSUM: Field = 6..8;
}

/// Length of the header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;

/// A zero-copy view of a UDP datagram.
///
/// Invariant after [`Packet::new_checked`]: `8 <= len() <= buffer.len()`;
/// bytes past `len()` are ignored.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic if it is
    /// shorter than 8 bytes.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking the length field against the header
    /// size and the buffer.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        let len = packet.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let field_len = usize::from(packet.len());
        if field_len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if field_len > len {
            return Err(Error::Truncated);
        }
        Ok(packet)
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::SRC_PORT])
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::DST_PORT])
    }

    /// The length field: header plus payload.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// Checksum as stored; 0 means "not computed" (allowed over IPv4 only).
    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The payload, `8..len()`.
    pub fn payload(&self) -> &[u8] {
        let end = usize::from(self.len());
        self.buffer.as_ref().get(HEADER_LEN..end).unwrap_or(&[])
    }

    /// Whether the checksum over `..len()` is correct given the pseudo-header
    /// sum (protocol 17, length = `len()`). A zero checksum passes: over IPv4
    /// it means "none"; over IPv6 the caller must reject it (RFC 8200 8.1).
    pub fn verify_checksum(&self, pseudo_header: u32) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let end = usize::from(self.len());
        match self.buffer.as_ref().get(..end) {
            Some(datagram) => checksum::fold(pseudo_header + checksum::sum(datagram)) == 0xffff,
            None => false,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source port; the checksum is not updated.
    pub fn set_src_port(&mut self, port: u16) {
        write_u16(&mut self.buffer.as_mut()[field::SRC_PORT], port);
    }

    /// Sets the destination port; the checksum is not updated.
    pub fn set_dst_port(&mut self, port: u16) {
        write_u16(&mut self.buffer.as_mut()[field::DST_PORT], port);
    }

    /// Sets the length field; changes where the payload ends. A value past
    /// the buffer makes [`Packet::payload`] empty, never a panic.
    pub fn set_len(&mut self, len: u16) {
        write_u16(&mut self.buffer.as_mut()[field::LENGTH], len);
    }

    /// Stores a checksum. After an incremental update of a non-zero
    /// checksum, store `0xffff` if the result is 0 (RFC 768).
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    /// Computes the checksum over `..len()`, writing `0xffff` for a computed
    /// zero so it is not mistaken for "none".
    pub fn fill_checksum(&mut self, pseudo_header: u32) {
        self.set_checksum(0);
        let end = usize::from(self.len());
        let sum = match self.buffer.as_ref().get(..end) {
            Some(datagram) => !checksum::fold(pseudo_header + checksum::sum(datagram)),
            None => return,
        };
        self.set_checksum(if sum == 0 { 0xffff } else { sum });
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..end)
            .unwrap_or(&mut [])
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    /// A DNS query for example.com A, 10.0.0.1:53000 -> 10.0.0.53:53.
    static DATAGRAM: [u8; 37] = [
        0xcf, 0x08, 0x00, 0x35, 0x00, 0x25, 0xa0, 0xf5, 0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x03, 0x63,
        0x6f, 0x6d, 0x00, 0x00, 0x01, 0x00, 0x01,
    ];

    fn pseudo() -> u32 {
        checksum::pseudo_header_v4(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 53),
            17,
            37,
        )
    }

    #[test]
    fn test_deconstruct() {
        let p = Packet::new_checked(&DATAGRAM[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (53000, 53));
        assert_eq!(p.len(), 37);
        assert_eq!(p.checksum(), 0xa0f5);
        assert_eq!(p.payload(), &DATAGRAM[8..]);
        assert!(p.verify_checksum(pseudo()));
        assert!(!p.verify_checksum(pseudo() + 1));
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0xa5u8; 37];
        bytes[8..].copy_from_slice(&DATAGRAM[8..]);
        let mut p = Packet::new_unchecked(&mut bytes[..]);
        p.set_src_port(53000);
        p.set_dst_port(53);
        p.set_len(37);
        p.fill_checksum(pseudo());
        assert_eq!(bytes, DATAGRAM);
    }

    #[test]
    fn test_errors_and_padding() {
        let check = |b: &[u8]| Packet::new_checked(b).map(|_| ()).unwrap_err();
        assert_eq!(check(&DATAGRAM[..7]), Error::Truncated);
        assert_eq!(check(&DATAGRAM[..36]), Error::Truncated);
        let mut b = DATAGRAM;
        b[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(check(&b), Error::Malformed);
        b[4..6].copy_from_slice(&8u16.to_be_bytes());
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.payload().is_empty());
    }

    #[test]
    fn test_zero_checksum() {
        let mut bytes = DATAGRAM;
        let mut p = Packet::new_checked(&mut bytes[..]).unwrap();
        p.set_checksum(0);
        assert!(p.verify_checksum(0x1234));
        // A pseudo-header chosen so the computed checksum is zero.
        p.fill_checksum(0);
        let zeroing = u32::from(p.checksum());
        p.fill_checksum(zeroing);
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum(zeroing));
    }

    proptest! {
        #[test]
        fn prop_new_checked_never_panics(
            mut data in proptest::collection::vec(any::<u8>(), 0..200),
            plausible in any::<bool>(),
        ) {
            // Half the cases get a plausible length field.
            if plausible && data.len() >= 6 {
                let room = u16::try_from(data.len() + 1).unwrap();
                let len = u16::from_be_bytes([data[4], data[5]]) % room;
                data[4..6].copy_from_slice(&len.to_be_bytes());
            }
            if let Ok(p) = Packet::new_checked(&data[..]) {
                let _ = (p.src_port(), p.dst_port(), p.checksum(), p.verify_checksum(7));
                prop_assert_eq!(p.payload().len() + HEADER_LEN, usize::from(p.len()));
                let mut copy = data.clone();
                let mut p = Packet::new_checked(&mut copy[..]).unwrap();
                p.fill_checksum(7);
                prop_assert!(p.verify_checksum(7));
                let _ = p.payload_mut();
            }
        }
    }
}
