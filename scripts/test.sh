#!/usr/bin/env bash
# The test command: installs what is missing, then runs every test (unit and integration)
# against a real, private PostgreSQL cluster that the tests start and remove themselves.
#
# Everything is built in release mode so the tests, the demo and the benchmarks share one
# build of the vendored gRPC core (grpcio-sys takes ~15 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# promtool as scripts/setup.sh extracts it (see there).
export PATH="$PATH:${STAGEHAND_TOOLS:-/var/tmp/stagehand-tools}"
exec cargo test --release --all-targets "$@"
