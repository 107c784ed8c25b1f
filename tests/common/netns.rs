//! A one-armed load-balancer topology in network namespaces, for the end
//! to end tests, demos and benchmarks (`scripts/netns.sh` builds the same
//! from a shell).
//!
//! ```text
//!                      {prefix}-sw: bridge br0
//!        ┌──────────────┬─────────┴──────┬──────────────┐
//!  {prefix}-client   {prefix}-lb      {prefix}-b1 ... {prefix}-bN
//!  10.99.0.1/24      10.99.0.2/24     10.99.0.11/24 ...
//!  fd99::1/64        fd99::2/64       fd99::11/64 ...
//!  route VIPs via lb                  VIPs local on lo (DSR)
//! ```
//!
//! Every node has one interface, `eth0`, on one L2 segment. The client
//! routes the VIP prefixes (198.18.0.0/24, fd98::/64) to the lb; each
//! backend holds them as local routes on `lo`, does not answer ARP for them
//! (arp_ignore=1, arp_announce=2), has rp_filter off and may bind to them
//! (ip_nonlocal_bind), so it replies straight to the client (direct server
//! return). The lb's kernel does not forward: its packets are for the
//! data plane on `eth0`.
//!
//! Checksum and segmentation offloads are off on every `eth0`: over a veth
//! a locally sent packet otherwise carries a partial checksum (or is a
//! 64 KiB GSO frame) that an AF_PACKET data plane would forward as is.
//!
//! Namespaces are deleted on drop, also when a test panics; a crashed run's
//! leftovers go with [`cleanup_stale`] (which [`Topology::build`] calls
//! first). Each test picks its own prefix so tests run in parallel: a short
//! tag of the test file plus a number (`afp1`, `afp2` in
//! `tests/af_packet_port.rs`). Every command runs with a timeout.
//!
//! Tests that need more than this segment (a router and a backend behind
//! it, `tests/gateway.rs`) add namespaces named `{prefix}-x{role}` with
//! [`Topology::add_namespace`] or [`Topology::add_segment_node`]; they are
//! deleted with the rest, and [`cleanup_stale`] knows their names.
//!
//! Use from a test crate with `#[path = "common/netns.rs"] mod netns;`.
#![allow(dead_code, unreachable_pub)] // shared by several test crates, each using a part

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long one `ip`/`sysctl` command may take.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(20);

/// The IPv4 VIP prefix routed to the lb.
pub const VIP_V4_NET: &str = "198.18.0.0/24";
/// The IPv6 VIP prefix routed to the lb.
pub const VIP_V6_NET: &str = "fd98::/64";

/// The `i`th IPv4 VIP (198.18.0.i).
pub fn vip_v4(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, i)
}

/// The `i`th IPv6 VIP (fd98::i).
pub fn vip_v6(i: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd98, 0, 0, 0, 0, 0, 0, i)
}

/// One namespace of the topology and its interface on the segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Namespace name, e.g. `t1-lb`.
    pub ns: String,
    /// The interface on the segment (always `eth0`).
    pub ifname: String,
    /// Its MAC address (fixed: 02:99:00:00:00:XX).
    pub mac: [u8; 6],
    /// Its IPv4 address (/24).
    pub ipv4: Ipv4Addr,
    /// Its IPv6 address (/64).
    pub ipv6: Ipv6Addr,
}

impl Node {
    fn new(prefix: &str, role: &str, host: u8) -> Node {
        Node {
            ns: format!("{prefix}-{role}"),
            ifname: "eth0".to_owned(),
            mac: [0x02, 0x99, 0, 0, 0, host],
            ipv4: Ipv4Addr::new(10, 99, 0, host),
            // fd99::1, fd99::2, fd99::11 ...: the host number written in
            // decimal, read as hex, like the IPv4 one.
            ipv6: format!("fd99::{host}")
                .parse()
                .unwrap_or(Ipv6Addr::UNSPECIFIED),
        }
    }

