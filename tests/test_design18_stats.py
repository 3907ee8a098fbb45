"""Two-level factorial designs over an arm's components: the designs, their aliases, the effects
estimated paired by seed, and their figures.

Checked against textbook numbers (Box, Hunter & Hunter's pilot plant 2^3; Montgomery's
filtration-rate 2^4 and its 2^(4-1) half fraction), against the tabled fractions' defining
relations, and by simulation with fixed generators.
"""

from __future__ import annotations

import itertools
import json
import math
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np
import pytest

from fairtrial import stats as S
from fairtrial.report.design_svg import effects_forest_svg, interaction_svg, main_effects_svg
from fairtrial.stats.factorial import FRACTIONS, LETTERS

NS = "{http://www.w3.org/2000/svg}"


def _simulate(
    design: S.Design,
    effects: dict[str, float],
    n_seeds: int,
    *,
    noise: float,
    block: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Results (seeds × runs) with the given effects (Box-Hunter-Hunter convention: an effect is
    the change from off to on, so the model's coefficient is half of it), a per-seed offset and
    per-trial noise; also the same results without the per-seed offset."""
    rng = np.random.default_rng(seed)
    mean = 10.0 + sum(v / 2.0 * design.column(t) for t, v in effects.items())
    offsets = rng.normal(0.0, block, size=(n_seeds, 1))
    trial = rng.normal(0.0, noise, size=(n_seeds, design.n_runs))
    return mean + offsets + trial, mean + trial


# -- designs --------------------------------------------------------------------------------------
def test_full_factorial_is_in_standard_order_with_letters_that_skip_i() -> None:
    d = S.full_factorial(3)
    assert d.runs == (
        (-1, -1, -1),
        (1, -1, -1),
        (-1, 1, -1),
        (1, 1, -1),
        (-1, -1, 1),
        (1, -1, 1),
        (-1, 1, 1),
        (1, 1, 1),
    )
    assert d.name == "2^3 full factorial, 8 runs"
    assert d.resolution is None and d.defining_relation == () and d.generators == ()
    assert d.aliases("AB") == ()
    assert S.full_factorial(8).factors == tuple("ABCDEFGH")
    assert S.fractional_factorial(10).factors == tuple("ABCDEFGHJK")  # no I
    assert S.terms(3) == ("A", "B", "C", "AB", "AC", "BC", "ABC")
    assert S.terms(4, 2) == ("A", "B", "C", "D", "AB", "AC", "AD", "BC", "BD", "CD")
    assert S.term_indexes("CA") == (0, 2) and S.term_name((2, 0)) == "AC"
    assert S.term_indexes("J") == (8,) and S.term_name((8,)) == "J"
    assert S.estimable_terms(S.full_factorial(3)) == S.terms(3)


def test_the_half_fraction_of_five_factors_is_resolution_v_with_every_effect_clear() -> None:
    d = S.fractional_factorial(5, resolution=4)
    assert d.generators == ("E=ABCD",)
    assert d.defining_relation == ("ABCDE",)
    assert d.resolution == 5 and d.n_runs == 16
    assert d.name == "2^(5-1) fractional factorial, resolution V, 16 runs, generator E = ABCD"
    # Montgomery (2017), Example 8.2: A = BCDE, ..., AB = CDE, ...
    table = {c.term: c for c in d.alias_table(max_order=4)}
    assert [(t, c.aliases) for t, c in table.items()] == [
        (t, ("".join(sorted(set("ABCDE") - set(t))),)) for t in S.terms(5, 2)
    ]
    assert table["A"].aliases == ("BCDE",) and table["AB"].aliases == ("CDE",)
    assert d.aliases("E") == ("ABCD",) and d.aliases("ABCDE") == ()
    assert all(c.clear for c in table.values())
    truncated = d.alias_table()  # max_order 2: nothing of order <= 2 is aliased
    assert all(c.aliases == () and c.omitted == 1 and c.clear for c in truncated)
    assert S.estimable_terms(d, 2) == S.terms(5, 2)
    assert len(S.estimable_terms(d)) == 15


def test_a_quarter_fraction_of_six_factors_is_resolution_iv_with_its_textbook_aliases() -> None:
    d = S.fractional_factorial(6)
    assert d.generators == ("E=ABC", "F=BCD")
    assert d.defining_relation == ("ABCE", "ADEF", "BCDF")  # I = ABCE = BCDF = ADEF
    assert d.resolution == 4 and d.n_runs == 16
    assert d.name == (
        "2^(6-2) fractional factorial, resolution IV, 16 runs, generators E = ABC, F = BCD"
    )
    table = {c.term: c for c in d.alias_table()}
    assert all(table[f].clear and table[f].aliases == () for f in "ABCDEF")
    two_fi = {t: c.aliases for t, c in table.items() if len(t) == 2}
    assert two_fi == {
        "AB": ("CE",),
        "AC": ("BE",),
        "AD": ("EF",),
        "AE": ("BC", "DF"),
        "AF": ("DE",),
        "BC": ("AE", "DF"),
        "BD": ("CF",),
        "BE": ("AC",),
        "BF": ("CD",),
        "CD": ("BF",),
        "CE": ("AB",),
        "CF": ("BD",),
        "DE": ("AF",),
        "DF": ("AE", "BC"),
        "EF": ("AD",),
    }
    assert not any(table[t].clear for t in two_fi)
    assert d.aliases("AB") == ("CE", "ACDF", "BDEF")
    # one term per chain: the lowest-order, lexicographically first
    assert S.estimable_terms(d, 2) == (
        *"ABCDEF",
        *("AB", "AC", "AD", "AE", "AF", "BD", "BF"),
    )
    assert len(S.estimable_terms(d)) == d.n_runs - 1


#: the fewest runs of a tabled design that reaches resolution III, IV and V, for 3 to 11 factors
FEWEST_RUNS = {
    3: {3: 4, 4: 8, 5: 8},
    4: {3: 8, 4: 8, 5: 16},
    5: {3: 8, 4: 16, 5: 16},
    6: {3: 8, 4: 16, 5: 32},
    7: {3: 8, 4: 16, 5: 64},
    8: {3: 16, 4: 16, 5: 64},
    9: {3: 16, 4: 32, 5: 128},
    10: {3: 16, 4: 32, 5: 128},
    11: {3: 16, 4: 32, 5: 128},
}


@pytest.mark.parametrize("k", sorted(FEWEST_RUNS))
def test_the_tabled_designs_reach_their_resolution_with_the_fewest_runs(k: int) -> None:
    for resolution, runs in FEWEST_RUNS[k].items():
        d = S.fractional_factorial(k, resolution=resolution)
        assert d.n_runs == runs, (k, resolution, d.name)
        assert d.resolution is None or d.resolution >= resolution
        x = d.matrix()
        assert x.shape == (runs, k)
        assert np.array_equal(x.T @ x, runs * np.eye(k))  # orthogonal, balanced columns
        for g in d.generators:
            left, right = g.split("=")
            assert np.array_equal(d.column(left), d.column(right))
        # every word of the defining relation is the identity: its column is +1 in every run
        assert all(np.all(d.column(w) == 1.0) for w in d.defining_relation)
        assert len(d.defining_relation) == 2 ** len(d.generators) - 1
        assert len(set(map(tuple, x))) == runs  # no run twice
        if d.generators:
            assert d.resolution == min(len(w) for w in d.defining_relation)
            assert f"{runs} runs" in d.name and "fractional factorial" in d.name


def _wordlength_pattern(words: list[int], k: int) -> tuple[int, ...]:
    counts = [0] * (k + 1)
    for r in range(1, len(words) + 1):
        for combo in itertools.combinations(words, r):
            w = 0
            for c in combo:
                w ^= c
            counts[bin(w).count("1")] += 1
    return tuple(counts[3:])


def test_the_tabled_8_and_16_run_fractions_have_minimum_aberration() -> None:
    """Against every choice of generators (an independent computation of the word lengths)."""
    checked = 0
    for k, fractions in FRACTIONS.items():
        for gens in fractions:
            d = S.design_from_generators(k, gens)
            if d.n_runs > 16:
                continue
            p, base = len(gens), k - len(gens)
            tabled = [0] * (k + 1)
            for w in d.defining_relation:
                tabled[len(w)] += 1
            columns = [m for m in range(1, 2**base) if bin(m).count("1") >= 2]
            best = min(
                _wordlength_pattern([c | 1 << (base + j) for j, c in enumerate(choice)], k)
                for choice in itertools.combinations(columns, p)
            )
            assert tuple(tabled[3:]) == best, d.name
            checked += 1
    assert checked == 12


def test_design_inputs_are_checked() -> None:
    for call, name in [
        (lambda: S.full_factorial(0), "k"),
        (lambda: S.full_factorial(9), "k"),
        (lambda: S.full_factorial(True), "k"),
        (lambda: S.fractional_factorial(12), "k"),
        (lambda: S.fractional_factorial(5, resolution=2), "resolution"),
        (lambda: S.fractional_factorial(10, resolution=6), "resolution"),
        (lambda: S.design_from_generators(5, ["E=AB", "D=AC"]), "generator"),
        (lambda: S.design_from_generators(4, ["D=A"]), "generators"),
        (lambda: S.design_from_generators(4, ["D=ABE"]), "term"),
        (lambda: S.full_factorial(3).aliases("AI"), "term"),
        (lambda: S.full_factorial(3).aliases("AD"), "term"),
        (lambda: S.full_factorial(3).aliases("AA"), "term"),
        (lambda: S.full_factorial(3).alias_table(0), "max_order"),
        (lambda: S.terms(3, 0), "max_order"),
        (lambda: S.term_name([]), "indexes"),
    ]:
        with pytest.raises(ValueError, match=name):
            call()


# -- textbook effects -----------------------------------------------------------------------------
def test_the_pilot_plant_effects_of_box_hunter_and_hunter() -> None:
    """BHH (2005), ch. 5: the 2^3 pilot plant (T, C, K), yields in standard order; published
    effects T = 23, C = -5, K = 1.5, TC = 1.5, TK = 10, CK = 0, TCK = 0.5."""
    d = S.full_factorial(3)
    y = [60.0, 72.0, 54.0, 68.0, 52.0, 83.0, 45.0, 80.0]
    published = [23.0, -5.0, 1.5, 1.5, 10.0, 0.0, 0.5]
    assert np.allclose(S.effect_contrasts(d, [y], S.terms(3))[0], published)
    # two identical replicates (seeds): the estimates are the textbook's, with no spread
    a = S.estimate_effects(d, [y, y], max_order=3)
    assert [e.term for e in a.effects] == list(S.terms(3))
    assert np.allclose([e.estimate for e in a.effects], published)
    assert all(e.sd == 0.0 and e.low == e.high == e.estimate for e in a.effects)
    assert a.main_means[0] == (np.mean([60, 54, 52, 45]), np.mean([72, 68, 83, 80]))
    assert a.pair_means["AC"] == ((np.mean([60, 54]), np.mean([52, 45])), (70.0, 81.5))


def test_montgomerys_filtration_rate_effects_and_their_half_fraction() -> None:
    """Montgomery (2017), Example 6.2 (2^4, filtration rate) and Example 8.1 (its 2^(4-1)
    half fraction with D = ABC)."""
    full = S.full_factorial(4)
    y = [45, 71, 48, 65, 68, 60, 80, 65, 43, 100, 45, 104, 75, 86, 70, 96]
    published = {
        "A": 21.625,
        "B": 3.125,
        "C": 9.875,
        "D": 14.625,
        "AB": 0.125,
        "AC": -18.125,
        "AD": 16.625,
        "BC": 2.375,
        "BD": -0.375,
        "CD": -1.125,
        "ABC": 1.875,
        "ABD": 4.125,
        "ACD": -1.625,
        "BCD": -2.625,
        "ABCD": 1.375,
    }
    got = S.effect_contrasts(full, [y], list(published))[0]
    assert np.allclose(got, list(published.values()))
    half = S.fractional_factorial(4)
    assert half.generators == ("D=ABC",) and half.n_runs == 8
    # the runs (1), ad, bd, ab, cd, ac, bc, abcd of the full design's responses
    rows = {tuple(r): v for r, v in zip(full.runs, y, strict=True)}
    y_half = [rows[r] for r in half.runs]
    assert y_half == [45, 100, 45, 65, 75, 60, 80, 96]
    a = S.estimate_effects(half, [y_half, y_half])
    assert {e.term: e.estimate for e in a.effects} == {
        "A": 19.0,
        "B": 1.5,
        "C": 14.0,
        "D": 16.5,
        "AB": -1.0,
        "AC": -18.5,
        "AD": 19.0,
    }
    assert {e.term: e.aliases[0] for e in a.effects if e.order == 2} == {
        "AB": "CD",
        "AC": "BD",
        "AD": "BC",
    }
    assert a.pooled.n_terms == 0 and a.pooled.largest_term is None


# -- estimation on synthetic designs --------------------------------------------------------------
def test_a_2_3_design_recovers_known_effects_paired_by_seed() -> None:
    d = S.full_factorial(3)
    truth = {"A": 2.0, "B": -1.5, "C": 0.0, "AB": 1.0, "AC": 0.0, "BC": 0.0}
    y, unblocked = _simulate(d, truth, 12, noise=0.3, block=5.0, seed=18)
    a = S.estimate_effects(d, y, smallest_effect=0.5)
    assert a.n_seeds == 12 and a.dropped_seeds == 0
    assert [e.term for e in a.effects] == list(truth)
    for e in a.effects:
        assert e.low <= truth[e.term] <= e.high, e
        assert e.interval_method == "paired t" and e.p_method == "exact sign-flip permutation"
        assert (e.t_low, e.t_high) == (e.low, e.high) and math.isnan(e.bca_low)
    verdicts = {e.term: e.verdict for e in a.effects}
    assert verdicts == {
        "A": "better",
        "B": "worse",
        "C": "equivalent",
        "AB": "better",  # the interaction is flagged
        "AC": "equivalent",
        "BC": "equivalent",
    }
    assert a.effect("AB").reason.endswith("< 0.05 and the interval excludes 0")
    assert a.effect("C").reason.startswith("TOST: the effect lies within ±0.5 (p = ")
    # the per-seed offset (sd 5, far above the effects) cancels in every contrast
    b = S.estimate_effects(d, unblocked, smallest_effect=0.5)
    for e, f in zip(a.effects, b.effects, strict=True):
        assert e.estimate == pytest.approx(f.estimate, abs=1e-9)
        assert e.sd == pytest.approx(f.sd, abs=1e-9)
    assert float(np.std(y[:, 0], ddof=1)) > 10 * max(e.sd for e in a.effects)
    # lower is better: every effect flips, the means stay in the metric's units
    c = S.estimate_effects(d, y, smallest_effect=0.5, sign=-1)
    assert [e.estimate for e in c.effects] == pytest.approx([-e.estimate for e in a.effects])
    assert c.effect("A").verdict == "worse" and c.effect("B").verdict == "better"
    assert c.main_means == a.main_means and c.cell_means == a.cell_means
    # the ABC interaction, pooled: small, like its noise
    assert a.pooled.n_terms == 1 and a.pooled.largest_term == "ABC"
    assert a.pooled.rms < 3 * a.pooled.rms_se


def test_a_2_4_design_with_twenty_seeds_uses_the_bca_interval() -> None:
    d = S.full_factorial(4)
    truth = dict.fromkeys(S.terms(4, 2), 0.0) | {"A": 1.0, "C": -0.8, "D": 0.5, "CD": -0.6}
    y, _ = _simulate(d, truth, 24, noise=0.4, block=4.0, seed=180)
    a = S.estimate_effects(d, y, smallest_effect=0.3, n_resamples=4000)
    assert a.n_seeds == 24
    for e in a.effects:
        assert e.interval_method == "BCa bootstrap" and (e.low, e.high) == (e.bca_low, e.bca_high)
        assert e.p_method == "Monte Carlo sign-flip permutation (4000 resamples)"
        assert abs(e.estimate - truth[e.term]) < 4 * e.se, e
    # ten intervals, each covering about 93% (BCa at 24 seeds, simulated): a miss or two is
    # expected (here A and B, each 2.1 standard errors off); three would be rare (about 4%)
    misses = [e.term for e in a.effects if not e.low <= truth[e.term] <= e.high]
    assert len(misses) <= 2, misses
    verdicts = {e.term: e.verdict for e in a.effects}
    assert verdicts["A"] == verdicts["D"] == "better"
    assert verdicts["C"] == verdicts["CD"] == "worse"
    assert verdicts["B"] == "equivalent"
    assert all(verdicts[t] == "equivalent" for t, v in truth.items() if v == 0.0)
    # the five terms above order 2 (four 3FIs and ABCD) are summarised, not listed
    assert a.pooled.n_terms == 5 and a.pooled.above_order == 2
    rest = [S.effect_contrasts(d, y, [t]).mean() for t in ("ABC", "ABD", "ACD", "BCD", "ABCD")]
    assert a.pooled.rms == pytest.approx(float(np.sqrt(np.mean(np.square(rest)))))
    assert abs(a.pooled.largest) == pytest.approx(max(abs(v) for v in rest))
    # the same data, threshold raised: the paired t interval
    t = S.estimate_effects(d, y, smallest_effect=0.3, bca_min_seeds=30, n_resamples=4000)
    assert all(e.interval_method == "paired t" for e in t.effects)


def test_holm_adjusts_across_the_listed_terms() -> None:
    d = S.full_factorial(3)
    y, _ = _simulate(d, {"A": 0.3, "B": 0.15, "AB": 0.1}, 10, noise=0.4, block=1.0, seed=7)
    a = S.estimate_effects(d, y, max_order=3)
    assert len(a.effects) == 7
    assert np.allclose([e.p_adjusted for e in a.effects], S.holm([e.p for e in a.effects]))
    assert all(e.p_adjusted >= e.p for e in a.effects)
    two = S.estimate_effects(d, y, max_order=1)
    assert [e.term for e in two.effects] == ["A", "B", "C"]
    assert np.allclose([e.p_adjusted for e in two.effects], S.holm([e.p for e in two.effects]))
    assert two.pooled.n_terms == 4


def test_failed_trials_drop_their_seed_and_are_counted() -> None:
    d = S.full_factorial(3)
    y, _ = _simulate(d, {"A": 1.0}, 9, noise=0.3, block=2.0, seed=3)
    broken = y.copy()
    broken[2, 5] = np.nan
    broken[6, 0] = np.nan
    a = S.estimate_effects(d, broken)
    assert a.n_seeds == 7 and a.dropped_seeds == 2 and a.dropped_rows == (2, 6)
    clean = S.estimate_effects(d, np.delete(y, [2, 6], axis=0))
    assert [e.to_dict() for e in a.effects] == [e.to_dict() for e in clean.effects]
    assert a.cell_means == clean.cell_means
    data = json.loads(json.dumps(a.to_dict(), allow_nan=False))
    assert data["design"]["name"] == "2^3 full factorial, 8 runs"
    assert data["effects"][0]["term"] == "A" and data["effects"][0]["bca_low"] is None
    assert data["pair_means"]["AB"] == [list(r) for r in a.pair_means["AB"]]
    frac = S.fractional_factorial(6).to_dict()
    assert frac["resolution"] == 4 and len(frac["alias_table"]) == 21


def test_the_means_are_in_the_metrics_units() -> None:
    d = S.full_factorial(3)
    y, _ = _simulate(d, {"A": 1.0, "BC": -0.5}, 5, noise=0.2, block=1.0, seed=4)
    a = S.estimate_effects(d, y, sign=-1.0)
    cells = y.mean(axis=0)
    assert a.cell_means == pytest.approx(tuple(cells))
    x = d.matrix()
    for i in range(3):
        assert a.main_means[i] == pytest.approx(
            (cells[x[:, i] < 0].mean(), cells[x[:, i] > 0].mean())
        )
    (ll, lh), (hl, hh) = a.pair_means["BC"]
    assert (hh - hl - lh + ll) / 2 == pytest.approx(-a.effect("BC").estimate)  # sign -1


def test_estimation_inputs_are_checked() -> None:
    d = S.full_factorial(3)
    y = np.zeros((4, 8))
    one_left = y.copy()
    one_left[1:, 0] = np.nan
    infinite = y.copy()
    infinite[0, 0] = np.inf
    for call, name in [
        (lambda: S.estimate_effects("2^3", y), "design"),  # type: ignore[arg-type]
        (lambda: S.estimate_effects(d, np.zeros(8)), "y"),
        (lambda: S.estimate_effects(d, np.zeros((4, 7))), "y"),
        (lambda: S.estimate_effects(d, [["a"] * 8] * 2), "y"),
        (lambda: S.estimate_effects(d, one_left), "y"),
        (lambda: S.estimate_effects(d, infinite), "y"),
        (lambda: S.estimate_effects(d, y, max_order=0), "max_order"),
        (lambda: S.estimate_effects(d, y, confidence=1.5), "confidence"),
        (lambda: S.estimate_effects(d, y, alpha=0.7), "alpha"),
        (lambda: S.estimate_effects(d, y, smallest_effect=-1.0), "smallest_effect"),
        (lambda: S.estimate_effects(d, y, sign=0.5), "sign"),
        (lambda: S.estimate_effects(d, y, n_resamples=1), "n_resamples"),
        (lambda: S.estimate_effects(d, y, bca_min_seeds=1), "bca_min_seeds"),
        (lambda: S.estimate_effects(d, y, rng="x"), "rng"),  # type: ignore[arg-type]
        (lambda: S.estimate_effects(d, y).effect("ABC"), "term"),
    ]:
        with pytest.raises(ValueError, match=name):
            call()


def test_with_no_effects_holm_keeps_the_family_wise_rate_of_verdicts_below_alpha() -> None:
    """300 experiments of a 2^3 design on 10 seeds with no effect at all: the share with any
    better/worse among the six terms stays at or below alpha + 0.01 (unadjusted, it is not)."""
    d = S.full_factorial(3)
    rng = np.random.default_rng(2018)
    any_verdict = any_raw = 0
    for _ in range(300):
        y = rng.normal(0.0, 1.0, size=(10, 8)) + rng.normal(0.0, 3.0, size=(10, 1))
        a = S.estimate_effects(d, y)
        any_verdict += any(e.verdict in ("better", "worse") for e in a.effects)
        any_raw += any(e.p < 0.05 for e in a.effects)
    assert any_verdict / 300 <= 0.06
    assert any_raw / 300 > 0.15  # six tests at 0.05 each: about 1 - 0.95^6 = 0.26


# -- figures --------------------------------------------------------------------------------------
def _parse(text: str) -> ET.Element:
    assert "nan" not in text.lower().replace("nanosec", "")
    root = ET.fromstring(text)
    assert root.tag == f"{NS}svg"
    return root


def _marks(root: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [e for e in root.iter(f"{NS}{tag}") if e.get("class") == cls]


def _analysis() -> tuple[S.FactorialAnalysis, list[str]]:
    d = S.fractional_factorial(6)
    y, _ = _simulate(d, {"A": 1.0, "AB": 0.6, "F": -0.4}, 10, noise=0.3, block=1.0, seed=9)
    names = ["model.norm", "optim.warmup", "data.<aug>", "model.depth", "optim.lr", "loss & co"]
    return S.estimate_effects(d, y, smallest_effect=0.2), names


def _coordinates(root: ET.Element) -> list[float]:
    out = []
    for e in root.iter():
        for key in ("x", "y", "x1", "x2", "y1", "y2", "cx", "cy"):
            if e.get(key) is not None and not e.get(key, "").endswith("%"):
                out.append(float(e.get(key, "")))
        for pair in (e.get("points") or "").split():
            out.extend(float(v) for v in pair.split(","))
    return out


def test_the_figures_are_well_formed_with_one_mark_per_factor_and_term() -> None:
    a, names = _analysis()
    root = _parse(main_effects_svg(a.main_means, names, "accuracy"))
    lines = _marks(root, "polyline", "main-effect")
    assert len(lines) == 6 and len(_marks(root, "g", "panel")) == 6
    tips = [e.findtext(f"{NS}title") or "" for e in lines]
    assert tips[0].startswith("A model.norm: accuracy ")
    assert tips[2].startswith("C data.<aug>: ")  # escaped in the source, parsed back
    assert all(math.isfinite(v) for v in _coordinates(root))

    svg = interaction_svg(a.pair_means, names, "accuracy", ["AB", "FA"])
    root = _parse(svg)
    assert len(_marks(root, "g", "panel")) == 2
    assert len(_marks(root, "polyline", "interaction")) == 4  # second factor off and on
    assert "loss &amp; co" in svg and "loss & co" not in svg
    tips = [e.findtext(f"{NS}title") or "" for e in _marks(root, "polyline", "interaction")]
    ab = a.pair_means["AB"]
    assert tips[1] == (
        f"B optim.warmup on: accuracy {ab[0][1]:.6g} with A model.norm off, {ab[1][1]:.6g} on"
    )
    fa = tips[2]  # "FA": F on the x axis, A off: pair_means["AF"][0][*] across F
    assert fa.startswith("A model.norm off: accuracy ") and f"{a.pair_means['AF'][0][0]:.6g}" in fa
    assert all(math.isfinite(v) for v in _coordinates(root))

    svg = effects_forest_svg(a.effects, labels=names, smallest_effect=0.2, metric="accuracy")
    root = _parse(svg)
    dots = _marks(root, "circle", "effect")
    assert len(dots) == len(a.effects) == 13
    assert len(_marks(root, "line", "interval")) == 13
    tips = [d.findtext(f"{NS}title") or "" for d in dots]
    assert tips[0].startswith("A (model.norm): ")  # the largest |effect| on top
    assert any(t.startswith("AB = CE (model.norm × optim.warmup): ") for t in tips)
    ys = [float(d.get("cy", "")) for d in dots]
    assert ys == sorted(ys)  # top to bottom by decreasing |estimate|
    sizes = [abs(e.estimate) for e in sorted(a.effects, key=lambda e: -abs(e.estimate))]
    assert sizes == sorted(sizes, reverse=True)
    assert all(math.isfinite(v) for v in _coordinates(root))
    # plain dicts serve too (a stored analysis)
    dicts: list[dict[str, Any]] = [e.to_dict() for e in a.effects]
    assert len(_marks(_parse(effects_forest_svg(dicts)), "circle", "effect")) == 13


def test_the_figures_handle_flat_data_and_reject_bad_input() -> None:
    root = _parse(main_effects_svg([(1.0, 1.0)], ["x"], "loss"))  # no spread at all
    assert len(_marks(root, "polyline", "main-effect")) == 1
    assert all(math.isfinite(v) for v in _coordinates(root))
    root = _parse(effects_forest_svg([{"term": "A", "estimate": 0.0, "low": 0.0, "high": 0.0}]))
    assert len(_marks(root, "circle", "effect")) == 1
    with pytest.raises(ValueError, match="main_means"):
        main_effects_svg([(1.0, float("nan"))], ["x"], "loss")
    with pytest.raises(ValueError, match="labels"):
        main_effects_svg([(1.0, 2.0)], ["x", "y"], "loss")
    with pytest.raises(ValueError, match="pairs"):
        interaction_svg({"AB": ((1, 2), (3, 4))}, ["x", "y"], "loss", ["A"])
    with pytest.raises(ValueError, match="pair_means"):
        interaction_svg({"AB": ((1, 2), (3, 4))}, ["x", "y", "z"], "loss", ["AC"])
    with pytest.raises(ValueError, match="interval"):
        effects_forest_svg([{"term": "A", "estimate": 1.0, "low": None, "high": 2.0}])
    with pytest.raises(ValueError, match="effects"):
        effects_forest_svg([])
    assert LETTERS.index("J") == 8
