"""The Do operator: constructor validation (Caffe2's do_op.h checks, in order, same phrases)
and running: push / reuse / pop-gradient, bindings, snapshots, per-workspace net cache,
and docs/caffe2.md's deliberate difference 9 (a failing subnet leaves the stack as it found it)."""

import re

import numpy as np
import pytest

import scopeops as so
import scopeops.ops.math  # noqa: F401  - registers the numeric operators
import scopeops.ops.nn  # noqa: F401

EMPTY = so.NetDef(name="empty_sub")


def outer_workspace():
    """x, y, z float blobs and a scope blob holding a fresh stack."""
    ws = so.Workspace()
    ws.feed_blob("x", np.array([1.0, 2.0]))
    ws.feed_blob("y", np.array([0.0, 0.0]))
    ws.feed_blob("z", np.array([5.0]))
    ws.run_operator_once(so.create_operator("CreateScope", [], ["scope"]))
    return ws


def build_do(ws, inputs, outputs, **args):
    """Build a one-Do net in ``ws`` (OperatorError on a refused definition)."""
    net = so.Net("outer")
    net.add_op("Do", inputs, outputs, **args)
    return ws.create_net(net)


def stack_of(ws, scope="scope"):
    return ws.fetch_blob(scope)


def raises_do(message):
    return pytest.raises(so.OperatorError, match=re.escape(message))


# -- constructor validation, in Caffe2's order --------------------------------------------
# Each definition breaks the named check and every later one, so only the right order
# produces the expected phrase.


def test_do_without_net_is_refused_before_anything_else():
    ws = outer_workspace()
    with raises_do("net must be specified in Do operator"):
        build_do(ws, ["x", "x", "scope"], ["y", "other"], reuse_workspace=True,
                 copy_external_blobs=True, is_gradient_op=True, inner_blobs=["a"])


def test_do_gradient_with_reuse_is_refused_before_copy_with_reuse():
    ws = outer_workspace()
    with raises_do("Gradient Do op requires use of stacked workspaces"):
        build_do(ws, ["x", "x", "scope"], ["y", "other"], net=EMPTY, reuse_workspace=True,
                 copy_external_blobs=True, is_gradient_op=True, inner_blobs=["a"])


def test_do_copy_external_blobs_with_reuse_is_refused_before_binding_lengths():
    ws = outer_workspace()
    with raises_do("Reuse workspace and copy external blobs simultaneously in Do op"):
        build_do(ws, ["x", "x", "scope"], ["y", "other"], net=EMPTY, reuse_workspace=True,
                 copy_external_blobs=True, inner_blobs=["a"])


def test_do_different_inner_outer_lengths_are_refused_before_duplicate_inputs():
    ws = outer_workspace()
    with raises_do("Invalid blob bindings: different inner/outer blobs lengths"):
        build_do(ws, ["x", "x", "scope"], ["y", "other"], net=EMPTY, inner_blobs=["a"],
                 outer_blobs_idx=[0, 1])


def test_do_outer_index_without_inner_name_is_a_length_mismatch():
    ws = outer_workspace()
    with raises_do("Invalid blob bindings: different inner/outer blobs lengths"):
        build_do(ws, ["x", "scope"], ["scope"], net=EMPTY, outer_blobs_idx=[0])


def test_do_duplicate_input_blobs_are_refused_before_workspace_blob_mismatch():
    ws = outer_workspace()
    with raises_do("Duplicate input blobs"):
        build_do(ws, ["x", "x", "scope"], ["y", "y", "other"], net=EMPTY)


def test_do_duplicate_input_blobs_error_names_the_blob():
    ws = outer_workspace()
    with raises_do("Duplicate input blobs: x (a Do binds each outer blob once"):
        build_do(ws, ["x", "z", "x", "scope"], ["scope"], net=EMPTY,
                 inner_blobs=["a", "b", "c"])


