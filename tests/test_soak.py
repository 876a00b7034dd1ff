"""Idempotency soak: converge the 3-master Proxy example round after round, with random
irrelevant changes to the cluster in between (workers come and go, labels and
annotations change on nodes, unrelated objects appear). After the first round the module
changes nothing: no value, no rendered file, no object of its own; the only object
changes reported are the injected ones.

SOAK_ROUNDS sets the number of rounds (default 200: about a minute on 2 cores); SOAK_SEED
the random seed."""
import copy
import json
import os
import random

import yaml

from conftest import EXAMPLES, tree_digest

ROUNDS = int(os.environ.get("SOAK_ROUNDS", "200"))
SEED = int(os.environ.get("SOAK_SEED", "20261127"))
NOW = 1_790_000_000  # a fixed clock: no certificate comes due during the soak
MASTER_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")


def node_key(node):
    return f"Node/{node['metadata']['name']}"


def irrelevant_nodes(rng, base, workers):
    """The example's nodes plus `workers`, with random labels and annotations that no
    hook reads (never the master labels, never an address)."""
    nodes = copy.deepcopy(base) + copy.deepcopy(workers)
    for n in nodes:
        meta = n["metadata"]
        if rng.random() < 0.3:
            meta.setdefault("annotations", {})[f"example.com/note-{rng.randrange(3)}"] = str(rng.randrange(1000))
        if rng.random() < 0.2:
            meta.setdefault("labels", {})[f"topology.example.com/zone-{rng.randrange(2)}"] = rng.choice("abc")
        if rng.random() < 0.1 and not any(k in meta.get("labels", {}) for k in MASTER_LABELS):
            n.setdefault("spec", {})["unschedulable"] = rng.random() < 0.5
    return nodes


def change_workers(rng, workers, serial):
    """Adds or removes a worker (never a master)."""
    if workers and rng.random() < 0.4:
        workers.pop(rng.randrange(len(workers)))
    else:
        name = f"worker-soak-{serial}"
        workers.append({"apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": name, "labels": {"node-role.kubernetes.io/worker": ""}},
                        "status": {"addresses": [{"type": "InternalIP", "address": f"10.200.{serial // 250}.{serial % 250 + 1}"}]}})


def unrelated_object(rng, serial):
    """An object no binding selects: other namespaces, or an unlabelled d8-system Secret."""
    choice = rng.randrange(3)
    if choice == 0:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"app-{serial}", "namespace": "default"},
                "data": {"k": str(serial)}}
    if choice == 1:
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"other-{serial}", "namespace": "d8-system"},
                "type": "Opaque", "data": {"token": "c2VjcmV0"}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"pod-{serial}", "namespace": "kube-system",
                                                            "labels": {"app": "x"}}, "spec": {"containers": []}}


def module_owned(state):
    """Digest of everything the module writes: values, rendered files, d8-system Secrets
    other than the injected ones."""
    secrets = state / "objects" / "d8-system" / "Secret"
    owned = {p.name: p.read_text() for p in sorted(secrets.glob("*.json")) if not p.name.startswith("other-")}
    return (tree_digest(state / "rendered"), (state / "values.json").read_text(), json.dumps(owned, sort_keys=True))


def test_converge_rounds_with_irrelevant_events_change_nothing(converge, tmp_path):
    rng = random.Random(SEED)
    base = yaml.safe_load((EXAMPLES / "nodes-3-masters.yaml").read_text())["items"]
    nodes_path = tmp_path / "nodes.yaml"
    nodes_path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": base}))
    mc = EXAMPLES / "moduleconfig-proxy.yaml"

    first = converge(mc, nodes_path, now=NOW)
    assert first["changed"] and first["valuesChanged"]
    assert first["mode"] == "Proxy" and len(first["masters"]) == 3
    owned = module_owned(converge.state)

    previous = {node_key(n): n for n in base}
    workers = []
    injected_objects = node_changes = 0
    for serial in range(1, ROUNDS):
        # Between rounds: one to three irrelevant events.
        for _ in range(rng.randrange(1, 4)):
            event = rng.randrange(3)
            if event == 0:
                change_workers(rng, workers, serial)
            elif event == 1:
                obj = unrelated_object(rng, serial * 10 + injected_objects)
                injected_objects += 1
                ns = obj["metadata"].get("namespace") or "_cluster"
                path = converge.state / "objects" / ns / obj["kind"] / f"{obj['metadata']['name']}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(obj))
            # event 2: labels and annotations only (applied to every round's node list)
        nodes = irrelevant_nodes(rng, base, workers)
        nodes_path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": nodes}))
        current = {node_key(n): n for n in nodes}
        expected = {
            "created": sorted(k for k in current if k not in previous),
            "updated": sorted(k for k in current if k in previous and current[k] != previous[k]),
            "deleted": sorted(k for k in previous if k not in current),
        }
        previous = current
        node_changes += any(expected.values())

        s = converge(mc, nodes_path, now=NOW)
        assert not s["valuesChanged"], f"round {serial}: values changed"
        assert s["rendered"] == {"created": [], "updated": [], "deleted": []}, f"round {serial}: {s['rendered']}"
        assert {k: sorted(v) for k, v in s["objects"].items()} == expected, f"round {serial}: {s['objects']}"
        assert s["changed"] == any(expected.values())
        assert s["masters"] == first["masters"] and s["highAvailability"] == first["highAvailability"]
        assert module_owned(converge.state) == owned, f"round {serial}: a module-owned file changed"
    if ROUNDS >= 10:
        assert injected_objects > 0 and node_changes > 0, "the soak injected events"
