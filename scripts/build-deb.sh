#!/usr/bin/env bash
# Builds the cutover Debian package with cargo-deb and prints the path of the
# .deb on the last line of stdout (everything else goes to stderr).
#
#   scripts/build-deb.sh            # release build + target/debian/cutover_*.deb
#
# Installs cargo-deb (`cargo install cargo-deb --locked`) when it is missing.
# The package: /usr/bin/cutover, /usr/lib/systemd/system/cutover.service (not
# enabled, not started), /etc/cutover/cutover.toml (a conffile) and
# /var/lib/cutover; see [package.metadata.deb] in Cargo.toml.
#
# Environment: CARGO_DEB_VERSION (default 3.8.0, which builds with Rust 1.95),
# BUILD_TIMEOUT seconds for the release build (default 3600).
set -euo pipefail

cd "$(dirname "$0")/.."
CARGO_DEB_VERSION=${CARGO_DEB_VERSION:-3.8.0}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-3600}
log() { echo "build-deb: $*" >&2; }

command -v cargo >/dev/null || { log "cargo not found"; exit 1; }
command -v dpkg-shlibdeps >/dev/null ||
	log "note: dpkg-shlibdeps (dpkg-dev) missing; cargo-deb falls back to its own ldd-based \$auto dependencies"

if ! cargo deb --version >/dev/null 2>&1; then
	log "installing cargo-deb $CARGO_DEB_VERSION"
	timeout 1800 cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION" >&2
fi
log "$(cargo deb --version 2>&1 | head -1)"

# The packaged example config must be valid as installed.
log "building (release; minutes on a busy machine)"
timeout -k 10 "$BUILD_TIMEOUT" cargo build --release --locked --bin cutover >&2
./target/release/cutover check --config conf/cutover.toml >&2

# --no-build: the binary was just built; cargo-deb would otherwise build
# every binary of the crate (the bench and test helpers too).
timeout -k 10 600 cargo deb --locked --no-build >"${TMPDIR:-/tmp}/build-deb.$$" 2>&2 || {
	cat "${TMPDIR:-/tmp}/build-deb.$$" >&2
	rm -f "${TMPDIR:-/tmp}/build-deb.$$"
	exit 1
}
deb=$(grep -E '\.deb$' "${TMPDIR:-/tmp}/build-deb.$$" | tail -1)
rm -f "${TMPDIR:-/tmp}/build-deb.$$"
[[ -n "$deb" && -f "$deb" ]] || { log "cargo deb printed no .deb path"; exit 1; }
log "contents:"
dpkg-deb --contents "$deb" >&2
echo "$deb"
