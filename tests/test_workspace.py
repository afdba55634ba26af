"""Workspace: the typed blob dictionary, read-through parents and forwardings."""

import inspect
import re
import textwrap

import numpy as np
import pytest
from support import run_in_small_stack, run_python

import scopeops as so
from scopeops import _workspace

# Subprocesses import the very scopeops this test run imported (the source tree built in
# place, or an installed copy), never whatever happens to sit in the current directory.


def state(ws):
    """Everything a failing call must leave untouched."""
    return (
        sorted(ws.local_blobs()),
        dict(ws.forwarded_blobs()),
        sorted(ws.blobs()),
        {name: ws.get_blob(name) for name in ws.local_blobs()},
    )


def parent_with(**values):
    ws = so.Workspace()
    for name, value in values.items():
        ws.feed_blob(name, value)
    return ws


# --- construction and the shared read-through parent ----------------------------------------


def test_new_workspace_has_no_blobs():
    ws = so.Workspace()
    assert ws.local_blobs() == []
    assert ws.blobs() == []
    assert ws.forwarded_blobs() == {}
    assert len(ws) == 0


def test_new_workspace_has_no_shared_parent():
    assert so.Workspace().shared is None


def test_shared_parent_is_exposed():
    parent = so.Workspace()
    assert so.Workspace(parent).shared is parent
    assert so.Workspace(shared=parent).shared is parent


def test_shared_parent_blob_is_visible_in_child():
    parent = parent_with(x=1)
    child = so.Workspace(shared=parent)
    assert child.has_blob("x")
    assert child.fetch_blob("x") == 1


def test_shared_parent_blob_is_the_same_blob_object_in_child():
    parent = parent_with(x=1)
    child = so.Workspace(shared=parent)
    assert child.get_blob("x") is parent.get_blob("x")


def test_shared_read_through_is_recursive():
    grandparent = parent_with(deep=42)
    child = so.Workspace(shared=so.Workspace(shared=grandparent))
    assert child.has_blob("deep")
    assert child.get_blob("deep") is grandparent.get_blob("deep")


def test_shared_read_through_sees_blobs_added_after_child_creation():
    parent = so.Workspace()
    child = so.Workspace(shared=parent)
    parent.feed_blob("late", 5)
    assert child.fetch_blob("late") == 5


def test_shared_parent_blob_is_not_local_in_child():
    child = so.Workspace(shared=parent_with(x=1))
    assert child.local_blobs() == []


# --- from_bindings --------------------------------------------------------------------------


def test_from_bindings_makes_bound_inner_name_visible():
    parent = parent_with(outer_x=1)
    child = so.Workspace.from_bindings(parent, {"inner_x": "outer_x"})
    assert child.has_blob("inner_x")
    assert child.fetch_blob("inner_x") == 1


def test_from_bindings_inner_name_resolves_to_parent_blob_object():
    parent = parent_with(outer_x=1)
    child = so.Workspace.from_bindings(parent, {"inner_x": "outer_x"})
    assert child.get_blob("inner_x") is parent.get_blob("outer_x")


def test_from_bindings_hides_unbound_parent_blobs():
    parent = parent_with(outer_x=1, other=2)
    child = so.Workspace.from_bindings(parent, {"inner_x": "outer_x"})
    assert not child.has_blob("other")
    assert not child.has_blob("outer_x")
    assert child.get_blob("other") is None


def test_from_bindings_has_no_shared_parent():
    parent = parent_with(outer_x=1)
    assert so.Workspace.from_bindings(parent, {"inner_x": "outer_x"}).shared is None


def test_from_bindings_with_empty_bindings_sees_nothing():
    child = so.Workspace.from_bindings(parent_with(x=1), {})
    assert child.blobs() == []
    assert not child.has_blob("x")


def test_from_bindings_writes_through_bound_name_go_to_parent():
    parent = parent_with(outer_x=1)
    child = so.Workspace.from_bindings(parent, {"inner_x": "outer_x"})
    child.feed_blob("inner_x", 99)
    assert parent.fetch_blob("outer_x") == 99
    assert child.local_blobs() == []


def test_from_bindings_records_forwardings():
    parent = parent_with(outer_x=1)
    child = so.Workspace.from_bindings(parent, {"inner_x": "outer_x"})
    forwarded = child.forwarded_blobs()
    assert list(forwarded) == ["inner_x"]
    fwd_parent, outer = forwarded["inner_x"]
    assert fwd_parent is parent
    assert outer == "outer_x"


@pytest.mark.parametrize(
    "bindings",
    [
        [("inner_x", "outer_x"), ("inner_y", "outer_y")],
        (("inner_x", "outer_x"), ("inner_y", "outer_y")),
        {"inner_x": "outer_x", "inner_y": "outer_y"}.items(),
    ],
    ids=["list", "tuple", "items"],
)
def test_from_bindings_accepts_an_iterable_of_pairs(bindings):
    parent = parent_with(outer_x=1, outer_y=2)
    child = so.Workspace.from_bindings(parent, bindings)
    assert child.fetch_blob("inner_x") == 1
    assert child.fetch_blob("inner_y") == 2


def test_from_bindings_accepts_a_generator_of_pairs():
    parent = parent_with(outer_x=1)
    child = so.Workspace.from_bindings(parent, ((i, o) for i, o in [("inner_x", "outer_x")]))
    assert child.fetch_blob("inner_x") == 1


def test_from_bindings_can_bind_two_inner_names_to_one_outer_name():
    parent = parent_with(outer_x=1)
    child = so.Workspace.from_bindings(parent, {"a": "outer_x", "b": "outer_x"})
    assert child.get_blob("a") is child.get_blob("b") is parent.get_blob("outer_x")


def test_from_bindings_with_none_parent_raises_binding_error():
    with pytest.raises(so.BindingError, match=re.escape("Parent workspace must be specified")):
        so.Workspace.from_bindings(None, {})


def test_from_bindings_with_none_parent_and_bindings_raises_binding_error():
    with pytest.raises(so.BindingError, match=re.escape("Parent workspace must be specified")):
        so.Workspace.from_bindings(None, {"inner_x": "outer_x"})


def test_from_bindings_with_missing_outer_blob_raises_binding_error_naming_it():
    parent = parent_with(outer_x=1)
    with pytest.raises(
        so.BindingError, match=re.escape("Invalid parent workspace blob: missing_outer")
    ):
        so.Workspace.from_bindings(parent, {"inner_x": "outer_x", "inner_m": "missing_outer"})


def test_from_bindings_failure_leaves_parent_unchanged():
    parent = parent_with(outer_x=1)
    before = state(parent)
    with pytest.raises(so.BindingError):
        so.Workspace.from_bindings(parent, {"inner_m": "missing_outer"})
    assert state(parent) == before


