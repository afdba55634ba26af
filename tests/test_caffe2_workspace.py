"""scopeops.caffe2.python.workspace: the current workspace, copying feeds and fetches, nets,
named workspaces and C.Workspace (docs/caffe2.md)."""

import os

import numpy as np
import pytest

import scopeops as so
from scopeops.caffe2.proto import caffe2_pb2
from scopeops.caffe2.python import core, workspace
from scopeops.caffe2.python.utils import NumpyArrayToCaffe2Tensor


@pytest.fixture(autouse=True)
def default_workspace():
    workspace.SwitchWorkspace("default")
    workspace.ResetWorkspace(".")
    yield
    workspace.SwitchWorkspace("default")
    workspace.ResetWorkspace(".")


def fill_net(name="fill", blob="testblob"):
    net = core.Net(name)
    net.ConstantFill([], blob, shape=[1, 2, 3, 4], value=1.0)
    return net


def test_the_start_up_workspace_is_named_default():
    assert workspace.CurrentWorkspace() == "default"
    assert "default" in workspace.Workspaces()
    assert workspace.has_gpu_support is False and workspace.NumCudaDevices() == 0
    assert workspace.C.has_mkldnn is False


# -- feeding and fetching copy ----------------------------------------------------------------


def test_feed_copies_and_fetch_returns_fresh_writable_copies():
    value = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert workspace.FeedBlob("x", value) is True
    value[0, 0] = 100.0
    fetched = workspace.FetchBlob("x")
    assert fetched[0, 0] == 0.0
    fetched[:] = 7.0
    assert workspace.FetchBlob("x")[0, 0] == 0.0
    assert workspace.FetchBlob("x") is not workspace.FetchBlob("x")
    # The native API stores by reference: a deliberate difference.
    ws = so.Workspace()
    ws.feed_blob("x", value)
    assert ws.fetch_blob("x") is value


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.bool_, np.int8,
                                   np.int16, np.int32, np.int64, np.uint8, np.uint16])
def test_feed_and_fetch_keep_dtype_and_shape(dtype):
    value = (np.random.RandomState(0).rand(2, 3, 4) * 10).astype(dtype)
    workspace.FeedBlob("typed", value)
    fetched = workspace.FetchBlob("typed")
    assert fetched.dtype == value.dtype and fetched.shape == value.shape
    np.testing.assert_array_equal(fetched, value)


def test_zero_size_and_zero_dimensional_tensors():
    workspace.FeedBlob("empty", np.empty((2, 0, 3), np.float32))
    assert workspace.FetchBlob("empty").shape == (2, 0, 3)
    workspace.FeedBlob("scalar", np.array(3.0))
    assert workspace.FetchBlob("scalar").shape == () and workspace.FetchBlob("scalar") == 3.0


def test_strings_are_bytes():
    workspace.FeedBlob("plain", b"abc\x00\x01!")
    assert workspace.FetchBlob("plain") == b"abc\x00\x01!"
    workspace.FeedBlob("text", "é")
    assert workspace.FetchBlob("text") == "é".encode()
    for array in [np.array([[b"a\x00b", b"c"], [b"d", b"e" * 100]]),      # S dtype
                  np.array([["a", "b"], ["c", "é"]]),                     # U dtype
                  np.array([[b"a", "b"], [b"c", b"d"]], dtype=object)]:
        workspace.FeedBlob("strings", array)
        fetched = workspace.FetchBlob("strings")
        assert fetched.dtype == object and fetched.shape == array.shape
        assert all(isinstance(v, bytes) for v in fetched.flat)
        expected = [v if isinstance(v, bytes) else str(v).encode() for v in array.flat]
        assert list(fetched.flat) == expected
    assert workspace.FetchBlobs(["plain", "text"]) == [b"abc\x00\x01!", "é".encode()]


