"""Checkpoints: a workspace's local blobs in a safetensors file, without pickle.

``save_workspace(ws, path)`` writes the local blobs of ``ws``;
``load_workspace(path)`` builds a new :class:`~scopeops.Workspace` from them.
``read_checkpoint_header(path)`` lists what a checkpoint holds without loading it.

A checkpoint is a `safetensors <https://huggingface.co/docs/safetensors>`_ file:
an 8-byte little-endian header length, a JSON header, then the tensors' bytes.

* Tensors are safetensors tensors, under their blob's name: bool, int8..int64,
  uint8..uint64, float16/32/64 and complex64 as BOOL, I8..U64, F16/F32/F64 and
  C64. ``safetensors.numpy.load_file`` reads them as they are. Dtypes safetensors
  has no code for are stored as the numbers they are made of, with one more
  dimension: complex128 as F64 pairs (real, imaginary), unicode ``U<n>`` as U32
  code points (n of them), bytes ``S<n>`` as U8 (n of them). Big-endian tensors
  are stored little-endian, as safetensors requires. The scopeops metadata
  records each blob's exact numpy dtype, so all of these load back exactly.
* Everything else that can be stored (numpy scalars, ``str``, ``bytes``, ``int``,
  ``float``, ``complex``, ``bool``, ``None``) lives in the header's
  ``__metadata__``, typed, as does an SHA-256 digest over the tensor table, the
  blob list and the tensor data.
* ``__metadata__`` holds three strings: ``scopeops.format`` (``"1"``),
  ``scopeops.blobs`` (a JSON list, one record per blob in workspace order:
  ``name``, ``type`` and, by type, ``key`` (the tensor's safetensors name),
  ``dtype``, ``shape``, ``value``, ``variable``) and ``scopeops.sha256``.

A safetensors file without scopeops metadata (written by
``safetensors.numpy.save_file``, PyTorch, ...) loads too: each tensor becomes a
blob of the same name, in name order, and other metadata is ignored. A file with
only some of the ``scopeops.*`` keys, or unknown ones, is refused: it claims to be
a checkpoint whose integrity cannot be checked.

Loading reads the file once, checks every header field first (what safetensors'
own parser checks, and what it lets through: duplicate names, unknown fields,
dtypes numpy cannot hold, shapes numpy cannot build, non-canonical bools), then
the digest, then builds every value with ``safetensors.deserialize`` before the
workspace is created; a bad file raises :class:`~scopeops.CheckpointError` and
nothing is half-loaded. No code is ever executed from a file: there is no
pickle, and dtypes are looked up in fixed tables, never parsed by numpy.
Failures to open or read the file itself (missing file, permissions) raise the
usual ``OSError``.

Saving checks every blob first, writes through
:func:`scopeops.atomicfile.atomic_write` (a temporary file beside ``path``,
``fsync``, rename), and records which blobs are variables (and trainable), so
that :func:`~scopeops.get_variable` takes them over after a load.
``WorkspaceStack`` blobs are left out and reported: they are rebuilt on the next
run.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import re
import struct
import sys
from typing import Any, BinaryIO, Iterator, NamedTuple

import numpy as np
import safetensors

from scopeops._stack import WorkspaceStack
from scopeops._workspace import Workspace as _CoreWorkspace
from scopeops.atomicfile import atomic_write
from scopeops.errors import CheckpointError
from scopeops.variables import global_variables, register_loaded_blobs, trainable_variables
from scopeops.workspace import Workspace

__all__ = [
    "save_workspace",
    "load_workspace",
    "read_checkpoint_header",
    "CheckpointEntry",
    "FORMAT_VERSION",
    "MAX_HEADER_SIZE",
]

FORMAT_VERSION = 1
#: safetensors refuses a JSON header larger than this; so does a save.
MAX_HEADER_SIZE = 100_000_000

_FORMAT_KEY = "scopeops.format"
_BLOBS_KEY = "scopeops.blobs"
_DIGEST_KEY = "scopeops.sha256"
_SCOPEOPS_KEYS = {_FORMAT_KEY, _BLOBS_KEY, _DIGEST_KEY}
_METADATA = "__metadata__"
_LENGTH = struct.Struct("<Q")
_DIGEST_DOMAIN = b"scopeops checkpoint 1\n"
_CHUNK = 16 << 20
_MAX_NDIM = 64

# Every safetensors dtype and its size in bits, in safetensors' order (ascending
# alignment; files are laid out in descending order, as safetensors writes them).
_SAFETENSORS_BITS = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8,
    "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16,
    "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64,
    "I64": 64, "U64": 64,
}
_LAYOUT_ORDER = {code: rank for rank, code in enumerate(_SAFETENSORS_BITS)}
# The safetensors dtypes numpy holds, as little-endian numpy dtypes.
_NUMPY_OF_CODE = {code: np.dtype(spec) for code, spec in {
    "BOOL": "?", "U8": "u1", "I8": "i1", "I16": "<i2", "U16": "<u2", "F16": "<f2",
    "I32": "<i4", "U32": "<u4", "F32": "<f4", "C64": "<c8", "F64": "<f8", "I64": "<i8",
    "U64": "<u8"}.items()}
_CODE_OF_NUMPY = {dtype: code for code, dtype in _NUMPY_OF_CODE.items()}

_NUMERIC_DTYPES = tuple(np.dtype(t) for t in (
    np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
    np.uint64, np.float16, np.float32, np.float64, np.complex64, np.complex128))
# Every numpy dtype a checkpoint may name, by its ``.str``, both byte orders.
_DTYPES_BY_STR = {d.newbyteorder(order).str: d.newbyteorder(order)
                  for d in _NUMERIC_DTYPES for order in ("<", ">")}
_FLEXIBLE_DTYPE = re.compile(r"([<>|])([US])([1-9][0-9]{0,9})")
_MAX_FLEXIBLE_ITEMSIZE = 2**31 - 1
_EMPTY_FLEXIBLE = {"<U0": np.dtype("<U0"), ">U0": np.dtype(">U0"), "|S0": np.dtype("|S0")}

_PYTHON_TYPES = {str: "str", bytes: "bytes", int: "int", float: "float", complex: "complex",
                 bool: "bool", type(None): "none"}
_TYPES = ("tensor", "scalar", "str", "bytes", "int", "float", "complex", "bool", "none")
_KEYS = {"tensor": {"name", "type", "key", "dtype", "shape"},
         "scalar": {"name", "type", "dtype", "value"},
         "none": {"name", "type"}}
_FLOAT_BITS = re.compile(r"[0-9a-f]{16}")
_INT_HEX = re.compile(r"-?0x(?:0|[1-9a-f][0-9a-f]*)")
_HEX_BYTES = re.compile(r"(?:[0-9a-f]{2})*")
_DIGEST_HEX = re.compile(r"[0-9a-f]{64}")
_SUPPORTED = ("numpy tensors and scalars of bool, integer, float, complex, unicode (U) or "
              "bytes (S) dtype, str, bytes, int, float, complex, bool and None")
_STACK_REASON = "it holds a WorkspaceStack (scope stacks are rebuilt on the next run)"


class CheckpointEntry(NamedTuple):
    """One blob of a checkpoint, as its header describes it.

    ``type`` is ``"tensor"``, ``"scalar"`` (a numpy scalar), ``"str"``,
    ``"bytes"``, ``"int"``, ``"float"``, ``"complex"``, ``"bool"`` or ``"none"``.
    ``dtype`` and ``shape`` are set for tensors and scalars (shape ``()``), None
    otherwise. ``nbytes`` is the size of its value's data. ``variable`` says the
    blob was saved as a variable (from :func:`~scopeops.get_variable`), and
    ``trainable`` whether it was a trainable one.
    """

    name: str
    type: str
    dtype: np.dtype | None
    shape: tuple[int, ...] | None
    nbytes: int
    variable: bool = False
    trainable: bool = False


def _where(path: str | os.PathLike[str]) -> str:
    return f"checkpoint {os.fsdecode(path)!r}"


def _storable_dtype(dtype: np.dtype, scalar: bool = False) -> bool:
    if dtype.str in _DTYPES_BY_STR:
        return True
    # An empty numpy str or bytes scalar has width 0; no array has.
    return ((_FLEXIBLE_DTYPE.fullmatch(dtype.str) is not None
             or scalar and dtype.str in _EMPTY_FLEXIBLE)
            and dtype.names is None and dtype.metadata is None
            and dtype.itemsize <= _MAX_FLEXIBLE_ITEMSIZE)


def _little(dtype: np.dtype) -> np.dtype:
    return dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype


def _storage(dtype: np.dtype, shape: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    """The safetensors dtype and shape that hold a numpy tensor of this dtype and shape."""
    little = _little(dtype)
    code = _CODE_OF_NUMPY.get(little)
    if code is not None:
        return code, shape
    if little.kind == "c":
        return "F64", shape + (2,)
    if little.kind == "U":
        return "U32", shape + (little.itemsize // 4,)
    return "U8", shape + (little.itemsize,)


# -- saving -------------------------------------------------------------------


class _PlannedTensor(NamedTuple):
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    code: str
    stored_shape: tuple[int, ...]
    nbytes: int
    value: np.ndarray


def _encode_float(value: float) -> str:
    return struct.pack(">d", value).hex()


def _plan_value(name: str, value: Any) -> dict[str, Any] | _PlannedTensor | str:
    """The record (or tensor) that stores ``value``, or why it cannot be stored."""
    cls = type(value)
    if cls is np.ndarray or isinstance(value, np.generic):
        if cls is not np.ndarray and cls is not value.dtype.type:
            return f"it holds a {cls.__module__}.{cls.__qualname__} (a numpy scalar subclass)"
        if not _storable_dtype(value.dtype, scalar=cls is not np.ndarray):
            what = "tensor" if cls is np.ndarray else "numpy scalar"
            return f"it holds a {what} of dtype {value.dtype}, which a checkpoint cannot store"
        if cls is np.ndarray:
            shape = tuple(value.shape)
            code, stored_shape = _storage(value.dtype, shape)
            return _PlannedTensor(name, value.dtype, shape, code, stored_shape,
                                  int(value.size) * value.dtype.itemsize, value)
        # tobytes() of an empty numpy str gives one NUL character: keep the itemsize.
        data = (b"\x01" if value else b"\x00") if value.dtype.kind == "b" else \
            value.tobytes()[:value.dtype.itemsize]
        return {"name": name, "type": "scalar", "dtype": value.dtype.str, "value": data.hex()}
    if isinstance(value, np.ndarray):
        return (f"it holds a {cls.__module__}.{cls.__qualname__}, an ndarray subclass "
                f"(store np.asarray(value) to save it as a plain tensor)")
    kind = _PYTHON_TYPES.get(cls)
    if kind is None:
        return f"it holds a {cls.__module__}.{cls.__qualname__}"
    record: dict[str, Any] = {"name": name, "type": kind}
    if kind in ("str", "bool"):
        record["value"] = value
    elif kind == "bytes":
        record["value"] = base64.b64encode(value).decode("ascii")
    elif kind == "int":
        record["value"] = format(value, "#x")
    elif kind == "float":
        record["value"] = _encode_float(value)
    elif kind == "complex":
        record["value"] = [_encode_float(value.real), _encode_float(value.imag)]
    return record


def _tensor_keys(names: list[str]) -> dict[str, str]:
    """Each tensor's safetensors name: its blob name, unless JSON-in-UTF-8 cannot hold it
    (a lone surrogate) or safetensors reserves it; then an escaped, unique stand-in."""
    def usable(name: str) -> bool:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return name != _METADATA

    taken = {name for name in names if usable(name)}
    keys: dict[str, str] = {}
    for name in names:
        if usable(name):
            keys[name] = name
            continue
        base = name.encode("utf-8", "backslashreplace").decode("utf-8")
        key, k = base, 0
        while key in taken or key == _METADATA:
            k += 1
            key = f"{base}#{k}"
        taken.add(key)
        keys[name] = key
    return keys


class _Plan(NamedTuple):
    records: list[dict[str, Any]]
    tensors: dict[str, _PlannedTensor]      # by safetensors key
    skipped: dict[str, str]


def _plan(ws: Any, skip_unsupported: bool) -> _Plan:
    planned: list[dict[str, Any] | _PlannedTensor] = []
    refused: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for name in ws.local_blobs():
        blob = ws.get_blob(name)
        if blob is None or blob.is_empty():
            result: dict[str, Any] | _PlannedTensor | str = "it is empty"
        else:
            value = blob.get()
            if type(value) is WorkspaceStack:
                skipped[name] = _STACK_REASON
                continue
            result = _plan_value(name, value)
        if isinstance(result, str):
            refused[name] = result
        else:
            planned.append(result)
    if refused and not skip_unsupported:
        raise CheckpointError(
            f"Cannot save the workspace: {len(refused)} blob(s) cannot be stored in a "
            f"checkpoint ({'; '.join(f'blob {n!r}: {r}' for n, r in refused.items())}). "
            f"A checkpoint stores {_SUPPORTED}; pass skip_unsupported=True to leave them "
            f"out. Nothing was written.")
    skipped.update(refused)
    variables = {str(n) for n in global_variables(ws)}
    trainable = {str(n) for n in trainable_variables(ws)}
    keys = _tensor_keys([p.name for p in planned if isinstance(p, _PlannedTensor)])
    records: list[dict[str, Any]] = []
    tensors: dict[str, _PlannedTensor] = {}
    for item in planned:
        if isinstance(item, _PlannedTensor):
            key = keys[item.name]
            record: dict[str, Any] = {"name": item.name, "type": "tensor", "key": key,
                                      "dtype": item.dtype.str, "shape": list(item.shape)}
            if item.name in variables:
                record["variable"] = {"trainable": item.name in trainable}
            tensors[key] = item
            records.append(record)
        else:
            records.append(item)
    return _Plan(records, tensors, skipped)


def _tensor_table(tensors: dict[str, _PlannedTensor]) -> dict[str, dict[str, Any]]:
    """The safetensors header's tensor entries, laid out as safetensors lays them out."""
    table: dict[str, dict[str, Any]] = {}
    offset = 0
    for key in sorted(tensors, key=lambda k: (-_LAYOUT_ORDER[tensors[k].code], k)):
        tensor = tensors[key]
        table[key] = {"dtype": tensor.code, "shape": list(tensor.stored_shape),
                      "data_offsets": [offset, offset + tensor.nbytes]}
        offset += tensor.nbytes
    return table


