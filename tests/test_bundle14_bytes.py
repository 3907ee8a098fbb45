"""A bundle's bytes are pinned: the same experiment gives the same bundle, and the parts that do
not depend on the clock or the machine hash to values recorded from an earlier fairtrial.

What is pinned to a recorded sha256, and why only that:

* the archive layer (:func:`fairtrial.bundle.write_archive`) on fixed members: the tar stream
  always, the gzip file where zlib is the version the value was recorded with (deflate's output
  is zlib's choice);
* the spec file writer (:func:`fairtrial.bundle.spec_toml`) on a spec that uses every kind of
  value it writes;
* of a real experiment's bundle, the members that hold neither times nor this machine:
  ``spec.toml``, ``task.json``, ``preregistration.json`` and ``experiment.json`` with its two
  timestamps and its spec path put back to fixed values. The other members record times
  (trials, metrics, test log, analysis) or the interpreter, packages and host (provenance,
  lock, snapshot id, and so the manifest): for them, and for the whole file, writing twice
  gives the same bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import sys
import textwrap
import zlib
from pathlib import Path
from typing import Any

import pytest

import fairtrial
from conftest import RECIPES, toy_spec
from fairtrial import bundle as B
from fairtrial.backends import InlineBackend
from fairtrial.ledger import Ledger
from fairtrial.runner import run_experiment
from fairtrial.spec import load_spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: the zlib the gzip file's sha256 below was recorded with
ZLIB = "1.2.13"
ARCHIVE_TAR = "0c6b2176dece46c346915eac9dcc98d344f973e125847b17f4620b418541db15"
ARCHIVE_GZ = "28dc83aab351c82e68f026742bbe8f32bd3628e28dfae743488df95feed264d3"
SPEC_TOML = "48fc4ff4d6ea5e5a70c55380993372dd12920bf6660eeb337cf1068a14a69897"
MEMBERS = {
    "spec.toml": "1741bca1326aa66e00fd7c89b2e4062e1e93c8635a54a841a91f4926a5502bfa",
    "task.json": "27fcb232c7cdac2e4fcca5b3b49c4f732f161f344a7304c769be53cabe0a0453",
    "preregistration.json": "38e0b9de817f645c4bec37c0d4a3e58baecccb040f5718dc069a72c7385a0bed",
    "experiment.json": "01e9971241f71f126ec436b42d5faec74829c46622aea8036e17315b2e3f825a",
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fixed_members() -> dict[str, bytes]:
    """Members of every kind the writer meets: JSON, lines, empty, binary, nested, non-ASCII."""
    return {
        "experiment.json": B._dumps({"id": "abc123", "name": "pinned", "values": [1, 2.5, None]}),
        "results/metrics.jsonl": b'["t1", 1, 0, 0.5, "loss", 0.25]\n["t1", 1, 1, 1.0, "loss", 1]\n',
        "code/git.diff": b"",
        "code/files/pkg/mod.py": b"def f():\n    return 1\n",
        "code/files/caf\u00e9.py": "# caf\u00e9\n".encode(),
        "results/predictions.json": bytes(range(256)) * 300,
        "spec.toml": b'[experiment]\nname = "pinned"\n',
    }


def test_archive_layer_bytes_are_pinned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fairtrial, "__version__", "0.0.0")
    extra = {"experiment": {"id": "abc123", "name": "pinned", "spec_hash": "0" * 64}}
    first, second = tmp_path / "a" / "one.tar.gz", tmp_path / "b" / "two.tar.gz"
    manifest = B.write_archive(fixed_members(), first, extra=extra)
    assert B.write_archive(fixed_members(), second, extra=extra) == manifest
    data = first.read_bytes()
    assert data == second.read_bytes(), "the file name and folder do not enter the bytes"
    assert data.startswith(B.GZIP_HEADER)
    assert sha(gzip.decompress(data)) == ARCHIVE_TAR
    if zlib.ZLIB_RUNTIME_VERSION == ZLIB:
        assert sha(data) == ARCHIVE_GZ
    with B.open_archive(first) as b:
        assert b.manifest == manifest
        assert {n: b.read_bytes(n) for n in fixed_members()} == fixed_members()


def test_spec_toml_is_pinned() -> None:
    normalized: dict[str, Any] = {
        "experiment": {
            "name": "pinned",
            "task": "digits",
            "recipe": "toy:probe",
            "command": None,
            "seeds": 7,
            "deterministic": True,
            "metric": "accuracy",
            "target": 0.9,
            "time_limit": None,
        },
        "hypothesis": {"claim": 'quote " and\ttab and del \x7f and \u00e9', "alpha": 0.05},
        "baseline": {
            "lr": 1e-300,
            "layers": [16, 32],
            "opt": {"name": "adam", "betas": [0.9, 0.999]},
            "flags": {"on": True, "off": False},
            "odd key": "value",
            "missing": None,
        },
        "arms": {
            "wide": {"layers": [64, 64]},
            "edge": {"lo": float("-inf"), "hi": float("inf"), "bad": float("nan")},
            "mapped": {"grid": [{"a": 1}, {"b": "two"}]},
        },
        "ablations": ["wide"],
    }
    text = B.spec_toml(normalized)
    parsed = tomllib.loads(text)
    assert parsed["baseline"]["opt"] == {"name": "adam", "betas": [0.9, 0.999]}
    assert parsed["ablations"] == {"leave_one_out": ["wide"]}
    assert sha(text.encode()) == SPEC_TOML


def test_real_experiment_bundle_bytes(tmp_path: Path) -> None:
    """A real run (the toy recipe on digits, 2 arms x 2 seeds, inline), bundled twice."""
    for src in RECIPES.glob("*.py"):
        (tmp_path / src.name).write_text(src.read_text())
    path = tmp_path / "spec.toml"
    arms = "[arms.noisy]\nnoise = 0.3\n[hypothesis]\nclaim = 'noise hurts'\nsmallest_effect = 0.1\n"
    path.write_text(textwrap.dedent(toy_spec(name="pinned", seeds=2, arms=arms)))
    spec = load_spec(path)
    led = Ledger(tmp_path / "ledger.db")
    try:
        run_experiment(spec, led, InlineBackend(), show_progress=False)
        exp = led.experiment(spec.experiment_id)
        one, two = tmp_path / "one.tar.gz", tmp_path / "two.tar.gz"
        written = B.write_bundle(led, exp, one)
        B.write_bundle(led, exp, two)
    finally:
        led.close()
    assert one.read_bytes() == two.read_bytes(), "same experiment, same bytes"
    assert written["sha256"] == sha(one.read_bytes())
    with B.read_bundle(one) as b:
        got = {name: b.read_bytes(name) for name in MEMBERS}
    # the times of the row and where its spec file was are this run's: fixed before hashing
    got["experiment.json"] = re.sub(
        rb'("(?:created|updated)_at": )[0-9.e+-]+', rb"\g<1>0", got["experiment.json"]
    ).replace(str(path).encode(), b"SPEC")
    assert {name: sha(data) for name, data in got.items()} == MEMBERS
