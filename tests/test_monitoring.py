"""Monitoring the Deckhouse way: rules, the scrape of the manager and the dashboard are
rendered only with Deckhouse's monitoring modules, and every alert is evaluated by the
real PromQL engine (`promtool test rules`) over the metrics their sources really export:
the hooks run as the runners run them (the converge for module hooks, the classic
protocol for node hooks) and a real docker-registry serves its own /metrics.

Labels a scrape adds are taken from the rendered PodMonitor's relabelings; shell-operator
adds `hook` to every hook metric (its documented contract). kube-state-metrics is not
installable here: its two series carry its documented labels.

Above 400 lines: one file, because every alert's case shares the series collected
from the real sources at its top."""
import json
import os
import re
import shutil
import subprocess
import urllib.request

import pytest
import yaml

from conftest import BIN, ROOT, Converge, module_config, nodes_file
from registry_env import NodeRegistry, node_config, secret_data, skopeo
from test_static_pods import MASTERS, DETACHED, proxy_settings
from tools.mirror_fixture import ROOT as MIRROR_ROOT, build_mirror
from tools.registry import OWN_CA, Registry, password

PROMTOOL = shutil.which("promtool")
MONITORING = ["operator-prometheus-crd", "prometheus-crd", "prometheus"]
KRP_DIGEST = "sha256:" + "4b" * 32
MODULE_LABELS = {"heritage": "deckhouse", "module": "embedded-registry"}
# Metrics of kube-state-metrics the rules read (not a source of this module).
KUBE_STATE_METRICS = {"kube_pod_status_ready", "kube_pod_status_phase"}


def globals_file(tmp_path, modules=MONITORING, digest=True, name="globals.yaml", held=None):
    # A named release: a Proxy registry warms its images and reports them (warm metrics).
    # With `held` (a digest the upstream holds), every image of the release is that one,
    # so the upstream check, which asks for every digest, passes.
    doc = {"enabledModules": list(modules), "deckhouseVersion": "v1.60.0"}
    if digest:
        doc["modulesImages"] = {"digests": {"common": {"kubeRbacProxy": held or KRP_DIGEST}}}
    if held:
        doc["modulesImages"]["digests"]["embeddedRegistry"] = {
            name: held for name in ("distribution", "dockerAuth", "manager")}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def docs(rendered, path):
    return [d for d in yaml.safe_load_all(rendered.get(path, "")) if d]


def kinds(rendered):
    return sorted(f"{d['kind']}/{d['metadata']['name']}" for p in rendered for d in docs(rendered, p))


def daemonset(rendered):
    return next(d for d in docs(rendered, "templates/manager.yaml") if d["kind"] == "DaemonSet")


# --- rendering ---------------------------------------------------------------------

