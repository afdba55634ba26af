"""Caffe2's ``hypothesis_test_util``: ``HypothesisTestCase`` and its strategies.

``assertReferenceChecks`` (outputs against a numpy reference, optionally gradients too),
``assertGradientChecks`` (finite differences, through :mod:`gradient_checker`) and
``assertDeviceChecks`` (every device agrees; the CPU only here). The strategies
(``tensor``, ``tensors``, ``dims``, ``gcs``...) build test data; ``device_options`` holds
the CPU option alone.

Caffe2's module loaded a hypothesis settings profile when imported; this one only
registers the profiles ``"sandcastle"``, ``"dev"`` and ``"debug"`` (load one with
``hypothesis.settings.load_profile``), leaving hypothesis' global settings alone.
"""

from __future__ import annotations

import contextlib
import copy
import os
from typing import Any, Callable, Iterator

import hypothesis
import hypothesis.extra.numpy
import hypothesis.strategies as st
import numpy as np

from scopeops.caffe2.proto import caffe2_pb2
from scopeops.caffe2.python import core, device_checker, gradient_checker, test_util, workspace

__all__ = [
    "HypothesisTestCase", "arrays", "cpu_do", "device_checker_device_options",
    "device_options", "dims", "elements_of_type", "expanded_device_options", "gcs",
    "gcs_cpu_only", "gcs_gpu_only", "gpu_do", "gradient_checker_device_option",
    "is_sandcastle", "is_travis", "lengths", "segment_ids", "temp_workspace", "tensor",
    "tensor1d", "tensors", "tensors1d",
]

_PROFILE: dict[str, Any] = dict(suppress_health_check=[hypothesis.HealthCheck.too_slow],
                                database=None, deadline=None)
hypothesis.settings.register_profile("sandcastle", derandomize=True, max_examples=100,
                                     verbosity=hypothesis.Verbosity.verbose, **_PROFILE)
hypothesis.settings.register_profile("dev", max_examples=10,
                                     verbosity=hypothesis.Verbosity.verbose, **_PROFILE)
hypothesis.settings.register_profile("debug", max_examples=1000,
                                     verbosity=hypothesis.Verbosity.verbose, **_PROFILE)


def is_sandcastle() -> bool:
    return os.getenv("SANDCASTLE") == "1" or os.getenv("TW_JOB_USER") == "sandcastle"


def is_travis() -> bool:
    return "TRAVIS" in os.environ


def dims(min_value: int = 1, max_value: int = 5) -> Any:
    return st.integers(min_value=min_value, max_value=max_value)


def elements_of_type(dtype: Any = np.float32, filter_: Callable[[Any], bool] | None = None
                     ) -> Any:
    """Element values for arrays of ``dtype``: floats in [-1, 1], non-negative ints,
    booleans."""
    kind = np.dtype(dtype)
    if kind in (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)):
        elements = st.floats(min_value=-1.0, max_value=1.0, width=8 * kind.itemsize)
    elif kind == np.dtype(np.int32):
        elements = st.integers(min_value=0, max_value=2 ** 31 - 1)
    elif kind == np.dtype(np.int64):
        elements = st.integers(min_value=0, max_value=2 ** 63 - 1)
    elif kind == np.dtype(np.bool_):
        elements = st.booleans()
    else:
        raise ValueError("Unexpected dtype without elements provided")
    return elements if filter_ is None else elements.filter(filter_)


def arrays(dims: Any, dtype: Any = np.float32, elements: Any = None) -> Any:
    if elements is None:
        elements = elements_of_type(dtype)
    return hypothesis.extra.numpy.arrays(dtype, dims, elements=elements)


def tensor(min_dim: int = 1, max_dim: int = 4, dtype: Any = np.float32, elements: Any = None,
           **kwargs: Any) -> Any:
    """Arrays of ``min_dim`` to ``max_dim`` dimensions, each of ``dims(**kwargs)``."""
    shapes = st.lists(dims(**kwargs), min_size=min_dim, max_size=max_dim)
    return shapes.flatmap(lambda shape: arrays(shape, dtype, elements))


def tensor1d(min_len: int = 1, max_len: int = 64, dtype: Any = np.float32,
             elements: Any = None) -> Any:
    return tensor(1, 1, dtype, elements, min_value=min_len, max_value=max_len)


def tensors(n: int, min_dim: int = 1, max_dim: int = 4, dtype: Any = np.float32,
            elements: Any = None, **kwargs: Any) -> Any:
    """Lists of ``n`` arrays of one common shape."""
    shapes = st.lists(dims(**kwargs), min_size=min_dim, max_size=max_dim)
    return shapes.flatmap(
        lambda shape: st.lists(arrays(shape, dtype, elements), min_size=n, max_size=n))


