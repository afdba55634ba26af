"""Copies, elementwise arithmetic, reductions, MatMul, comparisons, logic and Cast.

Every operator writes its outputs into the output blobs' reused buffers
(:meth:`Operator.output` plus numpy ``out=``), so a net run again on unchanged
shapes allocates no output arrays. Binary elementwise operators follow numpy
broadcasting and numpy's result dtype (``np.result_type``); with Caffe2's
``broadcast=1`` argument they follow Caffe2's broadcasting instead (B's dims
matched with A's from ``axis`` on, the output in A's shape).

Gradient operators follow Caffe2's makers: they take the forward blobs they need,
then the output gradient(s) (``AbsGradient(X, dY)``, ``DivGradient(B, C, dC)``),
and the gradient of a broadcast input is summed over the broadcast axes back to
that input's shape. Where Caffe2 builds a gradient from ordinary ops (Mul's is two
``Mul`` ops, Pow's a ``Pow``, a ``Mul`` and a ``Scale``) the makers do the same,
except where copying Caffe2's graph would give a wrong gradient; each such place
says why.
"""

from __future__ import annotations

from math import prod
from typing import Any, ClassVar

import numpy as np

from scopeops.ops import _dispatch
from scopeops.ops.base import NO_GRADIENT, Arg, gradient, register
from scopeops.ops.numeric_base import (
    BROADCAST_ARGS,
    NumericOperator,
    broadcast_axis,
    check_ufunc,
    grad_dtype,
    legacy_broadcast_view,
    parse_dtype,
    present_args,
    reduced_axes,
    sum_to_shape,
)

