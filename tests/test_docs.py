"""The operator's documentation (docs/*.md and their `_RU` twins) is tested.

Every fenced block carries a marker on the line before it, an HTML comment (invisible on
GitHub and on Deckhouse's site):

- `<!-- doc-test: ID -->`: the block is run by the scenario `ID` below, against the local
  converge's file-backed cluster or real registries (docker-registry, skopeo, openssl, jq);
- `<!-- doc-untested: REASON -->`: the block cannot run here; the reason is visible.

A block without a marker, or with an ID no scenario knows, fails the test. The twins
must have the same headings (levels, in order) and the same blocks, byte for byte.

`kubectl` cannot run here (no API server): the blocks run with `tests/tools/docs_kubectl.py`
first in PATH, a small stand-in that answers `get KIND [NAME] -o json` and `delete KIND NAME`
from the objects the converge stored (and the rendered Helm release), exactly as kubectl
prints them, and fails loudly (exit 3) on any other command, flag or kind. `jq`, `skopeo`
and `openssl` are the real programs.
"""
import base64
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
import yaml

from conftest import EXAMPLES, ROOT, module_config, nodes_file
from registry_env import NodeRegistry, secret_data, skopeo, switch_state
from test_static_pods import node_hook
from tools.oci import build_layout

DOCS = ROOT / "docs"
PAGES = ["README", "CONFIGURATION", "FAQ", "EXAMPLES"]
MARK = re.compile(r"^<!-- doc-(test|untested): (\S.*?) -->$")
FENCE = re.compile(r"^(```+|~~~+)\s*(\S*)")
HEADING = re.compile(r"^(#{1,6}) ")
KUBECTL = ROOT / "tests" / "tools" / "docs_kubectl.py"
RELEASE = "v1.66.3"


def blocks(path: pathlib.Path):
    """The fenced blocks of a page: dicts with kind (`test`, `untested` or None), arg, lang,
    code and line."""
    out, lines, i = [], path.read_text().splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, start = m.group(1), i
        mark = MARK.match(lines[i - 1]) if i > 0 else None
        body = []
        i += 1
        while i < len(lines) and not lines[i].startswith(fence):
            body.append(lines[i])
            i += 1
        assert i < len(lines), f"{path.name}:{start + 1}: fenced block never closed"
        out.append({"kind": mark and mark.group(1), "arg": mark and mark.group(2), "lang": m.group(2),
                    "code": "\n".join(body) + "\n", "line": start + 1})
        i += 1
    return out


def headings(path: pathlib.Path):
    inside, out = False, []
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            inside = not inside
        elif not inside and HEADING.match(line):
            out.append(len(HEADING.match(line).group(1)))
    return out


def all_pages():
    return [DOCS / f"{p}{suffix}.md" for p in PAGES for suffix in ("", "_RU")]


def block_code(block_id):
    """The code of the block `block_id` (from the English pages; the twins are equal)."""
    found = [b for p in all_pages()[::2] for b in blocks(p) if b["kind"] == "test" and b["arg"] == block_id]
    assert len(found) == 1, f"block {block_id}: found {len(found)} times in the English pages"
    return found[0]["code"]