def test_from_bindings_outer_name_may_be_forwarded_in_parent():
    root = parent_with(x=1)
    middle = so.Workspace.from_bindings(root, {"m": "x"})
    leaf = so.Workspace.from_bindings(middle, {"l": "m"})
    assert leaf.get_blob("l") is root.get_blob("x")


def test_from_bindings_outer_name_may_be_visible_through_parent_shared():
    root = parent_with(x=1)
    parent = so.Workspace(shared=root)
    child = so.Workspace.from_bindings(parent, {"c": "x"})
    assert child.get_blob("c") is root.get_blob("x")


MALFORMED_BINDINGS = [
    ({"inner": 5}, TypeError),
    ({5: "outer_x"}, TypeError),
    ({"inner": None}, TypeError),
    ({"inner": b"outer_x"}, TypeError),
    ({"": "outer_x"}, ValueError),
    ({"inner": ""}, ValueError),
    (5, TypeError),
    ([("inner",)], (TypeError, ValueError)),
    ([("inner", "outer_x", "extra")], (TypeError, ValueError)),
    ([5], (TypeError, ValueError)),
    ([None], (TypeError, ValueError)),
    ("inner", (TypeError, ValueError)),
]
MALFORMED_IDS = [
    "outer-int",
    "inner-int",
    "outer-none",
    "outer-bytes",
    "inner-empty",
    "outer-empty",
    "not-iterable",
    "one-tuple",
    "three-tuple",
    "int-item",
    "none-item",
    "string",
]


@pytest.mark.parametrize("bindings, error", MALFORMED_BINDINGS, ids=MALFORMED_IDS)
def test_from_bindings_refuses_malformed_bindings(bindings, error):
    parent = parent_with(outer_x=1)
    with pytest.raises(error):
        so.Workspace.from_bindings(parent, bindings)


@pytest.mark.parametrize("bindings, error", MALFORMED_BINDINGS, ids=MALFORMED_IDS)
def test_add_blob_mapping_refuses_malformed_bindings_without_change(bindings, error):
    parent = parent_with(outer_x=1, outer_y=2)
    ws = so.Workspace.from_bindings(parent, {"y": "outer_y"})
    ws.feed_blob("local", 1)
    before = state(ws)
    with pytest.raises(error):
        ws.add_blob_mapping(parent, bindings)
    assert state(ws) == before


def test_add_blob_mapping_malformed_pair_after_valid_pair_applies_nothing():
    parent = parent_with(outer_x=1)
    ws = so.Workspace()
    with pytest.raises(TypeError):
        ws.add_blob_mapping(parent, [("good", "outer_x"), ("bad", 5)])
    assert ws.forwarded_blobs() == {}
    assert not ws.has_blob("good")


# --- lookup order ---------------------------------------------------------------------------


def test_local_blob_wins_over_forwarded_blob():
    parent = parent_with(outer_x="forwarded")
    ws = so.Workspace.from_bindings(parent, {"x": "outer_x"})
    ws.create_local_blob("x").set("local")
    assert ws.fetch_blob("x") == "local"


def test_local_blob_wins_over_shared_blob():
    ws = so.Workspace(shared=parent_with(x="shared"))
    ws.create_local_blob("x").set("local")
    assert ws.fetch_blob("x") == "local"


def test_forwarded_blob_wins_over_shared_blob():
    shared = so.Workspace()
    forward_parent = parent_with(outer_x="forwarded")
    ws = so.Workspace(shared=shared)
    ws.add_blob_mapping(forward_parent, {"x": "outer_x"})
    shared.feed_blob("x", "shared")
    assert ws.fetch_blob("x") == "forwarded"
    assert ws.get_blob("x") is forward_parent.get_blob("outer_x")


def test_dangling_forward_is_not_found():
    forward_parent = parent_with(outer_x=1)
    ws = so.Workspace.from_bindings(forward_parent, {"x": "outer_x"})
    assert forward_parent.remove_blob("outer_x")
    assert not ws.has_blob("x")
    assert "x" not in ws
    assert ws.get_blob("x") is None


def test_dangling_forward_does_not_fall_through_to_shared():
    shared = so.Workspace()
    forward_parent = parent_with(outer_x="forwarded")
    ws = so.Workspace(shared=shared)
    ws.add_blob_mapping(forward_parent, {"x": "outer_x"})
    shared.feed_blob("x", "shared")
    forward_parent.remove_blob("outer_x")
    assert not ws.has_blob("x")
    assert ws.get_blob("x") is None


def test_fetch_of_dangling_forward_raises_blob_not_found_error():
    forward_parent = parent_with(outer_x=1)
    ws = so.Workspace.from_bindings(forward_parent, {"dangling_x": "outer_x"})
    forward_parent.remove_blob("outer_x")
    with pytest.raises(so.BlobNotFoundError, match="dangling_x"):
        ws.fetch_blob("dangling_x")


def test_forward_is_resolved_lazily_to_a_recreated_parent_blob():
    forward_parent = parent_with(outer_x=1)
    ws = so.Workspace.from_bindings(forward_parent, {"x": "outer_x"})
    forward_parent.remove_blob("outer_x")
    forward_parent.feed_blob("outer_x", 2)
    assert ws.fetch_blob("x") == 2
    assert ws.get_blob("x") is forward_parent.get_blob("outer_x")


def test_forwarding_chain_resolves_to_the_root_blob():
    root = parent_with(x=1)
    first = so.Workspace.from_bindings(root, {"a": "x"})
    second = so.Workspace.from_bindings(first, {"b": "a"})
    assert second.get_blob("b") is root.get_blob("x")


def test_forwarding_chain_dangles_when_root_blob_is_removed():
    root = parent_with(x=1)
    first = so.Workspace.from_bindings(root, {"a": "x"})
    second = so.Workspace.from_bindings(first, {"b": "a"})
    root.remove_blob("x")
    assert not second.has_blob("b")


def test_get_blob_returns_none_for_an_invisible_name():
    ws = so.Workspace(shared=parent_with(x=1))
    assert ws.get_blob("nowhere") is None


def test_has_blob_false_for_an_invisible_name():
    assert not so.Workspace().has_blob("nowhere")


def test_get_blob_returns_a_blob():
    ws = so.Workspace()
    ws.feed_blob("x", 1)
    assert isinstance(ws.get_blob("x"), so.Blob)


# --- identity -------------------------------------------------------------------------------


def test_two_lookups_of_a_local_name_return_the_same_blob():
    ws = parent_with(x=1)
    assert ws.get_blob("x") is ws.get_blob("x")


