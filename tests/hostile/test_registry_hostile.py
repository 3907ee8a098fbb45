"""The registry against hostile uploads: forged results, unverifiable results, the same content
uploaded again and again, malformed bundles and records, and uploads in the wrong form.

The bundles are real (the toy recipe on digits, and on a task of the uploader's own code), and
every hostile variant is made from them here by code: a forgery rewrites the results, the
analysis, the test log (re-chained) and the manifest so that the bundle checks itself clean.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import RECIPES, RegistryServer
from fairtrial import bundle as B
from fairtrial.errors import BundleError, RegistryError
from fairtrial.ledger import Ledger
from fairtrial.ledger import chain as chain_mod
from fairtrial.ledger.logs import TEST_LOG_FIELDS
from fairtrial.spec import hash_normalized

pytest.importorskip("fastapi")

from test_registry import call, stored

SPEC = """
[experiment]
name = "{name}"
task = "{task}"
recipe = "toy:probe"
seeds = 3

[hypothesis]
claim = "noise hurts"
smallest_effect = 0.01

[baseline]
noise = 0.0
mode = "ok"
sleep = 0.0

[arms.noisy]
noise = 0.5
"""

USER_TASK = """
import numpy as np
from fairtrial import Task


def small():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    return Task.from_arrays("small", x, y)
"""


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bundles of two real toy experiments: on the built-in digits task ("digits") and on a
    task defined by the uploader's code ("user")."""
    from fairtrial.backends import InlineBackend
    from fairtrial.runner import run_experiment
    from fairtrial.spec import load_spec

    root = tmp_path_factory.mktemp("hostile-registry")
    shutil.copy(RECIPES / "toy.py", root / "toy.py")
    (root / "usertask.py").write_text(USER_TASK)
    led = Ledger(root / "ledger.db")
    out = {}
    for key, task in (("digits", "digits"), ("user", "usertask:small")):
        spec_path = root / f"{key}.toml"
        spec_path.write_text(SPEC.format(name=f"hostile-{key}", task=task))
        spec = load_spec(spec_path)
        run_experiment(spec, led, InlineBackend(), show_progress=False)
        out[key] = root / f"{key}.tar.gz"
        B.write_bundle(led, led.experiment(spec.experiment_id), out[key])
    led.close()
    return out


# -- making hostile variants ---------------------------------------------------------------------
def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}  # type: ignore[union-attr]


