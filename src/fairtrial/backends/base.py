"""The backend seam: run trials, report what happened through a :class:`Sink`.

A backend only decides *where* a trial runs (this process, a worker process, a cluster);
:func:`execute_trial` is what runs it, the same code everywhere, so every backend gives the
same result for the same trial.

A run stops the same way on Ctrl-C (SIGINT), SIGTERM and SIGHUP: :func:`stop_on_signals`
turns the last two into :class:`RunInterrupted`, a KeyboardInterrupt, and every backend
answers a KeyboardInterrupt by stopping its workers and reporting each trial it was running
``interrupted`` (a later run resumes it).
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import sys
import threading
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal, Protocol

#: "lost": the process running the trial died under it (killed, crashed, vanished with its
#: node); the runner retries a lost trial as its next attempt, up to ``max_retries``.
#: seconds a trial's setup (a worker's first imports, loading the task) may take on top of its
#: time limit; the limit itself counts from the end of the setup (the "setup" event)
SETUP_ALLOWANCE = 120.0

Status = Literal["finished", "failed", "diverged", "interrupted", "lost"]


@dataclass(frozen=True)
class TrialJob:
    """Everything a worker needs to run one attempt of one trial (picklable)."""

    trial_id: str
    experiment_id: str
    arm: str
    seed: int
    attempt: int
    config: dict[str, Any]
    root_seed: int
    task: str
    task_checksum: str
    metric: str
    recipe: str | None = None
    command: str | None = None
    base_dir: str | None = None
    workdir: str | None = None
    data_cache: str | None = None
    time_limit: float | None = None
    threads: int | None = None
    #: time-to-target: the experiment's target, the logged metric checked, and its direction
    target: float | None = None
    target_metric: str | None = None
    direction: str = "max"
    #: measure compute (see fairtrial.meter); FAIRTRIAL_METER=0 in the worker also turns it off
    meter: bool = True
    #: what the trial asks of a cluster: {"cpus": 1, "gpus": 0.5} (the Ray backend uses it)
    resources: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TrialOutcome:
    status: Status
    result: float | None = None
    error: str | None = None
    error_detail: str | None = None
    wall_time: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    #: the trial's compute record (fairtrial.meter.Meter.record); {} when the worker was lost
    compute: dict[str, Any] = field(default_factory=dict)
    #: the config keys the recipe read, dotted (fairtrial.configreads); None when not recorded
    #: (a recipe with a config class is checked against it when the spec loads)
    config_read: tuple[str, ...] | None = None


class Sink(Protocol):
    """Receives what backends report; the runner's sink writes it to the ledger."""

    def started(self, job: TrialJob) -> None: ...

    def event(self, job: TrialJob, kind: str, payload: Any) -> None: ...

    def finished(self, job: TrialJob, outcome: TrialOutcome) -> None: ...


#: the signals that stop a run as Ctrl-C does (those this platform has)
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by a signal other than SIGINT; ``signum`` says which.

    A KeyboardInterrupt, so that everything that handles Ctrl-C (stopping the workers,
    recording the trials that were running ``interrupted``) handles it the same way.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"the run was stopped by {signal.Signals(signum).name}")


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP raise :class:`RunInterrupted` (also usable
    as a decorator).

    Only in the main thread (where Python runs signal handlers), and only for a signal whose
    handler is the default one: a handler of the caller's, or an ignored signal (``nohup``
    ignores SIGHUP), stays as it is. The previous handlers are back when the block ends. A
    second signal while the run is stopping is ignored, so that the stop can record what was
    running; SIGKILL still ends it at once (the workers then notice and exit).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: int | None = None

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal received
        if received is None:
            received = signum
            raise RunInterrupted(signum)

    ours = [sig for sig in STOP_SIGNALS if signal.getsignal(sig) is signal.SIG_DFL]
    try:
        for sig in ours:
            signal.signal(sig, handler)
        yield
    except KeyboardInterrupt as exc:
        # some libraries (Ray) answer any exception from a signal handler with a plain
        # KeyboardInterrupt: it still says which signal stopped the run
        if received is not None and not isinstance(exc, RunInterrupted):
            raise RunInterrupted(received) from exc
        raise
    finally:
        for sig in ours:
            signal.signal(sig, signal.SIG_DFL)


class Backend(ABC):
    """Where trials run. ``run`` pulls jobs lazily (each pull claims a trial in the ledger)."""

    name: str = "backend"
    #: how many trials run at once; the runner records it in provenance
    workers: int = 1
    threads: int | None = None

    @abstractmethod
    def run(self, jobs: Iterator[TrialJob], sink: Sink, total: int) -> None:
        """Run every job from ``jobs``; report each through ``sink``; KeyboardInterrupt stops."""


