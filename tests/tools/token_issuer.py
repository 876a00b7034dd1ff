"""A docker_auth stand-in for tests: cesanta/docker_auth is not installable here.

It reads the generated docker_auth configuration (server address and TLS pair, token
issuer/expiration/certificate/key, users with bcrypt hashes, first-match ACL) and
issues ES256 tokens the way distribution expects them (x5c chain of the token
certificate, so distribution 2.8 verifies it against its rootcertbundle).

Run: python token_issuer.py CONFIG.yaml  (prints "ready <port>" when listening).
"""
import base64
import datetime
import http.server
import json
import ssl
import sys
import threading
import time
import urllib.parse
import uuid

import bcrypt
import jwt
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization


def load(path):
    with open(path) as f:
        return yaml.safe_load(f)


class Issuer:
    def __init__(self, cfg):
        self.cfg = cfg
        tok = cfg["token"]
        self.issuer = tok["issuer"]
        self.expiration = int(tok.get("expiration", 900))
        with open(tok["certificate"], "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        with open(tok["key"], "rb") as f:
            self.key = serialization.load_pem_private_key(f.read(), password=None)
        self.x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
        self.users = cfg.get("users") or {}
        self.acl = cfg.get("acl") or []

    def authenticate(self, user, password):
        entry = self.users.get(user)
        if not entry or password is None:
            return False
        return bcrypt.checkpw(password.encode(), entry["password"].encode())

    def allowed(self, account, typ, name, wanted):
        # First matching rule wins; no match = nothing allowed (docker_auth semantics).
        for rule in self.acl:
            m = rule.get("match", {})
            if "account" in m and m["account"] != account:
                continue
            if "type" in m and m["type"] != typ:
                continue
            if "name" in m and m["name"] != name:
                continue
            actions = rule.get("actions", [])
            if "*" in actions:
                return list(wanted)
            return [a for a in wanted if a in actions]
        return []

    def token(self, account, service, scopes):
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) < 3:
                continue
            typ, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
            granted = self.allowed(account, typ, name, actions)
            access.append({"type": typ, "name": name, "actions": granted})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": account, "aud": service, "exp": now + self.expiration,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"x5c": self.x5c})


def make_handler(issuer):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def creds_from_basic(self):
            h = self.headers.get("Authorization", "")
            if not h.startswith("Basic "):
                return None, None
            user, _, password = base64.b64decode(h[6:]).decode().partition(":")
            return user, password

        def issue(self, params, user, password):
            if user is None:
                # Anonymous: docker_auth would match ACL rules for "" - none match ours.
                return self.reply(401, {"details": "authentication required"})
            if not issuer.authenticate(user, password):
                return self.reply(401, {"details": "invalid credentials"})
            service = params.get("service", [""])[0]
            scopes = []
            for s in params.get("scope", []):
                scopes += s.split(" ")
            t = issuer.token(user, service, scopes)
            self.reply(200, {"token": t, "access_token": t, "expires_in": issuer.expiration,
                             "issued_at": datetime.datetime.now(datetime.timezone.utc).isoformat()})

        def do_GET(self):
            url = urllib.parse.urlparse(self.path)
            if url.path != "/auth":
                return self.reply(404, {})
            user, password = self.creds_from_basic()
            self.issue(urllib.parse.parse_qs(url.query), user, password)

        def do_POST(self):
            # containerd's OAuth2 password grant.
            url = urllib.parse.urlparse(self.path)
            length = int(self.headers.get("Content-Length", 0))
            form = urllib.parse.parse_qs(self.rfile.read(length).decode())
            if url.path != "/auth" or form.get("grant_type", [""])[0] != "password":
                return self.reply(400, {})
            self.issue(form, form.get("username", [None])[0], form.get("password", [None])[0])

    return Handler


def main():
    cfg = load(sys.argv[1])
    issuer = Issuer(cfg)
    host, port = cfg["server"]["addr"].rsplit(":", 1)
    server = http.server.ThreadingHTTPServer((host, int(port)), make_handler(issuer))
    if cfg["server"].get("certificate"):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cfg["server"]["certificate"], cfg["server"]["key"])
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    # Without a certificate it serves plain HTTP (a test upstream with scheme http).
    print(f"ready {server.server_address[1]}", flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()  # runs until the test closes stdin
    server.shutdown()


if __name__ == "__main__":
    main()
