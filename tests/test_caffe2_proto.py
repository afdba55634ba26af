"""scopeops.caffe2.proto: Caffe2's messages with Caffe2's field numbers, byte-compatible with
Caffe2's own serialisations, built at install time from caffe2.proto (docs/caffe2.md).

The hex strings below are what Caffe2's own Python (facebookarchive/caffe2 at
4b439a9c8bcb, with its protoc-generated caffe2_pb2) serialised for the nets built the same
way in ``_build_*`` here: facts recorded from a run of Caffe2, not code.
"""

import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from scopeops.caffe2.proto import caffe2_pb2
from scopeops.caffe2.python import brew, core, model_helper
from scopeops.caffe2.translate import netdef_to_caffe2, netdef_to_native

CAFFE2_BYTES = {
    "sugar_net": (
        "0a0d62797465735f6669787475726512100a01610a01621201631a0022034d756c12200a01630a0163121162"
        "797465735f666978747572652f53756d1a00220353756d12370a01630a0163121362797465735f6669787475"
        "72652f53756d3a30121362797465735f666978747572652f53756d3a311a00220353756d12120a03732f7812"
        "03732f791a00220452656c75124c121f62797465735f666978747572652f476976656e54656e736f7246696c"
        "6c3a301a00220f476976656e54656e736f7246696c6c2a070a0573686170652a0d0a0676616c7565732d0000"
        "00401233120263691a002212476976656e54656e736f72496e7446696c6c2a090a05736861706530022a0c0a"
        "0676616c756573300130021244121c62797465735f666978747572652f436f6e7374616e7446696c6c3a301a"
        "00220c436f6e7374616e7446696c6c2a090a05647479706518052a090a0576616c756518013a01613a01623a"
        "03732f78420163"),
    "full_op": (
        "0a01781201791a016e22094c75646963726f75732a090a056172675f6918012a090a056172675f6218012a0c"
        "0a056172675f6615000020402a0d0a056172675f732204746578742a0f0a096172675f627974657322020001"
        "2a100a086172675f696e74733001300230032a160a0a6172675f666c6f6174732d0000803f2d0000003f2a13"
        "0a0b6172675f737472696e67733a01613a01622a0b0a096172675f656d7074792a120a066172675f6e702d00"
        "00c03f2d000020402af1020a056172675f6e42e7020a0d62797465735f6669787475726512100a01610a0162"
        "1201631a0022034d756c12200a01630a0163121162797465735f666978747572652f53756d1a00220353756d"
        "12370a01630a0163121362797465735f666978747572652f53756d3a30121362797465735f66697874757265"
        "2f53756d3a311a00220353756d12120a03732f781203732f791a00220452656c75124c121f62797465735f66"
        "6978747572652f476976656e54656e736f7246696c6c3a301a00220f476976656e54656e736f7246696c6c2a"
        "070a0573686170652a0d0a0676616c7565732d000000401233120263691a002212476976656e54656e736f72"
        "496e7446696c6c2a090a05736861706530022a0c0a0676616c756573300130021244121c62797465735f6669"
        "78747572652f436f6e7374616e7446696c6c3a301a00220c436f6e7374616e7446696c6c2a090a0564747970"
        "6518052a090a0576616c756518013a01613a01623a03732f784201632ade050a086172675f6e6574734ae702"
        "0a0d62797465735f6669787475726512100a01610a01621201631a0022034d756c12200a01630a0163121162"
        "797465735f666978747572652f53756d1a00220353756d12370a01630a0163121362797465735f6669787475"
        "72652f53756d3a30121362797465735f666978747572652f53756d3a311a00220353756d12120a03732f7812"
        "03732f791a00220452656c75124c121f62797465735f666978747572652f476976656e54656e736f7246696c"
        "6c3a301a00220f476976656e54656e736f7246696c6c2a070a0573686170652a0d0a0676616c7565732d0000"
        "00401233120263691a002212476976656e54656e736f72496e7446696c6c2a090a05736861706530022a0c0a"
        "0676616c756573300130021244121c62797465735f666978747572652f436f6e7374616e7446696c6c3a301a"
        "00220c436f6e7374616e7446696c6c2a090a05647479706518052a090a0576616c756518013a01613a01623a"
        "03732f784201634ae7020a0d62797465735f6669787475726512100a01610a01621201631a0022034d756c12"
        "200a01630a0163121162797465735f666978747572652f53756d1a00220353756d12370a01630a0163121362"
        "797465735f666978747572652f53756d3a30121362797465735f666978747572652f53756d3a311a00220353"
        "756d12120a03732f781203732f791a00220452656c75124c121f62797465735f666978747572652f47697665"
        "6e54656e736f7246696c6c3a301a00220f476976656e54656e736f7246696c6c2a070a0573686170652a0d0a"
        "0676616c7565732d000000401233120263691a002212476976656e54656e736f72496e7446696c6c2a090a05"
        "736861706530022a0c0a0676616c756573300130021244121c62797465735f666978747572652f436f6e7374"
        "616e7446696c6c3a301a00220c436f6e7374616e7446696c6c2a090a05647479706518052a090a0576616c75"
        "6518013a01613a01623a03732f784201633204080110013a045741525042017a"),
    "seed_op": (
        "0a01781201791a00220452656c7532021803"),
    "do_net": (
        "0a0b62797465735f6f7574657212121201571a00220b43726561746553636f70651284010a076f757465725f"
        "580a076f757465725f590a015712076f757465725f5a1201571a002202446f2a2a0a036e657442230a096279"
        "7465735f73756212100a01580a015912015a1a0022034164643a01583a01592a160a0b696e6e65725f626c6f"
        "62733a01583a01593a015a2a170a0f6f757465725f626c6f62735f696478300030013002126f0a0157120157"
        "1a002202446f2a2a0a036e657442230a0962797465735f73756212100a01580a015912015a1a002203416464"
        "3a01583a01592a0d0a0b696e6e65725f626c6f62732a110a0f6f757465725f626c6f62735f6964782a130a0f"
        "72657573655f776f726b737061636518013a076f757465725f583a076f757465725f59"),
    "brew_net": (
        "0a0b62797465735f6d6f64656c12540a04646174610a03795f770a03795f621201791a00220246432a0d0a05"
        "6f7264657222044e4348572a0d0a097573655f6375646e6e18012a1b0a176375646e6e5f6578686175737469"
        "76655f736561726368180012410a01791201721a00220452656c752a0d0a056f7264657222044e4348572a1b"
        "0a176375646e6e5f657868617573746976655f73656172636818003a054355444e4e12410a01721201741a00"
        "220454616e682a0d0a056f7264657222044e4348572a1b0a176375646e6e5f657868617573746976655f7365"
        "6172636818003a054355444e4e12560a0174121362797465735f6d6f64656c2f536f66746d61781a00220753"
        "6f66746d61782a0d0a056f7264657222044e4348572a1b0a176375646e6e5f657868617573746976655f7365"
        "6172636818003a054355444e4e3a04646174613a03795f773a03795f62"),
    "brew_init": (
        "0a1062797465735f6d6f64656c5f696e697412301203795f771a00220c436f6e7374616e7446696c6c2a0b0a"
        "057368617065300230042a0c0a0576616c7565150000803f122e1203795f621a00220c436f6e7374616e7446"
        "696c6c2a090a05736861706530022a0c0a0576616c75651500000000"),
    "fills_net": (
        "0a0b62797465735f66696c6c7312291201691a00220c436f6e7374616e7446696c6c2a090a05736861706530"
        "022a090a0576616c7565180312371201641a00220c436f6e7374616e7446696c6c2a090a0573686170653002"
        "2a0c0a0576616c7565150000803f2a090a056474797065180d12351201671a00220f476976656e54656e736f"
        "7246696c6c2a090a05736861706530022a120a0676616c7565732dcdcccc3d2dcdcc4c3e"),
    "cpu_device_option": (
        "08001000"),
}


