"""Gradient accumulation: ``dst += scale * src`` in place, in typed loops without the GIL.

The fast path covers what gradients are: two float16, float32 or float64 arrays
of one shape and one layout (both C- or both Fortran-contiguous), aligned and in
native byte order. It runs one fused pass (numpy's ``add(dst, scale*src,
out=dst)`` makes two and allocates a temporary) with the GIL released, so
threads accumulating into different arrays run in parallel. Anything else that
is valid (strided views, mixed layouts, byte-swapped data, partly overlapping
arrays) is computed by numpy with the same rounding; numpy releases the GIL in
its own loops.

float16 elements are widened to float32, combined there and rounded once to
float16 (round-to-nearest-even), which is at least as accurate as numpy, whose
``scale * src`` is rounded to float16 before the addition.
"""

cimport cython
from libc.stdint cimport uint16_t

import numpy as np

from scopeops._blob cimport Blob
from scopeops._npy cimport (
    PyArrayObject, _import_array, PyArray_DATA, PyArray_SIZE,
    PyArray_NBYTES, PyArray_IS_C_CONTIGUOUS, PyArray_ISWRITEABLE, PyArray_ISALIGNED,
    PyArray_Check, PyArray_TYPE, PyArray_IS_F_CONTIGUOUS, PyArray_ISNOTSWAPPED,
    plain_array, array_dtype, array_shape, same_shape,
)
from scopeops._types cimport DTypeCode, DT_FLOAT16, DT_FLOAT32, DT_FLOAT64
from scopeops.errors import BlobTypeError

_import_array()

cdef extern from "numpy/arrayobject.h":
    enum:
        NPY_HALF
        NPY_FLOAT
        NPY_DOUBLE

cdef extern from *:
    """
    /* IEEE binary16 <-> binary32, exact widening and round-to-nearest-even
       narrowing, without libnpymath (F. Giesen's public-domain formulation). */
    #include <stdint.h>
    #include <string.h>

    static inline float scopeops_half_to_float(uint16_t h) {
        uint32_t bits = ((uint32_t)h & 0x7fffu) << 13;
        uint32_t exponent = bits & 0x0f800000u;
        float f;
        bits += (uint32_t)(127 - 15) << 23;
        if (exponent == 0x0f800000u) {            /* Inf or NaN */
            bits += (uint32_t)(128 - 16) << 23;
        } else if (exponent == 0) {               /* zero or subnormal: renormalise */
            bits += 1u << 23;
            memcpy(&f, &bits, 4);
            f -= 6.103515625e-05f;                /* 2^-14 */
            memcpy(&bits, &f, 4);
        }
        bits |= ((uint32_t)h & 0x8000u) << 16;
        memcpy(&f, &bits, 4);
        return f;
    }

    static inline uint16_t scopeops_float_to_half(float value) {
        uint32_t bits, sign;
        uint16_t out;
        memcpy(&bits, &value, 4);
        sign = bits & 0x80000000u;
        bits ^= sign;
        if (bits >= 0x47800000u) {                /* >= 2^16: Inf, or NaN (kept quiet) */
            out = bits > 0x7f800000u ? 0x7e00u : 0x7c00u;
        } else if (bits < 0x38800000u) {          /* < 2^-14: subnormal or zero */
            float f;
            const float magic = 0.5f;             /* aligns the 10 mantissa bits at the bottom */
            memcpy(&f, &bits, 4);
            f += magic;                           /* the FPU rounds to nearest even here */
            memcpy(&bits, &f, 4);
            out = (uint16_t)(bits - 0x3f000000u);
        } else {
            uint32_t odd = (bits >> 13) & 1u;
            bits += ((uint32_t)(15 - 127) << 23) + 0xfffu + odd;
            out = (uint16_t)(bits >> 13);
        }
        return (uint16_t)(out | (sign >> 16));
    }

    /* x86 with F16C: eight halves per step, chosen at run time (ifunc-free). */
    #if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) \\
        && !defined(SCOPEOPS_NO_F16C)
    #include <immintrin.h>
    #define SCOPEOPS_HAVE_F16C_KERNEL 1
    __attribute__((target("avx,f16c")))
    static Py_ssize_t scopeops_axpy_half_f16c(uint16_t* dst, const uint16_t* src,
                                              Py_ssize_t n, float scale) {
        Py_ssize_t i = 0;
        __m256 k = _mm256_set1_ps(scale);
        for (; i + 8 <= n; i += 8) {
            __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(dst + i)));
            __m256 s = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(src + i)));
            d = _mm256_add_ps(d, _mm256_mul_ps(k, s));
            _mm_storeu_si128((__m128i*)(dst + i), _mm256_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT));
        }
        return i;   /* elements done; the caller finishes the tail */
    }
    static int scopeops_cpu_has_f16c(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
    }
    #else
    #define SCOPEOPS_HAVE_F16C_KERNEL 0
    static Py_ssize_t scopeops_axpy_half_f16c(uint16_t* dst, const uint16_t* src,
                                              Py_ssize_t n, float scale) {
        (void)dst; (void)src; (void)n; (void)scale;
        return 0;
    }
    static int scopeops_cpu_has_f16c(void) { return 0; }
    #endif
    """
    float _half_to_float "scopeops_half_to_float"(uint16_t h) noexcept nogil
    uint16_t _float_to_half "scopeops_float_to_half"(float value) noexcept nogil
    Py_ssize_t _axpy_half_f16c "scopeops_axpy_half_f16c"(
        uint16_t* dst, const uint16_t* src, Py_ssize_t n, float scale) noexcept nogil
    int _cpu_has_f16c "scopeops_cpu_has_f16c"() noexcept nogil


