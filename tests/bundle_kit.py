"""Hostile bundles made by code from one real bundle: the session's base bundle, rewriting its
members (re-manifested, so that only the check under test can catch the change), decompression
bombs streamed without holding their contents, and measuring what a call writes."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from fairtrial import bundle as B

SPEC = """
[experiment]
name = "hostile"
task = "digits"
recipe = "toy:probe"
seeds = 2

[baseline]
noise = 0.0
mode = "ok"
sleep = 0.0

[arms.noisy]
noise = 0.3

[hypothesis]
smallest_effect = 0.01
"""

_BASE: dict[str, Path] = {}


def base_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real bundle per session: the toy recipe on digits, 2 arms x 2 seeds, inline."""
    if "path" not in _BASE:
        from fairtrial.backends import InlineBackend
        from fairtrial.ledger import Ledger
        from fairtrial.runner import run_experiment
        from fairtrial.spec import load_spec

        root = tmp_path_factory.mktemp("hostile-base")
        recipes = Path(__file__).parent / "recipes"
        (root / "toy.py").write_text((recipes / "toy.py").read_text())
        (root / "spec.toml").write_text(textwrap.dedent(SPEC))
        led = Ledger(root / "ledger.db")
        spec = load_spec(root / "spec.toml")
        here = Path.cwd()
        os.chdir(root)  # the trials' working folders go under ./.fairtrial
        try:
            run_experiment(spec, led, InlineBackend(), show_progress=False)
        finally:
            os.chdir(here)
        path = root / "base.tar.gz"
        B.write_bundle(led, led.experiment(spec.experiment_id), path)
        led.close()
        _BASE["path"] = path
    return _BASE["path"]


def members(path: Path) -> dict[str, bytes]:
    """The regular members of a (trusted, fairtrial-written) bundle."""
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}  # type: ignore[union-attr]


