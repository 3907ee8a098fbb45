"""Bundles: deterministic archives, every modified byte found, unsafe archives refused, and
reading never runs anything. Property-based tests throw random archives at the reader."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bundle_kit import members, rewrite, write_raw
from conftest import toy_spec
from fairtrial import bundle as B
from fairtrial.backends import InlineBackend
from fairtrial.errors import BundleError
from fairtrial.ledger import Ledger
from fairtrial.runner import run_experiment
from fairtrial.spec import load_spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

EXE = shutil.which("fairtrial", path=str(Path(sys.executable).parent)) or "fairtrial"
ARMS = "[arms.noisy]\nnoise = 0.3\n[hypothesis]\nsmallest_effect = 0.01\n"


@pytest.fixture
def made(write_spec: Callable[..., Path], tmp_path: Path) -> Iterator[tuple[Path, Ledger, str]]:
    """A real experiment (toy recipe on digits, 2 arms x 2 seeds) and its bundle."""
    led = Ledger(tmp_path / "ledger.db")
    spec = load_spec(write_spec(toy_spec(name="bund", seeds=2, arms=ARMS)))
    run_experiment(spec, led, InlineBackend(), show_progress=False)
    path = tmp_path / "b.tar.gz"
    B.write_bundle(led, led.experiment(spec.experiment_id), path)
    yield path, led, spec.experiment_id
    led.close()


def repack(
    src: Path, dst: Path, change: Callable[[dict[str, bytes]], None], manifest: bool
) -> None:
    """Rewrite a bundle with ``change`` applied; ``manifest`` re-computes the manifest too."""
    rewrite(src, dst, change, manifest=manifest)


def extracted(path: Path) -> dict[str, bytes]:
    with B.open_archive(path) as b:
        return {
            str(p.relative_to(b.root)): p.read_bytes() for p in b.root.rglob("*") if p.is_file()
        }


def test_round_trip_is_deterministic_and_complete(
    made: tuple[Path, Ledger, str], tmp_path: Path
) -> None:
    path, led, eid = made
    again = tmp_path / "again.tar.gz"
    B.write_bundle(led, led.experiment(eid), again)
    assert path.read_bytes() == again.read_bytes(), "same experiment, same bytes"
    result = B.verify_bundle(path)
    assert result["ok"] and result["trials"] == 4 and result["finished"] == 4
    files = members(path)
    manifest = json.loads(files["manifest.json"])
    assert set(manifest["files"]) == set(files) - {"manifest.json"}
    for name, entry in manifest["files"].items():
        assert entry == {
            "sha256": hashlib.sha256(files[name]).hexdigest(),
            "size": len(files[name]),
        }
    expected = {"spec.toml", "code/files/toy.py", "environment/lock.json", "results/trials.json"}
    expected |= {"testlog.json", "preregistration.json", "task.json", "code/git.diff"}
    assert expected <= set(files)
    assert files["code/files/toy.py"] == (Path(__file__).parent / "recipes" / "toy.py").read_bytes()
    lock = json.loads(files["environment/lock.json"])
    assert lock["packages"]["numpy"] and b"numpy==" in files["environment/requirements.txt"]
    log = json.loads(files["testlog.json"])
    assert len(log["entries"]) == 4 and log["summary"]["evaluations"] == 4
    # the spec file rebuilt from the bundle is the same experiment
    folder = tmp_path / "rebuilt"
    folder.mkdir()
    (folder / "toy.py").write_bytes(files["code/files/toy.py"])
    (folder / "spec.toml").write_bytes(files["spec.toml"])
    assert load_spec(folder / "spec.toml").spec_hash == led.experiment(eid).spec_hash
    with B.read_bundle(path) as b:
        assert b.experiment().id == eid and len(b.trials()) == 4
        root = b.root
    assert not root.exists(), "the extraction folder is removed on close"


def test_reading_never_runs_bundle_code(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    path = write_spec(toy_spec(name="mark", seeds=2).replace("toy:probe", "boobytrap:probe"))
    (path.parent / "boobytrap.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('x')\nfrom toy import probe\n"
    )
    led = Ledger(tmp_path / "l.db")
    spec = load_spec(path)
    run_experiment(spec, led, InlineBackend(), show_progress=False)
    out = tmp_path / "b.tar.gz"
    B.write_bundle(led, led.experiment(spec.experiment_id), out)
    marker.unlink()
    sys.modules.pop("boobytrap", None)
    B.verify_bundle(out)
    with B.read_bundle(out) as b:
        b.capture()
        assert b"Path(" in b.read_bytes("code/files/boobytrap.py")
    assert not marker.exists()


def test_modified_files_are_named(made: tuple[Path, Ledger, str], tmp_path: Path) -> None:
    path, _, _ = made
    bad = tmp_path / "bad.tar.gz"

    def edit_recipe(files: dict[str, bytes]) -> None:
        files["code/files/toy.py"] = files["code/files/toy.py"].replace(b"noise", b"noize", 1)

    repack(path, bad, edit_recipe, manifest=False)
    with pytest.raises(BundleError, match=r"in 1 file: code/files/toy.py: modified"):
        B.verify_bundle(bad)
    # edited and re-manifested: still found, against the hash the trials ran with
    repack(path, bad, edit_recipe, manifest=True)
    with pytest.raises(BundleError, match=r"code/files/toy\.py: differs from the recipe file"):
        B.verify_bundle(bad)

    def edit_result(files: dict[str, bytes]) -> None:
        trials = json.loads(files["results/trials.json"])
        trials[0]["result"] = 0.99
        files["results/trials.json"] = json.dumps(trials).encode()

    repack(path, bad, edit_result, manifest=True)
    with pytest.raises(BundleError, match="sealed test log entry"):
        B.verify_bundle(bad)

    def edit_spec(files: dict[str, bytes]) -> None:
        exp = json.loads(files["experiment.json"])
        exp["spec"]["experiment"]["seeds"] = 3
        files["experiment.json"] = json.dumps(exp).encode()

    repack(path, bad, edit_spec, manifest=True)
    with pytest.raises(BundleError, match="does not match its spec_hash"):
        B.verify_bundle(bad)
    repack(path, bad, lambda f: f.update({"extra.txt": b"hi"}), manifest=False)
    with pytest.raises(BundleError, match=r"extra.txt: not in the manifest \(added\)"):
        B.verify_bundle(bad)
    repack(path, bad, lambda f: f.pop("task.json"), manifest=False)
    with pytest.raises(BundleError, match=r"task\.json: listed in the manifest but missing"):
        B.verify_bundle(bad)


def _small_bundle(tmp: Path) -> Path:
    path = tmp / "small.tar.gz"
    B.write_archive({"a.txt": b"hello " * 20, "d/b.json": b'{"x": 1}'}, path)
    return path


def test_every_flipped_byte_is_detected_or_changes_nothing(tmp_path: Path) -> None:
    """Exhaustive over a small bundle: flipping any byte either fails verification or leaves
    every extracted file as it was (a bit that carries no information, e.g. deflate padding)."""
    path = _small_bundle(tmp_path)
    original = extracted(path)
    data = path.read_bytes()
    harmless = 0
    for i in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            flipped = bytearray(data)
            flipped[i] ^= mask
            bad = tmp_path / "flip.tar.gz"
            bad.write_bytes(bytes(flipped))
            try:
                got = extracted(bad)
            except BundleError:
                continue
            assert got == original, f"byte {i} ^ {mask:#x} changed content undetected"
            harmless += 1
    # bits that carry no information (deflate padding, unused code lengths): rare
    assert harmless <= 3 * len(data) // 50


def test_flipped_byte_in_a_real_bundle_is_refused_with_the_member(
    made: tuple[Path, Ledger, str], tmp_path: Path
) -> None:
    path, _, _ = made
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    bad = tmp_path / "flip.tar.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"corrupt bundle .*member '"):
        B.verify_bundle(bad)
    env = {k: v for k, v in os.environ.items() if k != "FAIRTRIAL_STORE"}
    out = subprocess.run(
        [EXE, "verify", str(bad)], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 2 and "corrupt bundle" in out.stderr and "Traceback" not in out.stderr
    ok = subprocess.run(
        [EXE, "verify", str(path)], capture_output=True, text=True, env=env, timeout=120
    )
    assert ok.returncode == 0 and "verified" in ok.stdout


def _info(
    name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = ""
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.linkname = link
    return info


MANIFEST = json.dumps({"format": "fairtrial-bundle", "format_version": 1, "files": {}}).encode()


@pytest.mark.parametrize(
    ("entries", "limits", "message"),
    [
        ([("../evil.txt", b"x")], None, r"'\.\./evil\.txt' leaves the bundle's folder"),
        ([("a/../../evil.txt", b"x")], None, "leaves the bundle's folder"),
        ([("/etc/evil.txt", b"x")], None, "has an absolute path"),
        ([("C:/evil.txt", b"x")], None, "has an absolute path"),
        ([("a\\..\\evil.txt", b"x")], None, "backslash"),
        (
            [_info("link", tarfile.SYMTYPE, link="/etc/passwd")],
            None,
            "symbolic link to '/etc/passwd'",
        ),
        ([_info("hard", tarfile.LNKTYPE, link="manifest.json")], None, "is a hard link"),
        ([_info("dev", tarfile.CHRTYPE)], None, "character device"),
        ([_info("blk", tarfile.BLKTYPE)], None, "block device"),
        ([_info("pipe", tarfile.FIFOTYPE)], None, "is a fifo"),
        ([("big.bin", b"x" * 2000)], B.Limits(max_member_bytes=1000), "'big.bin' is 2000 bytes"),
        ([(f"f{i}", b"x") for i in range(10)], B.Limits(max_members=5), "more than 5 members"),
        (
            [(f"f{i}", b"x" * 400) for i in range(5)],
            B.Limits(max_total_bytes=1500),
            "add up to more than",
        ),
        ([("/".join("d" * 30) + "/f", b"x")], None, "folders deep"),
        ([("x" * 600, b"x")], None, "600 characters"),
        ([("a.txt", b"1"), ("A.TXT", b"2")], None, "appears twice"),
        ([("a.txt", b"1"), ("a.txt/b", b"2")], None, "inside 'a.txt', which is a file"),
        ([("a//b", b"1")], None, "empty or '.' path component"),
        ([("./a", b"1")], None, "empty or '.' path component"),
        ([("a\x01b", b"1")], None, "control characters"),
    ],
)
def test_unsafe_archives_are_refused_before_extracting(
    tmp_path: Path, entries: list[object], limits: B.Limits | None, message: str
) -> None:
    bad = tmp_path / "work" / "bad.tar.gz"
    bad.parent.mkdir()
    full: list[tuple[str | tarfile.TarInfo, bytes]] = [("manifest.json", MANIFEST)]
    for e in entries:
        full.append((e, b"") if isinstance(e, tarfile.TarInfo) else e)  # type: ignore[arg-type]
    write_raw(bad, full)
    before = sorted(p for p in tmp_path.rglob("*"))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    old = tempfile.tempdir
    tempfile.tempdir = str(scratch)
    try:
        with pytest.raises(BundleError, match=message):
            B.read_bundle(bad, limits=limits)
    finally:
        tempfile.tempdir = old
    assert list(scratch.iterdir()) == [], "nothing was extracted"
    assert sorted(p for p in tmp_path.rglob("*") if p != scratch) == before
    assert not Path("/etc/evil.txt").exists()


def test_not_a_bundle(tmp_path: Path) -> None:
    plain = tmp_path / "plain.tar.gz"
    with tarfile.open(plain, "w:gz") as tar:  # python's gzip header (a name and a time)
        tar.add(__file__, arcname="manifest.json")
    with pytest.raises(BundleError, match="gzip header differs"):
        B.read_bundle(plain)
    text = tmp_path / "x.tar.gz"
    text.write_text("hello")
    with pytest.raises(BundleError, match="not gzip-compressed"):
        B.read_bundle(text)
    empty = tmp_path / "e.tar.gz"
    write_raw(empty, [("a.txt", b"x")])
    with pytest.raises(BundleError, match=r"has no manifest\.json"):
        B.read_bundle(empty)
    with pytest.raises(BundleError, match="no such bundle"):
        B.read_bundle(tmp_path / "missing.tar.gz")


def test_data_after_the_end_of_the_archive_is_refused(tmp_path: Path) -> None:
    good = _small_bundle(tmp_path)
    with gzip_open(good) as fh:
        raw = fh.read()
    raw += b"\x00" * 1024 + b"smuggled"
    bad = tmp_path / "tail.tar.gz"
    with bad.open("wb") as out:
        B._deterministic_gzip(io.BytesIO(raw), out)
    with pytest.raises(BundleError, match="data after the end of the archive"):
        B.read_bundle(bad)


def gzip_open(path: Path) -> io.BufferedReader:
    import gzip

    return gzip.open(path, "rb")  # type: ignore[return-value]


# -- property-based: random archives ---------------------------------------------------------
_PART = st.sampled_from(["a", "b", "..", ".", "", "manifest.json", "C:", "\\", "x y", "é"])
_NAME = st.lists(_PART, min_size=1, max_size=4).map("/".join) | st.text(min_size=0, max_size=12)
_KIND = st.sampled_from(
    [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE]
)
_MEMBER = st.tuples(_NAME, _KIND, st.binary(max_size=64), _NAME)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(_MEMBER, max_size=6), st.booleans(), st.booleans())
def test_random_archives_are_read_safely_or_refused(
    tmp_path: Path, entries: list[tuple[str, bytes, bytes, str]], with_manifest: bool, honest: bool
) -> None:
    """Random names (``..``, absolute, drive letters, backslashes, empty parts), member types
    (files, folders, links, fifos) and contents, with no manifest, an empty one or a correct
    one: the reader refuses with BundleError or extracts inside its own temporary folder."""
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    box = work / "box"
    box.mkdir()
    items: list[tuple[str | tarfile.TarInfo, bytes]] = []
    for name, kind, payload, link in entries:
        if not name or "\x00" in name or "\x00" in link or name == "manifest.json":
            continue
        size = len(payload) if kind == tarfile.REGTYPE else 0
        items.append((_info(name, kind, size, link), payload))
    if with_manifest:
        listed = {
            i.name: {"sha256": hashlib.sha256(p).hexdigest(), "size": i.size}
            for i, p in items
            if honest and isinstance(i, tarfile.TarInfo) and i.isreg()
        }
        manifest = json.dumps({"format": "fairtrial-bundle", "format_version": 1, "files": listed})
        items.insert(0, ("manifest.json", manifest.encode()))
    path = box / "r.tar.gz"
    try:
        write_raw(path, items)
    except (ValueError, UnicodeError, tarfile.TarError):
        return  # tarfile itself cannot write this member
    scratch = box / "tmp"
    scratch.mkdir()
    old = tempfile.tempdir
    tempfile.tempdir = str(scratch)
    try:
        b = B.open_archive(path)
    except BundleError:
        pass
    else:
        assert b.root.is_relative_to(scratch)
        for f in b.root.rglob("*"):
            assert f.resolve().is_relative_to(b.root.resolve()) and not f.is_symlink()
        b.close()
    finally:
        tempfile.tempdir = old
    assert list(scratch.iterdir()) == []
    assert sorted(p.name for p in box.iterdir()) == ["r.tar.gz", "tmp"], "nothing written outside"
    assert sorted(p.name for p in work.iterdir()) == ["box"]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_random_byte_changes_are_detected_or_harmless(tmp_path: Path, data: st.DataObject) -> None:
    path = tmp_path / "small.tar.gz"
    if not path.exists():
        _small_bundle(tmp_path)
    original = extracted(path)
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    bad = tmp_path / "m.tar.gz"
    bad.write_bytes(bytes(raw))
    with contextlib.suppress(BundleError):
        assert extracted(bad) == original


_SCALAR = (
    st.booleans() | st.integers(-(2**62), 2**62) | st.floats(allow_nan=False) | st.text(max_size=20)
)
_VALUE = st.recursive(
    _SCALAR,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(min_size=1, max_size=8), inner, min_size=1, max_size=3)
    ),
    max_leaves=8,
)
_KEY = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_KEY, _VALUE, min_size=1, max_size=5), st.text(max_size=40))
@example({"a": {"0\n": False}}, "")  # "$" matches before a final newline: keys need fullmatch
def test_spec_toml_round_trips(baseline: dict[str, object], claim: str) -> None:
    from fairtrial.spec import flatten

    normalized = {
        "experiment": {"name": "x", "task": "digits", "recipe": "r:f", "command": None,
                       "seeds": 3, "root_seed": 5, "metric": "accuracy", "target": None},
        "hypothesis": {"claim": claim, "smallest_effect": None, "alpha": 0.05},
        "baseline": baseline,
        "arms": {"a-1": {k: 1 for k in list(flatten(baseline))[:1]}},
        "ablations": [],
    }  # fmt: skip
    back = tomllib.loads(B.spec_toml(normalized))
    assert flatten(back["baseline"]) == flatten(baseline)
    assert back["hypothesis"]["claim"] == claim and back["experiment"]["root_seed"] == 5
    assert flatten(back["arms"]["a-1"]) == normalized["arms"]["a-1"]
