"""Pictures (docs/pictures.md): text trees and Graphviz DOT of workspaces, stacks and nets;
the depth, hide_gradients and fold options; rendering with dot or, without it, matplotlib
(or the clear error when neither is installed)."""

import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import textwrap
from xml.etree import ElementTree

import numpy as np
import pytest
from support import PACKAGE_PARENT, six_step_model

import scopeops as so
import scopeops.ops.math  # noqa: F401 - registers Mul, Add, Sub, LT, Copy
from scopeops import viz
from scopeops.control import add_if, add_while

# CI installs Graphviz and sets SCOPEOPS_TEST_REQUIRE_DOT=1, so there the tests that need a
# real dot run (or fail), never skip; elsewhere they run when dot is installed.
DOT_INSTALLED = shutil.which("dot") is not None or os.environ.get(
    "SCOPEOPS_TEST_REQUIRE_DOT") == "1"


# -- scenes -----------------------------------------------------------------------------


def workspace_scene():
    """root (shared: base) with a tensor, a scalar and a str, and a stack in blob 'scope'
    whose level 0 (top) forwards x -> w and level 1 is dormant."""
    base = so.Workspace()
    base["vocab"] = b"abc"
    root = so.Workspace(shared=base)
    root["w"] = np.zeros((2, 3), np.float32)
    root["lr"] = np.float32(0.1)
    root["note"] = "hello"
    stack = so.WorkspaceStack()
    root["scope"] = stack
    level0 = stack.push_forward_workspace(root, {"x": "w"})
    level0["y"] = np.ones(4)
    stack.push_forward_workspace(root, {"x": "w"})
    stack.pop_gradient_workspace(root, {"x": "w"})
    return root, stack


def control_net():
    net = so.Net("main")
    net.add_external_inputs("x", "w", "c", "i", "n", "one", "y")
    then_net = so.Net("then_branch")
    then_net.Mul(["x", "w"], ["tmp"])
    then_net.Add(["tmp", "x"], ["y"])
    else_net = so.Net("else_branch")
    else_net.Sub(["x", "w"], ["y"])
    add_if(net, "c", then_net, else_net)
    body = so.Net("body")
    body.Mul(["y", "w"], ["prod"])
    body.Copy(["prod"], ["y"])
    body.Add(["i", "one"], ["i"])
    cond = so.Net("cond")
    cond.LT(["i", "n"], ["go"])
    add_while(net, "go", body, cond)
    return net


def indent_of(line):
    return len(re.match(r"^[│ ├└─]*", line).group(0))


def line_with(text, fragment):
    matches = [line for line in text.splitlines() if fragment in line]
    assert matches, f"no line with {fragment!r} in:\n{text}"
    return matches[0]


# -- a small DOT checker (the grammar subset to_dot writes) ---------------------------------


_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\\n]|\\.)*")|(?P<id>[A-Za-z_][A-Za-z_0-9]*)'
                    r'|(?P<op>->|[{}\[\]=;,]))')


def tokens_of(source):
    position, out = 0, []
    source = source.rstrip()
    while position < len(source):
        match = _TOKEN.match(source, position)
        assert match, f"DOT syntax error at {source[position:position + 40]!r}"
        out.append(match.group(match.lastgroup))
        position = match.end()
    return out


def check_dot(source):
    """Parse ``source``; return (declared node ids, edges). Every edge end must be declared."""
    toks = tokens_of(source)
    nodes, edges = set(), []
    pos = 0

    def take(expected=None):
        nonlocal pos
        tok = toks[pos]
        if expected is not None:
            assert tok == expected, f"expected {expected!r}, got {tok!r} at token {pos}"
        pos += 1
        return tok

    def ident():
        tok = take()
        assert tok.startswith('"') or re.fullmatch(r"[A-Za-z_]\w*", tok), tok
        return tok

    def attrs():
        take("[")
        while toks[pos] != "]":
            ident()
            take("=")
            ident()
            if toks[pos] in (",", ";"):
                take()
        take("]")

    def statements():
        while toks[pos] != "}":
            if toks[pos] == "subgraph":
                take()
                ident()
                take("{")
                statements()
                take("}")
            elif toks[pos] in ("graph", "node", "edge"):
                take()
                attrs()
            else:
                first = ident()
                if toks[pos] == "=":
                    take()
                    ident()
                elif toks[pos] == "->":
                    chain = [first]
                    while toks[pos] == "->":
                        take()
                        chain.append(ident())
                    edges.extend(zip(chain, chain[1:], strict=False))
                    if toks[pos] == "[":
                        attrs()
                else:
                    nodes.add(first)
                    if toks[pos] == "[":
                        attrs()
            if toks[pos] == ";":
                take()

    take("digraph")
    ident()
    take("{")
    statements()
    take("}")
    assert pos == len(toks), "tokens after the closing brace"
    for tail, head in edges:
        assert tail in nodes and head in nodes, f"edge {tail} -> {head} to an undeclared node"
    return nodes, edges


