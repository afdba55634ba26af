"""Variable scopes, get_variable and initializers (docs/variables.md).

TensorFlow v1 semantics and phrases, without its naming traps: re-entering a
scope gives the same names, default names count the scopes opened per workspace.
"""

import asyncio
import gc
import pickle
import re
import threading
import weakref

import numpy as np
import pytest

import scopeops as so
import scopeops.ops.math  # noqa: F401  - registers the numeric operators
from scopeops import variables


@pytest.fixture
def ws():
    return so.Workspace()


# -- names --------------------------------------------------------------------------------


def test_variable_outside_any_scope_is_named_as_given(ws):
    assert so.get_variable("w", (2,), workspace=ws) == "w"


def test_variable_is_named_scope_slash_name(ws):
    with so.variable_scope("dense", workspace=ws):
        assert so.get_variable("w", (2,)) == "dense/w"


def test_variable_scopes_nest_with_slashes(ws):
    with so.variable_scope("model", workspace=ws):
        with so.variable_scope("dense") as inner:
            assert inner.name == "model/dense"
            assert so.get_variable("w", (2,)) == "model/dense/w"


def test_get_variable_returns_a_blob_reference(ws):
    with so.variable_scope("dense", workspace=ws):
        assert type(so.get_variable("w", (2,))) is so.BlobReference


def test_reentering_a_scope_by_name_gives_the_same_names(ws):
    with so.variable_scope("dense", workspace=ws) as first:
        pass
    with so.variable_scope("dense", workspace=ws) as again:
        assert again.name == first.name == "dense"


def test_reentering_a_scope_by_object_gives_the_same_names(ws):
    with so.variable_scope("model", workspace=ws):
        with so.variable_scope("dense") as captured:
            pass
    with so.variable_scope("other", workspace=ws):
        with so.variable_scope(captured, reuse=so.AUTO_REUSE) as again:
            assert again.name == "model/dense"
            assert so.get_variable("w", (2,)) == "model/dense/w"


def test_scope_names_ending_in_a_slash_are_not_doubled(ws):
    with so.variable_scope("dense/", workspace=ws) as scope:
        assert scope.name == "dense"


@pytest.mark.parametrize("bad", ["", "/a", "a//b"])
def test_malformed_scope_names_raise_value_error(bad):
    with pytest.raises(ValueError, match="non-empty name"):
        with so.variable_scope(bad):
            pass


def test_non_str_scope_name_raises_type_error():
    with pytest.raises(TypeError, match="variable_scope takes a name"):
        with so.variable_scope(3):
            pass


def test_no_name_and_no_default_name_raises_type_error():
    with pytest.raises(TypeError, match="If default_name is None then name_or_scope is required"):
        with so.variable_scope(None):
            pass


def test_variable_names_ignore_name_scopes(ws):
    with so.NameScope("tower_0"), so.variable_scope("model", workspace=ws):
        assert so.get_variable("w", (2,)) == "model/w"


# -- default_name ----------------------------------------------------------------------------


def test_default_names_are_made_unique_per_workspace(ws):
    seen = []
    for _ in range(3):
        with so.variable_scope(None, default_name="dense", workspace=ws) as scope:
            so.get_variable("w", (2,))
            seen.append(scope.name)
    assert seen == ["dense", "dense_1", "dense_2"]


def test_default_name_counts_scopes_that_created_nothing(ws):
    with so.variable_scope(None, default_name="dense", workspace=ws):
        pass
    with so.variable_scope(None, default_name="dense", workspace=ws) as scope:
        assert scope.name == "dense_1"


def test_default_names_are_counted_separately_in_each_workspace(ws):
    other = so.Workspace()
    with so.variable_scope(None, default_name="dense", workspace=ws):
        pass
    with so.variable_scope(None, default_name="dense", workspace=other) as scope:
        assert scope.name == "dense"


