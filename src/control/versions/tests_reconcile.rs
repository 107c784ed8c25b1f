//! Declarative reload: rollouts for changed backends, added and removed
//! services, and a file that cannot be applied changing nothing.

use super::tests::{cfg, ips, manager, observable, silent, states, t, BASE};
use super::*;
use VersionState::Draining;

#[test]
fn reconcile_rolls_out_adds_and_removes() {
    let mut m = manager();
    let text = BASE
        .replace(
            "backends = [\"10.0.1.11\", \"10.0.1.12\"]",
            "backends = [\"10.0.1.12\", \"10.0.1.11\"]",
        )
        .replace(
            "backends = [\"10.0.2.1\"]",
            "backends = [\"10.0.2.1\", \"10.0.2.2\"]",
        );
    // Same set for web (reordered): no rollout; api changed: rollout.
    let report = m.reconcile(&cfg(&text), t(10)).unwrap();
    assert_eq!(report.rolled_out, [("api".to_string(), 2)]);
    assert!(report.added.is_empty() && report.removed.is_empty());
    assert_eq!(m.active("api").unwrap().vips, ips(&["203.0.113.2"]));
    assert_eq!(m.rollouts("api"), 1);
    // Drop api, add db.
    let start = text.find("[[service]]\nname = \"api\"").unwrap();
    let mut text2 = text[..start].to_string();
    text2.push_str(
        "[[service]]\nname = \"db\"\npool = \"public\"\nports = [\"tcp/5432\"]\nbackends = [\"10.0.4.1\"]\n",
    );
    let report = m.reconcile(&cfg(&text2), t(20)).unwrap();
    assert_eq!(report.added, ["db"]);
    assert_eq!(report.removed, ["api"]);
    let names: Vec<String> = m.services().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["web", "db", "api"]);
    assert!(m.active("api").is_none());
    assert_eq!(states(&m, "api"), [(1, Draining), (2, Draining)]);
    // db avoids the live VIPs of the removed service (.2, .6).
    assert_eq!(m.active("db").unwrap().vips, ips(&["203.0.113.3"]));
    assert!(matches!(
        m.rollout("api", &ips(&["10.0.2.9"]), t(21)),
        Err(VersionError::NoActive(_))
    ));
    // Both api versions release; then the service is gone.
    assert_eq!(m.evaluate(t(50), silent).len(), 2);
    assert!(m.services().iter().all(|s| s.name != "api"));
    assert!(m
        .snapshot(9)
        .unwrap()
        .services
        .iter()
        .all(|s| &*s.name != "api"));
}

#[test]
fn reconcile_that_cannot_apply_changes_nothing() {
    let mut m = manager();
    for (i, b) in ["10.0.1.13", "10.0.1.14", "10.0.1.15", "10.0.1.16"]
        .iter()
        .enumerate()
    {
        m.rollout("web", &ips(&[b]), t(i as u64)).unwrap();
    }
    let before = observable(&m);
    // api needs a new version, but the pool's IPv4 addresses are all held.
    let text = BASE.replace(
        "backends = [\"10.0.2.1\"]",
        "backends = [\"10.0.2.1\", \"10.0.2.2\"]",
    );
    let err = m.reconcile(&cfg(&text), t(10)).unwrap_err();
    assert!(matches!(err, VersionError::PoolExhausted { .. }), "{err}");
    assert_eq!(observable(&m), before);
}

#[test]
fn reconcile_resolves_changed_neighbors_without_new_versions() {
    let mut m = manager();
    let text = BASE.replace(
        "\"10.0.1.11\" = \"02:00:00:00:01:11\"",
        "\"10.0.1.11\" = \"02:00:00:00:01:11\"\n\"10.0.1.12\" = \"02:00:00:00:01:12\"",
    );
    let report = m.reconcile(&cfg(&text), t(1)).unwrap();
    assert!(report.is_empty());
    let snap = m.snapshot(2).unwrap();
    let v1 = snap
        .version_for_vip(&super::tests::ip("203.0.113.1"))
        .unwrap();
    assert_eq!(v1.id, 1);
    assert_eq!(v1.backends[1].next_hop, Some([2, 0, 0, 0, 1, 0x12]));
}
