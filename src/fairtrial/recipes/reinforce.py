"""REINFORCE with a learned value baseline, in plain torch, for discrete action spaces.

The policy gradient of Williams (1992, "Simple statistical gradient-following algorithms for
connectionist reinforcement learning") with a state-value baseline (Sutton & Barto 2018,
section 13.4): a policy network gives the action probabilities, a value network estimates the
return from each state, and each update moves the log-probability of every action taken by
its advantage, the return that followed minus the value the network expected. An entropy
bonus (Williams & Peng 1991) is an option.

Copy this file to start your own environment recipe. It is the whole recipe, top to bottom:

1. ``Config``: the options a spec may set, each with its default, range and help;
2. the model, ``ActorCritic``: a policy MLP and a value MLP;
3. ``collect``: episodes of the current policy, with actions drawn from the seed's own
   generator, and ``returns_to_go``;
4. ``update``: one gradient step of REINFORCE with the baseline, and ``fit``, the loop of
   collecting and updating with its log points;
5. ``train(config, ctx)``, what fairtrial calls once per trial, ending with
   ``ctx.evaluate_policy``: fairtrial runs the evaluation episodes of the greedy policy.

Every random choice comes from the trial's seed: the initial weights from its "init" stream,
the sampled actions from its "actions" stream and the environment's episodes from
``ctx.make_env()`` (its "env" streams). On the CPU the same seed gives the same result bit for
bit. No batched form (``--backend vectorized`` runs its trials one by one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from fairtrial.errors import RecipeError
from fairtrial.recipes import recipe
from fairtrial.recipes.torchkit import check_device, init_model

if TYPE_CHECKING:
    from fairtrial.context import TrialContext

# -------------------------------------------------------------------------------------------
# Options. A spec sets them in [baseline] and [arms.NAME]; every field's metadata holds its
# help and its range (ge/gt/le/lt).


@dataclass(frozen=True)
class Config:
    """Options of the REINFORCE recipe: the budget, the update, then the model."""

    # The budget is environment steps, not updates: an arm that ends episodes sooner (or
    # later) gets as many steps of experience as the baseline, no more.
    total_steps: int = field(
        default=100_000,
        metadata={"help": "environment steps of training", "ge": 1, "le": 1_000_000_000},
    )
    lr: float = field(default=3e-3, metadata={"help": "Adam learning rate", "gt": 0})
    gamma: float = field(
        default=0.99, metadata={"help": "discount factor of the returns", "ge": 0, "le": 1}
    )
    # More episodes per update: a less noisy gradient, fewer updates for the same budget.
    batch_episodes: int = field(
        default=8,
        metadata={
            "help": "episodes per update (the last update may have fewer)",
            "ge": 1,
            "le": 1_000_000,
        },
    )
    # Off by default: a regularizer is a change an arm makes, not part of the baseline. The
    # advantages are not normalized (the textbook estimator), so the bonus weighs against
    # advantages in the units of the task's returns: CartPole's are tens of steps.
    entropy_coef: float = field(
        default=0.0,
        metadata={
            "help": "weight of the entropy bonus (keeps the policy exploring), against "
            "advantages in the units of the returns",
            "ge": 0,
        },
    )
    hidden: int = field(
        default=64,
        metadata={"help": "width of the 2 hidden layers of each network", "ge": 1, "le": 65_536},
    )
    # CPU by default: only there are reruns bit-identical, and one observation at a time is
    # faster there than on a GPU.
    device: str = field(
        default="cpu",
        metadata={
            "help": "torch device; 'cuda' runs on a GPU (bit-identical reruns only on cpu)",
            "check": check_device,
        },
    )


# -------------------------------------------------------------------------------------------
# The model: two separate networks, so that the value loss never pulls on the policy's weights.


def mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    """Two tanh hidden layers: the usual small network of policy-gradient methods."""
    return nn.Sequential(
        nn.Linear(n_in, hidden),
        nn.Tanh(),
        nn.Linear(hidden, hidden),
        nn.Tanh(),
        nn.Linear(hidden, n_out),
    )


class ActorCritic(nn.Module):
    """``policy(x)``: one logit per action; ``value(x)``: the expected return from x."""

    def __init__(self, n_obs: int, n_actions: int, hidden: int) -> None:
        super().__init__()
        self.policy = mlp(n_obs, hidden, n_actions)
        self.value = mlp(n_obs, hidden, 1)


# -------------------------------------------------------------------------------------------
# Experience: episodes of the current policy.

#: an observation as the networks' input: a flat float32 vector
Flatten = Callable[[Any], NDArray[np.float32]]


@dataclass
class Batch:
    """The steps of one update's episodes, in order, and the returns of its finished ones."""

    obs: list[NDArray[np.float32]] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    #: per episode, the index of its first step in the lists above
    starts: list[int] = field(default_factory=list)
    #: per episode, the value of the state it was cut at (0 when it ended: no more reward)
    tails: list[float] = field(default_factory=list)
    #: the undiscounted return of each episode that ended (not cut by the budget)
    returns: list[float] = field(default_factory=list)


