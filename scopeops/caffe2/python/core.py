"""Caffe2's ``core`` module: ``Net``, ``CreateOperator``, ``BlobReference`` and friends.

``Net`` holds a live ``caffe2_pb2.NetDef`` (``Proto()``) and builds it the way Caffe2's
Python does: net names unique in the process, operator sugar ``net.Relu(...)`` with
Caffe2's automatic output names (``<net>/<Op>``, ``<net>/<Op>_2``, ``:<i>`` for several
outputs), inputs nobody defined becoming external inputs, and the place each operator was
created recorded for error messages. ``CreateOperator`` applies the current name scope to
plain names and encodes arguments as Caffe2 does; it accepts operator types that are not
registered (such an op fails when it is built). Running, scopes and gradients are
scopeops' (see docs/caffe2.md).
"""

from __future__ import annotations

import collections
import dataclasses
import difflib
import os
import sys
import threading
import traceback
from typing import Any, Callable, Iterable

import numpy as np

from scopeops.caffe2.proto import caffe2_pb2
from scopeops.caffe2.python import context, scope, utils, workspace
from scopeops.caffe2.translate import (
    operator_to_caffe2,
    operator_to_native,
)
from scopeops.defs import OperatorDef
from scopeops.errors import GradientError
from scopeops.gradients import (
    NO_ARGUMENT_COPY,
    UNMARKED_MAKER_TYPES,
    BackwardPass,
    backward_ops,
    caffe2_seed_name,
)
from scopeops.names import current_device_scope
from scopeops.ops.base import registered_operators

__all__ = [
    "BlobReference", "CreateOperator", "DataType", "DeviceOption", "DeviceScope",
    "GlobalInit", "GradientRegistry", "GradientSlice", "IsOperator", "IsOperatorWithEngine",
    "NameScope", "Net", "RefreshRegisteredOperators", "RegisteredOperators", "ScopedBlobReference",
    "ScopedName", "SetEnginePref", "SetGlobalEnginePref", "SetOpEnginePref",
    "SetPerOpEnginePref", "device_option_equal", "get_op_ids_in_path",
    "get_output_producers", "get_ssa", "get_undefined_blobs", "DEFAULT_REMAP_FUNCS",
    "control_op_remap",
]

DeviceScope = scope.DeviceScope
NameScope = scope.NameScope
GradientSlice = collections.namedtuple("GradientSlice", ["indices", "values"])
RegisteredOperators = workspace.RegisteredOperators

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class DataType:
    """``TensorProto.DataType`` values as class attributes (``DataType.INT32``...)."""

    UNDEFINED = caffe2_pb2.TensorProto.UNDEFINED
    FLOAT = caffe2_pb2.TensorProto.FLOAT
    INT32 = caffe2_pb2.TensorProto.INT32
    BYTE = caffe2_pb2.TensorProto.BYTE
    STRING = caffe2_pb2.TensorProto.STRING
    BOOL = caffe2_pb2.TensorProto.BOOL
    UINT8 = caffe2_pb2.TensorProto.UINT8
    INT8 = caffe2_pb2.TensorProto.INT8
    UINT16 = caffe2_pb2.TensorProto.UINT16
    INT16 = caffe2_pb2.TensorProto.INT16
    INT64 = caffe2_pb2.TensorProto.INT64
    FLOAT16 = caffe2_pb2.TensorProto.FLOAT16
    DOUBLE = caffe2_pb2.TensorProto.DOUBLE


def GlobalInit(args: list[str]) -> bool:
    """Caffe2's process initialisation; nothing to do here (see ``workspace.GlobalInit``)."""
    return workspace.GlobalInit(args)


def _check_engine_pref(value: Any, what: str) -> None:
    if not isinstance(value, (dict, list, tuple)):
        raise TypeError(f"{what} must be a dict or a list, not {type(value).__name__}")


def SetPerOpEnginePref(op_engine_pref: Any) -> None:
    """Caffe2's per-op engine preferences. scopeops has one implementation per operator,
    so there is no engine to choose; the call is accepted and changes nothing."""
    _check_engine_pref(op_engine_pref, "the per-op engine preference")


def SetGlobalEnginePref(global_engine_pref: Any) -> None:
    """Caffe2's global engine preference (see :func:`SetPerOpEnginePref`)."""
    _check_engine_pref(global_engine_pref, "the global engine preference")


def SetEnginePref(op_engine_pref: Any, global_engine_pref: Any) -> None:
    SetPerOpEnginePref(op_engine_pref)
    SetGlobalEnginePref(global_engine_pref)


def SetOpEnginePref(op_type: str, engines: Any) -> None:
    SetPerOpEnginePref({op_type: engines})


def RefreshRegisteredOperators() -> None:
    """Caffe2 cached the registry at import; here every query reads scopeops' registry."""


def IsOperatorWithEngine(op_type: str, engine: str) -> bool:
    """True when ``op_type`` can be built with ``engine`` (only the default engine here)."""
    key = op_type if engine in ("", "DEFAULT") else f"{op_type}_ENGINE_{engine}"
    return key in registered_operators()


def IsOperator(op_type: str) -> bool:
    return IsOperatorWithEngine(op_type, "DEFAULT")


def DeviceOption(device_type: int, cuda_gpu_id: int = 0, random_seed: int | None = None,
                 node_name: str | None = None) -> Any:
    """A ``caffe2_pb2.DeviceOption`` with ``device_type`` and ``cuda_gpu_id`` set."""
    option = caffe2_pb2.DeviceOption()
    option.device_type = device_type
    option.cuda_gpu_id = cuda_gpu_id
    if node_name is not None:
        option.node_name = node_name
    if random_seed is not None:
        option.random_seed = random_seed
    return option


