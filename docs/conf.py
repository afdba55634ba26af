"""Sphinx configuration for the scopeops documentation."""

import pathlib

import scopeops

# The operator catalogue is rendered from the registry at every build, so it can never
# fall behind it (docs/operators.md is generated, not kept in git).
pathlib.Path(__file__).with_name("operators.md").write_text(
    "# Operators\n\n"
    "Every operator registered in scopeops, rendered from its schema by "
    "`so.ops.catalogue()` (which prints the same in a terminal). Gradient operators "
    "(`...Gradient`) are listed too: they are what the gradient makers emit.\n\n"
    + scopeops.ops.catalogue(), encoding="utf-8")

project = "scopeops"
author = "the scopeops developers"
release = scopeops.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "numpydoc",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
master_doc = "index"
exclude_patterns = ["_build", "README.md"]
myst_heading_anchors = 3

autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_validation_checks: set[str] = set()

html_theme = "alabaster"
html_title = f"scopeops {release}"
# "type" is a field of both OperatorDef and Schema; annotations naming the builtin
# would otherwise be reported as ambiguous cross-references.
suppress_warnings = ["ref.python"]
