//! DNS: how clients learn which VIP, and so which version, to send to.
//!
//! The embedded authoritative server ([`server`]) answers `SERVICE.ZONE`
//! with the active version's VIPs from the same published snapshot the
//! workers forward with ([`zone`]); optionally the same records are pushed
//! to an external primary with signed dynamic updates ([`update`]). The
//! wire format is hickory-proto's;
//! this module only decides what to answer.

use std::io;
use std::net::SocketAddr;

pub mod server;
pub mod update;
pub mod zone;

pub use server::{spawn, DnsServer};
pub use zone::{Change, Zone, ZoneView};

/// Why the DNS server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("[dns] zone {zone:?} is not a valid domain name: {reason}")]
    Zone { zone: String, reason: String },
    #[error("cannot listen for DNS over {proto} on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        proto: &'static str,
        source: io::Error,
    },
    #[error("[dns.update]: {reason}")]
    Update { reason: String },
    #[error("cannot start the DNS server's runtime: {0}")]
    Runtime(io::Error),
}

/// The response codes the server sends, as counted in
/// `cutover_dns_queries_total{rcode}` (upper-case mnemonics, as CoreDNS
/// and BIND's statistics name them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Rcode {
    NoError,
    FormErr,
    ServFail,
    NxDomain,
    NotImp,
    Refused,
    BadVers,
}

impl Rcode {
    /// Every code, in counter order.
    pub const ALL: [Rcode; 7] = [
        Rcode::NoError,
        Rcode::FormErr,
        Rcode::ServFail,
        Rcode::NxDomain,
        Rcode::NotImp,
        Rcode::Refused,
        Rcode::BadVers,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Rcode::NoError => "NOERROR",
            Rcode::FormErr => "FORMERR",
            Rcode::ServFail => "SERVFAIL",
            Rcode::NxDomain => "NXDOMAIN",
            Rcode::NotImp => "NOTIMP",
            Rcode::Refused => "REFUSED",
            Rcode::BadVers => "BADVERS",
        }
    }
}
