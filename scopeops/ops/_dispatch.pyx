"""The compiled dispatch of the operator layer: the operator base, the net loop and the
run paths of the common built-in operators.

:class:`OperatorCore` is the compiled base of :class:`scopeops.ops.Operator`: it holds the
blobs an operator's names resolve to and gives ``input``/``output`` at C speed. The
cached blobs are checked against the workspace only when the structure epoch has
moved, by looking each name up again (O(1): the workspaces' lookups are memoised and
validated by the change log of names), so a change elsewhere costs a few lookups, not
a re-resolution.

:class:`NetCore` is the compiled base of :class:`scopeops.ops.NetExecutor`: its ``run``
is the net loop. For a built-in operator with a :class:`Kernel` (its compiled run
path) the loop runs the kernel; a kernel handles the common case only (plain
ndarrays of one native dtype and one shape, outputs already in their own buffers)
and otherwise declines before changing anything, and the loop calls the operator's
Python ``run()``: the general implementation, which also raises every error. A Python
operator class (yours) has no kernel: the loop calls its ``run()``.
"""

cimport cython
from cpython.ref cimport PyObject
from cpython.tuple cimport PyTuple_GET_SIZE
from cpython.list cimport PyList_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from libc.string cimport memmove

import numpy as np

from scopeops._blob cimport Blob
from scopeops._npy cimport (
    PyArrayObject, _import_array, npy_intp, PyArray_DATA, PyArray_NDIM, PyArray_DIMS,
    PyArray_NBYTES, PyArray_TYPE, PyArray_IS_C_CONTIGUOUS, PyArray_ISNOTSWAPPED,
    PyArray_ISWRITEABLE, PyArray_DESCR, PyArray_CheckExact, PyArray_SIZE, same_shape,
)
from scopeops._stack cimport WorkspaceStack
from scopeops._workspace cimport (
    Workspace, c_check_name, c_copy_forwarded, c_normalize_bindings, c_structure_epoch,
)
from scopeops.errors import OperatorError

_import_array()

cdef extern from "Python.h":
    object PyObject_Vectorcall(object callable, PyObject** args, size_t nargsf,
                               PyObject* kwnames)
    int Py_EnterRecursiveCall(const char* where) except -1
    void Py_LeaveRecursiveCall()

cdef extern from "numpy/arrayobject.h":
    object PyArray_Transpose(PyArrayObject* arr, void* permute)
    enum:
        NPY_BOOL, NPY_BYTE, NPY_UBYTE, NPY_SHORT, NPY_USHORT, NPY_INT, NPY_UINT,
        NPY_LONG, NPY_ULONG, NPY_LONGLONG, NPY_ULONGLONG, NPY_HALF, NPY_FLOAT,
        NPY_DOUBLE, NPY_CFLOAT, NPY_CDOUBLE

cdef object _np_empty = np.empty
cdef object _np_add = np.add
cdef object _np_subtract = np.subtract
cdef object _np_multiply = np.multiply
cdef object _np_floor_divide = np.floor_divide
cdef object _np_matmul = np.matmul
cdef object _np_add_reduce = np.add.reduce
cdef object _np_mean = np.mean
cdef object _BOOL_DESCR = np.dtype(np.bool_)
cdef object _ONE = 1          # the Python int Operator code passes (numpy's weak scalar)
cdef object _ZERO = 0
cdef object _NONE = None
cdef tuple _OUT = ("out",)    # keyword names of a call whose last argument is out=


# -- numpy calls, as the Python run() methods make them ----------------------------------


cdef inline int _call1(object f, object x, object out) except -1:
    """``f(x, out=out)`` (a ufunc takes its output positionally too: no keywords to parse)."""
    cdef PyObject* args[2]
    args[0] = <PyObject*>x
    args[1] = <PyObject*>out
    PyObject_Vectorcall(f, args, 2, NULL)
    return 0


cdef inline int _call2(object f, object a, object b, object out) except -1:
    """``f(a, b, out=out)``."""
    cdef PyObject* args[3]
    args[0] = <PyObject*>a
    args[1] = <PyObject*>b
    args[2] = <PyObject*>out
    PyObject_Vectorcall(f, args, 3, NULL)
    return 0


cdef inline int _mean(object x, object out) except -1:
    """``np.mean(x, out=out)``."""
    cdef PyObject* args[2]
    args[0] = <PyObject*>x
    args[1] = <PyObject*>out
    PyObject_Vectorcall(_np_mean, args, 1, <PyObject*>_OUT)
    return 0


cdef inline int _sum_rows(object x, object out) except -1:
    """``np.sum(x, axis=0, out=out)`` for a plain ndarray: ``np.add.reduce(x, 0, None,
    out)``, the call np.sum makes."""
    cdef PyObject* args[4]
    args[0] = <PyObject*>x
    args[1] = <PyObject*>_ZERO
    args[2] = <PyObject*>_NONE
    args[3] = <PyObject*>out
    PyObject_Vectorcall(_np_add_reduce, args, 4, NULL)
    return 0


