"""WorkspaceStack: forward pushes, gradient pops, dormant workspace reuse, debug checks."""

import re
import weakref

import numpy as np
import pytest
from support import run_in_small_stack

import scopeops as so

# Subprocesses import the very scopeops this test run imported (the source tree built in
# place, or an installed copy), never whatever happens to sit in the current directory.


def parent_with(**values):
    ws = so.Workspace()
    for name, value in values.items():
        ws.feed_blob(name, value)
    return ws


def stack_state(stack):
    return (len(stack), stack.capacity, stack.top, stack.empty())


def ws_state(ws):
    return (
        sorted(ws.local_blobs()),
        dict(ws.forwarded_blobs()),
        {name: ws.get_blob(name) for name in ws.local_blobs()},
    )


# --- a new stack ----------------------------------------------------------------------------


def test_new_stack_is_empty():
    stack = so.WorkspaceStack()
    assert stack.empty()
    assert len(stack) == 0
    assert stack.capacity == 0
    assert stack.top is None


def test_new_stack_debug_is_off_by_default():
    assert so.WorkspaceStack().debug is False


def test_stack_debug_can_be_set_at_construction_and_later():
    stack = so.WorkspaceStack(debug=True)
    assert stack.debug is True
    stack.debug = False
    assert stack.debug is False


def test_check_stack_passes_on_a_consistent_stack():
    stack = so.WorkspaceStack()
    parent = so.Workspace()
    stack.check_stack()
    stack.push_forward_workspace(parent)
    stack.push_forward_workspace(parent)
    stack.pop_gradient_workspace(parent)
    assert stack.check_stack() is None


# --- push -----------------------------------------------------------------------------------


def test_push_returns_a_workspace_and_makes_it_the_top():
    stack = so.WorkspaceStack()
    child = stack.push_forward_workspace(so.Workspace())
    assert isinstance(child, so.Workspace)
    assert stack.top is child
    assert len(stack) == 1
    assert stack.capacity == 1
    assert not stack.empty()


def test_push_child_sees_only_bound_names():
    parent = parent_with(outer_x=1, other=2)
    child = so.WorkspaceStack().push_forward_workspace(parent, {"x": "outer_x"})
    assert child.get_blob("x") is parent.get_blob("outer_x")
    assert not child.has_blob("other")
    assert child.shared is None


def test_push_without_bindings_sees_nothing_from_parent():
    child = so.WorkspaceStack().push_forward_workspace(parent_with(x=1))
    assert child.blobs() == []


def test_push_accepts_bindings_as_pairs():
    parent = parent_with(outer_x=1)
    child = so.WorkspaceStack().push_forward_workspace(parent, [("x", "outer_x")])
    assert child.fetch_blob("x") == 1


def test_push_twice_stacks_two_distinct_workspaces():
    stack = so.WorkspaceStack()
    parent = so.Workspace()
    first = stack.push_forward_workspace(parent)
    second = stack.push_forward_workspace(parent)
    assert first is not second
    assert stack.top is second
    assert len(stack) == 2
    assert stack.capacity == 2


def test_push_with_none_parent_raises_binding_error_without_change():
    stack = so.WorkspaceStack()
    with pytest.raises(so.BindingError, match=re.escape("Parent workspace must be specified")):
        stack.push_forward_workspace(None, {})
    assert stack_state(stack) == (0, 0, None, True)


def test_push_with_missing_outer_raises_binding_error_without_change():
    stack = so.WorkspaceStack()
    with pytest.raises(
        so.BindingError, match=re.escape("Invalid parent workspace blob: missing_outer")
    ):
        stack.push_forward_workspace(parent_with(x=1), {"x": "missing_outer"})
    assert stack_state(stack) == (0, 0, None, True)


@pytest.mark.parametrize(
    "bindings, error",
    [({"x": 5}, TypeError), ({"": "x"}, ValueError), (5, TypeError),
     ([("x",)], (TypeError, ValueError))],
    ids=["outer-int", "inner-empty", "not-iterable", "one-tuple"],
)
def test_push_with_malformed_bindings_raises_without_change(bindings, error):
    stack = so.WorkspaceStack()
    parent = parent_with(x=1)
    stack.push_forward_workspace(parent)
    before = stack_state(stack)
    with pytest.raises(error):
        stack.push_forward_workspace(parent, bindings)
    assert stack_state(stack) == before


def test_push_with_missing_outer_onto_dormant_workspace_raises_without_change():
    stack = so.WorkspaceStack()
    parent = parent_with(x=1)
    dormant = stack.push_forward_workspace(parent, {"x": "x"})
    stack.pop_gradient_workspace(parent)
    before, dormant_before = stack_state(stack), ws_state(dormant)
    with pytest.raises(so.BindingError, match=re.escape("Invalid parent workspace blob")):
        stack.push_forward_workspace(parent, {"x": "missing_outer"})
    assert stack_state(stack) == before
    assert ws_state(dormant) == dormant_before