def labels_of(source):
    return [m.group(1) for m in re.finditer(r'label="((?:[^"\\]|\\.)*)"', source)]


# -- text trees: workspaces -----------------------------------------------------------------


def test_workspace_tree_has_one_line_per_blob_with_type_dtype_shape_and_bytes():
    root, _ = workspace_scene()
    text = viz.tree(root)
    assert line_with(text, "w: ").endswith("w: Tensor float32 (2, 3), 24 bytes")
    assert line_with(text, "lr: ").endswith("lr: numpy scalar float32 (), 4 bytes")
    assert re.search(r"note: str, \d+ bytes$", line_with(text, "note: "))
    assert line_with(text, "vocab: ").endswith("vocab: bytes, 3 bytes")


def test_workspace_tree_shows_the_shared_chain_as_following_sections():
    root, _ = workspace_scene()
    lines = viz.tree(root).splitlines()
    assert lines[0].startswith("root: Workspace, 4 local blobs, shared: root.shared")
    shared = line_with("\n".join(lines), "root.shared: Workspace")
    assert indent_of(shared) == 0
    assert lines.index(shared) < lines.index(line_with("\n".join(lines), "vocab"))


def test_workspace_tree_shows_each_forward_as_inner_to_outer():
    root, _ = workspace_scene()
    text = viz.tree(root)
    forwards = [line for line in text.splitlines() if "x -> w (in root)" in line]
    assert len(forwards) == 2                       # the top level and the dormant one
    assert all(line.endswith("Tensor float32 (2, 3), 24 bytes") for line in forwards)


def test_workspace_tree_opens_a_stack_held_in_a_blob_with_top_and_dormant_marked():
    root, _ = workspace_scene()
    text = viz.tree(root)
    scope = line_with(text, "scope: WorkspaceStack")
    assert "depth 1 of capacity 2" in scope
    top = line_with(text, "root/scope[0]: Workspace (top)")
    dormant = line_with(text, "root/scope[1]: Workspace (dormant)")
    assert indent_of(top) == indent_of(dormant) > indent_of(scope)
    assert indent_of(line_with(text, "y: Tensor float64 (4,)")) > indent_of(top)


def test_a_dangling_forward_is_shown_as_dangling():
    parent = so.Workspace()
    parent["w"] = 1
    child = so.Workspace.from_bindings(parent, {"x": "w"})
    parent.remove_blob("w")
    assert "x -> w (in undrawn workspace #1)" in viz.tree(child)
    assert "dangling" in line_with(viz.tree(child), "x -> w")


def test_a_forward_hidden_by_a_local_blob_says_so():
    parent = so.Workspace()
    parent["w"] = 1
    child = so.Workspace.from_bindings(parent, {"x": "w"})
    child.create_local_blob("x").set(2)
    assert "hidden by the local blob x" in line_with(viz.tree(child), "x -> w")


def test_an_empty_blob_is_shown_as_empty():
    ws = so.Workspace()
    ws.create_blob("later")
    assert viz.tree(ws).splitlines()[1].endswith("later: empty")


def test_unprintable_names_stay_on_one_line():
    ws = so.Workspace()
    ws["two\nlines"] = 1
    ws["tab\there"] = 2
    text = viz.tree(ws)
    assert len(text.splitlines()) == 3
    assert "two\\nlines: int" in text and "tab\\there: int" in text


def test_a_stack_reached_twice_is_drawn_once():
    root, stack = workspace_scene()
    root["alias"] = stack
    text = viz.tree(root)
    assert text.count("root/scope[0]:") == 1
    assert "the stack root/scope (shown above)" in text


def test_a_stack_holding_its_own_workspace_terminates():
    root = so.Workspace()
    stack = so.WorkspaceStack()
    root["scope"] = stack
    level = stack.push_forward_workspace(root)
    level["again"] = stack                 # the level's blob holds the stack it sits on
    text = viz.tree(root)
    assert "the stack root/scope (shown above)" in text
    check_dot(viz.to_dot(root))


