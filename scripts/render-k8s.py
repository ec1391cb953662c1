#!/usr/bin/env python3
"""Renders Quiver's Kubernetes manifests (docker/k8s) for a replica count, CPU
or GPU, without kubectl: the same result as `kubectl apply -k docker/k8s/<variant>`
for 3 replicas. With --validate, checks every object against the Kubernetes
schema (PyPI kubernetes-validate, offline).

    scripts/render-k8s.py --replicas 5 --gpu --image registry.example/quiver:cuda > quiver.yaml
"""
import argparse
import copy
import os
import sys

import yaml

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docker", "k8s")


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def render(replicas, gpu=False, image=None):
    """The manifests as a list of dicts."""
    if replicas < 1:
        raise ValueError("replicas must be at least 1")
    docs = []
    base = os.path.join(ROOT, "base")
    for name in load(os.path.join(base, "kustomization.yaml"))[0]["resources"]:
        docs.extend(load(os.path.join(base, name)))
    docs = copy.deepcopy(docs)
    for d in docs:
        if d["kind"] == "StatefulSet":
            d["spec"]["replicas"] = replicas
            container = d["spec"]["template"]["spec"]["containers"][0]
            for env in container["env"]:
                if env["name"] == "QUIVER_REPLICAS":
                    env["value"] = str(replicas)
            if gpu:
                patch = load(os.path.join(ROOT, "gpu", "gpu-patch.yaml"))[0]["spec"]["template"]["spec"]
                d["spec"]["template"]["spec"]["tolerations"] = patch["tolerations"]
                container["image"] = patch["containers"][0]["image"]
                container["resources"].setdefault("limits", {}).update(patch["containers"][0]["resources"]["limits"])
            if image:
                container["image"] = image
        elif d["kind"] == "PodDisruptionBudget":
            # Voluntary disruptions keep a Raft majority.
            d["spec"]["minAvailable"] = replicas // 2 + 1
    return docs


def validate(docs, version=None):
    """Schema errors of every object (empty when all are valid)."""
    import kubernetes_validate

    version = version or kubernetes_validate.latest_version()
    errors = []
    for d in docs:
        try:
            kubernetes_validate.validate(d, version, strict=True)
        except Exception as e:  # ValidationError, or an unknown kind/version
            errors.append(f"{d['kind']}/{d['metadata']['name']}: {e}")
    return errors


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replicas", type=int, default=3, help="cluster size (odd: 3 or 5)")
    p.add_argument("--gpu", action="store_true", help="the CUDA image, one nvidia.com/gpu per pod")
    p.add_argument("--image", help="image to run instead of quiver:cpu / quiver:cuda")
    p.add_argument("--validate", action="store_true", help="check against the Kubernetes schema")
    args = p.parse_args()
    docs = render(args.replicas, args.gpu, args.image)
    if args.validate:
        errors = validate(docs)
        for e in errors:
            print(e, file=sys.stderr)
        if errors:
            return 1
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
