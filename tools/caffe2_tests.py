#!/usr/bin/env python
"""Run Caffe2's own Python tests for the features scopeops.caffe2 covers, against it.

Usage::

    python tools/caffe2_tests.py /path/to/caffe2-checkout [--keep] [-- more pytest args]
    python tools/caffe2_tests.py --files my_test.py ... [--keep] [-- more pytest args]

``--files`` runs your own test files written for Caffe2 (``from caffe2.python import
core``...) the same way, with or without the checkout's six files.

The checkout is Caffe2's repository at its last commit before the move into PyTorch
(``facebookarchive/caffe2`` at ``4b439a9c8bcb``); it is never fetched by this script or
by CI (tests/ never needs it). The script

1. copies the six reference test files (``caffe2/python/{workspace,scope,core,
   core_gradients,gradient_check}_test.py`` and ``caffe2/python/test/do_op_test.py``) into
   a fresh temporary directory, flat, so that pytest imports them as top-level modules
   rather than as part of Caffe2's own ``caffe2`` package;
2. writes a ``conftest.py`` there that installs a ``sys.meta_path`` finder mapping
   ``caffe2`` and every ``caffe2.*`` module onto ``scopeops.caffe2`` and
   ``scopeops.caffe2.*`` (the very same module objects, so classes and registries are
   shared), and loads a hypothesis profile (10 examples, no deadline, no example
   database, derandomised);
3. runs pytest there with the out-of-scope tests deselected (:data:`OUT_OF_SCOPE`, each
   with its reason), and prints passed / in-scope counts per file.

Shims for Python and numpy drift inside Caffe2's test files themselves (not behaviour
of scopeops.caffe2): ``numpy.object`` (removed in numpy 1.24; ``testTensorAccess``
uses it) is restored as ``object``; ``unittest.TestCase.assertEquals`` (removed in
Python 3.12) is aliased to ``assertEqual``; and ``future.utils`` (imported by
``core_gradients_test`` for a name it never uses) is provided when the ``future``
package is not installed.

This script contains none of Caffe2's code: it copies the test files from the checkout
you give it at run time.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

TEST_FILES = [
    "caffe2/python/workspace_test.py",
    "caffe2/python/scope_test.py",
    "caffe2/python/core_test.py",
    "caffe2/python/core_gradients_test.py",
    "caffe2/python/test/do_op_test.py",
    "caffe2/python/gradient_check_test.py",
]

#: Tests outside issue 10's scope (GPU/MKL, plans and execution steps, the predictor,
#: transforms, immediate mode, LRN, blob serialization, cost inference, sparse ops).
OUT_OF_SCOPE = {
    "workspace_test.py::TestWorkspace::testGetOperatorCost": "cost inference of a Conv op",
    "workspace_test.py::TestWorkspace::testRunPlan": "plans",
    "workspace_test.py::TestWorkspace::testConstructPlanFromSteps": "execution steps",
    "workspace_test.py::TestWorkspaceGPU": "GPU",
    "workspace_test.py::TestWorkspaceMKLDNN": "MKL",
    "workspace_test.py::TestImmedibate": "immediate mode",
    "workspace_test.py::TestCWorkspace::test_plan_run": "plans",
    "workspace_test.py::TestCWorkspace::test_array_serde": "blob serialization",
    "workspace_test.py::TestCWorkspace::test_string_serde": "blob serialization",
    "workspace_test.py::TestPredictor": "the predictor",
    "workspace_test.py::TestTransform": "transforms",
    "core_test.py::TestExtractPredictorNet": "the predictor",
    "core_test.py::TestCreatePlan": "plans and tasks",
    "core_test.py::TestInferDevice": "GPU device inference and cross-device copies",
    "core_gradients_test.py::TestSparseGradientsAccumulation": "sparse operators",
    "gradient_check_test.py::TestLRN": "LRN",
}

CONFTEST = '''\
"""Written by tools/caffe2_tests.py: run Caffe2's tests against scopeops.caffe2."""

import importlib
import importlib.abc
import importlib.util
import sys
import types
import unittest

import hypothesis
import numpy


