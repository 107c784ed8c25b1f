//! The last step of a packet's journey: rewriting the frame for its backend.
//!
//! `l2dsr` rewrites the Ethernet addresses only. `ipip` puts an outer IPv4
//! or IPv6 header (the backend's family) in front of the client's packet,
//! which travels byte for byte as sent. A packet that would not fit the MTU
//! after encapsulation is turned, in place, into an ICMP "fragmentation
//! needed" / "packet too big" error for its sender, as Katran does; an IPv4
//! packet without DF is encapsulated and the outer packet fragmented.

use std::net::IpAddr;

use crate::dataplane::frame::{FrameBuf, PacketBuf};
use crate::dataplane::pipeline::{Kind, Parsed, Verdict};
use crate::dataplane::stats::DropReason;
use crate::snapshot::{Backend, DataplaneSettings};
use crate::wire::ethernet::{self, Address, EtherType};
use crate::wire::ip::IpProtocol;
use crate::wire::{self, icmp, ipv4, ipv6};

/// Hop limit of the headers we originate (outer headers, ICMP errors).
const HOP_LIMIT: u8 = 64;

/// Largest IPv4 ICMP error: the minimum reassembly size (RFC 1812 4.3.2.3).
const ICMPV4_MAX: usize = 576;

/// Largest ICMPv6 error: the IPv6 minimum MTU (RFC 4443 2.4(c)).
const ICMPV6_MAX: usize = 1280;

/// ICMP (v4 and v6) header length.
const ICMP_HEADER_LEN: usize = 8;

/// IPv6 fragment header length.
const FRAG_HEADER_LEN: usize = 8;

/// What encapsulation needs beyond the packet: settings, and buffers for
/// the outer fragments.
pub(crate) struct EncapContext<'a> {
    pub(crate) settings: &'a DataplaneSettings,
    pub(crate) spare: &'a mut Vec<PacketBuf>,
    pub(crate) extra: &'a mut Vec<PacketBuf>,
    pub(crate) frag_ident: &'a mut u32,
}

/// Sends the frame to the backend's MAC (`next_hop`: `None` while it is
/// unresolved, which drops the packet), from the MAC it was sent to.
pub(crate) fn l2dsr<B: FrameBuf>(pkt: &mut B, next_hop: Option<[u8; 6]>) -> Verdict {
    let Some(mac) = next_hop else {
        return Verdict::Drop(DropReason::NoNeighbor);
    };
    set_macs(pkt.bytes_mut(), mac);
    Verdict::Forward
}

/// Dst MAC := `next_hop`, src MAC := the old dst (our own address).
fn set_macs(frame: &mut [u8], next_hop: [u8; 6]) {
    let mut eth = ethernet::Frame::new_unchecked(frame);
    let ours = eth.dst_addr();
    eth.set_src_addr(ours);
    eth.set_dst_addr(Address(next_hop));
}

/// A backend's outer IP-in-IP header, built once per snapshot.
///
/// Every field but the length and the inner protocol is the same for all
/// packets to one backend, so the snapshot stores the header with those
/// two zeroed and, for IPv4, the ones' complement sum of the rest. Per
/// packet, `ipip` copies the bytes, writes the two fields and finishes
/// the checksum with two additions, as Katran does, instead of emitting
/// and summing a fresh header. The result is byte for byte what
/// `ipv4::Repr::emit` / `ipv6::Repr::emit` write.
#[derive(Debug, Clone)]
pub struct EncapTemplate {
    outer: OuterTemplate,
    next_hop: [u8; 6],
}

/// The outer header of an [`EncapTemplate`], with the packet's length and
/// inner protocol (and, for IPv4, the checksum) zeroed.
///
/// The encapsulation source the header was built with is not kept beside
/// it: it is in the header's bytes, and a template small enough to share
/// one cache line with its backend's health (`snapshot::BackendPath`)
/// spares a packet one line.
#[derive(Debug, Clone)]
enum OuterTemplate {
    V4 {
        header: [u8; ipv4::HEADER_LEN],
        /// Folded sum of `header` (length, protocol and checksum zero).
        partial_sum: u32,
    },
    V6 {
        header: [u8; ipv6::HEADER_LEN],
    },
}

/// Where the source address sits in an outer header.
const V4_SOURCE: core::ops::Range<usize> = 12..16;
const V6_SOURCE: core::ops::Range<usize> = 8..24;

