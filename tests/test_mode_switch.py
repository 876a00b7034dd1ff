"""Mode switching on the converge harness with real registries: Direct -> Proxy ->
(an upstream that fails its check) -> Proxy on another upstream -> Direct. At every
step the nodes' pull target (the rendered containerd mirror configuration) points only
at registries that passed their checks and serve."""
import json
import time

import yaml

from conftest import module_config, nodes_file
from registry_env import NodeRegistry, node_config, rendered_secret, switch_state
from test_static_pods import mirror_hosts, node_hook, node_hosts, proxy_settings, pull_secret
from tools.registry import Registry

MASTER = [("m1", "127.0.0.11")]


def mirrors(converge, tmp_path):
    """The masters a node would pull through after running the rendered script."""
    return mirror_hosts(node_hosts(converge.state, tmp_path / "node")[1])


def remoteurl(converge):
    return yaml.safe_load(node_config(converge.state, "m1")["distribution.yaml"])["proxy"]["remoteurl"]


def test_direct_proxy_bad_upstream_other_upstream_direct(tmp_path, converge):
    step = iter(range(100))

    def run(settings, now=None):
        # The Nodes carry what the node's script last acknowledged (see nodes_file).
        return converge(module_config(tmp_path, settings, name=f"mc-{next(step)}.yaml"),
                        nodes_file(tmp_path, MASTER), now=now)

    root = tmp_path / "host-m1"
    with Registry(tmp_path / "up-a") as up_a, Registry(tmp_path / "up-b") as up_b:
        run({"mode": "Direct"})
        state, cond = switch_state(converge.state)
        assert state["registry"] is None and cond["Ready"]["status"] == "True"
        assert mirrors(converge, tmp_path) == []
        upstream = pull_secret(converge.state)

        # Proxy on A: checked, deployed, but nodes move only once the master serves it.
        run(proxy_settings(up_a))
        state, cond = switch_state(converge.state)
        assert cond["ChecksPassed"]["status"] == "True" and state["cluster"] == "Upstream"
        assert cond["NodeServicesReady"]["status"] == "False" and "m1: no report yet" in cond["NodeServicesReady"]["message"]
        assert remoteurl(converge) == f"http://{up_a.host}" and mirrors(converge, tmp_path) == []
        node_hook(tmp_path, converge.state, "m1", root)
        reg = NodeRegistry(converge.state, "m1", tmp_path / "run-a", host_root=root).start()
        try:
            assert node_hook(tmp_path, converge.state, "m1", root)[2]["registry"] == "ready"
            # Nodes get the mirror configuration first; the pull Secret moves once the
            # node acknowledged it (running the script annotates it), without a timer.
            t0 = int(time.time())
            run(proxy_settings(up_a), now=t0)
            state, cond = switch_state(converge.state)
            assert state["cluster"] == "Upstream" and cond["ClusterSwitched"]["reason"] == "NodesConfiguring", cond
            assert "0 of 1 Ready nodes acknowledged" in cond["NodesAcknowledged"]["message"], cond
            run(proxy_settings(up_a), now=t0 + 1)
            assert switch_state(converge.state)[0]["cluster"] == "Upstream", "the node has not run the script"
            assert mirrors(converge, tmp_path) == ['[host."https://127.0.0.11:5001"]']
            assert pull_secret(converge.state) == upstream
            run(proxy_settings(up_a), now=t0 + 2)
            state, cond = switch_state(converge.state)
            assert state["cluster"] == "Embedded" and cond["Ready"]["status"] == "True", cond
            embedded = pull_secret(converge.state)
            assert (embedded["address"], embedded["path"]) == ("embedded-registry.d8-system.svc:5001", "/deckhouse/ee")
            generation_a = state["registry"]["generation"]

            # A broken upstream: refused; the masters keep A, nodes keep pulling through them.
            broken = proxy_settings(up_b)
            broken["proxy"]["password"] = "not-the-Pa55word"
            run(broken)
            state, cond = switch_state(converge.state)
            assert cond["ChecksPassed"]["status"] == "False" and cond["ChecksPassed"]["reason"] == "CheckBadCredentials"
            assert "not-the-Pa55word" not in json.dumps(state["conditions"]) + json.dumps(state["check"])
            assert cond["Ready"]["reason"] == "UpstreamCheckFailed"
            check = converge.values()["embeddedRegistry"]["internal"]["switch"]["check"]
            assert (check["what"], check["ok"], check["kind"]) == ("upstream", False, "bad-credentials")
            assert state["registry"]["generation"] == generation_a and remoteurl(converge) == f"http://{up_a.host}"
            assert mirrors(converge, tmp_path) == ['[host."https://127.0.0.11:5001"]']
            assert pull_secret(converge.state) == embedded
            # The same failing config again changes nothing.
            assert not run(broken)["changed"]

            # Upstream B, correct: the master moves to B; nodes stay on the master.
            run(proxy_settings(up_b))
            state, cond = switch_state(converge.state)
            assert remoteurl(converge) == f"http://{up_b.host}" and state["cluster"] == "Embedded"
            assert cond["NodeServicesReady"]["status"] == "False"
        finally:
            reg.stop()
        node_hook(tmp_path, converge.state, "m1", root)  # kubelet restarts the pod on B's config
        with NodeRegistry(converge.state, "m1", tmp_path / "run-b", host_root=root):
            assert node_hook(tmp_path, converge.state, "m1", root)[2]["registry"] == "ready"
            run(proxy_settings(up_b))
            state, cond = switch_state(converge.state)
            assert cond["Ready"]["status"] == "True" and state["registry"]["generation"] != generation_a

            # Direct: the pull Secret is the upstream's again at once; the nodes' mirror
            # list stays until the restored Secret is seen (pods may still hold the
            # embedded references), and the registry until the node dropped the masters.
            now = t0 + 400
            run({"mode": "Direct"}, now=now)
            state, cond = switch_state(converge.state)
            assert state["cluster"] == "Upstream" and pull_secret(converge.state) == upstream
            assert mirrors(converge, tmp_path) == ['[host."https://127.0.0.11:5001"]']
            assert cond["CleanupDone"]["status"] == "False" and rendered_secret(converge.state, "m1") is not None
        run({"mode": "Direct"}, now=now + 1)
        state, cond = switch_state(converge.state)
        assert cond["CleanupDone"]["reason"] == "NodesConfiguring", cond
        assert state["registry"] is not None and rendered_secret(converge.state, "m1") is not None, \
            "the Ready node still lists the master"
        assert mirrors(converge, tmp_path) == []  # the node applies the list without the masters
        run({"mode": "Direct"}, now=now + 2)
        state, cond = switch_state(converge.state)
        assert state["registry"] is None and cond["Ready"]["status"] == "True"
        assert rendered_secret(converge.state, "m1") is None and mirrors(converge, tmp_path) == []
        assert pull_secret(converge.state) == upstream
        # The manager stays until the master reports its static pod gone.
        assert "templates/manager.yaml" in converge.rendered()
        assert node_hook(tmp_path, converge.state, "m1", root, secret=None)[2]["staticPod"] == "absent"
        run({"mode": "Direct"}, now=now + 3)
        assert "templates/manager.yaml" not in converge.rendered()


