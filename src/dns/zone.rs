//! The zone as DNS clients see it: which names exist and what they hold.
//!
//! This is where the "DNS-based" half of the method lives: a client learns
//! the active version's VIP here, so its packets carry the version in their
//! destination address. A [`ZoneView`] is derived from one published
//! [`Snapshot`], the same one the workers forward with, so DNS never names
//! a VIP that the data plane does not hold: the control plane publishes a
//! new version before making it active, and makes a version draining
//! (out of DNS) before its VIP leaves a snapshot.
//!
//! Everything here is sans-IO: `Zone::answer` maps one question to the
//! records of a response, and the server does the wire and the sockets.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::control::config::Dns;
use crate::dns::DnsError;
use crate::snapshot::{Snapshot, VersionState};

/// SOA timers. No secondary transfers this zone (transfers are refused),
/// so they only matter to tools that read them; BIND-like defaults.
const SOA_REFRESH: i32 = 3600;
const SOA_RETRY: i32 = 600;
const SOA_EXPIRE: i32 = 86400;

/// The fixed part of the zone: its apex, TTL and server names, from
/// `[dns]`. What changes with every publish lives in [`ZoneView`].
#[derive(Debug, Clone)]
pub struct Zone {
    /// Lower case, fully qualified.
    apex: Name,
    ttl: u32,
    /// `ns.ZONE`: the one name server of the zone (the NS record's target).
    ns: Name,
    /// `hostmaster.ZONE`: the SOA RNAME.
    hostmaster: Name,
    /// Addresses of `ns.ZONE` (and glue with NS answers): the listen
    /// addresses that are not wildcards. Empty when we listen on
    /// `0.0.0.0`/`::` only: we cannot know which address clients reach.
    ns_addrs: Vec<IpAddr>,
    /// Added to the snapshot generation to make the SOA serial: the start
    /// time, so that a restarted server does not go back to small serials.
    serial_base: u32,
}

/// What DNS answers in one snapshot: the active VIPs by name, and the
/// serial that goes with them.
#[derive(Debug, Clone, Default)]
pub struct ZoneView {
    /// The snapshot generation this view was built from.
    pub generation: u64,
    /// The SOA serial: raised on every publish (RFC 1982 arithmetic).
    pub serial: u32,
    /// Service name → the active version's VIPs, sorted. Services without
    /// an active version are absent: they are not in DNS.
    pub active: BTreeMap<String, Vec<IpAddr>>,
    /// Lower-case owner name → VIPs, for lookups.
    names: HashMap<Name, Vec<IpAddr>>,
    /// Names that exist only because a longer name is below them (a
    /// service `a.b` makes `b.ZONE` exist): NODATA, not NXDOMAIN.
    empty_non_terminals: HashSet<Name>,
}

/// One change of what DNS answers for a service, for logs and updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub service: String,
    /// Empty when the service was not in DNS before.
    pub old: Vec<IpAddr>,
    /// Empty when the service left DNS.
    pub new: Vec<IpAddr>,
}

/// The records of one response, before it is put on the wire.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) rcode: ResponseCode,
    /// AA: set for every answer from inside the zone.
    pub(crate) authoritative: bool,
    pub(crate) answers: Vec<Record>,
    pub(crate) authority: Vec<Record>,
    pub(crate) additional: Vec<Record>,
}

impl Answer {
    fn refused() -> Answer {
        Answer {
            rcode: ResponseCode::Refused,
            authoritative: false,
            answers: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
        }
    }
}