class _Caffe2Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """caffe2[.x.y] is scopeops.caffe2[.x.y]: the same module object."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "caffe2" and not fullname.startswith("caffe2."):
            return None
        real = "scopeops." + fullname
        try:
            if importlib.util.find_spec(real) is None:
                return None
        except ModuleNotFoundError:
            return None
        module = importlib.import_module(real)
        return importlib.util.spec_from_loader(
            fullname, self, is_package=hasattr(module, "__path__"))

    def create_module(self, spec):
        module = importlib.import_module("scopeops." + spec.name)
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module):
        # The import system stamped the alias spec on the module: give it its own back.
        module.__spec__ = module.__spec__.loader_state


sys.meta_path.insert(0, _Caffe2Alias())
import caffe2.python  # noqa: E402,F401

# Drift inside the reference test files themselves (see the harness docstring).
if "object" not in numpy.__dict__:
    numpy.object = object
if not hasattr(unittest.TestCase, "assertEquals"):
    unittest.TestCase.assertEquals = unittest.TestCase.assertEqual
try:
    import future.utils  # noqa: F401
except ImportError:
    future = types.ModuleType("future")
    future_utils = types.ModuleType("future.utils")
    future_utils.bytes_to_native_str = lambda b, encoding="utf-8": b.decode(encoding)
    future.utils = future_utils
    sys.modules["future"] = future
    sys.modules["future.utils"] = future_utils

hypothesis.settings.register_profile(
    "caffe2-harness", max_examples=10, deadline=None, database=None, derandomize=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow])
hypothesis.settings.load_profile("caffe2-harness")
'''


def copy_tests(checkout: str | None, target: str, own: list[str] = ()) -> list[str]:
    """Copy the reference files of ``checkout`` (if given) and the files ``own`` into
    ``target``, flat, beside the conftest; their names there."""
    sources = [os.path.join(checkout, relative) for relative in TEST_FILES] if checkout else []
    for source in sources:
        if not os.path.isfile(source):
            raise SystemExit(f"{source} not found: is {checkout} a Caffe2 checkout?")
    for source in own:
        if not os.path.isfile(source):
            raise SystemExit(f"{source} not found")
    names = []
    for source in sources + [os.path.abspath(f) for f in own]:
        name = os.path.basename(source)
        if name in names or name == "conftest.py":
            raise SystemExit(f"two test files are named {name}: the files are run side by "
                             f"side, so their names must differ (and not be conftest.py)")
        shutil.copy(source, os.path.join(target, name))
        names.append(name)
    with open(os.path.join(target, "conftest.py"), "w") as f:
        f.write(CONFTEST)
    return names


def count(junit: str, files: list[str]) -> dict[str, collections.Counter[str]]:
    """Outcomes per test file from pytest's JUnit XML."""
    results = {name: collections.Counter() for name in files}
    for case in ET.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "").split(".")[0] + ".py"
        if module not in results:
            continue
        children = {child.tag for child in case}
        if "skipped" in children:
            outcome = "skipped"
        elif "error" in children:
            outcome = "errors"
        elif "failure" in children:
            outcome = "failed"
        else:
            outcome = "passed"
        results[module][outcome] += 1
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("caffe2", nargs="?",
                        help="path of a Caffe2 checkout (at 4b439a9c8bcb)")
    parser.add_argument("--files", nargs="+", default=[], metavar="FILE",
                        help="your own test files written for Caffe2, to run too")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if args.caffe2 is None and not args.files:
        parser.error("give a Caffe2 checkout, --files, or both")
    args.pytest_args = extra
    work = tempfile.mkdtemp(prefix="caffe2-tests-")
    try:
        checkout = os.path.abspath(args.caffe2) if args.caffe2 else None
        files = copy_tests(checkout, work, args.files)
        junit = os.path.join(work, "results.xml")
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "-W", "ignore::DeprecationWarning", "-W", "ignore::RuntimeWarning",
                   f"--junitxml={junit}", "-o", "junit_family=xunit1"]
        for node in OUT_OF_SCOPE:
            command += ["--deselect", node]
        command += args.pytest_args + files
        completed = subprocess.run(command, cwd=work)
        if not os.path.exists(junit):
            print(f"pytest produced no results (exit code {completed.returncode})")
            return 1
        results = count(junit, files)
        print(f"\n{'file':<28} {'passed':>6} / {'in scope':<8} {'failed':>6} {'errors':>6}"
              f" {'skipped':>7}")
        totals: collections.Counter[str] = collections.Counter()
        for name in files:
            c = results[name]
            in_scope = sum(c.values())
            totals.update(c)
            print(f"{name:<28} {c['passed']:>6} / {in_scope:<8} {c['failed']:>6} "
                  f"{c['errors']:>6} {c['skipped']:>7}")
        total = sum(totals.values())
        print(f"{'total':<28} {totals['passed']:>6} / {total:<8} {totals['failed']:>6} "
              f"{totals['errors']:>6} {totals['skipped']:>7}")
        print(f"{totals['passed']} passed, {totals['failed'] + totals['errors']} failed")
        return 0 if completed.returncode in (0, 1) else completed.returncode
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
