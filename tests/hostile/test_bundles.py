"""Hostile bundles and downloads: names that are paths, decompression bombs, deep or mistyped
JSON, and registries that redirect the token elsewhere or send without end.

Every hostile bundle is a real bundle rewritten by code here, re-manifested (and its spec
re-hashed) so that only the check under test can catch it. Refusals are one line, exit status
2, no traceback, and nothing is written outside the temporary folder or the working folder.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bundle_kit import (
    assert_one_line_error,
    base_bundle,
    cli,
    dump,
    edit_json,
    members,
    rehash_spec,
    rewrite,
    scratch_tempdir,
    tree,
    write_bomb,
    written_bytes,
)
from fairtrial import bundle as B
from fairtrial.backends import InlineBackend
from fairtrial.errors import BundleError, RegistryError, ReplicationError
from fairtrial.replicate import judge, replicate
from fairtrial.server import client

MiB = 1 << 20


@pytest.fixture(scope="session")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return base_bundle(tmp_path_factory)


def rename_experiment(name: str) -> Callable[[Any], Any]:
    def change(exp: Any) -> Any:
        exp["name"] = exp["spec"]["experiment"]["name"] = name
        rehash_spec(exp)
        return exp

    return change


# -- names and paths from a bundle ----------------------------------------------------------
@pytest.mark.parametrize("kind", ["absolute", "parent"])
def test_replicate_never_makes_a_folder_from_a_path_in_the_name(
    base: Path, tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An experiment name '/abs/outside/evil' or '../../../escaped' once became the
    replication folder: ``.fairtrial/replications/NAME-...`` outside the working folder."""
    work = tmp_path / "work"
    run = work / "run"
    run.mkdir(parents=True)
    name = str(tmp_path / "outside" / "evil") if kind == "absolute" else "../../../escaped"
    bad = edit_json(base, run / "bad.tar.gz", "experiment.json", rename_experiment(name))
    before = tree(tmp_path)
    if kind == "absolute":  # through the CLI (verify's CLI: the bomb and deep JSON tests)
        out = cli("replicate", "bad.tar.gz", "--backend", "inline", cwd=run, tmpdir=run / "tmp")
        assert_one_line_error(out, "experiment.json", "'name'", "not a valid experiment name")
    else:
        monkeypatch.chdir(run)
        with scratch_tempdir(run / "tmp"), pytest.raises(BundleError, match="experiment name"):
            replicate(bad, store=run / "s.db", backend=InlineBackend(), show_progress=False)
    added = [p for p in tree(tmp_path) if p not in before]
    assert all(p.startswith("work/run/") for p in added), added
    assert not (tmp_path / "outside").exists() and not list(work.glob("escaped*"))
    assert tree(run / "tmp") == [], "the extraction folder is removed"


def _rename_arm(new: str) -> Callable[[dict[str, bytes]], None]:
    """The arm 'noisy' renamed everywhere it appears (spec, arm table, trials, analysis)."""

    def change(files: dict[str, bytes]) -> None:
        exp = json.loads(files["experiment.json"])
        exp["spec"]["arms"] = {new: exp["spec"]["arms"].pop("noisy")}
        for a in exp["arms"]["arms"]:
            a["name"] = new if a["name"] == "noisy" else a["name"]
        rehash_spec(exp)
        files["experiment.json"] = dump(exp)
        trials = json.loads(files["results/trials.json"])
        for t in trials:
            t["arm"] = new if t["arm"] == "noisy" else t["arm"]
        files["results/trials.json"] = dump(trials)
        doc = json.loads(files["results/analysis.json"])
        doc["arms"][new] = doc["arms"].pop("noisy")
        files["results/analysis.json"] = dump(doc)

    return change


def _trial_id(new: str) -> Callable[[dict[str, bytes]], None]:
    def change(files: dict[str, bytes]) -> None:
        trials = json.loads(files["results/trials.json"])
        trials[0]["id"] = new
        files["results/trials.json"] = dump(trials)

    return change


