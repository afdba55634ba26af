"""asv benchmarks of the toolkit's scopes: performance target T3.

Fixtures and the ratio measurement come from :mod:`scopeops.bench_scopes`, so the
logic exists once. ``time_*`` runs a batch of ``scopeops.bench.ASV_BATCH`` (1,000)
statements, so ns per statement = asv's figure / 1,000; ``track_*`` reports the
ratios measured side by side in one process.
"""

import functools

from scopeops import bench as sb
from scopeops.bench import scope_cases as so_scopes

BATCH = sb.ASV_BATCH

_loops = functools.cache(so_scopes.name_scope_loops)


class NameScopes:
    """T3: NameScope enter+exit, and a bare ContextVar set+reset pair (1,000 each)."""

    def setup(self):
        self.run = {name: loop.batch(BATCH) for name, loop in _loops().items()}

    def time_name_scope_enter_exit(self):
        self.run["name_scope"]()

    def time_name_scope_built_enter_exit(self):
        self.run["name_scope_built"]()

    def time_contextvar_set_reset(self):
        self.run["contextvar_pair"]()


class ScopeRatios:
    """The T3 figures of ``python -m scopeops.bench``."""

    def setup_cache(self):
        t3 = so_scopes.measure_t3(quick=True)
        return {"ratio": t3["ratio_contextvar"], "built_ratio": t3["ratio_built_contextvar"]}

    def track_t3_name_scope_ratio_to_contextvar_pair(self, figures):
        return figures["ratio"]

    track_t3_name_scope_ratio_to_contextvar_pair.unit = "ratio"

    def track_t3_built_name_scope_ratio_to_contextvar_pair(self, figures):
        return figures["built_ratio"]

    track_t3_built_name_scope_ratio_to_contextvar_pair.unit = "ratio"
