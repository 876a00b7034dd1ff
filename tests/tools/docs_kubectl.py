"""A small, faithful `kubectl` stand-in for the documentation's tested commands
(tests/test_docs.py): no API server can run here, so it answers from the cluster the
local converge stored in `$DOCS_KUBECTL_STATE`:

- the objects the hooks and the converge wrote, `objects/<namespace or _cluster>/<Kind>/<name>.json`;
- the objects of the Helm release, `rendered/templates/*.yaml` (read-only, as Helm owns them).

It supports exactly what the documents use, with kubectl's own output:
`kubectl [-n NS] get KIND [NAME] -o json` (a `List` without NAME) and
`kubectl [-n NS] delete KIND NAME` (hook-made objects only). Every other command, flag
or kind fails loudly (exit 3, one line starting `docs kubectl stand-in:`), so a document
cannot use something the stand-in would silently get wrong.
"""
import json
import os
import pathlib
import sys

import yaml

KINDS = {
    "secret": "Secret", "secrets": "Secret",
    "configmap": "ConfigMap", "configmaps": "ConfigMap", "cm": "ConfigMap",
    "node": "Node", "nodes": "Node", "no": "Node",
    "moduleconfig": "ModuleConfig", "moduleconfigs": "ModuleConfig", "mc": "ModuleConfig",
}
CLUSTER_SCOPED = {"Node", "ModuleConfig"}
PLURAL = {"Secret": "secrets", "ConfigMap": "configmaps", "Node": "nodes", "ModuleConfig": "moduleconfigs"}


def unsupported(what):
    print(f"docs kubectl stand-in: unsupported {what}", file=sys.stderr)
    sys.exit(3)


def parse(argv):
    namespace, output, words = "default", None, []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-n", "--namespace"):
            if i + 1 >= len(argv):
                unsupported(f"flag {a} without a value")
            namespace, i = argv[i + 1], i + 2
            continue
        if a.startswith("--namespace="):
            namespace = a.split("=", 1)[1]
        elif a in ("-o", "--output"):
            if i + 1 >= len(argv):
                unsupported(f"flag {a} without a value")
            output, i = argv[i + 1], i + 2
            continue
        elif a.startswith(("-o", "--output=")):
            output = a.split("=", 1)[1] if a.startswith("--output=") else a[2:].lstrip("=")
        elif a.startswith("-"):
            unsupported(f"flag {a}")
        else:
            words.append(a)
        i += 1
    return namespace, output, words


def rendered_objects(state):
    out = []
    root = state / "rendered"
    for path in sorted(root.rglob("*.yaml")) if root.exists() else []:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind"):
                out.append(doc)
    return out


def objects(state, kind, namespace):
    """Every stored object of a kind in the namespace: (object, path or None for Helm's)."""
    scope = "_cluster" if kind in CLUSTER_SCOPED else namespace
    found = {}
    d = state / "objects" / scope / kind
    for p in sorted(d.glob("*.json")) if d.exists() else []:
        obj = json.loads(p.read_text())
        found[obj["metadata"]["name"]] = (obj, p)
    for obj in rendered_objects(state):
        meta = obj.get("metadata", {})
        if obj["kind"] == kind and (kind in CLUSTER_SCOPED or meta.get("namespace") == namespace):
            found.setdefault(meta["name"], (obj, None))
    return found


def main(argv):
    state = pathlib.Path(os.environ["DOCS_KUBECTL_STATE"])
    namespace, output, words = parse(argv)
    if not words or words[0] not in ("get", "delete"):
        unsupported(f"command {' '.join(words[:1]) or '(none)'}")
    verb, rest = words[0], words[1:]
    if not rest or rest[0] not in KINDS:
        unsupported(f"kind {rest[0] if rest else '(none)'}")
    kind, names = KINDS[rest[0]], rest[1:]
    if len(names) > 1:
        unsupported("more than one name")
    found = objects(state, kind, namespace)
    if verb == "get":
        if output != "json":
            unsupported(f"output {output or '(table)'}: use -o json")
        if not names:
            items = [found[n][0] for n in sorted(found)]
            print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items,
                              "metadata": {"resourceVersion": ""}}, indent=4))
            return 0
        if names[0] not in found:
            print(f'Error from server (NotFound): {PLURAL[kind]} "{names[0]}" not found', file=sys.stderr)
            return 1
        print(json.dumps(found[names[0]][0], indent=4))
        return 0
    if output is not None:
        unsupported("output flag with delete")
    if not names:
        unsupported("delete without a name")
    if names[0] not in found:
        print(f'Error from server (NotFound): {PLURAL[kind]} "{names[0]}" not found', file=sys.stderr)
        return 1
    path = found[names[0]][1]
    if path is None:
        unsupported(f"delete of {kind} {names[0]}: the Helm release owns it")
    path.unlink()
    print(f'{kind.lower()} "{names[0]}" deleted')
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
