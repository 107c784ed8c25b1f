//! Ethernet II frames, optionally with one 802.1Q VLAN tag.
//!
//! The first header of every packet the load balancer receives. The pipeline
//! reads the EtherType to choose the IPv4 or IPv6 path, and on the way out
//! rewrites the MAC addresses (and, for IPv6 encapsulation of IPv4, the
//! EtherType) in place before handing the frame back to the port.

use core::fmt;
use core::str::FromStr;

use super::{read_u16, write_u16, Error, Result};

/// A 48-bit MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Address(pub [u8; 6]);

impl Address {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: Address = Address([0xff; 6]);

    /// Whether every bit is set.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Whether the group bit (least significant bit of the first octet) is
    /// set; broadcast is also multicast.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Neither multicast nor broadcast: a single station.
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// A MAC address string was not six colon-separated pairs of hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address, expected six colon-separated hex pairs like 02:00:00:00:01:11")]
pub struct ParseAddressError;

impl FromStr for Address {
    type Err = ParseAddressError;

    /// Parses exactly `xx:xx:xx:xx:xx:xx` (either hex case), as written in
    /// configuration files and printed by `ip link`.
    fn from_str(s: &str) -> core::result::Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or(ParseAddressError)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ParseAddressError);
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| ParseAddressError)?;
        }
        if parts.next().is_some() {
            return Err(ParseAddressError);
        }
        Ok(Address(out))
    }
}

/// The EtherType field; the mapping from `u16` is total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EtherType {
    /// 0x0800.
    Ipv4,
    /// 0x86dd.
    Ipv6,
    /// 0x0806.
    Arp,
    /// 0x8100, an 802.1Q tag follows.
    Vlan,
    /// Anything else, including a second (QinQ) tag inside a first.
    Unknown(u16),
}