def dump(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def rehash_spec(exp: dict[str, Any]) -> None:
    """Give experiment.json the spec_hash of its (edited) spec, as a forger would."""
    blob = json.dumps(exp["spec"], sort_keys=True, separators=(",", ":"))
    exp["spec_hash"] = hashlib.sha256(blob.encode()).hexdigest()


def rewrite(
    src: Path, dst: Path, change: Callable[[dict[str, bytes]], None], *, manifest: bool = True
) -> Path:
    """``src`` with ``change`` applied to its members; re-manifested unless ``manifest`` is
    false (then the old manifest goes in unchanged)."""
    return rewrite_members(members(src), dst, change, manifest=manifest)


def rewrite_members(
    files: dict[str, bytes],
    dst: Path,
    change: Callable[[dict[str, bytes]], None],
    *,
    manifest: bool = True,
) -> Path:
    """:func:`rewrite` from members already read (a copy of ``files`` is changed)."""
    files = dict(files)
    old = json.loads(files.pop("manifest.json"))
    change(files)
    if manifest:
        B.write_archive(files, dst, extra={"experiment": old["experiment"]})
    else:
        write_raw(dst, [("manifest.json", json.dumps(old).encode()), *files.items()])
    return dst


def edit_json(src: Path, dst: Path, member: str, change: Callable[[Any], Any]) -> Path:
    """``src`` with one JSON member replaced by ``change(parsed)`` (re-manifested)."""

    def apply(files: dict[str, bytes]) -> None:
        files[member] = dump(change(json.loads(files[member])))

    return rewrite(src, dst, apply)


def write_raw(dst: Path, entries: Sequence[tuple[str | tarfile.TarInfo, bytes]]) -> None:
    """A tar.gz with fairtrial's gzip header and exactly these members (a name makes a regular
    file of its payload; a TarInfo is written as it is, for the reader's checks)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, payload in entries:
            if isinstance(info, str):
                info = tarfile.TarInfo(info)
                info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload) if info.isreg() else None)
    raw.seek(0)
    with dst.open("wb") as out:
        B._deterministic_gzip(raw, out)


def write_bomb(src: Path, dst: Path, zeros: dict[str, int]) -> Path:
    """``src`` plus members of ``zeros[name]`` zero bytes each, listed in the manifest with
    their sizes: a decompression bomb (about 1000:1) built without holding the zeros.

    Deflate with a full flush after every MiB of zeros gives the same bytes for each MiB, so
    the compressed stream is one block repeated; the gzip trailer's CRC-32 is computed over
    the real stream. The sha256 the manifest lists for a zero member is not computed (the
    reader must refuse the bomb before it could compare it)."""
    files = members(src)
    manifest = json.loads(files.pop("manifest.json"))
    for name, size in zeros.items():
        manifest["files"][name] = {"sha256": "0" * 64, "size": size}
    mib = bytes(1 << 20)
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = comp.compress(mib) + comp.flush(zlib.Z_FULL_FLUSH)
    again = comp.compress(mib) + comp.flush(zlib.Z_FULL_FLUSH)
    assert block == again, "deflate of a flushed MiB of zeros repeats"
    crc, length = 0, 0
    with dst.open("wb") as out:
        out.write(B.GZIP_HEADER)

        def put(data: bytes) -> None:
            nonlocal crc, length
            crc = zlib.crc32(data, crc)
            length += len(data)
            out.write(comp.compress(data) + comp.flush(zlib.Z_FULL_FLUSH))

        def header(name: str, size: int) -> bytes:
            info = tarfile.TarInfo(name)
            info.size = size
            info.mode = 0o644
            return info.tobuf(format=tarfile.PAX_FORMAT)

        mbytes = B._dumps(manifest)
        put(header("manifest.json", len(mbytes)) + mbytes + bytes(-len(mbytes) % 512))
        for name in sorted([*files, *zeros]):
            if name in zeros:
                size = zeros[name]
                put(header(name, size))
                assert size % (1 << 20) == 0
                for _ in range(size >> 20):
                    crc = zlib.crc32(mib, crc)
                    length += len(mib)
                    out.write(block)
            else:
                data = files[name]
                put(header(name, len(data)) + data + bytes(-len(data) % 512))
        put(bytes(1024 + (-(length + 1024) % 10240)))
        out.write(comp.flush())
        out.write((crc & 0xFFFFFFFF).to_bytes(4, "little"))
        out.write((length & 0xFFFFFFFF).to_bytes(4, "little"))
    return dst


def written_bytes() -> int | None:
    """Bytes this process has passed to write(2) so far (Linux), None elsewhere."""
    try:
        text = Path(f"/proc/{os.getpid()}/io").read_text()
    except OSError:
        return None
    return next(int(line.split()[1]) for line in text.splitlines() if line.startswith("wchar"))


@contextlib.contextmanager
def scratch_tempdir(folder: Path) -> Iterator[Path]:
    """Temporary files go to ``folder`` (created) for the block."""
    import tempfile

    folder.mkdir(parents=True, exist_ok=True)
    old = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = old


def tree(folder: Path) -> list[str]:
    """Every path under ``folder``, relative and sorted (what a run may have added)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def cli(
    *args: str,
    cwd: Path,
    tmpdir: Path | None = None,
    env: dict[str, str] | None = None,
    file_limit: int | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """``fairtrial ARGS`` in a subprocess (this checkout's code), with its temporary folder in
    ``tmpdir`` and, with ``file_limit``, no file of it allowed past that many bytes."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("FAIRTRIAL_")}
    full.update(env or {})
    if tmpdir is not None:
        tmpdir.mkdir(parents=True, exist_ok=True)
        full["TMPDIR"] = str(tmpdir)

    def limit() -> None:
        if file_limit is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.run(
        [sys.executable, "-m", "fairtrial.cli", *args],
        cwd=cwd, capture_output=True, text=True, env=full, timeout=timeout,
        preexec_fn=limit if file_limit is not None else None,
    )  # fmt: skip


def assert_one_line_error(out: subprocess.CompletedProcess[str], *needles: str) -> str:
    """A refusal: exit status 2, one line on stderr that holds each needle, no traceback."""
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr + out.stdout, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
