"""Progress of long loops (the demo's training, ``scopeops bench``, opt-in micro-batch
accumulation), shown with tqdm.

:class:`Progress` is a :class:`tqdm.tqdm` that looks at where it writes:

* a terminal gets tqdm's live bar, redrawn in place;
* anything else (a pipe, a file, a CI log, a notebook's captured stream) gets a few plain
  lines, one when each quarter of the work is done (and one at the end if the loop stops
  between quarters), never a carriage return.

``enabled=False`` (``--quiet`` on the command line) shows nothing at all. tqdm's own
``TQDM_*`` environment variables (``TQDM_DISABLE=1``, ...) apply as usual.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm import tqdm

__all__ = ["LINES", "Progress", "is_terminal"]

#: How many plain lines a loop of known length writes through a pipe.
LINES = 4

# The bar itself would be a row of '#' in a log; the counts say the same in fewer columns.
_LINE_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, " \
               "{rate_fmt}{postfix}]"


def is_terminal(stream: Any) -> bool:
    """Does ``stream`` write to a terminal? False for anything without a working
    ``isatty`` (a closed or detached stream, a file-like object)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):   # a closed or detached stream
        return False


def _terminal_columns(stream: Any) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


class Progress(tqdm):  # type: ignore[type-arg]
    """A tqdm bar on ``file`` (stderr by default): live in a terminal, plain lines elsewhere.

    Parameters
    ----------
    iterable : iterable, optional
        What to iterate over, as with tqdm; or leave it out and call :meth:`update`.
    total : int, optional
        The number of steps (taken from ``len(iterable)`` when it has one). Through a
        pipe, lines are written at each quarter of it.
    desc : str
        What is being done, the start of every line ("training", "micro-batches").
    file : text stream, optional
        Where to write; ``sys.stderr`` when None.
    enabled : bool
        False shows nothing (``--quiet``).
    **kwargs
        Further :class:`tqdm.tqdm` options (``unit``, ``postfix``, ...), used as given in a
        terminal; through a pipe the line format, refresh rate and ``leave`` are this class's.
    """

    def __init__(self, iterable: Iterable[Any] | None = None, *, total: float | None = None,
                 desc: str = "progress", file: TextIO | None = None, enabled: bool = True,
                 **kwargs: Any) -> None:
        stream = sys.stderr if file is None else file
        self._as_lines = not is_terminal(stream)
        self._printed_n: float = 0
        self._marks: list[float] = []
        if self._as_lines:
            if total is None and iterable is not None and hasattr(iterable, "__len__"):
                total = len(iterable)  # type: ignore[arg-type]
            if total:
                self._marks = sorted({math.ceil(total * k / LINES) for k in range(1, LINES + 1)})
            # Every update reaches display(), which writes only at the marks.
            kwargs.update(leave=False, mininterval=0, miniters=1, ascii=True,
                          bar_format=_LINE_FORMAT, dynamic_ncols=False)
        elif _terminal_columns(stream) > 0:
            kwargs.setdefault("dynamic_ncols", True)
        else:   # a terminal that reports no size (some containers' ptys): tqdm would draw nothing
            kwargs.setdefault("ncols", 80)
            kwargs.setdefault("nrows", 24)
        super().__init__(iterable, total=total, desc=desc, file=stream, disable=not enabled,
                         **kwargs)

    # tqdm's close() reads display()'s bool; its stubs say None.
    def display(self, msg: str | None = None, pos: int | None = None) -> bool:  # type: ignore[override]
        if not self._as_lines:
            return bool(super().display(msg, pos))
        # tqdm clears a bar with msg="": a log has nothing to clear.
        if msg is not None or not self._marks or self.n < self._marks[0]:
            return False
        self._write_line()
        return True

    def _write_line(self) -> None:
        self.fp.write(self.__str__() + "\n")
        self.fp.flush()
        self._printed_n = self.n
        while self._marks and self._marks[0] <= self.n:
            self._marks.pop(0)

    def close(self) -> None:
        if self._as_lines and not getattr(self, "disable", True) and self.n > self._printed_n:
            self._write_line()   # the loop stopped between two marks: say where
        super().close()
