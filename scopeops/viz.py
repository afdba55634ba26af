"""Pictures of workspaces, workspace stacks and nets: text trees, Graphviz graphs, and
SVG or PNG files drawn by Graphviz or, without it, by matplotlib.

* :func:`tree` draws a text tree, one line per blob (type, dtype, shape, bytes).
  A workspace's ``shared`` chain follows it as sibling sections, each forward is
  shown as ``inner -> outer (in <workspace>)``, and a blob holding a
  :class:`~scopeops.WorkspaceStack` opens that stack's workspaces beneath it
  (the top marked ``top``, workspaces above it ``dormant``). A net shows its ops,
  with the nets of Do/If/While arguments nested under their op.
* :func:`to_dot` is the same picture in Graphviz's DOT language.
* :func:`render` writes an SVG or PNG file: through Graphviz's ``dot`` program when
  it is on ``PATH``, otherwise with matplotlib (the ``demo`` extra).

All three take the same options, so a big model stays readable:

* ``depth``: how many levels of nested stacks (or nested nets) to open below the
  object drawn; deeper ones are summarised in one line. None opens everything.
* ``hide_gradients``: leave out gradient blobs (a name whose last part ends in
  ``_grad`` or holds ``_grad_``, as :func:`scopeops.add_gradient_ops` names them) and
  gradient ops, saying how many were left out.
* ``fold`` (on by default): a run of :data:`FOLD_AT_LEAST` or more alike workspaces
  in a stack (same state, same blob names, types and shapes, same forwards' inner
  names; typically the step workspaces of a ``Do`` loop) is drawn once, labelled
  ``scope[0..5]: 6 alike Workspaces``; forwards that differ from step to step read
  ``x -> x0 ... x5``. A net used by several ops (the step net of every ``Do``) is
  drawn the first time and referred to after.

Workspaces are labelled by path, as in :func:`scopeops.memory_report`: ``root`` for
the workspace drawn, ``root/scope[1]`` for level 1 of the stack held by its blob
``scope``, ``root.shared`` for its read-through parent and ``root.shared(2)``,
``root.shared(3)``... for the ones further up its chain; a forward's parent that is
not part of the picture is ``undrawn workspace #1``, ``#2``... A workspace or stack met a
second time (stacks can be reached from several blobs, or from themselves) is
drawn once and referred to by label afterwards.

``tree`` and ``to_dot`` need nothing beyond scopeops. ``render`` needs Graphviz's
``dot`` (a system program) or matplotlib (``pip install "scopeops[demo]"``); with
neither it raises :class:`GraphvizNotFoundError` saying how to install either.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from scopeops import diagram
from scopeops._stack import WorkspaceStack
from scopeops._workspace import Workspace as _CoreWorkspace
from scopeops.atomicfile import atomic_write
from scopeops.defs import NetDef
from scopeops.errors import ScopeError
from scopeops.net import Net
from scopeops.ops.executor import NetExecutor

__all__ = ["tree", "to_dot", "render", "PictureError", "RendererNotFoundError",
           "GraphvizError", "GraphvizNotFoundError", "RENDER_FORMATS", "ENGINES",
           "FOLD_AT_LEAST", "PNG_MAX_PIXELS"]

RENDER_FORMATS = {".svg": "svg", ".png": "png"}
#: What draws a picture: "auto" (dot when on PATH, else matplotlib), "dot", "matplotlib".
ENGINES = ("auto", "dot", "matplotlib")
#: The shortest run of alike workspaces in a stack that ``fold`` draws as one.
FOLD_AT_LEAST = 3
#: The widest or tallest PNG that matplotlib's renderer writes; SVG has no such limit.
PNG_MAX_PIXELS = 32_000
_MAX_NESTING = 64   # stacks within stacks within stacks, nets within nets


class PictureError(ScopeError):
    """A picture could not be drawn (base class of the errors below)."""


class RendererNotFoundError(PictureError):
    """The program or library that draws pictures is not installed."""


class GraphvizError(PictureError):
    """Graphviz's ``dot`` failed to render a picture (an error exit or a timeout)."""


class GraphvizNotFoundError(GraphvizError, RendererNotFoundError):
    """Graphviz's ``dot`` is not on ``PATH`` (and, for ``engine="auto"``, matplotlib is not
    installed either); the message says how to install them."""


_GRAPHVIZ_HINT = (
    "Graphviz is a system program, not a Python package (`pip install graphviz` installs "
    "only Python bindings, without `dot`). Install it with: `apt-get install graphviz` "
    "(Debian, Ubuntu), `dnf install graphviz` (Fedora, RHEL), `brew install graphviz` "
    "(macOS), `conda install -c conda-forge graphviz`, or `winget install graphviz` / "
    "`choco install graphviz` (Windows); then check that `dot -V` works.")
_MATPLOTLIB_HINT = ('install matplotlib: `pip install "scopeops[demo]"` '
                    '(or `pip install matplotlib`)')
_NOTHING_TO_DRAW_WITH = (
    "so.viz.render() draws with Graphviz's `dot` program or, without it, with matplotlib, "
    f"and neither is installed. Either {_MATPLOTLIB_HINT}, or install Graphviz. "
    + _GRAPHVIZ_HINT + " so.viz.tree() and so.viz.to_dot() work without either.")
_DOT_NOT_FOUND = (
    "Graphviz's `dot` program was not found on PATH, and so.viz.render(engine=\"dot\") "
    "needs it. " + _GRAPHVIZ_HINT + " engine=\"auto\" draws with matplotlib instead.")

_GRADIENT_NAME = re.compile(r"_grad(?:_|$)")


def _show(name: str) -> str:
    """A name on one line: control and other unprintable characters escaped."""
    if name.isprintable():
        return name
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def _is_gradient(name: str) -> bool:
    """``w_grad``, ``w_grad_autosplit_3``, ``scope/w_grad_sum``: named as gradients are."""
    return _GRADIENT_NAME.search(name.rsplit("/", 1)[-1]) is not None


