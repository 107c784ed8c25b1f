//! The Debian package, end to end: builds it with `scripts/build-deb.sh`
//! (cargo-deb, a release build), installs it with `dpkg -i`, checks that
//! installing started and enabled nothing, runs `cutover check` on the
//! installed example configuration, checks the unit and the state
//! directory, and purges the package again.
//!
//! Needs root (dpkg) and `CUTOVER_DEB_TEST=1` (the release build takes
//! minutes, so CI asks for it explicitly); skipped with a message otherwise.
//! It refuses to run when a `cutover` package is already installed, so it
//! never removes an installation it did not make.
//!
//!     sudo CUTOVER_DEB_TEST=1 cargo test --test deb_package -- --nocapture

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BUILD_TIMEOUT_S: &str = "3600";
const DPKG_TIMEOUT_S: &str = "300";
const UNIT_PATHS: [&str; 2] = [
    "/usr/lib/systemd/system/cutover.service",
    "/lib/systemd/system/cutover.service",
];

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn skip() -> bool {
    if std::env::var("CUTOVER_DEB_TEST").as_deref() != Ok("1") {
        eprintln!(
            "skipping deb_package: set CUTOVER_DEB_TEST=1 to build the release package \
             and install it with dpkg (slow; needs root)"
        );
        return true;
    }
    if !is_root() {
        eprintln!("skipping deb_package: needs root (dpkg -i / dpkg --purge)");
        return true;
    }
    if Command::new("dpkg").arg("--version").output().is_err() {
        eprintln!("skipping deb_package: dpkg not found (not a Debian system)");
        return true;
    }
    false
}

/// Runs `args` under coreutils `timeout` (which kills the whole process
/// group when the time is up), from the crate root.
fn run(secs: &str, args: &[&str]) -> Output {
    let out = Command::new("timeout")
        .args(["-k", "10", secs])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
    if matches!(out.status.code(), Some(124 | 137)) {
        panic!("{args:?} timed out after {secs} s");
    }
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn package_installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "cutover"])
        .output()
        .is_ok_and(|o| o.status.success() && text(&o.stdout).contains("install ok installed"))
}

/// Processes running /usr/bin/cutover (a service started by the install).
fn cutover_processes() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|p| p == Path::new("/usr/bin/cutover"))
        })
        .collect()
}

/// Purges the package when the test ends, passed or not.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let out = run(DPKG_TIMEOUT_S, &["dpkg", "--purge", "cutover"]);
        if !out.status.success() {
            eprintln!(
                "dpkg --purge cutover failed: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
    }
}

#[test]
fn deb_installs_checks_and_purges() {
    if skip() {
        return;
    }
    assert!(
        !package_installed(),
        "a cutover package is already installed here; this test installs and purges its own \
         and will not touch an existing installation (dpkg --purge cutover first)"
    );

    // 1. Build.
    let out = run(BUILD_TIMEOUT_S, &["scripts/build-deb.sh"]);
    assert!(
        out.status.success(),
        "scripts/build-deb.sh failed ({}):\n{}",
        out.status,
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    let deb = stdout
        .lines()
        .last()
        .map(str::trim)
        .unwrap_or_else(|| panic!("build-deb.sh printed no path"));
    let mut deb = PathBuf::from(deb);
    if deb.is_relative() {
        deb = Path::new(env!("CARGO_MANIFEST_DIR")).join(deb);
    }
    assert!(
        deb.is_file() && deb.extension().is_some_and(|e| e == "deb"),
        "not a .deb: {}",
        deb.display()
    );
    let deb = deb.to_str().expect("utf-8 path").to_owned();

    let fields = run(
        DPKG_TIMEOUT_S,
        &["dpkg-deb", "-f", &deb, "Package", "Depends"],
    );
    let fields = text(&fields.stdout);
    assert!(fields.contains("Package: cutover"), "{fields}");
    assert!(
        fields.contains("libc6"),
        "Depends should name the shared libraries ($auto): {fields}"
    );

    // 2. Install. Nothing may be started or enabled.
    let before = cutover_processes();
    let existed: Vec<&str> = [
        "/usr/bin/cutover",
        "/etc/cutover/cutover.toml",
        "/var/lib/cutover",
        UNIT_PATHS[0],
        UNIT_PATHS[1],
    ]
    .into_iter()
    .filter(|p| Path::new(p).exists())
    .collect();
    let purge = Purge;
    let out = run(DPKG_TIMEOUT_S, &["dpkg", "-i", &deb]);
    assert!(
        out.status.success(),
        "dpkg -i failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        package_installed(),
        "dpkg -i succeeded but the package is not installed"
    );
    let started: Vec<u32> = cutover_processes()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert!(
        started.is_empty(),
        "installing started cutover: pids {started:?}"
    );
    assert!(
        !Path::new("/etc/systemd/system/multi-user.target.wants/cutover.service").exists(),
        "installing enabled cutover.service"
    );

    // 3. The installed example configuration is valid.
    let out = run(
        "60",
        &[
            "/usr/bin/cutover",
            "check",
            "--config",
            "/etc/cutover/cutover.toml",
        ],
    );
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "cutover check on the installed config failed ({}):\n{stdout}{}",
        out.status,
        text(&out.stderr)
    );
    assert!(
        stdout.contains("/etc/cutover/cutover.toml: ok"),
        "cutover check printed: {stdout}"
    );

    // 4. The unit and the state directory.
    let unit = UNIT_PATHS
        .iter()
        .find(|p| Path::new(p).is_file())
        .unwrap_or_else(|| panic!("no unit file at {UNIT_PATHS:?}"));
    let unit_text = std::fs::read_to_string(unit).expect("read unit");
    assert!(
        unit_text.contains("ExecStart=/usr/bin/cutover run --config /etc/cutover/cutover.toml"),
        "{unit}: unexpected ExecStart"
    );
    assert!(
        unit_text.contains("StateDirectory=cutover"),
        "{unit}: no StateDirectory"
    );
    assert!(
        Path::new("/var/lib/cutover").is_dir(),
        "/var/lib/cutover missing"
    );
    let conffiles = run(
        DPKG_TIMEOUT_S,
        &["dpkg-query", "-W", "-f=${Conffiles}", "cutover"],
    );
    assert!(
        text(&conffiles.stdout).contains("/etc/cutover/cutover.toml"),
        "/etc/cutover/cutover.toml is not a conffile: {}",
        text(&conffiles.stdout)
    );

    // 5. Purge (the guard would do it too) and check nothing is left.
    drop(purge);
    assert!(!package_installed(), "still installed after dpkg --purge");
    for p in [
        "/usr/bin/cutover",
        "/etc/cutover/cutover.toml",
        "/var/lib/cutover",
        UNIT_PATHS[0],
        UNIT_PATHS[1],
    ] {
        if !existed.contains(&p) {
            assert!(!Path::new(p).exists(), "{p} left behind by dpkg --purge");
        }
    }
}
