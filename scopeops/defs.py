"""Operator and net definitions: plain data, below everything that builds or runs them.

:class:`OperatorDef` and :class:`NetDef` play the part of Caffe2's protobuf messages:
comparable, copyable, printable and convertible to and from plain dicts. This module
also holds the name and argument normalisers every layer uses, and
:func:`external_reads_writes`, the one place that computes what a list of ops reads
before writing and what it writes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from scopeops.errors import PickleStateError
from scopeops.names import DeviceOption

__all__ = [
    "NetDef",
    "OperatorDef",
    "as_netdef",
    "blob_names",
    "external_reads_writes",
    "plain_arg",
]


def _builder_netdef(value: Any) -> NetDef | None:
    """The NetDef of a net builder (anything with a ``netdef`` NetDef property), else None.

    Builders live in layers above this one, so they are recognised by that property.
    """
    if isinstance(value, (str, bytes, int, float, list, tuple, dict, np.ndarray, np.generic)):
        return None
    netdef = getattr(value, "netdef", None)
    return netdef if isinstance(netdef, NetDef) else None


def plain_arg(value: Any) -> Any:
    """An argument as plain data: nets become NetDef snapshots, arrays and tuples lists."""
    if isinstance(value, NetDef):
        return value.copy()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, list)):
        return [plain_arg(v) for v in value]
    netdef = _builder_netdef(value)
    if netdef is not None:
        return netdef.copy()   # a snapshot: later builder edits do not leak in
    return value


# The definitions being serialised, outermost first, with how each reaches the next; a
# definition met again on this path contains itself, which a dict tree cannot hold.
_Path = tuple[tuple[Any, str], ...]


def _enter(path: _Path, definition: Any, label: str) -> _Path:
    for k, (seen, _) in enumerate(path):
        if seen is definition:
            cycle = " -> ".join(text for _, text in path[k:]) + f" -> {label}"
            raise ValueError(f"cannot convert a definition that contains itself to a dict: "
                             f"{cycle}")
    return path + ((definition, label),)


def _arg_to_dict(value: Any, path: _Path, where: str) -> Any:
    if isinstance(value, NetDef):
        return {"__netdef__": value._to_dict(path, where)}
    if isinstance(value, list):
        return [_arg_to_dict(v, path, f"{where}[{k}]") for k, v in enumerate(value)]
    return value


def _arg_text(value: Any) -> str:
    if isinstance(value, NetDef):
        return f"<net {value.name}>"
    if isinstance(value, list):
        return f"[{', '.join(_arg_text(v) for v in value)}]"
    return repr(value)


def _arg_from_dict(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) != {"__netdef__"}:
            raise ValueError(f"an argument dict must be a serialised NetDef, "
                             f"got keys {sorted(value)}")
        return NetDef.from_dict(value["__netdef__"])
    if isinstance(value, list):
        return [_arg_from_dict(v) for v in value]
    return value


def blob_names(value: Any, what: str) -> list[str]:
    """``value`` (one name or a list or tuple of names) as a list of non-empty str names.

    ``what`` names the field in the error (``"inputs"``, ``"external_outputs"``...).
    """
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
    default CPU). ``engine`` is Caffe2's engine name, kept and copied onto the
    op's gradient ops but not used by this CPU build ("" for none).

    ``debug_info`` says where the op was made (``File "...", line N, in f``: the
    first frame outside scopeops when ``create_operator`` or ``Net.add_op`` made
    it), so errors about the op can point there, as Caffe2's operator tracebacks
    do. It is not part of the op's value: two ops made on different lines compare
    equal, and ``to_dict`` leaves it out.
    """

    type: str
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    name: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    is_gradient_op: bool = False
    device_option: Any = None
    engine: str = ""
    debug_info: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.type, str) or not self.type:
            raise TypeError("an operator type must be a non-empty str")
        self.inputs = blob_names(self.inputs, "inputs")
        self.outputs = blob_names(self.outputs, "outputs")
        if not isinstance(self.name, str):
            raise TypeError(f"an operator name must be a str, not {type(self.name).__name__}")
        if not isinstance(self.args, dict) or not all(isinstance(k, str) for k in self.args):
            raise TypeError("operator args must be a dict with str keys")
        self.args = {k: plain_arg(v) for k, v in self.args.items()}
        self.is_gradient_op = bool(self.is_gradient_op)
        if not isinstance(self.engine, str):
            raise TypeError(f"an operator engine must be a str, not {type(self.engine).__name__}")
        if not isinstance(self.debug_info, str):
            raise TypeError(f"an operator's debug_info must be a str, not "
                            f"{type(self.debug_info).__name__}")

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle support: every field travels (``debug_info`` too), checked again by
        :meth:`__setstate__` on the way in. Rebuilt by :func:`_rebuild_definition`, so a
        definition that contains itself keeps its cycle."""
        return _rebuild_definition, (type(self),), _definition_state(self)

    def __setstate__(self, state: Any) -> None:
        values = _checked_state(self, state)
        _check_operator_fields(values)
        values["inputs"] = list(values["inputs"])
        values["outputs"] = list(values["outputs"])
        values["args"] = dict(values["args"])
        self.__dict__.update(values)

    def copy(self) -> "OperatorDef":
        """A deep copy (a definition that contains itself is copied with its cycle)."""
        return copy.deepcopy(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain data; ValueError naming the cycle if the op contains itself (through a
        NetDef argument)."""
        return self._to_dict((), f"op {self.type}")

    def _to_dict(self, path: _Path, label: str) -> dict[str, Any]:
        path = _enter(path, self, label)
        d: dict[str, Any] = {"type": self.type, "inputs": list(self.inputs),
                             "outputs": list(self.outputs), "name": self.name,
                             "args": {k: _arg_to_dict(v, path, f"argument {k!r}")
                                      for k, v in self.args.items()},
                             "is_gradient_op": self.is_gradient_op}
        if self.device_option is not None:
            d["device_option"] = self.device_option.to_dict() \
                if hasattr(self.device_option, "to_dict") else self.device_option
        if self.engine:
            d["engine"] = self.engine
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OperatorDef":
        if not isinstance(d, dict):
            raise TypeError(f"OperatorDef.from_dict takes a dict, not {type(d).__name__}")
        unknown = set(d) - {"type", "inputs", "outputs", "name", "args", "is_gradient_op",
                            "device_option", "engine"}
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
                   is_gradient_op=d.get("is_gradient_op", False), device_option=device,
                   engine=d.get("engine", ""))

    def __str__(self) -> str:
        args = ", ".join(f"{k}={_arg_text(v)}" for k, v in self.args.items())
        label = f" '{self.name}'" if self.name else ""
        grad = " [gradient]" if self.is_gradient_op else ""
        engine = f" [engine {self.engine}]" if self.engine else ""
        return (f"{self.type}{label}({', '.join(self.inputs)}) -> ({', '.join(self.outputs)})"
                + (f" {{{args}}}" if args else "") + engine + grad)


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
        self.external_inputs = blob_names(self.external_inputs, "external_inputs")
        self.external_outputs = blob_names(self.external_outputs, "external_outputs")

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle support, as :meth:`OperatorDef.__reduce__`."""
        return _rebuild_definition, (type(self),), _definition_state(self)

    def __setstate__(self, state: Any) -> None:
        values = _checked_state(self, state)
        if not isinstance(values["name"], str):
            raise PickleStateError("a pickled NetDef's name is a str")
        if not isinstance(values["ops"], list) or not all(
                isinstance(op, OperatorDef) for op in values["ops"]):
            raise PickleStateError("a pickled NetDef's ops are a list of OperatorDefs")
        for what in ("external_inputs", "external_outputs"):
            _check_pickled_names(values[what], f"NetDef's {what}")
            values[what] = list(values[what])
        values["ops"] = list(values["ops"])
        self.__dict__.update(values)

    def copy(self) -> "NetDef":
        """A deep copy (a net that contains itself is copied with its cycle)."""
        return copy.deepcopy(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain data; ValueError naming the cycle if the net contains itself (an op
        argument holding it, directly or through nested nets)."""
        return self._to_dict((), "")

    def _to_dict(self, path: _Path, where: str) -> dict[str, Any]:
        label = f"{where} net {self.name or '<unnamed>'!r}".lstrip()
        path = _enter(path, self, label)
        return {"name": self.name,
                "ops": [op._to_dict(path, f"op #{k} ({op.type})") for k, op in enumerate(self.ops)],
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


# Version of the state OperatorDef and NetDef pickle; another version is refused.
_DEFINITION_STATE_VERSION = 1


def _rebuild_definition(cls: Any) -> Any:
    """A new, empty OperatorDef or NetDef of class ``cls``, for unpickling to give its
    state (see OperatorDef.__reduce__)."""
    if not (isinstance(cls, type) and issubclass(cls, (OperatorDef, NetDef))):
        raise PickleStateError(f"a pickled definition names {cls!r}, which is neither an "
                               f"OperatorDef nor a NetDef class")
    return cls.__new__(cls)


def _definition_state(definition: Any) -> tuple[int, dict[str, Any]]:
    return _DEFINITION_STATE_VERSION, {f.name: getattr(definition, f.name)
                                       for f in fields(definition)}


def _checked_state(definition: Any, state: Any) -> dict[str, Any]:
    """The field values of a pickled definition, with exactly its class's fields."""
    kind = type(definition).__name__
    if not (isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict)):
        raise PickleStateError(f"a pickled {kind}'s state is a (version, fields) pair")
    version, values = state
    if type(version) is not int or version != _DEFINITION_STATE_VERSION:
        raise PickleStateError(f"a pickled {kind} in state format {version!r}: this scopeops "
                               f"reads format {_DEFINITION_STATE_VERSION} (pickle is for "
                               f"processes running the same scopeops)")
    expected = {f.name for f in fields(definition)}
    if set(values) != expected:
        raise PickleStateError(f"a pickled {kind} has fields {sorted(map(str, values))}, "
                               f"expected {sorted(expected)}")
    return dict(values)


