"""Gradient accumulation: :func:`accumulate` and training over micro-batches.

:func:`accumulate_microbatches` runs a training net (forward and backward ops,
as :func:`scopeops.add_gradient_ops` builds them) over a batch split into
micro-batches. Each micro-batch runs in a workspace pushed on a
:class:`~scopeops.WorkspaceStack` held in a blob of the parent workspace: the
parameters are bound by name, everything else the net writes (activations,
gradients) stays local to the pushed workspace. Popped workspaces are kept and
reused, so every micro-batch after the first writes into the same buffers, and
each parameter gradient is added into ``<param>_grad`` of the parent with
:func:`accumulate`, weighted so that the sum is the full-batch gradient. Peak
memory is one micro-batch's worth, whatever the number of micro-batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from scopeops._accumulate import accumulate
from scopeops._blob import Blob
from scopeops._stack import WorkspaceStack
from scopeops.defs import NetDef, as_netdef
from scopeops.errors import BlobNotFoundError, BlobTypeError
from scopeops.gradients import grad_name
from scopeops.progress import Progress
from scopeops.workspace import Workspace

__all__ = ["accumulate", "accumulate_microbatches", "microbatch_slices"]

#: The parent blob holding the micro-batch stack unless the caller names another.
DEFAULT_SCOPE = "microbatch_scope"

_REDUCTIONS = ("mean", "sum")


def microbatch_slices(rows: int, microbatches: int) -> Iterator[slice]:
    """The row ranges of ``microbatches`` contiguous parts of ``rows`` rows, lazily.

    Sizes differ by at most one, larger parts first (``numpy.array_split``).
    Arguments are checked when this is called, before the first part is made.
    """
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ValueError(f"a batch needs at least one row, got {rows!r}")
    if isinstance(microbatches, bool) or not isinstance(microbatches, int):
        raise TypeError(f"microbatches must be an int, not {type(microbatches).__name__}")
    if not 1 <= microbatches <= rows:
        raise ValueError(f"microbatches must be between 1 and the batch's {rows} rows, "
                         f"got {microbatches}")
    return _slices(rows, microbatches)


def _slices(rows: int, microbatches: int) -> Iterator[slice]:
    # A generator, so that memory does not grow with the number of micro-batches.
    size, extra = divmod(rows, microbatches)
    start = 0
    for k in range(microbatches):
        stop = start + size + (1 if k < extra else 0)
        yield slice(start, stop)
        start = stop


def _names(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    try:
        names = list(value)
    except TypeError:
        raise TypeError(f"{what} must be a blob name or a list of blob names, "
                        f"not {type(value).__name__}") from None
    for name in names:
        if not isinstance(name, str) or not name:
            raise TypeError(f"{what} must be non-empty blob names (str), got {name!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{what} name a blob twice: {names}")
    return names


def _check_batch(batch: Any, bound: set[str]) -> tuple[dict[str, np.ndarray], int]:
    if not isinstance(batch, Mapping) or not batch:
        raise TypeError("batch must be a non-empty mapping of input names to arrays")
    arrays: dict[str, np.ndarray] = {}
    rows = None
    for name, value in batch.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"batch keys must be non-empty blob names, got {name!r}")
        if name in bound:
            raise ValueError(f"batch input {name} is also bound from the parent workspace "
                             f"(a parameter or a bind name)")
        if not isinstance(value, np.ndarray):
            raise TypeError(f"batch input {name} must be a numpy array, "
                            f"not {type(value).__name__}")
        if value.ndim == 0:
            raise ValueError(f"batch input {name} is a 0-d array: it has no rows to split")
        if rows is None:
            rows = value.shape[0]
        elif value.shape[0] != rows:
            raise ValueError(f"batch inputs disagree on the number of rows: {name} has "
                             f"{value.shape[0]}, another has {rows}")
        arrays[name] = value
    assert rows is not None
    return arrays, rows


def _check_net(netdef: NetDef, grads: dict[str, str], losses: list[str],
               bound: Iterable[str]) -> None:
    written = {name for op in netdef.ops for name in op.outputs}
    missing = [f"{grads[p]} (of {p})" for p in grads if grads[p] not in written]
    if missing:
        raise ValueError(f"net '{netdef.name}' writes no gradient {', '.join(missing)}: "
                         f"add its backward pass with so.add_gradient_ops first")
    missing = [loss for loss in losses if loss not in written]
    if missing:
        raise ValueError(f"net '{netdef.name}' writes no loss {', '.join(missing)}")
    clobbered = [name for name in bound if name in written]
    if clobbered:
        raise ValueError(f"net '{netdef.name}' writes {', '.join(clobbered)}, which is bound "
                         f"from the parent workspace: an update inside the accumulated net "
                         f"would change it between micro-batches")


def _scope_stack(workspace: Workspace, scope: str) -> WorkspaceStack | None:
    """The stack already in the scope blob, None if the blob is absent or empty."""
    blob = workspace.get_blob(scope)
    if blob is None or blob.is_empty():
        return None
    value = blob.get()
    if not isinstance(value, WorkspaceStack):
        raise BlobTypeError(f"scope blob {scope} holds a {type(value).__name__}, "
                            f"not a WorkspaceStack")
    return value


def _tensor(blob: Blob | None, name: str, where: str) -> np.ndarray:
    if blob is None:
        raise BlobNotFoundError(f"Blob {name} not in the {where}")
    value = blob.get() if not blob.is_empty() else None
    if not isinstance(value, np.ndarray):
        raise BlobTypeError(f"blob {name} in the {where} holds "
                            f"{'nothing' if value is None else type(value).__name__}, "
                            f"not a tensor")
    return value


def _blob(ws: Workspace, name: str) -> Blob:
    blob = ws.get_blob(name)
    if blob is None:
        raise BlobNotFoundError(f"Blob {name} not in the micro-batch workspace")
    return blob


def _check_accumulators(workspace: Workspace, child: Any, grads: dict[str, str],
                        zero: bool) -> list[tuple[str, str, np.ndarray]]:
    """The first micro-batch's gradients, each checked against its accumulator."""
    checked = []
    for param, name in grads.items():
        grad = _tensor(child.get_blob(name), name, "micro-batch workspace")
        if grad.dtype not in (np.float16, np.float32, np.float64):
            raise TypeError(f"gradient {name} of {param} is {grad.dtype}: accumulate works "
                            f"on float16, float32 and float64")
        if not zero:
            acc = _tensor(workspace.get_blob(name), name, "parent workspace")
            if acc.dtype != grad.dtype or acc.shape != grad.shape:
                raise ValueError(f"accumulator {name} is {acc.dtype}{list(acc.shape)} but the "
                                 f"gradient of {param} is {grad.dtype}{list(grad.shape)}")
        checked.append((param, name, grad))
    return checked


