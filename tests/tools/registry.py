"""A registry on loopback for the module to talk to (an upstream to proxy, a mirror to
rotate): the real distribution server (Debian docker-registry) with token auth (the
test token issuer, tools/token_issuer.py), Basic auth (htpasswd) or none, plain HTTP or
TLS; images pushed and pulled with skopeo."""
import pathlib
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

import bcrypt
import yaml

from tools.certs import CA
from tools.oci import build_layout
from tools.processes import Service, free_port, stop, wait_until

TOOLS = pathlib.Path(__file__).parent
# The default users and their docker_auth rules (first match wins): `nobody` may log in
# and do nothing.
USERS = {"pusher": [{"actions": ["*"]}], "puller": [{"actions": ["pull"]}], "nobody": []}
# `tls=OWN_CA`: the registry issues its own CA and serves a leaf of it; clients trust it
# through `ca_file` or `certs`.
OWN_CA = "own-ca"


def password(user):
    """The password of a test registry's user."""
    return f"{user}-Pa55word"


def skopeo(*args, timeout=60):
    """Runs skopeo (no signature policy); returns the CompletedProcess."""
    return subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True, timeout=timeout)


def start_token_issuer(config: pathlib.Path):
    """Starts the test token issuer with a docker_auth config; returns the process once
    it listens. Its stderr goes to issuer.log beside the config (a pipe nobody reads
    could fill and stall it)."""
    log = config.parent / "issuer.log"
    with open(log, "a") as err:
        issuer = subprocess.Popen([sys.executable, str(TOOLS / "token_issuer.py"), str(config)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
    if not issuer.stdout.readline().startswith("ready"):
        stop(issuer)
        raise AssertionError(f"token issuer ({config}) did not start: {log.read_text()[-500:]}")
    return issuer


def api_answers(url, log: pathlib.Path, context=None):
    """True when `url` (a registry's /v2/) answers as distribution does: 200, or 401 for
    a registry with auth; False while nothing listens. Another status means something
    else holds the port: raised, with the end of the registry's log."""
    try:
        urllib.request.urlopen(url, timeout=2, context=context)
    except urllib.error.HTTPError as e:
        if e.code != 401:
            raise RuntimeError(f"HTTP {e.code} from {url}: {log.read_text()[-300:]}")
        return True
    except OSError:
        return False
    return True


def token_certificate(workdir: pathlib.Path, name):
    """Writes the token signing pair token.crt/token.key (openssl, P-256)."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(workdir / "token.key"), "-out", str(workdir / "token.crt"), "-days", "2",
                    "-subj", f"/CN={name}"], check=True, capture_output=True)


class Registry(Service):
    """auth: "token" | "basic" | "none"; tls: None (plain HTTP), (crt, key), or OWN_CA;
    acl: users and their docker_auth rules (default USERS; `name` in a rule limits it to
    a repository); realm_host: where the token issuer listens; ip: where the registry
    listens. A context manager: started on entry, stopped on exit."""

    def __init__(self, workdir: pathlib.Path, auth="token", tls=None, acl=None, realm_host="127.0.0.1",
                 ip="127.0.0.1"):
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.auth = auth
        self.port = free_port()
        self.host = f"{ip}:{self.port}"
        self.data = workdir / "data"
        self.ca_file = self.certs = None
        if tls == OWN_CA:
            ca = CA("registry-ca")
            self.ca_file = workdir / "ca.crt"
            self.ca_file.write_text(ca.pem())
            self.certs = workdir / "certs"  # skopeo's --cert-dir
            self.certs.mkdir(exist_ok=True)
            shutil.copy(self.ca_file, self.certs / "ca.crt")
            tls = ca.leaf(workdir, "server", sans=(ip,))
        self.scheme = "https" if tls else "http"
        self.issuer = self.registry = None
        acl = USERS if acl is None else acl
        hashes = {u: bcrypt.hashpw(password(u).encode(), bcrypt.gensalt(4)).decode() for u in acl}
        dist = {"version": 0.1, "log": {"level": "info"},
                "storage": {"filesystem": {"rootdirectory": str(self.data)}, "delete": {"enabled": True}},
                "http": {"addr": self.host}}
        if tls:
            dist["http"]["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
        if auth == "token":
            auth_port = free_port()
            token_certificate(workdir, "registry-token")
            # An https registry announces an https realm (its own certificate): the module
            # refuses to send a password to a weaker realm.
            server = {"addr": f"{realm_host}:{auth_port}"}
            if tls:
                server.update(certificate=str(tls[0]), key=str(tls[1]))
            rules = [{"match": {"account": u, **({"name": r["name"]} if "name" in r else {})}, "actions": r["actions"]}
                     for u, rs in acl.items() for r in rs]
            (workdir / "auth.yaml").write_text(yaml.safe_dump({
                "server": server,
                "token": {"issuer": "upstream", "expiration": 900, "certificate": str(workdir / "token.crt"),
                          "key": str(workdir / "token.key")},
                "users": {u: {"password": h} for u, h in hashes.items()}, "acl": rules}))
            dist["auth"] = {"token": {"realm": f"{self.scheme}://{realm_host}:{auth_port}/auth", "service": "upstream",
                                      "issuer": "upstream", "rootcertbundle": str(workdir / "token.crt")}}
        elif auth == "basic":
            (workdir / "htpasswd").write_text("".join(f"{u}:{h}\n" for u, h in hashes.items()))
            dist["auth"] = {"htpasswd": {"realm": "upstream", "path": str(workdir / "htpasswd")}}
        self.config = workdir / "config.yaml"
        self.config.write_text(yaml.safe_dump(dist))

    def start(self):
        """Starts the token issuer (once) and the registry; returns when it answers."""
        if self.auth == "token" and self.issuer is None:
            self.issuer = start_token_issuer(self.dir / "auth.yaml")
        with open(self.dir / "registry.log", "a") as log:
            self.registry = subprocess.Popen(["docker-registry", "serve", str(self.config)], stdout=log,
                                             stderr=subprocess.STDOUT)
        try:
            wait_until(self.answers, what=f"registry on {self.host}")
        except BaseException:
            self.stop()
            raise
        return self

    def answers(self):
        """True when the registry answers its API root."""
        if self.ca_file:
            ctx = ssl.create_default_context(cafile=str(self.ca_file))
        else:
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        return api_answers(f"{self.scheme}://{self.host}/v2/", self.dir / "registry.log", ctx)

    def stop_registry(self):
        """Stops the registry only (for garbage collection); the issuer keeps running."""
        if self.registry:
            stop(self.registry, timeout=20)
            self.registry = None

    def stop(self):
        """Stops the registry and the token issuer."""
        self.stop_registry()
        if self.issuer:
            stop(self.issuer)
            self.issuer = None

    def garbage_collect(self):
        """Offline mark-and-sweep with the same config; never --delete-untagged."""
        assert self.registry is None, "garbage collection runs with the registry stopped"
        p = subprocess.run(["docker-registry", "garbage-collect", str(self.config)], capture_output=True, text=True,
                           timeout=300)
        assert p.returncode == 0, p.stdout + p.stderr
        return p.stdout

    def disk_usage(self):
        """Bytes stored under the registry's root directory."""
        return sum(f.stat().st_size for f in self.data.rglob("*") if f.is_file())

    # skopeo as a client of this registry

    def creds(self, user="pusher"):
        """user:password for skopeo."""
        return f"{user}:{password(user)}"

    def _client(self, side, user):
        """skopeo's TLS and credential options for a source ("src-"), a destination
        ("dest-") or the one image of `inspect` ("")."""
        tls = [f"--{side}cert-dir", str(self.certs)] if self.certs else [f"--{side}tls-verify=false"]
        return tls + ([f"--{side}creds", self.creds(user)] if self.auth != "none" else [])

    def push_layout(self, layout, tag, ref, by_digest=None, all_images=False):
        """Pushes oci:layout:tag to `ref` (a repository:tag, or a repository with
        `by_digest`), digests preserved."""
        dest = f"docker://{self.host}/{ref}" if by_digest is None else f"docker://{self.host}/{ref}@{by_digest}"
        args = ["copy", *self._client("dest-", "pusher"), "--preserve-digests"]
        if all_images:
            args.append("--all")
        p = skopeo(*args, f"oci:{layout}:{tag}", dest)
        assert p.returncode == 0, p.stderr

    def push(self, repo, tag, content=b"hello\n"):
        """Pushes a one-layer image; returns its manifest digest."""
        layout = self.dir / f"layout-{repo.replace('/', '_')}-{tag}"
        build_layout(layout, tag, content)
        self.push_layout(layout, tag, f"{repo}:{tag}")
        p = skopeo("inspect", *self._client("", "pusher"), "--format", "{{.Digest}}",
                   f"docker://{self.host}/{repo}:{tag}")
        assert p.returncode == 0, p.stderr
        return p.stdout.strip()

    def pull(self, ref, dest: pathlib.Path, user="puller"):
        """Pulls every blob of `ref` (repository:tag or repository@digest) into an OCI
        layout; returns the CompletedProcess."""
        return skopeo("copy", "--all", *self._client("src-", user), f"docker://{self.host}/{ref}", f"oci:{dest}:x")
