"""No secret leaks: every hook (batch and classic protocol), the node hook and every CLI
command runs with known passwords and keys, and none appears in stdout, stderr, the
metrics or the converge summary.

The secrets: the upstream password of the ModuleConfig, the registry users' passwords
(seeded, so they are known before any hook runs), and every private key, password and
shared secret the hooks keep in their Secrets (read back from the converged state).

A new CLI command is one entry in COMMANDS: a function that runs it against the
converged environment and returns the processes (and files) whose text must be clean.

Above 400 lines: one file, because every hook and command runs with the same known
secrets and the same search for them."""
import base64
import json
import subprocess
import sys

import pytest

from conftest import ROOT, module_config, nodes_file, run
from tools.hookrun import HookRun

UPSTREAM_PASSWORD = "Upstr3am-Pa55-d0-not-leak"
RO_PASSWORD = "KnownRoPassw0rdAbcdEfgh12"
RW_PASSWORD = "KnownRwPassw0rdIjklMnop34"
NOW = 1_790_000_000
NODE_HOOKS = ["node-files", "rotate"]  # classic-only hooks of the manager DaemonSet
MASTERS = [("m1", "127.0.0.11"), ("m2", "127.0.0.12"), ("m3", "127.0.0.13")]  # loopback: the node hook probes them


def b64(text):
    return base64.b64encode(text.encode()).decode()


def user_secret(role, password):
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": f"registry-user-{role}", "namespace": "d8-system",
                         "labels": {"heritage": "deckhouse", "module": "embedded-registry",
                                    "embedded-registry.deckhouse.io/role": "user"}},
            "data": {"name": b64(role), "password": b64(password), "passwordHash": b64("recomputed-on-first-run")}}


class Env:
    """A converged Proxy cluster with known secrets, and how to run things against it."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.state = tmp_path / "state"
        settings = {"mode": "Proxy", "proxy": {"host": "registry.example.com", "path": "/deckhouse/ee",
                                               "user": "puller", "password": UPSTREAM_PASSWORD}}
        self.mc = module_config(tmp_path, settings)
        self.settings = settings
        self.nodes = nodes_file(tmp_path, MASTERS, workers=1)
        for role, pw in (("ro", RO_PASSWORD), ("rw", RW_PASSWORD)):
            path = self.state / "objects" / "d8-system" / "Secret" / f"registry-user-{role}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(user_secret(role, pw)))
        p = self.converge("--json")
        assert p.returncode == 0, p.stderr
        self.secrets = self.collect_secrets()
        assert {UPSTREAM_PASSWORD, RO_PASSWORD, RW_PASSWORD} <= set(self.secrets), "seeded passwords were kept"

    def converge(self, *extra):
        return run(["converge", "--module-config", str(self.mc), "--state", str(self.state), "--nodes", str(self.nodes),
                    "--module-dir", str(ROOT), "--python", sys.executable, *extra],
                   env={"PATH": "/usr/bin:/bin", "EMBEDDED_REGISTRY_NOW": str(NOW)})

    def objects(self):
        root = self.state / "objects"
        return [json.loads(p.read_text()) for p in sorted(root.rglob("*.json"))]

    def collect_secrets(self):
        """Every secret value in the module's Secrets: passwords and shared secrets whole,
        PEM private keys by their base64 body lines."""
        out = {UPSTREAM_PASSWORD}
        for obj in self.objects():
            if obj["kind"] != "Secret" or obj["metadata"].get("namespace") != "d8-system":
                continue
            for key, value in (obj.get("data") or {}).items():
                text = base64.b64decode(value).decode()
                if "PRIVATE KEY" in text:
                    out |= {line for line in text.splitlines() if len(line) >= 40 and "-----" not in line}
                elif any(w in key.lower() for w in ("password", "secret")) and "hash" not in key.lower():
                    out.add(text)
                elif key == ".dockerconfigjson":
                    for entry in json.loads(text)["auths"].values():
                        out |= {entry.get("password", ""), entry.get("auth", "")}
        return sorted(s for s in out if len(s) >= 12)

    # --- hooks as the runners run them ---------------------------------------------------

    def hook_configs(self):
        return json.loads(run(["hook", "config"], env={}).stdout)["hooks"]

    def snapshots(self, hook):
        """Each kubernetes binding's snapshot from the converged state: selected as the
        binding says, filtered by its jqFilter with the real jq."""
        snaps = {}
        for b in hook.get("kubernetes", []):
            items = []
            for obj in self.objects():
                meta = obj["metadata"]
                if obj["kind"] != b["kind"]:
                    continue
                names = (b.get("nameSelector") or {}).get("matchNames")
                if names and meta["name"] not in names:
                    continue
                nss = ((b.get("namespace") or {}).get("nameSelector") or {}).get("matchNames")
                if nss and meta.get("namespace") not in nss:
                    continue
                sel = b.get("labelSelector") or {}
                labels = meta.get("labels") or {}
                if any(labels.get(k) != v for k, v in (sel.get("matchLabels") or {}).items()):
                    continue
                if any(e["operator"] == "Exists" and e["key"] not in labels for e in sel.get("matchExpressions") or []):
                    continue
                item = {}
                if b.get("keepFullObjectsInMemory", True):
                    item["object"] = obj
                if b.get("jqFilter"):
                    jq = subprocess.run(["jq", "-c", b["jqFilter"]], input=json.dumps(obj), capture_output=True,
                                        text=True, check=True)
                    item["filterResult"] = json.loads(jq.stdout)
                items.append(item)
            snaps[b["name"]] = items
        return snaps

    def hook_run(self, name, hook, fresh=False):
        """One run's files and environment; `fresh`: an empty cluster (everything issued)."""
        snaps = {k: [] for k in self.snapshots(hook)} if fresh else self.snapshots(hook)
        binding = "beforeHelm" if "beforeHelm" in hook else None
        ctx = [{"binding": binding, "snapshots": snaps}] if binding else \
            [{"binding": "main", "type": "Group", "groupName": "main", "snapshots": snaps}]
        values = json.loads((self.state / "values.json").read_text())
        return HookRun.module(self.tmp / f"run-{name}-{'fresh' if fresh else 'steady'}", ctx, values,
                              {"embeddedRegistry": self.settings},
                              env={"EMBEDDED_REGISTRY_NOW": str(NOW), "PATH": "/usr/bin:/bin"})

    def generated(self, r):
        """Secrets a run just issued (in its object operations): they must not leak either."""
        out = set()
        for op in r.k8s():
            obj = op.get("object") or {}
            for key, value in (obj.get("data") or {}).items():
                text = base64.b64decode(value).decode()
                if "PRIVATE KEY" in text:
                    out |= {x for x in text.splitlines() if len(x) >= 40 and "-----" not in x}
                elif "password" in key.lower() and "hash" not in key.lower():
                    out.add(text)
        return out


