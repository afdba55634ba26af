"""Gradient accumulation: so.accumulate and accumulate_microbatches."""

import gc
import sys
import threading
import time
import tracemalloc

import numpy as np
import pytest
from support import build_cimport_client

import scopeops as so
from scopeops import _accumulate
from scopeops.accumulation import accumulate_microbatches, microbatch_slices

FLOATS = [np.float16, np.float32, np.float64]


def pair(dtype, shape=(257, 33), seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype))


def numpy_reference(dst, src, scale):
    out = dst.copy()
    np.add(out, scale * src, out=out)
    return out


def single_rounding_reference(dst, src, scale):
    """float16 the scopeops way: computed in float32, rounded once."""
    with np.errstate(over="ignore", invalid="ignore"):
        wide = dst.astype(np.float32) + np.float32(scale) * src.astype(np.float32)
        return wide.astype(np.float16)


@pytest.fixture(params=[True, False], ids=["f16c", "portable"])
def half_kernel(request):
    before = _accumulate._f16c_kernel()
    if request.param and not _accumulate._f16c_kernel(True):
        _accumulate._f16c_kernel(before)
        pytest.skip("no F16C kernel on this CPU or build")
    _accumulate._f16c_kernel(request.param)
    yield request.param
    _accumulate._f16c_kernel(before)


# --- the public names ---------------------------------------------------------------------


def test_so_accumulate_is_the_compiled_function():
    assert so.accumulate is _accumulate.accumulate


def test_accumulation_module_reexports_accumulate():
    assert so.accumulation.accumulate is _accumulate.accumulate


# --- results ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float32_and_float64_match_numpy(dtype):
    dst, src = pair(dtype)
    expected = numpy_reference(dst, src, 0.37)
    so.accumulate(dst, src, 0.37)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(dst, expected, rtol=4 * eps, atol=16 * eps)


@pytest.mark.parametrize("dtype", FLOATS)
def test_scale_one_gives_exactly_numpy_add(dtype):
    dst, src = pair(dtype)
    expected = dst + src
    so.accumulate(dst, src)
    np.testing.assert_array_equal(dst, expected)


def test_float16_is_float32_arithmetic_rounded_once(half_kernel):
    dst, src = pair(np.float16)
    expected = single_rounding_reference(dst, src, 0.37)
    so.accumulate(dst, src, 0.37)
    np.testing.assert_array_equal(dst, expected)


def test_float16_is_within_one_rounding_of_numpy(half_kernel):
    dst, src = pair(np.float16)
    expected = numpy_reference(dst, src, 0.37)
    so.accumulate(dst, src, 0.37)
    np.testing.assert_allclose(dst.astype(np.float32), expected.astype(np.float32),
                               rtol=2e-3, atol=2e-3)


def test_float16_keeps_every_half_value_when_adding_zero(half_kernel):
    every = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    dst = every.copy()
    so.accumulate(dst, np.zeros_like(dst), 0.5)
    finite = ~np.isnan(every)
    # x + 0 is x (and -0 + 0 is +0); NaN stays NaN.
    np.testing.assert_array_equal(dst[finite], every[finite] + np.float16(0))
    assert np.isnan(dst[~finite]).all()


@pytest.mark.parametrize("scale", [1.0, 0.5, 3.0, -1e-3])
def test_float16_rounds_every_half_value_once_to_nearest_even(half_kernel, scale):
    # Every bit pattern (subnormals, the largest finite values, inf, NaN) against a
    # shuffled copy: sums tie, underflow and overflow, and must round like numpy's
    # float32 -> float16 cast.
    every = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    dst = np.random.default_rng(1).permutation(every)
    expected = single_rounding_reference(dst, every, scale)
    with np.errstate(over="ignore", invalid="ignore"):
        so.accumulate(dst, every, scale)
    np.testing.assert_array_equal(dst, expected)


def test_float16_tail_shorter_than_a_block_is_accumulated(half_kernel):
    dst, src = pair(np.float16, shape=(13,))
    expected = single_rounding_reference(dst, src, 2.0)
    so.accumulate(dst, src, 2.0)
    np.testing.assert_array_equal(dst, expected)


