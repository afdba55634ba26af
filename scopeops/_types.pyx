"""Known types: the registry that maps Python types and numpy dtypes to TypeMeta.

This module is the single place that decides what "type" a blob holds. Element
types (numpy dtypes) and classes each get one immutable :class:`TypeMeta`, with
an id that is never given to another meta in the process.

What the registry keeps alive: element types, the builtin classes, classes that
cannot be collected (static types) and classes registered with
:func:`register_known_type` stay for the life of the process. A class that is
only met on the way (a value of it is stored, or ``type_meta`` is asked about it)
is held weakly: once the class is collected its meta leaves :func:`known_types`,
keeps its name and id (never reused) and its ``pytype`` becomes None. Refused
calls register nothing; storing an array never registers its element type.
"""

cimport cython
from cpython.dict cimport PyDict_Values
from cpython.weakref cimport PyWeakref_NewRef
from cpython.object cimport PyTypeObject
import threading
import warnings
import weakref

import numpy as np

from scopeops._types cimport DTypeCode
from scopeops._npy cimport (
    PyArrayObject, _import_array, PyArray_TYPE, PyArray_ISNOTSWAPPED, PyArray_DescrCheck,
)

_import_array()

cdef extern from "Python.h":
    unsigned long PyType_GetFlags(PyTypeObject* type)
    enum:
        Py_TPFLAGS_HEAPTYPE

cdef extern from *:
    int SCOPEOPS_DEBUG_BUILD_FLAG "SCOPEOPS_DEBUG_BUILD"

#: True when built with SCOPEOPS_DEBUG_BUILD=1 (bounds checks, asserts, line tracing).
DEBUG_BUILD = bool(SCOPEOPS_DEBUG_BUILD_FLAG)

_TENSOR_NAME = "Tensor"

# Registry tables (mutated only with the GIL held, from this module).
cdef dict _by_pytype = {}     # Python class -> TypeMeta, for classes held strongly
# Classes held weakly are keyed by their basic weak reference (the one weakref.ref(cls)
# returns): found without allocating, and never equal to a later class at the same address.
cdef dict _by_class_ref = {}  # weakref.ref(class) -> TypeMeta, for classes held weakly
cdef dict _by_dtype = {}      # np.dtype -> TypeMeta
cdef dict _by_name = {}       # meta name -> TypeMeta
cdef dict _by_spec = {}       # exact dtype str -> TypeMeta (cache of np.dtype(str))
cdef dict _all_metas = {}     # meta id -> TypeMeta, registration order: the live metas
cdef Py_ssize_t _next_id = 0
cdef TypeMeta TENSOR_META = None
cdef type _ndarray = np.ndarray
# Only the registry makes metas: TypeMeta.__new__ without it is refused.
cdef object _MAKE_META = object()

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

    def __cinit__(self, *args, **kwargs):
        if len(args) != 1 or args[0] is not _MAKE_META:
            raise TypeError("TypeMeta cannot be created directly; use scopeops.type_meta() "
                            "or scopeops.register_known_type()")

    def __init__(self, *args, **kwargs):
        raise TypeError("TypeMeta cannot be created directly; use scopeops.type_meta() "
                        "or scopeops.register_known_type()")

    @property
    def pytype(self):
        """The class (for element types, the numpy scalar type); None once a class
        the registry held weakly has been collected."""
        if self._pytype_ref is not None:
            return self._pytype_ref()
        return self._pytype

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
    cdef TypeMeta meta = TypeMeta.__new__(TypeMeta, _MAKE_META)
    meta.name = name
    meta.id = _next_id
    meta.itemsize = itemsize
    meta.dtype = dtype
    meta._pytype = pytype
    meta.code = code
    _next_id += 1
    _all_metas[meta.id] = meta
    _by_name.setdefault(name, meta)
    return meta


@cython.final
cdef class _ClassCollected:
    """Weak-reference callback: a class the registry held weakly is being collected.
    Holds the class's key and the meta's id, not the meta (no cycle); removes only
    entries that are still its own."""
    cdef object key
    cdef Py_ssize_t meta_id

    def __call__(self, ref):
        _forget(self.key, self.meta_id)


cdef int _forget(object key, Py_ssize_t meta_id) except -1:
    # Runs inside garbage collection: single dict operations only, no lock.
    cdef TypeMeta meta = _all_metas.pop(meta_id, None)
    if meta is None:
        return 0
    if _by_class_ref.get(key) is meta:
        _by_class_ref.pop(key, None)
    if _by_name.get(meta.name) is meta:
        _by_name.pop(meta.name, None)
        # Another live meta of the same name (two classes of one qualified name)
        # takes the name over, as if the collected one had never existed.
        for other in PyDict_Values(_all_metas):
            if (<TypeMeta>other).name == meta.name:
                _by_name.setdefault(meta.name, other)
                break
    return 0


cdef inline bint _collectable(type cls) noexcept:
    """Can the class ever be freed? Static (C) types live as long as the process."""
    return (PyType_GetFlags(<PyTypeObject*>cls) & Py_TPFLAGS_HEAPTYPE) != 0


