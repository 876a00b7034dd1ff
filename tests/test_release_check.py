"""The switch's checks see every image of the running release: every digest of
`global.modulesImages.digests` and the platform image (`global.deckhouseVersion`),
HEAD by digest against a real registry (Debian docker-registry). A registry that lacks
some of them is refused with their count and their names; once they are pushed the
same switch passes. The global values reach the hooks through the converge's
`--global-values`, as Deckhouse gives them in a cluster."""
import os

import yaml

from conftest import module_config, nodes_file
from registry_env import NodeRegistry, secret_data, switch_state
from test_static_pods import node_hook, proxy_settings
from tools.oci import build_layout
from tools.registry import Registry, skopeo

RELEASE = "v1.65.3"


def release(tmp_path, count):
    """`count` small images (OCI layouts, distinct content): [(layout, tag, digest)]."""
    out = []
    for i in range(count):
        layout, tag = tmp_path / "layouts" / f"image-{i}", f"image-{i}"
        out.append((layout, tag, build_layout(layout, tag, f"module image {i}\n".encode())))
    return out


def global_values(tmp_path, base, digests):
    """Deckhouse's global values for a release: `digests` spread over two modules, the
    module's own three images among them (they replace the converge's defaults)."""
    own = ["distribution", "dockerAuth", "manager"]
    modules = {"embeddedRegistry": dict(zip(own, digests[:3])),
               "common": {f"image{i}": d for i, d in enumerate(digests[3:])}}
    path = tmp_path / "global.yaml"
    path.write_text(yaml.safe_dump({"global": {
        "deckhouseVersion": RELEASE,
        "modulesImages": {"registry": {"base": base}, "digests": modules}}}))
    return path


def missing_count_and_names(message):
    """(count, total, names) from `N of M images missing: a, b, and K more`."""
    head, names = message.split(": ", 1)
    count, _, total = head.split(" ")[:3]
    names = names.split("; ")[0].split(", ")
    return int(count), int(total), [n for n in names if not n.startswith("and ")]


def test_proxy_upstream_check_counts_and_names_the_missing_images(tmp_path, converge):
    images = release(tmp_path, 9)
    digests = [d for _, _, d in images]
    step = iter(range(100))
    with Registry(tmp_path / "up") as up:
        gv = global_values(tmp_path, f"{up.host}/deckhouse/ee", digests)

        def run():
            converge(module_config(tmp_path, proxy_settings(up), name=f"mc-{next(step)}.yaml"),
                     nodes_file(tmp_path, [("m1", "127.0.0.11")]), extra=["--global-values", str(gv)])
            return switch_state(converge.state)

        # The release tag and two images are there; seven digests are not.
        release_layout = tmp_path / "layouts" / "release"
        build_layout(release_layout, RELEASE, b"the platform image\n")
        up.push_layout(release_layout, RELEASE, f"deckhouse/ee:{RELEASE}")
        for layout, tag, _ in images[:2]:
            up.push_layout(layout, tag, f"deckhouse/ee:{tag}")
        state, cond = run()
        assert cond["ChecksPassed"]["status"] == "False", cond
        assert cond["ChecksPassed"]["reason"] == "CheckManifestUnknown", cond
        assert state["registry"] is None, "a registry whose upstream lacks images is never rendered"
        check = converge.values()["embeddedRegistry"]["internal"]["switch"]["check"]
        assert (check["what"], check["ok"], check["kind"]) == ("upstream", False, "manifest-unknown")
        count, total, names = missing_count_and_names(check["message"])
        absent = sorted(digests[2:])
        assert (count, total) == (7, 10), check["message"]
        assert names == [f"{up.host}/deckhouse/ee@{d}" for d in absent[:5]], check["message"]
        assert check["message"].endswith(", and 2 more"), check["message"]
        assert "Pa55word" not in check["message"] + converge.output
        # The same input again: the same refusal, nothing changed.
        assert run()[1]["ChecksPassed"]["message"] == cond["ChecksPassed"]["message"]

        # Every image pushed: the same switch passes.
        for layout, tag, _ in images[2:]:
            up.push_layout(layout, tag, f"deckhouse/ee:{tag}")
        state, cond = run()
        assert cond["ChecksPassed"]["status"] == "True", cond
        assert "10 image(s) found" in cond["ChecksPassed"]["message"], cond
        assert state["registry"]["mode"] == "Proxy"


def test_detached_mirror_check_counts_the_missing_images_then_passes(tmp_path, converge):
    """The mirror holds the release tag first, then every digest (pushed by the rw user
    as `d8 mirror push` would): the switch waits with the count, then proceeds."""
    ip = f"127.0.85.{20 + os.getpid() % 200}"
    images = release(tmp_path, 6)
    digests = [d for _, _, d in images]
    # The mirror's repository is the path of global.modulesImages.registry.base.
    gv = global_values(tmp_path, "registry.deckhouse.io/deckhouse/ce", digests)
    detached = {"mode": "Detached", "detached": {"storageMode": "Fs"}}
    step = iter(range(100))

    def run():
        converge(module_config(tmp_path, detached, name=f"mc-{next(step)}.yaml"), nodes_file(tmp_path, [("m1", ip)]),
                 extra=["--global-values", str(gv)])
        return switch_state(converge.state)

    run()
    root = tmp_path / "host-m1"
    node_hook(tmp_path, converge.state, "m1", root)
    with NodeRegistry(converge.state, "m1", tmp_path / "run-m1", host_root=root) as reg:
        rw = secret_data(converge.state, "registry-user-rw")["password"]

        def push(layout, tag):
            p = skopeo("copy", f"--dest-cert-dir={reg.certs}", f"--dest-creds=rw:{rw}", "--preserve-digests",
                       f"oci:{layout}:{tag}", f"docker://{reg.host}/deckhouse/ce:{tag}")
            assert p.returncode == 0, p.stderr

        node_hook(tmp_path, converge.state, "m1", root)
        release_layout = tmp_path / "layouts" / "release"
        build_layout(release_layout, RELEASE, b"the platform image\n")
        push(release_layout, RELEASE)
        push(*images[0][:2])
        _, cond = run()
        assert cond["ChecksPassed"]["status"] == "False", cond
        assert cond["Ready"]["reason"] == "MirrorIncomplete", cond
        check = converge.values()["embeddedRegistry"]["internal"]["switch"]["check"]
        assert (check["what"], check["kind"]) == ("mirror", "manifest-unknown"), check
        count, total, names = missing_count_and_names(check["message"])
        assert (count, total) == (5, 7), check["message"]
        assert names == [f"{reg.host}/deckhouse/ce@{d}" for d in sorted(digests[1:])], check["message"]
        assert rw not in check["message"] + converge.output

        for layout, tag, _ in images[1:]:
            push(layout, tag)
        _, cond = run()
        assert cond["ChecksPassed"]["status"] == "True", cond
        assert "7 image(s) found" in cond["ChecksPassed"]["message"], cond
        assert cond["Ready"]["reason"] != "MirrorIncomplete", cond
