"""Operator and net definitions, the Net builder, and running nets.

Definitions are plain data (Caffe2's ``OperatorDef``/``NetDef`` protobufs):
comparable, copyable, printable and convertible to and from plain dicts. A
:class:`NetExecutor` is a definition built in one workspace: its operators are
constructed once and run many times.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np

from scopeops._workspace import structure_epoch
from scopeops.errors import OperatorError, ScopeError
from scopeops.names import DEVICE_SCOPE, NAME_SCOPE, BlobReference, DeviceOption
from scopeops.ops.base import lookup, registered_operators

__all__ = ["OperatorDef", "NetDef", "Net", "NetExecutor", "create_operator", "as_netdef"]


def _plain_arg(value: Any) -> Any:
    """Arguments as plain data: Nets become NetDefs, arrays and tuples become lists."""
    if isinstance(value, Net):
        return value.netdef.copy()   # a snapshot: later builder edits do not leak in
    if isinstance(value, NetDef):
        return value.copy()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return [_plain_arg(v) for v in value]
    if isinstance(value, list):
        return [_plain_arg(v) for v in value]
    return value


def _arg_to_dict(value: Any) -> Any:
    if isinstance(value, NetDef):
        return {"__netdef__": value.to_dict()}
    if isinstance(value, list):
        return [_arg_to_dict(v) for v in value]
    return value


def _arg_from_dict(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) != {"__netdef__"}:
            raise ValueError(f"an argument dict must be a serialised NetDef, got keys {sorted(value)}")
        return NetDef.from_dict(value["__netdef__"])
    if isinstance(value, list):
        return [_arg_from_dict(v) for v in value]
    return value


def _names(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{what} must be a blob name or a list of blob names, "
                        f"not {type(value).__name__}")
    names = []
    for name in value:
        if not isinstance(name, str):
            raise TypeError(f"{what} must be blob names (str), got {type(name).__name__}")
        if not name:
            raise ValueError(f"{what} must be non-empty blob names")
        names.append(name)
    return names


@dataclass(eq=True)
class OperatorDef:
    """One operator: ``type``, ``inputs``, ``outputs``, ``name``, ``args``, ``is_gradient_op``.

    ``device_option`` records the device scope the op was added in (None for the
    default CPU).
    """

    type: str
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    name: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    is_gradient_op: bool = False
    device_option: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.type, str) or not self.type:
            raise TypeError("an operator type must be a non-empty str")
        self.inputs = _names(self.inputs, "inputs")
        self.outputs = _names(self.outputs, "outputs")
        if not isinstance(self.name, str):
            raise TypeError(f"an operator name must be a str, not {type(self.name).__name__}")
        if not isinstance(self.args, dict) or not all(isinstance(k, str) for k in self.args):
            raise TypeError("operator args must be a dict with str keys")
        self.args = {k: _plain_arg(v) for k, v in self.args.items()}
        self.is_gradient_op = bool(self.is_gradient_op)

    def copy(self) -> "OperatorDef":
        return copy.deepcopy(self)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type, "inputs": list(self.inputs),
                             "outputs": list(self.outputs), "name": self.name,
                             "args": {k: _arg_to_dict(v) for k, v in self.args.items()},
                             "is_gradient_op": self.is_gradient_op}
        if self.device_option is not None:
            d["device_option"] = self.device_option.to_dict() \
                if hasattr(self.device_option, "to_dict") else self.device_option
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OperatorDef":
        if not isinstance(d, dict):
            raise TypeError(f"OperatorDef.from_dict takes a dict, not {type(d).__name__}")
        unknown = set(d) - {"type", "inputs", "outputs", "name", "args", "is_gradient_op",
                            "device_option"}
        if unknown:
            raise ValueError(f"unknown OperatorDef fields: {sorted(unknown)}")
        if "type" not in d:
            raise ValueError("an OperatorDef dict needs a 'type'")
        args = d.get("args", {})
        if not isinstance(args, dict):
            raise TypeError("OperatorDef args must be a dict")
        device = d.get("device_option")
        if isinstance(device, dict):
            device = DeviceOption.from_dict(device)
        return cls(type=d["type"], inputs=list(d.get("inputs", [])),
                   outputs=list(d.get("outputs", [])), name=d.get("name", ""),
                   args={k: _arg_from_dict(v) for k, v in args.items()},
                   is_gradient_op=d.get("is_gradient_op", False), device_option=device)

    def __str__(self) -> str:
        args = ", ".join(f"{k}={'<net ' + v.name + '>' if isinstance(v, NetDef) else v!r}"
                         for k, v in self.args.items())
        label = f" '{self.name}'" if self.name else ""
        grad = " [gradient]" if self.is_gradient_op else ""
        return (f"{self.type}{label}({', '.join(self.inputs)}) -> ({', '.join(self.outputs)})"
                + (f" {{{args}}}" if args else "") + grad)


@dataclass(eq=True)
class NetDef:
    """A net: ``name``, ``ops``, ``external_inputs``, ``external_outputs``."""

    name: str = ""
    ops: list[OperatorDef] = field(default_factory=list)
    external_inputs: list[str] = field(default_factory=list)
    external_outputs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"a net name must be a str, not {type(self.name).__name__}")
        if not isinstance(self.ops, list) or not all(isinstance(o, OperatorDef) for o in self.ops):
            raise TypeError("NetDef.ops must be a list of OperatorDef")
        self.external_inputs = _names(self.external_inputs, "external_inputs")
        self.external_outputs = _names(self.external_outputs, "external_outputs")

    def copy(self) -> "NetDef":
        return copy.deepcopy(self)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ops": [op.to_dict() for op in self.ops],
                "external_inputs": list(self.external_inputs),
                "external_outputs": list(self.external_outputs)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NetDef":
        if not isinstance(d, dict):
            raise TypeError(f"NetDef.from_dict takes a dict, not {type(d).__name__}")
        unknown = set(d) - {"name", "ops", "external_inputs", "external_outputs"}
        if unknown:
            raise ValueError(f"unknown NetDef fields: {sorted(unknown)}")
        ops = d.get("ops", [])
        if not isinstance(ops, list):
            raise TypeError("NetDef ops must be a list")
        return cls(name=d.get("name", ""), ops=[OperatorDef.from_dict(o) for o in ops],
                   external_inputs=list(d.get("external_inputs", [])),
                   external_outputs=list(d.get("external_outputs", [])))

    def __str__(self) -> str:
        lines = [f"net {self.name or '<unnamed>'}"]
        if self.external_inputs:
            lines.append(f"  inputs: {', '.join(self.external_inputs)}")
        lines += [f"  {i}: {op}" for i, op in enumerate(self.ops)]
        if self.external_outputs:
            lines.append(f"  outputs: {', '.join(self.external_outputs)}")
        return "\n".join(lines)


def as_netdef(net: Any) -> NetDef:
    """A NetDef from a NetDef or a Net builder."""
    if isinstance(net, NetDef):
        return net
    if isinstance(net, Net):
        return net.netdef
    raise TypeError(f"expected a NetDef or a Net, not {type(net).__name__}")


def create_operator(type: str, inputs: Any, outputs: Any, name: str = "",
                    **args: Any) -> OperatorDef:
    """An :class:`OperatorDef` (Caffe2 ``core.CreateOperator``).

    Only checks that ``type`` is registered (unknown types raise
    :class:`OperatorError` listing close matches); everything else is checked
    when the operator is built in a workspace. ``is_gradient_op`` and
    ``device_option`` are taken from ``args`` when given; otherwise the op
    records the current DeviceScope. Names are taken as they are: only the
    :class:`Net` builder applies name scopes.
    """
    lookup(type)
    is_gradient_op = bool(args.pop("is_gradient_op", False))
    device_option = args.pop("device_option", None)
    if device_option is None:
        device_option = DEVICE_SCOPE.get()
    return OperatorDef(type=type, inputs=_names(inputs, "inputs"),
                       outputs=_names(outputs, "outputs"), name=name, args=args,
                       is_gradient_op=is_gradient_op, device_option=device_option)


def _scoped(names: list[str]) -> list[str]:
    """Plain names prefixed with the current name scope; BlobReferences kept as they are."""
    prefix = NAME_SCOPE.get()
    return [str(n) if isinstance(n, BlobReference) else prefix + n for n in names]


def _references(names: list[str]) -> Any:
    """Builder results: one BlobReference, or a tuple of them."""
    if len(names) == 1:
        return BlobReference(names[0])
    return tuple(BlobReference(n) for n in names)


class Net:
    """A net builder (Caffe2 ``core.Net``).

    ``net.add_op(type, inputs, outputs, **args)``, or the sugar
    ``net.<Type>(inputs, outputs, **args)`` for every registered type. ``outputs``
    may be an int to let the net name them (``<net>/<Type>_<n>``). Plain ``str``
    names are prefixed with the current name scope when the op is added;
    :class:`BlobReference` names are already fully scoped and kept as they are.
    Returns the output as a BlobReference, or a tuple of them for several.
    """

    _counter = itertools.count()

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError("a Net needs a non-empty str name")
        self._netdef = NetDef(name=name)
        self._auto = itertools.count()

    @property
    def name(self) -> str:
        return self._netdef.name

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
            outputs = [f"{self.name}/{type}_{next(self._auto)}" for _ in range(outputs)]
        op = create_operator(type, _scoped(_names(inputs, "inputs")),
                             _scoped(_names(outputs, "outputs")), name=name, **args)
        self._netdef.ops.append(op)
        return _references(op.outputs)

    def add_external_inputs(self, *names: str) -> Any:
        """Declare external inputs (scoped like op names); returns their BlobReferences."""
        scoped = _scoped(_names(list(names), "external inputs"))
        for n in scoped:
            if n not in self._netdef.external_inputs:
                self._netdef.external_inputs.append(n)
        return _references(scoped) if scoped else ()

    def add_external_outputs(self, *names: str) -> Any:
        """Declare external outputs (scoped like op names); returns their BlobReferences."""
        scoped = _scoped(_names(list(names), "external outputs"))
        for n in scoped:
            if n not in self._netdef.external_outputs:
                self._netdef.external_outputs.append(n)
        return _references(scoped) if scoped else ()

    def __getattr__(self, type_name: str) -> Any:
        if type_name.startswith("_") or type_name not in registered_operators():
            raise AttributeError(
                f"'Net' has no attribute {type_name!r} (and no operator type of that name)")

        def add(inputs: Any, outputs: Any = 1, name: str = "", **args: Any) -> Any:
            return self.add_op(type_name, inputs, outputs, name=name, **args)

        add.__name__ = type_name
        add.__doc__ = lookup(type_name).doc
        return add

    def __dir__(self) -> Iterable[str]:
        return list(super().__dir__()) + registered_operators()

    def __str__(self) -> str:
        return str(self._netdef)

    def __repr__(self) -> str:
        return f"<Net {self.name!r}: {len(self._netdef.ops)} ops>"


def _describe(op: OperatorDef, index: int, net_name: str) -> str:
    label = f"'{op.name}'" if op.name else f"#{index}"
    return f"{op.type} op {label} in net '{net_name or '<unnamed>'}'"


def build_operator(op: OperatorDef, workspace: Any, index: int = 0, net_name: str = "") -> Any:
    """Construct the operator ``op`` in ``workspace``; OperatorError on any failure."""
    try:
        spec = lookup(op.type)
        device = op.device_option
        if device is not None and getattr(device, "device_type", "cpu") != "cpu":
            raise ScopeError(f"this build of scopeops runs on the CPU only; the op asks for "
                             f"device {device.device_type}:{device.device_id}")
        return spec.cls(op, workspace)
    except Exception as exc:
        raise OperatorError(f"Cannot build {_describe(op, index, net_name)}: {exc}") from exc


class NetExecutor:
    """A net built in a workspace: its operators are constructed once, in order."""

    __slots__ = ("netdef", "workspace", "operators", "__weakref__")

    def __init__(self, netdef: NetDef, workspace: Any) -> None:
        self.netdef = netdef
        self.workspace = workspace
        before = set(workspace.local_blobs())
        try:
            self.operators = [build_operator(op, workspace, i, netdef.name)
                              for i, op in enumerate(netdef.ops)]
        except Exception:
            # All or nothing: the outputs earlier operators created go again.
            for name in workspace.local_blobs():
                if name not in before:
                    workspace.remove_blob(name)
            raise

    @property
    def name(self) -> str:
        return self.netdef.name

    def run(self) -> None:
        """Run every operator in order; a failure raises OperatorError naming the op."""
        index = 0
        epoch = structure_epoch
        try:
            for index, operator in enumerate(self.operators):
                if operator._epoch != epoch():   # Operator.prepare(), inlined: hot path
                    operator._resolve()
                operator.run()
        except OperatorError as exc:
            op = self.netdef.ops[index]
            if _describe(op, index, self.netdef.name) in str(exc):
                raise
            raise OperatorError(f"{_describe(op, index, self.netdef.name)} failed: {exc}") from exc
        except Exception as exc:
            op = self.netdef.ops[index]
            raise OperatorError(f"{_describe(op, index, self.netdef.name)} failed: "
                                f"{type(exc).__name__}: {exc}") from exc

    def __iter__(self) -> Iterator[Any]:
        return iter(self.operators)

    def __repr__(self) -> str:
        return f"<NetExecutor {self.netdef.name!r}: {len(self.operators)} ops>"
