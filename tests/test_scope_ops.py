"""CreateScope and HasScope (Caffe2's create_scope_op; docs/control-flow.md)."""

import re

import numpy as np
import pytest

import scopeops as so
import scopeops.ops.math  # noqa: F401  - registers the numeric operators
import scopeops.ops.nn  # noqa: F401
from scopeops.ops import SHOULD_NOT_DO_GRADIENT


def create_scope(ws, name="scope"):
    ws.run_operator_once(so.create_operator("CreateScope", [], [name]))
    return ws.fetch_blob(name)


def has_scope(ws, scope="scope", out="has"):
    ws.run_operator_once(so.create_operator("HasScope", [scope], [out]))
    return ws.fetch_blob(out)


# -- CreateScope ---------------------------------------------------------------------------


def test_create_scope_stores_an_empty_workspace_stack_in_a_new_blob():
    ws = so.Workspace()
    stack = create_scope(ws)
    assert isinstance(stack, so.WorkspaceStack)
    assert stack.empty()
    assert len(stack) == 0


def test_create_scope_keeps_an_existing_stack_object():
    ws = so.Workspace()
    first = create_scope(ws)
    second = create_scope(ws)
    assert second is first


def test_create_scope_clears_an_existing_stack_keeping_its_capacity():
    ws = so.Workspace()
    stack = create_scope(ws)
    pushed = [stack.push_forward_workspace(ws), stack.push_forward_workspace(ws)]
    assert len(stack) == 2
    create_scope(ws)
    assert ws.fetch_blob("scope") is stack
    assert stack.empty()
    assert len(stack) == 0
    assert stack.capacity == 2
    kept = stack.workspaces()
    assert len(kept) == 2 and all(a is b for a, b in zip(kept, pushed, strict=True))


def test_create_scope_cleared_stack_reuses_its_workspaces_in_order():
    ws = so.Workspace()
    stack = create_scope(ws)
    first = stack.push_forward_workspace(ws)
    stack.push_forward_workspace(ws)
    create_scope(ws)
    assert stack.push_forward_workspace(ws) is first


def test_create_scope_replaces_a_non_stack_value():
    ws = so.Workspace()
    ws.feed_blob("scope", np.zeros(3))
    stack = create_scope(ws)
    assert isinstance(stack, so.WorkspaceStack)
    assert stack.empty()


def test_create_scope_fills_an_existing_empty_blob():
    ws = so.Workspace()
    ws.create_blob("scope")
    assert isinstance(create_scope(ws), so.WorkspaceStack)


def test_create_scope_in_a_cached_net_clears_each_run():
    ws = so.Workspace()
    net = so.Net("scoper")
    net.CreateScope([], ["scope"])
    ws.create_net(net)
    ws.run_net("scoper")
    stack = ws.fetch_blob("scope")
    stack.push_forward_workspace(ws)
    ws.run_net("scoper")
    assert ws.fetch_blob("scope") is stack
    assert stack.empty()


def test_create_scope_refuses_inputs_when_built():
    ws = so.Workspace()
    ws.feed_blob("x", np.zeros(1))
    with pytest.raises(so.OperatorError, match=re.escape("CreateScope")):
        ws.run_operator_once(so.create_operator("CreateScope", ["x"], ["scope"]))


# -- HasScope ------------------------------------------------------------------------------


def test_has_scope_is_false_on_an_empty_stack():
    ws = so.Workspace()
    create_scope(ws)
    out = has_scope(ws)
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.bool_
    assert out.shape == (1,)
    assert not out[0]


def test_has_scope_is_true_on_a_non_empty_stack():
    ws = so.Workspace()
    create_scope(ws).push_forward_workspace(ws)
    out = has_scope(ws)
    assert out.dtype == np.bool_ and out.shape == (1,)
    assert out[0]


def test_has_scope_follows_pushes_and_pops():
    ws = so.Workspace()
    stack = create_scope(ws)
    net = so.Net("probe")
    net.HasScope(["scope"], ["has"])
    ws.create_net(net)
    seen = []
    for action in ("push", "push", "pop", "pop"):
        if action == "push":
            stack.push_forward_workspace(ws)
        else:
            stack.pop_gradient_workspace(ws)
        ws.run_net("probe")
        seen.append(bool(ws.fetch_blob("has")[0]))
    assert seen == [True, True, True, False]


