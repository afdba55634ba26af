"""C-level timing loops and reference methods for the ratio table: the references of
performance.md (empty cdef methods, an empty C call pair) and
the nogil push/pop loop, timed inside C so that Python's loop overhead does not
blur nanosecond figures.
"""

cimport cython
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from scopeops._workspace cimport Workspace
from scopeops._stack cimport (
    WorkspaceStack, c_push_forward_workspace, c_pop_gradient_workspace,
)


@cython.final
cdef class EmptyMethods:
    """The reference of targets C1, C2 and C4: empty methods on a cdef class."""

    def push(self, parent, bindings=None):
        pass

    def pop(self, parent, bindings=None):
        pass

    def clear(self):
        pass


cdef inline double _now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec * 1e9 + ts.tv_nsec


ctypedef Py_ssize_t (*push_fn)(WorkspaceStack, Workspace) except -1 nogil
ctypedef int (*pop_fn)(WorkspaceStack, Workspace) except -1 nogil


cdef Py_ssize_t _empty_push(WorkspaceStack stack, Workspace parent) except -1 nogil:
    return 0


cdef int _empty_pop(WorkspaceStack stack, Workspace parent) except -1 nogil:
    return 0


cdef double _time_pairs(push_fn push, pop_fn pop, WorkspaceStack stack, Workspace parent,
                        Py_ssize_t n) except -1.0:
    cdef Py_ssize_t _pair
    cdef double start, stop
    with nogil:
        start = _now_ns()
        for _pair in range(n):
            push(stack, parent)
            pop(stack, parent)
        stop = _now_ns()
    return (stop - start) / n


def nogil_push_pop_ns(WorkspaceStack stack not None, Workspace parent not None, Py_ssize_t n):
    """ns per push+pop pair through the C-level API inside ``with nogil`` (target C3)."""
    # Warm the dormant workspace so the loop runs the reuse path.
    stack.push_forward_workspace(parent)
    stack.pop_gradient_workspace(parent)
    cdef push_fn push = c_push_forward_workspace
    cdef pop_fn pop = c_pop_gradient_workspace
    return _time_pairs(push, pop, stack, parent, n)


def nogil_empty_pair_ns(WorkspaceStack stack not None, Workspace parent not None, Py_ssize_t n):
    """ns per pair of empty C calls through function pointers (the floor of C3)."""
    cdef push_fn push = _empty_push
    cdef pop_fn pop = _empty_pop
    return _time_pairs(push, pop, stack, parent, n)
