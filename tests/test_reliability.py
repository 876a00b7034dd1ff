"""Bad inputs, as a broken runner, a broken cluster or a mistaken administrator would
give them: the real binary as a process, each case with the one-line error it must
print and no output file written. Inputs a hook must tolerate (and repair) are listed
apart, with what the documentation says happens."""
import base64
import json

import pytest

from conftest import EXAMPLES, module_config, tree_digest
from tools.hookrun import MODULE_OUTPUTS, HookRun, one_error_line

VALUES = {"global": {}, "embeddedRegistry": {"mode": "Direct", "internal": {
    "masters": [{"name": "m", "internalIP": "10.0.0.1"}]}}}
MASTER_GROUP = [{"binding": "main", "type": "Group", "groupName": "main", "snapshots": {
    "masters": [{"filterResult": {"name": "m", "internalIP": "10.0.0.1"}}], "legacy_masters": []}}]
BEFORE_HELM = [{"binding": "beforeHelm", "snapshots": {
    "masters": [], "legacy_masters": [], "pki_secrets": [], "user_secrets": []}}]


def b64(text):
    return base64.b64encode(text.encode()).decode()


def case(id, hook, needles, contexts=MASTER_GROUP, values=VALUES, config_values=None, env=None, args=None):
    """`env`: changes to the runner's environment; None as a value unsets the variable;
    '{dir}' in a value is the run's directory."""
    return pytest.param(hook, needles, contexts, values, config_values, env or {}, args, id=id)


HUGE = "x" * 2_000_000
TRUNCATED = json.dumps(MASTER_GROUP)[:57]

