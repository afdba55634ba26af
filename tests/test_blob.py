"""Blob: a typed slot, and tensor buffer reuse."""

import gc
import re
import sys
import tracemalloc
import weakref

import numpy as np
import pytest

import scopeops as so

TYPE_PHRASE = "wrong type for the Blob instance. Blob contains {have} while caller expects {want}"


class Payload:
    """A user value; weak-referenceable so tests can see when a blob drops it."""


def data_pointer(array):
    return array.__array_interface__["data"][0]


def type_phrase(have, want):
    return re.escape(
        TYPE_PHRASE.format(have=so.type_meta(have).name, want=so.type_meta(want).name)
    )


# --- empty blob -----------------------------------------------------------------------------


def test_new_blob_is_empty():
    assert so.Blob().is_empty()


def test_new_blob_has_no_meta():
    assert so.Blob().meta is None


def test_new_blob_has_no_dtype_or_shape():
    blob = so.Blob()
    assert blob.dtype is None
    assert blob.shape is None


def test_new_blob_holds_zero_bytes():
    assert so.Blob().nbytes == 0


def test_empty_blob_is_of_no_type():
    blob = so.Blob()
    assert not blob.is_type(int)
    assert not blob.is_type(np.ndarray)


def test_get_on_empty_blob_raises_blob_type_error_naming_it_empty():
    with pytest.raises(so.BlobTypeError, match="empty"):
        so.Blob().get()


def test_get_with_type_on_empty_blob_raises_blob_type_error_naming_it_empty():
    with pytest.raises(so.BlobTypeError, match="empty"):
        so.Blob().get(np.ndarray)


# --- set / get / reset ----------------------------------------------------------------------


def test_set_makes_blob_non_empty():
    blob = so.Blob()
    blob.set(3)
    assert not blob.is_empty()


def test_set_returns_none():
    assert so.Blob().set(3) is None


def test_get_returns_the_stored_object():
    payload = Payload()
    blob = so.Blob()
    blob.set(payload)
    assert blob.get() is payload


def test_set_records_the_meta_of_the_value_type():
    blob = so.Blob()
    blob.set(Payload())
    assert blob.meta == so.type_meta(Payload)


def test_set_ndarray_records_tensor_meta():
    blob = so.Blob()
    blob.set(np.zeros(3, dtype=np.float32))
    assert blob.meta == so.type_meta(np.ndarray)
    assert blob.meta.name == "Tensor"


def test_set_replaces_previous_value_and_meta():
    blob = so.Blob()
    blob.set(3)
    blob.set("text")
    assert blob.get() == "text"
    assert blob.meta == so.type_meta(str)


def test_reset_empties_the_blob():
    blob = so.Blob()
    blob.set(3)
    assert blob.reset() is None
    assert blob.is_empty()
    assert blob.meta is None


def test_get_after_reset_raises_blob_type_error():
    blob = so.Blob()
    blob.set(3)
    blob.reset()
    with pytest.raises(so.BlobTypeError, match="empty"):
        blob.get()


def test_reset_drops_the_reference_to_the_value():
    payload = Payload()
    alive = weakref.ref(payload)
    blob = so.Blob()
    blob.set(payload)
    del payload
    gc.collect()
    assert alive() is not None
    blob.reset()
    gc.collect()
    assert alive() is None


def test_set_drops_the_reference_to_the_previous_value():
    payload = Payload()
    alive = weakref.ref(payload)
    blob = so.Blob()
    blob.set(payload)
    del payload
    blob.set(4)
    gc.collect()
    assert alive() is None


def test_reset_tensor_blob_clears_dtype_and_shape():
    blob = so.Blob()
    blob.tensor((2, 3), np.float32)
    blob.reset()
    assert blob.dtype is None
    assert blob.shape is None


# --- is_type --------------------------------------------------------------------------------