# --- the commands ------------------------------------------------------------------------

def texts(p, *files):
    return [("stdout", p.stdout), ("stderr", p.stderr)] + \
        [(f.name, f.read_text()) for f in files if f.exists()]


def hook_list(env):
    p = run(["hook", "list"], env={})
    assert p.returncode == 0
    return texts(p)


def hook_config(env):
    p = run(["hook", "config"], env={})
    assert p.returncode == 0
    return texts(p)


def hook_runs(env, classic=False):
    out = []
    for hook in env.hook_configs():
        name = hook["metadata"]["name"]
        for fresh in (False, True):
            r = env.hook_run(f"{'classic' if classic else 'batch'}-{name}", hook, fresh)
            p = r.classic(name) if classic else r.hook(name)
            assert p.returncode == 0, f"{name}: {p.stderr}"
            env.secrets = sorted(set(env.secrets) | env.generated(r))
            out += [(f"{name} {'fresh' if fresh else 'steady'} {w}", t)
                    for w, t in texts(p, r.dir / "metrics.json", r.dir / "config-values-patch.json")]
            # Values may carry leaf keys (the chart renders them), never passwords or the CA key.
            patch = r.output("VALUES_JSON_PATCH_PATH") or ""
            for pw in (RO_PASSWORD, RW_PASSWORD):
                assert pw not in patch, f"{name}: a user password in the values patch"
    return out


def classic_hook_runs(env):
    return hook_runs(env, classic=True)


def classic_configs(env):
    out = []
    for hook in env.hook_configs() + [{"metadata": {"name": n}} for n in NODE_HOOKS]:
        p = run(["classic", hook["metadata"]["name"], "--config"], env={})
        assert p.returncode == 0, p.stderr
        out += texts(p)
    return out


