"""Caffe2's ``model_helper``: ``ModelHelper``, a main net, a parameter-init net and the
parameters, and the initializers ``brew`` helpers use.

``ModelHelper(name)`` has ``net`` (named ``name``) and ``param_init_net`` (``name_init``);
``create_param`` adds an initializer op to ``param_init_net`` and records the parameter
(with its tags: weight, bias, computed). ``model.X(...)`` adds op ``X`` to ``net``.
Optimizers, regularizers, parameter sharing and database inputs are not part of this port.
"""

from __future__ import annotations

import logging
from typing import Any

from scopeops.caffe2.python import core, scope

__all__ = ["ExternalInitializer", "Initializer", "ModelHelper", "ParameterInfo",
           "ParameterTags"]


class ParameterTags:
    BIAS = "BIAS"
    WEIGHT = "WEIGHT"
    COMPUTED_PARAM = "COMPUTED_PARAM"


class ParameterInfo:
    """A parameter, its shape and (after ``AddGradientOperators``) its gradient."""

    def __init__(self, param_id: Any, param: core.BlobReference, shape: Any = None) -> None:
        self.param_id = param_id
        self.name = str(param)
        self.blob = param
        self.shape = shape
        self.grad: Any = None

    def __str__(self) -> str:
        return self.name


class Initializer:
    """Makes a parameter with the operator ``operator_name`` (e.g. ``"XavierFill"``)
    and its keyword arguments."""

    def __init__(self, operator_name: str | None = None, **kwargs: Any) -> None:
        self.operator_name = operator_name
        self.operator_kwargs = kwargs

    def create_param(self, param_name: Any, init_net: core.Net, shape: Any) -> ParameterInfo:
        assert self.operator_name is not None, "Initializer needs an operator name"
        param = getattr(init_net, self.operator_name)([], param_name, shape=shape,
                                                      **self.operator_kwargs)
        return ParameterInfo(param_id=None, param=param, shape=shape)


class ExternalInitializer:
    """For parameters initialised elsewhere: adds no op."""

    def create_param(self, param_name: Any, init_net: core.Net, shape: Any) -> ParameterInfo:
        if isinstance(param_name, core.BlobReference):
            param = core.BlobReference(str(param_name), init_net)
        else:
            param = core.ScopedBlobReference(param_name, init_net)
        return ParameterInfo(param_id=None, param=param, shape=shape)


def update_initializer(initializer_class: Any, operator_name_and_kwargs: Any,
                       default: tuple[str, dict[str, Any]]) -> Any:
    """An initializer of ``initializer_class`` (default :class:`Initializer`) from an
    ``(operator, kwargs)`` pair, or from ``default``."""
    name, kwargs = operator_name_and_kwargs or default
    return (initializer_class or Initializer)(name, **kwargs)


