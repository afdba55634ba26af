from scopeops._types cimport TypeMeta, DTypeCode

# What a C caller sees of a tensor blob's buffer. Pointers are borrowed from the
# blob's current array: valid while the blob holds that value and nobody resets it.
ctypedef struct TensorView:
    void* data
    DTypeCode dtype
    Py_ssize_t itemsize
    int ndim
    const Py_ssize_t* shape
    const Py_ssize_t* strides
    Py_ssize_t size          # number of elements
    bint c_contiguous
    bint writeable


cdef class Blob:
    cdef object _value
    cdef TypeMeta _meta
    # Raw bytes the blob owns for tensor() outputs; _value is then a view of it.
    cdef object _buffer
    cdef Py_ssize_t _capacity
    cdef bint _is_tensor
    cdef DTypeCode _dtype_code
    cdef readonly object name
    cdef object __weakref__     # lookup caches hold blobs weakly
    # How many slots of operators' blob caches hold this blob (kept by
    # scopeops.ops._dispatch). A workspace recycles a removed snapshot only when these
    # and its own references are all there are: nobody else can see it.
    cdef Py_ssize_t _cached_by

    cdef int c_set(self, object value) except -1
    cdef object c_tensor(self, object shape, object dtype)
    cdef int c_reset(self) except -1


# C-level API: typed buffer access without the GIL. -1 (with an exception set,
# the GIL taken only on that branch) when the blob does not hold a tensor.
cdef int c_blob_tensor_view(Blob blob, TensorView* view) except -1 nogil
cdef bint c_blob_is_tensor(Blob blob) noexcept nogil
cdef Blob c_new_blob(object name)
cdef Blob c_new_blob_holding(object name, object value)
