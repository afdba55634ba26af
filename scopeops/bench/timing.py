"""Timing helpers: statements compiled into tight loops, interleaved comparisons,
traced memory growth, and whether a call releases the GIL.

A figure is always a ratio to a reference measured in the same run: operation and
reference alternate within every one of many short rounds, and each keeps its fastest
round, so a slow spell of the shared machine hits both alike and most rounds escape
it. The spread of the round-by-round ratios is reported beside.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

__all__ = [
    "ASV_BATCH",
    "LOW_QUANTILE",
    "Loop",
    "Timings",
    "UNROLL",
    "calibrate",
    "compare",
    "effort",
    "format_bytes",
    "format_ns",
    "format_ratio",
    "gil_released_calls",
    "interleave",
    "quantile",
    "traced_growth",
    "tracing",
]

_now_ns = time.perf_counter_ns
_repeat = itertools.repeat

# Statements are unrolled this many times per loop iteration, so that the
# interpreter's loop overhead is a small fraction of a nanosecond-scale call.
UNROLL = 10
# Operations per call of an asv time_* body (asv may time every call alone).
ASV_BATCH = 1000


class Loop:
    """A statement compiled into a tight timed loop, like ``timeit`` does.

    The names in ``env`` are bound as default arguments, so the statement reads
    them as fast locals; the statement is repeated ``unroll`` times per
    iteration. Operation and reference built the same way pay the same overhead.
    """

    def __init__(self, stmt: str, env: Mapping[str, Any] | None = None, unroll: int = UNROLL):
        env = dict(env or {})
        for name in env:
            if not name.isidentifier() or name.startswith("_"):
                raise ValueError(f"bad loop variable name {name!r}")
        params = "".join(f", {name}=_env[{name!r}]" for name in env)
        body = "".join(f"        {stmt}\n" for _ in range(unroll))
        source = (f"def _loop(_it, _now{params}):\n"
                  f"    _t0 = _now()\n"
                  f"    for _ in _it:\n"
                  f"{body}"
                  f"    return _now() - _t0\n")
        namespace: dict[str, Any] = {"_env": env}
        exec(compile(source, f"<scopeops.bench: {stmt}>", "exec"), namespace)
        self.stmt = stmt
        self.unroll = unroll
        self._fn = namespace["_loop"]

    def run_ns(self, iterations: int) -> int:
        """Total ns for ``iterations`` loop iterations, garbage collection off."""
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._fn(_repeat(None, iterations), _now_ns)
        finally:
            if gc_was_enabled:
                gc.enable()

    def batch(self, ops: int = ASV_BATCH) -> Callable[[], None]:
        """A zero-argument callable running ``ops`` statements (an asv time_* body)."""
        fn = self._fn
        iterations = max(1, ops // self.unroll)

        def run_batch() -> None:
            fn(_repeat(None, iterations), _now_ns)

        return run_batch


def effort(quick: bool) -> tuple[int, int]:
    """(rounds, target ns per sample): many short rounds, so that each loop has rounds
    that no other process interrupted, and its fastest one is one of those."""
    return (40, 1_000_000) if quick else (240, 1_000_000)


def calibrate(loop: Loop, sample_ns: int) -> int:
    """Iterations for one sample to last about ``sample_ns`` (also warms the loop)."""
    iterations = 1
    while True:
        elapsed = loop.run_ns(iterations)
        if elapsed >= sample_ns // 4 or iterations >= 1 << 30:
            return max(1, int(iterations * sample_ns / max(elapsed, 1)))
        iterations *= 4


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank, 0 <= q <= 1)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


#: A loop's figure is this quantile of its rounds: a round no other process slowed down,
#: but not the luckiest one, whose place moves from run to run more than a low quantile's.
LOW_QUANTILE = 0.1


class Timings(dict[str, float]):
    """ns per statement of each loop: the ``LOW_QUANTILE`` of its rounds (the mapping
    itself), its fastest round (``fastest``) and every round's figure (``rounds``),
    rounds taken in turns by all the loops."""

    def __init__(self, rounds: Mapping[str, Sequence[float]]) -> None:
        super().__init__({name: quantile(values, LOW_QUANTILE)
                          for name, values in rounds.items()})
        self.rounds = {name: list(values) for name, values in rounds.items()}
        self.fastest = {name: min(values) for name, values in rounds.items()}

    def ratio(self, op: str, ref: str) -> float:
        """``op``'s figure over ``ref``'s: what a verdict compares with its target."""
        return self[op] / self[ref]

    def paired(self, op: str, ref: str) -> list[float]:
        """Round by round, ``op``'s figure over ``ref``'s (taken within the same round)."""
        return [a / b for a, b in zip(self.rounds[op], self.rounds[ref], strict=True)]

    def spread(self, op: str, ref: str) -> tuple[float, float]:
        """The 10th and 90th percentiles of the paired per-round ratios."""
        paired = self.paired(op, ref)
        return quantile(paired, 0.1), quantile(paired, 0.9)

    def spread_text(self, op: str, ref: str) -> str:
        """The paired ratios' spread, for a row: ``rounds 1.18-1.31x``."""
        low, high = self.spread(op, ref)
        return f"rounds {low:.2f}-{high:.2f}x"

    def raw(self, op: str, ref: str, key: str) -> dict[str, float]:
        """The ratio's spread under ``key`` for the JSON: p10, median and p90 of the
        paired ratios, the ratio of the fastest rounds, and the number of rounds."""
        paired = self.paired(op, ref)
        return {f"{key}_p10": quantile(paired, 0.1), f"{key}_median": quantile(paired, 0.5),
                f"{key}_p90": quantile(paired, 0.9),
                f"{key}_fastest": self.fastest[op] / self.fastest[ref],
                f"{key}_rounds": float(len(paired))}


