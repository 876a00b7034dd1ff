"""The node hooks' file writes under attack: the real binary as the node hook `node-files`
(and `rotate`), as shell-operator runs it on a master, against a temporary host root
that an attacker prepared. Each case: the run fails with one line naming the key or the
path, and the victim (a file or directory outside the registry's own) keeps its
content, mode and existence. The host root itself is a link (as on a test machine, and
allowed): only links below it are refused."""
import json
import os
import pathlib
import stat

import pytest

from test_reliability import GOOD_FILES, b64, node_config
from tools.hookrun import HookRun, one_error_line

CONFIG = "etc/kubernetes/registry/config"
PKI = "etc/kubernetes/registry/pki"
MANIFESTS = "etc/kubernetes/manifests"
MANIFEST = f"{MANIFESTS}/embedded-registry.yaml"
DATA = "opt/deckhouse/registry/data"


class Host:
    """A host root reached through a link, a victim directory beside it, and the node
    hook run as shell-operator runs it."""

    def __init__(self, tmp_path: pathlib.Path):
        self.tmp = tmp_path
        real = tmp_path / "host-real"
        real.mkdir()
        self.root = tmp_path / "host"
        self.root.symlink_to(real)
        self.victim = tmp_path / "victim"
        self.victim.mkdir()
        self.victim_file = self.victim / "precious"
        self.victim_file.write_text("keep me\n")
        self.victim_file.chmod(0o644)
        self.runs = 0

    def victim_state(self):
        """Everything about the victim an attack could change."""
        return sorted((p.name, p.read_bytes(), stat.S_IMODE(p.lstat().st_mode), p.lstat().st_uid)
                      for p in self.victim.iterdir())

    def link(self, rel, to):
        """Replaces `rel` below the host root with a link to `to`."""
        path = self.root / rel
        if path.is_dir() and not path.is_symlink():
            for p in sorted(path.iterdir()):
                p.unlink()
            path.rmdir()
        elif path.exists() or path.is_symlink():
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(to)
        return path

    def run(self, data, hook="node-files"):
        """Runs the hook on a Synchronization of the node's Secret (`data`, or no Secret
        when None); returns the CompletedProcess."""
        self.runs += 1
        objects = [] if data is None else [{"object": node_config(data)}]
        r = HookRun.node(self.tmp / f"run-{self.runs}", [{"binding": "node_config", "type": "Synchronization",
                                                          "objects": objects, "snapshots": {"node_status": []}}],
                         host_root=self.root, env={"EMBEDDED_REGISTRY_FILE_OWNER": "none"})
        self.k8s = r.dir / "k8s.json"
        return r.classic(hook)

    def install(self):
        p = self.run(GOOD_FILES)
        assert p.returncode == 0, p.stderr
        assert (self.root / MANIFEST).read_text() == "kind: Pod\n"

    def refused(self, data, path, prefix=False):
        """The run fails with one line that names `path` (or a path starting with it)
        as a link; no status written."""
        p = self.run(data)
        assert p.returncode == 1, p.stderr
        msg = one_error_line(p)
        named, rest = msg.split(": ", 1)
        assert named.startswith(str(path)) if prefix else named == str(path), msg
        assert rest.startswith("a symbolic link"), msg
        assert "refusing" in msg, msg
        assert not self.k8s.exists(), "no status for a refused run"
        return msg


@pytest.fixture
def host(tmp_path):
    return Host(tmp_path)


# --- keys: only the registry's own manifest and the files the chart renders --------------

FOREIGN_KEYS = [
    pytest.param("manifest.kube-apiserver.yaml", "manifest.* takes embedded-registry.yaml",
                 id="overwrite kube-apiserver"),
    pytest.param("manifest.backdoor.yaml", "manifest.* takes embedded-registry.yaml", id="extra static pod"),
    pytest.param("manifest.embedded-registry.yml", "manifest.* takes embedded-registry.yaml", id="manifest near-miss"),
    pytest.param("config.kubelet.yaml", "config.* takes auth.yaml, distribution.yaml", id="unknown config file"),
    pytest.param("pki.extra.key", "pki.* takes auth.crt", id="unknown pki file"),
]