def test_default_name_skips_a_name_opened_explicitly(ws):
    with so.variable_scope("dense", workspace=ws):
        pass
    with so.variable_scope(None, default_name="dense", workspace=ws) as scope:
        assert scope.name == "dense_1"


def test_default_names_are_counted_inside_their_enclosing_scope(ws):
    with so.variable_scope("a", workspace=ws):
        with so.variable_scope(None, default_name="dense") as scope:
            assert scope.name == "a/dense"
    with so.variable_scope("b", workspace=ws):
        with so.variable_scope(None, default_name="dense") as scope:
            assert scope.name == "b/dense"


def test_name_or_scope_wins_over_default_name(ws):
    with so.variable_scope("given", default_name="dense", workspace=ws) as scope:
        assert scope.name == "given"


def test_default_name_with_reuse_true_raises_value_error():
    with pytest.raises(ValueError, match="reuse=True cannot be used without a name_or_scope"):
        with so.variable_scope(None, default_name="dense", reuse=True):
            pass


# -- reuse -------------------------------------------------------------------------------------


def test_existing_variable_without_reuse_raises_the_tensorflow_phrase(ws):
    with so.variable_scope("dense", workspace=ws):
        so.get_variable("w", (2,))
    with so.variable_scope("dense", workspace=ws):
        with pytest.raises(so.VariableError,
                           match=re.escape("Variable dense/w already exists, disallowed")):
            so.get_variable("w", (2,))


def test_missing_variable_with_reuse_true_raises_the_tensorflow_phrase(ws):
    with so.variable_scope("dense", reuse=True, workspace=ws):
        with pytest.raises(so.VariableError, match=re.escape(
                "Variable dense/w does not exist, or was not created with get_variable()")):
            so.get_variable("w", (2,))


def test_reuse_true_returns_the_existing_variable_untouched(ws):
    with so.variable_scope("dense", workspace=ws):
        w = so.get_variable("w", (2,))
    before = ws.fetch_blob(w).copy()
    with so.variable_scope("dense", reuse=True, workspace=ws):
        assert so.get_variable("w", (2,)) == w
    np.testing.assert_array_equal(ws.fetch_blob(w), before)


def test_auto_reuse_creates_then_shares(ws):
    for _ in range(2):
        with so.variable_scope("dense", reuse=so.AUTO_REUSE, workspace=ws):
            so.get_variable("w", (2,))
    assert so.global_variables(ws) == ["dense/w"]


def test_reuse_is_inherited_by_inner_scopes(ws):
    with so.variable_scope("a", reuse=True, workspace=ws):
        with so.variable_scope("b") as inner:
            assert inner.reuse is True


def test_reuse_false_does_not_turn_off_an_inherited_reuse(ws):
    with so.variable_scope("a", reuse=so.AUTO_REUSE, workspace=ws):
        with so.variable_scope("b", reuse=False) as inner:
            assert inner.reuse is so.AUTO_REUSE


def test_reuse_is_false_outside_any_reusing_scope(ws):
    with so.variable_scope("a", workspace=ws) as scope:
        assert scope.reuse is False


def test_reentering_by_object_restores_its_reuse(ws):
    with so.variable_scope("a", reuse=True, workspace=ws) as captured:
        pass
    with so.variable_scope(captured) as again:
        assert again.reuse is True


def test_reentering_by_object_takes_the_reuse_the_call_gives(ws):
    with so.variable_scope("a", workspace=ws) as captured:
        pass
    with so.variable_scope(captured, reuse=so.AUTO_REUSE) as again:
        assert again.reuse is so.AUTO_REUSE


@pytest.mark.parametrize("bad", [1, 0, "yes", np.bool_(True)])
def test_reuse_must_be_none_bool_or_auto_reuse(bad):
    with pytest.raises(TypeError, match="reuse must be"):
        with so.variable_scope("a", reuse=bad):
            pass


def test_auto_reuse_is_a_picklable_singleton():
    assert pickle.loads(pickle.dumps(so.AUTO_REUSE)) is so.AUTO_REUSE
    assert repr(so.AUTO_REUSE) == "AUTO_REUSE"


