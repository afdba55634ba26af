"""Neural-network operators: activations, Softmax, FC, losses and distances, the LSTM unit,
with their gradients.

Conventions as in :mod:`scopeops.ops.math`: outputs go to reused buffers; gradient
operators follow Caffe2's makers, taking the forward blobs they need and then the
output gradient(s). The activation gradients read the forward *output*
(``ReluGradient(Y, dY)``), so the activations work in place without the backward
pass keeping a copy of the input.
"""

from __future__ import annotations

from math import prod
from typing import Any

import numpy as np

from scopeops.errors import OperatorError
from scopeops.ops import _dispatch
from scopeops.ops.base import Arg, gradient, register
from scopeops.ops.math import SumElementsGradientOp
from scopeops.ops.numeric_base import NumericOperator, check_ufunc, grad_dtype, present_args

__all__ = [
    "AveragedLossOp", "DotProductOp", "FCOp", "LSTMUnitOp", "MakeTwoClassOp", "ReluOp",
    "SigmoidOp", "SoftmaxOp", "SoftmaxWithLossOp", "SquaredL2DistanceOp", "TanhOp",
]



def _required_output_gradient(g: Any, i: int) -> str:
    """The gradient of output ``i``; OperatorError (Caffe2's words) when it has none."""
    found: str | None = g.GO(i)
    if found is None:
        raise OperatorError(f"{g.op.type}: Gradient of output {g.op.outputs[i]} is not "
                            f"provided! (its gradient needs the gradients of all of "
                            f"{', '.join(g.op.outputs)})")
    return found


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
    _fast_path = _dispatch.UnaryUfunc(np.tanh, "float")

    def run(self) -> None:
        x = self.float_input(0)
        np.tanh(x, out=self.output(0, x.shape, x.dtype))


