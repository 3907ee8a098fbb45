"""The critical-difference diagram and the performance profiles: well-formed SVG, one mark per
arm, every text escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from fairtrial import stats as S
from fairtrial.report.across import critical_difference_svg, performance_profile_svg

NS = {"svg": "http://www.w3.org/2000/svg"}


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return root


def _with_class(root: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [e for e in root.iter(f"{{{NS['svg']}}}{tag}") if e.get("class") == cls]


def _scores() -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(30)
    base = rng.uniform(0.6, 0.9, size=(12, 1))
    shift = np.array([0.05, 0.05, 0.0, -0.04, -0.04])
    x = base + shift + rng.normal(0.0, 0.004, size=(12, 5))
    return x, ["proposed", "tuned <baseline>", "baseline & co", "old", "older"]


def test_critical_difference_svg_has_one_rank_marker_per_arm_and_a_bar_per_group() -> None:
    x, names = _scores()
    cd = S.pairwise_wilcoxon_holm(x, names)
    assert len(cd.cliques) >= 2
    svg = critical_difference_svg(cd.avg_ranks, cd.cliques, cd.names, title="Average rank")
    root = _parse(svg)
    markers = _with_class(root, "circle", "rank")
    assert len(markers) == len(names)
    titles = sorted(m.findtext("svg:title", namespaces=NS) or "" for m in markers)
    assert titles == sorted(
        f"{n}: average rank {r:.3f}" for n, r in zip(cd.names, cd.avg_ranks, strict=True)
    )
    assert len(_with_class(root, "line", "clique")) == len(cd.cliques)
    labels = {t.text for t in root.iter(f"{{{NS['svg']}}}text")}
    assert any(t and t.startswith("tuned <baseline> (") for t in labels)  # escaped, then parsed
    assert "<baseline>" not in svg and "&lt;baseline&gt;" in svg
    # markers sit left to right in the order of the average ranks (1 = best on the left)
    xs = {m.findtext("svg:title", namespaces=NS).split(":")[0]: float(m.get("cx")) for m in markers}  # type: ignore[union-attr]
    assert [xs[n] for n in cd.names] == sorted(xs.values())


def test_critical_difference_svg_edge_cases() -> None:
    root = _parse(critical_difference_svg([1.5, 1.5], [["a", "b"]], ["a", "b"]))
    assert len(_with_class(root, "circle", "rank")) == 2
    root = _parse(critical_difference_svg([1.0, 2.0, 3.0], [], ["a", "b", "c"]))
    assert len(_with_class(root, "circle", "rank")) == 3
    assert not _with_class(root, "line", "clique")
    with pytest.raises(ValueError, match="not in names"):
        critical_difference_svg([1.0, 2.0], [["a", "z"]], ["a", "b"])
    with pytest.raises(ValueError, match="one entry per arm"):
        critical_difference_svg([1.0], [], ["a", "b"])


@pytest.mark.parametrize("measure", ["ratio", "gap"])
def test_performance_profile_svg_has_one_step_line_per_arm(measure: str) -> None:
    x, names = _scores()
    prof = S.performance_profile(x, names, measure=measure)
    svg = performance_profile_svg(prof.taus, prof.fractions, prof.names, measure=measure)
    root = _parse(svg)
    lines = _with_class(root, "polyline", "profile")
    assert [line.findtext("svg:title", namespaces=NS) for line in lines] == names
    for line, row in zip(lines, prof.fractions, strict=True):
        points = line.get("points", "").split()
        assert len(points) == 2 * len(prof.taus)  # a rise and a run per tau, then to the end
        ys = [float(p.split(",")[1]) for p in points]
        assert ys == sorted(ys, reverse=True)  # a profile never falls (y grows downwards)
        assert row[-1] == 1.0
    wide = S.performance_profile([[1.0, 50.0], [2.0, 1.0]], ["a", "b"])
    assert wide.taus[-1] == 50.0
    _parse(performance_profile_svg(wide.taus, wide.fractions, wide.names))  # log axis
    single = S.performance_profile([[1.0, 1.0]], ["a", "b"])
    _parse(performance_profile_svg(single.taus, single.fractions, single.names))
    with pytest.raises(ValueError, match="ascending"):
        performance_profile_svg([2.0, 1.0], [[0.5, 1.0]], ["a"])
    with pytest.raises(ValueError, match="one row per name"):
        performance_profile_svg([1.0, 2.0], [[0.5, 1.0]], ["a", "b"])
