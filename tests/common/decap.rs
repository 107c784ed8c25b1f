//! Runs `cutover-decap`, the user-space IP-in-IP decapsulator, inside a
//! backend namespace, so end-to-end tests of the `ipip` forwarding mode
//! work on kernels without `ipip`/`sit`/`ip6_tunnel` modules.
//!
//! The decapsulator receives the outer packets addressed to the backend
//! (4-in-4, 6-in-4, 4-in-6, 6-in-6) on raw sockets and writes the inner
//! packets into a TUN device (`tun0`) of the namespace; the backend kernel
//! then answers straight to the client (direct server return). The VIPs
//! are local on the backend's `lo` and rp_filter is off, as
//! `tests/common/netns.rs` sets them up.
//!
//! Use from a test crate (self-contained; it does not need `netns.rs`,
//! though the two usually go together):
//!
//! ```text
//! #[path = "common/netns.rs"]
//! mod netns;
//! #[path = "common/decap.rs"]
//! mod decap;
//!
//! let topo = netns::Topology::build("xyz1", 2)?;
//! let _d1 = decap::start_decap(&topo.backends[0].ns)?; // killed on drop
//! let d2 = decap::start_decap(&topo.backends[1].ns)?;
//! // ... traffic ...
//! let stats = d2.stop()?; // SIGTERM, then its counters
//! assert!(stats.packets > 0);
//! ```
//!
//! Only integration tests of this package can use it: the binary's path
//! comes from `env!("CARGO_BIN_EXE_cutover-decap")`. The TUN device lives
//! in the namespace and disappears with the process (or the namespace).
#![allow(dead_code, unreachable_pub)] // shared by several test crates, each using a part

use std::io::{self, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long [`start_decap`] waits for the TUN device to come up.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Decap::stop`] waits for the process to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// The TUN device name [`start_decap`] uses.
pub const TUN: &str = "tun0";

/// The counters `cutover-decap` prints on exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecapStats {
    /// Inner packets written to the TUN device.
    pub packets: u64,
    /// Outer packets rejected (malformed, truncated) or failed writes.
    pub errors: u64,
}

/// A running decapsulator; killed (SIGKILL) and reaped on drop, so a
/// failing test leaves no process behind. [`Decap::stop`] ends it
/// gracefully and returns its counters.
#[derive(Debug)]
pub struct Decap {
    child: Option<Child>,
    ns: String,
    tun: String,
    stderr: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

/// Starts `cutover-decap --tun tun0` in namespace `ns` (via
/// `ip netns exec`) and waits, at most [`START_TIMEOUT`], until `tun0` is
/// up there — by then its raw sockets are open.
pub fn start_decap(ns: &str) -> io::Result<Decap> {
    start_decap_with(ns, TUN, &[])
}

/// As [`start_decap`], with another TUN name and extra arguments (for
/// instance `["--duration", "30"]` or `["--verbose"]`).
pub fn start_decap_with(ns: &str, tun: &str, extra: &[&str]) -> io::Result<Decap> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_cutover-decap")])
        .args(["--tun", tun])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // Drain stderr on a thread so the child never blocks on a full pipe.
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let reader = child.stderr.take().map(|mut pipe| {
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    s.extend_from_slice(&chunk[..n]);
                }
            }
        })
    });
    let mut decap = Decap {
        child: Some(child),
        ns: ns.to_owned(),
        tun: tun.to_owned(),
        stderr,
        reader,
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = decap.try_wait()? {
            decap.join_reader();
            return Err(io::Error::other(format!(
                "cutover-decap in {ns} exited ({status}): {}",
                decap.stderr_text().trim()
            )));
        }
        if tun_is_up(ns, tun) {
            return Ok(decap);
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{tun} not up in {ns} after {START_TIMEOUT:?}: {}",
                    decap.stderr_text().trim()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True when `ip -n NS link show TUN` shows the device with the UP flag.
fn tun_is_up(ns: &str, tun: &str) -> bool {
    let Ok(mut child) = Command::new("ip")
        .args(["-n", ns, "link", "show", tun])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    // `ip link show` answers at once; bound it anyway.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
    let mut out = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        let _ = pipe.read_to_string(&mut out);
    }
    // "2: tun0: <POINTOPOINT,MULTICAST,NOARP,UP,LOWER_UP> mtu 1500 ..."
    out.split(['<', '>'])
        .nth(1)
        .is_some_and(|flags| flags.split(',').any(|f| f == "UP"))
}

/// Parses the `decap: N packets, M errors` line.
pub fn parse_stats(text: &str) -> Option<DecapStats> {
    text.lines().rev().find_map(|line| {
        let rest = line.trim().strip_prefix("decap: ")?;
        let (p, rest) = rest.split_once(" packets, ")?;
        let e = rest.strip_suffix(" errors")?;
        Some(DecapStats {
            packets: p.parse().ok()?,
            errors: e.parse().ok()?,
        })
    })
}

impl Decap {
    /// The namespace it runs in.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The TUN device it writes to.
    pub fn tun(&self) -> &str {
        &self.tun
    }

    /// The process id (of `cutover-decap` itself: `ip netns exec` execs
    /// it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Some(status)` once the process has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<std::process::ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => c.try_wait(),
            None => Err(io::Error::other("already stopped")),
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// What it printed on stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .map(|s| String::from_utf8_lossy(&s).into_owned())
            .unwrap_or_default()
    }

    fn join_reader(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }

    /// Sends SIGTERM, waits at most [`STOP_TIMEOUT`] (then SIGKILL) and
    /// returns the counters it printed. An error if it had already died,
    /// did not stop in time or printed no counters.
    pub fn stop(mut self) -> io::Result<DecapStats> {
        let Some(mut child) = self.child.take() else {
            return Err(io::Error::other("already stopped"));
        };
        if child.try_wait()?.is_some() {
            self.join_reader();
            return Err(io::Error::other(format!(
                "cutover-decap in {} died early: {}",
                self.ns,
                self.stderr_text().trim()
            )));
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdin(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("cutover-decap in {} ignored SIGTERM", self.ns),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.join_reader();
        let text = self.stderr_text();
        match parse_stats(&text) {
            Some(stats) if status.success() => Ok(stats),
            _ => Err(io::Error::other(format!(
                "cutover-decap in {} exited ({status}) without counters: {}",
                self.ns,
                text.trim()
            ))),
        }
    }
}

impl Drop for Decap {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.join_reader();
    }
}
