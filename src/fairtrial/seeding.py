"""Seeds derived from one root seed: one independent stream per purpose, identical across arms.

Seed index ``i`` of an experiment with root seed ``r`` gives, for every arm alike, the streams
``derive_seed(r, "init", i)``, ``derive_seed(r, "data", i)``, ... (common random numbers): two
arms run on seed ``i`` start from the same weights and see the data in the same order, so the
paired difference between them measures the change, not the luck of the draw.

Streams are derived by hashing, not by consuming a parent generator, so stream ``"data"`` of
seed 3 does not depend on how many other streams or seeds were asked for first.
"""

from __future__ import annotations

import hashlib
import random
import sys
from typing import Any

import numpy as np

#: The named streams every trial gets; recipes may ask for any other name too.
STREAMS: tuple[str, ...] = ("init", "data", "augment", "dropout")


def derive_seed(root: int, purpose: str, index: int) -> int:
    """A 63-bit seed for stream ``purpose`` of seed index ``index`` under root seed ``root``.

    63 bits so that it fits every consumer (numpy, torch.manual_seed, C ``int64``).
    """
    digest = hashlib.sha256(f"fairtrial/{root}/{purpose}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def numpy_generator(root: int, purpose: str, index: int) -> np.random.Generator:
    """A numpy Generator (PCG64) for one stream."""
    return np.random.Generator(np.random.PCG64(derive_seed(root, purpose, index)))


def trial_seeds(root: int, index: int, names: tuple[str, ...] = STREAMS) -> dict[str, int]:
    """The seeds of the named streams of one seed index (what provenance and commands get)."""
    return {name: derive_seed(root, name, index) for name in names}


def seed_globals(root: int, index: int) -> int:
    """Seed Python's, numpy's and (if imported) torch's global generators for user code.

    fairtrial itself never draws from global state; this is for recipes that do
    (``random.shuffle``, ``np.random.rand``, ``torch.randn`` without a generator).
    Returns the seed used.
    """
    seed = derive_seed(root, "global", index)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch: Any = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)
    return seed


def tuning_root(root: int) -> int:
    """The root seed of an experiment's tuning trials: derived from its own root, so that no
    tuning trial's streams are those of a seed the arms are compared on."""
    return derive_seed(root, "tuning", 0)
