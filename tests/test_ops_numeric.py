"""Numeric operators: forward values against numpy, in-place use, buffer reuse, gradients
(checked by finite differences), the gradient checker itself, and add_gradient_ops."""

import tracemalloc
import warnings

import numpy as np
import pytest

import scopeops as so
import scopeops.ops.math
import scopeops.ops.nn
from scopeops.ops import NO_GRADIENT, SHOULD_NOT_DO_GRADIENT, Operator, gradient, register
from scopeops.testing import gradient_check


def rand(*shape, low=-1.0, high=1.0, seed=0):
    return np.asarray(np.random.default_rng(seed).uniform(low, high, shape))


def away_from_zero(*shape, seed=0):
    """Values in +-[0.3, 1.3]: clear of the kinks of Relu and Abs, safe to divide by."""
    rng = np.random.default_rng(seed)
    return np.asarray(rng.uniform(0.3, 1.3, shape) * rng.choice([-1.0, 1.0], shape))


def run_op(type_name, inputs, outputs=("out",), **args):
    """Run one op on fed inputs ({name: value})."""
    return run_op_named(type_name, inputs, list(inputs), list(outputs), **args)


def run_op_named(type_name, feeds, inputs, outputs, **args):
    """Run one op on blobs holding ``feeds``, naming its inputs and outputs freely.

    The values are fed under other names and copied in by Copy ops, so each blob owns its
    buffer as it would in a net: a blob holding a fed array is never written through, which
    would hide in-place hazards.
    """
    ws = so.Workspace()
    net = so.Net(f"run_{type_name}")
    for name, value in feeds.items():
        ws.feed_blob(f"{name}/fed", value)
        net.Copy(f"{name}/fed", name)
    net.add_op(type_name, inputs, outputs, **args)
    ws.run_net_once(net)
    return ws


def address(array):
    return array.__array_interface__["data"][0]


# --- binary elementwise arithmetic ---------------------------------------------------------

BINARY = [("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply), ("Div", np.divide)]
BROADCASTS = {
    "same": ((3, 4), (3, 4)),
    "row": ((3, 4), (4,)),
    "column_and_row": ((3, 1), (1, 4)),
    "one_element": ((3, 4), (1,)),
    "scalar": ((3, 4), ()),
    "lhs_broadcast": ((4,), (2, 3, 4)),
}


@pytest.mark.parametrize("type_name,ufunc", BINARY, ids=[t for t, _ in BINARY])
@pytest.mark.parametrize("shapes", list(BROADCASTS.values()), ids=list(BROADCASTS))
def test_binary_op_matches_numpy_with_broadcasting(type_name, ufunc, shapes):
    a, b = away_from_zero(*shapes[0], seed=1), away_from_zero(*shapes[1], seed=2)
    out = run_op(type_name, {"a": a, "b": b})["out"]
    np.testing.assert_allclose(out, ufunc(a, b), rtol=1e-12)
    assert out.shape == np.broadcast_shapes(a.shape, b.shape)


def test_binary_op_result_dtype_follows_numpy_promotion():
    a = np.ones(3, np.float32)
    assert run_op("Add", {"a": a, "b": np.ones(3, np.float64)})["out"].dtype == np.float64
    assert run_op("Add", {"a": a, "b": np.ones(3, np.float32)})["out"].dtype == np.float32


def test_add_of_int32_tensors_stays_int32():
    out = run_op("Add", {"a": np.arange(3, dtype=np.int32), "b": np.full(3, 2, np.int32)})["out"]
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, [2, 3, 4])


def test_div_of_integers_gives_floored_quotient():
    out = run_op("Div", {"a": np.array([7, -7]), "b": np.array([2, 2])})["out"]
    np.testing.assert_array_equal(out, [3, -4])


def test_binary_op_refuses_unbroadcastable_shapes_naming_both_blobs():
    with pytest.raises(so.OperatorError, match=r"cannot broadcast input 0 \(blob a, shape "
                                               r"\(3,\)\) with input 1 \(blob b, shape \(4,\)\)"):
        run_op("Mul", {"a": np.ones(3), "b": np.ones(4)})


def test_binary_op_refuses_a_non_tensor_input_naming_the_blob():
    with pytest.raises(so.OperatorError, match="expects Tensor.*blob b"):
        run_op("Add", {"a": np.ones(3), "b": "not a tensor"})


# --- unary elementwise ---------------------------------------------------------------------

UNARY = [
    ("Sqr", np.square, rand(3, 4)),
    ("Exp", np.exp, rand(3, 4)),
    ("Log", np.log, rand(3, 4, low=0.1, high=2.0)),
    ("Abs", np.abs, rand(3, 4)),
    ("Neg", np.negative, rand(3, 4)),
    ("Relu", lambda x: np.maximum(x, 0), rand(3, 4)),
    ("Sigmoid", lambda x: 1 / (1 + np.exp(-x)), rand(3, 4, low=-5, high=5)),
    ("Tanh", np.tanh, rand(3, 4)),
]


@pytest.mark.parametrize("type_name,reference,x", UNARY, ids=[u[0] for u in UNARY])
def test_unary_op_matches_numpy(type_name, reference, x):
    out = run_op(type_name, {"x": x})["out"]
    np.testing.assert_allclose(out, reference(x), rtol=1e-12)
    assert out.dtype == x.dtype


@pytest.mark.parametrize("type_name,reference,x", UNARY, ids=[u[0] for u in UNARY])
def test_unary_op_keeps_float32(type_name, reference, x):
    out = run_op(type_name, {"x": x.astype(np.float32)})["out"]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, reference(x), rtol=1e-5, atol=1e-6)


def test_relu_of_int_tensor_stays_int():
    out = run_op("Relu", {"x": np.array([-2, 0, 3])})["out"]
    np.testing.assert_array_equal(out, [0, 0, 3])
    assert out.dtype == np.int64


def test_sigmoid_saturates_without_overflow_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = run_op("Sigmoid", {"x": np.array([-1000.0, 0.0, 1000.0])})["out"]
    np.testing.assert_array_equal(out, [0.0, 0.5, 1.0])


def test_exp_refuses_an_integer_input():
    with pytest.raises(so.OperatorError, match=r"Exp needs a floating-point tensor, but input "
                                               r"0 \(blob x\) is int64"):
        run_op("Exp", {"x": np.arange(3)})


def test_pow_raises_to_the_exponent():
    x = rand(2, 3, low=0.1, high=2.0)
    np.testing.assert_allclose(run_op("Pow", {"x": x}, exponent=2.5)["out"], x ** 2.5)


def test_pow_of_float32_with_integer_exponent_stays_float32():
    assert run_op("Pow", {"x": np.ones(2, np.float32)}, exponent=3)["out"].dtype == np.float32


def test_pow_without_exponent_is_refused_when_built():
    with pytest.raises(so.OperatorError, match="requires the argument 'exponent'"):
        run_op("Pow", {"x": np.ones(2)})


def test_scale_multiplies_by_scale():
    x = rand(2, 3)
    np.testing.assert_allclose(run_op("Scale", {"x": x}, scale=-1.5)["out"], -1.5 * x)


def test_scale_refuses_a_string_scale_when_built():
    with pytest.raises(so.OperatorError, match="argument 'scale' of Scale must be int or float"):
        run_op("Scale", {"x": np.ones(2)}, scale="2")


# --- Softmax -------------------------------------------------------------------------------


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_softmax_matches_numpy_on_the_last_axis():
    x = rand(3, 5)
    out = run_op("Softmax", {"x": x})["out"]
    np.testing.assert_allclose(out, softmax(x), rtol=1e-12)
    np.testing.assert_allclose(out.sum(axis=-1), 1.0)


