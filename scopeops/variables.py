"""Variable scopes and ``get_variable``: TensorFlow v1 semantics, without its naming traps.

A variable is a blob ``<scope>/<name>`` in a workspace, created and initialised
by :func:`get_variable` the first time and shared afterwards when the scope's
``reuse`` allows it. Differences from TensorFlow: re-entering a scope, by name
or by its :class:`VariableScope`, gives exactly the same names (never ``_1``),
for variables and for the ops added inside alike.

Where things live:

* The current variable scope is a ``contextvars`` variable, like the name scope:
  each thread and asyncio task sees its own.
* Which blobs are variables (with their shape, dtype and trainability, in
  creation order), which scope names were opened, for ``default_name``, and which
  blobs a checkpoint loaded, is kept per workspace in a ``WeakKeyDictionary``:
  the registry never keeps a workspace alive, and a workspace's variables are
  forgotten with it.

Resuming from a checkpoint (the reverse of TensorFlow's order, where the graph is
built and then restored): :func:`~scopeops.load_workspace` calls
:func:`register_loaded_blobs`, and the first ``get_variable`` of a loaded tensor
takes it over as the variable, whatever ``reuse`` is, when its shape and dtype
fit; that call plays the part of the variable's creation, so a second call
follows ``reuse`` as usual.

``variable_scope`` also opens a :class:`~scopeops.NameScope`, so ops added
inside are prefixed like the variables. It is opened relative to the current
name scope, as in TensorFlow (``NameScope("tower_0")`` around
``variable_scope("model")`` names ops ``tower_0/model/...`` while the variables
are ``model/...``, the multi-tower pattern), but with the scope's own name:
re-entering it gives the same op names. Variables ignore name scopes; the
BlobReference ``get_variable`` returns is never re-scoped by the Net builder.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from scopeops import initializers
from scopeops._workspace import Workspace as _CoreWorkspace
from scopeops.errors import VariableError, did_you_mean
from scopeops.names import BlobReference
from scopeops.scope import NameScope

__all__ = [
    "AUTO_REUSE",
    "VariableScope",
    "current_variable_scope",
    "get_variable",
    "global_variables",
    "register_loaded_blobs",
    "reset_variables",
    "trainable_variables",
    "variable_scope",
]


class _AutoReuse:
    """``reuse=AUTO_REUSE``: get the variable if it exists, create it otherwise."""

    __slots__ = ()
    _instance: "_AutoReuse | None" = None

    def __new__(cls) -> "_AutoReuse":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "AUTO_REUSE"

    def __reduce__(self) -> str:
        return "AUTO_REUSE"


AUTO_REUSE = _AutoReuse()


@dataclass(frozen=True, eq=False)
class VariableScope:
    """A variable scope: what :func:`variable_scope` yields and accepts back.

    ``name`` (``""`` at the root, else ``"a/b"``), ``reuse`` (False, True or
    AUTO_REUSE, inherited already), ``workspace`` (where variables live, or
    None) and ``initializer`` (the default for variables created inside).
    """

    name: str
    reuse: Any = False
    workspace: Any = field(default=None, repr=False)
    initializer: Any = None


_ROOT = VariableScope(name="")
_CURRENT: contextvars.ContextVar[VariableScope] = contextvars.ContextVar(
    "scopeops.variable_scope", default=_ROOT)


def current_variable_scope() -> VariableScope:
    """The innermost open variable scope (the root scope, named ``""``, outside any)."""
    return _CURRENT.get()


# -- the registry ------------------------------------------------------------------


@dataclass
class _Variable:
    shape: tuple[int, ...]
    dtype: np.dtype
    trainable: bool


class _VariableStore:
    """One workspace's variables (in creation order), the scope names opened in it, and
    the loaded tensors no get_variable has taken over yet."""

    __slots__ = ("variables", "opened_scopes", "loaded")

    def __init__(self) -> None:
        self.variables: dict[str, _Variable] = {}
        self.opened_scopes: set[str] = set()
        self.loaded: set[str] = set()


_STORES: "weakref.WeakKeyDictionary[Any, _VariableStore]" = weakref.WeakKeyDictionary()
# Scope names opened with no workspace in sight still need unique default names.
_UNBOUND = _VariableStore()
# Check-then-create in get_variable and the registry updates are atomic.
_LOCK = threading.RLock()


def _store(workspace: Any) -> _VariableStore:
    if workspace is None:
        return _UNBOUND
    store = _STORES.get(workspace)
    if store is None:
        store = _STORES[workspace] = _VariableStore()
    return store


def _check_workspace(workspace: Any, what: str) -> Any:
    if workspace is not None and not isinstance(workspace, _CoreWorkspace):
        raise TypeError(f"{what}: workspace must be a scopeops Workspace, not "
                        f"{type(workspace).__name__}")
    return workspace


def _require_workspace(workspace: Any, what: str) -> Any:
    if not isinstance(workspace, _CoreWorkspace):
        raise TypeError(f"{what} takes a scopeops Workspace, not {type(workspace).__name__}")
    return workspace


def _live_variables(workspace: Any) -> dict[str, _Variable]:
    """The workspace's variables, forgetting those whose blob was removed behind our back."""
    store = _STORES.get(workspace)
    if store is None:
        return {}
    stale = [name for name in store.variables if workspace.get_blob(name) is None]
    for name in stale:
        del store.variables[name]
    store.loaded = {name for name in store.loaded if workspace.get_blob(name) is not None}
    return store.variables


