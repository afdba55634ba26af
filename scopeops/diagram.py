"""Box-and-row diagrams drawn with matplotlib: how :mod:`scopeops.viz` draws a picture
when Graphviz's ``dot`` is not installed.

A :class:`Box` has a title and rows, each a name and a detail. A row may hold child
boxes: they are drawn to its right, joined to it by a line, so a workspace's stack
blob leads to the stack's workspaces and a ``Do`` op to its net. A :class:`Link`
joins two rows (or boxes) anywhere in the picture with a dashed arrow (a forward, a
``shared`` parent).

The layout is a tidy tree from left to right: each box sits at the top of the band
its children need, children start level with the row that holds them. Text is
monospace at a fixed size, so the picture grows with what it shows and stays readable
at 100 % zoom; :func:`measure` gives its size in pixels before anything is drawn.

matplotlib is imported only by :func:`draw` (it is the ``demo`` extra), so this module
imports without it; :func:`available` says whether it is there.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DPI", "Box", "Link", "Row", "available", "draw", "measure"]

DPI = 100
FONT_SIZE = 9                         # points
_CHAR = 8.0                           # px: DejaVu Sans Mono's advance at 9 pt, 100 dpi (Agg)
_LINE = 16                            # px per text line
_PAD = 6                              # px inside a box
_GAP_X = 40                           # px between a box and its children
_GAP_Y = 10                           # px between boxes stacked in one band
_MARGIN = 12                          # px around the picture
_TITLE = 100                          # characters at most in a title (then "...")
_NAME = 48                            # ... in a row's name
_DETAIL = 72                          # ... in a row's detail

_STYLES: dict[str, dict[str, Any]] = {
    "plain": {"edge": "#4a5a6a", "fill": "#eef3f8", "line": "solid", "width": 1.0},
    "top": {"edge": "#1f4e79", "fill": "#dbe9f6", "line": "solid", "width": 2.2},
    "dormant": {"edge": "#9a9a9a", "fill": "#f2f2f2", "line": "dashed", "width": 1.0},
    "stack": {"edge": "#6b4f1d", "fill": "#f7edd9", "line": "solid", "width": 1.4},
    "net": {"edge": "#5b6b2f", "fill": "#f3f6e4", "line": "solid", "width": 1.0},
}


@dataclass
class Box:
    """A titled box of rows, with an optional ``subtitle`` line under the title. ``style``:
    plain, top, dormant, stack or net; ``copies`` > 1 draws it as a pile of alike boxes (a
    folded run). ``key`` names it for links."""

    title: str
    rows: list[Row] = field(default_factory=list)
    style: str = "plain"
    copies: int = 1
    key: str | None = None
    subtitle: str = ""
    # Set by the layout, in pixels from the top left corner.
    x: float = 0.0
    y: float = 0.0
    width: float = 0.0
    height: float = 0.0
    name_chars: int = 0


@dataclass
class Row:
    """One line of a box: ``name`` and a greyer ``detail``. ``style``: plain, link (drawn
    dashed: a forward) or note (grey, italic). Child boxes are drawn to its right."""

    name: str
    detail: str = ""
    style: str = "plain"
    children: list[Box] = field(default_factory=list)
    key: str | None = None


@dataclass
class Link:
    """A dashed arrow from the row or box keyed ``tail`` to the one keyed ``head``."""

    tail: str
    head: str
    label: str = ""


def available() -> bool:
    """Whether matplotlib can be imported (``pip install "scopeops[demo]"``)."""
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):   # a broken or blocked matplotlib
        return False


def _cell(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _size(box: Box) -> None:
    names = [len(_cell(row.name, _NAME)) for row in box.rows]
    details = [len(_cell(row.detail, _DETAIL)) for row in box.rows if row.detail]
    box.name_chars = max(names, default=0)
    row_chars = box.name_chars + (2 + max(details) if details else 0)
    chars = max(len(_cell(box.title, _TITLE)), len(_cell(box.subtitle, _TITLE)), row_chars) + 1
    box.width = chars * _CHAR + 2 * _PAD
    box.height = (_header_lines(box) + len(box.rows)) * _LINE + 3 * _PAD


def _header_lines(box: Box) -> int:
    return 2 if box.subtitle else 1


def _pile(box: Box) -> int:
    """How far (px) the boxes behind a folded run stick out to the right and below."""
    return 8 if box.copies > 2 else 4 if box.copies > 1 else 0


def _row_top(box: Box, index: int) -> float:
    return box.y + 2 * _PAD + (_header_lines(box) + index) * _LINE


def _place(box: Box, x: float, y: float) -> float:
    """Lay out ``box`` and its children from (x, y); returns the height of its band."""
    _size(box)
    box.x, box.y = x, y
    cursor = y
    for index, row in enumerate(box.rows):
        if not row.children:
            continue
        # A child's title lines up with the row holding it, unless the band is taken.
        cursor = max(cursor, _row_top(box, index) - 2 * _PAD)
        for child in row.children:
            cursor += _place(child, x + box.width + _GAP_X, cursor) + _GAP_Y
    bottom = max(y + box.height + _pile(box), cursor - _GAP_Y)
    return bottom - y


def _walk(boxes: list[Box]) -> list[Box]:
    found: list[Box] = []
    pending = list(reversed(boxes))
    while pending:
        box = pending.pop()
        found.append(box)
        for row in reversed(box.rows):
            pending.extend(reversed(row.children))
    return found


def _layout(roots: list[Box]) -> tuple[int, int]:
    cursor = float(_MARGIN)
    for root in roots:
        cursor += _place(root, _MARGIN, cursor) + 2 * _GAP_Y
    boxes = _walk(roots)
    right = max((box.x + box.width + _pile(box) for box in boxes), default=0.0)
    bottom = max((box.y + box.height + _pile(box) for box in boxes), default=0.0)
    return int(right + _MARGIN + 1), int(bottom + _MARGIN + 1)


def measure(roots: list[Box]) -> tuple[int, int]:
    """The picture's (width, height) in pixels, as :func:`draw` would make it."""
    return _layout(roots)


