"""The operators Caffe2 programs use (fills, SoftmaxWithLoss, Iter, LearningRate, Concat,
Split, LSTMUnit, ...), Caffe2's broadcast arguments, and the gradient ops' Caffe2 input and
output order. Gradients are checked by finite differences in test_ops_numeric.py."""

import math

import numpy as np
import pytest

import scopeops as so
from scopeops.ops import NO_GRADIENT


def rand(*shape, low=-1.0, high=1.0, seed=0):
    return np.asarray(np.random.default_rng(seed).uniform(low, high, shape))


def run(type_name, inputs, outputs=("out",), **args):
    """Run one op on blobs copied in from ``inputs`` (each blob owns its buffer)."""
    ws = so.Workspace()
    net = so.Net(f"run_{type_name}")
    for name, value in inputs.items():
        ws.feed_blob(f"{name}/fed", value)
        net.Copy(f"{name}/fed", name)
    net.add_op(type_name, list(inputs), list(outputs), **args)
    ws.run_net_once(net)
    return ws


def refused_when_built(type_name, inputs, outputs=("out",), **args):
    """The OperatorError building the op raises (nothing is created)."""
    ws = so.Workspace()
    for name, value in inputs.items():
        ws.feed_blob(name, value)
    before = sorted(ws.local_blobs())
    net = so.Net(f"refused_{type_name}")
    net.add_op(type_name, list(inputs), list(outputs), **args)
    with pytest.raises(so.OperatorError) as info:
        ws.create_net(net)
    assert sorted(ws.local_blobs()) == before
    return str(info.value)


# --- Caffe2's broadcast arguments ------------------------------------------------------------

A = rand(2, 3, 4, 5, seed=1)
LEGACY_BROADCASTS = {          # Caffe2's documented examples: B's shape, args, B as numpy sees it
    "scalar": ((), {}, ()),
    "one_element": ((1,), {}, ()),
    "suffix": ((5,), {}, (5,)),
    "suffix_two": ((4, 5), {}, (4, 5)),
    "axis_1": ((3, 4), {"axis": 1}, (3, 4, 1)),
    "axis_0": ((2,), {"axis": 0}, (2, 1, 1, 1)),
    "ones_trimmed": ((1, 4, 1), {}, (1, 4, 1)),
    "axis_str": ((3,), {"axis_str": "C"}, (3, 1, 1)),
    "axis_str_nhwc": ((5,), {"axis_str": "C", "order": "NHWC"}, (5,)),
}


@pytest.mark.parametrize("type_name,ufunc", [("Add", np.add), ("Sub", np.subtract),
                                             ("Mul", np.multiply), ("Div", np.divide),
                                             ("LT", np.less), ("EQ", np.equal)])
@pytest.mark.parametrize("case", list(LEGACY_BROADCASTS))
def test_broadcast_1_places_b_as_caffe2_does(type_name, ufunc, case):
    shape, args, numpy_shape = LEGACY_BROADCASTS[case]
    b = np.asarray(rand(*shape, seed=2) + 2.0)
    out = run(type_name, {"a": A, "b": b}, broadcast=1, **args)["out"]
    assert out.shape == A.shape
    np.testing.assert_allclose(out, ufunc(A, b.reshape(numpy_shape)))


def test_broadcast_1_works_where_numpy_broadcasting_cannot():
    a, b = rand(2, 3, seed=1), rand(2, seed=2)
    out = run("Add", {"a": a, "b": b}, broadcast=1, axis=0)["out"]
    np.testing.assert_allclose(out, a + b[:, None])


def test_caffe2s_add_with_broadcast_as_its_tests_write_it():
    ws = so.Workspace()
    ws["x2"], ws["x3"] = rand(3, 4, seed=1), rand(4, seed=2)
    ws.run_operator_once(so.create_operator("Add", ["x2", "x3"], "x4", broadcast=1))
    np.testing.assert_allclose(ws["x4"], ws["x2"] + ws["x3"])


def test_broadcast_1_into_the_blob_of_b_writes_a_shaped_result():
    a, b = rand(3, 4, seed=1), rand(4, seed=2)
    ws = so.Workspace()
    ws.feed_blob("a/fed", a)
    ws.feed_blob("b/fed", b)
    net = so.Net("into_b")
    net.Copy("a/fed", "a")
    net.Copy("b/fed", "b")
    net.Mul(["a", "b"], "b", broadcast=1)
    ws.run_net_once(net)
    np.testing.assert_allclose(ws["b"], a * b)


@pytest.mark.parametrize("args,message", [
    ({"axis": 1}, "do not specify axis or axis_str if broadcast is not enabled"),
    ({"axis_str": "C"}, "do not specify axis or axis_str if broadcast is not enabled"),
    ({"broadcast": 1, "axis": 1, "axis_str": "C"}, "axis and axis_str cannot be used"),
    ({"broadcast": 1, "axis_str": "Q"}, "unrecognizable axis string 'Q' from order string "
                                        "'NCHW'"),
    ({"broadcast": 1, "axis": -2}, "must be -1"),
])
def test_broadcast_arguments_caffe2_refuses_are_refused_when_built(args, message):
    assert message in refused_when_built("Add", {"a": A, "b": rand(5)}, **args)


@pytest.mark.parametrize("b_shape,args,message", [
    ((2, 3, 4, 5, 1), {}, r"B \(blob b, shape \(2, 3, 4, 5, 1\)\) must not have more dims"),
    ((4,), {}, "broadcast dimension mismatch"),
    ((3, 4), {"axis": 3}, r"broadcast axis should be in the range \[0, 2\]"),
])
def test_broadcast_1_refuses_shapes_caffe2_refuses_naming_the_blobs(b_shape, args, message):
    with pytest.raises(so.OperatorError, match=message):
        run("Add", {"a": A, "b": rand(*b_shape)}, broadcast=1, **args)


def test_broadcast_0_keeps_numpy_broadcasting():
    a, b = rand(3, 1, seed=1), rand(4, seed=2)
    np.testing.assert_allclose(run("Add", {"a": a, "b": b}, broadcast=0)["out"], a + b)