def _is_gradient_op(op: Any) -> bool:
    """Marked as a gradient op, or writing a gradient blob (as add_gradient_ops' ops do)."""
    return bool(op.is_gradient_op) or any(_is_gradient(name) for name in op.outputs)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@dataclass(frozen=True)
class _Options:
    depth: int | None = None
    hide_gradients: bool = False
    fold: bool = True

    def opens(self, nesting: int) -> bool:
        """Whether a stack or net ``nesting`` levels below the object drawn is opened."""
        return self.depth is None or nesting <= self.depth


def _options(depth: Any, hide_gradients: Any, fold: Any) -> _Options:
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int)):
        raise TypeError(f"depth must be None or an int, not {type(depth).__name__}")
    if depth is not None and depth < 0:
        raise ValueError(f"depth must be None or >= 0, got {depth}")
    for name, value in (("hide_gradients", hide_gradients), ("fold", fold)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, not {type(value).__name__}")
    return _Options(depth, hide_gradients, fold)


# -- the picture of a workspace, as a model every renderer walks --------------------------


@dataclass
class _Seen:
    """A workspace or stack drawn earlier, referred to by its label."""
    label: str


@dataclass
class _BlobItem:
    name: str
    summary: str
    forward: tuple[Any, str] | None = None      # (parent workspace, outer name)
    outers: list[str] = field(default_factory=list)   # a folded run's outer names, in order
    stack: "_StackItem | _Seen | None" = None
    members: list[str] = field(default_factory=list)  # a folded run of alike blobs: all names
    step_names: list[str] = field(default_factory=list)  # its name in each folded workspace

    def shown_name(self) -> str:
        if len(self.members) > 1:
            return f"{_show(self.members[0])} ... {_show(self.members[-1])} " \
                   f"({len(self.members)} alike)"
        if len(set(self.step_names)) > 1:
            return f"{_show(self.step_names[0])} ... {_show(self.step_names[-1])}"
        return _show(self.name)

    def forward_text(self) -> str:
        """``outer``, or ``first ... last`` for a folded run whose steps differ."""
        assert self.forward is not None
        outers = self.outers or [self.forward[1]]
        if len(set(outers)) == 1:
            return _show(outers[0])
        return f"{_show(outers[0])} ... {_show(outers[-1])}"


@dataclass
class _WorkspaceItem:
    label: str
    workspace: Any
    state: str                                   # "", "top" or "dormant"
    blobs: list[_BlobItem] = field(default_factory=list)
    shared: "_WorkspaceItem | _Seen | None" = None
    hidden_gradients: int = 0
    count: int = 1                               # > 1: a folded run of alike workspaces
    shown_label: str = ""                        # the label drawn: "s[0..5]" for a run

    def __post_init__(self) -> None:
        self.shown_label = self.shown_label or self.label


@dataclass
class _StackItem:
    label: str
    stack: WorkspaceStack
    levels: list["_WorkspaceItem | _Seen | str"] = field(default_factory=list)
    unopened: int = 0                            # workspaces left closed by the depth limit


_Item = Union[_WorkspaceItem, _StackItem]


def _stack_nbytes(stack: WorkspaceStack, counted: set[int]) -> int:
    """``stack.nbytes``, counting each stack once: the core's own sum never ends when a
    stack is held by a blob of one of its own workspaces."""
    if id(stack) in counted:
        return 0
    counted.add(id(stack))
    total = 0
    for ws in stack.workspaces():
        if not _held_stacks(ws):
            total += ws.nbytes
            continue
        for name in ws.local_blobs():
            blob = ws.get_blob(name)
            value = None if blob is None or blob.is_empty() else blob.get()
            if isinstance(value, WorkspaceStack):
                total += _stack_nbytes(value, counted)
            elif blob is not None:
                total += blob.nbytes
    return total


def _held_stacks(ws: Any) -> list[WorkspaceStack]:
    held = []
    for name in ws.local_blobs():
        blob = ws.get_blob(name)
        if blob is not None and not blob.is_empty() and isinstance(blob.get(), WorkspaceStack):
            held.append(blob.get())
    return held


def _describe_value(blob: Any) -> str:
    """``<type> [<dtype> <shape>], <n> bytes`` for a blob (never raises)."""
    if blob is None:
        return "missing"
    if blob.is_empty():
        return "empty"
    value = blob.get()
    size = _stack_nbytes(value, set()) if isinstance(value, WorkspaceStack) else blob.nbytes
    nbytes = f"{size} byte{'' if size == 1 else 's'}"
    if blob.dtype is not None:
        return f"Tensor {blob.dtype} {tuple(blob.shape)}, {nbytes}"
    if isinstance(value, np.generic):
        return f"numpy scalar {value.dtype} (), {nbytes}"
    if isinstance(value, WorkspaceStack):
        return f"WorkspaceStack, depth {len(value)} of capacity {value.capacity}, {nbytes}"
    return f"{blob.meta.name}, {nbytes}"


_NUMBERED = re.compile(r"^(.*?)(\d+)(\D*)$")
_NUMBER = re.compile(r"\d+")


def _number_in(name: str) -> int:
    match = _NUMBERED.match(name)
    return int(match.group(2)) if match is not None else 0


def _fold_blobs(blobs: list[_BlobItem]) -> list[_BlobItem]:
    """Local blobs named alike but for a number (``x0``, ``x1``, ``x5_grad``...) and holding
    alike values: FOLD_AT_LEAST or more become one item, where the first of them stood."""
    def kind(blob: _BlobItem) -> tuple[str, str, str] | None:
        match = _NUMBERED.match(blob.name)
        if match is None or blob.stack is not None or blob.forward is not None:
            return None
        return match.group(1), match.group(3), blob.summary

    groups: dict[tuple[str, str, str], list[_BlobItem]] = {}
    for blob in blobs:
        key = kind(blob)
        if key is not None:
            groups.setdefault(key, []).append(blob)
    folded: list[_BlobItem] = []
    for blob in blobs:
        key = kind(blob)
        group = groups.get(key) if key is not None else None
        if group is None or len(group) < FOLD_AT_LEAST:
            folded.append(blob)
        elif group[0] is blob:
            blob.members = sorted((member.name for member in group), key=_number_in)
            folded.append(blob)
    return folded


class _Scene:
    """Builds the model, labelling each workspace and stack the first time it is met."""

    def __init__(self, options: _Options) -> None:
        self.options = options
        self.labels: dict[int, str] = {}
        self.kept: list[Any] = []    # keeps labelled objects alive, so their ids stay theirs
        self.undrawn: dict[int, str] = {}
        self.aliases: dict[str, str] = {}   # a folded workspace -> its run's drawn label
        self.runs: dict[str, str] = {}      # a folded workspace -> its run's first workspace

    def label_of(self, obj: Any) -> str | None:
        return self.labels.get(id(obj))

    def drawn_label(self, label: str) -> str:
        """The label a workspace appears under (its run's, if it was folded)."""
        return self.aliases.get(label, label)

    def _claim(self, obj: Any, label: str) -> None:
        self.labels[id(obj)] = label
        self.kept.append(obj)

    def workspace(self, ws: Any, label: str, state: str = "",
                  depth: int = 0) -> _WorkspaceItem | _Seen:
        seen = self.label_of(ws)
        if seen is not None:
            return _Seen(seen)
        first = item = self._one_workspace(ws, label, state, depth)
        # The shared chain is walked in a loop: chains may be long, nesting is not.
        for distance in itertools.count(1):
            shared = item.workspace.shared
            if shared is None:
                break
            seen = self.label_of(shared)
            if seen is not None:
                item.shared = _Seen(seen)
                break
            shared_label = f"{label}.shared" + (f"({distance})" if distance > 1 else "")
            next_item = self._one_workspace(shared, shared_label, "", depth)
            item.shared = next_item
            item = next_item
        return first

    def _one_workspace(self, ws: Any, label: str, state: str, depth: int) -> _WorkspaceItem:
        self._claim(ws, label)
        item = _WorkspaceItem(label, ws, state)
        hide = self.options.hide_gradients
        for name in ws.local_blobs():
            if hide and _is_gradient(name):
                item.hidden_gradients += 1
                continue
            blob = ws.get_blob(name)
            blob_item = _BlobItem(name, _describe_value(blob))
            if blob is not None and not blob.is_empty() and isinstance(blob.get(), WorkspaceStack):
                blob_item.stack = self.stack(blob.get(), f"{label}/{_show(name)}", depth + 1)
            item.blobs.append(blob_item)
        if self.options.fold:
            item.blobs = _fold_blobs(item.blobs)
        local = set(ws.local_blobs())
        for inner, (parent, outer) in ws.forwarded_blobs().items():
            if hide and _is_gradient(inner):
                item.hidden_gradients += 1
                continue
            if inner in local:
                summary = f"hidden by the local blob {_show(inner)}"
            else:
                target = parent.get_blob(outer)
                summary = ("dangling: the parent no longer has it" if target is None
                           else _describe_value(target))
            self.kept.append(parent)
            item.blobs.append(_BlobItem(inner, summary, forward=(parent, outer)))
        return item

    def stack(self, stack: WorkspaceStack, label: str, depth: int) -> _StackItem | _Seen:
        seen = self.label_of(stack)
        if seen is not None:
            return _Seen(seen)
        self._claim(stack, label)
        item = _StackItem(label, stack)
        if depth > _MAX_NESTING:
            item.levels.append(f"(nested more than {_MAX_NESTING} stacks deep; not shown)")
            return item
        workspaces = stack.workspaces()
        if not self.options.opens(depth):
            item.unopened = len(workspaces)
            return item
        depth_now = len(stack)
        for level, ws in enumerate(workspaces):
            state = "dormant" if level >= depth_now else ("top" if level == depth_now - 1 else "")
            item.levels.append(self.workspace(ws, f"{label}[{level}]", state, depth))
        if self.options.fold:
            item.levels = self._fold(label, item.levels)
        return item

    def _fold(self, label: str, levels: list[_WorkspaceItem | _Seen | str]
              ) -> list[_WorkspaceItem | _Seen | str]:
        """Runs of FOLD_AT_LEAST or more alike workspaces, each made one item with a count."""
        signatures = [self.signature(level, level.label if isinstance(level, _WorkspaceItem)
                                     else "") for level in levels]
        folded: list[_WorkspaceItem | _Seen | str] = []
        start = 0
        while start < len(levels):
            end = start + 1
            while (signatures[start] is not None and end < len(levels)
                   and signatures[end] == signatures[start]):
                end += 1
            run = levels[start:end]
            first = run[0]
            if len(run) >= FOLD_AT_LEAST and isinstance(first, _WorkspaceItem):
                first.count = len(run)
                first.shown_label = f"{label}[{start}..{end - 1}]"
                steps = [level for level in run if isinstance(level, _WorkspaceItem)]
                for k, blob in enumerate(first.blobs):
                    alike = [step.blobs[k] for step in steps]   # the same blob in each step
                    blob.step_names = [other.name for other in alike]
                    blob.outers = [other.forward[1] for other in alike
                                   if other.forward is not None]
                for step in steps:
                    self.aliases[step.label] = first.shown_label
                    self.runs[step.label] = first.label
                folded.append(first)
            else:
                folded.extend(run)
            start = end
        return folded

    def signature(self, item: _WorkspaceItem | _Seen | str, base: str
                  ) -> tuple[Any, ...] | None:
        """What two workspaces must share to fold into one drawing; None: never folds.

        Forward parents inside the workspace (``base`` and below) are named relative to
        it, so step workspaces whose own stacks forward into them still compare equal.
        """
        if not isinstance(item, _WorkspaceItem) or item.shared is not None:
            return None
        blobs = []
        for blob in item.blobs:
            stack = None
            if blob.stack is not None:
                if not isinstance(blob.stack, _StackItem):
                    return None
                levels = [level if isinstance(level, str) else self.signature(level, base)
                          for level in blob.stack.levels]
                if None in levels:
                    return None
                stack = (blob.stack.unopened, tuple(levels))
            parent = None
            if blob.forward is not None:
                parent = self.label_of(blob.forward[0]) or f"#{id(blob.forward[0])}"
                if parent == base or parent.startswith(base + "/"):
                    parent = "~" + parent[len(base):]
            # Names are compared with their numbers left out: steps name their blobs
            # after the step (b_grad_do1_..., b_grad_do2_...).
            name = _NUMBER.sub("#", blob.name)
            members = len(blob.members)
            blobs.append((name, members, blob.summary, parent, stack))
        return (item.state, item.hidden_gradients, item.count, tuple(blobs))

    def target_label(self, ws: Any) -> str:
        """The label of a forward's parent; one outside the picture gets a number."""
        label = self.label_of(ws)
        if label is not None:
            return self.drawn_label(label)
        label = f"undrawn workspace #{len(self.undrawn) + 1}"
        return self.undrawn.setdefault(id(ws), label)


def _model(obj: Any, options: _Options) -> tuple[_Scene, _Item | _Seen]:
    scene = _Scene(options)
    if isinstance(obj, WorkspaceStack):
        return scene, scene.stack(obj, "stack", 0)
    return scene, scene.workspace(obj, "root")


def _workspace_heading(item: _WorkspaceItem) -> tuple[str, str]:
    """(``label: Workspace (state)``, what it holds): a title in two parts."""
    ws = item.workspace
    n_local = len(ws.local_blobs())
    n_forward = len(ws.forwarded_blobs())
    parts = [_plural(n_local, "local blob")]
    if n_forward:
        parts.append(_plural(n_forward, "forward"))
    if item.count > 1:
        parts[-1] += " each"
    if ws.shared is not None:
        parts.append("shared: " + (item.shared.label if item.shared is not None else "?"))
    if item.hidden_gradients:
        parts.append(f"{item.hidden_gradients} gradient{'s' * (item.hidden_gradients != 1)} "
                     f"hidden")
    state = f" ({item.state})" if item.state else ""
    kind = type(ws).__name__
    if item.count > 1:
        return f"{item.shown_label}: {item.count} alike {kind}s{state}", ", ".join(parts)
    return f"{item.label}: {kind}{state}", ", ".join(parts)


def _workspace_title(item: _WorkspaceItem) -> str:
    return ", ".join(_workspace_heading(item))


def _stack_title(item: _StackItem) -> str:
    return (f"{item.label}: WorkspaceStack, depth {len(item.stack)} of capacity "
            f"{item.stack.capacity}")


def _unopened_note(n: int) -> str:
    return f"({_plural(n, 'workspace')} not shown: depth limit)"


# -- the picture of a net, as a plan every renderer walks ----------------------------


@dataclass
class _NetItem:
    netdef: NetDef
    ops: list[tuple[int, Any, list[tuple[str, _NetItem]]]] = field(default_factory=list)
    hidden_gradients: int = 0
    note: str = ""          # why its ops are not listed (cycle, depth, drawn above)


def _net_plan(netdef: NetDef, options: _Options, nesting: int = 0,
              path: frozenset[int] = frozenset(), drawn: list[NetDef] | None = None
              ) -> _NetItem:
    drawn = [] if drawn is None else drawn
    item = _NetItem(netdef)
    if id(netdef) in path or len(path) > _MAX_NESTING:
        item.note = "(contains itself or is nested too deeply; not shown)"
        return item
    if not options.opens(nesting):
        item.note = f"({_plural(len(netdef.ops), 'op')} not shown: depth limit)"
        return item
    if options.fold and any(netdef is other or netdef == other for other in drawn):
        item.note = "(drawn above)"
        return item
    drawn.append(netdef)
    inner_path = path | {id(netdef)}
    for index, op in enumerate(netdef.ops):
        if options.hide_gradients and _is_gradient_op(op):
            item.hidden_gradients += 1
            continue
        subnets = [(arg, _net_plan(subnet, options, nesting + 1, inner_path, drawn))
                   for arg, subnet in _subnets(op)]
        item.ops.append((index, op, subnets))
    return item


def _net_title(netdef: NetDef) -> str:
    n = len(netdef.ops)
    title = f"net {_show(netdef.name) or '<unnamed>'}: {n} op{'s' if n != 1 else ''}"
    if netdef.external_inputs:
        title += f", inputs {', '.join(map(_show, netdef.external_inputs))}"
    if netdef.external_outputs:
        title += f", outputs {', '.join(map(_show, netdef.external_outputs))}"
    return title


def _short(value: Any, limit: int = 40) -> str:
    text = _show(repr(value))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _op_head(op: Any, index: int) -> str:
    return f"#{index} {op.type}" + (f" '{_show(op.name)}'" if op.name else "")


def _op_body(op: Any) -> str:
    args = [f"{k}={_short(v)}" for k, v in op.args.items() if not _is_net_arg(v)]
    text = f"({', '.join(map(_show, op.inputs))}) -> ({', '.join(map(_show, op.outputs))})"
    if args:
        text += " {" + ", ".join(args) + "}"
    if op.is_gradient_op:
        text += " [gradient]"
    device = op.device_option
    if device is not None and getattr(device, "device_type", "cpu") != "cpu":
        text += f" [{device.device_type}:{getattr(device, 'device_id', 0)}]"
    return text


def _is_net_arg(value: Any) -> bool:
    return isinstance(value, NetDef) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, NetDef) for v in value))