def test_do_duplicate_output_blobs_error_names_the_blob():
    ws = outer_workspace()
    with raises_do("Duplicate output blobs: y (a Do binds each outer blob once"):
        build_do(ws, ["x", "scope"], ["y", "y", "scope"], net=EMPTY,
                 inner_blobs=["a", "b", "c"])


def test_do_duplicate_scope_blob_among_inputs_is_a_duplicate_input():
    ws = outer_workspace()
    with raises_do("Duplicate input blobs"):
        build_do(ws, ["scope", "x", "x", "scope"], ["scope"], net=EMPTY)


def test_do_last_input_not_last_output_is_refused_before_duplicate_outputs():
    ws = outer_workspace()
    with raises_do("Expected same input/output workspace blob"):
        build_do(ws, ["x", "scope"], ["y", "y", "other_scope"], net=EMPTY)


def test_do_duplicate_output_blobs_are_refused_before_binding_checks():
    ws = outer_workspace()
    with raises_do("Duplicate output blobs"):
        build_do(ws, ["x", "scope"], ["y", "y", "scope"], net=EMPTY,
                 inner_blobs=["a", "a"], outer_blobs_idx=[0, 1])


def test_do_inner_blob_redefinition_is_refused_before_its_index_is_checked():
    ws = outer_workspace()
    with raises_do("Invalid blob bindings: redefinition of inner blob a"):
        build_do(ws, ["x", "scope"], ["y", "scope"], net=EMPTY,
                 inner_blobs=["a", "a"], outer_blobs_idx=[0, 9])


def test_do_outer_index_out_of_bounds_names_index_inner_and_bounds():
    ws = outer_workspace()
    with raises_do("Invalid blob bindings: outer blob index (5, inner name: a) "
                   "is out of bounds [0, 1]"):
        build_do(ws, ["x", "scope"], ["y", "scope"], net=EMPTY,
                 inner_blobs=["a", "b", "c"], outer_blobs_idx=[5, 0, 0])


def test_do_negative_outer_index_is_out_of_bounds():
    ws = outer_workspace()
    with raises_do("Invalid blob bindings: outer blob index (-1, inner name: a) "
                   "is out of bounds [0, 1]"):
        build_do(ws, ["x", "scope"], ["y", "scope"], net=EMPTY,
                 inner_blobs=["a", "b"], outer_blobs_idx=[-1, 0])


def test_do_binding_with_zero_outer_names_is_out_of_bounds():
    ws = outer_workspace()
    with raises_do("Invalid blob bindings: outer blob index (0, inner name: a) "
                   "is out of bounds [0, "):
        build_do(ws, ["scope"], ["scope"], net=EMPTY, inner_blobs=["a"], outer_blobs_idx=[0])


def test_do_out_of_bounds_is_checked_per_binding_in_order():
    # The first binding reuses nothing; the second is out of bounds; the third would reuse.
    ws = outer_workspace()
    with raises_do("outer blob index (7, inner name: b) is out of bounds [0, 1]"):
        build_do(ws, ["x", "scope"], ["y", "scope"], net=EMPTY,
                 inner_blobs=["a", "b", "c"], outer_blobs_idx=[0, 7, 0])


def test_do_two_indices_naming_one_outer_blob_is_reusage():
    ws = outer_workspace()
    with raises_do("Reusage of outer name: x"):
        build_do(ws, ["x", "z", "scope"], ["scope"], net=EMPTY,
                 inner_blobs=["a", "b"], outer_blobs_idx=[0, 0])


def test_do_binding_a_name_both_as_input_and_output_twice_is_reusage():
    ws = outer_workspace()
    with raises_do("Reusage of outer name: x"):
        build_do(ws, ["x", "scope"], ["x", "scope"], net=EMPTY,
                 inner_blobs=["a", "b"], outer_blobs_idx=[0, 1])


