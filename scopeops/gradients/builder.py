"""The backward-pass builder: ``add_gradient_ops``, ``backward_ops`` and makers' plumbing.

The pass follows Caffe2's gradient IR (``core.IR``): the forward ops are played once
to give every blob a version per write and to count the uses of each version; then
they are walked backwards, each op's gradient maker is asked for gradient ops given
the gradients of its outputs, and where one blob version was read by several ops
its gradients are summed when the walk reaches its first use:

- A maker may pass a gradient straight through without an op (``Sum`` gives every
  input the output's gradient; ``Add`` does too under ``broadcast="caffe2"``). The
  input's gradient is then the output gradient's blob itself.
- The first maker (in the backward walk) that writes a blob version's gradient
  names it ``<blob>_grad``; each later one writes ``_<blob>_grad_autosplit_<i>``
  (``i`` counting from 0 for each sum), pass-through gradients keep their names,
  and one ``Sum`` after the first use's gradient ops adds them into the first
  name, which is moved to the Sum's input 0 so the Sum runs in place.
- The returned map ``{blob: gradient blob}`` is Caffe2's: the gradient of each
  blob's earliest version that has one (a pass-through name where there was no op),
  the seeds included; an in-place op without a gradient (``StopGradient(x, x)``)
  removes its input from the map.

Where Caffe2's graph would be wrong, scopeops' differs, so gradients stay exact:

- Forward values a native maker reads through ``g.I(i)``/``g.O(i)`` are the values
  the op saw: when a later op overwrites one, a ``Copy`` to a saved blob is inserted
  into the forward ops just before the overwrite (Caffe2 read the overwritten blob,
  or raised when the overwrite came later).
- A gradient op never overwrites a gradient blob something else still needs (an
  output gradient shared by a pass-through, a gradient in the returned map, a
  gradient waiting to be summed): such a write is renamed to a fresh blob, and the
  maker's later ops read the renamed blob. Caffe2's ``Sqr`` maker, for one, scaled
  its output gradient in place.
- Only the last op of a maker that writes an input's gradient counts as its
  producer (Caffe2 counted every write, and summed intermediate values of
  multi-op gradients).
- A gradient given by the caller for a blob that some op also reads is summed
  with that op's gradient (Caffe2 dropped the given one).

Native gradient makers
----------------------

A native maker is registered beside its operator (``@scopeops.ops.gradient("Mul")``)
and receives a :class:`GradientContext` for one forward op; it returns the gradient
ops, built with ``g.make(...)``:

``g.I(i)``, ``g.O(i)``
    the forward input/output blob as the op saw it (a saved copy when overwritten
    later; inside a Do or While body the copy lands in the iteration's workspace).
``g.GO(i)``
    the gradient of output ``i``, or None when nothing downstream has one.
``g.GI(i)``
    the blob to write input ``i``'s gradient into. Calling it is what gives the
    input a gradient.
``g.pass_through(i, gradient)``
    input ``i``'s gradient is the existing blob ``gradient`` (usually ``g.GO(0)``);
    no op computes it.

Hooks
-----

``backward_ops`` and ``add_gradient_ops`` take these keyword arguments, which a
Caffe2 compatibility layer sets to reproduce Caffe2's graphs exactly:

``makers``
    gradient functions in Caffe2's protocol, ``fn(op, g_output) -> (ops, g_input)``,
    for op types that have no native maker (registered or not): a mapping from op
    type to function, or a function ``lookup(op_type) -> fn or None``. ``op`` is a
    copy of the forward :class:`OperatorDef`; ``g_output`` has one entry per output
    (its gradient blob name, or None); the function returns one op, a list of ops or
    None, and ``g_input``, one entry per input (a gradient blob name, or None). A
    ``g_input`` name no returned op writes is a pass-through. The ops are used as
    returned. A native maker or gradient policy of a registered type takes
    precedence, as Caffe2's C++ makers do over Python registrations.
``seed_namer``
    the name of each loss (seed) gradient that the pass fills with ones, as a
    function of the loss blob's name: :func:`grad_name` (``<loss>_grad``) by
    default, :func:`caffe2_seed_name` (``<loss>_autogen_grad``) for Caffe2.
``mark_gradient_ops``, ``copy_arguments``
    whether the ops of native makers get ``is_gradient_op=True``, and the forward
    op's arguments that the maker did not set and the gradient op's schema declares
    (Caffe2 copied every forward argument; its operators ignored those they did not
    read, scopeops' refuse them, so the gradient ops always build). Native makers of
    the types in :data:`NO_ARGUMENT_COPY` keep their own arguments only, and those of
    :data:`UNMARKED_MAKER_TYPES` neither (Caffe2 builds their gradients in Python).
    :attr:`BackwardPass.sources` tells which forward op each gradient op belongs to,
    for a layer that copies arguments its own way.
    Every native maker's ops run on the forward op's device and engine, when it has
    one. Seed fills and accumulating Sums are never marked; a Sum runs on the device
    of the first summed gradient op that has one.
``broadcast``
    how binary elementwise ops broadcast: ``"numpy"`` (scopeops' ops: either input
    may be broadcast, so Add and Sub gradients are ops that sum back to each input's
    shape) or ``"caffe2"`` (Caffe2's contract: only an op with a ``broadcast``
    argument broadcasts, so without one Add passes its output gradient to both
    inputs and Sub to its first, with one negation for the second). Use
    ``"caffe2"`` only for nets whose Add and Sub inputs have equal shapes.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Callable, Union

from scopeops.defs import NetDef, OperatorDef, as_netdef, plain_arg
from scopeops.errors import GradientError, OperatorError
from scopeops.net import create_operator
from scopeops.ops.base import NO_GRADIENT, SHOULD_NOT_DO_GRADIENT, registered_operators, schema
from scopeops.ops.executor import created_at

__all__ = [
    "ALWAYS_DIFFERENTIATED",
    "BROADCAST_RULES",
    "BackwardPass",
    "GradientContext",
    "GradientFunction",
    "NO_ARGUMENT_COPY",
    "UNMARKED_MAKER_TYPES",
    "add_gradient_ops",
    "backward_ops",
    "caffe2_seed_name",
    "grad_name",
    "insert_saves",
]

#: A gradient function in Caffe2's protocol: ``(op, g_output) -> (ops, g_input)``.
GradientFunction = Callable[[OperatorDef, list[Union[str, None]]], Any]
MakerLookup = Union[Mapping[str, GradientFunction], Callable[[str], Union[GradientFunction, None]]]

#: Types whose native makers set their gradient ops' arguments themselves, so
#: ``copy_arguments`` leaves them alone (Caffe2's makers with ``CopyArguments() == false``).
NO_ARGUMENT_COPY = frozenset({"Sub", "Mul", "Pow", "MatMul", "Cast"})
#: Types whose native makers stand in for Caffe2's Python ones: their ops are neither
#: marked as gradient ops nor given the forward arguments (Caffe2 left them as built).
UNMARKED_MAKER_TYPES = frozenset({"Do", "If", "While"})
#: Types whose maker is asked even when none of their outputs has a gradient (as Caffe2).
ALWAYS_DIFFERENTIATED = frozenset({"ZeroGradient"})
#: The values of the ``broadcast`` option.
BROADCAST_RULES = ("numpy", "caffe2")


def grad_name(blob: str) -> str:
    """The gradient blob of ``blob``: ``<blob>_grad``."""
    return f"{blob}_grad"


def caffe2_seed_name(blob: str) -> str:
    """Caffe2's name for a loss gradient that the pass fills with ones: ``<blob>_autogen_grad``."""
    return f"{blob}_autogen_grad"


