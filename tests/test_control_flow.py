"""If and While, the add_if / add_while helpers (control_ops_util), and gradients through
Do, If and While checked against central finite differences of the forward net."""

import re

import numpy as np
import pytest

import scopeops as so
import scopeops.ops.math  # noqa: F401  - registers the numeric operators
import scopeops.ops.nn  # noqa: F401
import scopeops.testing  # noqa: F401
from scopeops.control import add_if, add_while


def feed(ws, **blobs):
    for name, value in blobs.items():
        ws.feed_blob(name, np.array(value, dtype=np.float64) if not isinstance(value, np.ndarray)
                     else value.copy())
    return ws


def workspace(**blobs):
    return feed(so.Workspace(), **blobs)


def truth(value):
    return np.array([value], dtype=np.bool_)


# -- gradient checking helpers ------------------------------------------------------------


def run_forward(netdef, feeds):
    ws = so.Workspace()
    for name, value in feeds.items():
        ws.feed_blob(name, np.array(value, copy=True))
    ws.run_net_once(netdef)
    return ws


def loss_of(netdef, feeds, loss):
    return float(np.sum(run_forward(netdef, feeds).fetch_blob(loss)))


def numeric_gradient(netdef, feeds, loss, wrt, eps=1e-6):
    """Central differences of sum(loss) w.r.t. feeds[wrt], in float64."""
    base = np.asarray(feeds[wrt], dtype=np.float64)
    grad = np.zeros_like(base)
    for index in np.ndindex(base.shape):
        values = []
        for step in (eps, -eps):
            moved = dict(feeds)
            bumped = base.copy()
            bumped[index] += step
            moved[wrt] = bumped
            values.append(loss_of(netdef, moved, loss))
        grad[index] = (values[0] - values[1]) / (2 * eps)
    return grad


def analytic_gradients(net, feeds, loss):
    """(workspace after the forward+backward net ran, blob -> gradient blob map)."""
    backward = so.NetDef.from_dict(net.netdef.to_dict())
    backward.name = f"{backward.name}_with_grad"
    grads = so.add_gradient_ops(backward, [loss])
    ws = run_forward(backward, feeds)
    return ws, grads, backward


def assert_gradients_match(net, feeds, loss, wrt):
    forward = so.NetDef.from_dict(net.netdef.to_dict())
    ws, grads, backward = analytic_gradients(net, feeds, loss)
    for name in wrt:
        assert name in grads, f"no gradient built for {name}: {grads}"
        analytic = ws.fetch_blob(grads[name])
        numeric = numeric_gradient(forward, feeds, loss, name)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-6,
                                   err_msg=f"gradient of {name}\n{backward}")
    return ws, grads, backward


# -- If -------------------------------------------------------------------------------------


def if_net(cond_name="cond"):
    then_net = so.Net("then")
    then_net.Copy(["a"], ["out"])
    then_net.Scale(["a"], ["then_local"], scale=2.0)
    else_net = so.Net("else")
    else_net.Copy(["b"], ["out"])
    net = so.Net("with_if")
    net.add_op("If", [cond_name, "a", "b"], ["out"], then_net=then_net, else_net=else_net)
    return net


def test_if_with_true_condition_runs_then_net_in_the_same_workspace():
    ws = workspace(a=[1.0], b=[2.0])
    ws.feed_blob("cond", truth(True))
    ws.run_net_once(if_net())
    np.testing.assert_array_equal(ws.fetch_blob("out"), [1.0])
    np.testing.assert_array_equal(ws.fetch_blob("then_local"), [2.0])


def test_if_with_false_condition_runs_else_net():
    ws = workspace(a=[1.0], b=[2.0])
    ws.feed_blob("cond", truth(False))
    ws.run_net_once(if_net())
    np.testing.assert_array_equal(ws.fetch_blob("out"), [2.0])


def test_if_rereads_its_condition_on_every_run():
    ws = workspace(a=[1.0], b=[2.0])
    ws.feed_blob("cond", truth(True))
    ws.create_net(if_net())
    ws.run_net("with_if")
    ws.feed_blob("cond", truth(False))
    ws.run_net("with_if")
    np.testing.assert_array_equal(ws.fetch_blob("out"), [2.0])


def test_if_without_else_and_false_condition_does_nothing():
    ws = workspace(a=[1.0], out=[9.0])
    ws.feed_blob("cond", truth(False))
    then_net = so.Net("then")
    then_net.Copy(["a"], ["out"])
    ws.run_operator_once(so.create_operator("If", ["cond", "a"], ["out"], then_net=then_net))
    np.testing.assert_array_equal(ws.fetch_blob("out"), [9.0])


def test_if_accepts_a_scalar_shaped_condition_tensor():
    ws = workspace(a=[1.0], b=[2.0])
    ws.feed_blob("cond", np.array(True))
    ws.run_net_once(if_net())
    np.testing.assert_array_equal(ws.fetch_blob("out"), [1.0])


def test_if_without_then_net_is_refused():
    ws = workspace(a=[1.0])
    ws.feed_blob("cond", truth(True))
    with pytest.raises(so.OperatorError,
                       match=re.escape("then_net must be specified in If operator")):
        ws.run_operator_once(so.create_operator("If", ["cond"], []))


def test_if_builds_its_branches_in_the_parent_workspace_when_built():
    ws = workspace(a=[1.0])
    ws.feed_blob("cond", truth(False))
    then_net = so.Net("then")
    then_net.Copy(["nope"], ["out"])
    net = so.Net("if_missing")
    net.add_op("If", ["cond"], [], then_net=then_net)
    with pytest.raises(so.OperatorError,
                       match=re.escape("Encountered a non-existing input blob: nope")):
        ws.create_net(net)


def test_if_condition_that_is_not_a_tensor_is_refused():
    ws = workspace(a=[1.0], b=[2.0])
    ws.feed_blob("cond", so.WorkspaceStack())
    with pytest.raises(so.OperatorError,
                       match=re.escape("Invalid condition in If operator: tensor expected")):
        ws.run_net_once(if_net())