def test_is_type_true_for_the_stored_class():
    blob = so.Blob()
    blob.set(Payload())
    assert blob.is_type(Payload)


def test_is_type_false_for_another_class():
    blob = so.Blob()
    blob.set(Payload())
    assert not blob.is_type(str)


def test_is_type_accepts_a_type_meta():
    blob = so.Blob()
    blob.set(Payload())
    assert blob.is_type(so.type_meta(Payload))
    assert not blob.is_type(so.type_meta(str))


def test_is_type_of_ndarray_blob_is_tensor():
    blob = so.Blob()
    blob.set(np.zeros(2))
    assert blob.is_type(np.ndarray)
    assert blob.is_type(so.type_meta(np.ndarray))


@pytest.mark.parametrize("spelling", [np.float32, np.dtype("float32"), "float32"])
def test_is_type_accepts_every_dtype_spelling_for_a_numpy_scalar(spelling):
    blob = so.Blob()
    blob.set(np.float32(2.5))
    assert blob.is_type(spelling)


@pytest.mark.parametrize("spelling", [np.float64, np.dtype("float64"), "float64"])
def test_is_type_false_for_another_element_type(spelling):
    blob = so.Blob()
    blob.set(np.float32(2.5))
    assert not blob.is_type(spelling)


# --- get with a type ------------------------------------------------------------------------


def test_get_with_matching_class_returns_value():
    payload = Payload()
    blob = so.Blob()
    blob.set(payload)
    assert blob.get(Payload) is payload


def test_get_with_matching_type_meta_returns_value():
    blob = so.Blob()
    blob.set("text")
    assert blob.get(so.type_meta(str)) == "text"


def test_get_with_ndarray_on_tensor_blob_returns_the_array():
    array = np.arange(4.0)
    blob = so.Blob()
    blob.set(array)
    assert blob.get(np.ndarray) is array


def test_get_with_dtype_string_on_numpy_scalar_blob_returns_value():
    blob = so.Blob()
    blob.set(np.int16(7))
    assert blob.get("int16") == 7


def test_get_with_wrong_class_raises_blob_type_error_with_caffe2_phrase():
    blob = so.Blob()
    blob.set(3)
    with pytest.raises(so.BlobTypeError, match=type_phrase(int, str)):
        blob.get(str)


def test_get_with_wrong_type_on_tensor_blob_names_tensor_as_contained():
    blob = so.Blob()
    blob.set(np.zeros(2))
    with pytest.raises(so.BlobTypeError, match=type_phrase(np.ndarray, so.WorkspaceStack)):
        blob.get(so.WorkspaceStack)


def test_get_with_wrong_type_is_also_a_type_error():
    blob = so.Blob()
    blob.set(3)
    with pytest.raises(TypeError):
        blob.get(bytes)


def test_get_with_wrong_type_leaves_the_blob_unchanged():
    payload = Payload()
    blob = so.Blob()
    blob.set(payload)
    with pytest.raises(so.BlobTypeError):
        blob.get(str)
    assert blob.get() is payload
    assert blob.meta == so.type_meta(Payload)


# --- dtype / shape --------------------------------------------------------------------------


def test_dtype_and_shape_of_a_stored_ndarray():
    blob = so.Blob()
    blob.set(np.zeros((2, 5), dtype=np.int32))
    assert blob.dtype == np.dtype(np.int32)
    assert isinstance(blob.dtype, np.dtype)
    assert blob.shape == (2, 5)


def test_dtype_and_shape_are_none_for_a_non_tensor_value():
    blob = so.Blob()
    blob.set("text")
    assert blob.dtype is None
    assert blob.shape is None


def test_dtype_and_shape_are_none_for_a_numpy_scalar():
    blob = so.Blob()
    blob.set(np.float32(1.0))
    assert blob.dtype is None
    assert blob.shape is None


# --- tensor(shape, dtype) -------------------------------------------------------------------


