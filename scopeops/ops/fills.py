"""Fill operators: constants, given values and random samples.

Every fill takes its output shape the way Caffe2's fillers do:

- no input: the ``shape`` argument (default ``[]``, a 0-d tensor);
- one input: that input's shape followed by ``extra_shape``; with
  ``input_as_shape`` the input is instead a 1-D integer tensor whose *values*
  are the shape (followed by ``extra_shape``).

Giving both an input and ``shape`` is refused, as are ``extra_shape`` or
``input_as_shape`` without an input. Fills have no gradient.

The random fills (UniformFill, GaussianFill, XavierFill) draw from a
:class:`numpy.random.Generator` that each operator creates when it is built:
from its ``seed`` argument when given, so that a net built again draws the same
values run after run, and from fresh OS entropy otherwise. Each run draws new
values (Caffe2 seeds each operator's random generator from its device option's
``random_seed`` the same way).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scopeops.ops.base import NO_GRADIENT, Arg, register
from scopeops.ops.numeric_base import NumericOperator, parse_dtype, parse_shape

__all__ = [
    "ConstantFillOp", "GaussianFillOp", "GivenTensorFillOp", "UniformFillOp", "XavierFillOp",
]

SHAPE_ARGS = {
    "shape": Arg((list, tuple), None, doc="output shape when there is no input (default: "
                                          "a 0-d tensor)"),
    "extra_shape": Arg((list, tuple), None, doc="dims appended to the shape taken from the "
                                                "input"),
    "input_as_shape": Arg((bool, int), False, doc="the input is a 1-D integer tensor whose "
                                                  "values are the shape"),
}
FLOAT_DTYPES = ("float16", "float32", "float64", "FLOAT16", "FLOAT", "DOUBLE")


class _Filler(NumericOperator):
    """Works out the output shape from ``shape``/``extra_shape``/``input_as_shape`` and
    an optional first input (the shape source)."""

    __slots__ = ("fill_shape", "extra_shape", "input_as_shape")

    def validate(self) -> None:
        d = self.definition
        t = d.type
        shape, extra = self.args.get("shape"), self.args.get("extra_shape")
        self.input_as_shape = bool(self.args.get("input_as_shape") or False)
        if d.inputs and shape is not None:
            raise ValueError(f"{t}: cannot set the shape argument and pass in an input at "
                             f"the same time")
        if not d.inputs and extra is not None:
            raise ValueError(f"{t}: cannot set extra_shape when there is no input")
        if not d.inputs and self.input_as_shape:
            raise ValueError(f"{t}: an input must be given if input_as_shape is true")
        self.fill_shape = () if shape is None else parse_shape(shape, t)
        self.extra_shape = () if extra is None else parse_shape(extra, t, "extra_shape")

    def output_shape(self) -> tuple[int, ...]:
        if not self.definition.inputs:
            return self.fill_shape
        source = self.tensor_input(0)
        if not self.input_as_shape:
            return source.shape + self.extra_shape
        if source.ndim != 1 or source.dtype.kind not in "iu":
            raise self.shape_error(
                f"when input_as_shape is true, the input (blob {self.definition.inputs[0]}) "
                f"must be a 1-D integer tensor, got {source.dtype} of shape {source.shape}")
        if np.any(source < 0):
            raise self.shape_error(f"the shape in blob {self.definition.inputs[0]} has a "
                                   f"negative dim: {source.tolist()}")
        return tuple(int(n) for n in source) + self.extra_shape


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


@register("ConstantFill", inputs=(0, 1), outputs=1, allow_inplace=True, gradient=NO_GRADIENT,
          args={**SHAPE_ARGS,
                "value": Arg((bool, int, float), 0.0, doc="the fill value"),
                "dtype": Arg(str, None, doc="element type (default float32; with an input "
                                            "giving the shape, the input's dtype)")},
          doc="Fills the output with `value`. The shape comes from `shape`, or from the "
              "input (its shape, or its values with `input_as_shape`) followed by "
              "`extra_shape`. The dtype is `dtype`; without it, float32, or the input's "
              "dtype when the input gives the shape.")
class ConstantFillOp(_Filler):
    __slots__ = ("fill_dtype", "fill_value")

    def validate(self) -> None:
        super().validate()
        dtype = self.args.get("dtype")
        self.fill_dtype = None if dtype is None else parse_dtype(dtype, "ConstantFill", "dtype")
        if self.fill_dtype is None and (not self.definition.inputs or self.input_as_shape):
            self.fill_dtype = np.dtype(np.float32)          # Caffe2's default: FLOAT
        self.fill_value = self.args["value"]
        if self.fill_dtype is not None and not _value_fits(self.fill_value, self.fill_dtype):
            raise ValueError(f"ConstantFill: value {self.fill_value!r} does not fit dtype "
                             f"{self.fill_dtype}")

    def run(self) -> None:
        shape = self.output_shape()
        dtype = self.fill_dtype if self.fill_dtype is not None else self.tensor_input(0).dtype
        self.output(0, shape, dtype).fill(self.fill_value)


# -- given values -----------------------------------------------------------------------------


def _given_values(op: _Filler, dtype: np.dtype[Any] | None) -> np.ndarray:
    """The ``values`` argument as an array of ``dtype`` (None: strings, an object array)."""
    t = op.definition.type
    values = op.args["values"]
    if dtype is None:
        if not all(isinstance(v, (str, bytes)) for v in values):
            raise ValueError(f"{t}: values must be a flat list of str or bytes")
        given = np.empty(len(values), object)
        given[:] = list(values)
        return given
    try:
        raw = np.asarray(values)
    except ValueError as exc:
        raise ValueError(f"{t}: values are not a rectangular list of numbers ({exc})") from None
    if raw.size and raw.dtype.kind not in "biuf":
        raise ValueError(f"{t}: values must be numbers, got {raw.dtype} elements")
    if dtype.kind == "b" and raw.size and not np.isin(raw, (0, 1)).all():
        raise ValueError(f"{t}: values do not fit dtype bool (only 0/1 or True/False)")
    with np.errstate(invalid="ignore", over="ignore"):
        given = raw.astype(dtype)
    if dtype.kind in "iu" and raw.size and not np.array_equal(given, raw):
        raise ValueError(f"{t}: values do not fit dtype {dtype}")
    return given


class _GivenTensorFill(_Filler):
    """Copies the ``values`` argument into the output, in the fill's shape."""

    __slots__ = ("given",)
    value_dtype: np.dtype[Any] | None = None      # None: strings

    def element_dtype(self) -> np.dtype[Any] | None:
        return self.value_dtype

    def validate(self) -> None:
        super().validate()
        t = self.definition.type
        given = _given_values(self, self.element_dtype())
        if not self.definition.inputs:
            if self.args.get("shape") is None:
                self.fill_shape = given.shape              # nested values keep their shape
            elif int(np.prod(self.fill_shape)) != given.size:
                raise ValueError(f"{t}: shape {list(self.fill_shape)} holds "
                                 f"{int(np.prod(self.fill_shape))} elements but {given.size} "
                                 f"values were given")
        self.given = given.reshape(-1)

    def run(self) -> None:
        shape = self.output_shape()
        size = int(np.prod(shape))
        if size != self.given.size:
            raise self.shape_error(f"the output shape {shape} holds {size} elements but "
                                   f"{self.given.size} values were given")
        if self.given.dtype == object:
            self.output(0).set(self.given.reshape(shape).copy())
            return
        np.copyto(self.output(0, shape, self.given.dtype), self.given.reshape(shape))


