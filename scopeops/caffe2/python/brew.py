"""Caffe2's ``brew``: model-building helpers called as ``brew.fc(model, ...)``.

Each helper takes the :class:`~model_helper.ModelHelper` first (or as ``model=``) and
receives the model's argument scope (``model.arg_scope``, by default ``order="NCHW"``,
``use_cudnn=True``, ``cudnn_exhaustive_search=False``) merged under its keyword
arguments, as in Caffe2: helpers that take ``**kwargs`` pass those on as operator
arguments. ``brew.sigmoid`` is an addition (Caffe2 had none at the reference commit),
shaped like ``relu`` and ``tanh``. An unknown helper name is an AttributeError.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import threading
from typing import Any, Callable, Iterator

from scopeops.caffe2.python.model_helper import (
    ExternalInitializer,
    ModelHelper,
    ParameterTags,
    update_initializer,
)

__all__ = ["Register", "arg_scope", "fc", "has_helper", "relu", "sigmoid", "softmax", "tanh"]

_REGISTRY: dict[str, Callable[..., Any]] = {}
_ARG_SCOPE = threading.local()


def _scoped_kwargs(helper_name: str) -> dict[str, Any]:
    stack: list[dict[str, dict[str, Any]]] = getattr(_ARG_SCOPE, "stack", [])
    merged: dict[str, Any] = {}
    for entry in stack:
        merged.update(entry.get(helper_name, {}))
    return merged


@contextlib.contextmanager
def arg_scope(helpers: Any, **kwargs: Any) -> Iterator[None]:
    """Inside, calls of ``helpers`` (a helper or a list of them) get ``kwargs`` as
    defaults."""
    if not isinstance(helpers, (list, tuple)):
        helpers = [helpers]
    entry = {getattr(h, "__name__", str(h)): dict(kwargs) for h in helpers}
    stack = getattr(_ARG_SCOPE, "stack", None)
    if stack is None:
        stack = _ARG_SCOPE.stack = []
    stack.append(entry)
    try:
        yield
    finally:
        stack.pop()


def _wrap(helper: Callable[..., Any]) -> Callable[..., Any]:
    parameters = inspect.signature(helper).parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())

    def call(*args: Any, **kwargs: Any) -> Any:
        if args and isinstance(args[0], ModelHelper):
            model = args[0]
        elif isinstance(kwargs.get("model"), ModelHelper):
            model = kwargs["model"]
        else:
            raise RuntimeError("The first input of helper function should be model. Or you "
                               "can provide it in kwargs as model=<your_model>.")
        new_kwargs = copy.deepcopy(model.arg_scope)
        if not takes_kwargs:
            new_kwargs = {k: v for k, v in new_kwargs.items() if k in parameters}
        new_kwargs.update(_scoped_kwargs(helper.__name__))
        new_kwargs.update(kwargs)
        return helper(*args, **new_kwargs)

    call.__name__ = helper.__name__
    call.__doc__ = helper.__doc__
    return call


def Register(helper: Callable[..., Any]) -> Callable[..., Any]:
    """Make ``helper`` available as ``brew.<its name>``."""
    name = helper.__name__
    if name in _REGISTRY:
        raise AttributeError(f"Helper {name} already exists. Please change your helper name.")
    _REGISTRY[name] = _wrap(helper)
    return _REGISTRY[name]


def has_helper(helper_or_name: Any) -> bool:
    name = helper_or_name if isinstance(helper_or_name, str) else helper_or_name.__name__
    return name in _REGISTRY


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    raise AttributeError(f"Helper function {name} not registered.")


def _fc(model: ModelHelper, blob_in: Any, blob_out: Any, dim_in: int, dim_out: int,
        weight_init: Any = None, bias_init: Any = None, WeightInitializer: Any = None,
        BiasInitializer: Any = None, enable_tensor_core: bool = False,
        float16_compute: bool = False, **kwargs: Any) -> Any:
    """``FC([blob_in, <out>_w, <out>_b], blob_out)`` with a weight of ``[dim_out, dim_in]``
    (XavierFill unless ``weight_init=(op, kwargs)``) and a bias of ``[dim_out]``
    (ConstantFill unless ``bias_init``) made in ``model.param_init_net``."""
    weight_initializer = update_initializer(WeightInitializer, weight_init, ("XavierFill", {}))
    bias_initializer = update_initializer(BiasInitializer, bias_init, ("ConstantFill", {}))
    if not model.init_params:
        weight_initializer = bias_initializer = ExternalInitializer()
    blob_out = blob_out or model.net.NextName()
    bias_tags = [ParameterTags.BIAS]
    if "freeze_bias" in kwargs:
        bias_tags.append(ParameterTags.COMPUTED_PARAM)
    weight = model.create_param(param_name=blob_out + "_w", shape=[dim_out, dim_in],
                                initializer=weight_initializer, tags=ParameterTags.WEIGHT)
    bias = model.create_param(param_name=blob_out + "_b", shape=[dim_out],
                              initializer=bias_initializer, tags=bias_tags)
    if enable_tensor_core:
        kwargs["engine"] = "TENSORCORE"
    if float16_compute:
        kwargs["float16_compute"] = True
    return model.net.FC([blob_in, weight, bias], blob_out, **kwargs)


def _activation(op_type: str) -> Callable[..., Any]:
    def helper(model: ModelHelper, blob_in: Any, blob_out: Any, use_cudnn: bool = False,
               order: str = "NCHW", **kwargs: Any) -> Any:
        if use_cudnn:
            kwargs["engine"] = "CUDNN"
        return getattr(model.net, op_type)(blob_in, blob_out, order=order, **kwargs)

    helper.__doc__ = f"``{op_type}(blob_in) -> blob_out`` in ``model.net``."
    return helper


def _softmax(model: ModelHelper, blob_in: Any, blob_out: Any = None, use_cudnn: bool = False,
             **kwargs: Any) -> Any:
    """``Softmax(blob_in) -> blob_out`` (auto-named when not given) in ``model.net``."""
    if use_cudnn:
        kwargs["engine"] = "CUDNN"
    if blob_out is not None:
        return model.net.Softmax(blob_in, blob_out, **kwargs)
    return model.net.Softmax(blob_in, **kwargs)


def _named(helper: Callable[..., Any], name: str) -> Callable[..., Any]:
    helper.__name__ = helper.__qualname__ = name
    return helper


fc = Register(_named(_fc, "fc"))
relu = Register(_named(_activation("Relu"), "relu"))
tanh = Register(_named(_activation("Tanh"), "tanh"))
sigmoid = Register(_named(_activation("Sigmoid"), "sigmoid"))
softmax = Register(_named(_softmax, "softmax"))