@pytest.mark.parametrize("size", [1, 3, 4, 5, 15, 16, 17, 8191, 8192, 8193])
def test_every_length_is_accumulated_to_the_last_element(size):
    dst, src = pair(np.float32, shape=(size,))
    expected = dst + src
    so.accumulate(dst, src)
    np.testing.assert_array_equal(dst, expected)


def test_returns_dst_itself():
    dst, src = pair(np.float32)
    assert so.accumulate(dst, src) is dst


def test_scale_is_keyword_argument():
    dst, src = pair(np.float64)
    expected = numpy_reference(dst, src, -2.0)
    so.accumulate(dst=dst, src=src, scale=-2.0)
    np.testing.assert_allclose(dst, expected, rtol=1e-15)


def test_zero_size_arrays_are_accepted():
    dst = np.zeros((0, 4), np.float32)
    assert so.accumulate(dst, np.zeros((0, 4), np.float32), 3.0) is dst


def test_zero_dimensional_arrays_are_accumulated():
    dst = np.array(1.5, np.float64)
    so.accumulate(dst, np.array(2.0), 0.5)
    assert dst == 2.5


# --- blobs --------------------------------------------------------------------------------


def test_tensor_blobs_are_accepted_and_dst_blob_returned():
    ws = so.Workspace()
    dst, src = pair(np.float32)
    expected = dst + 0.5 * src
    ws.feed_blob("acc", dst)
    ws.feed_blob("g", src)
    out = so.accumulate(ws.get_blob("acc"), ws.get_blob("g"), 0.5)
    assert out is ws.get_blob("acc")
    np.testing.assert_allclose(ws.fetch_blob("acc"), expected, rtol=1e-6)


def test_blob_written_through_tensor_is_accumulated_in_its_buffer():
    blob = so.Blob()
    arr = blob.tensor((64,), np.float64)
    arr[:] = 1.0
    so.accumulate(blob, np.full(64, 2.0), 1.0)
    assert blob.get() is arr
    np.testing.assert_array_equal(arr, 3.0)


def test_empty_blob_is_refused_with_blob_type_error():
    with pytest.raises(so.BlobTypeError, match="tensor"):
        so.accumulate(so.Blob(), np.zeros(3))


def test_blob_holding_a_str_is_refused_naming_the_blob():
    ws = so.Workspace()
    ws.feed_blob("label", "not a tensor")
    with pytest.raises(so.BlobTypeError, match="label"):
        so.accumulate(np.zeros(3), ws.get_blob("label"))


# --- overlap and layouts ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
def test_src_is_dst_doubles_with_scale_one(dtype):
    dst, _ = pair(dtype)
    expected = dst + dst
    so.accumulate(dst, dst)
    np.testing.assert_array_equal(dst, expected)


def test_src_is_dst_with_scale_computes_dst_plus_scale_dst():
    dst, _ = pair(np.float64)
    expected = dst + 0.25 * dst
    so.accumulate(dst, dst, 0.25)
    np.testing.assert_allclose(dst, expected, rtol=1e-15)


@pytest.mark.parametrize("shift", [1, -1, 5, -5])
def test_partly_overlapping_views_read_src_before_any_write(shift):
    base = np.arange(40, dtype=np.float32)
    original = base.copy()
    if shift > 0:
        dst, src = base[shift:], base[:-shift]
        expected_dst = original[shift:] + 2 * original[:-shift]
    else:
        dst, src = base[:shift], base[-shift:]
        expected_dst = original[:shift] + 2 * original[-shift:]
    so.accumulate(dst, src, 2.0)
    np.testing.assert_array_equal(dst, expected_dst)


@pytest.mark.parametrize("dtype", FLOATS)
def test_strided_views_are_accumulated(dtype):
    dst_base, src_base = pair(dtype, shape=(64, 64))
    dst, src = dst_base[::2, 1::3], src_base[1::2, 1::3]
    expected = single_rounding_reference(dst, src, 1.5) if dtype == np.float16 \
        else numpy_reference(dst, src, 1.5)
    untouched = dst_base[1::2].copy()
    so.accumulate(dst, src, 1.5)
    np.testing.assert_allclose(dst, expected, rtol=np.finfo(dtype).eps * 4)
    np.testing.assert_array_equal(dst_base[1::2], untouched)


