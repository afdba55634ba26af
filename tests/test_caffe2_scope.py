"""scopeops.caffe2.python.scope: name and device scopes with caffe2_pb2 device options, on
scopeops' scopes (docs/caffe2.md)."""

import threading

import pytest

import scopeops as so
from scopeops.caffe2.proto import caffe2_pb2
from scopeops.caffe2.python import core, scope


def test_name_scopes_nest_reset_and_restore_after_an_error():
    assert scope.CurrentNameScope() == ""
    with scope.NameScope("a"):
        assert scope.CurrentNameScope() == "a/"
        with scope.NameScope("b"):
            assert scope.CurrentNameScope() == "a/b/" == so.current_name_scope()
        with scope.NameScope("c", reset=True):
            assert scope.CurrentNameScope() == "c/"
        with scope.NameScope(None):
            assert scope.CurrentNameScope() == "a/"
    with pytest.raises(ValueError):
        with scope.NameScope("d"):
            raise ValueError("inside")
    assert scope.CurrentNameScope() == ""


def test_current_device_scope_is_an_exact_copy_of_the_option_given():
    assert scope.CurrentDeviceScope() is None
    option = core.DeviceOption(caffe2_pb2.CUDA, 0)          # cuda_gpu_id set to its default
    with scope.DeviceScope(option):
        current = scope.CurrentDeviceScope()
        assert current == option and current.HasField("cuda_gpu_id")
        assert current is not option
        assert so.current_device_scope() == so.DeviceOption("gpu", 0)
    assert scope.CurrentDeviceScope() is None
    bare = caffe2_pb2.DeviceOption()
    with scope.DeviceScope(bare):
        assert scope.CurrentDeviceScope() == bare
        assert not scope.CurrentDeviceScope().HasField("device_type")


def test_node_names_are_set_or_inherited():
    with scope.DeviceScope(core.DeviceOption(caffe2_pb2.CUDA, 1), node_name="n0"):
        assert scope.CurrentDeviceScope().node_name == "n0"
        with scope.DeviceScope(core.DeviceOption(caffe2_pb2.CUDA, 2)):
            inner = scope.CurrentDeviceScope()
            assert (inner.cuda_gpu_id, inner.node_name) == (2, "n0")
        with scope.DeviceScope(None, node_name="n1"):
            assert scope.CurrentDeviceScope().node_name == "n1"
            assert scope.CurrentDeviceScope().device_type == caffe2_pb2.CPU
    with pytest.raises(ValueError):
        scope.DeviceScope(None)
    with pytest.raises(TypeError):
        scope.DeviceScope(so.DeviceOption())


def test_empty_device_scope_and_errors_inside_device_scopes():
    option = core.DeviceOption(caffe2_pb2.CUDA, 3)
    with scope.DeviceScope(option):
        with scope.EmptyDeviceScope():
            assert scope.CurrentDeviceScope() is None
        assert scope.CurrentDeviceScope() == option
    with pytest.raises(KeyError):
        with scope.DeviceScope(option):
            raise KeyError("inside")
    assert scope.CurrentDeviceScope() is None


def test_a_native_device_scope_inside_wins():
    with scope.DeviceScope(core.DeviceOption(caffe2_pb2.CUDA, 1)):
        with so.DeviceScope(so.DeviceOption("cpu")):
            current = scope.CurrentDeviceScope()
            assert current.device_type == caffe2_pb2.CPU
            assert not core.CreateOperator("Relu", "x", "y").device_option.cuda_gpu_id
        assert scope.CurrentDeviceScope().cuda_gpu_id == 1


def test_scopes_are_per_thread():
    results = []

    def worker(index):
        seen = [scope.CurrentNameScope(), scope.CurrentDeviceScope()]
        option = core.DeviceOption(caffe2_pb2.CUDA, index)
        with scope.DeviceScope(option), scope.NameScope(f"ns_{index}"):
            seen += [scope.CurrentNameScope(), scope.CurrentDeviceScope() == option]
        seen += [scope.CurrentNameScope(), scope.CurrentDeviceScope()]
        results.append((index, seen))

    with scope.NameScope("master"):
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert scope.CurrentNameScope() == "master/" and scope.CurrentDeviceScope() is None
    assert sorted(results) == [(i, ["", None, f"ns_{i}/", True, "", None]) for i in range(4)]