def tensors1d(n: int, min_len: int = 1, max_len: int = 64, dtype: Any = np.float32,
              elements: Any = None) -> Any:
    return tensors(n, 1, 1, dtype, elements, min_value=min_len, max_value=max_len)


def segment_ids(size: int, is_sorted: bool) -> Any:
    """Segment ids for ``size`` rows (sorted: non-decreasing from 0)."""
    if size == 0:
        return st.just(np.empty(shape=[0], dtype=np.int32))
    if is_sorted:
        return arrays([size], dtype=np.int32, elements=st.booleans()).map(
            lambda m: np.cumsum(m, dtype=np.int32) - m[0])
    return arrays([size], dtype=np.int32, elements=st.integers(min_value=0, max_value=2 * size))


def lengths(size: int, min_segments: int | None = None, max_segments: int | None = None,
            **kwargs: Any) -> Any:
    """Segment lengths (int32) summing to ``size``."""
    if min_segments is None:
        min_segments = 0
    if max_segments is None:
        max_segments = size
    assert min_segments >= 0 and min_segments <= max_segments
    if size == 0 and max_segments == 0:
        return st.just(np.empty(shape=[0], dtype=np.int32))
    assert max_segments > 0, "size is not 0, need at least one segment"
    return st.integers(min_value=max(min_segments - 1, 0), max_value=max_segments - 1).flatmap(
        lambda num_borders: hypothesis.extra.numpy.arrays(
            np.int32, num_borders, elements=st.integers(min_value=0, max_value=size))
    ).map(lambda x: np.append(x, np.array([0, size], dtype=np.int32))).map(sorted).map(
        lambda x: np.ediff1d(x).astype(np.int32))


cpu_do = caffe2_pb2.DeviceOption()
gpu_do = core.DeviceOption(caffe2_pb2.CUDA)
device_options = [cpu_do]
expanded_device_options = [cpu_do]


def device_checker_device_options() -> Any:
    return st.just(device_options)


def gradient_checker_device_option() -> Any:
    return st.sampled_from(device_options)


gcs = dict(gc=gradient_checker_device_option(), dc=device_checker_device_options())
gcs_cpu_only = dict(gc=st.sampled_from([cpu_do]), dc=st.just([cpu_do]))
gcs_gpu_only = dict(gc=st.sampled_from([gpu_do]), dc=st.just([gpu_do]))


@contextlib.contextmanager
def temp_workspace(name: Any = b"temp_ws") -> Iterator[None]:
    """Switch to workspace ``name`` (created if missing); reset it and switch back after."""
    old = workspace.CurrentWorkspace()
    workspace.SwitchWorkspace(name, True)
    try:
        yield
    finally:
        workspace.ResetWorkspace()
        workspace.SwitchWorkspace(old)