# -- shape and dtype checks --------------------------------------------------------------------


def test_sharing_with_another_shape_raises_the_tensorflow_phrase(ws):
    with so.variable_scope("dense", reuse=so.AUTO_REUSE, workspace=ws):
        so.get_variable("w", (2, 3))
        with pytest.raises(so.VariableError, match=re.escape(
                "Trying to share variable dense/w, but specified shape (3, 3) and found "
                "shape (2, 3)")):
            so.get_variable("w", (3, 3))


def test_sharing_with_another_dtype_raises_the_tensorflow_phrase(ws):
    with so.variable_scope("dense", reuse=so.AUTO_REUSE, workspace=ws):
        so.get_variable("w", (2,), dtype="float32")
        with pytest.raises(so.VariableError, match=re.escape(
                "Trying to share variable dense/w, but specified dtype float64 and found "
                "dtype float32")):
            so.get_variable("w", (2,), dtype="float64")


def test_sharing_without_a_shape_accepts_the_found_shape(ws):
    with so.variable_scope("dense", reuse=so.AUTO_REUSE, workspace=ws):
        so.get_variable("w", (2, 3))
        assert so.get_variable("w") == "dense/w"


def test_variable_error_is_a_scope_error_and_a_value_error(ws):
    with so.variable_scope("d", reuse=True, workspace=ws):
        with pytest.raises(so.ScopeError):
            so.get_variable("w", (2,))
        with pytest.raises(ValueError):
            so.get_variable("w", (2,))


def test_new_variable_without_a_shape_raises_variable_error(ws):
    with pytest.raises(so.VariableError, match="must be fully defined"):
        so.get_variable("w", workspace=ws)


def test_int_shape_means_a_vector(ws):
    w = so.get_variable("w", 4, workspace=ws)
    assert ws.fetch_blob(w).shape == (4,)


# -- workspaces --------------------------------------------------------------------------------


def test_variable_is_created_in_the_scope_workspace(ws):
    with so.variable_scope("dense", workspace=ws):
        w = so.get_variable("w", (2, 3))
    assert ws.fetch_blob(w).shape == (2, 3) and ws.fetch_blob(w).dtype == np.float32


def test_workspace_is_inherited_by_inner_scopes(ws):
    with so.variable_scope("a", workspace=ws):
        with so.variable_scope("b") as inner:
            assert inner.workspace is ws


def test_get_variable_workspace_argument_wins_over_the_scope(ws):
    other = so.Workspace()
    with so.variable_scope("a", workspace=ws):
        so.get_variable("w", (2,), workspace=other)
    assert other.has_blob("a/w") and not ws.has_blob("a/w")


def test_reentering_by_object_restores_its_workspace(ws):
    with so.variable_scope("a", workspace=ws) as captured:
        pass
    with so.variable_scope("b", workspace=so.Workspace()):
        with so.variable_scope(captured) as again:
            assert again.workspace is ws


def test_get_variable_without_a_workspace_raises_variable_error():
    with pytest.raises(so.VariableError, match="has no workspace"):
        so.get_variable("w", (2,))


def test_variable_scope_rejects_a_non_workspace():
    with pytest.raises(TypeError, match="must be a scopeops Workspace"):
        with so.variable_scope("a", workspace={}):
            pass


def test_creating_over_a_blob_not_made_by_get_variable_raises_variable_error(ws):
    ws.feed_blob("w", np.zeros(2, np.float32))
    with pytest.raises(so.VariableError, match="not created with get_variable"):
        so.get_variable("w", (2,), workspace=ws)


def test_variables_are_per_workspace(ws):
    other = so.Workspace()
    so.get_variable("w", (2,), workspace=ws)
    assert so.get_variable("w", (2,), workspace=other) == "w"


