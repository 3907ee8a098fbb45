"""Reading a bundle: :func:`open_archive` (the archive layer's checks and extraction, then the
manifest), :func:`read_bundle` (and then the shape and cross-member checks), the
:class:`Bundle` they return (the extracted members, typed as ledger rows), and
:func:`verify_bundle` (all of it plus re-scoring the results, for ``fairtrial verify``). It is
separate because it is the one entry point the CLI, ``replicate`` and the registry use: it
puts the archive layer and the checks together in the order that keeps hostile input from
reaching the parsers, and nothing in it is ever imported or run from the bundle.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fairtrial.bundle.archive import (
    MANIFEST,
    Limits,
    _corrupt,
    _extract,
    _scan,
    file_sha256,
    load_json,
)
from fairtrial.bundle.checks import _check_contents, _check_manifest, _check_structure, _row
from fairtrial.diff import experiment_capture
from fairtrial.errors import BundleError
from fairtrial.ledger import ExperimentRow, TrialRow
from fairtrial.results import Analysis
from fairtrial.typed import ShapeError


class Bundle:
    """An extracted, verified bundle (in a temporary folder, removed by :meth:`close`)."""

    def __init__(
        self,
        path: Path,
        root: Path,
        manifest: dict[str, Any],
        sha256: str,
        limits: Limits | None = None,
    ) -> None:
        self.path = path
        self.root = root
        self.manifest = manifest
        self.sha256 = sha256
        self.limits = limits or Limits()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def manifest_sha256(self) -> str:
        return file_sha256(self.root / MANIFEST)

    def read_bytes(self, name: str) -> bytes:
        if name not in self.manifest["files"]:
            raise BundleError(f"bundle {self.path} has no member '{name}'")
        return (self.root / name).read_bytes()

    def json(self, name: str) -> Any:
        return load_json(self.read_bytes(name), name, self.limits)

    def analysis(self) -> Analysis:
        """The analysis the bundle holds, typed; one line naming the key when it has another
        shape (a document written by any version of fairtrial reads)."""
        member = "results/analysis.json"
        try:
            return Analysis.from_dict(self.json(member))
        except ShapeError as exc:
            raise BundleError(f"{member}: {exc}") from None

    def experiment(self) -> ExperimentRow:
        row: ExperimentRow = _row(ExperimentRow, self.json("experiment.json"), "experiment.json")
        return row

    def trials(self) -> list[TrialRow]:
        return [_row(TrialRow, t, "results/trials.json") for t in self.json("results/trials.json")]

    def costs(
        self, trials: list[TrialRow], settings: Mapping[str, Any] | None = None
    ) -> dict[str, dict[int, dict[str, Any]]]:
        """arm -> seed -> the compute record of each finished trial (empty for a bundle from
        before ``results/compute.json``), priced with ``settings`` (a ``[compute]`` table)."""
        from fairtrial import meter

        if "results/compute.json" not in self.manifest["files"]:
            return {}
        records = self.json("results/compute.json")
        if not isinstance(records, dict):
            raise BundleError("results/compute.json: not an object of trial id -> record")
        known = set(meter.ComputeSettings.__dataclass_fields__)
        try:
            s = meter.ComputeSettings.from_table(
                {k: v for k, v in (settings or {}).items() if k in known and v is not None}
            )
        except (TypeError, ValueError) as exc:
            raise BundleError(f"results/analysis.json: compute.settings: {exc}") from None
        out: dict[str, dict[int, dict[str, Any]]] = {}
        for t in trials:
            rec = records.get(t.id)
            if t.status == "finished" and isinstance(rec, dict):
                try:
                    out.setdefault(t.arm, {})[t.seed] = meter.fill_record(rec, s)
                except (TypeError, ValueError):
                    raise BundleError(
                        f"results/compute.json: trial {t.id}'s record holds a figure that is "
                        "not a number"
                    ) from None
        return out

    def repeats(self) -> dict[str, dict[int, dict[str, Any]]]:
        """arm -> seed -> the compute record of each trial run a second time to measure the
        timing noise (empty for a bundle without ``results/repeats.json``)."""
        from fairtrial import meter

        if "results/repeats.json" not in self.manifest["files"]:
            return {}
        rows = self.json("results/repeats.json")
        out: dict[str, dict[int, dict[str, Any]]] = {}
        for i, r in enumerate(rows if isinstance(rows, list) else [None]):
            if not (
                isinstance(r, dict)
                and isinstance(r.get("arm"), str)
                and isinstance(r.get("seed"), int)
                and isinstance(r.get("compute"), dict)
            ):
                raise BundleError(f"results/repeats.json[{i}]: not {{arm, seed, compute}}")
            try:
                out.setdefault(r["arm"], {})[r["seed"]] = meter.fill_record(r["compute"])
            except (TypeError, ValueError):
                raise BundleError(
                    f"results/repeats.json[{i}]: a figure of the record is not a number"
                ) from None
        return out

    def provenances(self) -> dict[str, dict[str, Any]]:
        data: dict[str, dict[str, Any]] = self.json("environment/provenance.json")
        return data

    def capture(self) -> dict[str, Any]:
        """The bundle's capture for :func:`fairtrial.diff.diff`."""
        exp = self.experiment()
        return experiment_capture(
            exp, self.trials(), self.provenances(), label=f"bundle {self.path.name} ({exp.name})"
        )


