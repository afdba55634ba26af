"""scopeops.caffe2.python.core: Caffe2's Net, CreateOperator, BlobReference and helpers
(docs/caffe2.md)."""

import inspect
import re
import threading

import numpy as np
import pytest

import scopeops as so
from scopeops.caffe2.proto import caffe2_pb2
from scopeops.caffe2.python import core, workspace


@pytest.fixture(autouse=True)
def clean_workspace():
    workspace.ResetWorkspace()
    yield
    workspace.ResetWorkspace()


# -- net names and automatic blob names ----------------------------------------------------------


def test_net_names_are_unique_in_the_process():
    a, b, c = core.Net("uniq"), core.Net("uniq"), core.Net("uniq")
    assert (a.Name(), b.Name(), c.Name()) == ("uniq", "uniq_1", "uniq_2")
    copy = core.Net(a.Proto())                    # from a NetDef: a copy, renamed too
    assert copy.Name() == "uniq_3" and copy.Proto() is not a.Proto()


def test_net_names_are_unique_across_threads():
    names = []

    def make():
        names.extend(core.Net("threaded").Name() for _ in range(50))

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(names)) == 200


def test_unnamed_nets_get_unique_empty_based_names():
    first = core.Net(None)
    second = core.Net("")
    assert first.Name() != second.Name()
    assert all(re.fullmatch(r"(_\d+)?", n) for n in (first.Name(), second.Name()))


def test_automatic_output_names_follow_caffe2():
    net = core.Net("autonames")
    x = net.AddExternalInput("x")
    assert str(net.Sum([x, x])) == "autonames/Sum"
    assert str(net.Sum([x, x])) == "autonames/Sum_2"
    assert [str(r) for r in net.Sum([x, x], outputs=2)] == ["autonames/Sum:0", "autonames/Sum:1"]
    assert [str(r) for r in net.Sum([x, x], outputs=2)] == ["autonames/Sum_2:0",
                                                           "autonames/Sum_2:1"]
    with core.NameScope("n1"):
        assert str(net.Sum([x, x])) == "n1/autonames/Sum"
    assert str(net.Sum([x, x], outputs=1)) == "autonames/Sum_3:0"
    assert net.NextName() == "autonames_blob_0" and net.NextName() == "autonames_blob_1"


def test_automatic_names_of_two_nets_with_the_same_name_never_collide():
    a, b = core.Net("twin"), core.Net("twin")
    names = []
    for scope in [None, "n1", "n2"]:
        with core.NameScope(scope):
            for net in (a, b):
                x = net.AddExternalInput(core.ScopedBlobReference(f"in{len(names)}"))
                names.append(str(net.Sum([x, x])))
                names.extend(str(r) for r in net.Sum([x, x], outputs=2))
    assert len(names) == len(set(names)) == 18
    a._CheckLookupTables()
    b._CheckLookupTables()


def test_next_blob_and_next_scoped_blob():
    net = core.Net("nextblob")
    assert [str(net.NextBlob("b")) for _ in range(3)] == ["b", "b_auto_0", "b_auto_1"]
    with core.NameScope("s"):
        assert str(net.NextScopedBlob("w")) == "s/w"
        assert str(net.NextScopedBlob("w")) == "s/w_auto_0"
    net.ConstantFill([], "taken")
    assert str(net.NextBlob("taken")) == "taken_auto_0"
    assert net.NextBlob("b").Net() is None


def test_two_nets_built_alike_have_equal_ops():
    def build():
        net = core.Net("alike")
        with core.NameScope("foo"):
            net.Add(["a", "b"], net.NextScopedBlob("ab"))
        net.Add(["c", "d"], net.NextBlob("cd"))
        return net

    first, second = build(), build()
    assert first.Name() != second.Name()
    assert list(first.Proto().op) == list(second.Proto().op)
    assert first.Proto().op[0].output[0] == "foo/ab" and first.Proto().op[1].output[0] == "cd"
    assert list(first.Proto().external_input) == ["foo/a", "foo/b", "c", "d"]


# -- external inputs and outputs -----------------------------------------------------------


