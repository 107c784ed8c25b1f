//! The embedded authoritative server against the real `dig` (Debian's
//! bind9-dnsutils): answers, TTL, NXDOMAIN, REFUSED, AXFR, TCP, truncation,
//! EDNS, the serial and the answer across a rollout and a rollback, and
//! garbage that must not take the server down.

use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use cutover::control::config::{Dns, Forwarding};
use cutover::dns::{self, DnsServer, Rcode};
use cutover::snapshot::{ServiceEntry, Snapshot, SnapshotCell, VersionEntry, VersionState};
use cutover::testkit;

const ZONE: &str = "svc.example.";

/// (service index, version id, state, VIPs) → a snapshot with services
/// `web` (0) and `big` (1).
fn snapshot(generation: u64, versions: &[(u32, u32, VersionState, Vec<&str>)]) -> Snapshot {
    let base = testkit::snapshot(2, 1, Forwarding::Ipip, 251).expect("testkit snapshot");
    let template = base.versions().next().expect("a version").clone();
    let services: Vec<ServiceEntry> = ["web", "big"]
        .iter()
        .zip(base.services.iter())
        .map(|(name, s)| ServiceEntry {
            name: Arc::from(*name),
            ..s.clone()
        })
        .collect();
    let versions = versions
        .iter()
        .enumerate()
        .map(|(slot, (service, id, state, vips))| VersionEntry {
            slot: u32::try_from(slot).expect("slot"),
            uid: u64::try_from(slot).expect("uid") + 1,
            service: *service,
            id: *id,
            state: *state,
            vips: vips.iter().map(|v| v.parse().expect("vip")).collect(),
            ..template.clone()
        })
        .collect();
    Snapshot::new(generation, base.settings.clone(), services, versions).expect("snapshot")
}

fn web_v1(generation: u64) -> Snapshot {
    snapshot(
        generation,
        &[(
            0,
            1,
            VersionState::Active,
            vec!["198.51.100.10", "2001:db8::10"],
        )],
    )
}

fn start(snap: Snapshot) -> (DnsServer, Arc<SnapshotCell>, SocketAddr) {
    let cell = Arc::new(SnapshotCell::new(snap));
    let cfg = Dns {
        listen: vec!["127.0.0.1:0".parse().expect("addr")],
        zone: ZONE.into(),
        ttl: 5,
        update: None,
    };
    let server = dns::spawn(&cfg, cell.clone()).expect("dns server starts");
    let addr = server.local_addrs()[0];
    (server, cell, addr)
}

/// Runs the real dig; a missing dig is a failure, not a skip: CI installs
/// bind9-dnsutils.
fn dig(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["+time=3", "+tries=1"])
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `dig` ({e}): install Debian's bind9-dnsutils (apt-get install -y bind9-dnsutils)")
        });
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !text.contains("connection timed out") && !text.contains("no servers could be reached"),
        "dig got no answer for {args:?}:\n{text}"
    );
    text
}

fn status(out: &str) -> &str {
    out.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("no status in dig output:\n{out}"))
}

fn flags(out: &str) -> Vec<&str> {
    out.lines()
        .find_map(|l| l.strip_prefix(";; flags: "))
        .and_then(|l| l.split(';').next())
        .unwrap_or_else(|| panic!("no flags in dig output:\n{out}"))
        .split_whitespace()
        .collect()
}

/// The records of one section (`ANSWER`, `AUTHORITY`, `ADDITIONAL`) as
/// whitespace-split fields.
fn section<'a>(out: &'a str, name: &str) -> Vec<Vec<&'a str>> {
    let header = format!(";; {name} SECTION:");
    out.lines()
        .skip_while(|l| *l != header)
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect()
}

fn soa_serial(addr: SocketAddr) -> u32 {
    let out = dig(addr, &["+short", "SOA", ZONE]);
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fields.len(), 7, "SOA: {out}");
    assert_eq!(fields[0], "ns.svc.example.");
    assert_eq!(fields[1], "hostmaster.svc.example.");
    fields[2].parse().expect("serial")
}

