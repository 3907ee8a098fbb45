"""The archive layer of a bundle: any set of members written as one deterministic ``.tar.gz``
with a manifest (:func:`write_archive`), and an archive from anyone read back safely: two
streaming passes over the decompressed tar with every limit of :class:`Limits` (member count
and size, total size, path length and depth, compression ratio, tar header size) enforced as
bytes arrive, regular files and folders only, then extraction of the checked members alone;
and the JSON depth bound that runs before any member is parsed. It is separate because it
knows nothing of experiments: it is the part that meets hostile bytes, and its
:class:`Limits` are also what the registry and its client size uploads and downloads by.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import struct
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import fairtrial
from fairtrial.errors import BundleError

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


# -- writing ---------------------------------------------------------------------------------
def _dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, default=str, allow_nan=False) + "\n").encode()


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