def _output_and_gradient(op: NumericOperator, floats: bool = True
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(Y, dY) of an activation gradient ``(Y, dY) -> dX``, their shapes checked."""
    y = op.float_input(0) if floats else op.tensor_input(0)
    dy = op.tensor_input(1)
    if dy.shape != y.shape:
        names = op.definition.inputs
        raise op.shape_error(f"the output gradient (blob {names[1]}) has shape {dy.shape}, "
                             f"but the output (blob {names[0]}) has shape {y.shape}")
    return y, dy


@register("ReluGradient", inputs=2, outputs=1, allow_inplace=True,
          doc="(Y, dY) -> dX = dY where Y > 0, else 0.")
class ReluGradientOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        y, dy = _output_and_gradient(self, floats=False)
        positive = self.scratch("positive", y.shape, np.bool_)
        np.greater(y, 0, out=positive)
        np.multiply(dy, positive, out=self.output(0, y.shape, grad_dtype(y, dy)))


@register("SigmoidGradient", inputs=2, outputs=1, allow_inplace=True,
          doc="(Y, dY) -> dX = dY * Y * (1 - Y).")
class SigmoidGradientOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        y, dy = _output_and_gradient(self)
        slope = self.scratch("slope", y.shape, y.dtype)
        np.subtract(1, y, out=slope)
        np.multiply(slope, y, out=slope)
        np.multiply(dy, slope, out=self.output(0, y.shape, y.dtype))


@register("TanhGradient", inputs=2, outputs=1, allow_inplace=True,
          doc="(Y, dY) -> dX = dY * (1 - Y^2).")
class TanhGradientOp(NumericOperator):
    __slots__ = ()
    _fast_path = _dispatch.TanhGradientKernel()

    def run(self) -> None:
        y, dy = _output_and_gradient(self)
        slope = self.scratch("slope", y.shape, y.dtype)
        np.multiply(y, y, out=slope)
        np.subtract(1, slope, out=slope)
        np.multiply(dy, slope, out=self.output(0, y.shape, y.dtype))


def _output_based_maker(gradient_type: str) -> Any:
    def make(g: Any) -> list[Any]:
        return [g.make(gradient_type, [g.O(0), g.GO(0)], [g.GI(0)])]

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
          args={"axis": Arg(int, -1, doc="the softmax axis")},
          doc="(Y, dY) -> dX = Y * (dY - sum(dY * Y)) along the softmax axis.")
class SoftmaxGradientOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        y, dy = _output_and_gradient(self)
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
    return [g.make("SoftmaxGradient", [g.O(0), g.GO(0)], [g.GI(0)], **present_args(g, "axis"))]


# -- FC ---------------------------------------------------------------------------------------

FC_ARGS = {
    "axis": Arg(int, 1, doc="X is read as a matrix (prod(dims[:axis]), prod(dims[axis:]))"),
    "axis_w": Arg(int, 1, doc="W is read as a matrix (prod(dims[:axis_w]), "
                              "prod(dims[axis_w:]))"),
}


def _matrix_dims(op: NumericOperator, x: np.ndarray, axis: int, index: int,
                 role: str) -> tuple[int, int]:
    """(rows, columns) of ``x`` read as a matrix split at ``axis``, as Caffe2's FC does."""
    if not -x.ndim <= axis < x.ndim:
        raise op.shape_error(f"axis {axis} is out of range for {role} (blob "
                             f"{op.definition.inputs[index]}) of shape {x.shape}")
    axis %= x.ndim
    return prod(x.shape[:axis]), prod(x.shape[axis:])


def _fc_dims(op: NumericOperator, x: np.ndarray, w: np.ndarray,
             w_index: int = 1, x_index: int = 0) -> tuple[int, int, int, tuple[int, ...]]:
    """(M, K, N, Y's shape) of an FC with X (M, K) and W (N, K) after reading as matrices."""
    names = op.definition.inputs
    axis, axis_w = op.args["axis"], op.args["axis_w"]
    m, k = _matrix_dims(op, x, axis, x_index, "X")
    n, k_w = _matrix_dims(op, w, axis_w, w_index, "W")
    if k != k_w:
        raise op.shape_error(f"X (blob {names[x_index]}) is {x.shape} and W (blob "
                             f"{names[w_index]}) is {w.shape}: W must be (outputs, {k}) "
                             f"(axis {axis}, axis_w {axis_w})")
    return m, k, n, x.shape[:axis % x.ndim] + (n,)


@register("FC", inputs=3, outputs=1, allow_inplace=True, args=dict(FC_ARGS),
          doc="Y = X @ W.T + b: a fully connected layer with X (N, K), W (M, K), b (M,). X "
              "and W of more dims are read as matrices split at `axis` and `axis_w`; Y has "
              "X's dims before `axis` followed by M.")
class FCOp(NumericOperator):
    __slots__ = ()
    _fast_path = _dispatch.FCKernel()

    def run(self) -> None:
        x = self.tensor_input(0)
        w = self.tensor_input(1)
        b = self.tensor_input(2)
        m, k, n, shape = _fc_dims(self, x, w)
        names = self.definition.inputs
        if b.shape != (n,):
            raise self.shape_error(f"b (blob {names[2]}) has shape {b.shape}, expected "
                                   f"({n},) to match W (blob {names[1]}) {w.shape}")
        y = self.output(0, shape, np.result_type(x, w, b))
        np.matmul(x.reshape(m, k), w.reshape(n, k).T, out=y.reshape(m, n))
        np.add(y, b, out=y)


@register("FCGradient", inputs=3, outputs=(2, 3), allow_inplace=True, args=dict(FC_ARGS),
          doc="(X, W, dY) -> (dW, db[, dX]) for FC: dW = dY.T @ X, db = dY summed over rows, "
              "dX = dY @ W (only with a third output), each in its input's shape.")
class FCGradientOp(NumericOperator):
    __slots__ = ()
    _fast_path = _dispatch.FCGradientKernel()

    def run(self) -> None:
        x, w, dy = self.inputs_read_before_writing()
        m, k, n, shape = _fc_dims(self, x, w)
        if dy.shape != shape:
            raise self.shape_error(f"the output gradient (blob {self.definition.inputs[2]}) "
                                   f"has shape {dy.shape}, expected {shape}")
        # Both products are checked before any output changes (an output may be an input).
        check_ufunc(np.matmul, (dy.dtype, x.dtype), grad_dtype(w, dy))
        if len(self.definition.outputs) == 3:
            check_ufunc(np.matmul, (dy.dtype, w.dtype), grad_dtype(x, dy))
        dy2 = dy.reshape(m, n)
        dw = self.output(0, w.shape, grad_dtype(w, dy))
        np.matmul(dy2.T, x.reshape(m, k), out=dw.reshape(n, k))
        np.sum(dy2, axis=0, out=self.output(1, (n,), dy.dtype))
        if len(self.definition.outputs) == 3:
            dx = self.output(2, x.shape, grad_dtype(x, dy))
            np.matmul(dy2, w.reshape(n, k), out=dx.reshape(m, k))


@gradient("FC")
def _fc_gradient(g: Any) -> list[Any]:
    return [g.make("FCGradient", [g.I(0), g.I(1), g.GO(0)], [g.GI(1), g.GI(2), g.GI(0)],
                   **present_args(g, "axis", "axis_w"))]


# -- losses and distances ---------------------------------------------------------------------


@register("AveragedLoss", inputs=1, outputs=1, allow_inplace=True,
          doc="Y = the mean of all elements of X, as a scalar tensor of shape ().")
class AveragedLossOp(NumericOperator):
    __slots__ = ()
    _fast_path = _dispatch.AveragedLossKernel()

    def run(self) -> None:
        x = self.float_input(0)
        np.mean(x, out=self.output(0, (), x.dtype))


@register("AveragedLossGradient", inputs=2, outputs=1, allow_inplace=True,
          doc="(X, dY) -> dX: the scalar dY divided by X's size, in X's shape.")
class AveragedLossGradientOp(SumElementsGradientOp):
    __slots__ = ()
    averaging = True


@gradient("AveragedLoss")
def _averaged_loss_gradient(g: Any) -> list[Any]:
    return [g.make("AveragedLossGradient", [g.I(0), g.GO(0)], [g.GI(0)])]


def _check_pair(op: NumericOperator, x: np.ndarray, y: np.ndarray) -> None:
    names = op.definition.inputs
    if x.ndim == 0 or x.shape != y.shape:
        raise op.shape_error(f"needs two inputs of the same shape (N, ...), got X (blob "
                             f"{names[0]}) of shape {x.shape} and Y (blob {names[1]}) of shape "
                             f"{y.shape}")


def _check_row_gradient(op: NumericOperator, dd: np.ndarray, x: np.ndarray) -> None:
    if dd.shape != x.shape[:1]:
        raise op.shape_error(f"the output gradient (blob {op.definition.inputs[2]}) has shape "
                             f"{dd.shape}, expected {x.shape[:1]}")


def _per_row(dd: np.ndarray, ndim: int) -> np.ndarray:
    """``dd`` (N,) shaped to multiply rows of an (N, ...) tensor of ``ndim`` dims."""
    return dd.reshape(dd.shape + (1,) * (ndim - 1))


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


@register("SquaredL2DistanceGradient", inputs=3, outputs=2, allow_inplace=True,
          doc="(X, Y, dD) -> (dX, dY): dX = (X - Y) * dD per row, dY = -dX.")
class SquaredL2DistanceGradientOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        x, y, dd = self.inputs_read_before_writing()
        _check_pair(self, x, y)
        _check_row_gradient(self, dd, x)
        dx = self.output(0, x.shape, grad_dtype(x, dd))
        np.subtract(x, y, out=dx)
        np.multiply(dx, _per_row(dd, x.ndim), out=dx)
        np.negative(dx, out=self.output(1, y.shape, grad_dtype(y, dd)))


@gradient("SquaredL2Distance")
def _squared_l2_distance_gradient(g: Any) -> list[Any]:
    return [g.make("SquaredL2DistanceGradient", [g.I(0), g.I(1), g.GO(0)],
                   [g.GI(0), g.GI(1)])]


@register("DotProduct", inputs=2, outputs=1, allow_inplace=True,
          doc="(X, Y) -> D with D[i] = sum(X[i] * Y[i]) over all but the first axis: shape "
              "(N,) for inputs of the same shape (N, ...).")
class DotProductOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        x = self.float_input(0)
        y = self.float_input(1)
        _check_pair(self, x, y)
        dtype = x.dtype if x.dtype == y.dtype else np.result_type(x, y)
        product = self.scratch("product", x.shape, dtype)
        np.multiply(x, y, out=product)
        np.sum(product, axis=tuple(range(1, x.ndim)), out=self.output(0, x.shape[:1], dtype))


@register("DotProductGradient", inputs=3, outputs=2, allow_inplace=True,
          doc="(X, Y, dD) -> (dX, dY): dX = dD * Y, dY = dD * X per row.")
class DotProductGradientOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        x, y, dd = self.inputs_read_before_writing()
        _check_pair(self, x, y)
        _check_row_gradient(self, dd, x)
        rows = _per_row(dd, x.ndim)
        np.multiply(y, rows, out=self.output(0, x.shape, grad_dtype(x, dd)))
        np.multiply(x, rows, out=self.output(1, y.shape, grad_dtype(y, dd)))


@gradient("DotProduct")
def _dot_product_gradient(g: Any) -> list[Any]:
    return [g.make("DotProductGradient", [g.I(0), g.I(1), g.GO(0)], [g.GI(0), g.GI(1)])]


@register("MakeTwoClass", inputs=1, outputs=1, allow_inplace=True,
          doc="Y[..., 0] = 1 - X, Y[..., 1] = X: turns probabilities X into two-column "
              "complementary probabilities of shape X.shape + (2,).")
class MakeTwoClassOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        x = self.float_input(0)
        y = self.output(0, x.shape + (2,), x.dtype)
        np.copyto(y[..., 1], x)
        np.subtract(1, x, out=y[..., 0])


@register("MakeTwoClassGradient", inputs=1, outputs=1, allow_inplace=True,
          doc="(dY) -> dX = dY[..., 1] - dY[..., 0], for dY whose last dim is 2.")
class MakeTwoClassGradientOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        dy = self.tensor_input(0)
        if dy.ndim == 0 or dy.shape[-1] != 2:
            raise self.shape_error(f"the output gradient (blob {self.definition.inputs[0]}) "
                                   f"must have a last dim of 2, got shape {dy.shape}")
        negative, positive = dy[..., 0], dy[..., 1]
        dx = self.output(0, dy.shape[:-1], dy.dtype)
        np.subtract(positive, negative, out=dx)


@gradient("MakeTwoClass")
def _make_two_class_gradient(g: Any) -> list[Any]:
    return [g.make("MakeTwoClassGradient", [g.GO(0)], [g.GI(0)])]


# -- SoftmaxWithLoss --------------------------------------------------------------------------


def _class_matrix(op: NumericOperator, x: np.ndarray) -> tuple[int, int, int]:
    """(canonical axis, N, D): X read as N rows of D classes, split at ``axis``."""
    axis = op.args["axis"]
    if not -x.ndim <= axis < x.ndim:
        raise op.shape_error(f"axis {axis} is out of range for the logits (blob "
                             f"{op.definition.inputs[0]}) of shape {x.shape}")
    axis %= x.ndim
    return axis, int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:]))


