"""Every ```python block of the docs and the README runs, top to bottom.

A block whose first line is ``# ... continued from the block above`` runs after the
blocks it continues (a tutorial that builds one program over several sections); every
other block runs on its own.
"""

import contextlib
import dataclasses
import io
import pathlib
import re

import pytest

import scopeops as so

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)

CONTINUED = "# ... continued from the block above\n"


def _programs(page):
    """Each block of the page, with the blocks it continues in front of it."""
    program = ""
    for code in BLOCK.findall(page.read_text()):
        program = program + code if code.startswith(CONTINUED) else code
        yield program


EXAMPLES = [
    pytest.param(page, index, code, id=f"{page.name}-{index}")
    for page in PAGES
    for index, code in enumerate(_programs(page))
]


def test_a_continued_block_runs_after_the_blocks_it_continues(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```python\nx = 1\n```\n\n```python\n" + CONTINUED + "y = x + 1\n```\n"
                    "\n```python\nz = 3\n```\n")
    assert list(_programs(page)) == ["x = 1\n", "x = 1\n" + CONTINUED + "y = x + 1\n",
                                     "z = 3\n"]


def test_the_docs_have_examples():
    assert len(EXAMPLES) >= 10


def _snapshot():
    return {name: dataclasses.replace(schema) for name, schema in so.ops.base._REGISTRY.items()}


def _restore(saved):
    so.ops.base._REGISTRY.clear()
    so.ops.base._REGISTRY.update({name: dataclasses.replace(s) for name, s in saved.items()})


@pytest.fixture(scope="module")
def registry_before_the_examples():
    saved = _snapshot()
    yield saved
    _restore(saved)


_PAGE_RUNNING = []


@pytest.fixture
def operator_registry_restored(request, registry_before_the_examples):
    """Examples may register operators (docs/custom-operators.md), and a page's later
    examples use them: the registry is put back whenever a new page starts, and after
    the last one, so no other test sees them."""
    page = request.node.callspec.params["page"]
    if _PAGE_RUNNING != [page]:
        _restore(registry_before_the_examples)
        _PAGE_RUNNING[:] = [page]


@pytest.mark.parametrize("page, index, code", EXAMPLES)
def test_example_runs(page, index, code, tmp_path, monkeypatch, operator_registry_restored):
    monkeypatch.chdir(tmp_path)
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, f"{page.name}[{index}]", "exec"), {"__name__": "__docs__"})
