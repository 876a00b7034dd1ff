"""Rolling restarts: a change that restarts the registries (the CA's three steps, the
`ro` password) reaches one master at a time. Three Proxy masters (127.0.0.41-43) behind
a real upstream, the cluster switched to them; the converge renders each step, each
master's node hook runs against the converge's store (it sees the other masters'
status ConfigMaps there) and a kubelet stand-in restarts every pod whose manifest
changed at the same moment. Meanwhile containerd's CRI pulls through the rendered
mirror list with the pull Secret's credentials, without pause, and every master's
`/v2/` is polled: no pull fails, and some master always serves."""
import json
import time

from conftest import module_config, nodes_file
from registry_env import MANIFEST, Kubelet, ServingMonitor, node_config, rendered_secret, run_node_hook, secret_data, \
    status_config_maps
from test_static_pods import kubelet_pull, node_hosts, proxy_settings, pull_secret
from tools.cri import CriContainerd, CriError
from tools.processes import Repeating, wait_until
from tools.registry import Registry

# Addresses of their own: other end-to-end tests run masters on 127.0.0.11-14.
MASTERS = [("m1", "127.0.0.41"), ("m2", "127.0.0.42"), ("m3", "127.0.0.43")]
DAY = 86400
YEAR = 365 * DAY
CONFIG_HASH = "embedded-registry.deckhouse.io/config-hash"
ROUNDS = 20  # hook-and-kubelet rounds a step may take (three masters need four)


class Puller(Repeating):
    """Pulls `image` as kubelet does (tools: the pull Secret's entries, most specific
    first) in a loop in a thread until stopped; counts successes and keeps failures."""

    def __init__(self, cri, state, image):
        super().__init__(join_timeout=180)
        self.cri, self.state, self.image = cri, state, image
        self.ok, self.failures = 0, []

    def once(self):
        """One pull of `image`."""
        try:
            kubelet_pull(self.cri, self.state, self.image)
            self.ok += 1
        except CriError as e:
            self.failures.append(str(e))


def test_ca_rotation_and_ro_rotation_roll_one_master_at_a_time(tmp_path, converge):
    now = int(time.time())
    first_ca = None
    runs = iter(range(1000))
    roots = {n: tmp_path / f"host-{n}" for n, _ in MASTERS}
    with Registry(tmp_path / "up") as up:
        repo = proxy_settings(up)["proxy"]["path"].strip("/")
        up.push(f"{repo}/app", "a", b"rolled\n")

        def conv(percent, at):
            i = next(runs)
            settings = dict(proxy_settings(up), certificates={"renewalThresholdPercent": percent})
            converge(module_config(tmp_path, settings, name=f"mc-{i}.yaml"),
                     nodes_file(tmp_path, MASTERS, name=f"nodes-{i}.yaml"), now=at)
            node_hosts(converge.state, tmp_path / "node")  # the nodes apply and acknowledge it

        # A CA issued seven years ago (30% of its life left): not due at 5%, due at 33%.
        conv(5, now - 7 * YEAR)
        first_ca = secret_data(converge.state, "registry-pki")["ca.crt"]
        start = now - 2 * DAY - 3600
        conv(5, start)  # the leaves, long expired, are issued again
        kubelet = Kubelet(converge.state, roots, tmp_path)
        try:
            for n, _ in MASTERS:
                assert run_node_hook(tmp_path, converge.state, n, roots[n])[0][-1] == MANIFEST, "first installs"
            assert sorted(kubelet.sync()) == [n for n, _ in MASTERS]
            for n, _ in MASTERS:
                assert run_node_hook(tmp_path, converge.state, n, roots[n])[1]["registry"] == "ready"
            conv(5, start + 1)
            conv(5, start + 302)
            address = pull_secret(converge.state)["address"]
            assert address == "embedded-registry.d8-system.svc:5001", "the cluster pulls through the masters"
            hosts, _ = node_hosts(converge.state, tmp_path / "node")
            image = f"{address}/{repo}/app:a"

            def roll(step):
                """Runs every master's node hook, then kubelet, until each master runs
                its new configuration; returns the masters installed, per round."""
                want = {n: rendered_secret(converge.state, n)["metadata"]["annotations"][CONFIG_HASH]
                        for n, _ in MASTERS}
                installs, waits = [], set()
                for _ in range(ROUNDS):
                    round_installs = []
                    for n, _ in MASTERS:
                        written, status, _ = run_node_hook(tmp_path, converge.state, n, roots[n])
                        if MANIFEST in written:
                            round_installs.append(n)
                        if status.get("rollout"):
                            waits.add((n, status["rollout"]))
                    installs.append(round_installs)
                    kubelet.sync()
                    st = {n: o["data"] for n, o in status_config_maps(converge.state).items()}
                    if all(st[n]["appliedConfigHash"] == want[n] and st[n]["registry"] == "ready"
                           for n, _ in MASTERS):
                        break
                else:
                    raise AssertionError(f"{step}: not every master runs its configuration: {st}")
                assert all(len(r) <= 1 for r in installs), f"{step}: two masters at once: {installs}"
                assert [n for r in installs for n in r] == ["m1", "m2", "m3"], f"{step}: in order: {installs}"
                assert ("m3", "waiting for m1, m2") in waits, f"{step}: {waits}"
                return installs

            with CriContainerd(tmp_path / "cri", hosts) as cri, \
                    ServingMonitor([f"{ip}:5001" for _, ip in MASTERS]) as monitor:
                assert kubelet_pull(cri, converge.state, image).startswith("sha256:")
                bundles = []
                with Puller(cri, converge.state, image) as puller:
                    for step, at in (("introduce", now - 2 * DAY), ("switch", now - DAY), ("retire", now)):
                        conv(33, at)
                        roll(step)
                        bundles.append(node_config(converge.state, "m1")["ca.crt"].count("BEGIN CERTIFICATE"))
                    old_ro = secret_data(converge.state, "registry-user-ro")["password"]
                    (converge.state / "objects/d8-system/Secret/registry-user-ro.json").unlink()
                    conv(33, now + 1)
                    assert secret_data(converge.state, "registry-user-ro")["password"] != old_ro
                    roll("ro password")
                    conv(33, now + 2)  # every master runs the new user: the old entry goes
                    pulls_before = puller.ok
                    wait_until(lambda: puller.ok >= pulls_before + 3, timeout=60, what="pulls after the last step")
                assert puller.failures == [], puller.failures[:3]
                assert monitor.polls >= 10 and monitor.minimum >= 1, (monitor.minimum, monitor.down_polls[:5])
            assert bundles == [2, 2, 1], "introduce (old+new), switch (old+new), retire (new)"
            assert secret_data(converge.state, "registry-pki")["ca.crt"] != first_ca, "the CA rotated"
            assert len(json.loads(pull_secret(converge.state)[".dockerconfigjson"])["auths"]) == 1
        finally:
            kubelet.stop()