CATALOGUE = [
    # Files and variables.
    case("binding context file missing", "discover-masters", ["BINDING_CONTEXT_PATH=", "nope.json", "cannot read"],
         env={"BINDING_CONTEXT_PATH": "{dir}/nope.json"}),
    case("binding context file unreadable (a directory)", "discover-masters", ["BINDING_CONTEXT_PATH=", "cannot read"],
         env={"BINDING_CONTEXT_PATH": "{dir}"}),
    case("binding context variable unset", "resolve-mode", ["BINDING_CONTEXT_PATH is not set"],
         env={"BINDING_CONTEXT_PATH": None}),
    case("values file missing", "resolve-mode", ["VALUES_PATH=", "absent.json", "cannot read"],
         env={"VALUES_PATH": "{dir}/absent.json"}),
    case("values variable unset", "resolve-mode", ["VALUES_PATH is not set"], env={"VALUES_PATH": None}),
    case("config values file missing", "pki", ["CONFIG_VALUES_PATH=", "absent.json", "cannot read"],
         env={"CONFIG_VALUES_PATH": "{dir}/absent.json"}),
    # The values patch is staged first; the metrics file cannot be: neither lands.
    case("output directory missing", "discover-masters", ["METRICS_PATH", "no-such-dir"],
         values={"global": {}, "embeddedRegistry": {"internal": {}}},
         env={"METRICS_PATH": "{dir}/no-such-dir/metrics.json"}),
    case("hook index out of range", "discover-masters", ["no hook with index \"99\""], args=["hook", "run", "99"]),
    case("hook index not a number", "discover-masters", ["no hook with index \"first\""], args=["hook", "run", "first"]),
    # Truncated JSON.
    case("empty binding context", "discover-masters", ["BINDING_CONTEXT_PATH=", "empty file"], contexts=""),
    case("truncated binding context", "discover-masters", ["BINDING_CONTEXT_PATH=", "not a JSON array of binding contexts"],
         contexts=TRUNCATED),
    case("truncated values", "resolve-mode", ["VALUES_PATH=", "malformed JSON"], values=json.dumps(VALUES)[:30]),
    case("truncated config values", "users", ["CONFIG_VALUES_PATH=", "malformed JSON"], config_values='{"embeddedRegistry": {'),
    # Wrong types.
    case("binding context is an object", "discover-masters", ["not a JSON array of binding contexts"],
         contexts={"binding": "main"}),
    case("binding is a number", "discover-masters", ["not a JSON array of binding contexts", "invalid type"],
         contexts=[{"binding": 5}]),
    case("snapshots is a list", "discover-masters", ["not a JSON array of binding contexts", "invalid type"],
         contexts=[{"binding": "main", "type": "Group", "snapshots": []}]),
    case("values is a list", "resolve-mode", ["VALUES_PATH=", "expected a JSON object"], values=[1, 2]),
    case("node name is a number", "discover-masters", ["snapshot masters[0]", "invalid type"],
         contexts=[{"binding": "main", "type": "Group", "snapshots": {
             "masters": [{"filterResult": {"name": 5, "internalIP": "10.0.0.1"}}], "legacy_masters": []}}]),
    case("masters in values is a string", "resolve-mode", ["values embeddedRegistry.internal.masters", "invalid type"],
         contexts=[{"binding": "beforeHelm"}],
         values={"global": {}, "embeddedRegistry": {"mode": "Proxy", "internal": {"masters": "m"}}}),
    case("secret data is a list", "users", ["snapshot user_secrets[0]", "invalid type"],
         contexts=[{"binding": "beforeHelm", "snapshots": {"user_secrets": [
             {"filterResult": {"name": "registry-user-ro", "data": ["x"]}}]}}]),
    case("renewal threshold is a string", "pki", ["values embeddedRegistry.certificates.renewalThresholdPercent"],
         contexts=BEFORE_HELM,
         values={"global": {}, "embeddedRegistry": {"certificates": {"renewalThresholdPercent": "33"}, "internal": {}}}),
    # Unknown bindings and context types.
    case("unknown context type", "discover-masters", ["unknown variant `Bogus`"],
         contexts=[{"binding": "main", "type": "Bogus"}]),
    case("event without watchEvent", "discover-masters", ["an Event context needs watchEvent"],
         contexts=[{"binding": "masters", "type": "Event"}]),
    case("unknown binding, discover-masters", "discover-masters", ["no snapshot of binding masters or legacy_masters"],
         contexts=[{"binding": "nonexistent", "type": "Schedule"}]),
    case("unknown binding, pki", "pki", ["no snapshot of binding pki_secrets"],
         contexts=[{"binding": "nonexistent", "type": "Schedule"}]),
    case("unknown binding, users", "users", ["no snapshot of binding user_secrets"],
         contexts=[{"binding": "nonexistent"}]),
    # Huge strings: the error stays one line the runner keeps whole.
    case("huge string of the wrong type", "discover-masters", ["snapshot masters[0]", "invalid type"],
         contexts=[{"binding": "main", "type": "Group", "snapshots": {
             "masters": [{"filterResult": {"name": "m", "internalIP": 5, "pad": HUGE}}, {"filterResult": HUGE}],
             "legacy_masters": []}}]),
    case("huge unknown mode", "resolve-mode", ["values embeddedRegistry.mode", "unknown variant"],
         contexts=[{"binding": "beforeHelm"}], values={"global": {}, "embeddedRegistry": {"mode": HUGE, "internal": {}}}),
    case("huge binding name, unknown type", "discover-masters", ["unknown variant"],
         contexts=[{"binding": HUGE, "type": HUGE}]),
]


@pytest.mark.parametrize("precreate", [False, True], ids=["outputs absent", "outputs precreated"])
@pytest.mark.parametrize("hook,needles,contexts,values,config_values,env,args", CATALOGUE)
def test_bad_input_fails_with_one_line_and_writes_nothing(tmp_path, precreate, hook, needles, contexts, values,
                                                          config_values, env, args):
    f = HookRun.module(tmp_path, contexts, values, config_values, precreate=precreate)
    changes = {k: v if v is None else v.replace("{dir}", str(tmp_path)) for k, v in env.items()}
    p = f.run(*args, env=changes) if args else f.hook(hook, env=changes)
    assert p.returncode == 1, p.stderr[:2000]
    assert p.stdout == ""
    msg = one_error_line(p)
    for needle in needles:
        assert needle in msg, msg[:2000]
    assert f.written() == set(), "a failed run writes no output file"
    inputs = ["bc.json", "config-values.json", "values.json"]
    assert f.files() == sorted(inputs + (list(MODULE_OUTPUTS.values()) if precreate else [])), \
        "and leaves no temporary file"