def _check_pickled_names(names: Any, what: str) -> None:
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise PickleStateError(f"a pickled {what} are a list of non-empty blob names")


def _check_operator_fields(values: dict[str, Any]) -> None:
    if not isinstance(values["type"], str) or not values["type"]:
        raise PickleStateError("a pickled OperatorDef's type is a non-empty str")
    _check_pickled_names(values["inputs"], "OperatorDef's inputs")
    _check_pickled_names(values["outputs"], "OperatorDef's outputs")
    for what in ("name", "engine", "debug_info"):
        if not isinstance(values[what], str):
            raise PickleStateError(f"a pickled OperatorDef's {what} is a str")
    if not isinstance(values["args"], dict) or not all(isinstance(k, str)
                                                       for k in values["args"]):
        raise PickleStateError("a pickled OperatorDef's args are a dict with str keys")
    if not isinstance(values["is_gradient_op"], bool):
        raise PickleStateError("a pickled OperatorDef's is_gradient_op is a bool")


def as_netdef(net: Any) -> NetDef:
    """A NetDef from a NetDef or a net builder (:class:`scopeops.Net`)."""
    if isinstance(net, NetDef):
        return net
    netdef = _builder_netdef(net)
    if netdef is not None:
        return netdef
    raise TypeError(f"expected a NetDef or a Net, not {type(net).__name__}")


def external_reads_writes(ops: list[OperatorDef]) -> tuple[list[str], list[str]]:
    """``(reads, writes)`` of a list of ops, each in first-use order.

    ``reads`` are the names an op reads before any earlier op of the list writes
    them (the list's external inputs); ``writes`` every name the ops write.
    """
    reads: list[str] = []
    writes: list[str] = []
    seen_reads: set[str] = set()
    written: set[str] = set()
    for op in ops:
        for name in op.inputs:
            if name not in written and name not in seen_reads:
                seen_reads.add(name)
                reads.append(name)
        for name in op.outputs:
            if name not in written:
                written.add(name)
                writes.append(name)
    return reads, writes
