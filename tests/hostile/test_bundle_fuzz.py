"""Property-based: a real bundle mutated at random (its compressed bytes, its members, the
values inside its JSON members) is read safely or refused.

For every mutation: only fairtrial's own errors escape (no TypeError, KeyError, RecursionError,
...), nothing is written outside the example's temporary folder, the extraction folder is gone
afterwards, and what the reader writes and allocates stays bounded. JSON mutations are
re-manifested (and, where they touch the spec, re-hashed), so they reach the cross-member and
type checks, and an accepted bundle goes on through ``replicate`` up to the point where it
would run the recipe.
"""

from __future__ import annotations

import json
import resource
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundle_kit import (
    base_bundle,
    dump,
    members,
    rehash_spec,
    rewrite_members,
    scratch_tempdir,
    tree,
    written_bytes,
)
from fairtrial import bundle as B
from fairtrial.errors import FairtrialError
from fairtrial.replicate import judge, replicate

MiB = 1 << 20
BASE_SETTINGS = settings(
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="session")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return base_bundle(tmp_path_factory)


@pytest.fixture(scope="session")
def base_members(base: Path) -> dict[str, bytes]:
    return members(base)


class Stopped(Exception):
    """Raised by :class:`StopBackend` where a replication would start running trials."""


class StopBackend:
    """A backend that stops ``replicate`` before any trial runs."""

    name = "stop"
    workers = 1
    threads = None

    def run(self, *args: Any, **kwargs: Any) -> None:
        raise Stopped


class Box:
    """One example's own folder: the bundle in it, temporary files under ``tmp``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(tempfile.mkdtemp(dir=root))
        self.bundle = self.root / "b.tar.gz"
        self.tmp = self.root / "tmp"


@pytest.fixture
def boxes(tmp_path: Path) -> Iterator[Any]:
    yield lambda: Box(tmp_path)


def read_safely(box: Box, *, replicate_too: bool = False) -> str:
    """Read the box's bundle every way fairtrial does; 'ok' (or 'ran': replicate got as far
    as running trials) or the error's class name. Asserts that nothing but a one-line
    FairtrialError escapes, and that writes and the process's peak memory stay bounded."""
    before = written_bytes()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    outcome = "ok"
    with scratch_tempdir(box.tmp):
        try:
            B.verify_bundle(box.bundle)
            with B.read_bundle(box.bundle) as b:
                b.capture()
                doc = b.analysis()
                judge(doc, doc, tolerance=0.01, paired=True)
            if replicate_too:
                replicate(
                    box.bundle,
                    folder=box.root / "rep",
                    store=box.root / "store.db",
                    backend=StopBackend(),
                    show_progress=False,
                )
        except FairtrialError as exc:
            outcome = type(exc).__name__
            assert "\n" not in str(exc) and str(exc), repr(exc)
        except Stopped:
            outcome = "ran"
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
    assert grown < 64 * 1024, f"peak memory grew by {grown} KiB"
    if before is not None:
        assert written_bytes() - before < 8 * MiB  # type: ignore[operator]
    assert tree(box.tmp) == [], "the extraction folder is removed"
    allowed = {"b.tar.gz", "tmp", "rep", "store.db", "store.db-wal", "store.db-shm"}
    assert {p.name for p in box.root.iterdir()} <= allowed, "nothing written beside the box"
    rep = box.root / "rep"
    if rep.exists():
        for p in rep.rglob("*"):
            assert p.resolve().is_relative_to(rep.resolve())
    return outcome


# -- the compressed bytes --------------------------------------------------------------------
@settings(BASE_SETTINGS, max_examples=40)
@given(
    st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), max_size=4),
    st.one_of(st.none(), st.floats(0, 1)),
    st.binary(max_size=64),
)
def test_mutated_bytes_are_read_safely_or_refused(
    base: Path, boxes: Any, flips: list[tuple[float, int]], cut: float | None, tail: bytes
) -> None:
    data = bytearray(base.read_bytes())
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    if cut is not None:
        data = data[: int(cut * len(data))]
    box = boxes()
    box.bundle.write_bytes(bytes(data) + tail)
    read_safely(box)


# -- the members -----------------------------------------------------------------------------
_NAMES = st.sampled_from(
    ["../x", "/etc/x", "a/../../b", "C:/x", "a\\b", "x" * 600, "code/files/../../y.py",
     "code/files/ledger.db", "spec.toml", "MANIFEST.JSON", "results/TRIALS.json", "ok.txt", ""]
)  # fmt: skip


