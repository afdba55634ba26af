"""The operator registry, schemas, gradient policies and the Operator base class.

An operator type is a subclass of :class:`Operator` registered under a type
name with a schema (input/output counts, in-place rule, arguments, doc), in the
manner of Caffe2's ``REGISTER_CPU_OPERATOR`` + ``OPERATOR_SCHEMA``. Its
gradient policy lives beside it: a gradient maker, :data:`NO_GRADIENT` or
:data:`SHOULD_NOT_DO_GRADIENT`.
"""

from __future__ import annotations

import builtins
import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from scopeops.defs import OperatorDef
from scopeops.errors import BlobNotFoundError, OperatorError, did_you_mean
from scopeops.ops import _dispatch

__all__ = [
    "Arg",
    "NO_GRADIENT",
    "Operator",
    "SHOULD_NOT_DO_GRADIENT",
    "Schema",
    "gradient",
    "lookup",
    "register",
    "registered_operators",
    "schema",
]

UNBOUNDED = 2**31 - 1   # Caffe2's INT_MAX for "any number"


class _GradientPolicy:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: The operator contributes no gradient, silently (Caffe2 ``NO_GRADIENT``).
NO_GRADIENT = _GradientPolicy("NO_GRADIENT")
#: Asking for this operator's gradient is an error (Caffe2 ``SHOULD_NOT_DO_GRADIENT``).
SHOULD_NOT_DO_GRADIENT = _GradientPolicy("SHOULD_NOT_DO_GRADIENT")

_MISSING = object()


@dataclass(frozen=True)
class Arg:
    """An argument of an operator schema.

    ``types`` are the accepted Python types (a value of another type is refused
    when the operator is built); ``default`` is used when the argument is absent;
    ``required`` arguments have no default.
    """

    types: tuple[type, ...] | type = object
    default: Any = None
    required: bool = False
    doc: str = ""

    def accepts(self, value: Any) -> bool:
        types = self.types if isinstance(self.types, tuple) else (self.types,)
        if bool not in types and isinstance(value, bool) and (int in types or float in types):
            return False
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            return True
        return isinstance(value, types)


