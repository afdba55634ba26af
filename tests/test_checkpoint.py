"""Checkpoints are safetensors files: exact round trips, interop with safetensors both ways,
refusal before writing, atomic saves (SIGKILL included), and loading that never runs code
and rejects truncated, corrupted, foreign, hostile or newer files."""

import base64
import hashlib
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors
import safetensors.numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import scopeops as so
import scopeops.ops.math  # noqa: F401 - registers Add
from scopeops import atomicfile, checkpoint
from scopeops.checkpoint import FORMAT_VERSION, MAX_HEADER_SIZE, read_checkpoint_header

PACKAGE_PARENT = os.path.dirname(os.path.dirname(so.__file__))


def round_trip(tmp_path, **blobs):
    ws = so.Workspace()
    for name, value in blobs.items():
        ws.feed_blob(name, value)
    path = tmp_path / "model.safetensors"
    so.save_workspace(ws, path)
    return so.load_workspace(path)


def assert_identical(saved, loaded):
    assert type(loaded) is type(saved)
    if isinstance(saved, (np.ndarray, np.generic)):
        assert loaded.dtype == saved.dtype and loaded.dtype.str == saved.dtype.str
        assert loaded.shape == saved.shape
        # Bit-exact, NaN payloads and signed zeros included.
        assert np.ascontiguousarray(loaded).tobytes() == np.ascontiguousarray(saved).tobytes()
    elif isinstance(saved, float):
        assert struct.pack("<d", loaded) == struct.pack("<d", saved)
    elif isinstance(saved, complex):
        assert struct.pack("<dd", loaded.real, loaded.imag) == \
            struct.pack("<dd", saved.real, saved.imag)
    else:
        assert loaded == saved


def files_in(directory):
    return sorted(p.name for p in Path(directory).iterdir())


def header_of(data):
    """The JSON header of a safetensors file's bytes, and where its data starts."""
    (length,) = struct.unpack_from("<Q", data)
    return json.loads(data[8:8 + length]), 8 + length


def documented_digest(table, blobs_json, data):
    """The digest as docs/checkpoints.md defines it."""
    canonical = json.dumps(table, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(b"scopeops checkpoint 1\n" + canonical.encode() + b"\n"
                          + blobs_json.encode() + b"\n" + data).hexdigest()


def forge(table, data=b"", metadata=None, header_bytes=None):
    """A safetensors file's bytes with this tensor table, data and metadata."""
    if header_bytes is None:
        document = dict(table)
        if metadata is not None:
            document = {"__metadata__": metadata, **document}
        header_bytes = json.dumps(document).encode()
    return struct.pack("<Q", len(header_bytes)) + header_bytes + data


def forge_checkpoint(records, table=None, data=b"", extra_metadata=None, version="1"):
    """A scopeops checkpoint's bytes with these blob records, and a valid digest."""
    table = table or {}
    blobs_json = records if isinstance(records, str) else json.dumps(records)
    metadata = {"scopeops.format": version, "scopeops.blobs": blobs_json,
                "scopeops.sha256": documented_digest(table, blobs_json, data)}
    metadata.update(extra_metadata or {})
    return forge(table, data, metadata)


def tensor_entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def tensor_record(name="x", key="x", dtype="<f4", shape=(2,), **extra):
    shape = list(shape) if isinstance(shape, tuple) else shape
    return {"name": name, "type": "tensor", "key": key, "dtype": dtype, "shape": shape, **extra}


def small_checkpoint(tmp_path):
    ws = so.Workspace()
    ws["w"] = np.arange(6, dtype=np.float32).reshape(2, 3)
    ws["flag"] = np.bool_(True)
    ws["name"] = "layer"
    ws["raw"] = b"\x00\x01"
    ws["step"] = 7
    path = tmp_path / "small.safetensors"
    so.save_workspace(ws, path)
    return path, path.read_bytes()


def refuses(path, *phrases):
    with pytest.raises(so.CheckpointError) as info:
        so.load_workspace(path)
    for phrase in phrases:
        assert phrase in str(info.value)
    return str(info.value)


# -- round trips ----------------------------------------------------------------------


SUPPORTED_VALUES = {
    "float32 matrix": np.arange(12, dtype=np.float32).reshape(3, 4),
    "float64 with nan": np.array([np.nan, -0.0, np.inf, 1e-300]),
    "float16": np.array([1.5, -2.25], dtype=np.float16),
    "int8": np.array([-128, 127], dtype=np.int8),
    "int16": np.array([-3], dtype=np.int16),
    "int32 3d": np.arange(24, dtype=np.int32).reshape(2, 3, 4),
    "int64": np.array([-(2**63), 2**63 - 1], dtype=np.int64),
    "uint8": np.array([0, 255], dtype=np.uint8),
    "uint16": np.array([65535], dtype=np.uint16),
    "uint32": np.array([2**32 - 1], dtype=np.uint32),
    "uint64": np.array([2**64 - 1], dtype=np.uint64),
    "complex64": np.array([1 + 2j, -3j], dtype=np.complex64),
    "complex128": np.array([[1e300 - 1j]], dtype=np.complex128),
    "bool": np.array([[True, False], [False, True]]),
    "0-d": np.array(3.5, dtype=np.float32),
    "0-d complex128": np.array(1 - 2j),
    "empty": np.zeros((0, 5), dtype=np.int16),
    "empty 0-size middle": np.zeros((2, 0, 3), dtype=np.float64),
    "empty unicode": np.zeros((0, 2), dtype="<U3"),
    "unicode": np.array([["a", "bcd"], ["é", "\U0001f600"]]),
    "bytes array": np.array([b"ab", b"\x00\xff"]),
    "big-endian": np.arange(5, dtype=">i4"),
    "big-endian float16": np.array([1.5, -0.0], dtype=">f2"),
    "big-endian complex128": np.array([1 + 1j], dtype=">c16"),
    "big-endian unicode": np.array(["xy", "z"], dtype=">U2"),
    "numpy float32 scalar": np.float32(0.1),
    "numpy float16 scalar": np.float16(-2.5),
    "numpy int64 scalar": np.int64(-5),
    "numpy uint8 scalar": np.uint8(200),
    "numpy bool scalar": np.bool_(False),
    "numpy complex scalar": np.complex128(1 - 1j),
    "numpy str scalar": np.str_("héllo"),
    "numpy bytes scalar": np.bytes_(b"raw"),
    "empty numpy str scalar": np.str_(""),
    "empty numpy bytes scalar": np.bytes_(b""),
    "str": "hello, wörld",
    "empty str": "",
    "str with lone surrogate": "a\ud800b",
    "bytes": b"\x00\x01\xff",
    "empty bytes": b"",
    "int": 42,
    "negative int": -1,
    "zero": 0,
    "huge int": -(3**500),
    "int beyond str conversion limit": 7**6000,
    "float": 0.1,
    "float nan": float("nan"),
    "float nan with payload": struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000123))[0],
    "complex": complex(1.5, -0.0),
    "true": True,
    "false": False,
    "none": None,
}


