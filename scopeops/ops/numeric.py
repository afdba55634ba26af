"""Registers the numeric operators: elementwise maths, reductions and MatMul
(:mod:`scopeops.ops.math`), and activations, FC and losses (:mod:`scopeops.ops.nn`)."""

from scopeops.ops import math, nn

__all__ = ["math", "nn"]