cdef enum:
    # A block is one 16-byte SIMD register of elements, read whole before it is
    # written: the C compiler then vectorises the fixed-length inner loops at -O2
    # without proving that dst and src do not alias (they may be the same array).
    # Longer blocks spill to the stack and run slower.
    BLOCK_BYTES = 16
    BLOCK = 4               # float32 elements per block (the largest count)
    # Below this many elements the GIL stays held: releasing and re-taking it
    # costs more than the loop, and a busy interpreter could delay the re-take.
    NOGIL_MIN_ELEMENTS = 8192

cdef bint _use_f16c = _cpu_has_f16c()

ctypedef fused real_t:
    float
    double


cdef void _axpy_real(real_t* dst, const real_t* src, Py_ssize_t n, real_t scale) noexcept nogil:
    cdef real_t block[BLOCK]
    cdef Py_ssize_t width = BLOCK_BYTES // sizeof(real_t)   # a constant once specialised
    cdef Py_ssize_t full = n - n % width
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t j
    if scale == 1:
        # 1 * x == x exactly: the same sums as numpy's add(dst, src, out=dst).
        while i < full:
            for j in range(width):
                block[j] = dst[i + j] + src[i + j]
            for j in range(width):
                dst[i + j] = block[j]
            i += width
        while i < n:
            dst[i] = dst[i] + src[i]
            i += 1
    else:
        while i < full:
            for j in range(width):
                block[j] = dst[i + j] + scale * src[i + j]
            for j in range(width):
                dst[i + j] = block[j]
            i += width
        while i < n:
            dst[i] = dst[i] + scale * src[i]
            i += 1


cdef void _axpy_half(uint16_t* dst, const uint16_t* src, Py_ssize_t n, float scale) noexcept nogil:
    cdef float block[BLOCK]
    cdef Py_ssize_t full
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t j
    if _use_f16c:
        i = _axpy_half_f16c(dst, src, n, scale)
    full = i + (n - i) - (n - i) % BLOCK
    while i < full:
        for j in range(BLOCK):
            block[j] = _half_to_float(dst[i + j]) + scale * _half_to_float(src[i + j])
        for j in range(BLOCK):
            dst[i + j] = _float_to_half(block[j])
        i += BLOCK
    while i < n:
        dst[i] = _float_to_half(_half_to_float(dst[i]) + scale * _half_to_float(src[i]))
        i += 1


cdef int _raise_dtype_code(DTypeCode dtype) except -1:
    raise TypeError(f"accumulate works on float16, float32 and float64 only (dtype code {dtype})")


cdef int c_accumulate(void* dst, const void* src, Py_ssize_t n, DTypeCode dtype,
                      double scale) except -1 nogil:
    """dst[:n] += scale * src[:n] for contiguous elements of ``dtype``."""
    if dtype == DT_FLOAT32:
        _axpy_real(<float*>dst, <const float*>src, n, <float>scale)
    elif dtype == DT_FLOAT64:
        _axpy_real(<double*>dst, <const double*>src, n, scale)
    elif dtype == DT_FLOAT16:
        _axpy_half(<uint16_t*>dst, <const uint16_t*>src, n, <float>scale)
    else:
        with gil:
            _raise_dtype_code(dtype)
    return 0


# -- the Python entry point -------------------------------------------------------------------


cdef object _array_of(object value, str role):
    """The ndarray behind ``value`` (an ndarray or a tensor Blob); TypeError otherwise."""
    cdef Blob blob
    if PyArray_Check(value):
        return value
    if isinstance(value, Blob):
        blob = <Blob>value
        if blob._is_tensor:
            return blob._value
        have = "nothing (empty blob)" if blob._meta is None else blob._meta.name
        label = "" if blob.name is None else f" {blob.name}"
        raise BlobTypeError(f"accumulate needs a tensor in {role}: blob{label} holds {have}")
    raise TypeError(f"accumulate takes numpy arrays or tensor Blobs, not "
                    f"{type(value).__name__} ({role})")


