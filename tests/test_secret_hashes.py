"""No hash of a secret is published, and every secret still restarts the registry.

The config hash (the node config Secret's `config-hash` and `rollout-order`
annotations, the static pod's annotation, `appliedConfigHash` in the status ConfigMap,
its first 16 digits in the `X-Embedded-Registry-Config` header on unauthenticated
`/v2/`) and the `ro-user` annotation were once SHA-256 digests over files holding
private keys, `http.secret`, the upstream password and bcrypt hashes. The chart now
hashes the files with each secret replaced by its revision (random, renewed with the
secret by the hook that owns it: pki, users, registry-switch for the upstream password
and the S3 secret key), a private key by its certificate.

End to end (the real hooks through the converge, the real Helm engine, the real node
hook): a Proxy cluster of two masters over a real upstream; one secret at a time is
changed where it lives (the ModuleConfig's upstream password, a user's password, a
master's private key, the token signing key, `http.secret`): the config hash of the
masters that run it changes (kubelet restarts them). After every converge, nothing
published outside a Secret's data holds a secret or the SHA-256 (whole, or its first
16 digits) of a secret, of a file holding one, or of the files as the chart once
hashed them; the header the real registry serves is the hash's first 16 digits.

The S3 secret key cannot be changed alone on a real S3 (an access key's secret is
fixed), so its part is split: the registry-switch hook renews the key's revision with
the key alone and keeps it otherwise (Rust, `registry_switch/storage_tests.rs`,
`the_s3_secret_key_keeps_its_revision_until_it_changes`) and, here, the chart over the
converged values: the hash follows the revision and not the key."""
import base64
import hashlib
import json
import re
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

import yaml

from conftest import module_config, nodes_file, render_chart
from registry_env import NodeRegistry, loopback_masters, rendered_secret, run_node_hook, secret_data, \
    status_config_maps
from tools.registry import Registry

CONFIG_HASH = "embedded-registry.deckhouse.io/config-hash"
RO_USER = "embedded-registry.deckhouse.io/ro-user"
PASSWORD_A = "UpstreamPassw0rdAlpha17"
PASSWORD_B = "UpstreamPassw0rdBravo42"


def settings(upstream, password):
    return {"mode": "Proxy", "proxy": {"host": upstream.host, "scheme": "http", "path": "/deckhouse/ee",
                                       "user": "puller", "password": password}}


def b64(text):
    return base64.b64encode(text.encode()).decode()


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


