"""scopeops.caffe2: the gradient and device checkers, test_util, hypothesis_test_util,
model_helper, brew and task (docs/caffe2.md)."""


import numpy as np
import pytest
from hypothesis import given, settings
from support import run_python

from scopeops.caffe2.proto import caffe2_pb2
from scopeops.caffe2.python import (
    brew,
    core,
    device_checker,
    gradient_checker,
    model_helper,
    task,
    test_util,
    workspace,
)
from scopeops.caffe2.python import hypothesis_test_util as hu

CPU = caffe2_pb2.DeviceOption()


@pytest.fixture(autouse=True)
def clean_workspace():
    workspace.ResetWorkspace()
    yield
    workspace.ResetWorkspace()


# -- GradientChecker, NetGradientChecker, DeviceChecker --------------------------------------


@pytest.mark.parametrize("op_type", ["Relu", "Tanh", "Sigmoid", "Exp", "Abs"])
def test_gradient_checker_accepts_correct_gradients(op_type):
    x = np.random.RandomState(1).rand(2, 3).astype(np.float32) + 0.1
    op = core.CreateOperator(op_type, ["X"], ["Y"])
    checker = gradient_checker.GradientChecker(0.01, 0.05, CPU, "checker_ws")
    ok, grad, estimate = checker.CheckSimple(op, [x], 0, [0])
    assert ok and grad.shape == estimate.shape == x.shape and grad.dtype == np.float32
    assert op.HasField("device_option")                     # set, as Caffe2's checker does
    assert workspace.CurrentWorkspace() == "default" and workspace.Blobs() == []


def test_gradient_checker_uses_half_the_sum_of_squares_as_the_loss():
    x = np.array([1.0, -2.0, 3.0], np.float32)
    op = core.CreateOperator("Scale", ["X"], ["Y"], scale=3.0)
    ok, grad, estimate = gradient_checker.GradientChecker(0.01, 0.01).CheckSimple(
        op, [x], 0, [0])
    np.testing.assert_allclose(grad, 9.0 * x, rtol=1e-5)      # d/dx (3x)^2 / 2 = 9x
    np.testing.assert_allclose(estimate, 9.0 * x, rtol=1e-3)


def test_gradient_checker_applies_caffe2s_threshold():
    x = np.array([2.0], np.float32)
    op = core.CreateOperator("Exp", ["X"], ["Y"])
    # A coarse step makes the central difference of exp(2x)/2 miss by more than 1e-6.
    ok, grad, estimate = gradient_checker.GradientChecker(0.5, 1e-6).CheckSimple(
        op, [x], 0, [0])
    assert not ok and not np.isclose(grad, estimate, atol=1e-6, rtol=1e-6).all()


def test_net_gradient_checker_check_and_compare_nets():
    net = core.Net("ngc")
    x, w = net.AddExternalInputs("x", "w")
    y = net.Mul([x, w], "y")
    loss = net.AveragedLoss(net.Sqr(y), "loss")
    values = {"x": np.array([1.0, 2.0], np.float32), w: np.array([3.0, -1.0], np.float32)}
    mean, worst = gradient_checker.NetGradientChecker.Check(net, [loss], values, "x")
    assert worst < 0.05
    with pytest.raises(AssertionError, match="no gradient"):
        gradient_checker.NetGradientChecker.Check(net, [loss], {**values, "z": np.ones(1)},
                                                  "z")

    net1 = core.Net("compare_1")
    a, b, c, d = net1.AddExternalInputs("a", "b", "c", "d")
    a_b = net1.Sum([a, b], "a+b")
    c_d = net1.Sum([c, d], "c+d")
    x1 = net1.Mul([a_b, c_d], "x")
    net2 = core.Net("compare_2")
    products = [net2.Mul([p, q], str(p) + str(q)) for p in (a, b) for q in (c, d)]
    y2 = net2.Sum(products, "y")
    inputs = {blob: np.array([float(v)], np.float32) for v, blob in enumerate([a, b, c, d])}
    gradient_checker.NetGradientChecker.CompareNets(
        [net1, net2], [[x1], [y2]], [0], inputs_with_grads=[a, b, c, d], input_values=inputs)
    net3 = core.Net("compare_3")
    y3 = net3.Sum([a, b, c, d], "y3")
    with pytest.raises(AssertionError, match="Different forward pass results"):
        gradient_checker.NetGradientChecker.CompareNets(
            [net1, net3], [[x1], [y3]], [0], inputs_with_grads=[a, b, c, d],
            input_values=inputs)


