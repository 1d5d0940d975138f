#!/usr/bin/env bash
# Installs what building and running stagehand needs on a fresh Debian machine:
# cmake and a C++ compiler for grpcio-sys, and the PostgreSQL server binaries for the private
# database of the tests, the demo and the benchmarks, and Chromium for the status page test.
# Does nothing when all are present.
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# Headless Chromium for the status page test (tests/it/page.rs).
command -v chromium >/dev/null 2>&1 || need+=(chromium)

if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}" >&2
    if [ "$(id -u)" -ne 0 ]; then
        SUDO=sudo
    else
        SUDO=
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo (Rust) is required: https://rustup.rs" >&2
    exit 1
fi
