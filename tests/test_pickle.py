"""Pickling: workspaces, blobs, stacks, definitions and nets travel, with their graph.

One pickle keeps what it holds shared (a parent of two children, a stack and the
workspaces forwarding into its owner); protocol 5 sends tensors out of band; unpickled
objects work; the stream names only scopeops' reconstructors (and numpy's, for arrays);
malformed state is refused with PickleStateError before anything changes.
"""

import copy
import io
import pickle

import numpy as np
import pytest
from support import do_fc_training_net, run_python

import scopeops as so
from scopeops._workspace import structure_epoch

MIB = 1 << 20


def round_trip(obj, protocol=pickle.HIGHEST_PROTOCOL):
    return pickle.loads(pickle.dumps(obj, protocol=protocol))


def out_of_band(obj):
    """(stream, buffers) of a protocol-5 pickle with out-of-band buffers."""
    buffers = []
    stream = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return stream, buffers


class Crafted:
    """Pickles as the given reduce tuple: a stream carrying hand-made state for
    scopeops' own reconstructors, as a corrupted or hostile pickle would."""

    def __init__(self, *reduce_value):
        self.reduce_value = reduce_value

    def __reduce__(self):
        return self.reduce_value


def reconstructor(obj):
    """The reconstructor and its arguments from ``obj.__reduce__()``."""
    rebuild, args, _state = obj.__reduce__()[:3]
    return rebuild, args


# -- blobs -------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["text", 7, 2.5, b"raw", [1, "two"], {"k": 1}],
                         ids=["str", "int", "float", "bytes", "list", "dict"])
def test_a_blob_holding_a_value_comes_back_with_it_and_its_type(value):
    ws = so.Workspace()
    ws["v"] = value
    back = round_trip(ws.get_blob("v"))
    assert back.get() == value
    assert back.meta is ws.get_blob("v").meta
    assert back.name == "v"


def test_an_empty_blob_comes_back_empty():
    back = round_trip(so.Workspace().create_blob("e"))
    assert back.is_empty() and back.name == "e"


def test_a_blob_holding_none_is_not_taken_for_an_empty_one():
    blob = so.Workspace().feed_blob("n", None)
    back = round_trip(blob)
    assert not back.is_empty() and back.get() is None


def test_a_tensor_blob_comes_back_owning_its_buffer_and_reuses_it():
    blob = so.Workspace().create_blob("t")
    blob.tensor((3, 4), np.float32)[...] = np.arange(12).reshape(3, 4)
    back = round_trip(blob)
    arr = back.get()
    np.testing.assert_array_equal(arr, np.arange(12, dtype=np.float32).reshape(3, 4))
    assert back.tensor((3, 4), np.float32) is arr          # unchanged shape: the array itself
    shrunk = back.tensor((2, 2), np.float32)
    assert np.shares_memory(shrunk, arr)                   # a shrink reuses the buffer


def test_an_array_set_by_the_caller_is_never_written_through_after_the_trip():
    blob = so.Workspace().feed_blob("a", np.ones(4))
    back = round_trip(blob)
    given = back.get()
    back.tensor((4,), np.float64)[...] = 5.0
    np.testing.assert_array_equal(given, np.ones(4))


def test_a_four_mib_tensor_travels_out_of_band_and_is_not_copied_on_arrival():
    ws = so.Workspace()
    ws.create_blob("big").tensor((MIB,), np.float32)[...] = 1.25
    stream, buffers = out_of_band(ws)
    assert len(stream) < 4096
    assert sum(pickle.PickleBuffer(b).raw().nbytes for b in buffers) == 4 * MIB
    received = [bytearray(pickle.PickleBuffer(b).raw()) for b in buffers]
    back = pickle.loads(stream, buffers=received)
    big = back["big"]
    assert big.dtype == np.float32 and big.shape == (MIB,) and np.all(big == 1.25)
    assert any(np.shares_memory(big, np.frombuffer(r, np.uint8)) for r in received)
    assert back.get_blob("big").tensor((MIB,), np.float32) is big


