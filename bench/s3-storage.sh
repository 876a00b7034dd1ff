#!/usr/bin/env bash
# Push and pull of one release (default 12 images sharing layers, ~1 GiB of random
# layers) through one master registry: Fs against S3 on Garage with one node and with
# three, in one run, ratios against Fs. S3_BENCH_MB=128 for a quick run.
#   bench/s3-storage.sh [--total-mb 1024] [--images 12]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
exec .venv/bin/python bench/s3_storage.py "$@"