def test_device_checker_on_the_cpu():
    op = core.CreateOperator("Relu", ["X"], ["Y"])
    x = np.array([-1.0, 2.0], np.float32)
    assert device_checker.DeviceChecker(0.01, [CPU]).CheckSimple(op, [x], [0])
    assert device_checker.DeviceChecker(0.01, [CPU, CPU]).CheckSimple(op, [x], [0])
    assert not op.HasField("device_option")             # the caller's op is not changed
    with pytest.raises(RuntimeError, match="CPU only"):
        device_checker.DeviceChecker(0.01, [core.DeviceOption(caffe2_pb2.CUDA, 0)]).CheckSimple(
            op, [x], [0])


# -- test_util and hypothesis_test_util ---------------------------------------------------------


class _Case(hu.HypothesisTestCase):
    def runTest(self):
        pass


def test_test_case_starts_with_an_empty_workspace():
    workspace.FeedBlob("leftover", np.ones(1))
    case = _Case()
    case.setUpClass()
    case.setUp()
    assert workspace.Blobs() == [] and isinstance(case.ws, workspace.C.Workspace)
    case.tearDown()
    assert test_util.rand_array(2, 3).dtype == np.float32


def test_assert_reference_checks_compares_outputs_and_gradients():
    case = _Case()
    op = core.CreateOperator("Relu", ["X"], ["Y"])
    x = np.array([-1.0, 2.0], np.float32)
    outputs = case.assertReferenceChecks(
        CPU, op, [x], lambda x: (np.maximum(x, 0),), output_to_grad="Y",
        grad_reference=lambda g, outputs, inputs: [g * (inputs[0] > 0)])
    np.testing.assert_array_equal(outputs[0], [0.0, 2.0])
    with pytest.raises(AssertionError, match="not matching the reference"):
        case.assertReferenceChecks(CPU, op, [x], lambda x: (x,))
    with pytest.raises(RuntimeError, match="wrong reference"):
        case.assertReferenceChecks(CPU, op, [x], lambda x: np.maximum(x, 0))
    with pytest.raises(ValueError, match="must supply an input"):
        case.assertReferenceChecks(CPU, op, [], lambda: ())
    assert workspace.CurrentWorkspace() == "default"


def test_assert_gradient_and_device_checks():
    case = _Case()
    op = core.CreateOperator("Tanh", ["X"], ["Y"])
    x = np.random.RandomState(0).randn(3, 2).astype(np.float32)
    case.assertGradientChecks(CPU, op, [x], 0, [0], stepsize=0.01, threshold=0.01)
    case.assertDeviceChecks([CPU], op, [x], [0])
    case.assertRunOpRaises(CPU, core.CreateOperator("Relu", ["X"], ["Y"]), [],
                           exception=RuntimeError, regexp="non-existing")


@settings(max_examples=5, deadline=None)
@given(arrays=hu.tensors(n=2, min_dim=1, max_dim=3), single=hu.tensor(dtype=np.int32),
       **hu.gcs)
def test_strategies_make_arrays_of_the_promised_kinds(arrays, single, gc, dc):
    assert len(arrays) == 2 and arrays[0].shape == arrays[1].shape
    assert 1 <= arrays[0].ndim <= 3 and arrays[0].dtype == np.float32
    assert single.dtype == np.int32 and single.min(initial=0) >= 0
    assert gc == CPU and dc == [CPU]


def test_importing_hypothesis_test_util_leaves_hypothesis_settings_alone():
    code = ("import hypothesis; before = hypothesis.settings.default.max_examples; "
            "import scopeops.caffe2.python.hypothesis_test_util as hu; "
            "assert hypothesis.settings.default.max_examples == before; "
            "assert hypothesis.settings.get_profile('dev').max_examples == 10; print('ok')")
    result = run_python(code)    # imports the scopeops under test, wherever pytest runs
    assert result.stdout.strip() == "ok", result.stderr


