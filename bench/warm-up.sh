#!/usr/bin/env bash
# Warm-up of a release (default 300 images sharing layers, ~1 GiB, 50 ms added round
# trip to the upstream) into an empty Proxy master: `embedded-registry warm --once`
# against a `skopeo copy` loop of the same images and the ideal, in one run.
#   bench/warm-up.sh [--images 300] [--total-mb 1024] [--delay-ms 50] [--concurrency 4]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
exec .venv/bin/python bench/warm_up.py "$@"
