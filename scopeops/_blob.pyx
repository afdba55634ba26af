"""Blob: a typed slot holding one value, with buffer reuse for tensors.

A tensor blob written through :meth:`Blob.tensor` owns a raw byte buffer and
hands out views of it, so an operator that writes the same shape every step
allocates nothing, and a shrink or a same-size reshape reuses the memory
(Caffe2 ``Tensor::Resize`` semantics).
"""

cimport cython
from cpython.ref cimport PyObject
from cpython.number cimport PyNumber_Index
from cpython.exc cimport PyErr_Clear

import sys

import numpy as np

from scopeops._npy cimport (
    PyArrayObject, _import_array, npy_intp, PyArray_DATA, PyArray_NDIM, PyArray_DIMS,
    PyArray_STRIDES, PyArray_SIZE, PyArray_ITEMSIZE, PyArray_NBYTES, PyArray_IS_C_CONTIGUOUS,
    PyArray_ISWRITEABLE, PyArray_ISALIGNED, PyArray_Check, plain_array, array_dtype,
    array_shape, c_contiguous_view,
)
from scopeops._types cimport (
    TypeMeta, DTypeCode, DT_OTHER, TENSOR_META, c_meta_of_value, c_dtype_meta, type_meta,
    c_numeric_dtype, c_known_dtype_meta, c_array_dtype_code,
)
from scopeops.errors import BlobTypeError, PickleStateError

_import_array()

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX
    # Unchecked by Cython: -1 with OverflowError set is handled (cleared) by the caller.
    Py_ssize_t _as_ssize_t_or_minus_one "PyLong_AsSsize_t"(object) noexcept

cdef object _np_empty = np.empty
cdef object _np_copyto = np.copyto
cdef object _np_uint8 = np.dtype(np.uint8)

# The largest tensor tensor() makes: no 64-bit processor gives a process more than
# 2**56 bytes of address space (x86-64 with 5-level paging; others give less), so a
# larger tensor cannot exist and is refused with ValueError before any allocation.
cdef Py_ssize_t MAX_TENSOR_BYTES = min(PY_SSIZE_T_MAX, 1 << 56)


cdef enum:
    # Version of the tuple Blob.__reduce__ makes; another version is refused.
    BLOB_STATE_VERSION = 1
    # What a pickled blob holds.
    HOLDS_NOTHING = 0
    HOLDS_VALUE = 1
    HOLDS_OWN_TENSOR = 2


cdef inline str _describe(Blob blob):
    return "blob" if blob.name is None else f"blob {blob.name}"


cdef tuple _normalise_shape(object shape):
    """A shape as a tuple of non-negative ints; refuses anything else before any change."""
    cdef tuple dims
    if isinstance(shape, bool):
        raise TypeError("a shape must be an int or a sequence of ints, not bool")
    if PyArray_Check(shape) and PyArray_NDIM(<PyArrayObject*>shape) > 0:
        dims = tuple(plain_array(shape).tolist())
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
    # Messages name types and ints only: a caller's object (an ndarray subclass that
    # lies about its shape, say) may fail to repr.
    for d in dims:
        if isinstance(d, bool) or not hasattr(d, "__index__"):
            raise TypeError(f"a shape must contain ints, got a {type(d).__name__} "
                            f"at position {len(out)}")
        d = PyNumber_Index(d)
        if d < 0:
            raise ValueError(f"a shape must not contain negative sizes, got {d} "
                             f"at position {len(out)}")
        out.append(d)
    return tuple(out)


cdef Py_ssize_t _tensor_nbytes(tuple dims, object dt) except -1:
    """Bytes of a tensor of that shape and dtype; ValueError when it would exceed
    MAX_TENSOR_BYTES. As numpy does, the product of the non-zero dimensions counts
    even when another dimension is 0."""
    cdef Py_ssize_t total = dt.itemsize
    cdef Py_ssize_t n
    cdef bint empty = False
    for d in dims:
        if d > MAX_TENSOR_BYTES:
            _raise_too_large(dims, dt)
        n = d
        if n == 0:
            empty = True
        elif total > MAX_TENSOR_BYTES // n:
            _raise_too_large(dims, dt)
        else:
            total *= n
    return 0 if empty else total


