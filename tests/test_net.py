"""Operator and net definitions, the Net builder, the registry, building and running nets.

Pins docs/getting-started.md and the API reference (docs/api.md, "Operators and nets"), and
docs/caffe2.md's deliberate difference 10 (an operator never reads a blob removed from its
workspace) and its notes on automatic blob names and operator tracebacks.
"""

import copy
import inspect
import json
import re
import threading

import numpy as np
import pytest

import scopeops as so
import scopeops.ops.math  # noqa: F401  - registers the numeric operators
import scopeops.ops.nn  # noqa: F401


def fed_workspace(**blobs):
    ws = so.Workspace()
    for name, value in blobs.items():
        ws.feed_blob(name, np.asarray(value, dtype=np.float64))
    return ws


def do_def(subnet, name=""):
    return so.create_operator("Do", ["x", "scope"], ["y", "scope"], name=name, net=subnet,
                              inner_blobs=["a", "b"], outer_blobs_idx=[0, 1])


def copy_subnet():
    sub = so.Net("sub")
    sub.Copy(["a"], ["b"])
    return sub


# -- OperatorDef / NetDef as plain data ---------------------------------------------------


def test_operator_defs_with_same_fields_are_equal():
    a = so.create_operator("Add", ["x", "y"], ["z"], name="adder")
    b = so.create_operator("Add", ["x", "y"], ["z"], name="adder")
    assert a == b


def test_operator_defs_differing_in_one_field_are_not_equal():
    base = so.create_operator("Add", ["x", "y"], ["z"])
    assert base != so.create_operator("Add", ["x", "y"], ["w"])
    assert base != so.create_operator("Sub", ["x", "y"], ["z"])
    assert base != so.create_operator("Add", ["x", "y"], ["z"], name="n")
    assert base != so.create_operator("Add", ["x", "y"], ["z"], is_gradient_op=True)


def test_operator_def_fields_are_as_given():
    op = so.create_operator("Scale", ["x"], ["y"], name="scaler", scale=2.0)
    assert op.type == "Scale"
    assert op.inputs == ["x"]
    assert op.outputs == ["y"]
    assert op.name == "scaler"
    assert op.args == {"scale": 2.0}
    assert op.is_gradient_op is False


def test_operator_def_name_defaults_to_empty_string():
    assert so.create_operator("Copy", ["x"], ["y"]).name == ""


def test_create_operator_takes_is_gradient_op_as_the_op_flag_not_an_argument():
    op = so.create_operator("Copy", ["x"], ["y"], is_gradient_op=True)
    assert op.is_gradient_op is True
    assert "is_gradient_op" not in op.args


def test_operator_def_copy_is_deep_and_equal():
    op = so.create_operator("GivenTensorFill", [], ["y"], values=[1.0, 2.0], shape=[2])
    dup = op.copy()
    assert dup == op and dup is not op
    dup.inputs.append("extra")
    dup.args["values"].append(3.0)
    assert op.inputs == []
    assert op.args["values"] == [1.0, 2.0]


def test_operator_def_supports_copy_module():
    op = do_def(copy_subnet())
    assert copy.deepcopy(op) == op
    assert copy.copy(op) == op


def test_operator_def_str_names_type_inputs_outputs_and_name():
    text = str(so.create_operator("Add", ["left", "right"], ["total"], name="adder"))
    for piece in ("Add", "left", "right", "total", "adder"):
        assert piece in text


def test_net_def_str_lists_its_ops():
    net = so.Net("printed")
    net.Add(["a", "b"], ["c"])
    net.Relu(["c"], ["d"])
    text = str(net.netdef)
    for piece in ("printed", "Add", "Relu", "c", "d"):
        assert piece in text


def test_operator_def_dict_round_trip():
    op = so.create_operator("ConstantFill", [], ["y"], name="fill", shape=[2, 3], value=1.5,
                            dtype="float64")
    assert so.OperatorDef.from_dict(op.to_dict()) == op


def test_gradient_flag_survives_dict_round_trip():
    op = so.create_operator("Copy", ["x"], ["y"], is_gradient_op=True)
    assert so.OperatorDef.from_dict(op.to_dict()).is_gradient_op is True


