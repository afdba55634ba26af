"""What the numeric operators share: tensor inputs, dtype names, scratch buffers and
the reduction of broadcast gradients back to an input's shape.

Outputs are always written through :meth:`Operator.output`, which reuses each output
blob's buffer; full-size intermediates go to per-operator scratch buffers, so an
operator run again on unchanged shapes allocates no arrays.
"""

from __future__ import annotations

import difflib
from typing import Any

import numpy as np

from scopeops.ops.base import Arg, Operator

__all__ = [
    "BROADCAST_ARGS",
    "DTYPE_NAMES",
    "NumericOperator",
    "broadcast_axis",
    "check_ufunc",
    "grad_dtype",
    "legacy_broadcast_view",
    "parse_dtype",
    "parse_shape",
    "present_args",
    "reduced_axes",
    "sum_to_shape",
]

# numpy names, plus Caffe2's TensorProto names (FLOAT is float32, as in Caffe2).
DTYPE_NAMES: dict[str, np.dtype[Any]] = {
    name: np.dtype(name) for name in (
        "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
        "float16", "float32", "float64")
}
DTYPE_NAMES.update({
    "BOOL": np.dtype(np.bool_), "INT8": np.dtype(np.int8), "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64), "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16), "FLOAT16": np.dtype(np.float16),
    "FLOAT": np.dtype(np.float32), "DOUBLE": np.dtype(np.float64),
})


def parse_dtype(name: str, op_type: str, arg_name: str) -> np.dtype[Any]:
    """The numpy dtype named ``name``; ValueError naming the op, argument and close matches."""
    found = DTYPE_NAMES.get(name)
    if found is None:
        close = difflib.get_close_matches(name, list(DTYPE_NAMES), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"{op_type}: unknown dtype {name!r} for argument {arg_name!r}{hint} "
                         f"(known: {', '.join(n for n in DTYPE_NAMES if n.islower())} and "
                         f"Caffe2's {', '.join(n for n in DTYPE_NAMES if n.isupper())})")
    return found


def parse_shape(value: Any, op_type: str, arg_name: str = "shape") -> tuple[int, ...]:
    """A shape argument as a tuple of non-negative ints; ValueError otherwise."""
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise ValueError(f"{op_type}: argument {arg_name!r} must be a list of non-negative "
                         f"ints, got {value!r}")
    return tuple(value)


def reduced_axes(full: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """The axes of ``full`` that numpy broadcasting stretched from ``shape``."""
    lead = len(full) - len(shape)
    return tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and full[lead + i] != 1)


def sum_to_shape(grad: np.ndarray, shape: tuple[int, ...], out: np.ndarray) -> None:
    """Write ``grad`` summed over its broadcast axes into ``out`` (of ``shape``)."""
    if grad.shape == shape:
        np.copyto(out, grad, casting="same_kind")
        return
    lead = grad.ndim - len(shape)
    np.sum(grad, axis=reduced_axes(grad.shape, shape), keepdims=True,
           out=out.reshape((1,) * lead + shape))


