"""Leaks and finalisers: steady-state loops allocate nothing that stays, fed values get
their references back, cycles through workspaces, stacks, blobs and cached nets are
collected, and values whose ``__del__`` runs Python code that touches the workspace
being changed never crash the interpreter or corrupt it.

Memory is traced with tracemalloc (numpy reports its buffers to it) after a warm-up; the
bound on growth is small and fixed (64 KiB), far below what a per-iteration leak of even
one small object over 10^4-10^5 iterations would leave.
"""

import gc
import sys
import tracemalloc
import weakref

import numpy as np
import pytest
from support import do_fc_training_net, run_python

import scopeops as so
import scopeops.ops.math  # noqa: F401  - registers the numeric operators
import scopeops.ops.nn  # noqa: F401

GROWTH_BOUND = 64 * 1024


def traced_growth(loop, warmup, iterations):
    """Bytes still allocated after ``loop(iterations)`` that were not before it (after a
    warm-up of ``loop(warmup)`` and a full collection on both sides)."""
    loop(warmup)
    gc.collect()
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        loop(iterations)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return after - before


class Payload:
    """A fed value whose reference count the tests watch."""


# -- steady state ---------------------------------------------------------------------------


def test_100000_push_pop_feed_remove_cycles_leave_memory_and_refcounts_flat():
    root = so.Workspace()
    root.feed_blob("x", np.arange(4.0))
    root.feed_blob("y", np.ones(4))
    other_parent = so.Workspace(shared=root)
    stack = so.WorkspaceStack()
    value = Payload()
    array = np.zeros(3)
    start_value, start_array = sys.getrefcount(value), sys.getrefcount(array)

    def loop(n):
        for i in range(n):
            parent = root if i % 3 else other_parent       # every third push rebinds
            ws = stack.push_forward_workspace(parent, {"a": "x"} if i % 2 else {"a": "y"})
            ws.feed_blob(f"t{i % 7}", value)
            ws.feed_blob("arr", array)
            ws.fetch_blob("a")
            ws.get_blob("t0")
            inner = stack.push_forward_workspace(ws, {"b": "arr"})
            inner.fetch_blob("b")
            stack.pop_gradient_workspace(ws)
            ws.remove_blob(f"t{i % 7}")
            ws.copy_forwarded_tensors(["a"]) if i % 5 == 0 else None
            stack.pop_gradient_workspace(parent, {"g": "x"} if i % 4 == 0 else None)
            if i % 1000 == 999:
                stack.clear()
                stack.release()

    growth = traced_growth(loop, 2000, 100_000)
    assert growth < GROWTH_BOUND, f"{growth} bytes retained after 100000 cycles"
    for ws in stack.workspaces():
        for name in ws.local_blobs():
            ws.remove_blob(name)
    stack.clear()
    stack.release()
    gc.collect()
    assert sys.getrefcount(value) == start_value
    assert sys.getrefcount(array) == start_array


def test_blob_tensor_resizing_in_a_loop_allocates_nothing_that_stays():
    blob = so.Blob()
    shapes = [(3, 4), (2, 2), (12,), (1, 3, 4), (0,), (3, 4)]
    dtypes = [np.float32, np.float64, np.int32, "float32"]

    def loop(n):
        for i in range(n):
            out = blob.tensor(shapes[i % len(shapes)], dtypes[i % len(dtypes)])
            out[...] = 1
            if i % 97 == 0:
                blob.set(i)
            if i % 101 == 0:
                blob.reset()

    assert traced_growth(loop, 1000, 100_000) < GROWTH_BOUND