def _labels(op: NumericOperator, t: np.ndarray, axis: int, n: int, d: int) -> np.ndarray:
    """The labels as (N,) ints, or with ``label_prob`` as (N, D) probabilities; checked."""
    name = op.definition.inputs[1]
    if op.args["label_prob"]:
        if t.dtype.kind != "f" or t.ndim < 2 or t.size != n * d \
                or int(np.prod(t.shape[:axis])) != n:
            raise op.shape_error(f"with label_prob, the labels (blob {name}) must be {n} x {d} "
                                 f"float probabilities, got {t.dtype} of shape {t.shape}")
        probs = t.reshape(n, d)
        if np.any(probs < 0):
            raise op.shape_error(f"label prob seems incorrect: label prob values in blob "
                                 f"{name} must be nonnegative")
        totals = probs.sum(axis=1)
        if np.any(np.abs(totals - 1) >= 1e-5):
            raise op.shape_error(f"label prob seems incorrect: the rows of blob {name} must "
                                 f"sum to 1.0 (+/- 1e-5), got {totals.tolist()}")
        return probs
    fits = t.size == n if t.ndim == axis else (
        int(np.prod(t.shape[:axis])) == n and int(np.prod(t.shape[axis:])) == 1)
    if t.dtype.kind not in "iu" or not fits:
        raise op.shape_error(f"the labels (blob {name}) must be {n} ints, one per row of the "
                             f"logits, got {t.dtype} of shape {t.shape}")
    labels = t.reshape(n)
    if n and (labels.min() < 0 or labels.max() >= d):
        bad = labels[(labels < 0) | (labels >= d)][0]
        raise op.shape_error(f"label seems incorrect: label value {bad} in blob {name} is "
                             f"outside [0, {d}), the number of classes")
    return labels


