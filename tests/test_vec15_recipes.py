"""Batched forms of the cnn1d and transformer recipes: N seeds as one model give N lone runs.

Each seed's weights equal its lone run's (within 1e-5; the stacked layers make them bit for
bit equal on the CPU), its test predictions are identical, it logs the same points, and it
does not depend on the seeds trained beside it.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fairtrial.backends.vectorized import SeedContext  # noqa: E402
from fairtrial.context import TrialContext  # noqa: E402
from fairtrial.recipes import (  # noqa: E402
    NotVectorizable,
    build_config,
    cnn1d,
    transformer,
    vectorized_form,
)
from fairtrial.recipes.torchkit import init_model, predictor  # noqa: E402
from fairtrial.tasks import get_task  # noqa: E402

pytestmark = pytest.mark.torch

#: small configs of a few hundred Adam/AdamW steps each, with the options that change the loop
CASES: list[tuple[ModuleType, str, dict[str, Any]]] = [
    (
        cnn1d,
        "mnist1d",
        # 2 epochs of 93 steps
        {
            "epochs": 2,
            "batch_size": 32,
            "channels": 4,
            "select": "best_val",
            "label_smoothing": 0.1,
        },
    ),
    (
        cnn1d,
        "mnist1d",
        # avg pooling and gelu take the other code paths
        {
            "epochs": 1,
            "batch_size": 16,
            "channels": 4,
            "depth": 2,
            "pooling": "avg",
            "activation": "gelu",
            "optimizer": "adamw",
            "weight_decay": 0.1,
        },
    ),
    (
        transformer,
        "modular_addition",
        # two blocks: the first attends causally over all positions, the last reads "=" only
        {
            "steps": 200,
            "batch_size": 64,
            "d_model": 16,
            "n_heads": 2,
            "n_layers": 2,
            "d_mlp": 32,
            "eval_every": 60,
        },
    ),
]


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Events:
    """What a context emits: its metric rows (step, name, value) and its test predictions."""

    def __init__(self) -> None:
        self.metrics: list[tuple[int | None, str, float]] = []
        self.predictions: list[Any] | None = None

    def __call__(self, kind: str, payload: Any) -> None:
        if kind == "metrics":
            self.metrics += [(step, name, value) for step, _, name, value in payload]
        elif kind == "test":
            self.predictions = payload["predictions"]

    def points(self) -> list[tuple[int | None, str]]:
        return [(step, name) for step, name, _ in self.metrics]

    def values(self) -> np.ndarray:
        return np.array([v for _, name, v in self.metrics if name != "lr"])


def _ctx(task: Any, seed: int, cls: type = TrialContext) -> tuple[Any, Events]:
    events = Events()
    return cls(config={}, seed=seed, root_seed=0, task=task, emit=events), events


@pytest.mark.parametrize(("recipe", "task_name", "options"), CASES)
def test_batched_seeds_train_as_their_lone_runs(
    recipe: ModuleType, task_name: str, options: dict[str, Any]
) -> None:
    task = get_task(task_name)
    d = task.data()
    cfg = build_config(recipe.Config, options)
    to_tensor, (x_tr, y_tr, x_va, y_va) = recipe._inputs(cfg, d)
    make = recipe._factory(cfg, d)
    seeds = [0, 1, 2]
    lone, lone_events = [], []
    for s in seeds:
        ctx, events = _ctx(task, s)
        model = init_model(ctx, make)
        recipe.fit(cfg, ctx, model, (x_tr, y_tr), (x_va, y_va))
        ctx.flush()
        lone.append(model)
        lone_events.append(events)
    made = [_ctx(task, s, SeedContext) for s in seeds]
    ctxs = [c for c, _ in made]
    together = recipe.fit_many(
        [cfg] * len(ctxs), ctxs, [init_model(c, make) for c in ctxs], (x_tr, y_tr), (x_va, y_va)
    )
    assert all(c.error is None for c in ctxs)
    for a, b, ev_a, (_, ev_b) in zip(lone, together, lone_events, made, strict=True):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert max((sa[k] - sb[k]).abs().max().item() for k in sa) < 1e-5
        pa = predictor(a, to_tensor)(d.x_test)
        pb = predictor(b, to_tensor)(d.x_test)
        assert np.array_equal(pa, pb)
        # the same points: same steps, same metrics, in the same order
        assert ev_b.points() == ev_a.points()
        np.testing.assert_allclose(ev_b.values(), ev_a.values(), rtol=1e-4, atol=1e-5)
    # the seeds really differ, so the agreement above is not trivially true
    w0, w1 = (next(iter(m.state_dict().values())) for m in lone[:2])
    assert (w0 - w1).abs().max().item() > 1e-2


def test_the_transformer_logs_every_eval_every_steps_and_after_the_last() -> None:
    task = get_task("modular_addition")
    cfg = {"steps": 25, "d_model": 8, "n_heads": 2, "d_mlp": 8, "eval_every": 10}
    ctx, events = _ctx(task, 4, SeedContext)
    transformer.train_many([cfg], [ctx])
    steps = sorted({step for step, _ in events.points()})
    assert steps == [0, 10, 20, 25]
    assert {name for _, name in events.points()} == {
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "lr",
    }


@pytest.mark.parametrize(
    ("recipe", "task_name", "options"),
    [
        (cnn1d, "mnist1d", {"epochs": 1, "channels": 4, "depth": 1}),
        (
            transformer,
            "modular_addition",
            {"steps": 40, "batch_size": 64, "d_model": 8, "d_mlp": 8},
        ),
    ],
)
def test_a_seed_does_not_depend_on_the_seeds_beside_it(
    recipe: ModuleType, task_name: str, options: dict[str, Any]
) -> None:
    task = get_task(task_name)

    def run(seeds: list[int], configs: list[dict[str, Any]] | None = None) -> dict[int, Events]:
        made = [_ctx(task, s, SeedContext) for s in seeds]
        form = vectorized_form(recipe.train)
        assert form is recipe.train_many
        form(configs or [options] * len(seeds), [c for c, _ in made])
        assert all(c.error is None and c.test_score is not None for c, _ in made)
        return {s: ev for s, (_, ev) in zip(seeds, made, strict=True)}

    faster = {**options, "lr": 0.003}  # another arm, in the same batched model
    alone, beside = run([3])[3], run([0, 3, 5], [faster, options, faster])[3]
    other = run([3, 1])[3]
    lone_ctx, lone = _ctx(task, 3)
    recipe.train(options, lone_ctx)
    assert alone.predictions is not None
    for events in (beside, other, lone):
        assert events.predictions == alone.predictions
        assert events.points() == alone.points()
    # beside other seeds, the seed computes bit for bit what it computes alone
    assert beside.metrics == alone.metrics and other.metrics == alone.metrics
    np.testing.assert_allclose(lone.values(), alone.values(), rtol=1e-4, atol=1e-5)


class Untouchable:
    """A context that fails the test on any use: NotVectorizable must come first."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the context was used ({name}) before NotVectorizable")


def test_transformer_dropout_is_not_batched_and_says_why() -> None:
    with pytest.raises(NotVectorizable, match="dropout > 0"):
        transformer.train_many([{"dropout": 0.1}] * 2, [Untouchable(), Untouchable()])
