"""Operators decide in-place use by the blobs names resolve to, not by the names: two inner
names forwarded to one outer blob are the same blob (docs/workspaces.md, issue 14 finding 3)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import scopeops as so
from scopeops.ops import Operator, register


def fc_gradient_with_bindings(bindings):
    """FCGradient(X, W, dY) -> (dW, db, dX) in a workspace whose names are ``bindings``."""
    rng = np.random.default_rng(0)
    x, w, dy = rng.uniform(-1, 1, (3, 4)), rng.uniform(-1, 1, (4, 4)), rng.uniform(-1, 1, (3, 4))
    parent = so.Workspace()
    parent["dy"], parent["x0"], parent["w0"] = dy, x, w
    parent.run_operator_once(so.create_operator("Copy", ["x0"], ["x"]))
    parent.run_operator_once(so.create_operator("Copy", ["w0"], ["w"]))
    child = so.Workspace.from_bindings(parent, bindings)
    child.run_operator_once(so.create_operator("FCGradient", ["x", "w", "dy"],
                                               ["dw", "db", "dx"]))
    return child, x, w, dy


def test_fc_gradient_with_dx_bound_to_the_blob_of_x_gives_the_right_dw():
    # Issue 14's repro (there dX was written first, corrupting X before dW read it).
    child, x, w, dy = fc_gradient_with_bindings({"dy": "dy", "x": "x", "w": "w", "dx": "x"})
    np.testing.assert_allclose(child["dw"], dy.T @ x)
    np.testing.assert_allclose(child["dx"], dy @ w)


def test_fc_gradient_with_dw_bound_to_the_blob_of_w_gives_the_right_dx():
    # The same bug in Caffe2's output order, where dW is written before dX reads W.
    child, x, w, dy = fc_gradient_with_bindings({"dy": "dy", "x": "x", "w": "w", "dw": "w"})
    np.testing.assert_allclose(child["dx"], dy @ w)
    np.testing.assert_allclose(child["dw"], dy.T @ x)


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


# --- every registered operator, with each output bound to each input's blob ------------------


def floats(*shape, seed=0, low=-1.0, high=1.0):
    return np.random.default_rng(seed).uniform(low, high, shape)


def away(*shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)


def net_of(name, *ops):
    net = so.Net(name)
    for type_name, inputs, outputs, args in ops:
        net.add_op(type_name, inputs, outputs, **args)
    return net


# op type -> (inner inputs {name: value}, inner outputs, args). Output names that are also
# input names are in place by name in every run (the scope blob of Do).
ALIAS_CASES = {
    "Abs": ({"x": away(3, 4)}, ["y"], {}),
    "AbsGradient": ({"x": away(3, 4), "dy": floats(3, 4, seed=1)}, ["dx"], {}),
    "Add": ({"a": floats(3, 4), "b": floats(4, seed=1)}, ["c"], {}),
    "AddGradient": ({"dc": floats(3, 4), "a": floats(3, 4), "b": floats(4)}, ["da", "db"], {}),
    "And": ({"a": np.array([[True, False]]), "b": np.array([True, True])}, ["c"], {}),
    "AveragedLoss": ({"x": floats(3, 4)}, ["y"], {}),
    "AveragedLossGradient": ({"x": floats(3, 4), "dy": np.array(2.0)}, ["dx"], {}),
    "Cast": ({"x": floats(3, 4)}, ["y"], {"to": "float32"}),
    "CastGradient": ({"x": floats(3, 4), "dy": floats(3, 4, seed=1)}, ["dx"], {}),
    "Concat": ({"a": floats(2, 3), "b": floats(2, 1, seed=1)}, ["y", "y_dims"], {"axis": 1}),
    "ConstantFill": ({"like": floats(2, 3)}, ["y"], {"value": 2.0}),
    "Copy": ({"x": floats(3, 4)}, ["y"], {}),
    "CopyOnDeviceLike": ({"x": floats(3, 4), "like": floats(2)}, ["y"], {}),
    "Cos": ({"x": floats(3, 4)}, ["y"], {}),
    "CosGradient": ({"x": floats(3, 4), "dy": floats(3, 4, seed=1)}, ["dx"], {}),
    "CreateScope": ({}, ["scope"], {}),
    "Div": ({"a": away(3, 4), "b": away(4, seed=1)}, ["c"], {}),
    "DivGradient": ({"b": away(3, 4), "c": floats(3, 4, seed=1), "dc": floats(3, 4, seed=2),
                     "a": floats(4, seed=3)}, ["da", "db"], {}),
    "Do": ({"x": floats(3), "scope": so.WorkspaceStack()}, ["y", "scope"],
           {"net": net_of("square", ("Sqr", ["a"], ["b"], {})), "inner_blobs": ["a", "b"],
            "outer_blobs_idx": [0, 1]}),
    "DotProduct": ({"x": floats(3, 4), "y": floats(3, 4, seed=1)}, ["d"], {}),
    "DotProductGradient": ({"x": floats(3, 4), "y": floats(3, 4, seed=1),
                            "dd": floats(3, seed=2)}, ["dx", "dy"], {}),
    "EQ": ({"a": np.array([1, 2, 3]), "b": np.array([3, 2, 1])}, ["c"], {}),
    "Exp": ({"x": floats(3, 4)}, ["y"], {}),
    "FC": ({"x": floats(3, 4), "w": floats(2, 4, seed=1), "b": floats(2, seed=2)}, ["y"], {}),
    "FCGradient": ({"x": floats(3, 4), "w": floats(2, 4, seed=1), "dy": floats(3, 2, seed=2)},
                   ["dw", "db", "dx"], {}),
    "Flatten": ({"x": floats(2, 3, 4)}, ["y"], {}),
    "GE": ({"a": floats(3, 4), "b": floats(4, seed=1)}, ["c"], {}),
    "GT": ({"a": floats(3, 4), "b": floats(4, seed=1)}, ["c"], {}),
    "GaussianFill": ({"like": floats(2, 3)}, ["y"], {"seed": 1}),
    "GivenTensorBoolFill": ({"like": np.zeros(2)}, ["y"], {"values": [True, False]}),
    "GivenTensorDoubleFill": ({"like": np.zeros(2)}, ["y"], {"values": [1.0, 2.0]}),
    "GivenTensorFill": ({"like": np.zeros(2)}, ["y"], {"values": [1.0, 2.0]}),
    "GivenTensorInt64Fill": ({"like": np.zeros(2)}, ["y"], {"values": [1, 2]}),
    "GivenTensorIntFill": ({"like": np.zeros(2)}, ["y"], {"values": [1, 2]}),
    "GivenTensorStringFill": ({"like": np.zeros(2)}, ["y"], {"values": ["a", "b"]}),
    "HasScope": ({"scope": so.WorkspaceStack()}, ["y"], {}),
    "If": ({"cond": np.array([True]), "x": floats(3)}, ["y"],
           {"then_net": net_of("then", ("Sqr", ["x"], ["y"], {})),
            "else_net": net_of("else", ("Neg", ["x"], ["y"], {}))}),
    "Iter": ({"it": np.array([4])}, ["it2"], {}),
    "LE": ({"a": floats(3, 4), "b": floats(4, seed=1)}, ["c"], {}),
    "LSTMUnit": ({"h": floats(1, 3, 2), "c": floats(1, 3, 2, seed=1),
                  "g": floats(1, 3, 8, seed=2), "lengths": np.array([3, 1, 2], np.int32),
                  "t": np.array([1], np.int32)}, ["hidden", "cell"], {}),
    "LSTMUnitGradient": ({"h": floats(1, 3, 2), "c": floats(1, 3, 2, seed=1),
                          "g": floats(1, 3, 8, seed=2), "lengths": np.array([3, 1, 2], np.int32),
                          "t": np.array([1], np.int32), "hidden": floats(1, 3, 2, seed=3),
                          "cell": floats(1, 3, 2, seed=4), "dh": floats(1, 3, 2, seed=5),
                          "dc": floats(1, 3, 2, seed=6)}, ["dh_prev", "dc_prev", "dg"], {}),
    "LT": ({"a": floats(3, 4), "b": floats(4, seed=1)}, ["c"], {}),
    "LearningRate": ({"it": np.array([30])}, ["lr"],
                     {"base_lr": -0.1, "policy": "step", "stepsize": 20, "gamma": 0.9}),
    "Log": ({"x": floats(3, 4, low=0.5)}, ["y"], {}),
    "MakeTwoClass": ({"x": floats(3, 2, low=0.0)}, ["y"], {}),
    "MakeTwoClassGradient": ({"dy": floats(3, 2)}, ["dx"], {}),
    "MatMul": ({"a": floats(3, 3), "b": floats(3, 3, seed=1), "like": floats(9)}, ["c"], {}),
    "Mul": ({"a": floats(3, 4), "b": floats(3, 4, seed=1)}, ["c"], {}),
    "MulGradient": ({"a": floats(3, 4), "b": floats(4, seed=1), "dc": floats(3, 4, seed=2)},
                    ["da", "db"], {}),
    "Neg": ({"x": floats(3, 4)}, ["y"], {}),
    "Negative": ({"x": floats(3, 4)}, ["y"], {}),
    "StopGradient": ({"x": floats(3, 4)}, ["y"], {}),
    "Not": ({"x": np.array([True, False])}, ["y"], {}),
    "Or": ({"a": np.array([[True, False]]), "b": np.array([False, False])}, ["c"], {}),
    "Pow": ({"x": floats(3, 4, low=0.1)}, ["y"], {"exponent": 2.5}),
    "Print": ({"x": floats(2)}, [], {}),
    "Relu": ({"x": floats(3, 4)}, ["y"], {}),
    "ReluGradient": ({"y": floats(3, 4), "dy": floats(3, 4, seed=1)}, ["dx"], {}),
    "ResizeLike": ({"x": floats(6), "like": floats(2, 3)}, ["y"], {}),
    "Scale": ({"x": floats(3, 4)}, ["y"], {"scale": 3.0}),
    "Sigmoid": ({"x": floats(3, 4)}, ["y"], {}),
    "SigmoidGradient": ({"y": floats(3, 4, low=0), "dy": floats(3, 4, seed=1)}, ["dx"], {}),
    "Sin": ({"x": floats(3, 4)}, ["y"], {}),
    "SinGradient": ({"x": floats(3, 4), "dy": floats(3, 4, seed=1)}, ["dx"], {}),
    "Softmax": ({"x": floats(3, 4)}, ["y"], {}),
    "SoftmaxGradient": ({"y": floats(3, 4, low=0), "dy": floats(3, 4, seed=1)}, ["dx"], {}),
    "SoftmaxWithLoss": ({"x": floats(3, 4), "t": np.array([0, 3, 1], np.int32),
                         "w": floats(3, low=0.5, seed=1)}, ["p", "loss"], {}),
    "SoftmaxWithLossGradient": ({"x": floats(3, 4), "t": np.array([0, 3, 1], np.int32),
                                 "w": floats(3, low=0.5, seed=1), "p": floats(3, 4, low=0),
                                 "dl": np.array(1.5)}, ["dx"], {}),
    "Split": ({"x": floats(4, 3), "sizes": np.array([1, 3], np.int32)}, ["p", "q"],
              {"axis": 0}),
    "Sqr": ({"x": floats(3, 4)}, ["y"], {}),
    "SquaredL2Distance": ({"x": floats(3, 4), "y": floats(3, 4, seed=1)}, ["d"], {}),
    "SquaredL2DistanceGradient": ({"x": floats(3, 4), "y": floats(3, 4, seed=1),
                                   "dd": floats(3, seed=2)}, ["dx", "dy"], {}),
    "Sub": ({"a": floats(3, 4), "b": floats(3, 4, seed=1)}, ["c"], {}),
    "SubGradient": ({"dc": floats(3, 4), "a": floats(3, 4), "b": floats(3, 1)}, ["da", "db"],
                    {}),
    "Sum": ({"a": floats(3, 4), "b": floats(3, 4, seed=1), "c": floats(3, 4, seed=2)},
            ["s"], {}),
    "SumElements": ({"x": floats(3, 4)}, ["y"], {}),
    "SumElementsGradient": ({"x": floats(3, 4), "dy": np.array(2.0)}, ["dx"], {}),
    "SumReduceLike": ({"a": floats(3, 4), "b": floats(4, seed=1)}, ["c"], {}),
    "Tanh": ({"x": floats(3, 4)}, ["y"], {}),
    "TanhGradient": ({"y": floats(3, 4), "dy": floats(3, 4, seed=1)}, ["dx"], {}),
    "UniformFill": ({"like": floats(2, 3), "lo": np.array([1.0]), "hi": np.array([2.0])},
                    ["y"], {"seed": 3}),
    # A While's nets write and re-read its blobs by name on every iteration, so an output
    # bound to an input's blob changes the loop itself: its case has no outputs (its nets
    # count down in place), and test_control_flow covers its in-place use.
    "While": ({"cond": np.array([True]), "n": np.array([3.0]), "one": np.array([1.0]),
               "zero": np.array([0.0])}, [],
              {"loop_net": net_of("count_down", ("Sub", ["n", "one"], ["n"], {})),
               "cond_net": net_of("positive", ("GT", ["n", "zero"], ["cond"], {}))}),
    "WeightedSum": ({"x0": floats(3, 4), "w0": np.array([2.0]), "x1": floats(3, 4, seed=1),
                     "w1": np.array([-0.5])}, ["y"], {}),
    "WeightedSumGradient": ({"dy": floats(3, 4), "x0": floats(3, 4, seed=1),
                             "w0": np.array([2.0]), "x1": floats(3, 4, seed=2),
                             "w1": np.array([-0.5])}, ["dx0", "dx1", "dw0", "dw1"],
                            {"grad_on_w": True}),
    "XavierFill": ({"like": floats(2, 3)}, ["y"], {"seed": 2}),
    "ZeroGradient": ({"x": floats(2)}, [], {}),
}


def builtin_operators():
    return [name for name in so.ops.registered_operators()
            if so.ops.schema(name).cls.__module__.startswith("scopeops.")]


def test_every_built_in_operator_has_an_aliasing_case():
    assert sorted(ALIAS_CASES) == builtin_operators()


def alias_pairs():
    for type_name, (inputs, outputs, _) in ALIAS_CASES.items():
        names = list(inputs)
        for j, out in enumerate(outputs):
            if out in inputs:
                continue
            for i in range(len(names)):
                yield pytest.param(type_name, i, j, id=f"{type_name}-in{i}-out{j}")


def run_bound(type_name, alias=None):
    """Run the case's op in a workspace whose inner names are forwarded to a parent's blobs,
    output ``alias[1]`` to the blob of input ``alias[0]`` (``alias`` may also be a dict
    {output: input}). Returns the outputs' values."""
    inputs, outputs, args = ALIAS_CASES[type_name]
    names = list(inputs)
    parent = so.Workspace()
    bindings = {}
    for k, (name, value) in enumerate(inputs.items()):
        outer = f"in{k}"
        if isinstance(value, np.ndarray):
            # Copied in, so the blob owns its buffer as in a net (fed arrays are never
            # written through, which would hide in-place hazards).
            parent.feed_blob(f"{outer}/fed", value.copy())
            parent.run_operator_once(so.create_operator("Copy", [f"{outer}/fed"], [outer]))
        else:
            parent.feed_blob(outer, value)
        bindings[name] = outer
    for j, out in enumerate(outputs):
        if out not in inputs:
            parent.create_blob(f"out{j}")
            bindings[out] = f"out{j}"
    if isinstance(alias, tuple):
        alias = {alias[1]: alias[0]}
    for j, i in (alias or {}).items():
        bindings[outputs[j]] = f"in{i}"
    child = so.Workspace.from_bindings(parent, bindings)
    if type_name == "Iter" and not alias:
        # Iter works only in place: its reference run counts in the input's own blob.
        child.run_operator_once(so.create_operator("Iter", names, names))
        return [child[names[0]].copy()]
    child.run_operator_once(so.create_operator(type_name, names, outputs, **args))
    results = []
    for out in outputs:
        value = child[out]
        results.append(value.copy() if isinstance(value, np.ndarray) else value)
    return results


