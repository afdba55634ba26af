"""scopeops.caffe2.python.core's gradients: GradientRegistry (Caffe2's gradient-function
protocol), GetBackwardPass, GetGradientForOp and Net.AddGradientOperators, with the ops
and messages Caffe2 builds (docs/caffe2.md, "Gradients")."""

import inspect

import numpy as np
import pytest

import scopeops as so
from scopeops.caffe2.proto import caffe2_pb2
from scopeops.caffe2.python import core, workspace

C = core.CreateOperator
Registry = core.GradientRegistry
GPU1 = core.DeviceOption(caffe2_pb2.CUDA, 1)


@pytest.fixture(autouse=True)
def clean_state():
    registered = dict(Registry.gradient_registry_)
    workspace.ResetWorkspace()
    yield
    workspace.ResetWorkspace()
    Registry.gradient_registry_.clear()
    Registry.gradient_registry_.update(registered)


def grads_of(op):
    return [name + "_grad" for name in op.input]


def keep_device(made, op):
    if op.HasField("device_option"):
        made.device_option.CopyFrom(op.device_option)
    return made


def register_test_functions():
    """Gradient functions for op types nobody registers as operators."""
    seen = []

    @Registry.RegisterGradient("T_Pass")
    def pass_gradient(op, g_output):
        seen.append((op, list(g_output)))
        if None in g_output:
            raise RuntimeError(f"T_Pass needs every output gradient, got {g_output}")
        return keep_device(C("T_PassGrad", g_output, grads_of(op)), op), grads_of(op)

    @Registry.RegisterGradient("T_ReadsOut")
    def reads_out_gradient(op, g_output):
        return C("T_ReadsOutGrad", list(op.output) + g_output, grads_of(op)), grads_of(op)

    @Registry.RegisterGradient("T_ReadsIn")
    def reads_in_gradient(op, g_output):
        return [C("T_ReadsInGrad", list(op.input) + g_output, grads_of(op))], grads_of(op)

    @Registry.RegisterGradient("T_Flat")
    def flat_gradient(op, g_output):
        return None, [None] * len(op.input)

    return seen


def equal_lists(got, expected):
    assert [str(op) for op in got] == [str(op) for op in expected]
    assert list(got) == list(expected)                 # field presence included


# -- the protocol -------------------------------------------------------------------------------


def test_register_gradient_returns_the_function_and_refuses_non_functions():
    def fn(op, g_output):
        return [], [None]

    assert Registry.RegisterGradient("T_Any")(fn) is fn
    assert Registry.gradient_registry_["T_Any"] is fn
    with pytest.raises(TypeError):
        Registry.RegisterGradient("T_Any")(42)
    with pytest.raises(TypeError):
        Registry.RegisterGradient("")


def test_functions_get_the_forward_message_and_their_ops_are_kept_as_returned():
    seen = register_test_functions()
    forward = [C("T_Pass", "a", "b", engine="E", flavour="x"), C("T_Pass", "b", "c")]
    grads, grad_map = Registry.GetBackwardPass(forward, {"c": "c_given"})
    equal_lists(grads, [C("T_PassGrad", "c_given", "b_grad"), C("T_PassGrad", "b_grad", "a_grad")])
    assert not any(op.is_gradient_op or op.HasField("is_gradient_op") for op in grads)
    assert [type(op) for op, _ in seen] == [caffe2_pb2.OperatorDef] * 2
    assert seen[1][0] == forward[0] and seen[1][1] == ["b_grad"]
    assert seen[1][0] is not forward[0]                # a copy: the caller's op is safe
    assert grad_map == {"c": "c_given", "b": "b_grad", "a": "a_grad"}
    assert all(isinstance(k, core.BlobReference) and isinstance(v, core.BlobReference)
               for k, v in grad_map.items())


@pytest.mark.parametrize("device", [None, GPU1, core.DeviceOption(caffe2_pb2.CPU, 0)],
                         ids=["none", "gpu1", "explicit-cpu"])
