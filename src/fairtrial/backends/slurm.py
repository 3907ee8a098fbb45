"""Trials as Slurm jobs (``--backend slurm``), submitted as job arrays through submitit.

submitit (``pip install 'fairtrial[slurm]'``) writes each job's sbatch script, pickles the
trial into it and its outcome back out; it is imported here only, when this backend is used.

* Each trial is one task of a job array (one ``sbatch`` for up to :data:`ARRAY_SIZE`
  trials), with at most ``array_parallelism`` running at once. The spec's ``[experiment]
  resources`` become the job's ``--cpus-per-task``, ``--gpus-per-node`` (whole GPUs: Slurm
  does not share one) and ``--mem``; a ``time_limit`` its ``--time`` (with room for the setup);
  ``[slurm]`` (or ``--slurm-*`` flags) names the partition, account, qos, a job time, the
  interpreter and setup lines on the nodes, and any other sbatch option.
* On the node the trial runs :func:`~fairtrial.execute.execute_trial`, the code every backend
  runs, so results equal the local backend's for the same seeds; its events reach the driver
  through a file (:mod:`fairtrial.backends.slurmjob`) and its outcome through submitit's
  result file. The driver alone writes the ledger.
* Each submitted job is recorded with its trial's attempt as soon as ``sbatch`` answers. A run
  stopped with Ctrl-C (or SIGTERM) leaves its jobs queued or running and lets go of their
  trials; the next run, or one started after the driver was killed, collects those jobs
  instead of submitting the trials again.
* A job that ends without a result (cancelled, preempted, timed out, its node failed) is a
  lost trial: retried as its next attempt under ``max_retries``, as when a worker dies. A job
  that failed before its trial could start (the nodes' Python cannot import fairtrial, say)
  fails with the end of its log, since every retry would fail the same way.

The spec's folder and the store must be reachable from the nodes at the same paths (a shared
file system; or a PostgreSQL URL for the store), and the nodes need the same Python
environment: see the README's "Running on a Slurm cluster".
"""

from __future__ import annotations

import contextlib
import getpass
import io
import math
import os
import pickle
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from fairtrial.backends.base import Backend, Sink, TrialClock, TrialJob, interrupted, with_setup
from fairtrial.backends.local import HoldingSink
from fairtrial.backends.slurmjob import (
    FAILED_STATES,
    EventReader,
    SlurmTrial,
    cancel,
    events_path,
    final_state,
    log_tail,
    queued,
)
from fairtrial.errors import BackendError, MissingDependency
from fairtrial.trial import TrialOutcome

#: trials per sbatch (Slurm's default MaxArraySize is 1001)
ARRAY_SIZE = 1000
#: a job's time limit in minutes when neither ``[slurm] time`` nor a ``time_limit`` sets one
DEFAULT_MINUTES = 60
#: seconds between two looks at the jobs' files (it grows to POLL_MAX while nothing happens)
POLL_MIN, POLL_MAX = 0.05, 0.5
#: seconds between two questions to the queue (squeue)
QUEUE_EVERY = 2.0
#: seconds a job may be gone from the queue before its result file must be there (a shared
#: file system may show a file late)
RESULT_GRACE = 5.0


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise MissingDependency("submitit", "slurm", "the Slurm backend") from None
    return submitit


@dataclass(frozen=True)
class SlurmSettings:
    """Where and how jobs are submitted: the spec's ``[slurm]`` table, with flags on top."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    #: each job's time limit in minutes (default: from the spec's time_limit, else 60)
    time: int | None = None
    array_parallelism: int | None = None
    #: shell lines each job runs before the trial (``module load ...``, ``source venv/...``)
    setup: tuple[str, ...] = ()
    #: the interpreter on the nodes (default: the one running this driver)
    python: str | None = None
    #: the jobs' files: on a file system the nodes share (default: ./.fairtrial/slurm)
    folder: str | None = None
    #: other sbatch options: {"constraint": "a100", "exclusive": True}
    sbatch: Mapping[str, str | int | bool] = field(default_factory=dict)

    @classmethod
    def of(cls, table: Mapping[str, Any], **flags: Any) -> SlurmSettings:
        """The spec's ``table`` with every flag that was given (not None) on top."""
        values = {f.name: table[f.name] for f in fields(cls) if f.name in table}
        values["setup"] = tuple(values.get("setup", ()))
        extra = dict(values.get("sbatch", {}))
        extra.update(flags.pop("sbatch", None) or {})
        values["sbatch"] = extra
        values.update({k: v for k, v in flags.items() if v is not None})
        return cls(**values)


