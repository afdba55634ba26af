"""Workspace: the typed blob dictionary.

A workspace maps names to :class:`~scopeops.Blob` objects. It can read through
to a ``shared`` parent (Caffe2 ``Workspace(shared)``) and forward chosen inner
names to blobs of other workspaces (Caffe2 forwarded blobs), which is how a
workspace pushed on a :class:`~scopeops.WorkspaceStack` sees exactly the parent
blobs it was bound to. Lookups walk shared and forwarding chains iteratively.

Every method holds the GIL from start to end and changes nothing before it has
validated all of its input, so each call is atomic with respect to other Python
threads.
"""

cimport cython
from cpython.object cimport PyTypeObject
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from cpython.weakref cimport PyWeakref_NewRef
from cpython.dict cimport PyDict_GetItemWithError as PyDict_GetItem
from cpython.unicode cimport PyUnicode_FromObject, PyUnicode_GET_LENGTH
from libc.string cimport memcpy

import numpy as np

from scopeops._blob cimport Blob, c_new_blob, c_new_blob_holding
from scopeops._npy cimport (
    PyArrayObject, _import_array, PyArray_DATA, PyArray_NBYTES, PyArray_IS_C_CONTIGUOUS,
    PyArray_BASE, PyArray_Check, PyArray_DESCR, plain_array, array_dtype, array_shape,
    same_shape,
)
from scopeops.errors import (
    BindingError, BlobNotFoundError, BlobTypeError, PickleStateError, ScopeError,
    did_you_mean,
)

_import_array()

cdef object _np_copyto = np.copyto

cdef enum:
    # copy_forwarded_tensors starts over when a source blob changed while it copied
    # (another thread, or a finaliser the copy set off); past this many attempts it
    # gives up with ScopeError rather than loop for ever.
    COPY_ATTEMPTS = 8

cdef extern from "Python.h":
    PyObject* PyWeakref_GET_OBJECT(object ref)
    PyObject* Py_None


# -- the change log ----------------------------------------------------------------------
#
# Every change that can alter what a name resolves to (a local blob created, removed or
# renamed; a forwarding added, removed or rebound) is logged with that name. Caches of
# resolved lookups record the log position they saw and the names their walk went
# through; they stay valid while no later change names one of them, so a change
# elsewhere costs a cached lookup one scan of the few entries since, never a new walk.

cdef enum:
    CHANGE_LOG_SIZE = 256                # a power of two
    CHANGE_LOG_MASK = CHANGE_LOG_SIZE - 1
    # A workspace caches at most this many non-local resolutions (names looked up that
    # are not found are cached too), then starts again.
    RESOLUTION_CACHE_LIMIT = 4096
    # A change touching more names than this is logged as one change of every name.
    CHANGE_NAMES_LOGGED = CHANGE_LOG_SIZE >> 3   # // 8; a shift stays a C constant in debug builds

# The name of change k is at k & CHANGE_LOG_MASK (an owned reference; NULL: every name).
cdef PyObject* _change_log[CHANGE_LOG_SIZE]
# How many changes were ever logged: the structure epoch.
cdef unsigned long long _epoch = 0

cdef enum:
    # Version of the tuple Workspace.__reduce__ makes; another version is refused.
    WORKSPACE_STATE_VERSION = 1


cdef object _not_found(Workspace ws, str name, str message, bint local=False):
    """A BlobNotFoundError whose message suggests close names, worked out only when read."""
    return BlobNotFoundError(message, name=name,
                             visible=ws.local_blobs if local else ws.blobs)


cdef inline void _note_change(object name) noexcept:
    """Log a change of what ``name`` (a str, or None for every name) resolves to."""
    global _epoch
    cdef Py_ssize_t slot = <Py_ssize_t>(_epoch & CHANGE_LOG_MASK)
    cdef PyObject* old = _change_log[slot]
    if name is None:
        _change_log[slot] = NULL
    else:
        Py_INCREF(name)
        _change_log[slot] = <PyObject*>name
    _epoch += 1
    Py_XDECREF(old)     # a str: freeing it runs no Python code


cdef void _note_changes(object names) noexcept:
    """Log a change of each of ``names`` (an iterable of str); many count as every name."""
    if len(names) > CHANGE_NAMES_LOGGED:
        _note_change(None)
        return
    for name in names:
        _note_change(name)


cdef bint c_names_unchanged_since(unsigned long long stamp, object names) noexcept:
    """Has no change logged since ``stamp`` named one of ``names`` (a str or a tuple of
    str)? False when the log no longer reaches back that far."""
    cdef unsigned long long k
    cdef PyObject* logged
    if stamp == _epoch:
        return True
    if _epoch - stamp > CHANGE_LOG_SIZE:
        return False
    for k in range(stamp, _epoch):
        logged = _change_log[k & CHANGE_LOG_MASK]
        if logged == NULL:
            return False
        if type(names) is str:
            if _same_str(<str>logged, <str>names):
                return False
        else:
            for name in <tuple>names:
                if _same_str(<str>logged, <str>name):
                    return False
    return True


cdef unsigned long long c_structure_epoch() noexcept nogil:
    return _epoch


def deep_nbytes(roots):
    """Bytes held by ``roots`` (workspaces and stacks) and everything they hold.

    One iterative walk: a workspace or stack met again (a cycle, or a stack held
    in two blobs) is counted once, and no depth of nesting recurses.
    """
    cdef Py_ssize_t total = 0
    cdef set seen = set()
    cdef list work = list(roots)
    cdef Workspace ws
    cdef Blob blob
    while work:
        obj = work.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, Workspace):
            ws = <Workspace>obj
            # A snapshot: sizing a value may run Python code, and with it other threads.
            for value in list(ws._blobs.values()):
                blob = <Blob>value
                if isinstance(blob._value, Workspace) or (
                        blob._meta is not None and blob._meta.name == "WorkspaceStack"):
                    work.append(blob._value)
                else:
                    total += blob.nbytes
            if ws._spare_blobs:
                for spare in list(ws._spare_blobs.values()):
                    total += PyArray_NBYTES(<PyArrayObject*>(<Blob>spare)._buffer)
        else:   # a WorkspaceStack: its allocated workspaces, dormant ones included
            work.extend(obj.workspaces())
    return total


def structure_epoch():
    """A counter that moves whenever any name's resolution may have changed."""
    return _epoch


