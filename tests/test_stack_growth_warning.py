"""A stack that forward Dos only push on is reported once with a ResourceWarning; stacks
that a CreateScope clears, that gradient Dos pop, or that the caller clears are not."""

import warnings

import numpy as np
import pytest

import scopeops as so
from scopeops.control import add_while
from scopeops.ops.control import GROWTH_WARNING_DEPTH


def doubling_step():
    step = so.Net("step")
    step.Scale(["a"], ["b"], scale=2.0)
    return step


def forward_only_net(create_scope=False, reuse_workspace=False):
    net = so.Net("forward")
    if create_scope:
        net.CreateScope([], ["scope"])
    net.Do(["x", "scope"], ["y", "scope"], net=doubling_step(), inner_blobs=["a", "b"],
           reuse_workspace=reuse_workspace)
    return net


def workspace_with(net):
    ws = so.Workspace()
    ws["x"] = np.ones(3)
    ws.create_blob("scope")
    ws.create_net(net)
    return ws


def growth_warnings(caught):
    return [w for w in caught if issubclass(w.category, ResourceWarning)]


def run(ws, net_name, times):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(times):
            ws.run_net(net_name)
    return growth_warnings(caught)


def test_a_forward_only_do_net_without_create_scope_warns_that_its_stack_only_grows():
    ws = workspace_with(forward_only_net())
    with pytest.warns(ResourceWarning, match=f"scope blob scope only grows: "
                                             f"{GROWTH_WARNING_DEPTH} workspaces"):
        for _ in range(GROWTH_WARNING_DEPTH):
            ws.run_net("forward")


def test_the_growth_warning_says_how_to_fix_it():
    ws = workspace_with(forward_only_net())
    [warning] = run(ws, "forward", GROWTH_WARNING_DEPTH)
    message = str(warning.message)
    assert "Put a CreateScope for scope before the Do" in message
    assert "reuse_workspace=True" in message and "so.add_gradient_ops" in message


def test_the_growth_warning_comes_once_per_stack():
    ws = workspace_with(forward_only_net())
    assert len(run(ws, "forward", 3 * GROWTH_WARNING_DEPTH)) == 1


def test_the_growth_warning_points_at_the_callers_line():
    ws = workspace_with(forward_only_net())
    [warning] = run(ws, "forward", GROWTH_WARNING_DEPTH)
    assert warning.filename == __file__


def test_steps_sharing_a_stack_warn_once_it_grew_by_the_threshold():
    net = so.Net("unrolled")
    for t in range(10):
        net.Do([f"x{t}", "scope"], [f"x{t + 1}", "scope"], net=doubling_step(),
               inner_blobs=["a", "b"])
    ws = so.Workspace()
    ws["x0"] = np.ones(2)
    ws.create_blob("scope")
    ws.create_net(net)
    # Each step's Do sees the stack 10 deeper at every run: 1 + 10 * 100 > the threshold.
    assert run(ws, "unrolled", GROWTH_WARNING_DEPTH // 10) == []
    assert len(run(ws, "unrolled", 1)) == 1


def test_a_do_net_with_create_scope_never_warns():
    ws = workspace_with(forward_only_net(create_scope=True))
    assert run(ws, "forward", 2 * GROWTH_WARNING_DEPTH) == []
    assert len(ws["scope"]) == 1


def test_a_do_net_with_its_backward_pass_never_warns():
    net = forward_only_net()
    net.SumElements(["y"], ["loss"])
    so.add_gradient_ops(net, ["loss"])
    ws = workspace_with(net)
    assert run(ws, "forward", 2 * GROWTH_WARNING_DEPTH) == []
    assert ws["scope"].empty()


def test_a_reusing_do_never_warns():
    ws = workspace_with(forward_only_net(reuse_workspace=True))
    assert run(ws, "forward", 2 * GROWTH_WARNING_DEPTH) == []
    assert len(ws["scope"]) == 1


def test_a_stack_the_caller_clears_between_runs_never_warns():
    ws = workspace_with(forward_only_net())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2 * GROWTH_WARNING_DEPTH):
            ws.run_net("forward")
            ws["scope"].clear()
    assert growth_warnings(caught) == []


def test_a_long_while_loop_with_its_gradient_never_warns():
    # One run pushes more workspaces than the threshold, all popped by the gradient loop.
    ws = so.Workspace()
    ws["x"] = np.array([0.5])
    ws["i"] = np.array([0.0])
    ws["n"] = np.array([float(GROWTH_WARNING_DEPTH + 50)])
    ws["one"] = np.array([1.0])
    net = so.Net("loop")
    net.add_external_inputs("x", "i", "n", "one")
    net.LT(["i", "n"], ["go"])
    body = so.Net("body")
    body.Scale(["x"], ["x"], scale=1.0)
    body.Add(["i", "one"], ["i"])
    body.LT(["i", "n"], ["go"])
    add_while(net, "go", body)
    net.SumElements(["x"], ["loss"])
    so.add_gradient_ops(net, ["loss"])
    ws.create_net(net)
    assert run(ws, "loop", 1) == []
