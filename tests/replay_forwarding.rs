//! `cutover replay` over captures built here with etherparse: both
//! forwarding modes, every encapsulation family, drops by reason, ICMP
//! errors for oversize packets and outer fragmentation. Outputs are checked
//! byte by byte against the input, with checksums recomputed by an
//! implementation independent of cutover's `wire` module.

// Synthetic test data: the narrowing casts below are on small counters.
#![allow(clippy::cast_possible_truncation)]

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cutover::io::pcap::{read_pcap, write_pcap};
use etherparse::{IpHeaders, Ipv4Header, PacketBuilder};

const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

const CONFIG: &str = r#"
[dataplane]
driver = "pcap"
forwarding = "ipip"
encap_source_v4 = "10.0.0.2"
encap_source_v6 = "fd00::2"
mtu = 1500

[dataplane.neighbors]
"10.0.1.11" = "02:00:00:00:01:11"
"10.0.1.12" = "02:00:00:00:01:12"
"10.0.1.13" = "02:00:00:00:01:13"
"fd00:1::21" = "02:00:00:00:02:21"
"fd00:1::22" = "02:00:00:00:02:22"
"10.0.2.31" = "02:00:00:00:03:31"
"10.0.2.32" = "02:00:00:00:03:32"

[[vip_pool]]
name = "public"
prefixes = ["203.0.113.0/28", "2001:db8:100::/124"]

[[service]]
name = "web"
pool = "public"
ports = ["tcp/80", "udp/53"]
families = ["ipv4", "ipv6"]
backends = ["10.0.1.11", "10.0.1.12", "10.0.1.13"]

[[service]]
name = "web6"
pool = "public"
ports = ["tcp/80", "udp/53"]
families = ["ipv4", "ipv6"]
backends = ["fd00:1::21", "fd00:1::22"]

[[service]]
name = "dsr"
pool = "public"
forwarding = "l2dsr"
ports = ["tcp/80"]
vips = ["203.0.113.10"]
backends = ["10.0.2.31", "10.0.2.32"]
"#;

/// VIPs the configuration gives: lowest free pool addresses in order.
const WEB_V4: [u8; 4] = [203, 0, 113, 1];
const WEB6_V4: [u8; 4] = [203, 0, 113, 2];
const DSR_V4: [u8; 4] = [203, 0, 113, 10];

fn web_v6() -> [u8; 16] {
    "2001:db8:100::1".parse::<Ipv6Addr>().unwrap().octets()
}
fn web6_v6() -> [u8; 16] {
    "2001:db8:100::2".parse::<Ipv6Addr>().unwrap().octets()
}

fn backend_macs() -> HashMap<IpAddr, [u8; 6]> {
    let mut m = HashMap::new();
    m.insert("10.0.1.11".parse().unwrap(), [2, 0, 0, 0, 1, 0x11]);
    m.insert("10.0.1.12".parse().unwrap(), [2, 0, 0, 0, 1, 0x12]);
    m.insert("10.0.1.13".parse().unwrap(), [2, 0, 0, 0, 1, 0x13]);
    m.insert("fd00:1::21".parse().unwrap(), [2, 0, 0, 0, 2, 0x21]);
    m.insert("fd00:1::22".parse().unwrap(), [2, 0, 0, 0, 2, 0x22]);
    m.insert("10.0.2.31".parse().unwrap(), [2, 0, 0, 0, 3, 0x31]);
    m.insert("10.0.2.32".parse().unwrap(), [2, 0, 0, 0, 3, 0x32]);
    m
}

struct Run {
    _dir: tempfile::TempDir,
    report: cutover::replay::ReplayReport,
    output: Vec<Vec<u8>>,
}

fn config_file(dir: &Path) -> PathBuf {
    let path = dir.join("cutover.toml");
    std::fs::write(&path, CONFIG).unwrap();
    path
}