@settings(BASE_SETTINGS, max_examples=40)
@given(st.data(), st.booleans())
def test_mutated_members_are_read_safely_or_refused(
    base_members: dict[str, bytes], boxes: Any, data: st.DataObject, manifest: bool
) -> None:
    """Members dropped, renamed (to paths that leave the folder, too), added or emptied."""
    box = boxes()
    names = sorted(n for n in base_members if n != "manifest.json")
    ops = data.draw(st.lists(st.sampled_from(["drop", "rename", "add", "empty"]), max_size=3))

    def change(files: dict[str, bytes]) -> None:
        for op in ops:
            victim = data.draw(st.sampled_from(names))
            if victim not in files:
                continue
            if op == "drop":
                del files[victim]
            elif op == "rename":
                files[data.draw(_NAMES)] = files.pop(victim)
            elif op == "add":
                files[data.draw(_NAMES)] = data.draw(st.binary(max_size=32))
            else:
                files[victim] = b""

    try:
        rewrite_members(base_members, box.bundle, change, manifest=manifest)
    except (ValueError, tarfile.TarError):
        return  # tarfile itself cannot write such a member name
    read_safely(box)


# -- the JSON inside the members -------------------------------------------------------------
JSON_MEMBERS = [
    "experiment.json", "results/trials.json", "testlog.json", "code/snapshot.json",
    "environment/provenance.json", "results/analysis.json", "results/predictions.json",
    "preregistration.json", "task.json", "environment/lock.json",
]  # fmt: skip
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["", "../../x", "/tmp/x", "1", "0.5", "auto", "finished", "baseline"])
)
_KEYS = st.text(max_size=6)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
    max_leaves=8,
)
_RAW = st.sampled_from(
    [b"[" * 100_000, b"{" * 3 + b"[" * 50_000 + b"]" * 50_000, b"1" * 5000, b"NaN", b"",
     b'"\xff\xfe"', b"\x00", b"[1, 2", b"null", b"-Infinity"]
)  # fmt: skip


def _walk(data: st.DataObject, doc: Any) -> list[Any]:
    """A random path into ``doc`` (keys and indexes), possibly empty (the whole member)."""
    path: list[Any] = []
    node = doc
    while isinstance(node, (dict, list)) and node and data.draw(st.integers(0, 4)) > 0:
        key = data.draw(
            st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node)))
        )
        path.append(key)
        node = node[key]
    return path


def _mutate_json(data: st.DataObject, member: str, text: bytes) -> bytes:
    """``text`` (a JSON member) with 1 to 3 values replaced or keys removed, or (one time in
    ten) replaced whole by a raw text; experiment.json's spec_hash re-computed half the time."""
    if data.draw(st.integers(0, 9)) == 0:
        raw: bytes = data.draw(_RAW)
        return raw
    doc = json.loads(text)
    for _ in range(data.draw(st.integers(1, 3))):
        path = _walk(data, doc)
        value = data.draw(_VALUES)
        if not path:
            doc = value
            continue
        node = doc
        for key in path[:-1]:
            node = node[key]
        if isinstance(node, dict) and data.draw(st.booleans()):
            del node[path[-1]]
        else:
            node[path[-1]] = value
    if isinstance(doc, dict) and "spec" in doc and "spec_hash" in doc and data.draw(st.booleans()):
        rehash_spec(doc)
    return dump(doc)


@settings(BASE_SETTINGS, max_examples=50)
@given(st.data())
def test_mutated_json_is_read_safely_or_refused(
    base_members: dict[str, bytes], boxes: Any, data: st.DataObject
) -> None:
    """A value anywhere in a JSON member replaced (by another type, a path, a deep or broken
    text, a number too long to convert), re-manifested and the spec re-hashed: refused with a
    one-line FairtrialError, or read whole (verify, capture, judge)."""
    box = boxes()
    member = data.draw(st.sampled_from(JSON_MEMBERS))
    rewrite_members(
        base_members,
        box.bundle,
        lambda files: files.update({member: _mutate_json(data, member, files[member])}),
    )
    read_safely(box)


@settings(BASE_SETTINGS, max_examples=12)
@given(st.data())
def test_mutated_json_is_replicated_safely_or_refused(
    base_members: dict[str, bytes], boxes: Any, data: st.DataObject
) -> None:
    """The members replicate reads, mutated: refused, or replicated up to running trials in
    its own folder (and never outside it)."""
    box = boxes()
    member = data.draw(st.sampled_from(["experiment.json", "code/snapshot.json"]))
    rewrite_members(
        base_members,
        box.bundle,
        lambda files: files.update({member: _mutate_json(data, member, files[member])}),
    )
    read_safely(box, replicate_too=True)


def test_the_fuzzed_reader_accepts_the_base_bundle(base: Path, tmp_path: Path) -> None:
    """The properties above hold for the unmutated bundle, and it gets as far as running."""
    box = Box(tmp_path)
    box.bundle.write_bytes(base.read_bytes())
    assert read_safely(box, replicate_too=True) == "ran"