class InlineBackend(Backend):
    """Runs trials one after another in this process: no isolation, no time limit.

    For tests and debugging (breakpoints work); a crash of the trial is a crash of the run.
    """

    name = "inline"

    def run(self, jobs: Iterator[TrialJob], sink: Sink, total: int) -> None:
        for job in jobs:
            sink.started(job)

            def emit(kind: str, payload: Any, job: TrialJob = job) -> None:
                sink.event(job, kind, payload)

            t0 = time.perf_counter()
            try:
                outcome = execute_trial(job, emit)
            except BaseException:  # Ctrl-C, a stop signal: the trial resumes next run
                wall = time.perf_counter() - t0
                stopped = TrialOutcome(
                    "interrupted", error="the run was interrupted", wall_time=wall
                )
                sink.finished(job, stopped)
                raise
            sink.finished(job, outcome)


_RECIPES: dict[tuple[str, str | None], Callable[..., Any]] = {}


def _resolve_recipe(ref: str, base_dir: str | None) -> Callable[..., Any]:
    key = (ref, base_dir)
    if key not in _RECIPES:
        from fairtrial.tasks import import_object

        fn = import_object(ref, Path(base_dir) if base_dir else None, "recipe")
        if not callable(fn):
            raise TypeError(f"recipe '{ref}' is not callable")
        _RECIPES[key] = fn
    return _RECIPES[key]


def load_trial_code(job: TrialJob) -> None:
    """Load into this process what every trial of ``job``'s experiment needs: the task, the
    recipe and its imports (a command's data files); a worker does it before its first trial,
    so that no trial's time includes it. Errors are left for :func:`execute_trial` to report.
    """
    from fairtrial.tasks import get_task

    for module in ("fairtrial.configreads", "fairtrial.meter", "fairtrial.recipes"):
        importlib.import_module(module)  # what execute_trial imports
    with contextlib.suppress(Exception):
        task = get_task(job.task, Path(job.base_dir) if job.base_dir else None)
        if job.recipe:
            _resolve_recipe(job.recipe, job.base_dir)
        elif job.command:
            from fairtrial.backends.command import _cache_root, materialize

            materialize(task, _cache_root(job))


def execute_trial(job: TrialJob, emit: Callable[[str, Any], None]) -> TrialOutcome:
    """Run one trial in this process and return its outcome; never raises for trial errors.

    Unless ``job.meter`` is False or ``FAIRTRIAL_METER=0``, a :class:`~fairtrial.meter.Meter`
    measures the trial and its record becomes ``outcome.compute``, whatever the status.
    """
    from fairtrial.context import TrialContext
    from fairtrial.errors import TrialDiverged
    from fairtrial.meter import Meter, metering_enabled
    from fairtrial.seeding import seed_globals
    from fairtrial.tasks import get_task

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
        base = Path(job.base_dir) if job.base_dir else None
        task = get_task(job.task, base)
        if task.checksum != job.task_checksum:
            return outcome(
                "failed",
                error=f"task '{job.task}' data changed: checksum {task.checksum[:12]} in this "
                f"worker, {job.task_checksum[:12]} when the run started",
            )
        fn = _resolve_recipe(job.recipe, job.base_dir) if job.recipe else None
        config, reads = recording_config(job, fn)
        _set_threads(job.threads)
        seed_globals(job.root_seed, job.seed)
        workdir = Path(job.workdir) if job.workdir else None
        if workdir is not None:
            workdir.mkdir(parents=True, exist_ok=True)
        ctx = TrialContext(
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
        )
        # task loading, recipe import and seeding: the trial's setup, timed apart from training
        ctx.phases["setup"] = time.perf_counter() - t0
        emit("setup", ctx.phases["setup"])  # a time limit counts from here (backends/local.py)
        if meter is not None:
            meter.setup_done()
        if fn is not None:
            fn(config, ctx)
        else:
            from fairtrial.backends.command import run_command

            run_command(job, ctx, task)
        ctx.flush()
        if ctx.test_score is None:
            return outcome(
                "failed",
                error="the recipe never called ctx.evaluate_test(predict): "
                "a trial's result is its score on the sealed test split",
            )
        return outcome("finished", result=ctx.test_score)
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


def recording_config(
    job: TrialJob, fn: Callable[..., Any] | None
) -> tuple[dict[str, Any], set[str] | None]:
    """The config to hand the recipe, and the set its reads go to (None: not recorded).

    A recipe with a config class gets the plain config (the spec was checked against the
    class); a command reads the keys its placeholders name.
    """
    from fairtrial.configreads import ReadRecorder, command_reads
    from fairtrial.recipes import config_class_of

    if fn is None:
        return job.config, set(command_reads(job.command or ""))
    if config_class_of(fn) is not None:
        return job.config, None
    recorder = ReadRecorder(job.config)
    return recorder, recorder.reads


def _set_threads(threads: int | None) -> None:
    torch: Any = sys.modules.get("torch")
    if threads and torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
