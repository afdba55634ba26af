"""Data-parallel cases of the ratio table, on local Dask clusters started for the run.
Importing this module registers them on :mod:`scopeops.bench`; Dask is imported only
when a case runs (without ``scopeops[distributed]`` the case reports that it was skipped).

D1  A compute-heavy model (a 256-1024-1 tanh MLP, 4,096 rows per shard, float32) trained
    by :class:`~scopeops.distributed.DataParallel` on two shards: seconds per step on a
    cluster of 2 worker processes against a cluster of 1 (target: >= 1.5x faster on two
    free cores), measured in interleaved rounds, each keeping its best. Beside it: the
    same two gradient passes timed inside the workers, at once and in turn, with no Dask
    step around them (how much parallelism the machine gave that minute), the
    steady-state overhead of a step above its compute (the 2-worker step minus the
    passes at once), a tiny model's step (the overhead alone), and the load average.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

import scopeops as so
from scopeops.bench.registry import Case, Row, register

__all__ = ["D1_FEATURES", "D1_HIDDEN", "D1_ROWS", "DataParallelFixture", "measure_d1",
           "mlp", "mlp_problem", "shards_compute_seconds"]

D1_FEATURES = 256
D1_HIDDEN = 1024
D1_ROWS = 4096


def mlp(name: str, hidden: int) -> so.Net:
    """x -> FC -> Tanh -> FC -> squared distance to the target -> mean over rows."""
    net = so.Net(name)
    net.FC(["x", "W1", "b1"], ["h"])
    net.Tanh(["h"], ["a"])
    net.FC(["a", "W2", "b2"], ["y"])
    net.SquaredL2Distance(["y", "target"], ["d"])
    net.AveragedLoss(["d"], ["loss"])
    return net


def mlp_problem(features: int, hidden: int, rows: int, shards: int = 2,
                seed: int = 0) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    """(float32 parameters, ``shards`` shards of ``rows`` rows each)."""
    rng = np.random.default_rng(seed)
    params = {"W1": (rng.standard_normal((hidden, features)) / np.sqrt(features)),
              "b1": np.zeros(hidden), "W2": rng.standard_normal((1, hidden)) / np.sqrt(hidden),
              "b2": np.zeros(1)}
    data = [{"x": rng.standard_normal((rows, features)), "target": rng.standard_normal((rows, 1))}
            for _ in range(shards)]
    as32 = {name: value.astype(np.float32) for name, value in params.items()}
    return as32, [{name: value.astype(np.float32) for name, value in shard.items()}
                  for shard in data]


def shards_compute_seconds(gradient_net: so.NetDef, params: dict[str, np.ndarray],
                           shards: list[dict[str, np.ndarray]], repeats: int) -> float:
    """Best seconds of one forward and backward pass over each of ``shards`` in turn, in
    workspaces of this process, with no Dask step around them: run on a worker, the
    compute that a step holds."""
    executors = []
    for shard in shards:
        ws = so.Workspace()
        for name, value in {**params, **shard}.items():
            ws.feed_blob(name, value)
        executors.append(ws.create_net(gradient_net))
        executors[-1].run()                         # warm: buffers allocated
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for executor in executors:
            executor.run()
        best = min(best, time.perf_counter() - started)
    return best


class DataParallelFixture:
    """A local cluster of ``workers`` single-threaded worker processes and a trainer on it."""

    def __init__(self, workers: int, net: so.Net, params: dict[str, np.ndarray]) -> None:
        from distributed import Client, LocalCluster

        from scopeops.distributed import DataParallel
        self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                    dashboard_address=":0", silence_logs=logging.ERROR)
        self.client = Client(self.cluster)
        self.trainer = DataParallel(self.client, net, params, "loss", lr=1e-3)

    def seconds_per_step(self, shards: list[dict[str, np.ndarray]], steps: int) -> float:
        """Wall seconds per step of ``fit`` (the shards sent once per call)."""
        started = time.perf_counter()
        self.trainer.fit(shards, steps)
        return (time.perf_counter() - started) / steps

    def compute_seconds(self, shards: list[dict[str, np.ndarray]], repeats: int,
                        together: bool) -> float:
        """Seconds of the shards' gradient passes timed inside the workers: each shard on
        its own worker at the same time (``together``; the slower worker counts), or all
        on the first worker in turn."""
        workers = sorted(self.client.scheduler_info()["workers"])
        net, params = self.trainer.gradient_net, self.trainer.params
        plan = [[shard] for shard in shards] if together else [list(shards)]
        futures = [self.client.submit(shards_compute_seconds, net, params, part, repeats,
                                      workers=[workers[k % len(workers)]], pure=False)
                   for k, part in enumerate(plan)]
        return max(self.client.gather(futures))

    def close(self) -> None:
        self.client.close()
        self.cluster.close()


@contextlib.contextmanager
def _quiet_dask() -> Iterator[None]:
    """Dask's INFO lines (workers starting, clusters closing) kept out of the table."""
    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _skipped(reason: str) -> dict[str, Any]:
    return {"rows": [Row("data-parallel step, 2 workers vs 1", "skipped", reason, "-",
                         ">= 1.5x (2 free cores)", None)], "ok": None}