def test_tensor_on_empty_blob_returns_array_of_that_shape_and_dtype():
    blob = so.Blob()
    array = blob.tensor((2, 3), np.float32)
    assert isinstance(array, np.ndarray)
    assert array.shape == (2, 3)
    assert array.dtype == np.dtype(np.float32)


def test_tensor_makes_the_blob_hold_that_array():
    blob = so.Blob()
    array = blob.tensor((2, 3), np.float64)
    assert blob.get() is array
    assert blob.meta == so.type_meta(np.ndarray)
    assert blob.shape == (2, 3)
    assert blob.dtype == np.dtype(np.float64)


@pytest.mark.parametrize("spelling", [np.int32, np.dtype("int32"), "int32"])
def test_tensor_accepts_every_dtype_spelling(spelling):
    assert so.Blob().tensor((4,), spelling).dtype == np.dtype(np.int32)


def test_tensor_writes_are_visible_through_get():
    blob = so.Blob()
    array = blob.tensor((3,), np.float64)
    array[:] = [1.0, 2.0, 3.0]
    np.testing.assert_array_equal(blob.get(), [1.0, 2.0, 3.0])


def test_tensor_with_unchanged_shape_and_dtype_returns_the_same_array():
    blob = so.Blob()
    first = blob.tensor((2, 3), np.float32)
    assert blob.tensor((2, 3), np.float32) is first


def test_tensor_with_unchanged_shape_and_other_dtype_spelling_returns_the_same_array():
    blob = so.Blob()
    first = blob.tensor((2, 3), np.float32)
    assert blob.tensor((2, 3), np.dtype("float32")) is first
    assert blob.tensor((2, 3), "float32") is first


def test_tensor_with_unchanged_shape_keeps_contents():
    blob = so.Blob()
    first = blob.tensor((4,), np.int64)
    first[:] = [5, 6, 7, 8]
    np.testing.assert_array_equal(blob.tensor((4,), np.int64), [5, 6, 7, 8])


def test_tensor_shrink_reuses_the_buffer():
    blob = so.Blob()
    big = blob.tensor((4, 4), np.float32)
    small = blob.tensor((2, 2), np.float32)
    assert small.shape == (2, 2)
    assert np.shares_memory(small, big)
    assert data_pointer(small) == data_pointer(big)


def test_tensor_same_size_reshape_reuses_the_buffer():
    blob = so.Blob()
    square = blob.tensor((4, 4), np.float32)
    flat = blob.tensor((2, 8), np.float32)
    assert flat.shape == (2, 8)
    assert data_pointer(flat) == data_pointer(square)


def test_tensor_dtype_change_within_capacity_reuses_the_buffer():
    blob = so.Blob()
    wide = blob.tensor((4,), np.float64)
    narrow = blob.tensor((4,), np.float32)
    assert narrow.dtype == np.dtype(np.float32)
    assert data_pointer(narrow) == data_pointer(wide)


def test_tensor_shrink_then_regrow_within_capacity_reuses_the_buffer():
    blob = so.Blob()
    big = blob.tensor((10,), np.float64)
    blob.tensor((2,), np.float64)
    regrown = blob.tensor((10,), np.float64)
    assert data_pointer(regrown) == data_pointer(big)


def test_tensor_growth_allocates_a_new_buffer():
    blob = so.Blob()
    small = blob.tensor((2, 2), np.float32)
    big = blob.tensor((8, 8), np.float32)
    assert big.shape == (8, 8)
    assert not np.shares_memory(big, small)


def test_tensor_growth_updates_shape_and_nbytes():
    blob = so.Blob()
    blob.tensor((2,), np.float64)
    blob.tensor((100,), np.float64)
    assert blob.shape == (100,)
    assert blob.nbytes >= 800


def test_tensor_replaces_a_non_tensor_value():
    blob = so.Blob()
    blob.set("text")
    array = blob.tensor((3,), np.float32)
    assert blob.meta == so.type_meta(np.ndarray)
    assert blob.get() is array


