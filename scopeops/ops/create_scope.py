"""CreateScope and HasScope: the operators that manage a scope blob's stack.

Which stacks are looked after is recorded here too: a stack that a CreateScope
clears or a gradient Do pops is emptied again by the nets that use it, so a
forward Do never warns that it only grows (see :class:`scopeops.ops.DoOp`).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from scopeops._stack import WorkspaceStack
from scopeops.ops import _dispatch
from scopeops.ops.base import SHOULD_NOT_DO_GRADIENT, Operator, register

__all__ = ["CreateScopeOp", "HasScopeOp", "mark_stack_looked_after", "scope_stack",
           "stack_is_looked_after"]

# Weak: the record never keeps a stack (and its workspaces) alive.
_LOOKED_AFTER: "weakref.WeakSet[WorkspaceStack]" = weakref.WeakSet()


def mark_stack_looked_after(stack: WorkspaceStack) -> None:
    """Record that something empties ``stack`` (a CreateScope, a gradient Do), or that
    its growth was already reported: no growth warning for it from now on."""
    _LOOKED_AFTER.add(stack)


def stack_is_looked_after(stack: WorkspaceStack) -> bool:
    """True once :func:`mark_stack_looked_after` was called for ``stack``."""
    return stack in _LOOKED_AFTER


def scope_stack(blob: Any) -> WorkspaceStack:
    """The WorkspaceStack in a scope blob, created there if the blob holds none."""
    if not blob.is_empty():
        value = blob.get()
        if isinstance(value, WorkspaceStack):
            return value
    stack = WorkspaceStack()
    blob.set(stack)
    return stack


@register("CreateScope", inputs=0, outputs=1, gradient=SHOULD_NOT_DO_GRADIENT,
          doc="Initialises and outputs an empty scope (a WorkspaceStack) used by Do to "
              "store local blobs. An existing stack in the output is kept (same object) "
              "and cleared, so its workspaces are reused.")
class CreateScopeOp(Operator):
    __slots__ = ("_marked",)

    def setup(self) -> None:
        self._marked: WorkspaceStack | None = None

    def run(self) -> None:
        stack = scope_stack(self.output_blob(0))
        stack.clear()
        if stack is not self._marked:
            mark_stack_looked_after(stack)
            self._marked = stack


@register("HasScope", inputs=1, outputs=1, gradient=SHOULD_NOT_DO_GRADIENT,
          doc="Checks whether the scope blob has any saved scopes left: outputs a bool "
              "tensor of shape (1,).")
class HasScopeOp(Operator):
    __slots__ = ()
    _fast_path = _dispatch.HasScopeKernel()

    def scope(self) -> WorkspaceStack:
        """The stack in the input scope blob (BlobTypeError if it holds something else)."""
        return self.input_blob(0).get(WorkspaceStack)

    def run(self) -> None:
        stack = self.scope()
        self.output(0, (1,), np.bool_)[0] = not stack.empty()