def test_do_reusage_is_refused_before_the_all_used_check():
    ws = outer_workspace()
    with raises_do("Reusage of outer name: x"):
        build_do(ws, ["x", "y", "z", "scope"], ["scope"], net=EMPTY,
                 inner_blobs=["a", "b"], outer_blobs_idx=[0, 0])


def test_do_unbound_outer_name_is_refused():
    ws = outer_workspace()
    with raises_do("Not all outer names are used in blob bindings"):
        build_do(ws, ["x", "z", "scope"], ["scope"], net=EMPTY,
                 inner_blobs=["a"], outer_blobs_idx=[0])


def test_do_unbound_outer_output_is_refused():
    ws = outer_workspace()
    with raises_do("Not all outer names are used in blob bindings"):
        build_do(ws, ["x", "scope"], ["y", "scope"], net=EMPTY,
                 inner_blobs=["a"], outer_blobs_idx=[0])


def test_do_in_place_name_bound_once_is_valid():
    ws = outer_workspace()
    build_do(ws, ["x", "scope"], ["x", "scope"], net=EMPTY,
             inner_blobs=["a"], outer_blobs_idx=[1])


def test_do_without_outer_blobs_idx_binds_inner_name_i_to_outer_blob_i():
    ws = outer_workspace()
    sub = so.Net("sub")
    sub.Mul(["a", "b"], ["c"])
    net = so.Net("outer")
    net.Do(["x", "z", "scope"], ["y", "scope"], net=sub, inner_blobs=["a", "b", "c"])
    ws.create_net(net)
    ws.run_net("outer")
    assert ws.fetch_blob("y").tolist() == [5.0, 10.0]


def test_do_without_outer_blobs_idx_still_counts_its_bindings():
    ws = outer_workspace()
    with raises_do("Not all outer names are used in blob bindings"):
        build_do(ws, ["x", "z", "scope"], ["scope"], net=EMPTY, inner_blobs=["a"])


def test_do_gradient_without_outer_blobs_idx_equals_the_explicit_form():
    def model(**index):
        sub = so.Net("sub")
        sub.Mul(["a", "b"], ["c"])
        sub.Tanh(["c"], ["d"])
        net = so.Net("outer")
        net.Do(["x", "z", "scope"], ["y", "scope"], net=sub, inner_blobs=["a", "b", "d"],
               **index)
        net.SumElements(["y"], ["loss"])
        so.add_gradient_ops(net, ["loss"])
        ws = outer_workspace()
        ws.run_net_once(net)
        return ws.fetch_blob("x_grad"), ws.fetch_blob("z_grad")

    implicit, explicit = model(), model(outer_blobs_idx=[0, 1, 2])
    np.testing.assert_array_equal(implicit[0], explicit[0])
    np.testing.assert_array_equal(implicit[1], explicit[1])
    assert np.abs(implicit[1]).sum() > 0


def test_do_with_zero_outer_names_and_zero_bindings_is_valid():
    ws = outer_workspace()
    build_do(ws, ["scope"], ["scope"], net=EMPTY)
    ws.run_net("outer")
    assert len(stack_of(ws)) == 1


def test_do_validation_errors_are_operator_errors_naming_the_net():
    ws = outer_workspace()
    with pytest.raises(so.OperatorError) as info:
        build_do(ws, ["x", "scope"], ["y", "other"], net=EMPTY)
    assert "Do" in str(info.value) and "outer" in str(info.value)


@pytest.mark.parametrize("inputs, outputs, args", [
    (["x", "scope"], ["fresh", "scope"], {}),                                   # no net
    (["x", "scope"], ["fresh", "fresh_scope"], {"net": EMPTY}),                  # mismatch
    (["x", "scope"], ["fresh", "scope"], {"net": EMPTY, "inner_blobs": ["a"],
                                          "outer_blobs_idx": [0]}),              # unused
    (["x", "scope"], ["fresh", "scope"], {"net": EMPTY, "inner_blobs": ["a", "b"],
                                          "outer_blobs_idx": [0, 9]}),           # bounds
], ids=["net_missing", "scope_mismatch", "not_all_used", "out_of_bounds"])
def test_do_failed_construction_creates_no_outputs(inputs, outputs, args):
    ws = outer_workspace()
    with pytest.raises(so.OperatorError):
        build_do(ws, inputs, outputs, **args)
    assert not ws.has_blob("fresh")
    assert not ws.has_blob("fresh_scope")