def test_registry_does_not_keep_a_workspace_alive():
    workspace = so.Workspace()
    with so.variable_scope(None, default_name="dense", workspace=workspace):
        so.get_variable("w", (2,))
    ref = weakref.ref(workspace)
    del workspace
    gc.collect()
    assert ref() is None


# -- listing and resetting ---------------------------------------------------------------------


def test_global_variables_lists_names_in_creation_order(ws):
    with so.variable_scope("m", workspace=ws):
        for name in ("z", "a", "m"):
            so.get_variable(name, (1,))
    assert so.global_variables(ws) == ["m/z", "m/a", "m/m"]


def test_trainable_variables_leave_out_non_trainable_ones(ws):
    with so.variable_scope("m", workspace=ws):
        so.get_variable("w", (1,))
        so.get_variable("step", (), dtype="int64", trainable=False)
    assert so.trainable_variables(ws) == ["m/w"]
    assert so.global_variables(ws) == ["m/w", "m/step"]


def test_listing_a_workspace_without_variables_is_empty(ws):
    assert so.global_variables(ws) == [] and so.trainable_variables(ws) == []


def test_a_variable_whose_blob_was_removed_is_forgotten(ws):
    w = so.get_variable("w", (2,), workspace=ws)
    ws.remove_blob(w)
    assert so.global_variables(ws) == []


def test_reset_variables_removes_the_blobs_and_forgets_them(ws):
    with so.variable_scope("m", workspace=ws):
        w = so.get_variable("w", (2,))
    ws.feed_blob("data", np.ones(2))
    so.reset_variables(ws)
    assert not ws.has_blob(w) and ws.has_blob("data")
    assert so.global_variables(ws) == []


def test_notebook_rerun_after_reset_variables_gives_the_same_names(ws):
    def build():
        with so.variable_scope(None, default_name="dense", workspace=ws) as scope:
            so.get_variable("w", (2, 2))
        return scope.name

    first = build()
    so.reset_variables(ws)
    assert build() == first == "dense"
    assert so.global_variables(ws) == ["dense/w"]


def test_notebook_rerun_without_reset_is_refused(ws):
    with so.variable_scope("model", workspace=ws):
        so.get_variable("w", (2,))
    with so.variable_scope("model", workspace=ws):
        with pytest.raises(so.VariableError, match="already exists, disallowed"):
            so.get_variable("w", (2,))


@pytest.mark.parametrize("fn", [so.global_variables, so.trainable_variables,
                                so.reset_variables])
def test_listing_and_reset_need_a_workspace(fn):
    with pytest.raises(TypeError, match="takes a scopeops Workspace"):
        fn(None)


# -- initializers ------------------------------------------------------------------------------


def test_initializer_argument_wins_over_the_scope_initializer(ws):
    with so.variable_scope("m", initializer=so.initializers.ones(), workspace=ws):
        w = so.get_variable("w", (2,), initializer=so.initializers.constant(3.0))
    np.testing.assert_array_equal(ws.fetch_blob(w), [3.0, 3.0])


def test_scope_initializer_is_used_when_no_argument(ws):
    with so.variable_scope("m", initializer=so.initializers.ones(), workspace=ws):
        w = so.get_variable("w", (2,))
    np.testing.assert_array_equal(ws.fetch_blob(w), [1.0, 1.0])


def test_scope_initializer_is_inherited_by_inner_scopes(ws):
    with so.variable_scope("m", initializer=so.initializers.ones(), workspace=ws):
        with so.variable_scope("inner") as inner:
            assert isinstance(inner.initializer, so.initializers.Initializer)
            w = so.get_variable("w", (2,))
    np.testing.assert_array_equal(ws.fetch_blob(w), [1.0, 1.0])


def test_reentering_by_object_restores_its_initializer(ws):
    with so.variable_scope("m", initializer=so.initializers.ones(), workspace=ws) as captured:
        pass
    with so.variable_scope(captured):
        w = so.get_variable("w", (2,))
    np.testing.assert_array_equal(ws.fetch_blob(w), [1.0, 1.0])