fn replay(frames: &[Vec<u8>]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = config_file(dir.path());
    let cfg = cutover::control::config::load(&cfg_path).unwrap();
    let input = dir.path().join("in.pcap");
    let output = dir.path().join("out.pcap");
    let stamped: Vec<(Duration, Vec<u8>)> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| (Duration::from_micros(1_000_000 + i as u64), f.clone()))
        .collect();
    write_pcap(&input, &stamped).unwrap();
    let report = cutover::replay::run(&cfg, &input, &output).unwrap();
    let output = read_pcap(&output)
        .unwrap()
        .into_iter()
        .map(|(_, f)| f)
        .collect();
    Run {
        _dir: dir,
        report,
        output,
    }
}

// ---- frames -------------------------------------------------------------

fn tcp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(src, dst, 61)
        .tcp(sport, dport, seq, 64240);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

fn tcp6(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(src, dst, 61)
        .tcp(sport, dport, seq, 64240);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

fn udp4_nodf(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = Ipv4Header::new(0, 61, etherparse::IpNumber::UDP, src, dst).unwrap();
    h.dont_fragment = false;
    h.identification = 0x1234;
    let b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ip(IpHeaders::Ipv4(h, Default::default()))
        .udp(sport, dport);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

fn client4(i: u32) -> [u8; 4] {
    [192, 0, 2, (i % 250) as u8 + 1]
}
fn client6(i: u32) -> [u8; 16] {
    let mut a = "2001:db8:c::".parse::<Ipv6Addr>().unwrap().octets();
    a[15] = (i % 250) as u8 + 1;
    a
}

// ---- independent checks ---------------------------------------------------

/// Ones' complement sum, RFC 1071, written out plainly.
fn ones_sum(data: &[u8]) -> u32 {
    let mut sum = 0u32;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u32::from(chunk[0]) << 8 | u32::from(chunk[1])
        } else {
            u32::from(chunk[0]) << 8
        };
        sum += word;
    }
    sum
}
fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}
/// True when the data (checksum field included) sums to 0xffff.
fn checksum_ok(data: &[u8]) -> bool {
    fold(ones_sum(data)) == 0xffff
}
fn icmpv6_ok(src: &[u8], dst: &[u8], msg: &[u8]) -> bool {
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(src);
    pseudo.extend_from_slice(dst);
    pseudo.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    fold(ones_sum(&pseudo) + ones_sum(msg)) == 0xffff
}

/// An encapsulated frame taken apart: backend, inner packet.
struct Encap {
    backend: IpAddr,
    inner_proto: u8,
    inner: Vec<u8>,
}

/// Checks every field of an `ipip` frame and returns its parts.
fn decap(frame: &[u8], macs: &HashMap<IpAddr, [u8; 6]>) -> Encap {
    assert_eq!(&frame[6..12], &LB_MAC, "source MAC is the LB's");
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let ip = &frame[14..];
    let (backend, inner_proto, inner) = match ethertype {
        0x0800 => {
            assert_eq!(ip[0], 0x45, "outer IPv4 without options");
            let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            assert_eq!(total, ip.len(), "outer length covers the frame");
            assert_eq!(ip[8], 64, "fresh outer TTL");
            assert!(checksum_ok(&ip[..20]), "outer IPv4 header checksum");
            assert_eq!(&ip[12..16], &[10, 0, 0, 2], "outer source from the config");
            let dst = IpAddr::from(<[u8; 4]>::try_from(&ip[16..20]).unwrap());
            (dst, ip[9], ip[20..].to_vec())
        }
        0x86dd => {
            assert_eq!(ip[0] >> 4, 6);
            let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
            assert_eq!(plen + 40, ip.len());
            assert_eq!(ip[7], 64, "fresh hop limit");
            assert_eq!(
                &ip[8..24],
                &"fd00::2".parse::<Ipv6Addr>().unwrap().octets(),
                "outer source from the config"
            );
            let dst = IpAddr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap());
            (dst, ip[6], ip[40..].to_vec())
        }
        other => panic!("unexpected ethertype {other:#06x}"),
    };
    assert_eq!(
        &frame[..6],
        macs.get(&backend).expect("outer destination is a backend"),
        "destination MAC is the backend's next hop"
    );
    Encap {
        backend,
        inner_proto,
        inner,
    }
}