def measure_d1(quick: bool) -> dict[str, Any]:
    try:
        import distributed  # noqa: F401
    except ImportError:
        return _skipped('needs pip install "scopeops[distributed]"')
    with _quiet_dask():
        return _measure_d1(quick)


def _measure_d1(quick: bool) -> dict[str, Any]:
    rounds, steps = (2, 2) if quick else (5, 3)
    load_before = os.getloadavg()[0]
    params, shards = mlp_problem(D1_FEATURES, D1_HIDDEN, D1_ROWS)
    tiny_params, tiny_shards = mlp_problem(4, 8, 16)
    tiny = DataParallelFixture(2, mlp("d1_tiny", 8), tiny_params)
    try:
        tiny.seconds_per_step(tiny_shards, 3)                           # warm
        tiny_step = min(tiny.seconds_per_step(tiny_shards, 10) for _ in range(rounds))
    finally:
        tiny.close()
    net = mlp("d1_mlp", D1_HIDDEN)
    fixtures: dict[int, DataParallelFixture] = {}
    # Each figure keeps its best round; rounds interleave them, so that every figure sees
    # the machine in the same states.
    figures: dict[str, Callable[[], float]] = {
        "step_one_worker": lambda: fixtures[1].seconds_per_step(shards, steps),
        "step_two_workers": lambda: fixtures[2].seconds_per_step(shards, steps),
        "compute_together": lambda: fixtures[2].compute_seconds(shards, steps, together=True),
        "compute_in_turn": lambda: fixtures[2].compute_seconds(shards, steps, together=False),
    }
    best = dict.fromkeys(figures, float("inf"))
    try:
        for workers in (1, 2):
            fixtures[workers] = DataParallelFixture(workers, net, params)
        for fixture in fixtures.values():
            fixture.seconds_per_step(shards, 1)                         # warm: replicas built
        names = list(figures)
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                best[name] = min(best[name], figures[name]())
    finally:
        for fixture in fixtures.values():
            fixture.close()
    load_after = os.getloadavg()[0]
    speedup = best["step_one_worker"] / best["step_two_workers"]
    compute_speedup = best["compute_in_turn"] / best["compute_together"]
    compute = best["compute_together"]
    overhead = best["step_two_workers"] - compute
    cores = os.cpu_count() or 1
    # No verdict where even the bare computations could not run side by side.
    ok = speedup >= 1.5 if cores >= 2 and compute_speedup >= 1.5 else None
    rows = [
        Row(f"DataParallel step, 2 shards x {D1_ROWS} rows, MLP {D1_FEATURES}-{D1_HIDDEN}-1",
            f"2 workers {best['step_two_workers'] * 1e3:.0f} ms",
            f"1 worker {best['step_one_worker'] * 1e3:.0f} ms",
            f"{speedup:.2f}x faster", ">= 1.5x (2 free cores)", ok),
        Row("  the 2 gradient passes alone, in the workers",
            f"2 at once {best['compute_together'] * 1e3:.0f} ms",
            f"in turn {best['compute_in_turn'] * 1e3:.0f} ms", f"{compute_speedup:.2f}x faster",
            "report", None),
        Row("  step overhead above its compute (2 workers)", f"{overhead * 1e3:.1f} ms",
            f"compute {compute * 1e3:.0f} ms", f"{overhead / compute:.2f}x", "report", None),
        Row("  tiny model's step (overhead alone, 2 workers)", f"{tiny_step * 1e3:.1f} ms",
            "-", "-", "report", None),
        Row("  load average (1 min) before / after", f"{load_before:.2f} / {load_after:.2f}",
            f"{cores} cores", "-", "report", None),
    ]
    return {"rows": rows, "ok": ok, "seconds_two_workers": best["step_two_workers"],
            "seconds_one_worker": best["step_one_worker"], "speedup": speedup,
            "compute_speedup": compute_speedup, "overhead_seconds": overhead,
            "compute_seconds": compute, "tiny_step_seconds": tiny_step,
            "load_before": load_before, "load_after": load_after}


register(Case("D1", "data-parallel step on a local Dask cluster, 2 workers vs 1",
              ">= 1.5x faster on 2 free cores", measure_d1))
