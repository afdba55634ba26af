"""What Caffe2's C extension (``workspace.C``) provides, on scopeops' workspaces.

Named workspaces, one of them current (the start-up one is named ``"default"``), each a
:class:`scopeops.Workspace` with a root folder; ``Workspace`` (Caffe2's ``C.Workspace``)
with its ``blobs``/``nets`` mappings, blob and tensor handles, and net handles.

Feeding and fetching copy, as Caffe2 does (scopeops' own workspaces store and return
values by reference): an array fed here is copied into the workspace, and every fetch
returns a fresh array. Strings are held as ``bytes``; arrays of strings as object arrays
of ``bytes``.

A failing operator of a net whose operators were created through ``core.Net``'s sugar
raises an error that says where the operator was created (:data:`operator_tracebacks`).
"""

from __future__ import annotations

import collections
import os
from typing import Any

import numpy as np

from scopeops.caffe2.proto import caffe2_pb2
from scopeops.caffe2.python.utils import Caffe2TensorToNumpyArray
from scopeops.caffe2.translate import (
    netdef_to_native,
    numpy_dtype,
    operator_to_native,
)
from scopeops.defs import NetDef
from scopeops.errors import BlobNotFoundError, BlobTypeError, OperatorError, ScopeError
from scopeops.ops.base import registered_operators as native_registered_operators
from scopeops.workspace import Workspace as NativeWorkspace

__all__ = ["Blob", "Net", "Tensor", "TensorCPU", "Workspace", "blobs", "create_blob",
           "current_workspace", "feed_blob", "fetch_blob", "has_blob", "has_mkldnn", "native_net",
           "operator_tracebacks", "registered_operators", "reset_workspace", "root_folder",
           "switch_workspace", "workspaces"]

has_mkldnn = False

#: ``{net name: {op index: [(file, line, function), ...]}}``, innermost frame first: where
#: ``core.Net`` created each operator (net names are unique in a process).
operator_tracebacks: collections.defaultdict[str, dict[int, list[tuple[str, int, str]]]] = \
    collections.defaultdict(dict)

# numpy dtypes Caffe2 tensors hold (besides strings).
_FEEDABLE = {np.dtype(t) for t in (np.bool_, np.float16, np.float32, np.float64, np.int8,
                                   np.int16, np.int32, np.int64, np.uint8, np.uint16)}


def blob_name(name: Any) -> str:
    """A blob name from a str, bytes or BlobReference (Caffe2's ``StringifyBlobName``)."""
    if isinstance(name, str):
        return name
    if isinstance(name, bytes):
        return name.decode("utf-8")
    if type(name).__name__ == "BlobReference":
        return str(name)
    raise TypeError(f"Expected a string or BlobReference, not {type(name).__name__}")


def _plain_name(name: Any, what: str) -> str:
    # Caffe2's C functions take std::string: str or bytes, nothing else.
    if isinstance(name, str):
        return name
    if isinstance(name, bytes):
        return name.decode("utf-8")
    raise TypeError(f"{what} takes a str or bytes name, not {type(name).__name__}")


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise BlobTypeError(f"Unsupported python object type passed into ndarray: "
                        f"{type(value).__name__} (only bytes and str)")


def feed_value(value: Any, device_option: Any = None) -> Any:
    """The value a blob holds after Caffe2's ``FeedBlob(name, value)``: a copy.

    Arrays of Caffe2's numeric dtypes are copied (contiguous); arrays of strings (``S``,
    ``U`` or object arrays of ``bytes``/``str``) become object arrays of ``bytes``;
    ``bytes``/``str`` become ``bytes``; a ``TensorProto`` becomes its array. Anything
    else raises BlobTypeError before anything changes.
    """
    if device_option is not None and device_option.device_type != caffe2_pb2.CPU:
        raise ScopeError(f"this build of scopeops runs on the CPU only; cannot feed a blob "
                         f"to device type {device_option.device_type}")
    if isinstance(value, caffe2_pb2.TensorProto):
        value = Caffe2TensorToNumpyArray(value)
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "SUO":
            out = np.empty(value.shape, dtype=object)
            for index, item in np.ndenumerate(value):
                out[index] = _to_bytes(item)
            return out
        if value.dtype not in _FEEDABLE:
            raise BlobTypeError(f"This numpy data type is not supported: {value.dtype}.")
        return np.array(value, copy=True, order="C")
    if isinstance(value, (bytes, str)):
        return _to_bytes(value)
    raise BlobTypeError("Unexpected type of argument - only numpy array or string are "
                        f"supported for feeding (got {type(value).__name__})")