def _canonical(table: dict[str, Any]) -> bytes:
    return json.dumps(table, sort_keys=True, ensure_ascii=True, allow_nan=False,
                      separators=(",", ":")).encode("ascii")


def _digest_prefix(table: dict[str, Any], blobs_json: str) -> bytes:
    return (_DIGEST_DOMAIN + _canonical(table) + b"\n" + blobs_json.encode("utf-8")
            + b"\n")


def _header_bytes(table: dict[str, Any], blobs_json: str, digest: str) -> bytes:
    metadata = {_FORMAT_KEY: str(FORMAT_VERSION), _BLOBS_KEY: blobs_json, _DIGEST_KEY: digest}
    header = json.dumps({_METADATA: metadata, **table}, ensure_ascii=False, allow_nan=False,
                        separators=(",", ":")).encode("utf-8")
    # safetensors pads its header with spaces to a multiple of 8 bytes, for alignment.
    return header + b" " * (-len(header) % 8)


def _tensor_chunks(tensor: _PlannedTensor) -> Iterator[memoryview]:
    """The tensor's elements in C order, little-endian, as flat byte views."""
    little = np.asarray(tensor.value, dtype=_little(tensor.dtype), order="C")
    if little.shape != tensor.shape or little.nbytes != tensor.nbytes:
        raise CheckpointError(f"blob {tensor.name!r} changed while it was being saved "
                              f"(now {tensor.value.dtype}{list(tensor.value.shape)})")
    flat = little.reshape(-1).view(np.uint8)
    if little.dtype.kind == "b" and flat.size and int(flat.max()) > 1:
        flat = (flat != 0).view(np.uint8)     # a bool is stored as 0 or 1, whatever its byte
    data = flat.data
    for start in range(0, len(data), _CHUNK):
        yield data[start:start + _CHUNK]