# --- SumReduceLike and Negative --------------------------------------------------------------


def test_sum_reduce_like_with_an_axis_sums_over_the_dims_b_was_repeated_on():
    a = rand(2, 3, 4)
    out = run("SumReduceLike", {"a": a, "b": rand(3)}, axis=1)["out"]
    np.testing.assert_allclose(out, a.sum(axis=(0, 2)))


def test_sum_reduce_like_without_an_axis_follows_numpy_broadcasting():
    a = rand(2, 3, 4)
    out = run("SumReduceLike", {"a": a, "b": rand(3, 1)})["out"]
    assert out.shape == (3, 1)
    np.testing.assert_allclose(out, a.sum(axis=(0, 2)).reshape(3, 1))


def test_sum_reduce_like_of_a_one_element_b_sums_everything_in_its_shape():
    a = rand(2, 3)
    out = run("SumReduceLike", {"a": a, "b": np.zeros((1, 1), np.float32)})["out"]
    assert (out.shape, out.dtype) == ((1, 1), np.float32)
    np.testing.assert_allclose(out, [[a.sum()]], rtol=1e-6)


def test_sum_reduce_like_accepts_the_broadcast_argument_add_passes_on():
    a = rand(2, 3)
    out = run("SumReduceLike", {"a": a, "b": rand(2)}, broadcast=1, axis=0)["out"]
    np.testing.assert_allclose(out, a.sum(axis=1))


def test_sum_reduce_like_refuses_a_b_that_does_not_broadcast_to_a():
    with pytest.raises(so.OperatorError, match=r"B \(blob b, shape \(5,\)\) does not broadcast "
                                               r"to A \(blob a, shape \(3, 4\)\)"):
        run("SumReduceLike", {"a": rand(3, 4), "b": rand(5)})


def test_negative_is_neg_under_caffe2s_name():
    x = rand(3)
    np.testing.assert_array_equal(run("Negative", {"x": x})["out"], -x)
    np.testing.assert_array_equal(run("Neg", {"x": x})["out"], -x)


# --- gradient ops in Caffe2's order -----------------------------------------------------------


def gradient_ops(build, losses):
    """The ops add_gradient_ops appends to the net ``build(net)`` fills."""
    net = so.Net("gradient_graph")
    build(net)
    forward = len(net.netdef.ops)
    so.add_gradient_ops(net, losses)
    return [op for op in net.netdef.ops[forward:] if op.type != "ConstantFill"
            or op.outputs[0] not in {f"{loss}_grad" for loss in losses}]


def signature(op):
    return op.type, op.inputs, op.outputs, op.args


def test_fc_and_averaged_loss_gradients_have_caffe2s_ops():
    def build(net):
        net.FC(["in", "w", "b"], "fc")
        net.AveragedLoss("fc", "loss")
    ops = gradient_ops(build, ["loss"])
    assert [signature(op) for op in ops] == [
        ("AveragedLossGradient", ["fc", "loss_grad"], ["fc_grad"], {}),
        ("FCGradient", ["in", "w", "fc_grad"], ["w_grad", "b_grad", "in_grad"], {}),
    ]


@pytest.mark.parametrize("type_name,reads", [
    ("Relu", "y"), ("Sigmoid", "y"), ("Tanh", "y"), ("Softmax", "y"),
    ("Abs", "x"), ("Cos", "x"), ("Sin", "x"), ("SumElements", "x"),
])
def test_unary_gradient_ops_take_the_forward_blob_then_the_output_gradient(type_name, reads):
    ops = gradient_ops(lambda net: net.add_op(type_name, ["x"], ["y"]), ["y"])
    assert [signature(op) for op in ops] == [
        (f"{type_name}Gradient", [reads, "y_grad"], ["x_grad"], {})]


@pytest.mark.parametrize("type_name", ["SquaredL2Distance", "DotProduct"])
def test_distance_gradients_take_x_y_then_the_output_gradient(type_name):
    ops = gradient_ops(lambda net: net.add_op(type_name, ["x", "y"], ["d"]), ["d"])
    assert [signature(op) for op in ops] == [
        (f"{type_name}Gradient", ["x", "y", "d_grad"], ["x_grad", "y_grad"], {})]


@pytest.mark.parametrize("build,expected", [
    (lambda net: net.Copy("x", "y"), [("CopyOnDeviceLike", ["y_grad", "x"], ["x_grad"], {})]),
    (lambda net: net.Exp("x", "y"), [("Mul", ["y", "y_grad"], ["x_grad"], {})]),
    (lambda net: net.Neg("x", "y"), [("Negative", ["y_grad"], ["x_grad"], {})]),
    (lambda net: net.Negative("x", "y"), [("Negative", ["y_grad"], ["x_grad"], {})]),
    (lambda net: net.Log("x", "y"), [("Div", ["y_grad", "x"], ["x_grad"], {})]),
    (lambda net: net.Flatten("x", "y"), [("ResizeLike", ["y_grad", "x"], ["x_grad"], {})]),
    (lambda net: net.MakeTwoClass("x", "y"),
     [("MakeTwoClassGradient", ["y_grad"], ["x_grad"], {})]),
    (lambda net: net.Pow("x", "y", exponent=3.0),
     [("Pow", ["x"], ["x_grad"], {"exponent": 2.0}), ("Mul", ["x_grad", "y_grad"], ["x_grad"], {}),
      ("Scale", ["x_grad"], ["x_grad"], {"scale": 3.0})]),
    (lambda net: net.Cast("x", "y", to="float32", from_type="float64"),
     [("Cast", ["y_grad"], ["x_grad"], {"to": "float64", "from_type": "float32"})]),
    (lambda net: net.Softmax("x", "y", axis=0),
     [("SoftmaxGradient", ["y", "y_grad"], ["x_grad"], {"axis": 0})]),
    (lambda net: net.SumElements("x", "y", average=True),
     [("SumElementsGradient", ["x", "y_grad"], ["x_grad"], {"average": True})]),
])
def test_gradient_ops_follow_caffe2s_makers(build, expected):
    assert [signature(op) for op in gradient_ops(build, ["y"])] == expected


