"""Neural-network operators: activations, Softmax, FC and losses, with their gradients.

Conventions as in :mod:`scopeops.ops.math`: outputs go to reused buffers; gradient
operators take the output gradient first, then the forward blobs they need. The
activation gradients read the forward *output* (``ReluGradient(dY, Y)``), so the
activations work in place without the backward pass keeping a copy of the input.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scopeops.ops.base import Arg, gradient, register
from scopeops.ops.numeric_base import NumericOperator, grad_dtype

__all__ = [
    "AveragedLossOp", "FCOp", "ReluOp", "SigmoidOp", "SoftmaxOp", "SquaredL2DistanceOp",
    "TanhOp",
]


# -- activations ------------------------------------------------------------------------------


@register("Relu", inputs=1, outputs=1, allow_inplace=True, doc="Y = max(X, 0), elementwise.")
class ReluOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        x = self.numeric_input(0)
        np.maximum(x, 0, out=self.output(0, x.shape, x.dtype))


@register("Sigmoid", inputs=1, outputs=1, allow_inplace=True,
          doc="Y = 1 / (1 + exp(-X)), elementwise.")
class SigmoidOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        x = self.float_input(0)
        y = self.output(0, x.shape, x.dtype)
        np.negative(x, out=y)
        with np.errstate(over="ignore"):        # exp(-x) = inf gives the exact limit 0
            np.exp(y, out=y)
        np.add(y, 1, out=y)
        np.reciprocal(y, out=y)


@register("Tanh", inputs=1, outputs=1, allow_inplace=True, doc="Y = tanh(X), elementwise.")
class TanhOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        x = self.float_input(0)
        np.tanh(x, out=self.output(0, x.shape, x.dtype))


def _check_like(op: NumericOperator, dy: np.ndarray, y: np.ndarray) -> None:
    if dy.shape != y.shape:
        names = op.definition.inputs
        raise op.shape_error(f"the output gradient (blob {names[0]}) has shape {dy.shape}, "
                             f"but the output (blob {names[1]}) has shape {y.shape}")


@register("ReluGradient", inputs=2, outputs=1, allow_inplace=True,
          doc="(dY, Y) -> dX = dY where Y > 0, else 0.")
class ReluGradientOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        dy = self.tensor_input(0)
        y = self.tensor_input(1)
        _check_like(self, dy, y)
        positive = self.scratch("positive", y.shape, np.bool_)
        np.greater(y, 0, out=positive)
        np.multiply(dy, positive, out=self.output(0, y.shape, grad_dtype(y, dy)))


@register("SigmoidGradient", inputs=2, outputs=1, allow_inplace=True,
          doc="(dY, Y) -> dX = dY * Y * (1 - Y).")
class SigmoidGradientOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        dy = self.tensor_input(0)
        y = self.float_input(1)
        _check_like(self, dy, y)
        slope = self.scratch("slope", y.shape, y.dtype)
        np.subtract(1, y, out=slope)
        np.multiply(slope, y, out=slope)
        np.multiply(dy, slope, out=self.output(0, y.shape, y.dtype))


@register("TanhGradient", inputs=2, outputs=1, allow_inplace=True,
          doc="(dY, Y) -> dX = dY * (1 - Y^2).")
class TanhGradientOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        dy = self.tensor_input(0)
        y = self.float_input(1)
        _check_like(self, dy, y)
        slope = self.scratch("slope", y.shape, y.dtype)
        np.multiply(y, y, out=slope)
        np.subtract(1, slope, out=slope)
        np.multiply(dy, slope, out=self.output(0, y.shape, y.dtype))


def _output_based_maker(gradient_type: str) -> Any:
    def make(g: Any) -> list[Any]:
        return [g.make(gradient_type, [g.GO(0), g.O(0)], [g.GI(0)])]

    make.__name__ = f"{gradient_type}_maker"
    return make


for _type in ("Relu", "Sigmoid", "Tanh"):
    gradient(_type)(_output_based_maker(f"{_type}Gradient"))


# -- Softmax ----------------------------------------------------------------------------------


def _softmax_axis(op: NumericOperator, x: np.ndarray) -> int:
    axis = op.args["axis"]
    if not -x.ndim <= axis < x.ndim:
        raise op.shape_error(f"axis {axis} is out of range for input (blob "
                             f"{op.definition.inputs[0]}) of shape {x.shape}")
    return axis % x.ndim


def _keepdims_shape(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    return shape[:axis] + (1,) + shape[axis + 1:]


@register("Softmax", inputs=1, outputs=1, allow_inplace=True,
          args={"axis": Arg(int, -1, doc="the axis normalised over (default: the last)")},
          doc="Y = exp(X) / sum(exp(X)) along one axis (the last by default), computed "
              "stably by subtracting the maximum first.")
class SoftmaxOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        x = self.float_input(0)
        axis = _softmax_axis(self, x)
        y = self.output(0, x.shape, x.dtype)
        if x.size == 0:
            return
        reduced = self.scratch("reduced", _keepdims_shape(x.shape, axis), x.dtype)
        np.max(x, axis=axis, keepdims=True, out=reduced)
        np.subtract(x, reduced, out=y)
        np.exp(y, out=y)
        np.sum(y, axis=axis, keepdims=True, out=reduced)
        np.divide(y, reduced, out=y)


@register("SoftmaxGradient", inputs=2, outputs=1, allow_inplace=True,
          args={"axis": Arg(int, -1)},
          doc="(dY, Y) -> dX = Y * (dY - sum(dY * Y)) along the softmax axis.")
class SoftmaxGradientOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        dy = self.tensor_input(0)
        y = self.float_input(1)
        _check_like(self, dy, y)
        axis = _softmax_axis(self, y)
        dtype = np.result_type(dy, y)
        product = self.scratch("product", y.shape, dtype)
        dot = self.scratch("dot", _keepdims_shape(y.shape, axis), dtype)
        np.multiply(dy, y, out=product)
        np.sum(product, axis=axis, keepdims=True, out=dot)
        np.subtract(dy, dot, out=product)
        np.multiply(product, y, out=self.output(0, y.shape, y.dtype))


@gradient("Softmax")
def _softmax_gradient(g: Any) -> list[Any]:
    return [g.make("SoftmaxGradient", [g.GO(0), g.O(0)], [g.GI(0)],
                   axis=g.op.args.get("axis", -1))]


# -- FC ---------------------------------------------------------------------------------------


def _fc_shapes(op: NumericOperator, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> None:
    names = op.definition.inputs
    if x.ndim != 2 or w.ndim != 2:
        raise op.shape_error(f"needs a 2-D X (blob {names[0]}, shape {x.shape}) and a 2-D W "
                             f"(blob {names[1]}, shape {w.shape})")
    if x.shape[1] != w.shape[1]:
        raise op.shape_error(f"X (blob {names[0]}) is {x.shape} and W (blob {names[1]}) is "
                             f"{w.shape}: W must be (outputs, {x.shape[1]})")
    if b is not None and b.shape != (w.shape[0],):
        raise op.shape_error(f"b (blob {names[2]}) has shape {b.shape}, expected "
                             f"({w.shape[0]},) to match W (blob {names[1]}) {w.shape}")


@register("FC", inputs=3, outputs=1, allow_inplace=True,
          doc="Y = X @ W.T + b: a fully connected layer with X (N, K), W (M, K), b (M,).")
class FCOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        x = self.tensor_input(0)
        w = self.tensor_input(1)
        b = self.tensor_input(2)
        _fc_shapes(self, x, w, b)
        y = self.output(0, (x.shape[0], w.shape[0]), np.result_type(x, w, b))
        np.matmul(x, w.T, out=y)
        np.add(y, b, out=y)


@register("FCGradient", inputs=3, outputs=3, allow_inplace=True,
          doc="(dY, X, W) -> (dX, dW, db) for FC: dX = dY @ W, dW = dY.T @ X, "
              "db = dY summed over rows.")
class FCGradientOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        dy, x, w = self.inputs_read_before_writing()
        _fc_shapes(self, x, w, None)
        if dy.shape != (x.shape[0], w.shape[0]):
            raise self.shape_error(f"the output gradient (blob {self.definition.inputs[0]}) "
                                   f"has shape {dy.shape}, expected {(x.shape[0], w.shape[0])}")
        np.matmul(dy, w, out=self.output(0, x.shape, grad_dtype(x, dy)))
        np.matmul(dy.T, x, out=self.output(1, w.shape, grad_dtype(w, dy)))
        np.sum(dy, axis=0, out=self.output(2, (w.shape[0],), dy.dtype))


@gradient("FC")
def _fc_gradient(g: Any) -> list[Any]:
    return [g.make("FCGradient", [g.GO(0), g.I(0), g.I(1)], [g.GI(0), g.GI(1), g.GI(2)])]


# -- losses -----------------------------------------------------------------------------------


@register("AveragedLoss", inputs=1, outputs=1, allow_inplace=True,
          doc="Y = the mean of all elements of X, as a scalar tensor of shape ().")
class AveragedLossOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        x = self.float_input(0)
        np.mean(x, out=self.output(0, (), x.dtype))


@gradient("AveragedLoss")
def _averaged_loss_gradient(g: Any) -> list[Any]:
    return [g.make("SumElementsGradient", [g.GO(0), g.I(0)], [g.GI(0)], average=True)]


@register("SquaredL2Distance", inputs=2, outputs=1, allow_inplace=True,
          doc="(X, Y) -> D with D[i] = 0.5 * sum((X[i] - Y[i])^2) over all but the first axis: "
              "shape (N,) for inputs of the same shape (N, ...).")
class SquaredL2DistanceOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        x = self.float_input(0)
        y = self.float_input(1)
        _check_pair(self, x, y)
        dtype = x.dtype if x.dtype == y.dtype else np.result_type(x, y)
        diff = self.scratch("diff", x.shape, dtype)
        np.subtract(x, y, out=diff)
        np.multiply(diff, diff, out=diff)
        out = self.output(0, x.shape[:1], dtype)
        np.sum(diff, axis=tuple(range(1, x.ndim)), out=out)
        np.multiply(out, 0.5, out=out)


def _check_pair(op: NumericOperator, x: np.ndarray, y: np.ndarray) -> None:
    names = op.definition.inputs
    if x.ndim == 0 or x.shape != y.shape:
        raise op.shape_error(f"needs two inputs of the same shape (N, ...), got X (blob "
                             f"{names[0]}) of shape {x.shape} and Y (blob {names[1]}) of shape "
                             f"{y.shape}")


@register("SquaredL2DistanceGradient", inputs=3, outputs=2, allow_inplace=True,
          doc="(dD, X, Y) -> (dX, dY): dX = (X - Y) * dD per row, dY = -dX.")
class SquaredL2DistanceGradientOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        dd, x, y = self.inputs_read_before_writing()
        _check_pair(self, x, y)
        if dd.shape != x.shape[:1]:
            raise self.shape_error(f"the output gradient (blob {self.definition.inputs[0]}) "
                                   f"has shape {dd.shape}, expected {x.shape[:1]}")
        dx = self.output(0, x.shape, grad_dtype(x, dd))
        np.subtract(x, y, out=dx)
        np.multiply(dx, dd.reshape(dd.shape + (1,) * (x.ndim - 1)), out=dx)
        np.negative(dx, out=self.output(1, y.shape, grad_dtype(y, dd)))


@gradient("SquaredL2Distance")
def _squared_l2_distance_gradient(g: Any) -> list[Any]:
    return [g.make("SquaredL2DistanceGradient", [g.GO(0), g.I(0), g.I(1)],
                   [g.GI(0), g.GI(1)])]
