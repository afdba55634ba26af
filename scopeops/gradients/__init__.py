"""Gradients: the backward-pass builder and the gradient makers of Do, If and While.

:func:`add_gradient_ops` appends a net's backward pass (Caffe2
``Net.AddGradientOperators``); :func:`backward_ops` builds one without changing
anything (Caffe2 ``GradientRegistry.GetBackwardPass``). Both follow Caffe2's gradient
IR and take the hooks a compatibility layer needs (gradient functions in Caffe2's
protocol, the seed gradients' names, Caffe2's marking of gradient ops, its
broadcasting rule); :mod:`scopeops.gradients.builder` describes them. Gradient
makers of the numeric operators live beside them in :mod:`scopeops.ops`; those of
the control operators live in :mod:`scopeops.gradients.control` and are registered
when this package is imported.
"""

from scopeops.gradients import control  # registers the Do, If and While gradient makers
from scopeops.gradients.builder import (
    ALWAYS_DIFFERENTIATED,
    BROADCAST_RULES,
    NO_ARGUMENT_COPY,
    UNMARKED_MAKER_TYPES,
    BackwardPass,
    GradientContext,
    GradientFunction,
    add_gradient_ops,
    backward_ops,
    caffe2_seed_name,
    grad_name,
    insert_saves,
)

__all__ = [
    "ALWAYS_DIFFERENTIATED",
    "BROADCAST_RULES",
    "BackwardPass",
    "GradientContext",
    "GradientFunction",
    "NO_ARGUMENT_COPY",
    "UNMARKED_MAKER_TYPES",
    "add_gradient_ops",
    "backward_ops",
    "caffe2_seed_name",
    "control",
    "grad_name",
    "insert_saves",
]