def fetch_value(native: NativeWorkspace, name: str) -> Any:
    """What Caffe2's ``FetchBlob(name)`` returns: a copy of an array, ``bytes`` for a
    string, and for anything else a ``bytes`` description of what the blob holds."""
    blob = native.get_blob(name)
    if blob is None:
        raise BlobNotFoundError(f"Can't find blob: {name}")
    if blob.is_empty():
        return f"{name}, a C++ native class of type nullptr (uninitialized).".encode()
    value = blob.get()
    if isinstance(value, np.ndarray):
        return np.array(value, copy=True)
    if isinstance(value, (bytes, str)):
        return _to_bytes(value)
    return f"{name}, a C++ native class of type {type(value).__name__}.".encode()


def native_net(net: Any) -> NetDef:
    """``net`` (a ``core.Net``, NetDef or bytes) as a scopeops NetDef whose ops record
    where ``core.Net`` created them (``debug_info``), which scopeops' errors quote."""
    netdef = netdef_to_native(parse_net(net))
    sites = operator_tracebacks.get(netdef.name)
    if sites:
        for index, op in enumerate(netdef.ops):
            trace = sites.get(index)
            if trace:
                file, line, function = trace[0]
                op.debug_info = f'File "{file}", line {line}, in {function}'
    return netdef


def parse_operator(op: Any) -> Any:
    """A ``caffe2_pb2.OperatorDef`` from one or its serialised bytes."""
    if isinstance(op, caffe2_pb2.OperatorDef):
        return op
    if isinstance(op, bytes):
        return caffe2_pb2.OperatorDef.FromString(op)
    raise TypeError(f"expected a caffe2_pb2.OperatorDef or its serialised bytes, not "
                    f"{type(op).__name__}")


def parse_net(net: Any) -> Any:
    """A ``caffe2_pb2.NetDef`` from a ``core.Net``, a NetDef or serialised bytes."""
    if isinstance(net, caffe2_pb2.NetDef):
        return net
    if isinstance(net, bytes):
        return caffe2_pb2.NetDef.FromString(net)
    proto = getattr(net, "Proto", None)
    if callable(proto) and not isinstance(net, str):
        result = proto()
        if isinstance(result, caffe2_pb2.NetDef):
            return result
    raise TypeError(f"expected a core.Net, a caffe2_pb2.NetDef or its serialised bytes, not "
                    f"{type(net).__name__}")


class _Current:
    """``Workspace.current``: the workspace registered under the current name."""

    def __get__(self, obj: Any, owner: Any) -> "Workspace":
        return _WORKSPACES[_STATE["current"]]


class Workspace:
    """A Caffe2 workspace (``C.Workspace``): blobs, nets, and a root folder.

    ``Workspace()`` makes a standalone workspace, registered nowhere;
    ``Workspace.current`` is the current named one.
    """

    current = _Current()

    def __init__(self, root_folder: str = ".") -> None:
        self._native = NativeWorkspace()
        self._root = root_folder

    @property
    def native(self) -> NativeWorkspace:
        """The :class:`scopeops.Workspace` this one is."""
        return self._native

    @property
    def root_folder(self) -> str:
        return self._root

    @property
    def blobs(self) -> dict[str, "Blob"]:
        """``{name: Blob}`` of every blob, by name."""
        return {name: Blob(self, name) for name in sorted(self._native.blobs())}

    @property
    def nets(self) -> dict[str, "Net"]:
        """``{name: Net}`` of every net created here, by name."""
        return {name: Net(self, name) for name in sorted(self._native.nets())}

    def create_blob(self, name: Any) -> "Blob":
        name = _plain_name(name, "create_blob")
        self._native.create_blob(name)
        return Blob(self, name)

    def has_blob(self, name: Any) -> bool:
        return self._native.has_blob(_plain_name(name, "has_blob"))

    def fetch_blob(self, name: Any) -> Any:
        return fetch_value(self._native, _plain_name(name, "fetch_blob"))

    def feed_blob(self, name: Any, value: Any, device_option: Any = None) -> bool:
        name = _plain_name(name, "feed_blob")
        self._native.feed_blob(name, feed_value(value, device_option))
        return True

    def create_net(self, net: Any, overwrite: bool = False) -> "Net":
        """Create ``net`` (a ``core.Net``, NetDef or its bytes) here; its handle."""
        netdef = native_net(net)
        self._native.create_net(netdef, overwrite)
        return Net(self, netdef.name)

    def run_net(self, name: Any, num_iter: int = 1) -> None:
        name = _plain_name(name, "run_net")
        executor = self._native.get_net(name)
        if executor is None:
            raise OperatorError(f"Can't find net {name}")
        for _ in range(num_iter):
            executor.run()

    def run_net_once(self, net: Any) -> None:
        self._native.run_net_once(native_net(net))

    def run_operator_once(self, op: Any) -> None:
        self._native.run_operator_once(operator_to_native(parse_operator(op)))

    def run(self, obj: Any) -> None:
        """Run a ``core.Net``/NetDef once (not kept in ``nets``) or an OperatorDef."""
        if hasattr(obj, "Proto") and callable(obj.Proto):
            obj = obj.Proto()
        if isinstance(obj, caffe2_pb2.PlanDef):
            raise NotImplementedError("plans (PlanDef, ExecutionStep) are not supported by "
                                      "scopeops.caffe2")
        if isinstance(obj, caffe2_pb2.NetDef):
            self.run_net_once(obj)
        elif isinstance(obj, caffe2_pb2.OperatorDef):
            self.run_operator_once(obj)
        else:
            raise ValueError(f"Don't know how to do Workspace.run() on {type(obj)}")

    def __repr__(self) -> str:
        return f"<caffe2 Workspace root={self._root!r}: {len(self._native.blobs())} blobs>"