def collect(
    cfg: Config,
    env: Any,
    model: ActorCritic,
    generator: torch.Generator,
    budget: int,
    flatten: Flatten,
    ctx: TrialContext,
) -> Batch:
    """Up to ``cfg.batch_episodes`` episodes of ``model``'s policy, at most ``budget`` steps.

    Actions are drawn from ``generator`` (the seed's "actions" stream) alone. An episode cut
    by the environment's time limit or by the budget keeps the value of the state it stopped
    in as the rest of its return (its tail); one that terminated has none.
    """
    batch = Batch()
    first = int(env.action_space.start)  # Discrete(n, start): actions start..start+n-1
    for _ in range(cfg.batch_episodes):
        if len(batch.obs) >= budget:
            break
        obs, _ = env.reset()  # the n-th episode of the env's seeded sequence
        batch.starts.append(len(batch.obs))
        total, done = 0.0, False
        while not done:
            x = flatten(obs)
            # One observation each step: the same work every time, so counting one is exact.
            with torch.no_grad(), ctx.count_flops("act"):
                logits = model.policy(torch.as_tensor(x, device=cfg.device))
            probs = torch.softmax(logits, dim=-1)
            action = int(torch.multinomial(probs, 1, generator=generator).item())
            obs, reward, terminated, truncated, _ = env.step(first + action)
            batch.obs.append(x)
            batch.actions.append(action)
            batch.rewards.append(float(reward))
            total += float(reward)
            cut = len(batch.obs) >= budget
            done = terminated or truncated or cut
        if terminated:
            batch.tails.append(0.0)
        else:
            # Truncated (time limit or budget): the episode would have gone on; its value
            # estimate stands in for the rewards that were not seen.
            with torch.no_grad(), ctx.count_flops("tail"):
                last = torch.as_tensor(flatten(obs), device=cfg.device)
                batch.tails.append(float(model.value(last).item()))
        if terminated or truncated:
            batch.returns.append(total)
    return batch


def returns_to_go(batch: Batch, gamma: float) -> NDArray[np.float32]:
    """The discounted return from every step to its episode's end (plus its tail)."""
    out = np.zeros(len(batch.rewards), dtype=np.float32)
    ends = [*batch.starts[1:], len(batch.rewards)]
    for start, end, tail in zip(batch.starts, ends, batch.tails, strict=True):
        g = tail
        for t in range(end - 1, start - 1, -1):
            g = batch.rewards[t] + gamma * g
            out[t] = g
    return out


# -------------------------------------------------------------------------------------------
# The update and the training loop.

#: rows per chunk of the update. The steps of an update are processed in chunks of this many
#: (the last one padded with rows of weight 0), gradients adding up: one gradient step over
#: all of them, with the same shapes every time, so ``ctx.count_flops`` counts one chunk and
#: multiplies exactly, and memory stays bounded however long the episodes get.
CHUNK = 256


