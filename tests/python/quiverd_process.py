"""Starts quiverd on ephemeral ports for the Python tests and waits until it serves."""
import json
import os
import subprocess
import time

QUIVERD = os.environ.get("QUIVERD", "build/service/quiverd")


class Quiverd:
    """quiverd with its data, ready file and log under `workdir`.

    Attributes: proc, grpc_addr ("127.0.0.1:port"), admin_port.
    """

    def __init__(self, workdir: str, timeout: float = 60.0):
        ready = os.path.join(workdir, "ready.json")
        self.log = open(os.path.join(workdir, "quiverd.log"), "w")
        self.proc = subprocess.Popen(
            [QUIVERD, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
             "--data-dir", os.path.join(workdir, "data"), "--ready-file", ready],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while not os.path.exists(ready):
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError("quiverd did not become ready")
            time.sleep(0.02)
        with open(ready) as f:
            ports = json.load(f)
        self.grpc_addr = f"127.0.0.1:{ports['grpc_port']}"
        self.admin_port = ports["admin_port"]

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(timeout=timeout)
        self.log.close()
        return code
