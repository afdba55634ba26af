"""Caffe2's ``utils`` helpers used by Caffe2 programs: arguments and tensor protos."""

from __future__ import annotations

from typing import Any

import numpy as np

from scopeops.caffe2.proto import caffe2_pb2
from scopeops.caffe2.translate import make_argument

__all__ = ["Caffe2TensorToNumpyArray", "MakeArgument", "NumpyArrayToCaffe2Tensor"]

_T = caffe2_pb2.TensorProto


def MakeArgument(key: str, value: Any) -> Any:
    """A ``caffe2_pb2.Argument`` for ``value``, encoded as Caffe2 encodes it (ValueError
    for ``None`` and other values Caffe2 cannot encode)."""
    return make_argument(key, value)


def Caffe2TensorToNumpyArray(tensor: Any) -> np.ndarray:
    """The array a ``TensorProto`` holds (FLOAT, DOUBLE, INT32 and the narrower ints)."""
    dims = list(tensor.dims)
    kind = tensor.data_type
    if kind == _T.FLOAT:
        return np.asarray(tensor.float_data, dtype=np.float32).reshape(dims)
    if kind == _T.DOUBLE:
        return np.asarray(tensor.double_data, dtype=np.float64).reshape(dims)
    if kind == _T.INT32:
        # Caffe2 reads INT32 tensors into numpy's default int (int64).
        return np.asarray(tensor.int32_data, dtype=np.int64).reshape(dims)
    narrow = {_T.INT16: np.int16, _T.UINT16: np.uint16, _T.INT8: np.int8, _T.UINT8: np.uint8}
    if kind in narrow:
        return np.asarray(tensor.int32_data, dtype=narrow[kind]).reshape(dims)
    raise RuntimeError(f"Tensor data type not supported yet: {kind}")


def NumpyArrayToCaffe2Tensor(arr: np.ndarray, name: str | None = None) -> Any:
    """A ``TensorProto`` holding ``arr`` (float32/64, int64/32/16, uint16, int8, uint8)."""
    tensor = caffe2_pb2.TensorProto()
    tensor.dims.extend(arr.shape)
    if name:
        tensor.name = name
    flat = arr.flatten().tolist()
    if arr.dtype == np.float32:
        tensor.data_type = _T.FLOAT
        tensor.float_data.extend(flat)
    elif arr.dtype == np.float64:
        tensor.data_type = _T.DOUBLE
        tensor.double_data.extend(flat)
    elif arr.dtype in (np.int64, np.int32):
        tensor.data_type = _T.INT32
        tensor.int32_data.extend(flat)
    elif arr.dtype in (np.int16, np.uint16, np.int8, np.uint8):
        tensor.data_type = {np.dtype(np.int16): _T.INT16, np.dtype(np.uint16): _T.UINT16,
                            np.dtype(np.int8): _T.INT8, np.dtype(np.uint8): _T.UINT8}[arr.dtype]
        tensor.int32_data.extend(flat)
    else:
        raise RuntimeError(f"Numpy data type not supported yet: {arr.dtype}")
    return tensor
