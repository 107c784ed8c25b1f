//! Snapshots built, derived and published: what is shared, what is
//! checked, and what is freed where.

use super::*;
use crate::control::config::Forwarding;
use crate::testkit;

fn base() -> Snapshot {
    match testkit::snapshot(4, 3, Forwarding::Ipip, 251) {
        Ok(s) => s,
        Err(e) => panic!("test snapshot: {e}"),
    }
}

#[test]
fn derived_snapshot_shares_kept_versions_and_lists_changed_slots() {
    let parent = base();
    let mut b = parent.derive(2, parent.settings.clone(), Arc::clone(&parent.services));
    for slot in [0, 1, 3] {
        b.keep(slot).unwrap();
    }
    let mut replaced = parent.version(2).unwrap().clone();
    replaced.uid = 99;
    b.add(replaced).unwrap();
    let child = b.finish();
    assert_vips_lead_to_their_versions(&child);
    assert_eq!(child.generation, 2);
    assert_eq!(child.changed_since(1), Some(&[2u32][..]));
    assert_eq!(child.changed_since(0), None, "only from its parent");
    assert_eq!(parent.changed_since(0), None, "built from scratch");
    for slot in [0, 1, 3] {
        assert!(child.shares_version(&parent, slot), "slot {slot}");
    }
    assert!(!child.shares_version(&parent, 2));
    assert_eq!(child.version(2).map(|v| v.uid), Some(99));
    // Every VIP still found with one probe.
    for v in parent.versions() {
        for vip in &v.vips {
            assert_eq!(child.version_for_vip(vip).map(|x| x.slot), Some(v.slot));
        }
    }
    assert!(Arc::ptr_eq(&child.services, &parent.services));
}

/// Every VIP of every version of `snap` leads to that very version,
/// and the index holds nothing else. The index holds the versions
/// themselves, so a version built again must bring its VIPs' entries
/// along; a stale entry would send packets to the replaced version's
/// backends and health.
fn assert_vips_lead_to_their_versions(snap: &Snapshot) {
    let mut vips = 0;
    for v in snap.versions() {
        let live = snap.live(v.slot).unwrap();
        for vip in &v.vips {
            let found = snap.live_for_key(vip_key(vip)).unwrap();
            assert!(
                std::ptr::eq(found, &**live),
                "VIP {vip} of slot {}: uid {} found, {} in the slot",
                v.slot,
                found.uid(),
                live.uid()
            );
            vips += 1;
        }
    }
    assert_eq!(snap.vips.len(), vips);
}

fn tcp(port: u16) -> PortSpec {
    PortSpec {
        protocol: Protocol::Tcp,
        port,
    }
}

/// A version keeps a copy of its service's forwarding and ports for
/// the fast path: a kept version whose service changed must be built
/// again with the new ones (and bound again by the workers), not
/// shared with the old copy.
#[test]
fn a_kept_version_takes_its_services_new_ports_and_forwarding() {
    let parent = base();
    let mut services = (*parent.services).clone();
    services[2].ports = vec![tcp(8080)];
    services[2].forwarding = Forwarding::L2dsr;
    let mut b = parent.derive(2, parent.settings.clone(), Arc::new(services));
    for slot in 0..4 {
        b.keep(slot).unwrap();
    }
    let child = b.finish();
    assert_vips_lead_to_their_versions(&child);
    assert_eq!(child.changed_since(1), Some(&[2u32][..]));
    for slot in [0, 1, 3] {
        assert!(child.shares_version(&parent, slot), "slot {slot}");
    }
    let key = vip_key(&IpAddr::V4(testkit::vip_v4(2)));
    let live = child.live_for_key(key).unwrap();
    assert_eq!(live.uid(), parent.version(2).unwrap().uid);
    assert_eq!(live.forwarding(), Forwarding::L2dsr);
    assert!(live.serves(&child.services, Protocol::Tcp, Some(8080)));
    assert!(!live.serves(&child.services, Protocol::Tcp, Some(80)));
    assert!(!live.serves(&child.services, Protocol::Udp, None));
    // The parent's copy is untouched.
    let old = parent.live_for_key(key).unwrap();
    assert_eq!(old.forwarding(), Forwarding::Ipip);
    assert!(old.serves(&parent.services, Protocol::Tcp, Some(80)));
}

/// Up to `INLINE_PORTS` ports live in the version; a service with more
/// is asked directly, with the same answers.
#[test]
fn ports_beyond_the_inline_copy_are_served_too() {
    let parent = base();
    // With the UDP port: exactly as many as fit, one more, many more.
    for count in [INLINE_PORTS - 1, INLINE_PORTS, 3 * INLINE_PORTS] {
        let mut services = (*parent.services).clone();
        let n = u16::try_from(count).unwrap();
        services[1].ports = (0..n).map(|i| tcp(1000 + i)).collect();
        services[1].ports.push(PortSpec {
            protocol: Protocol::Udp,
            port: 53,
        });
        let mut b = parent.derive(2, parent.settings.clone(), Arc::new(services));
        for slot in 0..4 {
            b.keep(slot).unwrap();
        }
        let child = b.finish();
        let key = vip_key(&IpAddr::V4(testkit::vip_v4(1)));
        let live = child.live_for_key(key).unwrap();
        let serves = |p, n| live.serves(&child.services, p, n);
        for i in 0..n {
            assert!(serves(Protocol::Tcp, Some(1000 + i)), "{count}: {i}");
        }
        assert!(serves(Protocol::Udp, Some(53)), "{count}");
        assert!(serves(Protocol::Udp, None), "{count}");
        assert!(!serves(Protocol::Tcp, Some(999)), "{count}");
        assert!(!serves(Protocol::Tcp, Some(1000 + n)), "{count}");
        assert!(!serves(Protocol::Udp, Some(54)), "{count}");
    }
}

