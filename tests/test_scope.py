"""Name scopes and device scopes (docs/scopes.md).

Caffe2's scope.py semantics and scopeops' deliberate differences:
a trailing "/" is not doubled, the state is context-local (threads and asyncio
tasks), Empty*Scope let exceptions propagate, scopes left out of order raise
ScopeError without touching the state.
"""

import asyncio
import contextvars
import pickle
import re
import threading

import numpy as np
import pytest

import scopeops as so
import scopeops.ops.math  # noqa: F401  - registers the numeric operators
from scopeops import names, scope

# -- NameScope ------------------------------------------------------------------------


def test_name_scope_is_empty_at_top_level():
    assert so.current_name_scope() == ""


def test_name_scope_adds_prefix_and_separator():
    with so.NameScope("a"):
        assert so.current_name_scope() == "a/"


def test_nested_name_scopes_concatenate_outer_first():
    with so.NameScope("b"):
        with so.NameScope("a"):
            assert so.current_name_scope() == "b/a/"


def test_name_scope_is_restored_after_exit():
    with so.NameScope("b"):
        with so.NameScope("a"):
            pass
        assert so.current_name_scope() == "b/"
    assert so.current_name_scope() == ""


def test_reset_name_scope_starts_from_root():
    with so.NameScope("b"):
        with so.NameScope("a", reset=True):
            assert so.current_name_scope() == "a/"
        assert so.current_name_scope() == "b/"


def test_reset_with_empty_prefix_empties_the_scope():
    with so.NameScope("b"):
        with so.NameScope("", reset=True):
            assert so.current_name_scope() == ""


@pytest.mark.parametrize("prefix", [None, ""])
def test_none_and_empty_prefix_add_nothing(prefix):
    with so.NameScope("b"):
        with so.NameScope(prefix):
            assert so.current_name_scope() == "b/"


def test_trailing_separator_is_not_doubled():
    with so.NameScope("a/"):
        assert so.current_name_scope() == "a/"


@pytest.mark.parametrize("prefix", [1, b"a", ["a"], so.DeviceOption()])
def test_non_str_prefix_raises_type_error(prefix):
    with pytest.raises(TypeError, match=re.escape("NameScope takes in a string as its argument.")):
        so.NameScope(prefix)


def test_name_scope_binds_the_new_scope_with_as():
    with so.NameScope("b"), so.NameScope("a") as current:
        assert current == "b/a/"


def test_exception_inside_name_scope_propagates_and_restores():
    with pytest.raises(KeyError):
        with so.NameScope("a"):
            raise KeyError("boom")
    assert so.current_name_scope() == ""


def test_one_name_scope_object_can_be_entered_again():
    ns = so.NameScope("a")
    with ns:
        pass
    with ns:
        assert so.current_name_scope() == "a/"
    assert so.current_name_scope() == ""


def test_one_name_scope_object_can_be_nested_in_itself():
    ns = so.NameScope("a")
    with ns:
        with ns:
            assert so.current_name_scope() == "a/a/"
        assert so.current_name_scope() == "a/"
    assert so.current_name_scope() == ""


def test_reset_name_scope_object_nested_in_itself_restores_each_level():
    ns = so.NameScope("r", reset=True)
    with so.NameScope("q"):
        with ns:
            with ns:
                assert so.current_name_scope() == "r/"
            assert so.current_name_scope() == "r/"
        assert so.current_name_scope() == "q/"


def test_name_scopes_exited_out_of_order_raise_scope_error_and_keep_state():
    outer, inner = so.NameScope("a"), so.NameScope("b")
    outer.__enter__()
    inner.__enter__()
    with pytest.raises(so.ScopeError, match="changed from outside NameScope"):
        outer.__exit__(None, None, None)
    assert so.current_name_scope() == "a/b/"
    inner.__exit__(None, None, None)
    outer.__exit__(None, None, None)
    assert so.current_name_scope() == ""


def test_name_scope_exited_without_entering_raises_scope_error():
    with pytest.raises(so.ScopeError, match="exited without being entered"):
        so.NameScope("a").__exit__(None, None, None)


