"""Persistent worker processes on this machine, with crash isolation and time limits.

Workers are started with ``spawn`` (a fresh interpreter: no inherited threads or CUDA state)
and kept for the whole run, so torch is imported once per worker, not once per trial. A trial
that raises is reported by its worker; one that segfaults, is killed, or passes its time limit
takes its worker down: the parent sees the worker's exit, records the trial ``failed`` with
the reason, and starts a fresh worker. Metrics the trial flushed before dying are kept.

Never more workers x threads than cores: oversubscribing a small machine was measured 2-4x
slower than running fewer trials at once.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from fairtrial.backends.base import Backend, Sink, TrialJob, TrialOutcome

#: seconds a trial's setup (a worker's first imports, loading the task) may take on top of its
#: time limit; the limit itself counts from the end of the setup
SETUP_ALLOWANCE = 120.0


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


def _worker_main(conn: Connection, threads: int) -> None:
    # The parent owns Ctrl-C: it stops the workers itself and records what was running.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    from fairtrial.backends.base import execute_trial

    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        job: TrialJob = msg

        def emit(kind: str, payload: Any, job: TrialJob = job) -> None:
            conn.send((kind, payload))

        outcome = execute_trial(job, emit)
        conn.send(("done", outcome))


@dataclass
class _Worker:
    process: Any
    conn: Connection
    job: TrialJob | None = None
    deadline: float | None = None
    started: float = 0.0


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
        proc = self._ctx.Process(
            target=_worker_main, args=(child, self.threads), daemon=True, name="fairtrial-worker"
        )
        proc.start()
        child.close()
        return _Worker(proc, parent)

    def run(self, jobs: Iterator[TrialJob], sink: Sink, total: int) -> None:
        pool: list[_Worker] = []
        exhausted = False
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
                    limit = job.time_limit or self.time_limit
                    idle.job, idle.started = job, time.monotonic()
                    # until the worker reports the trial's setup done, allow for the setup too
                    idle.deadline = idle.started + limit + SETUP_ALLOWANCE if limit else None
                    sink.started(job)
                    idle.conn.send(job)
                busy = [w for w in pool if w.job is not None]
                if not busy:
                    break
                deadlines = [w.deadline for w in busy if w.deadline is not None]
                timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
                ready = wait(
                    [w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=timeout
                )
                for w in busy:
                    if w.conn in ready:
                        self._drain(w, sink)
                for w in busy:
                    if w.job is None:
                        continue
                    if w.process.sentinel in ready or not w.process.is_alive():
                        self._drain(w, sink)
                        if w.job is not None:
                            self._lost(w, sink, pool, self._death_reason(w))
                    elif w.deadline is not None and time.monotonic() >= w.deadline:
                        w.process.kill()
                        w.process.join()
                        self._drain(w, sink)
                        if w.job is not None:
                            limit = w.job.time_limit or self.time_limit
                            self._lost(w, sink, pool, f"time limit of {limit:g} s exceeded")
        except BaseException:
            for w in pool:
                w.process.kill()
            for w in pool:
                w.process.join()
                if w.job is not None:
                    self._drain(w, sink)
                    if w.job is not None:
                        wall = time.monotonic() - w.started
                        sink.finished(
                            w.job,
                            TrialOutcome(
                                "interrupted", error="the run was interrupted", wall_time=wall
                            ),
                        )
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

    def _drain(self, w: _Worker, sink: Sink) -> None:
        """Pass on every message the worker sent; a ``done`` frees the worker."""
        try:
            while w.job is not None and w.conn.poll():
                kind, payload = w.conn.recv()
                if kind == "done":
                    job, w.job, w.deadline = w.job, None, None
                    sink.finished(job, payload)
                elif kind == "setup":
                    limit = w.job.time_limit or self.time_limit
                    if limit:
                        w.deadline = time.monotonic() + limit
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

    def _lost(self, w: _Worker, sink: Sink, pool: list[_Worker], reason: str) -> None:
        job = w.job
        assert job is not None
        w.job = w.deadline = None
        wall = time.monotonic() - w.started
        sink.finished(job, TrialOutcome("failed", error=reason, wall_time=wall))
        w.conn.close()
        pool.remove(w)
