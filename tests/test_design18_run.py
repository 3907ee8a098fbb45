"""Factorial designs end to end: real trials of a recipe with planted effects, the spec's
design arms, the estimates against the truth, and every report format."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fairtrial.analysis.document import analyze
from fairtrial.backends import InlineBackend
from fairtrial.errors import SpecError
from fairtrial.ledger import Ledger
from fairtrial.report import render_md, render_tex, render_text
from fairtrial.report.html import render_html
from fairtrial.runner import run_experiment
from fairtrial.spec import load_spec

SPEC = """
[experiment]
name = "{name}"
task = "digits"
recipe = "design18:planted"
seeds = {seeds}

[hypothesis]
smallest_effect = 0.02

[baseline]
a = 0
b = 0
c = 0
{more_base}

[arms.proposed]
a = 1
b = 1
c = 1
{more_arm}

[ablations]
{ablations}
"""


def spec_text(
    name: str = "planted",
    seeds: int = 8,
    ablations: str = 'factorial = "proposed"',
    more_base: str = "",
    more_arm: str = "",
) -> str:
    return SPEC.format(
        name=name, seeds=seeds, ablations=ablations, more_base=more_base, more_arm=more_arm
    )


def error(write_spec: Callable[..., Path], body: str) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(body))
    msg = str(info.value)
    assert "\n" not in msg, "errors are one line"
    return msg


def test_factorial_recovers_planted_effects(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    # leave-one-out too: its arms are combinations of the design, run once, not twice
    spec = load_spec(
        write_spec(spec_text(ablations='factorial = "proposed"\nleave_one_out = "proposed"'))
    )
    kinds = [a.kind for a in spec.arms.values()]
    assert len(spec.arms) == 8, "2^3 combinations, the baseline and the arm among them"
    assert kinds.count("ablation") == 3 and kinds.count("design") == 3
    assert sorted(a for a in spec.arms if "." in a) == ["proposed.A", "proposed.B", "proposed.C"]
    led = Ledger(tmp_path / "ledger.db")
    summary = run_experiment(spec, led, InlineBackend(), show_progress=False)
    assert summary.ran == 8 * 8
    doc = analyze(led, led.experiment(spec.experiment_id))
    d = doc.design
    assert d is not None and d.kind == "factorial" and len(d.runs) == 8
    assert d.factors == {"A": "a", "B": "b", "C": "c"}
    assert {r["arm"] for r in d.runs} == set(spec.arms)
    assert d.n_seeds == 8 and d.dropped_seeds == 0
    effects = {e.term: e for e in d.effects}
    # the truth (Box-Hunter-Hunter effects of 0.6 + .10a + .05b + .04ab): A .12, B .07, AB .02
    # (an accuracy on 360 test examples moves in steps of 1/360: allow one step either side)
    step = 1 / 360
    for term, truth in (("A", 0.12), ("B", 0.07), ("AB", 0.02), ("C", 0.0)):
        e = effects[term]
        assert e.interval is not None
        assert e.interval[0] - step <= truth <= e.interval[1] + step, (term, e)
    assert effects["A"].verdict == "better" and effects["B"].verdict == "better"
    assert effects["AB"].verdict == "better", "the planted interaction is flagged"
    assert effects["C"].verdict == "equivalent", "a component without effect, shown so by TOST"
    assert effects["AC"].verdict in ("equivalent", "inconclusive")
    assert [e.term for e in d.effects][:2] == ["A", "B"], "sorted by the size of the effect"
    assert d.pooled is not None  # the 3-factor interaction ABC, pooled
    # every format shows it; HTML draws the plots
    text = str(render_md(doc))
    assert "Which components matter" in text and "| AB |" in text
    assert "leave-one-out ablation measures what a component adds" in text
    html = render_html(doc)
    assert html.count("<svg") >= 3 and "Which components matter" in html
    assert "Which components matter" in render_tex(doc)
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(render_text(doc))
    assert "Which components matter" in console.export_text()
    # the method is part of the frozen plan, and of the settings in words
    assert doc.method["design"]["kind"] == "factorial"
    assert "full factorial" in doc.settings["design"]
    led.close()


def test_fractional_design_is_half_the_runs_with_its_aliasing(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    body = spec_text(
        name="planted-frac",
        seeds=3,
        ablations='fractional = "proposed"',
        more_base="d = 0\ne = 0",
        more_arm="d = 1\ne = 1",
    )
    spec = load_spec(write_spec(body))
    # 2^(5-1): 16 of the 32 combinations; the principal fraction (I = +ABCDE) has the arm with
    # every component but not the baseline, which runs as the reference of every comparison
    assert len(spec.arms) == 17
    led = Ledger(tmp_path / "ledger.db")
    run_experiment(spec, led, InlineBackend(), show_progress=False)
    d = analyze(led, led.experiment(spec.experiment_id)).design
    assert d is not None and d.kind == "fractional" and d.resolution == 5
    assert d.generators == ["E=ABCD"] and d.defining_relation == ["ABCDE"]
    assert "resolution V" in d.name
    effects = {e.term: e for e in d.effects}
    assert effects["A"].aliases == ["BCDE"]
    a = effects["A"]
    assert a.interval is not None and a.interval[0] - 1 / 360 <= 0.12 <= a.interval[1] + 1 / 360
    assert d.aliasing, "a fraction lists each term's alias chain"
    led.close()


def test_design_spec_errors(write_spec: Callable[..., Path]) -> None:
    msg = error(write_spec, spec_text(ablations='factorial = "nope"'))
    assert '[ablations] factorial = "nope": no such arm; valid: proposed' in msg
    msg = error(write_spec, spec_text(ablations='factorial = "proposed"\nfractional = "proposed"'))
    assert "set one of 'factorial' or 'fractional', not both" in msg
    msg = error(write_spec, spec_text(ablations='factorial = "proposed"\nresolution = 4'))
    assert "only applies to fractional = ARM" in msg
    msg = error(write_spec, spec_text(ablations='fractional = "proposed"\nresolution = 7'))
    assert "resolution" in msg and "3, 4 or 5" in msg
    msg = error(write_spec, spec_text(ablations='factorial = "proposed"\ninteractions = 4'))
    assert "interactions = 4: arm 'proposed' has 3 components: at most 3" in msg
    msg = error(write_spec, spec_text(ablations="interactions = 2"))
    assert "only applies to a design" in msg
    one = (
        SPEC.format(name="x", seeds=3, ablations='factorial = "solo"', more_base="", more_arm="")
        + "\n[arms.solo]\na = 1\n"
    )
    msg = error(write_spec, one)
    assert "arm 'solo' has 1 component; a factorial design needs at least 2" in msg
    clash = spec_text() + '\n[arms."proposed.A"]\nb = 1\n'
    msg = error(write_spec, clash)
    assert "is named 'proposed.AB'" in msg or "is named 'proposed.A'" in msg or "rename" in msg