def test_function_ops_keep_the_device_option_they_were_given(device):
    register_test_functions()
    forward = [C("T_Pass", "a", "b", device_option=device), C("T_Pass", "b", "c",
                                                              device_option=device)]
    grads, _ = Registry.GetBackwardPass(forward, {"c": "c_grad"})
    expected = [C("T_PassGrad", "c_grad", "b_grad", device_option=device),
                C("T_PassGrad", "b_grad", "a_grad", device_option=device)]
    equal_lists(grads, expected)


def test_a_list_of_ys_seeds_ones_named_autogen_grad_first():
    register_test_functions()
    forward = [C("T_Pass", "a", "b"), C("T_Pass", "b", "c")]
    grads, grad_map = Registry.GetBackwardPass(forward, ["c"])
    equal_lists(grads, [C("ConstantFill", "c", "c_autogen_grad", value=1.0),
                        C("T_PassGrad", "c_autogen_grad", "b_grad"),
                        C("T_PassGrad", "b_grad", "a_grad")])
    assert grad_map["c"] == "c_autogen_grad"


def test_seed_fills_take_the_current_scopes_as_create_operator_does():
    forward = [C("Relu", "a", "b")]
    option = core.DeviceOption(caffe2_pb2.CPU, 0)          # both fields set explicitly
    with core.NameScope("outer"), core.DeviceScope(option):
        grads, grad_map = Registry.GetBackwardPass(forward, ["b"])
        expected_fill = C("ConstantFill", [core.BlobReference("b")], "b_autogen_grad",
                          value=1.0)
    assert expected_fill.output[0] == "outer/b_autogen_grad"
    equal_lists(grads[:1], [expected_fill])
    assert grads[0].device_option.HasField("cuda_gpu_id")
    assert grad_map["b"] == "outer/b_autogen_grad"


def test_a_dict_of_ys_mixes_given_and_generated_seeds():
    register_test_functions()
    forward = [C("T_Pass", "a", "b"), C("T_Pass", "a", "c")]
    grads, grad_map = Registry.GetBackwardPass(forward, {"b": "b_given", "c": None})
    assert grads[0] == C("ConstantFill", "c", "c_autogen_grad", value=1.0)
    assert grad_map["b"] == "b_given" and grad_map["c"] == "c_autogen_grad"
    assert grads[-1] == C("Sum", ["a_grad", "_a_grad_autosplit_0"], "a_grad")


@pytest.mark.parametrize("ys", ["c", ("c", "c_grad"), 3, None])
def test_ys_is_a_list_or_a_dict(ys):
    register_test_functions()
    with pytest.raises(TypeError, match="list or a dict"):
        Registry.GetBackwardPass([C("T_Pass", "a", "c")], ys)


def test_no_seed_gives_no_ops_and_ops_off_the_path_give_none():
    seen = register_test_functions()
    forward = [C("T_Pass", "a", "b"), C("T_Pass", "b", "c")]
    assert Registry.GetBackwardPass(forward, {}) == ([], {})
    grads, grad_map = Registry.GetBackwardPass(forward, {"b": "b_grad"})
    equal_lists(grads, [C("T_PassGrad", "b_grad", "a_grad")])
    assert len(seen) == 1 and "c" not in grad_map


def test_reading_outputs_and_inputs_of_the_op():
    register_test_functions()
    forward = [C("T_ReadsOut", "a", "b"), C("T_ReadsIn", "b", "c"), C("T_Pass", "c", "d")]
    grads, _ = Registry.GetBackwardPass(forward, {"d": "d_grad"})
    equal_lists(grads, [C("T_PassGrad", "d_grad", "c_grad"),
                        C("T_ReadsInGrad", ["b", "c_grad"], "b_grad"),
                        C("T_ReadsOutGrad", ["b", "b_grad"], "a_grad")])


def test_in_place_functions_reuse_the_gradient_name():
    register_test_functions()
    forward = [C("T_ReadsOut", "a", "a"), C("T_ReadsOut", "a", "b")]
    grads, _ = Registry.GetBackwardPass(forward, {"b": "b_grad"})
    equal_lists(grads, [C("T_ReadsOutGrad", ["b", "b_grad"], "a_grad"),
                        C("T_ReadsOutGrad", ["a", "a_grad"], "a_grad")])


