//! cutover-pktgen: a packet generator and counter for benchmarks.
//!
//! Sends small UDP frames (64 bytes on the wire by default), prebuilt for
//! `--flows` source ports, through an AF_PACKET TX ring (the data plane's
//! own `AfPacketPort`), and prints packets per second; or, with
//! `--count-rx`, counts the UDP packets an interface receives per second.
//! Both stop after `--duration` (and the sender after `--count`).
//!
//! ```text
//! ip netns exec t-client cutover-pktgen -i eth0 --dst-mac 02:99:00:00:00:02 \
//!     --dst-ip 198.18.0.1 --flows 64 --duration 10
//! ip netns exec t-b1 cutover-pktgen -i eth0 --count-rx --dst-port 5000 --duration 12
//! ```

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use cutover::dataplane::frame::FrameBuf;
use cutover::io::af_packet::{interface_mac, AfPacketOptions, AfPacketPort};
use cutover::io::Port;

#[derive(Debug, Parser)]
#[command(
    name = "cutover-pktgen",
    about = "UDP packet generator / counter over AF_PACKET rings"
)]
struct Args {
    /// Interface to send on (or count on).
    #[arg(short, long)]
    interface: String,
    /// Count received UDP packets per second instead of sending.
    #[arg(long)]
    count_rx: bool,
    /// Destination MAC (the load balancer's).
    #[arg(long, value_parser = parse_mac, required_unless_present = "count_rx")]
    dst_mac: Option<[u8; 6]>,
    /// Source MAC (default: the interface's).
    #[arg(long, value_parser = parse_mac)]
    src_mac: Option<[u8; 6]>,
    /// Destination IP (a VIP); IPv4 or IPv6.
    #[arg(long, required_unless_present = "count_rx")]
    dst_ip: Option<IpAddr>,
    /// Source IP (default 10.99.0.1 or fd99::1, the netns client).
    #[arg(long)]
    src_ip: Option<IpAddr>,
    /// Destination UDP port; with --count-rx, count only this port.
    #[arg(long)]
    dst_port: Option<u16>,
    /// First source port; flow i uses src_port + i.
    #[arg(long, default_value_t = 10000)]
    src_port: u16,
    /// Number of flows (distinct source ports).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    flows: u16,
    /// Frame size on the wire, FCS included (IPv6 frames are at least 66).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after sending this many packets.
    #[arg(long)]
    count: Option<u64>,
    /// Frames per TX burst (one sendto per burst) or RX poll.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    burst: u16,
    /// Join this PACKET_FANOUT group (several counters on one interface).
    #[arg(long)]
    fanout_group: Option<u16>,
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts
            .next()
            .ok_or_else(|| format!("{s:?}: want aa:bb:cc:dd:ee:ff"))?;
        *b = u8::from_str_radix(p, 16).map_err(|_| format!("{s:?}: bad byte {p:?}"))?;
    }
    if parts.next().is_some() {
        return Err(format!("{s:?}: want six bytes"));
    }
    Ok(mac)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !(args.duration > 0.0 && args.duration <= 86_400.0) {
        bail!("--duration must be between 0 and 86400 seconds");
    }
    let duration = Duration::from_secs_f64(args.duration);
    let opts = AfPacketOptions {
        fanout_group: args.fanout_group,
        pool_size: 4 * usize::from(args.burst),
        ..AfPacketOptions::default()
    };
    let port = AfPacketPort::open(&args.interface, &opts)
        .with_context(|| format!("opening {}", args.interface))?;
    if args.count_rx {
        count_rx(port, &args, duration)
    } else {
        send(port, &args, duration)
    }
}