def register_loaded_blobs(workspace: Any, tensors: Any, variables: Any = None) -> None:
    """Record the blobs a checkpoint has just put in ``workspace``.

    Each name of ``tensors`` may be taken over by the first :func:`get_variable`
    of that name, whatever ``reuse`` is, if its shape and dtype fit.
    ``variables`` maps the names the checkpoint saved as variables to whether
    they were trainable: :func:`global_variables` and :func:`trainable_variables`
    list them from now on, in that order. :func:`scopeops.load_workspace` calls
    this; call it yourself after filling a workspace from another source.
    """
    _require_workspace(workspace, "register_loaded_blobs")
    names = [_check_loaded_name(workspace, n) for n in tensors]
    recorded: dict[str, _Variable] = {}
    for name, trainable in dict(variables or {}).items():
        value = workspace.fetch_blob(_check_loaded_name(workspace, name))
        if not isinstance(value, np.ndarray):
            raise VariableError(f"Variable {name} cannot be registered: its blob holds a "
                                f"{type(value).__name__}, not a tensor")
        recorded[str(name)] = _Variable(tuple(value.shape), value.dtype, bool(trainable))
    with _LOCK:
        store = _store(workspace)
        store.loaded.update(names, recorded)
        store.variables.update(recorded)


def _check_loaded_name(workspace: Any, name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"register_loaded_blobs takes blob names (str), not "
                        f"{type(name).__name__}")
    if workspace.get_blob(name) is None:
        raise VariableError(f"register_loaded_blobs: the workspace holds no blob {name}"
                            f"{did_you_mean(name, workspace.blobs())}")
    return str(name)


# -- variable_scope ------------------------------------------------------------------


def _check_reuse(reuse: Any) -> Any:
    if reuse is None or reuse is False or reuse is True or reuse is AUTO_REUSE:
        return reuse
    raise TypeError(f"reuse must be None, False, True or so.AUTO_REUSE, not {reuse!r}")


def _check_initializer(initializer: Any) -> Any:
    if initializer is None or callable(initializer):
        return initializer
    return initializers.constant(initializer)   # a value, as TensorFlow allows


