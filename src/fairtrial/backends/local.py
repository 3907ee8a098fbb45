"""Persistent worker processes on this machine, with crash isolation and time limits.

Workers are started with ``spawn`` (a fresh interpreter: no inherited threads or CUDA state)
and kept for the whole run, so torch is imported once per worker, not once per trial. A trial
that raises is reported by its worker; one that segfaults or is killed takes its worker down:
the parent sees the worker's exit, reports the trial ``lost`` with the reason (the runner
retries it as its next attempt, up to the spec's ``max_retries``, then records it ``failed``)
and starts a fresh worker. A trial past its
time limit is killed the same way and recorded ``failed`` at once (a hang would hang again).
Metrics the trial flushed before dying are kept under their attempt.

Never more workers x threads than cores: oversubscribing a small machine was measured 2-4x
slower than running fewer trials at once.

A spawned worker first imports the main module of the process that started the run again (so
that what it defines can be unpickled): a script that starts the run at its top level, outside
``if __name__ == "__main__":``, would start it again in every worker, and a recipe or task
defined in a notebook (module ``__main__`` without a file) does not exist in a worker. Both are
caught before any trial runs (:func:`spawn_problem`); a worker that still dies before it is
ready stops the run with the reason, instead of losing every trial to it.

The parent owns the stop signals (SIGINT, SIGTERM, SIGHUP; workers ignore them): it stops
its workers and records what they were running. A worker stops when its lifeline, a pipe
from the parent, closes: the parent closes it to stop the worker, and the system closes it
when the parent dies, even by SIGKILL. The worker then kills the command it is running (with
its process group) and exits at once, instead of computing on for a run that is gone.
"""

from __future__ import annotations

import ast
import contextlib
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from fairtrial.backends.base import (
    STOP_SIGNALS,
    Backend,
    Sink,
    TrialClock,
    TrialJob,
    TrialOutcome,
    until_first,
)
from fairtrial.errors import BackendError
from fairtrial.execute import execute_trial, load_trial_code, stop_commands


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def split_cores(workers: int | None, threads: int | None) -> tuple[int, int]:
    """Workers and threads per worker such that workers x threads <= cores."""
    cores = available_cores()
    if workers is None and threads is None:
        return cores, 1
    if workers is None:
        t = max(1, min(int(threads or 1), cores))
        return max(1, cores // t), t
    w = max(1, workers)
    t = threads if threads is not None else max(1, cores // w)
    return w, max(1, t)


#: how a worker's start-up is measured (the label stored with it)
STARTUP_METHOD = (
    "worker start-up, before its first trial and counted in no trial's time: interpreter "
    "start and imports (wall clock from the spawn to the worker being ready), then loading "
    "the task and importing the recipe (time.perf_counter)"
)


#: seconds a worker asked to stop may take to kill its command and exit before it is killed
STOP_GRACE = 3.0


def _stop_with(lifeline: Connection) -> None:
    """Wait until the parent closes the lifeline (or dies); then stop this worker at once."""
    with contextlib.suppress(OSError):
        wait([lifeline])
    stop_commands()
    os._exit(0)


def _worker_main(
    conn: Connection,
    lifeline: Connection,
    threads: int,
    spawned_at: float,
    time_limit: float | None = None,
) -> None:
    # The parent owns the stop signals: it stops the workers itself and records what was
    # running (a terminal sends Ctrl-C and SIGHUP to the whole process group).
    for sig in (signal.SIGINT, *STOP_SIGNALS):
        signal.signal(sig, signal.SIG_IGN)
    threading.Thread(target=_stop_with, args=(lifeline,), daemon=True).start()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    # what every trial needs (fairtrial.execute and what it imports) is imported by now
    boot = max(0.0, time.time() - spawned_at)
    conn.send(("ready", None))  # the main module re-imported (spawn) and fairtrial loaded
    first = True
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        job: TrialJob = msg
        if first:  # the clock of the first trial runs on from here (a warm worker is at once)
            conn.send(("begin", None))
        # the end of the setup only matters to a time limit: otherwise the parent is not
        # woken for it
        limited = bool(TrialClock.of(job, time_limit).limit)

        def emit(kind: str, payload: Any, limited: bool = limited) -> None:
            if kind != "setup" or limited:
                conn.send((kind, payload))

        startup: dict[str, Any] | None = None
        if first:  # the worker's one-time loading: its own record, not the first trial's time
            first = False
            t0 = time.perf_counter()
            load_trial_code(job)
            load = time.perf_counter() - t0
            startup = {
                "seconds": boot + load,
                "interpreter_and_imports": boot,
                "task_and_recipe": load,
                "method": STARTUP_METHOD,
            }
        outcome = execute_trial(job, emit)
        if startup is not None:
            # the worker's first trial pays its one-time costs (lazy imports, kernel caches):
            # no time comparison uses it
            outcome = replace(
                outcome,
                compute={**outcome.compute, "worker_startup": startup, "first_in_process": True},
            )
        conn.send(("done", outcome))


@runtime_checkable
class HoldingSink(Sink, Protocol):
    """A sink that can hold events back to write them together (the runner's sink, see
    :meth:`fairtrial.recorder._LedgerSink.holding`): while the backend runs in ``holding()``,
    it calls ``flush()`` once ``due()`` (a ``time.monotonic()`` time, or None) has passed."""

    def holding(self) -> contextlib.AbstractContextManager[None]: ...

    def due(self) -> float | None: ...

    def flush(self) -> None: ...


@dataclass
class _Worker:
    process: Any
    conn: Connection
    #: closing it stops the worker (see _stop_with)
    lifeline: Connection
    job: TrialJob | None = None
    #: the running trial's wall clock and time limit
    clock: TrialClock = field(default_factory=TrialClock)
    #: the worker finished starting (a death before that is no trial's fault)
    ready: bool = False


def _main_reimported() -> str | None:
    """The file a spawned worker runs again as its main module, or None (as multiprocessing
    decides in ``spawn.get_preparation_data`` and ``_fixup_main_from_*``)."""
    main = sys.modules.get("__main__")
    spec_name = getattr(getattr(main, "__spec__", None), "name", None)
    if spec_name is not None and (spec_name == "__main__" or spec_name.endswith(".__main__")):
        return None
    path = getattr(main, "__file__", None)
    if not isinstance(path, str) or Path(path).stem == "ipython":
        return None
    return path


def _unguarded_line(path: str) -> int | None:
    """The line of the main script's top-level statement that is running now, when it is not
    under an ``if`` on ``__name__`` (a worker re-running the script would run it again)."""
    main = sys.modules["__main__"]
    frame = sys._getframe()
    while frame is not None and not (
        frame.f_code.co_name == "<module>" and frame.f_globals is vars(main)
    ):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:  # the script's top level is done (e.g. python -i): nothing re-runs
        return None
    line = frame.f_lineno
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return None
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.If)
            and any(isinstance(n, ast.Name) and n.id == "__name__" for n in ast.walk(node.test))
            and node.lineno <= line <= (node.end_lineno or node.lineno)
        ):
            return None
    return line


