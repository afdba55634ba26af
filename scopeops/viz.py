"""Pictures of workspaces, workspace stacks and nets: text trees and Graphviz graphs.

* :func:`tree` draws a text tree, one line per blob (type, dtype, shape, bytes).
  A workspace's ``shared`` chain follows it as sibling sections, each forward is
  shown as ``inner -> outer (in <workspace>)``, and a blob holding a
  :class:`~scopeops.WorkspaceStack` opens that stack's workspaces beneath it
  (the top marked ``top``, workspaces above it ``dormant``). A net shows its ops,
  with the nets of Do/If/While arguments nested under their op.
* :func:`to_dot` is the same picture in Graphviz's DOT language.
* :func:`render` writes an SVG or PNG file through Graphviz's ``dot`` program.

Workspaces are labelled by path, as in :func:`scopeops.memory_report`: ``root`` for
the workspace drawn, ``root/scope[1]`` for level 1 of the stack held by its blob
``scope``, ``root.shared`` for its read-through parent and ``root.shared(2)``,
``root.shared(3)``... for the ones further up its chain; a forward's parent that is
not part of the picture is ``undrawn workspace #1``, ``#2``... A workspace or stack met a
second time (stacks can be reached from several blobs, or from themselves) is
drawn once and referred to by label afterwards.

``tree`` and ``to_dot`` need nothing beyond scopeops. ``render`` needs the
Graphviz ``dot`` executable, a system program that pip cannot install; without it
``render`` raises :class:`GraphvizNotFoundError` saying how to install it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from scopeops._stack import WorkspaceStack
from scopeops._workspace import Workspace as _CoreWorkspace
from scopeops.defs import NetDef
from scopeops.errors import ScopeError
from scopeops.net import Net
from scopeops.ops.executor import NetExecutor

__all__ = ["tree", "to_dot", "render", "GraphvizError", "GraphvizNotFoundError",
           "RENDER_FORMATS"]

RENDER_FORMATS = {".svg": "svg", ".png": "png"}
_MAX_NESTING = 64   # stacks within stacks within stacks, nets within nets


class GraphvizError(ScopeError):
    """Graphviz's ``dot`` failed to render a picture (an error exit or a timeout)."""


class GraphvizNotFoundError(GraphvizError):
    """Graphviz's ``dot`` executable is not on ``PATH``; the message says how to install it."""


_INSTALL_HINT = (
    "Graphviz's `dot` program was not found on PATH, and so.viz.render() needs it. "
    "Graphviz is a system program, not a Python package (`pip install graphviz` installs "
    "only Python bindings, without `dot`). Install it with: `apt-get install graphviz` "
    "(Debian, Ubuntu), `dnf install graphviz` (Fedora, RHEL), `brew install graphviz` "
    "(macOS), `conda install -c conda-forge graphviz`, or `winget install graphviz` / "
    "`choco install graphviz` (Windows); then check that `dot -V` works. "
    "so.viz.tree() and so.viz.to_dot() work without it.")


def _show(name: str) -> str:
    """A name on one line: control and other unprintable characters escaped."""
    if name.isprintable():
        return name
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


# -- the picture of a workspace, as a model both renderers walk --------------------------


@dataclass
class _Seen:
    """A workspace or stack drawn earlier, referred to by its label."""
    label: str


@dataclass
class _BlobItem:
    name: str
    summary: str
    forward: tuple[Any, str] | None = None      # (parent workspace, outer name)
    stack: "_StackItem | _Seen | None" = None


@dataclass
class _WorkspaceItem:
    label: str
    workspace: Any
    state: str                                   # "", "top" or "dormant"
    blobs: list[_BlobItem] = field(default_factory=list)
    shared: "_WorkspaceItem | _Seen | None" = None


@dataclass
class _StackItem:
    label: str
    stack: WorkspaceStack
    levels: list["_WorkspaceItem | _Seen | str"] = field(default_factory=list)


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


