//! IPv6 packets and the walk over their extension headers.
//!
//! After the Ethernet header the pipeline reads the addresses here and calls
//! [`Packet::upper_layer`] to find the transport header behind any
//! hop-by-hop, routing, destination-options or fragment headers. Outbound,
//! [`Repr::emit`] builds the outer header for IPv6 encapsulation (IPv4- or
//! IPv6-in-IPv6) towards a backend.

use std::net::Ipv6Addr;

use super::ip::IpProtocol;
use super::{read_u16, read_u32, write_u16, write_u32, Error, Result};

mod field {
    pub(crate) type Field = core::ops::Range<usize>;

    pub(crate) const VER_TC_FLOW: Field = 0..4;
    pub(crate) const LENGTH: Field = 4..6;
    pub(crate) const NXT_HDR: usize = 6;
    pub(crate) const HOP_LIMIT: usize = 7;
    pub(crate) const SRC_ADDR: Field = 8..24;
    pub(crate) const DST_ADDR: Field = 24..40;

    // Within an extension header.
    pub(crate) const EXT_NXT_HDR: usize = 0;
    pub(crate) const EXT_LEN: usize = 1;
    pub(crate) const FRAG_OFF_M: Field = 2..4;
    pub(crate) const FRAG_IDENT: Field = 4..8;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// The most extension headers [`Packet::upper_layer`] walks before giving up
/// with `Malformed`; real traffic has at most two or three, and the bound
/// keeps the cost of a hostile chain fixed.
pub const MAX_EXT_HEADERS: usize = 8;

/// Length of a fragment header, which has no length field.
const FRAG_HEADER_LEN: usize = 8;
/// The smallest extension header, and the unit of their length field.
const EXT_UNIT: usize = 8;

/// A zero-copy view of an IPv6 packet.
///
/// Invariant after [`Packet::new_checked`]: version is 6 and
/// `40 + payload_len <= buffer.len()`. Bytes past that are link-layer
/// padding; [`Packet::payload`] excludes them. Jumbograms (payload length 0
/// with a jumbo option) are not supported: their payload reads as empty.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

/// Where the transport header of an IPv6 packet starts, as found by
/// [`Packet::upper_layer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    /// Protocol of the header at `offset` (may be `Ipv6NoNxt` or any number
    /// that is not a walked extension header, e.g. AH or ESP).
    pub protocol: IpProtocol,
    /// Offset from the start of the IPv6 header.
    pub offset: usize,
    /// The fragment header, if the walk passed one. When its `offset` is not
    /// zero the bytes at `offset` are the middle of a datagram, not a
    /// transport header.
    pub fragment: Option<Fragment>,
}

/// The contents of an IPv6 fragment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// Identification, shared by the fragments of one datagram.
    pub ident: u32,
    /// Offset of this fragment's data in the datagram, in bytes.
    pub offset: u16,
    /// More fragments follow.
    pub more: bool,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic if it is
    /// shorter than 40 bytes. Use for writing a header into a buffer whose
    /// length the caller has checked.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking the version and that the payload length
    /// fits.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        let len = packet.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if packet.version() != 6 {
            return Err(Error::Malformed);
        }
        if HEADER_LEN + usize::from(packet.payload_len()) > len {
            return Err(Error::Truncated);
        }
        Ok(packet)
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn ver_tc_flow(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::VER_TC_FLOW])
    }

    /// IP version; 6 on a checked packet.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW.start] >> 4
    }

    /// Traffic class (DSCP and ECN).
    pub fn traffic_class(&self) -> u8 {
        // Shifting out the version leaves the class in the top byte.
        let [tc, ..] = (self.ver_tc_flow() << 4).to_be_bytes();
        tc
    }

    /// The 20-bit flow label, which routers and the backend's ECMP hash.
    pub fn flow_label(&self) -> u32 {
        self.ver_tc_flow() & 0x000f_ffff
    }

    /// Length of everything after the fixed header, extension headers
    /// included.
    pub fn payload_len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// The first next-header value, which may name an extension header.
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::NXT_HDR])
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(read_addr(&self.buffer.as_ref()[field::SRC_ADDR]))
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(read_addr(&self.buffer.as_ref()[field::DST_ADDR]))
    }

    /// The payload, `40..40 + payload_len`, extension headers included;
    /// padding is excluded. Empty rather than a panic if a setter broke the
    /// invariant.
    pub fn payload(&self) -> &[u8] {
        let range = self.payload_range();
        self.buffer.as_ref().get(range).unwrap_or(&[])
    }

    /// Walks the extension headers to the upper-layer header.
    ///
    /// Skips hop-by-hop, routing and destination-options headers, stops after
    /// a fragment header (reporting it), and stops at any other protocol.
    /// Errors: `Truncated` if a header runs past the payload, `Malformed`
    /// after more than [`MAX_EXT_HEADERS`] extension headers. Hop-by-hop is
    /// accepted anywhere in the chain, and AH is not walked.
    pub fn upper_layer(&self) -> Result<UpperLayer> {
        walk_extensions(self.next_header(), self.payload())
    }

    fn payload_range(&self) -> core::ops::Range<usize> {
        HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())
    }
}