cdef TypeMeta _class_meta(type cls):
    """The meta of a class already in the registry, else None. Runs no code of the class
    for weakly held ones (they are keyed by identity)."""
    cdef TypeMeta meta = _by_pytype.get(cls)
    if meta is not None or not _by_class_ref:
        return meta
    # A dead key (a collected class whose callback has not run yet) compares equal
    # only to itself, so a new class at the same address does not find its meta.
    return _by_class_ref.get(PyWeakref_NewRef(cls, None))


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


cdef TypeMeta _meta_for_class(type cls, str name, bint strong):
    """The class's meta, registered now if it is new. ``strong``: the registry keeps
    the class alive (a meta met before is made so); otherwise a collectable class is
    held weakly."""
    cdef TypeMeta meta = _class_meta(cls)
    if meta is not None and (not strong or meta._pytype_ref is None):
        return meta
    # Naming a class can run Python code (a metaclass's __module__): register under
    # a lock and look again, so threads seeing a class first share one meta.
    with _registry_lock:
        meta = _class_meta(cls)
        if meta is None:
            return _register_class(cls, name, strong)
        if strong and meta._pytype_ref is not None:
            # Registered by the user after first sight: same meta, now held strongly.
            _by_pytype[cls] = meta      # first: hashing the class may raise
            meta._pytype = cls
            _by_class_ref.pop(PyWeakref_NewRef(cls, None), None)
            meta._pytype_ref = None     # drops the callback with it
        return meta


cdef TypeMeta _register_class(type cls, str name, bint strong):
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
    cdef object key = None
    cdef object ref = None
    cdef _ClassCollected callback = None
    if not strong and _collectable(cls):
        key = PyWeakref_NewRef(cls, None)
        hash(key)                   # cached in the reference; a metaclass's __hash__ may raise
        callback = _ClassCollected.__new__(_ClassCollected)
        callback.key = key
        callback.meta_id = -1       # set below; the class cannot die before (we hold it)
        ref = weakref.ref(cls, callback)
    meta = _new_meta(name, 0, None, None if ref is not None else cls, DT_OTHER)
    if ref is None:
        try:
            _by_pytype[cls] = meta      # hashes the class: a metaclass's __hash__ may raise
        except BaseException:
            _all_metas.pop(meta.id, None)
            if _by_name.get(name) is meta:
                _by_name.pop(name, None)
            raise
    else:
        callback.meta_id = meta.id
        meta._pytype_ref = ref
        _by_class_ref[key] = meta
    return meta


cdef inline bint _is_numpy_scalar_type(object cls):
    return isinstance(cls, type) and issubclass(cls, np.generic)


cdef TypeMeta c_known_dtype_meta(object dtype_spec):
    """The element-type meta of a spec the tables already know, else None."""
    cdef TypeMeta meta = None
    if PyArray_DescrCheck(dtype_spec):   # the common case first, without isinstance chains
        meta = _by_dtype.get(dtype_spec)
    elif type(dtype_spec) is str:
        meta = _by_spec.get(dtype_spec)
    elif isinstance(dtype_spec, TypeMeta):
        meta = <TypeMeta>dtype_spec
    elif isinstance(dtype_spec, type):
        meta = _by_pytype.get(dtype_spec)
    if meta is not None and meta.dtype is not None:
        return meta
    return None


cdef object _parse_dtype(object dtype_spec):
    """np.dtype(dtype_spec), registering nothing; TypeError for anything else."""
    try:
        with warnings.catch_warnings():
            # Probing whether a value names a dtype must not warn about numpy's
            # deprecated aliases (a string given to type_meta may not mean a dtype).
            warnings.simplefilter("ignore", DeprecationWarning)
            return np.dtype(dtype_spec)
    except Exception as exc:
        raise TypeError(f"not a dtype: {_describe(dtype_spec)}") from exc


cdef str _describe(object spec):
    """A spec for an error message: repr for plain values, the type's name otherwise
    (repr of a caller's object, an ndarray subclass that lies, say, may fail)."""
    if type(spec) in (str, bytes, int, float, bool, type(None)):
        return repr(spec)
    if isinstance(spec, type):
        return f"class {(<type>spec).__qualname__}"
    return f"a {type(spec).__qualname__} object"


cdef TypeMeta c_dtype_meta(object dtype_spec):
    """The element-type meta of a dtype, numpy scalar type or dtype string.

    Raises TypeError for anything numpy does not accept as a dtype (registering nothing).
    """
    cdef TypeMeta meta
    if isinstance(dtype_spec, TypeMeta):
        meta = <TypeMeta>dtype_spec
        if meta.dtype is None:
            raise TypeError(f"{meta.name} is not an element type")
        return meta
    meta = c_known_dtype_meta(dtype_spec)
    if meta is not None:
        return meta
    meta = _meta_for_dtype(_parse_dtype(dtype_spec))
    if type(dtype_spec) is str:
        # Only exact strs: a str subclass's __hash__/__eq__ must not live in the table.
        _by_spec[dtype_spec] = meta
    return meta


