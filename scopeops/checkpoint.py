"""Checkpoints: a workspace's local blobs in a file, without pickle.

``save_workspace(ws, path)`` writes the local blobs of ``ws``;
``load_workspace(path)`` builds a new :class:`~scopeops.Workspace` from them.
``read_checkpoint_header(path)`` lists what a checkpoint holds without loading it.

What a checkpoint stores (types are matched exactly; subclasses are refused):

* ``numpy.ndarray`` tensors of dtype bool, int8..int64, uint8..uint64, float16/32/64,
  complex64/128, fixed-width unicode (``U``) and bytes (``S``), any shape (0-d and
  empty included), any strides and either byte order. They load C-contiguous and
  writeable, with exactly the saved dtype (byte order included) and shape.
* numpy scalars of those dtypes (``np.float32(1)``, ``np.bool_(True)``, ``np.str_``).
* ``str`` and ``bytes``; Python ``int`` (any size), ``float``, ``complex``, ``bool``
  and ``None``.

Everything else (empty blobs, object, structured, datetime and ``longdouble`` arrays,
``WorkspaceStack`` blobs, arbitrary objects) is refused by name before anything is
written. Only local blobs are saved: forwards and the ``shared`` chain belong to
other workspaces.

File format, version 1 (all integers little-endian)::

    magic        13 bytes  b"\\x89SCOPEOPS\\r\\n\\x1a\\n"
    version       4 bytes  uint32, 1
    header_len    8 bytes  uint64
    data_len      8 bytes  uint64
    header        header_len bytes of UTF-8 JSON:
                  {"blobs": [{"name", "kind", "nbytes", ("dtype", "shape")}, ...]}
    data          data_len bytes: each blob's bytes, back to back, in header order;
                  tensors in C order, elements little-endian
    checksum     32 bytes  SHA-256 of everything above

Loading checks the magic, the version, the declared sizes against the file's size,
every header field (kinds, dtypes from a fixed list, shapes, sizes, unique names)
and the checksum, and builds every value before the workspace is created, so a bad
file raises :class:`~scopeops.CheckpointError` and nothing is half-loaded. No code
is ever executed from a file: there is no pickle, and dtypes are never parsed
from free text by numpy. Failures to open or read the file itself (missing file,
permissions) raise the usual ``OSError``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import sys
import tempfile
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from scopeops._workspace import Workspace as _CoreWorkspace
from scopeops.errors import CheckpointError
from scopeops.workspace import Workspace

__all__ = [
    "save_workspace",
    "load_workspace",
    "read_checkpoint_header",
    "CheckpointEntry",
    "FORMAT_VERSION",
    "MAGIC",
]

MAGIC = b"\x89SCOPEOPS\r\n\x1a\n"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<IQQ")          # version, header_len, data_len
_PREFIX_SIZE = len(MAGIC) + _PREFIX.size
_DIGEST_SIZE = hashlib.sha256().digest_size
_CHUNK = 1 << 20
_MAX_NDIM = 64

_NUMERIC_DTYPES = tuple(np.dtype(t) for t in (
    np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
    np.uint64, np.float16, np.float32, np.float64, np.complex64, np.complex128))
# Every dtype a checkpoint may name, by its numpy ``.str``, both byte orders.
_DTYPES_BY_STR = {d.newbyteorder(order).str: d.newbyteorder(order)
                  for d in _NUMERIC_DTYPES for order in ("<", ">")}
_FLEXIBLE_DTYPE = re.compile(r"([<>|])([US])([1-9][0-9]{0,9})")
_MAX_FLEXIBLE_ITEMSIZE = 2**31 - 1

# Kinds of blob, and the header keys each one carries.
_ARRAY_KINDS = {"tensor", "scalar"}
_KEYS = {kind: {"name", "kind", "nbytes", "dtype", "shape"} for kind in _ARRAY_KINDS}
_KEYS.update({kind: {"name", "kind", "nbytes"}
              for kind in ("str", "bytes", "int", "float", "complex", "bool", "none")})
_FIXED_NBYTES = {"float": 8, "complex": 16, "bool": 1, "none": 0}
_PYTHON_KINDS = {str: "str", bytes: "bytes", int: "int", float: "float", complex: "complex",
                 bool: "bool", type(None): "none"}
_SUPPORTED = ("numpy tensors and scalars of bool, integer, float, complex, unicode (U) or "
              "bytes (S) dtype, str, bytes, int, float, complex, bool and None")


class CheckpointEntry(NamedTuple):
    """One blob of a checkpoint, as its header describes it.

    ``type`` is the stored kind: ``"tensor"``, ``"scalar"`` (a numpy scalar),
    ``"str"``, ``"bytes"``, ``"int"``, ``"float"``, ``"complex"``, ``"bool"`` or
    ``"none"``. ``dtype`` and ``shape`` are set for tensors and scalars (shape ``()``),
    None otherwise. ``nbytes`` is the size of its data in the file.
    """

    name: str
    type: str
    dtype: np.dtype | None
    shape: tuple[int, ...] | None
    nbytes: int


# -- saving -------------------------------------------------------------------


class _PlannedBlob(NamedTuple):
    entry: CheckpointEntry
    value: Any


def _storable_dtype(dtype: np.dtype) -> bool:
    if dtype.str in _DTYPES_BY_STR:
        return True
    return (_FLEXIBLE_DTYPE.fullmatch(dtype.str) is not None and dtype.names is None
            and dtype.metadata is None and 0 < dtype.itemsize <= _MAX_FLEXIBLE_ITEMSIZE)


def _plan_blob(name: str, blob: Any) -> _PlannedBlob | str:
    """How ``blob`` is stored, or why it cannot be (a phrase naming its type)."""
    if blob is None or blob.is_empty():
        return "it is empty"
    value = blob.get()
    cls = type(value)
    if cls is np.ndarray or isinstance(value, np.generic):
        if cls is not np.ndarray and cls is not value.dtype.type:
            return f"it holds a {cls.__module__}.{cls.__qualname__} (a numpy scalar subclass)"
        if not _storable_dtype(value.dtype):
            what = "tensor" if cls is np.ndarray else "numpy scalar"
            return f"it holds a {what} of dtype {value.dtype}, which a checkpoint cannot store"
        kind = "tensor" if cls is np.ndarray else "scalar"
        nbytes = int(value.size) * value.dtype.itemsize
        return _PlannedBlob(CheckpointEntry(name, kind, value.dtype, tuple(value.shape),
                                            nbytes), value)
    if isinstance(value, np.ndarray):
        return (f"it holds a {cls.__module__}.{cls.__qualname__}, an ndarray subclass "
                f"(store np.asarray(value) to save it as a plain tensor)")
    python_kind = _PYTHON_KINDS.get(cls)
    if python_kind is None:
        return f"it holds a {cls.__module__}.{cls.__qualname__}"
    encoded = _encode_python(python_kind, value)
    return _PlannedBlob(CheckpointEntry(name, python_kind, None, None, len(encoded)), encoded)


def _encode_python(kind: str, value: Any) -> bytes:
    if kind == "str":
        return value.encode("utf-8", "surrogatepass")
    if kind == "bytes":
        return value
    if kind == "int":
        return value.to_bytes(max(1, (value.bit_length() + 8) // 8), "little", signed=True)
    if kind == "float":
        return struct.pack("<d", value)
    if kind == "complex":
        return struct.pack("<dd", value.real, value.imag)
    if kind == "bool":
        return b"\x01" if value else b"\x00"
    return b""


def _plan(ws: Any) -> list[_PlannedBlob]:
    planned: list[_PlannedBlob] = []
    refused: list[str] = []
    for name in ws.local_blobs():
        result = _plan_blob(name, ws.get_blob(name))
        if isinstance(result, str):
            refused.append(f"blob {name!r}: {result}")
        else:
            planned.append(result)
    if refused:
        raise CheckpointError(
            f"Cannot save the workspace: {len(refused)} blob(s) cannot be stored in a "
            f"checkpoint ({'; '.join(refused)}). A checkpoint stores {_SUPPORTED}. "
            f"Nothing was written.")
    return planned


def _header_bytes(planned: list[_PlannedBlob]) -> bytes:
    blobs = []
    for item in planned:
        entry = item.entry
        record: dict[str, Any] = {"name": entry.name, "kind": entry.type,
                                  "nbytes": entry.nbytes}
        if entry.dtype is not None:
            record["dtype"] = entry.dtype.str
            record["shape"] = list(entry.shape or ())
        blobs.append(record)
    return json.dumps({"blobs": blobs}, ensure_ascii=True, allow_nan=False,
                      separators=(",", ":")).encode("ascii")


def _tensor_bytes(entry: CheckpointEntry, value: Any) -> memoryview:
    """The tensor's elements in C order, little-endian, as a flat byte view."""
    assert entry.dtype is not None
    little = np.asarray(value, dtype=entry.dtype.newbyteorder("<"), order="C")
    flat = little.reshape(-1).view(np.uint8).data
    if flat.nbytes != entry.nbytes or little.shape != entry.shape:
        raise CheckpointError(f"blob {entry.name!r} changed while it was being saved "
                              f"(now {value.dtype}{list(value.shape)})")
    return flat