# --- pop ------------------------------------------------------------------------------------


def test_pop_on_empty_stack_returns_none():
    stack = so.WorkspaceStack()
    assert stack.pop_gradient_workspace(so.Workspace()) is None
    assert stack_state(stack) == (0, 0, None, True)


def test_pop_returns_the_top_and_moves_the_top_down():
    stack = so.WorkspaceStack()
    parent = so.Workspace()
    first = stack.push_forward_workspace(parent)
    second = stack.push_forward_workspace(parent)
    assert stack.pop_gradient_workspace(parent) is second
    assert stack.top is first
    assert len(stack) == 1


def test_pop_keeps_the_workspace_allocated():
    stack = so.WorkspaceStack()
    parent = so.Workspace()
    stack.push_forward_workspace(parent)
    stack.pop_gradient_workspace(parent)
    assert stack.empty()
    assert stack.top is None
    assert stack.capacity == 1


def test_pop_adds_gradient_bindings_to_the_popped_workspace():
    parent = parent_with(outer_x=1, outer_grad=2)
    stack = so.WorkspaceStack()
    stack.push_forward_workspace(parent, {"x": "outer_x"})
    popped = stack.pop_gradient_workspace(parent, {"x_grad": "outer_grad"})
    assert popped.get_blob("x_grad") is parent.get_blob("outer_grad")
    assert popped.get_blob("x") is parent.get_blob("outer_x")


def test_pop_gradient_binding_skips_a_forward_local_of_the_same_name():
    parent = parent_with(outer_saved=0)
    stack = so.WorkspaceStack()
    child = stack.push_forward_workspace(parent)
    child.feed_blob("saved", "forward value")
    popped = stack.pop_gradient_workspace(parent, {"saved": "outer_saved"})
    assert popped.fetch_blob("saved") == "forward value"
    assert "saved" not in popped.forwarded_blobs()


def test_pop_gradient_binding_identical_to_forward_binding_is_accepted():
    parent = parent_with(outer_x=1)
    stack = so.WorkspaceStack()
    stack.push_forward_workspace(parent, {"x": "outer_x"})
    popped = stack.pop_gradient_workspace(parent, {"x": "outer_x"})
    assert popped.forwarded_blobs() == {"x": (parent, "outer_x")}


def test_pop_gradient_binding_conflicting_with_forward_binding_raises_without_change():
    parent = parent_with(outer_x=1, outer_y=2)
    stack = so.WorkspaceStack()
    child = stack.push_forward_workspace(parent, {"x": "outer_x"})
    before, child_before = stack_state(stack), ws_state(child)
    with pytest.raises(so.BindingError, match=re.escape("Redefinition of blob x")):
        stack.pop_gradient_workspace(parent, {"x": "outer_y"})
    assert stack_state(stack) == before
    assert ws_state(child) == child_before


def test_pop_gradient_binding_with_missing_outer_raises_without_change():
    parent = parent_with(outer_x=1)
    stack = so.WorkspaceStack()
    child = stack.push_forward_workspace(parent)
    before, child_before = stack_state(stack), ws_state(child)
    with pytest.raises(so.BindingError, match=re.escape("Invalid parent workspace blob")):
        stack.pop_gradient_workspace(parent, {"g": "ok_missing"})
    assert stack_state(stack) == before
    assert ws_state(child) == child_before


def test_pop_is_atomic_when_one_gradient_binding_fails():
    parent = parent_with(outer_g=1)
    stack = so.WorkspaceStack()
    child = stack.push_forward_workspace(parent)
    before, child_before = stack_state(stack), ws_state(child)
    with pytest.raises(so.BindingError):
        stack.pop_gradient_workspace(parent, [("g", "outer_g"), ("h", "missing_outer")])
    assert stack_state(stack) == before
    assert ws_state(child) == child_before


# --- dormant reuse --------------------------------------------------------------------------


def test_push_after_pop_reuses_the_popped_workspace():
    stack = so.WorkspaceStack()
    parent = so.Workspace()
    first = stack.push_forward_workspace(parent)
    stack.pop_gradient_workspace(parent)
    assert stack.push_forward_workspace(parent) is first
    assert stack.capacity == 1


def test_reused_workspace_keeps_its_unbound_local_blobs():
    stack = so.WorkspaceStack()
    parent = parent_with(outer_x=1)
    child = stack.push_forward_workspace(parent, {"x": "outer_x"})
    child.feed_blob("scratch", np.arange(3.0))
    scratch = child.get_blob("scratch")
    stack.pop_gradient_workspace(parent)
    reused = stack.push_forward_workspace(parent, {"x": "outer_x"})
    assert reused.get_blob("scratch") is scratch
    np.testing.assert_array_equal(reused.fetch_blob("scratch"), [0.0, 1.0, 2.0])