def test_failed_calls_give_back_the_references_to_what_they_were_given():
    root = so.Workspace()
    root.feed_blob("x", 1)
    stack = so.WorkspaceStack()
    value = Payload()
    name = "not" + "interned" * 3
    bindings = {"a": "missing"}
    counts = [sys.getrefcount(obj) for obj in (value, name, bindings)]
    for _ in range(1000):
        for call in (
                lambda: root.feed_blob(3, value),
                lambda: root.feed_blob("", value),
                lambda: root.feed_blob(name, so.Blob()),
                lambda: stack.push_forward_workspace(root, bindings),
                lambda: stack.push_forward_workspace(None, bindings),
                lambda: root.add_blob_mapping(root, bindings),
                lambda: so.Workspace.from_bindings(root, bindings),
                lambda: root.rename_blob(name, "x"),
                lambda: root.fetch_blob(name),
                lambda: root.copy_forwarded_tensors([name, 3]),
                lambda: so.Blob().get(value),
                lambda: so.Blob().tensor(value, "f4"),
                lambda: stack.pop_gradient_workspace(value, bindings)):
            with pytest.raises((so.ScopeError, TypeError, ValueError, KeyError)):
                call()
    gc.collect()
    assert [sys.getrefcount(obj) for obj in (value, name, bindings)] == counts


def test_10000_runs_of_a_net_with_a_do_and_its_gradient_leave_memory_flat():
    rng = np.random.default_rng(1)
    ws = so.Workspace()
    for name, shape in [("x", (2, 3)), ("w", (2, 3)), ("W", (4, 3)), ("bias", (4,))]:
        ws.feed_blob(name, rng.normal(size=shape))
    ws.create_net(do_fc_training_net())
    ws.run_net("train_step")
    blob_names = sorted(ws.local_blobs())

    def loop(n):
        for _ in range(n):
            ws.run_net("train_step")

    growth = traced_growth(loop, 200, 10_000)
    assert growth < GROWTH_BOUND, f"{growth} bytes retained after 10000 net runs"
    assert sorted(ws.local_blobs()) == blob_names
    stack = ws.fetch_blob("scope")
    assert stack.empty() and stack.capacity <= 1


def test_10000_runs_of_an_if_and_a_while_leave_memory_flat():
    ws = so.Workspace()
    ws.feed_blob("x", np.array([1.0, 2.0]))
    ws.feed_blob("c", np.array([True]))
    ws.feed_blob("n", np.array([0.0]))
    ws.feed_blob("limit", np.array([3.0]))
    ws.feed_blob("one", np.array([1.0]))
    then = so.Net("then")
    then.Sqr(["x"], ["x2"])
    other = so.Net("other")
    other.Neg(["x"], ["x2"])
    body = so.Net("body")
    body.Add(["n", "one"], ["n"])
    body.LT(["n", "limit"], ["go"])
    net = so.Net("control")
    net.add_op("If", ["c"], ["x2"], then_net=then, else_net=other)
    net.ConstantFill([], ["n"], shape=[1], value=0.0)
    net.LT(["n", "limit"], ["go"])
    net.add_op("While", ["go", "n", "limit", "one"], ["n", "go"], loop_net=body)
    ws.create_net(net)

    def loop(n):
        for i in range(n):
            ws.fetch_blob("c")[0] = bool(i % 2)
            ws.run_net("control")

    assert traced_growth(loop, 200, 10_000) < GROWTH_BOUND
    assert ws.fetch_blob("n")[0] == 3.0


# -- cycles -------------------------------------------------------------------------------


def collected(make):
    """Build a structure with ``make()`` (returning the object to watch), drop every
    reference, collect: is it gone?"""
    ref = weakref.ref(make())
    gc.collect()
    gc.collect()
    return ref() is None


def test_a_stack_stored_in_a_blob_of_the_workspace_its_children_forward_to_is_collected():
    def make():
        root = so.Workspace()
        root.feed_blob("x", np.ones(3))
        stack = so.WorkspaceStack()
        root.feed_blob("scope", stack)
        child = stack.push_forward_workspace(root, {"a": "x", "s": "scope"})
        child.feed_blob("local", np.zeros(2))
        child.fetch_blob("a")                      # a memoised forward back to the root
        stack.push_forward_workspace(child, {"b": "local"})
        return root

    assert collected(make)


def test_a_workspace_storing_itself_through_a_stack_is_collected():
    def make():
        ws = so.Workspace()
        stack = so.WorkspaceStack()
        ws.feed_blob("scope", stack)
        child = stack.push_forward_workspace(ws)
        child.feed_blob("same_scope", stack)       # the child holds the stack holding it
        child.feed_blob("parent", [ws])            # and its parent, through a list
        stack.pop_gradient_workspace(ws)           # dormant: still allocated
        return ws

    assert collected(make)