def names_unchanged_since(stamp, names):
    """True when no change since ``structure_epoch()`` returned ``stamp`` can have
    altered what ``names`` (a str or a tuple of str) resolve to, anywhere."""
    if not isinstance(names, (str, tuple)) or (
            isinstance(names, tuple) and not all(type(n) is str for n in names)):
        raise TypeError("names must be a str or a tuple of str")
    if isinstance(names, str) and type(names) is not str:
        names = str(names)
    return c_names_unchanged_since(stamp, names)


cdef str c_check_name(object name):
    """``name`` as an exact, non-empty ``str``; TypeError/ValueError otherwise."""
    if type(name) is str:
        if not <str>name:
            raise ValueError("a blob name must be a non-empty str, got ''")
        return <str>name
    if isinstance(name, str):
        # C-level length and an exact copy: a subclass's __len__/__hash__/__eq__
        # never runs inside the core.
        if PyUnicode_GET_LENGTH(name) == 0:
            raise ValueError("a blob name must be a non-empty str, got ''")
        return PyUnicode_FromObject(name)
    raise TypeError(f"a blob name must be a str, not {type(name).__name__}")


cdef dict c_normalize_bindings(object bindings):
    """Bindings (a mapping or an iterable of pairs) as a dict of exact names.

    None gives an empty dict. Conflicting duplicate inner names raise
    BindingError; everything else malformed raises TypeError or ValueError.
    """
    cdef dict out = {}
    cdef str inner
    cdef str outer
    if bindings is None:
        return out
    if isinstance(bindings, (str, bytes, bytearray)):
        raise TypeError("bindings must be a mapping or an iterable of (inner, outer) pairs, "
                        f"not {type(bindings).__name__}")
    if type(bindings) is dict:
        items = (<dict>bindings).items()
    elif hasattr(bindings, "items") and callable(bindings.items):
        items = bindings.items()
    else:
        items = bindings
    try:
        iterator = iter(items)
    except TypeError:
        raise TypeError("bindings must be a mapping or an iterable of (inner, outer) pairs, "
                        f"not {type(bindings).__name__}") from None
    for pair in iterator:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"each binding must be an (inner, outer) pair of names, got {pair!r}")
        inner = c_check_name(pair[0])
        outer = c_check_name(pair[1])
        previous = out.get(inner)
        if previous is not None and previous != outer:
            raise BindingError(f"Redefinition of blob {inner}: bound to both {previous} "
                               f"and {outer}")
        out[inner] = outer
    return out


cdef Workspace c_check_parent(object parent):
    if parent is None:
        raise BindingError("Parent workspace must be specified")
    if not isinstance(parent, Workspace):
        raise TypeError(f"a parent workspace must be a Workspace, not {type(parent).__name__}")
    return <Workspace>parent


@cython.final
@cython.freelist(64)
cdef class _Resolution:
    """Where a name resolved: the blob (weakly: a cache never keeps a removed blob
    alive) or None for not found, the names the walk went through, and the change log
    position it is valid at."""
    cdef object blob_ref            # weakref.ref to the Blob, or None: not found
    cdef object names               # a str, or a tuple of str
    cdef unsigned long long stamp


@cython.final
@cython.freelist(64)
cdef class _Forward:
    """A forwarding: inner name -> ``outer`` in ``parent``, with a memo of where it
    resolves (a _Resolution, or None)."""
    cdef Workspace parent
    cdef str outer
    cdef _Resolution memo

    def __repr__(self):
        return f"<forward to {self.outer} of {self.parent!r}>"


cdef inline _Forward _new_forward(Workspace parent, str outer):
    cdef _Forward fwd = _Forward.__new__(_Forward)
    fwd.parent = parent
    fwd.outer = outer
    return fwd


