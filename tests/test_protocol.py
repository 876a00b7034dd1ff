"""The hook binary against the runner contract, run as a process the way
addon-operator and shell-operator run it."""
import json
import os
import re

import jsonschema
import pytest

from conftest import BIN, ROOT, run
from tools.hookrun import HookRun, hook_names

SHELL_SCHEMA = json.loads((ROOT / "tests/schemas/shell-operator-config-v1.json").read_text())
BATCH_SCHEMA = json.loads((ROOT / "tests/schemas/module-sdk-batch-config.json").read_text())


def node(name, ip, label="node-role.kubernetes.io/control-plane"):
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {label: ""}},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}


def masters_of(patch):
    ops = [op for op in patch if op["path"] == "/embeddedRegistry/internal/masters"]
    assert len(ops) == 1, patch
    return ops[0]["value"]


# --- discovery: list and config ---------------------------------------------------

def test_hook_list_matches_addon_operator_detection_with_empty_environment():
    p = run(["hook", "list"], env={})
    assert p.returncode == 0, p.stderr
    assert re.match(r"Found ([1-9]\d{0,3}) items", p.stdout)
    count = int(re.match(r"Found (\d+) items:", p.stdout).group(1))
    lines = p.stdout.splitlines()[1:]
    assert len(lines) == count
    assert all(re.fullmatch(rf"{i} - [a-z][a-z0-9-]+", line) for i, line in enumerate(lines))
    assert run(["hooks", "list"], env={}).stdout == p.stdout, "hooks is an alias of hook"


def test_batch_config_matches_module_sdk_shape():
    p = run(["hook", "config"], env={})
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    jsonschema.validate(doc, BATCH_SCHEMA)
    assert [h["metadata"]["name"] for h in doc["hooks"]] == list(hook_names())
    for h in doc["hooks"]:
        # Every hook config, without the batch-only metadata, is a valid v1 config too.
        classic = {k: v for k, v in h.items() if k not in ("metadata", "allowFailure")}
        for k in classic.get("kubernetes", []):
            k.pop("executeHookOnEvent", None)
        jsonschema.validate(classic, SHELL_SCHEMA)
        assert not {"beforeAll", "afterAll"} & set(h), "module hooks never emit global keys"


@pytest.mark.parametrize("name", hook_names())
def test_classic_config_by_invocation_name_passes_v1_schema(tmp_path, name):
    link = tmp_path / name
    os.symlink(BIN, link)
    import subprocess
    p = subprocess.run([str(link), "--config"], capture_output=True, text=True, env={})
    assert p.returncode == 0, p.stderr
    cfg = json.loads(p.stdout)
    jsonschema.validate(cfg, SHELL_SCHEMA)
    assert cfg == json.loads(run(["classic", name, "--config"], env={}).stdout)


def test_schema_is_strict_enough_to_fail():
    bad_configs = [
        {"configVersion": "v1"},
        {"configVersion": "v1", "onStartup": 1, "beforeAll": 1},
        {"configVersion": "v1", "schedule": []},
        {"configVersion": "v1", "kubernetes": [{"kind": "Node", "executeHookOnEvent": True}]},
        {"configVersion": "v1", "schedule": [{"crontab": "* * *"}]},
    ]
    for cfg in bad_configs:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(cfg, SHELL_SCHEMA)


# --- binding contexts -------------------------------------------------------------

def test_group_context_from_the_batch_runner(tmp_path):
    ctx = [{"binding": "main", "type": "Group", "groupName": "main", "snapshots": {
        "masters": [{"filterResult": {"name": "m2", "internalIP": "10.0.0.2"}},
                    {"filterResult": {"name": "m1", "internalIP": "10.0.0.1"}}],
        "legacy_masters": []}}]
    r = HookRun.module(tmp_path, ctx)
    p = r.hook("discover-masters")
    assert p.returncode == 0, p.stderr
    assert masters_of(r.values_patch()) == [{"name": "m1", "internalIP": "10.0.0.1"},
                                            {"name": "m2", "internalIP": "10.0.0.2"}]
    assert {"name": "d8_embedded_registry_masters", "group": "masters", "action": "set", "value": 2.0} \
        in r.metric_lines()


def test_synchronization_then_event_with_full_objects_in_one_file(tmp_path):
    ctx = [
        {"binding": "masters", "type": "Synchronization", "objects": [{"object": node("a", "10.0.0.1")}]},
        {"binding": "masters", "type": "Event", "watchEvent": "Added", "object": node("b", "10.0.0.2"),
         "snapshots": {"masters": [{"object": node("a", "10.0.0.1")}, {"object": node("b", "10.0.0.2")}],
                       "legacy_masters": [{"object": node("c", "10.0.0.3", "node-role.kubernetes.io/master")}]}},
    ]
    r = HookRun.module(tmp_path, ctx)
    p = r.hook("discover-masters")
    assert p.returncode == 0, p.stderr
    assert [m["name"] for m in masters_of(r.values_patch())] == ["a", "b", "c"], "the last context's snapshots win"


