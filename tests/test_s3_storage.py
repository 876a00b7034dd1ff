"""The chart's S3 storage (issue 16) on a real Garage: the distribution configuration the
converge renders for a master, run by the real docker-registry (Debian's, with the
`s3-aws` driver), stores in and serves from the bucket.

- Detached on S3 behind TLS with a private CA: the CA reaches distribution through the
  pod's SSL_CERT_FILE bundle (never AWS_CA_BUNDLE); an image pushed through one
  registry pulls byte-identical through a second one on the same rendered storage (the
  bucket is the mirror, shared by the masters); no garbage-collect init container runs
  on the shared bucket; blobs are served through the registry (no redirect to S3).
- Proxy on S3 with two masters: each master's root is its own (`<rootDirectory>/<node>`),
  so a master's cache-only registry serves what that master cached, and the other's
  does not.

The rendered configuration is used as it is for `storage` (and `proxy`); only what binds
it to the master (its address, TLS pair, token auth, debug port) is replaced so that the
registry runs on a free loopback port without the auth server."""
import base64
import json
import os
import subprocess

import pytest
import yaml

from conftest import module_config, nodes_file
from registry_env import rendered_secret, switch_state
from tools.certs import CA
from tools.garage import REGION, TlsFront, bucket_objects, bucket_store, s3_settings
from tools.processes import free_port, stop, wait_until
from tools.registry import Registry, api_answers, password, skopeo
from tools.oci import build_layout

BUCKET = "registry"


@pytest.fixture(scope="module")
def garage(tmp_path_factory):
    with bucket_store(tmp_path_factory.mktemp("garage"), BUCKET) as g:
        yield g


def rendered_files(state, node):
    """The decoded keys of master `node`'s rendered Secret."""
    return {k: base64.b64decode(v).decode() for k, v in rendered_secret(state, node)["data"].items()}


class LocalRegistry:
    """docker-registry from a rendered distribution config, rebound to a free loopback
    port (plain HTTP, no token auth); the environment as the pod sets it."""

    def __init__(self, workdir, config_text, env):
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        cfg = yaml.safe_load(config_text)
        self.host = f"127.0.0.1:{free_port()}"
        cfg["http"] = {"addr": self.host, "secret": cfg["http"]["secret"]}
        cfg.pop("auth")
        self.config = workdir / "config.yaml"
        self.config.write_text(yaml.safe_dump(cfg))
        # The pod's environment only: nothing of the test runner's (AWS_CA_BUNDLE would
        # make the S3 driver panic at start).
        self.env = {"PATH": os.environ["PATH"], **env}
        self.proc = None

    def __enter__(self):
        log = open(self.dir / "registry.log", "w")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.config)], stdout=log,
                                     stderr=subprocess.STDOUT, env=self.env)
        wait_until(lambda: self._up(), what=f"registry on {self.host}", timeout=60)
        return self

    def _up(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"registry exited: {(self.dir / 'registry.log').read_text()[-2000:]}")
        return api_answers(f"http://{self.host}/v2/", self.dir / "registry.log")

    def __exit__(self, *exc):
        stop(self.proc)

    def log(self):
        return (self.dir / "registry.log").read_text()


def pod_env(files, pki_dir):
    """The distribution container's environment from the rendered static pod, /pki
    re-rooted to where the test wrote the PKI files."""
    pod = yaml.safe_load(files["manifest.embedded-registry.yaml"])
    env = pod["spec"]["containers"][0].get("env") or []
    return pod, {e["name"]: e["value"].replace("/pki/", f"{pki_dir}/") for e in env}