def test_two_lookups_of_a_forwarded_name_return_the_same_blob():
    ws = so.Workspace.from_bindings(parent_with(outer_x=1), {"x": "outer_x"})
    assert ws.get_blob("x") is ws.get_blob("x")


def test_blob_identity_survives_feeding_a_new_value():
    ws = so.Workspace()
    blob = ws.create_blob("x")
    assert ws.feed_blob("x", 1) is blob
    assert ws.feed_blob("x", "other type") is blob
    assert ws.get_blob("x") is blob


def test_create_blob_returns_the_existing_local_blob():
    ws = so.Workspace()
    blob = ws.create_blob("x")
    assert ws.create_blob("x") is blob


# --- create_blob ----------------------------------------------------------------------------


def test_create_blob_makes_an_empty_local_blob():
    ws = so.Workspace()
    blob = ws.create_blob("x")
    assert blob.is_empty()
    assert ws.local_blobs() == ["x"]
    assert ws.get_blob("x") is blob


def test_create_blob_returns_the_shared_parent_blob_when_visible_there():
    parent = parent_with(x=1)
    child = so.Workspace(shared=parent)
    assert child.create_blob("x") is parent.get_blob("x")
    assert child.local_blobs() == []


def test_create_blob_returns_the_forwarded_parent_blob():
    parent = parent_with(outer_x=1)
    child = so.Workspace.from_bindings(parent, {"x": "outer_x"})
    assert child.create_blob("x") is parent.get_blob("outer_x")
    assert child.local_blobs() == []


def test_writes_through_create_blob_on_shared_name_go_to_the_parent():
    parent = parent_with(x=1)
    child = so.Workspace(shared=parent)
    child.create_blob("x").set(2)
    assert parent.fetch_blob("x") == 2


def test_create_blob_on_dangling_forward_raises_blob_not_found_error():
    parent = parent_with(outer_x=1)
    child = so.Workspace.from_bindings(parent, {"dangling_x": "outer_x"})
    parent.remove_blob("outer_x")
    with pytest.raises(so.BlobNotFoundError, match="dangling_x"):
        child.create_blob("dangling_x")


def test_create_blob_on_dangling_forward_creates_nothing():
    parent = parent_with(outer_x=1)
    child = so.Workspace.from_bindings(parent, {"dangling_x": "outer_x"})
    parent.remove_blob("outer_x")
    before = state(child)
    parent_before = state(parent)
    with pytest.raises(so.BlobNotFoundError):
        child.create_blob("dangling_x")
    assert state(child) == before
    assert state(parent) == parent_before


def test_feed_blob_on_dangling_forward_raises_blob_not_found_error():
    parent = parent_with(outer_x=1)
    child = so.Workspace.from_bindings(parent, {"dangling_x": "outer_x"})
    parent.remove_blob("outer_x")
    before = state(child)
    with pytest.raises(so.BlobNotFoundError, match="dangling_x"):
        child.feed_blob("dangling_x", 1)
    assert state(child) == before


# --- create_local_blob ----------------------------------------------------------------------


def test_create_local_blob_hides_shared_parent_blob():
    parent = parent_with(x="parent")
    child = so.Workspace(shared=parent)
    local = child.create_local_blob("x")
    assert local is not parent.get_blob("x")
    assert local.is_empty()
    assert child.get_blob("x") is local
    assert parent.fetch_blob("x") == "parent"


def test_create_local_blob_hides_forwarded_blob():
    parent = parent_with(outer_x="parent")
    child = so.Workspace.from_bindings(parent, {"x": "outer_x"})
    local = child.create_local_blob("x")
    assert local is not parent.get_blob("outer_x")
    assert child.get_blob("x") is local
    assert "x" in child.local_blobs()
    assert parent.fetch_blob("outer_x") == "parent"


def test_create_local_blob_returns_existing_local_blob_unchanged():
    ws = so.Workspace()
    blob = ws.create_local_blob("x")
    blob.set(3)
    assert ws.create_local_blob("x") is blob
    assert blob.get() == 3


# --- remove_blob ----------------------------------------------------------------------------


def test_remove_blob_removes_a_local_blob_and_returns_true():
    ws = parent_with(x=1)
    assert ws.remove_blob("x") is True
    assert not ws.has_blob("x")
    assert ws.local_blobs() == []


def test_remove_blob_of_absent_name_returns_false():
    assert so.Workspace().remove_blob("nowhere") is False


def test_remove_blob_of_shared_name_returns_false_and_keeps_parent_blob():
    parent = parent_with(x=1)
    child = so.Workspace(shared=parent)
    assert child.remove_blob("x") is False
    assert parent.fetch_blob("x") == 1
    assert child.has_blob("x")


def test_remove_blob_of_forwarded_name_returns_false_and_keeps_forwarding():
    parent = parent_with(outer_x=1)
    child = so.Workspace.from_bindings(parent, {"x": "outer_x"})
    assert child.remove_blob("x") is False
    assert "x" in child.forwarded_blobs()
    assert child.get_blob("x") is parent.get_blob("outer_x")


def test_remove_local_blob_uncovers_shared_blob_of_same_name():
    parent = parent_with(x="parent")
    child = so.Workspace(shared=parent)
    child.create_local_blob("x").set("local")
    assert child.remove_blob("x") is True
    assert child.fetch_blob("x") == "parent"


def test_remove_local_blob_uncovers_forwarded_blob_of_same_name():
    parent = parent_with(outer_x="parent")
    child = so.Workspace.from_bindings(parent, {"x": "outer_x"})
    child.create_local_blob("x").set("local")
    assert child.remove_blob("x") is True
    assert child.fetch_blob("x") == "parent"


# --- rename_blob ----------------------------------------------------------------------------


def test_rename_blob_moves_the_same_blob_object():
    ws = parent_with(old=1)
    blob = ws.get_blob("old")
    assert ws.rename_blob("old", "new") is blob
    assert ws.get_blob("new") is blob
    assert not ws.has_blob("old")
    assert ws.local_blobs() == ["new"]


def test_rename_blob_of_non_local_name_raises_naming_it():
    ws = so.Workspace()
    with pytest.raises(
        so.ScopeError, match=re.escape("Blob nolocal is not in the local blob list")
    ):
        ws.rename_blob("nolocal", "new")


def test_rename_blob_of_shared_name_is_refused():
    child = so.Workspace(shared=parent_with(shared_x=1))
    with pytest.raises(
        so.ScopeError, match=re.escape("Blob shared_x is not in the local blob list")
    ):
        child.rename_blob("shared_x", "new")


def test_rename_blob_of_forwarded_name_is_refused():
    child = so.Workspace.from_bindings(parent_with(outer_x=1), {"fwd_x": "outer_x"})
    before = state(child)
    with pytest.raises(
        so.ScopeError, match=re.escape("Blob fwd_x is not in the local blob list")
    ):
        child.rename_blob("fwd_x", "new")
    assert state(child) == before