@dataclass
class BackwardPass:
    """What :func:`backward_ops` built.

    ``ops``: the seed fills, then the gradient ops and accumulating Sums, to run
    after ``forward``. ``forward``: copies of the forward ops with the saving Copy
    ops inserted and any sub-net the makers had to change (run these instead of
    the originals). ``grad_map``: ``{blob: gradient blob}``, Caffe2's map.
    ``initial_grad_map``: the gradient of each blob's value before the ops ran
    (version 0), for the blobs that have one. ``saves``: ``{(blob, version): saved
    blob}`` for the copies inserted into ``forward``. ``sources``: for each op of
    ``ops``, the index (in the ops given) of the forward op whose gradient maker
    made it, or None for the seed fills and the accumulating Sums.
    """

    ops: list[OperatorDef]
    grad_map: dict[str, str]
    forward: list[OperatorDef]
    initial_grad_map: dict[str, str] = field(default_factory=dict)
    saves: dict[tuple[str, int], str] = field(default_factory=dict)
    sources: list[int | None] = field(default_factory=list)


# -- the forward pass, played once -----------------------------------------------------------


class _ForwardVersions:
    """Versions of every blob through the forward ops (version 0: before them)."""

    def __init__(self, ops: Sequence[OperatorDef]) -> None:
        self.writers: dict[str, list[int | None]] = {}
        self.in_versions: list[list[int]] = []
        self.out_versions: list[list[int]] = []
        # (blob, version) -> indices of the ops reading it, once per input position
        self.uses: dict[tuple[str, int], list[int]] = {}
        for index, op in enumerate(ops):
            versions = []
            for name in op.inputs:
                version = self.current(name)
                versions.append(version)
                self.uses.setdefault((name, version), []).append(index)
            self.in_versions.append(versions)
            self.out_versions.append([self.write(name, index) for name in op.outputs])

    def current(self, name: str) -> int:
        return len(self.writers.get(name, [None])) - 1

    def write(self, name: str, index: int) -> int:
        self.writers.setdefault(name, [None]).append(index)
        return self.current(name)

    def writer_of(self, name: str, version: int) -> int | None:
        writers = self.writers.get(name, [None])
        return writers[version] if version < len(writers) else None


def _analyse(ops: Sequence[OperatorDef]) -> _ForwardVersions:
    return _ForwardVersions(ops)


@dataclass(eq=False)
class _Generator:
    """One contribution to a blob version's gradient (Caffe2's ``GradGenMeta``)."""

    key: tuple[str, int]                   # the blob version it is the gradient of
    name: str
    ops: list[OperatorDef] | None = None   # the maker's ops; None for a pass-through
    op_index: int = 0
    output_index: int = 0
    # the name was chosen by GI() knowing the other contributions: never renamed
    final: bool = False


def _working_copy(op: OperatorDef) -> OperatorDef:
    """A copy of a forward op that makers may change (the caller's ops never change).

    Only the makers of ops holding sub-nets change them (their nets' saved copies), so
    only those are copied deeply.
    """
    if _has_subnet(op):
        return op.copy()
    working = copy.copy(op)
    working.inputs, working.outputs, working.args = list(op.inputs), list(op.outputs), dict(op.args)
    return working


def _has_subnet(op: OperatorDef) -> bool:
    return any(isinstance(v, NetDef) or (isinstance(v, list) and any(
        isinstance(item, NetDef) for item in v)) for v in op.args.values())


def _same_device(a: Any, b: Any) -> bool:
    """Caffe2's ``device_option_equal`` with its defaults: the node name does not count,
    and every CPU is the same CPU."""
    type_a = getattr(a, "device_type", "cpu") if a is not None else "cpu"
    type_b = getattr(b, "device_type", "cpu") if b is not None else "cpu"
    if type_a != type_b:
        return False
    return type_a == "cpu" or getattr(a, "device_id", 0) == getattr(b, "device_id", 0)


