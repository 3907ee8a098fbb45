"""Bundles: one portable, integrity-checked archive per experiment; read without running it.

Format: a gzip-compressed tar archive (``.tar.gz``) whose first member is ``manifest.json``
(format name and version, fairtrial version, experiment, and the sha256 and size of every
other member). tar.gz over zip because it is one stream with one checksum (gzip's CRC-32 over
the whole uncompressed archive, RFC 1952) in addition to the manifest's per-file sha256, and
because fairtrial writes it byte-for-byte deterministically (fixed gzip header with mtime 0,
sorted members, zeroed owners and times): the same experiment gives the same bundle, so a
bundle's sha256 identifies it.

Layout::

    manifest.json                 sha256 + size of every other member
    experiment.json               the ledger's experiment row (normalised spec, arms, task, ...)
    spec.toml                     the normalised spec as TOML (what ``replicate`` runs)
    preregistration.json          the preregistration and its deviations (or null)
    code/snapshot.json            recipe, files and hashes, git commit/branch/dirty
    code/git.diff                 uncommitted changes of the repository the spec lives in
    code/files/PATH               the recipe's files (relative to the spec's folder)
    code/external/PATH            recipe modules from outside it (installed packages), for diff
    environment/lock.json         interpreter, platform and every package version
    environment/requirements.txt  the same packages as ``name==version`` lines
    environment/provenance.json   every provenance record the trials point at
    task.json                     task name and checksums
    results/trials.json           every trial: arm, seed, status, result, seeds, config, ...
    results/metrics.jsonl         every logged metric point
    results/analysis.json         the analysis document (DESIGN.md's JSON)
    results/predictions.json      each finished trial's test predictions (hashes in testlog.json)
    testlog.json                  the experiment's sealed test log entries, with their hashes

Reading (:func:`read_bundle`) never imports or runs anything from the bundle. It validates
every member before extracting any (regular files and folders only: no links, devices or
fifos; no absolute paths, ``..``, backslashes or duplicate names; limits on member count,
member size, total size and path depth; see :class:`Limits`), extracts into a fresh temporary
folder only, reads the gzip stream to its end so its CRC is checked, and then compares every
file with the manifest, naming each file that differs. Safe extraction follows the advice of
CPython's ``tarfile`` documentation on untrusted archives (extraction filters, PEP 706).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import io
import json
import math
import os
import re
import shutil
import struct
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import fairtrial
from fairtrial import prereg, testlog
from fairtrial.diff import experiment_capture
from fairtrial.errors import BundleError
from fairtrial.ledger import ExperimentRow, Ledger, TrialRow
from fairtrial.ledger import chain as chain_mod
from fairtrial.ledger.store import TEST_LOG_FIELDS

FORMAT = "fairtrial-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: The gzip header fairtrial writes: magic, deflate, no flags, mtime 0, best compression, OS
#: unknown. Any other header is refused, so no header byte can change unnoticed.
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Limits:
    """What a bundle may hold; larger archives are refused before anything is extracted."""

    max_members: int = 20_000
    max_member_bytes: int = 1 << 30  # 1 GiB
    max_total_bytes: int = 4 << 30  # 4 GiB, uncompressed
    max_path_length: int = 512
    max_depth: int = 24


# -- TOML (the normalised spec as a spec file) ---------------------------------------------
_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _toml_str(text: str) -> str:
    # JSON's string escapes are TOML's, except that TOML also wants DEL escaped
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_key(key: str) -> str:
    parts = key.split(".")
    if all(_BARE.fullmatch(p) for p in parts):
        return ".".join(parts)
    return _toml_str(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        inner = ", ".join(f"{_toml_str(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{" + inner + "}"
    raise BundleError(f"cannot write {type(value).__name__} value {value!r} to a spec file")


def _toml_table(lines: list[str], header: str, values: Mapping[str, Any]) -> None:
    from fairtrial.spec import flatten

    lines.append(f"[{header}]")
    for key, value in flatten(values).items():
        if value is None:
            continue
        lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    lines.append("")


def spec_toml(normalized: Mapping[str, Any]) -> str:
    """A spec file whose :meth:`~fairtrial.spec.Spec.normalized` form is ``normalized``."""
    lines = ["# written by fairtrial from an experiment's normalised spec", ""]
    exp = {k: v for k, v in normalized["experiment"].items() if v is not None}
    lines.append("[experiment]")
    for key, value in exp.items():
        lines.append(f"{key} = {_toml_value(value)}")
    lines.append("")
    hyp = {k: v for k, v in normalized.get("hypothesis", {}).items() if v is not None}
    _toml_table(lines, "hypothesis", hyp)
    _toml_table(lines, "baseline", normalized.get("baseline", {}))
    for name, components in normalized.get("arms", {}).items():
        _toml_table(lines, f"arms.{_toml_key(name)}", components)
    if normalized.get("ablations"):
        lines.append("[ablations]")
        lines.append(f"leave_one_out = {_toml_value(list(normalized['ablations']))}")
        lines.append("")
    return "\n".join(lines)


# -- writing ---------------------------------------------------------------------------------
def _dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, default=str, allow_nan=False) + "\n").encode()


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


def bundle_files(ledger: Ledger, exp: ExperimentRow) -> dict[str, bytes]:
    """Every member of ``exp``'s bundle but the manifest: path -> content."""
    from fairtrial.analysis import analyze

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
    files["results/analysis.json"] = _dumps(_clean(analyze(ledger, exp)))
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


