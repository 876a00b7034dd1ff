"""A real Garage (the S3 store, `cargo install --locked garage`, 2.5.0) on loopback for
the tests: one node (replication_factor 1) or three nodes on 127.0.0.1, .2 and .3 with
their own ports, metadata and data directories (replication_factor 3). The cluster is
set up the way an admin does it (`garage node connect`, `layout assign/apply`, `bucket
create`, `key create`, `bucket allow`); readiness is polled with a bound, never slept.

Garage's S3 API has no TLS of its own: `TlsFront` is a small TLS terminator (Python
`ssl` and one byte-pump thread per direction) put in front of it for the `tls-*` cases.
"""
import contextlib
import os
import pathlib
import re
import secrets
import select
import shutil
import socket
import ssl
import subprocess
import threading

from tools.processes import free_port, wait_until

REGION = "garage"


def garage_bin():
    """The garage binary: $GARAGE_BIN, on PATH, or ~/.cargo/bin/garage; None if absent."""
    for c in [os.environ.get("GARAGE_BIN"), shutil.which("garage"),
              str(pathlib.Path.home() / ".cargo" / "bin" / "garage")]:
        if c and pathlib.Path(c).is_file() and os.access(c, os.X_OK):
            return c
    return None


# Garage's pace: a cluster layout takes seconds to reach every node.
WAIT = {"timeout": 60.0, "interval": 0.1}


class Node:
    """One Garage server process."""

    def __init__(self, root: pathlib.Path, index: int, host: str, rpc_secret: str, replication: int):
        self.root, self.index, self.host = root / f"node{index}", index, host
        self.root.mkdir(parents=True)
        self.rpc_secret, self.replication = rpc_secret, replication
        self.config = self.root / "garage.toml"
        self.proc = None
        self.node_id = None
        self.pick_ports()

    def pick_ports(self):
        """Chooses free ports and writes the configuration (again after a port was taken
        between the choice and Garage's bind: `free_port` cannot hold a port)."""
        host, rpc_secret, replication = self.host, self.rpc_secret, self.replication
        self.s3_port, self.rpc_port, self.admin_port = (free_port(host) for _ in range(3))
        self.config.write_text(f"""
metadata_dir = "{self.root / 'meta'}"
data_dir = "{self.root / 'data'}"
db_engine = "sqlite"
replication_factor = {replication}
rpc_bind_addr = "{host}:{self.rpc_port}"
rpc_public_addr = "{host}:{self.rpc_port}"
rpc_secret = "{rpc_secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "{host}:{self.s3_port}"

[admin]
api_bind_addr = "{host}:{self.admin_port}"
""")

    @property
    def endpoint(self):
        return f"http://{self.host}:{self.s3_port}"

    def start(self, garage):
        log = open(self.root / "garage.log", "ab")
        env = {"PATH": "/usr/bin:/bin", "RUST_LOG": "garage=warn", "HOME": str(self.root)}
        self.proc = subprocess.Popen([garage, "-c", str(self.config), "server"], stdout=log,
                                     stderr=subprocess.STDOUT, env=env)
        log.close()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.running():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)

    def log(self):
        p = self.root / "garage.log"
        return p.read_text(errors="replace")[-4000:] if p.exists() else ""