def test_div_gradient_reads_b_the_output_and_its_gradient_then_a_for_its_shape():
    ops = gradient_ops(lambda net: net.Div(["a", "b"], "c"), ["c"])
    assert [signature(op) for op in ops] == [
        ("DivGradient", ["b", "c", "c_grad", "a"], ["a_grad", "b_grad"], {})]


def test_div_gradient_with_broadcast_is_caffe2s_three_input_form():
    ops = gradient_ops(lambda net: net.Div(["a", "b"], "c", broadcast=1, axis=0), ["c"])
    assert [signature(op) for op in ops] == [
        ("DivGradient", ["b", "c", "c_grad"], ["a_grad", "b_grad"], {"broadcast": 1, "axis": 0})]


def test_mul_gradient_with_broadcast_is_caffe2s_mul_mul_sum_reduce_like():
    ops = gradient_ops(lambda net: net.Mul(["a", "b"], "c", broadcast=1, axis=1), ["c"])
    assert [(op.name,) + signature(op) for op in ops] == [
        ("mul_grad_1st_op", "Mul", ["c_grad", "b"], ["a_grad"], {"broadcast": 1, "axis": 1}),
        ("mul_gradient_2nd_op", "Mul", ["c_grad", "a"], ["b_grad_autogen_pre_red"], {}),
        ("mul_with_broadcast_grad_3", "SumReduceLike", ["b_grad_autogen_pre_red", "b"],
         ["b_grad"], {"axis": 1}),
    ]


def test_weighted_sum_gradient_gives_the_weights_none_unless_grad_on_w():
    def build(grad_on_w):
        def fill(net):
            net.WeightedSum(["x0", "w0", "x1", "w1"], "y", **grad_on_w)
        return fill
    ops = gradient_ops(build({}), ["y"])
    assert [signature(op) for op in ops] == [
        ("WeightedSumGradient", ["y_grad", "x0", "w0", "x1", "w1"], ["x0_grad", "x1_grad"], {})]
    ops = gradient_ops(build({"grad_on_w": True}), ["y"])
    assert ops[0].outputs == ["x0_grad", "x1_grad", "w0_grad", "w1_grad"]


def test_matmul_gradient_is_two_matmuls_resized_like_the_inputs():
    ops = gradient_ops(lambda net: net.MatMul(["a", "b"], "c"), ["c"])
    assert [signature(op) for op in ops] == [
        ("MatMul", ["c_grad", "b", "a"], ["a_grad"], {"trans_b": 1, "axis_b": 1}),
        ("MatMul", ["a", "c_grad", "b"], ["b_grad"], {"trans_a": 1, "axis_a": 1}),
    ]


def test_concat_gradient_splits_by_the_split_info_and_split_gradient_concats():
    ops = gradient_ops(lambda net: net.Concat(["a", "b"], ["y", "y_dims"], axis=0), ["y"])
    assert [signature(op) for op in ops] == [
        ("Split", ["y_grad", "y_dims"], ["a_grad", "b_grad"], {"axis": 0})]
    ops = gradient_ops(lambda net: (net.Split("x", ["p", "q"], axis=1),
                                    net.Sum(["p", "q"], "s")), ["s"])
    # Sum passes its output gradient to every input (Caffe2's graph): no copies.
    assert signature(ops[-1]) == ("Concat", ["s_grad", "s_grad"], ["x_grad", "_x_grad_dims"],
                                  {"axis": 1})


def test_split_gradient_fills_zeros_for_outputs_without_a_gradient():
    net = so.Net("half_used")
    net.Split("x", ["p", "q"], axis=0)
    net.SumElements("q", "loss")
    grads = so.add_gradient_ops(net, ["loss"])
    ws = so.Workspace()
    ws.feed_blob("x", rand(4, 2))
    ws.run_net_once(net)
    np.testing.assert_array_equal(ws[grads["x"]], [[0, 0], [0, 0], [1, 1], [1, 1]])


def test_softmax_with_loss_gradient_reads_x_labels_weights_p_and_the_loss_gradient():
    ops = gradient_ops(lambda net: net.SoftmaxWithLoss(["x", "t", "w"], ["p", "loss"]),
                       ["loss"])
    assert [signature(op) for op in ops] == [
        ("SoftmaxWithLossGradient", ["x", "t", "w", "p", "loss_grad"], ["x_grad"], {})]


def test_lstm_unit_gradient_needs_the_cell_state_gradient():
    def build(net):
        net.LSTMUnit(["h", "c", "g", "s", "t"], ["hidden_t", "cell_t"])
    with pytest.raises(so.OperatorError, match="Gradient of output cell_t is not provided!"):
        so.add_gradient_ops(*(lambda n: (build(n), n))(so.Net("lstm"))[1:], ["hidden_t"])
    ops = gradient_ops(build, ["hidden_t", "cell_t"])
    assert [signature(op) for op in ops] == [
        ("LSTMUnitGradient", ["h", "c", "g", "s", "t", "hidden_t", "cell_t", "hidden_t_grad",
                              "cell_t_grad"], ["h_grad", "c_grad", "g_grad"], {})]


class _MakerContext:
    """Just enough of a gradient context to call a maker by hand."""

    def __init__(self, op):
        self.op = op

    def I(self, i):  # noqa: E743 - Caffe2's name
        return self.op.inputs[i]

    def GI(self, i):
        return f"{self.op.inputs[i]}_grad"

    def make(self, type_name, inputs, outputs, **args):
        return so.create_operator(type_name, inputs, outputs, **args)


def test_zero_gradient_maker_fills_its_inputs_gradient_with_zeros():
    op = so.create_operator("ZeroGradient", ["cell_t"], [])
    made = so.ops.schema("ZeroGradient").gradient(_MakerContext(op))
    assert [signature(o) for o in made] == [
        ("ConstantFill", ["cell_t"], ["cell_t_grad"], {"value": 0.0})]


