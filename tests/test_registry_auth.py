"""Certificates and users proven with real components: openssl checks the PKI, the
real distribution server serves TLS with the generated pair and verifies tokens
against the generated rootcertbundle, skopeo trusts only the generated CA, and the
token issuer applies the generated docker_auth users and ACL."""
import subprocess

import pytest

from conftest import module_config, nodes_file
from tools.oci import build_layout
from registry_env import NodeRegistry, node_config, secret_data
from tools.registry import skopeo

DETACHED = {"mode": "Detached", "detached": {"storageMode": "Fs"}}


@pytest.fixture
def detached(converge, tmp_path):
    nodes = nodes_file(tmp_path, [("m1", "10.0.0.1"), ("m2", "10.0.0.2")])
    converge(module_config(tmp_path, DETACHED), nodes)
    return converge


def openssl(*args, stdin=None):
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, text=True)


def test_every_leaf_verifies_against_the_ca_with_openssl(detached, tmp_path):
    for node, ip in [("m1", "10.0.0.1"), ("m2", "10.0.0.2")]:
        # Every master has its pair (a registry can move to it); a Detached registry runs
        # on the first master only, so read the pairs from their Secrets.
        files = dict(secret_data(detached.state, f"registry-node-{node}-pki"),
                     **{"ca.crt": node_config(detached.state, "m1")["ca.crt"]})
        ca = tmp_path / "ca.crt"
        ca.write_text(files["ca.crt"])
        for leaf in ("distribution.crt", "auth.crt"):
            path = tmp_path / leaf
            path.write_text(files[leaf])
            p = openssl("verify", "-CAfile", str(ca), str(path))
            assert p.returncode == 0 and ": OK" in p.stdout, p.stdout + p.stderr
            text = openssl("x509", "-in", str(path), "-noout", "-text").stdout
            for name in ("IP Address:127.0.0.1", f"IP Address:{ip}", "DNS:localhost", f"DNS:{node}",
                         "DNS:embedded-registry.d8-system.svc"):
                assert name in text, (leaf, name)
            assert "CA:FALSE" in text
            # A key that matches the certificate.
            key_pub = openssl("pkey", "-pubout", stdin=files[leaf.replace(".crt", ".key")]).stdout
            cert_pub = openssl("x509", "-pubkey", "-noout", "-in", str(path)).stdout
            assert key_pub == cert_pub
        ca_text = openssl("x509", "-in", str(ca), "-noout", "-text").stdout
        assert "CA:TRUE" in ca_text


def test_generated_auth_config_is_consistent(detached):
    files = node_config(detached.state, "m1")
    import yaml
    dist, auth = yaml.safe_load(files["distribution.yaml"]), yaml.safe_load(files["auth.yaml"])
    assert auth["token"]["issuer"] == dist["auth"]["token"]["issuer"]
    assert auth["token"]["disable_legacy_key_id"] is True
    assert files["token.crt"].strip() in files["token-bundle.crt"]
    assert dist["storage"]["delete"]["enabled"] is True
    ro, rw = secret_data(detached.state, "registry-user-ro"), secret_data(detached.state, "registry-user-rw")
    assert set(auth["users"]) == {ro["name"], rw["name"]}
    assert ro["password"] not in files["auth.yaml"] and rw["password"] not in files["auth.yaml"]


