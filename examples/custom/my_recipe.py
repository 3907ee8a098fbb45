"""A recipe of your own: train(config, ctx) with numpy only.

Softmax regression on random Fourier features. Every random choice comes from a named
stream of the context, so two arms on the same seed share their initial weights, their
features and their data order: the paired difference measures the change, nothing else.
"""

import numpy as np


def train(config, ctx):
    d = ctx.data
    n_classes = d.n_classes
    # random features: drawn from the "init" stream, identical across arms for a seed
    proj = ctx.rng("init").normal(
        scale=config["bandwidth"], size=(d.x_train.shape[1], config["features"])
    )
    phase = ctx.rng("init").uniform(0, 2 * np.pi, config["features"])

    def featurize(x):
        return np.cos(x @ proj + phase)

    xtr, xva = featurize(d.x_train), featurize(d.x_val)
    w = np.zeros((config["features"], n_classes))
    order = ctx.rng("data")
    with ctx.phase("train"):
        for epoch in range(config["epochs"]):
            for batch in np.array_split(order.permutation(len(xtr)), len(xtr) // 32):
                logits = xtr[batch] @ w
                p = np.exp(logits - logits.max(1, keepdims=True))
                p /= p.sum(1, keepdims=True)
                p[np.arange(len(batch)), d.y_train[batch]] -= 1
                w -= config["lr"] * (xtr[batch].T @ p / len(batch) + config["weight_decay"] * w)
            val_acc = float(np.mean((xva @ w).argmax(1) == d.y_val))
            ctx.log(step=epoch, val_accuracy=val_acc)
    with ctx.phase("eval"):
        ctx.evaluate_test(lambda x: (featurize(x) @ w).argmax(1))