def test_a_long_shared_chain_draws_without_recursion():
    ws = so.Workspace()
    ws["bottom"] = 0
    chain = 3 * sys.getrecursionlimit()
    for _ in range(chain):
        ws = so.Workspace(shared=ws)
    text = viz.tree(ws)
    assert text.rstrip().endswith("bottom: int, 28 bytes")
    assert f"root.shared({chain}): Workspace, 1 local blob" in text
    assert "root.shared(2): Workspace" in text and "root.shared: Workspace" in text
    source = viz.to_dot(ws)
    assert len(source) < 300 * chain and len(text) < 100 * chain     # labels do not grow
    check_dot(source)


def test_a_workspace_pushed_on_a_stack_can_be_drawn_alone():
    root, stack = workspace_scene()
    text = viz.tree(stack.top)
    assert text.startswith("root: Workspace, 1 local blob, 1 forward")
    assert "x -> w (in undrawn workspace #1)" in text


# -- text trees: stacks ---------------------------------------------------------------------


def test_stack_tree_marks_the_top_and_the_dormant_workspaces():
    root = so.Workspace()
    root["w"] = 1
    stack = so.WorkspaceStack()
    for _ in range(3):
        stack.push_forward_workspace(root, {"x": "w"})
    stack.pop_gradient_workspace(root, {"x": "w"})
    stack.pop_gradient_workspace(root, {"x": "w"})
    lines = viz.tree(stack).splitlines()
    assert lines[0] == "stack: WorkspaceStack, depth 1 of capacity 3"
    levels = [line for line in lines if "stack[" in line]
    assert [line.split("── ")[1].split(",")[0] for line in levels] == [
        "stack[0]: Workspace (top)", "stack[1]: Workspace (dormant)",
        "stack[2]: Workspace (dormant)"]


def test_an_empty_stack_has_a_title_only():
    assert viz.tree(so.WorkspaceStack()) == "stack: WorkspaceStack, depth 0 of capacity 0"


def test_a_full_stack_marks_only_its_last_workspace_top():
    root = so.Workspace()
    stack = so.WorkspaceStack()
    stack.push_forward_workspace(root)
    stack.push_forward_workspace(root)
    text = viz.tree(stack)
    assert "stack[0]: Workspace, " in text and "stack[1]: Workspace (top)" in text
    assert "dormant" not in text


# -- text trees: nets -------------------------------------------------------------------


def test_net_tree_lists_ops_with_inputs_and_outputs():
    net = so.Net("simple")
    net.Mul(["a", "b"], ["c"], name="scale")
    lines = viz.tree(net).splitlines()
    assert lines == ["net simple: 1 op", "└── #0 Mul 'scale' (a, b) -> (c)"]


def test_net_tree_nests_the_subnets_of_if_while_and_do():
    text = viz.tree(control_net())
    if_op = line_with(text, "If (c")
    then_net = line_with(text, "then_net: net main/do_then_net")
    then_do = line_with(text, "Do (x, w, main/workspace_if_then)")
    then_body = line_with(text, "net: net then_branch: 2 ops")
    mul = line_with(text, "#0 Mul (x, w) -> (tmp)")
    assert indent_of(if_op) < indent_of(then_net) < indent_of(then_do) < indent_of(then_body) \
        < indent_of(mul)
    assert indent_of(line_with(text, "else_net: net main/do_else_net")) == indent_of(then_net)
    while_op = line_with(text, "While (go")
    loop_net = line_with(text, "loop_net: net main/do_loop_body_net")
    cond_net = line_with(text, "cond_net: net main/do_loop_condition_net")
    assert indent_of(while_op) < indent_of(loop_net) == indent_of(cond_net)
    assert indent_of(line_with(text, "#0 LT (i, n) -> (go)")) > indent_of(cond_net)
    assert "copy_external_blobs=True" in line_with(text, "Do (y, w, i, one")


def test_net_netdef_and_built_net_draw_the_same():
    net = control_net()
    ws = so.Workspace()
    for name in ("x", "w", "i", "n", "one", "y"):
        ws[name] = np.ones(2)
    ws["c"] = np.array([True])
    executor = ws.create_net(net)
    assert viz.tree(net) == viz.tree(net.netdef) == viz.tree(executor)


def test_a_net_containing_itself_terminates():
    netdef = so.NetDef(name="loop", ops=[so.create_operator("Do", ["s"], ["s"])])
    netdef.ops[0].args["net"] = netdef
    assert "contains itself" in viz.tree(netdef)
    check_dot(viz.to_dot(netdef))