def _snapshot_file(rel: str) -> Callable[[dict[str, bytes]], None]:
    """The recipe file toy.py listed under another path in the snapshot and provenance."""

    def change(files: dict[str, bytes]) -> None:
        snap = json.loads(files["code/snapshot.json"])
        snap["files"][rel] = snap["files"].pop("toy.py")
        files["code/snapshot.json"] = dump(snap)
        provs = json.loads(files["environment/provenance.json"])
        for p in provs.values():
            p["code"]["files"][rel] = p["code"]["files"].pop("toy.py")
        files["environment/provenance.json"] = dump(provs)

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_rename_arm("../../evil"), r"'spec\.arms\.\.\./\.\./evil'.* not a valid arm name"),
        (_rename_arm("a/b"), r"not a valid arm name"),
        (_rename_arm("x" * 200), r"not a valid arm name: up to 100 letters"),
        (_trial_id("../../../x"), r"results/trials\.json': field '\[0\]\.id' .* not a valid"),
        (_trial_id("/etc/x"), r"'\[0\]\.id' the string '/etc/x' is not a valid trial id"),
        (_snapshot_file("../toy.py"), r"code/snapshot\.json': field 'files' names the file "
         r"'\.\./toy\.py', which leaves the bundle's folder"),
        (_snapshot_file("/tmp/toy.py"), r"'/tmp/toy\.py', which has an absolute path"),
        (_snapshot_file("sub/./toy.py"), r"'sub/\./toy\.py', which has an empty or '\.'"),
    ],
)  # fmt: skip
def test_verify_refuses_names_and_paths_that_are_not_safe(
    base: Path, tmp_path: Path, change: Callable[[dict[str, bytes]], None], message: str
) -> None:
    bad = rewrite(base, tmp_path / "bad.tar.gz", change)
    with scratch_tempdir(tmp_path / "tmp"), pytest.raises(BundleError, match=message) as err:
        B.verify_bundle(bad)
    assert "\n" not in str(err.value)
    assert tree(tmp_path / "tmp") == []


def test_replicate_refuses_a_recipe_file_that_would_be_its_ledger(
    base: Path, tmp_path: Path
) -> None:
    """A bundled 'recipe file' named ledger.db would be the replication's ledger, filled in
    advance with results the replication never ran."""

    def change(files: dict[str, bytes]) -> None:
        _snapshot_file("ledger.db")(files)
        files["code/files/ledger.db"] = files.pop("code/files/toy.py")

    bad = rewrite(base, tmp_path / "bad.tar.gz", change)
    B.verify_bundle(bad)  # a consistent bundle: only replicate must not use it
    folder = tmp_path / "rep"
    with pytest.raises(ReplicationError, match=r"'ledger\.db' would take the place of"):
        replicate(bad, folder=folder, store=tmp_path / "s.db", backend=InlineBackend())
    assert not (folder / "ledger.db").exists()


# -- decompression bombs -------------------------------------------------------------------------
def test_a_decompression_bomb_is_refused_before_anything_is_written(
    base: Path, tmp_path: Path
) -> None:
    """1 GiB of zeros in a 1 MB bundle (re-manifested with its size): refused while streaming,
    before extraction; a verify once wrote the whole GiB to the temporary folder first."""
    bomb = write_bomb(base, tmp_path / "bomb.tar.gz", {"results/zeros.bin": 1 << 30})
    assert bomb.stat().st_size < 2 * MiB
    before = written_bytes()
    with scratch_tempdir(tmp_path / "tmp"), pytest.raises(BundleError) as err:
        B.verify_bundle(bomb)
    if before is not None:
        assert written_bytes() - before < MiB  # type: ignore[operator]
    assert "a decompression bomb" in str(err.value)
    assert tree(tmp_path / "tmp") == []
    # the CLI, with no file of it allowed past 16 MiB (the kernel stops it otherwise)
    out = cli("verify", str(bomb), cwd=tmp_path, tmpdir=tmp_path / "tmp", file_limit=16 * MiB)
    assert_one_line_error(out, "unsafe bundle", "times its compressed size", "limit 100:1")
    assert tree(tmp_path / "tmp") == []


