"""Built-in tasks and the task registry, on the real data (no mocks)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from fairtrial.errors import TaskError
from fairtrial.tasks import Task, builtin_tasks, get_task
from fairtrial.tasks import builtin as bt
from fairtrial.tasks.env import BUILTIN_ENVS

FACTORIES: dict[str, Callable[[], Task]] = {
    "digits": bt.digits,
    "breast_cancer": bt.breast_cancer,
    "mnist1d": bt.mnist1d,
    "modular_addition": bt.modular_addition,
}

# Split sizes follow from per-class rounding in stratified_split; pinned so that a change to
# the split code shows up here as well as in the checksum.
SIZES = {
    "digits": {"train": 1078, "val": 359, "test": 360},
    "breast_cancer": {"train": 341, "val": 113, "test": 115},
    "mnist1d": {"train": 3000, "val": 1000, "test": 1000},
    "modular_addition": {"train": 4656, "val": 970, "test": 3783},
}


NEEDS_SKLEARN = {"digits", "breast_cancer"}


def _get(name: str) -> Task:
    if name in NEEDS_SKLEARN:
        pytest.importorskip("sklearn")  # the optional 'sklearn' extra
    return get_task(name)


@pytest.fixture(scope="module", params=sorted(FACTORIES))
def task(request: pytest.FixtureRequest) -> Task:
    return _get(request.param)


def test_builtin_names_match() -> None:
    # the tasks read from other packages' files are tested in test_tasks17_builtin.py
    assert set(FACTORIES) <= set(builtin_tasks())
    # every data task is pinned; an environment task's checksum covers the gymnasium version
    # it runs on (a new version is a new task, not changed data): tests/test_env19_run.py
    assert set(bt.PINNED_CHECKSUMS) == set(builtin_tasks()) - set(BUILTIN_ENVS)


def test_checksum_is_pinned(task: Task) -> None:
    assert task.checksum == bt.PINNED_CHECKSUMS[task.name]


def test_loading_twice_gives_identical_arrays(task: Task) -> None:
    again = FACTORIES[task.name]()  # bypasses get_task's cache: a real second build
    assert again is not task
    for name in ("x", "y", "train_idx", "val_idx", "test_idx"):
        a, b = getattr(task, name), getattr(again, name)
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b), name
    assert again.checksum == task.checksum


def test_description_source_and_metric(task: Task) -> None:
    assert task.metric == "accuracy" and task.direction == "max"
    assert task.kind == "classification"
    assert str(len(task.y)) in task.description
    assert task.source
    assert task.y.dtype == np.int64


def test_splits_disjoint_and_sized(task: Task) -> None:
    tr, va, te = task.train_idx, task.val_idx, task.test_idx
    assert not set(tr) & set(va) and not set(tr) & set(te) and not set(va) & set(te)
    assert len(tr) + len(va) + len(te) == len(task.y)
    assert task.sizes == SIZES[task.name]


def test_splits_stratified(task: Task) -> None:
    classes = np.unique(task.y)
    overall = np.array([np.mean(task.y == c) for c in classes])
    for idx in (task.train_idx, task.val_idx, task.test_idx):
        part = task.y[idx]
        share = np.array([np.mean(part == c) for c in classes])
        assert np.max(np.abs(share - overall)) < 0.02


def test_data_hides_test_labels_and_is_read_only(task: Task) -> None:
    d = task.data()
    assert not hasattr(d, "y_test")
    assert d.n_classes == task.n_classes
    assert len(d.x_test) == len(task.test_idx)
    for arr in (d.x_train, d.y_train, d.x_val, d.y_val, d.x_test):
        assert not arr.flags.writeable
    with pytest.raises(ValueError):
        d.x_train[0] = 0
    with pytest.raises(ValueError):
        task.x[0] = 0


def test_score(task: Task) -> None:
    y_test = task.y[task.test_idx]
    assert task.score(y_test) == 1.0
    assert task.score(list(y_test)) == 1.0
    wrong = (y_test + 1) % int(task.n_classes or 2)
    assert task.score(wrong) == 0.0
    with pytest.raises(TaskError, match="test predictions"):
        task.score(y_test[:-1])


def test_checksum_mismatch_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(bt.PINNED_CHECKSUMS, "modular_addition", "0" * 64)
    with pytest.raises(TaskError, match=r"modular_addition.*differs from the pinned 0000"):
        bt.modular_addition()


# --------------------------------------------------------------------------------------------
# task-specific checks


def test_digits_scaled() -> None:
    t = _get("digits")
    assert t.x.shape == (1797, 64) and t.x.dtype == np.float32
    assert t.x.min() == 0.0 and t.x.max() == 1.0
    assert t.n_classes == 10


def test_breast_cancer_raw_features() -> None:
    t = _get("breast_cancer")
    assert t.x.shape == (569, 30) and t.x.dtype == np.float32
    # Raw, not standardized: standardizing on all rows would leak the test split.
    assert t.x.max() > 100.0
    assert t.n_classes == 2


def test_mnist1d_shape_and_balance() -> None:
    t = get_task("mnist1d")
    assert t.x.shape == (5000, 40) and t.x.dtype == np.float32
    assert np.all(np.isfinite(t.x))
    counts = np.bincount(t.y)
    assert len(counts) == 10 and counts.min() >= 450 and counts.max() <= 550
    assert abs(float(t.x.mean())) < 1e-3 and abs(float(t.x.std()) - 1.0) < 1e-3


def _accuracy(p: NDArray[Any], y: NDArray[Any]) -> float:
    return float(np.mean(p == y))


def test_mnist1d_learnable_but_hard_for_linear_models() -> None:
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    d = get_task("mnist1d").data()
    knn = KNeighborsClassifier(n_neighbors=5).fit(d.x_train, d.y_train)
    knn_acc = _accuracy(knn.predict(d.x_val), d.y_val)
    assert 0.3 < knn_acc < 0.95  # clearly above chance (0.1), far from trivially separable
    # MNIST-1D is built so that linear models struggle (~32% in Greydanus 2020).
    linear = LogisticRegression(max_iter=1000).fit(d.x_train, d.y_train)
    lin_acc = _accuracy(linear.predict(d.x_val), d.y_val)
    assert 0.2 < lin_acc < 0.5


def test_make_mnist1d_fresh_draw() -> None:
    x, y = bt.make_mnist1d(num_samples=200, seed=7)
    x2, y2 = bt.make_mnist1d(num_samples=200, seed=7)
    x3, _ = bt.make_mnist1d(num_samples=200, seed=8)
    assert x.shape == (200, 40) and x.dtype == np.float32 and y.dtype == np.int64
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert not np.array_equal(x, x3)
    assert np.array_equal(np.bincount(y), np.full(10, 20))


def test_mnist1d_templates_start_and_end_at_zero() -> None:
    t = bt.mnist1d_templates()
    assert t.shape == (10, 12)
    assert np.allclose(t[:, 0], 0.0) and np.allclose(t[:, -1], 0.0)


def test_modular_addition_labels() -> None:
    t = get_task("modular_addition")
    assert t.x.shape == (9409, 2) and t.x.dtype == np.int64
    a, b = t.x[:, 0], t.x[:, 1]
    assert np.array_equal(t.y, (a + b) % 97)
    assert len({(int(i), int(j)) for i, j in t.x}) == 9409
    assert t.n_classes == 97
    assert dict(t.data().meta) == {"modulus": 97, "n_tokens": 97}
    x5, y5 = bt.make_modular_addition(5)
    assert x5.shape == (25, 2) and np.array_equal(y5, x5.sum(axis=1) % 5)


# --------------------------------------------------------------------------------------------
# registry


def test_user_task_from_module(tmp_path: Path) -> None:
    (tmp_path / "ft_user_task_ok.py").write_text(
        "import numpy as np\n"
        "from fairtrial.tasks import Task\n\n"
        "def make():\n"
        "    x = np.arange(40, dtype=np.float64).reshape(20, 2)\n"
        "    y = np.arange(20) % 2\n"
        "    return Task.from_arrays('mine', x, y, fractions=(0.5, 0.25, 0.25))\n"
    )
    t = get_task("ft_user_task_ok:make", base_dir=tmp_path)
    assert isinstance(t, Task) and t.name == "mine"
    assert t.sizes == {"train": 10, "val": 4, "test": 6}
    assert get_task("ft_user_task_ok:make", base_dir=tmp_path) is t  # cached per process


def test_user_factory_returning_non_task(tmp_path: Path) -> None:
    (tmp_path / "ft_user_task_bad.py").write_text("def make():\n    return {'x': [1, 2]}\n")
    with pytest.raises(TaskError, match="returned dict"):
        get_task("ft_user_task_bad:make", base_dir=tmp_path)


def test_user_task_missing_module(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="cannot import"):
        get_task("ft_no_such_module_here:make", base_dir=tmp_path)


def test_unknown_task_lists_valid_names() -> None:
    with pytest.raises(TaskError) as err:
        get_task("no_such_task")
    msg = str(err.value)
    for name in FACTORIES:
        assert name in msg


def test_modules_are_imported_from_the_spec_folder_each_time(tmp_path: Path) -> None:
    """Two spec folders with a module of the same name, in one process: each gets its own."""
    import os

    from fairtrial.tasks import import_object

    a, b = tmp_path / "a", tmp_path / "b"
    for folder, value in ((a, 1), (b, 2)):
        folder.mkdir()
        (folder / "samename_recipe.py").write_text(f"def value():\n    return {value}\n")
    assert import_object("samename_recipe:value", a, "recipe")() == 1  # type: ignore[operator]
    assert import_object("samename_recipe:value", b, "recipe")() == 2  # type: ignore[operator]
    # an edited file is read again
    (a / "samename_recipe.py").write_text("def value():\n    return 3\n")
    st = (a / "samename_recipe.py").stat()
    os.utime(a / "samename_recipe.py", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert import_object("samename_recipe:value", a, "recipe")() == 3  # type: ignore[operator]