def open_archive(path: str | Path, *, limits: Limits | None = None) -> Bundle:
    """The archive layer of :func:`read_bundle`: check every member, extract into a fresh
    temporary folder, and compare every file with the manifest (no cross-member checks)."""
    limits = limits or Limits()
    p = Path(path)
    if not p.is_file():
        raise BundleError(f"{p}: no such bundle file")
    members = _scan(p, limits)
    root = Path(tempfile.mkdtemp(prefix="fairtrial-bundle-"))
    try:
        got = _extract(p, members, root, limits)
        manifest = _check_manifest(root, got, limits)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return Bundle(p, root, manifest, file_sha256(p), limits)


def read_bundle(path: str | Path, *, limits: Limits | None = None) -> Bundle:
    """Check, extract (to a fresh temporary folder) and verify a bundle; nothing is executed.

    Raises :class:`BundleError` naming the member for an unsafe archive (links, absolute
    paths, ``..``, oversize members, too many members, ...), a corrupt one (gzip CRC, data
    after the end), a file that differs from the manifest, or members that contradict each
    other (a recipe file or result edited and re-manifested).
    """
    b = open_archive(path, limits=limits)
    try:
        with _corrupt("(contents)"):
            try:
                _check_structure(b)
                _check_contents(b)
            except (KeyError, TypeError, AttributeError) as exc:
                raise BundleError(
                    f"bundle is inconsistent: unexpected structure ({exc!r})"
                ) from None
    except BaseException:
        b.close()
        raise
    return b


def verify_bundle(path: str | Path, *, limits: Limits | None = None) -> dict[str, Any]:
    """Verify a bundle without keeping it extracted; returns what was checked."""
    t0 = time.perf_counter()
    from fairtrial import rescore

    with read_bundle(path, limits=limits) as b:
        exp = b.experiment()
        trials = b.trials()
        # the results against the task's own test labels, where this fairtrial has them
        rescore.check_identity(exp)
        has_preds = "results/predictions.json" in b.manifest["files"]
        results = rescore.rescore(
            exp, trials, b.json("results/predictions.json") if has_preds else None
        )
        return {
            "ok": True,
            "path": str(b.path),
            "sha256": b.sha256,
            "manifest_sha256": b.manifest_sha256,
            "files": len(b.manifest["files"]) + 1,
            "bytes": sum(int(f["size"]) for f in b.manifest["files"].values()),
            "format_version": b.manifest["format_version"],
            "fairtrial": b.manifest.get("fairtrial"),
            "experiment": {"id": exp.id, "name": exp.name, "spec_hash": exp.spec_hash},
            "trials": len(trials),
            "finished": sum(t.status == "finished" for t in trials),
            # the code version(s) the trials ran (provenance.code_hash; None before it existed)
            "code": sorted({t.code_hash for t in trials if t.code_hash}),
            "preregistered": (b.json("preregistration.json") or {}).get("text"),
            "results": results.as_dict(),
            "seconds": time.perf_counter() - t0,
        }