def test_a_tensor_proto_feeds_its_array():
    proto = NumpyArrayToCaffe2Tensor(np.array([[1.5, 2.5]], np.float32))
    workspace.FeedBlob("from_proto", proto)
    np.testing.assert_array_equal(workspace.FetchBlob("from_proto"), [[1.5, 2.5]])


@pytest.mark.parametrize("value", [np.zeros(2, np.uint32), np.zeros(2, np.complex64), 3, 1.5,
                                   None, [1, 2], np.float32(1.0),
                                   np.array([1, object()], dtype=object)])
def test_unsupported_values_are_refused_before_anything_changes(value):
    with pytest.raises(so.BlobTypeError):
        workspace.FeedBlob("refused", value)
    assert not workspace.HasBlob("refused")


def test_feeding_to_another_device_is_refused():
    with pytest.raises(so.ScopeError, match="CPU only"):
        workspace.FeedBlob("x", np.zeros(1), core.DeviceOption(caffe2_pb2.CUDA, 0))
    with core.DeviceScope(core.DeviceOption(caffe2_pb2.CUDA, 0)):
        with pytest.raises(so.ScopeError):
            workspace.FeedBlob("x", np.zeros(1))
    assert workspace.FeedBlob("x", np.zeros(1), core.DeviceOption(caffe2_pb2.CPU))


def test_blob_names_and_lookups():
    ref = core.BlobReference("by_ref")
    workspace.FeedBlob(ref, np.ones(1))
    np.testing.assert_array_equal(workspace.FetchBlob(ref), [1.0])
    assert workspace.HasBlob("by_ref") and workspace.HasBlob(b"by_ref")
    assert workspace.HasBlob("non-existing") is False
    with pytest.raises(TypeError):
        workspace.HasBlob(ref)                 # Caffe2's HasBlob takes strings only
    with pytest.raises(so.BlobNotFoundError, match="Can't find blob: nothing"):
        workspace.FetchBlob("nothing")
    workspace.CreateBlob("uninitialised")
    assert workspace.FetchBlob("uninitialised") == \
        b"uninitialised, a C++ native class of type nullptr (uninitialized)."
    with pytest.raises(ValueError):
        workspace.FeedBlob("", np.ones(1))      # scopeops refuses empty names


def test_the_blobs_mapping():
    assert len(workspace.blobs) == 0
    workspace.blobs["b"] = np.ones(2, np.float32)
    workspace.blobs["a"] = np.zeros(1, np.float32)
    assert list(workspace.blobs) == ["a", "b"] == workspace.Blobs()
    assert "a" in workspace.blobs and "c" not in workspace.blobs and len(workspace.blobs) == 2
    fetched = workspace.blobs["b"]
    fetched[0] = 5
    assert workspace.blobs["b"][0] == 1
    del workspace.blobs["a"]
    assert workspace.Blobs() == ["b"]


# -- operators and nets -------------------------------------------------------------------------


def test_run_operator_once_takes_an_operator_or_its_bytes():
    net = fill_net()
    assert workspace.RunOperatorOnce(net.Proto().op[0].SerializeToString()) is True
    assert workspace.Blobs() == ["testblob"]
    workspace.ResetWorkspace()
    assert workspace.RunOperatorOnce(net.Proto().op[0])
    with pytest.raises(TypeError):
        workspace.RunOperatorOnce("not bytes")
    with pytest.raises(so.OperatorError):
        workspace.RunOperatorOnce(core.CreateOperator("Relu", ["X"], ["Y"]))


def test_run_net_once_takes_a_net_a_netdef_or_bytes_and_keeps_nothing():
    net = fill_net()
    for given in (net, net.Proto(), net.Proto().SerializeToString()):
        workspace.ResetWorkspace()
        assert workspace.RunNetOnce(given) is True
        assert workspace.FetchBlob("testblob").shape == (1, 2, 3, 4)
    assert workspace.C.Workspace.current.nets == {}