def _deterministic_gzip(raw: IO[bytes], out: IO[bytes]) -> None:
    """gzip ``raw`` into ``out`` with :data:`GZIP_HEADER` (RFC 1952 framing, zlib deflate)."""
    out.write(GZIP_HEADER)
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    crc, size = 0, 0
    while chunk := raw.read(_CHUNK):
        crc = zlib.crc32(chunk, crc)
        size += len(chunk)
        out.write(comp.compress(chunk))
    out.write(comp.flush())
    out.write(struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF))


def write_archive(
    files: Mapping[str, bytes], output: Path, *, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Write ``files`` plus a manifest as a deterministic bundle; returns the manifest."""
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fairtrial": fairtrial.__version__,
        **dict(extra or {}),
        "files": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in sorted(files.items())
        },
    }
    members = {MANIFEST: _dumps(manifest), **dict(sorted(files.items()))}
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    with tempfile.TemporaryFile() as raw:
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
        raw.seek(0)
        with tmp.open("wb") as out:
            _deterministic_gzip(raw, out)
    tmp.replace(output)
    return manifest


def write_bundle(ledger: Ledger, exp: ExperimentRow, output: Path) -> dict[str, Any]:
    """Write ``exp``'s bundle to ``output`` (``.tar.gz``); returns its manifest plus sha256."""
    files = bundle_files(ledger, exp)
    manifest = write_archive(
        files,
        output,
        extra={"experiment": {"id": exp.id, "name": exp.name, "spec_hash": exp.spec_hash}},
    )
    return {**manifest, "sha256": file_sha256(output)}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# -- reading ---------------------------------------------------------------------------------
_KINDS = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a fifo",
    tarfile.CONTTYPE: "a contiguous file",
}


