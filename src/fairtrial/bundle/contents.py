"""What goes into a bundle: every member but the manifest, read from the ledger
(:func:`bundle_files`): the experiment row and its spec as a spec file, the preregistration,
the code snapshot with the recipe's files, the environment lock and provenance, the task,
the trials, metrics, analysis and test predictions, and the sealed test log excerpt; and
:func:`write_bundle`, which hands them to the archive layer. It is separate from the archive
(which takes any members) and from the checks (which judge a bundle someone else wrote):
this is the only part that reads a ledger, and the only one to change when a member is added.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fairtrial import prereg, testlog
from fairtrial.bundle.archive import Limits, _check_name, _dumps, file_sha256, write_archive
from fairtrial.errors import BundleError
from fairtrial.ledger import ExperimentRow, Ledger, TrialRow
from fairtrial.tomlw import spec_toml


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _snapshot_record(ledger: Ledger, trials: list[TrialRow]) -> str | None:
    """The provenance record most trials ran under (the latest one on a tie)."""
    counts: dict[str, tuple[int, float]] = {}
    for t in trials:
        if t.provenance_id:
            n, last = counts.get(t.provenance_id, (0, 0.0))
            counts[t.provenance_id] = (n + 1, max(last, t.finished_at or 0.0))
    if not counts:
        return None
    return max(counts, key=lambda k: counts[k])


def _repeats(ledger: Ledger, exp: ExperimentRow) -> list[dict[str, Any]]:
    """The baseline trials run a second time (the timing noise): arm, seed, compute record."""
    from fairtrial.ledger.stages import REPEAT

    records = ledger.stage_compute(exp.id, REPEAT)
    return [
        {"arm": row.arm, "seed": row.seed, "compute": records[row.id]}
        for row, _ in ledger.stage_trials(exp.id, REPEAT)
        if row.status == "finished" and row.id in records
    ]


def bundle_files(ledger: Ledger, exp: ExperimentRow) -> dict[str, bytes]:
    """Every member of ``exp``'s bundle but the manifest: path -> content."""
    from fairtrial.analysis.document import analyze

    trials = ledger.trials(exp.id)
    prov_ids = sorted({t.provenance_id for t in trials if t.provenance_id})
    provs = {pid: ledger.provenance(pid) for pid in prov_ids}
    files: dict[str, bytes] = {}
    files["experiment.json"] = _dumps(dataclasses.asdict(exp))
    files["spec.toml"] = spec_toml(exp.spec).encode()
    files["preregistration.json"] = _dumps(_clean(prereg.status(ledger, exp)))

    main_id = _snapshot_record(ledger, trials)
    main = provs.get(main_id or "", {})
    code = main.get("code") or {}
    git = dict(main.get("git") or {})
    diff_text = git.pop("diff", "") or ""
    snapshot = {
        "provenance_id": main_id,
        "recipe": code.get("recipe", exp.spec["experiment"].get("recipe")),
        "command": code.get("command", exp.spec["experiment"].get("command")),
        "module": code.get("module"),
        "files": code.get("files", {}),
        "external": code.get("external", {}),
        "skipped": code.get("skipped", []),
        "recorded": bool(code),
        "mixed": len({json.dumps((p.get("code") or {}), sort_keys=True) for p in provs.values()})
        > 1,
        "git": git,
    }
    files["code/snapshot.json"] = _dumps(snapshot)
    files["code/git.diff"] = diff_text.encode()
    for where in ("files", "external"):
        for rel, info in (code.get(where) or {}).items():
            _check_name(f"code/{where}/{rel}", Limits())
            files[f"code/{where}/{rel}"] = ledger.code_file(info["sha256"])

    packages = main.get("packages") or {}
    requirements = "".join(f"{k}=={v}\n" for k, v in sorted(packages.items()))
    files["environment/lock.json"] = _dumps(
        {
            "python": main.get("python"),
            "implementation": main.get("python_implementation"),
            "platform": main.get("os"),
            "packages": packages,
            "sha256": hashlib.sha256(requirements.rstrip("\n").encode()).hexdigest(),
            "provenance_id": main_id,
        }
    )
    files["environment/requirements.txt"] = requirements.encode()
    files["environment/provenance.json"] = _dumps(provs)
    files["task.json"] = _dumps(
        {
            "task": exp.task,
            "checksum": exp.task_checksum,
            "trial_checksums": sorted({t.task_checksum for t in trials if t.task_checksum}),
        }
    )
    files["results/trials.json"] = _dumps(_clean([dataclasses.asdict(t) for t in trials]))
    lines = []
    for t in trials:
        for attempt, step, tt, name, value in ledger.metrics(t.id):
            row = [t.id, attempt, step, tt, name, _clean(value)]
            lines.append(json.dumps(row, allow_nan=False))
    files["results/metrics.jsonl"] = ("\n".join(lines) + ("\n" if lines else "")).encode()
    files["results/analysis.json"] = _dumps(_clean(analyze(ledger, exp).to_dict()))
    # each trial's compute record (latest attempt): the registry re-tests the cost verdicts
    files["results/compute.json"] = _dumps(_clean(ledger.compute(exp.id)))
    files["results/repeats.json"] = _dumps(_clean(_repeats(ledger, exp)))
    current = {t.id: t.attempt for t in trials if t.status == "finished"}
    # compact: one label per test example per trial adds up
    files["results/predictions.json"] = json.dumps(
        {
            ev["trial_id"]: {"attempt": ev["attempt"], "predictions": ev["predictions"]}
            for ev in ledger.test_evaluations(exp.id)
            if current.get(ev["trial_id"]) == ev["attempt"]
        },
        sort_keys=True,
        separators=(",", ":"),
        allow_nan=False,
    ).encode()
    files["testlog.json"] = _dumps(
        _clean(
            {"summary": testlog.summary(ledger, exp), "entries": testlog.excerpt(ledger, exp.id)}
        )
    )
    return files


def write_bundle(ledger: Ledger, exp: ExperimentRow, output: Path) -> dict[str, Any]:
    """Write ``exp``'s bundle to ``output`` (``.tar.gz``); returns its manifest plus sha256."""
    children = exp.spec.get("children")
    if children:
        names = ", ".join(f"{exp.name}.{t}" for t in exp.spec.get("tasks") or children)
        raise BundleError(
            f"experiment '{exp.name}' is over {len(children)} tasks: bundle each task's "
            f"experiment ({names}); one bundle of them all is not supported yet"
        )
    files = bundle_files(ledger, exp)
    manifest = write_archive(
        files,
        output,
        extra={"experiment": {"id": exp.id, "name": exp.name, "spec_hash": exp.spec_hash}},
    )
    return {**manifest, "sha256": file_sha256(output)}