def test_if_condition_with_several_values_is_refused():
    ws = workspace(a=[1.0], b=[2.0])
    ws.feed_blob("cond", np.array([True, False]))
    with pytest.raises(so.OperatorError, match=re.escape(
            "Invalid condition tensor in If operator: single value expected")):
        ws.run_net_once(if_net())


def test_if_condition_with_no_values_is_refused():
    ws = workspace(a=[1.0], b=[2.0])
    ws.feed_blob("cond", np.zeros(0, dtype=np.bool_))
    with pytest.raises(so.OperatorError, match=re.escape("single value expected")):
        ws.run_net_once(if_net())


# -- While ----------------------------------------------------------------------------------


def test_while_without_cond_net_rereads_the_condition_each_iteration():
    ws = workspace(i=[3.0], one=[1.0], zero=[0.0], count=[0.0])
    ws.feed_blob("cond", truth(True))
    loop = so.Net("loop")
    loop.Sub(["i", "one"], ["i"])
    loop.Add(["count", "one"], ["count"])
    loop.GT(["i", "zero"], ["cond"])
    ws.run_operator_once(so.create_operator("While", ["cond", "i", "one", "zero", "count"],
                                            ["i", "count", "cond"], loop_net=loop))
    np.testing.assert_array_equal(ws.fetch_blob("count"), [3.0])
    np.testing.assert_array_equal(ws.fetch_blob("i"), [0.0])


def test_while_with_false_condition_runs_no_iteration():
    ws = workspace(count=[0.0], one=[1.0])
    ws.feed_blob("cond", truth(False))
    loop = so.Net("loop")
    loop.Add(["count", "one"], ["count"])
    ws.run_operator_once(so.create_operator("While", ["cond", "count", "one"], ["count"],
                                            loop_net=loop))
    np.testing.assert_array_equal(ws.fetch_blob("count"), [0.0])


def test_while_with_cond_net_runs_it_before_every_check():
    ws = workspace(i=[0.0], n=[4.0], one=[1.0], checks=[0.0])
    ws.feed_blob("cond", truth(False))            # stale: cond_net must run first
    cond_net = so.Net("cond")
    cond_net.Add(["checks", "one"], ["checks"])
    cond_net.LT(["i", "n"], ["cond"])
    loop = so.Net("loop")
    loop.Add(["i", "one"], ["i"])
    ws.run_operator_once(so.create_operator("While", ["cond", "i", "n", "one", "checks"],
                                            ["i", "cond", "checks"], loop_net=loop,
                                            cond_net=cond_net))
    np.testing.assert_array_equal(ws.fetch_blob("i"), [4.0])
    np.testing.assert_array_equal(ws.fetch_blob("checks"), [5.0])


def test_while_without_loop_net_is_refused():
    ws = workspace()
    ws.feed_blob("cond", truth(False))
    with pytest.raises(so.OperatorError,
                       match=re.escape("loop_net must be specified in While operator")):
        ws.run_operator_once(so.create_operator("While", ["cond"], []))


def test_while_condition_that_is_not_a_tensor_is_refused():
    ws = workspace()
    ws.feed_blob("cond", so.WorkspaceStack())
    with pytest.raises(so.OperatorError,
                       match=re.escape("Invalid condition in While operator: tensor expected")):
        ws.run_operator_once(so.create_operator("While", ["cond"], [],
                                                loop_net=so.NetDef(name="nothing")))


# -- add_if -----------------------------------------------------------------------------------


def outer_with_scope(*names):
    net = so.Net("main")
    net.add_external_inputs(*names)
    return net


def branch_nets():
    """then: tmp = x * w (local); y = tmp + x.  else: ww = w * w (local); y = x - ww."""
    then_net = so.Net("then_branch")
    then_net.Mul(["x", "w"], ["tmp"])
    then_net.Add(["tmp", "x"], ["y"])
    else_net = so.Net("else_branch")
    else_net.Mul(["w", "w"], ["ww"])
    else_net.Sub(["x", "ww"], ["y"])
    return then_net, else_net


def if_with_both_branches():
    net = outer_with_scope("x", "w", "c", "y")
    then_net, else_net = branch_nets()
    if_op = add_if(net, "c", then_net, else_net)
    return net, if_op


def scope_blob_of(branch_netdef):
    (do,) = branch_netdef.ops
    assert do.type == "Do"
    return do.inputs[-1]


def test_add_if_returns_the_if_operator_def_appended_last():
    net, if_op = if_with_both_branches()
    assert if_op.type == "If"
    assert net.netdef.ops[-1] == if_op


def test_add_if_wraps_each_branch_in_a_single_do():
    _, if_op = if_with_both_branches()
    for key in ("then_net", "else_net"):
        branch = if_op.args[key]
        assert isinstance(branch, so.NetDef)
        assert [op.type for op in branch.ops] == ["Do"]


def test_add_if_derives_branch_external_inputs_and_outputs():
    _, if_op = if_with_both_branches()
    then_do = if_op.args["then_net"].ops[0]
    assert set(then_do.inputs[:-1]) == {"x", "w"}
    assert then_do.outputs[:-1] == ["y"]
    else_do = if_op.args["else_net"].ops[0]
    assert set(else_do.inputs[:-1]) == {"w", "x"}
    assert else_do.outputs[:-1] == ["y"]


def test_add_if_binds_branch_blobs_under_identical_names():
    _, if_op = if_with_both_branches()
    do = if_op.args["then_net"].ops[0]
    outer = do.inputs[:-1] + do.outputs[:-1]
    inner = do.args["inner_blobs"]
    assert [outer[i] for i in do.args["outer_blobs_idx"]] == inner
    assert set(inner) == {"x", "w", "y"}


def test_add_if_op_lists_the_union_of_branch_inputs_and_outputs():
    _, if_op = if_with_both_branches()
    assert if_op.inputs[0] == "c"
    assert {"x", "w"} <= set(if_op.inputs)
    assert "y" in if_op.outputs
    for local in ("tmp", "ww"):
        assert local not in if_op.inputs and local not in if_op.outputs