def test_detached_on_s3_behind_tls_pushes_and_pulls_through_any_master(tmp_path, converge, garage):
    ca = CA("s3-ca")
    crt, key = ca.leaf(tmp_path, "s3", sans=("127.0.0.1",))
    backend = (garage.nodes[0].host, garage.nodes[0].s3_port)
    with TlsFront(backend, crt, key) as front:
        settings = {"mode": "Detached", "highAvailability": True,
                    "detached": {"storageMode": "S3", "s3": s3_settings(garage, BUCKET, front.endpoint, ca=ca.pem())}}
        converge(module_config(tmp_path, settings), nodes_file(tmp_path, [("m1", "127.0.0.11")]))
        assert garage.key[1] not in converge.output, "the secret key is never printed"
        state, _ = switch_state(converge.state)
        assert state["registry"]["mode"] == "Detached"
        files = rendered_files(converge.state, "m1")
        cfg = yaml.safe_load(files["config.distribution.yaml"])
        s3 = cfg["storage"]["s3"]
        assert "filesystem" not in cfg["storage"]
        assert (s3["regionendpoint"], s3["region"], s3["bucket"], s3["rootdirectory"]) == (
            front.endpoint, REGION, BUCKET, "/embedded-registry")
        assert (s3["forcepathstyle"], s3["secure"], s3["accesskey"]) == (True, True, garage.key[0])
        assert cfg["storage"]["redirect"]["disable"] is True
        assert files["pki.upstream-ca.crt"] == ca.pem()
        pki = tmp_path / "pki"
        pki.mkdir()
        (pki / "upstream-ca.crt").write_text(files["pki.upstream-ca.crt"])
        pod, env = pod_env(files, pki)
        assert env == {"SSL_CERT_FILE": f"{pki}/upstream-ca.crt"}, env
        assert not pod["spec"].get("initContainers"), "no garbage collection at start on a shared bucket"

        layout = tmp_path / "image"
        digest = build_layout(layout, "v1", b"stored in S3\n")
        with LocalRegistry(tmp_path / "master-a", files["config.distribution.yaml"], env) as a:
            p = skopeo("copy", "--dest-tls-verify=false", "--preserve-digests", f"oci:{layout}:v1",
                       f"docker://{a.host}/deckhouse/ce:v1")
            assert p.returncode == 0, p.stderr + a.log()
        # Another master on the same rendered storage sees the image (the bucket is the
        # mirror) and serves its blobs itself.
        with LocalRegistry(tmp_path / "master-b", files["config.distribution.yaml"], env) as b:
            p = skopeo("copy", "--src-tls-verify=false", f"docker://{b.host}/deckhouse/ce:v1",
                       f"oci:{tmp_path / 'pulled'}:v1")
            assert p.returncode == 0, p.stderr + b.log()
            got = json.loads((tmp_path / "pulled/index.json").read_text())["manifests"][0]["digest"]
            assert got == digest
            blob = json.loads((layout / "blobs" / digest.replace(":", "/")).read_text())["layers"][0]["digest"]
            p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                f"http://{b.host}/v2/deckhouse/ce/blobs/{blob}"], capture_output=True, text=True)
            assert p.stdout == "200", "a blob is served by the registry, not redirected to S3"
        # Without the CA in the bundle, TLS to the endpoint fails: the bundle is what
        # distribution trusts.
        with pytest.raises(AssertionError):
            with LocalRegistry(tmp_path / "no-ca", files["config.distribution.yaml"], {}) as c:
                p = skopeo("copy", "--src-tls-verify=false", f"docker://{c.host}/deckhouse/ce:v1",
                           f"oci:{tmp_path / 'pulled-no-ca'}:v1")
                assert p.returncode == 0, p.stderr


def test_proxy_on_s3_gives_each_master_its_own_root(tmp_path, converge, garage):
    masters = [("m1", "127.0.0.11"), ("m2", "127.0.0.12")]
    with Registry(tmp_path / "up") as up:
        want = up.push("deckhouse/ee/app", "v1", b"proxied into S3\n")
        settings = {"mode": "Proxy", "highAvailability": True,
                    "proxy": {"host": up.host, "scheme": "http", "path": "/deckhouse/ee", "user": "puller",
                              "password": password("puller"), "storageMode": "S3",
                              "s3": s3_settings(garage, BUCKET, rootDirectory="/cache")}}
        converge(module_config(tmp_path, settings), nodes_file(tmp_path, masters))
        assert garage.key[1] not in converge.output
        files = {n: rendered_files(converge.state, n) for n, _ in masters}
        for n, _ in masters:
            for variant in ("config.distribution.yaml", "config.distribution-cache-only.yaml"):
                s3 = yaml.safe_load(files[n][variant])["storage"]["s3"]
                assert (s3["rootdirectory"], s3["secure"]) == (f"/cache/{n}", False), (n, variant, s3)
            assert "pki.upstream-ca.crt" not in files[n]
            assert pod_env(files[n], tmp_path)[1] == {}

        # m1 pulls through; its proxy stores the manifest and the blobs (config, layer)
        # into its root of the bucket beside its answers: waited for in the bucket.
        before = bucket_objects(garage, BUCKET)
        with LocalRegistry(tmp_path / "m1-proxy", files["m1"]["config.distribution.yaml"], {}) as reg:
            p = skopeo("copy", "--src-tls-verify=false", f"docker://{reg.host}/deckhouse/ee/app:v1",
                       f"oci:{tmp_path / 'through'}:v1")
            assert p.returncode == 0, p.stderr + reg.log()
            wait_until(lambda: bucket_objects(garage, BUCKET) >= before + 3, what="the proxied image in the bucket",
                       timeout=60, interval=0.5)
    # The upstream is gone: m1's cache-only registry serves from its root; m2's root
    # never held the image.
    with LocalRegistry(tmp_path / "m1-cache", files["m1"]["config.distribution-cache-only.yaml"], {}) as m1:
        p = skopeo("copy", "--src-tls-verify=false", f"docker://{m1.host}/deckhouse/ee/app:v1",
                   f"oci:{tmp_path / 'cached'}:v1")
        assert p.returncode == 0, p.stderr + m1.log()
        got = json.loads((tmp_path / "cached/index.json").read_text())["manifests"][0]["digest"]
        assert got == want
    with LocalRegistry(tmp_path / "m2-cache", files["m2"]["config.distribution-cache-only.yaml"], {}) as m2:
        p = skopeo("copy", "--src-tls-verify=false", f"docker://{m2.host}/deckhouse/ee/app:v1",
                   f"oci:{tmp_path / 'm2'}:v1")
        assert p.returncode != 0 and "manifest unknown" in p.stderr, p.stderr