class _Scene:
    """Builds the model, labelling each workspace and stack the first time it is met."""

    def __init__(self) -> None:
        self.labels: dict[int, str] = {}
        self.kept: list[Any] = []    # keeps labelled objects alive, so their ids stay theirs
        self.undrawn: dict[int, str] = {}

    def label_of(self, obj: Any) -> str | None:
        return self.labels.get(id(obj))

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
        for name in ws.local_blobs():
            blob = ws.get_blob(name)
            blob_item = _BlobItem(name, _describe_value(blob))
            if blob is not None and not blob.is_empty() and isinstance(blob.get(), WorkspaceStack):
                blob_item.stack = self.stack(blob.get(), f"{label}/{_show(name)}", depth + 1)
            item.blobs.append(blob_item)
        local = set(ws.local_blobs())
        for inner, (parent, outer) in ws.forwarded_blobs().items():
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
        depth_now = len(stack)
        for level, ws in enumerate(stack.workspaces()):
            state = "dormant" if level >= depth_now else ("top" if level == depth_now - 1 else "")
            item.levels.append(self.workspace(ws, f"{label}[{level}]", state, depth))
        return item

    def target_label(self, ws: Any) -> str:
        """The label of a forward's parent; one outside the picture gets a number."""
        label = self.label_of(ws)
        if label is None:
            label = f"undrawn workspace #{len(self.undrawn) + 1}"
            label = self.undrawn.setdefault(id(ws), label)
        return label


def _model(obj: Any) -> tuple[_Scene, _Item | _Seen]:
    scene = _Scene()
    if isinstance(obj, WorkspaceStack):
        return scene, scene.stack(obj, "stack", 0)
    return scene, scene.workspace(obj, "root")


def _workspace_title(item: _WorkspaceItem) -> str:
    ws = item.workspace
    n_local = len(ws.local_blobs())
    n_forward = len(ws.forwarded_blobs())
    parts = [f"{n_local} local blob{'s' if n_local != 1 else ''}"]
    if n_forward:
        parts.append(f"{n_forward} forward{'s' if n_forward != 1 else ''}")
    if ws.shared is not None:
        parts.append("shared: " + (item.shared.label if item.shared is not None else "?"))
    state = f" ({item.state})" if item.state else ""
    return f"{item.label}: {type(ws).__name__}{state}, {', '.join(parts)}"


def _stack_title(item: _StackItem) -> str:
    return (f"{item.label}: WorkspaceStack, depth {len(item.stack)} of capacity "
            f"{item.stack.capacity}")


# -- text trees -----------------------------------------------------------------------


@dataclass
class _Line:
    text: str
    children: list["_Line"] = field(default_factory=list)


def _workspace_lines(scene: _Scene, item: _WorkspaceItem | _Seen, prefix: str = ""
                     ) -> list[_Line]:
    """A workspace and, as following siblings, its shared chain."""
    if isinstance(item, _Seen):
        return [_Line(f"{prefix}{item.label} (shown above)")]
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
        parent, outer = blob.forward
        return _Line(f"{_show(blob.name)} -> {_show(outer)} (in {scene.target_label(parent)}): "
                     f"{blob.summary}")
    line = _Line(f"{_show(blob.name)}: {blob.summary}")
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
    if with_title:
        return [_Line(_stack_title(item), levels)]
    return levels


def _net_lines(netdef: NetDef, title_prefix: str = "", path: frozenset[int] = frozenset()
               ) -> _Line:
    line = _Line(title_prefix + _net_title(netdef))
    if id(netdef) in path or len(path) > _MAX_NESTING:
        line.children.append(_Line("(contains itself or is nested too deeply; not shown)"))
        return line
    inner_path = path | {id(netdef)}
    for index, op in enumerate(netdef.ops):
        op_line = _Line(_op_title(op, index))
        for arg, subnet in _subnets(op):
            op_line.children.append(_net_lines(subnet, f"{arg}: ", inner_path))
        line.children.append(op_line)
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


# -- nets -----------------------------------------------------------------------------


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


