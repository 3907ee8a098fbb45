"""The two ends of a Slurm job: what runs on the node, and what the driver asks Slurm.

On the node, :class:`SlurmTrial` (the callable submitit pickles into the job) runs one
attempt of one trial through :func:`~fairtrial.execute.execute_trial`, the code every backend
runs, and appends what the trial reports (its setup time, metric points, the sealed test
evaluation) to an event file in the jobs' folder, a file of its own per attempt. The driver
reads those files as they grow (:class:`EventReader`) and is the only writer of the ledger;
the outcome comes back in submitit's result file. Nothing else crosses from the node to the
driver, so a shared file system is all the two need in common.

Slurm warns a job with SIGUSR2 before it is preempted or reaches its time limit (submitit's
``--signal=USR2@90``). The trial is then stopped and comes back ``lost``: the driver retries
it as its next attempt under ``max_retries``, like a trial whose worker died, and its points
stay with the attempt that logged them. Whether the job timed out or was preempted is told
the way submitit tells it: by how much of its time limit it had used.
"""

from __future__ import annotations

import base64
import os
import pickle
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO

from fairtrial.execute import execute_trial, stop_commands
from fairtrial.trial import TrialJob, TrialOutcome

#: job states after which a job never runs again (Slurm's own words)
FAILED_STATES = ("FAILED",)
#: seconds a command asking Slurm may take
QUERY_SECONDS = 30.0


def events_path(folder: Path, job: TrialJob) -> Path:
    """The event file of ``job``'s attempt under the jobs' ``folder``."""
    name = job.trial_id.replace("/", "_")
    return folder / "events" / f"{name}.{job.attempt}.events"


class EventWriter:
    """Appends a trial's events to its file, one line each, flushed at once."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - open for the trial's life

    def emit(self, kind: str, payload: Any) -> None:
        line = base64.b64encode(pickle.dumps((kind, payload), protocol=4)) + b"\n"
        self._file.write(line)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class EventReader:
    """Reads the events appended to a file since the last read (only whole lines)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self._partial = b""

    def read(self) -> list[tuple[str, Any]]:
        try:
            if self.path.stat().st_size <= self.offset:
                return []
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        return [pickle.loads(base64.b64decode(line)) for line in lines if line]


class JobEnding(BaseException):
    """Raised in the trial when Slurm warns the job (SIGUSR2): not an error of the trial."""


class SlurmTrial:
    """One attempt of one trial as a Slurm job's function (picklable)."""

    def __init__(self, job: TrialJob, events: str, time_minutes: int) -> None:
        self.job = job
        self.events = events
        self.time_minutes = time_minutes

    def __call__(self) -> TrialOutcome:
        started = time.time()
        writer = EventWriter(Path(self.events))
        job_id = os.environ.get("SLURM_ARRAY_JOB_ID")
        if job_id is not None:
            job_id += "_" + os.environ.get("SLURM_ARRAY_TASK_ID", "")
        else:
            job_id = os.environ.get("SLURM_JOB_ID", "?")
        warnings: list[int] = []

        def warned(signum: int, frame: FrameType | None) -> None:
            # the first warning ends the trial; another one, while it ends, changes nothing
            if not warnings:
                warnings.append(signum)
                raise JobEnding(signum)

        # the handler is in place before the trial is seen to begin, so that no warning can
        # reach the job after its "begin" and still find submitit's own handler
        previous = signal.signal(signal.SIGUSR2, warned)
        try:
            writer.emit("begin", {"host": socket.gethostname(), "pid": os.getpid(), "job": job_id})
            return execute_trial(self.job, writer.emit)
        except JobEnding:
            stop_commands()
            ran = time.time() - started
            limit = self.time_minutes * 60.0
            # submitit's rule: a job that used most of its time timed out, else it was preempted
            if ran >= min(0.8 * limit, limit - 600.0):
                case = (
                    f"reached its time limit ({self.time_minutes} min; set [slurm] time "
                    "or --slurm-time for more)"
                )
            else:
                case = "was preempted"
            return TrialOutcome(
                "lost",
                error=f"Slurm job {job_id} {case} (SIGUSR2 after {ran:.0f} s)",
                wall_time=ran,
            )
        finally:
            signal.signal(signal.SIGUSR2, previous)
            writer.close()


# -- asking Slurm -------------------------------------------------------------------------------
def _query(args: list[str]) -> str | None:
    """A Slurm command's output, or None when it failed or is not there."""
    if shutil.which(args[0]) is None:
        return None
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=QUERY_SECONDS, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def queued(user: str) -> dict[str, str] | None:
    """The jobs of ``user`` that Slurm still holds (pending, running, completing, ...), by
    job id (``123`` or, for an array's task, ``123_4``) with their state; None when Slurm
    could not be asked (then nothing can be concluded about any job)."""
    out = _query(["squeue", "-h", "-r", "-u", user, "-o", "%i|%T"])
    if out is None:
        return None
    states: dict[str, str] = {}
    for line in out.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id:
            states[job_id] = state
    return states


def final_state(job_id: str) -> str | None:
    """How a job that left the queue ended (``COMPLETED``, ``CANCELLED``, ``TIMEOUT``, ...):
    from accounting (sacct) where the cluster keeps it, else from the controller's memory
    of recent jobs (scontrol); None when neither knows."""
    out = _query(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "State"])
    if out and out.strip():
        return out.split()[0].split("+")[0]
    out = _query(["scontrol", "-o", "show", "job", job_id])
    if out:
        for field in out.split():
            if field.startswith("JobState="):
                return field.partition("=")[2]
    return None


def cancel(job_ids: list[str]) -> None:
    """Cancel jobs (quietly: one that already ended is no error)."""
    if job_ids and shutil.which("scancel") is not None:
        for k in range(0, len(job_ids), 200):
            subprocess.run(
                ["scancel", *job_ids[k : k + 200]],
                capture_output=True,
                timeout=QUERY_SECONDS,
                check=False,
            )


def log_tail(path: Path, lines: int = 6) -> str:
    """The last lines of a job's log (where a job that failed before its trial says why)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    kept = [line for line in text.rstrip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:])
