"""Cached lookups (docs/workspaces.md, "How lookups stay fast"): a workspace remembers where
names it looked up beyond itself resolve, and a change anywhere on the way is seen by the
very next lookup, while a change elsewhere keeps the memo.

Every test first looks the name up (so the answer is cached), then changes one link, then
checks the next lookup against the documented rules (support.reference_find, which walks
the public listings and caches nothing).
"""

import gc
import weakref

import numpy as np
import pytest
from support import reference_find

import scopeops as so
from scopeops._workspace import names_unchanged_since, structure_epoch

DEPTH = 64


def shared_chain(depth=DEPTH):
    """[root, ..., leaf]: each reads through to the one before; root holds x."""
    chain = [so.Workspace()]
    chain[0]["x"] = "root's x"
    for _ in range(depth):
        chain.append(so.Workspace(shared=chain[-1]))
    return chain


def forward_chain(depth=DEPTH):
    """[root, ..., leaf]: each forwards its name n<k> to n<k-1> of the one before."""
    chain = [so.Workspace()]
    chain[0]["n0"] = "root's n0"
    for k in range(1, depth + 1):
        chain.append(so.Workspace.from_bindings(chain[-1], {f"n{k}": f"n{k - 1}"}))
    return chain


def check(ws, name):
    assert ws.get_blob(name) is reference_find(ws, name)
    assert ws.has_blob(name) == (reference_find(ws, name) is not None)


@pytest.mark.parametrize("level", range(0, DEPTH + 1, 7))
def test_a_blob_created_at_any_level_of_a_shared_chain_shadows_at_once(level):
    chain = shared_chain()
    leaf = chain[-1]
    assert leaf["x"] == "root's x"
    if level:
        chain[level].create_local_blob("x").set(f"level {level}'s x")
    else:
        chain[0].remove_blob("x")
        chain[0].create_local_blob("x").set("root's new x")
    assert leaf["x"] == (f"level {level}'s x" if level else "root's new x")
    check(leaf, "x")


@pytest.mark.parametrize("level", range(1, DEPTH + 1, 7))
def test_a_shadowing_blob_removed_at_any_level_is_seen_at_once(level):
    chain = shared_chain()
    leaf = chain[-1]
    chain[level].create_local_blob("x").set("shadow")
    assert leaf["x"] == "shadow"
    assert chain[level].remove_blob("x")
    assert leaf["x"] == "root's x"
    check(leaf, "x")


def test_removing_the_blob_at_the_root_makes_it_vanish_from_every_level():
    chain = shared_chain()
    assert all(ws.has_blob("x") for ws in chain)
    del chain[0]["x"]
    assert not any(ws.has_blob("x") for ws in chain)
    assert all(ws.get_blob("x") is None for ws in chain)


def test_renaming_at_the_root_is_seen_under_both_names():
    chain = shared_chain()
    leaf = chain[-1]
    blob = leaf.get_blob("x")
    assert leaf.get_blob("y") is None
    chain[0].rename_blob("x", "y")
    assert leaf.get_blob("x") is None
    assert leaf.get_blob("y") is blob


def test_a_name_not_found_then_created_at_the_root_is_found():
    chain = shared_chain()
    leaf = chain[-1]
    assert not leaf.has_blob("late")
    chain[0]["late"] = 1
    assert leaf["late"] == 1


@pytest.mark.parametrize("level", range(0, DEPTH, 9))
def test_every_link_of_a_forwarding_chain_can_change_under_a_cached_lookup(level):
    chain = forward_chain()
    leaf, name = chain[-1], f"n{DEPTH}"
    assert leaf[name] == "root's n0"
    # The workspace at ``level`` gets a local blob of the name the chain asks it for,
    # which hides its forward (or replaces the root's blob).
    chain[level].create_local_blob(f"n{level}").set(f"hidden at {level}")
    assert leaf[name] == f"hidden at {level}"
    check(leaf, name)
    chain[level].remove_blob(f"n{level}")
    check(leaf, name)