_GIVEN_DOC = ("Fills the output with the `values` argument ({kind}). The shape comes from "
              "`shape` (default: that of the values), or from the input (its shape, or its "
              "values with `input_as_shape`) followed by `extra_shape`; it must hold exactly "
              "as many elements as there are values.")


@register("GivenTensorFill", inputs=(0, 1), outputs=1, allow_inplace=True,
          gradient=NO_GRADIENT,
          args={**SHAPE_ARGS,
                "values": Arg((list, tuple), required=True,
                              doc="the elements (flat, or nested as from ndarray.tolist())"),
                "dtype": Arg(str, "float32", doc="element type")},
          doc=_GIVEN_DOC.format(kind="float32 unless `dtype` says otherwise"))
class GivenTensorFillOp(_GivenTensorFill):
    __slots__ = ()

    def element_dtype(self) -> np.dtype[Any] | None:
        return parse_dtype(self.args["dtype"], self.definition.type, "dtype")


def _typed_given_fill(type_name: str, dtype: Any, kind: str) -> type:
    element = None if dtype is None else np.dtype(dtype)

    @register(type_name, inputs=(0, 1), outputs=1, allow_inplace=True, gradient=NO_GRADIENT,
              args={**SHAPE_ARGS,
                    "values": Arg((list, tuple), required=True, doc=f"the elements ({kind})")},
              doc=_GIVEN_DOC.format(kind=kind))
    class TypedGivenTensorFill(_GivenTensorFill):
        __slots__ = ()
        value_dtype = element

    TypedGivenTensorFill.__name__ = TypedGivenTensorFill.__qualname__ = f"{type_name}Op"
    return TypedGivenTensorFill


