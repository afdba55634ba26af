"""Gradient-accumulation cases of the ratio table, each measured beside its
numpy reference in the same run. Importing this module registers them on
:mod:`scopeops.bench`:

T1  ``so.accumulate(dst, src, scale)`` against ``numpy.add(dst, scale*src,
    out=dst)`` on float32 arrays of a few MiB (target: at most 1.0x the time),
    with scale 0.5 and scale 1.0 (the reference being the same call each
    time), and ``numpy.add(dst, src, out=dst)`` reported as the floor.
T2  two threads each accumulating into its own array against one thread doing
    both in turn: the speed-up (target: >= 1.3x on two free cores), beside the
    same split of numpy's GIL-free ``add(dst, src, out=dst)``, which tells
    whether the machine had a second core free during the run; when it had not,
    accumulate must scale as well as numpy did (at least 0.9x its speed-up).
"""

from __future__ import annotations

import gc
import os
import threading
import time
import tracemalloc
from typing import Any, Callable

import numpy as np

import scopeops as so
from scopeops.accumulation import accumulate_microbatches
from scopeops.bench.registry import Case, Row, register
from scopeops.bench.timing import Loop, compare, effort, format_ns, format_ratio

__all__ = ["AccumulateFixture", "ThreadFixture", "measure_t1", "measure_t2",
           "microbatch_peak_bytes"]

T1_MIB = 4
T2_MIB = 4
T2_CALLS = 20