    /// The MAC as `aa:bb:cc:dd:ee:ff`.
    pub fn mac_string(&self) -> String {
        mac_string(&self.mac)
    }
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The namespaces, bridge and addresses of one test; torn down on drop.
#[derive(Debug)]
pub struct Topology {
    /// The prefix of every namespace name.
    pub prefix: String,
    /// The namespace holding the bridge.
    pub switch_ns: String,
    /// The client.
    pub client: Node,
    /// The load balancer (the data plane runs on its `eth0`).
    pub lb: Node,
    /// The backends b1..bN.
    pub backends: Vec<Node>,
    /// Namespaces created so far (deleted on drop).
    created: Vec<String>,
}

impl Topology {
    /// Builds the topology with `backends` backends (1..=200). Namespaces
    /// of an earlier run with the same prefix are deleted first.
    pub fn build(prefix: &str, backends: usize) -> io::Result<Topology> {
        check_prefix(prefix)?;
        if !(1..=200).contains(&backends) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "1 to 200 backends",
            ));
        }
        cleanup_stale(prefix)?;
        let mut topo = Topology {
            prefix: prefix.to_owned(),
            switch_ns: format!("{prefix}-sw"),
            client: Node::new(prefix, "client", 1),
            lb: Node::new(prefix, "lb", 2),
            backends: (1..=backends)
                .map(|i| {
                    let i = u8::try_from(i).unwrap_or(u8::MAX - 10);
                    Node::new(prefix, &format!("b{i}"), 10 + i)
                })
                .collect(),
            created: Vec::new(),
        };
        // On error `topo` drops here and deletes what exists.
        topo.setup()?;
        Ok(topo)
    }

    /// Every node: client, lb, backends.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        [&self.client, &self.lb]
            .into_iter()
            .chain(self.backends.iter())
    }

    /// Every namespace of the topology, the switch included.
    pub fn namespaces(&self) -> Vec<String> {
        std::iter::once(self.switch_ns.clone())
            .chain(self.nodes().map(|n| n.ns.clone()))
            .collect()
    }

    fn setup(&mut self) -> io::Result<()> {
        let sw = self.switch_ns.clone();
        for ns in self.namespaces() {
            ip(&["netns", "add", &ns])?;
            self.created.push(ns);
        }
        ip(&["-n", &sw, "link", "set", "lo", "up"])?;
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        let nodes: Vec<Node> = self.nodes().cloned().collect();
        for node in &nodes {
            self.plug(node)?;
        }
        let lb4 = self.lb.ipv4.to_string();
        let lb6 = self.lb.ipv6.to_string();
        let c = self.client.ns.clone();
        ip(&["-n", &c, "route", "add", VIP_V4_NET, "via", &lb4])?;
        ip(&["-n", &c, "-6", "route", "add", VIP_V6_NET, "via", &lb6])?;
        // The lb's kernel gets a copy of the VIP traffic that an AF_PACKET
        // data plane takes. With no route for the VIPs, IPv4 drops it
        // silently but IPv6 answers "no route" to the client; a blackhole
        // route drops both silently (docs/operations.md asks the same of
        // an AF_PACKET host).
        let l = self.lb.ns.clone();
        ip(&["-n", &l, "route", "add", "blackhole", VIP_V4_NET])?;
        ip(&["-n", &l, "-6", "route", "add", "blackhole", VIP_V6_NET])?;
        for b in &nodes[2..] {
            let ns = &b.ns;
            ip(&["-n", ns, "route", "add", "local", VIP_V4_NET, "dev", "lo"])?;
            ip(&[
                "-n", ns, "-6", "route", "add", "local", VIP_V6_NET, "dev", "lo",
            ])?;
            for (key, val) in [
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
                ("net.ipv4.conf.eth0.rp_filter", "0"),
                ("net.ipv4.conf.lo.rp_filter", "0"),
                ("net.ipv4.conf.all.arp_ignore", "1"),
                ("net.ipv4.conf.eth0.arp_ignore", "1"),
                ("net.ipv4.conf.all.arp_announce", "2"),
                ("net.ipv4.conf.eth0.arp_announce", "2"),
                ("net.ipv4.ip_nonlocal_bind", "1"),
                ("net.ipv6.ip_nonlocal_bind", "1"),
            ] {
                sysctl(ns, key, val)?;
            }
        }
        Ok(())
    }

    /// Connects `node`'s namespace to the segment: its `eth0` with its
    /// MAC and addresses, a port of the bridge named after its role.
    fn plug(&self, node: &Node) -> io::Result<()> {
        let sw = &self.switch_ns;
        let port = node
            .ns
            .trim_start_matches(&format!("{}-", self.prefix))
            .to_owned();
        let mac = node.mac_string();
        ip(&[
            "link", "add", "eth0", "address", &mac, "netns", &node.ns, "type", "veth", "peer",
            "name", &port, "netns", sw,
        ])?;
        ip(&["-n", sw, "link", "set", &port, "master", "br0", "up"])?;
        ip(&["-n", &node.ns, "link", "set", "lo", "up"])?;
        sysctl(&node.ns, "net.ipv6.conf.all.accept_dad", "0")?;
        sysctl(&node.ns, "net.ipv6.conf.default.accept_dad", "0")?;
        sysctl(&node.ns, "net.ipv6.conf.eth0.accept_dad", "0")?;
        let v4 = format!("{}/24", node.ipv4);
        let v6 = format!("{}/64", node.ipv6);
        ip(&["-n", &node.ns, "addr", "add", &v4, "dev", "eth0"])?;
        ip(&[
            "-n", &node.ns, "-6", "addr", "add", &v6, "dev", "eth0", "nodad",
        ])?;
        ip(&["-n", &node.ns, "link", "set", "eth0", "up"])?;
        disable_offloads(&node.ns, "eth0")?;
        Ok(())
    }

    /// Adds an extra namespace `{prefix}-x{role}` (`role`: 1-8 of
    /// `[a-z0-9]`), deleted with the topology, and returns its name. For
    /// tests that need more than one segment, e.g. a router and a backend
    /// behind it.
    pub fn add_namespace(&mut self, role: &str) -> io::Result<String> {
        if role.is_empty()
            || role.len() > 8
            || !role
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("extra namespace role {role:?}: 1-8 of [a-z0-9]"),
            ));
        }
        let ns = format!("{}-x{role}", self.prefix);
        ip(&["netns", "add", &ns])?;
        self.created.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Adds an extra namespace (see [`Topology::add_namespace`]) plugged
    /// into the segment like the other nodes, as host `host`
    /// (10.99.0.`host`/24, fd99::`host`/64, 02:99:00:00:00:`host`), with
    /// none of the backends' DSR settings. `host` must not be one the
    /// topology uses (1, 2, 11 and up).
    pub fn add_segment_node(&mut self, role: &str, host: u8) -> io::Result<Node> {
        let ns = self.add_namespace(role)?;
        let mut node = Node::new(&self.prefix, &format!("x{role}"), host);
        node.ns = ns;
        self.plug(&node)?;
        Ok(node)
    }

    /// Deletes every namespace this topology created. Idempotent.
    pub fn teardown(&mut self) {
        for ns in self.created.drain(..).rev() {
            let _ = ip(&["netns", "del", &ns]);
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn check_prefix(prefix: &str) -> io::Result<()> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 24
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("namespace prefix {prefix:?}: 1-24 of [A-Za-z0-9_.]"),
        ))
    }
}

