"""Push and pull of one release through one master registry, on `Fs` storage against
`S3` on Garage with one node and with three (issue 16, "Benchmarks"), in one run.

Real components, as in tests/test_s3_ha.py: each master is Debian's docker-registry
(the s3-aws driver for S3) with the token issuer, started from exactly the files the
converge rendered for it (Detached, `detached.storageMode: Fs` or `S3`, one master; the
storage check passed in the converge), moved to free loopback ports. Garage 2.5.0 runs
on loopback (one node with replication_factor 1; three nodes on 127.0.0.1-3 with
replication_factor 3), the registry talks to node 0's S3 API.

The release: IMAGES images, each of 3 of 8 shared base layers plus one layer of its
own, about TOTAL_MB of random (incompressible) uncompressed tar layers in all
(bench/warm_up.py's `build_release`). For each storage, on an empty store: `skopeo
copy` pushes every image as `rw` (one after the other; a layer already pushed is not
sent again), then pulls every image as `ro` into one fresh OCI layout (a layer already
pulled is not fetched again), so each phase moves the release's unique bytes once.
Every pull is checked against the pushed manifest digest. The CPU seconds of the
registry, of the Garage servers and of skopeo are taken per phase from /proc and
getrusage, to say what dominates.

  .venv/bin/python bench/s3_storage.py [--total-mb 1024] [--images 12]
  S3_BENCH_MB=128 bench/s3-storage.sh     # a quick run
"""
import argparse
import json
import os
import pathlib
import resource
import shutil
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from conftest import Converge, module_config, nodes_file  # noqa: E402
from registry_env import NodeRegistry, secret_data, switch_state  # noqa: E402
from tools.garage import REGION, Garage, garage_bin  # noqa: E402
from tools.registry import skopeo  # noqa: E402
from warm_up import build_release  # noqa: E402

BUCKET = "registry"
MASTER = [("m1", "127.0.0.11")]  # rendered only: the registry is moved to free ports of 127.0.0.1
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU seconds of a running process so far (/proc/<pid>/stat)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def written_mib(pid):
    """MiB a running process caused to be written to storage so far (/proc/<pid>/io)."""
    for line in pathlib.Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1]) / (1 << 20)
    return 0.0


def iowait_seconds():
    """The machine's CPU seconds spent waiting for I/O so far, all cores (/proc/stat)."""
    return int(pathlib.Path("/proc/stat").read_text().split("\n", 1)[0].split()[5]) / TICK


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Target:
    """One master on one storage: the converge's rendering, the registry from it."""

    def __init__(self, work, name, settings, garage=None):
        self.name, self.garage = name, garage
        self.dir = work / f"master-{len(garage.nodes) if garage else 'fs'}"
        self.dir.mkdir(parents=True)
        converge = Converge(self.dir / "state")
        converge(module_config(self.dir, settings), nodes_file(self.dir, MASTER))
        state, _ = switch_state(converge.state)
        assert state.get("registry", {}).get("nodes") == ["m1"], f"{name}: nothing rendered: {state.get('check')}"
        self.rw = secret_data(converge.state, "registry-user-rw")["password"]
        self.ro = secret_data(converge.state, "registry-user-ro")["password"]
        self.repo = secret_data(converge.state, "deckhouse-registry")["path"].strip("/")
        self.reg = NodeRegistry(converge.state, "m1", self.dir / "run")
        self.storage = {k: v for k, v in self.reg.generated["distribution"]["storage"].items()
                        if k not in ("s3",)}
        s3 = self.reg.generated["distribution"]["storage"].get("s3")
        if s3:
            self.storage["s3"] = {k: v for k, v in s3.items() if k not in ("accesskey", "secretkey")}

    def pids(self):
        registry = next(p for p in self.reg.procs if p.args[0] == "docker-registry")
        return {"registry": [registry.pid], "garage": [n.proc.pid for n in self.garage.nodes] if self.garage else []}

    def cpu(self):
        """CPU seconds by process kind, MiB written by the registry and by Garage, and
        the machine's I/O wait, so far."""
        pids = self.pids()
        return ({k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()} | {"skopeo": children_cpu()},
                {k: sum(written_mib(p) for p in v) for k, v in pids.items()} | {"iowait": iowait_seconds()})


def phase(target, fn):
    """Runs fn(); returns (wall seconds, CPU seconds by process kind, MiB written by
    kind and the machine's I/O wait seconds)."""
    (cpu0, io0) = target.cpu()
    t0 = time.monotonic()
    fn()
    wall = time.monotonic() - t0
    (cpu1, io1) = target.cpu()
    return wall, {k: cpu1[k] - cpu0[k] for k in cpu1}, {k: io1[k] - io0[k] for k in io1}


def push_all(target, layout, tags):
    for tag in tags:
        p = skopeo("copy", "--preserve-digests", f"--dest-cert-dir={target.reg.certs}", f"--dest-creds=rw:{target.rw}",
                   f"oci:{layout}:{tag}", f"docker://{target.reg.host}/{target.repo}:{tag}", timeout=900)
        assert p.returncode == 0, f"{target.name}: push {tag}: {p.stderr[-1000:]}\n{target.reg.served()}"