@cython.trashcan(True)
cdef class Workspace:
    """A typed blob dictionary with an optional read-through parent.

    Parameters
    ----------
    shared : Workspace, optional
        A read-through parent (Caffe2 ``Workspace(shared)``): names not found
        locally or among the forwardings are looked up there, recursively.

    Notes
    -----
    Lookup order is: local blobs, then forwarded names (a forward whose parent
    blob has gone is *not* found and does not fall through), then ``shared``.
    """

    def __cinit__(self):
        self._blobs = {}
        self._forwarded = {}
        self._bound = {}

    def __init__(self, shared=None):
        if self._initialised:
            raise TypeError("a Workspace is initialised once")
        if shared is not None and not isinstance(shared, Workspace):
            raise TypeError(f"shared must be a Workspace or None, not {type(shared).__name__}")
        cdef Workspace up
        if shared is not None:
            if self._is_shared_parent or shared is self:
                # Only a workspace already read through by others (made with __new__
                # and initialised late) can close a cycle: walk up to check.
                up = <Workspace>shared
                while up is not None:
                    if up is self:
                        raise BindingError("shared would make a cycle of read-through "
                                           "parents back to this workspace")
                    up = up._shared
            (<Workspace>shared)._is_shared_parent = True
        self._shared = shared
        self._initialised = True
        if self._is_shared_parent and shared is not None:
            _note_change(None)   # children made before this late __init__ now read further

    @classmethod
    def from_bindings(cls, parent, bindings):
        """A workspace that sees only the bound ``parent`` blobs, under inner names.

        Caffe2's ``Workspace(shared, forwarded_blobs)``: no read-through, only the
        forwarded names are visible from ``parent``.

        Raises
        ------
        BindingError
            ``parent`` is None (``Parent workspace must be specified``) or an outer
            name is not visible in it (``Invalid parent workspace blob: <outer>``).
        """
        cdef Workspace parent_ws = c_check_parent(parent)
        if not (isinstance(cls, type) and issubclass(cls, Workspace)):
            raise TypeError("from_bindings() builds Workspace subclasses only")
        return _new_bound(cls, parent_ws, c_normalize_bindings(bindings))

    def __repr__(self):
        parts = [f"{len(self._blobs)} local"]
        if self._forwarded:
            parts.append(f"{len(self._forwarded)} forwarded")
        if self._shared is not None:
            parts.append("shared")
        return f"<{type(self).__name__} {', '.join(parts)} at {id(self):#x}>"

    @property
    def shared(self):
        """The read-through parent, or None."""
        return self._shared

    # -- lookups -------------------------------------------------------------

    cdef Blob c_find(self, str name):
        """The visible blob of that name, or None. Iterative over any chain."""
        return _find(self, name)

    @cython.binding(False)
    @cython.always_allow_keywords(False)
    def has_blob(self, name):
        """True when ``name`` is visible here (local, forwarded or shared)."""
        return _find(self, _name(name)) is not None

    def __contains__(self, name):
        return _find(self, _name(name)) is not None

    @cython.binding(False)
    @cython.always_allow_keywords(False)
    def get_blob(self, name):
        """The visible :class:`Blob` of that name, or None."""
        return _find(self, _name(name))

    @cython.binding(False)
    @cython.always_allow_keywords(False)
    def fetch_blob(self, name):
        """The value of the visible blob ``name`` (by reference, not a copy).

        Raises
        ------
        BlobNotFoundError
            The name is not visible.
        BlobTypeError
            The blob is empty.
        """
        return _fetch(self, name)

    def __getitem__(self, name):
        return _fetch(self, name)

    # -- creation ------------------------------------------------------------

    cdef Blob c_create_local_blob(self, str name):
        cdef PyObject* found = PyDict_GetItem(self._blobs, name)
        if found != NULL:
            return <Blob>found
        return _add_local(self, name)

    cdef Blob c_create_blob(self, str name):
        # Not cached: the name is about to be created, which would void the memo.
        cdef Blob blob = _find_no_memo(self, name)
        if blob is not None:
            return blob
        if self._forwarded and name in self._forwarded:
            outer = (<_Forward>self._forwarded[name]).outer
            raise BlobNotFoundError(
                f"Blob {name} is forwarded to blob {outer} of its parent workspace, which "
                f"no longer has it: a dangling forward cannot be created")
        return _add_local(self, name)

    @cython.critical_section
    @cython.always_allow_keywords(False)
    def create_blob(self, name):
        """The visible blob ``name`` (possibly a parent's), else a new local blob.

        Raises :class:`BlobNotFoundError` for a dangling forward.
        """
        return self.c_create_blob(_name(name))

    @cython.critical_section
    @cython.always_allow_keywords(False)
    def create_local_blob(self, name):
        """A local blob ``name``, hiding any parent or forwarded blob of that name."""
        return self.c_create_local_blob(_name(name))

    @cython.critical_section
    def feed_blob(self, name, value):
        """``create_blob(name).set(value)``; returns the blob."""
        return _feed(self, _name(name), value)

    @cython.critical_section
    def __setitem__(self, name, value):
        _feed(self, _name(name), value)

    # -- removal and renaming ------------------------------------------------

    @cython.critical_section
    @cython.always_allow_keywords(False)
    def remove_blob(self, name):
        """Remove a local blob; True if one was removed. Forwards and parents are untouched."""
        cdef str key = _name(name)
        cdef PyObject* found = PyDict_GetItem(self._blobs, key)
        if found == NULL:
            return False
        _removed = <Blob>found   # dies after the dict is consistent (a __del__ may run code)
        del self._blobs[key]
        _note_change(key)
        return True

    @cython.critical_section
    def __delitem__(self, name):
        cdef str key = _name(name)
        if key not in self._blobs:
            raise _not_found(self, key, f"Blob {key} is not in the local blob list", True)
        _removed = self._blobs.pop(key)   # dies after the change is logged, like remove_blob's
        _note_change(key)

    @cython.critical_section
    def rename_blob(self, old, new):
        """Give the local blob ``old`` the name ``new``; returns the same Blob.

        Raises
        ------
        BlobNotFoundError
            ``old`` is not a local blob (``Blob <old> is not in the local blob list``).
        BindingError
            ``new`` is already visible (``Blob <new> is already in the workspace``).
        """
        cdef str old_name = c_check_name(old)
        cdef str new_name = c_check_name(new)
        cdef Blob blob
        if old_name not in self._blobs:
            raise _not_found(self, old_name, f"Blob {old_name} is not in the local blob list",
                             True)
        if _find(self, new_name) is not None:
            raise BindingError(f"Blob {new_name} is already in the workspace")
        blob = self._blobs.pop(old_name)
        self._blobs[new_name] = blob
        blob.name = new_name
        if self._n_bound and new_name in self._bound:
            self._bound_exact = False
        _note_change(old_name)
        _note_change(new_name)
        return blob

    # -- listings ------------------------------------------------------------

    def local_blobs(self):
        """Names of the local blobs."""
        return list(self._blobs)

    def blobs(self):
        """Every visible name, without duplicates: local, live forwards, shared chain."""
        cdef list names = []
        cdef set seen = set()
        cdef Workspace ws = self
        while ws is not None:
            for name in ws._blobs:
                if name not in seen:
                    seen.add(name)
                    names.append(name)
            for name, target in ws._forwarded.items():
                if name not in seen and name not in ws._blobs:
                    if _find((<_Forward>target).parent, (<_Forward>target).outer) is not None:
                        seen.add(name)
                        names.append(name)
                    else:
                        # A dangling forward hides the shared blob of that name too.
                        seen.add(name)
            ws = ws._shared
        return names

    def __len__(self):
        return len(self.blobs())

    def __iter__(self):
        return iter(self.blobs())

    def forwarded_blobs(self):
        """Forwardings as ``{inner: (parent workspace, outer name)}``."""
        return {inner: ((<_Forward>fwd).parent, (<_Forward>fwd).outer)
                for inner, fwd in self._forwarded.items()}

    @property
    def nbytes(self):
        """Bytes held by local blobs (and snapshot buffers kept for reuse), following
        workspaces and stacks held in blobs; each is counted once, cycles included."""
        return deep_nbytes([self])

    # -- bindings ------------------------------------------------------------

    cdef int c_add_blob_mapping(self, Workspace parent, dict bindings,
                                bint skip_defined_blobs) except -1:
        cdef list to_add = []
        cdef str inner
        cdef str outer
        _check_outer_blobs(parent, bindings)
        for inner, outer in bindings.items():
            current = self._forwarded.get(inner)
            if current is not None:
                if (<_Forward>current).parent is not parent or (<_Forward>current).outer != outer:
                    raise BindingError(
                        f"Redefinition of blob {inner}: it is already forwarded to "
                        f"{(<_Forward>current).outer}" + (
                            "" if (<_Forward>current).parent is parent
                            else " of another workspace"))
                continue
            if _find(self, inner) is not None:
                if skip_defined_blobs:
                    continue
                raise BindingError(f"Redefinition of blob {inner}: it is already defined "
                                   f"in the workspace")
            to_add.append((inner, _new_forward(parent, outer)))
        if to_add:
            for inner, target in to_add:
                self._forwarded[inner] = target
            _note_changes([inner for inner, _ in to_add])
        return 0

    @cython.critical_section
    def add_blob_mapping(self, parent, bindings, skip_defined_blobs=False):
        """Forward inner names to blobs of ``parent`` (Caffe2 ``AddBlobMapping``), atomically.

        Every pair is validated before any is applied: an outer name missing in
        ``parent`` (``Invalid parent workspace blob: <outer>``) or an inner name
        already forwarded elsewhere or already defined (``Redefinition of blob
        <inner>``) raises :class:`BindingError` and nothing changes. With
        ``skip_defined_blobs`` an inner name that is already defined (and not
        forwarded) is skipped silently. Re-adding an identical forward is a no-op.
        """
        cdef Workspace parent_ws = c_check_parent(parent)
        self.c_add_blob_mapping(parent_ws, c_normalize_bindings(bindings),
                                bool(skip_defined_blobs))

    cdef int c_rebind(self, Workspace parent, dict bindings, list graveyard) except -1:
        """Make a reused stack workspace bound exactly as requested.

        The fast path (same parent, equal bindings, nothing disturbed) changes
        nothing. Otherwise, after validating every outer name: local copies of
        bound names are removed (their buffers kept for the next snapshot); with
        the same parent and bindings the other forwardings stay (Caffe2), with
        different ones the forwardings become exactly the requested ones.
        """
        _check_outer_blobs(parent, bindings)
        cdef str inner
        cdef str outer
        if self._bound_parent is parent and self._bound_exact and bindings == self._bound:
            return 0
        same = self._bound_parent is parent and bindings == self._bound
        new_forwarded = dict(self._forwarded) if same else {}
        new_blobs = dict(self._blobs)
        spares = {}
        for inner, outer in bindings.items():
            local = new_blobs.pop(inner, None)
            if local is not None and _unseen(<Blob>local, 2):   # the old dict and ``local``
                # Nobody else can see this snapshot: keep it (blob, array and buffer)
                # for the next one.
                spares[inner] = local
            current = new_forwarded.get(inner)
            if current is None or (<_Forward>current).parent is not parent \
                    or (<_Forward>current).outer != outer:
                new_forwarded[inner] = _new_forward(parent, outer)
        # The old dicts (and removed blobs) die in the caller, once the stack is
        # consistent: a value's __del__ may run Python code that uses the stack.
        old_forwarded = self._forwarded
        graveyard.append((old_forwarded, self._blobs))
        self._forwarded, self._blobs = new_forwarded, new_blobs
        if spares:
            if self._spare_blobs is None:
                self._spare_blobs = {}
            self._spare_blobs.update(spares)
        self._bound_parent = parent
        self._bound = bindings
        self._n_bound = len(bindings)
        self._bound_exact = True
        # Bound names changed; unless the bindings were the same, every forward too.
        _note_changes(bindings.keys() if same else set(bindings) | set(old_forwarded))
        return 0

    cdef Workspace c_new_child(self, dict bindings):
        return _new_bound(type(self), self, bindings)

    @cython.critical_section
    def copy_forwarded_tensors(self, names):
        """Turn forwarded tensors into local deep copies (Caffe2 ``CopyForwardedTensors``).

        Each name in ``names`` that is forwarded becomes a local copy of its
        parent's tensor and stops being forwarded; other names are ignored. Data
        of 64 KiB or more is copied with the GIL released. Earlier snapshots that
        nobody else could see are reused: their buffers, and when shape and dtype
        match, the whole blob.
        A copy is a plain ``numpy.ndarray`` with the source array's real dtype,
        shape and data: an ndarray subclass's Python-level attributes and numpy
        overrides are never consulted.

        If a source blob is replaced while the data is copied, the copy starts
        over, up to 8 attempts in all.

        Raises
        ------
        BlobTypeError
            A forwarded parent blob does not hold a tensor
            (``Expected blob with tensor value <outer>``).
        BlobNotFoundError
            A forwarded parent blob no longer exists.
        ScopeError
            The source blobs were replaced during every one of the 8 attempts (by
            another thread, or by code the copy set off, such as a finaliser).
        ValueError, MemoryError
            A source (a broadcast view, say) is larger than a tensor can be, or
            than the memory available: as :meth:`Blob.tensor`.

        Nothing changes when an error is raised.
        """
        _copy_forwarded(self, names)

    # -- pickling (trusted transport: docs/distributed.md) ----------------------

    @cython.critical_section
    def __reduce__(self):
        """Pickle support: local blobs, forwardings, the ``shared`` parent and what the
        workspace was bound to travel, and with them every workspace they reach (one
        pickle keeps shared objects shared, cycles included). Memos and spare
        snapshot buffers stay behind. A subclass with state of its own extends the
        state tuple, as :class:`scopeops.Workspace` does with its nets."""
        forwards = {inner: ((<_Forward>fwd).parent, (<_Forward>fwd).outer)
                    for inner, fwd in self._forwarded.items()}
        state = (WORKSPACE_STATE_VERSION, self._shared, dict(self._blobs), forwards,
                 self._bound_parent, dict(self._bound))
        return (_rebuild_workspace, (type(self),), state)

    @cython.critical_section
    def __setstate__(self, state):
        """Take the state :meth:`__reduce__` made (unpickling calls this once, on a new
        workspace); :class:`PickleStateError` for malformed state, before any change."""
        if self._initialised:
            raise PickleStateError("a Workspace's state is set once, when it is unpickled: "
                                   "this workspace is already initialised")
        shared, blobs, forwards, bound_parent, bound = _check_workspace_state(self, state)
        self._blobs = dict(blobs)     # copies: the stream may hand one dict to several objects
        self._forwarded = {inner: _new_forward(<Workspace>parent, <str>outer)
                           for inner, (parent, outer) in forwards.items()}
        if shared is not None:
            (<Workspace>shared)._is_shared_parent = True
        self._shared = shared
        self._bound_parent = bound_parent
        self._bound = dict(bound)
        self._n_bound = len(bound)
        # Derived, not read from the stream: the stack trusts it to skip a rebind.
        self._bound_exact = bound_parent is not None and _bindings_in_place(self)
        self._bound_checked_at = 0
        self._initialised = True
        if self._is_shared_parent:
            _note_change(None)   # children made before may have cached names it now has

    def __copy__(self):
        raise TypeError("a shallow copy of a Workspace would share its Blob objects with "
                        "the original; use copy.deepcopy (or pickle) for an independent copy")


