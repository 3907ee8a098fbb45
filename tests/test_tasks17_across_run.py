"""An experiment over several tasks, end to end: each task its own experiment, the claim
judged across them, every report format; and the spec's errors for `tasks`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fairtrial import api
from fairtrial.errors import SpecError
from fairtrial.ledger import Ledger
from fairtrial.spec import load_spec

pytest.importorskip("torch")

MULTI = """
[experiment]
name = "multi"
tasks = "suite:small-classification"
recipe = "mlp"
seeds = 3

[hypothesis]
smallest_effect = 0.005

[baseline]
epochs = 1
hidden = 32
norm = "none"

[arms.layernorm]
norm = "layer"

[arms.narrow]
hidden = 8

[tasks.breast_cancer]
epochs = 4
"""


def test_a_suite_of_four_tasks_end_to_end(tmp_path: Path) -> None:
    path = tmp_path / "multi.toml"
    path.write_text(MULTI)
    spec = load_spec(path)
    assert spec.tasks == ("digits", "breast_cancer", "iris", "wine")
    assert spec.suite == "small-classification"
    assert [c.name for c in spec.children] == [f"multi.{t}" for t in spec.tasks]
    # the per-task override reaches that task's arms only
    assert [c.arms["layernorm"].config["epochs"] for c in spec.children] == [1, 4, 1, 1]
    led = Ledger(tmp_path / "ledger.db")
    summary = api.run(path, led)
    assert summary.complete and summary.total == 4 * 3 * 3
    doc = api.analyze("multi", led)
    assert doc.tasks is not None and list(doc.tasks) == list(spec.tasks)
    assert doc.across is not None
    assert [c.arm for c in doc.across.comparisons] == ["layernorm", "narrow"]
    for c in doc.across.comparisons:
        per = {t.task: t for t in c.tasks}
        for task, sub in doc.tasks.items():
            one = sub.comparison(c.arm)
            assert (per[task].effect, per[task].verdict) == (one.effect, one.verdict)
        assert c.wins + c.ties + c.losses == 4
        assert c.wins == sum(t.verdict == "better" for t in c.tasks)
        # 4 tasks can never reach p < 0.05: the report says so and the verdict cannot be
        # better or worse
        assert c.wilcoxon is not None and c.wilcoxon["min_p"] == 0.125
        assert c.verdict in ("equivalent", "inconclusive")
    assert any("cannot go below p = 0.125" in n for n in doc.across.notes)
    # three arms: Friedman and every pair's Wilcoxon with Holm
    assert doc.across.friedman is not None and len(doc.across.pairwise) == 3
    assert doc.across.suite == "small-classification"
    assert "layernorm vs baseline on digits" in doc.verdicts
    # every format leads with the claims across tasks, then each task's own report
    from fairtrial.report import render_html, render_md, render_tex

    md = render_md(doc)
    assert md.index("Verdicts across tasks") < md.index("## Task digits") < md.index(
        "## Task wine")  # fmt: skip
    html = render_html(doc)
    assert "Verdicts across tasks" in html and html.count("<section>") == 4
    # the critical-difference diagram and the performance profile come before the tasks
    assert html.index("Average ranks") < html.index("Performance profile") < html.index(
        "<section>")  # fmt: skip
    tex = render_tex(doc)
    assert tex.count(r"\begin{table}") >= 4
    assert json.loads(doc.to_json())["across"]["tasks"] == list(spec.tasks)
    led.close()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ('tasks = "suite:small-classification"',
         'tasks = ["digits"]: an experiment over tasks needs at least 2'),
        ('tasks = "suite:small-classification"',
         'tasks = ["digits", "digits"]: names \'digits\' twice'),
        ('tasks = "suite:small-classification"',
         'tasks = "suite:nope": unknown task suite'),
        ("[tasks.breast_cancer]", "[tasks.mnist1d] : not one of the experiment's tasks"),
        ("epochs = 4", "[tasks.breast_cancer] dropout_rate: the baseline has no such key"),
        ('tasks = "suite:small-classification"',
         "[experiment] task: set either task (one) or tasks (several), not both"),
    ],
)  # fmt: skip
def test_task_spec_errors(tmp_path: Path, change: str, message: str) -> None:
    new = {
        "at least 2": 'tasks = ["digits"]',
        "twice": 'tasks = ["digits", "digits"]',
        "unknown task suite": 'tasks = "suite:nope"',
        "not one of": "[tasks.mnist1d]",
        "no such key": "dropout_rate = 4",
        "not both": 'tasks = ["digits", "breast_cancer"]\ntask = "digits"',
    }
    text = MULTI.replace(change, next(v for k, v in new.items() if k in message), 1)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert message.replace("] :", "]:") in str(err.value)


def test_each_tasks_experiment_is_a_plain_spec_a_bundle_can_rebuild(tmp_path: Path) -> None:
    from fairtrial.spec import parse_spec
    from fairtrial.tomlw import spec_toml

    path = tmp_path / "multi.toml"
    path.write_text(MULTI)
    spec = load_spec(path)
    for child in spec.children:
        rebuilt = parse_spec(spec_toml(child.normalized()))
        assert rebuilt.experiment_id == child.experiment_id and rebuilt.name == child.name
    assert spec.normalized()["children"] == {c.task: c.experiment_id for c in spec.children}
