//! The publishing order of [`ControlPlane::change`] with a state file: the
//! data plane first, the durable write, then DNS.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::ControlPlane;
use crate::control::config::{self, Config};
use crate::control::state;
use crate::snapshot::{Snapshot, VersionState};

/// One service; every backend is a static neighbour, so nothing is
/// solicited on the network.
fn config(dir: &Path) -> (Config, std::path::PathBuf) {
    let state = dir.join("state.json");
    let text = format!(
        r#"
[dataplane]
driver = "pcap"
forwarding = "l2dsr"
maglev_table_size = 251

[dataplane.neighbors]
"10.0.1.11" = "02:00:00:00:01:11"
"10.0.1.12" = "02:00:00:00:01:12"
"10.0.1.13" = "02:00:00:00:01:13"

[dns]
listen = []
zone = "svc.example."
ttl = 5

[metrics]
listen = "off"

[state]
path = "{}"

[[vip_pool]]
name = "public"
prefixes = ["203.0.113.0/29"]
cooldown = "50s"

[[service]]
name = "web"
pool = "public"
ports = ["tcp/80"]
backends = ["10.0.1.11", "10.0.1.12"]
"#,
        state.display()
    );
    let path = dir.join("cutover.toml");
    match config::parse(&path, &text) {
        Ok(c) => (c, state),
        Err(e) => panic!("test configuration: {e}"),
    }
}

/// A control plane over `config(dir)`, and its state file's path.
fn start(dir: &Path) -> (ControlPlane, std::path::PathBuf) {
    let (cfg, state) = config(dir);
    let plane = ControlPlane::start(cfg, &dir.join("cutover.toml"), Vec::new(), Instant::now())
        .unwrap_or_else(|e| panic!("start: {e}"));
    (plane, state)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// VIPs of the live versions in the state file.
fn persisted_vips(path: &Path) -> HashSet<IpAddr> {
    let saved = state::load(path)
        .unwrap_or_else(|e| panic!("state file: {e}"))
        .unwrap_or_else(|| panic!("no state file"));
    saved
        .services
        .iter()
        .flat_map(|s| s.versions.iter())
        .filter(|v| v.state != VersionState::Released)
        .flat_map(|v| v.vips.iter().copied())
        .collect()
}

/// What the observer saw of one published snapshot.
#[derive(Debug, Clone)]
struct Seen {
    /// VIPs DNS names (active versions).
    in_dns: HashSet<IpAddr>,
    /// VIPs the workers forward.
    forwarded: HashSet<IpAddr>,
    /// Live VIPs in the state file at the moment of the publish.
    persisted: HashSet<IpAddr>,
}

fn watch(plane: &ControlPlane, state: &Path) -> Arc<Mutex<Vec<Seen>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let state = state.to_path_buf();
    plane.set_publish_observer(Box::new(move |snap: &Snapshot| {
        let vips = |active: bool| {
            snap.versions()
                .filter(|v| !active || v.state == VersionState::Active)
                .flat_map(|v| v.vips.iter().copied())
                .collect::<HashSet<_>>()
        };
        let entry = Seen {
            in_dns: vips(true),
            forwarded: vips(false),
            persisted: persisted_vips(&state),
        };
        log.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
    }));
    seen
}

#[test]
fn rollout_reaches_the_data_plane_before_the_state_file_and_dns_after_it() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (plane, state) = start(dir.path());
    let seen = watch(&plane, &state);
    let v2 = plane
        .rollout("web", &[ip("10.0.1.11"), ip("10.0.1.13")])
        .unwrap_or_else(|e| panic!("rollout: {e}"));
    let new_vip = v2.vips[0];
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(
        seen.len(),
        2,
        "data-plane snapshot, then the DNS one: {seen:?}"
    );
    for s in &seen {
        assert!(
            s.in_dns.is_subset(&s.persisted),
            "DNS named a VIP the state file lacks: {s:?}"
        );
        assert!(s.in_dns.is_subset(&s.forwarded));
    }
    // First publish: the new VIP forwards, DNS does not name it, and the
    // state file does not have it yet.
    assert!(seen[0].forwarded.contains(&new_vip));
    assert!(!seen[0].in_dns.contains(&new_vip));
    assert!(!seen[0].persisted.contains(&new_vip));
    // Second: written, then in DNS.
    assert!(seen[1].persisted.contains(&new_vip));
    assert!(seen[1].in_dns.contains(&new_vip));
    let now = plane.cell().load();
    assert_eq!(
        now.version_for_vip(&new_vip).map(|v| v.state),
        Some(VersionState::Active)
    );
}