def test_do_with_netdef_argument_survives_dict_round_trip():
    op = do_def(copy_subnet(), name="do")
    back = so.OperatorDef.from_dict(op.to_dict())
    assert back == op
    assert isinstance(back.args["net"], so.NetDef)
    assert back.args["net"].ops[0].type == "Copy"


def test_do_definition_dict_is_plain_json_data():
    op = do_def(copy_subnet())
    text = json.dumps(op.to_dict())
    assert so.OperatorDef.from_dict(json.loads(text)) == op


def test_net_def_dict_round_trip_with_nested_do():
    net = so.Net("outer")
    net.add_external_inputs("x")
    net.CreateScope([], ["scope"])
    net.add_op("Do", ["x", "scope"], ["y", "scope"], net=copy_subnet(),
               inner_blobs=["a", "b"], outer_blobs_idx=[0, 1])
    net.add_external_outputs("y")
    netdef = net.netdef
    back = so.NetDef.from_dict(json.loads(json.dumps(netdef.to_dict())))
    assert back == netdef
    assert back.name == "outer"
    assert back.external_inputs == ["x"]
    assert back.external_outputs == ["y"]
    assert [op.type for op in back.ops] == ["CreateScope", "Do"]


def self_containing_net():
    """outer -> Do's net 'inner' -> If's else_net outer: a NetDef that contains itself."""
    outer = so.NetDef("outer", [so.OperatorDef("Do", ["x"], ["y"])])
    inner = so.NetDef("inner", [so.OperatorDef("If", ["c"], [])])
    outer.ops[0].args["net"] = inner         # args are mutable plain data: cycles can be made
    inner.ops[0].args["else_net"] = outer
    return outer


def test_to_dict_of_a_net_that_contains_itself_names_the_cycle():
    with pytest.raises(ValueError, match=r"contains itself to a dict: net 'outer' -> op #0 \(Do\) "
                                         r"-> argument 'net' net 'inner' -> op #0 \(If\) -> "
                                         r"argument 'else_net' net 'outer'"):
        self_containing_net().to_dict()


def test_to_dict_of_an_op_in_a_cycle_through_a_list_argument_names_it():
    op = so.OperatorDef("Do", ["x"], ["y"])
    op.args["nets"] = [so.NetDef("a"), so.NetDef("b", [op])]
    with pytest.raises(ValueError, match=r"op Do -> argument 'nets'\[1\] net 'b' -> op #0 \(Do\)$"):
        op.to_dict()


def test_one_net_used_twice_without_a_cycle_still_converts():
    shared = so.NetDef("shared", [so.OperatorDef("Copy", ["a"], ["b"])])
    net = so.NetDef("twice", [so.OperatorDef("If", ["c"], [])])
    net.ops[0].args.update(then_net=shared, else_net=shared)
    d = net.to_dict()
    assert d["ops"][0]["args"]["then_net"] == d["ops"][0]["args"]["else_net"]


def test_copy_and_str_of_a_net_that_contains_itself():
    outer = self_containing_net()
    dup = outer.copy()
    assert dup is not outer
    assert dup.ops[0].args["net"].ops[0].args["else_net"] is dup      # the cycle, copied
    text = str(outer)
    assert "Do(x) -> (y) {net=<net inner>}" in text
    op = so.OperatorDef("Do", ["x"], ["y"], args={"nets": [so.NetDef("a")]})
    assert str(op) == "Do(x) -> (y) {nets=[<net a>]}"


def test_net_def_copy_is_deep():
    net = so.Net("n")
    net.Copy(["a"], ["b"])
    dup = net.netdef.copy()
    assert dup == net.netdef
    dup.ops[0].outputs[0] = "changed"
    assert net.netdef.ops[0].outputs == ["b"]


# -- create_operator ----------------------------------------------------------------------


def test_create_operator_refuses_unknown_type_listing_close_matches():
    with pytest.raises(so.OperatorError, match=re.escape("Add")) as info:
        so.create_operator("Addd", ["a", "b"], ["c"])
    assert "Addd" in str(info.value)


