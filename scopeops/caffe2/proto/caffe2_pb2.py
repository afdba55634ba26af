"""Caffe2's messages (``caffe2_pb2``), built at import from the compiled descriptor set.

``caffe2.proto`` is compiled to a descriptor set (``caffe2.desc``) when scopeops is built
(``setup.py``). This module turns that descriptor into message classes through protobuf's
own descriptor pool and message factory, so it works with whatever protobuf runtime is
installed (no generated code tied to one protobuf version). It exposes the names a
protoc-generated ``caffe2_pb2`` has: the message classes (``NetDef``, ``OperatorDef``...),
the ``DeviceType`` enum and its values (``CPU``, ``CUDA``...); nested enums are on their
messages (``TensorProto.FLOAT``).

The pool is private to this module, so a real Caffe2 installed beside scopeops (whose
``caffe2/proto/caffe2.proto`` registers in protobuf's default pool) does not clash.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

try:  # protobuf >= 4.21
    from google.protobuf.message_factory import GetMessageClass as _message_class
except ImportError:  # pragma: no cover - older protobuf runtimes
    from google.protobuf.message_factory import MessageFactory as _MessageFactory

    _message_class = _MessageFactory().GetPrototype

DESCRIPTOR_SET = "caffe2.desc"

__all__ = [
    "Argument", "BlobProto", "DBReaderProto", "DESCRIPTOR", "DeviceOption", "DeviceType",
    "ExecutionStep", "NetDef", "OperatorDef", "PlanDef", "QTensorProto", "TensorProto",
    "TensorProtos", "TensorShape", "TensorShapes",
    "CPU", "CUDA", "MKLDNN", "OPENGL", "COMPILE_TIME_MAX_DEVICE_TYPES", "ONLY_FOR_TEST",
]


def _load_file_descriptor() -> Any:
    try:
        data = resources.files(__package__).joinpath(DESCRIPTOR_SET).read_bytes()
    except FileNotFoundError:
        raise ImportError(
            f"scopeops.caffe2.proto: {DESCRIPTOR_SET} is missing; it is compiled from "
            "caffe2.proto when scopeops is built. Reinstall scopeops (pip install "
            "\"scopeops[caffe2]\") rather than importing it from a source tree.") from None
    files = descriptor_pb2.FileDescriptorSet.FromString(data)
    pool = descriptor_pool.DescriptorPool()
    for file_proto in files.file:
        pool.Add(file_proto)
    return pool.FindFileByName("caffe2.proto")


DESCRIPTOR = _load_file_descriptor()

TensorProto = _message_class(DESCRIPTOR.message_types_by_name["TensorProto"])
QTensorProto = _message_class(DESCRIPTOR.message_types_by_name["QTensorProto"])
TensorProtos = _message_class(DESCRIPTOR.message_types_by_name["TensorProtos"])
TensorShape = _message_class(DESCRIPTOR.message_types_by_name["TensorShape"])
TensorShapes = _message_class(DESCRIPTOR.message_types_by_name["TensorShapes"])
Argument = _message_class(DESCRIPTOR.message_types_by_name["Argument"])
DeviceOption = _message_class(DESCRIPTOR.message_types_by_name["DeviceOption"])
OperatorDef = _message_class(DESCRIPTOR.message_types_by_name["OperatorDef"])
NetDef = _message_class(DESCRIPTOR.message_types_by_name["NetDef"])
ExecutionStep = _message_class(DESCRIPTOR.message_types_by_name["ExecutionStep"])
PlanDef = _message_class(DESCRIPTOR.message_types_by_name["PlanDef"])
BlobProto = _message_class(DESCRIPTOR.message_types_by_name["BlobProto"])
DBReaderProto = _message_class(DESCRIPTOR.message_types_by_name["DBReaderProto"])

DeviceType = EnumTypeWrapper(DESCRIPTOR.enum_types_by_name["DeviceType"])
CPU = DeviceType.Value("CPU")
CUDA = DeviceType.Value("CUDA")
MKLDNN = DeviceType.Value("MKLDNN")
OPENGL = DeviceType.Value("OPENGL")
COMPILE_TIME_MAX_DEVICE_TYPES = DeviceType.Value("COMPILE_TIME_MAX_DEVICE_TYPES")
ONLY_FOR_TEST = DeviceType.Value("ONLY_FOR_TEST")
