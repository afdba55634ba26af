"""so.control.add_do: a Do wired from an {inner: outer} mapping, in Caffe2's form."""

import numpy as np
import pytest

import scopeops as so
from scopeops.control import add_do


def step_net():
    step = so.Net("step")
    step.Mul(["a", "v"], ["prod"])          # "prod" stays local to the pushed workspace
    step.Tanh(["prod"], ["out"])
    return step


def feeds():
    ws = so.Workspace()
    ws["x"] = np.array([0.5, -1.0, 2.0])
    ws["w"] = np.array([1.5, 2.0, -0.5])
    return ws


def test_add_do_builds_caffe2s_four_lists_from_the_mapping():
    net = so.Net("model")
    do = add_do(net, step_net(), {"a": "x", "v": "w", "out": "y"}, scope="scope")
    assert do.type == "Do" and do is net.ops[-1]
    assert do.inputs == ["x", "w", "scope"]
    assert do.outputs == ["y", "scope"]
    assert do.args["inner_blobs"] == ["a", "v", "out"]
    assert "outer_blobs_idx" not in do.args           # 0..n-1: left out


def test_add_do_runs_like_the_four_list_form():
    mapped = so.Net("mapped")
    add_do(mapped, step_net(), {"a": "x", "v": "w", "out": "y"}, scope="scope")
    listed = so.Net("listed")
    listed.CreateScope([], ["scope"])
    listed.Do(["x", "w", "scope"], ["y", "scope"], net=step_net(),
              inner_blobs=["a", "v", "out"], outer_blobs_idx=[0, 1, 2])
    results = []
    for net in (mapped, listed):
        ws = feeds()
        ws.run_net_once(net)
        results.append(ws["y"])
        assert "prod" not in ws
    np.testing.assert_array_equal(results[0], results[1])


def test_add_do_gradients_equal_the_four_list_forms():
    grads = []
    for wire in ("mapped", "listed"):
        net = so.Net(wire)
        if wire == "mapped":
            add_do(net, step_net(), {"a": "x", "v": "w", "out": "y"}, scope="scope")
        else:
            net.CreateScope([], ["scope"])
            net.Do(["x", "w", "scope"], ["y", "scope"], net=step_net(),
                   inner_blobs=["a", "v", "out"], outer_blobs_idx=[0, 1, 2])
        net.SumElements(["y"], ["loss"])
        grad_map = so.add_gradient_ops(net, ["loss"])
        ws = feeds()
        ws.run_net_once(net)
        grads.append(ws[grad_map["w"]])
    np.testing.assert_array_equal(grads[0], grads[1])


def test_add_do_binds_a_name_read_and_written_as_input_and_output():
    body = so.Net("grow")
    body.Scale(["h"], ["h"], scale=2.0)
    net = so.Net("model")
    do = add_do(net, body, {"h": "state"}, scope="scope")
    assert do.inputs == ["state", "scope"] and do.outputs == ["state", "scope"]
    ws = so.Workspace()
    ws["state"] = np.array([1.5])
    ws.run_net_once(net)
    assert ws["state"].tolist() == [3.0]


def test_add_do_gives_outer_blobs_idx_when_the_outer_order_differs():
    body = so.Net("body")
    body.Copy(["a"], ["b"])
    net = so.Net("model")
    do = add_do(net, body, {"b": "out", "a": "in"}, scope="scope")
    assert do.inputs == ["in", "scope"] and do.outputs == ["out", "scope"]
    assert do.args["inner_blobs"] == ["b", "a"] and do.args["outer_blobs_idx"] == [1, 0]
    ws = so.Workspace()
    ws["in"] = np.array([7.0])
    ws.run_net_once(net)
    assert ws["out"].tolist() == [7.0]


def test_add_do_places_one_create_scope_for_steps_sharing_a_scope():
    net = so.Net("steps")
    for t in range(3):
        add_do(net, step_net(), {"a": f"x{t}", "v": "w", "out": f"x{t + 1}"}, scope="time")
    assert [op.type for op in net.ops] == ["CreateScope", "Do", "Do", "Do"]
    assert net.ops[0].outputs == ["time"]


def test_add_do_without_create_scope_leaves_the_scope_blob_to_the_caller():
    net = so.Net("model")
    add_do(net, step_net(), {"a": "x", "v": "w", "out": "y"}, scope="scope",
           create_scope=False)
    assert [op.type for op in net.ops] == ["Do"]


def test_add_do_picks_a_fresh_scope_blob_for_each_call_by_default():
    net = so.Net("model")
    first = add_do(net, step_net(), {"a": "x", "v": "w", "out": "y"})
    second = add_do(net, step_net(), {"a": "y", "v": "w", "out": "z"})
    assert first.inputs[-1] == "model/do_scope"
    assert second.inputs[-1] == "model/do_scope_1"
    assert [op.type for op in net.ops] == ["CreateScope", "Do", "CreateScope", "Do"]


def test_add_do_scopes_outer_names_like_the_net_builder():
    net, step = so.Net("model"), step_net()
    with so.NameScope("layer"):
        do = add_do(net, step, {"a": "x", "v": "w", "out": "y"}, scope="scope")
    assert do.inputs == ["layer/x", "layer/w", "layer/scope"]
    assert do.args["inner_blobs"] == ["a", "v", "out"]


def test_add_do_with_reuse_workspace_may_read_the_first_dos_locals():
    reader = so.Net("reader")
    reader.Scale(["prod"], ["doubled"], scale=2.0)   # "prod" is local to the first step
    net = so.Net("model")
    add_do(net, step_net(), {"a": "x", "v": "w", "out": "y"}, scope="scope")
    do = add_do(net, reader, {"doubled": "z"}, scope="scope", reuse_workspace=True,
                name="again")
    assert do.args["reuse_workspace"] is True and do.name == "again"
    ws = feeds()
    ws.run_net_once(net)
    assert len(ws["scope"]) == 1                      # the second Do reused the first's
    np.testing.assert_allclose(ws["z"], 2 * ws["x"] * ws["w"])


def test_add_do_names_a_bound_name_the_subnet_never_uses_and_suggests_one():
    net = so.Net("model")
    with pytest.raises(so.BindingError, match=r"neither reads nor writes vv.*did you mean v\?"):
        add_do(net, step_net(), {"a": "x", "vv": "w", "out": "y"})
    assert net.ops == []


def test_add_do_refuses_a_name_read_before_written_and_left_unbound():
    net = so.Net("model")
    with pytest.raises(so.BindingError, match=r"reads v before writing it"):
        add_do(net, step_net(), {"a": "x", "out": "y"})
    assert net.ops == []


def test_add_do_refuses_an_outer_blob_bound_twice():
    net = so.Net("model")
    with pytest.raises(so.BindingError, match=r"outer blob x is bound to several inner names"):
        add_do(net, step_net(), {"a": "x", "v": "x", "out": "y"})
    assert net.ops == []


def test_add_do_refuses_the_scope_blob_as_an_outer_blob():
    net = so.Net("model")
    with pytest.raises(so.BindingError, match=r"scope blob y is also bound"):
        add_do(net, step_net(), {"a": "x", "v": "w", "out": "y"}, scope="y")
    assert net.ops == []


@pytest.mark.parametrize("bindings", [["a", "x"], {"a": 1}, {"": "x"}])
def test_add_do_refuses_bindings_that_are_not_a_mapping_of_names(bindings):
    with pytest.raises(TypeError):
        add_do(so.Net("model"), step_net(), bindings)
