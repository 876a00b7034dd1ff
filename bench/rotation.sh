#!/usr/bin/env bash
# Rotation: (1) the pure planner on a synthetic catalogue (default 200 releases, 100k
# manifests, keep 3): planning time and the process's peak memory; (2) the scanner
# against the real registry with the test mirror (6 releases): requests per release
# and requests made twice (the target is none).
#   bench/rotation.sh [RELEASES MANIFESTS KEEP]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --example rotation_plan
cargo build --release --quiet
echo "== planner (synthetic catalogue)"
for i in 1 2 3; do
  /usr/bin/time -f 'peakRssKiB=%M wallSeconds=%e' target/release/examples/rotation_plan "${1:-200}" "${2:-100000}" "${3:-3}"
done
echo "== scanner (real registry, test mirror)"
cd tests && ../.venv/bin/python - <<'PY'
import json, pathlib, subprocess, tempfile
from tools.mirror_fixture import build_mirror, ROOT
from tools.registry import OWN_CA, Registry, password
with tempfile.TemporaryDirectory() as w:
    w = pathlib.Path(w)
    with Registry(w / "reg", tls=OWN_CA) as reg:
        pushed = build_mirror(reg, w / "build")
        (w / "pw").write_text(password("pusher"))
        p = subprocess.run(["../target/release/embedded-registry", "rotate", "--registry", f"https://{reg.host}",
                            "--path", f"/{ROOT}", "--keep", "3", "--user", "pusher", "--password-file", str(w / "pw"),
                            "--ca-file", str(reg.ca_file), "--dry-run", "--json"], capture_output=True, text=True)
        r = json.loads(p.stdout)
        s = r["stats"]
        tags = sum(1 for _ in pushed["releases"]) * 3 + len(pushed["signatures"]) + len(pushed["channels"])
        print(json.dumps({"releases": r["releases"], "tags": tags, "requests": s["requests"],
                          "requestsPerRelease": round(s["requests"] / r["releases"], 1),
                          "repeatedRequests": s["repeatedRequests"], "manifests": s["manifests"],
                          "layersRead": s["layersRead"], "referrersApi": s["referrersApi"]}))
PY