def test_default_initializer_for_floats_is_glorot_uniform(ws):
    w = so.get_variable("w", (200, 300), workspace=ws)
    value = ws.fetch_blob(w)
    limit = np.sqrt(6.0 / 500)
    assert np.all(np.abs(value) <= limit) and value.std() > limit / 3


def test_default_initializer_for_ints_is_zeros(ws):
    w = so.get_variable("step", (3,), dtype="int32", workspace=ws)
    value = ws.fetch_blob(w)
    assert value.dtype == np.int32 and not value.any()


def test_a_value_as_initializer_gives_the_shape(ws):
    w = so.get_variable("w", initializer=[[1.0, 2.0]], workspace=ws)
    np.testing.assert_array_equal(ws.fetch_blob(w), [[1.0, 2.0]])


def test_initializer_returning_the_wrong_shape_raises_variable_error(ws):
    with pytest.raises(so.VariableError, match="returned shape"):
        so.get_variable("w", (2,), initializer=lambda shape, dtype: np.zeros(3), workspace=ws)


@pytest.mark.parametrize("make", [
    lambda: so.initializers.uniform(-1.0, 1.0, seed=7),
    lambda: so.initializers.normal(seed=7),
    lambda: so.initializers.glorot_uniform(seed=7),
])
def test_seeded_initializers_are_reproducible(make):
    np.testing.assert_array_equal(make()((4, 5), "float32"), make()((4, 5), "float32"))


def test_a_seeded_initializer_repeats_its_values_on_every_call():
    init = so.initializers.normal(seed=3)
    np.testing.assert_array_equal(init((3,), "float64"), init((3,), "float64"))


def test_different_seeds_give_different_values():
    a = so.initializers.uniform(0.0, 1.0, seed=1)((8,), "float64")
    b = so.initializers.uniform(0.0, 1.0, seed=2)((8,), "float64")
    assert not np.array_equal(a, b)


def test_seeded_variables_are_reproducible_across_workspaces():
    values = []
    for _ in range(2):
        workspace = so.Workspace()
        with so.variable_scope("m", initializer=so.initializers.glorot_uniform(seed=0),
                               workspace=workspace):
            values.append(workspace.fetch_blob(so.get_variable("w", (3, 4))))
    np.testing.assert_array_equal(*values)


@pytest.mark.parametrize("make, expected", [
    (so.initializers.zeros, 0.0), (so.initializers.ones, 1.0),
    (lambda: so.initializers.constant(2.5), 2.5),
])
def test_constant_initializers_fill_shape_and_dtype(make, expected):
    value = make()((2, 3), "float64")
    assert value.shape == (2, 3) and value.dtype == np.float64 and np.all(value == expected)


def test_constant_initializer_broadcasts_an_array():
    np.testing.assert_array_equal(so.initializers.constant([1, 2])((2, 2), "int64"),
                                  [[1, 2], [1, 2]])


def test_constant_initializer_refuses_a_value_that_cannot_fill_the_shape():
    with pytest.raises(ValueError, match="cannot fill"):
        so.initializers.constant([1, 2, 3])((2, 2), "float32")


def test_uniform_initializer_stays_in_range():
    value = so.initializers.uniform(2.0, 3.0, seed=0)((1000,), "float32")
    assert value.dtype == np.float32 and value.min() >= 2.0 and value.max() < 3.0


def test_uniform_initializer_draws_integers_for_integer_dtypes():
    value = so.initializers.uniform(0, 5, seed=0)((100,), "int32")
    assert value.dtype == np.int32 and value.min() >= 0 and value.max() < 5


def test_uniform_initializer_needs_low_below_high():
    with pytest.raises(ValueError, match="low < high"):
        so.initializers.uniform(1.0, 1.0)


def test_normal_initializer_has_the_requested_moments():
    value = so.initializers.normal(mean=5.0, std=0.5, seed=0)((20000,), "float64")
    assert abs(value.mean() - 5.0) < 0.02 and abs(value.std() - 0.5) < 0.02