def test_rename_blob_onto_existing_local_name_raises_with_normal_spacing():
    ws = parent_with(old=1, taken=2)
    with pytest.raises(so.ScopeError, match=re.escape("Blob taken is already in the workspace")):
        ws.rename_blob("old", "taken")


def test_rename_blob_onto_shared_name_raises():
    ws = so.Workspace(shared=parent_with(taken=2))
    ws.feed_blob("old", 1)
    with pytest.raises(so.ScopeError, match=re.escape("Blob taken is already in the workspace")):
        ws.rename_blob("old", "taken")


def test_rename_blob_onto_forwarded_name_raises():
    ws = so.Workspace.from_bindings(parent_with(outer_x=1), {"taken": "outer_x"})
    ws.feed_blob("old", 1)
    with pytest.raises(so.ScopeError, match=re.escape("Blob taken is already in the workspace")):
        ws.rename_blob("old", "taken")


def test_failed_rename_leaves_workspace_unchanged():
    ws = parent_with(old=1, taken=2)
    before = state(ws)
    with pytest.raises(so.ScopeError):
        ws.rename_blob("old", "taken")
    assert state(ws) == before
    assert ws.fetch_blob("old") == 1
    assert ws.fetch_blob("taken") == 2


# --- local_blobs / blobs / forwarded_blobs --------------------------------------------------


def test_local_blobs_lists_only_local_names():
    parent = parent_with(shared_x=1, outer_y=2)
    ws = so.Workspace(shared=parent)
    ws.add_blob_mapping(parent, {"fwd_y": "outer_y"})
    ws.feed_blob("local_a", 1)
    ws.feed_blob("local_b", 2)
    assert sorted(ws.local_blobs()) == ["local_a", "local_b"]


def test_local_blobs_returns_a_list_of_str():
    ws = parent_with(a=1)
    names = ws.local_blobs()
    assert isinstance(names, list)
    assert all(isinstance(name, str) for name in names)


def test_blobs_lists_local_forwarded_and_shared_chain_names():
    grandparent = parent_with(deep=1)
    parent = so.Workspace(shared=grandparent)
    parent.feed_blob("mid", 2)
    forward_parent = parent_with(outer_x=3)
    ws = so.Workspace(shared=parent)
    ws.add_blob_mapping(forward_parent, {"fwd": "outer_x"})
    ws.feed_blob("local", 4)
    assert sorted(ws.blobs()) == ["deep", "fwd", "local", "mid"]


def test_blobs_lists_a_local_name_shadowing_a_shared_name_once():
    ws = so.Workspace(shared=parent_with(x=1, y=2))
    ws.create_local_blob("x")
    names = ws.blobs()
    assert sorted(names) == ["x", "y"]
    assert len(names) == len(set(names))


def test_blobs_lists_a_name_present_in_several_shared_levels_once():
    grandparent = parent_with(x=1)
    parent = so.Workspace(shared=grandparent)
    parent.create_local_blob("x")
    ws = so.Workspace(shared=parent)
    assert ws.blobs() == ["x"]


def test_blobs_lists_a_forwarded_name_also_in_shared_once():
    shared = so.Workspace()
    ws = so.Workspace(shared=shared)
    ws.add_blob_mapping(parent_with(outer_x=1), {"x": "outer_x"})
    shared.feed_blob("x", 2)
    assert ws.blobs() == ["x"]


def test_blobs_omits_a_dangling_forward():
    parent = parent_with(outer_x=1, outer_y=2)
    ws = so.Workspace.from_bindings(parent, {"x": "outer_x", "y": "outer_y"})
    parent.remove_blob("outer_x")
    assert ws.blobs() == ["y"]


def test_forwarded_blobs_maps_inner_name_to_parent_and_outer_name():
    parent_a = parent_with(outer_x=1)
    parent_b = parent_with(outer_y=2)
    ws = so.Workspace.from_bindings(parent_a, {"x": "outer_x"})
    ws.add_blob_mapping(parent_b, {"y": "outer_y"})
    forwarded = ws.forwarded_blobs()
    assert isinstance(forwarded, dict)
    assert set(forwarded) == {"x", "y"}
    assert forwarded["x"][0] is parent_a and forwarded["x"][1] == "outer_x"
    assert forwarded["y"][0] is parent_b and forwarded["y"][1] == "outer_y"


def test_forwarded_blobs_keeps_a_dangling_forward():
    parent = parent_with(outer_x=1)
    ws = so.Workspace.from_bindings(parent, {"x": "outer_x"})
    parent.remove_blob("outer_x")
    assert set(ws.forwarded_blobs()) == {"x"}


def test_forwarded_blobs_is_empty_for_a_shared_child():
    assert so.Workspace(shared=parent_with(x=1)).forwarded_blobs() == {}


# --- add_blob_mapping -----------------------------------------------------------------------


def test_add_blob_mapping_forwards_inner_to_outer():
    parent = parent_with(outer_x=1)
    ws = so.Workspace()
    assert ws.add_blob_mapping(parent, {"x": "outer_x"}) is None
    assert ws.get_blob("x") is parent.get_blob("outer_x")
    assert ws.forwarded_blobs() == {"x": (parent, "outer_x")}


def test_add_blob_mapping_can_target_another_workspace_than_the_first_parent():
    first = parent_with(outer_x=1)
    second = parent_with(outer_y=2)
    ws = so.Workspace.from_bindings(first, {"x": "outer_x"})
    ws.add_blob_mapping(second, {"y": "outer_y"})
    assert ws.get_blob("y") is second.get_blob("outer_y")
    assert ws.get_blob("x") is first.get_blob("outer_x")


def test_add_blob_mapping_accepts_pairs():
    parent = parent_with(outer_x=1)
    ws = so.Workspace()
    ws.add_blob_mapping(parent, [("x", "outer_x")])
    assert ws.fetch_blob("x") == 1


def test_add_blob_mapping_with_none_parent_raises_binding_error():
    ws = so.Workspace()
    with pytest.raises(so.BindingError, match=re.escape("Parent workspace must be specified")):
        ws.add_blob_mapping(None, {"x": "outer_x"})
    assert ws.forwarded_blobs() == {}


def test_add_blob_mapping_with_missing_outer_raises_binding_error_naming_it():
    ws = so.Workspace()
    with pytest.raises(so.BindingError, match=re.escape("Invalid parent workspace blob")) as info:
        ws.add_blob_mapping(parent_with(outer_x=1), {"x": "missing_outer"})
    assert "missing_outer" in str(info.value)
    assert ws.forwarded_blobs() == {}


