"""Garbage collection of a Detached mirror on a shared S3 bucket (issue 16): the gc-window
module hook, the masters' node hooks and kubelet, with real components only (Garage,
Debian's docker-registry on the rendered configuration, the test token issuer, skopeo).

Two masters on loopback addresses of this process's own serve one bucket. A mirror of
six releases is pushed; the `rotate` node hook of the first master drops two releases and,
on S3, asks for a window instead of restarting. Then rounds of converge (module hooks),
node hooks and the kubelet stand-in (which runs the pod's init containers) carry the
window through ReadOnly, Collect and Back to Idle while a thread pulls every kept release
through the masters (as containerd tries its mirror list: the next master when one fails).

Proved: no pull of a kept release fails and each is byte-identical (its digest); a push
during the window is refused with distribution's read-only answer; garbage collection ran
once, on the collector, while every other master ran read-only; the dropped releases'
manifests are gone and their blobs swept from the bucket; pushes work again after."""
import base64
import json

import pytest
import yaml

from conftest import module_config, nodes_file
from registry_env import MANIFEST, Kubelet, loopback_masters, rendered_secret, run_node_hook, secret_data, \
    status_config_maps
from test_rotation import DROPPED, KEPT
from tools.garage import bucket_objects, bucket_store, s3_settings
from tools.hookrun import HookRun
from tools.mirror_fixture import ROOT, build_mirror
from tools.oci import build_layout
from tools.processes import Repeating, wait_until
from tools.registry import skopeo

BUCKET = "registry"
ROUNDS = 24  # converge, node-hook and kubelet rounds a whole window may take (two masters need about ten)


@pytest.fixture(scope="module")
def garage(tmp_path_factory):
    with bucket_store(tmp_path_factory.mktemp("garage"), BUCKET) as g:
        yield g


class Pusher:
    """What build_mirror needs of a registry: push_layout, through one master with `rw`."""

    def __init__(self, reg, password):
        self.reg, self.password = reg, password

    def push_layout(self, layout, tag, ref, by_digest=None, all_images=False):
        dest = f"docker://{self.reg.host}/{ref}" + (f"@{by_digest}" if by_digest else "")
        args = ["copy", f"--dest-cert-dir={self.reg.certs}", f"--dest-creds=rw:{self.password}",
                "--preserve-digests", *(["--all"] if all_images else []), f"oci:{layout}:{tag}", dest]
        p = skopeo(*args)
        assert p.returncode == 0, p.stderr


class Puller(Repeating):
    """Pulls every kept release in a loop, trying the masters in order as containerd tries
    its mirror list; a pull fails only when no master serves it. Checks the digest."""

    def __init__(self, kubelet, masters, password, want, workdir):
        super().__init__(join_timeout=300)
        self.kubelet, self.masters, self.password, self.want = kubelet, masters, password, want
        self.dir = workdir
        self.ok, self.failures, self.fallbacks = 0, [], 0
        self._n = 0

    def _pull(self, ref, digest, n):
        errors = []
        for i, (name, ip) in enumerate(self.masters):
            running = self.kubelet.running.get(name)
            certs = running[0].certs if running else None
            if certs is None:
                errors.append(f"{name}: not running")
                continue
            dest = self.dir / f"pull-{n}-{i}"
            p = skopeo("copy", "--all", "--preserve-digests", f"--src-cert-dir={certs}",
                       f"--src-creds=ro:{self.password}", f"docker://{ip}:5001/{ref}", f"oci:{dest}:x", timeout=60)
            if p.returncode == 0:
                got = json.loads((dest / "index.json").read_text())["manifests"][0]["digest"]
                if got != digest:
                    return f"{ref} from {name}: digest {got}, pushed {digest}"
                self.fallbacks += i > 0
                return None
            errors.append(f"{name}: {p.stderr.strip()[-200:]}")
        return f"{ref}: " + "; ".join(errors)

    def once(self):
        """One pull of every kept release."""
        for ref, digest in self.want.items():
            self._n += 1
            failure = self._pull(ref, digest, self._n)
            if failure:
                self.failures.append(failure)
            else:
                self.ok += 1


