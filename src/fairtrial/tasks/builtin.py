"""The built-in tasks: small, fast, offline datasets with fixed, checksummed splits.

Every task here is built without a network connection: two come from the files that
scikit-learn ships inside its package, and two are generated procedurally from a fixed seed.

=====================  ==========  ===========  ===============================================
name                   rows        split        source
=====================  ==========  ===========  ===============================================
``digits``             1797 x 64   .6/.2/.2     scikit-learn bundled (UCI optical digits)
``breast_cancer``      569 x 30    .6/.2/.2     scikit-learn bundled (UCI Wisconsin diagnostic)
``mnist1d``            5000 x 40   .6/.2/.2     procedural (Greydanus 2020 defaults, seed 42)
``modular_addition``   9409 x 2    .5/.1/.4     procedural (all pairs a + b mod 97)
=====================  ==========  ===========  ===============================================

Each factory checks the task it built against :data:`PINNED_CHECKSUMS`, so a trial can never
silently run on data or splits that differ from the ones every other trial was recorded on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fairtrial.errors import MissingDependency, TaskError
from fairtrial.tasks.base import Task
from fairtrial.tasks.catalog import register_redraw, register_task

__all__ = [
    "PINNED_CHECKSUMS",
    "make_mnist1d",
    "make_modular_addition",
    "mnist1d_templates",
]

#: sha256 :attr:`Task.checksum` of each built-in task (data, labels and split indices).
PINNED_CHECKSUMS: dict[str, str] = {
    "digits": "5372c8bcc82b33522dda585d5e3b9d824dec83c733bd0d91dd107a9c39a82fc5",
    "breast_cancer": "ffb10bfc18f4b96711793220d1419e11d720d04f85db3d268c395e976c1ca957",
    "mnist1d": "ec516c080a8cb655084f8619386cda99ab91e2d54d20f676b1be3916dd01ac0b",
    "modular_addition": "a37d3bf59a8df155b4e82cf0fcb824aa5c0d1655c94b9caa44a4c1b24527bdd7",
}


def _verified(task: Task) -> Task:
    """Return ``task`` if its checksum is the pinned one, else raise :class:`TaskError`."""
    expected = PINNED_CHECKSUMS[task.name]
    got = task.checksum
    if got != expected:
        raise TaskError(
            f"built-in task '{task.name}': checksum {got} differs from the pinned {expected}. "
            "The data, the labels or the split indices are not the ones fairtrial was released "
            "with: either the generation or split code changed, or the dataset file bundled "
            "with this install (e.g. scikit-learn's) differs. Results on this task would not be "
            "comparable with results recorded elsewhere."
        )
    return task


def _sklearn_datasets(task_name: str) -> Any:
    # Imported lazily: scikit-learn is an optional extra, and only these two tasks need it.
    try:
        from sklearn import datasets
    except ImportError:
        raise MissingDependency("sklearn", "sklearn", f"the '{task_name}' task") from None
    return datasets


def _sklearn_csv(name: str) -> Any:
    """A CSV file scikit-learn ships (``sklearn/datasets/data/NAME``), read as its loader
    reads it, without importing ``sklearn.datasets`` (seconds of scipy and pandas imports,
    paid by every run and every worker); None where it is not found. The task's pinned
    checksum still checks what it gives."""
    import gzip
    import importlib.util

    try:
        spec = importlib.util.find_spec("sklearn")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "datasets" / "data" / name
        if path.is_file():
            with gzip.open(path, mode="rt", encoding="utf-8") as text:
                return np.loadtxt(text, delimiter=",")
    return None


# --------------------------------------------------------------------------------------------
# scikit-learn bundled datasets


@register_task("digits")
def digits() -> Task:
    """8x8 hand-written digits, 10 classes (scikit-learn's copy of the UCI test set).

    Alpaydin & Kaynak (1998), "Optical Recognition of Handwritten Digits", UCI Machine
    Learning Repository. Pixel counts 0..16 are scaled to [0, 1]; a fixed per-pixel scale
    uses no statistics of the data, so it leaks nothing from the test split.
    """
    data = _sklearn_csv("digits.csv.gz")
    if data is None:
        raw = _sklearn_datasets("digits").load_digits()
        data = np.column_stack([raw.data, raw.target])
    x = (np.asarray(data[:, :-1], dtype=np.float64) / 16.0).astype(np.float32)
    y = np.asarray(data[:, -1], dtype=np.int64)
    return _verified(
        Task.from_arrays(
            "digits",
            x,
            y,
            metric="accuracy",
            fractions=(0.6, 0.2, 0.2),
            split_seed=0,
            description=f"8x8 hand-written digits: {len(y)} images, 64 pixels in [0, 1], "
            "10 classes",
            source="scikit-learn bundled dataset (UCI ML hand-written digits, "
            "Alpaydin & Kaynak 1998)",
            meta={"image_shape": (8, 8)},
        )
    )


@register_task("breast_cancer")
def breast_cancer() -> Task:
    """Wisconsin diagnostic breast cancer, binary (0 = malignant, 1 = benign).

    Street, Wolberg & Mangasarian (1993), "Nuclear feature extraction for breast tumor
    diagnosis"; UCI Machine Learning Repository. Features are kept raw: standardizing with
    statistics of all rows would leak the test split into training, so recipes standardize
    with training statistics themselves.
    """
    raw = _sklearn_datasets("breast_cancer").load_breast_cancer()
    x = np.asarray(raw.data, dtype=np.float32)
    y = np.asarray(raw.target, dtype=np.int64)
    return _verified(
        Task.from_arrays(
            "breast_cancer",
            x,
            y,
            metric="accuracy",
            fractions=(0.6, 0.2, 0.2),
            split_seed=0,
            description=f"Wisconsin diagnostic breast cancer: {len(y)} tumours, "
            f"{x.shape[1]} raw features, 2 classes",
            source="scikit-learn bundled dataset (UCI breast cancer Wisconsin diagnostic, "
            "Street et al. 1993)",
        )
    )


# --------------------------------------------------------------------------------------------
# MNIST-1D

# The ten hand-drawn 1-D digit outlines published with MNIST-1D, one row per digit 0..9.
_MNIST1D_DIGITS: tuple[tuple[float, ...], ...] = (
    (5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5),
    (5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5),
    (5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5),
    (5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5),
    (5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5),
    (5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5),
    (5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5),
    (5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5),
    (5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5),
    (5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5),
)


def mnist1d_templates() -> NDArray[np.float64]:
    """The ten MNIST-1D templates, shape (10, 12): whitened, starting at 0, divided by 6."""
    t = np.asarray(_MNIST1D_DIGITS, dtype=np.float64)
    t = (t - t.mean(axis=1, keepdims=True)) / t.std(axis=1, keepdims=True)
    # Shifting each outline to start (and, as drawn, end) at 0 lets the zero padding
    # continue it without a jump, so "signal" and "background" meet smoothly.
    t = t - t[:, :1]
    out: NDArray[np.float64] = t / 6.0
    return out


def _resample(
    rows: NDArray[np.float64], lengths: NDArray[np.int64], n_out: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Linearly resample the first ``lengths[i]`` values of each row onto ``n_out`` points.

    Both grids span [0, 1] with their end points included, as MNIST-1D's interpolation does.
    Returns the resampled rows and, for each output point, its position in source-index units
    (used to tell template from padding).
    """
    span = (lengths.astype(np.float64) - 1.0)[:, None]
    pos = np.arange(n_out, dtype=np.float64)[None, :] * span / (n_out - 1)
    # Clamp the left neighbour so the last output point interpolates between the last two
    # samples with weight 1 on the last, instead of reading past the row.
    left = np.minimum(np.floor(pos).astype(np.int64), (lengths - 2)[:, None])
    frac = pos - left
    r = np.arange(len(rows))[:, None]
    out = rows[r, left] * (1.0 - frac) + rows[r, left + 1] * frac
    return out, pos


def make_mnist1d(
    num_samples: int = 5000,
    seed: int = 42,
    *,
    template_len: int = 12,
    padding: tuple[int, int] = (36, 60),
    scale_coeff: float = 0.4,
    max_translation: int = 48,
    corr_noise_scale: float = 0.25,
    iid_noise_scale: float = 2e-2,
    shear_scale: float = 0.75,
    final_seq_length: int = 40,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Generate an MNIST-1D draw: ``x`` float32 (num_samples, final_seq_length), ``y`` int64.

    MNIST-1D: Greydanus (2020), "Scaling down deep learning", arXiv:2011.14439, and
    https://github.com/greydanus/mnist1d. Each example takes the template of its digit and,
    following the published procedure and default arguments:

    1. pads it on the right with a random number of zeros in ``padding`` (inclusive);
    2. stretches the padded signal to ``template_len + padding[1]`` points;
    3. scales its amplitude by a factor uniform in ``1 ± scale_coeff / 2``;
    4. rolls it right by a random shift in ``0 .. max_translation - 1`` (wrapping around);
    5. fills the padding (not the digit) with correlated noise: gaussian white noise of
       standard deviation ``corr_noise_scale`` smoothed by a gaussian filter of sigma 2;
    6. adds iid gaussian noise of standard deviation ``iid_noise_scale`` everywhere;
    7. shears it: subtracts a linear ramp from -c/2 to c/2, c uniform in ``± shear_scale / 2``;
    8. resamples it linearly to ``final_seq_length`` points.

    Classes get ``num_samples // 10`` examples each, in shuffled order, and the whole draw is
    then centred and scaled to unit standard deviation (one mean and one sd over all values,
    as in the published dataset).

    The random numbers come from fairtrial's own ``np.random.Generator(PCG64(seed))`` drawn in
    vectorized batches, never from numpy's global generator, so a draw is reproducible and
    independent of anything else in the process, but its values are not bit-identical to
    the original ``mnist1d_data.pkl``. Arithmetic is float64 and only the result is cast to
    float32, so the same seed gives the same bytes on every run on a machine. Use another
    ``seed`` for a fresh draw from the same distribution.
    """
    if num_samples < 10:
        raise ValueError(f"num_samples must be at least 10 (one per class), got {num_samples}")
    low, high = padding
    if not 0 <= low <= high:
        raise ValueError(f"padding must be (low, high) with 0 <= low <= high, got {padding}")
    if max_translation < 1:
        raise ValueError(f"max_translation must be at least 1, got {max_translation}")
    if final_seq_length < 2:
        raise ValueError(f"final_seq_length must be at least 2, got {final_seq_length}")

    rng = np.random.Generator(np.random.PCG64(seed))
    templates = mnist1d_templates()
    n_classes, t_len = templates.shape
    per_class = num_samples // n_classes
    y = np.repeat(np.arange(n_classes, dtype=np.int64), per_class)
    n = len(y)
    width = template_len + high  # working resolution, as in the published procedure

    # Each row holds the template followed by enough zeros for the longest padding; its
    # valid length (template plus its own padding) decides how much gets stretched.
    pad = rng.integers(low, high + 1, size=n)
    rows = np.zeros((n, t_len + high), dtype=np.float64)
    rows[:, :t_len] = templates[y]
    x, pos = _resample(rows, t_len + pad, width)
    # A point belongs to the digit when any template sample contributes to it.
    is_digit = pos < t_len

    x *= 1.0 + scale_coeff * (rng.random(size=(n, 1)) - 0.5)

    shift = rng.integers(0, max_translation, size=n)
    rolled = (np.arange(width)[None, :] - shift[:, None]) % width
    r = np.arange(n)[:, None]
    x, is_digit = x[r, rolled], is_digit[r, rolled]

    from scipy.ndimage import gaussian_filter1d

    corr = gaussian_filter1d(corr_noise_scale * rng.standard_normal((n, width)), 2.0, axis=1)
    x = np.where(is_digit, x, corr)
    x = x + iid_noise_scale * rng.standard_normal((n, width))

    coeff = shear_scale * (rng.random(size=(n, 1)) - 0.5)
    x = x - coeff * np.linspace(-0.5, 0.5, width)[None, :]

    x, _ = _resample(x, np.full(n, width, dtype=np.int64), final_seq_length)

    order = rng.permutation(n)
    x, y = x[order], y[order]
    x = (x - x.mean()) / x.std()
    return x.astype(np.float32), y


def _mnist1d_task(name: str, seed: int) -> Task:
    x, y = make_mnist1d(seed=seed)
    return Task.from_arrays(
        name,
        x,
        y,
        metric="accuracy",
        fractions=(0.6, 0.2, 0.2),
        split_seed=0,
        description=f"MNIST-1D: {len(y)} sequences of length {x.shape[1]}, 10 classes",
        source=f"procedural, MNIST-1D defaults (Greydanus 2020), seed {seed}",
        meta={"seq_length": int(x.shape[1])},
    )


@register_task("mnist1d")
def mnist1d() -> Task:
    """MNIST-1D with the published defaults (Greydanus 2020), drawn with seed 42.

    5000 sequences of length 40, 10 balanced classes. Hard for linear models (logistic
    regression reaches about a third), easy for small CNNs: a cheap task on which
    architectural ideas still make a visible difference. See :func:`make_mnist1d`.
    """
    return _verified(_mnist1d_task("mnist1d", 42))


@register_redraw("mnist1d")
def mnist1d_draw(draw: int) -> Task:
    """``mnist1d@DRAW``: a fresh MNIST-1D draw generated with seed ``DRAW`` (42 is the default).

    Same generating process and sizes, new examples; its checksum is not pinned (it is recorded
    with every trial like any other task's).
    """
    return _mnist1d_task(f"mnist1d@{draw}", draw)


# --------------------------------------------------------------------------------------------
# Modular addition


def make_modular_addition(modulus: int = 97) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Every pair ``(a, b)`` with ``0 <= a, b < modulus`` and its label ``(a + b) % modulus``.

    The algorithmic task of Power et al. (2022), "Grokking: Generalization beyond overfitting
    on small algorithmic datasets", arXiv:2201.02177. ``x`` has shape (modulus², 2) and holds
    the token ids of ``a`` and ``b`` in row-major order (a major).
    """
    if modulus < 2:
        raise ValueError(f"modulus must be at least 2, got {modulus}")
    a, b = np.divmod(np.arange(modulus * modulus, dtype=np.int64), modulus)
    return np.stack([a, b], axis=1), (a + b) % modulus


def _modular_task(name: str, split_seed: int) -> Task:
    modulus = 97
    x, y = make_modular_addition(modulus)
    return Task.from_arrays(
        name,
        x,
        y,
        metric="accuracy",
        fractions=(0.5, 0.1, 0.4),
        split_seed=split_seed,
        description=f"(a + b) mod {modulus}: all {len(y)} pairs as 2 token ids, {modulus} classes",
        source="procedural (Power et al. 2022 grokking task)"
        + (f", split seed {split_seed}" if split_seed else ""),
        meta={"modulus": modulus, "n_tokens": modulus},
    )


@register_task("modular_addition")
def modular_addition() -> Task:
    """(a + b) mod 97 over all 9409 pairs: the grokking task (Power et al. 2022).

    Half the pairs train, a tenth validate and the rest test, stratified by label: grokking
    is studied by training on a fraction of the table and watching held-out accuracy jump
    long after training accuracy saturated. Tokens are the residues 0..96; a recipe that
    wants an "=" or operator token adds it itself (``meta`` gives the vocabulary size).
    """
    return _verified(_modular_task("modular_addition", 0))


@register_redraw("modular_addition")
def modular_addition_draw(draw: int) -> Task:
    """``modular_addition@DRAW``: the same table split afresh (split seed ``DRAW``).

    The table of all pairs is the whole population, so a fresh draw is a fresh choice of
    which pairs train, validate and test.
    """
    return _modular_task(f"modular_addition@{draw}", draw)