def test_a_read_only_buffer_is_copied_into_memory_the_blob_owns():
    blob = so.Workspace().create_blob("t")
    blob.tensor((8,), np.float64)[...] = 3.0
    stream, buffers = out_of_band(blob)
    read_only = [bytes(pickle.PickleBuffer(b).raw()) for b in buffers]
    back = pickle.loads(stream, buffers=read_only)
    assert back.get().flags.writeable
    back.tensor((8,), np.float64)[...] = 4.0               # writes its own memory
    np.testing.assert_array_equal(back.get(), np.full(8, 4.0))


def test_a_shallow_copy_is_refused_and_a_deep_copy_is_independent():
    ws = so.Workspace()
    ws.create_blob("t").tensor((2,), np.float32)[...] = 1.0
    with pytest.raises(TypeError, match="shallow copy"):
        copy.copy(ws)
    with pytest.raises(TypeError, match="shallow copy"):
        copy.copy(ws.get_blob("t"))
    with pytest.raises(TypeError, match="shallow copy"):
        copy.copy(so.WorkspaceStack())
    twin = copy.deepcopy(ws)
    twin["t"][...] = 9.0
    np.testing.assert_array_equal(ws["t"], [1.0, 1.0])


# -- workspaces and stacks: the graph ----------------------------------------------


def test_two_children_of_one_parent_share_one_parent_after_the_trip():
    parent = so.Workspace()
    parent["p"] = np.arange(3.0)
    left, right = so.Workspace(shared=parent), so.Workspace(shared=parent)
    left2, right2 = round_trip([left, right])
    assert left2.shared is right2.shared
    left2.shared["q"] = 1
    assert right2["q"] == 1
    np.testing.assert_array_equal(right2["p"], np.arange(3.0))


def test_forwardings_and_bindings_come_back_pointing_into_the_unpickled_parent():
    parent = so.Workspace()
    parent["a"] = 1
    parent["b"] = 2
    child = so.Workspace.from_bindings(parent, {"x": "a"})
    child.add_blob_mapping(parent, {"y": "b"})
    parent2, child2 = round_trip([parent, child])
    assert child2.forwarded_blobs() == {"x": (parent2, "a"), "y": (parent2, "b")}
    assert child2.get_blob("x") is parent2.get_blob("a")
    parent2["a"] = 10
    assert child2["x"] == 10


def test_a_workspace_holding_a_stack_whose_workspaces_forward_into_it_survives():
    root = so.Workspace()
    root["w"] = np.ones(3)
    stack = so.WorkspaceStack()
    root["scope"] = stack
    child = stack.push_forward_workspace(root, {"w_in": "w"})
    child["local"] = "mine"
    # The cycle entered from each of its members.
    for start, root_of in [(root, lambda back: back),
                           (child, lambda back: back.forwarded_blobs()["w_in"][0]),
                           (stack, lambda back: back.top.forwarded_blobs()["w_in"][0])]:
        root2 = root_of(round_trip(start))
        top = root2["scope"].top
        assert top.forwarded_blobs()["w_in"][0] is root2
        assert top.get_blob("w_in") is root2.get_blob("w")
        assert top["local"] == "mine"


def test_a_stack_keeps_its_depth_capacity_debug_flag_and_dormant_workspaces():
    root = so.Workspace()
    root["a"] = 1
    stack = so.WorkspaceStack(debug=True)
    for _ in range(3):
        stack.push_forward_workspace(root, {"x": "a"})
    stack.pop_gradient_workspace(root)
    root2, stack2 = round_trip([root, stack])
    assert (len(stack2), stack2.capacity, stack2.debug) == (2, 3, True)
    dormant = stack2.workspaces()[2]
    assert stack2.push_forward_workspace(root2, {"x": "a"}) is dormant
    assert stack2.capacity == 3
    # The debug checks remember the parent they were used with.
    with pytest.raises(so.StackError, match="Parent workspace mismatch"):
        stack2.push_forward_workspace(so.Workspace(), {"x": "a"})