def _check_name(name: str, limits: Limits) -> str:
    """``name`` if it is a safe, canonical relative path; else raise naming the problem."""
    shown = repr(name)[1:-1][:200]
    if not name:
        raise BundleError("unsafe bundle: a member has an empty name")
    if len(name) > limits.max_path_length:
        raise BundleError(
            f"unsafe bundle: member '{shown}' has a path of {len(name)} characters "
            f"(limit {limits.max_path_length})"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise BundleError(f"unsafe bundle: member '{shown}' has control characters in its name")
    if "\\" in name:
        raise BundleError(f"unsafe bundle: member '{shown}' has a backslash in its name")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise BundleError(f"unsafe bundle: member '{shown}' has an absolute path")
    parts = name.rstrip("/").split("/")
    if ".." in parts:
        raise BundleError(f"unsafe bundle: member '{shown}' leaves the bundle's folder ('..')")
    if any(p in ("", ".") for p in parts):
        raise BundleError(f"unsafe bundle: member '{shown}' has an empty or '.' path component")
    if len(parts) > limits.max_depth:
        raise BundleError(
            f"unsafe bundle: member '{shown}' is {len(parts)} folders deep "
            f"(limit {limits.max_depth})"
        )
    return "/".join(parts)


def _open_tar(path: Path) -> tuple[gzip.GzipFile, tarfile.TarFile]:
    gz = gzip.GzipFile(str(path), "rb")
    try:
        with _corrupt("at its start"):
            return gz, tarfile.open(fileobj=gz, mode="r:")
    except BaseException:
        gz.close()
        raise


@contextlib.contextmanager
def _corrupt(where: str) -> Iterator[None]:
    try:
        yield
    except BundleError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error, UnicodeError, ValueError) as exc:
        raise BundleError(f"corrupt bundle {where}: {exc}") from None


def _scan(path: Path, limits: Limits) -> list[tarfile.TarInfo]:
    """Pass 1: every member's header checked, gzip stream read to its end (CRC checked)."""
    size = path.stat().st_size
    if size > limits.max_total_bytes:
        raise BundleError(f"bundle {path} is {size} bytes (limit {limits.max_total_bytes})")
    with path.open("rb") as fh:
        head = fh.read(len(GZIP_HEADER))
    if head[:2] != GZIP_HEADER[:2]:
        raise BundleError(f"{path} is not a fairtrial bundle (not gzip-compressed)")
    if head != GZIP_HEADER:
        at = next(
            (i for i, (a, b) in enumerate(zip(head, GZIP_HEADER, strict=False)) if a != b),
            len(head),
        )
        raise BundleError(
            f"{path}: gzip header differs from the one fairtrial writes at byte {at}: "
            "modified, or not a fairtrial bundle"
        )
    members: list[tarfile.TarInfo] = []
    seen: dict[str, str] = {}
    files: set[str] = set()
    dirs: set[str] = set()
    total = 0
    gz, tar = _open_tar(path)
    with gz, tar, _corrupt("(reading member headers)"):
        while True:
            where = f"after member '{members[-1].name}'" if members else "at its start"
            with _corrupt(where):
                info = tar.next()
            if info is None:
                break
            if len(members) >= limits.max_members:
                raise BundleError(f"unsafe bundle: more than {limits.max_members} members (limit)")
            name = _check_name(info.name, limits)
            kind = _KINDS.get(info.type)
            if kind is None and not (info.isreg() or info.isdir()):
                kind = f"an unsupported member type {info.type!r}"
            if kind is not None:
                target = f" to '{info.linkname}'" if info.issym() or info.islnk() else ""
                raise BundleError(
                    f"unsafe bundle: member '{name}' is {kind}{target}; bundles hold regular "
                    "files only"
                )
            folded = name.lower()
            if folded in seen:
                raise BundleError(
                    f"unsafe bundle: member '{name}' appears twice (as '{seen[folded]}')"
                )
            seen[folded] = name
            if info.isreg():
                if info.size > limits.max_member_bytes:
                    raise BundleError(
                        f"unsafe bundle: member '{name}' is {info.size} bytes "
                        f"(limit {limits.max_member_bytes})"
                    )
                total += info.size
                if total > limits.max_total_bytes:
                    raise BundleError(
                        f"unsafe bundle: members add up to more than {limits.max_total_bytes} "
                        "bytes (limit)"
                    )
                files.add(name)
            else:
                dirs.add(name)
            members.append(info)
        # Read what follows the last member to the end of the gzip stream: gzip checks its
        # CRC-32 and length there, and tar allows nothing but zero padding after the end.
        last = members[-1].name if members else "-"
        with _corrupt(f"(after its last member '{last}')"):
            gz.seek(tar.offset)
            rest = 0
            while chunk := gz.read(_CHUNK):
                rest += len(chunk)
                if chunk.count(0) != len(chunk):
                    raise BundleError(
                        f"corrupt bundle: data after the end of the archive (after member "
                        f"'{members[-1].name if members else '-'}')"
                    )
                if rest > limits.max_total_bytes:
                    raise BundleError("unsafe bundle: archive padding exceeds the size limit")
    for name in files | dirs:
        parents = PurePosixPath(name).parents
        for parent in list(parents)[:-1]:
            if str(parent) in files:
                raise BundleError(
                    f"unsafe bundle: member '{name}' lies inside '{parent}', which is a file"
                )
    if MANIFEST not in files:
        raise BundleError(f"{path} is not a fairtrial bundle: it has no {MANIFEST}")
    return members


