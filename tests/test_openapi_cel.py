"""The settings' cross-field rules as Deckhouse evaluates them: the CEL expressions of
`x-deckhouse-validations` in openapi/config-values.yaml, run with a CEL interpreter
(PyPI cel-python) the way deckhouse-controller runs them, give the same verdict and the
same one-line message as the local converge (settings::check) on the bad-config
catalogue and on the good examples; and Deckhouse's own schema cases,
openapi/openapi-case-tests.yaml, hold against the schema (+CEL) and the converge.

"Settings accepted" is seen without a whole converge: the converge validates the
settings before it reads the node list, so with a node file that does not exist it
stops on that file only when the settings passed."""
import copy
import json

import celpy
import jsonschema
import pytest
import yaml

from conftest import EXAMPLES, ROOT, module_config, run
from test_reliability import CONVERGE_CATALOGUE

OPENAPI = ROOT / "openapi"
PREFIX = "error: invalid ModuleConfig: "


def load(name):
    return yaml.safe_load((OPENAPI / name).read_text())


CONFIG = load("config-values.yaml")


# --- CEL as deckhouse-controller evaluates it --------------------------------------------

class CelError(Exception):
    """An expression that neither passed nor failed (Deckhouse rejects the whole config)."""


_env = celpy.Environment()
_programs = {}


def _program(expression):
    if expression not in _programs:
        _programs[expression] = _env.program(_env.compile(expression))
    return _programs[expression]


def cel_messages(schema, value):
    """The messages of the failing rules, as deckhouse-controller's cel.Validate gives
    them: the rules of nested properties first, then the schema's own, in order; an
    evaluation that fails on a missing key counts as passed."""
    out = []
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name in value:
                out += cel_messages(sub, value[name])
    for rule in schema.get("x-deckhouse-validations") or []:
        try:
            result = _program(rule["expression"]).evaluate({"self": celpy.json_to_cel(value)})
        except celpy.CELEvalError as e:
            raise CelError(f"{rule['expression']}: {e}") from e
        if isinstance(result, celpy.CELEvalError):
            if "no such" in str(result.args).lower():
                continue
            raise CelError(f"{rule['expression']}: {result.args}")
        if not isinstance(result, celpy.celtypes.BoolType):
            raise CelError(f"{rule['expression']}: not a boolean: {result!r}")
        if not result:
            out.append(rule["message"])
    return out


def all_rules(schema):
    rules = list(schema.get("x-deckhouse-validations") or [])
    for sub in (schema.get("properties") or {}).values():
        rules += all_rules(sub)
    return rules


# --- the schema as the runner reads it (schema.rs: x- keys dropped, objects closed) ------

def to_json_schema(v):
    if isinstance(v, dict):
        out = {}
        for k, sub in v.items():
            if k.startswith("x-"):
                continue
            if k in ("properties", "patternProperties"):
                out[k] = {n: to_json_schema(s) for n, s in sub.items()}
            elif k in ("default", "enum", "examples"):
                out[k] = sub
            else:
                out[k] = to_json_schema(sub)
        if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(v, list):
        return [to_json_schema(x) for x in v]
    return v


def apply_defaults(schema, value):
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                apply_defaults(sub, value[name])
    return value


def values_schema():
    values = load("values.yaml")
    base = load(values.pop("x-extend")["schema"])

    def merge(b, o):
        for k, v in o.items():
            if isinstance(b.get(k), dict) and isinstance(v, dict):
                merge(b[k], v)
            else:
                b[k] = v
    merge(base, values)
    return base


def schema_errors(schema, value):
    value = apply_defaults(schema, copy.deepcopy(value))
    return [e.message for e in jsonschema.Draft7Validator(to_json_schema(schema)).iter_errors(value)]


# --- the converge's verdict ---------------------------------------------------------------

def converge_verdict(tmp_path, settings, name="mc.yaml"):
    """None when the converge accepts the settings, else its one-line message (after
    'error: invalid ModuleConfig: ')."""
    absent = tmp_path / "no-such-nodes.yaml"
    p = run(["converge", "--module-config", str(module_config(tmp_path, settings, name=name)),
             "--state", str(tmp_path / "state"), "--module-dir", str(ROOT), "--json",
             "--nodes", str(absent)], env=None)
    lines = p.stderr.splitlines()
    assert p.returncode == 2 and len(lines) == 1 and p.stdout == "", p.stderr[:2000]
    assert not (tmp_path / "state").exists()
    if lines[0].startswith(f"error: --nodes {absent}: cannot read"):
        return None
    assert lines[0].startswith(PREFIX), lines[0][:500]
    return lines[0][len(PREFIX):]


