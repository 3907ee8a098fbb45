"""Tasks: datasets with fixed, checksummed splits, a primary metric and sealed test labels."""

from fairtrial.tasks.base import METRICS, Task, TaskData, metrics_for, stratified_split
from fairtrial.tasks.registry import builtin_tasks, get_task, import_object, register_task
from fairtrial.tasks.suites import SUITES, resolve_suite

__all__ = [
    "METRICS",
    "SUITES",
    "Task",
    "TaskData",
    "builtin_tasks",
    "get_task",
    "import_object",
    "metrics_for",
    "register_task",
    "resolve_suite",
    "stratified_split",
]