def _subnets(op: Any) -> list[tuple[str, NetDef]]:
    """The nets an op's arguments hold (Do's ``net``, If's ``then_net``/``else_net``,
    While's ``loop_net``/``cond_net``, or any other), in argument order."""
    found = []
    for arg, value in op.args.items():
        if isinstance(value, NetDef):
            found.append((arg, value))
        elif _is_net_arg(value):
            found.extend((f"{arg}[{j}]", v) for j, v in enumerate(value))
    return found


def _hidden_ops_note(n: int) -> str:
    return f"({_plural(n, 'gradient op')} hidden)"


# -- text trees -----------------------------------------------------------------------


@dataclass
class _Line:
    text: str
    children: list["_Line"] = field(default_factory=list)


def _workspace_lines(scene: _Scene, item: _WorkspaceItem | _Seen, prefix: str = ""
                     ) -> list[_Line]:
    """A workspace and, as following siblings, its shared chain."""
    if isinstance(item, _Seen):
        return [_Line(f"{prefix}{scene.drawn_label(item.label)} (shown above)")]
    lines = []
    current: _WorkspaceItem | _Seen | None = item
    while isinstance(current, _WorkspaceItem):
        line = _Line(prefix + _workspace_title(current))
        for blob in current.blobs:
            line.children.append(_blob_line(scene, blob))
        lines.append(line)
        prefix = ""
        current = current.shared
    return lines


