//! IP protocol numbers, shared by IPv4's protocol field and IPv6's next
//! header chain.
//!
//! Every header the pipeline classifies names the one after it with one of
//! these numbers; the mapping is total so an unknown number is a value to
//! count and drop, never a parse failure.

use core::fmt;

/// An IANA "Assigned Internet Protocol Number".
///
/// `From<u8>` never yields `Unknown(n)` for a number that has its own
/// variant, so comparing against a named variant is reliable for parsed
/// values. Building `Unknown(6)` by hand is possible but it will not compare
/// equal to `Tcp`; convert through `u8` if that matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpProtocol {
    /// IPv6 hop-by-hop options (0).
    HopByHop,
    /// ICMP for IPv4 (1).
    Icmp,
    /// IPv4 encapsulated in IP, "IP-in-IP" (4).
    Ipv4,
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// IPv6 encapsulated in IP (41).
    Ipv6,
    /// IPv6 routing header (43).
    Ipv6Route,
    /// IPv6 fragment header (44).
    Ipv6Frag,
    /// ICMP for IPv6 (58).
    Icmpv6,
    /// IPv6 "no next header" (59).
    Ipv6NoNxt,
    /// IPv6 destination options (60).
    Ipv6Opts,
    /// Any other protocol number.
    Unknown(u8),
}

impl From<u8> for IpProtocol {
    #[inline]
    fn from(value: u8) -> Self {
        match value {
            0 => Self::HopByHop,
            1 => Self::Icmp,
            4 => Self::Ipv4,
            6 => Self::Tcp,
            17 => Self::Udp,
            41 => Self::Ipv6,
            43 => Self::Ipv6Route,
            44 => Self::Ipv6Frag,
            58 => Self::Icmpv6,
            59 => Self::Ipv6NoNxt,
            60 => Self::Ipv6Opts,
            other => Self::Unknown(other),
        }
    }
}

impl From<IpProtocol> for u8 {
    #[inline]
    fn from(value: IpProtocol) -> Self {
        match value {
            IpProtocol::HopByHop => 0,
            IpProtocol::Icmp => 1,
            IpProtocol::Ipv4 => 4,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Ipv6 => 41,
            IpProtocol::Ipv6Route => 43,
            IpProtocol::Ipv6Frag => 44,
            IpProtocol::Icmpv6 => 58,
            IpProtocol::Ipv6NoNxt => 59,
            IpProtocol::Ipv6Opts => 60,
            IpProtocol::Unknown(other) => other,
        }
    }
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HopByHop => f.write_str("hop-by-hop"),
            Self::Icmp => f.write_str("icmp"),
            Self::Ipv4 => f.write_str("ipv4"),
            Self::Tcp => f.write_str("tcp"),
            Self::Udp => f.write_str("udp"),
            Self::Ipv6 => f.write_str("ipv6"),
            Self::Ipv6Route => f.write_str("ipv6-route"),
            Self::Ipv6Frag => f.write_str("ipv6-frag"),
            Self::Icmpv6 => f.write_str("icmpv6"),
            Self::Ipv6NoNxt => f.write_str("ipv6-nonxt"),
            Self::Ipv6Opts => f.write_str("ipv6-opts"),
            Self::Unknown(n) => write!(f, "protocol {n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_round_trip_all_numbers() {
        for n in 0..=u8::MAX {
            let p = IpProtocol::from(n);
            assert_eq!(u8::from(p), n);
        }
    }

    #[test]
    fn test_known_numbers() {
        assert_eq!(IpProtocol::from(6), IpProtocol::Tcp);
        assert_eq!(IpProtocol::from(17), IpProtocol::Udp);
        assert_eq!(IpProtocol::from(4), IpProtocol::Ipv4);
        assert_eq!(IpProtocol::from(41), IpProtocol::Ipv6);
        assert_eq!(IpProtocol::from(58), IpProtocol::Icmpv6);
        assert_eq!(IpProtocol::from(132), IpProtocol::Unknown(132));
    }
}