def test_name_scope_exited_in_another_thread_raises_scope_error():
    ns = so.NameScope("a")
    ns.__enter__()
    errors = []

    def leave():
        with so.NameScope("a", reset=True):
            try:
                ns.__exit__(None, None, None)
            except so.ScopeError as exc:
                errors.append(exc)

    worker = threading.Thread(target=leave)
    worker.start()
    worker.join()
    assert len(errors) == 1
    ns.__exit__(None, None, None)
    assert so.current_name_scope() == ""


# -- context-local state --------------------------------------------------------------


def test_a_new_thread_starts_at_the_root_name_scope():
    seen = []
    with so.NameScope("main"):
        worker = threading.Thread(target=lambda: seen.append(so.current_name_scope()))
        worker.start()
        worker.join()
    assert seen == [""]


def test_threads_each_see_their_own_name_scope():
    barrier = threading.Barrier(2)
    seen = {}

    def work(prefix):
        with so.NameScope(prefix):
            barrier.wait()   # both threads are inside their scope at once
            seen[prefix] = so.current_name_scope()
            barrier.wait()

    workers = [threading.Thread(target=work, args=(p,)) for p in ("t1", "t2")]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert seen == {"t1": "t1/", "t2": "t2/"}


def test_asyncio_tasks_each_see_their_own_name_scope():
    async def task(prefix, started, other_started):
        with so.NameScope(prefix):
            started.set()
            await other_started.wait()   # the other task entered its scope meanwhile
            return so.current_name_scope()

    async def main():
        a, b = asyncio.Event(), asyncio.Event()
        return await asyncio.gather(task("x", a, b), task("y", b, a))

    assert asyncio.run(main()) == ["x/", "y/"]


def test_asyncio_tasks_share_one_name_scope_object():
    shared = so.NameScope("shared")

    async def task(started, other_started):
        with shared:
            started.set()
            await other_started.wait()
            inside = so.current_name_scope()
        return inside, so.current_name_scope()

    async def main():
        a, b = asyncio.Event(), asyncio.Event()
        return await asyncio.gather(task(a, b), task(b, a))

    assert asyncio.run(main()) == [("shared/", ""), ("shared/", "")]


def test_asyncio_task_inherits_the_name_scope_it_was_created_in():
    async def main():
        with so.NameScope("outer"):
            return await asyncio.create_task(asyncio.sleep(0, so.current_name_scope()))

    assert asyncio.run(main()) == "outer/"


def test_name_scope_in_a_copied_context_does_not_leak_out():
    def inside():
        so.NameScope("leak").__enter__()
        return so.current_name_scope()

    assert contextvars.copy_context().run(inside) == "leak/"
    assert so.current_name_scope() == ""


# -- BlobReference and scoped_name ------------------------------------------------------


def test_scoped_name_prefixes_a_plain_name():
    with so.NameScope("a"):
        assert so.scoped_name("x") == "a/x"


def test_scoped_name_returns_a_blob_reference():
    assert isinstance(so.scoped_name("x"), so.BlobReference)


def test_scoped_name_leaves_a_blob_reference_alone():
    ref = so.BlobReference("b/x")
    with so.NameScope("a"):
        assert so.scoped_name(ref) is ref


def test_scoped_name_rejects_non_str():
    with pytest.raises(TypeError, match="must be a str"):
        so.scoped_name(3)


def test_blob_reference_is_a_str_equal_to_its_name():
    ref = so.BlobReference("a/x")
    assert isinstance(ref, str) and ref == "a/x" and hash(ref) == hash("a/x")


def test_blob_reference_plus_str_stays_a_blob_reference():
    assert isinstance(so.BlobReference("a/x") + "_grad", so.BlobReference)
    assert isinstance("pre_" + so.BlobReference("x"), so.BlobReference)


def test_blob_reference_repr_names_its_type():
    assert repr(so.BlobReference("a/x")) == "BlobReference('a/x')"


def test_blob_reference_pickles():
    ref = pickle.loads(pickle.dumps(so.BlobReference("a/x")))
    assert type(ref) is so.BlobReference and ref == "a/x"


def test_names_module_is_what_the_scope_module_reexports():
    for name in ("BlobReference", "DeviceOption", "current_name_scope", "scoped_name",
                 "current_device_scope"):
        assert getattr(scope, name) is getattr(names, name) is getattr(so, name)


