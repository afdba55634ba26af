"""Per-thread stacks of active contexts (Caffe2's ``context`` module, reduced).

``core.Net`` asks for the innermost ``NetBuilder`` (its name prefixes new nets) without
importing ``net_builder``, which imports ``core``: both use these stacks by kind.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["innermost", "pop", "push"]

_STACKS = threading.local()


def _stack(kind: str) -> list[Any]:
    stacks: dict[str, list[Any]] | None = getattr(_STACKS, "stacks", None)
    if stacks is None:
        stacks = {}
        _STACKS.stacks = stacks
    return stacks.setdefault(kind, [])


def push(kind: str, value: Any) -> None:
    """Make ``value`` the innermost context of ``kind`` in this thread."""
    _stack(kind).append(value)


def pop(kind: str, value: Any) -> None:
    """Leave ``value``, which must be the innermost context of ``kind``."""
    stack = _stack(kind)
    if not stack or stack[-1] is not value:
        raise RuntimeError(f"{kind} context {value!r} left out of order (innermost is "
                           f"{stack[-1] if stack else None!r})")
    stack.pop()


def innermost(kind: str) -> Any:
    """The innermost active context of ``kind`` in this thread, or None."""
    stack = _stack(kind)
    return stack[-1] if stack else None
