"""Print and ZeroGradient: operators with an input and no outputs."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from scopeops.ops.base import NO_GRADIENT, Arg, Operator, gradient, register

__all__ = ["PrintOp", "ZeroGradientOp"]

DEFAULT_PRINT_LIMIT = 1000     # Caffe2's TensorPrinter default


@register("Print", inputs=1, outputs=0, allow_inplace=True, gradient=NO_GRADIENT,
          args={"limit": Arg(int, 0, doc="print at most this many values (0: 1000)"),
                "every_n": Arg(int, 1, doc="print on runs 1, 1 + n, 1 + 2n, ... (>= 1)")},
          doc="Prints its input blob to standard output (sys.stdout, so it can be "
              "redirected): for a tensor, `Tensor <blob> of type <dtype>. Dims: (<shape>): "
              "<values>` with the values flattened and cut at `limit`; for anything else, "
              "the type it holds. Writes no blob. Caffe2's `to_file` is not supported "
              "(redirect sys.stdout instead).")
class PrintOp(Operator):
    __slots__ = ("runs",)

    def validate(self) -> None:
        if self.args["every_n"] < 1:
            raise ValueError(f"Print: every_n must be >= 1, got {self.args['every_n']}")
        if self.args["limit"] < 0:
            raise ValueError(f"Print: limit must be >= 0, got {self.args['limit']}")
        self.runs = 0

    def run(self) -> None:
        self.runs += 1
        if (self.runs - 1) % self.args["every_n"]:
            return
        print(self.describe(), file=sys.stdout)

    def describe(self) -> str:
        name = self.definition.inputs[0]
        blob = self.input_blob(0)
        if blob.is_empty():
            return f"Blob {name} is empty"
        value = blob.get()
        if not isinstance(value, np.ndarray):
            return f"Blob {name} holds a {type(value).__name__}"
        limit = self.args["limit"] or DEFAULT_PRINT_LIMIT
        flat = value.reshape(-1)
        shown = ", ".join(str(v) for v in flat[:limit].tolist())
        more = f", ... ({flat.size - limit} more)" if flat.size > limit else ""
        dims = ", ".join(str(d) for d in value.shape)
        return f"Tensor {name} of type {value.dtype}. Dims: ({dims}): {shown}{more}"


@register("ZeroGradient", inputs=1, outputs=0, allow_inplace=True,
          doc="Does nothing when run; its gradient is a zero fill of its input's gradient. "
              "Add it on an output whose gradient an op needs but nothing provides (e.g. "
              "LSTMUnit's cell state at the last step).")
class ZeroGradientOp(Operator):
    __slots__ = ()

    def run(self) -> None:
        """Nothing to compute: the op exists for its gradient."""


@gradient("ZeroGradient")
def _zero_gradient_gradient(g: Any) -> list[Any]:
    return [g.make("ConstantFill", [g.I(0)], [g.GI(0)], value=0.0)]