@pytest.mark.parametrize("forward, ys", [
    ([C("T_Pass", "a", "a"), C("T_Pass", "b", "a"), C("T_Pass", "a", "b")], "b"),  # gradient
    ([C("T_ReadsOut", "a", "h"), C("T_Pass", "h", "h"), C("T_Pass", "h", "out")], "out"),
    ([C("T_ReadsIn", "a", "out"), C("T_Pass", "a", "a")], "out"),              # input
], ids=["gradient", "output", "input"])
def test_functions_reading_a_version_the_forward_ops_replaced_are_refused(forward, ys):
    register_test_functions()
    with pytest.raises(RuntimeError, match="version"):
        Registry.GetBackwardPass(forward, {ys: ys + "_grad"})


def test_gradients_of_a_blob_read_twice_are_summed_on_its_forward_device():
    register_test_functions()
    forward = [C("T_Pass", "a", "h1", device_option=GPU1),
               C("T_Pass", "a", "h2", device_option=GPU1),
               C("T_Pass", ["h1", "h2"], "out", device_option=GPU1)]
    grads, grad_map = Registry.GetBackwardPass(forward, {"out": "out_grad"})
    equal_lists(grads, [
        C("T_PassGrad", "out_grad", ["h1_grad", "h2_grad"], device_option=GPU1),
        C("T_PassGrad", "h2_grad", "a_grad", device_option=GPU1),
        C("T_PassGrad", "h1_grad", "_a_grad_autosplit_0", device_option=GPU1),
        C("Sum", ["a_grad", "_a_grad_autosplit_0"], "a_grad", device_option=GPU1)])
    assert grad_map["a"] == "a_grad"


def test_a_use_without_gradient_adds_nothing_to_sum():
    register_test_functions()
    forward = [C("T_Pass", "a", "h1"), C("T_Flat", "a", "h2"),
               C("T_Pass", ["h1", "h2"], "out")]
    grads, _ = Registry.GetBackwardPass(forward, {"out": "out_grad"})
    equal_lists(grads, [C("T_PassGrad", "out_grad", ["h1_grad", "h2_grad"]),
                        C("T_PassGrad", "h1_grad", "a_grad")])


def test_stop_gradient():
    register_test_functions()
    cut = [C("T_Pass", "a", "h"), C("StopGradient", "h", "h"), C("T_Pass", "h", "out")]
    grads, grad_map = Registry.GetBackwardPass(cut, {"out": "out_grad"})
    equal_lists(grads, [C("T_PassGrad", "out_grad", "h_grad")])
    assert grad_map == {"out": "out_grad"}
    orphan = [C("T_Pass", "a", "h"), C("StopGradient", "h", "unused"),
              C("T_Pass", "h", "out")]
    with pytest.raises(ValueError, match="orphan"):
        Registry.GetBackwardPass(orphan, {"out": "out_grad"})


@pytest.mark.parametrize("result, message", [
    ("not a pair", "must return"),
    (([], "a_grad"), "g_input"),
    ((["not an op"], ["a_grad"]), "caffe2_pb2.OperatorDef"),
    ((so.OperatorDef("Relu", ["x"], ["y"]), ["a_grad"]), "caffe2_pb2.OperatorDef"),
    (([], [core.GradientSlice("i", "v")]), "sparse"),
    (([], [3]), "blob name"),
    (([], ["a_grad", "b_grad"]), "g_input"),
])
def test_bad_returns_of_a_function_are_refused(result, message):
    Registry.RegisterGradient("T_Bad")(lambda op, g_output: result)
    with pytest.raises(so.GradientError, match=message):
        Registry.GetBackwardPass([C("T_Bad", "a", "b")], {"b": "b_grad"})


def test_a_function_may_pass_a_gradient_through():
    Registry.RegisterGradient("T_Same")(lambda op, g_output: (None, list(g_output)))
    register_test_functions()
    forward = [C("T_Pass", "a", "h"), C("T_Same", "h", "out")]
    grads, grad_map = Registry.GetBackwardPass(forward, {"out": "out_grad"})
    equal_lists(grads, [C("T_PassGrad", "out_grad", "a_grad")])
    assert grad_map["h"] == "out_grad"


