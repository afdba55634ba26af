from typing import Any, final

import numpy as np

@final
class TypeMeta:
    @property
    def name(self) -> str: ...  # str
    @property
    def id(self) -> int: ...  # Py_ssize_t
    @property
    def itemsize(self) -> int: ...  # Py_ssize_t
    @property
    def dtype(self) -> np.dtype[Any] | None: ...  # object
    @property
    def pytype(self) -> type | None: ...  # object
    @property
    def code(self) -> int: ...  # DTypeCode
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

DEBUG_BUILD: bool

def type_meta(spec: object) -> TypeMeta: ...  # cpdef
def register_known_type(pytype: type, name: str | None = None) -> TypeMeta: ...
def known_types() -> tuple[TypeMeta, ...]: ...
