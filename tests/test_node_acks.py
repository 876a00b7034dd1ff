"""Nodes acknowledge their containerd mirror configuration: the rendered script, run with
bash against a node root and the bashbooster stand-in (tests/tools/bashbooster.sh, which
records the annotation instead of calling the API server), writes and checks its files,
then annotates its node with the configuration's hash and its containerd verdict; and
it stays stable beside Deckhouse's own bashible step that writes registry.d."""
import json
import subprocess

import pytest
import yaml

from test_hostile_cluster_data import converge, node, render
from tools import node_script

ADDRESS = "embedded-registry.d8-system.svc:5001"
OURS = "embedded-registry.d8-system.svc_5001_"
HASH = "0123456789abcdef"


def script_for(tmp_path, mirrors, node_hash=HASH):
    tmp_path.mkdir(parents=True, exist_ok=True)
    p, state = converge(tmp_path, [node("master-0", "127.0.0.1")])
    assert p.returncode == 0, p.stderr
    values = json.loads((state / "values.json").read_text())
    sw = values["embeddedRegistry"]["internal"]["switch"]
    sw.update(mirrors=mirrors, pullAddress=ADDRESS, nodeConfigHash=node_hash)
    return yaml.safe_load(render(values)["templates/node-group-configuration.yaml"])["spec"]["content"]


MASTERS = [{"name": "m1", "internalIP": "127.0.0.11"}, {"name": "m2", "internalIP": "127.0.0.12"}]


def test_the_script_writes_its_files_then_annotates_its_node_with_the_hash(tmp_path):
    script = script_for(tmp_path, MASTERS)
    root = tmp_path / "node"
    p, calls = node_script.run(script, root, node="worker-7", snapshot=True)
    assert p.returncode == 0, p.stderr
    assert calls == [["annotate", "node", "worker-7", "--overwrite",
                      f"{node_script.ACK}={HASH}", f"{node_script.CONTAINERD}=registry.d"]]
    toml = (root / "registry.d" / OURS / "hosts.toml").read_text()
    assert toml.splitlines()[0] == f'server = "https://{ADDRESS}"'
    assert '[host."https://127.0.0.12:5001"]' in toml
    # What the node held when it annotated: the files, complete.
    seen = root / "kubectl.calls.1" / OURS
    assert (seen / "hosts.toml").read_text() == toml
    assert (seen / "embedded-registry-ca.crt").read_text().startswith("-----BEGIN CERTIFICATE-----")
    # Idempotent: a second run writes the same bytes and says the same.
    p2, calls2 = node_script.run(script, root, node="worker-7")
    assert p2.returncode == 0 and calls2 == calls
    assert (root / "registry.d" / OURS / "hosts.toml").read_text() == toml


def test_a_failing_write_does_not_annotate(tmp_path):
    script = script_for(tmp_path, MASTERS)
    root = tmp_path / "node"
    root.mkdir()
    (root / "registry.d").write_text("a file where the directory should be\n")
    p, calls = node_script.run(script, root)
    assert p.returncode != 0
    assert "cannot write the mirror configuration" in p.stderr
    assert calls == [], "no acknowledgement for files not written"


def test_an_unreachable_api_server_fails_the_step_so_bashible_retries(tmp_path):
    p, calls = node_script.run(script_for(tmp_path, MASTERS), tmp_path / "node", kubectl_fails=True)
    assert p.returncode != 0 and len(calls) == 1
    assert "cannot annotate the node" in p.stderr


def test_without_a_hash_from_the_hook_the_script_does_not_annotate(tmp_path):
    p, calls = node_script.run(script_for(tmp_path, MASTERS, node_hash=""), tmp_path / "node")
    assert p.returncode == 0, p.stderr
    assert calls == []


V2_IMAGES = """version = 3
[plugins]
  [plugins.'io.containerd.cri.v1.images']
    [plugins.'io.containerd.cri.v1.images'.registry]
      config_path = '/etc/containerd/registry.d'
"""