@dataclass
class Schema:
    """What an operator type accepts: counts, in-place rule, arguments, doc, gradient."""

    type: str
    cls: builtins.type   # the field 'type' shadows the builtin in this class
    min_inputs: int = 0
    max_inputs: int = UNBOUNDED
    min_outputs: int = 0
    max_outputs: int = UNBOUNDED
    allow_inplace: bool | frozenset[tuple[int, int]] = True
    enforce_inplace: frozenset[tuple[int, int]] = frozenset()
    args: dict[str, Arg] = field(default_factory=dict)
    doc: str = ""
    gradient: Callable[..., Any] | _GradientPolicy | None = None

    def inplace_allowed(self, input_index: int, output_index: int) -> bool:
        if (input_index, output_index) in self.enforce_inplace:
            return True
        if isinstance(self.allow_inplace, bool):
            return self.allow_inplace
        return (input_index, output_index) in self.allow_inplace

    def aliasing_error(self, inputs: list[str], outputs: list[str], input_blobs: list[Any],
                       output_blobs: list[Any]) -> str | None:
        """What is wrong with how the resolved blobs alias, or None.

        ``input_blobs``/``output_blobs`` are the blobs the names resolve to (None for
        an output that does not exist yet): a pair the in-place rule forbids must not
        be one blob, and an enforced pair must be, whatever names reach it.
        """
        for j, out_blob in enumerate(output_blobs):
            if out_blob is None:
                continue
            for i, in_blob in enumerate(input_blobs):
                if in_blob is out_blob and not self.inplace_allowed(i, j):
                    same = (f"blob {inputs[i]}" if inputs[i] == outputs[j] else
                            f"names {inputs[i]} and {outputs[j]} reach one blob")
                    return (f"{self.type} does not allow input {i} and output {j} to be the "
                            f"same blob ({same})")
        for i, j in sorted(self.enforce_inplace):
            if i < len(input_blobs) and j < len(output_blobs) \
                    and input_blobs[i] is not output_blobs[j]:
                return (f"{self.type} works in place: output {j} ({outputs[j]}) must be the "
                        f"same blob as input {i} ({inputs[i]})")
        return None

    def _count_text(self, lo: int, hi: int) -> str:
        if lo == hi:
            return str(lo)
        if hi >= UNBOUNDED:
            return f"at least {lo}"
        return f"{lo} to {hi}"

    def check(self, inputs: list[str], outputs: list[str], args: dict[str, Any]) -> None:
        """Raise ValueError/TypeError describing the first violation of the schema."""
        if not self.min_inputs <= len(inputs) <= self.max_inputs:
            counts = self._count_text(self.min_inputs, self.max_inputs)
            raise ValueError(f"{self.type} takes {counts} "
                             f"input(s), got {len(inputs)}")
        if not self.min_outputs <= len(outputs) <= self.max_outputs:
            counts = self._count_text(self.min_outputs, self.max_outputs)
            raise ValueError(f"{self.type} takes {counts} "
                             f"output(s), got {len(outputs)}")
        for i, name in enumerate(inputs):
            for j, out in enumerate(outputs):
                if name == out and not self.inplace_allowed(i, j):
                    raise ValueError(f"{self.type} does not allow input {i} and output {j} "
                                     f"to be the same blob (blob {name})")
        for name, value in args.items():
            spec = self.args.get(name)
            if spec is None:
                close = difflib.get_close_matches(name, list(self.args), n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else (
                    f"; it takes {', '.join(sorted(self.args))}" if self.args else
                    "; it takes no arguments")
                raise ValueError(f"{self.type} has no argument {name!r}{hint}")
            if not spec.accepts(value):
                types = spec.types if isinstance(spec.types, tuple) else (spec.types,)
                raise TypeError(f"argument {name!r} of {self.type} must be "
                                f"{' or '.join(t.__name__ for t in types)}, "
                                f"not {type(value).__name__}")
        for name, spec in self.args.items():
            if spec.required and name not in args:
                raise ValueError(f"{self.type} requires the argument {name!r}")


_REGISTRY: dict[str, Schema] = {}


def _counts(value: int | tuple[int, int | None]) -> tuple[int, int]:
    if isinstance(value, tuple):
        lo, hi = value
        return lo, UNBOUNDED if hi is None else hi
    return value, value


def register(type_name: str, *, inputs: int | tuple[int, int | None] = (0, None),
             outputs: int | tuple[int, int | None] = (0, None),
             allow_inplace: bool | set[tuple[int, int]] = True,
             enforce_inplace: set[tuple[int, int]] | None = None,
             args: dict[str, Arg] | None = None, doc: str | None = None,
             gradient: Callable[..., Any] | _GradientPolicy | None = None,
             ) -> Callable[[type], type]:
    """Class decorator: register an :class:`Operator` subclass under ``type_name``.

    ``inputs``/``outputs`` are an exact count or ``(min, max)`` with ``None`` for
    no maximum; ``allow_inplace`` is True, False or a set of ``(input, output)``
    index pairs that may be the same blob; ``enforce_inplace`` the pairs that must
    be (Caffe2's ``EnforceInplace``, e.g. Iter's counter). Both rules apply to the
    blobs the names resolve to, so two names forwarded to one blob count as the
    same blob; ``args`` maps argument names to
    :class:`Arg`; ``doc`` defaults to the class docstring; ``gradient`` is a
    gradient maker or a policy (it can also be attached later with
    :func:`gradient`).
    """
    if not isinstance(type_name, str) or not type_name:
        raise TypeError("an operator type name must be a non-empty str")

    def decorate(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, Operator)):
            raise TypeError(f"register() decorates Operator subclasses, not {cls!r}")
        min_in, max_in = _counts(inputs)
        min_out, max_out = _counts(outputs)
        previous = _REGISTRY.get(type_name)
        _REGISTRY[type_name] = Schema(
            type=type_name, cls=cls, min_inputs=min_in, max_inputs=max_in,
            min_outputs=min_out, max_outputs=max_out,
            allow_inplace=allow_inplace if isinstance(allow_inplace, bool)
            else frozenset(allow_inplace),
            enforce_inplace=frozenset(enforce_inplace or ()),
            args=dict(args or {}), doc=(doc if doc is not None else (cls.__doc__ or "")).strip(),
            gradient=gradient if gradient is not None else
            (previous.gradient if previous is not None else None),
        )
        cls.type_name = type_name
        return cls

    return decorate