def test_softmax_is_stable_for_large_inputs():
    out = run_op("Softmax", {"x": np.array([[1000.0, 1000.0], [-1000.0, 0.0]])})["out"]
    np.testing.assert_allclose(out, [[0.5, 0.5], [0.0, 1.0]])


def test_softmax_axis_argument_normalises_that_axis():
    x = rand(3, 4)
    np.testing.assert_allclose(run_op("Softmax", {"x": x}, axis=0)["out"], softmax(x, axis=0))


def test_softmax_refuses_an_axis_out_of_range():
    with pytest.raises(so.OperatorError, match="axis 2 is out of range"):
        run_op("Softmax", {"x": rand(3, 4)}, axis=2)


# --- MatMul and FC -------------------------------------------------------------------------


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True),
                                             (True, True)])
def test_matmul_matches_numpy_with_transpositions(trans_a, trans_b):
    a = rand(*((4, 3) if trans_a else (3, 4)), seed=1)
    b = rand(*((5, 4) if trans_b else (4, 5)), seed=2)
    out = run_op("MatMul", {"a": a, "b": b}, trans_a=trans_a, trans_b=trans_b)["out"]
    np.testing.assert_allclose(out, (a.T if trans_a else a) @ (b.T if trans_b else b))


def test_matmul_refuses_mismatched_inner_dimensions():
    with pytest.raises(so.OperatorError, match=r"inner dimensions differ: op\(A\) \(blob a\) is "
                                               r"\(2, 3\), op\(B\) \(blob b\) is \(4, 2\)"):
        run_op("MatMul", {"a": np.ones((2, 3)), "b": np.ones((4, 2))})


def test_matmul_refuses_one_dimensional_inputs():
    with pytest.raises(so.OperatorError, match="needs 2-D inputs"):
        run_op("MatMul", {"a": np.ones(3), "b": np.ones((3, 2))})


def test_fc_computes_x_times_w_transposed_plus_b():
    x, w, b = rand(3, 4, seed=1), rand(2, 4, seed=2), rand(2, seed=3)
    np.testing.assert_allclose(run_op("FC", {"x": x, "w": w, "b": b})["out"], x @ w.T + b)


def test_fc_refuses_a_bias_of_the_wrong_length():
    with pytest.raises(so.OperatorError, match=r"b \(blob b\) has shape \(3,\), expected \(2,\)"):
        run_op("FC", {"x": np.ones((3, 4)), "w": np.ones((2, 4)), "b": np.ones(3)})


# --- sums and reductions -------------------------------------------------------------------


def test_sum_of_one_input_is_a_copy():
    x = rand(2, 3)
    out = run_op("Sum", {"x": x})["out"]
    np.testing.assert_array_equal(out, x)
    assert not np.shares_memory(out, x)


def test_sum_adds_any_number_of_inputs():
    xs = {f"x{i}": rand(2, 3, seed=i) for i in range(4)}
    np.testing.assert_allclose(run_op("Sum", xs)["out"], sum(xs.values()))


def test_sum_refuses_inputs_of_different_shapes():
    with pytest.raises(so.OperatorError, match=r"input 1 \(blob b\) has shape \(3,\), but input "
                                               r"0 \(blob a\) has shape \(2,\)"):
        run_op("Sum", {"a": np.ones(2), "b": np.ones(3)})


def test_weighted_sum_weights_each_input():
    x0, x1 = rand(2, 3, seed=1), rand(2, 3, seed=2)
    out = run_op("WeightedSum", {"x0": x0, "w0": np.array([2.0]), "x1": x1,
                                 "w1": np.array(-0.5)})["out"]
    np.testing.assert_allclose(out, 2.0 * x0 - 0.5 * x1)


def test_weighted_sum_refuses_a_weight_with_several_elements():
    with pytest.raises(so.OperatorError, match=r"weight input 1 \(blob w0\) must have one "
                                               r"element"):
        run_op("WeightedSum", {"x0": np.ones(2), "w0": np.ones(2)})


def test_weighted_sum_refuses_an_odd_number_of_inputs_when_built():
    with pytest.raises(so.OperatorError, match="WeightedSum takes pairs"):
        run_op("WeightedSum", {"x0": np.ones(2), "w0": np.ones(1), "x1": np.ones(2)})


def test_sum_elements_gives_a_scalar_of_shape_empty_tuple():
    x = rand(3, 4)
    out = run_op("SumElements", {"x": x})["out"]
    assert out.shape == ()
    np.testing.assert_allclose(out, x.sum())


def test_sum_elements_average_gives_the_mean():
    x = rand(3, 4)
    np.testing.assert_allclose(run_op("SumElements", {"x": x}, average=True)["out"], x.mean())


def test_averaged_loss_gives_the_mean_as_a_scalar():
    x = rand(3, 4)
    out = run_op("AveragedLoss", {"x": x})["out"]
    assert out.shape == ()
    np.testing.assert_allclose(out, x.mean())


def test_squared_l2_distance_gives_half_squared_distance_per_row():
    x, y = rand(3, 2, 2, seed=1), rand(3, 2, 2, seed=2)
    out = run_op("SquaredL2Distance", {"x": x, "y": y})["out"]
    np.testing.assert_allclose(out, 0.5 * ((x - y) ** 2).sum(axis=(1, 2)))
    assert out.shape == (3,)


def test_squared_l2_distance_refuses_different_shapes():
    with pytest.raises(so.OperatorError, match="needs two inputs of the same shape"):
        run_op("SquaredL2Distance", {"x": np.ones((3, 2)), "y": np.ones((3, 3))})


# --- comparisons and logic -----------------------------------------------------------------

COMPARISONS = [("LT", np.less), ("LE", np.less_equal), ("GT", np.greater),
               ("GE", np.greater_equal), ("EQ", np.equal)]


@pytest.mark.parametrize("type_name,ufunc", COMPARISONS, ids=[c[0] for c in COMPARISONS])
def test_comparison_gives_bool_with_broadcasting(type_name, ufunc):
    a = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    b = np.array([2.0, 2.0, 2.0])
    out = run_op(type_name, {"a": a, "b": b})["out"]
    assert out.dtype == np.bool_
    np.testing.assert_array_equal(out, ufunc(a, b))


def test_not_negates_a_bool_tensor():
    np.testing.assert_array_equal(run_op("Not", {"x": np.array([True, False])})["out"],
                                  [False, True])


@pytest.mark.parametrize("type_name,ufunc", [("And", np.logical_and), ("Or", np.logical_or)])
def test_logic_op_combines_bools_with_broadcasting(type_name, ufunc):
    a = np.array([[True], [False]])
    b = np.array([True, False])
    np.testing.assert_array_equal(run_op(type_name, {"a": a, "b": b})["out"], ufunc(a, b))


# --- Cast, fills, Copy ---------------------------------------------------------------------


def test_cast_to_int32_truncates_like_c():
    out = run_op("Cast", {"x": np.array([1.7, -1.7])}, to="int32")["out"]
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, [1, -1])


def test_cast_accepts_caffe2_dtype_names():
    assert run_op("Cast", {"x": np.ones(2)}, to="FLOAT")["out"].dtype == np.float32


def test_cast_refuses_an_unknown_dtype_when_built_suggesting_close_names():
    ws = so.Workspace()
    ws.feed_blob("x", np.ones(2))
    net = so.Net("casting")
    net.Cast("x", "y", to="flaot32")
    with pytest.raises(so.OperatorError, match="unknown dtype 'flaot32'.*did you mean float32"):
        ws.create_net(net)
    assert not ws.has_blob("y")


