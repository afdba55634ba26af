"""asv benchmarks of data-parallel training on local Dask clusters: target D1.

Fixtures and the ratio measurement come from :mod:`scopeops.bench.distributed_cases`, so
the logic exists once. ``time_*`` times one DataParallel step on a cluster of 1 or 2
worker processes; ``track_*`` reports the figures of ``scopeops bench --only D1``,
measured side by side in one run. Without ``scopeops[distributed]`` these are skipped.
"""

from scopeops.bench import distributed_cases as so_dist


def _needs_dask():
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise NotImplementedError('needs pip install "scopeops[distributed]"') from None


class DataParallelStep:
    """One step of the D1 model (two shards) on a cluster of ``workers`` processes."""

    params = [1, 2]
    param_names = ["workers"]
    timeout = 300

    def setup(self, workers):
        _needs_dask()
        params, self.shards = so_dist.mlp_problem(so_dist.D1_FEATURES, so_dist.D1_HIDDEN,
                                                  so_dist.D1_ROWS)
        self.fixture = so_dist.DataParallelFixture(
            workers, so_dist.mlp("asv_d1", so_dist.D1_HIDDEN), params)
        self.fixture.seconds_per_step(self.shards, 1)      # warm: replicas built

    def teardown(self, workers):
        self.fixture.close()

    def time_step(self, workers):
        self.fixture.trainer.step(self.shards)


class DataParallelRatios:
    """The D1 figures of ``python -m scopeops.bench``."""

    timeout = 600

    def setup_cache(self):
        _needs_dask()
        d1 = so_dist.measure_d1(quick=True)
        return {name: d1[name] for name in (
            "speedup", "compute_speedup", "overhead_seconds", "compute_seconds",
            "tiny_step_seconds", "load_before")}

    def track_d1_two_worker_speedup(self, figures):
        return figures["speedup"]

    track_d1_two_worker_speedup.unit = "ratio"

    def track_d1_bare_compute_speedup(self, figures):
        return figures["compute_speedup"]

    track_d1_bare_compute_speedup.unit = "ratio"

    def track_d1_step_overhead(self, figures):
        return figures["overhead_seconds"]

    track_d1_step_overhead.unit = "seconds"

    def track_d1_tiny_step(self, figures):
        return figures["tiny_step_seconds"]

    track_d1_tiny_step.unit = "seconds"

    def track_d1_load_average(self, figures):
        return figures["load_before"]

    track_d1_load_average.unit = "load"
