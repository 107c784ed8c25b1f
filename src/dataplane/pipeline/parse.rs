//! Parsing a frame into what the pipeline needs of it, without copying:
//! the Ethernet and IP headers, the 5-tuple and the TCP flags.
//!
//! Two parsers give the same answer: [`parse_common`] for the shape of
//! most traffic (untagged IPv4 without options carrying TCP or UDP) in one
//! bounds check, and [`parse_general`] for every other frame, malformed
//! ones included. The property test `fast_parse_agrees_with_general`
//! holds the first to the second.

use std::net::IpAddr;

use crate::dataplane::flow::FlowKey;
use crate::dataplane::stats::DropReason;
use crate::wire::ethernet::{self, EtherType};
use crate::wire::{ipv4, ipv6, tcp, udp};

use super::{icmp, TCP, UDP};

/// Protocol numbers of ICMP, whose path-MTU errors and echo requests to a
/// VIP the pipeline handles (`icmp.rs`).
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// What the parser learnt of a frame; offsets index the frame's bytes.
///
/// Filled in place by [`parse`] (a caller-owned value rather than a
/// returned one, so the fast path does not move it through `Result`s).
pub(crate) struct Parsed {
    /// Offset of the IP header (= length of the Ethernet header).
    pub(crate) l3: usize,
    /// Length of the IP packet from its header's length fields (Ethernet
    /// padding excluded).
    pub(crate) ip_len: usize,
    /// The 5-tuple, built in place as the flow table reads it: addresses
    /// as 16 bytes (IPv4 mapped); the protocol number (IPv4 protocol, or
    /// the IPv6 upper layer after extension headers); ports 0 unless
    /// `has_ports`.
    pub(crate) key: FlowKey,
    /// IPv6 (else IPv4).
    pub(crate) v6: bool,
    /// The ports were read (TCP and UDP, except non-first fragments).
    pub(crate) has_ports: bool,
    /// A packet of a flow, a fragment, an ICMP error about a flow, or a
    /// ping.
    pub(crate) kind: Kind,
    /// IPv4 DF bit (always true for IPv6: routers never fragment it).
    pub(crate) dont_frag: bool,
    /// The TCP flags byte (0 for other protocols).
    pub(crate) tcp_flags: u8,
}

/// What a parsed packet is to the pipeline. One field rather than a flag
/// each, so that the fast path tells the common case from the others with
/// one comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A whole packet: its 5-tuple is a flow the flow table tracks (for
    /// TCP and UDP).
    Flow,
    /// Part of a fragmented datagram (IPv4 MF/offset, IPv6 fragment
    /// header): placed by its 3-tuple, since later fragments carry no ports.
    Fragment,
    /// An ICMP path-MTU error to a VIP (`icmp.rs`): `key` is the flow it
    /// quotes, turned around into the client's direction, and the packet
    /// goes to that flow's backend as it is, never answered.
    IcmpError,
    /// An ICMP or ICMPv6 echo request (`icmp.rs`): answered when its
    /// destination is a live VIP.
    Echo,
}

impl Parsed {
    /// The starting point that [`parse`] fills in.
    pub(crate) const EMPTY: Parsed = Parsed {
        l3: 0,
        ip_len: 0,
        key: FlowKey {
            src: [0; 16],
            dst: [0; 16],
            src_port: 0,
            dst_port: 0,
            protocol: 0,
        },
        v6: false,
        has_ports: false,
        kind: Kind::Flow,
        dont_frag: false,
        tcp_flags: 0,
    };

    /// The source address (slow paths only: ICMP errors, reports).
    pub(crate) fn src_ip(&self) -> IpAddr {
        unmapped(self.key.src, self.v6)
    }

    /// The destination address (slow paths only).
    pub(crate) fn dst_ip(&self) -> IpAddr {
        unmapped(self.key.dst, self.v6)
    }
}

fn unmapped(bytes: [u8; 16], v6: bool) -> IpAddr {
    let a = std::net::Ipv6Addr::from(bytes);
    match (v6, a.to_ipv4_mapped()) {
        (false, Some(v4)) => IpAddr::V4(v4),
        _ => IpAddr::V6(a),
    }
}

