"""The converge's state directory and inputs under hostile conditions (issue 12): kill -9
at any moment, concurrent runs, private hook inputs, input size/depth limits, duplicate
keys and wrong-shaped node lists. The real binary as a process throughout.

Above 400 lines: one file, because the scenarios share the state directory and the
converge runner built at its top."""
import base64
import collections
import hashlib
import json
import os
import pathlib
import shutil
import signal
import stat
import subprocess
import sys
import time

import bcrypt
import pytest
import yaml

from conftest import BIN, EXAMPLES, ROOT, module_config, nodes_file

NODES3 = EXAMPLES / "nodes-3-masters.yaml"
NOW = 1_780_000_000  # a fixed clock: two runs on the same input write the same state
OLD = {"mode": "Detached", "detached": {"storageMode": "Fs"}}
NEW = {"mode": "Detached", "detached": {"storageMode": "Fs", "rotation": {"enabled": True, "keepReleases": 5}}}
UPSTREAM_PASSWORD = "Upstr3am-Pa55-hostile"
PROXY = {"mode": "Proxy", "proxy": {"host": "registry.example.com", "path": "/deckhouse/ee",
                                    "user": "puller", "password": UPSTREAM_PASSWORD}}


def args(mc, state, nodes=NODES3, extra=()):
    a = [str(BIN), "converge", "--module-config", str(mc), "--state", str(state), "--module-dir", str(ROOT),
         "--python", sys.executable, *extra]
    if nodes is not None:
        a += ["--nodes", str(nodes)]
    return a


def env(**extra):
    return dict(os.environ, EMBEDDED_REGISTRY_NOW=str(NOW), **extra)