def test_add_blob_mapping_identical_remap_is_a_no_op():
    parent = parent_with(outer_x=1)
    ws = so.Workspace.from_bindings(parent, {"x": "outer_x"})
    before = state(ws)
    ws.add_blob_mapping(parent, {"x": "outer_x"})
    assert state(ws) == before


def test_add_blob_mapping_remap_to_other_outer_raises_redefinition():
    parent = parent_with(outer_x=1, outer_y=2)
    ws = so.Workspace.from_bindings(parent, {"x": "outer_x"})
    before = state(ws)
    with pytest.raises(so.BindingError, match=re.escape("Redefinition of blob x")):
        ws.add_blob_mapping(parent, {"x": "outer_y"})
    assert state(ws) == before


def test_add_blob_mapping_remap_to_other_parent_raises_redefinition():
    parent = parent_with(outer_x=1)
    other = parent_with(outer_x=2)
    ws = so.Workspace.from_bindings(parent, {"x": "outer_x"})
    before = state(ws)
    with pytest.raises(so.BindingError, match=re.escape("Redefinition of blob x")):
        ws.add_blob_mapping(other, {"x": "outer_x"})
    assert state(ws) == before


def test_add_blob_mapping_over_local_blob_raises_redefinition():
    ws = parent_with(x="local")
    before = state(ws)
    with pytest.raises(so.BindingError, match=re.escape("Redefinition of blob x")):
        ws.add_blob_mapping(parent_with(outer_x=1), {"x": "outer_x"})
    assert state(ws) == before


def test_add_blob_mapping_over_shared_blob_raises_redefinition():
    ws = so.Workspace(shared=parent_with(x="shared"))
    with pytest.raises(so.BindingError, match=re.escape("Redefinition of blob x")):
        ws.add_blob_mapping(parent_with(outer_x=1), {"x": "outer_x"})
    assert ws.forwarded_blobs() == {}


def test_add_blob_mapping_skip_defined_skips_a_local_blob():
    ws = parent_with(x="local")
    ws.add_blob_mapping(parent_with(outer_x=1), {"x": "outer_x"}, skip_defined_blobs=True)
    assert ws.fetch_blob("x") == "local"
    assert ws.forwarded_blobs() == {}


def test_add_blob_mapping_skip_defined_still_adds_undefined_names():
    parent = parent_with(outer_x=1, outer_y=2)
    ws = parent_with(x="local")
    ws.add_blob_mapping(parent, {"x": "outer_x", "y": "outer_y"}, skip_defined_blobs=True)
    assert ws.fetch_blob("x") == "local"
    assert ws.get_blob("y") is parent.get_blob("outer_y")


def test_add_blob_mapping_skip_defined_still_refuses_a_conflicting_forward():
    parent = parent_with(outer_x=1, outer_y=2)
    ws = so.Workspace.from_bindings(parent, {"x": "outer_x"})
    with pytest.raises(so.BindingError, match=re.escape("Redefinition of blob x")):
        ws.add_blob_mapping(parent, {"x": "outer_y"}, skip_defined_blobs=True)
    assert ws.forwarded_blobs() == {"x": (parent, "outer_x")}


def test_add_blob_mapping_is_atomic_on_missing_outer():
    parent = parent_with(outer_x=1)
    ws = so.Workspace()
    with pytest.raises(so.BindingError, match=re.escape("Invalid parent workspace blob")):
        ws.add_blob_mapping(parent, [("x", "outer_x"), ("m", "missing_outer")])
    assert ws.forwarded_blobs() == {}
    assert not ws.has_blob("x")


def test_add_blob_mapping_is_atomic_on_redefinition():
    parent = parent_with(outer_x=1, outer_y=2)
    ws = parent_with(taken="local")
    before = state(ws)
    with pytest.raises(so.BindingError, match=re.escape("Redefinition of blob taken")):
        ws.add_blob_mapping(parent, [("x", "outer_x"), ("taken", "outer_y")])
    assert state(ws) == before
    assert not ws.has_blob("x")


def test_add_blob_mapping_is_atomic_with_a_mapping_argument():
    parent = parent_with(outer_x=1, outer_y=2)
    ws = so.Workspace.from_bindings(parent, {"fwd": "outer_y"})
    before = state(ws)
    with pytest.raises(so.BindingError, match=re.escape("Redefinition of blob fwd")):
        ws.add_blob_mapping(parent, {"x": "outer_x", "fwd": "outer_x"})
    assert state(ws) == before


# --- copy_forwarded_tensors -----------------------------------------------------------------


def test_copy_forwarded_tensors_makes_a_local_copy():
    parent = parent_with(outer_t=np.arange(6.0).reshape(2, 3))
    ws = so.Workspace.from_bindings(parent, {"t": "outer_t"})
    ws.copy_forwarded_tensors(["t"])
    assert ws.local_blobs() == ["t"]
    assert ws.get_blob("t") is not parent.get_blob("outer_t")
    np.testing.assert_array_equal(ws.fetch_blob("t"), np.arange(6.0).reshape(2, 3))


def test_copy_forwarded_tensors_stops_forwarding_the_name():
    parent = parent_with(outer_t=np.arange(3.0))
    ws = so.Workspace.from_bindings(parent, {"t": "outer_t"})
    ws.copy_forwarded_tensors(["t"])
    assert "t" not in ws.forwarded_blobs()


def test_copy_forwarded_tensors_copy_is_deep():
    source = np.arange(3.0)
    parent = parent_with(outer_t=source)
    ws = so.Workspace.from_bindings(parent, {"t": "outer_t"})
    ws.copy_forwarded_tensors(["t"])
    assert not np.shares_memory(ws.fetch_blob("t"), parent.fetch_blob("outer_t"))
    parent.fetch_blob("outer_t")[0] = 100.0
    assert ws.fetch_blob("t")[0] == 0.0


def test_copy_forwarded_tensors_copy_ignores_later_parent_replacement():
    parent = parent_with(outer_t=np.arange(3.0))
    ws = so.Workspace.from_bindings(parent, {"t": "outer_t"})
    ws.copy_forwarded_tensors(["t"])
    parent.feed_blob("outer_t", np.zeros(5))
    np.testing.assert_array_equal(ws.fetch_blob("t"), [0.0, 1.0, 2.0])


def test_copy_forwarded_tensors_keeps_dtype_and_shape():
    parent = parent_with(outer_t=np.ones((3, 2), dtype=np.int16))
    ws = so.Workspace.from_bindings(parent, {"t": "outer_t"})
    ws.copy_forwarded_tensors(["t"])
    blob = ws.get_blob("t")
    assert blob.dtype == np.dtype(np.int16)
    assert blob.shape == (3, 2)