# -- what a kernel may handle ------------------------------------------------------------


cdef inline char _kind(object array) noexcept:
    """numpy's kind letter of a plain array's dtype when it is a native bool or numeric
    type (b, i, u, f, c), else 0: object, string, structured and swapped dtypes are
    left to the general path."""
    cdef PyArrayObject* arr = <PyArrayObject*>array
    cdef int t = PyArray_TYPE(arr)
    if not PyArray_ISNOTSWAPPED(arr):
        return 0
    if t == NPY_BOOL:
        return c'b'
    if t == NPY_BYTE or t == NPY_SHORT or t == NPY_INT or t == NPY_LONG or t == NPY_LONGLONG:
        return c'i'
    if t == NPY_UBYTE or t == NPY_USHORT or t == NPY_UINT or t == NPY_ULONG \
            or t == NPY_ULONGLONG:
        return c'u'
    if t == NPY_HALF or t == NPY_FLOAT or t == NPY_DOUBLE:
        return c'f'
    if t == NPY_CFLOAT or t == NPY_CDOUBLE:
        return c'c'
    return 0


cdef inline bint _numeric(char kind) noexcept:
    return kind == c'i' or kind == c'u' or kind == c'f' or kind == c'c'


cdef inline object _plain(object blob):
    """The value of a tensor blob when it is a plain ndarray (not a subclass), else None."""
    cdef Blob b = <Blob>blob
    if b._is_tensor:
        value = b._value
        if PyArray_CheckExact(value):
            return value
    return None


cdef inline PyObject* _descr(object array) noexcept:
    return PyArray_DESCR(<PyArrayObject*>array)


cdef inline object _own_output(object blob, int ndim, const npy_intp* dims, PyObject* descr):
    """The tensor an output blob already holds in a buffer of its own, when it has this
    shape and dtype and is writeable (exactly what ``Operator.output`` would return,
    with nothing to do), else None."""
    cdef Blob b = <Blob>blob
    cdef PyArrayObject* arr
    cdef int k
    if not b._is_tensor or b._buffer is None:
        return None
    value = b._value
    if not PyArray_CheckExact(value):
        return None
    arr = <PyArrayObject*>value
    if PyArray_DESCR(arr) != descr or PyArray_NDIM(arr) != ndim or not PyArray_ISWRITEABLE(arr):
        return None
    for k in range(ndim):
        if PyArray_DIMS(arr)[k] != dims[k]:
            return None
    return value


cdef inline object _own_like(object blob, object like):
    """``_own_output`` with the shape and dtype of the array ``like``."""
    return _own_output(blob, PyArray_NDIM(<PyArrayObject*>like),
                       PyArray_DIMS(<PyArrayObject*>like), _descr(like))


cdef bint _distinct(tuple blobs) noexcept:
    """No blob appears twice in ``blobs``."""
    cdef Py_ssize_t n = PyTuple_GET_SIZE(blobs)
    cdef Py_ssize_t i, j
    for i in range(n):
        for j in range(i + 1, n):
            if blobs[i] is blobs[j]:
                return False
    return True


# -- the operator base -------------------------------------------------------------------


cdef class Kernel:
    """The compiled run path of a built-in operator type (see the module doc)."""

    def bind(self, op):
        """The kernel to use for the operator ``op`` (this one, a copy with state of its
        own, or None when ``op``'s arguments need the general path)."""
        return self

    cdef int run(self, OperatorCore op) except -1:
        return 0


cdef extern from *:
    """
    static inline void scopeops_count_cached(Py_ssize_t *count, Py_ssize_t by) {
    #ifdef Py_GIL_DISABLED
        _Py_atomic_add_ssize(count, by);
    #else
        *count += by;
    #endif
    }
    """
    void _count_cached "scopeops_count_cached"(Py_ssize_t* count, Py_ssize_t by) noexcept nogil


cdef inline void _count_slots(tuple blobs, Py_ssize_t by) noexcept:
    cdef Py_ssize_t k
    for k in range(PyTuple_GET_SIZE(blobs)):
        _count_cached(&(<Blob>blobs[k])._cached_by, by)


cdef inline void _install_blobs(OperatorCore op, tuple ins, tuple outs) noexcept:
    """Make ``ins``/``outs`` (fresh tuples of Blobs, owned by nobody else) the op's
    cached blobs, keeping every blob's count of cache slots exact."""
    _count_slots(ins, 1)
    _count_slots(outs, 1)
    old_in, old_out = op._in_blobs, op._out_blobs
    op._in_blobs = ins
    op._out_blobs = outs
    _count_slots(old_in, -1)
    _count_slots(old_out, -1)


