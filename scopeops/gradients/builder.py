"""The backward-pass builder: ``add_gradient_ops`` and the gradient makers' plumbing.

A gradient maker is a function registered beside its operator
(``@scopeops.ops.gradient("Mul")``) that receives a :class:`GradientContext`
for one forward op and returns the gradient :class:`OperatorDef`s, built with
``g.make(...)``:

``g.I(i)``, ``g.O(i)``
    the forward input/output blob *as it was when the op ran*. When a later op
    overwrites that blob (in place), the builder inserts a ``Copy`` to a saved
    blob just before the overwrite and these return the saved name; inside a
    Do or While body that copy lands in the iteration's own workspace.
``g.GO(i)``
    the gradient of output ``i``, or None when nothing downstream has one.
``g.GI(i)``
    the blob to write input ``i``'s gradient into. Calling it is what gives the
    input a gradient. The builder makes each blob's gradient ``<blob>_grad``;
    when a blob receives gradients from several uses the maker writes to a
    fresh name and the builder sums it in, and when writing ``<blob>_grad``
    directly would clobber an output gradient the op still reads (an in-place
    op), the maker writes to a fresh name that the builder copies over after.

The forward versions of every blob are tracked (a write makes a new version),
so in-place ops and blobs used several times get exact gradients.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from scopeops.defs import OperatorDef, as_netdef
from scopeops.errors import OperatorError
from scopeops.net import create_operator
from scopeops.ops.base import NO_GRADIENT, SHOULD_NOT_DO_GRADIENT, lookup

__all__ = ["GradientContext", "add_gradient_ops", "backward_ops", "grad_name", "insert_saves"]


def grad_name(blob: str) -> str:
    """The gradient blob of ``blob``: ``<blob>_grad``."""
    return f"{blob}_grad"


@dataclass
class _Version:
    """Per-blob version bookkeeping of a forward pass."""

    # index of the op writing each version (version 0 = before the net: None)
    writers: dict[str, list[int | None]] = field(default_factory=dict)

    def current(self, name: str) -> int:
        return len(self.writers.get(name, [None])) - 1

    def write(self, name: str, op_index: int) -> int:
        self.writers.setdefault(name, [None]).append(op_index)
        return self.current(name)

    def writer_of(self, name: str, version: int) -> int | None:
        return self.writers.get(name, [None])[version]


class _Pass:
    """State shared by the gradient contexts of one backward pass."""

    def __init__(self, forward_final: dict[str, int], in_versions: list[list[int]],
                 out_versions: list[list[int]], prefix: str,
                 namer: Callable[[str], str]) -> None:
        self.namer = namer
        self.final = forward_final
        self.in_versions = in_versions
        self.out_versions = out_versions
        # (blob, version) -> the blob holding its gradient, once one was written
        self.grad_of: dict[tuple[str, int], str] = {}
        # (blob, version) -> saved name, and where to insert the Copy
        self.saves: dict[tuple[str, int], str] = {}
        self.temp_counter = itertools.count()
        self.prefix = prefix

    def saved_name(self, name: str, version: int) -> str:
        if self.final.get(name, 0) == version:
            return name
        key = (name, version)
        if key not in self.saves:
            self.saves[key] = f"{name}_saved_v{version}"
        return self.saves[key]

    def temp(self, hint: str) -> str:
        return f"{hint}_{self.prefix}autosplit_{next(self.temp_counter)}"


class GradientContext:
    """What a gradient maker sees of one forward op (see the module docstring)."""

    def __init__(self, state: _Pass, index: int, op: OperatorDef,
                 g_output: list[str | None]) -> None:
        self._state = state
        self.index = index
        self.op = op
        self._g_output = g_output
        self.g_input: list[str | None] = [None] * len(op.inputs)

    def I(self, i: int) -> str:  # noqa: E743 - Caffe2's name
        """Forward input ``i`` as this op read it (a saved copy if overwritten later)."""
        return self._state.saved_name(self.op.inputs[i], self._state.in_versions[self.index][i])

    def O(self, i: int) -> str:  # noqa: E743
        """Forward output ``i`` as this op wrote it (a saved copy if overwritten later)."""
        return self._state.saved_name(self.op.outputs[i], self._state.out_versions[self.index][i])

    def GO(self, i: int) -> str | None:
        """The gradient of output ``i``, or None."""
        return self._g_output[i]

    def GI(self, i: int, inplace_ok: bool = False) -> str:
        """Where to write the gradient of input ``i`` (calling this gives it one).

        ``inplace_ok``: the maker reads every output gradient before it writes
        this one (a Do reading and writing the same blob), so sharing the name of
        an output gradient is safe.
        """
        written = self.g_input[i]
        if written is not None:
            return written
        name = self.op.inputs[i]
        key = (name, self._state.in_versions[self.index][i])
        target = self._state.grad_of.get(key) or self._state.namer(name)
        clash = (key in self._state.grad_of              # another use already wrote it: sum
                 or target in self.g_input               # same blob twice among the inputs
                 or (target in self._g_output and not inplace_ok))  # GO still being read
        written = self._state.temp(target) if clash else target
        self.g_input[i] = written
        return written

    def temp(self, hint: str) -> str:
        """A fresh blob name for an intermediate of the gradient ops."""
        return self._state.temp(hint)

    def make(self, type: str, inputs: Any, outputs: Any, **args: Any) -> OperatorDef:
        """A gradient op (``create_operator`` without name scoping)."""
        return create_operator(type, inputs, outputs, **args)

    def finish(self, ops: list[OperatorDef]) -> list[OperatorDef]:
        """The maker's ops followed by the sums and copies that complete GI names."""
        tail: list[OperatorDef] = []
        for i, written in enumerate(self.g_input):
            if written is None:
                continue
            name = self.op.inputs[i]
            key = (name, self._state.in_versions[self.index][i])
            target = self._state.grad_of.get(key) or self._state.namer(name)
            if written != target:
                if key in self._state.grad_of:
                    tail.append(create_operator("Sum", [target, written], [target]))
                else:
                    tail.append(create_operator("Copy", [written], [target]))
            self._state.grad_of[key] = target
        return list(ops) + tail