def test_add_if_keeps_branch_local_names_out_of_the_outer_workspace():
    net, _ = if_with_both_branches()
    for cond in (True, False):
        ws = workspace(x=[2.0], w=[3.0], y=[0.0])
        ws.feed_blob("c", truth(cond))
        ws.run_net_once(net)
        assert not ws.has_blob("tmp")
        assert not ws.has_blob("ww")


@pytest.mark.parametrize("cond, expected", [(True, 8.0), (False, -7.0)])
def test_add_if_runs_the_chosen_branch(cond, expected):
    net, _ = if_with_both_branches()
    ws = workspace(x=[2.0], w=[3.0], y=[0.0])
    ws.feed_blob("c", truth(cond))
    ws.run_net_once(net)
    np.testing.assert_array_equal(ws.fetch_blob("y"), [expected])


def test_add_if_branch_reading_an_undefined_blob_is_refused():
    net = outer_with_scope("x", "c")
    then_net = so.Net("then_branch")
    then_net.Add(["x", "q"], ["y"])
    with pytest.raises(so.OperatorError, match=re.escape("Input blob q is undefined")):
        add_if(net, "c", then_net)


def test_add_if_else_branch_reading_an_undefined_blob_is_refused():
    net = outer_with_scope("x", "c")
    then_net = so.Net("then_branch")
    then_net.Copy(["x"], ["y"])
    else_net = so.Net("else_branch")
    else_net.Copy(["ghost"], ["y"])
    with pytest.raises(so.OperatorError, match=re.escape("Input blob ghost is undefined")):
        add_if(net, "c", then_net, else_net)


def test_add_if_explicit_lexical_scope_defines_the_inputs():
    net = so.Net("main")
    then_net = so.Net("then_branch")
    then_net.Add(["x", "q"], ["y"])
    if_op = add_if(net, "c", then_net, lexical_scope=["x", "q", "y", "c"])
    assert {"x", "q"} <= set(if_op.inputs)
    assert "y" in if_op.outputs


def test_add_if_default_lexical_scope_includes_blobs_written_by_earlier_ops():
    net = outer_with_scope("x", "c")
    net.Scale(["x"], ["earlier"], scale=2.0)
    then_net = so.Net("then_branch")
    then_net.Add(["earlier", "x"], ["earlier"])
    if_op = add_if(net, "c", then_net)
    assert "earlier" in if_op.inputs and "earlier" in if_op.outputs


def test_add_if_write_outside_the_lexical_scope_stays_local():
    net = outer_with_scope("x", "c")
    then_net = so.Net("then_branch")
    then_net.Scale(["x"], ["fresh"], scale=2.0)
    if_op = add_if(net, "c", then_net)
    assert "fresh" not in if_op.outputs
    ws = workspace(x=[1.0])
    ws.feed_blob("c", truth(True))
    ws.run_net_once(net)
    assert not ws.has_blob("fresh")


def test_add_if_places_create_scope_before_the_if_for_each_scope_blob():
    net, if_op = if_with_both_branches()
    ops = net.netdef.ops
    if_index = len(ops) - 1
    for key in ("then_net", "else_net"):
        scope_blob = scope_blob_of(if_op.args[key])
        creators = [i for i, op in enumerate(ops)
                    if op.type == "CreateScope" and op.outputs == [scope_blob]]
        assert creators and max(creators) < if_index


def test_add_if_scope_blobs_follow_caffe2_naming():
    net, if_op = if_with_both_branches()
    assert "workspace_if_then" in scope_blob_of(if_op.args["then_net"])
    assert "workspace_if_else" in scope_blob_of(if_op.args["else_net"])


def test_add_if_scope_blob_names_are_unique_per_net():
    net = outer_with_scope("x", "w", "c", "y")
    scopes = []
    for _ in range(3):
        then_net, else_net = branch_nets()
        if_op = add_if(net, "c", then_net, else_net)
        scopes += [scope_blob_of(if_op.args["then_net"]),
                   scope_blob_of(if_op.args["else_net"])]
    assert len(set(scopes)) == len(scopes)


def test_add_if_scope_blobs_are_fresh_stacks_on_every_run():
    net, _ = if_with_both_branches()
    ws = workspace(x=[2.0], w=[3.0], y=[0.0])
    ws.feed_blob("c", truth(True))
    ws.create_net(net)
    for _ in range(3):
        ws.run_net("main")
    then_scope = scope_blob_of(net.netdef.ops[-1].args["then_net"])
    assert len(ws.fetch_blob(then_scope)) == 1


def test_add_if_then_only_branch_passes_the_output_through_when_false():
    net = outer_with_scope("x", "c")
    net.Copy(["x"], ["y"])
    then_net = so.Net("then_branch")
    then_net.Scale(["x"], ["y"], scale=10.0)
    add_if(net, "c", then_net)
    ws = workspace(x=[2.0])
    ws.feed_blob("c", truth(False))
    ws.run_net_once(net)
    np.testing.assert_array_equal(ws.fetch_blob("y"), [2.0])


# -- add_while --------------------------------------------------------------------------------


def counting_while(with_cond_net=True):
    """while i < n: x = x * w; i = i + 1 (scratch local 'prod')."""
    net = outer_with_scope("x", "w", "i", "n", "one")
    body = so.Net("body")
    body.Mul(["x", "w"], ["prod"])
    body.Copy(["prod"], ["x"])
    body.Add(["i", "one"], ["i"])
    if with_cond_net:
        cond_net = so.Net("cond")
        cond_net.LT(["i", "n"], ["go"])
        while_op = add_while(net, "go", body, cond_net)
    else:
        net.LT(["i", "n"], ["go"])
        body.LT(["i", "n"], ["go"])
        while_op = add_while(net, "go", body)
    return net, while_op


