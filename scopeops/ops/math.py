"""Fills, copies, elementwise arithmetic, reductions, MatMul, comparisons, logic and Cast.

Every operator writes its outputs into the output blobs' reused buffers
(:meth:`Operator.output` plus numpy ``out=``), so a net run again on unchanged
shapes allocates no output arrays. Binary elementwise operators follow numpy
broadcasting and numpy's result dtype (``np.result_type``).

Gradient operators take the output gradient(s) first, then the forward blobs they
need, and write one gradient per forward input, in the forward input order:
``MulGradient(dZ, A, B) -> (dA, dB)``. The gradient of a broadcast input is summed
over the broadcast axes back to that input's shape.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from scopeops.ops.base import NO_GRADIENT, Arg, gradient, register
from scopeops.ops.numeric_base import (
    NumericOperator,
    grad_dtype,
    parse_dtype,
    parse_shape,
    sum_to_shape,
)

__all__ = [
    "AbsOp", "AddOp", "AndOp", "CastOp", "ConstantFillOp", "CopyOp", "DivOp", "EQOp",
    "ExpOp", "GEOp", "GTOp", "GivenTensorFillOp", "LEOp", "LTOp", "LogOp", "MatMulOp",
    "MulOp", "NegOp", "NotOp", "OrOp", "PowOp", "ScaleOp", "SqrOp", "StopGradientOp", "SubOp",
    "SumElementsOp", "SumOp", "WeightedSumOp",
]


def broadcast_shape(op: NumericOperator, a: np.ndarray, b: np.ndarray) -> tuple[int, ...]:
    """The numpy broadcast of two inputs' shapes; ValueError naming both blobs otherwise."""
    if a.shape == b.shape:
        return a.shape
    try:
        return np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        names = op.definition.inputs
        raise op.shape_error(f"cannot broadcast input 0 (blob {names[0]}, shape {a.shape}) "
                             f"with input 1 (blob {names[1]}, shape {b.shape})") from None


def _value_fits(value: Any, dtype: np.dtype[Any]) -> bool:
    """True when ``value`` is representable in ``dtype`` without losing its meaning."""
    if dtype.kind == "b":
        return value in (0, 1)
    if dtype.kind in "iu":
        if isinstance(value, float) and not value.is_integer():
            return False
        info = np.iinfo(dtype)
        return info.min <= value <= info.max
    return True


# -- fills and copies -------------------------------------------------------------------------


@register("ConstantFill", inputs=(0, 1), outputs=1, allow_inplace=True, gradient=NO_GRADIENT,
          args={"shape": Arg((list, tuple), None, doc="output shape (default: a scalar, ())"),
                "value": Arg((bool, int, float), 0.0, doc="the fill value"),
                "dtype": Arg(str, None, doc="element type (default float32, or the input's)")},
          doc="Fills the output with `value`. With one input, the output takes that input's "
              "shape, and its dtype unless `dtype` is given (then `shape` must not be given).")
class ConstantFillOp(NumericOperator):
    __slots__ = ("fill_shape", "fill_dtype", "fill_value")

    def validate(self) -> None:
        d = self.definition
        shape = self.args.get("shape")
        if d.inputs and shape is not None:
            raise ValueError("ConstantFill: cannot set the shape argument and pass in an input "
                             "at the same time")
        self.fill_shape = () if shape is None else parse_shape(shape, d.type)
        dtype = self.args.get("dtype")
        self.fill_dtype = None if dtype is None else parse_dtype(dtype, d.type, "dtype")
        if self.fill_dtype is None and not d.inputs:
            self.fill_dtype = np.dtype(np.float32)          # Caffe2's default: FLOAT
        self.fill_value = self.args["value"]
        if self.fill_dtype is not None and not _value_fits(self.fill_value, self.fill_dtype):
            raise ValueError(f"ConstantFill: value {self.fill_value!r} does not fit dtype "
                             f"{self.fill_dtype}")

    def run(self) -> None:
        if self.definition.inputs:
            like = self.tensor_input(0)
            dtype = like.dtype if self.fill_dtype is None else self.fill_dtype
            out = self.output(0, like.shape, dtype)
        else:
            out = self.output(0, self.fill_shape, self.fill_dtype)
        out.fill(self.fill_value)


