//! The common-case parser against the general one: same answer on every
//! frame it accepts, and it accepts the frames it is there for.

use proptest::prelude::*;

use super::*;

fn frame(udp: bool, payload: usize) -> Vec<u8> {
    let mut v = Vec::new();
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(
        [192, 0, 2, 1],
        [203, 0, 113, 1],
        64,
    );
    let body = vec![7u8; payload];
    let r = if udp {
        b.udp(5353, 443).write(&mut v, &body)
    } else {
        b.tcp(1234, 80, 1, 1000).syn().write(&mut v, &body)
    };
    r.expect("frame");
    v
}

/// Every field of two parses, as a comparable value.
#[allow(clippy::type_complexity)]
fn fields(p: &Parsed) -> (usize, usize, FlowKey, bool, bool, Kind, bool, u8) {
    (
        p.l3,
        p.ip_len,
        p.key,
        p.v6,
        p.has_ports,
        p.kind,
        p.dont_frag,
        p.tcp_flags,
    )
}

#[test]
fn common_frames_take_the_fast_path() {
    for (udp, payload) in [(false, 0), (false, 10), (true, 12), (true, 900)] {
        let f = frame(udp, payload);
        let (mut fast, mut general) = (Parsed::EMPTY, Parsed::EMPTY);
        assert!(parse_common(&f, &mut fast), "udp={udp} payload={payload}");
        assert_eq!(parse_general(&f, &mut general), Ok(()));
        assert_eq!(fields(&fast), fields(&general));
        assert_eq!(fast.tcp_flags, if udp { 0 } else { 0x02 });
    }
}

#[test]
fn other_shapes_are_left_to_the_general_parser() {
    let base = frame(false, 10);
    let mut vlan = base.clone();
    vlan.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
    let mut options = base.clone();
    options[14] = 0x46;
    let mut fragment = base.clone();
    fragment[20] = 0x20; // MF
    let mut icmp = base.clone();
    icmp[23] = 1;
    let mut short_total = base.clone();
    short_total[16..18].copy_from_slice(&39u16.to_be_bytes());
    let mut long_total = base.clone();
    long_total[16..18].copy_from_slice(&2000u16.to_be_bytes());
    let mut bad_doff = base.clone();
    bad_doff[14 + 20 + 12] = 0x40;
    for (name, f) in [
        ("vlan", vlan),
        ("options", options),
        ("fragment", fragment),
        ("icmp", icmp),
        ("short total", short_total),
        ("long total", long_total),
        ("bad data offset", bad_doff),
        ("runt", base[..53].to_vec()),
    ] {
        let mut p = Parsed::EMPTY;
        assert!(!parse_common(&f, &mut p), "{name}");
        assert_eq!(fields(&p), fields(&Parsed::EMPTY), "{name}: p was written");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Damage anywhere in the headers: whenever the fast path accepts a
    /// frame, the general parser accepts it too with the same result.
    #[test]
    fn fast_parse_agrees_with_general(
        udp in any::<bool>(),
        payload in 0usize..64,
        edits in proptest::collection::vec((0usize..60, any::<u8>()), 0..4),
        cut in 0usize..200,
    ) {
        let mut f = frame(udp, payload);
        for (i, b) in edits {
            if let Some(x) = f.get_mut(i) {
                *x = b;
            }
        }
        f.truncate(cut.max(1));
        let (mut fast, mut general) = (Parsed::EMPTY, Parsed::EMPTY);
        if parse_common(&f, &mut fast) {
            prop_assert_eq!(parse_general(&f, &mut general), Ok(()));
            prop_assert_eq!(fields(&fast), fields(&general));
        }
    }
}
