"""Preregistration: freeze the hypothesis, metric, arms, seeds and analysis plan before any trial.

``fairtrial register SPEC`` writes a *plan record* (:func:`plan_record`) into the ledger's
append-only, hash-chained preregistration log (:mod:`fairtrial.ledger.chain`). When the
experiment of that name runs later, :func:`status` rebuilds the same record from what actually
ran and lists every deviation: arms added, removed or changed, seeds changed, metric, task or
recipe changed, hypothesis or analysis changed, registered trials that never produced a result,
a registration made after the first trial started, and any edit of the log itself.

The plan's analysis method is data computed by :func:`fairtrial.analysis.method` for the
registered hypothesis and seeds, the same function the report's ``settings`` come from; the
run's side is what the analysis of the trials that ran uses (with the report's options), so
running 20 seeds or more on a plan of fewer (BCa instead of the paired t interval) or
``report --failures worst`` is an "analysis changed" deviation. Records of format 1 (an older
fairtrial) hold the method as text only: it is shown, not compared.

Preregistration as a guard against analytic flexibility ("garden of forking paths") follows
Nosek, Ebersole, DeHaven & Mellor (2018), "The preregistration revolution", PNAS 115(11); the
report of deviations follows their advice that deviations are allowed but must be disclosed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from fairtrial import analysis
from fairtrial.errors import RegistrationError
from fairtrial.ledger import DONE, ExperimentRow, Ledger
from fairtrial.record import ExperimentRecord, Hypothesis
from fairtrial.spec import PILOT_SEEDS, Spec

#: 2: the analysis method as data (``analysis.method``); 1: as fixed text, not comparable
FORMAT = 2
OLD_FORMAT_NOTE = "registered with an older fairtrial: method text only, not compared"


def _plan(record: ExperimentRecord, method: Mapping[str, Any]) -> dict[str, Any]:
    """The frozen plan of ``record`` (a spec about to run, or a stored experiment)."""
    exp = record.experiment_table
    arm_table = record.arm_table()
    arms = {a.name: {"kind": a.kind, "components": a.components} for a in record.arms}
    return {
        "format": FORMAT,
        "experiment": record.name,
        "hypothesis": dict(record.spec["hypothesis"]),
        "metric": {"name": exp["metric"], "direction": record.direction},
        "task": {"name": exp["task"], "checksum": record.task_checksum},
        "recipe": {"recipe": exp.get("recipe"), "command": exp.get("command")},
        "arms": arms,
        "seeds": (
            {"auto": True, "max_seeds": exp.get("max_seeds"), "root_seed": exp["root_seed"]}
            if exp["seeds"] == "auto"
            else {"indices": list(range(int(exp["seeds"]))), "root_seed": exp["root_seed"]}
        ),
        "analysis": {
            "primary_metric": exp["metric"],
            "comparisons": sorted(
                f"{a['name']} vs baseline" for a in arm_table["arms"] if a["kind"] == "arm"
            ),
            "ablations": sorted(
                f"{ab['arm']} without {ab['removed']} (arm {ab['as']})"
                for ab in arm_table["ablations"]
            ),
            "method": dict(method),
            "method_text": analysis.method_text(method),
        },
        "other": {"target": exp.get("target"), "time_limit": exp.get("time_limit")},
    }


def plan_method(spec: Spec, options: analysis.Options | None = None) -> dict[str, Any]:
    """The method the analysis will use on ``spec``'s seeds: the number it gives, or with
    ``seeds = "auto"`` any number from the pilot's to ``max_seeds``."""
    normalized = spec.normalized()
    pairs = [PILOT_SEEDS, spec.max_seeds or PILOT_SEEDS] if spec.auto_seeds else [spec.seeds]
    if spec.deterministic:  # one run per arm: no interval, no test
        pairs = [1]
    return analysis.method(
        Hypothesis.from_spec(normalized),
        options or analysis.Options(),
        pairs,
        analysis.holm_families(spec.arm_table()),
        primary=spec.primary,
        design=spec.design,
    )


def plan_record(spec: Spec, options: analysis.Options | None = None) -> dict[str, Any]:
    """The record that ``register`` freezes for ``spec`` (plain JSON data), with the method
    the analysis will use with ``options`` (by default the report's)."""
    record = ExperimentRecord.from_normalized(
        spec.normalized(),
        spec.arm_table(),
        id=spec.experiment_id,
        spec_hash=spec.spec_hash,
        task_checksum=spec.task_checksum,
    )
    return _plan(
        record.replace(name=spec.name, direction=spec.direction), plan_method(spec, options)
    )


def _run_record(exp: ExperimentRow, method: Mapping[str, Any]) -> dict[str, Any]:
    return _plan(ExperimentRecord.from_row(exp), method)


