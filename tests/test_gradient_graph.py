"""The shape of the gradient graph (Caffe2's gradient IR), the builder's hooks, and where
scopeops' graph differs from Caffe2's to stay exact (docs/control-flow.md, "Gradients of
in-place ops and reused blobs").

The Caffe2-shaped cases use op types no one registers (``Direct``, ``UseOutput``,
``UseInput``, ``Nogradient``), given gradient functions in Caffe2's protocol, as Caffe2's
own gradient tests do, and Add/Sub/Sum, whose makers live in this package.
"""

import numpy as np
import pytest

import scopeops as so
from scopeops.gradients import (
    NO_ARGUMENT_COPY,
    backward_ops,
    caffe2_seed_name,
    grad_name,
)
from scopeops.ops import Operator, gradient, register

OD = so.OperatorDef


def rand(*shape, seed=0, low=-1.0, high=1.0):
    return np.random.default_rng(seed).uniform(low, high, shape)


# -- gradient functions in Caffe2's protocol, for unregistered test op types -----------------


def need_all(op, g_output):
    for name, g in zip(op.outputs, g_output, strict=True):
        if g is None:
            raise RuntimeError(f"need the gradient of {name}, which nobody gave")
    return list(g_output)


def input_grads(op):
    return [name + "_grad" for name in op.inputs]


def same_device(grad_op, forward_op):
    grad_op.device_option = forward_op.device_option
    return grad_op


def direct_gradient(op, g_output):
    return (same_device(OD("DirectGradient", need_all(op, g_output), input_grads(op)), op),
            input_grads(op))


def use_output_gradient(op, g_output):
    return (same_device(OD("UseOutputGradient", list(op.outputs) + need_all(op, g_output),
                           input_grads(op)), op), input_grads(op))


def use_input_gradient(op, g_output):
    return (same_device(OD("UseInputGradient", list(op.inputs) + need_all(op, g_output),
                           input_grads(op)), op), input_grads(op))


def no_gradient(op, g_output):
    return [], [None] * len(op.inputs)


TEST_MAKERS = {"Direct": direct_gradient, "UseOutput": use_output_gradient,
               "UseInput": use_input_gradient, "Nogradient": no_gradient}


def caffe2_pass(ops, ys, **hooks):
    """The pass as a Caffe2 compatibility layer asks for it."""
    return backward_ops(ops, ys, makers=TEST_MAKERS, seed_namer=caffe2_seed_name, **hooks)


def grad_op(type_name, inputs, outputs, **fields):
    return OD(type_name, list(inputs), list(outputs), **fields)


def direct(inputs, outputs):
    return OD("Direct", [inputs] if isinstance(inputs, str) else inputs,
              [outputs] if isinstance(outputs, str) else outputs)


# -- Caffe2's op lists: direct gradients, seeds, versions ------------------------------------


@pytest.mark.parametrize("device", [None, so.DeviceOption("gpu", 1)], ids=["cpu", "gpu1"])
def test_chain_of_direct_gradients(device):
    forward = [direct("in", "hidden"), direct("hidden", "out")]
    for op in forward:
        op.device_option = device
    result = caffe2_pass(forward, {"out": "out_grad"})
    assert result.ops == [
        grad_op("DirectGradient", ["out_grad"], ["hidden_grad"], device_option=device),
        grad_op("DirectGradient", ["hidden_grad"], ["in_grad"], device_option=device)]


def test_list_of_losses_fills_their_gradients_first():
    result = caffe2_pass([direct("in", "hidden"), direct("hidden", "out")], ["out"])
    assert result.ops == [
        so.create_operator("ConstantFill", ["out"], ["out_autogen_grad"], value=1.0),
        grad_op("DirectGradient", ["out_autogen_grad"], ["hidden_grad"]),
        grad_op("DirectGradient", ["hidden_grad"], ["in_grad"])]
    assert not result.ops[0].is_gradient_op


def test_only_ops_upstream_of_the_given_gradient_get_gradients():
    result = caffe2_pass([direct("in", "hidden"), direct("hidden", "out")],
                         {"hidden": "hidden_grad"})
    assert result.ops == [grad_op("DirectGradient", ["hidden_grad"], ["in_grad"])]


def test_no_given_gradient_gives_no_ops():
    result = caffe2_pass([direct("in", "hidden"), direct("hidden", "out")], {})
    assert result.ops == [] and result.grad_map == {}


def test_in_place_direct_gradient_reuses_the_gradient_name():
    result = caffe2_pass([direct("in", "in"), direct("in", "out")], {"out": "out_grad"})
    assert result.ops == [grad_op("DirectGradient", ["out_grad"], ["in_grad"]),
                          grad_op("DirectGradient", ["in_grad"], ["in_grad"])]


def test_reading_the_gradient_of_a_later_version_is_a_version_error():
    forward = [direct("x", "x"), direct("y", "x"), direct("x", "y")]
    with pytest.raises(RuntimeError, match="version") as info:
        caffe2_pass(forward, {"y": "y_grad"})
    assert isinstance(info.value, so.GradientError)


def test_gradient_reading_outputs():
    forward = [OD("UseOutput", ["in"], ["hidden"]), OD("UseOutput", ["hidden"], ["out"]),
               direct("out", "sink")]
    assert caffe2_pass(forward, {"sink": "sink_grad"}).ops == [
        grad_op("DirectGradient", ["sink_grad"], ["out_grad"]),
        grad_op("UseOutputGradient", ["out", "out_grad"], ["hidden_grad"]),
        grad_op("UseOutputGradient", ["hidden", "hidden_grad"], ["in_grad"])]


def test_gradient_reading_the_output_of_an_in_place_op():
    forward = [OD("UseOutput", ["in"], ["in"]), OD("UseOutput", ["in"], ["out"]),
               direct("out", "sink")]
    assert caffe2_pass(forward, {"sink": "sink_grad"}).ops == [
        grad_op("DirectGradient", ["sink_grad"], ["out_grad"]),
        grad_op("UseOutputGradient", ["out", "out_grad"], ["in_grad"]),
        grad_op("UseOutputGradient", ["in", "in_grad"], ["in_grad"])]


def test_gradient_function_reading_an_overwritten_output_is_a_runtime_error():
    forward = [OD("UseOutput", ["in"], ["hidden"]), direct("hidden", "hidden"),
               OD("UseOutput", ["hidden"], ["out"]), direct("out", "sink")]
    with pytest.raises(RuntimeError, match='needs output "hidden" at version'):
        caffe2_pass(forward, {"sink": "sink_grad"})