def test_native_makers_take_precedence_and_functions_fill_the_gaps():
    Registry.RegisterGradient("Relu")(lambda op, g_output: ([C("Never", [], [])], [None]))
    Registry.RegisterGradient("ReluGradient")(
        lambda op, g_output: (C("T_SecondOrder", g_output, "y_grad_grad"), [None, "y_grad_grad"]))
    grads, _ = Registry.GetBackwardPass([C("Relu", "x", "y")], {"y": "y_grad"})
    assert [op.type for op in grads] == ["ReluGradient"]
    second, _ = Registry.GetBackwardPass(grads, {"x_grad": "x_grad_grad"})
    assert [op.type for op in second] == ["T_SecondOrder"]


def test_an_op_type_nobody_knows_is_refused():
    with pytest.raises(so.GradientError, match="T_Unknown"):
        Registry.GetBackwardPass([C("T_Unknown", "a", "b")], {"b": "b_grad"})


# -- ops of scopeops' makers, as Caffe2's C++ makers made them --------------------------------


def test_native_makers_ops_are_marked_and_carry_the_forward_device_engine_and_arguments():
    option = core.DeviceOption(caffe2_pb2.CPU, 0)
    forward = [C("FC", ["in", "w", "b"], "fc", axis=1, use_cudnn=True, engine="CUDNN",
                 device_option=option),
               C("AveragedLoss", "fc", "loss")]
    grads, _ = Registry.GetBackwardPass(forward, {"loss": "loss_grad"})
    averaged = C("AveragedLossGradient", ["fc", "loss_grad"], "fc_grad")
    fc = C("FCGradient", ["in", "w", "fc_grad"], ["w_grad", "b_grad", "in_grad"],
           device_option=option, engine="CUDNN", axis=1, use_cudnn=True)
    for op in (averaged, fc):
        op.is_gradient_op = True
    equal_lists(grads, [averaged, fc])


def test_a_maker_that_reads_forward_arguments_gets_them_in_caffe2s_place():
    forward = [C("Softmax", "x", "p", axis=0, order="NCHW"),
               C("AveragedLoss", "p", "loss")]
    grads, _ = Registry.GetBackwardPass(forward, {"loss": "loss_grad"})
    softmax = grads[-1]
    assert softmax.type == "SoftmaxGradient"
    assert [(a.name, a.i if a.HasField("i") else a.s) for a in softmax.arg] == [
        ("axis", 0), ("order", b"NCHW")]


def test_makers_that_set_their_own_arguments_get_none_of_the_forward_ones():
    grads, grad_map = Registry.GetBackwardPass([C("Sub", ["a", "b"], "c", order="NHWC")],
                                               {"c": "c_grad"})
    negative = C("Negative", "c_grad", "b_grad")
    negative.is_gradient_op = True
    equal_lists(grads, [negative])
    assert grad_map["a"] == "c_grad"                     # passed through, as in Caffe2


def test_add_and_sum_pass_their_gradient_through():
    forward = [C("Add", ["x1", "x2"], "x4"), C("Add", ["x2", "x3"], "x5"),
               C("Sum", ["x4", "x5"], "x6")]
    grads, grad_map = Registry.GetBackwardPass(forward, {"x6": "x6_grad"})
    equal_lists(grads, [C("Sum", ["x6_grad", "x6_grad"], "x2_grad")])
    assert grad_map == {"x6": "x6_grad", "x4": "x6_grad", "x5": "x6_grad",
                        "x1": "x6_grad", "x2": "x2_grad", "x3": "x6_grad"}


def test_gradient_ops_with_the_forward_arguments_run():
    net = core.Net("copied_args")
    x, b = net.AddExternalInputs("x", "b")
    y = net.Add([x, b], "y", broadcast=1, axis=0)
    net.SumElements(y, "loss")
    grad_map = net.AddGradientOperators(["loss"])
    reduce_op = next(op for op in net.Proto().op if op.type == "SumReduceLike")
    assert [a.name for a in reduce_op.arg] == ["broadcast", "axis"]   # Caffe2's copies
    workspace.FeedBlob("x", np.ones((2, 3), np.float32))
    workspace.FeedBlob("b", np.array([1.0, 2.0], np.float32))
    workspace.RunNetOnce(net)
    np.testing.assert_allclose(workspace.FetchBlob(grad_map["b"]), [3.0, 3.0])
    np.testing.assert_allclose(workspace.FetchBlob(grad_map["x"]), np.ones((2, 3)))