class HypothesisTestCase(test_util.TestCase):
    """A TestCase with Caffe2's operator checks."""

    def assertDeviceChecks(self, device_options: list[Any], op: Any, inputs: list[Any],
                           outputs_to_check: list[int], input_device_options: Any = None,
                           threshold: float = 0.01) -> None:
        checker = device_checker.DeviceChecker(threshold, device_options=device_options)
        self.assertTrue(checker.CheckSimple(op, inputs, outputs_to_check,
                                            input_device_options))

    def assertGradientChecks(self, device_option: Any, op: Any, inputs: list[Any],
                             outputs_to_check: int, outputs_with_grads: list[int],
                             grad_ops: Any = None, threshold: float = 0.005,
                             stepsize: float = 0.05, input_device_options: Any = None) -> None:
        """Check the gradient of input ``outputs_to_check`` (Caffe2's name for it) for
        the loss over ``outputs_with_grads``."""
        checker = gradient_checker.GradientChecker(
            stepsize=stepsize, threshold=threshold, device_option=device_option,
            workspace_name=str(device_option))
        res, grad, grad_estimated = checker.CheckSimple(
            op, inputs, outputs_to_check, outputs_with_grads, grad_ops=grad_ops,
            input_device_options=input_device_options)
        self.assertEqual(grad.shape, grad_estimated.shape)
        self.assertTrue(res, "Gradient check failed for input " +
                        str(op.input[outputs_to_check]))

    def _assertGradReferenceChecks(self, op: Any, inputs: list[Any], ref_outputs: Any,
                                   output_to_grad: str, grad_reference: Callable[..., Any],
                                   threshold: float = 1e-4) -> None:
        grad_blob_name = output_to_grad + "_grad"
        grad_ops, grad_map = core.GradientRegistry.GetBackwardPass(
            [op], {output_to_grad: grad_blob_name})
        output_to_grad_value = workspace.FetchBlob(output_to_grad)
        grad_ref_outputs = grad_reference(output_to_grad_value, ref_outputs, inputs)
        workspace.FeedBlob(grad_blob_name, output_to_grad_value)
        workspace.RunOperatorsOnce(grad_ops)
        self.assertEqual(len(grad_ref_outputs), len(inputs))
        for (name, ref) in zip(op.input, grad_ref_outputs, strict=True):
            grad_names = grad_map.get(name)
            if grad_names is None:
                self.assertIsNone(ref)
                continue
            np.testing.assert_allclose(
                workspace.FetchBlob(str(grad_names)), ref, rtol=threshold, atol=threshold,
                err_msg=f"Gradient {name} is not matching the reference")

    def assertReferenceChecks(self, device_option: Any, op: Any, inputs: list[Any],
                              reference: Callable[..., Any], input_device_options: Any = None,
                              threshold: float = 1e-4, output_to_grad: str | None = None,
                              grad_reference: Callable[..., Any] | None = None,
                              atol: float | None = None,
                              outputs_to_check: list[int] | None = None) -> list[Any]:
        """Run ``op`` on ``inputs`` and compare its outputs with ``reference(*inputs)``
        (a tuple or list of arrays); returns the outputs."""
        op = copy.deepcopy(op)
        op.device_option.CopyFrom(device_option)
        input_device_options = input_device_options or {}
        with temp_workspace():
            if len(op.input) > len(inputs):
                raise ValueError(f"must supply an input for each input on the op: "
                                 f"{op.input} vs {inputs}")
            for name, value in zip(op.input, inputs, strict=False):
                workspace.FeedBlob(name, value,
                                   device_option=input_device_options.get(name, device_option))
            net = core.Net("opnet")
            net.Proto().op.extend([op])
            workspace.RunNetOnce(net)
            reference_outputs = reference(*inputs)
            if not isinstance(reference_outputs, (tuple, list)):
                raise RuntimeError("You are providing a wrong reference implementation. A "
                                   "proper one should return a tuple/list of numpy arrays.")
            if not outputs_to_check:
                self.assertEqual(len(reference_outputs), len(op.output))
                outputs_to_check = list(range(len(op.output)))
            outs = []
            for index, ref in zip(outputs_to_check, reference_outputs, strict=False):
                name = op.output[index]
                output = workspace.FetchBlob(name)
                if output.dtype.kind in ("S", "O"):
                    np.testing.assert_array_equal(output, ref)
                else:
                    np.testing.assert_allclose(
                        output, ref, atol=threshold if atol is None else atol, rtol=threshold,
                        err_msg=f"Output {name} is not matching the reference")
                outs.append(output)
            if grad_reference is not None:
                assert output_to_grad is not None, \
                    "If grad_reference is set, output_to_grad has to be set as well"
                with core.DeviceScope(device_option):
                    self._assertGradReferenceChecks(op, inputs, reference_outputs,
                                                    output_to_grad, grad_reference,
                                                    threshold=threshold)
            return outs

    def assertValidationChecks(self, device_option: Any, op: Any, inputs: list[Any],
                               validator: Callable[..., Any], input_device_options: Any = None,
                               as_kwargs: bool = True, init_net: Any = None) -> None:
        if as_kwargs:
            assert len(set(list(op.input) + list(op.output))) == \
                len(op.input) + len(op.output), \
                "in-place ops are not supported in as_kwargs mode"
        op = copy.deepcopy(op)
        op.device_option.CopyFrom(device_option)
        input_device_options = input_device_options or {}
        with temp_workspace():
            for name, value in zip(op.input, inputs, strict=False):
                workspace.FeedBlob(name, value,
                                   device_option=input_device_options.get(name, device_option))
            if init_net is not None:
                workspace.RunNetOnce(init_net)
            workspace.RunOperatorOnce(op)
            outputs = [workspace.FetchBlob(n) for n in op.output]
            if as_kwargs:
                validator(**dict(zip(list(op.input) + list(op.output), inputs + outputs,
                                     strict=True)))
            else:
                validator(inputs=inputs, outputs=outputs)

    def assertRunOpRaises(self, device_option: Any, op: Any, inputs: list[Any],
                          input_device_options: Any = None,
                          exception: Any = (Exception,), regexp: str | None = None) -> None:
        op = copy.deepcopy(op)
        op.device_option.CopyFrom(device_option)
        input_device_options = input_device_options or {}
        with temp_workspace():
            for name, value in zip(op.input, inputs, strict=False):
                workspace.FeedBlob(name, value,
                                   device_option=input_device_options.get(name, device_option))
            if regexp is None:
                self.assertRaises(exception, workspace.RunOperatorOnce, op)
            else:
                self.assertRaisesRegex(exception, regexp, workspace.RunOperatorOnce, op)
