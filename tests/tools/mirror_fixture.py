"""A Deckhouse-like mirror in a real registry (tools.registry.Registry, with TLS and
token auth), built with umoci and pushed with skopeo.

Layout under ROOT (= deckhouse/ee):
- ROOT:<vX.Y.Z>: release images; each holds deckhouse/version and
  deckhouse/modules/images_digests.json ({module: {image: "sha256:..."}}); all share
  one base layer. Some releases are multi-arch indexes (amd64 + arm64).
- ROOT@sha256:...: module images pushed by digest only (no tag), shared between
  releases; cosign-style signature tags sha256-<hex>.sig for some.
- ROOT/install, ROOT/install-standalone: one tag per release.
- ROOT/release-channel:<channel>: an image whose version.json names a release.
"""
import hashlib
import json
import pathlib
import random
import subprocess

from tools.registry import Registry

ROOT = "deckhouse/ee"
OLD = "2024-01-02T03:04:05Z"  # build time of fixture images: far older than any min-age


def umoci(*args):
    p = subprocess.run(["umoci", *args], capture_output=True, text=True)
    assert p.returncode == 0, f"umoci {args}: {p.stderr}"
    return p.stdout


def noise(seed: str, size: int) -> bytes:
    """Deterministic incompressible bytes: layers have real sizes on disk."""
    return random.Random(seed).randbytes(size)


class Builder:
    """Builds images into one OCI layout with umoci; every image's build time is OLD."""

    def __init__(self, workdir: pathlib.Path):
        self.dir = workdir
        self.layout = workdir / "layout"
        umoci("init", "--layout", str(self.layout))
        umoci("new", "--image", f"{self.layout}:empty")
        base = self._files("base", {"opt/base/shared.bin": noise("base", 256 * 1024)})
        umoci("insert", "--image", f"{self.layout}:empty", "--tag", "base", str(base / "opt"), "/opt")
        self._count = 0

    def _files(self, name, files):
        root = self.dir / "src" / name
        for path, content in files.items():
            p = root / path
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content)
        return root

    def image(self, name, files, arch="amd64", base="base"):
        """An image = base + one layer with `files` (paths relative to /); returns its
        manifest digest (tag `name` in the layout)."""
        src = self._files(name, files)
        tops = sorted({pathlib.Path(p).parts[0] for p in files})
        current = base
        for i, top in enumerate(tops):
            umoci("insert", "--image", f"{self.layout}:{current}", "--tag", name, str(src / top), f"/{top}")
            current = name
        umoci("config", "--image", f"{self.layout}:{name}", "--created", OLD, "--architecture", arch,
              "--history.created", OLD)
        return self.digest(name)

    def index(self, name, children):
        """A multi-arch index `name` over the images `children` (tags in the layout)."""
        idx = json.loads((self.layout / "index.json").read_text())
        by_tag = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in idx["manifests"]}
        manifests = []
        for tag in children:
            m = by_tag[tag]
            cfg_digest = json.loads(self.blob(m["digest"]))["config"]["digest"]
            arch = json.loads(self.blob(cfg_digest))["architecture"]
            manifests.append({"mediaType": m["mediaType"], "digest": m["digest"], "size": m["size"],
                              "platform": {"architecture": arch, "os": "linux"}})
        body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                           "manifests": manifests}).encode()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        (self.layout / "blobs" / "sha256" / digest[7:]).write_bytes(body)
        idx["manifests"] = [m for m in idx["manifests"]
                            if m["annotations"]["org.opencontainers.image.ref.name"] != name]
        idx["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest,
                                 "size": len(body), "annotations": {"org.opencontainers.image.ref.name": name}})
        (self.layout / "index.json").write_text(json.dumps(idx))
        return digest

    def blob(self, digest):
        return (self.layout / "blobs" / "sha256" / digest[7:]).read_bytes()

    def digest(self, tag):
        idx = json.loads((self.layout / "index.json").read_text())
        for m in idx["manifests"]:
            if m["annotations"]["org.opencontainers.image.ref.name"] == tag:
                return m["digest"]
        raise KeyError(tag)


