"""Name scopes and device scopes (Caffe2's ``scope.py``), context-local.

``NameScope("a")`` inside ``NameScope("b")`` makes the current name scope
``"b/a/"``; the Net builder prefixes plain blob names with it. ``DeviceScope``
makes ops added inside carry a :class:`DeviceOption`. Differences from Caffe2:
a trailing ``/`` in a prefix is not doubled; the state lives in ``contextvars``
(each thread and each asyncio task sees its own); ``EmptyNameScope`` and
``EmptyDeviceScope`` let exceptions propagate; and a scope left out of order
raises :class:`~scopeops.ScopeError` without touching the state.

Every scope is a reusable context manager object (in turn, nested, or shared
by threads and tasks); each ``with`` restores exactly the value it found,
through the ``contextvars`` token it set.
"""

from __future__ import annotations

from typing import Any

from scopeops.errors import ScopeError
from scopeops.names import (
    DEVICE_SCOPE,
    NAME_SCOPE,
    SEPARATOR,
    BlobReference,
    DeviceOption,
    current_device_scope,
    current_name_scope,
    scoped_name,
)

__all__ = [
    "BlobReference",
    "DeviceOption",
    "DeviceScope",
    "EmptyDeviceScope",
    "EmptyNameScope",
    "NameScope",
    "current_device_scope",
    "current_name_scope",
    "scoped_name",
]

_get_name = NAME_SCOPE.get
_set_name = NAME_SCOPE.set
_reset_name = NAME_SCOPE.reset


_NAME_CHANGED = "The namescope variable is changed from outside NameScope() calls"
_DEVICE_CHANGED = "The device scope is changed from outside DeviceScope() calls"


class _ContextScope:
    """The entries of one scope object: the ``contextvars`` token each set, and the value.

    A scope object may be entered again: in turn, nested, or by several threads
    and tasks at once. The first entry sits in slots (the fast, common case);
    entries made while it is held are kept in ``_more`` (None when empty),
    newest last. Leaving undoes the newest entry whose value is still current
    and whose token belongs to this context, and changes nothing when there is
    none.
    """

    __slots__ = ("_token", "_value", "_more")
    _token: Any
    _value: Any
    _more: list[tuple[Any, Any]] | None
    _var: Any = None
    _changed = ""

    def _push(self, token: Any, value: Any) -> None:
        if self._token is None and self._more is None:
            self._token = token
            self._value = value
        elif self._more is None:
            self._more = [(token, value)]
        else:
            self._more.append((token, value))

    def _pop(self) -> None:
        var = self._var
        current = var.get()
        more = self._more or []
        candidates: list[tuple[int | None, Any, Any]] = [
            (i, token, value) for i, (token, value) in enumerate(more)]
        if self._token is not None:
            candidates.insert(0, (None, self._token, self._value))
        foreign = False
        for i, token, value in reversed(candidates):
            if value is not current:
                continue
            try:
                var.reset(token)
            except ValueError:   # entered in another context sharing this object
                foreign = True
                continue
            if i is None:
                self._token = self._value = None
            else:
                del more[i]
                if not more:
                    self._more = None   # None when empty: the fast paths test for it
            return
        if not candidates:
            raise ScopeError(f"{self!r} exited without being entered")
        if foreign:
            raise ScopeError(f"{self!r} was exited in a different context (thread or "
                             f"asyncio task) from the one it was entered in")
        raise ScopeError(f"{self._changed}: {self!r} is not the innermost scope here (the "
                         f"current value is {current!r}; were scopes exited out of order?)")


