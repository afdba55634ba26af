"""The ratio table: run the selected cases and print every figure beside its
reference and target (``scopeops bench``, ``python -m scopeops.bench``), optionally
writing it as JSON (``--json FILE``) for a pipeline to keep."""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import sys
import textwrap
import time
import traceback
from collections.abc import Sequence
from typing import Any

import numpy as np

import scopeops as so
from scopeops.atomicfile import atomic_write
from scopeops.bench.registry import CASES, Case, Row, run_case
from scopeops.progress import Progress

__all__ = ["JSON_FORMAT", "LEGEND", "TABLE_WIDTH", "format_table", "main", "results_json",
           "select"]

#: The table fits this many columns: long descriptions wrap onto the line below.
TABLE_WIDTH = 100

#: What ``format`` says in a JSON file written by ``--json``; bumped when its layout changes.
JSON_FORMAT = "scopeops-bench/1"

#: Printed under the table when a target was missed.
LEGEND = ("NO = missed in this run, often noise. Stable verdict: 3 runs without --quick "
          "on a quiet machine.")

_GAP = "  "
_FIGURE_AND_UNIT = re.compile(r"\d (?:ns|us|ms|s|B|KiB|MiB|GiB|GB/s)\b")
_WHAT_AT_LEAST = 16   # the descriptive column is the one that wraps; never below this


def _verdict(ok: bool | None) -> str:
    return "report" if ok is None else ("yes" if ok else "NO")


def _wrap(cell: str, width: int) -> list[str]:
    """``cell`` in lines of at most ``width`` characters, keeping its leading indent."""
    if len(cell) <= width:
        return [cell]
    indent = cell[:len(cell) - len(cell.lstrip())]
    # A figure and its unit ("225.74 us") stay on one line.
    glued = _FIGURE_AND_UNIT.sub(lambda m: m.group(0).replace(" ", "\0"), cell.strip())
    lines = textwrap.wrap(glued, max(1, width - len(indent)), break_on_hyphens=False)
    return [indent + line.replace("\0", " ") for line in lines] or [""]


def format_table(results: Sequence[tuple[Case, dict[str, Any]]],
                 width: int = TABLE_WIDTH) -> str:
    """The results as a plain-text table within ``width`` columns.

    A row's first line holds its id, what it measures, the figure, the compared
    value (``ratio``), the target and the verdict; the line below holds the
    reference it was measured against (``vs ...``) under the figure, and the rest
    of a description too long for its column.
    """
    header = ["id", "what", "figure", "ratio", "target", "ok"]
    rows: list[tuple[list[str], str]] = []
    for case, result in results:
        for row in result["rows"]:
            reference = "" if row.reference.strip() in ("", "-") else f"vs {row.reference}"
            rows.append(([case.id, row.what, row.figure, row.ratio, row.target,
                          _verdict(row.ok)], reference))
    widths = [max(len(cells[i]) for cells in [header] + [r for r, _ in rows])
              for i in range(len(header))]
    # Everything but the description keeps its width; the description takes what is left,
    # and if that is not enough, the target, figure and ratio columns wrap too.
    others = sum(widths) - widths[1] + len(_GAP) * (len(widths) - 1)
    widths[1] = min(widths[1], max(_WHAT_AT_LEAST, width - others))
    for column, at_least in ((4, 12), (2, 10), (3, 8)):
        overflow = sum(widths) + len(_GAP) * (len(widths) - 1) - width
        if overflow > 0:
            widths[column] = max(at_least, widths[column] - overflow)
    reference_width = widths[2] + len(_GAP) + widths[3]

    def lines_of(cells: list[str], reference: str) -> list[str]:
        columns = [_wrap(cell, w) for cell, w in zip(cells, widths, strict=True)]
        below = _wrap(reference, reference_width) if reference else []
        out = []
        for k in range(max(max(len(c) for c in columns), 1 + len(below))):
            parts = [(column[k] if k < len(column) else "").ljust(w)
                     for column, w in zip(columns, widths, strict=True)]
            if 1 <= k <= len(below):
                # The reference spans the figure and ratio columns of the lines below.
                parts[2:4] = [below[k - 1].ljust(reference_width)]
            out.append(_GAP.join(parts).rstrip())
        return out

    out = lines_of(header, "vs reference")
    out.append(_GAP.join("-" * w for w in widths))
    for cells, reference in rows:
        out.extend(lines_of(cells, reference))
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
    return {"ok": False, "error": f"{type(exc).__name__}: {exc}",
            "rows": [Row(case.what, f"error: {type(exc).__name__}: {exc}"[:60],
                         "-", "-", case.target, False)]}