def test_an_op_breaking_its_schema_is_refused_with_a_schema_message():
    with pytest.raises(so.GradientError, match="schema"):
        Registry.GetBackwardPass([C("Mul", "a", "b"), C("Relu", "b", "c")], ["c"])


def test_zero_gradient_gives_a_missing_output_gradient():
    net = core.Net("zero_gradient")
    refs = net.AddExternalInputs("h", "c", "g", "s", "t")
    hidden, cell = net.LSTMUnit(refs, ["hidden_t", "cell_t"])
    before = net.Proto().SerializeToString()
    with pytest.raises(so.OperatorError, match="cell_t"):
        net.AddGradientOperators([hidden])
    assert net.Proto().SerializeToString() == before          # nothing added
    net.ZeroGradient(cell, [])
    grad_map = net.AddGradientOperators([hidden])
    zero = C("ConstantFill", "cell_t", "cell_t_grad", value=0.0)
    zero.is_gradient_op = True
    assert zero in net.Proto().op and grad_map["c"] == "c_grad"


# -- GetGradientForOp ---------------------------------------------------------------------------


def test_get_gradient_for_op():
    register_test_functions()
    relu = C("Relu", "x", "y", device_option=GPU1)
    ops, g_input = Registry.GetGradientForOp(relu, ["y_grad"])
    expected = C("ReluGradient", ["y", "y_grad"], "x_grad", device_option=GPU1)
    expected.is_gradient_op = True
    equal_lists(ops, [expected])
    assert g_input == ["x_grad"]
    ops, g_input = Registry.GetGradientForOp(C("T_Pass", ["a", "b"], "c"), ["c_grad"])
    equal_lists(ops, [C("T_PassGrad", "c_grad", ["a_grad", "b_grad"])])
    assert g_input == ["a_grad", "b_grad"]
    ops, g_input = Registry.GetGradientForOp(C("Add", ["a", "b"], "c"), ["c_grad"])
    assert ops == [] and g_input == ["c_grad", "c_grad"]
    ops, g_input = Registry.GetGradientForOp(C("Relu", "x", "x"), ["x_grad"])
    assert [(op.type, list(op.input), list(op.output)) for op in ops] == [
        ("ReluGradient", ["x", "x_grad"], ["x_grad"])]


def test_get_gradient_for_op_refuses_what_it_cannot_give():
    with pytest.raises(so.GradientError, match="one gradient"):
        Registry.GetGradientForOp(C("Relu", "x", "y"), ["y_grad", "z_grad"])
    with pytest.raises(so.GradientError, match="sparse"):
        Registry.GetGradientForOp(C("Relu", "x", "y"), [core.GradientSlice("i", "v")])
    # In place, Sqr's gradient needs x as it was before the op: only a net can save it.
    with pytest.raises(RuntimeError, match="version 0"):
        Registry.GetGradientForOp(C("Sqr", "x", "x"), ["x_grad"])


def test_get_backward_pass_refuses_values_the_ops_overwrite():
    forward = [C("Sqr", "x", "y"), C("Relu", "x", "x"), C("Sum", ["x", "y"], "z")]
    with pytest.raises(RuntimeError, match="version"):
        Registry.GetBackwardPass(forward, ["z"])


# -- Net.AddGradientOperators -------------------------------------------------------------------


def feed(**values):
    for name, value in values.items():
        workspace.FeedBlob(name, np.array(value, np.float32))


def test_add_gradient_operators_appends_the_pass_and_keeps_the_forward_messages():
    net = core.Net("appended")
    x, w = net.AddExternalInputs("x", "w")
    y = net.Mul([x, w], "y")
    loss = net.SumElements(y, "loss")
    forward = net.Proto().SerializeToString()
    grad_map = net.AddGradientOperators([loss])
    proto = net.Proto()
    head = caffe2_pb2.NetDef()
    head.CopyFrom(proto)
    del head.op[2:]
    assert head.SerializeToString() == forward
    assert proto.op[2] == C("ConstantFill", "loss", "loss_autogen_grad", value=1.0)
    assert grad_map[core.BlobReference("x")] == "x_grad" and grad_map["loss"] == \
        "loss_autogen_grad"
    feed(x=[1.0, 2.0], w=[3.0, 5.0])
    workspace.RunNetOnce(net)
    np.testing.assert_allclose(workspace.FetchBlob(grad_map["x"]), [3.0, 5.0])
    np.testing.assert_allclose(workspace.FetchBlob(grad_map["w"]), [1.0, 2.0])


