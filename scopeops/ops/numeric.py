"""Registers the numeric operators: elementwise maths, reductions and MatMul
(:mod:`scopeops.ops.math`); activations, FC, losses and the LSTM unit
(:mod:`scopeops.ops.nn`); fills (:mod:`scopeops.ops.fills`); shape operators
(:mod:`scopeops.ops.tensor_ops`); Iter and LearningRate (:mod:`scopeops.ops.learning`);
Print and ZeroGradient (:mod:`scopeops.ops.utility`)."""

from scopeops.ops import fills, learning, math, nn, tensor_ops, utility

__all__ = ["fills", "learning", "math", "nn", "tensor_ops", "utility"]