def test_gradient_reading_inputs():
    forward = [direct("in", "hidden"), OD("UseInput", ["hidden"], ["out"]),
               direct("out", "sink")]
    assert caffe2_pass(forward, {"sink": "sink_grad"}).ops == [
        grad_op("DirectGradient", ["sink_grad"], ["out_grad"]),
        grad_op("UseInputGradient", ["hidden", "out_grad"], ["hidden_grad"]),
        grad_op("DirectGradient", ["hidden_grad"], ["in_grad"])]


def test_gradient_function_reading_an_overwritten_input_is_a_runtime_error():
    forward = [OD("UseInput", ["in"], ["out"]), direct("in", "in")]
    with pytest.raises(RuntimeError, match='needs input "in" at version 0'):
        caffe2_pass(forward, {"out": "out_grad"})


# -- accumulation ---------------------------------------------------------------------------


@pytest.mark.parametrize("device", [None, so.DeviceOption("gpu", 1)], ids=["cpu", "gpu1"])
def test_gradients_of_a_blob_read_twice_are_summed_into_the_first_name(device):
    forward = [direct("in", "hidden1"), direct("in", "hidden2"),
               direct(["hidden1", "hidden2"], "out")]
    for op in forward:
        op.device_option = device
    result = caffe2_pass(forward, {"out": "out_grad"})
    expected = [
        grad_op("DirectGradient", ["out_grad"], ["hidden1_grad", "hidden2_grad"]),
        grad_op("DirectGradient", ["hidden2_grad"], ["in_grad"]),
        grad_op("DirectGradient", ["hidden1_grad"], ["_in_grad_autosplit_0"]),
        so.create_operator("Sum", ["in_grad", "_in_grad_autosplit_0"], ["in_grad"])]
    for op in expected:
        op.device_option = device
    assert result.ops == expected
    assert not result.ops[-1].is_gradient_op


def test_use_without_gradient_adds_nothing_to_sum():
    forward = [direct("in", "hidden1"), OD("Nogradient", ["in"], ["hidden2"]),
               direct(["hidden1", "hidden2"], "out")]
    assert caffe2_pass(forward, {"out": "out_grad"}).ops == [
        grad_op("DirectGradient", ["out_grad"], ["hidden1_grad", "hidden2_grad"]),
        grad_op("DirectGradient", ["hidden1_grad"], ["in_grad"])]


def test_each_version_of_a_reused_blob_is_summed_on_its_own():
    forward = [direct("in", "in"), direct("in", "hidden1"), direct("in", "hidden2"),
               direct(["hidden1", "hidden2"], "out")]
    assert caffe2_pass(forward, {"out": "out_grad"}).ops == [
        grad_op("DirectGradient", ["out_grad"], ["hidden1_grad", "hidden2_grad"]),
        grad_op("DirectGradient", ["hidden2_grad"], ["in_grad"]),
        grad_op("DirectGradient", ["hidden1_grad"], ["_in_grad_autosplit_0"]),
        so.create_operator("Sum", ["in_grad", "_in_grad_autosplit_0"], ["in_grad"]),
        grad_op("DirectGradient", ["in_grad"], ["in_grad"])]


def test_autosplit_counter_restarts_for_each_sum():
    forward = [direct("in", "in"), direct("in", "hidden1"), direct("in", "hidden2"),
               direct(["hidden1", "hidden2"], "in"), direct("in", "hidden3"),
               direct("in", "hidden4"), direct("in", "hidden5"),
               direct(["hidden3", "hidden4", "hidden5"], "out")]
    assert caffe2_pass(forward, {"out": "out_grad"}).ops == [
        grad_op("DirectGradient", ["out_grad"], ["hidden3_grad", "hidden4_grad",
                                                 "hidden5_grad"]),
        grad_op("DirectGradient", ["hidden5_grad"], ["in_grad"]),
        grad_op("DirectGradient", ["hidden4_grad"], ["_in_grad_autosplit_0"]),
        grad_op("DirectGradient", ["hidden3_grad"], ["_in_grad_autosplit_1"]),
        so.create_operator("Sum", ["in_grad", "_in_grad_autosplit_0", "_in_grad_autosplit_1"],
                           ["in_grad"]),
        grad_op("DirectGradient", ["in_grad"], ["hidden1_grad", "hidden2_grad"]),
        grad_op("DirectGradient", ["hidden2_grad"], ["in_grad"]),
        grad_op("DirectGradient", ["hidden1_grad"], ["_in_grad_autosplit_0"]),
        so.create_operator("Sum", ["in_grad", "_in_grad_autosplit_0"], ["in_grad"]),
        grad_op("DirectGradient", ["in_grad"], ["in_grad"])]


def test_sum_in_the_forward_net_passes_its_gradient_through():
    forward = [direct(["in", "w", "b"], "fc"), so.create_operator("Sum", ["fc"], ["agg"]),
               direct("agg", "loss")]
    result = caffe2_pass(forward, {"loss": "loss_grad"})
    assert result.ops == [grad_op("DirectGradient", ["loss_grad"], ["agg_grad"]),
                          grad_op("DirectGradient", ["agg_grad"],
                                  ["in_grad", "w_grad", "b_grad"])]
    assert result.grad_map["fc"] == "agg_grad"


def test_op_without_outputs_on_the_path_gets_no_gradient_and_marked_ops_are_caffe2s():
    # Caffe2's FC, Print, AveragedLoss case: two gradient ops, both marked, nothing else.
    # (Their exact input and output order belongs to the FC and AveragedLoss makers.)
    forward = [so.create_operator("FC", ["in", "w", "b"], ["fc"]), OD("Print", ["fc"], []),
               so.create_operator("AveragedLoss", ["fc"], ["loss"])]
    result = backward_ops(forward, {"loss": "loss_grad"}, mark_gradient_ops=True,
                          copy_arguments=True)
    loss_grad, fc_grad = result.ops
    assert loss_grad.outputs == ["fc_grad"] and set(loss_grad.inputs) == {"fc", "loss_grad"}
    assert set(fc_grad.inputs) == {"in", "w", "fc_grad"}
    assert set(fc_grad.outputs) == {"in_grad", "w_grad", "b_grad"}
    for op in result.ops:
        assert op.is_gradient_op and op.name == "" and op.device_option is None
        assert op.engine == ""


def test_explicit_sum_before_a_loss_has_exact_gradients():
    net = so.Net("fc_sum_loss")
    net.FC(["in", "w", "b"], ["fc"])
    net.Sum(["fc"], ["agg"])
    net.AveragedLoss(["agg"], ["loss"])
    so.testing.gradient_check(net, {"in": rand(3, 4, seed=1), "w": rand(2, 4, seed=2),
                                    "b": rand(2, seed=3)}, loss="loss")