def loop_body_do(while_op):
    (do,) = while_op.args["loop_net"].ops
    assert do.type == "Do"
    return do


@pytest.mark.parametrize("with_cond_net", [True, False], ids=["cond_net", "cond_in_body"])
def test_add_while_runs_until_the_condition_fails(with_cond_net):
    net, _ = counting_while(with_cond_net)
    ws = workspace(x=[1.0], w=[2.0], i=[0.0], n=[3.0], one=[1.0])
    ws.run_net_once(net)
    np.testing.assert_array_equal(ws.fetch_blob("x"), [8.0])
    np.testing.assert_array_equal(ws.fetch_blob("i"), [3.0])


def test_add_while_keeps_body_local_names_out_of_the_outer_workspace():
    net, _ = counting_while()
    ws = workspace(x=[1.0], w=[2.0], i=[0.0], n=[3.0], one=[1.0])
    ws.run_net_once(net)
    assert not ws.has_blob("prod")


def test_add_while_pushes_one_workspace_per_iteration():
    net, while_op = counting_while()
    ws = workspace(x=[1.0], w=[2.0], i=[0.0], n=[3.0], one=[1.0])
    ws.run_net_once(net)
    assert len(ws.fetch_blob(loop_body_do(while_op).inputs[-1])) == 3


def test_add_while_loop_body_do_copies_external_blobs():
    _, while_op = counting_while()
    assert loop_body_do(while_op).args.get("copy_external_blobs") is True


def test_add_while_condition_do_does_not_copy_external_blobs():
    _, while_op = counting_while()
    (cond_do,) = while_op.args["cond_net"].ops
    assert cond_do.type == "Do"
    assert not cond_do.args.get("copy_external_blobs", False)


def test_add_while_derives_body_external_inputs_and_outputs():
    _, while_op = counting_while()
    do = loop_body_do(while_op)
    assert set(do.inputs[:-1]) == {"x", "w", "i", "one"}
    assert set(do.outputs[:-1]) == {"x", "i"}
    assert "prod" not in do.inputs and "prod" not in do.outputs


def test_add_while_loop_outputs_are_loop_inputs_too():
    _, while_op = counting_while()
    do = loop_body_do(while_op)
    assert set(do.outputs[:-1]) <= set(do.inputs[:-1])
    assert {"x", "i"} <= set(while_op.inputs)


def test_add_while_places_create_scope_before_the_while():
    net, while_op = counting_while()
    ops = net.netdef.ops
    while_index = len(ops) - 1
    assert ops[while_index] == while_op
    scopes = [loop_body_do(while_op).inputs[-1], while_op.args["cond_net"].ops[0].inputs[-1]]
    for scope_blob in scopes:
        creators = [i for i, op in enumerate(ops)
                    if op.type == "CreateScope" and op.outputs == [scope_blob]]
        assert creators and max(creators) < while_index


def test_add_while_scope_blobs_follow_caffe2_naming():
    _, while_op = counting_while()
    assert "workspace_loop_body" in loop_body_do(while_op).inputs[-1]
    assert "workspace_loop_cond" in while_op.args["cond_net"].ops[0].inputs[-1]


def test_add_while_scope_blob_names_are_unique_per_net():
    net = outer_with_scope("x", "w", "i", "n", "one")
    scopes = []
    for _ in range(2):
        body = so.Net("body")
        body.Add(["i", "one"], ["i"])
        cond_net = so.Net("cond")
        cond_net.LT(["i", "n"], ["go"])
        while_op = add_while(net, "go", body, cond_net)
        scopes += [loop_body_do(while_op).inputs[-1],
                   while_op.args["cond_net"].ops[0].inputs[-1]]
    assert len(set(scopes)) == len(scopes)


def test_add_while_cond_net_not_writing_the_condition_is_refused():
    net = outer_with_scope("i", "n", "one")
    body = so.Net("body")
    body.Add(["i", "one"], ["i"])
    cond_net = so.Net("cond")
    cond_net.LT(["i", "n"], ["something_else"])
    with pytest.raises(so.OperatorError,
                       match=re.escape("Condition net does not write into condition blob")):
        add_while(net, "go", body, cond_net)


def test_add_while_fills_a_condition_outside_the_lexical_scope_with_false():
    net, while_op = counting_while()
    fills = [(i, op) for i, op in enumerate(net.netdef.ops)
             if op.type == "ConstantFill" and op.outputs == ["go"]]
    assert len(fills) == 1
    index, fill = fills[0]
    assert fill.args.get("value") is False
    assert fill.args.get("dtype") in ("bool", "BOOL")
    assert index < net.netdef.ops.index(while_op)


def test_add_while_does_not_fill_a_condition_already_in_scope():
    net = outer_with_scope("i", "n", "one", "go")
    body = so.Net("body")
    body.Add(["i", "one"], ["i"])
    cond_net = so.Net("cond")
    cond_net.LT(["i", "n"], ["go"])
    add_while(net, "go", body, cond_net)
    assert not any(op.type == "ConstantFill" for op in net.netdef.ops)


def test_add_while_body_reading_an_undefined_blob_is_refused():
    net = outer_with_scope("i", "go")
    body = so.Net("body")
    body.Add(["i", "missing_step"], ["i"])
    with pytest.raises(so.OperatorError,
                       match=re.escape("Input blob missing_step is undefined")):
        add_while(net, "go", body)


def test_add_while_scope_blobs_reset_on_every_run():
    net, while_op = counting_while()
    ws = workspace(x=[1.0], w=[2.0], i=[0.0], n=[3.0], one=[1.0])
    ws.create_net(net)
    ws.run_net("main")
    feed(ws, i=[0.0], x=[1.0])
    ws.run_net("main")
    assert len(ws.fetch_blob(loop_body_do(while_op).inputs[-1])) == 3
    np.testing.assert_array_equal(ws.fetch_blob("x"), [8.0])


# -- nested: If inside a While body -----------------------------------------------------------