__all__ = [
    "AbsOp", "AddOp", "AndOp", "CastOp", "CopyOp", "CosOp", "DivOp", "EQOp", "ExpOp", "GEOp",
    "GTOp", "LEOp", "LTOp", "LogOp", "MatMulOp", "MulOp", "NegOp", "NegativeOp", "NotOp",
    "OrOp", "PowOp", "ScaleOp", "SinOp", "SqrOp", "StopGradientOp", "SubOp", "SumElementsOp",
    "SumOp", "SumReduceLikeOp", "WeightedSumOp",
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



# -- copies -----------------------------------------------------------------------------------


@register("Copy", inputs=1, outputs=1, allow_inplace=True,
          doc="Copies the input tensor into the output (its own buffer).")
class CopyOp(NumericOperator):
    __slots__ = ()
    _fast_path = _dispatch.CopyKernel()

    def run(self) -> None:
        x = self.tensor_input(0)
        out = self.output(0, x.shape, x.dtype)
        if out is not x:
            np.copyto(out, x)


@register("CopyOnDeviceLike", inputs=2, outputs=1, allow_inplace=True,
          doc="Copies input 0 into the output, on the device of input 1 (Caffe2's gradient "
              "of Copy). This build runs on the CPU only, so it is a plain copy; input 1 "
              "must exist but is not read.")
class CopyOnDeviceLikeOp(CopyOp):
    __slots__ = ()


def _copy_gradient(g: Any) -> list[Any]:
    return [g.make("CopyOnDeviceLike", [g.GO(0), g.I(0)], [g.GI(0)])]


gradient("Copy")(_copy_gradient)
gradient("CopyOnDeviceLike")(_copy_gradient)     # Caffe2 has none; a copy's is a copy


@register("StopGradient", inputs=1, outputs=1, allow_inplace={(0, 0)}, gradient=NO_GRADIENT,
          doc="Y = X (a copy, or nothing when in place), and no gradient flows back through "
              "it: the backward pass treats X as a constant here. Its output must be read by "
              "some op; use it in place (StopGradient(X, X)) to stop X's gradient before "
              "it reaches X's producer.")
class StopGradientOp(NumericOperator):
    __slots__ = ()
    _fast_path = _dispatch.CopyKernel()

    def run(self) -> None:
        x = self.tensor_input(0)
        out = self.output(0, x.shape, x.dtype)
        if out is not x:
            np.copyto(out, x)


# -- binary elementwise arithmetic ------------------------------------------------------------


class _BinaryInputs(NumericOperator):
    """A binary elementwise op: numpy broadcasting, or Caffe2's with ``broadcast=1``."""

    __slots__ = ("broadcast_axis",)

    def validate(self) -> None:
        self.broadcast_axis = broadcast_axis(self)

    def operands(self) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
        """(A, B as it broadcasts against A, the output shape)."""
        a = self.tensor_input(0)
        b = self.tensor_input(1)
        if self.broadcast_axis is None:
            return a, b, broadcast_shape(self, a, b)
        return a, legacy_broadcast_view(self, a, b, self.broadcast_axis), a.shape


class _BinaryElementwise(_BinaryInputs):
    """``out = ufunc(a, b)`` with numpy's result dtype."""

    __slots__ = ()
    ufunc: ClassVar[np.ufunc]

    def run(self) -> None:
        a, b, shape = self.operands()
        dtype = a.dtype if a.dtype == b.dtype else np.result_type(a, b)
        check_ufunc(self.ufunc, (a.dtype, b.dtype), dtype)
        self.ufunc(a, b, out=self.output(0, shape, dtype))


_BINARY_DOC = ("C = A {symbol} B elementwise. Shapes broadcast as in numpy; with "
               "`broadcast=1`, as in Caffe2: B (a scalar, or dims matching A's from `axis` "
               "on, leading and trailing 1s of B ignored) is repeated over A, and C has A's "
               "shape.")


@register("Add", inputs=2, outputs=1, allow_inplace=True, args=dict(BROADCAST_ARGS),
          doc=_BINARY_DOC.format(symbol="+"))
class AddOp(_BinaryElementwise):
    __slots__ = ()
    ufunc = np.add
    _fast_path = _dispatch.BinaryUfunc(np.add)


@register("Sub", inputs=2, outputs=1, allow_inplace=True, args=dict(BROADCAST_ARGS),
          doc=_BINARY_DOC.format(symbol="-"))
class SubOp(_BinaryElementwise):
    __slots__ = ()
    ufunc = np.subtract
    _fast_path = _dispatch.BinaryUfunc(np.subtract)


@register("Mul", inputs=2, outputs=1, allow_inplace=True, args=dict(BROADCAST_ARGS),
          doc=_BINARY_DOC.format(symbol="*"))
class MulOp(_BinaryElementwise):
    __slots__ = ()
    ufunc = np.multiply
    _fast_path = _dispatch.BinaryUfunc(np.multiply)


@register("Div", inputs=2, outputs=1, allow_inplace=True, args=dict(BROADCAST_ARGS),
          doc=_BINARY_DOC.format(symbol="/") + " Integer inputs give the floored quotient "
              "(numpy `//`; Caffe2 truncated towards zero).")
class DivOp(_BinaryElementwise):
    __slots__ = ()
    ufunc = np.divide
    _fast_path = _dispatch.BinaryUfunc(np.divide, floor_ints=True)

    def run(self) -> None:
        a, b, shape = self.operands()
        dtype = a.dtype if a.dtype == b.dtype else np.result_type(a, b)
        divide = np.floor_divide if dtype.kind in "iub" else np.divide
        check_ufunc(divide, (a.dtype, b.dtype), dtype)
        divide(a, b, out=self.output(0, shape, dtype))


class _BinaryGradient(NumericOperator):
    """``(dZ, A, B) -> (dA, dB)`` for a numpy-broadcasting binary op."""

    __slots__ = ()

    def operands(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dz, a, b = self.inputs_read_before_writing()
        if dz.shape != broadcast_shape(self, a, b):
            raise self.shape_error(f"the output gradient (blob {self.definition.inputs[0]}) "
                                   f"has shape {dz.shape}, but A and B broadcast to "
                                   f"{np.broadcast_shapes(a.shape, b.shape)}")
        return dz, a, b


@register("AddGradient", inputs=3, outputs=2, allow_inplace=True,
          doc="(dC, A, B) -> (dA, dB) for C = A + B with numpy broadcasting: dC summed to "
              "each input's shape.")
class AddGradientOp(_BinaryGradient):
    __slots__ = ()

    def run(self) -> None:
        dz, a, b = self.operands()
        sum_to_shape(dz, a.shape, self.output(0, a.shape, grad_dtype(a, dz)))
        sum_to_shape(dz, b.shape, self.output(1, b.shape, grad_dtype(b, dz)))


@register("SubGradient", inputs=3, outputs=2, allow_inplace=True,
          doc="(dC, A, B) -> (dA, dB) for C = A - B with numpy broadcasting.")
class SubGradientOp(_BinaryGradient):
    __slots__ = ()

    def run(self) -> None:
        dz, a, b = self.operands()
        sum_to_shape(dz, a.shape, self.output(0, a.shape, grad_dtype(a, dz)))
        db = self.output(1, b.shape, grad_dtype(b, dz))
        sum_to_shape(dz, b.shape, db)
        np.negative(db, out=db)


def _shapes_kept(g: Any) -> bool:
    """True when the pass may take C's gradient as A's and B's as they are: under
    Caffe2's broadcasting rule, for an op without a ``broadcast`` argument."""
    return bool(g.broadcast == "caffe2" and "broadcast" not in g.op.args)


@gradient("Add")
def _add_gradient(g: Any) -> list[Any]:
    if g.op.args.get("broadcast"):
        # Caffe2's broadcasting: C has A's shape, and B's gradient is dC summed back.
        g.pass_through(0, g.GO(0))
        return [g.make("SumReduceLike", [g.GO(0), g.I(1)], [g.GI(1)],
                       **present_args(g, "axis", "axis_str", "order"))]
    # dA = dB = dC when nothing was broadcast (Caffe2's graph); numpy broadcasting can
    # stretch either input, so otherwise an op sums dC back to each input's shape.
    if _shapes_kept(g):
        g.pass_through(0, g.GO(0))
        g.pass_through(1, g.GO(0))
        return []
    return [g.make("AddGradient", [g.GO(0), g.I(0), g.I(1)], [g.GI(0), g.GI(1)])]


@gradient("Sub")
def _sub_gradient(g: Any) -> list[Any]:
    if g.op.args.get("broadcast"):
        g.pass_through(0, g.GO(0))
        negated = f"{g.GI(1)}_autogen_pre_red"
        return [g.make("Negative", [g.GO(0)], [negated]),
                g.make("SumReduceLike", [negated, g.I(1)], [g.GI(1)],
                       **present_args(g, "axis", "axis_str", "order"))]
    if _shapes_kept(g):
        g.pass_through(0, g.GO(0))
        return [g.make("Negative", [g.GO(0)], [g.GI(1)])]
    return [g.make("SubGradient", [g.GO(0), g.I(0), g.I(1)], [g.GI(0), g.GI(1)])]


@register("SumReduceLike", inputs=2, outputs=1, allow_inplace=True,
          args={**BROADCAST_ARGS,
                "broadcast": Arg((bool, int), False, doc="accepted and ignored (gradient "
                                 "makers pass their forward op's arguments on)")},
          doc="C = A summed over the dims along which B is broadcast against A, in B's "
              "shape: the gradient of a broadcast input. With `axis` (or `axis_str`), B is "
              "placed as Caffe2's broadcasting places it; without, B's dims are matched "
              "with A's last ones (numpy's rule, which includes Caffe2's default). A one-"
              "element B gets the sum of all of A. C's dtype is B's when B is floating "
              "point, else A's.")
class SumReduceLikeOp(NumericOperator):
    __slots__ = ("align_axis",)

    def validate(self) -> None:
        axis = broadcast_axis(self, required=False)
        self.align_axis = -1 if axis is None else axis

    def run(self) -> None:
        a = self.tensor_input(0)
        b = self.tensor_input(1)
        # Shapes are checked before the output changes: a refused op changes nothing.
        view = None
        if b.size != 1:
            if self.align_axis != -1:
                view = legacy_broadcast_view(self, a, b, self.align_axis)
            else:
                try:
                    fits = np.broadcast_shapes(a.shape, b.shape) == a.shape
                except ValueError:
                    fits = False
                if not fits:
                    names = self.definition.inputs
                    raise self.shape_error(f"B (blob {names[1]}, shape {b.shape}) does not "
                                           f"broadcast to A (blob {names[0]}, shape "
                                           f"{a.shape})")
        out = self.output(0, b.shape, grad_dtype(b, a))
        if b.size == 1:
            np.sum(a, out=out.reshape(()))
        elif view is not None:
            np.sum(a, axis=reduced_axes(a.shape, view.shape), keepdims=True,
                   out=out.reshape(view.shape))
        else:
            sum_to_shape(a, b.shape, out)


@register("MulGradient", inputs=3, outputs=2, allow_inplace=True,
          doc="(A, B, dC) -> (dA, dB) for C = A * B with numpy broadcasting: dA = dC * B, "
              "dB = dC * A, each summed to its input's shape.")
class MulGradientOp(NumericOperator):
    __slots__ = ()
    _fast_path = _dispatch.MulGradientKernel()

    def full_and_out(self, k: int, x: np.ndarray, dz: np.ndarray,
                     dtype: Any) -> tuple[np.ndarray, np.ndarray]:
        """Output ``k`` (gradient of ``x``) and where to compute its unreduced value."""
        out = self.output(k, x.shape, grad_dtype(x, dz))
        if x.shape == dz.shape:
            return out, out
        return self.scratch(f"full{k}", dz.shape, dtype), out

    def run(self) -> None:
        a, b, dz = self.inputs_read_before_writing()
        if dz.shape != broadcast_shape(self, a, b):
            raise self.shape_error(f"the output gradient (blob {self.definition.inputs[2]}) "
                                   f"has shape {dz.shape}, but A and B broadcast to "
                                   f"{np.broadcast_shapes(a.shape, b.shape)}")
        for k, x, other in ((0, a, b), (1, b, a)):
            # Checked for both before either output changes.
            product, want = np.result_type(dz, other), grad_dtype(x, dz)
            if not np.can_cast(product, want, "same_kind"):
                raise TypeError(
                    f"{self.definition.type}: the gradient of input {k} (blob "
                    f"{self.definition.inputs[k]}) would be {product} (dC * the other input), "
                    f"which does not fit its {want}")
        for k, x, other in ((0, a, b), (1, b, a)):
            full, out = self.full_and_out(k, x, dz, np.result_type(dz, other))
            np.multiply(dz, other, out=full)
            if full is not out:
                sum_to_shape(full, out.shape, out)


@gradient("Mul")
def _mul_gradient(g: Any) -> list[Any]:
    a, b, dc = g.I(0), g.I(1), g.GO(0)
    if not g.op.args.get("broadcast"):
        # Caffe2 emits Mul(dC, B) -> dA and Mul(dC, A) -> dB (and reads an explicit
        # broadcast=0 as broadcasting); with numpy broadcasting either input may be the
        # smaller one, so both products need reducing: one fused op.
        return [g.make("MulGradient", [a, b, dc], [g.GI(0), g.GI(1)])]
    axis_args = present_args(g, "axis", "axis_str", "order")
    pre_reduction = f"{g.GI(1)}_autogen_pre_red"
    return [g.make("Mul", [dc, b], [g.GI(0)], name="mul_grad_1st_op", broadcast=1,
                   **axis_args),
            g.make("Mul", [dc, a], [pre_reduction], name="mul_gradient_2nd_op"),
            g.make("SumReduceLike", [pre_reduction, b], [g.GI(1)],
                   name="mul_with_broadcast_grad_3", **axis_args)]


@register("DivGradient", inputs=(3, 4), outputs=2, allow_inplace=True,
          args=dict(BROADCAST_ARGS),
          doc="(B, C, dC[, A]) -> (dA, dB) for C = A / B: dA = dC / B, dB = -dC * C / B, "
              "each summed to its input's shape (the gradient reads the output C, not A). "
              "A, when given, is read only for its shape, which numpy broadcasting may "
              "have stretched; without it dA has C's shape. With `broadcast=1`, B is "
              "placed as in the forward Div.")
class DivGradientOp(NumericOperator):
    __slots__ = ("broadcast_axis",)

    def validate(self) -> None:
        self.broadcast_axis = broadcast_axis(self)

    def run(self) -> None:
        names = self.definition.inputs
        b, c, dc, *rest = self.inputs_read_before_writing()
        a_shape, a_dtype = (rest[0].shape, rest[0].dtype) if rest else (c.shape, c.dtype)
        if dc.shape != c.shape:
            raise self.shape_error(f"the output gradient (blob {names[2]}) has shape "
                                   f"{dc.shape}, but the output C (blob {names[1]}) has "
                                   f"{c.shape}")
        if self.broadcast_axis is not None:
            b_view = legacy_broadcast_view(self, c, b, self.broadcast_axis,
                                           (names[1], names[0]))
        else:
            b_view = b
            try:
                fits = np.broadcast_shapes(a_shape, b.shape) == c.shape
            except ValueError:
                fits = False
            if not fits:
                a_text = f"A (blob {names[3]}, shape {a_shape})" if rest else f"A {a_shape}"
                raise self.shape_error(f"{a_text} and B (blob {names[0]}, shape {b.shape}) "
                                       f"do not broadcast to the shape of C (blob {names[1]}) "
                                       f"{c.shape}")
        dtype = np.result_type(dc, c, b)
        quotient = self.scratch("quotient", c.shape, dtype)
        np.divide(dc, b_view, out=quotient)                      # dC / B
        da_dtype = a_dtype if a_dtype.kind == "f" else dc.dtype
        sum_to_shape(quotient, a_shape, self.output(0, a_shape, da_dtype))
        np.multiply(quotient, c, out=quotient)                   # dC * C / B = dC * A / B^2
        np.negative(quotient, out=quotient)
        db = self.output(1, b.shape, grad_dtype(b, dc))
        if b.size == 1:
            np.sum(quotient, out=db.reshape(()))
        elif self.broadcast_axis is not None:
            np.sum(quotient, axis=reduced_axes(c.shape, b_view.shape), keepdims=True,
                   out=db.reshape(b_view.shape))
        else:
            sum_to_shape(quotient, b.shape, db)


@gradient("Div")
def _div_gradient(g: Any) -> list[Any]:
    args = present_args(g, "broadcast", "axis", "axis_str", "order")
    if g.op.args.get("broadcast"):
        # Caffe2's own graph; it refused broadcast Div gradients, DivGradient places B.
        return [g.make("DivGradient", [g.I(1), g.O(0), g.GO(0)], [g.GI(0), g.GI(1)], **args)]
    # A fourth input, A, gives dA's shape: numpy broadcasting may have stretched A too.
    return [g.make("DivGradient", [g.I(1), g.O(0), g.GO(0), g.I(0)], [g.GI(0), g.GI(1)],
                   **args)]


# -- unary elementwise ------------------------------------------------------------------------


class _UnaryElementwise(NumericOperator):
    """``out = ufunc(x)``, same shape and dtype; int or float input unless ``floats_only``."""

    __slots__ = ()
    ufunc: ClassVar[np.ufunc]
    floats_only: ClassVar[bool] = False

    def run(self) -> None:
        x = self.float_input(0) if self.floats_only else self.numeric_input(0)
        check_ufunc(self.ufunc, (x.dtype,), x.dtype)
        self.ufunc(x, out=self.output(0, x.shape, x.dtype))


@register("Sqr", inputs=1, outputs=1, allow_inplace=True, doc="Y = X * X, elementwise.")
class SqrOp(_UnaryElementwise):
    __slots__ = ()
    ufunc = np.square
    _fast_path = _dispatch.UnaryUfunc(np.square, "numeric")


@register("Exp", inputs=1, outputs=1, allow_inplace=True,
          doc="Y = exp(X), elementwise (floating point).")
class ExpOp(_UnaryElementwise):
    __slots__ = ()
    ufunc = np.exp
    floats_only = True
    _fast_path = _dispatch.UnaryUfunc(np.exp, "float")


@register("Log", inputs=1, outputs=1, allow_inplace=True,
          doc="Y = log(X), elementwise (floating point).")
class LogOp(_UnaryElementwise):
    __slots__ = ()
    ufunc = np.log
    floats_only = True
    _fast_path = _dispatch.UnaryUfunc(np.log, "float")


@register("Abs", inputs=1, outputs=1, allow_inplace=True, doc="Y = |X|, elementwise.")
class AbsOp(_UnaryElementwise):
    __slots__ = ()
    ufunc = np.absolute
    _fast_path = _dispatch.UnaryUfunc(np.absolute, "numeric")


@register("Cos", inputs=1, outputs=1, allow_inplace=True,
          doc="Y = cos(X), elementwise (floating point).")
class CosOp(_UnaryElementwise):
    __slots__ = ()
    ufunc = np.cos
    floats_only = True
    _fast_path = _dispatch.UnaryUfunc(np.cos, "float")


@register("Sin", inputs=1, outputs=1, allow_inplace=True,
          doc="Y = sin(X), elementwise (floating point).")
class SinOp(_UnaryElementwise):
    __slots__ = ()
    ufunc = np.sin
    floats_only = True
    _fast_path = _dispatch.UnaryUfunc(np.sin, "float")


@register("Negative", inputs=1, outputs=1, allow_inplace=True,
          doc="Y = -X, elementwise (Caffe2's name; `Neg` is the same op).")
class NegativeOp(_UnaryElementwise):
    __slots__ = ()
    ufunc = np.negative
    _fast_path = _dispatch.UnaryUfunc(np.negative, "numeric")


@register("Neg", inputs=1, outputs=1, allow_inplace=True,
          doc="Y = -X, elementwise (Caffe2 calls it `Negative`).")
class NegOp(NegativeOp):
    __slots__ = ()


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
    # Caffe2 scales the output gradient in place first, which doubles it for every other
    # reader of that blob; scaling the product instead leaves dY alone.
    dx = g.GI(0)
    return [g.make("Mul", [g.GO(0), g.I(0)], [dx]),
            g.make("Scale", [dx], [dx], scale=2.0)]


@gradient("Exp")
def _exp_gradient(g: Any) -> list[Any]:
    # d exp(x) = exp(x): read the output, so Exp works in place.
    return [g.make("Mul", [g.O(0), g.GO(0)], [g.GI(0)])]


@gradient("Log")
def _log_gradient(g: Any) -> list[Any]:
    return [g.make("Div", [g.GO(0), g.I(0)], [g.GI(0)])]


def _negative_gradient(g: Any) -> list[Any]:
    return [g.make("Negative", [g.GO(0)], [g.GI(0)])]


gradient("Neg")(_negative_gradient)
gradient("Negative")(_negative_gradient)


@gradient("Scale")
def _scale_gradient(g: Any) -> list[Any]:
    return [g.make("Scale", [g.GO(0)], [g.GI(0)], scale=g.op.args.get("scale", 1.0))]


@gradient("Pow")
def _pow_gradient(g: Any) -> list[Any]:
    # Caffe2's graph. In place it raised the output to (e - 1) / e, losing precision and
    # overwriting dY; I(0) here is always the input as the op read it (saved if need be).
    exponent = g.op.args["exponent"]
    dx = g.GI(0)
    if exponent == 0:
        # d x^0 = 0, also at x = 0, where e * x^(e-1) would be 0 * inf.
        return [g.make("ConstantFill", [g.I(0)], [dx], value=0.0)]
    return [g.make("Pow", [g.I(0)], [dx], exponent=exponent - 1),
            g.make("Mul", [dx, g.GO(0)], [dx]),
            g.make("Scale", [dx], [dx], scale=float(exponent))]


class _UnaryGradient(NumericOperator):
    """``(X, dY) -> dX = dY * slope(X)``, with the shapes checked."""

    __slots__ = ()

    def operands(self) -> tuple[np.ndarray, np.ndarray]:
        x = self.tensor_input(0)
        dy = self.tensor_input(1)
        if dy.shape != x.shape:
            names = self.definition.inputs
            raise self.shape_error(f"the output gradient (blob {names[1]}) has shape "
                                   f"{dy.shape}, but X (blob {names[0]}) has {x.shape}")
        return x, dy

    def slope(self, x: np.ndarray, into: np.ndarray) -> None:
        raise NotImplementedError

    def run(self) -> None:
        x, dy = self.operands()
        dtype = grad_dtype(x, dy)
        slope = self.scratch("slope", x.shape, np.result_type(x.dtype, dtype))
        self.slope(x, slope)
        np.multiply(dy, slope, out=self.output(0, x.shape, dtype))


@register("AbsGradient", inputs=2, outputs=1, allow_inplace=True,
          doc="(X, dY) -> dX = dY * sign(X) (0 where X is 0).")
class AbsGradientOp(_UnaryGradient):
    __slots__ = ()

    def slope(self, x: np.ndarray, into: np.ndarray) -> None:
        np.sign(x, out=into)


@register("CosGradient", inputs=2, outputs=1, allow_inplace=True,
          doc="(X, dY) -> dX = -dY * sin(X).")
class CosGradientOp(_UnaryGradient):
    __slots__ = ()

    def slope(self, x: np.ndarray, into: np.ndarray) -> None:
        np.sin(x, out=into)
        np.negative(into, out=into)


@register("SinGradient", inputs=2, outputs=1, allow_inplace=True,
          doc="(X, dY) -> dX = dY * cos(X).")
class SinGradientOp(_UnaryGradient):
    __slots__ = ()

    def slope(self, x: np.ndarray, into: np.ndarray) -> None:
        np.cos(x, out=into)


def _input_based_maker(gradient_type: str) -> Any:
    def make(g: Any) -> list[Any]:
        return [g.make(gradient_type, [g.I(0), g.GO(0)], [g.GI(0)])]

    make.__name__ = f"{gradient_type}_maker"
    return make


for _type in ("Abs", "Cos", "Sin"):
    gradient(_type)(_input_based_maker(f"{_type}Gradient"))


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
    _fast_path = _dispatch.SumKernel()

    def run(self) -> None:
        if len(self._input_names) == 2:
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
          args={"grad_on_w": Arg((bool, int), False, doc="give the weights gradients too "
                                 "(by default, as in Caffe2, only the X get one)")},
          doc="Y = w0 * X0 + w1 * X1 + ... from inputs (X0, w0, X1, w1, ...): the X are "
              "same-shaped tensors, the w one-element tensors. Its gradient treats the "
              "weights as constants unless `grad_on_w` is set.")
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


@register("WeightedSumGradient", inputs=(3, None), outputs=(1, None), allow_inplace=True,
          args={"grad_on_w": Arg((bool, int), False, doc="also write the weights' gradients")},
          doc="(dY, X0, w0, X1, w1, ...) -> (dX0, dX1, ..., then with `grad_on_w` dw0, dw1, "
              "...) for WeightedSum: dXi = wi * dY, dwi = sum(Xi * dY).")
class WeightedSumGradientOp(NumericOperator):
    __slots__ = ()

    def validate(self) -> None:
        d = self.definition
        pairs = (len(d.inputs) - 1) // 2
        expected = 2 * pairs if self.args["grad_on_w"] else pairs
        if len(d.inputs) % 2 != 1 or len(d.outputs) != expected:
            raise ValueError(f"WeightedSumGradient takes dY and pairs (X, weight) of inputs and "
                             f"writes one gradient per X (and, with grad_on_w, one per weight): "
                             f"{expected} outputs for {len(d.inputs)} inputs, got "
                             f"{len(d.outputs)}")

    def run(self) -> None:
        dy, *pairs = self.inputs_read_before_writing()
        xs, weights = pairs[0::2], pairs[1::2]
        for k, (x, w) in enumerate(zip(xs, weights, strict=True)):
            if x.shape != dy.shape:
                raise self.shape_error(f"X{k} (blob {self.definition.inputs[1 + 2 * k]}) has "
                                       f"shape {x.shape} but dY (blob "
                                       f"{self.definition.inputs[0]}) has {dy.shape}")
            if w.size != 1:
                raise self.shape_error(f"weight {k} (blob {self.definition.inputs[2 + 2 * k]}) "
                                       f"must have one element, got shape {w.shape}")
        for k, (x, w) in enumerate(zip(xs, weights, strict=True)):
            np.multiply(dy, w.item(), out=self.output(k, x.shape, grad_dtype(x, dy)))
        if self.args["grad_on_w"]:
            for k, (x, w) in enumerate(zip(xs, weights, strict=True)):
                self.output(len(xs) + k, w.shape, grad_dtype(w, dy)).fill(np.vdot(x, dy))


@gradient("WeightedSum")
def _weighted_sum_gradient(g: Any) -> list[Any]:
    n = len(g.op.inputs)
    outputs = [g.GI(i) for i in range(0, n, 2)]
    if g.op.args.get("grad_on_w"):
        outputs += [g.GI(i) for i in range(1, n, 2)]
    return [g.make("WeightedSumGradient", [g.GO(0)] + [g.I(i) for i in range(n)], outputs,
                   **present_args(g, "grad_on_w"))]


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
          args={"average": Arg(bool, False, doc="divide by the number of elements")},
          doc="(X, dY) -> dX: the scalar dY (divided by X's size when averaging) in X's shape.")
