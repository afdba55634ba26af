"""scopeops.caffe2: Caffe2's Python layout on top of scopeops.

Porting is an import rename: ``from caffe2.python import core, workspace`` becomes
``from scopeops.caffe2.python import core, workspace``, and ``from caffe2.proto import
caffe2_pb2`` becomes ``from scopeops.caffe2.proto import caffe2_pb2``. The modules
translate Caffe2's names, argument encodings, protobuf messages and calling conventions;
workspaces, operators, scopes and gradients are scopeops' own (see docs/caffe2.md for
what differs).

It needs the ``caffe2`` extra (protobuf, and hypothesis for the test utilities).
"""

try:
    import google.protobuf  # noqa: F401  - every module of the package needs it
except ImportError as exc:
    raise ImportError(
        "scopeops.caffe2 needs protobuf, which is not installed "
        f"({exc}). Install the extra: pip install \"scopeops[caffe2]\"") from exc
