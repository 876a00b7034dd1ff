"""The upstream check (`embedded-registry check-upstream`) against real registries on
loopback: the Debian distribution server with token, Basic or no auth, plain HTTP or
TLS, and servers that misbehave in the ways an upstream can."""
import http.server
import json
import socket
import subprocess
import threading
import urllib.error
import urllib.request

import pytest

from conftest import BIN
from tools.certs import CA
from tools.registry import Registry, password

PATH = "/deckhouse/ee"


def check(*args, pw=None, env_pw=None, timeout=60):
    env = {"PATH": "/usr/bin:/bin"}
    if env_pw is not None:
        env["EMBEDDED_REGISTRY_UPSTREAM_PASSWORD"] = env_pw
    p = subprocess.run([str(BIN), "check-upstream", *args, "--json"], capture_output=True, text=True,
                       timeout=timeout, env=env)
    report = json.loads(p.stdout) if p.stdout.strip() else None
    for secret in [pw, env_pw]:
        if secret:
            assert secret not in p.stdout and secret not in p.stderr
    return p.returncode, report, p.stderr


def pwfile(tmp_path, user):
    f = tmp_path / f"{user}.pw"
    f.write_text(password(user) + "\n")
    return str(f)


@pytest.fixture
def token_upstream(tmp_path):
    with Registry(tmp_path / "up") as up:
        up.digests = {"root": up.push("deckhouse/ee", "v1.65.3"),
                      "install": up.push("deckhouse/ee/install", "v1.65.3", b"install\n")}
        yield up


def test_token_auth_finds_every_image_with_one_token_per_repository(tmp_path, token_upstream):
    up = token_upstream
    rc, r, _ = check("--host", up.host, "--scheme", "http", "--path", PATH, "--user", "puller",
                     "--password-file", pwfile(tmp_path, "puller"), "--image", ":v1.65.3",
                     "--image", "install:v1.65.3", "--image", f"@{up.digests['root']}",
                     "--image", f"install@{up.digests['install']}", pw=password("puller"))
    assert rc == 0, r
    assert r["ok"] and r["auth"] == "bearer" and "failure" not in r
    assert [i["digest"] for i in r["images"]] == [up.digests["root"], up.digests["install"],
                                                  up.digests["root"], up.digests["install"]]
    assert r["tokenRequests"] == 2, "one token per repository scope, reused"