def test_tensor_of_a_huge_size_beside_an_owned_buffer_reports_nothing_unraisable(monkeypatch):
    # The fast path compares the asked shape with the array's in C: a size too large for
    # a C integer must read as "not the same shape", not print "Exception ignored".
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    blob = so.Blob()
    blob.tensor((2, 3), np.float32)
    with pytest.raises(ValueError, match="too large"):
        blob.tensor((2, 2**70), np.float32)
    assert unraisable == []


# --- tensor() over a value stored with set() ---------------------------------------------------


def test_tensor_of_the_stored_shape_and_dtype_keeps_the_readme_hidden_value():
    # The README's example: hidden = w @ ones, then tensor() of its own shape and dtype.
    root = so.Workspace()
    root["weights"] = np.ones((4, 4), np.float32)
    stack = so.WorkspaceStack()
    step = stack.push_forward_workspace(root, {"w": "weights"})
    step["hidden"] = step["w"] @ np.ones(4, np.float32)
    out = step.get_blob("hidden").tensor((4,), np.float32)
    assert out.tolist() == [4.0, 4.0, 4.0, 4.0]
    assert step["hidden"].tolist() == [4.0, 4.0, 4.0, 4.0]


def test_tensor_keeping_a_set_value_never_writes_the_callers_array():
    blob = so.Blob()
    mine = np.arange(6, dtype=np.int32).reshape(2, 3)
    blob.set(mine)
    out = blob.tensor((2, 3), np.int32)
    out[...] = -1
    assert not np.shares_memory(out, mine)
    assert mine.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_tensor_keeping_a_set_value_makes_the_blob_own_its_buffer():
    blob = so.Blob()
    blob.set(np.full(5, 2.5))
    out = blob.tensor((5,), np.float64)
    assert blob.get() is out
    assert blob.tensor((5,), np.float64) is out          # the fast path from now on
    assert blob.nbytes >= 40


def test_tensor_after_keeping_a_set_value_allocates_nothing():
    blob = so.Blob()
    blob.set(np.ones((64, 64), np.float32))
    first = blob.tensor((64, 64), np.float32)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(1000):
            again = blob.tensor((64, 64), np.float32)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert data_pointer(again) == data_pointer(first)
    assert grown < 1024


def test_tensor_keeps_a_set_value_given_in_a_list_shape_and_string_dtype():
    blob = so.Blob()
    blob.set(np.array([[1, 2], [3, 4]], np.int64))
    assert blob.tensor([2, 2], "int64").tolist() == [[1, 2], [3, 4]]


def test_tensor_keeps_a_non_contiguous_set_value_in_c_order():
    blob = so.Blob()
    base = np.arange(12.0).reshape(3, 4)
    blob.set(base.T[:, ::2])                              # shape (4, 2), strided
    out = blob.tensor((4, 2), np.float64)
    assert out.flags.c_contiguous
    assert out.tolist() == base.T[:, ::2].tolist()


def test_tensor_keeps_a_read_only_set_value_and_returns_a_writeable_array():
    blob = so.Blob()
    blob.set(np.broadcast_to(np.float32(3.0), (2, 2)))   # read-only, zero strides
    out = blob.tensor((2, 2), np.float32)
    assert out.flags.writeable and out.tolist() == [[3.0, 3.0], [3.0, 3.0]]


def test_tensor_keeps_a_0_d_set_value():
    blob = so.Blob()
    blob.set(np.array(7, np.int16))
    assert blob.tensor((), np.int16)[()] == 7


