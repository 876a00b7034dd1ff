"""HA Detached on S3 (issue 16): three masters serve one bucket of a three-node Garage
cluster (replication_factor 3) on loopback, and losing a master or a Garage node loses
neither pulls nor pushes.

Real components only: Garage 2.5.0 (three servers on 127.0.0.1-3), the converge with
the real hooks and the Helm engine (the storage check, the switch), each master's node
hook as shell-operator runs it, the kubelet stand-in starting Debian's docker-registry
(s3-aws driver) and the token issuer from exactly the files the node hook wrote, on the
master's own address (per-process loopback addresses, `loopback_masters()`), skopeo as
the `rw` client, and containerd's CRI pulling as kubelet does through the rendered
mirror list with the pull Secret's credentials.

The S3 endpoint of the settings is one address (Garage node 0's S3 API; in a real
cluster a load balancer in front of the nodes): the Garage node stopped is another one,
so what is proven is the replicated store's quorum (two of three) under the registries,
not a failover of the endpoint address itself."""
import json
import time

import pytest

from conftest import module_config, nodes_file
from registry_env import Kubelet, loopback_masters, run_node_hook, secret_data, switch_state
from test_static_pods import kubelet_pull, mirror_hosts, node_hosts, pull_credentials, pull_secret
from tools.cri import CriContainerd
from tools.garage import bucket_store, s3_settings
from tools.oci import image_layout, tar_file
from tools.processes import wait_until
from tools.registry import skopeo

MASTERS = loopback_masters()
BUCKET = "mirror"
MANIFEST = "etc/kubernetes/manifests/embedded-registry.yaml"


@pytest.fixture
def garage3(tmp_path):
    with bucket_store(tmp_path / "garage", BUCKET, nodes=3) as g:
        yield g


def settings(garage):
    return {"mode": "Detached", "highAvailability": True,
            "detached": {"storageMode": "S3", "s3": s3_settings(garage, BUCKET)}}


def image(tmp_path, tag):
    """An OCI layout of one image `tag` (two layers of its own); (layout, config digest:
    the image id containerd answers a pull with)."""
    layout = tmp_path / "layouts" / tag
    _, blobs, _ = image_layout(layout, tag, [tar_file("a.txt", f"{tag} first\n".encode() * 3000),
                                             tar_file("b.txt", f"{tag} second\n".encode() * 3000)])
    return layout, blobs[0]


def served_manifest(reg, repo, tag):
    """Whether master `reg` answered a manifest request for repo:tag with 200."""
    for line in reg.log().splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if (e.get("msg") == "response completed" and e.get("http.response.status") == 200
                and e.get("http.request.uri", "").split("?")[0] == f"/v2/{repo}/app/manifests/{tag}"):
            return True
    return False


def test_ha_detached_on_s3_survives_a_master_and_a_garage_node(tmp_path, converge, garage3):
    garage = garage3
    roots = {n: tmp_path / f"host-{n}" for n, _ in MASTERS}
    runs = iter(range(100))

    def conv(now=None):
        i = next(runs)
        converge(module_config(tmp_path, settings(garage), name=f"mc-{i}.yaml"),
                 nodes_file(tmp_path, MASTERS, name=f"nodes-{i}.yaml"), now=now)
        assert garage.key[1] not in converge.output, "the secret key is never printed"

    conv()
    state, _ = switch_state(converge.state)
    assert state["check"]["what"] == "storage" and state["check"]["ok"], state["check"]
    assert state["registry"]["nodes"] == [n for n, _ in MASTERS], "a registry on every master"
    kubelet = Kubelet(converge.state, roots, tmp_path)
    try:
        for n, _ in MASTERS:
            assert run_node_hook(tmp_path, converge.state, n, roots[n])[0][-1] == MANIFEST, "first installs"
        assert sorted(kubelet.sync()) == [n for n, _ in MASTERS]
        regs = {n: kubelet.running[n][0] for n, _ in MASTERS}
        for n, ip in MASTERS:
            assert regs[n].host == f"{ip}:5001"
            assert regs[n].data is None and not regs[n].init_runs, "the bucket, and no GC at start"
            assert run_node_hook(tmp_path, converge.state, n, roots[n])[1]["registry"] == "ready"
        # Every master's rendered storage is the same bucket and root.
        stores = {n: regs[n].generated["distribution"]["storage"]["s3"] for n, _ in MASTERS}
        assert all((s["bucket"], s["rootdirectory"], s["regionendpoint"]) ==
                   (BUCKET, "/embedded-registry", garage.endpoint(0)) for s in stores.values()), stores

        now = int(time.time())
        conv(now)
        node_hosts(converge.state, tmp_path / "node")  # the nodes apply and acknowledge it
        conv(now + 301)
        hosts, toml = node_hosts(converge.state, tmp_path / "node")
        assert mirror_hosts(toml) == [f'[host."https://{ip}:5001"]' for _, ip in MASTERS], \
            "the nodes' mirror list holds every master, in order"
        data = pull_secret(converge.state)
        assert data["address"] == "embedded-registry.d8-system.svc:5001", "the cluster pulls through the masters"
        repo = data["path"].strip("/")
        rw = secret_data(converge.state, "registry-user-rw")["password"]
        assert pull_credentials(converge.state) == ("ro", secret_data(converge.state, "registry-user-ro")["password"])

        def push(reg, tag):
            layout, config = image(tmp_path, tag)
            p = skopeo("copy", f"--dest-cert-dir={reg.certs}", f"--dest-creds=rw:{rw}", f"oci:{layout}:{tag}",
                       f"docker://{reg.host}/{repo}/app:{tag}", timeout=120)
            assert p.returncode == 0, f"push of {tag} through {reg.host}: {p.stderr}\n{reg.served()}"
            return config

        m0, m1, m2 = (regs[n] for n, _ in MASTERS)
        # rw pushes through master-0 every image the steps below pull.
        want = {tag: push(m0, tag) for tag in ("first", "m0-down", "garage-down")}
        with CriContainerd(tmp_path / "cri", hosts) as cri:
            def pull(tag, by):
                got = kubelet_pull(cri, converge.state, f"{data['address']}/{repo}/app:{tag}")
                assert got == want[tag], (tag, got, want[tag])
                assert served_manifest(by, repo, tag), f"{tag}: not served by {by.host}: {by.served()}"

            # ro pulls through master-2: the image master-0 wrote is in the bucket it reads.
            # containerd tries the masters in order, so master-0 and master-1 are out of
            # the way for this pull (as if their nodes were gone), then back.
            for reg in (m0, m1):
                reg.stop()
            pull("first", m2)
            for reg in (m0, m1):
                reg.start()
            # master-0's registry stopped: pulls go on through the others.
            m0.stop()
            pull("m0-down", m1)
            # One Garage node stopped (Garage itself lists it failed): pulls AND pushes go
            # on, through another master.
            down = garage.nodes[2]
            garage.stop_node(2)
            wait_until(lambda: down.node_id[:16] in garage.failed_nodes(), timeout=60, interval=0.5,
                       what="garage to list the stopped node as failed")
            pull("garage-down", m1)
            want["pushed-degraded"] = push(m1, "pushed-degraded")
            pull("pushed-degraded", m1)
            want["via-master-2"] = push(m2, "via-master-2")
            pull("via-master-2", m1)
    finally:
        kubelet.stop()
