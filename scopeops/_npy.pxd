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
    # A new array of type ``subtype`` over the same memory, dtype, shape and strides.
    # For subtype ndarray no Python code runs (no __array_finalize__).
    object PyArray_View(PyArrayObject* arr, PyObject* dtype, PyTypeObject* subtype)
    tuple PyArray_IntTupleFromIntp(int len, npy_intp* vals)


cdef inline object plain_array(object array):
    """``array`` (an ndarray, possibly of a subclass) as a plain ndarray over the same
    memory: numpy calls on it never dispatch to a subclass's overrides."""
    if PyArray_CheckExact(array):
        return array
    return PyArray_View(<PyArrayObject*>array, NULL, &PyArray_Type)


cdef inline object array_dtype(object array):
    """The real element type (np.dtype) of an ndarray, whatever its class claims."""
    return <object>PyArray_DESCR(<PyArrayObject*>array)


cdef inline tuple array_shape(object array):
    """The real shape of an ndarray, whatever its class claims."""
    cdef PyArrayObject* arr = <PyArrayObject*>array
    return PyArray_IntTupleFromIntp(PyArray_NDIM(arr), PyArray_DIMS(arr))
