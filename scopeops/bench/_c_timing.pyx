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


cdef extern from *:
    """
    #if defined(_MSC_VER)
    #include <intrin.h>
    #define SCOPEOPS_COMPILER_BARRIER() _ReadWriteBarrier()
    #else
    #define SCOPEOPS_COMPILER_BARRIER() __asm__ __volatile__("" ::: "memory")
    #endif
    """
    # Stops the compiler from keeping the stack's fields in registers across it, or
    # from folding a push and the pop after it into nothing; emits no instruction.
    void _compiler_barrier "SCOPEOPS_COMPILER_BARRIER"() noexcept nogil


cdef int _warm(WorkspaceStack stack, Workspace parent) except -1:
    """Allocate the dormant workspace, so that the timed loops run the reuse path."""
    stack.push_forward_workspace(parent)
    stack.pop_gradient_workspace(parent)
    return 0


def nogil_push_pop_ns(WorkspaceStack stack not None, Workspace parent not None, Py_ssize_t n):
    """ns per push+pop pair through the C-level API inside ``with nogil``, called as a
    cimporting module calls it (target C3): the reuse paths are inline, and a compiler
    barrier after each call makes every pair read and write the stack in memory, as a
    loop with work between them does."""
    cdef Py_ssize_t _pair
    cdef double start, stop
    _warm(stack, parent)
    with nogil:
        start = _now_ns()
        for _pair in range(n):
            c_push_forward_workspace(stack, parent)
            _compiler_barrier()
            c_pop_gradient_workspace(stack, parent)
            _compiler_barrier()
        stop = _now_ns()
    return (stop - start) / n


def nogil_push_pop_call_ns(WorkspaceStack stack not None, Workspace parent not None,
                           Py_ssize_t n):
    """ns per push+pop pair made through function pointers to the same API: each an
    out-of-line call, as the empty pair's (reported beside C3)."""
    _warm(stack, parent)
    cdef push_fn push = c_push_forward_workspace
    cdef pop_fn pop = c_pop_gradient_workspace
    return _time_pairs(push, pop, stack, parent, n)


def nogil_empty_pair_ns(WorkspaceStack stack not None, Workspace parent not None, Py_ssize_t n):
    """ns per pair of empty C calls through function pointers (the floor of C3)."""
    cdef push_fn push = _empty_push
    cdef pop_fn pop = _empty_pop
    return _time_pairs(push, pop, stack, parent, n)
