"""asv benchmarks of the operator layer: performance.md targets O1 and O2.

Fixtures and ratio measurements come from :mod:`scopeops.bench.operator_cases`, so the
logic exists once. ``time_*`` times one operation or its reference; ``track_*``
reports the ratios and bytes measured side by side in one process.
"""

import functools

from scopeops.bench import operator_cases as so_ops

_o1 = functools.cache(so_ops.O1Fixture)
_o1_large = functools.cache(lambda: so_ops.O1Fixture(n=so_ops.O1_SIZE_LARGE))
_o1_while = functools.cache(so_ops.O1WhileFixture)
_o2 = functools.cache(so_ops.O2Fixture)


class DoLoop:
    """O1: 32 forward Do steps (FC, Tanh, Mul, 64x64 float32) and their gradients."""

    def setup(self):
        self.fixture = _o1()
        self.fixture.run()   # the first run builds each step's sub-net: not the steady state

    def time_do_loop_with_gradients(self):
        self.fixture.run()

    def time_numpy_reference(self):
        self.fixture.reference()


class DoLoopLarge:
    """O1, second fixture: the same recurrence at 128x128 float32."""

    def setup(self):
        self.fixture = _o1_large()
        self.fixture.run()

    def time_do_loop_with_gradients(self):
        self.fixture.run()

    def time_numpy_reference(self):
        self.fixture.reference()


class WhileLoop:
    """Tracked beside O1: the same recurrence as a 32-step While loop, with gradients."""

    def setup(self):
        self.fixture = _o1_while()
        self.fixture.run()

    def time_while_loop_with_gradients(self):
        self.fixture.run()

    def time_numpy_reference(self):
        self.fixture.reference()


class Dispatch:
    """O2: a net of 100 Copy ops on one-element tensors."""

    def setup(self):
        self.fixture = _o2()
        self.fixture.run()

    def time_net_of_100_copies(self):
        self.fixture.run()

    def time_bare_numpy_copies(self):
        self.fixture.bare()


class OperatorRatios:
    """The O1/O2 figures of ``python -m scopeops.bench``."""

    def setup_cache(self):
        o1 = so_ops.measure_o1(quick=True)
        o2 = so_ops.measure_o2(quick=True)
        return {"o1_ratio": o1["ratio"], "o1_growth": o1["growth_bytes"],
                "o1_large_ratio": o1["ratio_large"],
                "o1_large_growth": o1["growth_large_bytes"],
                "o1_while_ratio": o1["ratio_while"],
                "o1_while_growth": o1["growth_while_bytes"],
                "o2_overhead": o2["overhead_ns"]}

    def track_o1_ratio_to_numpy(self, figures):
        return figures["o1_ratio"]

    track_o1_ratio_to_numpy.unit = "ratio"

    def track_o1_memory_growth_100_iterations(self, figures):
        return figures["o1_growth"]

    track_o1_memory_growth_100_iterations.unit = "bytes"

    def track_o1_large_ratio_to_numpy(self, figures):
        return figures["o1_large_ratio"]

    track_o1_large_ratio_to_numpy.unit = "ratio"

    def track_o1_large_memory_growth_100_iterations(self, figures):
        return figures["o1_large_growth"]

    track_o1_large_memory_growth_100_iterations.unit = "bytes"

    def track_o1_while_ratio_to_numpy(self, figures):
        return figures["o1_while_ratio"]

    track_o1_while_ratio_to_numpy.unit = "ratio"

    def track_o1_while_memory_growth_100_iterations(self, figures):
        return figures["o1_while_growth"]

    track_o1_while_memory_growth_100_iterations.unit = "bytes"

    def track_o2_overhead_per_op(self, figures):
        return figures["o2_overhead"]

    track_o2_overhead_per_op.unit = "ns"