def node_hook(env):
    """The node hook applies master m1's files, its PKI keys among them (that is its
    job: they land on the host), and must not print them in its logs, metrics or status.
    The Secret is built from m1's PKI Secret, as the chart renders it."""
    pki = next(o for o in env.objects() if o["metadata"]["name"] == "registry-node-m1-pki")
    data = {f"pki.{k}": v for k, v in pki["data"].items()}
    data["pki.ca.crt"] = next(o for o in env.objects() if o["metadata"]["name"] == "registry-pki")["data"]["ca.crt"]
    data["config.distribution.yaml"] = b64("version: 0.1\nhttp:\n  addr: 127.0.0.11:5001\n")
    data["manifest.embedded-registry.yaml"] = b64("apiVersion: v1\nkind: Pod\n")
    secret = {"apiVersion": "v1", "kind": "Secret", "data": data,
              "metadata": {"name": "registry-node-m1-config", "namespace": "d8-system", "annotations": {}}}
    assert any("PRIVATE KEY" in base64.b64decode(v).decode() for v in data.values())
    d = env.tmp / "node"
    (d / "host").mkdir(parents=True)
    r = HookRun.node(d, [{"binding": "node_config", "type": "Synchronization", "objects": [{"object": secret}]}],
                     host_root=d / "host", env={"EMBEDDED_REGISTRY_FILE_OWNER": "none"})
    out = []
    for _ in range(2):  # writes, then finds everything in place
        p = r.classic("node-files")
        assert p.returncode == 0, p.stderr
        out += texts(p, d / "k8s.json", d / "metrics.json")
    assert any(f.is_file() and "PRIVATE KEY" in f.read_text() for f in (d / "host").rglob("*")), "keys were applied"
    return out


def rotate_node_hook(env):
    """The node hook rotate, with the rw user's Secret, this master's registry address
    (nothing listens there) and rotation enabled: the failure it reports names no
    password."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: connections are refused
    objs = {o["metadata"]["name"]: o for o in env.objects()}
    node_secret = {"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "registry-node-m1-config", "namespace": "d8-system"},
                   "data": {"config.distribution.yaml": b64(f"version: 0.1\nhttp:\n  addr: 127.0.0.1:{port}\n"),
                            "pki.ca.crt": objs["registry-pki"]["data"]["ca.crt"]}}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": "registry-rotation", "namespace": "d8-system"},
                  "data": {"enabled": "true", "keepReleases": "1", "minAge": "0", "path": "/deckhouse/ee"}}
    d = env.tmp / "rotate-node"
    snaps = {"rotation_config": [{"object": config_map}], "node_config": [{"object": node_secret}],
             "user_rw": [{"object": objs["registry-user-rw"]}]}
    r = HookRun.node(d, [{"binding": "daily", "type": "Schedule", "snapshots": snaps}], host_root=d,
                     env={"EMBEDDED_REGISTRY_NOW": str(NOW)})
    p = r.classic("rotate")
    # A failed rotation is a successful hook run that reports the failure through its
    # metric (an error exit would drop the metric and block the node hooks' queue).
    assert p.returncode == 0, p.stderr
    metrics = r.output("METRICS_PATH") or ""
    assert any(m["name"] == "d8_embedded_registry_rotation_failed" and m["value"] == 1
               for m in map(json.loads, metrics.splitlines()) if m.get("action") == "set"), (p.stderr, metrics)
    assert p.stderr, "the failure is reported"
    return texts(p, d / "k8s.json", d / "metrics.json")


def converge_json(env):
    p = env.converge("--json")
    assert p.returncode == 0, p.stderr
    return texts(p, env.state / "metrics.json")


def converge_human(env):
    p = env.converge()
    assert p.returncode == 0, p.stderr
    return texts(p, env.state / "metrics.json")


def converge_refused(env):
    """Settings refused for the password's type: the error names the field, not the value."""
    bad = dict(env.settings, proxy=dict(env.settings["proxy"], password=[UPSTREAM_PASSWORD]))
    mc = module_config(env.tmp, bad, name="bad.yaml")
    p = run(["converge", "--module-config", str(mc), "--state", str(env.tmp / "refused"), "--module-dir", str(ROOT),
             "--python", sys.executable])
    assert p.returncode == 2 and "spec.settings.proxy.password" in p.stderr, p.stderr
    return texts(p)


def converge_refused_mistyped_proxy(env):
    """A proxy written as a list or a string holding the password: the error says what
    the value is, never the value."""
    out = []
    for i, proxy in enumerate((["puller", UPSTREAM_PASSWORD], f"puller:{UPSTREAM_PASSWORD}@registry.example.com")):
        mc = module_config(env.tmp, dict(env.settings, proxy=proxy), name=f"mistyped-{i}.yaml")
        p = run(["converge", "--module-config", str(mc), "--state", str(env.tmp / "refused"), "--module-dir",
                 str(ROOT), "--python", sys.executable])
        assert p.returncode == 2 and "spec.settings.proxy:" in p.stderr, p.stderr
        out += texts(p)
    return out


