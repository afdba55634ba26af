"""Conversion between Caffe2's protobuf messages and scopeops' definitions.

``caffe2_pb2`` messages (what Caffe2 code builds and what ``.pb`` files hold) become
:class:`scopeops.OperatorDef` / :class:`scopeops.NetDef` to run, and back to write
them out. The conversion translates Caffe2's encodings, never behaviour:

- ``Argument``\\ s become plain values (``f``, ``i``, ``s``, ``n``, ``floats``, ``ints``,
  ``strings``, ``nets``; an argument with only a name is an empty list); ``bytes`` become
  ``str``; where the operator's scopeops schema wants a ``bool`` an ``i`` of 0/1 becomes
  one; ``dtype``/``to`` arguments holding a ``TensorProto.DataType`` become dtype names.
- A ``ConstantFill`` whose ``value`` is an int and that has no ``dtype`` gets ``int64``, as
  Caffe2 infers it.
- Arguments Caffe2's CPU operators never read (``use_cudnn``, ``run_once``...), and
  ``order="NCHW"`` (Caffe2's default layout) on an operator without an ``order``, are
  dropped when the scopeops operator does not declare them; so is any argument a
  gradient op (``is_gradient_op``) does not declare: Caffe2 gave gradient ops every
  argument of their forward op, and its operators ignored those they did not read.
- ``DeviceOption``: ``device_type`` CPU/CUDA/MKLDNN/OPENGL become ``"cpu"``/``"gpu"``/
  ``"mkldnn"``/``"opengl"``, ``cuda_gpu_id`` the ``device_id``; a net's device option
  applies to its ops that have none (as in Caffe2). The op ``engine`` is kept (this CPU
  build has one engine per operator, as Caffe2 falls back to its default one).
  ``random_seed`` and ``numa_node_id``, ``control_input``, ``debug_info`` and the net's
  ``type``/``num_workers``/``arg`` have no scopeops counterpart and are not carried
  over.

Going back, :func:`operator_to_caffe2` and :func:`netdef_to_caffe2` produce the messages
Caffe2's Python would build (``name`` always set, ``is_gradient_op`` only when true), so
scopeops definitions round-trip exactly and serialise byte for byte as Caffe2's do.
"""

from __future__ import annotations

import collections.abc
from typing import Any

import numpy as np

from scopeops.caffe2.proto import caffe2_pb2
from scopeops.defs import NetDef, OperatorDef
from scopeops.names import DeviceOption
from scopeops.ops.base import registered_operators, schema

__all__ = [
    "DEVICE_NAMES",
    "IGNORED_ARGUMENTS",
    "argument_value",
    "device_option_to_caffe2",
    "device_option_to_native",
    "make_argument",
    "netdef_to_caffe2",
    "netdef_to_native",
    "numpy_dtype",
    "operator_to_caffe2",
    "operator_to_native",
]

#: Caffe2's DeviceType values and scopeops' device names.
DEVICE_NAMES: dict[int, str] = {
    caffe2_pb2.CPU: "cpu",
    caffe2_pb2.CUDA: "gpu",
    caffe2_pb2.MKLDNN: "mkldnn",
    caffe2_pb2.OPENGL: "opengl",
}
_DEVICE_TYPES = {name: number for number, name in DEVICE_NAMES.items()}
_OTHER_DEVICE = "caffe2_device_"

#: Arguments no Caffe2 CPU operator reads (engine hints, a legacy flag): dropped when the
#: scopeops operator does not declare them.
IGNORED_ARGUMENTS = frozenset({"use_cudnn", "cudnn_exhaustive_search", "exhaustive_search",
                               "ws_nbytes_limit", "run_once"})