@cython.no_gc_clear      # __dealloc__ needs the cached tuples to give back their counts
cdef class OperatorCore:
    """The compiled base of :class:`scopeops.ops.Operator`: its workspace, definition and
    arguments, the blobs its input and output names resolve to, and blob access."""

    def __cinit__(self, *args, **kwargs):
        self._input_names = ()
        self._output_names = ()
        self._in_blobs = ()
        self._out_blobs = ()
        self._aliased_inputs = frozenset()

    def __dealloc__(self):
        if self._in_blobs is not None:
            _count_slots(self._in_blobs, -1)
        if self._out_blobs is not None:
            _count_slots(self._out_blobs, -1)

    def _attach(self, definition, workspace):
        """Set the definition and workspace (first, when the operator is built)."""
        if not isinstance(workspace, Workspace):
            raise TypeError(f"an operator is built in a Workspace, not "
                            f"{type(workspace).__name__}")
        if self.workspace is not None:
            raise TypeError("an operator is attached to its workspace once")
        inputs = tuple([c_check_name(name) for name in definition.inputs])
        outputs = tuple([c_check_name(name) for name in definition.outputs])
        self.definition = definition
        self.workspace = <Workspace>workspace
        self._input_names = inputs
        self._output_names = outputs

    def _set_blobs(self, inputs, outputs):
        """Cache the blobs the names resolve to now (a resolution's last step)."""
        # Fresh tuples, never the caller's: the op's cache tuples are shared with nobody.
        cdef tuple ins = tuple(list(inputs))
        cdef tuple outs = tuple(list(outputs))
        if len(ins) != len(self._input_names) or len(outs) != len(self._output_names):
            raise ValueError(f"{len(ins)} input and {len(outs)} output blobs for "
                             f"{len(self._input_names)} input and "
                             f"{len(self._output_names)} output names")
        for blob in ins + outs:
            if not isinstance(blob, Blob):
                raise TypeError(f"an operator's inputs and outputs are Blobs, not "
                                f"{type(blob).__name__}")
        # In place is decided by blob identity: two names forwarded to one blob alias.
        aliased = frozenset([i for i, blob in enumerate(ins)
                             if any([blob is out for out in outs])])
        _install_blobs(self, ins, outs)
        self._aliased_inputs = aliased
        self._inplace = bool(aliased)
        self._fresh_at = c_structure_epoch() + 1

    def _set_kernel(self, kernel):
        """Use ``kernel`` (a Kernel, or None for none) as this operator's run path."""
        if kernel is not None and not isinstance(kernel, Kernel):
            raise TypeError(f"a kernel must be a Kernel or None, not {type(kernel).__name__}")
        self._kernel = kernel

    def prepare(self):
        """Make the cached blobs what the names resolve to now (if the workspace
        structure moved since they were resolved)."""
        c_prepare(self)

    @cython.boundscheck(True)
    @cython.wraparound(True)
    def input_blob(self, i):
        """The :class:`Blob` input ``i`` resolved to (when last prepared)."""
        return self._in_blobs[i]

    @cython.boundscheck(True)
    @cython.wraparound(True)
    def output_blob(self, i):
        """The :class:`Blob` output ``i`` resolved to (when last prepared)."""
        return self._out_blobs[i]

    def input_blobs(self):
        """The input blobs, as a new tuple."""
        return tuple(list(self._in_blobs))

    def output_blobs(self):
        """The output blobs, as a new tuple."""
        return tuple(list(self._out_blobs))

    @cython.boundscheck(True)
    @cython.wraparound(True)
    def input(self, i, t=None):
        """The value of input ``i`` (type-checked against ``t`` when given)."""
        cdef Blob blob = <Blob?>self._in_blobs[i]
        if t is None and blob._meta is not None:
            return blob._value
        return blob.get(t)

    @cython.boundscheck(True)
    @cython.wraparound(True)
    def output(self, i, shape=None, dtype=None):
        """Output ``i``: with ``shape`` and ``dtype``, its tensor (buffer reused,
        ``Blob.tensor``); without, the output :class:`Blob` itself."""
        cdef Blob blob = <Blob?>self._out_blobs[i]
        if shape is None:
            return blob
        if self._inplace and blob.dtype is not None \
                and any([b is blob for b in self._in_blobs]) \
                and (blob.shape != tuple(shape) or blob.dtype != dtype):
            # In place with a new shape or dtype: never re-view the buffer of an
            # input the op is still reading. Re-setting the value detaches the
            # buffer (the input stays readable), so tensor() allocates a fresh one.
            blob.set(blob.get())
        return blob.c_tensor(shape, dtype)


cdef int c_prepare(OperatorCore op) except -1:
    cdef unsigned long long now = c_structure_epoch() + 1
    if op._fresh_at == now:
        return 0
    if op._fresh_at != 0 and _refresh(op, now):
        return 0
    (<object>op)._resolve()    # the general resolution, in Python: errors, schema checks, hooks
    return 0


cdef inline object _nth(tuple first, tuple second, Py_ssize_t k):
    """Item ``k`` of ``first + second``, without building it."""
    cdef Py_ssize_t n = PyTuple_GET_SIZE(first)
    return first[k] if k < n else second[k - n]