/// A replaced snapshot is never freed by a worker's guard: the cell
/// keeps it while a worker holds it, and a later publish frees it once
/// none does.
#[test]
fn replaced_snapshots_are_freed_by_publishers() {
    let cell = SnapshotCell::new(base());
    let worker = cell.load();
    let mut next = base();
    next.generation = 2;
    cell.publish(next.clone());
    assert_eq!(worker.generation, 1);
    // The worker's guard is not the last reference to generation 1.
    let held = Arc::clone(&worker);
    drop(worker);
    assert!(Arc::strong_count(&held) >= 2, "the cell still holds it");
    drop(held);
    assert_eq!(cell.retired(), 1);
    next.generation = 3;
    cell.publish(next.clone());
    // Generation 1 was only in the list: freed; generation 2 waits.
    assert_eq!(cell.retired(), 1);
    next.generation = 4;
    cell.publish(next);
    assert_eq!(cell.retired(), 1);
    assert_eq!(cell.load().generation, 4);
}

/// A rollout of one service out of a thousand leaves the derived
/// snapshot sharing all but the touched chunks of the slot table and
/// the VIP index with its parent: what keeps a worker's cache warm
/// across a publish (see `chunked`).
#[test]
fn replacing_one_service_shares_the_other_chunks() {
    let parent = testkit::snapshot(1000, 3, Forwarding::Ipip, 13).unwrap();
    let old = parent
        .versions()
        .find(|v| v.service == 500)
        .unwrap()
        .clone();
    let mut b = parent.derive_replacing(
        2,
        parent.settings.clone(),
        Arc::clone(&parent.services),
        &[500],
    );
    let mut new = old.clone();
    new.uid += 1_000_000;
    b.add(new).unwrap();
    let child = b.finish();
    assert_vips_lead_to_their_versions(&child);
    assert_vips_lead_to_their_versions(&parent);

    let slot_chunks = parent.slot_count().div_ceil(chunked::CHUNK);
    assert!(slot_chunks >= 16);
    assert_eq!(
        child.versions.shared_chunks(&parent.versions),
        slot_chunks - 1
    );
    let vip_chunks = parent.vips.chunks();
    assert!(vip_chunks >= 16);
    assert!(
        child.vips.shared_chunks(&parent.vips) >= vip_chunks - 2,
        "{} of {vip_chunks} VIP index chunks shared",
        child.vips.shared_chunks(&parent.vips)
    );
    assert_eq!(
        child.version(old.slot).map(|v| v.uid),
        Some(old.uid + 1_000_000)
    );
    assert_eq!(parent.version(old.slot).map(|v| v.uid), Some(old.uid));
    for v in parent.versions() {
        for vip in &v.vips {
            assert_eq!(child.version_for_vip(vip).map(|x| x.slot), Some(v.slot));
        }
    }
}

#[test]
fn derived_snapshot_drops_versions_not_kept() {
    let parent = base();
    let mut b = parent.derive(2, parent.settings.clone(), Arc::clone(&parent.services));
    b.keep(0).unwrap();
    let child = b.finish();
    assert_vips_lead_to_their_versions(&child);
    assert_eq!(child.versions().count(), 1);
    let gone = parent.version(1).unwrap().vips[0];
    assert!(child.version_for_vip(&gone).is_none());
    assert_eq!(child.changed_since(1), Some(&[][..]));
}

#[test]
fn keep_checks_the_same_invariants_as_new() {
    let parent = base();
    let services = Arc::clone(&parent.services);
    // Twice the same slot.
    let mut b = parent.derive(2, parent.settings.clone(), Arc::clone(&services));
    b.keep(0).unwrap();
    assert_eq!(b.keep(0), Err(SnapshotError::SlotTaken(0)));
    // A slot the parent does not have.
    assert_eq!(b.keep(7), Err(SnapshotError::NotInParent(7)));
    // A new version taking a kept version's VIP.
    let mut clash = parent.version(1).unwrap().clone();
    clash.slot = 9;
    clash.uid = 50;
    clash.vips = parent.version(0).unwrap().vips.clone();
    assert_eq!(
        b.add(clash.clone()),
        Err(SnapshotError::VipTaken(clash.vips[0]))
    );
    // A kept version whose service is gone from the new list.
    let fewer = Arc::new(services[..1].to_vec());
    let mut b = parent.derive(2, parent.settings.clone(), fewer);
    assert_eq!(
        b.keep(3),
        Err(SnapshotError::NoService {
            slot: 3,
            service: 3
        })
    );
    // Out of range and released, as in `new`.
    let mut b = parent.derive(2, parent.settings.clone(), services);
    let mut far = parent.version(0).unwrap().clone();
    far.slot = u32::try_from(MAX_VERSIONS).unwrap();
    assert_eq!(
        b.add(far.clone()),
        Err(SnapshotError::SlotOutOfRange(far.slot))
    );
    let mut gone = parent.version(0).unwrap().clone();
    gone.state = VersionState::Released;
    assert_eq!(b.add(gone), Err(SnapshotError::Released(0)));
}
