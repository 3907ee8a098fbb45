"""Hidden variables: every captured difference between two trials, experiments or bundles.

A *capture* is what fairtrial recorded about a run, in groups: ``config`` (the arm's or the
spec's settings), ``code`` (git commit, uncommitted diff, recipe file hashes, fairtrial
version), ``data`` (task and checksum), ``packages`` (the environment lock), ``hardware``
(machine, interpreter, run settings), ``environment`` (captured variables) and ``seeds``.
:func:`diff` lists every key whose value differs; :func:`arm_isolation` checks, inside one
experiment, that each arm differs from the baseline on the same seed only in its declared
components (Henderson et al. 2018, "Deep reinforcement learning that matters", AAAI, show how
undeclared differences in code and settings change conclusions).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from fairtrial.ledger import ExperimentRow, Ledger, TrialRow
from fairtrial.spec import flatten

GROUPS = ("config", "code", "data", "packages", "hardware", "environment", "seeds")
_HARDWARE = (
    "hostname",
    "os",
    "cpu",
    "cpu_count",
    "memory_bytes",
    "gpus",
    "python",
    "python_implementation",
    "executable",
)
_MIXED = " | "


def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return value


def provenance_groups(p: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The code, packages, hardware and environment groups of one provenance record."""
    git = p.get("git") or {}
    diff_text = git.get("diff") or ""
    code: dict[str, Any] = {
        "fairtrial": p.get("fairtrial"),
        "git.repo": git.get("repo"),
        "git.commit": git.get("commit"),
        "git.branch": git.get("branch"),
        "git.dirty": git.get("dirty"),
        "git.diff_sha256": hashlib.sha256(diff_text.encode()).hexdigest() if diff_text else None,
        "git.untracked": ", ".join(git.get("untracked") or []) or None,
    }
    snap = p.get("code") or {}
    for where in ("files", "external"):
        for key, info in (snap.get(where) or {}).items():
            code[f"{where}/{key}"] = info.get("sha256") if isinstance(info, Mapping) else info
    hardware = {k: _jsonable(p.get(k)) for k in _HARDWARE}
    for k, v in (p.get("run") or {}).items():
        hardware[f"run.{k}"] = v
    return {
        "code": code,
        "packages": dict(p.get("packages") or {}),
        "hardware": hardware,
        "environment": dict(p.get("env") or {}),
    }


def _shown(blob: str) -> str:
    """One of several differing values (JSON text) as text: strings bare, null as absent,
    numbers and the rest as JSON (machines differ in CPU counts, too)."""
    value = json.loads(blob)
    return "absent" if value is None else value if isinstance(value, str) else blob