def test_flipping_ha_never_lists_a_master_that_does_not_serve(tmp_path, converge):
    """Single master -> HA -> single master on three masters: at every step each master in
    the nodes' mirror list runs a registry that answers."""
    masters = [("m1", "127.0.0.11"), ("m2", "127.0.0.12"), ("m3", "127.0.0.13")]
    nodes = nodes_file(tmp_path, masters)
    step = iter(range(100))
    roots = {n: tmp_path / f"host-{n}" for n, _ in masters}
    running = {}

    def run(settings):
        converge(module_config(tmp_path, settings, name=f"mc-{next(step)}.yaml"), nodes)
        for n, _ in masters:
            node_hook(tmp_path, converge.state, n, roots[n])
            present = (roots[n] / "etc/kubernetes/manifests/embedded-registry.yaml").exists()
            if present and n not in running:  # kubelet starts a new static pod
                running[n] = NodeRegistry(converge.state, n, tmp_path / f"run-{n}-{len(running)}", host_root=roots[n]).start()
            if not present and n in running:  # and stops a removed one
                running.pop(n).stop()
            node_hook(tmp_path, converge.state, n, roots[n])  # reports it serving (or gone)
        listed = mirrors(converge, tmp_path)
        for line in listed:
            ip = line.split("//")[1].split(":")[0]
            name = next(n for n, i in masters if i == ip)
            assert name in running, f"{name} is listed but runs no registry: {listed}"
        return listed

    with Registry(tmp_path / "up") as up:
        try:
            single = dict(proxy_settings(up), highAvailability=False)
            run(single)
            assert run(single) == ['[host."https://127.0.0.11:5001"]']
            ha = dict(proxy_settings(up), highAvailability=True)
            # The first run rolls the new masters out while nodes keep the old list.
            assert run(ha) == ['[host."https://127.0.0.11:5001"]']
            assert run(ha) == [f'[host."https://{ip}:5001"]' for _, ip in masters]
            assert sorted(running) == ["m1", "m2", "m3"]
            # Back to one master: the others leave the list in the same render that removes them.
            assert run(single) == ['[host."https://127.0.0.11:5001"]']
            assert sorted(running) == ["m1"]
        finally:
            for r in running.values():
                r.stop()
