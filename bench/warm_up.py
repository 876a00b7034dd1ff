"""Warm-up of a release into an empty Proxy master (issue 14, "Benchmarks"), in one run:
the module's `embedded-registry warm --once` against a `skopeo copy` loop of the same
images through the same kind of empty master, and against the ideal (the release's
unique bytes at the loopback bandwidth measured in the same run).

Real components, as in tests/test_warm_cache.py: the upstream and the masters'
registries are Debian's docker-registry (token auth through the test issuer), each
master runs exactly the files the node hook wrote from the rendered configuration
(Proxy, the release in `--global-values`). Between the masters and the upstream sits a
small TCP proxy (in this file) that holds every chunk DELAY/2 each way, so every
request pays DELAY more round trip (no root-only tool, no `tc`); the upstream's token
issuer is reached directly.

The release: IMAGES images (the last one the platform image `<base>:v1.2.3`), each of
3 of BASES shared base layers plus one small layer of its own, about TOTAL_MB of
random (incompressible) uncompressed tar layers in all, pushed to the upstream with
skopeo. Master m1 is warmed by `embedded-registry warm --once` with the pod's own
arguments (`--concurrency=4` as rendered); master m2, as empty, by CONCURRENCY
`skopeo copy` processes at a time pulling each image by digest through it into a
per-process OCI layout (skopeo still asks for a layer that layout holds: measured). Both
times run until every blob of the release is stored and linked in the master's
storage. The upstream's access log gives the blob GETs per blob for each run.

  .venv/bin/python bench/warm_up.py [--images 300] [--total-mb 1024] [--delay-ms 50]
"""
import argparse
import asyncio
import base64
import hashlib
import io
import json
import os
import pathlib
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from conftest import Converge  # noqa: E402
from registry_env import NodeRegistry, secret_data  # noqa: E402
from test_static_pods import node_hook  # noqa: E402
from test_warm_cache import (RELEASE, REPO, blob_gets, deploy, global_values, log_size,  # noqa: E402
                             registry_blob_gets, upstream_requests)
import yaml  # noqa: E402
from tools.binary import BIN  # noqa: E402
from tools.processes import free_port, wait_until  # noqa: E402
from tools.registry import Registry, password, skopeo  # noqa: E402

BASES = 8
LAYER = "application/vnd.oci.image.layer.v1.tar"


# The release --------------------------------------------------------------------------

def _tar(name, size):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mtime = size, 0
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    return raw.getvalue()


def build_release(root, images, total_bytes):
    """One OCI layout holding every image (tags img-0.. and RELEASE for the last);
    returns (digest by tag, {blob digest: size})."""
    blobs = {}

    def put(data):
        d = hashlib.sha256(data).hexdigest()
        p = root / "blobs" / "sha256" / d
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        blobs[f"sha256:{d}"] = len(data)
        return {"digest": f"sha256:{d}", "size": len(data)}

    base_size = total_bytes * 2 // 5 // BASES  # 40% in the shared bases
    own_size = max(1024, total_bytes * 3 // 5 // images)  # 60% in the images' own layers
    bases = [put(_tar(f"base-{b}.bin", base_size)) for b in range(BASES)]
    tags, entries = {}, []
    for i in range(images):
        tag = RELEASE if i == images - 1 else f"img-{i}"
        layers = [bases[i % BASES], bases[(i + 1) % BASES], bases[(i + 3) % BASES], put(_tar("own.bin", own_size))]
        layers = [dict(d, mediaType=LAYER) for d in layers]
        config = put(json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"tag": tag}},
                                 "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in layers]}}).encode())
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": dict(config, mediaType="application/vnd.oci.image.config.v1+json"),
                               "layers": layers}).encode()
        m = put(manifest)
        del blobs[m["digest"]]  # a manifest, not a blob
        tags[tag] = m["digest"]
        entries.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", **m,
                        "annotations": {"org.opencontainers.image.ref.name": tag}})
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))
    return tags, blobs


# The added latency ---------------------------------------------------------------------

class DelayProxy:
    """A TCP proxy on loopback: every chunk is forwarded `delay/2` seconds after it was
    read, in each direction, so a request/response pays `delay` more round trip while
    the bandwidth stays what it was (chunks are pipelined, not serialised). Runs an
    asyncio loop in a thread; `host` is its address."""

    def __init__(self, target_port, delay):
        self.target_port, self.half = target_port, delay / 2
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self.thread.start()
        if not started.wait(10):
            raise AssertionError("the delay proxy did not start")

    def _run(self, started):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._conn, "127.0.0.1", self.port))
        started.set()
        self.loop.run_forever()

    async def _pipe(self, reader, writer):
        queue = asyncio.Queue()

        async def send():
            while True:
                due, data = await queue.get()
                if data is None:
                    break
                wait = due - self.loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            writer.close()

        sender = self.loop.create_task(send())
        try:
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    break
                await queue.put((self.loop.time() + self.half, data))
        except OSError:
            pass
        await queue.put((0, None))
        try:
            await sender
        except OSError:
            pass

    async def _conn(self, client_r, client_w):
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(self._pipe(client_r, up_w), self._pipe(up_r, client_w))

    def stop(self):
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