/// True for a namespace name that a topology with `prefix` creates.
fn is_ours(prefix: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    matches!(rest, "sw" | "client" | "lb")
        || rest.strip_prefix('x').is_some_and(|r| {
            !r.is_empty()
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        || rest
            .strip_prefix('b')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Deletes the namespaces a topology with `prefix` would create, left over
/// by a run that crashed before its teardown.
pub fn cleanup_stale(prefix: &str) -> io::Result<()> {
    check_prefix(prefix)?;
    for ns in list_netns()? {
        if is_ours(prefix, &ns) {
            let _ = ip(&["netns", "del", &ns]);
        }
    }
    Ok(())
}

/// The names of all named network namespaces.
pub fn list_netns() -> io::Result<Vec<String>> {
    let out = ip(&["netns", "list"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect())
}

/// True when the process runs as root (the topology needs CAP_NET_ADMIN
/// and CAP_SYS_ADMIN). `/proc/self` belongs to the effective user.
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// True when namespaces can be built here: root, and `ip netns` works.
pub fn netns_available() -> bool {
    is_root() && ip(&["netns", "list"]).is_ok()
}

/// Runs `cmd` to completion within `timeout`, killing it past that.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> io::Result<Output> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out,
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            let _ = rx.recv_timeout(Duration::from_secs(5));
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{cmd:?} took longer than {timeout:?}"),
            ))
        }
    }
}

