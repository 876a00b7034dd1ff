"""The rotate node hook end to end: a daily run on the mirror master deletes the old
releases through the real registry, then restarts the registry's static pod so its
`garbage-collect` init container frees the blobs with the registry stopped.

kubelet is not installable here: a stand-in watches the static pod manifest as kubelet
does, stopping the registry when the manifest goes and, when it comes back, running
what the rendered pod runs: `garbage-collect` (the init container), then `serve`."""
import base64
import threading

import yaml

from test_rotation import DROPPED, refs
from tools.hookrun import HookRun
from tools.mirror_fixture import ROOT, build_mirror
from tools.registry import OWN_CA, Registry, password

MANIFEST = "etc/kubernetes/manifests/embedded-registry.yaml"


class KubeletStandIn:
    def __init__(self, reg, manifest):
        self.reg, self.manifest = reg, manifest
        self.collections = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while not self.stopping.wait(0.1):
            if not self.manifest.exists() and self.reg.registry is not None:
                self.reg.stop_registry()
            elif self.manifest.exists() and self.reg.registry is None:
                self.reg.garbage_collect()
                self.collections += 1
                self.reg.start()

    def stop(self):
        self.stopping.set()
        self.thread.join(timeout=30)


def b64(s):
    return base64.b64encode(s.encode()).decode()


def run_rotate_hook(tmp_path, reg, root):
    """Runs the rotate node hook of master m1 (host root `root`) on its daily schedule
    against `reg`, as shell-operator runs it; returns (process, metrics by name)."""
    dist = yaml.safe_dump({"http": {"addr": reg.host}})
    snapshots = {
        "rotation_config": [{"object": {"kind": "ConfigMap", "data": {
            "enabled": "true", "keepReleases": "3", "minAge": "0", "path": ROOT, "runningReleases": ""}}}],
        "node_config": [{"object": {"kind": "Secret", "data": {
            "config.distribution.yaml": b64(dist), "pki.ca.crt": b64(reg.ca_file.read_text())}}}],
        "user_rw": [{"object": {"kind": "Secret", "data": {"name": b64("pusher"),
                                                           "password": b64(password("pusher"))}}}],
    }
    r = HookRun.node(tmp_path / "rotate-hook", [{"binding": "daily", "type": "Schedule", "snapshots": snapshots}],
                     host_root=root, precreate=True)
    p = r.by_name("rotate", timeout=600)
    assert password("pusher") not in p.stdout + p.stderr + r.output("METRICS_PATH")
    return p, r.metrics()


def test_daily_rotation_deletes_then_collects_garbage_with_the_registry_stopped(tmp_path):
    root = tmp_path / "host"
    manifest = root / MANIFEST
    manifest.parent.mkdir(parents=True)
    manifest.write_text("apiVersion: v1\nkind: Pod\n")
    with Registry(tmp_path / "reg", tls=OWN_CA) as reg:
        pushed = build_mirror(reg, tmp_path / "build")
        before = reg.disk_usage()
        kubelet = KubeletStandIn(reg, manifest)
        try:
            p, metrics = run_rotate_hook(tmp_path, reg, root)
        finally:
            kubelet.stop()
        assert p.returncode == 0, p.stderr
        assert "registry restarted for garbage collection" in p.stderr, p.stderr
        assert metrics["d8_embedded_registry_rotation_manifests_deleted"] == 11
        assert metrics["d8_embedded_registry_rotation_failed"] == 0
        assert kubelet.collections == 1 and manifest.exists(), "one restart, manifest back in place"
        assert reg.answers()
        assert reg.disk_usage() < before - 400 * 1024, "blobs of dropped releases freed"
        for i, (ref, gone) in enumerate(sorted(refs(pushed, DROPPED).items())):
            r = reg.pull(ref, tmp_path / f"pull-{i}")
            assert (r.returncode != 0) == gone, (ref, r.stderr)