def _check_losses(child: Any, losses: list[str]) -> None:
    for loss in losses:
        value = _tensor(child.get_blob(loss), loss, "micro-batch workspace")
        if value.size != 1:
            raise ValueError(f"loss {loss} has shape {value.shape}: a loss is one value")


def accumulate_microbatches(
    net: Any,
    workspace: Workspace,
    batch: Mapping[str, np.ndarray],
    microbatches: int,
    params: Sequence[str],
    losses: Sequence[str] | str = (),
    *,
    grads: Mapping[str, str] | None = None,
    bind: Sequence[str] = (),
    reduction: str = "mean",
    zero: bool = True,
    scope: str = DEFAULT_SCOPE,
    progress: bool = False,
) -> dict[str, float]:
    """Run ``net`` over ``batch`` in micro-batches; accumulate parameter gradients.

    Parameters
    ----------
    net : Net or NetDef
        A training net: forward ops and their backward pass (from
        :func:`scopeops.add_gradient_ops`). It must write the gradient of every
        parameter and must not write any bound name.
    workspace : Workspace
        The parent: holds the parameters, receives the accumulated gradients
        and keeps the micro-batch stack in its blob ``scope``.
    batch : mapping of str to numpy.ndarray
        The net's data inputs, all with the same number of rows (axis 0). Each
        micro-batch sees a view of its rows under the same names (no copy).
    microbatches : int
        How many contiguous parts to split the rows into (1 to the number of
        rows; sizes differ by at most one, see :func:`microbatch_slices`).
    params : list of str
        Parameter blobs of ``workspace``, bound by name into every micro-batch.
    losses : str or list of str
        Loss blobs whose full-batch value to return, weighted like the gradients.
    grads : mapping, optional
        ``{param: gradient blob}``; default ``<param>_grad``, as
        ``add_gradient_ops`` names them (its return value fits here). The
        accumulator in the parent has the same name.
    bind : list of str
        Further parent blobs to bind by name (read-only inputs, no gradient).
    reduction : "mean" or "sum"
        How each loss reduces over rows. ``"mean"`` weighs micro-batch ``k`` by
        ``rows_k / rows``, so that the sum is the gradient of the full-batch
        mean; ``"sum"`` adds the micro-batch gradients as they are.
    zero : bool
        True: the accumulators start from zero (created or reshaped as needed).
        False: add to what they hold (accumulating over several calls); they
        must exist with the gradients' shapes and dtypes.
    scope : str
        The parent blob holding the :class:`WorkspaceStack`; created when absent
        and kept, so a later call reuses the pushed workspace and its buffers.
    progress : bool
        True shows progress over the micro-batches on stderr (a live tqdm bar in
        a terminal, a line per quarter elsewhere, see :mod:`scopeops.progress`).
        Off by default: a library call stays silent.

    Returns
    -------
    dict
        ``{loss: full-batch value}`` for each name in ``losses``.

    Every argument is checked before anything changes. If the net fails while
    running, the stack is left as it was, and the accumulators hold a partial
    sum.
    """
    if not isinstance(workspace, Workspace):
        raise TypeError(f"workspace must be a scopeops.Workspace (it runs the net), "
                        f"not {type(workspace).__name__}")
    netdef = as_netdef(net)
    if not netdef.name:
        raise ValueError("the micro-batch net needs a name (it is built once and reused)")
    param_names = _names(params, "params")
    if not param_names:
        raise ValueError("accumulate_microbatches needs at least one parameter")
    bind_names = _names(bind, "bind")
    loss_names = _names(losses, "losses")
    if set(bind_names) & set(param_names):
        raise ValueError(f"names both in params and bind: "
                         f"{sorted(set(bind_names) & set(param_names))}")
    if not isinstance(scope, str) or not scope:
        raise TypeError("scope must be a non-empty blob name")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, not {type(progress).__name__}")
    if grads is None:
        grad_of = {p: grad_name(p) for p in param_names}
    else:
        if not isinstance(grads, Mapping):
            raise TypeError(f"grads must be a mapping of parameter to gradient blob, "
                            f"not {type(grads).__name__}")
        missing = [p for p in param_names if p not in grads]
        if missing:
            raise ValueError(f"grads names no gradient blob for {', '.join(missing)}")
        grad_of = {p: grads[p] for p in param_names}
        _names(list(grad_of.values()), "gradient blobs")
    if len(set(grad_of.values())) != len(grad_of):
        raise ValueError(f"two parameters share a gradient blob: {grad_of}")
    bound = param_names + bind_names
    taken = [name for name in bound + list(grad_of.values()) if name == scope]
    if taken:
        raise ValueError(f"scope blob {scope} is also a bound or gradient blob name")
    for name in bound:
        if not workspace.has_blob(name):
            raise BlobNotFoundError(f"Blob {name} not in the workspace (bound by name into "
                                    f"every micro-batch)")
    arrays, rows = _check_batch(batch, set(bound))
    slices = microbatch_slices(rows, microbatches)
    _check_net(netdef, grad_of, loss_names, bound)
    stack = _scope_stack(workspace, scope)

    # Nothing has changed so far; from here on the parent is written.
    if stack is None:
        stack = WorkspaceStack()
        workspace.feed_blob(scope, stack)
    bindings = {name: name for name in bound}
    totals = dict.fromkeys(loss_names, 0.0)
    executor = None
    paired_with = None
    pairs: list[tuple[Blob, Blob]] = []
    parts: Iterable[slice] = slices
    if progress:   # tqdm closes the bar when the loop ends, by exhaustion or by an error
        parts = Progress(slices, total=microbatches, desc="micro-batches", unit="batch")
    for k, rows_k in enumerate(parts):
        weight = (rows_k.stop - rows_k.start) / rows if reduction == "mean" else 1.0
        child = stack.push_forward_workspace(workspace, bindings)
        try:
            for name, array in arrays.items():
                child.feed_blob(name, array[rows_k])
            if executor is None or executor.workspace is not child:
                executor = child.get_net(netdef.name)
                if executor is None or executor.netdef != netdef:
                    executor = child.create_net(netdef, overwrite=True)
            executor.run()
            if k == 0:
                checked = _check_accumulators(workspace, child, grad_of, zero)
                _check_losses(child, loss_names)
                if zero:
                    for _, name, grad in checked:
                        workspace.create_blob(name).tensor(grad.shape, grad.dtype).fill(0)
            if child is not paired_with:
                # (accumulator, gradient) blobs, resolved once per pushed workspace.
                pairs = [(workspace.create_blob(name), _blob(child, name))
                         for name in grad_of.values()]
                paired_with = child
            for accumulator, gradient in pairs:
                accumulate(accumulator, gradient, weight)
            for loss in loss_names:
                totals[loss] += weight * child.fetch_blob(loss).item()
        finally:
            for name in arrays:
                fed = child.get_blob(name)
                if fed is not None:
                    fed.reset()   # the dormant workspace must not keep the caller's batch alive
            stack.pop_gradient_workspace(workspace)
    return totals