def caffe2_bytes(key):
    return bytes.fromhex(CAFFE2_BYTES[key])


def _build_sugar_net():
    net = core.Net("bytes_fixture")
    a, b = net.AddExternalInput("a", "b")
    c = net.Mul([a, b], "c")
    net.Sum([c, c])
    net.Sum([c, c], outputs=2)
    with core.NameScope("s"):
        net.Relu("x", "y")
    net.Const(2.0)
    net.Const(np.array([1, 2], dtype=np.int32), blob_out="ci")
    net.Const(True)
    net.AddExternalOutput(c)
    return net


_SUGAR_NET = _build_sugar_net()


def _build_full_op():
    return core.CreateOperator(
        "Ludicrous", ["x"], ["y"], name="n", control_input="z",
        device_option=core.DeviceOption(caffe2_pb2.CUDA, 1), engine="WARP", arg_i=1,
        arg_b=True, arg_f=2.5, arg_s="text", arg_bytes=b"\x00\x01", arg_ints=[1, 2, 3],
        arg_floats=[1.0, 0.5], arg_strings=["a", b"b"], arg_empty=[],
        arg_np=np.array([1.5, 2.5], dtype=np.float32), arg_n=_SUGAR_NET.Proto(),
        arg_nets=[_SUGAR_NET.Proto(), _SUGAR_NET.Proto()])


