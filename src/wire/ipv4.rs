//! IPv4 packets.
//!
//! After the Ethernet header the pipeline reads the addresses and protocol
//! here to find the service, drops fragments it cannot steer, and on the way
//! out either rewrites TTL and addresses in place (with incremental checksum
//! updates) or builds a fresh outer header with [`Repr::emit`] for IP-in-IP
//! encapsulation towards a backend.

use std::net::Ipv4Addr;

use super::checksum;
use super::ip::IpProtocol;
use super::{read_u16, write_u16, Error, Result};

mod field {
    pub(crate) type Field = core::ops::Range<usize>;

    pub(crate) const VER_IHL: usize = 0;
    pub(crate) const DSCP_ECN: usize = 1;
    pub(crate) const LENGTH: Field = 2..4;
    pub(crate) const IDENT: Field = 4..6;
    pub(crate) const FLG_OFF: Field = 6..8;
    pub(crate) const TTL: usize = 8;
    pub(crate) const PROTOCOL: usize = 9;
    pub(crate) const CHECKSUM: Field = 10..12;
    pub(crate) const SRC_ADDR: Field = 12..16;
    pub(crate) const DST_ADDR: Field = 16..20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A zero-copy view of an IPv4 packet.
///
/// Invariant after [`Packet::new_checked`]: version is 4,
/// `20 <= header_len <= total_len <= buffer.len()`. Bytes past `total_len`
/// are link-layer padding; [`Packet::payload`] excludes them.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic if it is
    /// shorter than 20 bytes. Use for writing a header into a buffer whose
    /// length the caller has checked.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking the version and that the header and
    /// total length fields are consistent with each other and the buffer.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        let len = packet.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if packet.version() != 4 || packet.header_len() < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if packet.header_len() > len {
            return Err(Error::Truncated);
        }
        let total = usize::from(packet.total_len());
        if total < packet.header_len() {
            return Err(Error::Malformed);
        }
        if total > len {
            return Err(Error::Truncated);
        }
        Ok(packet)
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// IP version; 4 on a checked packet.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The DSCP and ECN byte (formerly type of service).
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// Total length of header and payload in bytes.
    pub fn total_len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// Identification, shared by the fragments of one datagram.
    pub fn ident(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::IDENT])
    }

    /// Don't Fragment: a router must drop rather than split (and, for us,
    /// answer with ICMP fragmentation needed).
    pub fn dont_frag(&self) -> bool {
        read_u16(&self.buffer.as_ref()[field::FLG_OFF]) & FLAG_DF != 0
    }

    /// More Fragments: this is not the last fragment.
    pub fn more_frags(&self) -> bool {
        read_u16(&self.buffer.as_ref()[field::FLG_OFF]) & FLAG_MF != 0
    }

    /// Offset of this fragment's payload in the datagram, in bytes (the
    /// field counts 8-byte units; at most 65528).
    pub fn frag_offset(&self) -> u16 {
        (read_u16(&self.buffer.as_ref()[field::FLG_OFF]) & OFFSET_MASK) << 3
    }

    /// Whether this is any fragment of a larger datagram: only the first
    /// fragment carries the transport header, and none carries all of it.
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol of the payload.
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// The header checksum as stored.
    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_addr(&self.buffer.as_ref()[field::SRC_ADDR]))
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_addr(&self.buffer.as_ref()[field::DST_ADDR]))
    }

    /// The options between the fixed header and the payload, often empty.
    pub fn options(&self) -> &[u8] {
        let end = self.header_len();
        self.buffer.as_ref().get(HEADER_LEN..end).unwrap_or(&[])
    }

    /// The payload, `header_len..total_len`: padding after `total_len` is
    /// excluded. Empty rather than a panic if a setter broke the invariant.
    pub fn payload(&self) -> &[u8] {
        let range = self.payload_range();
        self.buffer.as_ref().get(range).unwrap_or(&[])
    }

    /// Whether the header checksum (options included) is correct.
    pub fn verify_checksum(&self) -> bool {
        let end = self.header_len();
        match self.buffer.as_ref().get(..end) {
            Some(header) => checksum::checksum(header) == 0,
            None => false,
        }
    }

    fn payload_range(&self) -> core::ops::Range<usize> {
        self.header_len()..usize::from(self.total_len())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version nibble.
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (version << 4);
    }

    /// Sets the header length in bytes; must be a multiple of 4 in 20..=60.
    /// Changes where the payload starts.
    pub fn set_header_len(&mut self, len: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((len / 4) & 0x0f);
    }

    /// Sets the DSCP and ECN byte.
    pub fn set_dscp_ecn(&mut self, value: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = value;
    }

    /// Sets the total length; changes where the payload ends. A value past
    /// the buffer makes [`Packet::payload`] empty, never a panic.
    pub fn set_total_len(&mut self, len: u16) {
        write_u16(&mut self.buffer.as_mut()[field::LENGTH], len);
    }

    /// Sets the identification.
    pub fn set_ident(&mut self, ident: u16) {
        write_u16(&mut self.buffer.as_mut()[field::IDENT], ident);
    }

    /// Sets or clears Don't Fragment, keeping the other flag and the offset.
    pub fn set_dont_frag(&mut self, value: bool) {
        self.set_flag(FLAG_DF, value);
    }

    /// Sets or clears More Fragments, keeping the other flag and the offset.
    pub fn set_more_frags(&mut self, value: bool) {
        self.set_flag(FLAG_MF, value);
    }

    /// Sets the fragment offset in bytes; it must be a multiple of 8 (the
    /// low three bits are dropped).
    pub fn set_frag_offset(&mut self, offset: u16) {
        let raw = read_u16(&self.buffer.as_ref()[field::FLG_OFF]);
        let raw = (raw & !OFFSET_MASK) | (offset >> 3);
        write_u16(&mut self.buffer.as_mut()[field::FLG_OFF], raw);
    }

    /// Sets the time to live.
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the protocol of the payload.
    pub fn set_next_header(&mut self, protocol: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol.into();
    }

    /// Stores a checksum, e.g. one adjusted with [`checksum::update_u16`].
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    /// Sets the source address; the checksum is not updated.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address; the checksum is not updated.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Recomputes the header checksum over `header_len` bytes (a no-op if a
    /// setter made the header longer than the buffer).
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let end = self.header_len();
        if let Some(header) = self.buffer.as_ref().get(..end) {
            let sum = checksum::checksum(header);
            self.set_checksum(sum);
        }
    }

    /// The payload, writable; same bounds as [`Packet::payload`].
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.payload_range();
        self.buffer.as_mut().get_mut(range).unwrap_or(&mut [])
    }

    fn set_flag(&mut self, flag: u16, value: bool) {
        let raw = read_u16(&self.buffer.as_ref()[field::FLG_OFF]);
        let raw = if value { raw | flag } else { raw & !flag };
        write_u16(&mut self.buffer.as_mut()[field::FLG_OFF], raw);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

fn read_addr(bytes: &[u8]) -> [u8; 4] {
    [bytes[0], bytes[1], bytes[2], bytes[3]]
}

/// The owned form of an option-less, unfragmented IPv4 header, for building
/// outer headers (IP-in-IP) and ICMP error replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Protocol of the payload (`Ipv4` for IP-in-IP).
    pub next_header: IpProtocol,
    /// Payload length in bytes; `HEADER_LEN + payload_len` must fit in u16.
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// Don't Fragment.
    pub dont_frag: bool,
    /// Identification.
    pub ident: u16,
}

