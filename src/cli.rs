//! The client side of `cutover status|rollout|rollback|reload`: a small
//! blocking HTTP/1.1 client for the admin API (SPEC §6) over TCP or a unix
//! socket, and the readable output of each command.
//!
//! One request per connection (`Connection: close`), read to the end: the
//! commands make one call each, so nothing heavier is needed. A refusal
//! from the server comes back as [`CliError::Refused`] carrying the
//! server's message, which `main` prints on stderr with exit status 1.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use comfy_table::{presets, CellAlignment, Table};
use serde::Deserialize;

/// The admin API address `--admin` defaults to (the configuration's).
pub(crate) const DEFAULT_ADMIN: &str = "http://127.0.0.1:9180";

/// How long to wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for an answer: a rollout writes the state file.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer read (a status of thousands of services fits).
const MAX_RESPONSE: u64 = 64 * 1024 * 1024;

/// Why a command failed; every message is for the operator as it stands.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error("invalid --admin {0:?}: expected http://HOST:PORT or unix:/PATH")]
    BadAdmin(String),
    #[error("cannot reach the admin API at {admin}: {error}")]
    Connect {
        admin: String,
        error: std::io::Error,
    },
    #[error("admin API at {admin}: {error}")]
    Io {
        admin: String,
        error: std::io::Error,
    },
    #[error("admin API at {admin}: malformed answer: {why}")]
    Malformed { admin: String, why: String },
    /// The server said no; its message is the whole story.
    #[error("{message} (HTTP {status})")]
    Refused { status: u16, message: String },
    #[error("token file {path}: {why}")]
    Token { path: String, why: String },
}

/// Where the admin API is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// `host:port` and the `Host` header value.
    Tcp(String),
    Unix(PathBuf),
}

/// A connection recipe for the admin API: address and token.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    target: Target,
    shown: String,
    token: Option<String>,
}

impl Client {
    /// `admin` is `http://HOST[:PORT]` (port 80 by default) or
    /// `unix:/PATH`. The token comes from `token_file`, else from the
    /// environment variable `CUTOVER_TOKEN`, else there is none.
    pub(crate) fn new(admin: &str, token_file: Option<&Path>) -> Result<Client, CliError> {
        let target = parse_target(admin)?;
        let token = match token_file {
            Some(path) => Some(read_token(path)?),
            None => std::env::var("CUTOVER_TOKEN")
                .ok()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty()),
        };
        Ok(Client {
            target,
            shown: admin.to_owned(),
            token,
        })
    }

    /// One request; a 2xx answer's body parsed as JSON, or the server's
    /// error message.
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, CliError> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let host = match &self.target {
            Target::Tcp(h) => h.as_str(),
            Target::Unix(_) => "localhost",
        };
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
             Accept: application/json\r\nUser-Agent: cutover-cli\r\n"
        );
        if let Some(t) = &self.token {
            let _ = write!(req, "Authorization: Bearer {t}\r\n");
        }
        if method == "POST" {
            let _ = write!(
                req,
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            );
        }
        req.push_str("\r\n");
        req.push_str(&body);
        let raw = self.exchange(req.as_bytes())?;
        let (status, payload) = parse_response(&raw).map_err(|why| self.malformed(why))?;
        let value: Option<serde_json::Value> = serde_json::from_slice(&payload).ok();
        if (200..300).contains(&status) {
            return value.ok_or_else(|| self.malformed("the body is not JSON".into()));
        }
        let message = value
            .as_ref()
            .and_then(|v| v.get("error"))
            .and_then(serde_json::Value::as_str)
            .map_or_else(
                || String::from_utf8_lossy(&payload).trim().to_owned(),
                str::to_owned,
            );
        Err(CliError::Refused { status, message })
    }

    fn malformed(&self, why: String) -> CliError {
        CliError::Malformed {
            admin: self.shown.clone(),
            why,
        }
    }

    /// Sends `req` and reads the answer to the end of the connection.
    fn exchange(&self, req: &[u8]) -> Result<Vec<u8>, CliError> {
        let connect_err = |error| CliError::Connect {
            admin: self.shown.clone(),
            error,
        };
        let io_err = |error| CliError::Io {
            admin: self.shown.clone(),
            error,
        };
        match &self.target {
            Target::Tcp(hostport) => {
                let addrs: Vec<_> = hostport.to_socket_addrs().map_err(connect_err)?.collect();
                let mut last = std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the host name has no address",
                );
                for addr in addrs {
                    match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                        Ok(s) => return roundtrip(s, req).map_err(io_err),
                        Err(e) => last = e,
                    }
                }
                Err(connect_err(last))
            }
            Target::Unix(path) => {
                let s = UnixStream::connect(path).map_err(connect_err)?;
                roundtrip(s, req).map_err(io_err)
            }
        }
    }
}

