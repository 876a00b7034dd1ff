#!/usr/bin/env bash
# Upstream check of 300 images behind 50 ms of added round-trip latency (a delaying TCP
# proxy in front of a real docker-registry), against the ideal and a skopeo loop.
#   bench/upstream-check.sh [--images N] [--rtt-ms MS] [--concurrency 8,16,32]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
exec .venv/bin/python bench/upstream_check.py "$@"
