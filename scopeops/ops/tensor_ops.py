"""Shape operators: Flatten, ResizeLike, Concat and Split, with their gradients.

They move elements without arithmetic, so they take tensors of any dtype. Concat's
second output records how big each input was along the concatenation axis; Split
can take the same record as its second input, which is how a Concat's gradient
splits the output gradient back into the inputs' gradients.

Concat and Split read the axis from ``axis`` or, for 4-D images, from ``order``
("NCHW": 1, "NHWC": 3; the default is NCHW); giving both is refused. With
``add_axis`` (only honoured together with ``axis``) Concat stacks its inputs along
a new axis and Split removes the axis it splits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scopeops.ops.base import Arg, gradient, register
from scopeops.ops.numeric_base import NumericOperator, present_args

__all__ = ["ConcatOp", "FlattenOp", "ResizeLikeOp", "SplitOp"]

_ORDER_AXES = {"NCHW": 1, "NHWC": 3}


@register("Flatten", inputs=1, outputs=1, allow_inplace=True,
          args={"axis": Arg(int, 1, doc="dims before it become the rows, the rest the "
                                        "columns (0 <= axis <= the input's rank)")},
          doc="Y = X reshaped to 2-D: (product of dims[:axis], product of dims[axis:]). "
              "Any dtype.")
class FlattenOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        x = self.tensor_input(0)
        axis = self.args["axis"]
        if not 0 <= axis <= x.ndim:
            raise self.shape_error(f"axis {axis} must be in [0, {x.ndim}], the rank of the "
                                   f"input (blob {self.definition.inputs[0]}, shape "
                                   f"{x.shape})")
        shape = (int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:])))
        out = self.output(0, shape, x.dtype)
        if out is not x:
            np.copyto(out, x.reshape(shape))


@gradient("Flatten")
def _flatten_gradient(g: Any) -> list[Any]:
    return [g.make("ResizeLike", [g.GO(0), g.I(0)], [g.GI(0)])]


@register("ResizeLike", inputs=2, outputs=1, allow_inplace=True,
          doc="Y = the elements of input 0 in the shape of input 1, which must hold as many "
              "elements (Flatten's gradient). Any dtype.")
class ResizeLikeOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        x = self.tensor_input(0)
        shape = self.tensor_input(1).shape
        if x.size != int(np.prod(shape)):
            names = self.definition.inputs
            raise self.shape_error(f"input 0 (blob {names[0]}, shape {x.shape}) does not hold "
                                   f"as many elements as the shape {shape} of input 1 (blob "
                                   f"{names[1]})")
        out = self.output(0, shape, x.dtype)
        if out is not x:
            np.copyto(out, x.reshape(shape))


AXIS_ARGS = {
    "axis": Arg(int, None, doc="the axis (negative counts from the end); default from "
                               "`order`"),
    "order": Arg(str, None, doc="for 4-D images: 'NCHW' (axis 1, the default) or 'NHWC' "
                                "(axis 3)"),
    "add_axis": Arg((bool, int), False, doc="with `axis`: Concat stacks along a new axis, "
                                            "Split removes the axis it splits"),
}


def _axis_and_add(op: NumericOperator) -> tuple[int, bool]:
    """(axis, add_axis) from ``axis``/``order``/``add_axis``; ValueError as Caffe2 refuses."""
    t = op.definition.type
    axis, order = op.args.get("axis"), op.args.get("order")
    if axis is not None and order is not None:
        raise ValueError(f"{t}: you shouldn't specify both the axis and the order (in the "
                         f"case of 4-D images)")
    if axis is not None:
        return axis, bool(op.args.get("add_axis") or False)
    found = _ORDER_AXES.get("NCHW" if order is None else order)
    if found is None:
        raise ValueError(f"{t}: unsupported order {order!r} (use 'NCHW' or 'NHWC')")
    return found, False


def _canonical(op: NumericOperator, axis: int, ndim: int, name: str) -> int:
    if not -ndim <= axis < ndim:
        raise op.shape_error(f"axis {axis} is out of range for {name} of rank "
                             f"{ndim if ndim else 0}")
    return axis % ndim


@gradient("ResizeLike")
def _resize_like_gradient(g: Any) -> list[Any]:
    # Caffe2 refuses one; the elements only move, so dX is dY in X's shape (input 1 gives
    # only a shape and gets no gradient).
    return [g.make("ResizeLike", [g.GO(0), g.I(0)], [g.GI(0)])]


@register("Concat", inputs=(1, None), outputs=2, allow_inplace=True,
          args=dict(AXIS_ARGS),
          doc="(X0, X1, ...) -> (Y, split_info): Y = the inputs joined along the axis (all "
              "of one dtype, with the same dims except along the axis); split_info = an "
              "int32 tensor of each input's size along the axis. With `add_axis` the inputs, "
              "all of one shape, are stacked along a new axis (split_info all 1s).")
class ConcatOp(NumericOperator):
    __slots__ = ("concat_axis", "add_axis")

    def validate(self) -> None:
        self.concat_axis, self.add_axis = _axis_and_add(self)

    def run(self) -> None:
        names = self.definition.inputs
        xs = self.inputs_read_before_writing()
        first = xs[0]
        rank = first.ndim + (1 if self.add_axis else 0)
        axis = _canonical(self, self.concat_axis, rank, f"the inputs (blob {names[0]})")
        for k, x in enumerate(xs[1:], 1):
            if x.dtype != first.dtype:
                raise TypeError(f"Concat needs inputs of one dtype: input {k} (blob "
                                f"{names[k]}) is {x.dtype}, input 0 (blob {names[0]}) is "
                                f"{first.dtype}")
            fits = x.shape == first.shape if self.add_axis else (
                x.ndim == first.ndim
                and x.shape[:axis] + x.shape[axis + 1:] == first.shape[:axis]
                + first.shape[axis + 1:])
            if not fits:
                raise self.shape_error(f"input {k} (blob {names[k]}) has shape {x.shape}, "
                                       f"which does not fit input 0 (blob {names[0]}) of "
                                       f"shape {first.shape} along axis {axis}"
                                       f"{' (add_axis)' if self.add_axis else ''}")
        sizes = [1 if self.add_axis else x.shape[axis] for x in xs]
        if self.add_axis:
            shape = first.shape[:axis] + (len(xs),) + first.shape[axis:]
        else:
            shape = first.shape[:axis] + (sum(sizes),) + first.shape[axis + 1:]
        out = self.output(0, shape, first.dtype)
        if self.add_axis:
            np.stack(xs, axis=axis, out=out)
        else:
            np.concatenate(xs, axis=axis, out=out)
        np.copyto(self.output(1, (len(xs),), np.int32), sizes)


@gradient("Concat")
def _concat_gradient(g: Any) -> list[Any]:
    if g.GO(0) is None:
        return []
    args = present_args(g, "axis", "order", "add_axis")
    return [g.make("Split", [g.GO(0), g.O(1)], [g.GI(i) for i in range(len(g.op.inputs))],
                   **args)]


@register("Split", inputs=(1, 2), outputs=(1, None), allow_inplace=True,
          args={**AXIS_ARGS,
                "split": Arg((list, tuple), None, doc="the size of each part along the axis "
                                                      "(default: equal parts)")},
          doc="(X[, split]) -> (Y0, Y1, ...): X cut along the axis into one part per "
              "output, sized by the `split` argument or by the integer tensor input split "
              "(as Concat's split_info), or into equal parts. The sizes must add up to X's "
              "size along the axis. With `add_axis` every part has size 1 and the axis is "
              "removed.")
class SplitOp(NumericOperator):
    __slots__ = ("split_axis", "add_axis", "split_sizes")

    def validate(self) -> None:
        self.split_axis, self.add_axis = _axis_and_add(self)
        split = self.args.get("split")
        if split is not None:
            if len(self.definition.inputs) == 2:
                raise ValueError("Split: enforce fail: if you set split with an input blob, "
                                 "do not pass in split in the argument")
            if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                       for n in split):
                raise ValueError(f"Split: the split argument must be non-negative ints, got "
                                 f"{split!r}")
            if len(split) != len(self.definition.outputs):
                raise ValueError(f"Split: enforce fail: the number of splits specified "
                                 f"({len(split)}) should be equal to the number of outputs "
                                 f"({len(self.definition.outputs)})")
        self.split_sizes = None if split is None else [int(n) for n in split]

    def sizes(self, length: int) -> list[int]:
        """Each output's size along the axis (Caffe2's checks, with its 'enforce fail')."""
        names, n_out = self.definition.inputs, len(self.definition.outputs)
        if len(names) == 2:
            given = self.tensor_input(1)
            if given.dtype.kind not in "iu" or given.size != n_out:
                raise self.shape_error(f"enforce fail: the split tensor (blob {names[1]}) must "
                                       f"hold {n_out} integers, one per output, got "
                                       f"{given.dtype} of shape {given.shape}")
            sizes = [int(n) for n in given.reshape(-1)]
            if min(sizes) < 0:
                raise self.shape_error(f"enforce fail: negative split size in blob {names[1]}: "
                                       f"{sizes}")
        elif self.split_sizes is not None:
            sizes = self.split_sizes
        else:
            if length % n_out:
                raise self.shape_error(f"enforce fail: {length} % {n_out} == 0: if you did not "
                                       f"specify split explicitly, the size of the input "
                                       f"(blob {names[0]}) along the axis ({length}) should be "
                                       f"divisible by the number of outputs ({n_out})")
            sizes = [length // n_out] * n_out
        total = n_out if self.add_axis else sum(sizes)
        if total != length:
            raise self.shape_error(f"enforce fail: sum of split dimensions do not match: "
                                   f"should be {length}, the size of the input (blob "
                                   f"{names[0]}) along the axis, got {total}")
        return sizes

    def run(self) -> None:
        x = self.inputs_read_before_writing()[0]
        axis = _canonical(self, self.split_axis, x.ndim,
                          f"the input (blob {self.definition.inputs[0]})")
        sizes = self.sizes(x.shape[axis])
        start = 0
        for j, size in enumerate(sizes):
            if self.add_axis:
                part = np.take(x, start, axis=axis)
                start += 1
            else:
                part = x[(slice(None),) * axis + (slice(start, start + size),)]
                start += size
            np.copyto(self.output(j, part.shape, x.dtype), part)


@gradient("Split")
def _split_gradient(g: Any) -> list[Any]:
    # Caffe2 concatenates only the gradients that exist, which misplaces them when some
    # outputs have none; those get zeros of their output's shape here.
    ops: list[Any] = []
    parts: list[str] = []
    for j, name in enumerate(g.op.outputs):
        d_part = g.GO(j)
        if d_part is None:
            d_part = g.temp(f"{name}_zero_grad")
            ops.append(g.make("ConstantFill", [g.O(j)], [d_part], value=0.0))
        parts.append(d_part)
    args = present_args(g, "axis", "order", "add_axis")
    dx = g.GI(0)
    ops.append(g.make("Concat", parts, [dx, f"_{dx}_dims"], **args))
    return ops
