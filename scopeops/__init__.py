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
    OperatorError,
    ScopeError,
    StackError,
    VariableError,
)

try:
    from scopeops._types import TypeMeta, known_types, register_known_type, type_meta
    from scopeops._blob import Blob
    from scopeops._workspace import Workspace as _CoreWorkspace
    from scopeops._stack import WorkspaceStack
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "scopeops' compiled core is not built or not importable "
        f"({exc}). Install the package with `pip install .` (or build it in place with "
        "`python setup.py build_ext --inplace`); there is no pure-Python fallback."
    ) from exc

# The operator layer, above the core.
from scopeops import ops
from scopeops.net import Net, NetDef, OperatorDef, create_operator
from scopeops.workspace import Workspace
from scopeops.gradients import add_gradient_ops
from scopeops import control, testing

__version__ = "0.1.0"

# The toolkit, above the operator layer. Resolved on first use (PEP 562) while its
# modules are being written; every name here is part of the public API.
_TOOLKIT = {
    "NameScope": "scopeops.scope",
    "current_name_scope": "scopeops.scope",
    "scoped_name": "scopeops.scope",
    "BlobReference": "scopeops.scope",
    "DeviceOption": "scopeops.scope",
    "DeviceScope": "scopeops.scope",
    "current_device_scope": "scopeops.scope",
    "EmptyNameScope": "scopeops.scope",
    "EmptyDeviceScope": "scopeops.scope",
    "variable_scope": "scopeops.variables",
    "VariableScope": "scopeops.variables",
    "get_variable": "scopeops.variables",
    "AUTO_REUSE": "scopeops.variables",
    "trainable_variables": "scopeops.variables",
    "global_variables": "scopeops.variables",
    "reset_variables": "scopeops.variables",
    "accumulate": "scopeops.accumulation",
    "accumulate_microbatches": "scopeops.accumulation",
    "cast_to_float16": "scopeops.memory",
    "memory_report": "scopeops.memory",
    "save_workspace": "scopeops.checkpoint",
    "load_workspace": "scopeops.checkpoint",
}
_TOOLKIT_MODULES = {"initializers": "scopeops.initializers", "viz": "scopeops.viz",
                    "accumulation": "scopeops.accumulation", "memory": "scopeops.memory",
                    "checkpoint": "scopeops.checkpoint"}


def __getattr__(name):
    import importlib
    if name in _TOOLKIT:
        return getattr(importlib.import_module(_TOOLKIT[name]), name)
    if name in _TOOLKIT_MODULES:
        return importlib.import_module(_TOOLKIT_MODULES[name])
    raise AttributeError(f"module 'scopeops' has no attribute {name!r}")

__all__ = [
    "Blob",
    "BindingError",
    "BlobNotFoundError",
    "BlobTypeError",
    "CheckpointError",
    "Net",
    "NetDef",
    "OperatorDef",
    "OperatorError",
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
