#!/usr/bin/env python3
"""quiverd's standard endpoints, checked from outside with stock Python tools:
grpc.health.v1 (overall and per service), gRPC server reflection, and the
admin HTTP /healthz, /readyz and /metrics."""
import os
import sys
import tempfile
import unittest
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from quiverd_process import Quiverd


class QuiverdEndpoints(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.quiverd = Quiverd(cls.tmp.name)
        cls.grpc_addr = cls.quiverd.grpc_addr
        cls.admin = f"http://127.0.0.1:{cls.quiverd.admin_port}"
        cls.channel = grpc.insecure_channel(cls.grpc_addr)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        code = cls.quiverd.stop(timeout=15)
        cls.tmp.cleanup()
        assert code == 0, f"quiverd exited {code}"

    def test_health_serving(self):
        stub = health_pb2_grpc.HealthStub(self.channel)
        for service in ("", "quiver.v1.Points", "quiver.v1.Collections"):
            resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            self.assertEqual(resp.status, health_pb2.HealthCheckResponse.SERVING, service)

    def test_reflection_lists_services(self):
        stub = reflection_pb2_grpc.ServerReflectionStub(self.channel)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        names = {s.name for r in responses for s in r.list_services_response.service}
        for want in ("quiver.v1.Points", "quiver.v1.Collections", "grpc.health.v1.Health"):
            self.assertIn(want, names)

    def test_admin_http(self):
        with urllib.request.urlopen(self.admin + "/healthz", timeout=5) as r:
            self.assertEqual(r.status, 200)
        with urllib.request.urlopen(self.admin + "/readyz", timeout=5) as r:
            self.assertEqual(r.status, 200)
        with urllib.request.urlopen(self.admin + "/metrics", timeout=5) as r:
            text = r.read().decode()
        self.assertIn("quiver_ready 1", text)
        self.assertIn("# TYPE quiver_request_duration_seconds histogram", text)


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    failed = len(result.failures) + len(result.errors)
    print(f"{result.testsRun - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
