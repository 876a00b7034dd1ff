"""Three Proxy masters behind a real upstream, switched and warm for one release: the
starting point of the release proofs (test_release_change, test_next_release).

The masters are Debian's docker-registry run from exactly what the node hook wrote
(registry_env's NodeRegistry, whose kubelet stand-in runs the `warm` container with the
module's binary); the converge is the `converge` fixture, given the global values of the
release with `--global-values`."""
from conftest import module_config, nodes_file
from registry_env import NodeRegistry, secret_data, switch_state
from test_static_pods import node_hook, node_hosts, proxy_settings
from test_warm_cache import MASTERS, REPO, restart_without_upstream, warm_done
from tools.processes import wait_until
from tools.registry import skopeo

MANIFEST = "etc/kubernetes/manifests/embedded-registry.yaml"


class ReleaseFleet:
    """The masters MASTERS in Proxy mode behind `up`: `again` converges and lets the nodes
    acknowledge, `hook` runs a master's node hook, `regs` are the running registries
    (`stop` stops them), `roots` the masters' host roots."""

    def __init__(self, tmp_path, converge, up):
        self.tmp_path = tmp_path
        self.converge = converge
        self.up = up
        self.roots = {n: tmp_path / f"host-{n}" for n, _ in MASTERS}
        self.regs = []
        self._step = iter(range(100))

    def again(self, gv, now):
        """The converge with the global values file `gv` at time `now`, then the nodes
        apply and acknowledge it. Returns (the switch state, its conditions)."""
        self.converge(module_config(self.tmp_path, proxy_settings(self.up), name=f"mc-{next(self._step)}.yaml"),
                      nodes_file(self.tmp_path, MASTERS), extra=["--global-values", str(gv)], now=now)
        node_hosts(self.converge.state, self.tmp_path / "node")
        return switch_state(self.converge.state)

    def hook(self, n):
        """Master `n`'s node hook; returns the status it reports."""
        return node_hook(self.tmp_path, self.converge.state, n, self.roots[n])[2]

    def manifest(self, n):
        """Master `n`'s static pod manifest as its node hook wrote it."""
        return (self.roots[n] / MANIFEST).read_text()

    def first_converge(self, gv, wanted, now):
        """The first converge with `gv`: each master's node hook counts the `wanted`
        images of the list and nothing cached."""
        self.again(gv, now)
        for n, _ in MASTERS:
            assert self.hook(n)["warm"] == f"0/{wanted}"

    def warm_and_switch(self, gv, wanted, now):
        """After `first_converge`: starts the masters, waits for each to cache the `wanted`
        images, and switches the cluster to them (converges at now+1, now+302 and the render
        after the switch at now+303). Returns the warm list's hash; CacheWarm is True and
        every master's node hook reports that hash."""
        self.regs = [NodeRegistry(self.converge.state, n, self.tmp_path / f"run-{n}", host_root=self.roots[n]).start()
                     for n, _ in MASTERS]
        for r in self.regs:
            wait_until(lambda: warm_done(r, wanted), timeout=180, what=f"release A's warm-up on {r.host}")
        list_hash = self.regs[0].warm_progress()["listHash"]
        for n, _ in MASTERS:
            assert self.hook(n)["warmListHash"] == list_hash
        self.again(gv, now + 1)
        state, cond = self.again(gv, now + 302)
        assert state["cluster"] == "Embedded" and cond["CacheWarm"]["status"] == "True", cond
        self.again(gv, now + 303)  # the render after the switch: the pods' images name the pull address
        for n, _ in MASTERS:  # (kubelet's stand-in keeps them running: its images are the test's binaries)
            assert self.hook(n)["warmListHash"] == list_hash
        return list_hash

    def restart_without_upstream(self):
        """The outage (test_warm_cache.restart_without_upstream): the upstream stops and
        every master restarts cache-only from what its node hook wrote."""
        self.regs = restart_without_upstream(self.up, self.regs, self.hook, self.converge, self.tmp_path, self.roots)

    def assert_each_master_serves(self, digests, layouts):
        """Every manifest digest of `digests` copies from each master on its own with
        skopeo (the read-only user), and every blob of its layout in `layouts` (when it
        has one) arrives byte for byte."""
        ro = secret_data(self.converge.state, "registry-user-ro")
        for r in self.regs:
            for md in digests:
                dest = self.tmp_path / f"pulled-{r.host.split(':')[0]}-{md[7:19]}"
                p = skopeo("copy", f"--src-cert-dir={r.certs}", f"--src-creds=ro:{ro['password']}",
                           f"docker://{r.host}/{REPO}@{md}", f"oci:{dest}:x")
                assert p.returncode == 0, f"{r.host} {md}: {p.stderr.strip()[-400:]}"
                layout = layouts.get(md)
                if layout is not None:
                    for f in (layout / "blobs/sha256").iterdir():
                        assert (dest / "blobs/sha256" / f.name).read_bytes() == f.read_bytes(), f"{md}: {f.name}"

    def stop(self):
        """Stops the masters' registries that run."""
        for r in self.regs:
            r.stop()

