//! The prefixes assigned to the kernel's interfaces, over rtnetlink.
//!
//! The control plane decides whether a backend is on-link (its frames go
//! to its own MAC) or behind a gateway by looking for it in the prefixes
//! of the load balancer's interfaces: one `RTM_GETADDR` dump of both
//! families, read with the neighbour dump about once a second (the same
//! socket code, [`crate::io::neigh`]). Like the neighbour dump it reads the
//! calling thread's network namespace.
//!
//! Addresses of host scope (`127.0.0.1/8`, `::1/128`) are skipped: nothing
//! behind them is reachable on a link.
#![allow(unsafe_code)] // if_nametoindex(3)

use std::ffi::CString;
use std::io;

use ipnet::IpNet;

use crate::io::neigh::{
    dump_messages, ip_of, read_u32, walk_attrs, write_dump_header, NLMSG_HDRLEN,
};

const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
/// `sizeof(struct ifaddrmsg)`.
const IFADDRMSG_LEN: usize = 8;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
/// `RT_SCOPE_HOST`: an address usable only inside this host.
const RT_SCOPE_HOST: u8 = 254;

/// One address of an interface, as the prefix it makes on-link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfPrefix {
    /// The interface (`ifa_index`).
    pub ifindex: u32,
    /// The on-link prefix, host bits cleared (`10.0.0.2/24` gives
    /// `10.0.0.0/24`).
    pub net: IpNet,
}

/// Every non-host-scope prefix of every interface of the calling thread's
/// network namespace, both families.
pub fn dump() -> io::Result<Vec<IfPrefix>> {
    let seq = std::process::id().wrapping_add(1);
    let mut out = Vec::new();
    dump_messages(&dump_request(seq), seq, &mut |kind, payload| {
        if kind == RTM_NEWADDR {
            if let Some(p) = parse_addr(payload) {
                out.push(p);
            }
        }
    })?;
    Ok(out)
}

/// The on-link prefixes of the interfaces named `names`. Names the
/// kernel does not know (a DPDK port name, or a list that is empty, as
/// with the `pcap` driver) select nothing; when none of them is known,
/// the prefixes of every interface are taken, since the data plane then
/// shares no kernel interface to narrow them to.
pub fn prefixes_of(names: &[String]) -> io::Result<Vec<IpNet>> {
    let all = dump()?;
    let wanted: Vec<u32> = names.iter().filter_map(|n| ifindex(n)).collect();
    let mut nets: Vec<IpNet> = all
        .iter()
        .filter(|p| wanted.is_empty() || wanted.contains(&p.ifindex))
        .map(|p| p.net)
        .collect();
    nets.sort();
    nets.dedup();
    Ok(nets)
}

/// The index of interface `name`, or `None` when there is no such
/// interface in this namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call;
    // if_nametoindex(3) only reads it.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}

/// The `RTM_GETADDR` dump request: a netlink header and a zeroed
/// `ifaddrmsg` (family `AF_UNSPEC`: both families, every interface).
pub fn dump_request(seq: u32) -> [u8; NLMSG_HDRLEN + IFADDRMSG_LEN] {
    let mut req = [0u8; NLMSG_HDRLEN + IFADDRMSG_LEN];
    write_dump_header(&mut req, RTM_GETADDR, seq);
    req
}

