"""How the module ships: module.yaml against the Deckhouse module linter's definition-file
rules, the image definitions in images/ against its werf rules and against the chart,
and the manager image's binary built as the image builds it (statically linked) and run
as the image runs it: in an otherwise empty root holding only the binary and the hook
links of images/manager/hooks.list (`hook list`, `hook config`, each hook's `--config`,
a node-hook run, a name lookup).

The static build is a second release build (its own target dir, target/static), run
once per test session: from cold it took 11 min of CPU (32 min wall on two cores shared
with other builds); after a change of this crate only, the crate's own compile and link.
Its duration is printed on stderr."""
import json
import os
import pathlib
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonschema
import pytest
import yaml

from conftest import ROOT, run
from test_reliability import GOOD_FILES, node_config

IMAGES = ROOT / "images"
HOOKS_LIST = IMAGES / "manager" / "hooks.list"
STATIC_TARGET = ROOT / "target" / "static"
TRIPLE = "x86_64-unknown-linux-gnu"
MODULE_ONLY_BINDINGS = {"beforeHelm", "afterHelm", "afterDeleteHelm", "beforeAll", "afterAll"}


def load(rel):
    return yaml.safe_load((ROOT / rel).read_text())


# --- module.yaml: the linter's definition-file rule ------------------------------------------

CONSTRAINT = re.compile(r"^\s*(>=|>|=|<=|<|~|\^)?\s*v?\d+(\.\d+){0,2}\s*$")


def test_module_yaml_passes_the_definition_file_rules():
    m = load("module.yaml")
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", m["name"]) and len(m["name"]) <= 64
    assert m["stage"] in ("Experimental", "Preview", "General Availability", "Deprecated")
    assert m["descriptions"]["en"] and m["descriptions"]["ru"] and "description" not in m
    # The registry is needed before other modules can pull: critical, and a critical
    # module needs a non-zero weight.
    assert m["critical"] is True
    assert isinstance(m["weight"], int) and m["weight"] > 0
    req = m["requirements"]
    for key in ("deckhouse", "kubernetes"):
        assert all(CONSTRAINT.match(part) for part in req[key].split(",")), req[key]
    # `stage` needs Deckhouse >= 1.68 (the linter's requirements rule).
    lowest = tuple(int(x) for x in re.search(r">=\s*v?(\d+)\.(\d+)", req["deckhouse"]).groups())
    assert lowest >= (1, 68)
    assert isinstance(m["tags"], list) and all(isinstance(t, str) for t in m["tags"])
    assert m["disable"]["confirmation"] is True and m["disable"]["message"]


# --- images/: werf definitions --------------------------------------------------------------

def werf_docs(path):
    """The YAML documents of a werf.inc.yaml with its Go template actions replaced by
    placeholders (werf renders them; here only the structure is checked)."""
    text = path.read_text()
    text = re.sub(r"\{\{-?\s*/\*.*?\*/\s*-?\}\}\n?", "", text, flags=re.S)
    text = re.sub(r"^\{\{-?\s*\$\w+\s*:=.*?\}\}\n", "", text, flags=re.M)
    text = re.sub(r"\{\{-?\s*\.ModuleName\s*-?\}\}", "embedded-registry", text)
    text = re.sub(r"\{\{-?\s*\.ImageName\s*-?\}\}", path.parent.name, text)
    text = re.sub(r"\{\{.*?\}\}", "TEMPLATED", text)
    return [d for d in yaml.safe_load_all(text) if d]


def camel(name):
    head, *rest = name.split("-")
    return head + "".join(p.capitalize() for p in rest)


def image_dirs():
    return sorted(p.parent for p in IMAGES.glob("*/werf.inc.yaml"))


def test_every_image_the_chart_uses_has_a_build_definition():
    used = set(re.findall(r'"embedded_registry\.image"\s+\(dict\s+"ctx"\s+\S+\s+"name"\s+"(\w+)"\)',
                          "".join(p.read_text() for p in (ROOT / "templates").glob("*"))))
    defaults = yaml.safe_load((ROOT / "hooks/registry/src/converge/global-defaults.yaml").read_text())
    digests = set(defaults["modulesImages"]["digests"]["embeddedRegistry"])
    built = {camel(d.name) for d in image_dirs()}
    assert used == {"distribution", "dockerAuth", "manager"}, used
    assert used == digests == built, (used, digests, built)


