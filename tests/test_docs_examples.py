"""Every ```python block of the docs and the README runs, top to bottom."""

import contextlib
import io
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)

EXAMPLES = [
    pytest.param(page, index, code, id=f"{page.name}-{index}")
    for page in PAGES
    for index, code in enumerate(BLOCK.findall(page.read_text()))
]


def test_the_docs_have_examples():
    assert len(EXAMPLES) >= 10


@pytest.mark.parametrize("page, index, code", EXAMPLES)
def test_example_runs(page, index, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, f"{page.name}[{index}]", "exec"), {"__name__": "__docs__"})