def test_op_without_outputs_still_counts_as_a_use_for_the_sum():
    net = so.Net("no_gradient_branch")
    net.Relu(["x1"], ["x2"])
    net.netdef.ops.append(OD("Print", ["x2"], []))     # a use that gives no gradient
    net.Softmax(["x2"], ["x3"])
    net.Mul(["x2", "x3"], ["x4"])
    so.add_gradient_ops(net, ["x4"])
    assert net.ops[-2] == so.create_operator("Sum", ["x2_grad", "_x2_grad_autosplit_0"],
                                             ["x2_grad"])


def test_normal_accumulation_sums_after_the_first_use_gradient():
    net = so.Net("normal_accumulation")
    net.Relu(["x1"], ["x2"])
    net.Softmax(["x2"], ["x3"])
    net.Mul(["x2", "x3"], ["x4"])
    so.add_gradient_ops(net, ["x4"])
    assert net.ops[-2] == so.create_operator("Sum", ["x2_grad", "_x2_grad_autosplit_0"],
                                             ["x2_grad"])
    relu_grad = net.ops[-1]
    assert relu_grad.type == "ReluGradient" and relu_grad.outputs == ["x1_grad"]
    assert "x2_grad" in relu_grad.inputs


# -- StopGradient ---------------------------------------------------------------------------


def test_stop_gradient_cuts_the_path_to_its_input():
    forward = [direct("in", "hidden"), OD("StopGradient", ["hidden"], ["hidden2"]),
               direct("hidden2", "out")]
    result = caffe2_pass(forward, {"out": "out_grad"})
    assert result.ops == [grad_op("DirectGradient", ["out_grad"], ["hidden2_grad"])]


def test_orphan_stop_gradient_is_a_value_error_before_any_maker_runs():
    called = []

    def recording(op, g_output):
        called.append(op.type)
        return direct_gradient(op, g_output)

    forward = [direct("in", "hidden"), OD("StopGradient", ["hidden"], ["auto_blobx"]),
               direct("hidden", "out")]
    with pytest.raises(ValueError, match="auto_blobx' is orphan") as info:
        backward_ops(forward, {"out": "out_grad"}, makers={"Direct": recording})
    assert isinstance(info.value, so.GradientError) and called == []


def test_in_place_stop_gradient_removes_its_blob_from_the_map():
    forward = [direct("in", "hidden"), OD("StopGradient", ["hidden"], ["hidden"]),
               direct("hidden", "out")]
    result = caffe2_pass(forward, {"out": "out_grad"})
    assert result.ops == [grad_op("DirectGradient", ["out_grad"], ["hidden_grad"])]
    assert result.grad_map == {"out": "out_grad"}


def test_stop_gradient_beside_another_use():
    forward = [direct("in", "hidden"), direct("hidden", "hidden2"),
               OD("StopGradient", ["hidden"], ["hidden3"]), direct(["hidden2", "hidden3"], "out")]
    result = caffe2_pass(forward, {"out": "out_grad"})
    assert result.ops == [
        grad_op("DirectGradient", ["out_grad"], ["hidden2_grad", "hidden3_grad"]),
        grad_op("DirectGradient", ["hidden2_grad"], ["hidden_grad"]),
        grad_op("DirectGradient", ["hidden_grad"], ["in_grad"])]
    assert result.grad_map == {"out": "out_grad", "hidden2": "hidden2_grad",
                               "hidden3": "hidden3_grad", "hidden": "hidden_grad",
                               "in": "in_grad"}


def test_in_place_stop_gradient_in_a_native_net():
    net = so.Net("stop_in_place")
    net.Relu(["in"], ["hidden"])
    net.StopGradient(["hidden"], ["hidden"])
    net.Relu(["hidden"], ["out"])
    grads = so.add_gradient_ops(net, {"out": "out_grad"})
    assert grads == {"out": "out_grad"}
    assert [op.type for op in net.ops[3:]] == ["ReluGradient"]


@pytest.mark.parametrize("outputs", [["y"], ["x"]], ids=["copy", "in_place"])
def test_stop_gradient_forward_passes_its_input_on(outputs):
    ws = so.Workspace()
    x = rand(2, 3)
    ws.feed_blob("x", x.copy())
    ws.run_operator_once(so.create_operator("StopGradient", ["x"], outputs))
    np.testing.assert_array_equal(ws[outputs[0]], x)
    if outputs == ["y"]:
        assert ws["y"] is not ws["x"]


def test_stop_gradient_makes_its_input_a_constant_for_the_gradient():
    net = so.Net("x_times_constant_x")
    net.StopGradient(["x"], ["x_const"])
    net.Mul(["x", "x_const"], ["y"])
    net.SumElements(["y"], ["loss"])
    grads = so.add_gradient_ops(net, ["loss"])
    ws = so.Workspace()
    x = rand(4, seed=3)
    ws.feed_blob("x", x)
    ws.run_net_once(net)
    np.testing.assert_allclose(ws[grads["x"]], x)     # d(x * c)/dx with c = x held fixed
    assert "x_const" in grads


def test_stop_gradient_refuses_in_place_on_any_other_pair():
    with pytest.raises(so.OperatorError, match="StopGradient takes 1 input"):
        so.Workspace().run_operator_once(so.create_operator("StopGradient", ["a", "b"], ["a"]))


# -- pass-through gradients: Add, Sub, Sum ----------------------------------------------------


def caffe2_net(build, ys):
    net = so.Net("pass_through")
    build(net)
    grads = so.add_gradient_ops(net, ys, broadcast="caffe2")
    return net, grads


def test_add_in_the_middle_passes_its_gradient_to_both_inputs():
    def build(net):
        net.Relu(["x1"], ["x2"])
        net.Softmax(["x2"], ["x3"])
        net.Add(["x2", "x3"], ["x4"])

    net, grads = caffe2_net(build, {"x4": "x4_grad"})
    assert net.ops[-2] == so.create_operator("Sum", ["x2_grad", "x4_grad"], ["x2_grad"])
    assert grads["x1"] == "x1_grad" and grads["x3"] == "x4_grad"
    assert not [op for op in net.ops[3:] if op.type.startswith("Add")]


def test_sub_in_the_middle_negates_only_its_second_input():
    def build(net):
        net.Relu(["x1"], ["x2"])
        net.Softmax(["x2"], ["x3"])
        net.Sub(["x2", "x3"], ["x4"])

    net, grads = caffe2_net(build, {"x4": "x4_grad"})
    assert net.ops[-2] == so.create_operator("Sum", ["x2_grad", "x4_grad"], ["x2_grad"])
    assert net.ops[3] == so.create_operator("Negative", ["x4_grad"], ["x3_grad"],
                                            device_option=None)
    assert grads["x1"] == "x1_grad"