def blob_status(reg, repo, digest, user, password):
    """The status a master answers `GET /v2/<repo>/blobs/<digest>` with, under a pull
    token from its token issuer (the realm its 401 names), TLS verified with the module CA."""
    import re
    import ssl
    import urllib.error
    import urllib.request
    ctx = ssl.create_default_context(cafile=str(reg.certs / "ca.crt"))
    url = f"https://{reg.host}/v2/{repo}/blobs/{digest}"
    try:
        urllib.request.urlopen(url, context=ctx, timeout=10)
        raise AssertionError("a blob answered without a token")
    except urllib.error.HTTPError as e:
        assert e.code == 401, e.code
        challenge = dict(re.findall(r'(\w+)="([^"]*)"', e.headers["WWW-Authenticate"]))
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    token_url = f"{challenge['realm']}?service={challenge['service']}&scope=repository:{repo}:pull"
    req = urllib.request.Request(token_url, headers={"Authorization": f"Basic {basic}"})
    token = json.loads(urllib.request.urlopen(req, context=ctx, timeout=10).read())["token"]
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def run_rotate(tmp_path, state, node, host_root):
    """The rotate node hook of `node` on its daily schedule, with the snapshots its
    bindings select: the rendered registry-rotation ConfigMap (the fixture's repository
    as `path`: the converge's default base names another), the node's rendered Secret and
    the `rw` user. The ConfigMap it writes lands in the store. Returns its metrics."""
    rendered = yaml.safe_load((state / "rendered/templates/registry-rotation.yaml").read_text())
    data = dict(rendered["data"], path=ROOT, runningReleases="", minAge="0")
    rw = json.loads((state / "objects/d8-system/Secret/registry-user-rw.json").read_text())
    snapshots = {"rotation_config": [{"object": {"kind": "ConfigMap", "data": data}}],
                 "node_config": [{"object": rendered_secret(state, node)}],
                 "user_rw": [{"object": rw}]}
    r = HookRun.node(tmp_path / f"rotate-{node}", [{"binding": "daily", "type": "Schedule", "snapshots": snapshots}],
                     node=node, host_root=host_root, precreate=True)
    p = r.by_name("rotate", timeout=600)
    assert p.returncode == 0, p.stderr
    assert secret_data(state, "registry-user-rw")["password"] not in p.stdout + p.stderr
    for op in r.k8s():
        obj = op["object"]
        path = state / "objects/d8-system/ConfigMap" / f"{obj['metadata']['name']}.json"
        path.write_text(json.dumps(obj))
    return rendered["data"], r.metrics(), p.stderr


def window(converge):
    return converge.values()["embeddedRegistry"]["internal"].get("gcWindow", {})


def read_only(reg):
    storage = reg.generated["distribution"]["storage"]
    return bool(storage.get("maintenance", {}).get("readonly", {}).get("enabled"))


