"""Caffe2's ``task`` module: importable, because Caffe2 modules import it.

Tasks, task groups, nodes and clusters build Caffe2 *plans* (execution steps run by a
plan runner), which scopeops does not have: using any of them raises NotImplementedError.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Cluster", "Node", "Task", "TaskGroup", "TaskOutput", "WorkspaceType",
           "final_output"]

_UNSUPPORTED = ("Caffe2 plans (tasks, task groups, nodes, execution steps) are not "
                "supported by scopeops.caffe2; build nets and run them with "
                "workspace.RunNet / RunNetOnce")


class WorkspaceType:
    PRIVATE = "private"
    GLOBAL = "global"


class _Unsupported:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__}: {_UNSUPPORTED}")


class Cluster(_Unsupported):
    """A set of nodes a plan runs on (not supported)."""


class Node(_Unsupported):
    """A node a task runs on (not supported)."""


class TaskGroup(_Unsupported):
    """A group of tasks run as one plan (not supported)."""

    LOCAL_SETUP = "local_setup"


class Task(_Unsupported):
    """A plan step with setup and outputs (not supported)."""

    TASK_SETUP = "task_setup"
    TASK_INSTANCE_SETUP = "task_instance_setup"
    REPORT_STEP = "report_step"


class TaskOutput(_Unsupported):
    """An output of a task (not supported)."""


def final_output(blob_or_record: Any) -> Any:
    raise NotImplementedError(f"final_output: {_UNSUPPORTED}")