def _blob_line(scene: _Scene, blob: _BlobItem) -> _Line:
    if blob.forward is not None:
        parent, _ = blob.forward
        return _Line(f"{blob.shown_name()} -> {blob.forward_text()} "
                     f"(in {scene.target_label(parent)}): {blob.summary}")
    line = _Line(f"{blob.shown_name()}: {blob.summary}")
    if isinstance(blob.stack, _Seen):
        line.children.append(_Line(f"the stack {blob.stack.label} (shown above)"))
    elif blob.stack is not None:
        line.children.extend(_stack_lines(scene, blob.stack, with_title=False))
    return line


def _stack_lines(scene: _Scene, item: _StackItem, with_title: bool = True) -> list[_Line]:
    levels: list[_Line] = []
    for level in item.levels:
        if isinstance(level, str):
            levels.append(_Line(level))
        else:
            levels.extend(_workspace_lines(scene, level))
    if item.unopened:
        levels.append(_Line(_unopened_note(item.unopened)))
    if with_title:
        return [_Line(_stack_title(item), levels)]
    return levels


def _net_lines(item: _NetItem, title_prefix: str = "") -> _Line:
    line = _Line(title_prefix + _net_title(item.netdef) + (f" {item.note}" if item.note else ""))
    for index, op, subnets in item.ops:
        op_line = _Line(f"{_op_head(op, index)} {_op_body(op)}")
        for arg, subnet in subnets:
            op_line.children.append(_net_lines(subnet, f"{arg}: "))
        line.children.append(op_line)
    if item.hidden_gradients:
        line.children.append(_Line(_hidden_ops_note(item.hidden_gradients)))
    return line


