"""The warm cache (issue 14, item 3): every image of the running release is in every
Proxy master's cache before the cluster is pointed at the masters, fetched by the
static pod's `warm` container through the master's own registry.

Real components: the upstream and the masters' registries are Debian's docker-registry
(the masters from exactly the files the node hook wrote, registry_env's kubelet
stand-in, which runs the pod's `warm` container with the module's binary), skopeo as
the client, the node hook and the converge as shell-operator and addon-operator run
them."""
import hashlib
import json
import re
from collections import Counter

import pytest
import time
import yaml

from conftest import module_config, nodes_file
from registry_env import NodeRegistry, loopback_masters, rendered_secret, secret_data, switch_state
from test_static_pods import node_hook, proxy_settings
from tools.oci import image_layout, tar_file
from tools.processes import wait_until
from tools.registry import Registry, skopeo

RELEASE = "v1.2.3"
# Addresses of this process's own (the masters' ports are fixed): 127.0.0.11-13, which
# other suites on the machine use at the same time, made the outage test reach another
# run's registry or fail to bind.
MASTERS = loopback_masters()
REPO = "deckhouse/ee"


def push_release(up, tmp_path, images=10, release=RELEASE):
    """`images` module images and the platform image `release`, all sharing a base
    layer (and pairs of them a second one), pushed to the upstream's REPO. Returns
    (the module digests by name, the platform digest, every blob digest, the layouts).
    Another `release` has other digests (its own layers differ) on the same base."""
    base = tar_file("base.bin", bytes(range(256)) * 2048)  # 512 KiB shared by all
    shared = [tar_file(f"shared-{i}.bin", f"pair {i}\n".encode() * 4000) for i in range(images // 2 + 1)]
    digests, blobs, layouts = {}, set(), {}
    for i in range(images + 1):
        tag = release if i == images else f"img-{i}" if release == RELEASE else f"img-{i}-{release}"
        own = f"image {i}\n" if release == RELEASE else f"image {i} of {release}\n"
        layers = [base, shared[i // 2], tar_file("own.txt", own.encode())]
        layout = tmp_path / "layouts" / tag
        md, bl, _ = image_layout(layout, tag, layers, config={"Labels": {"tag": tag}})
        up.push_layout(layout, tag, f"{REPO}:{tag}")
        blobs.update(bl)
        layouts[md] = layout
        if i < images:
            digests[f"image{i}"] = md
        else:
            platform = md
    return digests, platform, blobs, layouts


def global_values(tmp_path, up, digests, release=RELEASE, own=None):
    """The release as Deckhouse's global values name it: the module's own three images
    among the digests (the chart references them; `own` replaces them), the rest under
    another module."""
    names = sorted(digests)
    modules = {"embeddedRegistry": own or {"distribution": digests[names[0]], "dockerAuth": digests[names[1]],
                                           "manager": digests[names[2]]},
               "other": {n: digests[n] for n in names[3:]}}
    path = tmp_path / ("global.yaml" if release == RELEASE else f"global-{release}.yaml")
    path.write_text(yaml.safe_dump({"deckhouseVersion": release, "modulesImages": {
        "registry": {"base": f"{up.host}/{REPO}"}, "digests": modules}}))
    return path


def upstream_requests(up, start=0):
    """(method, path) of each request the upstream answered since byte `start` of its log."""
    text = (up.dir / "registry.log").read_text()[start:]
    out = []
    for line in text.splitlines():
        if "response completed" not in line:
            continue
        m = re.search(r'http\.request\.method="?([A-Z]+)', line)
        u = re.search(r'http\.request\.uri="([^"]+)"', line)
        if m and u:
            out.append((m.group(1), u.group(1)))
    return out


def registry_blob_gets(reg, agent_prefix=None):
    """Blob GETs in a master's JSON access log, from clients whose user agent starts with
    `agent_prefix` (None: any); one entry per GET."""
    out = []
    for line in reg.log().splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if (e.get("msg") == "response completed" and e.get("http.request.method") == "GET"
                and (agent_prefix is None or e.get("http.request.useragent", "").startswith(agent_prefix))
                and "/blobs/sha256:" in e.get("http.request.uri", "")):
            out.append(e["http.request.uri"].rsplit("/", 1)[1])
    return out


def warm_blob_gets(reg):
    """The blobs the warm container asked its registry for (the registry's JSON log)."""
    return registry_blob_gets(reg, "embedded-registry-warm/")


def log_size(up):
    return len((up.dir / "registry.log").read_text())


def blob_gets(requests):
    return [p.rsplit("/", 1)[1] for m, p in requests if m == "GET" and "/blobs/sha256:" in p]


def warm_done(reg, wanted):
    p = reg.warm_progress()
    return p if p and p["wanted"] == wanted and p["cached"] == wanted else None


def deploy(tmp_path, converge, up, gv, masters, name):
    converge(module_config(tmp_path, proxy_settings(up), name=name), nodes_file(tmp_path, masters),
             extra=["--global-values", str(gv)])



def restart_without_upstream(up, regs, hook, converge, tmp_path, roots):
    """The outage: the upstream stops, every master's registry stops, each master's node
    hook runs (it must choose cache-only) and the registries start again from what it
    wrote. Returns the new registries."""
    up.stop()
    for r in regs:
        r.stop()
    for n, _ in MASTERS:
        assert hook(n)["cacheOnly"] == "true"
    return [NodeRegistry(converge.state, n, tmp_path / f"run2-{n}", host_root=roots[n]).start()
            for n, _ in MASTERS]

def test_warm_caches_the_release_once_resumes_and_serves_it_without_the_upstream(tmp_path, converge):
    up = Registry(tmp_path / "up").start()
    try:
        digests, platform, blobs, layouts = push_release(up, tmp_path)
        gv = global_values(tmp_path, up, digests)
        deploy(tmp_path, converge, up, gv, MASTERS[:1], "mc-1.yaml")
        root = tmp_path / "host-m1"
        _, _, status = node_hook(tmp_path, converge.state, "m1", root)
        wanted = len(digests) + 1
        # Before any pass: the list counts, nothing cached; the list file is outside
        # the restart hash (the pod's annotation is the Secret's hash of the other files).
        assert status["warm"] == f"0/{wanted}" and status["warmListHash"] == "", status
        secret = rendered_secret(converge.state, "m1")
        assert "config.warm-images.json" in secret["data"]
        pod = yaml.safe_load((root / "etc/kubernetes/manifests/embedded-registry.yaml").read_text())
        warm = next(c for c in pod["spec"]["containers"] if c["name"] == "warm")
        assert "--concurrency=4" in warm["args"]
        assert {"name": "data", "mountPath": "/data", "readOnly": True} in warm["volumeMounts"]
        assert (root / "opt/deckhouse/registry/warm").stat().st_uid == 64535, "the pod's user writes its progress"

        start = log_size(up)
        with NodeRegistry(converge.state, "m1", tmp_path / "run-1", host_root=root) as reg:
            p = wait_until(lambda: warm_done(reg, wanted), timeout=180, what=f"warm-up ({reg.dir / 'warm.log'})")
            assert p["missing"] == [] and p["bytes"] > 0
            asked = warm_blob_gets(reg)
            assert sorted(asked) == sorted(set(asked)), "the warm process asked for a blob twice"
            assert set(asked) == blobs, "every blob of the release, shared layers once"
            # distribution 2.8's proxy fetches a blob it does not hold twice: once to
            # answer, once (beside it) to store it. Never more.
            upstream = Counter(blob_gets(upstream_requests(up, start)))
            assert set(upstream) == blobs and max(upstream.values()) <= 2, upstream
            _, _, status = node_hook(tmp_path, converge.state, "m1", root)
            assert status["warm"] == f"{wanted}/{wanted}" and status["warmListHash"] == p["listHash"], status
            assert status["warmBytes"] == str(p["bytes"])
            assert "password" not in reg.warm_log() and secret_data(converge.state, "registry-user-ro")[
                "password"] not in reg.warm_log()

        # A restart of the pod (warm included) fetches nothing again: the cache is read
        # from the storage.
        reg.progress_file.unlink()
        start = log_size(up)
        with NodeRegistry(converge.state, "m1", tmp_path / "run-2", host_root=root) as reg:
            wait_until(lambda: warm_done(reg, wanted), timeout=120, what="the second warm-up")
            again = [r for r in upstream_requests(up, start) if "/manifests/" in r[1] or "/blobs/" in r[1]]
            assert again == [], f"fetched again after a restart: {again}"

        # The upstream gone, the registry restarted on what the node hook wrote (its
        # cache-only variant): every image of the release pulls, byte-identical.
        up.stop()
        _, _, status = node_hook(tmp_path, converge.state, "m1", root)
        assert status["cacheOnly"] == "true", status
        ro = secret_data(converge.state, "registry-user-ro")
        (root / "opt/deckhouse/registry/warm/progress.json").unlink()
        with NodeRegistry(converge.state, "m1", tmp_path / "run-3", host_root=root) as reg:
            for md, layout in layouts.items():
                dest = tmp_path / f"pulled-{md[7:19]}"
                p = skopeo("copy", f"--src-cert-dir={reg.certs}", f"--src-creds=ro:{ro['password']}",
                           f"docker://{reg.host}/{REPO}@{md}", f"oci:{dest}:x")
                assert p.returncode == 0, p.stderr
                for f in (layout / "blobs/sha256").iterdir():
                    assert (dest / "blobs/sha256" / f.name).read_bytes() == f.read_bytes(), f"{md}: blob {f.name}"
            p = skopeo("inspect", f"--cert-dir={reg.certs}", f"--creds=ro:{ro['password']}", "--raw",
                       f"docker://{reg.host}/{REPO}:{RELEASE}")
            assert p.returncode == 0 and hashlib.sha256(p.stdout.encode()).hexdigest() == platform[7:], p.stderr
            # The cache-only registry's warm pass counts everything cached, fetching nothing.
            p = wait_until(lambda: warm_done(reg, wanted), timeout=120, what="the cache-only warm pass")
            assert p["unavailable"] == 0
    finally:
        up.stop()


def test_outage_three_warm_masters_restarted_without_the_upstream_serve_the_whole_release(tmp_path, converge):
    """The issue's outage proof: three masters in Proxy HA behind a real upstream, the
    cluster switched once the warm-up is done; the upstream stops and every registry
    restarts (the node hook runs again, the pods start from what it wrote); containerd's
    CRI pulls every image of the release with the pull Secret's credentials; an image
    never cached fails clearly; with the upstream back a new image pulls through."""
    from test_static_pods import node_hosts, pull_credentials, pull_secret
    from tools.cri import CriContainerd, CriError

    up = Registry(tmp_path / "up").start()
    regs = []
    try:
        digests, platform, _, _ = push_release(up, tmp_path)
        up.push(REPO, "never", b"never part of a release\n")
        gv = global_values(tmp_path, up, digests)
        step = iter(range(100))

        def again(now):
            converge(module_config(tmp_path, proxy_settings(up), name=f"mc-{next(step)}.yaml"),
                     nodes_file(tmp_path, MASTERS), extra=["--global-values", str(gv)], now=now)
            node_hosts(converge.state, tmp_path / "node")  # the nodes apply and acknowledge it
            return switch_state(converge.state)

        deploy(tmp_path, converge, up, gv, MASTERS, "mc-first.yaml")
        roots = {n: tmp_path / f"host-{n}" for n, _ in MASTERS}

        def hook(n):
            return node_hook(tmp_path, converge.state, n, roots[n])[2]
        wanted = len(digests) + 1
        now = int(time.time())
        # None has warmed yet: no node is pointed at the masters.
        for n, _ in MASTERS:
            assert hook(n)["warm"] == f"0/{wanted}"
        _, cond = again(now)
        assert cond["CacheWarm"]["status"] == "False" and "m1: has not finished a pass" in cond["CacheWarm"]["message"]
        assert pull_secret(converge.state)["address"] == up.host

        regs = [NodeRegistry(converge.state, n, tmp_path / f"run-{n}", host_root=roots[n]).start() for n, _ in MASTERS]
        for r in regs:
            wait_until(lambda: warm_done(r, wanted), timeout=180, what=f"warm-up of {r.host}")
        for n, _ in MASTERS:
            status = hook(n)
            assert status["warm"] == f"{wanted}/{wanted}" and status["registry"] == "ready", status
        _, cond = again(now + 1)
        assert cond["CacheWarm"]["status"] == "True", cond
        state, cond = again(now + 302)
        assert state["cluster"] == "Embedded", cond
        data = pull_secret(converge.state)
        address = data["address"]
        user, pw = pull_credentials(converge.state)

        # The outage: the upstream stops, every registry restarts from what the node
        # hook wrote (cache-only: the upstream does not answer and nothing serves).
        regs = restart_without_upstream(up, regs, hook, converge, tmp_path, roots)
        hosts, _ = node_hosts(converge.state, tmp_path / "node")

        def pull(ref):
            # A failure says what containerd said and what each master served.
            try:
                return cri.pull(ref, user, pw)
            except CriError as e:
                raise AssertionError(f"CRI pull {ref}: {e}\n" + "\n".join(r.served() for r in regs)) from e
        with CriContainerd(tmp_path / "cri", hosts) as cri:
            for d in [*digests.values(), platform]:
                assert pull(f"{address}/{REPO}@{d}").startswith("sha256:"), d
            assert pull(f"{address}/{REPO}:{RELEASE}").startswith("sha256:")
            with pytest.raises(CriError) as never:
                cri.pull(f"{address}/{REPO}:never", user, pw)
            assert f"{REPO}:never" in str(never.value) or "manifests/never" in str(never.value), never.value
            # Each master answered at once, as a cache-only registry does: manifest unknown
            # (containerd then tries the name itself, which only the masters serve).
            for r in regs:
                assert any('"/v2/deckhouse/ee/manifests/never' in line and '"http.response.status":404' in line
                           for line in r.log().splitlines()), r.log()[-2000:]

            # The upstream answers again: the masters proxy again (the node hook's
            # proxying configuration restarts them), and a new image pulls through.
            up.start()
            fresh = up.push(REPO, "fresh", b"pushed after the outage\n")
            for n, _ in MASTERS:
                assert hook(n)["cacheOnly"] == "false"
            for r in regs:
                r.stop()
            regs = [NodeRegistry(converge.state, n, tmp_path / f"run3-{n}", host_root=roots[n]).start()
                    for n, _ in MASTERS]
            assert pull(f"{address}/{REPO}:fresh").startswith("sha256:")
            assert fresh.startswith("sha256:")
    finally:
        for r in regs:
            r.stop()
        up.stop()