# Measurements ----------------------------------------------------------------------------

def loopback_bandwidth(up, digest, size):
    """Bytes per second of one GET of blob `digest` straight from the upstream (no
    delay), with a pull token from its issuer."""
    auth = yaml.safe_load(up.config.read_text())["auth"]["token"]
    req = urllib.request.Request(f"{auth['realm']}?service={auth['service']}&scope=repository:{REPO}:pull")
    basic = base64.b64encode(f"puller:{password('puller')}".encode()).decode()
    req.add_header("Authorization", f"Basic {basic}")
    with urllib.request.urlopen(req, timeout=30) as r:
        token = json.loads(r.read(1 << 16))["token"]
    req = urllib.request.Request(f"http://{up.host}/v2/{REPO}/blobs/{digest}")
    req.add_header("Authorization", f"Bearer {token}")
    t0 = time.monotonic()
    got = 0
    with urllib.request.urlopen(req, timeout=300) as r:
        while got <= size:
            chunk = r.read(1 << 20)
            if not chunk:
                break
            got += len(chunk)
    took = time.monotonic() - t0
    assert got == size, (got, size)
    return size / took


def stored(reg, blobs):
    """Every blob of the release stored in the master's storage and linked in REPO."""
    v2 = reg.data / "docker/registry/v2"
    for d in blobs:
        h = d.split(":", 1)[1]
        if not (v2 / "blobs/sha256" / h[:2] / h / "data").is_file():
            return False
        if not (v2 / "repositories" / REPO / "_layers/sha256" / h / "link").is_file():
            return False
    return True


class NoWarm(NodeRegistry):
    """The master's registry and token issuer without its `warm` container."""

    def start_warm(self):
        pass

    def warm_args(self):
        """The pod's `warm` arguments with the mounts re-rooted, as start_warm does."""
        c = self.warm_container()
        wanted = self.host_root / "etc/kubernetes/registry/config/warm-images.json"
        self.progress_file.parent.mkdir(parents=True, exist_ok=True)
        mounts = {"--config=/config/distribution.yaml": f"--config={self.dir / 'distribution.yaml'}",
                  "--list=/config/warm-images.json": f"--list={wanted}", "--pki=/pki": f"--pki={self.pki}",
                  "--progress=/warm/progress.json": f"--progress={self.progress_file}"}
        assert set(mounts) <= set(c["args"]), c["args"]
        return [mounts.get(a, a) for a in c["args"]]


def run_warm(reg, blobs, wanted):
    """Seconds of `embedded-registry warm --once` until the release is stored."""
    args = reg.warm_args()
    concurrency = next(a.split("=", 1)[1] for a in args if a.startswith("--concurrency="))
    t0 = time.monotonic()
    p = subprocess.run([str(BIN), "warm", *args, "--once"], capture_output=True, text=True, timeout=3600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    wait_until(lambda: stored(reg, blobs), timeout=120, what="the release in m1's storage")
    took = time.monotonic() - t0
    progress = reg.warm_progress()
    assert progress["cached"] == progress["wanted"] == wanted, progress
    return took, int(concurrency)


def run_skopeo(reg, ro, digests, blobs, concurrency, work):
    """Seconds of `concurrency` skopeo processes at a time, each image pulled once by
    digest through the master into the worker's own OCI layout, until the release is
    stored."""
    slots = [threading.Lock() for _ in range(concurrency)]
    layouts = [work / f"skopeo-{i}" for i in range(concurrency)]

    def one(digest):
        for i, lock in enumerate(slots):
            if lock.acquire(blocking=False):
                try:
                    p = skopeo("copy", f"--src-cert-dir={reg.certs}", f"--src-creds=ro:{ro}",
                               f"docker://{reg.host}/{REPO}@{digest}", f"oci:{layouts[i]}:{digest[7:19]}",
                               timeout=1800)
                    assert p.returncode == 0, p.stderr
                    return
                finally:
                    lock.release()
        raise AssertionError("no free slot")  # the pool never runs more than `concurrency`

    t0 = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, digests))
    wait_until(lambda: stored(reg, blobs), timeout=120, what="the release in m2's storage")
    return time.monotonic() - t0