cdef object c_numeric_dtype(object dtype_spec):
    """The np.dtype of a bool or numeric dtype spec; TypeError otherwise, registering
    nothing (a refused tensor() call leaves the registry as it was)."""
    cdef TypeMeta meta = c_known_dtype_meta(dtype_spec)
    if meta is not None:
        dt = meta.dtype
    elif isinstance(dtype_spec, TypeMeta):
        raise TypeError(f"{(<TypeMeta>dtype_spec).name} is not an element type")
    else:
        dt = _parse_dtype(dtype_spec)
    if dt.kind not in "biufc":
        raise TypeError(f"tensor() needs a bool or numeric dtype, not {dt}")
    return dt


# Element type code by numpy type number, for the native-byte-order numeric types.
cdef enum:
    _N_TYPE_NUMS = 32
cdef DTypeCode _code_by_type_num[_N_TYPE_NUMS]


cdef DTypeCode c_array_dtype_code(object array) noexcept:
    cdef PyArrayObject* arr = <PyArrayObject*>array
    cdef int num = PyArray_TYPE(arr)
    if num < 0 or num >= _N_TYPE_NUMS or not PyArray_ISNOTSWAPPED(arr):
        return DT_OTHER
    return _code_by_type_num[num]


cdef _fill_type_num_codes():
    cdef int i
    for i in range(_N_TYPE_NUMS):
        _code_by_type_num[i] = DT_OTHER
    # Every numpy type character, so that aliases (long and longlong, intc and int)
    # get the code of the sized type they are on this platform.
    for char in "?bhilqpnBHILQPNefdgFDG":
        try:
            dt = np.dtype(char)
        except TypeError:
            continue
        if 0 <= dt.num < _N_TYPE_NUMS and dt.name in _CODES:
            _code_by_type_num[dt.num] = <DTypeCode>_CODES[dt.name]


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
        meta = _class_meta(<type>spec)
        if meta is not None:
            return meta
        if _is_numpy_scalar_type(spec):
            return c_dtype_meta(spec)
        if issubclass(<type>spec, np.ndarray):
            return TENSOR_META
        return _meta_for_class(<type>spec, None, False)
    if isinstance(spec, np.dtype):
        return c_dtype_meta(spec)
    if isinstance(spec, str):
        if type(spec) is str:
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


# The last class c_meta_of_value found among the strongly held ones, and its meta:
# values fed in a loop are mostly of one type.
cdef type _last_class = None
cdef TypeMeta _last_class_meta = None


cdef TypeMeta c_meta_of_value(object value):
    """The meta of a value: its type's meta, registered on first sight."""
    global _last_class, _last_class_meta
    cdef type cls = type(value)
    if cls is _ndarray:
        return TENSOR_META
    if cls is _last_class:
        return _last_class_meta
    cdef TypeMeta meta = _by_pytype.get(cls)
    if meta is not None:
        _last_class, _last_class_meta = cls, meta    # held strongly anyway: no leak
        return meta
    meta = _class_meta(cls)
    if meta is not None:
        return meta
    # Decide by the real type (a __class__ property can make isinstance lie, and
    # the core reads tensors as C arrays).
    if issubclass(cls, np.ndarray):
        return TENSOR_META
    if issubclass(cls, np.generic):
        return c_dtype_meta(cls)
    return _meta_for_class(cls, None, False)


def register_known_type(pytype, name=None):
    """Register a Python class as a known blob type and return its meta.

    Idempotent: registering the same class again returns the same meta. A numpy
    scalar type returns its element-type meta; ``np.ndarray`` returns "Tensor".
    A registered class stays known (and alive) for the life of the process,
    unlike a class only met on the way, which the registry holds weakly.

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
    cdef TypeMeta meta = _class_meta(<type>pytype)
    if meta is None and _is_numpy_scalar_type(pytype):
        meta = c_dtype_meta(pytype)
    elif meta is None and issubclass(pytype, np.ndarray):
        meta = TENSOR_META
    if meta is not None:
        if name is not None and name != meta.name:
            raise ValueError(f"{pytype.__qualname__} is already registered as {meta.name!r}")
        if meta._pytype_ref is None:
            return meta
    return _meta_for_class(<type>pytype, None if name is None else str(name), True)


def known_types():
    """Every live meta, in registration order: the element types and classes
    registered so far, less the classes held weakly that have been collected."""
    # PyDict_Values sizes its list before filling it: a collection that removes a
    # meta meanwhile cannot break the copy.
    return tuple(PyDict_Values(_all_metas))


cdef _register_builtin_types():
    global TENSOR_META
    for dtname in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16",
                   "uint32", "uint64", "float16", "float32", "float64",
                   "complex64", "complex128"):
        meta = _meta_for_dtype(np.dtype(dtname))
        _by_pytype[meta.pytype] = meta
        _by_spec[dtname] = meta
    TENSOR_META = _meta_for_class(np.ndarray, _TENSOR_NAME, True)
    for cls in (str, bytes, int, float, complex, bool, type(None)):
        _meta_for_class(cls, None, True)


_fill_type_num_codes()
_register_builtin_types()