# TensorProto.DataType numbers and the numpy dtype names scopeops takes.
_DTYPE_BY_NUMBER: dict[int, str] = {
    caffe2_pb2.TensorProto.FLOAT: "float32", caffe2_pb2.TensorProto.INT32: "int32",
    caffe2_pb2.TensorProto.BYTE: "uint8", caffe2_pb2.TensorProto.BOOL: "bool",
    caffe2_pb2.TensorProto.UINT8: "uint8", caffe2_pb2.TensorProto.INT8: "int8",
    caffe2_pb2.TensorProto.UINT16: "uint16", caffe2_pb2.TensorProto.INT16: "int16",
    caffe2_pb2.TensorProto.INT64: "int64", caffe2_pb2.TensorProto.FLOAT16: "float16",
    caffe2_pb2.TensorProto.DOUBLE: "float64",
}
_NUMBER_BY_DTYPE: dict[str, int] = {
    "float32": caffe2_pb2.TensorProto.FLOAT, "int32": caffe2_pb2.TensorProto.INT32,
    "bool": caffe2_pb2.TensorProto.BOOL, "uint8": caffe2_pb2.TensorProto.UINT8,
    "int8": caffe2_pb2.TensorProto.INT8, "uint16": caffe2_pb2.TensorProto.UINT16,
    "int16": caffe2_pb2.TensorProto.INT16, "int64": caffe2_pb2.TensorProto.INT64,
    "float16": caffe2_pb2.TensorProto.FLOAT16, "float64": caffe2_pb2.TensorProto.DOUBLE,
}
_DTYPE_ARGUMENTS = ("dtype", "to")


def numpy_dtype(data_type: int) -> np.dtype[Any]:
    """The numpy dtype of a ``TensorProto.DataType`` number (not STRING or UNDEFINED)."""
    name = _DTYPE_BY_NUMBER.get(data_type)
    if name is None:
        raise ValueError(f"TensorProto.DataType {data_type} has no numpy dtype here")
    return np.dtype(name)


# -- device options ---------------------------------------------------------------------------


def device_option_to_native(option: Any) -> DeviceOption:
    """A ``caffe2_pb2.DeviceOption`` as a :class:`scopeops.DeviceOption`."""
    if not isinstance(option, caffe2_pb2.DeviceOption):
        raise TypeError(f"expected a caffe2_pb2.DeviceOption, not {type(option).__name__}")
    number = option.device_type
    name = DEVICE_NAMES.get(number, f"{_OTHER_DEVICE}{number}")
    return DeviceOption(device_type=name, device_id=option.cuda_gpu_id,
                        node_name=option.node_name if option.HasField("node_name") else None)


def device_option_to_caffe2(option: DeviceOption) -> Any:
    """A :class:`scopeops.DeviceOption` as the ``caffe2_pb2.DeviceOption`` Caffe2 builds."""
    if not isinstance(option, DeviceOption):
        raise TypeError(f"expected a scopeops DeviceOption, not {type(option).__name__}")
    if option.extra_info:
        raise ValueError(f"Caffe2's DeviceOption has no extra_info; cannot convert "
                         f"{option!r}")
    number = _DEVICE_TYPES.get(option.device_type)
    if number is None:
        if not option.device_type.startswith(_OTHER_DEVICE):
            raise ValueError(f"device type {option.device_type!r} has no Caffe2 DeviceType "
                             f"(known: {', '.join(_DEVICE_TYPES)})")
        number = int(option.device_type[len(_OTHER_DEVICE):])
    result = caffe2_pb2.DeviceOption(device_type=number)
    if option.device_id:
        result.cuda_gpu_id = option.device_id
    if option.node_name is not None:
        result.node_name = option.node_name
    return result


# -- arguments --------------------------------------------------------------------------------


def argument_value(argument: Any) -> Any:
    """The value an ``Argument`` holds, as Caffe2 encoded it (``bytes`` for ``s``,
    ``caffe2_pb2.NetDef`` for ``n``; an argument with no value is an empty list)."""
    for single in ("f", "i", "s", "n"):
        if argument.HasField(single):
            return getattr(argument, single)
    for repeated in ("floats", "ints", "strings", "nets"):
        values = getattr(argument, repeated)
        if len(values):
            return list(values)
    return []


def _float32(value: float) -> float:
    # The shortest decimal that is the same float32: 0.1 stays 0.1, not 0.100000001...
    return float(str(np.float32(value)))


def _is_float(value: Any) -> bool:
    return isinstance(value, (float, np.floating))


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer))


