"""asv benchmarks of the compiled core: performance.md targets C1-C8 and M1.

Fixtures, timed statements and ratio measurements come from
:mod:`scopeops.bench.core_cases`, so the logic exists once.

- ``time_*``: one operation, or its reference, in its own benchmark. A call
  runs a batch of ``scopeops.bench.ASV_BATCH`` (1,000) statements compiled into
  a tight loop (nanosecond calls cannot be timed one by one; asv may time each
  call alone when a class has a ``setup``), so ns per operation = asv's figure
  / 1,000. Exceptions: the 64 MiB copies run once per call, and a clear()
  call clears ``CLEAR_STACKS`` (64) stacks that ``setup`` pushed back.
- ``track_*`` in :class:`Ratios`: the ratios of ``python -m scopeops.bench``,
  measured side by side in one process by ``setup_cache``.
- ``track_*`` bytes and ``peakmem_*`` in :class:`Memory`: C7 and M1.
"""

import functools

import scopeops as so
from scopeops import bench as sb
from scopeops.bench import core_cases as core

BATCH = sb.ASV_BATCH

# Built once per benchmark process: setup() runs before every sample, and the
# timed statements leave these fixtures as they found them.
_push_pop_loops = functools.cache(core.push_pop_loops)
_local_lookup_loops = functools.cache(core.local_lookup_loops)
_shared_lookup_loops = functools.cache(core.shared_lookup_loops)
_tensor_loops = functools.cache(core.tensor_loops)
_copy_fixture = functools.cache(core.CopyFixture)
_clear_fixture = functools.cache(core.ClearFixture)
_empty_clear_fixture = functools.cache(core.EmptyClearFixture)
_unrelated_change = functools.cache(core.UnrelatedChangeFixture)


class PushPop:
    """C1, C2: push_forward_workspace + pop_gradient_workspace on the reuse path (1,000 pairs)."""

    def setup(self):
        self.run = {name: loop.batch(BATCH) for name, loop in _push_pop_loops().items()}

    def time_push_pop(self):
        self.run["push_pop"]()

    def time_push_pop_bindings4(self):
        self.run["push_pop_bindings4"]()

    def time_empty_cdef_pair(self):
        self.run["empty_cdef_pair"]()

    def time_empty_cdef_pair_bindings4(self):
        self.run["empty_cdef_pair_bindings4"]()

    def time_chainmap_push_pop(self):
        self.run["chainmap_push_pop"]()


class Clear:
    """C4: one clear() on each of 64 stacks; setup pushes them back to depth before each call."""

    number = 1  # a clear() after the first would find the stacks empty
    repeat = (10, 100, 10.0)

    def setup(self):
        self.run = {}
        for name, fixture in (("depth1024", _clear_fixture(1024)), ("depth1", _clear_fixture(1)),
                              ("empty", _empty_clear_fixture())):
            fixture.prepare()  # pushes back to depth, then touches its stacks
            self.run[name] = fixture.loop.batch(1)

    def time_clear_depth1(self):
        self.run["depth1"]()

    def time_clear_depth1024(self):
        self.run["depth1024"]()

    def time_empty_cdef_clear(self):
        self.run["empty"]()


class Lookup:
    """C5, C6: a local name among 100 blobs, and a name 8, 64 and 100,000 `shared` levels
    up (1,000 lookups)."""

    def setup(self):
        loops = dict(_local_lookup_loops())
        for levels in (8, 64, core.DEEP_LEVELS):
            loops.update(_shared_lookup_loops(levels))
        self.run = {name: loop.batch(BATCH) for name, loop in loops.items()}

    setup.timeout = 300

    def time_get_blob_local(self):
        self.run["get_blob_local"]()

    def time_fetch_blob_local(self):
        self.run["fetch_blob_local"]()

    def time_dict_get(self):
        self.run["dict_get"]()

    def time_lookup_shared_8(self):
        self.run["lookup_shared_8"]()

    def time_lookup_shared_64(self):
        self.run["lookup_shared_64"]()

    def time_chainmap_lookup_8(self):
        self.run["chainmap_lookup_8"]()

    def time_chainmap_lookup_64(self):
        self.run["chainmap_lookup_64"]()

    def time_lookup_shared_100000(self):
        self.run[f"lookup_shared_{core.DEEP_LEVELS}"]()


class FirstDeepLookup:
    """C6e: an unrelated workspace gains a blob, then a name 100,000 levels up is looked
    up (one of each per call); the change alone is the reference."""

    number = 1

    def setup(self):
        self.run = {name: loop.batch(1) for name, loop in _unrelated_change().loops.items()}

    setup.timeout = 300

    def time_change_then_deep_lookup(self):
        self.run["change_then_lookup"]()

    def time_unrelated_change(self):
        self.run["change"]()


class NewName:
    """N1: ``ws[new] = 1`` for 10,000 fresh names in a child workspace, and ChainMap's
    ``child[new] = 1`` (one pass per call; the target is made anew, untimed, each time)."""

    def setup(self):
        self.fixture = core.NewNameFixture()

    def time_workspace_new_names(self):
        self.fixture.workspace_pass()

    def time_chainmap_new_names(self):
        self.fixture.chainmap_pass()


