# The few numpy C-API pieces the core uses, declared on PyArrayObject* so that
# they can be called without the GIL (numpy's own .pxd types them as objects).
from cpython.ref cimport PyObject

cdef extern from "numpy/arrayobject.h":
    ctypedef Py_ssize_t npy_intp
    ctypedef struct PyArrayObject:
        pass
    int _import_array() except -1
    void* PyArray_DATA(PyArrayObject* arr) nogil
    int PyArray_NDIM(PyArrayObject* arr) nogil
    npy_intp* PyArray_DIMS(PyArrayObject* arr) nogil
    npy_intp* PyArray_STRIDES(PyArrayObject* arr) nogil
    npy_intp PyArray_SIZE(PyArrayObject* arr) nogil
    npy_intp PyArray_ITEMSIZE(PyArrayObject* arr) nogil
    npy_intp PyArray_NBYTES(PyArrayObject* arr) nogil
    bint PyArray_IS_C_CONTIGUOUS(PyArrayObject* arr) nogil
    bint PyArray_ISWRITEABLE(PyArrayObject* arr) nogil
    bint PyArray_ISALIGNED(PyArrayObject* arr) nogil
    bint PyArray_HASFIELDS(PyArrayObject* arr) nogil
    PyObject* PyArray_DESCR(PyArrayObject* arr) nogil
    PyObject* PyArray_BASE(PyArrayObject* arr) nogil
    bint PyArray_Check(object obj)