fn a_answer(addr: SocketAddr, name: &str) -> Vec<String> {
    dig(addr, &["+short", name, "A"])
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn answers_a_and_aaaa_with_ttl_authoritatively() {
    let (server, _cell, addr) = start(web_v1(1));
    let out = dig(addr, &["web.svc.example.", "A"]);
    assert_eq!(status(&out), "NOERROR");
    let fl = flags(&out);
    assert!(fl.contains(&"aa") && fl.contains(&"qr"), "{out}");
    assert!(!fl.contains(&"ra"), "never a resolver: {out}");
    let answer = section(&out, "ANSWER");
    assert_eq!(
        answer,
        vec![vec!["web.svc.example.", "5", "IN", "A", "198.51.100.10"]]
    );

    let out = dig(addr, &["web.svc.example.", "AAAA"]);
    assert_eq!(
        section(&out, "ANSWER"),
        vec![vec!["web.svc.example.", "5", "IN", "AAAA", "2001:db8::10"]]
    );

    // A name with records, but none of this type: NODATA with the SOA.
    let out = dig(addr, &["web.svc.example.", "MX"]);
    assert_eq!(status(&out), "NOERROR");
    assert!(section(&out, "ANSWER").is_empty(), "{out}");
    assert_eq!(section(&out, "AUTHORITY")[0][3], "SOA", "{out}");
    assert!(server.queries(Rcode::NoError) >= 3);
}

#[test]
fn apex_has_soa_and_ns_with_glue() {
    let (_server, _cell, addr) = start(web_v1(1));
    let out = dig(addr, &["svc.example.", "NS"]);
    assert_eq!(status(&out), "NOERROR");
    assert_eq!(
        section(&out, "ANSWER"),
        vec![vec!["svc.example.", "5", "IN", "NS", "ns.svc.example."]]
    );
    assert_eq!(
        section(&out, "ADDITIONAL"),
        vec![vec!["ns.svc.example.", "5", "IN", "A", "127.0.0.1"]]
    );
    assert!(soa_serial(addr) > 0);
}

#[test]
fn unknown_names_are_nxdomain_with_soa() {
    let (server, _cell, addr) = start(web_v1(1));
    for name in [
        "unknown.svc.example.",
        "x.web.svc.example.",
        "big.svc.example.",
    ] {
        let out = dig(addr, &[name, "A"]);
        assert_eq!(status(&out), "NXDOMAIN", "{name}: {out}");
        assert!(flags(&out).contains(&"aa"));
        let authority = section(&out, "AUTHORITY");
        assert_eq!(authority.len(), 1, "{out}");
        assert_eq!(authority[0][0], "svc.example.");
        assert_eq!(authority[0][3], "SOA");
    }
    assert_eq!(server.queries(Rcode::NxDomain), 3);
}

#[test]
fn names_outside_the_zone_are_refused() {
    let (server, _cell, addr) = start(web_v1(1));
    for name in ["example.com.", "example.", "."] {
        let out = dig(addr, &[name, "A"]);
        assert_eq!(status(&out), "REFUSED", "{name}: {out}");
        assert!(!flags(&out).contains(&"aa"), "{out}");
        assert!(!flags(&out).contains(&"ra"), "{out}");
        assert!(section(&out, "ANSWER").is_empty());
    }
    assert_eq!(server.queries(Rcode::Refused), 3);
}

#[test]
fn zone_transfers_are_refused() {
    let (server, _cell, addr) = start(web_v1(1));
    let out = dig(addr, &["AXFR", ZONE]);
    assert!(out.contains("Transfer failed"), "{out}");
    assert!(!out.contains("198.51.100.10"), "{out}");
    let out = dig(addr, &["IXFR=1", ZONE]);
    assert!(!out.contains("198.51.100.10"), "{out}");
    assert!(server.queries(Rcode::Refused) >= 2);
}

#[test]
fn answers_over_tcp() {
    let (_server, _cell, addr) = start(web_v1(1));
    let out = dig(addr, &["+tcp", "web.svc.example.", "A"]);
    assert_eq!(status(&out), "NOERROR");
    assert_eq!(
        section(&out, "ANSWER"),
        vec![vec!["web.svc.example.", "5", "IN", "A", "198.51.100.10"]]
    );
    assert!(out.contains("(TCP)"), "{out}");
}

#[test]
fn big_answers_are_truncated_over_udp_and_whole_over_tcp() {
    // 40 A records: about 700 bytes, over 512 without EDNS, under 1232.
    let vips: Vec<String> = (1..=40).map(|i| format!("203.0.113.{i}")).collect();
    let snap = snapshot(
        1,
        &[(
            1,
            1,
            VersionState::Active,
            vips.iter().map(String::as_str).collect(),
        )],
    );
    let (_server, _cell, addr) = start(snap);

    let out = dig(addr, &["+noedns", "+ignore", "big.svc.example.", "A"]);
    assert!(flags(&out).contains(&"tc"), "{out}");
    assert!(section(&out, "ANSWER").is_empty(), "{out}");
    assert!(!out.contains("OPT PSEUDOSECTION"), "{out}");

    // A small EDNS buffer is raised to 512 (RFC 6891), still too small.
    let out = dig(addr, &["+bufsize=256", "+ignore", "big.svc.example.", "A"]);
    assert!(flags(&out).contains(&"tc"), "{out}");
    assert!(
        out.contains("OPT PSEUDOSECTION"),
        "OPT kept in truncated answers: {out}"
    );

    let out = dig(addr, &["+bufsize=1232", "+ignore", "big.svc.example.", "A"]);
    assert!(!flags(&out).contains(&"tc"), "{out}");
    assert_eq!(section(&out, "ANSWER").len(), 40);

    // Without +ignore dig retries over TCP and gets everything.
    let out = dig(addr, &["+noedns", "big.svc.example.", "A"]);
    assert_eq!(section(&out, "ANSWER").len(), 40, "{out}");
}

#[test]
fn rollout_and_rollback_switch_the_answer_and_raise_the_serial() {
    let (_server, cell, addr) = start(web_v1(1));
    let serial1 = soa_serial(addr);
    assert_eq!(a_answer(addr, "web.svc.example."), ["198.51.100.10"]);

    // Rollout: version 2 active with a new VIP, version 1 draining (still
    // in the table, out of DNS).
    let old = vec!["198.51.100.10", "2001:db8::10"];
    let new = vec!["198.51.100.20", "2001:db8::20"];
    cell.publish(snapshot(
        2,
        &[
            (0, 1, VersionState::Draining, old.clone()),
            (0, 2, VersionState::Active, new.clone()),
        ],
    ));
    assert_eq!(a_answer(addr, "web.svc.example."), ["198.51.100.20"]);
    let out = dig(addr, &["+short", "web.svc.example.", "AAAA"]);
    assert_eq!(out.trim(), "2001:db8::20");
    let serial2 = soa_serial(addr);
    assert!(serial2 > serial1, "{serial2} > {serial1}");

    // Rollback: version 1 active again, version 2 draining.
    cell.publish(snapshot(
        3,
        &[
            (0, 1, VersionState::Active, old),
            (0, 2, VersionState::Draining, new),
        ],
    ));
    assert_eq!(a_answer(addr, "web.svc.example."), ["198.51.100.10"]);
    let serial3 = soa_serial(addr);
    assert!(serial3 > serial2, "{serial3} > {serial2}");
}

#[test]
fn names_match_case_insensitively_and_edns_is_honoured() {
    let (server, _cell, addr) = start(web_v1(1));
    let out = dig(addr, &["WeB.SvC.ExAmPlE.", "A"]);
    assert_eq!(status(&out), "NOERROR");
    let answer = section(&out, "ANSWER");
    assert_eq!(answer.len(), 1, "{out}");
    assert_eq!(answer[0][4], "198.51.100.10");
    // dig sends EDNS by default: the answer carries an OPT record.
    assert!(out.contains("; EDNS: version: 0"), "{out}");
    let out = dig(addr, &["+noedns", "web.svc.example.", "A"]);
    assert!(!out.contains("EDNS"), "{out}");
    // An EDNS version we do not speak.
    let out = dig(addr, &["+edns=1", "+noednsneg", "web.svc.example.", "A"]);
    assert_eq!(status(&out), "BADVERS", "{out}");
    assert_eq!(server.queries(Rcode::BadVers), 1);
}

/// A tiny deterministic generator, so a failure replays.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).expect("n")).expect("index")
    }
    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

