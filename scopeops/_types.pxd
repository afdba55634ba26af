# Known types: the single registry that maps Python types and numpy dtypes to TypeMeta.

cdef extern from *:
    """
    /* Element type codes of the C-level tensor API (stable, part of the ABI). */
    enum scopeops_dtype_code {
        SCOPEOPS_DT_OTHER = 0,
        SCOPEOPS_DT_BOOL = 1,
        SCOPEOPS_DT_INT8 = 2, SCOPEOPS_DT_INT16 = 3, SCOPEOPS_DT_INT32 = 4, SCOPEOPS_DT_INT64 = 5,
        SCOPEOPS_DT_UINT8 = 6, SCOPEOPS_DT_UINT16 = 7,
        SCOPEOPS_DT_UINT32 = 8, SCOPEOPS_DT_UINT64 = 9,
        SCOPEOPS_DT_FLOAT16 = 10, SCOPEOPS_DT_FLOAT32 = 11, SCOPEOPS_DT_FLOAT64 = 12,
        SCOPEOPS_DT_COMPLEX64 = 13, SCOPEOPS_DT_COMPLEX128 = 14
    };
    """
    ctypedef enum DTypeCode "enum scopeops_dtype_code":
        DT_OTHER "SCOPEOPS_DT_OTHER"
        DT_BOOL "SCOPEOPS_DT_BOOL"
        DT_INT8 "SCOPEOPS_DT_INT8"
        DT_INT16 "SCOPEOPS_DT_INT16"
        DT_INT32 "SCOPEOPS_DT_INT32"
        DT_INT64 "SCOPEOPS_DT_INT64"
        DT_UINT8 "SCOPEOPS_DT_UINT8"
        DT_UINT16 "SCOPEOPS_DT_UINT16"
        DT_UINT32 "SCOPEOPS_DT_UINT32"
        DT_UINT64 "SCOPEOPS_DT_UINT64"
        DT_FLOAT16 "SCOPEOPS_DT_FLOAT16"
        DT_FLOAT32 "SCOPEOPS_DT_FLOAT32"
        DT_FLOAT64 "SCOPEOPS_DT_FLOAT64"
        DT_COMPLEX64 "SCOPEOPS_DT_COMPLEX64"
        DT_COMPLEX128 "SCOPEOPS_DT_COMPLEX128"


cdef class TypeMeta:
    cdef readonly str name
    cdef readonly Py_ssize_t id
    cdef readonly Py_ssize_t itemsize
    # The numpy dtype for element-type metas, None for class metas.
    cdef readonly object dtype
    # The Python class for class metas (and the scalar type for dtype metas) is the
    # ``pytype`` property: held strongly here, or through the weak reference for a
    # class registered on first sight (the registry does not keep such classes alive).
    cdef object _pytype
    cdef object _pytype_ref
    cdef readonly DTypeCode code


# The meta every ndarray value has ("Tensor"); set once at import.
cdef TypeMeta TENSOR_META

cpdef TypeMeta type_meta(object spec)
cdef TypeMeta c_meta_of_value(object value)
cdef TypeMeta c_dtype_meta(object dtype_spec)
# The np.dtype of a bool or numeric dtype spec; TypeError otherwise. Registers nothing.
cdef object c_numeric_dtype(object dtype_spec)
# The meta of a dtype spec already in the registry's tables, else None. Registers nothing.
cdef TypeMeta c_known_dtype_meta(object dtype_spec)
# The element type code of an ndarray's real (C-level) dtype: DT_OTHER unless it is
# one of the codes' types in native byte order.
cdef DTypeCode c_array_dtype_code(object array) noexcept
