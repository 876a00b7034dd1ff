"""The hook benchmarks' inputs, written into the directory given (bench/hooks.sh and
bench/startup.sh): a beforeHelm context and the values around it (resolve-mode), and
discover-masters' Synchronization (Group) contexts of 3, 100 and 5,000 full Node
objects. "edge.json" mixes both master labels, duplicates, nodes without an InternalIP,
null filter results, names and addresses that are not what they claim (control
characters, a non-canonical IPv6 address): bench/hooks.sh uses it only to check that its
peers implement the same logic.

    python3 bench/inputs.py DIR
"""
import json
import sys

w = sys.argv[1]


def write(name, value):
    with open(f"{w}/{name}", "w") as f:
        json.dump(value, f)


def node(i, label="node-role.kubernetes.io/control-plane", ip=True):
    addresses = [{"type": "Hostname", "address": f"node-{i}"}]
    if ip:
        addresses.insert(0, {"type": "InternalIP", "address": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"})
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": f"node-{i}", "labels": {label: "", "kubernetes.io/hostname": f"node-{i}"},
                         "annotations": {"node.alpha.kubernetes.io/ttl": "0"}, "uid": f"uid-{i}"},
            "status": {"addresses": addresses,
                       "capacity": {"cpu": "4", "memory": "16Gi"}, "nodeInfo": {"kubeletVersion": "v1.30.1"}}}


write("bh.json", [{"binding": "beforeHelm"}])
write("values.json", {"global": {}, "embeddedRegistry": {"mode": "Direct", "internal": {}}})
write("converged.json", {"global": {}, "embeddedRegistry": {
    "mode": "Direct", "internal": {"mode": "Direct", "highAvailability": False}}})
write("config.json", {"embeddedRegistry": {}})
for n in (3, 100, 5000):
    write(f"sync-{n}.json", [{"binding": "main", "type": "Group", "groupName": "main",
                              "snapshots": {"masters": [{"object": node(i)} for i in range(n)], "legacy_masters": []}}])
legacy = "node-role.kubernetes.io/master"
write("edge.json", [{"binding": "main", "type": "Group", "groupName": "main", "snapshots": {
    "masters": [{"object": node(7)}, {"object": node(2, ip=False)}, {"filterResult": None},
                {"filterResult": {"name": "f-1", "internalIP": "10.9.0.1"}}, {"filterResult": {"name": "f-2", "internalIP": None}},
                {"object": node(5)}, {"filterResult": {"name": "Bad_Name\n\u001b[31m", "internalIP": "10.9.0.2"}},
                {"filterResult": {"name": "f-3", "internalIP": "010.9.0.3"}}, {"filterResult": {"name": "f-4", "internalIP": "FD00:0::1"}},
                {"filterResult": {"name": "f-5", "internalIP": "10.9.0.5\ntouch /pwned"}},
                {"filterResult": {"name": "f-7", "internalIP": "fe80::1%eth0"}}],
    "legacy_masters": [{"object": node(5, legacy)}, {"object": node(1, legacy)}, {"object": node(3, legacy, ip=False)},
                       {"filterResult": {"name": "f-3", "internalIP": "10.9.0.3"}}, {"filterResult": {"name": "f-6", "internalIP": ""}},
                       {"filterResult": {"name": "x" * 64, "internalIP": "10.9.0.6"}}]}}])