def _render_lines(roots: list[_Line]) -> str:
    out: list[str] = []

    def walk(line: _Line, prefix: str) -> None:
        for i, child in enumerate(line.children):
            last = i == len(line.children) - 1
            out.append(prefix + ("└── " if last else "├── ") + child.text)
            walk(child, prefix + ("    " if last else "│   "))

    for root in roots:
        out.append(root.text)
        walk(root, "")
    return "\n".join(out)


def _as_picture_source(obj: Any) -> Any:
    if isinstance(obj, (_CoreWorkspace, WorkspaceStack, NetDef)):
        return obj
    if isinstance(obj, Net):
        return obj.netdef
    if isinstance(obj, NetExecutor):
        return obj.netdef
    raise TypeError(f"so.viz draws a Workspace, a WorkspaceStack, a Net or a NetDef, "
                    f"not {type(obj).__name__}")


def tree(obj: Any, *, depth: int | None = None, hide_gradients: bool = False,
         fold: bool = True) -> str:
    """A text tree of a Workspace, a WorkspaceStack, or a Net/NetDef.

    One line per blob: ``name: <type> [<dtype> <shape>], <n> bytes``; forwards as
    ``inner -> outer (in <workspace>): ...``; stacks held in blobs opened beneath
    them, each workspace marked ``top`` or ``dormant``. For a net, one line per op
    with the nets of its arguments (Do, If, While) nested beneath it.

    ``depth`` opens that many levels of nested stacks or nets (None: all),
    ``hide_gradients`` leaves out gradient blobs and ops, ``fold`` draws runs of
    alike workspaces, and nets used again, once (see the module's doc).
    """
    options = _options(depth, hide_gradients, fold)
    source = _as_picture_source(obj)
    if isinstance(source, NetDef):
        return _render_lines([_net_lines(_net_plan(source, options))])
    scene, item = _model(source, options)
    if isinstance(item, _StackItem):
        return _render_lines(_stack_lines(scene, item))
    return _render_lines(_workspace_lines(scene, item))


# -- DOT ------------------------------------------------------------------------------


def _quote(text: str) -> str:
    """A DOT double-quoted string; ``\\n`` in ``text`` becomes a line break."""
    lines = [_show(part) for part in text.split("\n")]
    escaped = [line.replace("\\", "\\\\").replace('"', '\\"') for line in lines]
    return '"' + "\\n".join(escaped) + '"'


