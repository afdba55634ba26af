"""Atomic file replacement: a file at ``path`` is either the old one or the new one, whole.

``atomic_write(path, mode="wb")`` is a context manager that yields a file object
writing to a temporary file beside ``path``. When the ``with`` block ends
normally, the temporary file is flushed, ``fsync``\\ ed, given the permissions a
plain ``open(path, "w")`` would give, and renamed onto ``path`` with
``os.replace`` (atomic on POSIX and Windows); the directory is then ``fsync``\\ ed
so that the rename itself survives a power cut. If the block raises (any
exception, ``KeyboardInterrupt`` included) the temporary file is removed and
``path`` is left exactly as it was.

A process killed outright (``SIGKILL``, power loss) cannot clean up: it leaves
its temporary file, named ``.<name>.<random>.tmp``, beside ``path``, and ``path``
itself untouched. Each writer holds an exclusive ``flock`` on its temporary file
until the rename, and the kernel drops that lock when the process dies, so the
next ``atomic_write`` of the same path removes temporary files whose lock it can
take: those left by dead writers, never one a live writer is still filling. (Where
``fcntl`` is missing, on Windows, stale temporary files are left alone.)

``path`` is replaced as a name: if it is a symbolic link, the link is replaced
by a regular file rather than written through.

This module imports nothing from scopeops, so any layer may use it.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from typing import IO, Any, Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["atomic_write", "remove_stale_temp_files"]

_MODES = ("wb", "w")
_SUFFIX = ".tmp"


def _temp_prefix(target: str) -> str:
    return f".{os.path.basename(target)}."


def _new_file_mode(target: str) -> int:
    """The permissions ``open(target, "w")`` would leave: an existing file keeps its own,
    a new one gets 0o666 less the umask."""
    try:
        return os.stat(target).st_mode & 0o7777
    except OSError:
        pass
    return 0o666 & ~_umask()


def _umask() -> int:
    # Reading the umask with os.umask() means setting it, which races with other threads.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _lock(fd: int, wait: bool) -> bool:
    """Take an exclusive flock on ``fd``; False when another holder has it (and not wait)."""
    if fcntl is None:  # pragma: no cover - Windows
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_file(path: str, fd: int) -> bool:
    try:
        named, opened = os.stat(path, follow_symlinks=False), os.fstat(fd)
    except OSError:
        return False
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def remove_stale_temp_files(path: str | os.PathLike[str]) -> list[str]:
    """Remove the temporary files that killed writers of ``path`` left beside it.

    Only files named like ``atomic_write``'s temporary files for ``path`` whose
    lock is free (their writer is dead) are removed. Returns their paths. Errors
    (a file vanishing meanwhile, no permission) are ignored: this is clean-up.
    """
    if fcntl is None:  # pragma: no cover - Windows
        return []
    target = os.fsdecode(os.fspath(path))
    directory = os.path.dirname(os.path.abspath(target))
    pattern = re.compile(re.escape(_temp_prefix(target)) + r"[A-Za-z0-9_]+" + re.escape(_SUFFIX))
    removed: list[str] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            # A live writer holds the lock; a free lock means the writer died.
            if _lock(fd, wait=False) and _same_file(entry.path, fd):
                os.unlink(entry.path)
                removed.append(entry.path)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _create_locked_temp(target: str, directory: str) -> tuple[int, str]:
    while True:
        fd, temp_path = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=_SUFFIX,
                                         dir=directory)
        _lock(fd, wait=True)
        # A clean-up may have taken the lock before we did, and removed the file.
        if _same_file(temp_path, fd):
            return fd, temp_path
        os.close(fd)


def _fsync_directory(directory: str) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _set_mode(stream: IO[Any], temp_path: str, mode: int) -> None:
    if hasattr(os, "fchmod"):
        os.fchmod(stream.fileno(), mode)
    else:  # pragma: no cover - Windows
        os.chmod(temp_path, mode)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb", *,
                 encoding: str | None = None, newline: str | None = None) -> Iterator[IO[Any]]:
    """Write ``path`` all at once: yields a file object on a temporary file beside it.

    ``mode`` is ``"wb"`` (binary, the default) or ``"w"`` (text, with ``encoding``
    and ``newline`` as for :func:`open`; UTF-8 unless given). On a normal exit the
    file replaces ``path`` atomically and durably; on an exception ``path`` is left
    as it was and the temporary file is removed. Stale temporary files that killed
    writers left for ``path`` are removed first.
    """
    if mode not in _MODES:
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', not {mode!r}")
    if mode == "wb" and (encoding is not None or newline is not None):
        raise ValueError("encoding and newline are for text mode ('w') only")
    target = os.fsdecode(os.fspath(path))
    directory = os.path.dirname(os.path.abspath(target))
    permissions = _new_file_mode(target)
    remove_stale_temp_files(target)
    fd, temp_path = _create_locked_temp(target, directory)
    try:
        if mode == "wb":
            stream: IO[Any] = os.fdopen(fd, "wb")
        else:
            stream = os.fdopen(fd, "w", encoding=encoding or "utf-8", newline=newline)
    except BaseException:
        os.close(fd)
        os.unlink(temp_path)
        raise
    try:
        with stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
            _set_mode(stream, temp_path, permissions)
            # Renamed while still locked, so a clean-up never removes it under us.
            os.replace(temp_path, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_path)
        raise
    _fsync_directory(directory)
