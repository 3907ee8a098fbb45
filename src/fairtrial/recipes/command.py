"""Command recipes: a training program in any language, run as a subprocess.

The protocol (also in the README):

* placeholders in ``command`` (``{lr}``, ``{optimizer.lr}``, ``{seed}``, ``{data_dir}``, ...)
  are filled per trial; the command is split like a shell would (no shell runs it);
* ``{python}`` is the interpreter running fairtrial (``sys.executable``), and so is a bare
  ``python`` or ``python3``, first in the command or called by it (launchers of that name come
  first on its PATH): a command run from a virtual environment gets that environment's Python,
  not whatever ``python3`` the system has;
* environment: ``FAIRTRIAL_SEED`` (seed index), ``FAIRTRIAL_SEED_INIT`` / ``_DATA`` /
  ``_AUGMENT`` / ``_DROPOUT`` (derived stream seeds), ``FAIRTRIAL_CONFIG`` (the arm's config as
  JSON), ``FAIRTRIAL_DATA_DIR``, ``FAIRTRIAL_PREDICTIONS``, ``FAIRTRIAL_WORKDIR``,
  ``FAIRTRIAL_ARM``, ``FAIRTRIAL_TRIAL_ID``, ``FAIRTRIAL_TASK``;
* ``$FAIRTRIAL_DATA_DIR`` holds ``x_train``, ``y_train``, ``x_val``, ``y_val``, ``x_test`` as
  ``.npy`` and ``.csv`` (no test labels) and ``meta.json``;
* every stdout line that is a JSON object is a metric point (``{"step": 3, "val_accuracy":
  0.91}``); other lines are kept as the trial's output;
* a JSON line ``{"compute": {"flops": 1.2e12, "flops_method": "..."}}`` reports the trial's
  total FLOPs (the last such line counts; ``flops_method`` labels how they were obtained,
  default "reported by the command"); without it the FLOPs are "not counted". The command's
  CPU time and peak RSS are measured by fairtrial (``wait4``);
* test predictions go to ``$FAIRTRIAL_PREDICTIONS``, one per line (or one JSON array), in the
  order of ``x_test``; fairtrial scores them;
* on an environment task (``gym:ID``, ``cartpole``, ...) fairtrial evaluates the policy: the
  command trains on environments of its own (``$FAIRTRIAL_ENV_ID``, seeded with
  ``$FAIRTRIAL_SEED_ENV`` / ``{seed_env}``), then prints ``{"evaluate": "policy"}`` and answers
  each line ``{"observation": [...], "episode": i, "step": n}`` that fairtrial writes to its
  stdin with one line ``{"action": ...}`` on stdout, within :data:`ANSWER_SECONDS` (or
  ``$FAIRTRIAL_ANSWER_SECONDS`` where the run's environment sets it); a line
  ``{"done": true}`` (and the end of stdin) ends the evaluation; no predictions file;
* on an external task (``task = "external:NAME"``) there is no data folder and no predictions
  file: the command loads its own data, evaluates itself and prints one JSON line
  ``{"test": {"accuracy": 0.93}}`` (the spec's metric, and any others as extra test metrics),
  which is its ``ctx.report_test``;
* a non-zero exit status fails the trial, with the last lines of stderr as its reason.

The command runs in a process group of its own, which ends with the trial's process: a run
that stops (Ctrl-C, SIGTERM, a time limit, its own death) kills the whole group, so that no
program the command started computes on.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from fairtrial.context import TrialContext
from fairtrial.errors import RecipeError
from fairtrial.seeding import STREAMS
from fairtrial.spec import flatten
from fairtrial.tasks import Task
from fairtrial.trial import TrialJob

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


#: how long a command serving its policy may take to answer one observation
ANSWER_SECONDS = 60.0

#: the names a command may call Python by; each runs the interpreter running fairtrial
PYTHON_NAMES = ("python", "python3")


def _user_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fairtrial"


def _cache_root(job: TrialJob) -> Path:
    if job.data_cache:
        return Path(job.data_cache)
    return _user_cache() / "data"


def python_launchers(root: Path | None = None) -> Path | None:
    """A folder of ``python`` and ``python3`` launchers of this interpreter, made once.

    Launchers, not symlinks: a virtual environment's interpreter reached through a symlink
    outside the environment does not see its packages (it finds no pyvenv.cfg next to it).
    None where there is no POSIX shell or no known interpreter.
    """
    exe = sys.executable
    if os.name != "posix" or not exe:
        return None
    root = root or _user_cache() / "python"
    folder = root / hashlib.sha256(exe.encode()).hexdigest()[:16]
    if all((folder / name).is_file() for name in PYTHON_NAMES):
        return folder
    tmp = root / f".{folder.name}.{os.getpid()}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    for name in PYTHON_NAMES:
        launcher = tmp / name
        launcher.write_text(f'#!/bin/sh\nexec {shlex.quote(exe)} "$@"\n')
        launcher.chmod(0o755)
    try:
        tmp.rename(folder)
    except OSError:  # another worker won the race; its launchers are identical
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def prepare_data(job: TrialJob, task: Task) -> Path:
    """The folder of the task's visible splits for ``job``'s command, written if need be."""
    return materialize(task, _cache_root(job))


def materialize(task: Task, root: Path) -> Path:
    """Write the task's visible splits once per checksum; returns the folder."""
    folder = root / task.checksum[:24]
    if (folder / "meta.json").exists():
        return folder
    tmp = root / f".{task.checksum[:24]}.{os.getpid()}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    d = task.data()
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test"):
        arr = getattr(d, name)
        np.save(tmp / f"{name}.npy", arr)
        flat = arr.reshape(len(arr), -1) if arr.ndim > 1 and arr.size else arr.reshape(-1, 1)
        fmt = "%d" if np.issubdtype(arr.dtype, np.integer) else "%.9g"
        np.savetxt(tmp / f"{name}.csv", flat, delimiter=",", fmt=fmt)
    meta = {
        "task": task.name,
        "checksum": task.checksum,
        "metric": task.metric,
        "n_classes": task.n_classes,
        "sizes": task.sizes,
        "meta": dict(task.meta),
        "shapes": {n: list(getattr(d, n).shape) for n in ("x_train", "x_val", "x_test")},
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    try:
        tmp.rename(folder)
    except OSError:  # another worker won the race; its copy is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def build_argv(command: str, values: dict[str, Any]) -> list[str]:
    """Split ``command`` like a shell and fill ``{placeholders}`` in each word."""

    def fill(word: str) -> str:
        word = word.replace("{{", "\0").replace("}}", "\1")
        word = _PLACEHOLDER.sub(lambda m: _fmt(values[m.group(1)]), word)
        return word.replace("\0", "{").replace("\1", "}")

    return [fill(w) for w in shlex.split(command)]


#: the commands running in this process (their process groups), for kill_running
_running: set[subprocess.Popen[str]] = set()
_running_lock = threading.Lock()


def kill_running() -> None:
    """Kill every command this process is running, each with its process group (the
    programs it started). Called from any thread, e.g. when the run is gone."""
    with _running_lock:
        procs = list(_running)
    for proc in procs:
        _kill_group(proc)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    if os.name != "posix":
        proc.kill()
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _child_setup() -> None:
    # In the child, before the command starts. A process group of its own: the command and
    # what it starts are killed together (and a terminal's Ctrl-C goes to the run alone,
    # which stops its trials itself).
    os.setpgid(0, 0)
    # The signals a worker ignores (the run handles them) have their default action again.
    for sig in ("SIGINT", "SIGTERM", "SIGHUP"):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            signal.signal(getattr(signal, sig), signal.SIG_DFL)
    # Linux: the command dies with its worker, however the worker ends.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        pass


def run_command(job: TrialJob, ctx: TrialContext, task: Task) -> None:
    """Run the command of a command recipe for one trial, feeding ``ctx``."""
    assert job.command is not None
    external = ctx.recipe_evaluates  # no data folder, no predictions: the command evaluates
    data_dir = None if external else prepare_data(job, task)
    workdir = ctx.workdir or Path.cwd()
    predictions = workdir / "predictions.txt"
    predictions.unlink(missing_ok=True)
    seeds = {f"seed_{n}": ctx.seed_for(n) for n in STREAMS}
    environment = task.kind == "environment"
    # the seed of an environment task's first environment (what ctx.make_env would use)
    seeds["seed_env"] = ctx.seed_for("env/0")
    files = {} if external else {"data_dir": str(data_dir), "predictions": str(predictions)}
    values: dict[str, Any] = {
        **flatten(job.config),
        **seeds,
        "seed": job.seed,
        **files,
        "workdir": str(workdir),
        "arm": job.arm,
        "trial_id": job.trial_id,
        "task": task.name,
        "python": sys.executable,
    }
    env = dict(os.environ)
    launchers = python_launchers()
    if launchers is not None:
        env["PATH"] = os.pathsep.join(filter(None, [str(launchers), env.get("PATH")]))
    env.update(
        {
            "FAIRTRIAL_SEED": str(job.seed),
            **{f"FAIRTRIAL_{k.upper()}": str(v) for k, v in seeds.items()},
            "FAIRTRIAL_CONFIG": json.dumps(job.config),
            **{f"FAIRTRIAL_{k.upper()}": v for k, v in files.items()},
            "FAIRTRIAL_WORKDIR": str(workdir),
            "FAIRTRIAL_ARM": job.arm,
            "FAIRTRIAL_TRIAL_ID": job.trial_id,
            "FAIRTRIAL_TASK": task.name,
            # 1 in a tuning trial: judged on the logged objective, the test split not scored
            "FAIRTRIAL_TUNING": "1" if job.objective else "0",
            **({"FAIRTRIAL_ENV_ID": str(task.meta.get("env_id"))} if environment else {}),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if job.threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(job.threads)
    argv = build_argv(job.command, values)
    if argv and argv[0] in PYTHON_NAMES and sys.executable:
        argv[0] = sys.executable
    cwd = job.base_dir or str(Path.cwd())
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            # in a background process group, reading a tty stops it; an environment task's
            # command reads observations from fairtrial
            stdin=subprocess.PIPE if environment else subprocess.DEVNULL,
            preexec_fn=_child_setup if os.name == "posix" else None,
        )
    except OSError as exc:
        raise RecipeError(f"cannot start command {argv[0]!r}: {exc.strerror}") from None
    with _running_lock:
        _running.add(proc)
    try:
        code, stderr_tail = _follow(proc, ctx)
    except BaseException:  # Ctrl-C, a stop signal (InlineBackend): the command stops too
        _kill_group(proc)
        proc.wait()
        raise
    finally:
        with _running_lock:
            _running.discard(proc)
    if code != 0:
        tail = "".join(stderr_tail).strip().splitlines()[-1:] or ["(no stderr)"]
        raise RecipeError(f"command exited with status {code}: {tail[0][:500]}")
    if ctx.tuning:  # a tuning trial is judged on its logged objective; test is never scored
        return
    if environment:
        if ctx.test_score is None:
            raise RecipeError(
                'the command never asked for evaluation: print {"evaluate": "policy"}, then '
                'answer each {"observation": ...} line on stdin with {"action": ...}'
            )
        return
    if external:
        if ctx.test_score is None:
            raise RecipeError(
                f"command printed no test line: on task '{task.name}' it evaluates itself and "
                f'prints one JSON line {{"test": {{"{ctx.metric}": value}}}} on stdout'
            )
        return
    if not predictions.exists():
        raise RecipeError(
            "command wrote no predictions: write one per line to $FAIRTRIAL_PREDICTIONS"
        )
    ctx.evaluate_test(read_predictions(predictions))


def _follow(proc: subprocess.Popen[str], ctx: TrialContext) -> tuple[int, list[str]]:
    """Feed the command's metric lines to ``ctx`` until it exits; its status and the last
    lines of its stderr."""
    stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
    reader = threading.Thread(target=lambda: stderr_tail.extend(proc.stderr or ()), daemon=True)
    reader.start()
    assert proc.stdout is not None
    lines = _Lines(proc.stdout)
    for line in lines:
        text = line.strip()
        if text.startswith("{"):
            try:
                point = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(point, dict) and "evaluate" in point and ctx.task_kind == "environment":
                _serve_evaluation(proc, ctx, lines)
                continue
            if isinstance(point, dict):
                # on other tasks a "test" key is what it always was: a metric point, if a number
                if "test" in point and ctx.recipe_evaluates:
                    _report_test(ctx, point.pop("test"))
                reported = point.pop("compute", None)
                if isinstance(reported, dict) and ctx.meter is not None:
                    flops = reported.get("flops")
                    if isinstance(flops, (int, float)) and not isinstance(flops, bool):
                        method = reported.get("flops_method")
                        ctx.meter.report_flops(flops, method if isinstance(method, str) else None)
                step = point.pop("step", None)
                numbers = {k: v for k, v in point.items() if isinstance(v, (int, float))}
                if numbers:
                    ctx.log(step=step if isinstance(step, int) else None, **numbers)
    code = _wait(proc, ctx)
    reader.join(timeout=5)
    return code, list(stderr_tail)


class _Lines:
    """The command's stdout lines, read by a thread of their own so that a wait for one line
    (an action during evaluation) can time out."""

    def __init__(self, stream: Any) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            for line in stream:
                self._queue.put(line)
            self._queue.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def __iter__(self) -> Any:
        return iter(self._queue.get, None)

    def next(self, timeout: float) -> str | None:
        """The next line, None at the end of the output; TimeoutError after ``timeout`` s."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None


def _serve_evaluation(proc: subprocess.Popen[str], ctx: TrialContext, lines: _Lines) -> None:
    """Evaluate the policy the command serves: observations to its stdin, actions from its
    stdout (other lines on the way are metric points or output, as always)."""
    assert proc.stdin is not None
    stdin = proc.stdin
    where = {"episode": 0, "step": 0}
    try:
        wait = float(os.environ.get("FAIRTRIAL_ANSWER_SECONDS") or ANSWER_SECONDS)
    except ValueError:
        wait = ANSWER_SECONDS

    def policy(observation: Any) -> Any:
        ask = {"observation": _plain(observation), **where}
        where["step"] += 1
        try:
            stdin.write(json.dumps(ask) + "\n")
            stdin.flush()
        except (BrokenPipeError, OSError):
            raise RecipeError("the command closed its stdin during evaluation") from None
        while True:
            try:
                line = lines.next(wait)
            except TimeoutError:
                raise RecipeError(
                    f"the command gave no action within {wait:g} s (step "
                    f"{ask['step']} of evaluation episode {ask['episode']}): answer each "
                    'observation with one line {"action": ...}'
                ) from None
            if line is None:
                raise RecipeError(
                    f"the command ended during evaluation (step {ask['step']} of episode "
                    f"{ask['episode']}) without answering"
                )
            text = line.strip()
            if text.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    answer = json.loads(text)
                    if isinstance(answer, dict) and "action" in answer:
                        return answer["action"]

    def episode_start(i: int) -> None:
        where["episode"], where["step"] = i, 0

    ctx.evaluate_policy(policy, on_episode=episode_start)
    with contextlib.suppress(BrokenPipeError, OSError):
        stdin.write(json.dumps({"done": True}) + "\n")
        stdin.close()


def _plain(value: Any) -> Any:
    """An observation as JSON: numpy arrays and numbers as lists and Python numbers."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _report_test(ctx: TrialContext, test: Any) -> None:
    """A command's ``{"test": {...}}`` line: its own test score, on an external task."""
    source = "the command's test line"
    if not isinstance(test, dict):
        raise RecipeError(
            f"{source} holds {json.dumps(test)[:80]}; it must be an object: "
            f'{{"test": {{"{ctx.metric}": value}}}}'
        )
    ctx.record_reported_test(test, source)


def _wait(proc: subprocess.Popen[str], ctx: TrialContext) -> int:
    """Wait for the command; hand its own CPU time and peak RSS to the meter (wait4(2))."""
    if not hasattr(os, "wait4"):
        return proc.wait()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:  # already reaped
        return proc.wait()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if ctx.meter is not None:
        peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        ctx.meter.add_child(usage.ru_utime + usage.ru_stime, peak)
    return proc.returncode


def read_predictions(path: Path) -> np.ndarray[Any, Any]:
    text = path.read_text().strip()
    if text.startswith("["):
        return np.asarray(json.loads(text))
    values: list[Any] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            number = float(line)
            values.append(int(number) if number.is_integer() else number)
        except ValueError:
            values.append(line)
    return np.asarray(values)