/// An IPv4 address as the 16 bytes flow keys and the VIP table use
/// (`::ffff:a.b.c.d`).
///
/// Built as one 128-bit number rather than byte by byte: the pipeline
/// reads the result back in 64-bit halves (VIP key, hashes), and a wide
/// load of bytes just written by narrow stores stalls the core on store
/// forwarding (`perf` put a tenth of the pipeline's samples there).
#[inline]
pub(super) fn mapped_v4(a: std::net::Ipv4Addr) -> [u8; 16] {
    const MAPPED: u128 = 0xffff << 32;
    (MAPPED | u128::from(u32::from(a))).to_be_bytes()
}

/// The destination of a frame, for reports (`cutover replay`).
pub fn destination(frame: &[u8]) -> Option<IpAddr> {
    let mut p = Parsed::EMPTY;
    parse(frame, &mut p).ok().map(|()| p.dst_ip())
}

/// Parses Ethernet, IP and the transport ports into `p` without copying
/// the frame. `p` must start as [`Parsed::EMPTY`]: only the fields that
/// differ from it are written. On an error `p` is partly written and
/// meaningless.
#[inline]
pub(crate) fn parse(frame: &[u8], p: &mut Parsed) -> Result<(), DropReason> {
    if parse_common(frame, p) {
        return Ok(());
    }
    parse_general(frame, p)
}

/// Every frame the common case does not cover: VLAN tags, IPv4 options,
/// fragments, IPv6 and its extension headers, other protocols, and every
/// malformed frame with its drop reason.
///
/// Kept out of line: inlined into the burst loop it only added to the
/// common case's register pressure.
#[inline(never)]
fn parse_general(frame: &[u8], p: &mut Parsed) -> Result<(), DropReason> {
    let eth = ethernet::Frame::new_checked(frame).map_err(|_| DropReason::Malformed)?;
    p.l3 = eth.header_len();
    match eth.ethertype() {
        EtherType::Ipv4 => parse_v4(frame, p),
        EtherType::Ipv6 => parse_v6(frame, p),
        _ => Err(DropReason::NotIp),
    }
}

/// The headers of the common case: untagged Ethernet, IPv4 without
/// options, and the 20 bytes of a TCP header (a UDP header is 8 of them).
const COMMON_HEAD: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN + tcp::HEADER_LEN;

/// The common case in one bounds check: an untagged IPv4 frame with a
/// 20-byte header, not a fragment, carrying TCP or UDP. True when it
/// filled `p`; false (and `p` untouched) for anything else, which the
/// general parser then handles, errors included.
///
/// The same views and the same checks as the general path (the property
/// test `fast_parse_agrees_with_general` holds them to it), but over a
/// fixed-size head of the frame, so the compiler drops the bounds checks
/// of every accessor: most traffic is this shape, and at 20 Mpps the
/// general path's per-header checks were a fifth of the pipeline.
#[inline(always)]
fn parse_common(frame: &[u8], p: &mut Parsed) -> bool {
    let Some(head) = frame.first_chunk::<COMMON_HEAD>() else {
        return false;
    };
    let eth = ethernet::Frame::new_unchecked(&head[..]);
    if eth.outer_ethertype() != EtherType::Ipv4 {
        return false;
    }
    let ip = ipv4::Packet::new_unchecked(&head[ethernet::HEADER_LEN..]);
    if ip.version() != 4 || ip.header_len() != ipv4::HEADER_LEN || ip.is_fragment() {
        return false;
    }
    let total = usize::from(ip.total_len());
    // `frame` is at least COMMON_HEAD long, so the subtraction holds.
    if total > frame.len() - ethernet::HEADER_LEN {
        return false;
    }
    let Some(l4_len) = total.checked_sub(ipv4::HEADER_LEN) else {
        return false;
    };
    let l4 = &head[ethernet::HEADER_LEN + ipv4::HEADER_LEN..];
    let protocol = u8::from(ip.next_header());
    let (ports, tcp_flags) = match protocol {
        TCP => {
            let t = tcp::Packet::new_unchecked(l4);
            let hl = t.header_len();
            if l4_len < tcp::HEADER_LEN || hl < tcp::HEADER_LEN || hl > l4_len {
                return false;
            }
            let [_, low] = t.flags().to_be_bytes();
            ((t.src_port(), t.dst_port()), low)
        }
        UDP => {
            let u = udp::Packet::new_unchecked(l4);
            let len = usize::from(u.len());
            if l4_len < udp::HEADER_LEN || len < udp::HEADER_LEN || len > l4_len {
                return false;
            }
            ((u.src_port(), u.dst_port()), 0)
        }
        _ => return false,
    };
    p.l3 = ethernet::HEADER_LEN;
    p.ip_len = total;
    p.key = FlowKey {
        src: mapped_v4(ip.src_addr()),
        dst: mapped_v4(ip.dst_addr()),
        src_port: ports.0,
        dst_port: ports.1,
        protocol,
    };
    p.v6 = false;
    p.has_ports = true;
    p.kind = Kind::Flow;
    p.dont_frag = ip.dont_frag();
    p.tcp_flags = tcp_flags;
    true
}

