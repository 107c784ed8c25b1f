//! The harness of the `dns` fuzz target and of the responder's property
//! tests: arbitrary bytes as a query to the authoritative responder, over
//! both transports, with checks on every response.
//!
//! The responder faces the network: whatever arrives, it must not panic,
//! and what it sends back must be a DNS response to that query, within the
//! size the transport allows.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use hickory_proto::serialize::binary::BinDecodable;
use hickory_proto::ProtoError;

use crate::control::config::{Dns, Forwarding};
use crate::dns::server::{respond, Transport, CLASSIC_UDP_PAYLOAD, MAX_UDP_PAYLOAD};
use crate::dns::{Zone, ZoneView};

/// The zone the harness answers for: services `svc0` and `svc1`.
pub const FUZZ_ZONE: &str = "svc.example.";

/// What the responder did with one input.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DnsOutcome {
    /// Responses sent (one per transport at most).
    pub answered: usize,
    /// Responses carrying at least one answer record.
    pub with_answers: usize,
}

/// A zone and its view of a two-service snapshot.
pub struct DnsHarness {
    zone: Zone,
    view: ZoneView,
}

impl DnsHarness {
    /// The zone [`FUZZ_ZONE`] over `testkit::snapshot(2, 3, ..)`.
    pub fn new() -> DnsHarness {
        let cfg = Dns {
            listen: Vec::new(),
            zone: FUZZ_ZONE.into(),
            ttl: 5,
            update: None,
        };
        // Fixed arguments that always build.
        let zone = Zone::with_serial_base(&cfg, 1).expect("the harness's zone");
        let snap = super::snapshot(2, 3, Forwarding::Ipip, 251).expect("the harness's snapshot");
        let view = zone.view(&snap);
        DnsHarness { zone, view }
    }

    /// Answers `request` over UDP and over TCP. Panics when a response is
    /// not one (see [`check`]) or when a query that should be answered is
    /// not.
    pub fn run(&self, request: &[u8]) -> DnsOutcome {
        let mut outcome = DnsOutcome::default();
        for transport in [Transport::Udp, Transport::Tcp] {
            let response = respond(&self.zone, &self.view, request, transport);
            if let Some((bytes, _)) = &response {
                outcome.answered += 1;
                if check(request, transport, bytes) {
                    outcome.with_answers += 1;
                }
            } else {
                // Silence only for what has no header to answer, or is a
                // response itself.
                assert!(
                    request.len() < 12 || request[2] & 0x80 != 0,
                    "a query with a header got no response"
                );
            }
        }
        outcome
    }
}

impl Default for DnsHarness {
    fn default() -> Self {
        DnsHarness::new()
    }
}

/// A message with opcode `op` and one question, `name` `rtype`, with an EDNS
/// OPT record offering `edns` bytes when given: what the tests, the
/// property tests and the fuzz seeds send.
pub fn dns_query(
    name: &str,
    rtype: RecordType,
    op: OpCode,
    edns: Option<u16>,
) -> Result<Vec<u8>, ProtoError> {
    let mut msg = Message::new();
    msg.set_id(4242)
        .set_op_code(op)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name)?, rtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        msg.set_edns(e);
    }
    msg.to_vec()
}

/// `response` must parse, answer `request` (same id, QR set, same opcode)
/// and fit the transport: 512 bytes over UDP unless the query's EDNS
/// allows more (up to [`MAX_UDP_PAYLOAD`]). Returns whether it carries
/// answer records.
fn check(request: &[u8], transport: Transport, response: &[u8]) -> bool {
    let reply = Message::from_bytes(response).expect("the response parses");
    assert_eq!(reply.message_type(), MessageType::Response, "QR not set");
    assert_eq!(
        reply.id(),
        u16::from_be_bytes([request[0], request[1]]),
        "response id"
    );
    assert_eq!(
        u8::from(reply.op_code()),
        (request[2] >> 3) & 0x0f,
        "response opcode"
    );
    let limit = match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => Message::from_vec(request)
            .ok()
            .and_then(|q| q.extensions().as_ref().map(|e| e.max_payload()))
            .map_or(CLASSIC_UDP_PAYLOAD, |p| {
                p.clamp(CLASSIC_UDP_PAYLOAD, MAX_UDP_PAYLOAD)
            })
            .into(),
    };
    assert!(
        response.len() <= limit,
        "{} bytes over {transport:?}, limit {limit}",
        response.len()
    );
    !reply.answers().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, rtype: RecordType, edns: bool) -> Vec<u8> {
        dns_query(name, rtype, OpCode::Query, edns.then_some(4096)).unwrap()
    }

    #[test]
    fn the_harness_gets_answers_and_errors() {
        let h = DnsHarness::new();
        let a = query("svc0.svc.example.", RecordType::A, false);
        let both = |o: DnsOutcome| (o.answered, o.with_answers);
        assert_eq!(both(h.run(&a)), (2, 2));
        let aaaa = query("svc1.svc.example.", RecordType::AAAA, true);
        assert_eq!(h.run(&aaaa).with_answers, 2);
        let nx = query("nope.svc.example.", RecordType::A, false);
        assert_eq!(both(h.run(&nx)), (2, 0));
        // A header and garbage: FORMERR, still a response.
        let mut bad = a.clone();
        bad.truncate(14);
        assert_eq!(h.run(&bad).answered, 2);
        // No header, or a response: silence.
        assert_eq!(h.run(&a[..11]).answered, 0);
        let mut resp = a.clone();
        resp[2] |= 0x80;
        assert_eq!(h.run(&resp).answered, 0);
    }

    #[test]
    #[should_panic(expected = "response id")]
    fn a_response_with_another_id_fails_the_check() {
        let h = DnsHarness::new();
        let a = query("svc0.svc.example.", RecordType::A, false);
        let (mut bytes, _) = respond(&h.zone, &h.view, &a, Transport::Udp).unwrap();
        bytes[1] ^= 1;
        check(&a, Transport::Udp, &bytes);
    }

    #[test]
    #[should_panic(expected = "over Udp")]
    fn a_udp_response_over_512_bytes_fails_the_check() {
        let a = query("svc0.svc.example.", RecordType::A, false);
        let mut msg = Message::from_vec(&a).unwrap();
        msg.set_message_type(MessageType::Response);
        // Distinct names: name compression would fold equal ones.
        for i in 0..40 {
            let name = format!("padding-label-number-{i}.svc.example.");
            msg.add_query(Query::query(
                Name::from_ascii(&name).unwrap(),
                RecordType::A,
            ));
        }
        check(&a, Transport::Udp, &msg.to_vec().unwrap());
    }
}
