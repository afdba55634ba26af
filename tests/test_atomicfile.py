"""scopeops.atomicfile.atomic_write: all or nothing at the path, durable, and clean-up of
what killed writers leave, never of what live writers are writing."""

import ast
import fcntl
import os
import pathlib

import pytest

from scopeops import atomicfile
from scopeops.atomicfile import atomic_write, remove_stale_temp_files


def files_in(directory):
    return sorted(p.name for p in pathlib.Path(directory).iterdir())


def test_a_binary_write_replaces_the_file(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with atomic_write(path) as out:
        out.write(b"new contents")
    assert path.read_bytes() == b"new contents"
    assert files_in(tmp_path) == ["out.bin"]


def test_a_text_write_uses_utf8_unless_told_and_honours_newline(tmp_path):
    with atomic_write(tmp_path / "a.txt", "w") as out:
        out.write("naïve\n")
    assert (tmp_path / "a.txt").read_bytes() == "naïve\n".encode()
    with atomic_write(str(tmp_path / "b.txt"), "w", encoding="latin-1", newline="\r\n") as out:
        out.write("naïve\n")
    assert (tmp_path / "b.txt").read_bytes() == "naïve\r\n".encode("latin-1")


def test_while_writing_the_data_goes_to_a_hidden_temp_file_beside_the_path(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with atomic_write(path) as out:
        out.write(b"half")
        out.flush()
        temps = [name for name in files_in(tmp_path) if name != "out.bin"]
        assert len(temps) == 1
        assert temps[0].startswith(".out.bin.") and temps[0].endswith(".tmp")
        assert path.read_bytes() == b"old"
    assert files_in(tmp_path) == ["out.bin"]


@pytest.mark.parametrize("exception", [ValueError("bad"), KeyboardInterrupt()],
                         ids=["error", "keyboard-interrupt"])
def test_an_exception_in_the_block_leaves_the_old_file_and_no_temp_file(tmp_path, exception):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(type(exception)):
        with atomic_write(path) as out:
            out.write(b"partial")
            raise exception
    assert path.read_bytes() == b"old"
    assert files_in(tmp_path) == ["out.bin"]


def test_an_exception_creates_nothing_where_no_file_was(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_write(tmp_path / "new.bin") as out:
            out.write(b"partial")
            raise RuntimeError
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("mode", ["r", "rb", "ab", "w+", "x", "wt"])
def test_modes_other_than_w_and_wb_are_refused_before_anything_is_created(tmp_path, mode):
    with pytest.raises(ValueError, match="'wb' or 'w'"):
        with atomic_write(tmp_path / "f", mode):
            pass
    assert files_in(tmp_path) == []


def test_an_encoding_in_binary_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="text mode"):
        with atomic_write(tmp_path / "f", encoding="utf-8"):
            pass
    assert files_in(tmp_path) == []


def test_a_new_file_gets_the_mode_a_plain_open_gives(tmp_path):
    (tmp_path / "plain").write_bytes(b"")
    with atomic_write(tmp_path / "atomic"):
        pass
    assert (os.stat(tmp_path / "atomic").st_mode & 0o7777) == \
        (os.stat(tmp_path / "plain").st_mode & 0o7777)


def test_an_existing_file_keeps_its_mode(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    with atomic_write(path) as out:
        out.write(b"new")
    assert os.stat(path).st_mode & 0o7777 == 0o640


def test_a_symlink_at_the_path_is_replaced_not_written_through(tmp_path):
    (tmp_path / "real").write_bytes(b"real")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with atomic_write(tmp_path / "link") as out:
        out.write(b"new")
    assert not (tmp_path / "link").is_symlink()
    assert (tmp_path / "link").read_bytes() == b"new"
    assert (tmp_path / "real").read_bytes() == b"real"


def test_the_file_and_its_directory_are_synced(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(atomicfile.os, "fsync",
                        lambda fd: (synced.append(os.path.realpath(f"/proc/self/fd/{fd}")),
                                    real(fd)))
    with atomic_write(tmp_path / "f") as out:
        out.write(b"x")
    assert len(synced) == 2
    assert synced[0].startswith(str(tmp_path / ".f."))      # the data, before the rename
    assert synced[1] == str(tmp_path)                       # the rename


def stale_temp(tmp_path, target="out.bin", suffix="abc12_xy"):
    path = tmp_path / f".{target}.{suffix}.tmp"
    path.write_bytes(b"left by a killed writer")
    return path


def test_a_write_removes_the_temp_files_dead_writers_left(tmp_path):
    stale_temp(tmp_path)
    stale_temp(tmp_path, suffix="zz9")
    with atomic_write(tmp_path / "out.bin") as out:
        out.write(b"new")
    assert files_in(tmp_path) == ["out.bin"]


def test_a_temp_file_a_live_writer_holds_is_left_alone(tmp_path):
    live = stale_temp(tmp_path)
    holder = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)       # as a writer in another process would
        assert remove_stale_temp_files(tmp_path / "out.bin") == []
        with atomic_write(tmp_path / "out.bin") as out:
            out.write(b"new")
        assert live.exists()
    finally:
        os.close(holder)
    assert remove_stale_temp_files(tmp_path / "out.bin") == [str(live)]
    assert files_in(tmp_path) == ["out.bin"]


def test_files_of_other_names_are_never_removed(tmp_path):
    keep = [stale_temp(tmp_path, target="other.bin"), tmp_path / "out.bin.tmp",
            tmp_path / ".out.bin.tmp", tmp_path / ".out.bin.a b.tmp",
            tmp_path / ".out.bin.abc.tmp.bak"]
    for path in keep[1:]:
        path.write_bytes(b"user data")
    (tmp_path / ".out.bin.dir.tmp").mkdir()
    with atomic_write(tmp_path / "out.bin") as out:
        out.write(b"new")
    assert all(path.exists() for path in keep)
    assert (tmp_path / ".out.bin.dir.tmp").is_dir()


def test_the_module_imports_nothing_from_scopeops():
    tree = ast.parse(pathlib.Path(atomicfile.__file__).read_text())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names]
    imported += [node.module or "" for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)]
    assert imported and not any(name.startswith("scopeops") for name in imported)
