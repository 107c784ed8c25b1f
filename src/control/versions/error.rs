//! Why the version manager refused a change. Each message names what was
//! wrong, for the operator who asked through the API or a reload.

use std::net::IpAddr;

use crate::control::config::Family;
use crate::dataplane::maglev::MaglevError;

/// Why a change was refused. Every refused change leaves the manager as it
/// was; the messages are shown to the operator as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("unknown service \"{0}\"")]
    UnknownService(String),
    #[error("service \"{service}\" has no version {id}")]
    UnknownVersion { service: String, id: u32 },
    #[error("service \"{service}\": no version has backend {addr}")]
    UnknownBackend { service: String, addr: IpAddr },
    #[error("service \"{0}\": the backend list is empty")]
    NoBackends(String),
    #[error("service \"{service}\": backend {addr} is listed twice")]
    DuplicateBackend { service: String, addr: IpAddr },
    #[error("service \"{service}\": backend {addr} is not a unicast address")]
    BadBackend { service: String, addr: IpAddr },
    #[error("service \"{service}\": backend {addr} lies inside VIP pool \"{pool}\"")]
    BackendInPool {
        service: String,
        addr: IpAddr,
        pool: String,
    },
    #[error("service \"{service}\": backend {addr} needs ipip encapsulation but no encap_source_{family} is configured")]
    NoEncapSource {
        service: String,
        addr: IpAddr,
        family: Family,
    },
    #[error("service \"{service}\": the active version {id} already has exactly these backends")]
    SameBackends { service: String, id: u32 },
    #[error("pool \"{pool}\" has no free {family} address (service \"{service}\")")]
    PoolExhausted {
        service: String,
        pool: String,
        family: Family,
    },
    #[error("service \"{service}\": pool \"{pool}\" does not exist")]
    UnknownPool { service: String, pool: String },
    #[error("service \"{service}\": configured VIP {vip} {why}")]
    VipUnavailable {
        service: String,
        vip: IpAddr,
        why: String,
    },
    #[error("too many live versions: all {limit} version slots are in use")]
    TooManyVersions { limit: u32 },
    #[error("service \"{0}\" has no draining version to roll back to")]
    NothingDraining(String),
    #[error("service \"{0}\" is being removed: it has no active version")]
    NoActive(String),
    #[error("service \"{service}\": {source}")]
    Maglev {
        service: String,
        source: MaglevError,
    },
}