def test_constant_fill_uses_shape_value_and_dtype():
    out = run_op("ConstantFill", {}, shape=[2, 3], value=7, dtype="int64")["out"]
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, np.full((2, 3), 7))


def test_constant_fill_defaults_to_a_float32_scalar_of_zero():
    out = run_op("ConstantFill", {})["out"]
    assert (out.shape, out.dtype, out[()]) == ((), np.float32, 0.0)


def test_constant_fill_with_an_input_takes_its_shape_and_dtype():
    out = run_op("ConstantFill", {"like": np.zeros((2, 5), np.float64)}, value=1.0)["out"]
    assert (out.shape, out.dtype) == ((2, 5), np.float64)
    assert np.all(out == 1.0)


def test_constant_fill_with_an_input_and_dtype_takes_only_the_shape():
    out = run_op("ConstantFill", {"like": np.zeros(4)}, value=True, dtype="bool")["out"]
    assert (out.shape, out.dtype) == ((4,), np.bool_)


def test_constant_fill_refuses_both_an_input_and_a_shape():
    with pytest.raises(so.OperatorError, match="cannot set the shape argument and pass in an "
                                               "input"):
        run_op("ConstantFill", {"like": np.zeros(2)}, shape=[2])


def test_constant_fill_refuses_a_negative_shape():
    with pytest.raises(so.OperatorError, match="'shape' must be a list of non-negative ints"):
        run_op("ConstantFill", {}, shape=[2, -1])


def test_constant_fill_refuses_a_fractional_value_for_an_int_dtype():
    with pytest.raises(so.OperatorError, match="value 0.5 does not fit dtype int32"):
        run_op("ConstantFill", {}, shape=[1], value=0.5, dtype="int32")


def test_constant_fill_refuses_a_string_value_when_built():
    with pytest.raises(so.OperatorError, match="argument 'value' of ConstantFill must be"):
        run_op("ConstantFill", {}, value="1")


def test_given_tensor_fill_reshapes_values():
    out = run_op("GivenTensorFill", {}, values=[1, 2, 3, 4, 5, 6], shape=[2, 3],
                 dtype="float64")["out"]
    np.testing.assert_array_equal(out, np.arange(1, 7).reshape(2, 3))
    assert out.dtype == np.float64


def test_given_tensor_fill_takes_the_shape_of_nested_values():
    out = run_op("GivenTensorFill", {}, values=[[1, 2], [3, 4]])["out"]
    assert (out.shape, out.dtype) == ((2, 2), np.float32)


def test_given_tensor_fill_refuses_a_shape_that_does_not_hold_the_values():
    with pytest.raises(so.OperatorError, match=r"shape \[2, 2\] holds 4 elements but 3 values"):
        run_op("GivenTensorFill", {}, values=[1, 2, 3], shape=[2, 2])


def test_given_tensor_fill_refuses_fractional_values_for_an_int_dtype():
    with pytest.raises(so.OperatorError, match="values do not fit dtype int32"):
        run_op("GivenTensorFill", {}, values=[1.5], dtype="int32")


def test_copy_writes_an_independent_array():
    x = rand(2, 3)
    out = run_op("Copy", {"x": x})["out"]
    np.testing.assert_array_equal(out, x)
    assert not np.shares_memory(out, x)


# --- in place ------------------------------------------------------------------------------


def test_relu_in_place_overwrites_its_input_blob():
    x = rand(3, 4)
    net = so.Net("relu_in_place")
    net.Copy("x/fed", "x")
    net.Relu(["x"], ["x"])
    ws = so.Workspace()
    ws.feed_blob("x/fed", x)
    ws.run_net_once(net)
    np.testing.assert_array_equal(ws["x"], np.maximum(x, 0))


IN_PLACE_UNARY = [
    ("Sigmoid", {}, lambda x: 1 / (1 + np.exp(-x))), ("Tanh", {}, np.tanh),
    ("Exp", {}, np.exp), ("Neg", {}, np.negative), ("Sqr", {}, np.square),
    ("Abs", {}, np.abs), ("Relu", {}, lambda x: np.maximum(x, 0)),
    ("Pow", {"exponent": 2.0}, np.square),
    ("Scale", {"scale": 3.0}, lambda x: 3 * x), ("Softmax", {}, softmax),
    ("Copy", {}, lambda x: x), ("Cast", {"to": "int32"}, lambda x: x.astype(np.int32)),
    ("Cast", {"to": "float32"}, lambda x: x.astype(np.float32)),
    ("SumElements", {}, np.sum), ("AveragedLoss", {}, np.mean),
    ("Not", {}, np.logical_not), ("ConstantFill", {"value": 2.0}, lambda x: 0 * x + 2),
]


@pytest.mark.parametrize("type_name,args,reference", IN_PLACE_UNARY,
                         ids=[f"{u[0]}{'_' + u[1]['to'] if 'to' in u[1] else ''}"
                              for u in IN_PLACE_UNARY])
def test_unary_op_in_place_matches_out_of_place(type_name, args, reference):
    x = rand(3, 4) * 3
    ws = run_op_named(type_name, {"x": x}, ["x"], ["x"], **args)
    np.testing.assert_allclose(ws["x"], reference(x), rtol=1e-6)


@pytest.mark.parametrize("type_name,ufunc", BINARY + COMPARISONS,
                         ids=[t for t, _ in BINARY + COMPARISONS])
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 4), (4,)), ((3, 1), (1, 4)),
                                    ((4,), (3, 4))], ids=["same", "row", "grows", "lhs_grows"])
def test_binary_op_writing_over_its_first_input_matches_out_of_place(type_name, ufunc, shapes):
    a, b = away_from_zero(*shapes[0], seed=1), away_from_zero(*shapes[1], seed=2)
    ws = run_op_named(type_name, {"a": a, "b": b}, ["a", "b"], ["a"])
    np.testing.assert_allclose(ws["a"], ufunc(a, b))


@pytest.mark.parametrize("type_name,ufunc", BINARY, ids=[t for t, _ in BINARY])
def test_binary_op_writing_over_its_second_input_matches_out_of_place(type_name, ufunc):
    a, b = away_from_zero(3, 4, seed=1), away_from_zero(3, 4, seed=2)
    ws = run_op_named(type_name, {"a": a, "b": b}, ["a", "b"], ["b"])
    np.testing.assert_allclose(ws["b"], ufunc(a, b))


def test_mul_of_a_blob_by_itself_in_place_squares_it():
    x = rand(5)
    ws = run_op_named("Mul", {"x": x}, ["x", "x"], ["x"])
    np.testing.assert_allclose(ws["x"], x * x)


@pytest.mark.parametrize("inputs,output", [(["a", "b"], "b"), (["a", "a", "b"], "a"),
                                           (["b", "a", "a"], "a"), (["a", "a", "a"], "a"),
                                           (["b", "a", "c", "a"], "a")],
                         ids=["second", "first_twice", "later_twice", "all_three", "interleaved"])
def test_sum_in_place_counts_every_use_of_the_output_blob(inputs, output):
    values = {"a": rand(2, 3, seed=1), "b": rand(2, 3, seed=2), "c": rand(2, 3, seed=3)}
    expected = sum(values[n] for n in inputs)
    ws = run_op_named("Sum", values, inputs, [output])
    np.testing.assert_allclose(ws[output], expected)


@pytest.mark.parametrize("inputs,output", [(["a", "u", "b", "v"], "b"),
                                           (["a", "u", "b", "v", "a", "v"], "a")],
                         ids=["second", "twice"])