/// The few stream calls [`roundtrip`] needs from TCP and unix sockets.
trait Timeouts: Read + Write {
    fn set_timeouts(&self, t: Duration) -> std::io::Result<()>;
}

impl Timeouts for TcpStream {
    fn set_timeouts(&self, t: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}

impl Timeouts for UnixStream {
    fn set_timeouts(&self, t: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}

fn roundtrip<S: Timeouts>(mut s: S, req: &[u8]) -> std::io::Result<Vec<u8>> {
    s.set_timeouts(IO_TIMEOUT)?;
    s.write_all(req)?;
    s.flush()?;
    let mut out = Vec::new();
    s.take(MAX_RESPONSE).read_to_end(&mut out)?;
    Ok(out)
}

fn parse_target(admin: &str) -> Result<Target, CliError> {
    let bad = || CliError::BadAdmin(admin.to_owned());
    if let Some(path) = admin.strip_prefix("unix:") {
        // `unix:///run/x.sock` as well as `unix:/run/x.sock`.
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err(bad());
        }
        return Ok(Target::Unix(PathBuf::from(path)));
    }
    let rest = admin.strip_prefix("http://").unwrap_or(admin);
    let hostport = rest.trim_end_matches('/');
    if hostport.is_empty() || hostport.contains('/') || admin.starts_with("https://") {
        return Err(bad());
    }
    // A port is there unless the text ends in a bare host or `[v6]`.
    let has_port = match hostport.rsplit_once(':') {
        Some((host, port)) => {
            !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    };
    Ok(Target::Tcp(if has_port {
        hostport.to_owned()
    } else {
        format!("{hostport}:80")
    }))
}

fn read_token(path: &Path) -> Result<String, CliError> {
    let err = |why: String| CliError::Token {
        path: path.display().to_string(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let t = text.trim();
    if t.is_empty() {
        return Err(err("the file is empty".into()));
    }
    Ok(t.to_owned())
}

/// Status code and body of a whole HTTP/1.1 answer (identity or chunked).
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "headers are not text")?;
    let body = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or("no status line")?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        }
    }
    if chunked {
        return dechunk(body).map(|b| (status, b));
    }
    let body = match length {
        Some(n) => body.get(..n).ok_or("the body is shorter than announced")?,
        None => body,
    };
    Ok((status, body.to_vec()))
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk")?;
        let size_text = std::str::from_utf8(&body[..eol]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = body.get(..size).ok_or("truncated chunk")?;
        out.extend_from_slice(chunk);
        body = body.get(size + 2..).ok_or("truncated chunk")?;
    }
}

// ---- the commands ----

/// `cutover status`: the table, or the API's JSON with `json`.
pub(crate) fn status(client: &Client, json: bool) -> Result<String, CliError> {
    let value = client.call("GET", "/v1/services", None)?;
    if json {
        return Ok(pretty(&value));
    }
    let services: Vec<ServiceRow> = serde_json::from_value(value)
        .map_err(|e| client.malformed(format!("unexpected service list: {e}")))?;
    Ok(status_table(&services))
}

/// `cutover rollout`: the new version and its VIPs.
pub(crate) fn rollout(
    client: &Client,
    service: &str,
    backends: &[IpAddr],
    json: bool,
) -> Result<String, CliError> {
    let body = serde_json::json!({ "backends": backends });
    let value = client.call(
        "POST",
        &format!("/v1/services/{service}/rollout"),
        Some(&body),
    )?;
    if json {
        return Ok(pretty(&value));
    }
    let v: VersionRow = serde_json::from_value(value)
        .map_err(|e| client.malformed(format!("unexpected version: {e}")))?;
    Ok(format!(
        "{} version {} is active at {} (backends {}); the previous version drains\n",
        v.service,
        v.id,
        join(&v.vips),
        join(v.backends.iter().map(|b| &b.addr)),
    ))
}