class SumElementsGradientOp(NumericOperator):
    __slots__ = ()
    averaging: ClassVar[bool | None] = None     # None: from the `average` argument

    def run(self) -> None:
        x = self.tensor_input(0)
        dy = self.tensor_input(1)
        if dy.size != 1:
            raise self.shape_error(f"the output gradient (blob {self.definition.inputs[1]}) "
                                   f"must have one element, got shape {dy.shape}")
        value = dy.item()                              # read before dX may overwrite it
        average = self.args["average"] if self.averaging is None else self.averaging
        if average and x.size:
            value = value / x.size
        self.output(0, x.shape, grad_dtype(x, dy)).fill(value)


@gradient("SumElements")
def _sum_elements_gradient(g: Any) -> list[Any]:
    return [g.make("SumElementsGradient", [g.I(0), g.GO(0)], [g.GI(0)],
                   **present_args(g, "average"))]


# -- matrix product ---------------------------------------------------------------------------


def _as_matrix(op: NumericOperator, x: np.ndarray, axis: int, index: int) -> np.ndarray:
    """``x`` as a matrix (prod(dims[:axis]), prod(dims[axis:])), as Caffe2 coerces it."""
    name = op.definition.inputs[index]
    if x.ndim < 2 and axis == 1:
        raise op.shape_error(f"needs 2-D inputs (or more, with axis_a/axis_b), got input "
                             f"{index} (blob {name}) of shape {x.shape}")
    if not -x.ndim <= axis < x.ndim:
        raise op.shape_error(f"axis {axis} is out of range for input {index} (blob {name}) of "
                             f"shape {x.shape}")
    axis %= x.ndim
    return x.reshape(prod(x.shape[:axis]), prod(x.shape[axis:]))


