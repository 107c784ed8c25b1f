//! Writes seed corpora for the fuzz targets (`fuzz/README.md`), so that the
//! fuzzer starts deep in the code instead of finding a VIP or a zone name
//! byte by byte.
//!
//! `cargo run --example fuzz_seeds -- fuzz/corpus`
//!
//! `pipeline/`: each file is one input, frames each after its 2-byte
//! big-endian length (`cutover::testkit::split_frames`), to the addresses
//! of the harness's snapshot (`testkit::snapshot(2, 3, ..)`): services 0
//! and 1. `dns/`: queries for the harness's zone (`testkit::FUZZ_ZONE`).

use std::path::{Path, PathBuf};

use cutover::testkit::{dns_query, vip_v4, vip_v6, DnsHarness, FuzzHarness, CLIENT_MAC, LB_MAC};
use etherparse::{icmpv4, Icmpv4Type, Icmpv6Type, IpHeaders, IpNumber, Ipv4Header, PacketBuilder};
use hickory_proto::op::OpCode;
use hickory_proto::rr::RecordType;

type Frame = Vec<u8>;

const CLIENT_V4: [u8; 4] = [192, 0, 2, 1];
const CLIENT_V6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// An IPv4 header from the client to service 0 with the given fragment
/// fields.
fn v4_header(
    protocol: IpNumber,
    df: bool,
    mf: bool,
    offset: u16,
) -> Result<Ipv4Header, Box<dyn std::error::Error>> {
    let mut ip = Ipv4Header::new(0, 64, protocol, CLIENT_V4, vip_v4(0).octets())?;
    ip.dont_fragment = df;
    ip.more_fragments = mf;
    ip.fragment_offset = offset.try_into()?;
    Ok(ip)
}

fn tcp_v4(flags: &str, payload: usize, df: bool) -> Result<Frame, Box<dyn std::error::Error>> {
    let ip = v4_header(IpNumber::TCP, df, false, 0)?;
    let mut b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ip(IpHeaders::Ipv4(ip, Default::default()))
        .tcp(40000, 80, 1, 1024);
    for f in flags.chars() {
        b = match f {
            'S' => b.syn(),
            'A' => b.ack(1),
            'F' => b.fin(),
            'R' => b.rst(),
            _ => b,
        };
    }
    let mut v = Vec::new();
    b.write(&mut v, &vec![0x61; payload])?;
    Ok(v)
}

fn udp_v4(dst: [u8; 4], payload: usize) -> Result<Frame, Box<dyn std::error::Error>> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(CLIENT_V4, dst, 64)
        .udp(40000, 53)
        .write(&mut v, &vec![0x62; payload])?;
    Ok(v)
}

/// The two fragments of one UDP datagram: ports only in the first.
fn fragments_v4() -> Result<[Frame; 2], Box<dyn std::error::Error>> {
    let mut first = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ip(IpHeaders::Ipv4(
            v4_header(IpNumber::UDP, false, true, 0)?,
            Default::default(),
        ))
        .udp(40000, 53)
        .write(&mut first, &[0x63; 56])?;
    let mut later = Vec::new();
    etherparse::Ethernet2Header {
        source: CLIENT_MAC,
        destination: LB_MAC,
        ether_type: etherparse::EtherType::IPV4,
    }
    .write(&mut later)?;
    let mut ip = v4_header(IpNumber::UDP, false, false, 8)?;
    ip.set_payload_len(64)?;
    ip.write(&mut later)?;
    later.extend_from_slice(&[0x64; 64]);
    Ok([first, later])
}

fn tcp_v4_options() -> Result<Frame, Box<dyn std::error::Error>> {
    let mut ip = v4_header(IpNumber::TCP, true, false, 0)?;
    ip.options = [1u8, 1, 1, 0][..].try_into()?;
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ip(IpHeaders::Ipv4(ip, Default::default()))
        .tcp(40001, 80, 1, 1024)
        .syn()
        .write(&mut v, &[])?;
    Ok(v)
}

fn tcp_v4_vlan() -> Result<Frame, Box<dyn std::error::Error>> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .single_vlan(5.try_into()?)
        .ipv4(CLIENT_V4, vip_v4(1).octets(), 64)
        .tcp(40002, 80, 1, 1024)
        .syn()
        .write(&mut v, &[])?;
    Ok(v)
}

fn tcp_v6(payload: usize) -> Result<Frame, Box<dyn std::error::Error>> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(CLIENT_V6, vip_v6(0).octets(), 64)
        .tcp(40003, 80, 1, 1024)
        .syn()
        .write(&mut v, &vec![0x65; payload])?;
    Ok(v)
}

/// A path-MTU error from a router to service 0's VIP about the flow of
/// `tcp_v4` (IPv4) or `tcp_v6`: it quotes the start of the backend's reply
/// to the client, which the pipeline turns around to find the flow. With
/// `fragment` (IPv6 only) the quoted reply is a first fragment: a
/// fragment header sits between its IPv6 and TCP headers.
fn path_mtu_error(v6: bool, fragment: bool) -> Result<Frame, Box<dyn std::error::Error>> {
    let (reply, port) = if v6 {
        (
            PacketBuilder::ipv6(vip_v6(0).octets(), CLIENT_V6, 63),
            40003,
        )
    } else {
        (
            PacketBuilder::ipv4(vip_v4(0).octets(), CLIENT_V4, 63),
            40000,
        )
    };
    let mut quote = Vec::new();
    reply
        .tcp(80, port, 7, 1024)
        .ack(2)
        .write(&mut quote, &[0x66; 40])?;
    if v6 && fragment {
        // Offset 0, more fragments; the next header moves into it.
        let header = [quote[6], 0, 0, 1, 0, 0, 0, 9];
        quote[6] = 44;
        let len = u16::from_be_bytes([quote[4], quote[5]]) + 8;
        quote[4..6].copy_from_slice(&len.to_be_bytes());
        quote.splice(40..40, header);
    }
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC);
    let mut v = Vec::new();
    if v6 {
        let router = [0x20, 1, 0xd, 0xb8, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        eth.ipv6(router, vip_v6(0).octets(), 64)
            .icmpv6(Icmpv6Type::PacketTooBig { mtu: 1280 })
            .write(&mut v, &quote)?;
    } else {
        let t = Icmpv4Type::DestinationUnreachable(
            icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
        );
        eth.ipv4([203, 0, 113, 1], vip_v4(0).octets(), 64)
            .icmpv4(t)
            .write(&mut v, &quote)?;
    }
    Ok(v)
}