def test_adds_at_the_leaves_sum_two_pass_through_gradients():
    def build(net):
        net.Add(["x1", "x2"], ["x4"])
        net.Add(["x2", "x3"], ["x5"])
        net.Mul(["x4", "x5"], ["x6"])

    net, grads = caffe2_net(build, {"x6": "x6_grad"})
    assert net.ops[-1] == so.create_operator("Sum", ["x5_grad", "x4_grad"], ["x2_grad"])
    assert (grads["x1"], grads["x2"], grads["x3"]) == ("x4_grad", "x2_grad", "x5_grad")


def test_subs_at_the_leaves_move_the_sum_output_to_input_zero():
    def build(net):
        net.Sub(["x1", "x2"], ["x4"])
        net.Sub(["x2", "x3"], ["x5"])
        net.Mul(["x4", "x5"], ["x6"])

    net, grads = caffe2_net(build, {"x6": "x6_grad"})
    assert net.ops[-1] == so.create_operator("Sum", ["x2_grad", "x5_grad"], ["x2_grad"])
    assert (grads["x1"], grads["x2"], grads["x3"]) == ("x4_grad", "x2_grad", "x3_grad")


def test_layers_of_adds_need_only_the_sum():
    def build(net):
        net.Add(["x1", "x2"], ["x4"])
        net.Add(["x2", "x3"], ["x5"])
        net.Add(["x4", "x5"], ["x6"])

    net, grads = caffe2_net(build, {"x6": "x6_grad"})
    assert net.ops[3:] == [so.create_operator("Sum", ["x6_grad", "x6_grad"], ["x2_grad"])]
    assert (grads["x1"], grads["x2"], grads["x3"]) == ("x6_grad", "x2_grad", "x6_grad")


def test_layers_of_subs():
    def build(net):
        net.Sub(["x1", "x2"], ["x4"])
        net.Sub(["x2", "x3"], ["x5"])
        net.Sub(["x4", "x5"], ["x6"])

    net, grads = caffe2_net(build, {"x6": "x6_grad"})
    assert net.ops[-1] == so.create_operator("Sum", ["x2_grad", "x5_grad"], ["x2_grad"])
    assert (grads["x1"], grads["x2"], grads["x3"]) == ("x6_grad", "x2_grad", "x3_grad")


def test_add_of_a_blob_and_its_constant_fill_needs_no_sum():
    net = so.Net("dynamic_constant")
    net.Relu(["x1"], ["x2"])
    net.ConstantFill(["x2"], ["x3"])
    net.Add(["x2", "x3"], ["x4"])
    net.SumElements(["x4"], ["loss"])
    grads = so.add_gradient_ops(net, ["loss"], broadcast="caffe2")
    assert not any(op.type == "Sum" for op in net.ops)
    assert grads["x1"] == "x1_grad" and "x4" in grads


@pytest.mark.parametrize("broadcast", ["numpy", "caffe2"])
def test_pass_through_gradients_have_the_right_values(broadcast):
    net = so.Net("leaf_values")
    net.Sub(["x1", "x2"], ["x4"])
    net.Add(["x2", "x3"], ["x5"])
    net.Mul(["x4", "x5"], ["x6"])
    net.SumElements(["x6"], ["loss"])
    grads = so.add_gradient_ops(net, ["loss"], broadcast=broadcast)
    x1, x2, x3 = rand(3, seed=1), rand(3, seed=2), rand(3, seed=3)
    ws = so.Workspace()
    for name, value in {"x1": x1, "x2": x2, "x3": x3}.items():
        ws.feed_blob(name, value)
    ws.run_net_once(net)
    # loss = sum((x1 - x2) * (x2 + x3))
    np.testing.assert_allclose(ws[grads["x1"]], x2 + x3)
    np.testing.assert_allclose(ws[grads["x2"]], (x1 - x2) - (x2 + x3))
    np.testing.assert_allclose(ws[grads["x3"]], x1 - x2)


def test_numpy_broadcasting_add_reduces_each_gradient_to_its_input_shape():
    net = so.Net("bias")
    net.Add(["h", "b"], ["y"])
    net.SumElements(["y"], ["loss"])
    grads = so.add_gradient_ops(net, ["loss"])
    ws = so.Workspace()
    ws.feed_blob("h", rand(4, 3))
    ws.feed_blob("b", rand(3))
    ws.run_net_once(net)
    np.testing.assert_allclose(ws[grads["b"]], np.full(3, 4.0))
    np.testing.assert_allclose(ws[grads["h"]], np.ones((4, 3)))


def test_sum_gives_every_input_its_output_gradient_without_an_op():
    net = so.Net("sum_pass_through")
    net.Sum(["a", "b", "a"], ["s"])
    grads = so.add_gradient_ops(net, {"s": "s_grad"})
    assert grads["b"] == "s_grad"
    # a is read twice: the two pass-through gradients are summed.
    assert net.ops[1:] == [so.create_operator("Sum", ["s_grad", "s_grad"], ["a_grad"])]
    ws = so.Workspace()
    for name in ("a", "b"):
        ws.feed_blob(name, rand(2))
    ws.feed_blob("s_grad", np.array([1.0, -2.0]))
    ws.run_net_once(net)
    np.testing.assert_allclose(ws[grads["a"]], [2.0, -4.0])


def test_two_seeds_where_one_loss_also_feeds_the_other():
    net = so.Net("test_two_grads")
    net.Mul(["input", "two"], ["mul_1"])
    net.Mul(["mul_1", "three"], ["mul_2"])
    grads = so.add_gradient_ops(net, ["mul_2", "mul_1"], seed_namer=caffe2_seed_name)
    assert grads["mul_1"] == "mul_1_autogen_grad"
    sums = [op for op in net.ops if op.type == "Sum"]
    assert sums == [so.create_operator("Sum", ["mul_1_autogen_grad",
                                               "_mul_1_grad_autosplit_0"],
                                       ["mul_1_autogen_grad"])]
    ws = so.Workspace()
    for name, value in {"input": 1.0, "two": 2.0, "three": 3.0}.items():
        ws.feed_blob(name, np.array([value], np.float32))
    ws.run_net_once(net)
    assert ws[grads["input"]] == 8.0