fn send(mut port: AfPacketPort, args: &Args, duration: Duration) -> Result<()> {
    let (Some(dst_mac), Some(dst_ip)) = (args.dst_mac, args.dst_ip) else {
        bail!("--dst-mac and --dst-ip are required to send");
    };
    let src_mac = match args.src_mac {
        Some(m) => m,
        None => {
            interface_mac(&args.interface).with_context(|| format!("MAC of {}", args.interface))?
        }
    };
    let src_ip = match (args.src_ip, dst_ip) {
        (Some(ip), _) => ip,
        (None, IpAddr::V4(_)) => "10.99.0.1".parse()?,
        (None, IpAddr::V6(_)) => "fd99::1".parse()?,
    };
    let dst_port = args.dst_port.unwrap_or(5000);
    let frames = (0..args.flows)
        .map(|i| {
            let sport = args.src_port.wrapping_add(i);
            build_udp(dst_mac, src_mac, src_ip, dst_ip, sport, dst_port, args.size)
        })
        .collect::<Result<Vec<_>>>()?;
    println!(
        "sending {}-byte UDP frames, {} flows, {} -> {}:{} via {}",
        frames[0].len() + 4,
        frames.len(),
        src_ip,
        dst_ip,
        dst_port,
        args.interface
    );

    let limit = args.count.unwrap_or(u64::MAX);
    let burst = usize::from(args.burst);
    let mut batch = Vec::with_capacity(burst);
    let (mut sent, mut next_flow) = (0u64, 0usize);
    let start = Instant::now();
    let (mut tick, mut tick_sent) = (start, 0u64);
    while sent < limit && start.elapsed() < duration {
        let want = usize::try_from((limit - sent).min(burst as u64)).unwrap_or(burst);
        while batch.len() < want {
            let Some(mut buf) = port.alloc() else { break };
            buf.load(&frames[next_flow]);
            next_flow = (next_flow + 1) % frames.len();
            batch.push(buf);
        }
        let n = port.tx_burst(&mut batch).context("tx_burst")?;
        sent += n as u64;
        // Frames the full ring did not take are rebuilt next turn; flows
        // rotate through the ones that went.
        next_flow = (next_flow + frames.len() - batch.len() % frames.len()) % frames.len();
        for buf in batch.drain(..) {
            port.free(buf);
        }
        if n == 0 {
            std::thread::yield_now();
        }
        let now = Instant::now();
        if now.duration_since(tick) >= Duration::from_secs(1) {
            let secs = now.duration_since(tick).as_secs_f64();
            println!("tx {:>12.0} pps", (sent - tick_sent) as f64 / secs);
            (tick, tick_sent) = (now, sent);
        }
    }
    for _ in 0..100 {
        if port.flush().is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "sent {sent} packets in {secs:.2} s: {:.0} pps (burst {burst}); {:?}",
        sent as f64 / secs,
        port.stats()
    );
    Ok(())
}

fn count_rx(mut port: AfPacketPort, args: &Args, duration: Duration) -> Result<()> {
    println!(
        "counting UDP{} on {} for {:.1} s",
        args.dst_port
            .map(|p| format!(" to port {p}"))
            .unwrap_or_default(),
        args.interface,
        duration.as_secs_f64()
    );
    let _ = port.kernel_rx_stats(); // reset the kernel's counters
    let burst = usize::from(args.burst);
    let mut rx = Vec::with_capacity(burst);
    let (mut total, mut kernel_drops) = (0u64, 0u64);
    let start = Instant::now();
    let (mut tick, mut tick_total) = (start, 0u64);
    while start.elapsed() < duration {
        let n = port.rx_burst(&mut rx, burst).context("rx_burst")?;
        for buf in rx.drain(..) {
            if is_udp_to(buf.bytes(), args.dst_port) {
                total += 1;
            }
            port.free(buf);
        }
        if n == 0 {
            std::thread::sleep(Duration::from_micros(50));
        }
        let now = Instant::now();
        if now.duration_since(tick) >= Duration::from_secs(1) {
            let secs = now.duration_since(tick).as_secs_f64();
            let drops = port
                .kernel_rx_stats()
                .map(|(_, d)| u64::from(d))
                .unwrap_or(0);
            kernel_drops += drops;
            println!(
                "rx {:>12.0} pps  kernel drops {drops}",
                (total - tick_total) as f64 / secs
            );
            (tick, tick_total) = (now, total);
        }
    }
    kernel_drops += port
        .kernel_rx_stats()
        .map(|(_, d)| u64::from(d))
        .unwrap_or(0);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "received {total} UDP packets in {secs:.2} s: {:.0} pps; kernel drops {kernel_drops}; {:?}",
        total as f64 / secs,
        port.stats()
    );
    Ok(())
}

