#!/usr/bin/env bash
# Cost of one registry-switch run (beforeHelm, as addon-operator runs it) against the
# size of the Node snapshot: 3 and 5,000 Nodes, each reduced by the hook's own jqFilter
# (run here by the real jq on full Node objects, so the snapshot is what the runner
# would hand over), a third of them acknowledging the current configuration, some
# NotReady. Prints a Markdown table: mean and sd per run (hyperfine), the ratio to the
# 3-Node run, the filtered snapshot's size per Node, and the hook's peak RSS.
#   bench/node-acks.sh [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=50
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS="$2"; shift 2 ;;
    *) echo "usage: bench/node-acks.sh [--runs N]" >&2; exit 2 ;;
  esac
done
for c in hyperfine jq /usr/bin/time; do
  command -v "$c" >/dev/null || [ -x "$c" ] || { echo "bench: install ${c##*/} (apt-get install ${c##*/})" >&2; exit 1; }
done
cargo build --release --quiet
BIN="$PWD/target/release/embedded-registry"
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
HOOK=$("$BIN" hook list | awk -F' - ' '$2 == "registry-switch" {print $1}')
FILTER=$("$BIN" hook config | jq -r '[.. | objects | select(.name? == "nodes" and .kind? == "Node") | .jqFilter] | first // empty')
[ -n "$FILTER" ] || { echo "bench: the registry-switch hook has no nodes binding" >&2; exit 1; }
python3 - "$W" <<'PY'
import json, sys
w = sys.argv[1]
def node(i):
    ann = {"node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true"}
    if i % 3 == 0:
        ann["embedded-registry.deckhouse.io/mirror-config"] = "HASH"
        ann["embedded-registry.deckhouse.io/containerd"] = "registry.d"
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": f"node-{i}", "uid": f"uid-{i}", "annotations": ann,
                         "labels": {"kubernetes.io/hostname": f"node-{i}", "node.deckhouse.io/group": "worker",
                                    "node.deckhouse.io/containerd-config-registry": "default"}},
            "status": {"addresses": [{"type": "InternalIP", "address": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"}],
                       "capacity": {"cpu": "4", "memory": "16Gi"}, "nodeInfo": {"kubeletVersion": "v1.30.1"},
                       "conditions": [{"type": "MemoryPressure", "status": "False"},
                                      {"type": "Ready", "status": "False" if i % 50 == 7 else "True",
                                       "lastHeartbeatTime": "2026-01-01T00:00:00Z"}]}}
for n in (3, 5000):
    json.dump([node(i) for i in range(n)], open(f"{w}/nodes-{n}.json", "w"))
PY
b64() { printf '%s' "$1" | base64 -w0; }
for n in 3 5000; do
  jq -c "map([$FILTER] | .[0])" "$W/nodes-$n.json" > "$W/filtered-$n.json"
  jq -c --slurpfile nodes "$W/filtered-$n.json" \
    --arg addr "$(b64 registry.example.com)" --arg path "$(b64 /deckhouse/ee)" \
    '[{"binding": "beforeHelm", "snapshots": {
        "secrets": [{"filterResult": {"name": "deckhouse-registry", "data": {"address": $addr, "path": $path}}}],
        "node_status": [], "deckhouse": [],
        "nodes": [$nodes[0][] | {"filterResult": .}]}}]' -n > "$W/ctx-$n.json"
done
echo '{"global":{},"embeddedRegistry":{"mode":"Direct","internal":{"pki":{"caBundle":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----","httpSecret":"k"}}}}' > "$W/values.json"
echo '{"embeddedRegistry":{}}' > "$W/config.json"
run() { # run N: one hook run on the N-Node context
  BINDING_CONTEXT_PATH="$W/ctx-$1.json" VALUES_PATH="$W/values.json" CONFIG_VALUES_PATH="$W/config.json" \
  VALUES_JSON_PATCH_PATH="$W/v-$1" CONFIG_VALUES_JSON_PATCH_PATH="$W/c-$1" \
  KUBERNETES_PATCH_PATH="$W/k-$1" METRICS_PATH="$W/m-$1" "$BIN" hook run "$HOOK" 2>"$W/err-$1"
}
export -f run; export W BIN HOOK
for n in 3 5000; do
  : > "$W/m-$n"; : > "$W/k-$n"; : > "$W/v-$n"
  run "$n" || { cat "$W/err-$n" >&2; exit 1; }
  # The run counted the nodes: a wrong snapshot would show here, not as a fast time.
  total=$(jq -s -r 'map(select(.name == "d8_embedded_registry_nodes" and .labels.state == "total")) | last | .value' "$W/m-$n")
  [ "${total%.*}" = "$n" ] || { echo "bench: the $n-Node run counted $total nodes" >&2; exit 1; }
done
hyperfine -N --runs "$RUNS" --warmup 3 --export-json "$W/h.json" \
  -n 3 "bash -c 'run 3'" -n 5000 "bash -c 'run 5000'" >/dev/null
rss() { /usr/bin/time -f %M bash -c "run $1" 2>&1 >/dev/null | tail -1; }
echo "| Nodes | mean | sd | vs 3 Nodes | filtered snapshot per Node | peak RSS |"
echo "|---|---|---|---|---|---|"
jq -r --arg r3 "$(rss 3)" --arg r5 "$(rss 5000)" \
   --arg s3 "$(( $(stat -c %s "$W/filtered-3.json") / 3 ))" --arg s5 "$(( $(stat -c %s "$W/filtered-5000.json") / 5000 ))" '
  .results as $r | ($r[0].mean) as $base | $r[] |
  "| \(.command) | \(.mean * 1000 | . * 10 | round / 10) ms | \(.stddev * 1000 | . * 10 | round / 10) ms | \(.mean / $base | . * 10 | round / 10)× | \(if .command == "3" then $s3 else $s5 end) B | \(if .command == "3" then $r3 else $r5 end) KiB |"' "$W/h.json"
echo
echo "Machine: $(nproc) cores, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')."