@pytest.mark.parametrize("broadcast", ["numpy", "caffe2"])
def test_accumulation_runs(broadcast):
    net = so.Net("accumulation_runs")
    net.Mul(["input", "two"], ["mul_1"])
    net.Mul(["input", "three"], ["mul_2"])
    sub = net.Sub(["mul_1", "one"], 1)
    grads = so.add_gradient_ops(net, ["mul_2", sub], broadcast=broadcast)
    ws = so.Workspace()
    for name, value in {"input": 1.0, "one": 1.0, "two": 2.0, "three": 3.0}.items():
        ws.feed_blob(name, np.array([value], np.float32))
    ws.run_net_once(net)
    assert ws[grads["input"]] == 5.0


def test_op_breaking_its_schema_is_refused_before_the_net_changes():
    net = so.Net("incorrect_operator")
    net.Mul(["a"], ["b"])                       # Mul takes two inputs
    net.Sub(["b", "one"], ["c"])
    before = [op.copy() for op in net.ops]
    with pytest.raises(so.OperatorError, match="schema") as info:
        so.add_gradient_ops(net, ["c"])
    assert "Mul op #0" in str(info.value) and "takes 2 input(s), got 1" in str(info.value)
    assert isinstance(info.value, so.GradientError)
    assert net.ops == before


def test_op_breaking_its_in_place_rule_is_refused():
    net = so.Net("in_place_stop")
    net.add_op("StopGradient", ["a"], ["a"])
    net.netdef.ops[0].outputs = ["a", "b"]       # one output more than the schema allows
    net.Sum(["a", "b"], ["c"])
    with pytest.raises(so.GradientError, match="schema check: StopGradient takes 1 output"):
        so.add_gradient_ops(net, ["c"])


def test_op_off_the_gradient_path_is_not_checked():
    net = so.Net("off_path")
    net.Mul(["a"], ["unused"])                  # broken, but nothing needs its gradient
    net.Sum(["a"], ["loss"])
    assert so.add_gradient_ops(net, ["loss"]) == {"loss": "loss_grad", "a": "loss_grad"}


# -- where scopeops' graph differs from Caffe2's, to stay exact ---------------------------


@register("TestOnlyGraph_Square", inputs=1, outputs=1, doc="Y = X * X.")
class _Square(Operator):
    def run(self):
        x = self.input(0)
        np.multiply(x, x, out=self.output(0, x.shape, x.dtype))


@gradient("TestOnlyGraph_Square")
def _square_gradient_scaling_its_output_gradient(g):
    # Caffe2's Sqr maker: it scales the output gradient in place, then multiplies.
    return [g.make("Scale", [g.GO(0)], [g.GO(0)], scale=2.0),
            g.make("Mul", [g.GO(0), g.I(0)], [g.GI(0)])]


def test_maker_scaling_a_shared_output_gradient_writes_a_copy():
    net = so.Net("square_plus_b")
    net.TestOnlyGraph_Square(["a"], ["sq"])
    net.Add(["sq", "b"], ["c"])
    net.SumElements(["c"], ["loss"])
    grads = so.add_gradient_ops(net, ["loss"], broadcast="caffe2")
    assert grads["b"] == grads["sq"] == "c_grad"
    scale = next(op for op in net.ops if op.type == "Scale")
    assert scale.inputs == ["c_grad"] and scale.outputs != ["c_grad"]
    a, b = rand(3, seed=1), rand(3, seed=2)
    ws = so.Workspace()
    ws.feed_blob("a", a)
    ws.feed_blob("b", b)
    ws.run_net_once(net)
    np.testing.assert_allclose(ws[grads["b"]], np.ones(3))
    np.testing.assert_allclose(ws[grads["a"]], 2 * a)


@register("TestOnlyGraph_Cube", inputs=1, outputs=1, doc="Y = X ** 3.")
class _Cube(Operator):
    def run(self):
        x = self.input(0)
        np.power(x, 3, out=self.output(0, x.shape, x.dtype))


@gradient("TestOnlyGraph_Cube")
def _cube_gradient_in_three_steps(g):
    # As Caffe2's Pow maker: the input gradient is written three times.
    dx = g.GI(0)
    return [g.make("Mul", [g.I(0), g.I(0)], [dx]),
            g.make("Mul", [dx, g.GO(0)], [dx]),
            g.make("Scale", [dx], [dx], scale=3.0)]


def test_only_the_last_write_of_a_multi_op_gradient_is_summed():
    net = so.Net("cube_twice")
    net.TestOnlyGraph_Cube(["x"], ["c1"])
    net.TestOnlyGraph_Cube(["x"], ["c2"])
    net.Sum(["c1", "c2"], ["s"])
    net.SumElements(["s"], ["loss"])
    grads = so.add_gradient_ops(net, ["loss"])
    assert [op for op in net.ops if op.type == "Sum"][-1].inputs == ["x_grad",
                                                                     "_x_grad_autosplit_0"]
    x = rand(3, seed=4)
    ws = so.Workspace()
    ws.feed_blob("x", x)
    ws.run_net_once(net)
    np.testing.assert_allclose(ws[grads["x"]], 6 * x * x)


@register("TestOnlyGraph_CubeNoMaker", inputs=1, outputs=1,
          doc="Y = X ** 3, registered without a gradient maker.")
class _CubeNoMaker(_Cube):
    pass


def _cube_gradient_function(op, g_output):
    # The same three steps in Caffe2's protocol: every step writes x_grad.
    x, dx = op.inputs[0], op.inputs[0] + "_grad"
    return ([OD("Mul", [x, x], [dx]), OD("Mul", [dx, g_output[0]], [dx]),
             OD("Scale", [dx], [dx], args={"scale": 3.0})], [dx])


def test_summed_gradient_function_output_is_renamed_from_its_first_write():
    net = so.Net("cube_twice_by_function")
    net.TestOnlyGraph_CubeNoMaker(["x"], ["c1"])
    net.TestOnlyGraph_CubeNoMaker(["x"], ["c2"])
    net.Sum(["c1", "c2"], ["s"])
    net.SumElements(["s"], ["loss"])
    grads = so.add_gradient_ops(net, ["loss"],
                                makers={"TestOnlyGraph_CubeNoMaker": _cube_gradient_function})
    renamed = net.ops[-4:-1]
    assert [op.outputs for op in renamed] == [["_x_grad_autosplit_0"]] * 3
    x = rand(3, seed=4)
    ws = so.Workspace()
    ws.feed_blob("x", x)
    ws.run_net_once(net)
    np.testing.assert_allclose(ws[grads["x"]], 6 * x * x)