@register("MatMul", inputs=(2, 3), outputs=1, allow_inplace=True,
          args={"trans_a": Arg((bool, int), False, doc="use A transposed"),
                "trans_b": Arg((bool, int), False, doc="use B transposed"),
                "axis_a": Arg(int, 1, doc="A is read as a matrix with dims[:axis_a] as rows "
                                          "and dims[axis_a:] as columns"),
                "axis_b": Arg(int, 1, doc="the same for B")},
          doc="C = op(A) @ op(B), op transposing when trans_a/trans_b is set; A and B are "
              "read as matrices (see axis_a, axis_b). With a third input, C takes that "
              "input's shape (which must hold as many elements): Caffe2's gradient of "
              "MatMul uses it to give dA and dB their inputs' shapes.")
class MatMulOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        names = self.definition.inputs
        a = _as_matrix(self, self.tensor_input(0), self.args["axis_a"], 0)
        b = _as_matrix(self, self.tensor_input(1), self.args["axis_b"], 1)
        if self.args["trans_a"]:
            a = a.T
        if self.args["trans_b"]:
            b = b.T
        if a.shape[1] != b.shape[0]:
            raise self.shape_error(f"inner dimensions differ: op(A) (blob {names[0]}) is "
                                   f"{a.shape}, op(B) (blob {names[1]}) is {b.shape}")
        dtype = a.dtype if a.dtype == b.dtype else np.result_type(a, b)
        shape = (a.shape[0], b.shape[1])
        if len(names) == 3:
            like = self.tensor_input(2).shape
            if prod(like) != shape[0] * shape[1]:
                raise self.shape_error(f"the product is {shape}, which does not fit the shape "
                                       f"{like} of input 2 (blob {names[2]})")
            if like != shape:
                product = self.scratch("product", shape, dtype)
                np.matmul(a, b, out=product)
                np.copyto(self.output(0, like, dtype), product.reshape(like))
                return
        np.matmul(a, b, out=self.output(0, shape, dtype))