def test_create_operator_unknown_control_type_suggests_it():
    with pytest.raises(so.OperatorError, match=re.escape("CreateScope")):
        so.create_operator("CreateScop", [], ["s"])


def test_create_operator_checks_only_the_type():
    # Wrong input count and an unknown argument: only checked when built in a workspace.
    op = so.create_operator("Add", ["a"], ["c"], no_such_argument=3)
    assert op.inputs == ["a"]


def test_net_given_as_argument_is_stored_as_its_netdef():
    sub = copy_subnet()
    op = do_def(sub)
    assert isinstance(op.args["net"], so.NetDef)
    assert op.args["net"] == sub.netdef


def test_create_operator_accepts_single_str_names():
    op = so.create_operator("Relu", "x", "y")
    assert op.inputs == ["x"] and op.outputs == ["y"]


# -- the Net builder ----------------------------------------------------------------------


def test_net_builder_sugar_appends_an_op_of_that_type():
    net = so.Net("n")
    out = net.Add(["a", "b"], ["c"])
    assert out == "c"
    assert net.netdef.ops == [so.create_operator("Add", ["a", "b"], ["c"])]


def test_net_builder_accepts_single_str_names():
    net = so.Net("n")
    net.Relu("x", "y")
    op = net.netdef.ops[0]
    assert op.inputs == ["x"] and op.outputs == ["y"]


def test_net_builder_passes_arguments_through():
    net = so.Net("n")
    net.Scale(["x"], ["y"], scale=3.0)
    assert net.netdef.ops[0].args == {"scale": 3.0}


def test_net_builder_names_int_outputs_automatically_and_uniquely():
    net = so.Net("auto")
    first = net.Relu(["x"], 1)
    second = net.Relu(["x"], 1)
    assert isinstance(first, str) and isinstance(second, str)
    assert first != second
    assert net.netdef.ops[0].outputs == [first]
    assert net.netdef.ops[1].outputs == [second]


def test_net_builder_int_outputs_give_that_many_names():
    net = so.Net("auto")
    net.add_op("Do", ["x", "s"], 3, net=so.NetDef(name="empty"))
    assert len(net.netdef.ops[0].outputs) == 3
    assert len(set(net.netdef.ops[0].outputs)) == 3


def test_net_builder_add_op_returns_the_definition_outputs():
    net = so.Net("n")
    net.add_op("Sub", ["a", "b"], ["c"])
    assert net.netdef.ops[0].type == "Sub"


def test_net_builder_unknown_type_attribute_raises_attribute_error():
    net = so.Net("n")
    with pytest.raises(AttributeError, match=re.escape("NoSuchOp")):
        net.NoSuchOp(["a"], ["b"])


def test_net_builder_external_inputs_and_outputs_are_recorded_in_order():
    net = so.Net("n")
    net.add_external_inputs("a", "b")
    net.add_external_outputs("c")
    assert net.netdef.external_inputs == ["a", "b"]
    assert net.netdef.external_outputs == ["c"]


def test_net_builder_netdef_carries_its_name():
    assert so.Net("named").netdef.name == "named"


# -- registry and schema ------------------------------------------------------------------


def test_schema_fields_of_add():
    s = so.ops.schema("Add")
    assert (s.min_inputs, s.max_inputs, s.min_outputs, s.max_outputs) == (2, 2, 1, 1)
    assert s.allow_inplace
    assert isinstance(s.doc, str) and s.doc


def test_schema_fields_of_create_scope_and_has_scope():
    cs = so.ops.schema("CreateScope")
    assert (cs.min_inputs, cs.max_inputs, cs.min_outputs, cs.max_outputs) == (0, 0, 1, 1)
    hs = so.ops.schema("HasScope")
    assert (hs.min_inputs, hs.max_inputs, hs.min_outputs, hs.max_outputs) == (1, 1, 1, 1)


