"""The next release is warm before its rollout (issue 14, item 3's last gap, and its
proof "the new images are cached on every master before the values that make the
cluster use them are applied"; docs/internal/mode-switching.md, "A warm cache").

Three Proxy masters behind a real upstream, switched and warm for release A. Deckhouse
announces release B as a `DeckhouseRelease` in phase `Pending` (the cluster state of
the converge); B's platform image (its `deckhouse/modules/images_digests.json` in a
layer) and B's module images are in the upstream, and nothing else names them: the
global values still name A. Real components: the upstream and the masters are
Debian's docker-registry run from exactly what the node hook wrote, the masters'
`warm` containers are the module's binary, containerd's CRI and skopeo are the clients.

- The converge (hook `next-release`) puts B into `internal.warm.next`; a hostile
  `DeckhouseRelease` beside it is refused and reaches no value or file. Release C is
  announced too, its platform image holding a 5 MiB digests file: each master refuses
  it in one line (`warmNextProblem: v1.4.0: digests-file`) and warms B all the same.
- The node hooks hand the list to the running warm containers (no restart); each
  caches B's platform image, reads B's list from it, caches every B image, and
  reports `warmNext: n/n` for B, while `CacheWarm` (about A) stays True and its
  message says B is cached on every master.
- Then the upstream stops, every master restarts cache-only, and only then does the
  converge get B's global values (the rollout): it passes, the warm containers count
  B's list cached at once (the hash reported ahead is the one of the rollout's list),
  `CacheWarm` turns True, and every B image pulls through the masters with
  containerd's CRI and from each master on its own with skopeo."""
import base64
import json
import time

import yaml

from registry_env import rendered_secret
from release_fleet import ReleaseFleet
from test_static_pods import node_hosts, pull_credentials
from test_warm_cache import MASTERS, REPO, global_values, push_release, warm_blob_gets, warm_done
from tools.oci import image_layout, tar_file
from tools.processes import wait_until
from tools.registry import Registry

RELEASE_A = "v1.2.3"
RELEASE_B = "v1.3.0"
RELEASE_C = "v1.4.0"  # announced too, its digests file beyond the 4 MiB cap


def deckhouse_release(state, name, version, phase):
    """A DeckhouseRelease in the converge's cluster state, as Deckhouse creates it."""
    path = state / "objects/_cluster/DeckhouseRelease" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "apiVersion": "deckhouse.io/v1alpha1", "kind": "DeckhouseRelease",
        "metadata": {"name": name, "annotations": {"release.deckhouse.io/notified": "false"}},
        "spec": {"version": version, "changelog": {"x": {"fixes": ["..."]}}},
        "status": {"phase": phase, "message": ""}}))


def push_platform(up, tmp_path, release, modules, raw=None):
    """The platform image `release` with Deckhouse's digests file in its top layer
    (module -> image -> digest, as `global.modulesImages.digests` will name them; `raw`:
    these bytes instead). Returns its manifest digest."""
    digests_file = raw if raw is not None else json.dumps(modules).encode()
    layers = [tar_file("bin/deckhouse", f"deckhouse {release}\n".encode() * 100),
              tar_file("deckhouse/modules/images_digests.json", digests_file)]
    layout = tmp_path / "layouts" / f"platform-{release}"
    md, _, _ = image_layout(layout, release, layers, config={"Labels": {"release": release}})
    up.push_layout(layout, release, f"{REPO}:{release}")
    return md