# -- the lookups' method descriptors in subclasses ------------------------------------------
#
# has_blob, get_blob and fetch_blob are plain METH_O method descriptors (binding=False),
# the kind CPython (3.11 and later) calls straight from the interpreter loop, with no
# argument tuple or vectorcall in between. That specialised call is taken only when the
# receiver's type is exactly the descriptor's own type, so an instance of a subclass
# (scopeops.Workspace is one) falls back to the generic call, slower than a cyfunction.
# give_subclass_lookups gives a subclass descriptors of its own over the same C
# functions.

cdef extern from "Python.h":
    ctypedef struct PyMethodDef:
        pass
    ctypedef struct PyMethodDescrObject:
        PyMethodDef* d_method
    object PyDescr_NewMethod(PyTypeObject* type, PyMethodDef* method)
    PyTypeObject PyMethodDescr_Type

_FAST_LOOKUPS = ("has_blob", "get_blob", "fetch_blob")


cdef bint _is_core_lookup(object found, object core):
    """Is ``found`` the core method ``core`` or a subclass's descriptor over it?"""
    return (type(found) is <object>&PyMethodDescr_Type
            and (<PyMethodDescrObject*>found).d_method == (<PyMethodDescrObject*>core).d_method)


def give_subclass_lookups(cls):
    """Give the Workspace subclass ``cls`` its own descriptors of ``has_blob``,
    ``get_blob`` and ``fetch_blob``, so that calls on its instances take CPython's
    fast path for methods of C types. A method ``cls`` or a class between it and
    Workspace defines itself is left as it is. scopeops.Workspace does this for
    itself; a subclass of it that opts in no longer sees a lookup patched onto
    scopeops.Workspace later, since its own descriptors come first."""
    if not (isinstance(cls, type) and issubclass(cls, Workspace)):
        raise TypeError(f"give_subclass_lookups takes a subclass of Workspace, not {cls!r}")
    if cls is Workspace:
        return
    cdef type klass = <type>cls
    for name in _FAST_LOOKUPS:
        core = Workspace.__dict__[name]
        for base in klass.__mro__:
            if name in base.__dict__:
                found = base.__dict__[name]
                break
        if _is_core_lookup(found, core) and name not in klass.__dict__:
            setattr(klass, name,
                    PyDescr_NewMethod(<PyTypeObject*>klass, (<PyMethodDescrObject*>core).d_method))