class _Dot:
    def __init__(self) -> None:
        self.body: list[str] = []
        self.edges: list[str] = []      # at top level: an edge inside a cluster drags its nodes in
        self._ids = itertools.count()
        self._depth = 1

    def new_id(self, prefix: str = "n") -> str:
        return f"{prefix}{next(self._ids)}"

    @staticmethod
    def _attrs(attrs: dict[str, str]) -> str:
        if not attrs:
            return ""
        return " [" + ", ".join(f"{k}={_quote(v)}" for k, v in attrs.items()) + "]"

    def node(self, label: str, **attrs: str) -> str:
        node_id = self.new_id()
        attrs = {"label": label, **attrs}
        self.body.append("  " * self._depth + _quote(node_id) + self._attrs(attrs) + ";")
        return node_id

    def edge(self, tail: str, head: str, **attrs: str) -> None:
        self.edges.append(f"  {_quote(tail)} -> {_quote(head)}{self._attrs(attrs)};")

    def open_cluster(self, label: str, **attrs: str) -> str:
        cluster_id = self.new_id("cluster_")
        indent = "  " * self._depth
        self.body.append(f"{indent}subgraph {_quote(cluster_id)} {{")
        for key, value in {"label": label, **attrs}.items():
            self.body.append(f"{indent}  {key}={_quote(value)};")
        self._depth += 1
        return cluster_id

    def close_cluster(self) -> None:
        self._depth -= 1
        self.body.append("  " * self._depth + "}")

    def source(self, rankdir: str) -> str:
        head = [
            'digraph "scopeops" {',
            # Tight spacing: a workspace's blobs stack in one column, and dot's default
            # gaps made a 6-step model 9,000 px tall.
            f'  graph [rankdir={_quote(rankdir)}, compound="true", fontname="Helvetica", '
            'fontsize="10", nodesep="0.08", ranksep="0.35"];',
            '  node [fontname="Helvetica", fontsize="10", margin="0.06,0.02", height="0.3"];',
            '  edge [fontname="Helvetica", fontsize="9"];',
        ]
        return "\n".join(head + self.body + self.edges + ["}"]) + "\n"


_SHARED_EDGE = {"label": "shared", "style": "dashed"}


class _WorkspaceDot:
    def __init__(self, scene: _Scene) -> None:
        self.scene = scene
        self.dot = _Dot()
        self.anchors: dict[str, tuple[str, str]] = {}   # workspace label -> (node, cluster)
        self.stack_nodes: dict[str, str] = {}           # stack label -> node
        self.blob_nodes: dict[tuple[str, str], str] = {}
        self.outside: dict[tuple[int, str], str] = {}
        self.pending_forwards: list[tuple[str, Any, str]] = []
        # Edges to workspaces, drawn once every cluster exists: (tail node or None,
        # tail workspace label or None, head workspace label, attributes).
        self.pending_refs: list[tuple[str | None, str | None, str, dict[str, str]]] = []

    def workspace(self, item: _WorkspaceItem | _Seen) -> str:
        """Draw a workspace (and its shared chain); returns the label to link to."""
        if isinstance(item, _Seen):
            return item.label
        current: _WorkspaceItem | _Seen | None = item
        previous: str | None = None
        while isinstance(current, _WorkspaceItem):
            self._one_workspace(current)
            if previous is not None:
                self.pending_refs.append((None, previous, current.label, _SHARED_EDGE))
            previous = current.label
            current = current.shared
        if isinstance(current, _Seen) and previous is not None:
            self.pending_refs.append((None, previous, current.label, _SHARED_EDGE))
        return item.label

    def _one_workspace(self, item: _WorkspaceItem) -> None:
        style: dict[str, str] = {}
        if item.state == "dormant":
            style = {"style": "dashed", "color": "gray50", "fontcolor": "gray50"}
        elif item.state == "top":
            style = {"penwidth": "2"}
        if item.count > 1:
            style["peripheries"] = "2"
        cluster = self.dot.open_cluster(
            item.shown_label + (f" ({item.state})" if item.state else ""), **style)
        anchor = self.dot.node(_workspace_title(item), shape="folder")
        self.anchors[item.label] = (anchor, cluster)
        nested: list[tuple[str, _StackItem | _Seen]] = []
        for blob in item.blobs:
            if blob.forward is not None:
                parent, outer = blob.forward
                node = self.dot.node(f"{blob.shown_name()} -> {blob.forward_text()}\n"
                                     f"{blob.summary}", shape="box", style="dashed")
                # A forward of a forward points at this node.
                self.blob_nodes.setdefault((item.label, blob.name), node)
                if len(set(blob.outers or [outer])) == 1:   # a run's differing targets: no edge
                    self.pending_forwards.append((node, parent, outer))
                continue
            node = self.dot.node(f"{blob.shown_name()}\n{blob.summary}", shape="box")
            for name in blob.members or [blob.name]:
                self.blob_nodes[(item.label, name)] = node
            if blob.stack is not None:
                nested.append((node, blob.stack))
        self.dot.close_cluster()
        for node, stack in nested:
            self.dot.edge(node, self.stack(stack), label="holds")

    def stack(self, item: _StackItem | _Seen) -> str:
        """Draw a stack and its workspaces; returns its node."""
        if isinstance(item, _Seen):
            return self.stack_nodes[item.label]
        node = self.dot.node(_stack_title(item), shape="box3d")
        self.stack_nodes[item.label] = node
        for index, level in enumerate(item.levels):
            if isinstance(level, str):
                self.dot.edge(node, self.dot.node(level, shape="plaintext"))
                continue
            if isinstance(level, _Seen):
                state, where = "", f"[{index}]"
            else:
                state, where = level.state, level.shown_label[len(item.label):]
            label = self.workspace(level)
            self.pending_refs.append((node, None, label, {"label": f"{where} {state}".strip()}))
        if item.unopened:
            self.dot.edge(node, self.dot.node(_unopened_note(item.unopened), shape="plaintext"))
        return node

    def _anchor(self, label: str) -> tuple[str, str] | None:
        """The node and cluster of a workspace, or of the run it was folded into."""
        return self.anchors.get(self.scene.runs.get(label, label))

    def finish(self) -> str:
        for tail_node, tail_label, head_label, attrs in self.pending_refs:
            if tail_node is None:
                tail_anchor = self._anchor(tail_label or "")
                if tail_anchor is None:
                    continue
                tail_node = tail_anchor[0]
            head = self._anchor(head_label)
            if head is None:
                continue
            self.dot.edge(tail_node, head[0], lhead=head[1], **attrs)
        for node, parent, outer in self.pending_forwards:
            label = self.scene.label_of(parent)
            head_node = self.blob_nodes.get((label, outer)) if label is not None else None
            if head_node is None:
                key = (id(parent), outer)
                head_node = self.outside.get(key)
                if head_node is None:
                    head_node = self.dot.node(
                        f"{_show(outer)}\n(in {self.scene.target_label(parent)})",
                        shape="note", style="dashed")
                    self.outside[key] = head_node
            self.dot.edge(node, head_node, label="forward", style="dashed")
        return self.dot.source("LR")