// ---- tests ----------------------------------------------------------------

#[test]
fn ipip_4in4_keeps_each_flow_on_one_backend_and_spreads_flows() {
    let mut frames = Vec::new();
    for flow in 0..300u32 {
        for pkt in 0..4u32 {
            let payload = format!("flow {flow} packet {pkt}");
            frames.push(tcp4(
                client4(flow),
                10_000 + flow as u16,
                WEB_V4,
                80,
                pkt,
                payload.as_bytes(),
            ));
        }
    }
    let run = replay(&frames);
    assert_eq!(run.report.forwarded, 1200);
    assert_eq!(run.output.len(), 1200);
    let macs = backend_macs();
    let mut flow_backend: HashMap<Vec<u8>, IpAddr> = HashMap::new();
    let mut per_backend: HashMap<IpAddr, usize> = HashMap::new();
    for (out, input) in run.output.iter().zip(&frames) {
        let e = decap(out, &macs);
        assert_eq!(e.inner_proto, 4, "4-in-4");
        assert_eq!(e.inner, input[14..], "inner packet byte for byte");
        assert!(
            checksum_ok(&e.inner[..20]),
            "inner IPv4 checksum still valid"
        );
        assert!(
            e.backend.to_string().starts_with("10.0.1.1"),
            "a backend of web"
        );
        let key = e.inner[12..24].to_vec(); // addresses and ports
        let prev = flow_backend.insert(key, e.backend);
        assert!(
            prev.is_none() || prev == Some(e.backend),
            "flow changed backend"
        );
        *per_backend.entry(e.backend).or_default() += 1;
    }
    assert_eq!(
        per_backend.len(),
        3,
        "all backends get flows: {per_backend:?}"
    );
    for (b, n) in &per_backend {
        assert!(*n >= 1200 / 3 / 2, "backend {b} got only {n} packets");
    }
    let web = run.report.vips.iter().find(|v| v.service == "web").unwrap();
    assert_eq!((web.version, web.packets), (1, 1200));
    assert_eq!(web.vip, IpAddr::from(WEB_V4));
}

#[test]
fn ipip_families_6in4_4in6_6in6() {
    let mut frames = Vec::new();
    for i in 0..40u32 {
        frames.push(tcp6(
            client6(i),
            20_000 + i as u16,
            web_v6(),
            80,
            i,
            b"six-in-four",
        ));
        frames.push(tcp4(
            client4(i),
            21_000 + i as u16,
            WEB6_V4,
            80,
            i,
            b"four-in-six",
        ));
        frames.push(tcp6(
            client6(i),
            22_000 + i as u16,
            web6_v6(),
            80,
            i,
            b"six-in-six",
        ));
    }
    let run = replay(&frames);
    assert_eq!(run.output.len(), frames.len());
    let macs = backend_macs();
    let mut seen = HashSet::new();
    for (out, input) in run.output.iter().zip(&frames) {
        let e = decap(out, &macs);
        assert_eq!(e.inner, input[14..], "inner packet byte for byte");
        let inner_v6 = input[12..14] == [0x86, 0xdd];
        assert_eq!(e.inner_proto, if inner_v6 { 41 } else { 4 });
        seen.insert((e.backend.is_ipv6(), inner_v6));
    }
    assert_eq!(
        seen.len(),
        3,
        "6-in-4, 4-in-6 and 6-in-6 all seen: {seen:?}"
    );
}

