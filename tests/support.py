"""Helpers shared by the test files: fresh interpreters, the small-stack harness, the
reference lookup rules, a standard Do/FC training net, and building outside modules that
cimport scopeops' C-level API."""

import importlib
import os
import subprocess
import sys
import textwrap

import scopeops as so

# The directory holding the scopeops package under test (installed or built in place):
# subprocesses put it first on their path, so they test the same build.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(so.__file__)))
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def run_python(script, timeout=60):
    """Run ``script`` (dedented) in a fresh interpreter importing this scopeops.

    A hang past ``timeout`` comes back as exit status -9 with a note on stderr instead of
    raising, so the caller's assertion names it; a crash is a non-zero status too. The
    script can import this module (``from support import ...``).
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([PACKAGE_PARENT, TESTS_DIR]))
    try:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(script)],
                              cwd=PACKAGE_PARENT, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(exc.cmd, -9, str(exc.stdout or ""),
                                           f"hung for more than {timeout} s")


SMALL_STACK_HARNESS = """
import gc, os, sys, threading, traceback
import scopeops as so

def body():
{body}

failed = []

def guarded():
    try:
        body()
    except BaseException:
        traceback.print_exc()
        failed.append(True)

threading.stack_size(1 << 20)
thread = threading.Thread(target=guarded)
thread.start()
thread.join()
sys.exit(1 if failed else 0)
"""


def run_in_small_stack(body, timeout=600):
    """Run ``body`` in a subprocess (a C-stack overflow fails one test, not the run), in a
    thread with a 1 MiB stack (Windows' main-thread default), so that unbounded recursion
    fails deterministically."""
    return run_python(SMALL_STACK_HARNESS.format(
        body=textwrap.indent(textwrap.dedent(body), "    ")), timeout=timeout)


def reference_find(ws, name):
    """Where ``name`` resolves from ``ws`` by the documented rules (docs/workspaces.md),
    computed from the public listings, with no memo: local, then forwarded (dangling: not
    found, no fall-through; a cycle: not found), then shared."""
    seen = set()
    while ws is not None:
        if name in ws.local_blobs():
            return ws.get_blob(name)
        forward = ws.forwarded_blobs().get(name)
        if forward is not None:
            if (id(ws), name) in seen:
                return None
            seen.add((id(ws), name))
            ws, name = forward
            continue
        ws = ws.shared
    return None


def do_fc_training_net(name="train_step"):
    """``h = tanh(x * w)`` inside a Do, ``y = FC(h, W, bias)``, ``loss = mean(y^2)``, and
    its gradient ops; external inputs x, w, W, bias."""
    sub = so.Net("sub")
    sub.Mul(["a", "v"], ["t"])
    sub.Tanh(["t"], ["b"])
    net = so.Net(name)
    net.add_external_inputs("x", "w", "W", "bias")
    net.CreateScope([], ["scope"])
    net.add_op("Do", ["x", "w", "scope"], ["h", "scope"], net=sub,
               inner_blobs=["a", "v", "b"], outer_blobs_idx=[0, 1, 2])
    net.FC(["h", "W", "bias"], ["y"])
    net.Sqr(["y"], ["y2"])
    net.AveragedLoss(["y2"], ["loss"])
    so.add_gradient_ops(net, ["loss"])
    return net


_CLIENT_SETUP_PY = textwrap.dedent(
    """
    import sys
    from Cython.Build import cythonize
    from setuptools import Extension, setup
    module, include = sys.argv.pop(1), sys.argv.pop(1)
    setup(
        ext_modules=cythonize(
            [Extension(module, [module + ".pyx"])],
            include_path=[include],
            compiler_directives={"language_level": 3},
        ),
        script_args=["build_ext", "--inplace", "-q"],
    )
    """
)


def build_cimport_client(tmp_path_factory, module, source):
    """Compile ``source`` as the outside module ``module``, which cimports scopeops'
    shipped .pxd files, and import it: the only honest proof that the C API works."""
    build_dir = tmp_path_factory.mktemp(module)
    (build_dir / f"{module}.pyx").write_text(textwrap.dedent(source))
    (build_dir / "setup.py").write_text(_CLIENT_SETUP_PY)
    result = subprocess.run([sys.executable, "setup.py", module, PACKAGE_PARENT],
                            cwd=build_dir, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(build_dir))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(build_dir))


def six_step_model(steps=6, hidden=16, features=4, rows=32, microbatches=4):
    """Issue 15's model: an RNN whose ``steps`` time steps each run as a ``Do`` on a stack,
    parameters from a variable scope, gradients, and one ``accumulate_microbatches`` call.
    Returns (the parameter workspace after the call, the training net)."""
    import numpy as np

    root = so.Workspace()
    with so.variable_scope("model", workspace=root,
                           initializer=so.initializers.glorot_uniform(seed=0)):
        w = so.get_variable("W", (hidden, features))
        u = so.get_variable("U", (hidden, hidden))
        b = so.get_variable("b", (hidden,), initializer=so.initializers.zeros())
        v = so.get_variable("V", (1, hidden))
        c = so.get_variable("c", (1,), initializer=so.initializers.zeros())
    step = so.Net("step")
    step.FC(["x", "W", "b"], ["a"])
    step.FC(["h", "U", "b"], ["r"])
    step.Add(["a", "r"], ["s"])
    step.Tanh(["s"], ["h_next"])
    net = so.Net("train")
    net.CreateScope([], ["steps"])
    for t in range(steps):
        net.Do([f"x{t}", f"h{t}", w, b, u, "steps"], [f"h{t + 1}", "steps"], net=step,
               inner_blobs=["x", "h", "W", "b", "U", "h_next"], outer_blobs_idx=list(range(6)))
    net.FC([f"h{steps}", v, c], ["y"])
    net.SquaredL2Distance(["y", "target"], ["d"])
    net.AveragedLoss(["d"], ["loss"])
    so.add_gradient_ops(net, ["loss"])
    rng = np.random.default_rng(0)
    batch = {f"x{t}": rng.standard_normal((rows, features)).astype(np.float32)
             for t in range(steps)}
    batch["h0"] = np.zeros((rows, hidden), np.float32)
    batch["target"] = rng.standard_normal((rows, 1)).astype(np.float32)
    so.accumulate_microbatches(net, root, batch, microbatches, [str(p) for p in (w, u, b, v, c)],
                               "loss")
    return root, net
