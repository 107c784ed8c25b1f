//! The TOML configuration of SPEC §4, parsed and validated.
//!
//! Serde types with `deny_unknown_fields` and spans (`raw`) are converted into
//! the validated domain types below (`convert`, "parse, don't validate"):
//! once a [`Config`] exists, every address parses, every pool exists, no two
//! pools overlap, every VIP lies in its pool and every service can be
//! forwarded. Nothing downstream re-checks any of it. Every error names
//! `file:line:column`, as rustc does, so `cutover check` can point at it.

mod convert;
mod raw;
mod values;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

/// The largest accepted `maglev_table_size`. Every version holds a table this
/// big, and the bound keeps the primality check (trial division) instant.
pub const MAGLEV_TABLE_SIZE_MAX: i64 = 1 << 24;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    pub dataplane: Dataplane,
    pub dns: Dns,
    pub metrics: Metrics,
    pub admin: Admin,
    pub state: State,
    /// In file order; [`Service::pool`] indexes this.
    pub pools: Vec<VipPool>,
    /// In file order; names are unique.
    pub services: Vec<Service>,
}

/// `[dataplane]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataplane {
    pub driver: Driver,
    /// May be empty: drivers that need an interface say so when they start,
    /// so that `cutover replay` can use the appliance's own file.
    pub interfaces: Vec<String>,
    /// Poll-mode workers, one per core; at least 1.
    pub workers: usize,
    /// The default for services that do not set their own.
    pub forwarding: Forwarding,
    /// Empty-poll behaviour of the workers; default adaptive.
    pub idle: Idle,
    /// Outer source of IP-in-IP towards IPv4 backends; present whenever a
    /// service forwards by `ipip` to an IPv4 backend.
    pub encap_source_v4: Option<Ipv4Addr>,
    /// Outer source of IP-in-IP towards IPv6 backends; present whenever a
    /// service forwards by `ipip` to an IPv6 backend.
    pub encap_source_v6: Option<Ipv6Addr>,
    /// The router towards IPv4 `ipip` backends that are not on the link of
    /// `interfaces`: their frames go to its MAC (resolved like a backend's,
    /// or pinned in `neighbors`). Unicast, outside every VIP pool, not
    /// `encap_source_v4`; only with some service forwarding by `ipip`
    /// (`l2dsr` backends must be on-link and never use it).
    pub gateway_v4: Option<Ipv4Addr>,
    /// The same for IPv6 `ipip` backends; may be link-local (`fe80::1`).
    pub gateway_v6: Option<Ipv6Addr>,
    /// Egress MTU, 576..=9000, and at least 1280 when any service uses IPv6.
    pub mtu: u16,
    pub tcp_idle_timeout: Duration,
    pub udp_idle_timeout: Duration,
    /// Flow-table entries per worker; at least 1.
    pub flow_table_size: usize,
    /// Maglev lookup table size per version: a prime (default 65537), at
    /// most [`MAGLEV_TABLE_SIZE_MAX`], larger than every service's backend
    /// count so that each backend gets at least one slot.
    pub maglev_table_size: usize,
    /// `[dataplane.neighbors]`: static next hops, IP = MAC, in file order,
    /// IPs unique, MACs unicast.
    pub neighbors: Vec<(IpAddr, [u8; 6])>,
    /// `[dataplane.dpdk]`, when the table is present (whatever the driver).
    pub dpdk: Option<Dpdk>,
}

/// How packets are received and sent; see SPEC §1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    AfPacket,
    AfXdp,
    Dpdk,
    Pcap,
}

/// What a worker does when a poll finds nothing (`[dataplane] idle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// Spin on empty polls: lowest latency, the core stays at 100 %.
    Busy,
    /// Spin a while, then sleep in growing steps (up to 500 µs): gives a
    /// quiet core back at the cost of some wake-up latency. The default.
    Adaptive,
}

/// Direct server return flavour; see SPEC §1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    /// IP-in-IP towards a routed backend.
    Ipip,
    /// Rewrite the Ethernet destination only; the backend is on-link.
    L2dsr,
}

/// `[dataplane.dpdk]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dpdk {
    /// Passed to `rte_eal_init` as written.
    pub eal_args: Vec<String>,
}

/// `[dns]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dns {
    /// UDP and TCP listeners of the authoritative server, unique. May be
    /// empty, when `[dns.update]` makes an external primary the public face.
    pub listen: Vec<SocketAddr>,
    /// Lower case, fully qualified, with the trailing dot.
    pub zone: String,
    /// Seconds, 1..=86400; also the minimum drain time.
    pub ttl: u32,
    pub update: Option<DnsUpdate>,
}

/// `[dns.update]`: RFC 2136 updates to an external primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsUpdate {
    /// Port 53 when the file gives only an address.
    pub server: SocketAddr,
    /// Lower case with the trailing dot; default: `[dns] zone`.
    pub zone: String,
    /// TSIG key name, lower case with the trailing dot (its canonical wire
    /// form), e.g. `cutover-key.`.
    pub key_name: String,
    /// Base64 as in BIND's key files; valid and non-empty, see
    /// [`DnsUpdate::key_bytes`].
    pub key_secret: String,
    /// One of `hmac-sha256` (default), `hmac-sha384`,
    /// `hmac-sha512`, lower case, without a trailing dot.
    pub algorithm: String,
}