class _Pass:
    """State of one backward pass."""

    def __init__(self, ops: list[OperatorDef], *, prefix: str, namer: Callable[[str], str],
                 options: dict[str, Any], makers: Callable[[str], Any]) -> None:
        self.ops = ops
        self.forward = _analyse(ops)
        self.final = {name: self.forward.current(name) for name in self.forward.writers}
        self.prefix = prefix
        self.namer = namer
        self.options = options
        self.makers = makers
        self.registered = frozenset(registered_operators())
        # Caffe2's name-keyed map and the version each entry is the gradient of
        self.grad: dict[str, str | None] = {}
        self.frontier: dict[str, int] = {}
        # blob names whose map entry is each gradient name (who still needs it)
        self.holders: dict[str, set[str]] = {}
        self.grad_of: dict[tuple[str, int], str] = {}
        self.generators: dict[tuple[str, int], list[_Generator]] = {}
        self.op_generator_count: dict[tuple[str, int], int] = {}
        # generators of blob versions whose gradients are not summed yet, by name
        self.pending: dict[str, list[_Generator]] = {}
        self.saves: dict[tuple[str, int], str] = {}
        self._counter = itertools.count()

    # -- names --

    def saved_name(self, name: str, version: int) -> str:
        if self.final.get(name, 0) == version:
            return name
        key = (name, version)
        if key not in self.saves:
            self.saves[key] = f"{name}_saved_{self.prefix}v{version}"
        return self.saves[key]

    def temp(self, hint: str) -> str:
        return f"_{hint}_{self.prefix}tmp{next(self._counter)}"

    def set_grad(self, blob: str, gradient: str | None) -> None:
        old = self.grad.get(blob)
        if old is not None:
            self.holders[old].discard(blob)
        self.grad[blob] = gradient
        if gradient is not None:
            self.holders.setdefault(gradient, set()).add(blob)

    def is_protected(self, name: str, replaced: AbstractSet[str],
                     exempt: AbstractSet[str] = frozenset()) -> bool:
        """True when a gradient op writing ``name`` would clobber a gradient still needed:
        one in the map (of a blob whose entry this op does not replace) or one waiting
        to be summed (an op's that the sum will rename is ``exempt``)."""
        holders = self.holders.get(name)
        if holders and not holders <= replaced:
            return True
        return any(gen.ops is None or name not in exempt for gen in self.pending.get(name, ()))

    # -- generators --

    def pending_op_generators(self, key: tuple[str, int]) -> int:
        return self.op_generator_count.get(key, 0)

    def add_generator(self, gen: _Generator) -> None:
        self.generators.setdefault(gen.key, []).append(gen)
        if gen.ops is not None:
            self.op_generator_count[gen.key] = self.op_generator_count.get(gen.key, 0) + 1
        if len(self.forward.uses.get(gen.key, [])) > 1:
            # More uses may add gradients: this one waits for the sum.
            self.pending.setdefault(gen.name, []).append(gen)

    def close(self, key: tuple[str, int]) -> None:
        """The walk reached the first use of ``key``: its gradients are summed now."""
        for gen in self.generators.get(key, []):
            waiting = self.pending.get(gen.name)
            if waiting is not None and gen in waiting:
                waiting.remove(gen)
                if not waiting:
                    del self.pending[gen.name]


class GradientContext:
    """What a native gradient maker sees of one forward op (see the module docstring)."""

    def __init__(self, state: _Pass, index: int, op: OperatorDef,
                 g_output: list[str | None]) -> None:
        self._state = state
        self.index = index
        self.op = op
        self._g_output = g_output
        self.g_input: list[str | None] = [None] * len(op.inputs)
        self._chosen: set[str] = set()          # names GI() handed out
        self._finish_as: dict[str, str] = {}    # GI() temp -> the name it stands for
        self._passed: set[int] = set()

    @property
    def broadcast(self) -> str:
        """The pass's broadcasting rule, ``"numpy"`` or ``"caffe2"`` (module docstring)."""
        rule: str = self._state.options["broadcast"]
        return rule

    @property
    def options(self) -> dict[str, Any]:
        """The pass's hook options, to hand on to :func:`backward_ops` for a sub-net."""
        return dict(self._state.options)

    def I(self, i: int) -> str:  # noqa: E743 - Caffe2's name
        """Forward input ``i`` as this op read it (a saved copy if overwritten later)."""
        versions = self._state.forward.in_versions[self.index]
        return self._state.saved_name(self.op.inputs[i], versions[i])

    def O(self, i: int) -> str:  # noqa: E743
        """Forward output ``i`` as this op wrote it (a saved copy if overwritten later)."""
        versions = self._state.forward.out_versions[self.index]
        return self._state.saved_name(self.op.outputs[i], versions[i])

    def GO(self, i: int) -> str | None:
        """The gradient of output ``i``, or None."""
        return self._g_output[i]

    def GI(self, i: int, inplace_ok: bool = False) -> str:
        """Where to write the gradient of input ``i`` (calling this gives it one).

        ``<input>_grad`` for the first contribution to that input version's
        gradient, ``_<input>_grad_autosplit_<k>`` for later ones (the builder sums
        them), or a fresh name when those would overwrite a gradient still needed.
        ``inplace_ok``: the maker reads every output gradient before it writes this
        one (a Do reading and writing the same blob), so the name of an output
        gradient may be written.
        """
        written = self.g_input[i]
        if written is not None:
            if i in self._passed:
                raise GradientError(f"the gradient maker of {self.op.type} passed a gradient "
                                    f"through to input {i} and then asked for GI({i})")
            return written
        state = self._state
        name = self.op.inputs[i]
        key = (name, state.forward.in_versions[self.index][i])
        natural = state.namer(name)
        earlier = state.pending_op_generators(key) + sum(
            1 for j, g in enumerate(self.g_input) if g is not None and j not in self._passed
            and (self.op.inputs[j], state.forward.in_versions[self.index][j]) == key)
        chosen = natural if earlier == 0 else f"_{natural}_autosplit_{earlier - 1}"
        replaced = {name} | (set(self.op.inputs) & set(self.op.outputs))
        if state.is_protected(chosen, replaced) or chosen in self._chosen:
            chosen = state.temp(chosen)
        elif chosen in self._g_output and not inplace_ok:
            # The maker may still read that output gradient after writing this one.
            temp = state.temp(chosen)
            self._finish_as[temp] = chosen
            chosen = temp
        self._chosen.add(chosen)
        self.g_input[i] = chosen
        return chosen

    def pass_through(self, i: int, gradient: str) -> None:
        """Input ``i``'s gradient is the existing blob ``gradient``; no op computes it."""
        if not isinstance(gradient, str) or not gradient:
            raise TypeError(f"pass_through needs a gradient blob name, not {gradient!r}")
        if self.g_input[i] is not None:
            raise GradientError(f"the gradient maker of {self.op.type} gave input {i} a "
                                f"gradient twice")
        self.g_input[i] = gradient
        self._passed.add(i)

    def temp(self, hint: str) -> str:
        """A fresh blob name for an intermediate of the gradient ops."""
        name = self._state.temp(hint)
        self._chosen.add(name)
        return name

    def make(self, type: str, inputs: Any, outputs: Any, **args: Any) -> OperatorDef:
        """A gradient op (``create_operator`` without name scoping; it runs on the
        forward op's device, which the builder sets)."""
        return create_operator(type, inputs, outputs, device_option=None, **args)


