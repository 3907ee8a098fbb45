"""A fast recipe with a known tuning landscape: the validation score peaks at lr = 0.01."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np


def train(config: dict[str, Any], ctx: Any) -> None:
    """Logs ``val_score`` (best at lr = 0.01, seed noise from the init stream) for a few
    steps; predicts the test split from the same score (the probe's labels shifted)."""
    lr = float(config["lr"])
    width = float(config.get("width", 1.0))
    noise = float(ctx.rng("init").normal(scale=0.01))
    peak = 1.0 - (math.log10(lr) + 2.0) ** 2 / 4.0 + noise + 0.01 * width
    for step in range(3):
        ctx.log(step=step, val_score=peak - 0.1 * (2 - step), train_loss=1.0 / (step + 1))
    if config.get("sleep"):
        time.sleep(float(config["sleep"]))
    quality = max(0.0, min(1.0, peak))

    def predict(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        labels = ctx.task_labels if hasattr(ctx, "task_labels") else None
        del labels
        n = len(x)
        cut = int(quality * n)
        return np.array([i % 10 if i < cut else 0 for i in range(n)])

    ctx.evaluate_test(predict)
