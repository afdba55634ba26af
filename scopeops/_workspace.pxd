from cpython.ref cimport PyObject
from scopeops._blob cimport Blob


cdef class Workspace:
    cdef dict _blobs            # local name -> Blob
    cdef dict _forwarded        # inner name -> _Forward(parent Workspace, outer name)
    cdef Workspace _shared      # read-through parent, or None
    # What the workspace was last bound to (by from_bindings or a stack rebind),
    # so that a reused stack workspace can tell "same bindings" in O(1).
    cdef Workspace _bound_parent
    cdef dict _bound            # inner -> outer, as last bound
    cdef Py_ssize_t _n_bound
    cdef bint _bound_exact      # every bound forward is in place and no local hides one
    cdef unsigned long long _bound_checked_at   # epoch + 1 when the outer blobs were last seen
    cdef bint _initialised
    cdef bint _is_shared_parent  # some workspace reads through to this one
    cdef dict _spare_blobs      # name -> a removed snapshot Blob nobody else holds, for reuse
    cdef dict _resolved         # name -> _Resolution: where non-local names resolve
    # Nets built here, by name: kept for the layer above (scopeops.Workspace), which
    # owns the table; the core never reads it. A C field, so that a Do kernel finds a
    # child workspace's sub-net without a Python call.
    cdef public dict _nets
    cdef object __weakref__

    cdef Blob c_find(self, str name)
    cdef Blob c_create_blob(self, str name)
    cdef Blob c_create_local_blob(self, str name)
    cdef int c_rebind(self, Workspace parent, dict bindings, list graveyard) except -1
    cdef int c_add_blob_mapping(self, Workspace parent, dict bindings,
                                bint skip_defined_blobs) except -1
    cdef Workspace c_new_child(self, dict bindings)


cdef str c_check_name(object name)
cdef dict c_normalize_bindings(object bindings)
cdef Workspace c_check_parent(object parent)
cdef bint c_bound_blobs_visible(Workspace ws)
cdef bint c_same_bindings(object bindings, dict bound)
# ws.copy_forwarded_tensors(names) for a list of distinct exact names.
cdef int c_copy_forwarded(Workspace ws, list names) except -1
# Bumped by every change that can alter what a name resolves to (local blobs
# created, removed or renamed; forwardings added, removed or rebound), so that
# callers may cache resolved blobs and drop the cache when it moves.
cdef unsigned long long c_structure_epoch() noexcept nogil
# Has no change since the epoch was ``stamp`` named one of ``names`` (a str or a tuple
# of str)? Callers caching by name need not drop their cache on a change elsewhere.
cdef bint c_names_unchanged_since(unsigned long long stamp, object names) noexcept

# Can a stack reuse ``ws`` for ``parent`` with no bindings, without rebinding?
# Inline so that the nogil push path makes no call across modules.
cdef inline bint c_reusable_unbound(PyObject* ws, PyObject* parent) noexcept nogil:
    return ((<Workspace>ws)._n_bound == 0 and (<Workspace>ws)._bound_exact
            and <PyObject*>(<Workspace>ws)._bound_parent == parent)