impl EncapTemplate {
    /// The template for `backend` under `settings`; `None` when the backend
    /// has no resolved next hop or its family no encapsulation source (the
    /// general path then drops its packets with the matching reason).
    pub(crate) fn new(backend: &Backend, settings: &DataplaneSettings) -> Option<EncapTemplate> {
        let next_hop = backend.next_hop?;
        let outer = match backend.addr {
            IpAddr::V4(dst) => {
                let source = settings.encap_source_v4?;
                let mut header = [0u8; ipv4::HEADER_LEN];
                let repr = ipv4::Repr {
                    src_addr: source,
                    dst_addr: dst,
                    next_header: IpProtocol::Unknown(0),
                    payload_len: 0,
                    ttl: HOP_LIMIT,
                    dont_frag: true,
                    ident: 0,
                };
                let mut ip = ipv4::Packet::new_unchecked(&mut header[..]);
                repr.emit(&mut ip).ok()?;
                ip.set_total_len(0);
                ip.set_checksum(0);
                OuterTemplate::V4 {
                    header,
                    partial_sum: wire::checksum::sum(&header),
                }
            }
            IpAddr::V6(dst) => {
                let source = settings.encap_source_v6?;
                let mut header = [0u8; ipv6::HEADER_LEN];
                let repr = ipv6::Repr {
                    src_addr: source,
                    dst_addr: dst,
                    next_header: IpProtocol::Unknown(0),
                    payload_len: 0,
                    hop_limit: HOP_LIMIT,
                };
                repr.emit(&mut ipv6::Packet::new_unchecked(&mut header[..]))
                    .ok()?;
                OuterTemplate::V6 { header }
            }
        };
        Some(EncapTemplate { outer, next_hop })
    }

    /// Length of the outer header.
    fn header_len(&self) -> usize {
        match self.outer {
            OuterTemplate::V4 { .. } => ipv4::HEADER_LEN,
            OuterTemplate::V6 { .. } => ipv6::HEADER_LEN,
        }
    }

    /// Whether the template still agrees with `settings` (a snapshot's
    /// settings are a public field and could be edited after building).
    fn fits(&self, settings: &DataplaneSettings) -> bool {
        match &self.outer {
            OuterTemplate::V4 { header, .. } => settings
                .encap_source_v4
                .is_some_and(|s| header[V4_SOURCE] == s.octets()),
            OuterTemplate::V6 { header } => settings
                .encap_source_v6
                .is_some_and(|s| header[V6_SOURCE] == s.octets()),
        }
    }
}

/// The common case of [`ipip`]: a packet that fits the MTU once
/// encapsulated, towards a backend with a template. `None`, with nothing
/// changed, when the template does not apply or the packet needs
/// fragmentation or an ICMP error: the caller then takes [`ipip`].
#[inline(always)]
pub(crate) fn ipip_template<B: FrameBuf>(
    pkt: &mut B,
    p: &Parsed,
    t: &EncapTemplate,
    settings: &DataplaneSettings,
) -> Option<Verdict> {
    let hdr_len = t.header_len();
    if !t.fits(settings) || p.ip_len > usize::from(settings.mtu).saturating_sub(hdr_len) {
        return None;
    }
    let l2 = p.l3;
    let inner_proto = if p.v6 {
        IpProtocol::Ipv6
    } else {
        IpProtocol::Ipv4
    };
    let too_big = Some(Verdict::Drop(DropReason::TooBig));
    let Some(frame) = pkt.set_len_prepend(l2 + p.ip_len, hdr_len) else {
        return too_big;
    };
    if l2 == ethernet::HEADER_LEN {
        return Some(
            untagged(frame, p.ip_len, inner_proto, t).unwrap_or(Verdict::Drop(DropReason::TooBig)),
        );
    }
    // The Ethernet header moves to the new front and the outer IP header
    // goes where it was. Fixed-size copies: the Ethernet header is read as
    // 18 bytes (room for a VLAN tag) and written back with the new
    // addresses; for an untagged frame the outer header then overwrites
    // the 4 bytes too many. The inner IP header guarantees the 18 bytes.
    let (outer_type, outer_len) = match &t.outer {
        OuterTemplate::V4 { .. } => (EtherType::Ipv4, ipv4::HEADER_LEN),
        OuterTemplate::V6 { .. } => (EtherType::Ipv6, ipv6::HEADER_LEN),
    };
    let Some(old) = frame
        .get(hdr_len..hdr_len + ethernet::VLAN_HEADER_LEN)
        .and_then(|b| <[u8; ethernet::VLAN_HEADER_LEN]>::try_from(b).ok())
    else {
        return too_big;
    };
    let Some(eth) = frame.get_mut(..ethernet::VLAN_HEADER_LEN) else {
        return too_big;
    };
    eth.copy_from_slice(&old);
    set_macs(eth, t.next_hop);
    // The EtherType is the last two bytes of the Ethernet header, after
    // the VLAN tag if there is one.
    let Some(ethertype) = frame.get_mut(l2 - 2..l2) else {
        return too_big;
    };
    ethertype.copy_from_slice(&u16::from(outer_type).to_be_bytes());
    let Some(outer) = frame.get_mut(l2..l2 + outer_len) else {
        return too_big;
    };
    if fill_outer(outer, &t.outer, p.ip_len, inner_proto).is_none() {
        return too_big;
    }
    Some(Verdict::Forward)
}

