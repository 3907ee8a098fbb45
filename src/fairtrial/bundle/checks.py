"""The checks of an extracted bundle: every file against the manifest (:func:`_check_manifest`),
the JSON members' shapes (:func:`_check_structure`: the types their readers use, names that
become folder names, safe code file paths; each failure one line naming the member and the
field), and the members against each other (:func:`_check_contents`: spec hash, recipe files
against the provenance the trials ran with, results against the sealed test log), so a member
edited and re-manifested is still found. They are separate from the archive layer because they
judge content, not bytes: they run only on a bundle that was already extracted safely.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairtrial.bundle.archive import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    Limits,
    _path_problem,
    json_too_deep,
    load_json,
)
from fairtrial.errors import BundleError
from fairtrial.ledger import ExperimentRow, TrialRow
from fairtrial.ledger import chain as chain_mod
from fairtrial.ledger.store import TEST_LOG_FIELDS

if TYPE_CHECKING:
    from fairtrial.bundle.reader import Bundle


def _row(cls: Any, data: Any, member: str) -> Any:
    if not isinstance(data, Mapping):
        raise BundleError(f"bundle member '{member}' does not hold the expected records")
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    # fields with a default came later: older bundles lack them
    required = {f.name for f in fields if f.default is dataclasses.MISSING}
    missing = required - set(data)
    if missing:
        raise BundleError(f"bundle member '{member}' lacks {', '.join(sorted(missing))}")
    return cls(**{k: v for k, v in data.items() if k in names})


# -- the shapes of the JSON members: one line naming the member and field for a wrong type ----
_KIND_TEXT = {
    "str": "a string",
    "int": "a whole number",
    "number": "a number",
    "bool": "true or false",
    "null": "null",
    "object": "an object",
    "list": "a list",
}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "str"
    return "list" if isinstance(value, list) else "object"


def _shown(value: Any) -> str:
    kind = _kind(value)
    if kind in ("str", "int", "number"):
        text = repr(value)
        text = text if len(text) <= 40 else text[:37] + "..."
        return f"the {'string' if kind == 'str' else 'number'} {text}"
    if kind == "bool":
        return "true" if value else "false"
    return {"null": "null", "list": "a list", "object": "an object"}[kind]


def _hint_kinds(tp: Any) -> tuple[str, ...]:
    """The JSON kinds a dataclass field's type hint allows ("any" for Any)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return tuple(k for arg in typing.get_args(tp) for k in _hint_kinds(arg))
    simple = {str: "str", int: "int", float: "number", bool: "bool", type(None): "null"}
    if tp in simple:
        return (simple[tp],)
    if origin is dict or tp is dict:
        return ("object",)
    if origin is list or tp is list:
        return ("list",)
    return ("any",)


