//! The embedded authoritative server: UDP and TCP listeners on every
//! `[dns] listen` address, one thread with its own small tokio runtime.
//!
//! Each query loads the published snapshot (the one the workers use) and
//! answers from the [`ZoneView`] of that generation, rebuilt only when the
//! generation moves. A watcher notices publishes without waiting for a
//! query, so every change of what DNS answers is logged once, when it
//! happens. Nothing here can block the data plane: the snapshot cell is
//! read-only and wait-free.
//!
//! Wire handling is hickory-proto's `Message`; [`respond`] is sans-IO so
//! that tests and fuzzers drive it without sockets.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{oneshot, watch, Semaphore};

use crate::control::config::Dns;
use crate::dns::update::{UpdateStats, Updater};
use crate::dns::zone::{Zone, ZoneView};
use crate::dns::{DnsError, Rcode};
use crate::snapshot::SnapshotCell;

/// The payload size we advertise in our OPT record and the most we send
/// over UDP even when a client offers more (the DNS flag day 2020 value:
/// no IP fragmentation on common paths).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// The UDP limit for a client without EDNS (RFC 1035).
pub const CLASSIC_UDP_PAYLOAD: u16 = 512;
/// Open TCP connections at once; more are closed at accept.
const MAX_TCP_CONNECTIONS: usize = 256;
/// A TCP connection that sends no complete query for this long is closed
/// (RFC 7766 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// How often the watcher looks for a new snapshot to log its changes.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// Attempts to find a port free for both UDP and TCP when asked for port 0.
const PORT_ZERO_ATTEMPTS: usize = 16;

