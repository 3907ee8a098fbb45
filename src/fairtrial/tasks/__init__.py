"""Tasks: datasets with fixed, checksummed splits, a primary metric and sealed test labels."""

from fairtrial.tasks.base import METRICS, Task, TaskData, metrics_for, stratified_split
from fairtrial.tasks.registry import builtin_tasks, get_task, import_object, register_task

__all__ = [
    "METRICS",
    "Task",
    "TaskData",
    "builtin_tasks",
    "get_task",
    "import_object",
    "metrics_for",
    "register_task",
    "stratified_split",
]