@pytest.mark.parametrize("value", list(SUPPORTED_VALUES.values()), ids=list(SUPPORTED_VALUES))
def test_every_supported_kind_round_trips_exactly(tmp_path, value):
    loaded = round_trip(tmp_path, blob=value)
    assert loaded.local_blobs() == ["blob"]
    assert_identical(value, loaded["blob"])


def test_all_kinds_round_trip_together_in_order(tmp_path):
    loaded = round_trip(tmp_path, **{f"b{i}": v for i, v in enumerate(SUPPORTED_VALUES.values())})
    assert loaded.local_blobs() == [f"b{i}" for i in range(len(SUPPORTED_VALUES))]
    for i, value in enumerate(SUPPORTED_VALUES.values()):
        assert_identical(value, loaded[f"b{i}"])


@pytest.mark.parametrize("view", [
    lambda a: a[:, ::2],
    lambda a: a.T,
    lambda a: np.asfortranarray(a),
    lambda a: a[::-1, 1:],
    lambda a: np.broadcast_to(a[:1], (4, 6)),
], ids=["strided", "transposed", "fortran", "reversed", "broadcast"])
def test_non_contiguous_tensors_save_their_values_in_c_order(tmp_path, view):
    original = view(np.arange(24, dtype=np.float64).reshape(4, 6))
    loaded = round_trip(tmp_path, t=original)["t"]
    assert loaded.shape == original.shape and loaded.dtype == original.dtype
    np.testing.assert_array_equal(loaded, original)
    assert loaded.flags.c_contiguous and loaded.flags.writeable


def test_loaded_tensors_are_writeable_and_independent(tmp_path):
    loaded = round_trip(tmp_path, a=np.zeros(3), b=np.zeros(3))
    loaded["a"][0] = 1.0
    assert loaded["b"][0] == 0.0


def test_a_bool_tensor_with_non_canonical_bytes_is_saved_as_true(tmp_path):
    odd = np.frombuffer(bytes([2, 0, 255]), dtype=np.bool_)
    loaded = round_trip(tmp_path, b=odd)["b"]
    assert loaded.view(np.uint8).tolist() == [1, 0, 1]


def test_blob_names_with_unusual_characters_round_trip(tmp_path):
    names = ["scope/w", "naïve", "tab\tand\nnewline", "\ud800 surrogate", 'quote"s',
             "nul\x00byte", "__metadata__"]
    loaded = round_trip(tmp_path, **{n: np.full(1, i) for i, n in enumerate(names)})
    assert loaded.local_blobs() == names
    assert [int(loaded[n][0]) for n in names] == list(range(len(names)))


def test_a_name_equal_to_the_escape_of_another_gets_its_own_tensor(tmp_path):
    # "w\ud800" cannot be a safetensors name; its stand-in must not take "w\\ud800"'s.
    loaded = round_trip(tmp_path, **{"w\ud800": np.zeros(1), "w\\ud800": np.ones(1),
                                     "w\\ud800#1": np.full(1, 2.0)})
    assert loaded["w\ud800"][0] == 0 and loaded["w\\ud800"][0] == 1
    assert loaded["w\\ud800#1"][0] == 2


def test_load_returns_a_public_workspace_that_can_run_nets(tmp_path):
    loaded = round_trip(tmp_path, x=np.ones(2), y=np.ones(2))
    assert type(loaded) is so.Workspace
    net = so.Net("sum")
    net.Add(["x", "y"], ["z"])
    loaded.run_net_once(net)
    np.testing.assert_array_equal(loaded["z"], [2.0, 2.0])


def test_only_local_blobs_are_saved_not_forwards_or_the_shared_chain(tmp_path):
    base = so.Workspace()
    base["inherited"] = np.ones(2)
    parent = so.Workspace(shared=base)
    parent["outer"] = np.zeros(2)
    child = so.Workspace.from_bindings(parent, {"inner": "outer"})
    child["mine"] = "local"
    so.save_workspace(child, tmp_path / "child.safetensors")
    so.save_workspace(parent, tmp_path / "parent.safetensors")
    assert so.load_workspace(tmp_path / "child.safetensors").local_blobs() == ["mine"]
    assert so.load_workspace(tmp_path / "parent.safetensors").local_blobs() == ["outer"]


def test_an_empty_workspace_round_trips(tmp_path):
    assert round_trip(tmp_path).local_blobs() == []


def test_saving_again_replaces_the_previous_checkpoint(tmp_path):
    path = tmp_path / "c.safetensors"
    first = so.Workspace()
    first["a"] = 1
    so.save_workspace(first, path)
    second = so.Workspace()
    second["b"] = 2
    so.save_workspace(second, str(path))
    assert so.load_workspace(str(path)).local_blobs() == ["b"]
    assert files_in(tmp_path) == ["c.safetensors"]


def test_a_new_checkpoint_gets_the_mode_a_plain_file_would(tmp_path):
    (tmp_path / "plain").write_bytes(b"")
    so.save_workspace(so.Workspace(), tmp_path / "c.safetensors")
    assert (os.stat(tmp_path / "c.safetensors").st_mode & 0o777) == \
        (os.stat(tmp_path / "plain").st_mode & 0o777)


_DTYPES = st.sampled_from(["?", "i1", "<i2", ">i2", "<i4", ">i8", "u1", "<u2", ">u4", "<u8",
                           "<f2", ">f2", ">f4", "<f8", ">f8", "<c8", ">c8", "<c16", ">c16",
                           "<U3", ">U1", "S4", "S1"])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_tensors_round_trip_bit_exactly(data):
    dtype = np.dtype(data.draw(_DTYPES, label="dtype"))
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4),
                      label="shape")
    array = data.draw(hnp.arrays(dtype, shape), label="array")
    scalar = array.reshape(-1)[0] if array.size else None
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "c.safetensors"
        ws = so.Workspace()
        ws["t"] = array
        if scalar is not None:
            ws["s"] = scalar
        so.save_workspace(ws, path)
        loaded = so.load_workspace(path)
        # safetensors reads the same tensor (complex, str and bytes as their numbers).
        plain = safetensors.numpy.load_file(path)["t"]
    assert_identical(array, loaded["t"])
    if scalar is not None:
        assert_identical(scalar, loaded["s"])
    little = array.astype(array.dtype.newbyteorder("<") if array.dtype.byteorder == ">"
                          else array.dtype)
    assert np.ascontiguousarray(plain).tobytes() == np.ascontiguousarray(little).tobytes()


# -- the format and safetensors interop ----------------------------------------------------


