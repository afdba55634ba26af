"""Caffe2's ``test_util``: ``TestCase`` (a clean current workspace around each test)."""

from __future__ import annotations

import unittest
from typing import Any

import numpy as np

from scopeops.caffe2.python import core, workspace

__all__ = ["TestCase", "rand_array"]


def rand_array(*dims: int) -> np.ndarray:
    """Uniform float32 values in [-0.5, 0.5) of shape ``dims``."""
    return np.array(np.random.rand(*dims) - 0.5).astype(np.float32)


class TestCase(unittest.TestCase):
    """A unittest case whose tests start and end with an empty current workspace;
    ``self.ws`` is a fresh standalone ``C.Workspace``."""

    @classmethod
    def setUpClass(cls) -> None:
        workspace.GlobalInit(["caffe2", "--caffe2_log_level=0"])
        core.SetEnginePref({}, {})

    def setUp(self) -> None:
        self.ws: Any = workspace.C.Workspace()
        workspace.ResetWorkspace()

    def tearDown(self) -> None:
        workspace.ResetWorkspace()