def go_json(files):
    """`toJson` of a dict of strings as Helm writes it (Go's encoding/json: keys sorted,
    no spaces, <, > and & escaped)."""
    out = json.dumps(files, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return out.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") \
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


# The header block the chart renders into a distribution config (the files were once
# hashed without it).
HEADER_BLOCK = re.compile(r"\n  # Which files this process runs:.*?\n  headers:\n"
                          r"    X-Embedded-Registry-Config: \[[^\]]*\]", re.S)


class Cluster:
    """A converged Proxy cluster of two masters, and what it publishes."""

    def __init__(self, tmp_path, converge, upstream):
        self.tmp, self.converge, self.upstream = tmp_path, converge, upstream
        self.masters = loopback_masters(2)
        self.runs = 0
        self.password = PASSWORD_A

    def conv(self):
        self.runs += 1
        self.converge(module_config(self.tmp, settings(self.upstream, self.password), name=f"mc-{self.runs}.yaml"),
                      nodes_file(self.tmp, self.masters, name=f"nodes-{self.runs}.yaml"))
        for n, _ in self.masters:  # the node hooks report what they run (status ConfigMaps)
            run_node_hook(self.tmp, self.converge.state, n, self.tmp / f"host-{n}")
        return self.hashes()

    def hashes(self):
        return {n: rendered_secret(self.converge.state, n)["metadata"]["annotations"][CONFIG_HASH]
                for n, _ in self.masters}

    def objects(self):
        root = self.converge.state / "objects"
        return [json.loads(p.read_text()) for p in sorted(root.rglob("*.json"))]

    def edit_secret(self, name, **data):
        path = self.converge.state / "objects/d8-system/Secret" / f"{name}.json"
        obj = json.loads(path.read_text())
        obj["data"].update({k.replace("_", "-"): b64(v) for k, v in data.items()})
        path.write_text(json.dumps(obj))

    def secrets(self):
        """Every secret value the cluster holds: the upstream password, and in the
        module's Secrets every password, private key, shared secret, pull Secret and
        bcrypt hash (a hash of a bcrypt hash is a guessing oracle too), and the switch's
        state (it holds the upstream password)."""
        out = {self.password}
        secret_keys = ("password", "passwordHash", "http-secret", ".dockerconfigjson", "state.json")
        for obj in self.objects():
            if obj["kind"] != "Secret" or obj["metadata"].get("namespace") != "d8-system":
                continue
            for key, value in (obj.get("data") or {}).items():
                text = base64.b64decode(value).decode()
                if key in secret_keys or "PRIVATE KEY" in text:
                    out.add(text)
                if key == ".dockerconfigjson":
                    for entry in json.loads(text)["auths"].values():
                        out |= {entry.get("password", ""), entry.get("auth", "")}
        return {s for s in out if len(s) >= 8}

    def files_with_secrets(self):
        """Every master's rendered files that hold a secret, and its whole set of files
        as the chart once hashed them (with and without the header)."""
        out = []
        for n, _ in self.masters:
            doc = rendered_secret(self.converge.state, n)
            files = {k: base64.b64decode(v).decode() for k, v in doc["data"].items()}
            files.pop("manifest.embedded-registry.yaml")
            files.pop("config.warm-images.json", None)
            out += [t for k, t in files.items() if k.endswith(".key") or k.startswith("config.")]
            out.append(go_json(files))
            out.append(go_json({k: HEADER_BLOCK.sub("", t) for k, t in files.items()}))
        return out

    def published(self):
        """Everything outside a Secret's data: every object that is not a Secret (the
        status ConfigMaps among them; not the ModuleConfig, the administrator's input),
        every object's metadata, the static pods (kubelet
        publishes each as a mirror Pod), the header each registry sends on /v2/, the
        metrics and the converge's output."""
        out = [self.converge.output, (self.converge.state / "metrics.json").read_text()]
        for obj in self.objects():
            if obj["kind"] == "ModuleConfig":
                continue  # the administrator's input, where the upstream password is given
            out.append(json.dumps(obj if obj["kind"] != "Secret" else obj["metadata"]))
        for path in sorted((self.converge.state / "rendered").rglob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if not doc:
                    continue
                if doc["kind"] != "Secret":
                    out.append(json.dumps(doc))
                    continue
                out.append(json.dumps(doc["metadata"]))
                data = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
                if "manifest.embedded-registry.yaml" in data:
                    out.append(data["manifest.embedded-registry.yaml"])
                    for key in ("config.distribution.yaml", "config.distribution-cache-only.yaml"):
                        http = yaml.safe_load(data[key])["http"]
                        out.append(json.dumps(http.get("headers", {})))
        return "\n".join(out)

    def assert_no_secret_hash_published(self, *extra):
        """`extra`: more published text (a header a registry served)."""
        published = "\n".join([self.published(), *extra])
        secrets = self.secrets()
        assert PASSWORD_A in secrets or PASSWORD_B in secrets
        assert any("PRIVATE KEY" in s for s in secrets) and any(s.startswith("$2a$") for s in secrets), \
            "keys and bcrypt hashes are among the secrets searched for"
        derived = {}
        for s in list(secrets) + self.files_with_secrets():
            d = sha(s)
            derived[d] = derived[d[:16]] = s[:24]
        for s in secrets:
            assert s not in published, f"a secret is published: {s[:4]}..."
        found = sorted({what for d, what in derived.items() if d in published})
        assert not found, f"SHA-256 of secrets (or of files holding them) published: {found}"
        annotations = json.dumps(rendered_secret(self.converge.state, self.masters[0][0])["metadata"]["annotations"])
        assert self.hashes()[self.masters[0][0]] in published and annotations in published, \
            "the search covers the annotations"


def test_every_secret_restarts_the_registry_and_none_is_hashed_in_the_open(tmp_path, converge):
    with Registry(tmp_path / "up", auth="none") as up:
        c = Cluster(tmp_path, converge, up)
        m1, m2 = (n for n, _ in c.masters)
        before = c.conv()
        assert rendered_secret(converge.state, m1) is not None, "the Proxy registry is rendered"
        status = status_config_maps(converge.state)
        assert {n: status[n]["data"]["appliedConfigHash"] for n in (m1, m2)} == before, "the masters report it"
        c.assert_no_secret_hash_published()
        assert c.conv() == before, "the same secrets: the same hash (nothing restarts)"
        revision = secret_data(converge.state, "registry-user-ro")["revision"]
        assert rendered_secret(converge.state, m1)["metadata"]["annotations"][RO_USER] == revision

        def changed(what, edit, masters=(m1, m2)):
            nonlocal before
            edit()
            after = c.conv()
            for n in (m1, m2):
                if n in masters:
                    assert after[n] != before[n], f"{what}: {n} keeps its config hash (no restart)"
                else:
                    assert after[n] == before[n], f"{what}: {n} restarts for another master's key"
            c.assert_no_secret_hash_published()
            before = after

        def upstream_password():
            c.password = PASSWORD_B

        changed("the upstream password", upstream_password)
        ro = secret_data(converge.state, "registry-user-ro")
        changed("the ro password", lambda: c.edit_secret("registry-user-ro", password="NewRoPassw0rdAbcdEfgh123"))
        assert secret_data(converge.state, "registry-user-ro")["revision"] != ro["revision"]
        assert rendered_secret(converge.state, m1)["metadata"]["annotations"][RO_USER] != ro["revision"]
        changed("the rw password", lambda: c.edit_secret("registry-user-rw", password="NewRwPassw0rdAbcdEfgh456"))
        other_key = subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
                                   capture_output=True, text=True, check=True).stdout
        changed(f"{m2}'s distribution key",
                lambda: c.edit_secret(f"registry-node-{m2}-pki", **{"distribution.key": other_key}), masters=(m2,))
        changed("the token signing key", lambda: c.edit_secret("registry-pki", **{"token.key": other_key}))
        changed("http.secret", lambda: c.edit_secret("registry-pki", http_secret="N" * 48))
        assert c.conv() == before, "and it stays"
        # The header every client of /v2/ gets without logging in, from the real
        # registry on m1's rendered files: the config hash's first 16 digits.
        with NodeRegistry(converge.state, m1, tmp_path / "run-m1") as reg:
            ctx = ssl.create_default_context(cafile=str(reg.certs / "ca.crt"))
            try:
                urllib.request.urlopen(f"https://{reg.host}/v2/", timeout=10, context=ctx)
                served = None
            except urllib.error.HTTPError as e:
                served = e.headers.get("X-Embedded-Registry-Config")
        assert served == before[m1][:16], served
        c.assert_no_secret_hash_published(served)


def render(values):
    docs = yaml.safe_load_all(render_chart(values)["templates/registry-node-config.yaml"])
    return {d["metadata"]["name"]: d for d in docs if d}


def test_the_s3_secret_key_reaches_the_hash_through_its_revision_only(tmp_path, converge):
    """The chart over the converged values with an S3 target: a new secret key with its
    new revision (as registry-switch makes it: `registry_switch/storage_tests.rs`)
    changes every master's hash; the key alone does not, so the hash is not derived
    from it; and neither the key nor its digest is published."""
    with Registry(tmp_path / "up", auth="none") as up:
        c = Cluster(tmp_path, converge, up)
        c.conv()
    values = converge.values()
    switch = values["embeddedRegistry"]["internal"]["switch"]
    key_a, key_b = "S3SecretKeyAlpha" * 4, "S3SecretKeyBravo" * 4
    switch["registry"]["s3"] = {"endpoint": "https://127.0.0.66:3900", "region": "garage", "bucket": "registry",
                                "rootDirectory": "/er", "accessKey": "GK0123456789abcdef01234567",
                                "secretKey": key_a, "forcePathStyle": True}

    def hashes(secret_key, revision):
        switch["registry"]["s3"]["secretKey"] = secret_key
        switch["s3SecretKeyRevision"] = revision
        docs = render(values)
        files = {name: base64.b64decode(d["data"]["config.distribution.yaml"]).decode() for name, d in docs.items()}
        assert all(f"secretkey: \"{secret_key}\"" in f for f in files.values()), "the key is rendered"
        published = json.dumps([d["metadata"] for d in docs.values()]) + "".join(
            base64.b64decode(d["data"]["manifest.embedded-registry.yaml"]).decode() for d in docs.values())
        for digest in {sha(secret_key)} | {sha(f) for f in files.values()}:
            assert digest[:16] not in published
        return {name: d["metadata"]["annotations"][CONFIG_HASH] for name, d in docs.items()}

    first = hashes(key_a, "0123456789abcdef")
    assert hashes(key_b, "0123456789abcdef") == first, "the key alone: not hashed"
    second = hashes(key_b, "fedcba9876543210")
    assert all(second[n] != first[n] for n in first), "a new revision: every master restarts"