def test_an_unpickled_bound_workspace_is_reused_by_the_push_fast_path():
    root = so.Workspace()
    root["a"] = np.zeros(2)
    stack = so.WorkspaceStack()
    stack.push_forward_workspace(root, {"x": "a"})
    stack.pop_gradient_workspace(root)
    root2, stack2 = round_trip([root, stack])
    before = structure_epoch()
    child = stack2.push_forward_workspace(root2, {"x": "a"})
    assert structure_epoch() == before          # no rebind: the bound state came back
    assert child is stack2.workspaces()[0]
    assert child.get_blob("x") is root2.get_blob("a")


def test_a_bound_workspace_whose_local_hides_a_binding_is_rebound_after_the_trip():
    root = so.Workspace()
    root["a"] = np.zeros(2)
    stack = so.WorkspaceStack()
    child = stack.push_forward_workspace(root, {"x": "a"})
    child.create_local_blob("x").set("hides the binding")
    stack.pop_gradient_workspace(root)
    root2, stack2 = round_trip([root, stack])
    child2 = stack2.push_forward_workspace(root2, {"x": "a"})
    assert child2.get_blob("x") is root2.get_blob("a")


def test_spare_snapshot_buffers_stay_behind():
    root = so.Workspace()
    root.create_blob("a").tensor((MIB // 8,), np.float64)[...] = 1.0
    stack = so.WorkspaceStack()
    root["scope"] = stack
    child = stack.push_forward_workspace(root, {"x": "a"})
    child.copy_forwarded_tensors(["x"])          # a local 1 MiB snapshot
    stack.pop_gradient_workspace(root)
    stack.push_forward_workspace(root, {"x": "a"})   # the snapshot goes; its buffer is kept
    assert root.nbytes == 2 * MIB
    _, buffers = out_of_band(root)
    assert sum(pickle.PickleBuffer(b).raw().nbytes for b in buffers) == MIB
    assert round_trip(root).nbytes == MIB


def test_lookups_after_the_trip_follow_changes_made_after_it():
    parent = so.Workspace()
    parent["x"] = 1
    child = so.Workspace(shared=parent)
    forwarder = so.Workspace.from_bindings(parent, {"y": "x"})
    assert child["x"] == 1 and forwarder["y"] == 1      # resolved (and cached) here
    parent2, child2, forwarder2 = round_trip([parent, child, forwarder])
    assert child2["x"] == 1 and forwarder2["y"] == 1
    parent2.rename_blob("x", "z")
    assert "x" not in child2 and "y" not in forwarder2 and child2["z"] == 1
    assert child["x"] == 1 and forwarder["y"] == 1       # the originals are untouched


def test_unpickled_workspaces_push_pop_look_up_and_create():
    root = so.Workspace()
    root["a"] = np.arange(4.0)
    back = round_trip(root)
    stack = so.WorkspaceStack()
    child = stack.push_forward_workspace(back, {"x": "a"})
    assert type(child) is so.Workspace
    child["y"] = child["x"] * 2
    assert stack.pop_gradient_workspace(back) is child
    back.rename_blob("a", "b")
    assert back.blobs() == ["b"] and "a" not in back


# -- nets travel as NetDefs, built on first use ------------------------------------


def test_a_workspace_runs_its_nets_after_the_trip_and_gives_the_same_gradients():
    net = do_fc_training_net("pickled_train")
    rng = np.random.default_rng(0)
    ws = so.Workspace()
    for name, shape in [("x", (5, 3)), ("w", (5, 3)), ("W", (2, 3)), ("bias", (2,))]:
        ws[name] = rng.standard_normal(shape).astype(np.float32)
    ws.create_net(net)
    ws.run_net("pickled_train")
    expected = {name: ws[name].copy() for name in ("loss", "W_grad", "w_grad", "x_grad")}
    back = round_trip(ws)
    assert back.nets() == ["pickled_train"]
    back.run_net("pickled_train")
    for name, value in expected.items():
        np.testing.assert_array_equal(back[name], value)
    assert back.get_net("pickled_train").netdef == net.netdef


def test_a_net_that_cannot_be_built_on_arrival_fails_on_first_use_not_when_unpickled():
    ws = so.Workspace()
    ws.feed_blob("x", np.ones(2, np.float32))
    net = so.Net("needs_y")
    net.Add(["x", "y"], ["z"])
    ws.feed_blob("y", np.ones(2, np.float32))
    ws.create_net(net)
    ws.remove_blob("y")
    back = round_trip(ws)                       # builds nothing
    assert back.nets() == ["needs_y"]
    with pytest.raises(so.OperatorError, match="needs_y"):
        back.run_net("needs_y")


# -- definitions and the Net builder -----------------------------------------------


def test_operator_and_net_defs_come_back_equal_with_every_field():
    with so.DeviceScope(so.DeviceOption("cpu", 0, node_name="n1", extra_info=("e",))):
        op = so.create_operator("Add", ["a", "b"], ["c"], name="adder", broadcast=1,
                                engine="FAST")
    netdef = so.NetDef(name="n", ops=[op], external_inputs=["a", "b"],
                       external_outputs=["c"])
    back = round_trip(netdef)
    assert back == netdef
    assert back.ops[0].device_option == op.device_option
    assert back.ops[0].debug_info == op.debug_info and "test_pickle.py" in op.debug_info


def test_a_net_def_that_contains_itself_keeps_its_cycle():
    outer = so.NetDef(name="outer")
    outer.ops.append(so.OperatorDef("Do", ["s"], ["s"], args={"net": None}))
    outer.ops[0].args["net"] = outer
    back = round_trip(outer)
    assert back.ops[0].args["net"] is back


def test_a_net_builder_comes_back_with_its_ops_and_a_fresh_prefix_in_this_process():
    net = so.Net("roundtrip_builder")
    first = net.Relu(["x"], 1)
    back = round_trip(net)
    assert back.netdef == net.netdef and back.name == net.name
    added = back.Relu([first], 1)
    assert added != net.Relu([first], 1)        # two nets never write one automatic blob
    assert str(added).startswith(back.auto_prefix + "/")


def test_a_net_builder_keeps_its_prefix_in_a_process_that_never_saw_it(tmp_path):
    net = so.Net("sent_builder")
    net.Relu(["x"], 1)
    (tmp_path / "net.pkl").write_bytes(pickle.dumps(net))
    result = run_python(f"""
        import pickle
        net = pickle.loads(open({str(tmp_path / "net.pkl")!r}, "rb").read())
        print(net.auto_prefix, net.Relu(["x"], 1))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [net.auto_prefix, f"{net.auto_prefix}/Relu_1"]


def test_a_workspace_with_nets_works_in_another_process(tmp_path):
    ws = so.Workspace()
    ws["x"] = np.arange(4.0, dtype=np.float32)
    net = so.Net("doubler")
    net.Add(["x", "x"], ["y"])
    ws.create_net(net)
    (tmp_path / "ws.pkl").write_bytes(pickle.dumps(ws, protocol=5))
    result = run_python(f"""
        import pickle
        ws = pickle.loads(open({str(tmp_path / "ws.pkl")!r}, "rb").read())
        ws.run_net("doubler")
        print(ws["y"].tolist())
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[0.0, 2.0, 4.0, 6.0]"


# -- what unpickling runs ----------------------------------------------------------


class OnlyScopeopsAndNumpy(pickle.Unpickler):
    """Loads only classes and functions of scopeops and numpy, and records them."""

    def __init__(self, stream):
        super().__init__(io.BytesIO(stream))
        self.loaded = set()

    def find_class(self, module, name):
        if module.split(".")[0] not in ("scopeops", "numpy"):
            raise pickle.UnpicklingError(f"refused {module}.{name}")
        self.loaded.add(f"{module}.{name}")
        return super().find_class(module, name)


def test_the_stream_names_only_scopeops_reconstructors_and_numpy():
    root = so.Workspace()
    root.create_blob("t").tensor((4,), np.float32)[...] = 2.0
    root["caller"] = np.ones(2)
    stack = so.WorkspaceStack()
    root["scope"] = stack
    stack.push_forward_workspace(root, {"x": "t"})
    net = so.Net("listed")
    net.Add(["t", "t"], ["u"])
    root.create_net(net)
    stream = pickle.dumps([root, net, net.netdef], protocol=5)
    unpickler = OnlyScopeopsAndNumpy(stream)
    root2, net2, _ = unpickler.load()
    assert {name for name in unpickler.loaded if name.startswith("scopeops")} == {
        "scopeops._workspace._rebuild_workspace", "scopeops.workspace.Workspace",
        "scopeops._blob._rebuild_blob", "scopeops._stack._rebuild_stack",
        "scopeops.defs._rebuild_definition", "scopeops.defs.NetDef", "scopeops.defs.OperatorDef",
        "scopeops.net._rebuild_net"}
    root2.run_net("listed")
    np.testing.assert_array_equal(root2["u"], [4.0] * 4)
    assert net2.netdef == net.netdef


# -- malformed state is refused, before any change ---------------------------------


def test_a_shared_parent_cycle_in_a_stream_is_refused():
    rebuild, args = reconstructor(so.Workspace())
    first = Crafted(rebuild, args, None)
    second = Crafted(rebuild, args, ((1, first, {}, {}, None, {}), {}))
    first.reduce_value = (rebuild, args, ((1, second, {}, {}, None, {}), {}))
    with pytest.raises(so.PickleStateError, match="cycle"):
        pickle.loads(pickle.dumps(first))


def test_a_workspace_that_would_read_through_to_itself_is_refused():
    rebuild, args = reconstructor(so.Workspace())
    ws = rebuild(*args)
    with pytest.raises(so.PickleStateError, match="cycle"):
        ws.__setstate__(((1, ws, {}, {}, None, {}), {}))
    ws.__setstate__(((1, None, {}, {}, None, {}), {}))     # nothing was taken: still new


@pytest.mark.parametrize("state, phrase", [
    ((2, None, {}, {}, None, {}), "state format 2"),
    ((1, "parent", {}, {}, None, {}), "shared parent is a str"),
    ((1, None, {"a": 1}, {}, None, {}), "map names"),
    ((1, None, {}, {"x": ("not a workspace", "a")}, None, {}), "forwardings"),
    ((1, None, {}, {}, None, {"x": "a"}), "no bound parent"),
    ((1, None, {}, {}, None, {"x": 3}), "bindings map names"),
    ((1, None), "tuple of 6"),
], ids=["version", "shared", "blob", "forward", "bound parent", "binding", "short"])
def test_malformed_workspace_state_is_refused(state, phrase):
    rebuild, args = reconstructor(so.Workspace())
    stream = pickle.dumps(Crafted(rebuild, args, (state, {})))
    with pytest.raises(so.PickleStateError, match=phrase):
        pickle.loads(stream)


def test_a_class_that_is_not_a_workspace_is_refused_by_the_reconstructor():
    rebuild, _ = reconstructor(so.Workspace())
    with pytest.raises(so.PickleStateError, match="not a Workspace class"):
        pickle.loads(pickle.dumps(Crafted(rebuild, (dict,))))


def test_setting_state_on_a_live_workspace_stack_or_blob_is_refused():
    ws = so.Workspace()
    ws["a"] = 1
    with pytest.raises(so.PickleStateError, match="set once"):
        ws.__setstate__(ws.__reduce__()[2])
    stack = so.WorkspaceStack()
    with pytest.raises(so.PickleStateError, match="set once"):
        stack.__setstate__(stack.__reduce__()[2])
    blob = ws.get_blob("a")
    with pytest.raises(so.PickleStateError, match="set once"):
        blob.__setstate__((1, "a", 1, 2))
    assert blob.get() == 1 and ws.blobs() == ["a"]


@pytest.mark.parametrize("state, phrase", [
    ((1, [], 1, False, None, None, None), "depth"),
    ((1, ["ws"], 0, False, None, None, None), "list of Workspaces"),
    ((1, [], 0, 1, None, None, None), "debug flag"),
    ((1, [], 0, False, None, {"x": 1}, None), "debug bindings"),
    ((9, [], 0, False, None, None, None), "state format 9"),
], ids=["depth", "workspaces", "debug", "bindings", "version"])
def test_malformed_stack_state_is_refused(state, phrase):
    rebuild, args = reconstructor(so.WorkspaceStack())
    with pytest.raises(so.PickleStateError, match=phrase):
        pickle.loads(pickle.dumps(Crafted(rebuild, args, state)))


def test_a_stack_holding_one_workspace_twice_is_refused():
    ws = so.Workspace()
    rebuild, args = reconstructor(so.WorkspaceStack())
    with pytest.raises(so.PickleStateError, match="twice"):
        pickle.loads(pickle.dumps(Crafted(rebuild, args, (1, [ws, ws], 0, False, None, None,
                                                          None))))


@pytest.mark.parametrize("state, phrase", [
    ((1, "t", 2, np.array(["text"])), "bool or numeric"),
    ((1, "t", 2, [1, 2]), "not an ndarray"),
    ((1, "t", 0, 5), "empty Blob carries a value"),
    ((1, "", 1, 5), "name"),
    ((1, "t", 3, 5), "holds nothing"),
    ((0, "t", 1, 5), "state format 0"),
], ids=["object tensor", "list tensor", "empty with value", "empty name", "kind", "version"])
def test_malformed_blob_state_is_refused(state, phrase):
    rebuild, args = reconstructor(so.Workspace().create_blob("b"))
    with pytest.raises(so.PickleStateError, match=phrase):
        pickle.loads(pickle.dumps(Crafted(rebuild, args, state)))


@pytest.mark.parametrize("field, value, phrase", [
    ("type", "", "type is a non-empty str"),
    ("inputs", "a", "inputs are a list"),
    ("args", {1: 2}, "str keys"),
    ("is_gradient_op", "yes", "is_gradient_op is a bool"),
], ids=["type", "inputs", "args", "flag"])
def test_malformed_operator_def_state_is_refused(field, value, phrase):
    op = so.OperatorDef("Relu", ["x"], ["y"])
    rebuild, args, (version, values) = op.__reduce__()
    values = dict(values, **{field: value})
    with pytest.raises(so.PickleStateError, match=phrase):
        pickle.loads(pickle.dumps(Crafted(rebuild, args, (version, values))))


def test_a_net_def_with_unknown_fields_or_foreign_ops_is_refused():
    rebuild, args, (version, values) = so.NetDef(name="n").__reduce__()
    with pytest.raises(so.PickleStateError, match="fields"):
        pickle.loads(pickle.dumps(Crafted(rebuild, args, (version, dict(values, extra=1)))))
    with pytest.raises(so.PickleStateError, match="list of OperatorDefs"):
        pickle.loads(pickle.dumps(Crafted(rebuild, args, (version, dict(values, ops=["op"])))))
    with pytest.raises(so.PickleStateError, match="neither"):
        pickle.loads(pickle.dumps(Crafted(rebuild, (dict,))))


def test_the_refusal_is_also_an_unpickling_error():
    assert issubclass(so.PickleStateError, pickle.UnpicklingError)
    assert issubclass(so.PickleStateError, so.ScopeError)
