"""The scopeops exception hierarchy.

Every error the library raises on purpose derives from :class:`ScopeError`, so
``except scopeops.ScopeError`` catches all of them. The subclasses also derive
from the built-in exception a Python caller would expect (``KeyError`` for a
missing name, ``TypeError`` for a wrong blob type, ``ValueError`` for bad
bindings), so code written against plain dictionaries keeps working.
"""

from __future__ import annotations

import pickle

__all__ = [
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


class BlobNotFoundError(ScopeError, KeyError):
    """A blob name is not visible where it was asked for."""

    # KeyError.__str__ repr()s its argument; a message reads better as is.
    __str__ = RuntimeError.__str__


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
    forward pass has overwritten (the message says "version"), or a gradient
    that no maker can build. A ``ValueError`` because the net is the bad input.
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