/// How a response travels: it decides the size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A running server. Dropping it stops the server too; [`DnsServer::shutdown`]
/// also waits for its thread.
#[derive(Debug)]
pub struct DnsServer {
    addrs: Vec<SocketAddr>,
    stats: Arc<Stats>,
    update_stats: Arc<UpdateStats>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Counters per response code, plus datagrams that got no answer at all
/// (too short to hold a header, or themselves responses).
#[derive(Debug, Default)]
struct Stats {
    rcodes: [AtomicU64; Rcode::ALL.len()],
    ignored: AtomicU64,
}

/// What every listener task shares.
struct Shared {
    zone: Zone,
    cell: Arc<SnapshotCell>,
    view: Mutex<Arc<ZoneView>>,
    stats: Arc<Stats>,
    /// Every new view, for the updater (which wants only the latest).
    views: watch::Sender<Arc<ZoneView>>,
}

/// Starts the authoritative server for `cfg.zone` on every `cfg.listen`
/// address (UDP and TCP on the same port; port 0 picks one free for both).
///
/// Sockets are bound before this returns, so a bad or busy address is an
/// error here, not a log line later.
pub fn spawn(cfg: &Dns, cell: Arc<SnapshotCell>) -> Result<DnsServer, DnsError> {
    let zone = Zone::new(cfg)?;
    let update_stats = Arc::new(UpdateStats::default());
    let updater = match &cfg.update {
        Some(update) => Some(Updater::new(update, cfg.ttl, update_stats.clone())?),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DnsError::Runtime)?;
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    let mut addrs = Vec::new();
    {
        let _enter = runtime.enter();
        for addr in &cfg.listen {
            let (u, t) = bind_pair(*addr)?;
            let local = u.local_addr().map_err(|source| DnsError::Bind {
                addr: *addr,
                proto: "udp",
                source,
            })?;
            let bind_err = |proto, source| DnsError::Bind {
                addr: *addr,
                proto,
                source,
            };
            udp.push(UdpSocket::from_std(u).map_err(|e| bind_err("udp", e))?);
            tcp.push(TcpListener::from_std(t).map_err(|e| bind_err("tcp", e))?);
            addrs.push(local);
        }
    }
    let stats = Arc::new(Stats::default());
    let initial = Arc::new(zone.view(&cell.load()));
    log_changes(&ZoneView::default(), &initial);
    let (views, views_rx) = watch::channel(initial.clone());
    let shared = Arc::new(Shared {
        zone,
        cell,
        view: Mutex::new(initial),
        stats: stats.clone(),
        views,
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("cutover-dns".into())
        .spawn(move || {
            runtime.block_on(async move {
                for sock in udp {
                    tokio::spawn(serve_udp(sock, shared.clone()));
                }
                for listener in tcp {
                    tokio::spawn(serve_tcp(listener, shared.clone()));
                }
                if let Some(updater) = updater {
                    tokio::spawn(updater.run(views_rx));
                }
                tokio::spawn(watch_snapshots(shared));
                // Resolves on shutdown() and when the handle is dropped.
                let _ = stopped.await;
            });
        })
        .map_err(DnsError::Runtime)?;
    tracing::info!(listen = ?addrs, "dns server started");
    Ok(DnsServer {
        addrs,
        stats,
        update_stats,
        stop: Some(stop),
        thread: Some(thread),
    })
}

impl DnsServer {
    /// The bound addresses, one per `[dns] listen` entry, in order; UDP and
    /// TCP share each. With port 0 in the configuration, the real port.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Responses sent with `rcode` since the start.
    pub fn queries(&self, rcode: Rcode) -> u64 {
        self.stats.rcodes[rcode as usize].load(Ordering::Relaxed)
    }

    /// Messages that got no response: shorter than a header, unreadable,
    /// or responses themselves (answering those invites reflection loops).
    pub fn ignored(&self) -> u64 {
        self.stats.ignored.load(Ordering::Relaxed)
    }

    /// Dynamic updates the external primary accepted (`[dns.update]`).
    pub fn updates_ok(&self) -> u64 {
        self.update_stats.ok.load(Ordering::Relaxed)
    }

    /// Dynamic updates that failed (refused, unanswered, badly signed);
    /// each is retried with back-off.
    pub fn update_failures(&self) -> u64 {
        self.update_stats.failed.load(Ordering::Relaxed)
    }

    /// Stops the listeners and waits for the server's thread.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("dns server thread panicked");
            }
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

impl Stats {
    fn count(&self, rcode: Rcode) {
        self.rcodes[rcode as usize].fetch_add(1, Ordering::Relaxed);
        metrics::counter!("cutover_dns_queries_total", "rcode" => rcode.as_str()).increment(1);
    }
}

impl Shared {
    /// The view of the snapshot published now, rebuilt when the
    /// generation moved since the last call.
    fn current_view(&self) -> Arc<ZoneView> {
        let snap = self.cell.load();
        let mut cached = self.view.lock().unwrap_or_else(|e| e.into_inner());
        if cached.generation != snap.generation {
            let fresh = Arc::new(self.zone.view(&snap));
            log_changes(&cached, &fresh);
            self.views.send_replace(fresh.clone());
            *cached = fresh;
        }
        cached.clone()
    }

    /// Answers one message and counts it.
    fn handle(&self, request: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let view = self.current_view();
        match respond(&self.zone, &view, request, transport) {
            Some((bytes, rcode)) => {
                self.stats.count(rcode);
                Some(bytes)
            }
            None => {
                self.stats.ignored.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

/// One log line per service whose answer changed.
fn log_changes(old: &ZoneView, new: &ZoneView) {
    for change in old.changes(new) {
        tracing::info!(
            service = %change.service,
            old_vip = ?change.old,
            new_vip = ?change.new,
            serial = new.serial,
            "dns answer changed"
        );
    }
}

/// The response to one DNS message and its code, or `None` when the
/// message deserves no answer (no readable header, or a response).
///
/// Malformed queries with a readable header get FORMERR; opcodes other
/// than QUERY get NOTIMP; EDNS versions above 0 get BADVERS.
pub fn respond(
    zone: &Zone,
    view: &ZoneView,
    request: &[u8],
    transport: Transport,
) -> Option<(Vec<u8>, Rcode)> {
    let header = Header::read(&mut BinDecoder::new(request)).ok()?;
    if header.message_type() != MessageType::Query {
        return None;
    }
    let mut reply = Message::new();
    reply.set_header(Header::response_from_request(&header));
    let Ok(query) = Message::from_vec(request) else {
        reply.set_response_code(ResponseCode::FormErr);
        return Some((
            encode(&reply, usize::from(CLASSIC_UDP_PAYLOAD)),
            Rcode::FormErr,
        ));
    };
    // A query has exactly one question; only then is it echoed: copying
    // many (each up to 255 bytes of name) made a FORMERR larger than its
    // query and than the 512 bytes UDP allows (found by the dns fuzz
    // target).
    let question = match query.queries() {
        [q] => Some(q),
        _ => None,
    };
    if let Some(q) = question {
        reply.add_query(q.clone());
    }
    let limit = match (transport, query.extensions()) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, None) => usize::from(CLASSIC_UDP_PAYLOAD),
        (Transport::Udp, Some(edns)) => usize::from(
            edns.max_payload()
                .clamp(CLASSIC_UDP_PAYLOAD, MAX_UDP_PAYLOAD),
        ),
    };
    if let Some(their) = query.extensions() {
        let mut ours = Edns::new();
        ours.set_max_payload(MAX_UDP_PAYLOAD);
        ours.set_version(0);
        // RFC 3225: the DO bit is copied into the response.
        ours.set_dnssec_ok(their.flags().dnssec_ok);
        reply.set_edns(ours);
        if their.version() > 0 {
            reply.set_response_code(ResponseCode::BADVERS);
            return Some((encode(&reply, limit), Rcode::BadVers));
        }
    }
    if header.op_code() != OpCode::Query {
        reply.set_response_code(ResponseCode::NotImp);
        return Some((encode(&reply, limit), Rcode::NotImp));
    }
    let Some(question) = question else {
        reply.set_response_code(ResponseCode::FormErr);
        return Some((encode(&reply, limit), Rcode::FormErr));
    };
    let answer = zone.answer(view, question);
    let rcode = match answer.rcode {
        ResponseCode::NoError => Rcode::NoError,
        ResponseCode::NXDomain => Rcode::NxDomain,
        _ => Rcode::Refused,
    };
    reply
        .set_response_code(answer.rcode)
        .set_authoritative(answer.authoritative)
        .add_answers(answer.answers)
        .add_name_servers(answer.authority)
        .add_additionals(answer.additional);
    Some((encode(&reply, limit), rcode))
}

/// `reply` on the wire in at most `limit` bytes: whole when it fits,
/// otherwise header, question and OPT only with TC set, so that the
/// client retries over TCP (RFC 2181 §9: no partial RRsets); and should
/// even the question not fit, header and OPT alone.
pub fn encode(reply: &Message, limit: usize) -> Vec<u8> {
    match reply.to_vec() {
        Ok(bytes) if bytes.len() <= limit => bytes,
        Ok(_) => {
            let mut short = reply.truncate();
            match short.to_vec() {
                Ok(bytes) if bytes.len() <= limit => bytes,
                _ => {
                    short.take_queries();
                    short.to_vec().unwrap_or_else(|_| servfail(reply))
                }
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot encode a dns response");
            servfail(reply)
        }
    }
}

/// A bare SERVFAIL for a response that could not be encoded; the header
/// alone always encodes.
fn servfail(reply: &Message) -> Vec<u8> {
    let msg = Message::error_msg(reply.id(), reply.op_code(), ResponseCode::ServFail);
    msg.to_vec().unwrap_or_default()
}

/// UDP and TCP sockets on the same address; with port 0, on the same
/// free port (retrying when the port UDP got is taken for TCP).
fn bind_pair(addr: SocketAddr) -> Result<(std::net::UdpSocket, std::net::TcpListener), DnsError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let udp = std::net::UdpSocket::bind(addr).map_err(|source| DnsError::Bind {
            addr,
            proto: "udp",
            source,
        })?;
        let bound = udp.local_addr().map_err(|source| DnsError::Bind {
            addr,
            proto: "udp",
            source,
        })?;
        match std::net::TcpListener::bind(bound) {
            Ok(tcp) => {
                let nb = udp
                    .set_nonblocking(true)
                    .and_then(|()| tcp.set_nonblocking(true));
                nb.map_err(|source| DnsError::Bind {
                    addr,
                    proto: "tcp",
                    source,
                })?;
                return Ok((udp, tcp));
            }
            Err(e)
                if addr.port() == 0
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && attempt < PORT_ZERO_ATTEMPTS => {}
            Err(source) => {
                return Err(DnsError::Bind {
                    addr,
                    proto: "tcp",
                    source,
                })
            }
        }
    }
}

async fn serve_udp(sock: UdpSocket, shared: Arc<Shared>) {
    // The largest datagram; a query is small, but a short buffer would
    // silently cut a long one and turn it into FORMERR.
    let mut buf = vec![0u8; 65535];
    loop {
        let (len, peer) = match sock.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!(error = %e, "dns udp receive failed");
                continue;
            }
        };
        let Some(request) = buf.get(..len) else {
            continue;
        };
        if let Some(response) = shared.handle(request, Transport::Udp) {
            if let Err(e) = sock.send_to(&response, peer).await {
                tracing::debug!(error = %e, %peer, "dns udp send failed");
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(got) => got,
            Err(e) => {
                // Out of file descriptors and the like: back off a little
                // instead of spinning.
                tracing::debug!(error = %e, "dns tcp accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "dns tcp connection limit reached");
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            serve_tcp_connection(stream, &shared).await;
            drop(slot);
        });
    }
}

/// Length-prefixed queries (RFC 1035 §4.2.2), several per connection,
/// answered in order; the connection closes on idleness, on a message
/// that deserves no answer, or on any I/O error.
async fn serve_tcp_connection(mut stream: TcpStream, shared: &Shared) {
    loop {
        let mut len = [0u8; 2];
        if !matches!(
            tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let mut request = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if !matches!(
            tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut request)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let Some(response) = shared.handle(&request, Transport::Tcp) else {
            return;
        };
        let Ok(prefix) = u16::try_from(response.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(response.len() + 2);
        framed.extend_from_slice(&prefix.to_be_bytes());
        framed.extend_from_slice(&response);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

/// Rebuilds the view as soon as a snapshot is published, so changes are
/// logged when they happen rather than at the next query.
async fn watch_snapshots(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    loop {
        tick.tick().await;
        let _ = shared.current_view();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::config::Forwarding;
    use crate::testkit;
    use hickory_proto::op::Query;
    use hickory_proto::rr::{Name, RecordType};

    fn setup() -> (Zone, ZoneView) {
        let cfg = Dns {
            listen: vec!["127.0.0.1:53".parse().unwrap()],
            zone: "svc.example.".into(),
            ttl: 5,
            update: None,
        };
        let zone = Zone::with_serial_base(&cfg, 7).unwrap();
        let view = zone.view(&testkit::snapshot(1, 1, Forwarding::Ipip, 251).unwrap());
        (zone, view)
    }

    fn query(name: &str, op: OpCode) -> Vec<u8> {
        let mut msg = Message::new();
        msg.set_id(42)
            .set_op_code(op)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        msg.to_vec().unwrap()
    }

    #[test]
    fn an_answer_over_the_limit_is_truncated_with_tc() {
        let (zone, view) = setup();
        let (full, rcode) = respond(
            &zone,
            &view,
            &query("svc0.svc.example.", OpCode::Query),
            Transport::Udp,
        )
        .unwrap();
        assert_eq!(rcode, Rcode::NoError);
        let msg = Message::from_vec(&full).unwrap();
        assert!(!msg.truncated());
        assert_eq!(msg.answers().len(), 1);
        // The same response with a limit it does not fit in.
        let small = encode(&msg, full.len() - 1);
        let cut = Message::from_vec(&small).unwrap();
        assert!(cut.truncated());
        assert!(cut.answers().is_empty());
        assert_eq!(cut.queries(), msg.queries());
        assert_eq!(cut.id(), 42);
    }

    /// A query for `n` distinct names of about 60 bytes each.
    fn many_questions(n: usize) -> Message {
        let mut msg = Message::new();
        msg.set_id(42).set_op_code(OpCode::Query);
        for i in 0..n {
            let name = format!("a-label-long-enough-to-fill-a-message-quickly-number-{i}.example.");
            msg.add_query(Query::query(
                Name::from_ascii(&name).unwrap(),
                RecordType::A,
            ));
        }
        msg
    }

    #[test]
    fn several_questions_get_a_formerr_that_echoes_none() {
        // Eight questions of about 60 bytes: echoed, the FORMERR was over
        // 512 bytes on UDP, larger than the query that caused it.
        let (zone, view) = setup();
        let q = many_questions(8).to_vec().unwrap();
        let (bytes, rcode) = respond(&zone, &view, &q, Transport::Udp).unwrap();
        assert_eq!(rcode, Rcode::FormErr);
        let msg = Message::from_vec(&bytes).unwrap();
        assert_eq!(msg.id(), 42);
        // Not cut to size either: there was nothing to cut.
        assert!(msg.queries().is_empty() && !msg.truncated());
        assert!(
            bytes.len() <= q.len() && bytes.len() <= 512,
            "{} bytes",
            bytes.len()
        );
    }

    #[test]
    fn a_reply_whose_questions_alone_are_over_the_limit_drops_them() {
        let mut reply = many_questions(12);
        reply.set_message_type(MessageType::Response);
        let bytes = encode(&reply, 512);
        assert!(bytes.len() <= 512, "{} bytes", bytes.len());
        let msg = Message::from_vec(&bytes).unwrap();
        assert!(msg.truncated());
        assert!(msg.queries().is_empty());
        assert_eq!(msg.id(), 42);
    }

    #[test]
    fn malformed_queries_get_formerr_and_headerless_ones_nothing() {
        let (zone, view) = setup();
        let mut bad = query("svc0.svc.example.", OpCode::Query);
        bad.truncate(bad.len() - 3);
        let (bytes, rcode) = respond(&zone, &view, &bad, Transport::Udp).unwrap();
        assert_eq!(rcode, Rcode::FormErr);
        let msg = Message::from_vec(&bytes).unwrap();
        assert_eq!(msg.id(), 42);
        assert_eq!(msg.response_code(), ResponseCode::FormErr);
        assert!(respond(&zone, &view, &bad[..11], Transport::Udp).is_none());
        // A response is never answered (no reflection loops).
        let (answer, _) = respond(
            &zone,
            &view,
            &query("svc0.svc.example.", OpCode::Query),
            Transport::Tcp,
        )
        .unwrap();
        assert!(respond(&zone, &view, &answer, Transport::Udp).is_none());
    }

    #[test]
    fn other_opcodes_are_not_implemented() {
        let (zone, view) = setup();
        let (_, rcode) = respond(
            &zone,
            &view,
            &query("svc.example.", OpCode::Update),
            Transport::Udp,
        )
        .unwrap();
        assert_eq!(rcode, Rcode::NotImp);
    }
}
