#!/usr/bin/env python3
"""Validates Kubernetes objects against the 1.33 OpenAPI schemas with kubernetes-validate (strict), offline.

Usage: hack/validate-k8s.py PATH... (files, directories, or - for standard input)

Custom resources (mizzen.io, *.istio.io) and kustomization files are skipped: there is no built-in schema for them.
Every other document must be a known kind and valid, or the script exits 1.
"""
import os
import sys

import kubernetes_validate
import yaml

K8S_VERSION = "1.33.0"


def is_custom(doc):
    group = doc.get("apiVersion", "").rpartition("/")[0]
    return group == "mizzen.io" or group.endswith("istio.io") or doc.get("kind") == "Kustomization"


def files(paths):
    for path in paths:
        if path == "-" or os.path.isfile(path):
            yield path
        else:
            for root, _, names in sorted(os.walk(path)):
                for name in sorted(names):
                    if name.endswith((".yaml", ".yml")) and name != "kustomization.yaml":
                        yield os.path.join(root, name)


def main(paths):
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    docs = []
    for path in files(paths):
        text = sys.stdin.read() if path == "-" else open(path).read()
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append((path, doc))
    checked = [(p, d) for p, d in docs if not is_custom(d)]
    skipped = len(docs) - len(checked)
    if not checked:
        print("validate-k8s: no Kubernetes objects found", file=sys.stderr)
        return 1
    failed = 0
    for path, doc in checked:
        name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            failed += 1
            where = "/".join(str(p) for p in error.path)
            print(f"FAIL {path} {name}: {where}: {error.message}")
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as error:
            failed += 1
            print(f"FAIL {path} {name}: {error}")
    print(f"validate-k8s: {len(checked) - failed} passed, {failed} failed, {skipped} skipped (custom resources)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
