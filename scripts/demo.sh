#!/bin/sh
# Set up, then trace TCP RTT for 5 seconds and print the histogram.
# On an idle machine there is little TCP to see, so this makes its own
# loopback traffic while it traces, and says so.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
echo "demo: tracing for 5 s while making loopback TCP traffic of its own" >&2
.venv/bin/tcprtt -d 5 -e "$@" &
tracer=$!
sleep 1
.venv/bin/python scripts/loopback_traffic.py --seconds 3
wait "$tracer"
echo "demo: done; the tcprtt command is now on the PATH: sudo tcprtt --help" >&2
