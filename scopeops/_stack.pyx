"""WorkspaceStack: Caffe2's ``detail::WorkspaceStack``.

Forward steps push a child workspace, gradient steps pop it, and popped
workspaces stay allocated (dormant) so that the next push reuses them together
with their blobs and buffers. ``clear()`` is O(1); ``release()`` frees the
dormant workspaces.
"""

cimport cython
from cpython.mem cimport PyMem_Realloc, PyMem_Free
from cpython.object cimport PyTypeObject, traverseproc, visitproc
from cpython.ref cimport PyObject, Py_INCREF, Py_DECREF

from scopeops._workspace cimport (
    Workspace, c_check_parent, c_normalize_bindings, c_bound_blobs_visible, c_same_bindings,
)
from scopeops._types import register_known_type
from scopeops._workspace import deep_nbytes

cdef enum:
    # Version of the tuple WorkspaceStack.__reduce__ makes; another version is refused.
    STACK_STATE_VERSION = 1
from scopeops.errors import BindingError, PickleStateError, StackError


@cython.final
@cython.no_gc_clear
@cython.trashcan(True)
cdef class WorkspaceStack:
    """A stack of child workspaces for forward and gradient steps.

    Parameters
    ----------
    debug : bool
        Caffe2's ``caffe2_workspace_stack_debug`` checks for this stack: every
        push and pop must name the same parent (``Parent workspace mismatch``,
        :class:`StackError`) and the same bindings as the first one that had
        any (``Blob bindings mismatch``, :class:`BindingError`).
    """

    def __cinit__(self, *args, **kwargs):
        self._top = -1

    def __init__(self, debug=False):
        if self._initialised:
            raise TypeError("a WorkspaceStack is initialised once")
        self.debug = bool(debug)
        self._initialised = True

    def __dealloc__(self):
        cdef Py_ssize_t i
        cdef PyObject** slots = self._slots
        cdef Py_ssize_t count = self._count
        self._slots = NULL
        self._count = 0
        self._top = -1
        if slots != NULL:
            for i in range(count):
                Py_DECREF(<object>slots[i])
            PyMem_Free(slots)

    def __repr__(self):
        return (f"<WorkspaceStack depth={self._top + 1} capacity={self._count}"
                f"{' debug' if self.debug else ''} at {id(self):#x}>")

    # -- invariants ----------------------------------------------------------

    cdef int c_check_top(self) except -1:
        if not (-1 <= self._top < self._count <= self._alloc):
            raise StackError(f"Corrupted workspaces stack: top {self._top}, "
                             f"{self._count} workspaces, {self._alloc} slots")
        return 0

    def check_stack(self):
        """Raise :class:`StackError` (``Corrupted workspaces stack``) unless the invariants hold."""
        cdef Py_ssize_t i
        self.c_check_top()
        if self._count and self._slots == NULL:
            raise StackError("Corrupted workspaces stack: no storage")
        for i in range(self._count):
            if self._slots[i] == NULL or not isinstance(<object>self._slots[i], Workspace):
                raise StackError(f"Corrupted workspaces stack: slot {i} holds no workspace")

    @staticmethod
    def check_bindings_match(bindings, test_bindings):
        """Raise :class:`BindingError` (``Blob bindings mismatch``) unless both are equal."""
        _check_bindings_match(c_normalize_bindings(bindings), c_normalize_bindings(test_bindings))

    # -- the stack -----------------------------------------------------------

    cdef int _debug_check(self, Workspace parent, dict bindings, dict remembered) except -1:
        if self._debug_parent is not None and self._debug_parent is not parent:
            raise StackError("Parent workspace mismatch: this stack was used with another "
                             "parent workspace (debug checks are on)")
        if remembered:
            _check_bindings_match(remembered, bindings)
        return 0

    cdef int _append(self, Workspace ws) except -1:
        cdef Py_ssize_t new_alloc
        cdef PyObject** grown
        if self._count == self._alloc:
            new_alloc = self._alloc * 2 if self._alloc else 4
            grown = <PyObject**>PyMem_Realloc(self._slots, new_alloc * sizeof(PyObject*))
            if grown == NULL:
                raise MemoryError()
            self._slots = grown
            self._alloc = new_alloc
        Py_INCREF(ws)
        self._slots[self._count] = <PyObject*>ws
        self._count += 1
        return 0

    cdef Workspace c_push(self, Workspace parent, dict bindings):
        cdef Workspace ws
        cdef Py_ssize_t nxt
        self.c_check_top()
        if self.debug:
            self._debug_check(parent, bindings, self._debug_bindings)
        nxt = self._top + 1
        graveyard = []   # what the rebind drops dies after the push is complete
        if nxt < self._count:
            ws = <Workspace>self._slots[nxt]
            ws.c_rebind(parent, bindings, graveyard)
        else:
            ws = parent.c_new_child(bindings)
            self._append(ws)
        self._top = nxt
        if self.debug:
            self._debug_parent = parent
            if not self._debug_bindings:
                self._debug_bindings = bindings
        del graveyard
        return ws

    cdef Workspace c_push_bound(self, Workspace parent, dict bindings):
        """``push_forward_workspace`` for a checked parent and normalised bindings (a Do
        kernel's, normalised once): the same fast path, else :meth:`c_push`."""
        cdef Workspace ws = _dormant_bound_as(self, parent, bindings)
        if ws is not None:
            self._top += 1
            return ws
        return self.c_push(parent, bindings)

    @cython.critical_section
    def push_forward_workspace(self, parent, bindings=None):
        """Push a child of ``parent`` that sees only the bound names; returns it.

        Reuses the dormant workspace above the top when there is one (with its
        unbound local blobs and their buffers); when the requested parent or
        bindings differ from what it holds, its forwardings become exactly the
        requested ones. Otherwise builds ``Workspace.from_bindings(parent, bindings)``
        (of the parent's class).
        """
        # Fast path: the dormant workspace is already bound exactly like this.
        cdef Workspace ws = _dormant_bound_as(self, parent, bindings)
        if ws is not None:
            self._top += 1
            return ws
        return self.c_push(c_check_parent(parent), c_normalize_bindings(bindings))

    cdef object c_pop(self, Workspace parent, dict grad_bindings):
        cdef Workspace ws
        self.c_check_top()
        if self.debug:
            self._debug_check(parent, grad_bindings, self._debug_grad_bindings)
        if self._top >= 0:
            ws = <Workspace>self._slots[self._top]
            if grad_bindings:
                ws.c_add_blob_mapping(parent, grad_bindings, True)
        else:
            ws = None
        if self.debug:
            self._debug_parent = parent
            if not self._debug_grad_bindings:
                self._debug_grad_bindings = grad_bindings
        if ws is not None:
            self._top -= 1
        return ws

    @cython.critical_section
    def pop_gradient_workspace(self, parent, grad_bindings=None):
        """Pop the top workspace for a gradient step and return it (None if empty).

        ``grad_bindings`` are added to it with ``skip_defined_blobs=True``: an
        inner name the forward step defined locally keeps its forward value.
        The workspace stays allocated and is reused by the next push.
        """
        cdef Workspace ws
        if grad_bindings is None and not self.debug and isinstance(parent, Workspace) \
                and 0 <= self._top < self._count:
            ws = <Workspace>self._slots[self._top]
            self._top -= 1
            return ws
        return self.c_pop(c_check_parent(parent), c_normalize_bindings(grad_bindings))

    @cython.critical_section
    def reuse_last_forward_workspace(self, parent, bindings=None):
        """The top workspace with ``bindings`` added (no push); None if empty.

        Raises :class:`BindingError` (``Redefinition of blob <name>``) if a bound
        name is already defined there differently.
        """
        cdef Workspace parent_ws = c_check_parent(parent)
        cdef dict b = c_normalize_bindings(bindings)
        self.c_check_top()
        if self._top < 0:
            return None
        cdef Workspace ws = <Workspace>self._slots[self._top]
        ws.c_add_blob_mapping(parent_ws, b, False)
        return ws

    @cython.critical_section
    def _undo_pop(self):
        """Put back the workspace the last pop took off (used to roll back a failed
        gradient step); StackError if no dormant workspace is above the top."""
        self.c_check_top()
        if self._top + 1 >= self._count:
            raise StackError("Corrupted workspaces stack: nothing to restore above the top")
        self._top += 1

    @cython.critical_section
    def clear(self):
        """Empty the stack in O(1). Workspaces stay allocated and are reused, index 0 first."""
        self.c_check_top()
        self._top = -1

    def empty(self):
        """True when nothing is on the stack."""
        return self._top < 0

    def __len__(self):
        return self._top + 1

    def __bool__(self):
        # A stack object is always truthy, like Caffe2's pointer; use empty() for depth.
        return True

    @property
    def capacity(self):
        """Number of allocated workspaces, dormant ones included."""
        return self._count

    @property
    def top(self):
        """The top workspace, or None when empty."""
        if self._top < 0:
            return None
        return <Workspace>self._slots[self._top]

    def workspaces(self):
        """Every allocated workspace, bottom first (dormant ones after ``len(self)``)."""
        cdef Py_ssize_t i
        return [<object>self._slots[i] for i in range(self._count)]

    @cython.critical_section
    def release(self):
        """Free the dormant workspaces above the top; returns how many were freed."""
        cdef Py_ssize_t i
        cdef Py_ssize_t keep
        cdef Py_ssize_t freed
        cdef PyObject** shrunk
        self.c_check_top()
        keep = self._top + 1
        freed = self._count - keep
        if freed == 0:
            return 0
        # Take the references out first: finalisers may run Python code, so
        # the stack must already be consistent when the last reference goes.
        doomed = [<object>self._slots[i] for i in range(keep, self._count)]
        for i in range(keep, self._count):
            Py_DECREF(<object>self._slots[i])
            self._slots[i] = NULL
        self._count = keep
        if keep == 0:
            PyMem_Free(self._slots)
            self._slots = NULL
            self._alloc = 0
        elif keep < self._alloc // 4:
            shrunk = <PyObject**>PyMem_Realloc(self._slots, keep * 2 * sizeof(PyObject*))
            if shrunk != NULL:
                self._slots = shrunk
                self._alloc = keep * 2
        del doomed
        return freed

    @property
    def nbytes(self):
        """Bytes held by every allocated workspace (dormant ones included), each
        workspace and stack counted once."""
        return deep_nbytes([self])

    # -- pickling (trusted transport: docs/distributed.md) ----------------------

    @cython.critical_section
    def __reduce__(self):
        """Pickle support: every allocated workspace (dormant ones included), the depth,
        the debug flag and what the debug checks remember travel."""
        state = (STACK_STATE_VERSION, self.workspaces(), self._top + 1, self.debug,
                 self._debug_parent, self._debug_bindings, self._debug_grad_bindings)
        return (_rebuild_stack, (), state)

    @cython.critical_section
    def __setstate__(self, state):
        """Take the state :meth:`__reduce__` made (unpickling calls this once, on a new
        stack); :class:`PickleStateError` for malformed state, before any change."""
        cdef Py_ssize_t i
        if self._initialised or self._count:
            raise PickleStateError("a WorkspaceStack's state is set once, when it is "
                                   "unpickled: this stack is already initialised")
        workspaces, depth, debug, parent, bindings, grad_bindings = _check_stack_state(state)
        cdef Py_ssize_t count = len(workspaces)
        if count:
            self._slots = <PyObject**>PyMem_Realloc(NULL, count * sizeof(PyObject*))
            if self._slots == NULL:
                raise MemoryError()
            self._alloc = count
            for i in range(count):
                Py_INCREF(workspaces[i])
                self._slots[i] = <PyObject*>workspaces[i]
            self._count = count
        self._top = depth - 1
        self.debug = debug
        self._debug_parent = parent
        self._debug_bindings = bindings
        self._debug_grad_bindings = grad_bindings
        self._initialised = True

    def __copy__(self):
        raise TypeError("a shallow copy of a WorkspaceStack would hold the same workspaces "
                        "as the original; use copy.deepcopy (or pickle) for an independent copy")


