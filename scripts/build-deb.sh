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
# BUILD_TIMEOUT seconds for `cargo deb` and its release build (default 3600).
set -euo pipefail

cd "$(dirname "$0")/.."
CARGO_DEB_VERSION=${CARGO_DEB_VERSION:-3.8.0}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-3600}
log() { echo "build-deb: $*" >&2; }

command -v cargo >/dev/null || { log "cargo not found"; exit 1; }
command -v dpkg-shlibdeps >/dev/null || {
	log "dpkg-shlibdeps missing: cargo-deb needs it for Depends: \$auto (apt-get install dpkg-dev;"
	log "scripts/install-deps.sh installs it)"
	exit 1
}

if ! cargo deb --version >/dev/null 2>&1; then
	log "installing cargo-deb $CARGO_DEB_VERSION"
	timeout 1800 cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION" >&2
fi
log "$(cargo deb --version 2>&1 | head -1)"

# cargo-deb runs the release build (only the binaries named in the assets:
# cutover) and prints the path of the .deb on stdout.
log "cargo deb --locked (release build; minutes on a busy machine)"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
timeout -k 10 "$BUILD_TIMEOUT" cargo deb --locked >"$out" || { cat "$out" >&2; exit 1; }
deb=$(grep -E '\.deb$' "$out" | tail -1)
[[ -n "$deb" && -f "$deb" ]] || { cat "$out" >&2; log "cargo deb printed no .deb path"; exit 1; }

# The packaged example config must be valid as installed.
./target/release/cutover check --config conf/cutover.toml >&2 ||
	{ log "conf/cutover.toml (packaged as /etc/cutover/cutover.toml) does not pass cutover check"; exit 1; }
log "contents of $deb:"
dpkg-deb --info "$deb" >&2
dpkg-deb --contents "$deb" >&2
echo "$deb"