def _analyse(ops: list[OperatorDef]) -> tuple[_Version, list[list[int]], list[list[int]]]:
    versions = _Version()
    in_versions: list[list[int]] = []
    out_versions: list[list[int]] = []
    for index, op in enumerate(ops):
        in_versions.append([versions.current(n) for n in op.inputs])
        out_versions.append([versions.write(n, index) for n in op.outputs])
    return versions, in_versions, out_versions


def backward_ops(ops: list[OperatorDef], initial: dict[str, str] | Iterable[str],
                 prefix: str = "", namer: Callable[[str], str] | None = None,
                 external_only: bool = False
                 ) -> tuple[list[OperatorDef], dict[str, str], dict[tuple[str, int], str]]:
    """The backward pass of ``ops`` given gradients for some of their final blobs.

    ``initial`` maps forward blobs (their final version) to the blob holding
    their gradient (a list means ``<blob>_grad`` for each). ``namer`` names the
    gradient blobs this pass creates (default ``<blob>_grad``). Returns the
    gradient ops; ``{blob: gradient blob}`` for every blob that received one (of
    its earliest version; with ``external_only``, only blobs that the ops read
    before writing, i.e. the gradients of their values before the ops ran); and
    the saves needed, ``{(blob, version): saved name}``, which the caller inserts
    with :func:`insert_saves`.
    """
    namer = namer or grad_name
    if not isinstance(initial, dict):
        initial = {name: grad_name(name) for name in initial}
    versions, in_versions, out_versions = _analyse(ops)
    final = {name: versions.current(name) for name in versions.writers}
    state = _Pass(final, in_versions, out_versions, prefix, namer)
    for name, g in initial.items():
        state.grad_of[(name, final.get(name, 0))] = g
    backward: list[OperatorDef] = []
    for index in range(len(ops) - 1, -1, -1):
        op = ops[index]
        g_output = [state.grad_of.get((n, v))
                    for n, v in zip(op.outputs, out_versions[index], strict=True)]
        if all(g is None for g in g_output):
            continue
        maker = lookup(op.type).gradient
        if maker is NO_GRADIENT:
            continue
        if maker is SHOULD_NOT_DO_GRADIENT:
            raise OperatorError(f"Operator {op.type} should not have its gradient computed "
                                f"(asked for through {[g for g in g_output if g]})")
        if maker is None or not callable(maker):
            raise OperatorError(f"No gradient is registered for operator type {op.type} "
                                f"(op #{index}: {op})")
        ctx = GradientContext(state, index, op, g_output)
        for grad_op in ctx.finish(maker(ctx) or []):
            # A gradient runs where its forward op ran (Caffe2 copies device_option).
            grad_op.device_option = op.device_option
            backward.append(grad_op)
    earliest: dict[str, tuple[int, str]] = {}
    for (name, version), g in state.grad_of.items():
        if external_only and version != 0:
            continue
        if name not in earliest or version < earliest[name][0]:
            earliest[name] = (version, g)
    return backward, {name: g for name, (_, g) in earliest.items()}, state.saves


def insert_saves(ops: list[OperatorDef], saves: dict[tuple[str, int], str]) -> list[OperatorDef]:
    """``ops`` with ``Copy(blob) -> saved`` inserted before each overwrite of a saved version."""
    if not saves:
        return list(ops)
    versions, _, _ = _analyse(ops)
    before: dict[int, list[OperatorDef]] = {}
    for (name, version), saved in saves.items():
        overwriter = versions.writer_of(name, version + 1)
        if overwriter is None:
            raise OperatorError(f"cannot save version {version} of blob {name}")
        before.setdefault(overwriter, []).append(create_operator("Copy", [name], [saved]))
    out: list[OperatorDef] = []
    for index, op in enumerate(ops):
        out.extend(before.get(index, []))
        out.append(op)
    return out


def add_gradient_ops(net: Any, losses: Iterable[str] | str) -> dict[str, str]:
    """Append the backward pass of ``net`` for ``losses`` (Caffe2 ``AddGradientOperators``).

    Each loss gradient ``<loss>_grad`` is filled with ones of the loss's shape.
    Returns ``{blob: gradient blob}`` for every blob that received a gradient.
    Where an op overwrites a blob its gradient needs, a ``Copy`` to a saved blob
    is inserted into the forward ops before the overwrite.
    """
    netdef = as_netdef(net)
    if isinstance(losses, str):
        losses = [losses]
    losses = list(losses)
    if not losses:
        raise ValueError("add_gradient_ops needs at least one loss blob")
    written = {n for op in netdef.ops for n in op.outputs}
    for loss in losses:
        if not isinstance(loss, str):
            raise TypeError(f"loss names must be str, not {type(loss).__name__}")
        if loss not in written:
            raise OperatorError(f"loss blob {loss} is not written by any op of net "
                                f"'{netdef.name}'")
    forward = list(netdef.ops)
    fills = [create_operator("ConstantFill", [loss], [grad_name(loss)], value=1.0)
             for loss in losses]
    backward, result, saves = backward_ops(forward, losses)
    netdef.ops[:] = insert_saves(forward, saves) + fills + backward
    for loss in losses:
        result.setdefault(loss, grad_name(loss))
    return result
