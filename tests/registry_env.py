"""Runs a master's registry from its rendered configuration: the real distribution
server (Debian docker-registry) with exactly the generated config, re-rooted into a
temporary directory and moved to free loopback ports, plus the test token issuer with
the generated docker_auth config. Clients: skopeo."""
import base64
import json
import os
import pathlib
import ssl
import subprocess

import yaml

from tools.binary import BIN
from tools.processes import Processes, Repeating, free_port, wait_until
from tools.registry import api_answers, start_token_issuer
from tools.registry import skopeo  # noqa: F401 - its clients import it from here too


def secret_data(state: pathlib.Path, name: str) -> dict:
    """The data of Secret `name` in the converged state, decoded."""
    obj = json.loads((state / "objects" / "d8-system" / "Secret" / f"{name}.json").read_text())
    return {k: base64.b64decode(v).decode() for k, v in obj["data"].items()}


def switch_state(state: pathlib.Path):
    """The registry-switch state (Secret registry-state) and its conditions by type."""
    st = json.loads(secret_data(state, "registry-state")["state.json"])
    return st, {c["type"]: c for c in st["conditions"]}


def rendered_secret(state: pathlib.Path, node: str):
    """The Secret the chart rendered for master `node` (its config, PKI and static pod);
    None when the chart rendered none."""
    path = state / "rendered" / "templates" / "registry-node-config.yaml"
    if not path.exists():
        return None
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc["metadata"]["labels"].get("embedded-registry.deckhouse.io/node") == node:
            return doc
    return None


def node_config(state: pathlib.Path, node: str) -> dict:
    """The files of master `node`'s rendered Secret, decoded, by file name."""
    doc = rendered_secret(state, node)
    if doc is None:
        raise KeyError(node)
    # Keys are <dir>.<file>: config.distribution.yaml, pki.ca.crt, manifest.<file>.
    return {k.split(".", 1)[1]: base64.b64decode(v).decode() for k, v in doc["data"].items()}


def host_files(host_root: pathlib.Path) -> dict:
    """The files the node hook wrote under a host root, by file name."""
    out = {}
    for d in ("etc/kubernetes/registry/config", "etc/kubernetes/registry/pki"):
        for p in sorted((host_root / d).iterdir()):
            out[p.name] = p.read_text()
    return out


# The ports a master's rendered configuration listens on at its node address
# (distribution, docker_auth); kept as rendered when NodeRegistry runs from a host root.
MASTER_PORTS = (5001, 5051)


def loopback_masters(count=3, tries=64):
    """`count` masters (m1, m2, ...) on loopback addresses of this test process's own:
    127.<a>.<b>.11, .12, ... with <a>.<b> from the process id, moved on while any of
    them has a rendered port taken. The masters listen on fixed ports (MASTER_PORTS),
    so two test runs on one machine (two worktrees, a benchmark) that used the same
    addresses would reach each other's registries, or fail to bind. Within a process
    the addresses are reused: its tests run one after the other and stop their masters."""
    import socket
    seed = os.getpid()
    for i in range(tries):
        n = (seed + i * 7919) % (254 * 256)
        prefix = f"127.{1 + n // 256}.{n % 256}"
        masters = [(f"m{k + 1}", f"{prefix}.{11 + k}") for k in range(count)]
        free = True
        for _, ip in masters:
            for port in MASTER_PORTS:
                with socket.socket() as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as distribution binds
                    try:
                        s.bind((ip, port))
                    except OSError:
                        free = False
        if free:
            return masters
    raise AssertionError(f"no free loopback addresses for {count} masters after {tries} tries")


class InitContainerFailed(AssertionError):
    """An init container of the static pod exited non-zero: kubelet starts no container."""


