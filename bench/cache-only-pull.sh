#!/usr/bin/env bash
# A cached image (~64 MiB, 4 layers) pulled with skopeo from a Proxy master that
# proxies against the same master on its cache-only configuration, in one run.
#   bench/cache-only-pull.sh [--mb 64] [--layers 4] [--runs 5] [--rounds 2]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
exec .venv/bin/python bench/cache_only_pull.py "$@"