#[test]
fn l2dsr_rewrites_only_the_ethernet_addresses() {
    let frames: Vec<Vec<u8>> = (0..200u32)
        .map(|i| {
            tcp4(
                client4(i),
                30_000 + i as u16,
                DSR_V4,
                80,
                i,
                b"direct server return",
            )
        })
        .collect();
    let run = replay(&frames);
    assert_eq!(run.output.len(), 200);
    let allowed = [[2, 0, 0, 0, 3, 0x31], [2, 0, 0, 0, 3, 0x32]];
    let mut used = HashSet::new();
    for (out, input) in run.output.iter().zip(&frames) {
        assert_eq!(out.len(), input.len());
        assert!(
            allowed.iter().any(|m| out[..6] == m[..]),
            "dst MAC is a backend's"
        );
        assert_eq!(&out[6..12], &LB_MAC, "src MAC is the LB's");
        assert_eq!(out[12..], input[12..], "the IP packet is untouched");
        used.insert(out[..6].to_vec());
    }
    assert_eq!(used.len(), 2, "both backends used");
}

#[test]
fn unknown_destinations_and_malformed_frames_are_dropped_and_counted() {
    let good = tcp4(client4(1), 40_000, WEB_V4, 80, 1, b"ok");
    let unknown_vip = tcp4(client4(1), 40_001, [203, 0, 113, 9], 80, 1, b"x");
    let unknown_port = tcp4(client4(1), 40_002, WEB_V4, 81, 1, b"x");
    let udp_port_of_tcp_service = {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
            .ipv4(client4(1), DSR_V4, 64)
            .udp(40_003, 80)
            .write(&mut v, b"x")
            .unwrap();
        v
    };
    let truncated_tcp = good[..14 + 20 + 10].to_vec();
    let truncated_ip = good[..14 + 12].to_vec();
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x44; // IHL 4 < 5
    let mut ihl_past_end = good.clone();
    ihl_past_end[14] = 0x4f;
    ihl_past_end.truncate(14 + 40);
    let arp = {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&CLIENT_MAC);
        f.extend_from_slice(&[0x08, 0x06]);
        f.extend_from_slice(&[0u8; 28]);
        f
    };
    let runt = vec![1, 2, 3];
    let frames = vec![
        good.clone(),
        unknown_vip,
        unknown_port,
        udp_port_of_tcp_service,
        truncated_tcp,
        truncated_ip,
        bad_ihl,
        ihl_past_end,
        arp,
        runt,
    ];
    let run = replay(&frames);
    assert_eq!(run.output.len(), 1, "only the good frame is forwarded");
    assert_eq!(decap(&run.output[0], &backend_macs()).inner, good[14..]);
    let d = &run.report.drops;
    assert_eq!(d["no_service"], 3, "{d:?}");
    assert_eq!(d["malformed"], 5, "{d:?}");
    assert_eq!(d["not_ip"], 1, "{d:?}");
    assert_eq!(run.report.packets_in, 10);
}

#[test]
fn oversize_ipv4_with_df_gets_fragmentation_needed() {
    let payload = vec![0xab; 1500 - 20 - 20];
    let big = tcp4(client4(7), 50_000, WEB_V4, 80, 9, &payload);
    assert_eq!(big.len(), 14 + 1500);
    let run = replay(std::slice::from_ref(&big));
    assert_eq!(run.report.icmp_replies, 1);
    assert_eq!(run.report.forwarded, 0);
    assert_eq!(run.report.drops["too_big"], 1);
    let r = &run.output[0];
    assert_eq!(&r[..6], &CLIENT_MAC, "back to the client");
    assert_eq!(&r[6..12], &LB_MAC);
    let ip = &r[14..];
    assert_eq!(ip[9], 1, "ICMP");
    assert!(checksum_ok(&ip[..20]), "IPv4 header checksum");
    assert_eq!(&ip[12..16], &WEB_V4, "from the VIP");
    assert_eq!(&ip[16..20], &client4(7), "to the client");
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    assert_eq!(total, 576, "as much of the packet as fits 576 bytes");
    let icmp = &ip[20..total];
    assert_eq!((icmp[0], icmp[1]), (3, 4), "fragmentation needed");
    assert_eq!(
        u16::from_be_bytes([icmp[6], icmp[7]]),
        1480,
        "MTU minus outer header"
    );
    assert!(checksum_ok(icmp), "ICMP checksum");
    assert_eq!(&icmp[8..], &big[14..14 + 548], "quotes the original packet");
}