def test_add_gradient_operators_with_generated_seeds_in_a_dict_and_skip():
    net = core.Net("skipped")
    x = net.AddExternalInput("x")
    h = net.Relu(x, "h")
    y = net.Scale(h, "y", scale=3.0)
    grad_map = net.AddGradientOperators({y: None}, skip=1)
    assert "h" in grad_map and "x" not in grad_map        # op 0 is not differentiated
    feed(x=[-1.0, 2.0])
    workspace.RunNetOnce(net)
    np.testing.assert_allclose(workspace.FetchBlob(grad_map["h"]), [3.0, 3.0])
    with pytest.raises(TypeError):
        net.AddGradientOperators(["y"], skip=-1)


def test_two_seeds_where_one_loss_feeds_the_other():
    net = core.Net("two_seeds")
    x, two, three = net.AddExternalInputs("x", "two", "three")
    m1 = net.Mul([x, two], "m1")
    m2 = net.Mul([m1, three], "m2")
    grad_map = net.AddGradientOperators([m2, m1])
    assert grad_map["m1"] == "m1_autogen_grad"
    assert net.Proto().op[-2] == C("Sum", ["m1_autogen_grad", "_m1_grad_autosplit_0"],
                                   "m1_autogen_grad")
    feed(x=[1.0], two=[2.0], three=[3.0])
    workspace.RunNetOnce(net)
    np.testing.assert_allclose(workspace.FetchBlob(grad_map["x"]), [8.0])   # 2*3 + 2


def test_accumulated_pass_through_gradients_run():
    net = core.Net("accumulated")
    x, one, two, three = net.AddExternalInputs("x", "one", "two", "three")
    m1 = net.Mul([x, two], "m1")
    m2 = net.Mul([x, three], "m2")
    d = net.Sub([m1, one])
    grad_map = net.AddGradientOperators([m2, d])
    feed(x=[1.0], one=[1.0], two=[2.0], three=[3.0])
    workspace.RunNetOnce(net)
    np.testing.assert_allclose(workspace.FetchBlob(grad_map["x"]), [5.0])


def test_values_an_op_overwrites_are_saved_and_creation_sites_follow_their_ops():
    net = core.Net("saved")
    x, w = net.AddExternalInputs("x", "w")
    net.Sqr(x, x)
    sqr_line = inspect.currentframe().f_lineno - 1
    y = net.Mul([x, w], "y")
    mul_line = inspect.currentframe().f_lineno - 1
    net.SumElements(y, "loss")
    grad_map = net.AddGradientOperators(["loss"])
    ops = net.Proto().op
    assert [op.type for op in ops[:4]] == ["Copy", "Sqr", "Mul", "SumElements"]
    assert list(ops[0].input) == ["x"] and list(ops[1].input) == ["x"]
    feed(x=[1.0, -2.0], w=[3.0, 0.5])
    workspace.RunNetOnce(net)
    np.testing.assert_allclose(workspace.FetchBlob(grad_map["x"]), [6.0, -2.0])  # 2 x w
    net.PopulateProtoWithFileName()
    assert ops[0].name == "" and ops[1].name.endswith(f":{sqr_line}:{inspect.stack()[0][3]}")
    assert ops[2].name.split(":")[-2] == str(mul_line)
    feed(x=[1.0, 2.0], w=[1.0, 2.0, 3.0])
    with pytest.raises(so.OperatorError, match=f"line {mul_line}"):
        workspace.RunNetOnce(net)


def test_a_failing_pass_leaves_the_net_as_it_was():
    register_test_functions()
    net = core.Net("unchanged")
    net.Relu("x", "h")
    net.Mul("h", "bad")
    before = net.Proto().SerializeToString()
    with pytest.raises(so.GradientError):
        net.AddGradientOperators(["bad"])
    assert net.Proto().SerializeToString() == before