def test_has_scope_on_a_non_stack_blob_fails_with_blob_type_error_as_cause():
    ws = so.Workspace()
    ws.feed_blob("scope", np.zeros(1))
    with pytest.raises(so.OperatorError, match=re.escape("HasScope")) as info:
        has_scope(ws)
    assert isinstance(info.value.__cause__, so.BlobTypeError)
    assert "WorkspaceStack" in str(info.value.__cause__)


def test_has_scope_operator_run_directly_raises_blob_type_error():
    ws = so.Workspace()
    ws.feed_blob("scope", np.zeros(1))
    executor = ws.create_net(_has_scope_net())
    op = executor.operators[0]
    op.prepare()
    with pytest.raises(so.BlobTypeError, match=re.escape("WorkspaceStack")):
        op.run()


def test_has_scope_on_an_empty_blob_raises():
    ws = so.Workspace()
    ws.create_blob("scope")
    with pytest.raises(so.OperatorError) as info:
        has_scope(ws)
    assert isinstance(info.value.__cause__, so.BlobTypeError)


def test_has_scope_on_a_missing_blob_fails_to_build():
    with pytest.raises(so.OperatorError,
                       match=re.escape("Encountered a non-existing input blob: scope")):
        has_scope(so.Workspace())


# -- gradient policy ------------------------------------------------------------------------


def test_create_scope_and_has_scope_are_should_not_do_gradient():
    assert so.ops.schema("CreateScope").gradient is SHOULD_NOT_DO_GRADIENT
    assert so.ops.schema("HasScope").gradient is SHOULD_NOT_DO_GRADIENT


def test_gradient_through_has_scope_raises_operator_error():
    net = so.Net("hs_grad")
    net.CreateScope([], ["scope"])
    net.HasScope(["scope"], ["has"])
    net.Cast(["has"], ["has_f"], to="float32")
    net.SumElements(["has_f"], ["loss"])
    with pytest.raises(so.OperatorError, match=re.escape("HasScope")):
        so.add_gradient_ops(net, ["loss"])


def test_gradient_through_create_scope_raises_operator_error():
    net = so.Net("cs_grad")
    net.CreateScope([], ["scope"])
    with pytest.raises(so.OperatorError, match=re.escape("CreateScope")):
        so.add_gradient_ops(net, ["scope"])


def test_scope_ops_not_on_the_loss_path_do_not_block_gradients():
    net = so.Net("side")
    net.CreateScope([], ["scope"])
    net.HasScope(["scope"], ["has"])
    net.Mul(["x", "x"], ["y"])
    net.SumElements(["y"], ["loss"])
    grads = so.add_gradient_ops(net, ["loss"])
    assert "x" in grads
    assert "scope" not in grads and "has" not in grads


# -- the operator's workspace accessor --------------------------------------------------


def _has_scope_net():
    net = so.Net("hs")
    net.HasScope(["scope"], ["has"])
    return net


def test_has_scope_op_workspace_is_the_workspace_it_was_built_in():
    ws = so.Workspace()
    create_scope(ws)
    op = ws.create_net(_has_scope_net()).operators[0]
    assert isinstance(op, so.ops.HasScopeOp)
    assert op.workspace is ws


def test_has_scope_op_inside_a_do_sees_the_child_workspace():
    ws = so.Workspace()
    create_scope(ws)
    create_scope(ws, "probe_scope")
    sub = so.Net("inner_probe")
    sub.HasScope(["ps"], ["has_inner"])
    ws.run_operator_once(so.create_operator(
        "Do", ["probe_scope", "scope"], ["scope"], net=sub, inner_blobs=["ps"],
        outer_blobs_idx=[0]))
    child = ws.fetch_blob("scope").top
    op = child.get_net("inner_probe").operators[0]
    assert isinstance(op, so.ops.HasScopeOp)
    assert op.workspace is child
    assert op.workspace is not ws


def test_has_scope_op_definition_is_its_operator_def():
    ws = so.Workspace()
    create_scope(ws)
    net = _has_scope_net()
    op = ws.create_net(net).operators[0]
    assert op.definition == net.netdef.ops[0]
