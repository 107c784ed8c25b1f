//! ICMP addressed to a VIP: path-MTU errors, which go to the backend of
//! the flow they quote, and echo requests, which cutover answers.
//!
//! With direct server return a backend answers the client from the VIP,
//! so when a router between the backend and the client cannot forward a
//! reply (IPv4 "fragmentation needed", IPv6 "packet too big"), its ICMP
//! error goes to the VIP: to cutover, not to the backend that sent the
//! reply. Dropped here, the backend would never learn the path's MTU and
//! would resend the same large segments until the connection timed out (a
//! path-MTU black hole). Forwarded to the backend that holds the flow, as
//! Katran does, the backend's kernel lowers the path MTU of that
//! connection.
//!
//! The error quotes the start of the backend's reply: an IP header from
//! the VIP to the client and the first 8 bytes of TCP or UDP, which hold
//! the ports. Turned around, that is the 5-tuple of the client's own
//! packets, which the flow table and Maglev know. This module reads that
//! quote into [`Parsed::key`]; the pipeline then finds the version and the
//! backend as for any packet, without creating or refreshing a flow entry,
//! and forwards the ICMP packet unchanged.
//!
//! Echo requests to a live VIP get their reply from cutover itself, as
//! from an IPVS director (whose VIPs are local addresses) or Katran: `ping
//! VIP` shows that the VIP is served, and stops once its version is
//! released. Other ICMP messages to a VIP are left to the caller, which
//! drops them as unsupported.

use std::net::Ipv6Addr;

use crate::dataplane::frame::FrameBuf;
use crate::dataplane::stats::DropReason;
use crate::wire::checksum;
use crate::wire::ethernet;
use crate::wire::icmp::{self, Icmpv4Packet, Icmpv6Packet};
use crate::wire::{ipv4, ipv6};

use super::parse::{mapped_v4, Kind};
use super::{Parsed, Verdict, TCP, UDP};

/// TTL and hop limit of the echo replies cutover sends.
const HOP_LIMIT: u8 = 64;

/// Bytes of the transport header an ICMP error quotes at least (RFC 792;
/// RFC 4443 quotes more): both ports.
const QUOTED_L4: usize = 8;

/// Classifies an ICMPv4 message (`msg`, the whole IPv4 payload of an
/// unfragmented packet to `p.key.dst`): an echo request is
/// [`Kind::Echo`] when its IPv4 header has no options (a reply would have
/// to handle them; such requests are rare and left unanswered), a
/// "fragmentation needed" is read by [`quoted_flow_v4`], and anything else
/// leaves `p` as it is.
pub(super) fn classify_v4(p: &mut Parsed, msg: &[u8], options: bool) -> Result<(), DropReason> {
    let msg = Icmpv4Packet::new_checked(msg).map_err(|_| DropReason::Malformed)?;
    match (msg.msg_type(), msg.code()) {
        (icmp::V4_ECHO_REQUEST, 0) if !options => {
            p.kind = Kind::Echo;
            Ok(())
        }
        (icmp::V4_DST_UNREACHABLE, icmp::V4_CODE_FRAG_NEEDED) => quoted_flow_v4(p, msg.payload()),
        _ => Ok(()),
    }
}

/// Classifies an ICMPv6 message as [`classify_v4`] does: echo requests
/// whose ICMPv6 header follows the IPv6 header directly (`direct`),
/// "packet too big" by [`quoted_flow_v6`].
pub(super) fn classify_v6(p: &mut Parsed, msg: &[u8], direct: bool) -> Result<(), DropReason> {
    let msg = Icmpv6Packet::new_checked(msg).map_err(|_| DropReason::Malformed)?;
    match (msg.msg_type(), msg.code()) {
        (icmp::V6_ECHO_REQUEST, 0) if direct => {
            p.kind = Kind::Echo;
            Ok(())
        }
        (icmp::V6_PACKET_TOO_BIG, 0) => quoted_flow_v6(p, msg.payload()),
        _ => Ok(()),
    }
}

/// Reads the flow an ICMPv4 "fragmentation needed" quotes (`quote`, its
/// payload). Leaves `p` as it is for a quote of a protocol other than TCP
/// or UDP or of a later fragment (no ports). A quote that is cut short or
/// was not sent from the address the error was sent to is malformed.
fn quoted_flow_v4(p: &mut Parsed, quote: &[u8]) -> Result<(), DropReason> {
    let head = quote.get(..ipv4::HEADER_LEN).ok_or(DropReason::Malformed)?;
    let ip = ipv4::Packet::new_unchecked(head);
    let hl = ip.header_len();
    if ip.version() != 4 || hl < ipv4::HEADER_LEN {
        return Err(DropReason::Malformed);
    }
    let l4 = quote.get(hl..hl + QUOTED_L4).ok_or(DropReason::Malformed)?;
    let protocol = u8::from(ip.next_header());
    if !matches!(protocol, TCP | UDP) || ip.frag_offset() != 0 {
        return Ok(());
    }
    turn_around(
        p,
        mapped_v4(ip.src_addr()),
        mapped_v4(ip.dst_addr()),
        protocol,
        l4,
    )
}

