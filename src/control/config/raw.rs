//! The configuration file as written: serde types that mirror the TOML, with
//! spans kept on every value that a later check may need to point at.
//!
//! Unknown keys are refused here (`deny_unknown_fields`); scalars are parsed
//! by [`Parsed`]; everything that relates one value to another is checked in
//! `convert`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::values::{
    Base64, DnsName, Int, Label, Mac, MetricsListen, Parsed, ServerAddr, TsigAlgorithm,
};
use super::{AdminListen, PortSpec};

/// A parsed value and where it was written.
pub(super) type At<T> = Spanned<Parsed<T>>;

/// The value of an [`At`], without its span.
pub(super) fn val<T>(at: &At<T>) -> &T {
    &at.get_ref().0
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) dataplane: RawDataplane,
    #[serde(default)]
    pub(super) dns: RawDns,
    #[serde(default)]
    pub(super) metrics: RawMetrics,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) state: RawState,
    #[serde(default)]
    pub(super) vip_pool: Vec<RawPool>,
    #[serde(default)]
    pub(super) service: Vec<RawService>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDataplane {
    pub(super) driver: Option<RawDriver>,
    pub(super) interfaces: Option<Vec<Spanned<String>>>,
    pub(super) workers: Option<Spanned<Int>>,
    pub(super) forwarding: Option<RawForwarding>,
    pub(super) idle: Option<RawIdle>,
    pub(super) encap_source_v4: Option<Parsed<Ipv4Addr>>,
    pub(super) encap_source_v6: Option<Parsed<Ipv6Addr>>,
    pub(super) gateway_v4: Option<At<Ipv4Addr>>,
    pub(super) gateway_v6: Option<At<Ipv6Addr>>,
    pub(super) mtu: Option<Spanned<Int>>,
    pub(super) tcp_idle_timeout: Option<Parsed<Duration>>,
    pub(super) udp_idle_timeout: Option<Parsed<Duration>>,
    pub(super) flow_table_size: Option<Spanned<Int>>,
    pub(super) maglev_table_size: Option<Spanned<Int>>,
    pub(super) neighbors: Option<Neighbors>,
    pub(super) dpdk: Option<RawDpdk>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawDriver {
    AfPacket,
    AfXdp,
    Dpdk,
    Pcap,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawIdle {
    Busy,
    Adaptive,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawForwarding {
    Ipip,
    L2dsr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawFamily {
    Ipv4,
    Ipv6,
}

/// `[dataplane.neighbors]` in file order, duplicates kept so that
/// `"2001:db8::1"` and `"2001:DB8::1"` can be reported rather than merged.
#[derive(Debug, Default)]
pub(super) struct Neighbors(pub(super) Vec<(At<IpAddr>, Parsed<Mac>)>);

impl<'de> Deserialize<'de> for Neighbors {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NeighborsVisitor;

        impl<'de> Visitor<'de> for NeighborsVisitor {
            type Value = Neighbors;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of \"IP\" = \"MAC\"")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Neighbors, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Neighbors(entries))
            }
        }

        deserializer.deserialize_map(NeighborsVisitor)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDpdk {
    pub(super) eal_args: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns {
    pub(super) listen: Option<Vec<At<SocketAddr>>>,
    pub(super) zone: Option<Parsed<DnsName>>,
    pub(super) ttl: Option<Spanned<Int>>,
    pub(super) update: Option<RawDnsUpdate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDnsUpdate {
    pub(super) server: Parsed<ServerAddr>,
    pub(super) zone: Option<Parsed<DnsName>>,
    pub(super) key_name: Parsed<DnsName>,
    pub(super) key_secret: Parsed<Base64>,
    pub(super) algorithm: Option<Parsed<TsigAlgorithm>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: Option<Parsed<MetricsListen>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: Option<At<AdminListen>>,
    pub(super) token_file: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    pub(super) path: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    pub(super) name: Spanned<String>,
    pub(super) prefixes: Spanned<Vec<At<IpNet>>>,
    pub(super) cooldown: Option<Parsed<Duration>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) name: At<Label>,
    pub(super) pool: Spanned<String>,
    pub(super) ports: Spanned<Vec<At<PortSpec>>>,
    pub(super) families: Option<Spanned<Vec<Spanned<RawFamily>>>>,
    pub(super) vips: Option<Vec<At<IpAddr>>>,
    pub(super) backends: Spanned<Vec<At<IpAddr>>>,
    pub(super) forwarding: Option<RawForwarding>,
    pub(super) drain_grace: Option<At<Duration>>,
    pub(super) drain_quiet: Option<Parsed<Duration>>,
    pub(super) drain_timeout: Option<At<Duration>>,
    pub(super) health: Option<RawHealth>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub(super) interval: Option<At<Duration>>,
    pub(super) timeout: Option<At<Duration>>,
    pub(super) rise: Option<Spanned<Int>>,
    pub(super) fall: Option<Spanned<Int>>,
    pub(super) port: Option<Spanned<Int>>,
}