def assert_same_outputs(expected, got):
    for k, (want, have) in enumerate(zip(expected, got, strict=True)):
        if isinstance(want, np.ndarray):
            assert isinstance(have, np.ndarray) and have.dtype == want.dtype, k
            np.testing.assert_array_equal(have, want, err_msg=f"output {k}")
        else:
            assert type(have) is type(want), k


@pytest.mark.parametrize("type_name,i,j", [p for p in alias_pairs() if p.id != "Do-in1-out0"])
def test_an_output_bound_to_an_inputs_blob_gives_the_unbound_result(type_name, i, j):
    assert_same_outputs(run_bound(type_name), run_bound(type_name, alias=(i, j)))


@st.composite
def several_aliases(draw):
    """An op and a binding of some of its outputs, each to a different input's blob."""
    type_name = draw(st.sampled_from(sorted(t for t in ALIAS_CASES if t != "Do")))
    inputs, outputs, _ = ALIAS_CASES[type_name]
    free = [j for j, out in enumerate(outputs) if out not in inputs]
    chosen = draw(st.lists(st.sampled_from(free), unique=True, max_size=len(inputs))) \
        if free and inputs else []
    targets = draw(st.permutations(range(len(inputs))))[:len(chosen)] if chosen else []
    return type_name, dict(zip(chosen, targets, strict=True))


