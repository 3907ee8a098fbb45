"""A task of your own: any function that returns a fairtrial.Task.

fairtrial makes fixed stratified train/val/test splits, checksums data and splits, and keeps
the test labels away from the recipe.
"""

import numpy as np

from fairtrial import Task


def two_moons() -> Task:
    # Procedural data with a fixed seed: the same task on every machine, no download.
    rng = np.random.Generator(np.random.PCG64(2024))
    n = 1500
    t = rng.uniform(0, np.pi, n)
    label = rng.integers(0, 2, n)
    x = np.stack([np.cos(t) + label, np.sin(t) * (1 - 2 * label) + 0.5 * label], axis=1)
    x += rng.normal(scale=0.25, size=x.shape)
    return Task.from_arrays(
        "two_moons", x.astype(np.float32), label.astype(np.int64), metric="accuracy",
        description="two interleaving half circles, 1500 points, noise 0.25",
    )  # fmt: skip
