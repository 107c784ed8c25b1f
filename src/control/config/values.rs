//! Scalar values of the configuration file: durations, addresses, MACs,
//! `tcp/80` port specs, DNS names, TSIG secrets.
//!
//! Each is parsed while the TOML is deserialized ([`Parsed`]), so a bad value
//! is reported by `toml` at the value's own position, with our message.

use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::{AdminListen, PortSpec, Protocol};

/// A value that is written as a TOML string and parsed on the spot.
pub(super) trait FromConfigStr: Sized {
    /// Completes serde's "invalid type: ..., expected {EXPECTING}".
    const EXPECTING: &'static str;

    fn from_config_str(s: &str) -> Result<Self, String>;

    /// A TOML integer where a string was expected; overridden where a
    /// better hint than serde's type error exists (`30` for `"30s"`).
    fn from_config_int(v: i64) -> Result<Self, String> {
        Err(format!(
            "invalid type: integer `{v}`, expected {}",
            Self::EXPECTING
        ))
    }
}

/// A `T` parsed from its TOML string form during deserialization.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Parsed<T>(pub(super) T);

impl<'de, T: FromConfigStr> Deserialize<'de> for Parsed<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ParsedVisitor<T>(PhantomData<T>);

        impl<T: FromConfigStr> Visitor<'_> for ParsedVisitor<T> {
            type Value = Parsed<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(T::EXPECTING)
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                T::from_config_str(s).map(Parsed).map_err(E::custom)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                T::from_config_int(v).map(Parsed).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(ParsedVisitor(PhantomData))
    }
}

impl FromConfigStr for IpAddr {
    const EXPECTING: &'static str = "an IP address such as \"10.0.1.11\"";

    fn from_config_str(s: &str) -> Result<Self, String> {
        s.parse().map_err(|_| format!("invalid IP address \"{s}\""))
    }
}

impl FromConfigStr for Ipv4Addr {
    const EXPECTING: &'static str = "an IPv4 address such as \"10.0.0.2\"";

    fn from_config_str(s: &str) -> Result<Self, String> {
        s.parse()
            .map_err(|_| format!("invalid IPv4 address \"{s}\""))
    }
}

impl FromConfigStr for Ipv6Addr {
    const EXPECTING: &'static str = "an IPv6 address such as \"2001:db8::2\"";

    fn from_config_str(s: &str) -> Result<Self, String> {
        s.parse()
            .map_err(|_| format!("invalid IPv6 address \"{s}\""))
    }
}

impl FromConfigStr for SocketAddr {
    const EXPECTING: &'static str = "an address and port such as \"127.0.0.1:5353\"";

    fn from_config_str(s: &str) -> Result<Self, String> {
        s.parse().map_err(|_| {
            format!("invalid socket address \"{s}\", expected IP:PORT such as 127.0.0.1:5353 or [::1]:5353")
        })
    }
}

/// A TOML integer, with a type error that reads "expected an integer"
/// rather than serde's "expected i64".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Int(pub(super) i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IntVisitor;

        impl Visitor<'_> for IntVisitor {
            type Value = Int;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int(v))
            }
        }

        deserializer.deserialize_any(IntVisitor)
    }
}

/// `[dns.update] server`: a port is optional and defaults to 53.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ServerAddr(pub(super) SocketAddr);

impl FromConfigStr for ServerAddr {
    const EXPECTING: &'static str =
        "a DNS server address such as \"192.0.2.53\" or \"192.0.2.53:53\"";

    fn from_config_str(s: &str) -> Result<Self, String> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(ServerAddr(addr));
        }
        s.parse::<IpAddr>()
            .map(|ip| ServerAddr(SocketAddr::new(ip, 53)))
            .map_err(|_| {
                format!("invalid DNS server address \"{s}\", expected IP or IP:PORT such as 192.0.2.53:53")
            })
    }
}

/// `[metrics] listen`: an address, or `"off"` for no exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MetricsListen(pub(super) Option<SocketAddr>);

impl FromConfigStr for MetricsListen {
    const EXPECTING: &'static str = "an address and port such as \"127.0.0.1:9100\", or \"off\"";

    fn from_config_str(s: &str) -> Result<Self, String> {
        if s == "off" {
            return Ok(MetricsListen(None));
        }
        s.parse().map(|a| MetricsListen(Some(a))).map_err(|_| {
            format!("invalid metrics address \"{s}\", expected IP:PORT such as 127.0.0.1:9100, or \"off\"")
        })
    }
}

impl FromConfigStr for AdminListen {
    const EXPECTING: &'static str =
        "an address and port such as \"127.0.0.1:9180\", or \"unix:/run/cutover.sock\"";

