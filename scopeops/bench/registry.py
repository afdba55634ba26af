"""The registry of benchmark cases: one :class:`Case` per target of performance.md.

Each module of this package that measures a group of targets registers its cases
here when it is imported; :mod:`scopeops.bench.report` runs them and prints the table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CASES", "Case", "Row", "register", "run_case"]


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
