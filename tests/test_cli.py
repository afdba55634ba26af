"""The scopeops command: demo (the main job), bench and inspect."""

import importlib.metadata
import io
import os
import pathlib
import re
import struct
import subprocess
import sys
from xml.etree import ElementTree

import numpy as np
import pytest
from support import PACKAGE_PARENT

import scopeops as so
from scopeops import cli
from scopeops.demo import DemoConfig, run_demo


def _run(*args, cwd=None):
    # `python -m` puts the working directory first on sys.path: run where the package
    # under test is the only scopeops in sight (never a source checkout's bare sources).
    env = {**os.environ, "PYTHONPATH": PACKAGE_PARENT}
    return subprocess.run([sys.executable, "-m", "scopeops", *args], capture_output=True,
                          text=True, cwd=cwd or PACKAGE_PARENT, env=env, timeout=300)


def test_python_dash_m_scopeops_prints_help_with_the_three_commands():
    result = _run("--help")
    assert result.returncode == 0
    for command in ("demo", "bench", "inspect"):
        assert command in result.stdout


def test_the_console_script_is_declared_and_resolves_to_cli_main():
    scripts = [ep for ep in importlib.metadata.entry_points(group="console_scripts")
               if ep.name == "scopeops"]
    if scripts:
        assert scripts[0].load() is cli.main
    else:  # an in-place build: the declaration is in pyproject.toml
        pyproject = pathlib.Path(PACKAGE_PARENT, "pyproject.toml").read_text()
        assert re.search(r'^scopeops = "scopeops\.cli:main"$', pyproject, re.M)


def test_no_command_is_a_usage_error():
    result = _run()
    assert result.returncode == 2
    assert "usage" in result.stderr