class NodeRegistry(Processes):
    """One master's registry, started from the rendered files (moved to free ports), or
    with `host_root`, from the files the node hook wrote there (paths re-rooted, the
    rendered addresses kept: masters on 127.0.0.x)."""

    def __init__(self, state: pathlib.Path, node: str, workdir: pathlib.Path, host_root: pathlib.Path | None = None):
        self.files = node_config(state, node) if host_root is None else host_files(host_root)
        self.host_root = host_root
        self.dir = workdir
        self.pki = workdir / "pki"
        self.pki.mkdir(parents=True, exist_ok=True)
        for name, content in self.files.items():
            if name.endswith((".crt", ".key")):
                (self.pki / name).write_text(content)
        dist = yaml.safe_load(self.files["distribution.yaml"])
        auth = yaml.safe_load(self.files["auth.yaml"])
        self.generated = {"distribution": json.loads(json.dumps(dist)), "auth": json.loads(json.dumps(auth))}
        self.debug_port = free_port()
        # On S3 the storage is the bucket as rendered (`data` is None); on Fs it is re-rooted.
        fs = dist["storage"].get("filesystem")
        if host_root is None:
            self.port, self.auth_port = free_port(), free_port()
            self.host = f"127.0.0.1:{self.port}"
            auth_addr = f"127.0.0.1:{self.auth_port}"
            data = workdir / "data"
        else:
            self.host, auth_addr = dist["http"]["addr"], auth["server"]["addr"]
            data = host_root / "opt/deckhouse/registry/data"
        if fs is not None:
            fs["rootdirectory"] = str(data)
        self.data = data if fs is not None else None
        if host_root is None and fs is not None:
            # No node hook ran: its data directory is prepared as the hook does it.
            for d in ("docker/registry/v2/repositories", "docker/registry/v2/blobs"):
                (self.data / d).mkdir(parents=True, exist_ok=True)
        dist["http"]["addr"] = self.host
        # Every master's rendered debug address is 127.0.0.1:5002; here they share a host.
        dist["http"]["debug"]["addr"] = f"127.0.0.1:{self.debug_port}"
        dist["http"]["tls"] = {"certificate": str(self.pki / "distribution.crt"), "key": str(self.pki / "distribution.key")}
        dist["auth"]["token"]["realm"] = f"https://{auth_addr}/auth"
        dist["auth"]["token"]["rootcertbundle"] = str(self.pki / "token-bundle.crt")
        auth["server"] = {"addr": auth_addr, "certificate": str(self.pki / "auth.crt"),
                          "key": str(self.pki / "auth.key")}
        auth["token"]["certificate"] = str(self.pki / "token.crt")
        auth["token"]["key"] = str(self.pki / "token.key")
        (workdir / "distribution.yaml").write_text(yaml.safe_dump(dist))
        (workdir / "auth.yaml").write_text(yaml.safe_dump(auth))
        self.certs = workdir / "certs"  # skopeo's per-host CA directory
        self.certs.mkdir(exist_ok=True)
        (self.certs / "ca.crt").write_text(self.files["ca.crt"])
        self.procs = []

    def start(self):
        self.run_init_containers()
        self.procs.append(start_token_issuer(self.dir / "auth.yaml"))
        log = open(self.dir / "registry.log", "w")
        self.procs.append(subprocess.Popen(["docker-registry", "serve", str(self.dir / "distribution.yaml")],
                                           stdout=log, stderr=subprocess.STDOUT, env=self.pod_env()))
        ctx = ssl.create_default_context(cafile=str(self.certs / "ca.crt"))
        registry = self.procs[-1]

        def answers():
            # One that exited (its address taken, say) fails the wait with its own words,
            # not as a registry that never answered.
            if registry.poll() is not None:
                raise RuntimeError(f"docker-registry exited {registry.returncode}: {self.log().strip()[-300:]}")
            return api_answers(f"https://{self.host}/v2/", self.dir / "registry.log", ctx)
        wait_until(answers, what=f"registry on {self.host} ({self.dir / 'registry.log'})")
        self.start_warm()
        return self

    def warm_container(self):
        """The static pod's `warm` container, if it has one."""
        return next((c for c in self.pod()["spec"]["containers"] if c["name"] == "warm"), None)

    @property
    def progress_file(self):
        """Where the warm container's progress lands on the host (its /warm mount)."""
        root = self.host_root if self.host_root is not None else self.dir
        return root / "opt/deckhouse/registry/warm/progress.json"

    def start_warm(self):
        """Starts the pod's `warm` container as kubelet would, with the module's binary
        for the manager image's: its arguments with the mounts re-rooted (/config: the
        re-rooted distribution config and the list the node hook wrote; /pki; /warm on
        the host). Its log is warm.log."""
        c = self.warm_container()
        if c is None:
            return
        assert c["command"] == ["/usr/bin/embedded-registry", "warm"], c["command"]
        if self.host_root is not None:
            wanted = self.host_root / "etc/kubernetes/registry/config/warm-images.json"
        else:
            wanted = self.dir / "warm-images.json"
            wanted.write_text(self.files["warm-images.json"])
        self.progress_file.parent.mkdir(parents=True, exist_ok=True)
        mounts = {"--config=/config/distribution.yaml": f"--config={self.dir / 'distribution.yaml'}",
                  "--list=/config/warm-images.json": f"--list={wanted}",
                  "--pki=/pki": f"--pki={self.pki}",
                  "--progress=/warm/progress.json": f"--progress={self.progress_file}"}
        assert set(mounts) <= set(c["args"]), f"the warm container's paths changed: {c['args']}"
        args = [mounts.get(a, a) for a in c["args"]]
        log = open(self.dir / "warm.log", "a")
        self.procs.append(subprocess.Popen([str(BIN), "warm", *args], stdout=log, stderr=subprocess.STDOUT))

    def warm_progress(self):
        """The warm container's last progress (None before its first pass)."""
        try:
            return json.loads(self.progress_file.read_text())
        except FileNotFoundError:
            return None

    def warm_log(self):
        return (self.dir / "warm.log").read_text() if (self.dir / "warm.log").exists() else ""

    def pod(self):
        """The static pod as kubelet reads it: the manifest the node hook wrote, or the
        rendered one."""
        if self.host_root is not None:
            text = (self.host_root / "etc/kubernetes/manifests/embedded-registry.yaml").read_text()
        else:
            text = self.files["embedded-registry.yaml"]
        return yaml.safe_load(text)

    def run_init_containers(self):
        """As kubelet does before it starts a pod's containers: each init container in
        order, to completion; one that fails stops the start (kubelet would retry it and
        never start the registry). Only the distribution image is known here: its
        arguments run with the config path re-rooted."""
        spec = self.pod()["spec"]
        image = spec["containers"][0]["image"]
        self.init_runs = []
        for c in spec.get("initContainers", []):
            assert c["image"] == image, f"init container {c['name']}: no stand-in for image {c['image']}"
            args = [a.replace("/config/distribution.yaml", str(self.dir / "distribution.yaml")) for a in c["args"]]
            p = subprocess.run(["docker-registry", *args], capture_output=True, text=True, timeout=300,
                               env=self.pod_env())
            self.init_runs.append((c["name"], p.returncode))
            if p.returncode != 0:
                raise InitContainerFailed(f"init container {c['name']} exited {p.returncode}: "
                                          f"{(p.stdout + p.stderr).strip()[-500:]}")

    def pod_env(self):
        """The distribution container's environment from the static pod, as kubelet
        would set it (its /pki paths re-rooted), over the runner's without
        AWS_CA_BUNDLE (the pod never has it; with it distribution's S3 driver panics)."""
        env = self.pod()["spec"]["containers"][0].get("env") or []
        base = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        return dict(base, **{e["name"]: e["value"].replace("/pki/", f"{self.pki}/") for e in env})

    def log(self):
        return (self.dir / "registry.log").read_text()

    def served(self, last=8):
        """The last `last` requests this registry answered (method, path, status), for
        a failure message: what each master served a client that failed."""
        out = []
        for line in self.log().splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("msg") == "response completed":
                out.append(f"{e.get('http.request.method')} {e.get('http.request.uri')} "
                           f"{e.get('http.response.status')}")
        return f"{self.host}: " + ("; ".join(out[-last:]) or "no request")