def test_external_inputs_and_outputs():
    net = core.Net("externals")
    a = net.AddExternalInput("a")
    b, c = net.AddExternalInputs("b", "c")
    assert isinstance(a, core.BlobReference) and a.Net() is net
    with pytest.raises(AssertionError, match="already contains an input named a"):
        net.AddExternalInput("d", "a")
    assert list(net.Proto().external_input) == ["a", "b", "c"]   # nothing added on error
    assert net.external_inputs == ["a", "b", "c"]
    y = net.Sum([a, b], "y")
    with pytest.raises(AssertionError):
        net.AddExternalOutput("y")                  # a str, not a BlobReference
    with pytest.raises(AssertionError):
        net.AddExternalOutput(core.BlobReference("undefined"))
    net.AddExternalOutput(y)
    assert net.external_outputs == ["y"]
    with core.NameScope("s"):
        assert net.AddScopedExternalInputs("e") == ["s/e"]


def test_undefined_inputs_of_op_sugar_become_external_inputs():
    net = core.Net("undefined_inputs")
    net.Sum(["in1", "in2"], ["sum1"])
    assert "in1" in net.external_inputs and "sum1" not in net.external_inputs
    net.Sum(["sum1", "in1"], ["sum2"])
    assert list(net.Proto().external_input) == ["in1", "in2"]
    own = core.BlobReference("later", net)
    with pytest.raises(AssertionError):
        net.Relu(own, "z")                          # bound to this net, yet undefined


def test_op_sugar_refuses_unregistered_types_and_offers_close_names():
    net = core.Net("sugar")
    with pytest.raises(AttributeError, match="Reluu is not a registered operator.*Relu"):
        net.Reluu("x", "y")
    with pytest.raises(AttributeError):
        _ = net._private
    assert "Relu" in dir(net)


def test_op_sugar_returns_references_bound_to_the_net():
    net = core.Net("returns")
    x = net.AddExternalInput("x")
    y = net.Relu(x, "y")
    assert isinstance(y, core.BlobReference) and y.Net() is net and str(y) == "y"
    assert net.Sum([x, y], []) is None                  # no outputs
    first, second = net.Sum([x], ["p", "q"])
    assert (str(first), str(second)) == ("p", "q")


# -- BlobReference, ScopedName -------------------------------------------------------------------


def test_blob_reference_equality_hash_and_concatenation():
    net = core.Net("refs")
    ref = core.BlobReference("x", net)
    assert ref == "x" and ref == b"x" and ref == core.BlobReference("x") and ref != "y"
    assert hash(ref) == hash("x") and {ref: 1}["x"] == 1
    assert str(ref + "_grad") == "x_grad" and (ref + "_grad").Net() is net
    assert str("pre_" + ref) == "pre_x"
    with pytest.raises(RuntimeError, match="non-string"):
        ref + ref
    with pytest.raises(RuntimeError, match="non-string"):
        1 + ref
    assert repr(ref) == 'BlobReference("x")'
    assert core.BlobReference(b"bytes") == "bytes"
    assert core.BlobReference("a/b/c").GetNameScope() == "a/b/"
    assert core.BlobReference("c").GetNameScope() == ""


def test_blob_references_ignore_the_name_scope_and_scoped_ones_apply_it():
    with core.NameScope("foo"):
        with core.NameScope("bar"):
            assert str(core.BlobReference("v")) == "v"
            assert str(core.ScopedBlobReference("v")) == "foo/bar/v"
            assert core.ScopedName(b"w") == "foo/bar/w"


def test_op_sugar_on_a_blob_reference_prepends_it():
    net = core.Net("refsugar")
    x = net.AddExternalInput("x")
    inputs = ["w"]
    y = x.Sum(inputs, "y")
    assert list(net.Proto().op[-1].input) == ["x", "w"] and y.Net() is net
    assert inputs == ["x", "w"]                       # Caffe2 inserts into the caller's list
    with pytest.raises(RuntimeError, match="net source"):
        core.BlobReference("lonely").Relu([], "z")
    with pytest.raises(RuntimeError, match="not a registered operator"):
        x.Nothing([], "z")


# -- CreateOperator ------------------------------------------------------------------------------


def test_create_operator_with_every_field_accepts_unregistered_types():
    option = core.DeviceOption(caffe2_pb2.CUDA, 1)
    op = core.CreateOperator("Ludicrous", "x", "y", name="ludicrous", control_input="z",
                             device_option=option, engine="WARP", arg1=1, arg2="2",
                             arg3=[1, 2, 3])
    assert (op.type, op.name, op.engine) == ("Ludicrous", "ludicrous", "WARP")
    assert list(op.input) == ["x"] and list(op.output) == ["y"]
    assert list(op.control_input) == ["z"] and op.device_option == option
    assert op.arg[0].i == 1 and op.arg[1].s == b"2" and list(op.arg[2].ints) == [1, 2, 3]
    with pytest.raises(so.OperatorError, match="Unknown operator type 'Ludicrous'"):
        workspace.RunOperatorOnce(op)