# -- the pass -------------------------------------------------------------------------------


def _maker_lookup(makers: MakerLookup | None) -> Callable[[str], Any]:
    if makers is None:
        return lambda _type: None
    if isinstance(makers, Mapping):
        return makers.get
    if callable(makers):
        return makers
    raise TypeError(f"makers must be a mapping of op type to gradient function or a lookup "
                    f"function, not {type(makers).__name__}")


def _describe(op: OperatorDef, index: int, net_name: str) -> str:
    label = f"'{op.name}'" if op.name else f"#{index}"
    where = f" in net '{net_name}'" if net_name else ""
    return f"{op.type} op {label}{where}"


def _normalise_ys(ys: Any) -> dict[str, str | None]:
    if isinstance(ys, Mapping):
        seeds = dict(ys)
    elif isinstance(ys, (list, tuple)):
        seeds = dict.fromkeys(ys)
    else:
        raise TypeError(f"ys should either be a list or a dict, not {type(ys).__name__}")
    for blob, gradient in seeds.items():
        if not isinstance(blob, str) or not blob:
            raise TypeError(f"ys must name blobs (non-empty str), got {blob!r}")
        if gradient is not None and (not isinstance(gradient, str) or not gradient):
            raise TypeError(f"the gradient given for {blob} must be a blob name or None, "
                            f"got {gradient!r}")
    # BlobReferences become plain names, as every name the pass returns.
    return {str(blob): None if g is None else str(g) for blob, g in seeds.items()}


def _check_stop_gradients(ops: Sequence[OperatorDef]) -> None:
    read = {name for op in ops for name in op.inputs}
    for index, op in enumerate(ops):
        if op.type == "StopGradient" and op.outputs and op.outputs[0] not in read:
            raise GradientError(
                f"StopGradient's output '{op.outputs[0]}' is orphan: no op reads it, so it "
                f"stops nothing. You typically want the same input and output for "
                f"StopGradient. Op #{index}: {op}{created_at(op)}")