def _new_file_mode(path: str) -> int:
    # mkstemp makes 0600 files; a checkpoint gets the mode a plain open() would give.
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        pass
    umask = 0o022
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    umask = int(line.split()[1], 8)
                    break
    except (OSError, ValueError):
        pass
    return 0o666 & ~umask


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


def save_workspace(ws: Any, path: str | os.PathLike[str]) -> None:
    """Write the local blobs of ``ws`` to the checkpoint file ``path``, atomically.

    Every blob is checked first: any that cannot be stored raises
    :class:`~scopeops.CheckpointError` naming each of them, and no file is created
    or touched. The file is written to a temporary file in the same directory,
    flushed to disk, then renamed onto ``path``; if anything fails, ``path`` is
    left as it was and the temporary file is removed.
    """
    if not isinstance(ws, _CoreWorkspace):
        raise TypeError(f"save_workspace takes a Workspace, not {type(ws).__name__}")
    target = os.fspath(path)
    if not isinstance(target, str):
        target = os.fsdecode(target)
    planned = _plan(ws)
    header = _header_bytes(planned)
    data_len = sum(item.entry.nbytes for item in planned)
    directory = os.path.dirname(os.path.abspath(target))
    mode = _new_file_mode(target)
    fd, temp_path = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.",
                                     suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            hasher = hashlib.sha256()
            for piece in (MAGIC, _PREFIX.pack(FORMAT_VERSION, len(header), data_len), header):
                out.write(piece)
                hasher.update(piece)
            for item in planned:
                if item.entry.dtype is not None:
                    chunk: Any = _tensor_bytes(item.entry, item.value)
                else:
                    chunk = item.value
                out.write(chunk)
                hasher.update(chunk)
            out.write(hasher.digest())
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp_path, mode)
        os.replace(temp_path, target)
    except BaseException:
        try:
            os.unlink(temp_path)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