def test_fortran_ordered_arrays_are_accumulated():
    dst, src = (np.asfortranarray(a) for a in pair(np.float32))
    expected = dst + src
    so.accumulate(dst, src)
    np.testing.assert_array_equal(dst, expected)


def test_mixed_c_and_fortran_layouts_are_accumulated_elementwise():
    dst, src = pair(np.float64, shape=(7, 9))
    src_f = np.asfortranarray(src)
    expected = dst + src
    so.accumulate(dst, src_f)
    np.testing.assert_array_equal(dst, expected)


def test_transpose_of_dst_as_src_reads_the_original_values():
    square = np.arange(16, dtype=np.float64).reshape(4, 4)
    expected = square + square.T
    so.accumulate(square, square.T)
    np.testing.assert_array_equal(square, expected)


def test_byte_swapped_arrays_are_accumulated_by_value():
    dst, src = pair(np.float64)
    swapped = src.astype(src.dtype.newbyteorder())
    expected = dst + src
    so.accumulate(dst, swapped)
    np.testing.assert_array_equal(dst, expected)


# --- errors before any write ----------------------------------------------------------------


def test_mismatched_shapes_raise_value_error_and_write_nothing():
    dst, _ = pair(np.float32, shape=(4, 5))
    before = dst.copy()
    with pytest.raises(ValueError, match="shape"):
        so.accumulate(dst, np.ones((5, 4), np.float32))
    np.testing.assert_array_equal(dst, before)


def test_mismatched_ndim_with_same_size_raises_value_error():
    dst = np.zeros(20, np.float32)
    with pytest.raises(ValueError, match="shape"):
        so.accumulate(dst, np.ones((4, 5), np.float32))
    assert not dst.any()


def test_mismatched_float_dtypes_raise_type_error_and_write_nothing():
    dst = np.zeros(10, np.float32)
    with pytest.raises(TypeError, match="float32.*float64"):
        so.accumulate(dst, np.ones(10, np.float64))
    assert not dst.any()


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_, np.complex64, np.uint8])
def test_non_float_dst_raises_type_error_and_writes_nothing(dtype):
    dst = np.zeros(10, dtype)
    with pytest.raises(TypeError, match="float16, float32 and float64"):
        so.accumulate(dst, np.ones(10, dtype))
    assert not dst.any()


def test_non_float_src_raises_type_error():
    dst = np.zeros(10, np.float32)
    with pytest.raises(TypeError, match="src"):
        so.accumulate(dst, np.ones(10, np.int32))
    assert not dst.any()


@pytest.mark.skipif(np.dtype(np.longdouble).itemsize == 8, reason="longdouble is float64 here")
def test_extended_precision_is_refused():
    with pytest.raises(TypeError):
        so.accumulate(np.zeros(3, np.longdouble), np.zeros(3, np.longdouble))


def test_read_only_dst_raises_value_error_and_writes_nothing():
    dst = np.zeros(10, np.float32)
    dst.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        so.accumulate(dst, np.ones(10, np.float32))
    assert not dst.any()


def test_read_only_src_is_fine():
    src = np.ones(10, np.float32)
    src.flags.writeable = False
    dst = np.zeros(10, np.float32)
    so.accumulate(dst, src)
    np.testing.assert_array_equal(dst, 1.0)


@pytest.mark.parametrize("bad", [[1.0, 2.0], 3.0, "x", None])
def test_non_array_arguments_raise_type_error(bad):
    dst = np.zeros(2)
    with pytest.raises(TypeError, match="numpy arrays or tensor Blobs"):
        so.accumulate(dst, bad)
    with pytest.raises(TypeError, match="numpy arrays or tensor Blobs"):
        so.accumulate(bad, dst)
    assert not dst.any()


