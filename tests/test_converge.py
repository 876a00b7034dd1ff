"""The local converge end to end: real hook processes, the real Helm engine, strict
Kubernetes schemas, a file-backed cluster."""
import base64
import json
import pathlib
import re
import subprocess
import sys
import venv

import pytest
import yaml

from conftest import EXAMPLES, ROOT, Converge, module_config, nodes_file, run, tree_digest
from registry_env import switch_state

NODES3 = EXAMPLES / "nodes-3-masters.yaml"
PROXY = {"mode": "Proxy", "proxy": {"host": "registry.example.com", "path": "/deckhouse/ee",
                                    "user": "puller", "password": "s3cr3t-Pa55word"}}


@pytest.mark.parametrize("example", ["moduleconfig-proxy.yaml", "moduleconfig-detached.yaml",
                                     "moduleconfig-direct.yaml"])
def test_converge_twice_changes_nothing(converge, example):
    first = converge(EXAMPLES / example, NODES3)
    assert first["changed"]
    state_after_first = tree_digest(converge.state)
    second = converge(EXAMPLES / example, NODES3)
    assert not second["changed"], second
    assert second["objects"] == {"created": [], "updated": [], "deleted": []}
    assert tree_digest(converge.state) == state_after_first
    assert first["hookRuns"] == ["Synchronization:discover-masters", "beforeHelm:resolve-mode",
                                 "beforeHelm:pki", "beforeHelm:users", "beforeHelm:next-release",
                                 "beforeHelm:registry-switch",
                                 "beforeHelm:gc-window"]


def test_proxy_on_three_masters(converge):
    s = converge(EXAMPLES / "moduleconfig-proxy.yaml", NODES3)
    assert s["mode"] == "Proxy" and s["highAvailability"] is True
    assert [m["name"] for m in s["masters"]] == ["master-0", "master-1", "master-2"], "both labels, workers out"
    values = converge.values()
    assert values["embeddedRegistry"]["proxy"]["ttl"] == "168h", "schema defaults applied"
    assert values["global"]["discovery"]["clusterMasterCount"] == 3
    # registry.example.com answers nowhere here: the upstream check fails, so no
    # registry is rendered and the nodes keep pulling from the upstream.
    state, cond = switch_state(converge.state)
    assert state["registry"] is None and state["cluster"] == "Upstream"
    checks = cond["ChecksPassed"]
    assert checks["status"] == "False" and checks["reason"] == "CheckConnect", checks
    assert "templates/service.yaml" not in converge.rendered()
    assert s["switch"]["registry"] == "none" and s["switch"]["cluster"] == "Upstream"
    assert s["switch"]["check"].startswith("upstream failed [connect]: "), s["switch"]
    assert (converge.state / "objects/_cluster/Node/master-1.json").exists()
    assert (converge.state / "objects/_cluster/ModuleConfig/embedded-registry.json").exists()