#[test]
fn rollback_publishes_once_after_the_write() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (plane, state) = start(dir.path());
    plane
        .rollout("web", &[ip("10.0.1.11"), ip("10.0.1.13")])
        .unwrap_or_else(|e| panic!("rollout: {e}"));
    let seen = watch(&plane, &state);
    let v1 = plane
        .rollback("web")
        .unwrap_or_else(|e| panic!("rollback: {e}"));
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // No new version: nothing to stage, one publish with v1 in DNS, and
    // the state file said v1 is live before.
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].in_dns.contains(&v1.vips[0]));
    assert!(seen[0].in_dns.is_subset(&seen[0].persisted));
}

#[test]
fn failed_state_write_takes_the_staged_version_out_and_a_restart_forgets_it() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (cfg, state) = config(dir.path());
    let cfg_path = dir.path().join("cutover.toml");
    let plane = ControlPlane::start(cfg.clone(), &cfg_path, Vec::new(), Instant::now())
        .unwrap_or_else(|e| panic!("start: {e}"));
    let before = plane.cell().load_full();
    let before_vips: HashSet<IpAddr> = before.versions().flat_map(|v| v.vips.clone()).collect();
    // The temporary file `state::save` writes is a directory: the write
    // fails after the data-plane snapshot was published (a crash there
    // would leave the same file behind).
    let tmp = dir
        .path()
        .join(format!(".state.json.tmp.{}", std::process::id()));
    std::fs::create_dir(&tmp).unwrap_or_else(|e| panic!("{e}"));
    let seen = watch(&plane, &state);
    let err = plane.rollout("web", &[ip("10.0.1.11"), ip("10.0.1.13")]);
    assert!(err.is_err(), "the write must fail");
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(seen.len(), 2, "staged, then taken back: {seen:?}");
    assert!(
        seen.iter().all(|s| s.in_dns == seen[0].in_dns),
        "DNS never changed"
    );
    let staged: Vec<IpAddr> = seen[0]
        .forwarded
        .difference(&before_vips)
        .copied()
        .collect();
    assert_eq!(staged.len(), 1, "the new VIP was staged: {seen:?}");
    assert_eq!(seen[1].forwarded, before_vips, "and taken out again");
    let after = plane.cell().load_full();
    assert!(after.generation > before.generation);
    assert!(after.version_for_vip(&staged[0]).is_none());
    // A restart reads the file as it was before the rollout.
    drop(plane);
    std::fs::remove_dir(&tmp).unwrap_or_else(|e| panic!("{e}"));
    let restarted = ControlPlane::start(cfg, &cfg_path, Vec::new(), Instant::now())
        .unwrap_or_else(|e| panic!("restart: {e}"));
    let again: HashSet<IpAddr> = restarted
        .cell()
        .load()
        .versions()
        .flat_map(|v| v.vips.clone())
        .collect();
    assert_eq!(again, before_vips);
    // And the change can be made now.
    restarted
        .rollout("web", &[ip("10.0.1.11"), ip("10.0.1.13")])
        .unwrap_or_else(|e| panic!("rollout after restart: {e}"));
}

/// The metrics exporter reads the rollout and release counts while a
/// change holds the control lock (as it does across the state file's
/// fsync, which a busy disk stretches to seconds): it must not wait for it.
#[test]
fn counts_for_the_metrics_do_not_wait_for_a_change() {
    use crate::telemetry::metrics::ControlCounts;
    use std::sync::mpsc;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (plane, _state) = start(dir.path());
    let plane = Arc::new(plane);
    let weak = Arc::downgrade(&plane);
    let answered = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&answered);
    // Called with the control lock held, once per publish.
    plane.set_publish_observer(Box::new(move |_: &Snapshot| {
        let Some(plane) = weak.upgrade() else {
            return;
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(plane.rollouts());
        });
        let got = rx.recv_timeout(Duration::from_secs(2)).ok();
        log.lock().unwrap_or_else(|e| e.into_inner()).push(got);
    }));
    plane
        .rollout("web", &[ip("10.0.1.11"), ip("10.0.1.13")])
        .unwrap_or_else(|e| panic!("rollout: {e}"));
    let seen = answered.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(!seen.is_empty(), "the rollout published nothing");
    for got in &seen {
        // Read during the change: the settled counts, from before it.
        assert_eq!(got.as_deref(), Some(&[("web".to_owned(), 0)][..]));
    }
    // Settled: the rollout is counted.
    assert_eq!(plane.rollouts(), [("web".to_owned(), 1)]);
}