def backward_ops(ops: Sequence[OperatorDef], ys: Any, *, makers: MakerLookup | None = None,
                 seed_namer: Callable[[str], str] = grad_name,
                 namer: Callable[[str], str] = grad_name, mark_gradient_ops: bool = False,
                 copy_arguments: bool = False, broadcast: str = "numpy", prefix: str = "",
                 net_name: str = "") -> BackwardPass:
    """The backward pass of ``ops`` (Caffe2 ``GradientRegistry.GetBackwardPass``).

    ``ys``: a list of blobs whose gradients are filled with ones (named by
    ``seed_namer``), or a dict ``{blob: gradient blob, or None to fill}``; the
    gradients are those of the blobs' last versions. ``namer`` names the gradient
    blobs the pass creates (default ``<blob>_grad``); ``prefix`` makes its other
    blob names (temporaries, saved copies) unique among nested passes;
    ``net_name`` is quoted in errors. The other keywords are the hooks described
    in the module docstring. The ops are not modified; nothing is built.

    Raises :class:`GradientError` (an ``OperatorError`` and ``ValueError``) when the
    gradient cannot be built: an op on the gradient path that breaks its schema, an
    orphan ``StopGradient``, a gradient op needing a blob version that was
    overwritten, or no maker for a type.
    """
    if broadcast not in BROADCAST_RULES:
        raise ValueError(f"broadcast must be one of {BROADCAST_RULES}, not {broadcast!r}")
    if not isinstance(ops, Sequence) or not all(isinstance(op, OperatorDef) for op in ops):
        raise TypeError("backward_ops takes a list of OperatorDef")
    seeds = _normalise_ys(ys)
    forward_ops = [_working_copy(op) for op in ops]
    _check_stop_gradients(forward_ops)
    options = {"makers": makers, "mark_gradient_ops": bool(mark_gradient_ops),
               "copy_arguments": bool(copy_arguments), "broadcast": broadcast}
    state = _Pass(forward_ops, prefix=prefix, namer=namer, options=options,
                  makers=_maker_lookup(makers))
    versions = state.forward
    backward: list[OperatorDef] = []
    sources: list[int | None] = []
    end = len(forward_ops)
    for blob, given in seeds.items():
        version = versions.current(blob)
        key = (blob, version)
        versions.uses.setdefault(key, []).append(end)
        if given is None:
            given = seed_namer(blob)
            fill = create_operator("ConstantFill", [blob], [given], value=1.0)
            backward.append(fill)
            sources.append(None)
            state.add_generator(_Generator(key, given, [fill], 0, 0, final=True))
        else:
            state.add_generator(_Generator(key, given))
        state.set_grad(blob, given)
        state.frontier[blob] = version
        state.grad_of[key] = given

    for index in range(end - 1, -1, -1):
        op = forward_ops[index]
        g_output = [state.grad.get(name) for name in op.outputs]
        if _is_native(state, op.type):
            # The map is by name; a gradient of a later version of an output is not this
            # version's, which had none (nothing read it before it was overwritten).
            # Caffe2 passed it on and raised if a gradient op read it.
            g_output = [g if g is None or state.frontier.get(name) == version else None
                        for g, name, version in zip(g_output, op.outputs,
                                                    versions.out_versions[index], strict=True)]
        if any(g is not None for g in g_output) or op.type in ALWAYS_DIFFERENTIATED:
            made = _differentiate(state, index, op, g_output, net_name)
            backward += made
            sources += [index] * len(made)
        sums = _accumulate(state, index, net_name)
        backward += sums
        sources += [None] * len(sums)

    grad_map = {blob: g for blob, g in state.grad.items() if g is not None}
    initial = {blob: g for (blob, version), g in state.grad_of.items() if version == 0}
    # Ops no maker changed stay the caller's objects.
    kept = [original if working == original else working
            for original, working in zip(ops, forward_ops, strict=True)]
    return BackwardPass(ops=backward, grad_map=grad_map,
                        forward=insert_saves(kept, state.saves),
                        initial_grad_map=initial, saves=dict(state.saves),
                        sources=sources)


def _is_native(state: _Pass, op_type: str) -> bool:
    """True when scopeops' own gradient policy of a registered type handles ``op_type``
    (not a gradient function given for it)."""
    if op_type not in state.registered:
        return False
    policy = schema(op_type).gradient
    return callable(policy) or policy is NO_GRADIENT or (
        policy is SHOULD_NOT_DO_GRADIENT and state.makers(op_type) is None)


def _differentiate(state: _Pass, index: int, op: OperatorDef, g_output: list[str | None],
                   net_name: str) -> list[OperatorDef]:
    """The gradient ops of forward op ``index``; updates the map and the generators."""
    where = _describe(op, index, net_name)
    registered = op.type in state.registered
    policy = schema(op.type).gradient if registered else None
    maker = policy if callable(policy) else None
    function = state.makers(op.type)
    if registered and policy is SHOULD_NOT_DO_GRADIENT and function is None:
        raise GradientError(f"Operator {op.type} should not have its gradient computed "
                            f"(asked for through {[g for g in g_output if g]}): "
                            f"{where}{created_at(op)}")
    if registered and policy is not SHOULD_NOT_DO_GRADIENT:
        try:
            schema(op.type).check(op.inputs, op.outputs, op.args)
        except (TypeError, ValueError) as exc:
            raise GradientError(f"Cannot build the gradient of {where}: the op does not pass "
                                f"its schema check: {exc}{created_at(op)}") from exc
    ctx = GradientContext(state, index, op, g_output)
    if maker is not None:
        grad_ops = _op_list(maker(ctx), op, "native gradient maker")
        g_input = list(ctx.g_input)
        _annotate(state, op, grad_ops)
    elif registered and policy is NO_GRADIENT:
        grad_ops, g_input = [], [None] * len(op.inputs)
    elif function is not None:
        result = function(op.copy(), list(g_output))
        grad_ops, g_input = _protocol_result(result, op)
    elif registered:
        raise GradientError(f"No gradient is registered for operator type {op.type} "
                            f"({where}: {op}){created_at(op)}")
    else:
        raise GradientError(f"No gradient maker for operator type {op.type!r}: it is not a "
                            f"registered operator and no gradient function was given for it "
                            f"({where}){created_at(op)}")

    replaced = {name for name, g in zip(op.inputs, g_input, strict=True)
                if g is not None or name in op.outputs}
    native = maker is not None
    if native:
        grad_ops, g_input = _finish_native(state, ctx, grad_ops, g_input, replaced)
    else:
        grad_ops, g_input = _protect(state, op, index, grad_ops, g_input, replaced,
                                     set(), where)
    _check_inputs(state, index, op, grad_ops, g_output, strict=not native, where=where)
    _register(state, index, op, grad_ops, g_input, final=native)
    return grad_ops


def _op_list(made: Any, op: OperatorDef, what: str) -> list[OperatorDef]:
    if made is None:
        return []
    if isinstance(made, OperatorDef):
        return [made]
    if isinstance(made, (list, tuple)) and all(isinstance(o, OperatorDef) for o in made):
        return list(made)
    raise GradientError(f"the {what} of {op.type} returned {type(made).__name__}; expected "
                        f"an OperatorDef, a list of them or None")