def spawn_problem(job: TrialJob | None = None) -> str | None:
    """Why spawned workers could not run the trials of this process, or None.

    Without ``job``: the main script starts the run outside ``if __name__ == "__main__":``.
    With ``job``: its recipe or task lives in module ``__main__`` that workers cannot import.
    """
    path = _main_reimported()
    if job is None:
        start_dir = getattr(mp.process, "ORIGINAL_DIR", None) or ""  # where mp resolves it
        if path is not None and not Path(start_dir, path).is_file():
            return (
                f"the main module '{path}' is not a file: the local backend's worker processes "
                "import the main module again and cannot. Run the code from a script file, or "
                "use InlineBackend() (`--backend inline`)"
            )
        line = _unguarded_line(path) if path is not None else None
        if line is None:
            return None
        return (
            f"{path}:{line} starts the run at the top level of the script: the local backend's "
            "worker processes import the script again and would start it again in each "
            'worker. Put the code that runs the experiment under `if __name__ == "__main__":`'
        )
    if path is not None:  # the worker runs the main script again: its functions exist there
        return None
    for what, ref in (("recipe", job.recipe), ("task", job.task)):
        if ref is not None and ref.partition(":")[0] == "__main__":
            return (
                f"{what} '{ref}' is defined in module __main__ (a notebook or an interactive "
                "session), which the local backend's worker processes cannot import: put it in "
                f"a module file next to the spec and name it as 'module:function', or run "
                "with InlineBackend() (`--backend inline`)"
            )
    return None


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