@pytest.mark.parametrize("make", [so.initializers.normal, so.initializers.glorot_uniform])
def test_random_float_initializers_refuse_integer_dtypes(make):
    with pytest.raises(TypeError, match="floating-point"):
        make()((2,), "int32")


def test_glorot_fans_of_a_conv_kernel_count_the_receptive_field():
    assert so.initializers.fans((3, 3, 16, 32)) == (144, 288)


def test_initializers_reject_a_non_int_seed():
    with pytest.raises(TypeError, match="seed"):
        so.initializers.normal(seed=1.5)


# -- name scopes opened by variable scopes -----------------------------------------------------


def test_ops_added_in_a_variable_scope_are_prefixed_with_its_name(ws):
    net = so.Net("n")
    with so.variable_scope("dense", workspace=ws):
        w = so.get_variable("w", (2, 2))
        y = net.MatMul(["x", w], ["y"])
    assert net.ops[0].inputs == ["dense/x", "dense/w"] and y == "dense/y"


def test_reentered_variable_scope_gives_the_same_op_names(ws):
    names = []
    for _ in range(2):
        net = so.Net("n")
        with so.variable_scope("dense", reuse=so.AUTO_REUSE, workspace=ws):
            names.append(net.Copy(["x"], ["y"]))
    assert names == ["dense/y", "dense/y"]


def test_variable_scope_opens_its_name_scope_inside_the_current_one(ws):
    with so.NameScope("tower_1"), so.variable_scope("model", workspace=ws):
        assert so.current_name_scope() == "tower_1/model/"
        assert so.get_variable("w", (2,)) == "model/w"


def test_variable_scope_reentered_by_object_names_ops_with_its_full_name(ws):
    with so.variable_scope("model", workspace=ws):
        with so.variable_scope("dense") as captured:
            pass
    with so.variable_scope(captured):
        assert so.current_name_scope() == "model/dense/"
    with so.variable_scope("model", workspace=ws):
        with so.variable_scope(captured):
            assert so.current_name_scope() == "model/dense/"


def test_variable_scope_restores_name_scope_and_variable_scope_on_exception(ws):
    with pytest.raises(KeyError):
        with so.variable_scope("m", workspace=ws):
            raise KeyError("boom")
    assert so.current_name_scope() == ""
    assert variables.current_variable_scope().name == ""


def test_model_built_with_variables_runs(ws):
    ws.feed_blob("x", np.ones((1, 2), np.float32))
    net = so.Net("n")
    x = net.add_external_inputs("x")
    with so.variable_scope("dense", initializer=so.initializers.ones(), workspace=ws):
        w = so.get_variable("w", (3, 2))
        b = so.get_variable("b", (3,), initializer=so.initializers.zeros())
        y = net.FC([x, w, b], ["y"])
    ws.run_net_once(net)
    np.testing.assert_array_equal(ws.fetch_blob(y), [[2.0, 2.0, 2.0]])


# -- context-local state ------------------------------------------------------------------------


def test_threads_each_see_their_own_variable_scope(ws):
    barrier = threading.Barrier(2)
    seen = {}

    def work(name):
        with so.variable_scope(name, workspace=ws):
            barrier.wait()
            seen[name] = so.get_variable("w", (1,))
            barrier.wait()

    workers = [threading.Thread(target=work, args=(n,)) for n in ("t1", "t2")]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert seen == {"t1": "t1/w", "t2": "t2/w"}


def test_asyncio_tasks_each_see_their_own_variable_scope(ws):
    async def task(name, started, other_started):
        with so.variable_scope(name, workspace=ws):
            started.set()
            await other_started.wait()
            return so.get_variable("w", (1,))

    async def main():
        a, b = asyncio.Event(), asyncio.Event()
        return await asyncio.gather(task("x", a, b), task("y", b, a))

    assert asyncio.run(main()) == ["x/w", "y/w"]