def iso_date(ts: float) -> str:
    """A Unix time as UTC ISO 8601 (seconds)."""
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def register(spec: Spec, ledger: Ledger) -> dict[str, Any]:
    """Freeze ``spec``'s plan in the ledger's preregistration log, before any of its trials.

    Returns the log entry plus ``already`` (True when this very plan was registered before,
    in which case nothing is appended) and ``supersedes`` (the hash of an earlier, different
    registration of the same experiment name, which stays in the log). Raises
    :class:`RegistrationError` when a trial of this experiment has already started.
    """
    started = [t for t in ledger.trials(spec.experiment_id) if t.attempt > 0]
    if started:
        raise RegistrationError(
            f"experiment '{spec.name}' ({spec.experiment_id}) already has {len(started)} "
            "started trials in this store: a preregistration must come before the first trial "
            "(change the spec's name to register a new experiment)"
        )
    check = ledger.check_chain("preregistrations")
    if not check.ok:
        raise RegistrationError(
            "the preregistration log of this store fails its hash check: "
            + "; ".join(check.problems)
        )
    record = plan_record(spec)
    earlier = ledger.preregistrations(spec.name)
    if earlier and json.loads(earlier[-1]["record_json"]) == record:
        return {**earlier[-1], "already": True, "supersedes": None, "head": check.head}
    entry = ledger.add_preregistration(
        name=spec.name,
        experiment_id=spec.experiment_id,
        spec_hash=spec.spec_hash,
        record=record,
    )
    return {
        **entry,
        "already": False,
        "supersedes": earlier[-1]["record_hash"] if earlier else None,
        "head": entry["entry_hash"],
    }