def test_weighted_sum_in_place_matches_out_of_place(inputs, output):
    values = {"a": rand(2, 3, seed=1), "b": rand(2, 3, seed=2), "u": np.array([2.0]),
              "v": np.array([-3.0])}
    expected = sum(values[inputs[k + 1]] * values[inputs[k]] for k in range(0, len(inputs), 2))
    ws = run_op_named("WeightedSum", values, inputs, [output])
    np.testing.assert_allclose(ws[output], expected)


def test_matmul_in_place_over_a_square_input_matches_out_of_place():
    a, b = rand(3, 3, seed=1), rand(3, 3, seed=2)
    ws = run_op_named("MatMul", {"a": a, "b": b}, ["a", "b"], ["a"])
    np.testing.assert_allclose(ws["a"], a @ b)


def test_fc_in_place_over_its_input_matches_out_of_place():
    x, w, b = rand(3, 3, seed=1), rand(3, 3, seed=2), rand(3, seed=3)
    ws = run_op_named("FC", {"x": x, "w": w, "b": b}, ["x", "w", "b"], ["x"])
    np.testing.assert_allclose(ws["x"], x @ w.T + b)


def test_squared_l2_distance_in_place_over_a_vector_input_matches_out_of_place():
    x, y = rand(4, seed=1), rand(4, seed=2)
    ws = run_op_named("SquaredL2Distance", {"x": x, "y": y}, ["x", "y"], ["x"])
    np.testing.assert_allclose(ws["x"], 0.5 * (x - y) ** 2)


# Gradient ops whose outputs reuse their input blobs, against a run with fresh outputs.
GRADIENT_OPS_IN_PLACE = {
    "MulGradient": ({"a": (3, 4), "b": (4,), "dz": (3, 4)}, ["dz", "a"], {}),
    "DivGradient": ({"b": (3, 4), "c": (3, 4), "dz": (3, 4), "a": (3, 4)}, ["b", "dz"], {}),
    "AddGradient": ({"dz": (3, 4), "a": (3, 4), "b": (3, 1)}, ["dz", "b"], {}),
    "SubGradient": ({"dz": (3, 4), "a": (3, 4), "b": (3, 4)}, ["a", "dz"], {}),
    "FCGradient": ({"x": (3, 3), "w": (3, 3), "dy": (3, 3)}, ["dy", "x", "w"], {}),
    "SquaredL2DistanceGradient": ({"x": (3, 2), "y": (3, 2), "dd": (3,)}, ["y", "x"], {}),
    "DotProductGradient": ({"x": (3, 2), "y": (3, 2), "dd": (3,)}, ["y", "x"], {}),
    "WeightedSumGradient": ({"dy": (3,), "x0": (3,), "w0": (1,)}, ["dy", "x0"],
                            {"grad_on_w": True}),
    "ReluGradient": ({"y": (3, 4), "dy": (3, 4)}, ["y"], {}),
    "SigmoidGradient": ({"y": (3, 4), "dy": (3, 4)}, ["y"], {}),
    "TanhGradient": ({"y": (3, 4), "dy": (3, 4)}, ["dy"], {}),
    "SoftmaxGradient": ({"y": (3, 4), "dy": (3, 4)}, ["y"], {}),
    "AbsGradient": ({"x": (3, 4), "dy": (3, 4)}, ["x"], {}),
    "CosGradient": ({"x": (3, 4), "dy": (3, 4)}, ["x"], {}),
    "SinGradient": ({"x": (3, 4), "dy": (3, 4)}, ["dy"], {}),
    "SumElementsGradient": ({"x": (3, 4), "dy": ()}, ["dy"], {"average": True}),
    "AveragedLossGradient": ({"x": (3, 4), "dy": ()}, ["x"], {}),
    "CastGradient": ({"x": (3, 4), "dy": (3, 4)}, ["dy"], {}),
    "SumReduceLike": ({"a": (3, 4), "b": (4,)}, ["a"], {}),
    "MakeTwoClassGradient": ({"dy": (3, 2)}, ["dy"], {}),
}


@pytest.mark.parametrize("type_name", list(GRADIENT_OPS_IN_PLACE))
def test_gradient_op_writing_over_its_inputs_matches_fresh_outputs(type_name):
    shapes, in_place_outputs, args = GRADIENT_OPS_IN_PLACE[type_name]
    values = {name: away_from_zero(*shape, seed=i) for i, (name, shape) in
              enumerate(shapes.items())}
    names = list(values)
    fresh = [f"fresh{i}" for i in range(len(in_place_outputs))]
    expected = run_op_named(type_name, values, names, fresh, **args)
    ws = run_op_named(type_name, values, names, in_place_outputs, **args)
    for got, want in zip(in_place_outputs, fresh, strict=True):
        np.testing.assert_allclose(ws[got], expected[want], rtol=1e-12, err_msg=got)


REFUSED_FOR_THEIR_DTYPES = [
    # (op, inputs, outputs, feeds): numpy has no loop, or the result does not fit.
    ("Sub", ["a", "a"], ["out"], {"a": np.array([True, False])}),
    ("Div", ["a", "a"], ["out"], {"a": np.array([True, False])}),
    ("LT", ["a", "b"], ["a"], {"a": np.array([1 + 1j]), "b": np.array(["x"])}),
    ("FCGradient", ["x", "w", "w"], ["x", "w"],
     {"x": np.zeros((3, 3), np.float32), "w": np.ones((3, 3), np.int32)}),
]


@pytest.mark.parametrize("op_type, inputs, outputs, feeds", REFUSED_FOR_THEIR_DTYPES,
                         ids=[f"{case[0]}-{k}" for k, case in enumerate(REFUSED_FOR_THEIR_DTYPES)])
def test_an_op_refused_for_its_dtypes_changes_no_blob(op_type, inputs, outputs, feeds):
    ws = so.Workspace()
    for name, value in feeds.items():
        ws.feed_blob(name, value.copy())
    net = so.Net("refused")
    net.add_op(op_type, inputs, outputs)
    executor = ws.create_net(net)
    before = {name: ws.get_blob(name) for name in ws.blobs()}
    with pytest.raises(so.OperatorError, match="TypeError"):
        executor.run()
    for name, value in feeds.items():
        got = ws.fetch_blob(name)
        assert ws.get_blob(name) is before[name]
        assert got.dtype == value.dtype and np.array_equal(got, value), name
    for name in set(outputs) - set(feeds):
        assert ws.get_blob(name) is None or ws.get_blob(name).is_empty(), name


def test_sum_reduce_like_refusing_shapes_changes_no_output():
    ws = so.Workspace()
    ws.feed_blob("a", np.ones((3, 4), np.float32))
    ws.feed_blob("b", np.ones((4, 2), np.float32))
    ws.feed_blob("c", np.array([7], np.int64))       # an output of another dtype and shape
    net = so.Net("sum_reduce_like")
    net.SumReduceLike(["a", "b"], ["c"])
    with pytest.raises(so.OperatorError, match="does not broadcast to A"):
        ws.run_net_once(net)
    assert ws["c"].dtype == np.int64 and ws["c"].tolist() == [7]


def test_mul_gradient_whose_product_does_not_fit_changes_no_output():
    # dA = dC * B is float64 for an int32 A and a float32 B: refused before either
    # output (here the inputs themselves) is touched.
    ws = so.Workspace()
    ws.feed_blob("a", np.array([3], np.int32))
    ws.feed_blob("b", np.array([0.5], np.float32))
    net = so.Net("mul_grad")
    net.MulGradient(["a", "b", "a"], ["b", "a"])
    with pytest.raises(so.OperatorError, match=r"gradient of input 0 \(blob a\) would be "
                                               r"float64.*int32"):
        ws.run_net_once(net)
    assert ws["a"].dtype == np.int32 and ws["a"].tolist() == [3]
    assert ws["b"].dtype == np.float32 and ws["b"].tolist() == [0.5]


