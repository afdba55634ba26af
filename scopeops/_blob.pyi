from typing import Any, NoReturn, final

import numpy as np
from numpy.typing import DTypeLike

from scopeops._types import TypeMeta

_Shape = int | tuple[int, ...] | list[int]

@final
class Blob:
    @property
    def name(self) -> str | None: ...  # object
    def __init__(self) -> None: ...
    @property
    def meta(self) -> TypeMeta | None: ...  # TypeMeta
    def is_empty(self) -> bool: ...
    def is_type(self, t: object) -> bool: ...
    def get(self, t: object = None) -> Any: ...
    def set(self, value: object) -> None: ...
    def reset(self) -> None: ...
    @property
    def dtype(self) -> np.dtype[Any] | None: ...
    @property
    def shape(self) -> tuple[int, ...] | None: ...
    @property
    def nbytes(self) -> int: ...  # Py_ssize_t
    def tensor(self, shape: _Shape, dtype: DTypeLike | TypeMeta) -> np.ndarray[Any, Any]:
        """The blob's tensor with this shape and dtype, reusing its buffer.

        An unchanged shape and dtype keeps the contents; after a change of shape
        or dtype they are unspecified. A value stored with set() of this very
        shape and dtype is copied, once, into a buffer the blob owns (its
        contents kept, the caller's array never written); later calls reuse it.

        Raises TypeError for a shape that is not ints or a dtype that is not bool
        or numeric; ValueError for a negative size, more than 64 dimensions or an
        impossible tensor (more than 2**56 bytes, counting the non-zero
        dimensions; sizes of any magnitude raise ValueError, never OverflowError);
        MemoryError for a possible tensor that does not fit in memory. A refused
        call changes nothing (the blob, the known types).
        """
    # Pickle support (trusted transport): the state is a tuple, checked on the way in.
    def __reduce__(self) -> tuple[Any, ...]: ...
    def __setstate__(self, state: tuple[Any, ...]) -> None: ...
    def __copy__(self) -> NoReturn: ...
