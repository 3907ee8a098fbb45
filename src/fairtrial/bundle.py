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
    results/analysis.json         the analysis (fairtrial.results; docs/results-schema.md)
    results/predictions.json      each finished trial's test predictions (hashes in testlog.json)
    testlog.json                  the experiment's sealed test log entries, with their hashes

Reading (:func:`read_bundle`) never imports or runs anything from the bundle. It validates
every member before extracting any (regular files and folders only: no links, devices or
fifos; no absolute paths, ``..``, backslashes or duplicate names; limits on member count,
member size, total size, path depth, compression ratio and tar header size, counted on the
decompressed stream as it is read, so a decompression bomb is refused before a byte reaches
disk; see :class:`Limits`), extracts into a fresh temporary folder only, reads the gzip stream
to its end so its CRC is checked, and then compares every file with the manifest, naming each
file that differs. Safe extraction follows the advice of CPython's ``tarfile`` documentation on
untrusted archives (extraction filters, PEP 706). The JSON members are then checked for depth
(before parsing: Python's parser recurses) and for the types their readers use, names that
become folder names against the spec's rule; each failure names the member and the field.
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
import types
import typing
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
    """What a bundle may hold; larger archives are refused before anything is extracted.

    Every limit holds while the archive is streamed: the first pass decompresses and counts
    without writing anything, the second writes only the members the first pass accepted.
    """

    max_members: int = 20_000
    max_member_bytes: int = 1 << 30  # 1 GiB
    max_total_bytes: int = 4 << 30  # 4 GiB, uncompressed
    max_path_length: int = 512
    max_depth: int = 24
    #: uncompressed bytes per compressed byte read so far: real bundles (JSON, code, tar
    #: padding) deflate 5 to 20 times, a run of zeros about 1000 times (a decompression bomb)
    max_ratio: int = 100
    #: the first this many uncompressed bytes are exempt from ``max_ratio`` (a small archive is
    #: mostly tar padding, which deflates to almost nothing)
    ratio_exempt_bytes: int = 8 << 20
    #: a tar extended header (pax, GNU long name) is read into memory whole
    max_header_bytes: int = 64 << 10
    #: nesting of arrays and objects in a JSON member (Python's JSON parser recurses)
    max_json_depth: int = 64


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


def _path_problem(name: str, limits: Limits) -> str | None:
    """What makes ``name`` unsafe as a relative path inside a folder, or None."""
    if not name:
        return "has an empty name"
    if len(name) > limits.max_path_length:
        return f"has a path of {len(name)} characters (limit {limits.max_path_length})"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "has control characters in its name"
    if "\\" in name:
        return "has a backslash in its name"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "has an absolute path"
    parts = name.rstrip("/").split("/")
    if ".." in parts:
        return "leaves the bundle's folder ('..')"
    if any(p in ("", ".") for p in parts):
        return "has an empty or '.' path component"
    if len(parts) > limits.max_depth:
        return f"is {len(parts)} folders deep (limit {limits.max_depth})"
    return None


def _check_name(name: str, limits: Limits) -> str:
    """``name`` if it is a safe, canonical relative path; else raise naming the problem."""
    problem = _path_problem(name, limits)
    if problem is not None:
        if not name:
            raise BundleError("unsafe bundle: a member has an empty name")
        raise BundleError(f"unsafe bundle: member '{repr(name)[1:-1][:200]}' {problem}")
    return "/".join(name.rstrip("/").split("/"))


class _Stream:
    """A bundle's decompressed tar stream for :mod:`tarfile`, with the limits enforced on every
    read: the compression ratio so far, and the size of any one read (a tar extended header is
    read whole). Forward seeks read and count too, so nothing is skipped unchecked; a seek
    back may only return into the last read (to re-read the block that ended the archive)."""

    def __init__(self, path: Path, limits: Limits) -> None:
        self._raw = path.open("rb")
        self._gz = gzip.GzipFile(fileobj=self._raw, mode="rb")
        self._limits = limits
        self._pos = 0  # what tarfile has consumed
        self._end = 0  # what was decompressed: _last holds bytes [_end - len(_last), _end)
        self._last = b""

    def read(self, size: int | None = -1) -> bytes:
        cap = max(_CHUNK, self._limits.max_header_bytes)
        if size is None or size < 0 or size > cap:
            raise BundleError(
                f"unsafe bundle: a member header of {size} bytes at byte {self._pos} "
                f"(limit {self._limits.max_header_bytes})"
            )
        again = b""
        if self._pos < self._end:  # re-reading the end of the last read
            start = len(self._last) - (self._end - self._pos)
            again = self._last[start : start + size]
            self._pos += len(again)
            if len(again) == size:
                return again
        data = self._gz.read(size - len(again))
        self._count(data)
        return again + data

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence != 0 or offset < self._end - len(self._last):
            raise BundleError(f"corrupt bundle: its archive steps back to byte {offset}")
        if offset <= self._end:
            self._pos = offset
            return offset
        self._pos = self._end
        while self._pos < offset:
            data = self._gz.read(min(_CHUNK, offset - self._pos))
            if not data:  # past the end: tarfile reports the truncated archive
                break
            self._count(data)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def _count(self, data: bytes) -> None:
        self._pos = self._end = self._end + len(data)
        self._last = data
        lim = self._limits
        if self._end > lim.ratio_exempt_bytes and self._end > lim.max_ratio * self._raw.tell():
            raise BundleError(
                f"unsafe bundle: it unpacks to more than {lim.max_ratio} times its compressed "
                f"size ({self._end} bytes from the first {self._raw.tell()}; limit "
                f"{lim.max_ratio}:1): a decompression bomb"
            )

    def close(self) -> None:
        try:
            self._gz.close()
        finally:
            self._raw.close()

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_tar(path: Path, limits: Limits) -> tuple[_Stream, tarfile.TarFile]:
    stream = _Stream(path, limits)
    try:
        with _corrupt("at its start"):
            return stream, tarfile.open(fileobj=stream, mode="r:")  # type: ignore[call-overload]
    except BaseException:
        stream.close()
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
    stream, tar = _open_tar(path, limits)
    with stream, tar, _corrupt("(reading member headers)"):
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
            stream.seek(tar.offset)
            rest = 0
            while chunk := stream.read(_CHUNK):
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


def _extract(
    path: Path, members: list[tarfile.TarInfo], root: Path, limits: Limits
) -> dict[str, tuple[str, int]]:
    """Pass 2: copy the checked regular files into ``root``; returns their sha256 and size."""
    wanted = {m.name: m for m in members if m.isreg()}
    out: dict[str, tuple[str, int]] = {}
    stream, tar = _open_tar(path, limits)
    with stream, tar:
        it = iter(tar)
        current = None
        while True:
            with _corrupt(f"(after member '{current}')" if current else "(at its start)"):
                info = next(it, None)
            if info is None:
                break
            current = info.name
            checked = wanted.pop(info.name, None)
            if checked is None:
                continue
            if not info.isreg() or info.size != checked.size:
                # the file changed since the first pass: only what that pass checked is written
                raise BundleError(f"corrupt bundle: member '{info.name}' changed while read")
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


_JSON_STRING = re.compile(rb'"(?:[^"\\\n]|\\.)*"')
_BRACKET_PAIR = re.compile(rb"[\[{][\]}]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_too_deep(data: bytes, limit: int) -> bool:
    """Whether JSON text (or JSON lines) nests arrays and objects more than ``limit`` deep.

    Python's parser recurses once per level, so depth is bounded before parsing, at C speed:
    strings removed, then everything but brackets, then one level of innermost bracket pairs
    removed per pass. Text this accepts nests at most ``2 * limit`` deep (unclosed brackets
    count towards the depth too); text it refuses is deep, or is not valid JSON anyway.
    """
    text = _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    for _ in range(limit):
        text, removed = _BRACKET_PAIR.subn(b"", text)
        if not removed:
            break
    return bool(_BRACKET_PAIR.search(text)) or text.count(b"[") + text.count(b"{") > limit


def load_json(data: bytes, member: str, limits: Limits | None = None) -> Any:
    """A bundle member's JSON, with its depth bounded first; :class:`BundleError` naming the
    member when it is not JSON or nests too deep."""
    limit = (limits or Limits()).max_json_depth
    deep = BundleError(
        f"bundle member '{member}' nests arrays or objects more than {limit} deep (limit)"
    )
    if json_too_deep(data, limit):
        raise deep
    try:
        return json.loads(data)
    except RecursionError:
        raise deep from None
    except (ValueError, UnicodeDecodeError) as exc:  # also: integers too long to convert
        raise BundleError(f"bundle member '{member}' is not valid JSON ({exc})") from None


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
            s.key(p, "predictions", trial_id, "list", required=True)

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
