#!/bin/sh
# Install what tcprtt needs on Debian or Ubuntu, into the system and .venv/.
# Usage: scripts/setup.sh [--test]   (--test adds what the tests and benchmarks use)
set -eu
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

PACKAGES="libbpf1 python3 python3-venv python3-pip iproute2 util-linux"
if [ "${1:-}" = "--test" ]; then
    PACKAGES="$PACKAGES clang llvm libbpf-dev bpftool make iperf3 docker-registry prometheus bpftrace"
fi

missing=""
for p in $PACKAGES; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
extra=""
[ "${1:-}" = "--test" ] && extra="[test]"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".$extra"
