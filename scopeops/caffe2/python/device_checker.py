"""Caffe2's ``device_checker``: run an op (or net) on several devices and compare.

This build of scopeops runs on the CPU only: with one CPU device option the check is
that the op runs; a device option for another device fails when the op is built. Each
device runs in a fresh standalone workspace, so the current workspace is left as it was.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from scopeops.caffe2.python import _import_c_extension as C

__all__ = ["DeviceChecker"]


class DeviceChecker:
    """Compares the outputs of an op (or net) run with each of ``device_options``."""

    def __init__(self, threshold: float, device_options: list[Any]) -> None:
        self._threshold = threshold
        self._device_options = list(device_options)

    def _compare(self, results: list[list[Any]], names: list[str]) -> bool:
        success = True
        for i in range(1, len(results)):
            for j, name in enumerate(names):
                x, y = results[i][j], results[0][j]
                if not np.allclose(x, y, atol=self._threshold, rtol=self._threshold):
                    print(f"Failure in checking device option {i} and output {name}. "
                          f"The outputs are:")
                    print(np.asarray(x).flatten())
                    print(np.asarray(y).flatten())
                    print(np.max(np.abs(np.asarray(x) - np.asarray(y))))
                    success = False
        return success

    def CheckSimple(self, op: Any, inputs: list[Any], outputs_to_check: list[int],
                    input_device_options: dict[str, Any] | None = None) -> bool:
        """Run ``op`` with each device option on ``inputs``; True when the outputs
        ``outputs_to_check`` agree (within ``threshold``) with the first device's."""
        op = copy.deepcopy(op)
        input_device_options = input_device_options or {}
        names = [str(op.output[i]) for i in outputs_to_check]
        results = []
        for option in self._device_options:
            ws = C.Workspace()
            for name, value in zip(op.input, inputs, strict=False):
                ws.feed_blob(name, np.array(value), input_device_options.get(name, option))
            op.device_option.CopyFrom(option)
            ws.run_operator_once(op)
            results.append([ws.fetch_blob(name) for name in names])
        return self._compare(results, names)

    def CheckNet(self, net: Any, inputs: dict[str, Any] | None = None,
                 blobs_to_check: list[str] | None = None, ignore: Any = None) -> bool:
        """The same for a NetDef (its ops get each device option in turn)."""
        ignore = set(ignore or [])
        if blobs_to_check is None:
            blobs_to_check = sorted({str(o) for op in net.op for o in op.output} - ignore)
        results = []
        for option in self._device_options:
            ws = C.Workspace()
            for name, value in (inputs or {}).items():
                ws.feed_blob(name, value, option)
            for op in net.op:
                op.device_option.CopyFrom(option)
            ws.run_net_once(net)
            results.append([ws.fetch_blob(name) for name in blobs_to_check])
        return self._compare(results, list(blobs_to_check))