#[test]
fn oversize_ipv6_gets_packet_too_big() {
    let payload = vec![0xcd; 1500 - 40 - 20];
    let big = tcp6(client6(3), 50_001, web6_v6(), 80, 9, &payload);
    let run = replay(std::slice::from_ref(&big));
    assert_eq!(run.report.icmp_replies, 1);
    let r = &run.output[0];
    assert_eq!(&r[..6], &CLIENT_MAC);
    let ip = &r[14..];
    assert_eq!(ip[6], 58, "ICMPv6");
    assert_eq!(&ip[8..24], &web6_v6(), "from the VIP");
    assert_eq!(&ip[24..40], &client6(3), "to the client");
    let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    assert_eq!(40 + plen, 1280, "as much as fits the IPv6 minimum MTU");
    let icmp = &ip[40..40 + plen];
    assert_eq!((icmp[0], icmp[1]), (2, 0), "packet too big");
    assert_eq!(
        u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]),
        1460,
        "6-in-6 leaves 1460"
    );
    assert!(icmpv6_ok(&ip[8..24], &ip[24..40], icmp), "ICMPv6 checksum");
    assert_eq!(&icmp[8..], &big[14..14 + 1232]);
}

#[test]
fn oversize_ipv4_without_df_is_encapsulated_and_fragmented() {
    let payload: Vec<u8> = (0..1472u32).map(|i| i as u8).collect();
    let big = udp4_nodf(client4(9), 53_000, WEB_V4, 53, &payload);
    assert_eq!(big.len(), 14 + 1500);
    let run = replay(std::slice::from_ref(&big));
    assert_eq!(run.report.forwarded, 1);
    assert_eq!(run.report.extra_fragments, 1);
    assert_eq!(run.output.len(), 2);
    let macs = backend_macs();
    let mut reassembled = vec![0u8; 1500];
    let mut backends = HashSet::new();
    let mut covered = 0;
    for f in &run.output {
        let ip = &f[14..];
        assert!(
            checksum_ok(&ip[..20]),
            "outer header checksum of each fragment"
        );
        assert!(ip.len() <= 1500, "each fragment fits the MTU");
        assert_eq!(ip[9], 4);
        let flags_off = u16::from_be_bytes([ip[6], ip[7]]);
        let off = ((flags_off & 0x1fff) * 8) as usize;
        let more = flags_off & 0x2000 != 0;
        assert_eq!(flags_off & 0x4000, 0, "no DF on fragments");
        let data = &ip[20..];
        reassembled[off..off + data.len()].copy_from_slice(data);
        covered += data.len();
        assert_eq!(more, off == 0, "first fragment has MF, last has not");
        backends.insert(IpAddr::from(<[u8; 4]>::try_from(&ip[16..20]).unwrap()));
        assert_eq!(&f[..6], macs.get(backends.iter().next().unwrap()).unwrap());
    }
    assert_eq!(backends.len(), 1, "both fragments to one backend");
    assert_eq!(covered, 1500);
    assert_eq!(
        reassembled,
        big[14..],
        "fragments reassemble to the client's packet"
    );
}

