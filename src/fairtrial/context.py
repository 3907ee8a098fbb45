"""The trial context handed to every recipe: config, seeds, data, logging, phases, sealed test.

``ctx.log`` sits on the hot path of every training loop, so it does the least it can: it
appends one tuple to a list. Conversion, the NaN/inf check and the hand-off to the ledger
happen in :meth:`TrialContext.flush`, in batches (every ``flush_points`` points or
``flush_seconds`` seconds, at phase ends and when the trial ends).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fairtrial.errors import RecipeError, TrialDiverged
from fairtrial.meter.trial import NO_FLOPS, FlopBlock, Meter
from fairtrial.seeding import derive_seed, numpy_generator
from fairtrial.tasks.base import Task, TaskData

#: emit(kind, payload): how a context hands results to its backend ("metrics", "test").
Emit = Callable[[str, Any], None]

MetricRow = tuple[int | None, float, str, float]


class TrialContext:
    """Everything a recipe may rely on during one trial (one arm, one seed).

    Attributes:
        config: the arm's configuration (nested keys are nested mappings).
        seed: the seed index ``i``; every arm runs seed ``i`` with the same streams.
        arm: the arm's name.
        trial_id: the trial's id in the ledger.
        attempt: 1 for the first run of this trial, 2 after it was interrupted or retried
            (a recipe can resume from a checkpoint it left in ``workdir``).
        workdir: a folder of this trial's own, for checkpoints and files.
        meter: the trial's :class:`~fairtrial.meter.Meter` (None when metering is off).
    """

    def __init__(
        self,
        *,
        config: Mapping[str, Any],
        seed: int,
        root_seed: int,
        task: Task,
        emit: Emit,
        arm: str = "baseline",
        trial_id: str = "",
        attempt: int = 1,
        workdir: Path | None = None,
        metric: str | None = None,
        flush_points: int = 1000,
        flush_seconds: float = 1.0,
        meter: Meter | None = None,
        objective: str | None = None,
        objective_direction: str = "max",
    ) -> None:
        self.config = config
        self.seed = seed
        self.root_seed = root_seed
        self.arm = arm
        self.trial_id = trial_id
        self.attempt = attempt
        self.workdir = workdir
        self._task = task
        self.metric = metric or task.metric
        self._emit = emit
        self._rngs: dict[str, np.random.Generator] = {}
        self._buf: list[tuple[int | None, float, dict[str, Any]]] = []
        self._flush_points = flush_points
        self._flush_seconds = flush_seconds
        self._t0 = time.perf_counter()
        self._last_flush = self._t0
        self.phases: dict[str, float] = {}
        #: (phase, start, end) in seconds since the trial started, in order
        self.phase_log: list[tuple[str, float, float]] = []
        self.meter = meter
        self.test_score: float | None = None
        self.n_points = 0
        #: a tuning trial: its result is the best value of this logged metric, and the test
        #: split is never scored (``evaluate_test`` does nothing)
        self.objective = objective
        self._objective_sign = -1.0 if objective_direction == "min" else 1.0
        self.best_objective: float | None = None
        self._logged: set[str] = set()
        self._envs_made = 0

    # -- data and seeds ---------------------------------------------------------------------
    @property
    def data(self) -> TaskData:
        """The task's splits without the test labels."""
        return self._task.data()

    @property
    def task_name(self) -> str:
        return self._task.name

    @property
    def task_kind(self) -> str:
        """classification, regression, environment (ctx.evaluate_policy) or external
        (ctx.report_test)."""
        return str(self._task.kind)

    def seed_for(self, name: str) -> int:
        """The integer seed of stream ``name`` for this seed index (same for every arm)."""
        return derive_seed(self.root_seed, name, self.seed)

    def rng(self, name: str = "default") -> np.random.Generator:
        """The numpy Generator of stream ``name``; the same object on every call in a trial."""
        gen = self._rngs.get(name)
        if gen is None:
            gen = self._rngs[name] = numpy_generator(self.root_seed, name, self.seed)
        return gen

    def torch_generator(self, name: str = "default", device: str = "cpu") -> Any:
        """A fresh ``torch.Generator`` seeded for stream ``name`` (e.g. "init", "data")."""
        import torch

        gen = torch.Generator(device=device)
        gen.manual_seed(self.seed_for(name))
        return gen

    # -- metrics ----------------------------------------------------------------------------
    def log(self, step: int | None = None, **metrics: Any) -> None:
        """Record metric values at ``step`` (buffered: well under a microsecond a point)."""
        now = time.perf_counter()
        self._buf.append((step, now - self._t0, metrics))
        if len(self._buf) >= self._flush_points or now - self._last_flush >= self._flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Hand buffered points to the ledger; raise TrialDiverged on a NaN or infinite value."""
        buf, self._buf = self._buf, []
        self._last_flush = time.perf_counter()
        if not buf:
            return
        rows: list[MetricRow] = []
        bad: MetricRow | None = None
        for raw_step, t, metrics in buf:
            step = None if raw_step is None else int(raw_step)  # numpy ints too
            for name, value in metrics.items():
                try:
                    v = float(value)
                except (TypeError, ValueError):
                    raise RecipeError(
                        f"ctx.log: metric '{name}' must be a number, got {type(value).__name__}"
                    ) from None
                rows.append((step, t, name, v))
                if bad is None and not math.isfinite(v):
                    bad = rows[-1]
        self.n_points += len(rows)
        if self.objective is not None:
            self._watch_objective(rows)
        meter = self.meter
        if meter is not None and meter.watching:  # time-to-target: first point at the target
            meter.observe(rows)
        self._emit("metrics", rows)
        if bad is not None:
            step, _, name, v = bad
            raise TrialDiverged(f"metric '{name}' became {v} at step {step}")

    @property
    def tuning(self) -> bool:
        """True in a tuning trial: chosen on the validation objective, never scored on test."""
        return self.objective is not None

    def _watch_objective(self, rows: list[MetricRow]) -> None:
        name, k = self.objective, self._objective_sign
        for _, _, metric, v in rows:
            self._logged.add(metric)
            if metric == name and math.isfinite(v):
                best = self.best_objective
                if best is None or k * v > k * best:
                    self.best_objective = v

    def final(self) -> tuple[float | None, str | None]:
        """The trial's result, or why it has none: the test score, or in a tuning trial the
        best logged value of the objective."""
        if self.objective is not None:
            if self.best_objective is not None:
                return self.best_objective, None
            logged = ", ".join(sorted(self._logged)) or "nothing"
            return None, (
                f"the tuning objective '{self.objective}' was never logged (the recipe logged: "
                f"{logged}); set [tuning] objective to a validation metric it logs"
            )
        if self.test_score is None:
            if self._task.kind == "environment":
                return None, (
                    "the recipe never called ctx.evaluate_policy(policy): a trial's result is "
                    "its policy's mean return on the task's evaluation episodes"
                )
            if self.recipe_evaluates:
                return None, (
                    f"the recipe never called ctx.report_test({self.metric}=...): on task "
                    f"'{self._task.name}' a trial's result is the test score it reports"
                )
            return None, (
                "the recipe never called ctx.evaluate_test(predict): a trial's result is its "
                "score on the sealed test split"
            )
        return self.test_score, None

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase ("setup", "train", "eval"); repeated phases add up."""
        t = time.perf_counter()
        try:
            yield
        finally:
            end = time.perf_counter()
            self.phases[name] = self.phases.get(name, 0.0) + end - t
            self.phase_log.append((name, t - self._t0, end - self._t0))
            self.flush()

    def count_flops(self, key: str = "train_step") -> FlopBlock | Any:
        """A block whose FLOPs are counted once and multiplied by how often it runs.

        Wrap the same work every time, e.g. each training step (forward, backward, optimizer
        step) or each evaluation pass over one split; use one key per kind of work::

            for xb, yb in batches:
                with ctx.count_flops("train_step"):
                    loss = loss_fn(model(xb), yb)
                    loss.backward()
                    optimizer.step()

        The first run is counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmul,
        convolution and attention FLOPs); later runs only add one to the block's count. The
        trial's FLOPs are the sum over keys of FLOPs per run x runs, labelled "matmul/conv
        FLOPs, counted on one step". With metering off this does nothing.
        """
        meter = self.meter
        return NO_FLOPS if meter is None else meter.count_flops(key)

    # -- the sealed test split ----------------------------------------------------------------
    def evaluate_test(self, predict: Callable[[NDArray[Any]], Any] | Any) -> float:
        """Score the sealed test split once: ``predict(x_test)`` (or an array of predictions).

        fairtrial computes the task's metric; the score is the trial's result. A trial scores
        the test split exactly once: choose models on the validation split. In a tuning trial
        (:attr:`tuning`) nothing is scored and ``predict`` is not called: the result is the
        best value of the validation objective; this returns NaN.
        """
        if self._task.kind == "environment":
            raise RecipeError(
                f"task '{self._task.name}' is an environment: end the recipe with "
                "ctx.evaluate_policy(policy), where policy(observation) returns an action"
            )
        if self.objective is not None:
            return math.nan
        if self.recipe_evaluates:
            raise RecipeError(
                f"ctx.evaluate_test: task '{self._task.name}' is evaluated by the recipe "
                "(fairtrial holds no test data to score): report the score with "
                f"ctx.report_test({self.metric}=...)"
            )
        if self.test_score is not None:
            raise RecipeError(
                "ctx.evaluate_test was called twice; the test split is scored once per trial "
                "(select models on the validation split)"
            )
        x_test = self.data.x_test
        raw = predict(x_test) if callable(predict) else predict
        predictions = _to_numpy(raw)
        score = self._task.score(predictions, self.metric)
        self.test_score = score
        listed = predictions.tolist()
        digest = hashlib.sha256(json.dumps(listed).encode()).hexdigest()
        self.flush()
        self._emit(
            "test",
            {
                "task": self._task.name,
                "task_checksum": self._task.checksum,
                "metric": self.metric,
                "score": score,
                "n": len(listed),
                "predictions": listed,
                "predictions_sha256": digest,
            },
        )
        if not math.isfinite(score):
            raise TrialDiverged(f"test {self.metric} is {score}")
        return score

    # -- a recipe that evaluates itself (task = "external:NAME") ---------------------------------
    @property
    def recipe_evaluates(self) -> bool:
        """True on an external task: the recipe evaluates itself and calls :meth:`report_test`."""
        return self._task.kind == "external"

    def report_test(self, /, **metrics: Any) -> float:
        """Report the test score the recipe computed itself, once per trial (external tasks).

        ``ctx.report_test(accuracy=0.93)``: the keyword named by the spec's ``metric`` is the
        trial's result; any others are kept as extra test metrics. The values are recorded in
        the sealed test log as this trial's test evaluation, marked as made by the recipe (not
        sealed: fairtrial never sees the test data). In a tuning trial nothing is recorded (the
        result is the best value of the validation objective); this returns NaN.
        """
        return self.record_reported_test(metrics)

    def record_reported_test(
        self, metrics: Mapping[str, Any], source: str = "ctx.report_test"
    ) -> float:
        """:meth:`report_test` of ``metrics``; errors name ``source`` (a command's test line)."""
        name = self._task.name
        if not self.recipe_evaluates:
            raise RecipeError(
                f"{source}: task '{name}' is scored by fairtrial on its sealed test split "
                "(ctx.evaluate_test, or a command's predictions file); reporting a test score "
                'is for task = "external:NAME"'
            )
        if self.objective is not None:
            return math.nan
        if self.test_score is not None:
            raise RecipeError(
                f"{source}: a second test report; a trial reports its test score once "
                "(select models on the validation split)"
            )
        if self.metric not in metrics:
            got = ", ".join(sorted(map(str, metrics))) or "nothing"
            how = (
                f"ctx.report_test({self.metric}=value)"
                if source == "ctx.report_test"
                else f'{{"test": {{"{self.metric}": value}}}}'
            )
            raise RecipeError(
                f"{source}: the spec's metric '{self.metric}' is missing (got: {got}); report "
                f"it: {how}"
            )
        values: dict[str, float] = {}
        for key in sorted(metrics):
            value = metrics[key]
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise RecipeError(
                    f"{source}: metric '{key}' must be a number, got {type(value).__name__}"
                ) from None
            if isinstance(value, bool) or not math.isfinite(v):
                raise RecipeError(
                    f"{source}: metric '{key}' is {value!r}; a reported test score is a finite "
                    "number"
                )
            values[str(key)] = v
        score = values[self.metric]
        self.test_score = score
        # what the recipe reported stands where fairtrial's own evaluations keep predictions,
        # keys in sorted order, so that its hash is the same wherever the JSON is read again
        reported = {"evaluation": "recipe", "metrics": values}
        digest = hashlib.sha256(json.dumps(reported).encode()).hexdigest()
        self.flush()
        self._emit(
            "test",
            {
                "task": name,
                "task_checksum": self._task.checksum,
                "metric": self.metric,
                "score": score,
                "n": 0,
                "predictions": reported,
                "predictions_sha256": digest,
                "evaluation": "recipe",
            },
        )
        return score

    # -- environments -----------------------------------------------------------------------
    def _env_task(self, what: str) -> Any:
        if self._task.kind != "environment":
            raise RecipeError(
                f'{what} needs an environment task (task = "gym:ID" or cartpole, acrobot, '
                f"mountaincar, pendulum); task '{self._task.name}' is {self._task.kind}"
            )
        return self._task

    def make_env(self, **kwargs: Any) -> Any:
        """A Gymnasium environment of the trial's task, its first episode seeded from the
        trial's ``env`` stream: the same for every arm of this seed (the n-th call of a trial
        gets the n-th seed of the stream, e.g. for several parallel environments)."""
        task = self._env_task("ctx.make_env")
        n, self._envs_made = self._envs_made, self._envs_made + 1
        return task.make_env(self.seed_for(f"env/{n}"), **kwargs)

    def evaluate_policy(
        self, policy: Callable[[Any], Any], *, on_episode: Callable[[int], None] | None = None
    ) -> float:
        """Evaluate ``policy(observation) -> action`` once, on the task's evaluation episodes
        (seeds derived from the task alone: the same for every arm and trial, never handed to
        the recipe); each episode's return and length go to the sealed test log and the mean
        return is the trial's result. In a tuning trial nothing is evaluated (NaN).
        ``on_episode(i)`` is called as evaluation episode ``i`` starts."""
        task = self._env_task("ctx.evaluate_policy")
        if self.objective is not None:
            return math.nan
        if self.test_score is not None:
            raise RecipeError(
                "ctx.evaluate_policy was called twice; a trial's policy is evaluated once "
                "(select policies on episodes of your own, from ctx.make_env)"
            )
        self.flush()
        with self.phase("eval"):
            episodes = task.evaluate(policy, on_episode)
        score = float(task.score(episodes))
        self.test_score = score
        digest = hashlib.sha256(json.dumps(episodes).encode()).hexdigest()
        self._emit(
            "test",
            {
                "task": task.name,
                "task_checksum": task.checksum,
                "metric": self.metric,
                "score": score,
                "n": len(episodes),
                "predictions": episodes,
                "predictions_sha256": digest,
            },
        )
        return score


#: a recipe, ``train(config, ctx)``: what it returns is ignored (a trial's result is its
#: ``ctx.evaluate_test`` score); the config is a mapping, or the recipe's config class
Recipe = Callable[[Any, TrialContext], object]
#: a recipe's batched form, ``train_vectorized(config, ctxs)``: one context per seed
BatchedRecipe = Callable[[Any, Sequence[TrialContext]], object]


def _to_numpy(raw: Any) -> NDArray[Any]:
    """Predictions as a numpy array, from numpy, lists, or a torch tensor (without importing it)."""
    torch: Any = sys.modules.get("torch")
    if torch is not None and isinstance(raw, torch.Tensor):
        raw = raw.detach().cpu().numpy()
    return np.asarray(raw)