class _Shape:
    """Type checks of one JSON member, each failure one line naming the member and field."""

    def __init__(self, member: str) -> None:
        self.member = member

    def fail(self, field: str, text: str) -> BundleError:
        # keys come from the bundle: escaped, so the message stays one line
        where = f"field '{repr(field)[1:-1][:200]}' " if field else ""
        return BundleError(f"bundle member '{self.member}': {where}{text}")

    def check(self, value: Any, field: str, *kinds: str) -> Any:
        got = _kind(value)
        if "any" in kinds or got in kinds or (got == "int" and "number" in kinds):
            return value
        expected = " or ".join(_KIND_TEXT[k] for k in kinds)
        raise self.fail(field, f"is {_shown(value)}, expected {expected}")

    def obj(self, value: Any, field: str, *, null: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = self.check(value, field, "object", *(("null",) if null else ()))
        return out or {}

    def seq(self, value: Any, field: str, *, null: bool = False) -> list[Any]:
        out: list[Any] = self.check(value, field, "list", *(("null",) if null else ()))
        return out or []

    def table(
        self, data: dict[str, Any], key: str, prefix: str, *, null: bool = False
    ) -> dict[str, Any]:
        """``data[key]``, an object; {} when missing (or null, where ``null`` allows it)."""
        got = self.key(data, key, prefix, "object", *(("null",) if null else ()))
        return got or {}

    def items(
        self, data: dict[str, Any], key: str, prefix: str, *, null: bool = False
    ) -> list[Any]:
        """``data[key]``, a list; [] when missing (or null, where ``null`` allows it)."""
        got = self.key(data, key, prefix, "list", *(("null",) if null else ()))
        return got or []

    def key(
        self, data: dict[str, Any], key: str, prefix: str, *kinds: str, required: bool = False
    ) -> Any:
        field = f"{prefix}.{key}" if prefix else key
        if key not in data:
            if required:
                raise self.fail(
                    field, f"is missing, expected {' or '.join(_KIND_TEXT[k] for k in kinds)}"
                )
            return None
        return self.check(data[key], field, *kinds)

    def name(self, value: Any, field: str, what: str) -> str:
        from fairtrial.spec import NAME_RULE, valid_name

        self.check(value, field, "str")
        if not valid_name(value):
            raise self.fail(field, f"{_shown(value)} is not a valid {what}: {NAME_RULE}")
        text: str = value
        return text

    def row(self, cls: Any, value: Any, field: str) -> dict[str, Any]:
        """A dataclass row: every field present (those with defaults may be missing: older
        bundles lack them) and of its annotated type; dict[str, X] values checked too."""
        data = self.obj(value, field)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            kinds = _hint_kinds(tp)
            got = self.key(data, f.name, field, *kinds, required=f.default is dataclasses.MISSING)
            args = typing.get_args(tp)
            if isinstance(got, dict) and typing.get_origin(tp) is dict and args[1] is not Any:
                for k, v in got.items():
                    self.check(
                        v,
                        f"{field}.{f.name}.{k}" if field else f"{f.name}.{k}",
                        *_hint_kinds(args[1]),
                    )
        return data


def _check_code_files(
    shape: _Shape, snap: dict[str, Any], prefix: str, limits: Limits | None
) -> None:
    """``files`` and ``external`` of a code snapshot; with ``limits``, each key must be a
    safe relative path (replicate writes the snapshot's files under those names)."""
    for where in ("files", "external"):
        table = shape.obj(snap.get(where), f"{prefix}{where}", null=True)
        for rel, info in table.items():
            if limits is not None:
                problem = _path_problem(rel, limits)
                if problem is None and rel.endswith("/"):
                    problem = "ends with '/'"
                if problem is not None:
                    raise shape.fail(
                        f"{prefix}{where}",
                        f"names the file '{repr(rel)[1:-1][:200]}', which {problem}: recipe "
                        "files are relative paths inside the spec's folder",
                    )
            shape.check(info, f"{prefix}{where}.{rel}", "object", "str")


def _check_structure(b: Bundle) -> None:
    """The JSON members hold what the readers of a bundle use, of the types they use it as;
    names that become folder names follow the spec's rule (:func:`fairtrial.spec.valid_name`),
    paths are safe relative paths. Each failure names the member and the field."""
    for member in b.manifest["files"]:
        # every JSON member, also those only others read (results/metrics.jsonl: the registry)
        if not member.endswith((".json", ".jsonl")):
            continue
        data = b.read_bytes(member)
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BundleError(f"bundle member '{member}' is not UTF-8 text ({exc})") from None
        if json_too_deep(data, b.limits.max_json_depth):
            raise BundleError(
                f"bundle member '{member}' nests arrays or objects more than "
                f"{b.limits.max_json_depth} deep (limit)"
            )
    s = _Shape("experiment.json")
    exp = s.row(ExperimentRow, b.json("experiment.json"), "")
    s.name(exp["id"], "id", "experiment id")
    s.name(exp["name"], "name", "experiment name")
    spec = s.obj(exp["spec"], "spec")
    e = s.obj(s.key(spec, "experiment", "spec", "object", required=True), "spec.experiment")
    s.key(e, "name", "spec.experiment", "str", required=True)
    if s.name(e["name"], "spec.experiment.name", "experiment name") != exp["name"]:
        raise s.fail("spec.experiment.name", f"'{e['name']}' is not the experiment's name")
    for key, kinds in {
        "task": ("str",),
        "recipe": ("str", "null"),
        "command": ("str", "null"),
        "seeds": ("int", "str"),
        "max_seeds": ("int", "null"),
        "deterministic": ("bool",),
        "root_seed": ("int",),
        "metric": ("str", "null"),
        "target": ("number", "null"),
        "time_limit": ("number", "null"),
    }.items():
        s.key(e, key, "spec.experiment", *kinds, required=key == "task")
    hyp = s.table(spec, "hypothesis", "spec")
    s.key(hyp, "claim", "spec.hypothesis", "str", "null")
    for key in ("smallest_effect", "alpha", "power"):
        s.key(hyp, key, "spec.hypothesis", "number", "null")
    s.table(spec, "baseline", "spec")
    for arm, components in s.table(spec, "arms", "spec").items():
        s.name(arm, f"spec.arms.{arm}", "arm name")
        s.obj(components, f"spec.arms.{arm}")
    for i, arm in enumerate(s.items(spec, "ablations", "spec", null=True)):
        s.name(arm, f"spec.ablations[{i}]", "arm name")
    table = s.obj(exp["arms"], "arms")
    arms: set[str] = set()
    for i, a in enumerate(s.seq(s.key(table, "arms", "arms", "list", required=True), "arms.arms")):
        field = f"arms.arms[{i}]"
        a = s.obj(a, field)
        kind = s.key(a, "kind", field, "str", required=True)
        s.key(a, "components", field, "object", required=True)
        parent = s.key(a, "parent", field, "str", "null")
        s.key(a, "removed", field, "str", "null")
        if kind == "ablation" and isinstance(parent, str):
            # named after its arm and the key it drops, '{arm}-no-{key}': one folder name
            s.name(parent, f"{field}.parent", "arm name")
            name: str = s.key(a, "name", field, "str", required=True)
            if (
                not name.startswith(f"{parent}-no-")
                or "/" in name
                or _path_problem(name, b.limits) is not None
            ):
                raise s.fail(f"{field}.name", f"{_shown(name)} is not a valid ablation name")
        else:
            name = s.name(a.get("name"), f"{field}.name", "arm name")
        arms.add(name)
    for i, ab in enumerate(s.items(table, "ablations", "arms")):
        ab = s.obj(ab, f"arms.ablations[{i}]")
        for key in ("arm", "removed", "as"):
            s.key(ab, key, f"arms.ablations[{i}]", "str", required=True)

    s = _Shape("results/trials.json")
    for i, t in enumerate(s.seq(b.json("results/trials.json"), "")):
        t = s.row(TrialRow, t, f"[{i}]")
        s.name(t["id"], f"[{i}].id", "trial id")
        s.name(t["experiment_id"], f"[{i}].experiment_id", "experiment id")
        if t["arm"] not in arms:
            raise s.fail(f"[{i}].arm", f"{_shown(t['arm'])} is not an arm of experiment.json")

    s = _Shape("code/snapshot.json")
    snap = s.obj(b.json("code/snapshot.json"), "")
    _check_code_files(s, snap, "", b.limits)
    for key in ("module", "recipe", "command"):
        s.key(snap, key, "", "str", "null")
    s.obj(snap.get("git"), "git", null=True)

    s = _Shape("environment/provenance.json")
    for pid, p in s.obj(b.json("environment/provenance.json"), "").items():
        p = s.obj(p, pid)
        git = s.obj(p.get("git"), f"{pid}.git", null=True)
        s.key(git, "diff", f"{pid}.git", "str", "null")
        for i, f in enumerate(s.seq(git.get("untracked"), f"{pid}.git.untracked", null=True)):
            s.check(f, f"{pid}.git.untracked[{i}]", "str")
        code = s.obj(p.get("code"), f"{pid}.code", null=True)
        _check_code_files(s, code, f"{pid}.code.", None)
        for key in ("run", "packages", "env"):
            s.obj(p.get(key), f"{pid}.{key}", null=True)

    s = _Shape("testlog.json")
    log = s.obj(b.json("testlog.json"), "")
    s.obj(log.get("summary"), "summary", null=True)
    for i, entry in enumerate(s.items(log, "entries", "")):
        field = f"entries[{i}]"
        entry = s.obj(entry, field)
        for key, kinds in {
            "trial_id": ("str",),
            "attempt": ("int",),
            "score": ("number", "null"),
            "prev_hash": ("str",),
            "entry_hash": ("str",),
        }.items():
            s.key(entry, key, field, *kinds, required=True)
        s.key(entry, "seq", field, "int")
        s.key(entry, "predictions_sha256", field, "str", "null")

    if "results/predictions.json" in b.manifest["files"]:
        s = _Shape("results/predictions.json")
        for trial_id, p in s.obj(b.json("results/predictions.json"), "").items():
            p = s.obj(p, trial_id)
            s.key(p, "attempt", trial_id, "int", required=True)
            # an object: an external task's scores, as its recipe reported them
            s.key(p, "predictions", trial_id, "list", "object", required=True)

    s = _Shape("results/analysis.json")
    doc = s.obj(b.json("results/analysis.json"), "")
    for arm, a in s.table(doc, "arms", "").items():
        a = s.obj(a, f"arms.{arm}")
        for i, seed in enumerate(s.items(a, "seeds", f"arms.{arm}")):
            s.check(seed, f"arms.{arm}.seeds[{i}]", "int")
        for i, v in enumerate(s.items(a, "values", f"arms.{arm}")):
            s.check(v, f"arms.{arm}.values[{i}]", "number", "null")
    for group, against in (("comparisons", "against"), ("ablations", "removed")):
        for i, c in enumerate(s.items(doc, group, "")):
            c = s.obj(c, f"{group}[{i}]")
            for key in ("arm", against):
                s.key(c, key, f"{group}[{i}]", "str", required=True)
            s.key(c, "verdict", f"{group}[{i}]", "str", "null")

    s = _Shape("preregistration.json")
    prereg_doc = s.obj(b.json("preregistration.json"), "", null=True)
    s.key(prereg_doc, "text", "", "str", "null")
    s.key(prereg_doc, "deviations", "", "list", "null")
    s.key(prereg_doc, "chain_ok", "", "bool", "null")


def _check_manifest(root: Path, got: dict[str, tuple[str, int]], limits: Limits) -> dict[str, Any]:
    manifest = load_json((root / MANIFEST).read_bytes(), MANIFEST, limits)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError("not a fairtrial bundle: the manifest's format is not 'fairtrial-bundle'")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise BundleError(
            f"bundle format version {version!r} is newer than this fairtrial reads "
            f"({FORMAT_VERSION}): upgrade fairtrial"
        )
    listed = manifest.get("files")
    if not isinstance(listed, dict):
        raise BundleError("bundle manifest has no 'files' table")
    problems = []
    for name in sorted(set(listed) | set(got) - {MANIFEST}):
        if name == MANIFEST:
            problems.append("manifest.json lists itself")
            continue
        entry = listed.get(name)
        if entry is None:
            problems.append(f"{name}: not in the manifest (added)")
        elif name not in got:
            problems.append(f"{name}: listed in the manifest but missing")
        elif not isinstance(entry, dict) or (entry.get("sha256"), entry.get("size")) != got[name]:
            want = entry.get("sha256", "?") if isinstance(entry, dict) else "?"
            problems.append(
                f"{name}: modified (sha256 {got[name][0][:12]}, size {got[name][1]}; "
                f"manifest says {str(want)[:12]}, size "
                f"{entry.get('size') if isinstance(entry, dict) else '?'})"
            )
    if problems:
        raise BundleError(
            f"bundle differs from its manifest in {len(problems)} file"
            f"{'s' if len(problems) > 1 else ''}: " + "; ".join(problems)
        )
    return manifest


def _check_contents(b: Bundle) -> None:
    """Cross-checks between members, so a file edited *and* re-manifested is still found."""
    problems = []
    exp = b.json("experiment.json")
    blob = json.dumps(exp.get("spec"), sort_keys=True, separators=(",", ":"))
    if hashlib.sha256(blob.encode()).hexdigest() != exp.get("spec_hash"):
        problems.append("experiment.json: the spec does not match its spec_hash (edited)")
    snap = b.json("code/snapshot.json")
    provs = b.provenances()
    for where in ("files", "external"):
        for rel, info in (snap.get(where) or {}).items():
            name = f"code/{where}/{rel}"
            if name not in b.manifest["files"]:
                problems.append(f"{name}: in code/snapshot.json but not in the bundle")
                continue
            digest = b.manifest["files"][name]["sha256"]
            if digest != info.get("sha256"):
                problems.append(
                    f"{name}: differs from the recipe file the trials ran with "
                    f"(sha256 {digest[:12]}, recorded {str(info.get('sha256'))[:12]})"
                )
            ran = [((p.get("code") or {}).get(where) or {}).get(rel) for p in provs.values()]
            if ran and not any(isinstance(r, dict) and r.get("sha256") == digest for r in ran):
                problems.append(f"{name}: no trial's provenance records this file content (edited)")
    results = {t["id"]: t for t in b.json("results/trials.json")}
    for e in b.json("testlog.json").get("entries", []):
        try:
            recomputed = chain_mod.entry_hash(e["prev_hash"], {k: e[k] for k in TEST_LOG_FIELDS})
        except (KeyError, TypeError, ValueError):
            problems.append("testlog.json: an entry lacks its fields")
            continue
        if recomputed != e.get("entry_hash"):
            problems.append(f"testlog.json: entry {e.get('seq')} does not match its hash (edited)")
        t = results.get(e["trial_id"])
        if (
            t is not None
            and t.get("attempt") == e["attempt"]
            and t.get("status") == "finished"
            and t.get("result") != e["score"]
        ):
            problems.append(
                f"results/trials.json: trial {e['trial_id']} reports {t.get('result')!r}, its "
                f"sealed test log entry {e['score']!r} (edited)"
            )
    if "results/predictions.json" in b.manifest["files"]:
        logged = {
            (e["trial_id"], e["attempt"]): e.get("predictions_sha256")
            for e in b.json("testlog.json").get("entries", [])
        }
        for trial_id, p in b.json("results/predictions.json").items():
            digest = hashlib.sha256(json.dumps(p["predictions"]).encode()).hexdigest()
            if logged.get((trial_id, p["attempt"]), digest) != digest:
                problems.append(
                    f"results/predictions.json: trial {trial_id}'s predictions differ from "
                    f"those its sealed test log entry hashed (edited)"
                )
    if problems:
        raise BundleError("bundle is inconsistent: " + "; ".join(problems))