impl Repr {
    /// Reads a checked packet. Options, DSCP/ECN and fragment fields other
    /// than DF are not represented; the checksum is not verified (call
    /// [`Packet::verify_checksum`] where that matters).
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr> {
        let payload_len = usize::from(packet.total_len())
            .checked_sub(packet.header_len())
            .ok_or(Error::Malformed)?;
        Ok(Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len,
            ttl: packet.ttl(),
            dont_frag: packet.dont_frag(),
            ident: packet.ident(),
        })
    }

    /// Header plus payload length, the IPv4 total length.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN.saturating_add(self.payload_len)
    }

    /// Writes a 20-byte header (DSCP/ECN 0, no options, not a fragment) with
    /// a correct checksum into the start of `packet`, whose buffer may hold
    /// stale bytes; the payload is left alone.
    ///
    /// Errors: `Truncated` if the buffer is shorter than 20 bytes,
    /// `Malformed` if `20 + payload_len` does not fit the 16-bit length.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) -> Result<()> {
        if packet.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let total = HEADER_LEN
            .checked_add(self.payload_len)
            .and_then(|t| u16::try_from(t).ok())
            .ok_or(Error::Malformed)?;
        packet.buffer.as_mut()[field::VER_IHL] = 0x45;
        packet.set_dscp_ecn(0);
        packet.set_total_len(total);
        packet.set_ident(self.ident);
        write_u16(
            &mut packet.buffer.as_mut()[field::FLG_OFF],
            if self.dont_frag { FLAG_DF } else { 0 },
        );
        packet.set_ttl(self.ttl);
        packet.set_next_header(self.next_header);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A DNS query 10.0.0.1:53000 -> 10.0.0.53:53: IPv4 header, then UDP.
    static PACKET: [u8; 57] = [
        0x45, 0x00, 0x00, 0x39, 0x00, 0x01, 0x00, 0x00, 0x40, 0x11, 0x66, 0x7e, 0x0a, 0x00, 0x00,
        0x01, 0x0a, 0x00, 0x00, 0x35, // UDP
        0xcf, 0x08, 0x00, 0x35, 0x00, 0x25, 0xa0, 0xf5, 0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x03, 0x63,
        0x6f, 0x6d, 0x00, 0x00, 0x01, 0x00, 0x01,
    ];

    fn repr() -> Repr {
        Repr {
            src_addr: Ipv4Addr::new(10, 0, 0, 1),
            dst_addr: Ipv4Addr::new(10, 0, 0, 53),
            next_header: IpProtocol::Udp,
            payload_len: 37,
            ttl: 64,
            dont_frag: false,
            ident: 1,
        }
    }

    #[test]
    fn test_deconstruct() {
        let p = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.dscp_ecn(), 0);
        assert_eq!(p.total_len(), 57);
        assert_eq!(p.ident(), 1);
        assert!(!p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.next_header(), IpProtocol::Udp);
        assert_eq!(p.checksum(), 0x667e);
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 53));
        assert!(p.options().is_empty());
        assert_eq!(p.payload(), &PACKET[20..]);
        assert!(p.verify_checksum());
        assert_eq!(Repr::parse(&p).unwrap(), repr());
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0xa5u8; 57];
        bytes[20..].copy_from_slice(&PACKET[20..]);
        repr()
            .emit(&mut Packet::new_unchecked(&mut bytes[..]))
            .unwrap();
        assert_eq!(bytes, PACKET);
    }

    #[test]
    fn test_setters() {
        let mut bytes = PACKET;
        let mut p = Packet::new_checked(&mut bytes[..]).unwrap();
        p.set_more_frags(true);
        p.set_frag_offset(1480);
        p.set_dont_frag(true);
        assert_eq!(&p.as_ref()[6..8], &[0x60, 0xb9]);
        assert!(p.is_fragment() && p.dont_frag() && p.more_frags());
        assert_eq!(p.frag_offset(), 1480);
        p.set_dont_frag(false);
        p.set_more_frags(false);
        assert_eq!(p.frag_offset(), 1480);
        assert!(p.is_fragment());
        p.set_ttl(63);
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
    }

    #[test]
    fn test_padding_trimmed() {
        let mut padded = PACKET.to_vec();
        padded.extend_from_slice(&[0; 7]);
        let p = Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.payload(), &PACKET[20..]);
    }

    #[test]
    fn test_known_checksum_vector() {
        let mut bytes = [0u8; 0x73];
        bytes[..20].copy_from_slice(&[
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ]);
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert!(p.verify_checksum() && p.dont_frag() && !p.is_fragment());
    }

    #[test]
    fn test_errors() {
        let check = |bytes: &[u8]| Packet::new_checked(bytes).map(|_| ()).unwrap_err();
        assert_eq!(check(&PACKET[..19]), Error::Truncated);
        let mut b = PACKET;
        b[0] = 0x65;
        assert_eq!(check(&b), Error::Malformed);
        b[0] = 0x44; // IHL 4
        assert_eq!(check(&b), Error::Malformed);
        b[0] = 0x4f; // IHL 15: 60 bytes, beyond the 57-byte buffer
        assert_eq!(check(&b), Error::Truncated);
        let mut b = PACKET;
        b[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(check(&b), Error::Malformed);
        b[2..4].copy_from_slice(&58u16.to_be_bytes());
        assert_eq!(check(&b), Error::Truncated);
        let mut b = PACKET;
        b[0] = 0x46; // 24-byte header, total 57: fine
        assert!(Packet::new_checked(&b[..]).is_ok());
        assert_eq!(check(&b[..23]), Error::Truncated);
    }

    #[test]
    fn test_emit_errors() {
        let mut short = [0u8; 19];
        let r = repr();
        assert_eq!(
            r.emit(&mut Packet::new_unchecked(&mut short[..])),
            Err(Error::Truncated)
        );
        let mut buf = [0u8; 20];
        let big = Repr {
            payload_len: 65516,
            ..r
        };
        assert_eq!(
            big.emit(&mut Packet::new_unchecked(&mut buf[..])),
            Err(Error::Malformed)
        );
        let max = Repr {
            payload_len: 65515,
            ..r
        };
        assert_eq!(max.emit(&mut Packet::new_unchecked(&mut buf[..])), Ok(()));
    }

    proptest! {
        #[test]
        fn prop_new_checked_never_panics(
            mut data in proptest::collection::vec(any::<u8>(), 0..200),
            plausible in any::<bool>(),
        ) {
            // Half the cases get a plausible version and length, so the
            // accessors below run on many accepted packets, not a few.
            if plausible && data.len() >= 4 {
                data[0] = 0x40 | (data[0] & 0x0f);
                let room = u16::try_from(data.len() + 1).unwrap();
                let total = u16::from_be_bytes([data[2], data[3]]) % room;
                data[2..4].copy_from_slice(&total.to_be_bytes());
            }
            if let Ok(p) = Packet::new_checked(&data[..]) {
                let _ = (p.version(), p.header_len(), p.dscp_ecn(), p.total_len(), p.ident());
                let _ = (p.dont_frag(), p.more_frags(), p.frag_offset(), p.is_fragment());
                let _ = (p.ttl(), p.next_header(), p.checksum(), p.src_addr(), p.dst_addr());
                let _ = (p.options(), p.verify_checksum(), Repr::parse(&p));
                prop_assert!(p.payload().len() + p.header_len() == usize::from(p.total_len()));
                let mut copy = data.clone();
                let mut p = Packet::new_checked(&mut copy[..]).unwrap();
                p.fill_checksum();
                prop_assert!(p.verify_checksum());
                let _ = p.payload_mut();
            }
        }
    }
}