def test_zero_gradient_runs_and_writes_nothing():
    ws = so.Workspace()
    ws["x"] = np.ones(2)
    ws.run_operator_once(so.create_operator("ZeroGradient", ["x"], []))
    assert ws.local_blobs() == ["x"]


@pytest.mark.parametrize("build", [
    lambda net: net.Sqr("x", "x"),
    lambda net: net.Pow("x", "x", exponent=3.0),
    lambda net: (net.Exp("x", "x"), net.Log("x", "x")),
    lambda net: (net.Sqr("x", "y"), net.Add(["y", "x"], "y")),
], ids=["Sqr", "Pow", "Exp_then_Log", "Sqr_shared_output_gradient"])
def test_in_place_gradients_that_copying_caffe2_gets_wrong_stay_right(build):
    net = so.Net("in_place")
    build(net)
    out = net.netdef.ops[-1].outputs[0]
    so.testing.gradient_check(net, {"x": rand(3, 4, low=0.3, high=1.5)}, output=out)


# --- fills -----------------------------------------------------------------------------------


@pytest.mark.parametrize("type_name", ["UniformFill", "GaussianFill", "XavierFill",
                                       "GivenTensorFill", "GivenTensorInt64Fill"])
def test_fills_have_no_gradient(type_name):
    assert so.ops.schema(type_name).gradient is NO_GRADIENT


def test_uniform_fill_draws_from_min_to_max_as_float32():
    out = run("UniformFill", {}, shape=[1000], min=-2.0, max=3.0, seed=1)["out"]
    assert (out.shape, out.dtype) == ((1000,), np.float32)
    assert out.min() >= -2.0 and out.max() < 3.0 and out.max() - out.min() > 4.5


def test_a_seeded_random_fill_repeats_across_builds_and_moves_on_every_run():
    def two_runs():
        ws = so.Workspace()
        net = so.Net("seeded")
        net.GaussianFill([], "x", shape=[4], seed=7)
        ws.create_net(net)
        ws.run_net("seeded")
        first = ws["x"].copy()
        ws.run_net("seeded")
        return first, ws["x"].copy()
    first, second = two_runs()
    again_first, again_second = two_runs()
    np.testing.assert_array_equal(first, again_first)
    np.testing.assert_array_equal(second, again_second)
    assert not np.array_equal(first, second)


def test_unseeded_random_fills_differ():
    a = run("UniformFill", {}, shape=[8])["out"]
    b = run("UniformFill", {}, shape=[8])["out"]
    assert not np.array_equal(a, b)


def test_gaussian_fill_has_the_mean_and_std_asked_for_in_float64():
    out = run("GaussianFill", {}, shape=[200, 100], mean=3.0, std=0.5, dtype="float64",
              seed=3)["out"]
    assert out.dtype == np.float64
    assert abs(out.mean() - 3.0) < 0.01 and abs(out.std() - 0.5) < 0.01


def test_xavier_fill_bounds_by_fan_in():
    out = run("XavierFill", {}, shape=[50, 12], seed=2)["out"]
    scale = math.sqrt(3 / 12)
    assert np.abs(out).max() <= scale and np.abs(out).max() > 0.9 * scale


def test_a_fill_takes_the_shape_of_its_input_plus_extra_shape():
    out = run("UniformFill", {"like": np.zeros((2, 3), np.int8)}, extra_shape=[4])["out"]
    assert (out.shape, out.dtype) == ((2, 3, 4), np.float32)


def test_input_as_shape_reads_the_shape_from_the_inputs_values():
    out = run("ConstantFill", {"dims": np.array([2, 5])}, input_as_shape=1, value=1.5,
              extra_shape=[1])["out"]
    assert (out.shape, out.dtype) == ((2, 5, 1), np.float32)
    assert np.all(out == 1.5)


def test_a_float16_random_fill():
    out = run("GaussianFill", {}, shape=[3], dtype="float16", seed=1)["out"]
    assert out.dtype == np.float16 and np.all(np.isfinite(out))


@pytest.mark.parametrize("type_name,inputs,args,message", [
    ("UniformFill", {}, {"min": 1.0, "max": 1.0}, "max (1.0) should be bigger than min"),
    ("UniformFill", {"s": np.ones(2)}, {"shape": [2]}, "cannot set the shape argument and "
                                                       "pass in an input"),
    ("GaussianFill", {}, {"extra_shape": [2]}, "cannot set extra_shape when there is no input"),
    ("XavierFill", {}, {"input_as_shape": 1}, "an input must be given if input_as_shape"),
    ("GaussianFill", {}, {"std": -1.0}, "std must be >= 0"),
    ("UniformFill", {}, {"dtype": "int32"}, "dtype must be one of float16"),
    ("UniformFill", {}, {"seed": -3}, "seed must be a non-negative int"),
    ("UniformFill", {"s": np.ones(2), "lo": np.zeros(1)}, {}, "takes 0, 1 or 3 inputs"),
    ("UniformFill", {"s": np.ones(2), "lo": np.zeros(1), "hi": np.ones(1)}, {"min": 0.5},
     "cannot set both the min argument and the min input blob"),
])
def test_fill_arguments_caffe2_refuses_are_refused_when_built(type_name, inputs, args, message):
    assert message in refused_when_built(type_name, inputs, **args)


def test_uniform_fill_with_three_inputs_takes_the_bounds_from_blobs():
    out = run("UniformFill", {"s": np.zeros((500,)), "lo": np.array([5.0]),
                              "hi": np.array([6.0])}, seed=1)["out"]
    assert out.shape == (500,) and out.min() >= 5.0 and out.max() < 6.0


def test_uniform_fill_with_min_above_max_blobs_gives_an_empty_first_dim():
    out = run("UniformFill", {"s": np.zeros((4, 3)), "lo": np.array([2.0]),
                              "hi": np.array([1.0])})["out"]
    assert out.shape == (0, 3)