@pytest.mark.parametrize("key,needle", FOREIGN_KEYS)
def test_a_foreign_key_refuses_the_whole_secret_before_anything_is_written(host, key, needle):
    apiserver = host.root / MANIFESTS / "kube-apiserver.yaml"
    apiserver.parent.mkdir(parents=True)
    apiserver.write_text("kind: Pod\nmetadata: {name: kube-apiserver}\n")
    apiserver.chmod(0o600)
    p = host.run({**GOOD_FILES, key: b64("kind: Pod\nmetadata: {name: evil}\n")})
    assert p.returncode == 1, p.stderr
    msg = one_error_line(p)
    assert f'"{key}"' in msg and needle in msg and "refusing the whole Secret" in msg, msg
    assert sorted(str(q.relative_to(host.root)) for q in host.root.rglob("*")) == \
        ["etc", "etc/kubernetes", MANIFESTS, f"{MANIFESTS}/kube-apiserver.yaml"], "nothing written"
    assert apiserver.read_text() == "kind: Pod\nmetadata: {name: kube-apiserver}\n"
    assert stat.S_IMODE(apiserver.stat().st_mode) == 0o600


def test_every_key_the_chart_renders_is_accepted(host):
    """The baseline of the key cases: the chart's full key set is written, and a second
    run changes nothing."""
    keys = ["config.distribution.yaml", "config.auth.yaml", "pki.ca.crt", "pki.token.crt", "pki.token.key",
            "pki.token-bundle.crt", "pki.distribution.crt", "pki.distribution.key", "pki.auth.crt",
            "pki.auth.key", "pki.upstream-ca.crt", "manifest.embedded-registry.yaml"]
    data = {k: b64(f"{k}\n") for k in keys}
    p = host.run(data)
    assert p.returncode == 0, p.stderr
    for k in keys:
        d, f = k.split(".", 1)
        path = host.root / {"config": CONFIG, "pki": PKI, "manifest": MANIFESTS}[d] / f
        assert path.read_text() == f"{k}\n"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    p = host.run(data)
    assert p.returncode == 0, p.stderr
    assert not [json.loads(l) for l in p.stderr.splitlines() if json.loads(l)["msg"] in ("wrote", "removed")]


# --- links below the host root -------------------------------------------------------------

@pytest.mark.parametrize("secret", [True, False], ids=["apply", "remove"])
def test_a_linked_config_dir_is_neither_written_nor_emptied(host, secret):
    host.install()
    before = host.victim_state()
    link = host.link(CONFIG, host.victim)
    host.refused(GOOD_FILES if secret else None, link)
    assert host.victim_state() == before
    assert (host.root / MANIFEST).read_text() == "kind: Pod\n", "nothing removed either"
    assert (host.root / PKI / "ca.crt").exists()


@pytest.mark.parametrize("secret", [True, False], ids=["apply", "remove"])
def test_a_linked_manifests_dir_is_refused(host, secret):
    host.install()
    (host.victim / "embedded-registry.yaml").write_text("someone else's pod\n")
    before = host.victim_state()
    link = host.link(MANIFESTS, host.victim)
    host.refused(GOOD_FILES if secret else None, link)
    assert host.victim_state() == before


def test_a_link_at_the_manifest_name_is_refused(host):
    host.install()
    before = host.victim_state()
    link = host.link(MANIFEST, host.victim_file)
    host.refused(GOOD_FILES, link)
    host.refused(None, link)
    assert host.victim_state() == before
    assert (host.root / MANIFEST).is_symlink(), "left for the administrator to see"


def test_links_at_temporary_file_names_are_never_written_through(host):
    """The hook's temporary files were `.<file>.tmp-<pid>`: an attacker links the names
    the next process ids would give to a victim file. Temporary names are random and
    created with O_EXCL now, and a link in the registry's own directory is refused."""
    host.install()
    before = host.victim_state()
    try:
        last = int(pathlib.Path("/proc/sys/kernel/ns_last_pid").read_text())
    except OSError:
        last = os.getpid()
    for pid in range(last + 1, last + 65):
        (host.root / CONFIG / f".distribution.yaml.tmp-{pid}").symlink_to(host.victim_file)
    changed = {**GOOD_FILES, "config.distribution.yaml": b64("version: 0.1\nchanged: true\n")}
    host.refused(changed, host.root / CONFIG / ".distribution.yaml.tmp-", prefix=True)
    assert host.victim_state() == before
    assert (host.root / CONFIG / "distribution.yaml").read_text() == "version: 0.1\n", "nothing written"


