"""Gradients: the backward-pass builder and the gradient makers of Do, If and While.

:func:`add_gradient_ops` appends a net's backward pass (Caffe2
``Net.AddGradientOperators``). Gradient makers of the numeric operators live beside
them in :mod:`scopeops.ops`; those of the control operators live in
:mod:`scopeops.gradients.control` and are registered when this package is imported.
"""

from scopeops.gradients import control  # registers the Do, If and While gradient makers
from scopeops.gradients.builder import (
    GradientContext,
    add_gradient_ops,
    backward_ops,
    grad_name,
    insert_saves,
)

__all__ = [
    "GradientContext",
    "add_gradient_ops",
    "backward_ops",
    "control",
    "grad_name",
    "insert_saves",
]
