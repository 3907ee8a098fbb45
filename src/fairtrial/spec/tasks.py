"""``tasks = [...]``: one experiment over several tasks. Each task gets a spec of its own, the
whole spec with ``task`` set to it and its ``[tasks.NAME]`` overrides applied to the baseline
(``[tasks.mnist1d] epochs = 30``), validated as any single-task spec; the experiment over the
tasks holds them as its ``children``. The task set is part of the spec (and its hash): it is
fixed before anything runs.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from fairtrial.spec.errors import _listed, _show
from fairtrial.spec.limits import MAX_ARMS
from fairtrial.spec.model import Spec, flatten, set_dotted
from fairtrial.spec.reading import _Loader

#: tasks one experiment may span
MAX_TASKS = 100


def _task_list(ld: _Loader, value: Any) -> tuple[list[str], str | None]:
    """The tasks named by ``tasks`` (a list, or ``"suite:NAME"``) and the suite's name."""
    if isinstance(value, str):
        if not value.startswith("suite:"):
            raise ld.fail("experiment", f"tasks = {_show(value)}",
                          'must be a list of task names or "suite:NAME"')  # fmt: skip
        from fairtrial.errors import TaskError
        from fairtrial.tasks.suites import resolve_suite

        try:
            return list(resolve_suite(value.removeprefix("suite:"))), value.removeprefix("suite:")
        except TaskError as exc:
            raise ld.fail("experiment", f"tasks = {_show(value)}", str(exc)) from None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ld.fail("experiment", f"tasks = {_show(value)}",
                      'must be a list of task names or "suite:NAME"')  # fmt: skip
    if len(value) < 2:
        raise ld.fail(
            "experiment", f"tasks = {_show(value)}",
            "an experiment over tasks needs at least 2 (one task: task = ...)",
        )  # fmt: skip
    if len(value) > MAX_TASKS:
        raise ld.fail("experiment", "tasks", f"{len(value)} tasks; at most {MAX_TASKS}")
    seen: set[str] = set()
    for name in value:
        if name in seen:
            raise ld.fail("experiment", f"tasks = {_show(value)}", f"names '{name}' twice")
        seen.add(name)
    return list(value), None


def parse_tasks(
    ld: _Loader,
    raw: dict[str, Any],
    path: Path | None,
    parse_single: Callable[[_Loader, dict[str, Any], Path | None], Spec],
) -> Spec:
    """The spec of an experiment over several tasks (``raw``'s ``[experiment] tasks``)."""
    exp = dict(raw["experiment"])
    if "task" in exp:
        raise ld.fail("experiment", "task", "set either task (one) or tasks (several), not both")
    tasks, suite = _task_list(ld, exp.pop("tasks"))
    overrides_raw = raw.get("tasks", {})
    if not isinstance(overrides_raw, Mapping) or not all(
        isinstance(v, Mapping) for v in overrides_raw.values()
    ):
        raise ld.fail(None, None, "per-task settings are tables: [tasks.NAME] with baseline keys")
    for name in overrides_raw:
        if name not in tasks:
            raise ld.fail(
                f"tasks.{name}", None, f"not one of the experiment's tasks; valid: {_listed(tasks)}"
            )
    baseline = raw.get("baseline", {})
    flat_base = flatten(baseline) if isinstance(baseline, Mapping) else {}
    overrides: dict[str, dict[str, Any]] = {}
    children = []
    for task in tasks:
        own = flatten(overrides_raw.get(task, {}))
        for key in own:
            if key not in flat_base:
                raise ld.fail(
                    f"tasks.{task}", key,
                    "the baseline has no such key (a task may only change keys of "
                    f"[baseline]); baseline keys: {_listed(flat_base) or 'none'}",
                )  # fmt: skip
        child_raw = {k: copy.deepcopy(v) for k, v in raw.items() if k != "tasks"}
        child_raw["experiment"] = {**exp, "task": task}
        base = copy.deepcopy(dict(baseline))
        for key, value in own.items():
            set_dotted(base, key, value)
        child_raw["baseline"] = base
        child = parse_single(ld, child_raw, path)
        # its own name (`fairtrial report NAME.TASK` shows one task), within the experiment's
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", f"{child.name}.{task}")
        children.append(replace(child, name=name, part_of=child.name))
        if own:
            overrides[task] = own
    first = replace(children[0], name=children[0].part_of or children[0].name)
    if len(first.arms) * len(tasks) > MAX_ARMS * MAX_TASKS:  # pragma: no cover - bounded above
        raise ld.fail("experiment", "tasks", "too many arms × tasks")
    kinds = {c.metric for c in children}
    if len(kinds) > 1:
        raise ld.fail("experiment", "metric",
                      f"the tasks' default metrics differ ({', '.join(sorted(kinds))}): set "
                      "metric = ... to one every task has")  # fmt: skip
    checksum = hashlib.sha256(
        "".join(f"{c.task}:{c.task_checksum};" for c in children).encode()
    ).hexdigest()
    return replace(
        first,
        task=", ".join(tasks),
        task_checksum=checksum,
        tasks=tuple(tasks),
        task_overrides=overrides,
        children=tuple(children),
        suite=suite,
        part_of=None,
    )