def _protocol_result(result: Any, op: OperatorDef) -> tuple[list[OperatorDef], list[str | None]]:
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise GradientError(f"the gradient function of {op.type} must return (ops, g_input), "
                            f"got {result!r}")
    grad_ops = [o.copy() for o in _op_list(result[0], op, "gradient function")]
    g_input = result[1]
    if not isinstance(g_input, (list, tuple)) or len(g_input) != len(op.inputs) or not all(
            g is None or (isinstance(g, str) and g) for g in g_input):
        raise GradientError(f"the gradient function of {op.type} must return g_input with "
                            f"one gradient blob name or None per input ({len(op.inputs)}), "
                            f"got {g_input!r}")
    return grad_ops, [None if g is None else str(g) for g in g_input]


def _annotate(state: _Pass, op: OperatorDef, grad_ops: list[OperatorDef]) -> None:
    """Caffe2's treatment of the ops of its built-in makers, for native makers' ops."""
    marked = op.type not in UNMARKED_MAKER_TYPES
    copy_args = state.options["copy_arguments"] and marked and op.type not in NO_ARGUMENT_COPY
    for grad_op in grad_ops:
        # A gradient runs where its forward op ran.
        if op.device_option is not None:
            grad_op.device_option = op.device_option
        if op.engine:
            grad_op.engine = op.engine
        if marked and state.options["mark_gradient_ops"]:
            grad_op.is_gradient_op = True
        if copy_args:
            declared = _declared_args(state, grad_op.type)
            for name, value in op.args.items():
                if name not in grad_op.args and (declared is None or name in declared):
                    grad_op.args[name] = plain_arg(value)


def _declared_args(state: _Pass, op_type: str) -> AbstractSet[str] | None:
    """The arguments operator type ``op_type`` declares; None when it is not registered."""
    if op_type not in state.registered:
        return None
    return frozenset(schema(op_type).args)


def _finish_native(state: _Pass, ctx: GradientContext, grad_ops: list[OperatorDef],
                   g_input: list[str | None], replaced: set[str]
                   ) -> tuple[list[OperatorDef], list[str | None]]:
    op = ctx.op
    where = _describe(op, ctx.index, "")
    grad_ops, g_input = _protect(state, op, ctx.index, grad_ops, g_input, replaced,
                                 ctx._chosen, where)
    # GI() gave a temporary for a name that is also an output gradient (an in-place
    # forward op). Write the name itself, in place as Caffe2 does, when nothing reads
    # that output gradient after the first write and the op writing it has one output
    # (a multi-output gradient op would copy the input it overwrites on every run);
    # otherwise copy the temporary over once the maker's ops are done.
    for temp, name in ctx._finish_as.items():
        first = next((k for k, o in enumerate(grad_ops) if temp in o.outputs), None)
        if first is None or state.is_protected(name, replaced) or any(
                name in o.outputs for o in grad_ops[first:]):
            continue
        if len(grad_ops[first].outputs) > 1 or any(
                name in o.inputs for o in grad_ops[first + 1:]):
            grad_ops.append(create_operator("Copy", [temp], [name], device_option=None))
            _annotate(state, ctx.op, grad_ops[-1:])
            g_input = [name if g == temp else g for g in g_input]
            continue
        for k in range(first, len(grad_ops)):
            o = grad_ops[k]
            if k > first:
                o.inputs = [name if n == temp else n for n in o.inputs]
            o.outputs = [name if n == temp else n for n in o.outputs]
        g_input = [name if g == temp else g for g in g_input]
    return grad_ops, g_input


def _protect(state: _Pass, op: OperatorDef, index: int, grad_ops: list[OperatorDef],
             g_input: list[str | None], replaced: set[str], chosen: set[str], where: str
             ) -> tuple[list[OperatorDef], list[str | None]]:
    """Rename every write of a gradient blob that is still needed elsewhere.

    ``chosen`` names were picked knowing the rest (GI); a write of a name waiting
    to be summed as this op's own contribution is left to the sum, which renames it.
    """
    versions = state.forward.in_versions[index]
    written = {n for o in grad_ops for n in o.outputs}
    exempt = set()
    for j, g in enumerate(g_input):
        if g is not None and g in written:
            key = (op.inputs[j], versions[j])
            if any(gen.key == key and gen.ops is not None for gen in state.pending.get(g, ())):
                exempt.add(g)
    renames: dict[str, str] = {}
    for grad_op in grad_ops:
        if renames:
            grad_op.inputs = [renames.get(n, n) for n in grad_op.inputs]
        for o, name in enumerate(grad_op.outputs):
            if name in chosen or name in renames.values():
                continue
            if name not in renames and not state.is_protected(name, replaced, exempt):
                continue
            if _has_subnet(grad_op):
                raise GradientError(
                    f"the gradient of {where} writes {name}, a gradient blob other "
                    f"gradients still need, from an op with a sub-net ({grad_op.type}), "
                    f"which cannot be renamed")
            renames.setdefault(name, state.temp(name))
            grad_op.outputs[o] = renames[name]
    if renames:
        g_input = [renames.get(g, g) if g is not None else None for g in g_input]
    return grad_ops, g_input


def _version_error(what: str, name: str, needed: int, current: int, op: OperatorDef,
                   where: str) -> GradientError:
    return GradientError(f"Gradient operator of {where} needs {what} \"{name}\" at version "
                         f"{needed}, but currently we have version {current}: the forward "
                         f"pass overwrote it (maybe the same blob is written twice by "
                         f"different ops?){created_at(op)}")


