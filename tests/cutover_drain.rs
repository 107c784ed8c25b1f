//! The cutover itself, end to end: `cutover run` on AF_PACKET in network
//! namespaces with real kernel TCP, a rollout by configuration reload
//! (SIGHUP), 100 long-lived connections that must survive it untouched,
//! new connections on the new version, and the release of the old version
//! by the drain rule once its last connection is gone. Once with the
//! default flow table and once with a flow table far smaller than the
//! number of connections (evictions all the time must break nothing); and
//! once with a `kill -9` of cutover in the middle of the drain.
//!
//! Needs root (network namespaces); skipped with a message otherwise.

#[path = "common/netns.rs"]
mod netns;
#[path = "common/services.rs"]
mod services;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netns::{in_netns, KillOnDrop, Topology};
use services::{serve_name, Conn, NameServer};

const V1_VIP: &str = "198.18.0.10";
const TTL: u64 = 1;
const GRACE: u64 = 1;
const QUIET: u64 = 2;

fn skip() -> bool {
    if netns::netns_available() {
        return false;
    }
    eprintln!("skipping: needs root and `ip netns` (network namespaces)");
    true
}

struct Lb {
    topo: Topology,
    dir: tempfile::TempDir,
    cutover: Option<KillOnDrop>,
    servers: Vec<Option<NameServer>>,
    flow_table_size: usize,
}

impl Lb {
    fn cfg_path(&self) -> PathBuf {
        self.dir.path().join("cutover.toml")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("cutover.log")
    }