def test_a_one_hop_forward_follows_its_outer_name_wherever_it_goes():
    # inner x -> outer y of the parent: first a local blob of the parent (the direct
    # path), then the parent's shared grandparent's, then none, then local again.
    grandparent = so.Workspace()
    grandparent["y"] = "grandparent's y"
    parent = so.Workspace(shared=grandparent)
    parent.create_local_blob("y").set("parent's y")
    child = so.Workspace.from_bindings(parent, {"x": "y"})
    assert child["x"] == "parent's y"
    check(child, "x")
    parent.remove_blob("y")
    assert child["x"] == "grandparent's y"
    check(child, "x")
    grandparent.remove_blob("y")
    assert not child.has_blob("x")
    check(child, "x")
    parent.create_local_blob("y").set("parent's new y")
    assert child["x"] == "parent's new y"
    check(child, "x")
    child.create_local_blob("x").set("child's own x")
    assert child["x"] == "child's own x"
    check(child, "x")


def test_a_forward_rebound_by_a_stack_push_is_seen_at_once():
    parent = so.Workspace()
    parent["a"], parent["b"] = "a", "b"
    stack = so.WorkspaceStack()
    child = stack.push_forward_workspace(parent, {"x": "a"})
    reader = so.Workspace(shared=child)
    assert reader["x"] == "a"
    stack.pop_gradient_workspace(parent)
    assert stack.push_forward_workspace(parent, {"x": "b"}) is child
    assert reader["x"] == "b"
    check(reader, "x")


def test_a_snapshot_taken_by_copy_forwarded_tensors_is_seen_at_once():
    parent = so.Workspace()
    parent["t"] = np.zeros(3)
    child = so.Workspace.from_bindings(parent, {"t": "t"})
    reader = so.Workspace(shared=child)
    assert reader.get_blob("t") is parent.get_blob("t")
    child.copy_forwarded_tensors(["t"])
    assert reader.get_blob("t") is child.get_blob("t") is not parent.get_blob("t")


def test_changes_of_other_names_keep_a_cached_lookup_valid():
    chain = shared_chain()
    leaf = chain[-1]
    leaf.get_blob("x")
    stamp = structure_epoch()
    unrelated = so.Workspace()
    unrelated["y"] = 1
    chain[5].create_local_blob("z").set(2)
    assert structure_epoch() > stamp
    assert names_unchanged_since(stamp, "x")
    assert not names_unchanged_since(stamp, "y")
    assert not names_unchanged_since(stamp, ("x", "z"))
    check(leaf, "x")


def test_more_changes_than_the_log_holds_still_give_the_right_answer():
    chain = shared_chain()
    leaf = chain[-1]
    leaf.get_blob("x")
    stamp = structure_epoch()
    scratch = so.Workspace()
    for i in range(2000):
        scratch[f"s{i}"] = i
    assert not names_unchanged_since(stamp, "x")   # the log no longer reaches back
    chain[3].create_local_blob("x").set("new")
    assert leaf["x"] == "new"


def test_a_removed_blob_is_not_kept_alive_by_a_cached_lookup():
    class Value:
        pass

    chain = shared_chain(8)
    value = Value()
    chain[0]["big"] = value
    assert chain[-1]["big"] is value
    ref = weakref.ref(value)
    del value
    chain[0].remove_blob("big")
    gc.collect()
    assert ref() is None
    assert chain[-1].get_blob("big") is None


def test_a_workspace_looking_up_many_missing_names_keeps_a_bounded_cache():
    chain = shared_chain(4)
    leaf = chain[-1]
    for i in range(20_000):
        assert f"missing{i}" not in leaf
    chain[0]["missing19999"] = 1
    assert leaf["missing19999"] == 1


def test_names_unchanged_since_refuses_what_is_not_names():
    with pytest.raises(TypeError):
        names_unchanged_since(structure_epoch(), ["x"])
    with pytest.raises(TypeError):
        names_unchanged_since(structure_epoch(), ("x", 1))