cdef int _raise_too_large(tuple dims, object dt) except -1:
    raise ValueError(f"a tensor of shape {dims} and dtype {dt} is too large: it would hold "
                     f"more than {MAX_TENSOR_BYTES} bytes, more than a process can address")


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
        if _as_ssize_t_or_minus_one(d) != have[i]:   # -1 (and an error) when too large
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
        if self._is_tensor and PyArray_Check(value):
            what = f"Tensor {array_dtype(value)}{list(array_shape(value))}"
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
        """The element type of a tensor blob (the array's real one, whatever an
        ndarray subclass's ``dtype`` property says), else None."""
        value = self._value
        return array_dtype(value) if self._is_tensor and PyArray_Check(value) else None

    @property
    def shape(self):
        """The shape of a tensor blob (the array's real one), else None."""
        value = self._value
        return array_shape(value) if self._is_tensor and PyArray_Check(value) else None

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
        if is_tensor and PyArray_Check(value):
            return PyArray_NBYTES(<PyArrayObject*>value)
        if isinstance(value, (bytes, bytearray)):
            return len(value)
        if getattr(type(value), "nbytes", None) is not None:
            size = getattr(value, "nbytes")
            if isinstance(size, int):
                return size
        return sys.getsizeof(value)

    def tensor(self, shape, dtype):
        """The blob's tensor with this shape and dtype, reusing its buffer.

        An unchanged shape and dtype returns the current array itself, contents
        kept; a shrink or a same-size reshape reuses the blob's buffer; only
        growth allocates. After a change of shape or dtype the contents are
        unspecified: write every element before reading one.

        The blob writes only memory it allocated itself. When it holds a value
        stored with :meth:`set` (or ``feed_blob``) of this very shape and dtype,
        the first call copies that value into a buffer of the blob's own, once,
        and returns that: the contents are kept and the caller's array is never
        written. Later calls reuse the buffer, allocating nothing.

        Raises
        ------
        TypeError
            ``shape`` is not an int or a sequence of ints, or ``dtype`` is not a
            bool or numeric dtype.
        ValueError
            A negative size, more than 64 dimensions, or an impossible tensor: one
            of more than ``2**56`` bytes (the most any 64-bit process can address;
            ``sys.maxsize`` on 32-bit builds), counting the non-zero dimensions as
            numpy does. Sizes of any magnitude (``2**64``, ``np.uint64(2**63)``)
            raise this, never ``OverflowError``.
        MemoryError
            A possible tensor for which there is not enough memory.

        A refused call changes nothing: neither the blob nor the known types.
        """
        return self.c_tensor(shape, dtype)

    cdef int c_set(self, object value) except -1:
        cdef DTypeCode code
        cdef bint is_tensor
        cdef TypeMeta meta = _meta_to_hold(value, &code, &is_tensor)
        cdef object old_value = self._value
        cdef object old_buffer = self._buffer
        self._meta = meta
        self._is_tensor = is_tensor
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
        cdef Py_ssize_t nbytes
        # Fast path: our own array with this exact shape and dtype (looked up only:
        # a dtype the tables do not know takes the checked path below).
        if self._is_tensor and self._buffer is not None and type(shape) is tuple:
            arr = self._value
            if _same_shape(<PyArrayObject*>arr, <tuple>shape):
                dt = array_dtype(arr)
                if dtype is dt:
                    return arr
                meta = c_known_dtype_meta(dtype)
                if meta is not None and meta.dtype is dt:
                    return arr
        # Everything is checked before anything is registered or allocated.
        dims = _normalise_shape(shape)
        dt = c_numeric_dtype(dtype)
        nbytes = _tensor_nbytes(dims, dt)
        meta = c_dtype_meta(dtype if type(dtype) is str else dt)
        kept = _value_to_keep(self, dims, meta.dtype)
        if self._buffer is None or nbytes > self._capacity:
            buffer = _np_empty(nbytes, _np_uint8)
        else:
            buffer = self._buffer
        arr = c_contiguous_view(buffer, meta.dtype, dims)
        if kept is not None:
            _np_copyto(arr, kept)   # same shape and dtype: a plain copy, no Python code
        old_value = self._value
        self._buffer = buffer
        self._capacity = PyArray_NBYTES(<PyArrayObject*>buffer)
        self._meta = TENSOR_META
        self._is_tensor = True
        self._dtype_code = meta.code
        self._value = arr
        del old_value
        return arr

    # -- pickling (trusted transport: docs/distributed.md) ----------------------

    @cython.critical_section
    def __reduce__(self):
        """Pickle support: the name and the value travel; under protocol 5 a tensor's
        data goes out of band. A blob that owned its tensor's buffer owns one again
        after the trip (spare capacity beyond the tensor does not travel)."""
        cdef int holds
        if self._meta is None:
            holds = HOLDS_NOTHING
        elif self._is_tensor and self._buffer is not None:
            holds = HOLDS_OWN_TENSOR
        else:
            holds = HOLDS_VALUE
        return (_rebuild_blob, (), (BLOB_STATE_VERSION, self.name, holds, self._value))

    @cython.critical_section
    def __setstate__(self, state):
        """Take the state :meth:`__reduce__` made (unpickling calls this once, on a new
        blob); :class:`PickleStateError` for malformed state, before any change."""
        if self._meta is not None or self._buffer is not None:
            raise PickleStateError("a Blob's state is set once, when it is unpickled: "
                                   "this blob already holds a value")
        name, holds, value = _check_blob_state(state)
        if holds == HOLDS_OWN_TENSOR:
            _take_tensor(self, value)
        elif holds == HOLDS_VALUE:
            self.c_set(value)
        self.name = name

    def __copy__(self):
        raise TypeError("a shallow copy of a Blob would share its tensor buffer; use "
                        "copy.deepcopy, or a new Blob and set(blob.get())")


def _rebuild_blob():
    """An empty free Blob, for unpickling to give its state (see Blob.__reduce__)."""
    return Blob.__new__(Blob)