def _rebuild_stack():
    """A new, uninitialised stack, for unpickling to give its state (see
    WorkspaceStack.__reduce__)."""
    return WorkspaceStack.__new__(WorkspaceStack)


cdef dict _pickled_bindings(object bindings, str what):
    if bindings is None:
        return None
    if type(bindings) is not dict or not all(
            type(k) is str and k and type(v) is str and v for k, v in bindings.items()):
        raise PickleStateError(f"a pickled WorkspaceStack's {what} map names (str) to names")
    return dict(bindings)


cdef tuple _check_stack_state(object state):
    """``(workspaces, depth, debug, debug parent, debug bindings, debug gradient
    bindings)`` from a pickled stack's state, each checked; PickleStateError otherwise."""
    if type(state) is not tuple or len(<tuple>state) != 7:
        raise PickleStateError(f"a pickled WorkspaceStack's state is a tuple of 7, "
                               f"not {type(state).__name__}")
    version, workspaces, depth, debug, parent, bindings, grad_bindings = <tuple>state
    if type(version) is not int or version != STACK_STATE_VERSION:
        raise PickleStateError(f"a pickled WorkspaceStack in state format {version!r}: this "
                               f"scopeops reads format {STACK_STATE_VERSION} (pickle is for "
                               f"processes running the same scopeops)")
    if type(workspaces) is not list or not all(isinstance(ws, Workspace) for ws in workspaces):
        raise PickleStateError("a pickled WorkspaceStack's workspaces are a list of Workspaces")
    if len({id(ws) for ws in workspaces}) != len(workspaces):
        raise PickleStateError("a pickled WorkspaceStack holds one workspace twice")
    if type(depth) is not int or not 0 <= depth <= len(workspaces):
        raise PickleStateError(f"a pickled WorkspaceStack's depth must be between 0 and its "
                               f"{len(workspaces)} workspaces, not {depth!r}")
    if type(debug) is not bool:
        raise PickleStateError(f"a pickled WorkspaceStack's debug flag is a bool, "
                               f"not {type(debug).__name__}")
    if parent is not None and not isinstance(parent, Workspace):
        raise PickleStateError(f"a pickled WorkspaceStack's debug parent is a "
                               f"{type(parent).__name__}, not a Workspace")
    return (list(workspaces), depth, debug, parent,
            _pickled_bindings(bindings, "debug bindings"),
            _pickled_bindings(grad_bindings, "debug gradient bindings"))