def test_password_from_the_environment_and_human_output(tmp_path, token_upstream):
    up = token_upstream
    p = subprocess.run([str(BIN), "check-upstream", "--host", up.host, "--scheme", "http", "--path", PATH,
                        "--user", "puller", "--image", ":v1.65.3"], capture_output=True, text=True,
                       env={"EMBEDDED_REGISTRY_UPSTREAM_PASSWORD": password("puller")}, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith("OK: http://") and "found   deckhouse/ee:v1.65.3 (sha256:" in p.stdout


def test_wrong_password_is_bad_credentials(tmp_path, token_upstream):
    f = tmp_path / "wrong.pw"
    f.write_text("not-the-Pa55word")
    rc, r, _ = check("--host", token_upstream.host, "--scheme", "http", "--path", PATH, "--user", "puller",
                     "--password-file", str(f), "--image", ":v1.65.3", pw="not-the-Pa55word")
    assert rc == 1 and r["failure"]["kind"] == "bad-credentials"
    assert "proxy.password" in r["failure"]["message"] and "puller" in r["failure"]["message"]
    assert r["images"] == [], "no manifest is asked for with refused credentials"


def test_user_without_rights_is_denied(tmp_path, token_upstream):
    rc, r, _ = check("--host", token_upstream.host, "--scheme", "http", "--path", PATH, "--user", "nobody",
                     "--password-file", pwfile(tmp_path, "nobody"), "--image", ":v1.65.3")
    assert rc == 1 and r["failure"]["kind"] == "denied", r


def test_wrong_path_and_missing_release_are_told_apart(tmp_path, token_upstream):
    args = ["--host", token_upstream.host, "--scheme", "http", "--user", "puller",
            "--password-file", pwfile(tmp_path, "puller")]
    rc, r, _ = check(*args, "--path", "/deckhouse/ce", "--image", ":v1.65.3")
    assert rc == 1 and r["failure"]["kind"] == "name-unknown" and "proxy.path" in r["failure"]["message"]
    rc, r, _ = check(*args, "--path", PATH, "--image", ":v1.65.3", "--image", ":v1.99.0")
    assert rc == 1 and r["failure"]["kind"] == "manifest-unknown"
    assert [i["ok"] for i in r["images"]] == [True, False]


def test_token_realm_on_another_host_is_refused_with_credentials_only(tmp_path):
    with Registry(tmp_path / "up", realm_host="127.0.0.2") as up:
        up.push("deckhouse/ee", "v1")
        base = ["--host", up.host, "--scheme", "http", "--path", PATH, "--image", ":v1"]
        rc, r, _ = check(*base, "--user", "puller", "--password-file", pwfile(tmp_path, "puller"))
        assert rc == 1 and r["failure"]["kind"] == "token-realm-other-domain", r
        assert "127.0.0.2" in r["failure"]["message"]
        # Without credentials the realm's domain does not matter (anonymous pulls); this
        # issuer refuses anonymous tokens, so the check says credentials are needed.
        rc, r, _ = check(*base)
        assert rc == 1 and r["failure"]["kind"] == "bad-credentials" and "set proxy.user" in r["failure"]["message"]


def test_basic_auth_over_tls(tmp_path):
    ca = CA()
    crt, key = ca.leaf(tmp_path, "upstream", sans=("127.0.0.1",))
    (tmp_path / "ca.crt").write_text(ca.pem())
    with Registry(tmp_path / "up", auth="basic", tls=(crt, key)) as up:
        up.push("deckhouse/ee", "v1")
        base = ["--host", up.host, "--path", PATH, "--ca-file", str(tmp_path / "ca.crt"), "--image", ":v1",
                "--user", "puller"]
        rc, r, _ = check(*base, "--password-file", pwfile(tmp_path, "puller"))
        assert rc == 0 and r["auth"] == "basic", r
        f = tmp_path / "wrong"
        f.write_text("wrong-one")
        rc, r, _ = check(*base, "--password-file", str(f))
        assert rc == 1 and r["failure"]["kind"] == "bad-credentials", r


def test_anonymous_registry(tmp_path):
    with Registry(tmp_path / "up", auth="none") as up:
        up.push("deckhouse/ee", "v1")
        rc, r, _ = check("--host", up.host, "--scheme", "http", "--path", PATH, "--image", ":v1")
        assert rc == 0 and r["auth"] == "anonymous", r
        # https against a plain-HTTP registry: told to set the scheme, not a vague TLS error.
        rc, r, _ = check("--host", up.host, "--path", PATH, "--image", ":v1")
        assert rc == 1 and r["failure"]["kind"] == "tls" and "proxy.scheme: http" in r["failure"]["message"], r


@pytest.mark.parametrize("case,kind", [("unknown-ca", "tls-unknown-ca"), ("wrong-name", "tls-name-mismatch"),
                                       ("expired", "tls-expired")])
def test_tls_failures(tmp_path, case, kind):
    ca = CA()
    (tmp_path / "ca.crt").write_text(ca.pem())
    sans = ("registry.example",) if case == "wrong-name" else ("127.0.0.1",)
    days = (-10, -1) if case == "expired" else (-1, 10)
    crt, key = ca.leaf(tmp_path, "upstream", sans=sans, days=days)
    with Registry(tmp_path / "up", auth="none", tls=(crt, key)) as up:
        args = ["--host", up.host, "--path", PATH]
        if case != "unknown-ca":
            args += ["--ca-file", str(tmp_path / "ca.crt")]
        rc, r, _ = check(*args)
        assert rc == 1 and r["failure"]["kind"] == kind, r
    if case == "unknown-ca":
        # The same registry with its CA given is fine.
        crt, key = ca.leaf(tmp_path, "ok", sans=("127.0.0.1",))
        with Registry(tmp_path / "up2", auth="none", tls=(crt, key)) as up:
            rc, r, _ = check("--host", up.host, "--path", PATH, "--ca-file", str(tmp_path / "ca.crt"))
            assert rc == 0, r


def test_closed_port_is_connect(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc, r, _ = check("--host", f"127.0.0.1:{port}", "--path", PATH)
    assert rc == 1 and r["failure"]["kind"] == "connect" and "cannot connect" in r["failure"]["message"]


def test_a_server_that_never_answers_is_a_timeout_within_the_budget():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)  # the kernel accepts connections; nobody ever reads or writes
        port = s.getsockname()[1]
        # The subprocess timeout is only a guard: the check itself must stop at its budget.
        rc, r, _ = check("--host", f"127.0.0.1:{port}", "--path", PATH, "--timeout", "1s", timeout=20)
    assert rc == 1 and r["failure"]["kind"] == "timeout", r


class _Server:
    """An in-process HTTP server on 127.0.0.1 with a handler class."""

    def __init__(self, handler):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def rate_limiting_front(backend, limited, retry_after):
    """A reverse proxy in front of a real registry: answers 429 to the first `limited`
    manifest requests, forwards everything else."""
    state = {"limited": 0}

    class Front(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def forward(self):
            if "/manifests/" in self.path and state["limited"] < limited:
                state["limited"] += 1
                self.send_response(429)
                self.send_header("Retry-After", str(retry_after))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            req = urllib.request.Request(f"http://{backend}{self.path}", method=self.command,
                                         headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
            try:
                resp = urllib.request.urlopen(req, timeout=10)
                code, headers, body = resp.status, resp.headers, resp.read()
            except urllib.error.HTTPError as e:
                code, headers, body = e.code, e.headers, e.read()
            self.send_response(code)
            for k, v in headers.items():
                if k.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)) if self.command != "HEAD" else headers.get("Content-Length", "0"))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = forward

    return Front, state


