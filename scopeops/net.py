"""The Net builder and ``create_operator``.

:class:`Net` builds a :class:`~scopeops.NetDef` op by op, applying the current name
scope to plain names (Caffe2's ``core.Net``); :func:`create_operator` makes one
:class:`~scopeops.OperatorDef` (Caffe2's ``core.CreateOperator``). The definitions
themselves live in :mod:`scopeops.defs`, and running them in :mod:`scopeops.ops`.
"""

from __future__ import annotations

import sys
import threading
from types import FrameType
from typing import Any, Iterable

from scopeops.defs import NetDef, OperatorDef, as_netdef, blob_names
from scopeops.errors import PickleStateError, did_you_mean
from scopeops.names import DEVICE_SCOPE, NAME_SCOPE, BlobReference, DeviceOption
from scopeops.ops.base import lookup, registered_operators
from scopeops.ops.executor import NetExecutor

# OperatorDef, NetDef, as_netdef and NetExecutor are re-exported: scopeops.net was their
# home before the definitions and the executor moved down a layer.
__all__ = ["OperatorDef", "NetDef", "Net", "NetExecutor", "create_operator", "as_netdef",
           "creation_site", "CURRENT_DEVICE_SCOPE"]


class _CurrentDeviceScope:
    def __repr__(self) -> str:
        return "CURRENT_DEVICE_SCOPE"


#: ``create_operator``'s default ``device_option``: the DeviceScope in force when it is
#: called. Pass ``None`` for an op that records no device.
CURRENT_DEVICE_SCOPE: Any = _CurrentDeviceScope()


def creation_site() -> str:
    """Where the caller's caller outside scopeops is: ``File "...", line N, in f``.

    Walks a handful of frames and reads no file, so it is cheap enough to run for
    every op made (Caffe2 records the same triple for its operator tracebacks).
    """
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module != "scopeops" and not module.startswith("scopeops."):
            code = frame.f_code
            return f'File "{code.co_filename}", line {frame.f_lineno}, in {code.co_name}'
        frame = frame.f_back
    return ""


def create_operator(type: str, inputs: Any, outputs: Any, name: str = "", *,
                    device_option: DeviceOption | None = CURRENT_DEVICE_SCOPE,
                    is_gradient_op: bool = False, engine: str = "",
                    **args: Any) -> OperatorDef:
    """An :class:`OperatorDef` (Caffe2 ``core.CreateOperator``).

    Only checks that ``type`` is registered (unknown types raise
    :class:`OperatorError` listing close matches); everything else is checked
    when the operator is built in a workspace. ``device_option`` defaults to the
    current DeviceScope; ``None`` records no device. Names are taken as they
    are: only the :class:`Net` builder applies name scopes. The op's
    ``debug_info`` records the first caller outside scopeops, which errors about
    the op quote.
    """
    lookup(type)
    if device_option is CURRENT_DEVICE_SCOPE:
        device_option = DEVICE_SCOPE.get()
    return OperatorDef(type=type, inputs=blob_names(inputs, "inputs"),
                       outputs=blob_names(outputs, "outputs"), name=name, args=args,
                       is_gradient_op=bool(is_gradient_op), device_option=device_option,
                       engine=engine, debug_info=creation_site())


def _scoped(names: list[str]) -> list[str]:
    """Plain names prefixed with the current name scope; BlobReferences kept as they are."""
    prefix = NAME_SCOPE.get()
    return [str(n) if isinstance(n, BlobReference) else prefix + n for n in names]


def _references(names: list[str]) -> Any:
    """Builder results: one BlobReference, or a tuple of them."""
    if len(names) == 1:
        return BlobReference(names[0])
    return tuple(BlobReference(n) for n in names)


_AUTO_PREFIX_LOCK = threading.Lock()
_AUTO_PREFIXES: set[str] = set()
_NEXT_SUFFIX: dict[str, int] = {}


def _unique_auto_prefix(name: str) -> str:
    """``name``, or ``name_1``, ``name_2``... the first not taken by another Net yet.

    Taken for the life of the process, as Caffe2 keeps every net name it handed out:
    blobs named after a net may outlive it in a workspace.
    """
    with _AUTO_PREFIX_LOCK:
        prefix = name
        if prefix in _AUTO_PREFIXES:
            suffix = _NEXT_SUFFIX.get(name, 1)
            while f"{name}_{suffix}" in _AUTO_PREFIXES:
                suffix += 1
            prefix = f"{name}_{suffix}"
            _NEXT_SUFFIX[name] = suffix + 1
        _AUTO_PREFIXES.add(prefix)
        return prefix