/// Runs `cmd args` in namespace `ns` (through `ip netns exec`), within
/// [`CMD_TIMEOUT`]. A non-zero exit is returned in the `Output`, not as an
/// error.
pub fn run_in(ns: &str, cmd: &str, args: &[&str]) -> io::Result<Output> {
    run_timeout(
        Command::new("ip")
            .args(["netns", "exec", ns, cmd])
            .args(args),
        CMD_TIMEOUT,
    )
}

/// Starts `cmd args` in namespace `ns`; the caller waits for or kills it
/// (see [`KillOnDrop`]).
pub fn spawn_in(ns: &str, cmd: &str, args: &[&str]) -> io::Result<Child> {
    Command::new("ip")
        .args(["netns", "exec", ns, cmd])
        .args(args)
        .stdin(Stdio::null())
        .spawn()
}

/// A child process killed and reaped on drop, so a failing test leaves no
/// process behind.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `ip args`, failing on a non-zero exit with its stderr.
pub fn ip(args: &[&str]) -> io::Result<Output> {
    let out = run_timeout(Command::new("ip").args(args), CMD_TIMEOUT)?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Sets a sysctl inside `ns` (writes `/proc/sys` from a thread in it).
pub fn sysctl(ns: &str, key: &str, val: &str) -> io::Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let val = val.to_owned();
    in_netns(ns, move || std::fs::write(&path, val))?
        .map_err(|e| io::Error::new(e.kind(), format!("sysctl {key} in {ns}: {e}")))
}

/// Moves the calling thread, and only it, into the network namespace
/// `name` (created by `ip netns add`). Sockets the thread opens afterwards
/// belong to that namespace and may then be used from any thread.
///
/// Only call it on a thread you spawned (see [`in_netns`]): a test
/// harness thread may be reused for other tests.
pub fn enter_netns(name: &str) -> io::Result<()> {
    let f = File::open(format!("/var/run/netns/{name}"))?;
    // SAFETY: setns(2) only reads the descriptor, which stays open for the
    // call; CLONE_NEWNET changes the namespace of the calling thread alone
    // and breaks no invariant of the Rust runtime.
    let ret = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Runs `f` on a new thread inside namespace `ns` and returns its result.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    let ns = ns.to_owned();
    std::thread::spawn(move || -> io::Result<T> {
        enter_netns(&ns)?;
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other("thread in namespace panicked"))?
}

/// Turns off checksum, segmentation and receive offloads of `ifname` in
/// `ns` (as `ethtool -K IF tx off sg off tso off gso off gro off`), with
/// the legacy ethtool ioctls so no ethtool binary is needed. Best effort
/// per feature: a device without one just keeps it.
pub fn disable_offloads(ns: &str, ifname: &str) -> io::Result<()> {
    let ifname = ifname.to_owned();
    in_netns(ns, move || -> io::Result<()> {
        const ETHTOOL_STXCSUM: u32 = 0x17;
        const ETHTOOL_SSG: u32 = 0x19;
        const ETHTOOL_STSO: u32 = 0x1f;
        const ETHTOOL_SGSO: u32 = 0x24;
        const ETHTOOL_SGRO: u32 = 0x2c;
        let sock = std::net::UdpSocket::bind("0.0.0.0:0")
            .or_else(|_| std::net::UdpSocket::bind("[::]:0"))?;
        for cmd in [
            ETHTOOL_STXCSUM,
            ETHTOOL_SSG,
            ETHTOOL_STSO,
            ETHTOOL_SGSO,
            ETHTOOL_SGRO,
        ] {
            // struct ethtool_value { u32 cmd; u32 data; }
            let mut value = [cmd, 0u32];
            // SAFETY: ifreq is plain old data; all-zero is a valid value.
            let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
            for (d, s) in ifr.ifr_name.iter_mut().zip(ifname.bytes().take(15)) {
                *d = libc::c_char::from_ne_bytes([s]);
            }
            ifr.ifr_ifru.ifru_data = value.as_mut_ptr().cast();
            // SAFETY: `ifr` names the device and points at `value`, a live
            // ethtool_value the kernel reads during the call only.
            let _ = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL as _, &mut ifr) };
        }
        Ok(())
    })?
}
