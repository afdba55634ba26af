"""Do, If and While: running sub-nets in pushed workspaces, and control flow.

``Do`` runs its sub-net inside a workspace pushed on the stack held by its
scope blob (the last input and last output), seeing only the outer blobs it
binds, under inner names. A forward Do pushes (or, with ``reuse_workspace``,
reuses the top); a gradient Do pops the workspace its forward Do pushed, so the
backward ops see the forward step's local blobs. ``If`` and ``While`` run their
nets in the same workspace.

A forward Do also watches its stack: when it finds it ``GROWTH_WARNING_DEPTH``
workspaces deeper than at its first push, and no CreateScope or gradient Do ever
emptied that stack, a ``ResourceWarning`` says the stack only grows (once per stack).
The check is one comparison per push, in Python, off the C paths.
"""

from __future__ import annotations

import sys
import warnings
from collections import Counter
from types import FrameType
from typing import Any

import numpy as np

from scopeops.defs import NetDef
from scopeops.errors import OperatorError
from scopeops.ops import _dispatch
from scopeops.ops.base import Arg, Operator, register
from scopeops.ops.create_scope import (
    mark_stack_looked_after,
    scope_stack,
    stack_is_looked_after,
)
from scopeops.ops.executor import NetExecutor

__all__ = ["DoOp", "GROWTH_WARNING_DEPTH", "IfOp", "WhileOp"]

#: How much deeper than at its first push a forward Do may find its stack before the stack
#: is reported (once) as only growing, unless a CreateScope or a gradient Do empties it.
GROWTH_WARNING_DEPTH = 1000


def _net_arg(op: Operator, name: str, message: str) -> NetDef:
    value = op.args.get(name)
    if not isinstance(value, NetDef):
        raise OperatorError(message)
    return value


@register("Do", inputs=(1, None), outputs=(1, None), allow_inplace=True,
          args={"net": Arg(NetDef, None, doc="the sub-net"),
                "inner_blobs": Arg(list, [], doc="inner names to bind"),
                "outer_blobs_idx": Arg(list, [], doc="indices into inputs + outputs "
                                       "(both without the scope blob); left out, "
                                       "inner_blobs[i] binds outer blob i"),
                "saved_fwd_blobs": Arg(list, [], doc="informational: forward blobs the "
                                       "backward pass reads"),
                "reuse_workspace": Arg(bool, False, doc="run in the workspace the last "
                                       "forward Do pushed instead of pushing a new one"),
                "copy_external_blobs": Arg(bool, False, doc="after the sub-net runs, turn "
                                           "the bound blobs into local snapshots")},
          doc="Runs a sub-net in a child workspace pushed on the scope blob's stack "
              "(the last input and output), with inner names bound to outer blobs.")