    fn from_config_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("invalid admin address \"unix:\": the socket path is missing".into());
            }
            return Ok(AdminListen::Unix(PathBuf::from(path)));
        }
        s.parse().map(AdminListen::Tcp).map_err(|_| {
            format!("invalid admin address \"{s}\", expected IP:PORT such as 127.0.0.1:9180, or unix:/PATH")
        })
    }
}

/// An Ethernet address, `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Mac(pub(super) [u8; 6]);

impl FromConfigStr for Mac {
    const EXPECTING: &'static str = "a MAC address such as \"02:00:00:00:01:11\"";

    fn from_config_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("invalid MAC address \"{s}\", expected six hex pairs such as 02:00:00:00:01:11")
        };
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut mac {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        if mac[0] & 1 == 1 || mac == [0; 6] {
            return Err(format!(
                "MAC address \"{s}\" is not a unicast address; a neighbor needs its own MAC"
            ));
        }
        Ok(Mac(mac))
    }
}

const UNITS: &str = "use ms, s, m or h";

impl FromConfigStr for Duration {
    const EXPECTING: &'static str = "a duration such as \"30s\"";

    fn from_config_str(s: &str) -> Result<Self, String> {
        parse_duration(s).map_err(|why| format!("invalid duration \"{s}\": {why}"))
    }

    fn from_config_int(v: i64) -> Result<Self, String> {
        Err(format!(
            "invalid duration {v}: a duration needs a unit, e.g. \"{v}s\" ({UNITS})"
        ))
    }
}

/// `"1m30s"`, `"250ms"`, `"10m"`: one or more number-unit pairs.
fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Err("expected a number with a unit such as \"30s\"".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err("expected a number with a unit such as \"30s\"".into());
        }
        // ASCII prefixes end on char boundaries, so these splits cannot panic.
        let (number, after) = rest.split_at(digits);
        let letters = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(letters);
        let n: u64 = number.parse().map_err(|_| "too large".to_string())?;
        let part = match unit {
            "ms" => Some(Duration::from_millis(n)),
            "s" => Some(Duration::from_secs(n)),
            "m" => n.checked_mul(60).map(Duration::from_secs),
            "h" => n.checked_mul(3600).map(Duration::from_secs),
            "" => return Err(format!("\"{number}\" has no unit ({UNITS})")),
            other => return Err(format!("unknown unit \"{other}\" ({UNITS})")),
        };
        total = part
            .and_then(|p| total.checked_add(p))
            .ok_or_else(|| "too large".to_string())?;
        rest = after;
    }
    Ok(total)
}

impl FromConfigStr for PortSpec {
    const EXPECTING: &'static str = "a port such as \"tcp/80\" or \"udp/443\"";

    fn from_config_str(s: &str) -> Result<Self, String> {
        let (protocol, port) = s.split_once('/').ok_or_else(|| {
            format!("invalid port \"{s}\", expected PROTOCOL/PORT such as \"tcp/80\"")
        })?;
        let protocol = match protocol {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            _ => {
                return Err(format!(
                    "invalid port \"{s}\": the protocol must be tcp or udp"
                ))
            }
        };
        let port = port
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| port.parse::<u16>().ok())
            .flatten()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("invalid port \"{s}\": the port must be between 1 and 65535"))?;
        Ok(PortSpec { protocol, port })
    }

    fn from_config_int(v: i64) -> Result<Self, String> {
        Err(format!(
            "invalid port {v}: name the protocol, e.g. \"tcp/{v}\" or \"udp/{v}\""
        ))
    }
}

impl FromConfigStr for IpNet {
    const EXPECTING: &'static str = "a prefix such as \"203.0.113.0/28\"";

    /// Only the network address itself is accepted: `203.0.113.5/28` is far
    /// more likely a typo than a request for `203.0.113.0/28`.
    fn from_config_str(s: &str) -> Result<Self, String> {
        let net: IpNet = s.parse().map_err(|_| {
            format!("invalid prefix \"{s}\", expected CIDR form such as 203.0.113.0/28")
        })?;
        if net.trunc() != net {
            return Err(format!(
                "prefix {net} has host bits set, did you mean {}?",
                net.trunc()
            ));
        }
        Ok(net)
    }
}

/// A fully qualified DNS name: lower case, with the trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DnsName(pub(super) String);

impl FromConfigStr for DnsName {
    const EXPECTING: &'static str = "a DNS name such as \"svc.example.\"";

    fn from_config_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid DNS name \"{s}\": {why}");
        let name = s.to_ascii_lowercase();
        let bare = name.strip_suffix('.').unwrap_or(&name);
        if bare.is_empty() {
            return Err(bad("the root zone cannot be used"));
        }
        if bare.len() > 253 {
            return Err(bad("longer than 253 characters"));
        }
        for label in bare.split('.') {
            if label.is_empty() {
                return Err(bad("empty label"));
            }
            if label.len() > 63 {
                return Err(bad("a label is longer than 63 characters"));
            }
            let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
            if !label.bytes().all(ok) {
                return Err(bad("only letters, digits, '-' and '_' are allowed"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(bad("a label starts or ends with '-'"));
            }
        }
        Ok(DnsName(format!("{bare}.")))
    }
}