def test_create_net_and_run_net():
    net = fill_net("created")
    assert workspace.CreateNet(net, input_blobs=["extra"]) is True
    assert workspace.HasBlob("extra") and workspace.HasBlob("testblob")   # outputs exist
    with pytest.raises(so.OperatorError, match="refuse to overwrite"):
        workspace.CreateNet(net)
    assert workspace.CreateNet(net.Proto(), overwrite=True)
    assert workspace.RunNet(net.Name()) and workspace.RunNet(net, num_iter=3)
    np.testing.assert_array_equal(workspace.FetchBlob("testblob"), np.ones((1, 2, 3, 4)))
    with pytest.raises(so.OperatorError, match="Can't find net"):
        workspace.RunNet("never_created")
    with pytest.raises(TypeError):
        workspace.RunNet(net.Proto())


def test_create_net_builds_every_operator_now():
    net = core.Net("eager")
    net.Relu("missing", "y")
    with pytest.raises(so.OperatorError, match="non-existing input blob: missing"):
        workspace.CreateNet(net)
    assert not workspace.HasBlob("y")


def test_a_pb_netdef_file_loads_and_runs(tmp_path):
    net = core.Net("from_file")
    x = net.AddExternalInput("x")
    y = net.Relu(x, "y")
    net.Scale(y, "z", scale=2.0)
    path = tmp_path / "net.pb"
    path.write_bytes(net.Proto().SerializeToString())
    loaded = caffe2_pb2.NetDef()
    loaded.ParseFromString(path.read_bytes())
    workspace.FeedBlob("x", np.array([-1.0, 3.0], np.float32))
    workspace.RunNetOnce(loaded)
    np.testing.assert_array_equal(workspace.FetchBlob("z"), [0.0, 6.0])
    workspace.RunNetOnce(path.read_bytes())


def test_do_with_bindings_and_a_reused_workspace():
    sub = core.Net("do_sub")
    sub.Add(["X", "Y"], "Z")
    init = core.Net("do_init")
    init.ConstantFill([], "X", shape=[1], value=1)
    init.ConstantFill([], "Y", shape=[1], value=2)
    net = core.Net("do_net")
    net.CreateScope([], "W")
    net.Do("W", "W", net=init.Proto(), inner_blobs=[], outer_blobs_idx=[])
    net.Do("W", ["outer_Z", "W"], net=sub.Proto(), inner_blobs=["Z"], outer_blobs_idx=[0],
           reuse_workspace=True)
    net.Do(["outer_X", "outer_Y", "W"], ["outer_sum", "W"], net=sub.Proto(),
           inner_blobs=["X", "Y", "Z"], outer_blobs_idx=[0, 1, 2])
    workspace.FeedBlob("outer_X", np.asarray([1, 2]))
    workspace.FeedBlob("outer_Y", np.asarray([3, 4]))
    workspace.RunNetOnce(net)
    np.testing.assert_array_equal(workspace.FetchBlob("outer_Z"), [3])
    assert workspace.FetchBlob("outer_Z").dtype == np.int64
    np.testing.assert_array_equal(workspace.FetchBlob("outer_sum"), [4, 6])


# -- named workspaces -----------------------------------------------------------------------------


def test_reset_workspace_and_root_folder(tmp_path):
    workspace.FeedBlob("x", np.ones(1))
    assert workspace.ResetWorkspace() is True and workspace.Blobs() == []
    assert workspace.RootFolder() == "."
    root = str(tmp_path / "new" / "root")
    assert workspace.ResetWorkspace(root) is True
    assert workspace.RootFolder() == root and os.path.isdir(root)
    workspace.ResetWorkspace()
    assert workspace.RootFolder() == root          # kept