# --- node hook (classic, shell-operator in the manager DaemonSet) --------------------------

def node_config(data, node="m1"):
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": f"registry-node-{node}-config", "namespace": "d8-system",
                         "annotations": {"embedded-registry.deckhouse.io/config-hash": "h"}},
            "data": data}


GOOD_FILES = {"config.distribution.yaml": b64("version: 0.1\n"), "pki.ca.crt": b64("CA\n"),
              "manifest.embedded-registry.yaml": b64("kind: Pod\n")}

NODE_CATALOGUE = [
    pytest.param({**GOOD_FILES, "pki...": b64("x")}, {}, ["pki...", "refusing"], id="key .. escapes the PKI dir"),
    pytest.param({**GOOD_FILES, "config./etc/passwd": b64("x")}, {}, ["refusing"], id="key with a slash"),
    pytest.param({**GOOD_FILES, "manifest..hidden": b64("x")}, {}, ["refusing"], id="hidden manifest"),
    pytest.param({**GOOD_FILES, "etc.passwd": b64("x")}, {}, ["not config.*, pki.* or manifest.*"], id="unknown prefix"),
    pytest.param({**GOOD_FILES, "pki.ca.key": "%%% not base64"}, {}, ["not base64 of UTF-8 text"], id="value not base64"),
    pytest.param({k: v for k, v in GOOD_FILES.items() if not k.startswith("manifest")}, {},
                 ["no manifest.embedded-registry.yaml"], id="no manifest"),
    pytest.param(GOOD_FILES, {"NODE_NAME": None}, ["NODE_NAME is not set"], id="NODE_NAME unset"),
    pytest.param(GOOD_FILES, {"EMBEDDED_REGISTRY_FILE_OWNER": "root"}, ["EMBEDDED_REGISTRY_FILE_OWNER", "uid:gid"],
                 id="owner not uid:gid"),
]


def node_files_run(tmp_path, host, data):
    """The node hook's run (master m1, host root `host`) on a Synchronization of its
    Secret holding `data`."""
    ctx = [{"binding": "node_config", "type": "Synchronization", "objects": [{"object": node_config(data)}]}]
    return HookRun.node(tmp_path, ctx, host_root=host, env={"EMBEDDED_REGISTRY_FILE_OWNER": "none"})


@pytest.mark.parametrize("data,env,needles", NODE_CATALOGUE)
def test_node_hook_refuses_bad_secrets_before_touching_the_host(tmp_path, data, env, needles):
    host = tmp_path / "host"
    host.mkdir()
    r = node_files_run(tmp_path, host, data)
    p = r.classic("node-files", env=env)
    assert p.returncode == 1, p.stderr
    msg = one_error_line(p)
    for needle in needles:
        assert needle in msg, msg
    assert list(host.rglob("*")) == [], "nothing written on the host"
    assert r.written() == set()


def test_node_hook_writes_the_good_secret(tmp_path):
    """The catalogue's baseline: the same run with a good Secret succeeds."""
    host = tmp_path / "host"
    host.mkdir()
    p = node_files_run(tmp_path, host, GOOD_FILES).classic("node-files")
    assert p.returncode == 0, p.stderr
    assert (host / "etc/kubernetes/manifests/embedded-registry.yaml").read_text() == "kind: Pod\n"
    assert (host / "etc/kubernetes/registry/pki/ca.crt").read_text() == "CA\n"


# --- inputs a hook tolerates: documented repairs, not errors --------------------------------

def ok_run(tmp_path, hook, contexts, values=VALUES):
    r = HookRun.module(tmp_path, contexts, values)
    p = r.hook(hook)
    assert p.returncode == 0, p.stderr
    logs = [json.loads(line) for line in p.stderr.splitlines()]
    return p, logs, r.values_patch(), r.k8s()