# Rolling restarts: the node hook as shell-operator runs it on each master against the
# converge's store, and kubelet's part (restart a static pod whose manifest changed).

STATUS_LABELS = ("embedded-registry.deckhouse.io/role", "embedded-registry.deckhouse.io/node")
MANIFEST = "etc/kubernetes/manifests/embedded-registry.yaml"


def status_config_maps(state: pathlib.Path) -> dict:
    """The masters' status ConfigMaps in the store (as the node hooks wrote them), by node."""
    out = {}
    for p in sorted((state / "objects/d8-system/ConfigMap").glob("registry-node-*-status.json")):
        obj = json.loads(p.read_text())
        labels = obj["metadata"].get("labels", {})
        if labels.get(STATUS_LABELS[0]) == "node-status":
            out[labels[STATUS_LABELS[1]]] = obj
    return out


def run_node_hook(workdir: pathlib.Path, state: pathlib.Path, node: str, host_root: pathlib.Path):
    """Runs `node-files` on master `node` as shell-operator runs its `resync` schedule,
    with the snapshots its bindings select in the store: its rendered config Secret, its
    own status ConfigMap, and the other masters' status ConfigMaps reduced as the
    binding's jqFilter reduces them. The status it writes lands in the store (the API
    server accepts it). Returns (files written, status data, log lines)."""
    from tools.hookrun import HookRun
    secret = rendered_secret(state, node)
    statuses = status_config_maps(state)
    peers = [{"filterResult": {"name": o["metadata"]["name"],
                               "appliedConfigHash": o.get("data", {}).get("appliedConfigHash", ""),
                               "registry": o.get("data", {}).get("registry", "")}}
             for n, o in statuses.items() if n != node]
    ctx = [{"binding": "resync", "type": "Schedule", "snapshots": {
        "node_config": [{"object": secret}] if secret else [],
        "node_status": [{"object": statuses[node]}] if node in statuses else [],
        "masters_status": peers}}]
    run_dir = workdir / f"hook-{node}"
    if run_dir.exists():
        for f in run_dir.iterdir():
            if f.is_file():
                f.unlink()
    r = HookRun.node(run_dir, ctx, node=node, host_root=host_root, precreate=True)
    p = r.by_name("node-files")
    assert p.returncode == 0, p.stderr
    logs = [json.loads(line) for line in p.stderr.splitlines() if line.startswith("{")]
    for op in r.k8s():
        obj = op["object"]
        path = state / "objects/d8-system/ConfigMap" / f"{obj['metadata']['name']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj))
    status = status_config_maps(state).get(node, {}).get("data", {})
    return [entry["file"] for entry in logs if entry["msg"] == "wrote"], status, logs