/// Writes the outer header from its template into `outer` (exactly the
/// template's length) for an inner packet of `ip_len` bytes: the two
/// per-packet fields and, for IPv4, the checksum finished from the
/// template's partial sum. `None` when the lengths do not fit the fields.
#[inline(always)]
fn fill_outer(
    outer: &mut [u8],
    template: &OuterTemplate,
    ip_len: usize,
    inner_proto: IpProtocol,
) -> Option<()> {
    match template {
        OuterTemplate::V4 {
            header,
            partial_sum,
            ..
        } => {
            let total = u16::try_from(ipv4::HEADER_LEN + ip_len).ok()?;
            outer.copy_from_slice(header);
            let mut ip = ipv4::Packet::new_unchecked(outer);
            ip.set_total_len(total);
            ip.set_next_header(inner_proto);
            // The protocol is the low byte of the TTL/protocol word.
            let sum = partial_sum + u32::from(total) + u32::from(u8::from(inner_proto));
            ip.set_checksum(!wire::checksum::fold(sum));
        }
        OuterTemplate::V6 { header, .. } => {
            let len = u16::try_from(ip_len).ok()?;
            outer.copy_from_slice(header);
            let mut ip = ipv6::Packet::new_unchecked(outer);
            ip.set_payload_len(len);
            ip.set_next_header(inner_proto);
        }
    }
    Some(())
}

/// [`ipip_template`] for an untagged frame (the common case) once the
/// outer header's room is prepended: fixed-size writes into the frame's
/// head, so no length is checked twice. `None` only if the frame is
/// shorter than its new headers, which the caller's checks rule out.
#[inline(always)]
fn untagged(
    frame: &mut [u8],
    ip_len: usize,
    inner_proto: IpProtocol,
    t: &EncapTemplate,
) -> Option<Verdict> {
    const ETH: usize = ethernet::HEADER_LEN;
    // Fixed-size heads per family, so the writes below need no checks.
    match &t.outer {
        OuterTemplate::V4 { .. } => {
            let head = frame.first_chunk_mut::<{ ETH + ipv4::HEADER_LEN }>()?;
            untagged_ethernet(head, t.next_hop, EtherType::Ipv4);
            fill_outer(&mut head[ETH..], &t.outer, ip_len, inner_proto)?;
        }
        OuterTemplate::V6 { .. } => {
            let head = frame.first_chunk_mut::<{ ETH + ipv6::HEADER_LEN }>()?;
            untagged_ethernet(head, t.next_hop, EtherType::Ipv6);
            fill_outer(&mut head[ETH..], &t.outer, ip_len, inner_proto)?;
        }
    }
    Some(Verdict::Forward)
}

/// The new Ethernet header at the front of `head`: to `next_hop`, from the
/// MAC the client sent to (read from the old header, which the prepend
/// left at `head.len() - 14`), with the outer `ethertype`.
#[inline(always)]
fn untagged_ethernet(head: &mut [u8], next_hop: [u8; 6], ethertype: EtherType) {
    let old = head.len() - ethernet::HEADER_LEN;
    let mut ours = [0u8; 6];
    ours.copy_from_slice(&head[old..old + 6]);
    let mut eth = ethernet::Frame::new_unchecked(&mut head[..ethernet::HEADER_LEN]);
    eth.set_dst_addr(Address(next_hop));
    eth.set_src_addr(Address(ours));
    eth.set_ethertype(ethertype);
}