def test_reuse_with_same_bindings_keeps_them():
    stack = so.WorkspaceStack()
    parent = parent_with(outer_x=1)
    stack.push_forward_workspace(parent, {"x": "outer_x"})
    stack.pop_gradient_workspace(parent)
    reused = stack.push_forward_workspace(parent, {"x": "outer_x"})
    assert reused.forwarded_blobs() == {"x": (parent, "outer_x")}


def test_reuse_with_same_bindings_removes_a_local_copy_of_a_bound_name():
    stack = so.WorkspaceStack()
    parent = parent_with(outer_x=np.arange(3.0))
    child = stack.push_forward_workspace(parent, {"x": "outer_x"})
    child.copy_forwarded_tensors(["x"])
    assert child.local_blobs() == ["x"]
    stack.pop_gradient_workspace(parent)
    reused = stack.push_forward_workspace(parent, {"x": "outer_x"})
    assert reused.local_blobs() == []
    assert reused.get_blob("x") is parent.get_blob("outer_x")


def test_reuse_with_other_bindings_rebinds_exactly_to_them():
    stack = so.WorkspaceStack()
    parent = parent_with(outer_x=1, outer_y=2)
    stack.push_forward_workspace(parent, {"x": "outer_x"})
    stack.pop_gradient_workspace(parent)
    reused = stack.push_forward_workspace(parent, {"y": "outer_y"})
    assert reused.forwarded_blobs() == {"y": (parent, "outer_y")}
    assert not reused.has_blob("x")
    assert reused.get_blob("y") is parent.get_blob("outer_y")


def test_reuse_with_other_outer_name_for_same_inner_rebinds_it():
    stack = so.WorkspaceStack()
    parent = parent_with(outer_x=1, outer_z=3)
    stack.push_forward_workspace(parent, {"x": "outer_x"})
    stack.pop_gradient_workspace(parent)
    reused = stack.push_forward_workspace(parent, {"x": "outer_z"})
    assert reused.forwarded_blobs() == {"x": (parent, "outer_z")}
    assert reused.fetch_blob("x") == 3


def test_reuse_with_other_parent_rebinds_to_the_new_parent():
    stack = so.WorkspaceStack()
    first_parent = parent_with(outer_x="first")
    second_parent = parent_with(outer_x="second")
    stack.push_forward_workspace(first_parent, {"x": "outer_x"})
    stack.pop_gradient_workspace(first_parent)
    reused = stack.push_forward_workspace(second_parent, {"x": "outer_x"})
    assert reused.forwarded_blobs() == {"x": (second_parent, "outer_x")}
    assert reused.fetch_blob("x") == "second"


def test_reuse_with_other_bindings_keeps_unbound_local_blobs():
    stack = so.WorkspaceStack()
    parent = parent_with(outer_x=1, outer_y=2)
    child = stack.push_forward_workspace(parent, {"x": "outer_x"})
    child.feed_blob("scratch", "kept")
    scratch = child.get_blob("scratch")
    stack.pop_gradient_workspace(parent)
    reused = stack.push_forward_workspace(parent, {"y": "outer_y"})
    assert reused.get_blob("scratch") is scratch
    assert reused.local_blobs() == ["scratch"]


def test_reuse_with_other_bindings_removes_local_copy_of_newly_bound_name():
    stack = so.WorkspaceStack()
    parent = parent_with(outer_x=1, outer_y=2)
    child = stack.push_forward_workspace(parent, {"x": "outer_x"})
    child.feed_blob("y", "stale local")
    stack.pop_gradient_workspace(parent)
    reused = stack.push_forward_workspace(parent, {"y": "outer_y"})
    assert "y" not in reused.local_blobs()
    assert reused.get_blob("y") is parent.get_blob("outer_y")


def test_reuse_with_other_bindings_removes_snapshot_of_a_bound_name():
    stack = so.WorkspaceStack()
    first_parent = parent_with(outer_x=np.arange(3.0))
    second_parent = parent_with(outer_x=np.zeros(2))
    child = stack.push_forward_workspace(first_parent, {"x": "outer_x"})
    child.copy_forwarded_tensors(["x"])
    stack.pop_gradient_workspace(first_parent)
    reused = stack.push_forward_workspace(second_parent, {"x": "outer_x"})
    assert reused.local_blobs() == []
    assert reused.get_blob("x") is second_parent.get_blob("outer_x")


def test_reuse_without_bindings_drops_previous_forwardings():
    stack = so.WorkspaceStack()
    parent = parent_with(outer_x=1)
    stack.push_forward_workspace(parent, {"x": "outer_x"})
    stack.pop_gradient_workspace(parent)
    reused = stack.push_forward_workspace(parent)
    assert reused.forwarded_blobs() == {}
    assert not reused.has_blob("x")


