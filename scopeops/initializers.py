"""Initializers for :func:`scopeops.get_variable`: callables ``(shape, dtype) -> ndarray``.

Each returns a fresh array of exactly ``shape`` and ``dtype``. A seeded random
initializer draws from a new ``numpy.random.Generator(seed)`` on every call,
so it gives the same values every time (TensorFlow's op-level seeds); without
a seed each call draws fresh values.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "Initializer",
    "constant",
    "glorot_uniform",
    "normal",
    "ones",
    "uniform",
    "zeros",
    "fans",
]


def _shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"a shape must be an int or a sequence of ints, not "
                        f"{type(shape).__name__}") from None
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
            raise TypeError(f"shape {shape!r}: dimensions must be ints, not {type(d).__name__}")
        if d < 0:
            raise ValueError(f"shape {shape!r}: dimensions must be >= 0")
    return tuple(int(d) for d in dims)


def _float_dtype(dtype: Any, what: str) -> np.dtype:
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(f"{what} initializes floating-point variables only, not {dtype.name}")
    return dtype


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of ``shape``, as Keras/TensorFlow count them:
    a matrix ``(in, out)``; a convolution kernel ``(..., in, out)`` times its
    receptive field; a vector ``(n,)`` counts ``n`` both ways; a scalar 1."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


class Initializer:
    """Base of the initializers: ``init(shape, dtype)`` returns a new ndarray."""

    __slots__ = ()

    def __call__(self, shape: Any, dtype: Any = "float32") -> np.ndarray:
        return self.generate(_shape(shape), np.dtype(dtype))

    def generate(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        raise NotImplementedError


class _Zeros(Initializer):
    __slots__ = ()

    def generate(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return np.zeros(shape, dtype)

    def __repr__(self) -> str:
        return "zeros()"


class _Ones(Initializer):
    __slots__ = ()

    def generate(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return np.ones(shape, dtype)

    def __repr__(self) -> str:
        return "ones()"


class _Constant(Initializer):
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = np.array(value)   # a private copy: later edits of value do not leak in
        if self.value.dtype == object:
            raise TypeError(f"constant() takes a number or an array of numbers, not {value!r}")

    def generate(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        try:
            return np.array(np.broadcast_to(self.value.astype(dtype), shape))
        except ValueError:
            raise ValueError(f"constant() value of shape {self.value.shape} cannot fill "
                             f"shape {shape}") from None

    def __repr__(self) -> str:
        return f"constant({self.value.tolist()!r})"


class _Uniform(Initializer):
    __slots__ = ("low", "high", "seed")

    def __init__(self, low: float, high: float, seed: int | None) -> None:
        if not low < high:
            raise ValueError(f"uniform() needs low < high, got low={low}, high={high}")
        self.low, self.high, self.seed = low, high, seed

    def generate(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        if np.issubdtype(dtype, np.integer):   # the integers in [low, high)
            low, high = math.ceil(self.low), math.ceil(self.high)
            if low >= high:
                raise ValueError(f"uniform({self.low}, {self.high}) holds no {dtype.name} value")
            return np.asarray(rng.integers(low, high, shape), dtype=dtype)
        _float_dtype(dtype, "uniform()")
        return rng.uniform(self.low, self.high, shape).astype(dtype)

    def __repr__(self) -> str:
        return f"uniform({self.low!r}, {self.high!r}, seed={self.seed!r})"


class _Normal(Initializer):
    __slots__ = ("mean", "std", "seed")

    def __init__(self, mean: float, std: float, seed: int | None) -> None:
        if std < 0:
            raise ValueError(f"normal() needs std >= 0, got {std}")
        self.mean, self.std, self.seed = mean, std, seed

    def generate(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        _float_dtype(dtype, "normal()")
        rng = np.random.default_rng(self.seed)
        return rng.normal(self.mean, self.std, shape).astype(dtype)

    def __repr__(self) -> str:
        return f"normal(mean={self.mean!r}, std={self.std!r}, seed={self.seed!r})"


class _GlorotUniform(Initializer):
    __slots__ = ("seed",)

    def __init__(self, seed: int | None) -> None:
        self.seed = seed

    def generate(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        _float_dtype(dtype, "glorot_uniform()")
        fan_in, fan_out = fans(shape)
        limit = math.sqrt(6.0 / max(1, fan_in + fan_out))
        rng = np.random.default_rng(self.seed)
        return rng.uniform(-limit, limit, shape).astype(dtype)

    def __repr__(self) -> str:
        return f"glorot_uniform(seed={self.seed!r})"


def _seed(seed: Any) -> int | None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise TypeError(f"a seed must be an int or None, not {type(seed).__name__}")
    return None if seed is None else int(seed)


def zeros() -> Initializer:
    """All zeros, any dtype."""
    return _Zeros()


def ones() -> Initializer:
    """All ones, any dtype."""
    return _Ones()


def constant(value: Any) -> Initializer:
    """``value`` (a number, or an array broadcast to the shape), cast to the dtype."""
    return _Constant(value)


def uniform(low: float, high: float, seed: int | None = None) -> Initializer:
    """Uniform in ``[low, high)``; integer dtypes draw integers."""
    return _Uniform(low, high, _seed(seed))


def normal(mean: float = 0.0, std: float = 1.0, seed: int | None = None) -> Initializer:
    """Normal with ``mean`` and standard deviation ``std``; floating dtypes only."""
    return _Normal(mean, std, _seed(seed))


def glorot_uniform(seed: int | None = None) -> Initializer:
    """Uniform in ``[-limit, limit)``, ``limit = sqrt(6 / (fan_in + fan_out))``
    (Glorot & Bengio; the default for floating-point variables)."""
    return _GlorotUniform(_seed(seed))
