"""``fairtrial analyze`` of a CSV file: published reference numbers, pairing by the seed's
value, unequal and disjoint seed sets, several tasks, every format, the ledger, and every bad
input as one line with exit 2.

Student's sleep data (Cushny & Peebles 1905, as Student 1908 analysed it; R's ``sleep``): the
extra hours of sleep of 10 patients under two drugs. R's ``t.test(extra ~ group, data = sleep,
paired = TRUE)`` gives t = -4.0621, df = 9, p = 0.002833, the 95% interval of the mean
difference [-2.4599, -0.7001] (drug 1 minus drug 2). Nine differences are positive and one is
0, so exactly 4 of the 1024 sign flips are as extreme as the data: p = 4/1024.
"""

from __future__ import annotations

import json
import math
import random
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from fairtrial.api import analyze_results
from fairtrial.cli import main
from fairtrial.imports import NOTE, read_results
from fairtrial.report import render_html, render_md, render_tex

DRUG1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
DRUG2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
SLEEP = [("drug1", i + 1, v) for i, v in enumerate(DRUG1)] + [
    ("drug2", i + 1, v) for i, v in enumerate(DRUG2)
]


def write_csv(path: Path, rows: list[tuple[object, ...]], header: str = "arm,seed,value") -> Path:
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def cli(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``fairtrial ARGS`` in this process, as the entry point runs it: (exit, stdout, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    got = capsys.readouterr()
    return code, got.out, got.err


def test_student_sleep_data_gives_the_published_t_test_and_the_exact_permutation_p(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = list(SLEEP)
    random.Random(7).shuffle(rows)
    assert rows[:10] != SLEEP[:10], "the rows are shuffled: pairing is by the seed's value"
    path = write_csv(tmp_path / "sleep.csv", rows)
    code, out, err = cli(
        "analyze", str(path), "--baseline", "drug1", "--format", "json", capsys=capsys
    )
    assert code == 0, err
    doc = json.loads(out)
    c = doc["comparisons"][0]
    assert (c["arm"], c["against"], c["n_pairs"]) == ("drug2", "baseline", 10)
    t = c["effect"] / (c["sd_diff"] / math.sqrt(10))
    assert c["effect"] == pytest.approx(1.58)
    assert round(t, 2) == 4.06
    assert c["p_t"] == pytest.approx(0.002833, abs=5e-7)
    assert c["interval_method"] == "paired t"
    assert c["interval"] == pytest.approx([0.7001142, 2.4598858], abs=1e-6)
    # the permutation p as the document reports it: the exact share of the 2^10 sign flips
    assert c["p_method"] == "exact sign-flip permutation"
    assert c["p"] == 4 / 1024
    assert (c["wins"], c["ties"], c["losses"]) == (9, 1, 0)
    assert c["verdict"] == "better" and c["dropped_seeds"] == {"drug2": 0, "baseline": 0}
    e = doc["experiment"]
    assert e["imported"]["note"] == NOTE and e["imported"]["baseline"] == "drug1"
    assert e["imported"]["source"] == str(path) and e["code"] == []
    assert doc["arms"]["baseline"]["values"] == DRUG1
    assert doc["settings"]["pairing"] == "by seed, as declared by the imported data"


def test_row_order_never_changes_the_analysis(tmp_path: Path) -> None:
    path = tmp_path / "sleep.csv"
    reference = analyze_results(write_csv(path, SLEEP), "drug1", resamples=1000).to_dict()

    @settings(max_examples=60, deadline=None, derandomize=True)
    @given(st.permutations(SLEEP))
    def check(rows: list[tuple[object, ...]]) -> None:
        assert analyze_results(write_csv(path, rows), "drug1", resamples=1000).to_dict() == (
            reference
        )

    check()


def test_unequal_seed_sets_pair_on_the_shared_seeds_and_say_how_many_were_dropped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # (the analysis keeps 6 decimals of a score)
    base = {s: round(0.80 + 0.01 * math.sin(s), 6) for s in range(1, 9)}  # seeds 1-8
    arm = {s: round(0.83 + 0.012 * math.cos(s), 6) for s in range(4, 13)}  # seeds 4-12
    rows = [("base", s, v) for s, v in base.items()] + [("new", s, v) for s, v in arm.items()]
    path = write_csv(tmp_path / "u.csv", rows)
    code, out, err = cli(
        "analyze", str(path), "--baseline", "base", "--format", "md", capsys=capsys
    )
    assert code == 0, err
    assert (
        "new vs baseline: paired on the 5 seed(s) both have; dropped 4 of new, 3 of baseline"
        in (out)
    )
    c = analyze_results(path, "base").comparison("new")
    shared = range(4, 9)
    ref = sps.ttest_rel([arm[s] for s in shared], [base[s] for s in shared])
    assert c.n_pairs == 5 and c.dropped_seeds == {"new": 4, "baseline": 3}
    assert c.p_t == pytest.approx(ref.pvalue, rel=1e-9)
    assert not c.unpaired and c.p_method == "exact sign-flip permutation"


def test_disjoint_seed_sets_are_compared_unpaired_by_welch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(17)
    a, b = rng.normal(0.70, 0.02, 6).round(6), rng.normal(0.74, 0.05, 4).round(6)
    rows = [("a", s, float(v)) for s, v in enumerate(a)]
    rows += [("b", 100 + s, float(v)) for s, v in enumerate(b)]
    path = write_csv(tmp_path / "d.csv", rows)
    doc = analyze_results(path, "a", smallest_effect=0.2)
    c = doc.comparison("b")
    ref = sps.ttest_ind(b, a, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert c.unpaired and c.n_pairs == 0 and c.dropped_seeds == {"b": 4, "baseline": 6}
    assert c.p == pytest.approx(ref.pvalue, rel=1e-9) and c.p_t == c.p
    assert c.effect == pytest.approx(b.mean() - a.mean(), abs=1e-6)
    assert c.interval == pytest.approx([ci.low, ci.high], abs=1e-6)
    assert c.p_method is not None and c.p_method.startswith("Welch t-test")
    assert c.interval_method is not None and c.interval_method.startswith("Welch t")
    assert c.reason is not None and c.reason.startswith("unpaired, the arms share no seed")
    assert doc.settings["method"]["unpaired"]["method"] == "Welch t"
    # TOST on Welch's t, as statsmodels computes it
    weightstats = pytest.importorskip("statsmodels.stats.weightstats")
    p_tost, _, _ = weightstats.ttost_ind(b, a, -0.2, 0.2, usevar="unequal")
    assert c.tost is not None and c.tost.pvalue == pytest.approx(p_tost, rel=1e-9)
    assert c.tost.equivalent == bool(p_tost < 0.05) and c.verdict == "equivalent"
    code, out, err = cli("analyze", str(path), "--baseline", "a", capsys=capsys)
    assert code == 0, err
    assert "b vs baseline: no seed shared, compared unpaired (Welch t)" in out
    # minimized: the minimum is better, and the sign follows
    low = analyze_results(path, "a", direction="min").comparison("b")
    assert low.effect == pytest.approx(-c.effect) and low.p == pytest.approx(c.p)


def test_several_tasks_give_one_document_with_the_claims_across_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        (task, arm, seed, round(0.5 + 0.1 * (arm == "b") * k + 0.01 * seed * (k + 1), 4))
        for k, task in enumerate(["t1", "t2"])
        for arm in ("a", "b")
        for seed in range(5)
    ]
    path = write_csv(tmp_path / "tasks.csv", rows, header="task,arm,seed,value")
    code, out, err = cli("analyze", str(path), "--baseline", "a", "--format", "json", capsys=capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert list(doc["tasks"]) == ["t1", "t2"] and doc["across"]["tasks"] == ["t1", "t2"]
    t1, t2 = doc["tasks"]["t1"], doc["tasks"]["t2"]
    assert t1["experiment"]["id"] != t2["experiment"]["id"]
    assert t2["comparisons"][0]["effect"] == pytest.approx(0.1)
    (across,) = doc["across"]["comparisons"]
    assert [t["effect"] for t in across["tasks"]] == [
        pytest.approx(0.0), pytest.approx(0.1)]  # fmt: skip
    code, out, _ = cli("analyze", str(path), "--baseline", "a", capsys=capsys)
    assert code == 0 and out.count("imported from") == 2 and "Verdicts across tasks" in out
    assert analyze_results(path, "a", task="t2").experiment.task == "t2"


# Demšar (2006), Table 2: AUC of C4.5 and C4.5 with m tuned, on 14 data sets
DEMSAR = [
    ("adult_sample", 0.763, 0.768), ("breast_cancer", 0.599, 0.591),
    ("breast_cancer_wisconsin", 0.954, 0.971), ("cmc", 0.628, 0.661),
    ("ionosphere", 0.882, 0.888), ("iris", 0.936, 0.931), ("liver_disorders", 0.661, 0.668),
    ("lung_cancer", 0.583, 0.583), ("lymphography", 0.775, 0.838), ("mushroom", 1.000, 1.000),
    ("primary_tumor", 0.940, 0.962), ("rheum", 0.619, 0.666), ("voting", 0.972, 0.981),
    ("wine", 0.957, 0.978),
]  # fmt: skip


def test_demsar_table_2_through_fairtrial_analyze(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The published example: R+ = 93, R- = 12, C4.5+m significantly better at 0.05."""
    rows = [(task, arm, 0, v) for task, a, b in DEMSAR for arm, v in (("c45", a), ("c45m", b))]
    rows.reverse()  # pairing is by task and seed, never by row order
    path = write_csv(tmp_path / "demsar.csv", rows, header="task,arm,seed,value")
    code, out, err = cli("analyze", str(path), "--baseline", "c45", "--format", "json",
                         capsys=capsys)  # fmt: skip
    assert code == 0, err
    (c,) = json.loads(out)["across"]["comparisons"]
    assert c["n_tasks"] == 14
    assert (c["wilcoxon"]["r_plus"], c["wilcoxon"]["r_minus"]) == (93, 12)
    assert c["wilcoxon"]["pvalue"] < 0.05 and c["verdict"] == "better"
    # the sign test alone does not reach it (11 wins of 14; Demšar's critical number is 12)
    assert c["sign_test"]["pvalue"] > 0.05


def test_every_format_says_the_results_are_imported_near_the_top(tmp_path: Path) -> None:
    doc = analyze_results(write_csv(tmp_path / "sleep.csv", SLEEP), "drug1")
    line = f"imported from {tmp_path / 'sleep.csv'}: {NOTE}; baseline = drug1"
    md = render_md(doc)
    assert md.index(line) < md.index("### Verdicts")
    html = render_html(doc)
    assert html.index("imported from") < html.index("<h2>Verdicts")
    assert NOTE in html
    tex = render_tex(doc)
    assert tex.splitlines()[1].startswith("% imported from") and "not run by fairtrial" in tex
    assert "\\caption{imported from" in tex


def test_metric_column_picks_one_metric(tmp_path: Path) -> None:
    rows = [("a", s, "acc", 0.9 + s / 100) for s in range(4)]
    rows += [("b", s, "acc", 0.92 + s / 100) for s in range(4)]
    rows += [("a", s, "loss", 0.3) for s in range(4)] + [("b", s, "loss", 0.2) for s in range(4)]
    path = write_csv(tmp_path / "m.csv", rows, header="arm,seed,metric,value")
    results = read_results(path, metric="acc")
    assert results.metric == "acc" and len(results.rows) == 8
    doc = analyze_results(path, "a", metric="acc")
    assert doc.experiment.metric == "acc" and doc.comparison("b").effect == pytest.approx(0.02)


def test_stored_results_report_bundle_and_verify_like_an_experiment(
    tmp_path: Path, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_csv(tmp_path / "sleep.csv", SLEEP)
    args = ["analyze", str(path), "--baseline", "drug1", "--format", "json", "--store", store_url]
    code, out, err = cli(*args, capsys=capsys)
    assert code == 0, err
    assert "stored as experiment" in err
    analyzed = json.loads(out)
    eid = analyzed["experiment"]["id"]
    code, out, err = cli("report", eid, "--store", store_url, "--format", "json", capsys=capsys)
    assert code == 0, err
    reported = json.loads(out)
    assert reported["experiment"] == analyzed["experiment"]
    drop = {"cost", "cost_text"}
    assert [{k: v for k, v in c.items() if k not in drop} for c in reported["comparisons"]] == [
        {k: v for k, v in c.items() if k not in drop} for c in analyzed["comparisons"]
    ]
    assert reported["arms"]["drug2"]["values"] == DRUG2
    # storing the same results again is a no-op: the same experiment, the same trials
    code, _, err = cli(*args, capsys=capsys)
    assert code == 0 and f"stored as experiment {eid}" in err
    from fairtrial.ledger import Ledger

    ledger = Ledger(store_url)
    try:
        trials = ledger.trials(eid)
        assert len(trials) == 20 and {t.attempt for t in trials} == {1}
        assert ledger.experiment(eid).spec["imported"]["note"] == NOTE
    finally:
        ledger.close()
    bundle = tmp_path / "sleep.zip"
    code, _, err = cli("bundle", eid, "--store", store_url, "-o", str(bundle), capsys=capsys)
    assert code == 0, err
    code, out, err = cli("verify", str(bundle), capsys=capsys)
    assert code == 0, err
    assert "20/20 trials finished" in out
    assert "imported results, not run by fairtrial" in out


def test_stored_arm_names_are_made_valid_and_the_imported_ones_kept(tmp_path: Path) -> None:
    from fairtrial.imports import store_imported

    rows = [("lr=0.1,norm=layer", s, 0.8 + s / 100) for s in range(3)]
    rows += [("lr=0.3,norm=layer", s, 0.82 + s / 100) for s in range(3)]
    path = write_csv(tmp_path / "names.csv", [(f'"{a}"', s, v) for a, s, v in rows])
    results = read_results(path)
    assert results.arms == ["lr=0.1,norm=layer", "lr=0.3,norm=layer"]
    from fairtrial.ledger import Ledger

    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    try:
        (exp,) = store_imported(ledger, results, "lr=0.1,norm=layer")
        assert [a["name"] for a in exp.arms["arms"]] == ["baseline", "lr_0.3_norm_layer"]
        assert exp.spec["imported"]["arm_names"] == {"lr_0.3_norm_layer": "lr=0.3,norm=layer"}
    finally:
        ledger.close()
    with sqlite3.connect(tmp_path / "l.db") as db:
        assert db.execute("select count(*) from trials where status = 'finished'").fetchone() == (
            6,
        )


# -- bad input: one line, exit 2 ------------------------------------------------------------------
BAD = [
    ("arm,seed,score\na,1,0.5\n", [], "bad.csv, row 1: no column 'value' (the header has: arm, "
     "seed, score; needed: arm, seed, value; optional: task, metric)"),
    ("arm,seed,value\na,1,0.5\nb,1,abc\n", [], "bad.csv, row 3, column 'value': 'abc' is not a "
     "number (a finite number is needed, e.g. 0.93)"),
    ("arm,seed,value\na,1,0.5\nb,1,nan\n", [], "bad.csv, row 3, column 'value': nan is not finite"),
    ("arm,seed,value\na,1,0.5\nb,one,0.6\n", [], "bad.csv, row 3, column 'seed': 'one' is not a "
     "seed: an integer is needed"),
    ("arm,seed,value\na,1,0.5\nb,1,0.6\na,2,0.5\nb,1,0.7\n", [], "bad.csv, row 5: a second value "
     "for (arm b, seed 1); row 3 has the first: each arm has one value per seed (and task)"),
    ("arm,seed,value\na,1,0.5\nb,1,0.6\n", ["--baseline", "c"], "bad.csv: no arm 'c' to be the "
     "baseline; --baseline is one of a, b"),
    ("arm,seed,metric,value\na,1,acc,0.5\nb,1,loss,0.6\n", [], "bad.csv, column 'metric': "
     "several metrics (acc, loss); pick one with --metric"),
    ("arm,seed,metric,value\na,1,acc,0.5\nb,1,acc,0.6\n", ["--metric", "f1"], "bad.csv, column "
     "'metric': no rows of metric 'f1'; --metric is one of acc"),
    ("arm,seed,value\na,1,0.5\nb,1\n", [], "bad.csv, row 3: 2 field(s), the header has 3"),
    ("arm,seed,value\na,1,0.5\n,1,0.6\n", [], "bad.csv, row 3, column 'arm': empty"),
    ("", [], "bad.csv: no header row"),
    ("arm,seed,value\na,1,0.5\na,2,0.6\n", [], "bad.csv: only the arm 'a': a verdict needs a "
     "second arm"),
    ("arm,seed,value\na,1,0.5\nbaseline,1,0.6\n", [], "bad.csv: an arm is named 'baseline' but "
     "--baseline is 'a'"),
    ("task,arm,seed,value\nt1,a,1,0.5\nt1,b,1,0.6\nt2,b,1,0.6\nt2,c,1,0.7\n", [], "bad.csv, task "
     "t2: no arm 'a' to be the baseline; --baseline is one of b, c"),
]  # fmt: skip


@pytest.mark.parametrize(("content", "extra", "message"), BAD)
def test_bad_input_is_one_line_naming_the_file_row_and_column(
    content: str,
    extra: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("bad.csv").write_text(content)
    args = [
        "analyze",
        "bad.csv",
        *(extra if "--baseline" in extra else ["--baseline", "a", *extra]),
    ]
    code, out, err = cli(*args, capsys=capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("error: " + message), err


def test_a_missing_file_and_a_missing_option_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli("analyze", str(tmp_path / "none.csv"), "--baseline", "a", capsys=capsys)
    assert code == 2 and err == f"error: {tmp_path / 'none.csv'}: no such file\n"
    code, _, err = cli("analyze", str(tmp_path), "--baseline", "a", capsys=capsys)
    assert code == 2 and "--metric names the logged metric" in err and err.count("\n") == 1
    code, _, err = cli("analyze", str(tmp_path / "x.csv"), capsys=capsys)
    assert code == 2 and "Missing option '--baseline'" in err
