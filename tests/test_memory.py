"""Memory: so.memory_report over workspaces and stacks, and casting to float16."""

import numpy as np
import pytest

import scopeops as so
from scopeops.memory import MemoryReport, MemoryRow, cast_to_float16


def rows_by_path(report):
    return {(row.workspace, row.blob): row for row in report}


def parent_with_stack(levels=2, pop=0):
    """A root holding W and a stack in blob "scope", with ``levels`` pushed
    workspaces (each holding a local "h" of level+1 float64 elements), the last
    ``pop`` of them popped (dormant)."""
    ws = so.Workspace()
    ws.feed_blob("W", np.zeros((4, 8), np.float32))
    stack = so.WorkspaceStack()
    ws.feed_blob("scope", stack)
    parent = ws
    for level in range(levels):
        child = stack.push_forward_workspace(parent, {"W": "W"} if level == 0 else None)
        child.feed_blob("h", np.zeros(level + 1))
        parent = child
    for _ in range(pop):
        stack.pop_gradient_workspace(parent)
    return ws, stack


# --- a workspace ----------------------------------------------------------------------------


def test_so_memory_report_is_the_toolkit_function():
    assert so.memory_report is so.memory.memory_report


def test_one_row_per_local_blob_under_the_root_path():
    ws = so.Workspace()
    ws.feed_blob("a", np.zeros(3, np.float32))
    ws.feed_blob("b", np.zeros((2, 5), np.int64))
    report = so.memory_report(ws)
    assert [(r.workspace, r.blob) for r in report] == [("root", "a"), ("root", "b")]


def test_tensor_row_has_type_dtype_shape_and_bytes():
    ws = so.Workspace()
    ws.feed_blob("x", np.zeros((2, 5), np.int64))
    row = so.memory_report(ws)[0]
    assert (row.type, row.dtype, row.shape, row.nbytes) == ("Tensor", "int64", (2, 5), 80)


def test_tensor_bytes_are_the_buffer_capacity_after_a_shrink():
    ws = so.Workspace()
    blob = ws.create_blob("x")
    blob.tensor((100,), np.float32)
    blob.tensor((10,), np.float32)
    row = so.memory_report(ws)[0]
    assert (row.shape, row.nbytes) == ((10,), 400)


def test_non_tensor_rows_have_no_dtype_or_shape():
    ws = so.Workspace()
    ws.feed_blob("raw", b"12345")
    row = so.memory_report(ws)[0]
    assert (row.type, row.dtype, row.shape, row.nbytes) == ("bytes", None, None, 5)


def test_numpy_scalar_rows_have_a_dtype():
    ws = so.Workspace()
    ws.feed_blob("lr", np.float32(0.1))
    row = so.memory_report(ws)[0]
    assert (row.type, row.dtype, row.nbytes) == ("float32", "float32", 4)


def test_empty_blob_is_a_row_of_zero_bytes():
    ws = so.Workspace()
    ws.create_blob("later")
    row = so.memory_report(ws)[0]
    assert (row.type, row.nbytes) == ("empty", 0)


def test_total_is_the_sum_of_the_rows():
    ws = so.Workspace()
    ws.feed_blob("a", np.zeros(3, np.float32))
    ws.feed_blob("b", b"xy")
    assert so.memory_report(ws).total == 14


def test_total_matches_workspace_nbytes_without_stacks():
    ws = so.Workspace()
    ws.feed_blob("a", np.zeros(300, np.float64))
    ws.feed_blob("b", np.zeros(7, np.int8))
    assert so.memory_report(ws).total == ws.nbytes


def test_forwarded_and_shared_blobs_are_not_rows_of_the_child():
    parent = so.Workspace()
    parent.feed_blob("W", np.zeros(10))
    bound = so.Workspace.from_bindings(parent, {"w": "W"})
    reader = so.Workspace(shared=parent)
    assert len(so.memory_report(bound)) == 0
    assert len(so.memory_report(reader)) == 0


def test_root_name_can_be_chosen():
    ws = so.Workspace()
    ws.feed_blob("a", 1.0)
    assert so.memory_report(ws, name="model")[0].workspace == "model"


