#!/usr/bin/env bash
# The demo command: installs what is missing, builds stagehand and runs `stagehand demo`
# (a private PostgreSQL, a simulated farm of ~200 hosts and stagehand booking it live).
# Extra arguments go to `stagehand demo` (see `stagehand demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
exec cargo run --release --bin stagehand -- demo "$@"