cdef bint _refresh(OperatorCore op, unsigned long long now) except -1:
    """After the structure moved somewhere: look every name up again (O(1): lookups are
    memoised per workspace). True, with the cache updated, when every name resolves and
    the blobs meet exactly where the cached ones met: then each check of the last
    resolution (the schema's in-place rules, the Do's scope blob, which inputs are also
    outputs) depends only on that pattern and holds as it did. False: resolve anew."""
    cdef Workspace ws = op.workspace
    cdef tuple in_names = op._input_names
    cdef tuple out_names = op._output_names
    cdef tuple old_in = op._in_blobs
    cdef tuple old_out = op._out_blobs
    cdef Py_ssize_t n = PyTuple_GET_SIZE(in_names) + PyTuple_GET_SIZE(out_names)
    cdef Py_ssize_t k, j
    cdef list found = None
    for k in range(n):
        blob = ws.c_find(<str>_nth(in_names, out_names, k))
        if blob is None:
            return False     # an input gone, or an output to create: the general path
        if found is None:
            if blob is _nth(old_in, old_out, k):
                continue
            found = [_nth(old_in, old_out, j) for j in range(k)]
        found.append(blob)
    if found is not None:
        for k in range(n):
            for j in range(k + 1, n):
                if (found[k] is found[j]) != (_nth(old_in, old_out, k) is _nth(old_in, old_out, j)):
                    return False
        _install_blobs(op, tuple(found[:PyTuple_GET_SIZE(in_names)]),
                       tuple(found[PyTuple_GET_SIZE(in_names):]))
    op._fresh_at = now
    return True


# -- the net loop ------------------------------------------------------------------------


cdef class NetCore:
    """The compiled base of :class:`scopeops.ops.NetExecutor`: its operators and the loop
    that runs them."""

    def run(self):
        """Run every operator in order; a failure raises OperatorError naming the op."""
        c_run_net(self)


cdef int c_run_net(NetCore net) except -1:
    cdef list ops = net.operators
    cdef Py_ssize_t i = 0
    cdef OperatorCore op
    cdef Kernel kernel
    if ops is None:
        raise TypeError("this net has no operators list")
    # Nets nest (a Do's sub-net runs inside its op): C recursion counts as Python's.
    Py_EnterRecursiveCall(" while running a net")
    try:
        while i < PyList_GET_SIZE(ops):
            item = ops[i]
            if not isinstance(item, OperatorCore):
                raise TypeError(f"a net runs operators, not {type(item).__name__}")
            op = <OperatorCore>item
            if op._fresh_at != c_structure_epoch() + 1:
                c_prepare(op)
            kernel = op._kernel
            if kernel is None or not kernel.run(op):
                _run_undoing_new_values(op, item)
            i += 1
    except Exception as exc:
        replacement = (<object>net)._failure(i, exc)
        if replacement is None:
            raise
        raise replacement from exc
    finally:
        Py_LeaveRecursiveCall()
    return 0


cdef int _run_undoing_new_values(OperatorCore op, object item) except -1:
    """``item.run()`` (an operator's Python path). When it raises, each output blob it
    gave a new value (a tensor retyped or reallocated, a value replaced) holds its old
    one again: an op refused halfway leaves its outputs as they were. Data written into
    an output's own array, in place, stays written."""
    cdef tuple outs = op._out_blobs
    cdef Py_ssize_t n = PyTuple_GET_SIZE(outs) if outs is not None else 0
    cdef Py_ssize_t k
    cdef Blob blob
    if n == 0:
        item.run()
        return 0
    saved = []
    for k in range(n):
        blob = <Blob>outs[k]
        saved.append((blob, blob._value, blob._buffer, blob._capacity, blob._meta,
                      blob._is_tensor, blob._dtype_code))
    try:
        item.run()
    except BaseException:
        dropped = []     # the values the op made die after every blob is restored
        for entry in reversed(saved):
            blob = <Blob>entry[0]
            if blob._value is not entry[1] or blob._buffer is not entry[2]:
                dropped.append((blob._value, blob._buffer))
                blob._value, blob._buffer, blob._capacity = entry[1], entry[2], entry[3]
                blob._meta, blob._is_tensor, blob._dtype_code = entry[4], entry[5], entry[6]
        del dropped
        raise
    return 0


cdef int _holds(object condition, object op, object blob, str what) except -1:
    """1 or 0: the one-element bool tensor in ``blob``, read in C when it is a plain
    array; anything else goes to ``condition`` (control.py's), which says what is wrong."""
    cdef Blob b = <Blob>blob
    cdef PyArrayObject* arr
    if b._is_tensor:
        value = b._value
        if PyArray_CheckExact(value):
            arr = <PyArrayObject*>value
            if PyArray_TYPE(arr) == NPY_BOOL and PyArray_SIZE(arr) == 1:
                return (<char*>PyArray_DATA(arr))[0] != 0
    return 1 if condition(op, blob, what) else 0