def _op_title(op: Any, index: int) -> str:
    name = f" '{_show(op.name)}'" if op.name else ""
    args = [f"{k}={_short(v)}" for k, v in op.args.items() if not _is_net_arg(v)]
    text = (f"#{index} {op.type}{name} ({', '.join(map(_show, op.inputs))}) -> "
            f"({', '.join(map(_show, op.outputs))})")
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


def _as_picture_source(obj: Any) -> Any:
    if isinstance(obj, (_CoreWorkspace, WorkspaceStack, NetDef)):
        return obj
    if isinstance(obj, Net):
        return obj.netdef
    if isinstance(obj, NetExecutor):
        return obj.netdef
    raise TypeError(f"so.viz draws a Workspace, a WorkspaceStack, a Net or a NetDef, "
                    f"not {type(obj).__name__}")


def tree(obj: Any) -> str:
    """A text tree of a Workspace, a WorkspaceStack, or a Net/NetDef.

    One line per blob: ``name: <type> [<dtype> <shape>], <n> bytes``; forwards as
    ``inner -> outer (in <workspace>): ...``; stacks held in blobs opened beneath
    them, each workspace marked ``top`` or ``dormant``. For a net, one line per op
    with the nets of its arguments (Do, If, While) nested beneath it.
    """
    source = _as_picture_source(obj)
    if isinstance(source, NetDef):
        return _render_lines([_net_lines(source)])
    scene, item = _model(source)
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
            f'  graph [rankdir={_quote(rankdir)}, compound="true", fontname="Helvetica", '
            'fontsize="10"];',
            '  node [fontname="Helvetica", fontsize="10"];',
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
        cluster = self.dot.open_cluster(item.label + (f" ({item.state})" if item.state else ""),
                                        **style)
        anchor = self.dot.node(_workspace_title(item), shape="folder")
        self.anchors[item.label] = (anchor, cluster)
        nested: list[tuple[str, _StackItem | _Seen]] = []
        for blob in item.blobs:
            if blob.forward is not None:
                parent, outer = blob.forward
                node = self.dot.node(f"{_show(blob.name)} -> {_show(outer)}\n{blob.summary}",
                                     shape="box", style="dashed")
                self.pending_forwards.append((node, parent, outer))
                continue
            node = self.dot.node(f"{_show(blob.name)}\n{blob.summary}", shape="box")
            self.blob_nodes[(item.label, blob.name)] = node
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
            state = "" if isinstance(level, _Seen) else level.state
            label = self.workspace(level)
            self.pending_refs.append((node, None, label, {"label": f"[{index}] {state}".strip()}))
        return node

    def finish(self) -> str:
        for tail_node, tail_label, head_label, attrs in self.pending_refs:
            if tail_node is None:
                tail_node = self.anchors[tail_label or ""][0]
            head_node, cluster = self.anchors[head_label]
            self.dot.edge(tail_node, head_node, lhead=cluster, **attrs)
        for node, parent, outer in self.pending_forwards:
            label = self.scene.label_of(parent)
            head = self.blob_nodes.get((label, outer)) if label is not None else None
            if head is None:
                key = (id(parent), outer)
                head = self.outside.get(key)
                if head is None:
                    head = self.dot.node(f"{_show(outer)}\n(in {self.scene.target_label(parent)})",
                                         shape="note", style="dashed")
                    self.outside[key] = head
            self.dot.edge(node, head, label="forward", style="dashed")
        return self.dot.source("LR")