def test_schema_of_do_takes_at_least_one_input_and_output():
    s = so.ops.schema("Do")
    assert s.min_inputs == 1 and s.min_outputs == 1
    assert s.max_inputs > 1000 and s.max_outputs > 1000
    assert s.allow_inplace


def test_schema_of_unknown_type_raises_operator_error():
    with pytest.raises(so.OperatorError, match=re.escape("Relu")):
        so.ops.schema("Relux")


def test_registered_operators_are_sorted():
    names = so.ops.registered_operators()
    assert names == sorted(names)


def test_registered_operators_include_control_and_numeric_types():
    names = set(so.ops.registered_operators())
    assert {"CreateScope", "HasScope", "Do", "If", "While"} <= names
    assert {"ConstantFill", "GivenTensorFill", "Copy", "Add", "Mul", "Sum", "SumElements",
            "AveragedLoss", "LT", "GT", "FC", "Relu", "Tanh"} <= names


def test_operator_classes_are_exported_under_their_names():
    assert so.ops.schema("CreateScope").cls is so.ops.CreateScopeOp
    assert so.ops.schema("HasScope").cls is so.ops.HasScopeOp
    assert so.ops.schema("Do").cls is so.ops.DoOp
    assert so.ops.schema("If").cls is so.ops.IfOp
    assert so.ops.schema("While").cls is so.ops.WhileOp


# -- building checks ----------------------------------------------------------------------


def test_building_with_wrong_input_count_raises_operator_error():
    ws = fed_workspace(a=[1.0])
    net = so.Net("counts")
    net.Add(["a"], ["c"])
    with pytest.raises(so.OperatorError, match=re.escape("Add")) as info:
        ws.create_net(net)
    assert "counts" in str(info.value)


def test_building_with_unknown_argument_raises_operator_error_naming_it():
    ws = fed_workspace(a=[1.0])
    net = so.Net("args")
    net.Relu(["a"], ["b"], slope=0.1)
    with pytest.raises(so.OperatorError, match=re.escape("slope")):
        ws.create_net(net)


def test_building_with_wrong_argument_type_raises_operator_error_naming_it():
    ws = so.Workspace()
    net = so.Net("argtype")
    net.ConstantFill([], ["b"], shape=[2], value="one")
    with pytest.raises(so.OperatorError, match=re.escape("value")):
        ws.create_net(net)


def test_building_with_missing_input_blob_raises_operator_error():
    ws = so.Workspace()
    net = so.Net("missing")
    net.Relu(["nope"], ["b"])
    with pytest.raises(so.OperatorError,
                       match=re.escape("Encountered a non-existing input blob: nope")):
        ws.create_net(net)


def test_run_operator_once_with_missing_input_blob_raises_operator_error():
    ws = so.Workspace()
    with pytest.raises(so.OperatorError,
                       match=re.escape("Encountered a non-existing input blob: ghost")):
        ws.run_operator_once(so.create_operator("Copy", ["ghost"], ["b"]))


def test_building_creates_outputs_before_any_run():
    ws = fed_workspace(a=[1.0], b=[2.0])
    net = so.Net("n")
    net.Add(["a", "b"], ["c"])
    ws.create_net(net)
    assert ws.has_blob("c")
    assert ws.get_blob("c").is_empty()


def test_failed_build_leaves_no_net_behind():
    ws = so.Workspace()
    net = so.Net("broken")
    net.Relu(["nope"], ["b"])
    with pytest.raises(so.OperatorError):
        ws.create_net(net)
    assert ws.get_net("broken") is None


def test_later_op_may_read_what_an_earlier_op_outputs():
    ws = fed_workspace(a=[1.0, 2.0])
    net = so.Net("chain")
    net.Relu(["a"], ["b"])
    net.Scale(["b"], ["c"], scale=2.0)
    ws.run_net_once(net)
    np.testing.assert_array_equal(ws.fetch_blob("c"), [2.0, 4.0])


# -- workspace net methods ----------------------------------------------------------------


def test_create_net_then_run_net_by_name():
    ws = fed_workspace(a=[1.0, -2.0])
    net = so.Net("relu")
    net.Relu(["a"], ["b"])
    ws.create_net(net)
    ws.run_net("relu")
    np.testing.assert_array_equal(ws.fetch_blob("b"), [1.0, 0.0])