def _check_inputs(state: _Pass, index: int, op: OperatorDef, grad_ops: list[OperatorDef],
                  g_output: list[str | None], *, strict: bool, where: str) -> None:
    """Caffe2's ``CheckGradientOperatorInput``: every gradient op input must be what the
    maker meant. ``strict`` (gradient functions): forward blobs read must still hold the
    op's versions and anything else must come from an earlier op of the same maker."""
    versions = state.forward
    local: set[str] = set()
    for grad_op in grad_ops:
        for name in grad_op.inputs:
            if name in g_output:
                j = g_output.index(name)
                out = op.outputs[j]
                wanted = versions.out_versions[index][j]
                if state.frontier.get(out) != wanted and name not in local:
                    raise GradientError(
                        f"Gradient name \"{name}\" is expected to correspond to version "
                        f"{wanted} of \"{out}\", but currently we have version "
                        f"{state.frontier.get(out)}: the gradient of {where} reads the "
                        f"gradient of a later version of {out}{created_at(op)}")
            elif not strict or name in local:
                continue
            elif name in op.outputs:
                j = op.outputs.index(name)
                wanted = versions.out_versions[index][j]
                if state.final.get(name, 0) != wanted:
                    raise _version_error("output", name, wanted, state.final.get(name, 0),
                                         op, where)
            elif name in op.inputs:
                j = op.inputs.index(name)
                wanted = versions.in_versions[index][j]
                if state.final.get(name, 0) != wanted:
                    raise _version_error("input", name, wanted, state.final.get(name, 0),
                                         op, where)
            else:
                raise GradientError(f"Blob name \"{name}\" is not in the scope of {where} "
                                    f"and is not made by any of its gradient ops")
        local.update(grad_op.outputs)


def _register(state: _Pass, index: int, op: OperatorDef, grad_ops: list[OperatorDef],
              g_input: list[str | None], *, final: bool) -> None:
    """Record who produced each input gradient, then update the map (Caffe2's rules)."""
    versions = state.forward.in_versions[index]
    last_writer: dict[str, int] = {}
    for k, grad_op in enumerate(grad_ops):
        for name in grad_op.outputs:
            last_writer[name] = k
    attributed: set[str] = set()
    made: list[tuple[int, int, tuple[str, int], str]] = []
    for j, g in enumerate(g_input):
        if g is None or g not in last_writer or g in attributed:
            continue
        attributed.add(g)
        k = last_writer[g]
        key = (op.inputs[j], versions[j])
        made += [(k, o, key, g) for o, n in enumerate(grad_ops[k].outputs) if n == g]
    for k, o, key, g in sorted(made, key=lambda item: (item[0], item[1])):
        state.add_generator(_Generator(key, g, grad_ops, k, o, final=final))
    for j, g in enumerate(g_input):
        if g is not None and g not in last_writer:
            state.add_generator(_Generator((op.inputs[j], versions[j]), g))
    for j, (name, g) in enumerate(zip(op.inputs, g_input, strict=True)):
        if g is not None or name not in state.grad or name in op.outputs:
            state.set_grad(name, g)
        if g is not None:
            state.frontier[name] = versions[j]
            state.grad_of[(name, versions[j])] = g


def _accumulate(state: _Pass, index: int, net_name: str) -> list[OperatorDef]:
    """Caffe2's ``DoGradientAccumulation``: one Sum per input version first read by op
    ``index`` that was read more than once and got more than one gradient."""
    op = state.ops[index]
    versions = state.forward.in_versions[index]
    sums: list[OperatorDef] = []
    for name, version in dict.fromkeys(zip(op.inputs, versions, strict=True)):
        key = (name, version)
        uses = state.forward.uses.get(key, [])
        if not uses or uses[0] != index:
            continue
        generators = state.generators.get(key, [])
        state.close(key)
        if len(uses) < 2 or len(generators) < 2:
            continue
        sums.append(_sum_generators(state, name, version, generators,
                                    _describe(op, index, net_name)))
    return sums


def _sum_generators(state: _Pass, blob: str, version: int, generators: list[_Generator],
                    where: str) -> OperatorDef:
    with_ops = [gen for gen in generators if gen.ops is not None]
    devices = [gen.ops[gen.op_index].device_option for gen in with_ops]  # type: ignore[index]
    if any(not _same_device(d, devices[0]) for d in devices[1:]):
        raise GradientError(f"Gradients for blob {blob} failed to verify: not all grad ops "
                            f"have the same device option ({where})")
    out = with_ops[0].name if with_ops else state.namer(blob)
    inputs: list[str] = []
    renamed = 0
    for gen in generators:
        if gen.ops is None:
            if gen.name == out:
                raise GradientError(f"The gradient {gen.name} passed through to blob {blob} "
                                    f"is also the name of the gradient it is summed into "
                                    f"({where})")
            inputs.append(gen.name)
            continue
        if gen is not with_ops[0]:
            if not gen.final:
                _rename_generator(gen, f"_{gen.name}_autosplit_{renamed}", where)
            renamed += 1
        inputs.append(gen.name)
    if out in inputs:
        # Sum runs in place only on its first input.
        k = inputs.index(out)
        inputs[0], inputs[k] = inputs[k], inputs[0]
    elif state.is_protected(out, {blob}):
        out = state.temp(out)
    sum_op = create_operator("Sum", inputs, [out])
    device = next((d for d in devices if d is not None), None)
    if device is not None:
        sum_op.device_option = device
    state.set_grad(blob, out)
    state.frontier[blob] = version
    state.grad_of[(blob, version)] = out
    return sum_op