class Net:
    """A net builder (Caffe2 ``core.Net``).

    ``net.add_op(type, inputs, outputs, **args)``, or the sugar
    ``net.<Type>(inputs, outputs, **args)`` for every registered type. ``outputs``
    may be an int to let the net name them (``<prefix>/<Type>_<n>``). Plain ``str``
    names are prefixed with the current name scope when the op is added;
    :class:`BlobReference` names are already fully scoped and kept as they are.
    Returns the output as a BlobReference, or a tuple of them for several.

    The net keeps the name it is given (workspaces keep built nets by name), but
    the ``<prefix>`` of its automatic output names is unique in the process: the
    first Net named ``"net"`` names its outputs ``net/Sum_0``, ``net/Sum_1``...,
    a second Net named ``"net"`` uses ``net_1/...``, so two nets never write the
    same automatic blob (see :attr:`auto_prefix`).
    """

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError("a Net needs a non-empty str name")
        self._netdef = NetDef(name=name)
        self._next_auto = 0     # the number of the next automatic output name
        self._auto_prefix = _unique_auto_prefix(name)

    @property
    def name(self) -> str:
        return self._netdef.name

    @property
    def auto_prefix(self) -> str:
        """The prefix of this net's automatic output names: its name, made unique."""
        return self._auto_prefix

    @property
    def netdef(self) -> NetDef:
        return self._netdef

    @property
    def ops(self) -> list[OperatorDef]:
        return self._netdef.ops

    def add_op(self, type: str, inputs: Any, outputs: Any = 1, name: str = "",
               **args: Any) -> Any:
        """Append an operator; returns its output BlobReference (or a tuple of them)."""
        lookup(type)
        if isinstance(outputs, int) and not isinstance(outputs, bool):
            if outputs < 0:
                raise ValueError("the number of outputs must be >= 0")
            first = self._next_auto
            self._next_auto += outputs
            outputs = [f"{self._auto_prefix}/{type}_{k}" for k in range(first, first + outputs)]
        op = create_operator(type, _scoped(blob_names(inputs, "inputs")),
                             _scoped(blob_names(outputs, "outputs")), name=name, **args)
        self._netdef.ops.append(op)
        return _references(op.outputs)

    def add_external_inputs(self, *names: str) -> Any:
        """Declare external inputs (scoped like op names); returns their BlobReferences."""
        scoped = _scoped(blob_names(list(names), "external inputs"))
        for n in scoped:
            if n not in self._netdef.external_inputs:
                self._netdef.external_inputs.append(n)
        return _references(scoped) if scoped else ()

    def add_external_outputs(self, *names: str) -> Any:
        """Declare external outputs (scoped like op names); returns their BlobReferences."""
        scoped = _scoped(blob_names(list(names), "external outputs"))
        for n in scoped:
            if n not in self._netdef.external_outputs:
                self._netdef.external_outputs.append(n)
        return _references(scoped) if scoped else ()

    def __getattr__(self, type_name: str) -> Any:
        if type_name.startswith("_"):
            raise AttributeError(f"'Net' has no attribute {type_name!r}")
        if type_name not in registered_operators():
            raise AttributeError(
                f"'Net' has no attribute {type_name!r} (and no operator type of that name"
                f"{did_you_mean(type_name, registered_operators())})")

        def add(inputs: Any, outputs: Any = 1, name: str = "", **args: Any) -> Any:
            return self.add_op(type_name, inputs, outputs, name=name, **args)

        add.__name__ = type_name
        add.__doc__ = lookup(type_name).doc
        return add

    def __dir__(self) -> Iterable[str]:
        return list(super().__dir__()) + registered_operators()

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle support: the NetDef and the automatic names (see :func:`_rebuild_net`)."""
        return _rebuild_net, (self._netdef, self._auto_prefix, self._next_auto)

    def __str__(self) -> str:
        return str(self._netdef)

    def __repr__(self) -> str:
        return f"<Net {self.name!r}: {len(self._netdef.ops)} ops>"


def _rebuild_net(netdef: Any, auto_prefix: Any, next_auto: Any) -> Net:
    """A Net from its pickled state. It keeps its automatic-name prefix when this process
    has not handed that prefix out yet (a net sent to a worker); otherwise (a copy in the
    same process) later automatic outputs take a fresh prefix, so the two nets never
    write the same automatic blob."""
    if not isinstance(netdef, NetDef) or not isinstance(getattr(netdef, "name", None), str) \
            or not netdef.name:
        raise PickleStateError("a pickled Net holds a NetDef with a name")
    if not isinstance(auto_prefix, str) or not auto_prefix:
        raise PickleStateError("a pickled Net's automatic-name prefix is a non-empty str")
    if isinstance(next_auto, bool) or not isinstance(next_auto, int) or next_auto < 0:
        raise PickleStateError("a pickled Net's next automatic-name number is an int >= 0")
    net = Net.__new__(Net)
    net._netdef = netdef
    net._auto_prefix = _unique_auto_prefix(auto_prefix)
    net._next_auto = next_auto if net._auto_prefix == auto_prefix else 0
    return net
