"""The registry actually runs: the chart renders each master's Secret, the node hook
(classic protocol, as shell-operator runs it) writes it under a host root, and the real
distribution server starts from exactly those files on the master's own address
(masters are 127.0.0.11-13).

Above 400 lines: one file, because the scenarios share the rendered masters and the
registries started from them."""
import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from conftest import BIN, module_config, nodes_file
from registry_env import NodeRegistry, node_config, rendered_secret, secret_data, switch_state
from tools.certs import CA
from tools.cri import CriContainerd, CriError
from tools import node_script
from tools.hookrun import HookRun
from tools.oci import build_layout
from tools.processes import wait_until
from tools.registry import Registry, password, skopeo

MASTERS = [("m1", "127.0.0.11"), ("m2", "127.0.0.12"), ("m3", "127.0.0.13")]
DETACHED = {"mode": "Detached", "detached": {"storageMode": "Fs"}}


def node_hook(tmp_path, state, node, host_root, secret="rendered"):
    """Runs the node hook for `node` as shell-operator would on a Synchronization of its
    Secret; returns (files written, files removed, status ConfigMap data)."""
    obj = rendered_secret(state, node) if secret == "rendered" else secret
    objects = [{"object": obj}] if obj else []
    ctx = [{"binding": "node_config", "type": "Synchronization", "objects": objects, "snapshots": {"node_status": []}}]
    r = HookRun.node(tmp_path / f"hook-{node}", ctx, node=node, host_root=host_root, precreate=True)
    p = r.by_name("node-files")
    assert p.returncode == 0, p.stderr
    logs = [json.loads(line) for line in p.stderr.splitlines() if line.startswith("{")]
    ops = r.k8s()
    status = ops[0]["object"]["data"] if ops else None
    if ops:
        # The API server accepts the node hook's status: the next converge sees it.
        obj = ops[0]["object"]
        path = state / "objects/d8-system/ConfigMap" / f"{obj['metadata']['name']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj))
    return ([l["file"] for l in logs if l["msg"] == "wrote"], [l["file"] for l in logs if l["msg"] == "removed"], status)


def deploy(tmp_path, converge, settings, masters=MASTERS, roots=None):
    converge(module_config(tmp_path, settings, name=f"mc-{len(list(tmp_path.glob('mc-*')))}.yaml"),
             nodes_file(tmp_path, masters, name=f"nodes-{len(masters)}.yaml"))
    roots = roots or {}
    result = {}
    for node, _ in masters:
        roots.setdefault(node, tmp_path / f"host-{node}")
        result[node] = node_hook(tmp_path, converge.state, node, roots[node])
    return roots, result


