from typing import Any, final

from scopeops._blob import Blob
from scopeops._workspace import Workspace

class Kernel:
    def bind(self, op: OperatorCore) -> Kernel | None: ...

class OperatorCore:
    definition: Any  # object: an OperatorDef
    args: Any  # object: a dict of arguments
    @property
    def workspace(self) -> Workspace: ...  # Workspace
    @property
    def _input_names(self) -> tuple[str, ...]: ...  # tuple
    @property
    def _output_names(self) -> tuple[str, ...]: ...  # tuple
    @property
    def _in_blobs(self) -> tuple[Blob, ...]: ...  # tuple
    @property
    def _out_blobs(self) -> tuple[Blob, ...]: ...  # tuple
    @property
    def _aliased_inputs(self) -> frozenset[int]: ...  # object
    @property
    def _inplace(self) -> bool: ...  # bint
    @property
    def _kernel(self) -> Kernel | None: ...  # Kernel
    def __init__(self, *args: Any, **kwargs: Any) -> None: ...
    def _attach(self, definition: Any, workspace: object) -> None: ...
    def _set_blobs(self, inputs: list[Blob] | tuple[Blob, ...],
                   outputs: list[Blob] | tuple[Blob, ...]) -> None: ...
    def _set_kernel(self, kernel: Kernel | None) -> None: ...
    def prepare(self) -> None: ...
    def input_blob(self, i: int) -> Blob: ...
    def output_blob(self, i: int) -> Blob: ...
    def input(self, i: int, t: object = None) -> Any: ...
    def output(self, i: int, shape: Any = None, dtype: Any = None) -> Any: ...

class NetCore:
    operators: list[Any]  # list
    def run(self) -> None: ...

@final
class CopyKernel(Kernel): ...

@final
class UnaryUfunc(Kernel):
    def __init__(self, ufunc: Any, kinds: str = "any", bool_out: bool = False) -> None: ...

@final
class BinaryUfunc(Kernel):
    def __init__(self, ufunc: Any, bool_out: bool = False, floor_ints: bool = False) -> None: ...

@final
class FCKernel(Kernel): ...

@final
class FCGradientKernel(Kernel): ...

@final
class TanhGradientKernel(Kernel): ...

@final
class MulGradientKernel(Kernel): ...

@final
class SumKernel(Kernel): ...

@final
class AveragedLossKernel(Kernel): ...

@final
class DoKernel(Kernel): ...

@final
class IfKernel(Kernel):
    def __init__(self, condition: Any = None) -> None: ...

@final
class WhileKernel(Kernel):
    def __init__(self, condition: Any = None) -> None: ...
