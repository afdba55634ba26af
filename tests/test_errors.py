"""The exception hierarchy, and that the package refuses to import without its compiled core."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import scopeops as so

PACKAGE_DIR = Path(so.__file__).resolve().parent


def test_scope_error_is_a_runtime_error():
    assert issubclass(so.ScopeError, RuntimeError)


@pytest.mark.parametrize(
    "error_class, builtin_base",
    [
        (so.BlobNotFoundError, KeyError),
        (so.BlobTypeError, TypeError),
        (so.BindingError, ValueError),
    ],
)
def test_specific_errors_derive_from_scope_error_and_their_builtin(error_class, builtin_base):
    assert issubclass(error_class, so.ScopeError)
    assert issubclass(error_class, builtin_base)


def test_stack_error_derives_from_scope_error():
    assert issubclass(so.StackError, so.ScopeError)


@pytest.mark.parametrize(
    "error_class, unrelated_base",
    [
        (so.BlobNotFoundError, TypeError),
        (so.BlobTypeError, KeyError),
        (so.BindingError, KeyError),
        (so.StackError, ValueError),
    ],
)
def test_specific_errors_do_not_derive_from_unrelated_builtins(error_class, unrelated_base):
    assert not issubclass(error_class, unrelated_base)


def test_missing_blob_from_library_is_caught_as_key_error_and_scope_error():
    ws = so.Workspace()
    with pytest.raises(KeyError):
        ws.fetch_blob("never_fed")
    with pytest.raises(so.ScopeError):
        ws.fetch_blob("never_fed")


def test_blob_not_found_error_message_names_the_blob():
    ws = so.Workspace()
    with pytest.raises(so.BlobNotFoundError) as excinfo:
        ws.fetch_blob("never_fed")
    assert "never_fed" in str(excinfo.value)


def _copy_pure_python_package(destination: Path) -> Path:
    """Copy only the .py files of the scopeops package (no compiled extensions)."""

    def ignore(directory, names):
        skipped = []
        for name in names:
            path = os.path.join(directory, name)
            if name == "__pycache__":
                skipped.append(name)
            elif os.path.isdir(path):
                continue
            elif not name.endswith(".py"):
                skipped.append(name)
        return skipped

    target = destination / "scopeops"
    shutil.copytree(PACKAGE_DIR, target, ignore=ignore)
    return target


def test_import_without_compiled_extension_fails_with_import_error(tmp_path):
    copied = _copy_pure_python_package(tmp_path)
    assert not list(copied.rglob("*.so")) and not list(copied.rglob("*.pyd"))
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        try:
            import scopeops
        except ImportError as exc:
            if getattr(exc, "name", None) == "scopeops":
                print("PACKAGE_NOT_FOUND", exc)
                sys.exit(4)
            print("IMPORT_ERROR", type(exc).__name__, exc)
            sys.exit(0)
        print("IMPORTED_WITHOUT_EXTENSION", scopeops.__file__)
        sys.exit(3)
        """
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(tmp_path),
    )
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "IMPORT_ERROR" in result.stdout


def test_the_build_flavour_is_the_one_ci_asked_for():
    # CI runs the suite a second time against SCOPEOPS_DEBUG_BUILD=1 (bounds checks on)
    # and sets SCOPEOPS_EXPECT_DEBUG_BUILD so that run proves it is not the optimised one.
    import os

    from scopeops import _types

    expected = os.environ.get("SCOPEOPS_EXPECT_DEBUG_BUILD")
    assert isinstance(_types.DEBUG_BUILD, bool)
    if expected is not None:
        assert _types.DEBUG_BUILD is (expected == "1")