class Shell:
    """Runs documented blocks with bash (errexit, pipefail) in a work directory, with the
    kubectl stand-in reading `state` first in PATH."""

    def __init__(self, tmp_path, state):
        self.cwd = tmp_path / "operator"
        self.cwd.mkdir(exist_ok=True)
        bindir = tmp_path / "docs-bin"
        bindir.mkdir(exist_ok=True)
        wrapper = bindir / "kubectl"
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{KUBECTL}" "$@"\n')
        wrapper.chmod(0o755)
        self.env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", DOCS_KUBECTL_STATE=str(state),
                        HOME=str(tmp_path / "home"))

    def __call__(self, code, expect_rc=0):
        p = subprocess.run(["bash", "-c", "set -euo pipefail\n" + code], cwd=self.cwd, env=self.env,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == expect_rc, f"rc={p.returncode}\n{code}\nstdout={p.stdout}\nstderr={p.stderr}"
        return p.stdout


def settings_paths(schema, prefix=""):
    out = []
    for name, sub in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        out.append(path)
        out += settings_paths(sub, path + ".")
    return out


# ---------------------------------------------------------------- the pages themselves

SCENARIOS = {"state-conditions", "state-summary", "mirror-access", "mirror-skopeo", "rotate-rw", "rotate-ro",
             "cert-dates", "reissue-node-pki", "back-to-direct", "example-direct", "example-proxy",
             "example-proxy-ha", "example-detached", "example-detached-rotation"}


def test_every_block_is_marked_and_known():
    used = set()
    for page in all_pages():
        assert page.exists(), f"{page.relative_to(ROOT)} is missing"
        for b in blocks(page):
            where = f"{page.relative_to(ROOT)}:{b['line']}"
            assert b["kind"], f"{where}: a fenced block without <!-- doc-test: ID --> or <!-- doc-untested: REASON -->"
            if b["kind"] == "test":
                assert b["arg"] in SCENARIOS, f"{where}: no scenario runs block {b['arg']!r}"
                used.add(b["arg"])
    assert used == SCENARIOS, f"scenarios whose block is gone from the pages: {sorted(SCENARIOS - used)}"


@pytest.mark.parametrize("page", PAGES)
def test_the_russian_twin_has_the_same_structure_and_blocks(page):
    en, ru = DOCS / f"{page}.md", DOCS / f"{page}_RU.md"
    assert headings(en) == headings(ru), "headings (levels, in order) differ"
    strip = lambda bs: [(b["kind"], b["arg"] if b["kind"] == "test" else None, b["lang"], b["code"])  # noqa: E731
                        for b in bs]
    assert strip(blocks(en)) == strip(blocks(ru))
    for p in (en, ru):
        front = p.read_text().split("\n---\n", 1)[0]
        assert front.startswith("---\ntitle: "), f"{p.name}: front matter with a title first"


@pytest.mark.parametrize("page", ["CONFIGURATION.md", "CONFIGURATION_RU.md"])
def test_configuration_names_every_setting(page):
    schema = yaml.safe_load((ROOT / "openapi" / "config-values.yaml").read_text())
    text = (DOCS / page).read_text()
    paths = settings_paths(schema)
    assert len(paths) > 15
    missing = [p for p in paths if f"`{p}`" not in text]
    assert not missing, f"{page} does not name: {missing}"
    # And names no setting that does not exist (a renamed one would linger).
    named = set(re.findall(r"`((?:proxy|detached|certificates)\.[A-Za-z0-9.]+)`", text))
    assert named <= set(paths), f"{page} names unknown settings: {sorted(named - set(paths))}"


# ---------------------------------------------------------------- the kubectl stand-in

def test_the_kubectl_stand_in_answers_as_stored_and_refuses_what_it_does_not_know(tmp_path, converge):
    converge(EXAMPLES / "moduleconfig-detached.yaml", EXAMPLES / "nodes-3-masters.yaml")
    sh = Shell(tmp_path, converge.state)
    stored = json.loads((converge.state / "objects/d8-system/Secret/registry-user-ro.json").read_text())
    assert json.loads(sh("kubectl -n d8-system get secret registry-user-ro -o json")) == stored
    listed = json.loads(sh("kubectl get nodes -o json"))
    assert [n["metadata"]["name"] for n in listed["items"]] == ["master-0", "master-1", "master-2",
                                                                 "worker-0", "worker-1"]
    rendered = json.loads(sh("kubectl -n d8-system get secret registry-node-master-0-config -o json"))
    assert "pki.ca.crt" in rendered["data"], "the Helm release's objects are seen too"
    sh("kubectl -n d8-system get secret nothing -o json", expect_rc=1)
    for bad in ("kubectl -n d8-system get secret registry-user-ro -o yaml",
                "kubectl -n d8-system get secret registry-user-ro -o jsonpath='{.data}'",
                "kubectl -n d8-system get secret -l module=embedded-registry -o json",
                "kubectl -n d8-system get deployment deckhouse -o json",
                "kubectl apply -f x.yaml",
                "kubectl -n d8-system delete secret registry-node-master-0-config"):
        p = subprocess.run(["bash", "-c", bad], cwd=sh.cwd, env=sh.env, capture_output=True, text=True)
        assert p.returncode == 3 and p.stderr.startswith("docs kubectl stand-in: unsupported"), (bad, p.stderr)


# ---------------------------------------------------------------- the FAQ's commands

def test_where_a_switch_stands(tmp_path, converge):
    """The conditions and the summary, read from a Detached cluster whose registry has
    not reported yet: every condition is listed with the stage the converge recorded."""
    converge(EXAMPLES / "moduleconfig-detached.yaml", EXAMPLES / "nodes-3-masters.yaml")
    sh = Shell(tmp_path, converge.state)
    _, cond = switch_state(converge.state)
    rows = [line.split("\t") for line in sh(block_code("state-conditions")).splitlines()]
    assert [r[0] for r in rows] == ["Ready", "ChecksPassed", "NodeServicesReady", "NodesPreflight",
                                    "NodesAcknowledged", "ClusterSwitched", "CleanupDone"]
    for t, status, reason, message in rows:
        assert (status, reason, message) == (cond[t]["status"], cond[t]["reason"], cond[t]["message"])
    assert rows[0][1:3] == ["False", "Rollout"]
    out = sh(block_code("state-summary")).splitlines()
    assert out == ["registry: Detached on master-0; cluster pulls from: Upstream", "registry.deckhouse.io"]


def test_filling_a_detached_mirror_with_skopeo(tmp_path, converge):
    """The FAQ's commands find the mirror master's address, its CA and the rw user, log in
    and push the release image into the real registry that master runs; the module's
    mirror check then passes. The test gives SOURCE (an OCI layout holding the release)
    and RELEASE in place of the block's two assignment lines."""
    ip = f"127.0.84.{20 + os.getpid() % 200}"
    masters = [("m1", ip)]
    layout = tmp_path / "bundle"
    digest = build_layout(layout, RELEASE, b"the release image\n")
    # The checks want every digest of the release too: here the module's own three
    # images are the release image itself, so pushing the release completes the mirror.
    gv = tmp_path / "global.yaml"
    own = {name: digest for name in ("distribution", "dockerAuth", "manager")}
    gv.write_text(yaml.safe_dump({"global": {"deckhouseVersion": RELEASE,
                                             "modulesImages": {"digests": {"embeddedRegistry": own}}}}))
    detached = {"mode": "Detached", "detached": {"storageMode": "Fs"}}
    step = iter(range(100))

    def again():
        converge(module_config(tmp_path, detached, name=f"mc-{next(step)}.yaml"), nodes_file(tmp_path, masters),
                 extra=["--global-values", str(gv)])

    again()
    root = tmp_path / "host-m1"
    node_hook(tmp_path, converge.state, "m1", root)
    access, push = block_code("mirror-access"), block_code("mirror-skopeo")
    assignments = ["SOURCE=docker://registry.deckhouse.ru/deckhouse/ee\n", f"RELEASE={RELEASE}\n"]
    for line in assignments:
        assert line in push, f"the block no longer sets {line.strip()}"
        push = push.replace(line, "")
    push = f"SOURCE=oci:{layout}\nRELEASE={RELEASE}\n" + push
    sh = Shell(tmp_path, converge.state)
    with NodeRegistry(converge.state, "m1", tmp_path / "run-m1", host_root=root) as reg:
        assert reg.host == f"{ip}:5001"
        node_hook(tmp_path, converge.state, "m1", root)
        again()
        _, cond = switch_state(converge.state)
        assert cond["Ready"]["reason"] == "MirrorIncomplete", cond
        out = sh(access + push)
        assert f"push to {ip}:5001/deckhouse/ce as rw" in out
        ro = secret_data(converge.state, "registry-user-ro")
        p = skopeo("inspect", f"--cert-dir={reg.certs}", f"--creds=ro:{ro['password']}",
                   f"docker://{reg.host}/deckhouse/ce:{RELEASE}")
        assert p.returncode == 0, p.stderr
        rw = secret_data(converge.state, "registry-user-rw")["password"]
        assert rw not in out, "the password is never printed"
        node_hook(tmp_path, converge.state, "m1", root)
        again()
        _, cond = switch_state(converge.state)
        assert cond["ChecksPassed"]["status"] == "True", cond
        assert cond["Ready"]["reason"] != "MirrorIncomplete", cond


@pytest.mark.parametrize("user", ["rw", "ro"])
def test_deleting_a_users_secret_rotates_its_password(tmp_path, converge, user):
    mc, nodes = EXAMPLES / "moduleconfig-detached.yaml", EXAMPLES / "nodes-3-masters.yaml"
    converge(mc, nodes)
    before = secret_data(converge.state, f"registry-user-{user}")
    other = "ro" if user == "rw" else "rw"
    kept = secret_data(converge.state, f"registry-user-{other}")
    auth = converge.rendered()["templates/registry-node-config.yaml"]
    sh = Shell(tmp_path, converge.state)
    assert sh(block_code(f"rotate-{user}")) == f'secret "registry-user-{user}" deleted\n'
    assert not (converge.state / f"objects/d8-system/Secret/registry-user-{user}.json").exists()
    converge(mc, nodes)
    after = secret_data(converge.state, f"registry-user-{user}")
    assert after["name"] == user and len(after["password"]) == 24
    assert after["password"] != before["password"]
    assert secret_data(converge.state, f"registry-user-{other}") == kept
    assert converge.rendered()["templates/registry-node-config.yaml"] != auth, "the registry gets the new user"


def test_certificate_dates_and_reissuing_a_masters_certificates(tmp_path, converge):
    mc, nodes = EXAMPLES / "moduleconfig-detached.yaml", EXAMPLES / "nodes-3-masters.yaml"
    converge(mc, nodes)
    sh = Shell(tmp_path, converge.state)
    out = sh(block_code("cert-dates")).splitlines()
    assert len(out) == 4 and "CN = embedded-registry-ca" in out[0] and out[1].startswith("notAfter=")
    assert out[3].startswith("notAfter=") and out[1] != out[3], "the CA outlives the server certificate"
    before = secret_data(converge.state, "registry-node-master-0-pki")
    pki = secret_data(converge.state, "registry-pki")
    assert sh(block_code("reissue-node-pki")) == 'secret "registry-node-master-0-pki" deleted\n'
    converge(mc, nodes)
    after = secret_data(converge.state, "registry-node-master-0-pki")
    assert after["distribution.crt"] != before["distribution.crt"]
    assert secret_data(converge.state, "registry-pki") == pki, "the same CA"
    (tmp_path / "ca.crt").write_text(pki["ca.crt"])
    (tmp_path / "leaf.crt").write_text(after["distribution.crt"])
    p = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "ca.crt"), str(tmp_path / "leaf.crt")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