def _diff_keys(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _fmt(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def deviations(
    registered: Mapping[str, Any],
    run: Mapping[str, Any],
    done: Mapping[tuple[str, int], str],
    planned: int | None = None,
) -> list[dict[str, str]]:
    """Every way ``run`` (a plan rebuilt from what ran) departs from ``registered``.

    ``done`` maps (arm, seed) of the experiment's trials to their status; ``planned`` is the
    number of seeds the run planned (with ``seeds = "auto"`` the pilot decides it, so the
    registration holds the rule, not the list). Each deviation is
    ``{"kind": ..., "detail": ...}``; kinds: arms_added, arms_removed, arm_changed,
    seeds_changed, metric_changed, task_changed, recipe_changed, hypothesis_changed,
    analysis_changed, spec_changed, trials_dropped.
    """
    out: list[dict[str, str]] = []

    def add(kind: str, detail: str) -> None:
        out.append({"kind": kind, "detail": detail})

    reg_arms, run_arms = registered["arms"], run["arms"]
    added = [a for a in run_arms if a not in reg_arms]
    removed = [a for a in reg_arms if a not in run_arms]
    if added:
        add("arms_added", "arms not in the registration: " + ", ".join(added))
    if removed:
        add("arms_removed", "registered arms that were not run: " + ", ".join(removed))
    for arm in reg_arms:
        if arm in run_arms and reg_arms[arm] != run_arms[arm]:
            add(
                "arm_changed",
                f"arm '{arm}': registered {_fmt(reg_arms[arm]['components'])}, "
                f"ran {_fmt(run_arms[arm]['components'])}",
            )
    rs, xs = registered["seeds"], run["seeds"]
    indices = rs.get("indices") or list(range(planned or 0))
    ran_seeds = sorted({seed for _, seed in done})
    extra = [s for s in ran_seeds if s not in indices]
    if rs != xs or extra:
        parts = []
        if rs.get("auto") != xs.get("auto"):
            parts.append(
                "seeds = auto registered, a fixed number run"
                if rs.get("auto")
                else "a fixed number of seeds registered, seeds = auto run"
            )
        elif rs.get("auto") and rs.get("max_seeds") != xs.get("max_seeds"):
            parts.append(f"max_seeds {rs.get('max_seeds')} registered, {xs.get('max_seeds')} run")
        elif len(rs.get("indices", [])) != len(xs.get("indices", [])):
            parts.append(f"{len(rs['indices'])} seeds registered, {len(xs['indices'])} planned")
        if rs["root_seed"] != xs["root_seed"]:
            parts.append(f"root seed {rs['root_seed']} registered, {xs['root_seed']} used")
        if extra:
            parts.append("trials ran on unregistered seeds " + ", ".join(map(str, extra)))
        add("seeds_changed", "; ".join(parts) or "seed list changed")
    if registered["metric"] != run["metric"]:
        r, x = registered["metric"], run["metric"]
        add(
            "metric_changed",
            f"registered {r['name']} ({r['direction']}), reported {x['name']} ({x['direction']})",
        )
    if registered["task"] != run["task"]:
        r, x = registered["task"], run["task"]
        what = (
            f"task '{r['name']}' registered, '{x['name']}' run"
            if r["name"] != x["name"]
            else f"task '{r['name']}' data changed (checksum {str(r['checksum'])[:12]} "
            f"registered, {str(x['checksum'])[:12]} run)"
        )
        add("task_changed", what)
    if registered["recipe"] != run["recipe"]:
        add(
            "recipe_changed",
            f"registered {_fmt(registered['recipe'])}, ran {_fmt(run['recipe'])}",
        )
    rh, xh = registered["hypothesis"], run["hypothesis"]
    if rh != xh:
        add(
            "hypothesis_changed",
            "; ".join(
                f"{k}: registered {_fmt(rh.get(k))}, run {_fmt(xh.get(k))}"
                for k in _diff_keys(rh, xh)
            ),
        )
    ra, xa = registered["analysis"], run["analysis"]
    parts = []
    for k in ("primary_metric", "comparisons", "ablations"):
        if ra.get(k) == xa.get(k):
            continue
        if isinstance(ra.get(k), list) and isinstance(xa.get(k), list):
            plus = [c for c in xa[k] if c not in ra[k]]
            minus = [c for c in ra[k] if c not in xa[k]]
            parts.append(f"{k}: " + ", ".join([f"+ {c}" for c in plus] + [f"- {c}" for c in minus]))
        else:
            parts.append(f"{k}: registered {_fmt(ra.get(k))}, run {_fmt(xa.get(k))}")
    if registered.get("format", 1) >= 2:
        parts += analysis.method_changes(ra["method"], xa["method"])
    if parts:
        add("analysis_changed", "; ".join(parts))
    if registered["other"] != run["other"]:
        ro, xo = registered["other"], run["other"]
        add(
            "spec_changed",
            "; ".join(
                f"{k}: registered {_fmt(ro.get(k))}, run {_fmt(xo.get(k))}"
                for k in _diff_keys(ro, xo)
            ),
        )
    missing = [
        (arm, seed)
        for arm in reg_arms
        if arm in run_arms
        for seed in indices
        if done.get((arm, seed)) not in DONE
    ]
    if missing:
        shown = ", ".join(
            f"{arm} seed {seed} ({done.get((arm, seed), 'absent')})" for arm, seed in missing[:8]
        )
        more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        total = sum(1 for arm in reg_arms if arm in run_arms) * len(indices)
        add(
            "trials_dropped",
            f"{len(missing)} of {total} registered trials have no result: {shown}{more}",
        )
    return out


def status(
    ledger: Ledger, exp: ExperimentRow, method: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """The preregistration of ``exp`` and every deviation from it; None if never registered.

    ``method`` is the analysis method of the report being made (``analysis.method`` data); by
    default that of ``analysis.run_method`` with the report's default options.

    The registration used is the latest one of the experiment's name made before its first
    trial started (or, if all were made later, the earliest, with the deviation
    ``registered_late``). Keys: ``hash`` (record sha256), ``short``, ``date`` (UTC ISO),
    ``seq``, ``spec_hash``, ``matches`` (the run's spec is the registered one), ``deviations``
    (list of ``{kind, detail}``), ``chain_ok``, ``chain_problems``, ``registrations`` (how
    many the name has), ``record``, ``method_note`` (why the method was not compared, or None)
    and ``text`` (one line for reports).
    """
    entries = ledger.preregistrations(exp.name)
    if not entries:
        return None
    trials = ledger.trials(exp.id)
    starts = [t.started_at for t in trials if t.started_at is not None]
    first = min(starts) if starts else None
    before = [e for e in entries if first is None or e["created_at"] <= first]
    entry = before[-1] if before else entries[0]
    check = ledger.check_chain("preregistrations")
    problems = list(check.problems)
    if hashlib.sha256(entry["record_json"].encode()).hexdigest() != entry["record_hash"]:
        problems.append(f"preregistrations: entry {entry['seq']}'s record does not match its hash")
    registered = json.loads(entry["record_json"])
    done = {(t.arm, t.seed): t.status for t in trials}
    devs: list[dict[str, str]] = []
    if problems:
        devs.append({"kind": "log_tampered", "detail": "; ".join(problems)})
    if not before:
        devs.append(
            {
                "kind": "registered_late",
                "detail": f"registered {iso_date(entry['created_at'])}, after the first trial "
                f"started {iso_date(first or 0.0)}",
            }
        )
    used = method if method is not None else analysis.run_method(ledger, exp)
    note = None
    try:
        if registered.get("format", 1) < 2:
            note = OLD_FORMAT_NOTE
        devs.extend(deviations(registered, _run_record(exp, used), done, exp.seeds))
    except (KeyError, TypeError, AttributeError) as exc:  # a record edited into another shape
        devs.append({"kind": "log_tampered", "detail": f"unreadable record ({exc!r})"})
    short = entry["record_hash"][:12]
    date = iso_date(entry["created_at"])
    text = f"preregistered {short} {date}"
    if devs:
        kinds = ", ".join(dict.fromkeys(d["kind"].replace("_", " ") for d in devs))
        text += f"; {len(devs)} deviation{'s' if len(devs) != 1 else ''}: {kinds}"
    if note:
        text += f" ({note})"
    return {
        "hash": entry["record_hash"],
        "short": short,
        "date": date,
        "seq": entry["seq"],
        "spec_hash": entry["spec_hash"],
        "matches": entry["spec_hash"] == exp.spec_hash,
        "deviations": devs,
        "chain_ok": not problems,
        "chain_problems": problems,
        "registrations": len(entries),
        "record": registered,
        "method_note": note,
        "text": text,
    }