/// True for a UDP packet (IPv4, or IPv6 without extension headers; one
/// VLAN tag allowed), to `port` when given.
fn is_udp_to(f: &[u8], port: Option<u16>) -> bool {
    let be16 = |o: usize| f.get(o..o + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let mut l3 = 14;
    let mut ethertype = be16(12);
    if matches!(ethertype, Some(0x8100 | 0x88a8)) {
        ethertype = be16(16);
        l3 = 18;
    }
    let l4 = match ethertype {
        Some(0x0800) => match (f.get(l3), f.get(l3 + 9)) {
            (Some(vihl), Some(17)) => l3 + usize::from(vihl & 0x0f) * 4,
            _ => return false,
        },
        Some(0x86dd) => match f.get(l3 + 6) {
            Some(17) => l3 + 40,
            _ => return false,
        },
        _ => return false,
    };
    match (port, be16(l4 + 2)) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(p), Some(d)) => p == d,
    }
}

/// An Ethernet + IP + UDP frame of `wire_size - 4` bytes (no FCS), with
/// valid checksums.
fn build_udp(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    wire_size: usize,
) -> Result<Vec<u8>> {
    let ip_len = match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => 20,
        (IpAddr::V6(_), IpAddr::V6(_)) => 40,
        _ => bail!("--src-ip {src} and --dst-ip {dst} are of different families"),
    };
    let len = wire_size.saturating_sub(4).max(14 + ip_len + 8);
    if len > 1514 {
        bail!("--size {wire_size} exceeds a 1518-byte frame");
    }
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    let udp_len = u16::try_from(len - 14 - ip_len)?;
    let l4 = 14 + ip_len;
    let mut pseudo = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            let ip = &mut f[14..34];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&(udp_len + 20).to_be_bytes());
            ip[6] = 0x40; // DF
            ip[8] = 64;
            ip[9] = 17;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let c = checksum(&[ip]);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, 17]);
            pseudo.extend_from_slice(&udp_len.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
            let ip = &mut f[14..54];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&udp_len.to_be_bytes());
            ip[6] = 17;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&u32::from(udp_len).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 17]);
        }
        _ => unreachable!("families checked above"),
    }
    let udp = &mut f[l4..];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&dport.to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    for (i, b) in udp[8..].iter_mut().enumerate() {
        *b = b"cutover-pktgen.."[i % 16];
    }
    let c = match checksum(&[&pseudo, udp]) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    Ok(f)
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`
/// (each of even length except the last).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The fold above leaves at most 16 bits.
    !u16::try_from(sum).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_valid_udp() {
        let v4 = build_udp(
            [2; 6],
            [4; 6],
            "10.99.0.1".parse().unwrap(),
            "198.18.0.1".parse().unwrap(),
            1,
            2,
            64,
        )
        .unwrap();
        assert_eq!(v4.len(), 60);
        assert_eq!(checksum(&[&v4[14..34]]), 0);
        assert!(is_udp_to(&v4, Some(2)) && !is_udp_to(&v4, Some(3)));
        let v6 = build_udp(
            [2; 6],
            [4; 6],
            "fd99::1".parse().unwrap(),
            "fd98::1".parse().unwrap(),
            1,
            2,
            64,
        )
        .unwrap();
        assert_eq!(v6.len(), 62);
        assert!(is_udp_to(&v6, None));
        assert!(build_udp(
            [0; 6],
            [0; 6],
            "10.0.0.1".parse().unwrap(),
            "fd98::1".parse().unwrap(),
            1,
            2,
            64
        )
        .is_err());
        assert_eq!(parse_mac("02:99:00:00:00:0b"), Ok([2, 0x99, 0, 0, 0, 11]));
        assert!(parse_mac("02:99:00:00:00").is_err());
    }
}