def test_rotation_on_s3_collects_in_a_read_only_window_while_kept_releases_pull(tmp_path, converge, garage):
    masters = loopback_masters(2)
    names = [n for n, _ in masters]
    roots = {n: tmp_path / f"host-{n}" for n in names}
    secret = garage.key[1]
    settings = {"mode": "Detached", "highAvailability": True,
                "detached": {"storageMode": "S3", "rotation": {"enabled": True, "keepReleases": 3, "minAge": "0"},
                             "s3": s3_settings(garage, BUCKET, rootDirectory=f"/gc-{tmp_path.name}")}}
    mc, nodes = module_config(tmp_path, settings), nodes_file(tmp_path, masters)

    def conv():
        converge(mc, nodes)
        assert secret not in converge.output

    conv()
    kubelet = Kubelet(converge.state, roots, tmp_path)
    try:
        for n in names:
            assert run_node_hook(tmp_path, converge.state, n, roots[n])[0][-1] == MANIFEST
        kubelet.sync()
        for n in names:
            assert run_node_hook(tmp_path, converge.state, n, roots[n])[1]["registry"] == "ready"
            assert not kubelet.running[n][0].pod()["spec"].get("initContainers"), "no collection at start on S3"
        rw = secret_data(converge.state, "registry-user-rw")["password"]
        ro = secret_data(converge.state, "registry-user-ro")["password"]
        first = kubelet.running[names[0]][0]
        pushed = build_mirror(Pusher(first, rw), tmp_path / "build")

        def raw(ref, reg):
            p = skopeo("inspect", "--raw", f"--cert-dir={reg.certs}", f"--creds=ro:{ro}", f"docker://{reg.host}/{ref}")
            return p
        # A layer only a dropped release holds (its own files), to find in the storage.
        dropped_layer = json.loads(raw(f"{ROOT}:v1.62.0", first).stdout)["layers"][-1]["digest"]
        assert blob_status(first, ROOT, dropped_layer, "ro", ro) == 200
        kept = {f"{ROOT}:{t}": pushed["releases"][t] for t in KEPT}
        before = bucket_objects(garage, BUCKET)

        data, metrics, log = run_rotate(tmp_path, converge.state, names[0], roots[names[0]])
        assert (data["node"], data["gc"]) == (names[0], "window")
        assert metrics["d8_embedded_registry_rotation_manifests_deleted"] == 11
        assert metrics["d8_embedded_registry_rotation_failed"] == 0
        assert "garbage collection requested" in log and "registry restarted" not in log
        # Another master does not rotate the shared mirror.
        _, metrics, _ = run_rotate(tmp_path, converge.state, names[1], roots[names[1]])
        assert "d8_embedded_registry_rotation_manifests_deleted" not in metrics

        refused, phases, collections = None, [], []
        with Puller(kubelet, masters, ro, kept, tmp_path / "pulls") as puller:
            (tmp_path / "pulls").mkdir()
            layout = tmp_path / "during"
            build_layout(layout, "v1", b"pushed during the window\n")
            ok_at_open = puller.ok
            for _ in range(ROUNDS):
                conv()
                w = window(converge)
                if not phases or phases[-1] != w.get("phase"):
                    phases.append(w.get("phase"))
                if w.get("phase") == "Idle" and len(phases) > 1:
                    break
                for n in names:
                    run_node_hook(tmp_path, converge.state, n, roots[n])
                kubelet.sync()
                for n in names:
                    reg = kubelet.running[n][0]
                    if any(name == "garbage-collect" for name, _ in getattr(reg, "init_runs", [])) \
                            and reg not in [c[0] for c in collections]:
                        others = [read_only(kubelet.running[o][0]) for o in names if o != n]
                        collections.append((reg, n, read_only(reg), others))
                    if refused is None and read_only(reg):
                        p = skopeo("copy", f"--dest-cert-dir={reg.certs}", f"--dest-creds=rw:{rw}",
                                   f"oci:{layout}:v1", f"docker://{reg.host}/{ROOT}/during:v1")
                        refused = p
            else:
                raise AssertionError(f"the window did not close in {ROUNDS} rounds: {phases}, {window(converge)}")
            ok_before = puller.ok
            assert ok_before > ok_at_open, "kept releases pulled while the window was open"
            wait_until(lambda: puller.ok >= ok_before + len(kept), timeout=120, what="pulls after the window")
        assert puller.failures == [], puller.failures[:3]
        assert phases == ["ReadOnly", "Collect", "Back", "Idle"], phases
        assert window(converge)["outcome"] == "Collected"

        # The push during the window: refused with distribution's read-only answer.
        assert refused is not None and refused.returncode != 0
        assert "405" in refused.stderr and "Method not allowed" in refused.stderr, refused.stderr
        # Collected once, on the collector, while the other master ran read-only.
        assert [(n, ro_self, others) for _, n, ro_self, others in collections] == [(names[0], True, [True])]

        # Idle may come while the last master still restarts onto its read-write files
        # (a master that does not answer is not waited for): its node hook reports them
        # once it serves them. Every master runs read-write again, and no tag stays.
        def settled():
            for n in names:
                run_node_hook(tmp_path, converge.state, n, roots[n])
            kubelet.sync()
            st = {n: o["data"] for n, o in status_config_maps(converge.state).items()}
            return all(st[n]["registry"] == "ready" and not st[n].get("appliedGcWindow") for n in names)
        for _ in range(4):
            if settled():
                break
        else:
            raise AssertionError(f"a master still reports the window: {status_config_maps(converge.state)}")
        for n in names:
            assert not read_only(kubelet.running[n][0]), n
        # Dropped manifests gone, their blobs swept from the bucket; kept ones byte-identical.
        for n in names:
            reg = kubelet.running[n][0]
            for t in DROPPED:
                p = raw(f"{ROOT}:{t}", reg)
                assert p.returncode != 0 and "manifest unknown" in p.stderr, (n, t, p.stderr)
            assert blob_status(reg, ROOT, dropped_layer, "ro", ro) == 404, n
            for ref, digest in kept.items():
                dest = tmp_path / f"after-{n}-{ref.split(':')[-1]}"
                p = skopeo("copy", "--all", "--preserve-digests", f"--src-cert-dir={reg.certs}",
                           f"--src-creds=ro:{ro}", f"docker://{reg.host}/{ref}", f"oci:{dest}:x")
                assert p.returncode == 0, p.stderr
                assert json.loads((dest / "index.json").read_text())["manifests"][0]["digest"] == digest
        after = bucket_objects(garage, BUCKET)
        assert after < before, f"blobs swept from the bucket: {before} objects before, {after} after"

        # Pushes work again, through either master.
        reg = kubelet.running[names[1]][0]
        p = skopeo("copy", f"--dest-cert-dir={reg.certs}", f"--dest-creds=rw:{rw}", f"oci:{layout}:v1",
                   f"docker://{reg.host}/{ROOT}/during:v1")
        assert p.returncode == 0, p.stderr

        # Idempotent: another converge and node-hook round change nothing.
        conv()
        assert window(converge)["phase"] == "Idle"
        for n in names:
            written, _, _ = run_node_hook(tmp_path, converge.state, n, roots[n])
            assert written == [], (n, written)
        assert kubelet.sync() == []
    finally:
        kubelet.stop()
