"""The typed result model: JSON round trips, old and new documents, the documented schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fairtrial.analysis import Hypothesis, Options, analyze_scores
from fairtrial.results import (
    SCHEMA_VERSION,
    Ablation,
    Analysis,
    ArmSummary,
    Comparison,
    ShapeError,
    schema_markdown,
)

ROOT = Path(__file__).resolve().parent.parent
ARMS = {
    "arms": [
        {"name": "baseline", "kind": "baseline", "components": {}},
        {"name": "both", "kind": "arm", "components": {"a": 1, "b": 1}},
        {"name": "both-no-a", "kind": "ablation", "components": {"b": 1}},
    ],
    "ablations": [{"arm": "both", "removed": "a", "as": "both-no-a"}],
}


def test_the_documented_schema_is_the_code() -> None:
    """docs/results-schema.md is generated from the dataclasses (python -m fairtrial.results)."""
    assert (ROOT / "docs" / "results-schema.md").read_text() == schema_markdown()


def test_a_document_round_trips_key_for_key() -> None:
    scores = {
        "baseline": {s: 0.9 + s / 100 for s in range(6)},
        "both": {s: 0.92 + s / 100 + (s % 2) / 1000 for s in range(6)},
        "both-no-a": {s: 0.91 + s / 100 for s in range(6)},
    }
    comps, abls, inters = analyze_scores(
        scores, ARMS, "max", Hypothesis(smallest_effect=0.001), Options(n_resamples=500)
    )
    doc = Analysis(comparisons=comps, ablations=abls, interactions=inters)
    data = json.loads(doc.to_json())
    assert data["schema_version"] == SCHEMA_VERSION
    again = Analysis.from_dict(data)
    assert again == doc and again.to_dict() == data
    # an ablation carries what was removed; an arm's comparison has no such keys
    assert "removed" in data["ablations"][0] and "removed" not in data["comparisons"][0]
    assert isinstance(again.ablations[0], Ablation) and again.ablations[0].removed == "a"
    assert again.comparison("both").verdict == comps[0].verdict
    with pytest.raises(KeyError, match="there are: both vs baseline, both vs both-no-a"):
        again.comparison("nope")


def test_older_and_newer_documents_are_read_and_kept() -> None:
    old = {"arms": {"b": {"n": 2, "seeds": [0, 1], "values": [0.5, 0.6]}}, "comparisons": []}
    doc = Analysis.from_dict(old)
    assert doc.schema_version == 1 and doc.arms["b"].scores == {0: 0.5, 1: 0.6}
    newer = {
        "schema_version": 9,
        "across_tasks": {"verdict": "better"},
        "comparisons": [{"arm": "x", "against": "baseline", "verdict": "better", "ranks": [1]}],
    }
    doc = Analysis.from_dict(newer)
    out = doc.to_dict()
    assert out["across_tasks"] == {"verdict": "better"}
    assert out["comparisons"][0]["ranks"] == [1] and doc.comparisons[0].verdict == "better"


def test_a_document_of_the_wrong_shape_names_the_key() -> None:
    with pytest.raises(ShapeError, match=r"arms\.b\.failures: expected a list, got int"):
        Analysis.from_dict({"arms": {"b": {"failures": 3}}})
    with pytest.raises(ShapeError, match="comparisons: expected a list"):
        Analysis.from_dict({"comparisons": {"a": 1}})


def test_records_are_frozen() -> None:
    c = Comparison(arm="a", against="baseline")
    with pytest.raises(AttributeError):
        c.verdict = "better"  # type: ignore[misc]
    assert c.replace(verdict="better").verdict == "better" and c.verdict is None
    assert ArmSummary().compute.figures is None


def test_an_analysis_shows_itself_in_a_notebook_and_a_terminal() -> None:
    from rich.console import Console

    scores = {
        "baseline": {s: 0.9 + s / 100 for s in range(6)},
        "both": {s: 0.95 + s / 100 for s in range(6)},
        "both-no-a": {s: 0.91 + s / 100 for s in range(6)},
    }
    comps, abls, inters = analyze_scores(
        scores, ARMS, "max", Hypothesis(smallest_effect=0.001), Options(n_resamples=500)
    )
    arms = {
        a["name"]: ArmSummary(
            n=6, seeds=list(scores[a["name"]]), values=list(scores[a["name"]].values())
        )
        for a in ARMS["arms"]
    }
    doc = Analysis(
        arms=arms,
        comparisons=comps,
        ablations=abls,
        interactions=inters,
        settings={"confidence": 0.95},
    )
    html = doc._repr_html_()
    assert html.startswith("<div class='fairtrial-report'>") and "<html" not in html
    assert "▲ better" in html and ".fairtrial-report table{" in html
    console = Console(width=140, record=True)
    console.print(doc)
    text = console.export_text()
    assert "Verdicts" in text and "both-no-a" in text
    assert "both vs baseline: better" in repr(doc)


def test_the_registry_re_analyses_a_bundle_as_the_report_does(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The registry's analysis of an upload and the uploader's report come from the same
    builder: same verdicts, statistics and settings; only what a store knows is taken as sent."""
    pytest.importorskip("fastapi")
    from bundle_kit import base_bundle
    from fairtrial.bundle import read_bundle
    from fairtrial.server.ingest import ingest

    path = base_bundle(tmp_path_factory)
    with read_bundle(path) as b:
        sent = b.analysis()
    stored = Analysis.from_dict(
        json.loads(ingest(path, path.read_bytes(), now=0.0).experiment["doc_json"])
    )
    assert stored.judged and stored.judged == sent.judged
    assert stored.arms == sent.arms and stored.settings == sent.settings
    assert stored.experiment.replace(extra={}) == sent.experiment.replace(extra={})
    assert stored.extra["registry"]["verdict_differences"] == []


def test_one_vocabulary_of_trial_statuses() -> None:
    from typing import get_args

    from fairtrial.record import ENDED, LOST, TRIAL_STATUSES, OutcomeStatus

    assert set(get_args(OutcomeStatus)) <= set(TRIAL_STATUSES)
    assert set(LOST) < set(ENDED) <= set(get_args(OutcomeStatus))
    assert {"pending", "running"} == set(TRIAL_STATUSES) - set(get_args(OutcomeStatus))