def _extract(path: Path, members: list[tarfile.TarInfo], root: Path) -> dict[str, tuple[str, int]]:
    """Pass 2: copy the checked regular files into ``root``; returns their sha256 and size."""
    wanted = {m.name: m for m in members if m.isreg()}
    out: dict[str, tuple[str, int]] = {}
    gz, tar = _open_tar(path)
    with gz, tar:
        it = iter(tar)
        current = None
        while True:
            with _corrupt(f"(after member '{current}')" if current else "(at its start)"):
                info = next(it, None)
            if info is None:
                break
            current = info.name
            if info.name not in wanted:
                continue
            with _corrupt(f"(in member '{info.name}')"):
                out[info.name] = _extract_one(tar, info, root)
    return out


def _extract_one(tar: tarfile.TarFile, info: tarfile.TarInfo, root: Path) -> tuple[str, int]:
    name = info.name
    dest = root.joinpath(*name.split("/"))
    if not dest.resolve().is_relative_to(root.resolve()):
        raise BundleError(f"unsafe bundle: member '{name}' leaves the bundle's folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = tar.extractfile(info)
    if src is None:
        raise BundleError(f"corrupt bundle: member '{name}' has no data")
    h = hashlib.sha256()
    n = 0
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    with os.fdopen(os.open(dest, flags, 0o644), "wb") as fh:
        while chunk := src.read(_CHUNK):
            n += len(chunk)
            if n > info.size:
                raise BundleError(f"corrupt bundle: member '{name}' is longer than its header")
            h.update(chunk)
            fh.write(chunk)
    if n != info.size:
        raise BundleError(f"corrupt bundle: member '{name}' is shorter than its header")
    return h.hexdigest(), n


class Bundle:
    """An extracted, verified bundle (in a temporary folder, removed by :meth:`close`)."""

    def __init__(self, path: Path, root: Path, manifest: dict[str, Any], sha256: str) -> None:
        self.path = path
        self.root = root
        self.manifest = manifest
        self.sha256 = sha256

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
        try:
            return json.loads(self.read_bytes(name))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(
                f"bundle {self.path}: member '{name}' is not valid JSON ({exc})"
            ) from None

    def experiment(self) -> ExperimentRow:
        row: ExperimentRow = _row(ExperimentRow, self.json("experiment.json"), "experiment.json")
        return row

    def trials(self) -> list[TrialRow]:
        return [_row(TrialRow, t, "results/trials.json") for t in self.json("results/trials.json")]

    def provenances(self) -> dict[str, dict[str, Any]]:
        data: dict[str, dict[str, Any]] = self.json("environment/provenance.json")
        return data

    def capture(self) -> dict[str, Any]:
        """The bundle's capture for :func:`fairtrial.diff.diff`."""
        exp = self.experiment()
        return experiment_capture(
            exp, self.trials(), self.provenances(), label=f"bundle {self.path.name} ({exp.name})"
        )


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


def _check_manifest(root: Path, got: dict[str, tuple[str, int]]) -> dict[str, Any]:
    try:
        manifest = json.loads((root / MANIFEST).read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"bundle manifest is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError("not a fairtrial bundle: the manifest's format is not 'fairtrial-bundle'")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
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
        got = _extract(p, members, root)
        manifest = _check_manifest(root, got)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return Bundle(p, root, manifest, file_sha256(p))


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