class Garage:
    """A Garage cluster of `nodes` nodes (1 or 3), as a context manager."""

    def __init__(self, root: pathlib.Path, nodes: int = 1):
        self.garage = garage_bin()
        if self.garage is None:
            raise RuntimeError("garage is not installed: run scripts/setup (cargo install --locked garage)")
        rpc_secret = secrets.token_hex(32)
        hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3"][:nodes]
        self.nodes = [Node(root, i, h, rpc_secret, nodes) for i, h in enumerate(hosts)]

    # --- the admin CLI, through the first running node's configuration ---
    def cli(self, *args, node=None, check=True):
        n = node or next(x for x in self.nodes if x.running())
        p = subprocess.run([self.garage, "-c", str(n.config), *args], capture_output=True, text=True,
                           timeout=60, env={"PATH": "/usr/bin:/bin", "RUST_LOG": "error"})
        if check and p.returncode != 0:
            raise RuntimeError(f"garage {' '.join(args)}: rc {p.returncode}: {p.stderr.strip()[-2000:]}")
        return p

    def __enter__(self):
        try:
            for n in self.nodes:
                n.start(self.garage)
            for n in self.nodes:
                n.node_id = self._answering(n)
            first = self.nodes[0]
            for n in self.nodes[1:]:
                wait_until(lambda n=n: self.cli("node", "connect", f"{n.node_id}@{n.host}:{n.rpc_port}",
                                                node=first, check=False).returncode == 0,
                           what=f"garage node {n.index} to join", **WAIT)
            for n in self.nodes:
                wait_until(lambda n=n: self._running_all() and self.cli(
                    "layout", "assign", "-z", "dc1", "-c", "1G", n.node_id, node=first,
                    check=False).returncode == 0, what=f"layout assign of garage node {n.index}", **WAIT)
            self.cli("layout", "apply", "--version", "1", node=first)
            return self
        except BaseException:
            self.stop()
            raise

    def _answering(self, n, attempts=3):
        """Waits for node `n` to answer and returns its id. A node that exits because a
        chosen port was taken meanwhile is restarted on new ports, at most `attempts` times."""
        for attempt in range(attempts):
            def up():
                if not n.running():
                    return "exited"
                p = self.cli("node", "id", "-q", node=n, check=False)
                return p if p.returncode == 0 else None
            out = wait_until(up, what=f"garage node {n.index} to answer", **WAIT)
            if out != "exited":
                return out.stdout.strip().splitlines()[-1].split("@")[0]
            if "in use" not in n.log() or attempt == attempts - 1:
                raise AssertionError(f"garage node {n.index} exited:\n{n.log()}")
            n.stop()
            n.pick_ports()
            n.start(self.garage)
        raise AssertionError("unreachable")

    def _running_all(self):
        for n in self.nodes:
            if not n.running():
                raise AssertionError(f"garage node {n.index} exited:\n{n.log()}")
        return True

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        for n in self.nodes:
            n.stop()

    def stop_node(self, index):
        """Stops node `index` alone (an outage of one server): the others keep the
        layout, and with three nodes a quorum of two keeps reads and writes going."""
        n = self.nodes[index]
        n.stop()
        assert not n.running(), f"garage node {index} still runs"

    def failed_nodes(self):
        """The ids (16 hex digits) `garage status` lists under FAILED NODES, asked of
        the first running node."""
        out = self.cli("status").stdout
        if "==== FAILED NODES ====" not in out:
            return []
        tail = out.split("==== FAILED NODES ====", 1)[1].split("====", 1)[0]
        return [line.split()[0] for line in tail.splitlines()
                if re.fullmatch(r"[0-9a-f]{16}", (line.split() or [""])[0])]

    # --- buckets and keys ---
    def create_bucket(self, name):
        # The layout reaches every node asynchronously: retry until the quorum takes it.
        wait_until(lambda: self.cli("bucket", "create", name, check=False).returncode == 0
                   or "already exists" in self.cli("bucket", "info", name, check=False).stdout,
                   what=f"bucket {name}", **WAIT)

    def create_key(self, name):
        """A new key: (key id, secret)."""
        out = self.cli("key", "create", name).stdout
        kid = re.search(r"Key ID:\s*(GK[0-9a-f]+)", out)
        sec = re.search(r"Secret key:\s*([0-9a-f]{64})", out)
        if not (kid and sec):
            raise AssertionError(f"unexpected `garage key create` output shape:\n{out[:300].replace(sec.group(1) if sec else '-', '***')}")
        return kid.group(1), sec.group(1)

    def allow(self, bucket, key_id, read=True, write=True):
        flags = (["--read"] if read else []) + (["--write"] if write else [])
        self.cli("bucket", "allow", *flags, bucket, "--key", key_id)

    def endpoint(self, index=0):
        return self.nodes[index].endpoint


class TlsFront:
    """A TLS terminator on 127.0.0.1: accepts TLS with (cert, key), forwards the bytes to
    `backend` (host, port) in plain TCP. Context manager."""

    def __init__(self, backend, cert, key):
        self.backend = backend
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert), str(key))
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def endpoint(self):
        return f"https://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.sock.close()
        self.thread.join(timeout=10)

    def _serve(self):
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        conn.settimeout(30)
        try:
            tls = self.ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            conn.close()  # the client refused the certificate: that is the test's point
            return
        try:
            back = socket.create_connection(self.backend, timeout=30)
        except OSError:
            tls.close()
            return
        # One thread per connection owns both sockets: an SSL object must never be read
        # and written from two threads at once (OpenSSL is not safe for that, and under
        # load it cut responses short). Bytes already decrypted sit in the SSL buffer,
        # where select() cannot see them, so `pending()` is asked first.
        try:
            while not self.stopped.is_set():
                ready = [tls] if tls.pending() else select.select([tls, back], [], [], 1.0)[0]
                for src in ready:
                    data = src.recv(65536)
                    if not data:
                        return
                    (back if src is tls else tls).sendall(data)
        except OSError:
            pass
        finally:
            tls.close()
            back.close()


@contextlib.contextmanager
def bucket_store(root: pathlib.Path, bucket: str, nodes: int = 1):
    """A running Garage of `nodes` nodes under `root` with `bucket` and a key `registry`
    allowed to read and write it (`.key`: its id and secret). Fails the test when garage
    is not installed."""
    if garage_bin() is None:
        import pytest
        pytest.fail("garage is not installed: run scripts/setup (cargo install --locked garage)")
    with Garage(root, nodes=nodes) as g:
        g.create_bucket(bucket)
        g.key = g.create_key("registry")
        g.allow(bucket, g.key[0])
        yield g


def s3_settings(garage, bucket, endpoint=None, **extra):
    """The module's `s3` settings for `bucket` on a `bucket_store` with its key: Garage's
    region, node 0's endpoint unless `endpoint` names another (a TLS front), and `extra`."""
    key, secret = garage.key
    return {"endpoint": endpoint or garage.endpoint(), "region": REGION, "bucket": bucket, "accessKey": key,
            "secretKey": secret, **extra}


def bucket_objects(garage, bucket):
    """How many objects Garage counts in `bucket`."""
    out = garage.cli("bucket", "info", bucket).stdout
    for line in out.splitlines():
        if line.strip().lower().startswith("objects:"):
            return int(line.split(":", 1)[1].split()[0])
    raise AssertionError(f"no object count in `garage bucket info`:\n{out}")
