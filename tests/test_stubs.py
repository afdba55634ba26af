"""The hand-written .pyi stubs ship with the package and type-check."""

import importlib
import inspect
import os
import subprocess
import sys

import pytest

import scopeops

PACKAGE_DIR = os.path.dirname(scopeops.__file__)
COMPILED = ["_types", "_blob", "_workspace", "_stack", "_accumulate", "ops._dispatch",
            "bench._c_timing"]


def stub_path(module):
    return os.path.join(PACKAGE_DIR, *module.split(".")) + ".pyi"


@pytest.mark.parametrize("module", COMPILED)
def test_every_compiled_module_ships_a_stub(module):
    assert os.path.exists(stub_path(module))


def test_package_is_marked_typed():
    assert os.path.exists(os.path.join(PACKAGE_DIR, "py.typed"))


@pytest.mark.parametrize("module", COMPILED)
def test_stub_names_every_public_name_of_its_module(module):
    compiled = importlib.import_module("scopeops." + module)
    with open(stub_path(module)) as f:
        stub = f.read()
    public = [name for name in dir(compiled)
              if not name.startswith("_") and (inspect.isclass(getattr(compiled, name))
                                               or callable(getattr(compiled, name)))
              and getattr(getattr(compiled, name), "__module__", "") == compiled.__name__]
    missing = [name for name in public
               if f"class {name}" not in stub and f"def {name}(" not in stub]
    assert not missing, f"{module}.pyi lacks {missing}"


def _mypy_env():
    # An installed package is found through site-packages; an in-place build needs
    # its parent directory on MYPYPATH (mypy refuses site-packages there).
    env = dict(os.environ)
    if "site-packages" not in PACKAGE_DIR:
        env["MYPYPATH"] = os.path.dirname(PACKAGE_DIR)
    return env


def test_mypy_accepts_the_stubs_and_a_typed_client(tmp_path):
    client = tmp_path / "client.py"
    client.write_text(
        "import numpy as np\n"
        "import scopeops as so\n"
        "ws: so.Workspace = so.Workspace()\n"
        "blob: so.Blob = ws.feed_blob('x', np.zeros(3))\n"
        "stack = so.WorkspaceStack(debug=False)\n"
        "child: so.Workspace = stack.push_forward_workspace(ws, {'a': 'x'})\n"
        "popped: so.Workspace | None = stack.pop_gradient_workspace(ws)\n"
        "meta: so.TypeMeta = so.type_meta(np.float32)\n"
        "size: int = blob.nbytes + meta.itemsize + len(stack)\n"
        "arr = blob.tensor((2, 3), np.float32)\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental",
         "--follow-imports=silent", str(client)],
        capture_output=True, text=True, cwd=tmp_path,
        env=_mypy_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_accepts_the_whole_package_source():
    # The repository's sources with their .pyi stubs: configured in pyproject.toml.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--config-file",
         os.path.join(root, "pyproject.toml"), os.path.join(root, "scopeops")],
        capture_output=True, text=True, cwd=root,
    )
    assert result.returncode == 0, result.stdout + result.stderr
