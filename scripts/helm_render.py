#!/usr/bin/env python3
"""Render the module's chart with the real Helm engine and validate every object.

Reads a JSON request on stdin:
  {"chart": DIR, "values": {...}, "release": NAME, "namespace": NS, "kubeVersion": "1.30"}
Writes {"manifests": {"templates/x.yaml": "...", ...}} on stdout.
Each rendered object is checked with kubernetes-validate --strict semantics.
On failure: one line on stderr, exit 1.
"""
import json
import os
import sys

# Custom resources have no Kubernetes schema: they are checked against the fields of
# their CRD the module uses, kept under scripts/crd-schemas/<group>_<version>_<Kind>.json.
CRD_SCHEMAS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crd-schemas")


def fail(msg):
    print(msg.replace("\n", " "), file=sys.stderr)
    sys.exit(1)


def validate_custom(doc, what, kube_version):
    import jsonschema
    name = f"{doc.get('apiVersion', '').replace('/', '_')}_{doc.get('kind')}.json"
    path = os.path.join(CRD_SCHEMAS, name)
    if not os.path.exists(path):
        fail(f"{what}: no Kubernetes {kube_version} schema for {doc.get('apiVersion')} {doc.get('kind')}, "
             f"and no CRD schema at scripts/crd-schemas/{name}")
    with open(path) as f:
        schema = json.load(f)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        fail(f"{what}: {'.'.join(str(p) for p in e.path)}: {e.message}")


def main():
    try:
        import helm_python
        import kubernetes_validate
        import yaml
    except ImportError as e:
        fail(f"the Helm engine is not installed for {sys.executable} ({e.name} missing): run scripts/setup, "
             "or point EMBEDDED_REGISTRY_PYTHON at a Python with helm-python-sdk, kubernetes-validate and PyYAML")
    req = json.load(sys.stdin)
    helm_python.disable_logging() if hasattr(helm_python, "disable_logging") else None
    try:
        chart = helm_python.Chart.load(req["chart"])
        rendered = chart.render(req["values"], name=req["release"], namespace=req["namespace"], is_install=True)
    except helm_python.HelmError as e:
        fail(f"helm render: {e}")
    prefix = chart.name + "/" if hasattr(chart, "name") and isinstance(chart.name, str) else None
    manifests = {}
    for path, text in sorted(rendered.items()):
        rel = path.split("/", 1)[1] if "/" in path else path
        if prefix and path.startswith(prefix):
            rel = path[len(prefix):]
        if rel.endswith("NOTES.txt"):
            continue
        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as e:
            fail(f"{rel}: rendered YAML does not parse: {e}")
        for doc in docs:
            what = f"{rel}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            try:
                kubernetes_validate.validate(doc, req["kubeVersion"], strict=True)
            except kubernetes_validate.ValidationError as e:
                path_ = ".".join(str(p) for p in e.path)
                fail(f"{what}: {path_}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError:
                validate_custom(doc, what, req["kubeVersion"])
        if docs:
            manifests[rel] = text
    json.dump({"manifests": manifests}, sys.stdout)


if __name__ == "__main__":
    main()