@gradient("MatMul")
def _matmul_gradient(g: Any) -> list[Any]:
    if len(g.op.inputs) != 2:
        raise ValueError(f"the gradient of MatMul needs exactly two inputs, got "
                         f"{len(g.op.inputs)}")
    a, b, dc = g.I(0), g.I(1), g.GO(0)
    trans_a = bool(g.op.args.get("trans_a", False))
    trans_b = bool(g.op.args.get("trans_b", False))
    axis_a = g.op.args.get("axis_a", 1)
    axis_b = g.op.args.get("axis_b", 1)
    # C = op(A) op(B); each gradient is a MatMul resized like its input, as Caffe2 builds it.
    if not trans_a and not trans_b:
        da = ([dc, b, a], {"trans_b": 1, "axis_b": axis_b})
        db = ([a, dc, b], {"trans_a": 1, "axis_a": axis_a})
    elif trans_a and not trans_b:
        da = ([b, dc, a], {"trans_b": 1, "axis_a": axis_b})
        db = ([a, dc, b], {"axis_a": axis_a})
    elif not trans_a and trans_b:
        da = ([dc, b, a], {"axis_b": axis_b})
        db = ([dc, a, b], {"trans_a": 1, "axis_b": axis_a})
    else:
        da = ([b, dc, a], {"trans_a": 1, "trans_b": 1, "axis_a": axis_b})
        db = ([dc, a, b], {"trans_a": 1, "trans_b": 1, "axis_b": axis_a})
    return [g.make("MatMul", da[0], [g.GI(0)], **da[1]),
            g.make("MatMul", db[0], [g.GI(1)], **db[1])]