class NameScope(_ContextScope):
    """Prefix blob names added by the Net builder with ``prefix + "/"``.

    ``reset=True`` starts from the root instead of the current scope; ``None``
    and ``""`` add nothing (``NameScope("", reset=True)`` empties the scope).
    ``with NameScope("a") as scope:`` binds the new current scope, ``"a/"``.
    """

    __slots__ = ("prefix", "reset", "_effective")
    _var = NAME_SCOPE
    _changed = _NAME_CHANGED

    def __init__(self, prefix: str | None, reset: bool = False) -> None:
        if prefix is not None and not isinstance(prefix, str):
            raise TypeError("NameScope takes in a string as its argument.")
        self.prefix = prefix
        self.reset = reset
        if not prefix:
            self._effective = ""
        elif prefix[-1] == SEPARATOR:   # not doubled, unlike Caffe2's "a//"
            self._effective = prefix
        else:
            self._effective = prefix + SEPARATOR
        self._token = self._more = None

    def __enter__(self) -> str:
        scope = self._effective if self.reset else _get_name() + self._effective
        token = _set_name(scope)
        if self._token is None and self._more is None:   # _push, inlined: the hot path
            self._token = token
            self._value = scope
        else:
            self._push(token, scope)
        return scope

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        token = self._token
        if token is not None and self._more is None and _get_name() is self._value:
            try:
                _reset_name(token)
            except ValueError:
                pass
            else:
                self._token = None
                return
        self._pop()

    def __repr__(self) -> str:
        reset = ", reset=True" if self.reset else ""
        return f"NameScope({self.prefix!r}{reset})"


class EmptyNameScope(_ContextScope):
    """Temporarily the root name scope (``""``); exceptions inside propagate."""

    __slots__ = ()
    _var = NAME_SCOPE
    _changed = _NAME_CHANGED

    def __init__(self) -> None:
        self._token = self._more = None

    def __enter__(self) -> str:
        self._push(_set_name(""), "")
        return ""

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._pop()

    def __repr__(self) -> str:
        return "EmptyNameScope()"


class DeviceScope(_ContextScope):
    """Ops added inside record this device (``OperatorDef.device_option``).

    Caffe2 semantics, computed on entry: the new option is a copy of ``option``
    (or a default CPU option when only ``node_name`` is given: the device is
    not inherited); an explicit ``node_name`` overrides, otherwise the outer
    scope's node_name is inherited when the new option has none; the outer
    scope's ``extra_info`` is appended and the whole sorted (duplicates kept).
    ``with DeviceScope(...) as option:`` binds the new current DeviceOption.
    """

    __slots__ = ("option", "node_name")
    _var = DEVICE_SCOPE
    _changed = _DEVICE_CHANGED

    def __init__(self, option: DeviceOption | None = None, node_name: str | None = None) -> None:
        if option is not None and not isinstance(option, DeviceOption):
            raise TypeError(f"DeviceScope takes in a DeviceOption as its argument, "
                            f"not {type(option).__name__}.")
        if node_name is not None and not isinstance(node_name, str):
            raise TypeError(f"DeviceScope node_name must be a str, not "
                            f"{type(node_name).__name__}")
        if option is None and not node_name:
            raise ValueError("At least one argument should be non-null in DeviceScope")
        self.option = option
        self.node_name = node_name
        self._token = self._more = None

    def _new_option(self) -> DeviceOption:
        base = self.option if self.option is not None else DeviceOption()
        node_name = base.node_name
        extra_info = list(base.extra_info)
        outer = DEVICE_SCOPE.get()
        if outer is not None:
            if node_name is None:
                node_name = outer.node_name
            extra_info.extend(outer.extra_info)
        if self.node_name:
            node_name = self.node_name
        return DeviceOption(device_type=base.device_type, device_id=base.device_id,
                            node_name=node_name, extra_info=tuple(sorted(extra_info)))

    def __enter__(self) -> DeviceOption:
        option = self._new_option()   # a fresh object: identity tells entries apart
        self._push(DEVICE_SCOPE.set(option), option)
        return option

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._pop()

    def __repr__(self) -> str:
        args = [repr(self.option)] if self.option is not None else []
        if self.node_name:
            args.append(f"node_name={self.node_name!r}")
        return f"DeviceScope({', '.join(args)})"


class EmptyDeviceScope(_ContextScope):
    """Temporarily no device scope (ops record None); exceptions inside propagate."""

    __slots__ = ()
    _var = DEVICE_SCOPE
    _changed = _DEVICE_CHANGED

    def __init__(self) -> None:
        self._token = self._more = None

    def __enter__(self) -> None:
        self._push(DEVICE_SCOPE.set(None), None)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._pop()

    def __repr__(self) -> str:
        return "EmptyDeviceScope()"
