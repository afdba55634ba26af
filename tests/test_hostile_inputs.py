"""Regression tests for the hostile-input findings of issue 14 (the compiled core's part).

Each test names the scenario it replays. Repros that could crash or hang the interpreter
run in a fresh subprocess with a timeout, so that a crash fails the test instead of
killing pytest.

What the core promises (docs/caffe2.md, "ndarray subclasses"): everything it reads about
an array (dtype, shape, strides, byte sizes, data) comes from the C-level array; a
subclass's Python-level properties and methods never size a copy and never run inside
the core; copies are plain ndarrays.
"""

import gc
import os
import subprocess
import sys
import textwrap
import tracemalloc
import weakref

import numpy as np
import pytest

import scopeops as so

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(so.__file__)))


def run_script(script, timeout=60):
    """Run ``script`` in a fresh interpreter; returns (exit status, stdout, stderr).
    A hang past ``timeout`` is reported as status "timeout", a crash by its signal."""
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT, PYTHONFAULTHANDLER="1")
    try:
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)],
                              cwd=PACKAGE_PARENT, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", "", f"hung for more than {timeout} s"
    return proc.returncode, proc.stdout, proc.stderr


def assert_clean_run(script, timeout=60):
    status, out, err = run_script(script, timeout)
    assert status == 0, f"exit status {status}\n{out[-2000:]}\n{err[-3000:]}"
    return out


class Ignored(Exception):
    """Raised by a subclass's Python-level attributes: the core must never read them."""


class Unreadable(np.ndarray):
    """An ndarray subclass every Python-level size or type attribute of which raises."""

    def _refuse(self):
        raise Ignored("the core read a Python-level attribute of an ndarray subclass")

    shape = property(_refuse)
    dtype = property(_refuse)
    strides = property(_refuse)
    nbytes = property(_refuse)
    size = property(_refuse)
    itemsize = property(_refuse)
    ndim = property(_refuse)


# -- 1. sizes and types come from the C-level array ---------------------------------------


def test_copy_forwarded_tensors_of_a_subclass_whose_shape_lies_copies_the_real_array():
    out = assert_clean_run(r"""
        import numpy as np, scopeops as so

        class Liar(np.ndarray):
            @property
            def shape(self):
                return (1,)

        real = np.arange(4_000_000, dtype=np.float64)
        p = so.Workspace()
        p["x"] = real.view(Liar)
        c = so.Workspace.from_bindings(p, {"x": "x"})
        c.copy_forwarded_tensors(["x"])
        snap = c["x"]
        assert type(snap) is np.ndarray, type(snap)
        assert snap.shape == (4_000_000,) and snap.dtype == np.float64, (snap.shape, snap.dtype)
        assert np.array_equal(snap, real)
        print("ok")
    """)
    assert out.strip() == "ok"


def test_copy_forwarded_tensors_of_a_subclass_whose_dtype_lies_copies_the_real_array():
    out = assert_clean_run(r"""
        import gc
        import numpy as np, scopeops as so

        class Liar(np.ndarray):
            @property
            def dtype(self):
                return np.dtype(np.int8)

        real = np.arange(100_000, dtype=np.float64)
        p = so.Workspace()
        p["x"] = real.view(Liar)
        c = so.Workspace.from_bindings(p, {"x": "x"})
        c.copy_forwarded_tensors(["x"])
        snap = c["x"]
        assert snap.dtype == np.float64 and snap.shape == (100_000,), (snap.dtype, snap.shape)
        assert np.array_equal(snap, real)
        del c, snap, p
        gc.collect()
        print("ok")
    """)
    assert out.strip() == "ok"


def test_copy_forwarded_tensors_of_a_subclass_reads_none_of_its_python_attributes():
    p = so.Workspace()
    real = np.arange(12.0).reshape(3, 4)
    p["x"] = real.view(Unreadable)
    c = so.Workspace.from_bindings(p, {"x": "x"})
    c.copy_forwarded_tensors(["x"])
    snap = c["x"]
    assert type(snap) is np.ndarray
    assert snap.shape == (3, 4) and np.array_equal(snap, real)


