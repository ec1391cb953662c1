"""Generates the gRPC stubs (quiver.v1) from the repository's proto/ while building.

The public API's .proto files live in ../../proto; the package is built from a
checkout (`pip install clients/python`).
"""
import os

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.environ.get("QUIVER_PROTO_DIR", os.path.join(HERE, "..", "..", "proto"))
PROTOS = ["quiver/v1/common.proto", "quiver/v1/collections.proto", "quiver/v1/points.proto",
          "quiver/v1/cluster.proto"]


class BuildWithStubs(build_py):
    def run(self):
        super().run()
        from grpc_tools import protoc  # a build requirement (pyproject.toml)
        import grpc_tools

        out = self.build_lib
        os.makedirs(os.path.join(out, "quiver", "v1"), exist_ok=True)
        includes = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
        for proto in PROTOS:
            args = ["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{includes}", f"--python_out={out}",
                    f"--grpc_python_out={out}", os.path.join(PROTO_ROOT, proto)]
            if protoc.main(args) != 0:
                raise RuntimeError(f"protoc failed on {proto} (proto root {PROTO_ROOT})")
        with open(os.path.join(out, "quiver", "v1", "__init__.py"), "w") as f:
            f.write('"""Generated gRPC stubs of the Quiver public API."""\n')


setup(cmdclass={"build_py": BuildWithStubs})