def _rebuild_workspace(cls):
    """A new, uninitialised workspace of class ``cls``, for unpickling to give its state
    (see Workspace.__reduce__)."""
    if not (isinstance(cls, type) and issubclass(cls, Workspace)):
        raise PickleStateError(f"a pickled Workspace names {cls!r}, which is not a "
                               f"Workspace class")
    return cls.__new__(cls)


cdef bint _pickled_name(object name):
    return type(name) is str and PyUnicode_GET_LENGTH(name) != 0


cdef tuple _check_workspace_state(Workspace ws, object state):
    """``(shared, blobs, forwards, bound_parent, bound)`` from a pickled workspace's
    state, each checked; PickleStateError otherwise."""
    if type(state) is not tuple or len(<tuple>state) != 6:
        raise PickleStateError(f"a pickled Workspace's state is a tuple of 6, "
                               f"not {type(state).__name__}")
    version, shared, blobs, forwards, bound_parent, bound = <tuple>state
    if type(version) is not int or version != WORKSPACE_STATE_VERSION:
        raise PickleStateError(f"a pickled Workspace in state format {version!r}: this "
                               f"scopeops reads format {WORKSPACE_STATE_VERSION} (pickle is "
                               f"for processes running the same scopeops)")
    if shared is not None and not isinstance(shared, Workspace):
        raise PickleStateError(f"a pickled Workspace's shared parent is a "
                               f"{type(shared).__name__}, not a Workspace")
    cdef Workspace up = <Workspace>shared
    while up is not None:
        if up is ws:
            raise PickleStateError("a pickled Workspace's shared parents make a cycle back "
                                   "to it (read-through parents form a chain, never a loop)")
        up = up._shared
    if type(blobs) is not dict:
        raise PickleStateError(f"a pickled Workspace's blobs are a dict, "
                               f"not {type(blobs).__name__}")
    for name, blob in (<dict>blobs).items():
        if not _pickled_name(name) or not isinstance(blob, Blob):
            raise PickleStateError(f"a pickled Workspace's blobs map names (str) to Blobs, "
                                   f"not {type(name).__name__} to {type(blob).__name__}")
    if type(forwards) is not dict:
        raise PickleStateError(f"a pickled Workspace's forwardings are a dict, "
                               f"not {type(forwards).__name__}")
    for inner, target in (<dict>forwards).items():
        if not (_pickled_name(inner) and type(target) is tuple and len(<tuple>target) == 2
                and isinstance((<tuple>target)[0], Workspace)
                and _pickled_name((<tuple>target)[1])):
            raise PickleStateError(f"a pickled Workspace's forwardings map an inner name to "
                                   f"(parent Workspace, outer name), not {inner!r} to a "
                                   f"{type(target).__name__}")
    if bound_parent is not None and not isinstance(bound_parent, Workspace):
        raise PickleStateError(f"a pickled Workspace's bound parent is a "
                               f"{type(bound_parent).__name__}, not a Workspace")
    if type(bound) is not dict:
        raise PickleStateError(f"a pickled Workspace's bindings are a dict, "
                               f"not {type(bound).__name__}")
    for inner, outer in (<dict>bound).items():
        if not (_pickled_name(inner) and _pickled_name(outer)):
            raise PickleStateError("a pickled Workspace's bindings map names (str) to names")
    if bound and bound_parent is None:
        raise PickleStateError("a pickled Workspace has bindings but no bound parent")
    return shared, blobs, forwards, bound_parent, bound


