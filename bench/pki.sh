#!/usr/bin/env bash
# Cost of the pki hook on 3 and 100 masters: when everything is issued (empty cluster)
# and when nothing changes (every Secret valid), against the openssl CLI issuing the
# same set (CA, token signer, two server certificates per master) in one run.
#   bench/pki.sh [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=20
[ "${1:-}" = "--runs" ] && RUNS="$2"
command -v hyperfine >/dev/null || { apt-get install -y -qq hyperfine >/dev/null 2>&1 || { echo "bench: install hyperfine" >&2; exit 1; }; }
cargo build --release --quiet
BIN="$PWD/target/release/embedded-registry"
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
IDX=$("$BIN" hook list | awk -F' - ' '$2 == "pki" {print $1}')

run_env() { # run_env N CONTEXT
  echo "BINDING_CONTEXT_PATH=$W/$2 VALUES_PATH=$W/values-$1.json CONFIG_VALUES_PATH=$W/config.json VALUES_JSON_PATCH_PATH=$W/out-v KUBERNETES_PATCH_PATH=$W/out-k-$1 METRICS_PATH=$W/out-m CONFIG_VALUES_JSON_PATCH_PATH=$W/out-c"
}
echo '{}' > "$W/config.json"
echo '[{"binding":"beforeHelm","snapshots":{"pki_secrets":[]}}]' > "$W/empty.json"
for n in 3 100; do
  python3 - "$W" "$n" <<'PY'
import json, sys
w, n = sys.argv[1], int(sys.argv[2])
masters = [{"name": f"master-{i}", "internalIP": f"10.0.{i // 256}.{i % 256}"} for i in range(n)]
json.dump({"global": {}, "embeddedRegistry": {"internal": {"masters": masters}}}, open(f"{w}/values-{n}.json", "w"))
PY
  # One run to issue everything; its Secrets become the snapshot of "nothing changes".
  env $(run_env "$n" empty.json) "$BIN" hook run "$IDX"
  python3 - "$W" "$n" <<'PY'
import json, sys
w, n = sys.argv[1], sys.argv[2]
items = []
for line in open(f"{w}/out-k-{n}"):
    o = json.loads(line)["object"]
    items.append({"filterResult": {"name": o["metadata"]["name"], "data": o["data"]}})
ctx = [{"binding": "beforeHelm", "snapshots": {"pki_secrets": items}}]
json.dump(ctx, open(f"{w}/steady-{n}.json", "w"))
PY
done

cat > "$W/openssl.sh" <<'SH'
#!/usr/bin/env bash
# The same set with the openssl CLI: P-256 keys, a CA, a self-signed token signer and
# two SAN server certificates per master.
set -euo pipefail
n=$1; d=$(mktemp -d); cd "$d"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt -days 3650 \
  -subj /CN=embedded-registry-ca -addext basicConstraints=critical,CA:TRUE,pathlen:0 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout token.key -out token.crt -days 365 \
  -subj /CN=embedded-registry-auth-token 2>/dev/null
for i in $(seq 0 $((n - 1))); do
  for role in distribution auth; do
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$i-$role.key" -out "$i-$role.csr" \
      -subj "/CN=master-$i-$role" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,IP:10.0.%d.%d,DNS:localhost,DNS:master-%d,DNS:embedded-registry.d8-system,DNS:embedded-registry.d8-system.svc,DNS:embedded-registry.d8-system.svc.cluster.local\nbasicConstraints=CA:FALSE\n' \
      $((i / 256)) $((i % 256)) "$i" > ext
    openssl x509 -req -in "$i-$role.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 -extfile ext \
      -out "$i-$role.crt" 2>/dev/null
  done
done
cd /; rm -rf "$d"
SH
chmod +x "$W/openssl.sh"

bench() { # bench LABEL RUNS COMMAND...
  local label=$1 runs=$2; shift 2
  hyperfine -N --runs "$runs" --warmup 2 --export-json "$W/r-$label.json" "$@" >/dev/null 2>&1
}
for n in 3 100; do
  runs=$RUNS; [ "$n" = 100 ] && runs=$(( RUNS / 2 > 3 ? RUNS / 2 : 3 ))
  bench "$n" "$runs" \
    -n "pki hook, $n masters, nothing changes" "env $(run_env "$n" "steady-$n.json") $BIN hook run $IDX" \
    -n "pki hook, $n masters, everything issued" "env $(run_env "$n" empty.json) $BIN hook run $IDX" \
    -n "openssl CLI, $n masters, same set" "$W/openssl.sh $n"
done
python3 - "$W" <<'PY'
import json, sys
w = sys.argv[1]
print("| command | mean | σ | ratio to openssl CLI (same run) |")
print("|---|---|---|---|")
for n in (3, 100):
    r = json.load(open(f"{w}/r-{n}.json"))["results"]
    peer = r[-1]["mean"]
    for x in r:
        print(f"| {x['command']} | {x['mean']*1e3:.1f} ms | {x['stddev']*1e3:.1f} ms | {x['mean']/peer:.3f}x |")
PY
echo
echo "machine: $(nproc) cores, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(openssl version)"