GivenTensorDoubleFillOp = _typed_given_fill("GivenTensorDoubleFill", np.float64, "float64")
GivenTensorIntFillOp = _typed_given_fill("GivenTensorIntFill", np.int32, "int32")
GivenTensorInt64FillOp = _typed_given_fill("GivenTensorInt64Fill", np.int64, "int64")
GivenTensorBoolFillOp = _typed_given_fill("GivenTensorBoolFill", np.bool_, "bool")
GivenTensorStringFillOp = _typed_given_fill(
    "GivenTensorStringFill", None, "str or bytes, stored as a numpy object array")


# -- random fills -----------------------------------------------------------------------------

RANDOM_ARGS = {
    **SHAPE_ARGS,
    "dtype": Arg(str, "float32", doc="element type: float16, float32 or float64"),
    "seed": Arg(int, None, doc="seed of the operator's random generator (default: fresh OS "
                               "entropy); each run draws new values"),
}


class _RandomFill(_Filler):
    """A fill drawing from the operator's own random generator."""

    __slots__ = ("rng", "fill_dtype")

    def validate(self) -> None:
        super().validate()
        t = self.definition.type
        self.fill_dtype = parse_dtype(self.args["dtype"], t, "dtype")
        if self.fill_dtype.kind != "f":
            raise ValueError(f"{t}: dtype must be one of {', '.join(FLOAT_DTYPES)}, not "
                             f"{self.args['dtype']!r}")
        seed = self.args.get("seed")
        if seed is not None and seed < 0:
            raise ValueError(f"{t}: seed must be a non-negative int, got {seed}")
        self.rng = np.random.default_rng(seed)

    def draw_into(self, out: np.ndarray, sample: Any) -> None:
        """Fill ``out`` with ``sample(into)`` drawn in float32/float64 (float16 via float32)."""
        if out.dtype == np.float16:
            scratch = self.scratch("draw", out.shape, np.float32)
            sample(scratch)
            np.copyto(out, scratch, casting="same_kind")
        else:
            sample(out)


@register("UniformFill", inputs=(0, 3), outputs=1, allow_inplace=True, gradient=NO_GRADIENT,
          args={**RANDOM_ARGS,
                "min": Arg(float, 0.0, doc="lower bound (inclusive)"),
                "max": Arg(float, 1.0, doc="upper bound (exclusive); must exceed `min`")},
          doc="Fills the output with samples from the uniform distribution on [min, max). "
              "With three inputs (shape source, min, max) the bounds come from the one-"
              "element tensors min and max instead of the arguments, and a min above max "
              "gives an output whose first dim is 0. Takes 0, 1 or 3 inputs.")