def _row_weights(op: NumericOperator, n: int, present: bool) -> np.ndarray | None:
    if not present:
        return None
    w = op.tensor_input(2)
    if w.size != n:
        raise op.shape_error(f"the weights (blob {op.definition.inputs[2]}) must hold one "
                             f"value per row ({n}), got shape {w.shape}")
    return w.reshape(n)


SOFTMAX_WITH_LOSS_ARGS = {
    "scale": Arg(float, 1.0, doc="the loss is multiplied by it (>= 0)"),
    "label_prob": Arg((bool, int), False, doc="labels are per-class probabilities (N x D "
                                              "floats) instead of class indices"),
    "axis": Arg(int, 1, doc="X is read as rows: dims before `axis` are rows, the rest "
                            "classes"),
    "order": Arg(str, "NCHW", doc="only NCHW is supported"),
}


@register("SoftmaxWithLoss", inputs=(2, 3), outputs=2, allow_inplace=True,
          args=dict(SOFTMAX_WITH_LOSS_ARGS),
          doc="(X, labels[, weights]) -> (P, loss): P = softmax of the logits X over the "
              "classes of each row (X is read as N rows of D classes, split at `axis`; P has "
              "X's shape), and loss = scale * the weighted mean over rows of the cross "
              "entropy -log P[label] (with `label_prob`: -sum(labels * log P)). Labels are N "
              "ints in [0, D); weights, one per row, default to 1; the loss is 0 when the "
              "weights sum to 0. Computed stably from log-probabilities.")
