"""scopeops.caffe2: add_if_op / add_while_op and NetBuilder's control ops, on
scopeops.control (docs/caffe2.md)."""

import numpy as np
import pytest

from scopeops.caffe2.python import core, workspace
from scopeops.caffe2.python.control_ops_util import add_if_op, add_while_op
from scopeops.caffe2.python.net_builder import NetBuilder, ops


@pytest.fixture(autouse=True)
def clean_workspace():
    workspace.ResetWorkspace()
    yield
    workspace.ResetWorkspace()


def test_add_if_op_runs_the_branch_the_condition_picks():
    then_net = core.Net("then_branch")
    then_net.Add(["x", "one"], "y")
    else_net = core.Net("else_branch")
    else_net.Sub(["x", "one"], "y")
    for flag, expected in [(True, 3.0), (False, 1.0)]:
        outer = core.Net("if_outer")
        cond = outer.AddExternalInput("cond")
        add_if_op(outer, cond, ["x", "one", "y"], then_net, else_net)
        assert [op.type for op in outer.Proto().op] == ["CreateScope", "CreateScope", "If"]
        assert "y" in outer.Proto().external_output
        workspace.FeedBlob("cond", np.array([flag]))
        workspace.FeedBlob("x", np.array([2.0], np.float32))
        workspace.FeedBlob("one", np.array([1.0], np.float32))
        workspace.FeedBlob("y", np.array([0.0], np.float32))
        workspace.RunNetOnce(outer)
        assert workspace.FetchBlob("y")[0] == expected


def test_add_while_op_loops_until_the_condition_net_says_stop():
    outer = core.Net("while_outer")
    body = core.Net("while_body")
    body.Add(["i", "one"], "i")
    condition = core.Net("while_cond")
    condition.LT(["i", "limit"], "go")
    add_while_op(outer, core.BlobReference("go"), ["i", "one", "limit"], body, condition)
    assert outer.Proto().op[-1].type == "While"
    workspace.FeedBlob("i", np.array([0]))
    workspace.FeedBlob("one", np.array([1]))
    workspace.FeedBlob("limit", np.array([5]))
    workspace.RunNetOnce(outer)
    assert workspace.FetchBlob("i")[0] == 5


def test_a_branch_reading_a_blob_outside_the_lexical_scope_is_an_error():
    outer = core.Net("if_undefined")
    then_net = core.Net("then_undefined")
    then_net.Relu("unknown", "y")
    with pytest.raises(RuntimeError, match="Input blob unknown is undefined"):
        add_if_op(outer, "cond", ["y"], then_net)


def test_net_builder_with_if_else_and_while_computes_and_differentiates():
    with NetBuilder(_use_control_ops=True) as nb:
        ops.Copy(ops.Const(0), "i")
        ops.Copy(ops.Const(1), "one")
        ops.Copy(ops.Const(2), "two")
        ops.Copy(ops.Const(2.0), "x")
        ops.Copy(ops.Const(3.0), "y")
        ops.Copy(ops.Const(2.0), "z")
        with ops.WhileNet():
            with ops.Condition():
                ops.Add(["i", "one"], "i")
                ops.LE(["i", "two"])
            ops.Pow("x", "x", exponent=2.0)
            with ops.IfNet(ops.LT(["i", "two"])):
                ops.Pow("y", "y", exponent=2.0)
            with ops.Else():
                ops.Pow("z", "z", exponent=3.0)
        ops.Add(["x", "y"], "x_plus_y")
        ops.Add(["x_plus_y", "z"], "s")
    nets = nb.get()
    assert len(nets) == 1
    net = nets[0]
    net.AddGradientOperators(["s"])
    workspace.RunNetOnce(net)
    # i=1: x=4, y=9; i=2: x=16, z=8; then stop.
    values = {b: float(workspace.FetchBlob(b)) for b in
              ["x", "x_grad", "y", "y_grad", "z", "z_grad"]}
    assert values == {"x": 16.0, "x_grad": 32.0, "y": 9.0, "y_grad": 6.0, "z": 8.0,
                      "z_grad": 12.0}


def test_net_builder_names_and_merges():
    with NetBuilder(name="outer_builder", _use_control_ops=True) as nb:
        first = ops.Relu("a", "b")
        assert first.Net().Name().startswith("outer_builder")   # Net(None) in the builder
        second = ops.net(name="second")
        assert second.Name().startswith("outer_builder/second")
        ops.Relu("b", "c")
    merged = nb.get()
    assert len(merged) == 1
    assert [op.type for op in merged[0].Proto().op] == ["Relu", "Relu"]
    with pytest.raises(AssertionError, match="built already"):
        nb.add(core.Net("late"))
    with pytest.raises(AttributeError, match="No active NetBuilder"):
        ops.Relu("a", "b")


def test_control_builders_are_checked():
    with NetBuilder(_use_control_ops=True):
        with pytest.raises(AssertionError, match="Invalid use of Else"):
            ops.Else()
        with pytest.raises(AssertionError, match="Condition outside of WhileNet"):
            ops.Condition()
    with pytest.raises(NotImplementedError, match="execution steps"):
        NetBuilder(_stop_blob_required=True)
    with NetBuilder():
        with pytest.raises(NotImplementedError):
            ops.stop()