cdef bint _bindings_in_place(Workspace ws):
    """Is every bound name forwarded to its outer blob of the bound parent, and hidden
    by no local blob? (What ``_bound_exact`` promises.)"""
    cdef _Forward fwd
    for inner, outer in ws._bound.items():
        if inner in ws._blobs:
            return False
        found = ws._forwarded.get(inner)
        if found is None:
            return False
        fwd = <_Forward>found
        if fwd.parent is not ws._bound_parent or fwd.outer != outer:
            return False
    return True


cdef int _check_outer_blobs(Workspace parent, dict bindings) except -1:
    """BindingError (``Invalid parent workspace blob: <outer>``) unless every outer
    name of ``bindings`` resolves in ``parent``."""
    for inner, outer in bindings.items():
        if _find(parent, <str>outer) is None:
            raise BindingError(f"Invalid parent workspace blob: {outer} "
                               f"(bound to inner name {inner})"
                               f"{did_you_mean(outer, parent.blobs())}")
    return 0


cdef bint c_same_bindings(object bindings, dict bound):
    """Is ``bindings`` a dict of exact strs equal to ``bound``? Compared in C: a str
    subclass's __eq__/__hash__ never runs (such bindings take the normalising path)."""
    if type(bindings) is not dict or len(<dict>bindings) != len(bound):
        return False
    cdef PyObject* other
    for inner, outer in (<dict>bindings).items():
        if type(inner) is not str or type(outer) is not str:
            return False
        other = PyDict_GetItem(bound, inner)
        if other == NULL or not _same_str(<str>outer, <str>other):
            return False
    return True


cdef inline bint _same_str(str a, str b):
    return a is b or (PyUnicode_GET_LENGTH(a) == PyUnicode_GET_LENGTH(b) and a == b)


cdef bint c_bound_blobs_visible(Workspace ws):
    """Does every outer blob ``ws`` is bound to still resolve in its bound parent?
    Only a structural change can make one vanish, so a check stays good until
    the structure epoch moves."""
    if ws._bound_checked_at == _epoch + 1:
        return True
    for outer in ws._bound.values():
        if _find(ws._bound_parent, <str>outer) is None:
            return False
    ws._bound_checked_at = _epoch + 1
    return True


cdef int _copy_forwarded(Workspace ws, object names) except -1:
    cdef list wanted
    if isinstance(names, str):
        wanted = [c_check_name(names)]
    else:
        try:
            iterator = iter(names)
        except TypeError:
            raise TypeError(f"names must be an iterable of blob names, "
                            f"not {type(names).__name__}") from None
        wanted = [c_check_name(n) for n in iterator]
    return _copy_forwarded_exact(ws, list(dict.fromkeys(wanted)))


cdef int c_copy_forwarded(Workspace ws, list names) except -1:
    """``ws.copy_forwarded_tensors(names)`` for a list of distinct exact names (a Do
    kernel's, checked once when it was made)."""
    with cython.critical_section(ws):
        _copy_forwarded_exact(ws, names)
    return 0


cdef int _copy_forwarded_exact(Workspace ws, list wanted) except -1:
    cdef int _attempt
    for _attempt in range(COPY_ATTEMPTS):
        if _try_copy_forwarded(ws, wanted):
            return 0
        # A source changed while we copied: copy again.
    raise ScopeError(f"copy_forwarded_tensors gave up after {COPY_ATTEMPTS} attempts: the "
                     f"source blobs of {wanted} were replaced during every copy (by another "
                     f"thread or a finaliser); nothing was copied")


cdef Blob _feed(Workspace ws, str key, object value):
    cdef Blob blob = _find_no_memo(ws, key)
    if blob is not None:
        blob.c_set(value)
        return blob
    if ws._forwarded and key in ws._forwarded:
        ws.c_create_blob(key)    # raises: a dangling forward
    blob = c_new_blob_holding(key, value)   # refuses a Blob, registers the type: no change yet
    _insert_local(ws, key, blob)
    return blob


cdef Blob _add_local(Workspace ws, str name):
    """A new, empty local blob ``name`` (the caller knows there is none)."""
    cdef Blob blob = c_new_blob(name)
    _insert_local(ws, name, blob)
    return blob


cdef inline int _insert_local(Workspace ws, str name, Blob blob) except -1:
    ws._blobs[name] = blob
    if ws._n_bound and name in ws._bound:
        ws._bound_exact = False
    _note_change(name)
    return 0


cdef inline Blob _find(Workspace ws, str name):
    """The blob ``name`` resolves to from ``ws``, or None: local, forwarded, shared.

    A local name costs one dict lookup, a name forwarded to a local blob of the
    parent three. Any other name is looked up in the workspace's resolution cache,
    valid while no change since names one of the names its walk went through (see
    the change log): O(1) at any depth, and a change elsewhere does not drop it.
    """
    cdef PyObject* found = PyDict_GetItem(ws._blobs, name)
    cdef PyObject* target
    cdef _Resolution entry
    cdef _Forward fwd
    if found != NULL:
        return <Blob>found
    if ws._forwarded:
        # One hop to a local blob of the parent (a Do's bindings): three dict lookups,
        # cheaper than keeping a memo that each rebinding of the name would void.
        found = PyDict_GetItem(ws._forwarded, name)
        if found != NULL:
            fwd = <_Forward>found
            found = PyDict_GetItem(fwd.parent._blobs, fwd.outer)
            if found != NULL:
                return <Blob>found
    if ws._resolved is not None:
        found = PyDict_GetItem(ws._resolved, name)
        if found != NULL:
            entry = <_Resolution>found
            if entry.stamp == _epoch or c_names_unchanged_since(entry.stamp, entry.names):
                if entry.blob_ref is None:
                    entry.stamp = _epoch
                    return None
                target = PyWeakref_GET_OBJECT(entry.blob_ref)
                if target != Py_None:       # a live blob: the cache is right
                    entry.stamp = _epoch
                    return <Blob>target
    return _walk(ws, name, True)


cdef inline Blob _find_no_memo(Workspace ws, str name):
    """``_find`` for a caller about to create ``name`` if it is not found: a miss is
    not memoised (the creation would void the memo at once)."""
    cdef PyObject* found = PyDict_GetItem(ws._blobs, name)
    cdef Workspace up
    if found != NULL:
        return <Blob>found
    if ws._resolved is not None and PyDict_GetItem(ws._resolved, name) != NULL:
        return _find(ws, name)
    if ws._forwarded and PyDict_GetItem(ws._forwarded, name) != NULL:
        return _walk(ws, name, False)
    # The common case, a new name: up the shared chain while no forward is in the way.
    up = ws._shared
    while up is not None:
        found = PyDict_GetItem(up._blobs, name)
        if found != NULL:
            return <Blob>found
        if up._forwarded and PyDict_GetItem(up._forwarded, name) != NULL:
            return _walk(ws, name, False)
        up = up._shared
    return None


