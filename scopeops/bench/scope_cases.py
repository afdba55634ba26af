"""Toolkit case of the ratio table: T3, the cost of a NameScope, measured beside a
bare ``contextvars`` set/reset pair (the least any context-local scope can cost) in
the same run. Importing this module registers it on :mod:`scopeops.bench`.
"""

from __future__ import annotations

import contextvars
from typing import Any

import scopeops as so
from scopeops.bench.registry import Case, Row, register
from scopeops.bench.timing import Loop, compare, format_ns, format_ratio

__all__ = ["name_scope_loops", "measure_t3"]


def name_scope_loops() -> dict[str, Loop]:
    """T3: ``with scope: pass`` on a NameScope object, the same with the object built
    in the statement (as most code writes it), and a bare ContextVar set/reset pair."""
    reference_var: contextvars.ContextVar[str] = contextvars.ContextVar("bench_reference",
                                                                        default="")
    return {
        "name_scope": Loop("with scope: pass", {"scope": so.NameScope("a")}),
        "name_scope_built": Loop("with NameScope('a'): pass", {"NameScope": so.NameScope}),
        "contextvar_pair": Loop("token = var.set(value); var.reset(token)",
                                {"var": reference_var, "value": "a/"}),
    }


def measure_t3(quick: bool) -> dict[str, Any]:
    ns = compare(name_scope_loops(), quick)
    ratio = ns["name_scope"] / ns["contextvar_pair"]
    built_ratio = ns["name_scope_built"] / ns["contextvar_pair"]
    reference = f"ContextVar set+reset {format_ns(ns['contextvar_pair'])}"
    return {
        "name_scope_ns": ns["name_scope"], "name_scope_built_ns": ns["name_scope_built"],
        "contextvar_pair_ns": ns["contextvar_pair"], "ratio_contextvar": ratio,
        "ratio_built_contextvar": built_ratio, "ok": None,
        **ns.raw("name_scope", "contextvar_pair", "ratio_contextvar"),
        "rows": [
            Row("NameScope enter+exit", format_ns(ns["name_scope"]), reference, format_ratio(ratio),
                "report (aim <= 3x)", None),
            Row("  NameScope(...) built, entered, exited", format_ns(ns["name_scope_built"]),
                reference, format_ratio(built_ratio), "report", None),
        ],
    }


register(Case("T3", "NameScope enter/exit", "report; aim <= 3x a bare ContextVar set/reset pair",
              measure_t3))
