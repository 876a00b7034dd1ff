"""Upstream registries for the upstream check: the real distribution server (Debian
docker-registry) with token, Basic (htpasswd) or no auth, plain HTTP or TLS; the test
token issuer for token auth; images pushed with skopeo."""
import pathlib
import subprocess
import sys
import urllib.error
import urllib.request

import bcrypt
import yaml

from registry_env import Processes, free_port, skopeo, wait_until
from tools.oci import build_layout

TOOLS = pathlib.Path(__file__).parent / "tools"
USERS = {"pusher": ["*"], "puller": ["pull"], "nobody": []}


def password(user):
    return f"{user}-Pa55word"


class Upstream(Processes):
    """auth: "token" | "basic" | "none"; tls: (crt, key) or None; realm_host: where the
    token issuer listens (default 127.0.0.1)."""

    def __init__(self, workdir: pathlib.Path, auth="token", tls=None, realm_host="127.0.0.1", ip="127.0.0.1"):
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.auth, self.tls = auth, tls
        self.port = free_port()
        self.host = f"{ip}:{self.port}"
        self.scheme = "https" if tls else "http"
        self.procs = []
        hashes = {u: bcrypt.hashpw(password(u).encode(), bcrypt.gensalt(4)).decode() for u in USERS}
        dist = {"version": 0.1, "storage": {"filesystem": {"rootdirectory": str(workdir / "data")},
                                            "delete": {"enabled": True}},
                "http": {"addr": self.host}, "log": {"level": "info"}}
        if tls:
            dist["http"]["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
        if auth == "token":
            auth_port = free_port()
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                            "-nodes", "-keyout", str(workdir / "token.key"), "-out", str(workdir / "token.crt"),
                            "-days", "2", "-subj", "/CN=upstream-token"], check=True, capture_output=True)
            # An https registry announces an https realm (its own certificate): the module
            # refuses to send a password to a weaker realm.
            server = {"addr": f"{realm_host}:{auth_port}"}
            if tls:
                server.update(certificate=str(tls[0]), key=str(tls[1]))
            issuer = {"server": server,
                      "token": {"issuer": "upstream", "expiration": 900, "certificate": str(workdir / "token.crt"),
                                "key": str(workdir / "token.key")},
                      "users": {u: {"password": h} for u, h in hashes.items()},
                      "acl": [{"match": {"account": u}, "actions": a} for u, a in USERS.items() if a]}
            (workdir / "auth.yaml").write_text(yaml.safe_dump(issuer))
            dist["auth"] = {"token": {"realm": f"{self.scheme}://{realm_host}:{auth_port}/auth", "service": "upstream",
                                      "issuer": "upstream", "rootcertbundle": str(workdir / "token.crt")}}
        elif auth == "basic":
            (workdir / "htpasswd").write_text("".join(f"{u}:{h}\n" for u, h in hashes.items()))
            dist["auth"] = {"htpasswd": {"realm": "upstream", "path": str(workdir / "htpasswd")}}
        (workdir / "config.yaml").write_text(yaml.safe_dump(dist))

    def start(self):
        if self.auth == "token":
            issuer = subprocess.Popen([sys.executable, str(TOOLS / "token_issuer.py"), str(self.dir / "auth.yaml")],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self.procs.append(issuer)
            assert issuer.stdout.readline().startswith("ready")
        log = open(self.dir / "registry.log", "w")
        self.procs.append(subprocess.Popen(["docker-registry", "serve", str(self.dir / "config.yaml")],
                                           stdout=log, stderr=subprocess.STDOUT))
        wait_until(self._answers, what=f"upstream registry on {self.host}")
        return self

    def _answers(self):
        import ssl
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        try:
            urllib.request.urlopen(f"{self.scheme}://{self.host}/v2/", timeout=2, context=ctx)
        except urllib.error.HTTPError as e:
            if e.code != 401:  # something else holds the port: say so in the timeout
                raise RuntimeError(f"HTTP {e.code} from {self.host}: {(self.dir / 'registry.log').read_text()[-300:]}")
            return True
        return True

    def push(self, repo, tag, content=b"hello\n"):
        """Pushes a one-layer image; returns its manifest digest."""
        layout = self.dir / f"layout-{repo.replace('/', '_')}-{tag}"
        build_layout(layout, tag, content)
        args = ["copy", "--dest-tls-verify=false", f"oci:{layout}:{tag}", f"docker://{self.host}/{repo}:{tag}"]
        if self.auth != "none":
            args[1:1] = ["--dest-creds", f"pusher:{password('pusher')}"]
        p = skopeo(*args)
        assert p.returncode == 0, p.stderr
        p = skopeo("inspect", "--tls-verify=false", *(["--creds", f"pusher:{password('pusher')}"] if self.auth != "none" else []),
                   "--format", "{{.Digest}}", f"docker://{self.host}/{repo}:{tag}")
        assert p.returncode == 0, p.stderr
        return p.stdout.strip()
