"""Known types: the registry that maps Python types and numpy dtypes to TypeMeta.

This module is the single place that decides what "type" a blob holds. Element
types (numpy dtypes) and classes each get one immutable :class:`TypeMeta`, with
an id that is stable for the life of the process.
"""

cimport cython
import threading
import warnings

import numpy as np

from scopeops._types cimport DTypeCode

cdef extern from *:
    int SCOPEOPS_DEBUG_BUILD_FLAG "SCOPEOPS_DEBUG_BUILD"

#: True when built with SCOPEOPS_DEBUG_BUILD=1 (bounds checks, asserts, line tracing).
DEBUG_BUILD = bool(SCOPEOPS_DEBUG_BUILD_FLAG)

_TENSOR_NAME = "Tensor"

# Registry tables (mutated only with the GIL held, from this module).
cdef dict _by_pytype = {}     # Python class -> TypeMeta
cdef dict _by_dtype = {}      # np.dtype -> TypeMeta
cdef dict _by_name = {}       # meta name -> TypeMeta
cdef dict _by_spec = {}       # dtype string -> TypeMeta (cache of np.dtype(str))
cdef list _all_metas = []
cdef Py_ssize_t _next_id = 0
cdef TypeMeta TENSOR_META = None

cdef dict _CODES = {
    "bool": DT_BOOL,
    "int8": DT_INT8, "int16": DT_INT16, "int32": DT_INT32, "int64": DT_INT64,
    "uint8": DT_UINT8, "uint16": DT_UINT16, "uint32": DT_UINT32, "uint64": DT_UINT64,
    "float16": DT_FLOAT16, "float32": DT_FLOAT32, "float64": DT_FLOAT64,
    "complex64": DT_COMPLEX64, "complex128": DT_COMPLEX128,
}


@cython.final
cdef class TypeMeta:
    """Immutable descriptor of a type a blob can hold (Caffe2 ``TypeMeta``).

    Attributes
    ----------
    name : str
        Human-readable name: the dtype name for element types (``"float32"``),
        ``"Tensor"`` for arrays, the class name otherwise.
    id : int
        Identifier, unique and stable within the process. Metas compare and hash by it.
    itemsize : int
        Bytes per element for element types, 0 for classes.
    """

    def __init__(self, *args, **kwargs):
        raise TypeError("TypeMeta cannot be created directly; use scopeops.type_meta() "
                        "or scopeops.register_known_type()")

    def __eq__(self, other):
        if isinstance(other, TypeMeta):
            return self.id == (<TypeMeta>other).id
        return NotImplemented

    def __hash__(self):
        return self.id

    def __repr__(self):
        return f"TypeMeta({self.name!r}, id={self.id}, itemsize={self.itemsize})"

    def __str__(self):
        return self.name


cdef TypeMeta _new_meta(str name, Py_ssize_t itemsize, object dtype, object pytype,
                        DTypeCode code):
    global _next_id
    cdef TypeMeta meta = TypeMeta.__new__(TypeMeta)
    meta.name = name
    meta.id = _next_id
    meta.itemsize = itemsize
    meta.dtype = dtype
    meta.pytype = pytype
    meta.code = code
    _next_id += 1
    _all_metas.append(meta)
    _by_name.setdefault(name, meta)
    return meta


cdef TypeMeta _meta_for_dtype(object dt):
    """The meta of a numpy dtype, registered on first sight."""
    cdef TypeMeta meta = _by_dtype.get(dt)
    if meta is not None:
        return meta
    # Native numeric dtypes go by their usual name; the rest by their exact spelling.
    native_numeric = dt.isnative and dt.kind in "biufc"
    name = dt.name if native_numeric else dt.str
    code = _CODES.get(dt.name, DT_OTHER) if native_numeric else DT_OTHER
    meta = _new_meta(name, dt.itemsize, dt, dt.type, code)
    _by_dtype[dt] = meta
    return meta


cdef object _registry_lock = threading.RLock()


cdef TypeMeta _meta_for_class(type cls, str name):
    cdef TypeMeta meta = _by_pytype.get(cls)
    if meta is not None:
        return meta
    # Naming a class can run Python code (a metaclass's __module__): register under
    # a lock and look again, so threads seeing a class first share one meta.
    with _registry_lock:
        meta = _by_pytype.get(cls)
        if meta is not None:
            return meta
        return _register_class(cls, name)


cdef TypeMeta _register_class(type cls, str name):
    cdef TypeMeta meta
    if name is None:
        if cls.__module__ == "builtins":
            name = cls.__qualname__
        else:
            name = f"{cls.__module__}.{cls.__qualname__}"
        if name in _by_name:
            name = f"{cls.__module__}.{cls.__qualname__}"
    elif name in _by_name:
        raise ValueError(f"a known type named {name!r} is already registered "
                         f"({_by_name[name]!r})")
    meta = _new_meta(name, 0, None, cls, DT_OTHER)
    _by_pytype[cls] = meta
    return meta


cdef inline bint _is_numpy_scalar_type(object cls):
    return isinstance(cls, type) and issubclass(cls, np.generic)