def save_workspace(ws: Any, path: str | os.PathLike[str], *,
                   skip_unsupported: bool = False) -> dict[str, str]:
    """Write the local blobs of ``ws`` to the safetensors checkpoint ``path``, atomically.

    Returns ``{name: reason}`` for every blob left out (empty when none was).
    ``WorkspaceStack`` blobs (such as the ``microbatch_scope`` that
    :func:`~scopeops.accumulate_microbatches` leaves) are always left out: scope
    stacks are rebuilt on the next run. Any other blob that cannot be stored
    raises :class:`~scopeops.CheckpointError` naming each of them, before any file
    is created or touched, unless ``skip_unsupported`` is true: then they are
    left out too. The file is written to a temporary file in the same directory,
    flushed to disk, then renamed onto ``path``; if anything fails, ``path`` is
    left as it was and the temporary file is removed.
    """
    if not isinstance(ws, _CoreWorkspace):
        raise TypeError(f"save_workspace takes a Workspace, not {type(ws).__name__}")
    target = os.fsdecode(os.fspath(path))
    plan = _plan(ws, skip_unsupported)
    blobs_json = json.dumps(plan.records, ensure_ascii=True, allow_nan=False,
                            separators=(",", ":"))
    table = _tensor_table(plan.tensors)
    header = _header_bytes(table, blobs_json, "0" * 64)
    if len(header) > MAX_HEADER_SIZE:
        largest = sorted((r for r in plan.records if r["type"] != "tensor"),
                         key=lambda r: -len(json.dumps(r)))[:3]
        raise CheckpointError(
            f"Cannot save the workspace: its non-tensor blobs need a {len(header)}-byte "
            f"header, more than the {MAX_HEADER_SIZE} bytes safetensors allows (largest: "
            f"{', '.join(repr(r['name']) for r in largest)}). Store large bytes or str "
            f"values as numpy arrays (np.frombuffer(data, np.uint8)). Nothing was written.")
    hasher = hashlib.sha256(_digest_prefix(table, blobs_json))
    with atomic_write(target, "wb") as out:
        out.write(_LENGTH.pack(len(header)))
        out.write(header)
        for key in table:
            for chunk in _tensor_chunks(plan.tensors[key]):
                out.write(chunk)
                hasher.update(chunk)
        # The digest has a fixed width, so the final header fits where the draft was.
        out.seek(_LENGTH.size)
        out.write(_header_bytes(table, blobs_json, hasher.hexdigest()))
    return plan.skipped