def test_gradient_ops_are_marked():
    netdef = so.NetDef(name="g", ops=[so.create_operator("Copy", ["a"], ["b"],
                                                         is_gradient_op=True)])
    assert line_with(viz.tree(netdef), "Copy").endswith("[gradient]")


def test_anything_else_is_a_type_error():
    with pytest.raises(TypeError, match="draws a Workspace, a WorkspaceStack, a Net"):
        viz.tree({"a": 1})
    with pytest.raises(TypeError):
        viz.to_dot(42)


# -- DOT ------------------------------------------------------------------------------------


def test_workspace_dot_is_valid_with_clusters_forwards_and_shared_edges():
    root, _ = workspace_scene()
    source = viz.to_dot(root)
    nodes, edges = check_dot(source)
    labels = labels_of(source)
    for cluster in ("root", "root.shared", "root/scope[0] (top)", "root/scope[1] (dormant)"):
        assert cluster in labels
    assert "w\\nTensor float32 (2, 3), 24 bytes" in labels
    assert "x -> w\\nTensor float32 (2, 3), 24 bytes" in labels
    assert labels.count("forward") == 2 and labels.count("shared") == 1
    assert "[0] top" in labels and "[1] dormant" in labels
    w_node = re.search(r'"(n\d+)" \[label="w\\n', source).group(1)
    assert sum(1 for _, head in edges if head == f'"{w_node}"') == 2   # both forwards


def test_dormant_workspaces_are_drawn_dashed_and_grey():
    root, _ = workspace_scene()
    source = viz.to_dot(root)
    dormant = source[source.index('label="root/scope[1] (dormant)"'):]
    assert dormant.index('style="dashed"') < dormant.index("}")
    assert 'color="gray50"' in dormant[:dormant.index("}")]


def test_stack_dot_is_valid():
    _, stack = workspace_scene()
    source = viz.to_dot(stack)
    check_dot(source)
    assert "stack: WorkspaceStack, depth 1 of capacity 2" in labels_of(source)


def test_net_dot_is_valid_with_nested_clusters_for_subnets():
    source = viz.to_dot(control_net())
    check_dot(source)
    labels = labels_of(source)
    for name in ("net main", "net main/do_then_net", "net then_branch", "net else_branch",
                 "net body", "net cond"):
        assert name in labels
    for arg in ("then_net", "else_net", "loop_net", "cond_net", "net"):
        assert arg in labels
    # then_branch's cluster sits inside do_then_net's, which sits inside main's.
    opened = [m.group(0) for m in re.finditer(r'subgraph|label="net [^"]*"|^\s*}', source,
                                              re.MULTILINE)]
    assert opened.index('label="net main/do_then_net"') < opened.index('label="net then_branch"')


def test_dot_labels_escape_quotes_backslashes_and_newlines():
    ws = so.Workspace()
    ws['say "hi" \\ back\nslash'] = 1
    source = viz.to_dot(ws)
    check_dot(source)
    assert 'say \\"hi\\" \\\\ back\\\\nslash\\nint, 28 bytes' in source


# -- options: depth, hide_gradients, fold ----------------------------------------------


def nested_stacks_scene():
    """root -> blob 'outer' holds a stack whose workspace holds a stack 'inner' whose
    workspace holds 'deep'."""
    root = so.Workspace()
    root["w"] = np.zeros(2)
    outer = so.WorkspaceStack()
    root["outer"] = outer
    level = outer.push_forward_workspace(root)
    inner = so.WorkspaceStack()
    level["inner"] = inner
    inner.push_forward_workspace(level)["deep"] = np.ones(3)
    return root


def steps_scene(steps=6):
    """A stack whose ``steps`` dormant workspaces are alike: each forwards x -> x<t> and
    holds a local 'a', as the step workspaces of a Do loop do."""
    root = so.Workspace()
    for t in range(steps):
        root[f"x{t}"] = np.zeros(4, np.float32)
    stack = so.WorkspaceStack()
    root["steps"] = stack
    for t in range(steps):
        stack.push_forward_workspace(root, {"x": f"x{t}"})["a"] = np.ones(2)
    for t in reversed(range(steps)):
        stack.pop_gradient_workspace(root, {"x": f"x{t}"})
    return root, stack


def test_depth_zero_draws_only_the_blobs_of_the_workspace():
    text = viz.tree(nested_stacks_scene(), depth=0)
    assert "outer: WorkspaceStack" in text
    assert "root/outer[0]" not in text
    assert "(1 workspace not shown: depth limit)" in text