class SoftmaxWithLossOp(NumericOperator):
    __slots__ = ()

    def validate(self) -> None:
        _check_softmax_with_loss_args(self)

    def run(self) -> None:
        x = self.float_input(0)
        axis, n, d = _class_matrix(self, x)
        labels = _labels(self, self.tensor_input(1), axis, n, d)
        weights = _row_weights(self, n, len(self.definition.inputs) == 3)
        log_p = self.scratch("log_p", (n, d), x.dtype)
        if n and d:
            rows = x.reshape(n, d)
            top = self.scratch("top", (n, 1), x.dtype)
            exp = self.scratch("exp", (n, d), x.dtype)
            np.max(rows, axis=1, keepdims=True, out=top)
            np.subtract(rows, top, out=log_p)
            np.exp(log_p, out=exp)
            np.sum(exp, axis=1, keepdims=True, out=top)
            np.log(top, out=top)
            np.subtract(log_p, top, out=log_p)
        if self.args["label_prob"]:
            # Caffe2 clamps P at 1e-20 before the log.
            losses = -(labels * np.maximum(log_p, np.log(1e-20))).sum(axis=1)
        else:
            losses = -log_p[np.arange(n), labels]
        weight_sum = float(n) if weights is None else float(weights.sum())
        if weights is not None:
            losses = losses * weights
        loss = self.output(1, (), x.dtype)
        loss[()] = losses.sum() * self.args["scale"] / weight_sum if weight_sum != 0 else 0.0
        np.exp(log_p, out=self.output(0, x.shape, x.dtype).reshape(n, d))