def test_do_without_existing_scope_blob_fails_to_build():
    ws = so.Workspace()
    with raises_do("Encountered a non-existing input blob: scope"):
        build_do(ws, ["scope"], ["scope"], net=EMPTY)


def test_do_accepts_a_net_builder_as_its_net():
    ws = outer_workspace()
    sub = so.Net("from_builder")
    sub.Scale(["a"], ["b"], scale=2.0)
    build_do(ws, ["x", "scope"], ["y", "scope"], net=sub, inner_blobs=["a", "b"],
             outer_blobs_idx=[0, 1])
    ws.run_net("outer")
    np.testing.assert_array_equal(ws.fetch_blob("y"), [2.0, 4.0])


# -- running: bindings ------------------------------------------------------------------


def local_then_bound_subnet(name="sub"):
    """t = 2 * a (local); b = t + a (bound): b = 3 * a."""
    sub = so.Net(name)
    sub.Scale(["a"], ["t"], scale=2.0)
    sub.Add(["t", "a"], ["b"])
    return sub


def forward_do(ws, subnet=None, net_name="outer", **extra):
    net = so.Net(net_name)
    net.add_op("Do", ["x", "scope"], ["y", "scope"], net=subnet or local_then_bound_subnet(),
               inner_blobs=["a", "b"], outer_blobs_idx=[0, 1], **extra)
    return ws.create_net(net)


def test_do_bound_inner_names_read_and_write_outer_blobs():
    ws = outer_workspace()
    forward_do(ws)
    ws.run_net("outer")
    np.testing.assert_array_equal(ws.fetch_blob("y"), [3.0, 6.0])


def test_do_unbound_names_stay_local_to_the_child_workspace():
    ws = outer_workspace()
    forward_do(ws)
    ws.run_net("outer")
    assert not ws.has_blob("t")
    child = stack_of(ws).top
    assert "t" in child.local_blobs()
    np.testing.assert_array_equal(child.fetch_blob("t"), [2.0, 4.0])


def test_do_inner_names_are_not_visible_outside():
    ws = outer_workspace()
    forward_do(ws)
    ws.run_net("outer")
    assert not ws.has_blob("a") and not ws.has_blob("b")


def test_do_subnet_cannot_read_unbound_outer_blobs():
    ws = outer_workspace()
    sub = so.Net("peeks")
    sub.Add(["a", "z"], ["b"])
    forward_do(ws, sub)
    with pytest.raises(so.OperatorError,
                       match=re.escape("Encountered a non-existing input blob: z")):
        ws.run_net("outer")


def test_do_sees_outer_value_changes_between_runs():
    ws = outer_workspace()
    forward_do(ws)
    ws.run_net("outer")
    ws.feed_blob("x", np.array([10.0, 20.0]))
    ws.run_net("outer")
    np.testing.assert_array_equal(ws.fetch_blob("y"), [30.0, 60.0])


# -- running: the stack -------------------------------------------------------------------


def test_do_run_pushes_one_workspace():
    ws = outer_workspace()
    forward_do(ws)
    ws.run_net("outer")
    assert len(stack_of(ws)) == 1


def test_do_run_twice_without_create_scope_grows_the_stack_to_two():
    ws = outer_workspace()
    forward_do(ws)
    ws.run_net("outer")
    ws.run_net("outer")
    stack = stack_of(ws)
    assert len(stack) == 2
    first, second = stack.workspaces()
    assert first is not second


