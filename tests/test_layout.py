"""The package's layout: every import points down a layer, nothing imports in a circle, and
no module takes another module's private names (docs/architecture.md).

Read from the sources with ``ast`` (imports inside functions included; ``if TYPE_CHECKING:``
blocks excepted) and, for the compiled modules, from their ``import``/``cimport`` lines.
"""

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "scopeops"

# Lower layers never import higher ones. A new module must be placed here on purpose.
LAYERS = [
    ("core", ["scopeops.errors", "scopeops._types", "scopeops._npy", "scopeops._blob",
              "scopeops._workspace", "scopeops._stack", "scopeops._accumulate"]),
    ("definitions", ["scopeops.names", "scopeops.defs", "scopeops.atomicfile"]),
    ("operators", ["scopeops.ops", "scopeops.ops.*"]),
    ("nets", ["scopeops.net", "scopeops.workspace"]),
    ("gradients", ["scopeops.gradients", "scopeops.gradients.*"]),
    ("toolkit", ["scopeops.control", "scopeops.scope", "scopeops.initializers",
                 "scopeops.variables", "scopeops.accumulation", "scopeops.memory",
                 "scopeops.checkpoint", "scopeops.viz", "scopeops.testing",
                 "scopeops.progress", "scopeops.diagram"]),
    ("package", ["scopeops"]),
    ("integrations", ["scopeops.caffe2", "scopeops.caffe2.*", "scopeops.distributed"]),
    ("front", ["scopeops.bench", "scopeops.bench.*", "scopeops.cli", "scopeops.demo",
               "scopeops.__main__"]),
]


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


# module -> its source files (a compiled module has a .pyx and usually a .pxd).
SOURCES = {}
for _path in [p for suffix in ("py", "pyx", "pxd") for p in sorted(PACKAGE.rglob("*." + suffix))]:
    SOURCES.setdefault(module_name(_path), []).append(_path)
MODULES = set(SOURCES)


def layer_of(module):
    for index, (_, patterns) in enumerate(LAYERS):
        for pattern in patterns:
            if module == pattern or (pattern.endswith(".*")
                                     and module.startswith(pattern[:-1])):
                return index
    return None


def is_type_checking_block(node):
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def python_imports(path):
    """(imported module, names taken from it) for every import of a .py file."""
    tree = ast.parse(path.read_text(), str(path))
    found = []

    def visit(node):
        if isinstance(node, ast.If) and is_type_checking_block(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


CYTHON_IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+c?import\s+(.+)|c?import\s+([\w.]+))",
                           re.M)


def cython_imports(path):
    found = []
    for match in CYTHON_IMPORT.finditer(path.read_text()):
        if match.group(1):
            names = [n.strip(" ()") for n in match.group(2).split("#")[0].split(",")]
            found.append((match.group(1), [n for n in names if n]))
        else:
            found.append((match.group(3), []))
    return found


def edges():
    """(importer, imported module) inside the package, with the names taken."""
    out = []
    for module, paths in SOURCES.items():
        imports = [found for path in paths for found in (
            python_imports(path) if path.suffix == ".py" else cython_imports(path))]
        for target, names in imports:
            if target != "scopeops" and not target.startswith("scopeops."):
                continue
            # `from pkg import sub` imports the submodule pkg.sub.
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            if submodules:
                out.extend((module, sub, []) for sub in submodules)
                rest = [n for n in names if f"{target}.{n}" not in MODULES]
                if rest:
                    out.append((module, target, rest))
            else:
                out.append((module, target, names))
    # A .pyx cimporting its own .pxd is one module, not a circle.
    return [(a, b, names) for a, b, names in out if a != b]


EDGES = edges()


def test_every_module_of_the_package_has_a_layer():
    unplaced = sorted(m for m in MODULES if layer_of(m) is None)
    assert not unplaced, f"place these modules in a layer of tests/test_layout.py: {unplaced}"


def test_the_analysis_sees_the_imports_it_checks():
    # The checks below mean something only if the scan finds the known imports.
    pairs = {(a, b) for a, b, _ in EDGES}
    assert ("scopeops.net", "scopeops.ops.base") in pairs
    assert ("scopeops.ops.control", "scopeops.ops.executor") in pairs
    assert ("scopeops._stack", "scopeops._workspace") in pairs          # a cimport
    assert ("scopeops.gradients", "scopeops.gradients.control") in pairs


def find_cycles(graph):
    """Strongly connected components with more than one module (or a self-import)."""
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []
    counter = [0]

    def connect(start):
        # Iterative Tarjan: no recursion limit to worry about.
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return cycles


def test_find_cycles_finds_a_circle_and_passes_a_tree():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"a"}}) == [["a"]]


def test_no_import_circle_inside_the_package():
    graph = {}
    for importer, imported, _ in EDGES:
        graph.setdefault(importer, set()).add(imported)
    assert find_cycles(graph) == []


@pytest.mark.parametrize("importer,imported", sorted({(a, b) for a, b, _ in EDGES}))
def test_imports_point_down_the_layers(importer, imported):
    if imported not in MODULES:
        pytest.fail(f"{importer} imports {imported}, which is not a module of the package")
    assert layer_of(imported) <= layer_of(importer), (
        f"{importer} ({LAYERS[layer_of(importer)][0]}) imports {imported} "
        f"({LAYERS[layer_of(imported)][0]}), a layer above it")


def test_no_module_takes_a_private_name_from_another():
    # cimports are the C-level API (cdef helpers, numpy's declarations): Python imports only.
    taken = []
    for module, paths in SOURCES.items():
        for path in paths:
            if path.suffix != ".py":
                continue
            for target, names in python_imports(path):
                if target.startswith("scopeops") and target != module:
                    taken += [f"{module}: from {target} import {n}" for n in names
                              if n.startswith("_") and not n.startswith("__")
                              and f"{target}.{n}" not in MODULES]
    assert taken == []