def test_input_as_shape_refuses_a_non_vector_input():
    with pytest.raises(so.OperatorError, match=r"must be a 1-D integer tensor, got float64"):
        run("GaussianFill", {"dims": np.ones((2, 2))}, input_as_shape=1)


def test_xavier_fill_refuses_a_scalar_output():
    with pytest.raises(so.OperatorError, match="needs at least one dim"):
        run("XavierFill", {})


@pytest.mark.parametrize("type_name,values,dtype", [
    ("GivenTensorInt64Fill", [0], np.int64), ("GivenTensorIntFill", [1, -2, 3], np.int32),
    ("GivenTensorDoubleFill", [0.5, 1.5], np.float64), ("GivenTensorBoolFill", [True, False],
                                                        np.bool_),
])
def test_typed_given_tensor_fills(type_name, values, dtype):
    out = run(type_name, {}, values=values, shape=[len(values)])["out"]
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, np.array(values, dtype))


def test_given_tensor_int64_fill_of_a_scalar_as_caffe2s_const_makes_it():
    out = run("GivenTensorInt64Fill", {}, values=[2], shape=[])["out"]
    assert (out.shape, out.dtype, int(out)) == ((), np.int64, 2)


def test_given_tensor_string_fill_makes_an_object_array():
    out = run("GivenTensorStringFill", {}, values=["a", b"bc"])["out"]
    assert out.dtype == object and out.tolist() == ["a", b"bc"]


def test_given_tensor_fill_takes_its_shape_from_an_input():
    out = run("GivenTensorFill", {"like": np.zeros((2, 2))}, values=[1, 2, 3, 4])["out"]
    np.testing.assert_array_equal(out, [[1, 2], [3, 4]])


@pytest.mark.parametrize("type_name,values,message", [
    ("GivenTensorIntFill", [2**40], "values do not fit dtype int32"),
    ("GivenTensorBoolFill", [2], "values do not fit dtype bool"),
    ("GivenTensorInt64Fill", [1.5], "values do not fit dtype int64"),
    ("GivenTensorStringFill", [1], "values must be a flat list of str or bytes"),
])
def test_given_tensor_fills_refuse_values_that_do_not_fit(type_name, values, message):
    assert message in refused_when_built(type_name, {}, values=values)


def test_given_tensor_fill_refuses_an_input_shape_that_does_not_hold_the_values():
    with pytest.raises(so.OperatorError, match=r"holds 4 elements but 3 values were given"):
        run("GivenTensorFill", {"like": np.zeros((2, 2))}, values=[1, 2, 3])


# --- Iter and LearningRate -------------------------------------------------------------------


def test_iter_starts_a_new_counter_at_one_and_counts_runs():
    ws = so.Workspace()
    net = so.Net("count")
    net.Iter([], "it")
    ws.create_net(net)
    ws.run_net("count")
    assert (ws["it"].dtype, ws["it"].tolist()) == (np.int64, [1])
    ws.run_net("count")
    assert ws["it"].tolist() == [2]


def test_iter_in_place_on_an_int32_counter_keeps_counting_from_its_value_as_int64():
    ws = so.Workspace()
    net = so.Net("count_on")
    net.ConstantFill([], "ITER", shape=[1], value=5, dtype="int32")
    net.Iter("ITER", "ITER")
    ws.run_net_once(net)
    assert (ws["ITER"].dtype, ws["ITER"].tolist()) == (np.int64, [6])


def test_iter_works_in_place_through_two_names_of_one_blob():
    parent = so.Workspace()
    parent["it"] = np.array([3], np.int64)
    child = so.Workspace.from_bindings(parent, {"a": "it", "b": "it"})
    child.run_operator_once(so.create_operator("Iter", ["a"], ["b"]))
    assert parent["it"].tolist() == [4]


def test_iter_refuses_two_blobs():
    message = refused_when_built("Iter", {"a": np.zeros(1, np.int64)}, ["b"])
    assert "Iter works in place: output 0 (b) must be the same blob as input 0 (a)" in message


@pytest.mark.parametrize("counter,message", [
    (np.array([-1]), "negative"), (np.array([1.0]), "must be one integer"),
    (np.array([1, 2]), "must be one integer"),
    (np.array([np.iinfo(np.int64).max]), "would overflow"),
])
def test_iter_refuses_a_bad_counter(counter, message):
    ws = so.Workspace()
    ws["it"] = counter
    with pytest.raises(so.OperatorError, match=message):
        ws.run_operator_once(so.create_operator("Iter", ["it"], ["it"]))


def learning_rate(it, **args):
    out = run("LearningRate", {"it": np.array([it], np.int64)}, **args)["out"]
    assert (out.shape, out.dtype) == ((), np.float32)
    return float(out)


@pytest.mark.parametrize("it,args,expected", [
    (7, {"policy": "fixed"}, 1.0),
    (45, {"policy": "step", "stepsize": 20, "gamma": 0.9}, 0.9 ** 2),
    (3, {"policy": "exp", "gamma": 0.5}, 0.125),
    (4, {"policy": "inv", "gamma": 0.5, "power": 2.0}, 1 / 9),
    (25, {"policy": "poly", "power": 2.0, "max_iter": 100}, 0.75 ** 2),
    (150, {"policy": "poly", "power": 0.5, "max_iter": 100}, 0.0),
    (5, {"policy": "linearWarmup", "start_multiplier": 0.2, "num_iter": 10}, 0.6),
    (12, {"policy": "linearWarmup", "start_multiplier": 0.2, "num_iter": 10}, 1.0),
    (3, {"policy": "constantWarmup", "multiplier": 0.25, "num_iter": 10}, 0.25),
    (10, {"policy": "constantWarmup", "multiplier": 0.25, "num_iter": 10}, 1.0),
    (3, {"policy": "alter", "active_period": 2, "inactive_period": 3}, 0.0),
    (6, {"policy": "alter", "active_period": 2, "inactive_period": 3}, 1.0),
    (1, {"policy": "alter", "active_first": False, "active_period": 2,
         "inactive_period": 3}, 0.0),
    (4, {"policy": "alter", "active_first": False, "active_period": 2,
         "inactive_period": 3}, 1.0),
    (2, {"policy": "hill", "num_iter": 4, "start_multiplier": 0.5, "gamma": 1.0,
         "power": 1.0}, 0.75),
    (6, {"policy": "hill", "num_iter": 4, "start_multiplier": 0.5, "gamma": 1.0,
         "power": 1.0, "end_multiplier": 0.1}, 1 / 3),
    (100, {"policy": "hill", "num_iter": 4, "start_multiplier": 0.5, "gamma": 1.0,
           "power": 1.0, "end_multiplier": 0.1}, 0.1),
])
def test_learning_rate_policy(it, args, expected):
    assert learning_rate(it, base_lr=-0.1, **args) == pytest.approx(-0.1 * expected, rel=1e-6)