impl Zone {
    /// The zone of `[dns]`, with the serial based on the current time.
    pub fn new(cfg: &Dns) -> Result<Zone, DnsError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // Seconds since 1970 fit in u32 until 2106; past that, wrap (the
        // serial is compared with RFC 1982 arithmetic anyway).
        let serial_base = u32::try_from(now & u64::from(u32::MAX)).unwrap_or(0);
        Zone::with_serial_base(cfg, serial_base)
    }

    /// As [`Zone::new`] with a given serial base (tests).
    pub fn with_serial_base(cfg: &Dns, serial_base: u32) -> Result<Zone, DnsError> {
        let bad = |reason: String| DnsError::Zone {
            zone: cfg.zone.clone(),
            reason,
        };
        let mut apex = Name::from_ascii(&cfg.zone)
            .map_err(|e| bad(e.to_string()))?
            .to_lowercase();
        apex.set_fqdn(true);
        let ns = Name::from_ascii("ns")
            .and_then(|n| n.append_domain(&apex))
            .map_err(|e| bad(e.to_string()))?;
        let hostmaster = Name::from_ascii("hostmaster")
            .and_then(|n| n.append_domain(&apex))
            .map_err(|e| bad(e.to_string()))?;
        let mut ns_addrs: Vec<IpAddr> = cfg
            .listen
            .iter()
            .map(SocketAddr::ip)
            .filter(|ip| !ip.is_unspecified())
            .collect();
        ns_addrs.sort();
        ns_addrs.dedup();
        Ok(Zone {
            apex,
            ttl: cfg.ttl,
            ns,
            hostmaster,
            ns_addrs,
            serial_base,
        })
    }

    /// The apex, lower case and fully qualified.
    pub fn apex(&self) -> &Name {
        &self.apex
    }

    /// The records DNS serves from `snap`: its active versions only.
    ///
    /// A service whose name is not a valid DNS name is left out (and
    /// logged): the configuration should have refused it.
    pub fn view(&self, snap: &Snapshot) -> ZoneView {
        let mut view = ZoneView {
            generation: snap.generation,
            serial: self.serial(snap.generation),
            ..ZoneView::default()
        };
        for version in snap.versions() {
            if version.state != VersionState::Active {
                continue;
            }
            let Some(service) = snap.service(version.service) else {
                continue;
            };
            let owner = match Name::from_ascii(&*service.name)
                .and_then(|n| n.append_domain(&self.apex))
            {
                Ok(n) => n.to_lowercase(),
                Err(e) => {
                    tracing::warn!(service = %service.name, error = %e, "service name is not a DNS name; not served");
                    continue;
                }
            };
            let mut vips = version.vips.clone();
            vips.sort();
            vips.dedup();
            let mut parent = owner.base_name();
            while parent.num_labels() > self.apex.num_labels() {
                let next = parent.base_name();
                view.empty_non_terminals.insert(parent);
                parent = next;
            }
            view.names.insert(owner, vips.clone());
            view.active.insert(service.name.to_string(), vips);
        }
        view
    }

    /// The SOA serial for a snapshot generation: the start time plus the
    /// generation, modulo 2^32, so it rises by one on every publish (as
    /// RFC 1982 compares serials) and a restarted process starts above
    /// the previous run unless that run published more than once a second.
    pub fn serial(&self, generation: u64) -> u32 {
        let low = u32::try_from(generation & u64::from(u32::MAX)).unwrap_or(0);
        self.serial_base.wrapping_add(low)
    }

    /// The response to one question, from `view`.
    ///
    /// In-zone answers are authoritative: the records, NODATA (NOERROR with
    /// the SOA in authority) or NXDOMAIN with the SOA. Names outside the
    /// zone, classes other than IN and zone transfers are REFUSED: we are
    /// never a resolver, and the zone changes with every publish, so a
    /// transfer would be stale before it finished.
    pub(crate) fn answer(&self, view: &ZoneView, query: &Query) -> Answer {
        let qtype = query.query_type();
        let qclass = query.query_class();
        if !matches!(qclass, DNSClass::IN | DNSClass::ANY)
            || matches!(qtype, RecordType::AXFR | RecordType::IXFR)
        {
            return Answer::refused();
        }
        let mut qname = query.name().to_lowercase();
        qname.set_fqdn(true);
        if !self.apex.zone_of(&qname) {
            return Answer::refused();
        }
        // The records of the name, all types; None: the name does not exist.
        let owner = query.name().clone();
        let records: Option<Vec<Record>> = if qname == self.apex {
            Some(vec![self.soa_record(view), self.ns_record()])
        } else if let Some(vips) = view.names.get(&qname) {
            Some(self.address_records(&owner, vips))
        } else if qname == self.ns {
            Some(self.address_records(&owner, &self.ns_addrs))
        } else if view.empty_non_terminals.contains(&qname) {
            Some(Vec::new())
        } else {
            None
        };
        let mut out = Answer {
            rcode: ResponseCode::NoError,
            authoritative: true,
            answers: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
        };
        let Some(records) = records else {
            out.rcode = ResponseCode::NXDomain;
            out.authority.push(self.soa_record(view));
            return out;
        };
        out.answers = records
            .into_iter()
            .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
            .map(|mut r| {
                r.set_name(owner.clone());
                r
            })
            .collect();
        if out.answers.is_empty() {
            out.authority.push(self.soa_record(view));
        } else if out
            .answers
            .iter()
            .any(|r| r.record_type() == RecordType::NS)
        {
            // Glue for ns.ZONE, unless a service of that name shadows it.
            if !view.names.contains_key(&self.ns) {
                out.additional = self.address_records(&self.ns, &self.ns_addrs);
            }
        }
        out
    }

    fn soa_record(&self, view: &ZoneView) -> Record {
        let soa = SOA::new(
            self.ns.clone(),
            self.hostmaster.clone(),
            view.serial,
            SOA_REFRESH,
            SOA_RETRY,
            SOA_EXPIRE,
            self.ttl,
        );
        Record::from_rdata(self.apex.clone(), self.ttl, RData::SOA(soa))
    }

    fn ns_record(&self) -> Record {
        Record::from_rdata(self.apex.clone(), self.ttl, RData::NS(NS(self.ns.clone())))
    }

    fn address_records(&self, owner: &Name, addrs: &[IpAddr]) -> Vec<Record> {
        addrs
            .iter()
            .map(|ip| {
                let rdata = match ip {
                    IpAddr::V4(v4) => RData::A(A(*v4)),
                    IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
                };
                Record::from_rdata(owner.clone(), self.ttl, rdata)
            })
            .collect()
    }
}