def _pair(mib: float, dtype: Any = np.float32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    count = int(mib * (1 << 20)) // np.dtype(dtype).itemsize
    # Small increments: thousands of timed calls leave dst in a normal range.
    return (rng.standard_normal(count).astype(dtype),
            (rng.standard_normal(count) * 1e-4).astype(dtype))


class AccumulateFixture:
    """T1: two float32 arrays of ``mib`` MiB and the loops timing each call."""

    def __init__(self, mib: int = T1_MIB) -> None:
        self.dst, self.src = _pair(mib)
        env = {"dst": self.dst, "src": self.src, "acc": so.accumulate, "add": np.add}
        self.loops = {
            "accumulate": Loop("acc(dst, src, 0.5)", env, unroll=1),
            "numpy": Loop("add(dst, 0.5 * src, out=dst)", env, unroll=1),
            "accumulate_scale1": Loop("acc(dst, src, 1.0)", env, unroll=1),
            "numpy_scale1": Loop("add(dst, 1.0 * src, out=dst)", env, unroll=1),
            "numpy_plain_add": Loop("add(dst, src, out=dst)", env, unroll=1),
        }

    def results_agree(self) -> bool:
        """Both compute the same sums (a benchmark of wrong maths proves nothing)."""
        dst = self.dst[:4096].copy()
        reference = dst.copy()
        so.accumulate(dst, self.src[:4096], 0.5)
        np.add(reference, 0.5 * self.src[:4096], out=reference)
        return bool(np.array_equal(dst, reference))


def measure_t1(quick: bool) -> dict[str, Any]:
    fixture = AccumulateFixture()
    agree = fixture.results_agree()
    ns = compare(fixture.loops, quick)
    ratio = ns["accumulate"] / ns["numpy"]
    ratio1 = ns["accumulate_scale1"] / ns["numpy_scale1"]
    floor = ns["accumulate_scale1"] / ns["numpy_plain_add"]
    gb_s = 3 * fixture.dst.nbytes / ns["accumulate"]   # bytes moved per ns = GB/s
    rows = [
        Row(f"accumulate {T1_MIB} MiB f32, scale 0.5",
            f"{format_ns(ns['accumulate'])} ({gb_s:.0f} GB/s)",
            f"np.add(d, s*x, out=d) {format_ns(ns['numpy'])}; "
            f"{ns.spread_text('accumulate', 'numpy')}", format_ratio(ratio), "<= 1.0x",
            ratio <= 1.0),
        Row("  scale 1.0", format_ns(ns["accumulate_scale1"]),
            f"np.add(d, 1.0*x, out=d) {format_ns(ns['numpy_scale1'])}; "
            f"{ns.spread_text('accumulate_scale1', 'numpy_scale1')}", format_ratio(ratio1),
            "<= 1.0x",
            ratio1 <= 1.0),
        Row("  scale 1.0 vs bare np.add(d, x, out=d)", format_ns(ns["accumulate_scale1"]),
            f"np.add {format_ns(ns['numpy_plain_add'])}", format_ratio(floor), "report", None),
        Row("  results equal numpy's", "yes" if agree else "NO", "-", "-", "yes", agree),
    ]
    return {"rows": rows, "accumulate_ns": ns["accumulate"], "numpy_ns": ns["numpy"],
            "accumulate_scale1_ns": ns["accumulate_scale1"],
            "numpy_scale1_ns": ns["numpy_scale1"], "numpy_plain_add_ns": ns["numpy_plain_add"],
            "ratio": ratio, "ratio_scale1": ratio1, "ratio_plain_add": floor,
            **ns.raw("accumulate", "numpy", "ratio"),
            **ns.raw("accumulate_scale1", "numpy_scale1", "ratio_scale1")}


class ThreadFixture:
    """T2: two float32 arrays (and their sources) of ``mib`` MiB each, and two
    persistent worker threads that accumulate into one array each on a signal,
    so that thread start-up is not part of what is timed."""

    def __init__(self, mib: float = T2_MIB, calls: int = T2_CALLS,
                 accumulate: Callable[..., Any] = so.accumulate) -> None:
        self.pairs = [_pair(mib, seed=seed) for seed in (1, 2)]
        self.calls = calls
        self.accumulate = accumulate
        self._start = threading.Barrier(3)
        self._done = threading.Barrier(3)
        self._stop = False
        self._workers = [threading.Thread(target=self._work, args=(pair,), daemon=True)
                         for pair in self.pairs]
        for worker in self._workers:
            worker.start()

    def _run(self, dst: np.ndarray, src: np.ndarray) -> None:
        accumulate = self.accumulate
        for _ in range(self.calls):
            accumulate(dst, src, 0.5)

    def _work(self, pair: tuple[np.ndarray, np.ndarray]) -> None:
        while True:
            self._start.wait()
            if self._stop:
                return
            self._run(*pair)
            self._done.wait()

    def two_threads_ns(self) -> int:
        """Both arrays at once, one worker thread each."""
        t0 = time.perf_counter_ns()
        self._start.wait()
        self._done.wait()
        return time.perf_counter_ns() - t0

    def one_thread_ns(self) -> int:
        """Both arrays in turn, in this thread."""
        t0 = time.perf_counter_ns()
        for pair in self.pairs:
            self._run(*pair)
        return time.perf_counter_ns() - t0

    def close(self) -> None:
        self._stop = True
        self._start.wait()
        for worker in self._workers:
            worker.join()


def _speedups(fixtures: dict[str, ThreadFixture], rounds: int) -> dict[str, tuple[int, int]]:
    """{name: (best one-thread ns, best two-thread ns)}, sampled in interleaved
    rounds so that every fixture sees the machine in the same state."""
    best = {name: [float("inf"), float("inf")] for name in fixtures}
    for fixture in fixtures.values():
        fixture.one_thread_ns()   # warm: page in every array
    names = list(fixtures)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fixture = fixtures[name]
            if r % 2:
                best[name][1] = min(best[name][1], fixture.two_threads_ns())
                best[name][0] = min(best[name][0], fixture.one_thread_ns())
            else:
                best[name][0] = min(best[name][0], fixture.one_thread_ns())
                best[name][1] = min(best[name][1], fixture.two_threads_ns())
    return {name: (int(one), int(two)) for name, (one, two) in best.items()}


def _numpy_add(dst: np.ndarray, src: np.ndarray, scale: float) -> None:
    # The parallelism reference: numpy's own loop, GIL released, no temporary
    # (a temporary's allocation and page faults would serialise the threads).
    np.add(dst, src, out=dst)


def measure_t2(quick: bool) -> dict[str, Any]:
    rounds, _ = effort(quick)
    cores = os.cpu_count() or 1
    fixtures = {"accumulate": ThreadFixture(accumulate=so.accumulate),
                "numpy": ThreadFixture(accumulate=_numpy_add)}
    try:
        results = _speedups(fixtures, rounds)
    finally:
        for fixture in fixtures.values():
            fixture.close()
    one, two = results["accumulate"]
    speedup = one / two
    np_one, np_two = results["numpy"]
    np_speedup = np_one / np_two
    per_call = 2 * T2_CALLS
    # The target needs two free cores; numpy's GIL-free loop, split the same way in the
    # same rounds, shows what the machine gave. When another process held the second
    # core, accumulate must scale as well as numpy did (within 10%), which is what
    # releasing the GIL buys; with one core there is no verdict.
    needed = min(1.3, 0.9 * np_speedup)
    ok = speedup >= needed if cores >= 2 else None
    rows = [
        Row(f"2 threads x {T2_CALLS} accumulates, {T2_MIB} MiB f32 each",
            f"{format_ns(two / per_call)}/call", f"1 thread both {format_ns(one / per_call)}/call",
            f"{speedup:.2f}x faster", f">= {needed:.2f}x (1.3x, or 0.9x numpy's)", ok),
        Row("  reference: np.add(d, x, out=d), same split", f"{format_ns(np_two / per_call)}/call",
            f"1 thread {format_ns(np_one / per_call)}/call", f"{np_speedup:.2f}x faster",
            "report", None),
    ]
    return {"rows": rows, "two_threads_ns": two, "one_thread_ns": one, "speedup": speedup,
            "numpy_two_threads_ns": np_two, "numpy_one_thread_ns": np_one,
            "numpy_speedup": np_speedup, "needed_speedup": needed, "cores": cores}


def microbatch_peak_bytes(microbatches: int, rows_per_microbatch: int = 256,
                          features: int = 64) -> int:
    """Traced peak of one accumulate_microbatches call on a fresh workspace (a
    float32 FC -> Tanh -> SquaredL2Distance -> AveragedLoss net)."""

    rng = np.random.default_rng(0)
    rows = microbatches * rows_per_microbatch
    net = so.Net("bench_microbatch")
    net.FC(["X", "W", "b"], ["h"])
    net.Tanh(["h"], ["a"])
    net.SquaredL2Distance(["a", "Y"], ["dist"])
    net.AveragedLoss(["dist"], ["loss"])
    so.add_gradient_ops(net, ["loss"])
    batch = {"X": rng.standard_normal((rows, features)).astype(np.float32),
             "Y": rng.standard_normal((rows, features)).astype(np.float32)}
    ws = so.Workspace()
    ws.feed_blob("W", (rng.standard_normal((features, features)) * 0.1).astype(np.float32))
    ws.feed_blob("b", np.zeros(features, np.float32))
    gc.collect()
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        accumulate_microbatches(net, ws, batch, microbatches, ["W", "b"], ["loss"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        if started:
            tracemalloc.stop()
    return peak - start


for _case in (
    Case("T1", "accumulate vs numpy add(dst, scale*src, out=dst)", "<= 1.0x numpy's time",
         measure_t1),
    Case("T2", "two threads accumulating into two arrays",
         ">= 1.3x one thread (2 free cores), else >= 0.9x numpy's split",
         measure_t2),
):
    register(_case)
del _case
