use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

const EXAMPLE: &str = include_str!("../../../conf/cutover.toml");

/// One pool and one service, everything else defaulted. `l2dsr` because the
/// default `ipip` would need an encapsulation source.
const MINIMAL: &str = r#"[[vip_pool]]
name = "public"
prefixes = ["203.0.113.0/28"]

[[service]]
name = "web"
pool = "public"
ports = ["tcp/80"]
backends = ["10.0.1.11"]
forwarding = "l2dsr"
"#;

fn ok(text: &str) -> Config {
    match parse(Path::new("conf/cutover.toml"), text) {
        Ok(config) => config,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn error(text: &str) -> String {
    match parse(Path::new("conf/cutover.toml"), text) {
        Ok(_) => panic!("parsed, but should not have:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// MINIMAL with `extra` appended (it continues at line 11).
fn with(extra: &str) -> String {
    format!("{MINIMAL}{extra}")
}

#[test]
fn example_parses() {
    let config = ok(EXAMPLE);
    assert_eq!(config.dataplane.workers, 2);
    assert_eq!(config.dataplane.interfaces, ["eth1"]);
    assert_eq!(
        config.dataplane.encap_source_v4,
        Some(Ipv4Addr::new(10, 0, 0, 2))
    );
    assert_eq!(
        config.dataplane.neighbors,
        [
            (IpAddr::from([10, 0, 1, 11]), [2, 0, 0, 0, 1, 0x11]),
            (IpAddr::from([10, 0, 1, 12]), [2, 0, 0, 0, 1, 0x12]),
        ]
    );
    assert_eq!(
        config.dataplane.dpdk.as_ref().map(|d| d.eal_args.len()),
        Some(4)
    );
    assert_eq!(config.pools.len(), 1);
    assert_eq!(config.pools[0].prefixes.len(), 2);
    assert_eq!(config.pools[0].cooldown, Duration::from_secs(50));
    let web = &config.services[0];
    assert_eq!(web.name, "web");
    assert_eq!(web.families, [Family::Ipv4, Family::Ipv6]);
    assert_eq!(web.ports.len(), 3);
    assert_eq!(web.forwarding, Forwarding::Ipip);
    assert_eq!(web.health.port, Some(80));
    assert_eq!(
        config.state.path.as_deref(),
        Some(Path::new("/var/lib/cutover/state.json"))
    );
}

#[test]
fn example_loads_from_disk() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/cutover.toml");
    let config = load(&path).map_err(|e| e.to_string());
    assert_eq!(config.map(|c| c.path), Ok(path));
}

#[test]
fn load_reports_io_errors_with_the_path() {
    let e = load(Path::new("/nonexistent/cutover.toml")).map(|_| ());
    assert!(matches!(&e, Err(ConfigError::Io { path, .. }) if path == "/nonexistent/cutover.toml"));
}

#[test]
fn minimal_gets_every_default() {
    let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let expected = Config {
        path: "conf/cutover.toml".into(),
        dataplane: Dataplane {
            driver: Driver::AfPacket,
            interfaces: vec![],
            workers: 1,
            forwarding: Forwarding::Ipip,
            idle: Idle::Adaptive,
            encap_source_v4: None,
            encap_source_v6: None,
            gateway_v4: None,
            gateway_v6: None,
            mtu: 1500,
            tcp_idle_timeout: Duration::from_secs(300),
            udp_idle_timeout: Duration::from_secs(30),
            flow_table_size: 1_048_576,
            maglev_table_size: 65537,
            neighbors: vec![],
            dpdk: None,
        },
        dns: Dns {
            listen: vec![loopback(5353)],
            zone: "svc.example.".into(),
            ttl: 5,
            update: None,
        },
        metrics: Metrics {
            listen: Some(loopback(9100)),
        },
        admin: Admin {
            listen: AdminListen::Tcp(loopback(9180)),
            token_file: None,
        },
        state: State { path: None },
        pools: vec![VipPool {
            name: "public".into(),
            prefixes: vec!["203.0.113.0/28".parse().unwrap()],
            cooldown: Duration::from_secs(50),
        }],
        services: vec![Service {
            name: "web".into(),
            pool: 0,
            ports: vec![PortSpec {
                protocol: Protocol::Tcp,
                port: 80,
            }],
            families: vec![Family::Ipv4],
            vips: vec![],
            backends: vec![IpAddr::from([10, 0, 1, 11])],
            forwarding: Forwarding::L2dsr,
            drain_grace: Duration::from_secs(5),
            drain_quiet: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(600),
            health: HealthCheck {
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(1),
                rise: 2,
                fall: 3,
                port: Some(80),
            },
        }],
    };
    assert_eq!(ok(MINIMAL), expected);
}

#[test]
fn an_empty_file_is_a_config_without_services() {
    let config = ok("");
    assert!(config.pools.is_empty() && config.services.is_empty());
}

#[test]
fn values_are_normalised() {
    let config = ok(&with(
        r#"drain_quiet = "1m30s"
[service.health]
timeout = "250ms"

[[service]]
name = "dns-1"
pool = "public"
ports = ["udp/53"]
backends = ["10.0.1.21"]
forwarding = "l2dsr"

[dns]
zone = "SVC.Example"
listen = []

[dns.update]
server = "192.0.2.53"
key_name = "Cutover-Key"
key_secret = "aGVsbG8="

[metrics]
listen = "off"

[admin]
listen = "unix:/run/cutover.sock"
"#,
    ));
    assert_eq!(config.services[0].drain_quiet, Duration::from_secs(90));
    assert_eq!(
        config.services[0].health.timeout,
        Duration::from_millis(250)
    );
    assert_eq!(
        config.services[1].health.port, None,
        "UDP only: not checked"
    );
    assert_eq!(config.dns.zone, "svc.example.");
    assert!(config.dns.listen.is_empty());
    let update = config.dns.update.as_ref().expect("dns.update");
    assert_eq!(update.server, SocketAddr::from(([192, 0, 2, 53], 53)));
    assert_eq!(update.zone, "svc.example.");
    assert_eq!(update.key_name, "cutover-key.");
    assert_eq!(update.algorithm, "hmac-sha256");
    assert_eq!(update.key_bytes(), b"hello");
    assert_eq!(config.metrics.listen, None);
    assert_eq!(
        config.admin.listen,
        AdminListen::Unix("/run/cutover.sock".into())
    );
}

#[test]
fn ipip_with_encap_sources_and_ipv6() {
    let config = ok(r#"[dataplane]
encap_source_v4 = "10.0.0.2"
encap_source_v6 = "2001:db8:ffff::2"
mtu = 1280

[[vip_pool]]
name = "public"
prefixes = ["2001:db8:100::/124"]

[[service]]
name = "web"
pool = "public"
ports = ["tcp/443"]
families = ["ipv6"]
vips = ["2001:db8:100::5"]
backends = ["10.0.1.11", "2001:db8:1::11"]
"#);
    let web = &config.services[0];
    assert_eq!(web.forwarding, Forwarding::Ipip);
    assert_eq!(web.vips, ["2001:db8:100::5".parse::<IpAddr>().unwrap()]);
}

// Each error names the file, the 1-based line and column of the offending
// key or value, and what is wrong.

#[test]
fn syntax_error() {
    assert_eq!(
        error("[dataplane\nworkers = 2\n"),
        "conf/cutover.toml:1:11: invalid table header, expected `.`, `]`"
    );
    assert_eq!(
        error("[dataplane]\nworkers = = 2\n"),
        "conf/cutover.toml:2:11: invalid string, expected `\"`, `'`"
    );
}

#[test]
fn unknown_key_in_a_service() {
    assert_eq!(
        error(&with("backend = [\"10.0.1.12\"]\n")),
        "conf/cutover.toml:11:1: unknown field `backend`, expected one of `name`, `pool`, \
         `ports`, `families`, `vips`, `backends`, `forwarding`, `drain_grace`, \
         `drain_quiet`, `drain_timeout`, `health`"
    );
}

#[test]
fn unknown_key_in_every_section() {
    assert_eq!(
        error(&format!("bogus = 1\n{MINIMAL}")),
        "conf/cutover.toml:1:1: unknown field `bogus`, expected one of `dataplane`, `dns`, \
         `metrics`, `admin`, `state`, `vip_pool`, `service`"
    );
    for section in [
        "[dataplane]",
        "[dataplane.dpdk]",
        "[dns]",
        "[dns.update]",
        "[metrics]",
        "[admin]",
        "[state]",
        "[[vip_pool]]",
        "[[service]]",
        "[service.health]",
    ] {
        let e = error(&with(&format!("{section}\n  bogus = 1\n")));
        assert!(
            e.starts_with("conf/cutover.toml:12:3: unknown field `bogus`, expected "),
            "{section}: {e}"
        );
    }
    assert_eq!(
        error("[dataplane]\nmtu = 1500\n  bogus = 1\n"),
        "conf/cutover.toml:3:3: unknown field `bogus`, expected one of `driver`, `interfaces`, \
         `workers`, `forwarding`, `idle`, `encap_source_v4`, `encap_source_v6`, `gateway_v4`, \
         `gateway_v6`, `mtu`, `tcp_idle_timeout`, `udp_idle_timeout`, `flow_table_size`, `maglev_table_size`, \
         `neighbors`, `dpdk`"
    );
}

#[test]
fn wrong_types_and_enums() {
    assert_eq!(
        error("[dataplane]\nworkers = \"2\"\n"),
        "conf/cutover.toml:2:11: invalid type: string \"2\", expected an integer"
    );
    assert_eq!(
        error("[dataplane]\ndriver = \"netmap\"\n"),
        "conf/cutover.toml:2:10: unknown variant `netmap`, expected one of `af_packet`, \
         `af_xdp`, `dpdk`, `pcap`"
    );
    assert_eq!(
        error(&with("families = [\"ipv4\", \"inet6\"]\n")),
        "conf/cutover.toml:11:21: unknown variant `inet6`, expected `ipv4` or `ipv6`"
    );
    assert_eq!(
        error("[[service]]\nname = \"web\"\n"),
        "conf/cutover.toml:1:1: missing field `pool`"
    );
}

#[test]
fn bad_addresses() {
    assert_eq!(
        error(&MINIMAL.replace(r#"["10.0.1.11"]"#, r#"["10.0.1.11", "10.0.1.300"]"#)),
        "conf/cutover.toml:9:26: invalid IP address \"10.0.1.300\""
    );
    assert_eq!(
        error("[dataplane]\nencap_source_v4 = \"2001:db8::2\"\n"),
        "conf/cutover.toml:2:19: invalid IPv4 address \"2001:db8::2\""
    );
    assert_eq!(
        error("[dns]\nlisten = [\"127.0.0.1\"]\n"),
        "conf/cutover.toml:2:11: invalid socket address \"127.0.0.1\", expected IP:PORT \
         such as 127.0.0.1:5353 or [::1]:5353"
    );
    assert_eq!(
        error("[dataplane.neighbors]\n\"10.0.1.x\" = \"02:00:00:00:01:11\"\n"),
        "conf/cutover.toml:2:1: invalid IP address \"10.0.1.x\""
    );
    assert_eq!(
        error(&MINIMAL.replace(r#""203.0.113.0/28""#, r#""203.0.113.0""#)),
        "conf/cutover.toml:3:13: invalid prefix \"203.0.113.0\", expected CIDR form such \
         as 203.0.113.0/28"
    );
    assert_eq!(
        error(&MINIMAL.replace("203.0.113.0/28", "203.0.113.5/28")),
        "conf/cutover.toml:3:13: prefix 203.0.113.5/28 has host bits set, did you mean \
         203.0.113.0/28?"
    );
    assert_eq!(
        error(&MINIMAL.replace(r#"["tcp/80"]"#, r#"["tcp/80", "tcp/0"]"#)),
        "conf/cutover.toml:8:20: invalid port \"tcp/0\": the port must be between 1 and 65535"
    );
}

#[test]
fn bad_mac() {
    assert_eq!(
        error("[dataplane.neighbors]\n\"10.0.1.11\" = \"02:00:00:00:01\"\n"),
        "conf/cutover.toml:2:15: invalid MAC address \"02:00:00:00:01\", expected six hex \
         pairs such as 02:00:00:00:01:11"
    );
    assert_eq!(
        error("[dataplane.neighbors]\n\"10.0.1.11\" = \"02:00:00:00:01:11\"\n\"10.0.1.011\" = \"02:00:00:00:01:12\"\n"),
        "conf/cutover.toml:3:1: invalid IP address \"10.0.1.011\""
    );
    assert_eq!(
        error("[dataplane.neighbors]\n\"2001:db8::1\" = \"02:00:00:00:01:11\"\n\"2001:DB8::1\" = \"02:00:00:00:01:12\"\n"),
        "conf/cutover.toml:3:1: duplicate neighbor 2001:db8::1"
    );
    assert_eq!(
        error("[dataplane.neighbors]\n\"10.0.1.11\" = \"ff:ff:ff:ff:ff:ff\"\n"),
        "conf/cutover.toml:2:15: MAC address \"ff:ff:ff:ff:ff:ff\" is not a unicast address; \
         a neighbor needs its own MAC"
    );
}

#[test]
fn bad_duration() {
    assert_eq!(
        error(&with("drain_quiet = \"30\"\n")),
        "conf/cutover.toml:11:15: invalid duration \"30\": \"30\" has no unit (use ms, s, m or h)"
    );
    assert_eq!(
        error(&with("drain_quiet = 30\n")),
        "conf/cutover.toml:11:15: invalid duration 30: a duration needs a unit, e.g. \"30s\" \
         (use ms, s, m or h)"
    );
    assert_eq!(
        error(&with("[service.health]\ninterval = \"2d\"\n")),
        "conf/cutover.toml:12:12: invalid duration \"2d\": unknown unit \"d\" (use ms, s, m or h)"
    );
    assert_eq!(
        error(&with("drain_grace = \"20m\"\n")),
        "conf/cutover.toml:11:15: `drain_timeout` (600s) is shorter than `drain_grace` (1200s)"
    );
    assert_eq!(
        error(&with(
            "[service.health]\ninterval = \"1s\"\ntimeout = \"2s\"\n"
        )),
        "conf/cutover.toml:13:11: health `timeout` (2s) is longer than `interval` (1s)"
    );
}

#[test]
fn overlapping_pools() {
    assert_eq!(
        error(&with(
            "\n[[vip_pool]]\nname = \"private\"\nprefixes = [\"198.51.100.0/24\", \"203.0.113.8/29\"]\n"
        )),
        "conf/cutover.toml:14:32: prefix 203.0.113.8/29 overlaps 203.0.113.0/28 of vip_pool \
         \"public\""
    );
    assert_eq!(
        error(&MINIMAL.replace(
            r#"["203.0.113.0/28"]"#,
            r#"["203.0.113.0/28", "203.0.113.0/24"]"#
        )),
        "conf/cutover.toml:3:31: prefix 203.0.113.0/24 overlaps 203.0.113.0/28, listed before \
         it in this pool"
    );
    assert_eq!(
        error(&with(
            "\n[[vip_pool]]\nname = \"public\"\nprefixes = [\"198.51.100.0/24\"]\n"
        )),
        "conf/cutover.toml:13:8: duplicate vip_pool \"public\""
    );
}

#[test]
fn missing_pool() {
    assert_eq!(
        error(&MINIMAL.replace(r#"pool = "public""#, r#"pool = "private""#)),
        "conf/cutover.toml:7:8: no vip_pool named \"private\""
    );
}

#[test]
fn duplicate_service() {
    let second = "\n[[service]]\nname = \"web\"\npool = \"public\"\nports = [\"udp/53\"]\nbackends = [\"10.0.1.12\"]\nforwarding = \"l2dsr\"\n";
    assert_eq!(
        error(&with(second)),
        "conf/cutover.toml:13:8: duplicate service \"web\""
    );
    assert_eq!(
        error(&MINIMAL.replace(r#"name = "web""#, r#"name = "-web""#)),
        "conf/cutover.toml:6:8: invalid service name \"-web\": it must not start or end with '-'"
    );
}

#[test]
fn vips() {
    assert_eq!(
        error(&with("vips = [\"198.51.100.1\"]\n")),
        "conf/cutover.toml:11:9: VIP 198.51.100.1 is not in vip_pool \"public\""
    );
    assert_eq!(
        error(&with("vips = [\"203.0.113.1\", \"203.0.113.2\"]\n")),
        "conf/cutover.toml:11:24: a second IPv4 VIP, 203.0.113.2: a version has one VIP per family"
    );
    assert_eq!(
        error(&with("vips = [\"2001:db8::1\"]\n")),
        "conf/cutover.toml:11:9: VIP 2001:db8::1 is IPv6, which is not among the families of \
         service \"web\""
    );
    let second = "vips = [\"203.0.113.1\"]\n\n[[service]]\nname = \"api\"\npool = \"public\"\nports = [\"udp/53\"]\nvips = [\"203.0.113.1\"]\nbackends = [\"10.0.1.12\"]\nforwarding = \"l2dsr\"\n";
    assert_eq!(
        error(&with(second)),
        "conf/cutover.toml:17:9: VIP 203.0.113.1 is already used by service \"web\""
    );
    assert_eq!(
        error(&with("families = [\"ipv4\", \"ipv6\"]\n")),
        "conf/cutover.toml:11:21: vip_pool \"public\" has no IPv6 prefix"
    );
}

#[test]
fn backends() {
    assert_eq!(
        error(&MINIMAL.replace(r#"["10.0.1.11"]"#, r#"["10.0.1.11", "10.0.1.11"]"#)),
        "conf/cutover.toml:9:26: duplicate backend 10.0.1.11"
    );
    assert_eq!(
        error(&MINIMAL.replace(r#"["10.0.1.11"]"#, "[]")),
        "conf/cutover.toml:9:12: `backends` must not be empty"
    );
    assert_eq!(
        error(&MINIMAL.replace(r#"["10.0.1.11"]"#, r#"["203.0.113.3"]"#)),
        "conf/cutover.toml:9:13: backend 203.0.113.3 lies in vip_pool \"public\"; a backend \
         cannot be a VIP"
    );
}

#[test]
fn non_prime_maglev_size() {
    assert_eq!(
        error(&format!(
            "[dataplane]\nmaglev_table_size = 65536\n{MINIMAL}"
        )),
        "conf/cutover.toml:2:21: `maglev_table_size` must be a prime, 65536 is not (the next \
         prime is 65537)"
    );
    assert_eq!(
        error(&format!(
            "[dataplane]\nmaglev_table_size = 2\n{}",
            MINIMAL.replace(r#"["10.0.1.11"]"#, r#"["10.0.1.11", "10.0.1.12"]"#)
        )),
        "conf/cutover.toml:2:21: `maglev_table_size` 2 must be larger than the 2 backends of \
         service \"web\""
    );
}

#[test]
fn ipip_without_encap_source() {
    assert_eq!(
        error(&MINIMAL.replace("forwarding = \"l2dsr\"\n", "")),
        "conf/cutover.toml:9:12: service \"web\" forwards by ipip to IPv4 backends, which \
         needs [dataplane] encap_source_v4"
    );
    assert_eq!(
        error(&format!(
            "[dataplane]\nencap_source_v4 = \"10.0.0.2\"\n{}",
            MINIMAL
                .replace("forwarding = \"l2dsr\"\n", "")
                .replace("\"10.0.1.11\"", "\"2001:db8:1::11\"")
        )),
        "conf/cutover.toml:11:12: service \"web\" forwards by ipip to IPv6 backends, which \
         needs [dataplane] encap_source_v6"
    );
}

/// MINIMAL forwarding by `ipip` to one IPv4 and one IPv6 backend, with
/// both encapsulation sources and `gateway_lines` (line 2 onwards) in
/// `[dataplane]`.
fn ipip_with(gateway_lines: &str) -> String {
    format!(
        "[dataplane]\n{gateway_lines}encap_source_v4 = \"10.0.0.2\"\nencap_source_v6 = \"2001:db8:ffff::2\"\n{}",
        MINIMAL
            .replace("forwarding = \"l2dsr\"\n", "")
            .replace("\"10.0.1.11\"", "\"10.0.1.11\", \"2001:db8:1::11\"")
            .replace("\"203.0.113.0/28\"", "\"203.0.113.0/28\", \"2001:db8:f::/64\"")
    )
}

#[test]
fn gateways() {
    let c = ok(&ipip_with(
        "gateway_v4 = \"10.0.0.1\"\ngateway_v6 = \"fe80::1\"\n",
    ));
    assert_eq!(c.dataplane.gateway_v4, Some(Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!(c.dataplane.gateway_v6, Some("fe80::1".parse().unwrap()));
    let c = ok(&ipip_with(""));
    assert_eq!(
        (c.dataplane.gateway_v4, c.dataplane.gateway_v6),
        (None, None)
    );
    // A gateway may be pinned like any neighbour.
    let c = ok(&format!(
        "{}[dataplane.neighbors]\n\"10.0.0.1\" = \"02:00:00:00:00:01\"\n",
        ipip_with("gateway_v4 = \"10.0.0.1\"\n")
    ));
    assert_eq!(
        c.dataplane.neighbors,
        [(IpAddr::from([10, 0, 0, 1]), [2, 0, 0, 0, 0, 1])]
    );
}

#[test]
fn bad_gateways() {
    assert_eq!(
        error(&ipip_with("gateway_v4 = \"fd00::1\"\n")),
        "conf/cutover.toml:2:14: invalid IPv4 address \"fd00::1\""
    );
    assert_eq!(
        error(&ipip_with("gateway_v6 = \"10.0.0.1\"\n")),
        "conf/cutover.toml:2:14: invalid IPv6 address \"10.0.0.1\""
    );
    assert_eq!(
        error(&ipip_with("gateway_v4 = \"255.255.255.255\"\n")),
        "conf/cutover.toml:2:14: `gateway_v4` 255.255.255.255 is not a unicast address; the \
         gateway is one router"
    );
    assert_eq!(
        error(&ipip_with("gateway_v4 = \"0.0.0.0\"\n")),
        "conf/cutover.toml:2:14: `gateway_v4` 0.0.0.0 is not a unicast address; the gateway \
         is one router"
    );
    assert_eq!(
        error(&ipip_with("gateway_v6 = \"ff02::2\"\n")),
        "conf/cutover.toml:2:14: `gateway_v6` ff02::2 is not a unicast address; the gateway \
         is one router"
    );
    assert_eq!(
        error(&ipip_with("gateway_v4 = \"10.0.0.2\"\n")),
        "conf/cutover.toml:2:14: `gateway_v4` 10.0.0.2 is `encap_source_v4`, this host; the \
         gateway is the next router"
    );
    assert_eq!(
        error(&ipip_with("gateway_v6 = \"2001:db8:f::1\"\n")),
        "conf/cutover.toml:2:14: `gateway_v6` 2001:db8:f::1 lies in VIP pool \"public\"; the \
         gateway is the next router"
    );
    // Every service forwards by l2dsr: the gateway would do nothing.
    assert_eq!(
        error(&format!(
            "[dataplane]\ngateway_v4 = \"10.0.0.1\"\n{MINIMAL}"
        )),
        "conf/cutover.toml:2:14: `gateway_v4` is used only by `ipip` services, and every \
         service forwards by `l2dsr`, whose backends must be on-link; remove it"
    );
}

#[test]
fn non_loopback_admin_without_token() {
    assert_eq!(
        error("[admin]\nlisten = \"0.0.0.0:9180\"\n"),
        "conf/cutover.toml:2:10: the admin API on 0.0.0.0:9180 is reachable from the network: \
         set `token_file`, or listen on loopback or a unix socket"
    );
    let config = ok("[admin]\nlisten = \"[::]:9180\"\ntoken_file = \"/etc/cutover/token\"\n");
    assert_eq!(config.admin.token_file, Some("/etc/cutover/token".into()));
}

#[test]
fn integer_ranges() {
    assert_eq!(
        error("[dataplane]\nworkers = 0\n"),
        "conf/cutover.toml:2:11: `workers` must be at least 1, got 0"
    );
    assert_eq!(
        error("[dataplane]\nmtu = 100\n"),
        "conf/cutover.toml:2:7: `mtu` must be between 576 and 9000, got 100"
    );
    assert_eq!(
        error("[dns]\nttl = 0\n"),
        "conf/cutover.toml:2:7: `ttl` must be between 1 and 86400, got 0"
    );
    assert_eq!(
        error(&format!(
            "[dataplane]\nmtu = 1000\n{}",
            MINIMAL.replace("\"10.0.1.11\"", "\"2001:db8:1::11\"")
        )),
        "conf/cutover.toml:2:7: `mtu` 1000 is below 1280, the IPv6 minimum, and service \
         \"web\" uses IPv6"
    );
}

#[test]
fn dns_update_checks_its_values() {
    let update = |body: &str| {
        format!("[dns.update]\nserver = \"192.0.2.53:5300\"\nkey_name = \"k\"\n{body}")
    };
    assert_eq!(
        error(&update("key_secret = \"not base64!\"\n")),
        "conf/cutover.toml:4:14: invalid key_secret: not valid base64 (as in a BIND key file)"
    );
    assert_eq!(
        error(&update(
            "key_secret = \"aGVsbG8=\"\nalgorithm = \"hmac-md5\"\n"
        )),
        "conf/cutover.toml:5:13: unsupported TSIG algorithm \"hmac-md5\" (use hmac-sha256, \
         hmac-sha384 or hmac-sha512)"
    );
    assert_eq!(
        error(&update(
            "key_secret = \"aGVsbG8=\"\nalgorithm = \"hmac-sha1\"\n"
        )),
        "conf/cutover.toml:5:13: unsupported TSIG algorithm \"hmac-sha1\" (use hmac-sha256, \
         hmac-sha384 or hmac-sha512)"
    );
    assert_eq!(
        error("[dns]\nzone = \"svc..example\"\n"),
        "conf/cutover.toml:2:8: invalid DNS name \"svc..example\": empty label"
    );
}

#[test]
fn columns_count_characters_not_bytes() {
    assert_eq!(
        error("[dataplane]\ninterfaces = [\"é0\", \"\"]\n"),
        "conf/cutover.toml:2:21: empty interface name"
    );
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = parse(Path::new("fuzz.toml"), &text);
    }

    #[test]
    fn mangled_example_never_panics(at in 0..EXAMPLE.len(), len in 0..40usize, insert in "\\PC{0,20}") {
        let mut text = EXAMPLE.to_owned();
        if text.is_char_boundary(at) && text.is_char_boundary((at + len).min(text.len())) {
            text.replace_range(at..(at + len).min(text.len()), &insert);
        }
        if let Err(ConfigError::Invalid { line, column, .. }) = parse(Path::new("fuzz.toml"), &text) {
            prop_assert!(line >= 1 && column >= 1);
            in_text(&text, line, column)?;
        }
    }

    #[test]
    fn arbitrary_text_errors_point_into_the_text(text in "[ -~\n\té]{0,200}") {
        if let Err(ConfigError::Invalid { line, column, .. }) = parse(Path::new("fuzz.toml"), &text) {
            in_text(&text, line, column)?;
        }
    }
}

/// The position `line:column` is in `text`, or just after its last
/// character: an editor can jump there.
fn in_text(text: &str, line: usize, column: usize) -> Result<(), TestCaseError> {
    let lines: Vec<&str> = text.split('\n').collect();
    let Some(l) = line.checked_sub(1).and_then(|i| lines.get(i)) else {
        return Err(TestCaseError::fail(format!(
            "line {line} of {}",
            lines.len()
        )));
    };
    prop_assert!(
        column >= 1 && column <= l.chars().count() + 1,
        "column {column} of line {line} ({} characters)",
        l.chars().count()
    );
    Ok(())
}

#[test]
fn idle_mode_is_adaptive_unless_busy_is_asked() {
    let busy = ok("[dataplane]\nidle = \"busy\"\n");
    assert_eq!(busy.dataplane.idle, Idle::Busy);
    let adaptive = ok("[dataplane]\nidle = \"adaptive\"\n");
    assert_eq!(adaptive.dataplane.idle, Idle::Adaptive);
    assert!(error("[dataplane]\nidle = \"sleepy\"\n").starts_with("conf/cutover.toml:2:8:"));
}