class NumericOperator(Operator):
    """An operator on tensors: typed inputs, dtype checks and reusable scratch buffers."""

    __slots__ = ("_scratch",)

    def setup(self) -> None:
        self._scratch: dict[str, np.ndarray] = {}

    def tensor_input(self, i: int) -> np.ndarray:
        """Input ``i`` as a tensor (BlobTypeError naming the blob if it holds anything else)."""
        return self.input_blob(i).get(np.ndarray)

    def float_input(self, i: int) -> np.ndarray:
        """Input ``i``, which must be a floating-point tensor."""
        x = self.input_blob(i).get(np.ndarray)
        if x.dtype.kind != "f":
            raise TypeError(f"{self.definition.type} needs a floating-point tensor, but input "
                            f"{i} (blob {self.definition.inputs[i]}) is {x.dtype}")
        return x

    def numeric_input(self, i: int) -> np.ndarray:
        """Input ``i``, which must be an int or floating-point tensor (not bool)."""
        x = self.input_blob(i).get(np.ndarray)
        if x.dtype.kind not in "iuf":
            raise TypeError(f"{self.definition.type} needs an int or floating-point tensor, "
                            f"but input {i} (blob {self.definition.inputs[i]}) is {x.dtype}")
        return x

    def inputs_read_before_writing(self) -> list[np.ndarray]:
        """Every input tensor; those whose blob is also an output are copied first.

        For ops that write several outputs in turn: without the copy, writing an
        earlier output in place would corrupt an input a later output still reads.
        "Also an output" means the same blob, however the names reach it.
        """
        values = [self.input_blob(i).get(np.ndarray) for i in range(len(self._input_names))]
        for i in self._aliased_inputs:
            values[i] = values[i].copy()
        return values

    def scratch(self, key: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A buffer private to this operator, reused while shape and dtype stay the same."""
        found = self._scratch.get(key)
        if found is None or found.shape != shape or found.dtype != dtype:
            found = np.empty(shape, dtype)
            self._scratch[key] = found
        return found

    def shape_error(self, message: str) -> ValueError:
        return ValueError(f"{self.definition.type}: {message}")


def present_args(g: Any, *names: str) -> dict[str, Any]:
    """The arguments among ``names`` that a gradient maker's forward op sets: its gradient
    ops get those and no defaults (as Caffe2's makers copy the forward arguments)."""
    return {name: g.op.args[name] for name in names if name in g.op.args}


def check_ufunc(ufunc: np.ufunc, inputs: tuple[np.dtype[Any], ...],
                out: np.dtype[Any]) -> None:
    """Raise numpy's own TypeError when ``ufunc`` has no loop for ``inputs`` or its result
    cannot be written to an ``out`` array ('same_kind' casting, as a call with ``out=``
    casts): before the op touches any output, so that a refused op changes nothing."""
    result = ufunc.resolve_dtypes((*inputs, None))[-1]
    if not np.can_cast(result, out, "same_kind"):
        raise TypeError(f"Cannot cast ufunc {ufunc.__name__!r} output from {result!r} to "
                        f"{out!r} with casting rule 'same_kind'")


def grad_dtype(x: np.ndarray, grad: np.ndarray) -> np.dtype[Any]:
    """The dtype of the gradient of ``x``: its own when floating, else the incoming one's."""
    return x.dtype if x.dtype.kind in "fc" else grad.dtype



# -- Caffe2's legacy broadcasting -------------------------------------------------------------

#: The arguments of Caffe2's binary elementwise ops that switch on its own broadcasting.
BROADCAST_ARGS: dict[str, Arg] = {
    "broadcast": Arg((bool, int), False,
                     doc="Caffe2's broadcasting: B is repeated over A's other dims, its dims "
                         "matched with A's starting at `axis`; the output has A's shape. "
                         "Without it, numpy broadcasting applies"),
    "axis": Arg(int, -1, doc="with `broadcast`: the dim of A where B's dims start "
                             "(-1: B's dims are A's last ones)"),
    "axis_str": Arg(str, "", doc="with `broadcast`: the axis as a letter of `order` "
                                 "(e.g. 'C'), instead of `axis`"),
    "order": Arg(str, "NCHW", doc="the dim order `axis_str` is looked up in"),
}


def broadcast_axis(op: Operator, required: bool = True) -> int | None:
    """The dim of A where Caffe2's broadcasting aligns B (-1: B's dims are A's last), from
    ``broadcast``/``axis``/``axis_str``/``order``; None when ``broadcast`` is off (numpy
    broadcasting). ``required=False`` (SumReduceLike) reads the axis without the switch.
    ValueError for the combinations Caffe2 refuses."""
    t = op.definition.type
    axis, axis_str, order = op.args["axis"], op.args["axis_str"], op.args["order"]
    if required and not op.args["broadcast"]:
        if axis != -1 or axis_str:
            raise ValueError(f"{t}: do not specify axis or axis_str if broadcast is not "
                             f"enabled (set broadcast=1)")
        return None
    if axis_str:
        if axis != -1:
            raise ValueError(f"{t}: args axis and axis_str cannot be used simultaneously")
        found = order.find(axis_str) if len(axis_str) == 1 else -1
        if found < 0:
            raise ValueError(f"{t}: unrecognizable axis string {axis_str!r} from order "
                             f"string {order!r}")
        return found
    if axis < -1:
        raise ValueError(f"{t}: broadcast axis must be -1 (B's dims are A's last ones) or a "
                         f"dim index >= 0, got {axis}")
    return axis


def legacy_broadcast_view(op: Operator, a: np.ndarray, b: np.ndarray, axis: int,
                          names: tuple[str, str] | None = None) -> np.ndarray:
    """``b`` viewed with ``a``'s number of dims as Caffe2's broadcasting places it.

    A one-element B is a scalar; otherwise B may not have more dims than A, its leading
    and trailing size-1 dims are dropped and the rest must equal A's dims from ``axis``
    on (``axis`` -1: B's dims are A's last ones). ``names`` are the blobs of A and B for
    the errors (default: inputs 0 and 1).
    """
    if b.size == 1:
        return b.reshape(())
    a_name, b_name = names or (op.definition.inputs[0], op.definition.inputs[1])
    t = op.definition.type
    if b.ndim > a.ndim:
        raise ValueError(f"{t}: with broadcast, B (blob {b_name}, shape {b.shape}) must not "
                         f"have more dims than A (blob {a_name}, shape {a.shape})")
    if axis == -1:
        axis = a.ndim - b.ndim
    if not 0 <= axis <= a.ndim - b.ndim:
        raise ValueError(f"{t}: broadcast axis should be in the range [0, "
                         f"{a.ndim - b.ndim}] for A (blob {a_name}, shape {a.shape}) and B "
                         f"(blob {b_name}, shape {b.shape}), but axis = {axis}")
    start = 0
    while start < b.ndim and b.shape[start] == 1:
        start += 1
    end = b.ndim - 1
    while end >= start and b.shape[end] == 1:
        end -= 1
    view = [1] * a.ndim
    for i in range(start, end + 1):
        if a.shape[axis + i] != b.shape[i]:
            raise ValueError(f"{t}: broadcast dimension mismatch: B (blob {b_name}, shape "
                             f"{b.shape}) placed at axis {axis} of A (blob {a_name}, shape "
                             f"{a.shape}) has {b.shape[i]} where A has {a.shape[axis + i]}")
        view[axis + i] = b.shape[i]
    return b.reshape(view)