def test_copy_forwarded_tensors_only_copies_the_named_forwards():
    parent = parent_with(outer_t=np.arange(3.0), outer_u=np.arange(2.0))
    ws = so.Workspace.from_bindings(parent, {"t": "outer_t", "u": "outer_u"})
    ws.copy_forwarded_tensors(["t"])
    assert ws.get_blob("u") is parent.get_blob("outer_u")
    assert set(ws.forwarded_blobs()) == {"u"}


def test_copy_forwarded_tensors_ignores_non_forwarded_names():
    parent = parent_with(outer_t=np.arange(3.0))
    ws = so.Workspace.from_bindings(parent, {"t": "outer_t"})
    ws.feed_blob("local", "keep")
    local_blob = ws.get_blob("local")
    ws.copy_forwarded_tensors(["local", "nowhere"])
    assert ws.get_blob("local") is local_blob
    assert ws.fetch_blob("local") == "keep"
    assert not ws.has_blob("nowhere")
    assert set(ws.forwarded_blobs()) == {"t"}


def test_copy_forwarded_tensors_accepts_a_set():
    parent = parent_with(outer_t=np.arange(3.0))
    ws = so.Workspace.from_bindings(parent, {"t": "outer_t"})
    ws.copy_forwarded_tensors({"t"})
    assert ws.local_blobs() == ["t"]


def test_copy_forwarded_tensors_creates_a_local_blob_even_with_a_shared_parent():
    shared = so.Workspace()
    parent = parent_with(outer_t=np.arange(3.0))
    ws = so.Workspace(shared=shared)
    ws.add_blob_mapping(parent, {"t": "outer_t"})
    shared.feed_blob("t", "shared value")
    ws.copy_forwarded_tensors(["t"])
    assert ws.local_blobs() == ["t"]
    assert shared.fetch_blob("t") == "shared value"
    np.testing.assert_array_equal(ws.fetch_blob("t"), [0.0, 1.0, 2.0])


def test_copy_forwarded_tensors_of_non_tensor_raises_blob_type_error_naming_outer():
    parent = parent_with(outer_text="not a tensor")
    ws = so.Workspace.from_bindings(parent, {"t": "outer_text"})
    before = state(ws)
    with pytest.raises(
        so.BlobTypeError, match=re.escape("Expected blob with tensor value outer_text")
    ):
        ws.copy_forwarded_tensors(["t"])
    assert state(ws) == before


# --- feed_blob / fetch_blob -----------------------------------------------------------------


def test_feed_blob_returns_the_blob_holding_the_value():
    ws = so.Workspace()
    blob = ws.feed_blob("x", 5)
    assert isinstance(blob, so.Blob)
    assert blob.get() == 5
    assert ws.get_blob("x") is blob


def test_fetch_blob_returns_the_value():
    payload = object()
    ws = so.Workspace()
    ws.feed_blob("x", payload)
    assert ws.fetch_blob("x") is payload


def test_fetch_blob_of_invisible_name_raises_blob_not_found_error_naming_it():
    ws = so.Workspace(shared=parent_with(x=1))
    with pytest.raises(so.BlobNotFoundError, match="nowhere_name"):
        ws.fetch_blob("nowhere_name")


def test_feed_blob_on_shared_name_writes_to_parent():
    parent = parent_with(x=1)
    child = so.Workspace(shared=parent)
    child.feed_blob("x", 2)
    assert parent.fetch_blob("x") == 2
    assert child.local_blobs() == []


# --- mapping sugar --------------------------------------------------------------------------


def test_setitem_feeds_and_getitem_fetches():
    ws = so.Workspace()
    ws["x"] = 7
    assert ws["x"] == 7
    assert ws.local_blobs() == ["x"]


def test_getitem_reads_through_shared_parent():
    assert so.Workspace(shared=parent_with(x=3))["x"] == 3


def test_getitem_of_invisible_name_raises_blob_not_found_error():
    ws = so.Workspace()
    with pytest.raises(so.BlobNotFoundError, match="nowhere_name"):
        ws["nowhere_name"]


def test_getitem_of_invisible_name_is_a_key_error():
    with pytest.raises(KeyError):
        so.Workspace()["nowhere_name"]


def test_setitem_on_shared_name_writes_to_parent():
    parent = parent_with(x=1)
    child = so.Workspace(shared=parent)
    child["x"] = 2
    assert parent["x"] == 2


def test_delitem_removes_a_local_blob():
    ws = parent_with(x=1)
    del ws["x"]
    assert "x" not in ws
    assert ws.local_blobs() == []


def test_delitem_of_absent_name_raises_blob_not_found_error():
    ws = so.Workspace()
    with pytest.raises(so.BlobNotFoundError, match="nowhere_name"):
        del ws["nowhere_name"]


def test_delitem_of_shared_only_name_raises_and_keeps_parent_blob():
    parent = parent_with(shared_x=1)
    child = so.Workspace(shared=parent)
    with pytest.raises(so.BlobNotFoundError, match="shared_x"):
        del child["shared_x"]
    assert parent["shared_x"] == 1
    assert child["shared_x"] == 1


def test_delitem_of_forwarded_name_raises_and_keeps_forwarding():
    parent = parent_with(outer_x=1)
    child = so.Workspace.from_bindings(parent, {"fwd_x": "outer_x"})
    before = state(child)
    with pytest.raises(so.BlobNotFoundError, match="fwd_x"):
        del child["fwd_x"]
    assert state(child) == before


def test_len_counts_visible_names():
    ws = so.Workspace(shared=parent_with(x=1, y=2))
    ws.create_local_blob("x")
    ws.feed_blob("z", 3)
    assert len(ws) == 3


def test_iter_yields_visible_names():
    ws = so.Workspace(shared=parent_with(x=1, y=2))
    ws.create_local_blob("x")
    ws.feed_blob("z", 3)
    assert sorted(ws) == ["x", "y", "z"]
    assert sorted(iter(ws)) == sorted(ws.blobs())


def test_contains_is_true_for_local_forwarded_and_shared_names():
    parent = parent_with(shared_x=1, outer_y=2)
    ws = so.Workspace(shared=parent)
    ws.add_blob_mapping(parent, {"fwd_y": "outer_y"})
    ws.feed_blob("local_z", 3)
    assert "shared_x" in ws
    assert "fwd_y" in ws
    assert "local_z" in ws
    assert "nowhere" not in ws


# --- nbytes ---------------------------------------------------------------------------------


def test_nbytes_of_empty_workspace_is_zero():
    assert so.Workspace().nbytes == 0


def test_nbytes_counts_local_tensor_bytes():
    ws = so.Workspace()
    ws.feed_blob("a", np.zeros(100, dtype=np.float64))
    ws.feed_blob("b", np.zeros(10, dtype=np.int32))
    assert ws.nbytes == 840