/// A service name: one DNS label, served as `NAME.ZONE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Label(pub(super) String);

impl FromConfigStr for Label {
    const EXPECTING: &'static str = "a service name such as \"web\"";

    fn from_config_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid service name \"{s}\": {why}");
        if s.is_empty() || s.len() > 63 {
            return Err(bad("it must be 1 to 63 characters long"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(bad(
                "it is a DNS label: only lower-case letters, digits and '-' are allowed",
            ));
        }
        if s.starts_with('-') || s.ends_with('-') {
            return Err(bad("it must not start or end with '-'"));
        }
        Ok(Label(s.to_owned()))
    }
}

/// A TSIG secret in base64, kept as written (BIND's key file form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Base64(pub(super) String);

impl FromConfigStr for Base64 {
    const EXPECTING: &'static str = "a base64 secret";

    fn from_config_str(s: &str) -> Result<Self, String> {
        match decode_base64(s) {
            Some(bytes) if !bytes.is_empty() => Ok(Base64(s.to_owned())),
            _ => Err("invalid key_secret: not valid base64 (as in a BIND key file)".into()),
        }
    }
}

/// Standard base64 with padding; `None` if `s` is not valid.
pub(super) fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let pad = bytes.iter().rev().take_while(|&&b| b == b'=').count();
    if pad > 2 {
        return None;
    }
    let data = bytes.get(..bytes.len() - pad)?;
    let mut out = Vec::with_capacity(data.len() / 4 * 3 + 2);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in data {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from(acc >> bits).ok()?);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// A TSIG algorithm name, lower case, without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TsigAlgorithm(pub(super) String);

impl FromConfigStr for TsigAlgorithm {
    const EXPECTING: &'static str = "a TSIG algorithm such as \"hmac-sha256\"";

    fn from_config_str(s: &str) -> Result<Self, String> {
        let name = s.to_ascii_lowercase();
        let name = name.strip_suffix('.').unwrap_or(&name);
        match name {
            // hmac-sha1 is not offered: the TSIG signer (hickory) signs with
            // the SHA-2 family only, and a key cutover cannot use should be
            // refused by `check`, not discovered at start.
            "hmac-sha256" | "hmac-sha384" | "hmac-sha512" => Ok(TsigAlgorithm(name.to_owned())),
            _ => Err(format!(
                "unsupported TSIG algorithm \"{s}\" (use hmac-sha256, hmac-sha384 or hmac-sha512)"
            )),
        }
    }
}

/// Trial division; callers bound `n` so this stays cheap.
pub(super) fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u64;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = |s: &str| parse_duration(s).ok();
        assert_eq!(ok("300s"), Some(Duration::from_secs(300)));
        assert_eq!(ok("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(ok("10m"), Some(Duration::from_secs(600)));
        assert_eq!(ok("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(ok("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(ok("0s"), Some(Duration::ZERO));
        for bad in [
            "",
            "30",
            "5x",
            "s",
            "1m30",
            "1.5s",
            " 5s",
            "-5s",
            "99999999999999999999h",
        ] {
            assert_eq!(ok(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn base64() {
        assert_eq!(decode_base64("aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(decode_base64("aGVsbG8h"), Some(b"hello!".to_vec()));
        assert_eq!(decode_base64("aGVsbA=="), Some(b"hell".to_vec()));
        for bad in ["aGVsbG8", "aGV=bG8=", "a===", "aGVs*G8="] {
            assert_eq!(decode_base64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn macs() {
        let ok = |s: &str| Mac::from_config_str(s).ok().map(|m| m.0);
        assert_eq!(ok("02:00:00:00:01:1F"), Some([2, 0, 0, 0, 1, 0x1f]));
        for bad in [
            "02:00:00:00:01",
            "02:00:00:00:01:11:22",
            "02-00-00-00-01-11",
            "02:00:00:00:01:+1",
            "01:00:5e:00:00:01",
        ] {
            assert_eq!(ok(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn primes() {
        let primes: Vec<u64> = (0..30).filter(|&n| is_prime(n)).collect();
        assert_eq!(primes, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(65537));
        assert!(!is_prime(65536));
        assert!(!is_prime(65535));
    }

    #[test]
    fn dns_names() {
        let ok = |s: &str| DnsName::from_config_str(s).ok().map(|n| n.0);
        assert_eq!(ok("SVC.Example"), Some("svc.example.".into()));
        assert_eq!(ok("svc.example."), Some("svc.example.".into()));
        for bad in [".", "", "a..b", "-a.b", "a b.c"] {
            assert_eq!(ok(bad), None, "{bad:?}");
        }
    }
}