def test_monitoring_objects_render_only_with_the_monitoring_modules(tmp_path):
    nodes = nodes_file(tmp_path, MASTERS)
    mc = module_config(tmp_path, DETACHED)
    plain = Converge(tmp_path / "plain")
    plain(mc, nodes)
    rendered = plain.rendered()
    assert "templates/prometheus-rules.yaml" not in rendered and "templates/monitoring.yaml" not in rendered
    assert not [k for k in kinds(rendered) if k.split("/")[0] in
                ("PrometheusRule", "PodMonitor", "GrafanaDashboardDefinition", "ClusterRoleBinding")]
    assert [c["name"] for c in daemonset(rendered)["spec"]["template"]["spec"]["containers"]] == ["manager"]

    full = Converge(tmp_path / "full")
    full(mc, nodes, extra=["--global-values", str(globals_file(tmp_path))])
    rendered = full.rendered()
    got = kinds(rendered)
    for k in ("PrometheusRule/embedded-registry-certificates", "PrometheusRule/embedded-registry-switch",
              "PrometheusRule/embedded-registry-registry", "PrometheusRule/embedded-registry-rotation",
              "PodMonitor/embedded-registry", "ClusterRoleBinding/d8:embedded-registry:rbac-proxy",
              "GrafanaDashboardDefinition/d8-embedded-registry-kubernetes-cluster-embedded-registry"):
        assert k in got, got
    for d in docs(rendered, "templates/prometheus-rules.yaml"):
        assert d["metadata"]["namespace"] == "d8-monitoring"
        assert d["metadata"]["labels"] == {**MODULE_LABELS, "app": "prometheus", "prometheus": "main",
                                           "component": "rules"}
    [pm] = [d for d in docs(rendered, "templates/monitoring.yaml") if d["kind"] == "PodMonitor"]
    assert pm["metadata"]["namespace"] == "d8-monitoring" and pm["metadata"]["labels"]["prometheus"] == "main"
    [dash] = [d for d in docs(rendered, "templates/monitoring.yaml") if d["kind"] == "GrafanaDashboardDefinition"]
    assert "namespace" not in dash["metadata"], "a cluster-scoped resource"
    assert dash["metadata"]["labels"] == {**MODULE_LABELS, "prometheus.deckhouse.io/grafana-dashboard": ""}
    assert dash["spec"]["folder"] == "Kubernetes Cluster"
    assert json.loads(dash["spec"]["definition"]) == json.loads(
        (ROOT / "monitoring/grafana-dashboards/kubernetes-cluster/embedded-registry.json").read_text())
    s = full(mc, nodes, extra=["--global-values", str(globals_file(tmp_path))])
    assert s["changed"] is False and s["rendered"] == {"created": [], "updated": [], "deleted": []}

    # Each CRD module alone renders only its own objects.
    rules_only = Converge(tmp_path / "rules-only")
    rules_only(mc, nodes, extra=["--global-values", str(globals_file(tmp_path, ["operator-prometheus-crd"],
                                                                        name="g1.yaml"))])
    got = {k.split("/")[0] for k in kinds(rules_only.rendered())}
    assert {"PrometheusRule", "PodMonitor"} <= got and "GrafanaDashboardDefinition" not in got
    dash_only = Converge(tmp_path / "dash-only")
    dash_only(mc, nodes, extra=["--global-values", str(globals_file(tmp_path, ["prometheus-crd"], digest=False,
                                                                       name="g2.yaml"))])
    got = {k.split("/")[0] for k in kinds(dash_only.rendered())}
    assert "GrafanaDashboardDefinition" in got and not {"PrometheusRule", "PodMonitor"} & got
    assert [c["name"] for c in daemonset(dash_only.rendered())["spec"]["template"]["spec"]["containers"]] == ["manager"]


def test_rules_follow_the_registry_and_the_mode(tmp_path):
    """Certificate and switch alerts in every mode; registry alerts where a registry
    runs; rotation alerts in Detached mode only."""
    g = ["--global-values", str(globals_file(tmp_path))]
    c = Converge(tmp_path / "state")
    c(module_config(tmp_path, DETACHED, name="d.yaml"), nodes_file(tmp_path, MASTERS), extra=g)
    c(module_config(tmp_path, {"mode": "Direct"}, name="direct.yaml"), extra=g)
    got = [k for k in kinds(c.rendered()) if k.startswith("PrometheusRule/")]
    assert got == ["PrometheusRule/embedded-registry-certificates", "PrometheusRule/embedded-registry-switch"]


def test_without_the_kube_rbac_proxy_image_the_converge_says_which_value(tmp_path):
    c = Converge(tmp_path / "state")
    p = c(module_config(tmp_path, DETACHED), nodes_file(tmp_path, MASTERS), expect_rc=1,
          extra=["--global-values", str(globals_file(tmp_path, digest=False))])
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "global.modulesImages.digests.common.kubeRbacProxy is not set" in p.stderr
    assert not (tmp_path / "state").exists(), "nothing written"


def test_alerts_follow_deckhouse_conventions(tmp_path):
    c = Converge(tmp_path / "state")
    c(module_config(tmp_path, DETACHED), nodes_file(tmp_path, MASTERS),
      extra=["--global-values", str(globals_file(tmp_path))])
    rules = [r for d in docs(c.rendered(), "templates/prometheus-rules.yaml")
             for g in d["spec"]["groups"] for r in g["rules"]]
    assert len(rules) >= 10
    for r in rules:
        assert re.fullmatch(r"D8EmbeddedRegistry[A-Z][A-Za-z]+", r["alert"]), r["alert"]
        assert r["labels"]["tier"] == "cluster" and r["labels"]["severity_level"] in list("123456789"), r
        a = r["annotations"]
        assert (a["plk_protocol_version"], a["plk_markup_format"]) == ("1", "markdown"), r["alert"]
        assert a["summary"].strip() and "\n" not in a["summary"].strip(), r["alert"]
        assert "To fix:" in a["description"], f"{r['alert']}: the description says what to do"


