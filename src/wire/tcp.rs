//! TCP segments.
//!
//! The load balancer never terminates TCP: it reads the ports to build the
//! flow key, the flags to know when a flow starts (SYN) or ends (FIN/RST),
//! and when it translates addresses or ports it patches the checksum with the
//! incremental helpers of [`super::checksum`] rather than summing the segment.

use super::checksum;
use super::{read_u16, read_u32, write_u16, write_u32, Error, Result};

mod field {
    pub(crate) type Field = core::ops::Range<usize>;

    pub(crate) const SRC_PORT: Field = 0..2;
    pub(crate) const DST_PORT: Field = 2..4;
    pub(crate) const SEQ_NUM: Field = 4..8;
    pub(crate) const ACK_NUM: Field = 8..12;
    pub(crate) const FLAGS: Field = 12..14;
    pub(crate) const WIN_SIZE: Field = 14..16;
    pub(crate) const CHECKSUM: Field = 16..18;
    pub(crate) const URGENT: Field = 18..20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = field::URGENT.end;

/// Flag bits in the low 9 bits of the data-offset/flags word.
pub mod flags {
    /// No more data from sender.
    pub const FIN: u16 = 0x001;
    /// Synchronise sequence numbers: the first segment of a connection.
    pub const SYN: u16 = 0x002;
    /// Reset the connection.
    pub const RST: u16 = 0x004;
    /// Push.
    pub const PSH: u16 = 0x008;
    /// The acknowledgement number is valid.
    pub const ACK: u16 = 0x010;
    /// The urgent pointer is valid.
    pub const URG: u16 = 0x020;
    /// ECN echo.
    pub const ECE: u16 = 0x040;
    /// Congestion window reduced.
    pub const CWR: u16 = 0x080;
    /// All flag bits (including the historic NS bit).
    pub const MASK: u16 = 0x1ff;
}

/// A zero-copy view of a TCP segment.
///
/// Invariant after [`Packet::new_checked`]: `20 <= header_len <= buffer.len()`.
/// TCP has no length field, so the buffer must be exactly the segment (the
/// IP payload); the payload is everything after the header.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic if it is
    /// shorter than 20 bytes.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking that the header, options included, fits.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        let len = packet.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if packet.header_len() < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if packet.header_len() > len {
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