# ---------------------------------------------------------------- the ModuleConfigs

def moduleconfig_block(tmp_path, block_id):
    path = tmp_path / f"{block_id}.yaml"
    path.write_text(block_code(block_id))
    return path


@pytest.mark.parametrize("block_id,mode,registry", [
    ("example-direct", "Direct", False), ("example-proxy", "Proxy", False), ("example-proxy-ha", "Proxy", False),
    ("example-detached", "Detached", True), ("example-detached-rotation", "Detached", True)])
def test_every_example_converges_in_its_mode(tmp_path, converge, block_id, mode, registry):
    """Each example is a valid ModuleConfig for its mode. A Proxy example's upstream does
    not answer here (its host resolves to a closed loopback port), so no registry is
    rendered and the check's failure is recorded; a Detached one renders its registry."""
    out = converge(moduleconfig_block(tmp_path, block_id), EXAMPLES / "nodes-3-masters.yaml")
    values = converge.values()["embeddedRegistry"]
    assert values["internal"]["mode"] == mode, out
    rendered = "templates/registry-node-config.yaml" in converge.rendered()
    assert rendered == registry
    if mode == "Proxy":
        _, cond = switch_state(converge.state)
        assert cond["ChecksPassed"]["status"] == "False", cond
    if block_id == "example-proxy-ha":
        assert values["internal"]["highAvailability"] is True
    if block_id == "example-detached-rotation":
        cm = yaml.safe_load(converge.rendered()["templates/registry-rotation.yaml"])
        assert cm["data"]["enabled"] == "true", cm