# -- reading the header -----------------------------------------------------------


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) != len(pairs):
        keys = [key for key, _ in pairs]
        duplicate = next(key for key in keys if keys.count(key) > 1)
        raise CheckpointError(f"repeats the key {duplicate!r:.80}")
    return record


def _reject_constant(name: str) -> Any:
    raise CheckpointError(f"holds the non-JSON number {name}")


def _parse_json(text: str) -> Any:
    """Strict JSON: no duplicate keys, no NaN; otherwise a CheckpointError whose message is
    a predicate ("is not valid JSON ..."), for the caller to give a subject."""
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicate_keys,
                          parse_constant=_reject_constant)
    except CheckpointError:
        raise
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"is not valid JSON ({type(exc).__name__}: "
                              f"{str(exc):.120})") from None


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _size(value: Any) -> bool:
    # serde reads sizes and offsets as u64; Python's bool is an int, and is not one.
    return type(value) is int and 0 <= value < 2**64


class _Stored(NamedTuple):
    """One tensor of the safetensors header."""

    code: str
    shape: tuple[int, ...]
    begin: int
    end: int


class _Header(NamedTuple):
    length: int                          # of the JSON header, in bytes
    raw: bytes                           # the JSON header
    data_len: int
    tensors: dict[str, _Stored]
    scopeops: bool
    blobs_json: str
    digest: str
    digest_prefix: bytes


def _read_exact(stream: BinaryIO, n: int, where: str) -> bytes:
    data = stream.read(n)
    if data is None or len(data) != n:
        raise CheckpointError(f"{where} is truncated (it shrank while being read)")
    return data


