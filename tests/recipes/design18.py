"""Recipes with planted effects, for the factorial and speed-trial tests: real trials whose
test accuracy is set by the config, so the analysis' estimates can be checked against truth."""

from __future__ import annotations

import json
import time
import zlib
from typing import Any

import numpy as np

#: accuracy = BASE + A * a + B * b + C * c + AB * a * b (a, b, c in {0, 1})
BASE, A, B, C, AB = 0.6, 0.10, 0.05, 0.0, 0.04
#: sd of a seed's shared part (the same for every arm) and of each trial's own noise
BLOCK_SD, NOISE_SD = 0.03, 0.008


def planted(config: dict[str, Any], ctx: Any) -> None:
    """Predicts the true label on a share of the test examples set by the config and the
    seed; the rest get a wrong label."""
    a, b, c = (float(config[k]) for k in ("a", "b", "c"))
    # d and e (a fractional design's 4th and 5th factors) plant nothing
    block = BLOCK_SD * float(ctx.rng("data").normal())
    # each arm's own noise: the seed's init stream, mixed with the arm's config
    key = zlib.crc32(json.dumps(config, sort_keys=True).encode())
    own = np.random.default_rng([int(ctx.rng("init").integers(2**31)), key])
    share = BASE + A * a + B * b + C * c + AB * a * b + block + NOISE_SD * float(own.normal())
    if config.get("sleep"):
        with ctx.phase("train"):
            time.sleep(float(config["sleep"]) * (1 + 0.02 * float(own.normal())))
    ctx.log(step=1, val_accuracy=share)
    from fairtrial.tasks import get_task

    task = get_task("digits")  # a planted result needs the labels the harness scores with
    truth = task.y[task.test_idx]
    n = len(truth)
    right = np.zeros(n, dtype=bool)
    right[own.permutation(n)[: round(float(np.clip(share, 0, 1)) * n)]] = True
    wrong = (truth + 1) % 10

    def predict(xs: np.ndarray) -> np.ndarray:
        return np.where(right[: len(xs)], truth[: len(xs)], wrong[: len(xs)])

    ctx.evaluate_test(predict)