def test_create_net_accepts_a_netdef():
    ws = fed_workspace(a=[3.0])
    net = so.Net("copy")
    net.Copy(["a"], ["b"])
    ws.create_net(net.netdef)
    ws.run_net("copy")
    np.testing.assert_array_equal(ws.fetch_blob("b"), [3.0])


def test_get_net_returns_the_created_executor():
    ws = fed_workspace(a=[1.0])
    net = so.Net("n")
    net.Copy(["a"], ["b"])
    executor = ws.create_net(net)
    assert ws.get_net("n") is executor


def test_get_net_of_unknown_name_is_none():
    assert so.Workspace().get_net("nothing") is None


def test_run_net_reads_current_input_values_each_run():
    ws = fed_workspace(a=[1.0])
    net = so.Net("n")
    net.Scale(["a"], ["b"], scale=10.0)
    ws.create_net(net)
    ws.run_net("n")
    ws.feed_blob("a", np.array([2.0]))
    ws.run_net("n")
    np.testing.assert_array_equal(ws.fetch_blob("b"), [20.0])


def test_run_net_once_runs_without_caching():
    ws = fed_workspace(a=[4.0])
    net = so.Net("once")
    net.Copy(["a"], ["b"])
    ws.run_net_once(net)
    np.testing.assert_array_equal(ws.fetch_blob("b"), [4.0])
    assert ws.get_net("once") is None


def test_run_operator_once_runs_one_op():
    ws = fed_workspace(a=[1.0], b=[2.0])
    ws.run_operator_once(so.create_operator("Add", ["a", "b"], ["c"]))
    np.testing.assert_array_equal(ws.fetch_blob("c"), [3.0])


def test_nets_are_cached_per_workspace():
    net = so.Net("shared_name")
    net.Copy(["a"], ["b"])
    ws1 = fed_workspace(a=[1.0])
    ws2 = fed_workspace(a=[2.0])
    e1 = ws1.create_net(net)
    assert ws2.get_net("shared_name") is None
    e2 = ws2.create_net(net)
    assert e1 is not e2
    assert ws1.get_net("shared_name") is e1


def test_create_net_on_existing_name_without_overwrite_raises():
    ws = fed_workspace(a=[1.0])
    net = so.Net("dup")
    net.Copy(["a"], ["b"])
    ws.create_net(net)
    with pytest.raises(so.ScopeError, match=re.escape(
            'I respectfully refuse to overwrite an existing net of the same name "dup", '
            'unless you explicitly specify overwrite=')):
        ws.create_net(net)


def test_create_net_refusal_keeps_the_old_executor():
    ws = fed_workspace(a=[1.0])
    net = so.Net("dup")
    net.Copy(["a"], ["b"])
    first = ws.create_net(net)
    with pytest.raises(so.ScopeError):
        ws.create_net(net)
    assert ws.get_net("dup") is first


def test_create_net_with_overwrite_replaces_the_executor():
    ws = fed_workspace(a=[1.0])
    net = so.Net("dup")
    net.Copy(["a"], ["b"])
    first = ws.create_net(net)
    second = ws.create_net(net, overwrite=True)
    assert second is not first
    assert ws.get_net("dup") is second


def test_create_net_without_a_name_raises():
    with pytest.raises(so.ScopeError, match=re.escape("Net definition should have a name")):
        so.Workspace().create_net(so.NetDef(name=""))


def test_run_net_of_unknown_name_raises():
    with pytest.raises(so.ScopeError, match=re.escape("nothing")):
        so.Workspace().run_net("nothing")


# -- failing operators --------------------------------------------------------------------


def _broadcast_failure_net(op_name=""):
    net = so.Net("failnet")
    net.Copy(["a"], ["a2"])
    net.add_op("Add", ["a2", "b"], ["c"], name=op_name)
    return net


