"""Data from the cluster is input too: a master Node's name and InternalIP reach the
static pods, object names and the script bashible runs as root on every node.

Two layers, each proven on its own: the discover-masters hook refuses what is not a
node name or an IP address (the master is skipped, logged and counted), and the chart
renders every value into the nodes' script as inert data, so even a value that got
past the hook cannot become shell code."""
import json
import sys
import tomllib

import pytest
import yaml

from conftest import EXAMPLES, ROOT, render_chart, run
from test_reliability import VALUES
from tools.hookrun import HookRun
from tools import node_script

MARKER = "pwned-by-cluster-data"
# Values an attacker who can patch one master's nodes/status (or name a Node through a
# permissive admission) would try: close the heredoc, the quote, the TOML string, or
# substitute a command.
HOSTILE_ADDRESSES = [
    f"10.0.0.9\nEMBEDDED_REGISTRY_HOSTS\ntouch {MARKER}-1\n",
    f"10.0.0.9'; touch {MARKER}-2; '",
    f'10.0.0.9:5001"]\n[host."https://evil:5001"]\n',
    f"$(touch {MARKER}-3)",
    f"`touch {MARKER}-4`",
    "10.0.0.9 ",
    "010.0.0.9",
]
# Names the API server accepts for a Node (DNS-1123 subdomains) but that do not fit
# the label value and object names the module builds from them.
LONG_NAMES = ["a" * 64, "a" * 200, "a" * 242, "a" * 253]
# Names no API server accepts, as a runner could still hand them in a snapshot.
HOSTILE_NAMES = LONG_NAMES + [f"m$(touch {MARKER}-5)", "m\nx", "M1", "../../etc", "m_1"]


def node(name, address, legacy=False):
    label = "node-role.kubernetes.io/master" if legacy else "node-role.kubernetes.io/control-plane"
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {label: ""}},
            "status": {"addresses": [{"type": "InternalIP", "address": address}]}}


def converge(tmp_path, nodes):
    path = tmp_path / "nodes.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": nodes}))
    state = tmp_path / "state"
    p = run(["converge", "--module-config", str(EXAMPLES / "moduleconfig-detached.yaml"), "--state", str(state),
             "--nodes", str(path), "--module-dir", str(ROOT), "--python", sys.executable, "--json"])
    return p, state


def test_hostile_masters_are_skipped_counted_and_never_rendered(tmp_path):
    nodes = [node("master-0", "127.0.0.1"), node("master-1", "::1", legacy=True)]
    nodes += [node(f"bad-{i}", a) for i, a in enumerate(HOSTILE_ADDRESSES)]
    nodes += [node(n, "127.0.0.2") for n in LONG_NAMES]
    p, state = converge(tmp_path, nodes)
    assert p.returncode == 0, p.stderr
    values = json.loads((state / "values.json").read_text())
    masters = values["embeddedRegistry"]["internal"]["masters"]
    assert masters == [{"name": "master-0", "internalIP": "127.0.0.1"},
                       {"name": "master-1", "internalIP": "::1"}]
    metrics = json.loads((state / "metrics.json").read_text())["discover-masters"]
    skipped = {m["labels"]["reason"]: m["value"] for m in metrics
               if m.get("name") == "d8_embedded_registry_masters_skipped"}
    assert skipped == {"invalid-address": len(HOSTILE_ADDRESSES), "invalid-name": len(LONG_NAMES),
                       "no-address": 0}
    # No rendered file, and no object but the Node itself, carries a hostile value.
    rendered = "\n".join(p.read_text() for p in (state / "rendered").rglob("*") if p.is_file())
    objects = [p for p in (state / "objects").rglob("*.json") if p.parent.name != "Node"]
    for bad in HOSTILE_ADDRESSES + LONG_NAMES:
        assert bad not in rendered
        assert not [p for p in objects if bad in p.name or bad in p.read_text()]
    assert MARKER not in rendered
    # The IPv6 master is rendered as an address with a port ([::1]:5001) where it is one.
    assert "[::1]" not in rendered or '"[::1]:5001"' in rendered


def test_the_hook_logs_the_field_and_the_fix_and_escapes_the_value(tmp_path):
    """The hook as the runner runs it, with names no API server would accept."""
    items = [{"filterResult": {"name": "master-0", "internalIP": "127.0.0.1"}}]
    items += [{"filterResult": {"name": n, "internalIP": "127.0.0.2"}} for n in HOSTILE_NAMES]
    items += [{"filterResult": {"name": f"m{i}", "internalIP": a}} for i, a in enumerate(HOSTILE_ADDRESSES)]
    contexts = [{"binding": "main", "type": "Group", "groupName": "main",
                 "snapshots": {"masters": items, "legacy_masters": []}}]
    r = HookRun.module(tmp_path, contexts, VALUES)
    p = r.hook("discover-masters")
    assert p.returncode == 0, p.stderr
    patch = json.loads(r.output("VALUES_JSON_PATCH_PATH"))
    assert [op["value"] for op in patch] == [[{"name": "master-0", "internalIP": "127.0.0.1"}]]
    lines = p.stderr.splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    warned = {e["reason"]: e for e in entries if e["level"] == "warn" and "reason" in e}
    assert "not a DNS-1123 subdomain" in warned["invalid-name"]["msg"]
    assert "remove its master label" in warned["invalid-name"]["msg"]
    assert "not an IPv4 or IPv6 address" in warned["invalid-address"]["msg"]
    assert len(warned["invalid-name"]["nodes"]) == len(HOSTILE_NAMES)
    # Shown escaped and cut: no raw newline, no name longer than 80 characters and a mark.
    assert all("\n" not in n and len(n) <= 81 for n in warned["invalid-name"]["nodes"])
    assert "m\\nx" in warned["invalid-name"]["nodes"]


def render(values):
    return render_chart(values)


@pytest.mark.parametrize("address", HOSTILE_ADDRESSES)
def test_the_nodes_script_keeps_a_hostile_value_as_data(tmp_path, address):
    """Defence in depth: values that bypassed the hook (written into the values by hand)
    still cannot run a command on the nodes; they end up as data in hosts.toml."""
    p, state = converge(tmp_path, [node("master-0", "127.0.0.1")])
    assert p.returncode == 0, p.stderr
    values = json.loads((state / "values.json").read_text())
    hostile = {"name": "m'$(touch x)", "internalIP": address}
    values["embeddedRegistry"]["internal"]["switch"]["mirrors"] = [hostile]
    values["embeddedRegistry"]["internal"]["switch"]["pullAddress"] = "embedded-registry.d8-system.svc:5001"
    script = yaml.safe_load(render(values)["templates/node-group-configuration.yaml"])["spec"]["content"]
    hosts = tmp_path / "node" / "registry.d"
    work = tmp_path / "cwd"
    work.mkdir()
    p, calls = node_script.run(script, tmp_path / "node", cwd=work)
    assert p.returncode == 0, p.stderr
    assert list(work.iterdir()) == [], "the script ran a command from the data"
    assert not list(tmp_path.rglob(f"{MARKER}*"))
    toml = tomllib.loads((hosts / "embedded-registry.d8-system.svc_5001_" / "hosts.toml").read_text())
    # The value is one host key, exactly as given (in brackets when it holds a colon,
    # as an IPv6 address is written): data, not structure.
    host = f"https://[{address}]:5001" if ":" in address else f"https://{address}:5001"
    assert list(toml["host"]) == [host]
    assert toml["host"][host]["ca"] == "embedded-registry-ca.crt"