def _net_dot(dot: _Dot, item: _NetItem, drawn: list[tuple[NetDef, tuple[str, str]]]
             ) -> tuple[str, str]:
    """Draw a net as a cluster; returns (its anchor node, its cluster)."""
    netdef = item.netdef
    if item.note == "(drawn above)":
        for other, nodes in drawn:
            if netdef is other or netdef == other:
                return nodes
    cluster = dot.open_cluster(f"net {_show(netdef.name) or '<unnamed>'}")
    anchor = dot.node(_net_title(netdef), shape="plaintext")
    drawn.append((netdef, (anchor, cluster)))
    blobs: dict[str, str] = {}

    def blob(name: str) -> str:
        if name not in blobs:
            blobs[name] = dot.node(_show(name), shape="ellipse")
        return blobs[name]

    if item.note:
        dot.node(item.note, shape="plaintext")
    nested: list[tuple[str, str, _NetItem]] = []
    for index, op, subnets in item.ops:
        label = f"#{index} {op.type}" + (f"\n'{_show(op.name)}'" if op.name else "")
        op_node = dot.node(label, shape="box", style="rounded,filled", fillcolor="lightyellow")
        for name in op.inputs:
            dot.edge(blob(name), op_node)
        for name in op.outputs:
            dot.edge(op_node, blob(name))
        for arg, subnet in subnets:
            nested.append((op_node, arg, subnet))
    if item.hidden_gradients:
        dot.node(_hidden_ops_note(item.hidden_gradients), shape="plaintext")
    for op_node, arg, subnet in nested:
        sub_anchor, sub_cluster = _net_dot(dot, subnet, drawn)
        dot.edge(op_node, sub_anchor, label=arg, style="dashed", lhead=sub_cluster)
    dot.close_cluster()
    return anchor, cluster


def to_dot(obj: Any, *, depth: int | None = None, hide_gradients: bool = False,
           fold: bool = True) -> str:
    """The picture of :func:`tree` as Graphviz DOT source (a ``digraph``), with the same
    options.

    Workspaces are clusters of blob boxes (dormant ones dashed and grey, the top
    one drawn heavier, a folded run with a double border), forwards dashed edges
    from the inner name to the outer blob, ``shared`` dashed edges between
    workspaces, and a stack a 3-D box linked to each of its workspaces. A net is a
    cluster of op boxes and blob ellipses, with the nets of Do/If/While arguments
    as nested clusters.
    """
    options = _options(depth, hide_gradients, fold)
    source = _as_picture_source(obj)
    if isinstance(source, NetDef):
        dot = _Dot()
        _net_dot(dot, _net_plan(source, options), [])
        return dot.source("TB")
    scene, item = _model(source, options)
    drawing = _WorkspaceDot(scene)
    if isinstance(item, _StackItem):
        drawing.stack(item)
    else:
        drawing.workspace(item)
    return drawing.finish()


# -- boxes for matplotlib -------------------------------------------------------------


class _WorkspaceBoxes:
    """The model as :mod:`scopeops.diagram` boxes: a workspace a box of blob rows, a
    stack blob's workspaces child boxes of its row, forwards and ``shared`` dashed links."""

    def __init__(self, scene: _Scene) -> None:
        self.scene = scene
        self.links: list[diagram.Link] = []
        self.pending_forwards: list[tuple[str, Any, str]] = []   # (row key, parent, outer)
        self.row_keys: dict[tuple[str, str], str] = {}   # (workspace, blob of a run) -> row

    def workspace_chain(self, item: _WorkspaceItem | _Seen) -> list[diagram.Box]:
        """A workspace and its shared chain, as boxes one under the other."""
        if isinstance(item, _Seen):
            return [diagram.Box(f"{self.scene.drawn_label(item.label)} (shown above)")]
        boxes = []
        current: _WorkspaceItem | _Seen | None = item
        while isinstance(current, _WorkspaceItem):
            boxes.append(self.workspace(current))
            if isinstance(current.shared, _WorkspaceItem):
                self.links.append(diagram.Link(f"ws:{current.label}",
                                               f"ws:{current.shared.label}", "shared"))
            current = current.shared
        return boxes

    def workspace(self, item: _WorkspaceItem) -> diagram.Box:
        style = {"dormant": "dormant", "top": "top"}.get(item.state, "plain")
        title, subtitle = _workspace_heading(item)
        box = diagram.Box(title, style=style, copies=item.count, key=f"ws:{item.label}",
                          subtitle=subtitle)
        for blob in item.blobs:
            if blob.forward is not None:
                parent, outer = blob.forward
                # Keyed like a blob, so a forward of a forward is linked to it.
                key = f"blob:{item.label}:{blob.name}"
                detail = blob.summary
                if self.scene.label_of(parent) is None:   # no arrow can say where
                    detail = f"(in {self.scene.target_label(parent)}) {detail}"
                box.rows.append(diagram.Row(f"{blob.shown_name()} -> {blob.forward_text()}",
                                            detail, style="link", key=key))
                if len(set(blob.outers or [outer])) == 1:
                    self.pending_forwards.append((key, parent, outer))
                continue
            row = diagram.Row(blob.shown_name(), blob.summary,
                              key=f"blob:{item.label}:{blob.name}")
            for name in blob.members:
                self.row_keys[(item.label, name)] = row.key or ""
            if isinstance(blob.stack, _Seen):
                row.children.append(diagram.Box(f"the stack {blob.stack.label} (shown above)",
                                                style="stack"))
            elif blob.stack is not None:
                row.children.extend(self.levels(blob.stack))
            box.rows.append(row)
        return box

    def levels(self, item: _StackItem) -> list[diagram.Box]:
        boxes: list[diagram.Box] = []
        for level in item.levels:
            if isinstance(level, str):
                boxes.append(diagram.Box(level, style="stack"))
            else:
                boxes.extend(self.workspace_chain(level))
        if item.unopened:
            boxes.append(diagram.Box(_unopened_note(item.unopened), style="dormant"))
        return boxes

    def stack(self, item: _StackItem) -> diagram.Box:
        box = diagram.Box(_stack_title(item), style="stack", key=f"stack:{item.label}")
        box.rows.append(diagram.Row("workspaces", f"{len(item.stack.workspaces())} kept",
                                    children=self.levels(item)))
        return box

    def finish(self) -> list[diagram.Link]:
        for key, parent, outer in self.pending_forwards:
            label = self.scene.label_of(parent)
            if label is not None:
                label = self.scene.runs.get(label, label)
                head = self.row_keys.get((label, outer), f"blob:{label}:{outer}")
                self.links.append(diagram.Link(key, head))
        return self.links