def test_every_learning_rate_policy_has_a_case():
    from scopeops.ops.learning import LEARNING_RATE_POLICIES
    assert set(LEARNING_RATE_POLICIES) == {"fixed", "step", "exp", "inv", "poly",
                                           "linearWarmup", "constantWarmup", "alter", "hill"}


def test_an_unknown_learning_rate_policy_is_refused_when_built_listing_the_policies():
    message = refused_when_built("LearningRate", {"it": np.zeros(1, np.int64)}, base_lr=0.1,
                                 policy="multistep")
    assert "unknown learning rate policy 'multistep'; the policies are fixed, step" in message


@pytest.mark.parametrize("args,message", [
    ({"policy": "fixed"}, "requires the argument 'base_lr'"),
    ({"base_lr": 0.1}, "requires the argument 'policy'"),
    ({"base_lr": 0.1, "policy": "step"}, "step policy needs stepsize > 0"),
    ({"base_lr": 0.1, "policy": "poly", "power": 1.0}, "poly policy needs max_iter > 0"),
    ({"base_lr": 0.1, "policy": "alter"}, "alter policy needs active_period >= 0"),
])
def test_learning_rate_arguments_that_cannot_work_are_refused_when_built(args, message):
    assert message in refused_when_built("LearningRate", {"it": np.zeros(1, np.int64)}, **args)


def test_iter_and_learning_rate_as_caffe2s_training_loops_use_them():
    init, train = so.Net("init"), so.Net("train")
    init.ConstantFill([], "ITER", shape=[1], value=0, dtype="int32")
    train.Iter("ITER", "ITER")
    train.LearningRate("ITER", "LR", base_lr=-0.1, policy="step", stepsize=20, gamma=0.9)
    ws = so.Workspace()
    ws.run_net_once(init)
    ws.create_net(train)
    for _ in range(25):
        ws.run_net("train")
    assert float(ws["LR"]) == pytest.approx(-0.09)


# --- Print -----------------------------------------------------------------------------------


def test_print_writes_the_tensor_to_stdout_and_nothing_to_the_workspace(capsys):
    ws = so.Workspace()
    ws["x"] = np.arange(6).reshape(2, 3)
    ws.run_operator_once(so.create_operator("Print", ["x"], []))
    assert capsys.readouterr().out == "Tensor x of type int64. Dims: (2, 3): 0, 1, 2, 3, 4, 5\n"
    assert ws.local_blobs() == ["x"]


def test_print_cuts_at_limit_and_prints_every_nth_run(capsys):
    ws = so.Workspace()
    ws["x"] = np.arange(5.0)
    net = so.Net("printing")
    net.Print("x", [], limit=2, every_n=2)
    ws.create_net(net)
    for _ in range(3):
        ws.run_net("printing")
    line = "Tensor x of type float64. Dims: (5): 0.0, 1.0, ... (3 more)\n"
    assert capsys.readouterr().out == line * 2


def test_print_of_a_blob_that_is_not_a_tensor(capsys):
    ws = so.Workspace()
    ws["s"] = "text"
    ws.run_operator_once(so.create_operator("Print", ["s"], []))
    assert capsys.readouterr().out == "Blob s holds a str\n"


def test_print_has_no_gradient_and_refuses_every_n_below_one():
    assert so.ops.schema("Print").gradient is NO_GRADIENT
    assert "every_n must be >= 1" in refused_when_built("Print", {"x": np.ones(1)}, [],
                                                        every_n=0)


# --- Flatten, Concat, Split ------------------------------------------------------------------


def test_flatten_reads_dims_before_axis_as_rows():
    x = rand(2, 3, 4)
    np.testing.assert_array_equal(run("Flatten", {"x": x})["out"], x.reshape(2, 12))
    np.testing.assert_array_equal(run("Flatten", {"x": x}, axis=0)["out"], x.reshape(1, 24))
    with pytest.raises(so.OperatorError, match=r"axis 4 must be in \[0, 3\]"):
        run("Flatten", {"x": x}, axis=4)


def test_concat_joins_along_the_axis_and_records_the_sizes():
    a, b = rand(2, 1, seed=1), rand(2, 3, seed=2)
    ws = run("Concat", {"a": a, "b": b}, ["y", "y_dims"], axis=-1)
    np.testing.assert_array_equal(ws["y"], np.concatenate([a, b], axis=1))
    assert (ws["y_dims"].dtype, ws["y_dims"].tolist()) == (np.int32, [1, 3])


def test_concat_reads_the_axis_from_the_image_order():
    a, b = rand(1, 2, 2, 3, seed=1), rand(1, 2, 2, 1, seed=2)
    ws = run("Concat", {"a": a, "b": b}, ["y", "y_dims"], order="NHWC")
    np.testing.assert_array_equal(ws["y"], np.concatenate([a, b], axis=3))


def test_concat_with_add_axis_stacks_the_inputs():
    a, b = rand(2, 3, seed=1), rand(2, 3, seed=2)
    ws = run("Concat", {"a": a, "b": b}, ["y", "y_dims"], axis=1, add_axis=1)
    np.testing.assert_array_equal(ws["y"], np.stack([a, b], axis=1))
    assert ws["y_dims"].tolist() == [1, 1]


