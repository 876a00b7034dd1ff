#!/usr/bin/env bash
# Per-event cost of the hook binary against its peers, measured in one run:
#   - hook list, hook config, resolve-mode (no-op and patching), and discover-masters on
#     Synchronization contexts of 3, 100 and 5,000 full Nodes, each hyperfine run with
#     /bin/true (the floor), the same logic as a shell hook with jq and as a Python hook
#     with the PyPI `deckhouse` library (bench/peers/) measured beside it;
#   - peak RSS on the 5,000-Node context, as a multiple of the input size;
#   - the converge of a 3-master Proxy config, cold (empty state) and warm;
#   - binary size and a clean release build's time.
# Before timing, the peers' outputs are checked equal to the Rust hook's on every input.
# Prints Markdown tables and the machine.
#   bench/hooks.sh [--runs N] [--no-build-time] [--bin PATH [--module-dir DIR]]
# --bin times another build of the binary (e.g. an older commit's) instead of this tree's:
# the peers are still checked against this tree's binary, and PATH is checked to give the
# same output as it on the timed inputs. --module-dir: the chart the converge renders
# (default: this tree; give the binary's own checkout with --bin, or a clean export of
# this tree when it holds large untracked files such as another target directory).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=200
BUILD_TIME=1
OTHER=""
MODULE_DIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS="$2"; shift 2 ;;
    --no-build-time) BUILD_TIME=0; shift ;;
    --bin) OTHER=$(realpath "$2"); shift 2 ;;
    --module-dir) MODULE_DIR=$(realpath "$2"); shift 2 ;;
    *) echo "usage: bench/hooks.sh [--runs N] [--no-build-time] [--bin PATH [--module-dir DIR]]" >&2; exit 2 ;;
  esac
done
need() { # need COMMAND DEBIAN-PACKAGE
  command -v "$1" >/dev/null || [ -x "$1" ] || apt-get install -y -qq "$2" >/dev/null 2>&1 \
    || { echo "bench: install $2 (apt-get install $2)" >&2; exit 1; }
}
need hyperfine hyperfine
need jq jq
need /usr/bin/time time
# The Python peer's library lives in its own venv, not in the project's requirements.
if ! bench/.venv/bin/python -c "import deckhouse" 2>/dev/null; then
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install -q --disable-pip-version-check deckhouse
fi
[ -x .venv/bin/python ] || { echo "bench: run scripts/setup first (the converge needs .venv)" >&2; exit 1; }
[ -z "$OTHER" ] || [ -x "$OTHER" ] || { echo "bench: --bin $OTHER is not an executable file; build it first" >&2; exit 2; }
[ -z "$MODULE_DIR" ] || [ -f "$MODULE_DIR/Chart.yaml" ] || { echo "bench: --module-dir $MODULE_DIR has no Chart.yaml; give a module checkout" >&2; exit 2; }
cargo build --release --quiet
TREE_BIN="$PWD/target/release/embedded-registry"
BIN=${OTHER:-$TREE_BIN}
MODULE_DIR=${MODULE_DIR:-$PWD}
SH="bash $PWD/bench/peers/discover-masters.sh"
PY="$PWD/bench/.venv/bin/python $PWD/bench/peers/discover_masters.py"
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
idx() { "${2:-$BIN}" hook list | awk -F' - ' -v n="$1" '$2 == n {print $1}'; }
DM=$(idx discover-masters)
RM=$(idx resolve-mode)
TREE_DM=$(idx discover-masters "$TREE_BIN")

# Inputs (bench/inputs.py): a beforeHelm run of resolve-mode (a small handler: the
# per-run floor of the runtime), and discover-masters on Synchronization contexts of N
# full Node objects (Group context, as addon-operator delivers a batch hook's bindings);
# "edge.json" is used only to check that the peers implement the same logic.
python3 bench/inputs.py "$W"

run_hook() { # run_hook DIR CONTEXT VALUES COMMAND...: one run, as the runner does
  local dir=$1 ctx=$2 values=$3; shift 3
  mkdir -p "$dir"
  BINDING_CONTEXT_PATH="$W/$ctx" VALUES_PATH="$W/$values" CONFIG_VALUES_PATH="$W/config.json" \
  VALUES_JSON_PATCH_PATH="$dir/v" CONFIG_VALUES_JSON_PATCH_PATH="$dir/c" \
  KUBERNETES_PATCH_PATH="$dir/k" METRICS_PATH="$dir/m" "$@" 2>"$dir/stderr"
}
# Same output: the values after applying each patch strictly, the metric operations and
# the warnings (without their time). A binary given with --bin is checked on the timed
# inputs only: an older build may predate the checks the edge input covers.
for ctx in edge.json sync-3.json sync-100.json sync-5000.json; do
  peers="rust shell python"
  [ -z "$OTHER" ] || [ "$ctx" = edge.json ] || peers="$peers other"
  for peer in $peers; do
    case $peer in rust) cmd="$TREE_BIN hook run $TREE_DM" ;; other) cmd="$BIN hook run $DM" ;; shell) cmd=$SH ;; python) cmd=$PY ;; esac
    # shellcheck disable=SC2086
    run_hook "$W/check-$peer" "$ctx" values.json $cmd || { echo "bench: $peer peer failed on $ctx" >&2; cat "$W/check-$peer/stderr" >&2; exit 1; }
  done
  python3 - "$W" "$ctx" $peers <<'PY'