def device_option_equal(opt1: Any, opt2: Any, ignore_node_name: bool = True,
                        ignore_random_seed: bool = True) -> bool:
    """Caffe2's device equality: CPU options are equal whatever their gpu id; node name
    and random seed are compared only when not ignored."""
    if not opt1 or not opt2:
        return bool(opt1 == opt2)
    if not ignore_node_name and opt1.node_name != opt2.node_name:
        return False
    if not ignore_random_seed and opt1.random_seed != opt2.random_seed:
        return False
    if not opt1.device_type or not opt2.device_type:
        return not opt1.device_type and not opt2.device_type
    return bool(opt1.cuda_gpu_id == opt2.cuda_gpu_id)


def _close_operator_names(op_type: str) -> str:
    return ",".join(difflib.get_close_matches(op_type, registered_operators(), n=4))


class BlobReference:
    """A blob name, and the net it came from (``Net()``, possibly None).

    Equal to, and hashed as, its name (``ref == "x"``); ``ref + "_suffix"`` is another
    reference to the same net. ``ref.Relu([], "y")`` adds ``Relu([ref], "y")`` to that net.
    No name scope is applied (see :func:`ScopedBlobReference`).
    """

    def __init__(self, name: Any, net: "Net | None" = None) -> None:
        if isinstance(name, str):
            self._name = name
        elif isinstance(name, bytes):
            self._name = name.decode("utf-8")
        else:
            self._name = str(name)
        self._from_net = net
        self.meta: dict[str, Any] = {}

    def __hash__(self) -> int:
        return hash(self._name)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self._name == other
        if isinstance(other, bytes):
            return self._name == other.decode("utf-8", "replace")
        if isinstance(other, BlobReference):
            return self._name == other._name
        return False

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __str__(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f'BlobReference("{self._name}")'

    def __add__(self, other: Any) -> "BlobReference":
        if not isinstance(other, str):
            raise RuntimeError("Cannot add BlobReference to a non-string.")
        return BlobReference(self._name + other, self._from_net)

    def __radd__(self, other: Any) -> "BlobReference":
        if not isinstance(other, str):
            raise RuntimeError("Cannot add a non-string to BlobReference.")
        return BlobReference(other + self._name, self._from_net)

    def Net(self) -> "Net | None":
        return self._from_net

    def GetNameScope(self) -> str:
        return self._name[:self._name.rfind(scope.SEPARATOR) + 1]

    def GetUnscopedName(self) -> str:
        return self._name[self._name.rfind(scope.SEPARATOR) + 1:]

    def _CreateAndAddToNet(self, op_type: str, inputs: Any = None, *args: Any,
                           **kwargs: Any) -> Any:
        if inputs is None:
            inputs = []
        elif isinstance(inputs, (BlobReference, str)):
            inputs = [inputs]
        inputs.insert(0, self)
        assert self._from_net is not None
        return self._from_net.__getattr__(op_type)(inputs, *args, **kwargs)

    def __getattr__(self, op_type: str) -> Callable[..., Any]:
        if op_type.startswith("__") or op_type.startswith("_"):
            raise AttributeError(f"Attribute {op_type} not found.")
        if self._from_net is None:
            raise RuntimeError("You cannot use a blob reference that does not have a net "
                               "source to create operators. Create the operator from an "
                               "explicit net object.")
        if not IsOperator(op_type):
            raise RuntimeError(f"Method {op_type} is not a registered operator. Did you mean: "
                               f"[{_close_operator_names(op_type)}]")

        def create(*args: Any, **kwargs: Any) -> Any:
            return self._CreateAndAddToNet(op_type, *args, **kwargs)

        return create

    def __dir__(self) -> list[str]:
        return sorted(set(object.__dir__(self)) | set(registered_operators()))


def ScopedName(name: Any) -> Any:
    """``name`` prefixed with the current name scope."""
    if isinstance(name, bytes):
        name = name.decode("ascii")
    return scope.CurrentNameScope() + name


def ScopedBlobReference(name: Any, *args: Any, **kwargs: Any) -> BlobReference:
    """A BlobReference to ``name`` prefixed with the current name scope."""
    return BlobReference(ScopedName(name), *args, **kwargs)


def _RectifyInputOutput(blobs: Any, net: "Net | None" = None) -> list[BlobReference]:
    """Blob names as BlobReferences: plain strings get the current name scope."""
    if isinstance(blobs, (str, bytes)):
        return [ScopedBlobReference(blobs, net=net)]
    if type(blobs) is BlobReference:
        return [blobs]
    if type(blobs) in (list, tuple):
        rectified = []
        for i, blob in enumerate(blobs):
            if isinstance(blob, (str, bytes)):
                rectified.append(ScopedBlobReference(blob, net=net))
            elif type(blob) is BlobReference:
                rectified.append(blob)
            else:
                raise TypeError(f"I/O blob #{i} of unsupported type: {blob} of type "
                                f"{type(blob)}")
        return rectified
    raise TypeError(f"Unknown input/output type: {blobs} of type {type(blobs)}.")


def CreateOperator(operator_type: str, inputs: Any, outputs: Any, name: str = "",
                   control_input: Any = None, device_option: Any = None, arg: Any = None,
                   engine: str | None = None, **kwargs: Any) -> Any:
    """A ``caffe2_pb2.OperatorDef``, as Caffe2's ``core.CreateOperator`` builds it.

    Plain input/output names get the current name scope (BlobReferences are kept as
    they are); the device option is ``device_option``, else the current device scope;
    ``random_seed`` goes into the device option; every other keyword becomes an
    Argument (``None`` is a ValueError). The type is not checked: an unregistered type
    fails only when the operator is built.
    """
    operator = caffe2_pb2.OperatorDef()
    if os.environ.get("CAFFE2_DEBUG"):
        operator.debug_info = "".join(traceback.format_stack()[:-1])
    operator.type = operator_type
    operator.name = name
    operator.input.extend(str(i) for i in _RectifyInputOutput(inputs))
    operator.output.extend(str(o) for o in _RectifyInputOutput(outputs))
    if control_input:
        operator.control_input.extend(str(i) for i in _RectifyInputOutput(control_input))
    if device_option is not None:
        operator.device_option.CopyFrom(device_option)
    else:
        current = scope.CurrentDeviceScope()
        if current is not None:
            operator.device_option.CopyFrom(current)
    if engine is not None:
        operator.engine = engine
    if "random_seed" in kwargs:
        operator.device_option.random_seed = kwargs.pop("random_seed")
    if arg is not None:
        operator.arg.extend(arg)
    for key, value in kwargs.items():
        operator.arg.add().CopyFrom(utils.MakeArgument(key, value))
    return operator


def _creation_site() -> list[tuple[str, int, str]]:
    """The stack of the code that called into scopeops, innermost first."""
    frame: Any = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(
            _PACKAGE_DIR + os.sep):
        frame = frame.f_back
    stack = []
    while frame is not None:
        stack.append((frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name))
        frame = frame.f_back
    return stack


# -- SSA helpers (used by ClonePartial and control_ops_util) ----------------------------------


def get_ssa(net: Any, blob_versions: dict[str, int] | None = None
            ) -> tuple[list[tuple[list[tuple[str, int]], list[tuple[str, int]]]],
                       dict[str, int]]:
    """``(ssa, blob_versions)``: for each op, its ``(name, version)`` inputs and outputs.

    External inputs start at version 0 (every first-read blob does when the net declares
    none); each write makes a new version.
    """
    proto = net.Proto() if isinstance(net, Net) else net
    if not isinstance(proto, caffe2_pb2.NetDef):
        raise TypeError(f"get_ssa takes a Net or a NetDef, not {type(net).__name__}")
    versions = {} if blob_versions is None else blob_versions
    for name in proto.external_input:
        versions.setdefault(str(name), 0)
    ssa = []
    for op in proto.op:
        if not proto.external_input:
            for name in op.input:
                versions.setdefault(str(name), 0)
        inputs = [(str(name), versions.get(str(name), 0)) for name in op.input]
        for name in op.output:
            versions[str(name)] = versions.get(str(name), 0) + 1
        outputs = [(str(name), versions[str(name)]) for name in op.output]
        ssa.append((inputs, outputs))
    return ssa, versions


def get_undefined_blobs(ssa: Any) -> set[str]:
    """Blobs read at version 0: read before any op of the net wrote them."""
    return {name for inputs, _ in ssa for name, version in inputs if version == 0}


def get_output_producers(ssa: Any) -> dict[tuple[str, int], int]:
    """``{(blob, version): index of the op that wrote it}``."""
    return {output: i for i, (_, outputs) in enumerate(ssa) for output in outputs}


def get_op_ids_in_path(ssa: Any, blob_versions: dict[str, int], inputs: Any,
                       outputs: Any) -> list[int]:
    """Indices of the ops needed to compute the latest ``outputs`` from the latest
    ``inputs``."""
    given = {(str(i), blob_versions[str(i)]) for i in inputs}
    producers = get_output_producers(ssa)
    queue = [(str(o), blob_versions[str(o)]) for o in outputs]
    used: set[int] = set()
    while queue:
        blob = queue.pop()
        if blob not in given and blob in producers:
            index = producers[blob]
            if index not in used:
                used.add(index)
                queue.extend(ssa[index][0])
    return sorted(used)


def control_op_remap(op: Any, prefix: str, blob_remap: dict[str, str]) -> None:
    """Clone the sub-nets of an If/While op with the same blob renaming."""
    net_args = {"If": ("then_net", "else_net"), "While": ("loop_net", "cond_net")}[op.type]
    for argument in op.arg:
        if argument.name in net_args:
            assert argument.HasField("n"), \
                f"Expected non empty net in {op.type}'s {argument.name} argument"
            subnet = Net(argument.n)
            remapped = subnet.Clone(name=subnet._net.name + "_remapped",
                                    blob_remap=blob_remap)
            argument.n.CopyFrom(remapped.Proto())


DEFAULT_REMAP_FUNCS: dict[str, Callable[[Any, str, dict[str, str]], None]] = {
    "If": control_op_remap,
    "While": control_op_remap,
}


class Net:
    """A net under construction: a live ``caffe2_pb2.NetDef`` and Caffe2's helpers."""

    _net_names_used: set[str] = set()
    _net_names_lock = threading.Lock()

    @staticmethod
    def current_prefix() -> str:
        builder = context.innermost("NetBuilder")
        return str(builder.name) if builder is not None and builder.name else ""

    @staticmethod
    def _get_next_net_name(basename: Any) -> str:
        base = "/".join(x for x in [Net.current_prefix(), basename] if x)
        with Net._net_names_lock:
            name = base
            index = 1
            while name in Net._net_names_used:
                name = f"{base}_{index}"
                index += 1
            Net._net_names_used.add(name)
        return name

    def __init__(self, name_or_proto: Any) -> None:
        self._registered_blob_names: set[str] = set()
        self._recreate_lookup_tables = False
        self._attr_dict: collections.defaultdict[str, list[Any]] = \
            collections.defaultdict(list)
        self._input_record = self._output_record = None
        self._net = caffe2_pb2.NetDef()
        self._next_name_index = 0
        if isinstance(name_or_proto, caffe2_pb2.NetDef):
            self._net.CopyFrom(name_or_proto)
            name = name_or_proto.name
            prefix = f"{name}_blob_"
            indices = [int(blob[len(prefix):]) for op in self._net.op
                       for blob in list(op.input) + list(op.output)
                       if blob.startswith(prefix) and blob[len(prefix):].isdigit()]
            self._next_name_index = max(indices) + 1 if indices else 0
        elif name_or_proto is None or isinstance(name_or_proto, str):
            name = name_or_proto or ""
        else:
            raise TypeError(f"a Net is made from a name or a caffe2_pb2.NetDef, not "
                            f"{type(name_or_proto).__name__}")
        self._RecreateLookupTables()
        self._net.name = Net._get_next_net_name(name)

    # -- the proto and its lookup tables ----------------------------------------------------

    def _RecreateLookupTables(self) -> None:
        self._op_outputs = {str(o) for op in self._net.op for o in op.output}
        self._external_input_map = {str(i) for i in self._net.external_input}
        self._recreate_lookup_tables = False

    def _CheckLookupTables(self) -> None:
        """Assert that the cached blob sets cover the proto (a consistency check)."""
        if self._recreate_lookup_tables:
            self._RecreateLookupTables()
        for op in self._net.op:
            for output in op.output:
                assert output in self._op_outputs, output
        for name in self._net.external_input:
            assert name in self._external_input_map, name

    def Proto(self) -> Any:
        """The live NetDef: editing it edits the net."""
        self._recreate_lookup_tables = True
        return self._net

    def Name(self) -> str:
        return str(self._net.name)

    def __str__(self) -> str:
        return self.Name()

    def __repr__(self) -> str:
        return f"<caffe2 Net {self.Name()!r}: {len(self._net.op)} ops>"

    def BlobIsDefined(self, blob: Any) -> bool:
        """True when an op writes ``blob`` or it is an external input."""
        if self._recreate_lookup_tables:
            self._RecreateLookupTables()
        name = str(blob)
        return name in self._op_outputs or name in self._external_input_map

    def UsesBlob(self, blob: Any) -> bool:
        name = str(blob)
        return any(name in op.input for op in self._net.op) or \
            name in self._net.external_input

    def UsedBlobNames(self) -> set[str]:
        names = {str(n) for op in self._net.op for n in list(op.input) + list(op.output)}
        names.update(str(n) for n in self._net.external_input)
        names.update(str(n) for n in self._net.external_output)
        return names

    def GetBlobRef(self, blob_name: Any) -> BlobReference:
        name = str(blob_name)
        if not self.BlobIsDefined(name):
            raise KeyError(f"Net does not define blob {name}")
        return BlobReference(name, self)

    def is_external_input(self, blob: Any) -> bool:
        if self._recreate_lookup_tables:
            self._RecreateLookupTables()
        return str(blob) in self._external_input_map

    @property
    def external_inputs(self) -> list[BlobReference]:
        return [BlobReference(name) for name in self._net.external_input]

    @property
    def external_outputs(self) -> list[BlobReference]:
        return [BlobReference(name) for name in self._net.external_output]

    def add_attribute(self, name: str, obj: Any) -> None:
        self._attr_dict[name].append(obj)

    def get_attributes(self, name: str) -> list[Any]:
        return self._attr_dict.get(name, [])

    # -- external inputs and outputs ----------------------------------------------------------

    def AddExternalInput(self, *inputs: Any) -> Any:
        """Declare external inputs (names as given, not scoped); one reference, or a list."""
        assert len(inputs) > 0, "AddExternalInput needs at least one input"
        if self._recreate_lookup_tables:
            self._RecreateLookupTables()
        for blob in inputs:
            assert str(blob) not in self._external_input_map, \
                f"Net already contains an input named {blob}"
        refs = []
        for blob in inputs:
            name = str(blob)
            self._net.external_input.append(name)
            self._external_input_map.add(name)
            refs.append(BlobReference(name, self))
        return refs[0] if len(refs) == 1 else refs

    AddExternalInputs = AddExternalInput

    def AddScopedExternalInputs(self, *inputs: Any) -> list[BlobReference]:
        result = self.AddExternalInput(*[ScopedBlobReference(b) for b in inputs])
        return result if isinstance(result, list) else [result]

    def AddExternalOutput(self, *outputs: Any) -> None:
        """Declare external outputs: BlobReferences this net defines."""
        for blob in outputs:
            assert isinstance(blob, BlobReference), \
                f"AddExternalOutput takes BlobReferences, not {type(blob).__name__}"
            assert self.BlobIsDefined(blob), f"Net does not define blob {blob}"
        for blob in outputs:
            self._net.external_output.append(str(blob))

    AddExternalOutputs = AddExternalOutput

    def AddScopedExternalOutputs(self, *outputs: Any) -> None:
        self.AddExternalOutput(*[ScopedBlobReference(b) for b in outputs])

    # -- names ----------------------------------------------------------------------------

    def NextName(self, prefix: str | None = None, output_id: int | None = None) -> str:
        """An output name nothing in this net defines: ``<net>/<prefix>`` (``_2``, ``_3``...
        on a clash, ``:<output_id>`` appended), or ``<net>_blob_<n>`` without a prefix."""
        if prefix:
            base = f"{self._net.name}/{prefix}"
            suffix = "" if output_id is None else f":{output_id}"
            name = base + suffix
            index = 2
            while self.BlobIsDefined(str(ScopedBlobReference(name))):
                name = f"{base}_{index}{suffix}"
                index += 1
            return name
        name = f"{self._net.name}_blob_{self._next_name_index}"
        self._next_name_index += 1
        return name

    def NextBlob(self, prefix: Any = "unnamed") -> BlobReference:
        """A fresh BlobReference: ``prefix``, else ``prefix_auto_<n>`` (no scope applied)."""
        base = BlobReference(prefix)
        candidate = base
        index = 0
        while str(candidate) in self._registered_blob_names or self.BlobIsDefined(candidate):
            candidate = base + f"_auto_{index}"
            index += 1
        self._registered_blob_names.add(str(candidate))
        return candidate

    def NextScopedBlob(self, prefix: Any = "unnamed") -> BlobReference:
        return self.NextBlob(ScopedName(prefix))

    # -- operators ------------------------------------------------------------------------

    def _ExtendOps(self, new_ops: Iterable[Any]) -> None:
        ops = list(new_ops)
        self._net.op.extend(ops)
        for op in ops:
            self._op_outputs.update(str(o) for o in op.output)

    extend_ops = _ExtendOps

    def _CreateAndAddToSelf(self, op_type: str, inputs: Any, outputs: Any = None,
                            **kwargs: Any) -> Any:
        inputs = _RectifyInputOutput(inputs)
        for blob in inputs:
            if not self.BlobIsDefined(blob):
                assert blob.Net() is not self, \
                    f"blob {blob} of this net is used before anything defines it"
                self.AddExternalInput(blob)
        if outputs is None:
            outputs = self.NextName(prefix=op_type)
        elif type(outputs) is int:
            outputs = [self.NextName(prefix=op_type, output_id=i) for i in range(outputs)]
        outputs = _RectifyInputOutput(outputs, net=self)
        op = CreateOperator(op_type, inputs, outputs, **kwargs)
        self._ExtendOps([op])
        workspace.operator_tracebacks[self.Name()][len(self._net.op) - 1] = _creation_site()
        if not op.output:
            return None
        if len(op.output) == 1:
            return BlobReference(op.output[0], self)
        return tuple(BlobReference(o, self) for o in op.output)

    def __getattr__(self, op_type: str) -> Callable[..., Any]:
        if op_type.startswith("_"):
            raise AttributeError(f"Attribute {op_type} not found.")
        if not IsOperator(op_type) and not IsOperatorWithEngine(op_type, "CUDNN"):
            raise AttributeError(f"Method {op_type} is not a registered operator. Did you "
                                 f"mean: [{_close_operator_names(op_type)}]")

        def create(*args: Any, **kwargs: Any) -> Any:
            return self._CreateAndAddToSelf(op_type, *args, **kwargs)

        return create

    def __dir__(self) -> list[str]:
        return sorted(set(object.__dir__(self)) | set(registered_operators()))

    def Const(self, array: Any, blob_out: Any = None, dtype: Any = None) -> BlobReference:
        """A constant blob: ``GivenTensor*Fill`` (by dtype), or a bool ``ConstantFill``."""
        outputs = blob_out or 1
        if isinstance(array, bool):
            result: BlobReference = self.ConstantFill([], outputs, dtype=DataType.BOOL,
                                                      value=array)
            return result
        values = np.array(array) if dtype is None else np.array(array, dtype=dtype)
        if values.dtype == np.int32:
            op_type = "GivenTensorIntFill"
        elif values.dtype == np.int64:
            op_type = "GivenTensorInt64Fill"
        elif values.dtype.kind in "SU":
            op_type = "GivenTensorStringFill"
        elif values.dtype == np.bool_:
            op_type = "GivenTensorBoolFill"
        else:
            op_type = "GivenTensorFill"
        result = getattr(self, op_type)([], outputs, shape=values.shape,
                                        values=values.flatten().tolist())
        return result

    def PopulateProtoWithFileName(self) -> None:
        """Name every op created through sugar ``"<file>:<line>:<function>"`` of the code
        that created it (Caffe2's way to show operator origins)."""
        sites = workspace.operator_tracebacks.get(self.Name(), {})
        for index, op in enumerate(self._net.op):
            if index in sites and sites[index]:
                op.name = ":".join(str(part) for part in sites[index][0])

    # -- copies -----------------------------------------------------------------------------

    def Clone(self, name: str, blob_remap: dict[Any, Any] | None = None,
              op_id_mask: list[int] | None = None,
              remap_funcs: dict[str, Callable[..., None]] | None = None,
              keep_schema: bool = True, update_external_list: bool = False) -> "Net":
        """A copy named ``name`` (made unique), blobs renamed by ``blob_remap``, keeping the
        ops of ``op_id_mask`` (default all); If/While sub-nets are renamed too."""
        funcs = dict(DEFAULT_REMAP_FUNCS)
        funcs.update(remap_funcs or {})
        remap = {str(k): str(v) for k, v in (blob_remap or {}).items()}
        proto = caffe2_pb2.NetDef()
        proto.CopyFrom(self._net)
        proto.name = name
        mask = list(range(len(self._net.op))) if op_id_mask is None else op_id_mask

        def renamed(names: Any) -> list[str]:
            return [remap.get(str(n), str(n)) for n in names]

        def remap_op(op: Any) -> Any:
            new_op = caffe2_pb2.OperatorDef()
            new_op.CopyFrom(op)
            new_inputs, new_outputs = renamed(new_op.input), renamed(new_op.output)
            del new_op.input[:]
            del new_op.output[:]
            new_op.input.extend(new_inputs)
            new_op.output.extend(new_outputs)
            if new_op.type in funcs:
                funcs[new_op.type](new_op, (name + "/") if name else "", remap)
            return new_op

        del proto.op[:]
        proto.op.extend(remap_op(self._net.op[i]) for i in mask)
        external_in, external_out = renamed(proto.external_input), renamed(proto.external_output)
        del proto.external_input[:]
        del proto.external_output[:]
        if update_external_list:
            used_inputs = {n for op in proto.op for n in op.input}
            produced = {n for op in proto.op for n in op.output}
            external_in = [n for n in external_in if n in used_inputs]
            external_out = [n for n in external_out if n in produced]
        proto.external_input.extend(external_in)
        proto.external_output.extend(external_out)
        clone = Net(proto)
        clone._attr_dict.update(self._attr_dict)
        return clone

    def ClonePartial(self, name: str, inputs: Any, outputs: Any,
                     remap_funcs: dict[str, Callable[..., None]] | None = None
                     ) -> tuple["Net", list[BlobReference]]:
        """A net of only the ops needed to compute ``outputs`` from ``inputs`` (a list,
        or a dict renaming them); its internal blobs are prefixed with ``name + "/"``.
        Returns the net and references to its outputs."""
        if isinstance(inputs, dict):
            input_map = collections.OrderedDict(inputs)
        elif isinstance(inputs, list) and inputs and all(
                isinstance(i, tuple) and len(i) == 2 for i in inputs):
            input_map = collections.OrderedDict(inputs)
        else:
            input_map = collections.OrderedDict(zip(inputs, inputs, strict=True))
        for output in outputs:
            assert self.BlobIsDefined(output), f"Net does not define blob {output}"
        input_names = {str(k): str(v) for k, v in input_map.items()}
        output_names = [str(o) for o in outputs]
        versions = {name_: 0 for name_ in input_names}
        ssa, versions = get_ssa(self._net, versions)
        used = get_op_ids_in_path(ssa, versions, list(input_names), output_names)
        disallowed = get_op_ids_in_path(ssa, versions, [], list(input_names))
        assert not set(used) & set(disallowed), (
            "Cannot partially clone net: some of the ops required would generate the given "
            "input.")
        sub_ssa = [op for i, op in enumerate(ssa) if i in used]
        undefined = get_undefined_blobs(sub_ssa) - set(input_names)
        prefix = (name + "/") if name else ""

        def remap(blob: str) -> str:
            if blob in input_names:
                return input_names[blob]
            if blob in undefined:
                return blob
            return prefix + blob

        mapping = {blob: remap(blob) for blob in versions}
        clone = self.Clone(name, mapping, used, remap_funcs)
        new_inputs = [mapping[i] for i in input_names] + sorted(undefined)
        new_outputs = [mapping[o] for o in output_names]
        proto = clone.Proto()
        del proto.external_input[:]
        proto.external_input.extend(new_inputs)
        del proto.external_output[:]
        proto.external_output.extend(new_outputs)
        clone._RecreateLookupTables()
        return clone, [BlobReference(o, clone) for o in new_outputs]

    def AppendNet(self, net: "Net") -> "Net":
        """Append ``net``'s ops; its external inputs this net neither has nor produces, and
        its external outputs this net lacks, are added."""
        assert isinstance(net, Net), f"AppendNet takes a Net, not {type(net).__name__}"
        if self._recreate_lookup_tables:
            self._RecreateLookupTables()
        for name in net.Proto().external_input:
            if name not in self._net.external_input and name not in self._op_outputs:
                self._net.external_input.append(name)
                self._external_input_map.add(name)
        for name in net.Proto().external_output:
            if name not in self._net.external_output:
                self._net.external_output.append(name)
        self._ExtendOps(net.Proto().op)
        return self

    # -- gradients --------------------------------------------------------------------------

    def AddGradientOperators(self, ys: Any, skip: int = 0) -> dict[BlobReference, Any]:
        """Append the backward pass of the ops from index ``skip`` on for ``ys``, and
        return ``{blob: gradient blob}`` (:meth:`GradientRegistry.GetBackwardPass`).

        Where a native gradient maker needs a forward value that a later op (or the op
        itself, in place) overwrites, a ``Copy`` saving it is inserted into the forward
        ops before the overwrite (Caffe2 raised, or read the overwritten value). The
        net changes only once the whole pass is built.
        """
        if not isinstance(skip, int) or isinstance(skip, bool) or skip < 0:
            raise TypeError(f"skip must be a non-negative int, not {skip!r}")
        messages = list(self._net.op)
        natives, result = _backward_pass(messages[skip:], ys)
        forward = _forward_to_caffe2(result, natives)
        added = _gradient_ops_to_caffe2(result, natives)
        if len(forward) != len(natives) or any(
                new is not old.caffe2 for new, old in zip(forward, natives, strict=True)):
            self._move_tracebacks(skip, result.forward, natives)
            forward = [_copied(message) for message in forward]   # before the net drops them
            del self._net.op[skip:]
            self._net.op.extend(forward)
        self._ExtendOps(added)
        self._RecreateLookupTables()
        return _reference_map(result.grad_map)

    def _move_tracebacks(self, skip: int, forward: list[OperatorDef],
                         natives: list["_Caffe2Op"]) -> None:
        """Keep each op's recorded creation site when saving copies shift the ops."""
        sites = workspace.operator_tracebacks.get(self.Name())
        if not sites:
            return
        moved = {index: site for index, site in sites.items() if index < skip}
        position = iter(range(len(natives)))
        for new_index, op in enumerate(forward):
            if isinstance(op, _Caffe2Op):
                old = skip + next(position)
                if old in sites:
                    moved[skip + new_index] = sites[old]
        sites.clear()
        sites.update(moved)


# -- gradients ----------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class _Caffe2Op(OperatorDef):
    """A scopeops op standing for a ``caffe2_pb2`` op: what the gradient builder works on,
    written back as the message it came from (with the blob names the builder gave it)."""

    caffe2: Any = dataclasses.field(default=None, compare=False, repr=False)


def _from_caffe2(message: Any, what: str = "an operator") -> _Caffe2Op:
    if not isinstance(message, caffe2_pb2.OperatorDef):
        raise GradientError(f"{what} must be a caffe2_pb2.OperatorDef, not "
                            f"{type(message).__name__}")
    native = operator_to_native(message)
    return _Caffe2Op(type=native.type, inputs=native.inputs, outputs=native.outputs,
                     name=native.name, args=native.args, is_gradient_op=native.is_gradient_op,
                     device_option=native.device_option, engine=native.engine,
                     caffe2=message)


def _gradient_name(gradient: Any, what: str) -> str | None:
    """A gradient blob name from Caffe2's protocol (None, str, bytes or BlobReference)."""
    if gradient is None or isinstance(gradient, str):
        return gradient
    if isinstance(gradient, (bytes, BlobReference)):
        return str(BlobReference(gradient))
    if isinstance(gradient, GradientSlice):
        raise GradientError(f"{what} is a GradientSlice: sparse gradients are not "
                            f"supported by scopeops")
    raise GradientError(f"{what} must be a blob name or None, not {type(gradient).__name__}")


def _python_gradient(op_type: str) -> Callable[[OperatorDef, list[Any]], Any] | None:
    """The builder's view of the function registered for ``op_type``: it gets the forward
    ``caffe2_pb2`` op and returns scopeops ops standing for the messages it made."""
    function = GradientRegistry.gradient_registry_.get(op_type)
    if function is None:
        return None

    def call(op: OperatorDef, g_output: list[str | None]) -> Any:
        message = _copied(op.caffe2 if isinstance(op, _Caffe2Op) else operator_to_caffe2(op))
        result = function(message, list(g_output))
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise GradientError(f"the gradient function registered for {op_type} must "
                                f"return (ops, g_input), got {result!r}")
        made, g_input = result
        if made is None:
            made = []
        elif not isinstance(made, (list, tuple)):
            made = [made]
        if not isinstance(g_input, (list, tuple)):
            raise GradientError(f"the gradient function registered for {op_type} must "
                                f"return g_input as a list, got {g_input!r}")
        where = f"an op the gradient function registered for {op_type} returned"
        return ([_from_caffe2(m, where) for m in made],
                [_gradient_name(g, f"input gradient {k} of the gradient function "
                                   f"registered for {op_type}")
                 for k, g in enumerate(g_input)])

    return call


def _seed_name(blob: str) -> str:
    # Caffe2 made the seed fill with CreateOperator, which scopes its output name.
    return ScopedName(caffe2_seed_name(blob))


def _caffe2_ys(ys: Any) -> dict[str, str | None]:
    if isinstance(ys, list):
        pairs = [(y, None) for y in ys]
    elif isinstance(ys, dict):
        pairs = list(ys.items())
    else:
        raise TypeError("ys should either be a list or a dict.")
    return {str(_gradient_name(y, "a blob in ys")): _gradient_name(g, f"the gradient of {y}")
            for y, g in pairs}


def _caffe2_pass(natives: list[_Caffe2Op], ys: dict[str, str | None]) -> BackwardPass:
    return backward_ops(natives, ys, makers=_python_gradient, seed_namer=_seed_name,
                        mark_gradient_ops=True, broadcast="caffe2")


def _backward_pass(operators: Any, ys: Any) -> tuple[list[_Caffe2Op], BackwardPass]:
    seeds = _caffe2_ys(ys)
    messages = list(operators)
    for k, message in enumerate(messages):
        if not isinstance(message, caffe2_pb2.OperatorDef):
            raise TypeError(f"operator #{k} is a {type(message).__name__}, not a "
                            f"caffe2_pb2.OperatorDef")
    natives = [_from_caffe2(message) for message in messages]
    return natives, _caffe2_pass(natives, seeds)


def _refuse_saves(result: BackwardPass, natives: list[_Caffe2Op]) -> None:
    """A list of gradient ops cannot give a maker a forward value the forward ops
    overwrite (only a net can, by saving a copy): refuse, as Caffe2 did for values
    overwritten by later ops."""
    if not result.saves:
        return
    (blob, version), _ = next(iter(result.saves.items()))
    current = sum(op.outputs.count(blob) for op in natives)
    raise GradientError(
        f"Gradient operator needs \"{blob}\" at version {version}, but currently we have "
        f"version {current}: the forward ops overwrite it. Net.AddGradientOperators saves "
        f"a copy of it before the overwrite; a list of gradient operators cannot")


class _DeviceOptions:
    """The ``caffe2_pb2.DeviceOption`` each scopeops device option of a pass came from.

    The builder hands a forward op's device option (the same object) to its gradient
    ops and to the Sums of gradients they make, so each is written back as the very
    message Caffe2 would have copied.
    """

    def __init__(self, result: BackwardPass, natives: list[_Caffe2Op]) -> None:
        self._messages: dict[int, tuple[Any, Any]] = {}
        for op in list(natives) + list(result.ops):
            if isinstance(op, _Caffe2Op) and op.caffe2.HasField("device_option"):
                self._remember(op.device_option, op.caffe2.device_option)
        native_scope = current_device_scope()
        if native_scope is not None:
            self._remember(native_scope, scope.CurrentDeviceScope())

    def _remember(self, native: Any, message: Any) -> None:
        if native is not None:
            self._messages.setdefault(id(native), (native, message))

    def write(self, op: OperatorDef, message: Any) -> None:
        known = self._messages.get(id(op.device_option))
        if known is not None and known[0] is op.device_option:
            message.device_option.CopyFrom(known[1])


def _copied(message: Any) -> Any:
    copy = caffe2_pb2.OperatorDef()
    copy.CopyFrom(message)
    return copy


def _with_names(op: _Caffe2Op) -> Any:
    """The message ``op`` stands for, with the blob names the builder left it."""
    message = _copied(op.caffe2)
    del message.input[:]
    del message.output[:]
    message.input.extend(op.inputs)
    message.output.extend(op.outputs)
    return message


def _gradient_ops_to_caffe2(result: BackwardPass, natives: list[_Caffe2Op]) -> list[Any]:
    """The pass's ops as Caffe2 built them: a gradient function's messages as returned;
    a native maker's ops as Caffe2's C++ makers' (``is_gradient_op``, the forward op's
    device option, engine and, after the maker's own, all its arguments); seed fills
    and Sums plain."""
    devices = _DeviceOptions(result, natives)
    messages = []
    for op, source in zip(result.ops, result.sources, strict=True):
        if isinstance(op, _Caffe2Op):
            messages.append(_with_names(op))
            continue
        message = operator_to_caffe2(op)
        devices.write(op, message)
        forward = natives[source] if source is not None else None
        if forward is not None and forward.type not in UNMARKED_MAKER_TYPES:
            if forward.caffe2.HasField("engine"):
                message.engine = forward.caffe2.engine
            if forward.type not in NO_ARGUMENT_COPY:
                # Arguments the maker took from the forward op go where Caffe2 put them:
                # after the maker's own, in the forward op's order.
                own = [a for a in message.arg if not (
                    a.name in forward.args and op.args.get(a.name) == forward.args[a.name])]
                del message.arg[:]
                message.arg.extend(own)
                message.arg.extend(forward.caffe2.arg)
        messages.append(message)
    return messages


def _forward_to_caffe2(result: BackwardPass, natives: list[_Caffe2Op]) -> list[Any]:
    """The forward ops the gradient ops run after: the messages given, the copies that
    save overwritten values, and ops whose sub-nets a maker changed."""
    devices = _DeviceOptions(result, natives)
    given = {id(native) for native in natives}
    messages = []
    for op in result.forward:
        if isinstance(op, _Caffe2Op) and id(op) in given:
            messages.append(op.caffe2)          # unchanged: the very message given
        elif isinstance(op, _Caffe2Op):
            message = _with_names(op)
            del message.arg[:]
            message.arg.extend(operator_to_caffe2(op).arg)
            messages.append(message)
        else:
            message = operator_to_caffe2(op)
            devices.write(op, message)
            messages.append(message)
    return messages


def _reference_map(grad_map: dict[str, str]) -> dict[BlobReference, Any]:
    return {BlobReference(blob): BlobReference(grad) for blob, grad in grad_map.items()}


class GradientRegistry:
    """Caffe2's gradient registry, on scopeops' gradient builder.

    ``RegisterGradient(op_type)`` registers a function in Caffe2's protocol, ``(op,
    g_output) -> (ops, g_input)``, for any op type: ``op`` is the forward
    ``caffe2_pb2.OperatorDef``, ``g_output`` one gradient blob name (or None) per output;
    it returns one op, a list or None, and one input gradient name (or None) per input,
    a name no returned op writes being passed through. Its ops are used as returned.
    scopeops' own gradient makers take precedence, as Caffe2's C++ makers did; their ops
    are Caffe2's: ``is_gradient_op`` set, and the forward op's device option, engine and
    arguments copied.
    """

    gradient_registry_: dict[str, Callable[..., Any]] = {}

    @classmethod
    def RegisterGradient(cls, op_type: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        if not isinstance(op_type, str) or not op_type:
            raise TypeError(f"RegisterGradient takes an op type name, not {op_type!r}")

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            if not callable(func):
                raise TypeError(f"a gradient function must be callable, not "
                                f"{type(func).__name__}")
            cls.gradient_registry_[op_type] = func
            return func

        return register

    @classmethod
    def GetGradientForOp(cls, op: Any, g_output: list[Any]) -> tuple[list[Any], list[Any]]:
        """``(gradient ops, g_input)`` of one op given the gradients of its outputs
        (``g_output``, one name or None per output)."""
        native = _from_caffe2(op)
        if not isinstance(g_output, (list, tuple)) or len(g_output) != len(native.outputs):
            raise GradientError(f"g_output must give one gradient (or None) for each of "
                                f"the {len(native.outputs)} outputs of {native.type}, got "
                                f"{g_output!r}")
        given: dict[str, str | None] = {}
        for name, g in zip(native.outputs, g_output, strict=True):
            g = _gradient_name(g, f"the gradient of output {name}")
            if g is not None:
                given[name] = g
        result = _caffe2_pass([native], given)
        _refuse_saves(result, [native])
        return (_gradient_ops_to_caffe2(result, [native]),
                [result.initial_grad_map.get(name) for name in native.inputs])

    @classmethod
    def GetBackwardPass(cls, operators: Any, ys: Any, ys_generate_gradient: bool = False
                        ) -> tuple[list[Any], dict[BlobReference, Any]]:
        """``(gradient ops, {blob: gradient})`` of ``operators`` for ``ys``: a list of
        blobs whose gradients are ones (in ``<y>_autogen_grad``), or a dict ``{y: its
        gradient blob, or None for ones}``. The operators are not changed; a gradient
        needing a value the operators overwrite is refused (``GradientError``, a
        RuntimeError): ``Net.AddGradientOperators`` saves such values instead."""
        natives, result = _backward_pass(operators, ys)
        _refuse_saves(result, natives)
        return _gradient_ops_to_caffe2(result, natives), _reference_map(result.grad_map)