@pytest.mark.parametrize("image_dir", image_dirs(), ids=lambda p: p.name)
def test_werf_definitions_follow_the_linter_rules(image_dir):
    docs = werf_docs(image_dir / "werf.inc.yaml")
    final_name = f"embedded-registry/{image_dir.name}"
    names = [d.get("image") for d in docs]
    assert all(d.get("image") for d in docs), "every document is an image (no deprecated `artifact:`)"
    assert not any("artifact" in d for d in docs)
    assert names.count(final_name) == 1, names
    for d in docs:
        assert d["image"].startswith(f"{final_name}"), d["image"]
        assert str(d.get("fromImage", "")).split("/")[0] in ("base", "common", "builder"), d
        assert "user" not in (d.get("imageSpec", {}).get("config") or {}), "the user is the base image's"
        if d["image"] != final_name:
            assert d.get("final") is False, d["image"]
    final = next(d for d in docs if d["image"] == final_name)
    assert final["fromImage"] in ("base/distroless", "common/distroless"), "final images are distroless"
    assert final["imageSpec"]["config"]["entrypoint"]
    for imp in final["import"]:
        assert imp["image"] in names and imp["image"] != final_name


def hooks_list():
    lines = [line.strip() for line in HOOKS_LIST.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_the_manager_image_links_every_listed_hook_and_runs_shell_operator():
    text = (IMAGES / "manager" / "werf.inc.yaml").read_text()
    assert "images/manager/hooks.list" in text, "the image builds its links from the one list"
    final = next(d for d in werf_docs(IMAGES / "manager" / "werf.inc.yaml")
                 if d["image"] == "embedded-registry/manager")
    config = final["imageSpec"]["config"]
    assert config["entrypoint"] == ["/shell-operator"] and config["env"]["SHELL_OPERATOR_HOOKS_DIR"] == "/hooks"
    names = hooks_list()
    assert names and len(set(names)) == len(names)
    module_hooks = [line.split(" - ", 1)[1] for line in run(["hook", "list"]).stdout.splitlines()[1:]]
    assert not set(names) & set(module_hooks), "module hooks run in addon-operator, not in the manager"


# --- the static binary in an empty root -----------------------------------------------------

@pytest.fixture(scope="session")
def static_binary():
    """Builds the binary as the manager image does: glibc, crt-static (the machine has no
    musl target), its own target dir; once per session."""
    env = dict(os.environ, RUSTFLAGS="-C target-feature=+crt-static")
    started = time.monotonic()
    p = subprocess.run(["cargo", "build", "--release", "--locked", "--quiet", "--target", TRIPLE,
                        "--target-dir", str(STATIC_TARGET)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=3600)
    took = time.monotonic() - started
    assert p.returncode == 0, p.stderr[-5000:]
    sys.stderr.write(f"\nstatic build: {took:.0f}s\n")
    return STATIC_TARGET / TRIPLE / "release" / "embedded-registry"


def elf_dynamic_facts(path):
    """(has a PT_INTERP, the DT_NEEDED count) of an ELF64 little-endian file."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "ELF64 LE"
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    interp, needed = False, 0
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if p_type == 3:
            interp = True
        if p_type == 2:
            for off in range(p_offset, p_offset + p_filesz, 16):
                tag, _ = struct.unpack_from("<qQ", data, off)
                if tag == 0:
                    break
                needed += tag == 1
    return interp, needed


def test_the_image_binary_is_statically_linked(static_binary):
    assert elf_dynamic_facts(static_binary) == (False, 0)
    # The check has teeth: the test build of the same source is dynamic.
    interp, needed = elf_dynamic_facts(ROOT / "target" / "release" / "embedded-registry")
    assert interp and needed > 0


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")


@pytest.fixture
def image_root(tmp_path, static_binary):
    """An otherwise empty root with what the manager image puts there: the binary, the
    links of hooks.list (made as the image's build makes them), /tmp, and /etc/hosts
    (which the kubelet mounts into every container)."""
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    shutil.copy2(static_binary, root / "usr/bin/embedded-registry")
    (root / "hooks").mkdir()
    for name in hooks_list():
        (root / "hooks" / name).symlink_to("/usr/bin/embedded-registry")
    (root / "tmp").mkdir(mode=0o1777)
    (root / "etc").mkdir()
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n127.0.0.1 upstream.image-test\n")
    return root


def in_root(root, argv, env=None):
    """Runs argv inside `root` (chroot), with only `env` in the environment."""
    def enter():
        os.chroot(root)
        os.chdir("/")
    return subprocess.run(argv, env=env or {}, preexec_fn=enter, capture_output=True, text=True, timeout=120)


@needs_root
def test_hook_list_and_config_in_an_empty_root(image_root):
    p = in_root(image_root, ["/usr/bin/embedded-registry", "hook", "list"])
    assert p.returncode == 0, p.stderr
    assert p.stdout == run(["hook", "list"], env={}).stdout and p.stdout.startswith("Found ")
    p = in_root(image_root, ["/usr/bin/embedded-registry", "hook", "config"])
    assert p.returncode == 0, p.stderr
    config = json.loads(p.stdout)
    jsonschema.validate(config, json.loads((ROOT / "tests/schemas/module-sdk-batch-config.json").read_text()))
    assert config == json.loads(run(["hook", "config"], env={}).stdout)


@needs_root
def test_each_linked_hook_answers_config_as_a_shell_operator_hook(image_root):
    schema = json.loads((ROOT / "tests/schemas/shell-operator-config-v1.json").read_text())
    for name in hooks_list():
        p = in_root(image_root, [f"/hooks/{name}", "--config"], env={"NODE_NAME": "m1"})
        assert p.returncode == 0, (name, p.stderr)
        config = json.loads(p.stdout)
        jsonschema.validate(config, schema)
        assert not MODULE_ONLY_BINDINGS & set(config), f"{name}: a node hook has no module bindings"
        assert config == json.loads(run(["classic", name, "--config"], env={"NODE_NAME": "m1"}).stdout)
    # The check has teeth: a module hook under a link answers with module bindings.
    (image_root / "hooks" / "pki").symlink_to("/usr/bin/embedded-registry")
    p = in_root(image_root, ["/hooks/pki", "--config"])
    assert p.returncode == 0 and MODULE_ONLY_BINDINGS & set(json.loads(p.stdout)), p.stderr


@needs_root
def test_a_node_hook_run_in_an_empty_root_writes_the_masters_files(image_root):
    """node-files as shell-operator runs it in the manager pod (as root, host root under
    /host): the node's Secret becomes files owned by the registry's user."""
    (image_root / "host").mkdir()
    (image_root / "run").mkdir()
    bc = [{"binding": "node_config", "type": "Synchronization",
           "objects": [{"object": node_config(GOOD_FILES)}], "snapshots": {"node_status": []}}]
    (image_root / "run/bc.json").write_text(json.dumps(bc))
    env = {"BINDING_CONTEXT_PATH": "/run/bc.json", "NODE_NAME": "m1", "EMBEDDED_REGISTRY_HOST_ROOT": "/host",
           "KUBERNETES_PATCH_PATH": "/run/k8s.json", "METRICS_PATH": "/run/metrics.json"}
    p = in_root(image_root, ["/hooks/node-files"], env=env)
    assert p.returncode == 0, p.stderr
    manifest = image_root / "host/etc/kubernetes/manifests/embedded-registry.yaml"
    assert manifest.read_text() == "kind: Pod\n"
    config = image_root / "host/etc/kubernetes/registry/config/distribution.yaml"
    assert config.read_text() == "version: 0.1\n" and config.stat().st_uid == 64535
    k8s = [json.loads(line) for line in (image_root / "run/k8s.json").read_text().splitlines()]
    assert any(op.get("object", {}).get("metadata", {}).get("name") == "registry-node-m1-status"
               for op in k8s), k8s
    # Idempotent: the second run writes nothing.
    p = in_root(image_root, ["/hooks/node-files"], env=env)
    assert p.returncode == 0, p.stderr
    assert not [l for l in p.stderr.splitlines() if json.loads(l)["msg"] in ("wrote", "removed")]


class NotARegistry(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@needs_root
def test_the_static_binary_resolves_names_from_etc_hosts_in_an_empty_root(image_root):
    """Statically linked glibc resolves without its NSS libraries: the upstream check
    reaches a host named only in the root's /etc/hosts (a plain web server, so the check
    fails, but past the name: not a `dns` failure)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), NotARegistry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        argv = ["/usr/bin/embedded-registry", "check-upstream", "--host", f"upstream.image-test:{port}",
                "--path", "/deckhouse/ee", "--scheme", "http", "--json"]
        p = in_root(image_root, argv)
        assert p.returncode == 1, p.stderr
        verdict = json.loads(p.stdout)
        assert verdict["failure"]["kind"] not in ("dns", "connect"), verdict
        # The check has teeth: a name missing from /etc/hosts is a dns failure.
        p = in_root(image_root, [*argv[:3], f"absent.image-test:{port}", *argv[4:]])
        assert p.returncode == 1 and json.loads(p.stdout)["failure"]["kind"] == "dns", p.stdout
    finally:
        server.shutdown()
        server.server_close()



def test_oss_yaml_names_what_the_images_build_at_their_versions():
    oss = {p["name"]: p for p in load("oss.yaml")}
    for name, image, var in [("distribution", "distribution", "version"), ("docker_auth", "docker-auth", "version"),
                             ("shell-operator", "manager", "shellOperatorVersion")]:
        text = (IMAGES / image / "werf.inc.yaml").read_text()
        built = re.search(r"\$%s := \"v?([^\"]+)\"" % var, text).group(1)
        assert oss[name]["version"] == built, (name, built)
        assert oss[name]["license"] and oss[name]["url"].startswith("https://")