def _net_dot(dot: _Dot, netdef: NetDef, path: frozenset[int]) -> tuple[str, str]:
    """Draw a net as a cluster; returns (its anchor node, its cluster)."""
    cluster = dot.open_cluster(f"net {_show(netdef.name) or '<unnamed>'}")
    anchor = dot.node(_net_title(netdef), shape="plaintext")
    blobs: dict[str, str] = {}

    def blob(name: str) -> str:
        if name not in blobs:
            blobs[name] = dot.node(_show(name), shape="ellipse")
        return blobs[name]

    nested: list[tuple[str, str, NetDef]] = []
    if id(netdef) in path or len(path) > _MAX_NESTING:
        dot.node("(contains itself or is nested too deeply; not shown)", shape="plaintext")
        dot.close_cluster()
        return anchor, cluster
    for index, op in enumerate(netdef.ops):
        label = f"#{index} {op.type}" + (f"\n'{_show(op.name)}'" if op.name else "")
        op_node = dot.node(label, shape="box", style="rounded,filled", fillcolor="lightyellow")
        for name in op.inputs:
            dot.edge(blob(name), op_node)
        for name in op.outputs:
            dot.edge(op_node, blob(name))
        for arg, subnet in _subnets(op):
            nested.append((op_node, arg, subnet))
    for op_node, arg, subnet in nested:
        sub_anchor, sub_cluster = _net_dot(dot, subnet, path | {id(netdef)})
        dot.edge(op_node, sub_anchor, label=arg, style="dashed", lhead=sub_cluster)
    dot.close_cluster()
    return anchor, cluster


def to_dot(obj: Any) -> str:
    """The picture of :func:`tree` as Graphviz DOT source (a ``digraph``).

    Workspaces are clusters of blob boxes (dormant ones dashed and grey, the top
    one drawn heavier), forwards dashed edges from the inner name to the outer
    blob, ``shared`` dashed edges between workspaces, and a stack a 3-D box linked
    to each of its workspaces. A net is a cluster of op boxes and blob ellipses,
    with the nets of Do/If/While arguments as nested clusters.
    """
    source = _as_picture_source(obj)
    if isinstance(source, NetDef):
        dot = _Dot()
        _net_dot(dot, source, frozenset())
        return dot.source("TB")
    scene, item = _model(source)
    drawing = _WorkspaceDot(scene)
    if isinstance(item, _StackItem):
        drawing.stack(item)
    else:
        drawing.workspace(item)
    return drawing.finish()


# -- rendering ------------------------------------------------------------------------


def render(obj: Any, path: str | os.PathLike[str], timeout: float = 60.0) -> str:
    """Draw ``obj`` into ``path``, an ``.svg`` or ``.png`` file, with Graphviz's ``dot``.

    Returns the path written. The file is replaced atomically: a failure leaves
    any existing file at ``path`` as it was.

    Raises
    ------
    ValueError
        The extension is not ``.svg`` or ``.png`` (checked first).
    GraphvizNotFoundError
        ``dot`` is not installed; the message says how to install it.
    GraphvizError
        ``dot`` failed or did not finish within ``timeout`` seconds.
    """
    target = os.fspath(path)
    if not isinstance(target, str):
        target = os.fsdecode(target)
    extension = os.path.splitext(target)[1].lower()
    output_format = RENDER_FORMATS.get(extension)
    if output_format is None:
        raise ValueError(f"so.viz.render cannot write {extension or 'a file without an extension'}"
                         f" ({target!r}): name the file .svg or .png")
    source = to_dot(obj)
    dot = shutil.which("dot")
    if dot is None:
        raise GraphvizNotFoundError(_INSTALL_HINT)
    try:
        finished = subprocess.run([dot, f"-T{output_format}"], input=source.encode("utf-8"),
                                  capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise GraphvizNotFoundError(_INSTALL_HINT) from None
    except subprocess.TimeoutExpired:
        raise GraphvizError(f"Graphviz's dot did not finish drawing {target!r} within "
                            f"{timeout} s") from None
    if finished.returncode != 0:
        message = finished.stderr.decode("utf-8", "replace").strip()
        raise GraphvizError(f"Graphviz's dot failed drawing {target!r} (exit status "
                            f"{finished.returncode}): {message}")
    directory = os.path.dirname(os.path.abspath(target))
    fd, temp_path = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp",
                                     dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(finished.stdout)
        os.chmod(temp_path, 0o644)
        os.replace(temp_path, target)
    except BaseException:
        try:
            os.unlink(temp_path)
        except OSError:
            pass
        raise
    return target