/// Reads the flow an ICMPv6 "packet too big" quotes; as
/// [`quoted_flow_v4`]. The quote's extension headers are walked (a
/// backend fragments its large UDP replies itself, so a router quotes a
/// fragment header): a first fragment has the ports, a later one is left
/// as it is. Extension headers cut short by the quote are malformed.
fn quoted_flow_v6(p: &mut Parsed, quote: &[u8]) -> Result<(), DropReason> {
    let head = quote.get(..ipv6::HEADER_LEN).ok_or(DropReason::Malformed)?;
    let ip = ipv6::Packet::new_unchecked(head);
    if ip.version() != 6 {
        return Err(DropReason::Malformed);
    }
    let rest = quote.get(ipv6::HEADER_LEN..).unwrap_or_default();
    let upper = ipv6::walk_extensions(ip.next_header(), rest).map_err(|_| DropReason::Malformed)?;
    let protocol = u8::from(upper.protocol);
    if !matches!(protocol, TCP | UDP) || upper.fragment.is_some_and(|f| f.offset != 0) {
        return Ok(());
    }
    let l4 = quote
        .get(upper.offset..upper.offset + QUOTED_L4)
        .ok_or(DropReason::Malformed)?;
    turn_around(
        p,
        ip.src_addr().octets(),
        ip.dst_addr().octets(),
        protocol,
        l4,
    )
}

/// Writes the client's 5-tuple of the quoted reply (from `src` to `dst`,
/// ports first in `l4`) into `p`: the reply's destination is the client.
fn turn_around(
    p: &mut Parsed,
    src: [u8; 16],
    dst: [u8; 16],
    protocol: u8,
    l4: &[u8],
) -> Result<(), DropReason> {
    // The error was sent to the source of the packet it quotes; one that
    // quotes another address's packet is not about a flow of this VIP.
    if src != p.key.dst {
        return Err(DropReason::Malformed);
    }
    let &[s0, s1, d0, d1, ..] = l4 else {
        return Err(DropReason::Malformed);
    };
    p.key.src = dst;
    p.key.src_port = u16::from_be_bytes([d0, d1]);
    p.key.dst_port = u16::from_be_bytes([s0, s1]);
    p.key.protocol = protocol;
    p.has_ports = true;
    p.tcp_flags = 0;
    p.kind = Kind::IcmpError;
    Ok(())
}

/// Turns an echo request ([`Kind::Echo`], to a live VIP) into its reply
/// in place: Ethernet and IP addresses swapped, a fresh TTL or hop limit,
/// type "echo reply", the checksum updated for the one word that changed.
/// The data comes back as it came. A request whose checksum is wrong is
/// dropped as malformed, as the kernel would drop it, rather than answered
/// with a reply the client would throw away.
pub(super) fn echo_reply<B: FrameBuf>(pkt: &mut B, p: &Parsed) -> Verdict {
    let (l3, end) = (p.l3, p.l3 + p.ip_len);
    let frame = pkt.bytes_mut();
    let Some(packet) = frame.get_mut(l3..end) else {
        return Verdict::Drop(DropReason::Malformed);
    };
    let answered = if p.v6 {
        reply_v6(packet)
    } else {
        reply_v4(packet)
    };
    if answered.is_none() {
        return Verdict::Drop(DropReason::Malformed);
    }
    let mut eth = ethernet::Frame::new_unchecked(&mut frame[..]);
    let (client, ours) = (eth.src_addr(), eth.dst_addr());
    eth.set_dst_addr(client);
    eth.set_src_addr(ours);
    Verdict::Reply
}

/// The ICMP checksum after the type changes from `old` to `new` (the
/// type and code share one 16-bit word of the sum).
fn retyped(sum: u16, old: u8, new: u8, code: u8) -> u16 {
    checksum::update_u16(
        sum,
        u16::from_be_bytes([old, code]),
        u16::from_be_bytes([new, code]),
    )
}

/// The IPv4 half of [`echo_reply`] over the IP packet (header without
/// options, as [`classify_v4`] admitted it).
fn reply_v4(packet: &mut [u8]) -> Option<()> {
    let (head, msg) = packet.split_at_mut_checked(ipv4::HEADER_LEN)?;
    let mut msg = Icmpv4Packet::new_checked(msg).ok()?;
    if !msg.verify_checksum() {
        return None;
    }
    msg.set_checksum(retyped(
        msg.checksum(),
        msg.msg_type(),
        icmp::V4_ECHO_REPLY,
        msg.code(),
    ));
    msg.set_msg_type(icmp::V4_ECHO_REPLY);
    let mut ip = ipv4::Packet::new_unchecked(head);
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    ip.set_src_addr(dst);
    ip.set_dst_addr(src);
    ip.set_ttl(HOP_LIMIT);
    ip.fill_checksum();
    Some(())
}

