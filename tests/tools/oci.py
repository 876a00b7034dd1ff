"""Builds a small OCI image layout with the standard library only (no daemon)."""
import gzip
import hashlib
import io
import json
import pathlib
import tarfile


def _blob(root: pathlib.Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    path = root / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"sha256:{digest}"


def tar_file(name: str, content: bytes) -> bytes:
    """An uncompressed tar holding one file `name` = content (mtime 0: reproducible)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mtime = len(content), 0
        tar.addfile(info, io.BytesIO(content))
    return raw.getvalue()


def image_layout(root: pathlib.Path, tag: str, layers: list, config: dict | None = None,
                 compresslevel: int = 9):
    """Writes an OCI layout at root holding one image `tag` made of `layers` (tar bytes,
    in order, each gzip-compressed at `compresslevel`), with `config` as the image
    config's `config` object. Returns (manifest digest, [config digest, layer digests...],
    total bytes of config, layers and manifest)."""
    root.mkdir(parents=True, exist_ok=True)
    descs, diff_ids = [], []
    for raw in layers:
        gz = gzip.compress(raw, compresslevel=compresslevel, mtime=0)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": _blob(root, gz),
                      "size": len(gz)})
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": config or {},
                      "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    cd = _blob(root, cfg)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd,
                                      "size": len(cfg)}, "layers": descs}).encode()
    md = _blob(root, manifest)
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": tag}}]}))
    total = sum(d["size"] for d in descs) + len(cfg) + len(manifest)
    return md, [cd] + [d["digest"] for d in descs], total


def build_layout(root: pathlib.Path, tag: str, content: bytes) -> str:
    """Writes an OCI layout at root with one image `tag` holding /hello.txt = content.
    Returns the manifest digest."""
    root.mkdir(parents=True, exist_ok=True)
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(content)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(content))
    raw = tar_bytes.getvalue()
    layer = gzip.compress(raw, mtime=0)
    layer_digest = _blob(root, layer)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]},
        "config": {},
    }).encode()
    config_digest = _blob(root, config)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest,
                    "size": len(layer)}],
    }).encode()
    manifest_digest = _blob(root, manifest)
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (root / "index.json").write_text(json.dumps({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
                       "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": tag}}],
    }))
    return manifest_digest
