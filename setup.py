"""Build the compiled core of scopeops.

Compiler directives are set once, here. ``SCOPEOPS_DEBUG_BUILD=1`` builds with
bounds and wraparound checks, assertions on and line tracing (for coverage);
the default build is the optimised one.
"""

import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_py import build_py

DEBUG_BUILD = os.environ.get("SCOPEOPS_DEBUG_BUILD", "") not in ("", "0")
# Each flavour builds in its own tree (generated C, objects, libraries): cythonize
# and build_ext go by timestamps, not flags, so a shared tree would let one
# flavour silently reuse the other's output.
BUILD_BASE = os.path.join("build", "debug" if DEBUG_BUILD else "release")

directives = {
    "language_level": 3,
    "embedsignature": True,
    # Signatures go in Argument Clinic's form, which inspect.signature reads for the
    # methods that are plain method descriptors (binding=False, see Workspace.fetch_blob).
    "embedsignature.format": "clinic",
    "auto_pickle": False,
    "boundscheck": DEBUG_BUILD,
    "wraparound": DEBUG_BUILD,
    "initializedcheck": DEBUG_BUILD,
    "cdivision": not DEBUG_BUILD,
    "linetrace": DEBUG_BUILD,
    # Every mutating method of Blob, Workspace and WorkspaceStack runs under its
    # object's critical section (tests/test_threads.py hammers them from 8 threads).
    "freethreading_compatible": True,
}
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
          ("SCOPEOPS_DEBUG_BUILD", "1" if DEBUG_BUILD else "0")]
if DEBUG_BUILD:
    macros.append(("CYTHON_TRACE_NOGIL", "1"))
    extra_compile_args = ["-O0", "-g", "-UNDEBUG"]
else:
    extra_compile_args = ["-O2"]

# The compiled modules, each listed on purpose: the core (its cimport paths are part of
# the C API), the operator layer's dispatch (the operator base, the net loop and the
# built-in operators' run paths) and the benchmarks' C-level timing loops, which
# `scopeops bench` needs.
COMPILED_MODULES = [
    "scopeops._types",
    "scopeops._blob",
    "scopeops._workspace",
    "scopeops._stack",
    "scopeops._accumulate",
    "scopeops.ops._dispatch",
    "scopeops.bench._c_timing",
]

extensions = [
    Extension(
        module,
        [module.replace(".", os.sep) + ".pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=macros,
        extra_compile_args=extra_compile_args,
    )
    for module in COMPILED_MODULES
]

PROTO_PACKAGE = os.path.join("scopeops", "caffe2", "proto")


class BuildPyWithCaffe2Descriptor(build_py):
    """build_py that also compiles caffe2.proto to a descriptor set in the build tree.

    scopeops.caffe2.proto.caffe2_pb2 builds its message classes from that descriptor
    with the installed protobuf runtime, so no generated Python is committed or tied
    to one protobuf version.
    """

    def run(self):
        super().run()
        try:
            from grpc_tools import protoc
        except ImportError as exc:
            raise RuntimeError("building scopeops needs grpcio-tools (a build requirement in "
                               "pyproject.toml) to compile caffe2.proto") from exc

        target = os.path.join(self.build_lib, PROTO_PACKAGE, "caffe2.desc")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        status = protoc.main(["protoc", f"--proto_path={PROTO_PACKAGE}",
                              f"--descriptor_set_out={target}", "caffe2.proto"])
        if status != 0:
            raise RuntimeError(f"protoc failed ({status}) on {PROTO_PACKAGE}/caffe2.proto")


setup(
    cmdclass={"build_py": BuildPyWithCaffe2Descriptor},
    options={"build": {"build_base": BUILD_BASE}},
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        build_dir=os.path.join(BUILD_BASE, "cython"),
        nthreads=int(os.environ.get("SCOPEOPS_BUILD_JOBS", "2")),
    ),
)
