"""The state behind name scopes and device scopes, below the Net builder.

Two context variables hold the current name scope (``""`` or a prefix ending
in ``/``) and the current device scope (a :class:`DeviceOption` or None).
Being ``contextvars``, they are local to a thread and to an asyncio task.
This module only reads them and defines the values they hold; the context
managers that change them live one layer up, in :mod:`scopeops.scope`.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BlobReference",
    "DeviceOption",
    "NAME_SCOPE",
    "DEVICE_SCOPE",
    "SEPARATOR",
    "current_device_scope",
    "current_name_scope",
    "scoped_name",
]

SEPARATOR = "/"

NAME_SCOPE: contextvars.ContextVar[str] = contextvars.ContextVar("scopeops.name_scope",
                                                                 default="")
DEVICE_SCOPE: contextvars.ContextVar["DeviceOption | None"] = contextvars.ContextVar(
    "scopeops.device_scope", default=None)


class BlobReference(str):
    """A blob name that is already fully scoped (Caffe2's ``BlobReference``).

    The Net builder prefixes plain ``str`` names with the current name scope
    and leaves a ``BlobReference`` alone. Appending a str to one (``ref +
    "_grad"``) gives another ``BlobReference``, as in Caffe2, so a name derived
    from a scoped blob is not scoped twice.
    """

    __slots__ = ()

    def __add__(self, other: Any) -> "BlobReference":
        if not isinstance(other, str):
            return NotImplemented
        return BlobReference(str.__add__(self, other))

    def __radd__(self, other: Any) -> "BlobReference":
        if not isinstance(other, str):
            return NotImplemented
        return BlobReference(str.__add__(other, self))

    def __repr__(self) -> str:
        return f"BlobReference({str.__repr__(self)})"


def current_name_scope() -> str:
    """The current name scope: ``""`` or a prefix ending in ``/`` (``"a/b/"``)."""
    return NAME_SCOPE.get()


def scoped_name(name: str) -> BlobReference:
    """``name`` prefixed with the current name scope; a BlobReference is returned as is."""
    if isinstance(name, BlobReference):
        return name
    if not isinstance(name, str):
        raise TypeError(f"a blob name must be a str, not {type(name).__name__}")
    return BlobReference(NAME_SCOPE.get() + name)


def current_device_scope() -> "DeviceOption | None":
    """The DeviceOption of the innermost DeviceScope, or None outside any."""
    return DEVICE_SCOPE.get()


@dataclass(frozen=True)
class DeviceOption:
    """Where an operator runs (Caffe2's ``DeviceOption`` protobuf), as a frozen value.

    ``device_type`` is a name (``"cpu"``, ``"gpu"``...); this build runs ``"cpu"``
    only and refuses other devices when an op is built. ``node_name`` None
    means unset (a nested DeviceScope then inherits the outer one's).
    """

    device_type: str = "cpu"
    device_id: int = 0
    node_name: str | None = None
    extra_info: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.device_type, str) or not self.device_type:
            raise TypeError("DeviceOption.device_type must be a non-empty str "
                            f"(\"cpu\", \"gpu\"...), not {self.device_type!r}")
        if isinstance(self.device_id, bool) or not isinstance(self.device_id, int):
            raise TypeError(f"DeviceOption.device_id must be an int, not "
                            f"{type(self.device_id).__name__}")
        if self.device_id < 0:
            raise ValueError(f"DeviceOption.device_id must be >= 0, got {self.device_id}")
        if self.node_name is not None and not isinstance(self.node_name, str):
            raise TypeError(f"DeviceOption.node_name must be a str or None, not "
                            f"{type(self.node_name).__name__}")
        if isinstance(self.extra_info, str):
            raise TypeError("DeviceOption.extra_info must be a sequence of str, not a str")
        extra_info = tuple(self.extra_info)
        if not all(isinstance(item, str) for item in extra_info):
            raise TypeError("DeviceOption.extra_info must hold str entries only")
        object.__setattr__(self, "extra_info", extra_info)

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt through the constructor, which checks every field.
        return type(self), (self.device_type, self.device_id, self.node_name, self.extra_info)

    def to_dict(self) -> dict[str, Any]:
        return {"device_type": self.device_type, "device_id": self.device_id,
                "node_name": self.node_name, "extra_info": list(self.extra_info)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DeviceOption":
        if not isinstance(d, dict):
            raise TypeError(f"DeviceOption.from_dict takes a dict, not {type(d).__name__}")
        unknown = set(d) - {"device_type", "device_id", "node_name", "extra_info"}
        if unknown:
            raise ValueError(f"unknown DeviceOption fields: {sorted(unknown)}")
        return cls(device_type=d.get("device_type", "cpu"), device_id=d.get("device_id", 0),
                   node_name=d.get("node_name"), extra_info=tuple(d.get("extra_info", ())))