def rewrite(src: Path, dst: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """A bundle with its members changed by ``change`` (JSON members parsed, others as bytes)
    and the manifest written anew to match."""
    files: dict[str, Any] = members(src)
    manifest = json.loads(files.pop("manifest.json"))
    for name in list(files):
        if name.endswith(".json"):
            files[name] = json.loads(files[name])
    change(files)
    exp = files["experiment.json"]
    named = exp.get("id") if isinstance(exp, dict) else None
    extra = {"experiment": {**manifest["experiment"], "id": named}}
    raw = {
        k: (json.dumps(v).encode() if k.endswith(".json") and not isinstance(v, bytes) else v)
        for k, v in files.items()
    }
    B.write_archive(raw, dst, extra=extra)
    return dst


def forge(files: dict[str, Any], arm: str, claim: float) -> list[str]:
    """Make every finished trial of ``arm`` report ``claim``: results, analysis, test log
    (scores changed, every entry re-hashed along the chain). Returns the trials changed."""
    changed = {}
    for t in files["results/trials.json"]:
        if t["arm"] == arm and t["status"] == "finished":
            t["result"] = claim
            changed[(t["id"], t["attempt"])] = t["id"]
    doc = files["results/analysis.json"]["arms"][arm]
    doc["values"] = [claim] * len(doc["values"])
    doc["mean"] = claim
    entries = files["testlog.json"]["entries"]
    prev = entries[0]["prev_hash"]
    for e in entries:
        if (e["trial_id"], e["attempt"]) in changed:
            e["score"] = claim
        e["prev_hash"] = prev
        e["entry_hash"] = chain_mod.entry_hash(prev, {k: e[k] for k in TEST_LOG_FIELDS})
        prev = e["entry_hash"]
    return list(changed.values())


def respec(files: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> None:
    """Change the spec and give the experiment the id and spec hash that spec really has."""
    exp = files["experiment.json"]
    change(exp["spec"])
    exp["spec_hash"] = hash_normalized(exp["spec"])
    exp["id"] = exp["spec_hash"][:12]


def padded(src: Path, dst: Path, zeros: int) -> Path:
    """The same archive with ``zeros`` more bytes of tar end padding: other bytes, same
    content."""
    raw = gzip.decompress(src.read_bytes()) + b"\0" * zeros
    with dst.open("wb") as out:
        B._deterministic_gzip(io.BytesIO(raw), out)
    return dst


def upload(srv: RegistryServer, path: Path) -> tuple[int, Any]:
    status, body, _ = call(srv, "POST", "/api/bundles", path.read_bytes(), token=srv.token)
    return status, body


# -- forged and unverifiable results -------------------------------------------------------------
def test_forged_results_are_refused_and_unverifiable_ones_rank_last(
    registry_server: RegistryServer, toy: dict[str, Path], tmp_path: Path
) -> None:
    srv = registry_server
    holder: dict[str, list[str]] = {}

    def inflate(files: dict[str, Any]) -> None:
        holder["trials"] = forge(files, "noisy", 0.999)

    forged = rewrite(toy["digits"], tmp_path / "forged.tar.gz", inflate)
    # the forgery is self-consistent: every check of the bundle itself passes (which is all the
    # registry checked before it re-scored results)
    with B.read_bundle(forged) as b:
        assert b.experiment().id == json.loads(members(toy["digits"])["experiment.json"])["id"]
    with B.read_bundle(toy["digits"]) as b:
        truth = {t.id: t.result for t in b.trials() if t.arm == "noisy" and t.status == "finished"}
    status, err = upload(srv, forged)
    assert status == 422, err
    message = err["error"]
    assert "\n" not in message
    first = holder["trials"][0]  # the first trial that differs is named
    assert f"trial {first} reports accuracy 0.999" in message, message
    assert f"score {truth[first]!r}" in message, message
    assert "3 of 6 finished trials differ" in message
    # the command line's verify re-scores too
    with pytest.raises(BundleError, match=r"reports accuracy 0\.999"):
        B.verify_bundle(forged)
    assert B.verify_bundle(toy["digits"])["results"] == {
        "verified": True,
        "rescored": 6,
        "unverifiable": None,
    }

    # an experiment id that is not its spec's hash (the spec hash itself checks out)
    def rename(files: dict[str, Any]) -> None:
        files["experiment.json"]["id"] = "0123456789ab"

    status, err = upload(srv, rewrite(toy["digits"], tmp_path / "id.tar.gz", rename))
    assert status == 422 and "experiment id '0123456789ab' is not its spec hash's" in err["error"]

    # a spec filed under another task than the one it names
    def retask(files: dict[str, Any]) -> None:
        files["experiment.json"]["task"] = "breast_cancer"

    status, err = upload(srv, rewrite(toy["digits"], tmp_path / "task.tar.gz", retask))
    assert status == 422 and "task 'breast_cancer' is not the spec's 'digits'" in err["error"]
    assert stored(srv)["experiments"] == 0
    # the honest bundle goes in, verified
    status, honest = upload(srv, toy["digits"])
    assert status == 201 and honest["verified"] is True and honest["unverifiable"] is None

    # a task of the uploader's own code: stored, marked unverifiable everywhere
    status, user = upload(srv, toy["user"])
    assert status == 201, user
    assert user["verified"] is False
    assert "defined by the uploader's code" in user["unverifiable"]
    exp = call(srv, "GET", f"/api/experiments/{user['id']}")[1]
    assert exp["verified"] is False and exp["analysis"]["registry"]["results"]["verified"] is False
    html = call(srv, "GET", f"/experiments/{user['id']}")[1]
    assert "data-unverifiable" in html and "defined by the uploader&#39;s code" in html
    board = call(srv, "GET", "/api/tasks/usertask:small/leaderboard")[1]
    assert {r["verified"] for r in board["rows"]} == {False}

    # the forger's way out of re-scoring: inflate the results and drop the predictions. Stored,
    # but unverifiable, and ranked below the honest (lower) verified results by every sort, the
    # newest first included
    def inflate_and_drop(files: dict[str, Any]) -> None:
        forge(files, "noisy", 0.999)
        forge(files, "baseline", 0.998)
        del files["results/predictions.json"]

    dropped = rewrite(toy["digits"], tmp_path / "dropped.tar.gz", inflate_and_drop)
    status, body = upload(srv, dropped)
    assert status == 201 and body["verified"] is False, body
    assert "have no stored test predictions" in body["unverifiable"]
    for sort in ("score", "mean", "effect", "uploaded"):
        rows = call(srv, "GET", f"/api/tasks/digits/leaderboard?sort={sort}")[1]["rows"]
        assert [r["verified"] for r in rows] == [True, True, False, False], sort
        assert {r["experiment"] for r in rows[:2]} == {honest["id"]}
        assert all(r["wall_time_mean_s"] > 0 for r in rows)  # the arms' compute, kept
    rows = call(srv, "GET", "/api/tasks/digits/leaderboard?sort=mean&order=asc")[1]["rows"]
    assert [r["verified"] for r in rows] == [True, True, False, False]
    html = call(srv, "GET", "/tasks/digits")[1]
    assert html.count("data-unverifiable>unverifiable") == 2
    assert html.index(honest["id"]) < html.index(body["id"])
    found = call(srv, "GET", "/api/experiments?task=digits")[1]["experiments"]
    assert {(e["id"], e["verified"]) for e in found} == {
        (honest["id"], True),
        (body["id"], False),
    }


# -- the same content, other bytes; malformed uploads ---------------------------------------------
def test_the_same_content_is_stored_once_and_malformed_uploads_get_one_line(
    registry_server: RegistryServer, toy: dict[str, Path], tmp_path: Path
) -> None:
    srv = registry_server
    status, first = upload(srv, toy["digits"])
    assert status == 201
    variants = [padded(toy["digits"], tmp_path / "pad.tar.gz", 10240)]

    def relock(files: dict[str, Any]) -> None:  # a field that is no result
        files["environment/lock.json"]["python"] = "3.99.0"

    variants.append(rewrite(toy["digits"], tmp_path / "lock.tar.gz", relock))
    for path in variants:
        assert path.read_bytes() != toy["digits"].read_bytes()
        status, body = upload(srv, path)
        assert status == 200 and body["created"] is False, body
        assert body["id"] == first["id"]
    assert stored(srv)["experiments"] == 1 and stored(srv)["bundles"] == 1
    # at once: other bytes of one content, each upload answered, one stored
    srv2_paths = [padded(toy["user"], tmp_path / f"u{k}.tar.gz", 512 * (k + 1)) for k in range(6)]
    answers: list[tuple[int, Any]] = []
    lock = threading.Lock()

    def send(path: Path) -> None:
        got = upload(srv, path)
        with lock:
            answers.append(got)

    threads = [threading.Thread(target=send, args=(p,)) for p in srv2_paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a[0] for a in answers) == [200] * 5 + [201], answers
    assert len({a[1]["id"] for a in answers}) == 1
    assert stored(srv)["experiments"] == 2 and stored(srv)["bundles"] == 2
    _malformed(srv, toy["digits"], first, tmp_path)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change that sets the JSON value at ``member:key/key/...`` (list indexes as numbers)."""
    member, _, keys = path.partition(":")

    def change(files: dict[str, Any]) -> None:
        parts = keys.split("/") if keys else []
        if not parts:
            files[member] = value
            return
        node = files[member]
        for k in parts[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        last = parts[-1]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return change


def _malformed(srv: RegistryServer, good: Path, honest: dict[str, Any], tmp_path: Path) -> None:
    """Malformed bundles, forms and records: each a 4xx with one line; nothing stored."""

    def deep_member(name: str) -> Callable[[dict[str, Any]], None]:
        def change(files: dict[str, Any]) -> None:
            files[name] = ("[" * 100_000 + "]" * 100_000).encode()

        return change

    def claim_with_nul(files: dict[str, Any]) -> None:
        respec(files, lambda s: s["hypothesis"].update(claim="noise\x00hurts"))

    def alpha_text(files: dict[str, Any]) -> None:
        respec(files, lambda s: s["hypothesis"].update(alpha="0.05"))

    cases: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
        ("deep analysis", deep_member("results/analysis.json"), ""),
        ("deep trials", deep_member("results/trials.json"), ""),
        ("seeds as text", _set("experiment.json:seeds", "three"), "'seeds' is the string"),
        ("arms a list", _set("experiment.json:arms", []), "'arms' is a list"),
        ("arm not an arm", _set("experiment.json:arms/arms/0", 7), "'arms.arms[0]' is the number"),
        ("trials an object", _set("results/trials.json", {"a": 1}), ""),
        ("trial an int", _set("results/trials.json:0", 5), ""),
        ("seed as text", _set("results/trials.json:0/seed", "0"), "'[0].seed' is the string"),
        ("time as text", _set("results/trials.json:0/wall_time", "1s"), "'[0].wall_time' is the"),
        ("huge seed", _set("results/trials.json:0/seed", 10**30), "seed and attempt must be"),
        ("analysis arms a list", _set("results/analysis.json:arms", [1]), "'arms' is a list"),
        ("values as text", _set("results/analysis.json:arms/noisy/values", "x"), "values' is the"),
        ("predictions a list", _set("results/predictions.json", [1, 2]), ""),
        ("claim with NUL", claim_with_nul, "NUL character"),
        ("alpha as text", alpha_text, "'spec.hypothesis.alpha' is the string '0.05'"),
        ("metrics lines", lambda f: f.update({"results/metrics.jsonl": b"[1, 2]\n"}), "a line"),
    ]
    for what, change, message in cases:
        path = rewrite(good, tmp_path / "bad.tar.gz", change)
        status, err = upload(srv, path)
        assert 400 <= status < 500, (what, status, err)
        assert "\n" not in err["error"] and message in err["error"], (what, err)
    # a preview of the body makes no difference: a multipart form gets the right advice
    boundary = "------------------------d74496d66958873e"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="b.tar.gz"'
            f"\r\nContent-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + good.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    for ctype, code in [
        (f"multipart/form-data; boundary={boundary}", 415),
        ("application/gzip", 422),
    ]:
        status, err, _ = call(
            srv, "POST", "/api/bundles", form, token=srv.token, content_type=ctype
        )
        assert status == code, (ctype, err)
        assert "multipart form" in err["error"] and "--data-binary @" in err["error"], err
        assert "not gzip-compressed" not in err["error"]
    # replication records: too deep, or with fields of the wrong type
    path = f"/api/experiments/{honest['id']}/replications"
    for body, message in [
        (b"[" * 50_000 + b"]" * 50_000, "nests deeper than"),
        (json.dumps({"bundle": [1]}).encode(), "is not experiment"),
        (
            json.dumps(
                {
                    "format": "fairtrial-replication",
                    "outcome": "replicated",
                    "bundle": {"sha256": honest["id"]},
                    "original": {"experiment_id": honest["experiment_id"]},
                    "acm": [1],
                    "replication": {"seeds": 3},
                }
            ).encode(),
            "",
        ),
    ]:
        status, err, _ = call(
            srv, "POST", path, body, token=srv.token, content_type="application/json"
        )
        assert status < 500 and message in json.dumps(err), (body[:40], status, err)
    assert stored(srv)["experiments"] == 2


# -- every mutation of every field: a verdict, never a crash ------------------------------------
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
FUZZED = [
    "experiment.json",
    "results/trials.json",
    "results/analysis.json",
    "results/predictions.json",
    "preregistration.json",
    "environment/provenance.json",
    "code/snapshot.json",
]


def _paths(value: Any, prefix: tuple[Any, ...] = (), depth: int = 4) -> list[tuple[Any, ...]]:
    out = [prefix]
    if depth and isinstance(value, dict):
        for k, v in list(value.items())[:40]:
            out += _paths(v, (*prefix, k), depth - 1)
    elif depth and isinstance(value, list):
        for i, v in enumerate(value[:3]):
            out += _paths(v, (*prefix, i), depth - 1)
    return out


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_field_of_any_type_is_refused_or_stored(
    toy: dict[str, Path], tmp_path: Path, data: st.DataObject
) -> None:
    """Replace one value anywhere in a bundle's JSON members by any JSON value: the registry
    either stores the bundle or refuses it with its own error (a 4xx), never anything else."""
    from fairtrial.server import Registry
    from fairtrial.server.app import SERVER_LIMITS

    files = {k: json.loads(v) for k, v in members(toy["digits"]).items() if k in FUZZED}
    member = data.draw(st.sampled_from(FUZZED))
    where = data.draw(st.sampled_from(_paths(files[member])))
    value = data.draw(JSON)

    def change(f: dict[str, Any]) -> None:
        if not where:
            f[member] = value
            return
        node = f[member]
        for k in where[:-1]:
            node = node[k]
        node[where[-1]] = value

    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    path = rewrite(toy["digits"], folder / "b.tar.gz", change)
    reg = Registry(folder / "r.db", limits=SERVER_LIMITS)
    try:
        reg.add_bundle(path)
    except (BundleError, RegistryError) as exc:
        assert "\n" not in str(exc)
    finally:
        reg.close()


# -- a registry from before re-scoring ------------------------------------------------------------
def test_a_registry_from_before_rescoring_opens_with_its_entries_unverifiable(
    tmp_path: Path,
) -> None:
    """A store made by the registry's earlier schema (no verification or content columns, the
    board index without them) opens: columns added, entries marked unverifiable (never
    re-scored), the board index made again with the new columns."""
    from sqlalchemy import Index, MetaData, Table, create_engine, insert, inspect

    from fairtrial.server import Registry
    from fairtrial.server import schema as S
    from fairtrial.server.registry import LEGACY_UNVERIFIED
    from test_registry_board import _entry, _experiment

    added = {"verified", "unverifiable", "content_key"}
    old = MetaData()
    tables = {
        t.name: Table(t.name, old, *[c._copy() for c in t.columns if c.name not in added])
        for t in S.metadata.tables.values()
    }
    Index("registry_entries_board", *(tables["registry_entries"].c[c] for c in (
        "task", "metric", "score", "kind", "device", "verdict", "wall_time_mean_s",
        "flops_mean", "energy_mean_j", "mean", "effect", "n", "uploaded_at")))  # fmt: skip
    path = tmp_path / "old.db"
    engine = create_engine(f"sqlite:///{path}")
    old.create_all(engine)
    with engine.begin() as c:
        c.execute(insert(tables["registry_experiments"]), [_experiment(i) for i in range(2)])
        c.execute(insert(tables["registry_entries"]), [_entry(i, 0.9, 1.0) for i in range(2)])
    engine.dispose()

    reg = Registry(path)
    try:
        found = reg.search()["experiments"]
        assert [(e["verified"], e["unverifiable"]) for e in found] == [
            (False, LEGACY_UNVERIFIED)
        ] * 2
        assert [r["verified"] for r in reg.leaderboard("digits")["rows"]] == [False, False]
        board = next(
            i for i in inspect(reg.engine).get_indexes("registry_entries")
            if i["name"] == "registry_entries_board"
        )  # fmt: skip
        assert board["column_names"] == list(S.BOARD_COLUMNS)
    finally:
        reg.close()
