"""The shipped .pxd files are the C-level API: prove it by compiling an outside
module that cimports them and drives the stack and a tensor buffer without the GIL."""


import numpy as np
import pytest
from support import build_cimport_client

import scopeops as so

CLIENT_PYX = (
    """
    # cython: language_level=3
    from cpython.ref cimport PyObject
    from scopeops cimport (
        Blob, TensorView, Workspace, WorkspaceStack, c_blob_tensor_view,
        c_pop_gradient_workspace, c_push_forward_workspace, c_stack_capacity,
        c_stack_clear, c_stack_depth, c_stack_empty, c_stack_top,
    )
    from scopeops._types cimport DT_FLOAT32


    def push_pop_pairs(WorkspaceStack stack, Workspace parent, Py_ssize_t n):
        cdef Py_ssize_t i, deepest = 0, depth
        with nogil:
            for i in range(n):
                depth = c_push_forward_workspace(stack, parent)
                if depth > deepest:
                    deepest = depth
                c_pop_gradient_workspace(stack, parent)
        return deepest


    def push_n(WorkspaceStack stack, Workspace parent, Py_ssize_t n):
        cdef Py_ssize_t i, depth = 0
        with nogil:
            for i in range(n):
                depth = c_push_forward_workspace(stack, parent)
        return depth


    def pop_all(WorkspaceStack stack, Workspace parent):
        cdef Py_ssize_t popped = 0
        with nogil:
            while c_pop_gradient_workspace(stack, parent) == 1:
                popped += 1
        return popped


    def state(WorkspaceStack stack):
        cdef bint empty
        cdef Py_ssize_t depth, capacity
        cdef PyObject* top
        with nogil:
            empty = c_stack_empty(stack)
            depth = c_stack_depth(stack)
            capacity = c_stack_capacity(stack)
            top = c_stack_top(stack)
        return empty, depth, capacity, (None if top == NULL else <object>top)


    def clear(WorkspaceStack stack):
        with nogil:
            c_stack_clear(stack)


    def scale_float32(Blob blob, float factor):
        cdef TensorView view
        cdef Py_ssize_t i
        cdef float* data
        with nogil:
            c_blob_tensor_view(blob, &view)
            if view.dtype != DT_FLOAT32 or not view.c_contiguous or not view.writeable:
                with gil:
                    raise TypeError("expected a contiguous writeable float32 tensor")
            data = <float*>view.data
            for i in range(view.size):
                data[i] *= factor
        return view.ndim, tuple(view.shape[i] for i in range(view.ndim))


    def view_of(Blob blob):
        cdef TensorView view
        with nogil:
            c_blob_tensor_view(blob, &view)
        return <Py_ssize_t>view.data, view.itemsize, view.size


    def dtype_code_of(Blob blob):
        cdef TensorView view
        with nogil:
            c_blob_tensor_view(blob, &view)
        return <int>view.dtype
    """
)

@pytest.fixture(scope="module")
def client(tmp_path_factory):
    return build_cimport_client(tmp_path_factory, "scopeops_capi_client", CLIENT_PYX)


def test_nogil_push_pop_pairs_reuse_one_workspace(client):
    stack, parent = so.WorkspaceStack(), so.Workspace()
    assert client.push_pop_pairs(stack, parent, 100_000) == 1
    assert stack.empty() and stack.capacity == 1


def test_nogil_push_allocates_through_the_gil_branch_when_no_workspace_is_dormant(client):
    stack, parent = so.WorkspaceStack(), so.Workspace()
    assert client.push_n(stack, parent, 5) == 5
    assert len(stack) == 5 and stack.capacity == 5
    assert all(ws.forwarded_blobs() == {} for ws in stack.workspaces())


def test_nogil_pop_reports_an_empty_stack(client):
    stack, parent = so.WorkspaceStack(), so.Workspace()
    client.push_n(stack, parent, 3)
    assert client.pop_all(stack, parent) == 3
    assert stack.empty()