# --- buffer reuse --------------------------------------------------------------------------

FORWARD_CASES = {
    "ConstantFill": ({}, {"shape": [2, 3], "value": 1.0}),
    "GivenTensorFill": ({}, {"values": [1.0, 2.0]}),
    "Copy": ({"x": (2, 3)}, {}),
    "Add": ({"a": (3, 1), "b": (4,)}, {}),
    "Sub": ({"a": (3, 4), "b": (4,)}, {}),
    "Mul": ({"a": (3, 4), "b": (3, 4)}, {}),
    "Div": ({"a": (3, 4), "b": (1,)}, {}),
    "Pow": ({"x": (3, 4)}, {"exponent": 2.0}),
    "Sqr": ({"x": (3, 4)}, {}),
    "Exp": ({"x": (3, 4)}, {}),
    "Log": ({"x": (3, 4)}, {}),
    "Abs": ({"x": (3, 4)}, {}),
    "Neg": ({"x": (3, 4)}, {}),
    "Relu": ({"x": (3, 4)}, {}),
    "Sigmoid": ({"x": (3, 4)}, {}),
    "Tanh": ({"x": (3, 4)}, {}),
    "Softmax": ({"x": (3, 4)}, {}),
    "MatMul": ({"a": (3, 4), "b": (4, 2)}, {}),
    "FC": ({"x": (3, 4), "w": (2, 4), "b": (2,)}, {}),
    "Sum": ({"a": (3, 4), "b": (3, 4), "c": (3, 4)}, {}),
    "Scale": ({"x": (3, 4)}, {"scale": 2.0}),
    "SumElements": ({"x": (3, 4)}, {}),
    "AveragedLoss": ({"x": (3, 4)}, {}),
    "SquaredL2Distance": ({"x": (3, 4), "y": (3, 4)}, {}),
    "WeightedSum": ({"x0": (3, 4), "w0": (1,), "x1": (3, 4), "w1": (1,)}, {}),
    "LT": ({"a": (3, 4), "b": (4,)}, {}),
    "LE": ({"a": (3, 4), "b": (4,)}, {}),
    "GT": ({"a": (3, 4), "b": (4,)}, {}),
    "GE": ({"a": (3, 4), "b": (4,)}, {}),
    "EQ": ({"a": (3, 4), "b": (4,)}, {}),
    "Not": ({"x": (3, 4)}, {}),
    "And": ({"a": (3, 4), "b": (4,)}, {}),
    "Or": ({"a": (3, 4), "b": (4,)}, {}),
    "Cast": ({"x": (3, 4)}, {"to": "int32"}),
}


@pytest.mark.parametrize("type_name", list(FORWARD_CASES))
def test_running_a_net_again_reuses_the_output_buffer(type_name):
    shapes, args = FORWARD_CASES[type_name]
    ws = so.Workspace()
    for i, (name, shape) in enumerate(shapes.items()):
        ws.feed_blob(name, rand(*shape, low=0.5, high=1.5, seed=i))
    net = so.Net(f"reuse_{type_name}")
    net.add_op(type_name, list(shapes), ["out"], **args)
    ws.create_net(net)
    ws.run_net(net.name)
    first = ws["out"]
    ws.run_net(net.name)
    assert address(ws["out"]) == address(first)


def test_gradient_net_run_again_reuses_every_buffer():
    ws = so.Workspace()
    ws.feed_blob("x", rand(4, 3, seed=1))
    ws.feed_blob("w", rand(2, 3, seed=2))
    ws.feed_blob("b", rand(2, seed=3))
    ws.feed_blob("target", rand(4, 2, seed=4))
    net = so.Net("train_step")
    net.FC(["x", "w", "b"], "h")
    net.Relu("h", "h")
    net.Softmax("h", "p")
    net.SquaredL2Distance(["p", "target"], "dist")
    net.AveragedLoss("dist", "loss")
    so.add_gradient_ops(net, "loss")
    ws.create_net(net)
    ws.run_net(net.name)
    before = {name: address(ws[name]) for name in ws.blobs()}
    ws.run_net(net.name)
    assert {name: address(ws[name]) for name in ws.blobs()} == before


def test_second_run_with_new_input_values_updates_the_reused_output():
    ws = so.Workspace()
    ws.feed_blob("x", np.array([1.0, -2.0]))
    net = so.Net("relu_twice")
    net.Relu("x", "y")
    ws.create_net(net)
    ws.run_net(net.name)
    ws.feed_blob("x", np.array([-3.0, 4.0]))
    ws.run_net(net.name)
    np.testing.assert_array_equal(ws["y"], [0.0, 4.0])


# --- gradients, checked by finite differences ----------------------------------------------


def grad_case(type_name, inputs, outputs=("out",), **args):
    return so.create_operator(type_name, list(inputs), list(outputs), **args), inputs


def softmax_with_loss_net():
    """The loss plus sum(P^2): both of SoftmaxWithLoss's outputs carry a gradient."""
    net = so.Net("softmax_with_loss_twice")
    net.SoftmaxWithLoss(["x", "t"], ["p", "loss"])
    net.Sqr("p", "p2")
    net.SumElements("p2", "p2_sum")
    net.Add(["p2_sum", "loss"], "total")
    return net


def lstm_unit_net(**args):
    """An LSTMUnit whose hidden and cell states both feed the output ``hc``."""
    net = so.Net("lstm_unit")
    inputs = ["h", "c", "g", "lengths", "t"] if args.get("sequence_lengths", 1) else \
        ["h", "c", "g", "t"]
    net.LSTMUnit(inputs, ["hidden", "cell"], **args)
    net.Mul(["hidden", "cell"], "hc")
    return net


def lstm_unit_inputs(timestep=1, lengths=True):
    n, d = 3, 2
    inputs = {"h": rand(1, n, d, seed=1), "c": rand(1, n, d, seed=2),
              "g": rand(1, n, 4 * d, low=-2, high=2, seed=3),
              "t": np.array([timestep], np.int32)}
    if lengths:
        inputs["lengths"] = np.array([3, 2, 1], np.int32)
    return inputs


def binary_cases():
    for type_name, _ in BINARY:
        for label, (sa, sb) in BROADCASTS.items():
            yield (f"{type_name}-{label}",
                   grad_case(type_name, {"a": away_from_zero(*sa, seed=1),
                                         "b": away_from_zero(*sb, seed=2)}))


