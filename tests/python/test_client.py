#!/usr/bin/env python3
"""The Python client (clients/python) against a real quiverd: it is installed
with pip into a temporary directory first, as a user would install it."""
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np

from quiverd_process import Quiverd
SOURCE = os.environ.get("QUIVER_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))


def install_client(target: str) -> None:
    # Offline: the build requirements (setuptools, grpcio-tools) and the
    # dependencies are installed by scripts/install-deps.sh.
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
                    "--target", target, os.path.join(SOURCE, "clients", "python")], check=True)
    sys.path.insert(0, target)


class ClientAgainstQuiverd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        install_client(os.path.join(cls.tmp.name, "site"))
        global quiver
        import quiver  # noqa: F401  (installed above)
        cls.quiverd = Quiverd(cls.tmp.name)
        cls.addr = cls.quiverd.grpc_addr
        # The first address is dead: the client must move on to the live one.
        cls.client = quiver.Client(["127.0.0.1:1", cls.addr], timeout=10)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.quiverd.stop()
        cls.tmp.cleanup()

    def test_upsert_search_matches_brute_force(self):
        rng = np.random.default_rng(7)
        base = rng.standard_normal((2000, 16)).astype(np.float32)
        info = self.client.create_collection("vecs", dimension=16, metric="l2")
        self.assertEqual(info["config"]["name"], "vecs")
        payloads = [{"parity": "even" if i % 2 == 0 else "odd", "i": i, "w": i / 10, "tags": ["a", "b"]}
                    for i in range(2000)]
        self.client.upsert("vecs", np.arange(2000), base, payloads, batch_size=300)
        self.assertEqual(self.client.count("vecs"), 2000)
        queries = rng.standard_normal((5, 16)).astype(np.float32)
        d = ((queries[:, None, :] - base[None, :, :]) ** 2).sum(-1)
        expect = np.argsort(d, axis=1)[:, :10]
        ids, scores = self.client.search_batch("vecs", queries, k=10)
        self.assertEqual(ids.shape, (5, 10))
        np.testing.assert_array_equal(ids, expect)
        np.testing.assert_allclose(scores, np.take_along_axis(d, expect, 1), rtol=1e-4)
        one_ids, one_scores, payloads_out = self.client.search("vecs", queries[0], k=3, with_payload=True)
        np.testing.assert_array_equal(one_ids, expect[0, :3])
        self.assertEqual(payloads_out[0]["i"], int(expect[0, 0]))
        self.assertEqual(payloads_out[0]["tags"], ["a", "b"])

    def test_filters_written_as_dicts(self):
        rng = np.random.default_rng(8)
        base = rng.standard_normal((500, 8)).astype(np.float32)
        self.client.create_collection("filtered", dimension=8, metric="ip")
        self.client.upsert("filtered", np.arange(500), base,
                           [{"color": ["red", "green", "blue"][i % 3], "n": i, "ok": i % 5 == 0} for i in range(500)])
        q = rng.standard_normal(8).astype(np.float32)
        cases = [
            ({"key": "color", "match": "red"}, lambda i: i % 3 == 0),
            ({"key": "n", "range": {"gte": 100, "lt": 200}}, lambda i: 100 <= i < 200),
            ({"key": "color", "in": ["green", "blue"]}, lambda i: i % 3 != 0),
            ({"and": [{"key": "ok", "match": True}, {"not": {"key": "color", "match": "red"}}]},
             lambda i: i % 5 == 0 and i % 3 != 0),
            ({"or": [{"key": "n", "match": 7}, {"key": "n", "match": 9}]}, lambda i: i in (7, 9)),
        ]
        for flt, keep in cases:
            with self.subTest(filter=flt):
                ids, _ = self.client.search("filtered", q, k=10, filter=flt)
                allowed = np.array([i for i in range(500) if keep(i)])
                s = base[allowed] @ q
                expect = allowed[np.argsort(-s)[:10]]
                np.testing.assert_array_equal(ids, expect)

    def test_errors_and_padding(self):
        with self.assertRaises(quiver.QuiverError) as e:
            self.client.get_collection("nope")
        self.assertEqual(e.exception.code.name, "NOT_FOUND")
        self.client.create_collection("small", dimension=2)
        self.client.upsert("small", [1, 2], [[0, 0], [1, 1]])
        ids, scores = self.client.search_batch("small", [[0, 0]], k=4)
        np.testing.assert_array_equal(ids[0], [1, 2, -1, -1])
        self.assertTrue(np.isnan(scores[0, 2]))
        with self.assertRaises(quiver.QuiverError) as e:
            self.client.upsert("small", [3], [[1, 2, 3]])
        with self.assertRaises(ValueError):
            self.client.search("small", [0, 0], filter={"key": "x", "between": 1})
        points = self.client.get("small", [2, 99], with_vector=True)
        self.assertEqual([p["id"] for p in points], [2])
        np.testing.assert_array_equal(points[0]["vector"], [1, 1])
        self.client.delete("small", [1])
        self.assertEqual(self.client.count("small", consistency="eventual"), 1)
        status = self.client.cluster_status()
        self.assertEqual(status["role"], "leader")

    def test_a_retried_write_applies_once(self):
        # Two clients with the same id and sequence: the second is a retry.
        a = quiver.Client(self.addr, client_id="retry-test")
        b = quiver.Client(self.addr, client_id="retry-test")
        a.create_collection("once", dimension=2)  # sequence 1
        b.create_collection("once", dimension=2)  # sequence 1 again: the first answer, not ALREADY_EXISTS
        a.upsert("once", [1], [[1, 1]])  # sequence 2
        self.client.delete("once", [1])  # another client
        b.upsert("once", [1], [[1, 1]])  # sequence 2 again: not applied a second time
        self.assertEqual(a.count("once"), 0)
        b._sequence = 0  # a stale sequence (1): older than the last applied (2)
        with self.assertRaises(quiver.QuiverError) as e:
            b.delete("once", [5])
        self.assertEqual(e.exception.code.name, "FAILED_PRECONDITION")
        a.close()
        b.close()


if __name__ == "__main__":
    unittest.main()