def converge(mc, state, nodes=NODES3, extra=(), expect_rc=0, **env_extra):
    p = subprocess.run(args(mc, state, nodes, extra), env=env(**env_extra), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == expect_rc, f"rc={p.returncode}\nstdout={p.stdout}\nstderr={p.stderr}"
    return p


def digest(state: pathlib.Path) -> str:
    """Every file under the state directory, names and contents, except hook input
    directories a killed run may leave (the next start removes them)."""
    if not state.exists():
        return ""
    h = hashlib.sha256()
    for p in sorted(state.rglob("*")):
        rel = p.relative_to(state)
        if rel.parts[0].startswith(".hook-"):
            continue
        h.update(str(rel).encode() + b"\0")
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def hook_dirs(state):
    return sorted(p for p in state.glob(".hook-*")) if state.exists() else []


def modes(path):
    """(mode of the directory, {file: mode}) of a hook input directory."""
    files = {}
    for f in os.scandir(path):
        try:
            files[f.name] = stat.S_IMODE(f.stat(follow_symlinks=False).st_mode)
        except FileNotFoundError:
            pass
    return stat.S_IMODE(os.stat(path).st_mode), files


# --- 1. all or nothing: kill -9 at varied moments -------------------------------------------

def test_kill9_leaves_the_old_state_or_the_new_one_never_a_mix(tmp_path):
    old_mc = module_config(tmp_path, OLD, name="old.yaml")
    new_mc = module_config(tmp_path, NEW, name="new.yaml")
    clean_old = tmp_path / "clean-old"
    converge(old_mc, clean_old)
    old = digest(clean_old)
    # Two clean runs old -> new: the new state is one tree, so any third tree is a mix.
    news, durations = [], []
    for i in range(2):
        st = tmp_path / f"clean-new-{i}"
        shutil.copytree(clean_old, st, symlinks=True)
        t0 = time.monotonic()
        converge(new_mc, st)
        durations.append(time.monotonic() - t0)
        news.append(digest(st))
    assert news[0] == news[1] != old
    new = news[0]
    # The ModuleConfig, values.json and rendered/ all differ between the two runs, so a
    # mix of them cannot hash like either.
    for rel in ("objects/_cluster/ModuleConfig/embedded-registry.json", "values.json"):
        assert (clean_old / rel).read_bytes() != (tmp_path / "clean-new-0" / rel).read_bytes(), rel
    assert digest(clean_old / "rendered") != digest(tmp_path / "clean-new-0" / "rendered")

    state, staging = tmp_path / "state", tmp_path / "state.new"
    tries, outcomes, leftovers, recovered = 40, collections.Counter(), [], 0
    run_time = max(durations)
    for i in range(tries):
        for d in (state, staging):
            if d.exists():
                shutil.rmtree(d)
        shutil.copytree(clean_old, state, symlinks=True)
        mc_dir = state / "objects/_cluster/ModuleConfig"
        mc_dir_mtime = os.stat(mc_dir).st_mtime_ns
        p = subprocess.Popen(args(new_mc, state), env=env(), start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if i % 2 == 0:
            # Anywhere in the run: spread over its whole length and a bit past it.
            deadline = time.monotonic() + 1.5 * run_time * (i + 1) / tries
        else:
            # Aimed at the write: wait (bounded) for its first sign, a staging directory
            # or a file appearing beside the stored ModuleConfig (where a writer in
            # place starts), then kill 0-24 ms into it (denser early on).
            limit = time.monotonic() + 120
            while (p.poll() is None and time.monotonic() < limit and not staging.exists()
                   and os.stat(mc_dir).st_mtime_ns == mc_dir_mtime):
                time.sleep(0.0002)
            deadline = time.monotonic() + (i // 2 % 10) ** 2 * 0.0003
        while p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.0002)
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=60)
        d = digest(state)
        outcomes["old" if d == old else "new" if d == new else "mixed"] += 1
        for h in hook_dirs(state):
            leftovers.append(modes(h))
        if i % 8 == 7:
            # The next start recovers: it removes what the killed run left and converges.
            converge(new_mc, state)
            if digest(state) == new and hook_dirs(state) == [] and not staging.exists():
                recovered += 1
    consistent = outcomes["old"] + outcomes["new"]
    print(f"\nkill -9 tries / consistent states: {tries} / {consistent} "
          f"(old {outcomes['old']}, new {outcomes['new']}); hook dirs left by kills: {len(leftovers)}; "
          f"clean recoveries: {recovered} of {tries // 8}")
    assert outcomes["mixed"] == 0, outcomes
    assert recovered == tries // 8, "the next run after a kill leaves exactly the clean new state"
    assert outcomes["old"] > 0 and outcomes["new"] > 0, f"the kills must land before and after the switch: {outcomes}"
    for dir_mode, files in leftovers:
        assert dir_mode == 0o700 and all(m == 0o600 for m in files.values()), (dir_mode, files)


def test_a_failed_write_changes_nothing(tmp_path):
    """A write that fails half-way (a directory where the new state puts a rendered file:
    the move into place fails) leaves the old state whole; before, the ModuleConfig,
    written first, stayed written. (A 242-character node name once failed the write;
    the store now holds names as long as Kubernetes allows.)"""
    state = tmp_path / "state"
    converge(module_config(tmp_path, OLD, name="old.yaml"), state)
    blocker = state / "rendered/templates/registry-rotation.yaml"
    blocker.unlink()
    blocker.mkdir()
    (blocker / "keep").write_text("x\n")
    before = digest(state)
    p = converge(module_config(tmp_path, NEW, name="new.yaml"), state, NODES3, expect_rc=1)
    assert len(p.stderr.strip().splitlines()) == 1 and "Is a directory" in p.stderr, p.stderr
    assert digest(state) == before, "state untouched"
    assert not (tmp_path / "state.new").exists()
    assert hook_dirs(state) == []


# --- 2. one converge at a time --------------------------------------------------------------

def pki_and_users_match(state):
    """The CA in values.json is the pki Secret's, every master's rendered Secret carries
    that CA, and every user hash in values verifies the password of that user's Secret."""
    values = json.loads((state / "values.json").read_text())["embeddedRegistry"]["internal"]
    secret = lambda name: json.loads((state / "objects/d8-system/Secret" / f"{name}.json").read_text())["data"]
    b64 = lambda s: base64.b64decode(s).decode()
    ca = b64(secret("registry-pki")["ca.crt"])
    problems = []
    if ca.strip() not in values["pki"]["caBundle"]:
        problems.append("values CA is not the pki Secret's")
    rendered = [d for d in yaml.safe_load_all((state / "rendered/templates/registry-node-config.yaml").read_text()) if d]
    if not rendered or any(b64(d["data"]["pki.ca.crt"]) != values["pki"]["caBundle"] for d in rendered):
        problems.append("a rendered CA is not the values' CA")
    for role in ("ro", "rw"):
        password = b64(secret(f"registry-user-{role}")["password"])
        if not bcrypt.checkpw(password.encode(), values["users"][role]["passwordHash"].encode()):
            problems.append(f"user {role}: hash does not match the Secret's password")
    return problems


def test_concurrent_converges_leave_a_consistent_state(tmp_path):
    """Two converges on one new state directory, the second started 0-57 ms after the
    first, so that their writes overlap in some pairs (without the lock, 1-3 of 20 pairs
    left a rendered CA or user hash that did not match, or a run failed)."""
    mc = module_config(tmp_path, OLD)
    pairs, clean, failures = 20, 0, []
    for i in range(pairs):
        state = tmp_path / f"state-{i}"
        procs = []
        for k in range(2):
            if k:
                time.sleep(i * 0.003)  # the start offset under test, not a wait for anything
            procs.append(subprocess.Popen(args(mc, state), env=env(), stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
        outs = [p.communicate(timeout=300) for p in procs]
        problems = [f"rc={p.returncode}: {err.strip()}" for p, (_, err) in zip(procs, outs) if p.returncode]
        if not problems:
            problems = pki_and_users_match(state)
            if hook_dirs(state) or (tmp_path / f"state-{i}.new").exists():
                problems.append("leftovers")
        clean += not problems
        if problems:
            failures.append((i, problems))
    print(f"\nconcurrent runs / clean: {pairs} pairs / {clean}")
    assert not failures, failures


def test_a_second_converge_waits_for_the_lock(tmp_path):
    """A converge started while another holds the lock changes nothing until it is
    released, then runs on the state the first one left."""
    import fcntl
    state = tmp_path / "state"
    mc = module_config(tmp_path, OLD)
    converge(mc, state)
    before = digest(state)
    with open(state / ".lock", "r+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        p = subprocess.Popen(args(module_config(tmp_path, NEW, name="new.yaml"), state), env=env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(timeout=3)  # still waiting: it does not run beside the lock holder
        assert digest(state) == before and hook_dirs(state) == []
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert digest(state) != before


# --- 3. hook inputs: private, inside the state directory, removed --------------------------

def test_hook_inputs_are_private_and_inside_the_state_directory(tmp_path):
    """Stops the converge (SIGSTOP) while a hook runs and looks at its input files."""
    state, tmp = tmp_path / "state", tmp_path / "tmp"
    tmp.mkdir()
    mc = module_config(tmp_path, PROXY)
    caught = []
    for _ in range(5):
        if caught:
            break
        p = subprocess.Popen(args(mc, state), env=env(TMPDIR=str(tmp)), start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        limit = time.monotonic() + 120
        while p.poll() is None and time.monotonic() < limit and not caught:
            for h in hook_dirs(state):
                os.killpg(p.pid, signal.SIGSTOP)
                try:
                    if h.exists():
                        dir_mode, files = modes(h)
                        values = (h / "values.json").read_text() if (h / "values.json").exists() else ""
                        if files:
                            caught.append((h.name, dir_mode, files, UPSTREAM_PASSWORD in values))
                finally:
                    os.killpg(p.pid, signal.SIGCONT)
            time.sleep(0.0002)
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert caught, "no hook input directory seen in 5 runs"
    for name, dir_mode, files, _ in caught:
        assert dir_mode == 0o700, (name, oct(dir_mode))
        assert files and all(m == 0o600 for m in files.values()), (name, files)
    assert hook_dirs(state) == [], "removed after the run"
    assert list(tmp.iterdir()) == [], "nothing written to TMPDIR"


# --- 4. input limits ------------------------------------------------------------------------

def one_line_refusal(p):
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr[:2000]
    assert p.stdout == ""
    return lines[0]


def test_a_module_config_over_1_mib_is_refused(tmp_path):
    path = module_config(tmp_path, {"mode": "Direct"})
    path.write_text(path.read_text() + "#" * (1 << 20) + "\n")
    line = one_line_refusal(converge(path, tmp_path / "state", expect_rc=2))
    assert "larger than 1 MiB" in line and "mc.yaml" in line
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("shape", ["flow", "json", "block"])
def test_deep_nesting_is_refused_at_64_levels(tmp_path, shape):
    n = 100_000 if shape != "block" else 500
    mc = tmp_path / "deep.yaml"
    head = "apiVersion: deckhouse.io/v1alpha1\nkind: ModuleConfig\nmetadata: {name: embedded-registry}\nspec:\n  settings:\n    x: "
    if shape == "flow":
        mc.write_text(head + "[" * n + "]" * n + "\n")
    elif shape == "json":
        mc.write_text(json.dumps({"apiVersion": "deckhouse.io/v1alpha1", "kind": "ModuleConfig",
                                  "metadata": {"name": "embedded-registry"}})[:-1]
                      + ', "spec": {"settings": {"x": ' + '{"a": ' * n + "1" + "}" * n + "}}}")
    else:
        mc.write_text(head + "\n" + "".join("  " * (i + 3) + "a:\n" for i in range(n)))
    line = one_line_refusal(converge(mc, tmp_path / "state", expect_rc=2))
    assert "nested deeper than 64 levels" in line, line
    assert not (tmp_path / "state").exists()


def nested(n):
    v = "leaf"
    for _ in range(n):
        v = {"x": v}
    return v


def test_nodes_nested_64_levels_pass_and_65_are_refused(tmp_path):
    mc = module_config(tmp_path, {"mode": "Direct"})
    doc = yaml.safe_load(NODES3.read_text())
    # List (1) > items (2) > Node (3) > spec and 61 maps below it: 64 levels.
    doc["items"][0]["spec"] = nested(61)
    ok = tmp_path / "nodes-64.yaml"
    ok.write_text(yaml.safe_dump(doc))
    converge(mc, tmp_path / "state", ok)
    doc["items"][0]["spec"] = nested(62)
    bad = tmp_path / "nodes-65.yaml"
    bad.write_text(yaml.safe_dump(doc))
    before = digest(tmp_path / "state")
    line = one_line_refusal(converge(mc, tmp_path / "state", bad, expect_rc=2))
    assert "--nodes" in line and "items[0].spec.x" in line and "nested deeper than 64 levels" in line, line
    assert digest(tmp_path / "state") == before


def test_a_nodes_file_over_256_mib_is_refused_unread(tmp_path):
    big = tmp_path / "nodes.yaml"
    with open(big, "wb") as f:
        f.write(b"apiVersion: v1\nkind: List\nitems: []\n")
        f.truncate((256 << 20) + 1)
    line = one_line_refusal(converge(EXAMPLES / "moduleconfig-direct.yaml", tmp_path / "state", big, expect_rc=2))
    assert "--nodes" in line and "larger than 256 MiB" in line
    assert not (tmp_path / "state").exists()


# --- 5. duplicate keys ----------------------------------------------------------------------

MC_HEAD = "apiVersion: deckhouse.io/v1alpha1\nkind: ModuleConfig\nmetadata:\n  name: embedded-registry\n"


@pytest.mark.parametrize("text,path", [
    (MC_HEAD + "spec:\n  settings:\n    mode: Detached\n    mode: Direct\n", "spec.settings.mode"),
    (MC_HEAD + "spec:\n  version: 1\n  settings: {mode: Direct}\n  version: 1\n", "spec.version"),
    (MC_HEAD + "kind: ModuleConfig\nspec: {}\n", "kind"),
    ('{"apiVersion": "deckhouse.io/v1alpha1", "kind": "ModuleConfig", "metadata": {"name": "embedded-registry"},'
     ' "spec": {"settings": {"mode": "Proxy", "proxy": {"host": "h", "host": "g"}}}}', "spec.settings.proxy.host"),
])
def test_duplicate_keys_in_a_module_config_are_refused(tmp_path, text, path):
    mc = tmp_path / "mc.yaml"
    mc.write_text(text)
    line = one_line_refusal(converge(mc, tmp_path / "state", expect_rc=2))
    assert f"{path}: duplicate key" in line, line
    assert not (tmp_path / "state").exists()


def test_duplicate_keys_in_nodes_and_global_values_are_refused(tmp_path):
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text("- apiVersion: v1\n  kind: Node\n  metadata:\n    name: m1\n    name: m2\n")
    line = one_line_refusal(converge(EXAMPLES / "moduleconfig-direct.yaml", tmp_path / "state", nodes, expect_rc=2))
    assert "--nodes" in line and "[0].metadata.name: duplicate key" in line, line
    gv = tmp_path / "global.yaml"
    gv.write_text("global:\n  clusterConfiguration: {}\n  clusterConfiguration: {}\n")
    line = one_line_refusal(converge(EXAMPLES / "moduleconfig-direct.yaml", tmp_path / "state",
                                     extra=["--global-values", str(gv)], expect_rc=2))
    assert "--global-values" in line and "global.clusterConfiguration: duplicate key" in line, line
    assert not (tmp_path / "state").exists()


# --- 6. wrong-shaped --nodes files ----------------------------------------------------------

NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "m1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}}


def with_(path, value):
    node = json.loads(json.dumps(NODE))
    *parents, last = path.split(".")
    d = node
    for k in parents:
        d = d[k]
    if value is KeyError:
        del d[last]
    else:
        d[last] = value
    return node


@pytest.mark.parametrize("doc,needle", [
    ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}, "is not a Node, a NodeList or a list of Nodes"),
    ("just a string", "is not a Node, a NodeList or a list of Nodes"),
    ({"apiVersion": "v1", "kind": "NodeList", "items": {"a": 1}}, "items must be a list of Nodes"),
    ([NODE, "m2"], "item 1: is not a Node"),
    ([{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}], "item 0: is not a Node"),
    ([with_("metadata.name", KeyError)], "metadata.name"),
    ([with_("metadata", "m1")], "metadata must be a mapping"),
    ([with_("metadata.name", 7)], "metadata.name must be a string"),
    ([with_("metadata.name", "Master_1")], "DNS subdomain"),
    ([with_("metadata.labels", ["node-role.kubernetes.io/control-plane"])], "metadata.labels"),
    ([with_("status.addresses", {"InternalIP": "10.0.0.1"})], "status.addresses"),
    ([with_("apiVersion", "v2")], "apiVersion must be v1"),
], ids=lambda x: x if isinstance(x, str) else None)
def test_wrong_shaped_nodes_files_are_refused(tmp_path, doc, needle):
    state = tmp_path / "state"
    converge(EXAMPLES / "moduleconfig-direct.yaml", state)
    before = digest(state)
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text(yaml.safe_dump(doc))
    line = one_line_refusal(converge(EXAMPLES / "moduleconfig-direct.yaml", state, nodes, expect_rc=2))
    assert line.startswith("error: --nodes ") and needle in line, line
    assert digest(state) == before, "state untouched"


def test_accepted_node_list_shapes(tmp_path):
    """The example, a NodeList, single Node documents and a bare list all converge to
    the same masters."""
    mc = EXAMPLES / "moduleconfig-direct.yaml"
    items = yaml.safe_load(NODES3.read_text())["items"]
    shapes = {
        "example": NODES3.read_text(),
        "nodelist": yaml.safe_dump({"apiVersion": "v1", "kind": "NodeList", "items": items}),
        "documents": yaml.safe_dump_all(items),
        "list": json.dumps(items),
    }
    masters = set()
    for name, text in shapes.items():
        f = tmp_path / f"{name}.yaml"
        f.write_text(text)
        s = json.loads(converge(mc, tmp_path / f"state-{name}", f, extra=["--json"]).stdout)
        masters.add(tuple(m["name"] for m in s["masters"]))
    assert masters == {("master-0", "master-1", "master-2")}