def _check_softmax_with_loss_args(op: NumericOperator) -> None:
    t = op.definition.type
    if op.args["order"] != "NCHW":
        raise ValueError(f"{t}: only NCHW order is supported, got {op.args['order']!r}")
    if not op.args["scale"] >= 0:
        raise ValueError(f"{t}: scale must be >= 0, got {op.args['scale']}")


@register("SoftmaxWithLossGradient", inputs=(4, 5), outputs=1, allow_inplace=True,
          args=dict(SOFTMAX_WITH_LOSS_ARGS),
          doc="(X, labels[, weights], P, dLoss) -> dX for SoftmaxWithLoss: (P - onehot(labels)) "
              "(or P - labels with `label_prob`), times each row's weight, times "
              "scale * dLoss / (sum of the weights, or N).")
class SoftmaxWithLossGradientOp(NumericOperator):
    __slots__ = ()

    def validate(self) -> None:
        _check_softmax_with_loss_args(self)

    def run(self) -> None:
        names = self.definition.inputs
        weighted = len(names) == 5
        x, t, *rest = self.inputs_read_before_writing()
        p, d_loss = rest[-2], rest[-1]
        axis, n, d = _class_matrix(self, x)
        labels = _labels(self, t, axis, n, d)
        weights = _row_weights(self, n, weighted)
        if p.shape != x.shape:
            raise self.shape_error(f"P (blob {names[-2]}) has shape {p.shape}, but the logits "
                                   f"(blob {names[0]}) have {x.shape}")
        if d_loss.size != 1:
            raise self.shape_error(f"the loss gradient (blob {names[-1]}) must have one "
                                   f"element, got shape {d_loss.shape}")
        dx = self.output(0, x.shape, x.dtype)
        rows = dx.reshape(n, d)
        np.copyto(rows, p.reshape(n, d))
        if self.args["label_prob"]:
            np.subtract(rows, labels, out=rows)
        else:
            rows[np.arange(n), labels] -= 1
        if weights is not None:
            np.multiply(rows, weights.reshape(n, 1), out=rows)
        total = float(weights.sum()) if weights is not None else float(n)
        if total > 0:
            np.multiply(rows, self.args["scale"] / total * float(d_loss.reshape(())), out=rows)


@gradient("SoftmaxWithLoss")
def _softmax_with_loss_gradient(g: Any) -> list[Any]:
    # Caffe2 reads only the loss's gradient and ignores any gradient of P, which is wrong
    # when P is used further: that part is added here, as the softmax of X's rows.
    args = present_args(g, "scale", "label_prob", "axis", "order")
    d_loss, d_p = g.GO(1), g.GO(0)
    parts: list[Any] = []
    ops: list[Any] = []
    if d_loss is not None:
        inputs = [g.I(0), g.I(1)] + ([g.I(2)] if len(g.op.inputs) == 3 else [])
        target = g.GI(0) if d_p is None else g.temp(f"{g.op.inputs[0]}_grad_from_loss")
        ops.append(g.make("SoftmaxWithLossGradient", inputs + [g.O(0), d_loss], [target],
                          **args))
        parts.append(target)
    if d_p is not None:
        axis = {"axis": g.op.args["axis"]} if "axis" in g.op.args else {}
        p_rows, d_p_rows, d_x_rows = (g.temp(f"{g.op.outputs[0]}_{what}")
                                      for what in ("rows", "grad_rows", "softmax_grad_rows"))
        target = g.GI(0) if d_loss is None else g.temp(f"{g.op.inputs[0]}_grad_from_softmax")
        ops += [g.make("Flatten", [g.O(0)], [p_rows], **axis),
                g.make("Flatten", [d_p], [d_p_rows], **axis),
                g.make("SoftmaxGradient", [p_rows, d_p_rows], [d_x_rows]),
                g.make("ResizeLike", [d_x_rows, g.I(0)], [target])]
        parts.append(target)
    if len(parts) == 2:
        ops.append(g.make("Sum", parts, [g.GI(0)]))
    return ops


# -- LSTMUnit ---------------------------------------------------------------------------------