def test_snapshot_fetched_in_an_earlier_run_is_not_overwritten_by_a_later_snapshot():
    # copy_forwarded_tensors makes a deep copy independent of later parent changes; an array
    # the caller took from the first run's snapshot must keep its values when the reused
    # workspace snapshots the parent again.
    parent = parent_with(outer_x=np.arange(4.0))
    stack = so.WorkspaceStack()
    first_run = stack.push_forward_workspace(parent, {"x": "outer_x"})
    first_run.copy_forwarded_tensors(["x"])
    saved = first_run.fetch_blob("x")
    stack.pop_gradient_workspace(parent)
    second_run = stack.push_forward_workspace(parent, {"x": "outer_x"})
    parent.fetch_blob("outer_x")[:] = 9.0
    second_run.copy_forwarded_tensors(["x"])
    np.testing.assert_array_equal(second_run.fetch_blob("x"), [9.0, 9.0, 9.0, 9.0])
    np.testing.assert_array_equal(saved, [0.0, 1.0, 2.0, 3.0])


def test_a_snapshot_nobody_holds_is_reused_whole_by_the_next_one_of_its_shape():
    # Nothing outside the workspace can see the old snapshot, so reusing its blob and
    # array (instead of allocating) is invisible: the values are the new ones.
    parent = parent_with(outer_x=np.arange(4.0))
    stack = so.WorkspaceStack()
    child = stack.push_forward_workspace(parent, {"x": "outer_x"})
    child.copy_forwarded_tensors(["x"])
    first = weakref.ref(child.get_blob("x"))    # a weak reference: nobody holds it
    stack.pop_gradient_workspace(parent)
    child = stack.push_forward_workspace(parent, {"x": "outer_x"})
    parent.fetch_blob("outer_x")[:] = 7.0
    child.copy_forwarded_tensors(["x"])
    assert child.get_blob("x") is first()
    assert child.get_blob("x") is not parent.get_blob("outer_x")
    np.testing.assert_array_equal(child.fetch_blob("x"), [7.0] * 4)