# -- the Net builder ---------------------------------------------------------------------


def test_net_builder_prefixes_plain_names_with_the_name_scope():
    net = so.Net("n")
    with so.NameScope("a"):
        net.Add(["x", "y"], ["z"])
    assert net.ops[0].inputs == ["a/x", "a/y"] and net.ops[0].outputs == ["a/z"]


def test_net_builder_leaves_blob_references_alone():
    net = so.Net("n")
    with so.NameScope("a"):
        net.Copy([so.BlobReference("w")], ["y"])
    assert net.ops[0].inputs == ["w"] and net.ops[0].outputs == ["a/y"]


def test_net_builder_returns_one_output_as_a_blob_reference():
    net = so.Net("n")
    with so.NameScope("a"):
        out = net.Copy(["x"], ["y"])
    assert type(out) is so.BlobReference and out == "a/y"


def test_net_builder_returns_several_outputs_as_a_tuple_of_blob_references():
    body = so.Net("body")
    body.Copy(["x"], ["y"])
    net = so.Net("n")
    with so.NameScope("a"):
        outs = net.Do(["x", "s"], ["y", "s"], net=body, inner_blobs=["x", "y"],
                      outer_blobs_idx=[0, 1])
    assert outs == ("a/y", "a/s") and all(type(o) is so.BlobReference for o in outs)


def test_output_of_one_op_used_in_another_scope_is_not_rescoped():
    net = so.Net("n")
    with so.NameScope("a"):
        y = net.Copy(["x"], ["y"])
    with so.NameScope("b"):
        net.Copy([y], ["z"])
    assert net.ops[1].inputs == ["a/y"] and net.ops[1].outputs == ["b/z"]


def test_auto_named_outputs_are_scoped_once():
    net = so.Net("n")
    prefix = net.auto_prefix        # "n", or "n_<k>" when another Net took "n" first
    with so.NameScope("a"):
        first = net.Copy(["x"], 1)
        second = net.Copy([first], 1)
    assert first == f"a/{prefix}/Copy_0" and second == f"a/{prefix}/Copy_1"
    assert net.ops[1].inputs == [f"a/{prefix}/Copy_0"]


def test_add_external_inputs_scopes_and_returns_blob_references():
    net = so.Net("n")
    with so.NameScope("a"):
        x, y = net.add_external_inputs("x", so.BlobReference("y"))
        one = net.add_external_inputs("w")
    assert (x, y, one) == ("a/x", "y", "a/w")
    assert all(type(r) is so.BlobReference for r in (x, y, one))
    assert net.netdef.external_inputs == ["a/x", "y", "a/w"]


def test_create_operator_does_not_apply_name_scopes():
    with so.NameScope("a"):
        op = so.create_operator("Copy", ["x"], ["y"])
    assert op.inputs == ["x"] and op.outputs == ["y"]


def test_gradient_ops_are_not_rescoped():
    net = so.Net("n")
    with so.NameScope("a"):
        net.Mul(["x", "w"], ["y"])
        net.AveragedLoss(["y"], ["loss"])
        grads = so.add_gradient_ops(net, ["a/loss"])
    assert grads["a/w"] == "a/w_grad"
    assert not any(n.startswith("a/a/") for op in net.ops for n in op.inputs + op.outputs)


def test_net_built_in_a_name_scope_runs():
    ws = so.Workspace()
    ws.feed_blob("a/x", np.array([1.0, 2.0]))
    net = so.Net("n")
    with so.NameScope("a"):
        y = net.Scale(["x"], ["y"], scale=2.0)
    ws.run_net_once(net)
    np.testing.assert_array_equal(ws.fetch_blob(y), [2.0, 4.0])


# -- DeviceOption ---------------------------------------------------------------------------


def test_device_option_defaults_to_cpu_zero():
    option = so.DeviceOption()
    assert (option.device_type, option.device_id, option.node_name, option.extra_info) == \
        ("cpu", 0, None, ())


def test_device_option_is_frozen():
    with pytest.raises(AttributeError):
        so.DeviceOption().device_id = 1


def test_device_option_takes_extra_info_as_a_tuple():
    assert so.DeviceOption(extra_info=["b", "a"]).extra_info == ("b", "a")


