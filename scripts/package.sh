#!/usr/bin/env bash
# Builds the Debian package: target/debian/stagehand_<version>_amd64.deb (under
# $CARGO_TARGET_DIR when set). The binary is the production build (`--no-default-features`:
# run, check-config and migrate, no simulator), stripped; the package's layout and maintainer
# scripts are in Cargo.toml's [package.metadata.deb] and pkg/debian/. Installs cargo-deb
# when it is missing (about 3 minutes on 2 cores, once per machine). Extra arguments go to
# `cargo deb` (e.g. --fast).
#
# The production build and the test build share every compiled dependency, gRPC's C core
# included: only the stagehand crate itself is compiled once more for the other features.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if ! cargo deb --version >/dev/null 2>&1; then
    echo "package: installing cargo-deb" >&2
    cargo install cargo-deb --locked
fi
# --strip: the release profile keeps line tables for backtraces (debug = 1), which cargo-deb
# would otherwise ship: ~200 MB instead of ~15.
cargo deb --strip "$@"