LSTM_ARGS = {
    "forget_bias": Arg(float, 0.0, doc="added to the forget gate's input"),
    "sequence_lengths": Arg((bool, int), True, doc="the sequence lengths input is given "
                                                   "(when false it is left out and the "
                                                   "timestep follows the gates)"),
    "drop_states": Arg((bool, int), False, doc="past a sequence's end, output zeros instead "
                                               "of carrying the previous states over"),
}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):        # exp(-x) = inf gives the exact limit 0
        return 1 / (1 + np.exp(-x))


class _LSTMInputs:
    """The LSTM unit's inputs, checked, with its gates computed."""

    def __init__(self, op: NumericOperator, values: list[np.ndarray]) -> None:
        names = op.definition.inputs
        with_lengths = bool(op.args["sequence_lengths"])
        self.h_prev, self.c_prev, gates = values[0], values[1], values[2]
        lengths = values[3] if with_lengths else None
        timestep = values[4 if with_lengths else 3]
        for k, x in enumerate((self.h_prev, self.c_prev, gates)):
            if x.dtype.kind != "f":
                raise TypeError(f"LSTMUnit needs floating-point tensors, but input {k} (blob "
                                f"{names[k]}) is {x.dtype}")
        c = self.c_prev
        if c.ndim != 3 or self.h_prev.shape != c.shape:
            raise op.shape_error(f"the previous hidden and cell states (blobs {names[0]}, "
                                 f"{names[1]}) must both be (1, N, D), got {self.h_prev.shape} "
                                 f"and {c.shape}")
        n, d = c.shape[1], c.shape[2]
        if gates.shape != (c.shape[0], n, 4 * d):
            raise op.shape_error(f"the gates (blob {names[2]}) must be {(c.shape[0], n, 4 * d)} "
                                 f"(4 D = 4 x {d}), got {gates.shape}")
        if timestep.size != 1 or timestep.dtype.kind not in "iu":
            raise op.shape_error(f"the timestep (blob {names[4 if with_lengths else 3]}) must "
                                 f"be one integer, got {timestep.dtype} of shape "
                                 f"{timestep.shape}")
        if lengths is not None and (lengths.size != n or lengths.dtype.kind not in "iu"):
            raise op.shape_error(f"the sequence lengths (blob {names[3]}) must be {n} integers, "
                                 f"got {lengths.dtype} of shape {lengths.shape}")
        t = int(timestep.reshape(()))
        # Rows whose sequence has ended keep (or, with drop_states, zero) their states.
        self.valid = np.ones((c.shape[0], n, 1), bool) if lengths is None else \
            (t < lengths.reshape(1, n, 1))
        self.drop_states = bool(op.args["drop_states"])
        forget_bias = op.args["forget_bias"]
        self.i = _sigmoid(gates[..., :d])
        self.f = _sigmoid(gates[..., d:2 * d] + forget_bias)
        self.o = _sigmoid(gates[..., 2 * d:3 * d])
        self.g = np.tanh(gates[..., 3 * d:])

    def carried(self, value: np.ndarray) -> np.ndarray:
        """What an ended row holds: zeros with drop_states, else ``value`` carried over."""
        return np.zeros_like(value) if self.drop_states else value


@register("LSTMUnit", inputs=(4, 5), outputs=2, allow_inplace=True, args=dict(LSTM_ARGS),
          doc="(hidden_prev, cell_prev, gates, seq_lengths, timestep) -> (hidden, cell): one "
              "step of a standard LSTM (no peepholes) for N sequences, sequence-length "
              "aware. The states are (1, N, D), the gates (1, N, 4D) hold the input, forget, "
              "output and candidate pre-activations; seq_lengths are N ints and timestep "
              "one int. cell = f * cell_prev + i * g and hidden = o * tanh(cell), with i, f, "
              "o sigmoids (forget_bias added to f's input) and g a tanh; a row whose "
              "sequence has ended (timestep >= its length) carries its previous states "
              "over, or outputs zeros with drop_states. Without `sequence_lengths` the "
              "seq_lengths input is left out. The gradient needs the gradients of both "
              "outputs (ZeroGradient gives an unused cell state one).")