class Tensor:
    """C7 timed: Blob.tensor with an unchanged shape, feed_blob over an existing blob
    (1,000 calls)."""

    def setup(self):
        self.run = {name: loop.batch(BATCH) for name, loop in _tensor_loops().items()}

    def time_tensor_reuse(self):
        self.run["tensor_reuse"]()

    def time_feed_blob_existing(self):
        self.run["feed_blob_existing"]()


class CopyForwarded:
    """C8: one snapshot iteration (push with x bound, copy_forwarded_tensors, pop) of 64 MiB."""

    timeout = 120

    def setup(self):
        loops = _copy_fixture().loops
        self.copy_forwarded = loops["copy_forwarded"].batch(1)
        self.numpy_copyto = loops["numpy_copyto"].batch(1)

    def time_copy_forwarded_64mib(self):
        self.copy_forwarded()

    def time_numpy_copyto_64mib(self):
        self.numpy_copyto()


class Ratios:
    """The ratios of ``python -m scopeops.bench --quick``, operation and reference side by side."""

    unit = "ratio"

    def setup_cache(self):
        figures = {}
        for case in sb.CASES:
            if case.id in ("C1", "C2", "C3", "C4", "C5", "C6", "C6e", "C8", "N1"):
                result = case.measure(True)
                figures[case.id] = {key: value for key, value in result.items()
                                    if isinstance(value, (int, float))}
        return figures

    setup_cache.timeout = 300

    def track_c1_push_pop_vs_empty_pair(self, figures):
        return figures["C1"]["ratio_empty"]

    def track_c1_speedup_vs_chainmap(self, figures):
        return figures["C1"]["speedup_chainmap"]

    def track_c2_push_pop_bindings4_vs_empty_pair(self, figures):
        return figures["C2"]["ratio_empty"]

    def track_c3_nogil_push_pop_ns(self, figures):
        return figures["C3"]["nogil_push_pop_ns"]

    track_c3_nogil_push_pop_ns.unit = "ns"

    def track_c3_nogil_push_pop_call_ns(self, figures):
        # The same pair through function pointers: the out-of-line calls, beside the
        # inline API a cimporting module compiles in (track_c3_nogil_push_pop_ns).
        return figures["C3"]["nogil_push_pop_call_ns"]

    track_c3_nogil_push_pop_call_ns.unit = "ns"

    def track_c3_nogil_empty_pair_ns(self, figures):
        return figures["C3"]["nogil_empty_pair_ns"]

    track_c3_nogil_empty_pair_ns.unit = "ns"

    def track_c4_clear_depth1024_vs_depth1(self, figures):
        return figures["C4"]["ratio_depth"]

    def track_c4_clear_vs_empty_clear(self, figures):
        return figures["C4"]["ratio_empty"]

    def track_c5_get_blob_vs_dict_get(self, figures):
        return figures["C5"]["ratio_get_blob"]

    def track_c5_fetch_blob_vs_dict_get(self, figures):
        return figures["C5"]["ratio_fetch_blob"]

    def track_c6_shared_8_speedup_vs_chainmap(self, figures):
        return figures["C6"]["speedup_chainmap_8"]

    def track_c6_shared_64_speedup_vs_chainmap(self, figures):
        return figures["C6"]["speedup_chainmap_64"]

    def track_c6_shared_8_vs_local(self, figures):
        return figures["C6"]["ratio_local_8"]

    def track_c6_shared_64_vs_local(self, figures):
        return figures["C6"]["ratio_local_64"]

    def track_c6_shared_100000_vs_local(self, figures):
        return figures["C6"][f"ratio_local_{core.DEEP_LEVELS}"]

    def track_c6e_first_deep_lookup_after_unrelated_change_ns(self, figures):
        return figures["C6e"]["first_lookup_after_unrelated_change_ns"]

    track_c6e_first_deep_lookup_after_unrelated_change_ns.unit = "ns"

    def track_n1_new_name_vs_chainmap(self, figures):
        return figures["N1"]["ratio_chainmap"]

    def track_c8_throughput_vs_copyto(self, figures):
        return figures["C8"]["ratio_throughput"]

    def track_c8_gil_released_loops_of_10(self, figures):
        return figures["C8"]["gil_released_calls"]

    track_c8_gil_released_loops_of_10.unit = "count"


class Memory:
    """C7 and M1: traced bytes (tracemalloc) and the process's peak memory."""

    unit = "bytes"

    def track_c7_tensor_reuse_growth_bytes(self):
        call, args = core.tensor_reuse_call()
        return sb.traced_growth(call, args, 100_000)[0]

    def track_c7_feed_blob_existing_growth_bytes(self):
        call, args = core.feed_blob_existing_call()
        return sb.traced_growth(call, args, 100_000)[0]

    def track_m1_residue_bytes(self):
        return core.memory_after_release(10_000)["residue_bytes"]

    def track_m1_held_bytes(self):
        return core.memory_after_release(10_000)["held_bytes"]


class PeakMemory:
    """M1 and C7 as peak resident memory of the whole process (its imports included)."""

    def setup(self):
        self.parent = so.Workspace()
        self.stack = so.WorkspaceStack()
        self.tensor, self.tensor_args = core.tensor_reuse_call()

    def peakmem_push_10000_clear_release(self):
        push = self.stack.push_forward_workspace
        for _ in range(10_000):
            push(self.parent)
        self.stack.clear()
        self.stack.release()

    def peakmem_tensor_reuse_100000(self):
        tensor, args = self.tensor, self.tensor_args
        for _ in range(100_000):
            tensor(*args)