def test_other_objects_are_refused():
    with pytest.raises(TypeError, match="Workspace or a WorkspaceStack"):
        so.memory_report({"a": np.zeros(3)})


# --- stacks ---------------------------------------------------------------------------------


def test_stack_levels_are_paths_under_the_blob_holding_the_stack():
    ws, _ = parent_with_stack(levels=3)
    paths = [row.workspace for row in so.memory_report(ws) if row.blob == "h"]
    assert paths == ["root/scope[0]", "root/scope[1]", "root/scope[2]"]


def test_blob_holding_a_stack_is_a_zero_byte_row_with_its_depth():
    ws, _ = parent_with_stack(levels=2, pop=1)
    row = rows_by_path(so.memory_report(ws))[("root", "scope")]
    assert (row.type, row.nbytes, row.note) == ("WorkspaceStack", 0, "depth 1 of 2")


def test_stack_rows_follow_the_row_of_their_stack_blob():
    ws, _ = parent_with_stack(levels=1)
    ws.feed_blob("z", np.zeros(1))
    assert [(r.workspace, r.blob) for r in so.memory_report(ws)] == [
        ("root", "W"), ("root", "scope"), ("root/scope[0]", "h"), ("root", "z")]


def test_dormant_workspaces_are_included_and_marked():
    ws, _ = parent_with_stack(levels=3, pop=2)
    rows = {row.workspace: row for row in so.memory_report(ws) if row.blob == "h"}
    assert [rows[p].dormant for p in ("root/scope[0]", "root/scope[1]", "root/scope[2]")] \
        == [False, True, True]
    assert rows["root/scope[2]"].note == "dormant"


def test_after_clear_every_level_is_dormant_and_still_counted():
    ws, stack = parent_with_stack(levels=2)
    stack.clear()
    report = so.memory_report(ws)
    assert all(row.dormant for row in report if row.workspace.startswith("root/scope"))
    assert report.by_workspace()["root/scope[1]"] == 16


def test_stack_given_directly_names_its_levels_after_the_root():
    _, stack = parent_with_stack(levels=2)
    report = so.memory_report(stack)
    assert [row.workspace for row in report] == ["root[0]", "root[1]"]


def test_stack_total_matches_stack_nbytes_without_cycles():
    _, stack = parent_with_stack(levels=3, pop=1)
    assert so.memory_report(stack).total == stack.nbytes


def test_empty_workspaces_are_listed_with_zero_bytes():
    ws = so.Workspace()
    stack = so.WorkspaceStack()
    ws.feed_blob("scope", stack)
    stack.push_forward_workspace(ws)
    report = so.memory_report(ws)
    assert report.workspaces == ("root", "root/scope[0]")
    assert report.by_workspace() == {"root": 0, "root/scope[0]": 0}


def test_nested_stacks_extend_the_path():
    ws, stack = parent_with_stack(levels=1)
    child = stack.top
    inner = so.WorkspaceStack()
    child.feed_blob("inner", inner)
    grandchild = inner.push_forward_workspace(child)
    grandchild.feed_blob("q", np.zeros(5, np.float32))
    row = rows_by_path(so.memory_report(ws))[("root/scope[0]/inner[0]", "q")]
    assert row.nbytes == 20


def test_stacks_inside_a_dormant_workspace_are_dormant_too():
    ws, stack = parent_with_stack(levels=1)
    child = stack.top
    inner = so.WorkspaceStack()
    child.feed_blob("inner", inner)
    inner.push_forward_workspace(child).feed_blob("q", np.zeros(2))
    stack.pop_gradient_workspace(ws)
    row = rows_by_path(so.memory_report(ws))[("root/scope[0]/inner[0]", "q")]
    assert row.dormant


def test_workspace_held_in_a_blob_is_walked():
    ws = so.Workspace()
    other = so.Workspace()
    other.feed_blob("t", np.zeros(4, np.float16))
    ws.feed_blob("side", other)
    report = so.memory_report(ws)
    assert rows_by_path(report)[("root/side", "t")].nbytes == 8
    assert rows_by_path(report)[("root", "side")].nbytes == 0