def test_node_hook_classic_config_passes_the_v1_schema(tmp_path):
    import jsonschema
    from conftest import ROOT
    schema = json.loads((ROOT / "tests/schemas/shell-operator-config-v1.json").read_text())
    link = tmp_path / "node-files"
    os.symlink(BIN, link)
    p = subprocess.run([str(link), "--config"], env={"NODE_NAME": "m1"}, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    cfg = json.loads(p.stdout)
    jsonschema.validate(cfg, schema)
    assert not {"beforeHelm", "afterHelm"} & set(cfg), "a shell-operator hook has no Helm lifecycle"
    assert cfg["kubernetes"][0]["nameSelector"]["matchNames"] == ["registry-node-m1-config"]
    p = subprocess.run([str(link)], env={"BINDING_CONTEXT_PATH": "/nonexistent"}, capture_output=True, text=True)
    assert p.returncode == 1


def test_files_land_with_owner_mode_and_a_valid_static_pod(tmp_path, converge):
    roots, result = deploy(tmp_path, converge, DETACHED)
    for node, _ in MASTERS[1:]:
        assert result[node][0] == [] and result[node][2]["staticPod"] == "absent", "Detached runs on one master"
    for node, ip in MASTERS[:1]:
        written, removed, status = result[node]
        assert written[-1] == "etc/kubernetes/manifests/embedded-registry.yaml", "manifest written last"
        assert removed == []
        root = roots[node]
        for f in written:
            st = os.stat(root / f)
            assert st.st_mode & 0o777 == 0o600, f
            assert (st.st_uid, st.st_gid) == (64535, 64535), f
        pod = yaml.safe_load((root / "etc/kubernetes/manifests/embedded-registry.yaml").read_text())
        assert pod["spec"]["hostNetwork"] is True
        assert pod["spec"]["dnsPolicy"] == "Default", "the node's resolver: cluster DNS may itself need images"
        assert pod["spec"]["containers"][0]["readinessProbe"]["tcpSocket"]["host"] == ip
        assert status["appliedConfigHash"] == pod["metadata"]["annotations"]["embedded-registry.deckhouse.io/config-hash"]
        assert status["appliedGeneration"] == rendered_secret(converge.state, node)["metadata"]["annotations"][
            "embedded-registry.deckhouse.io/generation"]
        assert status["staticPod"] == "present"
        assert status["registry"] == "not-ready" and "Connection refused" in status["message"].replace("connection refused", "Connection refused"), status
        kv = os.path.join(os.path.dirname(sys.executable), "kubernetes-validate")
        p = subprocess.run([kv, "--strict", "-k", "1.30.0", str(root / "etc/kubernetes/manifests/embedded-registry.yaml")],
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stdout + p.stderr
        # A second run on the same Secret writes nothing.
        again = node_hook(tmp_path, converge.state, node, root)
        assert again[0] == [] and again[1] == []


def test_detached_push_and_pull_on_the_mirror_master(tmp_path, converge):
    """A fresh master: the node hook's new data directory, the pod started as kubelet
    starts it (its garbage-collect init container first, the registry only after it
    exited 0)."""
    roots, _ = deploy(tmp_path, converge, DETACHED)
    ro, rw = secret_data(converge.state, "registry-user-ro"), secret_data(converge.state, "registry-user-rw")
    layout = tmp_path / "layout"
    build_layout(layout, "v1", b"detached\n")
    for node, ip in MASTERS[:1]:
        with NodeRegistry(converge.state, node, tmp_path / f"run-{node}", host_root=roots[node]) as reg:
            assert reg.init_runs == [("garbage-collect", 0)]
            assert reg.host == f"{ip}:5001"
            ref = f"docker://{reg.host}/deckhouse/ee/app:v1"
            p = skopeo("copy", f"--dest-cert-dir={reg.certs}", f"--dest-creds=rw:{rw['password']}", f"oci:{layout}:v1", ref)
            assert p.returncode == 0, p.stderr
            p = skopeo("inspect", f"--cert-dir={reg.certs}", f"--creds=ro:{ro['password']}", ref)
            assert p.returncode == 0, p.stderr
            p = skopeo("copy", f"--dest-cert-dir={reg.certs}", f"--dest-creds=ro:{ro['password']}", f"oci:{layout}:v1",
                       f"docker://{reg.host}/deckhouse/ee/app:ro")
            assert p.returncode != 0
            assert any((reg.data / "docker/registry/v2/repositories/deckhouse/ee/app").iterdir())
            # The node hook now sees its registry answer, over TLS verified with the CA.
            status = node_hook(tmp_path, converge.state, node, roots[node])[2]
            assert status["registry"] == "ready", status


def proxy_settings(upstream):
    return {"mode": "Proxy", "proxy": {"host": upstream.host, "scheme": "http", "path": "/deckhouse/ee",
                                       "user": "puller", "password": password("puller")}}


def test_proxy_pulls_through_and_serves_from_cache_when_upstream_is_gone(tmp_path, converge):
    up = Registry(tmp_path / "up").start()
    stop_upstream = up.stop
    try:
        want = up.push("deckhouse/ee/app", "v1", b"proxied content\n")
        proxy = proxy_settings(up)
        proxy["proxy"]["ttl"] = "72h"
        roots, _ = deploy(tmp_path, converge, proxy, masters=MASTERS[:1])
        ro = secret_data(converge.state, "registry-user-ro")
        reg = NodeRegistry(converge.state, "m1", tmp_path / "run-m1", host_root=roots["m1"]).start()
        try:
            ref = f"docker://{reg.host}/deckhouse/ee/app:v1"
            p = skopeo("copy", f"--src-cert-dir={reg.certs}", f"--src-creds=ro:{ro['password']}", ref,
                       f"oci:{tmp_path / 'pulled-1'}:v1")
            assert p.returncode == 0, p.stderr + reg.log()
            blobs = reg.data / "docker/registry/v2/blobs/sha256"
            wait_until(lambda: sum(1 for _ in blobs.rglob("data")) >= 3, what="blobs in the embedded storage")
            stop_upstream()
            stop_upstream = lambda: None  # noqa: E731
            # The upstream is gone: the second pull is served from the embedded cache.
            p = skopeo("copy", f"--src-cert-dir={reg.certs}", f"--src-creds=ro:{ro['password']}", ref,
                       f"oci:{tmp_path / 'pulled-2'}:v1")
            assert p.returncode == 0, p.stderr + reg.log()
            got = json.loads((tmp_path / "pulled-2/index.json").read_text())["manifests"][0]["digest"]
            assert got == want
        finally:
            reg.stop()
    finally:
        stop_upstream()


def test_proxy_trusts_the_upstream_ca_from_the_settings(tmp_path, converge):
    """An upstream with a private CA: proxy.ca reaches the check and the registry."""
    ca = CA("upstream-private-ca")
    crt, key = ca.leaf(tmp_path, "upstream", sans=("127.0.0.1",))
    with Registry(tmp_path / "up", tls=(crt, key)) as up:
        up.push("deckhouse/ee/app", "v1", b"behind a private CA\n")
        proxy = proxy_settings(up)
        proxy["proxy"].update(scheme="https", ca=ca.pem())
        roots, result = deploy(tmp_path, converge, proxy, masters=MASTERS[:1])
        assert "etc/kubernetes/registry/pki/upstream-ca.crt" in result["m1"][0]
        pod = yaml.safe_load((roots["m1"] / "etc/kubernetes/manifests/embedded-registry.yaml").read_text())
        assert pod["spec"]["containers"][0]["env"] == [{"name": "SSL_CERT_FILE", "value": "/pki/upstream-ca.crt"}]
        ro = secret_data(converge.state, "registry-user-ro")
        with NodeRegistry(converge.state, "m1", tmp_path / "run-m1", host_root=roots["m1"]) as reg:
            p = skopeo("copy", f"--src-cert-dir={reg.certs}", f"--src-creds=ro:{ro['password']}",
                       f"docker://{reg.host}/deckhouse/ee/app:v1", f"oci:{tmp_path / 'pulled'}:v1")
            assert p.returncode == 0, p.stderr + reg.log()


def test_config_changes_touch_exactly_the_files_they_should(tmp_path, converge):
    with Registry(tmp_path / "up-a") as up_a, Registry(tmp_path / "up-b") as up_b:
        proxy_a = proxy_settings(up_a)
        roots, first = deploy(tmp_path, converge, proxy_a)
        assert all(first[n][0] for n, _ in MASTERS), "HA (3 masters): a registry on each"
        config = "etc/kubernetes/registry/config/distribution.yaml"
        manifest = "etc/kubernetes/manifests/embedded-registry.yaml"

        # TTL: the distribution config and (through its hash) the manifest, on every master.
        ttl = dict(proxy_a, proxy=dict(proxy_a["proxy"], ttl="24h"))
        _, r = deploy(tmp_path, converge, ttl, roots=roots)
        for n, _ in MASTERS:
            assert r[n][0] == [config, manifest] and r[n][1] == [], r[n]
            assert yaml.safe_load((roots[n] / config).read_text())["proxy"]["ttl"] == "24h"

        # Upstream host: the same two files, and the new host is what the registry proxies.
        moved = dict(ttl, proxy=dict(ttl["proxy"], host=up_b.host))
        _, r = deploy(tmp_path, converge, moved, roots=roots)
        for n, _ in MASTERS:
            assert r[n][0] == [config, manifest], r[n]
            dist = yaml.safe_load((roots[n] / config).read_text())
            assert dist["proxy"]["remoteurl"] == f"http://{up_b.host}"

        # A master added: it gets its files; the others' files do not change at all.
        four = MASTERS + [("m4", "127.0.0.14")]
        _, r = deploy(tmp_path, converge, moved, masters=four, roots=roots)
        for n, _ in MASTERS:
            assert r[n][0] == [] and r[n][1] == [], (n, r[n])
        assert r["m4"][0][-1] == manifest and len(r["m4"][0]) == 11

        # An upstream that fails its check changes nothing on any master.
        broken = dict(moved, proxy=dict(moved["proxy"], path="/deckhouse/ce", password="wrong-Pa55"))
        _, r = deploy(tmp_path, converge, broken, masters=four, roots=roots)
        for n, _ in four:
            assert r[n][0] == [] and r[n][1] == [], (n, r[n])
        assert yaml.safe_load((roots["m1"] / config).read_text())["proxy"]["remoteurl"] == f"http://{up_b.host}"

    # Direct: every master's static pod is removed, manifest first.
    converge(module_config(tmp_path, {"mode": "Direct"}, name="direct.yaml"))
    for n, _ in four:
        assert rendered_secret(converge.state, n) is None
        written, removed, status = node_hook(tmp_path, converge.state, n, roots[n], secret=None)
        assert written == [] and removed[0] == manifest, removed
        assert not (roots[n] / manifest).exists()
        assert not any((roots[n] / "etc/kubernetes/registry/pki").iterdir())
        assert status == {"node": n, "appliedConfigHash": "", "appliedGeneration": "", "appliedRoUser": "", "staticPod": "absent",
                          "registry": "absent", "message": "no registry on this node"}


def run_mirror_script(state, root):
    """Runs the rendered NodeGroupConfiguration script as a node would, with its
    /etc/containerd/registry.d re-rooted into `root`; returns the hosts directory."""
    ngc = yaml.safe_load((state / "rendered/templates/node-group-configuration.yaml").read_text())
    p, calls = node_script.run(ngc["spec"]["content"], root)
    assert p.returncode == 0, p.stderr
    node_script.save(root, calls)  # the node acknowledges what it applied
    return root / "registry.d"


def host_directory(address):
    """The directory containerd reads first for `address`: host:port as host_port_."""
    host, _, port = address.rpartition(":")
    return f"{host}_{port}_" if host else address


def mirror_hosts(toml):
    return [line for line in toml.splitlines() if line.startswith("[host.")]


def pull_secret(state):
    """The cluster's pull Secret d8-system/deckhouse-registry, decoded."""
    return secret_data(state, "deckhouse-registry")


def pull_credentials(state):
    """What kubelet finds in the pull Secret for images under its address (user,
    password), as it hands them to containerd."""
    data = pull_secret(state)
    entry = json.loads(data[".dockerconfigjson"])["auths"].get(data["address"], {})
    return entry.get("username"), entry.get("password")


def kubelet_pull(cri, state, image):
    """A pull as kubelet makes it: with each pull Secret entry whose key matches the
    image, the most specific first, until one works."""
    auths = json.loads(pull_secret(state)[".dockerconfigjson"])["auths"]
    errors = []
    for key in sorted((k for k in auths if image.startswith(k + "/")), reverse=True):
        try:
            return cri.pull(image, auths[key]["username"], auths[key]["password"])
        except CriError as e:
            errors.append(str(e))
    raise CriError("; ".join(errors) or f"no pull Secret entry matches {image}")


def node_hosts(state, root):
    """Runs the rendered mirror script on a node re-rooted at `root`; returns the
    hosts directory and the pull address's hosts.toml text ('' when absent)."""
    hosts = run_mirror_script(state, root)
    address = json.loads((state / "values.json").read_text())["embeddedRegistry"]["internal"]["switch"]["pullAddress"]
    toml = hosts / host_directory(address) / "hosts.toml"
    return hosts, toml.read_text() if toml.exists() else ""


def test_kubelet_pulls_through_the_masters_with_the_pull_secret(tmp_path, converge):
    """Detached: nodes get the mirror configuration first, then the pull Secret names the
    embedded registry; a CRI pull made as kubelet makes it (the pull Secret's
    credentials, no server address) goes through the master. Back in Direct the pull
    Secret is the upstream's again, byte for byte."""
    roots, _ = deploy(tmp_path, converge, DETACHED)
    upstream = pull_secret(converge.state)
    repo = upstream["path"].strip("/")
    rw = secret_data(converge.state, "registry-user-rw")
    layout = tmp_path / "layout"
    build_layout(layout, "v1", b"pulled by kubelet\n")
    hosts, toml = node_hosts(converge.state, tmp_path / "node")
    assert toml == "", "no master has reported its registry serving"
    again = lambda name, now=None: converge(module_config(tmp_path, DETACHED, name=name),  # noqa: E731
                                            nodes_file(tmp_path, MASTERS), now=now)
    with NodeRegistry(converge.state, "m1", tmp_path / "run-m1", host_root=roots["m1"]) as reg, \
            CriContainerd(tmp_path / "cri", hosts) as cri:
        p = skopeo("copy", f"--dest-cert-dir={reg.certs}", f"--dest-creds=rw:{rw['password']}", f"oci:{layout}:v1",
                   f"docker://{reg.host}/{repo}/app:v1")
        assert p.returncode == 0, p.stderr
        # The master serves and the mirror check passes: nodes get the configuration,
        # the pull Secret stays the upstream's until they acknowledged it.
        for node, _ in MASTERS:
            node_hook(tmp_path, converge.state, node, roots[node])
        now = int(time.time())
        again("mc-serving.yaml", now)
        state, cond = switch_state(converge.state)
        assert cond["ClusterSwitched"]["reason"] == "NodesConfiguring", cond
        assert pull_secret(converge.state) == upstream
        _, toml = node_hosts(converge.state, tmp_path / "node")
        assert mirror_hosts(toml) == ['[host."https://127.0.0.11:5001"]'], "the mirror master only"
        assert toml.startswith('server = "https://embedded-registry.d8-system.svc:5001"')

        again("mc-switch.yaml", now + 301)
        switch_output = converge.output
        switched = pull_secret(converge.state)
        address = "embedded-registry.d8-system.svc:5001"
        assert (switched["address"], switched["path"], switched["scheme"]) == (address, upstream["path"], "https")
        assert switched["ca"] == json.loads((converge.state / "values.json").read_text())[
            "embeddedRegistry"]["internal"]["pki"]["caBundle"]
        assert secret_data(converge.state, "registry-upstream-pull") == upstream, "the upstream's copy is kept"
        # Deckhouse re-renders from the pull Secret: the next run's globals name the address.
        again("mc-switched.yaml", now + 302)
        values = json.loads((converge.state / "values.json").read_text())
        assert values["global"]["modulesImages"]["registry"]["base"] == f"{address}/{repo}"
        assert pull_secret(converge.state) == switched, "a second run changes nothing"
        # The manager prepulls exactly the static pod's images, with the pull Secret
        # (a static pod cannot name one), so a registry restart finds them cached.
        manager = next(d for d in yaml.safe_load_all(converge.rendered()["templates/manager.yaml"])
                       if d and d["kind"] == "DaemonSet")
        pod = manager["spec"]["template"]["spec"]
        assert pod["imagePullSecrets"] == [{"name": "deckhouse-registry"}]
        static = yaml.safe_load(node_config(converge.state, "m1")["embedded-registry.yaml"])["spec"]
        static_images = {c["image"] for c in static["containers"] + static.get("initContainers", [])}
        assert {c["image"] for c in pod["initContainers"] if c["name"].startswith("prepull")} == static_images
        assert all(i.startswith(f"{address}/{repo}@sha256:") for i in static_images), static_images

        image = f"{switched['address']}/{repo}/app:v1"
        user, pw = pull_credentials(converge.state)
        assert (user, pw) == ("ro", secret_data(converge.state, "registry-user-ro")["password"])
        assert pw not in switch_output
        assert cri.pull(image, user, pw).startswith("sha256:")
        assert "ns=embedded-registry.d8-system.svc%3A5001" in reg.log() and "/manifests/v1" in reg.log(), "the master served it"
        # Only the pull Secret's user opens the masters: a wrong password, or none, does not.
        for creds in (("ro", "not-the-password"), (None, None)):
            with pytest.raises(CriError):
                cri.pull(image, *creds)

        # Rotating the ro user: the pull Secret keeps the previous password beside the
        # new one until the master runs the new one, so kubelet's pulls never stop.
        (converge.state / "objects/d8-system/Secret/registry-user-ro.json").unlink()
        again("mc-rotate.yaml", now + 303)
        new_pw = secret_data(converge.state, "registry-user-ro")["password"]
        auths = json.loads(pull_secret(converge.state)[".dockerconfigjson"])["auths"]
        assert auths[f"{address}/{repo}"]["password"] == new_pw and auths[address]["password"] == pw
        with pytest.raises(CriError):
            cri.pull(image, "ro", new_pw)  # the master still runs the previous user list
        assert kubelet_pull(cri, converge.state, image).startswith("sha256:")
        reg.stop()  # kubelet restarts the registry onto the new user list
        node_hook(tmp_path, converge.state, "m1", roots["m1"])
        with NodeRegistry(converge.state, "m1", tmp_path / "run-m1-rotated", host_root=roots["m1"]):
            assert node_hook(tmp_path, converge.state, "m1", roots["m1"])[2]["registry"] == "ready"
            assert kubelet_pull(cri, converge.state, image).startswith("sha256:")
            again("mc-rotated.yaml", now + 304)
            assert pull_credentials(converge.state) == ("ro", new_pw)
            assert len(json.loads(pull_secret(converge.state)[".dockerconfigjson"])["auths"]) == 1
            assert kubelet_pull(cri, converge.state, image).startswith("sha256:")

    # Back to Direct: the pull Secret is restored verbatim and its copy then dropped;
    # the masters stay listed while pods may still hold embedded references.
    converge(module_config(tmp_path, {"mode": "Direct"}, name="direct.yaml"), now=now + 400)
    assert pull_secret(converge.state) == upstream
    assert mirror_hosts(node_hosts(converge.state, tmp_path / "node")[1]), "listed during the grace period"
    converge(module_config(tmp_path, {"mode": "Direct"}, name="direct-2.yaml"), now=now + 401)
    assert not (converge.state / "objects/d8-system/Secret/registry-upstream-pull.json").exists()
    converge(module_config(tmp_path, {"mode": "Direct"}, name="direct-3.yaml"), now=now + 400 + 301)
    assert node_hosts(converge.state, tmp_path / "node")[1] == "", "the mirror configuration is removed"
    assert pull_secret(converge.state) == upstream


def test_disabling_the_module_gives_the_pull_secret_back_to_the_upstream(tmp_path, converge):
    roots, _ = deploy(tmp_path, converge, DETACHED)
    upstream = pull_secret(converge.state)
    with NodeRegistry(converge.state, "m1", tmp_path / "run-m1", host_root=roots["m1"]):
        for node, _ in MASTERS:
            node_hook(tmp_path, converge.state, node, roots[node])
        now = int(time.time())
        for i, t in enumerate((now, now + 301)):
            converge(module_config(tmp_path, DETACHED, name=f"mc-{i}.yaml"), nodes_file(tmp_path, MASTERS), now=t)
            node_hosts(converge.state, tmp_path / "node")  # the nodes apply and acknowledge it
    assert pull_secret(converge.state)["address"] == "embedded-registry.d8-system.svc:5001"
    s = converge(module_config(tmp_path, DETACHED, name="off.yaml", enabled=False), now=now + 302)
    assert "afterDeleteHelm:registry-switch" in s["hookRuns"]
    assert pull_secret(converge.state) == upstream
    # The next run's globals follow the restored Secret (as Deckhouse's would); then
    # nothing changes.
    again = converge(module_config(tmp_path, DETACHED, name="off-2.yaml", enabled=False), now=now + 303)
    assert again["objects"] == {"created": [], "updated": [], "deleted": []}
    assert converge.values()["global"]["modulesImages"]["registry"]["base"] == "registry.deckhouse.io/deckhouse/ce"
    again = converge(module_config(tmp_path, DETACHED, name="off-3.yaml", enabled=False), now=now + 304)
    assert not again["changed"], json.dumps(again)


def test_ha_proxy_keeps_serving_pulls_with_a_master_down(tmp_path, converge):
    """Three masters proxy one upstream; nodes list all three; one stops, kubelet's pulls
    with the pull Secret's credentials go on."""
    with Registry(tmp_path / "up") as up:
        roots, _ = deploy(tmp_path, converge, proxy_settings(up))
        repo = proxy_settings(up)["proxy"]["path"].strip("/")
        for tag in ("a", "b"):
            up.push(f"{repo}/app", tag, f"image {tag}\n".encode())
        regs = [NodeRegistry(converge.state, n, tmp_path / f"run-{n}", host_root=roots[n]).start() for n, _ in MASTERS]
        hosts = tmp_path / "node" / "registry.d"
        try:
            with CriContainerd(tmp_path / "cri", hosts) as cri:
                for n, _ in MASTERS:
                    assert node_hook(tmp_path, converge.state, n, roots[n])[2]["registry"] == "ready"
                now = int(time.time())
                for i, t in enumerate((now, now + 301)):
                    converge(module_config(tmp_path, proxy_settings(up), name=f"mc-again-{i}.yaml"),
                             nodes_file(tmp_path, MASTERS), now=t)
                    node_hosts(converge.state, tmp_path / "node")  # the nodes apply and acknowledge it
                _, toml = node_hosts(converge.state, tmp_path / "node")
                assert mirror_hosts(toml) == [f'[host."https://{ip}:5001"]' for _, ip in MASTERS], "every master, in order"
                data = pull_secret(converge.state)
                assert data["path"] == f"/{repo}", "the proxy serves the upstream's repository names"
                user, pw = pull_credentials(converge.state)

                def pull(tag):
                    return cri.pull(f"{data['address']}/{repo}/app:{tag}", user, pw)
                assert pull("a").startswith("sha256:")
                assert "/manifests/a" in regs[0].log(), "the first master served it"
                regs[0].stop()
                assert pull("b").startswith("sha256:")
                assert f"/v2/{repo}/app/manifests/b" in regs[1].log(), "the second master took over"
        finally:
            for r in regs:
                r.stop()
