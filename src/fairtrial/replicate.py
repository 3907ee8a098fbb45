"""Replicate: re-run a bundle's experiment and judge, arm by arm and claim by claim, whether it
agrees with the original.

``replicate`` *runs the bundled recipe* (that is its purpose), from a folder holding the
bundle's code snapshot, after the bundle has passed every check of
:func:`fairtrial.bundle.read_bundle`. With ``seeds="same"`` it runs the same seeds (same root
seed, so the same init, data-order and augmentation streams); with ``seeds="fresh"`` it derives
a new root seed and, for procedurally generated tasks (``mnist1d``, ``modular_addition``), a
fresh draw of the data too (``task@draw``), to test whether the result generalises beyond the
seeds and data it was found on. Fixed datasets (``digits``, ...) cannot be drawn afresh.

Agreement (:func:`judge`):

* per arm, an equivalence test of the replication's mean against the original's within
  ``±tolerance`` (TOST, Schuirmann 1987): paired by seed when the seeds are the same,
  Welch-based and unpaired when they are fresh. ``agree`` when the (1 - 2·alpha) interval of the
  difference lies inside ``(-tolerance, tolerance)``, ``differ`` when it lies wholly outside
  (a difference beyond the tolerance, shown at level alpha), else ``undecided`` with the seeds
  an equivalence test would need (Chow, Shao & Wang 2008, "Sample Size Calculations in Clinical
  Research", 2nd ed., §3.2, for a true difference of 0);
* per claim, each verdict of the original (better, worse, equivalent) must come out the same.

The outcome is ``not replicated`` when an arm differs or a verdict flips, ``inconclusive`` when
nothing failed but something could not be decided with the seeds available, else
``replicated``. The record uses the vocabulary of ACM's "Artifact Review and Badging"
(version 1.1, 2020): a replication from the authors' bundle by another party that agrees earns
"Results Reproduced"; a re-run on the machine that made the bundle checks the artifact but is
not yet that.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import fairtrial
from fairtrial.bundle import Bundle, read_bundle, spec_toml
from fairtrial.diff import diff, ledger_experiment_capture
from fairtrial.errors import ReplicationError
from fairtrial.ledger import Ledger
from fairtrial.record import Hypothesis
from fairtrial.results import Analysis, Comparison
from fairtrial.seeding import derive_seed
from fairtrial.spec import valid_name
from fairtrial.usercode import forget_modules

Seeds = Literal["same", "fresh"]
OUTCOMES = ("replicated", "not replicated", "inconclusive")
CLAIM_VERDICTS = ("better", "worse", "equivalent", "faster", "slower", "same")
ACM = {
    "vocabulary": "ACM Artifact Review and Badging, version 1.1 (2020)",
    "badge_meaning": "Results Reproduced: the main results were obtained by another party "
    "using the authors' artifacts",
}


def _seeds_needed(sd: float, tolerance: float, alpha: float, power: float) -> int | None:
    """Seeds for TOST to show equivalence within ±tolerance with ``power`` at a true difference
    of 0: the one-sided t-test sample size at power 1 - (1 - power)/2 (Chow et al. 2008, §3.2)."""
    from fairtrial.stats import required_seeds

    if not (sd > 0 and math.isfinite(sd)):
        return None
    try:
        return required_seeds(
            sd, tolerance, alpha=alpha, power=1 - (1 - power) / 2, alternative="greater"
        )
    except ValueError:
        return None


def compare_arm(
    original: list[float],
    replication: list[float],
    *,
    tolerance: float,
    paired: bool,
    alpha: float = 0.05,
    power: float = 0.8,
) -> dict[str, Any]:
    """Equivalence of one arm's replication with its original within ±``tolerance``.

    ``original`` and ``replication`` are the per-seed values; when ``paired`` they are aligned
    by seed (same length). Returns ``status`` (agree, differ, undecided), ``difference``
    (replication minus original), ``interval`` (the 1 - 2·alpha interval), ``p_equivalence``
    (TOST p-value), ``test`` and ``seeds_needed`` (for undecided arms).
    """
    from scipy.stats import t as t_dist

    from fairtrial.stats import tost_paired, welch_t_test

    a = [float(v) for v in original]
    b = [float(v) for v in replication]
    out: dict[str, Any] = {
        "test": "paired TOST (by seed)" if paired else "Welch TOST (unpaired)",
        "n": [len(a), len(b)],
    }
    if len(a) < 2 or len(b) < 2:
        return {
            **out,
            "status": "undecided",
            "difference": (sum(b) / len(b) - sum(a) / len(a)) if a and b else None,
            "interval": None,
            "p_equivalence": None,
            "seeds_needed": None,
            "reason": "fewer than 2 values on a side",
        }
    if paired:
        r = tost_paired(a, b, margin=tolerance, alpha=alpha)
        effect, low, high, p = r.effect, r.low, r.high, r.pvalue
        sd = r.se * math.sqrt(len(a))
    else:
        w = welch_t_test(a, b, confidence=1 - 2 * alpha)
        effect, low, high = w.effect, w.low, w.high
        if w.se > 0:
            p_lower = float(t_dist.sf((effect + tolerance) / w.se, w.df))
            p_upper = float(t_dist.cdf((effect - tolerance) / w.se, w.df))
        else:
            p_lower = 0.0 if effect > -tolerance else 1.0
            p_upper = 0.0 if effect < tolerance else 1.0
        p = max(p_lower, p_upper)
        # per-seed sd of a difference between two independent draws
        sd = w.se * math.sqrt(min(len(a), len(b)))
    if -tolerance < low and high < tolerance:
        status = "agree"
    elif low >= tolerance or high <= -tolerance:
        status = "differ"
    else:
        status = "undecided"
    return {
        **out,
        "status": status,
        "difference": effect,
        "interval": [low, high],
        "p_equivalence": p,
        "seeds_needed": _seeds_needed(sd, tolerance, alpha, power)
        if status == "undecided"
        else None,
    }


def _claims(doc: Analysis) -> dict[str, Comparison]:
    out: dict[str, Comparison] = {f"{c.arm} vs {c.against}": c for c in doc.comparisons}
    out.update({f"{c.arm} without {c.removed}": c for c in doc.ablations})
    return out


def judge(
    original: Analysis,
    replication: Analysis,
    *,
    tolerance: float,
    paired: bool,
    alpha: float = 0.05,
    power: float = 0.8,
) -> dict[str, Any]:
    """Agreement of two analyses, arm by arm and verdict by verdict.

    Returns ``{"outcome", "arms": [...], "claims": [...], "failures": [text], "undecided":
    [text]}``. Verdicts are read from each comparison's and ablation's ``verdict`` key; an
    original without verdicts gives no claims (and says so in ``notes``).
    """
    arms = []
    failures: list[str] = []
    undecided: list[str] = []
    notes: list[str] = []
    for name, o in original.arms.items():
        r = replication.arms.get(name)
        ov = o.scores
        rv = r.scores if r else {}
        row: dict[str, Any] = {
            "arm": name,
            "original_mean": o.mean,
            "replication_mean": r.mean if r else None,
            "original_failed": o.failed,
            "replication_failed": r.failed if r else None,
        }
        if r is None:
            row.update(status="differ", reason="the arm is missing from the replication")
        elif not ov and not rv:
            row.update(status="agree", reason="no finished trials in either (failed in both)")
        elif not ov or not rv:
            side = "replication" if not rv else "original"
            row.update(status="differ", reason=f"no finished trials in the {side}")
        else:
            if paired:
                common = sorted(set(ov) & set(rv))
                a, b = [ov[s] for s in common], [rv[s] for s in common]
                row["n_pairs"] = len(common)
            else:
                a, b = list(ov.values()), list(rv.values())
            row.update(
                compare_arm(a, b, tolerance=tolerance, paired=paired, alpha=alpha, power=power)
            )
        arms.append(row)
        if row["status"] == "differ":
            failures.append(_arm_text(row, tolerance, alpha))
        elif row["status"] == "undecided":
            undecided.append(_arm_text(row, tolerance, alpha))
    claims = []
    oc, rc = _claims(original), _claims(replication)
    has_verdicts = any(c.verdict is not None for c in oc.values())
    if not has_verdicts:
        notes.append("the original analysis has no verdicts: only per-arm agreement was judged")
    for key, c in oc.items():
        if c.verdict is None:
            continue
        ov_ = c.verdict
        rep = rc.get(key)
        rv_ = rep.verdict if rep else None
        if ov_ not in CLAIM_VERDICTS:
            status = "no claim"
        elif rv_ == ov_:
            status = "reproduced"
        elif rv_ is None or rv_ == "inconclusive":
            status = "undecided"
        else:
            status = "failed"
        claim = {
            "claim": f"{key}: {ov_}",
            "original": ov_,
            "replication": rv_,
            "original_effect": c.effect,
            "replication_effect": rep.effect if rep else None,
            "status": status,
        }
        claims.append(claim)
        if status == "failed":
            failures.append(
                f"claim '{key}: {ov_}' not reproduced: the replication says {rv_} "
                f"(effect {_num(claim['replication_effect'])} vs {_num(c.effect)})"
            )
        elif status == "undecided":
            undecided.append(
                f"claim '{key}: {ov_}': the replication could not decide "
                f"({rv_ or 'no verdict'}, effect {_num(claim['replication_effect'])})"
            )
    outcome = "not replicated" if failures else "inconclusive" if undecided else "replicated"
    return {
        "outcome": outcome,
        "arms": arms,
        "claims": claims,
        "failures": failures,
        "undecided": undecided,
        "notes": notes,
    }


def _num(x: Any) -> str:
    return "n/a" if x is None else f"{x:+.4f}" if isinstance(x, (int, float)) else str(x)


def _arm_text(row: Mapping[str, Any], tolerance: float, alpha: float) -> str:
    name = row["arm"]
    if "reason" in row and row.get("interval") is None and row["status"] != "undecided":
        return f"arm '{name}': {row['reason']}"
    means = (
        f"mean {_num(row.get('replication_mean'))[1:]} vs {_num(row.get('original_mean'))[1:]} "
        "original"
        if row.get("replication_mean") is not None and row.get("original_mean") is not None
        else ""
    )
    iv = row.get("interval")
    ivs = f", {100 * (1 - 2 * alpha):.0f}% interval [{iv[0]:+.4f}, {iv[1]:+.4f}]" if iv else ""
    if row["status"] == "differ":
        return (
            f"arm '{name}': {means}, difference {_num(row.get('difference'))}{ivs} "
            f"beyond ±{tolerance:g}"
        )
    need = row.get("seeds_needed")
    more = f"; about {need} seeds would decide it" if need else ""
    why = f" ({row['reason']})" if row.get("reason") else ""
    return (
        f"arm '{name}': {means}, difference {_num(row.get('difference'))}{ivs}: neither within "
        f"nor beyond ±{tolerance:g} with {row.get('n')} values{why}{more}"
    )


def _redraw(task: str, draw: int) -> tuple[str, str]:
    from fairtrial.tasks.registry import redrawable_tasks

    base = task.partition("@")[0]
    if ":" not in task and base in redrawable_tasks():
        return f"{base}@{draw}", f"fresh data draw {draw} of procedurally generated '{base}'"
    return task, (
        f"task '{task}' is a fixed dataset: its data cannot be drawn afresh, so only the seeds "
        "are fresh"
    )


#: the replication's ledger in its folder: a recipe file of this name (or its SQLite journals)
#: would fill it in advance with results the replication never ran
_LEDGER = "ledger.db"


def _prepare_code(b: Bundle, folder: Path) -> dict[str, Any]:
    snap = b.json("code/snapshot.json")
    exp = b.experiment()
    recipe = exp.spec["experiment"].get("recipe")
    if not snap.get("files") and recipe and not recipe.startswith("fairtrial."):
        raise ReplicationError(
            f"bundle {b.path.name} has no snapshot of recipe '{recipe}' (the experiment ran "
            "before fairtrial recorded recipe files): it cannot be replicated from the bundle"
        )
    root = folder.resolve()
    files = list(snap.get("files") or {})
    for rel in files:  # all checked before any is written
        # read_bundle checked every name; this guards the folder against any it missed
        dest = folder.joinpath(*rel.split("/")).resolve()
        if not dest.is_relative_to(root) or dest == root:
            raise ReplicationError(
                f"bundle {b.path.name}: recipe file '{rel}' would be written outside the "
                f"replication folder {folder}"
            )
        if rel.startswith(_LEDGER):
            raise ReplicationError(
                f"bundle {b.path.name}: recipe file '{rel}' would take the place of the "
                f"replication's own ledger ({_LEDGER}); such a bundle cannot be replicated"
            )
    for rel in files:
        dest = folder.joinpath(*rel.split("/"))
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(b.read_bytes(f"code/files/{rel}"))
    return dict(snap)


def _forget_module(module: str | None, folder: Path) -> None:
    """Make this process import the recipe from ``folder``, not a same-named module it already
    imported from elsewhere (the original's folder, in tests and notebooks)."""
    if module:
        forget_modules(module)


def replicate(
    bundle_path: str | Path,
    *,
    seeds: Seeds = "same",
    tolerance: float | None = None,
    root_seed: int | None = None,
    store: str | Path | None = None,
    folder: Path | None = None,
    backend: Any = None,
    console: Any = None,
    show_progress: bool | None = None,
) -> dict[str, Any]:
    """Verify the bundle, re-run its experiment, judge agreement, store and return the record.

    The re-run happens in ``folder`` (default ``./.fairtrial/replications/NAME-BUNDLE-SEEDS-N``),
    which receives the bundle's recipe files, the spec and the replication's own ledger
    (``ledger.db``); the record goes to the ledger at ``store`` (table ``replications``) and to
    ``folder/replication.json``. ``tolerance`` defaults to the hypothesis' smallest effect.
    """
    from fairtrial.analysis.document import analyze
    from fairtrial.backends import LocalBackend
    from fairtrial.runner import run_experiment
    from fairtrial.spec import load_spec

    if seeds not in ("same", "fresh"):
        raise ReplicationError(f"--seeds must be 'same' or 'fresh', got '{seeds}'")
    t0 = time.time()
    with read_bundle(bundle_path) as b:
        exp = b.experiment()
        hyp = Hypothesis.from_spec(exp.spec)
        if tolerance is None:
            tolerance = hyp.smallest_effect
            source = "hypothesis.smallest_effect"
            if tolerance is None:
                raise ReplicationError(
                    f"bundle {b.path.name}: the hypothesis sets no smallest_effect, so there is "
                    f"no default tolerance; pass --tolerance X (in {exp.metric} units)"
                )
        else:
            source = "--tolerance"
        tolerance = float(tolerance)
        if not (tolerance > 0 and math.isfinite(tolerance)):
            raise ReplicationError(f"--tolerance must be a number > 0, got {tolerance}")
        alpha, power = hyp.alpha, hyp.power
        if folder is None:
            base = Path(".fairtrial") / "replications"
            if not valid_name(exp.name):  # read_bundle refuses these: never a path from them
                raise ReplicationError(
                    f"bundle {b.path.name}: {exp.name!r} is not a valid experiment name"
                )
            stem = f"{exp.name}-{b.sha256[:12]}-{seeds}"
            n = 1
            while (base / f"{stem}-{n}").exists():
                n += 1
            folder = base / f"{stem}-{n}"
        folder.mkdir(parents=True, exist_ok=True)
        folder = folder.resolve()
        snap = _prepare_code(b, folder)
        normalized = copy.deepcopy(exp.spec)
        data_note = "same data (task checksum checked)"
        if seeds == "fresh":
            new_root = (
                root_seed
                if root_seed is not None
                else derive_seed(exp.root_seed, "replicate/fresh", 0) % 2**31
            )
            task, data_note = _redraw(exp.task, derive_seed(new_root, "data-draw", 0) % 2**31)
            normalized["experiment"]["root_seed"] = new_root
            normalized["experiment"]["task"] = task
        spec_path = folder / "spec.toml"
        spec_path.write_text(spec_toml(normalized))
        _forget_module(snap.get("module") if snap.get("files") else None, folder)
        spec = load_spec(spec_path)
        if seeds == "same" and spec.spec_hash != exp.spec_hash:
            raise ReplicationError(
                f"the spec rebuilt from bundle {b.path.name} hashes to {spec.spec_hash[:12]}, "
                f"not {exp.spec_hash[:12]}: this fairtrial normalises specs differently from "
                f"the one that wrote the bundle ({b.manifest.get('fairtrial')})"
            )
        same_data = spec.task_checksum == exp.task_checksum
        if seeds == "same" and not same_data:
            data_note = (
                f"task '{exp.task}' data differ here: checksum {spec.task_checksum[:12]}, "
                f"the bundle's {exp.task_checksum[:12]}"
            )
        original_doc = b.analysis()
        original_capture = b.capture()
        prov = b.provenances()
        bundle_info = {
            "path": str(b.path),
            "sha256": b.sha256,
            "manifest_sha256": b.manifest_sha256,
            "fairtrial": b.manifest.get("fairtrial"),
        }
        original_hosts = sorted({str(p.get("hostname")) for p in prov.values()})

    rep_ledger = Ledger(folder / "ledger.db")
    try:
        summary = run_experiment(
            spec,
            rep_ledger,
            backend or LocalBackend(),
            console=console,
            show_progress=show_progress,
        )
        rep_exp = rep_ledger.experiment(spec.experiment_id)
        rep_doc = analyze(rep_ledger, rep_exp)
        rep_capture = ledger_experiment_capture(rep_ledger, rep_exp)
    finally:
        rep_ledger.close()
    judged = judge(
        original_doc, rep_doc, tolerance=tolerance, paired=seeds == "same", alpha=alpha, power=power
    )
    env = diff(original_capture, rep_capture)
    same_host = platform.node() in original_hosts
    outcome = judged["outcome"]
    if outcome == "replicated" and not same_host:
        badge, acm_note = (
            "Results Reproduced",
            "replicated from the authors' bundle on another host",
        )
    elif outcome == "replicated":
        badge, acm_note = (
            None,
            "replicated on the host that produced the bundle: a check of the artifact, not yet "
            "'Results Reproduced' (which needs another party)",
        )
    else:
        badge, acm_note = None, f"{outcome}: no badge"
    record = {
        "format": "fairtrial-replication",
        "format_version": 1,
        "fairtrial": fairtrial.__version__,
        "created_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "outcome": outcome,
        "acm": {**ACM, "badge": badge, "same_host": same_host, "note": acm_note},
        "original": {
            "experiment_id": exp.id,
            "name": exp.name,
            "spec_hash": exp.spec_hash,
            "task": exp.task,
            "task_checksum": exp.task_checksum,
            "root_seed": exp.root_seed,
            "seeds": exp.seeds,
            "hosts": original_hosts,
        },
        "bundle": bundle_info,
        "replication": {
            "seeds": seeds,
            "root_seed": spec.root_seed,
            "task": spec.task,
            "task_checksum": spec.task_checksum,
            "data": data_note,
            "experiment_id": spec.experiment_id,
            "folder": str(folder),
            "store": str(folder / "ledger.db"),
            "host": platform.node(),
            "trials": summary.total,
            "ran": summary.ran,
            "finished": summary.finished,
            "failed": summary.failed + summary.diverged,
            "seconds": round(time.time() - t0, 3),
        },
        "tolerance": tolerance,
        "tolerance_source": source,
        "alpha": alpha,
        **{k: judged[k] for k in ("arms", "claims", "failures", "undecided", "notes")},
        "environment_differences": {
            "count": env["count"],
            "groups": {g: rows[:50] for g, rows in env["groups"].items() if rows},
            "truncated": any(len(rows) > 50 for rows in env["groups"].values()),
        },
    }
    record = dict(json.loads(json.dumps(record, default=str, allow_nan=False)))
    (folder / "replication.json").write_text(json.dumps(record, indent=2) + "\n")
    main = Ledger(store)
    try:
        record["id"] = main.add_replication(record)
    finally:
        main.close()
    return record


def format_record(record: Mapping[str, Any]) -> str:
    """A replication record as a few lines of text (the CLI's output)."""
    o, r = record["original"], record["replication"]
    lines = [
        f"{record['outcome'].upper()}: {o['name']} ({o['experiment_id']}) from bundle "
        f"{record['bundle']['sha256'][:12]}, {r['seeds']} seeds (root {r['root_seed']}), "
        f"tolerance ±{record['tolerance']:g} ({record['tolerance_source']})",
        f"  data: {r['data']}",
        f"  ran {r['ran']} trials ({r['finished']} finished, {r['failed']} failed) "
        f"in {r['folder']}",
    ]
    for a in record["arms"]:
        iv = a.get("interval")
        lines.append(
            f"  arm {a['arm']}: {a['status']}"
            + (
                f" (difference {_num(a.get('difference'))}, interval "
                f"[{iv[0]:+.4f}, {iv[1]:+.4f}], {a.get('test')})"
                if iv
                else f" ({a.get('reason', '')})"
            )
        )
    for c in record["claims"]:
        lines.append(f"  claim {c['claim']}: {c['status']} (replication: {c['replication']})")
    for f in record["failures"]:
        lines.append(f"  FAILED {f}")
    for u in record["undecided"]:
        lines.append(f"  undecided {u}")
    for n in record["notes"]:
        lines.append(f"  note: {n}")
    env = record["environment_differences"]
    if env["count"]:
        groups = ", ".join(f"{g} ({len(rows)})" for g, rows in env["groups"].items())
        lines.append(f"  environment differences from the original: {groups} (fairtrial diff)")
    acm = record["acm"]
    lines.append(f"  ACM: {acm['badge'] or 'no badge'} — {acm['note']}")
    return "\n".join(lines)


def copy_record(record: Mapping[str, Any], output: Path) -> None:
    """Export a replication record as JSON (what a registry ingests)."""
    output.write_text(json.dumps(record, indent=2) + "\n")


__all__ = ["OUTCOMES", "compare_arm", "copy_record", "format_record", "judge", "replicate"]