def test_the_manager_exposes_metrics_only_through_kube_rbac_proxy(tmp_path):
    c = Converge(tmp_path / "state")
    c(module_config(tmp_path, DETACHED), nodes_file(tmp_path, MASTERS),
      extra=["--global-values", str(globals_file(tmp_path))])
    rendered = c.rendered()
    pod = daemonset(rendered)["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    manager, proxy = pod["containers"]
    env = {e["name"]: e.get("value") for e in manager["env"]}
    assert env["SHELL_OPERATOR_LISTEN_ADDRESS"] == "127.0.0.1", "hook metrics on loopback only"
    assert "ports" not in manager
    assert proxy["image"].endswith("@" + KRP_DIGEST)
    assert [p["name"] for p in proxy["ports"]] == ["https-metrics"]
    [port] = [p["containerPort"] for p in proxy["ports"]]
    assert f"--secure-listen-address=$(KUBE_RBAC_PROXY_LISTEN_ADDRESS):{port}" in proxy["args"]
    penv = {e["name"]: e for e in proxy["env"]}
    assert penv["KUBE_RBAC_PROXY_LISTEN_ADDRESS"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    upstreams = {u["path"]: u for u in yaml.safe_load(penv["KUBE_RBAC_PROXY_CONFIG"]["value"])["upstreams"]}
    # The proxy's upstreams are where shell-operator and distribution really listen.
    assert upstreams["/metrics/hooks"]["upstream"] == \
        f"http://127.0.0.1:{env['SHELL_OPERATOR_LISTEN_PORT']}/metrics/hooks"
    dist = yaml.safe_load(node_config(c.state, "m1")["distribution.yaml"])
    debug = dist["http"]["debug"]
    assert upstreams["/metrics/registry"]["upstream"] == f"http://{debug['addr']}{debug['prometheus']['path']}"
    assert debug["addr"].startswith("127.0.0.1:"), "distribution's metrics stay on loopback"
    for u in upstreams.values():
        assert u["authorization"]["resourceAttributes"] == {
            "namespace": "d8-system", "apiGroup": "apps", "apiVersion": "v1", "resource": "daemonsets",
            "subresource": "prometheus-metrics", "name": "embedded-registry-manager"}
    # The PodMonitor scrapes exactly those paths on that port, with a token, over TLS.
    [pm] = [d for d in docs(rendered, "templates/monitoring.yaml") if d["kind"] == "PodMonitor"]
    assert pm["spec"]["selector"]["matchLabels"] == {"app": "embedded-registry-manager"}
    assert daemonset(rendered)["spec"]["template"]["metadata"]["labels"]["app"] == "embedded-registry-manager"
    eps = pm["spec"]["podMetricsEndpoints"]
    assert sorted(e["path"] for e in eps) == sorted(upstreams)
    for e in eps:
        assert (e["port"], e["scheme"], e["bearerTokenSecret"]["name"]) == ("https-metrics", "https", "prometheus-token")
    [crb] = [d for d in docs(rendered, "templates/manager.yaml") if d["kind"] == "ClusterRoleBinding"]
    assert crb["roleRef"]["name"] == "d8:rbac-proxy"
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": "d8-system"}]


# --- the real sources ----------------------------------------------------------------

def run_node_hook(workdir, name, snapshots, binding, env):
    """A node hook run as shell-operator runs it (the binary under the hook's name);
    returns its metric operations."""
    workdir.mkdir(parents=True, exist_ok=True)
    link = workdir / name
    if not link.exists():
        os.symlink(BIN, link)
    (workdir / "bc.json").write_text(json.dumps([{"binding": binding, "type": "Schedule", "snapshots": snapshots}]))
    for f in ("k8s.json", "metrics.json"):
        (workdir / f).write_text("")
    p = subprocess.run([str(link)], capture_output=True, text=True, timeout=300, env={
        "BINDING_CONTEXT_PATH": str(workdir / "bc.json"), "KUBERNETES_PATCH_PATH": str(workdir / "k8s.json"),
        "METRICS_PATH": str(workdir / "metrics.json"), **env})
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in (workdir / "metrics.json").read_text().splitlines() if line]


def b64(s):
    import base64
    return base64.b64encode(s.encode()).decode()


class Sample(dict):
    """One exported series: name, labels, source."""


def parse_exposition(text):
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)', line)
        assert m, line
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out.append(Sample(name=m.group(1), labels=labels, source="distribution", value=float(m.group(4))))
    return out