/// The IPv6 half of [`echo_reply`]. The pseudo-header's sum does not
/// change when the addresses swap, so only the type's word is updated.
fn reply_v6(packet: &mut [u8]) -> Option<()> {
    let (head, msg) = packet.split_at_mut_checked(ipv6::HEADER_LEN)?;
    let mut ip = ipv6::Packet::new_unchecked(head);
    let (src, dst): (Ipv6Addr, Ipv6Addr) = (ip.src_addr(), ip.dst_addr());
    let mut msg = Icmpv6Packet::new_checked(msg).ok()?;
    if !msg.verify_checksum(src, dst) {
        return None;
    }
    msg.set_checksum(retyped(
        msg.checksum(),
        msg.msg_type(),
        icmp::V6_ECHO_REPLY,
        msg.code(),
    ));
    msg.set_msg_type(icmp::V6_ECHO_REPLY);
    ip.set_src_addr(dst);
    ip.set_dst_addr(src);
    ip.set_hop_limit(HOP_LIMIT);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse;
    use super::*;
    use crate::dataplane::flow::FlowKey;

    const VIP: [u8; 4] = [198, 18, 0, 1];
    const CLIENT: [u8; 4] = [192, 0, 2, 9];

    /// A "fragmentation needed" to the VIP quoting `quote`, as a frame.
    fn frag_needed(quote: &[u8]) -> Vec<u8> {
        let t = etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
        );
        let mut v = Vec::new();
        etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([203, 0, 113, 1], VIP, 64)
            .icmpv4(t)
            .write(&mut v, quote)
            .expect("frame");
        v
    }

    /// The quoted reply: an IPv4 header with `options` words of options,
    /// from the VIP port 53 to the client port 5300, over UDP.
    fn reply(options: u8) -> Vec<u8> {
        let mut ip = etherparse::Ipv4Header::new(16, 63, etherparse::IpNumber::UDP, VIP, CLIENT)
            .expect("header");
        let opts = vec![1u8; usize::from(options) * 4];
        ip.options = opts.as_slice().try_into().expect("options");
        let mut v = ip.to_bytes().to_vec();
        v.extend_from_slice(&[0, 53, 0x14, 0xb4, 0, 16, 0, 0]);
        v
    }

    fn parsed(frame: &[u8]) -> (Result<(), DropReason>, Parsed) {
        let mut p = Parsed::EMPTY;
        (parse(frame, &mut p), p)
    }

    #[test]
    fn a_quote_with_options_turns_around_into_the_clients_flow() {
        for options in [0, 3, 10] {
            let (r, p) = parsed(&frag_needed(&reply(options)));
            assert_eq!(r, Ok(()), "{options}");
            assert_eq!(p.kind, Kind::IcmpError);
            assert_eq!(p.key, FlowKey::v4(CLIENT, VIP, UDP, 5300, 53));
            assert!(p.has_ports);
            // The packet itself is still the ICMP one, for forwarding.
            assert_eq!(p.ip_len, 20 + 8 + reply(options).len());
        }
    }

    #[test]
    fn quotes_that_are_cut_short_or_not_from_the_vip_are_malformed() {
        let full = reply(2);
        for cut in [0, 10, 20, 28 + 4, full.len() - 1] {
            let (r, _) = parsed(&frag_needed(&full[..cut]));
            assert_eq!(r, Err(DropReason::Malformed), "cut at {cut}");
        }
        let mut other = reply(0);
        other[12..16].copy_from_slice(&[198, 18, 0, 2]);
        assert_eq!(parsed(&frag_needed(&other)).0, Err(DropReason::Malformed));
        let mut v5 = reply(0);
        v5[0] = 0x55;
        assert_eq!(parsed(&frag_needed(&v5)).0, Err(DropReason::Malformed));
    }

    #[test]
    fn other_messages_and_quotes_without_ports_stay_plain_icmp_and_echo_is_told_apart() {
        let mut later = reply(0);
        later[6..8].copy_from_slice(&[0, 8]); // fragment offset 64
        let mut icmp_quote = reply(0);
        icmp_quote[9] = 1;
        for quote in [later, icmp_quote] {
            let (r, p) = parsed(&frag_needed(&quote));
            assert_eq!(r, Ok(()));
            assert_eq!(
                (p.kind, p.key.protocol, p.has_ports),
                (Kind::Flow, 1, false)
            );
        }
        let mut other = frag_needed(&reply(0));
        other[14 + 20] = icmp::V4_TIME_EXCEEDED;
        other[14 + 21] = 0;
        let (r, p) = parsed(&other);
        assert_eq!((r, p.kind, p.key.protocol), (Ok(()), Kind::Flow, 1));
        // An echo request is told apart, answered or not later.
        other[14 + 20] = icmp::V4_ECHO_REQUEST;
        let (r, p) = parsed(&other);
        assert_eq!((r, p.kind, p.key.protocol), (Ok(()), Kind::Echo, 1));
    }
}