def test_create_operator_applies_the_name_scope_to_plain_names_only():
    with core.NameScope("foo"):
        op = core.CreateOperator("Relu", "x", "y")
        assert (list(op.input), list(op.output)) == (["foo/x"], ["foo/y"])
        op = core.CreateOperator("Relu", core.BlobReference("x"), core.BlobReference("y"))
        assert (list(op.input), list(op.output)) == (["x"], ["y"])
        with core.NameScope("bar", reset=True):
            assert list(core.CreateOperator("Relu", "x", "y").input) == ["bar/x"]
    # The native create_operator takes names as they are (a deliberate difference).
    with so.NameScope("foo"):
        assert so.create_operator("Relu", ["x"], ["y"]).inputs == ["x"]


def test_create_operator_device_options():
    op = core.CreateOperator("Relu", "x", "y")
    assert not op.HasField("device_option") and op.HasField("name") and op.name == ""
    cuda = core.DeviceOption(caffe2_pb2.CUDA, 1)
    with core.DeviceScope(cuda):
        assert core.CreateOperator("Relu", "x", "y").device_option == cuda
        cpu = core.CreateOperator("Relu", "x", "y",
                                  device_option=core.DeviceOption(caffe2_pb2.CPU))
        assert cpu.device_option.device_type == caffe2_pb2.CPU
    seeded = core.CreateOperator("Relu", "x", "y", random_seed=7)
    assert seeded.device_option.random_seed == 7 and not seeded.arg


def test_create_operator_argument_errors():
    with pytest.raises(ValueError):
        core.CreateOperator("Ludicrous", "x", "y", arg1=None)
    with pytest.raises(TypeError, match="I/O blob #1"):
        core.CreateOperator("Relu", ["x", 3], "y")
    with pytest.raises(TypeError, match="Unknown input/output type"):
        core.CreateOperator("Relu", 3, "y")
    args = core.CreateOperator("X", [], [], empty=[], flag=True, text="é").arg
    assert not args[0].ints and not args[0].floats and args[0].name == "empty"
    assert args[1].i == 1 and args[2].s == "é".encode()


# -- copies ---------------------------------------------------------------------------------


def test_clone_renames_blobs_and_masks_ops():
    net = core.Net("original_for_clone")
    x = net.AddExternalInput("x")
    y = net.Relu(x, "y")
    net.Sum([y, y], "z")
    net.AddExternalOutput(y)
    clone = net.Clone("clone_net", blob_remap={"x": "x2", "y": "y2"}, op_id_mask=[0])
    assert clone.Name() == "clone_net"
    assert [op.type for op in clone.Proto().op] == ["Relu"]
    assert list(clone.Proto().op[0].input) == ["x2"]
    assert list(clone.Proto().external_input) == ["x2"]
    assert list(clone.Proto().external_output) == ["y2"]
    assert len(net.Proto().op) == 2
    assert net.Clone("clone_net").Name() == "clone_net_1"


def test_clone_partial_keeps_only_the_ops_needed():
    net = core.Net("partial")
    a1, a2 = net.AddExternalInput("a1", "a2")
    b1 = net.Sum([a1], "b1")
    b2 = net.Sum([a2], "b2")
    c1 = net.Sum([b1, b2, "p1"], "c1")
    d = net.Sum([c1, b2], "d")
    net.Sum([d], "e")
    clone, outputs = net.ClonePartial("f1", {a1: "a11", a2: "a22"}, [d])
    assert [str(o) for o in outputs] == ["f1/d"] and outputs[0].Net() is clone
    assert len(clone.Proto().op) == 4
    assert set(clone.Proto().external_input) == {"a11", "a22", "p1"}
    assert list(clone.Proto().external_output) == ["f1/d"]
    used = {n for op in clone.Proto().op for n in list(op.input) + list(op.output)}
    assert used == {"a11", "a22", "p1", "f1/b1", "f1/b2", "f1/c1", "f1/d"}
    clone2, _ = net.ClonePartial("f2", [b1, b2], [d])
    assert len(clone2.Proto().op) == 2
    with pytest.raises(AssertionError, match="generate the given input"):
        net.ClonePartial("f3", [a1, a2, c1], [d])
    net._CheckLookupTables()