# -- comparisons and logic --------------------------------------------------------------------


class _BoolBinary(_BinaryInputs):
    """``out = ufunc(a, b)`` as a bool tensor (numpy's or Caffe2's broadcasting)."""

    __slots__ = ()
    ufunc: ClassVar[np.ufunc]

    def run(self) -> None:
        a, b, shape = self.operands()
        check_ufunc(self.ufunc, (a.dtype, b.dtype), np.dtype(np.bool_))
        self.ufunc(a, b, out=self.output(0, shape, np.bool_))


_BOOL_DOC = ("C = {what} elementwise, as a bool tensor. Shapes broadcast as in numpy; with "
             "`broadcast=1`, as in Caffe2 (see Add).")


def _comparison(type_name: str, ufunc: np.ufunc, symbol: str) -> type:
    @register(type_name, inputs=2, outputs=1, allow_inplace=True, gradient=NO_GRADIENT,
              args=dict(BROADCAST_ARGS), doc=_BOOL_DOC.format(what=f"A {symbol} B"))
    class ComparisonOp(_BoolBinary):
        __slots__ = ()

    ComparisonOp.ufunc = ufunc
    ComparisonOp._fast_path = _dispatch.BinaryUfunc(ufunc, bool_out=True)
    ComparisonOp.__name__ = ComparisonOp.__qualname__ = f"{type_name}Op"
    return ComparisonOp


