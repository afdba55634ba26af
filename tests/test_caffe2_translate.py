"""scopeops.caffe2.translate: caffe2_pb2 messages to scopeops definitions and back
(docs/caffe2.md, "Loading a Caffe2 .pb NetDef")."""

import numpy as np
import pytest

import scopeops as so
from scopeops.caffe2 import translate
from scopeops.caffe2.proto import caffe2_pb2
from scopeops.caffe2.python import core


def arg(**fields):
    return caffe2_pb2.Argument(**fields)


@pytest.mark.parametrize("argument, value", [
    (arg(name="a", i=3), 3),
    (arg(name="a", f=0.1), 0.1),                    # float32 shown as its shortest decimal
    (arg(name="a", s=b"text"), "text"),
    (arg(name="a", ints=[1, 2]), [1, 2]),
    (arg(name="a", floats=[0.5, 0.25]), [0.5, 0.25]),
    (arg(name="a", strings=[b"x", b"y"]), ["x", "y"]),
    (arg(name="a"), []),                            # the name alone: an empty list
    (arg(name="a", s=b"\xff\x00"), b"\xff\x00"),    # not UTF-8: stays bytes
])
def test_argument_encodings_become_plain_values(argument, value):
    op = caffe2_pb2.OperatorDef(type="NotRegistered", name="")
    op.arg.append(argument)
    assert translate.operator_to_native(op).args == {"a": value}


def test_net_arguments_become_netdefs_both_ways():
    inner = caffe2_pb2.NetDef(name="inner")
    inner.op.append(core.CreateOperator("Relu", "x", "y"))
    op = core.CreateOperator("Holder", [], [], n=inner, nets=[inner, inner])
    native = translate.operator_to_native(op)
    assert isinstance(native.args["n"], so.NetDef)
    assert native.args["n"].ops[0].type == "Relu"
    assert [n.name for n in native.args["nets"]] == ["inner", "inner"]
    assert translate.operator_to_caffe2(native) == op


def test_schema_types_decide_bools_and_dtypes():
    do = core.CreateOperator("Do", ["W"], ["W"], net=caffe2_pb2.NetDef(name="n"),
                             inner_blobs=[], outer_blobs_idx=[], reuse_workspace=True)
    native = translate.operator_to_native(do)
    assert native.args["reuse_workspace"] is True
    assert native.args["inner_blobs"] == [] and native.args["outer_blobs_idx"] == []
    fill = core.CreateOperator("ConstantFill", [], ["x"], shape=[2], value=1,
                               dtype=core.DataType.INT32)
    assert translate.operator_to_native(fill).args["dtype"] == "int32"


def test_an_integer_constant_fill_without_dtype_fills_int64_as_in_caffe2():
    fill = core.CreateOperator("ConstantFill", [], ["x"], shape=[2], value=3)
    native = translate.operator_to_native(fill)
    assert native.args == {"shape": [2], "value": 3, "dtype": "int64"}
    assert translate.operator_to_caffe2(native) == fill
    ws = so.Workspace()
    ws.run_operator_once(native)
    assert ws.fetch_blob("x").dtype == np.int64


def test_a_native_integer_fill_stays_float_in_caffe2_encoding():
    native = so.OperatorDef("ConstantFill", [], ["x"], args={"shape": [1], "value": 2})
    message = translate.operator_to_caffe2(native)
    assert message.arg[1].HasField("f") and message.arg[1].f == 2.0
    assert translate.operator_to_native(message) == native


def test_caffe2_fill_types_by_element_type_run_as_scopeops_operators_of_that_name():
    op = core.CreateOperator("GivenTensorInt64Fill", [], ["x"], shape=[2], values=[1, 2])
    native = translate.operator_to_native(op)
    assert native.type == "GivenTensorInt64Fill" and native.args["values"] == [1, 2]
    ws = so.Workspace()
    ws.run_operator_once(native)
    assert ws["x"].dtype == np.int64 and ws["x"].tolist() == [1, 2]


def test_arguments_caffe2s_cpu_operators_never_read_are_dropped():
    op = core.CreateOperator("Relu", "x", "y", order="NCHW", use_cudnn=True,
                             cudnn_exhaustive_search=False, run_once=0)
    assert translate.operator_to_native(op).args == {}
    # A layout other than Caffe2's default is meaning: it is kept (and then refused).
    kept = core.CreateOperator("Relu", "x", "y", order="NHWC")
    assert translate.operator_to_native(kept).args == {"order": "NHWC"}
    ws = so.Workspace()
    ws.feed_blob("x", np.ones(2, np.float32))
    with pytest.raises(so.OperatorError, match="order"):
        ws.run_operator_once(translate.operator_to_native(kept))


