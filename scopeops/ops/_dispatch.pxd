from scopeops._workspace cimport Workspace


cdef class OperatorCore


# A compiled run path of a built-in operator: 1 when it ran the op, 0 when the op's
# inputs are not the common case it handles (nothing was changed: the executor then
# calls the op's Python run(), the general implementation), -1 on error.
cdef class Kernel:
    cdef int run(self, OperatorCore op) except -1


cdef class OperatorCore:
    cdef public object definition
    cdef readonly Workspace workspace
    cdef public object args
    cdef readonly tuple _input_names     # exact str names, as the op was built
    cdef readonly tuple _output_names
    # The blobs they resolve to (Blob). Not readable from Python: each slot counts in
    # its blob's _cached_by, so the tuples must never be shared (input_blob(i) and
    # input_blobs() hand out the blobs, which a caller then holds by reference).
    cdef tuple _in_blobs
    cdef tuple _out_blobs
    cdef readonly object _aliased_inputs  # frozenset of input indices also outputs
    cdef readonly bint _inplace
    # structure epoch + 1 when the cached blobs were last known to be what the names
    # resolve to; 0: never resolved.
    cdef unsigned long long _fresh_at
    cdef readonly Kernel _kernel     # the compiled run path the executor uses, or None


cdef class NetCore:
    cdef public list operators


# Make the op's cached blobs what its names resolve to now (Operator.prepare).
cdef int c_prepare(OperatorCore op) except -1
# Run a net's operators in order (NetExecutor.run).
cdef int c_run_net(NetCore net) except -1