GRADIENT_CASES = dict(binary_cases())
GRADIENT_CASES.update({
    "Mul-same_blob_twice": (so.create_operator("Mul", ["x", "x"], ["out"]),
                            {"x": rand(3, 4)}),
    "Pow-cube": grad_case("Pow", {"x": rand(3, 4)}, exponent=3),
    "Pow-sqrt": grad_case("Pow", {"x": rand(3, 4, low=0.2, high=2.0)}, exponent=0.5),
    "Pow-zero": grad_case("Pow", {"x": rand(3, 4)}, exponent=0),
    "Sqr": grad_case("Sqr", {"x": rand(3, 4)}),
    "Exp": grad_case("Exp", {"x": rand(3, 4)}),
    "Log": grad_case("Log", {"x": rand(3, 4, low=0.2, high=2.0)}),
    "Abs": grad_case("Abs", {"x": away_from_zero(3, 4)}),
    "Neg": grad_case("Neg", {"x": rand(3, 4)}),
    "Relu": grad_case("Relu", {"x": away_from_zero(3, 4)}),
    "Sigmoid": grad_case("Sigmoid", {"x": rand(3, 4, low=-3, high=3)}),
    "Tanh": grad_case("Tanh", {"x": rand(3, 4)}),
    "Softmax": grad_case("Softmax", {"x": rand(3, 4, low=-2, high=2)}),
    "Softmax-axis0": grad_case("Softmax", {"x": rand(3, 4, low=-2, high=2)}, axis=0),
    "MatMul": grad_case("MatMul", {"a": rand(3, 4, seed=1), "b": rand(4, 2, seed=2)}),
    "MatMul-trans_a": grad_case("MatMul", {"a": rand(4, 3, seed=1), "b": rand(4, 2, seed=2)},
                                trans_a=True),
    "MatMul-trans_b": grad_case("MatMul", {"a": rand(3, 4, seed=1), "b": rand(2, 4, seed=2)},
                                trans_b=True),
    "MatMul-trans_both": grad_case("MatMul", {"a": rand(4, 3, seed=1),
                                              "b": rand(2, 4, seed=2)},
                                   trans_a=True, trans_b=True),
    "FC": grad_case("FC", {"x": rand(3, 4, seed=1), "w": rand(2, 4, seed=2),
                           "b": rand(2, seed=3)}),
    "Sum-one": grad_case("Sum", {"a": rand(2, 3)}),
    "Sum-three": grad_case("Sum", {"a": rand(2, 3, seed=1), "b": rand(2, 3, seed=2),
                                   "c": rand(2, 3, seed=3)}),
    "Scale": grad_case("Scale", {"x": rand(3, 4)}, scale=-2.5),
    "SumElements": grad_case("SumElements", {"x": rand(3, 4)}),
    "SumElements-average": grad_case("SumElements", {"x": rand(3, 4)}, average=True),
    "AveragedLoss": grad_case("AveragedLoss", {"x": rand(3, 4)}),
    "SquaredL2Distance": grad_case("SquaredL2Distance", {"x": rand(3, 4, seed=1),
                                                         "y": rand(3, 4, seed=2)}),
    "SquaredL2Distance-3d": grad_case("SquaredL2Distance", {"x": rand(2, 2, 3, seed=1),
                                                            "y": rand(2, 2, 3, seed=2)}),
    "WeightedSum-grad_on_w": grad_case("WeightedSum", {"x0": rand(2, 3, seed=1),
                                                       "w0": rand(1, seed=2),
                                                       "x1": rand(2, 3, seed=3),
                                                       "w1": rand(1, seed=4)}, grad_on_w=True),
    "Copy": grad_case("Copy", {"x": rand(3, 4)}),
    "Cast": grad_case("Cast", {"x": rand(3, 4)}, to="float32"),
    "Cast-from_type": grad_case("Cast", {"x": rand(3, 4)}, to="float32", from_type="float64"),
    "Negative": grad_case("Negative", {"x": rand(3, 4)}),
    "CopyOnDeviceLike": (so.create_operator("CopyOnDeviceLike", ["x", "like"], ["out"]),
                         {"x": rand(3, 4), "like": rand(2)}, {"wrt": ["x"]}),
    "ResizeLike": (so.create_operator("ResizeLike", ["x", "like"], ["out"]),
                   {"x": rand(6), "like": rand(2, 3, seed=1)}, {"wrt": ["x"]}),
    "Cos": grad_case("Cos", {"x": rand(2, 3, 4, low=-3, high=3)}),
    "Sin": grad_case("Sin", {"x": rand(2, 3, 4, low=-3, high=3)}),
    "DotProduct": grad_case("DotProduct", {"x": rand(3, 4, seed=1), "y": rand(3, 4, seed=2)}),
    "DotProduct-3d": grad_case("DotProduct", {"x": rand(2, 3, 2, seed=1),
                                              "y": rand(2, 3, 2, seed=2)}),
    "MakeTwoClass": grad_case("MakeTwoClass", {"x": rand(2, 5, low=0.01, high=0.99)}),
    "MakeTwoClass-1d": grad_case("MakeTwoClass", {"x": rand(7, low=0.01, high=0.99)}),
    "Flatten": grad_case("Flatten", {"x": rand(2, 3, 4, 5)}),
    "Flatten-axis2": grad_case("Flatten", {"x": rand(2, 3, 4)}, axis=2),
    "Concat-axis1": (so.create_operator("Concat", ["a", "b", "c"], ["y", "y_dims"], axis=1),
                     {"a": rand(2, 1, 3, seed=1), "b": rand(2, 4, 3, seed=2),
                      "c": rand(2, 2, 3, seed=3)}),
    "Concat-NHWC": (so.create_operator("Concat", ["a", "b"], ["y", "y_dims"], order="NHWC"),
                    {"a": rand(2, 3, 3, 2, seed=1), "b": rand(2, 3, 3, 3, seed=2)}),
    "Concat-add_axis": (so.create_operator("Concat", ["a", "b"], ["y", "y_dims"], axis=-1,
                                           add_axis=1),
                        {"a": rand(2, 3, seed=1), "b": rand(2, 3, seed=2)}),
    "Split-one_output_used": (so.create_operator("Split", ["x"], ["y0", "y1", "y2"], axis=1),
                              {"x": rand(2, 6)}),
    "Split-sizes": (so.create_operator("Split", ["x"], ["y0", "y1"], axis=0, split=[1, 3]),
                    {"x": rand(4, 2)}),
    "Mul-broadcast_axis": grad_case("Mul", {"a": away_from_zero(2, 3, 4, seed=1),
                                            "b": away_from_zero(3, seed=2)},
                                    broadcast=1, axis=1),
    "Mul-broadcast_suffix": grad_case("Mul", {"a": away_from_zero(2, 3, 4, seed=1),
                                              "b": away_from_zero(3, 4, seed=2)}, broadcast=1),
    "Mul-broadcast_scalar": grad_case("Mul", {"a": away_from_zero(2, 3, seed=1),
                                              "b": away_from_zero(1, seed=2)}, broadcast=1),
    "Div-broadcast_axis": grad_case("Div", {"a": away_from_zero(3, 3, seed=1),
                                            "b": away_from_zero(3, seed=2)},
                                    broadcast=1, axis=0),
    "Div-broadcast_axis_str": grad_case("Div", {"a": away_from_zero(2, 3, 2, 2, seed=1),
                                                "b": away_from_zero(3, seed=2)},
                                        broadcast=1, axis_str="C", order="NCHW"),
    "MatMul-axes": grad_case("MatMul", {"a": rand(2, 3, 2, seed=1), "b": rand(6, 2, seed=2)},
                             axis_a=1),
    "MatMul-axis_b": grad_case("MatMul", {"a": rand(3, 4, seed=1), "b": rand(2, 2, 5, seed=2)},
                               axis_b=2),
    "FC-axis0": grad_case("FC", {"x": rand(3, seed=1), "w": rand(4, 3, seed=2),
                                 "b": rand(4, seed=3)}, axis=0),
    "FC-3d": grad_case("FC", {"x": rand(2, 3, 2, seed=1), "w": rand(4, 6, seed=2),
                              "b": rand(4, seed=3)}),
    "SoftmaxWithLoss-loss": (so.create_operator("SoftmaxWithLoss", ["x", "t"], ["p", "loss"]),
                             {"x": rand(4, 3, low=-2, high=2), "t": np.array([0, 2, 1, 2],
                                                                             np.int32)},
                             {"loss": "loss"}),
    "SoftmaxWithLoss-weighted_scaled": (
        so.create_operator("SoftmaxWithLoss", ["x", "t", "w"], ["p", "loss"], scale=0.5),
        {"x": rand(4, 3, low=-2, high=2), "t": np.array([0, 2, 1, 2], np.int32),
         "w": rand(4, low=0.5, high=2.0, seed=3)}, {"loss": "loss", "wrt": ["x"]}),
    "SoftmaxWithLoss-label_prob": (
        so.create_operator("SoftmaxWithLoss", ["x", "t"], ["p", "loss"], label_prob=1),
        {"x": rand(3, 4, low=-2, high=2),
         "t": np.array([[0.1, 0.2, 0.3, 0.4], [1.0, 0.0, 0.0, 0.0], [0.25] * 4])},
        {"loss": "loss", "wrt": ["x"]}),
    "SoftmaxWithLoss-axis2_probabilities_used": (
        so.create_operator("SoftmaxWithLoss", ["x", "t"], ["p", "loss"], axis=1),
        {"x": rand(2, 2, 3, low=-2, high=2), "t": np.array([5, 1], np.int32)},
        {"output": "p"}),
    "SoftmaxWithLoss-both_outputs_used": (softmax_with_loss_net(),
                                          {"x": rand(3, 4, low=-2, high=2),
                                           "t": np.array([3, 0, 1], np.int32)},
                                          {"loss": "total"}),
    "LSTMUnit": (lstm_unit_net(), lstm_unit_inputs(), {"output": "hc", "rtol": 2e-2}),
    "LSTMUnit-ended_rows_carry": (lstm_unit_net(), lstm_unit_inputs(timestep=2),
                                  {"output": "hc"}),
    "LSTMUnit-drop_states": (lstm_unit_net(drop_states=1), lstm_unit_inputs(timestep=2),
                             {"output": "hc"}),
    "LSTMUnit-no_lengths": (lstm_unit_net(sequence_lengths=0, forget_bias=0.5),
                            lstm_unit_inputs(lengths=False), {"output": "hc"}),
})


