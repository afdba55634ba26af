"""Blob: a typed slot holding one value, with buffer reuse for tensors.

A tensor blob written through :meth:`Blob.tensor` owns a raw byte buffer and
hands out views of it, so an operator that writes the same shape every step
allocates nothing, and a shrink or a same-size reshape reuses the memory
(Caffe2 ``Tensor::Resize`` semantics).
"""

cimport cython
from cpython.ref cimport PyObject
from libc.stdint cimport SIZE_MAX
from cpython.long cimport PyLong_AsSsize_t
from cpython.exc cimport PyErr_Clear

import sys

import numpy as np

from scopeops._npy cimport (
    PyArrayObject, _import_array, npy_intp, PyArray_DATA, PyArray_NDIM, PyArray_DIMS,
    PyArray_STRIDES, PyArray_SIZE, PyArray_ITEMSIZE, PyArray_IS_C_CONTIGUOUS,
    PyArray_ISWRITEABLE, PyArray_DESCR, PyArray_Check,
)
from scopeops._types cimport (
    TypeMeta, DTypeCode, DT_OTHER, TENSOR_META, c_meta_of_value, c_dtype_meta, type_meta,
)
from scopeops.errors import BlobTypeError

_import_array()

cdef object _np_empty = np.empty
cdef object _np_uint8 = np.dtype(np.uint8)


cdef inline str _describe(Blob blob):
    return "blob" if blob.name is None else f"blob {blob.name}"


cdef tuple _normalise_shape(object shape):
    """A shape as a tuple of non-negative ints; refuses anything else before any change."""
    cdef tuple dims
    if isinstance(shape, bool):
        raise TypeError("a shape must be an int or a sequence of ints, not bool")
    if isinstance(shape, np.ndarray) and shape.ndim > 0:
        dims = tuple(shape.tolist())
    elif hasattr(shape, "__index__"):
        dims = (shape,)
    else:
        try:
            dims = tuple(shape)
        except TypeError:
            raise TypeError(f"a shape must be an int or a sequence of ints, "
                            f"not {type(shape).__name__}") from None
    if len(dims) > 64:
        raise ValueError(f"a shape may have at most 64 dimensions, got {len(dims)}")
    out = []
    for d in dims:
        if isinstance(d, bool) or not hasattr(d, "__index__"):
            raise TypeError(f"a shape must contain ints, got {d!r} in {shape!r}")
        d = d.__index__()
        if d < 0:
            raise ValueError(f"a shape must not contain negative sizes, got {shape!r}")
        out.append(d)
    return tuple(out)


cdef inline bint _same_shape(PyArrayObject* arr, tuple dims) noexcept:
    """True when ``dims`` (exact ints only) equals the array's shape; never raises."""
    cdef Py_ssize_t n = len(dims)
    cdef Py_ssize_t i
    cdef object d
    if PyArray_NDIM(arr) != n:
        return False
    cdef npy_intp* have = PyArray_DIMS(arr)
    for i in range(n):
        d = dims[i]
        if type(d) is not int:
            return False
        if PyLong_AsSsize_t(d) != have[i]:
            PyErr_Clear()
            return False
    return True


