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

from scopeops.ops.base import Operator

__all__ = [
    "DTYPE_NAMES",
    "NumericOperator",
    "grad_dtype",
    "parse_dtype",
    "parse_shape",
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
        return self._in_blobs[i].get(np.ndarray)

    def float_input(self, i: int) -> np.ndarray:
        """Input ``i``, which must be a floating-point tensor."""
        x = self._in_blobs[i].get(np.ndarray)
        if x.dtype.kind != "f":
            raise TypeError(f"{self.definition.type} needs a floating-point tensor, but input "
                            f"{i} (blob {self.definition.inputs[i]}) is {x.dtype}")
        return x

    def numeric_input(self, i: int) -> np.ndarray:
        """Input ``i``, which must be an int or floating-point tensor (not bool)."""
        x = self._in_blobs[i].get(np.ndarray)
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
        values = [self._in_blobs[i].get(np.ndarray) for i in range(len(self._in_blobs))]
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


def grad_dtype(x: np.ndarray, grad: np.ndarray) -> np.dtype[Any]:
    """The dtype of the gradient of ``x``: its own when floating, else the incoming one's."""
    return x.dtype if x.dtype.kind in "fc" else grad.dtype