def test_null_filter_results_are_skipped(tmp_path):
    ctx = [{"binding": "main", "type": "Group", "groupName": "main", "snapshots": {
        "masters": [{"filterResult": None}, {"filterResult": {"name": "m", "internalIP": "10.0.0.9"}},
                    {"filterResult": {"name": "noip", "internalIP": None}}], "legacy_masters": []}}]
    r = HookRun.module(tmp_path, ctx)
    p = r.hook("discover-masters")
    assert p.returncode == 0, p.stderr
    assert [m["name"] for m in masters_of(r.values_patch())] == ["m"]
    warn = [json.loads(line) for line in p.stderr.splitlines() if line.startswith("{")]
    assert any(w["level"] == "warn" and "noip" in json.dumps(w) for w in warn)


@pytest.mark.parametrize("ctx", [
    [{"binding": "beforeHelm"}],
    [{"binding": "onStartup"}],
    [{"binding": "every-5-min", "type": "Schedule"}],
    [{"binding": "beforeHelm", "snapshots": {"masters": []}}, {"binding": "afterHelm"}],
])
def test_lifecycle_and_schedule_contexts(tmp_path, ctx):
    values = {"global": {}, "embeddedRegistry": {"mode": "Proxy", "proxy": {"host": "h"},
                                                 "internal": {"masters": [{"name": "m", "internalIP": "1.2.3.4"}]}}}
    r = HookRun.module(tmp_path, ctx, values=values)
    p = r.hook("resolve-mode")
    assert p.returncode == 0, p.stderr
    patch = r.values_patch()
    assert {"op": "add", "path": "/embeddedRegistry/internal/mode", "value": "Proxy"} in patch
    assert all(op["op"] in ("add", "remove") for op in patch)


def apply_strict(doc, patch):
    """Replays add/remove like the runner: the parent must exist, removed paths too."""
    import copy
    doc = copy.deepcopy(doc)
    for op in patch:
        *parents, last = op["path"].lstrip("/").split("/")
        target = doc
        for seg in parents:
            target = target[seg]
        if op["op"] == "add":
            target[last] = op["value"]
        else:
            del target[last]
    return doc


MASTER = {"name": "m", "internalIP": "10.0.0.9"}
IDEMPOTENCY_START = {
    # Each hook starts from values it has not processed yet.
    "discover-masters": {"global": {}, "embeddedRegistry": {"mode": "Detached", "detached": {}}},
    "resolve-mode": {"global": {}, "embeddedRegistry": {"mode": "Detached", "detached": {},
                                                        "internal": {"masters": [MASTER]}}},
}


@pytest.mark.parametrize("hook", sorted(IDEMPOTENCY_START))
def test_second_run_on_patched_values_emits_no_patch(tmp_path, hook):
    ctx = [{"binding": "main", "type": "Group", "groupName": "main",
            "snapshots": {"masters": [{"filterResult": MASTER}], "legacy_masters": []}}]
    first = HookRun.module(tmp_path / "1", ctx, values=IDEMPOTENCY_START[hook])
    assert first.hook(hook).returncode == 0
    assert first.values_patch() != []
    second = HookRun.module(tmp_path / "2", ctx, values=apply_strict(IDEMPOTENCY_START[hook], first.values_patch()))
    assert second.hook(hook).returncode == 0
    assert second.values_patch() == []


# --- failures leave no output ------------------------------------------------------

FAILURES = [
    ("malformed binding context", "[{\"binding\": ", None, "BINDING_CONTEXT_PATH"),
    ("not an array", "{\"binding\": \"x\"}", None, "BINDING_CONTEXT_PATH"),
    ("event without watchEvent", "[{\"binding\": \"x\", \"type\": \"Event\"}]", None, "watchEvent"),
    ("handler error", "[{\"binding\": \"beforeHelm\"}]",
     {"global": {}, "embeddedRegistry": {"mode": "Proxy", "proxy": {"host": "h"}, "internal": {}}}, "at least one master"),
    ("values not an object", "[{\"binding\": \"beforeHelm\"}]", [1, 2], "VALUES_PATH"),
]


@pytest.mark.parametrize("precreate", [False, True], ids=["absent", "precreated"])
@pytest.mark.parametrize("case", FAILURES, ids=[c[0] for c in FAILURES])
def test_failures_exit_1_with_one_line_and_no_output(tmp_path, case, precreate):
    _, contexts, values, needle = case
    r = HookRun.module(tmp_path, contexts, values=values, precreate=precreate)
    p = r.hook("resolve-mode")
    assert p.returncode == 1
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, p.stderr
    assert needle in json.loads(lines[0])["msg"]
    assert r.written() == set(), "a failed run writes no output"


def test_missing_variables_and_files_are_named(tmp_path):
    r = HookRun.module(tmp_path, [{"binding": "beforeHelm"}])
    p = r.hook("resolve-mode", env={"VALUES_PATH": None})
    assert p.returncode == 1 and "VALUES_PATH is not set" in p.stderr
    p = r.hook("resolve-mode", env={"BINDING_CONTEXT_PATH": str(tmp_path / "nope.json")})
    assert p.returncode == 1 and "nope.json" in p.stderr
    p = r.run("hook", "run", "99")
    assert p.returncode == 1 and "no hook with index" in p.stderr
    assert r.written() == set()