@cython.final
@cython.no_gc_clear
cdef class Blob:
    """A typed slot: holds one value and knows its :class:`TypeMeta`.

    Workspaces hand out ``Blob`` objects; while a blob lives in a workspace,
    every lookup of the same visible name returns the same ``Blob``.
    ``name`` is the local name it was created under (None for a free blob) and
    is used in error messages.
    """

    def __init__(self):
        pass

    def __repr__(self):
        # One snapshot of the fields (C reads, no Python code in between): another
        # thread may reset the blob while the string is being built.
        cdef TypeMeta meta = self._meta
        value = self._value
        what = "empty" if meta is None else meta.name
        if self._is_tensor and value is not None:
            what = f"Tensor {value.dtype}{list(value.shape)}"
        return f"<Blob {self.name!r}: {what}>" if self.name is not None else f"<Blob: {what}>"

    @property
    def meta(self):
        """The :class:`TypeMeta` of the value, or None while the blob is empty."""
        return self._meta

    def is_empty(self):
        """True while the blob holds no value."""
        return self._meta is None

    def is_type(self, t):
        """True when the blob holds a value of type ``t`` (a class, dtype or TypeMeta)."""
        return self._meta is not None and self._meta is type_meta(t)

    def get(self, t=None):
        """The value. With ``t``, raise :class:`BlobTypeError` unless it is of that type."""
        cdef TypeMeta want
        if t is None:
            if self._meta is None:
                raise BlobTypeError(f"{_describe(self).capitalize()} is empty: it holds no value")
            return self._value
        want = type_meta(t)
        if self._meta is not want:
            have = "nothing (empty blob)" if self._meta is None else self._meta.name
            raise BlobTypeError(
                f"wrong type for the Blob instance. Blob contains {have} while caller "
                f"expects {want.name}" + ("" if self.name is None else f" (blob {self.name})"))
        return self._value

    @cython.critical_section
    def set(self, value):
        """Store ``value`` (by reference) and its type."""
        self.c_set(value)

    @cython.critical_section
    def reset(self):
        """Empty the blob and drop its value and buffer."""
        self.c_reset()

    @property
    def dtype(self):
        """The element type of a tensor blob, else None."""
        return self._value.dtype if self._is_tensor else None

    @property
    def shape(self):
        """The shape of a tensor blob, else None."""
        return self._value.shape if self._is_tensor else None

    @property
    def nbytes(self):
        """Bytes held by the value: the buffer capacity for tensors."""
        # A snapshot first: reading the value's size may run Python code.
        cdef TypeMeta meta = self._meta
        value = self._value
        cdef bint owns_buffer = self._buffer is not None
        cdef Py_ssize_t capacity = self._capacity
        cdef bint is_tensor = self._is_tensor
        if meta is None:
            return 0
        if owns_buffer:
            return capacity
        if is_tensor:
            return value.nbytes
        if isinstance(value, (bytes, bytearray)):
            return len(value)
        if getattr(type(value), "nbytes", None) is not None:
            size = getattr(value, "nbytes")
            if isinstance(size, int):
                return size
        return sys.getsizeof(value)

    def tensor(self, shape, dtype):
        """The blob's tensor with this shape and dtype, reusing its buffer.

        An unchanged shape and dtype returns the current array itself; a
        shrink or a same-size reshape reuses the blob's buffer; only growth
        allocates. Contents are unspecified after a shape change. The blob
        only reuses memory it allocated itself: a value stored with
        :meth:`set` is never written through.
        """
        return self.c_tensor(shape, dtype)

    cdef int c_set(self, object value) except -1:
        if isinstance(value, Blob):
            raise TypeError("a Blob cannot hold another Blob; store its value instead")
        cdef TypeMeta meta = c_meta_of_value(value)
        cdef object old_value = self._value
        cdef object old_buffer = self._buffer
        cdef DTypeCode code = DT_OTHER
        if meta is TENSOR_META:
            dt = value.dtype
            if self._is_tensor and dt is self._value.dtype:
                code = self._dtype_code     # same element type as before: no registry lookup
            else:
                code = (<TypeMeta>c_dtype_meta(dt)).code
        self._meta = meta
        self._is_tensor = meta is TENSOR_META
        self._dtype_code = code
        self._buffer = None
        self._capacity = 0
        self._value = value
        # Old values die last, once the blob is consistent (their __del__ may run Python code).
        del old_value, old_buffer
        return 0

    cdef int c_reset(self) except -1:
        cdef object old_value = self._value
        cdef object old_buffer = self._buffer
        self._meta = None
        self._is_tensor = False
        self._dtype_code = DT_OTHER
        self._buffer = None
        self._capacity = 0
        self._value = None
        del old_value, old_buffer
        return 0

    cdef object c_tensor(self, object shape, object dtype):
        cdef TypeMeta meta
        cdef tuple dims
        cdef object dt
        cdef object arr
        cdef Py_ssize_t count = 1
        cdef Py_ssize_t nbytes
        cdef Py_ssize_t d
        # Fast path: our own array with this exact shape and dtype.
        if self._is_tensor and self._buffer is not None and type(shape) is tuple:
            arr = self._value
            if _same_shape(<PyArrayObject*>arr, <tuple>shape):
                dt = arr.dtype
                if dtype is dt or (<TypeMeta>c_dtype_meta(dtype)).dtype is dt:
                    return arr
        dims = _normalise_shape(shape)
        meta = c_dtype_meta(dtype)
        dt = meta.dtype
        if dt.kind not in "biufc":
            raise TypeError(f"tensor() needs a bool or numeric dtype, not {dt}")
        for d in dims:
            if d and count > (<Py_ssize_t>(SIZE_MAX >> 2)) // d:
                raise ValueError(f"tensor of shape {dims} is too large")
            count *= d
        if count > (<Py_ssize_t>(SIZE_MAX >> 2)) // meta.itemsize:
            raise ValueError(f"tensor of shape {dims} is too large")
        nbytes = count * meta.itemsize
        if self._buffer is None or nbytes > self._capacity:
            buffer = _np_empty(nbytes, _np_uint8)
        else:
            buffer = self._buffer
        arr = buffer[:nbytes].view(dt).reshape(dims)
        old_value = self._value
        self._buffer = buffer
        self._capacity = buffer.shape[0]
        self._meta = TENSOR_META
        self._is_tensor = True
        self._dtype_code = meta.code
        self._value = arr
        del old_value
        return arr


cdef Blob c_new_blob(object name):
    cdef Blob blob = Blob.__new__(Blob)
    blob.name = name
    return blob


cdef bint c_blob_is_tensor(Blob blob) noexcept nogil:
    return blob._is_tensor


cdef int _raise_not_tensor(Blob blob) except -1:
    raise BlobTypeError(
        f"wrong type for the Blob instance. Blob contains "
        f"{'nothing (empty blob)' if blob._meta is None else blob._meta.name} "
        f"while caller expects Tensor" + ("" if blob.name is None else f" (blob {blob.name})"))


cdef int c_blob_tensor_view(Blob blob, TensorView* view) except -1 nogil:
    """Fill ``view`` with the blob's tensor buffer; -1 with BlobTypeError if not a tensor."""
    cdef PyArrayObject* arr
    if not blob._is_tensor:
        with gil:
            _raise_not_tensor(blob)
    arr = <PyArrayObject*><PyObject*>blob._value
    view.data = PyArray_DATA(arr)
    view.itemsize = PyArray_ITEMSIZE(arr)
    view.ndim = PyArray_NDIM(arr)
    view.shape = <const Py_ssize_t*>PyArray_DIMS(arr)
    view.strides = <const Py_ssize_t*>PyArray_STRIDES(arr)
    view.size = PyArray_SIZE(arr)
    view.c_contiguous = PyArray_IS_C_CONTIGUOUS(arr)
    view.writeable = PyArray_ISWRITEABLE(arr)
    view.dtype = blob._dtype_code
    return 0