class Kubelet:
    """kubelet's part on each master: runs the static pod the node hook wrote under the
    master's host root (a NodeRegistry from those files), and restarts it when its
    manifest changes. `sync()` acts as the masters' kubelets acting at the same moment:
    every changed pod is stopped first, then they are started again."""

    def __init__(self, state: pathlib.Path, roots: dict, workdir: pathlib.Path):
        self.state, self.roots, self.workdir = state, roots, workdir
        self.running = {}  # node -> (NodeRegistry, manifest text)
        self.restarts = []  # the nodes restarted, one list per sync

    def manifest(self, node):
        path = self.roots[node] / MANIFEST
        return path.read_text() if path.exists() else None

    def sync(self):
        changed = [n for n in self.roots if self.manifest(n) != (self.running.get(n) or (None, None))[1]]
        for n in changed:
            if n in self.running:
                self.running.pop(n)[0].stop()
        for n in changed:
            text = self.manifest(n)
            if text is not None:
                count = len(list(self.workdir.glob(f"run-{n}-*")))
                reg = NodeRegistry(self.state, n, self.workdir / f"run-{n}-{count}", host_root=self.roots[n])
                self.running[n] = (reg.start(), text)
        self.restarts.append(changed)
        return changed

    def stop(self):
        for reg, _ in self.running.values():
            reg.stop()
        self.running = {}


class ServingMonitor(Repeating):
    """Polls `GET /v2/` of every master (any TLS, any answer a registry gives: 200 or 401)
    in a thread until stopped, and keeps the fewest masters seen serving at once."""

    def __init__(self, addresses, interval=0.02):
        super().__init__(interval=interval)
        self.addresses = list(addresses)
        self.minimum, self.polls, self.down_polls = len(self.addresses), 0, []

    @staticmethod
    def serves(address):
        import urllib.error
        import urllib.request
        ctx = ssl._create_unverified_context()  # liveness only: the CA rotates under it
        try:
            urllib.request.urlopen(f"https://{address}/v2/", context=ctx, timeout=2).close()
            return True
        except urllib.error.HTTPError as e:
            return e.code == 401
        except OSError:
            return False

    def once(self):
        """One poll of every master."""
        up = [a for a in self.addresses if self.serves(a)]
        self.polls += 1
        self.minimum = min(self.minimum, len(up))
        if not up:
            self.down_polls.append(self.polls)
