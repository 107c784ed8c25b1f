#!/usr/bin/env bash
# Checks that cutover still builds, with the locked dependencies, on the
# oldest Rust that Cargo.toml's `rust-version` promises. The promise is
# only worth what this check shows: the lock file, not our own code, is
# what usually raises the minimum (in November 2026, `time` 0.3.55 and the
# `icu_*` 2.4 crates under hickory-proto's `idna` need 1.88).
#
#   scripts/check-msrv.sh            # installs that toolchain with rustup
#
# Not part of CI: it downloads a toolchain, and CI may only reach the
# package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
ver=$(sed -n 's/^rust-version = "\([0-9.]*\)"$/\1/p' Cargo.toml)
[[ -n $ver ]] || { echo "check-msrv: no rust-version in Cargo.toml" >&2; exit 2; }
command -v rustup >/dev/null || { echo "check-msrv: rustup is needed" >&2; exit 2; }
rustup toolchain install "$ver" --profile minimal
# A target directory of its own: artefacts of two compilers do not mix.
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/msrv} \
    cargo +"$ver" check --locked --all-features --all-targets
echo "check-msrv: builds with Rust $ver"
