"""Shared helpers for the end-to-end tests: the real hook binary, the real Helm engine
(through the converge), real Kubernetes schemas."""
import hashlib
import json
import os
import pathlib
import subprocess
import sys

import pytest

from tools.binary import BIN, EXAMPLES, ROOT, run  # noqa: F401 - the tests import them from here

# The example upstream names resolve to loopback, where nothing listens on their ports:
# the hooks' upstream checks fail fast and no test sends a packet beyond 127.0.0.0/8
# (127.0.0.66: no test server binds there).
EXAMPLE_HOSTS = ["registry.example.com", "registry.deckhouse.ru", "registry-a.example", "registry-b.example", "h"]
os.environ["EMBEDDED_REGISTRY_RESOLVE"] = ",".join(f"{h}=127.0.0.66" for h in EXAMPLE_HOSTS)


def tree_digest(path: pathlib.Path) -> str:
    """A digest of every file (name and content) under path; '' when absent."""
    if not path.exists():
        return ""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


class Converge:
    """Runs `embedded-registry converge` against a state directory."""

    def __init__(self, state: pathlib.Path):
        self.state = state

    def __call__(self, module_config, nodes=None, extra=(), expect_rc=0, python=sys.executable, now=None):
        """`now` (unix seconds) fixes the hooks' clock, to step through renewals."""
        args = ["converge", "--module-config", str(module_config), "--state", str(self.state),
                "--module-dir", str(ROOT), "--python", str(python), "--json", *extra]
        if nodes is not None:
            args += ["--nodes", str(nodes)]
        env = None
        if now is not None:
            env = dict(os.environ, EMBEDDED_REGISTRY_NOW=str(int(now)))
        p = run(args, env=env)
        self.output = p.stdout + p.stderr  # the last run's, for checks that no secret is in it
        assert p.returncode == expect_rc, f"rc={p.returncode}\nstdout={p.stdout}\nstderr={p.stderr}"
        if expect_rc == 0:
            return json.loads(p.stdout)
        return p

    def values(self):
        return json.loads((self.state / "values.json").read_text())

    def rendered(self):
        root = self.state / "rendered"
        return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def converge(tmp_path):
    return Converge(tmp_path / "state")


@pytest.fixture(scope="session", autouse=True)
def built_binary():
    assert BIN.exists(), f"{BIN} is missing: run `cargo build --release` (scripts/test does)"


def render_chart(values):
    """The chart rendered by the Helm engine (scripts/helm_render.py) over `values`:
    template path → rendered text."""
    req = {"chart": str(ROOT), "values": values, "release": "embedded-registry", "namespace": "d8-system",
           "kubeVersion": "1.30"}
    p = subprocess.run([sys.executable, str(ROOT / "scripts/helm_render.py")], input=json.dumps(req),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)["manifests"]


def module_config(tmp_path, settings, name="mc.yaml", enabled=True, **spec):
    """Writes a ModuleConfig with the given settings; returns its path."""
    import yaml
    doc = {"apiVersion": "deckhouse.io/v1alpha1", "kind": "ModuleConfig",
           "metadata": {"name": "embedded-registry"},
           "spec": {"version": 1, "enabled": enabled, "settings": settings, **spec}}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def nodes_file(tmp_path, masters, workers=0, name="nodes.yaml", legacy=()):
    """Writes a node list: masters as (name, ip) pairs, `legacy` names labelled the old way.
    Every node is Ready and carries the annotations the mirror script last set on the
    test's node root `tmp_path/node` (tools/node_script.save): all nodes run the same
    script, so they acknowledge what that node applied."""
    import yaml
    acks = tmp_path / "node" / "annotations.json"
    annotations = json.loads(acks.read_text()) if acks.exists() else {}
    ready = [{"type": "Ready", "status": "True"}]
    items = []
    for n, ip in masters:
        label = "node-role.kubernetes.io/master" if n in legacy else "node-role.kubernetes.io/control-plane"
        addresses = [{"type": "Hostname", "address": n}]
        if ip:
            addresses.insert(0, {"type": "InternalIP", "address": ip})
        items.append({"apiVersion": "v1", "kind": "Node",
                      "metadata": {"name": n, "labels": {label: ""}, "annotations": dict(annotations)},
                      "status": {"addresses": addresses, "conditions": ready}})
    for i in range(workers):
        items.append({"apiVersion": "v1", "kind": "Node",
                      "metadata": {"name": f"worker-{i}", "labels": {}, "annotations": dict(annotations)},
                      "status": {"addresses": [{"type": "InternalIP", "address": f"10.1.0.{i + 1}"}],
                                 "conditions": ready}})
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}))
    return path
