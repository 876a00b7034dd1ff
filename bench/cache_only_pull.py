"""A cached image pulled from a Proxy master that proxies (upstream up) against the same
master on its cache-only configuration (upstream down), in one run.

Real components, as in tests/test_offline_start.py: the upstream and the master's
registry are Debian's docker-registry (token auth through the test issuer), the master
runs exactly the files the node hook wrote; the node hook itself picks the proxying or
the cache-only configuration from what it sees of the upstream. The image (LAYERS
layers of random, incompressible data, ~MB in all) is pulled once through the proxy to
fill the cache, then `skopeo copy` pulls it RUNS times per round into a fresh OCI
layout; rounds alternate proxying / cache-only (the registry restarts between them, as
kubelet restarts it), ROUNDS of each. Every pull is checked to give the image's digest.
A direct pull from the upstream itself (no proxy in the way) is the reference.

  .venv/bin/python bench/cache_only_pull.py [--mb 64] [--layers 4] [--runs 5] [--rounds 2]
"""
import argparse
import json
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from conftest import Converge  # noqa: E402
from registry_env import NodeRegistry, secret_data  # noqa: E402
from test_offline_start import T0, NodeHook  # noqa: E402
from test_static_pods import deploy, proxy_settings  # noqa: E402
from tools.oci import image_layout, tar_file  # noqa: E402
from tools.processes import wait_until  # noqa: E402
from tools.registry import Registry, skopeo  # noqa: E402


def build_image(root, tag, layers, layer_bytes):
    """An OCI layout with `layers` layers of random data; returns (manifest digest, bytes)."""
    tars = [tar_file(f"layer-{i}.bin", os.urandom(layer_bytes)) for i in range(layers)]
    digest, _, size = image_layout(root, tag, tars, compresslevel=1)
    return digest, size


def timed_pulls(source_args, ref, want, runs, work):
    """`runs` pulls of `ref` into fresh layouts; the seconds of each."""
    out = []
    for i in range(runs):
        dest = work / f"pull-{i}"
        shutil.rmtree(dest, ignore_errors=True)
        t0 = time.monotonic()
        p = skopeo("copy", *source_args, ref, f"oci:{dest}:x", timeout=600)
        out.append(time.monotonic() - t0)
        assert p.returncode == 0, p.stderr
        got = json.loads((dest / "index.json").read_text())["manifests"][0]["digest"]
        assert got == want, (got, want)
        shutil.rmtree(dest)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=64, help="image size, MiB of layer data")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--runs", type=int, default=5, help="pulls per round")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of each configuration")
    a = ap.parse_args()
    assert a.layers > 0 and a.mb > 0 and a.runs > 0 and a.rounds > 0
    with tempfile.TemporaryDirectory(prefix="bench-cache-only-") as w:
        w = pathlib.Path(w)
        up = Registry(w / "up").start()
        try:
            layout = w / "image"
            want, size = build_image(layout, "v1", a.layers, a.mb * (1 << 20) // a.layers)
            up.push_layout(layout, "v1", "deckhouse/ee/app:v1")
            converge = Converge(w / "state")
            roots, _ = deploy(w, converge, proxy_settings(up), masters=[("m1", "127.0.0.11")])
            ro = secret_data(converge.state, "registry-user-ro")
            hook = NodeHook(w, converge.state, "m1", roots["m1"])
            assert hook.run(T0)["cacheOnly"] == "false"

            def master_pulls(name):
                with NodeRegistry(converge.state, "m1", w / f"run-{name}", host_root=roots["m1"]) as reg:
                    args = [f"--src-cert-dir={reg.certs}", f"--src-creds=ro:{ro['password']}"]
                    ref = f"docker://{reg.host}/deckhouse/ee/app:v1"
                    if name == "fill":
                        timed_pulls(args, ref, want, 1, w)
                        blobs = reg.data / "docker/registry/v2/blobs/sha256"
                        wait_until(lambda: sum(1 for _ in blobs.rglob("data")) >= a.layers + 2,
                                   what="the image's blobs in the cache", timeout=120)
                        return []
                    return timed_pulls(args, ref, want, a.runs, w)

            master_pulls("fill")
            times = {"proxying": [], "cache-only": []}
            now = T0
            for r in range(a.rounds):
                times["proxying"] += master_pulls(f"proxying-{r}")
                up.stop_registry()
                now += 10
                assert hook.run(now)["cacheOnly"] == "true"
                times["cache-only"] += master_pulls(f"cache-only-{r}")
                up.start()
                # The way back waits for the upstream to answer for the hysteresis (1m).
                hook.run(now + 1)
                now += 62
                assert hook.run(now)["cacheOnly"] == "false"
            direct = timed_pulls(["--src-tls-verify=false", f"--src-creds={up.creds('puller')}"],
                                 f"docker://{up.host}/deckhouse/ee/app:v1", want, a.runs, w)
        finally:
            up.stop()

    proxy_mean = statistics.mean(times["proxying"])
    print(f"Image: {a.layers} layers, {size / (1 << 20):.1f} MiB; {a.runs} pulls x {a.rounds} rounds per "
          f"configuration (skopeo copy into a fresh OCI layout, digest checked).\n")
    print("| pulled from | pulls | mean | median | min | max | mean / proxying |")
    print("|---|---|---|---|---|---|---|")
    for name, ts in [("the master, proxying (upstream up)", times["proxying"]),
                     ("the master, cache-only (upstream down)", times["cache-only"]),
                     ("the upstream itself (reference)", direct)]:
        print(f"| {name} | {len(ts)} | {statistics.mean(ts):.2f} s | {statistics.median(ts):.2f} s | "
              f"{min(ts):.2f} s | {max(ts):.2f} s | {statistics.mean(ts) / proxy_mean:.2f}x |")


if __name__ == "__main__":
    main()