def test_rendered_manifests_pass_kubernetes_validate_strict(converge):
    converge(EXAMPLES / "moduleconfig-proxy.yaml", NODES3)
    files = [converge.state / "rendered" / rel for rel in converge.rendered()]
    assert files
    kv = pathlib.Path(sys.executable).parent / "kubernetes-validate"
    p = subprocess.run([str(kv), "--strict", "-k", "1.30.0", *map(str, files)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_every_x_example_converges(converge, tmp_path):
    config = yaml.safe_load((ROOT / "openapi/config-values.yaml").read_text())
    assert len(config["x-examples"]) >= 3
    kv = pathlib.Path(sys.executable).parent / "kubernetes-validate"
    for i, example in enumerate(config["x-examples"]):
        converge = Converge(tmp_path / f"state-{i}")
        converge(module_config(tmp_path, example, name=f"ex{i}.yaml"), NODES3)
        # The static pods travel as strings inside the per-master Secrets: validate them too.
        secrets = converge.state / "rendered/templates/registry-node-config.yaml"
        pods = []
        if secrets.exists():
            for doc in yaml.safe_load_all(secrets.read_text()):
                if doc:
                    pod = base64.b64decode(doc["data"].get("manifest.embedded-registry.yaml", "")).decode()
                    assert pod, f"x-examples[{i}]: Secret {doc['metadata']['name']} has no static pod"
                    path = tmp_path / f"ex{i}-{doc['metadata']['name']}-pod.yaml"
                    path.write_text(pod)
                    pods.append(str(path))
        # Detached deploys first and checks the mirror later; Proxy deploys only after
        # its upstream check, and anything on S3 only after its storage check, which
        # fail here (the example hosts answer nowhere).
        on_s3 = any((example.get(s) or {}).get("storageMode") == "S3" for s in ("proxy", "detached"))
        assert bool(pods) == (example.get("mode") == "Detached" and not on_s3), (i, example)
        if pods:
            p = subprocess.run([str(kv), "--strict", "-k", "1.30.0", *pods], capture_output=True, text=True)
            assert p.returncode == 0, p.stdout + p.stderr


def test_the_product_documents_examples_validate_as_written(converge, tmp_path):
    seed = sorted((ROOT.parent / "shared" / "seed").glob("*.txt"))
    blocks = []
    for doc in seed:
        blocks += re.findall(r"```yaml\n(.*?)```", doc.read_text(), re.S)
    examples = [EXAMPLES / "moduleconfig-proxy.yaml", EXAMPLES / "moduleconfig-detached.yaml"]
    for i, block in enumerate(blocks):
        path = tmp_path / f"seed{i}.yaml"
        path.write_text(block)
        examples.append(path)
    for path in examples:
        converge(path, NODES3)
    # The examples/ files are the product document's examples verbatim (comments aside).
    for block in blocks:
        mc = yaml.safe_load(block)
        assert mc in [yaml.safe_load(p.read_text()) for p in examples[:2]]


def test_direct_renders_no_registry_and_switching_removes_it(converge, tmp_path):
    # With Deckhouse's monitoring modules, so that the alerts render (tests/test_monitoring.py).
    monitoring = tmp_path / "globals.yaml"
    monitoring.write_text(yaml.safe_dump({"enabledModules": ["operator-prometheus-crd"], "modulesImages": {
        "digests": {"common": {"kubeRbacProxy": "sha256:" + "4b" * 32}}}}))
    g = ["--global-values", str(monitoring)]
    converge(EXAMPLES / "moduleconfig-detached.yaml", NODES3, extra=g)
    assert {"templates/service.yaml", "templates/registry-node-config.yaml"} <= set(converge.rendered())
    s = converge(EXAMPLES / "moduleconfig-direct.yaml", extra=g)
    assert s["mode"] == "Direct"
    # The cluster never pulled through the masters, so the registry goes at once; the
    # manager goes with it (no master reported a static pod in this converge), and so
    # does its scrape (the PodMonitor).
    assert s["rendered"]["deleted"] == ["templates/manager.yaml", "templates/monitoring.yaml",
                                        "templates/registry-node-config.yaml", "templates/registry-rotation.yaml",
                                        "templates/service.yaml"]
    assert list(converge.rendered()) == ["templates/node-group-configuration.yaml",
                                         "templates/prometheus-rules.yaml"], "certificate alerts and mirror cleanup stay"
    rules = [r["alert"] for d in yaml.safe_load_all(converge.rendered()["templates/prometheus-rules.yaml"]) if d
             for g_ in d["spec"]["groups"] for r in g_["rules"]]
    assert "D8EmbeddedRegistryCertificateExpired" in rules and "D8EmbeddedRegistryRotationFailing" not in rules
    assert "rm -f" in converge.rendered()["templates/node-group-configuration.yaml"]


def test_master_set_changes_follow_the_nodes(converge, tmp_path):
    converge(EXAMPLES / "moduleconfig-detached.yaml", NODES3)
    two = nodes_file(tmp_path, [("master-0", "10.128.0.10"), ("master-1", "10.128.0.99")])
    s = converge(EXAMPLES / "moduleconfig-detached.yaml", two)
    assert s["masters"] == [{"name": "master-0", "internalIP": "10.128.0.10"},
                            {"name": "master-1", "internalIP": "10.128.0.99"}]
    assert sorted(s["objects"]["deleted"]) == ["Node/master-2", "Node/worker-0", "Node/worker-1",
                                               "d8-system/Secret/registry-node-master-2-pki"]
    assert s["objects"]["updated"] == ["Node/master-0", "Node/master-1",
                                       "d8-system/Secret/registry-node-master-1-pki",  # its IP changed
                                       "d8-system/Secret/registry-ro-pull",  # lists master endpoints
                                       "d8-system/Secret/registry-state"]  # NodesAcknowledged: Ready masters, not acknowledged
    assert s["valuesChanged"]


def test_master_without_internal_ip_is_skipped(converge, tmp_path):
    nodes = nodes_file(tmp_path, [("m-a", "10.0.0.1"), ("m-b", None)])
    s = converge(module_config(tmp_path, PROXY), nodes)
    assert [m["name"] for m in s["masters"]] == ["m-a"]
    # The control plane still has two masters, so the HA default follows it.
    assert s["highAvailability"] is True


def test_disabled_module_renders_nothing(converge, tmp_path):
    converge(EXAMPLES / "moduleconfig-proxy.yaml", NODES3)
    s = converge(module_config(tmp_path, PROXY, enabled=False))
    assert s["enabled"] is False and s["manifests"] == 0
    assert converge.rendered() == {}


def test_a_failing_hook_leaves_the_state_untouched(converge, tmp_path):
    converge(EXAMPLES / "moduleconfig-direct.yaml", NODES3)
    before = tree_digest(converge.state)
    workers_only = nodes_file(tmp_path, [], workers=2)
    p = converge(module_config(tmp_path, PROXY), workers_only, expect_rc=1)
    assert "hook resolve-mode failed" in p.stderr and "at least one master" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert tree_digest(converge.state) == before


def test_secrets_never_reach_the_summary_or_logs(converge, tmp_path):
    cfg = module_config(tmp_path, PROXY)
    for extra in ([], ["--json"]):
        args = ["converge", "--module-config", str(cfg), "--state", str(converge.state), "--module-dir", str(ROOT),
                "--python", sys.executable, "--nodes", str(NODES3)]
        p = run(args + extra)
        assert p.returncode == 0, p.stderr
        assert "s3cr3t-Pa55word" not in p.stdout + p.stderr
    bad = dict(PROXY, proxy=dict(PROXY["proxy"], password=123456789))
    p = run(["converge", "--module-config", str(module_config(tmp_path, bad, name="bad.yaml")),
             "--state", str(tmp_path / "s2"), "--module-dir", str(ROOT), "--python", sys.executable])
    assert p.returncode == 2 and "123456789" not in p.stdout + p.stderr
    assert "spec.settings.proxy.password" in p.stderr


def test_missing_helm_engine_is_explained(converge, tmp_path):
    bare = tmp_path / "bare-venv"
    venv.create(bare, with_pip=False)
    p = converge(EXAMPLES / "moduleconfig-proxy.yaml", NODES3,
                 python=bare / "bin" / "python", expect_rc=1)
    assert "the Helm engine is not installed" in p.stderr and "scripts/setup" in p.stderr
    assert not converge.state.exists(), "nothing written"


INVALID = [
    ({"mode": "Mirror"}, "spec.settings.mode"),
    ({"mode": "Proxy"}, "spec.settings.proxy"),
    ({"mode": "Detached"}, "spec.settings.detached"),
    ({"proxy": {"host": "h"}}, "spec.settings.proxy"),
    ({"mode": "Proxy", "proxy": {"host": "h"}, "detached": {"storageMode": "Fs"}}, "spec.settings.detached"),
    ({"mode": "Detached", "detached": {}, "highAvailability": True}, "spec.settings.highAvailability"),
    ({"mode": "Proxy", "proxy": {"path": "/deckhouse/ee"}}, "spec.settings.proxy.host"),
    ({"mode": "Proxy", "proxy": {"host": "h", "user": "u"}}, "spec.settings.proxy.password"),
    ({"mode": "Proxy", "proxy": {"host": "h", "password": "p"}}, "spec.settings.proxy.user"),
    ({"mode": "Proxy", "proxy": {"host": "h", "ttl": "7d"}}, "spec.settings.proxy.ttl"),
    ({"mode": "Proxy", "proxy": {"host": "h", "scheme": "ftp"}}, "spec.settings.proxy.scheme"),
    ({"mode": "Proxy", "proxy": {"host": "https://h"}}, "spec.settings.proxy.host"),
    ({"mode": "Proxy", "proxy": {"host": "h", "path": "deckhouse/ee"}}, "spec.settings.proxy.path"),
    ({"mode": "Proxy", "proxy": {"host": "h", "ca": "not a certificate"}}, "spec.settings.proxy.ca"),
    ({"mode": "Proxy", "proxy": {"host": "h", "storageMode": "Nfs"}}, "spec.settings.proxy.storageMode"),
    ({"mode": "Detached", "detached": {"rotation": {"keepReleases": 0}}}, "spec.settings.detached.rotation.keepReleases"),
    ({"mode": "Direct", "unknownSetting": 1}, "spec.settings"),
    ({"mode": "Proxy", "proxy": {"host": "h", "hots": "x"}}, "spec.settings.proxy"),
    ({"mode": "Proxy", "highAvailability": "yes", "proxy": {"host": "h"}}, "spec.settings.highAvailability"),
]


@pytest.mark.parametrize("settings,field", INVALID, ids=[f for _, f in INVALID])
def test_invalid_configs_are_rejected_naming_the_field(converge, tmp_path, settings, field):
    converge(EXAMPLES / "moduleconfig-direct.yaml", NODES3)
    before = tree_digest(converge.state)
    p = converge(module_config(tmp_path, settings), expect_rc=2)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert re.match(rf"error: invalid ModuleConfig: {re.escape(field)}: ", lines[0]), lines[0]
    assert p.stdout == ""
    assert tree_digest(converge.state) == before, "state untouched"


@pytest.mark.parametrize("doc,needle", [
    ({"apiVersion": "v1", "kind": "ModuleConfig", "metadata": {"name": "embedded-registry"}}, "apiVersion"),
    ({"apiVersion": "deckhouse.io/v1alpha1", "kind": "ModuleConfig", "metadata": {"name": "other"}}, "metadata.name"),
    ({"apiVersion": "deckhouse.io/v1alpha1", "kind": "ModuleConfig", "metadata": {"name": "embedded-registry"},
      "spec": {"version": 2}}, "spec.version"),
    ({"apiVersion": "deckhouse.io/v1alpha1", "kind": "ModuleConfig", "metadata": {"name": "embedded-registry"},
      "spec": {"settings": "Proxy"}}, "spec.settings"),
])
def test_invalid_module_config_envelope(converge, tmp_path, doc, needle):
    path = tmp_path / "mc.yaml"
    path.write_text(yaml.safe_dump(doc))
    p = converge(path, expect_rc=2)
    assert needle in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not converge.state.exists()


def test_unreadable_inputs_fail_cleanly(converge, tmp_path):
    p = converge(tmp_path / "absent.yaml", expect_rc=2)
    assert "absent.yaml" in p.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("apiVersion: [unclosed")
    p = converge(broken, expect_rc=2)
    assert "broken.yaml" in p.stderr
    bad_nodes = tmp_path / "nodes.yaml"
    bad_nodes.write_text(json.dumps([{"kind": "Pod", "metadata": {"name": "x"}}]))
    p = converge(EXAMPLES / "moduleconfig-direct.yaml", bad_nodes, expect_rc=2)
    assert "is not a Node" in p.stderr
    assert not converge.state.exists()
