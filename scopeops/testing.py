"""Testing support: a finite-difference gradient checker for operators and nets.

``gradient_check`` compares the gradients that :func:`scopeops.add_gradient_ops`
builds against central finite differences of the forward net, in float64::

    from scopeops import testing
    op = so.create_operator("Mul", ["a", "b"], ["c"])
    testing.gradient_check(op, {"a": np.random.randn(3, 4), "b": np.random.randn(4)})

It works for any registered operator with a gradient maker, so it is the way to
test your own operators' gradients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

import scopeops.ops.numeric  # noqa: F401  - the fill, Mul and SumElements the loss uses
from scopeops.defs import NetDef, OperatorDef, as_netdef
from scopeops.gradients import add_gradient_ops
from scopeops.net import Net, create_operator
from scopeops.ops.executor import NetExecutor
from scopeops.workspace import Workspace

__all__ = ["BlobGradientCheck", "GradientCheckResult", "gradient_check"]

_LOSS_PREFIX = "_gradient_check"


@dataclass
class BlobGradientCheck:
    """The comparison for one blob: analytic and numeric gradients and their errors."""

    blob: str
    analytic: np.ndarray
    numeric: np.ndarray
    gradient_blob: str | None
    max_abs_error: float
    max_rel_error: float
    ok: bool
    problem: str = ""

    def report(self) -> str:
        status = "ok" if self.ok else "MISMATCH"
        lines = [f"  {self.blob} (gradient blob {self.gradient_blob or '<none>'}): {status}, "
                 f"max abs error {self.max_abs_error:.3g}, max rel error "
                 f"{self.max_rel_error:.3g}"]
        if self.problem:
            lines.append(f"    {self.problem}")
        if not self.ok and np.isfinite(self.max_abs_error) and self.numeric.size:
            worst = np.unravel_index(
                int(np.argmax(np.abs(self.analytic - self.numeric))), self.numeric.shape)
            lines.append(f"    worst element {tuple(int(i) for i in worst)}: analytic "
                         f"{self.analytic[worst]:.6g}, numeric {self.numeric[worst]:.6g}")
            if self.numeric.size <= 24:
                lines.append(f"    analytic: {np.array2string(self.analytic, precision=5)}")
                lines.append(f"    numeric:  {np.array2string(self.numeric, precision=5)}")
        return "\n".join(lines)


@dataclass
class GradientCheckResult:
    """What :func:`gradient_check` compared: the loss and one entry per checked blob."""

    loss: str
    blobs: dict[str, BlobGradientCheck] = field(default_factory=dict)
    gradient_net: NetDef | None = None

    @property
    def ok(self) -> bool:
        return all(b.ok for b in self.blobs.values())

    @property
    def max_abs_error(self) -> float:
        return max((b.max_abs_error for b in self.blobs.values()), default=0.0)

    @property
    def max_rel_error(self) -> float:
        return max((b.max_rel_error for b in self.blobs.values()), default=0.0)

    def report(self) -> str:
        head = (f"gradient check of loss {self.loss}: "
                f"{'ok' if self.ok else 'analytic and numeric gradients differ'}")
        return "\n".join([head] + [b.report() for b in self.blobs.values()])

    def __str__(self) -> str:
        return self.report()


def _forward_netdef(net_or_op: Any) -> NetDef:
    if isinstance(net_or_op, OperatorDef):
        return NetDef(name="gradient_check", ops=[net_or_op.copy()])
    if isinstance(net_or_op, (Net, NetDef)):
        netdef = as_netdef(net_or_op).copy()
        if not netdef.name:
            netdef.name = "gradient_check"
        if not netdef.ops:
            raise ValueError("gradient_check needs a net with at least one op")
        return netdef
    raise TypeError(f"gradient_check takes an OperatorDef, Net or NetDef, "
                    f"not {type(net_or_op).__name__}")


def _as_float64(name: str, value: Any) -> Any:
    array = np.asarray(value)
    if array.dtype.kind == "f":
        return array.astype(np.float64)
    if array.dtype.kind in "biu":
        return array.copy()
    raise TypeError(f"gradient_check: input {name} must be a bool, int or float array, "
                    f"not {array.dtype}")


def _feed(workspace: Any, inputs: Mapping[str, np.ndarray]) -> None:
    for name, value in inputs.items():
        workspace.feed_blob(name, value.copy())


def _add_weighted_loss(netdef: NetDef, output: str, inputs: Mapping[str, np.ndarray],
                       make_workspace: Callable[[], Any], seed: int) -> str:
    """Append ``loss = sum(output * R)`` for a fixed random R, so no gradient is uniform."""
    probe = make_workspace()
    _feed(probe, inputs)
    NetExecutor(netdef, probe).run()
    value = probe.fetch_blob(output)
    if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
        raise TypeError(f"gradient_check: output {output} must be a floating-point tensor to "
                        f"build a loss from, got "
                        f"{value.dtype if isinstance(value, np.ndarray) else type(value).__name__}")
    weights = np.random.default_rng(seed).uniform(0.5, 1.5, value.shape)
    weights *= np.random.default_rng(seed + 1).choice([-1.0, 1.0], value.shape)
    weight, product, loss = (f"{_LOSS_PREFIX}/weight", f"{_LOSS_PREFIX}/weighted",
                             f"{_LOSS_PREFIX}/loss")
    netdef.ops += [
        create_operator("GivenTensorFill", [], [weight], values=weights.reshape(-1).tolist(),
                        shape=list(value.shape), dtype="float64"),
        create_operator("Mul", [output, weight], [product]),
        create_operator("SumElements", [product], [loss]),
    ]
    return loss


def _loss_value(workspace: Any, loss: str) -> float:
    value = workspace.fetch_blob(loss)
    return float(np.sum(value))


def gradient_check(net_or_op: Any, inputs: Mapping[str, Any], loss: str | None = None,
                   wrt: list[str] | None = None, *, output: str | None = None,
                   eps: float = 1e-3, rtol: float = 1e-2, atol: float = 1e-3,
                   workspace_factory: Callable[[], Any] | None = None,
                   seed: int = 0) -> GradientCheckResult:
    """Check the gradients of a net (or one operator) against central finite differences.

    ``net_or_op``: an :class:`OperatorDef`, :class:`Net` or :class:`NetDef` (copied,
    never modified). ``inputs``: blob name -> array; float arrays are fed as float64
    copies, int and bool arrays as they are. ``loss``: a blob the net writes, whose
    element sum is the objective; when None, the loss is ``sum(output * R)`` for a
    fixed random ``R`` (from ``seed``), where ``output`` defaults to the first output
    of the last op. ``wrt``: the blobs whose gradients are checked (default: every
    float input). ``workspace_factory`` makes the workspaces the nets run in (default
    :class:`scopeops.Workspace`).

    Every element ``e`` of every checked blob gets the numeric gradient
    ``(L(e + eps) - L(e - eps)) / (2 eps)``, computed by re-running the forward net
    only, and must satisfy ``|analytic - numeric| <= atol + rtol * |numeric|``. A blob
    that receives no gradient counts as a zero analytic gradient.

    Returns a :class:`GradientCheckResult`; raises AssertionError with a per-blob
    report when any gradient differs.
    """
    forward = _forward_netdef(net_or_op)
    make_workspace = workspace_factory or Workspace
    if not isinstance(inputs, Mapping) or not inputs:
        raise ValueError("gradient_check needs a dict of input arrays")
    fed = {name: _as_float64(name, value) for name, value in inputs.items()}
    if wrt is None:
        wrt = [name for name, value in fed.items() if value.dtype.kind == "f"]
    else:
        wrt = list(wrt)
        for name in wrt:
            if name not in fed:
                raise ValueError(f"gradient_check: wrt blob {name} is not among the inputs "
                                 f"({', '.join(fed)})")
            if fed[name].dtype.kind != "f":
                raise ValueError(f"gradient_check: wrt blob {name} is {fed[name].dtype}; only "
                                 f"floating-point inputs have gradients")
    if not wrt:
        raise ValueError("gradient_check: no floating-point input to check")
    if not (eps > 0 and rtol >= 0 and atol >= 0):
        raise ValueError("gradient_check needs eps > 0, rtol >= 0 and atol >= 0")

    if loss is None:
        output = output or forward.ops[-1].outputs[0]
        loss = _add_weighted_loss(forward, output, fed, make_workspace, seed)
    elif output is not None:
        raise ValueError("gradient_check: give either loss or output, not both")

    backward = forward.copy()
    backward.name = f"{forward.name}_with_gradients"
    grads = add_gradient_ops(backward, [loss])
    analytic_ws = make_workspace()
    _feed(analytic_ws, fed)
    NetExecutor(backward, analytic_ws).run()

    numeric_ws = make_workspace()
    _feed(numeric_ws, fed)
    forward_net = NetExecutor(forward, numeric_ws)

    result = GradientCheckResult(loss=loss, gradient_net=backward)
    for name in wrt:
        base = fed[name]
        numeric = np.zeros_like(base)
        for index in np.ndindex(base.shape):
            values = []
            for step in (eps, -eps):
                _feed(numeric_ws, fed)
                moved = base.copy()
                moved[index] += step
                numeric_ws.feed_blob(name, moved)
                forward_net.run()
                values.append(_loss_value(numeric_ws, loss))
            numeric[index] = (values[0] - values[1]) / (2 * eps)
        result.blobs[name] = _compare(name, grads.get(name), analytic_ws, numeric,
                                      rtol, atol)
    if not result.ok:
        raise AssertionError(result.report())
    return result


def _compare(name: str, grad_blob: str | None, workspace: Any, numeric: np.ndarray,
             rtol: float, atol: float) -> BlobGradientCheck:
    problem = ""
    if grad_blob is None:
        analytic = np.zeros_like(numeric)
        problem = "no gradient was built for this blob (compared as zeros)"
    else:
        value = workspace.fetch_blob(grad_blob)
        held = value.shape if isinstance(value, np.ndarray) else type(value).__name__
        if held != numeric.shape:
            return BlobGradientCheck(name, np.full_like(numeric, np.nan), numeric, grad_blob,
                                     float("inf"), float("inf"), False,
                                     f"gradient blob {grad_blob} holds {held}, expected an "
                                     f"array of shape {numeric.shape}")
        analytic = value.astype(np.float64)
    error = np.abs(analytic - numeric)
    max_abs = float(error.max(initial=0.0))
    scale = np.maximum(np.abs(numeric), np.finfo(np.float64).tiny)
    max_rel = float((error / scale).max(initial=0.0))
    ok = bool(np.all(error <= atol + rtol * np.abs(numeric)))
    return BlobGradientCheck(name, analytic, numeric, grad_blob, max_abs, max_rel, ok, problem)