def test_nbytes_is_the_sum_of_local_blob_nbytes():
    ws = so.Workspace()
    ws.create_blob("t").tensor((8, 8), np.float32)
    ws.feed_blob("a", np.zeros(3))
    assert ws.nbytes == sum(ws.get_blob(name).nbytes for name in ws.local_blobs())


def test_nbytes_does_not_count_shared_or_forwarded_blobs():
    parent = parent_with(big=np.zeros(1000), outer=np.zeros(1000))
    ws = so.Workspace(shared=parent)
    ws.add_blob_mapping(parent, {"fwd": "outer"})
    assert ws.nbytes == 0


# --- name validation ------------------------------------------------------------------------

NAME_CALLS = {
    "has_blob": lambda ws, name: ws.has_blob(name),
    "get_blob": lambda ws, name: ws.get_blob(name),
    "create_blob": lambda ws, name: ws.create_blob(name),
    "create_local_blob": lambda ws, name: ws.create_local_blob(name),
    "remove_blob": lambda ws, name: ws.remove_blob(name),
    "rename_blob-old": lambda ws, name: ws.rename_blob(name, "fresh"),
    "rename_blob-new": lambda ws, name: ws.rename_blob("local", name),
    "feed_blob": lambda ws, name: ws.feed_blob(name, 1),
    "fetch_blob": lambda ws, name: ws.fetch_blob(name),
    "getitem": lambda ws, name: ws[name],
    "setitem": lambda ws, name: ws.__setitem__(name, 1),
    "delitem": lambda ws, name: ws.__delitem__(name),
    "copy_forwarded_tensors": lambda ws, name: ws.copy_forwarded_tensors([name]),
}
NON_STR_NAMES = [5, None, b"local", ("local",), 1.5]


def validation_workspace():
    parent = parent_with(outer_t=np.arange(3.0), shared_x=1)
    ws = so.Workspace(shared=parent)
    ws.add_blob_mapping(parent, {"t": "outer_t"})
    ws.feed_blob("local", 1)
    return ws, parent


@pytest.mark.parametrize("bad_name", NON_STR_NAMES, ids=repr)
@pytest.mark.parametrize("method", sorted(NAME_CALLS))
def test_non_str_name_raises_type_error_without_change(method, bad_name):
    ws, parent = validation_workspace()
    before, parent_before = state(ws), state(parent)
    with pytest.raises(TypeError):
        NAME_CALLS[method](ws, bad_name)
    assert state(ws) == before
    assert state(parent) == parent_before


@pytest.mark.parametrize("method", sorted(NAME_CALLS))
def test_empty_name_raises_value_error_without_change(method):
    ws, parent = validation_workspace()
    before, parent_before = state(ws), state(parent)
    with pytest.raises(ValueError):
        NAME_CALLS[method](ws, "")
    assert state(ws) == before
    assert state(parent) == parent_before


VALID_NAMES = {"rename_blob-new": "renamed", "copy_forwarded_tensors": "t"}


@pytest.mark.parametrize("method", sorted(NAME_CALLS))
def test_valid_str_name_is_accepted_by_every_name_taking_method(method):
    # The control case of the two refusal tests above: the same calls succeed with a str.
    ws, _ = validation_workspace()
    NAME_CALLS[method](ws, VALID_NAMES.get(method, "local"))


# --- forwarding cycles ----------------------------------------------------------------------
#
# The spec does not mention cycles, but add_blob_mapping followed by remove_blob can close
# one: ws1.a -> ws2.b -> ws1.a with no blob at the end. A lookup must then finish (not
# found, or a ScopeError), never spin forever or overflow the stack.

CYCLE_SETUPS = {
    "two-forwards": """
ws1, ws2 = so.Workspace(), so.Workspace()
ws2.feed_blob("b", 1)
ws1.add_blob_mapping(ws2, {"a": "b"})
ws1.create_local_blob("a")
ws2.remove_blob("b")
ws2.add_blob_mapping(ws1, {"b": "a"})
ws1.remove_blob("a")
probe, name = ws1, "a"
""",
    "forward-and-shared": """
ws2 = so.Workspace()
ws1 = so.Workspace(shared=ws2)
ws1.feed_blob("b", 1)
ws2.add_blob_mapping(ws1, {"b": "b"})
ws1.remove_blob("b")
probe, name = ws1, "b"
""",
}

CYCLE_PROBE = """
import scopeops as so
try:
{setup}
    assert probe.has_blob(name) is False
    assert (name in probe) is False
    assert probe.get_blob(name) is None
    assert name not in probe.blobs()
    try:
        probe.fetch_blob(name)
    except so.BlobNotFoundError:
        pass
    else:
        raise AssertionError("fetch_blob found a blob at the end of a cycle")
except so.ScopeError as exc:
    print("REFUSED", type(exc).__name__, exc)
print("TERMINATED", flush=True)
"""


@pytest.mark.parametrize("setup", sorted(CYCLE_SETUPS))
def test_lookup_through_a_forwarding_cycle_terminates_as_not_found(setup):
    script = CYCLE_PROBE.format(setup=textwrap.indent(CYCLE_SETUPS[setup].strip(), "    "))
    result = run_python(script, timeout=20)
    assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
    assert "TERMINATED" in result.stdout


# --- long chains ----------------------------------------------------------------------------
#
# Each scenario runs in a subprocess, so that a C-stack overflow fails one test instead of
# killing the run, and inside a thread with a 1 MiB stack (the main-thread default on
# Windows), so that a recursive lookup or deallocation fails deterministically rather than
# depending on how generous the platform's default stack is.

CHAIN_LENGTH = 100_000

SHARED_CHAIN = f"""
root = so.Workspace()
root.feed_blob("x", 7)
leaf = root
for _ in range({CHAIN_LENGTH}):
    leaf = so.Workspace(shared=leaf)
"""

FORWARD_CHAIN = f"""
root = so.Workspace()
root.feed_blob("x", 7)
leaf = root
for _ in range({CHAIN_LENGTH}):
    leaf = so.Workspace.from_bindings(leaf, {{"x": "x"}})
"""

# Leave without freeing anything, so that a lookup test does not also test freeing.
LOOKUPS_DONE = """
print("LOOKUPS_OK", flush=True)
os._exit(0)
"""

FREE_LEAF_THEN_ROOT = """
del leaf
gc.collect()
del root
gc.collect()
print("FREED_OK", flush=True)
"""

FREE_ROOT_THEN_LEAF = """
del root
gc.collect()
del leaf
gc.collect()
print("FREED_OK", flush=True)
"""


