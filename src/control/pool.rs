//! VIP pools: where a new version's addresses come from.
//!
//! A version gets the lowest free address of its service's pool in each
//! family, prefixes in the order the configuration lists them. What "free"
//! means (held by a live version, cooling down after a release) is the
//! caller's to say; this module only walks the addresses in order.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::control::config::{Family, VipPool};

/// The family of an address.
pub fn family_of(addr: &IpAddr) -> Family {
    match addr {
        IpAddr::V4(_) => Family::Ipv4,
        IpAddr::V6(_) => Family::Ipv6,
    }
}

/// The addresses of `prefix` that may serve as VIPs, lowest first.
///
/// IPv4 skips the network and broadcast addresses of prefixes shorter than
/// /31 and IPv6 the subnet-router anycast address (interface id 0): clients
/// and routers treat those specially, so an operator would not expect them
/// to be handed out.
pub fn usable_addresses(prefix: &IpNet) -> Box<dyn Iterator<Item = IpAddr> + '_> {
    match prefix {
        IpNet::V4(p) => Box::new(p.hosts().map(IpAddr::V4)),
        IpNet::V6(p) => {
            let skip = usize::from(p.prefix_len() < 127);
            Box::new(p.hosts().skip(skip).map(IpAddr::V6))
        }
    }
}

/// The lowest address of `family` in `pool` for which `taken` is false.
///
/// Walks at most one address past every taken one, so the cost is bounded
/// by the number of taken addresses even in a /64.
pub fn lowest_free(
    pool: &VipPool,
    family: Family,
    mut taken: impl FnMut(&IpAddr) -> bool,
) -> Option<IpAddr> {
    pool.prefixes
        .iter()
        .filter(|p| match p {
            IpNet::V4(_) => family == Family::Ipv4,
            IpNet::V6(_) => family == Family::Ipv6,
        })
        .flat_map(usable_addresses)
        .find(|a| !taken(a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pool(prefixes: &[&str]) -> VipPool {
        VipPool {
            name: "p".into(),
            prefixes: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
            cooldown: Duration::from_secs(50),
        }
    }

    #[test]
    fn lowest_free_walks_prefixes_in_order() {
        let p = pool(&["203.0.113.0/30", "198.51.100.8/29", "2001:db8::/126"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            lowest_free(&p, Family::Ipv4, |_| false),
            Some(ip("203.0.113.1"))
        );
        let taken = [ip("203.0.113.1"), ip("203.0.113.2")];
        assert_eq!(
            lowest_free(&p, Family::Ipv4, |a| taken.contains(a)),
            Some(ip("198.51.100.9"))
        );
        assert_eq!(
            lowest_free(&p, Family::Ipv6, |_| false),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(lowest_free(&p, Family::Ipv6, |_| true), None);
    }
}