/// Encapsulates the packet in IP towards `backend`, in every case: builds
/// the outer header field by field, fragments the outer packet or answers
/// with an ICMP error.
pub(crate) fn ipip<B: FrameBuf>(
    pkt: &mut B,
    p: &Parsed,
    backend: &Backend,
    ctx: EncapContext<'_>,
) -> Verdict {
    let outer_v6 = backend.addr.is_ipv6();
    let outer_len = if outer_v6 {
        ipv6::HEADER_LEN
    } else {
        ipv4::HEADER_LEN
    };
    let mtu = usize::from(ctx.settings.mtu);
    let room = mtu.saturating_sub(outer_len);
    let fragment = p.ip_len > room;
    if fragment && (p.v6 || p.dont_frag) {
        // Never an ICMP error about an ICMP error (RFC 1122 3.2.2).
        if p.kind == Kind::IcmpError {
            return Verdict::Drop(DropReason::TooBig);
        }
        return icmp_too_big(pkt, p, room);
    }
    let src = match (backend.addr, ctx.settings) {
        (
            IpAddr::V4(_),
            DataplaneSettings {
                encap_source_v4: Some(s),
                ..
            },
        ) => IpAddr::V4(*s),
        (
            IpAddr::V6(_),
            DataplaneSettings {
                encap_source_v6: Some(s),
                ..
            },
        ) => IpAddr::V6(*s),
        _ => return Verdict::Drop(DropReason::NoEncapSource),
    };
    let Some(mac) = backend.next_hop else {
        return Verdict::Drop(DropReason::NoNeighbor);
    };
    let inner_proto = if p.v6 {
        IpProtocol::Ipv6
    } else {
        IpProtocol::Ipv4
    };
    let l2 = p.l3;
    // An IPv6 outer packet that is fragmented carries a fragment header.
    let hdr_len = if fragment && outer_v6 {
        outer_len + FRAG_HEADER_LEN
    } else {
        outer_len
    };
    if !pkt.set_len(l2 + p.ip_len) || !pkt.prepend(hdr_len) {
        return Verdict::Drop(DropReason::TooBig);
    }
    let frame = pkt.bytes_mut();
    frame.copy_within(hdr_len..hdr_len + l2, 0);
    set_macs(frame, mac);
    let ethertype = if outer_v6 {
        EtherType::Ipv6
    } else {
        EtherType::Ipv4
    };
    frame[l2 - 2..l2].copy_from_slice(&u16::from(ethertype).to_be_bytes());
    let outer = OuterHeader {
        src,
        dst: backend.addr,
        inner_proto,
        dont_frag: !fragment,
    };
    if !fragment {
        return match outer.emit(&mut frame[l2..], p.ip_len, None) {
            Ok(()) => Verdict::Forward,
            Err(_) => Verdict::Drop(DropReason::TooBig),
        };
    }
    fragment_outer(pkt, l2, hdr_len, p.ip_len, &outer, room, ctx)
}

/// The outer header of one encapsulated packet or fragment.
struct OuterHeader {
    src: IpAddr,
    dst: IpAddr,
    inner_proto: IpProtocol,
    dont_frag: bool,
}

/// Offset and more-fragments flag of one outer fragment, and the
/// datagram's identification.
#[derive(Clone, Copy)]
struct FragInfo {
    /// In bytes; a multiple of 8 below 65536.
    offset: u16,
    more: bool,
    ident: u32,
}

