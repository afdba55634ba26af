"""Progress (scopeops.progress, docs/getting-started.md): a live tqdm bar in a terminal, a
few plain lines through a pipe, nothing when quiet; in the demo, `scopeops bench` and
opt-in micro-batch accumulation."""

import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios

import numpy as np
import pytest
from support import PACKAGE_PARENT, TESTS_DIR

import scopeops as so
from scopeops.progress import LINES, Progress


def progress_lines(text, what):
    return [line for line in text.splitlines() if line.lstrip().startswith(what + ":")]


# -- the class --------------------------------------------------------------------------


def test_through_a_pipe_a_long_loop_writes_a_line_per_quarter():
    stream = io.StringIO()
    with Progress(total=2000, desc="training", unit="step", file=stream) as bar:
        for _ in range(2000):
            bar.set_postfix(loss="0.5", refresh=False)
            bar.update()
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == LINES == 4
    for line, (percent, done) in zip(lines, [(25, 500), (50, 1000), (75, 1500), (100, 2000)],
                                     strict=True):
        assert line.startswith(f"training: {percent:3d}% {done}/2000 [")
        assert "loss=0.5" in line


def test_an_iterable_with_a_length_gives_its_total():
    stream = io.StringIO()
    assert list(Progress(range(8), desc="cases", file=stream)) == list(range(8))
    assert [line.split("% ")[1].split(" ")[0] for line in stream.getvalue().splitlines()] == \
        ["2/8", "4/8", "6/8", "8/8"]


def test_a_short_loop_writes_a_line_per_step_at_most():
    stream = io.StringIO()
    for _ in Progress(range(2), desc="two", file=stream):
        pass
    assert len(stream.getvalue().splitlines()) == 2


def test_a_loop_stopped_between_quarters_says_where_it_stopped():
    stream = io.StringIO()
    bar = Progress(total=100, desc="stopped", file=stream)
    bar.update(10)
    bar.close()
    assert stream.getvalue() == stream.getvalue().splitlines()[0] + "\n"
    assert " 10/100 " in stream.getvalue()


def test_disabled_progress_writes_nothing():
    stream = io.StringIO()
    with Progress(total=50, desc="quiet", file=stream, enabled=False) as bar:
        bar.update(50)
    assert stream.getvalue() == ""


LIVE_BAR = """
import sys, time
from scopeops.progress import Progress
with Progress(total=40, desc="live", mininterval=0) as bar:
    for _ in range(40):
        time.sleep(0.005)
        bar.update()
"""


def run_on_a_terminal(args, columns=None, cwd=None):
    """Run ``args`` with stderr on a pseudo-terminal (stdout a pipe); returns
    (exit status, what the terminal showed, stdout)."""
    controller, terminal = pty.openpty()
    if columns is not None:
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([PACKAGE_PARENT, TESTS_DIR]))
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=terminal, env=env, cwd=cwd or PACKAGE_PARENT)
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:          # the terminal closed: the process is done with it
            break
        if not chunk:
            break
        shown += chunk
    stdout = process.stdout.read()
    process.wait(timeout=300)
    os.close(controller)
    return process.returncode, shown.decode("utf-8", "replace"), stdout.decode()


@pytest.mark.parametrize("columns", [100, None])   # None: a terminal that reports no size
def test_in_a_terminal_the_bar_is_redrawn_in_place(columns):
    status, shown, _ = run_on_a_terminal([sys.executable, "-c", LIVE_BAR], columns)
    assert status == 0, shown
    assert shown.count("\r") > LINES + 1                   # redrawn, more often than in a log
    assert "live: 100%" in shown and "40/40" in shown
    assert shown.rstrip("\r\n").count("\n") == 0           # all on one line, until the end


# -- the demo ---------------------------------------------------------------------------


def run_scopeops(*args, cwd):
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    return subprocess.run([sys.executable, "-m", "scopeops", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=600)


def test_the_demo_through_a_pipe_prints_a_few_plain_lines(tmp_path):
    result = run_scopeops("demo", "--steps", "200", "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "\r" not in result.stdout
    lines = progress_lines(result.stderr, "training")
    assert len(lines) == LINES
    assert "100% 200/200" in lines[-1] and "loss=" in lines[-1]
    assert len(result.stderr.splitlines()) == LINES        # nothing else on stderr
    assert max(len(line) for line in result.stderr.splitlines()) < 120


def test_the_demo_with_quiet_prints_no_progress(tmp_path):
    result = run_scopeops("demo", "--steps", "30", "--quiet", "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "held-out R^2 after training" in result.stdout   # the results still print


def test_the_demo_in_a_terminal_shows_a_live_bar(tmp_path):
    status, shown, stdout = run_on_a_terminal(
        [sys.executable, "-m", "scopeops", "demo", "--steps", "120", "--out", "out"], 100,
        cwd=tmp_path)
    assert status == 0, shown
    # A terminal turns each newline into "\r\n"; a redraw in place is a bare "\r". However
    # fast the demo runs, tqdm draws the bar when it starts and again when it ends.
    redraws = shown.replace("\r\n", "\n").count("\r")
    assert redraws >= 2 and "120/120" in shown
    assert "held-out R^2" in stdout


# -- scopeops bench ---------------------------------------------------------------------


def test_bench_shows_progress_over_cases_on_stderr_through_a_pipe(tmp_path):
    result = run_scopeops("bench", "--quick", "--only", "C4,C7", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr
    lines = progress_lines(result.stderr, "measuring")
    assert [line.split("% ")[1].split(" ")[0] for line in lines] == ["1/2", "2/2"]
    assert "measuring" not in result.stdout                # the table stays clean


def test_bench_with_quiet_shows_no_progress(tmp_path):
    result = run_scopeops("bench", "--quick", "--only", "C7", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and "C7" in result.stdout


# -- accumulate_microbatches ------------------------------------------------------------


def training_setup():
    net = so.Net("train")
    net.FC(["X", "W", "b"], ["h"])
    net.SquaredL2Distance(["h", "Y"], ["dist"])
    net.AveragedLoss(["dist"], ["loss"])
    so.add_gradient_ops(net, ["loss"])
    rng = np.random.default_rng(0)
    ws = so.Workspace()
    ws["W"] = rng.standard_normal((2, 3))
    ws["b"] = np.zeros(2)
    batch = {"X": rng.standard_normal((16, 3)), "Y": rng.standard_normal((16, 2))}
    return net, ws, batch


def test_accumulation_is_silent_by_default(capfd):
    net, ws, batch = training_setup()
    so.accumulate_microbatches(net, ws, batch, 8, ["W", "b"], "loss")
    assert capfd.readouterr() == ("", "")


def test_accumulation_with_progress_shows_it_on_stderr(capfd):
    net, ws, batch = training_setup()
    so.accumulate_microbatches(net, ws, batch, 8, ["W", "b"], "loss", progress=True)
    out, err = capfd.readouterr()
    assert out == "" and "\r" not in err
    lines = progress_lines(err, "micro-batches")
    assert len(lines) == LINES and "8/8" in lines[-1]


def test_accumulation_refuses_a_progress_that_is_not_a_bool_before_changing_anything():
    net, ws, batch = training_setup()
    with pytest.raises(TypeError, match="progress must be True or False"):
        so.accumulate_microbatches(net, ws, batch, 8, ["W", "b"], "loss", progress=1)
    assert not ws.has_blob("microbatch_scope") and not ws.has_blob("W_grad")