def test_create_scope_resets_the_do_stack_keeping_capacity():
    ws = outer_workspace()
    forward_do(ws)
    ws.run_net("outer")
    ws.run_net("outer")
    ws.run_operator_once(so.create_operator("CreateScope", [], ["scope"]))
    stack = stack_of(ws)
    assert len(stack) == 0
    assert stack.capacity == 2


def test_do_after_create_scope_reuses_the_first_child_workspace():
    ws = outer_workspace()
    forward_do(ws)
    ws.run_net("outer")
    first = stack_of(ws).workspaces()[0]
    ws.run_operator_once(so.create_operator("CreateScope", [], ["scope"]))
    ws.run_net("outer")
    stack = stack_of(ws)
    assert len(stack) == 1
    assert stack.top is first
    assert stack.workspaces()[0] is first


def test_net_with_create_scope_before_do_keeps_the_stack_at_one():
    ws = outer_workspace()
    net = so.Net("scoped")
    net.CreateScope([], ["scope"])
    net.add_op("Do", ["x", "scope"], ["y", "scope"], net=local_then_bound_subnet(),
               inner_blobs=["a", "b"], outer_blobs_idx=[0, 1])
    ws.create_net(net)
    for _ in range(3):
        ws.run_net("scoped")
    assert len(stack_of(ws)) == 1
    assert stack_of(ws).capacity == 1


def test_do_reuse_workspace_reuses_the_top_instead_of_pushing():
    ws = outer_workspace()
    forward_do(ws, reuse_workspace=True)
    ws.run_net("outer")
    stack = stack_of(ws)
    top = stack.top
    ws.run_net("outer")
    assert len(stack) == 1
    assert stack.top is top
    np.testing.assert_array_equal(ws.fetch_blob("y"), [3.0, 6.0])


def test_do_reuse_workspace_on_an_empty_stack_pushes():
    ws = outer_workspace()
    forward_do(ws, reuse_workspace=True)
    assert stack_of(ws).empty()
    ws.run_net("outer")
    assert len(stack_of(ws)) == 1


def test_do_reuse_workspace_keeps_locals_of_the_previous_run():
    ws = outer_workspace()
    sub = so.Net("counter")
    sub.Add(["acc", "a"], ["acc"])
    sub.Copy(["acc"], ["b"])
    ws.feed_blob("x", np.array([1.0]))
    stack = stack_of(ws)
    child = stack.push_forward_workspace(ws, {"a": "x", "b": "y"})
    child.feed_blob("acc", np.array([0.0]))
    forward_do(ws, sub, reuse_workspace=True)
    ws.run_net("outer")
    ws.run_net("outer")
    np.testing.assert_array_equal(ws.fetch_blob("y"), [2.0])
    assert stack.top is child


def test_do_without_create_scope_creates_a_stack_in_an_empty_scope_blob():
    ws = so.Workspace()
    ws.feed_blob("x", np.array([1.0, 2.0]))
    ws.feed_blob("y", np.array([0.0, 0.0]))
    ws.create_blob("scope")
    forward_do(ws)
    ws.run_net("outer")
    stack = ws.fetch_blob("scope")
    assert isinstance(stack, so.WorkspaceStack)
    assert len(stack) == 1
    np.testing.assert_array_equal(ws.fetch_blob("y"), [3.0, 6.0])


# -- running: copy_external_blobs ---------------------------------------------------------


def test_do_copy_external_blobs_snapshots_bound_tensors_after_the_run():
    ws = outer_workspace()
    forward_do(ws, copy_external_blobs=True)
    ws.run_net("outer")
    child = stack_of(ws).top
    assert {"a", "b"} <= set(child.local_blobs())
    np.testing.assert_array_equal(child.fetch_blob("a"), [1.0, 2.0])
    np.testing.assert_array_equal(child.fetch_blob("b"), [3.0, 6.0])