@pytest.mark.parametrize("config, verdict", [
    (node_script.CONTAINERD_V1, "registry.d"),
    (None, "no-config"),
    ('version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/certs.d"\n',
     "no-config-path"),
    ('version = 2\n[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]\n'
     '  endpoint = ["https://mirror.example"]\n', "v1-mirrors"),
    (V2_IMAGES, "v2-transfer"),
    (V2_IMAGES + "  [plugins.'io.containerd.cri.v1.images']\n    use_local_image_pull = true\n", "registry.d"),
    ('version = 3\n[plugins."io.containerd.transfer.v1.local"]\n  config_path = "/etc/containerd/registry.d"\n',
     "no-config-path"),
], ids=["v1", "none", "other-path", "v1-mirrors", "v2-transfer", "v2-local-pull", "v2-no-cri-path"])
def test_the_script_reports_what_containerd_reads(tmp_path, config, verdict):
    p, calls = node_script.run(script_for(tmp_path, MASTERS), tmp_path / "node", config=config)
    assert p.returncode == 0, p.stderr
    assert node_script.annotations(calls)[node_script.CONTAINERD] == verdict


# What Deckhouse's candi step 030_configure_containerd_registry does on every bashible
# run (read from deckhouse/deckhouse, candi/bashible/common-steps/all/): for each host of
# its registry configuration (the pull Secret's address) it writes
# registry.d/<host>/hosts.toml with bb-sync-file (only when the content differs), then
# removes the directories of the hosts listed in registry.d/deckhouse_hosts_state.json
# that are no longer wanted, and saves the new list there. A reproduction of that
# behaviour, not Deckhouse's code.
BASHIBLE_030 = r"""
root=/etc/containerd/registry.d
mkdir -p "$root"
for host in $HOSTS; do
  mkdir -p "$root/$host"
  want="$(printf '[host."https://%s"]\n  capabilities = ["pull", "resolve"]\n' "$host")"
  if [ "$(cat "$root/$host/hosts.toml" 2>/dev/null)" != "$want" ]; then
    printf '%s\n' "$want" > "$root/$host/hosts.toml"
    echo "synced $host" >> "$root/../bashible.log"
  fi
done
state="$root/deckhouse_hosts_state.json"
old="$(cat "$state" 2>/dev/null || echo)"
for host in $old; do
  case " $HOSTS " in *" $host "*) ;; *) rm -rf "$root/$host" ;; esac
done
printf '%s\n' "$HOSTS" > "$state"
"""


