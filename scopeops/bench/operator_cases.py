"""Operator-layer cases of the ratio table: O1 (a steady-state Do loop) and O2
(operator dispatch), each measured beside its numpy reference in the same run.
Importing this module registers them on :mod:`scopeops.bench`.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

import scopeops as so
from scopeops.bench.registry import Case, Row, register
from scopeops.bench.timing import (
    Loop,
    compare,
    format_bytes,
    format_ns,
    format_ratio,
    traced_growth,
)

__all__ = ["O1Fixture", "O2Fixture", "measure_o1", "measure_o2"]

O1_STEPS = 32
O1_SIZE = 64
O2_OPS = 100


class O1Fixture:
    """32 forward Do steps (FC, Tanh, Mul on 64x64 float32) and their gradient
    Do steps, built with ``add_gradient_ops``; and the same arithmetic written by
    hand in numpy with preallocated buffers."""

    def __init__(self, steps: int = O1_STEPS, n: int = O1_SIZE, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.x0 = (rng.standard_normal((n, n)) * 0.5).astype(np.float32)
        self.w = (rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32)
        self.b = np.zeros(n, np.float32)
        self.s = np.full((n, n), 0.9, np.float32)
        ws = so.Workspace()
        for name, value in (("x0", self.x0), ("W", self.w), ("b", self.b), ("s", self.s)):
            ws.feed_blob(name, value)
        step = so.Net("o1_step")
        step.FC(["x", "W", "b"], ["h"])
        step.Tanh(["h"], ["a"])
        step.Mul(["a", "s"], ["y"])
        net = so.Net("o1")
        net.CreateScope([], ["o1_scope"])
        for k in range(steps):
            ws.create_blob(f"x{k + 1}")
            net.Do([f"x{k}", "W", "b", "s", "o1_scope"], [f"x{k + 1}", "o1_scope"],
                   net=step.netdef, inner_blobs=["x", "W", "b", "s", "y"],
                   outer_blobs_idx=[0, 1, 2, 3, 4])
        net.AveragedLoss([f"x{steps}"], ["loss"])
        so.add_gradient_ops(net, ["loss"])
        self.workspace = ws
        self.run: Callable[[], None] = ws.create_net(net).run
        self.steps, self.n = steps, n
        self.reference = self._numpy_reference()

    def _numpy_reference(self) -> Callable[[], None]:
        steps, n, f32 = self.steps, self.n, np.float32
        w, b, s = self.w, self.b, self.s
        xs = [self.x0] + [np.empty((n, n), f32) for _ in range(steps)]
        hs = [np.empty((n, n), f32) for _ in range(steps)]
        acts = [np.empty((n, n), f32) for _ in range(steps)]
        dx, da, tmp = (np.empty((n, n), f32) for _ in range(3))
        dw, tmp_w, ds = (np.empty((n, n), f32) for _ in range(3))
        db, tmp_b = np.empty(n, f32), np.empty(n, f32)
        self.reference_grads = {"W": dw, "b": db, "s": ds}

        def run() -> None:
            for k in range(steps):
                np.matmul(xs[k], w.T, out=hs[k])
                np.add(hs[k], b, out=hs[k])
                np.tanh(hs[k], out=acts[k])
                np.multiply(acts[k], s, out=xs[k + 1])
            xs[steps].mean()
            dx.fill(1.0 / xs[steps].size)
            dw.fill(0)
            db.fill(0)
            ds.fill(0)
            for k in range(steps - 1, -1, -1):
                np.multiply(dx, acts[k], out=tmp)
                np.add(ds, tmp, out=ds)
                np.multiply(dx, s, out=da)
                np.multiply(acts[k], acts[k], out=tmp)
                np.subtract(1, tmp, out=tmp)
                np.multiply(da, tmp, out=da)
                np.matmul(da.T, xs[k], out=tmp_w)
                np.add(dw, tmp_w, out=dw)
                np.sum(da, axis=0, out=tmp_b)
                np.add(db, tmp_b, out=db)
                np.matmul(da, w, out=dx)

        return run

    def gradients_agree(self) -> bool:
        """Both compute the same gradients (a benchmark of wrong maths proves nothing)."""
        self.run()
        self.reference()
        ws = self.workspace
        return all(np.allclose(ws.fetch_blob(f"{name}_grad"), ref, rtol=1e-3, atol=1e-6)
                   for name, ref in self.reference_grads.items())


def measure_o1(quick: bool) -> dict[str, Any]:
    fixture = O1Fixture()
    agree = fixture.gradients_agree()
    best = compare({"do_loop": Loop("run()", {"run": fixture.run}, unroll=1),
                    "numpy": Loop("ref()", {"ref": fixture.reference}, unroll=1)}, quick)
    ratio = best["do_loop"] / best["numpy"]
    growth, peak = traced_growth(fixture.run, (), 100)
    rows = [
        Row("32 Do steps + gradients, 64x64 f32", format_ns(best["do_loop"]),
            f"hand-written numpy {format_ns(best['numpy'])}", format_ratio(ratio), "<= 2x",
            ratio <= 2.0),
        Row("  memory growth over 100 iterations", format_bytes(growth),
            f"peak +{format_bytes(peak)}",
            "-", "< 64 KiB", growth < 64 * 1024),
        Row("  gradients equal numpy's", "yes" if agree else "NO", "-", "-", "yes", agree),
    ]
    return {"rows": rows, "do_loop_ns": best["do_loop"], "numpy_ns": best["numpy"],
            "ratio": ratio, "growth_bytes": growth}


class O2Fixture:
    """A net of 100 Copy ops on one-element tensors, and the bare numpy copies."""

    def __init__(self, ops: int = O2_OPS) -> None:
        ws = so.Workspace()
        ws.feed_blob("c0", np.ones(1, np.float32))
        net = so.Net("o2")
        for k in range(ops):
            net.Copy([f"c{k}"], [f"c{k + 1}"])
        self.run = ws.create_net(net).run
        self.run()
        arrays = [np.ones(1, np.float32) for _ in range(ops + 1)]
        copyto = np.copyto
        pairs = list(zip(arrays[1:], arrays[:-1], strict=True))

        def bare() -> None:
            for dst, src in pairs:
                copyto(dst, src)

        self.bare = bare
        self.ops = ops


def measure_o2(quick: bool) -> dict[str, Any]:
    fixture = O2Fixture()
    best = compare({"net": Loop("run()", {"run": fixture.run}, unroll=1),
                    "bare": Loop("bare()", {"bare": fixture.bare}, unroll=1)}, quick)
    overhead = (best["net"] - best["bare"]) / fixture.ops
    rows = [Row("dispatch: net of 100 Copy ops, per op", format_ns(best["net"] / fixture.ops),
                f"bare np.copyto {format_ns(best['bare'] / fixture.ops)}",
                f"+{format_ns(overhead)}", "<= 0.5 us above", overhead <= 500.0)]
    return {"rows": rows, "overhead_ns": overhead, "net_ns": best["net"], "bare_ns": best["bare"]}


for _case in (
    Case("O1", "steady-state Do loop with gradients", "<= 2x hand-written numpy; no memory growth",
         measure_o1),
    Case("O2", "operator dispatch overhead", "<= 0.5 us per op above bare numpy", measure_o2),
):
    register(_case)
