"""Iter and LearningRate: the training-step counter and the learning-rate schedule."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from scopeops.ops.base import NO_GRADIENT, Arg, register
from scopeops.ops.numeric_base import NumericOperator

__all__ = ["IterOp", "LEARNING_RATE_POLICIES", "LearningRateOp"]

INT64_MAX = np.iinfo(np.int64).max


@register("Iter", inputs=(0, 1), outputs=1, enforce_inplace={(0, 0)}, gradient=NO_GRADIENT,
          doc="Counts runs: adds 1 to the one-element int64 counter in its output blob (with "
              "an input, the same blob). An output holding nothing yet starts a new counter "
              "at 0, so the first run gives 1. A counter of another integer dtype is "
              "converted to int64, keeping its value (Caffe2 restarted it from 0); a "
              "negative counter, or one that would overflow, is refused.")
class IterOp(NumericOperator):
    __slots__ = ()

    def run(self) -> None:
        blob = self.output_blob(0)
        name = self.definition.outputs[0]
        if blob.is_empty() and not self.definition.inputs:
            value = 0
        else:
            counter = blob.get(np.ndarray)
            if counter.dtype.kind not in "iu" or counter.size != 1:
                raise self.shape_error(f"the counter (blob {name}) must be one integer, got "
                                       f"{counter.dtype} of shape {counter.shape}")
            value = int(counter.reshape(-1)[0])
            if value < 0:
                raise self.shape_error(f"the previous iteration number in blob {name} is "
                                       f"negative: {value}")
            if value >= INT64_MAX:
                raise self.shape_error(f"the counter in blob {name} would overflow int64")
        self.output(0, (1,), np.int64)[0] = value + 1


def _warmup(start: float, num_iter: int, it: int) -> float:
    return 1.0 if it >= num_iter else start + (1 - start) * it / num_iter


def _inv(gamma: float, power: float, it: int) -> float:
    return float((1 + gamma * it) ** -power)


def _alter(a: dict[str, Any], it: int) -> float:
    active, inactive = a["active_period"], a["inactive_period"]
    first = a["active_first"]
    in_first_phase = it % (active + inactive) < (active if first else inactive)
    return float(in_first_phase == bool(first))


#: policy -> (the arguments it reads, the multiplier of base_lr at iteration ``it``)
LEARNING_RATE_POLICIES: dict[str, tuple[tuple[str, ...], Callable[[dict[str, Any], int],
                                                                  float]]] = {
    "fixed": ((), lambda a, it: 1.0),
    "step": (("stepsize", "gamma"), lambda a, it: a["gamma"] ** (it // a["stepsize"])),
    "exp": (("gamma",), lambda a, it: a["gamma"] ** it),
    "inv": (("gamma", "power"), lambda a, it: _inv(a["gamma"], a["power"], it)),
    "poly": (("power", "max_iter"),
             lambda a, it: max(0.0, 1 - it / a["max_iter"]) ** a["power"]),
    "linearWarmup": (("start_multiplier", "num_iter"),
                     lambda a, it: _warmup(a["start_multiplier"], a["num_iter"], it)),
    "constantWarmup": (("multiplier", "num_iter"),
                       lambda a, it: a["multiplier"] if it < a["num_iter"] else 1.0),
    "alter": (("active_first", "active_period", "inactive_period"), _alter),
    "hill": (("num_iter", "start_multiplier", "gamma", "power", "end_multiplier"),
             lambda a, it: _warmup(a["start_multiplier"], a["num_iter"], it)
             if it < a["num_iter"] else
             max(a["end_multiplier"], _inv(a["gamma"], a["power"], it - a["num_iter"]))),
}


@register("LearningRate", inputs=1, outputs=1, allow_inplace=True, gradient=NO_GRADIENT,
          args={"base_lr": Arg(float, required=True, doc="the base learning rate (usually "
                                                         "negative for gradient descent)"),
                "policy": Arg(str, required=True, doc="the schedule: "
                              + ", ".join(LEARNING_RATE_POLICIES)),
                "stepsize": Arg(int, 0, doc="step: iterations per step (> 0)"),
                "gamma": Arg(float, 0.0, doc="step, exp: factor per step or iteration; inv, "
                                             "hill: the decay rate"),
                "power": Arg(float, 0.0, doc="inv, hill, poly: the exponent"),
                "max_iter": Arg(int, -1, doc="poly: the iteration where the rate reaches 0 "
                                             "(> 0)"),
                "num_iter": Arg(int, 0, doc="linearWarmup, constantWarmup, hill: warm-up "
                                            "iterations"),
                "start_multiplier": Arg(float, 0.0, doc="linearWarmup, hill: the multiplier "
                                                        "at iteration 0"),
                "multiplier": Arg(float, 0.5, doc="constantWarmup: the multiplier during "
                                                  "warm-up"),
                "end_multiplier": Arg(float, 0.0, doc="hill: the multiplier's lower bound"),
                "active_first": Arg((bool, int), True, doc="alter: start active"),
                "active_period": Arg(int, -1, doc="alter: active iterations per period "
                                                  "(>= 0)"),
                "inactive_period": Arg(int, -1, doc="alter: inactive iterations per period "
                                                    "(>= 0)")},
          doc="LR = base_lr * f(iter), a float32 scalar of shape (), from the integer "
              "counter in the input (Iter's output). The policy picks f: fixed: 1; step: "
              "gamma^floor(iter / stepsize); exp: gamma^iter; inv: (1 + gamma iter)^-power; "
              "poly: (1 - iter / max_iter)^power, 0 from max_iter on; linearWarmup: from "
              "start_multiplier up to 1 over num_iter iterations, then 1; constantWarmup: "
              "multiplier for num_iter iterations, then 1; alter: 1 during the first "
              "active_period iterations of every active_period + inactive_period, else 0 "
              "(the other way round without active_first); hill: linearWarmup for num_iter "
              "iterations, then inv counted from there, never below end_multiplier. An "
              "unknown policy is refused when the op is built.")
class LearningRateOp(NumericOperator):
    __slots__ = ("schedule",)

    def validate(self) -> None:
        a = self.args
        policy = a["policy"]
        found = LEARNING_RATE_POLICIES.get(policy)
        if found is None:
            raise ValueError(f"LearningRate: unknown learning rate policy {policy!r}; the "
                             f"policies are {', '.join(LEARNING_RATE_POLICIES)}")
        if policy == "step" and a["stepsize"] <= 0:
            raise ValueError(f"LearningRate: the step policy needs stepsize > 0, got "
                             f"{a['stepsize']}")
        if policy == "poly" and a["max_iter"] <= 0:
            raise ValueError(f"LearningRate: the poly policy needs max_iter > 0, got "
                             f"{a['max_iter']}")
        if policy in ("linearWarmup", "hill") and a["num_iter"] <= 0:
            raise ValueError(f"LearningRate: the {policy} policy needs num_iter > 0, got "
                             f"{a['num_iter']}")
        if policy == "alter" and (a["active_period"] < 0 or a["inactive_period"] < 0
                                  or a["active_period"] + a["inactive_period"] == 0):
            raise ValueError("LearningRate: the alter policy needs active_period >= 0 and "
                             "inactive_period >= 0, not both 0")
        self.schedule = found[1]

    def run(self) -> None:
        counter = self.tensor_input(0)
        if counter.dtype.kind not in "iu" or counter.size != 1:
            raise self.shape_error(f"the iteration counter (blob {self.definition.inputs[0]}) "
                                   f"must be one integer, got {counter.dtype} of shape "
                                   f"{counter.shape}")
        it = int(counter.reshape(-1)[0])
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            rate = self.args["base_lr"] * self.schedule(self.args, it)
        self.output(0, (), np.float32)[()] = rate