def pull_all(target, dest, tags):
    for tag in tags:
        p = skopeo("copy", "--preserve-digests", f"--src-cert-dir={target.reg.certs}", f"--src-creds=ro:{target.ro}",
                   f"docker://{target.reg.host}/{target.repo}:{tag}", f"oci:{dest}:{tag}", timeout=900)
        assert p.returncode == 0, f"{target.name}: pull {tag}: {p.stderr[-1000:]}\n{target.reg.served()}"


def pulled_digests(dest):
    index = json.loads((dest / "index.json").read_text())
    return {m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"] for m in index["manifests"]}


def s3_settings(garage):
    garage.create_bucket(BUCKET)
    key, secret = garage.create_key("registry")
    garage.allow(BUCKET, key)
    return {"mode": "Detached", "detached": {"storageMode": "S3", "s3": {
        "endpoint": garage.endpoint(0), "region": REGION, "bucket": BUCKET, "accessKey": key, "secretKey": secret}}}


def measure(work, name, layout, tags, nodes=0):
    """Push then pull the release through a fresh master on one storage."""
    garage = Garage(work / f"garage-{nodes}", nodes=nodes).__enter__() if nodes else None
    try:
        settings = s3_settings(garage) if garage else {"mode": "Detached", "detached": {"storageMode": "Fs"}}
        target = Target(work, name, settings, garage)
        with target.reg:
            push = phase(target, lambda: push_all(target, layout, tags))
            dest = work / "pulled"
            pull = phase(target, lambda: pull_all(target, dest, tags))
            got = pulled_digests(dest)
            assert got == tags, f"{name}: pulled digests differ from the pushed ones: {got} {tags}"
            shutil.rmtree(dest)
        storage = target.storage
        shutil.rmtree(target.dir)  # the Fs store: the disk is shared with the next runs
        return {"name": name, "push": push, "pull": pull, "storage": storage}
    finally:
        if garage:
            garage.stop()
            shutil.rmtree(work / f"garage-{nodes}", ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--total-mb", type=int, default=os.environ.get("S3_BENCH_MB", "1024"),
                    help="MiB of unique layer data in the release (env S3_BENCH_MB)")
    ap.add_argument("--images", type=int, default=12)
    a = ap.parse_args()
    if not 16 <= a.total_mb <= 8192:
        print(f"--total-mb (or S3_BENCH_MB) {a.total_mb}: give 16..8192 MiB", file=sys.stderr)
        sys.exit(2)
    if not 2 <= a.images <= 200:
        print(f"--images {a.images}: give 2..200 images", file=sys.stderr)
        sys.exit(2)
    if garage_bin() is None:
        sys.exit("garage is not installed: run scripts/setup (cargo install --locked garage)")
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as w:
        w = pathlib.Path(w)
        layout = w / "release"
        tags, blobs = build_release(layout, a.images, a.total_mb << 20)
        mib = sum(blobs.values()) / (1 << 20)
        print(f"release: {a.images} images, {len(blobs)} unique blobs, {mib:.1f} MiB", flush=True)
        load_before = os.getloadavg()
        results = []
        for name, nodes in (("Fs (local disk)", 0), ("S3, Garage 1 node", 1), ("S3, Garage 3 nodes", 3)):
            r = measure(w, name, layout, tags, nodes)
            print(f"{name}: push {r['push'][0]:.1f} s, pull {r['pull'][0]:.1f} s", flush=True)
            results.append(r)
        load_after = os.getloadavg()
    fs = results[0]
    print(f"\nRelease: {a.images} images (8 shared base layers, 3 per image, one own layer each), "
          f"{len(blobs)} unique blobs, {mib:.0f} MiB of random uncompressed tar layers.")
    print(f"Load average: {load_before[0]:.2f} before, {load_after[0]:.2f} after; {os.cpu_count()} cores.")
    s3 = results[1]["storage"]["s3"]
    print(f"Rendered S3 storage: {json.dumps(s3, sort_keys=True)}; redirect: {results[1]['storage'].get('redirect')}\n")
    print("| storage | push | MiB/s | push vs Fs | pull | MiB/s | pull vs Fs |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        pw, pl = r["push"][0], r["pull"][0]
        print(f"| {r['name']} | {pw:.1f} s | {mib / pw:.0f} | {pw / fs['push'][0]:.2f}x "
              f"| {pl:.1f} s | {mib / pl:.0f} | {pl / fs['pull'][0]:.2f}x |")
    print("\n| storage, phase | CPU s: registry | Garage (all nodes) | skopeo | CPU s / wall s "
          "| MiB written: registry | Garage | machine's I/O wait s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        for ph in ("push", "pull"):
            wall, cpu, io = r[ph]
            print(f"| {r['name']}, {ph} | {cpu['registry']:.1f} | {cpu['garage']:.1f} | {cpu['skopeo']:.1f} "
                  f"| {sum(cpu.values()) / wall:.2f} | {io['registry']:.0f} | {io['garage']:.0f} "
                  f"| {io['iowait']:.1f} |")


if __name__ == "__main__":
    main()