def test_a_checkpoint_is_a_safetensors_file_as_documented(tmp_path):
    path, data = small_checkpoint(tmp_path)
    header, start = header_of(data)
    padded = data[8:start]
    assert start % 8 == 0 and padded.rstrip(b" ").endswith(b"}")
    assert len(padded) - len(padded.rstrip(b" ")) < 8
    metadata = header.pop("__metadata__")
    assert set(metadata) == {"scopeops.format", "scopeops.blobs", "scopeops.sha256"}
    assert metadata["scopeops.format"] == str(FORMAT_VERSION) == "1"
    assert header == {"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}
    assert json.loads(metadata["scopeops.blobs"]) == [
        {"name": "w", "type": "tensor", "key": "w", "dtype": "<f4", "shape": [2, 3]},
        {"name": "flag", "type": "scalar", "dtype": "|b1", "value": "01"},
        {"name": "name", "type": "str", "value": "layer"},
        {"name": "raw", "type": "bytes", "value": base64.b64encode(b"\x00\x01").decode()},
        {"name": "step", "type": "int", "value": "0x7"},
    ]
    assert data[start:] == np.arange(6, dtype="<f4").tobytes()
    assert metadata["scopeops.sha256"] == documented_digest(header, metadata["scopeops.blobs"],
                                                            data[start:])


def test_safetensors_numpy_reads_a_scopeops_checkpoint(tmp_path):
    ws = so.Workspace()
    ws["weights"] = np.arange(6, dtype=np.float16).reshape(2, 3)
    ws["mask"] = np.array([True, False])
    ws["counts"] = np.arange(3, dtype=">i8")                  # stored little-endian
    ws["c64"] = np.array([1 + 2j], dtype=np.complex64)
    ws["c128"] = np.array([1 + 2j, 3 - 4j])                   # as (real, imag) pairs
    ws["words"] = np.array(["ab", "c"])                       # as code points
    ws["raw"] = np.array([b"xy", b"z"])                       # as bytes
    ws["lr"] = 0.5                                            # metadata only
    path = tmp_path / "c.safetensors"
    so.save_workspace(ws, path)

    tensors = safetensors.numpy.load_file(path)
    assert sorted(tensors) == ["c128", "c64", "counts", "mask", "raw", "weights", "words"]
    np.testing.assert_array_equal(tensors["weights"], ws["weights"])
    assert tensors["weights"].dtype == np.float16
    assert tensors["mask"].dtype == np.bool_ and tensors["mask"].tolist() == [True, False]
    assert tensors["counts"].dtype == np.int64 and tensors["counts"].tolist() == [0, 1, 2]
    assert tensors["c64"].dtype == np.complex64 and tensors["c64"].tolist() == [1 + 2j]
    assert tensors["c128"].tolist() == [[1.0, 2.0], [3.0, -4.0]]
    assert tensors["words"].dtype == np.uint32
    assert tensors["words"].tolist() == [[ord("a"), ord("b")], [ord("c"), 0]]
    assert tensors["raw"].tolist() == [[ord("x"), ord("y")], [ord("z"), 0]]
    with safetensors.safe_open(path, framework="np") as opened:
        records = json.loads(opened.metadata()["scopeops.blobs"])
    assert {r["name"]: r["type"] for r in records}["lr"] == "float"


def test_a_checkpoint_rewritten_by_safetensors_itself_still_verifies(tmp_path):
    # safetensors lays tensors out as scopeops does, so the digest survives its rewrite.
    ws = so.Workspace()
    for i, value in enumerate([np.ones(3, np.float16), np.arange(4), np.array([True]),
                               np.array([1j]), np.array(["abc"]), np.zeros((2, 2), "u1"),
                               np.float32(2), "text"]):
        ws[f"b{i}"] = value
    path = tmp_path / "c.safetensors"
    so.save_workspace(ws, path)
    with safetensors.safe_open(path, framework="np") as opened:
        metadata = opened.metadata()
    safetensors.numpy.save_file(safetensors.numpy.load_file(path), tmp_path / "again.safetensors",
                                metadata=metadata)
    loaded = so.load_workspace(tmp_path / "again.safetensors")
    assert loaded.local_blobs() == ws.local_blobs()
    for name in ws.local_blobs():
        assert_identical(ws[name], loaded[name])


FOREIGN_DTYPES = [np.bool_, np.uint8, np.int8, np.int16, np.uint16, np.float16, np.int32,
                  np.uint32, np.float32, np.complex64, np.float64, np.int64, np.uint64]


def test_a_file_written_by_safetensors_numpy_loads_as_a_workspace(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {f"t_{np.dtype(d).name}": (rng.uniform(-50, 50, (2, 3)) > 0).astype(d)
               if d is np.bool_ else rng.uniform(0, 100, (2, 3)).astype(d)
               for d in FOREIGN_DTYPES}
    tensors["scalar"] = np.array(7.0)
    tensors["empty"] = np.zeros((0, 4), np.float32)
    path = tmp_path / "foreign.safetensors"
    safetensors.numpy.save_file(tensors, path, metadata={"format": "pt"})
    ws = so.load_workspace(path)
    assert ws.local_blobs() == sorted(tensors)               # name order
    for name, value in tensors.items():
        assert ws[name].dtype == value.dtype and ws[name].shape == value.shape
        np.testing.assert_array_equal(ws[name], value)
        assert ws[name].flags.writeable
    assert so.global_variables(ws) == []
    assert [e.name for e in read_checkpoint_header(path)] == sorted(tensors)


def test_a_foreign_file_without_metadata_loads_too(tmp_path):
    path = tmp_path / "plain.safetensors"
    path.write_bytes(safetensors.numpy.save({"b": np.ones(2), "a": np.zeros(1, np.int8)}))
    assert so.load_workspace(path).local_blobs() == ["a", "b"]


def test_a_foreign_dtype_numpy_cannot_hold_is_refused_by_name(tmp_path):
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(forge({"ok": tensor_entry("F32", (1,), (0, 4)),
                            "half": tensor_entry("BF16", (2,), (4, 8))}, bytes(8)))
    assert safetensors.deserialize(path.read_bytes())          # valid safetensors
    refuses(path, "tensor 'half' has dtype BF16", "numpy")


@pytest.mark.parametrize("metadata, phrase", [
    ({"scopeops.format": "1"}, "incomplete scopeops metadata"),
    ({"scopeops.blobs": "[]", "scopeops.sha256": "0" * 64}, "incomplete scopeops metadata"),
    ({"format": "pt", "scopeops.sha256": "0" * 64}, "incomplete scopeops metadata"),
], ids=["format only", "no format", "digest only"])
def test_a_file_with_partial_scopeops_metadata_is_refused(tmp_path, metadata, phrase):
    path = tmp_path / "partial.safetensors"
    path.write_bytes(forge({"x": tensor_entry()}, bytes(8), metadata))
    refuses(path, phrase)


def test_unknown_scopeops_metadata_keys_are_refused(tmp_path):
    path = tmp_path / "c.safetensors"
    path.write_bytes(forge_checkpoint([], extra_metadata={"scopeops.exec": "rm -rf /"}))
    refuses(path, "incomplete scopeops metadata", "scopeops.exec")


def test_other_metadata_beside_the_scopeops_keys_is_refused_only_if_it_claims_scopeops(tmp_path):
    path = tmp_path / "c.safetensors"
    path.write_bytes(forge_checkpoint([{"name": "n", "type": "none"}],
                                      extra_metadata={"format": "pt"}))
    assert so.load_workspace(path).local_blobs() == ["n"]


# -- what is left out ----------------------------------------------------------------------


class StrSubclass(str):
    pass


class ArraySubclass(np.ndarray):
    pass


UNSAVEABLE = {
    "arbitrary object": (object(), "object"),
    "object array": (np.array([1, "two"], dtype=object), "dtype object"),
    "structured array": (np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")]), "dtype"),
    "datetime array": (np.array(["2024-01-01"], dtype="datetime64[D]"), "datetime64"),
    "longdouble array": (np.zeros(2, dtype=np.longdouble), "dtype"),
    "void scalar": (np.void(b"ab"), "dtype"),
    "ndarray subclass": (np.zeros(2).view(ArraySubclass), "ndarray subclass"),
    "str subclass": (StrSubclass("x"), "StrSubclass"),
    "list": ([1, 2], "list"),
    "dict": ({"a": 1}, "dict"),
}


@pytest.mark.parametrize("value, phrase", list(UNSAVEABLE.values()), ids=list(UNSAVEABLE))
def test_an_unsaveable_blob_is_refused_by_name_and_no_file_is_created(tmp_path, value, phrase):
    ws = so.Workspace()
    ws["fine"] = np.ones(2)
    ws["bad_blob"] = value
    path = tmp_path / "c.safetensors"
    with pytest.raises(so.CheckpointError, match="bad_blob") as info:
        so.save_workspace(ws, path)
    assert phrase in str(info.value) and "skip_unsupported=True" in str(info.value)
    assert "'fine'" not in str(info.value)
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("value, phrase", list(UNSAVEABLE.values()), ids=list(UNSAVEABLE))
def test_skip_unsupported_leaves_an_unsaveable_blob_out_and_says_why(tmp_path, value, phrase):
    ws = so.Workspace()
    ws["fine"] = np.ones(2)
    ws["bad_blob"] = value
    path = tmp_path / "c.safetensors"
    skipped = so.save_workspace(ws, path, skip_unsupported=True)
    assert list(skipped) == ["bad_blob"] and phrase in skipped["bad_blob"]
    assert so.load_workspace(path).local_blobs() == ["fine"]


def test_an_empty_blob_is_refused_by_name(tmp_path):
    ws = so.Workspace()
    ws.create_blob("placeholder")
    with pytest.raises(so.CheckpointError, match="'placeholder': it is empty"):
        so.save_workspace(ws, tmp_path / "c.safetensors")
    assert files_in(tmp_path) == []


def test_a_workspace_stack_is_left_out_and_reported(tmp_path):
    ws = so.Workspace()
    ws["w"] = np.ones(2)
    ws["scope"] = so.WorkspaceStack()
    path = tmp_path / "c.safetensors"
    skipped = so.save_workspace(ws, path)
    assert list(skipped) == ["scope"] and "WorkspaceStack" in skipped["scope"]
    assert "rebuilt on the next run" in skipped["scope"]
    assert so.load_workspace(path).local_blobs() == ["w"]


def test_nothing_left_out_reports_an_empty_dict(tmp_path):
    ws = so.Workspace()
    ws["w"] = np.ones(2)
    assert so.save_workspace(ws, tmp_path / "c.safetensors") == {}


def test_a_workspace_after_accumulate_microbatches_saves(tmp_path):
    # Issue 15: the micro-batch stack blob used to make every later save fail.
    net = so.Net("train")
    net.FC(["X", "W", "b"], ["h"])
    net.SumElements(["h"], ["loss"])
    so.add_gradient_ops(net, ["loss"])
    ws = so.Workspace()
    ws["W"], ws["b"] = np.ones((2, 3)), np.zeros(2)
    so.accumulate_microbatches(net, ws, {"X": np.ones((4, 3))}, 2, ["W", "b"],
                               reduction="sum")
    skipped = so.save_workspace(ws, tmp_path / "c.safetensors")
    assert list(skipped) == ["microbatch_scope"]
    assert sorted(so.load_workspace(tmp_path / "c.safetensors").local_blobs()) == \
        ["W", "W_grad", "b", "b_grad"]


def test_every_unsaveable_blob_is_named_in_one_error(tmp_path):
    ws = so.Workspace()
    ws["odd"] = object()
    ws["ok"] = 1
    ws["objects"] = np.array([None], dtype=object)
    ws["stack"] = so.WorkspaceStack()
    with pytest.raises(so.CheckpointError) as info:
        so.save_workspace(ws, tmp_path / "c.safetensors")
    message = str(info.value)
    assert "'odd'" in message and "'objects'" in message and "'ok'" not in message
    assert "'stack'" not in message              # skipped, not refused
    assert "Nothing was written" in message


def test_non_tensor_blobs_too_large_for_a_safetensors_header_are_refused_before_writing(
        tmp_path):
    ws = so.Workspace()
    ws["small"] = b"x"
    ws["huge"] = bytes(MAX_HEADER_SIZE)            # base64 makes it a third larger
    path = tmp_path / "c.safetensors"
    path.write_bytes(b"previous contents")
    with pytest.raises(so.CheckpointError, match="more than the 100000000 bytes") as info:
        so.save_workspace(ws, path)
    assert "'huge'" in str(info.value) and "np.frombuffer" in str(info.value)
    assert path.read_bytes() == b"previous contents"
    assert files_in(tmp_path) == ["c.safetensors"]


def test_a_refused_save_leaves_an_existing_file_untouched(tmp_path):
    path = tmp_path / "c.safetensors"
    path.write_bytes(b"previous contents")
    ws = so.Workspace()
    ws["bad"] = object()
    with pytest.raises(so.CheckpointError):
        so.save_workspace(ws, path)
    assert path.read_bytes() == b"previous contents"
    assert files_in(tmp_path) == ["c.safetensors"]


def test_checkpoint_error_is_a_scope_error():
    assert issubclass(so.CheckpointError, so.ScopeError)


def test_saving_something_other_than_a_workspace_is_a_type_error(tmp_path):
    with pytest.raises(TypeError, match="Workspace"):
        so.save_workspace({"a": 1}, tmp_path / "c.safetensors")
    assert files_in(tmp_path) == []


# -- variables --------------------------------------------------------------------------


def test_variables_and_their_trainability_are_saved_and_listed_after_a_load(tmp_path):
    ws = so.Workspace()
    with so.variable_scope("dense", workspace=ws):
        so.get_variable("w", (2, 3))
        so.get_variable("step", (), dtype="int64", trainable=False)
    ws["data"] = np.ones(3)
    path = tmp_path / "c.safetensors"
    so.save_workspace(ws, path)
    entries = {e.name: (e.variable, e.trainable) for e in read_checkpoint_header(path)}
    assert entries == {"dense/w": (True, True), "dense/step": (True, False),
                       "data": (False, False)}
    loaded = so.load_workspace(path)
    assert so.global_variables(loaded) == ["dense/w", "dense/step"]
    assert so.trainable_variables(loaded) == ["dense/w"]


# -- atomic saves ---------------------------------------------------------------------


def workspace_with_two_tensors():
    ws = so.Workspace()
    ws["first"] = np.ones(1000)
    ws["second"] = np.zeros(1000)
    return ws


def crash_on_second_tensor(monkeypatch, exception):
    real = checkpoint._tensor_chunks
    calls = []

    def flaky(tensor):
        calls.append(tensor.name)
        if len(calls) == 2:
            raise exception
        return real(tensor)

    monkeypatch.setattr(checkpoint, "_tensor_chunks", flaky)
    return calls


@pytest.mark.parametrize("exception", [OSError("disk full"), KeyboardInterrupt()],
                         ids=["os-error", "keyboard-interrupt"])
def test_a_crash_mid_save_leaves_the_existing_file_and_no_temp_file(tmp_path, monkeypatch,
                                                                    exception):
    path = tmp_path / "c.safetensors"
    path.write_bytes(b"previous contents")
    calls = crash_on_second_tensor(monkeypatch, exception)
    with pytest.raises(type(exception)):
        so.save_workspace(workspace_with_two_tensors(), path)
    assert calls == ["first", "second"]     # it did crash half-way through the data
    assert path.read_bytes() == b"previous contents"
    assert files_in(tmp_path) == ["c.safetensors"]


def test_a_crash_mid_save_creates_nothing_where_no_file_was(tmp_path, monkeypatch):
    crash_on_second_tensor(monkeypatch, OSError("disk full"))
    with pytest.raises(OSError):
        so.save_workspace(workspace_with_two_tensors(), tmp_path / "c.safetensors")
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("step", ["fsync", "replace"])
def test_a_failure_to_sync_or_rename_leaves_the_existing_file(tmp_path, monkeypatch, step):
    path = tmp_path / "c.safetensors"
    path.write_bytes(b"previous contents")

    def fail(*args, **kwargs):
        raise OSError(f"{step} failed")

    monkeypatch.setattr(atomicfile.os, step, fail)
    with pytest.raises(OSError, match=f"{step} failed"):
        so.save_workspace(workspace_with_two_tensors(), path)
    monkeypatch.undo()
    assert path.read_bytes() == b"previous contents"
    assert files_in(tmp_path) == ["c.safetensors"]


def test_a_tensor_reshaped_during_the_save_is_caught(tmp_path, monkeypatch):
    ws = workspace_with_two_tensors()
    real = checkpoint._tensor_chunks

    def reshape_then_write(tensor):
        if tensor.name == "second":
            tensor.value.shape = (10, 100)
        return real(tensor)

    monkeypatch.setattr(checkpoint, "_tensor_chunks", reshape_then_write)
    with pytest.raises(so.CheckpointError, match="'second' changed while it was being saved"):
        so.save_workspace(ws, tmp_path / "c.safetensors")
    assert files_in(tmp_path) == []


SAVER = textwrap.dedent("""
    import sys
    import numpy as np
    import scopeops as so
    ws = so.Workspace()
    ws["weights"] = np.full(int(sys.argv[2]) // 8, 1.5)
    ws["step"] = 2
    print("ready", flush=True)
    so.save_workspace(ws, sys.argv[1])
    print("saved", flush=True)
""")


def temp_files_of(path):
    return [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")
            and p.name.endswith(".tmp")]


def test_sigkill_while_a_large_save_is_being_written_leaves_the_old_checkpoint(tmp_path):
    path = tmp_path / "model.safetensors"
    old = so.Workspace()
    old["weights"] = np.arange(10.0)
    old["step"] = 1
    so.save_workspace(old, path)
    previous = path.read_bytes()
    size = 384 << 20
    env = {**os.environ, "PYTHONPATH": PACKAGE_PARENT}
    saver = subprocess.Popen([sys.executable, "-c", SAVER, str(path), str(size)],
                             stdout=subprocess.PIPE, env=env, cwd=PACKAGE_PARENT)
    seen = 0
    try:
        assert saver.stdout.readline() == b"ready\n"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and saver.poll() is None:
            temps = temp_files_of(path)
            seen = temps[0].stat().st_size if temps else 0
            if 16 << 20 <= seen < size // 2:           # the temp file is growing
                break
            time.sleep(0.002)
    finally:
        if saver.poll() is None:
            os.kill(saver.pid, signal.SIGKILL)
        saver.wait(timeout=60)
        saver.stdout.close()
    assert saver.returncode == -signal.SIGKILL, "the save finished before it could be killed"
    assert 16 << 20 <= seen < size
    # The old checkpoint is whole at the path; the killed writer's temp file is beside it.
    assert path.read_bytes() == previous
    loaded = so.load_workspace(path)
    np.testing.assert_array_equal(loaded["weights"], np.arange(10.0))
    assert loaded["step"] == 1
    stale = temp_files_of(path)
    assert len(stale) == 1 and 0 < stale[0].stat().st_size < size + 4096
    # The next save of the same path removes it.
    so.save_workspace(old, path)
    assert files_in(tmp_path) == ["model.safetensors"]


# -- loading never runs code ----------------------------------------------------------


class CreatesMarkerWhenUnpickled:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def npy_with_pickle_payload(path, marker):
    np.save(path, np.array([CreatesMarkerWhenUnpickled(marker)], dtype=object),
            allow_pickle=True)


def test_the_pickle_payload_is_live_when_loaded_with_pickle_allowed(tmp_path):
    npy_with_pickle_payload(tmp_path / "bomb.npy", tmp_path / "proof")
    np.load(tmp_path / "bomb.npy", allow_pickle=True)
    assert (tmp_path / "proof").exists()


def test_a_npy_file_carrying_a_pickle_is_refused_without_running_it(tmp_path):
    npy_with_pickle_payload(tmp_path / "bomb.npy", tmp_path / "marker")
    refuses(tmp_path / "bomb.npy", "not a safetensors file")
    assert not (tmp_path / "marker").exists()


def test_a_raw_pickle_is_refused_without_running_it(tmp_path):
    (tmp_path / "bomb.pkl").write_bytes(pickle.dumps(CreatesMarkerWhenUnpickled(tmp_path / "m")))
    refuses(tmp_path / "bomb.pkl", "not a safetensors file")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("record, phrase", [
    (tensor_record(dtype="|O", shape=(1,)), "unsupported dtype '|O'"),
    ({"name": "x", "type": "scalar", "dtype": "O", "value": "00"}, "unsupported dtype 'O'"),
    ({"name": "x", "type": "pickle", "value": "gASV"}, "unknown type 'pickle'"),
    ({"name": "x", "type": "object", "value": "gASV"}, "unknown type 'object'"),
], ids=["object tensor", "object scalar", "pickle type", "object type"])
def test_a_checkpoint_whose_metadata_points_at_pickled_data_is_refused(tmp_path, record, phrase):
    payload = pickle.dumps(np.array([CreatesMarkerWhenUnpickled(tmp_path / "m")], dtype=object))
    table = {"x": tensor_entry("U8", (len(payload),), (0, len(payload)))}
    path = tmp_path / "c.safetensors"
    path.write_bytes(forge_checkpoint([record], table, payload))
    refuses(path, "invalid scopeops metadata", phrase)
    assert not (tmp_path / "m").exists()


# -- damaged and foreign files -----------------------------------------------------------


def test_truncation_at_every_position_is_refused(tmp_path):
    _, data = small_checkpoint(tmp_path)
    damaged = tmp_path / "damaged.safetensors"
    for length in range(len(data)):
        damaged.write_bytes(data[:length])
        with pytest.raises(so.CheckpointError, match="truncated|empty"):
            so.load_workspace(damaged)
        with pytest.raises(so.CheckpointError, match="truncated|empty"):
            read_checkpoint_header(damaged)


def test_a_bit_flip_anywhere_is_refused(tmp_path):
    _, data = small_checkpoint(tmp_path)
    damaged = tmp_path / "damaged.safetensors"
    for position in range(len(data)):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[position] ^= 1 << bit
            damaged.write_bytes(flipped)
            with pytest.raises(so.CheckpointError):
                so.load_workspace(damaged)


def test_a_bit_flip_in_the_data_is_reported_as_a_digest_mismatch(tmp_path):
    path, data = small_checkpoint(tmp_path)
    flipped = bytearray(data)
    flipped[-3] ^= 0x10
    path.write_bytes(flipped)
    refuses(path, "corrupted: its SHA-256 digest does not match")


def test_a_bit_flip_in_a_stored_value_is_reported_as_a_digest_mismatch(tmp_path):
    path, data = small_checkpoint(tmp_path)
    position = data.index(b"0x7")                  # the int blob "step"
    flipped = bytearray(data)
    flipped[position + 2] ^= 0x01                  # 0x7 -> 0x6
    path.write_bytes(flipped)
    refuses(path, "corrupted: its SHA-256 digest does not match")


def test_trailing_bytes_are_refused(tmp_path):
    path, data = small_checkpoint(tmp_path)
    path.write_bytes(data + b"\x00")
    refuses(path, "1 bytes follow its last tensor")
    with pytest.raises(so.CheckpointError, match="follow its last tensor"):
        read_checkpoint_header(path)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_random_bytes_are_refused(content, with_length):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "random.safetensors"
        # With a length that fits, the random bytes reach the JSON parser.
        path.write_bytes(struct.pack("<Q", len(content)) + content if with_length else content)
        with pytest.raises(so.CheckpointError):
            so.load_workspace(path)


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=12))
def test_random_json_headers_are_refused_or_loaded_never_crash(document):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "random.safetensors"
        path.write_bytes(forge(None, header_bytes=json.dumps(document).encode()))
        try:
            ws = so.load_workspace(path)
        except so.CheckpointError:
            return
        # Only a header without tensors, and without scopeops metadata, can load.
        assert isinstance(document, dict) and set(document) <= {"__metadata__"}
        assert ws.local_blobs() == []


@pytest.mark.parametrize("content", [
    b"",
    b"\x89PNG\r\n\x1a\n" + bytes(100),
    b"PK\x03\x04" + bytes(100),
    b"just some text\n",
    b"\x89SCOPEOPS\r\n\x1a\n\x01\x00\x00\x00" + bytes(60),     # the old private format
], ids=["empty", "png", "zip", "text", "old format"])
def test_foreign_files_are_refused(tmp_path, content):
    path = tmp_path / "foreign"
    path.write_bytes(content)
    refuses(path)


def test_a_plain_npy_file_is_foreign(tmp_path):
    np.save(tmp_path / "a.npy", np.ones(3))
    refuses(tmp_path / "a.npy", "not a safetensors file")


def test_a_newer_format_version_is_refused_naming_the_version(tmp_path):
    path = tmp_path / "future.safetensors"
    path.write_bytes(forge_checkpoint([], version=str(FORMAT_VERSION + 1)))
    message = refuses(path, f"format version {FORMAT_VERSION + 1}, newer")
    assert "upgrade scopeops" in message


@pytest.mark.parametrize("version", ["0", "01", "1.0", "x", ""])
def test_an_unknown_format_version_is_refused(tmp_path, version):
    path = tmp_path / "odd.safetensors"
    path.write_bytes(forge_checkpoint([], version=version))
    refuses(path, "unknown checkpoint format version")


def test_a_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        so.load_workspace(tmp_path / "nope.safetensors")


# -- hostile safetensors headers (what safetensors' own parser does with each) -------------


@pytest.mark.parametrize("length", [2**63, 2**64 - 1, MAX_HEADER_SIZE + 1])
def test_a_huge_declared_header_length_is_refused_without_reading(tmp_path, length):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", length) + b"{}")
    refuses(path, "not a safetensors file", f"{length}-byte header")


def test_a_header_length_larger_than_the_file_is_refused(tmp_path):
    path = tmp_path / "short.safetensors"
    path.write_bytes(struct.pack("<Q", 1000) + b"{}")
    refuses(path, "truncated", "header is 1000 bytes, but only 2 follow")


HOSTILE_HEADERS = {
    # name: (header bytes, data, phrase, does safetensors itself accept it?)
    "not utf-8": (b'{"a\xff":1}', b"", "not UTF-8", False),
    "broken json": (b"{not json", b"", "not valid JSON", False),
    "deeply nested": (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, b"", "not valid JSON",
                      False),
    "not an object": (b"[]", b"", "not a JSON object", False),
    "nan": (b'{"a":{"dtype":"U8","shape":[NaN],"data_offsets":[0,0]}}', b"", "NaN", False),
    "duplicate tensor names": (
        b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
        b'"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"x",
        "repeats the key 'a'", True),
    "duplicate field": (b'{"a":{"dtype":"U8","dtype":"I8","shape":[1],"data_offsets":[0,1]}}',
                        b"x", "repeats the key 'dtype'", False),
    "duplicate metadata key": (b'{"__metadata__":{"k":"1","k":"2"}}', b"", "repeats the key",
                               True),
    "extra field": (json.dumps({"a": {**tensor_entry("U8", (1,), (0, 1)),
                                      "exec": "rm"}}).encode(), b"x", "exactly the keys",
                    True),
    "missing field": (json.dumps({"a": {"dtype": "U8", "shape": [1]}}).encode(), b"x",
                      "exactly the keys", False),
    "unknown dtype": (json.dumps({"a": tensor_entry("F128", (1,), (0, 16))}).encode(),
                      bytes(16), "unknown dtype 'F128'", False),
    "dtype not a string": (json.dumps({"a": tensor_entry(["F32"], (1,), (0, 4))}).encode(),
                           bytes(4), "unknown dtype", False),
    "negative dim": (json.dumps({"a": tensor_entry("U8", (-1,), (0, 1))}).encode(), b"x",
                     "non-negative", False),
    "float dim": (b'{"a":{"dtype":"U8","shape":[1.0],"data_offsets":[0,1]}}', b"x",
                  "non-negative", False),
    "bool dim": (b'{"a":{"dtype":"U8","shape":[true],"data_offsets":[0,1]}}', b"x",
                 "non-negative", False),
    "dim beyond u64": (json.dumps({"a": tensor_entry("U8", (0, 2**64), (0, 0))}).encode(),
                       b"", "non-negative", False),
    "huge number": (b'{"a":{"dtype":"U8","shape":[1' + b"0" * 5000 + b'],"data_offsets":[0,1]}}',
                    b"x", "not valid JSON", False),
    "offsets reversed": (json.dumps({"a": tensor_entry("U8", (0,), (1, 0))}).encode(), b"x",
                         "0 <= begin <= end", False),
    "three offsets": (json.dumps({"a": {"dtype": "U8", "shape": [1],
                                        "data_offsets": [0, 1, 2]}}).encode(), b"x",
                      "data_offsets must be", False),
    "size disagrees with shape": (json.dumps({"a": tensor_entry("F32", (3,), (0, 8))}).encode(),
                                  bytes(8), "takes 12 bytes", False),
    "overlapping offsets": (json.dumps({"a": tensor_entry("U8", (2,), (0, 2)),
                                        "b": tensor_entry("U8", (2,), (1, 3))}).encode(),
                            b"xyz", "overlaps", False),
    "gap between tensors": (json.dumps({"a": tensor_entry("U8", (1,), (0, 1)),
                                        "b": tensor_entry("U8", (1,), (2, 3))}).encode(),
                            b"xyz", "gap", False),
    "offsets beyond the file": (json.dumps({"a": tensor_entry("U8", (4,), (0, 4))}).encode(),
                                b"xy", "truncated", False),
    "huge offsets": (json.dumps({"a": tensor_entry("U8", (2**60,), (0, 2**60))}).encode(),
                     b"xy", "truncated", False),
    "metadata value not a string": (b'{"__metadata__":{"k":1}}', b"", "map names to strings",
                                    False),
    "metadata not an object": (b'{"__metadata__":[]}', b"", "map names to strings", False),
    "lone surrogate name": (b'{"\\ud800":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}',
                           b"x", "not valid UTF-8", False),
    "empty name": (json.dumps({"": tensor_entry("U8", (1,), (0, 1))}).encode(), b"x",
                   "empty name", True),
    "65 dimensions": (json.dumps({"a": tensor_entry("U8", (1,) * 65, (0, 1))}).encode(), b"x",
                      "at most 64", True),
    "impossible zero-size shape": (json.dumps({"a": tensor_entry("U8", (0, 2**63),
                                                                 (0, 0))}).encode(),
                                   b"", "too large", True),
    "non-canonical bool": (json.dumps({"b": tensor_entry("BOOL", (3,), (0, 3))}).encode(),
                           b"\x02\x00\xff", "bytes other than 0 and 1", True),
}


@pytest.mark.parametrize("header, data, phrase, safetensors_accepts",
                         list(HOSTILE_HEADERS.values()), ids=list(HOSTILE_HEADERS))
def test_a_hostile_safetensors_header_is_refused_naming_the_problem(
        tmp_path, monkeypatch, header, data, phrase, safetensors_accepts):
    content = forge(None, data, header_bytes=header)
    accepted = True
    try:
        safetensors.deserialize(content)
    except Exception:
        accepted = False
    assert accepted == safetensors_accepts       # why scopeops checks the header itself
    created = []
    monkeypatch.setattr(checkpoint, "Workspace", lambda: created.append(1))
    path = tmp_path / "hostile.safetensors"
    path.write_bytes(content)
    refuses(path, phrase)
    assert created == []                       # nothing half-loaded


def record(name="x", type="int", **fields):
    return {"name": name, "type": type, **fields}


HOSTILE_RECORDS = {
    # name: (records, tensor table, data, phrase)
    "blobs not a list": ({"x": 1}, {}, b"", "must be a JSON list"),
    "blobs not json": ("[{", {}, b"", "not valid JSON"),
    "blobs deeply nested": ("[" * 100_000 + "]" * 100_000, {}, b"", "not valid JSON"),
    "duplicate key in a record": ('[{"name":"x","name":"y","type":"none"}]', {}, b"",
                                  "repeats the key 'name'"),
    "record not an object": ([["x"]], {}, b"", "not an object"),
    "unknown type tag": ([record(type="module", value="os")], {}, b"", "unknown type 'module'"),
    "type not a string": ([record(type=["int"])], {}, b"", "unknown type"),
    "empty name": ([record(name="", value="0x1")], {}, b"", "non-empty string"),
    "name not a string": ([record(name=5, value="0x1")], {}, b"", "non-empty string"),
    "duplicate names": ([record(value="0x1"), record(value="0x2")], {}, b"", "appears twice"),
    "missing value": ([record()], {}, b"", "has the keys"),
    "extra key": ([record(value="0x1", code="print(1)")], {}, b"", "has the keys"),
    "variable on a non-tensor": ([record(value="0x1", variable={"trainable": True})], {}, b"",
                                 "has the keys"),
    "int not hex": ([record(value="12")], {}, b"", "stored as hex"),
    "int with spaces": ([record(value=" 0x1")], {}, b"", "stored as hex"),
    "int as json number": ([record(value=1)], {}, b"", "stored as hex"),
    "float of wrong width": ([record(type="float", value="3ff0")], {}, b"", "16 hex digits"),
    "complex of one part": ([record(type="complex", value=["3ff0000000000000"])], {}, b"",
                            "two floats"),
    "bool not a bool": ([record(type="bool", value=1)], {}, b"", "true or false"),
    "bytes not base64": ([record(type="bytes", value="@@@@")], {}, b"", "not valid base64"),
    "str not a string": ([record(type="str", value=5)], {}, b"", "JSON string"),
    "scalar of wrong width": ([record(type="scalar", dtype="<f4", value="00")], {}, b"",
                              "8 hex digits"),
    "scalar with a huge dtype": ([record(type="scalar", dtype="<U999999999", value="")], {},
                                 b"", "unsupported dtype"),
    "non-canonical bool scalar": ([record(type="scalar", dtype="|b1", value="02")], {}, b"",
                                  "not 0 or 1"),
    "str scalar beyond unicode": ([record(type="scalar", dtype="<U1", value="00001100")], {},
                                  b"", "not a code point"),
    "tensor missing from the file": ([tensor_record(key="y")], {"x": tensor_entry()},
                                     bytes(8), "'y' is not in the file"),
    "orphan tensor": ([], {"x": tensor_entry()}, bytes(8), "belongs to no blob"),
    "two blobs, one tensor": ([tensor_record(), tensor_record(name="y")],
                              {"x": tensor_entry()}, bytes(8), "belongs to another blob"),
    "dtype differs from the table": ([tensor_record(dtype="<i4")], {"x": tensor_entry()},
                                     bytes(8), "stored as I32 [2]"),
    "shape differs from the table": ([tensor_record(shape=(1, 2))], {"x": tensor_entry()},
                                     bytes(8), "stored as F32 [1, 2]"),
    "complex128 without its pair axis": ([tensor_record(dtype="<c16", shape=(1,))],
                                         {"x": tensor_entry("F64", (1,), (0, 8))}, bytes(8),
                                         "stored as F64 [1, 2]"),
    "longdouble dtype": ([tensor_record(dtype="<f16")], {"x": tensor_entry()}, bytes(8),
                         "unsupported dtype"),
    "structured dtype": ([tensor_record(dtype="[('a', '<f4')]")], {"x": tensor_entry()},
                         bytes(8), "unsupported dtype"),
    "datetime dtype": ([tensor_record(dtype="<M8[ns]")], {"x": tensor_entry()}, bytes(8),
                       "unsupported dtype"),
    "zero-width str dtype": ([tensor_record(dtype="<U0", shape=(0,))],
                             {"x": tensor_entry("U32", (0, 0), (0, 0))}, b"",
                             "unsupported dtype"),
    "too many dims": ([tensor_record(shape=(1,) * 65)], {"x": tensor_entry("F32", (1,) * 65,
                                                                           (0, 4))},
                      bytes(4), "at most 64"),
    "shape not a list": ([tensor_record(shape=2)], {"x": tensor_entry()}, bytes(8),
                         "must be a list"),
    "variable malformed": ([tensor_record(variable=True)], {"x": tensor_entry()}, bytes(8),
                           "'variable' must be"),
    "trainable not a bool": ([tensor_record(variable={"trainable": "yes"})],
                             {"x": tensor_entry()}, bytes(8), "'variable' must be"),
    "non-canonical bool tensor": ([tensor_record(name="b", key="b", dtype="|b1", shape=(3,))],
                                  {"b": tensor_entry("BOOL", (3,), (0, 3))}, b"\x02\x00\xff",
                                  "bytes other than 0 and 1"),
    "str tensor beyond unicode": ([tensor_record(dtype="<U1", shape=(1,))],
                                  {"x": tensor_entry("U32", (1, 1), (0, 4))},
                                  struct.pack("<I", 0x110000), "not a Unicode code point"),
}


@pytest.mark.parametrize("records, table, data, phrase", list(HOSTILE_RECORDS.values()),
                         ids=list(HOSTILE_RECORDS))
def test_hostile_scopeops_metadata_is_refused_naming_the_problem(tmp_path, monkeypatch,
                                                                 records, table, data, phrase):
    created = []
    monkeypatch.setattr(checkpoint, "Workspace", lambda: created.append(1))
    path = tmp_path / "hostile.safetensors"
    path.write_bytes(forge_checkpoint(records, table, data))
    refuses(path, phrase)
    assert created == []


def test_issue_14_bool_bytes_02_00_ff_are_refused_in_a_scopeops_checkpoint(tmp_path):
    ws = so.Workspace()
    ws["b"] = np.array([True, False, True])
    path = tmp_path / "c.safetensors"
    so.save_workspace(ws, path)
    data = bytearray(path.read_bytes())
    header, start = header_of(bytes(data))
    data[start:start + 3] = b"\x02\x00\xff"
    blobs_json = header["__metadata__"]["scopeops.blobs"]
    table = {k: v for k, v in header.items() if k != "__metadata__"}
    path.write_bytes(forge_checkpoint(blobs_json, table, bytes(data[start:])))
    refuses(path, "bool tensor 'b' holds bytes other than 0 and 1")


def test_an_error_from_safetensors_itself_becomes_a_checkpoint_error(tmp_path, monkeypatch):
    path, _ = small_checkpoint(tmp_path)

    def refuse(content):
        raise safetensors.SafetensorError("Error while deserializing: no")

    monkeypatch.setattr(checkpoint.safetensors, "deserialize", refuse)
    refuses(path, "safetensors refused it", "Error while deserializing: no")


def test_a_file_that_changes_while_being_read_is_refused(tmp_path, monkeypatch):
    path, data = small_checkpoint(tmp_path)
    real = checkpoint._read_header

    def read_then_grow(stream, where):
        header = real(stream, where)
        with open(path, "ab") as grow:
            grow.write(b"    ")
        return header

    monkeypatch.setattr(checkpoint, "_read_header", read_then_grow)
    refuses(path, "changed while it was being read")


# -- inspecting a checkpoint ------------------------------------------------------------


def test_read_checkpoint_header_lists_every_blob(tmp_path):
    path, _ = small_checkpoint(tmp_path)
    entries = read_checkpoint_header(path)
    assert [tuple(e)[:5] for e in entries] == [
        ("w", "tensor", np.dtype("<f4"), (2, 3), 24),
        ("flag", "scalar", np.dtype("bool"), (), 1),
        ("name", "str", None, None, 5),
        ("raw", "bytes", None, None, 2),
        ("step", "int", None, None, 1),
    ]
    assert entries[0].name == "w" and entries[0].nbytes == 24 and not entries[0].variable


def test_read_checkpoint_header_verifies_the_data_unless_asked_not_to(tmp_path):
    path, data = small_checkpoint(tmp_path)
    flipped = bytearray(data)
    flipped[-3] ^= 0x01                        # in the data section
    path.write_bytes(flipped)
    with pytest.raises(so.CheckpointError, match="digest"):
        read_checkpoint_header(path)
    assert [e.name for e in read_checkpoint_header(path, verify=False)] == \
        ["w", "flag", "name", "raw", "step"]


def test_read_checkpoint_header_refuses_files_that_are_not_safetensors(tmp_path):
    (tmp_path / "x").write_bytes(b"hello, world")
    with pytest.raises(so.CheckpointError, match="not a safetensors file"):
        read_checkpoint_header(tmp_path / "x")
