"""Where the bytes are: :func:`memory_report`, and :func:`cast_to_float16` to shed some.

A report walks a :class:`~scopeops.Workspace` or a
:class:`~scopeops.WorkspaceStack` and every stack (or workspace) held in one of
its blobs, dormant stack workspaces included, and lists one row per local blob.
Each workspace is named by its path from the root: ``root/scope[2]`` is level
2 of the stack held in blob ``scope`` of the root. Every workspace and every
stack is visited once, so a stack stored twice, or stored inside one of its own
workspaces, is counted once and the walk always ends.

Forwarded names and ``shared`` parents are not rows: their blobs belong to the
workspace that holds them and are counted there, if it is part of the report.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from scopeops._stack import WorkspaceStack
from scopeops._workspace import Workspace
from scopeops.errors import BlobNotFoundError, BlobTypeError

__all__ = ["MemoryReport", "MemoryRow", "cast_to_float16", "memory_report"]

# float16 rounds magnitudes from here up to infinity.
_FLOAT16_OVERFLOW = 65520.0


@dataclass(frozen=True)
class MemoryRow:
    """One blob: where it lives, what it holds, and the bytes it holds.

    ``nbytes`` is what the blob keeps allocated (a tensor blob's buffer
    capacity, which can exceed the current array's size after a shrink). A blob
    holding a stack or a workspace counts 0 itself: the blobs inside are rows
    of their own. ``dormant`` is true in a stack workspace above the top (or
    inside one). ``note`` says so too, or ``counted at <path>`` for a container
    already reported elsewhere, or ``snapshot buffers kept for reuse`` for a
    workspace's spare buffers.
    """

    workspace: str
    blob: str
    type: str
    dtype: str | None
    shape: tuple[int, ...] | None
    nbytes: int
    dormant: bool = False
    note: str = ""


class MemoryReport(Sequence[MemoryRow]):
    """The rows of :func:`memory_report` (a read-only sequence) with totals.

    ``total`` is the bytes of every row, ``workspaces`` the path of every
    workspace visited (empty ones included), :meth:`by_workspace` the bytes per
    path. ``str(report)`` is a table with subtotals and the total.
    """

    def __init__(self, rows: Iterable[MemoryRow], workspaces: Iterable[str]) -> None:
        self._rows = tuple(rows)
        self.workspaces: tuple[str, ...] = tuple(workspaces)

    @overload
    def __getitem__(self, index: int) -> MemoryRow: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[MemoryRow]: ...

    def __getitem__(self, index: int | slice) -> MemoryRow | Sequence[MemoryRow]:
        return self._rows[index]

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[MemoryRow]:
        return iter(self._rows)

    def __repr__(self) -> str:
        return (f"<MemoryReport {len(self._rows)} blobs in {len(self.workspaces)} "
                f"workspaces, {self.total} bytes>")

    @property
    def total(self) -> int:
        """Bytes held by every blob in the report."""
        return sum(row.nbytes for row in self._rows)

    def by_workspace(self) -> dict[str, int]:
        """``{path: bytes}`` for every workspace visited, in the order visited."""
        totals = dict.fromkeys(self.workspaces, 0)
        for row in self._rows:
            totals[row.workspace] = totals.get(row.workspace, 0) + row.nbytes
        return totals

    def __str__(self) -> str:
        header = ("workspace", "blob", "type", "dtype", "shape", "bytes", "note")
        lines = [[row.workspace, row.blob, row.type, row.dtype or "-",
                  "-" if row.shape is None else str(row.shape), f"{row.nbytes:,}", row.note]
                 for row in self._rows]
        widths = [max([len(header[i])] + [len(line[i]) for line in lines])
                  for i in range(len(header))]

        def render(cells: Sequence[str]) -> str:
            return "  ".join(cell.rjust(w) if i == 5 else cell.ljust(w)
                             for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
                             ).rstrip()

        out = [render(header), render(["-" * w for w in widths])]
        out += [render(line) for line in lines]
        out.append("")
        out.append("bytes by workspace:")
        per = self.by_workspace()
        path_width = max([len(p) for p in per] + [0])
        for path, nbytes in per.items():
            out.append(f"  {path.ljust(path_width)}  {nbytes:>14,}  ({_human(nbytes)})")
        out.append(f"total: {self.total:,} bytes ({_human(self.total)}) in {len(self._rows)} "
                   f"blobs, {len(self.workspaces)} workspaces")
        return "\n".join(out)


def _human(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _is_container(value: Any) -> bool:
    return isinstance(value, (WorkspaceStack, Workspace))


def _blob_row(path: str, name: str, blob: Any, dormant: bool) -> MemoryRow:
    meta = blob.meta
    note = "dormant" if dormant else ""
    if meta is None:
        return MemoryRow(path, name, "empty", None, None, 0, dormant, note)
    if blob.dtype is not None:   # a tensor
        return MemoryRow(path, name, meta.name, str(blob.dtype), tuple(blob.shape),
                         blob.nbytes, dormant, note)
    dtype = None if meta.dtype is None else str(meta.dtype)
    return MemoryRow(path, name, meta.name, dtype, None, blob.nbytes, dormant, note)


def memory_report(obj: Workspace | WorkspaceStack, name: str = "root") -> MemoryReport:
    """The blobs of ``obj`` and of every stack or workspace held in its blobs.

    ``obj`` is a :class:`~scopeops.Workspace` (its path is ``name``) or a
    :class:`~scopeops.WorkspaceStack` (its levels are ``name[0]``, ``name[1]``,
    ...). A blob holding a stack is a row of 0 bytes followed by the rows of
    each of the stack's workspaces, ``<path>/<blob>[<level>]``, dormant ones
    (above the top) included and noted; a blob holding a workspace is followed
    by its rows under ``<path>/<blob>``. A stack or workspace met a second time
    (stored twice, or inside itself) is noted ``counted at <path>`` and not
    walked again.
    """
    if not isinstance(name, str) or not name:
        raise TypeError("the report's root name must be a non-empty str")
    rows: list[MemoryRow] = []
    visited: list[str] = []
    # id of every workspace and stack met -> the path where it is counted. Marked
    # when first met, so nothing is scheduled twice; `keep` holds them so that
    # no id is reused while the walk runs.
    seen: dict[int, str] = {}
    keep: list[Any] = []
    # Work items, the next one last: ("workspace", path, ws, dormant) or ("row", row).
    pending: list[tuple[Any, ...]] = []

    def meet(container: Any, path: str) -> str | None:
        """Where ``container`` was counted already, or None (and now it is, at ``path``)."""
        counted_at = seen.get(id(container))
        if counted_at is None:
            seen[id(container)] = path
            keep.append(container)
        return counted_at

    def stack_items(path: str, stack: WorkspaceStack,
                    dormant: bool = False) -> list[tuple[Any, ...]]:
        depth = len(stack)
        items: list[tuple[Any, ...]] = []
        for level, ws in enumerate(stack.workspaces()):
            level_path = f"{path}[{level}]"
            if meet(ws, level_path) is None:
                items.append(("workspace", level_path, ws, dormant or level >= depth))
        return items

    if isinstance(obj, WorkspaceStack):
        meet(obj, name)
        pending.extend(reversed(stack_items(name, obj)))
    elif isinstance(obj, Workspace):
        meet(obj, name)
        pending.append(("workspace", name, obj, False))
    else:
        raise TypeError(f"memory_report takes a Workspace or a WorkspaceStack, "
                        f"not {type(obj).__name__}")

    while pending:
        item = pending.pop()
        if item[0] == "row":
            rows.append(item[1])
            continue
        _, path, ws, dormant = item
        visited.append(path)
        items: list[tuple[Any, ...]] = []
        has_container = False
        leaf_bytes = 0
        note = "dormant" if dormant else ""
        for blob_name in ws.local_blobs():
            blob = ws.get_blob(blob_name)
            if blob is None:
                continue
            value = None if blob.is_empty() else blob.get()
            if not _is_container(value):
                row = _blob_row(path, blob_name, blob, dormant)
                leaf_bytes += row.nbytes
                items.append(("row", row))
                continue
            has_container = True
            kind = type(value).__name__ if isinstance(value, WorkspaceStack) else "Workspace"
            where = f"{path}/{blob_name}"
            counted_at = meet(value, where)
            if counted_at is not None:
                items.append(("row", MemoryRow(path, blob_name, kind, None, None, 0, dormant,
                                               f"counted at {counted_at}")))
            elif isinstance(value, WorkspaceStack):
                extra = f"depth {len(value)} of {value.capacity}"
                items.append(("row", MemoryRow(path, blob_name, kind, None, None, 0, dormant,
                                               ", ".join(n for n in (note, extra) if n))))
                items.extend(stack_items(where, value, dormant))
            else:
                items.append(("row", MemoryRow(path, blob_name, kind, None, None, 0, dormant,
                                               note)))
                items.append(("workspace", where, value, dormant))
        if not has_container:
            # Workspace.nbytes adds the snapshot buffers kept for reuse; it is only
            # safe where no blob holds a container (it would walk into them).
            spare = ws.nbytes - leaf_bytes
            if spare > 0:
                items.append(("row", MemoryRow(path, "(spare buffers)", "buffers", None, None,
                                               spare, dormant,
                                               "snapshot buffers kept for reuse")))
        pending.extend(reversed(items))
    return MemoryReport(rows, visited)


def _check_range(name: str, value: np.ndarray, copy: np.ndarray) -> None:
    """ValueError if a finite value of ``value`` became infinite in ``copy``."""
    if not value.size:
        return
    # fmax/fmin skip NaN and allocate nothing: the common, in-range case is cheap.
    high = float(np.fmax.reduce(value, axis=None))
    low = float(np.fmin.reduce(value, axis=None))
    if -_FLOAT16_OVERFLOW < low and high < _FLOAT16_OVERFLOW:
        return
    overflowed = np.isinf(copy) & np.isfinite(value)
    if overflowed.any():
        worst = float(np.max(np.abs(value[overflowed])))
        raise ValueError(f"cannot cast blob {name} to float16: it holds {worst:g}, beyond "
                         f"float16's range (65504); pass allow_overflow=True to let it "
                         f"become inf")


def cast_to_float16(workspace: Workspace, names: Iterable[str] | str,
                    allow_overflow: bool = False) -> int:
    """Replace the chosen float tensors by float16 copies; returns the bytes saved.

    Each name is looked up as visible from ``workspace`` (a forwarded name casts
    its parent's blob). float16 blobs are left as they are. Every blob is
    checked before any is changed: a missing name raises
    :class:`~scopeops.BlobNotFoundError`; a blob that holds no tensor, or a
    tensor that is not floating point, :class:`~scopeops.BlobTypeError`; a
    finite value too large for float16 (it would become infinite) ``ValueError``
    unless ``allow_overflow``.

    The bytes saved are those the blobs held before minus after; the memory
    returns to the system when nothing else references the old arrays.
    """
    if not isinstance(workspace, Workspace):
        raise TypeError(f"workspace must be a Workspace, not {type(workspace).__name__}")
    if isinstance(names, str):
        names = [names]
    plan: list[tuple[str, Any, np.ndarray]] = []
    planned: set[int] = set()
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"blob names must be str, not {type(name).__name__}")
        blob = workspace.get_blob(name)
        if blob is None:
            raise BlobNotFoundError(f"Blob {name} not in the workspace")
        value = None if blob.is_empty() else blob.get()
        if not isinstance(value, np.ndarray):
            held = "nothing (empty blob)" if blob.meta is None else blob.meta.name
            raise BlobTypeError(f"cannot cast blob {name} to float16: it holds {held}, "
                                f"not a float tensor")
        if value.dtype.kind != "f":
            raise BlobTypeError(f"cannot cast blob {name} to float16: its dtype is "
                                f"{value.dtype}, not floating point")
        if value.dtype == np.float16 or id(blob) in planned:
            continue
        planned.add(id(blob))
        plan.append((name, blob, value))
    # Every copy is made (and checked) before the first blob changes.
    with np.errstate(over="ignore"):   # overflow is checked below, by name
        copies = [value.astype(np.float16) for _, _, value in plan]
    if not allow_overflow:
        for (name, _, value), copy in zip(plan, copies, strict=True):
            _check_range(name, value, copy)
    saved = 0
    for (_, blob, _), copy in zip(plan, copies, strict=True):
        before = blob.nbytes
        blob.set(copy)
        saved += before - blob.nbytes
    return saved
