"""Hostile registries on loopback against the real binary (`check-upstream`, `rotate`,
the converge's settings check): answers without end, a tag list whose Link points back
at itself, 429 with `Retry-After: 0`, an https registry announcing an http token realm,
and durations past Go's range. Each server is a Python http.server on 127.0.0.1 that
records every request; every run has a known password, which must appear in no output
(and, for the http realm, in no request)."""
import base64
import http.server
import json
import ssl
import subprocess
import threading

import pytest

from conftest import BIN, ROOT, module_config, run, tree_digest
from tools.processes import wait_until
from tools.certs import CA

PATH = "/deckhouse/ee"
USER = "puller"
PASSWORD = "Hostile-Pa55word-must-not-leak"
SECRETS = [PASSWORD, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()]
# An endless body stops here: far past every limit of the client (8 MiB at most), so
# a client that does not stop reads it all and fails its test, in bounded time.
ENDLESS_CAP = 64 << 20
ENDLESS = object()
REGISTRY_HEADERS = {"Docker-Distribution-API-Version": "registry/2.0", "Content-Type": "application/json"}


class Hostile:
    """A threaded HTTP/1.1 server on 127.0.0.1 (TLS when `tls` = (crt, key)).
    `route(server, method, path)` returns (status, headers, body): bytes, or ENDLESS for a
    body that goes on until the client leaves (at most ENDLESS_CAP)."""

    def __init__(self, route, tls=None):
        self.requests = []  # (method, path, headers)
        self.sent = 0  # body bytes of endless answers
        self.endless_done = 0
        lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def answer(self):
                with lock:
                    server.requests.append((self.command, self.path, dict(self.headers)))
                status, headers, body = route(server, self.command, self.path)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if body is ENDLESS:
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.close_connection = True
                    total = 0
                    try:
                        chunk = b"A" * 65536
                        while self.command != "HEAD" and total < ENDLESS_CAP:
                            self.wfile.write(chunk)
                            total += len(chunk)
                    except OSError:
                        pass  # the client went away: what it should do
                    finally:
                        with lock:
                            server.sent += total
                            server.endless_done += 1
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_DELETE = answer

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def count(self, part):
        return sum(1 for _, p, _ in self.requests if part in p)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def json_body(obj):
    return json.dumps(obj).encode()


def api_root(status=200):
    return status, REGISTRY_HEADERS, b"{}"


def clean(p):
    """No password (nor its Basic form) in any output; one line on stderr at most."""
    for s in SECRETS:
        assert s not in p.stdout and s not in p.stderr
    assert "panicked" not in p.stderr


def pwfile(tmp_path):
    f = tmp_path / "pw"
    f.write_text(PASSWORD + "\n")
    return str(f)