def test_device_options_with_equal_fields_are_equal_and_hash_alike():
    a, b = so.DeviceOption("gpu", 1), so.DeviceOption("gpu", 1)
    assert a == b and hash(a) == hash(b)


def test_device_option_round_trips_through_a_dict():
    option = so.DeviceOption("gpu", 2, node_name="n0", extra_info=("k=v",))
    assert so.DeviceOption.from_dict(option.to_dict()) == option


def test_device_option_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown DeviceOption fields"):
        so.DeviceOption.from_dict({"device": "cpu"})


@pytest.mark.parametrize("kwargs", [{"device_type": 1}, {"device_id": "0"}, {"device_id": True},
                                    {"node_name": 3}, {"extra_info": "ab"},
                                    {"extra_info": (1,)}])
def test_device_option_rejects_bad_field_types(kwargs):
    with pytest.raises(TypeError):
        so.DeviceOption(**kwargs)


def test_device_option_rejects_a_negative_device_id():
    with pytest.raises(ValueError, match=">= 0"):
        so.DeviceOption(device_id=-1)


# -- DeviceScope ----------------------------------------------------------------------------


def test_device_scope_is_none_at_top_level():
    assert so.current_device_scope() is None


def test_device_scope_sets_an_equal_copy_of_the_option():
    option = so.DeviceOption("gpu", 1)
    with so.DeviceScope(option):
        assert so.current_device_scope() == option


def test_device_scope_is_restored_to_none_after_exit():
    with so.DeviceScope(so.DeviceOption()):
        pass
    assert so.current_device_scope() is None


def test_device_scope_without_arguments_raises_value_error():
    with pytest.raises(ValueError,
                       match=re.escape("At least one argument should be non-null in DeviceScope")):
        so.DeviceScope()


def test_device_scope_rejects_a_non_device_option():
    with pytest.raises(TypeError, match="DeviceScope takes in a DeviceOption"):
        so.DeviceScope({"device_type": "cpu"})


def test_device_scope_with_only_node_name_is_a_cpu_option_with_that_node():
    with so.DeviceScope(node_name="n0"):
        assert so.current_device_scope() == so.DeviceOption(node_name="n0")


def test_explicit_node_name_overrides_the_option_node_name():
    with so.DeviceScope(so.DeviceOption(node_name="a"), node_name="b"):
        assert so.current_device_scope().node_name == "b"


def test_nested_device_scope_inherits_the_outer_node_name():
    with so.DeviceScope(so.DeviceOption(node_name="n0")):
        with so.DeviceScope(so.DeviceOption("gpu", 1)):
            assert so.current_device_scope() == so.DeviceOption("gpu", 1, node_name="n0")


def test_nested_device_scope_keeps_its_own_node_name():
    with so.DeviceScope(so.DeviceOption(node_name="outer")):
        with so.DeviceScope(so.DeviceOption(node_name="inner")):
            assert so.current_device_scope().node_name == "inner"


def test_node_name_only_scope_does_not_inherit_the_outer_device():
    with so.DeviceScope(so.DeviceOption("gpu", 3)):
        with so.DeviceScope(node_name="n1"):
            assert so.current_device_scope().device_type == "cpu"


def test_nested_device_scope_merges_and_sorts_extra_info_keeping_duplicates():
    with so.DeviceScope(so.DeviceOption(extra_info=("c", "a"))):
        with so.DeviceScope(so.DeviceOption(extra_info=("b", "a"))):
            assert so.current_device_scope().extra_info == ("a", "a", "b", "c")


def test_top_level_device_scope_sorts_its_extra_info():
    with so.DeviceScope(so.DeviceOption(extra_info=("b", "a"))):
        assert so.current_device_scope().extra_info == ("a", "b")


def test_device_scope_binds_the_new_option_with_as():
    with so.DeviceScope(node_name="n0") as option:
        assert option is so.current_device_scope()


def test_device_scopes_exited_out_of_order_raise_scope_error_and_keep_state():
    outer = so.DeviceScope(so.DeviceOption("gpu", 0))
    inner = so.DeviceScope(so.DeviceOption("gpu", 1))
    outer.__enter__()
    inner.__enter__()
    with pytest.raises(so.ScopeError, match="changed from outside DeviceScope"):
        outer.__exit__(None, None, None)
    assert so.current_device_scope().device_id == 1
    inner.__exit__(None, None, None)
    outer.__exit__(None, None, None)
    assert so.current_device_scope() is None