def test_the_next_release_is_cached_on_every_master_before_its_rollout_and_serves_without_the_upstream(
        tmp_path, converge):
    from tools.cri import CriContainerd, CriError

    up = Registry(tmp_path / "up").start()
    fleet = ReleaseFleet(tmp_path, converge, up)
    again, hook = fleet.again, fleet.hook
    try:
        digests_a, _, _, _ = push_release(up, tmp_path, release=RELEASE_A)
        gv_a = global_values(tmp_path, up, digests_a)

        # Release A: switched and warm.
        wanted = len(digests_a) + 1
        now = int(time.time())
        deckhouse_release(converge.state, "v1-2-3", RELEASE_A, "Deployed")
        fleet.first_converge(gv_a, wanted, now)
        assert "warm" not in converge.values()["embeddedRegistry"]["internal"], "no release announced"
        hash_a = fleet.warm_and_switch(gv_a, wanted, now)
        manifests = {n: fleet.manifest(n) for n, _ in MASTERS}

        # Release B on the upstream: new module images (the module's own unchanged) and a
        # platform image naming them in its digests file. Deckhouse announces it.
        digests_b, _, _, layouts_b = push_release(up, tmp_path, release=RELEASE_B)
        own = {"distribution": digests_a["image0"], "dockerAuth": digests_a["image1"], "manager": digests_a["image2"]}
        gv_b = global_values(tmp_path, up, digests_b, release=RELEASE_B, own=own)
        modules_b = yaml.safe_load(gv_b.read_text())["modulesImages"]["digests"]
        platform_b = push_platform(up, tmp_path, RELEASE_B, modules_b)
        list_b = sorted({d for m in modules_b.values() for d in m.values()}) + [platform_b]
        assert len(list_b) == wanted
        deckhouse_release(converge.state, "v1-3-0", RELEASE_B, "Pending")
        # C: a hostile platform image (a 5 MiB digests file), announced as well.
        push_platform(up, tmp_path, RELEASE_C, None, raw=b"{" + b" " * (5 << 20) + b"}")
        deckhouse_release(converge.state, "v1-4-0", RELEASE_C, "Pending")
        deckhouse_release(converge.state, "evil", "v1.3.0/../../../etc", "Pending")
        deckhouse_release(converge.state, "v1-9-9", "v1.9.9", "Suspended")

        state, cond = again(gv_a, now + 305)
        values = converge.values()
        assert values["embeddedRegistry"]["internal"]["warm"] == {"next": [RELEASE_B, RELEASE_C]}, values[
            "embeddedRegistry"]
        assert values["global"]["deckhouseVersion"] == RELEASE_A, "the cluster still runs A"
        assert "../" not in json.dumps(values["embeddedRegistry"]), "a hostile version reached the values"
        assert state["cluster"] == "Embedded" and cond["CacheWarm"]["status"] == "True", cond
        listed = json.loads(base64.b64decode(rendered_secret(converge.state, "m1")["data"]["config.warm-images.json"]))
        assert listed["next"] == [RELEASE_B, RELEASE_C] and listed["deckhouseVersion"] == RELEASE_A, listed

        # The node hooks write the list (the static pod unchanged: no restart); before a
        # pass over B, each master wants B's platform image and holds nothing of it.
        for n, _ in MASTERS:
            status = hook(n)
            assert status["warmNextVersion"] == f"{RELEASE_B} {RELEASE_C}" and status["warmNext"] == "0/1 0/1", status
            assert status["warm"] == f"{wanted}/{wanted}", "A's progress stands"
            assert fleet.manifest(n) == manifests[n]

        def next_of(r, version):
            return next((n for n in (r.warm_progress() or {}).get("next", []) if n["version"] == version), {})

        def next_done(r):
            n = next_of(r, RELEASE_B)
            return n if n.get("cached") == wanted == n.get("wanted") and next_of(r, RELEASE_C) else None
        ahead = {}
        for r in fleet.regs:
            ahead[r.host] = wait_until(lambda: next_done(r), timeout=240,
                                       what=f"release B's warm-up ahead on {r.host} ({r.dir / 'warm.log'})")
            assert ahead[r.host]["missing"] == [] and "problem" not in ahead[r.host], ahead[r.host]
            # C's digests file is refused in one line; its images are not guessed.
            assert next_of(r, RELEASE_C)["problem"] == "digests-file", next_of(r, RELEASE_C)
            assert "more than 4194304: not a digests file" in r.warm_log(), r.warm_log()[-2000:]
            asked = warm_blob_gets(r)
            assert sorted(asked) == sorted(set(asked)), "a blob asked for twice (the platform image's included)"
        hashes = {p["listHash"] for p in ahead.values()}
        assert len(hashes) == 1 and hash_a not in hashes, ahead
        for n, _ in MASTERS:
            status = hook(n)
            assert status["warmNext"] == f"{wanted}/{wanted} 1/1", status
            assert status["warmNextProblem"] == f"{RELEASE_C}: digests-file", status
        # CacheWarm (about A, the running release) tells the operator B is ready.
        state, cond = again(gv_a, now + 305)
        assert cond["CacheWarm"]["status"] == "True", cond
        msg = cond["CacheWarm"]["message"]
        assert f"; next release {RELEASE_B}: cached on every master; next release {RELEASE_C}: not yet cached on " \
               f"{MASTERS[0][0]}: digests-file" in msg, msg

        # The upstream stops and every master restarts cache-only, before any value names B.
        assert converge.values()["global"]["deckhouseVersion"] == RELEASE_A
        fleet.restart_without_upstream()

        # The rollout: Deckhouse deployed B and applies its values.
        deckhouse_release(converge.state, "v1-2-3", RELEASE_A, "Superseded")
        deckhouse_release(converge.state, "v1-3-0", RELEASE_B, "Deployed")
        state, cond = again(gv_b, now + 306)
        assert state["cluster"] == "Embedded", f"the rollout moved the cluster off the masters: {state}"
        assert converge.values()["embeddedRegistry"]["internal"]["warm"] == {"next": [RELEASE_C]}, "B runs: C is next"
        for n, _ in MASTERS:
            hook(n)
        # The list the masters warmed ahead is the rollout's list: counted cached at once.
        for r in fleet.regs:
            p = wait_until(lambda: (lambda p: p if p and p["listHash"] != hash_a else None)(warm_done(r, wanted)),
                           timeout=120, what=f"B's pass on {r.host} cache-only ({r.dir / 'warm.log'})")
            assert p["listHash"] in hashes and p["unavailable"] == 0, p
        for n, _ in MASTERS:
            status = hook(n)
            assert status["warm"] == f"{wanted}/{wanted}" and status["warmListHash"] in hashes, status
            assert status["warmNextVersion"] == RELEASE_C, status
        state, cond = again(gv_b, now + 307)
        assert cond["CacheWarm"]["status"] == "True" and state["cluster"] == "Embedded", cond

        # Every B image through the masters with containerd's CRI and the pull Secret's
        # credentials, and from each master on its own; the upstream is down throughout.
        hosts, _ = node_hosts(converge.state, tmp_path / "node")
        address = json.loads((converge.state / "values.json").read_text())["embeddedRegistry"]["internal"][
            "switch"]["pullAddress"]
        user, pw = pull_credentials(converge.state)
        with CriContainerd(tmp_path / "cri", hosts) as cri:
            for d in list_b:
                try:
                    assert cri.pull(f"{address}/{REPO}@{d}", user, pw).startswith("sha256:"), d
                except CriError as e:
                    raise AssertionError(f"CRI pull {d}: {e}\n" + "\n".join(r.served() for r in fleet.regs)) from e
            assert cri.pull(f"{address}/{REPO}:{RELEASE_B}", user, pw).startswith("sha256:")
        fleet.assert_each_master_serves(list_b, layouts_b)
    finally:
        fleet.stop()
        up.stop()
