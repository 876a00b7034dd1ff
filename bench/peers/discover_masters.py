#!/usr/bin/env python3
"""discover-masters as a Python hook with the PyPI `deckhouse` hook library: the same
logic as hooks/registry/src/hooks/discover_masters.rs. bench/hooks.sh checks that its
output equals the Rust hook's on every benchmark input."""
import json
import sys

from deckhouse import hook

NODE_FILTER = '{"name": .metadata.name, "internalIP": ([.status.addresses[]? | select(.type == "InternalIP") | .address] | first)}'
CONFIG = json.dumps({"configVersion": "v1", "kubernetes": [
    {"name": binding, "apiVersion": "v1", "kind": "Node", "keepFullObjectsInMemory": False,
     "labelSelector": {"matchExpressions": [{"key": label, "operator": "Exists"}]}, "jqFilter": NODE_FILTER}
    for binding, label in (("masters", "node-role.kubernetes.io/control-plane"),
                           ("legacy_masters", "node-role.kubernetes.io/master"))]})


def item_value(item):
    """filterResult when present (even null), else the object."""
    if "filterResult" in item:
        return item["filterResult"]
    return item.get("object")


def parts(v, where):
    if v.get("name") is not None:
        return v["name"], v.get("internalIP")
    if v.get("metadata") is not None:
        ips = [a["address"] for a in (v.get("status") or {}).get("addresses") or [] if a.get("type") == "InternalIP"]
        return v["metadata"]["name"], ips[0] if ips else None
    raise ValueError(f"snapshot {where}: neither a Node nor a filter result")


def main(ctx: hook.Context):
    snapshots = dict(ctx.snapshots)
    bc = ctx.binding_context
    if bc.get("type") == "Synchronization" and "objects" in bc:
        snapshots[bc["binding"]] = bc["objects"]
    masters, without_ip = {}, []
    for binding in ("masters", "legacy_masters"):
        for i, item in enumerate(snapshots.get(binding) or []):
            v = item_value(item)
            if v is None:
                continue
            name, ip = parts(v, f"{binding}[{i}]")
            if ip:
                masters[name] = {"name": name, "internalIP": ip}
            else:
                without_ip.append(name)
    without_ip = [n for n in without_ip if n not in masters]
    if without_ip:
        print(json.dumps({"level": "warn", "msg": "master nodes without an InternalIP are skipped until they report one",
                          "hook": "discover-masters", "nodes": without_ip}), file=sys.stderr)
    listed = [masters[n] for n in sorted(masters)]
    ctx.metrics.expire("masters")
    ctx.metrics.collect({"name": "d8_embedded_registry_masters", "group": "masters", "action": "set",
                         "value": len(listed)})
    ctx.values.setdefault("embeddedRegistry", {}).setdefault("internal", {})["masters"] = listed


if __name__ == "__main__":
    hook.run(main, config=CONFIG)