def test_nogil_queries_see_the_same_stack_as_python(client):
    stack, parent = so.WorkspaceStack(), so.Workspace()
    assert client.state(stack) == (True, 0, 0, None)
    first = stack.push_forward_workspace(parent)
    stack.push_forward_workspace(parent)
    stack.pop_gradient_workspace(parent)
    assert client.state(stack) == (False, 1, 2, first)


def test_nogil_clear_keeps_workspaces_for_reuse(client):
    stack, parent = so.WorkspaceStack(), so.Workspace()
    first = stack.push_forward_workspace(parent)
    stack.push_forward_workspace(parent)
    client.clear(stack)
    assert stack.empty() and stack.capacity == 2
    assert stack.push_forward_workspace(parent) is first


def test_nogil_push_rebinds_a_dormant_workspace_bound_to_other_names(client):
    stack, parent = so.WorkspaceStack(), so.Workspace()
    parent.feed_blob("x", 1)
    bound = stack.push_forward_workspace(parent, {"a": "x"})
    stack.pop_gradient_workspace(parent)
    client.push_n(stack, parent, 1)
    assert stack.top is bound and bound.forwarded_blobs() == {}


def test_nogil_push_with_a_none_parent_raises_binding_error(client):
    stack = so.WorkspaceStack()
    with pytest.raises(so.BindingError, match="Parent workspace must be specified"):
        client.push_n(stack, None, 1)
    assert stack.capacity == 0


def test_debug_stack_checks_run_through_the_c_api(client):
    stack = so.WorkspaceStack(debug=True)
    client.push_n(stack, so.Workspace(), 1)
    with pytest.raises(so.StackError, match="Parent workspace mismatch"):
        client.push_n(stack, so.Workspace(), 1)
    assert len(stack) == 1


def test_debug_stack_pops_through_the_c_api_slow_path(client):
    stack, parent = so.WorkspaceStack(debug=True), so.Workspace()
    client.push_n(stack, parent, 3)
    assert client.pop_all(stack, parent) == 3
    assert stack.empty() and stack.capacity == 3
    client.push_n(stack, parent, 1)   # the debug push reuses the dormant workspace too
    assert stack.capacity == 3 and len(stack) == 1


def test_tensor_view_writes_into_the_blob_buffer_without_the_gil(client):
    blob = so.Blob()
    array = blob.tensor((2, 3), np.float32)
    array[...] = 2.0
    assert client.scale_float32(blob, 1.5) == (2, (2, 3))
    np.testing.assert_array_equal(blob.get(), np.full((2, 3), 3.0, np.float32))


def test_tensor_view_points_at_the_array_data(client):
    blob = so.Blob()
    blob.set(np.arange(10, dtype=np.float64))
    address, itemsize, size = client.view_of(blob)
    assert address == blob.get().__array_interface__["data"][0]
    assert (itemsize, size) == (8, 10)


@pytest.mark.parametrize("real, claimed", [(np.float32, np.float64), (np.int8, np.float64),
                                            (np.float64, np.int8)])
def test_tensor_view_of_an_ndarray_subclass_whose_dtype_lies_gives_the_real_dtype(
        client, real, claimed):
    """issue 14: a C caller sizes its loops by view.dtype; it must be the array's real
    element type, not what a subclass's Python-level dtype property claims."""

    class Liar(np.ndarray):
        dtype = np.dtype(claimed)

    honest, lying = so.Blob(), so.Blob()
    honest.set(np.zeros(4, real))
    lying.set(np.zeros(4, real).view(Liar))
    assert client.dtype_code_of(lying) == client.dtype_code_of(honest)


def test_tensor_view_of_a_non_tensor_blob_raises_blob_type_error(client):
    blob = so.Blob()
    blob.set("text")
    with pytest.raises(so.BlobTypeError, match="while caller expects Tensor"):
        client.view_of(blob)


def test_tensor_view_of_an_empty_blob_raises_blob_type_error(client):
    with pytest.raises(so.BlobTypeError, match="empty"):
        client.view_of(so.Blob())