class UniformFillOp(_RandomFill):
    __slots__ = ()

    def validate(self) -> None:
        d = self.definition
        if len(d.inputs) == 2:
            raise ValueError("UniformFill takes 0, 1 or 3 inputs (shape source, min, max), "
                             "got 2")
        super().validate()
        if len(d.inputs) == 3:
            for bound in ("min", "max"):
                if bound in d.args:
                    raise ValueError(f"UniformFill: cannot set both the {bound} argument and "
                                     f"the {bound} input blob")
        elif not self.args["min"] < self.args["max"]:
            raise ValueError(f"UniformFill: max ({self.args['max']}) should be bigger than min "
                             f"({self.args['min']})")

    def bounds(self) -> tuple[float, float, bool]:
        """(min, max, empty): from the arguments, or from inputs 1 and 2."""
        if len(self.definition.inputs) != 3:
            return self.args["min"], self.args["max"], False
        values = []
        for i in (1, 2):
            bound = self.numeric_input(i)
            if bound.size != 1:
                raise self.shape_error(f"the {'min' if i == 1 else 'max'} blob "
                                       f"({self.definition.inputs[i]}) must have one element, "
                                       f"got shape {bound.shape}")
            values.append(float(bound.reshape(())))
        low, high = values
        return low, high, low > high

    def run(self) -> None:
        low, high, empty = self.bounds()
        shape = self.output_shape()
        if empty:
            shape = (0,) + shape[1:]
        out = self.output(0, shape, self.fill_dtype)

        def sample(into: np.ndarray) -> None:
            self.rng.random(dtype=into.dtype, out=into)
            np.multiply(into, high - low, out=into)
            np.add(into, low, out=into)

        self.draw_into(out, sample)


@register("GaussianFill", inputs=(0, 1), outputs=1, allow_inplace=True, gradient=NO_GRADIENT,
          args={**RANDOM_ARGS,
                "mean": Arg(float, 0.0, doc="mean of the normal distribution"),
                "std": Arg(float, 1.0, doc="standard deviation (>= 0)")},
          doc="Fills the output with samples from the normal distribution N(mean, std^2).")
class GaussianFillOp(_RandomFill):
    __slots__ = ()

    def validate(self) -> None:
        super().validate()
        if not self.args["std"] >= 0:
            raise ValueError(f"GaussianFill: std must be >= 0, got {self.args['std']}")

    def run(self) -> None:
        out = self.output(0, self.output_shape(), self.fill_dtype)
        mean, std = self.args["mean"], self.args["std"]

        def sample(into: np.ndarray) -> None:
            self.rng.standard_normal(dtype=into.dtype, out=into)
            np.multiply(into, std, out=into)
            np.add(into, mean, out=into)

        self.draw_into(out, sample)


@register("XavierFill", inputs=(0, 1), outputs=1, allow_inplace=True, gradient=NO_GRADIENT,
          args=dict(RANDOM_ARGS),
          doc="Fills the output with samples from the uniform distribution on "
              "[-scale, scale), scale = sqrt(3 / fan_in), where fan_in is the number of "
              "elements divided by the first dim (Caffe2's Xavier fill). The output must "
              "have at least one dim.")
class XavierFillOp(_RandomFill):
    __slots__ = ()

    def run(self) -> None:
        shape = self.output_shape()
        if not shape:
            raise self.shape_error("the output needs at least one dim (fan_in is the size "
                                   "divided by the first dim)")
        out = self.output(0, shape, self.fill_dtype)
        if out.size == 0:
            return
        scale = float(np.sqrt(3.0 / (out.size // shape[0])))

        def sample(into: np.ndarray) -> None:
            self.rng.random(dtype=into.dtype, out=into)
            np.multiply(into, 2 * scale, out=into)
            np.subtract(into, scale, out=into)

        self.draw_into(out, sample)