# -- model_helper and brew ----------------------------------------------------------------


def test_model_helper_nets_and_params():
    model = model_helper.ModelHelper(name="mh")
    assert model.net.Name().startswith("mh") and model.param_init_net.Name().startswith("mh_init")
    assert model.arg_scope == {"order": "NCHW", "use_cudnn": True,
                               "cudnn_exhaustive_search": False}
    with core.NameScope("s"):
        w = model.create_param("w", [2, 3], model_helper.Initializer("ConstantFill", value=0.5),
                               tags=model_helper.ParameterTags.WEIGHT)
    assert str(w) == "s/w" and model.params == ["s/w"] and model.weights == ["s/w"]
    assert model.create_param("s/w", [2, 3], None) is w            # existing: returned as is
    assert model.GetParams("s") == ["s/w"] and model.GetParams("t") == []
    init = model.param_init_net.Proto().op[0]
    assert (init.type, list(init.output)) == ("ConstantFill", ["s/w"])
    model.Relu("in", "out")
    assert model.net.Proto().op[-1].type == "Relu"
    strict = model_helper.ModelHelper(allow_not_known_ops=False)
    with pytest.raises(AttributeError, match="not known to be safe"):
        strict.Relu("in", "out")


def test_brew_fc_and_activations_build_and_run():
    model = model_helper.ModelHelper(name="brewed")
    fc = brew.fc(model, "data", "y", dim_in=4, dim_out=2,
                 weight_init=("ConstantFill", dict(value=1.0)),
                 bias_init=("ConstantFill", dict(value=0.5)))
    assert model.params == ["y_w", "y_b"] and model.weights == ["y_w"] and \
        model.biases == ["y_b"]
    op = model.net.Proto().op[0]
    assert op.type == "FC" and list(op.input) == ["data", "y_w", "y_b"]
    assert [a.name for a in op.arg] == ["order", "use_cudnn", "cudnn_exhaustive_search"]
    assert list(model.net.Proto().external_input) == ["data", "y_w", "y_b"]
    r = brew.relu(model, fc, "r")
    t = brew.tanh(model, r, "t")
    s = brew.sigmoid(model, t, "s")
    out = brew.softmax(model, s)
    assert str(out).endswith("/Softmax")
    assert model.net.Proto().op[-1].engine == "CUDNN"          # use_cudnn from the arg scope
    workspace.RunNetOnce(model.param_init_net)
    data = np.array([[1.0, -1.0, 2.0, 0.0]], np.float32)
    workspace.FeedBlob("data", data)
    workspace.RunNetOnce(model.net)
    logits = 1 / (1 + np.exp(-np.tanh(np.maximum(data.sum() + 0.5, 0))))
    np.testing.assert_allclose(workspace.FetchBlob(out), [[0.5, 0.5]], rtol=1e-6)
    np.testing.assert_allclose(workspace.FetchBlob(s), [[logits, logits]], rtol=1e-6)


def test_brew_default_initializers_and_errors():
    model = model_helper.ModelHelper(name="brew_defaults", init_params=False)
    brew.fc(model, "x", "z", dim_in=2, dim_out=3)
    assert model.param_init_net.Proto().op == []              # external parameters: no ops
    with pytest.raises(RuntimeError, match="first input of helper function"):
        brew.fc("not a model", "x", "z", dim_in=2, dim_out=3)
    with pytest.raises(AttributeError, match="Helper function conv not registered"):
        _ = brew.conv
    assert brew.has_helper("sigmoid") and brew.has_helper(brew.relu)
    with pytest.raises(AttributeError, match="already exists"):
        brew.Register(lambda model: None) and brew.Register(lambda model: None)
    with brew.arg_scope([brew.relu], order="NHWC"):
        brew.relu(model, "x", "rx")
    assert model.net.Proto().op[-1].arg[0].s == b"NHWC"


# -- task -----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [task.Node, task.Task, task.TaskGroup, task.Cluster])
def test_plan_classes_say_they_are_not_supported(cls):
    with pytest.raises(NotImplementedError, match="not supported"):
        cls()
    assert task.Task.TASK_SETUP == "task_setup"
