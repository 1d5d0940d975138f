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

# promtool, for the test that parses the Grafana dashboard's queries as PromQL. Debian ships it
# only inside the `prometheus` package, whose install starts a Prometheus server; so the package
# is downloaded and only its promtool extracted, into a private directory that scripts/test.sh
# puts on PATH. Without network this is skipped, and so is that one test.
tools="${STAGEHAND_TOOLS:-/var/tmp/stagehand-tools}"
if ! command -v promtool >/dev/null 2>&1 && [ ! -x "$tools/promtool" ]; then
    work="$(mktemp -d)"
    if (cd "$work" && apt-get download prometheus >/dev/null 2>&1) &&
        dpkg-deb -x "$work"/prometheus_*.deb "$work/root" &&
        mkdir -p "$tools" && cp "$work/root/usr/bin/promtool" "$tools/promtool"; then
        echo "setup: promtool extracted to $tools" >&2
    else
        echo "setup: promtool unavailable (no network?); the PromQL parse test will skip" >&2
    fi
    rm -rf "$work"
fi