#[inline]
fn parse_v4(frame: &[u8], p: &mut Parsed) -> Result<(), DropReason> {
    let bytes = frame.get(p.l3..).ok_or(DropReason::Malformed)?;
    let ip = ipv4::Packet::new_checked(bytes).map_err(|_| DropReason::Malformed)?;
    p.ip_len = usize::from(ip.total_len());
    p.key.src = mapped_v4(ip.src_addr());
    p.key.dst = mapped_v4(ip.dst_addr());
    p.v6 = false;
    p.key.protocol = u8::from(ip.next_header());
    let fragment = ip.is_fragment();
    if fragment {
        p.kind = Kind::Fragment;
    }
    p.dont_frag = ip.dont_frag();
    if !fragment || ip.frag_offset() == 0 {
        transport(p, ip.payload())?;
    }
    if !fragment && p.key.protocol == ICMP {
        icmp::classify_v4(p, ip.payload(), ip.header_len() != ipv4::HEADER_LEN)?;
    }
    Ok(())
}

fn parse_v6(frame: &[u8], p: &mut Parsed) -> Result<(), DropReason> {
    let bytes = frame.get(p.l3..).ok_or(DropReason::Malformed)?;
    let ip = ipv6::Packet::new_checked(bytes).map_err(|_| DropReason::Malformed)?;
    let upper = ip.upper_layer().map_err(|_| DropReason::Malformed)?;
    p.ip_len = usize::from(ip.payload_len()) + ipv6::HEADER_LEN;
    p.key.src = ip.src_addr().octets();
    p.key.dst = ip.dst_addr().octets();
    p.v6 = true;
    p.key.protocol = u8::from(upper.protocol);
    if upper.fragment.is_some() {
        p.kind = Kind::Fragment;
    }
    p.dont_frag = true;
    let first = upper.fragment.is_none_or(|f| f.offset == 0);
    if first {
        let l4 = bytes
            .get(upper.offset..p.ip_len)
            .ok_or(DropReason::Malformed)?;
        transport(p, l4)?;
        if p.kind == Kind::Flow && p.key.protocol == ICMPV6 {
            icmp::classify_v6(p, l4, upper.offset == ipv6::HEADER_LEN)?;
        }
    }
    Ok(())
}

/// Reads ports (and TCP flags) of TCP and UDP; other protocols have none.
///
/// A first fragment holds only the start of the transport header, and a
/// UDP length field that covers the whole datagram: only the ports, which
/// lead every TCP and UDP header, are read from it.
#[inline]
fn transport(p: &mut Parsed, l4: &[u8]) -> Result<(), DropReason> {
    let (src_port, dst_port) = if p.kind == Kind::Fragment {
        if !matches!(p.key.protocol, TCP | UDP) {
            return Ok(());
        }
        let ports = l4.get(..4).ok_or(DropReason::Malformed)?;
        (
            u16::from_be_bytes([ports[0], ports[1]]),
            u16::from_be_bytes([ports[2], ports[3]]),
        )
    } else {
        match p.key.protocol {
            TCP => {
                let t = tcp::Packet::new_checked(l4).map_err(|_| DropReason::Malformed)?;
                let [_, low] = t.flags().to_be_bytes();
                p.tcp_flags = low;
                (t.src_port(), t.dst_port())
            }
            UDP => {
                let u = udp::Packet::new_checked(l4).map_err(|_| DropReason::Malformed)?;
                (u.src_port(), u.dst_port())
            }
            _ => return Ok(()),
        }
    };
    p.key.src_port = src_port;
    p.key.dst_port = dst_port;
    p.has_ports = true;
    Ok(())
}

#[cfg(test)]
mod tests;
