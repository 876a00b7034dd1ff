#!/usr/bin/env python3
"""discover-masters as a Python hook with the PyPI `deckhouse` hook library: the same
logic as hooks/registry/src/hooks/module/discover_masters.rs
and the checks of hooks/registry/src/untrusted.rs. bench/hooks.sh checks that its
output equals the Rust hook's on every benchmark input."""
import ipaddress
import json
import re
import sys

from deckhouse import hook

NODE_FILTER = '{"name": .metadata.name, "internalIP": ([.status.addresses[]? | select(.type == "InternalIP") | .address] | first)}'
CONFIG = json.dumps({"configVersion": "v1", "kubernetes": [
    {"name": binding, "apiVersion": "v1", "kind": "Node", "keepFullObjectsInMemory": False,
     "labelSelector": {"matchExpressions": [{"key": label, "operator": "Exists"}]}, "jqFilter": NODE_FILTER}
    for binding, label in (("masters", "node-role.kubernetes.io/control-plane"),
                           ("legacy_masters", "node-role.kubernetes.io/master"))]})


NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
REASONS = {
    "no-address": "master nodes without an InternalIP are skipped until they report one",
    "invalid-name": "master nodes skipped: the node name is not a DNS-1123 subdomain of at most 63 characters "
                    "(lower-case letters, digits, '-' and '.', starting and ending alphanumeric); "
                    "fix the Node, or remove its master label",
    "invalid-address": "master nodes skipped: the InternalIP is not an IPv4 or IPv6 address; "
                       "fix the Node, or remove its master label",
}
ESCAPES = {"\t": "\\t", "\r": "\\r", "\n": "\\n", "'": "\\'", '"': '\\"', "\\": "\\\\"}


def canonical_ip(text):
    """The address in canonical form, or None when it is not an IPv4 or IPv6 address."""
    if "%" in text:  # a scoped address names an interface, not a node
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped:
        return f"::ffff:{ip.ipv4_mapped}"
    return str(ip)


def shown(value):
    """Escaped and cut at 80 characters, as untrusted::shown."""
    text = "".join(ESCAPES.get(c) or (c if " " <= c <= "~" else f"\\u{{{ord(c):x}}}") for c in value)
    return text if len(text) <= 80 else text[:80] + "…"


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
    masters, skipped = {}, {reason: [] for reason in REASONS}
    for binding in ("masters", "legacy_masters"):
        for i, item in enumerate(snapshots.get(binding) or []):
            v = item_value(item)
            if v is None:
                continue
            name, ip = parts(v, f"{binding}[{i}]")
            if not ip:
                skipped["no-address"].append(name)
            elif len(name) > 63 or not NAME.fullmatch(name):
                skipped["invalid-name"].append(name)
            elif (canonical := canonical_ip(ip)) is None:
                skipped["invalid-address"].append(name)
            else:
                masters[name] = {"name": name, "internalIP": canonical}
    ctx.metrics.expire("masters_skipped")
    for reason, names in skipped.items():
        names = [n for n in names if n not in masters]
        ctx.metrics.collect({"name": "d8_embedded_registry_masters_skipped", "group": "masters_skipped",
                             "action": "set", "value": len(names), "labels": {"reason": reason}})
        if names:
            print(json.dumps({"level": "warn", "msg": REASONS[reason], "hook": "discover-masters",
                              "reason": reason, "nodes": [shown(n) for n in names]}), file=sys.stderr)
    listed = [masters[n] for n in sorted(masters)]
    ctx.metrics.expire("masters")
    ctx.metrics.collect({"name": "d8_embedded_registry_masters", "group": "masters", "action": "set",
                         "value": len(listed)})
    ctx.values.setdefault("embeddedRegistry", {}).setdefault("internal", {})["masters"] = listed


if __name__ == "__main__":
    hook.run(main, config=CONFIG)