@pytest.mark.parametrize("case", list(GRADIENT_CASES))
def test_gradient_matches_finite_differences(case):
    op, inputs, *options = GRADIENT_CASES[case]
    check = options[0] if options else {}
    result = gradient_check(op, inputs, **check)
    floats = [name for name, value in inputs.items() if np.asarray(value).dtype.kind == "f"]
    assert set(result.blobs) == set(check.get("wrt", floats))


def differentiable_numeric_types():
    modules = {f"scopeops.ops.{m}" for m in ("math", "nn", "fills", "tensor_ops", "learning",
                                             "utility")}
    return {name for name in so.ops.registered_operators()
            if so.ops.schema(name).cls.__module__ in modules
            and callable(so.ops.schema(name).gradient)}


def test_every_differentiable_numeric_op_has_a_gradient_case():
    checked = set()
    for op, *_ in GRADIENT_CASES.values():
        ops = [op] if isinstance(op, so.OperatorDef) else op.netdef.ops
        checked |= {o.type for o in ops}
    # ZeroGradient has no output to differentiate: its maker is checked directly below.
    assert differentiable_numeric_types() - checked == {"ZeroGradient"}


@pytest.mark.parametrize("type_name", ["LT", "LE", "GT", "GE", "EQ", "Not", "And", "Or",
                                       "ConstantFill", "GivenTensorFill"])
def test_comparison_logic_and_fill_ops_contribute_no_gradient(type_name):
    assert so.ops.schema(type_name).gradient is NO_GRADIENT


def test_gradient_stops_silently_at_a_comparison():
    x = away_from_zero(6)
    net = so.Net("masked")
    net.GT(["x", "zero"], "mask")
    net.Mul(["x", "mask"], "y")
    net.SumElements("y", "loss")
    grads = so.add_gradient_ops(net, "loss")
    ws = so.Workspace()
    ws.feed_blob("x", x)
    ws.feed_blob("zero", np.zeros(1))
    ws.run_net_once(net)
    np.testing.assert_array_equal(ws[grads["x"]], (x > 0).astype(float))
    assert "zero" not in grads


def test_cast_gradient_is_cast_back_to_the_input_dtype():
    net = so.Net("cast_back")
    net.Cast("x", "y", to="float64")
    net.SumElements("y", "loss")
    grads = so.add_gradient_ops(net, "loss")
    ws = so.Workspace()
    ws.feed_blob("x", np.ones(3, np.float32))
    ws.run_net_once(net)
    assert ws[grads["x"]].dtype == np.float32


# --- the gradient checker itself ----------------------------------------------------------


@register("TestOnlyNumeric_Double", inputs=1, outputs=1, doc="Y = 2 X, with a wrong gradient.")
class _DoubleWithWrongGradient(Operator):
    def run(self):
        x = self.input(0)
        np.multiply(x, 2, out=self.output(0, x.shape, x.dtype))


@gradient("TestOnlyNumeric_Double")
def _wrong_double_gradient(g):
    return [g.make("Scale", [g.GO(0)], [g.GI(0)], scale=3.0)]


@register("TestOnlyNumeric_Triple", inputs=1, outputs=1, doc="Y = 3 X, with no gradient ops.")
class _TripleWithMissingGradient(Operator):
    def run(self):
        x = self.input(0)
        np.multiply(x, 3, out=self.output(0, x.shape, x.dtype))


@gradient("TestOnlyNumeric_Triple")
def _missing_triple_gradient(g):
    return []


@register("TestOnlyNumeric_AddNoReduce", inputs=2, outputs=1,
          doc="C = A + B, whose gradient forgets to reduce over broadcast axes.")
class _AddWithUnreducedGradient(Operator):
    def run(self):
        a, b = self.input(0), self.input(1)
        np.add(a, b, out=self.output(0, np.broadcast_shapes(a.shape, b.shape), a.dtype))


@gradient("TestOnlyNumeric_AddNoReduce")
def _unreduced_add_gradient(g):
    return [g.make("Copy", [g.GO(0)], [g.GI(0)]), g.make("Copy", [g.GO(0)], [g.GI(1)])]


@register("TestOnlyNumeric_Cube", inputs=1, outputs=1, doc="Y = X^3, with a right gradient.")
class _CubeWithRightGradient(Operator):
    def run(self):
        x = self.input(0)
        np.power(x, 3, out=self.output(0, x.shape, x.dtype))


@gradient("TestOnlyNumeric_Cube")
def _cube_gradient(g):
    dx = g.GI(0)
    return [g.make("Sqr", [g.I(0)], [dx]), g.make("Mul", [dx, g.GO(0)], [dx]),
            g.make("Scale", [dx], [dx], scale=3.0)]


@register("TestOnlyNumeric_Forbidden", inputs=1, outputs=1,
          gradient=SHOULD_NOT_DO_GRADIENT, doc="Y = X, whose gradient must not be asked for.")
class _ForbiddenGradient(Operator):
    def run(self):
        x = self.input(0)
        np.copyto(self.output(0, x.shape, x.dtype), x)


def test_gradient_check_catches_a_wrong_gradient_naming_the_blob():
    op = so.create_operator("TestOnlyNumeric_Double", ["x"], ["y"])
    with pytest.raises(AssertionError, match=r"(?s)x \(gradient blob x_grad\): MISMATCH.*"
                                             r"worst element"):
        gradient_check(op, {"x": rand(3)})