def test_depth_one_opens_one_level_of_stacks():
    text = viz.tree(nested_stacks_scene(), depth=1)
    assert "root/outer[0]: Workspace (top)" in text
    assert "inner: WorkspaceStack" in text and "root/outer[0]/inner[0]" not in text
    assert "deep" not in text
    full = viz.tree(nested_stacks_scene())
    assert "root/outer[0]/inner[0]: Workspace (top)" in full and "deep: Tensor" in full


def test_depth_limits_nested_nets_too():
    text = viz.tree(control_net(), depth=0)   # If's then_net is a net holding a Do
    assert "#2 If" in text and "#0 Do" not in text
    assert "then_net: net main/do_then_net: 1 op, outputs y, main/workspace_if_then " \
        "(1 op not shown: depth limit)" in text
    assert "net then_branch: 2 ops (2 ops not shown: depth limit)" in viz.tree(control_net(),
                                                                               depth=1)
    assert "#1 Add (tmp, x) -> (y)" in viz.tree(control_net(), depth=2)


@pytest.mark.parametrize("bad, error", [(-1, ValueError), (1.5, TypeError), (True, TypeError),
                                        ("2", TypeError)])
def test_a_bad_depth_is_refused(bad, error):
    with pytest.raises(error, match="depth"):
        viz.tree(so.Workspace(), depth=bad)


@pytest.mark.parametrize("option", ["hide_gradients", "fold"])
def test_the_switches_take_only_bools(option):
    with pytest.raises(TypeError, match=option):
        viz.tree(so.Workspace(), **{option: 1})


def test_hide_gradients_leaves_out_gradient_blobs_and_says_how_many():
    ws = so.Workspace()
    for name in ("w", "w_grad", "w_grad_autosplit_3", "scope/w_grad_sum", "gradient", "grade"):
        ws[name] = np.zeros(2)
    child = so.Workspace.from_bindings(ws, {"x": "w", "x_grad": "w_grad"})
    text = viz.tree(ws, hide_gradients=True)
    assert text.splitlines()[0] == "root: Workspace, 6 local blobs, 3 gradients hidden"
    names = [line.split("── ")[1].split(":")[0] for line in text.splitlines()[1:]]
    assert names == ["w", "gradient", "grade"]
    assert "x_grad" not in viz.tree(child, hide_gradients=True)
    assert "x_grad -> w_grad" in viz.tree(child)


def test_hide_gradients_leaves_out_gradient_ops_of_a_net():
    net = so.Net("train")
    net.Mul(["x", "w"], ["y"])
    net.AveragedLoss(["y"], ["loss"])
    so.add_gradient_ops(net, ["loss"])
    net.netdef.ops[-1].is_gradient_op = True      # marked, or writing a gradient blob
    shown = viz.tree(net, hide_gradients=True)
    assert shown.splitlines()[1:] == ["├── #0 Mul (x, w) -> (y)",
                                      "├── #1 AveragedLoss (y) -> (loss)",
                                      "└── (3 gradient ops hidden)"]
    assert "MulGradient" in viz.tree(net)


def test_alike_step_workspaces_fold_into_one_with_a_count():
    root, _ = steps_scene(6)
    text = viz.tree(root)
    assert "root/steps[0..5]: 6 alike Workspaces (dormant), 1 local blob, 1 forward each" in text
    assert "x -> x0 ... x5 (in root): Tensor float32 (4,), 16 bytes" in text
    assert "root/steps[1]" not in text
    unfolded = viz.tree(root, fold=False)
    assert all(f"root/steps[{t}]: Workspace (dormant)" in unfolded for t in range(6))


def test_a_run_shorter_than_fold_at_least_is_drawn_as_it_is():
    root, _ = steps_scene(viz.FOLD_AT_LEAST - 1)
    text = viz.tree(root)
    assert "alike" not in text and "root/steps[1]: Workspace (dormant)" in text


def test_a_workspace_that_differs_breaks_the_run():
    root, stack = steps_scene(7)
    stack.workspaces()[3]["extra"] = 1
    text = viz.tree(root)
    assert "root/steps[0..2]: 3 alike Workspaces" in text
    assert "root/steps[3]: Workspace (dormant), 2 local blobs" in text
    assert "root/steps[4..6]: 3 alike Workspaces" in text


def test_numbered_blobs_holding_alike_values_fold_into_one_line():
    root, _ = steps_scene(6)
    text = viz.tree(root)
    assert "x0 ... x5 (6 alike): Tensor float32 (4,), 16 bytes" in text
    ws = so.Workspace()
    ws["x0"], ws["x1"], ws["x2"] = np.zeros(1), np.zeros(2), np.zeros(3)   # shapes differ
    assert "alike" not in viz.tree(ws)