@register("GivenTensorFill", inputs=0, outputs=1, allow_inplace=True, gradient=NO_GRADIENT,
          args={"values": Arg((list, tuple), required=True,
                              doc="the elements (flat, or nested as from ndarray.tolist())"),
                "shape": Arg((list, tuple), None, doc="output shape (default: that of values)"),
                "dtype": Arg(str, "float32", doc="element type")},
          doc="Fills the output with the given values, in the given shape and dtype.")
class GivenTensorFillOp(NumericOperator):
    __slots__ = ("given",)

    def validate(self) -> None:
        d = self.definition
        dtype = parse_dtype(self.args["dtype"], d.type, "dtype")
        try:
            raw = np.asarray(self.args["values"])
        except ValueError as exc:
            raise ValueError(f"GivenTensorFill: values are not a rectangular list of numbers "
                             f"({exc})") from None
        if raw.size and raw.dtype.kind not in "biuf":
            raise ValueError(f"GivenTensorFill: values must be numbers, got {raw.dtype} "
                             f"elements")
        given = raw.astype(dtype)
        if dtype.kind in "biu" and raw.dtype.kind == "f" and not np.array_equal(given, raw):
            raise ValueError(f"GivenTensorFill: values do not fit dtype {dtype}")
        shape = self.args.get("shape")
        if shape is not None:
            shape = parse_shape(shape, d.type)
            if int(np.prod(shape)) != given.size:
                raise ValueError(f"GivenTensorFill: shape {list(shape)} holds "
                                 f"{int(np.prod(shape))} elements but {given.size} values "
                                 f"were given")
            given = given.reshape(shape)
        self.given = given

    def run(self) -> None:
        np.copyto(self.output(0, self.given.shape, self.given.dtype), self.given)


@register("Copy", inputs=1, outputs=1, allow_inplace=True,
          doc="Copies the input tensor into the output (its own buffer).")
class CopyOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        x = self.tensor_input(0)
        out = self.output(0, x.shape, x.dtype)
        if out is not x:
            np.copyto(out, x)


@gradient("Copy")
def _copy_gradient(g: Any) -> list[Any]:
    return [g.make("Copy", [g.GO(0)], [g.GI(0)])]


@register("StopGradient", inputs=1, outputs=1, allow_inplace={(0, 0)}, gradient=NO_GRADIENT,
          doc="Y = X (a copy, or nothing when in place), and no gradient flows back through "
              "it: the backward pass treats X as a constant here. Its output must be read by "
              "some op; use it in place (StopGradient(X, X)) to stop X's gradient before "
              "it reaches X's producer.")
class StopGradientOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        x = self.tensor_input(0)
        out = self.output(0, x.shape, x.dtype)
        if out is not x:
            np.copyto(out, x)


# -- binary elementwise arithmetic ------------------------------------------------------------


class _BinaryElementwise(NumericOperator):
    """``out = ufunc(a, b)`` with numpy broadcasting and result dtype."""

    __slots__ = ()
    ufunc: ClassVar[np.ufunc]

    def run(self) -> None:
        a = self.tensor_input(0)
        b = self.tensor_input(1)
        shape = broadcast_shape(self, a, b)
        dtype = a.dtype if a.dtype == b.dtype else np.result_type(a, b)
        self.ufunc(a, b, out=self.output(0, shape, dtype))


@register("Add", inputs=2, outputs=1, allow_inplace=True, doc="C = A + B, with numpy broadcasting.")
class AddOp(_BinaryElementwise):
    __slots__ = ()
    ufunc = np.add


@register("Sub", inputs=2, outputs=1, allow_inplace=True, doc="C = A - B, with numpy broadcasting.")
class SubOp(_BinaryElementwise):
    __slots__ = ()
    ufunc = np.subtract


@register("Mul", inputs=2, outputs=1, allow_inplace=True, doc="C = A * B, with numpy broadcasting.")
class MulOp(_BinaryElementwise):
    __slots__ = ()
    ufunc = np.multiply