/// `cutover rollback`: the version active again.
pub(crate) fn rollback(client: &Client, service: &str, json: bool) -> Result<String, CliError> {
    let value = client.call("POST", &format!("/v1/services/{service}/rollback"), None)?;
    if json {
        return Ok(pretty(&value));
    }
    let v: VersionRow = serde_json::from_value(value)
        .map_err(|e| client.malformed(format!("unexpected version: {e}")))?;
    Ok(format!(
        "{} version {} is active again at {}; the newer version drains\n",
        v.service,
        v.id,
        join(&v.vips)
    ))
}

/// `cutover reload`: what the reload changed.
pub(crate) fn reload(client: &Client, json: bool) -> Result<String, CliError> {
    let value = client.call("POST", "/v1/reload", None)?;
    if json {
        return Ok(pretty(&value));
    }
    let r: ReloadRow = serde_json::from_value(value)
        .map_err(|e| client.malformed(format!("unexpected reload report: {e}")))?;
    if r.added.is_empty() && r.rolled_out.is_empty() && r.removed.is_empty() {
        return Ok("configuration reloaded: no version changed\n".into());
    }
    let mut out = String::from("configuration reloaded:\n");
    for s in &r.added {
        let _ = writeln!(out, "  added {s} (version 1)");
    }
    for (s, id) in &r.rolled_out {
        let _ = writeln!(out, "  rolled out {s} version {id}");
    }
    for s in &r.removed {
        let _ = writeln!(out, "  removed {s} (draining)");
    }
    Ok(out)
}

#[derive(Deserialize)]
struct ServiceRow {
    name: String,
    #[serde(default)]
    removed: bool,
    versions: Vec<VersionRow>,
}

#[derive(Deserialize)]
struct VersionRow {
    #[serde(default)]
    service: String,
    id: u32,
    vips: Vec<String>,
    state: String,
    backends: Vec<BackendRow>,
    #[serde(default)]
    active_flows: u64,
    created_at: String,
    draining_since: Option<String>,
}

#[derive(Deserialize)]
struct BackendRow {
    addr: String,
    healthy: bool,
}

#[derive(Deserialize)]
struct ReloadRow {
    added: Vec<String>,
    rolled_out: Vec<(String, u32)>,
    removed: Vec<String>,
}

fn status_table(services: &[ServiceRow]) -> String {
    let mut table = Table::new();
    table.load_preset(presets::UTF8_BORDERS_ONLY).set_header([
        "SERVICE",
        "VERSION",
        "STATE",
        "VIPS",
        "BACKENDS",
        "ACTIVE FLOWS",
        "CREATED",
        "DRAINING SINCE",
    ]);
    for s in services {
        let name = if s.removed {
            format!("{} (removed)", s.name)
        } else {
            s.name.clone()
        };
        for v in &s.versions {
            let healthy = v.backends.iter().filter(|b| b.healthy).count();
            table.add_row([
                name.clone(),
                v.id.to_string(),
                v.state.clone(),
                join(&v.vips),
                format!("{healthy}/{}", v.backends.len()),
                v.active_flows.to_string(),
                v.created_at.clone(),
                v.draining_since.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    for col in [1, 4, 5] {
        if let Some(c) = table.column_mut(col) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    format!("{table}\n")
}

fn join<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let mut out = String::new();
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{item}");
    }
    out
}

fn pretty(v: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_targets() {
        let tcp = |s: &str| Target::Tcp(s.into());
        assert_eq!(
            parse_target("http://127.0.0.1:9180").ok(),
            Some(tcp("127.0.0.1:9180"))
        );
        assert_eq!(
            parse_target("http://127.0.0.1:9180/").ok(),
            Some(tcp("127.0.0.1:9180"))
        );
        assert_eq!(parse_target("localhost").ok(), Some(tcp("localhost:80")));
        assert_eq!(
            parse_target("http://[::1]:9180").ok(),
            Some(tcp("[::1]:9180"))
        );
        assert_eq!(parse_target("http://[::1]").ok(), Some(tcp("[::1]:80")));
        assert_eq!(
            parse_target("unix:/run/cutover.sock").ok(),
            Some(Target::Unix("/run/cutover.sock".into()))
        );
        for bad in ["unix:", "https://x:1", "http://x:1/api", "http://"] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn responses() {
        let r = b"HTTP/1.1 404 Not Found\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(parse_response(r), Ok((404, b"hello".to_vec())));
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(r), Ok((200, b"abcde".to_vec())));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