def check_upstream_hostile(env):
    """A registry whose token realm answers without end, and one that rate-limits with
    Retry-After: 0: the failures name the URL and the limit, never the password."""
    from test_hostile_network import SECRETS, Hostile, api_root, check_upstream as hostile_check, endless_token

    def rate_limited(s, method, path):
        return (429, {"Retry-After": "0"}, b"{}") if path != "/v2/" else api_root()

    env.secrets = sorted(set(env.secrets) | set(SECRETS))
    work = env.tmp / "hostile"
    work.mkdir(exist_ok=True)
    out = []
    for route, kind in ((endless_token, "oversize"), (rate_limited, "rate-limited")):
        with Hostile(route) as server:
            failure = hostile_check(work, server, "--timeout", "4s")
            assert failure["kind"] == kind, failure
            out.append((f"check-upstream failure ({kind})", json.dumps(failure)))
    return out


def check_upstream(env):
    """Against the real distribution server with Basic auth on loopback: right and wrong
    password, JSON and human output, password from a file and from the environment."""
    from tools.registry import Registry, password
    out = []
    with Registry(env.tmp / "up", auth="basic") as up:
        up.push("deckhouse/ee", "v1.65.3")
        env.secrets = sorted(set(env.secrets) | {password("puller")})
        pwfile = env.tmp / "pw"
        for pw, rc in ((password("puller"), 0), (UPSTREAM_PASSWORD, 1)):
            pwfile.write_text(pw + "\n")
            base = ["check-upstream", "--host", up.host, "--scheme", "http", "--path", "/deckhouse/ee",
                    "--user", "puller", "--image", ":v1.65.3", "--timeout", "20s"]
            for extra, run_env in (([ "--password-file", str(pwfile), "--json"], {"PATH": "/usr/bin:/bin"}),
                                   ([], {"PATH": "/usr/bin:/bin", "EMBEDDED_REGISTRY_UPSTREAM_PASSWORD": pw})):
                p = run(base + extra, env=run_env)
                assert p.returncode == rc, p.stdout + p.stderr
                out += texts(p)
    return out


def rotate(env):
    """Against the real distribution server with Basic auth on loopback, as the user with
    the delete right: the plan (JSON and human), password from a file and from the
    environment."""
    if "rotate" not in run(["--help"], env={}).stdout:
        pytest.skip("this binary has no rotate command")
    from tools.registry import Registry, password
    out = []
    with Registry(env.tmp / "mirror", auth="basic") as up:
        for tag in ("v1.64.0", "v1.65.3"):
            up.push("deckhouse/ee", tag)
        env.secrets = sorted(set(env.secrets) | {password("pusher")})
        pwfile = env.tmp / "pusher.pw"
        pwfile.write_text(password("pusher") + "\n")
        base = ["rotate", "--registry", f"http://{up.host}", "--path", "/deckhouse/ee", "--keep", "1",
                "--user", "pusher", "--min-age", "0", "--dry-run", "--timeout", "30s"]
        for extra, run_env in ((["--password-file", str(pwfile), "--json"], {"PATH": "/usr/bin:/bin"}),
                               ([], {"PATH": "/usr/bin:/bin", "EMBEDDED_REGISTRY_ROTATE_PASSWORD": password("pusher")})):
            p = run(base + extra, env=run_env)
            assert p.returncode in (0, 1), p.stdout + p.stderr
            assert p.stdout or p.stderr
            out += texts(p)
    return out


def check_storage(env):
    """Against a real Garage on loopback: the right keys, a wrong secret, a read-only key
    (denied at the probe write), human and JSON output, with the module's secrets and the
    S3 keys all checked absent."""
    from tools.garage import REGION, Garage, garage_bin
    if garage_bin() is None:
        pytest.skip("garage is not installed: run scripts/setup")
    out = []
    with Garage(env.tmp / "garage", nodes=1) as g:
        g.create_bucket("registry")
        rw, ro = g.create_key("rw"), g.create_key("ro")
        g.allow("registry", rw[0])
        g.allow("registry", ro[0], write=False)
        env.secrets = sorted(set(env.secrets) | {rw[1], ro[1]})
        kf, sf = env.tmp / "s3-access", env.tmp / "s3-secret"
        for (key, secret), rc in ((rw, 0), ((rw[0], ro[1]), 1), (ro, 1)):
            kf.write_text(key + "\n")
            sf.write_text(secret + "\n")
            base = ["check-storage", "--endpoint", g.endpoint(), "--bucket", "registry", "--region", REGION,
                    "--access-key-file", str(kf), "--secret-key-file", str(sf)]
            for extra in (["--json"], []):
                p = run(base + extra, env={"PATH": "/usr/bin:/bin"})
                assert p.returncode == rc, p.stdout + p.stderr
                out += texts(p)
    return out


