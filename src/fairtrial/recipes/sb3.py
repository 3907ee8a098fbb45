"""Stable-Baselines3's PPO and DQN as fairtrial recipes: thin wrappers, SB3's own defaults.

* ``sb3_ppo`` - proximal policy optimization (Schulman et al. 2017, arXiv:1707.06347), for
  discrete and continuous (box) action spaces;
* ``sb3_dqn`` - deep Q-networks (Mnih et al. 2015, Nature 518), for discrete action spaces.

Option names and defaults are Stable-Baselines3's (Raffin et al. 2021, JMLR 22), so its
documentation describes them. Each recipe trains on ``ctx.make_env()`` (wrapped in SB3's
``Monitor``, whose finished episodes are logged as ``train_return`` at ``step`` = timesteps so
far), on the CPU, then hands ``model.predict(obs, deterministic=True)`` to
``ctx.evaluate_policy``: fairtrial runs the evaluation episodes.

Seeds: SB3 draws its initial weights, its sampled actions, its exploration and its replay
batches from the global generators (Python's, numpy's and torch's); they are seeded from the
trial's "init" stream. The model is not given ``seed=``: SB3 would then reseed the
environment too, and its episodes must stay those of the trial's "env" stream (the same for
every arm of a seed). On the CPU the same seed gives the same result.

Stable-Baselines3 is imported inside each recipe: it is the ``rl`` extra. No batched form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from fairtrial.errors import RecipeError, require
from fairtrial.recipes import recipe

if TYPE_CHECKING:
    from fairtrial.context import TrialContext

#: the most timesteps an option may ask for: far beyond what these recipes are for, low enough
#: that a typo fails the spec instead of every trial
MAX_STEPS = 1_000_000_000
#: SB3's policies: a vector, an image, or a dict observation
Policy = Literal["MlpPolicy", "CnnPolicy", "MultiInputPolicy"]
POLICY_HELP = "SB3's policy: MlpPolicy (vectors), CnnPolicy (images), MultiInputPolicy (dicts)"


@dataclass(frozen=True)
class PPOConfig:
    """Options of the PPO recipe (names and defaults as in stable_baselines3.PPO)."""

    total_timesteps: int = field(
        default=100_000,
        metadata={
            "help": "environment steps of training (rounded up to whole rollouts of n_steps)",
            "ge": 1,
            "le": MAX_STEPS,
        },
    )
    learning_rate: float = field(default=3e-4, metadata={"help": "Adam learning rate", "gt": 0})
    n_steps: int = field(
        default=2048,
        metadata={"help": "steps per rollout, between updates", "ge": 2, "le": MAX_STEPS},
    )
    batch_size: int = field(
        default=64, metadata={"help": "minibatch size of the updates", "ge": 2, "le": MAX_STEPS}
    )
    n_epochs: int = field(
        default=10, metadata={"help": "passes over each rollout", "ge": 1, "le": 10_000}
    )
    gamma: float = field(default=0.99, metadata={"help": "discount factor", "ge": 0, "le": 1})
    gae_lambda: float = field(
        default=0.95,
        metadata={
            "help": "GAE's lambda (bias against variance of the advantage)",
            "ge": 0,
            "le": 1,
        },
    )
    clip_range: float = field(
        default=0.2, metadata={"help": "clipping of the probability ratio", "gt": 0}
    )
    ent_coef: float = field(default=0.0, metadata={"help": "weight of the entropy bonus", "ge": 0})
    policy: Policy = field(default="MlpPolicy", metadata={"help": POLICY_HELP})


@dataclass(frozen=True)
class DQNConfig:
    """Options of the DQN recipe (names and defaults as in stable_baselines3.DQN)."""

    total_timesteps: int = field(
        default=100_000,
        metadata={
            "help": "environment steps of training (rounded up to a multiple of train_freq)",
            "ge": 1,
            "le": MAX_STEPS,
        },
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "Adam learning rate", "gt": 0})
    buffer_size: int = field(
        default=1_000_000,
        metadata={"help": "transitions the replay buffer holds", "ge": 1, "le": MAX_STEPS},
    )
    learning_starts: int = field(
        default=100,
        metadata={"help": "steps of experience before the first update", "ge": 0, "le": MAX_STEPS},
    )
    batch_size: int = field(
        default=32, metadata={"help": "transitions per update", "ge": 1, "le": MAX_STEPS}
    )
    gamma: float = field(default=0.99, metadata={"help": "discount factor", "ge": 0, "le": 1})
    train_freq: int = field(
        default=4,
        metadata={"help": "environment steps between updates", "ge": 1, "le": MAX_STEPS},
    )
    gradient_steps: int = field(
        default=1, metadata={"help": "gradient steps per update", "ge": 1, "le": MAX_STEPS}
    )
    target_update_interval: int = field(
        default=10_000,
        metadata={
            "help": "environment steps between copies to the target network",
            "ge": 1,
            "le": MAX_STEPS,
        },
    )
    exploration_fraction: float = field(
        default=0.1,
        metadata={
            "help": "share of training over which epsilon falls from 1 to its final value",
            "ge": 0,
            "le": 1,
        },
    )
    exploration_final_eps: float = field(
        default=0.05,
        metadata={"help": "final probability of a random action", "ge": 0, "le": 1},
    )
    policy: Policy = field(default="MlpPolicy", metadata={"help": POLICY_HELP})


def _setup(ctx: TrialContext, name: str) -> Any:
    """The trial's environment, in SB3's Monitor (it reports each episode's return), with
    the global generators seeded from the "init" stream."""
    require("stable_baselines3", "rl", f"the '{name}' recipe")
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.utils import set_random_seed

    if ctx.meter is not None:
        ctx.meter.flops_not_counted("Stable-Baselines3 trains in its own loop")
    env = Monitor(ctx.make_env())
    set_random_seed(ctx.seed_for("init") % 2**31)
    return env


def _learn_and_evaluate(model: Any, ctx: TrialContext, total_timesteps: int) -> None:
    """Train ``model``, logging each finished episode's return, then evaluate it greedily."""
    from stable_baselines3.common.callbacks import BaseCallback

    class LogReturns(BaseCallback):  # type: ignore[misc]
        """Hands every episode the Monitor saw end to ``ctx.log``."""

        def _on_step(self) -> bool:
            for info in self.locals.get("infos", ()):
                episode = info.get("episode")
                if episode is not None:
                    ctx.log(step=self.num_timesteps, train_return=float(episode["r"]))
            return True

    # SB3's default logger writes nothing here but makes a folder of its own in the system's
    # temporary folder for every model: the returns reach the ledger through LogReturns.
    from stable_baselines3.common.logger import Logger

    model.set_logger(Logger(folder=None, output_formats=[]))
    try:
        with ctx.phase("train"):
            model.learn(total_timesteps=total_timesteps, callback=LogReturns())
    finally:
        model.get_env().close()

    def policy(obs: Any) -> Any:
        return model.predict(obs, deterministic=True)[0]

    ctx.evaluate_policy(policy)


@recipe(PPOConfig)
def ppo(cfg: PPOConfig, ctx: TrialContext) -> None:
    """Stable-Baselines3's PPO (discrete or continuous actions)."""
    env = _setup(ctx, "sb3_ppo")
    from stable_baselines3 import PPO

    model = PPO(
        cfg.policy,
        env,
        learning_rate=cfg.learning_rate,
        n_steps=cfg.n_steps,
        batch_size=cfg.batch_size,
        n_epochs=cfg.n_epochs,
        gamma=cfg.gamma,
        gae_lambda=cfg.gae_lambda,
        clip_range=cfg.clip_range,
        ent_coef=cfg.ent_coef,
        device="cpu",
    )
    _learn_and_evaluate(model, ctx, cfg.total_timesteps)


@recipe(DQNConfig)
def dqn(cfg: DQNConfig, ctx: TrialContext) -> None:
    """Stable-Baselines3's DQN (discrete actions)."""
    env = _setup(ctx, "sb3_dqn")
    from gymnasium import spaces
    from stable_baselines3 import DQN

    if not isinstance(env.action_space, spaces.Discrete):
        env.close()
        raise RecipeError(
            f"the sb3_dqn recipe needs a discrete action space; task '{ctx.task_name}' has "
            f"{env.action_space} (use sb3_ppo for continuous actions)"
        )
    model = DQN(
        cfg.policy,
        env,
        learning_rate=cfg.learning_rate,
        buffer_size=cfg.buffer_size,
        learning_starts=cfg.learning_starts,
        batch_size=cfg.batch_size,
        gamma=cfg.gamma,
        train_freq=cfg.train_freq,
        gradient_steps=cfg.gradient_steps,
        target_update_interval=cfg.target_update_interval,
        exploration_fraction=cfg.exploration_fraction,
        exploration_final_eps=cfg.exploration_final_eps,
        device="cpu",
    )
    _learn_and_evaluate(model, ctx, cfg.total_timesteps)