def draw(roots: list[Box], links: list[Link], path: Any, file_format: str) -> tuple[int, int]:
    """Draw the boxes into ``path`` (a path or a binary file object) as ``file_format``
    ("svg" or "png"); returns the size in pixels. SVG keeps its text as text (searchable,
    selectable)."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, Rectangle

    width, height = _layout(roots)
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)
    axes.set_axis_off()
    text: dict[str, Any] = {"fontsize": FONT_SIZE, "family": "monospace", "va": "center"}
    anchors: dict[str, tuple[float, float, float]] = {}   # key -> (left, right, y)

    for box in _walk(roots):
        style = _STYLES.get(box.style, _STYLES["plain"])
        for offset in sorted({_pile(box), _pile(box) // 2} - {0}, reverse=True):
            axes.add_patch(Rectangle((box.x + offset, box.y + offset), box.width, box.height,
                                     facecolor="white", edgecolor=style["edge"],
                                     linestyle=style["line"], linewidth=0.8, zorder=1))
        axes.add_patch(Rectangle((box.x, box.y), box.width, box.height, facecolor="white",
                                 edgecolor=style["edge"], linestyle=style["line"],
                                 linewidth=style["width"], zorder=2))
        axes.add_patch(Rectangle((box.x, box.y), box.width, _header_lines(box) * _LINE + 2 * _PAD,
                                 facecolor=style["fill"], edgecolor="none", zorder=2))
        axes.text(box.x + _PAD, box.y + _PAD + _LINE / 2, _cell(box.title, _TITLE), zorder=3,
                  fontweight="bold", color="#1a1a1a", **text)
        if box.subtitle:
            axes.text(box.x + _PAD, box.y + _PAD + 1.5 * _LINE, _cell(box.subtitle, _TITLE),
                      zorder=3, color="#3a3a3a", **text)
        if box.key is not None:
            anchors[box.key] = (box.x, box.x + box.width, box.y + _PAD + _LINE / 2)
        for index, row in enumerate(box.rows):
            middle = _row_top(box, index) + _LINE / 2
            color = "#7a7a7a" if row.style == "note" else "#1a1a1a"
            axes.text(box.x + _PAD, middle, _cell(row.name, _NAME), zorder=3, color=color,
                      fontstyle="italic" if row.style != "plain" else "normal", **text)
            if row.detail:
                axes.text(box.x + _PAD + (box.name_chars + 2) * _CHAR, middle,
                          _cell(row.detail, _DETAIL), color="#5a5a5a", zorder=3, **text)
            if row.key is not None:
                anchors[row.key] = (box.x, box.x + box.width, middle)
            for child in row.children:
                start = (box.x + box.width, middle)
                end_y = child.y + _PAD + _LINE / 2
                bend = box.x + box.width + _GAP_X / 2
                axes.plot([start[0], bend, bend, child.x], [middle, middle, end_y, end_y],
                          color="#6a6a6a", linewidth=1.0, zorder=1)

    for number, link in enumerate(links):
        if link.tail not in anchors or link.head not in anchors:
            continue
        tail, head = anchors[link.tail], anchors[link.head]
        if head[1] <= tail[0]:
            # The usual case, a forward to a workspace further left: out of the tail's left
            # side into the gap, along it, into the head's right side. Channels are
            # staggered so that parallel links stay apart.
            channel = tail[0] - 6 - (number % 6) * 5
            xs, ys = [tail[0], channel, channel, head[1]], [tail[2], tail[2], head[2], head[2]]
        else:
            xs, ys = [tail[0], tail[0] - 12, tail[0] - 12, head[0]], \
                [tail[2], tail[2], head[2], head[2]]
        axes.plot(xs[:-1], ys[:-1], color="#8a8a8a", linestyle="dashed", linewidth=0.9,
                  zorder=4)
        axes.add_patch(FancyArrowPatch((xs[-2], ys[-2]), (xs[-1], ys[-1]), arrowstyle="->",
                                       mutation_scale=10, color="#8a8a8a", linewidth=0.9,
                                       linestyle="dashed", zorder=4))
        if link.label:
            axes.text(xs[1] - 3, (ys[1] + ys[2]) / 2, link.label, fontsize=FONT_SIZE - 1,
                      color="#6a6a6a", ha="right", va="center", family="monospace", zorder=4)

    # SVG text stays text (searchable); ids are the same from run to run.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "scopeops"}):
        figure.savefig(path, format=file_format, dpi=DPI,
                       metadata={"Date": None} if file_format == "svg" else None)
    return width, height