def test_the_registry_refuses_a_bomb_without_writing_it(base: Path, tmp_path: Path) -> None:
    """Three 128 MiB members of zeros (each within the registry's member limit) in a bundle of
    under 1 MB: the registry's reader refuses it streaming, and stores nothing."""
    pytest.importorskip("fastapi")
    from fairtrial.server import Registry
    from fairtrial.server.app import SERVER_LIMITS

    zeros = {f"results/zeros{i}.bin": 128 * MiB for i in range(3)}
    bomb = write_bomb(base, tmp_path / "bomb.tar.gz", zeros)
    assert bomb.stat().st_size < MiB
    reg = Registry(tmp_path / "registry.db", limits=SERVER_LIMITS)
    try:
        before = written_bytes()
        with scratch_tempdir(tmp_path / "tmp"), pytest.raises(BundleError) as err:
            reg.add_bundle(bomb)
        if before is not None:
            assert written_bytes() - before < MiB  # type: ignore[operator]
        assert "a decompression bomb" in str(err.value)
        assert reg.tasks() == []
    finally:
        reg.close()
    assert tree(tmp_path / "tmp") == []


def test_an_oversized_tar_header_is_refused_before_it_is_read(base: Path, tmp_path: Path) -> None:
    """tarfile reads a pax extended header into memory whole: 8 MiB of it is refused."""
    import io
    import tarfile

    files = members(base)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            if name == "spec.toml":
                info.pax_headers = {"comment": "x" * (8 * MiB)}
            tar.addfile(info, io.BytesIO(data))
    raw.seek(0)
    bad = tmp_path / "bad.tar.gz"
    with bad.open("wb") as out:
        B._deterministic_gzip(raw, out)
    with pytest.raises(BundleError, match=r"a member header of \d+ bytes .*\(limit 65536\)"):
        B.verify_bundle(bad)


def test_limits_are_counted_on_the_stream_and_real_bundles_pass(base: Path) -> None:
    """The real bundle deflates far less than the ratio limit; a tighter limit refuses it."""
    assert B.verify_bundle(base)["ok"]
    with pytest.raises(BundleError, match=r"more than 2 times its compressed size"):
        B.verify_bundle(base, limits=B.Limits(max_ratio=2, ratio_exempt_bytes=0))


# -- deep and mistyped JSON ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("member", "text"),
    [
        ("results/trials.json", "[" * 100_000 + "]" * 100_000),
        ("testlog.json", '{"entries": ' + "[" * 100_000),
        ("experiment.json", '{"a": ' * 50_000 + "1" + "}" * 50_000),
        ("results/metrics.jsonl", '["t", 1, 0, 0, "loss", 0.5]\n' + "[" * 5000 + "]" * 5000),
    ],
)
def test_deeply_nested_json_is_refused_in_one_line(
    base: Path, tmp_path: Path, member: str, text: str
) -> None:
    bad = rewrite(base, tmp_path / "deep.tar.gz", lambda f: f.update({member: text.encode()}))
    with pytest.raises(BundleError, match=rf"'{member}' nests arrays or objects more than 64"):
        B.verify_bundle(bad)


def test_json_members_are_utf8(base: Path, tmp_path: Path) -> None:
    """The registry decodes results/metrics.jsonl as UTF-8: the reader checks it for it."""
    text = b'["t", 1, 0, 0, "loss", 0.5]\n\xff\xfe\n'
    bad = rewrite(
        base, tmp_path / "bad.tar.gz", lambda f: f.update({"results/metrics.jsonl": text})
    )
    with pytest.raises(BundleError, match=r"'results/metrics\.jsonl' is not UTF-8 text"):
        B.verify_bundle(bad)


def test_deep_json_through_the_cli(base: Path, tmp_path: Path) -> None:
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    bad = rewrite(base, tmp_path / "deep.tar.gz", lambda f: f.update({"results/trials.json": deep}))
    out = cli("verify", str(bad), cwd=tmp_path, tmpdir=tmp_path / "tmp")
    assert_one_line_error(out, "results/trials.json", "nests arrays or objects more than 64")


def _set(path: str, value: Any) -> Callable[[Any], Any]:
    """Set the dotted ``path`` (``[i]`` for list items; '' for the whole member) to ``value``."""

    def change(doc: Any) -> Any:
        if not path:
            return value
        keys: list[Any] = []
        for part in path.split("."):
            keys.append(int(part[1:-1]) if part.startswith("[") else part)
        target = doc
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value
        if isinstance(doc, dict) and "spec" in doc and "spec_hash" in doc:
            rehash_spec(doc)
        return doc

    return change


