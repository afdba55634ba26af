"""Caffe2's ``scope`` module: name and device scopes, on :mod:`scopeops.scope`.

The name scope is scopeops' own (``NameScope("a")`` then ``CurrentNameScope() ==
"a/"``). Device scopes take and give ``caffe2_pb2.DeviceOption`` messages:
``CurrentDeviceScope()`` returns the very option a ``DeviceScope`` made (a copy of the
one given, field presence included), while scopeops' own device scope holds its
translation, so scopeops code inside sees the same device. Scopes are context-local (each
thread starts with none), as scopeops' are.
"""

from __future__ import annotations

import contextvars
from typing import Any

from scopeops import scope as native_scope
from scopeops.caffe2.proto import caffe2_pb2
from scopeops.caffe2.translate import device_option_to_caffe2, device_option_to_native
from scopeops.names import current_device_scope, current_name_scope

__all__ = ["CurrentDeviceScope", "CurrentNameScope", "DeviceScope", "EmptyDeviceScope", "SEPARATOR",
           "NameScope"]

SEPARATOR = "/"

# The caffe2_pb2 option of the innermost compat DeviceScope, beside the scopeops option it
# entered: the pair tells whether scopeops' scope was changed since (then it wins).
_DEVICE: contextvars.ContextVar[tuple[Any, Any] | None] = contextvars.ContextVar(
    "scopeops.caffe2.device_scope", default=None)


def CurrentNameScope() -> str:
    """The current name scope: ``""`` or a prefix ending in ``/``."""
    return current_name_scope()


def CurrentDeviceScope() -> Any:
    """The ``caffe2_pb2.DeviceOption`` of the innermost device scope, or None."""
    native = current_device_scope()
    if native is None:
        return None
    entered = _DEVICE.get()
    if entered is not None and entered[1] is native:
        return entered[0]
    return device_option_to_caffe2(native)


def NameScope(prefix: str | None, reset: bool = False) -> Any:
    """Prefix the names of ops created inside with ``prefix + "/"`` (``reset``: from the
    root). scopeops' :class:`~scopeops.NameScope`."""
    return native_scope.NameScope(prefix, reset)


class DeviceScope:
    """Ops created inside get a copy of ``scope`` (a ``caffe2_pb2.DeviceOption``) as
    their device option; ``node_name`` overrides, else the outer scope's is inherited."""

    def __init__(self, scope: Any, node_name: str | None = None) -> None:
        if scope is not None and not isinstance(scope, caffe2_pb2.DeviceOption):
            raise TypeError(f"DeviceScope takes a caffe2_pb2.DeviceOption, not "
                            f"{type(scope).__name__}")
        if scope is None and not node_name:
            raise ValueError("At least one argument should be non-null in DeviceScope")
        self.scope = scope
        self.node_name = node_name
        self._entries: list[tuple[Any, Any]] = []

    def __enter__(self) -> Any:
        option = caffe2_pb2.DeviceOption()
        if self.scope is not None:
            option.CopyFrom(self.scope)
        outer = CurrentDeviceScope()
        if self.node_name:
            option.node_name = self.node_name
        elif outer is not None and outer.HasField("node_name") and not option.HasField(
                "node_name"):
            option.node_name = outer.node_name
        native = native_scope.DeviceScope(device_option_to_native(option))
        entered = native.__enter__()
        token = _DEVICE.set((option, entered))
        self._entries.append((native, token))
        return option

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        native, token = self._entries.pop()
        _DEVICE.reset(token)
        native.__exit__(exc_type, exc, tb)


def EmptyDeviceScope() -> Any:
    """No device scope inside (ops get no device option). scopeops'
    :class:`~scopeops.EmptyDeviceScope`: exceptions inside propagate."""
    return native_scope.EmptyDeviceScope()
