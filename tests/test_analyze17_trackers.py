"""``fairtrial analyze`` of runs logged with MLflow, TensorBoard and W&B.

The same histories (2 arms × 5 seeds, 3 steps each) are logged with the real MLflow client to
a local file store and with torch's SummaryWriter to TensorBoard event files, and given to the
W&B mapping as its run records (W&B's API needs a network: it is not called here). All
three come through one mapping of runs to rows, and must give the same rows and verdicts.
The values are multiples of 1/128, exact in TensorBoard's 32-bit floats.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fairtrial.api import analyze_results
from fairtrial.cli import main
from fairtrial.errors import ImportedDataError
from fairtrial.imports import ImportedResults, read_results
from fairtrial.imports.wandb import results_of

SEEDS = range(5)


def history(opt: str, seed: int) -> list[float]:
    """Three logged points: sgd peaks at step 1, adam too, each ends lower."""
    wobble = seed / 64 + (seed % 2) / 128 * (opt == "adam")
    if opt == "sgd":
        return [0.5, 0.75 + wobble, 0.6875 + wobble]
    return [0.5, 0.8125 + wobble, 0.796875 + wobble]


LAST = {(o, s): history(o, s)[-1] for o in ("sgd", "adam") for s in SEEDS}
BEST = {(o, s): max(history(o, s)) for o in ("sgd", "adam") for s in SEEDS}


def cli(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    got = capsys.readouterr()
    return code, got.out, got.err


def rows(results: ImportedResults) -> dict[tuple[str, int], float]:
    return {(r.arm.removeprefix("opt="), r.seed): r.value for r in results.rows}


@pytest.fixture
def mlruns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A local MLflow file store with the runs of experiment ``sgd-vs-adam``, one failed run
    and one run that never logged the metric."""
    pytest.importorskip("mlflow")
    # MLflow 3 refuses a new file store unless asked: the tests want a plain folder
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    uri = f"file:{tmp_path / 'mlruns'}"
    client = MlflowClient(tracking_uri=uri)
    eid = client.create_experiment("sgd-vs-adam")
    for opt in ("sgd", "adam"):
        for seed in SEEDS:
            run = client.create_run(eid, run_name=f"{opt}-{seed}").info.run_id
            for key, value in (("opt", opt), ("lr", "0.1"), ("seed", str(seed))):
                client.log_param(run, key, value)
            for step, v in enumerate(history(opt, seed)):
                client.log_metric(run, "val_acc", v, step=step)
            client.set_terminated(run)
    failed = client.create_run(eid, run_name="crashed").info.run_id
    client.log_param(failed, "seed", "9")
    client.log_metric(failed, "val_acc", 0.1, step=0)
    client.set_terminated(failed, status="FAILED")
    parent = client.create_run(eid, run_name="sweep").info.run_id
    client.log_param(parent, "sweep", "1")
    client.set_terminated(parent)
    return uri