def test_a_workspace_forwarding_to_itself_is_collected():
    def make():
        ws = so.Workspace()
        ws.feed_blob("x", 1)
        ws.add_blob_mapping(ws, {"y": "x"})
        ws.fetch_blob("y")
        ws.create_local_blob("y")                  # hides the forward y -> x
        ws.remove_blob("x")
        ws.add_blob_mapping(ws, {"x": "y"})
        ws.remove_blob("y")                        # x -> y -> x: a forwarding cycle
        assert not ws.has_blob("x") and not ws.has_blob("y") and ws.blobs() == []
        return ws

    assert collected(make)


def test_nets_cached_in_child_workspaces_that_refer_back_to_parents_are_collected():
    def make():
        ws = so.Workspace()
        for name, shape in [("x", (2, 3)), ("w", (2, 3)), ("W", (4, 3)), ("bias", (4,))]:
            ws.feed_blob(name, np.ones(shape))
        ws.create_net(do_fc_training_net())
        ws.run_net("train_step")
        # A forward-only Do leaves its child on the stack, with the subnet cached in it.
        net = so.Net("forward_only")
        sub = so.Net("sub2")
        sub.Copy(["a"], ["b"])
        net.CreateScope([], ["scope2"])
        net.add_op("Do", ["x", "scope2"], ["h2", "scope2"], net=sub,
                   inner_blobs=["a", "b"], outer_blobs_idx=[0, 1])
        ws.run_net_once(net)
        assert not ws.fetch_blob("scope2").empty()
        return ws

    assert collected(make)


def test_a_blob_holding_a_tuple_that_holds_the_blob_is_collected():
    canary = Payload()
    ref = weakref.ref(canary)
    blob = so.Blob()
    blob.set((blob, canary))
    del blob, canary
    gc.collect()
    assert ref() is None


def test_a_blob_holding_a_list_that_holds_its_workspace_is_collected():
    def make():
        ws = so.Workspace()
        ws.feed_blob("me", [ws, ws.get_blob])
        return ws

    assert collected(make)


# -- finalisers that touch the workspace --------------------------------------------------


class Toucher:
    """A value whose __del__ runs ``action`` (Python code touching scopeops objects)."""

    def __init__(self, action):
        self.action = action

    def __del__(self):
        self.action()


def assert_consistent(*workspaces, stack=None):
    if stack is not None:
        stack.check_stack()
        assert len(stack) <= stack.capacity
        stack.top, stack.workspaces(), stack.nbytes
    for ws in workspaces:
        names = ws.blobs()
        assert len(names) == len(set(names))
        for name in names:
            assert ws.get_blob(name) is not None
        ws.nbytes, ws.forwarded_blobs()


def test_del_that_feeds_and_removes_during_remove_blob_does_not_crash():
    ws = so.Workspace()
    log = []

    def action():
        ws.feed_blob("t", "fed again by __del__")
        ws.feed_blob("other", 1)
        ws.remove_blob("gone")
        log.append(sorted(ws.blobs()))

    ws.feed_blob("t", Toucher(action))
    ws.feed_blob("gone", 2)
    assert ws.remove_blob("t")
    assert log == [["other", "t"]]
    assert ws.fetch_blob("t") == "fed again by __del__"
    assert_consistent(ws)


def test_del_that_touches_the_blob_during_reset_and_set_does_not_crash():
    blob = so.Blob()
    blob.set(Toucher(lambda: blob.set("set by __del__")))
    blob.reset()
    assert blob.get() == "set by __del__"
    blob.set(Toucher(lambda: blob.tensor((2, 2), "f4")))
    blob.set(np.ones(3))                                  # the old value's __del__ resizes
    assert blob.meta.name == "Tensor"
    blob.tensor((5,), "f8")
    blob.set(Toucher(lambda: blob.reset()))
    blob.tensor((3,), "f8")


def test_del_that_pushes_on_the_stack_during_release_does_not_crash():
    root = so.Workspace()
    stack = so.WorkspaceStack()
    pushed = []

    def action():
        pushed.append(stack.push_forward_workspace(root))
        stack.clear()
        stack.release()

    child = stack.push_forward_workspace(root)
    child.feed_blob("v", Toucher(action))
    del child
    stack.pop_gradient_workspace(root)
    stack.release()
    assert len(pushed) == 1
    assert_consistent(root, stack=stack)


