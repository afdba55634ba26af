"""Checkpoints: exact round trips, refusal before writing, atomic saves, and loading that
never runs code and rejects truncated, corrupted, foreign, hostile or newer files."""

import hashlib
import json
import os
import pickle
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import scopeops as so
from scopeops import checkpoint
from scopeops.checkpoint import FORMAT_VERSION, MAGIC, read_checkpoint_header


def round_trip(tmp_path, **blobs):
    ws = so.Workspace()
    for name, value in blobs.items():
        ws.feed_blob(name, value)
    path = tmp_path / "model.ckpt"
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


def forge(header, data=b"", version=FORMAT_VERSION, header_bytes=None):
    """A checkpoint file's bytes with this header and data, and a correct checksum."""
    body = header_bytes if header_bytes is not None else json.dumps(header).encode()
    head = MAGIC + struct.pack("<IQQ", version, len(body), len(data)) + body + data
    return head + hashlib.sha256(head).digest()


def small_checkpoint(tmp_path):
    ws = so.Workspace()
    ws["w"] = np.arange(6, dtype=np.float32).reshape(2, 3)
    ws["flag"] = np.bool_(True)
    ws["name"] = "layer"
    ws["raw"] = b"\x00\x01"
    ws["step"] = 7
    path = tmp_path / "small.ckpt"
    so.save_workspace(ws, path)
    return path, path.read_bytes()


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
    "empty": np.zeros((0, 5), dtype=np.int16),
    "empty 0-size middle": np.zeros((2, 0, 3), dtype=np.float64),
    "unicode": np.array([["a", "bcd"], ["é", "\U0001f600"]]),
    "bytes array": np.array([b"ab", b"\x00\xff"]),
    "big-endian": np.arange(5, dtype=">i4"),
    "big-endian unicode": np.array(["xy", "z"], dtype=">U2"),
    "numpy float32 scalar": np.float32(0.1),
    "numpy int64 scalar": np.int64(-5),
    "numpy uint8 scalar": np.uint8(200),
    "numpy bool scalar": np.bool_(False),
    "numpy complex scalar": np.complex128(1 - 1j),
    "numpy str scalar": np.str_("héllo"),
    "numpy bytes scalar": np.bytes_(b"raw"),
    "str": "hello, wörld",
    "empty str": "",
    "str with lone surrogate": "a\ud800b",
    "bytes": b"\x00\x01\xff",
    "empty bytes": b"",
    "int": 42,
    "negative int": -1,
    "huge int": -(3**500),
    "float": 0.1,
    "float nan": float("nan"),
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


def test_blob_names_with_unusual_characters_round_trip(tmp_path):
    names = ["scope/w", "naïve", "tab\tand\nnewline", "\ud800 surrogate", 'quote"s']
    loaded = round_trip(tmp_path, **{n: i for i, n in enumerate(names)})
    assert loaded.local_blobs() == names


def test_load_returns_a_public_workspace_that_can_run_nets(tmp_path):
    import scopeops.ops.math  # noqa: F401 - registers Add

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
    so.save_workspace(child, tmp_path / "child.ckpt")
    so.save_workspace(parent, tmp_path / "parent.ckpt")
    assert so.load_workspace(tmp_path / "child.ckpt").local_blobs() == ["mine"]
    assert so.load_workspace(tmp_path / "parent.ckpt").local_blobs() == ["outer"]


def test_an_empty_workspace_round_trips(tmp_path):
    assert round_trip(tmp_path).local_blobs() == []


def test_saving_again_replaces_the_previous_checkpoint(tmp_path):
    path = tmp_path / "c.ckpt"
    first = so.Workspace()
    first["a"] = 1
    so.save_workspace(first, path)
    second = so.Workspace()
    second["b"] = 2
    so.save_workspace(second, str(path))
    assert so.load_workspace(str(path)).local_blobs() == ["b"]
    assert files_in(tmp_path) == ["c.ckpt"]