def test_gradient_check_catches_a_missing_gradient():
    op = so.create_operator("TestOnlyNumeric_Triple", ["x"], ["y"])
    with pytest.raises(AssertionError, match="no gradient was built for this blob"):
        gradient_check(op, {"x": rand(3)})


def test_gradient_check_catches_a_gradient_not_reduced_to_the_input_shape():
    op = so.create_operator("TestOnlyNumeric_AddNoReduce", ["a", "b"], ["c"])
    with pytest.raises(AssertionError, match=r"b_grad holds \(3, 4\), expected an array of "
                                             r"shape \(4,\)"):
        gradient_check(op, {"a": rand(3, 4), "b": rand(4)})


def test_gradient_check_passes_a_user_operator_with_a_right_gradient():
    op = so.create_operator("TestOnlyNumeric_Cube", ["x"], ["y"])
    result = gradient_check(op, {"x": rand(2, 3)})
    assert result.ok and result.max_abs_error < 1e-4


def test_gradient_check_uses_a_given_loss_blob():
    net = so.Net("explicit_loss")
    net.Tanh("x", "t")
    net.AveragedLoss("t", "loss")
    result = gradient_check(net, {"x": rand(3, 2)}, loss="loss")
    assert result.loss == "loss"
    assert [op.type for op in result.gradient_net.ops][:2] == ["Tanh", "AveragedLoss"]
    assert "GivenTensorFill" not in {op.type for op in result.gradient_net.ops}


def test_gradient_check_checks_only_the_wrt_blobs():
    op = so.create_operator("Mul", ["a", "b"], ["c"])
    result = gradient_check(op, {"a": rand(3), "b": rand(3)}, wrt=["b"])
    assert list(result.blobs) == ["b"]


def test_gradient_check_leaves_the_given_net_unchanged():
    net = so.Net("kept")
    net.Sigmoid("x", "y")
    before = net.netdef.copy()
    gradient_check(net, {"x": rand(3)})
    assert net.netdef == before


def test_gradient_check_skips_integer_inputs_by_default():
    op = so.create_operator("Mul", ["x", "k"], ["y"])
    result = gradient_check(op, {"x": rand(3), "k": np.array([2, 3, 4])})
    assert list(result.blobs) == ["x"]


def test_gradient_check_runs_in_workspaces_from_the_factory():
    parent = so.Workspace()
    parent.feed_blob("w", rand(3, seed=5))
    op = so.create_operator("Mul", ["x", "w"], ["y"])
    result = gradient_check(op, {"x": rand(3)}, workspace_factory=lambda: so.Workspace(parent))
    assert list(result.blobs) == ["x"]


def test_steady_state_training_loop_allocates_less_than_one_array():
    rows, features, units = 512, 64, 64
    ws = so.Workspace()
    for name, shape in {"x": (rows, features), "w": (units, features), "b": (units,),
                        "s": (units,), "target": (rows, units)}.items():
        ws.feed_blob(name, rand(*shape, seed=len(name)))
    ws.feed_blob("lr", np.array([-0.01]))
    ws.feed_blob("one", np.array([1.0]))
    net = so.Net("steady_state")
    net.FC(["x", "w", "b"], "h")
    net.Relu("h", "h")
    net.Mul(["h", "s"], "h")
    net.Add(["h", "b"], "h")
    net.Tanh("h", "h")
    net.Softmax("h", "p")
    net.SquaredL2Distance(["p", "target"], "dist")
    net.AveragedLoss("dist", "loss")
    grads = so.add_gradient_ops(net, "loss")
    for param in ("w", "b", "s"):
        net.WeightedSum([param, "one", grads[param], "lr"], param)
    ws.create_net(net)
    ws.run_net(net.name)
    tracemalloc.start()
    try:
        for _ in range(3):
            ws.run_net(net.name)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < rows * units * 8


def test_gradient_check_refuses_a_wrt_blob_that_is_not_an_input():
    with pytest.raises(ValueError, match="wrt blob z is not among the inputs"):
        gradient_check(so.create_operator("Neg", ["x"], ["y"]), {"x": rand(3)}, wrt=["z"])


# --- add_gradient_ops semantics ------------------------------------------------------------


def test_gradient_blobs_are_named_after_their_blobs():
    net = so.Net("names")
    net.Mul(["x", "w"], "y")
    net.SumElements("y", "loss")
    assert so.add_gradient_ops(net, "loss") == {"loss": "loss_grad", "y": "y_grad",
                                                "x": "x_grad", "w": "w_grad"}


def test_loss_gradient_is_filled_with_ones_of_the_loss_shape():
    net = so.Net("vector_loss")
    net.SquaredL2Distance(["x", "y"], "loss")
    so.add_gradient_ops(net, "loss")
    ws = so.Workspace()
    ws.feed_blob("x", rand(3, 2, seed=1))
    ws.feed_blob("y", rand(3, 2, seed=2))
    ws.run_net_once(net)
    np.testing.assert_array_equal(ws["loss_grad"], np.ones(3))


def test_gradients_from_two_uses_of_a_blob_are_summed():
    x = rand(4)
    net = so.Net("x_squared_plus_x")
    net.Mul(["x", "x"], "sq")
    net.Add(["sq", "x"], "y")
    net.SumElements("y", "loss")
    grads = so.add_gradient_ops(net, "loss")
    ws = so.Workspace()
    ws.feed_blob("x", x)
    ws.run_net_once(net)
    np.testing.assert_allclose(ws[grads["x"]], 2 * x + 1)


def test_in_place_chain_gets_the_gradients_of_the_original_values():
    x, w = rand(4, seed=1), rand(4, seed=2)
    net = so.Net("x_times_w_twice")
    net.Mul(["x", "w"], "x")
    net.Mul(["x", "w"], "x")
    net.SumElements("x", "loss")
    grads = so.add_gradient_ops(net, "loss")
    ws = so.Workspace()
    ws.feed_blob("x", x)
    ws.feed_blob("w", w)
    ws.run_net_once(net)
    np.testing.assert_allclose(ws[grads["x"]], w * w)
    np.testing.assert_allclose(ws[grads["w"]], 2 * x * w)


def test_in_place_chain_passes_the_gradient_check():
    net = so.Net("in_place_mlp")
    net.FC(["x", "w", "b"], "h")
    net.Relu("h", "h")
    net.Mul(["h", "s"], "h")
    net.Sigmoid("h", "h")
    net.Softmax("h", "h")
    gradient_check(net, {"x": rand(3, 4, seed=1), "w": rand(2, 4, seed=2),
                         "b": rand(2, seed=3), "s": away_from_zero(2, seed=4)})


def test_in_place_on_an_input_blob_passes_the_gradient_check():
    net = so.Net("input_overwritten")
    net.Exp("x", "x")
    net.Mul(["x", "y"], "x")
    net.Log("x", "z")
    gradient_check(net, {"x": rand(3, seed=1), "y": rand(3, low=0.5, high=2.0, seed=2)})


def test_should_not_do_gradient_op_raises_when_its_gradient_is_needed():
    net = so.Net("forbidden")
    net.TestOnlyNumeric_Forbidden("x", "y")
    net.SumElements("y", "loss")
    with pytest.raises(so.OperatorError, match="TestOnlyNumeric_Forbidden should not have its "
                                               "gradient computed"):
        so.add_gradient_ops(net, "loss")


def test_should_not_do_gradient_op_is_fine_when_no_gradient_reaches_it():
    net = so.Net("forbidden_unused")
    net.TestOnlyNumeric_Forbidden("x", "unused")
    net.SumElements("x", "loss")
    assert so.add_gradient_ops(net, "loss")["x"] == "x_grad"