def test_do_copy_external_blobs_snapshot_ignores_later_outer_changes():
    ws = outer_workspace()
    forward_do(ws, copy_external_blobs=True)
    ws.run_net("outer")
    child = stack_of(ws).top
    ws.feed_blob("x", np.array([100.0, 200.0]))
    ws.fetch_blob("y")[...] = -1.0
    np.testing.assert_array_equal(child.fetch_blob("a"), [1.0, 2.0])
    np.testing.assert_array_equal(child.fetch_blob("b"), [3.0, 6.0])


def test_do_copy_external_blobs_snapshot_is_not_shared_memory():
    ws = outer_workspace()
    forward_do(ws, copy_external_blobs=True)
    ws.run_net("outer")
    child = stack_of(ws).top
    child.fetch_blob("b")[...] = 42.0
    np.testing.assert_array_equal(ws.fetch_blob("y"), [3.0, 6.0])


def test_do_reused_snapshot_workspace_is_rebound_to_the_outer_blobs():
    ws = outer_workspace()
    net = so.Net("scoped")
    net.CreateScope([], ["scope"])
    net.add_op("Do", ["x", "scope"], ["y", "scope"], net=local_then_bound_subnet(),
               inner_blobs=["a", "b"], outer_blobs_idx=[0, 1], copy_external_blobs=True)
    ws.create_net(net)
    ws.run_net("scoped")
    ws.feed_blob("x", np.array([10.0, 20.0]))
    ws.run_net("scoped")
    np.testing.assert_array_equal(ws.fetch_blob("y"), [30.0, 60.0])
    np.testing.assert_array_equal(stack_of(ws).top.fetch_blob("a"), [10.0, 20.0])


# -- running: forward / gradient pairing --------------------------------------------------


def gradient_probe_do(ws, net_name="grad_outer"):
    """A gradient Do copying the forward workspace's local t out to outer 'seen'."""
    sub = so.Net("sub_grad")
    sub.Copy(["t"], ["seen_inner"])
    net = so.Net(net_name)
    net.add_op("Do", ["scope"], ["seen", "scope"], net=sub, inner_blobs=["seen_inner"],
               outer_blobs_idx=[0], is_gradient_op=True)
    return ws.create_net(net)


def test_gradient_do_pops_the_workspace_its_forward_do_pushed():
    ws = outer_workspace()
    forward_do(ws)
    gradient_probe_do(ws)
    ws.run_net("outer")
    stack = stack_of(ws)
    pushed = stack.top
    ws.run_net("grad_outer")
    assert stack.empty()
    assert stack.workspaces()[0] is pushed


def test_gradient_do_sees_the_forward_local_blobs():
    ws = outer_workspace()
    forward_do(ws)
    gradient_probe_do(ws)
    ws.run_net("outer")
    ws.run_net("grad_outer")
    np.testing.assert_array_equal(ws.fetch_blob("seen"), [2.0, 4.0])


def test_gradient_dos_pop_in_lifo_order():
    ws = outer_workspace()
    forward_do(ws)
    gradient_probe_do(ws)
    ws.run_net("outer")
    ws.feed_blob("x", np.array([10.0, 20.0]))
    ws.run_net("outer")
    ws.run_net("grad_outer")
    np.testing.assert_array_equal(ws.fetch_blob("seen"), [20.0, 40.0])
    ws.run_net("grad_outer")
    np.testing.assert_array_equal(ws.fetch_blob("seen"), [2.0, 4.0])
    assert stack_of(ws).empty()


def test_gradient_do_sees_the_forward_snapshot_not_the_current_outer_value():
    ws = outer_workspace()
    forward_do(ws, copy_external_blobs=True)
    sub = so.Net("sub_grad")
    sub.Copy(["a"], ["seen_inner"])
    net = so.Net("grad_outer")
    # The gradient Do binds 'a' to x too; the forward snapshot of a wins (skip defined).
    net.add_op("Do", ["x", "scope"], ["seen", "scope"], net=sub,
               inner_blobs=["a", "seen_inner"], outer_blobs_idx=[0, 1], is_gradient_op=True)
    ws.create_net(net)
    ws.run_net("outer")
    ws.feed_blob("x", np.array([-5.0, -5.0]))
    ws.run_net("grad_outer")
    np.testing.assert_array_equal(ws.fetch_blob("seen"), [1.0, 2.0])