TRIALS, EXP, ANALYSIS = "results/trials.json", "experiment.json", "results/analysis.json"
MISTYPED = [
    (TRIALS, "", None, r"'results/trials\.json': is null, expected a list"),
    (TRIALS, "", {"a": 1}, r"is an object, expected a list"),
    (TRIALS, "[0]", "x", r"field '\[0\]' is the string 'x', expected an object"),
    (TRIALS, "[1].seed", "1", r"'\[1\]\.seed' is the string '1', expected a whole number"),
    (TRIALS, "[0].attempt", True, r"'\[0\]\.attempt' is true, expected a whole number"),
    (TRIALS, "[0].result", "0.9", r"'\[0\]\.result' is the string '0\.9', expected a number or"),
    (TRIALS, "[0].config", [], r"'\[0\]\.config' is a list, expected an object"),
    (TRIALS, "[0].seeds.data", 1.5, r"'\[0\]\.seeds\.data' is the number 1\.5"),
    (TRIALS, "[0].code_hash", 7, r"'\[0\]\.code_hash' is the number 7, expected a string"),
    (EXP, "", [], r"'experiment\.json': is a list, expected an object"),
    (EXP, "spec", "x", r"field 'spec' is the string 'x', expected an object"),
    (EXP, "spec.hypothesis", [], r"'spec\.hypothesis' is a list"),
    (EXP, "spec.hypothesis.smallest_effect", "a lot", r"'spec\.hypothesis\.smallest_eff"),
    (EXP, "spec.experiment.root_seed", "0", r"'spec\.experiment\.root_seed' is the string"),
    (EXP, "arms", None, r"field 'arms' is null, expected an object"),
    (EXP, "arms.arms.[1].name", 5, r"'arms\.arms\[1\]\.name' is the number 5"),
    (EXP, "seeds", "2", r"field 'seeds' is the string '2', expected a whole number"),
    ("testlog.json", "entries", {}, r"'testlog\.json': field 'entries' is an object"),
    ("testlog.json", "entries.[0].attempt", "1", r"'entries\[0\]\.attempt' is the string"),
    ("testlog.json", "entries.[0].trial_id", [], r"'entries\[0\]\.trial_id' is a list"),
    ("code/snapshot.json", "files", ["toy.py"], r"'code/snapshot\.json': field 'files' is a"),
    ("code/snapshot.json", "module", 3, r"field 'module' is the number 3"),
    ("environment/provenance.json", "", [], r"'environment/provenance\.json': is a list"),
    ("preregistration.json", "", [1], r"'preregistration\.json': is a list, expected an"),
    ("preregistration.json", "", {"text": 5}, r"field 'text' is the number 5"),
    ("results/predictions.json", "", [], r"'results/predictions\.json': is a list"),
    (ANALYSIS, "arms.baseline.values", "x", r"'arms\.baseline\.values' is the string 'x'"),
    (ANALYSIS, "arms.noisy.seeds.[0]", "0", r"'arms\.noisy\.seeds\[0\]' is the string"),
    (ANALYSIS, "comparisons", {"a": 1}, r"field 'comparisons' is an object"),
    (ANALYSIS, "comparisons.[0].against", None, r"'comparisons\[0\]\.against' is null"),
]


@pytest.mark.parametrize(("member", "path", "value", "message"), MISTYPED)
def test_mistyped_json_names_the_member_and_field(
    base: Path, tmp_path: Path, member: str, path: str, value: Any, message: str
) -> None:
    """A wrong type anywhere a reader of bundles looks: one line naming member and field, from
    verify and from everything that reads an opened bundle (never a TypeError or KeyError)."""
    bad = edit_json(base, tmp_path / "bad.tar.gz", member, _set(path, value))
    with pytest.raises(BundleError, match=message) as err:
        B.verify_bundle(bad)
    assert "\n" not in str(err.value)


def test_mistyped_provenance_record_is_named(base: Path, tmp_path: Path) -> None:
    def change(provs: Any) -> Any:
        pid = sorted(provs)[0]
        provs[pid]["git"]["untracked"] = "notes.txt"
        return provs

    bad = edit_json(base, tmp_path / "bad.tar.gz", "environment/provenance.json", change)
    with pytest.raises(BundleError, match=r"field '[0-9a-f]{64}\.git\.untracked' is the string"):
        B.verify_bundle(bad)


