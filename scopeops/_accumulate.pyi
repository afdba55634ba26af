from typing import Any, TypeVar

import numpy as np

from scopeops._blob import Blob

_T = TypeVar("_T", np.ndarray[Any, Any], Blob)

# dst and src: float16/32/64 ndarrays or tensor Blobs of one shape and dtype.
# cpdef; scale: double
def accumulate(dst: _T, src: np.ndarray[Any, Any] | Blob, scale: float = 1.0) -> _T: ...
def _f16c_kernel(enabled: bool | None = None) -> bool: ...
