//! Writes a demo capture for `cutover replay`: TCP connections (SYN, data,
//! FIN) from many clients to the VIPs of `conf/demo-replay.toml`, over IPv4
//! and IPv6, one oversize packet with DF, one without, and some garbage.
//!
//! `cargo run --example gen_capture -- OUT.pcap`

// Synthetic data: the narrowing casts below are on small counters.
#![allow(clippy::cast_possible_truncation)]

use std::time::Duration;

use etherparse::{IpHeaders, Ipv4Header, PacketBuilder};

const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .ok_or("usage: gen_capture OUT.pcap")?;
    let web_v4 = [203, 0, 113, 1];
    let web_v6: [u8; 16] = "2001:db8:100::1".parse::<std::net::Ipv6Addr>()?.octets();
    let dsr_v4 = [203, 0, 113, 10];
    let mut frames: Vec<Vec<u8>> = Vec::new();
    for c in 0..200u32 {
        let src4 = [192, 0, 2, (c % 250) as u8 + 1];
        let mut src6: [u8; 16] = "2001:db8:c::".parse::<std::net::Ipv6Addr>()?.octets();
        src6[15] = (c % 250) as u8 + 1;
        let sport = 30_000 + c as u16;
        for (seq, kind) in [(0u32, "syn"), (1, "data"), (2, "data"), (3, "fin")] {
            let body = format!("client {c} {kind}");
            for target in 0..3 {
                let mut v = Vec::new();
                let eth = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC);
                let step = match target {
                    0 => eth.ipv4(src4, web_v4, 64).tcp(sport, 80, seq, 64240),
                    1 => eth.ipv6(src6, web_v6, 64).tcp(sport, 80, seq, 64240),
                    _ => eth.ipv4(src4, dsr_v4, 64).tcp(sport, 80, seq, 64240),
                };
                let step = match kind {
                    "syn" => step.syn(),
                    "fin" => step.fin().ack(seq),
                    _ => step.ack(seq),
                };
                step.write(&mut v, body.as_bytes())?;
                frames.push(v);
            }
        }
    }
    // Oversize with DF: answered with ICMP fragmentation needed.
    let mut big = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4([192, 0, 2, 9], web_v4, 64)
        .tcp(40_000, 80, 9, 64240)
        .write(&mut big, &[0xab; 1460])?;
    frames.push(big);
    // Oversize without DF: encapsulated, outer packet fragmented.
    let mut h = Ipv4Header::new(0, 64, etherparse::IpNumber::UDP, [192, 0, 2, 9], web_v4)?;
    h.dont_fragment = false;
    let mut nodf = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ip(IpHeaders::Ipv4(h, Default::default()))
        .udp(40_001, 53)
        .write(&mut nodf, &[0xcd; 1472])?;
    frames.push(nodf);
    // Not for us, and garbage.
    let mut other = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4([192, 0, 2, 9], [203, 0, 113, 9], 64)
        .tcp(40_002, 80, 0, 64240)
        .write(&mut other, b"nobody home")?;
    frames.push(other);
    frames.push(vec![0x42; 20]);
    let stamped: Vec<(Duration, Vec<u8>)> = frames
        .into_iter()
        .enumerate()
        .map(|(i, f)| (Duration::from_micros(1_000_000 + 10 * i as u64), f))
        .collect();
    cutover::io::pcap::write_pcap(&out, &stamped)?;
    println!("wrote {} frames to {out}", stamped.len());
    Ok(())
}
