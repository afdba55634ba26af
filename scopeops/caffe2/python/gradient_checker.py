"""Caffe2's ``gradient_checker``: ``GradientChecker`` and ``NetGradientChecker``.

Both compare analytic gradients with central finite differences, with Caffe2's losses
and acceptance rules. The computation is scopeops': the backward pass comes from
:func:`scopeops.add_gradient_ops` and the finite differences from
:func:`scopeops.testing.gradient_check` (which runs in float64). The checks run in
workspaces of their own (reading through to the current workspace for blobs they are not
given), so the current workspace is left as it was.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scopeops import testing
from scopeops.caffe2.proto import caffe2_pb2
from scopeops.caffe2.python import _import_c_extension as C
from scopeops.caffe2.python import core
from scopeops.caffe2.translate import netdef_to_native, operator_to_native
from scopeops.defs import NetDef
from scopeops.gradients import add_gradient_ops
from scopeops.net import create_operator
from scopeops.ops.executor import NetExecutor
from scopeops.workspace import Workspace as NativeWorkspace

__all__ = ["GradientChecker", "NetGradientChecker"]

_LOSS = "_caffe2_gradient_checker"
_NO_TOLERANCE = float("inf")   # gradient_check reports; the Caffe2 rule is applied here


def _reading_current() -> NativeWorkspace:
    return NativeWorkspace(shared=C.current().native)


def _inputs(names: Any, values: Any) -> dict[str, np.ndarray]:
    return {str(name): np.asarray(value) for name, value in zip(names, values, strict=False)}


class GradientChecker:
    """Checks the gradient of one operator for the loss ``sum(output ** 2) / 2`` over the
    outputs ``outputs_with_grads`` (Caffe2's loss)."""

    def __init__(self, stepsize: float, threshold: float, device_option: Any = None,
                 workspace_name: str = "gradient_check", input_device_options: Any = None
                 ) -> None:
        self._stepsize = stepsize
        self._threshold = threshold
        self._device_option = device_option or caffe2_pb2.DeviceOption()
        self._workspace_name = workspace_name
        self._input_device_options = input_device_options or {}

    def CheckSimple(self, op: Any, inputs: list[Any], input_to_check: int,
                    outputs_with_grads: list[int], grad_ops: Any = None,
                    input_device_options: Any = None) -> tuple[bool, np.ndarray, np.ndarray]:
        """``(ok, analytic gradient, estimated gradient)`` of input ``input_to_check``.

        ``ok`` is Caffe2's rule: every element satisfies ``np.isclose(analytic, estimate,
        atol=threshold, rtol=threshold)``. Sets ``op``'s device option, as Caffe2 does.
        """
        if grad_ops is not None:
            raise NotImplementedError("GradientChecker.CheckSimple(grad_ops=...): the "
                                      "gradient ops come from scopeops' gradient makers")
        op.device_option.CopyFrom(self._device_option)
        forward = operator_to_native(op)
        ops = [forward]
        losses = []
        for index in outputs_with_grads:
            output = forward.outputs[index]
            square, total = f"{_LOSS}/{index}/square", f"{_LOSS}/{index}/sum"
            ops += [create_operator("Sqr", [output], [square], device_option=None),
                    create_operator("SumElements", [square], [total], device_option=None)]
            losses.append(total)
        ops += [create_operator("Sum", losses, [f"{_LOSS}/sum"], device_option=None),
                create_operator("Scale", [f"{_LOSS}/sum"], [f"{_LOSS}/loss"], scale=0.5,
                                device_option=None)]
        values = _inputs(op.input, inputs)
        name = str(op.input[input_to_check])
        result = testing.gradient_check(
            NetDef(name=_LOSS, ops=ops), values, loss=f"{_LOSS}/loss", wrt=[name],
            eps=self._stepsize, rtol=0.0, atol=_NO_TOLERANCE,
            workspace_factory=_reading_current)
        check = result.blobs[name]
        if not np.all(np.isfinite(check.analytic)) and check.problem:
            raise Exception(f"Mismatched gradient shapes: estimated ({check.numeric.shape}), "
                            f"grad: {check.problem}")
        dtype = values[name].dtype if values[name].dtype.kind == "f" else np.float64
        grad = check.analytic.astype(dtype)
        estimate = check.numeric.astype(dtype)
        close = np.isclose(grad, estimate, atol=self._threshold, rtol=self._threshold)
        if not close.all():
            print("Failed. [idx, grad, grad_estimate] are:")
            for position in np.argwhere(~close):
                where = tuple(int(i) for i in position)
                print(list(where), grad[where], estimate[where])
        return bool(close.all()), grad, estimate


def _assert_close(value1: Any, value2: Any, threshold: float, err_msg: str = "") -> tuple[
        float, float]:
    np.testing.assert_allclose(value1, value2, atol=threshold, rtol=threshold,
                               err_msg=err_msg)
    delta = np.abs(np.asarray(value1) - np.asarray(value2)).flatten()
    return float(np.mean(delta)), float(np.max(delta)) if delta.size else 0.0


class NetGradientChecker:
    """Gradient checks of whole nets, for the loss ``sum`` of all elements of the
    outputs with gradients (Caffe2's), and comparisons of several nets."""

    @staticmethod
    def _with_loss(net: core.Net, outputs_with_grad: list[Any]) -> tuple[NetDef, str]:
        netdef = netdef_to_native(net.Proto()).copy()
        totals = []
        for k, output in enumerate(outputs_with_grad):
            total = f"{_LOSS}/{k}/sum"
            netdef.ops.append(create_operator("SumElements", [str(output)], [total],
                                              device_option=None))
            totals.append(total)
        netdef.ops.append(create_operator("Sum", totals, [f"{_LOSS}/loss"],
                                          device_option=None))
        return netdef, f"{_LOSS}/loss"

    @staticmethod
    def Check(net: core.Net, outputs_with_grad: list[Any], input_values: dict[Any, Any],
              input_to_check: Any, step_size: float = 0.0001, threshold: float = 0.05,
              print_net: bool = True) -> tuple[float, float]:
        """Compare the gradient of ``input_to_check`` with finite differences;
        AssertionError when they differ. Returns the mean and max absolute difference."""
        netdef, loss = NetGradientChecker._with_loss(net, outputs_with_grad)
        values = {str(k): np.asarray(v) for k, v in input_values.items()}
        name = str(input_to_check)
        result = testing.gradient_check(netdef, values, loss=loss, wrt=[name], eps=step_size,
                                        rtol=0.0, atol=_NO_TOLERANCE,
                                        workspace_factory=_reading_current)
        check = result.blobs[name]
        if check.gradient_blob is None:
            raise AssertionError(f"{name} has no gradient, cannot check net gradient.")
        err_msg = f"Error in gradient check for net_copy {net.Name()}"
        if print_net:
            err_msg += f": {net.Proto()}"
        return _assert_close(check.analytic, check.numeric, threshold, err_msg)

    @staticmethod
    def CompareNets(nets: list[core.Net], outputs: list[list[Any]],
                    outputs_with_grad_ids: list[int], inputs_with_grads: list[Any],
                    input_values: dict[Any, Any] | None = None, threshold: float = 0.0000001,
                    print_net_images: bool = False) -> None:
        """Run each net with its backward pass (gradients of ones for the outputs with
        gradients) and assert that forward outputs and input gradients all agree."""
        values = {str(k): C.feed_value(v) for k, v in (input_values or {}).items()}
        results = []
        for net, net_outputs in zip(nets, outputs, strict=True):
            netdef = netdef_to_native(net.Proto()).copy()
            seeds = [str(net_outputs[i]) for i in outputs_with_grad_ids]
            grads = add_gradient_ops(netdef, seeds)
            ws = _reading_current()
            for name, value in values.items():
                ws.feed_blob(name, value.copy())
            NetExecutor(netdef, ws).run()
            forward = [np.array(ws.fetch_blob(str(o))) for o in net_outputs]
            for blob in inputs_with_grads:
                assert str(blob) in grads, \
                    f"{blob} has no gradient, cannot check net gradient."
            gradients = {str(b): np.array(ws.fetch_blob(grads[str(b)]))
                         for b in inputs_with_grads}
            results.append((forward, gradients, net_outputs))
        first_forward, first_grads, first_outputs = results[0]
        for forward, gradients, net_outputs in results[1:]:
            for index, (a, b) in enumerate(zip(first_forward, forward, strict=True)):
                _assert_close(a, b, threshold,
                              f"Different forward pass results for output id {index}. "
                              f"Corresponding output blobs: {first_outputs[index]} and "
                              f"{net_outputs[index]}")
            assert gradients.keys() == first_grads.keys()
            for blob, grad in gradients.items():
                _assert_close(first_grads[blob], grad, threshold,
                              f"Different gradients for input {blob}")