def test_non_numeric_scale_raises_type_error():
    dst = np.zeros(2)
    with pytest.raises(TypeError):
        so.accumulate(dst, np.ones(2), "2")
    assert not dst.any()


# --- the GIL ------------------------------------------------------------------------------


def spinner_progress_during(call, calls=20):
    """In how many of ``calls`` calls another Python thread advanced a counter.

    With a switch interval of five seconds the main thread never hands the GIL
    to the spinner while it runs Python code, so the spinner advances during a
    call only if the call releases the GIL.
    """
    counter = [0]
    stop = threading.Event()
    started = threading.Event()

    def spin():
        started.set()
        while not stop.is_set():
            counter[0] += 1
            time.sleep(0)

    old = sys.getswitchinterval()
    sys.setswitchinterval(5.0)
    thread = threading.Thread(target=spin, daemon=True)
    hits = 0
    try:
        thread.start()
        started.wait()
        for _ in range(calls):
            before = counter[0]
            call()
            if counter[0] != before:
                hits += 1
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(old)
    return hits


def test_gil_is_released_while_a_large_float32_accumulate_runs():
    dst, src = (np.ones(1 << 23, np.float32) for _ in range(2))
    assert spinner_progress_during(lambda: so.accumulate(dst, src, 0.5)) > 0


def test_gil_is_released_while_a_large_float16_accumulate_runs():
    dst, src = (np.ones(1 << 23, np.float16) for _ in range(2))
    assert spinner_progress_during(lambda: so.accumulate(dst, src, 0.5)) > 0


def test_gil_is_held_by_a_pure_python_call_so_the_probe_discriminates():
    def python_loop():
        total = 0
        for i in range(100_000):
            total += i
        return total

    assert spinner_progress_during(python_loop, calls=3) == 0


def test_two_threads_accumulating_into_two_arrays_both_get_exact_sums():
    arrays = [np.zeros(1 << 20, np.float64) for _ in range(2)]
    ones = np.ones(1 << 20, np.float64)
    errors = []

    def work(target):
        try:
            for _ in range(50):
                so.accumulate(target, ones, 1.0)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(a,)) for a in arrays]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for a in arrays:
        np.testing.assert_array_equal(a, 50.0)


# --- micro-batches --------------------------------------------------------------------------


N_FEATURES, N_OUTPUTS = 8, 4


def training_net(loss_op="AveragedLoss"):
    net = so.Net("train")
    net.FC(["X", "W", "b"], ["h"])
    net.Tanh(["h"], ["a"])
    net.SquaredL2Distance(["a", "Y"], ["dist"])
    getattr(net, loss_op)(["dist"], ["loss"])
    grads = so.add_gradient_ops(net, ["loss"])
    return net, grads


