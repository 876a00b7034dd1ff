"""The S3 storage check (`embedded-registry check-storage`) against a real Garage on
loopback (tests/tools/garage.py): one node and a three-node replicated cluster, each
failure kind produced by the real server (or, for TLS, a TLS terminator in front of it;
for not-s3 / timeout / oversize, a plain HTTP server or a silent socket), and no key in
any output."""
import http.server
import json
import socket
import subprocess
import threading

import pytest

from conftest import BIN
from tools.certs import CA
from tools.garage import REGION, Garage, TlsFront, garage_bin
from tools.processes import wait_until



def need_garage():
    if garage_bin() is None:
        pytest.skip("garage is not installed: run scripts/setup (cargo install --locked garage)")

BUCKET = "registry"


def check(tmp_path, endpoint, key, secret, *extra, bucket=BUCKET, region=REGION, timeout=60):
    """Runs check-storage --json; asserts no key in the output; returns (rc, report, stderr)."""
    kf, sf = tmp_path / "access", tmp_path / "secret"
    kf.write_text(key + "\n")
    sf.write_text(secret + "\n")
    p = subprocess.run([str(BIN), "check-storage", "--endpoint", endpoint, "--bucket", bucket,
                        "--region", region, "--access-key-file", str(kf), "--secret-key-file", str(sf),
                        *extra, "--json"],
                       capture_output=True, text=True, timeout=timeout,
                       env={"PATH": "/usr/bin:/bin"})
    for s in (key, secret):
        assert s not in p.stdout and s not in p.stderr, "a key leaked into the output"
    report = json.loads(p.stdout) if p.stdout.strip() else None
    if report is not None:
        assert p.stdout.count("\n") == 1, "one JSON line"
        if report.get("failure"):
            assert "\n" not in report["failure"]["message"]
    return p.returncode, report, p.stderr


def kind(report):
    return (report.get("failure") or {}).get("kind")


def objects_in(g, bucket=BUCKET):
    out = g.cli("bucket", "info", bucket).stdout
    for line in out.splitlines():
        if line.strip().lower().startswith("objects:"):
            return int(line.split(":", 1)[1].split()[0])
    raise AssertionError(f"no object count in `garage bucket info`:\n{out}")


@pytest.fixture(scope="module")
def one(tmp_path_factory):
    need_garage()
    with Garage(tmp_path_factory.mktemp("garage1"), nodes=1) as g:
        g.create_bucket(BUCKET)
        g.rw = g.create_key("rw")
        g.allow(BUCKET, g.rw[0])
        g.ro = g.create_key("ro")
        g.allow(BUCKET, g.ro[0], write=False)
        g.none = g.create_key("none")  # a valid key with no rights on the bucket
        yield g


def test_a_usable_bucket_passes_and_the_probe_is_gone(tmp_path, one):
    key, secret = one.rw
    for _ in range(2):  # idempotent: the second run finds the same, leaves the same
        rc, r, err = check(tmp_path, one.endpoint(), key, secret)
        assert rc == 0, (r, err)
        assert r["ok"] and "failure" not in r
        assert [s["step"] for s in r["steps"]] == ["list-buckets", "list-objects", "put-object",
                                                  "get-object", "delete-object"]
        assert all(s["ok"] for s in r["steps"])
        assert objects_in(one) == 0, "the probe object was deleted"