def make_argument(key: str, value: Any, *, promote_mixed: bool = False) -> Any:
    """An ``Argument`` holding ``value``, encoded as Caffe2's ``utils.MakeArgument`` does.

    Float32 arrays go to ``floats``, other arrays become flat lists; a float is ``f``; an
    int or bool ``i``; ``bytes`` ``s`` and a ``str`` ``s`` in UTF-8; a NetDef (Caffe2's or
    scopeops') ``n``; another protobuf message ``s`` serialised; a list of floats
    ``floats``, of ints/bools ``ints``, of ``str``/``bytes`` ``strings``, of NetDefs
    ``nets`` (an empty list: the name alone). Anything else is a ValueError.
    ``promote_mixed`` encodes a list mixing ints and floats as ``floats`` (Caffe2 refuses
    it).
    """
    argument = caffe2_pb2.Argument(name=key)
    if isinstance(value, np.ndarray):
        if value.dtype == np.float32:
            argument.floats.extend(value.flatten().tolist())
            return argument
        value = value.flatten().tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or (isinstance(value, int)):
        argument.i = int(value)
    elif isinstance(value, float):
        argument.f = value
    elif isinstance(value, bytes):
        argument.s = value
    elif isinstance(value, str):
        argument.s = value.encode("utf-8")
    elif isinstance(value, caffe2_pb2.NetDef):
        argument.n.CopyFrom(value)
    elif isinstance(value, NetDef):
        argument.n.CopyFrom(netdef_to_caffe2(value))
    elif hasattr(value, "SerializeToString") and hasattr(value, "DESCRIPTOR"):
        argument.s = value.SerializeToString()
    elif isinstance(value, collections.abc.Iterable) and not isinstance(value, dict):
        items = list(value)
        if all(_is_float(v) for v in items):
            argument.floats.extend(float(v) for v in items)
        elif all(_is_int(v) for v in items):
            argument.ints.extend(int(v) for v in items)
        elif promote_mixed and all(_is_float(v) or _is_int(v) for v in items):
            argument.floats.extend(float(v) for v in items)
        elif all(isinstance(v, (bytes, str)) for v in items):
            argument.strings.extend(v if isinstance(v, bytes) else v.encode("utf-8")
                                    for v in items)
        elif all(isinstance(v, caffe2_pb2.NetDef) for v in items):
            argument.nets.extend(items)
        elif all(isinstance(v, NetDef) for v in items):
            argument.nets.extend(netdef_to_caffe2(v) for v in items)
        elif all(hasattr(v, "SerializeToString") and hasattr(v, "DESCRIPTOR") for v in items):
            argument.strings.extend(v.SerializeToString() for v in items)
        else:
            raise ValueError(f"Unknown iterable argument type: key={key} value={value}, "
                             f"value type={type(value)}[{set(type(v) for v in items)}]")
    else:
        raise ValueError(f"Unknown argument type: key={key} value={value}, "
                         f"value type={type(value)}")
    return argument


