//! One route lookup over rtnetlink, as `ip route get ADDR` does it: what
//! the kernel of the calling thread's network namespace would do with a
//! packet to an address.
//!
//! The kernel answers a lookup with the route (`RTM_NEWROUTE`, whose
//! `rtm_type` says unicast or local), or refuses it with the error its
//! route type maps to (`fib_props` in net/ipv4/fib_semantics.c and
//! `ip6_rt_type_to_error` in net/ipv6/route.c, the same for both families):
//! `EINVAL` for a blackhole, `EHOSTUNREACH` for unreachable, `EACCES` for
//! prohibit, `ENETUNREACH` when no route matches. The message building and
//! parsing are separate from the socket so they are tested without one.

use std::io;
use std::net::IpAddr;

use crate::io::neigh::{
    read_u32, request_one, walk_attrs, write_header, AF_INET, AF_INET6, NLMSG_HDRLEN,
    NLM_F_REQUEST, RTA_HDRLEN,
};

const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
/// `sizeof(struct rtmsg)`.
const RTMSG_LEN: usize = 12;
const RTA_DST: u16 = 1;
const RTN_UNICAST: u8 = 1;
const RTN_LOCAL: u8 = 2;

/// What the kernel would do with a packet to the address looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Deliver it to itself: the address is the host's own.
    Local,
    /// Route it on (forward it, for a packet it received).
    Unicast,
    /// Drop it silently (a `blackhole` route).
    Blackhole,
    /// Refuse it with "host unreachable" (an `unreachable` route).
    Unreachable,
    /// Refuse it with "administratively prohibited" (a `prohibit` route).
    Prohibit,
    /// No route matches: "network unreachable".
    NoRoute,
    /// Another route type (`rtm_type`: broadcast, anycast, ...).
    OtherType(u8),
    /// Another refusal (its errno).
    Refused(i32),
}

/// Looks `addr` up in the calling thread's network namespace.
pub fn lookup(addr: IpAddr) -> io::Result<Route> {
    let seq = std::process::id();
    let mut found = None;
    let asked = request_one(&request(addr, seq), seq, &mut |kind, payload| {
        if kind == RTM_NEWROUTE && found.is_none() {
            found = parse_route(payload);
        }
    });
    match asked {
        Ok(()) => {
            found.ok_or_else(|| io::Error::other("route lookup: no RTM_NEWROUTE in the reply"))
        }
        Err(e) => e.raw_os_error().map(refusal).ok_or(e),
    }
}

/// The `RTM_GETROUTE` request for `addr`: a netlink header, an `rtmsg`
/// (family, full-length destination) and the `RTA_DST` attribute.
pub fn request(addr: IpAddr, seq: u32) -> Vec<u8> {
    let (family, bytes): (u8, Vec<u8>) = match addr {
        IpAddr::V4(a) => (AF_INET, a.octets().to_vec()),
        IpAddr::V6(a) => (AF_INET6, a.octets().to_vec()),
    };
    let attr_len = RTA_HDRLEN + bytes.len();
    let len = NLMSG_HDRLEN + RTMSG_LEN + attr_len;
    let mut req = vec![0u8; len];
    // A lookup, not a dump: one answer.
    write_header(&mut req, RTM_GETROUTE, NLM_F_REQUEST, seq);
    let rtm = NLMSG_HDRLEN;
    req[rtm] = family;
    // rtm_dst_len: the whole address. The attribute is 8 or 20 bytes.
    req[rtm + 1] = u8::try_from(bytes.len() * 8).unwrap_or(u8::MAX);
    let attr = rtm + RTMSG_LEN;
    req[attr..attr + 2].copy_from_slice(&u16::try_from(attr_len).unwrap_or(u16::MAX).to_ne_bytes());
    req[attr + 2..attr + 4].copy_from_slice(&RTA_DST.to_ne_bytes());
    req[attr + RTA_HDRLEN..].copy_from_slice(&bytes);
    req
}

/// The route type of one `RTM_NEWROUTE` payload (`rtmsg` and attributes);
/// `None` when it is too short to hold an `rtmsg`.
pub fn parse_route(payload: &[u8]) -> Option<Route> {
    // struct rtmsg { u8 family, dst_len, src_len, tos, table, protocol,
    //                scope, type; u32 flags; }
    read_u32(payload, 8)?;
    // Attributes are not needed, but a reply whose attributes do not
    // parse is not trusted either.
    walk_attrs(payload.get(RTMSG_LEN..)?, &mut |_, _| {})?;
    Some(match *payload.get(7)? {
        RTN_UNICAST => Route::Unicast,
        RTN_LOCAL => Route::Local,
        t => Route::OtherType(t),
    })
}

/// What a refused lookup means, from the errno of the kernel's refusal.
pub fn refusal(errno: i32) -> Route {
    match errno {
        libc::EINVAL => Route::Blackhole,
        libc::EHOSTUNREACH => Route::Unreachable,
        libc::EACCES => Route::Prohibit,
        libc::ENETUNREACH => Route::NoRoute,
        e => Route::Refused(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::neigh::{read_u16, read_u32};

    #[test]
    fn request_asks_for_one_full_length_destination() {
        let req = request("198.18.0.10".parse().unwrap(), 9);
        assert_eq!(req.len(), 16 + 12 + 8);
        assert_eq!(read_u32(&req, 0), Some(36));
        assert_eq!(read_u16(&req, 4), Some(RTM_GETROUTE));
        assert_eq!(
            read_u16(&req, 6),
            Some(NLM_F_REQUEST),
            "a lookup, not a dump"
        );
        assert_eq!(read_u32(&req, 8), Some(9));
        assert_eq!(&req[16..18], &[AF_INET, 32]);
        assert_eq!(read_u16(&req, 28), Some(8));
        assert_eq!(read_u16(&req, 30), Some(RTA_DST));
        assert_eq!(&req[32..], &[198, 18, 0, 10]);
        let v6 = request("fd98::10".parse().unwrap(), 9);
        assert_eq!(v6.len(), 16 + 12 + 20);
        assert_eq!(&v6[16..18], &[AF_INET6, 128]);
    }

    #[test]
    fn replies_and_refusals_map_to_what_the_kernel_does() {
        // rtmsg: family, dst_len, src_len, tos, table, protocol, scope,
        // type, flags; then an RTA_DST attribute.
        let reply = |ty: u8| {
            let mut p = vec![AF_INET, 32, 0, 0, 254, 0, 0, ty, 0, 0, 0, 0];
            p.extend_from_slice(&8u16.to_ne_bytes());
            p.extend_from_slice(&RTA_DST.to_ne_bytes());
            p.extend_from_slice(&[198, 18, 0, 10]);
            p
        };
        assert_eq!(parse_route(&reply(1)), Some(Route::Unicast));
        assert_eq!(parse_route(&reply(2)), Some(Route::Local));
        assert_eq!(parse_route(&reply(3)), Some(Route::OtherType(3)));
        // Truncated rtmsg, or an attribute longer than the message.
        assert_eq!(parse_route(&reply(1)[..11]), None);
        let mut bad = reply(1);
        bad[12] = 40;
        assert_eq!(parse_route(&bad), None);
        assert_eq!(refusal(libc::EINVAL), Route::Blackhole);
        assert_eq!(refusal(libc::EHOSTUNREACH), Route::Unreachable);
        assert_eq!(refusal(libc::EACCES), Route::Prohibit);
        assert_eq!(refusal(libc::ENETUNREACH), Route::NoRoute);
        assert_eq!(refusal(libc::EPERM), Route::Refused(libc::EPERM));
    }
}