def test_null_filter_results_are_skipped_in_every_snapshot(tmp_path):
    """A jqFilter that answers null means "nothing of interest": skipped, not an error."""
    (tmp_path / "masters").mkdir()
    ctx = [{"binding": "main", "type": "Group", "groupName": "main", "snapshots": {
        "masters": [{"filterResult": None}, {"filterResult": {"name": "m", "internalIP": "10.0.0.1"}}],
        "legacy_masters": [{"filterResult": None}]}}]
    _, _, patch, _ = ok_run(tmp_path / "masters", "discover-masters", ctx,
                            values={"global": {}, "embeddedRegistry": {"internal": {}}})
    assert [op["value"] for op in patch if op["path"] == "/embeddedRegistry/internal/masters"] == \
        [[{"name": "m", "internalIP": "10.0.0.1"}]]
    (tmp_path / "users").mkdir()
    ctx = [{"binding": "beforeHelm", "snapshots": {"user_secrets": [{"filterResult": None}]}}]
    _, logs, _, k8s = ok_run(tmp_path / "users", "users", ctx)
    assert {e["msg"] for e in logs} >= {"user ro: created", "user rw: created"}, "a null item is no Secret"
    assert len(k8s) == 3


def test_invalid_pem_is_replaced_at_once_without_quoting_it(tmp_path):
    """docs/internal/pki-and-users.md: an active pair that is broken is replaced at once."""
    junk_key = "KEYMATERIAL" + "q" * 40
    ctx = [{"binding": "beforeHelm", "snapshots": {"pki_secrets": [{"filterResult": {"name": "registry-pki", "data": {
        "ca.crt": b64("-----BEGIN CERTIFICATE-----\nMIIBnotacertificate\n-----END CERTIFICATE-----\n"),
        "ca.key": b64(f"-----BEGIN PRIVATE KEY-----\n{junk_key}\n-----END PRIVATE KEY-----\n")}}}]}}]
    p, logs, patch, k8s = ok_run(tmp_path, "pki", ctx)
    assert any(e["msg"].startswith("CA: replaced at once") for e in logs), logs
    assert junk_key not in p.stderr and "MIIBnotacertificate" not in p.stderr
    pki = next(op["value"] for op in patch if op["path"] == "/embeddedRegistry/internal/pki")
    assert "MIIBnotacertificate" not in pki["caBundle"]
    secret = next(op["object"] for op in k8s if op["object"]["metadata"]["name"] == "registry-pki")
    ca = base64.b64decode(secret["data"]["ca.crt"]).decode()
    assert ca.startswith("-----BEGIN CERTIFICATE-----") and "MIIBnotacertificate" not in ca


def test_invalid_bcrypt_hash_is_recomputed_and_the_password_kept(tmp_path):
    """docs/internal/pki-and-users.md: a hash that does not match its password is recomputed."""
    import bcrypt
    password = "AAAAbbbbCCCCdddd1234"
    ctx = [{"binding": "beforeHelm", "snapshots": {"user_secrets": [{"filterResult": {"name": "registry-user-ro", "data": {
        "name": b64("ro"), "password": b64(password), "passwordHash": b64("$2a$10$not-a-valid-bcrypt-hash")}}}]}}]
    p, logs, patch, k8s = ok_run(tmp_path, "users", ctx)
    assert "user ro: password hash did not match; recomputed" in [e["msg"] for e in logs]
    assert password not in p.stderr
    ro = next(op["object"] for op in k8s if op["object"]["metadata"]["name"] == "registry-user-ro")
    assert base64.b64decode(ro["data"]["password"]).decode() == password, "the password is kept"
    new_hash = base64.b64decode(ro["data"]["passwordHash"])
    assert bcrypt.checkpw(password.encode(), new_hash)
    users = next(op["value"] for op in patch if op["path"] == "/embeddedRegistry/internal/users")
    assert users["ro"]["passwordHash"] == new_hash.decode()


