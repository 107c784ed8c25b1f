//! Next hops from the kernel's neighbour table.
//!
//! The data plane needs the MAC address of every backend (`l2dsr`, and
//! on-link `ipip` backends). Static entries come from
//! `[dataplane.neighbors]`; the others are read from the kernel, off the
//! fast path, about once a second, with one rtnetlink dump of both
//! families (no process is spawned). A backend the kernel does not know yet
//! is solicited with one UDP datagram to its discard port, which makes the
//! kernel resolve it; until then its packets are dropped as `no_neighbor`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

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

/// When [`kernel_neighbors`] last logged a failed dump, in seconds since
/// the Unix epoch (0: never); keeps a persistent failure to one warning a
/// minute at a refresh a second.
static LAST_WARNING: AtomicU64 = AtomicU64::new(0);

/// The kernel's resolved neighbours, both families, from one rtnetlink
/// dump (see [`crate::io::neigh::dump`]). A failed dump gives an empty
/// table: the next refresh tries again, and static entries still apply.
pub fn kernel_neighbors() -> HashMap<IpAddr, [u8; 6]> {
    crate::io::neigh::dump().unwrap_or_else(|e| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = LAST_WARNING.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 60
            && LAST_WARNING
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(error = %e, "reading the kernel neighbour table failed");
        } else {
            tracing::debug!(error = %e, "reading the kernel neighbour table failed");
        }
        HashMap::new()
    })
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
    fn mac_parsing_is_strict() {
        assert_eq!(parse_mac("02:00:00:00:01:11"), Some([2, 0, 0, 0, 1, 0x11]));
        assert_eq!(parse_mac("02:00:00:00:01"), None);
        assert_eq!(parse_mac("02:00:00:00:01:11:22"), None);
        assert_eq!(parse_mac("zz:00:00:00:01:11"), None);
    }
}
