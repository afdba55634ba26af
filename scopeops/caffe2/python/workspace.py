"""Caffe2's ``workspace`` module: the current workspace and its module-level functions.

There is always a current workspace (at start-up the one named ``"default"``).
``FeedBlob``/``FetchBlob`` copy, as Caffe2's do; ``RunOperatorOnce``, ``CreateNet``,
``RunNet`` and ``RunNetOnce`` take ``caffe2_pb2`` messages, their serialised bytes, or
``core.Net`` objects, and run them with scopeops' operators. Errors are scopeops' (every
one a ``RuntimeError``; see docs/caffe2.md).
"""

from __future__ import annotations

import collections.abc
from typing import Any, Iterator

from scopeops.caffe2.proto import caffe2_pb2
from scopeops.caffe2.python import _import_c_extension as C
from scopeops.caffe2.python import scope
from scopeops.errors import OperatorError

__all__ = [
    "Blobs", "C", "CreateBlob", "CreateNet", "CurrentWorkspace", "FeedBlob", "FetchBlob",
    "FetchBlobs", "GetNameScope", "GetNetName", "GlobalInit", "HasBlob", "NumCudaDevices",
    "RegisteredOperators", "ResetWorkspace", "RootFolder", "RunNet", "RunNetOnce",
    "RunOperatorOnce", "RunOperatorsOnce", "StringifyBlobName", "StringifyNetName",
    "StringifyProto", "SwitchWorkspace", "WorkspaceGuard", "Workspaces", "blobs",
    "has_gpu_support", "is_asan", "operator_tracebacks",
]

has_gpu_support = False
is_asan = False
operator_tracebacks = C.operator_tracebacks

Blobs = C.blobs
CreateBlob = C.create_blob
CurrentWorkspace = C.current_workspace
HasBlob = C.has_blob
RegisteredOperators = C.registered_operators
RootFolder = C.root_folder
Workspaces = C.workspaces

_GLOBAL_INIT_ARGS: list[str] = []


def GlobalInit(args: list[str]) -> bool:
    """Caffe2's flag parsing; nothing to initialise here (the arguments are kept)."""
    if not isinstance(args, (list, tuple)) or not all(isinstance(a, str) for a in args):
        raise TypeError("GlobalInit takes a list of str arguments")
    _GLOBAL_INIT_ARGS[:] = list(args[1:])
    return True


def NumCudaDevices() -> int:
    return 0


def GetNameScope() -> str:
    return scope.CurrentNameScope()


def StringifyProto(obj: Any) -> bytes:
    """Serialised bytes of a message, of an object with ``Proto()``, or bytes as given."""
    if isinstance(obj, (bytes, str)):
        return obj.encode("utf-8") if isinstance(obj, str) else obj
    if hasattr(obj, "SerializeToString") and hasattr(obj, "DESCRIPTOR"):
        result: bytes = obj.SerializeToString()
        return result
    if hasattr(obj, "Proto"):
        result = obj.Proto().SerializeToString()
        return result
    raise ValueError(f"Unexpected argument to StringifyProto of type {type(obj).__name__}")


def StringifyBlobName(name: Any) -> str:
    return C.blob_name(name)


def StringifyNetName(name: Any) -> str:
    if isinstance(name, (str, bytes)):
        return name.decode("utf-8") if isinstance(name, bytes) else name
    if type(name).__name__ == "Net":
        return str(name.Name())
    raise TypeError(f"Expected a string or Net, not {type(name).__name__}")


def GetNetName(net: Any) -> str:
    """The name of a ``core.Net``, a NetDef, or a name."""
    if isinstance(net, (str, bytes)):
        return net.decode("utf-8") if isinstance(net, bytes) else net
    if type(net).__name__ == "Net":
        return str(net.Name())
    if isinstance(net, caffe2_pb2.NetDef):
        return str(net.name)
    raise TypeError(f"Not a Net object: {net}")


def FeedBlob(name: Any, arr: Any, device_option: Any = None) -> bool:
    """Copy ``arr`` (an array, bytes/str, or a TensorProto) into blob ``name``.

    ``device_option`` defaults to the current device scope; only the CPU is supported.
    """
    if device_option is None:
        device_option = scope.CurrentDeviceScope()
    return C.feed_blob(StringifyBlobName(name), arr, device_option)


def FetchBlob(name: Any) -> Any:
    """A copy of what blob ``name`` holds (an array, or bytes for a string)."""
    return C.fetch_blob(StringifyBlobName(name))


def FetchBlobs(names: Any) -> list[Any]:
    return [FetchBlob(name) for name in names]


def RunOperatorOnce(operator: Any) -> bool:
    """Create the operator (an OperatorDef or its bytes) in the current workspace and run
    it once."""
    C.current().run_operator_once(operator)
    return True


def RunOperatorsOnce(operators: Any) -> bool:
    for op in operators:
        if not RunOperatorOnce(op):
            return False
    return True


def CreateNet(net: Any, overwrite: bool = False, input_blobs: Any = None) -> bool:
    """Create ``net`` (a ``core.Net``, NetDef or its bytes) in the current workspace.

    ``input_blobs`` are created (empty) first. Every operator is built now: an input
    that does not exist yet, and is not written by an earlier operator, is an error.
    """
    for name in input_blobs or []:
        C.create_blob(StringifyBlobName(name))
    C.current().create_net(net, overwrite)
    return True


def RunNet(name: Any, num_iter: int = 1, allow_fail: bool = False) -> bool:
    """Run the net created under ``name`` (or a ``core.Net``'s name) ``num_iter`` times.

    With ``allow_fail`` a failing run returns False instead of raising.
    """
    try:
        C.current().run_net(StringifyNetName(name), num_iter)
    except OperatorError:
        if allow_fail:
            return False
        raise
    return True


def RunNetOnce(net: Any) -> bool:
    """Run ``net`` (a ``core.Net``, NetDef or its bytes) once, without keeping it."""
    C.current().run_net_once(net)
    return True


def ResetWorkspace(root_folder: str | None = None) -> bool:
    """Replace the current workspace with an empty one (same name; the root folder kept,
    or ``root_folder``, created if missing)."""
    return C.reset_workspace(root_folder)


def SwitchWorkspace(name: Any, create_if_missing: Any = None) -> None:
    """Make workspace ``name`` current (created when missing and ``create_if_missing``)."""
    C.switch_workspace(name, create_if_missing)


class WorkspaceGuard:
    """Switch to workspace ``name`` (created if missing) inside, and back after."""

    def __init__(self, workspace_name: str) -> None:
        self._name = workspace_name
        self._previous: list[str] = []

    def __enter__(self) -> None:
        self._previous.append(CurrentWorkspace())
        SwitchWorkspace(self._name, True)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        SwitchWorkspace(self._previous.pop())


class _BlobDict(collections.abc.MutableMapping[str, Any]):
    """``workspace.blobs``: the current workspace's blobs as a mapping (fetching and
    feeding copies)."""

    def __getitem__(self, key: Any) -> Any:
        return FetchBlob(key)

    def __setitem__(self, key: Any, value: Any) -> None:
        FeedBlob(key, value)

    def __delitem__(self, key: Any) -> None:
        if not C.current().native.remove_blob(StringifyBlobName(key)):
            raise KeyError(key)

    def __len__(self) -> int:
        return len(C.blobs())

    def __iter__(self) -> Iterator[str]:
        return iter(C.blobs())

    def __contains__(self, key: object) -> bool:
        return HasBlob(key)


blobs = _BlobDict()