def test_a_link_at_a_file_name_is_refused(host):
    host.install()
    before = host.victim_state()
    link = host.link(f"{PKI}/ca.crt", host.victim_file)
    host.refused({**GOOD_FILES, "pki.ca.crt": b64("NEW CA\n")}, link)
    host.refused(None, link)
    assert host.victim_state() == before


def test_a_linked_parent_of_the_data_dir_is_refused(host):
    before = host.victim_state()
    link = host.link("opt/deckhouse", host.victim)
    host.refused(GOOD_FILES, link)
    assert host.victim_state() == before
    assert not (host.root / MANIFEST).exists(), "refused before any file"


def test_an_existing_data_dir_linked_to_another_disk_is_used_as_it_is(host):
    """The administrator may put the data on another disk with a link: the hook only
    creates a missing data directory, so it neither refuses nor changes this one; it
    only adds the storage directories garbage collection needs beside what is there."""
    disk = host.tmp / "disk"
    disk.mkdir()
    (disk / "blob").write_text("data\n")
    (host.root / DATA).parent.mkdir(parents=True)
    (host.root / DATA).symlink_to(disk)
    p = host.run(GOOD_FILES)
    assert p.returncode == 0, p.stderr
    assert (host.root / DATA).is_symlink()
    assert sorted((q.name, q.read_text() if q.is_file() else "dir") for q in disk.iterdir()) == [
        ("blob", "data\n"), ("docker", "dir")]
    assert (disk / "docker/registry/v2/repositories").is_dir() and (disk / "docker/registry/v2/blobs").is_dir()


def test_a_repaired_host_is_applied_again(host):
    """Refusals leave the host for the administrator: once the link is gone, the next
    run writes everything."""
    host.install()
    link = host.link(CONFIG, host.victim)
    host.refused(GOOD_FILES, link)
    link.unlink()
    p = host.run(GOOD_FILES)
    assert p.returncode == 0, p.stderr
    assert (host.root / CONFIG / "distribution.yaml").read_text() == "version: 0.1\n"


# --- rotate: the garbage-collection restart moves the manifest aside and back ---------------

def test_rotate_never_moves_a_link_into_kubelets_directory(tmp_path):
    """After a rotation that deleted images, `rotate` restarts the registry by moving its
    manifest aside and back; a run that stopped between the two moves is finished by
    putting the aside file back. A link planted at the aside name (to a pod of the
    attacker's) was moved into kubelet's directory as the registry's manifest; now the
    restart is refused naming the link, and the failure is the rotation's metric."""
    from test_rotation_gc import run_rotate_hook
    from tools.mirror_fixture import build_mirror
    from tools.registry import OWN_CA, Registry

    host = Host(tmp_path)
    (host.root / MANIFESTS).mkdir(parents=True)
    evil = host.victim / "pod.yaml"
    evil.write_text("kind: Pod\nmetadata: {name: evil}\n")
    before = host.victim_state()
    aside = host.link("etc/kubernetes/registry/embedded-registry.yaml.gc", evil)
    with Registry(tmp_path / "reg", tls=OWN_CA) as reg:
        build_mirror(reg, tmp_path / "build")
        p, metrics = run_rotate_hook(tmp_path, reg, host.root)
        assert reg.answers(), "the registry was not stopped"
    assert p.returncode == 0, p.stderr
    assert metrics["d8_embedded_registry_rotation_manifests_deleted"] > 0, "the restart was reached"
    assert metrics["d8_embedded_registry_rotation_failed"] == 1
    assert not (host.root / MANIFEST).exists() and not (host.root / MANIFEST).is_symlink()
    assert aside.is_symlink()
    assert host.victim_state() == before
    logs = [json.loads(line) for line in p.stderr.splitlines()]
    stopped = [entry for entry in logs if entry["msg"] == "rotation stopped"]
    assert len(stopped) == 1 and stopped[0]["stage"] == "gc", p.stderr
    assert stopped[0]["error"].startswith(f"{aside}: a symbolic link"), stopped[0]
