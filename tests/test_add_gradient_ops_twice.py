"""add_gradient_ops on a net that already has its backward pass (a notebook cell run
again) is refused before anything changes, and a gradient Do with nothing to pop names
the likely cause."""

import re

import numpy as np
import pytest

import scopeops as so


def do_model():
    """The getting-started model: a Do step on a stack, a loss; forward ops only."""
    step = so.Net("step")
    step.Mul(["a", "v"], ["prod"])
    step.Tanh(["prod"], ["out"])
    net = so.Net("model")
    net.Do(["x", "w", "scope"], ["y", "scope"], net=step,
           inner_blobs=["a", "v", "out"], outer_blobs_idx=[0, 1, 2])
    net.SumElements(["y"], ["loss"])
    return net


def feeds():
    ws = so.Workspace()
    ws["x"] = np.array([0.5, -1.0, 2.0])
    ws["w"] = np.array([1.5, 2.0, -0.5])
    ws.create_blob("y")
    ws.create_blob("scope")                  # the first Do puts a stack in it
    return ws


def test_add_gradient_ops_twice_on_a_do_net_raises_gradient_error():
    net = do_model()
    so.add_gradient_ops(net, ["loss"])
    with pytest.raises(so.GradientError, match="already has a backward pass"):
        so.add_gradient_ops(net, ["loss"])


def test_add_gradient_ops_twice_leaves_the_net_unchanged():
    net = do_model()
    so.add_gradient_ops(net, ["loss"])
    before = net.netdef.copy()
    with pytest.raises(so.GradientError):
        so.add_gradient_ops(net, ["loss"])
    assert net.netdef == before


def test_add_gradient_ops_twice_names_what_would_be_written_again_and_the_way_out():
    net = do_model()
    so.add_gradient_ops(net, ["loss"])
    with pytest.raises(so.GradientError) as caught:
        so.add_gradient_ops(net, ["loss"])
    message = str(caught.value)
    assert "loss_grad" in message and "'model'" in message
    assert "add_gradient_ops(net, ['loss_a', 'loss_b'])" in message
    assert "forward = net.netdef.copy()" in message


def test_the_net_still_trains_after_the_refused_second_call():
    net = do_model()
    grads = so.add_gradient_ops(net, ["loss"])
    with pytest.raises(so.GradientError):
        so.add_gradient_ops(net, ["loss"])
    ws = feeds()
    for _ in range(3):                       # a Do net runs repeatedly: push, then pop
        ws.run_net_once(net)
    expected = np.array([0.5, -1.0, 2.0]) * (1 - np.tanh(ws["x"] * ws["w"]) ** 2)
    np.testing.assert_allclose(ws[grads["w"]], expected)


def test_add_gradient_ops_twice_on_a_plain_net_is_refused():
    net = so.Net("plain")
    net.Mul(["x", "w"], ["y"])
    net.SumElements(["y"], ["loss"])
    so.add_gradient_ops(net, ["loss"])
    with pytest.raises(so.GradientError, match="already has a backward pass"):
        so.add_gradient_ops(net, ["loss"])


def test_add_gradient_ops_twice_with_a_given_seed_gradient_is_refused():
    net = so.Net("given")
    net.Mul(["x", "w"], ["y"])
    net.SumElements(["y"], ["loss"])
    so.add_gradient_ops(net, {"loss": "dloss"})
    with pytest.raises(so.GradientError, match="w_grad"):
        so.add_gradient_ops(net, {"loss": "dloss"})


def test_a_second_pass_is_refused_on_a_net_rebuilt_from_an_edited_netdef():
    net = do_model()
    so.add_gradient_ops(net, ["loss"])
    data = net.netdef.to_dict()
    for op in data["ops"]:
        op["is_gradient_op"] = False          # edited by hand: no op says it is a gradient
    edited = so.NetDef.from_dict(data)
    with pytest.raises(so.GradientError, match="already has a backward pass"):
        so.add_gradient_ops(edited, ["loss"])


def test_gradients_of_a_second_loss_sharing_no_blob_may_be_added_later():
    net = so.Net("two_heads")
    net.Mul(["x", "w"], ["y"])
    net.SumElements(["y"], ["loss"])
    net.Mul(["u", "v"], ["z"])
    net.SumElements(["z"], ["other_loss"])
    so.add_gradient_ops(net, ["loss"])
    grads = so.add_gradient_ops(net, ["other_loss"])
    ws = so.Workspace()
    for name, value in {"x": [1.0, 2.0], "w": [3.0, 4.0], "u": [5.0], "v": [6.0]}.items():
        ws[name] = np.array(value)
    ws.run_net_once(net)
    assert ws[grads["v"]].tolist() == [5.0]
    assert ws["w_grad"].tolist() == [1.0, 2.0]


def test_a_forward_op_writing_the_given_gradient_is_not_a_second_pass():
    # The net fills the seed itself and a Do updates x in place, so the gradient Do
    # writes x's gradient into the given blob: one pass, not two.
    step = so.Net("halve")
    step.Scale(["a"], ["a"], scale=0.5)
    net = so.Net("in_place")
    net.Do(["x", "scope"], ["x", "scope"], net=step, inner_blobs=["a"], outer_blobs_idx=[0])
    net.ConstantFill(["x"], ["x_grad"], value=1.0)
    grads = so.add_gradient_ops(net, {"x": "x_grad"})
    ws = so.Workspace()
    ws["x"] = np.array([4.0, 8.0])
    ws.create_blob("scope")
    ws.run_net_once(net)
    assert ws["x"].tolist() == [2.0, 4.0]
    assert ws[grads["x"]].tolist() == [0.5, 0.5]


def test_gradient_do_with_nothing_to_pop_names_the_scope_blob_and_the_likely_cause():
    net = do_model()
    so.add_gradient_ops(net, ["loss"])
    gradient_do = next(op for op in net.ops if op.type == "Do" and op.is_gradient_op)
    net.ops.append(gradient_do.copy())       # the backward Do twice, as a second pass had
    ws = feeds()
    with pytest.raises(so.OperatorError) as caught:
        ws.run_net_once(net)
    message = str(caught.value)
    assert "Failed to initialize Do op workspace: the scope stack is empty" in message
    assert re.search(r"scope blob scope\b", message)
    assert "backward pass was added twice" in message
    assert "pops more than it pushes" in message