def _build_do_net():
    sub = core.Net("bytes_sub")
    sub.Add(["X", "Y"], "Z")
    outer = core.Net("bytes_outer")
    outer.CreateScope([], "W")
    outer.Do(["outer_X", "outer_Y", "W"], ["outer_Z", "W"], net=sub.Proto(),
             inner_blobs=["X", "Y", "Z"], outer_blobs_idx=[0, 1, 2])
    outer.Do("W", "W", net=sub.Proto(), inner_blobs=[], outer_blobs_idx=[],
             reuse_workspace=True)
    return outer


def _build_model():
    m = model_helper.ModelHelper(name="bytes_model")
    brew.fc(m, "data", "y", dim_in=4, dim_out=2, weight_init=("ConstantFill", dict(value=1.0)),
            bias_init=("ConstantFill", dict(value=0.0)))
    brew.relu(m, "y", "r")
    brew.tanh(m, "r", "t")
    brew.softmax(m, "t")
    return m


def _build_fills():
    net = core.Net("bytes_fills")
    net.ConstantFill([], "i", shape=[2], value=3)
    net.ConstantFill([], "d", shape=[2], value=1.0, dtype=core.DataType.DOUBLE)
    net.GivenTensorFill([], "g", shape=[2], values=[0.1, 0.2])
    return net


_DO_NET = _build_do_net()
_MODEL = _build_model()
_FILLS = _build_fills()

BUILT = {
    "sugar_net": _SUGAR_NET.Proto(),
    "full_op": _build_full_op(),
    "seed_op": core.CreateOperator("Relu", "x", "y", random_seed=3),
    "do_net": _DO_NET.Proto(),
    "brew_net": _MODEL.net.Proto(),
    "brew_init": _MODEL.param_init_net.Proto(),
    "fills_net": _FILLS.Proto(),
    "cpu_device_option": core.DeviceOption(caffe2_pb2.CPU),
}


@pytest.mark.parametrize("key", sorted(CAFFE2_BYTES))
def test_messages_built_as_caffe2_builds_them_serialise_to_caffe2s_bytes(key):
    assert BUILT[key].SerializeToString() == caffe2_bytes(key)


@pytest.mark.parametrize("key", sorted(CAFFE2_BYTES))
def test_caffe2s_bytes_parse_and_serialise_back_unchanged(key):
    message = type(BUILT[key]).FromString(caffe2_bytes(key))
    assert message == BUILT[key]
    assert message.SerializeToString() == caffe2_bytes(key)


@pytest.mark.parametrize("key", ["do_net", "brew_init", "fills_net"])
def test_caffe2_nets_in_canonical_form_round_trip_through_scopeops_byte_for_byte(key):
    # Nets whose every field has a scopeops counterpart come back identical.
    message = caffe2_pb2.NetDef.FromString(caffe2_bytes(key))
    assert netdef_to_caffe2(netdef_to_native(message)).SerializeToString() == \
        caffe2_bytes(key)


def test_field_numbers_are_caffe2s():
    numbers = {
        "OperatorDef": dict(input=1, output=2, name=3, type=4, arg=5, device_option=6,
                            engine=7, control_input=8, is_gradient_op=9, debug_info=10),
        "NetDef": dict(name=1, op=2, type=3, num_workers=4, device_option=5, arg=6,
                       external_input=7, external_output=8),
        "Argument": dict(name=1, f=2, i=3, s=4, floats=5, ints=6, strings=7, n=8, nets=9),
        "DeviceOption": dict(device_type=1, cuda_gpu_id=2, random_seed=3, node_name=4,
                             numa_node_id=5),
        "TensorProto": dict(dims=1, data_type=2, float_data=3, int32_data=4, byte_data=5,
                            string_data=6, name=7, device_detail=8, double_data=9,
                            int64_data=10, segment=11),
    }
    for message, fields in numbers.items():
        descriptor = getattr(caffe2_pb2, message).DESCRIPTOR
        assert {f.name: f.number for f in descriptor.fields} == fields, message
    segment = caffe2_pb2.TensorProto.Segment.DESCRIPTOR
    assert {f.name: f.number for f in segment.fields} == {"begin": 1, "end": 2}


