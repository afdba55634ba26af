"""The ratio table: run the selected cases and print every figure beside its
reference and target (``scopeops bench``, ``python -m scopeops.bench``)."""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

import numpy as np

import scopeops as so
from scopeops.bench.registry import CASES, Case, Row, run_case

__all__ = ["format_table", "main", "select"]


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
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        out.append("  ".join(cells).rstrip())
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