def test_forward_and_gradient_subnets_coexist_in_the_child_workspace():
    ws = outer_workspace()
    forward_do(ws)
    gradient_probe_do(ws)
    ws.run_net("outer")
    child = stack_of(ws).top
    ws.run_net("grad_outer")
    assert child.get_net("sub") is not None
    assert child.get_net("sub_grad") is not None


def test_gradient_do_on_an_empty_stack_fails_to_initialise_its_workspace():
    ws = outer_workspace()
    ws.feed_blob("t", np.zeros(1))
    gradient_probe_do(ws)
    with raises_do("Failed to initialize Do op workspace"):
        ws.run_net("grad_outer")


def test_gradient_do_on_an_empty_stack_leaves_it_empty():
    ws = outer_workspace()
    gradient_probe_do(ws)
    with pytest.raises(so.OperatorError):
        ws.run_net("grad_outer")
    assert stack_of(ws).empty()


# -- running: the subnet cache --------------------------------------------------------------


def test_do_subnet_is_built_once_per_child_workspace_and_cached():
    ws = outer_workspace()
    forward_do(ws)
    ws.run_net("outer")
    child = stack_of(ws).top
    executor = child.get_net("sub")
    assert executor is not None
    ws.run_operator_once(so.create_operator("CreateScope", [], ["scope"]))
    ws.run_net("outer")
    assert stack_of(ws).top is child
    assert child.get_net("sub") is executor


def test_do_subnet_cached_under_reuse_workspace_is_the_same_executor():
    ws = outer_workspace()
    forward_do(ws, reuse_workspace=True)
    ws.run_net("outer")
    executor = stack_of(ws).top.get_net("sub")
    ws.run_net("outer")
    assert stack_of(ws).top.get_net("sub") is executor


def test_do_subnet_is_built_separately_in_each_pushed_workspace():
    ws = outer_workspace()
    forward_do(ws)
    ws.run_net("outer")
    ws.run_net("outer")
    first, second = stack_of(ws).workspaces()
    assert first.get_net("sub") is not None and second.get_net("sub") is not None
    assert first.get_net("sub") is not second.get_net("sub")
    assert ws.get_net("sub") is None


# -- a failing subnet (docs/caffe2.md difference 9) ---------------------------------------


def failing_subnet():
    """Adds a to z2; fails when the bound shapes do not broadcast."""
    sub = so.Net("fails")
    sub.Scale(["a"], ["t"], scale=1.0)
    sub.Add(["t", "w"], ["b"])
    return sub


def failing_do(ws):
    net = so.Net("outer")
    net.add_op("Do", ["x", "z", "scope"], ["y", "scope"], net=failing_subnet(),
               inner_blobs=["a", "w", "b"], outer_blobs_idx=[0, 1, 2])
    return ws.create_net(net)


def test_failing_do_on_empty_stack_leaves_it_empty():
    ws = outer_workspace()
    ws.feed_blob("z", np.ones(3))
    failing_do(ws)
    with pytest.raises(so.OperatorError):
        ws.run_net("outer")
    assert stack_of(ws).empty()


def test_failing_do_leaves_the_stack_length_and_top_as_before():
    ws = outer_workspace()
    failing_do(ws)
    ws.run_net("outer")                       # z = [5.]: broadcasts fine
    stack = stack_of(ws)
    top = stack.top
    ws.feed_blob("z", np.ones(3))             # (2,) + (3,) fails
    with pytest.raises(so.OperatorError):
        ws.run_net("outer")
    assert len(stack) == 1
    assert stack.top is top