def test_users_pull_push_and_are_denied_with_real_clients(detached, tmp_path):
    ro, rw = secret_data(detached.state, "registry-user-ro"), secret_data(detached.state, "registry-user-rw")
    layout = tmp_path / "layout"
    build_layout(layout, "v1", b"hello from the embedded registry\n")
    with NodeRegistry(detached.state, "m1", tmp_path / "m1") as reg:
        dest = f"docker://{reg.host}/system/deckhouse/test:v1"
        cert = f"--dest-cert-dir={reg.certs}"

        p = skopeo("copy", cert, f"--dest-creds={rw['name']}:{rw['password']}", f"oci:{layout}:v1", dest)
        assert p.returncode == 0, p.stderr + reg.log()

        out = tmp_path / "pulled"
        p = skopeo("copy", f"--src-cert-dir={reg.certs}", f"--src-creds={ro['name']}:{ro['password']}",
                   dest, f"oci:{out}:v1")
        assert p.returncode == 0, p.stderr
        assert (out / "index.json").exists()

        p = skopeo("copy", cert, f"--dest-creds={ro['name']}:{ro['password']}", f"oci:{layout}:v1",
                   f"docker://{reg.host}/system/deckhouse/test:ro-push")
        assert p.returncode != 0
        assert "denied" in p.stderr.lower() or "unauthorized" in p.stderr.lower(), p.stderr

        p = skopeo("inspect", f"--cert-dir={reg.certs}", f"--creds={ro['name']}:wrong-password", dest)
        assert p.returncode != 0 and ("unauthorized" in p.stderr.lower() or "401" in p.stderr), p.stderr

        p = skopeo("inspect", f"--cert-dir={reg.certs}", "--no-creds", dest)
        assert p.returncode != 0 and ("unauthorized" in p.stderr.lower() or "401" in p.stderr), p.stderr

        # TLS is verified: without the generated CA the same pull fails.
        empty = tmp_path / "no-ca"
        empty.mkdir()
        p = skopeo("inspect", f"--cert-dir={empty}", f"--creds={ro['name']}:{ro['password']}", dest)
        assert p.returncode != 0 and "certificate" in p.stderr.lower(), p.stderr


DAY = 86400
YEAR = 365 * DAY


def ca_count(bundle):
    return bundle.count("BEGIN CERTIFICATE")


def test_ca_rotation_keeps_pulls_working_at_every_step(converge, tmp_path):
    """The CA is issued seven years ago (a third of its ten years left, so due), then the
    hooks run a day apart until the old CA is dropped. After every step the registry
    restarts with the new files, as the static pod does; a client that still has the
    previous step's CA bundle (a node that has not caught up) and one with the current
    bundle both pull."""
    import time
    now = int(time.time())
    cfg = module_config(tmp_path, DETACHED)
    nodes = nodes_file(tmp_path, [("m1", "10.0.0.1")])
    converge(cfg, nodes, now=now - 7 * YEAR)
    first_ca = secret_data(converge.state, "registry-pki")["ca.crt"]

    layout = tmp_path / "layout"
    build_layout(layout, "v1", b"rotation\n")
    work = tmp_path / "m1"
    bundles, previous_bundle = [], None
    for step, at in enumerate([now - 2 * DAY, now - DAY, now]):
        converge(cfg, now=at)
        files = node_config(converge.state, "m1")
        bundles.append(ca_count(files["ca.crt"]))
        rw = secret_data(converge.state, "registry-user-rw")
        ro = secret_data(converge.state, "registry-user-ro")
        with NodeRegistry(converge.state, "m1", work) as reg:
            ref = f"docker://{reg.host}/system/deckhouse/rot:v1"
            if step == 0:
                p = skopeo("copy", f"--dest-cert-dir={reg.certs}", f"--dest-creds=rw:{rw['password']}",
                           f"oci:{layout}:v1", ref)
                assert p.returncode == 0, p.stderr
            clients = {"current": files["ca.crt"]}
            if previous_bundle:
                clients["lagging"] = previous_bundle
            for who, bundle in clients.items():
                certs = tmp_path / f"certs-{step}-{who}"
                certs.mkdir()
                (certs / "ca.crt").write_text(bundle)
                p = skopeo("inspect", f"--cert-dir={certs}", f"--creds=ro:{ro['password']}", ref)
                assert p.returncode == 0, f"step {step}, {who} client: {p.stderr}"
        previous_bundle = files["ca.crt"]
    assert bundles == [2, 2, 1], "introduce (old+new), switch (old+new), retire (new)"
    final_ca = secret_data(converge.state, "registry-pki")["ca.crt"]
    assert final_ca != first_ca and final_ca.strip() == previous_bundle.strip()