def test_given_gradient_of_a_blob_that_is_also_read_is_summed_with_the_reader_gradient():
    net = so.Net("given_and_read")
    net.Mul(["x", "w"], ["h"])
    net.Mul(["h", "v"], ["y"])
    grads = so.add_gradient_ops(net, {"y": None, "h": "h_given"})
    x, w, v, h_given = rand(3, seed=1), rand(3, seed=2), rand(3, seed=3), rand(3, seed=4)
    ws = so.Workspace()
    for name, value in {"x": x, "w": w, "v": v, "h_given": h_given}.items():
        ws.feed_blob(name, value)
    ws.run_net_once(net)
    np.testing.assert_allclose(ws[grads["h"]], v + h_given)
    np.testing.assert_allclose(ws[grads["x"]], (v + h_given) * w)
    np.testing.assert_array_equal(ws["h_given"], h_given)


def test_gradient_name_held_by_a_pass_through_is_not_overwritten():
    # c's gradient is x_grad (x = Sum(c) passes it through); the gradient of the
    # earlier x must then go elsewhere, or it would overwrite c's.
    net = so.Net("shared_name")
    net.Mul(["x", "w"], ["p"])
    net.Sum(["c"], ["x"])
    net.Mul(["x", "w2"], ["q"])
    net.Sum(["p", "q"], ["s"])
    net.SumElements(["s"], ["loss"])
    grads = so.add_gradient_ops(net, ["loss"])
    assert grads["c"] == "x_grad" and grads["x"] != "x_grad"
    values = {"x": rand(3, seed=1), "w": rand(3, seed=2), "c": rand(3, seed=3),
              "w2": rand(3, seed=4)}
    ws = so.Workspace()
    for name, value in values.items():
        ws.feed_blob(name, value)
    ws.run_net_once(net)
    np.testing.assert_allclose(ws[grads["c"]], values["w2"])
    np.testing.assert_allclose(ws[grads["x"]], values["w"])


def test_dead_write_overwritten_later_gets_no_gradient_in_native_makers():
    net = so.Net("dead_write")
    net.Copy(["a"], ["y"])                      # this y is overwritten before anyone reads it
    net.Mul(["a", "a"], ["y"])
    net.SumElements(["y"], ["loss"])
    grads = so.add_gradient_ops(net, ["loss"])
    ws = so.Workspace()
    a = rand(3, seed=5)
    ws.feed_blob("a", a)
    ws.run_net_once(net)
    np.testing.assert_allclose(ws[grads["a"]], 2 * a)


@pytest.mark.parametrize("build", [
    lambda net: net.Sqr(["x"], ["x"]),
    lambda net: net.Pow(["x"], ["x"], exponent=3.0),
    lambda net: net.Log(["x"], ["x"]),
    lambda net: (net.Sqr(["x"], ["y"]), net.Add(["y", "x"], ["y"])),
], ids=["sqr", "pow", "log", "sqr_then_add"])
def test_in_place_ops_reading_their_overwritten_input_get_exact_gradients(build):
    net = so.Net("in_place_hazards")
    build(net)
    so.testing.gradient_check(net, {"x": rand(3, 2, low=0.5, high=2.0)})


def test_in_place_single_output_gradient_writes_over_the_output_gradient():
    net = so.Net("relu_in_place")
    net.Relu(["x"], ["x"])
    net.SumElements(["x"], ["loss"])
    grads = so.add_gradient_ops(net, ["loss"])
    relu_grad = net.ops[-1]
    assert relu_grad.type == "ReluGradient" and relu_grad.outputs == ["x_grad"]
    assert "x_grad" in relu_grad.inputs and grads["x"] == "x_grad"


# -- the hooks ------------------------------------------------------------------------------


def test_makers_can_be_a_lookup_function():
    result = backward_ops([direct("in", "out")], {"out": "g"},
                          makers=lambda op_type: TEST_MAKERS.get(op_type))
    assert result.ops == [grad_op("DirectGradient", ["g"], ["in_grad"])]


def test_unregistered_type_without_a_gradient_function_is_refused():
    with pytest.raises(so.GradientError, match="no gradient function was given for it"):
        backward_ops([direct("in", "out")], {"out": "g"})


@register("TestOnlyGraph_NoMaker", inputs=1, outputs=1, doc="Y = X, registered without a "
          "gradient maker.")
class _NoMaker(Operator):
    def run(self):
        self.output_blob(0).set(self.input(0))


def test_gradient_function_gives_a_registered_type_without_maker_its_gradient():
    forward = [so.create_operator("TestOnlyGraph_NoMaker", ["x"], ["y"])]
    with pytest.raises(so.GradientError, match="No gradient is registered"):
        backward_ops(forward, {"y": "y_grad"})
    copy_back = {"TestOnlyGraph_NoMaker": lambda op, g: (
        OD("Copy", [g[0]], ["x_grad"]), ["x_grad"])}
    result = backward_ops(forward, {"y": "y_grad"}, makers=copy_back)
    assert result.ops == [OD("Copy", ["y_grad"], ["x_grad"])]


def test_native_maker_takes_precedence_over_a_gradient_function():
    forward = [so.create_operator("Sum", ["a"], ["s"])]
    ignored = {"Sum": lambda op, g: (OD("Copy", [g[0]], ["a_grad"]), ["a_grad"])}
    result = backward_ops(forward, {"s": "s_grad"}, makers=ignored)
    assert result.ops == [] and result.grad_map["a"] == "s_grad"


def test_gradient_function_may_pass_a_gradient_through():
    forward = [OD("Identity", ["x"], ["y"]), OD("Identity", ["y"], ["z"])]
    result = backward_ops(forward, {"z": "z_grad"},
                          makers={"Identity": lambda op, g: (None, [g[0]])})
    assert result.ops == [] and result.grad_map == {"z": "z_grad", "y": "z_grad",
                                                    "x": "z_grad"}


@pytest.mark.parametrize("bad", [
    lambda op, g: [OD("Copy", [g[0]], ["x_grad"])],
    lambda op, g: ([], []),
    lambda op, g: ([], [3]),
    lambda op, g: ("Copy", ["x_grad"]),
], ids=["not_a_pair", "too_few_gradients", "not_a_name", "not_an_op"])
def test_gradient_function_returning_the_wrong_shape_is_refused(bad):
    with pytest.raises(so.GradientError, match="gradient function of Odd"):
        backward_ops([OD("Odd", ["x"], ["y"])], {"y": "y_grad"}, makers={"Odd": bad})


def test_gradient_function_sees_a_copy_of_the_forward_op_and_the_output_gradients():
    seen = []

    def record(op, g_output):
        seen.append((op, list(g_output)))
        op.inputs.append("mutated")
        return [], [None]

    forward = [OD("Two", ["x"], ["y", "z"])]
    backward_ops(forward, {"z": "z_grad"}, makers={"Two": record})
    assert seen[0][1] == [None, "z_grad"] and forward[0].inputs == ["x"]