def test_a_net_used_by_several_ops_is_drawn_once():
    step = so.Net("step")
    step.Mul(["a", "v"], ["b"])
    net = so.Net("loop")
    net.CreateScope([], ["scope"])
    for t in range(3):
        net.Do([f"x{t}", "w", "scope"], [f"x{t + 1}", "scope"], net=step,
               inner_blobs=["a", "v", "b"], outer_blobs_idx=[0, 1, 2])
    text = viz.tree(net)
    assert text.count("net step: 1 op") == 3 and text.count("#0 Mul") == 1
    assert text.count("(drawn above)") == 2
    assert viz.tree(net, fold=False).count("#0 Mul") == 3
    check_dot(viz.to_dot(net))
    assert labels_of(viz.to_dot(net)).count("net step") == 1


def test_dot_follows_the_options():
    root, _ = steps_scene(6)
    source = viz.to_dot(root)
    check_dot(source)
    assert "root/steps[0..5] (dormant)" in labels_of(source)
    assert not any("root/steps[1]" in label for label in labels_of(source))
    root["w_grad"] = np.zeros(2)
    assert not any("w_grad" in label for label in labels_of(viz.to_dot(root,
                                                                      hide_gradients=True)))
    shallow = viz.to_dot(nested_stacks_scene(), depth=0)
    check_dot(shallow)
    assert "(1 workspace not shown: depth limit)" in labels_of(shallow)


# -- rendering --------------------------------------------------------------------------


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """(width, height) from a PNG's header; fails unless the file is a PNG."""
    data = open(path, "rb").read(24)
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def svg_document(path):
    """The parsed SVG: its root must be an <svg> element with a positive size."""
    root = ElementTree.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg", root.tag
    box = [float(v) for v in root.get("viewBox").split()]
    assert box[2] > 0 and box[3] > 0
    return root, "".join(root.itertext())


def hide_dot(monkeypatch, tmp_path):
    """A PATH with no dot on it (an empty directory only)."""
    empty = tmp_path / "no-dot-here"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(empty))


