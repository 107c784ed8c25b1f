//! Where a backend's frames go: to the backend itself when it is on the
//! load balancer's link, else to the gateway of its family.
//!
//! A backend is on-link when its address lies in a prefix assigned to one
//! of the configured interfaces ([`KernelView::prefixes`], read from the
//! kernel with the neighbour table). An `ipip` backend outside all of them
//! is reached through `[dataplane] gateway_v4` / `gateway_v6`: the outer
//! destination stays the backend, only the Ethernet destination is the
//! gateway's MAC, resolved like a backend's (a `[dataplane.neighbors]`
//! entry pins it). Without a gateway of its family such a backend is still
//! looked up at its own address, as before gateways existed: it resolves
//! only if the kernel happens to know it (proxy ARP), otherwise its packets
//! are dropped as `no_neighbor` and the reason is logged once.
//!
//! `l2dsr` never uses the gateway: it only rewrites the Ethernet
//! destination, so the backend must be on the link and has to answer for
//! the VIP itself; an `l2dsr` backend outside the prefixes is resolved at
//! its own address and reported.
//!
//! Everything here runs in the control plane when a snapshot is built; the
//! resulting MAC lands in [`crate::snapshot::Backend::next_hop`] and from
//! there in the encapsulation templates, so the data path never decides.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::control::config::{Config, Forwarding};

/// What the kernel says about next hops, read off the fast path about
/// once a second.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelView {
    /// Resolved neighbours, both families (IP → MAC).
    pub neighbors: HashMap<IpAddr, [u8; 6]>,
    /// The prefixes assigned to the load balancer's interfaces, sorted.
    pub prefixes: Vec<IpNet>,
}

impl KernelView {
    /// True when `addr` lies in one of the on-link prefixes.
    pub fn on_link(&self, addr: &IpAddr) -> bool {
        self.prefixes.iter().any(|p| p.contains(addr))
    }
}

/// How one backend is reached, before its MAC is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// Pinned in `[dataplane.neighbors]`: this MAC, nothing to resolve.
    Static([u8; 6]),
    /// On the link: resolved at the backend's own address.
    OnLink,
    /// Off the link, through this gateway (resolved at its address).
    Gateway(IpAddr),
    /// An `ipip` backend off the link with no gateway of its family:
    /// resolved at its own address, which normally fails.
    NoGateway,
    /// An `l2dsr` backend off the link: resolved at its own address, which
    /// normally fails; `l2dsr` needs on-link backends.
    L2dsrOffLink,
}

impl Route {
    /// The address whose neighbour entry gives the MAC, which is also the
    /// one to solicit while unresolved; `None` for a static entry.
    pub fn resolve_at(self, backend: IpAddr) -> Option<IpAddr> {
        match self {
            Route::Static(_) => None,
            Route::Gateway(gw) => Some(gw),
            Route::OnLink | Route::NoGateway | Route::L2dsrOffLink => Some(backend),
        }
    }
}

/// Decides routes and next hops for one configuration and kernel view.
#[derive(Debug)]
pub struct Resolver<'a> {
    cfg: &'a Config,
    fixed: Cow<'a, HashMap<IpAddr, [u8; 6]>>,
    view: &'a KernelView,
}

/// The static next hops of `cfg` (`[dataplane.neighbors]`) as a map.
pub fn static_hops(cfg: &Config) -> HashMap<IpAddr, [u8; 6]> {
    cfg.dataplane.neighbors.iter().copied().collect()
}

