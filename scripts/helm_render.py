#!/usr/bin/env python3
"""Render the module's chart with the real Helm engine and validate every object.

Reads a JSON request on stdin:
  {"chart": DIR, "values": {...}, "release": NAME, "namespace": NS, "kubeVersion": "1.30"}
Writes {"manifests": {"templates/x.yaml": "...", ...}} on stdout.
Each rendered object is checked with kubernetes-validate --strict semantics.
On failure: one line on stderr, exit 1.
"""
import json
import sys


def fail(msg):
    print(msg.replace("\n", " "), file=sys.stderr)
    sys.exit(1)


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
                fail(f"{what}: no Kubernetes {req['kubeVersion']} schema for {doc.get('apiVersion')} {doc.get('kind')}")
        if docs:
            manifests[rel] = text
    json.dump({"manifests": manifests}, sys.stdout)


if __name__ == "__main__":
    main()