def hide_matplotlib(monkeypatch):
    """Make `import matplotlib` fail in this process, as when it is not installed."""
    for name in [name for name in sys.modules if name.split(".")[0] == "matplotlib"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


def test_matplotlib_draws_a_real_svg_and_png(tmp_path):
    root, _ = workspace_scene()
    assert viz.render(root, tmp_path / "root.svg", engine="matplotlib") == \
        str(tmp_path / "root.svg")
    _, text = svg_document(tmp_path / "root.svg")
    for label in ("root: Workspace", "root/scope[0]: Workspace (top)",
                  "root/scope[1]: Workspace (dormant)", "root.shared: Workspace", "vocab"):
        assert label in text                 # the text stays text: searchable
    viz.render(control_net(), tmp_path / "net.PNG", engine="matplotlib")
    width, height = png_size(tmp_path / "net.PNG")
    assert 300 < width < 3000 and 200 < height < 3000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.PNG", "root.svg"]


def test_without_dot_render_draws_with_matplotlib(tmp_path, monkeypatch):
    hide_dot(monkeypatch, tmp_path)
    root, _ = workspace_scene()
    viz.render(root, tmp_path / "ws.png")
    width, height = png_size(tmp_path / "ws.png")
    assert 300 < width < 3000 and 100 < height < 3000
    viz.render(root, tmp_path / "ws.svg")
    assert "root/scope[1]: Workspace (dormant)" in svg_document(tmp_path / "ws.svg")[1]


def test_without_dot_a_fresh_process_draws_both_pictures(tmp_path):
    # The newcomer's machine: no dot anywhere on PATH, in a process of its own.
    (tmp_path / "bin").mkdir()
    script = textwrap.dedent(f"""
        import shutil, scopeops as so
        assert shutil.which("dot") is None
        ws = so.Workspace()
        ws["w"] = 1.0
        so.viz.render(ws, {str(tmp_path / 'ws.svg')!r})
        so.viz.render(ws, {str(tmp_path / 'ws.png')!r})
    """)
    env = dict(os.environ, PATH=str(tmp_path / "bin"), PYTHONPATH=PACKAGE_PARENT)
    # cwd: `python -c` puts it first on sys.path, and a source checkout's bare sources
    # must not shadow the package under test.
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    svg_document(tmp_path / "ws.svg")
    assert png_size(tmp_path / "ws.png")[0] > 50


@pytest.mark.skipif(not DOT_INSTALLED, reason="Graphviz's dot is not installed here")
def test_with_graphviz_render_draws_with_dot(tmp_path):
    root, _ = workspace_scene()
    viz.render(root, tmp_path / "root.svg")
    root_element, text = svg_document(tmp_path / "root.svg")
    assert "Generated by graphviz" in (tmp_path / "root.svg").read_text()
    assert "root/scope[1] (dormant)" in text
    viz.render(control_net(), tmp_path / "net.png", engine="dot")
    assert png_size(tmp_path / "net.png")[0] > 100


def test_with_neither_dot_nor_matplotlib_render_says_how_to_install_either(tmp_path,
                                                                        monkeypatch):
    hide_dot(monkeypatch, tmp_path)
    hide_matplotlib(monkeypatch)
    with pytest.raises(viz.GraphvizNotFoundError) as info:
        viz.render(so.Workspace(), tmp_path / "ws.svg")
    message = str(info.value)
    for hint in ('pip install "scopeops[demo]"', "apt-get install graphviz",
                 "brew install graphviz", "dot -V", "tree()"):
        assert hint in message
    assert isinstance(info.value, viz.RendererNotFoundError)
    assert isinstance(info.value, viz.PictureError) and isinstance(info.value, so.ScopeError)
    assert list(tmp_path.iterdir()) == [tmp_path / "no-dot-here"]


def test_engine_dot_without_dot_says_how_to_install_graphviz(tmp_path, monkeypatch):
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    with pytest.raises(viz.GraphvizNotFoundError, match="brew install graphviz"):
        viz.render(so.Workspace(), tmp_path / "ws.png", engine="dot")
    assert list(tmp_path.iterdir()) == []


def test_engine_matplotlib_without_matplotlib_says_how_to_install_it(tmp_path, monkeypatch):
    hide_matplotlib(monkeypatch)
    with pytest.raises(viz.RendererNotFoundError, match=r'pip install "scopeops\[demo\]"'):
        viz.render(so.Workspace(), tmp_path / "ws.png", engine="matplotlib")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["ws.pdf", "ws.dot", "ws", "ws.svg.txt"])
def test_an_unknown_extension_is_a_value_error_whatever_is_installed(tmp_path, monkeypatch,
                                                                     name):
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    hide_matplotlib(monkeypatch)
    with pytest.raises(ValueError, match=r"\.svg or \.png"):
        viz.render(so.Workspace(), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, error", [({"engine": "cairo"}, ValueError),
                                           ({"depth": -1}, ValueError),
                                           ({"hide_gradients": "yes"}, TypeError)])
def test_bad_render_options_are_refused_before_anything_is_written(tmp_path, kwargs, error):
    with pytest.raises(error):
        viz.render(so.Workspace(), tmp_path / "ws.svg", **kwargs)
    with pytest.raises(TypeError, match="so.viz draws"):
        viz.render(object(), tmp_path / "ws.svg")
    assert list(tmp_path.iterdir()) == []


def test_a_failing_matplotlib_drawing_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "ws.png"
    target.write_text("old picture")

    def half_drawn(boxes, links, out, file_format):
        out.write(PNG_MAGIC)          # the renderer writes into an open file
        raise RuntimeError("the renderer broke")

    monkeypatch.setattr(viz.diagram, "draw", half_drawn)
    with pytest.raises(RuntimeError, match="renderer broke"):
        viz.render(so.Workspace(), target, engine="matplotlib")
    assert target.read_text() == "old picture"
    assert [p.name for p in tmp_path.iterdir()] == ["ws.png"]


def test_a_png_too_big_to_write_is_a_picture_error(tmp_path):
    ws = so.Workspace()
    for k in range(viz.PNG_MAX_PIXELS // 16 + 10):   # one 16 px line per blob
        ws[f"blob_{k}_of_many"] = k
    with pytest.raises(viz.PictureError, match=r"draw less .*\.svg"):
        viz.render(ws, tmp_path / "huge.png", engine="matplotlib", fold=False)
    assert list(tmp_path.iterdir()) == []


def fake_dot(tmp_path, script):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    dot = bin_dir / "dot"
    dot.write_text("#!/bin/sh\n" + script)
    dot.chmod(dot.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(bin_dir) + os.pathsep + os.environ.get("PATH", "")   # found before a real dot


@pytest.mark.skipif(os.name != "posix", reason="the fake dot is a shell script")
def test_a_failing_dot_raises_graphviz_error_and_leaves_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_dot(tmp_path, "echo 'syntax error in line 1' >&2\nexit 3\n"))
    target = tmp_path / "ws.svg"
    target.write_text("old picture")
    with pytest.raises(viz.GraphvizError, match="exit status 3.*syntax error in line 1"):
        viz.render(so.Workspace(), target)
    assert target.read_text() == "old picture"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "ws.svg"]