# --- the converge: one line naming the field, exit 2, state untouched ------------------------

PROXY = {"mode": "Proxy", "proxy": {"host": "registry.example.com", "path": "/deckhouse/ee",
                                    "user": "puller", "password": "Pr0xyPa55-d0-not-print"}}

S3_SETTINGS = {"endpoint": "https://s3.example.com:3900", "region": "garage", "bucket": "registry",
               "accessKey": "GK31c2f218a2e44f485b94239e", "secretKey": "Pr0xyPa55-d0-not-print"}

CONVERGE_CATALOGUE = [
    pytest.param({"mode": "Proxy", "proxy": {"path": "/deckhouse/ee"}}, "spec.settings.proxy.host", id="Proxy without host"),
    pytest.param({"mode": "Proxy", "proxy": {"host": "h", "user": "u"}}, "spec.settings.proxy.password",
                 id="user and no password"),
    pytest.param({"mode": "Proxy", "proxy": {"host": "h", "password": "Pr0xyPa55-d0-not-print"}}, "spec.settings.proxy.user",
                 id="password and no user"),
    pytest.param({"mode": "Proxy", "proxy": {"host": "h", "ttl": "1w"}}, "spec.settings.proxy.ttl", id="invalid TTL"),
    pytest.param({"mode": "Proxy", "proxy": {"host": "h", "ttl": "-5m"}}, "spec.settings.proxy.ttl", id="negative TTL"),
    pytest.param({"mode": "Proxy", "proxy": {"host": "h", "path": "/deckhouse/../etc"}}, "spec.settings.proxy.path",
                 id="path with .."),
    pytest.param({"mode": "Proxy", "proxy": {"host": "../h"}}, "spec.settings.proxy.host", id="host with .."),
    pytest.param({"mode": "Proxy", "proxy": {"host": "h", "ca": "-----BEGIN PRIVATE KEY-----"}}, "spec.settings.proxy.ca",
                 id="CA that is not a certificate"),
    pytest.param(dict(PROXY, proxy=dict(PROXY["proxy"], password=["Pr0xyPa55-d0-not-print"])),
                 "spec.settings.proxy.password", id="password of the wrong type"),
    pytest.param(dict(PROXY, proxy=dict(PROXY["proxy"], host="h" * 100_000 + "/")), "spec.settings.proxy.host",
                 id="huge host"),
    # Values are never echoed: what they are is said instead (a mistyped proxy holds the
    # password; a mode may hold control characters), and a wrong type is not taken for
    # the default.
    pytest.param({"mode": "Proxy", "proxy": ["puller", "Pr0xyPa55-d0-not-print"]}, "spec.settings.proxy",
                 id="proxy as a list holding the password"),
    pytest.param({"mode": "Proxy", "proxy": "puller:Pr0xyPa55-d0-not-print@h"}, "spec.settings.proxy",
                 id="proxy as a string holding the password"),
    pytest.param(dict(PROXY, mode=1), "spec.settings.mode", id="mode of the wrong type"),
    pytest.param(dict(PROXY, mode="Pro\nxy\x1b[31m\x00"), "spec.settings.mode", id="mode with control characters"),
    pytest.param({"mode": "Direct", "proxy": {"host": "h", "ttl": ["Pr0xyPa55-d0-not-print"]}}, "spec.settings.proxy",
                 id="proxy in Direct mode holding a secret"),
    pytest.param({"mode": "Detached", "detached": {"storageMode": "Fs\nPr0xyPa55-d0-not-print"}},
                 "spec.settings.detached.storageMode", id="enum value with a newline"),
    # S3 (issue 16): the secret key is never echoed, whatever is wrong around it.
    pytest.param({"mode": "Detached", "detached": {"storageMode": "Fs", "s3": dict(S3_SETTINGS)}},
                 "spec.settings.detached.s3", id="s3 without storageMode S3"),
    pytest.param({"mode": "Detached", "detached": {"storageMode": "S3", "s3": dict(S3_SETTINGS, secretKey=7)}},
                 "spec.settings.detached.s3.secretKey", id="secret key of the wrong type"),
    pytest.param({"mode": "Detached", "detached": {"storageMode": "S3",
                                                   "s3": dict(S3_SETTINGS, endpoint="Pr0xyPa55-d0-not-print")}},
                 "spec.settings.detached.s3.endpoint", id="endpoint without a scheme"),
    pytest.param({"mode": "Proxy", "proxy": {"host": "h", "storageMode": "S3",
                                             "s3": dict(S3_SETTINGS, bucket="Bad_Bucket")}},
                 "spec.settings.proxy.s3.bucket", id="bucket name S3 refuses"),
    pytest.param({"mode": "Detached", "detached": {"storageMode": "S3",
                                                   "s3": {k: v for k, v in S3_SETTINGS.items() if k != "region"}}},
                 "spec.settings.detached.s3.region", id="s3 without region"),
]


