#!/usr/bin/env bash
# What a hook run costs, in numbers a shared machine's load does not move: for each
# binary given, the instructions executed (valgrind's callgrind: loader, libc and the
# binary together), the page faults (perf stat, median of 5 runs of 20) and the
# binary's relative relocations (readelf), for `hook list`, resolve-mode's beforeHelm
# (values converged: a no-op), and discover-masters on Synchronization contexts of 3,
# 100 and 5,000 full Nodes (the inputs of bench/hooks.sh). Wall times on a machine that
# others build on swing by tens of percent; these do not (instructions: exactly).
#   bench/startup.sh BINARY [BINARY...]      e.g. an older commit's build and this tree's
# Prints one Markdown table. Needs valgrind and perf (apt-get install valgrind
# linux-perf); a missing one is named, exit 1.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: bench/startup.sh BINARY [BINARY...]" >&2; exit 2; }
for b in "$@"; do
  [ -x "$b" ] || { echo "bench/startup.sh: $b is not an executable file; build it first" >&2; exit 2; }
done
for tool in valgrind perf readelf; do
  command -v "$tool" >/dev/null || { echo "bench/startup.sh: $tool is missing (apt-get install valgrind linux-perf binutils)" >&2; exit 1; }
done
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
python3 "$(dirname "$0")/inputs.py" "$W"
# run CONTEXT VALUES -- COMMAND...: COMMAND with the runner's environment
run() {
  local ctx=$1 values=$2; shift 3
  rm -f "$W"/out-*
  BINDING_CONTEXT_PATH="$W/$ctx" VALUES_PATH="$W/$values" CONFIG_VALUES_PATH="$W/config.json" \
  VALUES_JSON_PATCH_PATH="$W/out-v" CONFIG_VALUES_JSON_PATCH_PATH="$W/out-c" \
  KUBERNETES_PATCH_PATH="$W/out-k" METRICS_PATH="$W/out-m" "$@"
}
instructions() { # instructions CONTEXT VALUES BINARY ARGS...
  local ctx=$1 values=$2; shift 2
  run "$ctx" "$values" -- valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 >/dev/null \
    | awk '/refs:/ {gsub(",", "", $NF); print $NF}'
}
faults() { # faults CONTEXT VALUES BINARY ARGS...: median page faults of 5 × 20 runs
  local ctx=$1 values=$2 i; shift 2
  for i in 1 2 3 4 5; do
    run "$ctx" "$values" -- perf stat -x, -r 20 -e page-faults "$@" 2>&1 >/dev/null | awk -F, '/page-faults/ {print int($1)}'
  done | sort -n | sed -n 3p
}
idx() { "$1" hook list | awk -F' - ' -v n="$2" '$2 == n {print $1}'; }
echo "| binary | relative relocations | command | instructions | page faults |"
echo "|---|---|---|---|---|"
i=0
for given in "$@"; do
  # Each binary runs as .../bin-N/embedded-registry: the binary looks at the name it was
  # invoked under (another name is a hook's, and costs building the hooks), and the
  # loader's work depends on the path's length.
  i=$((i + 1)); mkdir "$W/bin-$i"; b="$W/bin-$i/embedded-registry"; cp "$given" "$b"
  relocs=$(readelf -d "$b" | awk '/RELACOUNT/ {print $NF}')
  dm=$(idx "$b" discover-masters); rm_=$(idx "$b" resolve-mode)
  while read -r label ctx values args; do
    # shellcheck disable=SC2086
    echo "| $given | ${relocs:-0} | $label | $(instructions "$ctx" "$values" "$b" $args) | $(faults "$ctx" "$values" "$b" $args) |"
  done <<EOF
hook-list bh.json converged.json hook list
resolve-mode,no-op bh.json converged.json hook run $rm_
discover-masters,3 sync-3.json values.json hook run $dm
discover-masters,100 sync-100.json values.json hook run $dm
discover-masters,5000 sync-5000.json values.json hook run $dm
EOF
done