@settings(max_examples=150, deadline=None)
@given(several_aliases())
def test_several_outputs_bound_to_input_blobs_at_once_give_the_unbound_result(case):
    type_name, alias = case
    assert_same_outputs(run_bound(type_name), run_bound(type_name, alias=alias))


def test_a_do_whose_scope_blob_is_bound_to_an_output_is_refused_when_built():
    # The scope blob holds the workspace stack; a data output written into it would lose it.
    with pytest.raises(so.OperatorError, match="the scope blob scope is also bound to another "
                                               "of its inputs or outputs"):
        run_bound("Do", alias=(1, 0))


def test_a_do_whose_scope_blob_becomes_an_outputs_blob_refuses_to_run():
    parent, child = bound_child({"x": "x", "scope": "scope"}, x=np.ones(2),
                                scope=so.WorkspaceStack())
    inputs, outputs, args = ALIAS_CASES["Do"]
    child.create_net(so.NetDef("n", [so.create_operator("Do", ["x", "scope"], ["y", "scope"],
                                                        **args)]))
    child.run_net("n")
    child.remove_blob("y")
    child.add_blob_mapping(parent, {"y": "scope"})
    with pytest.raises(so.OperatorError, match="the scope blob scope is also bound"):
        child.run_net("n")
    assert isinstance(parent["scope"], so.WorkspaceStack)
    parent["scope"].check_stack()