def test_replicate_of_a_mistyped_bundle_is_one_line(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tolerance replicate reads from the hypothesis: a string once raised ValueError."""
    bad = edit_json(
        base, tmp_path / "bad.tar.gz", "experiment.json",
        _set("spec.hypothesis.smallest_effect", "a lot"),
    )  # fmt: skip
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BundleError, match=r"spec\.hypothesis\.smallest_effect") as err:
        replicate(bad, store=tmp_path / "s.db", backend=InlineBackend(), show_progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / ".fairtrial").exists()


def test_a_bundle_from_two_machines_reads_whole(base: Path, tmp_path: Path) -> None:
    """Trials that ran on two machines with different CPU counts: their provenance merges to
    '4 | 8' (the merge once joined the numbers as strings and raised TypeError)."""

    def change(files: dict[str, bytes]) -> None:
        provs = json.loads(files["environment/provenance.json"])
        (pid, first), other = next(iter(provs.items())), "f" * 64
        provs[pid] = {**first, "cpu_count": 4}
        provs[other] = {**first, "cpu_count": 8}
        files["environment/provenance.json"] = dump(provs)
        trials = json.loads(files["results/trials.json"])
        trials[-1]["provenance_id"] = other
        files["results/trials.json"] = dump(trials)

    two = rewrite(base, tmp_path / "two.tar.gz", change)
    with B.read_bundle(two) as b:
        assert b.capture()["groups"]["hardware"]["cpu_count"] == "4 | 8"


def test_a_valid_bundle_still_reads_whole(base: Path) -> None:
    """Everything the checks accept is what the readers use: capture, judge, verify."""
    with B.read_bundle(base) as b:
        assert b.capture()["groups"]["config"]
        doc = b.analysis()
        assert judge(doc, doc, tolerance=0.01, paired=True)["outcome"] in (
            "replicated",
            "inconclusive",
        )
    assert B.verify_bundle(base)["trials"] == 4


# -- registries that redirect or never stop ------------------------------------------------------
class Server:
    """A real HTTP server on a free loopback port in a thread; ``handle(request)`` answers, and
    every request is recorded (method, path, headers) in ``seen``."""

    def __init__(self, handle: Callable[[http.server.BaseHTTPRequestHandler], None]) -> None:
        self.seen: list[dict[str, Any]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                owner.seen.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers),
                     "body": len(body)}
                )  # fmt: skip
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    handle(self)

            do_GET = do_POST = _any

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[Callable[..., Server]]:
    made: list[Server] = []

    def make(handle: Callable[[http.server.BaseHTTPRequestHandler], None]) -> Server:
        made.append(Server(handle))
        return made[-1]

    yield make
    for s in made:
        s.close()


def _json_answer(req: http.server.BaseHTTPRequestHandler, status: int, doc: Any) -> None:
    body = json.dumps(doc).encode()
    req.send_response(status)
    req.send_header("Content-Type", "application/json")
    req.send_header("Content-Length", str(len(body)))
    req.end_headers()
    req.wfile.write(body)


ACCEPTED = {"id": "ab" * 32, "name": "hostile", "badge": "not replicated", "created": True}


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_push_never_sends_the_token_to_another_origin(
    base: Path, tmp_path: Path, servers: Callable[..., Server], code: int
) -> None:
    """The registry answers the upload with a redirect to a server on another port: fairtrial
    refuses in one line, and that server never sees the token (or any request)."""
    other = servers(lambda req: _json_answer(req, 201, ACCEPTED))

    def redirect(req: http.server.BaseHTTPRequestHandler) -> None:
        req.send_response(code)
        req.send_header("Location", f"{other.url}{req.path}")
        req.send_header("Content-Length", "0")
        req.end_headers()

    registry = servers(redirect)
    if code == 302:  # through the CLI once
        out = cli(
            "push", str(base), "--to", registry.url, cwd=tmp_path,
            env={"FAIRTRIAL_TOKEN": "s3cret"},
        )  # fmt: skip
        assert_one_line_error(out, f"redirected ({code})", "another origin", "token is not sent")
    else:
        with pytest.raises(RegistryError, match=rf"redirected \({code}\) .*another origin"):
            client.push_bundle(base, registry.url, token="s3cret")
    assert registry.seen and registry.seen[0]["headers"].get("Authorization") == "Bearer s3cret"
    assert other.seen == [], "the other origin saw a request"
    # a replication record the same
    with pytest.raises(RegistryError, match="another origin"):
        client.push_replication({"bundle": {"sha256": "ab" * 32}}, registry.url, token="s3cret")
    assert other.seen == []


def test_same_origin_redirect_keeps_method_body_and_token(
    base: Path, servers: Callable[..., Server]
) -> None:
    """307/308 on the same origin keep the upload (the registry moved under a prefix)."""

    def handle(req: http.server.BaseHTTPRequestHandler) -> None:
        if req.path.startswith("/v2/"):
            _json_answer(req, 201, ACCEPTED)
            return
        req.send_response(308)
        req.send_header("Location", "/v2" + req.path)
        req.send_header("Content-Length", "0")
        req.end_headers()

    registry = servers(handle)
    sent = client.push_bundle(base, registry.url, token="s3cret")
    assert sent["created"] is True
    _, second = registry.seen
    assert second["path"] == "/v2/api/bundles" and second["method"] == "POST"
    assert second["body"] == base.stat().st_size
    assert second["headers"].get("Authorization") == "Bearer s3cret"


def test_an_upload_is_not_turned_into_a_get(base: Path, servers: Callable[..., Server]) -> None:
    def handle(req: http.server.BaseHTTPRequestHandler) -> None:
        if req.path.startswith("/v2/"):
            _json_answer(req, 200, ACCEPTED)
            return
        req.send_response(302)
        req.send_header("Location", "/v2" + req.path)
        req.send_header("Content-Length", "0")
        req.end_headers()

    registry = servers(handle)
    with pytest.raises(RegistryError, match=r"redirected \(302\) .* would turn the upload"):
        client.push_bundle(base, registry.url, token="s3cret")
    assert len(registry.seen) == 1


def _endless(sent: list[int], length: str | None) -> Callable[..., None]:
    def handle(req: http.server.BaseHTTPRequestHandler) -> None:
        req.send_response(200)
        req.send_header("Content-Type", "application/gzip")
        if length is not None:
            req.send_header("Content-Length", length)
        req.end_headers()
        chunk = bytes(1 << 16)
        for _ in range(4096):  # 256 MiB unless the client stops reading
            req.wfile.write(chunk)
            sent[0] += len(chunk)

    return handle


@pytest.mark.parametrize("length", [None, "1000", str(1 << 40)])
def test_downloads_stop_at_the_bundle_size_limit(
    tmp_path: Path, servers: Callable[..., Server], length: str | None
) -> None:
    """A registry that sends without end (or lies about the length, or declares a TiB) is cut
    off at the limit, counted while reading; the partial file is removed."""
    sent = [0]
    registry = servers(_endless(sent, length))
    url = f"{registry.url}/experiments/{'ab' * 32}"
    folder = tmp_path / "downloads"
    with pytest.raises(RegistryError) as err:
        client.fetch_bundle(url, folder, max_bytes=4 * MiB)
    text = str(err.value)
    if length == str(1 << 40):
        assert "more than a bundle may be (4194304); not downloaded" in text
    elif length is None:
        assert "the download passed 4194304 bytes" in text
    else:  # the server closes after its declared 1000 bytes: a bundle that does not match
        assert "does not match" in text
    assert "\n" not in text and tree(folder) == []
    assert sent[0] < 64 * MiB


def test_a_download_may_follow_a_redirect_without_a_token(
    base: Path, tmp_path: Path, servers: Callable[..., Server]
) -> None:
    """No credentials, nothing to leak: a bundle served from elsewhere is followed, and still
    checked against the sha256 it is named by."""
    import hashlib

    data = base.read_bytes()
    sha = hashlib.sha256(data).hexdigest()

    def serve(req: http.server.BaseHTTPRequestHandler) -> None:
        req.send_response(200)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    store = servers(serve)

    def redirect(req: http.server.BaseHTTPRequestHandler) -> None:
        req.send_response(302)
        req.send_header("Location", f"{store.url}/blob")
        req.send_header("Content-Length", "0")
        req.end_headers()

    registry = servers(redirect)
    path, base_url = client.fetch_bundle(f"{registry.url}/experiments/{sha}", tmp_path / "d")
    assert path.read_bytes() == data and base_url == registry.url
    assert "Authorization" not in store.seen[0]["headers"]
