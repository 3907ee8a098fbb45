"""Run one trial in this process: the same code under every backend.

A backend only decides *where* a trial runs (this process, a worker process, a Ray task);
this module is *what* runs there, so every backend gives the same result for the same trial:
it resolves the recipe (cached per process, see :mod:`fairtrial.usercode`), loads and checks
the task, sets the trial up (threads, global seeds, its work folder, its
:class:`~fairtrial.context.TrialContext`), calls the recipe or runs the command, meters it,
and turns whatever happened into a :class:`~fairtrial.trial.TrialOutcome`.

Backends reach recipes through here only (:func:`batched_form` for the vectorized backend,
:func:`stop_commands` for a worker that must stop).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fairtrial.configreads import ReadRecorder, command_reads
from fairtrial.context import BatchedRecipe, Emit, Recipe, TrialContext
from fairtrial.errors import TrialDiverged
from fairtrial.meter import Meter, metering_enabled
from fairtrial.recipes import NotVectorizable, build_config, config_class_of, vectorized_form
from fairtrial.recipes.command import kill_running, prepare_data, run_command
from fairtrial.seeding import seed_globals
from fairtrial.tasks import Task, get_task
from fairtrial.trial import Status, TrialJob, TrialOutcome
from fairtrial.usercode import cached, import_object

Ctx = TypeVar("Ctx", bound=TrialContext)

__all__ = [
    "NotVectorizable",
    "batch_options",
    "batched_form",
    "execute_trial",
    "load_trial_code",
    "recording_config",
    "resolve_recipe",
    "set_threads",
    "stop_commands",
    "task_changed",
    "task_of",
    "trial_context",
    "vectorized_form",
]


def resolve_recipe(ref: str, base_dir: str | None) -> Recipe:
    """The recipe ``ref`` (``module:function``), looked up in ``base_dir`` first; imported
    once per process (:func:`fairtrial.usercode.forget_modules` forgets it)."""

    def load() -> Recipe:
        fn = import_object(ref, Path(base_dir) if base_dir else None, "recipe")
        if not callable(fn):
            raise TypeError(f"recipe '{ref}' is not callable")
        return fn

    return cached("recipe", ref, base_dir or "", load)


def batched_form(job: TrialJob) -> tuple[BatchedRecipe, Any, set[str] | None] | None:
    """The batched form of ``job``'s recipe (:func:`fairtrial.recipes.vectorized`), the config
    to hand it and the set its reads go to (see :func:`recording_config`).

    None for a command, a recipe without a batched form, or one that cannot be imported
    (:func:`execute_trial` then reports why, per trial). The batched form raises
    :class:`NotVectorizable` for a config it cannot batch.
    """
    if job.recipe is None:
        return None
    try:
        fn = resolve_recipe(job.recipe, job.base_dir)
        form = vectorized_form(fn)
        config, reads = recording_config(job, fn)
    except Exception:
        return None
    return None if form is None else (form, config, reads)


def batch_options(job: TrialJob) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The options ``job``'s batched form takes per member (its ``varies``; empty without a
    batched form) and ``job``'s config with the defaults of the recipe's config dataclass
    filled in, so that an option set to its default equals one left out. What the form's
    ``structure`` says of the config is under the key ``"<structure>"``."""
    config: dict[str, Any] = dict(job.config)
    if job.recipe is None:
        return (), config
    try:
        fn = resolve_recipe(job.recipe, job.base_dir)
        form = vectorized_form(fn)
        if form is None:
            return (), config
        cls = config_class_of(fn)
        built: Any = build_config(cls, job.config) if cls is not None else job.config
        if cls is not None:
            config = {f.name: getattr(built, f.name) for f in dataclasses.fields(cls)}
        structure = getattr(form, "structure", None)
        if structure is not None:
            config["<structure>"] = structure(built)
        return tuple(getattr(form, "varies", ())), config
    except Exception:  # execute_trial says why, per trial
        return (), config


def task_of(job: TrialJob) -> Task:
    """The task ``job`` runs on (cached per process)."""
    return get_task(job.task, Path(job.base_dir) if job.base_dir else None)


def task_changed(job: TrialJob, task: Task) -> str | None:
    """Why ``task`` is not the data ``job`` was planned on, or None when it is."""
    if task.checksum == job.task_checksum:
        return None
    return (
        f"task '{job.task}' data changed: checksum {task.checksum[:12]} in this worker, "
        f"{job.task_checksum[:12]} when the run started"
    )