# --- the cases ----------------------------------------------------------------------------

S3 = {"endpoint": "https://s3.example.com:3900", "region": "garage", "bucket": "registry", "accessKey": "GK1", "secretKey": "sk"}

# Every branch of settings::check (the Rust unit test's cases and the rest).
CROSS_FIELD = [
    {"mode": "Proxy"},
    {},
    {"mode": "Detached"},
    {"mode": "Direct", "proxy": {"host": "h"}},
    {"proxy": {"host": "h"}},
    {"mode": "Detached", "detached": {}, "proxy": {"host": "h"}},
    {"mode": "Proxy", "proxy": {"host": "h"}, "detached": {}},
    {"mode": "Direct", "detached": {}},
    {"mode": "Detached", "detached": {}, "highAvailability": True},
    {"mode": "Direct", "highAvailability": False},
    {"mode": "Proxy", "proxy": {"host": "h"}, "highAvailability": True},
    {"mode": "Proxy", "proxy": {"host": "h", "user": "u"}},
    {"mode": "Proxy", "proxy": {"host": "h", "password": "p"}},
    {"mode": "Proxy", "proxy": {"path": "/x"}},
    {"mode": "Proxy", "proxy": {"path": "/x", "user": "u"}},
    {"mode": "Proxy", "proxy": {"host": "h", "user": "u", "password": "p"}},
    {"mode": "Mirror", "proxy": {"host": "h"}},
    {"mode": "Direct", "proxy": {"user": "u"}, "highAvailability": True},
    {"mode": "Proxy", "proxy": {"host": "h", "ttl": "7d"}},
    {"mode": "Detached", "detached": {"rotation": {"minAge": "99999999999999999999h"}}},
    # S3 (issue 16): s3 exactly with storageMode S3, its required fields, the endpoint's
    # scheme, and highAvailability with Detached on S3.
    {"mode": "Detached", "detached": {"storageMode": "S3"}},
    {"mode": "Proxy", "proxy": {"host": "h", "storageMode": "S3"}},
    {"mode": "Detached", "detached": {"s3": S3}},
    {"mode": "Proxy", "proxy": {"host": "h", "storageMode": "Fs", "s3": S3}},
    {"mode": "Detached", "detached": {"storageMode": "S3", "s3": S3}, "highAvailability": True},
    {"mode": "Detached", "detached": {"storageMode": "Fs"}, "highAvailability": True},
    {"mode": "Proxy", "proxy": {"host": "h", "storageMode": "S3", "s3": S3}},
    {"mode": "Direct", "detached": {"storageMode": "S3"}},
    *[{"mode": m, sec: dict({"host": "h"} if sec == "proxy" else {}, storageMode="S3",
                            s3={k: v for k, v in S3.items() if k != gone})}
      for m, sec in (("Proxy", "proxy"), ("Detached", "detached"))
      for gone in ("endpoint", "region", "bucket", "accessKey", "secretKey")],
    *[{"mode": m, sec: dict({"host": "h"} if sec == "proxy" else {}, storageMode="S3",
                            s3=dict(S3, endpoint="s3.example.com:3900"))}
      for m, sec in (("Proxy", "proxy"), ("Detached", "detached"))],
    {"mode": "Detached", "detached": {"storageMode": "S3", "s3": "https://GK1:sk@s3.example.com"}},
]


def examples():
    out = [pytest.param(ex, id=f"x-examples[{i}]") for i, ex in enumerate(CONFIG["x-examples"])]
    for path in sorted(EXAMPLES.glob("moduleconfig-*.yaml")):
        out.append(pytest.param(yaml.safe_load(path.read_text())["spec"]["settings"], id=path.name))
    return out


CASES = ([pytest.param(p.values[0], id=f"catalogue: {p.id}") for p in CONVERGE_CATALOGUE]
         + [pytest.param(s, id=f"cross-field: {json.dumps(s)}") for s in CROSS_FIELD]
         + examples())


def test_every_cross_field_rule_has_a_cel_twin_and_every_rule_fires():
    rules = all_rules(CONFIG)
    messages = [r["message"] for r in rules]
    assert len(rules) >= 11 and len(set(messages)) == len(messages)
    for r in rules:
        assert set(r) == {"expression", "message"}, r
        assert "\n" not in r["message"] and r["message"].startswith("spec.settings."), r
        _program(r["expression"])  # compiles
    fired = set()
    for case in CASES:
        try:
            fired |= set(cel_messages(CONFIG, copy.deepcopy(case.values[0])))
        except CelError:
            pass
    assert fired == set(messages), f"never fired: {set(messages) - fired}"