    /// Sequence number.
    pub fn seq_number(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::SEQ_NUM])
    }

    /// Acknowledgement number.
    pub fn ack_number(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::ACK_NUM])
    }

    /// Header length in bytes (data offset × 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::FLAGS.start] >> 4) * 4
    }

    /// The flag bits, see [`flags`].
    pub fn flags(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::FLAGS]) & flags::MASK
    }

    /// FIN flag.
    pub fn fin(&self) -> bool {
        self.flags() & flags::FIN != 0
    }

    /// SYN flag.
    pub fn syn(&self) -> bool {
        self.flags() & flags::SYN != 0
    }

    /// RST flag.
    pub fn rst(&self) -> bool {
        self.flags() & flags::RST != 0
    }

    /// PSH flag.
    pub fn psh(&self) -> bool {
        self.flags() & flags::PSH != 0
    }

    /// ACK flag.
    pub fn ack(&self) -> bool {
        self.flags() & flags::ACK != 0
    }

    /// URG flag.
    pub fn urg(&self) -> bool {
        self.flags() & flags::URG != 0
    }

    /// Window size (unscaled).
    pub fn window(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::WIN_SIZE])
    }

    /// Checksum as stored.
    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Urgent pointer.
    pub fn urgent_at(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::URGENT])
    }

    /// Options between the fixed header and the payload.
    pub fn options(&self) -> &[u8] {
        let end = self.header_len();
        self.buffer.as_ref().get(HEADER_LEN..end).unwrap_or(&[])
    }

    /// The data after the header.
    pub fn payload(&self) -> &[u8] {
        let start = self.header_len();
        self.buffer.as_ref().get(start..).unwrap_or(&[])
    }

    /// Whether the checksum over the whole buffer is correct, given the
    /// pseudo-header sum from [`checksum::pseudo_header_v4`] or
    /// [`checksum::pseudo_header_v6`] (protocol 6, length = buffer length).
    pub fn verify_checksum(&self, pseudo_header: u32) -> bool {
        checksum::fold(pseudo_header + checksum::sum(self.buffer.as_ref())) == 0xffff
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

    /// Sets the sequence number.
    pub fn set_seq_number(&mut self, value: u32) {
        write_u32(&mut self.buffer.as_mut()[field::SEQ_NUM], value);
    }

    /// Sets the acknowledgement number.
    pub fn set_ack_number(&mut self, value: u32) {
        write_u32(&mut self.buffer.as_mut()[field::ACK_NUM], value);
    }

    /// Sets the header length in bytes, a multiple of 4 in 20..=60; changes
    /// where the payload starts.
    pub fn set_header_len(&mut self, len: u8) {
        let b = &mut self.buffer.as_mut()[field::FLAGS.start];
        *b = (*b & 0x0f) | ((len / 4) << 4);
    }

    /// Replaces all flag bits and clears the reserved bits, keeping the
    /// data offset.
    pub fn set_flags(&mut self, value: u16) {
        let raw = read_u16(&self.buffer.as_ref()[field::FLAGS]);
        let raw = (raw & 0xf000) | (value & flags::MASK);
        write_u16(&mut self.buffer.as_mut()[field::FLAGS], raw);
    }

    fn set_flag(&mut self, flag: u16, value: bool) {
        let current = self.flags();
        self.set_flags(if value {
            current | flag
        } else {
            current & !flag
        });
    }

    /// Sets or clears FIN.
    pub fn set_fin(&mut self, value: bool) {
        self.set_flag(flags::FIN, value);
    }

    /// Sets or clears SYN.
    pub fn set_syn(&mut self, value: bool) {
        self.set_flag(flags::SYN, value);
    }

    /// Sets or clears RST.
    pub fn set_rst(&mut self, value: bool) {
        self.set_flag(flags::RST, value);
    }

    /// Sets or clears PSH.
    pub fn set_psh(&mut self, value: bool) {
        self.set_flag(flags::PSH, value);
    }

    /// Sets or clears ACK.
    pub fn set_ack(&mut self, value: bool) {
        self.set_flag(flags::ACK, value);
    }

    /// Sets the window size.
    pub fn set_window(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::WIN_SIZE], value);
    }

    /// Stores a checksum, e.g. one adjusted with [`checksum::update_u16`].
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    /// Sets the urgent pointer.
    pub fn set_urgent_at(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::URGENT], value);
    }

    /// Recomputes the checksum over the whole buffer; see
    /// [`Packet::verify_checksum`] for `pseudo_header`. For freshly built
    /// segments; forwarded ones are patched incrementally.
    pub fn fill_checksum(&mut self, pseudo_header: u32) {
        self.set_checksum(0);
        let sum = checksum::sum(self.buffer.as_ref());
        self.set_checksum(!checksum::fold(pseudo_header + sum));
    }

    /// The data after the header, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        self.buffer.as_mut().get_mut(start..).unwrap_or(&mut [])
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

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

    /// A SYN 10.0.0.1:51718 -> 203.0.113.10:80 with MSS 1460, SACK permitted,
    /// timestamps, NOP, window scale 7.
    static SEGMENT: [u8; 40] = [
        0xca, 0x06, 0x00, 0x50, 0x5f, 0x3c, 0x7a, 0x01, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfa,
        0xf0, 0x38, 0x19, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x00, 0x1a,
        0x2b, 0x3c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x07,
    ];

    fn pseudo(src: Ipv4Addr, dst: Ipv4Addr) -> u32 {
        checksum::pseudo_header_v4(src, dst, 6, 40)
    }

    #[test]
    fn test_deconstruct() {
        let p = Packet::new_checked(&SEGMENT[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (51718, 80));
        assert_eq!(p.seq_number(), 0x5f3c_7a01);
        assert_eq!(p.ack_number(), 0);
        assert_eq!(p.header_len(), 40);
        assert!(p.syn() && !p.ack() && !p.fin() && !p.rst() && !p.psh() && !p.urg());
        assert_eq!(p.flags(), flags::SYN);
        assert_eq!(p.window(), 64240);
        assert_eq!(p.checksum(), 0x3819);
        assert_eq!(p.urgent_at(), 0);
        assert_eq!(p.options(), &SEGMENT[20..]);
        assert!(p.payload().is_empty());
        assert!(p.verify_checksum(pseudo(SRC, DST)));
        assert!(!p.verify_checksum(pseudo(SRC, Ipv4Addr::new(203, 0, 113, 11))));
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0xa5u8; 40];
        bytes[20..].copy_from_slice(&SEGMENT[20..]);
        let mut p = Packet::new_unchecked(&mut bytes[..]);
        p.set_src_port(51718);
        p.set_dst_port(80);
        p.set_seq_number(0x5f3c_7a01);
        p.set_ack_number(0);
        p.set_header_len(40);
        p.set_flags(0);
        p.set_syn(true);
        p.set_window(64240);
        p.set_urgent_at(0);
        p.fill_checksum(pseudo(SRC, DST));
        assert_eq!(bytes, SEGMENT);
    }

    #[test]
    fn test_flag_setters() {
        let mut bytes = SEGMENT;
        let mut p = Packet::new_checked(&mut bytes[..]).unwrap();
        p.set_ack(true);
        p.set_psh(true);
        p.set_fin(true);
        p.set_rst(true);
        p.set_syn(false);
        assert_eq!(p.flags(), flags::ACK | flags::PSH | flags::FIN | flags::RST);
        assert_eq!(p.header_len(), 40);
    }

    #[test]
    fn test_incremental_nat_matches_fill() {
        // Rewrite destination address and port as a NAT would.
        let new_dst = Ipv4Addr::new(192, 0, 2, 77);
        let mut bytes = SEGMENT;
        let mut p = Packet::new_checked(&mut bytes[..]).unwrap();
        let mut sum = checksum::update_addr_v4(p.checksum(), DST, new_dst);
        sum = checksum::update_u16(sum, p.dst_port(), 8080);
        p.set_dst_port(8080);
        p.set_checksum(sum);
        assert!(p.verify_checksum(pseudo(SRC, new_dst)));
        p.fill_checksum(pseudo(SRC, new_dst));
        assert_eq!(p.checksum(), sum);
    }

    #[test]
    fn test_errors() {
        let check = |b: &[u8]| Packet::new_checked(b).map(|_| ()).unwrap_err();
        assert_eq!(check(&SEGMENT[..19]), Error::Truncated);
        assert_eq!(check(&SEGMENT[..39]), Error::Truncated);
        let mut b = SEGMENT;
        b[12] = 0x40; // data offset 4
        assert_eq!(check(&b), Error::Malformed);
        b[12] = 0x50;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap().payload(),
            &SEGMENT[20..]
        );
    }

    proptest! {
        #[test]
        fn prop_new_checked_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(p) = Packet::new_checked(&data[..]) {
                let _ = (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number());
                let _ = (p.flags(), p.fin(), p.syn(), p.rst(), p.psh(), p.ack(), p.urg());
                let _ = (p.window(), p.checksum(), p.urgent_at(), p.options());
                let _ = p.verify_checksum(0xffff);
                prop_assert_eq!(p.payload().len() + p.header_len(), data.len());
                let mut copy = data.clone();
                let mut p = Packet::new_checked(&mut copy[..]).unwrap();
                p.fill_checksum(0x1234);
                prop_assert!(p.verify_checksum(0x1234));
                let _ = p.payload_mut();
            }
        }
    }
}