def test_del_that_clears_and_releases_the_stack_during_a_rebinding_push_does_not_crash():
    """A push that rebinds a dormant workspace drops its local copy of a bound name; that
    value's __del__ empties and releases the very stack being pushed on. The stack must
    stay consistent (Caffe2 never ran user code there; scopeops does, via __del__)."""
    proc = run_python(r"""
        import numpy as np, scopeops as so
        root = so.Workspace()
        root.feed_blob("x", np.zeros(3))
        stack = so.WorkspaceStack()

        class ClearsTheStack:
            def __del__(self):
                stack.clear()
                stack.release()

        child = stack.push_forward_workspace(root)
        child.create_local_blob("a").set(ClearsTheStack())
        del child
        stack.pop_gradient_workspace(root)
        try:
            ws = stack.push_forward_workspace(root, {"a": "x"})
        except so.ScopeError as exc:
            print("refused:", exc)
        print("depth", len(stack), "capacity", stack.capacity, flush=True)
        print("top", stack.top, flush=True)
        stack.check_stack()
        assert len(stack) <= stack.capacity
        print("ok")
    """, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (
        f"exit status {proc.returncode}\n{proc.stdout}\n{proc.stderr[-2000:]}")


def test_del_that_copies_another_forward_during_copy_forwarded_tensors_does_not_raise():
    root = so.Workspace()
    root.feed_blob("x", np.zeros(3))
    root.feed_blob("y", np.ones(3))
    child = so.Workspace.from_bindings(root, {"a": "x", "b": "y"})
    child.create_local_blob("a").set(Toucher(lambda: child.copy_forwarded_tensors(["b"])))
    child.copy_forwarded_tensors(["a", "b"])
    assert child.forwarded_blobs() == {}
    np.testing.assert_array_equal(child.fetch_blob("a"), np.zeros(3))
    np.testing.assert_array_equal(child.fetch_blob("b"), np.ones(3))
    assert_consistent(child)


def test_del_that_touches_the_workspace_while_a_cycle_is_collected_does_not_crash():
    survivors = []

    def make():
        ws = so.Workspace()
        stack = so.WorkspaceStack()
        ws.feed_blob("scope", stack)
        child = stack.push_forward_workspace(ws)

        def action():
            # Runs during collection, while the cycle is still intact.
            child.feed_blob("late", 1)
            ws.remove_blob("scope")
            ws.blobs(), child.blobs(), stack.check_stack()

        child.feed_blob("toucher", Toucher(action))
        return ws

    assert collected(make)
    # And one that resurrects the workspace: it must come back whole and usable.

    def make_resurrecting():
        ws = so.Workspace()
        stack = so.WorkspaceStack()
        ws.feed_blob("scope", stack)
        child = stack.push_forward_workspace(ws, {})
        child.feed_blob("toucher", Toucher(lambda: survivors.append((ws, stack, child))))
        return ws

    make_resurrecting()
    gc.collect()
    assert len(survivors) == 1
    ws, stack, child = survivors.pop()
    ref = weakref.ref(ws)      # (gc cleared the weakrefs before the finaliser ran)
    stack.check_stack()
    assert ws.fetch_blob("scope") is stack and stack.top is child
    child.feed_blob("after", 2)
    assert_consistent(ws, child, stack=stack)
    del ws, stack, child
    gc.collect()
    assert ref() is None


def test_del_that_runs_a_net_during_release_does_not_crash():
    ws = so.Workspace()
    ws.feed_blob("x", np.ones(2))
    net = so.Net("copy")
    net.Copy(["x"], ["y"])
    ws.create_net(net)
    stack = so.WorkspaceStack()
    ws.feed_blob("scope", stack)
    child = stack.push_forward_workspace(ws)
    child.feed_blob("v", Toucher(lambda: (ws.run_net("copy"), ws.remove_blob("y"),
                                          ws.run_net("copy"))))
    del child
    stack.pop_gradient_workspace(ws)
    assert stack.release() == 1
    np.testing.assert_array_equal(ws.fetch_blob("y"), np.ones(2))
    assert_consistent(ws, stack=stack)