def test_threads_each_see_their_own_device_scope():
    seen = []
    with so.DeviceScope(so.DeviceOption("gpu", 1)):
        worker = threading.Thread(target=lambda: seen.append(so.current_device_scope()))
        worker.start()
        worker.join()
    assert seen == [None]


def test_ops_carry_the_device_scope_they_were_added_in():
    net = so.Net("n")
    with so.DeviceScope(so.DeviceOption("gpu", 1)):
        net.Copy(["x"], ["y"])
    net.Copy(["y"], ["z"])
    assert net.ops[0].device_option == so.DeviceOption("gpu", 1)
    assert net.ops[1].device_option is None


def test_create_operator_records_the_device_scope():
    with so.DeviceScope(node_name="n0"):
        op = so.create_operator("Copy", ["x"], ["y"])
    assert op.device_option == so.DeviceOption(node_name="n0")


def test_operator_def_with_a_device_option_round_trips_through_a_dict():
    with so.DeviceScope(so.DeviceOption("gpu", 1, extra_info=("k",))):
        op = so.create_operator("Copy", ["x"], ["y"])
    again = so.OperatorDef.from_dict(op.to_dict())
    assert again == op and isinstance(again.device_option, so.DeviceOption)


def test_running_an_op_on_a_gpu_device_raises_a_clear_error():
    ws = so.Workspace()
    ws.feed_blob("x", np.ones(2))
    net = so.Net("n")
    with so.DeviceScope(so.DeviceOption("gpu", 1)):
        net.Copy(["x"], ["y"])
    with pytest.raises(so.OperatorError, match="runs on the CPU only.*gpu:1"):
        ws.run_net_once(net)


def test_op_in_a_cpu_device_scope_runs():
    ws = so.Workspace()
    ws.feed_blob("x", np.ones(2))
    net = so.Net("n")
    with so.DeviceScope(so.DeviceOption(node_name="n0")):
        net.Copy(["x"], ["y"])
    ws.run_net_once(net)
    np.testing.assert_array_equal(ws.fetch_blob("y"), [1.0, 1.0])


# -- EmptyNameScope, EmptyDeviceScope ---------------------------------------------------------


def test_empty_name_scope_is_the_root_inside_and_restores_after():
    with so.NameScope("a"):
        with so.EmptyNameScope():
            assert so.current_name_scope() == ""
        assert so.current_name_scope() == "a/"


def test_empty_name_scope_lets_exceptions_propagate():
    with so.NameScope("a"):
        with pytest.raises(KeyError):
            with so.EmptyNameScope():
                raise KeyError("boom")
        assert so.current_name_scope() == "a/"


def test_empty_device_scope_is_none_inside_and_restores_after():
    option = so.DeviceOption("gpu", 1)
    with so.DeviceScope(option):
        with so.EmptyDeviceScope():
            assert so.current_device_scope() is None
        assert so.current_device_scope() == option


def test_empty_device_scope_lets_exceptions_propagate():
    with pytest.raises(KeyError):
        with so.DeviceScope(node_name="n0"), so.EmptyDeviceScope():
            raise KeyError("boom")
    assert so.current_device_scope() is None


def test_ops_added_in_an_empty_device_scope_carry_no_device():
    net = so.Net("n")
    with so.DeviceScope(so.DeviceOption("gpu", 1)), so.EmptyDeviceScope():
        net.Copy(["x"], ["y"])
    assert net.ops[0].device_option is None


def test_gradient_ops_take_the_device_of_their_forward_op_not_the_current_scope():
    net = so.Net("devices")
    with so.DeviceScope(so.DeviceOption("cpu", 0, node_name="trainer")):
        net.Tanh(["x"], ["y"])
    net.SumElements(["y"], ["loss"])
    with so.DeviceScope(so.DeviceOption("cpu", 0, node_name="elsewhere")):
        so.add_gradient_ops(net, ["loss"])
    tanh_grad = [op for op in net.ops if op.type == "TanhGradient"]
    assert tanh_grad and tanh_grad[0].device_option.node_name == "trainer"