/// A valid query for `web.svc.example. A`, as bytes to mutate.
fn valid_query() -> Vec<u8> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    let mut msg = Message::new();
    msg.set_id(7).add_query(Query::query(
        Name::from_ascii("web.svc.example.").expect("name"),
        RecordType::A,
    ));
    msg.to_vec().expect("encode")
}

#[test]
fn survives_ten_thousand_malformed_datagrams_and_garbage_tcp() {
    let (server, _cell, addr) = start(web_v1(1));
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_nonblocking(true).expect("nonblocking");
    let valid = valid_query();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut sink = [0u8; 2048];
    for i in 0..10_000 {
        let datagram: Vec<u8> = match i % 4 {
            // Pure noise of any length, empty included.
            0 => (0..rng.below(600)).map(|_| rng.byte()).collect(),
            // A valid query with a few bytes flipped.
            1 => {
                let mut d = valid.clone();
                for _ in 0..=rng.below(4) {
                    let at = rng.below(d.len());
                    d[at] = rng.byte();
                }
                d
            }
            // A valid query cut short or with junk after it.
            2 => {
                let mut d = valid[..rng.below(valid.len())].to_vec();
                if rng.below(2) == 0 {
                    d.extend((0..rng.below(64)).map(|_| rng.byte()));
                }
                d
            }
            // A plausible header with absurd counts and noise after it.
            _ => {
                let mut d = vec![rng.byte(), rng.byte(), rng.byte() & 0x7f, rng.byte()];
                d.extend((0..8).map(|_| 0xff));
                d.extend((0..rng.below(100)).map(|_| rng.byte()));
                d
            }
        };
        sock.send_to(&datagram, addr).expect("send");
        // Drain answers so that our own buffer never fills; pace a little
        // so the server's receive buffer does not simply drop the load.
        while sock.recv_from(&mut sink).is_ok() {}
        if i % 200 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    let mut streams: Vec<Vec<u8>> = vec![
        (0..3000).map(|_| rng.byte()).collect(),
        vec![0, 5, 1, 2, 3, 4, 5],
        vec![0xff, 0xff, 1, 2, 3],
        vec![0],
    ];
    let mut framed = vec![0u8, 40];
    framed.extend((0..40).map(|_| rng.byte()));
    framed[4] &= 0x7f;
    streams.push(framed);
    for garbage in streams {
        let mut tcp = TcpStream::connect(addr).expect("connect");
        let _ = tcp.write_all(&garbage);
    }

    let out = dig(addr, &["web.svc.example.", "A"]);
    assert_eq!(status(&out), "NOERROR");
    assert_eq!(section(&out, "ANSWER")[0][4], "198.51.100.10");
    let out = dig(addr, &["+tcp", "web.svc.example.", "A"]);
    assert_eq!(section(&out, "ANSWER")[0][4], "198.51.100.10");
    assert!(
        server.queries(Rcode::FormErr) > 0,
        "malformed queries get FORMERR"
    );
    assert!(server.ignored() > 0, "headerless datagrams are ignored");
    let answered: u64 = Rcode::ALL.iter().map(|r| server.queries(*r)).sum();
    assert!(answered > 1000, "answered {answered}");
    server.shutdown();
}

#[test]
fn busy_address_is_an_error_not_a_panic() {
    let (server, _cell, addr) = start(web_v1(1));
    let cfg = Dns {
        listen: vec![addr],
        zone: ZONE.into(),
        ttl: 5,
        update: None,
    };
    let cell = Arc::new(SnapshotCell::new(web_v1(1)));
    let err = dns::spawn(&cfg, cell).expect_err("address in use");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    drop(server);
}