cdef inline int _run_executor(object executor) except -1:
    if isinstance(executor, NetCore) and type(executor).run is NetCore.run:
        c_run_net(<NetCore>executor)
    else:
        executor.run()
    return 0


# -- kernels -----------------------------------------------------------------------------


@cython.final
cdef class CopyKernel(Kernel):
    """Copy, CopyOnDeviceLike, StopGradient: output 0 becomes a copy of input 0."""

    cdef int run(self, OperatorCore op) except -1:
        cdef tuple ins = op._in_blobs
        cdef tuple outs = op._out_blobs
        if PyTuple_GET_SIZE(ins) < 1 or PyTuple_GET_SIZE(outs) != 1 or ins[0] is outs[0]:
            return 0
        x = _plain(ins[0])
        if x is None or not _kind(x):
            return 0
        out = _own_like(outs[0], x)
        if out is None:
            return 0
        if out is x:
            return 1
        if not (PyArray_IS_C_CONTIGUOUS(<PyArrayObject*>x)
                and PyArray_IS_C_CONTIGUOUS(<PyArrayObject*>out)):
            return 0
        # Same shape, same plain dtype, both contiguous: np.copyto is this memmove.
        memmove(PyArray_DATA(<PyArrayObject*>out), PyArray_DATA(<PyArrayObject*>x),
                PyArray_NBYTES(<PyArrayObject*>x))
        return 1


cdef int _KINDS_ANY = 0
cdef int _KINDS_NUMERIC = 1     # NumericOperator.numeric_input: int or float
cdef int _KINDS_FLOAT = 2       # NumericOperator.float_input


cdef inline bint _kind_ok(char kind, int kinds) noexcept:
    if kind == 0:
        return False
    if kinds == _KINDS_FLOAT:
        return kind == c'f'
    if kinds == _KINDS_NUMERIC:
        return kind == c'i' or kind == c'u' or kind == c'f'
    return True


@cython.final
cdef class UnaryUfunc(Kernel):
    """``out = ufunc(x)`` in x's shape, in x's dtype or (``bool_out``) as bools."""

    cdef object ufunc
    cdef int kinds
    cdef bint bool_out

    def __init__(self, ufunc, kinds="any", bool_out=False):
        self.ufunc = ufunc
        self.kinds = {"any": _KINDS_ANY, "numeric": _KINDS_NUMERIC,
                      "float": _KINDS_FLOAT}[kinds]
        self.bool_out = bool(bool_out)

    cdef int run(self, OperatorCore op) except -1:
        cdef tuple ins = op._in_blobs
        cdef tuple outs = op._out_blobs
        if PyTuple_GET_SIZE(ins) != 1 or PyTuple_GET_SIZE(outs) != 1:
            return 0
        x = _plain(ins[0])
        if x is None or not _kind_ok(_kind(x), self.kinds):
            return 0
        out = _own_output(outs[0], PyArray_NDIM(<PyArrayObject*>x),
                          PyArray_DIMS(<PyArrayObject*>x),
                          <PyObject*>_BOOL_DESCR if self.bool_out else _descr(x))
        if out is None:
            return 0
        _call1(self.ufunc, x, out)
        return 1


@cython.final
cdef class BinaryUfunc(Kernel):
    """``out = ufunc(a, b)`` for a and b of one shape and one dtype (numpy broadcasting
    off the fast path), in that dtype or (``bool_out``) as bools; ``floor_ints``: Div,
    whose integer quotient is numpy's floor division."""

    cdef object ufunc
    cdef bint bool_out
    cdef bint floor_ints

    def __init__(self, ufunc, bool_out=False, floor_ints=False):
        self.ufunc = ufunc
        self.bool_out = bool(bool_out)
        self.floor_ints = bool(floor_ints)

    def bind(self, op):
        # Caffe2's broadcasting (broadcast=1) takes the general path.
        return self if getattr(op, "broadcast_axis", None) is None else None

    cdef int run(self, OperatorCore op) except -1:
        cdef tuple ins = op._in_blobs
        cdef tuple outs = op._out_blobs
        cdef char kind
        if PyTuple_GET_SIZE(ins) != 2 or PyTuple_GET_SIZE(outs) != 1:
            return 0
        a = _plain(ins[0])
        b = _plain(ins[1])
        if a is None or b is None or _descr(a) != _descr(b) or not same_shape(a, b):
            return 0
        kind = _kind(a)
        if not kind:
            return 0
        out = _own_output(outs[0], PyArray_NDIM(<PyArrayObject*>a),
                          PyArray_DIMS(<PyArrayObject*>a),
                          <PyObject*>_BOOL_DESCR if self.bool_out else _descr(a))
        if out is None:
            return 0
        if self.floor_ints and (kind == c'b' or kind == c'i' or kind == c'u'):
            _call2(_np_floor_divide, a, b, out)
        else:
            _call2(self.ufunc, a, b, out)
        return 1


