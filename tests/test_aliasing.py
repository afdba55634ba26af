"""Operators decide in-place use by the blobs names resolve to, not by the names: two inner
names forwarded to one outer blob are the same blob (docs/workspaces.md, issue 14 finding 3)."""

import numpy as np
import pytest

import scopeops as so
from scopeops.ops import Operator, register


def test_fc_gradient_with_dx_bound_to_the_blob_of_x_gives_the_right_dw():
    rng = np.random.default_rng(0)
    x, w, dy = rng.uniform(-1, 1, (3, 4)), rng.uniform(-1, 1, (4, 4)), rng.uniform(-1, 1, (3, 4))
    parent = so.Workspace()
    parent["dy"], parent["x0"], parent["w"] = dy, x, w
    parent.run_operator_once(so.create_operator("Copy", ["x0"], ["x"]))
    child = so.Workspace.from_bindings(parent, {"dy": "dy", "x": "x", "w": "w", "dx": "x"})
    child.run_operator_once(so.create_operator("FCGradient", ["x", "w", "dy"],
                                               ["dw", "db", "dx"]))
    np.testing.assert_allclose(child["dw"], dy.T @ x)
    np.testing.assert_allclose(child["dx"], dy @ w)


@register("TestOnlyAliasing_NotInPlace", inputs=1, outputs=1, allow_inplace=False,
          doc="Y = 2 X, refusing to run in place.")
class _NotInPlace(Operator):
    def run(self):
        x = self.input(0)
        np.multiply(x, 2, out=self.output(0, x.shape, x.dtype))


@register("TestOnlyAliasing_Counter", inputs=1, outputs=1, enforce_inplace={(0, 0)},
          doc="X += 1, only in place.")
class _Counter(Operator):
    def run(self):
        x = self.input(0)
        np.add(x, 1, out=x)


def bound_child(bindings, **values):
    parent = so.Workspace()
    for name, value in values.items():
        parent[name] = value
    return parent, so.Workspace.from_bindings(parent, bindings)


def test_an_op_that_forbids_in_place_refuses_two_names_of_one_blob_when_built():
    parent, child = bound_child({"x": "x", "y": "x"}, x=np.ones(3))
    with pytest.raises(so.OperatorError, match=r"does not allow input 0 and output 0 to be the "
                                               r"same blob \(names x and y reach one blob\)"):
        child.create_net(so.NetDef("n", [so.create_operator("TestOnlyAliasing_NotInPlace",
                                                            ["x"], ["y"])]))
    np.testing.assert_array_equal(parent["x"], np.ones(3))


def test_an_op_that_forbids_in_place_still_refuses_one_name():
    ws = so.Workspace()
    ws["x"] = np.ones(3)
    with pytest.raises(so.OperatorError, match=r"same blob \(blob x\)"):
        ws.run_operator_once(so.create_operator("TestOnlyAliasing_NotInPlace", ["x"], ["x"]))


def test_an_op_that_forbids_in_place_refuses_to_run_once_a_rebinding_makes_its_blobs_meet():
    parent, child = bound_child({"x": "x"}, x=np.ones(3))
    child.create_net(so.NetDef("n", [so.create_operator("TestOnlyAliasing_NotInPlace",
                                                        ["x"], ["y"])]))
    child.run_net("n")
    np.testing.assert_array_equal(child["y"], 2 * np.ones(3))
    child.remove_blob("y")
    child.add_blob_mapping(parent, {"y": "x"})
    with pytest.raises(so.OperatorError, match="names x and y reach one blob"):
        child.run_net("n")
    np.testing.assert_array_equal(parent["x"], np.ones(3))


def test_an_op_that_works_only_in_place_accepts_two_names_of_one_blob():
    parent, child = bound_child({"a": "i", "b": "i"}, i=np.zeros(1, np.int64))
    child.run_operator_once(so.create_operator("TestOnlyAliasing_Counter", ["a"], ["b"]))
    assert parent["i"][0] == 1


def test_an_op_that_works_only_in_place_refuses_two_blobs():
    ws = so.Workspace()
    ws["a"] = np.zeros(1, np.int64)
    with pytest.raises(so.OperatorError, match=r"works in place: output 0 \(b\) must be the "
                                               r"same blob as input 0 \(a\)"):
        ws.run_operator_once(so.create_operator("TestOnlyAliasing_Counter", ["a"], ["b"]))
    assert not ws.has_blob("b")