import json, sys
w, ctx, others = sys.argv[1], sys.argv[2], sys.argv[4:]
def outcome(peer):
    d = f"{w}/check-{peer}"
    values = json.load(open(f"{w}/values.json"))
    text = open(f"{d}/v").read() if __import__("os").path.exists(f"{d}/v") else ""
    ops = []
    for doc in text.split("\n"):
        if doc.strip():
            v = json.loads(doc)
            ops += v if isinstance(v, list) else [v]
    for op in ops:  # strict add/remove, as the runner applies them
        *parents, last = op["path"].lstrip("/").split("/")
        target = values
        for p in parents:
            target = target[p]
        if op["op"] == "add":
            target[last] = op["value"]
        elif op["op"] == "remove":
            del target[last]
        else:
            raise SystemExit(f"{peer}: operation {op['op']} is not allowed")
    metrics = [json.loads(l) for l in open(f"{d}/m") if l.strip()]
    for m in metrics:
        if "value" in m:
            m["value"] = float(m["value"])
    warnings = [{k: v for k, v in json.loads(l).items() if k != "time"} for l in open(f"{d}/stderr") if l.startswith("{")]
    return values, metrics, warnings
rust = outcome("rust")
for peer in others:
    if outcome(peer) != rust:
        raise SystemExit(f"bench: the {peer} peer disagrees with the Rust hook on {ctx}:\n{outcome(peer)}\n{rust}")
PY
  rm -rf "$W"/check-*
done
echo "peers agree with the Rust hook on every input" >&2

# One hyperfine run per input, /bin/true measured beside the commands: ratios compare
# numbers taken in the same run. Output files are removed before each timed run (the
# Python library appends to them).
bench() { # bench LABEL CONTEXT_FILE VALUES_FILE RUNS COMMAND...
  local label=$1 ctx=$2 values=$3 runs=$4; shift 4
  BINDING_CONTEXT_PATH="$W/$ctx" VALUES_PATH="$W/$values" CONFIG_VALUES_PATH="$W/config.json" \
  VALUES_JSON_PATCH_PATH="$W/out-v" CONFIG_VALUES_JSON_PATCH_PATH="$W/out-c" \
  KUBERNETES_PATCH_PATH="$W/out-k" METRICS_PATH="$W/out-m" \
    hyperfine -N --runs "$runs" --warmup 5 --prepare "rm -f $W/out-v $W/out-c $W/out-k $W/out-m" \
      --export-json "$W/r-$label.json" "/bin/true" "$@" >/dev/null 2>&1
}
echo "timing (runs: $RUNS; 5,000 Nodes: $((RUNS / 10 > 10 ? RUNS / 10 : 10)))" >&2
bench base bh.json converged.json "$RUNS" "$BIN hook list" "$BIN hook config" "$BIN hook run $RM"
bench patch bh.json values.json "$RUNS" "$BIN hook run $RM"
for n in 3 100 5000; do
  runs=$RUNS; [ "$n" = 5000 ] && runs=$((RUNS / 10 > 10 ? RUNS / 10 : 10))
  bench "sync-$n" "sync-$n.json" values.json "$runs" "$BIN hook run $DM" "$SH" "$PY"
done

# Peak RSS on the 5,000-Node context (the largest of 5 runs; for the shell hook, the
# largest process of the tree: bash or jq).
rss() { # rss COMMAND...: KiB
  local max=0 r
  for _ in 1 2 3 4 5; do
    rm -f "$W"/out-*
    r=$(BINDING_CONTEXT_PATH="$W/sync-5000.json" VALUES_PATH="$W/values.json" CONFIG_VALUES_PATH="$W/config.json" \
      VALUES_JSON_PATCH_PATH="$W/out-v" CONFIG_VALUES_JSON_PATCH_PATH="$W/out-c" \
      KUBERNETES_PATCH_PATH="$W/out-k" METRICS_PATH="$W/out-m" \
      /usr/bin/time -f "%M" "$@" 2>&1 >/dev/null | tail -1)
    [ "$r" -gt "$max" ] && max=$r
  done
  echo "$max"
}
# shellcheck disable=SC2086
{ echo "rust $(rss $BIN hook run $DM)"; echo "shell $(rss $SH)"; echo "python $(rss $PY)"; echo "true $(rss /bin/true)"; } > "$W/rss"