def test_copy_forwarded_tensors_of_a_strided_subclass_runs_none_of_its_numpy_overrides():
    """A non-contiguous source is copied by numpy; the subclass's __array_function__ and
    __array_ufunc__ (which numpy would dispatch to) must not decide what is copied."""

    class Hijacker(np.ndarray):
        def __array_function__(self, func, types, args, kwargs):
            raise Ignored(f"{func.__name__} dispatched to the subclass")

        def __array_ufunc__(self, *args, **kwargs):
            raise Ignored("ufunc dispatched to the subclass")

        def __array_finalize__(self, obj):
            if obj is not None and getattr(obj, "_armed", False):
                raise Ignored("__array_finalize__ ran")

    real = np.arange(24.0).reshape(4, 6)
    source = real[:, ::2].view(Hijacker)
    source._armed = True
    p = so.Workspace()
    p["x"] = source
    c = so.Workspace.from_bindings(p, {"x": "x"})
    c.copy_forwarded_tensors(["x"])
    assert type(c["x"]) is np.ndarray
    assert np.array_equal(c["x"], real[:, ::2])


def test_copy_forwarded_tensors_of_an_object_subclass_claiming_a_float_dtype_copies_objects():
    out = assert_clean_run(r"""
        import numpy as np, scopeops as so

        class Liar(np.ndarray):
            @property
            def dtype(self):
                return np.dtype(np.float64)

        items = [object() for _ in range(1000)]
        real = np.empty(1000, dtype=object)
        real[:] = items
        p = so.Workspace()
        p["x"] = real.view(Liar)
        c = so.Workspace.from_bindings(p, {"x": "x"})
        c.copy_forwarded_tensors(["x"])
        snap = c["x"]
        assert snap.dtype == object and all(a is b for a, b in zip(snap, items))
        del p, real, c
        assert all(a is b for a, b in zip(snap, items))
        print("ok")
    """)
    assert out.strip() == "ok"


def test_blob_dtype_shape_and_nbytes_of_a_lying_subclass_report_the_real_array():
    class Liar(np.ndarray):
        shape = (1,)
        dtype = np.dtype(np.int8)
        nbytes = 1

    blob = so.Blob()
    blob.set(np.zeros((3, 5), np.float32).view(Liar))
    assert blob.dtype == np.float32
    assert blob.shape == (3, 5)
    assert blob.nbytes == 60


def test_blob_repr_of_a_subclass_reads_none_of_its_python_attributes():
    blob = so.Blob()
    blob.set(np.zeros((2, 3), np.int16).view(Unreadable))
    assert repr(blob) == "<Blob: Tensor int16[2, 3]>"


def test_workspace_nbytes_of_a_lying_subclass_counts_the_real_bytes():
    class Liar(np.ndarray):
        nbytes = 10**12

    ws = so.Workspace()
    ws["x"] = np.zeros(1000, np.float64).view(Liar)
    assert ws.nbytes == 8000


def test_feeding_a_subclass_reads_none_of_its_python_attributes():
    ws = so.Workspace()
    value = np.ones(4, np.float32).view(Unreadable)
    ws["x"] = value
    assert ws["x"] is value
    assert ws.get_blob("x").meta.name == "Tensor"


def test_accumulate_on_strided_subclasses_whose_dtype_lies_adds_the_real_values():
    """The numpy path (strided operands) must see the real dtype: a subclass claiming int8
    over float32 must not round the scale to an int."""

    class Liar(np.ndarray):
        @property
        def dtype(self):
            return np.dtype(np.int8)

    dst_real = np.zeros((4, 6), np.float32)
    src_real = np.ones((4, 6), np.float32)
    dst = dst_real[:, ::2].view(Liar)
    src = src_real[:, ::2].view(Liar)
    so.accumulate(dst, src, 0.5)
    assert np.array_equal(dst_real[:, ::2], np.full((4, 3), 0.5, np.float32))
    assert np.array_equal(dst_real[:, 1::2], np.zeros((4, 3), np.float32))


def test_accumulate_on_strided_subclasses_runs_none_of_their_numpy_overrides():
    class Hijacker(np.ndarray):
        def __array_ufunc__(self, *args, **kwargs):
            raise Ignored("ufunc dispatched to the subclass")

        def __array_function__(self, *args, **kwargs):
            raise Ignored("array function dispatched to the subclass")

    for dtype in (np.float16, np.float32, np.float64):
        dst_real = np.zeros((4, 6), dtype)
        src_real = np.full((4, 6), 2, dtype)
        out = so.accumulate(dst_real[:, ::2].view(Hijacker), src_real[:, ::2].view(Hijacker), 1.5)
        assert type(out) is Hijacker
        assert np.array_equal(dst_real[:, ::2], np.full((4, 3), 3, dtype)), dtype


