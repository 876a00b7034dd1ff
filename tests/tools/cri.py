"""A containerd of its own with the CRI plugin, to make image pulls exactly as kubelet
makes them (CRI `runtime.v1.ImageService/PullImage`, credentials from an image pull
Secret in `auth` with `server_address` empty): proves that credentials from the
cluster's pull Secret reach the registry mirrors that containerd's hosts.toml files
(`config_path`) point at. The CRI messages are built from a minimal descriptor (field
numbers as in the CRI api.proto), no generated code."""
import pathlib
import shutil
import subprocess
import tempfile
import time

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from tools.processes import Service, stop

_F = descriptor_pb2.FieldDescriptorProto
_S, _M, _REP = _F.TYPE_STRING, _F.TYPE_MESSAGE, _F.LABEL_REPEATED
# name -> [(field, number, type, message type or None, label or None)], as in api.proto.
_MESSAGES = {
    "ImageSpec": [("image", 1, _S, None, None),
                  ("annotations", 2, _M, ".runtime.v1.ImageSpec.AnnotationsEntry", _REP)],
    "AuthConfig": [("username", 1, _S, None, None), ("password", 2, _S, None, None),
                   ("auth", 3, _S, None, None), ("server_address", 4, _S, None, None),
                   ("identity_token", 5, _S, None, None), ("registry_token", 6, _S, None, None)],
    # sandbox_config = 3 (PodSandboxConfig) left out: kubelet's pulls work without it.
    "PullImageRequest": [("image", 1, _M, ".runtime.v1.ImageSpec", None),
                         ("auth", 2, _M, ".runtime.v1.AuthConfig", None)],
    "PullImageResponse": [("image_ref", 1, _S, None, None)],
}


def _classes():
    fp = descriptor_pb2.FileDescriptorProto(name="cri_min.proto", package="runtime.v1", syntax="proto3")
    for name, fields in _MESSAGES.items():
        msg = fp.message_type.add(name=name)
        for fname, number, ftype, type_name, label in fields:
            msg.field.add(name=fname, number=number, type=ftype, label=label or _F.LABEL_OPTIONAL,
                          **({"type_name": type_name} if type_name else {}))
    entry = fp.message_type[0].nested_type.add(name="AnnotationsEntry")
    entry.options.map_entry = True
    for fname, number in (("key", 1), ("value", 2)):
        entry.field.add(name=fname, number=number, type=_S, label=_F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fp)
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"runtime.v1.{n}")) for n in _MESSAGES}


_MSG = _classes()
_IMAGES = "/runtime.v1.ImageService/"


class CriError(RuntimeError):
    """A CRI call failed; the message carries the gRPC status code and details."""


class CriContainerd(Service):
    """containerd with root, state, socket and log (`containerd.log`) under `root`, the
    CRI plugin on the `native` snapshotter and registry `config_path = hosts_dir`
    (`<hosts_dir>/<host[:port]>/hosts.toml`). A context manager: starts, then stops."""

    def __init__(self, root: pathlib.Path, hosts_dir: pathlib.Path):
        self.root = pathlib.Path(root).resolve()
        self.hosts_dir = pathlib.Path(hosts_dir).resolve()
        self.socket = self.root / "containerd.sock"
        self._socket_dir = None
        if len(str(self.socket)) > 90:  # unix socket paths are limited to 108 bytes (+ ".ttrpc")
            self._socket_dir = tempfile.mkdtemp(prefix="cri-")
            self.socket = pathlib.Path(self._socket_dir) / "c.sock"
        self.proc = None
        self.channel = None

    def config(self) -> str:
        """The containerd config.toml (version 2) this daemon runs with."""
        off = [f"io.containerd.snapshotter.v1.{s}" for s in ("aufs", "btrfs", "zfs", "devmapper")]
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        return "\n".join([
            "version = 2", f'root = "{self.root}/root"', f'state = "{self.root}/state"',
            f"disabled_plugins = {off!r}".replace("'", '"'),
            "[grpc]", f'address = "{self.socket}"',
            '[plugins."io.containerd.internal.v1.opt"]', f'path = "{self.root}/opt"',
            f"[{cri}.containerd]", 'snapshotter = "native"',
            f"[{cri}.cni]", f'conf_dir = "{self.root}/cni"',  # none: pod networking is unused here
            f"[{cri}.registry]", f'config_path = "{self.hosts_dir}"', ""])

    def start(self, timeout: float = 30.0):
        """Starts containerd and waits until CRI ListImages answers."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "config.toml").write_text(self.config())
        with open(self.root / "containerd.log", "w") as log:
            self.proc = subprocess.Popen(["containerd", "--config", str(self.root / "config.toml")],
                                         stdout=log, stderr=subprocess.STDOUT)
        self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        list_images = self.channel.unary_unary(_IMAGES + "ListImages", request_serializer=lambda _: b"",
                                               response_deserializer=lambda b: b)
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CriError(f"containerd exited {self.proc.returncode}:\n{self.log()}")
            try:
                list_images(None, timeout=2)
                return self
            except grpc.RpcError as e:
                last = f"{e.code().name}: {e.details()}"
            time.sleep(0.05)
        self.stop()
        raise CriError(f"CRI not ready in {timeout}s ({last}):\n{self.log()}")

    def pull(self, image: str, username: str | None = None, password: str | None = None,
             timeout: float = 120.0) -> str:
        """CRI PullImage as kubelet makes it with pull Secret credentials (server_address
        empty); returns image_ref, raises CriError with the gRPC message on failure."""
        req = _MSG["PullImageRequest"](image=_MSG["ImageSpec"](image=image))
        if username is not None or password is not None:
            req.auth.CopyFrom(_MSG["AuthConfig"](username=username or "", password=password or ""))
        call = self.channel.unary_unary(_IMAGES + "PullImage", request_serializer=lambda m: m.SerializeToString(),
                                        response_deserializer=_MSG["PullImageResponse"].FromString)
        try:
            return call(req, timeout=timeout).image_ref
        except grpc.RpcError as e:
            raise CriError(f"PullImage {image}: {e.code().name}: {e.details()}") from None

    def log(self) -> str:
        """containerd's log so far."""
        return (self.root / "containerd.log").read_text(errors="replace")

    def stop(self):
        """Terminates containerd and waits for it (kills it after 10 s)."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is not None and self.proc.poll() is None:
            stop(self.proc)
        self.proc = None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