def while_with_if_body(limit_name="limit"):
    """while i < n: (if x < limit: tmp = x * w; x = tmp  else: x = x + w); i = i + 1.

    'tmp' is local to the then-branch, 'small' to the loop body."""
    net = outer_with_scope("x", "w", "i", "n", "one", limit_name)
    body = so.Net("body")
    body.add_external_inputs("x", "w", "i", "n", "one", limit_name)
    body.LT(["x", limit_name], ["small"])
    then_net = so.Net("grow")
    then_net.Mul(["x", "w"], ["tmp"])
    then_net.Copy(["tmp"], ["x"])
    else_net = so.Net("step")
    else_net.Add(["x", "w"], ["x"])
    add_if(body, "small", then_net, else_net)
    body.Add(["i", "one"], ["i"])
    cond_net = so.Net("cond")
    cond_net.LT(["i", "n"], ["go"])
    add_while(net, "go", body, cond_net)
    return net


def python_while_with_if(x, w, n, limit):
    for _ in range(int(n)):
        x = x * w if x < limit else x + w
    return x


NESTED_FEEDS = {"x": np.array([0.5]), "w": np.array([1.5]), "i": np.array([0.0]),
                "n": np.array([5.0]), "one": np.array([1.0]), "limit": np.array([2.0])}


def test_nested_if_in_while_body_runs_correctly():
    ws = run_forward(while_with_if_body().netdef, NESTED_FEEDS)
    expected = python_while_with_if(0.5, 1.5, 5, 2.0)
    np.testing.assert_allclose(ws.fetch_blob("x"), [expected])
    np.testing.assert_array_equal(ws.fetch_blob("i"), [5.0])


def test_nested_if_in_while_body_keeps_branch_and_body_locals_out():
    ws = run_forward(while_with_if_body().netdef, NESTED_FEEDS)
    assert not ws.has_blob("tmp")
    assert not ws.has_blob("small")


def test_nested_if_in_while_body_exposes_the_if_reads_and_writes_to_the_loop():
    net = while_with_if_body()
    while_op = net.netdef.ops[-1]
    do = loop_body_do(while_op)
    assert {"x", "w", "limit", "i", "one"} <= set(do.inputs[:-1])
    assert {"x", "i"} <= set(do.outputs[:-1])


# -- gradients through Do ---------------------------------------------------------------------


def net_with_do():
    """y = x * x * w computed in a Do (local t = a * v), loss = sum(y)."""
    sub = so.Net("sub")
    sub.Mul(["a", "v"], ["t"])
    sub.Mul(["t", "a"], ["b"])
    net = so.Net("main")
    net.add_external_inputs("x", "w")
    net.CreateScope([], ["scope"])
    net.add_op("Do", ["x", "w", "scope"], ["y", "scope"], net=sub,
               inner_blobs=["a", "v", "b"], outer_blobs_idx=[0, 1, 2])
    net.SumElements(["y"], ["loss"])
    return net


DO_FEEDS = {"x": np.array([0.5, -1.5, 2.0]), "w": np.array([1.25, 0.75, -2.0])}


def test_gradient_through_do_matches_finite_differences():
    assert_gradients_match(net_with_do(), DO_FEEDS, "loss", ["x", "w"])


def test_gradient_through_do_has_the_closed_form_values():
    ws, grads, _ = analytic_gradients(net_with_do(), DO_FEEDS, "loss")
    x, w = DO_FEEDS["x"], DO_FEEDS["w"]
    np.testing.assert_allclose(ws.fetch_blob(grads["x"]), 2 * x * w)
    np.testing.assert_allclose(ws.fetch_blob(grads["w"]), x * x)


def test_gradient_through_do_passes_so_testing_gradient_check():
    result = so.testing.gradient_check(net_with_do(), DO_FEEDS, loss="loss", wrt=["x", "w"],
                                       eps=1e-6, rtol=1e-5, atol=1e-6)
    assert result.ok


def test_gradient_through_do_adds_a_gradient_do_on_the_same_scope_blob():
    _, _, backward = analytic_gradients(net_with_do(), DO_FEEDS, "loss")
    grad_dos = [op for op in backward.ops if op.type == "Do" and op.is_gradient_op]
    assert len(grad_dos) == 1
    assert grad_dos[0].inputs[-1] == "scope" and grad_dos[0].outputs[-1] == "scope"


def test_gradient_do_pops_the_forward_workspace():
    ws, _, _ = analytic_gradients(net_with_do(), DO_FEEDS, "loss")
    stack = ws.fetch_blob("scope")
    assert stack.empty()
    assert stack.capacity == 1


def test_gradient_through_do_with_averaged_loss_matches_finite_differences():
    net = net_with_do()
    net.netdef.ops[-1] = so.create_operator("AveragedLoss", ["y"], ["loss"])
    assert_gradients_match(net, DO_FEEDS, "loss", ["x", "w"])


def test_gradient_through_in_place_do_matches_finite_differences():
    """y = x * x * w written back into y: one outer name, bound once, read and written."""
    sub = so.Net("sub_inplace")
    sub.Mul(["a", "v"], ["t"])
    sub.Mul(["t", "a"], ["a"])
    net = so.Net("main")
    net.add_external_inputs("x", "w")
    net.Copy(["x"], ["y"])
    net.CreateScope([], ["scope"])
    net.add_op("Do", ["y", "w", "scope"], ["y", "scope"], net=sub,
               inner_blobs=["a", "v"], outer_blobs_idx=[0, 1])
    net.SumElements(["y"], ["loss"])
    assert_gradients_match(net, DO_FEEDS, "loss", ["x", "w"])


# -- gradients through If (add_if) ------------------------------------------------------------


IF_FEEDS = {"x": np.array([0.5, -1.0]), "w": np.array([1.5, 0.25])}


def if_gradient_net():
    net = outer_with_scope("x", "w", "c")
    net.Copy(["x"], ["y"])
    then_net, else_net = branch_nets()
    add_if(net, "c", then_net, else_net)
    net.Mul(["y", "y"], ["y2"])
    net.SumElements(["y2"], ["loss"])
    return net