class LocalBackend(Backend):
    """Trials in persistent worker processes on this machine."""

    name = "local"

    def __init__(
        self,
        workers: int | None = None,
        threads: int | None = None,
        time_limit: float | None = None,
    ) -> None:
        self.workers, self.threads = split_cores(workers, threads)
        self.time_limit = time_limit
        self._ctx = mp.get_context("spawn")

    def _start(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        held, given = self._ctx.Pipe(duplex=False)  # the worker reads, the parent holds
        proc = self._ctx.Process(
            target=_worker_main,
            args=(child, held, self.threads, time.time(), self.time_limit),
            daemon=True,
            name="fairtrial-worker",
        )
        proc.start()
        child.close()
        held.close()
        return _Worker(proc, parent, given)

    @staticmethod
    def _stop(workers: list[_Worker]) -> None:
        """Stop these workers and their commands now; kill any that does not exit."""
        for w in workers:
            w.lifeline.close()
        deadline = time.monotonic() + STOP_GRACE
        for w in workers:
            w.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                w.process.join()

    def run(self, jobs: Iterator[TrialJob], sink: Sink, total: int) -> None:
        if problem := spawn_problem():
            raise BackendError(problem)
        if isinstance(sink, HoldingSink):  # a trial's events and ending: one write
            with sink.holding():
                self._run(jobs, sink, total, sink)
        else:
            self._run(jobs, sink, total, None)

    def _run(
        self, jobs: Iterator[TrialJob], sink: Sink, total: int, held: HoldingSink | None
    ) -> None:
        pool: list[_Worker] = []
        exhausted = False
        checked = False
        try:
            while True:
                # hand a job to every idle worker, starting workers as needed
                while not exhausted:
                    idle = next((w for w in pool if w.job is None), None)
                    if idle is None and len(pool) < min(self.workers, max(total, 1)):
                        idle = self._start()
                        pool.append(idle)
                    if idle is None:
                        break
                    job = next(jobs, None)
                    if job is None:
                        exhausted = True
                        break
                    if not checked and (problem := spawn_problem(job)):
                        sink.finished(job, TrialOutcome("interrupted", error=problem))
                        raise BackendError(problem)
                    checked = True
                    # until the worker reports the trial's setup done, allow for the setup too
                    idle.job, idle.clock = job, TrialClock.of(job, self.time_limit)
                    idle.clock.start()
                    sink.started(job)
                    idle.conn.send(job)
                busy = [w for w in pool if w.job is not None]
                if not busy:
                    break
                timeout = until_first(w.clock for w in busy)
                due = held.due() if held is not None else None
                if due is not None:
                    left = max(0.0, due - time.monotonic())
                    timeout = left if timeout is None else min(timeout, left)
                ready = wait(
                    [w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=timeout
                )
                for w in busy:
                    if w.conn in ready:
                        self._drain(w, sink)
                due = held.due() if held is not None else None
                if held is not None and due is not None and due <= time.monotonic():
                    held.flush()
                for w in busy:
                    if w.job is None:
                        continue
                    if w.process.sentinel in ready or not w.process.is_alive():
                        self._drain(w, sink)
                        if w.job is not None and not w.ready:
                            # every worker would die the same way: stop with the reason
                            raise BackendError(self._start_failure(w))
                        if w.job is not None:
                            reason = self._death_reason(w)
                            lost = TrialOutcome("lost", error=reason, wall_time=w.clock.wall())
                            self._lost(w, sink, pool, lost)
                    elif w.clock.expired():
                        self._stop([w])
                        self._drain(w, sink)
                        if w.job is not None:
                            self._lost(w, sink, pool, w.clock.exceeded())
        except BaseException:
            self._stop(pool)
            for w in pool:
                if w.job is not None:
                    self._drain(w, sink)
                    if w.job is not None:
                        sink.finished(w.job, w.clock.interrupted())
            raise
        finally:
            for w in pool:
                if w.process.is_alive():
                    with contextlib.suppress(OSError):
                        w.conn.send(None)
            for w in pool:
                w.process.join(timeout=5)
                if w.process.is_alive():
                    w.process.kill()
                    w.process.join()
                w.lifeline.close()

    def _drain(self, w: _Worker, sink: Sink) -> None:
        """Pass on every message the worker sent; a ``done`` frees the worker."""
        try:
            while w.job is not None and w.conn.poll():
                kind, payload = w.conn.recv()
                if kind == "done":
                    job, w.job, w.clock = w.job, None, TrialClock()
                    sink.finished(job, payload)
                elif kind == "ready":
                    w.ready = True
                elif kind == "begin":  # the worker took the job (a fresh one has imported)
                    w.clock.started = time.monotonic()  # the setup allowance runs on
                elif kind == "setup":  # the trial's setup is over: its time limit counts now
                    w.clock.setup_done()
                else:
                    sink.event(w.job, kind, payload)
        except (EOFError, OSError):
            pass

    def _death_reason(self, w: _Worker) -> str:
        w.process.join(timeout=5)
        code = w.process.exitcode
        if code is None:
            return "worker stopped answering"
        if code < 0:
            return f"worker killed by {_signal_name(code)}"
        return f"worker exited with status {code}"

    def _start_failure(self, w: _Worker) -> str:
        reason = self._death_reason(w)
        main = _main_reimported()
        where = (
            f"; a worker first runs the main script {main} again: if that fails, or starts "
            'the experiment outside `if __name__ == "__main__":`, no worker can start '
            "(its error is printed above)"
            if main
            else ""
        )
        return f"a worker process died while starting, before running any trial ({reason}){where}"

    def _lost(self, w: _Worker, sink: Sink, pool: list[_Worker], outcome: TrialOutcome) -> None:
        """Report ``w``'s trial ended by ``outcome`` and drop the worker (it died, or was
        killed at the trial's time limit)."""
        job = w.job
        assert job is not None
        w.job, w.clock = None, TrialClock()
        sink.finished(job, outcome)
        w.conn.close()
        w.lifeline.close()
        pool.remove(w)