cdef int _check_bindings_match(dict bindings, dict test_bindings) except -1:
    if len(bindings) != len(test_bindings):
        raise BindingError(f"Blob bindings mismatch: {len(bindings)} bindings vs "
                           f"{len(test_bindings)}")
    for inner, outer in bindings.items():
        if inner not in test_bindings:
            raise BindingError(f"Blob bindings mismatch: {inner} is not bound")
        if test_bindings[inner] != outer:
            raise BindingError(f"Blob bindings mismatch: {inner} is bound to "
                               f"{test_bindings[inner]}, expected {outer}")
    return 0


# -- GC support: the slots array holds references the generated traverse cannot see.

cdef traverseproc _generated_traverse = NULL


cdef int _traverse_stack(PyObject* obj, visitproc visit, void* arg) noexcept:
    cdef WorkspaceStack stack = <WorkspaceStack>obj
    cdef Py_ssize_t i
    cdef int rc
    for i in range(stack._count):
        if stack._slots[i] != NULL:
            rc = visit(stack._slots[i], arg)
            if rc:
                return rc
    if _generated_traverse != NULL:
        return _generated_traverse(obj, visit, arg)
    return 0


_generated_traverse = (<PyTypeObject*>WorkspaceStack).tp_traverse
(<PyTypeObject*>WorkspaceStack).tp_traverse = <traverseproc>_traverse_stack