def gets_per_blob(up, start, blobs):
    """GETs the upstream served per blob of the release since byte `start` of its log."""
    return Counter(b for b in blob_gets(upstream_requests(up, start)) if b in blobs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--total-mb", type=int, default=1024, help="MiB of layer data in the release")
    ap.add_argument("--delay-ms", type=int, default=50, help="added round trip to the upstream")
    ap.add_argument("--concurrency", type=int, default=4, help="skopeo processes at a time")
    a = ap.parse_args()
    if a.images < 4 or a.total_mb < 1 or a.delay_ms < 0 or not 1 <= a.concurrency <= 32:
        sys.exit("bench/warm_up.py: --images must be at least 4, --total-mb at least 1, --delay-ms not negative, "
                 "--concurrency 1 to 32")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-warm-up-") as w:
        w = pathlib.Path(w)
        up = Registry(w / "up").start()
        delay = None
        try:
            t0 = time.monotonic()
            tags, blobs = build_release(w / "release", a.images, a.total_mb << 20)
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda t: up.push_layout(w / "release", t, f"{REPO}:{t}"), tags))
            total = sum(blobs.values())
            print(f"release: {a.images} images, {len(blobs)} unique blobs, {total / (1 << 20):.1f} MiB "
                  f"(built and pushed in {time.monotonic() - t0:.0f} s)", file=sys.stderr)
            delay = DelayProxy(up.port, a.delay_ms / 1000)
            shim = type("Upstream", (), {"host": delay.host})()
            module_digests = {f"image{i}": tags[f"img-{i}"] for i in range(a.images - 1)}
            gv = global_values(w, shim, module_digests)
            converge = Converge(w / "state")
            masters = [("m1", "127.0.0.11"), ("m2", "127.0.0.12")]
            deploy(w, converge, shim, gv, masters, "mc.yaml")
            roots = {}
            for name, _ in masters:
                roots[name] = w / f"host-{name}"
                node_hook(w, converge.state, name, roots[name])
            ro = secret_data(converge.state, "registry-user-ro")["password"]
            biggest = max(blobs, key=blobs.get)
            bandwidth = max(loopback_bandwidth(up, biggest, blobs[biggest]) for _ in range(3))

            start = log_size(up)
            with NoWarm(converge.state, "m1", w / "run-m1", host_root=roots["m1"]) as reg:
                assert not any((reg.data / "docker/registry/v2/blobs").rglob("data")), "m1 starts empty"
                warm_s, warm_conc = run_warm(reg, blobs, a.images)
                asked = Counter(b for b in _warm_gets(reg) if b in blobs)
            warm_up = gets_per_blob(up, start, blobs)

            start = log_size(up)
            with NoWarm(converge.state, "m2", w / "run-m2", host_root=roots["m2"]) as reg:
                assert not any((reg.data / "docker/registry/v2/blobs").rglob("data")), "m2 starts empty"
                skopeo_s = run_skopeo(reg, ro, list(tags.values()), blobs, a.concurrency, w)
                asked_sk = Counter(b for b in _client_gets(reg) if b in blobs)
            skopeo_up = gets_per_blob(up, start, blobs)
            bandwidth_after = max(loopback_bandwidth(up, biggest, blobs[biggest]) for _ in range(3))
        finally:
            if delay:
                delay.stop()
            up.stop()
    load_after = os.getloadavg()

    ideal = total / max(bandwidth, bandwidth_after)
    mib = total / (1 << 20)

    def hist(c):
        return ", ".join(f"{n}x: {k}" for n, k in sorted(Counter(c.values()).items()))

    print(f"Release: {a.images} images ({BASES} shared base layers, 3 per image, one own layer each), "
          f"{len(blobs)} unique blobs, {mib:.1f} MiB; {a.delay_ms} ms added round trip to the upstream.")
    print(f"Loopback: the best of 3 GETs of a {blobs[biggest] / (1 << 20):.1f} MiB blob from the upstream: "
          f"{bandwidth / (1 << 20):.0f} MiB/s before, {bandwidth_after / (1 << 20):.0f} MiB/s after.")
    print(f"Load average: {load_before[0]:.2f} before, {load_after[0]:.2f} after; {os.cpu_count()} cores.\n")
    print("| warm-up of the release into an empty Proxy master | concurrency | time | MiB/s | vs skopeo | vs ideal |")
    print("|---|---|---|---|---|---|")
    for name, conc, s in [("`embedded-registry warm --once`", warm_conc, warm_s),
                          ("`skopeo copy` of each image through the master", a.concurrency, skopeo_s),
                          ("ideal: unique bytes / loopback bandwidth", "-", ideal)]:
        print(f"| {name} | {conc} | {s:.1f} s | {mib / s:.0f} | {s / skopeo_s:.2f}x | {s / ideal:.1f}x |")
    print()
    print("| blob GETs | warm (to its master) | warm: upstream served | skopeo: upstream served |")
    print("|---|---|---|---|")
    print(f"| blobs asked (of {len(blobs)}) | {len(asked)} | {len(warm_up)} | {len(skopeo_up)} |")
    print(f"| GETs per blob (count: blobs) | {hist(asked)} | {hist(warm_up)} | {hist(skopeo_up)} |")
    print(f"| most GETs of one blob | {max(asked.values())} | {max(warm_up.values())} | {max(skopeo_up.values())} |")
    print(f"\n(skopeo asked its master for {len(asked_sk)} blobs, at most {max(asked_sk.values())} GETs each.)")
    assert max(asked.values()) == 1, "the warm process asked for a blob twice"


def _warm_gets(reg):
    """The blobs the warm process asked its master for (one entry per GET)."""
    return registry_blob_gets(reg, "embedded-registry-warm/")


def _client_gets(reg):
    """The blobs any client asked the master for (one entry per GET)."""
    return registry_blob_gets(reg, None)


if __name__ == "__main__":
    main()
