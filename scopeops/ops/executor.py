"""Building operators in a workspace and running nets of them.

A :class:`NetExecutor` is a :class:`~scopeops.NetDef` built in one workspace: its
operators are constructed once, in order, all or nothing, and then run many times.
"""

from __future__ import annotations

from typing import Any, Iterator

from scopeops.defs import NetDef, OperatorDef
from scopeops.errors import OperatorError, ScopeError
from scopeops.ops import _dispatch
from scopeops.ops.base import Operator, lookup

__all__ = ["NetExecutor", "build_operator", "created_at", "describe_op"]


def describe_op(op: OperatorDef, index: int, net_name: str) -> str:
    """How errors name an op: its type, its name (or index) and its net."""
    label = f"'{op.name}'" if op.name else f"#{index}"
    return f"{op.type} op {label} in net '{net_name or '<unnamed>'}'"


def created_at(op: OperatorDef, message: str = "") -> str:
    """The end of an error about ``op``: where it was created, if that was recorded and
    ``message`` (the error so far) does not say it already.

    Caffe2 printed the Python frames that created a failing operator; the site is
    in the message here so it survives logging and re-raising.
    """
    if not op.debug_info or op.debug_info in message:
        return ""
    return f" (the op was created at {op.debug_info})"


def build_operator(op: OperatorDef, workspace: Any, index: int = 0,
                   net_name: str = "") -> Operator:
    """Construct the operator ``op`` in ``workspace``; OperatorError on any failure."""
    try:
        spec = lookup(op.type)
        device = op.device_option
        if device is not None and getattr(device, "device_type", "cpu") != "cpu":
            raise ScopeError(f"this build of scopeops runs on the CPU only; the op asks for "
                             f"device {device.device_type}:{device.device_id}")
        operator: Operator = spec.cls(op, workspace)
        return operator
    except Exception as exc:
        raise OperatorError(f"Cannot build {describe_op(op, index, net_name)}: {exc}"
                            f"{created_at(op, str(exc))}") from exc


class NetExecutor(_dispatch.NetCore):
    """A net built in a workspace: its operators are constructed once, in order.

    ``run()`` is the compiled net loop (:mod:`scopeops.ops._dispatch`).
    """

    __slots__ = ("netdef", "workspace", "__weakref__")

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

    def _failure(self, index: int, exc: Exception) -> OperatorError | None:
        """The error ``run()`` raises when operator ``index`` failed with ``exc`` (from
        ``exc``); None when ``exc`` already names the op and is raised as it is."""
        op = self.netdef.ops[index]
        where = describe_op(op, index, self.netdef.name)
        if isinstance(exc, OperatorError):
            if where in str(exc):
                return None
            return OperatorError(f"{where} failed: {exc}{created_at(op, str(exc))}")
        return OperatorError(f"{where} failed: {type(exc).__name__}: {exc}"
                             f"{created_at(op, str(exc))}")

    def __iter__(self) -> Iterator[Operator]:
        return iter(self.operators)

    def __repr__(self) -> str:
        return f"<NetExecutor {self.netdef.name!r}: {len(self.operators)} ops>"