def test_concurrent_auto_reuse_creates_a_variable_once(ws):
    results = []

    def work():
        with so.variable_scope("shared", reuse=so.AUTO_REUSE, workspace=ws):
            results.append(so.get_variable("w", (4,)))

    workers = [threading.Thread(target=work) for _ in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert results == ["shared/w"] * 8 and so.global_variables(ws) == ["shared/w"]


# -- resuming from a checkpoint (issue 15) --------------------------------------------------


def saved_and_loaded(tmp_path, ws):
    path = tmp_path / "model.safetensors"
    so.save_workspace(ws, path)
    return so.load_workspace(path)


def dense_model(ws, reuse=None):
    with so.variable_scope("dense", reuse=reuse, workspace=ws):
        w = so.get_variable("w", (2, 3))
        step = so.get_variable("step", (), dtype="int64", trainable=False)
    return w, step


@pytest.fixture
def trained(ws):
    dense_model(ws)
    ws["dense/w"] = np.arange(6, dtype=np.float32).reshape(2, 3)    # "trained" values
    ws["dense/step"] = np.array(41)
    return ws


@pytest.mark.parametrize("reuse", [None, False, True, so.AUTO_REUSE],
                         ids=["None", "False", "True", "AUTO_REUSE"])
def test_get_variable_takes_a_loaded_blob_over_whatever_reuse_is(tmp_path, trained, reuse):
    loaded = saved_and_loaded(tmp_path, trained)
    assert dense_model(loaded, reuse) == ("dense/w", "dense/step")
    np.testing.assert_array_equal(loaded["dense/w"], np.arange(6).reshape(2, 3))  # not re-drawn
    assert loaded["dense/step"] == 41
    assert so.global_variables(loaded) == ["dense/w", "dense/step"]
    assert so.trainable_variables(loaded) == ["dense/w"]


def test_after_the_take_over_reuse_rules_apply_again(tmp_path, trained):
    loaded = saved_and_loaded(tmp_path, trained)
    dense_model(loaded)
    with pytest.raises(so.VariableError, match="Variable dense/w already exists, disallowed"):
        dense_model(loaded)
    assert dense_model(loaded, reuse=True) == ("dense/w", "dense/step")


@pytest.mark.parametrize("shape, dtype, phrase", [
    ((3, 2), "float32", "Trying to share variable dense/w, but specified shape (3, 2) and found "
                        "shape (2, 3)."),
    ((2, 3), "float64", "Trying to share variable dense/w, but specified dtype float64 and found "
                        "dtype float32."),
], ids=["shape", "dtype"])
def test_a_loaded_blob_of_another_shape_or_dtype_is_refused_and_stays_loaded(
        tmp_path, trained, shape, dtype, phrase):
    loaded = saved_and_loaded(tmp_path, trained)
    with so.variable_scope("dense", workspace=loaded):
        with pytest.raises(so.VariableError) as info:
            so.get_variable("w", shape, dtype=dtype)
        assert str(info.value).startswith(phrase)
        assert "loaded from a checkpoint" in str(info.value)
        assert so.get_variable("w", (2, 3)) == "dense/w"     # still there to take over
    np.testing.assert_array_equal(loaded["dense/w"], np.arange(6).reshape(2, 3))


def test_a_loaded_tensor_that_was_no_variable_is_taken_over_with_the_calls_trainability(
        tmp_path, ws):
    ws["dense/w"] = np.ones((2, 3), np.float32)     # saved by hand, not with get_variable
    ws["dense/step"] = np.array(3)
    loaded = saved_and_loaded(tmp_path, ws)
    assert so.global_variables(loaded) == []
    dense_model(loaded)
    assert so.global_variables(loaded) == ["dense/w", "dense/step"]
    assert so.trainable_variables(loaded) == ["dense/w"]
    np.testing.assert_array_equal(loaded["dense/w"], np.ones((2, 3)))


def test_a_blob_fed_by_hand_is_still_not_taken_over(ws):
    ws["dense/w"] = np.ones((2, 3), np.float32)
    with pytest.raises(so.VariableError, match="Variable dense/w cannot be created"):
        dense_model(ws)


def test_a_loaded_blob_that_is_not_a_tensor_is_not_taken_over(tmp_path, ws):
    ws["dense/w"] = "not a tensor"
    loaded = saved_and_loaded(tmp_path, ws)
    with pytest.raises(so.VariableError, match="Variable dense/w cannot be created"):
        dense_model(loaded)


def test_a_loaded_blob_removed_before_get_variable_is_created_afresh(tmp_path, trained):
    loaded = saved_and_loaded(tmp_path, trained)
    loaded.remove_blob("dense/w")
    assert so.global_variables(loaded) == ["dense/step"]
    dense_model(loaded)
    assert loaded["dense/w"].shape == (2, 3)
    assert not np.array_equal(loaded["dense/w"], np.arange(6).reshape(2, 3))


def test_reset_variables_after_a_load_removes_the_loaded_variables(tmp_path, trained):
    loaded = saved_and_loaded(tmp_path, trained)
    so.reset_variables(loaded)
    assert loaded.local_blobs() == [] and so.global_variables(loaded) == []


def test_register_loaded_blobs_checks_its_arguments(ws):
    ws["t"] = np.ones(2)
    ws["s"] = "text"
    with pytest.raises(TypeError, match="Workspace"):
        variables.register_loaded_blobs({"t": 1}, ["t"])
    with pytest.raises(TypeError, match="blob names"):
        variables.register_loaded_blobs(ws, [1])
    with pytest.raises(so.VariableError, match="holds no blob missing"):
        variables.register_loaded_blobs(ws, ["missing"])
    with pytest.raises(so.VariableError, match="not a tensor"):
        variables.register_loaded_blobs(ws, ["t"], {"s": True})
    assert so.global_variables(ws) == []       # a refused call registered nothing
    with pytest.raises(so.VariableError, match="cannot be created"):
        so.get_variable("t", (2,), workspace=ws, dtype="float64")


def regression_data():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 3))
    return x, x @ np.array([[1.0], [-2.0], [0.5]]) + 0.25


