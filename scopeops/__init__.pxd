# The cimportable C-level API of scopeops:  `from scopeops cimport ...`
from scopeops._types cimport TypeMeta, DTypeCode, type_meta
from scopeops._blob cimport Blob, TensorView, c_blob_tensor_view, c_blob_is_tensor
from scopeops._workspace cimport Workspace, c_structure_epoch
from scopeops._stack cimport (
    WorkspaceStack,
    c_stack_empty,
    c_stack_depth,
    c_stack_capacity,
    c_stack_top,
    c_stack_clear,
    c_push_forward_workspace,
    c_pop_gradient_workspace,
)
