"""tools/caffe2_tests.py runs test files written for Caffe2 with ``caffe2`` mapped onto
scopeops.caffe2 (docs/caffe2.md, "Running Caffe2's tests, and yours")."""

import os
import subprocess
import sys
import textwrap

from support import PACKAGE_PARENT, TESTS_DIR

HARNESS = os.path.join(os.path.dirname(TESTS_DIR), "tools", "caffe2_tests.py")


def run_harness(*args, cwd):
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    return subprocess.run([sys.executable, HARNESS, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_own_files_run_against_scopeops_caffe2_and_are_counted(tmp_path):
    mine = tmp_path / "ported_test.py"
    mine.write_text(textwrap.dedent("""
        import numpy as np
        import caffe2.python.core
        from caffe2.python import core, workspace

        def test_the_alias_is_scopeops_caffe2():
            import scopeops.caffe2.python.core as compat
            assert core is compat and caffe2.python.core is compat

        def test_a_gradient_runs():
            net = core.Net("ported")
            y = net.Relu(net.AddExternalInput("x"), "y")
            grads = net.AddGradientOperators([y])
            workspace.FeedBlob("x", np.array([-1.0, 2.0], np.float32))
            workspace.RunNetOnce(net)
            assert workspace.FetchBlob(grads["x"]).tolist() == [0.0, 1.0]

        def test_that_fails():
            assert core.Net("n").Name() == "something else"
    """))
    done = run_harness("--files", str(mine), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    row = [line.split() for line in done.stdout.splitlines()
           if line.startswith("ported_test.py ")][-1]           # the table's row
    assert row[1:4] == ["2", "/", "3"] and row[4] == "1"      # passed / run, failed
    assert list(tmp_path.iterdir()) == [mine]                   # runs in a temporary copy


def test_files_must_have_different_names_and_something_must_be_given(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "same_test.py").write_text("def test_nothing():\n    pass\n")
    clash = run_harness("--files", str(tmp_path / "a" / "same_test.py"),
                        str(tmp_path / "b" / "same_test.py"), cwd=tmp_path)
    assert clash.returncode != 0 and "same_test.py" in clash.stderr
    nothing = run_harness(cwd=tmp_path)
    assert nothing.returncode == 2 and "--files" in nothing.stderr