    fn write_config(&self, backends: usize) {
        let list: Vec<String> = self.topo.backends[..backends]
            .iter()
            .map(|b| format!("\"{}\"", b.ipv4))
            .collect();
        let text = format!(
            r#"
[dataplane]
driver = "af_packet"
interfaces = ["eth0"]
workers = 2
forwarding = "l2dsr"
flow_table_size = {fts}

[dns]
listen = ["{lb}:53"]
ttl = {TTL}

[metrics]
listen = "127.0.0.1:9100"

[state]
path = "{state}"

[[vip_pool]]
name = "vips"
prefixes = ["198.18.0.0/24"]
cooldown = "60s"

[[service]]
name = "web"
pool = "vips"
ports = ["tcp/80"]
vips = ["{V1_VIP}"]
backends = [{list}]
drain_grace = "{GRACE}s"
drain_quiet = "{QUIET}s"
drain_timeout = "120s"

[service.health]
port = 80
interval = "200ms"
timeout = "200ms"
rise = 2
fall = 2
"#,
            fts = self.flow_table_size,
            lb = self.topo.lb.ipv4,
            state = self.dir.path().join("state.json").display(),
            list = list.join(", ")
        );
        std::fs::write(self.cfg_path(), text).expect("write config");
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.topo.lb.ns,
                env!("CARGO_BIN_EXE_cutover"),
                "run",
                "--config",
            ])
            .arg(self.cfg_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start cutover");
        self.cutover = Some(KillOnDrop(child));
    }

    fn signal(&self, sig: &str) {
        let pid = self.cutover.as_ref().expect("running").0.id().to_string();
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// Runs the `cutover` CLI in the lb namespace (the admin API listens on
    /// its loopback) and returns stdout, failing on a non-zero exit.
    fn cli(&self, args: &[&str]) -> String {
        let out =
            netns::run_in(&self.topo.lb.ns, env!("CARGO_BIN_EXE_cutover"), args).expect("cli");
        assert!(
            out.status.success(),
            "cutover {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The A record of web.svc.example. from cutover's DNS, with `dig`.
    fn resolve(&self) -> Option<String> {
        let out = netns::run_in(
            &self.topo.client.ns,
            "dig",
            &[
                "+short",
                "+time=1",
                "+tries=1",
                &format!("@{}", self.topo.lb.ipv4),
                "web.svc.example.",
                "A",
            ],
        )
        .expect("dig (package bind9-dnsutils) must be installed");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .next()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
    }

    fn wait_dns(&self, want: impl Fn(&str) -> bool, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(a) = self.resolve() {
                if want(&a) {
                    return a;
                }
            }
            assert!(
                Instant::now() < deadline,
                "DNS never answered {what}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn metrics(&self) -> String {
        in_netns(&self.topo.lb.ns, || {
            use std::io::{Read, Write};
            let Ok(mut s) = TcpStream::connect("127.0.0.1:9100") else {
                return String::new();
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut body = String::new();
            let _ = s.read_to_string(&mut body);
            body
        })
        .expect("lb namespace")
    }

    /// When `version` of web was released, from the state file (unix ms).
    fn released_at(&self, version: u32) -> Option<u64> {
        let text = std::fs::read_to_string(self.dir.path().join("state.json")).ok()?;
        let state: serde_json::Value = serde_json::from_str(&text).ok()?;
        state["services"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "web")?["versions"]
            .as_array()?
            .iter()
            .find(|v| v["id"] == version)?["released_at"]
            .as_u64()
    }

    fn released(&self, version: u32) -> bool {
        let m = self.metrics();
        m.lines().any(|l| {
            l.starts_with("cutover_version_state{")
                && l.contains("service=\"web\"")
                && l.contains(&format!("version=\"{version}\""))
                && l.contains("state=\"released\"")
                && l.ends_with(" 1")
        })
    }
}

fn unix_ms() -> u64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn setup(prefix: &str, flow_table_size: usize) -> Lb {
    let topo = Topology::build(prefix, 4).expect("topology");
    let servers = topo
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let l = in_netns(&b.ns, || TcpListener::bind("0.0.0.0:80"))
                .expect("backend namespace")
                .expect("bind");
            Some(serve_name(&format!("b{}", i + 1), vec![l]).expect("serve"))
        })
        .collect();
    let mut lb = Lb {
        topo,
        dir: tempfile::tempdir().expect("tempdir"),
        cutover: None,
        servers,
        flow_table_size,
    };
    lb.write_config(3);
    lb.start();
    let probe = SocketAddr::new(V1_VIP.parse().unwrap(), 80);
    let ready = in_netns(&lb.topo.client.ns, move || {
        services::wait_until_served(probe, Duration::from_secs(20))
    })
    .expect("client namespace");
    assert!(ready.is_ok(), "v1 never answered: {ready:?}\n{}", lb.log());
    lb
}

/// Opens `n` connections to `vip` from the client namespace.
fn open(lb: &Lb, vip: &str, n: usize) -> Vec<Conn> {
    let addr = SocketAddr::new(vip.parse::<IpAddr>().unwrap(), 80);
    in_netns(&lb.topo.client.ns, move || {
        (0..n)
            .map(|i| Conn::open(addr).unwrap_or_else(|e| panic!("connection {i} to {addr}: {e}")))
            .collect::<Vec<_>>()
    })
    .expect("client namespace")
}

/// One more exchange on every connection: each must still reach the
/// backend it started on (no reset, no move). A failure shows cutover's
/// log and its drop and packet counters.
fn exchange(lb: &Lb, conns: &mut [Conn], when: &str) {
    for (i, c) in conns.iter_mut().enumerate() {
        let who = c.ask().unwrap_or_else(|e| {
            panic!(
                "{when}: connection {i} ({:?}) failed: {e}\n{}\n{}",
                c.stream.local_addr(),
                lb.log(),
                lb.metrics()
                    .lines()
                    .filter(|l| !l.starts_with('#')
                        && (l.contains("drops") || l.contains("packets") || l.contains("flow")))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
        assert_eq!(
            who, c.backend,
            "{when}: connection {i} moved from {} to {who}",
            c.backend
        );
    }
}

fn backends_of(conns: &[Conn]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for c in conns {
        *m.entry(c.backend.clone()).or_insert(0) += 1;
    }
    m
}

/// Rolls out to 4 backends by reload and returns the new VIP.
fn rollout_by_reload(lb: &Lb) -> String {
    lb.write_config(4);
    lb.signal("-HUP");
    lb.wait_dns(|a| a != V1_VIP, "a new VIP after the rollout")
}

/// Closes every connection, then waits for the release of version 1 and
/// checks it came within max(TTL + grace, quiet) + 2 s, and that v1's VIP
/// then answers no more.
fn close_and_expect_release(lb: &Lb, conns: Vec<Conn>) {
    drop(conns);
    let closed = Instant::now();
    let closed_ms = unix_ms();
    let bound = Duration::from_secs((TTL + GRACE).max(QUIET) + 2);
    let deadline = closed + bound + Duration::from_secs(10);
    while lb.released_at(1).is_none() {
        assert!(
            Instant::now() < deadline,
            "v1 never released\n{}\nmetrics of v1:\n{}",
            lb.log(),
            lb.metrics()
                .lines()
                .filter(|l| l.contains("version=\"1\"") && !l.starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = Duration::from_millis(lb.released_at(1).unwrap_or(0).saturating_sub(closed_ms));
    assert!(
        took <= bound,
        "v1 released {took:?} after its last connection closed (bound {bound:?})\n{}",
        lb.log()
    );
    assert!(
        lb.log().contains("drained"),
        "release reason logged:\n{}",
        lb.log()
    );
    let flipped = Instant::now() + Duration::from_secs(5);
    while !lb.released(1) {
        assert!(
            Instant::now() < flipped,
            "cutover_version_state never says released"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let addr = SocketAddr::new(V1_VIP.parse::<IpAddr>().unwrap(), 80);
    let answer = in_netns(&lb.topo.client.ns, move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
    })
    .expect("client namespace");
    assert!(!answer, "the released VIP still answers");
}

fn cutover_with_long_lived_connections(prefix: &str, flow_table_size: usize) {
    let lb = setup(prefix, flow_table_size);
    assert_eq!(lb.resolve().as_deref(), Some(V1_VIP));
    let mut old = open(&lb, V1_VIP, 100);
    exchange(&lb, &mut old, "before the rollout");
    let v1_backends: BTreeSet<String> = ["b1", "b2", "b3"].map(String::from).into();
    assert!(backends_of(&old).keys().all(|b| v1_backends.contains(b)));

    let v2_vip = rollout_by_reload(&lb);
    exchange(&lb, &mut old, "right after the rollout");

    let mut new = open(&lb, &v2_vip, 60);
    let share = backends_of(&new);
    assert!(
        share.contains_key("b4"),
        "v2's new backend gets new connections: {share:?}"
    );
    assert!(
        share.len() >= 3,
        "new connections spread over v2: {share:?}"
    );
    exchange(&lb, &mut new, "new connections");
    exchange(&lb, &mut old, "during the drain");

    // A draining version still takes new connections on its own VIP.
    let late = open(&lb, V1_VIP, 1);
    assert!(v1_backends.contains(&late[0].backend));
    old.extend(late);
    // The connections keep talking for longer than drain_quiet: v1 must
    // stay (with a tiny flow table its flow count may read 0 while they
    // live; their packets are what keep it).
    let until = Instant::now() + Duration::from_secs(QUIET + 2);
    while Instant::now() < until {
        exchange(&lb, &mut old, "while the connections keep talking");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        !lb.released(1),
        "v1 released while its connections live\n{}",
        lb.log()
    );

    close_and_expect_release(&lb, old);
    exchange(&lb, &mut new, "after v1's release");
}

#[test]
fn rollout_keeps_old_connections_and_releases_v1_when_drained() {
    if skip() {
        return;
    }
    cutover_with_long_lived_connections("drn1", 1 << 16);
}

#[test]
fn rollout_with_a_tiny_flow_table_breaks_nothing() {
    if skip() {
        return;
    }
    cutover_with_long_lived_connections("drn2", 16);
}

#[test]
fn kill_9_during_the_drain_then_restart_keeps_old_connections() {
    if skip() {
        return;
    }
    let mut lb = setup("drn3", 1 << 16);
    let mut old = open(&lb, V1_VIP, 50);
    exchange(&lb, &mut old, "before the rollout");
    let v2_vip = rollout_by_reload(&lb);
    exchange(&lb, &mut old, "after the rollout");

    lb.signal("-KILL");
    if let Some(mut c) = lb.cutover.take() {
        let _ = c.0.wait();
    }
    lb.start();
    // The restart restores v1 as draining and v2 as active from the state
    // file: DNS still names v2, and v1's connections still work.
    lb.wait_dns(|a| a == v2_vip, "v2's VIP after the restart");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ok = old
            .iter_mut()
            .all(|c| c.ask().ok().as_deref() == Some(c.backend.as_str()));
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old connections broken by the restart\n{}",
            lb.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    exchange(&lb, &mut old, "after the restart");
    close_and_expect_release(&lb, old);
}

#[test]
fn rollback_during_the_drain_and_a_failed_backend() {
    if skip() {
        return;
    }
    let mut lb = setup("drn4", 1 << 16);
    let mut old = open(&lb, V1_VIP, 30);
    exchange(&lb, &mut old, "before the rollout");

    // Rollout through the admin API (the CLI), then rollback: DNS follows
    // both, and v1's connections never notice.
    let list: Vec<String> = lb
        .topo
        .backends
        .iter()
        .map(|b| b.ipv4.to_string())
        .collect();
    let out = lb.cli(&["rollout", "web", "--backends", &list.join(",")]);
    assert!(out.contains("version 2"), "{out}");
    let v2_vip = lb.wait_dns(|a| a != V1_VIP, "v2's VIP after the rollout");
    assert!(out.contains(&v2_vip), "rollout prints the new VIP: {out}");
    exchange(&lb, &mut old, "after the rollout");
    let mut on_v2 = open(&lb, &v2_vip, 10);

    let out = lb.cli(&["rollback", "web"]);
    assert!(out.contains('1'), "{out}");
    lb.wait_dns(|a| a == V1_VIP, "v1's VIP again after the rollback");
    exchange(&lb, &mut old, "after the rollback");
    exchange(&lb, &mut on_v2, "v2's connections while v2 drains");
    let status = lb.cli(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&status).expect("status json");
    let states: Vec<(u64, String)> = json[0]["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| {
            (
                v["id"].as_u64().unwrap_or(0),
                v["state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(states.contains(&(1, "active".into())), "{states:?}");
    assert!(states.contains(&(2, "draining".into())), "{states:?}");

    // A backend dies: within fall x interval (+ slack) it gets no new flow.
    drop(on_v2);
    lb.servers[1] = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = lb.cli(&["status", "--json"]);
        let json: serde_json::Value = serde_json::from_str(&s).expect("status json");
        let down = json[0]["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| {
                v["id"] == 1
                    && v["backends"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|b| b["addr"] == "10.99.0.12" && b["healthy"] == false)
            });
        if down {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "b2 never marked unhealthy: {s}\n{}",
            lb.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let fresh = open(&lb, V1_VIP, 60);
    let share = backends_of(&fresh);
    assert!(
        !share.contains_key("b2"),
        "a dead backend got new flows: {share:?}"
    );
    assert!(
        share.len() == 2,
        "the others share the new flows: {share:?}"
    );
    // Connections to the healthy backends kept theirs.
    let mut alive: Vec<Conn> = old.into_iter().filter(|c| c.backend != "b2").collect();
    exchange(&lb, &mut alive, "after b2 died");
}
