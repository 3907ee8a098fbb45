"""The tuning part of the report, in every format: untuned against tuned verdicts, each arm's
tuning, the tuning curves and hyperparameter importance; absent tuning shows nothing of it."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from rich.console import Console

from fairtrial.analysis import Hypothesis, Options, analyze_scores
from fairtrial.report import fmt, render_html, render_md, render_tex, render_text
from fairtrial.report import html as report_html
from fairtrial.results import (
    Analysis,
    ArmCompute,
    ArmSummary,
    Comparison,
    ExperimentSummary,
    Figure,
    Tuning,
)
from fairtrial.stats import tuning_curve
from fairtrial.tuning.records import ArmTuning, Importance, TuningCurve, TuningTrial

ARMS = {
    "arms": [
        {"name": "baseline", "kind": "baseline", "components": {}},
        {"name": "proposed", "kind": "arm", "components": {"model.lr": 0.1}},
    ],
    "ablations": [],
}
HOSTILE = "opt.<b>&_%{x}"  # a key that every format must escape
SCORES = {
    "baseline": [0.7, 0.85, 0.8, 0.9, 0.88, 0.6],
    "proposed": [0.75, 0.91, 0.82, 0.89, 0.5],  # and one configuration failed
}


def _comparisons(offset: float) -> list[Comparison]:
    """proposed against baseline over 8 paired seeds, ``offset`` apart on average."""
    scores = {
        "baseline": {s: 0.80 + s / 1000 for s in range(8)},
        "proposed": {s: 0.80 + offset + s / 1000 + (s % 3) / 2000 for s in range(8)},
    }
    comps, _, _ = analyze_scores(
        scores, ARMS, "max", Hypothesis(smallest_effect=0.05), Options(n_resamples=200)
    )
    return comps


def _arm(name: str, failed: int, importance: Importance | None) -> ArmTuning:
    scores = SCORES[name]
    trials = [
        TuningTrial(
            index=i,
            params={"model.lr": 10.0 ** -(i % 4), "model.depth": 2 + i % 3},
            status="finished",
            score=s,
            seeds=1,
        )
        for i, s in enumerate(scores)
    ]
    trials += [
        TuningTrial(index=len(scores) + j, params={"model.lr": 1.0}, status="failed", error="nan")
        for j in range(failed)
    ]
    best = max((t for t in trials if t.score is not None), key=lambda t: t.score or 0.0)
    c = tuning_curve(scores, 6, rng=np.random.default_rng(3), n_boot=400, failed=failed)
    curve = TuningCurve(
        k=list(c.k),
        expected=list(c.expected),
        without_replacement=list(c.without_replacement),
        low=list(c.low),
        high=list(c.high),
        interval_method=c.interval_method,
        failed_as=c.failed_as,
    )
    return ArmTuning(
        arm=name,
        space={"model.lr": {"low": 1e-4, "high": 1.0, "log": True}, "model.depth": [2, 3, 4]},
        trials=trials,
        best=best,
        config=dict(best.params),
        starting_points={"model.lr": 0.1} if name == "proposed" else {},
        curve=curve,
        importance=importance,
        compute={"n": len(trials), "figures": {"wall_time": {"total": 12.5, "unit": "s"}}},
    )


def _doc(**tuning_changes: object) -> Analysis:
    tuned = _comparisons(0.0)
    tuning = Tuning(
        budget=6,
        sampler="TPE",
        objective="val_accuracy",
        direction="max",
        seeds=1,
        root_seed=7,
        arms={
            "baseline": _arm(
                "baseline",
                0,
                Importance(evaluator="fANOVA", values={"model.lr": 0.7, HOSTILE: 0.3}),
            ),
            "proposed": _arm("proposed", 1, None),
        },
        untuned=_comparisons(0.1),
        compute={
            "tuning": {"wall_time_s": 25.0, "trials": 12},
            "evaluation": {"wall_time_s": 10.0, "trials": 16},
        },
        text="Each arm tried 6 configurations asked of one TPE sampler seeded 7.",
    ).replace(**tuning_changes)
    arms = {
        n: ArmSummary(
            n=8,
            seeds=list(range(8)),
            values=[0.8 + s / 1000 for s in range(8)],
            compute=ArmCompute(figures={"wall_time": Figure(mean=0.6, total=5.0, unit="s")}),
        )
        for n in ("baseline", "proposed")
    }
    return Analysis(
        experiment=ExperimentSummary(
            id="e1", name="demo", task="digits", metric="accuracy", seeds=8, trials=16
        ),
        arms=arms,
        comparisons=tuned,
        settings={"confidence": 0.95, "pairing": "by seed"},
        tuning=tuning,
    )


def _text(doc: Analysis) -> str:
    console = Console(width=220, record=True, color_system=None)
    console.print(render_text(doc))
    return console.export_text()


def test_the_verdicts_are_what_the_report_shows() -> None:
    doc = _doc()
    assert doc.tuning is not None
    assert [c.verdict for c in doc.tuning.untuned] == ["better"]
    assert [c.verdict for c in doc.comparisons] == ["equivalent"]


def test_a_tuned_document_round_trips() -> None:
    doc = _doc()
    again = Analysis.from_dict(doc.to_dict())
    assert again == doc and again.tuning == doc.tuning
    assert Analysis.from_json(doc.to_json()) == doc
    data = json.loads(doc.to_json())
    assert data["tuning"]["arms"]["proposed"]["best"]["index"] == 1
    assert data["tuning"]["untuned"][0]["verdict"] == "better"


def test_the_terminal_report() -> None:
    doc = _doc()
    out = _text(doc)
    line = "proposed: better untuned, equivalent after equal tuning: the gain came from tuning"
    assert line in out
    for seen in (
        "Untuned vs tuned",
        "▲ better",
        "≈ equivalent",
        "6 finished, 0 failed of 6",
        "5 finished, 1 failed of 6",
        "model.lr=0.001, model.depth=2",
        "model.lr=0.1, model.depth=3",
        "proposed: model.lr = 0.1 in the spec was only a starting point: tuning chose 0.1",
        "tuning took 2.5× the evaluation",
        "12.5 s",
        "importance by fANOVA",
        "proposed: hyperparameter importance not computed",
        "tuning: Each arm tried 6 configurations asked of one TPE sampler seeded 7.",
    ):
        assert seen in out, seen
    # after the verdicts, before the arms; the procedure in the methods
    assert out.index("Verdicts") < out.index("Untuned vs tuned") < out.index("Arms: test")
    assert out.index("Methods:") < out.index("tuning: Each arm tried")
    curve = doc.tuning.arms["baseline"].curve  # type: ignore[union-attr]
    assert curve is not None
    assert f"{curve.expected[3]:.4f} [{curve.low[3]:.4f}, {curve.high[3]:.4f}]" in out


def test_the_markdown_report() -> None:
    doc = _doc()
    md = render_md(doc)
    u, t = doc.tuning.untuned[0], doc.comparisons[0]  # type: ignore[union-attr]
    assert (
        f"| proposed | baseline | ▲ better | {fmt.signed(u.effect)} "
        f"{fmt.interval(u.interval, sign=True)} | ≈ equivalent | {fmt.signed(t.effect)} "
        f"{fmt.interval(t.interval, sign=True)} |"
    ) in md.splitlines()
    rows = md.splitlines()
    assert (
        "| baseline | 6 finished, 0 failed of 6 | #3 | model.lr=0.001, model.depth=2 | 0.9000 "
        "| 12.5 s | 5 s |"
    ) in rows
    assert (
        "| proposed | 5 finished, 1 failed of 6 | #1 | model.lr=0.1, model.depth=3 | 0.9100 "
        "| 12.5 s | 5 s |"
    ) in rows
    # the curve at k = 1, 2, 4 and the budget, with the interval
    arms = doc.tuning.arms  # type: ignore[union-attr]
    for k in (1, 2, 4, 6):
        cells = [
            f"{c.expected[k - 1]:.4f} [{c.low[k - 1]:.4f}, {c.high[k - 1]:.4f}]"
            for c in (arms["baseline"].curve, arms["proposed"].curve)
            if c is not None
        ]
        assert f"| {k} | {cells[0]} | {cells[1]} |" in rows
    assert "| 3 |" not in md
    assert "| model.lr | 0.700 |" in rows and "| opt.<b>&_%{x} | 0.300 |" in rows
    assert (
        "- proposed: better untuned, equivalent after equal tuning: the gain came from tuning"
        in rows
    )
    assert md.index("### Verdicts") < md.index("### Untuned vs tuned") < md.index("### Arms")
    assert "- tuning: Each arm tried 6 configurations" in md.split("### Methods")[1]
    assert "drawn as the lowest finished score (0.5)" in md


def test_the_html_report_and_its_figure() -> None:
    doc = _doc()
    page = render_html(doc)
    assert "<h2>Untuned vs tuned</h2>" in page and "<h2>Tuning</h2>" in page
    assert "the gain came from tuning" in page and "model.lr=0.001, model.depth=2" in page
    assert "opt.&lt;b&gt;&amp;_%{x}" in page and HOSTILE not in page
    assert "<li>tuning: Each arm tried 6 configurations" in page
    fig = report_html.figures(doc)["tuning"]
    assert fig in page
    root = ET.fromstring(fig)
    ns = "{http://www.w3.org/2000/svg}"
    paths = root.findall(f"{ns}polyline")
    bands = root.findall(f"{ns}polygon")
    assert len(paths) == 2 and len(bands) == 2  # a curve and a band per arm
    for p in paths:
        assert len(p.attrib["points"].split()) == 6  # k = 1..budget
    for b in bands:
        assert len(b.attrib["points"].split()) == 12  # the upper edge, then the lower
    labels = [t.text for t in root.iter(f"{ns}text")]
    assert "baseline" in labels and "proposed" in labels
    assert any("expected best val_accuracy" in (t or "") for t in labels)
    # the band of each arm holds its curve: upper edge above, lower below (SVG y grows down)
    for p, b in zip(paths, bands, strict=True):
        ys = [float(pt.split(",")[1]) for pt in p.attrib["points"].split()]
        edge = [float(pt.split(",")[1]) for pt in b.attrib["points"].split()]
        up, down = edge[:6], edge[6:][::-1]
        assert all(u <= y + 0.11 and y <= d + 0.11 for u, y, d in zip(up, ys, down, strict=True))
    assert doc.replace(tuning=None)._repr_html_().count("<svg") < doc._repr_html_().count("<svg")


def _check_tex(tex: str) -> None:
    """Balanced braces (escaped ones aside) and environments; every row has its columns."""
    plain = tex.replace(r"\{", "").replace(r"\}", "")
    depth = 0
    for ch in plain:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0
    stack: list[str] = []
    for kind, env in re.findall(r"\\(begin|end)\{(\w+)\}", tex):
        if kind == "begin":
            stack.append(env)
        else:
            assert stack.pop() == env
    assert stack == []
    for spec, body in re.findall(r"\\begin\{tabular\}\{(\w+)\}(.*?)\\end\{tabular\}", tex, re.S):
        for row in body.split(r"\\")[:-1]:
            row = re.sub(r"\\(toprule|midrule|bottomrule)", "", row).strip()
            if row:
                assert len(re.findall(r"(?<!\\)&", row)) == len(spec) - 1, row
    assert plain.count("$") % 2 == 0


def test_the_latex_report() -> None:
    doc = _doc()
    tex = render_tex(doc)
    _check_tex(tex)
    assert tex.count(r"\begin{table}") == 5  # results, untuned vs tuned, tuning, curve, importance
    assert r"$\blacktriangle$ & " in tex and r"$\approx$ \\" in tex
    assert r"\#3 & model.lr=0.001, model.depth=2 & 0.9000" in tex
    assert r"opt.<b>\&\_\%\{x\} & 0.300" in tex
    assert "the gain came from tuning" in tex and "val\\_accuracy" in tex
    assert "Procedure: Each arm tried 6 configurations" in tex
    assert r"tuning took 2.5$\times$ the evaluation" in tex


def test_no_untuned_verdicts_show_the_note() -> None:
    note = "the arms' spec values were not run: untuned = false"
    doc = _doc(untuned=[], untuned_note=note, compute=None)
    assert note in _text(doc) and note in render_md(doc)
    assert "the arms&#x27; spec values were not run: untuned = false" in render_html(doc)
    tex = render_tex(doc)
    _check_tex(tex)
    assert "untuned = false" in tex and tex.count(r"\begin{table}") == 4
    assert "| arm | vs | untuned |" not in render_md(doc)


def test_missing_pieces_render_plainly() -> None:
    base = _doc()
    t = base.tuning
    assert t is not None
    bare = {
        n: a.replace(best=None, curve=None, importance=Importance(note="too few trials"))
        for n, a in t.arms.items()
    }
    doc = _doc(arms=bare, direction="min")
    md = render_md(doc)
    assert "| baseline | 6 finished, 0 failed of 6 | none finished | — | — |" in md
    assert "no configuration finished, so tuning chose no value" in md
    assert "Tuning curves" not in md and "missing: too few trials" in md
    assert "tuning" not in report_html.figures(doc)
    _check_tex(render_tex(doc))
    assert "importance by an unnamed evaluator: missing: too few trials" in _text(doc)


@pytest.mark.parametrize("render", ["text", "md", "html", "tex"])
def test_without_tuning_nothing_of_it_is_shown(render: str) -> None:
    doc = _doc().replace(tuning=None)
    assert Analysis.from_dict(doc.to_dict()) == doc and "tuning" not in doc.to_dict()
    out = {
        "text": _text,
        "md": render_md,
        "html": render_html,
        "tex": render_tex,
    }[render](doc)
    assert "tuning" not in out.lower() and "untuned" not in out.lower()
    assert "Verdicts" in out or "tabular" in out