@pytest.mark.parametrize("cond", [True, False], ids=["then", "else"])
def test_gradient_through_add_if_matches_finite_differences(cond):
    feeds = dict(IF_FEEDS, c=truth(cond))
    assert_gradients_match(if_gradient_net(), feeds, "loss", ["x", "w"])


@pytest.mark.parametrize("cond", [True, False], ids=["then", "else"])
def test_gradient_through_add_if_leaves_the_branch_stacks_empty(cond):
    feeds = dict(IF_FEEDS, c=truth(cond))
    net = if_gradient_net()
    if_op = [op for op in net.netdef.ops if op.type == "If"][0]
    ws, _, _ = analytic_gradients(net, feeds, "loss")
    for key in ("then_net", "else_net"):
        assert ws.fetch_blob(scope_blob_of(if_op.args[key])).empty()


@pytest.mark.parametrize("cond", [True, False], ids=["then", "else"])
def test_gradient_through_then_only_add_if_matches_finite_differences(cond):
    net = outer_with_scope("x", "w", "c")
    net.Mul(["x", "x"], ["y"])
    then_net = so.Net("then_branch")
    then_net.Mul(["y", "w"], ["tmp"])
    then_net.Add(["tmp", "x"], ["y"])
    add_if(net, "c", then_net)
    net.SumElements(["y"], ["loss"])
    assert_gradients_match(net, dict(IF_FEEDS, c=truth(cond)), "loss", ["x", "w"])


# -- gradients through While (add_while) ------------------------------------------------------


WHILE_FEEDS = {"x": np.array([0.5, -1.5]), "w": np.array([1.25, 0.8]), "i": np.array([0.0]),
               "one": np.array([1.0])}


def while_gradient_net(with_cond_net=True):
    net, while_op = counting_while(with_cond_net)
    net.Mul(["x", "x"], ["x2"])
    net.SumElements(["x2"], ["loss"])
    return net, while_op


@pytest.mark.parametrize("n", [1, 3], ids=["one_iteration", "three_iterations"])
@pytest.mark.parametrize("with_cond_net", [True, False], ids=["cond_net", "cond_in_body"])
def test_gradient_through_add_while_matches_finite_differences(n, with_cond_net):
    net, _ = while_gradient_net(with_cond_net)
    feeds = dict(WHILE_FEEDS, n=np.array([float(n)]))
    assert_gradients_match(net, feeds, "loss", ["x", "w"])


def test_gradient_through_add_while_has_the_closed_form_values():
    net, _ = while_gradient_net()
    feeds = dict(WHILE_FEEDS, n=np.array([3.0]))
    ws, grads, _ = analytic_gradients(net, feeds, "loss")
    x, w = WHILE_FEEDS["x"], WHILE_FEEDS["w"]
    # loss = sum((x w^3)^2): d/dx = 2 x w^6, d/dw = 6 x^2 w^5
    np.testing.assert_allclose(ws.fetch_blob(grads["x"]), 2 * x * w ** 6)
    np.testing.assert_allclose(ws.fetch_blob(grads["w"]), 6 * x * x * w ** 5)


def test_gradient_through_add_while_pops_every_forward_iteration():
    net, while_op = while_gradient_net()
    feeds = dict(WHILE_FEEDS, n=np.array([4.0]))
    body_scope = loop_body_do(while_op).inputs[-1]
    forward_ws = run_forward(net.netdef, feeds)
    assert len(forward_ws.fetch_blob(body_scope)) == 4
    ws, _, _ = analytic_gradients(net, feeds, "loss")
    stack = ws.fetch_blob(body_scope)
    assert stack.empty()
    assert stack.capacity == 4


def test_gradient_while_is_conditioned_on_has_scope_of_the_body_scope_blob():
    net, while_op = while_gradient_net()
    body_scope = loop_body_do(while_op).inputs[-1]
    _, _, backward = analytic_gradients(net, dict(WHILE_FEEDS, n=np.array([2.0])), "loss")
    forward_count = len(net.netdef.ops)
    grad_whiles = [op for op in backward.ops[forward_count:] if op.type == "While"]
    assert len(grad_whiles) == 1
    probes = [op for op in backward.ops[forward_count:] if op.type == "HasScope"]
    cond_net = grad_whiles[0].args.get("cond_net")
    if cond_net is not None:
        probes += [op for op in cond_net.ops if op.type == "HasScope"]
    assert any(op.inputs == [body_scope] for op in probes)


def test_gradient_through_add_while_with_zero_iterations():
    net, _ = while_gradient_net()
    feeds = dict(WHILE_FEEDS, n=np.array([0.0]))
    ws, grads, _ = assert_gradients_match(net, feeds, "loss", ["x", "w"])
    np.testing.assert_array_equal(ws.fetch_blob(grads["w"]), [0.0, 0.0])


def test_gradient_through_while_with_if_body_matches_finite_differences():
    net = while_with_if_body()
    net.Mul(["x", "x"], ["x2"])
    net.SumElements(["x2"], ["loss"])
    assert_gradients_match(net, NESTED_FEEDS, "loss", ["x", "w"])


def test_gradient_through_while_with_if_body_takes_both_branches():
    # The forward trajectory visits both branches, so the check above covers both.
    x, w, limit = 0.5, 1.5, 2.0
    branches = []
    for _ in range(5):
        branches.append(x < limit)
        x = x * w if x < limit else x + w
    assert any(branches) and not all(branches)


def test_gradient_through_while_with_if_body_leaves_the_body_stack_empty():
    net = while_with_if_body()
    net.Mul(["x", "x"], ["x2"])
    net.SumElements(["x2"], ["loss"])
    ws, _, _ = analytic_gradients(net, NESTED_FEEDS, "loss")
    body_scope = loop_body_do(net.netdef.ops[[op.type for op in net.netdef.ops].index(
        "While")]).inputs[-1]
    assert ws.fetch_blob(body_scope).empty()
    assert ws.fetch_blob(body_scope).capacity == 5


