//! ICMPv4 and ICMPv6 messages.
//!
//! The load balancer meets ICMP in two places. Inbound, path-MTU errors
//! (IPv4 "fragmentation needed", IPv6 "packet too big") addressed to a VIP
//! quote the original packet in their payload, which the pipeline parses to
//! steer the error to the backend that owns the flow. Outbound, when
//! encapsulation would push a don't-fragment packet past the MTU, the
//! pipeline answers the client itself with [`emit_frag_needed`] or
//! [`emit_packet_too_big`], built in place in the received buffer.

use std::net::Ipv6Addr;

use super::checksum;
use super::{read_u16, read_u32, write_u16, write_u32, Error, Result};

mod field {
    pub(crate) type Field = core::ops::Range<usize>;

    pub(crate) const TYPE: usize = 0;
    pub(crate) const CODE: usize = 1;
    pub(crate) const CHECKSUM: Field = 2..4;
    pub(crate) const REST: Field = 4..8;
    pub(crate) const ECHO_IDENT: Field = 4..6;
    pub(crate) const ECHO_SEQ: Field = 6..8;
    /// ICMPv4 type 3 code 4 (RFC 1191).
    pub(crate) const NEXT_HOP_MTU: Field = 6..8;
    /// ICMPv6 type 2 (RFC 4443).
    pub(crate) const MTU: Field = 4..8;
}

/// Length of the ICMP header, the same for both versions.
pub const HEADER_LEN: usize = field::REST.end;

/// ICMPv4 echo reply.
pub const V4_ECHO_REPLY: u8 = 0;
/// ICMPv4 destination unreachable.
pub const V4_DST_UNREACHABLE: u8 = 3;
/// ICMPv4 echo request.
pub const V4_ECHO_REQUEST: u8 = 8;
/// ICMPv4 time exceeded.
pub const V4_TIME_EXCEEDED: u8 = 11;
/// Code of [`V4_DST_UNREACHABLE`]: fragmentation needed and DF set.
pub const V4_CODE_FRAG_NEEDED: u8 = 4;

/// ICMPv6 destination unreachable.
pub const V6_DST_UNREACHABLE: u8 = 1;
/// ICMPv6 packet too big.
pub const V6_PACKET_TOO_BIG: u8 = 2;
/// ICMPv6 time exceeded.
pub const V6_TIME_EXCEEDED: u8 = 3;
/// ICMPv6 echo request.
pub const V6_ECHO_REQUEST: u8 = 128;
/// ICMPv6 echo reply.
pub const V6_ECHO_REPLY: u8 = 129;

/// Most bytes of the original packet to quote in an ICMPv4 error so the
/// error datagram stays within 576 bytes (RFC 1812 section 4.3.2.3).
pub const MAX_QUOTE_V4: usize = 576 - 20 - HEADER_LEN;
/// Most bytes of the original packet to quote in an ICMPv6 error so the
/// error packet stays within the minimum MTU of 1280 (RFC 4443 2.4 (c)).
pub const MAX_QUOTE_V6: usize = 1280 - 40 - HEADER_LEN;

/// Defines a view type with the layout both ICMP versions share.
macro_rules! icmp_view {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// Wraps a buffer without checking it; accessors may panic if it
            /// is shorter than 8 bytes.
            pub const fn new_unchecked(buffer: T) -> $name<T> {
                $name { buffer }
            }

            /// Wraps a buffer after checking that the 8-byte header fits.
            /// The message is the whole buffer: trim it to the IP payload.
            pub fn new_checked(buffer: T) -> Result<$name<T>> {
                if buffer.as_ref().len() < HEADER_LEN {
                    return Err(Error::Truncated);
                }
                Ok(Self::new_unchecked(buffer))
            }

            /// Gives the buffer back.
            pub fn into_inner(self) -> T {
                self.buffer
            }

            /// Message type.
            pub fn msg_type(&self) -> u8 {
                self.buffer.as_ref()[field::TYPE]
            }

            /// Message code, whose meaning depends on the type.
            pub fn code(&self) -> u8 {
                self.buffer.as_ref()[field::CODE]
            }

            /// Checksum as stored.
            pub fn checksum(&self) -> u16 {
                read_u16(&self.buffer.as_ref()[field::CHECKSUM])
            }

            /// Bytes 4..8, whose meaning depends on the type.
            pub fn rest_of_header(&self) -> u32 {
                read_u32(&self.buffer.as_ref()[field::REST])
            }

            /// Echo identifier (echo request and reply only).
            pub fn echo_ident(&self) -> u16 {
                read_u16(&self.buffer.as_ref()[field::ECHO_IDENT])
            }

            /// Echo sequence number (echo request and reply only).
            pub fn echo_seq(&self) -> u16 {
                read_u16(&self.buffer.as_ref()[field::ECHO_SEQ])
            }

            /// Everything after the header; for errors, the quoted original
            /// packet starting with its IP header.
            pub fn payload(&self) -> &[u8] {
                self.buffer.as_ref().get(HEADER_LEN..).unwrap_or(&[])
            }
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $name<T> {
            /// Sets the message type.
            pub fn set_msg_type(&mut self, value: u8) {
                self.buffer.as_mut()[field::TYPE] = value;
            }

            /// Sets the code.
            pub fn set_code(&mut self, value: u8) {
                self.buffer.as_mut()[field::CODE] = value;
            }

            /// Stores a checksum.
            pub fn set_checksum(&mut self, value: u16) {
                write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
            }

            /// Sets bytes 4..8.
            pub fn set_rest_of_header(&mut self, value: u32) {
                write_u32(&mut self.buffer.as_mut()[field::REST], value);
            }

            /// Sets the echo identifier.
            pub fn set_echo_ident(&mut self, value: u16) {
                write_u16(&mut self.buffer.as_mut()[field::ECHO_IDENT], value);
            }

            /// Sets the echo sequence number.
            pub fn set_echo_seq(&mut self, value: u16) {
                write_u16(&mut self.buffer.as_mut()[field::ECHO_SEQ], value);
            }

            /// Everything after the header, writable.
            pub fn payload_mut(&mut self) -> &mut [u8] {
                self.buffer.as_mut().get_mut(HEADER_LEN..).unwrap_or(&mut [])
            }
        }

        impl<T: AsRef<[u8]>> AsRef<[u8]> for $name<T> {
            fn as_ref(&self) -> &[u8] {
                self.buffer.as_ref()
            }
        }
    };
}