def test_switch_workspace():
    workspace.RunNetOnce(fill_net())
    assert workspace.SwitchWorkspace("second", True) is None
    assert workspace.CurrentWorkspace() == "second" and not workspace.HasBlob("testblob")
    workspace.SwitchWorkspace("default")
    assert workspace.HasBlob("testblob")
    with pytest.raises(so.ScopeError, match="does not exist"):
        workspace.SwitchWorkspace("non-existing")
    assert workspace.CurrentWorkspace() == "default"
    assert {"default", "second"} <= set(workspace.Workspaces())
    workspace.SwitchWorkspace(b"second")
    assert workspace.CurrentWorkspace() == "second"
    with workspace.WorkspaceGuard("guarded"):
        assert workspace.CurrentWorkspace() == "guarded"
    assert workspace.CurrentWorkspace() == "second"


# -- C.Workspace ------------------------------------------------------------------------------


def test_c_workspace_current_follows_the_current_workspace():
    assert "testblob" not in workspace.C.Workspace.current.blobs
    workspace.RunNetOnce(fill_net())
    assert "testblob" in workspace.C.Workspace.current.blobs
    workspace.ResetWorkspace()
    assert "testblob" not in workspace.C.Workspace.current.blobs


def test_c_workspace_nets_and_blobs():
    ws = workspace.C.Workspace()
    assert ws.nets == {} and ws.blobs == {}
    net = fill_net("c_ws")
    handle = ws.create_net(net)
    assert "testblob" in ws.blobs                     # created with the net
    with pytest.raises(so.OperatorError):
        ws.create_net(net)
    ws.create_net(net, True)
    ws.create_net(net, overwrite=True)
    assert list(ws.nets) == [net.Name()]
    handle.run()
    ws.nets[net.Name()].run()
    np.testing.assert_array_equal(ws.blobs["testblob"].fetch(), np.ones((1, 2, 3, 4)))
    with pytest.raises(TypeError):
        ws.create_net("...")
    other = fill_net("c_ws_run", "other")
    ws.run(other)
    assert "other" in ws.blobs and other.Name() not in ws.nets
    ws.run(core.CreateOperator("ConstantFill", [], ["by_op"], shape=[1], value=2.0))
    assert ws.blobs["by_op"].fetch()[0] == 2.0
    with pytest.raises(ValueError, match="Don't know how"):
        ws.run(3)
    assert not workspace.HasBlob("testblob")          # the current workspace is untouched


def test_c_workspace_tensors():
    ws = workspace.C.Workspace()
    assert ws.create_blob("tensor").feed(np.array([1.1, 1.2, 1.3])) is True
    tensor = ws.blobs["tensor"].tensor()
    tensor.data[0] = 3.3                              # data is the blob's array
    assert ws.blobs["tensor"].fetch()[0] == 3.3
    tensor.init([2, 3], core.DataType.INT32)
    tensor.data[1, 1] = 100
    expected = np.zeros((2, 3), np.int32)
    expected[1, 1] = 100
    np.testing.assert_array_equal(tensor.fetch(), expected)
    assert tensor.fetch().dtype == np.int32 and tensor.shape == (2, 3)
    with pytest.raises(RuntimeError):
        tensor.init([3, 4], core.DataType.STRING)
    strings = np.array([[b"abc", b"def"], [b"ghi", b"jkl"]], dtype=object)
    tensor.feed(strings)
    assert tensor.data[0, 0] == b"abc"
    np.testing.assert_array_equal(tensor.fetch(), strings)
    value = np.array([1.1, 1.2, 1.3])
    tensor.feed(value)
    value[0] = 5.2
    assert tensor.data[0] == 1.1
    before = tensor.fetch()
    tensor.data[0] = 5.2
    assert before[0] == 1.1 and tensor.fetch()[0] == 5.2
    with pytest.raises(RuntimeError):
        tensor.feed([1, 2])


def test_fetching_a_blob_that_holds_no_tensor_describes_it():
    workspace.RunOperatorOnce(core.CreateOperator("CreateScope", [], ["scope_blob"]))
    assert workspace.FetchBlob("scope_blob") == \
        b"scope_blob, a C++ native class of type WorkspaceStack."
