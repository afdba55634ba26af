"""The compiled dispatch (scopeops/ops/_dispatch.pyx) against the general path.

A built-in operator with a kernel runs it for the common case and otherwise falls back
to its Python ``run()``. Whatever the inputs (dtypes, shapes, broadcasting, in place,
outputs that exist with another shape or dtype, values that are not tensors), a net
whose operator has its kernel must end exactly as the same net with the kernel
removed: the same values, dtypes and shapes in every blob, or the same error class,
and the same output blob objects (a kernel writes into the buffers the general path
would write into, never replaces a blob).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scopeops as so
from scopeops.ops import base

CONTROL = {"Do", "If", "While"}
KERNEL_OPS = sorted(name for name in base.registered_operators()
                    if name not in CONTROL
                    and getattr(base.lookup(name).cls, "_fast_path", None) is not None)
DTYPES = [np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8, np.bool_,
          np.complex64]
SHAPES = [(), (1,), (3,), (2, 3), (3, 3), (4, 2)]
NAMES = ["a", "b", "c", "d"]


def test_the_kernel_ops_are_the_ones_the_fast_paths_cover():
    assert {"Copy", "Add", "Mul", "Tanh", "TanhGradient", "MulGradient", "FC",
            "FCGradient", "Sum", "AveragedLoss", "LT"} <= set(KERNEL_OPS)


@st.composite
def values(draw):
    kind = draw(st.sampled_from(["tensor"] * 8 + ["int", "list", "str", "view", "fortran"]))
    if kind == "int":
        return draw(st.integers(-3, 3))
    if kind == "list":
        return [1.0, 2.0]
    if kind == "str":
        return "text"
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(st.sampled_from(SHAPES))
    data = draw(st.lists(st.integers(-3, 3), min_size=12, max_size=12))
    array = (np.array(data[:int(np.prod(shape))], dtype=np.float64) / 2).reshape(shape)
    array = array.astype(dtype)
    if kind == "view" and array.ndim == 2:
        return array.T                        # not C-contiguous
    if kind == "fortran" and array.ndim == 2:
        return np.asfortranarray(array)
    return array


@st.composite
def cases(draw, ops=KERNEL_OPS):
    """(type, inputs, outputs, feeds, args) of an op drawn from ``ops``."""
    op_type = draw(st.sampled_from(ops))
    schema = base.lookup(op_type)
    low_in, low_out = schema.min_inputs, schema.min_outputs
    n_in = draw(st.integers(low_in, max(low_in, min(schema.max_inputs or 4, 4))))
    n_out = draw(st.integers(low_out, max(low_out, min(schema.max_outputs or 3, 3))))
    inputs = [draw(st.sampled_from(NAMES)) for _ in range(n_in)]
    outputs = [draw(st.sampled_from(NAMES + ["out0", "out1", "out2"])) for _ in range(n_out)]
    # Blobs: every input exists; an output may exist already (with any value) or not.
    feeds = {name: draw(values()) for name in set(inputs)}
    for name in outputs:
        if name not in feeds and draw(st.booleans()):
            feeds[name] = draw(values())
    args = {}
    if "broadcast" in schema.args and draw(st.booleans()):
        args["broadcast"] = 1
    return op_type, inputs, outputs, feeds, args


@st.composite
def fc_cases(draw):
    """FC and FCGradient with shapes that fit (mostly), so the matrix kernels run."""
    op_type = draw(st.sampled_from(["FC", "FCGradient"]))
    n, k, m = (draw(st.integers(1, 4)) for _ in range(3))
    dtype = draw(st.sampled_from([np.float32, np.float32, np.float64, np.float16, np.int32]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))

    def array(*shape):
        if draw(st.integers(0, 9)) == 0:      # now and then a shape that does not fit
            shape = shape + (2,)
        return (rng.integers(-3, 4, size=shape) / 2).astype(dtype)

    x, w = array(n, k), array(m, k)
    if op_type == "FC":
        feeds = {"x": x, "w": w, "b": array(m)}
        inputs, n_out = ["x", "w", "b"], 1
    else:
        feeds = {"x": x, "w": w, "dy": array(n, m)}
        inputs, n_out = ["x", "w", "dy"], draw(st.sampled_from([2, 3]))
    pool = inputs + ["out0", "out1", "out2"]
    outputs = [draw(st.sampled_from(pool)) if draw(st.integers(0, 4)) == 0 else f"out{i}"
               for i in range(n_out)]
    for name in outputs:
        if name not in feeds and draw(st.booleans()):
            feeds[name] = draw(st.sampled_from([np.zeros((n, m), dtype), np.zeros(m, dtype),
                                                np.zeros((m, k), dtype), 1.5]))
    return op_type, inputs, outputs, feeds, {}


def one_op_net(op_type, inputs, outputs, feeds, args):
    """A workspace holding copies of ``feeds``, and the one-op net built there:
    ``(workspace, executor)``. A refused build raises."""
    ws = so.Workspace()
    for name, value in feeds.items():
        ws.feed_blob(name, np.copy(value) if isinstance(value, np.ndarray) else value)
    net = so.Net("n")
    net.add_op(op_type, inputs, outputs, **args)
    return ws, ws.create_net(net)


def run_once(op_type, inputs, outputs, feeds, args, kernel):
    try:
        ws, executor = one_op_net(op_type, inputs, outputs, feeds, args)
    except Exception as exc:       # refused when built: the same for both, no kernel involved
        return ("build", type(exc)), None
    if not kernel:
        for op in executor.operators:
            op._set_kernel(None)
    blobs_before = {name: ws.get_blob(name) for name in ws.blobs()}
    try:
        for _ in range(2):         # the second run takes the paths of a reused net
            executor.run()
    except Exception as exc:
        outcome = ("error", type(exc))
    else:
        outcome = ("ok", None)
    state = {}
    for name in sorted(ws.blobs()):
        blob = ws.get_blob(name)
        same_object = blobs_before.get(name) is blob if name in blobs_before else None
        value = None if blob.is_empty() else blob.get()
        if isinstance(value, np.ndarray):
            state[name] = (type(value), value.dtype, value.shape, value.tobytes(), same_object)
        else:
            state[name] = (type(value), repr(value), same_object)
    return outcome, state


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(cases(), fc_cases()))
def test_a_kernel_ends_exactly_as_the_general_path(case):
    with np.errstate(all="ignore"):
        fast = run_once(*case, kernel=True)
        general = run_once(*case, kernel=False)
    assert fast == general, case


@pytest.mark.parametrize("op_type", ["Copy", "Add", "Tanh", "FC"])
def test_the_kernel_is_the_path_taken_for_plain_float32_tensors(op_type):
    # Without this, the comparison above could pass with kernels that always decline.
    ws = so.Workspace()
    x = np.ones((3, 3), np.float32)
    for name in ("a", "b", "c"):
        ws.feed_blob(name, x.copy())
    ws.feed_blob("bias", np.ones(3, np.float32))
    inputs = {"Copy": ["a"], "Add": ["a", "b"], "Tanh": ["a"], "FC": ["a", "b", "bias"]}
    net = so.Net("n")
    net.add_op(op_type, inputs[op_type], ["c"])
    executor = ws.create_net(net)
    executor.run()
    op = executor.operators[0]
    with python_runs(op) as calls:
        executor.run()
        assert calls == []          # the kernel ran: run() was not called
        op._set_kernel(None)
        executor.run()
        assert calls == [1]         # without it, the general path


@contextlib.contextmanager
def python_runs(op):
    """A list that gets an item each time the Python run() of ``op``'s class is called."""
    calls = []
    cls = type(op)
    had_own_run = "run" in cls.__dict__
    original_run = cls.run

    def spy(self):
        calls.append(1)
        return original_run(self)

    cls.run = spy
    try:
        yield calls
    finally:
        if had_own_run:
            cls.run = original_run
        else:
            del cls.run