def _decoded(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value


def _native_value(key: str, raw: Any, spec: Any) -> Any:
    """A raw Caffe2 argument value as the value scopeops' schema ``spec`` takes."""
    if isinstance(raw, caffe2_pb2.NetDef):
        return netdef_to_native(raw)
    if isinstance(raw, list):
        if raw and isinstance(raw[0], caffe2_pb2.NetDef):
            return [netdef_to_native(n) for n in raw]
        if raw and isinstance(raw[0], float):
            return [_float32(v) for v in raw]
        return [_decoded(v) for v in raw]
    if isinstance(raw, float):
        return _float32(raw)
    if isinstance(raw, bytes):
        return _decoded(raw)
    if isinstance(raw, int) and spec is not None:
        types = spec.types if isinstance(spec.types, tuple) else (spec.types,)
        if bool in types and int not in types and raw in (0, 1):
            return bool(raw)
        if key in _DTYPE_ARGUMENTS and str in types and int not in types:
            name = _DTYPE_BY_NUMBER.get(raw)
            if name is None:
                raise ValueError(f"argument {key}={raw} is not a Caffe2 data type scopeops "
                                 f"supports ({', '.join(sorted(_NUMBER_BY_DTYPE))})")
            return name
    return raw


def _native_type_and_args(op: Any) -> tuple[str, dict[str, Any]]:
    op_type = op.type
    raw = {a.name: argument_value(a) for a in op.arg}
    known = set(registered_operators())
    spec = schema(op_type) if op_type in known else None
    args: dict[str, Any] = {}
    for key, value in raw.items():
        declared = spec.args.get(key) if spec is not None else None
        if spec is not None and declared is None:
            if key in IGNORED_ARGUMENTS or op.is_gradient_op or (
                    key == "order" and value in (b"NCHW", "NCHW")):
                continue
        args[key] = _native_value(key, value, declared)
    if (op_type == "ConstantFill" and "dtype" not in args
            and isinstance(args.get("value"), int) and not isinstance(args["value"], bool)):
        args["dtype"] = "int64"   # Caffe2 infers INT64 from an integer value
    return op_type, args


# -- operators and nets -----------------------------------------------------------------------


def operator_to_native(op: Any, net_device_option: Any = None) -> OperatorDef:
    """A ``caffe2_pb2.OperatorDef`` as a :class:`scopeops.OperatorDef`.

    ``net_device_option`` (the net's ``DeviceOption``) applies when the op has none.
    Names are checked as scopeops checks them (an empty name is a ValueError).
    """
    if not isinstance(op, caffe2_pb2.OperatorDef):
        raise TypeError(f"expected a caffe2_pb2.OperatorDef, not {type(op).__name__}")
    op_type, args = _native_type_and_args(op)
    device = None
    if op.HasField("device_option"):
        device = device_option_to_native(op.device_option)
    elif net_device_option is not None:
        device = device_option_to_native(net_device_option)
    return OperatorDef(type=op_type, inputs=list(op.input), outputs=list(op.output),
                       name=op.name, args=args, is_gradient_op=op.is_gradient_op,
                       device_option=device, engine=op.engine)


def netdef_to_native(net: Any) -> NetDef:
    """A ``caffe2_pb2.NetDef`` as a :class:`scopeops.NetDef` (sub-nets in arguments too)."""
    if not isinstance(net, caffe2_pb2.NetDef):
        raise TypeError(f"expected a caffe2_pb2.NetDef, not {type(net).__name__}")
    device = net.device_option if net.HasField("device_option") else None
    return NetDef(name=net.name, ops=[operator_to_native(op, device) for op in net.op],
                  external_inputs=list(net.external_input),
                  external_outputs=list(net.external_output))


def _caffe2_value(op_type: str, key: str, value: Any, args: dict[str, Any]) -> Any:
    if key in _DTYPE_ARGUMENTS and isinstance(value, str):
        number = _NUMBER_BY_DTYPE.get(value)
        if number is None and value in caffe2_pb2.TensorProto.DataType.keys():
            number = caffe2_pb2.TensorProto.DataType.Value(value)
        if number is None:
            raise ValueError(f"dtype {value!r} has no Caffe2 TensorProto.DataType")
        return number
    if (op_type == "ConstantFill" and key == "value" and "dtype" not in args
            and isinstance(value, int) and not isinstance(value, bool)):
        return float(value)   # an int would make Caffe2 (and the way back) fill int64
    return value


def _inferred_int64(op: OperatorDef) -> bool:
    value = op.args.get("value")
    return (op.type == "ConstantFill" and op.args.get("dtype") in ("int64", "INT64")
            and isinstance(value, int) and not isinstance(value, bool))


def operator_to_caffe2(op: OperatorDef) -> Any:
    """A :class:`scopeops.OperatorDef` as the ``caffe2_pb2.OperatorDef`` Caffe2 would hold."""
    if not isinstance(op, OperatorDef):
        raise TypeError(f"expected a scopeops OperatorDef, not {type(op).__name__}")
    result = caffe2_pb2.OperatorDef(type=op.type, name=op.name)
    result.input.extend(op.inputs)
    result.output.extend(op.outputs)
    for key, value in op.args.items():
        if key == "dtype" and _inferred_int64(op):
            continue   # Caffe2 infers INT64 from the integer value: leave it implicit
        result.arg.append(make_argument(key, _caffe2_value(op.type, key, value, op.args),
                                        promote_mixed=True))
    if op.device_option is not None:
        result.device_option.CopyFrom(device_option_to_caffe2(op.device_option))
    if op.engine:
        result.engine = op.engine
    if op.is_gradient_op:
        result.is_gradient_op = True
    return result


def netdef_to_caffe2(net: NetDef) -> Any:
    """A :class:`scopeops.NetDef` as the ``caffe2_pb2.NetDef`` Caffe2 would hold."""
    if not isinstance(net, NetDef):
        raise TypeError(f"expected a scopeops NetDef, not {type(net).__name__}")
    result = caffe2_pb2.NetDef(name=net.name)
    result.op.extend(operator_to_caffe2(op) for op in net.ops)
    result.external_input.extend(net.external_inputs)
    result.external_output.extend(net.external_outputs)
    return result