# -- 2. copy_forwarded_tensors gives up after a bounded number of attempts -------------------

PHOENIX = r"""
    import gc, numpy as np, scopeops as so

    p = so.Workspace()
    p["x"] = np.zeros(4)
    c = so.Workspace.from_bindings(p, {"x": "x"})
    state = {"left": 0, "fired": 0}

    class Phoenix:
        # Cyclic garbage whose finaliser replaces the copy's source and leaves another
        # Phoenix behind: with gc's threshold at 1, it runs during every copy attempt.
        def __init__(self):
            self.cycle = self

        def __del__(self):
            if state["left"] > 0:
                state["left"] -= 1
                state["fired"] += 1
                p["x"] = np.full(4, float(state["fired"]))
                Phoenix()
"""


def with_phoenix(script):
    """The PHOENIX set-up followed by ``script``."""
    return textwrap.dedent(PHOENIX) + textwrap.dedent(script)


def test_copy_forwarded_tensors_whose_source_changes_during_every_attempt_raises_scope_error():
    out = assert_clean_run(with_phoenix(r"""
        before = (c.forwarded_blobs(), c.local_blobs(), c.nbytes)
        gc.collect()
        state["left"] = 10**9
        gc.set_threshold(1)
        Phoenix()
        try:
            c.copy_forwarded_tensors(["x"])
        except so.ScopeError as exc:
            state["left"] = 0
            gc.set_threshold(700)
            print(type(exc).__name__, "|", exc)
        else:
            state["left"] = 0
            raise AssertionError("copied although the source changed during every attempt")
        assert state["fired"] >= 2, state
        assert (c.forwarded_blobs(), c.local_blobs(), c.nbytes) == before
        assert c.get_blob("x") is p.get_blob("x")
    """), timeout=60)
    assert out.startswith("ScopeError | "), out


def test_copy_forwarded_tensors_whose_source_changes_once_copies_the_new_value():
    out = assert_clean_run(with_phoenix(r"""
        gc.collect()
        state["left"] = 1
        gc.set_threshold(1)
        Phoenix()
        c.copy_forwarded_tensors(["x"])
        gc.set_threshold(700)
        assert state["fired"] == 1, state
        assert np.array_equal(c["x"], p["x"]) and c["x"] is not p["x"]
        print("ok")
    """), timeout=60)
    assert out.strip() == "ok"


def test_copy_forwarded_tensors_gives_up_and_keeps_spare_snapshot_buffers():
    """A refused copy changes nothing: the buffers of earlier snapshots, kept for reuse,
    stay in the workspace. (The spare is larger than the source, so each attempt makes a
    new blob over its buffer: allocations that let the Phoenix fire. A spare of the
    source's very shape is reused whole, allocating nothing.)"""
    out = assert_clean_run(with_phoenix(r"""
        stack = so.WorkspaceStack()
        p["x"] = np.zeros(8)
        ws = stack.push_forward_workspace(p, {"x": "x"})
        ws.copy_forwarded_tensors(["x"])
        stack.pop_gradient_workspace(p)
        ws = stack.push_forward_workspace(p, {"x": "x"})     # the snapshot becomes a spare
        p["x"] = np.zeros(4)
        spare = ws.nbytes
        assert spare == 64, spare
        gc.collect()
        state["left"] = 10**9
        gc.set_threshold(1)
        Phoenix()
        try:
            ws.copy_forwarded_tensors(["x"])
        except so.ScopeError:
            pass
        state["left"] = 0
        gc.set_threshold(700)
        assert ws.nbytes == spare and ws.local_blobs() == [], (ws.nbytes, ws.local_blobs())
        print("ok")
    """), timeout=60)
    assert out.strip() == "ok"


# -- 4. refused calls register nothing; classes are not kept alive ---------------------------


def test_tensor_refused_for_a_string_dtype_registers_no_type():
    # Compared as sets: a class the registry held weakly may be collected meanwhile.
    before = set(so.known_types())
    with pytest.raises(TypeError):
        so.Blob().tensor((1,), "S98765")
    assert not set(so.known_types()) - before