impl DnsUpdate {
    /// The TSIG key, decoded from [`DnsUpdate::key_secret`].
    ///
    /// The secret was validated when the file was parsed; a hand-built
    /// value that is not base64 yields an empty key.
    pub fn key_bytes(&self) -> Vec<u8> {
        values::decode_base64(&self.key_secret).unwrap_or_default()
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metrics {
    /// Where `/metrics` is served; `None` when the file says `"off"`.
    pub listen: Option<SocketAddr>,
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub listen: AdminListen,
    /// Bearer token for the API; always present when `listen` is TCP on a
    /// non-loopback address.
    pub token_file: Option<PathBuf>,
}

/// Where the admin API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminListen {
    Tcp(SocketAddr),
    /// Written `unix:/run/cutover.sock`; file permissions guard it.
    Unix(PathBuf),
}

/// `[state]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// Where versions survive a restart; `None` keeps them in memory only.
    pub path: Option<PathBuf>,
}

/// `[[vip_pool]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipPool {
    /// Unique among pools.
    pub name: String,
    /// Non-empty, in file order; each is its own network address (no host
    /// bits), and no prefix overlaps another of any pool.
    pub prefixes: Vec<IpNet>,
    /// How long a released VIP waits before reuse; default 10 × `dns.ttl`.
    pub cooldown: Duration,
}

/// Transport protocol of a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// A service port, written `tcp/80`; the port is never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortSpec {
    pub protocol: Protocol,
    pub port: u16,
}

/// Formats as written in the file: `tcp/80`.
impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.protocol, self.port)
    }
}

/// An address family of a service's VIPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// `IPv4` / `IPv6`, for prose (Display gives the file's `ipv4`).
    fn label(self) -> &'static str {
        match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        }
    }
}

/// Formats as written in the file: `ipv4`.
impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        })
    }
}

/// `[service.health]`: TCP connect checks; every field has a default, so a
/// service without the table still has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Greater than zero; default 2s.
    pub interval: Duration,
    /// Greater than zero and at most `interval`; default 1s.
    pub timeout: Duration,
    /// Consecutive successes to become healthy; at least 1, default 2.
    pub rise: u32,
    /// Consecutive failures to become unhealthy; at least 1, default 3.
    pub fall: u32,
    /// Port to connect to; default: the first TCP port of the service.
    /// `None` (a UDP-only service without `port`) means no health check:
    /// every backend counts as healthy, since a UDP port cannot be probed
    /// with a connect.
    pub port: Option<u16>,
}

/// `[[service]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// One DNS label (`[a-z0-9-]`, 1..=63, no leading or trailing `-`),
    /// served as `NAME.ZONE`; unique.
    pub name: String,
    /// Index into [`Config::pools`].
    pub pool: usize,
    /// Non-empty, unique, in file order.
    pub ports: Vec<PortSpec>,
    /// Non-empty, unique; the pool has a prefix of each. Default `[Ipv4]`.
    pub families: Vec<Family>,
    /// The first version's VIPs, when given: at most one per family, each of
    /// a family in `families`, inside the pool, used by no other service.
    /// Families without one get the pool's lowest free address.
    pub vips: Vec<IpAddr>,
    /// Non-empty, unique unicast addresses, none inside a VIP pool, fewer
    /// than `maglev_table_size`.
    pub backends: Vec<IpAddr>,
    /// Resolved: the service's own value or `[dataplane] forwarding`. For
    /// `Ipip` the encapsulation source of each backend family is configured.
    pub forwarding: Forwarding,
    pub drain_grace: Duration,
    /// A connection idle for longer than this may be cut when its version
    /// is released: the quiet rule cannot see idle flows.
    pub drain_quiet: Duration,
    /// At least `drain_grace`.
    pub drain_timeout: Duration,
    pub health: HealthCheck,
}

/// Why a configuration was refused. Display gives `file:line:column: message`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// `line` and `column` are 1-based; the column counts characters and
    /// points at the offending key or value.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
}

/// Reads and validates the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse(path, &text)
}

/// Parses and validates `text`; `path` is used for messages only.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let raw: raw::RawConfig =
        toml::from_str(text).map_err(|e| invalid(path, text, e.span(), e.message()))?;
    convert::config(path, raw).map_err(|e| invalid(path, text, Some(e.span), &e.message))
}

/// Builds the positioned error for byte `span` of `text`; without a span it
/// points at the start of the file.
fn invalid(path: &Path, text: &str, span: Option<Range<usize>>, message: &str) -> ConfigError {
    let start = span.map_or(0, |s| s.start).min(text.len());
    // A span always starts on a char boundary; fall back to the whole text
    // rather than panic if it ever does not.
    let before = text.get(..start).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    ConfigError::Invalid {
        path: path.display().to_string(),
        line: before.matches('\n').count() + 1,
        column: before.get(line_start..).map_or(0, |l| l.chars().count()) + 1,
        // toml's syntax errors may span lines; keep ours on one.
        message: message.trim_end().replace('\n', ", "),
    }
}

#[cfg(test)]
mod tests;
