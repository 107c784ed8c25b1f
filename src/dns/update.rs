//! RFC 2136 dynamic updates, signed with TSIG, to an external primary
//! (`[dns.update]`), so that a BIND 9 or Knot server can be the public
//! face of the zone while cutover decides what it says.
//!
//! The updater is a task beside the embedded server. It receives every new
//! [`ZoneView`] (only the latest one matters), and for each service whose
//! active VIPs differ from what the primary was last told, it sends one
//! update that deletes the name's A and AAAA RRsets and adds the new
//! records: the primary switches both families atomically. A failure is
//! logged, counted and retried with exponential back-off; a newer view
//! cancels the wait. Nothing waits on it: not the data plane, which never
//! sees DNS, and not the embedded server, which shares only the runtime.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::dnssec::rdata::tsig::TsigAlgorithm;
use hickory_proto::dnssec::tsig::TSigner;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::control::config::DnsUpdate;
use crate::dns::zone::ZoneView;
use crate::dns::DnsError;

/// Seconds of clock difference the primary accepts (RFC 8945 suggests 300).
const TSIG_FUDGE: u16 = 300;
/// How long to wait for the primary's answer to one update.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// First and longest wait before retrying a failed update.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Outcome counters, readable from the server handle.
#[derive(Debug, Default)]
pub(crate) struct UpdateStats {
    pub(crate) ok: AtomicU64,
    pub(crate) failed: AtomicU64,
}

/// A configured updater, ready to run.
pub(crate) struct Updater {
    server: SocketAddr,
    zone: Name,
    ttl: u32,
    signer: TSigner,
    stats: Arc<UpdateStats>,
}

/// Why one update did not land.
#[derive(Debug, thiserror::Error)]
enum UpdateError {
    #[error("cannot build or sign the update: {0}")]
    Build(String),
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer from the primary within {RESPONSE_TIMEOUT:?}")]
    Timeout,
    #[error("the primary answered {0}")]
    Rcode(ResponseCode),
    #[error("the primary's answer failed TSIG verification: {0}")]
    Verify(String),
}

impl Updater {
    /// Checks `[dns.update]` (the key name, the algorithm hickory can sign
    /// with) before anything runs, so a bad key is a start-up error.
    pub(crate) fn new(
        cfg: &DnsUpdate,
        ttl: u32,
        stats: Arc<UpdateStats>,
    ) -> Result<Updater, DnsError> {
        let bad = |reason: String| DnsError::Update { reason };
        let algorithm = match cfg.algorithm.as_str() {
            "hmac-sha256" => TsigAlgorithm::HmacSha256,
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            other => {
                return Err(bad(format!(
                    "TSIG algorithm {other} is not supported for signing (use hmac-sha256, hmac-sha384 or hmac-sha512)"
                )))
            }
        };
        let key_name = Name::from_ascii(&cfg.key_name).map_err(|e| bad(e.to_string()))?;
        let mut zone = Name::from_ascii(&cfg.zone)
            .map_err(|e| bad(e.to_string()))?
            .to_lowercase();
        zone.set_fqdn(true);
        let signer = TSigner::new(cfg.key_bytes(), algorithm, key_name, TSIG_FUDGE)
            .map_err(|e| bad(e.to_string()))?;
        Ok(Updater {
            server: cfg.server,
            zone,
            ttl,
            signer,
            stats,
        })
    }

