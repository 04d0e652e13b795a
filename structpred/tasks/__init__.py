"""Tasks: one file per task, each a :class:`~structpred.tasks.base.Task` registered by name.

A model declares its task at registration; the engine and the CLI dispatch through
:func:`get_task` (targets, predictions, metric, ``num_classes`` convention, predict writer).
"""

from . import (  # noqa: F401  (register)
    classification,
    depth,
    detection,
    flow,
    keypoints,
    multi_object_tracking,
    multi_task,
    semantic_segmentation,
    sequence,
    tracking,
)
from .base import Task, get_task, list_tasks, register_task


def task_of(model_name: str) -> Task:
    """The task of the registered model ``model_name``."""
    from ..models.registry import model_info

    return get_task(model_info(model_name).task)


__all__ = ["Task", "get_task", "list_tasks", "register_task", "task_of"]
