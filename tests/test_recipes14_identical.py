"""The built-in torch recipes give the same trials as they always did, bit for bit.

Each case trains a small config for two seeds, as a worker would (seeded globals, one thread,
metering on), and hashes everything a trial leaves: the logged metric points, the test
predictions and score, the FLOP blocks, the phase sequence, and the global torch generator's
state afterwards (which says that the same random numbers were drawn, in the same order). The
hashes below were recorded in another process before the recipes were last rewritten: results
are deterministic across processes on the CPU with a fixed thread count. Every run of a spec
with these recipes depends on this: a changed hash means changed results for everyone.

To re-record after a change that is *meant* to change results:
``python tests/test_recipes14_identical.py`` prints the table.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")  # digits

from fairtrial.context import TrialContext  # noqa: E402
from fairtrial.meter import Meter  # noqa: E402
from fairtrial.recipes import cnn1d, mlp, transformer  # noqa: E402
from fairtrial.seeding import seed_globals  # noqa: E402
from fairtrial.tasks import get_task  # noqa: E402

pytestmark = pytest.mark.torch

RECIPES: dict[str, Any] = {"mlp": mlp, "cnn1d": cnn1d, "transformer": transformer}

# (case, recipe, task, config): between them every branch of the loops and the models
CASES: list[tuple[str, str, str, dict[str, Any]]] = [
    (
        "mlp-adam",
        "mlp",
        "digits",
        {
            "epochs": 2,
            "hidden": 32,
            "dropout": 0.2,
            "norm": "batch",
            "warmup_steps": 5,
            "schedule": "cosine",
            "label_smoothing": 0.1,
            "select": "best_val",
        },
    ),
    (
        "mlp-sgd",
        "mlp",
        "digits",
        {
            "optimizer": "sgd",
            "lr": 0.05,
            "weight_decay": 1e-3,
            "batch_size": 0,
            "epochs": 3,
            "norm": "layer",
            "activation": "gelu",
            "standardize": False,
        },
    ),
    (
        "mlp-adamw",
        "mlp",
        "digits",
        {"optimizer": "adamw", "weight_decay": 0.1, "depth": 0, "epochs": 2, "batch_size": 100},
    ),
    ("cnn1d", "cnn1d", "mnist1d", {"epochs": 1, "channels": 8, "depth": 2}),
    (
        "cnn1d-avg",
        "cnn1d",
        "mnist1d",
        {
            "epochs": 2,
            "channels": 4,
            "depth": 1,
            "pooling": "avg",
            "activation": "tanh",
            "optimizer": "adamw",
            "select": "best_val",
            "label_smoothing": 0.1,
            "warmup_steps": 3,
            "schedule": "constant",
            "batch_size": 256,
        },
    ),
    (
        "transformer",
        "transformer",
        "modular_addition",
        {"steps": 24, "eval_every": 10, "dropout": 0.1},
    ),
    (
        "transformer-full-batch",
        "transformer",
        "modular_addition",
        {
            "steps": 5,
            "eval_every": 3,
            "batch_size": 0,
            "schedule": "constant",
            "warmup_steps": 0,
            "n_layers": 2,
            "d_model": 16,
            "n_heads": 2,
            "d_mlp": 32,
        },
    ),
]
SEEDS = (0, 1)
# seeds of the mlp's batched form (the vectorized backend): no dropout, no batch norm
VECTORIZED = ("mlp-sgd", "mlp-adamw")

# sha256 of each trial's fingerprint, recorded before the recipes were rewritten
EXPECTED: dict[str, str] = {
    "mlp-adam/0": "b3a2b93ee87f9a3b2faa69e87b870d6dd9ab0d91c0df8195e46082f21e6df6a1",
    "mlp-adam/1": "06d432e9e46735667508d871dc970206d9e7e8574312c1b840cc659c87517016",
    "mlp-sgd/0": "2f5c6f85211faffeed345b95ee4a46c6b00d3c76ddb6ee154ccf09045a02fb28",
    "mlp-sgd/1": "e3fd354798a407a36cfa1c67ffdcc97ba431f457955ed3cea2ef4aa3cecf24b3",
    "mlp-sgd/batched/0": "2913d1d3463d95097274ad7d26fc916d694bac7299cd90bd95333a39f67e6a4c",
    "mlp-sgd/batched/1": "0253b327b3c1faa9af5c8ebd4bbe78986ff707a8a1505dbcb6c8169f6a35af4d",
    "mlp-adamw/0": "5f2c11285b5008a41dfcaea84ee5fb69f2174e828196272bc4388a062a4d2182",
    "mlp-adamw/1": "11697c82dbdd7b749d148e74d61addde26b845e01349f88d697b6bda67848e95",
    "mlp-adamw/batched/0": "4c8bc048d7c131e425c0edeb21bfccb9afc60a0bd4b8d9808d7232acab9ad602",
    "mlp-adamw/batched/1": "cc5de6afa6913dd4574dc153cff43e42d3c7d457e18e7eeb56a8b75b0ab02c87",
    "cnn1d/0": "e7639fe3fb6d5580a41b97bd028f40205a6743bab62cd3e6f10f9c3eb31751d6",
    "cnn1d/1": "99bf64e2745cdc8be7cc7b4bf7448fe2c19f3e9745849c55343ce79cdcc8f62e",
    "cnn1d-avg/0": "3d43561329f8d3620177fedf2d738c63d00990f09ee6c3b07afd6d3d01e6e79c",
    "cnn1d-avg/1": "a58021d4f25d2957bbebdb5aba385d86e5835e7eebb805eae7f3200739b922fc",
    "transformer/0": "898d3968fd7a41b8f7d1f1bfc79acdaecc8bf4cca45e0945f9580b8410f4f241",
    "transformer/1": "1f33cf9c91dd0462bab6d9587cb200f83fbf8b768622d2409a3ba175d6b2fb99",
    "transformer-full-batch/0": "93b5f9f75436d845da78b056e5f307128fbeac65b61eafce14db373fe994bcef",
    "transformer-full-batch/1": "723705b070691794b67304608853d7a3287512ad720a80c64b66217d80ddc048",
}


def _digest(events: list[Any], ctx: TrialContext, meter: Meter) -> str:
    rows = [(step, m, v) for kind, p in events if kind == "metrics" for step, _, m, v in p]
    (test,) = [p for kind, p in events if kind == "test"]
    fingerprint = {
        "rows": rows,
        "predictions": test["predictions"],
        "score": ctx.test_score,
        "flops": {k: [b.per_run, b.runs] for k, b in sorted(meter.blocks.items())},
        "phases": [name for name, _, _ in ctx.phase_log],
        "torch_rng": hashlib.sha256(torch.random.get_rng_state().numpy().tobytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(fingerprint).encode()).hexdigest()


def _context(task: Any, config: dict[str, Any], seed: int, cls: type = TrialContext) -> Any:
    events: list[Any] = []
    ctx = cls(
        config=config,
        seed=seed,
        root_seed=0,
        task=task,
        emit=lambda kind, payload: events.append((kind, payload)),
        meter=Meter(),
    )
    return ctx, events


def trial(recipe: str, task_name: str, config: dict[str, Any], seed: int) -> str:
    """One trial as a worker runs it; the sha256 of what it left."""
    task = get_task(task_name)
    seed_globals(0, seed)
    ctx, events = _context(task, config, seed)
    RECIPES[recipe].train(config, ctx)
    return _digest(events, ctx, ctx.meter)


def batched(task_name: str, config: dict[str, Any]) -> list[str]:
    """Every seed at once through the mlp's batched form: what each seed left.

    Only predictions and score are hashed: the batched loop sums in another order, so its
    logged losses agree with a lone run's to rounding only (tests/test_vectorized.py).
    """
    from fairtrial.backends.vectorized import SeedContext

    task = get_task(task_name)
    seed_globals(0, SEEDS[0])
    made = [_context(task, config, s, SeedContext) for s in SEEDS]
    mlp.train_many([config] * len(made), [ctx for ctx, _ in made])
    out = []
    for ctx, events in made:
        assert ctx.error is None
        (test,) = [p for kind, p in events if kind == "test"]
        blob = json.dumps({"predictions": test["predictions"], "score": ctx.test_score})
        out.append(hashlib.sha256(blob.encode()).hexdigest())
    return out


def record() -> dict[str, str]:
    out = {}
    for case, recipe, task, config in CASES:
        for seed in SEEDS:
            out[f"{case}/{seed}"] = trial(recipe, task, config, seed)
        if case in VECTORIZED:
            for seed, digest in zip(SEEDS, batched(task, config), strict=True):
                out[f"{case}/batched/{seed}"] = digest
    return out


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("case", "recipe", "task", "config"), CASES, ids=[c[0] for c in CASES])
def test_trials_are_bit_identical_to_the_recorded_ones(
    case: str, recipe: str, task: str, config: dict[str, Any]
) -> None:
    for seed in SEEDS:
        assert trial(recipe, task, config, seed) == EXPECTED[f"{case}/{seed}"], (case, seed)


@pytest.mark.parametrize("case", VECTORIZED)
def test_batched_seeds_predict_as_recorded_and_as_lone_runs(case: str) -> None:
    _, _, task, config = next(c for c in CASES if c[0] == case)
    got = batched(task, config)
    assert got == [EXPECTED[f"{case}/batched/{seed}"] for seed in SEEDS], case
    assert got == [_predicted(task, config, seed) for seed in SEEDS], case


def _predicted(task_name: str, config: dict[str, Any], seed: int) -> str:
    """A lone run's predictions and score, hashed as :func:`batched` hashes them."""
    seed_globals(0, seed)
    ctx, events = _context(get_task(task_name), config, seed)
    mlp.train(config, ctx)
    (test,) = [p for kind, p in events if kind == "test"]
    blob = json.dumps({"predictions": test["predictions"], "score": ctx.test_score})
    return hashlib.sha256(blob.encode()).hexdigest()


if __name__ == "__main__":
    torch.set_num_threads(1)
    json.dump(record(), sys.stdout, indent=4)
    print()
