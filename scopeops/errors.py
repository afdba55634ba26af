"""The scopeops exception hierarchy.

Every error the library raises on purpose derives from :class:`ScopeError`, so
``except scopeops.ScopeError`` catches all of them. The subclasses also derive
from the built-in exception a Python caller would expect (``KeyError`` for a
missing name, ``TypeError`` for a wrong blob type, ``ValueError`` for bad
bindings), so code written against plain dictionaries keeps working.
"""

from __future__ import annotations

import difflib
import pickle
from typing import Any, Callable, Iterable

__all__ = [
    "did_you_mean",
    "ScopeError",
    "BlobNotFoundError",
    "BlobTypeError",
    "BindingError",
    "StackError",
    "OperatorError",
    "GradientError",
    "VariableError",
    "CheckpointError",
    "PickleStateError",
]


class ScopeError(RuntimeError):
    """Base class of every error raised by scopeops."""


def _similarity(name: str, candidate: str) -> float:
    """difflib's ratio of the two names after the scope path they share ("model/"): a
    common prefix says nothing about a typo in the rest."""
    cut = 0
    for i, (a, b) in enumerate(zip(name, candidate, strict=False)):
        if a != b:
            break
        if a == "/":
            cut = i + 1
    matcher = difflib.SequenceMatcher(None, name[cut:], candidate[cut:])
    if matcher.real_quick_ratio() < 0.6 or matcher.quick_ratio() < 0.6:
        return 0.0
    return matcher.ratio()


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``"; did you mean weights?"``, naming the candidates closest to ``name`` (at
    most three), or ``""`` when none is close. For error paths only: it compares
    ``name`` with every candidate."""
    scored = []
    for candidate in dict.fromkeys(c for c in candidates if isinstance(c, str)):
        if candidate != name:
            score = _similarity(name, candidate)
            if score >= 0.6:
                scored.append((-score, candidate))
    close = [candidate for _, candidate in sorted(scored)[:3]]
    return f"; did you mean {' or '.join(close)}?" if close else ""


class BlobNotFoundError(ScopeError, KeyError):
    """A blob name is not visible where it was asked for.

    ``name`` is the name asked for, when the raiser gave it. A raiser that also gives
    ``visible`` (a function returning the names that were visible) gets the closest of
    them added to the message ("did you mean weights?"), worked out the first time the
    message is read: code that catches the error as a membership test pays nothing.
    Until then the error holds ``visible`` (and so the workspace it reads), as
    Python's ``AttributeError`` holds its object for the same purpose.
    """

    def __init__(self, *args: Any, name: str | None = None,
                 visible: Callable[[], Iterable[str]] | None = None) -> None:
        super().__init__(*args)
        self.name = name
        self._visible = visible
        self._hint = ""

    def __str__(self) -> str:
        # KeyError.__str__ repr()s its argument; a message reads better as is.
        message = RuntimeError.__str__(self)
        visible = self._visible
        if visible is not None and self.name is not None:
            self._hint = did_you_mean(self.name, visible())
            self._visible = None
        return message + self._hint

    def __reduce__(self) -> Any:
        # The message as read now (the visible names may not pickle, or be gone later).
        return (type(self), (str(self),), {"name": self.name})


class BlobTypeError(ScopeError, TypeError):
    """A blob holds another type than the caller asked for (or is empty)."""


class BindingError(ScopeError, ValueError):
    """Bad bindings: missing parent, missing outer blob, redefinition, mismatch."""


class StackError(ScopeError):
    """A corrupted workspace stack, or a debug-mode parent mismatch."""


class OperatorError(ScopeError):
    """An operator could not be built or failed while running.

    The message names the operator type, its name or position and the net; the
    original error is chained as ``__cause__``.
    """


class GradientError(OperatorError, ValueError):
    """The backward pass of a net cannot be built as the net is written.

    Raised by ``add_gradient_ops`` (and ``backward_ops``) before anything is added:
    an op on the gradient path that breaks its schema, a ``StopGradient`` whose
    output nothing reads, a gradient op that needs a blob at a version the
    forward pass has overwritten (the message says "version"), a gradient
    that no maker can build, or a net that already has the backward pass it would
    add (``add_gradient_ops`` called twice). A ``ValueError`` because the net is the
    bad input.
    """


class VariableError(ScopeError, ValueError):
    """get_variable refused: exists without reuse, missing with reuse, or a shape or
    dtype mismatch (TensorFlow's phrases)."""


class CheckpointError(ScopeError):
    """A checkpoint cannot be saved (an unsaveable blob) or loaded (truncated,
    corrupted, foreign or newer-format file). Nothing is half-written or half-loaded."""


class PickleStateError(ScopeError, pickle.UnpicklingError):
    """The state a pickle gives a scopeops object is malformed: another format version,
    wrong types, or an impossible graph (a read-through cycle, a workspace twice on one
    stack). Raised while unpickling, before the object takes any of it. Also a
    ``pickle.UnpicklingError``, as a corrupted stream would raise."""
