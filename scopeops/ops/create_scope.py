"""CreateScope and HasScope: the operators that manage a scope blob's stack."""

from __future__ import annotations

from typing import Any

import numpy as np

from scopeops._stack import WorkspaceStack
from scopeops.ops.base import SHOULD_NOT_DO_GRADIENT, Operator, register

__all__ = ["CreateScopeOp", "HasScopeOp", "scope_stack"]


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
    __slots__ = ()

    def run(self) -> None:
        scope_stack(self.output_blob(0)).clear()


@register("HasScope", inputs=1, outputs=1, gradient=SHOULD_NOT_DO_GRADIENT,
          doc="Checks whether the scope blob has any saved scopes left: outputs a bool "
              "tensor of shape (1,).")
class HasScopeOp(Operator):
    __slots__ = ()

    def scope(self) -> WorkspaceStack:
        """The stack in the input scope blob (BlobTypeError if it holds something else)."""
        return self.input_blob(0).get(WorkspaceStack)

    def run(self) -> None:
        stack = self.scope()
        self.output(0, (1,), np.bool_)[0] = not stack.empty()