    /// Pushes every change of the views in `views` until the sender is
    /// dropped. At start nothing is known about the primary, so every
    /// active service is pushed once.
    pub(crate) async fn run(self, mut views: watch::Receiver<Arc<ZoneView>>) {
        let mut told: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        let mut first = true;
        let mut backoff = BACKOFF_MIN;
        loop {
            let view = views.borrow_and_update().clone();
            let mut pending: Vec<(String, Vec<IpAddr>)> = view
                .active
                .iter()
                .filter(|(service, vips)| first || told.get(*service) != Some(*vips))
                .map(|(s, v)| (s.clone(), v.clone()))
                .collect();
            // Services that left DNS: their records leave the primary too.
            pending.extend(
                told.keys()
                    .filter(|s| !view.active.contains_key(*s))
                    .map(|s| (s.clone(), Vec::new())),
            );
            let mut failed = false;
            for (service, vips) in pending {
                match self.push(&service, &vips).await {
                    Ok(()) => {
                        self.stats.ok.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("cutover_dns_updates_total", "result" => "ok")
                            .increment(1);
                        tracing::info!(%service, vip = ?vips, server = %self.server, serial = view.serial, "dns update accepted by the primary");
                        if vips.is_empty() {
                            told.remove(&service);
                        } else {
                            told.insert(service, vips);
                        }
                    }
                    Err(e) => {
                        self.stats.failed.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("cutover_dns_updates_total", "result" => "error")
                            .increment(1);
                        tracing::warn!(%service, vip = ?vips, server = %self.server, error = %e, retry_in = ?backoff, "dns update failed");
                        failed = true;
                    }
                }
            }
            first = false;
            if failed {
                // Retry after the back-off, or at once with a newer view.
                tokio::select! {
                    changed = views.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            } else {
                backoff = BACKOFF_MIN;
                if views.changed().await.is_err() {
                    return;
                }
            }
        }
    }

    /// One signed update replacing `service`'s A and AAAA RRsets with
    /// `vips` (none: the name's addresses are deleted).
    async fn push(&self, service: &str, vips: &[IpAddr]) -> Result<(), UpdateError> {
        let name = Name::from_ascii(service)
            .and_then(|n| n.append_domain(&self.zone))
            .map_err(|e| UpdateError::Build(e.to_string()))?;
        let mut msg = self.build(&name, vips);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let now = u32::try_from(now).unwrap_or(u32::MAX);
        let mut verifier = msg
            .finalize(&self.signer, now)
            .map_err(|e| UpdateError::Build(e.to_string()))?;
        let bytes = msg
            .to_vec()
            .map_err(|e| UpdateError::Build(e.to_string()))?;

        let local: SocketAddr = if self.server.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(local).await?;
        sock.connect(self.server).await?;
        sock.send(&bytes).await?;
        let mut buf = vec![0u8; 4096];
        let answer = loop {
            let len = tokio::time::timeout(RESPONSE_TIMEOUT, sock.recv(&mut buf))
                .await
                .map_err(|_| UpdateError::Timeout)??;
            let Some(raw) = buf.get(..len) else { continue };
            // Ignore strays: only the answer to our id counts.
            match Message::from_vec(raw) {
                Ok(m) if m.id() == msg.id() && m.message_type() == MessageType::Response => {
                    break (m, raw.to_vec())
                }
                _ => continue,
            }
        };
        let (response, raw) = answer;
        if response.response_code() != ResponseCode::NoError {
            return Err(UpdateError::Rcode(response.response_code()));
        }
        if let Some(verify) = verifier.as_mut() {
            verify(&raw).map_err(|e| UpdateError::Verify(e.to_string()))?;
        }
        Ok(())
    }

    fn build(&self, name: &Name, vips: &[IpAddr]) -> Message {
        let mut zone = Query::new();
        zone.set_name(self.zone.clone())
            .set_query_class(DNSClass::IN)
            .set_query_type(RecordType::SOA);
        let mut msg = Message::new();
        msg.set_id(rand_id())
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Update);
        msg.add_zone(zone);
        for rtype in [RecordType::A, RecordType::AAAA] {
            // RFC 2136 §2.5.2: class ANY, TTL 0, no rdata deletes an RRset.
            let mut delete = Record::update0(name.clone(), 0, rtype);
            delete.set_dns_class(DNSClass::ANY);
            msg.add_update(delete);
        }
        for vip in vips {
            let rdata = match vip {
                IpAddr::V4(v4) => RData::A(A(*v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
            };
            msg.add_update(Record::from_rdata(name.clone(), self.ttl, rdata));
        }
        msg
    }
}

/// A message id that is hard to guess off-path, from the standard
/// library's randomly seeded hasher (no extra dependency for 16 bits).
fn rand_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    let [a, b, ..] = h.finish().to_le_bytes();
    u16::from_le_bytes([a, b])
}