def _check_tensor_info(key: str, info: Any) -> _Stored:
    where = f"tensor {key!r:.80}"
    if not _utf8(key):
        raise CheckpointError(f"{where}: the name is not valid UTF-8 (a lone surrogate)")
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        found = sorted(info) if isinstance(info, dict) else type(info).__name__
        raise CheckpointError(f"{where} must have exactly the keys dtype, shape and "
                              f"data_offsets, got {found!r:.200}")
    code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(code, str) or code not in _SAFETENSORS_BITS:
        raise CheckpointError(f"{where} has the unknown dtype {code!r:.80}")
    if not isinstance(shape, list) or not all(_size(d) for d in shape):
        raise CheckpointError(f"{where}: the shape must be a list of non-negative "
                              f"integers, got {shape!r:.200}")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_size, offsets))
            or offsets[0] > offsets[1]):
        raise CheckpointError(f"{where}: data_offsets must be [begin, end] with "
                              f"0 <= begin <= end, got {offsets!r:.200}")
    bits = math.prod(shape) * _SAFETENSORS_BITS[code]
    if bits % 8 or bits // 8 != offsets[1] - offsets[0]:
        raise CheckpointError(f"{where}: a {code} tensor of shape {shape!r:.200} takes "
                              f"{bits / 8:g} bytes, but its offsets hold "
                              f"{offsets[1] - offsets[0]}")
    return _Stored(code, tuple(shape), offsets[0], offsets[1])


def _check_layout(tensors: dict[str, _Stored], data_len: int, where: str) -> None:
    end = max((t.end for t in tensors.values()), default=0)
    if end > data_len:
        raise CheckpointError(f"{where} is truncated: its tensors need {end} bytes of data, "
                              f"but {data_len} follow the header")
    position = 0
    for key, tensor in sorted(tensors.items(), key=lambda item: (item[1].begin,
                                                                   item[1].end, item[0])):
        if tensor.begin != position:
            problem = "overlaps the one before it" if tensor.begin < position else \
                "leaves a gap before it"
            raise CheckpointError(f"{where} is not a valid safetensors file: tensor "
                                  f"{key!r:.80} (bytes {tensor.begin}..{tensor.end}) "
                                  f"{problem}")
        position = tensor.end
    if position != data_len:
        raise CheckpointError(f"{where} is not a valid safetensors file: "
                              f"{data_len - position} bytes follow its last tensor")


def _scopeops_metadata(metadata: dict[str, str], where: str) -> tuple[str, str] | None:
    """The blob list and digest of a scopeops checkpoint; None for a foreign file."""
    ours = {key for key in metadata if key.startswith("scopeops.")}
    if not ours:
        return None
    version = metadata.get(_FORMAT_KEY)
    if version is not None:
        if re.fullmatch(r"[1-9][0-9]{0,8}", version) and int(version) > FORMAT_VERSION:
            raise CheckpointError(
                f"{where} was written in checkpoint format version {version}, newer than "
                f"this scopeops reads (format version {FORMAT_VERSION}): upgrade scopeops "
                f"to load it")
        if version != str(FORMAT_VERSION):
            raise CheckpointError(f"{where} declares an unknown checkpoint format version "
                                  f"{version!r:.80}")
    if ours != _SCOPEOPS_KEYS:
        missing, unknown = sorted(_SCOPEOPS_KEYS - ours), sorted(ours - _SCOPEOPS_KEYS)
        raise CheckpointError(
            f"{where} has incomplete scopeops metadata (missing {missing}, unknown "
            f"{unknown!r:.200}), so its integrity cannot be checked")
    if not _DIGEST_HEX.fullmatch(metadata[_DIGEST_KEY]):
        raise CheckpointError(f"{where} has invalid scopeops metadata: {_DIGEST_KEY} must "
                              f"be 64 lowercase hex digits")
    return metadata[_BLOBS_KEY], metadata[_DIGEST_KEY]


def _read_header(stream: BinaryIO, where: str) -> _Header:
    """Check the length, the JSON and every tensor entry of a safetensors header; the
    stream is left at the start of the data."""
    size = os.fstat(stream.fileno()).st_size
    if size == 0:
        raise CheckpointError(f"{where} is empty")
    if size < _LENGTH.size:
        raise CheckpointError(f"{where} is truncated or not a safetensors file: {size} "
                              f"bytes, fewer than the 8 of a header length")
    (length,) = _LENGTH.unpack(_read_exact(stream, _LENGTH.size, where))
    if length > MAX_HEADER_SIZE:
        raise CheckpointError(f"{where} is not a safetensors file: its first 8 bytes "
                              f"declare a {length}-byte header, more than the "
                              f"{MAX_HEADER_SIZE} bytes safetensors allows")
    if length > size - _LENGTH.size:
        raise CheckpointError(f"{where} is truncated or not a safetensors file: its header "
                              f"is {length} bytes, but only {size - _LENGTH.size} follow")
    raw = _read_exact(stream, length, where)
    try:
        document = _parse_json(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{where} is not a valid safetensors file: its header is "
                              f"not UTF-8") from None
    except CheckpointError as problem:
        raise CheckpointError(f"{where} is not a valid safetensors file: its header "
                              f"{problem}") from None
    if not isinstance(document, dict):
        raise CheckpointError(f"{where} is not a valid safetensors file: its header is not "
                              f"a JSON object")
    metadata = document.pop(_METADATA, None)
    if metadata is None:
        metadata = {}     # safetensors reads a null __metadata__ as none at all
    if not isinstance(metadata, dict) or not all(
            isinstance(v, str) and _utf8(k) and _utf8(v) for k, v in metadata.items()):
        raise CheckpointError(f"{where} is not a valid safetensors file: its __metadata__ "
                              f"must map names to strings")
    try:
        tensors = {key: _check_tensor_info(key, info) for key, info in document.items()}
    except CheckpointError as problem:
        raise CheckpointError(f"{where} is not a valid safetensors file: {problem}") from None
    data_len = size - _LENGTH.size - length
    _check_layout(tensors, data_len, where)
    ours = _scopeops_metadata(metadata, where)
    if ours is None:
        return _Header(length, raw, data_len, tensors, False, "", "", b"")
    blobs_json, digest = ours
    return _Header(length, raw, data_len, tensors, True, blobs_json, digest,
                   _digest_prefix(document, blobs_json))