def test_demo_trains_writes_a_plot_and_a_picture_and_reports_quality(tmp_path):
    out = io.StringIO()
    result = run_demo(DemoConfig(steps=150, seed=3, out=str(tmp_path / "demo")), out=out,
                      err=io.StringIO())
    assert result.losses[-1] < result.losses[0] / 5          # the loss falls
    assert result.r2_after > result.r2_before and result.r2_after > 0.5
    assert "held-out R^2 after training" in out.getvalue()
    assert (tmp_path / "demo" / "workspace_tree.txt").read_text().startswith("root")
    if result.plot is not None:
        assert (tmp_path / "demo" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert 'pip install "scopeops[demo]"' in out.getvalue()
    if result.picture is not None:
        assert b"<svg" in (tmp_path / "demo" / "workspace.svg").read_bytes()
        assert result.picture_png == str(tmp_path / "demo" / "workspace.png")
        assert (tmp_path / "demo" / "workspace.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "Graphviz" in out.getvalue() and "matplotlib" in out.getvalue()


def png_size(path):
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path}: not a PNG"
    return struct.unpack(">II", data[16:24])


def test_demo_on_a_machine_without_graphviz_draws_both_pictures_from_a_pipe(tmp_path):
    # The README's first command on a fresh machine: no dot on PATH, output to a pipe.
    (tmp_path / "bin").mkdir()
    env = {**os.environ, "PYTHONPATH": PACKAGE_PARENT, "PATH": str(tmp_path / "bin")}
    result = subprocess.run([sys.executable, "-m", "scopeops", "demo", "--steps", "40"],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "scopeops-demo"
    assert png_size(out / "loss.png") == (600, 350)
    width, height = png_size(out / "workspace.png")
    assert 600 < width <= 2400 and 150 < height <= 1200       # readable: docs/pictures.md
    svg = ElementTree.parse(out / "workspace.svg").getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    assert "time_scope[0..7]: 8 alike Workspaces" in "".join(svg.itertext())
    assert f"wrote {os.path.join('scopeops-demo', 'workspace.svg')} and " in result.stdout
    assert "\r" not in result.stderr and len(result.stderr.splitlines()) <= 4


def test_demo_without_matplotlib_or_graphviz_says_what_to_install(tmp_path):
    (tmp_path / "bin").mkdir()
    script = ("import sys; sys.modules['matplotlib'] = None\n"
              "from scopeops.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONPATH": PACKAGE_PARENT, "PATH": str(tmp_path / "bin")}
    result = subprocess.run([sys.executable, "-c", script, "demo", "--steps", "5", "--quiet"],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert 'loss plot skipped: matplotlib is not installed (pip install "scopeops[demo]")' \
        in result.stdout
    assert "workspace picture skipped" in result.stdout and "Graphviz" in result.stdout
    assert sorted(p.name for p in (tmp_path / "scopeops-demo").iterdir()) == [
        "workspace_tree.txt"]


def test_demo_is_reproducible_with_a_seed(tmp_path):
    runs = [run_demo(DemoConfig(steps=20, seed=7, out=str(tmp_path / f"d{i}")),
                     out=io.StringIO(), err=io.StringIO()).losses for i in range(2)]
    assert runs[0] == runs[1]


def test_demo_command_line_options_reach_the_pipeline(tmp_path):
    result = _run("demo", "--steps", "12", "--seed", "1", "--out", "results", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "12/12" in result.stderr                        # the progress's last line
    assert (tmp_path / "results" / "workspace_tree.txt").exists()


def test_demo_refuses_micro_batches_that_do_not_divide_the_batch(tmp_path):
    result = _run("demo", "--steps", "1", "--micro-batches", "5", "--out", "r", cwd=tmp_path)
    assert result.returncode == 2
    assert "micro_batches" in result.stderr


def test_bench_prints_the_ratio_table_for_selected_cases():
    result = _run("bench", "--quick", "--only", "C4")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^C4 .*yes", result.stdout, re.M)


def test_inspect_shows_a_checkpoint_as_a_tree(tmp_path):
    ws = so.Workspace()
    ws.feed_blob("weights", np.zeros((3, 4), np.float32))
    ws.feed_blob("name", "run-1")
    so.save_workspace(ws, tmp_path / "ckpt.scopeops")
    result = _run("inspect", str(tmp_path / "ckpt.scopeops"))
    assert result.returncode == 0, result.stderr
    assert re.search(r"weights: tensor float32 shape \(3, 4\), 48 bytes", result.stdout)
    assert "name: str" in result.stdout


def test_inspect_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    result = _run("inspect", str(tmp_path / "notes.txt"))
    assert result.returncode == 1
    assert "scopeops inspect:" in result.stderr and "Traceback" not in result.stderr


def test_inspect_reports_a_missing_file_without_a_traceback(tmp_path):
    result = _run("inspect", str(tmp_path / "absent"))
    assert result.returncode == 1
    assert "cannot read" in result.stderr and "Traceback" not in result.stderr


def _run_inspect(path, encoding):
    # stdout and stderr are pipes here; PYTHONIOENCODING sets what they can encode.
    env = {**os.environ, "PYTHONPATH": PACKAGE_PARENT, "PYTHONIOENCODING": encoding}
    return subprocess.run([sys.executable, "-m", "scopeops", "inspect", str(path)],
                          capture_output=True, cwd=PACKAGE_PARENT, env=env, timeout=300)


ENCODINGS = pytest.mark.parametrize("encoding", ["utf-8", "ascii"])


@ENCODINGS
def test_inspect_escapes_a_lone_surrogate_in_a_blob_name(tmp_path, encoding):
    # Issue 14: this name round-trips through save and load, and used to kill inspect.
    ws = so.Workspace()
    ws.feed_blob("w\ud800", np.zeros(2))
    so.save_workspace(ws, tmp_path / "c.safetensors")
    result = _run_inspect(tmp_path / "c.safetensors", encoding)
    assert result.returncode == 0, result.stderr
    assert b"Traceback" not in result.stderr
    assert b"w\\ud800: tensor float64 shape (2,), 16 bytes" in result.stdout


@ENCODINGS
def test_inspect_never_sends_control_characters_or_escape_sequences_to_the_terminal(
        tmp_path, encoding):
    ws = so.Workspace()
    for name in ("\x1b[2J\x1b]0;owned\x07", "bidi\u202eevil", "tab\there", "back\\slash"):
        ws.feed_blob(name, 1)
    so.save_workspace(ws, tmp_path / "c.safetensors")
    result = _run_inspect(tmp_path / "c.safetensors", encoding)
    assert result.returncode == 0, result.stderr
    assert all(byte >= 0x20 or byte == 0x0A for byte in result.stdout)
    out = result.stdout.decode(encoding)
    for escaped in ("\\x1b[2J\\x1b]0;owned\\x07", "bidi\\u202eevil", "tab\\x09here",
                    "back\\\\slash"):
        assert f"{escaped}: int, 1 bytes" in out


@ENCODINGS
def test_inspect_prints_printable_names_the_output_can_encode_and_escapes_the_rest(
        tmp_path, encoding):
    ws = so.Workspace()
    ws.feed_blob("naïve", np.zeros(1, np.float16))
    with so.variable_scope("m", workspace=ws):
        so.get_variable("w", (2,))
        so.get_variable("n", (), dtype="int64", trainable=False)
    so.save_workspace(ws, tmp_path / "c.safetensors")
    result = _run_inspect(tmp_path / "c.safetensors", encoding)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode(encoding)
    assert ("naïve" if encoding == "utf-8" else "na\\xefve") + ": tensor float16" in out
    assert "m/w: tensor float32 shape (2,), 8 bytes (variable)" in out
    assert "m/n: tensor int64 shape (), 8 bytes (variable, not trainable)" in out
    assert out.splitlines()[-2].startswith("└── " if encoding == "utf-8" else "`-- ")


@ENCODINGS
def test_inspect_escapes_file_controlled_text_in_its_error_messages(tmp_path, encoding):
    name = "\x1b[31m\ud800é"
    header = b'{"%s":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"%s":{}}' % (
        (name.encode("utf-8", "backslashreplace"),) * 2)
    header = header.replace(b"\x1b", b"\\u001b")
    (tmp_path / "bad.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"x")
    result = _run_inspect(tmp_path / "bad.safetensors", encoding)
    assert result.returncode == 1
    assert b"Traceback" not in result.stderr and b"scopeops inspect:" in result.stderr
    assert b"\x1b" not in result.stderr and b"repeats the key" in result.stderr


def test_inspect_shows_a_file_written_by_safetensors(tmp_path):
    import safetensors.numpy
    safetensors.numpy.save_file({"b": np.ones(3, np.int8), "a": np.zeros((2, 2))},
                                tmp_path / "f.safetensors")
    result = _run("inspect", str(tmp_path / "f.safetensors"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:3] == ["├── a: tensor float64 shape (2, 2), 32 bytes",
                                               "└── b: tensor int8 shape (3,), 3 bytes"]


@pytest.mark.parametrize("make", [
    lambda p: p.mkdir(),
    lambda p: p.write_bytes(b""),
    lambda p: p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{"),
], ids=["directory", "empty", "truncated"])
def test_inspect_reports_a_file_it_cannot_read_with_status_1_and_no_traceback(tmp_path, make):
    make(tmp_path / "target")
    result = _run("inspect", str(tmp_path / "target"))
    assert result.returncode == 1
    assert result.stderr.startswith("scopeops inspect: ") and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_inspect_escapes_an_undecodable_path(tmp_path):
    path = os.fsencode(tmp_path) + b"/caf\xe9"
    env = {**os.environ, "PYTHONPATH": PACKAGE_PARENT, "PYTHONIOENCODING": "ascii"}
    result = subprocess.run([sys.executable, "-m", "scopeops", "inspect", path],
                            capture_output=True, cwd=PACKAGE_PARENT, env=env, timeout=300)
    assert result.returncode == 1 and b"Traceback" not in result.stderr
    assert b"caf\\udce9: No such file or directory" in result.stderr


def test_bench_options_pass_through_to_scopeops_bench():
    result = _run("bench", "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: scopeops bench")
    for option in ("--quick", "--only", "--check", "--json FILE", "--quiet", "--list"):
        assert option in result.stdout
    listed = _run("bench", "--list", "--only", "C3")
    assert listed.returncode == 0 and listed.stdout.startswith("C3 ")
    assert _run("demo", "--json", "x").returncode == 2      # only bench takes bench's options


def test_demo_help_offers_quiet():
    result = _run("demo", "--help")
    assert result.returncode == 0 and "--quiet" in result.stdout