def test_going_back_to_direct(tmp_path, converge):
    nodes = EXAMPLES / "nodes-3-masters.yaml"
    converge(EXAMPLES / "moduleconfig-detached.yaml", nodes)
    assert "templates/registry-node-config.yaml" in converge.rendered()
    converge(moduleconfig_block(tmp_path, "back-to-direct"), nodes)
    assert "templates/registry-node-config.yaml" not in converge.rendered()
    state, cond = switch_state(converge.state)
    assert state["cluster"] == "Upstream" and cond["Ready"]["status"] == "True", cond
    assert base64.b64decode(json.loads((converge.state / "objects/d8-system/Secret/deckhouse-registry.json")
                                       .read_text())["data"]["address"]).decode() == "registry.deckhouse.io"


@pytest.mark.parametrize("page", ["FAQ.md", "FAQ_RU.md"])
def test_the_alert_table_names_exactly_the_alerts_the_module_ships(page):
    """The FAQ's alert table and monitoring/prometheus-rules/ name the same alerts."""
    shipped = set()
    for rules in (ROOT / "monitoring" / "prometheus-rules").iterdir():
        shipped |= set(re.findall(r"^\s*- alert: (\S+)\s*$", rules.read_text(), re.M))
    assert shipped, "no alert found under monitoring/prometheus-rules/"
    table = set(re.findall(r"^\| `(D8EmbeddedRegistry\w+)` \|", (ROOT / "docs" / page).read_text(), re.M))
    assert table == shipped, f"{page}: missing {sorted(shipped - table)}, unknown {sorted(table - shipped)}"
