"""Environment tasks: what fairtrial's evaluation loop costs per environment step, and a
CartPole comparison end to end.

The suite's ``rl`` section (``python bench/suite.py --only rl``):

- one CartPole-v1 step with a trivial policy (always push right: the policy costs nothing, so
  what is measured is the loop): ``env.step`` called directly in a plain loop against
  fairtrial's evaluation loop (``EnvTask.evaluate``: the policy call, the action's check
  against the action space, the return and length), per environment step, over the same
  episodes;
- the same with the hand-written balancing policy of the tests (episodes of 500 steps);
- ``fairtrial run`` of a CartPole comparison end to end in a subprocess: a balancing policy
  against a random one, 2 arms x 5 seeds x 100 evaluation episodes, the default backend.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from suite import Row

ROOT = Path(__file__).resolve().parent.parent

RECIPE = (ROOT / "tests" / "recipes" / "rl19.py").read_text()
SPEC = """
[experiment]
name = "cartpole-bench"
task = "cartpole"
recipe = "rl19:cartpole"
seeds = 5

[baseline]
mode = "random"

[arms.balance]
mode = "balance"
"""


def _direct(env_id: str, seeds: tuple[int, ...], policy: Any) -> tuple[float, int]:
    """(seconds, steps) of a plain loop calling ``env.step`` on the same episodes."""
    import gymnasium

    env = gymnasium.make(env_id)
    steps = 0
    t0 = time.perf_counter()
    for s in seeds:
        obs, _ = env.reset(seed=s)
        done = False
        while not done:
            obs, _, terminated, truncated, _ = env.step(policy(obs))
            steps += 1
            done = terminated or truncated
    seconds = time.perf_counter() - t0
    env.close()
    return seconds, steps


def _loop(task: Any, policy: Any) -> tuple[float, int]:
    t0 = time.perf_counter()
    episodes = task.evaluate(policy)
    return time.perf_counter() - t0, int(sum(n for _, n in episodes))


def bench_rl(quick: bool, tmp: Path) -> list[Row]:
    from fairtrial.tasks.env import EnvTask

    episodes = 20 if quick else 100
    task = EnvTask.make("cartpole", "CartPole-v1", episodes=episodes)
    rows: list[Row] = []

    def right(obs: Any) -> int:
        return 1

    def balance(obs: Any) -> int:
        return int(obs[2] + 0.5 * obs[3] > 0)

    for name, policy in (("push right", right), ("balancing policy", balance)):
        # interleaved, best of 3: the two loops share the machine's state alike
        directs, loops = [], []
        for _ in range(3):
            direct, n_direct = _direct("CartPole-v1", task.eval_seeds, policy)
            loop, n_loop = _loop(task, policy)
            assert n_direct == n_loop, "the same episodes, step for step"
            directs.append(direct / n_direct * 1e6)
            loops.append(loop / n_loop * 1e6)
        note = f"{n_loop} steps in {episodes} episodes, best of 3"
        base = min(directs)
        rows.append(Row("rl", f"{name}: env.step in a plain loop, per step", base, "µs", 1.0,
                        note))  # fmt: skip
        rows.append(Row("rl", f"{name}: fairtrial's evaluation loop, per step", min(loops),
                        "µs", min(loops) / base, "against the plain loop just above"))  # fmt: skip
    folder = tmp / "cartpole"
    folder.mkdir()
    (folder / "rl19.py").write_text(RECIPE)
    (folder / "spec.toml").write_text(SPEC)
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "fairtrial.cli", "run", "spec.toml", "--no-report",
         "--store", str(folder / "ledger.db")],
        cwd=folder, check=True, capture_output=True,
    )  # fmt: skip
    rows.append(Row("rl", "CartPole, 2 arms x 5 seeds x 100 episodes, end to end",
                    time.perf_counter() - t0, "s", None,
                    "fairtrial run, default backend, fresh store, a subprocess"))  # fmt: skip
    return rows
