"""The performance targets of docs/performance.md, measured side by side as ratios.

Every case that has a target times its reference in the same run (an empty
cdef-method call, ``dict.get``, ``collections.ChainMap``, ``numpy.copyto``...)
and reports the ratio, so a figure holds whatever the machine's speed that
minute. asv (``benchmarks/``) keeps the history and reuses the fixtures and
measurements defined here, so the logic exists once.

- :mod:`~scopeops.bench.timing`: timed loops, interleaved comparisons, traced memory;
- :mod:`~scopeops.bench.registry`: the cases; one module per group registers its own:
  :mod:`~scopeops.bench.core_cases` (C1-C8, M1), :mod:`~scopeops.bench.operator_cases`
  (O1, O2), :mod:`~scopeops.bench.accumulation_cases` (T1, T2),
  :mod:`~scopeops.bench.scope_cases` (T3), :mod:`~scopeops.bench.distributed_cases` (D1,
  on local Dask clusters);
- :mod:`~scopeops.bench.report`: the table (``python -m scopeops.bench [--quick]
  [--only C1,C5]``, or ``scopeops bench``).
"""

# Importing a group's module registers its cases; the table lists them in this order.
# isort: off
from scopeops.bench import core_cases
from scopeops.bench import operator_cases
from scopeops.bench import accumulation_cases
from scopeops.bench import scope_cases
from scopeops.bench import distributed_cases
# isort: on
from scopeops.bench.registry import CASES, Case, Row, register, run_case
from scopeops.bench.report import format_table, main, select
from scopeops.bench.timing import ASV_BATCH, Loop, compare, traced_growth

__all__ = [
    "ASV_BATCH",
    "CASES",
    "Case",
    "Loop",
    "Row",
    "accumulation_cases",
    "compare",
    "core_cases",
    "distributed_cases",
    "format_table",
    "main",
    "operator_cases",
    "register",
    "run_case",
    "scope_cases",
    "select",
    "traced_growth",
]
