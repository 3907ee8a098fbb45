"""Small, fast recipes for the tests: each mode exercises one way a trial can end."""

from __future__ import annotations

import ctypes
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np


def probe(config: dict[str, Any], ctx: Any) -> None:
    """Nearest-centroid on noisy features; logs the first draws of its streams.

    ``mode`` picks how the trial ends; ``noise`` changes the result, so arms differ.
    """
    mode = config.get("mode", "ok")
    d = ctx.data
    order = ctx.rng("data").permutation(len(d.x_train))
    init = ctx.rng("init").normal(size=3)
    ctx.log(step=0, first_index=int(order[0]), init0=float(init[0]), global_draw=random.random(),
            np_global=float(np.random.rand()))  # fmt: skip
    if config.get("sleep"):
        time.sleep(float(config["sleep"]))
    if mode == "gate":  # runs until the test opens the gate (a file), at most a minute
        gate = Path(config["gate"])
        for _ in range(1200):
            if gate.exists():
                break
            time.sleep(0.05)
    if mode == "raise":
        raise ValueError("boom from the recipe")
    if mode == "segfault":
        ctypes.string_at(0)
    if mode == "kill":
        for i in range(5):
            ctx.log(step=i + 1, before_kill=float(i))
        ctx.flush()
        time.sleep(0.3)  # let the parent write the flushed points
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "pidfile" and ctx.attempt == 1:  # the test kills this worker from outside
        ctx.log(step=1, before_kill=1.0)
        ctx.flush()
        (ctx.workdir / "pid").write_text(str(os.getpid()))
        time.sleep(60)
    if mode == "hang":
        time.sleep(600)
    if mode == "nan":
        ctx.log(step=1, loss=float("nan"))
    if mode == "no_test":
        return
    if mode == "alloc":  # a known allocation: the meter's peak RSS test
        block = np.ones(int(float(config["alloc_mb"]) * 1e6) // 8)
        ctx.log(step=1, block_sum=float(block.sum()))
        del block
    if mode in ("energy", "energy_raise"):  # advance (and wrap) a fake RAPL counter
        root = Path(os.environ["FAIRTRIAL_POWERCAP_ROOT"])
        for rel, value in config["counter_writes"]:
            (root / rel).write_text(str(value))
        if mode == "energy_raise":
            raise RuntimeError("crash after using energy")
    if mode == "curve":  # a known learning curve, one train phase per point
        for i, value in enumerate(config["curve"]):
            with ctx.phase("train"):
                time.sleep(float(config.get("step_sleep", 0.01)))
            with ctx.phase("eval"):
                ctx.log(step=i + 1, val_accuracy=float(value), val_loss=1.0 - float(value))
        ctx.evaluate_test(lambda xs: np.zeros(len(xs), dtype=int))
        return
    noise = float(config.get("noise", 0.0))
    x = d.x_train + noise * ctx.rng("augment").normal(size=d.x_train.shape)
    # each seed fits on its own draw of 80% of the training set: seeds reach the result
    keep = ctx.rng("data").random(len(x)) < 0.8
    x, y = x[keep], d.y_train[keep]
    classes = np.unique(y)
    centroids = np.stack([x[y == c].mean(0) for c in classes])

    def predict(xs: np.ndarray) -> np.ndarray:
        dist = ((xs[:, None, :] - centroids[None]) ** 2).sum(-1)
        return classes[dist.argmin(1)]

    ctx.log(step=1, val_accuracy=float(np.mean(predict(d.x_val) == d.y_val)))
    ctx.evaluate_test(predict)


def fixed_seed(config: dict[str, Any], ctx: Any) -> None:
    """Shrunken nearest-centroid on a subsample drawn with a seed of its own: it ignores ctx's
    seeds, so every seed of an arm gives the same result (what fairtrial must catch)."""
    d = ctx.data
    keep = np.random.default_rng(0).random(len(d.x_train)) < 0.8
    x, y = d.x_train[keep], d.y_train[keep]
    classes = np.unique(y)
    centroids = float(config["shrink"]) * np.stack([x[y == c].mean(0) for c in classes])

    def predict(xs: np.ndarray) -> np.ndarray:
        return classes[((xs[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)]

    ctx.evaluate_test(predict)