class DoOp(Operator):
    __slots__ = ("subnet", "bindings", "is_gradient", "reuse_workspace",
                 "copy_external_blobs", "forwarded_inner", "_stack_seen", "_warn_at")
    _fast_path = _dispatch.DoKernel()

    def validate(self) -> None:
        d = self.definition
        self.subnet = _net_arg(self, "net", "net must be specified in Do operator")
        self.is_gradient = d.is_gradient_op
        self.copy_external_blobs = bool(self.args.get("copy_external_blobs") or False)
        self.reuse_workspace = bool(self.args.get("reuse_workspace") or False)
        if self.is_gradient and self.reuse_workspace:
            raise OperatorError("Gradient Do op requires use of stacked workspaces")
        if self.copy_external_blobs and self.reuse_workspace:
            raise OperatorError("Reuse workspace and copy external blobs simultaneously in Do op")
        inner_blobs = list(self.args.get("inner_blobs") or [])
        outer_idx = list(d.args["outer_blobs_idx"]) if "outer_blobs_idx" in d.args \
            else list(range(len(inner_blobs)))   # left out: inner name i binds outer blob i
        if not all(isinstance(n, str) and n for n in inner_blobs):
            raise OperatorError("Invalid blob bindings: inner_blobs must be non-empty names")
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in outer_idx):
            raise OperatorError("Invalid blob bindings: outer_blobs_idx must be ints")
        if len(inner_blobs) != len(outer_idx):
            raise OperatorError("Invalid blob bindings: different inner/outer blobs lengths")
        inputs, outputs = d.inputs, d.outputs
        if not inputs:
            raise OperatorError("Expected at least one input blob")
        outer_inputs = inputs[:-1]
        if len(set(outer_inputs)) != len(outer_inputs):
            raise OperatorError(f"Duplicate input blobs: {_repeated(outer_inputs)} (a Do binds "
                                f"each outer blob once: list it once among the inputs)")
        if not outputs:
            raise OperatorError("Expected at least one output blob")
        if inputs[-1] != outputs[-1]:
            raise OperatorError("Expected same input/output workspace blob")
        outer_outputs = outputs[:-1]
        if len(set(outer_outputs)) != len(outer_outputs):
            raise OperatorError(f"Duplicate output blobs: {_repeated(outer_outputs)} (a Do "
                                f"binds each outer blob once: list it once among the outputs)")
        outer = outer_inputs + outer_outputs
        bindings: dict[str, str] = {}
        used: set[str] = set()
        for inner, idx in zip(inner_blobs, outer_idx, strict=True):
            if inner in bindings:
                raise OperatorError(f"Invalid blob bindings: redefinition of inner blob {inner}")
            if not 0 <= idx < len(outer):
                raise OperatorError(
                    f"Invalid blob bindings: outer blob index ({idx}, inner name: {inner}) "
                    f"is out of bounds [0, {len(outer) - 1}]")
            name = outer[idx]
            if name in used:
                raise OperatorError(f"Reusage of outer name: {name}")
            bindings[inner] = name
            used.add(name)
        if len(used) != len(set(outer)):
            raise OperatorError("Not all outer names are used in blob bindings")
        self.bindings = bindings
        self.forwarded_inner = list(bindings)
        # The stack a gradient Do last marked as looked after, and the depth at which a
        # forward Do looks at its stack's growth (-1: at the first push).
        self._stack_seen: Any = None
        self._warn_at = -1
        ws = self.workspace
        self._check_scope_blob([ws.get_blob(n) for n in inputs],
                               [ws.get_blob(n) for n in outputs])

    def _check_resolved(self, inputs: list[Any], outputs: list[Any]) -> None:
        self._check_scope_blob(inputs, outputs)

    def _check_scope_blob(self, inputs: Any, outputs: Any) -> None:
        """The scope blob holds only the stack: no other input or output may reach it."""
        scope = inputs[-1]
        others = list(inputs[:-1]) + list(outputs[:-1])
        if scope is not None and any(blob is scope for blob in others):
            raise OperatorError(f"Do: the scope blob {self.definition.inputs[-1]} is also bound "
                                f"to another of its inputs or outputs; it must hold only the "
                                f"workspace stack")

    def run(self) -> None:
        self._check_scope_blob(self.input_blobs(), self.output_blobs())
        stack = scope_stack(self.output_blob(-1))
        parent: Any = self.workspace   # a scopeops.Workspace: children run nets
        depth = len(stack)
        if self.is_gradient:
            child = stack.pop_gradient_workspace(parent, self.bindings)
            if stack is not self._stack_seen:
                mark_stack_looked_after(stack)
                self._stack_seen = stack
        elif self.reuse_workspace and not stack.empty():
            child = stack.reuse_last_forward_workspace(parent, self.bindings)
        else:
            child = stack.push_forward_workspace(parent, self.bindings)
            if depth >= self._warn_at:   # the only cost on the usual path
                self._watch_growth(stack, depth)
        if child is None:
            raise OperatorError(self._empty_stack_message() if self.is_gradient
                                else "Failed to initialize Do op workspace")
        try:
            executor = child.get_net(self.subnet.name) if self.subnet.name else None
            if executor is None:
                executor = child.create_net(self.subnet if self.subnet.name else
                                            _named(self.subnet, self), overwrite=True)
            executor.run()
        except Exception:
            # Leave the scope stack exactly as we found it (Caffe2 left the push on it).
            _restore_depth(stack, parent, depth, self.is_gradient)
            raise
        if not self.is_gradient and self.copy_external_blobs:
            child.copy_forwarded_tensors(self.forwarded_inner)


    def _watch_growth(self, stack: Any, depth: int) -> None:
        """At the first push, note where to look; there, one ResourceWarning per stack
        that forward Dos only push on, unless something empties it (a CreateScope, a
        gradient Do) or it was reported already."""
        if self._warn_at < 0:   # the first push: look when the stack holds that many more
            self._warn_at = depth + GROWTH_WARNING_DEPTH - 1
            return
        self._warn_at = depth + GROWTH_WARNING_DEPTH   # and again as many pushes later
        if stack_is_looked_after(stack):
            return
        mark_stack_looked_after(stack)
        scope = self.definition.inputs[-1]
        warnings.warn(
            f"Do: the workspace stack in scope blob {scope} only grows: {depth + 1} "
            f"workspaces{_holding(stack)} pushed by forward Do ops with none popped or "
            f"cleared. "
            f"Each run of a forward-only net pushes one more and keeps it. Put a "
            f"CreateScope for {scope} before the Do (so.control.add_do does) so each run "
            f"starts from an empty stack, or pass reuse_workspace=True to run in the same "
            f"workspace every time, or add the backward pass (so.add_gradient_ops), whose "
            f"gradient Do pops what the forward Do pushed.",
            ResourceWarning, stacklevel=_caller_outside_scopeops())

    def _empty_stack_message(self) -> str:
        scope = self.definition.inputs[-1]
        return (f"Failed to initialize Do op workspace: the scope stack is empty: the scope "
                f"blob {scope} holds no workspace for this gradient Do to pop. A gradient Do "
                f"pops the workspace its forward Do pushed, so one ran without its forward "
                f"Do: most likely the backward pass was added twice (add_gradient_ops "
                f"called again on the same net), or the net pops more than it pushes (more "
                f"gradient Dos than forward Dos on {scope}, or a CreateScope clearing "
                f"{scope} between them)")


