# Gradient accumulation: dst += scale * src in place, in typed loops without the GIL.
from scopeops._types cimport DTypeCode

# The Python entry point, also callable from Cython without a Python call.
cpdef object accumulate(object dst, object src, double scale=*)

# C-level kernel: ``n`` contiguous elements of ``dtype`` (DT_FLOAT16/32/64) at
# ``dst`` += scale * those at ``src``. ``dst`` and ``src`` may be the same pointer
# but must not overlap otherwise. -1 (exception set, the GIL taken only on that
# branch) for any other dtype.
cdef int c_accumulate(void* dst, const void* src, Py_ssize_t n, DTypeCode dtype,
                      double scale) except -1 nogil
