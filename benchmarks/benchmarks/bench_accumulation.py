"""asv benchmarks of gradient accumulation: targets T1 and T2, and micro-batch memory.

Fixtures and ratio measurements come from :mod:`scopeops.bench_accumulate`, so
the logic exists once. ``time_*`` times one operation or its reference;
``track_*`` reports the ratios and bytes measured side by side in one process.
"""

import functools

import numpy as np

import scopeops as so
from scopeops.bench import accumulation_cases as so_acc

_t1 = functools.cache(so_acc.AccumulateFixture)


class Accumulate:
    """T1: dst += scale * src on float32 arrays of 4 MiB, and numpy's two-pass form."""

    def setup(self):
        fixture = _t1()
        self.dst, self.src = fixture.dst, fixture.src

    def time_accumulate(self):
        so.accumulate(self.dst, self.src, 0.5)

    def time_numpy_add_scaled(self):
        np.add(self.dst, 0.5 * self.src, out=self.dst)

    def time_accumulate_scale_one(self):
        so.accumulate(self.dst, self.src, 1.0)

    def time_numpy_add_scale_one(self):
        np.add(self.dst, 1.0 * self.src, out=self.dst)

    def time_numpy_add_bare(self):
        np.add(self.dst, self.src, out=self.dst)


class AccumulateThreads:
    """T2: two threads accumulating into two arrays, and one thread doing both."""

    def setup(self):
        self.fixture = so_acc.ThreadFixture()
        self.fixture.one_thread_ns()

    def teardown(self):
        self.fixture.close()

    def time_two_threads(self):
        self.fixture.two_threads_ns()

    def time_one_thread_both(self):
        self.fixture.one_thread_ns()


class AccumulateRatios:
    """The T1/T2 figures of ``python -m scopeops.bench``, and micro-batch peaks."""

    def setup_cache(self):
        t1 = so_acc.measure_t1(quick=True)
        t2 = so_acc.measure_t2(quick=True)
        return {"t1_ratio": t1["ratio"], "t1_ratio_scale1": t1["ratio_scale1"],
                "t2_speedup": t2["speedup"], "t2_numpy_speedup": t2["numpy_speedup"],
                "peak_4": so_acc.microbatch_peak_bytes(4),
                "peak_16": so_acc.microbatch_peak_bytes(16)}

    def track_t1_ratio_to_numpy(self, figures):
        return figures["t1_ratio"]

    track_t1_ratio_to_numpy.unit = "ratio"

    def track_t1_ratio_to_numpy_scale_one(self, figures):
        return figures["t1_ratio_scale1"]

    track_t1_ratio_to_numpy_scale_one.unit = "ratio"

    def track_t2_two_thread_speedup(self, figures):
        return figures["t2_speedup"]

    track_t2_two_thread_speedup.unit = "ratio"

    def track_t2_numpy_two_thread_speedup(self, figures):
        return figures["t2_numpy_speedup"]

    track_t2_numpy_two_thread_speedup.unit = "ratio"

    def track_microbatch_peak_4(self, figures):
        return figures["peak_4"]

    track_microbatch_peak_4.unit = "bytes"

    def track_microbatch_peak_16(self, figures):
        return figures["peak_16"]

    track_microbatch_peak_16.unit = "bytes"