@pytest.mark.skipif(os.name != "posix", reason="the fake dot is a shell script")
def test_a_dot_that_hangs_is_stopped_by_the_timeout(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_dot(tmp_path, "exec sleep 30\n"))
    with pytest.raises(viz.GraphvizError, match="within 0.3 s"):
        viz.render(so.Workspace(), tmp_path / "ws.svg", timeout=0.3)
    assert not (tmp_path / "ws.svg").exists()


@pytest.mark.skipif(os.name != "posix", reason="the fake dot is a shell script")
def test_with_dot_on_path_render_hands_it_the_to_dot_source_with_the_options(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv("PATH", fake_dot(tmp_path, 'echo "format $1"\ncat\n'))
    root, _ = steps_scene(6)
    viz.render(root, tmp_path / "ws.png")
    assert (tmp_path / "ws.png").read_text() == "format -Tpng\n" + viz.to_dot(root)
    viz.render(root, tmp_path / "ws.svg", depth=0, fold=False)
    assert (tmp_path / "ws.svg").read_text() == "format -Tsvg\n" + viz.to_dot(root, depth=0,
                                                                              fold=False)


# -- a 6-step model stays readable --------------------------------------------------------

# The bound of docs/pictures.md: at 9 pt text and 100 dpi, issue 15's 6-step model (Do steps
# on a stack, variables, gradients, micro-batch accumulation) draws within 2,400 x 1,200 px.
READABLE = (2400, 1200)


def test_a_six_step_model_draws_within_the_readable_bound(tmp_path):
    root, _ = six_step_model()
    viz.render(root, tmp_path / "model.png", engine="matplotlib")
    width, height = png_size(tmp_path / "model.png")
    assert width <= READABLE[0] and height <= READABLE[1], (width, height)
    viz.render(root, tmp_path / "unfolded.png", engine="matplotlib", fold=False)
    assert png_size(tmp_path / "unfolded.png")[1] > READABLE[1]     # folding is what fits it


def test_a_six_step_model_picture_shows_the_fold_and_hides_gradients(tmp_path):
    root, _ = six_step_model()
    viz.render(root, tmp_path / "model.svg", engine="matplotlib", hide_gradients=True)
    _, text = svg_document(tmp_path / "model.svg")
    assert "root/microbatch_scope[0]/steps[1..5]: 5 alike Workspaces (dormant)" in text
    assert "h_next -> h2 ... h6" in text
    assert "_grad" not in text and "gradients hidden" in text
    full = svg_document(tmp_path / "model.svg")[1]
    viz.render(root, tmp_path / "full.svg", engine="matplotlib")
    assert "h_next_grad -> h2_grad ... h6_grad" in svg_document(tmp_path / "full.svg")[1]
    assert len(full) < len(svg_document(tmp_path / "full.svg")[1])


def test_a_six_step_model_picture_follows_the_depth_limit(tmp_path):
    root, _ = six_step_model()
    viz.render(root, tmp_path / "top.png", engine="matplotlib", depth=0)
    viz.render(root, tmp_path / "all.png", engine="matplotlib")
    top, everything = png_size(tmp_path / "top.png"), png_size(tmp_path / "all.png")
    assert top[0] < everything[0] / 2 and top[1] < everything[1]
    viz.render(root, tmp_path / "one.svg", engine="matplotlib", depth=1)
    text = svg_document(tmp_path / "one.svg")[1]
    assert "root/microbatch_scope[0]: Workspace" in text and "steps[0]" not in text
    assert "(6 workspaces not shown: depth limit)" in text


@pytest.mark.skipif(not DOT_INSTALLED, reason="Graphviz's dot is not installed here")
def test_a_six_step_model_drawn_by_dot_is_folded_too(tmp_path):
    root, _ = six_step_model()
    viz.render(root, tmp_path / "folded.png", engine="dot")
    viz.render(root, tmp_path / "unfolded.png", engine="dot", fold=False)
    assert png_size(tmp_path / "folded.png")[1] < png_size(tmp_path / "unfolded.png")[1] / 2