# -- C-level API ---------------------------------------------------------------

cdef bint c_stack_empty(WorkspaceStack stack) noexcept nogil:
    return stack._top < 0


cdef Py_ssize_t c_stack_depth(WorkspaceStack stack) noexcept nogil:
    return stack._top + 1


cdef Py_ssize_t c_stack_capacity(WorkspaceStack stack) noexcept nogil:
    return stack._count


cdef PyObject* c_stack_top(WorkspaceStack stack) noexcept nogil:
    if stack._top < 0:
        return NULL
    return stack._slots[stack._top]


cdef void c_stack_clear(WorkspaceStack stack) noexcept nogil:
    stack._top = -1


cdef Py_ssize_t c_push_forward_workspace_slow(WorkspaceStack stack,
                                              Workspace parent) except -1 nogil:
    # The inline c_push_forward_workspace (_stack.pxd) found nothing to reuse as is.
    with gil:
        stack.c_push(c_check_parent(parent), {})
        return stack._top + 1


cdef inline Workspace _dormant_bound_as(WorkspaceStack stack, object parent, object bindings):
    """The dormant workspace above the top when it is already bound to ``parent`` exactly
    as ``bindings`` (None for none) say, with every outer blob still there (as
    from_bindings would check): a push that has nothing to rebind. None otherwise."""
    cdef Py_ssize_t nxt = stack._top + 1
    cdef Workspace ws
    if nxt < stack._count and not stack.debug and nxt >= 0:
        ws = <Workspace>stack._slots[nxt]
        if ws._bound_parent is parent and ws._bound_exact:
            if bindings is None:
                if ws._n_bound == 0:
                    return ws
            elif c_same_bindings(bindings, ws._bound) and c_bound_blobs_visible(ws):
                return ws
    return None


cdef int c_pop_gradient_workspace_slow(WorkspaceStack stack, Workspace parent) except -1 nogil:
    # The inline c_pop_gradient_workspace (_stack.pxd) met a debug stack or a released one.
    with gil:
        return 0 if stack.c_pop(c_check_parent(parent), {}) is None else 1


WORKSPACE_STACK_META = register_known_type(WorkspaceStack, "WorkspaceStack")
