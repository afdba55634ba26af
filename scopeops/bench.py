"""The performance targets of performance.md, measured side by side as ratios.

Every case that has a target times its reference in the same run (an empty
cdef-method call, ``dict.get``, ``collections.ChainMap``, ``numpy.copyto``...)
and reports the ratio, so a figure holds whatever the machine's speed that
minute. asv (``benchmarks/``) keeps the history and reuses the fixtures and
``measure`` functions defined here, so the logic exists once.

Run ``python -m scopeops.bench [--quick] [--only C1,C5]``. Later layers append
their own cases (operators, toolkit) with :func:`register`.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import itertools
import sys
import threading
import time
import tracemalloc
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import scopeops as so
from scopeops._benchsupport import EmptyMethods, nogil_empty_pair_ns, nogil_push_pop_ns

__all__ = [
    "CASES",
    "Case",
    "Loop",
    "Row",
    "compare",
    "gil_released_calls",
    "main",
    "register",
    "run_case",
    "select",
    "traced_growth",
]

_now_ns = time.perf_counter_ns
_repeat = itertools.repeat

# Statements are unrolled this many times per loop iteration, so that the
# interpreter's loop overhead is a small fraction of a nanosecond-scale call.
UNROLL = 10
# Operations per call of an asv time_* body (asv may time every call alone).
ASV_BATCH = 1000


# -- the case registry ----------------------------------------------------------


@dataclass
class Row:
    """One line of the table: a figure beside its reference, and the verdict."""

    what: str
    figure: str
    reference: str
    ratio: str
    target: str
    ok: bool | None  # None: reported, no target yet


@dataclass(frozen=True)
class Case:
    """A target of performance.md.

    ``measure(quick)`` returns a dict with ``"rows"`` (a list of :class:`Row`),
    ``"ok"`` (True/False, None when there is only something to report) and the
    raw figures under descriptive keys (ns, bytes, ratios), which asv tracks.
    """

    id: str
    what: str
    target: str
    measure: Callable[[bool], dict[str, Any]] = field(repr=False)


CASES: list[Case] = []


def register(case: Case) -> Case:
    """Append ``case`` to :data:`CASES` (ids are unique); returns it."""
    if any(existing.id == case.id for existing in CASES):
        raise ValueError(f"a benchmark case {case.id} is already registered")
    CASES.append(case)
    return case


def run_case(case: Case, quick: bool) -> dict[str, Any]:
    """``case.measure(quick)`` with the verdict derived from its rows if it set none."""
    result = case.measure(quick)
    if "ok" not in result:
        verdicts = [row.ok for row in result["rows"] if row.ok is not None]
        result["ok"] = all(verdicts) if verdicts else None
    return result


# -- timing ---------------------------------------------------------------------


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


def _effort(quick: bool) -> tuple[int, int]:
    """(rounds, target ns per sample)."""
    return (7, 5_000_000) if quick else (20, 10_000_000)


def _calibrate(loop: Loop, sample_ns: int) -> int:
    """Iterations for one sample to last about ``sample_ns`` (also warms the loop)."""
    iterations = 1
    while True:
        elapsed = loop.run_ns(iterations)
        if elapsed >= sample_ns // 4 or iterations >= 1 << 30:
            return max(1, int(iterations * sample_ns / max(elapsed, 1)))
        iterations *= 4


def compare(loops: Mapping[str, Loop], quick: bool) -> dict[str, float]:
    """Min ns per statement of each loop, sampled in interleaved rounds.

    Operation and references alternate within every round (in a rotating
    order), so a slow spell of the machine hits them alike; the minimum is the
    estimate least disturbed by other processes.
    """
    rounds, sample_ns = _effort(quick)
    names = list(loops)
    iterations = {name: _calibrate(loops[name], sample_ns) for name in names}
    best = {name: float("inf") for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            loop = loops[name]
            per_op = loop.run_ns(iterations[name]) / (iterations[name] * loop.unroll)
            best[name] = min(best[name], per_op)
    return best


@contextlib.contextmanager
def _tracing() -> Iterator[None]:
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
    with _tracing():
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
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


def _ns(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f} ms"
    if value >= 1e3:
        return f"{value / 1e3:.2f} us"
    return f"{value:.1f} ns"


def _bytes(value: float) -> str:
    if abs(value) >= 1 << 20:
        return f"{value / (1 << 20):.1f} MiB"
    if abs(value) >= 1 << 10:
        return f"{value / (1 << 10):.1f} KiB"
    return f"{int(value)} B"


def _x(ratio: float) -> str:
    return f"{ratio:.2f}x"


# -- fixtures (shared with the asv suite) -----------------------------------------


BINDINGS4 = {"a": "a", "b": "b", "c": "c", "d": "d"}


def push_pop_loops() -> dict[str, Loop]:
    """C1/C2: push+pop pairs on the reuse path, and their references.

    Calls are written as callers write them (``stack.push_forward_workspace(p)``,
    attribute lookup included), operation and reference alike.
    """
    parent = so.Workspace()
    stack = so.WorkspaceStack()
    parent4 = so.Workspace()
    for name in BINDINGS4.values():
        parent4.feed_blob(name, 0.0)
    stack4 = so.WorkspaceStack()
    bindings = dict(BINDINGS4)
    # The first push allocates; every timed push reuses the dormant workspace.
    stack.push_forward_workspace(parent)
    stack.pop_gradient_workspace(parent)
    stack4.push_forward_workspace(parent4, bindings)
    stack4.pop_gradient_workspace(parent4)
    empty = EmptyMethods()
    scope = collections.ChainMap({"x": 1.0})
    return {
        "push_pop": Loop(
            "stack.push_forward_workspace(parent); stack.pop_gradient_workspace(parent)",
            {"stack": stack, "parent": parent}),
        "empty_cdef_pair": Loop("empty.push(parent); empty.pop(parent)",
                                {"empty": empty, "parent": parent}),
        "chainmap_push_pop": Loop("scope.new_child().parents", {"scope": scope}),
        "push_pop_bindings4": Loop(
            "stack.push_forward_workspace(parent, bindings); stack.pop_gradient_workspace(parent)",
            {"stack": stack4, "parent": parent4, "bindings": bindings}),
        "empty_cdef_pair_bindings4": Loop(
            "empty.push(parent, bindings); empty.pop(parent)",
            {"empty": empty, "parent": parent4, "bindings": bindings}),
    }


def _each(stmt: str, objects: Sequence[Any]) -> Loop:
    """``stmt`` (about ``s``) unrolled over ``objects``, run once per sample."""
    return Loop("; ".join(stmt.replace("s.", f"s{i}.") for i in range(len(objects))),
                {f"s{i}": obj for i, obj in enumerate(objects)}, unroll=1)


CLEAR_STACKS = 64


class ClearFixture:
    """``stacks`` WorkspaceStacks that :meth:`prepare` pushes back to ``depth``.

    clear() is O(1), so one call after one restore is the only honest sample,
    and a single ~10 ns call is below what a clock read resolves. A sample is
    therefore one clear() on each of ``stacks`` stacks, unrolled, all at the
    same depth. :meth:`prepare` then touches every stack, so that depth 1 and
    depth 1,024 (whose pushes sweep megabytes through the caches) start equally
    warm: the comparison is about what clear() does, not about cache state.
    """

    def __init__(self, depth: int, stacks: int = CLEAR_STACKS):
        self.depth = depth
        self.parent = so.Workspace()
        self.stacks = [so.WorkspaceStack() for _ in range(stacks)]
        self._pushes = [stack.push_forward_workspace for stack in self.stacks]
        self._touch = _each("s.__class__", self.stacks)
        self.loop = _each("s.clear()", self.stacks)
        self.prepare()

    def prepare(self) -> None:
        parent = self.parent
        for stack in self.stacks:
            stack.clear()  # idempotent: whatever ran before, the stacks end at ``depth``
        for _ in _repeat(None, self.depth):
            for push in self._pushes:
                push(parent)
        self._touch.run_ns(1)


class EmptyClearFixture:
    """The C4 reference: the same unrolled statement on EmptyMethods objects."""

    def __init__(self, stacks: int = CLEAR_STACKS):
        self.objects = [EmptyMethods() for _ in range(stacks)]
        self._touch = _each("s.__class__", self.objects)
        self.loop = _each("s.clear()", self.objects)

    def prepare(self) -> None:
        self._touch.run_ns(1)


LOCAL_BLOBS = 100


def local_lookup_loops(blobs: int = LOCAL_BLOBS) -> dict[str, Loop]:
    """C5: lookups of a local name in a workspace of ``blobs`` blobs, and dict.get."""
    ws = so.Workspace()
    names = [f"blob_{i:03d}" for i in range(blobs)]
    for i, name in enumerate(names):
        ws.feed_blob(name, float(i))
    same_size = {name: ws.get_blob(name) for name in names}
    name = names[blobs // 2]
    return {
        "get_blob_local": Loop("ws.get_blob(name)", {"ws": ws, "name": name}),
        "fetch_blob_local": Loop("ws.fetch_blob(name)", {"ws": ws, "name": name}),
        "dict_get": Loop("same_size.get(name)", {"same_size": same_size, "name": name}),
    }


def shared_lookup_loops(levels: int) -> dict[str, Loop]:
    """C6: a name ``levels`` workspaces up a ``shared`` chain, ChainMap, and a local lookup."""
    base = so.Workspace()
    base.feed_blob("x", 1.0)
    ws = base
    for _ in range(levels):
        ws = so.Workspace(shared=ws)
    scope = collections.ChainMap(*([{} for _ in range(levels)] + [{"x": 1.0}]))
    return {
        f"lookup_shared_{levels}": Loop("ws.get_blob(name)", {"ws": ws, "name": "x"}),
        f"chainmap_lookup_{levels}": Loop("scope[name]", {"scope": scope, "name": "x"}),
        "local": Loop("ws.get_blob(name)", {"ws": base, "name": "x"}),
    }


TENSOR_SHAPE = (256, 256)


def tensor_reuse_call() -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """C7: Blob.tensor with an unchanged shape and dtype, as (call, args)."""
    blob = so.Blob()
    blob.tensor(TENSOR_SHAPE, np.float32)
    return blob.tensor, (TENSOR_SHAPE, np.float32)


def feed_blob_existing_call() -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """C7: feed_blob of the same array over an existing blob, as (call, args)."""
    ws = so.Workspace()
    value = np.zeros(TENSOR_SHAPE, np.float32)
    ws.feed_blob("x", value)
    return ws.feed_blob, ("x", value)


def tensor_loops() -> dict[str, Loop]:
    """C7 timed: the two calls whose memory C7 traces."""
    blob = so.Blob()
    blob.tensor(TENSOR_SHAPE, np.float32)
    ws = so.Workspace()
    value = np.zeros(TENSOR_SHAPE, np.float32)
    ws.feed_blob("x", value)
    return {
        "tensor_reuse": Loop("blob.tensor(shape, dtype)",
                             {"blob": blob, "shape": TENSOR_SHAPE, "dtype": np.float32}),
        "feed_blob_existing": Loop('ws.feed_blob("x", value)', {"ws": ws, "value": value}),
    }


COPY_MIB = 64


class CopyFixture:
    """C8: a parent holding a float32 tensor "x" of ``mib`` MiB, a stack, a numpy twin.

    One iteration is what a Do step with a snapshot does: push a workspace
    binding x (reuse rebinds it and recycles the last snapshot's buffer), copy
    x into it, pop. The reference copies the same bytes with numpy.copyto into
    a preallocated array. Both destinations are touched before any timing.
    """

    def __init__(self, mib: int = COPY_MIB):
        count = mib * (1 << 20) // 4
        self.source = np.arange(count, dtype=np.float32)
        self.target = np.empty_like(self.source)
        np.copyto(self.target, self.source)
        self.parent = so.Workspace()
        self.parent.feed_blob("x", self.source)
        self.stack = so.WorkspaceStack()
        self.bindings = {"x": "x"}
        env = {"stack": self.stack, "parent": self.parent, "bindings": self.bindings}
        self.loops = {
            "copy_forwarded": Loop(
                "ws = stack.push_forward_workspace(parent, bindings); "
                'ws.copy_forwarded_tensors(["x"]); stack.pop_gradient_workspace(parent)',
                env, unroll=1),
            "numpy_copyto": Loop("copyto(target, source)", {
                "copyto": np.copyto, "target": self.target, "source": self.source}, unroll=1),
        }
        self.snapshot_addresses = [self._iterate() for _ in range(3)]

    def _iterate(self) -> int:
        """One untimed iteration; the snapshot's data address (to see the buffer reused)."""
        ws = self.stack.push_forward_workspace(self.parent, self.bindings)
        ws.copy_forwarded_tensors(["x"])
        snapshot = ws.fetch_blob("x")
        if snapshot.shape != self.source.shape or snapshot[-1] != self.source[-1]:
            raise AssertionError("copy_forwarded_tensors did not copy x")
        address = snapshot.__array_interface__["data"][0]
        del snapshot
        self.stack.pop_gradient_workspace(self.parent)
        return address

    @property
    def buffer_reused(self) -> bool:
        return len(set(self.snapshot_addresses[1:])) == 1


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


def memory_after_release(depth: int = 10_000) -> dict[str, int]:
    """M1: traced bytes before, held at ``depth``, and after clear()+release()."""
    parent = so.Workspace()
    stack = so.WorkspaceStack()
    push = stack.push_forward_workspace
    it = _repeat(None, depth)
    gc.collect()
    with _tracing():
        before = tracemalloc.get_traced_memory()[0]
        for _ in it:
            push(parent)
        held = tracemalloc.get_traced_memory()[0]
        stack.clear()
        freed = stack.release()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    if freed != depth:
        raise AssertionError(f"release() freed {freed} workspaces, expected {depth}")
    return {"before_bytes": before, "held_bytes": held - before, "after_bytes": after,
            "residue_bytes": after - before, "freed": freed}


# -- the core cases --------------------------------------------------------------


def measure_c1(quick: bool) -> dict[str, Any]:
    loops = push_pop_loops()
    ns = compare({k: loops[k] for k in ("push_pop", "empty_cdef_pair", "chainmap_push_pop")},
                 quick)
    ratio = ns["push_pop"] / ns["empty_cdef_pair"]
    speedup = ns["chainmap_push_pop"] / ns["push_pop"]
    return {
        "push_pop_ns": ns["push_pop"], "empty_cdef_pair_ns": ns["empty_cdef_pair"],
        "chainmap_push_pop_ns": ns["chainmap_push_pop"],
        "ratio_empty": ratio, "speedup_chainmap": speedup,
        "rows": [
            Row("push+pop pair, reuse, no bindings", _ns(ns["push_pop"]),
                f"empty cdef pair {_ns(ns['empty_cdef_pair'])}", _x(ratio), "<= 2.5x",
                ratio <= 2.5),
            Row("  vs ChainMap new_child/parents", _ns(ns["push_pop"]),
                f"ChainMap pair {_ns(ns['chainmap_push_pop'])}", f"{speedup:.1f}x faster",
                ">= 8x faster", speedup >= 8.0),
        ],
    }


def measure_c2(quick: bool) -> dict[str, Any]:
    loops = push_pop_loops()
    ns = compare({k: loops[k] for k in ("push_pop_bindings4", "empty_cdef_pair_bindings4")},
                 quick)
    ratio = ns["push_pop_bindings4"] / ns["empty_cdef_pair_bindings4"]
    return {
        "push_pop_bindings4_ns": ns["push_pop_bindings4"],
        "empty_cdef_pair_bindings4_ns": ns["empty_cdef_pair_bindings4"],
        "ratio_empty": ratio,
        "rows": [Row("push+pop pair, 4 unchanged bindings", _ns(ns["push_pop_bindings4"]),
                     f"empty cdef pair {_ns(ns['empty_cdef_pair_bindings4'])}", _x(ratio),
                     "<= 6x", ratio <= 6.0)],
    }


def measure_c3(quick: bool) -> dict[str, Any]:
    parent = so.Workspace()
    stack = so.WorkspaceStack()
    rounds, _ = _effort(quick)
    pairs = 2_000_000 if quick else 5_000_000
    best_op = best_floor = float("inf")
    for _ in range(rounds):
        best_op = min(best_op, nogil_push_pop_ns(stack, parent, pairs))
        best_floor = min(best_floor, nogil_empty_pair_ns(stack, parent, pairs))
    ratio = best_op / best_floor
    return {
        "nogil_push_pop_ns": best_op, "nogil_empty_pair_ns": best_floor, "ratio_floor": ratio,
        "rows": [Row("nogil push+pop pair (C API)", _ns(best_op),
                     f"empty C pair {_ns(best_floor)}", _x(ratio), "<= 3 ns",
                     best_op <= 3.0)],
    }


def measure_c4(quick: bool) -> dict[str, Any]:
    # A sample: prepare a fixture (untimed), then time one unrolled pass of
    # clear() over its objects. The empty timed region is sampled alike and
    # subtracted: per call = (min sample - min empty region) / objects.
    fixtures: dict[str, ClearFixture | EmptyClearFixture | None] = {
        "depth1": ClearFixture(1), "depth1024": ClearFixture(1024),
        "empty": EmptyClearFixture(), "region": None}
    region = Loop("pass", unroll=1)
    samples: dict[str, list[int]] = {name: [] for name in fixtures}
    names = list(fixtures)
    for r in range(-5, 300 if quick else 1000):  # the first rounds warm up
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            fixture = fixtures[name]
            if fixture is None:
                elapsed = region.run_ns(1)
            else:
                fixture.prepare()
                elapsed = fixture.loop.run_ns(1)
            if r >= 0:
                samples[name].append(elapsed)
    best = {name: min(values) for name, values in samples.items()}
    calls = CLEAR_STACKS
    per_call = {name: max(best[name] - best["region"], 0) / calls
                for name in ("depth1", "depth1024", "empty")}
    depth_ratio = per_call["depth1024"] / per_call["depth1"]
    worst = max(per_call["depth1"], per_call["depth1024"])
    empty_ratio = worst / per_call["empty"]
    return {
        "clear_depth1_ns": per_call["depth1"], "clear_depth1024_ns": per_call["depth1024"],
        "empty_cdef_clear_ns": per_call["empty"], "ratio_depth": depth_ratio,
        "ratio_empty": empty_ratio,
        "rows": [
            Row("clear() at depth 1024 vs depth 1", _ns(per_call["depth1024"]),
                f"depth 1 {_ns(per_call['depth1'])}", _x(depth_ratio), "within 10%",
                abs(depth_ratio - 1.0) <= 0.10),
            Row("  clear() vs empty cdef clear()", _ns(worst),
                f"empty cdef {_ns(per_call['empty'])}", _x(empty_ratio), "<= 2x",
                empty_ratio <= 2.0),
        ],
    }


def measure_c5(quick: bool) -> dict[str, Any]:
    ns = compare(local_lookup_loops(), quick)
    get_ratio = ns["get_blob_local"] / ns["dict_get"]
    fetch_ratio = ns["fetch_blob_local"] / ns["dict_get"]
    reference = f"dict.get {_ns(ns['dict_get'])}"
    return {
        "get_blob_local_ns": ns["get_blob_local"], "fetch_blob_local_ns": ns["fetch_blob_local"],
        "dict_get_ns": ns["dict_get"], "ratio_get_blob": get_ratio, "ratio_fetch_blob": fetch_ratio,
        "rows": [
            Row(f"get_blob, local name ({LOCAL_BLOBS} blobs)", _ns(ns["get_blob_local"]),
                reference, _x(get_ratio), "<= 1.6x", get_ratio <= 1.6),
            Row(f"fetch_blob, local name ({LOCAL_BLOBS} blobs)", _ns(ns["fetch_blob_local"]),
                reference, _x(fetch_ratio), "<= 1.6x", fetch_ratio <= 1.6),
        ],
    }


def measure_c6(quick: bool) -> dict[str, Any]:
    result: dict[str, Any] = {"rows": [], "ok": None}
    for levels in (8, 64):
        ns = compare(shared_lookup_loops(levels), quick)
        op, chain, local = (ns[f"lookup_shared_{levels}"], ns[f"chainmap_lookup_{levels}"],
                            ns["local"])
        result.update({f"lookup_shared_{levels}_ns": op, f"chainmap_lookup_{levels}_ns": chain,
                       f"local_lookup_{levels}_ns": local,
                       f"speedup_chainmap_{levels}": chain / op, f"ratio_local_{levels}": op / local})
        result["rows"] += [
            Row(f"get_blob {levels} shared levels up", _ns(op), f"ChainMap {_ns(chain)}",
                f"{chain / op:.1f}x faster", "report", None),
            Row("  vs local lookup", _ns(op), f"local {_ns(local)}", _x(op / local),
                "goal <= 2x (report)", None),
        ]
    return result


def measure_c7(quick: bool) -> dict[str, Any]:
    calls = 100_000
    rows = []
    result: dict[str, Any] = {"calls": calls}
    empty = EmptyMethods()
    floor, _ = traced_growth(empty.clear, (), calls)
    result["empty_call_growth_bytes"] = floor
    for key, what, (call, args) in (
            ("tensor_reuse", "Blob.tensor, unchanged shape", tensor_reuse_call()),
            ("feed_blob_existing", "feed_blob over existing blob", feed_blob_existing_call())):
        growth, peak = traced_growth(call, args, calls)
        result[f"{key}_growth_bytes"] = growth
        result[f"{key}_peak_bytes"] = peak
        rows.append(Row(f"{what}, 10^5 calls", f"{_bytes(growth)} (peak +{_bytes(peak)})",
                        f"empty-call loop {_bytes(floor)}", "-", "flat (< 1 KiB)",
                        growth < 1024))
    result["rows"] = rows
    return result


def measure_c8(quick: bool) -> dict[str, Any]:
    fixture = CopyFixture()
    ns = compare(fixture.loops, quick)
    throughput = ns["numpy_copyto"] / ns["copy_forwarded"]
    gib_s = fixture.source.nbytes / ns["copy_forwarded"]  # bytes per ns = GB/s
    ref_gib_s = fixture.source.nbytes / ns["numpy_copyto"]
    copy_loop, ref_loop = fixture.loops["copy_forwarded"], fixture.loops["numpy_copyto"]
    calls = 10
    hits = gil_released_calls({"op": lambda: copy_loop.run_ns(1),
                               "reference": lambda: ref_loop.run_ns(1)}, calls)
    # Without a free core the spinner cannot run even beside np.copyto: no verdict.
    gil_ok = hits["op"] > 0 if hits["reference"] > 0 else None
    reused = fixture.buffer_reused
    return {
        "copy_forwarded_ns": ns["copy_forwarded"], "numpy_copyto_ns": ns["numpy_copyto"],
        "ratio_throughput": throughput, "gil_released_calls": hits["op"],
        "numpy_gil_released_calls": hits["reference"],
        "buffer_reused": reused,
        "rows": [
            Row(f"copy_forwarded_tensors {COPY_MIB} MiB f32 loop",
                f"{_ns(ns['copy_forwarded'])} ({gib_s:.1f} GB/s)",
                f"np.copyto {_ns(ns['numpy_copyto'])} ({ref_gib_s:.1f} GB/s)",
                f"{throughput:.0%} thr.", ">= 80% throughput", throughput >= 0.8),
            Row("  GIL released: other thread ran", f"in {hits['op']}/{calls} loops",
                f"np.copyto {hits['reference']}/{calls}", "-", "yes (> 0)", gil_ok),
            Row("  snapshot buffer recycled", "yes" if reused else "no", "-", "-", "yes", reused),
        ],
    }


def measure_m1(quick: bool) -> dict[str, Any]:
    figures = memory_after_release(10_000)
    fraction = figures["residue_bytes"] / figures["held_bytes"]
    return dict(figures, residue_fraction=fraction, rows=[
        Row("push 10,000, clear(), release()",
            f"{_bytes(figures['before_bytes'])} -> {_bytes(figures['after_bytes'])}",
            f"held {_bytes(figures['held_bytes'])} at depth", f"{fraction:.3%} left",
            "back within 1%", fraction <= 0.01),
    ])


for _case in (
    Case("C1", "push+pop pair, reuse path", "<= 2.5x empty cdef pair; >= 8x faster than ChainMap",
         measure_c1),
    Case("C2", "push+pop pair, 4 unchanged bindings", "<= 6x empty cdef pair", measure_c2),
    Case("C3", "nogil push+pop pair", "<= 3 ns", measure_c3),
    Case("C4", "clear()", "depth 1 vs 1024 within 10%; <= 2x empty cdef call", measure_c4),
    Case("C5", "get_blob / fetch_blob, local name", "<= 1.6x dict.get", measure_c5),
    Case("C6", "lookup through shared chains", "report vs ChainMap; goal <= 2x local", measure_c6),
    Case("C7", "tensor reuse and feed_blob allocate nothing", "tracemalloc flat over 10^5 calls",
         measure_c7),
    Case("C8", "copy_forwarded_tensors 64 MiB", ">= 80% of np.copyto throughput, GIL released",
         measure_c8),
    Case("M1", "memory after clear()+release()", "within 1% of the start", measure_m1),
):
    register(_case)
del _case


# -- the table ---------------------------------------------------------------------

_COLUMNS = ("id", "what", "figure", "reference", "ratio", "target", "ok")


def _verdict(ok: bool | None) -> str:
    return "report" if ok is None else ("yes" if ok else "NO")


def format_table(results: Sequence[tuple[Case, dict[str, Any]]]) -> str:
    """The results as a plain-text table, one line per row."""
    lines = [list(_COLUMNS)]
    for case, result in results:
        for row in result["rows"]:
            lines.append([case.id, row.what, row.figure, row.reference, row.ratio, row.target,
                          _verdict(row.ok)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(_COLUMNS))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
        if n == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(out)


def select(only: str | None) -> list[Case]:
    """The cases named in ``only`` ("C1,C5", any case), all of them for None."""
    if not only:
        return list(CASES)
    wanted = [item.strip().upper() for item in only.split(",") if item.strip()]
    known = {case.id.upper(): case for case in CASES}
    unknown = [item for item in wanted if item not in known]
    if unknown:
        raise ValueError(f"unknown case id(s): {', '.join(unknown)} "
                         f"(known: {', '.join(case.id for case in CASES)})")
    return [known[item] for item in dict.fromkeys(wanted)]


def _failed(case: Case, exc: BaseException) -> dict[str, Any]:
    """A case that raised: one row saying so (the traceback goes to stderr)."""
    traceback.print_exception(exc, file=sys.stderr)
    return {"ok": False, "rows": [Row(case.what, f"error: {type(exc).__name__}: {exc}"[:60],
                                      "-", "-", case.target, False)]}


def main(argv: Sequence[str] | None = None) -> int:
    """Measure the selected cases and print the table; the exit status for ``--check``."""
    parser = argparse.ArgumentParser(
        prog="scopeops bench",
        description="Measure scopeops' performance targets against their references "
                    "(ratios measured side by side in this run).")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (noisier figures)")
    parser.add_argument("--only", metavar="IDS", help="comma-separated case ids, e.g. C1,C5")
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 when a target is missed")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)
    _load_layer_cases()
    try:
        cases = select(args.only)
    except ValueError as exc:
        parser.error(str(exc))
    if args.list:
        for case in cases:
            print(f"{case.id:4} {case.what}: {case.target}")
        return 0
    started = time.perf_counter()
    results = []
    for case in cases:
        try:
            result = run_case(case, args.quick)
        except Exception as exc:  # one broken case must not hide the others' figures
            result = _failed(case, exc)
        results.append((case, result))
    elapsed = time.perf_counter() - started
    print(f"scopeops {so.__version__} bench ({'quick' if args.quick else 'full'}), "
          f"Python {sys.version.split()[0]}, numpy {np.__version__}")
    print(format_table(results))
    missed = [case.id for case, result in results if result["ok"] is False]
    print(f"{len(results)} cases in {elapsed:.1f} s; "
          + (f"missed: {', '.join(missed)}" if missed else "every target met"))
    return 1 if (args.check and missed) else 0


def _load_layer_cases() -> None:
    # The operator layer's cases live beside it; loading them registers them here.
    import scopeops.bench_accumulate  # noqa: F401
    import scopeops.bench_ops  # noqa: F401
    import scopeops.bench_scopes  # noqa: F401


if __name__ == "__main__":
    # Run the imported module's main, so that cases other modules register on
    # scopeops.bench are in the table (python -m loads this file a second time).
    from scopeops.bench import main as _main

    sys.exit(_main())