def _check_digest(header: _Header, hasher: Any, where: str) -> None:
    if hasher.hexdigest() != header.digest:
        raise CheckpointError(f"{where} is corrupted: its SHA-256 digest does not match "
                              f"its contents")


# -- what the header describes -------------------------------------------------------


class _Blob(NamedTuple):
    entry: CheckpointEntry
    key: str | None             # the tensor holding it, for tensors
    value: Any                  # the decoded value, for every other type


def _parse_dtype(spec: Any, scalar: bool = False) -> np.dtype:
    if not isinstance(spec, str):
        raise CheckpointError(f"the dtype must be a string, got {spec!r:.80}")
    if spec in _DTYPES_BY_STR:
        return _DTYPES_BY_STR[spec]
    if scalar and spec in _EMPTY_FLEXIBLE:
        return _EMPTY_FLEXIBLE[spec]
    match = _FLEXIBLE_DTYPE.fullmatch(spec)
    if match is not None:
        order, letter, width = match.groups()
        itemsize = int(width) * (4 if letter == "U" else 1)
        if (letter == "S") == (order == "|") and itemsize <= _MAX_FLEXIBLE_ITEMSIZE:
            return np.dtype(f"{order}{letter}{width}")
    raise CheckpointError(f"unknown or unsupported dtype {spec!r:.80}")


def _check_shape(dims: Any, dtype: np.dtype) -> tuple[int, ...]:
    if (not isinstance(dims, list) or len(dims) > _MAX_NDIM
            or not all(type(d) is int and d >= 0 for d in dims)):
        raise CheckpointError(f"the shape must be a list of at most {_MAX_NDIM} "
                              f"non-negative integers, got {dims!r:.200}")
    # numpy's own limit: the size ignoring zero dimensions must fit in memory.
    if math.prod(max(d, 1) for d in dims) * dtype.itemsize > sys.maxsize:
        raise CheckpointError(f"the shape {dims!r:.200} is too large for any array")
    return tuple(dims)


def _decode_float(text: Any) -> float:
    if not isinstance(text, str) or not _FLOAT_BITS.fullmatch(text):
        raise CheckpointError(f"a float is stored as 16 hex digits, got {text!r:.80}")
    value: float = struct.unpack(">d", bytes.fromhex(text))[0]
    return value


