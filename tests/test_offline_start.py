"""A Proxy registry through an upstream outage: distribution exits at start when its
upstream does not answer, so the node hook installs the chart's cache-only variant of
the configuration (no proxy, read-only storage) while the upstream is gone, and the
proxying one again once it has answered for the hysteresis.

Real components: the upstream and the master's registry are Debian's docker-registry,
started from exactly the files the node hook wrote (the kubelet stand-in of
registry_env); the node hook runs as shell-operator runs it, with its previous status
ConfigMap as its snapshot and its clock set through EMBEDDED_REGISTRY_NOW."""
import json

import yaml

from registry_env import NodeRegistry, rendered_secret, secret_data
from test_static_pods import MASTERS, deploy, proxy_settings
from tools.hookrun import HookRun
from tools.processes import wait_until
from tools.registry import Registry, skopeo

T0 = 1_900_000_000
CONFIG = "etc/kubernetes/registry/config/distribution.yaml"
MANIFEST = "etc/kubernetes/manifests/embedded-registry.yaml"


class NodeHook:
    """The node-files hook of one master, run again and again as shell-operator runs its
    minute schedule: its Secret and its own last status ConfigMap as snapshots."""

    def __init__(self, tmp_path, state, node, root):
        self.dir = tmp_path / f"hook-{node}"
        self.state, self.node, self.root = state, node, root
        self.status = None

    def run(self, now):
        snapshots = {"node_config": [{"object": rendered_secret(self.state, self.node)}],
                     "node_status": [{"object": {"kind": "ConfigMap", "data": self.status}}] if self.status else []}
        ctx = [{"binding": "resync", "type": "Schedule", "snapshots": snapshots}]
        r = HookRun.node(self.dir, ctx, node=self.node, host_root=self.root, precreate=True,
                         env={"EMBEDDED_REGISTRY_NOW": str(now)})
        # shell-operator runs the hook under its name.
        p = r.by_name("node-files", timeout=60)
        assert p.returncode == 0, p.stderr
        ops = r.k8s()
        if ops:
            self.status = ops[0]["object"]["data"]
        self.metrics = r.metrics()
        return self.status

    def config(self):
        return yaml.safe_load((self.root / CONFIG).read_text())

    def pod(self):
        return yaml.safe_load((self.root / MANIFEST).read_text())


def pull(reg, ro, ref, dest):
    return skopeo("copy", f"--src-cert-dir={reg.certs}", f"--src-creds=ro:{ro['password']}",
                  f"docker://{reg.host}/deckhouse/ee/{ref}", f"oci:{dest}:x")


def test_a_proxy_registry_restarted_during_an_outage_serves_its_cache(tmp_path, converge):
    up = Registry(tmp_path / "up").start()
    try:
        cached = up.push("deckhouse/ee/app", "v1", b"cached before the outage\n")
        up.push("deckhouse/ee/app", "v2", b"never pulled before the outage\n")
        settings = proxy_settings(up)
        roots, _ = deploy(tmp_path, converge, settings, masters=MASTERS[:1])
        ro = secret_data(converge.state, "registry-user-ro")
        hook = NodeHook(tmp_path, converge.state, "m1", roots["m1"])

        status = hook.run(T0)
        assert (status["upstream"], status["cacheOnly"]) == ("answers", "false"), status
        assert "proxy" in hook.config()
        with NodeRegistry(converge.state, "m1", tmp_path / "run-1", host_root=roots["m1"]) as reg:
            p = pull(reg, ro, "app:v1", tmp_path / "pulled-1")
            assert p.returncode == 0, p.stderr + reg.log()
            # distribution stores a proxied blob beside the answer: wait until it is
            # there (manifest config, layer, and the index or manifest's own blob).
            blobs = reg.data / "docker/registry/v2/blobs/sha256"
            wait_until(lambda: sum(1 for _ in blobs.rglob("data")) >= 3, what="blobs in the cache")

        # The outage, and the master restarts during it (a reboot, a rotation).
        up.stop()
        status = hook.run(T0 + 10)
        assert (status["upstream"], status["cacheOnly"]) == ("unreachable", "true"), status
        assert status["cacheOnlySince"] == str(T0 + 10), "a registry that cannot start switches at once"
        assert hook.metrics["d8_embedded_registry_cache_only"] == 1
        config = hook.config()
        assert "proxy" not in config, "nothing proxies, and no TTL scheduler expires the cache"
        assert config["storage"]["maintenance"]["readonly"]["enabled"] is True
        assert hook.pod()["metadata"]["annotations"]["embedded-registry.deckhouse.io/cache-only"] == "true"
        assert hook.run(T0 + 70) == status, "a second run changes nothing"

        with NodeRegistry(converge.state, "m1", tmp_path / "run-2", host_root=roots["m1"]) as reg:
            p = pull(reg, ro, "app:v1", tmp_path / "pulled-2")
            assert p.returncode == 0, p.stderr + reg.log()
            got = json.loads((tmp_path / "pulled-2/index.json").read_text())["manifests"][0]["digest"]
            assert got == cached
            p = pull(reg, ro, "app:v2", tmp_path / "pulled-3")
            assert p.returncode != 0 and "manifest unknown" in p.stderr, p.stderr

        # The upstream is back: the registry keeps serving its cache until the upstream
        # has answered for the hysteresis (1m by default), then proxies again.
        up.start()
        status = hook.run(T0 + 100)
        assert (status["upstream"], status["cacheOnly"]) == ("answers", "true"), status
        status = hook.run(T0 + 159)
        assert status["cacheOnly"] == "true", status
        status = hook.run(T0 + 160)
        assert (status["cacheOnly"], status["cacheOnlySince"]) == ("false", str(T0 + 160)), status
        assert "proxy" in hook.config()
        assert "embedded-registry.deckhouse.io/cache-only" not in hook.pod()["metadata"]["annotations"]
        assert hook.metrics["d8_embedded_registry_cache_only"] == 0
        with NodeRegistry(converge.state, "m1", tmp_path / "run-3", host_root=roots["m1"]) as reg:
            p = pull(reg, ro, "app:v2", tmp_path / "pulled-4")
            assert p.returncode == 0, p.stderr + reg.log()
    finally:
        up.stop()


def test_a_serving_registry_rides_out_a_short_outage_without_a_restart(tmp_path, converge):
    up = Registry(tmp_path / "up").start()
    try:
        up.push("deckhouse/ee/app", "v1")
        roots, _ = deploy(tmp_path, converge, proxy_settings(up), masters=MASTERS[:1])
        hook = NodeHook(tmp_path, converge.state, "m1", roots["m1"])
        hook.run(T0)
        manifest = (roots["m1"] / MANIFEST).read_text()
        with NodeRegistry(converge.state, "m1", tmp_path / "run", host_root=roots["m1"]):
            up.stop()
            status = hook.run(T0 + 30)
            assert (status["upstream"], status["cacheOnly"]) == ("unreachable", "false"), status
            assert (roots["m1"] / MANIFEST).read_text() == manifest, "no restart for a short outage"
            status = hook.run(T0 + 90)
            assert status["cacheOnly"] == "true", "an outage that lasted the hysteresis switches"
    finally:
        up.stop()
