"""The module's static files: Deckhouse conventions, the Russian doc twin, Helm lint."""
import json

import helm_python
import yaml

from conftest import EXAMPLES, ROOT

NODES3 = EXAMPLES / "nodes-3-masters.yaml"


def load(rel):
    return yaml.safe_load((ROOT / rel).read_text())


def test_module_yaml_follows_deckhouse_conventions():
    m = load("module.yaml")
    assert m["name"] == "embedded-registry"
    assert m["stage"] in ("Experimental", "Preview", "General Availability", "Deprecated")
    assert isinstance(m["weight"], int) and m["namespace"] == "d8-system"
    assert m["descriptions"]["en"] and m["descriptions"]["ru"]
    assert {"deckhouse", "kubernetes"} <= set(m["requirements"])
    chart = load("Chart.yaml")
    assert chart["name"] == m["name"] and chart["version"]


def test_helmignore_keeps_the_release_small_but_the_chart_whole():
    lines = {line.strip().rstrip("/") for line in (ROOT / ".helmignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")}
    assert {"hooks", "openapi", "images", "crds", "target"} <= lines
    assert not {"templates", "Chart.yaml"} & lines


def described_paths(schema, prefix=""):
    out = set()
    for name, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}.{name}" if prefix else name
        if "description" in sub:
            out.add(path)
        out |= described_paths(sub, path)
    return out


def test_russian_twin_describes_exactly_the_same_settings():
    en = described_paths(load("openapi/config-values.yaml"))
    ru = described_paths(load("openapi/doc-ru-config-values.yaml"))
    assert en == ru, f"only in en: {en - ru}; only in ru: {ru - en}"
    assert len(en) >= 14


def test_values_yaml_extends_config_values():
    v = load("openapi/values.yaml")
    assert v["x-extend"] == {"schema": "config-values.yaml"}
    assert v["properties"]["internal"]["default"] == {}


def test_helm_lint_passes_with_converged_values(converge):
    converge(EXAMPLES / "moduleconfig-proxy.yaml", NODES3)
    values = json.loads((converge.state / "values.json").read_text())
    report = helm_python.lint(str(ROOT), values, strict=True, namespace="d8-system")
    assert report["errors"] == [], report
    assert not [m for m in report["messages"] if m["severity"] >= 3], report