# -- loading ------------------------------------------------------------------


def _read_up_to(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    return data if data is not None else b""


def _parse_dtype(spec: Any, where: str) -> np.dtype:
    if not isinstance(spec, str):
        raise CheckpointError(f"{where}: the dtype must be a string, got {spec!r:.80}")
    dtype = _DTYPES_BY_STR.get(spec)
    if dtype is not None:
        return dtype
    match = _FLEXIBLE_DTYPE.fullmatch(spec)
    if match is not None:
        order, letter, width = match.groups()
        itemsize = int(width) * (4 if letter == "U" else 1)
        if (letter == "S") == (order == "|") and itemsize <= _MAX_FLEXIBLE_ITEMSIZE:
            return np.dtype(f"{order}{letter}{width}")
    raise CheckpointError(f"{where}: unknown or unsupported dtype {spec!r:.80}")


def _parse_int(value: Any, what: str, where: str) -> int:
    if type(value) is not int or value < 0:
        raise CheckpointError(f"{where}: {what} must be a non-negative integer, "
                              f"got {value!r:.80}")
    return value


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) != len(pairs):
        keys = [key for key, _ in pairs]
        duplicate = next(key for key in keys if keys.count(key) > 1)
        raise CheckpointError(f"the header repeats the key {duplicate!r:.80}")
    return record


def _reject_constant(name: str) -> Any:
    raise CheckpointError(f"the header holds the non-JSON number {name}")