RELEASES = ["v1.60.0", "v1.61.0", "v1.62.0", "v1.63.0", "v1.64.0", "v1.65.0"]
MULTI_ARCH = {"v1.60.0", "v1.65.0"}
# module image -> releases listing it
MODULES = {
    "common": RELEASES,
    "mod-a-v1": ["v1.60.0", "v1.61.0", "v1.62.0"],
    "mod-b-v1": ["v1.60.0", "v1.62.0"],
    "mod-b-v2": ["v1.61.0", "v1.63.0", "v1.64.0", "v1.65.0"],
    "mod-c-old": ["v1.60.0"],
    "mod-c-new": ["v1.62.0", "v1.63.0", "v1.64.0", "v1.65.0"],
}
SIGNED = ["mod-c-old", "mod-c-new"]
CHANNELS = {"alpha": "v1.65.0", "beta": "v1.64.0", "early-access": "v1.64.0", "stable": "v1.61.0",
            "rock-solid": "v1.61.0"}


def build_mirror(reg: Registry, workdir: pathlib.Path, releases=RELEASES, modules=MODULES,
                 without_digests=()):
    """Builds and pushes the mirror; returns what was pushed:
    {"releases": {tag: digest}, "children": {tag: [digests]}, "modules": {name: digest},
     "signatures": {name: (tag, digest)}, "install": {repo: {tag: digest}}, "channels": {name: digest}}"""
    b = Builder(workdir)
    out = {"releases": {}, "children": {}, "modules": {}, "signatures": {}, "install": {}, "channels": {}}
    for name in modules:
        d = b.image(name, {f"app/{name}.bin": noise(name, 64 * 1024)})
        reg.push_layout(b.layout, name, ROOT, by_digest=d)
        out["modules"][name] = d
    for name in SIGNED:
        if name not in modules:
            continue
        subject = out["modules"][name]
        tag = f"sha256-{subject[7:]}.sig"
        d = b.image(f"sig-{name}", {"signature/payload.json": json.dumps({"critical": {"image": {
            "docker-manifest-digest": subject}}}).encode()}, base="empty")
        reg.push_layout(b.layout, f"sig-{name}", f"{ROOT}:{tag}")
        out["signatures"][name] = (tag, d)
    for rel in releases:
        files = {"deckhouse/version": rel.encode(), "deckhouse/release.bin": noise(rel, 128 * 1024)}
        if rel not in without_digests:
            digests = {m.replace("-", "_"): {"image": d} for m, d in out["modules"].items() if rel in modules[m]}
            files["deckhouse/modules/images_digests.json"] = json.dumps(digests).encode()
        if rel in MULTI_ARCH:
            kids = [b.image(f"{rel}-{a}", files, arch=a) for a in ("amd64", "arm64")]
            out["children"][rel] = kids
            d = b.index(rel, [f"{rel}-amd64", f"{rel}-arm64"])
            reg.push_layout(b.layout, rel, f"{ROOT}:{rel}", all_images=True)
        else:
            d = b.image(rel, files)
            reg.push_layout(b.layout, rel, f"{ROOT}:{rel}")
        out["releases"][rel] = d
        for repo in ("install", "install-standalone"):
            name = f"{repo}-{rel}"
            di = b.image(name, {f"{repo}/installer.bin": noise(name, 32 * 1024)})
            reg.push_layout(b.layout, name, f"{ROOT}/{repo}:{rel}")
            out["install"].setdefault(repo, {})[rel] = di
    for ch, version in CHANNELS.items():
        if version not in releases:
            continue
        name = f"channel-{ch}"
        d = b.image(name, {"version.json": json.dumps({"version": version, "suspend": False}).encode()},
                    base="empty")
        reg.push_layout(b.layout, name, f"{ROOT}/release-channel:{ch}")
        out["channels"][ch] = d
    return out
