"""Sphinx configuration for the scopeops documentation."""

import scopeops

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