def hook_samples(ops, hook, source):
    out = []
    for op in ops:
        if op.get("action") in ("set", "add", "observe") or "set" in op or "add" in op:
            # The runner adds the hook's name (shell-operator documents `hook`); the
            # expressions aggregate it away.
            out.append(Sample(name=op["name"], labels={**op.get("labels", {}), "hook": hook}, source=source,
                              value=op.get("value", op.get("set", op.get("add")))))
    return out


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Every series the module's sources export, from real runs: a Proxy deployment
    against a real upstream (module hooks in the converge, node-files, distribution's
    /metrics after a pull), the rotate node hook planning on a small Deckhouse-like
    mirror, a Proxy converge whose upstream check fails, and a Detached converge."""
    tmp = tmp_path_factory.mktemp("sources")
    samples = []
    up = Registry(tmp / "up").start()
    try:
        up.push("deckhouse/ee/app", "v1", b"monitored\n")
        # The upstream check asks for the platform image and every digest of the release.
        held = up.push("deckhouse/ee", "v1.60.0", b"the platform image of the named release\n")
        state = tmp / "state"
        c = Converge(state)
        g = ["--global-values", str(globals_file(tmp, held=held))]
        nodes = nodes_file(tmp, MASTERS[:1])
        c(module_config(tmp, proxy_settings(up), name="proxy.yaml"), nodes, extra=g)
        for hook, ops in json.loads((state / "metrics.json").read_text()).items():
            samples += hook_samples(ops, hook, "module hooks")
        rendered = c.rendered()

        root = tmp / "host-m1"
        secret = next(d for d in docs(rendered, "templates/registry-node-config.yaml"))
        ops = run_node_hook(tmp / "node-files", "node-files", {"node_config": [{"object": secret}], "node_status": []},
                            "resync", {"NODE_NAME": "m1", "EMBEDDED_REGISTRY_HOST_ROOT": str(root)})
        samples += hook_samples(ops, "node-files", "node hooks")

        with NodeRegistry(state, "m1", tmp / "run", host_root=root) as reg:
            ro = secret_data(state, "registry-user-ro")
            p = skopeo("copy", f"--src-cert-dir={reg.certs}", f"--src-creds=ro:{ro['password']}",
                       f"docker://{reg.host}/deckhouse/ee/app:v1", f"oci:{tmp / 'pulled'}:v1")
            assert p.returncode == 0, p.stderr + reg.log()
            text = urllib.request.urlopen(f"http://127.0.0.1:{reg.debug_port}/metrics", timeout=10).read(4 << 20)
            samples += parse_exposition(text.decode())
    finally:
        up.stop()
    # The rotate node hook on a mirror master: a small Deckhouse-like mirror, a plan.
    with Registry(tmp / "mirror", tls=OWN_CA) as mirror:
        build_mirror(mirror, tmp / "build", releases=["v1.60.0", "v1.61.0"], modules={"common": ["v1.60.0"]})
        snapshots = {
            "rotation_config": [{"object": {"kind": "ConfigMap", "data": {
                "enabled": "false", "keepReleases": "1", "minAge": "0", "path": MIRROR_ROOT,
                "runningReleases": ""}}}],
            "node_config": [{"object": {"kind": "Secret", "data": {
                "config.distribution.yaml": b64(yaml.safe_dump({"http": {"addr": mirror.host}})),
                "pki.ca.crt": b64(mirror.ca_file.read_text())}}}],
            "user_rw": [{"object": {"kind": "Secret", "data": {"name": b64("pusher"),
                                                               "password": b64(password("pusher"))}}}],
        }
        ops = run_node_hook(tmp / "rotate", "rotate", snapshots, "daily",
                            {"NODE_NAME": "m1", "EMBEDDED_REGISTRY_HOST_ROOT": str(tmp / "host-m1")})
        samples += hook_samples(ops, "rotate", "node hooks")
    # A Proxy upstream that does not answer (the example hosts): the check fails.
    failing = Converge(tmp / "failing")
    failing(ROOT / "examples/moduleconfig-proxy.yaml", nodes, extra=g)
    for hook, ops in json.loads((tmp / "failing" / "metrics.json").read_text()).items():
        samples += hook_samples(ops, hook, "module hooks")
    detached = Converge(tmp / "detached")
    detached(module_config(tmp, DETACHED, name="detached.yaml"), nodes_file(tmp, MASTERS, name="n3.yaml"), extra=g)
    for hook, ops in json.loads((tmp / "detached" / "metrics.json").read_text()).items():
        samples += hook_samples(ops, hook, "module hooks")
    return {"samples": samples, "rendered": rendered, "state": state}


def find(samples, name, value=None, **labels):
    """The first real series named `name` whose labels include `labels` (and whose
    value is `value`, when given). An empty label value is no label in Prometheus."""
    for s in samples:
        if s["name"] == name and all(s["labels"].get(k) == v for k, v in labels.items()) and \
                value in (None, s["value"]):
            return Sample(s, labels={k: v for k, v in s["labels"].items() if v != ""})
    raise AssertionError(f"no source exports {name} with {labels}: "
                         f"{sorted({(s['name'], tuple(sorted(s['labels']))) for s in samples if s['name'] == name})}")


KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
            "offset", "inf", "nan"}


def metric_names(expr):
    """The metric names a PromQL expression reads (strings, label matchers, ranges and
    grouping clauses removed; a name followed by '(' is a function or aggregation)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", e):
        if not m.group(2) and m.group(1).lower() not in KEYWORDS:
            names.add(m.group(1))
    return names


