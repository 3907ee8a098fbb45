"""Environment tasks: a Gymnasium environment with an evaluation protocol fairtrial owns.

``task = "gym:CartPole-v1"`` (any registered Gymnasium id with a discrete or box action space)
or a built-in name (``cartpole``, ``acrobot``, ``mountaincar``, ``pendulum``: environments that
ship with gymnasium, nothing to download). The recipe trains on environments made by
``ctx.make_env()``, seeded from the trial's ``env`` stream (the same for every arm of a seed),
and ends with ``ctx.evaluate_policy(policy)``. fairtrial then runs the task's evaluation
episodes on evaluation seeds derived from the task alone (the same for every arm and trial,
never handed to the recipe), records each episode's return and length in the sealed test log,
and the trial's result is the mean return.

The task's checksum covers the environment id, its registered settings (entry point, episode
limit, keyword arguments), the gymnasium version and the evaluation protocol: two trials with
the same checksum were evaluated alike.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from fairtrial.errors import MissingDependency, RecipeError, TaskError
from fairtrial.seeding import derive_seed
from fairtrial.tasks.base import Task, TaskData
from fairtrial.tasks.catalog import register_task

#: ``task = "gym:ID"``
GYM_PREFIX = "gym:"
#: evaluation episodes of every environment task
EVAL_EPISODES = 100
#: the built-in environment tasks: name -> (Gymnasium id, what the return means)
BUILTIN_ENVS: dict[str, tuple[str, str]] = {
    "cartpole": ("CartPole-v1", "steps the pole stays up, at most 500"),
    "acrobot": ("Acrobot-v1", "-1 per step until the tip swings up, at most 500 steps"),
    "mountaincar": ("MountainCar-v0", "-1 per step until the car reaches the flag (200 steps)"),
    "pendulum": ("Pendulum-v1", "minus the swing and torque cost over 200 steps"),
}


def _gym() -> Any:
    try:
        import gymnasium
    except ImportError:
        raise MissingDependency("gymnasium", "rl", "an environment task") from None
    return gymnasium


@dataclass(frozen=True, eq=False)
class EnvTask(Task):
    """An environment and its evaluation protocol (``kind = "environment"``, metric
    ``return``): no arrays, the test "split" is :data:`EVAL_EPISODES` episodes."""

    env_id: str = ""
    episodes: int = EVAL_EPISODES
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def make(
        cls, name: str, env_id: str, description: str = "", *, episodes: int = EVAL_EPISODES
    ) -> EnvTask:
        """The task of Gymnasium environment ``env_id``, evaluated on ``episodes`` episodes
        (a task factory of your own, ``module:function``, may choose another count)."""
        if not (isinstance(episodes, int) and episodes >= 1):
            raise TaskError(f"task '{name}': episodes must be a whole number >= 1")
        gym = _gym()
        try:
            spec = gym.spec(env_id)
        except Exception as exc:  # gymnasium's own errors name the close matches
            raise TaskError(f"unknown Gymnasium environment '{env_id}': {exc}") from None
        env = gym.make(env_id)
        try:
            space = env.action_space
            kind = type(space).__name__
            if kind not in ("Discrete", "Box"):
                raise TaskError(
                    f"environment '{env_id}' has a {kind} action space; fairtrial evaluates "
                    "Discrete and Box action spaces"
                )
            meta = {
                "env_id": env_id,
                "observation_space": str(env.observation_space),
                "action_space": str(space),
                "max_episode_steps": spec.max_episode_steps,
                "reward_threshold": spec.reward_threshold,
                "gymnasium": gym.__version__,
            }
        finally:
            env.close()
        empty = np.zeros((0, 1))
        none = np.zeros(0, dtype=np.int64)
        return cls(
            name,
            empty,
            np.zeros(0),
            none,
            none.copy(),
            none.copy(),
            "return",
            "environment",
            description or f"Gymnasium {env_id}",
            f"Gymnasium {gym.__version__} ({spec.entry_point})",
            meta,
            "MIT (Gymnasium)",
            env_id=env_id,
            episodes=episodes,
            env_kwargs=dict(spec.kwargs or {}),
        )

    @cached_property
    def eval_seeds(self) -> tuple[int, ...]:
        """The seeds of the evaluation episodes: from the environment id alone, so every arm
        and trial is evaluated on the same episodes; the recipe never sees them."""
        return tuple(
            derive_seed(0, f"evaluation/{self.env_id}", i) % 2**31 for i in range(self.episodes)
        )

    @cached_property
    def checksum(self) -> str:
        """sha256 of the environment's registration, the gymnasium version and the protocol."""
        blob = json.dumps(
            {
                "env_id": self.env_id,
                "meta": dict(self.meta),
                "kwargs": self.env_kwargs,
                "episodes": self.episodes,
                "eval_seeds": list(self.eval_seeds),
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": 0, "val": 0, "test": self.episodes}

    @cached_property
    def n_classes(self) -> int | None:
        return None

    def data(self) -> TaskData:
        empty = np.zeros((0, 1))
        empty.setflags(write=False)
        return TaskData(empty, empty[:, 0], empty, empty[:, 0], empty, None, dict(self.meta))

    def score(self, predictions: Any, metric: str | None = None) -> float:
        """The mean return of the evaluation episodes, from ``[[return, length], ...]``."""
        rows = np.asarray(predictions, dtype=float).reshape(-1, 2)
        if len(rows) != self.episodes:
            raise TaskError(
                f"task '{self.name}': expected {self.episodes} evaluation episodes, got {len(rows)}"
            )
        return float(rows[:, 0].mean())

    # -- environments ---------------------------------------------------------------------
    def make_env(self, seed: int, **kwargs: Any) -> Any:
        """A fresh environment whose first episode (and action space sampling) is seeded with
        ``seed``; a later ``reset()`` without a seed continues that generator."""
        env = _gym().make(self.env_id, **kwargs)
        env.reset(seed=seed)
        env.action_space.seed(seed)
        env.observation_space.seed(seed)
        return env

    def evaluate(
        self,
        policy: Callable[[Any], Any],
        on_episode: Callable[[int], None] | None = None,
    ) -> list[list[float]]:
        """Run the evaluation episodes with ``policy(observation) -> action``: per episode
        ``[return, length]``. A policy that raises or returns an invalid action raises
        :class:`~fairtrial.errors.RecipeError` naming the episode and step."""
        env = _gym().make(self.env_id)
        check = _action_check(env.action_space)
        out: list[list[float]] = []
        try:
            for i, s in enumerate(self.eval_seeds):
                if on_episode is not None:
                    on_episode(i)
                obs, _ = env.reset(seed=s)
                total, n, done = 0.0, 0, False
                while not done:
                    try:
                        raw = policy(obs)
                    except RecipeError:
                        raise
                    except Exception as exc:
                        raise RecipeError(
                            f"the policy raised {exc!r} at step {n} of evaluation episode {i}"
                        ) from None
                    action = check(raw, i, n)
                    obs, reward, terminated, truncated, _ = env.step(action)
                    total += float(reward)
                    n += 1
                    done = terminated or truncated
                if not math.isfinite(total):
                    raise RecipeError(f"evaluation episode {i} returned {total}")
                out.append([total, float(n)])
        finally:
            env.close()
        return out


def _action_check(space: Any) -> Callable[[Any, int, int], Any]:
    """A function that turns what a policy returned into a valid action of ``space`` (numpy,
    torch and Python numbers alike), or raises RecipeError naming it."""
    name = type(space).__name__
    if name == "Discrete":
        start, n = int(space.start), int(space.n)

        def discrete(raw: Any, episode: int, step: int) -> int:
            if type(raw) is not int:  # numpy and torch scalars, 0-d and 1-element arrays
                try:
                    value = np.asarray(_plain(raw)).reshape(-1)
                    if value.size != 1 or not isinstance(value[0].item(), numbers.Integral):
                        raise ValueError
                    raw = int(value[0])
                except (TypeError, ValueError):
                    raise RecipeError(
                        f"the policy returned {_show(raw)} at step {step} of evaluation "
                        f"episode {episode}; the action space is {space}: return one whole "
                        f"number from {start} to {start + n - 1}"
                    ) from None
            if not start <= raw < start + n:
                raise RecipeError(
                    f"the policy returned action {raw} at step {step} of evaluation episode "
                    f"{episode}, outside the action space {space} ({start}..{start + n - 1})"
                )
            return int(raw)

        return discrete

    shape, low, high, dtype = space.shape, space.low, space.high, space.dtype

    def box(raw: Any, episode: int, step: int) -> Any:
        try:
            action = np.asarray(_plain(raw), dtype=dtype).reshape(shape)
        except (TypeError, ValueError):
            raise RecipeError(
                f"the policy returned {_show(raw)} at step {step} of evaluation episode "
                f"{episode}; the action space is {space}: return an array of shape {shape}"
            ) from None
        if not (np.all(np.isfinite(action)) and np.all(action >= low) and np.all(action <= high)):
            raise RecipeError(
                f"the policy returned action {_show(action)} at step {step} of evaluation "
                f"episode {episode}, outside the action space {space}"
            )
        return action

    return box


def _plain(raw: Any) -> Any:
    """A torch tensor as numpy (without importing torch); anything else as it is."""
    detach = getattr(raw, "detach", None)
    return detach().cpu().numpy() if callable(detach) else raw


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def gym_task(ref: str) -> EnvTask:
    """The task of ``gym:ID``."""
    env_id = ref[len(GYM_PREFIX) :]
    if not env_id:
        raise TaskError(f"'{ref}': name a Gymnasium environment, e.g. gym:CartPole-v1")
    return EnvTask.make(ref, env_id)


def _register(name: str, env_id: str, meaning: str) -> None:
    @register_task(name)
    def factory() -> Task:
        return EnvTask.make(name, env_id, f"Gymnasium {env_id}: the return is {meaning}")


for _name, (_env, _meaning) in BUILTIN_ENVS.items():
    _register(_name, _env, _meaning)