def compare(loops: Mapping[str, Loop], quick: bool) -> Timings:
    """ns per statement of each loop, sampled in many short interleaved rounds.

    Every round runs each loop once (a sample of about a millisecond), in an order
    that rotates from round to round, so a slow spell of the machine hits them
    alike. Each loop's low quantile is the estimate least disturbed by other
    processes; every round is kept, for the spread of the paired ratios.
    """
    rounds, sample_ns = effort(quick)
    names = list(loops)
    iterations = {name: calibrate(loops[name], sample_ns) for name in names}
    figures: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            loop = loops[name]
            per_op = loop.run_ns(iterations[name]) / (iterations[name] * loop.unroll)
            figures[name].append(per_op)
    return Timings(figures)


def interleave(samplers: Mapping[str, Callable[[], float]], rounds: int) -> Timings:
    """``compare`` for figures a sampler measures itself (one call, one figure)."""
    names = list(samplers)
    figures: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            figures[name].append(samplers[name]())
    return Timings(figures)


@contextlib.contextmanager
def tracing() -> Iterator[None]:
    """tracemalloc on for the block (left as found if someone already traces)."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        yield
    finally:
        if started:
            tracemalloc.stop()


def traced_growth(call: Callable[..., Any], args: tuple[Any, ...], calls: int) -> tuple[int, int]:
    """(growth, peak above the start) of traced memory, in bytes, over ``calls`` calls."""
    for _ in _repeat(None, 1000):
        call(*args)  # first-sight registrations and caches are not the steady state
    gc.collect()
    it = _repeat(None, calls)
    with tracing():
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            # Objects a call replaces (a rebound workspace's new Blob objects, say) were
            # allocated untraced by the warm-up: a first traced call swaps them for traced
            # ones, which would count as growth although the live set has not grown.
            call(*args)
            tracemalloc.reset_peak()
            start = tracemalloc.get_traced_memory()[0]
            for _ in it:
                call(*args)
            end, peak = tracemalloc.get_traced_memory()
        finally:
            if gc_was_enabled:
                gc.enable()
    return end - start, peak - start


# -- formatting -----------------------------------------------------------------


def format_ns(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f} ms"
    if value >= 1e3:
        return f"{value / 1e3:.2f} us"
    return f"{value:.1f} ns"


def format_bytes(value: float) -> str:
    if abs(value) >= 1 << 20:
        return f"{value / (1 << 20):.1f} MiB"
    if abs(value) >= 1 << 10:
        return f"{value / (1 << 10):.1f} KiB"
    return f"{int(value)} B"


def format_ratio(ratio: float) -> str:
    return f"{ratio:.2f}x"




def gil_released_calls(works: Mapping[str, Callable[[], Any]], calls: int = 10) -> dict[str, int]:
    """For each call in ``works``, in how many of ``calls`` calls another Python thread ran.

    With a switch interval of a second the main thread never hands the GIL
    over while it runs Python code, and a spinner thread that gives the GIL
    back after every step cannot hold it either: the spinner advances during a
    call only if the call itself released the GIL. A call that holds it scores
    0 whatever the load; a busy machine (no free core for the spinner) can only
    lower the score of one that releases it.
    """
    counter = [0]
    stop = threading.Event()
    started = threading.Event()

    def spin() -> None:
        started.set()
        while not stop.is_set():
            counter[0] += 1
            time.sleep(0)  # releases the GIL

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1.0)
    spinner = threading.Thread(target=spin, daemon=True)
    hits = {name: 0 for name in works}
    try:
        spinner.start()
        started.wait()
        for _ in range(calls):
            for name, work in works.items():
                before = counter[0]
                work()
                if counter[0] != before:
                    hits[name] += 1
    finally:
        stop.set()
        spinner.join()
        sys.setswitchinterval(old_interval)
    return hits