icmp_view!(
    /// A zero-copy view of an ICMPv4 message; the checksum covers the whole
    /// buffer, so the buffer must be exactly the IPv4 payload.
    Icmpv4Packet
);

icmp_view!(
    /// A zero-copy view of an ICMPv6 message; the checksum covers an IPv6
    /// pseudo-header and the whole buffer, so the buffer must be exactly the
    /// upper-layer payload.
    Icmpv6Packet
);

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Next-hop MTU of a "fragmentation needed" message (type 3 code 4);
    /// 0 from routers that predate RFC 1191.
    pub fn next_hop_mtu(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::NEXT_HOP_MTU])
    }

    /// Whether the checksum over the whole buffer is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    /// Sets the next-hop MTU (bytes 6..8).
    pub fn set_next_hop_mtu(&mut self, mtu: u16) {
        write_u16(&mut self.buffer.as_mut()[field::NEXT_HOP_MTU], mtu);
    }

    /// Computes the checksum over the whole buffer.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(sum);
    }
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// MTU of a "packet too big" message (type 2).
    pub fn mtu(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::MTU])
    }

    /// Whether the checksum is correct for a packet from `src` to `dst`
    /// (the addresses of the IPv6 header carrying it).
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let data = self.buffer.as_ref();
        let pseudo = pseudo_header_v6(src, dst, data.len());
        checksum::fold(pseudo + checksum::sum(data)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    /// Sets the MTU (bytes 4..8).
    pub fn set_mtu(&mut self, mtu: u32) {
        write_u32(&mut self.buffer.as_mut()[field::MTU], mtu);
    }

    /// Computes the checksum over the pseudo-header for `src` -> `dst` and
    /// the whole buffer.
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        let pseudo = pseudo_header_v6(src, dst, data.len());
        let sum = !checksum::fold(pseudo + checksum::sum(data));
        self.set_checksum(sum);
    }
}

fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, len: usize) -> u32 {
    // An ICMPv6 message cannot exceed 4 GiB; saturating keeps this total.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    checksum::pseudo_header_v6(src, dst, 58, len)
}

/// Builds an ICMPv4 "fragmentation needed and DF set" message in place.
///
/// `buf` starts where the ICMP header goes, and the caller has already put
/// the quoted original packet (its IPv4 header first) at
/// `buf[8..8 + quoted_len]`, e.g. with `copy_within` after making room for
/// the new IPv4 and ICMP headers; `quoted_len` should be at most
/// [`MAX_QUOTE_V4`] and at least the original header plus 8 bytes. Writes
/// type 3, code 4, the next-hop `mtu` and the checksum over the message.
///
/// Returns the message length `8 + quoted_len`, the `payload_len` of the
/// IPv4 header that will carry it, or `Truncated` if `buf` is shorter.
pub fn emit_frag_needed(buf: &mut [u8], mtu: u16, quoted_len: usize) -> Result<usize> {
    let len = HEADER_LEN.checked_add(quoted_len).ok_or(Error::Truncated)?;
    let message = buf.get_mut(..len).ok_or(Error::Truncated)?;
    let mut packet = Icmpv4Packet::new_unchecked(message);
    packet.set_msg_type(V4_DST_UNREACHABLE);
    packet.set_code(V4_CODE_FRAG_NEEDED);
    packet.set_rest_of_header(0);
    packet.set_next_hop_mtu(mtu);
    packet.fill_checksum();
    Ok(len)
}