LTOp = _comparison("LT", np.less, "<")
LEOp = _comparison("LE", np.less_equal, "<=")
GTOp = _comparison("GT", np.greater, ">")
GEOp = _comparison("GE", np.greater_equal, ">=")
EQOp = _comparison("EQ", np.equal, "==")


@register("And", inputs=2, outputs=1, allow_inplace=True, gradient=NO_GRADIENT,
          args=dict(BROADCAST_ARGS), doc=_BOOL_DOC.format(what="A and B (nonzero is true)"))
class AndOp(_BoolBinary):
    __slots__ = ()
    ufunc = np.logical_and
    _fast_path = _dispatch.BinaryUfunc(np.logical_and, bool_out=True)


@register("Or", inputs=2, outputs=1, allow_inplace=True, gradient=NO_GRADIENT,
          args=dict(BROADCAST_ARGS), doc=_BOOL_DOC.format(what="A or B (nonzero is true)"))
class OrOp(_BoolBinary):
    __slots__ = ()
    ufunc = np.logical_or
    _fast_path = _dispatch.BinaryUfunc(np.logical_or, bool_out=True)


@register("Not", inputs=1, outputs=1, allow_inplace=True, gradient=NO_GRADIENT,
          doc="Y = not X elementwise, as a bool tensor (nonzero is true).")
class NotOp(NumericOperator):
    __slots__ = ()
    _fast_path = _dispatch.UnaryUfunc(np.logical_not, "any", bool_out=True)

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
          doc="(X, dY) -> dX: dY cast back to X's dtype when X is floating point (a bool or "
              "int X gets dY's dtype, as every gradient of a non-float input does).")
class CastGradientOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        x = self.tensor_input(0)
        dy = self.tensor_input(1)
        out = self.output(0, dy.shape, grad_dtype(x, dy))
        if out is not dy:
            np.copyto(out, dy, casting="unsafe")


@gradient("Cast")
def _cast_gradient(g: Any) -> list[Any]:
    # The gradient passes through, cast back to the input's dtype (Caffe2 needs `from_type`
    # and refuses without it; here CastGradient then reads the input's dtype when it runs).
    from_type = g.op.args.get("from_type")
    if from_type is not None:
        return [g.make("Cast", [g.GO(0)], [g.GI(0)], to=from_type, from_type=g.op.args["to"])]
    return [g.make("CastGradient", [g.I(0), g.GO(0)], [g.GI(0)])]