def trial_context(
    job: TrialJob,
    task: Task,
    config: Any,
    emit: Emit,
    meter: Meter | None = None,
    cls: type[Ctx] = TrialContext,  # type: ignore[assignment]
) -> Ctx:
    """The context ``job``'s recipe gets (of class ``cls``); makes the trial's work folder."""
    workdir = Path(job.workdir) if job.workdir else None
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    return cls(
        config=config,
        seed=job.seed,
        root_seed=job.root_seed,
        task=task,
        emit=emit,
        arm=job.arm,
        trial_id=job.trial_id,
        attempt=job.attempt,
        workdir=workdir,
        metric=job.metric,
        meter=meter,
        objective=job.objective,
        objective_direction=job.objective_direction,
    )


def recording_config(
    job: TrialJob, fn: Callable[..., Any] | None
) -> tuple[dict[str, Any], set[str] | None]:
    """The config to hand the recipe, and the set its reads go to (None: not recorded).

    A recipe with a config class gets the plain config (the spec was checked against the
    class); a command reads the keys its placeholders name.
    """
    if fn is None:
        return job.config, set(command_reads(job.command or ""))
    if config_class_of(fn) is not None:
        return job.config, None
    recorder = ReadRecorder(job.config)
    return recorder, recorder.reads


def set_threads(threads: int | None) -> None:
    """Have torch (when this process imported it) use ``threads`` threads."""
    torch: Any = sys.modules.get("torch")
    if threads and torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def stop_commands() -> None:
    """Kill every command this process is running, each with the programs it started
    (from any thread: a worker calls it when its run is gone)."""
    kill_running()


def load_trial_code(job: TrialJob) -> None:
    """Load into this process what every trial of ``job``'s experiment needs: the task, the
    recipe and its imports (a command's data files); a worker does it before its first trial,
    so that no trial's time includes it. Errors are left for :func:`execute_trial` to report.
    """
    with contextlib.suppress(Exception):
        task = task_of(job)
        if job.recipe:
            resolve_recipe(job.recipe, job.base_dir)
        elif job.command and task.kind != "external":  # an external task has no data here
            prepare_data(job, task)


def execute_trial(job: TrialJob, emit: Emit) -> TrialOutcome:
    """Run one trial in this process and return its outcome; never raises for trial errors.

    Unless ``job.meter`` is False or ``FAIRTRIAL_METER=0``, a :class:`~fairtrial.meter.Meter`
    measures the trial and its record becomes ``outcome.compute``, whatever the status.
    """
    t0 = time.perf_counter()
    ctx: TrialContext | None = None
    meter: Meter | None = None
    reads: set[str] | None = None
    if job.meter and metering_enabled():
        meter = Meter(target=job.target, target_metric=job.target_metric, direction=job.direction)

    def outcome(status: Status, **kw: Any) -> TrialOutcome:
        phases = dict(ctx.phases) if ctx is not None else {}
        wall = time.perf_counter() - t0
        compute: dict[str, Any] = {
            "version": 1,
            "status": status,
            "wall_time": wall,
            "phases": phases,
            "partial": "metering was off",
        }
        if meter is not None:
            try:
                compute = meter.record(
                    status=status, phases=phases, intervals=ctx.phase_log if ctx else ()
                )
            except Exception as exc:  # a broken counter must not cost the trial its result
                compute["partial"] = f"the meter failed: {exc!r}"
        read = tuple(sorted(reads)) if reads is not None else None
        return TrialOutcome(
            status, wall_time=wall, phases=phases, compute=compute, config_read=read, **kw
        )

    try:
        if meter is not None:
            meter.start()
        task = task_of(job)
        if changed := task_changed(job, task):
            return outcome("failed", error=changed)
        fn = resolve_recipe(job.recipe, job.base_dir) if job.recipe else None
        config, reads = recording_config(job, fn)
        set_threads(job.threads)
        seed_globals(job.root_seed, job.seed)
        ctx = trial_context(job, task, config, emit, meter)
        # task loading, recipe import and seeding: the trial's setup, timed apart from training
        ctx.phases["setup"] = time.perf_counter() - t0
        emit("setup", ctx.phases["setup"])  # a backend's time limit counts from here
        if meter is not None:
            meter.setup_done()
        if fn is not None:
            fn(config, ctx)
        else:
            run_command(job, ctx, task)
        ctx.flush()
        result: float | None
        error: str | None
        result, error = ctx.final()
        if error is not None:
            return outcome("failed", error=error)
        return outcome("finished", result=result)
    except TrialDiverged as exc:
        return outcome("diverged", error=f"diverged: {exc}")
    except Exception as exc:
        if ctx is not None:
            # keep what can be kept; the first error is the one to report
            with contextlib.suppress(Exception):
                ctx.flush()
        detail = "".join(traceback.format_exception(exc))
        return outcome("failed", error=f"{type(exc).__name__}: {exc}", error_detail=detail[-20000:])
    finally:
        if meter is not None:
            meter.close()  # the sampling thread stops however the trial ended