def test_seed_names():
    net = so.Net("seeds")
    net.SumElements(["x"], ["loss"])
    native = backward_ops(net.ops, ["loss"])
    assert native.ops[0].outputs == ["loss_grad"] == [grad_name("loss")]
    caffe2 = backward_ops(net.ops, ["loss"], seed_namer=caffe2_seed_name)
    assert caffe2.ops[0] == so.create_operator("ConstantFill", ["loss"],
                                               ["loss_autogen_grad"], value=1.0)
    assert caffe2.grad_map["loss"] == "loss_autogen_grad"


@pytest.mark.parametrize("ys", ["loss", {"loss"}, 3, [""], {"loss": 3}],
                         ids=["str", "set", "int", "empty_name", "bad_gradient"])
def test_ys_must_be_a_list_or_a_dict_of_names(ys):
    with pytest.raises(TypeError):
        backward_ops([so.create_operator("SumElements", ["x"], ["loss"])], ys)


def test_dict_ys_mixes_given_and_filled_gradients():
    forward = [direct("in", "a"), direct("in", "b")]
    result = caffe2_pass(forward, {"a": "a_given", "b": None})
    assert result.ops[0] == so.create_operator("ConstantFill", ["b"], ["b_autogen_grad"],
                                               value=1.0)
    assert result.grad_map["a"] == "a_given" and result.grad_map["b"] == "b_autogen_grad"


@register("TestOnlyGraph_Scaled", inputs=1, outputs=1,
          args={"factor": so.ops.Arg(float, 1.0)}, doc="Y = factor * X.")
class _Scaled(Operator):
    def run(self):
        x = self.input(0)
        np.multiply(x, self.args["factor"], out=self.output(0, x.shape, x.dtype))


@gradient("TestOnlyGraph_Scaled")
def _scaled_gradient(g):
    return [g.make("Scale", [g.GO(0)], [g.GI(0)], scale=g.op.args.get("factor", 1.0))]


def test_gradient_ops_are_plain_unless_caffe2_marking_is_asked_for():
    forward = [so.create_operator("TestOnlyGraph_Scaled", ["x"], ["y"], factor=2.0)]
    plain = backward_ops(forward, ["y"]).ops[1]
    assert not plain.is_gradient_op and plain.args == {"scale": 2.0}
    marked = backward_ops(forward, ["y"], mark_gradient_ops=True, copy_arguments=True).ops
    assert not marked[0].is_gradient_op                       # the seed fill
    # Scale declares no `factor`: copying it would make an op that cannot be built.
    assert marked[1].is_gradient_op and marked[1].args == {"scale": 2.0}


@register("TestOnlyGraph_Labelled", inputs=1, outputs=1,
          args={"label": so.ops.Arg(str, ""), "factor": so.ops.Arg(float, 1.0)},
          doc="Y = X; the label is carried over to the gradient op.")
class _Labelled(Operator):
    def run(self):
        x = self.input(0)
        np.copyto(self.output(0, x.shape, x.dtype), x)


@register("TestOnlyGraph_LabelledGradient", inputs=1, outputs=1,
          args={"label": so.ops.Arg(str, "")}, doc="dX = dY.")
class _LabelledGradient(_Labelled):
    pass


@gradient("TestOnlyGraph_Labelled")
def _labelled_gradient(g):
    return [g.make("TestOnlyGraph_LabelledGradient", [g.GO(0)], [g.GI(0)])]


def test_copied_forward_arguments_are_those_the_gradient_op_declares():
    net = so.Net("labelled")
    net.TestOnlyGraph_Labelled(["x"], ["y"], label="tag", factor=3.0)
    result = backward_ops(net.ops, ["y"], mark_gradient_ops=True, copy_arguments=True)
    assert result.ops[1].args == {"label": "tag"}
    net.ops[:] = result.forward + result.ops
    ws = so.Workspace()
    ws["x"] = np.array([1.0, 2.0])
    ws.run_net_once(net)                                      # every gradient op builds
    assert ws["x_grad"].tolist() == [1.0, 1.0]


def test_sources_name_the_forward_op_of_each_gradient_op():
    forward = [direct("in", "h1"), direct("in", "h2"), direct(["h1", "h2"], "out")]
    result = caffe2_pass(forward, ["out"])
    assert [op.type for op in result.ops] == [
        "ConstantFill", "DirectGradient", "DirectGradient", "DirectGradient", "Sum"]
    assert result.sources == [None, 2, 1, 0, None]


def test_makers_that_set_their_own_arguments_get_no_forward_arguments():
    assert {"Sub", "Mul", "Pow", "MatMul", "Cast"} <= NO_ARGUMENT_COPY
    net = so.Net("cast_marked")
    net.Cast(["x"], ["y"], to="float32", from_type="float64")
    cast_back = backward_ops(net.ops, {"y": "y_grad"}, mark_gradient_ops=True,
                             copy_arguments=True).ops[0]
    assert cast_back.is_gradient_op and cast_back.args["to"] == "float64"
    assert cast_back.args.get("from_type") != "float64"     # not copied from the forward op
    net = so.Net("sub_marked")
    net.Sub(["a", "b"], ["c"])
    assert backward_ops(net.ops, {"c": "c_grad"}, mark_gradient_ops=True, copy_arguments=True,
                        broadcast="caffe2").ops == [
        so.create_operator("Negative", ["c_grad"], ["b_grad"], device_option=None,
                           is_gradient_op=True)]


def test_gradient_functions_ops_are_used_as_returned():
    result = caffe2_pass([direct("in", "out")], {"out": "out_grad"}, mark_gradient_ops=True,
                         copy_arguments=True)
    assert not result.ops[0].is_gradient_op


def test_native_gradient_ops_run_on_the_forward_device_and_engine():
    op = so.create_operator("Relu", ["x"], ["y"], device_option=so.DeviceOption("gpu", 2),
                            engine="CUDNN")
    with so.DeviceScope(so.DeviceOption("cpu", 0, node_name="elsewhere")):
        result = backward_ops([op], ["y"])
    fill, relu_grad = result.ops
    assert fill.device_option == so.DeviceOption("cpu", 0, node_name="elsewhere")
    assert relu_grad.device_option == so.DeviceOption("gpu", 2)
    assert relu_grad.engine == "CUDNN"