def test_failing_op_raises_operator_error_naming_type_index_and_net():
    ws = fed_workspace(a=np.ones(3), b=np.ones(4))
    with pytest.raises(so.OperatorError) as info:
        ws.run_net_once(_broadcast_failure_net())
    text = str(info.value)
    assert "Add" in text and "failnet" in text
    assert re.search(r"\b1\b", text), text


def test_failing_named_op_raises_operator_error_naming_it():
    ws = fed_workspace(a=np.ones(3), b=np.ones(4))
    with pytest.raises(so.OperatorError, match=re.escape("the_adder")) as info:
        ws.run_net_once(_broadcast_failure_net("the_adder"))
    assert "failnet" in str(info.value)


def test_failing_op_error_is_chained_to_the_original_error():
    ws = fed_workspace(a=np.ones(3), b=np.ones(4))
    with pytest.raises(so.OperatorError) as info:
        ws.run_net_once(_broadcast_failure_net())
    assert info.value.__cause__ is not None
    assert not isinstance(info.value.__cause__, so.OperatorError)


def test_operator_error_is_a_scope_error():
    assert issubclass(so.OperatorError, so.ScopeError)


# -- workspaces pushed by a WorkspaceStack -----------------------------------------------


def test_workspace_pushed_by_a_stack_is_a_full_workspace():
    parent = fed_workspace(x=[1.0, 2.0])
    child = so.WorkspaceStack().push_forward_workspace(parent, {"x": "x"})
    assert isinstance(child, so.Workspace)


def test_workspace_pushed_by_a_stack_can_create_and_run_nets():
    parent = fed_workspace(x=[1.0, 2.0])
    child = so.WorkspaceStack().push_forward_workspace(parent, {"inner_x": "x"})
    net = so.Net("child_net")
    net.Scale(["inner_x"], ["local_y"], scale=3.0)
    executor = child.create_net(net)
    child.run_net("child_net")
    np.testing.assert_array_equal(child.fetch_blob("local_y"), [3.0, 6.0])
    assert child.get_net("child_net") is executor
    assert parent.get_net("child_net") is None
    assert not parent.has_blob("local_y")


def test_workspace_pushed_by_a_stack_writes_bound_outputs_to_the_parent():
    parent = fed_workspace(x=[1.0], y=[0.0])
    child = so.WorkspaceStack().push_forward_workspace(parent, {"i": "x", "o": "y"})
    child.run_operator_once(so.create_operator("Scale", ["i"], ["o"], scale=5.0))
    np.testing.assert_array_equal(parent.fetch_blob("y"), [5.0])


# -- difference 10: never a removed blob --------------------------------------------------


def test_removed_input_blob_makes_the_run_fail_not_read_a_stale_value():
    ws = fed_workspace(alpha=[1.0, 2.0])
    net = so.Net("stale")
    net.Copy(["alpha"], ["b"])
    ws.create_net(net)
    ws.run_net("stale")
    assert ws.remove_blob("alpha")
    with pytest.raises(so.OperatorError, match=re.escape("alpha")):
        ws.run_net("stale")


def test_removed_input_blob_before_first_run_makes_the_run_fail():
    ws = fed_workspace(a=[1.0, 2.0])
    net = so.Net("stale")
    net.Copy(["a"], ["b"])
    ws.create_net(net)
    ws.remove_blob("a")
    with pytest.raises(so.OperatorError):
        ws.run_net("stale")


def test_input_blob_removed_and_fed_again_is_read_fresh():
    ws = fed_workspace(a=[1.0, 2.0])
    net = so.Net("refed")
    net.Copy(["a"], ["b"])
    ws.create_net(net)
    ws.run_net("refed")
    ws.remove_blob("a")
    ws.feed_blob("a", np.array([7.0, 8.0]))
    ws.run_net("refed")
    np.testing.assert_array_equal(ws.fetch_blob("b"), [7.0, 8.0])