def test_a_certificate_forged_to_expire_soon_is_reissued(detached, tmp_path):
    """openssl signs a distribution certificate with the real CA that is valid for one
    day; the next converge replaces it, and leaves the other master alone."""
    import base64
    import json
    pki = secret_data(detached.state, "registry-pki")
    (tmp_path / "ca.crt").write_text(pki["ca.crt"])
    (tmp_path / "ca.key").write_text(pki["ca.key"])
    (tmp_path / "ext").write_text("subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:m1,"
                                  "DNS:embedded-registry.d8-system,DNS:embedded-registry.d8-system.svc,"
                                  "DNS:embedded-registry.d8-system.svc.cluster.local\nbasicConstraints=CA:FALSE\n")
    assert openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(tmp_path / "k.pem")).returncode == 0
    assert openssl("pkcs8", "-topk8", "-nocrypt", "-in", str(tmp_path / "k.pem"), "-out", str(tmp_path / "leaf.key")).returncode == 0
    assert openssl("req", "-new", "-key", str(tmp_path / "leaf.key"), "-subj", "/CN=m1", "-out", str(tmp_path / "leaf.csr")).returncode == 0
    p = openssl("x509", "-req", "-in", str(tmp_path / "leaf.csr"), "-CA", str(tmp_path / "ca.crt"), "-CAkey",
                str(tmp_path / "ca.key"), "-CAcreateserial", "-days", "1", "-extfile", str(tmp_path / "ext"),
                "-out", str(tmp_path / "leaf.crt"))
    assert p.returncode == 0, p.stderr
    path = detached.state / "objects/d8-system/Secret/registry-node-m1-pki.json"
    obj = json.loads(path.read_text())
    forged = (tmp_path / "leaf.crt").read_text()
    obj["data"]["distribution.crt"] = base64.b64encode(forged.encode()).decode()
    obj["data"]["distribution.key"] = base64.b64encode((tmp_path / "leaf.key").read_text().encode()).decode()
    path.write_text(json.dumps(obj))
    m2_before = secret_data(detached.state, "registry-node-m2-pki")
    auth_before = secret_data(detached.state, "registry-node-m1-pki")["auth.crt"]

    s = detached(module_config(tmp_path, DETACHED, name="again.yaml"))
    assert s["objects"]["updated"] == ["d8-system/Secret/registry-node-m1-pki"]
    after = secret_data(detached.state, "registry-node-m1-pki")
    assert after["distribution.crt"] != forged
    assert after["auth.crt"] == auth_before, "the valid pair of the same master is kept"
    assert secret_data(detached.state, "registry-node-m2-pki") == m2_before
    text = openssl("x509", "-in", "/dev/stdin", "-noout", "-enddate", stdin=after["distribution.crt"]).stdout
    assert "notAfter" in text


def test_passwords_and_keys_stay_out_of_output_values_and_metrics(converge, tmp_path):
    cfg = module_config(tmp_path, DETACHED)
    nodes = nodes_file(tmp_path, [("m1", "10.0.0.1")])
    from conftest import ROOT, run
    import sys
    outputs = []
    for json_flag in ([], ["--json"]):
        p = run(["converge", "--module-config", str(cfg), "--nodes", str(nodes), "--state", str(converge.state),
                 "--module-dir", str(ROOT), "--python", sys.executable, *json_flag])
        assert p.returncode == 0, p.stderr
        outputs.append(p.stdout + p.stderr)
    secrets = [secret_data(converge.state, f"registry-user-{r}")["password"] for r in ("ro", "rw")]
    pki = secret_data(converge.state, "registry-pki")
    secrets += [pki["ca.key"].splitlines()[1], pki["token.key"].splitlines()[1]]
    values = (converge.state / "values.json").read_text()
    metrics = (converge.state / "metrics.json").read_text()
    for s in secrets:
        for where, text in [("output", "".join(outputs)), ("metrics", metrics)]:
            assert s not in text, where
    for password in secrets[:2]:
        assert password not in values, "user passwords never reach values"
    assert pki["ca.key"].splitlines()[1] not in values, "the CA key never reaches values"