@register("Div", inputs=2, outputs=1, allow_inplace=True,
          doc="C = A / B, with numpy broadcasting. Integer inputs give the floored quotient "
              "(numpy `//`; Caffe2 truncated towards zero).")
class DivOp(_BinaryElementwise):
    __slots__ = ()
    ufunc = np.divide

    def run(self) -> None:
        a = self.tensor_input(0)
        b = self.tensor_input(1)
        shape = broadcast_shape(self, a, b)
        dtype = a.dtype if a.dtype == b.dtype else np.result_type(a, b)
        divide = np.floor_divide if dtype.kind in "iub" else np.divide
        divide(a, b, out=self.output(0, shape, dtype))


class _BinaryGradient(NumericOperator):
    """``(dZ, A, B) -> (dA, dB)`` for a broadcasting binary op."""

    __slots__ = ()

    def operands(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dz, a, b = self.inputs_read_before_writing()
        if dz.shape != broadcast_shape(self, a, b):
            raise self.shape_error(f"the output gradient (blob {self.definition.inputs[0]}) "
                                   f"has shape {dz.shape}, but A and B broadcast to "
                                   f"{np.broadcast_shapes(a.shape, b.shape)}")
        return dz, a, b

    def full_and_out(self, k: int, x: np.ndarray, dz: np.ndarray,
                     dtype: Any) -> tuple[np.ndarray, np.ndarray]:
        """Output ``k`` (gradient of ``x``) and where to compute its unreduced value."""
        out = self.output(k, x.shape, grad_dtype(x, dz))
        if x.shape == dz.shape:
            return out, out
        return self.scratch(f"full{k}", dz.shape, dtype), out

    @staticmethod
    def reduce(full: np.ndarray, out: np.ndarray) -> None:
        if full is not out:
            sum_to_shape(full, out.shape, out)


@register("AddGradient", inputs=3, outputs=2, allow_inplace=True,
          doc="(dC, A, B) -> (dA, dB) for C = A + B: dC summed to each input's shape.")
class AddGradientOp(_BinaryGradient):
    __slots__ = ()

    def run(self) -> None:
        dz, a, b = self.operands()
        sum_to_shape(dz, a.shape, self.output(0, a.shape, grad_dtype(a, dz)))
        sum_to_shape(dz, b.shape, self.output(1, b.shape, grad_dtype(b, dz)))


@register("SubGradient", inputs=3, outputs=2, allow_inplace=True,
          doc="(dC, A, B) -> (dA, dB) for C = A - B.")
class SubGradientOp(_BinaryGradient):
    __slots__ = ()

    def run(self) -> None:
        dz, a, b = self.operands()
        sum_to_shape(dz, a.shape, self.output(0, a.shape, grad_dtype(a, dz)))
        db = self.output(1, b.shape, grad_dtype(b, dz))
        sum_to_shape(dz, b.shape, db)
        np.negative(db, out=db)


@register("MulGradient", inputs=3, outputs=2, allow_inplace=True,
          doc="(dC, A, B) -> (dA, dB) for C = A * B: dA = dC * B, dB = dC * A, each summed "
              "to its input's shape.")
class MulGradientOp(_BinaryGradient):
    __slots__ = ()

    def run(self) -> None:
        dz, a, b = self.operands()
        full, out = self.full_and_out(0, a, dz, np.result_type(dz, b))
        np.multiply(dz, b, out=full)
        self.reduce(full, out)
        full, out = self.full_and_out(1, b, dz, np.result_type(dz, a))
        np.multiply(dz, a, out=full)
        self.reduce(full, out)


@register("DivGradient", inputs=3, outputs=2, allow_inplace=True,
          doc="(dC, A, B) -> (dA, dB) for C = A / B: dA = dC / B, dB = -dC * A / B^2, each "
              "summed to its input's shape.")
class DivGradientOp(_BinaryGradient):
    __slots__ = ()

    def run(self) -> None:
        dz, a, b = self.operands()
        dtype = np.result_type(dz, a, b)
        quotient = self.scratch("quotient", dz.shape, dtype)
        np.divide(dz, b, out=quotient)                     # dC / B
        sum_to_shape(quotient, a.shape, self.output(0, a.shape, grad_dtype(a, dz)))
        full, out = self.full_and_out(1, b, dz, dtype)
        np.multiply(quotient, a, out=quotient)             # dC * A / B
        np.divide(quotient, b, out=quotient)
        np.negative(quotient, out=full)
        self.reduce(full, out)


def _binary_maker(gradient_type: str) -> Any:
    def make(g: Any) -> list[Any]:
        return [g.make(gradient_type, [g.GO(0), g.I(0), g.I(1)], [g.GI(0), g.GI(1)])]

    make.__name__ = f"{gradient_type}_maker"
    return make


def _shapes_kept(g: Any) -> bool:
    """True when the pass may take C's gradient as A's and B's as they are: under
    Caffe2's broadcasting rule, for an op without a ``broadcast`` argument."""
    return bool(g.broadcast == "caffe2" and "broadcast" not in g.op.args)


@gradient("Add")
def _add_gradient(g: Any) -> list[Any]:
    # dA = dB = dC when nothing was broadcast (Caffe2's graph); numpy broadcasting can
    # stretch either input, so otherwise an op sums dC back to each input's shape.
    if _shapes_kept(g):
        g.pass_through(0, g.GO(0))
        g.pass_through(1, g.GO(0))
        return []
    return [g.make("AddGradient", [g.GO(0), g.I(0), g.I(1)], [g.GI(0), g.GI(1)])]


@gradient("Sub")
def _sub_gradient(g: Any) -> list[Any]:
    if _shapes_kept(g):
        g.pass_through(0, g.GO(0))
        return [g.make("Neg", [g.GO(0)], [g.GI(1)])]
    return [g.make("SubGradient", [g.GO(0), g.I(0), g.I(1)], [g.GI(0), g.GI(1)])]


for _type in ("Mul", "Div"):
    gradient(_type)(_binary_maker(f"{_type}Gradient"))


# -- unary elementwise ------------------------------------------------------------------------


class _UnaryElementwise(NumericOperator):
    """``out = ufunc(x)``, same shape and dtype; int or float input unless ``floats_only``."""

    __slots__ = ()
    ufunc: ClassVar[np.ufunc]
    floats_only: ClassVar[bool] = False

    def run(self) -> None:
        x = self.float_input(0) if self.floats_only else self.numeric_input(0)
        self.ufunc(x, out=self.output(0, x.shape, x.dtype))


@register("Sqr", inputs=1, outputs=1, allow_inplace=True, doc="Y = X * X, elementwise.")
class SqrOp(_UnaryElementwise):
    __slots__ = ()
    ufunc = np.square


@register("Exp", inputs=1, outputs=1, allow_inplace=True,
          doc="Y = exp(X), elementwise (floating point).")
class ExpOp(_UnaryElementwise):
    __slots__ = ()
    ufunc = np.exp
    floats_only = True


@register("Log", inputs=1, outputs=1, allow_inplace=True,
          doc="Y = log(X), elementwise (floating point).")
class LogOp(_UnaryElementwise):
    __slots__ = ()
    ufunc = np.log
    floats_only = True


@register("Abs", inputs=1, outputs=1, allow_inplace=True, doc="Y = |X|, elementwise.")
class AbsOp(_UnaryElementwise):
    __slots__ = ()
    ufunc = np.absolute


@register("Neg", inputs=1, outputs=1, allow_inplace=True, doc="Y = -X, elementwise.")
class NegOp(_UnaryElementwise):
    __slots__ = ()
    ufunc = np.negative


@register("Pow", inputs=1, outputs=1, allow_inplace=True,
          args={"exponent": Arg((int, float), required=True, doc="the power")},
          doc="Y = X ** exponent, elementwise.")
class PowOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        x = self.numeric_input(0)
        exponent = self.args["exponent"]
        np.power(x, exponent, out=self.output(0, x.shape, np.result_type(x, exponent)))


@register("Scale", inputs=1, outputs=1, allow_inplace=True,
          args={"scale": Arg((int, float), 1.0, doc="the factor")},
          doc="Y = scale * X (floating point).")
class ScaleOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        x = self.float_input(0)
        np.multiply(x, self.args["scale"], out=self.output(0, x.shape, x.dtype))


@gradient("Sqr")
def _sqr_gradient(g: Any) -> list[Any]:
    dx = g.GI(0)
    return [g.make("Mul", [g.GO(0), g.I(0)], [dx]),
            g.make("Scale", [dx], [dx], scale=2.0)]


@gradient("Exp")
def _exp_gradient(g: Any) -> list[Any]:
    # d exp(x) = exp(x): read the output, so Exp works in place.
    return [g.make("Mul", [g.GO(0), g.O(0)], [g.GI(0)])]


@gradient("Log")
def _log_gradient(g: Any) -> list[Any]:
    return [g.make("Div", [g.GO(0), g.I(0)], [g.GI(0)])]


@gradient("Neg")
def _neg_gradient(g: Any) -> list[Any]:
    return [g.make("Neg", [g.GO(0)], [g.GI(0)])]


@gradient("Scale")
def _scale_gradient(g: Any) -> list[Any]:
    return [g.make("Scale", [g.GO(0)], [g.GI(0)], scale=g.op.args.get("scale", 1.0))]


@register("AbsGradient", inputs=2, outputs=1, allow_inplace=True,
          doc="(dY, X) -> dX = dY * sign(X).")
class AbsGradientOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        dy = self.tensor_input(0)
        x = self.tensor_input(1)
        sign = self.scratch("sign", x.shape, x.dtype)
        np.sign(x, out=sign)
        np.multiply(dy, sign, out=self.output(0, x.shape, grad_dtype(x, dy)))


@gradient("Abs")
def _abs_gradient(g: Any) -> list[Any]:
    return [g.make("AbsGradient", [g.GO(0), g.I(0)], [g.GI(0)])]


@register("PowGradient", inputs=2, outputs=1, allow_inplace=True,
          args={"exponent": Arg((int, float), required=True)},
          doc="(dY, X) -> dX = dY * exponent * X ** (exponent - 1).")
class PowGradientOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        dy = self.tensor_input(0)
        x = self.tensor_input(1)
        exponent = self.args["exponent"]
        dtype = grad_dtype(x, dy)
        slope = self.scratch("slope", x.shape, np.result_type(dtype, x))
        if exponent == 0:
            slope.fill(0)
        else:
            np.power(x, exponent - 1, out=slope, casting="same_kind")
            np.multiply(slope, exponent, out=slope)
        np.multiply(dy, slope, out=self.output(0, x.shape, dtype))


@gradient("Pow")
def _pow_gradient(g: Any) -> list[Any]:
    return [g.make("PowGradient", [g.GO(0), g.I(0)], [g.GI(0)],
                   exponent=g.op.args["exponent"])]


# -- sums and reductions ----------------------------------------------------------------------


def _same_shapes(op: NumericOperator, tensors: list[np.ndarray], step: int = 1) -> None:
    first = tensors[0]
    for k, x in enumerate(tensors[1:], 1):
        if x.shape != first.shape:
            names = op.definition.inputs
            raise op.shape_error(f"input {k * step} (blob {names[k * step]}) has shape "
                                 f"{x.shape}, but input 0 (blob {names[0]}) has shape "
                                 f"{first.shape}; all must be the same")


@register("Sum", inputs=(1, None), outputs=1, allow_inplace=True,
          doc="Y = X0 + X1 + ...: the elementwise sum of any number of same-shaped tensors.")
class SumOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        if len(self._in_blobs) == 2:
            # The common case (gradient accumulation, often in place): one add.
            a, b = self.tensor_input(0), self.tensor_input(1)
            if a.dtype is b.dtype and a.shape == b.shape:
                out = self.output(0, a.shape, a.dtype)
                if out is b:
                    a, b = b, a
                np.add(a, b, out=out)
                return
        xs = [self.tensor_input(i) for i in range(len(self.definition.inputs))]
        _same_shapes(self, xs)
        dtype = xs[0].dtype
        if any(x.dtype != dtype for x in xs):
            dtype = np.result_type(*xs)
        out = self.output(0, xs[0].shape, dtype)
        # In place, the output already holds the aliased input(s): scale by their count
        # and add the rest, so no input is read after it was overwritten.
        aliased = sum(1 for x in xs if x is out)
        if aliased:
            if aliased > 1 and dtype.kind != "b":
                np.multiply(out, aliased, out=out)
            rest = [x for x in xs if x is not out]
        else:
            if len(xs) == 1:
                np.copyto(out, xs[0])
            else:
                np.add(xs[0], xs[1], out=out)
            rest = xs[2:]
        for x in rest:
            np.add(out, x, out=out)


@gradient("Sum")
def _sum_gradient(g: Any) -> list[Any]:
    # Every input has the output's shape: its gradient is dY itself, and no op runs.
    for i in range(len(g.op.inputs)):
        g.pass_through(i, g.GO(0))
    return []


@register("WeightedSum", inputs=(2, None), outputs=1, allow_inplace=True,
          doc="Y = w0 * X0 + w1 * X1 + ... from inputs (X0, w0, X1, w1, ...): the X are "
              "same-shaped tensors, the w one-element tensors.")
class WeightedSumOp(NumericOperator):
    __slots__ = ()

    def validate(self) -> None:
        if len(self.definition.inputs) % 2:
            raise ValueError(f"WeightedSum takes pairs (X, weight) of inputs, got "
                             f"{len(self.definition.inputs)} inputs")

    def weights(self) -> list[Any]:
        weights = []
        for i in range(1, len(self.definition.inputs), 2):
            w = self.tensor_input(i)
            if w.size != 1:
                raise self.shape_error(f"weight input {i} (blob {self.definition.inputs[i]}) "
                                       f"must have one element, got shape {w.shape}")
            weights.append(w.item())
        return weights

    def run(self) -> None:
        xs = [self.tensor_input(i) for i in range(0, len(self.definition.inputs), 2)]
        _same_shapes(self, xs, step=2)
        weights = self.weights()                    # read as scalars before any write
        dtype = np.result_type(*xs, *weights)
        out = self.output(0, xs[0].shape, dtype)
        aliased = [w for x, w in zip(xs, weights, strict=True) if x is out]
        if aliased:
            np.multiply(out, sum(aliased), out=out)
            rest = [(x, w) for x, w in zip(xs, weights, strict=True) if x is not out]
        else:
            np.multiply(xs[0], weights[0], out=out)
            rest = list(zip(xs[1:], weights[1:], strict=True))
        if rest:
            term = self.scratch("term", out.shape, dtype)
            for x, w in rest:
                np.multiply(x, w, out=term)
                np.add(out, term, out=out)


@register("WeightedSumGradient", inputs=(3, None), outputs=(2, None), allow_inplace=True,
          doc="(dY, X0, w0, X1, w1, ...) -> (dX0, dw0, dX1, dw1, ...) for WeightedSum: "
              "dXi = wi * dY, dwi = sum(Xi * dY).")
class WeightedSumGradientOp(NumericOperator):
    __slots__ = ()

    def validate(self) -> None:
        d = self.definition
        if len(d.inputs) % 2 != 1 or len(d.outputs) != len(d.inputs) - 1:
            raise ValueError(f"WeightedSumGradient takes dY and pairs (X, weight) of inputs and "
                             f"writes one gradient per pair member; got {len(d.inputs)} inputs "
                             f"and {len(d.outputs)} outputs")

    def run(self) -> None:
        dy, *pairs = self.inputs_read_before_writing()
        for k in range(0, len(pairs), 2):
            x, w = pairs[k], pairs[k + 1]
            if x.shape != dy.shape:
                raise self.shape_error(f"X{k // 2} has shape {x.shape} but dY has {dy.shape}")
            np.multiply(dy, w.item(), out=self.output(k, x.shape, grad_dtype(x, dy)))
            self.output(k + 1, w.shape, grad_dtype(w, dy)).fill(np.vdot(x, dy))


@gradient("WeightedSum")
def _weighted_sum_gradient(g: Any) -> list[Any]:
    n = len(g.op.inputs)
    return [g.make("WeightedSumGradient", [g.GO(0)] + [g.I(i) for i in range(n)],
                   [g.GI(i) for i in range(n)])]


@register("SumElements", inputs=1, outputs=1, allow_inplace=True,
          args={"average": Arg(bool, False, doc="divide by the number of elements")},
          doc="Y = the sum (or mean) of all elements of X, as a scalar tensor of shape ().")
class SumElementsOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        average = self.args["average"]
        x = self.float_input(0) if average else self.numeric_input(0)
        out = self.output(0, (), x.dtype)
        np.sum(x, out=out)
        if average:
            np.divide(out, x.size, out=out)


@register("SumElementsGradient", inputs=2, outputs=1, allow_inplace=True,
          args={"average": Arg(bool, False)},
          doc="(dY, X) -> dX: the scalar dY (divided by X's size when averaging) in X's shape.")
class SumElementsGradientOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        dy = self.tensor_input(0)
        x = self.tensor_input(1)
        if dy.size != 1:
            raise self.shape_error(f"the output gradient (blob {self.definition.inputs[0]}) "
                                   f"must have one element, got shape {dy.shape}")
        value = dy.item()                              # read before dX may overwrite it
        if self.args["average"] and x.size:
            value = value / x.size
        self.output(0, x.shape, grad_dtype(x, dy)).fill(value)


@gradient("SumElements")
def _sum_elements_gradient(g: Any) -> list[Any]:
    return [g.make("SumElementsGradient", [g.GO(0), g.I(0)], [g.GI(0)],
                   average=bool(g.op.args.get("average", False)))]


# -- matrix product ---------------------------------------------------------------------------


@register("MatMul", inputs=2, outputs=1, allow_inplace=True,
          args={"trans_a": Arg((bool, int), False, doc="use A transposed"),
                "trans_b": Arg((bool, int), False, doc="use B transposed")},
          doc="C = op(A) @ op(B) for 2-D A and B, op transposing when trans_a/trans_b is set.")
class MatMulOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        a = self.tensor_input(0)
        b = self.tensor_input(1)
        names = self.definition.inputs
        if a.ndim != 2 or b.ndim != 2:
            raise self.shape_error(f"needs 2-D inputs, got A (blob {names[0]}) of shape "
                                   f"{a.shape} and B (blob {names[1]}) of shape {b.shape}")
        if self.args["trans_a"]:
            a = a.T
        if self.args["trans_b"]:
            b = b.T
        if a.shape[1] != b.shape[0]:
            raise self.shape_error(f"inner dimensions differ: op(A) (blob {names[0]}) is "
                                   f"{a.shape}, op(B) (blob {names[1]}) is {b.shape}")
        dtype = a.dtype if a.dtype == b.dtype else np.result_type(a, b)
        np.matmul(a, b, out=self.output(0, (a.shape[0], b.shape[1]), dtype))


@gradient("MatMul")
def _matmul_gradient(g: Any) -> list[Any]:
    a, b, dc = g.I(0), g.I(1), g.GO(0)
    trans_a = bool(g.op.args.get("trans_a", False))
    trans_b = bool(g.op.args.get("trans_b", False))
    # C = op(A) op(B); each gradient is itself a MatMul with the right transpositions.
    if not trans_a and not trans_b:
        da = ([dc, b], {"trans_b": True})
        db = ([a, dc], {"trans_a": True})
    elif trans_a and not trans_b:
        da = ([b, dc], {"trans_b": True})
        db = ([a, dc], {})
    elif not trans_a and trans_b:
        da = ([dc, b], {})
        db = ([dc, a], {"trans_a": True})
    else:
        da = ([b, dc], {"trans_a": True, "trans_b": True})
        db = ([dc, a], {"trans_a": True, "trans_b": True})
    return [g.make("MatMul", da[0], [g.GI(0)], **da[1]),
            g.make("MatMul", db[0], [g.GI(1)], **db[1])]


# -- comparisons and logic --------------------------------------------------------------------


class _BoolBinary(NumericOperator):
    """``out = ufunc(a, b)`` as a bool tensor, with numpy broadcasting."""

    __slots__ = ()
    ufunc: ClassVar[np.ufunc]

    def run(self) -> None:
        a = self.tensor_input(0)
        b = self.tensor_input(1)
        self.ufunc(a, b, out=self.output(0, broadcast_shape(self, a, b), np.bool_))


def _comparison(type_name: str, ufunc: np.ufunc, symbol: str) -> type:
    @register(type_name, inputs=2, outputs=1, allow_inplace=True, gradient=NO_GRADIENT,
              doc=f"C = A {symbol} B elementwise, as a bool tensor (numpy broadcasting).")
    class ComparisonOp(_BoolBinary):
        __slots__ = ()

    ComparisonOp.ufunc = ufunc
    ComparisonOp.__name__ = ComparisonOp.__qualname__ = f"{type_name}Op"
    return ComparisonOp


LTOp = _comparison("LT", np.less, "<")
LEOp = _comparison("LE", np.less_equal, "<=")
GTOp = _comparison("GT", np.greater, ">")
GEOp = _comparison("GE", np.greater_equal, ">=")
EQOp = _comparison("EQ", np.equal, "==")


@register("And", inputs=2, outputs=1, allow_inplace=True, gradient=NO_GRADIENT,
          doc="C = A and B elementwise, as a bool tensor (nonzero is true; numpy broadcasting).")
class AndOp(_BoolBinary):
    __slots__ = ()
    ufunc = np.logical_and


@register("Or", inputs=2, outputs=1, allow_inplace=True, gradient=NO_GRADIENT,
          doc="C = A or B elementwise, as a bool tensor (nonzero is true; numpy broadcasting).")
class OrOp(_BoolBinary):
    __slots__ = ()
    ufunc = np.logical_or


@register("Not", inputs=1, outputs=1, allow_inplace=True, gradient=NO_GRADIENT,
          doc="Y = not X elementwise, as a bool tensor (nonzero is true).")
class NotOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        x = self.tensor_input(0)
        np.logical_not(x, out=self.output(0, x.shape, np.bool_))


# -- Cast -------------------------------------------------------------------------------------


@register("Cast", inputs=1, outputs=1, allow_inplace=True,
          args={"to": Arg(str, required=True, doc="the target dtype, e.g. 'float32' or 'FLOAT'"),
                "from_type": Arg(str, None, doc="the input's dtype, if known: lets the "
                                 "gradient be a plain Cast back")},
          doc="Y = X converted to dtype `to` (C-style: floats to ints truncate).")
class CastOp(NumericOperator):
    __slots__ = ("target",)

    def validate(self) -> None:
        self.target = parse_dtype(self.args["to"], "Cast", "to")
        if self.args.get("from_type") is not None:
            parse_dtype(self.args["from_type"], "Cast", "from_type")

    def run(self) -> None:
        x = self.tensor_input(0)
        out = self.output(0, x.shape, self.target)
        if out is not x:
            np.copyto(out, x, casting="unsafe")


@register("CastGradient", inputs=2, outputs=1, allow_inplace=True,
          doc="(dY, X) -> dX: dY cast back to X's dtype when X is floating point (a bool or "
              "int X gets dY's dtype, as every gradient of a non-float input does).")
class CastGradientOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        dy = self.tensor_input(0)
        x = self.tensor_input(1)
        out = self.output(0, dy.shape, grad_dtype(x, dy))
        if out is not dy:
            np.copyto(out, dy, casting="unsafe")


@gradient("Cast")
def _cast_gradient(g: Any) -> list[Any]:
    # The gradient passes through, cast back to the input's dtype (Caffe2 needs `from_type`;
    # without it, CastGradient reads the input's dtype when it runs).
    from_type = g.op.args.get("from_type")
    if from_type is not None:
        return [g.make("Cast", [g.GO(0)], [g.GI(0)], to=from_type)]
    return [g.make("CastGradient", [g.GO(0), g.I(0)], [g.GI(0)])]
