//! RFC 2136 updates with TSIG against a real BIND 9 (`named`, Debian's
//! bind9) that the test starts on loopback with a dynamic zone: after a
//! rollout BIND answers the new VIP; a wrong key is refused by BIND and
//! cutover counts the failure.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cutover::control::config::{Dns, DnsUpdate, Forwarding};
use cutover::dns::{self, DnsServer};
use cutover::snapshot::{Snapshot, SnapshotCell, VersionEntry, VersionState};
use cutover::testkit;

const KEY: &str = "c2VjcmV0LWtleS1mb3ItY3V0b3Zlci10ZXN0cy0xMjM=";
const WRONG_KEY: &str = "YS13cm9uZy1rZXktdGhhdC1iaW5kLXdpbGwtcmVqZWN0";

/// `named` in the foreground; killed (by its own pid) when dropped.
struct Named {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.local_addr().expect("addr").port()
}

fn start_named() -> Named {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display();
    let port = free_port();
    std::fs::write(
        dir.path().join("svc.example.db"),
        "$TTL 5\n\
         @ IN SOA ns.svc.example. hostmaster.svc.example. 1 3600 600 86400 5\n\
         @ IN NS ns.svc.example.\n\
         ns IN A 127.0.0.1\n",
    )
    .expect("zone file");
    let conf = format!(
        r#"options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
}};
controls {{ }};
key "cutover-key." {{ algorithm hmac-sha256; secret "{KEY}"; }};
zone "svc.example." {{
    type primary;
    file "{d}/svc.example.db";
    allow-update {{ key "cutover-key."; }};
}};
"#
    );
    let conf_path = dir.path().join("named.conf");
    std::fs::write(&conf_path, conf).expect("named.conf");
    let named = which("named").unwrap_or_else(|| {
        panic!("`named` not found: install Debian's bind9 (apt-get install -y bind9)")
    });
    let child = Command::new(named)
        .arg("-g")
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start named");
    let named = Named {
        child,
        port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if dig_short(port, "svc.example.", "SOA").contains("hostmaster") {
            return named;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("named did not come up on 127.0.0.1:{port}");
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

fn dig_short(port: u16, name: &str, rtype: &str) -> String {
    let out = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "+time=1",
            "+tries=1",
            "+short",
        ])
        .args([name, rtype])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `dig` ({e}): install Debian's bind9-dnsutils"));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn web(generation: u64, versions: &[(u32, VersionState, [&str; 2])]) -> Snapshot {
    let base = testkit::snapshot(1, 1, Forwarding::Ipip, 251).expect("snapshot");
    let template = base.versions().next().expect("version").clone();
    let mut services = base.services.to_vec();
    services[0].name = Arc::from("web");
    let versions = versions
        .iter()
        .enumerate()
        .map(|(slot, (id, state, vips))| VersionEntry {
            slot: u32::try_from(slot).expect("slot"),
            uid: u64::try_from(slot).expect("uid") + 1,
            service: 0,
            id: *id,
            state: *state,
            vips: vips.iter().map(|v| v.parse().expect("vip")).collect(),
            ..template.clone()
        })
        .collect();
    Snapshot::new(generation, base.settings.clone(), services, versions).expect("snapshot")
}

fn start_cutover(port: u16, secret: &str, cell: Arc<SnapshotCell>) -> DnsServer {
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let cfg = Dns {
        listen: Vec::new(),
        zone: "svc.example.".into(),
        ttl: 5,
        update: Some(DnsUpdate {
            server,
            zone: "svc.example.".into(),
            key_name: "cutover-key.".into(),
            key_secret: secret.into(),
            algorithm: "hmac-sha256".into(),
        }),
    };
    dns::spawn(&cfg, cell).expect("dns starts")
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn bind_follows_rollout_and_rollback_and_refuses_a_wrong_key() {
    // The updater's log lines show in the output of a failing run.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let named = start_named();
    let port = named.port;
    let v1 = ["198.51.100.10", "2001:db8::10"];
    let v2 = ["198.51.100.20", "2001:db8::20"];
    let cell = Arc::new(SnapshotCell::new(web(1, &[(1, VersionState::Active, v1)])));
    let server = start_cutover(port, KEY, cell.clone());

    wait_for("BIND to serve version 1", || {
        dig_short(port, "web.svc.example.", "A") == "198.51.100.10"
    });
    assert_eq!(dig_short(port, "web.svc.example.", "AAAA"), "2001:db8::10");

    // Rollout.
    cell.publish(web(
        2,
        &[
            (1, VersionState::Draining, v1),
            (2, VersionState::Active, v2),
        ],
    ));
    wait_for("BIND to serve version 2", || {
        dig_short(port, "web.svc.example.", "A") == "198.51.100.20"
    });
    assert_eq!(dig_short(port, "web.svc.example.", "AAAA"), "2001:db8::20");

    // Rollback.
    cell.publish(web(
        3,
        &[
            (1, VersionState::Active, v1),
            (2, VersionState::Draining, v2),
        ],
    ));
    wait_for("BIND to serve version 1 again", || {
        dig_short(port, "web.svc.example.", "A") == "198.51.100.10"
    });
    assert!(server.updates_ok() >= 3, "{}", server.updates_ok());
    assert_eq!(server.update_failures(), 0);
    server.shutdown();

    // A wrong key: BIND refuses, cutover counts and retries, BIND's
    // answer does not move.
    let cell = Arc::new(SnapshotCell::new(web(1, &[(2, VersionState::Active, v2)])));
    let wrong = start_cutover(port, WRONG_KEY, cell);
    wait_for("the failure to be counted", || wrong.update_failures() >= 2);
    assert_eq!(wrong.updates_ok(), 0);
    assert_eq!(dig_short(port, "web.svc.example.", "A"), "198.51.100.10");
    wrong.shutdown();
}