# --- cycles and sharing -----------------------------------------------------------------------


def test_stack_stored_in_its_own_child_is_counted_once_and_the_walk_ends():
    ws, stack = parent_with_stack(levels=2)
    stack.workspaces()[1].feed_blob("loop", stack)
    report = so.memory_report(ws)
    assert [row.workspace for row in report if row.blob == "h"] == \
        ["root/scope[0]", "root/scope[1]"]
    assert rows_by_path(report)[("root/scope[1]", "loop")].note == "counted at root/scope"
    assert report.total == 128 + 8 + 16


def test_root_workspace_stored_in_a_child_is_not_walked_again():
    ws, stack = parent_with_stack(levels=1)
    stack.top.feed_blob("back", ws)
    report = so.memory_report(ws)
    assert rows_by_path(report)[("root/scope[0]", "back")].note == "counted at root"
    assert report.total == 128 + 8


def test_stack_stored_in_two_blobs_is_counted_once():
    ws, stack = parent_with_stack(levels=1)
    ws.feed_blob("again", stack)
    report = so.memory_report(ws)
    assert [row.blob for row in report].count("h") == 1
    assert rows_by_path(report)[("root", "again")].note == "counted at root/scope"


def test_children_forwarding_to_the_workspace_holding_their_stack_are_counted_once():
    # The Do pattern: the stack lives in a blob of the parent its children bind to.
    ws, _ = parent_with_stack(levels=1)
    report = so.memory_report(ws)
    assert [(r.workspace, r.blob) for r in report].count(("root", "W")) == 1
    assert ("root/scope[0]", "W") not in rows_by_path(report)


# --- the report object --------------------------------------------------------------------


def test_report_is_a_read_only_sequence_of_rows():
    ws, _ = parent_with_stack(levels=1)
    report = so.memory_report(ws)
    assert isinstance(report, MemoryReport)
    assert len(report) == 3 and isinstance(report[0], MemoryRow)
    assert list(report)[-1] is report[-1]
    assert report[:2] == tuple(list(report)[:2])


def test_rows_are_frozen():
    row = so.memory_report(parent_with_stack(levels=1)[0])[0]
    with pytest.raises(AttributeError):
        row.nbytes = 0


def test_by_workspace_sums_each_path():
    ws, _ = parent_with_stack(levels=2)
    assert so.memory_report(ws).by_workspace() == {
        "root": 128, "root/scope[0]": 8, "root/scope[1]": 16}


def test_str_is_a_table_with_every_row_and_the_total():
    ws, _ = parent_with_stack(levels=2, pop=1)
    text = str(so.memory_report(ws))
    header = text.splitlines()[0].split()
    assert header == ["workspace", "blob", "type", "dtype", "shape", "bytes", "note"]
    assert "root/scope[1]" in text and "dormant" in text
    assert "total: 152 bytes (152 B) in 4 blobs, 3 workspaces" in text


def test_str_of_an_empty_report_still_has_a_total():
    assert "total: 0 bytes" in str(so.memory_report(so.Workspace()))


def test_spare_snapshot_buffers_are_a_row_of_their_workspace():
    parent = so.Workspace()
    parent.feed_blob("x", np.zeros(64, np.float32))
    stack = so.WorkspaceStack()
    child = stack.push_forward_workspace(parent, {"x": "x"})
    child.copy_forwarded_tensors(["x"])
    stack.pop_gradient_workspace(parent)
    stack.push_forward_workspace(parent, {"x": "x"})   # the snapshot's buffer is kept
    report = so.memory_report(stack)
    spare = [row for row in report if row.blob == "(spare buffers)"]
    assert len(spare) == 1 and spare[0].nbytes == 256
    assert report.total == stack.nbytes


# --- float16 casting ------------------------------------------------------------------------


def test_cast_to_float16_returns_the_bytes_saved():
    ws = so.Workspace()
    ws.feed_blob("a", np.zeros(1000, np.float32))
    ws.feed_blob("b", np.zeros(100, np.float64))
    assert cast_to_float16(ws, ["a", "b"]) == 2000 + 600