cdef int _float_code(PyArrayObject* arr, object array, str role) except -1:
    cdef int num = PyArray_TYPE(arr)
    if num == NPY_FLOAT:
        return DT_FLOAT32
    if num == NPY_DOUBLE:
        return DT_FLOAT64
    if num == NPY_HALF:
        return DT_FLOAT16
    raise TypeError(f"accumulate works on float16, float32 and float64 only; {role} has "
                    f"dtype {array_dtype(array)}")


cdef object _accumulate_with_numpy(object dst, object src, double scale, DTypeCode code):
    """The general path (strides, layouts, byte order, overlap), rounded like the fast path.
    On plain ndarray views: numpy never dispatches to a subclass's overrides, and reads
    the real dtype."""
    dst = plain_array(dst)
    src = plain_array(src)
    if code == DT_FLOAT16:
        wide = src.astype(np.float32)
        if scale != 1.0:
            np.multiply(wide, np.float32(scale), out=wide)
        np.add(wide, dst, out=wide)
        np.copyto(dst, wide, casting="same_kind")
    elif scale == 1.0:
        np.add(dst, src, out=dst)   # numpy buffers overlapping operands itself
    else:
        np.add(dst, np.multiply(src, dst.dtype.type(scale)), out=dst)


@cython.always_allow_keywords(True)
cpdef object accumulate(object dst, object src, double scale=1.0):
    """``dst += scale * src`` in place; returns ``dst``.

    Parameters
    ----------
    dst, src : numpy.ndarray or Blob
        float16, float32 or float64 arrays, or tensor :class:`~scopeops.Blob` objects,
        of the same shape and element type (in either byte order: a byte-swapped
        operand is read or written correctly). ``src`` may be ``dst`` itself.
    scale : float
        The factor applied to ``src``. Rounded to the arrays' precision first for
        float32 (as numpy does); float16 is computed in float32 and rounded once.

    Raises
    ------
    TypeError
        An argument is neither an array nor a tensor blob
        (:class:`~scopeops.BlobTypeError` for a blob holding something else), a
        dtype is not float16/32/64, or the element types differ.
    ValueError
        The shapes differ, or ``dst`` is read-only.

    Nothing is written when an error is raised. Contiguous operands of one
    layout take a typed loop that runs with the GIL released (from 8192
    elements on); other valid operands are computed by numpy. Operands are read
    as C-level arrays: an ndarray subclass's Python-level attributes and numpy
    overrides (``__array_ufunc__``...) are never used; ``dst`` itself is returned.
    """
    cdef object dst_array = _array_of(dst, "dst")
    cdef object src_array = _array_of(src, "src")
    cdef PyArrayObject* d = <PyArrayObject*>dst_array
    cdef PyArrayObject* s = <PyArrayObject*>src_array
    cdef DTypeCode code = <DTypeCode>_float_code(d, dst_array, "dst")
    cdef DTypeCode src_code = <DTypeCode>_float_code(s, src_array, "src")
    cdef Py_ssize_t n
    cdef Py_ssize_t nbytes
    cdef char* dst_data
    cdef char* src_data
    if code != src_code:
        raise TypeError(f"accumulate needs one dtype: dst is {array_dtype(dst_array)}, "
                        f"src is {array_dtype(src_array)}")
    if not same_shape(dst_array, src_array):
        raise ValueError(f"accumulate needs one shape: dst is {array_shape(dst_array)}, "
                         f"src is {array_shape(src_array)}")
    if not PyArray_ISWRITEABLE(d):
        raise ValueError(f"accumulate cannot write into a read-only dst "
                         f"(dtype {array_dtype(dst_array)}, shape {array_shape(dst_array)})")
    n = PyArray_SIZE(d)
    if n == 0:
        return dst
    dst_data = <char*>PyArray_DATA(d)
    src_data = <char*>PyArray_DATA(s)
    nbytes = PyArray_NBYTES(d)
    if (((PyArray_IS_C_CONTIGUOUS(d) and PyArray_IS_C_CONTIGUOUS(s))
            or (PyArray_IS_F_CONTIGUOUS(d) and PyArray_IS_F_CONTIGUOUS(s)))
            and PyArray_ISALIGNED(d) and PyArray_ISALIGNED(s)
            and PyArray_ISNOTSWAPPED(d) and PyArray_ISNOTSWAPPED(s)
            and (dst_data == src_data
                 or dst_data >= src_data + nbytes or src_data >= dst_data + nbytes)):
        # dst_array and src_array stay referenced here, so the buffers outlive the loop.
        if n >= NOGIL_MIN_ELEMENTS:
            with nogil:
                c_accumulate(dst_data, src_data, n, code, scale)
        else:
            c_accumulate(dst_data, src_data, n, code, scale)
    else:
        _accumulate_with_numpy(dst_array, src_array, scale, code)
    return dst


def _f16c_kernel(enabled=None):
    """Whether float16 takes the F16C kernel; ``enabled`` switches it (tests cover
    the portable conversions this way). False where the CPU or build has none."""
    global _use_f16c
    if enabled is not None:
        _use_f16c = bool(enabled) and _cpu_has_f16c()
    return _use_f16c