def _decode_value(kind: str, record: dict[str, Any]) -> tuple[Any, int, np.dtype | None]:
    """A non-tensor blob's value, its size in bytes and (for numpy scalars) its dtype."""
    value = record.get("value")
    if kind == "scalar":
        dtype = _parse_dtype(record["dtype"], scalar=True)
        if not isinstance(value, str) or not _HEX_BYTES.fullmatch(value) \
                or len(value) != 2 * dtype.itemsize:
            raise CheckpointError(f"a {dtype} scalar is stored as {2 * dtype.itemsize} hex "
                                  f"digits, got {value!r:.80}")
        data = bytes.fromhex(value)
        if dtype.kind == "b" and data not in (b"\x00", b"\x01"):
            raise CheckpointError(f"a bool scalar holds {data!r}, not 0 or 1")
        if dtype.kind == "U" and data and \
                int(np.frombuffer(data, dtype.str[0] + "u4").max()) > 0x10FFFF:
            raise CheckpointError("a str scalar holds a value that is not a code point")
        scalar = np.frombuffer(data, dtype)[0] if dtype.itemsize else dtype.type()
        return scalar, dtype.itemsize, dtype
    if kind == "str":
        if not isinstance(value, str):
            raise CheckpointError(f"a str value must be a JSON string, got {value!r:.80}")
        return value, len(value.encode("utf-8", "surrogatepass")), None
    if kind == "bytes":
        if not isinstance(value, str):
            raise CheckpointError(f"a bytes value is stored as base64, got {value!r:.80}")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise CheckpointError(f"a bytes value is not valid base64: {value!r:.80}") from None
        return data, len(data), None
    if kind == "int":
        if not isinstance(value, str) or not _INT_HEX.fullmatch(value):
            raise CheckpointError(f"an int is stored as hex ('0x1f', '-0x2'), "
                                  f"got {value!r:.80}")
        number = int(value, 16)
        return number, max(1, (number.bit_length() + 8) // 8), None
    if kind == "float":
        return _decode_float(value), 8, None
    if kind == "complex":
        if not isinstance(value, list) or len(value) != 2:
            raise CheckpointError(f"a complex is stored as two floats, got {value!r:.80}")
        return complex(_decode_float(value[0]), _decode_float(value[1])), 16, None
    if kind == "bool":
        if type(value) is not bool:
            raise CheckpointError(f"a bool value must be true or false, got {value!r:.80}")
        return value, 1, None
    return None, 0, None


def _describe_tensor(record: dict[str, Any], stored: dict[str, _Stored],
                     used: set[str]) -> tuple[str, CheckpointEntry]:
    key = record["key"]
    if not isinstance(key, str) or key not in stored:
        raise CheckpointError(f"its tensor {key!r:.80} is not in the file")
    if key in used:
        raise CheckpointError(f"its tensor {key!r:.80} belongs to another blob too")
    dtype = _parse_dtype(record["dtype"])
    shape = _check_shape(record["shape"], dtype)
    expected = _storage(dtype, shape)
    tensor = stored[key]
    if (tensor.code, tensor.shape) != expected:
        raise CheckpointError(
            f"a {dtype} tensor of shape {list(shape)} is stored as {expected[0]} "
            f"{list(expected[1])}, but tensor {key!r:.80} is {tensor.code} "
            f"{list(tensor.shape)}")
    variable = record.get("variable")
    trainable = False
    if variable is not None:
        if not isinstance(variable, dict) or set(variable) != {"trainable"} \
                or type(variable["trainable"]) is not bool:
            raise CheckpointError(f"'variable' must be {{\"trainable\": true or false}}, "
                                  f"got {variable!r:.80}")
        trainable = variable["trainable"]
    return key, CheckpointEntry(record["name"], "tensor", dtype, shape,
                                math.prod(shape) * dtype.itemsize, variable is not None,
                                trainable)


def _describe_scopeops(header: _Header) -> list[_Blob]:
    try:
        records = _parse_json(header.blobs_json)
    except CheckpointError as problem:
        raise CheckpointError(f"the blob list {problem}") from None
    if not isinstance(records, list):
        raise CheckpointError("the blob list must be a JSON list")
    blobs: list[_Blob] = []
    names: set[str] = set()
    used: set[str] = set()
    for index, record in enumerate(records):
        where = f"blob record {index}"
        if not isinstance(record, dict):
            raise CheckpointError(f"{where} is not an object")
        kind = record.get("type")
        if not isinstance(kind, str) or kind not in _TYPES:
            raise CheckpointError(f"{where} has the unknown type {kind!r:.80}")
        name = record.get("name")
        if not isinstance(name, str) or not name:
            raise CheckpointError(f"{where}: a blob name must be a non-empty string")
        where = f"{where} (blob {name!r:.80})"
        keys = _KEYS.get(kind, {"name", "type", "value"})
        allowed = keys | {"variable"} if kind == "tensor" else keys
        if not keys <= set(record) <= allowed:
            raise CheckpointError(f"{where}: a {kind} record has the keys {sorted(keys)}, "
                                  f"got {sorted(record)!r:.200}")
        if name in names:
            raise CheckpointError(f"{where}: the blob name appears twice")
        names.add(name)
        try:
            if kind == "tensor":
                key, entry = _describe_tensor(record, header.tensors, used)
                used.add(key)
                blobs.append(_Blob(entry, key, None))
            else:
                value, nbytes, dtype = _decode_value(kind, record)
                entry = CheckpointEntry(name, kind, dtype, () if dtype is not None else None,
                                        nbytes)
                blobs.append(_Blob(entry, None, value))
        except CheckpointError as problem:
            raise CheckpointError(f"{where}: {problem}") from None
    orphans = sorted(set(header.tensors) - used)
    if orphans:
        raise CheckpointError(f"tensor {orphans[0]!r:.80} of the file belongs to no blob")
    return blobs


def _describe_foreign(header: _Header) -> list[_Blob]:
    blobs: list[_Blob] = []
    for key in sorted(header.tensors):
        tensor = header.tensors[key]
        where = f"tensor {key!r:.80}"
        dtype = _NUMPY_OF_CODE.get(tensor.code)
        if dtype is None:
            raise CheckpointError(
                f"{where} has dtype {tensor.code}, which numpy (and so scopeops) cannot "
                f"hold; scopeops loads {', '.join(_NUMPY_OF_CODE)}")
        if not key:
            raise CheckpointError(f"{where}: an empty name cannot be a blob name")
        try:
            shape = _check_shape(list(tensor.shape), dtype)
        except CheckpointError as problem:
            raise CheckpointError(f"{where}: {problem}") from None
        blobs.append(_Blob(CheckpointEntry(key, "tensor", dtype, shape,
                                           tensor.end - tensor.begin), key, None))
    return blobs


def _describe(header: _Header, where: str) -> list[_Blob]:
    try:
        return _describe_scopeops(header) if header.scopeops else _describe_foreign(header)
    except CheckpointError as problem:
        what = "scopeops metadata" if header.scopeops else "tensors"
        raise CheckpointError(f"{where} has invalid {what}: {problem}") from None


# -- loading ------------------------------------------------------------------------


def _deserialize(content: bytes, header: _Header, where: str) -> dict[str, bytearray]:
    """Every tensor's bytes, as safetensors reads them; checked against our own reading."""
    deserialize: Any = safetensors.deserialize       # untyped in safetensors' stubs
    try:
        tensors = {key: info for key, info in deserialize(content)}
    except Exception as exc:   # the library's SafetensorError, or anything it lets escape
        raise CheckpointError(f"{where}: safetensors refused it ({exc})") from None
    if set(tensors) != set(header.tensors):
        raise CheckpointError(f"{where}: safetensors read other tensors than its header lists")
    for key, info in tensors.items():
        stored = header.tensors[key]
        if (info["dtype"], tuple(info["shape"]), len(info["data"])) != \
                (stored.code, stored.shape, stored.end - stored.begin):
            raise CheckpointError(f"{where}: safetensors read tensor {key!r:.80} differently "
                                  f"from its header")
    return {key: info["data"] for key, info in tensors.items()}


def _tensor_value(entry: CheckpointEntry, raw: bytearray, where: str) -> np.ndarray:
    assert entry.dtype is not None and entry.shape is not None
    dtype = entry.dtype
    if dtype.kind == "b" and raw and int(np.frombuffer(raw, np.uint8).max()) > 1:
        raise CheckpointError(f"{where}: bool tensor {entry.name!r:.80} holds bytes other "
                              f"than 0 and 1, which numpy never makes")
    if dtype.kind == "U" and raw and int(np.frombuffer(raw, "<u4").max()) > 0x10FFFF:
        raise CheckpointError(f"{where}: str tensor {entry.name!r:.80} holds a value that "
                              f"is not a Unicode code point")
    little = np.frombuffer(raw, dtype=_little(dtype)).reshape(entry.shape)
    return little if little.dtype == dtype else little.astype(dtype)


def _read_values(path: str | os.PathLike[str]) -> tuple[list[_Blob], dict[str, Any]]:
    """Every blob of the checkpoint, checked and decoded; nothing is built on a bad file."""
    where = _where(path)
    with open(path, "rb") as stream:
        header = _read_header(stream, where)
        stream.seek(0)
        # One read: safetensors parses exactly the bytes that were checked.
        content = stream.read()
    start = _LENGTH.size + header.length
    if len(content) != start + header.data_len or \
            content[:start] != _LENGTH.pack(header.length) + header.raw:
        raise CheckpointError(f"{where} changed while it was being read")
    if header.scopeops:
        hasher = hashlib.sha256(header.digest_prefix)
        hasher.update(memoryview(content)[start:])
        _check_digest(header, hasher, where)
    blobs = _describe(header, where)
    raws = _deserialize(content, header, where)
    del content
    values = {blob.entry.name: blob.value if blob.key is None
              else _tensor_value(blob.entry, raws[blob.key], where) for blob in blobs}
    return blobs, values


def load_workspace(path: str | os.PathLike[str]) -> Workspace:
    """A new :class:`~scopeops.Workspace` holding the blobs saved at ``path``.

    ``path`` is a checkpoint from :func:`save_workspace` or any safetensors file
    (each tensor becomes a blob). Raises :class:`~scopeops.CheckpointError` naming
    the problem for a file that is not a safetensors file, is truncated or
    corrupted, holds invalid metadata or values, or was written in a newer format;
    then no workspace is created. Loaded tensors can be taken over by
    :func:`~scopeops.get_variable`, and the blobs saved as variables are
    variables of the new workspace again.
    """
    blobs, values = _read_values(path)
    ws = Workspace()
    for name, value in values.items():
        ws.feed_blob(name, value)
    register_loaded_blobs(
        ws, [b.entry.name for b in blobs if b.entry.type == "tensor"],
        {b.entry.name: b.entry.trainable for b in blobs if b.entry.variable})
    return ws


def read_checkpoint_header(path: str | os.PathLike[str], verify: bool = True
                           ) -> list[CheckpointEntry]:
    """What the checkpoint at ``path`` holds, without building its values.

    With ``verify`` (the default) the tensor data of a scopeops checkpoint is
    streamed through its digest in fixed-size chunks, so a corrupted file raises
    :class:`~scopeops.CheckpointError` without the data ever being held in memory;
    ``verify=False`` reads only the header. A foreign safetensors file has no
    digest: its entries are its tensors, in name order.
    """
    where = _where(path)
    with open(path, "rb") as stream:
        header = _read_header(stream, where)
        if verify and header.scopeops:
            hasher = hashlib.sha256(header.digest_prefix)
            remaining = header.data_len
            while remaining:
                chunk = stream.read(min(remaining, _CHUNK))
                if not chunk:
                    raise CheckpointError(f"{where} is truncated (it shrank while being read)")
                hasher.update(chunk)
                remaining -= len(chunk)
            _check_digest(header, hasher, where)
    return [blob.entry for blob in _describe(header, where)]