@pytest.mark.parametrize("depth", [0, 1, 3])
@pytest.mark.parametrize("out", [None, np.zeros(1, np.bool_), np.ones(1, np.bool_),
                                 np.zeros(1, np.float32), np.zeros(2, np.bool_),
                                 np.zeros((1, 1), np.bool_), "text"])
def test_has_scope_kernel_ends_exactly_as_the_general_path(depth, out):
    def run(kernel):
        ws = so.Workspace()
        stack = so.WorkspaceStack()
        for _ in range(depth):
            stack.push_forward_workspace(ws)
        ws.feed_blob("scope", stack)
        if out is not None:
            ws.feed_blob("has", np.copy(out) if isinstance(out, np.ndarray) else out)
        net = so.Net("n")
        net.HasScope(["scope"], ["has"])
        executor = ws.create_net(net)
        if not kernel:
            executor.operators[0]._set_kernel(None)
        before = ws.get_blob("has")
        executor.run()
        executor.run()
        value = ws.fetch_blob("has")
        return value.dtype, value.shape, value.tolist(), ws.get_blob("has") is before

    fast = run(kernel=True)
    assert fast == run(kernel=False)
    assert fast[:3] == (np.dtype(np.bool_), (1,), [depth > 0])


def test_has_scope_kernel_is_the_path_taken_and_refuses_what_the_op_refuses():
    ws = so.Workspace()
    stack = so.WorkspaceStack()
    ws.feed_blob("scope", stack)
    net = so.Net("n")
    net.HasScope(["scope"], ["has"])
    executor = ws.create_net(net)
    executor.run()                     # the first run makes the output tensor
    with python_runs(executor.operators[0]) as calls:
        stack.push_forward_workspace(ws)
        executor.run()
        assert calls == [] and ws.fetch_blob("has").tolist() == [True]
        stack.pop_gradient_workspace(ws)
        executor.run()
        assert calls == [] and ws.fetch_blob("has").tolist() == [False]
        ws.feed_blob("scope", np.zeros(1))       # not a stack: the general path raises
        with pytest.raises(so.OperatorError, match="scope"):
            executor.run()
        assert calls == [1]
        np.testing.assert_array_equal(ws.fetch_blob("has"), [False])