def _parse_header(header: bytes, data_len: int) -> list[CheckpointEntry]:
    """The header's entries, every field checked; CheckpointError naming the first problem."""
    try:
        document = json.loads(header.decode("utf-8"),
                              object_pairs_hook=_reject_duplicate_keys,
                              parse_constant=_reject_constant)
    except CheckpointError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"the header is not valid JSON ({type(exc).__name__}: "
                              f"{str(exc):.120})") from None
    if not isinstance(document, dict) or set(document) != {"blobs"}:
        raise CheckpointError("the header must be an object with exactly one key, 'blobs'")
    records = document["blobs"]
    if not isinstance(records, list):
        raise CheckpointError("the header's 'blobs' must be a list")
    entries: list[CheckpointEntry] = []
    names: set[str] = set()
    total = 0
    for index, record in enumerate(records):
        where = f"header entry {index}"
        if not isinstance(record, dict):
            raise CheckpointError(f"{where} is not an object")
        kind = record.get("kind")
        if not isinstance(kind, str) or kind not in _KEYS:
            raise CheckpointError(f"{where}: unknown blob kind {kind!r:.80}")
        if set(record) != _KEYS[kind]:
            raise CheckpointError(f"{where}: a {kind} entry has the keys "
                                  f"{sorted(_KEYS[kind])}, got {sorted(record)!r:.200}")
        name = record["name"]
        if not isinstance(name, str) or not name:
            raise CheckpointError(f"{where}: a blob name must be a non-empty string")
        where = f"header entry {index} (blob {name!r:.80})"
        if name in names:
            raise CheckpointError(f"{where}: the blob name appears twice")
        names.add(name)
        nbytes = _parse_int(record["nbytes"], "nbytes", where)
        dtype: np.dtype | None = None
        shape: tuple[int, ...] | None = None
        if kind in _ARRAY_KINDS:
            dtype = _parse_dtype(record["dtype"], where)
            dims = record["shape"]
            if not isinstance(dims, list) or len(dims) > _MAX_NDIM:
                raise CheckpointError(f"{where}: the shape must be a list of at most "
                                      f"{_MAX_NDIM} sizes")
            shape = tuple(_parse_int(d, "every size in the shape", where) for d in dims)
            if kind == "scalar" and shape:
                raise CheckpointError(f"{where}: a scalar has shape [], got {list(shape)}")
            # numpy's own limit: the size ignoring zero dimensions must fit in memory.
            if math.prod(max(d, 1) for d in shape) * dtype.itemsize > sys.maxsize:
                raise CheckpointError(f"{where}: the shape {list(shape)!r:.200} is too large "
                                      f"for any array")
            expected = math.prod(shape) * dtype.itemsize
            if nbytes != expected:
                raise CheckpointError(f"{where}: {nbytes} bytes declared, but a {dtype} "
                                      f"tensor of shape {list(shape)} has {expected}")
        elif kind in _FIXED_NBYTES and nbytes != _FIXED_NBYTES[kind]:
            raise CheckpointError(f"{where}: a {kind} takes {_FIXED_NBYTES[kind]} bytes, "
                                  f"{nbytes} declared")
        elif kind == "int" and nbytes == 0:
            raise CheckpointError(f"{where}: an int takes at least 1 byte")
        total += nbytes
        if total > data_len:
            raise CheckpointError(f"{where}: the blobs declare more bytes than the "
                                  f"{data_len}-byte data section holds")
        entries.append(CheckpointEntry(name, kind, dtype, shape, nbytes))
    if total != data_len:
        raise CheckpointError(f"the blobs declare {total} bytes, but the data section "
                              f"holds {data_len}")
    return entries


def _check_rest(stream: BinaryIO, hasher: Any, nbytes: int, where: str) -> None:
    """Hash the next ``nbytes`` bytes and compare with the checksum that follows."""
    remaining = nbytes
    while remaining:
        chunk = _read_up_to(stream, min(remaining, _CHUNK))
        if not chunk:
            raise CheckpointError(f"{where} is truncated (it shrank while being read)")
        hasher.update(chunk)
        remaining -= len(chunk)
    _check_digest(stream, hasher, where)


def _check_digest(stream: BinaryIO, hasher: Any, where: str) -> None:
    digest = _read_up_to(stream, _DIGEST_SIZE)
    if len(digest) != _DIGEST_SIZE:
        raise CheckpointError(f"{where} is truncated (it shrank while being read)")
    if digest != hasher.digest():
        raise CheckpointError(f"{where} is corrupted: its SHA-256 checksum does not match "
                              f"its contents")


class _Opened(NamedTuple):
    entries: list[CheckpointEntry]
    hasher: Any
    data_len: int


def _open_checkpoint(stream: BinaryIO, where: str) -> _Opened:
    """Check magic, version and sizes, read and check the header; the stream is left at
    the start of the data section."""
    size = os.fstat(stream.fileno()).st_size
    magic = _read_up_to(stream, len(MAGIC))
    if magic != MAGIC[:len(magic)]:
        raise CheckpointError(f"{where} is not a scopeops checkpoint (its first bytes are "
                              f"{magic[:8]!r}, not the checkpoint magic {MAGIC!r})")
    if len(magic) < len(MAGIC):
        raise CheckpointError(f"{where} is truncated: {size} bytes, too short for a "
                              f"checkpoint" if magic else f"{where} is empty")
    prefix = _read_up_to(stream, _PREFIX.size)
    if len(prefix) < _PREFIX.size:
        raise CheckpointError(f"{where} is truncated: {size} bytes, too short for a "
                              f"checkpoint")
    version, header_len, data_len = _PREFIX.unpack(prefix)
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{where} was written in checkpoint format version {version}, newer than "
            f"this scopeops reads (format version {FORMAT_VERSION}): upgrade scopeops "
            f"to load it")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{where} declares an unknown checkpoint format version "
                              f"{version}")
    declared = _PREFIX_SIZE + header_len + data_len + _DIGEST_SIZE
    if declared != size:
        problem = "truncated" if declared > size else "corrupted"
        raise CheckpointError(f"{where} is {problem}: it has {size} bytes, but its sizes "
                              f"declare {declared}")
    hasher = hashlib.sha256(MAGIC + prefix)
    header = _read_up_to(stream, header_len)
    if len(header) != header_len:
        raise CheckpointError(f"{where} is truncated (it shrank while being read)")
    hasher.update(header)
    try:
        entries = _parse_header(header, data_len)
    except CheckpointError as problem:
        # A damaged file says so; only a well-formed file with a bad header is "invalid".
        _check_rest(stream, hasher, data_len, where)
        raise CheckpointError(f"{where} has an invalid header: {problem}") from None
    return _Opened(entries, hasher, data_len)