def _check_scope_name(name: Any, what: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, not {type(name).__name__}")
    if name.endswith("/"):
        name = name[:-1]
    if not name or name.startswith("/") or "//" in name:
        raise ValueError(f"{what} must be a non-empty name like 'dense' or 'model/dense', "
                         f"got {name!r}")
    return name


def _join(outer: str, name: str) -> str:
    return f"{outer}/{name}" if outer else name


@contextlib.contextmanager
def variable_scope(name_or_scope: str | VariableScope | None, default_name: str | None = None,
                   reuse: Any = None, initializer: Any = None,
                   workspace: Any = None) -> Iterator[VariableScope]:
    """Open a variable scope (and the matching name scope); yields its VariableScope.

    ``name_or_scope``: a name, nested under the current scope (``"a"`` inside
    ``"b"`` is ``"b/a"``); a VariableScope to re-enter, with its workspace,
    initializer and reuse (unless this call gives them); or None, to use
    ``default_name`` made unique in the workspace (``dense``, ``dense_1``...).
    ``reuse``: None or False inherit the enclosing scope's; True shares existing
    variables only; AUTO_REUSE shares or creates. ``workspace`` and
    ``initializer`` are inherited when not given.
    """
    reuse = _check_reuse(reuse)
    initializer = _check_initializer(initializer)
    workspace = _check_workspace(workspace, "variable_scope")
    enclosing = _CURRENT.get()
    if isinstance(name_or_scope, VariableScope):
        name = name_or_scope.name
        if workspace is None:
            workspace = name_or_scope.workspace
        if initializer is None:
            initializer = name_or_scope.initializer
        reuse = reuse or name_or_scope.reuse or enclosing.reuse
        inner = enclosing.name + "/"
        relative = name[len(inner):] if enclosing.name and name.startswith(inner) else name
    elif name_or_scope is None:
        if default_name is None:
            raise TypeError("If default_name is None then name_or_scope is required")
        default_name = _check_scope_name(default_name, "variable_scope default_name")
        if reuse is True:
            raise ValueError("reuse=True cannot be used without a name_or_scope")
        if workspace is None:
            workspace = enclosing.workspace
        with _LOCK:
            opened = _store(workspace).opened_scopes
            relative, k = default_name, 0
            while _join(enclosing.name, relative) in opened:
                k += 1
                relative = f"{default_name}_{k}"
        name = _join(enclosing.name, relative)
    elif isinstance(name_or_scope, str):
        relative = _check_scope_name(name_or_scope, "variable_scope name")
        name = _join(enclosing.name, relative)
    else:
        raise TypeError(f"variable_scope takes a name (str), a VariableScope or None, not "
                        f"{type(name_or_scope).__name__}")
    if not isinstance(name_or_scope, VariableScope):
        reuse = reuse or enclosing.reuse
        if workspace is None:
            workspace = enclosing.workspace
        if initializer is None:
            initializer = enclosing.initializer
    with _LOCK:
        _store(workspace).opened_scopes.add(name)
    scope = VariableScope(name=name, reuse=reuse or False, workspace=workspace,
                          initializer=initializer)
    with NameScope(relative):
        token = _CURRENT.set(scope)
        try:
            yield scope
        finally:
            _CURRENT.reset(token)


# -- get_variable --------------------------------------------------------------------


def _default_initializer(dtype: np.dtype) -> Callable[..., Any]:
    if np.issubdtype(dtype, np.floating):
        return initializers.glorot_uniform()
    return initializers.zeros()


def _found(workspace: Any, name: str, record: _Variable) -> tuple[tuple[int, ...], np.dtype]:
    """The variable's shape and dtype now (ops may have rewritten it), else as created."""
    blob = workspace.get_blob(name)
    if blob is not None and blob.shape is not None and blob.dtype is not None:
        return tuple(blob.shape), blob.dtype
    return record.shape, record.dtype


def get_variable(name: str, shape: Any = None, dtype: Any = "float32", initializer: Any = None,
                 trainable: bool = True, workspace: Any = None) -> BlobReference:
    """The variable ``<scope>/<name>`` in the scope's workspace, created unless it exists.

    Created with ``initializer(shape, dtype)``: the argument, else the scope's,
    else Glorot-uniform for floats and zeros otherwise. Whether an existing
    variable may be shared, and a missing one created, follows the scope's
    ``reuse``; refusals raise :class:`~scopeops.VariableError`. A tensor that
    :func:`~scopeops.load_workspace` loaded is taken over by the first call for
    its name, whatever ``reuse`` is, if its shape and dtype fit.
    """
    scope = _CURRENT.get()
    name = _check_scope_name(name, "a variable name")
    full = _join(scope.name, name)
    workspace = _check_workspace(workspace, f"get_variable({full!r})")
    if workspace is None:
        workspace = scope.workspace
    if workspace is None:
        raise VariableError(f"get_variable({full!r}) has no workspace: pass workspace=... or "
                            f"open so.variable_scope(..., workspace=ws) around it")
    dtype = np.dtype(dtype)
    if shape is not None:
        shape = initializers._shape(shape)
    initializer = _check_initializer(initializer)
    with _LOCK:
        record = _live_variables(workspace).get(full)
        store = _STORES.get(workspace)
        if store is not None and full in store.loaded:
            return _take_over(workspace, store, full, shape, dtype, trainable)
        if record is not None:
            if scope.reuse is False:
                raise VariableError(f"Variable {full} already exists, disallowed. Did you mean "
                                    f"to set reuse=True or reuse=so.AUTO_REUSE in "
                                    f"variable_scope?")
            found_shape, found_dtype = _found(workspace, full, record)
            if shape is not None and shape != found_shape:
                raise VariableError(f"Trying to share variable {full}, but specified shape "
                                    f"{shape} and found shape {found_shape}.")
            if dtype != found_dtype:
                raise VariableError(f"Trying to share variable {full}, but specified dtype "
                                    f"{dtype.name} and found dtype {found_dtype.name}.")
            return BlobReference(full)
        if scope.reuse is True:
            known = list(_live_variables(workspace))
            if store is not None:
                known += store.loaded
            hint = did_you_mean(full, known)
            if hint:
                raise VariableError(f"Variable {full} does not exist, or was not created with "
                                    f"get_variable(){hint} If it is a new variable, set "
                                    f"reuse=so.AUTO_REUSE in variable_scope.")
            raise VariableError(f"Variable {full} does not exist, or was not created with "
                                f"get_variable(). Did you mean to set reuse=so.AUTO_REUSE in "
                                f"variable_scope?")
        if workspace.has_blob(full):
            raise VariableError(f"Variable {full} cannot be created: the workspace already "
                                f"holds a blob {full} that was not created with "
                                f"get_variable()")
        if initializer is None:
            initializer = scope.initializer
        if initializer is None:
            initializer = _default_initializer(dtype)
        if shape is None:
            if not isinstance(initializer, initializers._Constant):
                raise VariableError(f"Shape of a new variable ({full}) must be fully defined, "
                                    f"but instead was None.")
            shape = initializer.value.shape
        value = np.asarray(initializer(shape, dtype))
        if value.shape != shape:
            raise VariableError(f"the initializer {initializer!r} of variable {full} returned "
                                f"shape {value.shape}, not {shape}")
        workspace.feed_blob(full, value.astype(dtype, copy=False))
        store = _store(workspace)
        store.variables[full] = _Variable(shape, dtype, bool(trainable))
    return BlobReference(full)


def _take_over(workspace: Any, store: _VariableStore, full: str, shape: Any, dtype: np.dtype,
               trainable: bool) -> BlobReference:
    """The first get_variable of a loaded tensor: it becomes (again) the variable."""
    blob = workspace.get_blob(full)
    if blob is None or blob.shape is None or blob.dtype is None:
        raise VariableError(f"Variable {full} cannot be created: the blob {full} loaded from "
                            f"a checkpoint holds no tensor")
    found_shape, found_dtype = tuple(blob.shape), blob.dtype
    if shape is not None and shape != found_shape:
        raise VariableError(f"Trying to share variable {full}, but specified shape {shape} "
                            f"and found shape {found_shape}. The blob {full} was loaded "
                            f"from a checkpoint.")
    if dtype != found_dtype:
        raise VariableError(f"Trying to share variable {full}, but specified dtype "
                            f"{dtype.name} and found dtype {found_dtype.name}. The blob "
                            f"{full} was loaded from a checkpoint.")
    store.loaded.discard(full)
    store.variables[full] = _Variable(found_shape, found_dtype, bool(trainable))
    return BlobReference(full)


# -- listing and resetting ------------------------------------------------------------


def global_variables(workspace: Any) -> list[BlobReference]:
    """The names of the workspace's variables, in creation order."""
    _require_workspace(workspace, "global_variables")
    with _LOCK:
        return [BlobReference(n) for n in _live_variables(workspace)]


def trainable_variables(workspace: Any) -> list[BlobReference]:
    """The names of the workspace's trainable variables, in creation order."""
    _require_workspace(workspace, "trainable_variables")
    with _LOCK:
        return [BlobReference(n) for n, v in _live_variables(workspace).items() if v.trainable]


def reset_variables(workspace: Any) -> None:
    """Remove the workspace's variables and forget them and its opened scope names.

    The notebook re-run case: building the model again then creates fresh
    variables under the same names (``dense``, not ``dense_1``).
    """
    _require_workspace(workspace, "reset_variables")
    with _LOCK:
        store = _STORES.pop(workspace, None)
        if store is not None:
            for name in store.variables:
                workspace.remove_blob(name)