class ModelHelper:
    """A model: ``net``, ``param_init_net``, ``params`` and an argument scope."""

    _known_working_ops = frozenset([
        "Accuracy", "Adam", "Add", "Adagrad", "SparseAdagrad", "AveragedLoss", "Cast",
        "Checkpoint", "ConstantFill", "Copy", "CopyGPUToCPU", "CopyCPUToGPU", "DequeueBlobs",
        "EnsureCPUOutput", "ExpandDims", "Flatten", "FlattenToVec", "LabelCrossEntropy",
        "LearningRate", "MakeTwoClass", "MatMul", "NCCLAllreduce", "NHWC2NCHW",
        "PackSegments", "Print", "PRelu", "ReduceFrontSum", "Scale", "ScatterWeightedSum",
        "Sigmoid", "SortedSegmentSum", "Snapshot", "Softmax", "SoftmaxWithLoss",
        "SquaredL2Distance", "Squeeze", "StopGradient", "Summarize", "Tanh", "Transpose",
        "UnpackSegments", "WeightedSum", "YellowFin"])

    def __init__(self, name: str | None = None, init_params: bool = True,
                 allow_not_known_ops: bool = True, skip_sparse_optim: bool = False,
                 param_model: "ModelHelper | None" = None,
                 arg_scope: dict[str, Any] | None = None) -> None:
        self.name = name or "model"
        self.net = core.Net(self.name)
        self.param_init_net: core.Net
        self.param_to_grad: dict[Any, Any]
        self.params: list[core.BlobReference]
        self._parameters_info: dict[str, ParameterInfo]
        self._computed_params: list[core.BlobReference]
        if param_model is not None:
            self.param_init_net = param_model.param_init_net
            self.param_to_grad = param_model.param_to_grad
            self.params = param_model.params
            self._parameters_info = param_model._parameters_info
            self._computed_params = param_model._computed_params
        else:
            self.param_init_net = core.Net(self.name + "_init")
            self.param_to_grad = {}
            self.params = []
            self._parameters_info = {}
            self._computed_params = []
        self._param_info_deprecated: list[Any] = []
        self._devices: list[Any] = []
        self.gradient_ops_added = False
        self.init_params = init_params
        self.allow_not_known_ops = allow_not_known_ops
        self.skip_sparse_optim = skip_sparse_optim
        self.weights: list[core.BlobReference] = []
        self.biases: list[core.BlobReference] = []
        self._arg_scope: dict[str, Any] = {"order": "NCHW", "use_cudnn": True,
                                           "cudnn_exhaustive_search": False}
        if arg_scope is not None:
            self._arg_scope.update(arg_scope)

    @property
    def arg_scope(self) -> dict[str, Any]:
        return self._arg_scope

    def get_name(self) -> str:
        return self.name

    def create_param(self, param_name: Any, shape: Any, initializer: Any,
                     tags: Any = None) -> core.BlobReference:
        """The parameter ``param_name`` (name-scoped when a str), initialised in
        ``param_init_net`` by ``initializer``; an existing one is returned as is."""
        if isinstance(param_name, core.BlobReference):
            name = str(param_name)
        elif isinstance(param_name, str):
            name = scope.CurrentNameScope() + param_name
        else:
            raise TypeError(f"Unsupported type for param_name: {type(param_name).__name__}")
        if name in self._parameters_info:
            assert self._parameters_info[name].shape == shape, \
                f"parameter {name} exists with shape {self._parameters_info[name].shape}"
            return self._parameters_info[name].blob
        info = initializer.create_param(param_name=core.BlobReference(name),
                                        init_net=self.param_init_net, shape=shape)
        self._parameters_info[name] = info
        self.AddParameter(info.blob, tags)
        return info.blob

    def AddParameter(self, param: core.BlobReference, tags: Any = None) -> None:
        assert isinstance(param, core.BlobReference), "a parameter is a BlobReference"
        if tags is None:
            tags = set()
        elif isinstance(tags, (list, tuple, set)):
            tags = set(tags)
        else:
            tags = {tags}
        if ParameterTags.COMPUTED_PARAM in tags:
            self._computed_params.append(param)
        else:
            self.params.append(param)
        if ParameterTags.WEIGHT in tags:
            self.weights.append(param)
        if ParameterTags.BIAS in tags:
            self.biases.append(param)

    @staticmethod
    def _in_scope(params: list[core.BlobReference], namescope: str | None) -> list[Any]:
        if namescope is None:
            namescope = scope.CurrentNameScope()
        if namescope and not namescope.endswith(scope.SEPARATOR):
            namescope += scope.SEPARATOR
        if not namescope:
            return list(params)
        return [p for p in params if p.GetNameScope().startswith(namescope)]

    def GetParams(self, namescope: str | None = None, top_scope: bool = False) -> list[Any]:
        """The (trainable) parameters under ``namescope`` (default: the current one)."""
        return self._in_scope(self.params, namescope)

    def GetComputedParams(self, namescope: str | None = None) -> list[Any]:
        return self._in_scope(self._computed_params, namescope)

    def GetAllParams(self, namescope: str | None = None) -> list[Any]:
        return self.GetParams(namescope) + self.GetComputedParams(namescope)

    def get_param_info(self, param: core.BlobReference) -> ParameterInfo | None:
        assert isinstance(param, core.BlobReference), f"Param {param} is not a BlobReference"
        return self._parameters_info.get(str(param))

    def Proto(self) -> Any:
        return self.net.Proto()

    def InitProto(self) -> Any:
        return self.param_init_net.Proto()

    def Validate(self) -> None:
        names = [str(p) for p in self.params]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise RuntimeError(f"Duplicate params: {duplicates}")

    def AddGradientOperators(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        """``net.AddGradientOperators(...)``, once; fills ``param_to_grad``."""
        if self.gradient_ops_added:
            raise RuntimeError("You cannot run AddGradientOperators twice.")
        self.Validate()
        self.gradient_ops_added = True
        grad_map = self.net.AddGradientOperators(*args, **kwargs)
        self.param_to_grad = self.get_param_to_grad(self.params)
        for param, grad in self.param_to_grad.items():
            info = self.get_param_info(param)
            if info is not None:
                info.grad = grad
        self._grad_map = grad_map
        return grad_map

    def get_param_to_grad(self, params: list[Any]) -> dict[Any, Any]:
        if not self.gradient_ops_added:
            raise RuntimeError("You need to run AddGradientOperators first.")
        return {p: self._grad_map[p] for p in params if p in self._grad_map} \
            if hasattr(self, "_grad_map") else {}

    def __getattr__(self, op_type: str) -> Any:
        if op_type.startswith("_"):
            raise AttributeError(op_type)
        if not core.IsOperator(op_type):
            raise AttributeError(f"Method {op_type} is not a registered operator.")
        if op_type not in self._known_working_ops:
            if not self.allow_not_known_ops:
                raise AttributeError(f"Operator {op_type} is not known to be safe")
            logging.warning("You are creating an op that the ModelHelper does not "
                            "recognize: %s.", op_type)
        return getattr(self.net, op_type)