def test_the_metric_name_extractor_sees_every_name():
    assert metric_names('sum by (node) (rate(a_total{code=~"5.."}[5m])) / on (x) b - time() < 30 * 86400') == \
        {"a_total", "b"}
    assert metric_names('histogram_quantile(0.95, sum by (le) (rate(c_bucket{x="by (y)"}[$__rate_interval])))') == \
        {"c_bucket"}


def exported_names(samples):
    return {s["name"] for s in samples}


def test_the_dashboard_reads_only_exported_metrics(sources):
    dash = json.loads((ROOT / "monitoring/grafana-dashboards/kubernetes-cluster/embedded-registry.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", v["definition"])
              for v in dash["templating"]["list"] if v["type"] == "query"]
    exported = exported_names(sources["samples"])
    used = set()
    for e in exprs:
        names = metric_names(e)
        assert names, e
        assert names <= exported, f"{e}: {names - exported} is exported by no source"
        used |= names
    # Pulls, cache, storage, checks, rotation: every area of the module is on it.
    for n in ("registry_http_requests_total", "registry_storage_cache_total", "registry_storage_action_seconds_count",
              "d8_embedded_registry_check_ok", "d8_embedded_registry_cache_only",
              "d8_embedded_registry_rotation_freed_bytes"):
        assert n in used, n


# --- the alerts, evaluated by promtool -------------------------------------------------

def scrape_labels(podmonitor, path, node):
    """The labels the PodMonitor's relabelings add to a series scraped from `path`."""
    ep = next(e for e in podmonitor["spec"]["podMetricsEndpoints"] if e["path"] == path)
    out = {}
    for r in ep.get("relabelings", []):
        if r.get("action", "replace") != "replace":
            continue
        if r.get("sourceLabels") == ["__meta_kubernetes_pod_node_name"]:
            out[r["targetLabel"]] = node
        elif "replacement" in r and not r.get("sourceLabels"):
            out[r["targetLabel"]] = r["replacement"]
    return out, ep.get("honorLabels", False)