def _rename_generator(gen: _Generator, new: str, where: str) -> None:
    """Rename a gradient a maker's ops compute in ``old``, from its first write on.

    Earlier ops of the maker that write ``old`` compute intermediate values of the same
    gradient (a chain of in-place steps): they are renamed too, or they would overwrite
    the other gradient the Sum adds.
    """
    ops = gen.ops
    assert ops is not None
    k = gen.op_index
    old = ops[k].outputs[gen.output_index]
    first = next(i for i in range(k + 1) if old in ops[i].outputs)
    for i in range(first, k + 1):
        if _has_subnet(ops[i]):
            raise GradientError(f"cannot rename {old}, written by the {ops[i].type} op of "
                                f"the gradient of {where}, to sum it with the other "
                                f"gradients of the same blob: the op holds a sub-net")
    for i in range(first, k + 1):
        if i > first:
            ops[i].inputs = [new if n == old else n for n in ops[i].inputs]
        if i < k:
            ops[i].outputs = [new if n == old else n for n in ops[i].outputs]
    ops[k].outputs[gen.output_index] = new
    if old not in ops[k].outputs:
        for later in ops[k + 1:]:
            later.inputs = [new if n == old else n for n in later.inputs]
    gen.name = new


def insert_saves(ops: Sequence[OperatorDef], saves: dict[tuple[str, int], str]
                 ) -> list[OperatorDef]:
    """``ops`` with ``Copy(blob) -> saved`` inserted before each overwrite of a saved version."""
    if not saves:
        return list(ops)
    versions = _analyse(ops)
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


def add_gradient_ops(net: Any, losses: Any, *, makers: MakerLookup | None = None,
                     seed_namer: Callable[[str], str] = grad_name,
                     mark_gradient_ops: bool = False, copy_arguments: bool = False,
                     broadcast: str = "numpy") -> dict[str, str]:
    """Append the backward pass of ``net`` for ``losses`` (Caffe2 ``AddGradientOperators``).

    ``losses``: a blob name, a list of them, or a dict ``{blob: gradient blob, or None}``
    (a list or None fills the gradient with ones of the loss's shape, in a blob named
    ``seed_namer(loss)``, by default ``<loss>_grad``). Returns ``{blob: gradient blob}``
    for every blob that received a gradient (see the module docstring for the graph
    and the names). Where an op overwrites a blob its gradient needs, a ``Copy`` to
    a saved blob is inserted into the forward ops before the overwrite. The net is
    changed only once the whole pass is built: on any error it is left as it was.
    The keyword arguments are the hooks of :func:`backward_ops`.

    A net that already has its backward pass is refused with :class:`GradientError`:
    one whose ops already write blobs the new pass would write (its seeds, its
    gradients), as after a second call on the same net. Gradients of several losses
    come from one call with all of them.
    """
    netdef = as_netdef(net)
    if isinstance(losses, str):
        losses = [losses]
    if not isinstance(losses, (list, tuple, Mapping)):
        raise TypeError(f"losses must be a blob name, a list of them or a dict of blob to "
                        f"gradient blob, not {type(losses).__name__}")
    if not losses:
        raise ValueError("add_gradient_ops needs at least one loss blob")
    written = {n for op in netdef.ops for n in op.outputs}
    for loss in losses:
        if not isinstance(loss, str):
            raise TypeError(f"loss names must be str, not {type(loss).__name__}")
        if loss not in written:
            raise OperatorError(f"loss blob {loss} is not written by any op of net "
                                f"'{netdef.name}'")
    result = backward_ops(netdef.ops, losses if isinstance(losses, Mapping) else list(losses),
                          makers=makers, seed_namer=seed_namer,
                          mark_gradient_ops=mark_gradient_ops, copy_arguments=copy_arguments,
                          broadcast=broadcast, net_name=netdef.name)
    _refuse_a_second_pass(netdef, losses, result.ops)
    netdef.ops[:] = result.forward + result.ops
    return result.grad_map


def _scope_blobs(ops: Sequence[OperatorDef]) -> set[str]:
    """The scope blobs of the Do ops among ``ops`` and in the nets they hold."""
    found: set[str] = set()
    for op in ops:
        if op.type == "Do" and op.outputs:
            found.add(op.outputs[-1])
        for value in op.args.values():
            for net in value if isinstance(value, list) else [value]:
                if isinstance(net, NetDef):
                    found |= _scope_blobs(net.ops)
    return found


def _refuse_a_second_pass(netdef: NetDef, losses: Any, backward: list[OperatorDef]) -> None:
    """GradientError when the backward pass would write blobs the net's ops already write.

    That is what a net that already has its backward pass looks like (a notebook cell
    re-run calls add_gradient_ops again): the seeds and gradients are written twice, and
    a second gradient Do pops a workspace no forward Do pushed. It is read from the ops
    alone, so it holds for nets rebuilt from an edited NetDef too, and gradients of
    another loss that share no blob with the first pass may still be added later.
    """
    given = {g for g in losses.values() if g is not None} if isinstance(losses, Mapping) \
        else set()
    # A gradient Do writes its forward Do's scope blob by design.
    given |= _scope_blobs(backward)
    writer: dict[str, int] = {}
    for index, op in enumerate(netdef.ops):
        for name in op.outputs:
            writer.setdefault(name, index)
    clashes = list(dict.fromkeys(name for op in backward for name in op.outputs
                                 if name in writer and name not in given))
    if not clashes:
        return
    shown = ", ".join(clashes[:4]) + (f" and {len(clashes) - 4} more" if len(clashes) > 4
                                      else "")
    first = netdef.ops[writer[clashes[0]]]
    loss_names = list(losses)
    raise GradientError(
        f"add_gradient_ops: net '{netdef.name}' already writes {shown} (op "
        f"#{writer[clashes[0]]}, {first.type}), which the backward pass for {loss_names} "
        f"would write again: the net already has a backward pass (add_gradient_ops called "
        f"on it before, as when a notebook cell is run again). The net is unchanged. For "
        f"the gradients of several losses, pass them in one call "
        f"(add_gradient_ops(net, ['loss_a', 'loss_b']) sums them); to build the pass "
        f"again, build the forward net again (re-run the code that builds it, or keep a "
        f"copy before adding gradients: forward = net.netdef.copy()).")