class _LyingArray(np.ndarray):
    """Claims another shape, dtype and size, and refuses every numpy call made on it."""

    shape = property(lambda self: (1000,))
    dtype = property(lambda self: np.dtype(np.float64))
    nbytes = property(lambda self: 8000)
    strides = property(lambda self: (8,))

    def __array_finalize__(self, obj):
        if obj is not None and getattr(obj, "_armed", False):
            raise AssertionError("a view of the subclass was made")

    def __array_function__(self, *args, **kwargs):
        raise AssertionError("a numpy function dispatched to the subclass")

    def __array_ufunc__(self, *args, **kwargs):
        raise AssertionError("a ufunc dispatched to the subclass")

    def __getitem__(self, key):
        raise AssertionError("the subclass was indexed")


def test_tensor_keeps_an_ndarray_subclass_value_by_its_real_shape_and_dtype():
    lying = np.array([1.0, 2.0, 3.0], np.float32).view(_LyingArray)
    lying._armed = True
    blob = so.Blob()
    blob.set(lying)
    out = blob.tensor((3,), np.float32)
    assert type(out) is np.ndarray
    assert out.tolist() == [1.0, 2.0, 3.0]
    assert blob.nbytes == 12


def test_tensor_does_not_keep_a_subclass_value_whose_claimed_shape_matches():
    lying = np.zeros(3, np.float32).view(_LyingArray)    # claims (1000,) float64
    blob = so.Blob()
    blob.set(lying)
    out = blob.tensor((1000,), np.float64)
    assert out.shape == (1000,) and blob.nbytes == 8000


def test_tensor_of_another_dtype_than_a_set_value_gives_a_buffer_of_that_size():
    blob = so.Blob()
    mine = np.arange(4, dtype=np.float64)
    blob.set(mine)
    out = blob.tensor((4,), np.float32)
    assert out.dtype == np.float32 and out.shape == (4,)
    assert blob.nbytes == 16
    assert mine.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_tensor_of_another_shape_than_a_set_value_gives_a_buffer_of_that_size():
    blob = so.Blob()
    mine = np.ones((2, 3), np.float32)
    blob.set(mine)
    out = blob.tensor((3, 3), np.float32)
    assert out.shape == (3, 3) and blob.nbytes == 36
    assert not np.shares_memory(out, mine)


def test_tensor_of_a_byte_swapped_set_value_counts_as_another_dtype():
    blob = so.Blob()
    blob.set(np.arange(3, dtype=">f4"))
    out = blob.tensor((3,), np.float32)
    assert out.dtype == np.dtype("=f4") and blob.nbytes == 12


# --- nbytes ---------------------------------------------------------------------------------


def test_nbytes_of_a_stored_ndarray_is_its_size_in_bytes():
    blob = so.Blob()
    blob.set(np.zeros(10, dtype=np.float64))
    assert blob.nbytes == 80


def test_nbytes_of_a_tensor_is_at_least_its_size_in_bytes():
    blob = so.Blob()
    blob.tensor((4, 4), np.float32)
    assert blob.nbytes >= 64


def test_nbytes_after_shrink_is_still_the_buffer_capacity():
    blob = so.Blob()
    blob.tensor((4, 4), np.float32)
    capacity = blob.nbytes
    blob.tensor((1,), np.float32)
    assert blob.nbytes == capacity


def test_nbytes_after_reset_is_zero():
    blob = so.Blob()
    blob.tensor((4, 4), np.float32)
    blob.reset()
    assert blob.nbytes == 0


def test_tensor_on_a_blob_given_a_buffer_but_no_value_yet_allocates_a_proper_view():
    # A fresh blob handed a recycled buffer (as copy_forwarded_tensors does) holds no
    # array yet: tensor() must not take its fast path on the missing value.
    ws = so.Workspace()
    ws.feed_blob("x", np.arange(6.0))
    stack = so.WorkspaceStack()
    for _ in range(3):
        child = stack.push_forward_workspace(ws, {"x": "x"})
        child.copy_forwarded_tensors(["x"])
        np.testing.assert_array_equal(child.fetch_blob("x"), np.arange(6.0))
        stack.pop_gradient_workspace(ws)