def build_regression(ws):
    with so.variable_scope("model", workspace=ws):
        w = so.get_variable("w", (1, 3), dtype="float64",
                            initializer=so.initializers.uniform(-1, 1, seed=0))
        b = so.get_variable("b", (1,), dtype="float64")
    net = so.Net("train")
    net.FC(["X", w, b], ["pred"])
    net.SquaredL2Distance(["pred", "Y"], ["dist"])
    net.AveragedLoss(["dist"], ["loss"])
    so.add_gradient_ops(net, ["loss"])
    return net, [w, b]


def train(ws, net, params, steps):
    x, y = regression_data()
    losses = []
    for _ in range(steps):
        result = so.accumulate_microbatches(net, ws, {"X": x, "Y": y}, 4, params, ["loss"])
        for param in params:
            so.accumulate(ws.get_blob(param), ws.get_blob(param + "_grad"), -0.1)
        losses.append(result["loss"])
    return losses


def test_training_resumed_from_a_checkpoint_continues_exactly(tmp_path):
    # Issue 15: variables, micro-batch accumulation, a checkpoint mid-way, then resume.
    ws = so.Workspace()
    net, params = build_regression(ws)
    train(ws, net, params, 10)
    skipped = so.save_workspace(ws, tmp_path / "mid.safetensors")
    assert list(skipped) == ["microbatch_scope"]
    uninterrupted = train(ws, net, params, 10)

    resumed = so.load_workspace(tmp_path / "mid.safetensors")
    net, params = build_regression(resumed)
    assert params == ["model/w", "model/b"]
    assert train(resumed, net, params, 10) == uninterrupted
    np.testing.assert_array_equal(resumed["model/w"], ws["model/w"])
    assert so.trainable_variables(resumed) == ["model/w", "model/b"]