cdef inline bint _memo_valid(_Resolution memo) noexcept:
    return memo is not None and (memo.stamp == _epoch
                                 or c_names_unchanged_since(memo.stamp, memo.names))


cdef Blob _walk(Workspace start, str name, bint memoise_misses):
    """Resolve ``name`` from ``start`` by walking local, forwarded and shared
    workspaces iteratively, then cache the answer in ``start`` and in every forward
    walked (so chains cost O(1) amortised from any depth).

    Removing a blob can close a forwarding cycle; Brent's cycle detection ends the
    walk there (not found) in O(1) memory.
    """
    cdef Workspace ws = start
    cdef str requested = name
    cdef PyObject* found
    cdef list forwards = None           # the forwards walked
    cdef object names = name            # the names walked: a str, or a list of str
    cdef _Forward fwd
    cdef _Resolution memo
    cdef Blob blob
    cdef PyObject* seen_ws = NULL       # Brent's saved state (ws, name)
    cdef PyObject* seen_name = NULL
    cdef Py_ssize_t power = 1
    cdef Py_ssize_t steps = 0
    cdef PyObject* target
    cdef bint went_up = False
    while True:
        found = PyDict_GetItem(ws._blobs, name)
        if found != NULL:
            blob = <Blob>found
            break
        if ws._forwarded:
            found = PyDict_GetItem(ws._forwarded, name)
            if found != NULL:
                fwd = <_Forward>found
                if forwards is None:
                    forwards = []
                forwards.append(fwd)
                memo = fwd.memo
                if _memo_valid(memo):
                    if memo.blob_ref is None:
                        blob = None
                    else:
                        target = PyWeakref_GET_OBJECT(memo.blob_ref)
                        blob = None if target == Py_None else <Blob>target
                    if memo.blob_ref is None or blob is not None:
                        names = _more_names(names, memo.names)
                        break
                ws = fwd.parent
                if not _same_str(fwd.outer, name):
                    names = _more_names(names, fwd.outer)
                name = fwd.outer
                if <PyObject*>ws == seen_ws and <PyObject*>name == seen_name:
                    blob = None     # a forwarding cycle: nothing at its end
                    break
                steps += 1
                if steps == power:
                    seen_ws, seen_name = <PyObject*>ws, <PyObject*>name
                    power <<= 1
                    steps = 0
                continue
        ws = ws._shared
        if ws is None:
            blob = None
            break
        went_up = True
    if (blob is None and not memoise_misses) or (not went_up and forwards is None):
        return blob     # a miss about to be created, or answered by start alone

    memo = _Resolution.__new__(_Resolution)
    memo.blob_ref = None if blob is None else PyWeakref_NewRef(blob, None)
    memo.names = names if type(names) is str else tuple(<list>names)
    memo.stamp = _epoch
    if forwards is not None:
        for fwd in forwards:
            fwd.memo = memo
    if start._resolved is None:
        start._resolved = {}
    elif len(start._resolved) >= RESOLUTION_CACHE_LIMIT:
        start._resolved.clear()
    start._resolved[requested] = memo
    return blob


cdef inline object _more_names(object names, object more):
    """``names`` (a str or a list) with ``more`` (a str or a tuple) added, as a list."""
    cdef list out = [names] if type(names) is str else <list>names
    if type(more) is str:
        if more not in out:
            out.append(more)
    else:
        for name in <tuple>more:
            if name not in out:
                out.append(name)
    return out


cdef inline object _fetch(Workspace ws, object name):
    """fetch_blob and ws[name]."""
    cdef PyObject* found
    if type(name) is str:
        # The common case, a local name: no reference taken on the blob.
        found = PyDict_GetItem(ws._blobs, name)
        if found != NULL and (<Blob>found)._meta is not None:
            return (<Blob>found)._value
    cdef str key = _name(name)
    cdef Blob blob = _find(ws, key)
    if blob is None:
        raise _not_found(ws, key, f"Blob {key} not in the workspace")
    if blob._meta is None:
        return blob.get()   # raises: the blob is empty
    return blob._value


cdef inline str _name(object name):
    """c_check_name with the common case (a non-empty exact str) inline."""
    if type(name) is str and PyUnicode_GET_LENGTH(name) != 0:
        return <str>name
    return c_check_name(name)


cdef tuple _adopt(Blob dst, Blob src):
    """Move src's value and buffer into dst (src is a fresh, unshared blob); returns
    dst's old value and buffer for the caller to drop once it is consistent."""
    old = (dst._value, dst._buffer)
    dst._value, dst._buffer, dst._capacity = src._value, src._buffer, src._capacity
    dst._meta, dst._is_tensor, dst._dtype_code = src._meta, src._is_tensor, src._dtype_code
    return old


cdef extern from "Python.h":
    Py_ssize_t _refcount "Py_REFCNT"(PyObject* obj)


cdef bint _unseen(Blob blob, Py_ssize_t holders):
    """Is the blob, with its array and buffer, seen by nobody but ``holders``
    references of ours and operators' blob caches? (Only then may a later snapshot
    overwrite it: a caller holding the blob, its array or any view of it keeps its
    values.) An operator's cache does not count: it is checked against the workspace
    before every use, so it never reads a blob while the workspace does not hold it,
    and when the blob comes back as the same name's next snapshot it is again what
    the name resolves to. References expected besides: the array from the blob; the
    buffer from the blob and from the array's base."""
    # A blob with a buffer holds an array the core made from it (tensor(), a snapshot),
    # never a caller's value: Blob.set drops the buffer.
    if blob._buffer is None or not blob._is_tensor:
        return False
    cdef PyObject* value = <PyObject*>blob._value
    cdef PyObject* buffer = <PyObject*>blob._buffer
    return (_refcount(<PyObject*>blob) == holders + blob._cached_by
            and _refcount(value) == 1 and _refcount(buffer) == 2
            and PyArray_BASE(<PyArrayObject*>value) == buffer)