impl OuterHeader {
    /// Writes the outer header (and the IPv6 fragment header when `frag`
    /// is set and the outer family is IPv6) at the start of `buf`, for
    /// `payload_len` bytes of inner packet behind it.
    ///
    /// Fails only on a buffer too short for the header or a length that
    /// does not fit the header's fields; the caller drops the packet then.
    fn emit(&self, buf: &mut [u8], payload_len: usize, frag: Option<FragInfo>) -> wire::Result<()> {
        match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let repr = ipv4::Repr {
                    src_addr: src,
                    dst_addr: dst,
                    next_header: self.inner_proto,
                    payload_len,
                    ttl: HOP_LIMIT,
                    dont_frag: self.dont_frag,
                    ident: frag.map_or(0, |f| low16(f.ident)),
                };
                let mut ip = ipv4::Packet::new_unchecked(&mut buf[..ipv4::HEADER_LEN]);
                repr.emit(&mut ip)?;
                if let Some(f) = frag {
                    ip.set_more_frags(f.more);
                    ip.set_frag_offset(f.offset);
                    ip.fill_checksum();
                }
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let extra = if frag.is_some() { FRAG_HEADER_LEN } else { 0 };
                let repr = ipv6::Repr {
                    src_addr: src,
                    dst_addr: dst,
                    next_header: if frag.is_some() {
                        IpProtocol::Ipv6Frag
                    } else {
                        self.inner_proto
                    },
                    payload_len: payload_len + extra,
                    hop_limit: HOP_LIMIT,
                };
                let mut ip = ipv6::Packet::new_unchecked(&mut buf[..ipv6::HEADER_LEN]);
                repr.emit(&mut ip)?;
                if let Some(f) = frag {
                    let h = buf
                        .get_mut(ipv6::HEADER_LEN..ipv6::HEADER_LEN + FRAG_HEADER_LEN)
                        .ok_or(wire::Error::Truncated)?;
                    h[0] = u8::from(self.inner_proto);
                    h[1] = 0;
                    let off = f.offset | u16::from(f.more);
                    h[2..4].copy_from_slice(&off.to_be_bytes());
                    h[4..8].copy_from_slice(&f.ident.to_be_bytes());
                }
            }
            _ => return Err(wire::Error::Malformed),
        }
        Ok(())
    }
}

/// Splits an encapsulated packet (already in `pkt`: Ethernet header, outer
/// header of `hdr_len`, `inner_len` bytes of inner packet) into fragments
/// that fit `room` bytes of payload; the first stays in `pkt`, the others
/// go to `ctx.extra`.
fn fragment_outer<B: FrameBuf>(
    pkt: &mut B,
    l2: usize,
    hdr_len: usize,
    inner_len: usize,
    outer: &OuterHeader,
    room: usize,
    ctx: EncapContext<'_>,
) -> Verdict {
    let per_frag = if outer.dst.is_ipv6() {
        room.saturating_sub(FRAG_HEADER_LEN)
    } else {
        room
    } & !7;
    if per_frag == 0 {
        return Verdict::Drop(DropReason::TooBig);
    }
    let count = inner_len.div_ceil(per_frag);
    if count.saturating_sub(1) > ctx.spare.len() {
        return Verdict::Drop(DropReason::TooBig);
    }
    *ctx.frag_ident = ctx.frag_ident.wrapping_add(1);
    let ident = *ctx.frag_ident;
    let head = l2 + hdr_len;
    let frame = pkt.bytes();
    for i in 1..count {
        let off = i * per_frag;
        let len = per_frag.min(inner_len - off);
        let Some(mut buf) = ctx.spare.pop() else {
            return Verdict::Drop(DropReason::TooBig);
        };
        buf.load(&frame[..head]);
        if !buf.set_len(head + len) {
            ctx.spare.push(buf);
            return Verdict::Drop(DropReason::TooBig);
        }
        let b = buf.bytes_mut();
        b[head..head + len].copy_from_slice(&frame[head + off..head + off + len]);
        let info = FragInfo {
            offset: u16::try_from(off).unwrap_or(u16::MAX),
            more: i + 1 < count,
            ident,
        };
        if outer.emit(&mut b[l2..], len, Some(info)).is_err() {
            ctx.spare.push(buf);
            return Verdict::Drop(DropReason::TooBig);
        }
        ctx.extra.push(buf);
    }
    let first = FragInfo {
        offset: 0,
        more: true,
        ident,
    };
    if outer
        .emit(&mut pkt.bytes_mut()[l2..], per_frag, Some(first))
        .is_err()
        || !pkt.set_len(head + per_frag)
    {
        return Verdict::Drop(DropReason::TooBig);
    }
    Verdict::Forward
}