def test_removed_output_blob_is_not_written_through_a_stale_reference():
    ws = fed_workspace(a=[1.0])
    net = so.Net("outgone")
    net.Copy(["a"], ["b"])
    ws.create_net(net)
    ws.run_net("outgone")
    old_b = ws.get_blob("b")
    ws.remove_blob("b")
    ws.feed_blob("a", np.array([9.0]))
    # The spec allows recreating b or failing; it never allows writing the orphaned blob.
    try:
        ws.run_net("outgone")
    except so.OperatorError:
        pass
    else:
        np.testing.assert_array_equal(ws.fetch_blob("b"), [9.0])
    np.testing.assert_array_equal(old_b.get(), [1.0])


class TaggedWorkspace(so.Workspace):
    """A Workspace subclass, to see what class a stack's children get."""

    __slots__ = ()

    def tag(self):
        return "tagged"


def test_workspace_pushed_by_a_stack_has_the_class_of_its_parent():
    parent = TaggedWorkspace()
    parent.feed_blob("x", np.array([1.0]))
    child = so.WorkspaceStack().push_forward_workspace(parent, {"x": "x"})
    assert isinstance(child, TaggedWorkspace)
    assert child.tag() == "tagged"


# -- automatic names and operator tracebacks ----------------------------------------------


def test_two_nets_of_the_same_name_never_share_automatic_blobs():
    first, second = so.Net("net"), so.Net("net")
    x_sum = first.Sum(["x", "x"], 1)
    y_sum = second.Sum(["y", "y"], 1)
    assert x_sum != y_sum
    assert first.name == second.name == "net"
    assert second.auto_prefix != first.auto_prefix
    ws = so.Workspace()
    ws.feed_blob("x", np.array([1.0]))
    ws.feed_blob("y", np.array([5.0]))
    ws.run_net_once(first)
    ws.run_net_once(second)
    assert ws[x_sum] == 2.0 and ws[y_sum] == 10.0


def test_automatic_name_prefix_skips_a_prefix_another_net_holds():
    base = so.Net("autoname_base")
    explicit = so.Net(f"{base.auto_prefix}_1")
    third = so.Net("autoname_base")
    assert len({base.auto_prefix, explicit.auto_prefix, third.auto_prefix}) == 3
    assert third.auto_prefix.startswith("autoname_base_")


def test_nets_made_in_threads_get_distinct_prefixes():
    prefixes = []

    def make():
        for _ in range(50):
            prefixes.append(so.Net("threaded").auto_prefix)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(prefixes)) == 200


def test_ops_record_where_they_were_made_without_it_changing_their_value():
    here = inspect.currentframe().f_lineno
    first = so.create_operator("Relu", ["x"], ["y"])
    second = so.create_operator("Relu", ["x"], ["y"])
    assert first == second
    assert first.debug_info == f'File "{__file__}", line {here + 1}, in ' \
                               f'test_ops_record_where_they_were_made_without_it_changing_' \
                               f'their_value'
    assert "debug_info" not in first.to_dict()
    assert so.OperatorDef.from_dict(first.to_dict()) == first


def test_op_failing_to_build_names_the_line_that_made_it():
    net = so.Net("traceback_build")
    line = inspect.currentframe().f_lineno + 1
    net.Mul(["a", "b"], ["c"])
    with pytest.raises(so.OperatorError, match="non-existing input blob") as info:
        so.Workspace().run_net_once(net)
    assert f'File "{__file__}", line {line}' in str(info.value)


def test_op_failing_while_running_names_the_line_that_made_it():
    net = so.Net("traceback_run")
    line = inspect.currentframe().f_lineno + 1
    net.Add(["a", "b"], ["c"])
    ws = so.Workspace()
    ws.feed_blob("a", np.ones(3))
    ws.feed_blob("b", np.ones(4))
    with pytest.raises(so.OperatorError, match="cannot broadcast") as info:
        ws.run_net_once(net)
    assert f'File "{__file__}", line {line}' in str(info.value)


def test_gradient_refusal_names_the_line_that_made_the_op():
    net = so.Net("traceback_gradient")
    line = inspect.currentframe().f_lineno + 1
    net.Mul(["a"], ["b"])
    with pytest.raises(so.GradientError) as info:
        so.add_gradient_ops(net, ["b"])
    assert f'File "{__file__}", line {line}' in str(info.value)
