"""Hand-written policies for the environment-task tests: no learning, known quality."""

from __future__ import annotations

from typing import Any

import numpy as np


def short_cartpole() -> Any:
    """CartPole evaluated on 10 episodes instead of 100: a task of the tests' own."""
    from fairtrial.tasks.env import EnvTask

    return EnvTask.make("short_cartpole", "CartPole-v1", episodes=10)


def cartpole(config: dict[str, Any], ctx: Any) -> None:
    """``mode = "balance"``: push toward the pole's lean (with a share ``eps`` of random
    actions, from the seed's stream); ``"random"``: a random action every step; ``"bad"``:
    an action outside the action space; ``"raise"``: the policy raises."""
    mode = config["mode"]
    rng = ctx.rng("init")
    env = ctx.make_env()  # a few training episodes, as a recipe would (their seeds: ctx's)
    first, _ = env.reset()
    ctx.log(step=0, first_obs=float(first[0]))
    env.close()
    eps = float(config.get("eps", 0.0))

    def policy(obs: np.ndarray) -> int:
        if mode == "bad":
            return 7
        if mode == "raise":
            raise ValueError("no policy here")
        if mode == "random" or rng.random() < eps:
            return int(rng.integers(2))
        angle, velocity = float(obs[2]), float(obs[3])
        return int(angle + 0.5 * velocity > 0)

    ctx.evaluate_policy(policy)