@pytest.mark.parametrize("inputs,args,message", [
    ({"a": np.ones((2, 3)), "b": np.ones((3, 3))}, {"axis": 1}, r"input 1 \(blob b\) has shape "
                                                                r"\(3, 3\), which does not fit"),
    ({"a": np.ones(2), "b": np.ones(2, np.int32)}, {"axis": 0}, "needs inputs of one dtype"),
    ({"a": np.ones(2)}, {"axis": 1}, "axis 1 is out of range"),
])
def test_concat_refuses_inputs_that_do_not_fit(inputs, args, message):
    with pytest.raises(so.OperatorError, match=message):
        run("Concat", inputs, ["y", "y_dims"], **args)


def test_concat_refuses_both_an_axis_and_an_order():
    message = refused_when_built("Concat", {"a": np.ones(2)}, ["y", "y_dims"], axis=0,
                                 order="NCHW")
    assert "shouldn't specify both the axis and the order" in message


def test_split_into_equal_parts_by_sizes_and_by_a_split_info_blob():
    x = rand(6, 2)
    ws = run("Split", {"x": x}, ["p", "q", "r"], axis=0)
    np.testing.assert_array_equal(ws["q"], x[2:4])
    ws = run("Split", {"x": x}, ["p", "q"], axis=0, split=[1, 5])
    np.testing.assert_array_equal(ws["q"], x[1:])
    ws = run("Split", {"x": x, "sizes": np.array([4, 2], np.int32)}, ["p", "q"], axis=0)
    np.testing.assert_array_equal(ws["p"], x[:4])


def test_split_with_add_axis_removes_the_axis():
    x = rand(2, 3)
    ws = run("Split", {"x": x}, ["p", "q", "r"], axis=1, add_axis=1)
    np.testing.assert_array_equal(ws["r"], x[:, 2])


def test_split_undoes_concat():
    ws = so.Workspace()
    ws["a"], ws["b"] = rand(2, 1, 3, seed=1), rand(2, 2, 3, seed=2)
    net = so.Net("round_trip")
    net.Concat(["a", "b"], ["y", "y_dims"], axis=1)
    net.Split(["y", "y_dims"], ["a2", "b2"], axis=1)
    ws.run_net_once(net)
    np.testing.assert_array_equal(ws["a2"], ws["a"])
    np.testing.assert_array_equal(ws["b2"], ws["b"])


def test_a_split_that_does_not_divide_fails_with_caffe2s_enforce_fail():
    with pytest.raises(so.OperatorError, match="enforce fail") as info:
        run("Split", {"x": rand(3, 2)}, ["p", "q"], axis=0)
    assert "should be divisible by the number of outputs (2)" in str(info.value)


@pytest.mark.parametrize("inputs,args", [
    ({"x": rand(3)}, {"split": [1, 1]}),
    ({"x": rand(3), "sizes": np.array([1, 1], np.int32)}, {}),
])
def test_split_sizes_that_do_not_add_up_fail_with_enforce_fail(inputs, args):
    with pytest.raises(so.OperatorError, match="enforce fail: sum of split dimensions do not "
                                               "match: should be 3"):
        run("Split", inputs, ["p", "q"], axis=0, **args)


def test_split_refuses_a_split_argument_beside_a_split_input():
    message = refused_when_built("Split", {"x": rand(2), "s": np.array([1, 1], np.int32)},
                                 ["p", "q"], split=[1, 1])
    assert "enforce fail: if you set split with an input blob" in message


# --- losses, distances, MakeTwoClass, LSTMUnit -----------------------------------------------


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_softmax_with_loss_gives_probabilities_and_the_mean_cross_entropy():
    x, t = rand(4, 3, low=-3, high=3), np.array([0, 2, 1, 1], np.int32)
    ws = run("SoftmaxWithLoss", {"x": x, "t": t}, ["p", "loss"])
    p = softmax(x)
    np.testing.assert_allclose(ws["p"], p)
    assert ws["loss"].shape == ()
    np.testing.assert_allclose(ws["loss"], -np.log(p[np.arange(4), t]).mean())


def test_softmax_with_loss_weights_rows_and_scales():
    x, t, w = rand(3, 4, low=-3, high=3), np.array([0, 3, 1], np.int32), np.array([1.0, 0.0, 3.0])
    loss = run("SoftmaxWithLoss", {"x": x, "t": t, "w": w}, ["p", "loss"], scale=2.0)["loss"]
    per_row = -np.log(softmax(x)[np.arange(3), t])
    np.testing.assert_allclose(loss, 2.0 * (per_row * w).sum() / w.sum())


def test_softmax_with_loss_of_all_zero_weights_is_zero():
    loss = run("SoftmaxWithLoss", {"x": rand(2, 3), "t": np.array([0, 1], np.int32),
                                   "w": np.zeros(2)}, ["p", "loss"])["loss"]
    assert float(loss) == 0.0


def test_softmax_with_loss_with_label_probabilities():
    x = rand(2, 3, low=-3, high=3)
    t = np.array([[0.2, 0.3, 0.5], [0.0, 1.0, 0.0]])
    loss = run("SoftmaxWithLoss", {"x": x, "t": t}, ["p", "loss"], label_prob=1)["loss"]
    np.testing.assert_allclose(loss, -(t * np.log(softmax(x))).sum(axis=1).mean())


@pytest.mark.parametrize("t,args,message", [
    (np.array([0, 3], np.int32), {}, "label value 3 in blob t is outside \\[0, 3\\)"),
    (np.array([0.5, 0.5]), {}, "must be 2 ints"),
    (np.array([[0.5, 0.6, 0.0], [1.0, 0.0, 0.0]]), {"label_prob": 1}, "must sum to 1.0"),
])
def test_softmax_with_loss_refuses_bad_labels(t, args, message):
    with pytest.raises(so.OperatorError, match=message):
        run("SoftmaxWithLoss", {"x": rand(2, 3), "t": t}, ["p", "loss"], **args)