/// Rewrites the frame in place into an ICMP error for its sender saying
/// that `mtu` bytes fit: "fragmentation needed" for IPv4, "packet too big"
/// for IPv6. The error quotes the start of the packet and comes from the
/// VIP the client addressed.
fn icmp_too_big<B: FrameBuf>(pkt: &mut B, p: &Parsed, mtu: usize) -> Verdict {
    let l2 = p.l3;
    let (ip_hdr, max) = if p.v6 {
        (ipv6::HEADER_LEN, ICMPV6_MAX)
    } else {
        (ipv4::HEADER_LEN, ICMPV4_MAX)
    };
    let quoted = p.ip_len.min(max - ip_hdr - ICMP_HEADER_LEN);
    let head = ip_hdr + ICMP_HEADER_LEN;
    let new_len = l2 + head + quoted;
    let cur = pkt.bytes().len();
    if !pkt.set_len(cur.max(new_len)) {
        return Verdict::Drop(DropReason::TooBig);
    }
    let frame = pkt.bytes_mut();
    frame.copy_within(l2..l2 + quoted, l2 + head);
    let mut eth = ethernet::Frame::new_unchecked(&mut frame[..]);
    let (client, ours) = (eth.src_addr(), eth.dst_addr());
    eth.set_dst_addr(client);
    eth.set_src_addr(ours);
    let icmp_len = ICMP_HEADER_LEN + quoted;
    match (p.dst_ip(), p.src_ip()) {
        (IpAddr::V4(vip), IpAddr::V4(client_ip)) => {
            let repr = ipv4::Repr {
                src_addr: vip,
                dst_addr: client_ip,
                next_header: IpProtocol::Icmp,
                payload_len: icmp_len,
                ttl: HOP_LIMIT,
                dont_frag: false,
                ident: 0,
            };
            let mtu = u16::try_from(mtu).unwrap_or(u16::MAX);
            let msg = &mut frame[l2 + ip_hdr..l2 + ip_hdr + icmp_len];
            if icmp::emit_frag_needed(msg, mtu, quoted).is_err()
                || repr
                    .emit(&mut ipv4::Packet::new_unchecked(
                        &mut frame[l2..l2 + ip_hdr],
                    ))
                    .is_err()
            {
                return Verdict::Drop(DropReason::TooBig);
            }
        }
        (IpAddr::V6(vip), IpAddr::V6(client_ip)) => {
            let repr = ipv6::Repr {
                src_addr: vip,
                dst_addr: client_ip,
                next_header: IpProtocol::Icmpv6,
                payload_len: icmp_len,
                hop_limit: HOP_LIMIT,
            };
            let mtu = u32::try_from(mtu).unwrap_or(u32::MAX);
            let msg = &mut frame[l2 + ip_hdr..l2 + ip_hdr + icmp_len];
            if icmp::emit_packet_too_big(msg, mtu, quoted, vip, client_ip).is_err()
                || repr
                    .emit(&mut ipv6::Packet::new_unchecked(
                        &mut frame[l2..l2 + ip_hdr],
                    ))
                    .is_err()
            {
                return Verdict::Drop(DropReason::TooBig);
            }
        }
        _ => return Verdict::Drop(DropReason::Malformed),
    }
    if !pkt.set_len(new_len) {
        return Verdict::Drop(DropReason::TooBig);
    }
    Verdict::Reply
}

/// The low 16 bits: IPv4 identification is 16 bits wide, IPv6's 32.
fn low16(x: u32) -> u16 {
    let [_, _, hi, lo] = x.to_be_bytes();
    u16::from_be_bytes([hi, lo])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    /// A template agrees with the settings it was built under and with no
    /// others: `fits` reads the source from the header's own bytes.
    #[test]
    fn a_template_fits_only_the_settings_it_was_built_with() {
        let built = testkit::settings(1500);
        let other_v4 = DataplaneSettings {
            encap_source_v4: Some(std::net::Ipv4Addr::new(198, 51, 100, 99)),
            ..built.clone()
        };
        let other_v6 = DataplaneSettings {
            encap_source_v6: Some("2001:db8:ffff::99".parse().unwrap()),
            ..built.clone()
        };
        let none = DataplaneSettings {
            encap_source_v4: None,
            encap_source_v6: None,
            ..built.clone()
        };
        let v4 = Backend {
            // Not the encapsulation source's address: the test tells the
            // two apart.
            addr: IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 10)),
            next_hop: Some(testkit::backend_mac(0, 1)),
            healthy: true,
        };
        let v6 = Backend {
            addr: "2001:db8:1::1".parse().unwrap(),
            ..v4.clone()
        };
        let t4 = EncapTemplate::new(&v4, &built).unwrap();
        let t6 = EncapTemplate::new(&v6, &built).unwrap();
        assert!(t4.fits(&built) && t6.fits(&built));
        assert!(!t4.fits(&other_v4) && t6.fits(&other_v4));
        assert!(t4.fits(&other_v6) && !t6.fits(&other_v6));
        assert!(!t4.fits(&none) && !t6.fits(&none));
    }
}