def test_many_tensor_calls_refused_for_string_dtypes_keep_memory_flat():
    for n in range(50):                     # warm-up: caches of the refusal path itself
        with pytest.raises(TypeError):
            so.Blob().tensor((1,), f"S{10_000 + n}")
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for n in range(3000):
            with pytest.raises(TypeError):
                so.Blob().tensor((1,), f"S{20_000 + n}")
        gc.collect()
        grown = sum(stat.size_diff for stat in
                    tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"3000 refused calls kept {grown} bytes"


def test_feeding_arrays_of_new_string_dtypes_registers_no_element_type():
    before = set(so.known_types())
    ws = so.Workspace()
    for n in range(200):
        ws["s"] = np.zeros(1, dtype=f"S{30_000 + n}")
    assert not set(so.known_types()) - before
    assert ws.get_blob("s").dtype == np.dtype("S30199")


def test_a_class_fed_once_is_not_kept_alive_by_the_type_registry():
    cls = type("Ephemeral", (), {})
    ws = so.Workspace()
    ws["v"] = cls()
    meta = ws.get_blob("v").meta
    assert meta.pytype is cls and meta in so.known_types()
    alive = weakref.ref(cls)
    del cls, ws
    gc.collect()
    assert alive() is None, "the registry keeps a class alive after its last value is gone"


def test_the_meta_of_a_collected_class_leaves_known_types_and_keeps_its_id():
    cls = type("Ephemeral", (), {"__module__": "hostile_tests"})
    meta = so.type_meta(cls)
    meta_id = meta.id
    del cls
    gc.collect()
    assert meta not in so.known_types()
    assert meta.id == meta_id and meta.name == "hostile_tests.Ephemeral"
    assert meta.pytype is None
    again = so.type_meta(type("Ephemeral", (), {"__module__": "hostile_tests"}))
    assert again.id > meta_id and again != meta, "an id was reused"


def test_many_classes_fed_and_dropped_do_not_grow_the_type_registry():
    count = len(so.known_types())
    ws = so.Workspace()
    for i in range(2000):
        ws["v"] = type(f"Passing{i}", (), {})()
    del ws
    gc.collect()
    assert len(so.known_types()) <= count + 1


def test_a_class_registered_by_the_user_stays_known_after_its_last_reference_goes():
    cls = type("Declared", (), {"__module__": "hostile_tests"})
    meta = so.register_known_type(cls)
    alive = weakref.ref(cls)
    del cls
    gc.collect()
    assert alive() is not None and meta.pytype is alive()
    assert meta in so.known_types()


def test_registering_a_class_seen_before_keeps_its_meta_and_keeps_the_class():
    cls = type("SeenThenDeclared", (), {"__module__": "hostile_tests"})
    seen = so.type_meta(cls())
    assert so.register_known_type(cls) is seen
    alive = weakref.ref(cls)
    del cls
    gc.collect()
    assert alive() is not None and seen in so.known_types()


# -- 5. impossible shapes: one documented class, before any allocation -----------------------


@pytest.mark.parametrize("shape, dtype", [
    ((2**64,), "f4"),
    ((np.uint64(2**63),), "f4"),
    ((2**40, 2**40), "f4"),
    ((0, 2**70), "f4"),
    ((2**31, 2**29), "u1"),
    (2**57, "u1"),
], ids=["2**64", "uint64(2**63)", "2**40x2**40", "0x2**70", "2**31x2**29-u1", "2**57-u1"])
def test_tensor_of_an_impossible_shape_raises_value_error(shape, dtype):
    with pytest.raises(ValueError, match="too large"):
        so.Blob().tensor(shape, dtype)


def test_tensor_of_an_impossible_shape_leaves_the_blob_unchanged():
    blob = so.Blob()
    first = blob.tensor((2, 3), "float32")
    with pytest.raises(ValueError):
        blob.tensor((2**31, 2**29), "u1")
    assert blob.get() is first and blob.nbytes == 24


# -- smaller points -------------------------------------------------------------------------


def test_type_meta_cannot_be_made_with_new():
    with pytest.raises(TypeError):
        so.TypeMeta.__new__(so.TypeMeta)


def test_workspace_stack_initialised_again_is_refused_and_keeps_its_mode():
    stack = so.WorkspaceStack()
    with pytest.raises(TypeError):
        stack.__init__(debug=True)
    assert stack.debug is False


def test_register_known_type_of_a_new_class_with_a_metaclass_registers_it():
    class Meta(type):
        pass

    cls = Meta("WithMetaclass", (), {"__module__": "hostile_tests"})
    meta = so.register_known_type(cls)
    assert meta.pytype is cls and so.type_meta(cls()) is meta