#[test]
fn fragments_of_one_datagram_reach_one_backend() {
    // Client-side fragments: the first carries the UDP header, the second
    // only data; they must land on one backend for every datagram.
    let mut frames = Vec::new();
    for i in 0..60u32 {
        let payload = vec![i as u8; 100];
        let whole = udp4_nodf(client4(i), 5000 + i as u16, WEB_V4, 53, &payload);
        let ip = &whole[14..];
        let (hdr, body) = ip.split_at(20);
        for (off, chunk) in [(0usize, &body[..64]), (64, &body[64..])] {
            let mut h = hdr.to_vec();
            let more = off == 0;
            let field = ((off / 8) as u16) | if more { 0x2000 } else { 0 };
            h[6..8].copy_from_slice(&field.to_be_bytes());
            h[2..4].copy_from_slice(&((20 + chunk.len()) as u16).to_be_bytes());
            h[4..6].copy_from_slice(&(i as u16).to_be_bytes());
            h[10..12].copy_from_slice(&[0, 0]);
            let c = !fold(ones_sum(&h));
            h[10..12].copy_from_slice(&c.to_be_bytes());
            let mut f = whole[..14].to_vec();
            f.extend_from_slice(&h);
            f.extend_from_slice(chunk);
            frames.push(f);
        }
    }
    let run = replay(&frames);
    assert_eq!(run.output.len(), 120);
    let macs = backend_macs();
    let mut used = HashSet::new();
    for pair in run.output.chunks(2) {
        let a = decap(&pair[0], &macs).backend;
        let b = decap(&pair[1], &macs).backend;
        assert_eq!(a, b, "both fragments of a datagram to one backend");
        used.insert(a);
    }
    assert!(used.len() >= 2, "datagrams still spread over backends");
}

#[test]
fn vlan_tagged_frames_keep_their_tag() {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .single_vlan(etherparse::VlanId::try_new(42).unwrap())
        .ipv4(client4(1), WEB_V4, 64)
        .tcp(1234, 80, 1, 1000)
        .write(&mut v, b"tagged")
        .unwrap();
    let run = replay(std::slice::from_ref(&v));
    assert_eq!(run.output.len(), 1);
    let out = &run.output[0];
    assert_eq!(&out[12..14], &[0x81, 0x00], "still tagged");
    assert_eq!(&out[14..16], &v[14..16], "same VLAN id");
    assert_eq!(&out[16..18], &[0x08, 0x00], "outer IPv4");
    assert_eq!(&out[18 + 20..], &v[18..], "inner packet byte for byte");
    assert!(checksum_ok(&out[18..38]));
}

// ---- the command line ------------------------------------------------------

fn cutover() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
}

#[test]
fn cli_replay_prints_json_and_check_names_the_position() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path());
    let input = dir.path().join("in.pcap");
    let output = dir.path().join("out.pcap");
    let frames: Vec<(Duration, Vec<u8>)> = (0..10u32)
        .map(|i| {
            (
                Duration::from_millis(u64::from(i)),
                tcp4(client4(i), 1000 + i as u16, WEB_V4, 80, 0, b"x"),
            )
        })
        .collect();
    write_pcap(&input, &frames).unwrap();
    let out = cutover()
        .args(["replay", "--config"])
        .arg(&cfg)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["forwarded"], 10);
    assert_eq!(json["vips"][0]["service"], "web");
    assert_eq!(json["vips"][0]["vip"], "203.0.113.1");
    assert_eq!(json["vips"][0]["packets"], 10);
    assert_eq!(read_pcap(&output).unwrap().len(), 10);

    let table = cutover()
        .args(["replay", "--config"])
        .arg(&cfg)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("web") && text.contains("203.0.113.1") && text.contains("no_service"),
        "{text}"
    );

    let ok = cutover()
        .arg("check")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(ok.status.success());

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        CONFIG.replace("backends = [\"10.0.2.31\"", "backend = [\"10.0.2.31\""),
    )
    .unwrap();
    let out = cutover()
        .arg("check")
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = CONFIG
        .lines()
        .position(|l| l.starts_with("backends = [\"10.0.2.31\""))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("bad.toml:{line}:1:")),
        "position in: {err}"
    );
    assert!(err.contains("backend"), "{err}");

    let usage = cutover().arg("replay").output().unwrap();
    assert_eq!(usage.status.code(), Some(2), "usage errors exit 2");
}