@pytest.mark.slow
def test_shared_chain_of_100000_workspaces_resolves_lookups():
    result = run_in_small_stack(
        SHARED_CHAIN
        + """
assert leaf.has_blob("x")
assert "x" in leaf
assert leaf.fetch_blob("x") == 7
assert leaf.get_blob("x") is root.get_blob("x")
assert leaf.create_blob("x") is root.get_blob("x")
assert not leaf.has_blob("missing")
assert leaf.get_blob("missing") is None
assert leaf.blobs() == ["x"]
assert len(leaf) == 1
assert leaf.local_blobs() == []
"""
        + LOOKUPS_DONE
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LOOKUPS_OK" in result.stdout


@pytest.mark.slow
def test_shared_chain_of_100000_workspaces_is_freed_without_crash():
    result = run_in_small_stack(SHARED_CHAIN + FREE_LEAF_THEN_ROOT)
    assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
    assert "FREED_OK" in result.stdout


@pytest.mark.slow
def test_shared_chain_of_100000_workspaces_is_freed_root_first_without_crash():
    result = run_in_small_stack(SHARED_CHAIN + FREE_ROOT_THEN_LEAF)
    assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
    assert "FREED_OK" in result.stdout


@pytest.mark.slow
def test_forwarding_chain_of_100000_workspaces_resolves_lookups():
    result = run_in_small_stack(
        FORWARD_CHAIN
        + """
assert leaf.has_blob("x")
assert leaf.fetch_blob("x") == 7
assert leaf.get_blob("x") is root.get_blob("x")
assert leaf.create_blob("x") is root.get_blob("x")
assert leaf.blobs() == ["x"]
assert not leaf.has_blob("missing")
root.remove_blob("x")
assert not leaf.has_blob("x")
assert leaf.get_blob("x") is None
assert leaf.blobs() == []
root.feed_blob("x", 8)
assert leaf.fetch_blob("x") == 8
"""
        + LOOKUPS_DONE
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LOOKUPS_OK" in result.stdout


@pytest.mark.slow
def test_forwarding_chain_of_100000_workspaces_is_freed_without_crash():
    result = run_in_small_stack(FORWARD_CHAIN + FREE_LEAF_THEN_ROOT)
    assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
    assert "FREED_OK" in result.stdout


@pytest.mark.slow
def test_forwarding_chain_of_100000_workspaces_is_freed_root_first_without_crash():
    result = run_in_small_stack(FORWARD_CHAIN + FREE_ROOT_THEN_LEAF)
    assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
    assert "FREED_OK" in result.stdout


# --- the lookups' own method descriptors ------------------------------------------------------
#
# CPython calls a C type's METH_O method straight from the interpreter loop only when the
# receiver's type is exactly the descriptor's type; scopeops.Workspace therefore carries
# descriptors of its own over the core's lookups, and a subclass may opt in to its own.

LOOKUPS = ["has_blob", "get_blob", "fetch_blob"]


@pytest.mark.parametrize("name", LOOKUPS)
def test_public_workspace_owns_a_c_descriptor_of_each_lookup(name):
    descriptor = so.Workspace.__dict__[name]
    assert type(descriptor) is type(dict.get)   # a method descriptor, not a Python function
    assert descriptor.__objclass__ is so.Workspace


@pytest.mark.parametrize("name", LOOKUPS)
def test_a_subclass_inherits_the_lookups_and_sees_them_patched(name, monkeypatch):
    class Mine(so.Workspace):
        pass

    assert name not in Mine.__dict__
    monkeypatch.setattr(so.Workspace, name, lambda self, blob: ("patched", blob))
    assert getattr(Mine(), name)("x") == ("patched", "x")


@pytest.mark.parametrize("name", LOOKUPS)
def test_a_subclass_that_opts_in_owns_its_descriptors_and_passes_them_down(name):
    class Mine(so.Workspace):
        pass

    class Below(Mine):
        pass

    _workspace.give_subclass_lookups(Mine)
    _workspace.give_subclass_lookups(Below)
    for cls in (Mine, Below):
        assert cls.__dict__[name].__objclass__ is cls


def test_opting_in_keeps_an_override_there_and_below():
    class Mine(so.Workspace):
        def get_blob(self, name):
            return ("mine", name)

    class Below(Mine):
        pass

    _workspace.give_subclass_lookups(Mine)
    _workspace.give_subclass_lookups(Below)
    assert Below().get_blob("x") == ("mine", "x")
    assert inspect.isfunction(Mine.__dict__["get_blob"])   # the override, not replaced
    assert "get_blob" not in Below.__dict__
    assert Below.__dict__["fetch_blob"].__objclass__ is Below


@pytest.mark.parametrize("opt_in", [False, True])
def test_lookups_of_a_subclass_behave_as_the_core_ones(opt_in):
    class Mine(so.Workspace):
        pass

    if opt_in:
        _workspace.give_subclass_lookups(Mine)
    parent = Mine()
    parent.feed_blob("x", 3.0)
    parent.create_blob("empty")
    ws = Mine(parent)
    assert ws.has_blob("x") and not ws.has_blob("y")
    assert ws.get_blob("x") is parent.get_blob("x")
    assert ws.get_blob("y") is None
    assert ws.fetch_blob("x") == 3.0
    with pytest.raises(so.BlobNotFoundError):
        ws.fetch_blob("y")
    with pytest.raises(so.BlobTypeError):
        ws.fetch_blob("empty")
    for method in (ws.has_blob, ws.get_blob, ws.fetch_blob):
        with pytest.raises(TypeError):
            method(1)
        with pytest.raises(TypeError):
            method(name="x")   # positional only, as Caffe2's lookups


def test_the_public_lookups_check_their_receiver():
    with pytest.raises(TypeError, match="doesn't apply"):
        so.Workspace.fetch_blob(_workspace.Workspace(), "x")


@pytest.mark.parametrize("name", LOOKUPS)
def test_a_lookup_signature_is_readable(name):
    assert list(inspect.signature(getattr(so.Workspace, name)).parameters) == ["self", "name"]
    assert getattr(so.Workspace, name).__doc__ == getattr(_workspace.Workspace, name).__doc__


@pytest.mark.parametrize("bad", [int, object, "Workspace", None])
def test_give_subclass_lookups_takes_only_a_workspace_class(bad):
    with pytest.raises(TypeError, match="subclass of Workspace"):
        _workspace.give_subclass_lookups(bad)


def test_give_subclass_lookups_is_idempotent_and_leaves_the_core_alone():
    _workspace.give_subclass_lookups(_workspace.Workspace)
    assert _workspace.Workspace.__dict__["fetch_blob"].__objclass__ is _workspace.Workspace
    before = so.Workspace.__dict__["fetch_blob"]
    _workspace.give_subclass_lookups(so.Workspace)
    assert so.Workspace.__dict__["fetch_blob"] is before
