//! The admin API (SPEC §6) and the CLI commands that use it, over real
//! HTTP on 127.0.0.1 and on a unix socket; no root needed.
//!
//! Each test builds a `ControlPlane` directly from a configuration file
//! in a temporary directory (no worker runs; the pcap driver is enough),
//! starts the API on port 0 and talks to it with a raw HTTP/1.1 client or
//! the `cutover` binary. Every refused request must leave
//! `GET /v1/services` byte-for-byte as it was.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cutover::control::api::{self, ApiServer};
use cutover::control::config::{self, AdminListen};
use cutover::control::plane::ControlPlane;
use cutover::dataplane::stats::WorkerStats;
use serde_json::Value;

const WEB_V1: &[&str] = &["10.0.1.11", "10.0.1.12"];

/// The configuration with `web`'s backends; `small` has a pool of two
/// addresses, so its second rollout exhausts it.
fn config_text(web_backends: &[&str]) -> String {
    let web = web_backends
        .iter()
        .map(|b| format!("\"{b}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"[dataplane]
driver = "pcap"
forwarding = "ipip"
encap_source_v4 = "10.0.0.2"

[dataplane.neighbors]
"10.0.1.11" = "02:00:00:00:01:11"
"10.0.1.12" = "02:00:00:00:01:12"
"10.0.1.13" = "02:00:00:00:01:13"
"10.0.1.14" = "02:00:00:00:01:14"

[state]
path = "state.json"

[[vip_pool]]
name = "public"
prefixes = ["203.0.113.0/28"]

[[vip_pool]]
name = "small"
prefixes = ["198.51.100.0/30"]

[[service]]
name = "web"
pool = "public"
ports = ["tcp/80"]
backends = [{web}]

[[service]]
name = "small"
pool = "small"
ports = ["tcp/443"]
backends = ["10.0.1.13"]
"#
    )
}

/// A control plane and its API server, with their files in `dir`.
struct Fixture {
    dir: tempfile::TempDir,
    cfg_path: PathBuf,
    server: Option<ApiServer>,
    _plane: Arc<ControlPlane>,
}

impl Fixture {
    /// Starts on 127.0.0.1:0, or on a unix socket in the tempdir.
    fn start(token: Option<&str>, unix: bool) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg_path = dir.path().join("cutover.toml");
        // The state path is relative in the text; make it absolute here.
        let text = config_text(WEB_V1).replace(
            "path = \"state.json\"",
            &format!("path = \"{}\"", dir.path().join("state.json").display()),
        );
        std::fs::write(&cfg_path, &text).expect("write config");
        let mut cfg = config::load(&cfg_path).expect("valid config");
        cfg.admin.listen = if unix {
            AdminListen::Unix(dir.path().join("admin.sock"))
        } else {
            AdminListen::Tcp(SocketAddr::from(([127, 0, 0, 1], 0)))
        };
        if let Some(t) = token {
            let tf = dir.path().join("token");
            std::fs::write(&tf, format!("{t}\n")).expect("write token");
            cfg.admin.token_file = Some(tf);
        }
        let admin = cfg.admin.clone();
        let plane = Arc::new(
            ControlPlane::start(
                cfg,
                &cfg_path,
                vec![Arc::new(WorkerStats::new())],
                Instant::now(),
            )
            .expect("control plane"),
        );
        let server = api::serve(&admin, Arc::clone(&plane)).expect("admin API");
        Fixture {
            dir,
            cfg_path,
            server: Some(server),
            _plane: plane,
        }
    }

    fn server(&self) -> &ApiServer {
        self.server.as_ref().expect("server running")
    }

    /// The `--admin` value for the CLI.
    fn admin_url(&self) -> String {
        match self.server().local_addr() {
            AdminListen::Tcp(a) => format!("http://{a}"),
            AdminListen::Unix(p) => format!("unix:{}", p.display()),
        }
    }

    /// Rewrites the configuration file with the state path kept.
    fn write_config(&self, text: &str) {
        let text = text.replace(
            "path = \"state.json\"",
            &format!(
                "path = \"{}\"",
                self.dir.path().join("state.json").display()
            ),
        );
        std::fs::write(&self.cfg_path, text).expect("rewrite config");
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let req = raw_request(method, path, headers, body);
        let raw = match self.server().local_addr() {
            AdminListen::Tcp(a) => exchange(TcpStream::connect(a).expect("connect"), &req),
            AdminListen::Unix(p) => exchange(UnixStream::connect(p).expect("connect"), &req),
        };
        Reply::parse(&raw)
    }

    fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], b"")
    }

    fn post_json(&self, path: &str, body: &str) -> Reply {
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    }

    /// `GET /v1/services`'s body, which must not change on a refusal.
    fn services_body(&self) -> String {
        let r = self.get("/v1/services");
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }

    fn cli(&self, args: &[&str]) -> Output {
        let url = self.admin_url();
        Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args(args)
            .args(["--admin", &url])
            .env_remove("CUTOVER_TOKEN")
            .output()
            .expect("run cutover")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
    }
}