def test_failing_do_raises_operator_error_chained_to_the_cause():
    ws = outer_workspace()
    ws.feed_blob("z", np.ones(3))
    failing_do(ws)
    with pytest.raises(so.OperatorError, match=re.escape("Do")) as info:
        ws.run_net("outer")
    assert info.value.__cause__ is not None
    assert "outer" in str(info.value)


def test_do_runs_normally_after_a_failed_run():
    ws = outer_workspace()
    ws.feed_blob("z", np.ones(3))
    failing_do(ws)
    with pytest.raises(so.OperatorError):
        ws.run_net("outer")
    ws.feed_blob("z", np.array([1.0]))
    ws.run_net("outer")
    np.testing.assert_array_equal(ws.fetch_blob("y"), [2.0, 3.0])
    assert len(stack_of(ws)) == 1


def test_failing_gradient_do_leaves_the_stack_as_before():
    ws = outer_workspace()
    forward_do(ws)
    ws.run_net("outer")
    stack = stack_of(ws)
    top = stack.top
    sub = so.Net("sub_grad_fails")
    sub.Add(["t", "w"], ["seen_inner"])      # t is (2,), w is (3,): fails
    net = so.Net("grad_outer")
    net.add_op("Do", ["w_outer", "scope"], ["seen", "scope"], net=sub,
               inner_blobs=["w", "seen_inner"], outer_blobs_idx=[0, 1], is_gradient_op=True)
    ws.feed_blob("w_outer", np.ones(3))
    ws.create_net(net)
    with pytest.raises(so.OperatorError):
        ws.run_net("grad_outer")
    assert len(stack) == 1
    assert stack.top is top


# -- difference 10 through a Do: never a removed outer blob -----------------------------------


def scoped_forward_net(**extra):
    net = so.Net("scoped")
    net.CreateScope([], ["scope"])
    net.add_op("Do", ["x", "scope"], ["y", "scope"], net=local_then_bound_subnet(),
               inner_blobs=["a", "b"], outer_blobs_idx=[0, 1], **extra)
    return net


def test_do_reusing_a_workspace_never_reads_a_removed_outer_blob():
    ws = outer_workspace()
    ws.create_net(scoped_forward_net())
    ws.run_net("scoped")
    ws.remove_blob("x")
    with pytest.raises(so.OperatorError):
        ws.run_net("scoped")
    np.testing.assert_array_equal(ws.fetch_blob("y"), [3.0, 6.0])


def test_do_reusing_a_workspace_reads_an_outer_blob_fed_again_after_removal():
    ws = outer_workspace()
    ws.create_net(scoped_forward_net())
    ws.run_net("scoped")
    ws.remove_blob("x")
    ws.feed_blob("x", np.array([-1.0, 4.0]))
    ws.run_net("scoped")
    np.testing.assert_array_equal(ws.fetch_blob("y"), [-3.0, 12.0])


def test_do_with_snapshots_reads_an_outer_blob_fed_again_after_removal():
    ws = outer_workspace()
    ws.create_net(scoped_forward_net(copy_external_blobs=True))
    ws.run_net("scoped")
    ws.remove_blob("x")
    ws.feed_blob("x", np.array([-1.0, 4.0]))
    ws.run_net("scoped")
    np.testing.assert_array_equal(ws.fetch_blob("y"), [-3.0, 12.0])
    np.testing.assert_array_equal(stack_of(ws).top.fetch_blob("a"), [-1.0, 4.0])


def test_failure_inside_do_names_the_inner_op_and_subnet_down_the_cause_chain():
    ws = outer_workspace()
    ws.feed_blob("z", np.ones(3))
    failing_do(ws)
    with pytest.raises(so.OperatorError) as info:
        ws.run_net("outer")
    chain, error = [], info.value
    while error is not None:
        chain.append(error)
        error = error.__cause__
    text = " | ".join(str(e) for e in chain)
    assert "Add" in text and "fails" in text
    assert not isinstance(chain[-1], so.OperatorError)