/// The walk of [`Packet::upper_layer`] over `payload`, the bytes after an
/// IPv6 header whose next header is `first`: also usable on a packet cut
/// short, such as the one an ICMPv6 error quotes, as long as its
/// extension headers are whole. Offsets in the result count from the
/// start of the IPv6 header.
pub fn walk_extensions(first: IpProtocol, payload: &[u8]) -> Result<UpperLayer> {
    let mut protocol = first;
    let mut offset = 0usize;
    for _ in 0..=MAX_EXT_HEADERS {
        match protocol {
            IpProtocol::HopByHop | IpProtocol::Ipv6Route | IpProtocol::Ipv6Opts => {
                let header = payload
                    .get(offset..offset.saturating_add(2))
                    .ok_or(Error::Truncated)?;
                let len = (usize::from(header[field::EXT_LEN]) + 1) * EXT_UNIT;
                let end = offset.checked_add(len).ok_or(Error::Malformed)?;
                if end > payload.len() {
                    return Err(Error::Truncated);
                }
                protocol = IpProtocol::from(header[field::EXT_NXT_HDR]);
                offset = end;
            }
            IpProtocol::Ipv6Frag => {
                let end = offset.saturating_add(FRAG_HEADER_LEN);
                let header = payload.get(offset..end).ok_or(Error::Truncated)?;
                let off_m = read_u16(&header[field::FRAG_OFF_M]);
                return Ok(UpperLayer {
                    protocol: IpProtocol::from(header[field::EXT_NXT_HDR]),
                    offset: HEADER_LEN + end,
                    fragment: Some(Fragment {
                        ident: read_u32(&header[field::FRAG_IDENT]),
                        offset: off_m & 0xfff8,
                        more: off_m & 1 != 0,
                    }),
                });
            }
            _ => {
                return Ok(UpperLayer {
                    protocol,
                    offset: HEADER_LEN + offset,
                    fragment: None,
                })
            }
        }
    }
    Err(Error::Malformed)
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_ver_tc_flow(&mut self, value: u32) {
        write_u32(&mut self.buffer.as_mut()[field::VER_TC_FLOW], value);
    }

    /// Sets the version nibble.
    pub fn set_version(&mut self, version: u8) {
        let rest = self.ver_tc_flow() & 0x0fff_ffff;
        self.set_ver_tc_flow((u32::from(version & 0x0f) << 28) | rest);
    }

    /// Sets the traffic class.
    pub fn set_traffic_class(&mut self, tc: u8) {
        let rest = self.ver_tc_flow() & 0xf00f_ffff;
        self.set_ver_tc_flow(rest | (u32::from(tc) << 20));
    }

    /// Sets the flow label; bits above the low 20 are ignored.
    pub fn set_flow_label(&mut self, label: u32) {
        let rest = self.ver_tc_flow() & 0xfff0_0000;
        self.set_ver_tc_flow(rest | (label & 0x000f_ffff));
    }

    /// Sets the payload length; changes where the payload ends. A value past
    /// the buffer makes [`Packet::payload`] empty, never a panic.
    pub fn set_payload_len(&mut self, len: u16) {
        write_u16(&mut self.buffer.as_mut()[field::LENGTH], len);
    }

    /// Sets the first next-header value.
    pub fn set_next_header(&mut self, protocol: IpProtocol) {
        self.buffer.as_mut()[field::NXT_HDR] = protocol.into();
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hop_limit;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// The payload, writable; same bounds as [`Packet::payload`].
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.payload_range();
        self.buffer.as_mut().get_mut(range).unwrap_or(&mut [])
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

fn read_addr(bytes: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(bytes);
    out
}

/// The owned form of an IPv6 fixed header, for building outer headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// Protocol of the payload (`Ipv4`/`Ipv6` for encapsulation).
    pub next_header: IpProtocol,
    /// Payload length in bytes; must fit in u16.
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
}

impl Repr {
    /// Reads the fixed header of a checked packet; traffic class and flow
    /// label are not represented, extension headers are not walked.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Repr {
        Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
        }
    }

    /// Header plus payload length.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN.saturating_add(self.payload_len)
    }

    /// Writes the 40-byte header into the start of `packet`, whose buffer may
    /// hold stale bytes; traffic class and flow label are zero (set the flow
    /// label afterwards to give the backend's network ECMP entropy).
    ///
    /// Errors: `Truncated` if the buffer is shorter than 40 bytes,
    /// `Malformed` if `payload_len` does not fit in 16 bits.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) -> Result<()> {
        if packet.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = u16::try_from(self.payload_len).map_err(|_| Error::Malformed)?;
        packet.set_ver_tc_flow(6 << 28);
        packet.set_payload_len(len);
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An ICMPv6 echo request 2001:db8::1 -> 2001:db8::2, flow label 0x12345.
    static PACKET: [u8; 56] = [
        0x60, 0x01, 0x23, 0x45, 0x00, 0x10, 0x3a, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, // ICMPv6
        0x80, 0x00, 0x80, 0x75, 0x12, 0x34, 0x00, 0x01, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67,
        0x68,
    ];

    fn addr(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// A packet with the header of `PACKET`, the given first next header and
    /// payload.
    fn build(next_header: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = PACKET[..HEADER_LEN].to_vec();
        v[4..6].copy_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        v[6] = next_header;
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn test_deconstruct() {
        let p = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 16);
        assert_eq!(p.next_header(), IpProtocol::Icmpv6);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), addr("2001:db8::1"));
        assert_eq!(p.dst_addr(), addr("2001:db8::2"));
        assert_eq!(p.payload(), &PACKET[40..]);
        let upper = p.upper_layer().unwrap();
        assert_eq!(
            upper,
            UpperLayer {
                protocol: IpProtocol::Icmpv6,
                offset: 40,
                fragment: None
            }
        );
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0xa5u8; 56];
        bytes[40..].copy_from_slice(&PACKET[40..]);
        let repr = Repr {
            src_addr: addr("2001:db8::1"),
            dst_addr: addr("2001:db8::2"),
            next_header: IpProtocol::Icmpv6,
            payload_len: 16,
            hop_limit: 64,
        };
        let mut p = Packet::new_unchecked(&mut bytes[..]);
        repr.emit(&mut p).unwrap();
        p.set_flow_label(0x12345);
        assert_eq!(Repr::parse(&p), repr);
        assert_eq!(bytes, PACKET);
    }

    #[test]
    fn test_traffic_class_and_flow_label() {
        let mut bytes = PACKET;
        let mut p = Packet::new_checked(&mut bytes[..]).unwrap();
        p.set_traffic_class(0xb8);
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12345);
        p.set_flow_label(0xfff_ffff);
        assert_eq!(p.flow_label(), 0xf_ffff);
        assert_eq!((p.version(), p.traffic_class()), (6, 0xb8));
        assert_eq!(&bytes[..4], &[0x6b, 0x8f, 0xff, 0xff]);
    }

    #[test]
    fn test_errors() {
        let check = |b: &[u8]| Packet::new_checked(b).map(|_| ()).unwrap_err();
        assert_eq!(check(&PACKET[..39]), Error::Truncated);
        assert_eq!(check(&PACKET[..55]), Error::Truncated);
        let mut b = PACKET;
        b[0] = 0x40;
        assert_eq!(check(&b), Error::Malformed);
        let mut b = PACKET;
        b[4..6].copy_from_slice(&17u16.to_be_bytes());
        assert_eq!(check(&b), Error::Truncated);
    }

    #[test]
    fn test_padding_trimmed() {
        let mut padded = PACKET.to_vec();
        padded.extend_from_slice(&[0; 8]);
        let p = Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.payload(), &PACKET[40..]);
        assert_eq!(p.upper_layer().unwrap().offset, 40);
    }

    #[test]
    fn test_extension_chain_to_fragment() {
        let mut payload = vec![
            60, 0, 0x01, 0x04, 0, 0, 0, 0, // hop-by-hop, PadN
            43, 1, 0x01, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // dest opts, 16 bytes
            44, 0, 0, 0, 0, 0, 0, 0, // routing, 8 bytes
            6, 0, 0x04, 0xd1, 0xde, 0xad, 0xbe, 0xef, // fragment: offset 1232, M
        ];
        payload.extend_from_slice(&[0u8; 20]);
        let bytes = build(0, &payload);
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            p.upper_layer().unwrap(),
            UpperLayer {
                protocol: IpProtocol::Tcp,
                offset: 40 + 8 + 16 + 8 + 8,
                fragment: Some(Fragment {
                    ident: 0xdead_beef,
                    offset: 1232,
                    more: true
                }),
            }
        );
    }

    #[test]
    fn test_extension_header_bounds() {
        // Eight destination-options headers, then UDP: accepted.
        let chain = |n: usize, last: u8| {
            let mut payload = Vec::new();
            for i in 0..n {
                let next = if i + 1 == n { last } else { 60 };
                payload.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
            }
            build(60, &payload)
        };
        let ok = chain(8, 17);
        let p = Packet::new_checked(&ok[..]).unwrap();
        let upper = p.upper_layer().unwrap();
        assert_eq!((upper.protocol, upper.offset), (IpProtocol::Udp, 40 + 64));
        // Nine: too many.
        let long = chain(9, 17);
        let p = Packet::new_checked(&long[..]).unwrap();
        assert_eq!(p.upper_layer(), Err(Error::Malformed));
        // A header whose length runs past the payload.
        let bytes = build(0, &[6, 1, 0, 0, 0, 0, 0, 0]);
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.upper_layer(), Err(Error::Truncated));
        // Only the next-header byte present.
        let bytes = build(43, &[6]);
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.upper_layer(), Err(Error::Truncated));
        // A fragment header cut short, with padding behind payload_len that
        // must not be read.
        let mut bytes = build(44, &[6, 0, 0, 1]);
        bytes.extend_from_slice(&[0; 8]);
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.upper_layer(), Err(Error::Truncated));
        // No payload at all with a hop-by-hop next header.
        let bytes = build(0, &[]);
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.upper_layer(), Err(Error::Truncated));
    }

    #[test]
    fn test_emit_errors() {
        let repr = Repr {
            src_addr: Ipv6Addr::UNSPECIFIED,
            dst_addr: Ipv6Addr::LOCALHOST,
            next_header: IpProtocol::Ipv4,
            payload_len: 65536,
            hop_limit: 64,
        };
        let mut buf = [0u8; 40];
        assert_eq!(
            repr.emit(&mut Packet::new_unchecked(&mut buf[..])),
            Err(Error::Malformed)
        );
        assert_eq!(
            repr.emit(&mut Packet::new_unchecked(&mut buf[..39])),
            Err(Error::Truncated)
        );
    }

    proptest! {
        #[test]
        fn prop_new_checked_never_panics(
            mut data in proptest::collection::vec(any::<u8>(), 0..200),
            plausible in any::<bool>(),
        ) {
            // Half the cases get a plausible version and length, so the
            // accessors below run on many accepted packets, not a few.
            if plausible && data.len() >= 6 {
                data[0] = 0x60 | (data[0] & 0x0f);
                let room = u16::try_from(data.len().saturating_sub(40) + 1).unwrap();
                let len = u16::from_be_bytes([data[4], data[5]]) % room;
                data[4..6].copy_from_slice(&len.to_be_bytes());
            }
            if let Ok(p) = Packet::new_checked(&data[..]) {
                let _ = (p.version(), p.traffic_class(), p.flow_label(), p.payload_len());
                let _ = (p.next_header(), p.hop_limit(), p.src_addr(), p.dst_addr());
                let _ = Repr::parse(&p);
                prop_assert_eq!(p.payload().len(), usize::from(p.payload_len()));
                if let Ok(upper) = p.upper_layer() {
                    prop_assert!(upper.offset <= HEADER_LEN + p.payload().len());
                }
            }
        }

        #[test]
        fn prop_upper_layer_on_extension_chains(
            nexts in proptest::collection::vec(
                prop::sample::select(vec![0u8, 43, 44, 60, 6, 17, 59]), 1..12),
            lens in proptest::collection::vec(any::<u8>(), 12),
            cut in 0usize..200,
        ) {
            let mut payload = Vec::new();
            for (i, &next) in nexts.iter().enumerate() {
                let len = usize::from(lens[i] % 4);
                payload.push(next);
                payload.push(u8::try_from(len).unwrap());
                payload.resize(payload.len() + 6 + len * 8, 1);
            }
            payload.truncate(cut.min(payload.len()));
            let bytes = build(60, &payload);
            let p = Packet::new_checked(&bytes[..]).unwrap();
            if let Ok(upper) = p.upper_layer() {
                prop_assert!(upper.offset <= bytes.len());
            }
        }
    }
}