cdef Workspace _new_bound(type cls, Workspace parent, dict bindings):
    _check_outer_blobs(parent, bindings)
    cdef str inner
    cdef str outer
    cdef Workspace child = cls.__new__(cls)
    child._initialised = True
    for inner, outer in bindings.items():
        child._forwarded[inner] = _new_forward(parent, outer)
    child._bound_parent = parent
    child._bound = bindings
    child._n_bound = len(bindings)
    child._bound_exact = True
    return child


cdef enum:
    # Copies this large or larger release the GIL; a smaller one takes less time than
    # releasing and taking the GIL back.
    COPY_NOGIL_BYTES = 65536


cdef inline bint _snapshot_fits(Blob spare, object plain) noexcept:
    """Can the spare snapshot take a copy of ``plain`` in its own array as it is: the
    same dtype object and the same shape? (Its array is C-contiguous over its buffer and
    seen by nobody else: ``_unseen`` checked that when it was kept and when taken.)"""
    return (PyArray_DESCR(<PyArrayObject*>spare._value) == PyArray_DESCR(<PyArrayObject*>plain)
            and same_shape(spare._value, plain))


cdef bint _try_copy_forwarded(Workspace ws, list names) except -1:
    """One attempt of copy_forwarded_tensors; False if a forward moved while copying.

    Sources are read as C-level arrays (plain ndarray views of them): sizes, dtype
    and data come from the array itself, never from a subclass's Python attributes.
    A spare snapshot of the same name (one nobody else could see) is taken whole when
    its shape and dtype match, else for its buffer; spares taken go back unless the
    attempt commits."""
    cdef list plan = []
    cdef Blob source
    cdef Blob target
    cdef str name
    cdef str outer
    cdef Py_ssize_t i
    cdef Py_ssize_t n
    cdef Py_ssize_t nbytes
    cdef void* dst
    cdef void* src
    cdef PyObject* found
    for name in names:
        found = PyDict_GetItem(ws._forwarded, name)
        if found == NULL:
            continue
        forward = <object>found
        outer = (<_Forward>forward).outer
        source = _find((<_Forward>forward).parent, outer)
        if source is None:
            raise BlobNotFoundError(f"Blob {name} is forwarded to blob {outer}, which its "
                                    f"parent workspace no longer has")
        array = source._value
        if not source._is_tensor or not PyArray_Check(array):
            raise BlobTypeError(f"Expected blob with tensor value {outer} (forwarded as {name})")
        found = PyDict_GetItem(ws._blobs, name)
        plan.append((name, forward, source, array, None if found == NULL else <object>found,
                     plain_array(array)))
    if not plan:
        return True
    # Allocate every target first (this can fail), then copy, then commit.
    targets = []
    taken = {}          # name -> spare snapshot this attempt took
    committed = False
    try:
        for name, _forward, _source, _array, _local, plain in plan:
            spare = None
            if ws._spare_blobs:
                spare = ws._spare_blobs.pop(name, None)
                if spare is not None:
                    if not _unseen(<Blob>spare, 1):   # ``spare`` holds it
                        # Somebody took it up since it was kept (op.input_blob(i)):
                        # it keeps its values.
                        spare = None
                    else:
                        taken[name] = spare
            if spare is not None and _snapshot_fits(<Blob>spare, plain):
                target = <Blob>spare
            elif array_dtype(plain).kind in "biufc":
                target = c_new_blob(name)
                if spare is not None and (<Blob>spare)._cached_by == 0:
                    # Only the buffer: the spare blob itself is left viewing it, so no
                    # operator's cache may still hold that blob.
                    target._buffer = (<Blob>spare)._buffer
                    target._capacity = PyArray_NBYTES(<PyArrayObject*>target._buffer)
                target.c_tensor(array_shape(plain), array_dtype(plain))
            else:
                target = c_new_blob(name)
                target.c_set(plain.copy())   # object or flexible dtype: numpy copies
            targets.append(target)
        n = len(plan)
        for i in range(n):
            plain = plan[i][5]
            target = targets[i]
            if target._buffer is None:
                continue   # copied above, with the GIL (object or flexible dtype)
            if PyArray_NBYTES(<PyArrayObject*>target._value) != \
                    PyArray_NBYTES(<PyArrayObject*>plain):
                raise SystemError("copy_forwarded_tensors: snapshot and source sizes differ")
            if PyArray_IS_C_CONTIGUOUS(<PyArrayObject*>plain):
                dst = PyArray_DATA(<PyArrayObject*>target._value)
                src = PyArray_DATA(<PyArrayObject*>plain)
                nbytes = PyArray_NBYTES(<PyArrayObject*>plain)
                if nbytes >= COPY_NOGIL_BYTES:
                    with nogil:
                        memcpy(dst, src, nbytes)
                else:
                    memcpy(dst, src, nbytes)
            else:
                _np_copyto(target._value, plain)   # numpy releases the GIL for plain dtypes
        # Commit only if nothing moved while the GIL was released.
        for i in range(n):
            entry = <tuple>plan[i]
            name, forward, source, array, local = entry[0], entry[1], entry[2], entry[3], entry[4]
            if ws._forwarded.get(name) is not forward or ws._blobs.get(name) is not local:
                return False
            outer = (<_Forward>forward).outer
            if _find((<_Forward>forward).parent, outer) is not source or \
                    source._value is not array:
                return False
        graveyard = []   # references dropped here die after the commit, not during it
        for i in range(n):
            entry = <tuple>plan[i]
            name, local = entry[0], entry[4]
            graveyard.append(ws._forwarded.pop(name))
            if local is None:
                ws._blobs[name] = targets[i]
            else:
                # A local blob already hid the forward: it takes the copy (Caffe2 copies
                # into the blob CreateBlob returns), keeping its identity.
                graveyard.append(_adopt(<Blob>local, <Blob>targets[i]))
            if ws._n_bound and name in ws._bound:
                ws._bound_exact = False
        committed = True
        _note_changes([plan[i][0] for i in range(n)])
        del graveyard
        return True
    finally:
        if not committed and taken:
            _return_spares(ws, taken)


cdef int _return_spares(Workspace ws, dict taken) except -1:
    """Put back the spare snapshots a failed attempt took (a newer spare of the same
    name, added meanwhile, is kept instead)."""
    if ws._spare_blobs is None:
        ws._spare_blobs = {}
    for name, spare in taken.items():
        ws._spare_blobs.setdefault(name, spare)
    return 0