impl ZoneView {
    /// What changed between `self` (the older view) and `new`, by service.
    pub fn changes(&self, new: &ZoneView) -> Vec<Change> {
        let mut out = Vec::new();
        for (service, vips) in &new.active {
            let old = self.active.get(service).cloned().unwrap_or_default();
            if &old != vips {
                out.push(Change {
                    service: service.clone(),
                    old,
                    new: vips.clone(),
                });
            }
        }
        for (service, vips) in &self.active {
            if !new.active.contains_key(service) {
                out.push(Change {
                    service: service.clone(),
                    old: vips.clone(),
                    new: Vec::new(),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::config::Forwarding;
    use crate::testkit;

    fn zone() -> Zone {
        let cfg = Dns {
            listen: vec!["127.0.0.1:53".parse().unwrap()],
            zone: "svc.example.".into(),
            ttl: 5,
            update: None,
        };
        Zone::with_serial_base(&cfg, 1000).unwrap()
    }

    fn q(name: &str, qtype: RecordType) -> Query {
        Query::query(Name::from_ascii(name).unwrap(), qtype)
    }

    #[test]
    fn answers_active_vips_case_insensitively() {
        let z = zone();
        let snap = testkit::snapshot(2, 1, Forwarding::Ipip, 251).unwrap();
        let view = z.view(&snap);
        assert_eq!(view.serial, 1001);
        let a = z.answer(&view, &q("SVC1.Svc.Example.", RecordType::A));
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert!(a.authoritative);
        assert_eq!(a.answers.len(), 1);
        assert_eq!(a.answers[0].data(), &RData::A(A(testkit::vip_v4(1))));
        let aaaa = z.answer(&view, &q("svc0.svc.example.", RecordType::AAAA));
        assert_eq!(
            aaaa.answers[0].data(),
            &RData::AAAA(AAAA(testkit::vip_v6(0)))
        );
    }

    #[test]
    fn nxdomain_nodata_refused() {
        let z = zone();
        let snap = testkit::snapshot(1, 1, Forwarding::Ipip, 251).unwrap();
        let view = z.view(&snap);
        let nx = z.answer(&view, &q("nope.svc.example.", RecordType::A));
        assert_eq!(nx.rcode, ResponseCode::NXDomain);
        assert_eq!(nx.authority[0].record_type(), RecordType::SOA);
        let nodata = z.answer(&view, &q("svc0.svc.example.", RecordType::MX));
        assert_eq!(nodata.rcode, ResponseCode::NoError);
        assert!(nodata.answers.is_empty());
        assert_eq!(nodata.authority.len(), 1);
        let out = z.answer(&view, &q("example.com.", RecordType::A));
        assert_eq!(out.rcode, ResponseCode::Refused);
        assert!(!out.authoritative);
        let axfr = z.answer(&view, &q("svc.example.", RecordType::AXFR));
        assert_eq!(axfr.rcode, ResponseCode::Refused);
        let ns = z.answer(&view, &q("svc.example.", RecordType::NS));
        assert_eq!(ns.answers.len(), 1);
        assert_eq!(ns.additional.len(), 1);
    }

    #[test]
    fn draining_versions_are_not_in_dns_and_changes_are_listed() {
        let z = zone();
        let before = z.view(&testkit::snapshot(2, 1, Forwarding::Ipip, 251).unwrap());
        let mut snap = testkit::snapshot(2, 1, Forwarding::Ipip, 251).unwrap();
        snap.generation = 2;
        let mut versions: Vec<_> = snap.versions().cloned().collect();
        versions[1].state = VersionState::Draining;
        let snap =
            Snapshot::new(2, snap.settings.clone(), snap.services.clone(), versions).unwrap();
        let after = z.view(&snap);
        assert!(after.serial > before.serial);
        let nx = z.answer(&after, &q("svc1.svc.example.", RecordType::A));
        assert_eq!(nx.rcode, ResponseCode::NXDomain);
        let changes = before.changes(&after);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].service, "svc1");
        assert!(changes[0].new.is_empty());
    }
}