# -- JSON -----------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """``value`` as JSON: numpy scalars as numbers, tuples as lists, inf and nan as None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return repr(value)


def _row_json(row: Row) -> dict[str, Any]:
    return {"what": row.what, "figure": row.figure, "reference": row.reference,
            "ratio": row.ratio, "target": row.target, "ok": row.ok,
            "verdict": _verdict(row.ok)}


def results_json(results: Sequence[tuple[Case, dict[str, Any]]], quick: bool,
                 seconds: float) -> dict[str, Any]:
    """The table as a JSON-ready dict: every row as printed, each case's raw measured
    values (ns, bytes, ratios; the keys asv tracks) and the machine and versions."""
    cases = []
    for case, result in results:
        raw = {key: _plain(value) for key, value in result.items()
               if key not in ("rows", "ok", "error")}
        entry: dict[str, Any] = {
            "id": case.id, "what": case.what, "target": case.target, "ok": result["ok"],
            "verdict": _verdict(result["ok"]),
            "rows": [_row_json(row) for row in result["rows"]], "raw": raw}
        if "error" in result:
            entry["error"] = result["error"]
        cases.append(entry)
    return {
        "format": JSON_FORMAT,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "seconds": round(seconds, 3),
        "versions": {"scopeops": so.__version__, "python": platform.python_version(),
                     "python_implementation": platform.python_implementation(),
                     "numpy": np.__version__},
        "machine": {"hostname": platform.node(), "platform": platform.platform(),
                    "machine": platform.machine(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count()},
        "cases": cases,
        "missed": [case["id"] for case in cases if case["ok"] is False],
    }


def _write_json(path: str, document: dict[str, Any]) -> None:
    # A reader (a pipeline keeping figures) never sees half a file.
    with atomic_write(path, "w", encoding="utf-8") as out:
        json.dump(document, out, indent=2, allow_nan=False)
        out.write("\n")


# -- the command ----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scopeops bench",
        description="Measure scopeops' performance targets against their references "
                    "(ratios measured side by side in this run).",
        epilog="A NO in a --quick run on a busy machine is often noise: for a stable verdict "
               "run without --quick, three times, on a quiet machine.")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (noisier figures)")
    parser.add_argument("--only", metavar="IDS", help="comma-separated case ids, e.g. C1,C5")
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 when a target is missed")
    parser.add_argument("--json", metavar="FILE",
                        help="also write the table, every raw measured value, the machine "
                             "and the versions to FILE as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Measure the selected cases and print the table; the exit status for ``--check``."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        cases = select(args.only)
    except ValueError as exc:
        parser.error(str(exc))
    if args.list:
        for case in cases:
            print(f"{case.id:4} {case.what}: {case.target}")
        return 0
    if args.json is not None:
        # Checked before measuring: a long run must not end in "cannot write".
        directory = os.path.dirname(os.path.abspath(args.json))
        if os.path.isdir(args.json) or not os.path.isdir(directory):
            parser.error(f"--json {args.json}: not a file in an existing directory")
    started = time.perf_counter()
    results = []
    # A live bar in a terminal, a line per quarter through a pipe, nothing with --quiet.
    with Progress(cases, desc="measuring", unit="case", enabled=not args.quiet) as bar:
        for case in bar:
            bar.set_postfix_str(case.id, refresh=False)
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
    if missed:
        print(LEGEND)
    if args.json is not None:
        _write_json(args.json, results_json(results, args.quick, elapsed))
        print(f"wrote {args.json}")
    return 1 if (args.check and missed) else 0