cdef tuple _check_blob_state(object state):
    """``(name, holds, value)`` from a pickled blob's state; PickleStateError otherwise."""
    if type(state) is not tuple or len(<tuple>state) != 4:
        raise PickleStateError(f"a pickled Blob's state is a tuple of 4, "
                               f"not {type(state).__name__}")
    version, name, holds, value = <tuple>state
    if type(version) is not int or version != BLOB_STATE_VERSION:
        raise PickleStateError(f"a pickled Blob in state format {version!r}: this scopeops "
                               f"reads format {BLOB_STATE_VERSION} (pickle is for processes "
                               f"running the same scopeops)")
    if name is not None and (type(name) is not str or not name):
        raise PickleStateError(f"a pickled Blob's name must be a non-empty str or None, "
                               f"not {type(name).__name__}")
    if type(holds) is not int or holds not in (HOLDS_NOTHING, HOLDS_VALUE, HOLDS_OWN_TENSOR):
        raise PickleStateError(f"a pickled Blob holds nothing (0), a value (1) or its own "
                               f"tensor (2), not {holds!r}")
    if holds == HOLDS_NOTHING and value is not None:
        raise PickleStateError("a pickled empty Blob carries a value")
    if isinstance(value, Blob):
        raise PickleStateError("a pickled Blob holds another Blob")
    if holds == HOLDS_OWN_TENSOR:
        if not PyArray_Check(value):
            raise PickleStateError(f"a pickled tensor Blob holds a {type(value).__name__}, "
                                   f"not an ndarray")
        if array_dtype(value).kind not in "biufc":
            raise PickleStateError(f"a pickled tensor Blob holds {array_dtype(value)} data: "
                                   f"a blob's own tensor is bool or numeric")
    return name, holds, value


cdef int _take_tensor(Blob blob, object value) except -1:
    """Make ``value`` the blob's own tensor: its memory when the blob may write there
    (unpickling made it; writeable, aligned, C-contiguous, native), else a copy."""
    cdef object plain = plain_array(value)
    cdef PyArrayObject* arr = <PyArrayObject*>plain
    cdef DTypeCode code = c_array_dtype_code(plain)
    if code != DT_OTHER and PyArray_IS_C_CONTIGUOUS(arr) and PyArray_ISWRITEABLE(arr) \
            and PyArray_ISALIGNED(arr):
        blob._buffer = plain.reshape(-1).view(_np_uint8)
        blob._capacity = PyArray_NBYTES(arr)
        blob._meta = TENSOR_META
        blob._is_tensor = True
        blob._dtype_code = code
        # The registry's dtype object: tensor()'s fast path compares dtypes by identity.
        blob._value = plain.view(c_dtype_meta(array_dtype(plain)).dtype)
    else:
        blob.c_tensor(array_shape(plain), array_dtype(plain))
        np.copyto(blob._value, plain)   # rare (read-only or unaligned memory): no need to be fast
    return 0


cdef object _value_to_keep(Blob blob, tuple dims, object dt):
    """The value stored with set() that tensor(dims, dt) keeps, as a plain ndarray over
    its memory, or None. Only a caller's array of that very shape and dtype (read from
    the C-level array, whatever a subclass claims) is kept; the blob's own buffer needs
    no copy, and any other value gives unspecified contents."""
    if blob._buffer is not None or not blob._is_tensor:
        return None
    value = blob._value
    if not PyArray_Check(value) or not _same_shape(<PyArrayObject*>value, dims):
        return None
    have = array_dtype(value)
    if have is not dt and have != dt:
        return None
    return plain_array(value)


cdef Blob c_new_blob(object name):
    cdef Blob blob = Blob.__new__(Blob)
    blob.name = name
    return blob


cdef inline TypeMeta _meta_to_hold(object value, DTypeCode* code, bint* is_tensor):
    """The meta of a blob holding ``value``, with its dtype code in ``code`` and whether
    it is a tensor in ``is_tensor``; TypeError for a Blob. Registers a new value type."""
    if type(value) is Blob:      # Blob is final: no subclass to look for
        raise TypeError("a Blob cannot hold another Blob; store its value instead")
    if PyArray_Check(value):
        # The C-level array decides (an ndarray subclass's dtype property is never
        # read); its element type is not registered.
        code[0] = c_array_dtype_code(value)
        is_tensor[0] = True
        return TENSOR_META
    code[0] = DT_OTHER
    is_tensor[0] = False
    return c_meta_of_value(value)


cdef Blob c_new_blob_holding(object name, object value):
    """A new blob ``name`` holding ``value``: ``c_new_blob`` then ``c_set``, in one
    step (a fresh blob has no old value to drop). Refuses a Blob, and registers the
    value's type, before the blob exists."""
    cdef DTypeCode code
    cdef bint is_tensor
    cdef TypeMeta meta = _meta_to_hold(value, &code, &is_tensor)
    cdef Blob blob = Blob.__new__(Blob)
    blob.name = name
    blob._meta = meta
    blob._is_tensor = is_tensor
    blob._dtype_code = code
    blob._value = value
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