class Net:
    """A net created in a workspace (``C.Net``): ``run()`` runs it once."""

    def __init__(self, workspace: Workspace, name: str) -> None:
        self._workspace = workspace
        self._name = name

    def name(self) -> str:
        return self._name

    def run(self) -> None:
        self._workspace.run_net(self._name)


class Blob:
    """A blob of a workspace (``C.Blob``): ``feed``, ``fetch``, ``tensor()``."""

    def __init__(self, workspace: Workspace, name: str) -> None:
        self._workspace = workspace
        self._name = name

    def feed(self, value: Any, device_option: Any = None) -> bool:
        return self._workspace.feed_blob(self._name, value, device_option)

    def fetch(self) -> Any:
        return self._workspace.fetch_blob(self._name)

    def tensor(self) -> "Tensor":
        return Tensor(self._workspace, self._name)

    def __repr__(self) -> str:
        return f"<caffe2 Blob {self._name!r}>"


class Tensor:
    """The tensor in a blob (``C.TensorCPU``).

    ``data`` is the array the blob holds, shared (writing into it writes the blob;
    string tensors give a copy); ``feed`` and ``fetch`` copy; ``init(dims, data_type)``
    makes a zero tensor of a ``TensorProto.DataType`` (not STRING).
    """

    def __init__(self, workspace: Workspace, name: str) -> None:
        self._workspace = workspace
        self._name = name

    def _blob(self) -> Any:
        blob = self._workspace.native.get_blob(self._name)
        if blob is None:
            raise BlobNotFoundError(f"Can't find blob: {self._name}")
        return blob

    @property
    def data(self) -> np.ndarray:
        blob = self._blob()
        if blob.is_empty():
            blob.set(np.empty((0,), dtype=np.float32))
        value = blob.get()
        if not isinstance(value, np.ndarray):
            raise BlobTypeError(f"Blob {self._name} does not hold a tensor")
        if value.dtype == object:
            return np.array(value, copy=True)
        return value

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def feed(self, value: Any) -> bool:
        if not isinstance(value, np.ndarray):
            raise BlobTypeError("Unexpected type of argument -- expected numpy array")
        self._blob().set(feed_value(value))
        return True

    def fetch(self) -> Any:
        return fetch_value(self._workspace.native, self._name)

    def init(self, dims: Any, caffe_type: int) -> None:
        if caffe_type == caffe2_pb2.TensorProto.STRING:
            raise BlobTypeError("Cannot init tensor of this type. Use `feed` instead.")
        try:
            dtype = numpy_dtype(caffe_type)
        except ValueError as exc:
            raise BlobTypeError(str(exc)) from None
        self._blob().set(np.zeros([int(d) for d in dims], dtype=dtype))


TensorCPU = Tensor

_WORKSPACES: dict[str, Workspace] = {"default": Workspace(".")}
_STATE: dict[str, str] = {"current": "default"}


def current() -> Workspace:
    return _WORKSPACES[_STATE["current"]]


def current_workspace() -> str:
    return _STATE["current"]


def workspaces() -> list[str]:
    return sorted(_WORKSPACES)


def switch_workspace(name: Any, create_if_missing: Any = None) -> None:
    name = _plain_name(name, "SwitchWorkspace")
    if name not in _WORKSPACES:
        if not create_if_missing:
            raise ScopeError(f"Workspace {name!r} does not exist; pass create_if_missing=True "
                             f"to create it")
        _WORKSPACES[name] = Workspace(".")
    _STATE["current"] = name


def reset_workspace(root_folder: str | None = None) -> bool:
    if root_folder is None:
        root_folder = current().root_folder
    elif not isinstance(root_folder, str):
        raise TypeError(f"a root folder is a str, not {type(root_folder).__name__}")
    else:
        os.makedirs(root_folder, exist_ok=True)
    _WORKSPACES[_STATE["current"]] = Workspace(root_folder)
    return True


def root_folder() -> str:
    return current().root_folder


def blobs() -> list[str]:
    return sorted(current().native.blobs())


def has_blob(name: Any) -> bool:
    return current().has_blob(name)


def create_blob(name: Any) -> bool:
    current().create_blob(name)
    return True


def feed_blob(name: Any, value: Any, device_option: Any = None) -> bool:
    return current().feed_blob(name, value, device_option)


def fetch_blob(name: Any) -> Any:
    return current().fetch_blob(name)


def registered_operators() -> list[str]:
    return native_registered_operators()