def test_human_output_says_ok_and_names_the_bucket(tmp_path, one):
    kf, sf = tmp_path / "k", tmp_path / "s"
    kf.write_text(one.rw[0])
    sf.write_text(one.rw[1])
    p = subprocess.run([str(BIN), "check-storage", "--endpoint", one.endpoint(), "--bucket", BUCKET,
                        "--region", REGION, "--access-key-file", str(kf), "--secret-key-file", str(sf)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith(f"OK: bucket {BUCKET} at {one.endpoint()} is usable"), p.stdout


def test_an_unknown_key_is_bad_credentials(tmp_path, one):
    rc, r, _ = check(tmp_path, one.endpoint(), "GK" + "0" * 24, one.rw[1])
    assert rc == 1 and kind(r) == "bad-credentials", r
    assert "s3.accessKey" in r["failure"]["message"]


def test_a_wrong_secret_is_bad_credentials(tmp_path, one):
    rc, r, _ = check(tmp_path, one.endpoint(), one.rw[0], "f" * 64)
    assert rc == 1 and kind(r) == "bad-credentials", r
    assert "s3.secretKey" in r["failure"]["message"]


def test_a_missing_bucket_is_no_bucket(tmp_path, one):
    rc, r, _ = check(tmp_path, one.endpoint(), *one.rw, bucket="no-such-bucket")
    assert rc == 1 and kind(r) == "no-bucket", r
    assert "no-such-bucket" in r["failure"]["message"]
    assert r["steps"][0] == {"step": "list-buckets", "ok": True, "status": 200}


def test_a_read_only_key_is_denied_at_the_write(tmp_path, one):
    rc, r, _ = check(tmp_path, one.endpoint(), *one.ro)
    assert rc == 1 and kind(r) == "denied", r
    assert r["steps"][-1]["step"] == "put-object" and not r["steps"][-1]["ok"]
    assert "write" in r["failure"]["message"]


def test_a_key_without_rights_on_the_bucket_is_denied_not_bad_credentials(tmp_path, one):
    rc, r, _ = check(tmp_path, one.endpoint(), *one.none)
    assert rc == 1 and kind(r) == "denied", r
    assert r["steps"][-1]["step"] == "list-objects"


def test_a_wrong_region_is_wrong_region(tmp_path, one):
    rc, r, _ = check(tmp_path, one.endpoint(), *one.rw, region="us-east-1")
    assert rc == 1 and kind(r) == "wrong-region", r
    assert f"s3.region: {REGION}" in r["failure"]["message"], "names the region Garage expects"


def test_an_endpoint_down_is_connect(tmp_path, one):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc, r, _ = check(tmp_path, f"http://127.0.0.1:{port}", *one.rw)
    assert rc == 1 and kind(r) == "connect", r


def _serve(handler_body):
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            handler_body(self)

        do_PUT = do_DELETE = do_GET

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _check_served(tmp_path, handler_body, keys):
    """check-storage (with `keys`) against a local HTTP server answering with
    `handler_body`; the server is shut down whatever happens."""
    srv = _serve(handler_body)
    try:
        return check(tmp_path, f"http://127.0.0.1:{srv.server_port}", *keys)
    finally:
        srv.shutdown()


def test_a_web_server_is_not_s3(tmp_path, one):
    def page(h):
        body = b"<html><body>It works!</body></html>"
        h.send_response(200)
        h.send_header("Content-Type", "text/html")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    rc, r, _ = _check_served(tmp_path, page, one.rw)
    assert rc == 1 and kind(r) == "not-s3", r
    assert "s3.endpoint" in r["failure"]["message"]


def test_an_endless_answer_is_oversize(tmp_path, one):
    def endless(h):
        h.send_response(200)
        h.end_headers()
        try:
            for _ in range(4096):  # 4 GiB at most: the client stops long before
                h.wfile.write(b"<ListAllMyBucketsResult>" + b"x" * (1 << 20))
        except OSError:
            pass

    rc, r, _ = _check_served(tmp_path, endless, one.rw)
    assert rc == 1 and kind(r) == "oversize", r


def test_a_silent_server_is_timeout(tmp_path, one):
    with socket.socket() as s:  # accepts connections (the backlog) and never answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        rc, r, _ = check(tmp_path, f"http://127.0.0.1:{s.getsockname()[1]}", *one.rw,
                         "--timeout", "3s", "--request-timeout", "1s")
    assert rc == 1 and kind(r) == "timeout", r


@pytest.fixture(scope="module")
def tls(one, tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    ca, other = CA("s3-ca"), CA("other-ca")
    (d / "ca.crt").write_text(ca.pem())
    (d / "other.crt").write_text(other.pem())
    crt, key = ca.leaf(d, "s3", sans=("127.0.0.1",))
    wrong_crt, wrong_key = ca.leaf(d, "wrong-name", sans=("s3.other.example",))
    backend = (one.nodes[0].host, one.nodes[0].s3_port)
    with TlsFront(backend, crt, key) as good, TlsFront(backend, wrong_crt, wrong_key) as misnamed:
        yield d, good, misnamed


def test_tls_verified_against_the_given_ca_passes(tmp_path, one, tls):
    d, good, _ = tls
    rc, r, _ = check(tmp_path, good.endpoint, *one.rw, "--ca-file", str(d / "ca.crt"))
    assert rc == 0, r


def test_tls_without_the_ca_or_with_another_is_tls_unknown_ca(tmp_path, one, tls):
    d, good, _ = tls
    rc, r, _ = check(tmp_path, good.endpoint, *one.rw)
    assert rc == 1 and kind(r) == "tls-unknown-ca", r
    rc, r, _ = check(tmp_path, good.endpoint, *one.rw, "--ca-file", str(d / "other.crt"))
    assert rc == 1 and kind(r) == "tls-unknown-ca", r
    assert "s3.ca" in r["failure"]["message"]


def test_tls_for_another_name_is_tls_name_mismatch(tmp_path, one, tls):
    d, _, misnamed = tls
    rc, r, _ = check(tmp_path, misnamed.endpoint, *one.rw, "--ca-file", str(d / "ca.crt"))
    assert rc == 1 and kind(r) == "tls-name-mismatch", r


def test_https_to_plain_http_is_tls(tmp_path, one):
    rc, r, _ = check(tmp_path, one.endpoint().replace("http://", "https://"), *one.rw)
    assert rc == 1 and kind(r) == "tls", r
    assert "http://" in r["failure"]["message"]


@pytest.mark.parametrize("args, field", [
    (["--endpoint", "127.0.0.1:3900"], "--endpoint"),
    (["--endpoint", "http://h:1/path"], "--endpoint"),
    (["--bucket", "Bad_Bucket"], "--bucket"),
    (["--region", "bad region"], "--region"),
    (["--root-directory", "/a/../b"], "--root-directory"),
    (["--timeout", "0s"], "--timeout"),
])
def test_bad_arguments_exit_2_with_one_line_naming_the_flag(tmp_path, args, field):
    kf, sf = tmp_path / "k", tmp_path / "s"
    kf.write_text("GK1234")
    sf.write_text("topsecret")
    base = {"--endpoint": "http://127.0.0.1:9", "--bucket": BUCKET, "--region": REGION,
            "--access-key-file": str(kf), "--secret-key-file": str(sf)}
    base.update(dict(zip(args[::2], args[1::2])))
    flat = [x for kv in base.items() for x in kv]
    p = subprocess.run([str(BIN), "check-storage", *flat, "--json"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2, p.stderr
    assert p.stdout == ""
    assert p.stderr.count("\n") == 1 and field in p.stderr, p.stderr
    assert "topsecret" not in p.stderr and "GK1234" not in p.stderr


def test_an_empty_secret_file_is_a_usage_error(tmp_path):
    kf, sf = tmp_path / "k", tmp_path / "s"
    kf.write_text("GK1234")
    sf.write_text("\n")
    p = subprocess.run([str(BIN), "check-storage", "--endpoint", "http://127.0.0.1:9", "--bucket", BUCKET,
                        "--region", REGION, "--access-key-file", str(kf), "--secret-key-file", str(sf)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "--secret-key-file" in p.stderr and p.stdout == ""


def test_three_nodes_pass_and_keep_passing_with_one_node_stopped(tmp_path_factory, tmp_path):
    need_garage()
    with Garage(tmp_path_factory.mktemp("garage3"), nodes=3) as g:
        g.create_bucket(BUCKET)
        key, secret = g.create_key("rw")
        g.allow(BUCKET, key)
        for i in range(3):  # every node serves the bucket, once the new key reached it
            # (Garage replicates keys and permissions to the other nodes asynchronously)
            last = []
            wait_until(lambda: last.append(check(tmp_path, g.endpoint(i), key, secret)) or last[-1][0] == 0,
                       timeout=60, what=f"node {i} to accept the new key", interval=0.5)
            rc, r, err = last[-1]
            assert rc == 0, (i, r, err)
        g.nodes[2].stop()
        assert not g.nodes[2].running()
        for i in range(2):
            rc, r, err = check(tmp_path, g.endpoint(i), key, secret)
            assert rc == 0, (i, r, err, g.nodes[i].log())
        rc, r, _ = check(tmp_path, g.endpoint(2), key, secret)
        assert rc == 1 and kind(r) == "connect", r