def test_enums_and_defaults_are_caffe2s():
    assert (caffe2_pb2.CPU, caffe2_pb2.CUDA, caffe2_pb2.MKLDNN, caffe2_pb2.OPENGL) == (0, 1, 2, 3)
    assert caffe2_pb2.COMPILE_TIME_MAX_DEVICE_TYPES == 4
    assert caffe2_pb2.ONLY_FOR_TEST == 20901701
    assert caffe2_pb2.DeviceType.Name(1) == "CUDA"
    assert dict(caffe2_pb2.TensorProto.DataType.items()) == dict(
        UNDEFINED=0, FLOAT=1, INT32=2, BYTE=3, STRING=4, BOOL=5, UINT8=6, INT8=7, UINT16=8,
        INT16=9, INT64=10, FLOAT16=12, DOUBLE=13)
    assert caffe2_pb2.TensorProto.FLOAT == 1 and caffe2_pb2.TensorProto.DOUBLE == 13
    assert caffe2_pb2.TensorProto().data_type == caffe2_pb2.TensorProto.FLOAT
    assert caffe2_pb2.DeviceOption().numa_node_id == -1
    assert caffe2_pb2.OperatorDef().is_gradient_op is False


def test_repeated_argument_numbers_are_unpacked_and_tensor_data_packed():
    argument = caffe2_pb2.Argument(name="x", ints=[1, 2], floats=[1.0])
    assert argument.SerializeToString() == bytes.fromhex("0a0178" "2d0000803f" "3001" "3002")
    tensor = caffe2_pb2.TensorProto(dims=[2], float_data=[1.0, 2.0])
    assert tensor.SerializeToString() == bytes.fromhex("0802" "1a08" "0000803f" "00000040")


def test_field_presence_is_kept():
    assert caffe2_pb2.OperatorDef(type="X", name="") != caffe2_pb2.OperatorDef(type="X")
    assert core.DeviceOption(caffe2_pb2.CPU) != caffe2_pb2.DeviceOption()
    op = caffe2_pb2.OperatorDef()
    op.device_option.CopyFrom(caffe2_pb2.DeviceOption())
    assert op.HasField("device_option")


def test_the_messages_come_from_a_private_descriptor_pool():
    from google.protobuf import descriptor_pool

    assert caffe2_pb2.DESCRIPTOR.name == "caffe2.proto"
    assert caffe2_pb2.DESCRIPTOR.package == "caffe2"
    with pytest.raises(KeyError):
        descriptor_pool.Default().FindMessageTypeByName("caffe2.NetDef")


def test_no_generated_protobuf_code_is_in_the_source_tree():
    root = pathlib.Path(__file__).resolve().parent.parent / "scopeops" / "caffe2"
    generated = [p for p in root.rglob("*.py")
                 if "Generated by the protocol buffer compiler" in p.read_text()]
    assert generated == []
    assert (root / "proto" / "caffe2.proto").exists()


_HIDE_PROTOBUF = textwrap.dedent("""
    import importlib.abc, sys

    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "google" or name.startswith("google."):
                raise ImportError("No module named " + repr(name) + " (hidden)")
            return None

    sys.meta_path.insert(0, Hide())
    for name in [m for m in sys.modules if m == "google" or m.startswith("google.")]:
        del sys.modules[name]
    try:
        import MODULE
    except ImportError as exc:
        print("ImportError:", exc)
    else:
        print("imported")
""")


@pytest.mark.parametrize("module", ["scopeops.caffe2", "scopeops.caffe2.python.core",
                                    "scopeops.caffe2.proto.caffe2_pb2"])
def test_importing_without_protobuf_says_which_extra_to_install(module, tmp_path):
    result = subprocess.run([sys.executable, "-c", _HIDE_PROTOBUF.replace("MODULE", module)],
                            capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ImportError:"), result.stdout
    assert 'pip install "scopeops[caffe2]"' in result.stdout
    # scopeops itself does not need protobuf.
    plain = subprocess.run([sys.executable, "-c", _HIDE_PROTOBUF.replace("MODULE", "scopeops")],
                           capture_output=True, text=True, cwd=tmp_path)
    assert plain.stdout.strip() == "imported", plain.stdout + plain.stderr