impl From<u16> for EtherType {
    #[inline]
    fn from(value: u16) -> Self {
        match value {
            0x0800 => Self::Ipv4,
            0x86dd => Self::Ipv6,
            0x0806 => Self::Arp,
            0x8100 => Self::Vlan,
            other => Self::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    #[inline]
    fn from(value: EtherType) -> Self {
        match value {
            EtherType::Ipv4 => 0x0800,
            EtherType::Ipv6 => 0x86dd,
            EtherType::Arp => 0x0806,
            EtherType::Vlan => 0x8100,
            EtherType::Unknown(other) => other,
        }
    }
}

mod field {
    pub(crate) type Field = core::ops::Range<usize>;

    pub(crate) const DESTINATION: Field = 0..6;
    pub(crate) const SOURCE: Field = 6..12;
    pub(crate) const ETHERTYPE: Field = 12..14;
    pub(crate) const VLAN_TCI: Field = 14..16;
    pub(crate) const VLAN_ETHERTYPE: Field = 16..18;
}

/// Length of an untagged Ethernet II header.
pub const HEADER_LEN: usize = field::ETHERTYPE.end;
/// Length of a header with one 802.1Q tag.
pub const VLAN_HEADER_LEN: usize = field::VLAN_ETHERTYPE.end;

/// A zero-copy view of an Ethernet frame.
///
/// Invariant after [`Frame::new_checked`]: the buffer holds the whole header,
/// 14 bytes, or 18 when the outer EtherType is 0x8100. Exactly one tag is
/// understood; a QinQ frame is reported with the inner tag's TPID as an
/// `Unknown` EtherType.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without checking it; accessors may panic if it is
    /// shorter than the header. Use for writing a header into a buffer whose
    /// length the caller has checked.
    pub const fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// Wraps a buffer after checking that the header (with its VLAN tag, if
    /// any) fits.
    pub fn new_checked(buffer: T) -> Result<Frame<T>> {
        let frame = Self::new_unchecked(buffer);
        let len = frame.buffer.as_ref().len();
        if len < HEADER_LEN || len < frame.header_len() {
            return Err(Error::Truncated);
        }
        Ok(frame)
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC address.
    pub fn dst_addr(&self) -> Address {
        Address(read6(&self.buffer.as_ref()[field::DESTINATION]))
    }

    /// Source MAC address.
    pub fn src_addr(&self) -> Address {
        Address(read6(&self.buffer.as_ref()[field::SOURCE]))
    }

    /// The EtherType at bytes 12..14, which is `Vlan` for a tagged frame.
    pub fn outer_ethertype(&self) -> EtherType {
        EtherType::from(read_u16(&self.buffer.as_ref()[field::ETHERTYPE]))
    }

    fn is_tagged(&self) -> bool {
        read_u16(&self.buffer.as_ref()[field::ETHERTYPE]) == u16::from(EtherType::Vlan)
    }

    /// The 12-bit VLAN identifier of an 802.1Q tag, `None` if untagged.
    pub fn vlan_id(&self) -> Option<u16> {
        self.is_tagged()
            .then(|| read_u16(&self.buffer.as_ref()[field::VLAN_TCI]) & 0x0fff)
    }

    /// The EtherType of the payload: the inner one after a VLAN tag.
    pub fn ethertype(&self) -> EtherType {
        let field = if self.is_tagged() {
            field::VLAN_ETHERTYPE
        } else {
            field::ETHERTYPE
        };
        EtherType::from(read_u16(&self.buffer.as_ref()[field]))
    }

    /// 14, or 18 for a tagged frame: where the payload starts.
    pub fn header_len(&self) -> usize {
        if self.is_tagged() {
            VLAN_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// The bytes after the header (IP packet plus any Ethernet padding).
    pub fn payload(&self) -> &[u8] {
        let start = self.header_len();
        self.buffer.as_ref().get(start..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination MAC address.
    pub fn set_dst_addr(&mut self, addr: Address) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr.0);
    }

    /// Sets the source MAC address.
    pub fn set_src_addr(&mut self, addr: Address) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr.0);
    }

    /// Writes the outer EtherType at bytes 12..14, for building an untagged
    /// frame. Writing `Vlan` makes the header 18 bytes long (the buffer must
    /// then hold 18); writing anything else over a tagged frame's TPID turns
    /// the tag into payload. To change the payload type of a parsed frame,
    /// tagged or not, use [`Frame::set_inner_ethertype`].
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        write_u16(
            &mut self.buffer.as_mut()[field::ETHERTYPE],
            ethertype.into(),
        );
    }

    /// Writes the EtherType that [`Frame::ethertype`] reads: after the tag
    /// of a tagged frame, at 12..14 otherwise. Never changes the header
    /// length unless given `Vlan` on an untagged frame.
    pub fn set_inner_ethertype(&mut self, ethertype: EtherType) {
        let field = if self.is_tagged() {
            field::VLAN_ETHERTYPE
        } else {
            field::ETHERTYPE
        };
        write_u16(&mut self.buffer.as_mut()[field], ethertype.into());
    }

    /// The bytes after the header, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        self.buffer.as_mut().get_mut(start..).unwrap_or(&mut [])
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Frame<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

fn read6(bytes: &[u8]) -> [u8; 6] {
    let mut out = [0u8; 6];
    out.copy_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Head of a captured TCP SYN: 02:00:00:00:02:22 -> 02:00:00:00:01:11,
    /// IPv4, followed by the first bytes of the IP header.
    static FRAME: [u8; 18] = [
        0x02, 0x00, 0x00, 0x00, 0x01, 0x11, 0x02, 0x00, 0x00, 0x00, 0x02, 0x22, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x3c,
    ];

    /// The same frame on VLAN 100 (TCI 0x0064, priority 0).
    static VLAN_FRAME: [u8; 22] = [
        0x02, 0x00, 0x00, 0x00, 0x01, 0x11, 0x02, 0x00, 0x00, 0x00, 0x02, 0x22, 0x81, 0x00, 0x00,
        0x64, 0x08, 0x00, 0x45, 0x00, 0x00, 0x3c,
    ];

    #[test]
    fn test_deconstruct() {
        let frame = Frame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(frame.dst_addr(), Address([0x02, 0, 0, 0, 0x01, 0x11]));
        assert_eq!(frame.src_addr(), Address([0x02, 0, 0, 0, 0x02, 0x22]));
        assert_eq!(frame.ethertype(), EtherType::Ipv4);
        assert_eq!(frame.vlan_id(), None);
        assert_eq!(frame.header_len(), HEADER_LEN);
        assert_eq!(frame.payload(), &[0x45, 0x00, 0x00, 0x3c]);
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0xa5u8; 18];
        let mut frame = Frame::new_unchecked(&mut bytes[..]);
        frame.set_dst_addr("02:00:00:00:01:11".parse().unwrap());
        frame.set_src_addr("02:00:00:00:02:22".parse().unwrap());
        frame.set_ethertype(EtherType::Ipv4);
        frame
            .payload_mut()
            .copy_from_slice(&[0x45, 0x00, 0x00, 0x3c]);
        assert_eq!(bytes, FRAME);
    }

    #[test]
    fn test_deconstruct_vlan() {
        let frame = Frame::new_checked(&VLAN_FRAME[..]).unwrap();
        assert_eq!(frame.outer_ethertype(), EtherType::Vlan);
        assert_eq!(frame.vlan_id(), Some(100));
        assert_eq!(frame.ethertype(), EtherType::Ipv4);
        assert_eq!(frame.header_len(), VLAN_HEADER_LEN);
        assert_eq!(frame.payload(), &[0x45, 0x00, 0x00, 0x3c]);
    }

    #[test]
    fn test_set_inner_ethertype_vlan() {
        let mut bytes = VLAN_FRAME;
        let mut frame = Frame::new_checked(&mut bytes[..]).unwrap();
        frame.set_inner_ethertype(EtherType::Ipv6);
        assert_eq!(frame.ethertype(), EtherType::Ipv6);
        assert_eq!(frame.vlan_id(), Some(100));
        assert_eq!(&bytes[12..18], &[0x81, 0x00, 0x00, 0x64, 0x86, 0xdd]);
    }

    #[test]
    fn test_qinq_is_unknown_inner() {
        let mut bytes = VLAN_FRAME;
        bytes[16..18].copy_from_slice(&[0x81, 0x00]);
        let frame = Frame::new_checked(&bytes[..]).unwrap();
        assert_eq!(frame.ethertype(), EtherType::Vlan);
        bytes[12..14].copy_from_slice(&[0x88, 0xa8]);
        let frame = Frame::new_checked(&bytes[..]).unwrap();
        assert_eq!(frame.ethertype(), EtherType::Unknown(0x88a8));
        assert_eq!(frame.vlan_id(), None);
    }

    #[test]
    fn test_truncated() {
        assert_eq!(
            Frame::new_checked(&FRAME[..13]).unwrap_err(),
            Error::Truncated
        );
        assert!(Frame::new_checked(&FRAME[..14]).is_ok());
        assert_eq!(
            Frame::new_checked(&VLAN_FRAME[..17]).unwrap_err(),
            Error::Truncated
        );
        assert!(Frame::new_checked(&VLAN_FRAME[..18]).is_ok());
        assert_eq!(Frame::new_checked(&[][..]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn test_address() {
        let a: Address = "02:00:00:00:01:11".parse().unwrap();
        assert_eq!(a.to_string(), "02:00:00:00:01:11");
        assert!(a.is_unicast() && !a.is_multicast() && !a.is_broadcast());
        assert!(Address::BROADCAST.is_broadcast() && Address::BROADCAST.is_multicast());
        assert!("01:00:5E:00:00:01"
            .parse::<Address>()
            .unwrap()
            .is_multicast());
        for bad in [
            "",
            "02:00:00:00:01",
            "02:00:00:00:01:11:22",
            "2:0:0:0:1:11",
            "+2:00:00:00:01:11",
            "zz:00:00:00:01:11",
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
    }

    #[test]
    fn test_ethertype_total() {
        for n in [0u16, 0x0800, 0x86dd, 0x0806, 0x8100, 0x88a8, u16::MAX] {
            assert_eq!(u16::from(EtherType::from(n)), n);
        }
    }

    proptest! {
        #[test]
        fn prop_new_checked_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(frame) = Frame::new_checked(&data[..]) {
                let _ = (frame.dst_addr(), frame.src_addr(), frame.vlan_id(), frame.ethertype());
                let _ = (frame.outer_ethertype(), frame.header_len());
                prop_assert_eq!(frame.payload().len(), data.len() - frame.header_len());
                let mut copy = data.clone();
                let mut frame = Frame::new_checked(&mut copy[..]).unwrap();
                frame.set_inner_ethertype(EtherType::Ipv6);
                frame.set_dst_addr(Address::BROADCAST);
                let _ = frame.payload_mut();
            }
        }
    }
}