def test_gradient_ops_drop_forward_arguments_they_do_not_declare():
    # Caffe2 gave gradient ops every argument of their forward op.
    grad = core.CreateOperator("ReluGradient", ["y", "dy"], "dx", order="NHWC", alpha=0.5)
    grad.is_gradient_op = True
    native = translate.operator_to_native(grad)
    assert native.args == {} and native.is_gradient_op
    ws = so.Workspace()
    ws.feed_blob("y", np.array([0.0, 2.0], np.float32))
    ws.feed_blob("dy", np.array([5.0, 7.0], np.float32))
    ws.run_operator_once(native)
    assert ws.fetch_blob("dx").tolist() == [0.0, 7.0]
    grad.is_gradient_op = False                   # an op written by hand: kept, then refused
    assert translate.operator_to_native(grad).args == {"order": "NHWC", "alpha": 0.5}


def test_the_engine_is_kept_both_ways():
    op = core.CreateOperator("Relu", "x", "y", engine="CUDNN")
    native = translate.operator_to_native(op)
    assert native.engine == "CUDNN"
    assert translate.operator_to_caffe2(native) == op
    assert not translate.operator_to_caffe2(so.OperatorDef("Relu", ["x"], ["y"])).HasField(
        "engine")


def test_device_options_map_both_ways():
    cuda = core.DeviceOption(caffe2_pb2.CUDA, 2, node_name="n0")
    native = translate.device_option_to_native(cuda)
    assert native == so.DeviceOption("gpu", 2, node_name="n0")
    assert translate.device_option_to_caffe2(native) == cuda
    cpu = translate.device_option_to_caffe2(so.DeviceOption())
    assert cpu.HasField("device_type") and not cpu.HasField("cuda_gpu_id")
    assert translate.device_option_to_native(caffe2_pb2.DeviceOption(device_type=7)) == \
        so.DeviceOption("caffe2_device_7")
    assert translate.device_option_to_caffe2(so.DeviceOption("caffe2_device_7")).device_type \
        == 7
    with pytest.raises(ValueError, match="extra_info"):
        translate.device_option_to_caffe2(so.DeviceOption("cpu", extra_info=("k",)))
    with pytest.raises(ValueError, match="no Caffe2 DeviceType"):
        translate.device_option_to_caffe2(so.DeviceOption("tpu"))


def test_a_nets_device_option_applies_to_its_ops_without_one():
    net = caffe2_pb2.NetDef(name="n")
    net.device_option.CopyFrom(core.DeviceOption(caffe2_pb2.CUDA, 1))
    net.op.append(core.CreateOperator("Relu", "x", "y"))
    net.op.append(core.CreateOperator("Relu", "y", "z",
                                      device_option=core.DeviceOption(caffe2_pb2.CPU)))
    native = translate.netdef_to_native(net)
    assert native.ops[0].device_option == so.DeviceOption("gpu", 1)
    assert native.ops[1].device_option == so.DeviceOption("cpu")


def test_native_definitions_round_trip_exactly():
    body = so.NetDef(name="body", ops=[so.OperatorDef("Relu", ["x"], ["y"])])
    net = so.NetDef(name="n", ops=[
        so.OperatorDef("ConstantFill", [], ["c"], args={"shape": [2, 3], "value": 1.5,
                                                       "dtype": "float64"}),
        so.OperatorDef("Do", ["c", "W"], ["y", "W"], name="do", args={
            "net": body, "inner_blobs": ["x", "y"], "outer_blobs_idx": [0, 1],
            "reuse_workspace": True}),
        so.OperatorDef("ReluGradient", ["dy", "y"], ["dx"], is_gradient_op=True,
                       device_option=so.DeviceOption("cpu")),
        so.OperatorDef("GivenTensorFill", [], ["g"], args={"values": [1, 2.5], "shape": [2]}),
    ], external_inputs=["x"], external_outputs=["y"])
    message = translate.netdef_to_caffe2(net)
    assert message.op[2].is_gradient_op and not message.op[0].HasField("is_gradient_op")
    assert message.op[0].HasField("name")
    back = translate.netdef_to_native(caffe2_pb2.NetDef.FromString(message.SerializeToString()))
    assert back == net


def test_empty_names_are_refused_on_the_way_in():
    op = core.CreateOperator("Relu", "x", "y")
    op.output[0] = ""
    with pytest.raises(ValueError, match="non-empty"):
        translate.operator_to_native(op)


@pytest.mark.parametrize("value", [None, [1, 2.0], [[1]], object(), {"a": 1}])
def test_values_caffe2_cannot_encode_are_value_errors(value):
    with pytest.raises(ValueError, match="Unknown"):
        translate.make_argument("a", value)


def test_wrong_message_types_are_type_errors():
    with pytest.raises(TypeError):
        translate.operator_to_native(so.OperatorDef("Relu", ["x"], ["y"]))
    with pytest.raises(TypeError):
        translate.netdef_to_caffe2(caffe2_pb2.NetDef())
    with pytest.raises(TypeError):
        translate.device_option_to_native(so.DeviceOption())
