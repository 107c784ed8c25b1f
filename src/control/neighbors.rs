//! Next hops from the kernel's neighbour table.
//!
//! The data plane needs the MAC address of every backend (`l2dsr`, and
//! on-link `ipip` backends). Static entries come from
//! `[dataplane.neighbors]`; the others are read from the kernel, off the
//! fast path, about once a second: IPv4 from `/proc/net/arp`, IPv6 from
//! `ip -6 neigh`. A backend the kernel does not know yet is solicited with
//! one UDP datagram to its discard port, which makes the kernel resolve it;
//! until then its packets are dropped as `no_neighbor`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Command;

use crate::control::config::Config;
use crate::snapshot::{Snapshot, SnapshotError, VersionEntry};

/// Parses a MAC written `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Complete entries of `/proc/net/arp` text.
pub fn parse_proc_arp(text: &str) -> HashMap<IpAddr, [u8; 6]> {
    const ATF_COM: u32 = 0x2;
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let ip: IpAddr = f.first()?.parse().ok()?;
            let flags = u32::from_str_radix(f.get(2)?.trim_start_matches("0x"), 16).ok()?;
            let mac = parse_mac(f.get(3)?)?;
            (flags & ATF_COM != 0 && mac != [0; 6]).then_some((ip, mac))
        })
        .collect()
}

/// Usable entries of `ip -6 neigh show` text (those with an `lladdr` and
/// not FAILED).
pub fn parse_ip_neigh(text: &str) -> HashMap<IpAddr, [u8; 6]> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let ip: IpAddr = f.first()?.parse().ok()?;
            let pos = f.iter().position(|w| *w == "lladdr")?;
            let mac = parse_mac(f.get(pos + 1)?)?;
            (!f.contains(&"FAILED")).then_some((ip, mac))
        })
        .collect()
}

/// The kernel's resolved neighbours, both families. Errors reading either
/// source leave that family empty: the next refresh tries again.
pub fn kernel_neighbors() -> HashMap<IpAddr, [u8; 6]> {
    let mut all = std::fs::read_to_string("/proc/net/arp")
        .map(|t| parse_proc_arp(&t))
        .unwrap_or_default();
    if let Ok(out) = Command::new("ip").args(["-6", "neigh", "show"]).output() {
        all.extend(parse_ip_neigh(&String::from_utf8_lossy(&out.stdout)));
    }
    all
}

/// Asks the kernel to resolve `addr`: a one-byte datagram to the discard
/// port makes it send an ARP request or neighbour solicitation.
pub fn solicit(addr: IpAddr) {
    let bind: SocketAddr = match addr {
        IpAddr::V4(_) => "0.0.0.0:0".parse(),
        IpAddr::V6(_) => "[::]:0".parse(),
    }
    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    if let Ok(sock) = UdpSocket::bind(bind) {
        let _ = sock.send_to(&[0], SocketAddr::new(addr, 9));
    }
}

/// A copy of `snap` with every backend's next hop set from the static
/// table of `cfg` or else from `kernel`, or `None` when nothing changed.
///
/// Runs on every publish: one hash probe per backend, and nothing is
/// copied unless a next hop actually changed.
pub fn refresh(
    cfg: &Config,
    snap: &Snapshot,
    kernel: &HashMap<IpAddr, [u8; 6]>,
) -> Result<Option<Snapshot>, SnapshotError> {
    let fixed: HashMap<IpAddr, [u8; 6]> = cfg.dataplane.neighbors.iter().copied().collect();
    let resolve = |addr: &IpAddr| fixed.get(addr).or_else(|| kernel.get(addr)).copied();
    let stale = snap
        .versions()
        .any(|v| v.backends.iter().any(|b| resolve(&b.addr) != b.next_hop));
    if !stale {
        return Ok(None);
    }
    let mut versions: Vec<VersionEntry> = snap.versions().cloned().collect();
    for b in versions.iter_mut().flat_map(|v| v.backends.iter_mut()) {
        b.next_hop = resolve(&b.addr);
    }
    Snapshot::new(
        snap.generation + 1,
        snap.settings.clone(),
        snap.services.clone(),
        versions,
    )
    .map(Some)
}

/// Solicits every backend of `snap` whose next hop is still unknown (once
/// per call; the control plane calls it about once a second).
pub fn solicit_unresolved(snap: &Snapshot) {
    let mut asked = std::collections::HashSet::new();
    for b in snap.versions().flat_map(|v| v.backends.iter()) {
        if b.next_hop.is_none() && asked.insert(b.addr) {
            solicit(b.addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_arp_keeps_complete_entries_only() {
        let text =
            "IP address       HW type     Flags       HW address            Mask     Device\n\
                    10.99.0.11       0x1         0x2         02:99:00:00:00:0b     *        eth0\n\
                    10.99.0.12       0x1         0x0         00:00:00:00:00:00     *        eth0\n\
                    garbage\n";
        let m = parse_proc_arp(text);
        assert_eq!(m.len(), 1);
        assert_eq!(
            m.get(&"10.99.0.11".parse().unwrap()),
            Some(&[2, 0x99, 0, 0, 0, 0x0b])
        );
    }

    #[test]
    fn ip_neigh_skips_failed_and_incomplete() {
        let text = "fd99::11 dev eth0 lladdr 02:99:00:00:00:0b REACHABLE\n\
                    fd99::12 dev eth0 FAILED\n\
                    fd99::13 dev eth0 lladdr 02:99:00:00:00:0d router STALE\n\
                    fe80::1 dev eth0 INCOMPLETE\n";
        let m = parse_ip_neigh(text);
        assert_eq!(m.len(), 2);
        assert!(m.contains_key(&"fd99::13".parse().unwrap()));
    }

    #[test]
    fn mac_parsing_is_strict() {
        assert_eq!(parse_mac("02:00:00:00:01:11"), Some([2, 0, 0, 0, 1, 0x11]));
        assert_eq!(parse_mac("02:00:00:00:01"), None);
        assert_eq!(parse_mac("02:00:00:00:01:11:22"), None);
        assert_eq!(parse_mac("zz:00:00:00:01:11"), None);
    }
}
