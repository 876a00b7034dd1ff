"""Runs the module's rendered mirror-configuration script as bashible would on a node:
with `bash`, /etc/containerd re-rooted into a test directory, and the bashbooster
stand-in (tests/tools/bashbooster.sh) for the functions it calls, which records the
annotation the script sets instead of calling the API server."""
import base64
import json
import os
import subprocess
from pathlib import Path

STANDIN = Path(__file__).with_name("bashbooster.sh")
ACK = "embedded-registry.deckhouse.io/mirror-config"
CONTAINERD = "embedded-registry.deckhouse.io/containerd"

# containerd v1 as Deckhouse configures it: CRI reads hosts.toml from registry.d.
CONTAINERD_V1 = """version = 2
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "/etc/containerd/registry.d"
"""


def reroot(script, root):
    return (script.replace("/etc/containerd/registry.d", str(root / "registry.d"))
                  .replace("/etc/containerd/config.toml", str(root / "config.toml")))


def run(script, root, node="m1", config=CONTAINERD_V1, kubectl_fails=False, cwd=None, snapshot=False):
    """Runs `script` on a node re-rooted at `root` (config.toml written first unless it
    exists or `config` is None). Returns (process, the bb-kubectl-exec calls as
    argument lists). `snapshot`: each call copies root/registry.d to
    root/kubectl.calls.<n> as it was then."""
    root.mkdir(parents=True, exist_ok=True)
    conf = root / "config.toml"
    if config is not None and not conf.exists():
        conf.write_text(config.replace("/etc/containerd/registry.d", str(root / "registry.d")))
    record = root / "kubectl.calls"
    record.write_text("")
    env = dict(os.environ, BB_NODE_NAME=node, BB_RECORD=str(record), BB_KUBECTL_FAIL="1" if kubectl_fails else "0",
               BB_SNAPSHOT_DIR=str(root / "registry.d") if snapshot else "")
    p = subprocess.run(["bash", "-euo", "pipefail", "-c", f"source {STANDIN}\n" + reroot(script, root)],
                       capture_output=True, text=True, env=env, cwd=cwd)
    calls = [base64.b64decode(line).decode().split("\0")[:-1] for line in record.read_text().splitlines() if line]
    return p, calls


def annotations(calls):
    """The annotations the last `annotate node` call set, as a dict ({} when none)."""
    for args in reversed(calls):
        if args[:2] == ["annotate", "node"]:
            return dict(a.split("=", 1) for a in args[3:] if "=" in a)
    return {}


def save(root, calls):
    """Keeps the node's last acknowledgement in root/annotations.json (what the nodes
    file of the converge tests puts on the Nodes, see conftest.nodes_file)."""
    (root / "annotations.json").write_text(json.dumps(annotations(calls)))