/// Parses the payload of one `RTM_NEWADDR` (an `ifaddrmsg` and its
/// attributes). `None` for host-scope addresses, other families, and
/// malformed entries. The prefix is taken from `IFA_ADDRESS` (the peer on
/// a point-to-point link, the address itself otherwise), falling back to
/// `IFA_LOCAL`.
pub fn parse_addr(payload: &[u8]) -> Option<IfPrefix> {
    // struct ifaddrmsg { u8 family, prefixlen, flags, scope; u32 index; }
    let family = *payload.first()?;
    let prefix_len = *payload.get(1)?;
    let scope = *payload.get(3)?;
    let ifindex = read_u32(payload, 4)?;
    if scope == RT_SCOPE_HOST {
        return None;
    }
    let mut address = None;
    let mut local = None;
    walk_attrs(payload.get(IFADDRMSG_LEN..)?, &mut |ty, value| match ty {
        IFA_ADDRESS => address = Some(value),
        IFA_LOCAL => local = Some(value),
        _ => {}
    })?;
    let addr = ip_of(family, address.or(local)?)?;
    let net = IpNet::new(addr, prefix_len).ok()?.trunc();
    Some(IfPrefix { ifindex, net })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::neigh::{align4, read_u16, AF_INET, AF_INET6, RTA_HDRLEN};

    fn attr(ty: u16, value: &[u8]) -> Vec<u8> {
        let len = u16::try_from(RTA_HDRLEN + value.len()).unwrap();
        let mut a = Vec::new();
        a.extend_from_slice(&len.to_ne_bytes());
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(align4(a.len()), 0);
        a
    }

    fn ifaddrmsg(family: u8, prefix_len: u8, scope: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut p = vec![family, prefix_len, 0, scope];
        p.extend_from_slice(&3u32.to_ne_bytes());
        for a in attrs {
            p.extend_from_slice(a);
        }
        p
    }

    #[test]
    fn request_is_an_address_dump() {
        let req = dump_request(9);
        assert_eq!(read_u32(&req, 0), Some(24));
        assert_eq!(read_u16(&req, 4), Some(RTM_GETADDR));
        assert_eq!(read_u16(&req, 6), Some(0x301));
        assert_eq!(read_u32(&req, 8), Some(9));
        assert!(req[16..].iter().all(|b| *b == 0));
    }

    #[test]
    fn addresses_become_their_prefixes() {
        let v4 = ifaddrmsg(
            AF_INET,
            24,
            0,
            &[
                attr(IFA_ADDRESS, &[10, 0, 0, 2]),
                attr(IFA_LOCAL, &[10, 0, 0, 2]),
            ],
        );
        assert_eq!(
            parse_addr(&v4),
            Some(IfPrefix {
                ifindex: 3,
                net: "10.0.0.0/24".parse().unwrap()
            })
        );
        let mut fd = [0u8; 16];
        fd[0] = 0xfd;
        fd[15] = 2;
        let v6 = ifaddrmsg(AF_INET6, 64, 0, &[attr(IFA_ADDRESS, &fd)]);
        assert_eq!(parse_addr(&v6).unwrap().net, "fd00::/64".parse().unwrap());
        // Point-to-point: the peer's prefix is the on-link one.
        let p2p = ifaddrmsg(
            AF_INET,
            32,
            0,
            &[
                attr(IFA_LOCAL, &[10, 0, 0, 2]),
                attr(IFA_ADDRESS, &[10, 0, 0, 9]),
            ],
        );
        assert_eq!(
            parse_addr(&p2p).unwrap().net,
            "10.0.0.9/32".parse().unwrap()
        );
        // Only IFA_LOCAL.
        let local = ifaddrmsg(AF_INET, 16, 0, &[attr(IFA_LOCAL, &[172, 16, 9, 9])]);
        assert_eq!(
            parse_addr(&local).unwrap().net,
            "172.16.0.0/16".parse().unwrap()
        );
    }

    #[test]
    fn host_scope_and_malformed_entries_are_skipped() {
        let lo = ifaddrmsg(
            AF_INET,
            8,
            RT_SCOPE_HOST,
            &[attr(IFA_ADDRESS, &[127, 0, 0, 1])],
        );
        assert_eq!(parse_addr(&lo), None);
        // A 4-byte address in an IPv6 entry, a prefix length too long, no
        // address at all, a truncated attribute, a short header.
        let bad_len = ifaddrmsg(AF_INET6, 64, 0, &[attr(IFA_ADDRESS, &[10, 0, 0, 2])]);
        assert_eq!(parse_addr(&bad_len), None);
        let too_long = ifaddrmsg(AF_INET, 33, 0, &[attr(IFA_ADDRESS, &[10, 0, 0, 2])]);
        assert_eq!(parse_addr(&too_long), None);
        assert_eq!(parse_addr(&ifaddrmsg(AF_INET, 24, 0, &[])), None);
        let truncated = ifaddrmsg(AF_INET, 24, 0, &[vec![40, 0, 1, 0]]);
        assert_eq!(parse_addr(&truncated), None);
        assert_eq!(parse_addr(&[2, 24, 0]), None);
        // Another family (AF_PACKET).
        let other = ifaddrmsg(17, 24, 0, &[attr(IFA_ADDRESS, &[10, 0, 0, 2])]);
        assert_eq!(parse_addr(&other), None);
    }
}