def problem(rows, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    data = {"X": rng.standard_normal((rows, N_FEATURES)).astype(dtype),
            "Y": rng.standard_normal((rows, N_OUTPUTS)).astype(dtype)}
    params = {"W": (rng.standard_normal((N_OUTPUTS, N_FEATURES)) * 0.5).astype(dtype),
              "b": (rng.standard_normal(N_OUTPUTS) * 0.1).astype(dtype)}
    return data, params


def parent_with(params):
    ws = so.Workspace()
    for name, value in params.items():
        ws.feed_blob(name, value.copy())
    return ws


def full_batch(net, data, params):
    ws = parent_with(params)
    for name, value in data.items():
        ws.feed_blob(name, value)
    ws.run_net_once(net)
    return ws


@pytest.mark.parametrize("rows, parts", [(64, 4), (10, 3), (7, 7), (5, 1)])
def test_accumulated_gradient_equals_full_batch_gradient(rows, parts):
    net, _ = training_net()
    data, params = problem(rows)
    reference = full_batch(net, data, params)
    ws = parent_with(params)
    accumulate_microbatches(net, ws, data, parts, ["W", "b"], ["loss"])
    for name in ("W_grad", "b_grad"):
        np.testing.assert_allclose(ws.fetch_blob(name), reference.fetch_blob(name),
                                   rtol=1e-12, atol=1e-14)


def test_returned_loss_equals_full_batch_loss():
    net, _ = training_net()
    data, params = problem(30)
    reference = full_batch(net, data, params)
    losses = accumulate_microbatches(net, parent_with(params), data, 4, ["W", "b"], "loss")
    assert losses == {"loss": pytest.approx(float(reference.fetch_blob("loss")), rel=1e-12)}


def test_sum_reduction_adds_micro_batch_gradients_unweighted():
    net, _ = training_net("SumElements")
    data, params = problem(12)
    reference = full_batch(net, data, params)
    ws = parent_with(params)
    accumulate_microbatches(net, ws, data, 5, ["W", "b"], reduction="sum")
    np.testing.assert_allclose(ws.fetch_blob("W_grad"), reference.fetch_blob("W_grad"),
                               rtol=1e-12)


def test_float32_net_accumulates_within_float32_tolerance():
    net, _ = training_net()
    data, params = problem(96, np.float32)
    reference = full_batch(net, data, params)
    ws = parent_with(params)
    accumulate_microbatches(net, ws, data, 6, ["W", "b"])
    assert ws.fetch_blob("W_grad").dtype == np.float32
    np.testing.assert_allclose(ws.fetch_blob("W_grad"), reference.fetch_blob("W_grad"),
                               rtol=1e-5, atol=1e-6)


def test_gradient_names_from_add_gradient_ops_are_accepted():
    net, grads = training_net()
    data, params = problem(8)
    ws = parent_with(params)
    accumulate_microbatches(net, ws, data, 2, ["W", "b"], grads=grads)
    assert ws.has_blob(grads["W"]) and ws.has_blob(grads["b"])


def test_zero_false_adds_to_the_accumulators_across_calls():
    net, _ = training_net("SumElements")
    data, params = problem(16)
    reference = full_batch(net, data, params)
    ws = parent_with(params)
    first = {k: v[:8] for k, v in data.items()}
    second = {k: v[8:] for k, v in data.items()}
    accumulate_microbatches(net, ws, first, 2, ["W", "b"], reduction="sum")
    accumulate_microbatches(net, ws, second, 2, ["W", "b"], reduction="sum", zero=False)
    np.testing.assert_allclose(ws.fetch_blob("W_grad"), reference.fetch_blob("W_grad"),
                               rtol=1e-12)


def test_zero_true_restarts_the_accumulators():
    net, _ = training_net()
    data, params = problem(16)
    ws = parent_with(params)
    accumulate_microbatches(net, ws, data, 4, ["W", "b"])
    once = ws.fetch_blob("W_grad").copy()
    accumulate_microbatches(net, ws, data, 4, ["W", "b"])
    np.testing.assert_allclose(ws.fetch_blob("W_grad"), once, rtol=1e-15)


def test_activations_stay_out_of_the_parent_workspace():
    net, _ = training_net()
    data, params = problem(16)
    ws = parent_with(params)
    accumulate_microbatches(net, ws, data, 4, ["W", "b"])
    assert sorted(ws.local_blobs()) == ["W", "W_grad", "b", "b_grad", "microbatch_scope"]


def test_micro_batches_reuse_one_pushed_workspace_across_calls():
    net, _ = training_net()
    data, params = problem(16)
    ws = parent_with(params)
    accumulate_microbatches(net, ws, data, 4, ["W", "b"])
    stack = ws.fetch_blob("microbatch_scope")
    first = stack.workspaces()
    accumulate_microbatches(net, ws, data, 8, ["W", "b"])
    assert stack.capacity == 1 and stack.workspaces() == first
    assert stack.empty()


def test_activation_buffers_are_reused_between_micro_batches():
    net, _ = training_net()
    data, params = problem(16)
    ws = parent_with(params)
    accumulate_microbatches(net, ws, data, 4, ["W", "b"])
    child = ws.fetch_blob("microbatch_scope").workspaces()[0]
    hidden = child.fetch_blob("h")
    accumulate_microbatches(net, ws, data, 4, ["W", "b"])
    assert child.fetch_blob("h") is hidden


def test_the_dormant_workspace_does_not_keep_the_batch_alive():
    net, _ = training_net()
    data, params = problem(16)
    ws = parent_with(params)
    accumulate_microbatches(net, ws, data, 4, ["W", "b"])
    child = ws.fetch_blob("microbatch_scope").workspaces()[0]
    assert child.get_blob("X").is_empty() and child.get_blob("Y").is_empty()


def test_parameters_are_bound_not_copied():
    net, _ = training_net()
    data, params = problem(16)
    ws = parent_with(params)
    accumulate_microbatches(net, ws, data, 2, ["W", "b"])
    child = ws.fetch_blob("microbatch_scope").workspaces()[0]
    assert "W" not in child.local_blobs()
    assert child.forwarded_blobs()["W"] == (ws, "W")


def test_custom_scope_blob_holds_the_stack():
    net, _ = training_net()
    data, params = problem(8)
    ws = parent_with(params)
    accumulate_microbatches(net, ws, data, 2, ["W", "b"], scope="mb")
    assert isinstance(ws.fetch_blob("mb"), so.WorkspaceStack)


def test_extra_bind_names_are_visible_read_only_inputs():
    net = so.Net("scaled")
    net.FC(["X", "W", "b"], ["h"])
    net.Mul(["h", "gain"], ["g"])
    net.AveragedLoss(["g"], ["loss"])
    so.add_gradient_ops(net, ["loss"])
    data, params = problem(8)
    ws = parent_with(params)
    ws.feed_blob("gain", np.full(N_OUTPUTS, 2.0))
    reference = full_batch(net, data, dict(params, gain=np.full(N_OUTPUTS, 2.0)))
    accumulate_microbatches(net, ws, {"X": data["X"]}, 4, ["W", "b"], bind=["gain"])
    np.testing.assert_allclose(ws.fetch_blob("W_grad"), reference.fetch_blob("W_grad"),
                               rtol=1e-12)


def test_failing_net_leaves_the_stack_empty():
    net, _ = training_net()
    data, params = problem(8)
    data["Y"] = data["Y"][:, :2]   # SquaredL2Distance refuses the shapes
    ws = parent_with(params)
    with pytest.raises(so.OperatorError):
        accumulate_microbatches(net, ws, data, 2, ["W", "b"])
    assert ws.fetch_blob("microbatch_scope").empty()


def peak_traced_bytes(microbatches, rows_per_microbatch=256):
    net, _ = training_net()
    data, params = problem(microbatches * rows_per_microbatch, np.float32)
    ws = parent_with(params)
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        accumulate_microbatches(net, ws, data, microbatches, ["W", "b"], ["loss"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - start


def test_peak_memory_does_not_grow_with_the_number_of_micro_batches():
    peak_traced_bytes(2)   # first-use caches (registry, imports) are not the subject
    four, sixteen = peak_traced_bytes(4), peak_traced_bytes(16)
    assert sixteen < four * 1.10, (four, sixteen)


# --- micro-batch argument checks: nothing changes before they pass -----------------------


def untouched_after(call, ws):
    before = sorted(ws.local_blobs())
    call()
    return sorted(ws.local_blobs()) == before


def check_refused(exc, match, **overrides):
    net, _ = training_net()
    data, params = problem(8)
    ws = parent_with(params)
    kwargs = dict(net=net, workspace=ws, batch=data, microbatches=2, params=["W", "b"])
    kwargs.update(overrides)
    before = sorted(ws.local_blobs())
    with pytest.raises(exc, match=match):
        accumulate_microbatches(**kwargs)
    assert sorted(ws.local_blobs()) == before


def test_missing_parameter_is_refused_before_anything_changes():
    check_refused(so.BlobNotFoundError, "W2", params=["W2", "b"])


def test_net_without_backward_pass_is_refused():
    net = so.Net("forward_only")
    net.FC(["X", "W", "b"], ["h"])
    net.AveragedLoss(["h"], ["loss"])
    check_refused(ValueError, "add_gradient_ops", net=net)


def test_net_updating_a_parameter_is_refused():
    net, _ = training_net()
    net.WeightedSum(["W", "one", "W_grad", "lr"], ["W"])
    check_refused(ValueError, "writes W", net=net)


def test_batch_inputs_with_different_row_counts_are_refused():
    data, _ = problem(8)
    check_refused(ValueError, "rows", batch={"X": data["X"], "Y": data["Y"][:5]})


def test_more_micro_batches_than_rows_are_refused():
    check_refused(ValueError, "between 1 and", microbatches=9)


def test_zero_micro_batches_are_refused():
    check_refused(ValueError, "between 1 and", microbatches=0)


def test_batch_input_named_like_a_parameter_is_refused():
    data, params = problem(8)
    check_refused(ValueError, "bound", batch=dict(data, W=np.zeros((8, 1))))


def test_unknown_reduction_is_refused():
    check_refused(ValueError, "reduction", reduction="median")


def test_missing_loss_is_refused():
    check_refused(ValueError, "no loss", losses=["nope"])


def test_scope_blob_holding_something_else_is_refused():
    net, _ = training_net()
    data, params = problem(8)
    ws = parent_with(params)
    ws.feed_blob("microbatch_scope", "taken")
    with pytest.raises(so.BlobTypeError, match="microbatch_scope"):
        accumulate_microbatches(net, ws, data, 2, ["W", "b"])
    assert "W_grad" not in ws.local_blobs()


def test_non_workspace_parent_is_refused():
    net, _ = training_net()
    data, _ = problem(8)
    with pytest.raises(TypeError, match="Workspace"):
        accumulate_microbatches(net, {}, data, 2, ["W"])


def test_zero_false_without_accumulators_is_refused_before_writing():
    net, _ = training_net()
    data, params = problem(8)
    ws = parent_with(params)
    with pytest.raises(so.BlobNotFoundError, match="W_grad"):
        accumulate_microbatches(net, ws, data, 2, ["W", "b"], zero=False)
    assert "b_grad" not in ws.local_blobs()


def test_microbatch_slices_split_like_array_split():
    slices = list(microbatch_slices(10, 3))
    assert [(s.start, s.stop) for s in slices] == [(0, 4), (4, 7), (7, 10)]


# --- the C-level API ----------------------------------------------------------------------

CLIENT_PYX = (
    """
    # cython: language_level=3
    from scopeops cimport Blob, TensorView, c_blob_tensor_view
    from scopeops._accumulate cimport accumulate, c_accumulate


    def accumulate_blobs_nogil(Blob dst, Blob src, double scale):
        cdef TensorView d, s
        with nogil:
            c_blob_tensor_view(dst, &d)
            c_blob_tensor_view(src, &s)
            c_accumulate(d.data, s.data, d.size, d.dtype, scale)


    def accumulate_through_cpdef(dst, src):
        return accumulate(dst, src, 2.0)
    """
)

@pytest.fixture(scope="module")
def client(tmp_path_factory):
    return build_cimport_client(tmp_path_factory, "scopeops_accumulate_client", CLIENT_PYX)


def test_c_accumulate_runs_on_blob_buffers_without_the_gil(client):
    dst, src = so.Blob(), so.Blob()
    dst.set(np.ones(100, np.float32))
    src.set(np.full(100, 2.0, np.float32))
    client.accumulate_blobs_nogil(dst, src, 0.25)
    np.testing.assert_array_equal(dst.get(), 1.5)


def test_c_accumulate_refuses_a_non_float_buffer(client):
    dst, src = so.Blob(), so.Blob()
    dst.set(np.ones(4, np.int32))
    src.set(np.ones(4, np.int32))
    with pytest.raises(TypeError, match="float16, float32 and float64"):
        client.accumulate_blobs_nogil(dst, src, 1.0)
    np.testing.assert_array_equal(dst.get(), 1)


def test_cpdef_accumulate_is_cimportable(client):
    dst = np.zeros(3)
    assert client.accumulate_through_cpdef(dst, np.ones(3)) is dst
    np.testing.assert_array_equal(dst, 2.0)