def test_append_net_merges_external_inputs():
    net_a = core.Net("append_a")
    net_a.Sum(["in1", "in2"], ["sum1"])
    net_b = core.Net("append_b")
    net_b.Sum(["in3", "in4"], ["in1"])
    assert net_b.AppendNet(net_a) is net_b
    assert list(net_b.Proto().external_input) == ["in3", "in4", "in2"]
    assert [op.type for op in net_b.Proto().op] == ["Sum", "Sum"]
    other_a = core.Net("append_a")
    other_a.Sum(["in1", "in2"], ["sum1"])
    other_b = core.Net("append_b")
    other_b.Sum(["in3", "in4"], ["in1"])
    other_a.AppendNet(other_b)
    assert "in1" in other_a.external_inputs


def test_const_blobs():
    net = core.Net("consts")
    f = net.Const(2.0)
    i = net.Const(0)
    b = net.Const(True)
    named = net.Const(np.array([1, 2], dtype=np.int32), blob_out="ci")
    assert [str(f), str(i), str(b), str(named)] == [
        "consts/GivenTensorFill:0", "consts/GivenTensorInt64Fill:0", "consts/ConstantFill:0",
        "ci"]
    workspace.RunNetOnce(net)
    assert workspace.FetchBlob(f).dtype == np.float32 and workspace.FetchBlob(f) == 2.0
    assert workspace.FetchBlob(i).dtype == np.int64 and workspace.FetchBlob(i).shape == ()
    assert workspace.FetchBlob(b).dtype == np.bool_ and workspace.FetchBlob(b)
    np.testing.assert_array_equal(workspace.FetchBlob("ci"), np.array([1, 2], np.int32))
    assert workspace.FetchBlob("ci").dtype == np.int32


# -- operator tracebacks --------------------------------------------------------------------------


def test_populate_proto_with_file_name_names_ops_by_their_creation_site():
    net = core.Net("traceback_names")
    a, b = net.AddExternalInput("a", "b")
    net.Mul([a, b], "c")
    line = inspect.currentframe().f_lineno - 1
    net.PopulateProtoWithFileName()
    assert net.Proto().op[0].name == \
        f"{__file__}:{line}:test_populate_proto_with_file_name_names_ops_by_their_creation_site"


def test_a_failing_operator_says_where_it_was_created():
    net = core.Net("traceback_errors")
    a = net.AddExternalInput("a")
    workspace.FeedBlob("a", np.array([1.0, 2.0], np.float32))
    net.Relu(a, "b")
    net.Mul([a, "missing"], "c")
    line = inspect.currentframe().f_lineno - 1
    with pytest.raises(so.OperatorError) as built:
        workspace.CreateNet(net)
    assert f'line {line}' in str(built.value) and "Mul" in str(built.value)
    assert __file__ in str(built.value)
    with pytest.raises(so.OperatorError, match=f"line {line}"):
        workspace.RunNetOnce(net)
    ws = workspace.C.Workspace()
    ws.create_blob("a").feed(np.ones(2, np.float32))
    with pytest.raises(so.OperatorError, match=f"line {line}"):
        ws.run(net)


def test_run_time_failures_name_the_site_too():
    net = core.Net("traceback_runtime")
    x, y = net.AddExternalInput("x", "y")
    net.Add([x, y], "z")
    line = inspect.currentframe().f_lineno - 1
    workspace.FeedBlob("x", np.ones(3, np.float32))
    workspace.FeedBlob("y", np.ones(2, np.float32))
    workspace.CreateNet(net)
    with pytest.raises(so.OperatorError, match=f"line {line}.*test_run_time_failures"):
        workspace.RunNet(net)
    assert workspace.RunNet(net.Name(), allow_fail=True) is False


# -- small functions ------------------------------------------------------------------------------


def test_registry_queries():
    assert core.IsOperator("Relu") and not core.IsOperator("NOEXIST")
    assert core.IsOperatorWithEngine("Relu", "DEFAULT")
    assert not core.IsOperatorWithEngine("Relu", "NOEXIST")
    assert "Relu" in core.RegisteredOperators()
    assert core.RegisteredOperators() == sorted(core.RegisteredOperators())