def _merge(records: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Several provenance groups into one; a key whose values disagree shows all of them."""
    if not records:
        return {g: {} for g in ("code", "packages", "hardware", "environment")}
    out: dict[str, dict[str, Any]] = {}
    for group in records[0]:
        keys = sorted({k for r in records for k in r[group]})
        merged: dict[str, Any] = {}
        for k in keys:
            values = list(dict.fromkeys(json.dumps(r[group].get(k)) for r in records))
            merged[k] = (
                records[0][group].get(k)
                if len(values) == 1
                else _MIXED.join(_shown(v) for v in values)
            )
        out[group] = merged
    return out


def capture(
    *,
    label: str,
    config: Mapping[str, Any],
    data: Mapping[str, Any],
    seeds: Mapping[str, Any],
    provenances: Iterable[Mapping[str, Any]],
) -> dict[str, Any]:
    """A capture from its parts (ledger rows or a bundle's files alike)."""
    provs = list(provenances)
    groups = _merge([provenance_groups(p) for p in provs])
    diffs = sorted({(p.get("git") or {}).get("diff") or "" for p in provs})
    return {
        "label": label,
        "groups": {
            "config": {k: _jsonable(v) for k, v in flatten(config).items()},
            "code": groups["code"],
            "data": dict(data),
            "packages": groups["packages"],
            "hardware": groups["hardware"],
            "environment": groups["environment"],
            "seeds": dict(seeds),
        },
        "git_diff": "\n".join(diffs),
        "provenance_records": len(provs),
    }


def trial_capture(
    ledger: Ledger, trial: TrialRow, exp: ExperimentRow | None = None
) -> dict[str, Any]:
    """The capture of one trial."""
    exp = exp or ledger.experiment(trial.experiment_id)
    prov = [ledger.provenance(trial.provenance_id)] if trial.provenance_id else []
    return capture(
        label=f"trial {trial.id}",
        config=trial.config,
        data={"task": exp.task, "task_checksum": trial.task_checksum or exp.task_checksum},
        seeds={"index": trial.seed, "root_seed": exp.root_seed, **trial.seeds},
        provenances=prov,
    )


def experiment_config(exp: ExperimentRow) -> dict[str, Any]:
    """The settings of an experiment that belong in the config group (its normalised spec)."""
    spec = exp.spec
    experiment = {
        k: v for k, v in spec.get("experiment", {}).items() if k not in ("seeds", "root_seed")
    }
    experiment.pop("task", None)
    return {
        "experiment": experiment,
        "hypothesis": spec.get("hypothesis", {}),
        "baseline": spec.get("baseline", {}),
        "arms": spec.get("arms", {}),
        "ablations": spec.get("ablations", []),
    }


def experiment_capture(
    exp: ExperimentRow,
    trials: list[TrialRow],
    provenances: Mapping[str, Mapping[str, Any]],
    label: str | None = None,
) -> dict[str, Any]:
    """The capture of a whole experiment (its trials' provenance records merged)."""
    ids = sorted({t.provenance_id for t in trials if t.provenance_id})
    checksums = sorted({t.task_checksum for t in trials if t.task_checksum})
    return capture(
        label=label or f"experiment {exp.name} ({exp.id})",
        config=experiment_config(exp),
        data={
            "task": exp.task,
            "task_checksum": _MIXED.join(checksums) if checksums else exp.task_checksum,
        },
        seeds={"seeds": exp.seeds, "root_seed": exp.root_seed},
        provenances=[provenances[i] for i in ids if i in provenances],
    )


def ledger_experiment_capture(ledger: Ledger, exp: ExperimentRow) -> dict[str, Any]:
    trials = ledger.trials(exp.id)
    ids = {t.provenance_id for t in trials if t.provenance_id}
    return experiment_capture(exp, trials, {i: ledger.provenance(i) for i in ids})


def diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Every captured difference between captures ``a`` and ``b``, grouped.

    Returns ``{"a", "b", "groups": {group: [{"key", "a", "b"}]}, "count", "identical",
    "code_diff"}``; ``code_diff`` is a unified diff between the two uncommitted git diffs when
    they differ. A key missing on one side shows as None there.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for group in GROUPS:
        ga, gb = a["groups"].get(group, {}), b["groups"].get(group, {})
        rows = [
            {"key": k, "a": ga.get(k), "b": gb.get(k)}
            for k in sorted(set(ga) | set(gb))
            if ga.get(k) != gb.get(k)
        ]
        groups[group] = rows
    code_diff = None
    if a.get("git_diff", "") != b.get("git_diff", ""):
        code_diff = "".join(
            difflib.unified_diff(
                a.get("git_diff", "").splitlines(keepends=True),
                b.get("git_diff", "").splitlines(keepends=True),
                fromfile=f"{a['label']}: uncommitted changes",
                tofile=f"{b['label']}: uncommitted changes",
            )
        )
    count = sum(len(v) for v in groups.values())
    return {
        "a": a["label"],
        "b": b["label"],
        "groups": groups,
        "count": count,
        "identical": count == 0,
        "code_diff": code_diff,
    }


def _short(value: Any, width: int = 60) -> str:
    text = "absent" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def format_diff(result: Mapping[str, Any], *, code_lines: int = 60) -> str:
    """``diff``'s result as plain text, one line per difference, grouped."""
    lines = [f"A: {result['a']}", f"B: {result['b']}"]
    if result["identical"]:
        lines.append("no captured differences")
        return "\n".join(lines)
    same = []
    for group in GROUPS:
        rows = result["groups"].get(group, [])
        if not rows:
            same.append(group)
            continue
        lines.append(f"{group} ({len(rows)})")
        for r in rows:
            lines.append(f"  {r['key']}: {_short(r['a'])} → {_short(r['b'])}")
        if group == "code" and result.get("code_diff"):
            diff_lines = result["code_diff"].splitlines()
            lines.extend("    " + d for d in diff_lines[:code_lines])
            if len(diff_lines) > code_lines:
                lines.append(f"    … {len(diff_lines) - code_lines} more lines")
    if same:
        lines.append("no differences in: " + ", ".join(same))
    return "\n".join(lines)


def _seed_list(seeds: list[int]) -> str:
    return ", ".join(map(str, seeds[:10])) + (" …" if len(seeds) > 10 else "")


def arm_isolation(ledger: Ledger, exp: ExperimentRow) -> dict[str, Any]:
    """Check that each arm differs from the baseline, seed by seed, only in its components.

    For every seed both an arm and the baseline ran, compares their configs (only the declared
    components may differ, with the declared values), derived seeds, task checksums and
    provenance (code, packages, hardware, environment). Returns ``{"ok", "pairs" (compared),
    "arms": {arm: {"declared": [...], "undeclared": [{"group", "key", "arm", "baseline",
    "seeds"}]}}, "text"}``.
    """
    trials = ledger.trials(exp.id)
    by = {(t.arm, t.seed): t for t in trials if t.attempt > 0}
    declared = {a["name"]: dict(a["components"]) for a in exp.arms["arms"]}
    # [tuning]: each arm ran its own best values of the tuned keys (the tuning part reports them)
    tuning = exp.spec.get("tuning") or {}
    tuned = set(tuning.get("space") or {})
    for own in (tuning.get("arms") or {}).values():
        tuned |= set(own)
    prov_cache: dict[str, dict[str, dict[str, Any]]] = {}

    def groups_of(t: TrialRow) -> dict[str, dict[str, Any]]:
        pid = t.provenance_id or ""
        if pid not in prov_cache:
            prov_cache[pid] = provenance_groups(ledger.provenance(pid)) if pid else {}
        return prov_cache[pid]

    pairs = 0
    arms: dict[str, dict[str, Any]] = {}
    for arm, comps in declared.items():
        if arm == "baseline":
            continue
        found: dict[tuple[str, str, str, str], list[int]] = {}

        def note(
            group: str,
            key: str,
            av: Any,
            bv: Any,
            seed: int,
            found: dict[tuple[str, str, str, str], list[int]] = found,
        ) -> None:
            found.setdefault((group, key, _short(av), _short(bv)), []).append(seed)

        for (a_name, seed), t in sorted(by.items()):
            base = by.get(("baseline", seed))
            if a_name != arm or base is None:
                continue
            pairs += 1
            fa, fb = flatten(t.config), flatten(base.config)
            for k in sorted(set(fa) | set(fb)):
                if k in tuned:
                    continue
                if k in comps:
                    if fa.get(k) != comps[k]:
                        note("config", k, fa.get(k), f"declared {comps[k]!r}", seed)
                elif fa.get(k) != fb.get(k):
                    note("config", k, fa.get(k), fb.get(k), seed)
            for k in sorted(set(t.seeds) | set(base.seeds)):
                if t.seeds.get(k) != base.seeds.get(k):
                    note("seeds", k, t.seeds.get(k), base.seeds.get(k), seed)
            if t.task_checksum != base.task_checksum:
                note("data", "task_checksum", t.task_checksum, base.task_checksum, seed)
            if t.provenance_id != base.provenance_id:
                ga, gb = groups_of(t), groups_of(base)
                for group in ("code", "packages", "hardware", "environment"):
                    x, y = ga.get(group, {}), gb.get(group, {})
                    for k in sorted(set(x) | set(y)):
                        if x.get(k) != y.get(k):
                            note(group, k, x.get(k), y.get(k), seed)
        arms[arm] = {
            "declared": sorted(comps),
            "undeclared": [
                {"group": g, "key": k, "arm": av, "baseline": bv, "seeds": seeds}
                for (g, k, av, bv), seeds in found.items()
            ],
        }
    ok = all(not a["undeclared"] for a in arms.values())
    if ok:
        text = f"arms differ only in their declared components ({pairs} seed pairs checked)"
    else:
        parts = []
        for arm, info in arms.items():
            if info["undeclared"]:
                what = "; ".join(
                    f"{u['group']} {u['key']} ({_short(u['arm'], 30)} vs "
                    f"{_short(u['baseline'], 30)}, seeds {_seed_list(u['seeds'])})"
                    for u in info["undeclared"][:6]
                )
                more = len(info["undeclared"]) - 6
                parts.append(
                    f"arm '{arm}' also differed from the baseline in {what}"
                    + (f" and {more} more" if more > 0 else "")
                )
        text = ". ".join(parts)
    return {"ok": ok, "pairs": pairs, "arms": arms, "text": text}
