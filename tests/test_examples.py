"""The flagship demo and the shipped examples run end to end, as a user runs them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fairtrial.claims import CostVerdict
from test_cli import ft

ROOT = Path(__file__).resolve().parent.parent


#: keys the result document gained since the stored copy was made
ADDED_KEYS = {"schema_version", "settings.costs"} | {
    # each cost figure paired by seed (figures are keyed by name, like arms: data, not schema)
    f"{part}[].costs{rest}"
    for part in ("comparisons", "ablations")
    for rest in ("", ".*", *(f".*.{f}" for f in CostVerdict.__dataclass_fields__ if f != "extra"))
}
#: the parts of the stored copy (a run on worker processes) that a run without workers has not
WORKER_KEYS = "compute.worker_startup"


def keys_of(doc: object, path: str = "") -> list[str]:
    """Every key path of a JSON document (list items merged as ``[]``), values aside."""
    out: set[str] = set()
    if isinstance(doc, dict):
        for k, v in doc.items():
            # arms and figures are keyed by name: their keys are data, not schema
            named = (
                "arms", "figures", "majority_vote_accuracy", "inputs", "predictions.seeds",
                "costs",
            )  # fmt: skip
            key = "*" if path.endswith(named) else k
            out.add(f"{path}.{key}".lstrip("."))
            out.update(keys_of(v, f"{path}.{key}".lstrip(".")))
    elif isinstance(doc, list):
        for v in doc:
            out.update(keys_of(v, f"{path}[]"))
    return sorted(out)


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = ft("demo", cwd=tmp_path)
    assert "ran 40 trials" in out.stderr and "40 finished, 0 failed" in out.stderr
    # the default backend trains the demo as two batched models (norm on, norm off)
    assert "backend auto: vectorized, because recipe 'fairtrial.recipes.mlp:train'" in out.stderr
    assert "vectorized: 40 trials as 2 group(s) of 20, 20\n" in out.stderr
    assert "Verdicts" in out.stdout and "proposed-no-warmup_steps" in out.stdout
    assert (tmp_path / ".fairtrial" / "ledger.db").exists()
    doc = json.loads(
        ft("report", "digits-layernorm-warmup", "--format", "json", cwd=tmp_path).stdout
    )
    assert {a: doc["arms"][a]["n"] for a in doc["arms"]} == {
        "baseline": 10, "proposed": 10, "proposed-no-norm": 10, "proposed-no-warmup_steps": 10,
    }  # fmt: skip
    (vs_base,) = doc["comparisons"]
    assert vs_base["n_pairs"] == 10 and vs_base["wins"] >= 9 and vs_base["interval"][0] > 0
    # the flagship result: layer norm carries the gain, warmup adds nothing measurable
    assert vs_base["verdict"] == "better"
    verdicts = {a["removed"]: a["verdict"] for a in doc["ablations"]}
    assert verdicts == {"norm": "better", "warmup_steps": "equivalent"}
    # built-in torch recipes count their FLOPs, batched or not
    flops = doc["arms"]["baseline"]["compute"]["figures"]["flops"]
    assert flops["mean"] > 0 and flops["method"].startswith("matmul/conv FLOPs, counted on one")
    removed = {a["removed"]: a for a in doc["ablations"]}
    assert set(removed) == {"norm", "warmup_steps"}
    # layer norm carries the gain: removing it costs more than removing warmup
    assert removed["norm"]["effect"] > removed["warmup_steps"]["effect"]
    # the JSON is a stable interface: the keys of the demo's report are those of the stored copy
    # (made before the result model was typed), plus the ones added since
    stored = json.loads((ROOT / "tests" / "data" / "demo_report_keys.json").read_text())
    expected = {k for k in stored if not k.startswith(WORKER_KEYS + ".")} | ADDED_KEYS
    assert keys_of(doc) == sorted(expected)
    # the Python API gives the same analysis, and shows itself in a notebook
    import fairtrial

    a = fairtrial.analyze("digits-layernorm-warmup", tmp_path / ".fairtrial" / "ledger.db")
    assert a.comparisons[0].verdict == "better" and a.to_dict()["arms"] == doc["arms"]
    html = a._repr_html_()
    assert "fairtrial-report" in html and "proposed-no-warmup_steps" in html and "▲ better" in html
    # a second demo resumes: nothing to run, same report
    again = ft("demo", cwd=tmp_path)
    assert "ran 0 trials" in again.stderr and "40 were already in the store" in again.stderr


@pytest.mark.parametrize("example", ["custom", "command", "batched"])
def test_examples_run(example: str, tmp_path: Path) -> None:
    folder = tmp_path / example
    shutil.copytree(ROOT / "examples" / example, folder)
    out = ft("run", str(folder / "spec.toml"), "--no-report", cwd=tmp_path)
    assert "0 failed, 0 diverged" in out.stderr
    if example == "batched":  # both arms, every seed: one model
        assert "vectorized: 16 trials as 1 group(s) of 16\n" in out.stderr
    doc = json.loads(
        ft("report", str(folder / "spec.toml"), "--format", "json", cwd=tmp_path).stdout
    )
    assert all(arm["n"] == doc["experiment"]["seeds"] for arm in doc["arms"].values())
    assert all(c["effect"] > 0 for c in doc["comparisons"])


def test_tuning_example_runs(tmp_path: Path) -> None:
    """The README's fair-tuning example: better at the spec values, not after equal tuning."""
    pytest.importorskip("optuna")
    folder = tmp_path / "tuning"
    shutil.copytree(ROOT / "examples" / "tuning", folder)
    out = ft("run", str(folder / "spec.toml"), "--also-untuned", "--no-report", cwd=tmp_path)
    assert "tuning: ran 24 tuning trials" in out.stderr and "0 failed, 0 diverged" in out.stderr
    doc = json.loads(
        ft("report", str(folder / "spec.toml"), "--format", "json", cwd=tmp_path).stdout
    )
    (untuned,) = doc["tuning"]["untuned"]
    assert untuned["verdict"] == "better"
    assert doc["comparisons"][0]["verdict"] in ("equivalent", "inconclusive")
    assert doc["tuning"]["arms"]["layernorm"]["starting_points"] == {"lr": 0.1}
