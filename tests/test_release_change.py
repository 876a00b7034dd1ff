"""A release change while the cluster pulls through warm Proxy masters (issue 14, the
"release change" proof, and docs/internal/mode-switching.md, "A warm cache").

Three Proxy masters behind a real upstream are switched and warm for release A (the
global values the converge gets with `--global-values`). The global values then name
release B (new digests, pushed to the upstream). What the module promises, proven here
with real components (the upstream and the masters are Debian's docker-registry run from
exactly what the node hook wrote, the masters' `warm` containers are the module's binary,
skopeo is the client):

- the converge with B's values keeps the cluster on the masters and sets `CacheWarm`
  False (reason `Warming`), naming the masters whose cache does not hold B's list;
- no master restarts for it (B keeps the module's own images: the static pod is the
  same), the warm containers read B's list and cache every B image on every master;
- `CacheWarm` turns True only once every master's status ConfigMap reports B's list
  hash with `warm` n/n (two of three reporting leaves it False, naming the third), and
  at that moment every B image is in every master's storage;
- with the upstream stopped and every master restarted cache-only, every B image pulls
  through each master on its own, byte for byte.

Not proven, and not provable by the module (the documented limit): that B's images are
cached before Deckhouse rolls B out. The values that name B reach the module in the
same render that rolls B out, so the cluster may use B's images while the masters still
proxy them; the order shown here is "cached on every master before `CacheWarm` is True",
and B's images fetched before the upstream outage."""
import time

from registry_env import secret_data
from release_fleet import ReleaseFleet
from test_warm_cache import MASTERS, REPO, blob_gets, global_values, log_size, push_release, upstream_requests
from tools.processes import wait_until
from tools.registry import Registry, skopeo

RELEASE_B = "v1.3.0"


def test_a_new_release_is_cached_on_every_master_before_cache_warm_and_serves_without_the_upstream(
        tmp_path, converge):
    up = Registry(tmp_path / "up").start()
    fleet = ReleaseFleet(tmp_path, converge, up)
    again, hook = fleet.again, fleet.hook
    try:
        digests_a, platform_a, blobs_a, _ = push_release(up, tmp_path)
        gv_a = global_values(tmp_path, up, digests_a)

        # Release A: switched and warm, as the outage proof leaves it.
        wanted = len(digests_a) + 1
        now = int(time.time())
        fleet.first_converge(gv_a, wanted, now)
        hash_a = fleet.warm_and_switch(gv_a, wanted, now)
        manifests = {n: fleet.manifest(n) for n, _ in MASTERS}

        # Release B: new digests on the upstream (the module's own images unchanged), and
        # nothing of it in any cache yet.
        start = log_size(up)
        digests_b, platform_b, blobs_b, layouts_b = push_release(up, tmp_path, release=RELEASE_B)
        own = {"distribution": digests_a["image0"], "dockerAuth": digests_a["image1"], "manager": digests_a["image2"]}
        gv_b = global_values(tmp_path, up, digests_b, release=RELEASE_B, own=own)
        names = sorted(digests_b)
        list_b = [*own.values(), *(digests_b[n] for n in names[3:]), platform_b]
        assert len(list_b) == wanted and set(list_b).isdisjoint(
            [*(digests_a[n] for n in names[3:]), platform_a]), "B names new digests"
        # The blobs of B's list that A lacks: its new layers and configs.
        new_blobs = {f"sha256:{f.name}" for md in list_b if md in layouts_b
                     for f in (layouts_b[md] / "blobs/sha256").iterdir()} - set(list_b) - blobs_a
        assert new_blobs, "B brings new blobs"
        state, cond = again(gv_b, now + 305)
        assert state["cluster"] == "Embedded", f"a new release moved the cluster off the masters: {state}"
        assert cond["CacheWarm"]["status"] == "False" and cond["CacheWarm"]["reason"] == "Warming", cond
        for n, _ in MASTERS:
            assert f"{n}:" in cond["CacheWarm"]["message"], cond["CacheWarm"]["message"]

        # The node hooks write B's list; the static pod stays as it was (no restart), and
        # each warm container reads the new list and caches it.
        for n, _ in MASTERS:
            status = hook(n)
            # A's progress is not B's: nothing counts as cached until a pass over B's list.
            assert status["warm"] == f"0/{wanted}" and status["warmListHash"] == "", status
            assert fleet.manifest(n) == manifests[n], f"{n}: the static pod changed for a new list"
        for r in fleet.regs:
            p = wait_until(lambda: (lambda p: p if p and p["listHash"] != hash_a and p["cached"] == wanted
                                    else None)(r.warm_progress()),
                           timeout=180, what=f"release B's warm-up on {r.host} ({r.dir / 'warm.log'})")
            assert p["wanted"] == wanted and p["missing"] == [], p
        hash_b = fleet.regs[0].warm_progress()["listHash"]
        assert all(r.warm_progress()["listHash"] == hash_b for r in fleet.regs)
        # B's new blobs came from the upstream while it answered (before the outage below).
        fetched = set(blob_gets(upstream_requests(up, start)))
        assert new_blobs <= fetched, f"not fetched: {sorted(new_blobs - fetched)[:5]}"

        # CacheWarm follows the masters' reports: two of three leave it False, naming the third.
        for n, _ in MASTERS[:2]:
            status = hook(n)
            assert status["warm"] == f"{wanted}/{wanted}" and status["warmListHash"] == hash_b, status
        state, cond = again(gv_b, now + 306)
        assert cond["CacheWarm"]["status"] == "False", cond
        msg = cond["CacheWarm"]["message"]
        assert "m3:" in msg and "m1:" not in msg and "m2:" not in msg, msg
        assert state["cluster"] == "Embedded", state
        status = hook("m3")
        assert status["warm"] == f"{wanted}/{wanted}" and status["warmListHash"] == hash_b, status
        state, cond = again(gv_b, now + 307)
        assert cond["CacheWarm"]["status"] == "True" and state["cluster"] == "Embedded", cond

        # The upstream gone, every master restarted from what its node hook wrote (cache-
        # only): every image of B's list pulls through each master on its own.
        fleet.restart_without_upstream()
        fleet.assert_each_master_serves(list_b, layouts_b)
        ro = secret_data(converge.state, "registry-user-ro")
        for r in fleet.regs:
            p = skopeo("inspect", f"--cert-dir={r.certs}", f"--creds=ro:{ro['password']}", "--raw",
                       f"docker://{r.host}/{REPO}:{RELEASE_B}")
            assert p.returncode == 0, f"{r.host}: the platform tag {RELEASE_B}: {p.stderr.strip()[-400:]}"
    finally:
        fleet.stop()
        up.stop()