class LSTMUnitOp(NumericOperator):
    __slots__ = ()

    def validate(self) -> None:
        expected = 5 if self.args["sequence_lengths"] else 4
        if len(self.definition.inputs) != expected:
            raise ValueError(f"LSTMUnit takes {expected} inputs with sequence_lengths="
                             f"{bool(self.args['sequence_lengths'])}, got "
                             f"{len(self.definition.inputs)}")

    def run(self) -> None:
        unit = _LSTMInputs(self, [self.tensor_input(i) for i in range(len(self.inputs))])
        cell = unit.f * unit.c_prev + unit.i * unit.g
        hidden = unit.o * np.tanh(cell)
        cell = np.where(unit.valid, cell, unit.carried(unit.c_prev))
        hidden = np.where(unit.valid, hidden, unit.carried(unit.h_prev))
        dtype = unit.c_prev.dtype
        # Both computed before either is written: an output may be an input's blob.
        np.copyto(self.output(0, hidden.shape, dtype), hidden, casting="same_kind")
        np.copyto(self.output(1, cell.shape, dtype), cell, casting="same_kind")


@register("LSTMUnitGradient", inputs=(8, 9), outputs=3, allow_inplace=True,
          args=dict(LSTM_ARGS),
          doc="(hidden_prev, cell_prev, gates, seq_lengths, timestep, hidden, cell, "
              "d_hidden, d_cell) -> (d_hidden_prev, d_cell_prev, d_gates) for LSTMUnit "
              "(seq_lengths left out without `sequence_lengths`).")
class LSTMUnitGradientOp(NumericOperator):
    __slots__ = ()

    def validate(self) -> None:
        expected = 9 if self.args["sequence_lengths"] else 8
        if len(self.definition.inputs) != expected:
            raise ValueError(f"LSTMUnitGradient takes {expected} inputs with "
                             f"sequence_lengths={bool(self.args['sequence_lengths'])}, got "
                             f"{len(self.definition.inputs)}")

    def run(self) -> None:
        values = self.inputs_read_before_writing()
        unit = _LSTMInputs(self, values[:-4])
        cell, d_hidden, d_cell = values[-3], values[-2], values[-1]
        names = self.definition.inputs
        for k, x in ((len(names) - 3, cell), (len(names) - 2, d_hidden),
                     (len(names) - 1, d_cell)):
            if x.shape != unit.c_prev.shape:
                raise self.shape_error(f"input {k} (blob {names[k]}) has shape {x.shape}, "
                                       f"expected the states' {unit.c_prev.shape}")
        tanh_c = np.tanh(cell)
        c_term = d_cell + d_hidden * unit.o * (1 - tanh_c * tanh_c)
        d_gates = np.concatenate([c_term * unit.g * unit.i * (1 - unit.i),
                                  c_term * unit.c_prev * unit.f * (1 - unit.f),
                                  d_hidden * tanh_c * unit.o * (1 - unit.o),
                                  c_term * unit.i * (1 - unit.g * unit.g)], axis=-1)
        d_gates = np.where(unit.valid, d_gates, 0)
        d_cell_prev = np.where(unit.valid, c_term * unit.f, unit.carried(d_cell))
        d_hidden_prev = np.where(unit.valid, 0, unit.carried(d_hidden))
        dtype = unit.c_prev.dtype
        for k, value in enumerate((d_hidden_prev, d_cell_prev, d_gates)):
            np.copyto(self.output(k, value.shape, dtype), value, casting="same_kind")


@gradient("LSTMUnit")
def _lstm_unit_gradient(g: Any) -> list[Any]:
    d_hidden = _required_output_gradient(g, 0)
    d_cell = _required_output_gradient(g, 1)
    inputs = [g.I(i) for i in range(len(g.op.inputs))]
    return [g.make("LSTMUnitGradient", inputs + [g.O(0), g.O(1), d_hidden, d_cell],
                   [g.GI(0), g.GI(1), g.GI(2)],
                   **present_args(g, "forget_bias", "sequence_lengths", "drop_states"))]
