"""Upstream check of N images behind added latency, against the ideal and skopeo.

A real docker-registry (anonymous, 127.0.0.1) holds one image under N tags; a TCP proxy
in front delays every forwarded chunk by RTT/2 in each direction, so each HTTP round
trip costs at least RTT more. Measured in one run:
  - `embedded-registry check-upstream` with N images at each concurrency;
  - a sequential `skopeo inspect --raw` loop over the same images (what an admin would
    script), on a sample extrapolated to N (its per-image cost is flat);
and reported as ratios to the ideal ceil(N / concurrency) x RTT.

  .venv/bin/python bench/upstream_check.py [--images 300] [--rtt-ms 50] [--concurrency 8,16,32]
"""
import argparse
import asyncio
import json
import math
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from tools.processes import free_port  # noqa: E402
from tools.registry import Registry  # noqa: E402

BIN = ROOT / "target/release/embedded-registry"


def delay_proxy(backend_port, delay):
    """Starts a TCP proxy on a free port that delays each chunk by `delay` seconds."""
    port = free_port()
    ready = threading.Event()

    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def handle(client_r, client_w):
        server_r, server_w = await asyncio.open_connection("127.0.0.1", backend_port)
        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        ready.set()
        async with server:
            await server.serve_forever()

    threading.Thread(target=lambda: asyncio.run(main()), daemon=True).start()
    ready.wait()
    return port


def tag_many(host, repo, tag, n):
    """Puts the manifest of repo:tag under n more tags (fast: no blobs move)."""
    accept = "application/vnd.oci.image.manifest.v1+json"
    req = urllib.request.Request(f"http://{host}/v2/{repo}/manifests/{tag}", headers={"Accept": accept})
    with urllib.request.urlopen(req) as r:
        body, ctype = r.read(), r.headers["Content-Type"]
    for i in range(n):
        put = urllib.request.Request(f"http://{host}/v2/{repo}/manifests/t{i}", data=body, method="PUT",
                                     headers={"Content-Type": ctype})
        urllib.request.urlopen(put).read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--rtt-ms", type=float, default=50)
    ap.add_argument("--concurrency", default="8,16,32")
    ap.add_argument("--skopeo-sample", type=int, default=30)
    a = ap.parse_args()
    rtt = a.rtt_ms / 1000
    with tempfile.TemporaryDirectory() as w, Registry(pathlib.Path(w) / "up", auth="none") as up:
        up.push("deckhouse/ee", "base")
        tag_many(up.host, "deckhouse/ee", "base", a.images)
        port = delay_proxy(up.port, rtt / 2)
        host = f"127.0.0.1:{port}"
        images = [f"--image=:t{i}" for i in range(a.images)]
        rows = []
        for c in [int(x) for x in a.concurrency.split(",")]:
            t0 = time.monotonic()
            p = subprocess.run([str(BIN), "check-upstream", "--host", host, "--scheme", "http", "--path",
                                "/deckhouse/ee", "--concurrency", str(c), "--timeout", "10m", "--json", *images],
                               capture_output=True, text=True)
            wall = time.monotonic() - t0
            r = json.loads(p.stdout)
            assert p.returncode == 0 and len(r["images"]) == a.images, p.stdout[:500] + p.stderr
            ideal = math.ceil(a.images / c) * rtt
            rows.append((f"check-upstream, concurrency {c}", wall, ideal, r["requests"]))
        sample = min(a.skopeo_sample, a.images)
        t0 = time.monotonic()
        for i in range(sample):
            p = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                                f"docker://{host}/deckhouse/ee:t{i}"], capture_output=True, text=True)
            assert p.returncode == 0, p.stderr
        per = (time.monotonic() - t0) / sample
        seq = per * a.images
        print(f"{a.images} images, {a.rtt_ms:.0f} ms added per round trip; skopeo measured on {sample} images, "
              f"extrapolated ({per * 1000:.0f} ms each)\n")
        print("| run | wall | ideal ceil(N/c)xRTT | ratio to ideal | ratio to sequential skopeo | HTTP requests |")
        print("|---|---|---|---|---|---|")
        for name, wall, ideal, reqs in rows:
            print(f"| {name} | {wall:.2f} s | {ideal:.2f} s | {wall / ideal:.2f}x | {wall / seq:.3f}x | {reqs} |")
        print(f"| sequential `skopeo inspect --raw` loop | {seq:.1f} s | {a.images * rtt:.2f} s (c=1) | "
              f"{seq / (a.images * rtt):.2f}x | 1.000x | - |")


if __name__ == "__main__":
    main()