def test_softmax_with_loss_refuses_an_order_other_than_nchw():
    message = refused_when_built("SoftmaxWithLoss", {"x": rand(2, 3), "t": np.zeros(2, int)},
                                 ["p", "loss"], order="NHWC")
    assert "only NCHW order is supported" in message


def test_dot_product_and_make_two_class():
    x, y = rand(3, 4, seed=1), rand(3, 4, seed=2)
    np.testing.assert_allclose(run("DotProduct", {"x": x, "y": y})["out"], (x * y).sum(axis=1))
    p = rand(2, 3, low=0, high=1)
    np.testing.assert_allclose(run("MakeTwoClass", {"p": p})["out"], np.stack([1 - p, p], -1))


def lstm_reference(h, c, g, lengths, t, forget_bias=0.0, drop_states=False):
    d = c.shape[2]
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    i, f = sig(g[..., :d]), sig(g[..., d:2 * d] + forget_bias)
    o, cand = sig(g[..., 2 * d:3 * d]), np.tanh(g[..., 3 * d:])
    cell = f * c + i * cand
    hidden = o * np.tanh(cell)
    valid = (t < lengths).reshape(1, -1, 1)
    keep_c = np.zeros_like(c) if drop_states else c
    keep_h = np.zeros_like(h) if drop_states else h
    return np.where(valid, hidden, keep_h), np.where(valid, cell, keep_c)


@pytest.mark.parametrize("args", [{}, {"forget_bias": 1.0}, {"drop_states": 1}])
def test_lstm_unit_matches_the_lstm_equations_and_carries_ended_rows(args):
    h, c, g = rand(1, 3, 2, seed=1), rand(1, 3, 2, seed=2), rand(1, 3, 8, low=-2, high=2, seed=3)
    lengths, t = np.array([3, 2, 1], np.int32), np.array([1], np.int32)
    ws = run("LSTMUnit", {"h": h, "c": c, "g": g, "lengths": lengths, "t": t},
             ["hidden", "cell"], **args)
    hidden, cell = lstm_reference(h, c, g, lengths, 1, **args)
    np.testing.assert_allclose(ws["hidden"], hidden)
    np.testing.assert_allclose(ws["cell"], cell)


def test_lstm_unit_refuses_gates_of_the_wrong_width():
    with pytest.raises(so.OperatorError, match=r"the gates \(blob g\) must be \(1, 3, 8\)"):
        run("LSTMUnit", {"h": rand(1, 3, 2), "c": rand(1, 3, 2), "g": rand(1, 3, 6),
                         "lengths": np.ones(3, np.int32), "t": np.zeros(1, np.int32)},
            ["hidden", "cell"])


def test_lstm_unit_without_sequence_lengths_takes_four_inputs():
    message = refused_when_built("LSTMUnit", {"h": rand(1, 1, 1), "c": rand(1, 1, 1),
                                              "g": rand(1, 1, 4), "s": np.ones(1, np.int32),
                                              "t": np.zeros(1, np.int32)},
                                 ["hidden", "cell"], sequence_lengths=0)
    assert "takes 4 inputs with sequence_lengths=False, got 5" in message


# --- MatMul and FC read N-D inputs as matrices -----------------------------------------------


def test_matmul_reads_inputs_as_matrices_and_resizes_like_a_third_input():
    a, b = rand(2, 3, 2, seed=1), rand(6, 4, seed=2)
    np.testing.assert_allclose(run("MatMul", {"a": a, "b": b}, axis_a=1)["out"],
                               a.reshape(2, 6) @ b)
    like = np.zeros((4, 2))
    out = run("MatMul", {"a": rand(2, 3, seed=1), "b": rand(3, 4, seed=2), "like": like})["out"]
    assert out.shape == (4, 2)


def test_fc_with_axis_0_on_a_vector_as_caffe2s_brew_fc_uses_it():
    x, w, b = rand(3, seed=1), rand(4, 3, seed=2), rand(4, seed=3)
    out = run("FC", {"x": x, "w": w, "b": b}, axis=0)["out"]
    assert out.shape == (4,)
    np.testing.assert_allclose(out, w @ x + b)


def test_fc_gradient_with_two_outputs_skips_dx():
    x, w, dy = rand(3, 4, seed=1), rand(2, 4, seed=2), rand(3, 2, seed=3)
    ws = run("FCGradient", {"x": x, "w": w, "dy": dy}, ["dw", "db"])
    np.testing.assert_allclose(ws["dw"], dy.T @ x)
    np.testing.assert_allclose(ws["db"], dy.sum(axis=0))


@pytest.mark.parametrize("type_name,inputs,outputs,message", [
    ("SquaredL2DistanceGradient", {"x": rand(3, 2), "y": rand(3, 2), "dd": rand(4)},
     ["dx", "dy"], r"the output gradient \(blob dd\) has shape \(4,\), expected \(3,\)"),
    ("FCGradient", {"x": rand(3, 4), "w": rand(2, 4), "dy": rand(3, 3)}, ["dw", "db", "dx"],
     r"the output gradient \(blob dy\) has shape \(3, 3\), expected \(3, 2\)"),
    ("ReluGradient", {"y": rand(3), "dy": rand(4)}, ["dx"],
     r"the output gradient \(blob dy\) has shape \(4,\), but the output \(blob y\)"),
    ("SumElementsGradient", {"x": rand(3), "dy": rand(2)}, ["dx"],
     r"the output gradient \(blob dy\) must have one element"),
    ("MulGradient", {"a": rand(3), "b": rand(3), "dc": rand(2)}, ["da", "db"],
     r"the output gradient \(blob dc\) has shape \(2,\)"),
    ("DivGradient", {"b": rand(3), "c": rand(3), "dc": rand(3), "a": rand(4)}, ["da", "db"],
     r"A \(blob a, shape \(4,\)\) and B \(blob b, shape \(3,\)\) do not broadcast"),
])
def test_gradient_op_shape_errors_name_the_right_blobs(type_name, inputs, outputs, message):
    with pytest.raises(so.OperatorError, match=message):
        run(type_name, inputs, outputs)