def test_gradient_through_two_dos_sharing_a_scope_blob_pairs_them_lifo():
    first = so.Net("first")
    first.Mul(["a", "a"], ["sq"])
    first.Mul(["sq", "v"], ["b"])
    second = so.Net("second")
    second.Tanh(["a"], ["th"])
    second.Mul(["th", "a"], ["b"])
    net = so.Net("main")
    net.add_external_inputs("x", "w")
    net.CreateScope([], ["scope"])
    net.add_op("Do", ["x", "w", "scope"], ["y", "scope"], net=first,
               inner_blobs=["a", "v", "b"], outer_blobs_idx=[0, 1, 2])
    net.add_op("Do", ["y", "scope"], ["z", "scope"], net=second,
               inner_blobs=["a", "b"], outer_blobs_idx=[0, 1])
    net.SumElements(["z"], ["loss"])
    ws, _, _ = assert_gradients_match(net, DO_FEEDS, "loss", ["x", "w"])
    assert ws.fetch_blob("scope").empty()


def test_gradient_through_add_while_sums_with_a_use_after_the_loop():
    net, _ = counting_while()
    net.Mul(["x", "w"], ["xw"])
    net.SumElements(["xw"], ["loss"])
    assert_gradients_match(net, dict(WHILE_FEEDS, n=np.array([3.0])), "loss", ["x", "w"])


def while_with_in_place_if_body():
    """while i < n: (if x < limit: x = x * w  else: x = x + w), all in place."""
    net = outer_with_scope("x", "w", "i", "n", "one", "limit")
    body = so.Net("body")
    body.add_external_inputs("x", "w", "i", "n", "one", "limit")
    body.LT(["x", "limit"], ["small"])
    then_net = so.Net("grow")
    then_net.Mul(["x", "w"], ["x"])
    else_net = so.Net("step")
    else_net.Add(["x", "w"], ["x"])
    add_if(body, "small", then_net, else_net)
    body.Add(["i", "one"], ["i"])
    cond_net = so.Net("cond")
    cond_net.LT(["i", "n"], ["go"])
    add_while(net, "go", body, cond_net)
    net.Mul(["x", "x"], ["x2"])
    net.SumElements(["x2"], ["loss"])
    return net


def test_gradient_through_while_with_in_place_if_body_matches_finite_differences():
    assert_gradients_match(while_with_in_place_if_body(), NESTED_FEEDS, "loss", ["x", "w"])


def test_gradient_through_while_with_in_place_if_body_has_the_closed_form_values():
    ws, grads, _ = analytic_gradients(while_with_in_place_if_body(), NESTED_FEEDS, "loss")
    # Forward: 0.5 -> 0.75 -> 1.125 -> 1.6875 (x w^3) -> 2.53125 (x w^4) -> 4.03125 (+ w)
    x0, w = 0.5, 1.5
    x_final = x0 * w ** 4 + w
    np.testing.assert_allclose(ws.fetch_blob("x"), [x_final])
    np.testing.assert_allclose(ws.fetch_blob(grads["x"]), [2 * x_final * w ** 4])
    np.testing.assert_allclose(ws.fetch_blob(grads["w"]), [2 * x_final * (4 * x0 * w ** 3 + 1)])


def rerun_gradients(net, feeds_list, loss, wrt):
    """Create the forward+backward net once in one workspace; run it for each feed set and
    compare each run's gradients to finite differences (reused stack workspaces, cached
    gradient subnets and replaced snapshots must not leak values between runs)."""
    forward = so.NetDef.from_dict(net.netdef.to_dict())
    backward = forward.copy()
    backward.name = "rerun_with_grad"
    grads = so.add_gradient_ops(backward, [loss])
    ws = so.Workspace()
    for name, value in feeds_list[0].items():
        ws.feed_blob(name, np.array(value, copy=True))
    ws.create_net(backward)
    for feeds in feeds_list:
        for name, value in feeds.items():
            ws.feed_blob(name, np.array(value, copy=True))
        ws.run_net("rerun_with_grad")
        for name in wrt:
            np.testing.assert_allclose(
                ws.fetch_blob(grads[name]), numeric_gradient(forward, feeds, loss, name),
                rtol=1e-5, atol=1e-6, err_msg=f"gradient of {name} for feeds {feeds}")


def test_gradient_through_do_rerun_in_the_same_workspace_uses_the_new_values():
    second = {"x": np.array([3.0, 0.25, -0.5]), "w": np.array([-1.0, 2.0, 0.5])}
    rerun_gradients(net_with_do(), [DO_FEEDS, second], "loss", ["x", "w"])


def test_gradient_through_add_while_rerun_in_the_same_workspace_uses_the_new_values():
    net, _ = while_gradient_net()
    first = dict(WHILE_FEEDS, n=np.array([3.0]))
    second = dict(WHILE_FEEDS, x=np.array([2.0, 0.1]), w=np.array([-0.5, 1.1]),
                  n=np.array([3.0]))
    fewer = dict(second, n=np.array([2.0]))
    rerun_gradients(net, [first, second, fewer], "loss", ["x", "w"])


def test_gradient_through_add_if_rerun_with_the_other_branch_uses_the_new_values():
    feeds = [dict(IF_FEEDS, c=truth(True)),
             dict(IF_FEEDS, x=np.array([2.0, 1.0]), c=truth(False)),
             dict(IF_FEEDS, x=np.array([-0.3, 0.7]), c=truth(True))]
    rerun_gradients(if_gradient_net(), feeds, "loss", ["x", "w"])


def test_gradient_through_while_with_in_place_if_body_rerun_uses_the_new_values():
    second = dict(NESTED_FEEDS, x=np.array([1.9]), w=np.array([1.2]))
    rerun_gradients(while_with_in_place_if_body(), [NESTED_FEEDS, second], "loss",
                    ["x", "w"])