cdef bint _fc_default_axes(object op):
    args = op.args
    return type(args) is dict and args.get("axis") == 1 and args.get("axis_w") == 1 \
        and type(args.get("axis")) is int and type(args.get("axis_w")) is int


@cython.final
cdef class FCKernel(Kernel):
    """FC on matrices: y = x @ w.T + b."""

    def bind(self, op):
        return self if _fc_default_axes(op) else None

    cdef int run(self, OperatorCore op) except -1:
        cdef tuple ins = op._in_blobs
        cdef tuple outs = op._out_blobs
        cdef npy_intp dims[2]
        cdef PyArrayObject* px
        cdef PyArrayObject* pw
        cdef PyArrayObject* pb
        if PyTuple_GET_SIZE(ins) != 3 or PyTuple_GET_SIZE(outs) != 1:
            return 0
        x = _plain(ins[0])
        w = _plain(ins[1])
        b = _plain(ins[2])
        if x is None or w is None or b is None:
            return 0
        if _descr(x) != _descr(w) or _descr(x) != _descr(b) or not _numeric(_kind(x)):
            return 0
        px, pw, pb = <PyArrayObject*>x, <PyArrayObject*>w, <PyArrayObject*>b
        if PyArray_NDIM(px) != 2 or PyArray_NDIM(pw) != 2 or PyArray_NDIM(pb) != 1:
            return 0
        if PyArray_DIMS(px)[1] != PyArray_DIMS(pw)[1] \
                or PyArray_DIMS(pb)[0] != PyArray_DIMS(pw)[0]:
            return 0
        dims[0] = PyArray_DIMS(px)[0]
        dims[1] = PyArray_DIMS(pw)[0]
        y = _own_output(outs[0], 2, dims, _descr(x))
        if y is None:
            return 0
        _call2(_np_matmul, x, PyArray_Transpose(pw, NULL), y)
        _call2(_np_add, y, b, y)
        return 1


@cython.final
cdef class FCGradientKernel(Kernel):
    """FCGradient on matrices: dw = dy.T @ x, db = dy summed over rows, dx = dy @ w."""

    def bind(self, op):
        return self if _fc_default_axes(op) else None

    cdef int run(self, OperatorCore op) except -1:
        cdef tuple ins = op._in_blobs
        cdef tuple outs = op._out_blobs
        cdef Py_ssize_t n_out = PyTuple_GET_SIZE(outs)
        cdef PyArrayObject* px
        cdef PyArrayObject* pw
        cdef PyArrayObject* pdy
        # An input that is also an output is copied first by the general path.
        if PyTuple_GET_SIZE(ins) != 3 or not (n_out == 2 or n_out == 3) or op._inplace \
                or not _distinct(outs):
            return 0
        x = _plain(ins[0])
        w = _plain(ins[1])
        dy = _plain(ins[2])
        if x is None or w is None or dy is None:
            return 0
        if _descr(x) != _descr(w) or _descr(x) != _descr(dy) or not _numeric(_kind(x)):
            return 0
        px, pw, pdy = <PyArrayObject*>x, <PyArrayObject*>w, <PyArrayObject*>dy
        if PyArray_NDIM(px) != 2 or PyArray_NDIM(pw) != 2 or PyArray_NDIM(pdy) != 2:
            return 0
        if PyArray_DIMS(px)[1] != PyArray_DIMS(pw)[1] \
                or PyArray_DIMS(pdy)[0] != PyArray_DIMS(px)[0] \
                or PyArray_DIMS(pdy)[1] != PyArray_DIMS(pw)[0]:
            return 0
        dw = _own_like(outs[0], w)
        db = _own_output(outs[1], 1, PyArray_DIMS(pw), _descr(x))
        dx = _own_like(outs[2], x) if n_out == 3 else None
        if dw is None or db is None or (n_out == 3 and dx is None):
            return 0
        _call2(_np_matmul, PyArray_Transpose(pdy, NULL), x, dw)
        _sum_rows(dy, db)
        if n_out == 3:
            _call2(_np_matmul, dy, w, dx)
        return 1


@cython.final
cdef class TanhGradientKernel(Kernel):
    """TanhGradient: dx = dy * (1 - y * y). The slope is computed in dx itself when dx is
    neither y nor dy (the same float operations, one buffer fewer to sweep), else in a
    scratch buffer of the op's own."""

    cdef object slope

    def bind(self, op):
        return TanhGradientKernel()

    cdef int run(self, OperatorCore op) except -1:
        cdef tuple ins = op._in_blobs
        cdef tuple outs = op._out_blobs
        if PyTuple_GET_SIZE(ins) != 2 or PyTuple_GET_SIZE(outs) != 1:
            return 0
        y = _plain(ins[0])
        dy = _plain(ins[1])
        if y is None or dy is None or _descr(y) != _descr(dy) or _kind(y) != c'f' \
                or not same_shape(y, dy):
            return 0
        out = _own_like(outs[0], y)
        if out is None:
            return 0
        if out is not y and out is not dy:
            slope = out
        else:
            slope = self.slope
            if slope is None or _descr(slope) != _descr(y) or not same_shape(slope, y):
                slope = _np_empty(y.shape, y.dtype)
                self.slope = slope
        _call2(_np_multiply, y, y, slope)
        _call2(_np_subtract, _ONE, slope, slope)
        _call2(_np_multiply, dy, slope, out)
        return 1