def test_sum_runs_on_the_device_of_the_first_summed_gradient_op_that_has_one():
    gpu = so.DeviceOption("gpu", 1)
    forward = [direct("in", "h1"), direct("in", "h2"), direct(["h1", "h2"], "out")]
    forward[1].device_option = gpu
    forward[0].device_option = gpu
    assert caffe2_pass(forward, {"out": "g"}).ops[-1].device_option == gpu


def test_sum_of_gradient_ops_on_different_devices_is_refused():
    forward = [direct("in", "h1"), direct("in", "h2"), direct(["h1", "h2"], "out")]
    forward[0].device_option = so.DeviceOption("gpu", 1)
    forward[1].device_option = so.DeviceOption("gpu", 2)
    with pytest.raises(so.GradientError, match="not all grad ops have the same device"):
        caffe2_pass(forward, {"out": "g"})


def test_control_op_gradients_are_not_marked():
    body = so.Net("body")
    body.Mul(["a", "a"], ["b"])
    net = so.Net("with_do")
    net.CreateScope([], ["scope"])
    net.add_op("Do", ["x", "scope"], ["y", "scope"], net=body, inner_blobs=["a", "b"],
               outer_blobs_idx=[0, 1])
    net.SumElements(["y"], ["loss"])
    result = backward_ops(net.ops, ["loss"], mark_gradient_ops=True, copy_arguments=True)
    grad_do = next(op for op in result.ops if op.type == "Do")
    assert grad_do.is_gradient_op                   # set by the Do maker: it pops
    assert "inner_blobs" in grad_do.args and "outer_blobs_idx" in grad_do.args
    # Inside, the pass's options hold: maker ops are marked, the accumulating Sum is not.
    inner = grad_do.args["net"].ops
    assert [op.is_gradient_op for op in inner] == [op.type != "Sum" for op in inner]
    assert [op.type for op in inner].count("Sum") == 1


def test_gradient_functions_reach_ops_inside_a_do():
    body = [direct("a", "b")]
    net = so.Net("do_of_direct")
    net.CreateScope([], ["scope"])
    net.add_op("Do", ["x", "scope"], ["y", "scope"], net=so.NetDef("body", body),
               inner_blobs=["a", "b"], outer_blobs_idx=[0, 1])
    result = backward_ops(net.ops, {"y": "y_grad"}, makers=TEST_MAKERS)
    grad_do = next(op for op in result.ops if op.type == "Do")
    assert grad_do.args["net"].ops == [grad_op("DirectGradient", ["b_grad"], ["a_grad"])]
    assert result.grad_map["x"] == "x_grad"


def test_zero_gradient_maker_is_asked_although_it_has_no_outputs():
    def zero_fill(op, g_output):
        return OD("ConstantFill", [op.inputs[0]], [op.inputs[0] + "_grad"],
                  args={"value": 0.0}), [op.inputs[0] + "_grad"]

    forward = [direct("h", "out"), OD("ZeroGradient", ["cell"], [])]
    result = backward_ops(forward, {"out": "out_grad"},
                          makers=dict(TEST_MAKERS, ZeroGradient=zero_fill))
    assert result.ops[0] == OD("ConstantFill", ["cell"], ["cell_grad"], args={"value": 0.0})
    assert result.grad_map["cell"] == "cell_grad"


def numeric_gradient(net, feeds, loss, wrt, eps=1e-6):
    grad = np.zeros_like(feeds[wrt])
    for index in np.ndindex(grad.shape):
        values = []
        for step in (eps, -eps):
            ws = so.Workspace()
            for name, value in feeds.items():
                ws.feed_blob(name, value.copy())
            ws[wrt][index] += step
            ws.run_net_once(net)
            values.append(float(np.sum(ws[loss])))
        grad[index] = (values[0] - values[1]) / (2 * eps)
    return grad


def test_do_whose_body_only_passes_gradients_through_still_binds_them():
    body = so.Net("sum_body")
    body.Sum(["a", "v"], ["b"])
    net = so.Net("do_of_sum")
    net.CreateScope([], ["scope"])
    net.add_op("Do", ["x", "w", "scope"], ["y", "scope"], net=body,
               inner_blobs=["a", "v", "b"], outer_blobs_idx=[0, 1, 2])
    net.Mul(["y", "y"], ["y2"])
    net.SumElements(["y2"], ["loss"])
    grads = so.add_gradient_ops(net, ["loss"])
    x, w = rand(3, seed=1), rand(3, seed=2)
    ws = so.Workspace()
    ws.feed_blob("x", x)
    ws.feed_blob("w", w)
    ws.run_net_once(net)
    np.testing.assert_allclose(ws[grads["x"]], 2 * (x + w))
    np.testing.assert_allclose(ws[grads["w"]], 2 * (x + w))


def test_while_with_an_if_body_under_caffe2_broadcasting_has_exact_gradients():
    # The else branch, x = x + w, passes x's gradient to both x and w without an op.
    net = so.Net("while_if_caffe2")
    net.add_external_inputs("x", "w", "i", "n", "one", "limit")
    body = so.Net("while_if_body")
    body.add_external_inputs("x", "w", "i", "n", "one", "limit")
    body.LT(["x", "limit"], ["small"])
    grow = so.Net("grow")
    grow.Mul(["x", "w"], ["tmp"])
    grow.Copy(["tmp"], ["x"])
    step = so.Net("step")
    step.Add(["x", "w"], ["x"])
    so.control.add_if(body, "small", grow, step)
    body.Add(["i", "one"], ["i"])
    cond = so.Net("while_if_cond")
    cond.LT(["i", "n"], ["go"])
    so.control.add_while(net, "go", body, cond)
    net.SumElements(["x"], ["loss"])
    forward = net.netdef.copy()
    grads = so.add_gradient_ops(net, ["loss"], broadcast="caffe2")
    feeds = {"x": np.array([0.5]), "w": np.array([1.5]), "i": np.array([0.0]),
             "n": np.array([5.0]), "one": np.array([1.0]), "limit": np.array([2.0])}
    ws = so.Workspace()
    for name, value in feeds.items():
        ws.feed_blob(name, value.copy())
    ws.run_net_once(net)
    for name in ("x", "w"):
        np.testing.assert_allclose(ws[grads[name]], numeric_gradient(forward, feeds, "loss",
                                                                     name), rtol=1e-5)


def test_backward_ops_leaves_the_given_ops_unchanged():
    net = so.Net("untouched")
    net.Mul(["x", "w"], ["x"])
    net.Mul(["x", "w"], ["x"])
    net.SumElements(["x"], ["loss"])
    before = [op.copy() for op in net.ops]
    result = backward_ops(net.ops, ["loss"])
    assert net.ops == before
    assert len(result.forward) == len(before) + len(result.saves) and result.saves