def test_device_option_sets_type_and_gpu_id_explicitly():
    option = core.DeviceOption(caffe2_pb2.CPU)
    assert option.HasField("device_type") and option.HasField("cuda_gpu_id")
    assert not option.HasField("node_name") and not option.HasField("random_seed")
    full = core.DeviceOption(caffe2_pb2.CUDA, 3, random_seed=5, node_name="n")
    assert (full.cuda_gpu_id, full.random_seed, full.node_name) == (3, 5, "n")


def test_device_option_equal():
    opt1, opt2 = core.DeviceOption(0), core.DeviceOption(0)
    assert core.device_option_equal(opt1, opt2)
    opt2.node_name = "test"
    assert core.device_option_equal(opt1, opt2)
    assert not core.device_option_equal(opt1, opt2, ignore_node_name=False)
    opt1.node_name = "test"
    assert core.device_option_equal(opt1, opt2, ignore_node_name=False)
    e1, e2 = caffe2_pb2.DeviceOption(), caffe2_pb2.DeviceOption()
    assert core.device_option_equal(e1, e2)
    e1.device_type = 0
    e1.cuda_gpu_id = 5
    assert core.device_option_equal(e1, e2)
    e1.device_type = 1
    assert not core.device_option_equal(e1, e2)
    c1, c2 = core.DeviceOption(1, 2), core.DeviceOption(1, 3)
    assert not core.device_option_equal(c1, c2)
    c2.cuda_gpu_id = 2
    c1.random_seed, c2.random_seed = 1, 2
    assert core.device_option_equal(c1, c2)
    assert not core.device_option_equal(c1, c2, ignore_random_seed=False)


def test_data_type_and_the_init_functions():
    assert core.DataType.INT32 == caffe2_pb2.TensorProto.INT32
    assert core.DataType.STRING == 4 and core.DataType.DOUBLE == 13
    assert core.GlobalInit(["caffe2", "--caffe2_log_level=0"])
    core.SetEnginePref({}, {})
    with pytest.raises(TypeError):
        core.SetEnginePref(None, {})


# -- gradients (scopeops' builder) -------------------------------------------------------------


def test_add_gradient_operators_runs_scopeops_builder():
    net = core.Net("two_grads")
    x, two, three = net.AddExternalInput("input", "two", "three")
    m1 = net.Mul([x, two], "mul_1")
    m2 = net.Mul([m1, three], "mul_2")
    grad_map = net.AddGradientOperators([m2, m1])
    assert isinstance(grad_map[core.BlobReference("input")], core.BlobReference)
    for name, value in [("input", 1), ("two", 2), ("three", 3)]:
        workspace.blobs[name] = np.array([value], np.float32)
    workspace.RunNetOnce(net)
    np.testing.assert_allclose(workspace.blobs[grad_map["input"]], [8.0])   # 2*3 + 2


def test_add_gradient_operators_with_given_gradients():
    net = core.Net("given_grads")
    x = net.AddExternalInput("x")
    net.Relu(x, "y")
    grad_map = net.AddGradientOperators({"y": "y_given_grad"})
    assert grad_map["y"] == "y_given_grad" and "x" in grad_map
    workspace.FeedBlob("x", np.array([-1.0, 2.0], np.float32))
    workspace.FeedBlob("y_given_grad", np.array([5.0, 7.0], np.float32))
    workspace.RunNetOnce(net)
    np.testing.assert_allclose(workspace.FetchBlob(grad_map["x"]), [0.0, 7.0])
    with pytest.raises(TypeError, match="list or a dict"):
        net.AddGradientOperators("y")


def test_get_backward_pass_and_get_gradient_for_op_use_scopeops_makers():
    ops = [core.CreateOperator("Relu", "x", "y"), core.CreateOperator("Sigmoid", "y", "z")]
    grad_ops, grad_map = core.GradientRegistry.GetBackwardPass(ops, {"z": "z_grad"})
    assert [op.type for op in grad_ops] == ["SigmoidGradient", "ReluGradient"]
    assert grad_map["x"] == "x_grad"
    one_ops, g_input = core.GradientRegistry.GetGradientForOp(ops[0], ["y_grad"])
    assert [op.type for op in one_ops] == ["ReluGradient"] and g_input == ["x_grad"]
