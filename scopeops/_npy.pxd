# The few numpy C-API pieces the core uses, declared on PyArrayObject* so that
# they can be called without the GIL (numpy's own .pxd types them as objects).
#
# The core reads arrays only through these: an ndarray subclass can override its
# Python-level shape, dtype, strides, nbytes..., never the C-level array.
from cpython.ref cimport PyObject
from cpython.object cimport PyTypeObject

cdef extern from "numpy/arrayobject.h":
    ctypedef Py_ssize_t npy_intp
    ctypedef struct PyArrayObject:
        pass
    PyTypeObject PyArray_Type
    int _import_array() except -1
    void* PyArray_DATA(PyArrayObject* arr) nogil
    int PyArray_NDIM(PyArrayObject* arr) nogil
    npy_intp* PyArray_DIMS(PyArrayObject* arr) nogil
    npy_intp* PyArray_STRIDES(PyArrayObject* arr) nogil
    npy_intp PyArray_SIZE(PyArrayObject* arr) nogil
    npy_intp PyArray_ITEMSIZE(PyArrayObject* arr) nogil
    npy_intp PyArray_NBYTES(PyArrayObject* arr) nogil
    int PyArray_TYPE(PyArrayObject* arr) nogil
    bint PyArray_IS_C_CONTIGUOUS(PyArrayObject* arr) nogil
    bint PyArray_IS_F_CONTIGUOUS(PyArrayObject* arr) nogil
    bint PyArray_ISNOTSWAPPED(PyArrayObject* arr) nogil
    bint PyArray_ISWRITEABLE(PyArrayObject* arr) nogil
    bint PyArray_ISALIGNED(PyArrayObject* arr) nogil
    bint PyArray_HASFIELDS(PyArrayObject* arr) nogil
    PyObject* PyArray_DESCR(PyArrayObject* arr) nogil
    PyObject* PyArray_BASE(PyArrayObject* arr) nogil
    bint PyArray_Check(object obj)
    bint PyArray_CheckExact(object obj)
    bint PyArray_DescrCheck(object obj)
    # A new array of type ``subtype`` over the same memory, dtype, shape and strides.
    # For subtype ndarray no Python code runs (no __array_finalize__).
    object PyArray_View(PyArrayObject* arr, PyObject* dtype, PyTypeObject* subtype)
    tuple PyArray_IntTupleFromIntp(int len, npy_intp* vals)
    # Steals a reference to descr; with data given, the array does not own it.
    object PyArray_NewFromDescr(PyTypeObject* subtype, PyObject* descr, int nd,
                                npy_intp* dims, npy_intp* strides, void* data, int flags,
                                PyObject* obj)
    # Steals a reference to obj, the array that keeps data alive.
    int PyArray_SetBaseObject(PyArrayObject* arr, PyObject* obj) except -1
    enum:
        NPY_ARRAY_CARRAY


cdef extern from "Python.h":
    void Py_INCREF(PyObject* obj)


cdef inline object plain_array(object array):
    """``array`` (an ndarray, possibly of a subclass) as a plain ndarray over the same
    memory: numpy calls on it never dispatch to a subclass's overrides."""
    if PyArray_CheckExact(array):
        return array
    return PyArray_View(<PyArrayObject*>array, NULL, &PyArray_Type)


cdef inline bint same_shape(object a, object b) noexcept:
    """Do the ndarrays ``a`` and ``b`` have the same C-level shape?"""
    cdef PyArrayObject* pa = <PyArrayObject*>a
    cdef PyArrayObject* pb = <PyArrayObject*>b
    cdef int nd = PyArray_NDIM(pa)
    cdef int k
    if PyArray_NDIM(pb) != nd:
        return False
    for k in range(nd):
        if PyArray_DIMS(pa)[k] != PyArray_DIMS(pb)[k]:
            return False
    return True


cdef inline object array_dtype(object array):
    """The real element type (np.dtype) of an ndarray, whatever its class claims."""
    return <object>PyArray_DESCR(<PyArrayObject*>array)


cdef inline tuple array_shape(object array):
    """The real shape of an ndarray, whatever its class claims."""
    cdef PyArrayObject* arr = <PyArrayObject*>array
    return PyArray_IntTupleFromIntp(PyArray_NDIM(arr), PyArray_DIMS(arr))


cdef inline object c_contiguous_view(object buffer, object dtype, tuple dims):
    """A plain C-contiguous ndarray of ``dtype`` and shape ``dims`` (at most 64 exact,
    non-negative ints) over the start of ``buffer`` (a writable C-contiguous ndarray
    large enough), with ``buffer`` as its base: ``buffer[:n].view(dtype).reshape(dims)``
    without the three Python-level calls."""
    cdef npy_intp shape[64]
    cdef int nd = len(dims)
    cdef int i
    for i in range(nd):
        shape[i] = <npy_intp>dims[i]
    Py_INCREF(<PyObject*>dtype)          # PyArray_NewFromDescr steals it
    view = PyArray_NewFromDescr(&PyArray_Type, <PyObject*>dtype, nd, shape, NULL,
                                PyArray_DATA(<PyArrayObject*>buffer), NPY_ARRAY_CARRAY,
                                NULL)
    Py_INCREF(<PyObject*>buffer)         # PyArray_SetBaseObject steals it
    PyArray_SetBaseObject(<PyArrayObject*>view, <PyObject*>buffer)
    return view