@cython.final
cdef class MulGradientKernel(Kernel):
    """MulGradient without broadcasting: da = dz * b, db = dz * a."""

    cdef int run(self, OperatorCore op) except -1:
        cdef tuple ins = op._in_blobs
        cdef tuple outs = op._out_blobs
        if PyTuple_GET_SIZE(ins) != 3 or PyTuple_GET_SIZE(outs) != 2 or op._inplace \
                or outs[0] is outs[1]:
            return 0
        a = _plain(ins[0])
        b = _plain(ins[1])
        dz = _plain(ins[2])
        if a is None or b is None or dz is None:
            return 0
        if _descr(a) != _descr(b) or _descr(a) != _descr(dz) or not _numeric(_kind(a)) \
                or not same_shape(a, b) or not same_shape(a, dz):
            return 0
        da = _own_like(outs[0], a)
        db = _own_like(outs[1], a)
        if da is None or db is None:
            return 0
        _call2(_np_multiply, dz, b, da)
        _call2(_np_multiply, dz, a, db)
        return 1


@cython.final
cdef class SumKernel(Kernel):
    """Sum of two or more tensors of one shape and one dtype."""

    cdef int run(self, OperatorCore op) except -1:
        cdef tuple ins = op._in_blobs
        cdef tuple outs = op._out_blobs
        cdef Py_ssize_t n = PyTuple_GET_SIZE(ins)
        cdef Py_ssize_t k
        cdef list xs
        cdef Py_ssize_t aliased
        if n < 2 or PyTuple_GET_SIZE(outs) != 1:
            return 0
        first = _plain(ins[0])
        if first is None or not _kind(first):
            return 0
        xs = [first]
        for k in range(1, n):
            x = _plain(ins[k])
            if x is None or _descr(x) != _descr(first) or not same_shape(x, first):
                return 0
            xs.append(x)
        out = _own_like(outs[0], first)
        if out is None:
            return 0
        if n == 2:
            a, b = xs[0], xs[1]
            if out is b:
                a, b = b, a
            _call2(_np_add, a, b, out)
            return 1
        aliased = 0
        for x in xs:
            if x is out:
                aliased += 1
        if aliased > 1:
            return 0     # the general path scales the output by the count first
        if aliased == 1:
            # Accumulating in place (gradients of a blob used at many steps).
            for x in xs:
                if x is not out:
                    _call2(_np_add, out, x, out)
            return 1
        _call2(_np_add, xs[0], xs[1], out)
        for k in range(2, n):
            _call2(_np_add, out, xs[k], out)
        return 1


@cython.final
cdef class AveragedLossKernel(Kernel):
    """AveragedLoss: the mean of a floating-point tensor, as a scalar tensor."""

    cdef int run(self, OperatorCore op) except -1:
        cdef tuple ins = op._in_blobs
        cdef tuple outs = op._out_blobs
        if PyTuple_GET_SIZE(ins) != 1 or PyTuple_GET_SIZE(outs) != 1:
            return 0
        x = _plain(ins[0])
        if x is None or _kind(x) != c'f':
            return 0
        out = _own_output(outs[0], 0, NULL, _descr(x))
        if out is None:
            return 0
        _mean(x, out)
        return 1


@cython.final
cdef class HasScopeKernel(Kernel):
    """HasScope: whether the stack in the scope blob (input 0) has a workspace pushed,
    into an output that already holds a bool tensor of shape (1,) of its own."""

    cdef int run(self, OperatorCore op) except -1:
        cdef tuple ins = op._in_blobs
        cdef tuple outs = op._out_blobs
        cdef npy_intp one = 1
        cdef Blob scope
        if PyTuple_GET_SIZE(ins) != 1 or PyTuple_GET_SIZE(outs) != 1:
            return 0
        scope = <Blob>ins[0]
        if scope._meta is None or type(scope._value) is not WorkspaceStack:
            return 0
        out = _own_output(outs[0], 1, &one, <PyObject*>_BOOL_DESCR)
        if out is None:
            return 0
        (<unsigned char*>PyArray_DATA(<PyArrayObject*>out))[0] = \
            (<WorkspaceStack>scope._value)._top >= 0
        return 1


cdef inline object _built_net(dict nets, str name):
    """The net built under ``name`` in a workspace's net table, if it is one (not a
    NetDef still to build, see scopeops.Workspace.get_net); else None."""
    if nets is None:
        return None
    cdef PyObject* found = PyDict_GetItem(nets, name)
    if found == NULL or not isinstance(<object>found, NetCore):
        return None
    return <object>found


