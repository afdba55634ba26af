"""Operator classes, the registry and schemas.

Importing this package registers every built-in operator type.
"""

from scopeops.ops import numeric  # noqa: F401  - registers the numeric operators and gradients
from scopeops.ops.base import (
    NO_GRADIENT,
    SHOULD_NOT_DO_GRADIENT,
    Arg,
    Operator,
    Schema,
    gradient,
    register,
    registered_operators,
    schema,
)
from scopeops.ops.catalogue import catalogue
from scopeops.ops.control import DoOp, IfOp, WhileOp
from scopeops.ops.create_scope import CreateScopeOp, HasScopeOp
from scopeops.ops.executor import NetExecutor

__all__ = [
    "Arg",
    "CreateScopeOp",
    "DoOp",
    "HasScopeOp",
    "IfOp",
    "NO_GRADIENT",
    "NetExecutor",
    "Operator",
    "SHOULD_NOT_DO_GRADIENT",
    "Schema",
    "WhileOp",
    "catalogue",
    "gradient",
    "register",
    "registered_operators",
    "schema",
]
