#!/usr/bin/env python3
"""A real Prometheus (Debian's package) scrapes a running quiverd's /metrics:
the target is up and Quiver's series arrive with the values the node reports."""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

from quiverd_process import Quiverd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrometheusScrapesQuiverd(unittest.TestCase):
    def test_scrape(self):
        prometheus = shutil.which("prometheus")
        self.assertIsNotNone(prometheus, "Debian's prometheus package is missing (scripts/install-deps.sh)")
        with tempfile.TemporaryDirectory() as tmp:
            quiverd = Quiverd(tmp)
            procs = []
            try:
                admin_port = quiverd.admin_port
                config = os.path.join(tmp, "prometheus.yml")
                with open(config, "w") as f:
                    f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                            "scrape_configs:\n  - job_name: quiver\n    static_configs:\n"
                            f"      - targets: ['127.0.0.1:{admin_port}']\n")
                web = free_port()
                with open(os.path.join(tmp, "prometheus.log"), "w") as log:
                    procs.append(subprocess.Popen(
                        [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp}/tsdb",
                         f"--web.listen-address=127.0.0.1:{web}"], stdout=log, stderr=subprocess.STDOUT))

                def query(q):
                    url = f"http://127.0.0.1:{web}/api/v1/query?" + urllib.parse.urlencode({"query": q})
                    try:
                        with urllib.request.urlopen(url, timeout=2) as r:
                            return json.load(r)["data"]["result"]
                    except OSError:
                        return []

                deadline = time.time() + 60
                while not query('up{job="quiver"} == 1') or not query("quiver_raft_is_leader"):
                    self.assertLess(time.time(), deadline, "Prometheus never scraped quiverd; log:\n" +
                                    open(os.path.join(tmp, "prometheus.log")).read()[-3000:])
                    time.sleep(0.5)
                # A single node leads its one-voter group, and the histograms parse.
                self.assertEqual(query("quiver_raft_is_leader")[0]["value"][1], "1")
                self.assertEqual(query("quiver_raft_voters")[0]["value"][1], "1")
                self.assertTrue(query("quiver_request_duration_seconds_bucket"))
                # The bootstrap and the election wrote the log at least once.
                self.assertGreater(float(query("quiver_wal_fsync_duration_seconds_count")[0]["value"][1]), 0)
                # GPU and batching series exist on every node (zero without a GPU or searches).
                gpu_present = query("quiver_gpu_present")
                self.assertTrue(gpu_present)
                self.assertIn(gpu_present[0]["value"][1], ("0", "1"))
                for series in ("quiver_gpu_fallbacks_total", "quiver_gpu_memory_in_use_bytes",
                               "quiver_search_batches_total", "quiver_search_batch_calls_total"):
                    self.assertTrue(query(series), series)
            finally:
                for p in procs:
                    p.terminate()
                    p.wait(timeout=30)
                quiverd.stop()


if __name__ == "__main__":
    unittest.main()