/// Builds an ICMPv6 "packet too big" message in place.
///
/// As [`emit_frag_needed`]: the quoted original packet is already at
/// `buf[8..8 + quoted_len]` (at most [`MAX_QUOTE_V6`]). `src` and `dst` are
/// the addresses of the IPv6 header that will carry the message (the
/// original destination and source), needed for the pseudo-header checksum.
///
/// Returns the message length `8 + quoted_len`, or `Truncated` if `buf` is
/// shorter.
pub fn emit_packet_too_big(
    buf: &mut [u8],
    mtu: u32,
    quoted_len: usize,
    src: Ipv6Addr,
    dst: Ipv6Addr,
) -> Result<usize> {
    let len = HEADER_LEN.checked_add(quoted_len).ok_or(Error::Truncated)?;
    let message = buf.get_mut(..len).ok_or(Error::Truncated)?;
    let mut packet = Icmpv6Packet::new_unchecked(message);
    packet.set_msg_type(V6_PACKET_TOO_BIG);
    packet.set_code(0);
    packet.set_mtu(mtu);
    packet.fill_checksum(src, dst);
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ip::IpProtocol;
    use crate::wire::ipv4;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    /// ICMPv4 echo request, ident 0x1234, seq 1, data "abcdefgh".
    static ECHO_V4: [u8; 16] = [
        0x08, 0x00, 0x54, 0x35, 0x12, 0x34, 0x00, 0x01, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67,
        0x68,
    ];
    /// The same request as ICMPv6, 2001:db8::1 -> 2001:db8::2.
    static ECHO_V6: [u8; 16] = [
        0x80, 0x00, 0x80, 0x75, 0x12, 0x34, 0x00, 0x01, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67,
        0x68,
    ];
    /// Fragmentation needed, next-hop MTU 1400, quoting 8 bytes.
    static FRAG_NEEDED: [u8; 16] = [
        0x03, 0x04, 0x69, 0xf2, 0x00, 0x00, 0x05, 0x78, 0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66,
        0x67,
    ];
    /// Packet too big, MTU 1280, 2001:db8::2 -> 2001:db8::1, quoting 8 bytes.
    static PACKET_TOO_BIG: [u8; 16] = [
        0x02, 0x00, 0x0f, 0xaf, 0x00, 0x00, 0x05, 0x00, 0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66,
        0x67,
    ];

    fn a1() -> Ipv6Addr {
        "2001:db8::1".parse().unwrap()
    }
    fn a2() -> Ipv6Addr {
        "2001:db8::2".parse().unwrap()
    }

    #[test]
    fn test_deconstruct() {
        let p = Icmpv4Packet::new_checked(&ECHO_V4[..]).unwrap();
        assert_eq!((p.msg_type(), p.code()), (V4_ECHO_REQUEST, 0));
        assert_eq!(p.checksum(), 0x5435);
        assert_eq!((p.echo_ident(), p.echo_seq()), (0x1234, 1));
        assert_eq!(p.rest_of_header(), 0x1234_0001);
        assert_eq!(p.payload(), b"abcdefgh");
        assert!(p.verify_checksum());

        let p = Icmpv6Packet::new_checked(&ECHO_V6[..]).unwrap();
        assert_eq!((p.msg_type(), p.code()), (V6_ECHO_REQUEST, 0));
        assert_eq!((p.echo_ident(), p.echo_seq()), (0x1234, 1));
        assert!(p.verify_checksum(a1(), a2()));
        assert!(!p.verify_checksum(a2(), "2001:db8::3".parse().unwrap()));

        let p = Icmpv4Packet::new_checked(&FRAG_NEEDED[..]).unwrap();
        assert_eq!(
            (p.msg_type(), p.code()),
            (V4_DST_UNREACHABLE, V4_CODE_FRAG_NEEDED)
        );
        assert_eq!(p.next_hop_mtu(), 1400);
        assert!(p.verify_checksum());

        let p = Icmpv6Packet::new_checked(&PACKET_TOO_BIG[..]).unwrap();
        assert_eq!(p.msg_type(), V6_PACKET_TOO_BIG);
        assert_eq!(p.mtu(), 1280);
        assert!(p.verify_checksum(a2(), a1()));
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0xa5u8; 16];
        bytes[8..].copy_from_slice(b"abcdefgh");
        let mut p = Icmpv4Packet::new_unchecked(&mut bytes[..]);
        p.set_msg_type(V4_ECHO_REQUEST);
        p.set_code(0);
        p.set_echo_ident(0x1234);
        p.set_echo_seq(1);
        p.fill_checksum();
        assert_eq!(bytes, ECHO_V4);

        let mut p = Icmpv6Packet::new_unchecked(&mut bytes[..]);
        p.set_msg_type(V6_ECHO_REQUEST);
        p.fill_checksum(a1(), a2());
        assert_eq!(bytes, ECHO_V6);

        let mut bytes = [0xa5u8; 20];
        bytes[8..16].copy_from_slice(&FRAG_NEEDED[8..]);
        assert_eq!(emit_frag_needed(&mut bytes, 1400, 8), Ok(16));
        assert_eq!(bytes[..16], FRAG_NEEDED);
        assert_eq!(bytes[16..], [0xa5; 4]);

        let mut bytes = [0xa5u8; 16];
        bytes[8..].copy_from_slice(&PACKET_TOO_BIG[8..]);
        assert_eq!(emit_packet_too_big(&mut bytes, 1280, 8, a2(), a1()), Ok(16));
        assert_eq!(bytes, PACKET_TOO_BIG);
    }

    #[test]
    fn test_frag_needed_in_place_reply() {
        // A 60-byte DF TCP SYN 10.0.0.1 -> 203.0.113.10, answered in its own
        // buffer: move it back 28 bytes, then write IPv4 and ICMP headers.
        let mut original = vec![
            0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0xd8, 0x6a, 0x0a, 0x00,
            0x00, 0x01, 0xcb, 0x00, 0x71, 0x0a,
        ];
        original.resize(60, 0x11);
        let mut buf = original.clone();
        buf.resize(60 + 28, 0);
        buf.copy_within(0..60, 28);
        let quoted = 60usize.min(MAX_QUOTE_V4);
        let icmp_len = emit_frag_needed(&mut buf[20..], 1400, quoted).unwrap();
        let repr = ipv4::Repr {
            src_addr: Ipv4Addr::new(203, 0, 113, 10),
            dst_addr: Ipv4Addr::new(10, 0, 0, 1),
            next_header: IpProtocol::Icmp,
            payload_len: icmp_len,
            ttl: 64,
            dont_frag: false,
            ident: 0,
        };
        repr.emit(&mut ipv4::Packet::new_unchecked(&mut buf[..]))
            .unwrap();

        let ip = ipv4::Packet::new_checked(&buf[..]).unwrap();
        assert!(ip.verify_checksum());
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        assert_eq!(icmp.next_hop_mtu(), 1400);
        assert_eq!(icmp.payload(), &original[..]);
        let inner = ipv4::Packet::new_checked(icmp.payload()).unwrap();
        assert_eq!(inner.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
    }

    #[test]
    fn test_errors() {
        assert_eq!(
            Icmpv4Packet::new_checked(&ECHO_V4[..7]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Icmpv6Packet::new_checked(&ECHO_V6[..0]).unwrap_err(),
            Error::Truncated
        );
        let p = Icmpv4Packet::new_checked(&ECHO_V4[..8]).unwrap();
        assert!(p.payload().is_empty());
        let mut short = [0u8; 15];
        assert_eq!(emit_frag_needed(&mut short, 1400, 8), Err(Error::Truncated));
        assert_eq!(
            emit_frag_needed(&mut short, 1400, usize::MAX),
            Err(Error::Truncated)
        );
        assert_eq!(
            emit_packet_too_big(&mut short, 1280, 8, a1(), a2()),
            Err(Error::Truncated)
        );
    }

    proptest! {
        #[test]
        fn prop_new_checked_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(p) = Icmpv4Packet::new_checked(&data[..]) {
                let _ = (p.msg_type(), p.code(), p.checksum(), p.rest_of_header());
                let _ = (p.echo_ident(), p.echo_seq(), p.next_hop_mtu(), p.verify_checksum());
                prop_assert_eq!(p.payload().len() + HEADER_LEN, data.len());
            }
            if let Ok(p) = Icmpv6Packet::new_checked(&data[..]) {
                let _ = (p.msg_type(), p.code(), p.checksum(), p.rest_of_header(), p.mtu());
                let _ = (p.echo_ident(), p.echo_seq(), p.verify_checksum(a1(), a2()));
                prop_assert_eq!(p.payload().len() + HEADER_LEN, data.len());
            }
            let mut copy = data.clone();
            let quoted = data.len().saturating_sub(HEADER_LEN);
            if emit_packet_too_big(&mut copy, 1280, quoted, a1(), a2()).is_ok() {
                prop_assert!(Icmpv6Packet::new_checked(&copy[..]).unwrap().verify_checksum(a1(), a2()));
            }
            if emit_frag_needed(&mut copy, 576, quoted).is_ok() {
                prop_assert!(Icmpv4Packet::new_checked(&copy[..]).unwrap().verify_checksum());
            }
        }
    }
}