def series(name, labels):
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def expand(text, labels, value):
    """Prometheus' expansion of the two template forms the annotations use."""
    def label(m):
        assert m.group(1) in labels, f"annotation names label {m.group(1)}, the alert has {sorted(labels)}"
        return labels[m.group(1)]
    text = re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", label, text)
    text = re.sub(r"\{\{\s*\$value\s*\}\}", value, text)
    assert "{{" not in text, text
    return text


def test_every_alert_fires_over_its_real_source_and_only_then(sources, tmp_path):
    if PROMTOOL is None:
        pytest.fail("promtool is not installed: run scripts/setup (Debian package prometheus)")
    rendered, samples = sources["rendered"], sources["samples"]
    # Rules of every mode: the Proxy render plus the rotation rules of a Detached one.
    c = Converge(tmp_path / "d")
    c(module_config(tmp_path, DETACHED), nodes_file(tmp_path, MASTERS),
      extra=["--global-values", str(globals_file(tmp_path))])
    groups = {}
    for r in (rendered, c.rendered()):
        for d in docs(r, "templates/prometheus-rules.yaml"):
            for g in d["spec"]["groups"]:
                groups[g["name"]] = g
    rules = {r["alert"]: r for g in groups.values() for r in g["rules"]}
    [pm] = [d for d in docs(rendered, "templates/monitoring.yaml") if d["kind"] == "PodMonitor"]

    # Every metric an alert reads is one a source exports (or kube-state-metrics').
    exported = exported_names(samples) | KUBE_STATE_METRICS
    for name, r in rules.items():
        assert metric_names(r["expr"]) <= exported, f"{name}: {metric_names(r['expr']) - exported} exported by no source"

    hooks_added, honor = scrape_labels(pm, "/metrics/hooks", "m1")
    registry_added, _ = scrape_labels(pm, "/metrics/registry", "m1")
    assert honor, "hook labels (node, check, ...) are kept as the hooks set them"

    def hook_series(name, **match):
        s = find(samples, name, **match)
        labels = dict(s["labels"])
        if s["source"] == "node hooks":  # scraped from the manager: the hook's labels win
            labels = {**hooks_added, **labels}
        return labels

    def dist_series(name, **match):
        s = find(samples, name, **match)
        return {**s["labels"], **registry_added}

    pod = "embedded-registry-m1"  # kubelet names a static pod <name>-<node>
    static = yaml.safe_load(node_config(sources["state"], "m1")["embedded-registry.yaml"])
    assert f"{static['metadata']['name']}-m1" == pod and static["metadata"]["namespace"] == "d8-system"
    ksm_ready = {"namespace": "d8-system", "pod": pod, "uid": "u1", "condition": "true"}
    ksm_phase = {"namespace": "d8-system", "pod": pod, "uid": "u1", "phase": "Running"}
    manager_pod = {**ksm_ready, "pod": "embedded-registry-manager-x7k2p"}

    day = 86400
    ok_code = dist_series("registry_http_requests_total", code="200")
    err_code = {**ok_code, "code": "503"}
    # alert: (eval time, [(series labels-name, values when firing, values when not)], labels by)
    cert = hook_series("d8_embedded_registry_certificate_expiration_timestamp_seconds", certificate="distribution",
                       node="m1")
    check = hook_series("d8_embedded_registry_check_ok", value=0)  # as a failing check reports it
    cases = {
        "D8EmbeddedRegistryCertificateExpiringSoon": ("2h", [
            ("d8_embedded_registry_certificate_expiration_timestamp_seconds", cert,
             f"{7200 + 10 * day}x150", f"{7200 + 60 * day}x150")], ["certificate", "node"]),
        "D8EmbeddedRegistryCertificateExpired": ("2h", [
            ("d8_embedded_registry_certificate_expiration_timestamp_seconds", cert, "3600x150", f"{30 * day}x150")],
            ["certificate", "node"]),
        "D8EmbeddedRegistryCheckFailing": ("1h", [("d8_embedded_registry_check_ok", check, "0x90", "1x90")],
                                           ["check", "kind"]),
        "D8EmbeddedRegistryStorageCheckFailing": ("1h", [
            ("d8_embedded_registry_check_ok", {**check, "check": "storage", "kind": "bad-credentials"},
             "0x90", "1x90")], ["kind"]),
        "D8EmbeddedRegistrySwitchNotReady": ("2h", [
            ("d8_embedded_registry_switch_ready", hook_series("d8_embedded_registry_switch_ready"), "0x150", "1x150")],
            []),
        "D8EmbeddedRegistryNodesNotAcknowledging": ("10m", [
            ("d8_embedded_registry_nodes", hook_series("d8_embedded_registry_nodes", state="overdue"), "2x20", "0x20")],
            []),
        "D8EmbeddedRegistryNodesPreflightFailed": ("1h", [
            ("d8_embedded_registry_nodes", hook_series("d8_embedded_registry_nodes", state="preflight_failed"),
             "1x90", "0x90")], []),
        "D8EmbeddedRegistryServesCacheOnly": ("1h", [
            ("d8_embedded_registry_cache_only", hook_series("d8_embedded_registry_cache_only", node="m1"),
             "1x90", "0x90")], ["node"]),
        "D8EmbeddedRegistryCacheNotWarm": ("2h", [
            ("d8_embedded_registry_warm_images", hook_series("d8_embedded_registry_warm_images", state="cached"),
             "2x150", "5x150"),
            ("d8_embedded_registry_warm_images", hook_series("d8_embedded_registry_warm_images", state="wanted"),
             "5x150", "5x150")], ["node"]),
        "D8EmbeddedRegistryRotationFailing": ("26h", [
            ("d8_embedded_registry_rotation_failed", hook_series("d8_embedded_registry_rotation_failed", node="m1"),
             "1x1620", "0x1620")], ["node"]),
        "D8EmbeddedRegistryGcWindowStuck": ("2h", [
            ("d8_embedded_registry_gc_window_last_timed_out",
             hook_series("d8_embedded_registry_gc_window_last_timed_out"), "1x150", "0x150"),
            ("d8_embedded_registry_gc_window_opened_timestamp_seconds",
             hook_series("d8_embedded_registry_gc_window_opened_timestamp_seconds"), "0x150", "0x150")], []),
        "D8EmbeddedRegistryServerErrors": ("1h", [
            ("registry_http_requests_total", ok_code, "0+10x90", "0+10x90"),
            ("registry_http_requests_total", err_code, "0+2x90", "0x90")], ["node"]),
        "D8EmbeddedRegistryPodNotReady": ("1h", [
            ("kube_pod_status_ready", ksm_ready, "0x90", "1x90"),
            ("kube_pod_status_ready", manager_pod, "0x90", "0x90")], ["pod"]),
        "D8EmbeddedRegistryPodNotRunning": ("1h", [
            ("kube_pod_status_phase", ksm_phase, "0x90", "1x90")], ["pod"]),
    }
    assert set(cases) == set(rules), f"alerts without a case: {set(rules) - set(cases)}; stale: {set(cases) - set(rules)}"

    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": list(groups.values())}, sort_keys=False))
    tests = []
    for alert, (at, inputs, by) in cases.items():
        rule = rules[alert]
        for firing in (True, False):
            input_series = [{"series": series(n, l), "values": fire if firing else calm}
                            for n, l, fire, calm in inputs]
            exp = []
            if firing:
                labels = {k: inputs[0][1][k] for k in by}
                if alert == "D8EmbeddedRegistryServerErrors":
                    labels = {"node": registry_added["node"]}
                labels = {**labels, **rule["labels"]}
                value = {"D8EmbeddedRegistryNodesNotAcknowledging": "2",
                         "D8EmbeddedRegistryNodesPreflightFailed": "1"}.get(alert, "")
                exp = [{"exp_labels": labels,
                        "exp_annotations": {k: expand(v, labels, value) for k, v in rule["annotations"].items()}}]
            tests.append({"interval": "1m", "name": f"{alert} {'fires' if firing else 'stays quiet'}",
                          "input_series": input_series,
                          "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": exp}]})
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m",
                                                         "tests": tests}, sort_keys=False))
    p = subprocess.run([PROMTOOL, "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    p = subprocess.run([PROMTOOL, "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