def update(
    cfg: Config,
    ctx: TrialContext,
    model: ActorCritic,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
) -> None:
    """One gradient step on the mean over the batch's steps of

    ``-log pi(a|s) * (G - V(s)) + (G - V(s))^2 / 2 - entropy_coef * H(pi(.|s))``

    where ``G`` is the return-to-go and the advantage ``G - V(s)`` is a constant for the
    policy term (the baseline lowers the gradient's variance without biasing it).
    """
    n = len(batch.obs)
    obs = np.zeros((-(-n // CHUNK) * CHUNK, len(batch.obs[0])), dtype=np.float32)
    obs[:n] = np.stack(batch.obs)
    actions = np.zeros(len(obs), dtype=np.int64)
    actions[:n] = batch.actions
    returns = np.zeros(len(obs), dtype=np.float32)
    returns[:n] = returns_to_go(batch, cfg.gamma)
    weights = np.zeros(len(obs), dtype=np.float32)
    weights[:n] = 1.0 / n
    optimizer.zero_grad(set_to_none=True)
    for start in range(0, len(obs), CHUNK):
        rows = slice(start, start + CHUNK)
        x, a, g, w = (
            torch.as_tensor(v[rows], device=cfg.device) for v in (obs, actions, returns, weights)
        )
        with ctx.count_flops("update"):
            logp = F.log_softmax(model.policy(x), dim=-1)
            value = model.value(x).squeeze(-1)
            advantage = (g - value).detach()
            entropy = -(logp.exp() * logp).sum(dim=-1)
            chosen = logp.gather(1, a.unsqueeze(1)).squeeze(1)
            loss = -chosen * advantage + 0.5 * (g - value) ** 2 - cfg.entropy_coef * entropy
            (loss * w).sum().backward()  # type: ignore[no-untyped-call]
    optimizer.step()


def fit(cfg: Config, ctx: TrialContext, env: Any, model: ActorCritic, flatten: Flatten) -> None:
    """Collect and update until ``cfg.total_steps`` environment steps, logging ``train_return``
    (the mean return of each update's finished episodes) at ``step`` = steps so far."""
    # One Adam over both networks: their parameters are apart, so the value loss's scale
    # never sets the policy's step.
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    generator = ctx.torch_generator("actions", device=cfg.device)
    steps = 0
    with ctx.phase("train"):
        while steps < cfg.total_steps:
            batch = collect(cfg, env, model, generator, cfg.total_steps - steps, flatten, ctx)
            steps += len(batch.obs)
            update(cfg, ctx, model, optimizer, batch)
            if batch.returns:
                ctx.log(step=steps, train_return=float(np.mean(batch.returns)))


# -------------------------------------------------------------------------------------------
# The recipe: what fairtrial calls once per trial.


@recipe(Config)
def train(cfg: Config, ctx: TrialContext) -> None:
    """REINFORCE with a learned value baseline (discrete actions), in plain torch."""
    env = ctx.make_env()  # its episodes are the seed's, the same for every arm
    from gymnasium import spaces

    if not isinstance(env.action_space, spaces.Discrete):
        env.close()
        raise RecipeError(
            f"the reinforce recipe needs a discrete action space; task '{ctx.task_name}' has "
            f"{env.action_space} (use sb3_ppo for continuous actions)"
        )
    n_actions, start = int(env.action_space.n), int(env.action_space.start)
    observation_space = env.observation_space

    def flatten(obs: Any) -> NDArray[np.float32]:
        return np.asarray(spaces.flatten(observation_space, obs), dtype=np.float32)

    n_obs = spaces.flatdim(observation_space)
    # Weights from the seed's "init" stream alone: every arm starts seed i from the same ones.
    model = cast(
        ActorCritic,
        init_model(ctx, lambda: ActorCritic(n_obs, n_actions, cfg.hidden), cfg.device),
    )
    try:
        fit(cfg, ctx, env, model, flatten)
    finally:
        env.close()

    # The greedy policy: the most probable action. fairtrial runs the evaluation episodes.
    @torch.no_grad()
    def policy(obs: Any) -> int:
        logits = model.policy(torch.as_tensor(flatten(obs), device=cfg.device))
        return start + int(logits.argmax().item())

    ctx.evaluate_policy(policy)