def warm(env):
    """The warm process of master m1 with its rendered files (token key, CA, config),
    against a registry address nothing listens on (every fetch fails after its retries),
    with a bad key, and with a bad argument: its log, the progress file and the errors."""
    import yaml
    from registry_env import secret_data
    from tools.processes import free_port
    # The module's PKI (its upstream check failed, so no registry is rendered here).
    files = secret_data(env.state, "registry-pki")
    d = env.tmp / "warm"
    (d / "pki").mkdir(parents=True, exist_ok=True)
    for name in ("ca.crt", "token.crt", "token.key"):
        (d / "pki" / name).write_text(files[name])
    dist = {"http": {"addr": f"127.0.0.1:{free_port()}"},
            "auth": {"token": {"issuer": "embedded-registry-auth", "service": "embedded-registry"}},
            "storage": {"filesystem": {"rootdirectory": str(d / "data")}}, "proxy": {"remoteurl": "https://u"}}
    (d / "distribution.yaml").write_text(yaml.safe_dump(dist))
    (d / "list.json").write_text(json.dumps({"base": "r.example/deckhouse/ee", "deckhouseVersion": "v1.2.3",
                                             "digests": {"m": {"a": "sha256:" + "a" * 64}}}))
    base = ["warm", "--config", str(d / "distribution.yaml"), "--list", str(d / "list.json"), "--pki", str(d / "pki"),
            "--progress", str(d / "progress.json"), "--once"]
    out = []
    p = run(base, env={"PATH": "/usr/bin:/bin"}, timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    assert '"cached":0' in p.stderr and '"wanted":2' in p.stderr, p.stderr
    out += texts(p, d / "progress.json")
    (d / "pki" / "bad").mkdir(exist_ok=True)
    (d / "pki" / "bad" / "ca.crt").write_text(files["ca.crt"])
    (d / "pki" / "bad" / "token.crt").write_text(files["token.crt"])
    (d / "pki" / "bad" / "token.key").write_text(files["token.key"].replace("\n", "\nX", 3))
    bad = [str(d / "pki" / "bad") if a == str(d / "pki") else a for a in base]
    p = run(bad, env={"PATH": "/usr/bin:/bin"})
    assert p.returncode == 2 and "token.key" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    out += texts(p)
    p = run(base + ["--interval", "0"], env={"PATH": "/usr/bin:/bin"})
    assert p.returncode == 2 and "--interval" in p.stderr, p.stderr
    out += texts(p)
    return out


COMMANDS = {
    "hook list": hook_list,
    "hook config": hook_config,
    "hook run N, every module hook": hook_runs,
    "classic NAME, every module hook": classic_hook_runs,
    "classic NAME --config, every hook": classic_configs,
    "classic node-files": node_hook,
    "classic rotate (node hook)": rotate_node_hook,
    "converge --json": converge_json,
    "converge (human summary)": converge_human,
    "converge (password refused)": converge_refused,
    "converge (mistyped proxy refused)": converge_refused_mistyped_proxy,
    "check-upstream": check_upstream,
    "check-upstream (hostile registries)": check_upstream_hostile,
    "check-storage": check_storage,
    "rotate": rotate,
    "warm": warm,
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return Env(tmp_path_factory.mktemp("leaks"))


def test_every_cli_command_is_covered():
    """A new subcommand must get an entry in COMMANDS."""
    p = run(["--help"], env={})
    listed = [line.split()[0] for line in p.stdout.split("Commands:")[1].split("Options:")[0].splitlines() if line.strip()]
    covered = {name.split()[0] for name in COMMANDS}
    assert set(listed) - {"help"} <= covered, f"commands without a leak check: {set(listed) - {'help'} - covered}"


@pytest.mark.parametrize("name", list(COMMANDS))
def test_no_secret_in_any_output(env, name):
    outputs = COMMANDS[name](env)
    assert outputs
    secrets = env.secrets
    assert len(secrets) >= 10, secrets
    for where, text in outputs:
        for s in secrets:
            assert s not in text, f"{name}: a secret ({s[:4]}…) in {where}"