/// Echo requests to service 0's VIPs, IPv4 and IPv6.
fn pings() -> Result<[Frame; 2], Box<dyn std::error::Error>> {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(CLIENT_V4, vip_v4(0).octets(), 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut v4, &[0x67; 56])?;
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(CLIENT_V6, vip_v6(0).octets(), 64)
        .icmpv6_echo_request(1, 1)
        .write(&mut v6, &[0x68; 56])?;
    Ok([v4, v6])
}

/// IPv6 to service 1 with one extension header (`next` 0: hop-by-hop,
/// 44: fragment) before a UDP header, written by hand.
fn udp_v6_extension(next: u8) -> Frame {
    let ext: [u8; 8] = match next {
        44 => [17, 0, 0, 1, 0, 0, 0, 7], // offset 0, more fragments
        _ => [17, 0, 1, 4, 0, 0, 0, 0],  // PadN
    };
    let udp = [
        0x9c, 0x40, 0, 53, 0, 16, 0, 0, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
    ];
    let mut v = Vec::new();
    v.extend_from_slice(&LB_MAC);
    v.extend_from_slice(&CLIENT_MAC);
    v.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 24, next, 64]);
    v.extend_from_slice(&CLIENT_V6);
    v.extend_from_slice(&vip_v6(1).octets());
    v.extend_from_slice(&ext);
    v.extend_from_slice(&udp);
    v
}

/// `frames` as one fuzz input.
fn input(frames: &[&Frame]) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut v = Vec::new();
    for f in frames {
        v.extend_from_slice(&u16::try_from(f.len())?.to_be_bytes());
        v.extend_from_slice(f);
    }
    Ok(v)
}

fn dns_seeds(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let q = |name, rtype, edns| dns_query(name, rtype, OpCode::Query, edns);
    let seeds = [
        ("a", q("svc0.svc.example.", RecordType::A, None)?),
        (
            "aaaa-edns",
            q("svc1.svc.example.", RecordType::AAAA, Some(1232))?,
        ),
        ("soa", q("svc.example.", RecordType::SOA, Some(4096))?),
        ("ns", q("svc.example.", RecordType::NS, None)?),
        ("any", q("svc0.svc.example.", RecordType::ANY, None)?),
        ("nxdomain", q("nope.svc.example.", RecordType::A, None)?),
        ("outside", q("example.org.", RecordType::A, None)?),
        ("axfr", q("svc.example.", RecordType::AXFR, None)?),
        (
            "update",
            dns_query("svc.example.", RecordType::SOA, OpCode::Update, None)?,
        ),
    ];
    let harness = DnsHarness::new();
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(name), bytes)?;
        println!("dns/{name:16} {:?}", harness.run(bytes));
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root: PathBuf = std::env::args_os()
        .nth(1)
        .ok_or("usage: fuzz_seeds DIR")?
        .into();
    dns_seeds(&root.join("dns"))?;
    let dir = root.join("pipeline");
    std::fs::create_dir_all(&dir)?;
    let syn = tcp_v4("S", 0, true)?;
    let data = tcp_v4("A", 20, true)?;
    let fin = tcp_v4("AF", 0, true)?;
    let rst = tcp_v4("R", 0, true)?;
    let [first, later] = fragments_v4()?;
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("tcp-connection", input(&[&syn, &data, &fin, &syn])?),
        ("tcp-reset", input(&[&syn, &rst, &data])?),
        ("udp", input(&[&udp_v4(vip_v4(1).octets(), 8)?])?),
        ("udp-no-service", input(&[&udp_v4([198, 51, 100, 9], 8)?])?),
        ("too-big-df", input(&[&tcp_v4("A", 560, true)?])?),
        ("too-big-fragmented", input(&[&tcp_v4("A", 560, false)?])?),
        ("ipv4-fragments", input(&[&first, &later, &later])?),
        ("ipv4-options", input(&[&tcp_v4_options()?])?),
        ("vlan", input(&[&tcp_v4_vlan()?])?),
        ("ipv6", input(&[&tcp_v6(0)?, &tcp_v6(600)?])?),
        (
            "icmp-frag-needed",
            input(&[&syn, &path_mtu_error(false, false)?])?,
        ),
        ("echo", input(&pings()?.iter().collect::<Vec<_>>())?),
        (
            "icmpv6-packet-too-big",
            input(&[&tcp_v6(0)?, &path_mtu_error(true, false)?])?,
        ),
        (
            "icmpv6-too-big-fragment",
            input(&[&tcp_v6(0)?, &path_mtu_error(true, true)?])?,
        ),
        (
            "ipv6-extensions",
            input(&[&udp_v6_extension(0), &udp_v6_extension(44)])?,
        ),
    ];
    // What each seed reaches, summed over both forwarding modes and both
    // bursts of the harness.
    let mut harness = FuzzHarness::new();
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(name), bytes)?;
        println!("pipeline/{name:20} {:?}", harness.run(bytes));
    }
    Ok(())
}