@pytest.mark.parametrize("settings", CASES)
def test_cel_gives_the_converge_verdict_and_message(tmp_path, settings):
    rule_messages = {r["message"] for r in all_rules(CONFIG)}
    verdict = converge_verdict(tmp_path, settings)
    try:
        raw = cel_messages(CONFIG, copy.deepcopy(settings))
        defaulted = cel_messages(CONFIG, apply_defaults(CONFIG, copy.deepcopy(settings)))
    except CelError:
        # An expression that cannot be evaluated on this input (a value of the wrong
        # type): the converge must reject it for that, with a message of its own.
        assert verdict is not None and verdict not in rule_messages, verdict
        assert schema_errors(CONFIG, settings) or verdict.startswith("spec.settings.mode:")
        return
    assert raw == defaulted, "Deckhouse may evaluate before or after defaulting: same verdict"
    if raw:
        # The converge stops at the first failing rule; Deckhouse shows them all.
        assert verdict == raw[0], f"converge: {verdict}\nCEL: {raw}"
    else:
        assert verdict is None or verdict not in rule_messages, verdict


# --- openapi-case-tests.yaml ----------------------------------------------------------------

CASE_TESTS = load("openapi-case-tests.yaml")


def case_params(kind):
    out = []
    for verdict in ("positive", "negative"):
        for i, v in enumerate(CASE_TESTS[verdict][kind]):
            out.append(pytest.param(verdict, v, id=f"{verdict}.{kind}[{i}]"))
    return out


def test_case_tests_have_both_kinds():
    assert set(CASE_TESTS) == {"positive", "negative"}
    for verdict in ("positive", "negative"):
        assert set(CASE_TESTS[verdict]) == {"configValues", "values"}
        assert CASE_TESTS[verdict]["configValues"] and CASE_TESTS[verdict]["values"]


@pytest.mark.parametrize("verdict,settings", case_params("configValues"))
def test_config_values_cases(tmp_path, verdict, settings):
    try:
        rejected_by_cel = bool(cel_messages(CONFIG, copy.deepcopy(settings)))
    except CelError:
        rejected_by_cel = True
    rejected = bool(schema_errors(CONFIG, settings)) or rejected_by_cel
    assert rejected == (verdict == "negative"), (settings, schema_errors(CONFIG, settings))
    converged = converge_verdict(tmp_path, settings)
    assert (converged is not None) == (verdict == "negative"), converged


@pytest.mark.parametrize("verdict,values", case_params("values"))
def test_values_cases(verdict, values):
    schema = values_schema()
    try:
        rejected_by_cel = bool(cel_messages(schema, copy.deepcopy(values)))
    except CelError:
        rejected_by_cel = True
    errors = schema_errors(schema, values)
    assert (bool(errors) or rejected_by_cel) == (verdict == "negative"), (values, errors)


# --- x-doc-default ----------------------------------------------------------------------------

def scalar_defaults(schema, path=""):
    out = {}
    for name, sub in (schema.get("properties") or {}).items():
        p = f"{path}.{name}" if path else name
        if "default" in sub and not isinstance(sub["default"], (dict, list)):
            out[p] = (sub["default"], sub.get("x-doc-default"))
        out |= scalar_defaults(sub, p)
    return out


def test_every_default_is_documented_with_x_doc_default():
    defaults = scalar_defaults(CONFIG)
    assert len(defaults) >= 9
    for path, (default, doc) in defaults.items():
        assert doc == default, f"{path}: default {default!r}, x-doc-default {doc!r}"


def test_a_default_the_hooks_apply_is_documented_too():
    """nodeAcknowledgementTimeout has no schema default (absent means the hooks'
    default); its x-doc-default and description name the hooks' value."""
    import re
    # The constant, wherever the module crate keeps it (exactly one definition).
    found = [m.group(1) for f in sorted((ROOT / "hooks/registry/src").rglob("*.rs"))
             for m in re.finditer(r"DEFAULT_ACK_TIMEOUT_SECS: i64 = (\d+);", f.read_text())]
    assert len(found) == 1, found
    secs = int(found[0])
    prop = CONFIG["properties"]["nodeAcknowledgementTimeout"]
    doc = prop["x-doc-default"]
    assert re.fullmatch(r"\d+m", doc) and int(doc[:-1]) * 60 == secs, doc
    assert f"default `{doc}`" in prop["description"]