def test_a_new_checkpoint_gets_the_mode_a_plain_file_would(tmp_path):
    (tmp_path / "plain").write_bytes(b"")
    ws = so.Workspace()
    so.save_workspace(ws, tmp_path / "c.ckpt")
    assert (os.stat(tmp_path / "c.ckpt").st_mode & 0o777) == \
        (os.stat(tmp_path / "plain").st_mode & 0o777)


_DTYPES = st.sampled_from(["?", "i1", "<i2", ">i2", "<i4", ">i8", "u1", "<u2", ">u4", "<u8",
                           "<f2", ">f4", "<f8", ">f8", "<c8", ">c16", "<U3", ">U1", "S4"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_tensors_round_trip_bit_exactly(data):
    dtype = np.dtype(data.draw(_DTYPES))
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))
    array = data.draw(hnp.arrays(dtype, shape))
    with tempfile.TemporaryDirectory() as directory:
        loaded = round_trip(Path(directory), t=array)["t"]
    assert_identical(array, loaded)


# -- refusal before writing -------------------------------------------------------------


class StrSubclass(str):
    pass


class ArraySubclass(np.ndarray):
    pass


UNSAVEABLE = {
    "workspace stack": (so.WorkspaceStack(), "WorkspaceStack"),
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
    path = tmp_path / "c.ckpt"
    with pytest.raises(so.CheckpointError, match="bad_blob") as info:
        so.save_workspace(ws, path)
    assert phrase in str(info.value)
    assert "'fine'" not in str(info.value)
    assert files_in(tmp_path) == []


def test_an_empty_blob_is_refused_by_name(tmp_path):
    ws = so.Workspace()
    ws.create_blob("placeholder")
    with pytest.raises(so.CheckpointError, match="'placeholder': it is empty"):
        so.save_workspace(ws, tmp_path / "c.ckpt")
    assert files_in(tmp_path) == []


def test_every_unsaveable_blob_is_named_in_one_error(tmp_path):
    ws = so.Workspace()
    ws["stack"] = so.WorkspaceStack()
    ws["ok"] = 1
    ws["objects"] = np.array([None], dtype=object)
    with pytest.raises(so.CheckpointError) as info:
        so.save_workspace(ws, tmp_path / "c.ckpt")
    message = str(info.value)
    assert "'stack'" in message and "'objects'" in message and "'ok'" not in message
    assert "Nothing was written" in message


def test_a_refused_save_leaves_an_existing_file_untouched(tmp_path):
    path = tmp_path / "c.ckpt"
    path.write_bytes(b"previous contents")
    ws = so.Workspace()
    ws["bad"] = object()
    with pytest.raises(so.CheckpointError):
        so.save_workspace(ws, path)
    assert path.read_bytes() == b"previous contents"
    assert files_in(tmp_path) == ["c.ckpt"]


def test_checkpoint_error_is_a_scope_error():
    assert issubclass(so.CheckpointError, so.ScopeError)


def test_saving_something_other_than_a_workspace_is_a_type_error(tmp_path):
    with pytest.raises(TypeError, match="Workspace"):
        so.save_workspace({"a": 1}, tmp_path / "c.ckpt")
    assert files_in(tmp_path) == []


# -- atomic saves ---------------------------------------------------------------------


def workspace_with_two_tensors():
    ws = so.Workspace()
    ws["first"] = np.ones(1000)
    ws["second"] = np.zeros(1000)
    return ws


def crash_on_second_tensor(monkeypatch, exception):
    real = checkpoint._tensor_bytes
    calls = []

    def flaky(entry, value):
        calls.append(entry.name)
        if len(calls) == 2:
            raise exception
        return real(entry, value)

    monkeypatch.setattr(checkpoint, "_tensor_bytes", flaky)
    return calls


@pytest.mark.parametrize("exception", [OSError("disk full"), KeyboardInterrupt()],
                         ids=["os-error", "keyboard-interrupt"])
def test_a_crash_mid_save_leaves_the_existing_file_and_no_temp_file(tmp_path, monkeypatch,
                                                                    exception):
    path = tmp_path / "c.ckpt"
    path.write_bytes(b"previous contents")
    calls = crash_on_second_tensor(monkeypatch, exception)
    with pytest.raises(type(exception)):
        so.save_workspace(workspace_with_two_tensors(), path)
    assert calls == ["first", "second"]     # it did crash half-way through the data
    assert path.read_bytes() == b"previous contents"
    assert files_in(tmp_path) == ["c.ckpt"]


def test_a_crash_mid_save_creates_nothing_where_no_file_was(tmp_path, monkeypatch):
    crash_on_second_tensor(monkeypatch, OSError("disk full"))
    with pytest.raises(OSError):
        so.save_workspace(workspace_with_two_tensors(), tmp_path / "c.ckpt")
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("step", ["fsync", "replace"])
def test_a_failure_to_sync_or_rename_leaves_the_existing_file(tmp_path, monkeypatch, step):
    path = tmp_path / "c.ckpt"
    path.write_bytes(b"previous contents")

    def fail(*args, **kwargs):
        raise OSError(f"{step} failed")

    monkeypatch.setattr(checkpoint.os, step, fail)
    with pytest.raises(OSError, match=f"{step} failed"):
        so.save_workspace(workspace_with_two_tensors(), path)
    monkeypatch.undo()
    assert path.read_bytes() == b"previous contents"
    assert files_in(tmp_path) == ["c.ckpt"]


def test_a_tensor_reshaped_during_the_save_is_caught(tmp_path, monkeypatch):
    ws = workspace_with_two_tensors()
    real = checkpoint._tensor_bytes

    def reshape_then_write(entry, value):
        if entry.name == "second":
            value.shape = (10, 100)
        return real(entry, value)

    monkeypatch.setattr(checkpoint, "_tensor_bytes", reshape_then_write)
    with pytest.raises(so.CheckpointError, match="'second' changed while it was being saved"):
        so.save_workspace(ws, tmp_path / "c.ckpt")
    assert files_in(tmp_path) == []


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
    with pytest.raises(so.CheckpointError, match="not a scopeops checkpoint"):
        so.load_workspace(tmp_path / "bomb.npy")
    assert not (tmp_path / "marker").exists()


def test_a_raw_pickle_is_refused_without_running_it(tmp_path):
    (tmp_path / "bomb.pkl").write_bytes(pickle.dumps(CreatesMarkerWhenUnpickled(tmp_path / "m")))
    with pytest.raises(so.CheckpointError, match="not a scopeops checkpoint"):
        so.load_workspace(tmp_path / "bomb.pkl")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("record, phrase", [
    ({"name": "x", "kind": "tensor", "dtype": "|O", "shape": [1]}, "unsupported dtype '|O'"),
    ({"name": "x", "kind": "scalar", "dtype": "O", "shape": []}, "unsupported dtype 'O'"),
    ({"name": "x", "kind": "pickle"}, "unknown blob kind 'pickle'"),
    ({"name": "x", "kind": "object"}, "unknown blob kind 'object'"),
], ids=["object tensor", "object scalar", "pickle kind", "object kind"])
def test_a_checkpoint_whose_header_points_at_pickled_data_is_refused(tmp_path, record, phrase):
    payload = pickle.dumps(np.array([CreatesMarkerWhenUnpickled(tmp_path / "m")], dtype=object))
    path = tmp_path / "c.ckpt"
    path.write_bytes(forge({"blobs": [{**record, "nbytes": len(payload)}]}, payload))
    with pytest.raises(so.CheckpointError, match="invalid header") as info:
        so.load_workspace(path)
    assert phrase in str(info.value)
    assert not (tmp_path / "m").exists()


# -- damaged and foreign files -----------------------------------------------------------


def test_truncation_at_every_position_is_refused(tmp_path):
    _, data = small_checkpoint(tmp_path)
    damaged = tmp_path / "damaged.ckpt"
    for length in range(len(data)):
        damaged.write_bytes(data[:length])
        with pytest.raises(so.CheckpointError, match="truncated|empty"):
            so.load_workspace(damaged)


def test_a_bit_flip_anywhere_is_refused(tmp_path):
    _, data = small_checkpoint(tmp_path)
    damaged = tmp_path / "damaged.ckpt"
    for position in range(len(data)):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[position] ^= 1 << bit
            damaged.write_bytes(flipped)
            with pytest.raises(so.CheckpointError):
                so.load_workspace(damaged)


def test_a_bit_flip_in_the_data_is_reported_as_a_checksum_mismatch(tmp_path):
    path, data = small_checkpoint(tmp_path)
    flipped = bytearray(data)
    flipped[-40] ^= 0x10
    path.write_bytes(flipped)
    with pytest.raises(so.CheckpointError, match="corrupted: its SHA-256 checksum"):
        so.load_workspace(path)


def test_a_bit_flip_in_the_header_is_reported_as_corruption_not_as_a_bad_header(tmp_path):
    path, data = small_checkpoint(tmp_path)
    flipped = bytearray(data)
    flipped[len(MAGIC) + 20 + 2] ^= 0x01      # inside the JSON header
    path.write_bytes(flipped)
    with pytest.raises(so.CheckpointError, match="checksum does not match"):
        so.load_workspace(path)


def test_trailing_bytes_are_refused(tmp_path):
    path, data = small_checkpoint(tmp_path)
    path.write_bytes(data + b"\x00")
    with pytest.raises(so.CheckpointError, match="corrupted"):
        so.load_workspace(path)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_random_bytes_are_refused(content, with_magic):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "random.ckpt"
        path.write_bytes(MAGIC + content if with_magic else content)
        with pytest.raises(so.CheckpointError):
            so.load_workspace(path)


@pytest.mark.parametrize("content", [
    b"",
    b"\x89PNG\r\n\x1a\n" + bytes(100),
    b"PK\x03\x04" + bytes(100),
    b"just some text\n",
], ids=["empty", "png", "zip", "text"])
def test_foreign_files_are_refused(tmp_path, content):
    path = tmp_path / "foreign"
    path.write_bytes(content)
    with pytest.raises(so.CheckpointError, match="not a scopeops checkpoint|is empty"):
        so.load_workspace(path)


def test_a_plain_npy_file_is_foreign(tmp_path):
    np.save(tmp_path / "a.npy", np.ones(3))
    with pytest.raises(so.CheckpointError, match="not a scopeops checkpoint"):
        so.load_workspace(tmp_path / "a.npy")


def test_a_newer_format_version_is_refused_naming_the_version(tmp_path):
    path = tmp_path / "future.ckpt"
    path.write_bytes(forge({"blobs": []}, version=FORMAT_VERSION + 1))
    with pytest.raises(so.CheckpointError,
                       match=f"format version {FORMAT_VERSION + 1}, newer") as info:
        so.load_workspace(path)
    assert "upgrade scopeops" in str(info.value)


def test_format_version_zero_is_unknown(tmp_path):
    path = tmp_path / "zero.ckpt"
    path.write_bytes(forge({"blobs": []}, version=0))
    with pytest.raises(so.CheckpointError, match="unknown checkpoint format version 0"):
        so.load_workspace(path)


def test_a_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        so.load_workspace(tmp_path / "nope.ckpt")


# -- hostile headers (well-formed files, valid checksum) ---------------------------------


def tensor_record(**changes):
    record = {"name": "x", "kind": "tensor", "dtype": "<f4", "shape": [2], "nbytes": 8}
    record.update(changes)
    return record


HOSTILE = {
    "huge nbytes": ({"blobs": [tensor_record(shape=[2**60], nbytes=2**62)]}, bytes(8),
                    "more bytes than"),
    "negative shape": ({"blobs": [tensor_record(shape=[-2], nbytes=8)]}, bytes(8),
                       "non-negative"),
    "shape and nbytes disagree": ({"blobs": [tensor_record(shape=[3])]}, bytes(8),
                                  "8 bytes declared"),
    "impossible zero-size shape": ({"blobs": [tensor_record(shape=[0, 2**70], nbytes=0)]},
                                   b"", "too large"),
    "too many dims": ({"blobs": [tensor_record(shape=[1] * 65, nbytes=4)]}, bytes(4),
                      "at most 64"),
    "bool in shape": ({"blobs": [tensor_record(shape=[True, 2])]}, bytes(8), "non-negative"),
    "float nbytes": ({"blobs": [tensor_record(nbytes=8.0)]}, bytes(8), "nbytes"),
    "longdouble dtype": ({"blobs": [tensor_record(dtype="<f16", nbytes=32)]}, bytes(32),
                         "unsupported dtype"),
    "structured dtype": ({"blobs": [tensor_record(dtype="[('a', '<f4')]")]}, bytes(8),
                         "unsupported dtype"),
    "datetime dtype": ({"blobs": [tensor_record(dtype="<M8[ns]", nbytes=16)]}, bytes(16),
                       "unsupported dtype"),
    "zero-width str dtype": ({"blobs": [tensor_record(dtype="<U0", nbytes=0)]}, b"",
                             "unsupported dtype"),
    "huge str dtype": ({"blobs": [tensor_record(dtype="<U999999999", shape=[0], nbytes=0)]},
                       b"", "unsupported dtype"),
    "dtype not a string": ({"blobs": [tensor_record(dtype=["<f4"])]}, bytes(8),
                           "must be a string"),
    "duplicate names": ({"blobs": [tensor_record(), tensor_record()]}, bytes(16),
                        "appears twice"),
    "missing key": ({"blobs": [{"name": "x", "kind": "tensor", "nbytes": 8}]}, bytes(8),
                    "keys"),
    "extra key": ({"blobs": [tensor_record(pickle=True)]}, bytes(8), "keys"),
    "empty name": ({"blobs": [tensor_record(name="")]}, bytes(8), "non-empty"),
    "name not a string": ({"blobs": [tensor_record(name=5)]}, bytes(8), "non-empty"),
    "kind not a string": ({"blobs": [tensor_record(kind=["tensor"])]}, bytes(8),
                          "unknown blob kind"),
    "scalar with a shape": ({"blobs": [tensor_record(kind="scalar")]}, bytes(8),
                            "a scalar has shape []"),
    "float of wrong size": ({"blobs": [{"name": "f", "kind": "float", "nbytes": 4}]},
                            bytes(4), "takes 8 bytes"),
    "int of no bytes": ({"blobs": [{"name": "i", "kind": "int", "nbytes": 0}]}, b"",
                        "at least 1 byte"),
    "fewer bytes declared than stored": ({"blobs": [tensor_record()]}, bytes(12),
                                         "holds 12"),
    "blobs not a list": ({"blobs": {"x": 1}}, b"", "must be a list"),
    "entry not an object": ({"blobs": [["x"]]}, b"", "not an object"),
    "header not an object": ([], b"", "exactly one key"),
    "unknown top-level key": ({"blobs": [], "exec": "rm -rf /"}, b"", "exactly one key"),
}


@pytest.mark.parametrize("header, data, phrase", list(HOSTILE.values()), ids=list(HOSTILE))
def test_a_hostile_header_is_refused_naming_the_problem(tmp_path, header, data, phrase):
    path = tmp_path / "hostile.ckpt"
    path.write_bytes(forge(header, data))
    with pytest.raises(so.CheckpointError, match="invalid header") as info:
        so.load_workspace(path)
    assert phrase in str(info.value)
    with pytest.raises(so.CheckpointError, match="invalid header"):
        read_checkpoint_header(path)


@pytest.mark.parametrize("header_bytes, phrase", [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    (b'{"blobs": [], "blobs": []}', "repeats the key 'blobs'"),
    (b'{"blobs": [{"name": "x", "kind": "float", "nbytes": NaN}]}', "NaN"),
    (b'{"blobs": [{"name": "x", "kind": "int", "nbytes": 1' + b"0" * 5000 + b"}]}",
     "invalid header"),
], ids=["broken", "not utf-8", "deeply nested", "duplicate key", "nan", "huge number"])
def test_a_header_that_is_not_plain_json_is_refused(tmp_path, header_bytes, phrase):
    path = tmp_path / "hostile.ckpt"
    path.write_bytes(forge(None, header_bytes=header_bytes))
    with pytest.raises(so.CheckpointError, match="invalid header") as info:
        so.load_workspace(path)
    assert phrase in str(info.value)


@pytest.mark.parametrize("record, data, phrase", [
    ({"name": "b", "kind": "bool", "nbytes": 1}, b"\x02", "holds b'\\x02'"),
    ({"name": "s", "kind": "str", "nbytes": 2}, b"\xc3\x28", "not valid UTF-8"),
    (tensor_record(dtype="<U1", shape=[1], nbytes=4), struct.pack("<I", 0x110000),
     "not a Unicode code point"),
], ids=["bool byte", "invalid utf-8", "code point"])
def test_invalid_values_are_refused_and_nothing_is_loaded(tmp_path, monkeypatch, record, data,
                                                          phrase):
    created = []
    monkeypatch.setattr(checkpoint, "Workspace", lambda: created.append(1))
    path = tmp_path / "hostile.ckpt"
    path.write_bytes(forge({"blobs": [{"name": "ok", "kind": "int", "nbytes": 1}, record]},
                           b"\x05" + data))
    with pytest.raises(so.CheckpointError) as info:
        so.load_workspace(path)
    assert phrase in str(info.value)
    assert created == []


@pytest.mark.parametrize("header_len, data_len", [(2**63, 0), (0, 2**64 - 1), (2**40, 2**40)])
def test_huge_declared_section_sizes_are_refused_without_allocating(tmp_path, header_len,
                                                                    data_len):
    path = tmp_path / "huge.ckpt"
    path.write_bytes(MAGIC + struct.pack("<IQQ", FORMAT_VERSION, header_len, data_len)
                     + bytes(64))
    with pytest.raises(so.CheckpointError, match="truncated"):
        so.load_workspace(path)


# -- inspecting a checkpoint ------------------------------------------------------------


def test_read_checkpoint_header_lists_every_blob(tmp_path):
    path, _ = small_checkpoint(tmp_path)
    entries = read_checkpoint_header(path)
    assert [tuple(e) for e in entries] == [
        ("w", "tensor", np.dtype("<f4"), (2, 3), 24),
        ("flag", "scalar", np.dtype("bool"), (), 1),
        ("name", "str", None, None, 5),
        ("raw", "bytes", None, None, 2),
        ("step", "int", None, None, 1),
    ]
    assert entries[0].name == "w" and entries[0].nbytes == 24


def test_read_checkpoint_header_verifies_the_data_unless_asked_not_to(tmp_path):
    path, data = small_checkpoint(tmp_path)
    flipped = bytearray(data)
    flipped[-40] ^= 0x01                       # in the data section
    path.write_bytes(flipped)
    with pytest.raises(so.CheckpointError, match="checksum"):
        read_checkpoint_header(path)
    assert [e.name for e in read_checkpoint_header(path, verify=False)] == \
        ["w", "flag", "name", "raw", "step"]


def test_read_checkpoint_header_refuses_foreign_files(tmp_path):
    (tmp_path / "x").write_bytes(b"hello")
    with pytest.raises(so.CheckpointError, match="not a scopeops checkpoint"):
        read_checkpoint_header(tmp_path / "x")


def test_the_file_layout_is_as_documented(tmp_path):
    path, data = small_checkpoint(tmp_path)
    assert data.startswith(MAGIC)
    version, header_len, data_len = struct.unpack_from("<IQQ", data, len(MAGIC))
    assert version == FORMAT_VERSION == 1
    start = len(MAGIC) + 20
    header = json.loads(data[start:start + header_len])
    assert header["blobs"][0] == {"name": "w", "kind": "tensor", "nbytes": 24,
                                  "dtype": "<f4", "shape": [2, 3]}
    assert len(data) == start + header_len + data_len + 32
    assert data[-32:] == hashlib.sha256(data[:-32]).digest()
    tensor = data[start + header_len:start + header_len + 24]
    assert tensor == np.arange(6, dtype="<f4").tobytes()