def test_cast_blobs_hold_float16_values_in_place():
    ws = so.Workspace()
    values = np.linspace(-3, 3, 50, dtype=np.float32)
    ws.feed_blob("a", values)
    blob = ws.get_blob("a")
    cast_to_float16(ws, "a")
    assert ws.get_blob("a") is blob
    assert blob.dtype == np.float16
    np.testing.assert_allclose(blob.get(), values, rtol=1e-3)


def test_memory_report_shows_the_saving():
    ws = so.Workspace()
    ws.feed_blob("a", np.zeros(1000, np.float64))
    before = so.memory_report(ws).total
    saved = cast_to_float16(ws, ["a"])
    assert so.memory_report(ws).total == before - saved == 2000


def test_float16_blobs_are_left_alone_and_save_nothing():
    ws = so.Workspace()
    value = np.zeros(10, np.float16)
    ws.feed_blob("h", value)
    assert cast_to_float16(ws, ["h"]) == 0
    assert ws.fetch_blob("h") is value


def test_owned_buffer_capacity_is_what_is_saved():
    ws = so.Workspace()
    blob = ws.create_blob("t")
    blob.tensor((100,), np.float32)
    blob.tensor((10,), np.float32).fill(1.0)
    assert cast_to_float16(ws, ["t"]) == 400 - 20


def test_the_same_blob_named_twice_is_cast_once():
    parent = so.Workspace()
    parent.feed_blob("W", np.zeros(10, np.float32))
    child = so.Workspace.from_bindings(parent, {"w": "W"})
    child_view = so.Workspace.from_bindings(child, {"W": "w"})
    assert cast_to_float16(child_view, ["W", "W"]) == 20


def test_forwarded_name_casts_the_parents_blob():
    parent = so.Workspace()
    parent.feed_blob("W", np.zeros(10, np.float64))
    child = so.Workspace.from_bindings(parent, {"w": "W"})
    cast_to_float16(child, ["w"])
    assert parent.get_blob("W").dtype == np.float16


def test_integer_blob_is_refused_before_anything_changes():
    ws = so.Workspace()
    ws.feed_blob("a", np.zeros(10, np.float32))
    ws.feed_blob("steps", np.zeros(3, np.int64))
    with pytest.raises(so.BlobTypeError, match="steps.*int64"):
        cast_to_float16(ws, ["a", "steps"])
    assert ws.get_blob("a").dtype == np.float32


def test_non_tensor_blob_is_refused_before_anything_changes():
    ws = so.Workspace()
    ws.feed_blob("a", np.zeros(10, np.float32))
    ws.feed_blob("name", "text")
    with pytest.raises(so.BlobTypeError, match="name.*str"):
        cast_to_float16(ws, ["a", "name"])
    assert ws.get_blob("a").dtype == np.float32


def test_missing_blob_is_refused_before_anything_changes():
    ws = so.Workspace()
    ws.feed_blob("a", np.zeros(10, np.float32))
    with pytest.raises(so.BlobNotFoundError, match="ghost"):
        cast_to_float16(ws, ["a", "ghost"])
    assert ws.get_blob("a").dtype == np.float32


def test_values_beyond_float16_range_are_refused_before_anything_changes():
    ws = so.Workspace()
    ws.feed_blob("a", np.zeros(10, np.float32))
    ws.feed_blob("big", np.array([1.0, 1e6, np.inf], np.float32))
    with pytest.raises(ValueError, match="big.*1e\\+06"):
        cast_to_float16(ws, ["a", "big"])
    assert ws.get_blob("a").dtype == np.float32 and ws.get_blob("big").dtype == np.float32


def test_infinities_and_nans_alone_are_not_an_overflow():
    ws = so.Workspace()
    ws.feed_blob("a", np.array([np.inf, -np.inf, np.nan, 65504.0], np.float32))
    assert cast_to_float16(ws, ["a"]) == 8


def test_allow_overflow_casts_large_values_to_infinity():
    ws = so.Workspace()
    ws.feed_blob("big", np.array([1e6, -1e6], np.float64))
    cast_to_float16(ws, ["big"], allow_overflow=True)
    np.testing.assert_array_equal(ws.fetch_blob("big"), [np.inf, -np.inf])