def test_rate_limited_then_served(tmp_path):
    with Registry(tmp_path / "up", auth="none") as up:
        up.push("deckhouse/ee", "v1")
        handler, state = rate_limiting_front(up.host, limited=1, retry_after=1)
        with _Server(handler) as front:
            rc, r, _ = check("--host", front.host, "--scheme", "http", "--path", PATH, "--image", ":v1")
            assert rc == 0, r
            assert state["limited"] == 1, "the 429 was seen and retried"
        # A Retry-After beyond the budget fails at once as rate limited.
        handler, state = rate_limiting_front(up.host, limited=100, retry_after=3600)
        with _Server(handler) as front:
            rc, r, _ = check("--host", front.host, "--scheme", "http", "--path", PATH, "--image", ":v1",
                             "--timeout", "5s")
            assert rc == 1 and r["failure"]["kind"] == "rate-limited", r
            assert state["limited"] == 1


def test_not_a_registry(tmp_path):
    (tmp_path / "index.html").write_text("<html>hello</html>")

    class Files(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(tmp_path), **kw)

        def log_message(self, *a):
            pass

    with _Server(Files) as web:
        rc, r, _ = check("--host", web.host, "--scheme", "http", "--path", PATH, "--image", ":v1")
    assert rc == 1 and r["failure"]["kind"] == "not-a-registry" and "HTTP 404" in r["failure"]["message"], r


@pytest.mark.parametrize("args,why", [
    (["--path", PATH], "--host"),
    (["--host", "h", "--path", PATH, "--scheme", "ftp"], "ftp"),
    (["--host", "h", "--path", PATH, "--image", "no-reference"], "--image"),
    (["--host", "h", "--path", PATH, "--user", "u"], "--password-file"),
    (["--host", "h", "--path", PATH, "--user", "u", "--password-file", "/nonexistent/pw"], "/nonexistent/pw"),
    (["--host", "h", "--path", PATH, "--timeout", "soon"], "soon"),
    (["--host", "https://h", "--path", PATH], "host[:port]"),
])
def test_bad_arguments_exit_2(args, why):
    p = subprocess.run([str(BIN), "check-upstream", *args], capture_output=True, text=True, env={})
    assert p.returncode == 2, p.stderr
    assert why in p.stderr and p.stdout == ""