@cython.final
cdef class DoKernel(Kernel):
    """Do's usual path: push (or pop, for a gradient Do) on the scope blob's stack, run
    the sub-net kept in the child workspace, snapshot the bound blobs if asked.

    First runs, a growth check due, a stack seen for the first time, an empty stack, a
    new scope blob and reuse_workspace take DoOp.run(), which does everything."""

    cdef dict bindings
    cdef bint is_gradient
    cdef bint reuse_workspace
    cdef bint copy_external_blobs
    cdef object subnet
    cdef str subnet_name
    cdef list forwarded_inner

    def bind(self, op):
        subnet = op.subnet
        if not subnet.name or op.reuse_workspace:
            return None      # an unnamed sub-net is rebuilt every run: the general path
        kernel = DoKernel()
        kernel.bindings = c_normalize_bindings(op.bindings)
        kernel.is_gradient = bool(op.is_gradient)
        kernel.copy_external_blobs = bool(op.copy_external_blobs)
        kernel.subnet = subnet
        kernel.subnet_name = c_check_name(subnet.name)
        kernel.forwarded_inner = list(dict.fromkeys(c_check_name(name)
                                                    for name in op.forwarded_inner))
        return kernel

    cdef int run(self, OperatorCore op) except -1:
        cdef tuple outs = op._out_blobs
        cdef Py_ssize_t n = PyTuple_GET_SIZE(outs)
        cdef Blob scope
        cdef WorkspaceStack stack
        cdef Py_ssize_t depth
        if n == 0:
            return 0
        scope = <Blob>outs[n - 1]
        if scope._meta is None or type(scope._value) is not WorkspaceStack:
            return 0
        stack = <WorkspaceStack>scope._value
        parent = op.workspace
        if parent is None:
            return 0
        depth = stack._top + 1
        if self.is_gradient:
            if (<object>op)._stack_seen is not stack:
                return 0
            # pop_gradient_workspace(parent, bindings) with the bindings normalised once
            with cython.critical_section(stack):
                child = stack.c_pop(parent, self.bindings)
            if child is None:
                return 0     # nothing was popped: the general path raises
        else:
            if depth >= (<object>op)._warn_at:
                return 0
            with cython.critical_section(stack):
                child = stack.c_push_bound(<Workspace>parent, self.bindings)
        try:
            executor = _built_net((<Workspace>child)._nets, self.subnet_name)
            if executor is None:
                executor = child.get_net(self.subnet_name)
            if executor is None:
                executor = child.create_net(self.subnet, overwrite=True)
            _run_executor(executor)
        except Exception:
            # Leave the scope stack exactly as we found it (as DoOp.run does).
            if self.is_gradient:
                while stack._top + 1 < depth:
                    stack._undo_pop()
            else:
                while stack._top + 1 > depth:
                    stack.pop_gradient_workspace(parent)
            raise
        if not self.is_gradient and self.copy_external_blobs:
            c_copy_forwarded(<Workspace>child, self.forwarded_inner)
        return 1


@cython.final
cdef class IfKernel(Kernel):
    """If: run then_net or else_net by the condition in input 0."""

    cdef object condition
    cdef object then_net
    cdef object else_net

    def __init__(self, condition=None):
        self.condition = condition

    def bind(self, op):
        kernel = IfKernel(self.condition)
        kernel.then_net = op.then_net
        kernel.else_net = op.else_net
        return kernel

    cdef int run(self, OperatorCore op) except -1:
        if PyTuple_GET_SIZE(op._in_blobs) < 1:
            return 0
        if _holds(self.condition, op, op._in_blobs[0], "If"):
            _run_executor(self.then_net)
        elif self.else_net is not None:
            _run_executor(self.else_net)
        return 1


@cython.final
cdef class WhileKernel(Kernel):
    """While: run cond_net (if any), read the condition blob, run loop_net, until false."""

    cdef object condition
    cdef object loop_net
    cdef object cond_net

    def __init__(self, condition=None):
        self.condition = condition

    def bind(self, op):
        kernel = WhileKernel(self.condition)
        kernel.loop_net = op.loop_net
        kernel.cond_net = op.cond_net
        return kernel

    cdef int run(self, OperatorCore op) except -1:
        cdef Workspace ws = op.workspace
        cdef str cond_name
        if PyTuple_GET_SIZE(op._input_names) < 1:
            return 0
        cond_name = <str>op._input_names[0]
        while True:
            if self.cond_net is not None:
                _run_executor(self.cond_net)
            blob = ws.c_find(cond_name)
            if blob is None:
                raise OperatorError(f"Invalid condition in While operator: blob "
                                    f"{cond_name} is gone")
            if not _holds(self.condition, op, blob, "While"):
                return 1
            _run_executor(self.loop_net)
