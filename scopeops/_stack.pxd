from cpython.ref cimport PyObject
from scopeops._workspace cimport Workspace, c_reusable_unbound


cdef class WorkspaceStack:
    # Owned references to every allocated workspace, index 0 first; slots above
    # _top are dormant, kept for reuse. A C array (not a list) so that the nogil
    # paths can read it and no Python code can reach it to corrupt it.
    cdef PyObject** _slots
    cdef Py_ssize_t _count
    cdef Py_ssize_t _alloc
    cdef Py_ssize_t _top
    cdef public bint debug
    cdef Workspace _debug_parent
    cdef dict _debug_bindings
    cdef dict _debug_grad_bindings
    cdef bint _initialised
    cdef object __weakref__

    cdef Workspace c_push(self, Workspace parent, dict bindings)
    cdef Workspace c_push_bound(self, Workspace parent, dict bindings)
    cdef object c_pop(self, Workspace parent, dict grad_bindings)
    cdef int c_check_top(self) except -1
    cdef int _debug_check(self, Workspace parent, dict bindings, dict remembered) except -1
    cdef int _append(self, Workspace ws) except -1


# C-level API. Every function takes borrowed references: the caller keeps the
# stack and the parent alive, and serialises its own access to one stack.
cdef bint c_stack_empty(WorkspaceStack stack) noexcept nogil
cdef Py_ssize_t c_stack_depth(WorkspaceStack stack) noexcept nogil
cdef Py_ssize_t c_stack_capacity(WorkspaceStack stack) noexcept nogil
# The top workspace (borrowed), or NULL when the stack is empty.
cdef PyObject* c_stack_top(WorkspaceStack stack) noexcept nogil
cdef void c_stack_clear(WorkspaceStack stack) noexcept nogil
# Push a forward workspace with no bindings. Without the GIL when the dormant
# workspace above the top can be reused as is; takes the GIL only to allocate,
# rebind, run debug checks or raise. Returns the new depth, -1 on error.
# Inline, as the pop: the reuse path compiles into the caller's loop (a few loads, a
# compare and a store, no call); everything else is one call to the _slow function.
cdef inline Py_ssize_t c_push_forward_workspace(WorkspaceStack stack,
                                                Workspace parent) except -1 nogil:
    cdef Py_ssize_t nxt = stack._top + 1
    if (not stack.debug and 0 <= nxt < stack._count
            and c_reusable_unbound(stack._slots[nxt], <PyObject*>parent)):
        stack._top = nxt
        return nxt + 1
    return c_push_forward_workspace_slow(stack, parent)
# Pop with no gradient bindings: 1 if a workspace was popped, 0 if the stack was
# empty, -1 on error (debug checks take the GIL).
cdef inline int c_pop_gradient_workspace(WorkspaceStack stack, Workspace parent) except -1 nogil:
    if not stack.debug and stack._top < stack._count:
        if stack._top < 0:
            return 0
        stack._top -= 1
        return 1
    return c_pop_gradient_workspace_slow(stack, parent)
# The paths of the two above that take the GIL (not for direct use).
cdef Py_ssize_t c_push_forward_workspace_slow(WorkspaceStack stack,
                                              Workspace parent) except -1 nogil
cdef int c_pop_gradient_workspace_slow(WorkspaceStack stack, Workspace parent) except -1 nogil
