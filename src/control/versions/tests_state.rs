//! Persisted state through the manager: a restart during a drain keeps the
//! draining version draining, with its VIPs, and still releases it later.

use std::fs;

use super::tests::{cfg, dump, ip, ips, manager, silent, t, BASE};
use super::*;
use crate::control::state;

#[test]
fn state_file_round_trip_restores_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let mut m = manager();
    m.rollout("web", &ips(&["10.0.1.13"]), t(10)).unwrap();
    m.set_backend_health("web", VersionSelector::Id(2), ip("10.0.1.13"), false)
        .unwrap();
    m.rollout("api", &ips(&["10.0.2.2"]), t(11)).unwrap();
    m.evaluate(t(41), silent); // api v1 stays (30 s quiet from 11 s)
    state::save(&path, &m.persisted(t(41))).unwrap();
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["state.json"], "no temporary file is left behind");

    let loaded = state::load(&path).unwrap().unwrap();
    assert_eq!(loaded, m.persisted(t(41)));
    let r = VersionManager::restore(&cfg(BASE), loaded, t(50)).unwrap();
    assert_eq!(r.services(), m.services());
    assert_eq!(r.persisted(t(41)), m.persisted(t(41)));
    // The restored snapshot matches slot for slot, uid for uid.
    let a = m.snapshot(1).unwrap();
    let b = r.snapshot(1).unwrap();
    assert_eq!(dump(&a), dump(&b));
}

#[test]
fn restart_during_drain_keeps_draining_then_releases() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let mut m = manager();
    m.rollout("web", &ips(&["10.0.1.13"]), t(100)).unwrap();
    state::save(&path, &m.persisted(t(101))).unwrap();
    drop(m);

    // Restart at 200 s: v1 is past TTL + grace and its drain started 100 s
    // ago, but the new process has seen no traffic yet, so it must watch
    // for `drain_quiet` itself before releasing.
    let persisted = state::load(&path).unwrap().unwrap();
    let mut r = VersionManager::restore(&cfg(BASE), persisted, t(200)).unwrap();
    let v1 = r.version("web", 1).unwrap();
    assert_eq!(v1.state, VersionState::Draining);
    assert_eq!(
        v1.draining_since.as_deref(),
        Some("2023-11-14T22:15:00.000Z")
    );
    let snap = r.snapshot(1).unwrap();
    assert!(snap.version_for_vip(&ip("203.0.113.1")).is_some());
    assert!(r.evaluate(t(229), silent).is_empty());
    let ev = r.evaluate(t(230), silent);
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].id, ev[0].reason), (1, ReleaseReason::Drained));
    // The released VIP cools down across a second restart too.
    state::save(&path, &r.persisted(t(230))).unwrap();
    let persisted = state::load(&path).unwrap().unwrap();
    let mut r2 = VersionManager::restore(&cfg(BASE), persisted, t(240)).unwrap();
    let v3 = r2.rollout("web", &ips(&["10.0.1.14"]), t(241)).unwrap();
    assert_eq!(v3.id, 3);
    assert_eq!(v3.vips, ips(&["203.0.113.3", "2001:db8:100::3"]));
    assert!(v3.uid > r2.version("web", 2).unwrap().uid);
}

#[test]
fn restored_timeout_still_counts_from_the_original_drain() {
    let mut m = manager();
    m.rollout("web", &ips(&["10.0.1.13"]), t(0)).unwrap();
    let mut r = VersionManager::restore(&cfg(BASE), m.persisted(t(1)), t(590)).unwrap();
    let busy = |_: u32, _: u64| DrainObservation {
        active_flows: 3,
        last_packet: None,
    };
    assert!(r.evaluate(t(599), busy).is_empty());
    let ev = r.evaluate(t(600), busy);
    assert_eq!(ev[0].reason, ReleaseReason::Timeout);
}

#[test]
fn restore_then_reconcile_applies_a_changed_file() {
    let mut m = manager();
    m.rollout("web", &ips(&["10.0.1.13"]), t(0)).unwrap();
    let text = BASE.replace("backends = [\"10.0.2.1\"]", "backends = [\"10.0.2.7\"]");
    let new_cfg = cfg(&text);
    let mut r = VersionManager::restore(&new_cfg, m.persisted(t(1)), t(5)).unwrap();
    let report = r.reconcile(&new_cfg, t(5)).unwrap();
    // web's file backends differ from its active v2 (rolled out by API):
    // the file wins, as a reload would.
    assert_eq!(
        report.rolled_out,
        [("web".to_string(), 3), ("api".to_string(), 2)]
    );
}

#[test]
fn inconsistent_state_is_refused() {
    let m = manager();
    let good = m.persisted(t(0));
    let mut two_active = good.clone();
    let extra = two_active.services[0].versions[0].clone();
    two_active.services[0]
        .versions
        .push(state::PersistedVersion {
            id: 2,
            uid: 3,
            slot: 5,
            vips: ips(&["203.0.113.4"]),
            ..extra
        });
    two_active.services[0].next_id = 3;
    two_active.next_uid = 4;
    let mut shared_slot = good.clone();
    shared_slot.services[1].versions[0].slot = 0;
    let mut shared_vip = good.clone();
    shared_vip.services[1].versions[0].vips = ips(&["203.0.113.1"]);
    let mut stale_uid = good.clone();
    stale_uid.next_uid = 1;
    for (bad, why) in [
        (two_active, "active versions"),
        (shared_slot, "slot 0"),
        (shared_vip, "VIP 203.0.113.1"),
        (stale_uid, "uid"),
    ] {
        let err = VersionManager::restore(&cfg(BASE), bad, t(1)).unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
    }
    assert!(VersionManager::restore(&cfg(BASE), good, t(1)).is_ok());
}

#[test]
fn corrupt_state_file_is_an_error_not_a_fresh_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    state::save(&path, &manager().persisted(t(0))).unwrap();
    let mut bytes = fs::read(&path).unwrap();
    bytes.truncate(bytes.len() / 2);
    fs::write(&path, &bytes).unwrap();
    let err = state::load(&path).unwrap_err();
    assert!(err.to_string().contains("is corrupt"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), bytes);
}