def _decode(entry: CheckpointEntry, raw: bytearray, where: str) -> Any:
    if entry.dtype is not None:
        shape = entry.shape or ()
        if entry.dtype.kind == "U" and raw and int(np.frombuffer(raw, "<u4").max()) > 0x10FFFF:
            raise CheckpointError(f"{where}: str tensor {entry.name!r} holds a value that "
                                  f"is not a Unicode code point")
        try:
            little = np.frombuffer(raw, dtype=entry.dtype.newbyteorder("<")).reshape(shape)
            array = little if little.dtype == entry.dtype else little.astype(entry.dtype)
        except (ValueError, TypeError, MemoryError) as exc:
            raise CheckpointError(f"{where}: blob {entry.name!r} cannot be rebuilt as a "
                                  f"{entry.dtype} array of shape {list(shape)} ({exc})") from None
        return array[()] if entry.type == "scalar" else array
    if entry.type == "str":
        try:
            return raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise CheckpointError(f"{where}: str blob {entry.name!r} is not valid "
                                  f"UTF-8") from None
    if entry.type == "bytes":
        return bytes(raw)
    if entry.type == "int":
        return int.from_bytes(raw, "little", signed=True)
    if entry.type == "float":
        return struct.unpack("<d", raw)[0]
    if entry.type == "complex":
        real, imag = struct.unpack("<dd", raw)
        return complex(real, imag)
    if entry.type == "bool":
        if bytes(raw) not in (b"\x00", b"\x01"):
            raise CheckpointError(f"{where}: bool blob {entry.name!r} holds {bytes(raw)!r}")
        return raw == b"\x01"
    return None


def _read_values(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Every blob of the checkpoint, decoded; only after the checksum has matched."""
    where = f"checkpoint {os.fsdecode(path)!r}"
    with open(path, "rb") as stream:
        opened = _open_checkpoint(stream, where)
        raws: list[bytearray] = []
        for entry in opened.entries:
            raw = bytearray(entry.nbytes)
            view = memoryview(raw)
            filled = 0
            while filled < entry.nbytes:
                got = stream.readinto(view[filled:])
                if not got:
                    raise CheckpointError(f"{where} is truncated (it shrank while being read)")
                filled += got
            opened.hasher.update(raw)
            raws.append(raw)
        _check_digest(stream, opened.hasher, where)
    return {entry.name: _decode(entry, raw, where)
            for entry, raw in zip(opened.entries, raws, strict=True)}


def load_workspace(path: str | os.PathLike[str]) -> Workspace:
    """A new :class:`~scopeops.Workspace` holding the blobs saved at ``path``.

    Raises :class:`~scopeops.CheckpointError` naming the problem for a file that is
    not a checkpoint, is truncated or corrupted, has an invalid header, or was
    written in a newer format; in that case no workspace is created.
    """
    values = _read_values(path)
    ws = Workspace()
    for name, value in values.items():
        ws.feed_blob(name, value)
    return ws


def read_checkpoint_header(path: str | os.PathLike[str], verify: bool = True
                           ) -> list[CheckpointEntry]:
    """What the checkpoint at ``path`` holds, without building its values.

    With ``verify`` (the default) the data is streamed through the checksum in
    fixed-size chunks, so a corrupted file raises :class:`~scopeops.CheckpointError`
    without the data ever being held in memory; ``verify=False`` reads only the
    fixed-size prefix and the header.
    """
    where = f"checkpoint {os.fsdecode(path)!r}"
    with open(path, "rb") as stream:
        opened = _open_checkpoint(stream, where)
        if verify:
            _check_rest(stream, opened.hasher, opened.data_len, where)
    return opened.entries