/// A whole answer: status and body (the server sends Content-Length).
struct Reply {
    status: u16,
    headers: String,
    body: String,
}

impl Reply {
    fn parse(raw: &[u8]) -> Reply {
        let text = String::from_utf8_lossy(raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status code");
        Reply {
            status,
            headers: head.to_ascii_lowercase(),
            body: body.to_owned(),
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// The `error` message of a refusal.
    fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {}", self.body))
            .to_owned()
    }
}

fn raw_request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut out = req.into_bytes();
    out.extend_from_slice(body);
    out
}

fn exchange<S: Read + Write>(mut s: S, req: &[u8]) -> Vec<u8> {
    s.write_all(req).expect("send");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read answer");
    out
}

/// Version `id` of `service` in a `GET /v1/services` answer.
fn version(services: &Value, service: &str, id: u64) -> Value {
    services
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == service))
        .and_then(|s| s["versions"].as_array())
        .and_then(|vs| vs.iter().find(|v| v["id"] == id))
        .cloned()
        .unwrap_or_else(|| panic!("{service} has no version {id}: {services}"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn healthz_and_service_list() {
    let f = Fixture::start(None, false);
    let h = f.get("/healthz");
    assert_eq!(
        (h.status, h.json()),
        (200, serde_json::json!({"status": "ok"}))
    );
    assert!(h.headers.contains("content-type: application/json"));

    let list = f.get("/v1/services");
    assert_eq!(list.status, 200);
    let services = list.json();
    assert_eq!(services[0]["name"], "web");
    assert_eq!(services[0]["ports"], serde_json::json!(["tcp/80"]));
    let v1 = version(&services, "web", 1);
    assert_eq!(v1["state"], "active");
    assert_eq!(v1["vips"], serde_json::json!(["203.0.113.1"]));
    assert_eq!(v1["active_flows"], 0);
    assert_eq!(
        v1["backends"][0],
        serde_json::json!({"addr": "10.0.1.11", "healthy": true})
    );
    assert!(v1["created_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(v1["draining_since"].is_null());

    let one = f.get("/v1/services/small");
    assert_eq!(
        (one.status, one.json()["name"].clone()),
        (200, "small".into())
    );
}

#[test]
fn rollout_then_rollback() {
    let f = Fixture::start(None, false);
    let r = f.post_json(
        "/v1/services/web/rollout",
        r#"{"backends": ["10.0.1.11", "10.0.1.12", "10.0.1.14"]}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let v2 = r.json();
    assert_eq!(v2["id"], 2);
    assert_eq!(v2["state"], "active");
    // The lowest free address of the pool: .1 is v1's.
    assert_eq!(v2["vips"], serde_json::json!(["203.0.113.2"]));
    assert_eq!(v2["backends"].as_array().map(Vec::len), Some(3));

    let services = f.get("/v1/services").json();
    let v1 = version(&services, "web", 1);
    assert_eq!(v1["state"], "draining");
    assert!(v1["draining_since"].is_string());
    assert_eq!(version(&services, "web", 2)["state"], "active");

    let back = f.post_json("/v1/services/web/rollback", "");
    assert_eq!(back.status, 200, "{}", back.body);
    assert_eq!(back.json()["id"], 1);
    assert_eq!(back.json()["state"], "active");
    let services = f.get("/v1/services").json();
    assert_eq!(version(&services, "web", 1)["state"], "active");
    assert_eq!(version(&services, "web", 2)["state"], "draining");
    // Persisted: the state file names both versions.
    let state = std::fs::read_to_string(f.dir.path().join("state.json")).expect("state file");
    assert!(state.contains("203.0.113.2"), "{state}");
}

/// A refused request: method, path, headers, body, status, part of the
/// error message.
type Case<'a> = (
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
    &'a [u8],
    u16,
    &'a str,
);

#[test]
fn every_refusal_is_json_and_changes_nothing() {
    let f = Fixture::start(None, false);
    // `small` at version 2 leaves its two-address pool full.
    let r = f.post_json(
        "/v1/services/small/rollout",
        r#"{"backends": ["10.0.1.14"]}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let before = f.services_body();

    let json = [("Content-Type", "application/json")];
    let big = vec![b' '; api::MAX_BODY + 1];
    #[rustfmt::skip]
    let cases: Vec<Case<'_>> = vec![
        ("POST", "/v1/services/web/rollout", &json, b"{", 400, "invalid request body"),
        ("POST", "/v1/services/web/rollout", &json, b"{}", 400, "missing field `backends`"),
        ("POST", "/v1/services/web/rollout", &json, br#"{"backends": ["10.0.1.x"]}"#, 400, "not an IP address"),
        ("POST", "/v1/services/web/rollout", &json, br#"{"backends": "10.0.1.11"}"#, 400, "invalid request body"),
        ("POST", "/v1/services/web/rollout", &json, br#"{"backends": ["10.0.1.11"], "x": 1}"#, 400, "unknown field"),
        ("POST", "/v1/services/web/rollout", &json, b"", 400, "body is empty"),
        ("POST", "/v1/services/web/rollout", &json, br#"{"backends": []}"#, 400, "backend list is empty"),
        ("POST", "/v1/services/web/rollout", &json, br#"{"backends": ["10.0.1.11", "10.0.1.11"]}"#, 400, "listed twice"),
        ("POST", "/v1/services/web/rollout", &json, br#"{"backends": ["203.0.113.9"]}"#, 400, "inside VIP pool"),
        ("POST", "/v1/services/web/rollout", &json, br#"{"backends": ["10.0.1.12", "10.0.1.11"]}"#, 409, "already has exactly these backends"),
        ("POST", "/v1/services/small/rollout", &json, br#"{"backends": ["10.0.1.11"]}"#, 409, "no free ipv4 address"),
        ("POST", "/v1/services/nope/rollout", &json, br#"{"backends": ["10.0.1.11"]}"#, 404, "unknown service \"nope\""),
        ("POST", "/v1/services/web/rollback", &[], b"", 409, "no draining version"),
        ("POST", "/v1/services/nope/rollback", &[], b"", 404, "unknown service"),
        ("GET", "/v1/services/web/rollout", &[], b"", 405, "method not allowed"),
        ("DELETE", "/v1/services", &[], b"", 405, "method not allowed"),
        ("POST", "/healthz", &[], b"", 405, "method not allowed"),
        ("GET", "/v1/services/nope", &[], b"", 404, "unknown service"),
        ("GET", "/v1/nothing", &[], b"", 404, "no such path"),
        ("GET", "/metrics", &[], b"", 404, "no such path"),
        ("POST", "/v1/services/web/rollout", &json, &big, 413, "larger than"),
        ("POST", "/v1/services/web/rollout", &[("Content-Type", "text/plain")], br#"{"backends": ["10.0.1.14"]}"#, 415, "application/json"),
    ];
    for (method, path, headers, body, status, message) in cases {
        let r = f.request(method, path, headers, body);
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        assert_eq!(r.status, status, "{method} {path} {shown}: {}", r.body);
        assert!(
            r.headers.contains("content-type: application/json"),
            "{method} {path}"
        );
        let error = r.error();
        assert!(
            error.contains(message),
            "{method} {path} {shown}: {error:?} lacks {message:?}"
        );
        if status == 405 {
            assert!(
                r.headers.contains("\r\nallow: "),
                "{method} {path}: {}",
                r.headers
            );
        }
        assert_eq!(
            f.services_body(),
            before,
            "{method} {path} {shown} changed the state"
        );
    }
}

#[test]
fn bearer_token_is_required_when_configured() {
    let f = Fixture::start(Some("s3cret-token"), false);
    let before = f.services_body_with_token();
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer s3cret-tokeN"),
        Some("Basic s3cret-token"),
    ] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        for (method, path) in [
            ("GET", "/v1/services"),
            ("POST", "/v1/services/web/rollback"),
            ("POST", "/v1/reload"),
            ("GET", "/v1/no-such-path"),
        ] {
            let r = f.request(method, path, &headers, b"");
            assert_eq!(r.status, 401, "{method} {path} with {auth:?}");
            assert!(r.error().contains("token"), "{}", r.body);
            assert!(
                r.headers.contains("www-authenticate: bearer"),
                "{}",
                r.headers
            );
        }
    }
    assert_eq!(f.services_body_with_token(), before);
    // The health check stays open for load balancers and probes.
    assert_eq!(f.get("/healthz").status, 200);
    let auth = [
        ("Authorization", "Bearer s3cret-token"),
        ("Content-Type", "application/json"),
    ];
    let r = f.request(
        "POST",
        "/v1/services/web/rollout",
        &auth,
        br#"{"backends": ["10.0.1.14"]}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);

    // The CLI: with --token-file, with CUTOVER_TOKEN, and without.
    let tf = f.dir.path().join("token");
    let tf = tf.to_str().expect("utf-8 path");
    let ok = f.cli(&["status", "--token-file", tf]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let env = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["status", "--json", "--admin", &f.admin_url()])
        .env("CUTOVER_TOKEN", "s3cret-token")
        .output()
        .expect("run cutover");
    assert!(env.status.success(), "{}", stderr(&env));
    let denied = f.cli(&["status"]);
    assert_eq!(denied.status.code(), Some(1));
    assert!(
        stderr(&denied).contains("missing bearer token"),
        "{}",
        stderr(&denied)
    );
}

impl Fixture {
    fn services_body_with_token(&self) -> String {
        let r = self.request(
            "GET",
            "/v1/services",
            &[("Authorization", "Bearer s3cret-token")],
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }
}

#[test]
fn token_file_must_be_readable_and_not_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg_path = dir.path().join("cutover.toml");
    std::fs::write(
        &cfg_path,
        config_text(WEB_V1).replace("[state]\npath = \"state.json\"\n", ""),
    )
    .expect("write config");
    let cfg = config::load(&cfg_path).expect("config");
    let plane = Arc::new(
        ControlPlane::start(
            cfg.clone(),
            &cfg_path,
            vec![Arc::new(WorkerStats::new())],
            Instant::now(),
        )
        .expect("plane"),
    );
    let mut admin = cfg.admin.clone();
    admin.listen = AdminListen::Tcp(SocketAddr::from(([127, 0, 0, 1], 0)));
    admin.token_file = Some(dir.path().join("missing"));
    let e = api::serve(&admin, Arc::clone(&plane))
        .err()
        .map(|e| e.to_string());
    assert!(e.is_some_and(|e| e.contains("missing")));
    let empty = dir.path().join("empty");
    std::fs::write(&empty, " \n").expect("write");
    admin.token_file = Some(empty);
    let e = api::serve(&admin, plane).err().map(|e| e.to_string());
    assert!(e.is_some_and(|e| e.contains("is empty")));
}

#[test]
fn unix_socket_listener() {
    let f = Fixture::start(None, true);
    let AdminListen::Unix(path) = f.server().local_addr().clone() else {
        panic!("not a unix socket");
    };
    let mode = std::fs::metadata(&path)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(f.get("/healthz").status, 200);
    let r = f.post_json("/v1/services/web/rollout", r#"{"backends": ["10.0.1.14"]}"#);
    assert_eq!(r.status, 201, "{}", r.body);
    let out = f.cli(&["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("203.0.113.2"), "{}", stdout(&out));
    drop(f);
    assert!(!path.exists(), "the socket file outlived the server");
}

#[test]
fn stale_unix_socket_is_replaced_live_one_refused() {
    let f = Fixture::start(None, true);
    let AdminListen::Unix(path) = f.server().local_addr().clone() else {
        panic!("not a unix socket");
    };
    let cfg = config::load(&f.cfg_path).expect("config");
    let plane = Arc::new(
        ControlPlane::start(
            cfg,
            &f.cfg_path,
            vec![Arc::new(WorkerStats::new())],
            Instant::now(),
        )
        .expect("plane"),
    );
    let admin = config::Admin {
        listen: AdminListen::Unix(path.clone()),
        token_file: None,
    };
    let e = api::serve(&admin, Arc::clone(&plane))
        .err()
        .map(|e| e.to_string());
    assert!(e.is_some_and(|e| e.contains("in use")));

    // A socket file nobody listens on (a crashed appliance's) is replaced.
    let stale = f.dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    assert!(stale.exists());
    let admin = config::Admin {
        listen: AdminListen::Unix(stale.clone()),
        token_file: None,
    };
    let s = api::serve(&admin, Arc::clone(&plane)).expect("replaces a stale socket");
    s.shutdown();
    // A regular file is never removed.
    let file = f.dir.path().join("file");
    std::fs::write(&file, "keep").expect("write");
    let admin = config::Admin {
        listen: AdminListen::Unix(file.clone()),
        token_file: None,
    };
    let e = api::serve(&admin, plane).err().map(|e| e.to_string());
    assert!(e.is_some_and(|e| e.contains("not a socket")));
    assert_eq!(std::fs::read_to_string(file).ok().as_deref(), Some("keep"));
}

#[test]
fn reload_applies_a_changed_file_and_refuses_an_invalid_one() {
    let f = Fixture::start(None, false);
    let same = f.post_json("/v1/reload", "");
    assert_eq!(same.status, 200, "{}", same.body);
    assert_eq!(same.json()["rolled_out"], serde_json::json!([]));

    f.write_config(&config_text(&["10.0.1.11", "10.0.1.12", "10.0.1.13"]));
    let r = f.post_json("/v1/reload", "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["rolled_out"], serde_json::json!([["web", 2]]));
    let services = f.get("/v1/services").json();
    assert_eq!(version(&services, "web", 2)["state"], "active");
    assert_eq!(version(&services, "web", 1)["state"], "draining");

    let before = f.services_body();
    // Line 24 of the file: `name = 7` is not a string.
    let bad = config_text(&["10.0.1.14"]).replacen("name = \"web\"", "name = 7", 1);
    f.write_config(&bad);
    let r = f.post_json("/v1/reload", "");
    assert_eq!(r.status, 400, "{}", r.body);
    let error = r.error();
    let at = format!("{}:", f.cfg_path.display());
    assert!(error.starts_with(&at), "{error}");
    let pos: Vec<&str> = error[at.len()..].splitn(3, ':').collect();
    assert!(
        pos.len() == 3 && pos[0].parse::<u32>().is_ok() && pos[1].parse::<u32>().is_ok(),
        "no line:column in {error}"
    );
    assert_eq!(f.services_body(), before);

    // An unreadable file is refused the same way.
    std::fs::remove_file(&f.cfg_path).expect("remove");
    let r = f.post_json("/v1/reload", "");
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(f.services_body(), before);
}

#[test]
fn cli_commands_against_the_server() {
    let f = Fixture::start(None, false);
    let out = f.cli(&["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    for want in [
        "SERVICE",
        "ACTIVE FLOWS",
        "web",
        "small",
        "203.0.113.1",
        "198.51.100.1",
        "active",
        "2/2",
    ] {
        assert!(table.contains(want), "{want:?} missing from\n{table}");
    }

    let out = f.cli(&["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let parsed: Value = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    assert_eq!(parsed[0]["name"], "web");

    let out = f.cli(&["rollout", "web", "--backends", "10.0.1.11,10.0.1.14"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("version 2") && text.contains("203.0.113.2"),
        "{text}"
    );

    let out = f.cli(&["status"]);
    let table = stdout(&out);
    assert!(
        table.contains("draining") && table.contains("203.0.113.2"),
        "{table}"
    );

    let out = f.cli(&["rollback", "web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("version 1 is active again at 203.0.113.1"),
        "{}",
        stdout(&out)
    );

    let out = f.cli(&["reload"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The file still says v1's backends, which are active again.
    assert!(
        stdout(&out).contains("no version changed"),
        "{}",
        stdout(&out)
    );

    // After the reload, which would undo it (the file names other backends).
    let out = f.cli(&["rollout", "small", "--backends", "10.0.1.14", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("rollout --json is JSON");
    assert_eq!(
        (v["id"].clone(), v["vips"][0].clone()),
        (2.into(), "198.51.100.2".into())
    );

    // A refusal: exit 1, the server's message on stderr, nothing on stdout.
    let before = f.services_body();
    let out = f.cli(&["rollout", "web", "--backends", "10.0.1.11,10.0.1.12"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("already has exactly these backends") && err.contains("409"),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("Backtrace"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    let out = f.cli(&["rollback", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unknown service \"nope\""),
        "{}",
        stderr(&out)
    );
    assert_eq!(f.services_body(), before);

    // A usage error is clap's: exit 2.
    let out = f.cli(&["rollout", "web", "--backends", "not-an-ip"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn cli_reports_an_unreachable_server() {
    // Bind and drop to find a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["status", "--admin", &format!("http://127.0.0.1:{port}")])
        .output()
        .expect("run cutover");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot reach the admin API"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn slow_client_is_cut_and_others_still_served() {
    let f = Fixture::start(None, false);
    let addr = f.server().tcp_addr().expect("tcp");
    // Sends half a request and stalls: it must not block anyone else.
    let mut slow = TcpStream::connect(addr).expect("connect");
    slow.write_all(b"POST /v1/reload HTTP/1.1\r\nHost: x\r\n")
        .expect("send");
    let started = Instant::now();
    assert_eq!(f.get("/healthz").status, 200);
    assert!(started.elapsed() < Duration::from_secs(2));
}
