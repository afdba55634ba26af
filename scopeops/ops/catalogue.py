"""The operator catalogue: every registered operator's schema, rendered from the registry.

``so.ops.catalogue()`` is the list a user reads to find an operator and learn how to call
it (inputs, outputs, arguments, in-place rules, gradient and doc); the docs page
"Operators" is generated from it when the docs are built, so it can never fall behind
the registry.
"""

from __future__ import annotations

from collections.abc import Iterable

from scopeops.ops.base import (
    NO_GRADIENT,
    SHOULD_NOT_DO_GRADIENT,
    UNBOUNDED,
    Arg,
    Schema,
    lookup,
    registered_operators,
)

__all__ = ["catalogue", "describe_schema"]


def _count(lo: int, hi: int) -> str:
    if lo == hi:
        return str(lo)
    if hi >= UNBOUNDED:
        return f"{lo} or more"
    return f"{lo} to {hi}"


def _inplace(schema: Schema) -> str:
    rule = schema.allow_inplace
    if rule is True:
        return "any input may be the same blob as any output"
    if rule is False or not rule:
        return "no: every output must be a different blob from every input"
    pairs = ", ".join(f"input {i} as output {o}" for i, o in sorted(rule))
    return f"only {pairs}"


def _gradient(schema: Schema) -> str:
    maker = schema.gradient
    if maker is NO_GRADIENT:
        return "none: the operator contributes no gradient (NO_GRADIENT)"
    if maker is SHOULD_NOT_DO_GRADIENT:
        return "refused: asking for its gradient raises (SHOULD_NOT_DO_GRADIENT)"
    if maker is None:
        return "not defined: asking for its gradient raises"
    module = getattr(maker, "__module__", "")
    return f"yes (made by `{module}`)" if module else "yes"


def _types(arg: Arg) -> str:
    types = arg.types if isinstance(arg.types, tuple) else (arg.types,)
    return " or ".join(t.__name__ for t in types)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def describe_schema(type_name: str) -> str:
    """One operator's entry of the catalogue, as Markdown."""
    schema = lookup(type_name)
    lines = [f"## {schema.type}", ""]
    if schema.doc:
        lines += [schema.doc, ""]
    lines += [
        f"- inputs: {_count(schema.min_inputs, schema.max_inputs)}",
        f"- outputs: {_count(schema.min_outputs, schema.max_outputs)}",
        f"- in place: {_inplace(schema)}",
        f"- gradient: {_gradient(schema)}",
    ]
    if schema.args:
        lines += ["", "| argument | type | default | meaning |", "| --- | --- | --- | --- |"]
        for name, arg in schema.args.items():
            default = "required" if arg.required else f"`{arg.default!r}`"
            lines.append(f"| `{name}` | {_types(arg)} | {default} | {_cell(arg.doc)} |")
    else:
        lines.append("- arguments: none")
    return "\n".join(lines) + "\n"


def catalogue(types: str | Iterable[str] | None = None) -> str:
    """The schemas of registered operators, as Markdown (readable as plain text too).

    ``types``: one operator type, several, or None for every registered one (sorted).
    An unknown type raises :class:`~scopeops.OperatorError` listing close matches.
    """
    if types is None:
        names = registered_operators()
    elif isinstance(types, str):
        names = [types]
    else:
        names = list(types)
    entries = [describe_schema(name) for name in names]
    if len(names) == 1:
        return entries[0]
    index = ", ".join(f"[{name}](#{name.lower()})" for name in names)
    head = (f"{len(names)} operators: {index}\n" if types is None
            else f"{len(names)} operators\n")
    return head + "\n" + "\n".join(entries)
