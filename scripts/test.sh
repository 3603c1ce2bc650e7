#!/bin/sh
# Set up, then run the linters and every test (as root: the tests load BPF).
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh --test
.venv/bin/python -m ruff check runner tests bench scripts
.venv/bin/python -m pytest "$@"