def _holding(stack: Any) -> str:
    nbytes = stack.nbytes
    return f" (holding {nbytes:,} bytes of blobs)" if nbytes else ""


def _caller_outside_scopeops() -> int:
    """The ``stacklevel`` that makes a warning point at the first caller outside scopeops."""
    level = 1
    frame: FrameType | None = sys._getframe(1)   # level 1: the frame that calls warnings.warn
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module != "scopeops" and not module.startswith("scopeops."):
            break
        frame = frame.f_back
        level += 1
    return level


def _repeated(names: list[str]) -> str:
    """The names that occur more than once, in order of first occurrence."""
    counts = Counter(names)
    return ", ".join(n for n in dict.fromkeys(names) if counts[n] > 1)


def _named(netdef: NetDef, op: Operator) -> NetDef:
    named = netdef.copy()
    named.name = f"{op.definition.name or op.definition.type}/subnet"
    return named


def _restore_depth(stack: Any, parent: Any, depth: int, was_pop: bool) -> None:
    if was_pop:
        while len(stack) < depth:
            stack._undo_pop()
    else:
        while len(stack) > depth:
            stack.pop_gradient_workspace(parent)


def _condition(op: Operator, blob: Any, what: str) -> bool:
    value = blob.get() if not blob.is_empty() else None
    if not isinstance(value, np.ndarray):
        raise OperatorError(f"Invalid condition in {what} operator: tensor expected")
    if value.size != 1:
        raise OperatorError(f"Invalid condition tensor in {what} operator: single value expected")
    if value.dtype != np.bool_:
        raise OperatorError(f"Invalid condition tensor in {what} operator: bool expected, "
                            f"got {value.dtype}")
    return bool(value.reshape(-1)[0])


@register("If", inputs=(1, None), outputs=(0, None),
          args={"then_net": Arg(NetDef, None, doc="the net run when the condition is true"),
                "else_net": Arg(NetDef, None, doc="the net run when it is false (optional)")},
          doc="Runs then_net or else_net in the same workspace, by a one-element bool "
              "tensor (input 0).")
class IfOp(Operator):
    __slots__ = ("then_net", "else_net")
    _fast_path = _dispatch.IfKernel(_condition)

    def validate(self) -> None:
        _net_arg(self, "then_net", "then_net must be specified in If operator")
        if self.args.get("else_net") is not None and not isinstance(self.args["else_net"], NetDef):
            raise OperatorError("else_net must be a net in If operator")

    def setup(self) -> None:
        self.then_net = NetExecutor(self.args["then_net"], self.workspace)
        else_net = self.args.get("else_net")
        self.else_net = NetExecutor(else_net, self.workspace) if else_net is not None else None

    def run(self) -> None:
        if _condition(self, self.input_blob(0), "If"):
            self.then_net.run()
        elif self.else_net is not None:
            self.else_net.run()


@register("While", inputs=(1, None), outputs=(0, None),
          args={"loop_net": Arg(NetDef, None, doc="the loop body"),
                "cond_net": Arg(NetDef, None, doc="run before each check of the condition "
                                                  "(optional)")},
          doc="Runs loop_net while the one-element bool tensor in input 0 is true, "
              "running cond_net (if any) before each check.")
class WhileOp(Operator):
    __slots__ = ("loop_net", "cond_net")
    _fast_path = _dispatch.WhileKernel(_condition)

    def validate(self) -> None:
        _net_arg(self, "loop_net", "loop_net must be specified in While operator")
        if self.args.get("cond_net") is not None and not isinstance(self.args["cond_net"], NetDef):
            raise OperatorError("cond_net must be a net in While operator")

    def setup(self) -> None:
        self.loop_net = NetExecutor(self.args["loop_net"], self.workspace)
        cond = self.args.get("cond_net")
        self.cond_net = NetExecutor(cond, self.workspace) if cond is not None else None

    def run(self) -> None:
        cond_blob_name = self.definition.inputs[0]
        while True:
            if self.cond_net is not None:
                self.cond_net.run()
            blob = self.workspace.get_blob(cond_blob_name)
            if blob is None:
                raise OperatorError(f"Invalid condition in While operator: blob "
                                    f"{cond_blob_name} is gone")
            if not _condition(self, blob, "While"):
                break
            self.loop_net.run()
