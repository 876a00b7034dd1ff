#!/usr/bin/env bash
# Per-event cost of the hook binary, measured against spawning /bin/true in the same
# run (hyperfine). Prints a Markdown table of mean times and ratios to /bin/true.
#   bench/hooks.sh [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=300
[ "${1:-}" = "--runs" ] && RUNS="$2"
command -v hyperfine >/dev/null || { apt-get install -y -qq hyperfine >/dev/null 2>&1 || { echo "bench: install hyperfine (apt-get install hyperfine)" >&2; exit 1; }; }
cargo build --release --quiet
BIN="$PWD/target/release/embedded-registry"
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT

# Inputs: a beforeHelm run of resolve-mode (a small handler: the per-run floor of the
# runtime), and discover-masters on Synchronization contexts of N full Node objects.
echo '[{"binding":"beforeHelm"}]' > "$W/bh.json"
echo '{"global":{},"embeddedRegistry":{"mode":"Direct","internal":{}}}' > "$W/values.json"
echo '{"global":{},"embeddedRegistry":{"mode":"Direct","internal":{"mode":"Direct","highAvailability":false}}}' > "$W/converged.json"
echo '{"embeddedRegistry":{}}' > "$W/config.json"
python3 - "$W" <<'PY'
import json, sys
w = sys.argv[1]
for n in (3, 100, 5000):
    nodes = []
    for i in range(n):
        nodes.append({"object": {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": f"node-{i}", "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/hostname": f"node-{i}"},
                         "annotations": {"node.alpha.kubernetes.io/ttl": "0"}, "uid": f"uid-{i}"},
            "status": {"addresses": [{"type": "InternalIP", "address": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"},
                                     {"type": "Hostname", "address": f"node-{i}"}],
                       "capacity": {"cpu": "4", "memory": "16Gi"}, "nodeInfo": {"kubeletVersion": "v1.30.1"}}}})
    ctx = [{"binding": "main", "type": "Group", "groupName": "main", "snapshots": {"masters": nodes, "legacy_masters": []}}]
    json.dump(ctx, open(f"{w}/sync-{n}.json", "w"))
PY
# One hyperfine run per input, each with /bin/true measured beside it: ratios compare
# numbers taken in the same run. The runner's variables are exported, as the runner does.
bench() { # bench LABEL CONTEXT_FILE VALUES_FILE COMMAND...
  local label=$1 ctx=$2 values=$3; shift 3
  rm -f "$W"/out-*
  BINDING_CONTEXT_PATH="$W/$ctx" VALUES_PATH="$W/$values" CONFIG_VALUES_PATH="$W/config.json" \
  VALUES_JSON_PATCH_PATH="$W/out-v" CONFIG_VALUES_JSON_PATCH_PATH="$W/out-c" \
  KUBERNETES_PATCH_PATH="$W/out-k" METRICS_PATH="$W/out-m" \
    hyperfine -N --runs "$RUNS" --warmup 20 --export-json "$W/r-$label.json" "/bin/true" "$@" >/dev/null 2>&1
}
bench base bh.json converged.json "$BIN hook list" "$BIN hook config" "$BIN hook run 1"
bench patch bh.json values.json "$BIN hook run 1"
for n in 3 100 5000; do bench "sync-$n" "sync-$n.json" values.json "$BIN hook run 0"; done
python3 - "$W" "$BIN" <<'PY'
import json, sys
w, binary = sys.argv[1], sys.argv[2]
names = {("base", f"{binary} hook list"): "hook list", ("base", f"{binary} hook config"): "hook config",
         ("base", f"{binary} hook run 1"): "hook run: resolve-mode, beforeHelm, values already converged (no-op)",
         ("patch", f"{binary} hook run 1"): "hook run: resolve-mode, beforeHelm, emits a values patch"}
print("| command | mean | σ | ratio to /bin/true (same run) |")
print("|---|---|---|---|")
for label in ["base", "patch", "sync-3", "sync-100", "sync-5000"]:
    r = json.load(open(f"{w}/r-{label}.json"))["results"]
    floor = r[0]["mean"]
    if label == "base":
        print(f"| /bin/true | {floor*1e3:.2f} ms | {r[0]['stddev']*1e3:.2f} ms | 1.00x |")
    for x in r[1:]:
        name = names.get((label, x["command"])) or f"hook run: discover-masters, Synchronization of {label[5:]} full Nodes"
        print(f"| {name} | {x['mean']*1e3:.2f} ms | {x['stddev']*1e3:.2f} ms | {x['mean']/floor:.2f}x |")
PY
echo
echo "binary: $(stat -c %s "$BIN") bytes; machine: $(nproc) cores, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); runs: $RUNS each"