def check_upstream(tmp_path, server, *extra, scheme="http"):
    p = subprocess.run([str(BIN), "check-upstream", "--host", server.host, "--scheme", scheme, "--path", PATH,
                        "--user", USER, "--password-file", pwfile(tmp_path), "--image", ":v1.0.0",
                        "--json", *extra],
                       capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    clean(p)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    return json.loads(p.stdout)["failure"]


def rotate(tmp_path, server, *extra):
    p = subprocess.run([str(BIN), "rotate", "--registry", f"http://{server.host}", "--path", PATH, "--keep", "1",
                        "--user", USER, "--password-file", pwfile(tmp_path), "--dry-run", "--json", *extra],
                       capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    clean(p)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    return json.loads(p.stdout)["failure"]


def stopped_reading(server):
    """The client closed the endless answer before the server's cap."""
    wait_until(lambda: server.endless_done >= 1, timeout=30, what="the endless answer to end")
    assert server.sent < ENDLESS_CAP, f"{server.sent} bytes read by the client"


# --- answers without end ------------------------------------------------------------------

def endless_api(s, method, path):
    """A registry whose every answer goes on without end."""
    return 200, {}, ENDLESS


def endless_token(s, method, path):
    """A registry whose token realm answers without end."""
    if path == "/v2/":
        return 401, {"WWW-Authenticate": f'Bearer realm="http://{s.host}/token",service="hostile"'}, b"{}"
    return 200, {}, ENDLESS


@pytest.mark.parametrize("route,url,limit", [
    pytest.param(endless_api, "/v2/", "64 KiB", id="api"),
    pytest.param(endless_token, "/token", "1 MiB", id="token"),
])
def test_an_endless_answer_is_oversize(tmp_path, route, url, limit):
    with Hostile(route) as server:
        f = check_upstream(tmp_path, server, "--timeout", "60s")
        assert f["kind"] == "oversize", f
        assert url in f["message"] and limit in f["message"] and "AAAA" not in f["message"], f
        stopped_reading(server)


def test_rotate_stops_reading_an_endless_manifest(tmp_path):
    def route(s, method, path):
        if path == "/v2/":
            return api_root()
        if path.startswith(f"/v2{PATH}/tags/list"):
            return 200, REGISTRY_HEADERS, json_body({"name": PATH[1:], "tags": ["v1.0.0"]})
        return 200, {}, ENDLESS

    with Hostile(route) as server:
        f = rotate(tmp_path, server, "--timeout", "60s")
        assert f["stage"] == "scan" and f["kind"] == "oversize", f
        assert f"/v2{PATH}/manifests/v1.0.0" in f["message"] and "4 MiB" in f["message"], f
        assert "nothing was deleted" in f["message"], f
        stopped_reading(server)


# --- pagination that does not advance -----------------------------------------------------

@pytest.mark.parametrize("link,pages", [
    (lambda path: path, 1),  # a Link back to the very page
    (lambda path: f"/v2{PATH}/tags/list?last=v1.0.0&n={len(path)}", 2),  # the same last=, another n
])
def test_rotate_refuses_a_tag_list_that_does_not_advance(tmp_path, link, pages):
    def route(s, method, path):
        if path == "/v2/":
            return api_root()
        if path.startswith(f"/v2{PATH}/tags/list"):
            headers = dict(REGISTRY_HEADERS, Link=f'<{link(path)}>; rel="next"')
            return 200, headers, json_body({"name": PATH[1:], "tags": ["v1.0.0"]})
        return 404, REGISTRY_HEADERS, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}'

    with Hostile(route) as server:
        f = rotate(tmp_path, server, "--timeout", "60s")
        assert f["stage"] == "scan" and f["kind"] == "bad-pagination", f
        assert PATH[1:] in f["message"] and "nothing was deleted" in f["message"], f
        assert server.count("/tags/list") == pages


# --- 429 without a pause ------------------------------------------------------------------

def test_retry_after_zero_backs_off_and_is_rate_limited(tmp_path):
    def route(s, method, path):
        if path == "/v2/":
            return api_root()
        return 429, {"Retry-After": "0"}, b""

    with Hostile(route) as server:
        f = check_upstream(tmp_path, server, "--timeout", "4s")
        assert f["kind"] == "rate-limited", f
        # Back-off 1 s, 2 s, then 4 s is past the budget: three tries, not thousands.
        assert 2 <= server.count("/manifests/") <= 4, server.count("/manifests/")
    with Hostile(route) as server:
        f = rotate(tmp_path, server, "--timeout", "4s")
        assert f["stage"] == "scan" and f["kind"] == "rate-limited", f
        assert 2 <= server.count("/tags/list") <= 4, server.count("/tags/list")


# --- a token realm weaker than the registry -----------------------------------------------

def test_an_http_realm_of_an_https_registry_never_gets_the_password(tmp_path):
    ca = CA()
    (tmp_path / "ca.pem").write_text(ca.pem())
    tls = ca.leaf(tmp_path, "registry")

    def realm_route(s, method, path):
        return 200, {"Content-Type": "application/json"}, json_body({"token": "t"})

    with Hostile(realm_route) as realm:
        realm_url = f"http://{realm.host}/token"

        def route(s, method, path):
            if path == "/v2/":
                return 401, {"WWW-Authenticate": f'Bearer realm="{realm_url}",service="hostile"'}, b"{}"
            return 200, REGISTRY_HEADERS, b"{}"

        with Hostile(route, tls=tls) as registry:
            f = check_upstream(tmp_path, registry, "--ca-file", str(tmp_path / "ca.pem"), scheme="https")
            assert f["kind"] == "token-realm-insecure", f
            assert realm_url in f["message"] and "https token realm" in f["message"], f
            assert realm.requests == [], "nothing at all went to the http realm"
            for server in (realm, registry):
                for method, path, headers in server.requests:
                    for s in SECRETS:
                        assert s not in path and s not in json.dumps(headers)


# --- durations past Go's range ------------------------------------------------------------

BAD_DURATIONS = [
    (["check-upstream", "--host", "h", "--path", PATH, "--timeout", "99999999999999999999999h"], "--timeout"),
    (["check-upstream", "--host", "h", "--path", PATH, "--request-timeout", "2562048h"], "--request-timeout"),
    (["check-upstream", "--host", "h", "--path", PATH, "--timeout", "9223372036854775808ns"], "--timeout"),
    (["check-upstream", "--host", "h", "--path", PATH, "--timeout", "0"], "--timeout"),
    (["rotate", "--registry", "http://h", "--path", PATH, "--keep", "1", "--dry-run",
      "--min-age", "99999999999999999999999h"], "--min-age"),
    (["rotate", "--registry", "http://h", "--path", PATH, "--keep", "1", "--dry-run",
      "--timeout", "2562047h47m16.854775808s"], "--timeout"),
    (["rotate", "--registry", "http://h", "--path", PATH, "--keep", "1", "--dry-run", "--min-age=-1h"], "--min-age"),
]


@pytest.mark.parametrize("args,flag", BAD_DURATIONS, ids=[" ".join(a[-2:]) for a, _ in BAD_DURATIONS])
def test_durations_past_the_range_are_refused_in_one_line(args, flag):
    p = run(args, env={"PATH": "/usr/bin:/bin"})
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and p.stdout == "", p.stderr
    assert "panicked" not in p.stderr


def test_the_longest_go_duration_is_accepted(tmp_path):
    """2562047h47m16.854775807s is Go's maximum: accepted, and the run ends on its own
    failure (nothing listens on 127.0.0.66), without a panic."""
    longest = "2562047h47m16.854775807s"
    p = run(["check-upstream", "--host", "127.0.0.66:9", "--path", PATH, "--scheme", "http",
             "--timeout", longest, "--request-timeout", longest, "--json"], env={"PATH": "/usr/bin:/bin"})
    assert p.returncode == 1 and json.loads(p.stdout)["failure"]["kind"] == "connect", p.stdout + p.stderr
    p = run(["rotate", "--registry", "http://127.0.0.66:9", "--path", PATH, "--keep", "1", "--dry-run",
             "--min-age", longest, "--timeout", longest, "--json"], env={"PATH": "/usr/bin:/bin"})
    assert p.returncode == 1 and json.loads(p.stdout)["failure"]["stage"] == "connect", p.stdout + p.stderr


@pytest.mark.parametrize("settings,field", [
    ({"mode": "Proxy", "proxy": {"host": "h", "ttl": "99999999999999999999999h"}}, "spec.settings.proxy.ttl"),
    ({"mode": "Proxy", "proxy": {"host": "h", "ttl": "2562048h"}}, "spec.settings.proxy.ttl"),
    ({"mode": "Detached", "detached": {"rotation": {"minAge": "2562048h"}}}, "spec.settings.detached.rotation.minAge"),
])
def test_settings_durations_past_the_range_are_refused(tmp_path, settings, field):
    state = tmp_path / "state"
    p = run(["converge", "--module-config", str(module_config(tmp_path, settings)), "--state", str(state),
             "--module-dir", str(ROOT)])
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and "range" in lines[0] and p.stdout == "", p.stderr
    assert tree_digest(state) == "", "nothing written"