def bashible_run(root, hosts, ours):
    """One bashible run: step 030 (weight 30), then the module's script (weight 50)."""
    p = subprocess.run(["bash", "-euo", "pipefail", "-c", node_script.reroot(BASHIBLE_030, root)],
                       capture_output=True, text=True, env={"HOSTS": " ".join(hosts), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr
    p, calls = node_script.run(ours, root)
    assert p.returncode == 0, p.stderr
    return calls


def files(root):
    d = root / "registry.d"
    return {str(f.relative_to(d)): f.read_bytes() for f in sorted(d.rglob("*")) if f.is_file()}


def test_bashible_and_the_module_never_flip_nor_delete_each_others_file(tmp_path):
    """The pull Secret names the embedded registry: bashible writes its hosts.toml for
    the address (registry.d/<host>:<port>), the module its own (registry.d/<host>_<port>_,
    which containerd reads first). Two bashible runs in order leave every file as the
    first left it; back on the upstream, bashible's cleanup removes only its own
    directory, and the module's script (now without masters) its own."""
    root = tmp_path / "node"
    with_masters = script_for(tmp_path / "a", MASTERS)
    first = bashible_run(root, [ADDRESS], with_masters)
    after_first = files(root)
    second = bashible_run(root, [ADDRESS], with_masters)
    assert files(root) == after_first, "nothing flips between bashible runs"
    assert (root / "bashible.log").read_text() == f"synced {ADDRESS}\n", "bashible rewrote nothing the second time"
    assert first == second
    assert f"{OURS}/hosts.toml" in after_first and f"{ADDRESS}/hosts.toml" in after_first
    assert b"127.0.0.11:5001" in after_first[f"{OURS}/hosts.toml"]
    assert b"127.0.0.11" not in after_first[f"{ADDRESS}/hosts.toml"], "bashible's file is bashible's"

    # Back on the upstream, the masters still listed: bashible removes its directory
    # for the address, the module's file stays.
    bashible_run(root, ["registry.example.com"], with_masters)
    left = files(root)
    assert not any(k.startswith(f"{ADDRESS}/") for k in left)
    assert left[f"{OURS}/hosts.toml"] == after_first[f"{OURS}/hosts.toml"]
    # The masters leave the configuration: the module removes its own files, twice
    # changes nothing more.
    without = script_for(tmp_path / "b", [], node_hash="fedcba9876543210")
    calls = bashible_run(root, ["registry.example.com"], without)
    assert not (root / "registry.d" / OURS / "hosts.toml").exists()
    assert node_script.annotations(calls)[node_script.ACK] == "fedcba9876543210"
    settled = files(root)
    bashible_run(root, ["registry.example.com"], without)
    assert files(root) == settled
    assert "registry.example.com/hosts.toml" in settled


def test_the_hash_the_script_sets_is_the_one_the_hook_waits_for(tmp_path):
    p, state = converge(tmp_path, [node("master-0", "127.0.0.1")])
    assert p.returncode == 0, p.stderr
    wanted = json.loads((state / "values.json").read_text())["embeddedRegistry"]["internal"]["switch"]["nodeConfigHash"]
    assert len(wanted) == 16 and int(wanted, 16) >= 0
    script = yaml.safe_load((state / "rendered/templates/node-group-configuration.yaml").read_text())["spec"]["content"]
    assert wanted not in script, "passed as base64 data, not shell text"
    _, calls = node_script.run(script, tmp_path / "node")
    assert node_script.annotations(calls)[node_script.ACK] == wanted


def test_containerd_reads_the_modules_directory_before_bashibles(tmp_path):
    """A real containerd (CRI PullImage, as kubelet pulls) with both files for the pull
    address: bashible's registry.d/<host>:<port> (pointing at a closed port here) and the
    module's registry.d/<host>_<port>_ (pointing at a registry). The pull goes through
    the module's; without it, through bashible's, and fails. The script's containerd
    verdict on the config that containerd runs with is registry.d."""
    from tools.cri import CriContainerd, CriError
    from tools.processes import free_port
    from tools.registry import Registry

    root = tmp_path / "node"
    hosts = root / "registry.d"
    closed = free_port()
    (hosts / ADDRESS).mkdir(parents=True)
    (hosts / ADDRESS / "hosts.toml").write_text(
        f'server = "https://{ADDRESS}"\n[host."https://127.0.0.1:{closed}"]\n  capabilities = ["pull", "resolve"]\n')
    with Registry(tmp_path / "up", auth="none") as up, CriContainerd(tmp_path / "cri", hosts) as cri:
        for tag in ("a", "b"):
            up.push("repo/app", tag, f"image {tag}\n".encode())
        (hosts / OURS).mkdir()
        (hosts / OURS / "hosts.toml").write_text(
            f'server = "https://{ADDRESS}"\n[host."http://{up.host}"]\n  capabilities = ["pull", "resolve"]\n')
        assert cri.pull(f"{ADDRESS}/repo/app:a").startswith("sha256:")
        (hosts / OURS / "hosts.toml").unlink()
        (hosts / OURS).rmdir()
        with pytest.raises(CriError):
            cri.pull(f"{ADDRESS}/repo/app:b")
        (root / "config.toml").write_text(cri.config())
    _, calls = node_script.run(script_for(tmp_path / "r", MASTERS), root)
    assert node_script.annotations(calls)[node_script.CONTAINERD] == "registry.d"