def gradient(type_name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: attach a gradient maker to a registered operator type."""

    def decorate(maker: Callable[..., Any]) -> Callable[..., Any]:
        lookup(type_name).gradient = maker
        return maker

    return decorate


def lookup(type_name: str) -> Schema:
    """The schema of a registered type; OperatorError listing close matches otherwise."""
    found = _REGISTRY.get(type_name)
    if found is None:
        if not isinstance(type_name, str):
            raise OperatorError(f"an operator type must be a str, not {type(type_name).__name__}")
        close = difflib.get_close_matches(type_name, list(_REGISTRY), n=4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise OperatorError(f"Unknown operator type {type_name!r}.{hint}")
    return found


def schema(type_name: str) -> Schema:
    """The :class:`Schema` of a registered operator type."""
    return lookup(type_name)


def registered_operators() -> list[str]:
    """Every registered operator type name, sorted."""
    return sorted(_REGISTRY)


class Operator(_dispatch.OperatorCore):
    """Base class of operators: built once in a workspace, then run many times.

    Building checks the schema and arguments, that every input exists
    (``Encountered a non-existing input blob: <name>``), runs the subclass's
    :meth:`validate`, checks the schema's in-place rules against the blobs the
    names resolve to, and only then creates the outputs. Blobs are resolved
    once and cached; whenever the workspace structure changes, the cache is
    checked (each name looked up again) and resolved anew if a name now reaches
    another blob, so an operator never touches a blob that has been removed.

    In place means one blob, however it is reached: an input and an output
    whose names differ but are forwarded to the same blob are in place, exactly
    as when they share a name. Which inputs are also outputs is worked out from
    the resolved blobs each time they are resolved, and an op whose schema
    forbids that pairing refuses to be built (or, if a later re-binding makes
    the blobs meet, to run) rather than silently copying its input.

    Subclasses implement :meth:`run`, reading :meth:`input` and writing through
    :meth:`output`. The blob access, the cache and the net loop are compiled
    (:mod:`scopeops.ops._dispatch`); so are the run paths of the common built-in
    types (``_fast_path``), which the executor takes for the common case (plain
    tensors of one dtype and shape) instead of their Python ``run()``. A subclass
    that defines its own ``run()`` drops the compiled path it would inherit.
    """

    type_name = "Operator"
    __slots__ = ()
    #: The compiled run path of a built-in type (a ``_dispatch.Kernel``), or None.
    _fast_path: ClassVar[Any] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "run" in cls.__dict__ and "_fast_path" not in cls.__dict__:
            # A compiled path computes what the run() it was written beside computes.
            cls._fast_path = None

    def __init__(self, definition: OperatorDef, workspace: Any) -> None:
        spec = lookup(definition.type)
        spec.check(definition.inputs, definition.outputs, definition.args)
        self._attach(definition, workspace)
        self.args = {name: a.default for name, a in spec.args.items() if not a.required}
        self.args.update(definition.args)
        for name in definition.inputs:
            if not workspace.has_blob(name):
                raise BlobNotFoundError(
                    f"op {definition.type}: Encountered a non-existing input blob: {name}"
                    f"{did_you_mean(name, workspace.blobs())}", name=name)
        self.validate()
        problem = spec.aliasing_error(
            definition.inputs, definition.outputs,
            [workspace.get_blob(name) for name in definition.inputs],
            [workspace.get_blob(name) for name in definition.outputs])
        if problem is not None:
            raise ValueError(problem)
        for name in definition.outputs:
            workspace.create_blob(name)
        self.setup()
        fast_path = type(self)._fast_path
        if fast_path is not None:
            self._set_kernel(fast_path.bind(self))

    # -- hooks -----------------------------------------------------------------

    def validate(self) -> None:
        """Check the definition further before any output is created; raise to refuse."""

    def setup(self) -> None:
        """Prepare per-instance state once the outputs exist."""

    def run(self) -> None:
        """Compute the outputs from the inputs."""
        raise NotImplementedError(f"{type(self).__name__} does not implement run()")

    def _check_resolved(self, inputs: list[Any], outputs: list[Any]) -> None:
        """Refuse (raise) blobs the names now resolve to, before they are cached."""

    # -- blob access -------------------------------------------------------------

    def _resolve(self) -> None:
        ws = self.workspace
        inputs = []
        for name in self._input_names:
            blob = ws.get_blob(name)
            if blob is None:
                raise BlobNotFoundError(
                    f"op {self.definition.type}: input blob {name} is no longer in the "
                    f"workspace{did_you_mean(name, ws.blobs())}", name=name)
            inputs.append(blob)
        outputs = [ws.create_blob(name) for name in self._output_names]
        problem = lookup(self.definition.type).aliasing_error(
            list(self._input_names), list(self._output_names), inputs, outputs)
        if problem is not None:
            raise OperatorError(problem)
        self._check_resolved(inputs, outputs)
        self._set_blobs(inputs, outputs)

    @property
    def inputs(self) -> list[str]:
        names: list[str] = self.definition.inputs
        return names

    @property
    def outputs(self) -> list[str]:
        names: list[str] = self.definition.outputs
        return names

    def arg(self, name: str, default: Any = _MISSING) -> Any:
        """The argument ``name`` (schema default applied), or ``default`` if absent."""
        value = self.args.get(name, _MISSING)
        if value is _MISSING or value is None:
            if default is not _MISSING:
                return default
            if value is _MISSING:
                raise KeyError(f"{self.definition.type} has no argument {name!r}")
        return value

    def __repr__(self) -> str:
        d = self.definition
        return f"<{type(self).__name__} {d.type}({', '.join(d.inputs)}) -> {', '.join(d.outputs)}>"