impl<'a> Resolver<'a> {
    /// A resolver over the static table of `cfg` and `view`.
    pub fn new(cfg: &'a Config, view: &'a KernelView) -> Resolver<'a> {
        Resolver {
            cfg,
            fixed: Cow::Owned(static_hops(cfg)),
            view,
        }
    }

    /// Like [`Resolver::new`] with `fixed` = [`static_hops`]`(cfg)` built
    /// once by the caller: with thousands of static neighbours, building
    /// the map is most of a rollout's next-hop work.
    pub fn with_static(
        cfg: &'a Config,
        fixed: &'a HashMap<IpAddr, [u8; 6]>,
        view: &'a KernelView,
    ) -> Resolver<'a> {
        Resolver {
            cfg,
            fixed: Cow::Borrowed(fixed),
            view,
        }
    }

    /// How the backend `addr` of a service forwarding by `forwarding` is
    /// reached.
    pub fn route(&self, forwarding: Forwarding, addr: IpAddr) -> Route {
        if let Some(mac) = self.fixed.get(&addr) {
            return Route::Static(*mac);
        }
        // No prefix known (the interface has no address, or it could not
        // be read): nothing can be called off-link with any confidence for
        // l2dsr, which has no alternative anyway.
        if self.view.on_link(&addr) {
            return Route::OnLink;
        }
        match forwarding {
            Forwarding::L2dsr if self.view.prefixes.is_empty() => Route::OnLink,
            Forwarding::L2dsr => Route::L2dsrOffLink,
            Forwarding::Ipip => match self.gateway_for(addr) {
                Some(gw) => Route::Gateway(gw),
                None => Route::NoGateway,
            },
        }
    }

    /// The configured gateway of `addr`'s family.
    pub fn gateway_for(&self, addr: IpAddr) -> Option<IpAddr> {
        match addr {
            IpAddr::V4(_) => self.cfg.dataplane.gateway_v4.map(IpAddr::V4),
            IpAddr::V6(_) => self.cfg.dataplane.gateway_v6.map(IpAddr::V6),
        }
    }

    /// The MAC for `route` of backend `addr`, when known: the static
    /// entry, or the static or kernel entry of the address it resolves at.
    pub fn mac(&self, route: Route, addr: IpAddr) -> Option<[u8; 6]> {
        if let Route::Static(mac) = route {
            return Some(mac);
        }
        let at = route.resolve_at(addr)?;
        self.fixed
            .get(&at)
            .or_else(|| self.view.neighbors.get(&at))
            .copied()
    }

    /// The next hop of backend `addr` (its route's MAC).
    pub fn next_hop(&self, forwarding: Forwarding, addr: IpAddr) -> Option<[u8; 6]> {
        self.mac(self.route(forwarding, addr), addr)
    }

    /// Why backend `addr` with `route` has no next hop yet, for the log;
    /// the second value is true when waiting will not help without a
    /// change of configuration or network (a warning rather than info).
    pub fn explain(&self, route: Route, addr: IpAddr) -> (String, bool) {
        let key = match addr {
            IpAddr::V4(_) => "gateway_v4",
            IpAddr::V6(_) => "gateway_v6",
        };
        match route {
            Route::Static(_) => (format!("backend {addr} has a static next hop"), false),
            Route::OnLink => (
                format!("backend {addr} is on-link and not resolved yet; asking the kernel to resolve it"),
                false,
            ),
            Route::Gateway(gw) if !self.view.on_link(&gw) => (
                format!(
                    "backend {addr} is off-link, behind gateway {gw}, but the gateway is not \
                     on-link either (outside {:?}); its packets are dropped as no_neighbor",
                    self.view.prefixes
                ),
                true,
            ),
            Route::Gateway(gw) => (
                format!("backend {addr} is off-link, behind gateway {gw}, which is not resolved yet; asking the kernel to resolve it"),
                false,
            ),
            Route::NoGateway => (
                format!(
                    "backend {addr} is off-link (outside the interfaces' prefixes {:?}) and no \
                     [dataplane] {key} is configured; its packets are dropped as no_neighbor",
                    self.view.prefixes
                ),
                true,
            ),
            Route::L2dsrOffLink => (
                format!(
                    "l2dsr backend {addr} is off-link (outside the interfaces' prefixes {:?}); \
                     l2dsr needs backends on the load balancer's link, so its packets are \
                     dropped as no_neighbor",
                    self.view.prefixes
                ),
                true,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::control::config::parse;

    const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B1_MAC: [u8; 6] = [2, 0, 0, 0, 1, 0x11];

    fn cfg(dataplane: &str) -> Config {
        let text = format!(
            r#"[dataplane]
encap_source_v4 = "10.0.0.2"
encap_source_v6 = "fd00::2"
{dataplane}
[[vip_pool]]
name = "public"
prefixes = ["203.0.113.0/28", "2001:db8:f::/64"]

[[service]]
name = "web"
pool = "public"
ports = ["tcp/80"]
backends = ["10.0.0.11", "10.7.0.11", "fd00::11", "fd07::11"]
"#
        );
        match parse(Path::new("t.toml"), &text) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn view(neighbors: &[(&str, [u8; 6])]) -> KernelView {
        KernelView {
            neighbors: neighbors
                .iter()
                .map(|(ip, mac)| (ip.parse().unwrap(), *mac))
                .collect(),
            prefixes: vec!["10.0.0.0/24".parse().unwrap(), "fd00::/64".parse().unwrap()],
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn on_link_backends_resolve_at_their_own_address() {
        let c = cfg("gateway_v4 = \"10.0.0.1\"\ngateway_v6 = \"fd00::1\"\n");
        let v = view(&[("10.0.0.11", B1_MAC), ("10.0.0.1", GW_MAC)]);
        let r = Resolver::new(&c, &v);
        assert_eq!(r.route(Forwarding::Ipip, ip("10.0.0.11")), Route::OnLink);
        assert_eq!(r.route(Forwarding::Ipip, ip("fd00::11")), Route::OnLink);
        assert_eq!(r.next_hop(Forwarding::Ipip, ip("10.0.0.11")), Some(B1_MAC));
        // An on-link backend the kernel does not know is not sent to the
        // gateway: it waits for its own resolution.
        assert_eq!(r.next_hop(Forwarding::Ipip, ip("10.0.0.12")), None);
        assert_eq!(
            Route::OnLink.resolve_at(ip("10.0.0.12")),
            Some(ip("10.0.0.12"))
        );
    }

    #[test]
    fn off_link_ipip_backends_use_the_gateway_of_their_family() {
        let c = cfg("gateway_v4 = \"10.0.0.1\"\ngateway_v6 = \"fd00::1\"\n");
        let v6_gw = [2, 0, 0, 0, 0, 6];
        let v = view(&[("10.0.0.1", GW_MAC), ("fd00::1", v6_gw)]);
        let r = Resolver::new(&c, &v);
        assert_eq!(
            r.route(Forwarding::Ipip, ip("10.7.0.11")),
            Route::Gateway(ip("10.0.0.1"))
        );
        assert_eq!(r.next_hop(Forwarding::Ipip, ip("10.7.0.11")), Some(GW_MAC));
        assert_eq!(
            r.route(Forwarding::Ipip, ip("fd07::11")),
            Route::Gateway(ip("fd00::1"))
        );
        assert_eq!(r.next_hop(Forwarding::Ipip, ip("fd07::11")), Some(v6_gw));
        // The gateway itself unresolved: nothing, and it is what to solicit.
        let empty = view(&[]);
        let r = Resolver::new(&c, &empty);
        let route = r.route(Forwarding::Ipip, ip("10.7.0.11"));
        assert_eq!(r.next_hop(Forwarding::Ipip, ip("10.7.0.11")), None);
        assert_eq!(route.resolve_at(ip("10.7.0.11")), Some(ip("10.0.0.1")));
        assert!(!r.explain(route, ip("10.7.0.11")).1, "waiting helps");
    }

    #[test]
    fn without_a_gateway_off_link_backends_stay_unresolved() {
        let c = cfg("gateway_v6 = \"fd00::1\"\n");
        let v = view(&[("10.0.0.1", GW_MAC)]);
        let r = Resolver::new(&c, &v);
        assert_eq!(r.route(Forwarding::Ipip, ip("10.7.0.11")), Route::NoGateway);
        assert_eq!(r.next_hop(Forwarding::Ipip, ip("10.7.0.11")), None);
        let (why, warn) = r.explain(Route::NoGateway, ip("10.7.0.11"));
        assert!(warn);
        assert!(why.contains("no [dataplane] gateway_v4"), "{why}");
        // Today's behaviour is kept: the kernel may still know it.
        let v = view(&[("10.7.0.11", B1_MAC)]);
        let r = Resolver::new(&c, &v);
        assert_eq!(r.next_hop(Forwarding::Ipip, ip("10.7.0.11")), Some(B1_MAC));
    }

    #[test]
    fn static_entries_pin_backends_and_gateways() {
        let c = cfg(
            "gateway_v4 = \"10.0.0.1\"\n[dataplane.neighbors]\n\"10.0.0.1\" = \"02:00:00:00:00:01\"\n\"10.7.0.12\" = \"02:00:00:00:01:11\"\n",
        );
        // The kernel's entry for the gateway loses to the pinned one.
        let v = view(&[("10.0.0.1", [2, 9, 9, 9, 9, 9])]);
        let r = Resolver::new(&c, &v);
        assert_eq!(r.next_hop(Forwarding::Ipip, ip("10.7.0.11")), Some(GW_MAC));
        // A pinned backend is sent to its pin even though off-link.
        assert_eq!(
            r.route(Forwarding::Ipip, ip("10.7.0.12")),
            Route::Static(B1_MAC)
        );
        assert_eq!(r.next_hop(Forwarding::L2dsr, ip("10.7.0.12")), Some(B1_MAC));
    }

    #[test]
    fn l2dsr_never_uses_the_gateway() {
        let c = cfg("gateway_v4 = \"10.0.0.1\"\n");
        let v = view(&[("10.0.0.1", GW_MAC), ("10.0.0.11", B1_MAC)]);
        let r = Resolver::new(&c, &v);
        assert_eq!(r.route(Forwarding::L2dsr, ip("10.0.0.11")), Route::OnLink);
        assert_eq!(r.next_hop(Forwarding::L2dsr, ip("10.0.0.11")), Some(B1_MAC));
        assert_eq!(
            r.route(Forwarding::L2dsr, ip("10.7.0.11")),
            Route::L2dsrOffLink
        );
        assert_eq!(r.next_hop(Forwarding::L2dsr, ip("10.7.0.11")), None);
        assert!(r.explain(Route::L2dsrOffLink, ip("10.7.0.11")).1);
    }

    #[test]
    fn unknown_prefixes_mean_off_link_for_ipip_only() {
        let c = cfg("gateway_v4 = \"10.0.0.1\"\n");
        let mut v = view(&[("10.0.0.1", GW_MAC), ("10.0.0.11", B1_MAC)]);
        v.prefixes.clear();
        let r = Resolver::new(&c, &v);
        assert_eq!(r.next_hop(Forwarding::Ipip, ip("10.0.0.11")), Some(GW_MAC));
        assert_eq!(r.route(Forwarding::L2dsr, ip("10.0.0.11")), Route::OnLink);
        assert_eq!(r.next_hop(Forwarding::L2dsr, ip("10.0.0.11")), Some(B1_MAC));
        // A gateway outside every prefix cannot be resolved: a warning.
        let route = r.route(Forwarding::Ipip, ip("10.7.0.11"));
        assert!(r.explain(route, ip("10.7.0.11")).1);
    }
}