def test_mlflow_runs_give_arms_from_params_values_last_and_best_and_the_verdict(
    mlruns: str, capsys: pytest.CaptureFixture[str]
) -> None:
    last = read_results("mlflow:sgd-vs-adam", tracking_uri=mlruns, metric="val_acc")
    assert last.arms == ["lr=0.1,opt=adam", "lr=0.1,opt=sgd"]
    assert {(r.arm.split("opt=")[1], r.seed): r.value for r in last.rows} == LAST
    assert last.value == "value: the last logged value of 'val_acc'"
    assert last.skipped == (
        "1 run(s) without 'val_acc' left out",
        "1 run(s) not finished (FAILED) left out",
    )
    best = read_results(
        "mlflow:sgd-vs-adam", tracking_uri=mlruns, metric="val_acc", value="best",
        arm_params=["opt"],
    )  # fmt: skip
    assert best.arms == ["opt=adam", "opt=sgd"] and rows(best) == BEST
    assert best.value == "value: the best (highest) logged value of 'val_acc'"
    code, out, err = cli(
        "analyze", "mlflow:sgd-vs-adam", "--tracking-uri", mlruns, "--baseline", "lr=0.1,opt=sgd",
        "--metric", "val_acc", "--format", "json", capsys=capsys,
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    c = doc["comparisons"][0]
    assert c["arm"] == "lr=0.1,opt=adam" and c["n_pairs"] == 5
    diffs = [LAST["adam", s] - LAST["sgd", s] for s in SEEDS]
    assert c["effect"] == pytest.approx(sum(diffs) / 5)
    # five seeds, all better: the exact permutation test cannot go below 2/2^5 = 0.0625
    assert c["p"] == 2 / 32 and c["p_t"] < 1e-5
    assert c["verdict"] == "inconclusive" and c["reason"].startswith("adjusted p = 0.062 ≥ 0.05")
    imported = doc["experiment"]["imported"]
    assert imported["source"] == f"mlflow:sgd-vs-adam ({mlruns})"
    assert imported["baseline"] == "lr=0.1,opt=sgd" and imported["skipped"] == list(last.skipped)
    # by the experiment's id, the best values
    eid = _experiment_id(mlruns)
    doc_best = analyze_results(
        f"mlflow:{eid}", "opt=sgd", tracking_uri=mlruns, metric="val_acc", value="best",
        arm_params=["opt"],
    )  # fmt: skip
    assert doc_best.arms["baseline"].values == [BEST["sgd", s] for s in SEEDS]
    assert "the best (highest) logged value" in doc_best.experiment.imported["value"]  # type: ignore[index]


def _experiment_id(uri: str) -> str:
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(tracking_uri=uri).get_experiment_by_name("sgd-vs-adam")
    assert exp is not None
    return str(exp.experiment_id)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["mlflow:nope", "--baseline", "x", "--metric", "val_acc"],
         "no experiment named 'nope' or with that id; experiments: Default, sgd-vs-adam"),
        (["mlflow:sgd-vs-adam", "--baseline", "sgd", "--metric", "val_acc"],
         "no arm 'sgd' to be the baseline; --baseline is one of lr=0.1,opt=adam, lr=0.1,opt=sgd"),
        (["mlflow:sgd-vs-adam", "--baseline", "x", "--metric", "val_acc", "--seed-param", "rng"],
         "no param 'rng' (its params: lr, opt, seed); name the seed's param with --seed-param"),
        (["mlflow:sgd-vs-adam", "--baseline", "x", "--metric", "loss"],
         "no finished run logged the metric 'loss' (11 finished of 12 run(s)); --metric is one "
         "of val_acc"),
        (["mlflow:sgd-vs-adam", "--baseline", "x", "--metric", "val_acc", "--arm-param", "wd"],
         "no param 'wd' (--arm-param); its params: lr, opt, seed"),
    ],
)  # fmt: skip
def test_mlflow_mistakes_are_one_line(
    mlruns: str, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli("analyze", *args, "--tracking-uri", mlruns, capsys=capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: mlflow:") and message in err, err


@pytest.fixture
def tb_runs(tmp_path: Path) -> Path:
    """TensorBoard event files of the same runs, ROOT/opt=ARM/seed_N/."""
    pytest.importorskip("tensorboard")
    writer_module = pytest.importorskip("torch.utils.tensorboard")
    root = tmp_path / "runs"
    for opt in ("sgd", "adam"):
        for seed in SEEDS:
            w = writer_module.SummaryWriter(str(root / f"opt={opt}" / f"seed_{seed}"))
            for step, v in enumerate(history(opt, seed)):
                w.add_scalar("val/acc", v, step)
                w.add_scalar("train/loss", 1 - v, step)
            w.close()
    return root


def test_tensorboard_runs_give_the_same_rows_and_verdict_as_mlflow(
    tb_runs: Path, mlruns: str, capsys: pytest.CaptureFixture[str]
) -> None:
    last = read_results(tb_runs, metric="val/acc")
    assert last.arms == ["opt=adam", "opt=sgd"] and rows(last) == LAST
    best = read_results(tb_runs, kind="tensorboard", metric="val/acc", value="best")
    assert rows(best) == BEST
    code, out, err = cli(
        "analyze", str(tb_runs), "--from", "tensorboard", "--baseline", "opt=sgd", "--metric",
        "val/acc", "--value", "best", "--format", "json", capsys=capsys,
    )  # fmt: skip
    assert code == 0, err
    tb = json.loads(out)
    ml = analyze_results(
        "mlflow:sgd-vs-adam", "opt=sgd", tracking_uri=mlruns, metric="val_acc", value="best",
        arm_params=["opt"],
    ).to_dict()  # fmt: skip
    for key in ("comparisons", "arms", "settings"):
        assert tb[key] == ml[key], key
    assert tb["experiment"]["imported"]["value"] == (
        "value: the best (highest) logged value of 'val/acc'"
    )
    # a loss is minimized: its best is its lowest point
    low = read_results(tb_runs, metric="train/loss", value="best", direction="min")
    assert rows(low) == {k: 1 - v for k, v in BEST.items()}


def test_tensorboard_mistakes_are_one_line(
    tb_runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(
        "analyze", str(tb_runs), "--baseline", "opt=sgd", "--metric", "val/f1", capsys=capsys
    )
    assert code == 2 and err.count("\n") == 1
    assert "no run logged the scalar 'val/f1'; --metric is one of train/loss, val/acc" in err
    (tb_runs / "opt=sgd" / "run_a").mkdir()
    (tb_runs / "opt=sgd" / "run_a" / "events.out.tfevents.1.x").write_bytes(b"")
    code, _, err = cli(
        "analyze", str(tb_runs), "--baseline", "opt=sgd", "--metric", "val/acc", capsys=capsys
    )
    assert code == 2 and err.count("\n") == 1
    assert "folder opt=sgd/run_a: 'run_a' is not a seed (seed_N or N); the layout is " in err


def wandb_records() -> list[dict[str, object]]:
    """The runs as :func:`fairtrial.imports.wandb.record_of` gives them."""
    out: list[dict[str, object]] = [
        {
            "id": f"{opt}{seed}",
            "name": f"{opt}-{seed}",
            "state": "finished",
            # an older config keeps each value under "value"
            "config": {"opt": {"value": opt, "desc": None}, "lr": 0.1, "seed": seed,
                       "_wandb": {"cli_version": "0.16"}},
            "summary": {"val_acc": history(opt, seed)[-1]},
            "history": list(enumerate(history(opt, seed))),
        }
        for opt in ("sgd", "adam")
        for seed in SEEDS
    ]  # fmt: skip
    out.append({"id": "x", "name": "crashed", "state": "crashed", "config": {"seed": 7}})
    return out


def test_wandb_run_records_map_like_mlflow_runs(mlruns: str) -> None:
    records = wandb_records()
    last = results_of(records, source="wandb:me/proj", name="proj", metric="val_acc")
    assert last.arms == ["lr=0.1,opt=adam", "lr=0.1,opt=sgd"]
    ml = read_results("mlflow:sgd-vs-adam", tracking_uri=mlruns, metric="val_acc")
    assert {(r.arm, r.seed, r.value) for r in last.rows} == {
        (r.arm, r.seed, r.value) for r in ml.rows
    }
    assert last.skipped == ("1 run(s) not finished left out",)
    best = results_of(
        records, source="wandb:me/proj", name="proj", metric="val_acc", value="best",
        arm_params=["opt"],
    )  # fmt: skip
    assert rows(best) == BEST
    # a run that kept no history: its summary is its last value
    no_history = [{**r, "history": []} for r in records]
    kept = results_of(no_history, source="w", name="w", metric="val_acc", arm_params=["opt"])
    assert rows(kept) == LAST
    with pytest.raises(
        ImportedDataError, match=r"w, run sgd0 \(sgd-0\), param 'seed': 'zero' is not a seed"
    ):
        bad = [{**records[0], "config": {"seed": "zero"}}, *records[1:]]
        results_of(bad, source="w", name="w", metric="val_acc")


def test_wandb_without_the_package_names_its_extra(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # hidden: as if it were not installed
    code, _, err = cli("analyze", "wandb:me/proj", "--baseline", "a", "--metric", "acc",
                       capsys=capsys)  # fmt: skip
    assert code == 2 and err.count("\n") == 1
    assert "Reading W&B runs needs the 'wandb' package:" in err and "[wandb]" in err