# The converge of the 3-master Proxy example: cold (empty state directory) and warm
# (converged state: nothing changes).
CONVERGE="$BIN converge --module-config examples/moduleconfig-proxy.yaml --nodes examples/nodes-3-masters.yaml --state $W/state --module-dir $MODULE_DIR --python $PWD/.venv/bin/python"
$CONVERGE >/dev/null
hyperfine -N --runs 10 --warmup 1 --export-json "$W/r-warm.json" "$CONVERGE" >/dev/null 2>&1
hyperfine -N --runs 10 --prepare "rm -rf $W/state" --export-json "$W/r-cold.json" "$CONVERGE" >/dev/null 2>&1

# Binary size, and a clean release build in a separate target directory.
BUILD_S=""
if [ "$BUILD_TIME" = 1 ]; then
  start=$(date +%s.%N)
  CARGO_TARGET_DIR="$W/target" cargo build --release --quiet
  BUILD_S=$(echo "$(date +%s.%N) - $start" | bc 2>/dev/null || python3 -c "print($(date +%s.%N) - $start)")
fi

python3 - "$W" "$BIN" "$SH" "$PY" "$DM" "$RM" "${BUILD_S:-}" <<'PY'
import json, os, statistics, sys
w, binary, sh, py, dm, rm, build_s = sys.argv[1:8]
def load(label):
    return json.load(open(f"{w}/r-{label}.json"))["results"]
def row(name, x, floor):
    return f"| {name} | {x['mean']*1e3:.2f} ms | {x['stddev']*1e3:.2f} ms | {x['mean']/floor:.2f}x |"
print("| command | mean | σ | ratio to /bin/true (same run) |")
print("|---|---|---|---|")
base = load("base")
print(row("/bin/true", base[0], base[0]["mean"]))
names = {f"{binary} hook list": "hook list", f"{binary} hook config": "hook config",
         f"{binary} hook run {rm}": "hook run: resolve-mode, beforeHelm, values already converged (no-op)"}
for x in base[1:]:
    print(row(names[x["command"]], x, base[0]["mean"]))
patch = load("patch")
print(row("hook run: resolve-mode, beforeHelm, emits a values patch", patch[1], patch[0]["mean"]))
print()
print("| discover-masters, Synchronization of N full Nodes | N | mean | σ | ratio to /bin/true | ratio to Rust hook |")
print("|---|---|---|---|---|---|")
who = {f"{binary} hook run {dm}": "Rust hook (this binary)", sh: "shell + jq", py: "Python, `deckhouse` library"}
for n in (3, 100, 5000):
    r = load(f"sync-{n}")
    floor, rust = r[0]["mean"], r[1]["mean"]
    size = os.path.getsize(f"{w}/sync-{n}.json")
    print(f"| /bin/true | {n} | {floor*1e3:.2f} ms | {r[0]['stddev']*1e3:.2f} ms | 1.00x | |")
    for x in r[1:]:
        shown = f"{size/1e3:.1f} KB" if size < 100_000 else f"{size/1e6:.2f} MB"
        print(f"| {who[x['command']]} | {n} ({shown}) | {x['mean']*1e3:.2f} ms | {x['stddev']*1e3:.2f} ms | "
              f"{x['mean']/floor:.2f}x | {x['mean']/rust:.2f}x |")
print()
size = os.path.getsize(f"{w}/sync-5000.json")
rss = dict(line.split() for line in open(f"{w}/rss"))
print(f"Peak RSS on the 5,000-Node context ({size/1e6:.2f} MB of JSON), largest of 5 runs:")
print()
print("| hook | peak RSS | multiple of the input | ratio to Rust hook |")
print("|---|---|---|---|")
label = {"rust": "Rust hook (this binary)", "shell": "shell + jq (largest process)", "python": "Python, `deckhouse` library", "true": "/bin/true"}
for k in ("rust", "shell", "python", "true"):
    kib = int(rss[k])
    print(f"| {label[k]} | {kib/1024:.1f} MiB | {kib*1024/size:.2f}x | {kib/int(rss['rust']):.2f}x |")
print()
warm, cold = load("warm")[0], load("cold")[0]
print("| converge, examples/moduleconfig-proxy.yaml on 3 masters | mean | σ | ratio to cold |")
print("|---|---|---|---|")
print(f"| cold (empty state directory) | {cold['mean']*1e3:.0f} ms | {cold['stddev']*1e3:.0f} ms | 1.00x |")
print(f"| warm (converged state, no changes) | {warm['mean']*1e3:.0f} ms | {warm['stddev']*1e3:.0f} ms | {warm['mean']/cold['mean']:.2f}x |")
print()
print(f"Binary: {os.path.getsize(binary)/1e6:.1f} MB" + (f"; clean release build: {float(build_s):.0f} s" if build_s else ""))
PY
echo
echo "machine: $(nproc) cores, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB; $(rustc --version); runs: $RUNS each (5,000 Nodes: $((RUNS / 10 > 10 ? RUNS / 10 : 10)))"