@pytest.mark.parametrize("settings,field", CONVERGE_CATALOGUE)
def test_converge_refuses_bad_settings_naming_the_field(converge, tmp_path, settings, field):
    converge(EXAMPLES / "moduleconfig-direct.yaml", EXAMPLES / "nodes-3-masters.yaml")
    before = tree_digest(converge.state)
    p = converge(module_config(tmp_path, settings), expect_rc=2)
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr[:2000]
    assert lines[0].startswith(f"error: invalid ModuleConfig: {field}: "), lines[0][:500]
    assert "Pr0xyPa55-d0-not-print" not in p.stderr
    assert "mode is Direct" not in p.stderr or settings.get("mode", "Direct") == "Direct"
    assert not any(c in p.stderr for c in "\x1b\x00\r"), repr(p.stderr[:500])
    assert p.stdout == ""
    assert tree_digest(converge.state) == before, "state untouched"


@pytest.mark.parametrize("what,needle", [
    ("module config missing", "mc-absent.yaml"),
    ("module config truncated", "mc-cut.yaml"),
    ("module config is a list", "apiVersion"),
    ("nodes file missing", "--nodes"),
    ("nodes truncated", "nodes-cut.yaml"),
])
def test_converge_refuses_unreadable_inputs(converge, tmp_path, what, needle):
    mc = EXAMPLES / "moduleconfig-proxy.yaml"
    nodes = EXAMPLES / "nodes-3-masters.yaml"
    if what == "module config missing":
        mc = tmp_path / "mc-absent.yaml"
    elif what == "module config truncated":
        mc = tmp_path / "mc-cut.yaml"
        mc.write_text("apiVersion: deckhouse.io/v1alpha1\nkind: ModuleConfig\nspec: {settings: [")
    elif what == "module config is a list":
        mc = tmp_path / "mc-list.yaml"
        mc.write_text("- 1\n- 2\n")
    elif what == "nodes file missing":
        nodes = tmp_path / "nodes-absent.yaml"
    else:
        nodes = tmp_path / "nodes-cut.yaml"
        nodes.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": []})[:20])
    p = converge(mc, nodes, expect_rc=2)
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
    assert p.stdout == ""
    assert not converge.state.exists(), "nothing written"


def test_keep_releases_has_a_maximum_and_the_hooks_run_on_it(converge, tmp_path):
    """What the schema accepts, the hooks must run on (found by the settings property
    test, when keepReleases had no maximum and 2**32 blocked resolve-mode)."""
    settings = {"mode": "Detached", "detached": {"rotation": {"keepReleases": 1000}}}
    s = converge(module_config(tmp_path, settings), EXAMPLES / "nodes-3-masters.yaml")
    assert s["mode"] == "Detached"
    too_many = {"mode": "Detached", "detached": {"rotation": {"keepReleases": 2 ** 32}}}
    p = converge(module_config(tmp_path, too_many, name="big.yaml"), EXAMPLES / "nodes-3-masters.yaml", expect_rc=2)
    assert len(p.stderr.strip().splitlines()) == 1 and "spec.settings.detached.rotation.keepReleases" in p.stderr