cdef TypeMeta c_dtype_meta(object dtype_spec):
    """The element-type meta of a dtype, numpy scalar type or dtype string.

    Raises TypeError for anything numpy does not accept as a dtype.
    """
    cdef TypeMeta meta
    if isinstance(dtype_spec, TypeMeta):
        meta = <TypeMeta>dtype_spec
        if meta.dtype is None:
            raise TypeError(f"{meta.name} is not an element type")
        return meta
    if isinstance(dtype_spec, str):
        meta = _by_spec.get(dtype_spec)
        if meta is not None:
            return meta
    elif isinstance(dtype_spec, type):
        meta = _by_pytype.get(dtype_spec)
        if meta is not None and meta.dtype is not None:
            return meta
    elif isinstance(dtype_spec, np.dtype):
        meta = _by_dtype.get(dtype_spec)
        if meta is not None:
            return meta
    try:
        with warnings.catch_warnings():
            # Probing whether a value names a dtype must not warn about numpy's
            # deprecated aliases (a string given to type_meta may not mean a dtype).
            warnings.simplefilter("ignore", DeprecationWarning)
            dt = np.dtype(dtype_spec)
    except Exception as exc:
        raise TypeError(f"not a dtype: {dtype_spec!r}") from exc
    meta = _meta_for_dtype(dt)
    if isinstance(dtype_spec, str):
        _by_spec[dtype_spec] = meta
    return meta


cpdef TypeMeta type_meta(object spec):
    """The :class:`TypeMeta` for a type, a dtype or a value.

    Resolution order: a ``TypeMeta`` is returned as is; a numpy scalar type
    (``np.float32``), a ``np.dtype`` or a dtype string (``"float32"``) gives that
    element type's meta; a string naming a registered meta (``"Tensor"``) gives
    that meta; any other class gives the class's meta (``np.ndarray`` gives
    "Tensor"); any other value gives the meta of its type (an ndarray value gives
    "Tensor"; its element type is ``Blob.dtype``).
    """
    cdef TypeMeta meta
    if isinstance(spec, TypeMeta):
        return <TypeMeta>spec
    if isinstance(spec, type):
        meta = _by_pytype.get(spec)
        if meta is not None:
            return meta
        if _is_numpy_scalar_type(spec):
            return c_dtype_meta(spec)
        if issubclass(<type>spec, np.ndarray):
            return TENSOR_META
        return _meta_for_class(<type>spec, None)
    if isinstance(spec, np.dtype):
        return c_dtype_meta(spec)
    if isinstance(spec, str):
        meta = _by_spec.get(spec)
        if meta is not None:
            return meta
        meta = _by_name.get(spec)
        if meta is not None:
            return meta
        try:
            return c_dtype_meta(spec)
        except TypeError:
            pass
    return c_meta_of_value(spec)


cdef TypeMeta c_meta_of_value(object value):
    """The meta of a value: its type's meta, registered on first sight."""
    cdef type cls = type(value)
    cdef TypeMeta meta = _by_pytype.get(cls)
    if meta is not None:
        return meta
    # Decide by the real type (a __class__ property can make isinstance lie, and
    # the core reads tensors as C arrays).
    if issubclass(cls, np.ndarray):
        return TENSOR_META
    if issubclass(cls, np.generic):
        return c_dtype_meta(cls)
    return _meta_for_class(cls, None)


def register_known_type(pytype, name=None):
    """Register a Python class as a known blob type and return its meta.

    Idempotent: registering the same class again returns the same meta. A numpy
    scalar type returns its element-type meta; ``np.ndarray`` returns "Tensor".

    Raises
    ------
    TypeError
        ``pytype`` is not a class, or ``name`` is not a string.
    ValueError
        ``name`` is empty or already names another known type.
    """
    if not isinstance(pytype, type):
        raise TypeError(f"register_known_type() takes a class, not {type(pytype).__name__}")
    if name is not None:
        if not isinstance(name, str):
            raise TypeError(f"a known type's name must be a str, not {type(name).__name__}")
        if not name:
            raise ValueError("a known type's name must not be empty")
    cdef TypeMeta meta = _by_pytype.get(pytype)
    if meta is None and _is_numpy_scalar_type(pytype):
        meta = c_dtype_meta(pytype)
    elif meta is None and issubclass(pytype, np.ndarray):
        meta = TENSOR_META
    if meta is not None:
        if name is not None and name != meta.name:
            raise ValueError(f"{pytype.__qualname__} is already registered as {meta.name!r}")
        return meta
    return _meta_for_class(pytype, None if name is None else str(name))


def known_types():
    """Every meta registered so far, in registration order."""
    return tuple(_all_metas)


cdef _register_builtin_types():
    global TENSOR_META
    for dtname in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16",
                   "uint32", "uint64", "float16", "float32", "float64",
                   "complex64", "complex128"):
        meta = _meta_for_dtype(np.dtype(dtname))
        _by_pytype[meta.pytype] = meta
        _by_spec[dtname] = meta
    TENSOR_META = _meta_for_class(np.ndarray, _TENSOR_NAME)
    for cls in (str, bytes, int, float, complex, bool, type(None)):
        _meta_for_class(cls, None)


_register_builtin_types()