def _net_box(item: _NetItem, title_prefix: str = "") -> diagram.Box:
    box = diagram.Box(title_prefix + _net_title(item.netdef), style="net")
    if item.note:
        box.rows.append(diagram.Row(item.note, style="note"))
    for index, op, subnets in item.ops:
        row = diagram.Row(_op_head(op, index), _op_body(op))
        row.children = [_net_box(subnet, f"{arg}: ") for arg, subnet in subnets]
        box.rows.append(row)
    if item.hidden_gradients:
        box.rows.append(diagram.Row(_hidden_ops_note(item.hidden_gradients), style="note"))
    return box


def _boxes(obj: Any, options: _Options) -> tuple[list[diagram.Box], list[diagram.Link]]:
    source = _as_picture_source(obj)
    if isinstance(source, NetDef):
        return [_net_box(_net_plan(source, options))], []
    scene, item = _model(source, options)
    drawing = _WorkspaceBoxes(scene)
    roots = [drawing.stack(item)] if isinstance(item, _StackItem) else \
        drawing.workspace_chain(item)
    return roots, drawing.finish()


# -- rendering ------------------------------------------------------------------------


def _render_dot(source: str, target: str, output_format: str, timeout: float) -> None:
    dot = shutil.which("dot")
    if dot is None:
        raise GraphvizNotFoundError(_DOT_NOT_FOUND)
    try:
        finished = subprocess.run([dot, f"-T{output_format}"], input=source.encode("utf-8"),
                                  capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise GraphvizNotFoundError(_DOT_NOT_FOUND) from None
    except subprocess.TimeoutExpired:
        raise GraphvizError(f"Graphviz's dot did not finish drawing {target!r} within "
                            f"{timeout} s") from None
    if finished.returncode != 0:
        message = finished.stderr.decode("utf-8", "replace").strip()
        raise GraphvizError(f"Graphviz's dot failed drawing {target!r} (exit status "
                            f"{finished.returncode}): {message}")

    with atomic_write(target) as out:
        out.write(finished.stdout)


def _render_matplotlib(boxes: list[diagram.Box], links: list[diagram.Link], target: str,
                       output_format: str) -> None:
    if not diagram.available():
        raise RendererNotFoundError(f"so.viz.render(engine=\"matplotlib\") needs matplotlib: "
                                    f"{_MATPLOTLIB_HINT}")
    width, height = diagram.measure(boxes)
    if output_format == "png" and max(width, height) > PNG_MAX_PIXELS:
        raise PictureError(f"the picture would be {width}x{height} px, more than a PNG can "
                           f"hold ({PNG_MAX_PIXELS} px a side): draw less (depth=..., "
                           f"hide_gradients=True, fold=True) or write an .svg")
    with atomic_write(target) as out:
        diagram.draw(boxes, links, out, output_format)


def render(obj: Any, path: str | os.PathLike[str], timeout: float = 60.0, *,
           depth: int | None = None, hide_gradients: bool = False, fold: bool = True,
           engine: str = "auto") -> str:
    """Draw ``obj`` into ``path``, an ``.svg`` or ``.png`` file; returns the path written.

    ``engine="auto"`` draws with Graphviz's ``dot`` when it is on ``PATH`` and with
    matplotlib otherwise; ``"dot"`` or ``"matplotlib"`` asks for one. ``depth``,
    ``hide_gradients`` and ``fold`` are :func:`tree`'s options. The file is replaced
    atomically: a failure leaves any existing file at ``path`` as it was.

    Raises
    ------
    ValueError
        The extension is not ``.svg`` or ``.png`` (checked first), or ``engine``
        is unknown.
    GraphvizNotFoundError
        ``engine="auto"`` and neither ``dot`` nor matplotlib is installed, or
        ``engine="dot"`` and ``dot`` is not; the message says how to install them.
    RendererNotFoundError
        ``engine="matplotlib"`` and matplotlib is not installed.
    GraphvizError
        ``dot`` failed or did not finish within ``timeout`` seconds.
    PictureError
        A PNG would be more than :data:`PNG_MAX_PIXELS` wide or tall (matplotlib).
    """
    target = os.fspath(path)
    if not isinstance(target, str):
        target = os.fsdecode(target)
    extension = os.path.splitext(target)[1].lower()
    output_format = RENDER_FORMATS.get(extension)
    if output_format is None:
        raise ValueError(f"so.viz.render cannot write {extension or 'a file without an extension'}"
                         f" ({target!r}): name the file .svg or .png")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(map(repr, ENGINES))}, "
                         f"not {engine!r}")
    options = _options(depth, hide_gradients, fold)
    _as_picture_source(obj)
    if engine == "auto":
        if shutil.which("dot") is not None:
            engine = "dot"
        elif diagram.available():
            engine = "matplotlib"
        else:
            raise GraphvizNotFoundError(_NOTHING_TO_DRAW_WITH)
    if engine == "dot":
        source = to_dot(obj, depth=depth, hide_gradients=hide_gradients, fold=fold)
        _render_dot(source, target, output_format, timeout)
    else:
        boxes, links = _boxes(obj, options)
        _render_matplotlib(boxes, links, target, output_format)
    return target
