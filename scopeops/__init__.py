"""scopeops: Caffe2's workspace scopes for numeric Python pipelines.

The compiled core (``_types``, ``_blob``, ``_workspace``, ``_stack``) is the
implementation; there is no pure-Python fallback, so importing scopeops fails
loudly when the extensions are not built.
"""

from scopeops.errors import (
    BindingError,
    BlobNotFoundError,
    BlobTypeError,
    CheckpointError,
    GradientError,
    OperatorError,
    PickleStateError,
    ScopeError,
    StackError,
    VariableError,
)

try:
    from scopeops._blob import Blob
    from scopeops._stack import WorkspaceStack
    from scopeops._types import TypeMeta, known_types, register_known_type, type_meta
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "scopeops' compiled core is not built or not importable "
        f"({exc}). Install the package with `pip install .` (or build it in place with "
        "`python setup.py build_ext --inplace`); there is no pure-Python fallback."
    ) from exc

# The operator layer, above the core.
from scopeops import control, ops, testing
from scopeops.defs import NetDef, OperatorDef
from scopeops.gradients import add_gradient_ops
from scopeops.net import Net, create_operator
from scopeops.workspace import Workspace

__version__ = "0.1.0"

# The toolkit, above the operator layer.
from scopeops import accumulation, checkpoint, initializers, memory, viz
from scopeops.accumulation import accumulate, accumulate_microbatches
from scopeops.checkpoint import load_workspace, save_workspace
from scopeops.memory import cast_to_float16, memory_report
from scopeops.scope import (
    BlobReference,
    DeviceOption,
    DeviceScope,
    EmptyDeviceScope,
    EmptyNameScope,
    NameScope,
    current_device_scope,
    current_name_scope,
    scoped_name,
)
from scopeops.variables import (
    AUTO_REUSE,
    VariableScope,
    get_variable,
    global_variables,
    reset_variables,
    trainable_variables,
    variable_scope,
)

__all__ = [
    "AUTO_REUSE",
    "BlobReference",
    "DeviceOption",
    "DeviceScope",
    "EmptyDeviceScope",
    "EmptyNameScope",
    "NameScope",
    "VariableScope",
    "accumulate",
    "accumulate_microbatches",
    "accumulation",
    "cast_to_float16",
    "checkpoint",
    "current_device_scope",
    "current_name_scope",
    "get_variable",
    "global_variables",
    "initializers",
    "load_workspace",
    "memory",
    "memory_report",
    "reset_variables",
    "save_workspace",
    "scoped_name",
    "trainable_variables",
    "variable_scope",
    "viz",
    "Blob",
    "BindingError",
    "BlobNotFoundError",
    "BlobTypeError",
    "CheckpointError",
    "GradientError",
    "Net",
    "NetDef",
    "OperatorDef",
    "OperatorError",
    "PickleStateError",
    "ScopeError",
    "StackError",
    "TypeMeta",
    "VariableError",
    "add_gradient_ops",
    "control",
    "testing",
    "Workspace",
    "WorkspaceStack",
    "create_operator",
    "known_types",
    "ops",
    "register_known_type",
    "type_meta",
]
