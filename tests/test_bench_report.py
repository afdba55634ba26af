"""`scopeops bench`'s table (docs/performance.md): 100 columns wide, a legend for a miss,
units where the target has units, and `--json FILE` with every figure and raw value.
Timings are never asserted here: only the shape of what is printed and written."""

import datetime
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from support import PACKAGE_PARENT

import scopeops as so
from scopeops.bench import report
from scopeops.bench.registry import Case, Row

WIDTH = 100


def run_bench(*args, cwd):
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    return subprocess.run([sys.executable, "-m", "scopeops", "bench", *args],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def fake_case(case_id="Z1", ok=False, rows=None):
    rows = rows or [Row("a fake measurement of something", "12.0 ns", "dict.get 10.0 ns",
                        "1.20x", "<= 1.1x", ok)]
    return Case(case_id, "a fake case", "<= 1.1x",
                lambda quick: {"rows": rows, "fake_ns": 12.0, "ok": ok})


# -- the table --------------------------------------------------------------------------


def test_a_real_quick_table_fits_100_columns(tmp_path):
    result = run_bench("--quick", "--only", "C4,C8,T1", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= WIDTH, "\n".join(lines)
    assert re.search(r"^C4 .*(yes|NO)$", result.stdout, re.M)
    # The reference stands under its figure: "vs np.copyto ..." on the line below C8's.
    c8 = next(i for i, line in enumerate(lines) if line.startswith("C8 "))
    assert "vs np.copyto" in lines[c8 + 1]


def test_long_cells_wrap_within_the_width_and_lose_no_word():
    words = "an exceptionally long description of what this benchmark row measures in detail"
    row = Row(words, "10.40 ms (6.5 GB/s)", "np.add(d, 1.0*x, out=d) 316.09 us per call",
              "0.59x faster", ">= 1.3x (2 free cores) on a quiet machine", True)
    table = report.format_table([(fake_case(rows=[row]), {"rows": [row]})])
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= WIDTH
    assert lines[0].split() == ["id", "what", "figure", "ratio", "target", "ok"]
    assert lines[3].startswith("Z1  ") and lines[3].endswith("yes")
    flat = " ".join(" ".join(lines[3:]).split())
    for text in (words, ">= 1.3x (2 free cores) on a quiet machine", "316.09 us"):
        for word in text.split():
            assert word in flat
    assert not any(line.rstrip().endswith(("316.09", "6.5")) for line in lines)  # unit kept


def test_the_table_fits_other_widths_too():
    row = Row("x " * 40, "1.0 ns", "ref " * 10, "1.0x", "<= 2x", None)
    for width in (80, 100, 120):
        table = report.format_table([(fake_case(rows=[row]), {"rows": [row]})], width=width)
        assert max(len(line) for line in table.splitlines()) <= width


def test_a_miss_is_explained_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(report, "CASES", [fake_case(ok=False)])
    assert report.main(["--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2] == "1 cases in " + out[-2].split(" cases in ")[1]
    assert "missed: Z1" in out[-2]
    assert out[-1] == report.LEGEND and len(report.LEGEND) <= WIDTH
    assert "without --quick" in report.LEGEND and "3 runs" in report.LEGEND
    assert report.main(["--quiet", "--check"]) == 1


def test_no_legend_when_every_target_is_met(monkeypatch, capsys):
    monkeypatch.setattr(report, "CASES", [fake_case(ok=True)])
    assert report.main(["--quiet", "--check"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].endswith("every target met") and report.LEGEND not in out


def test_c3_compares_nanoseconds_with_its_nanosecond_target(tmp_path):
    result = run_bench("--quick", "--only", "C3", "--quiet", "--json", "c3.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    row = json.loads((tmp_path / "c3.json").read_text())["cases"][0]["rows"][0]
    assert row["target"] == "<= 3 ns"
    assert re.fullmatch(r"\d+(\.\d+)? ns \(\d+(\.\d+)?x\)", row["ratio"]), row["ratio"]
    assert row["ratio"].startswith(row["figure"])          # the figure compared, in ns
    line = next(line for line in result.stdout.splitlines() if line.startswith("C3 "))
    assert f"{row['ratio']}  <= 3 ns" in line


# -- --json -----------------------------------------------------------------------------


def test_json_holds_every_row_raw_value_version_and_machine(tmp_path):
    (tmp_path / "out").mkdir()
    result = run_bench("--quick", "--only", "C4", "--quiet", "--json", "out/bench.json",
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "wrote out/bench.json" in result.stdout
    document = json.loads((tmp_path / "out" / "bench.json").read_text())

    assert document["format"] == report.JSON_FORMAT == "scopeops-bench/1"
    assert document["mode"] == "quick" and document["seconds"] > 0
    stamp = datetime.datetime.fromisoformat(document["timestamp"])
    assert stamp.tzinfo is not None
    assert abs((datetime.datetime.now(datetime.timezone.utc) - stamp).total_seconds()) < 600
    assert document["versions"]["scopeops"] == so.__version__
    assert document["versions"]["numpy"] == np.__version__
    assert document["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    machine = document["machine"]
    assert machine["cpu_count"] == os.cpu_count() and machine["platform"]

    [case] = document["cases"]
    assert case["id"] == "C4" and case["target"] and case["what"]
    assert case["verdict"] in ("yes", "NO") and case["ok"] in (True, False)
    assert document["missed"] == ([] if case["ok"] else ["C4"])
    printed = [line for line in result.stdout.splitlines() if line.startswith("C4 ")]
    assert len(case["rows"]) == len(printed) == 2
    for row, line in zip(case["rows"], printed, strict=True):
        assert set(row) == {"what", "figure", "reference", "ratio", "target", "ok", "verdict"}
        assert line.endswith(row["verdict"]) and row["figure"] in line
        assert {"yes": True, "NO": False}[row["verdict"]] is row["ok"]
    raw = case["raw"]
    for key in ("clear_depth1_ns", "clear_depth1024_ns", "empty_cdef_clear_ns", "ratio_depth",
                "ratio_empty"):
        assert isinstance(raw[key], float) and math.isfinite(raw[key]) and raw[key] > 0
    assert math.isclose(raw["ratio_depth"], raw["clear_depth1024_ns"] / raw["clear_depth1_ns"])


def test_json_turns_numpy_values_and_infinities_into_plain_json(monkeypatch, tmp_path, capsys):
    rows = [Row("r", "1 ns", "-", "-", "report", None)]
    case = Case("Z2", "numpy values", "report",
                lambda quick: {"rows": rows, "count": np.int64(3), "ratio": np.float32(0.5),
                               "never": float("inf"), "shape": (2, 3), "ok": None})
    monkeypatch.setattr(report, "CASES", [case])
    assert report.main(["--quiet", "--json", str(tmp_path / "z.json")]) == 0
    raw = json.loads((tmp_path / "z.json").read_text())["cases"][0]["raw"]
    assert raw == {"count": 3, "ratio": 0.5, "never": None, "shape": [2, 3]}


def test_a_case_that_raises_is_in_the_json_with_its_error(monkeypatch, tmp_path, capsys):
    def broken(quick):
        raise RuntimeError("fixture exploded")

    monkeypatch.setattr(report, "CASES", [Case("Z3", "broken", "<= 1x", broken)])
    assert report.main(["--quiet", "--json", str(tmp_path / "z.json")]) == 0
    case = json.loads((tmp_path / "z.json").read_text())["cases"][0]
    assert case["ok"] is False and case["error"] == "RuntimeError: fixture exploded"


@pytest.mark.parametrize("target", ["missing-dir/out.json", "."])
def test_json_to_a_place_that_cannot_be_written_is_refused_before_measuring(tmp_path, target):
    result = run_bench("--quick", "--only", "C4", "--json", target, cwd=tmp_path)
    assert result.returncode == 2
    assert "not a file in an existing directory" in result.stderr
    assert "measuring" not in result.stderr                # nothing was measured


# -- benchmarks/history.py --------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HISTORY = os.path.join(ROOT, "benchmarks", "history.py")
in_a_git_checkout = pytest.mark.skipif(
    not os.path.exists(os.path.join(ROOT, ".git")) or not os.path.exists(HISTORY),
    reason="needs the source checkout (git) that benchmarks/history.py measures")


def git(*args):
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()


@in_a_git_checkout
def test_history_runs_asv_over_the_last_n_commits_and_publishes(tmp_path):
    result = subprocess.run([sys.executable, HISTORY, "2", "--quick", "--dry-run"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    branch = git("rev-parse", "--abbrev-ref", "HEAD")
    commits = git("rev-list", "--max-count=2", "HEAD").split()
    assert lines[0] == f"{len(commits)} commit(s) of {branch}: " + " ".join(
        c[:8] for c in commits)
    steps = [line.split(" -m asv ")[1].split()[0] for line in lines[1:]]
    assert steps == ["machine", "run", "publish"]
    run = lines[2]
    assert "--skip-existing-commits" in run and "--quick" in run and "HASHFILE:" in run


@in_a_git_checkout
def test_history_config_builds_from_source_with_absolute_paths_and_this_branch():
    import importlib.util

    spec = importlib.util.spec_from_file_location("history", HISTORY)
    history = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(history)
    config = history.history_config("some-branch")
    with open(os.path.join(ROOT, "benchmarks", "asv.conf.json")) as handle:
        original = json.load(handle)
    assert config["repo"] == ROOT and config["branches"] == ["some-branch"]
    for key in ("benchmark_dir", "env_dir", "results_dir", "html_dir"):
        assert config[key] == os.path.join(ROOT, "benchmarks", original[key])
    assert config["build_command"] == original["build_command"]      # built from source
    assert "pip wheel" in " ".join(config["build_command"])
    assert history.history_config(None)["branches"] == original["branches"]


@in_a_git_checkout
def test_history_refuses_no_commits(tmp_path):
    result = subprocess.run([sys.executable, HISTORY, "0", "--dry-run"], capture_output=True,
                            text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "N must be at least 1" in result.stderr


def test_traced_growth_does_not_count_objects_each_call_replaces_as_growth():
    from scopeops.bench.timing import traced_growth

    held = {}

    def replace():
        held["x"] = bytearray(200_000)   # the previous one is freed: the live set is flat

    def keep():
        held.setdefault("kept", []).append(bytearray(2_000))

    assert traced_growth(replace, (), 100)[0] < 1024
    assert traced_growth(keep, (), 100)[0] >= 100 * 2_000   # real growth is still seen