def test_gradient_blobs_through_do_are_named_blob_grad():
    net = net_with_do()
    grads = so.add_gradient_ops(net, ["loss"])
    assert grads["x"] == "x_grad" and grads["w"] == "w_grad"
    assert grads["loss"] == "loss_grad"


def test_gradient_of_while_with_several_body_ops_is_refused():
    loop = so.Net("loop")
    loop.Mul(["x", "w"], ["x"])
    loop.LT(["x", "w"], ["go"])
    net = so.Net("main")
    net.add_external_inputs("x", "w", "go")
    net.add_op("While", ["go", "x", "w"], ["x", "go"], loop_net=loop)
    net.SumElements(["x"], ["loss"])
    with pytest.raises(so.OperatorError, match=re.escape(
            "Gradient While op requires single Do op as a loop body")):
        so.add_gradient_ops(net, ["loss"])


def test_gradient_of_while_with_reuse_workspace_body_is_refused():
    body = so.Net("body")
    body.Mul(["x", "w"], ["x"])
    loop = so.Net("loop")
    loop.add_op("Do", ["x", "w", "scope"], ["x", "scope"], net=body,
                inner_blobs=["x", "w"], outer_blobs_idx=[0, 1], reuse_workspace=True)
    net = so.Net("main")
    net.add_external_inputs("x", "w", "go")
    net.CreateScope([], ["scope"])
    net.add_op("While", ["go", "x", "w", "scope"], ["x", "scope"], loop_net=loop)
    net.SumElements(["x"], ["loss"])
    with pytest.raises(so.OperatorError, match=re.escape(
            "Gradient While op requires Do loop body op without reuse_workspace set")):
        so.add_gradient_ops(net, ["loss"])


def test_if_condition_that_is_not_bool_is_refused():
    # Caffe2 reads the condition with data<bool>(), which refuses another element type.
    ws = workspace(a=[1.0], b=[2.0])
    ws.feed_blob("cond", np.array([1.0]))
    with pytest.raises(so.OperatorError, match=re.escape("bool")):
        ws.run_net_once(if_net())


@pytest.mark.parametrize("cond", [True, False], ids=["then", "else"])
def test_gradient_through_add_if_with_branches_writing_different_blobs(cond):
    """then: y = y * w; else: z = z * x; the unwritten blob passes through each branch."""
    net = outer_with_scope("x", "w", "c")
    net.Copy(["x"], ["y"])
    net.Copy(["w"], ["z"])
    then_net = so.Net("then_branch")
    then_net.Mul(["y", "w"], ["y"])
    else_net = so.Net("else_branch")
    else_net.Mul(["z", "x"], ["z"])
    add_if(net, "c", then_net, else_net)
    net.Mul(["y", "z"], ["yz"])
    net.SumElements(["yz"], ["loss"])
    assert_gradients_match(net, dict(IF_FEEDS, c=truth(cond)), "loss", ["x", "w"])


def nested_while_net():
    """for j < m: (i = i0; for i < n: x = x * w): x w^(m n)."""
    net = outer_with_scope("x", "w", "j", "i0", "m", "n", "one")
    outer_body = so.Net("outer_body")
    outer_body.add_external_inputs("x", "w", "j", "i0", "m", "n", "one")
    outer_body.Copy(["i0"], ["i"])
    inner_body = so.Net("inner_body")
    inner_body.Mul(["x", "w"], ["x"])
    inner_body.Add(["i", "one"], ["i"])
    inner_cond = so.Net("inner_cond")
    inner_cond.LT(["i", "n"], ["inner_go"])
    add_while(outer_body, "inner_go", inner_body, inner_cond)
    outer_body.Add(["j", "one"], ["j"])
    outer_cond = so.Net("outer_cond")
    outer_cond.LT(["j", "m"], ["outer_go"])
    add_while(net, "outer_go", outer_body, outer_cond)
    net.Mul(["x", "x"], ["x2"])
    net.SumElements(["x2"], ["loss"])
    return net


NESTED_WHILE_FEEDS = {"x": np.array([0.7, -0.4]), "w": np.array([1.1, 0.9]),
                      "j": np.array([0.0]), "i0": np.array([0.0]), "m": np.array([2.0]),
                      "n": np.array([3.0]), "one": np.array([1.0])}


def test_nested_while_runs_the_inner_loop_per_outer_iteration():
    ws = run_forward(nested_while_net().netdef, NESTED_WHILE_FEEDS)
    f = NESTED_WHILE_FEEDS
    np.testing.assert_allclose(ws.fetch_blob("x"), f["x"] * f["w"] ** 6)
    assert not ws.has_blob("i")


def test_gradient_through_nested_while_matches_finite_differences():
    assert_gradients_match(nested_while_net(), NESTED_WHILE_FEEDS, "loss", ["x", "w"])


def test_add_if_and_add_while_inside_a_name_scope_scope_every_name_once():
    ws = so.Workspace()
    with so.NameScope("s"):
        net = so.Net("scoped")
        x, limit, one, i, n = net.add_external_inputs("x", "limit", "one", "i", "n")
        net.GT([x, limit], ["big"])
        then_net = so.Net("then")
        then_net.Scale([x], ["half"], scale=0.5)
        then_net.Copy(["half"], [x])
        so.control.add_if(net, "big", then_net)
        net.LT([i, n], ["go"])
        body = so.Net("body")
        body.Add([x, one], [x])
        body.Add([i, one], [i])
        body.LT([i, n], ["go"])
        so.control.add_while(net, "go", body)
    names = {name for op in net.ops for name in op.inputs + op.outputs}
    assert not any(name.startswith("s/s/") for name in names)
    for name, value in {"x": 3.0, "limit": 2.0, "one": 1.0, "i": 0.0, "n": 2.0}.items():
        ws.feed_blob(f"s/{name}", np.array([value]))
    ws.run_net_once(net)
    np.testing.assert_array_equal(ws.fetch_blob("s/x"), [3.5])    # 3 -> 1.5 -> +2
    assert "s/half" not in ws and "half" not in ws