@dataclass
class _Job:
    job: TrialJob
    job_id: str
    reader: EventReader
    result: Path
    log: Path
    clock: TrialClock
    #: the trial's sealed test evaluation, held until its outcome is written with it
    tests: list[Any] = field(default_factory=list)
    #: when the queue first no longer listed the job
    gone_since: float | None = None


class SlurmBackend(Backend):
    """Trials as Slurm jobs in job arrays; the driver alone writes the ledger."""

    name = "slurm"

    def __init__(
        self,
        settings: SlurmSettings | None = None,
        *,
        resources: Mapping[str, float] | None = None,
        threads: int | None = None,
        experiment: str = "",
    ) -> None:
        self.submitit = _submitit()  # a missing extra is said before any trial is claimed
        if shutil.which("sbatch") is None:
            raise BackendError(
                "--backend slurm: no 'sbatch' on this machine's PATH: run fairtrial on a "
                "machine that submits to the cluster (a login node)"
            )
        self.settings = settings or SlurmSettings()
        self.resources = dict(resources or {})
        cpus = math.ceil(self.resources.get("cpus", 1.0))
        self.threads = threads or cpus
        #: how many jobs run at once, for provenance (0: as many as the cluster runs)
        self.workers = self.settings.array_parallelism or 0
        self.experiment = experiment
        self.user = getpass.getuser()
        #: job ids of every job this backend submitted (tests and the bench read it)
        self.submitted: list[str] = []

    # -- what a job asks for ----------------------------------------------------------------------
    def minutes(self, job: TrialJob) -> int:
        """The job's time limit: ``[slurm] time``, else the trial's time limit with room for
        its setup and the warning signal, else :data:`DEFAULT_MINUTES`."""
        if self.settings.time:
            return self.settings.time
        if job.time_limit:
            return math.ceil((with_setup(job.time_limit) + 90) / 60)
        return DEFAULT_MINUTES

    def parameters(self, job: TrialJob) -> dict[str, Any]:
        """submitit's SlurmExecutor parameters for ``job``."""
        s, res = self.settings, job.resources or self.resources
        extra: dict[str, Any] = {"no_requeue": True}  # a preempted trial: a new attempt
        extra.update({k.replace("-", "_"): v for k, v in s.sbatch.items()})
        if "requeue" in extra:
            extra.pop("no_requeue")
        params: dict[str, Any] = {
            "time": self.minutes(job),
            "cpus_per_task": math.ceil(res.get("cpus", 1.0)),
            "job_name": f"fairtrial-{job.experiment_id}",
            "additional_parameters": extra,
        }
        if res.get("gpus"):
            params["gpus_per_node"] = math.ceil(res["gpus"])
        if res.get("mem"):
            params["mem"] = f"{math.ceil(res['mem'] * 1024)}M"
        for key in ("partition", "account", "qos", "array_parallelism"):
            if (value := getattr(s, key)) is not None:
                params[key] = value
        if s.setup:
            params["setup"] = list(s.setup)
        return params

    def folder(self) -> Path:
        return Path(self.settings.folder or Path(".fairtrial") / "slurm").resolve()

    def adopts(self, handle: dict[str, Any]) -> bool:
        return handle.get("backend") == "slurm"

    # -- running ------------------------------------------------------------------------------
    def run(self, jobs: Iterator[TrialJob], sink: Sink, total: int) -> None:
        if isinstance(sink, HoldingSink):  # points are written in batches, not one by one
            with sink.holding():
                self._run(jobs, sink, sink)
        else:
            self._run(jobs, sink, None)

    def _run(self, jobs: Iterator[TrialJob], sink: Sink, held: HoldingSink | None) -> None:
        running: dict[str, _Job] = {}
        fresh: list[TrialJob] = []
        try:
            for job in jobs:  # every claim at once: the cluster's queue holds the jobs
                if job.handle is not None:
                    r = self._collect(job)
                    running[r.job_id] = r
                    sink.started(job)
                else:
                    fresh.append(job)
            if running:
                ids = ", ".join(sorted(running)[:5]) + (" ..." if len(running) > 5 else "")
                _say(f"slurm: collecting {len(running)} jobs an earlier run submitted ({ids})")
            for k in range(0, len(fresh), ARRAY_SIZE):
                chunk = fresh[k : k + ARRAY_SIZE]
                for r in self._submit(chunk, sink):
                    running[r.job_id] = r
            fresh = []
            self._watch(running, sink, held)
        except KeyboardInterrupt:
            # the jobs go on: the next run collects them (and a user who wants them gone
            # cancels them by the ids said here)
            for r in running.values():
                sink.detached(r.job)
            for job in fresh:
                if not any(r.job is job for r in running.values()):
                    sink.finished(job, interrupted())
            if running:
                arrays = sorted({r.job_id.split("_")[0] for r in running.values()})
                _say(
                    f"slurm: {len(running)} jobs go on without this run; `fairtrial run` again "
                    f"collects them, `scancel {' '.join(arrays)}` stops them"
                )
            raise
        except BaseException:
            cancel(sorted(running))
            for r in running.values():
                sink.finished(r.job, r.clock.interrupted())
            for job in fresh:
                if not any(r.job is job for r in running.values()):
                    sink.finished(job, interrupted())
            raise

    def _collect(self, job: TrialJob) -> _Job:
        """The running job an earlier run submitted for ``job`` (its handle says where)."""
        handle = job.handle or {}
        paths = self.submitit.core.utils.JobPaths(handle["folder"], handle["job_id"])
        clock = TrialClock.of(job)
        clock.start()
        return _Job(
            job,
            handle["job_id"],
            EventReader(Path(handle["events"])),
            Path(paths.result_pickle),
            Path(paths.stderr),
            clock,
        )

    def _submit(self, chunk: list[TrialJob], sink: Sink) -> list[_Job]:
        """Submit ``chunk`` as one job array (one sbatch) and record every job at once."""
        folder = self.folder()
        pattern = str(folder / "%j")
        executor = self.submitit.SlurmExecutor(
            folder=pattern, python=self.settings.python or sys.executable
        )
        executor.update_parameters(**self.parameters(chunk[0]))
        calls = []
        for job in chunk:
            events = events_path(folder, job)
            events.parent.mkdir(parents=True, exist_ok=True)
            events.unlink(missing_ok=True)  # a file left by an attempt never collected
            calls.append(
                SlurmTrial(replace(job, threads=self.threads), str(events), self.minutes(job))
            )
        try:
            with _stderr_kept() as said, executor.batch():
                submitted = [executor.submit(call) for call in calls]
        except Exception as exc:  # sbatch refused: the partition, account, a limit, ...
            lines = [ln for ln in said.getvalue().splitlines() if ln.strip()] or [str(exc)]
            text = " ".join(lines[-1].split())
            raise BackendError(f"--backend slurm: sbatch refused the jobs: {text[-600:]}") from None
        out = []
        for job, call, sj in zip(chunk, calls, submitted, strict=True):
            handle = {
                "backend": "slurm",
                "job_id": sj.job_id,
                "folder": pattern,
                "events": call.events,
            }
            sink.submitted(job, sj.job_id, handle)
            sink.started(job)
            self.submitted.append(sj.job_id)
            clock = TrialClock.of(job)
            clock.start()
            result, log = Path(sj.paths.result_pickle), Path(sj.paths.stderr)
            reader = EventReader(Path(call.events))
            out.append(_Job(job, sj.job_id, reader, result, log, clock))
        return out

    def _watch(self, running: dict[str, _Job], sink: Sink, held: HoldingSink | None) -> None:
        """Follow the jobs until each has ended, reporting their events and outcomes."""
        poll = POLL_MIN
        asked = time.monotonic()
        while running:
            changed = False
            for job_id, r in list(running.items()):
                changed |= self._read(r, sink)
                outcome = self._outcome(r)
                if outcome is None and r.clock.expired():
                    cancel([job_id])
                    outcome = r.clock.exceeded()
                if outcome is not None:
                    self._read(r, sink)
                    del running[job_id]
                    for payload in r.tests:
                        sink.event(r.job, "test", payload)
                    sink.finished(r.job, outcome)
                    changed = True
            if running and time.monotonic() - asked >= QUEUE_EVERY:
                asked = time.monotonic()
                changed |= self._check_queue(running, sink)
            due = held.due() if held is not None else None
            if held is not None and due is not None and due <= time.monotonic():
                held.flush()
            poll = POLL_MIN if changed else min(POLL_MAX, poll * 1.5)
            if running:
                time.sleep(poll)

    def _read(self, r: _Job, sink: Sink) -> bool:
        events = r.reader.read()
        for kind, payload in events:
            if kind == "begin":
                r.clock.start()
            elif kind == "setup":
                r.clock.setup_done()
            elif kind == "test":
                r.tests.append(payload)
            else:
                sink.event(r.job, kind, payload)
        return bool(events)

    def _outcome(self, r: _Job) -> TrialOutcome | None:
        """The job's outcome once its result file is there, else None."""
        with contextlib.suppress(OSError):  # makes a shared file system look again
            r.result.parent.chmod(r.result.parent.stat().st_mode)
        if not r.result.exists():
            return None
        try:
            status, value = self.submitit.core.utils.pickle_load(r.result)
        except (EOFError, pickle.UnpicklingError):  # still being written
            return None
        if status == "success" and isinstance(value, TrialOutcome):
            return value
        detail = str(value)
        last = detail.strip().splitlines()[-1] if detail.strip() else "no message"
        return TrialOutcome(
            "failed",
            error=f"Slurm job {r.job_id} failed outside the trial: {last}",
            error_detail=detail,
            wall_time=r.clock.wall(),
        )

    def _check_queue(self, running: dict[str, _Job], sink: Sink) -> bool:
        """Report the jobs that left the queue without a result; True when any did."""
        states = queued(self.user)
        if states is None:  # Slurm could not be asked: nothing can be concluded
            return False
        now = time.monotonic()
        ended = False
        for job_id, r in list(running.items()):
            if job_id in states:
                r.gone_since = None
                continue
            if r.gone_since is None:
                r.gone_since = now
                continue
            if now - r.gone_since < RESULT_GRACE or self._outcome(r) is not None:
                continue
            self._read(r, sink)
            del running[job_id]
            sink.finished(r.job, self._without_result(r))
            ended = True
        return ended

    def _without_result(self, r: _Job) -> TrialOutcome:
        """The outcome of a job that left the queue without writing a result."""
        state = final_state(r.job_id) or "unknown"
        wall = r.clock.wall()
        if state in FAILED_STATES:
            tail = log_tail(r.log)
            # the job's own last words, not srun's report that it exited
            said = [ln for ln in tail.splitlines() if not ln.startswith(("srun:", "slurmstepd:"))]
            last = (said or tail.splitlines() or ["its log is empty"])[-1].strip()
            return TrialOutcome(
                "failed",
                error=f"Slurm job {r.job_id} failed before its trial could end: {last}",
                error_detail=f"{r.log}:\n{tail}",
                wall_time=wall,
            )
        how = "left the queue" if state == "unknown" else f"ended {state}"
        return TrialOutcome(
            "lost", error=f"Slurm job {r.job_id} {how} without a result", wall_time=wall
        )


@contextlib.contextmanager
def _stderr_kept() -> Iterator[io.StringIO]:
    """What programs this process starts write on stderr (sbatch's complaints), kept for the
    one line that says what went wrong instead of printed."""
    said = io.StringIO()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield said
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            said.write(tmp.read().decode(errors="replace"))


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
