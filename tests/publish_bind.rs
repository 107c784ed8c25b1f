//! A worker binds only the slots a derived snapshot changed, over a few
//! skipped generations too, falls back to a full bind when it skipped more
//! than the snapshot remembers, and spreads its flow-gauge sweep over
//! bursts.

use std::sync::Arc;

use cutover::control::config::Forwarding;
use cutover::dataplane::frame::PacketBuf;
use cutover::dataplane::pipeline::{Pipeline, Verdict};
use cutover::snapshot::Snapshot;
use cutover::testkit;

fn base(services: u32) -> Snapshot {
    testkit::snapshot(services, 2, Forwarding::Ipip, 251).expect("snapshot")
}

/// A child of `parent` at `generation` keeping every slot but `replace`,
/// whose version gets uid `uid`.
fn child(parent: &Snapshot, generation: u64, replace: u32, uid: u64) -> Snapshot {
    let mut b = parent.derive(
        generation,
        parent.settings.clone(),
        Arc::clone(&parent.services),
    );
    for v in parent.versions() {
        if v.slot == replace {
            let mut n = v.clone();
            n.uid = uid;
            b.add(n).expect("add");
        } else {
            b.keep(v.slot).expect("keep");
        }
    }
    b.finish()
}

fn run(pipe: &mut Pipeline, snap: &Snapshot, now: u64) {
    let mut burst: [PacketBuf; 0] = [];
    let mut verdicts: [Verdict; 0] = [];
    pipe.process(snap, now, &mut burst, &mut verdicts);
}

fn uid(pipe: &Pipeline, slot: usize) -> u64 {
    pipe.stats().versions[slot].uid.get()
}

#[test]
fn derived_snapshots_bind_changed_slots_over_skipped_generations() {
    let g1 = base(4);
    let mut pipe = testkit::pipeline(64);
    run(&mut pipe, &g1, 1);
    assert_eq!(
        (0..4).map(|s| uid(&pipe, s)).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    // A marker on an unchanged slot: a delta bind does not touch it.
    pipe.stats().versions[0].uid.set(1234);
    let g2 = child(&g1, 2, 2, 99);
    run(&mut pipe, &g2, 2);
    assert_eq!(uid(&pipe, 2), 99, "the changed slot is bound");
    assert_eq!(uid(&pipe, 0), 1234, "only the changed slots were visited");
    // g3 replaces slot 3; g4 (derived from g3) slot 1. A worker that goes
    // from g2 straight to g4 must still see slot 3's new version.
    let g3 = child(&g2, 3, 3, 77);
    let g4 = child(&g3, 4, 1, 55);
    assert_eq!(g4.changed_since(3), Some(&[1u32][..]));
    assert_eq!(g4.changed_since(2), None);
    let mut since_g2: Vec<u32> = g4.slots_changed_since(2).expect("remembered").collect();
    since_g2.sort_unstable();
    assert_eq!(since_g2, [1, 3]);
    run(&mut pipe, &g4, 3);
    assert_eq!(uid(&pipe, 3), 77, "the skipped generation's slot is bound");
    assert_eq!(uid(&pipe, 1), 55);
    assert_eq!(uid(&pipe, 0), 1234, "still only the changed slots");

    // Nine derivations later, g4 is past what the newest one remembers:
    // a worker still on g4 binds every slot.
    let mut newest = child(&g4, 5, 2, 1000);
    for g in 6..=13 {
        newest = child(&newest, g, 2, 1000 + g);
    }
    assert!(newest.slots_changed_since(5).is_some());
    assert!(newest.slots_changed_since(4).is_none());
    run(&mut pipe, &newest, 4);
    assert_eq!(uid(&pipe, 2), 1013);
    assert_eq!(uid(&pipe, 0), 1, "too far behind: full bind");
}

#[test]
fn the_flow_gauge_sweep_is_spread_over_bursts() {
    let snap = base(200);
    let mut pipe = testkit::pipeline(64);
    run(&mut pipe, &snap, 1);
    for c in &pipe.stats().versions[..200] {
        c.active_flows.set(7);
    }
    let period = 100_000_000;
    run(&mut pipe, &snap, period + 10);
    let refreshed = |p: &Pipeline| {
        p.stats().versions[..200]
            .iter()
            .filter(|c| c.active_flows.get() == 0)
            .count()
    };
    let first = refreshed(&pipe);
    assert!(first > 0 && first < 200, "one burst does part: {first}");
    let mut bursts = 1;
    while refreshed(&pipe) < 200 && bursts < 10 {
        run(&mut pipe, &snap, period + 10 + bursts);
        bursts += 1;
    }
    assert_eq!(refreshed(&pipe), 200, "the sweep finishes");
    assert!(bursts <= 4, "within a few bursts: {bursts}");
    // And the next sweep waits for the next period.
    for c in &pipe.stats().versions[..200] {
        c.active_flows.set(7);
    }
    run(&mut pipe, &snap, period + 20);
    assert_eq!(refreshed(&pipe), 0);
}