def test_a_snapshot_blob_someone_holds_is_never_reused():
    parent = parent_with(outer_x=np.arange(4.0))
    stack = so.WorkspaceStack()
    child = stack.push_forward_workspace(parent, {"x": "outer_x"})
    child.copy_forwarded_tensors(["x"])
    held = child.get_blob("x")
    stack.pop_gradient_workspace(parent)
    child = stack.push_forward_workspace(parent, {"x": "outer_x"})
    parent.fetch_blob("outer_x")[:] = 7.0
    child.copy_forwarded_tensors(["x"])
    assert child.get_blob("x") is not held
    np.testing.assert_array_equal(held.get(), [0.0, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(child.fetch_blob("x"), [7.0] * 4)


def snapshot_read_by_an_operator(parent, stack):
    """A child with a snapshot of outer_x as x, and a net there whose Copy op has run
    (so its blob cache holds the snapshot blob); the stack is popped again."""
    child = stack.push_forward_workspace(parent, {"x": "outer_x"})
    child.copy_forwarded_tensors(["x"])
    net = so.Net("reads_x")
    net.Copy(["x"], ["y"])
    executor = child.create_net(net)
    executor.run()
    stack.pop_gradient_workspace(parent)
    return child, executor


def test_a_snapshot_only_an_operator_cache_holds_is_reused_whole():
    # The cache is checked against the workspace before the op runs, so it cannot see
    # the blob while it is out; once back as x's next snapshot, the op reads the new
    # values through it.
    import scopeops.ops.math  # noqa: F401  - registers Copy

    parent = parent_with(outer_x=np.arange(4.0))
    stack = so.WorkspaceStack()
    child, executor = snapshot_read_by_an_operator(parent, stack)
    first = weakref.ref(child.get_blob("x"))
    assert stack.push_forward_workspace(parent, {"x": "outer_x"}) is child
    parent.fetch_blob("outer_x")[:] = 7.0
    child.copy_forwarded_tensors(["x"])
    assert child.get_blob("x") is first()
    executor.run()
    np.testing.assert_array_equal(child.fetch_blob("y"), [7.0] * 4)


@pytest.mark.parametrize("take", [lambda op: op.input_blob(0),
                                  lambda op: op.input_blobs()[0],
                                  lambda op: op.input_blobs(),
                                  lambda op: op.input(0)],
                         ids=["input_blob", "input_blobs", "the tuple", "input"])
def test_a_snapshot_taken_from_an_operator_is_never_reused(take):
    import scopeops.ops.math  # noqa: F401

    parent = parent_with(outer_x=np.arange(4.0))
    stack = so.WorkspaceStack()
    child, executor = snapshot_read_by_an_operator(parent, stack)
    held = take(executor.operators[0])
    assert stack.push_forward_workspace(parent, {"x": "outer_x"}) is child
    parent.fetch_blob("outer_x")[:] = 7.0
    child.copy_forwarded_tensors(["x"])
    seen = held[0] if isinstance(held, tuple) else held
    seen = seen.get() if isinstance(seen, so.Blob) else seen
    np.testing.assert_array_equal(seen, [0.0, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(child.fetch_blob("x"), [7.0] * 4)


def test_an_operator_gone_no_longer_counts_against_reusing_a_snapshot():
    import gc

    import scopeops.ops.math  # noqa: F401

    parent = parent_with(outer_x=np.arange(4.0))
    stack = so.WorkspaceStack()
    child, executor = snapshot_read_by_an_operator(parent, stack)
    first = weakref.ref(child.get_blob("x"))
    child.remove_net("reads_x")
    del executor
    gc.collect()
    stack.push_forward_workspace(parent, {"x": "outer_x"})
    child.copy_forwarded_tensors(["x"])
    assert child.get_blob("x") is first()
    # Taken up after that, it is never reused again while held.
    held = child.get_blob("x")
    stack.pop_gradient_workspace(parent)
    stack.push_forward_workspace(parent, {"x": "outer_x"})
    parent.fetch_blob("outer_x")[:] = 3.0
    child.copy_forwarded_tensors(["x"])
    assert child.get_blob("x") is not held
    np.testing.assert_array_equal(held.get(), [0.0, 1.0, 2.0, 3.0])


def test_a_snapshot_of_another_shape_or_dtype_takes_a_fresh_array():
    parent = parent_with(outer_x=np.arange(4.0))
    stack = so.WorkspaceStack()
    child = stack.push_forward_workspace(parent, {"x": "outer_x"})
    child.copy_forwarded_tensors(["x"])
    stack.pop_gradient_workspace(parent)
    for value in (np.arange(2.0), np.arange(2, dtype=np.float32), np.ones((2, 2))):
        child = stack.push_forward_workspace(parent, {"x": "outer_x"})
        parent.feed_blob("outer_x", value)
        child.copy_forwarded_tensors(["x"])
        got = child.fetch_blob("x")
        assert got.dtype == value.dtype and got.shape == value.shape
        np.testing.assert_array_equal(got, value)
        stack.pop_gradient_workspace(parent)


# --- clear ----------------------------------------------------------------------------------


def test_clear_empties_the_stack_but_keeps_capacity():
    stack = so.WorkspaceStack()
    parent = so.Workspace()
    stack.push_forward_workspace(parent)
    stack.push_forward_workspace(parent)
    assert stack.clear() is None
    assert stack.empty()
    assert len(stack) == 0
    assert stack.top is None
    assert stack.capacity == 2


def test_push_after_clear_reuses_workspaces_from_index_zero():
    stack = so.WorkspaceStack()
    parent = so.Workspace()
    first = stack.push_forward_workspace(parent)
    second = stack.push_forward_workspace(parent)
    stack.clear()
    assert stack.push_forward_workspace(parent) is first
    assert stack.push_forward_workspace(parent) is second
    assert stack.capacity == 2


def test_clear_keeps_local_blobs_of_the_workspaces():
    stack = so.WorkspaceStack()
    parent = so.Workspace()
    first = stack.push_forward_workspace(parent)
    first.feed_blob("scratch", 1)
    stack.clear()
    assert stack.push_forward_workspace(parent).fetch_blob("scratch") == 1


def test_clear_on_empty_stack_is_harmless():
    stack = so.WorkspaceStack()
    stack.clear()
    assert stack_state(stack) == (0, 0, None, True)


# --- reuse_last_forward_workspace -----------------------------------------------------------


def test_reuse_last_on_empty_stack_returns_none():
    stack = so.WorkspaceStack()
    assert stack.reuse_last_forward_workspace(so.Workspace()) is None
    assert stack_state(stack) == (0, 0, None, True)


def test_reuse_last_returns_the_top_without_pushing():
    stack = so.WorkspaceStack()
    parent = so.Workspace()
    top = stack.push_forward_workspace(parent)
    assert stack.reuse_last_forward_workspace(parent) is top
    assert len(stack) == 1
    assert stack.capacity == 1


def test_reuse_last_with_identical_bindings_keeps_the_forwarding():
    stack = so.WorkspaceStack()
    parent = parent_with(outer_x=1)
    stack.push_forward_workspace(parent, {"x": "outer_x"})
    top = stack.reuse_last_forward_workspace(parent, {"x": "outer_x"})
    assert top.forwarded_blobs() == {"x": (parent, "outer_x")}


def test_reuse_last_with_new_binding_makes_it_visible():
    stack = so.WorkspaceStack()
    parent = parent_with(outer_x=1, outer_y=2)
    stack.push_forward_workspace(parent, {"x": "outer_x"})
    top = stack.reuse_last_forward_workspace(parent, {"y": "outer_y"})
    assert top.get_blob("y") is parent.get_blob("outer_y")


def test_reuse_last_does_not_use_dormant_workspaces():
    stack = so.WorkspaceStack()
    parent = so.Workspace()
    first = stack.push_forward_workspace(parent)
    stack.push_forward_workspace(parent)
    stack.pop_gradient_workspace(parent)
    assert stack.reuse_last_forward_workspace(parent) is first
    assert len(stack) == 1
    assert stack.capacity == 2


def test_reuse_last_with_missing_outer_raises_without_change():
    stack = so.WorkspaceStack()
    parent = parent_with(outer_x=1)
    top = stack.push_forward_workspace(parent, {"x": "outer_x"})
    before, top_before = stack_state(stack), ws_state(top)
    with pytest.raises(so.BindingError, match=re.escape("Invalid parent workspace blob")):
        stack.reuse_last_forward_workspace(parent, {"y": "missing_outer"})
    assert stack_state(stack) == before
    assert ws_state(top) == top_before


# --- release --------------------------------------------------------------------------------


def test_release_frees_dormant_workspaces_and_returns_their_count():
    stack = so.WorkspaceStack()
    parent = so.Workspace()
    first = stack.push_forward_workspace(parent)
    stack.push_forward_workspace(parent)
    stack.push_forward_workspace(parent)
    stack.pop_gradient_workspace(parent)
    stack.pop_gradient_workspace(parent)
    assert stack.release() == 2
    assert stack.capacity == 1
    assert len(stack) == 1
    assert stack.top is first


def test_push_after_release_creates_a_new_workspace():
    stack = so.WorkspaceStack()
    parent = so.Workspace()
    popped = stack.push_forward_workspace(parent)
    stack.pop_gradient_workspace(parent)
    stack.release()
    assert stack.push_forward_workspace(parent) is not popped


def test_release_without_dormant_workspaces_returns_zero():
    stack = so.WorkspaceStack()
    parent = so.Workspace()
    stack.push_forward_workspace(parent)
    assert stack.release() == 0
    assert stack.capacity == 1


def test_release_after_clear_frees_every_workspace():
    stack = so.WorkspaceStack()
    parent = so.Workspace()
    for _ in range(3):
        stack.push_forward_workspace(parent)
    stack.clear()
    assert stack.release() == 3
    assert stack.capacity == 0


def test_release_drops_the_stack_reference_to_dormant_workspaces():
    import gc
    import weakref

    stack = so.WorkspaceStack()
    parent = so.Workspace()
    alive = weakref.ref(stack.push_forward_workspace(parent))
    stack.pop_gradient_workspace(parent)
    gc.collect()
    assert alive() is not None
    stack.release()
    gc.collect()
    assert alive() is None


# --- check_bindings_match -------------------------------------------------------------------


def test_check_bindings_match_accepts_equal_bindings():
    matched = so.WorkspaceStack.check_bindings_match({"a": "x", "b": "y"}, {"b": "y", "a": "x"})
    assert matched is None


@pytest.mark.parametrize(
    "bindings, test_bindings",
    [
        ({"a": "x"}, {"a": "x", "b": "y"}),
        ({"a": "x", "b": "y"}, {"a": "x"}),
        ({"a": "x"}, {"b": "x"}),
        ({"a": "x"}, {"a": "y"}),
    ],
    ids=["test-larger", "test-smaller", "other-key", "other-value"],
)
def test_check_bindings_match_raises_binding_error_on_mismatch(bindings, test_bindings):
    with pytest.raises(so.BindingError, match=re.escape("Blob bindings mismatch")):
        so.WorkspaceStack.check_bindings_match(bindings, test_bindings)


def test_check_bindings_match_is_callable_on_an_instance():
    with pytest.raises(so.BindingError, match=re.escape("Blob bindings mismatch")):
        so.WorkspaceStack().check_bindings_match({"a": "x"}, {})


# --- debug checks ---------------------------------------------------------------------------


def test_debug_push_with_other_parent_raises_stack_error_without_change():
    stack = so.WorkspaceStack(debug=True)
    stack.push_forward_workspace(so.Workspace())
    before = stack_state(stack)
    with pytest.raises(so.StackError, match=re.escape("Parent workspace mismatch")):
        stack.push_forward_workspace(so.Workspace())
    assert stack_state(stack) == before


def test_debug_push_with_other_bindings_raises_binding_error_without_change():
    parent = parent_with(outer_x=1, outer_y=2)
    stack = so.WorkspaceStack(debug=True)
    stack.push_forward_workspace(parent, {"x": "outer_x"})
    before = stack_state(stack)
    with pytest.raises(so.BindingError, match=re.escape("Blob bindings mismatch")):
        stack.push_forward_workspace(parent, {"x": "outer_y"})
    assert stack_state(stack) == before


def test_debug_push_with_same_parent_and_bindings_is_accepted():
    parent = parent_with(outer_x=1)
    stack = so.WorkspaceStack(debug=True)
    stack.push_forward_workspace(parent, {"x": "outer_x"})
    stack.push_forward_workspace(parent, {"x": "outer_x"})
    assert len(stack) == 2


def test_debug_push_after_empty_first_bindings_accepts_new_bindings():
    # Caffe2 remembers the first non-empty bindings; an empty first push rejects nothing.
    parent = parent_with(outer_x=1)
    stack = so.WorkspaceStack(debug=True)
    stack.push_forward_workspace(parent)
    stack.push_forward_workspace(parent, {"x": "outer_x"})
    assert len(stack) == 2


def test_debug_reuse_of_dormant_workspace_with_other_parent_raises_instead_of_rebinding():
    first_parent = parent_with(outer_x=1)
    second_parent = parent_with(outer_x=2)
    stack = so.WorkspaceStack(debug=True)
    child = stack.push_forward_workspace(first_parent, {"x": "outer_x"})
    stack.pop_gradient_workspace(first_parent)
    before, child_before = stack_state(stack), ws_state(child)
    with pytest.raises(so.StackError, match=re.escape("Parent workspace mismatch")):
        stack.push_forward_workspace(second_parent, {"x": "outer_x"})
    assert stack_state(stack) == before
    assert ws_state(child) == child_before


def test_debug_reuse_of_dormant_workspace_with_other_bindings_raises_instead_of_rebinding():
    parent = parent_with(outer_x=1, outer_y=2)
    stack = so.WorkspaceStack(debug=True)
    child = stack.push_forward_workspace(parent, {"x": "outer_x"})
    stack.pop_gradient_workspace(parent)
    before, child_before = stack_state(stack), ws_state(child)
    with pytest.raises(so.BindingError, match=re.escape("Blob bindings mismatch")):
        stack.push_forward_workspace(parent, {"y": "outer_y"})
    assert stack_state(stack) == before
    assert ws_state(child) == child_before


def test_debug_pop_with_other_parent_raises_stack_error_without_change():
    stack = so.WorkspaceStack(debug=True)
    stack.push_forward_workspace(so.Workspace())
    before = stack_state(stack)
    with pytest.raises(so.StackError, match=re.escape("Parent workspace mismatch")):
        stack.pop_gradient_workspace(so.Workspace())
    assert stack_state(stack) == before


def test_debug_pop_checks_parent_before_the_empty_check():
    parent = so.Workspace()
    stack = so.WorkspaceStack(debug=True)
    stack.push_forward_workspace(parent)
    stack.pop_gradient_workspace(parent)
    with pytest.raises(so.StackError, match=re.escape("Parent workspace mismatch")):
        stack.pop_gradient_workspace(so.Workspace())


def test_debug_pop_with_other_gradient_bindings_raises_binding_error():
    parent = parent_with(outer_g=1, outer_h=2)
    stack = so.WorkspaceStack(debug=True)
    stack.push_forward_workspace(parent)
    stack.push_forward_workspace(parent)
    stack.pop_gradient_workspace(parent, {"g": "outer_g"})
    before = stack_state(stack)
    with pytest.raises(so.BindingError, match=re.escape("Blob bindings mismatch")):
        stack.pop_gradient_workspace(parent, {"g": "outer_h"})
    assert stack_state(stack) == before


def test_debug_pop_gradient_bindings_are_checked_apart_from_forward_bindings():
    parent = parent_with(outer_x=1, outer_g=2)
    stack = so.WorkspaceStack(debug=True)
    stack.push_forward_workspace(parent, {"x": "outer_x"})
    popped = stack.pop_gradient_workspace(parent, {"g": "outer_g"})
    assert popped.get_blob("g") is parent.get_blob("outer_g")
    assert stack.empty()


def test_debug_enabled_later_checks_subsequent_pushes():
    stack = so.WorkspaceStack()
    stack.push_forward_workspace(so.Workspace())
    stack.debug = True
    remembered_parent = so.Workspace()
    stack.push_forward_workspace(remembered_parent)
    before = stack_state(stack)
    with pytest.raises(so.StackError, match=re.escape("Parent workspace mismatch")):
        stack.push_forward_workspace(so.Workspace())
    assert stack_state(stack) == before


def test_non_debug_push_with_other_parent_is_accepted():
    stack = so.WorkspaceStack()
    stack.push_forward_workspace(so.Workspace())
    stack.push_forward_workspace(so.Workspace())
    assert len(stack) == 2


# --- a stack in a blob ----------------------------------------------------------------------


def test_stack_stored_in_a_blob_has_the_workspace_stack_meta():
    ws = so.Workspace()
    stack = so.WorkspaceStack()
    ws.feed_blob("scope", stack)
    blob = ws.get_blob("scope")
    assert blob.meta == so.type_meta(so.WorkspaceStack)
    assert blob.is_type(so.WorkspaceStack)
    assert blob.get(so.WorkspaceStack) is stack


def test_stack_blob_read_as_tensor_raises_blob_type_error():
    ws = so.Workspace()
    ws.feed_blob("scope", so.WorkspaceStack())
    phrase = (
        "wrong type for the Blob instance. Blob contains "
        f"{so.type_meta(so.WorkspaceStack).name} while caller expects Tensor"
    )
    with pytest.raises(so.BlobTypeError, match=re.escape(phrase)):
        ws.get_blob("scope").get(np.ndarray)


def test_scope_stack_stored_in_its_parent_workspace_is_collected_by_gc():
    # The usual layout: the parent holds the scope blob, whose workspaces forward back to the
    # parent. That reference cycle must not leak.
    import gc
    import weakref

    def build():
        parent = parent_with(x=np.zeros(10))
        stack = so.WorkspaceStack()
        parent.feed_blob("scope", stack)
        child = stack.push_forward_workspace(parent, {"x": "x"})
        child.feed_blob("local", np.zeros(5))
        return [weakref.ref(parent), weakref.ref(stack), weakref.ref(child)]

    refs = build()
    gc.collect()
    assert [ref() for ref in refs] == [None, None, None]


# --- 100,000 levels -------------------------------------------------------------------------

# Each level's parent is the level below, so the top resolves "x" through 100,000 forwards.
DEEP_STACK = """
root = so.Workspace()
root.feed_blob("x", 7)
stack = so.WorkspaceStack()
parents = [root]
for _ in range(100_000):
    parents.append(stack.push_forward_workspace(parents[-1], {"x": "x"}))
"""


@pytest.mark.slow
def test_stack_of_100000_levels_pushes_resolves_and_pops():
    result = run_in_small_stack(
        DEEP_STACK
        + """
assert len(stack) == 100_000 and stack.capacity == 100_000
assert stack.top is parents[-1]
assert stack.top.get_blob("x") is root.get_blob("x")
assert stack.top.fetch_blob("x") == 7
for level in range(100_000, 0, -1):
    assert stack.pop_gradient_workspace(parents[level - 1]) is parents[level]
assert stack.empty() and stack.capacity == 100_000
stack.check_stack()
for level in range(1, 100_001):
    assert stack.push_forward_workspace(parents[level - 1], {"x": "x"}) is parents[level]
assert len(stack) == 100_000 and stack.capacity == 100_000
print("STACK_OK", flush=True)
os._exit(0)
"""
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "STACK_OK" in result.stdout


@pytest.mark.slow
def test_stack_of_100000_levels_is_freed_without_crash():
    result = run_in_small_stack(
        DEEP_STACK
        + """
del parents
gc.collect()
del stack
gc.collect()
del root
gc.collect()
print("FREED_OK", flush=True)
"""
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
    assert "FREED_OK" in result.stdout


@pytest.mark.slow
def test_stack_of_100000_dormant_levels_is_released_without_crash():
    result = run_in_small_stack(
        DEEP_STACK
        + """
stack.clear()
del parents
gc.collect()
assert stack.release() == 100_000
assert stack.capacity == 0 and stack.empty()
gc.collect()
print("FREED_OK", flush=True)
"""
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
    assert "FREED_OK" in result.stdout


def test_nbytes_of_a_stack_held_in_a_blob_of_its_own_child_counts_each_once():
    # A cycle through a scope blob used to recurse without end and crash.
    parent = so.Workspace()
    parent.feed_blob("x", np.zeros(10, np.float64))
    stack = so.WorkspaceStack()
    child = stack.push_forward_workspace(parent)
    child.feed_blob("own_stack", stack)
    child.feed_blob("data", np.zeros(4, np.float32))
    assert stack.nbytes == 16
    assert child.nbytes == 16
    parent.feed_blob("scope", stack)
    parent.feed_blob("scope_again", stack)       # held twice: still counted once
    assert parent.nbytes == 80 + 16


def test_push_reusing_a_workspace_refuses_an_outer_blob_removed_since_it_was_bound():
    parent = so.Workspace()
    parent.feed_blob("x", 1)
    stack = so.WorkspaceStack()
    stack.push_forward_workspace(parent, {"a": "x"})
    stack.pop_gradient_workspace(parent)
    parent.remove_blob("x")
    with pytest.raises(so.BindingError, match=re.escape("Invalid parent workspace blob: x")):
        stack.push_forward_workspace(parent, {"a": "x"})
    assert len(stack) == 0
