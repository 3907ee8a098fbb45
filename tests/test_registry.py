"""The registry against a real `fairtrial serve` on loopback, on SQLite and on PostgreSQL.

Real bundles of real digits runs go in through the HTTP API; what comes back is checked against
the bundles themselves. Refused uploads (no token, malformed or malicious bundles, oversize
bodies) must leave nothing stored.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from conftest import RegistryServer
from fairtrial import bundle as B
from fairtrial.server import Registry
from fairtrial.server import schema as S

pytest.importorskip("fastapi")
EXE = shutil.which("fairtrial", path=str(Path(sys.executable).parent)) or "fairtrial"


def call(
    server: RegistryServer,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    token: str | None = None,
    content_type: str = "application/gzip",
) -> tuple[int, Any, dict[str, str]]:
    """(status, parsed JSON or text, headers) of one request to the server."""
    headers = {"Content-Type": content_type} if body is not None else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(server.url + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, raw, hdrs = resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        status, raw, hdrs = exc.code, exc.read(), dict(exc.headers)
    ctype = hdrs.get("content-type", "")
    if ctype.startswith("application/json"):
        return status, json.loads(raw), hdrs
    if ctype.startswith("text/"):
        return status, raw.decode(), hdrs
    return status, raw, hdrs


def stored(server: RegistryServer) -> dict[str, int]:
    """Rows in each registry table, read straight from the store."""
    reg = Registry(server.store)
    try:
        with reg.engine.connect() as c:
            return {
                t.name.removeprefix("registry_"): c.execute(
                    select(func.count()).select_from(t)
                ).scalar_one()
                for t in (S.bundles, S.experiments, S.entries, S.trials, S.replications)
            }
    finally:
        reg.close()


def analysis(path: Path) -> dict[str, Any]:
    with B.read_bundle(path) as b:
        doc: dict[str, Any] = b.json("results/analysis.json")
        return doc


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}  # type: ignore[union-attr]


def reforge(src: Path, dst: Path, name: str, edit: Any) -> Path:
    """A bundle with member ``name`` edited and the manifest recomputed to match."""
    files = members(src)
    old = json.loads(files.pop("manifest.json"))
    files[name] = edit(files[name])
    B.write_archive(files, dst, extra={"experiment": old["experiment"]})
    return dst


def raw_tar(dst: Path, entries: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            if isinstance(e, tarfile.TarInfo):
                tar.addfile(e)
            else:
                info = tarfile.TarInfo(e[0])
                info.size = len(e[1])
                tar.addfile(info, io.BytesIO(e[1]))
    raw.seek(0)
    with dst.open("wb") as out:
        B._deterministic_gzip(raw, out)
    return dst


# -- the round trip ------------------------------------------------------------------------------
def test_registry_round_trip(
    registry_server: RegistryServer, registry_bundles: dict[str, Path]
) -> None:
    srv = registry_server
    ln, lr = registry_bundles["layernorm"], registry_bundles["lr"]
    assert call(srv, "GET", "/api/tasks")[1] == []

    status, body, _ = call(srv, "POST", "/api/bundles", ln.read_bytes(), token=srv.token)
    assert status == 201 and body["created"] is True, body
    assert body["id"] == sha(ln) and body["badge"] == "not yet replicated"
    status, body, _ = call(srv, "POST", "/api/bundles", ln.read_bytes(), token=srv.token)
    assert status == 200 and body["created"] is False
    assert call(srv, "POST", "/api/bundles", lr.read_bytes(), token=srv.token)[0] == 201
    assert stored(srv)["experiments"] == 2 and stored(srv)["trials"] == 12

    tasks = call(srv, "GET", "/api/tasks")[1]
    assert [(t["task"], t["experiments"]) for t in tasks] == [("digits", 2)]

    # the leaderboard holds each experiment's arms with the bundle's own numbers
    status, board, _ = call(srv, "GET", "/api/tasks/digits/leaderboard")
    assert status == 200 and board["total"] == 4 and board["metric"] == "accuracy"
    docs = {sha(ln): analysis(ln), sha(lr): analysis(lr)}
    for row in board["rows"]:
        arm = docs[row["experiment"]]["arms"][row["arm"]]
        assert row["mean"] == pytest.approx(arm["mean"])
        assert [row["low"], row["high"]] == pytest.approx(arm["interval"])
        assert row["n"] == 3
        assert row["score"] == pytest.approx(arm["interval"][0])  # accuracy: higher is better
        if row["kind"] == "arm":
            c = next(c for c in docs[row["experiment"]]["comparisons"] if c["arm"] == row["arm"])
            assert row["verdict"] == c["verdict"]
            assert row["effect"] == pytest.approx(c["effect"])
        assert row["reference"] is True  # both experiments share one baseline
        assert row["badge"] == "not yet replicated"
        assert row["wall_time_mean_s"] > 0 and row["flops_mean"] > 0
    scores = [r["score"] for r in board["rows"]]
    assert scores == sorted(scores, reverse=True)

    # sorting, filtering, paging
    means = [
        r["mean"] for r in call(srv, "GET", "/api/tasks/digits/leaderboard?sort=mean")[1]["rows"]
    ]
    assert means == sorted(means, reverse=True)
    asc = call(srv, "GET", "/api/tasks/digits/leaderboard?sort=mean&order=asc")[1]["rows"]
    assert [r["mean"] for r in asc] == sorted(means)
    arms_only = call(srv, "GET", "/api/tasks/digits/leaderboard?kind=arm")[1]
    assert {r["arm"] for r in arms_only["rows"]} == {"layernorm", "slow"}
    assert call(srv, "GET", "/api/tasks/digits/leaderboard?device=gpu")[1]["total"] == 0
    assert call(srv, "GET", "/api/tasks/digits/leaderboard?device=cpu")[1]["total"] == 4
    hw = board["rows"][0]["hardware"].split()[0]
    assert call(srv, "GET", f"/api/tasks/digits/leaderboard?hardware={hw}")[1]["total"] == 4
    assert call(srv, "GET", "/api/tasks/digits/leaderboard?hardware=no-such-cpu")[1]["total"] == 0
    assert call(srv, "GET", "/api/tasks/digits/leaderboard?max_time=0")[1]["total"] == 0
    page = call(srv, "GET", "/api/tasks/digits/leaderboard?limit=3&offset=3")[1]
    assert len(page["rows"]) == 1 and page["total"] == 4
    status, err, _ = call(srv, "GET", "/api/tasks/digits/leaderboard?sort=vibes")
    assert status == 422 and "sort 'vibes': valid: score, mean" in err["error"]
    status, err, _ = call(srv, "GET", "/api/tasks/nope/leaderboard")
    assert status == 404 and "task 'nope'" in err["error"]

    # the experiment: the registry's own analysis agrees with the uploaded one
    status, exp, _ = call(srv, "GET", f"/api/experiments/{sha(ln)[:10]}")
    assert status == 200 and exp["id"] == sha(ln) and exp["name"] == "digits-layernorm"
    assert exp["analysis"]["registry"]["verdict_differences"] == []
    assert [c["verdict"] for c in exp["analysis"]["comparisons"]] == [
        c["verdict"] for c in docs[sha(ln)]["comparisons"]
    ]
    assert set(exp["figures"]) >= {"paired", "forest", "curves", "compute"}
    assert all("<svg" in f for f in exp["figures"].values())
    assert call(srv, "GET", "/api/experiments/0123456789abcdef")[0] == 404
    status, err, _ = call(srv, "GET", "/api/experiments/not-hex")
    assert status == 404 and "sha256" in err["error"]

    # predictions: the truth is the task's own test label, each arm a majority vote of 3 seeds
    from fairtrial.tasks import get_task

    task = get_task("digits")
    status, ex, _ = call(srv, "GET", f"/api/experiments/{sha(ln)}/predictions?index=7")
    assert status == 200 and ex["truth"] == int(task.y[task.test_idx[7]])
    assert set(ex["arms"]) == {"baseline", "layernorm"}
    assert all(a["seeds"] == 3 and 0 < a["agreement"] <= 1 for a in ex["arms"].values())
    n = len(task.test_idx)
    status, err, _ = call(srv, "GET", f"/api/experiments/{sha(ln)}/predictions?index={n}")
    assert status == 404 and f"0..{n - 1}" in err["error"]

    # the bundle comes back byte for byte
    status, raw, hdrs = call(srv, "GET", f"/api/experiments/{sha(ln)}/bundle")
    assert status == 200 and raw == ln.read_bytes()
    assert hdrs["content-type"] == "application/gzip"

    # search and compare
    found = call(srv, "GET", "/api/experiments?q=layer+norm")[1]
    assert [e["id"] for e in found["experiments"]] == [sha(ln)]
    assert call(srv, "GET", "/api/experiments?task=digits")[1]["total"] == 2
    assert call(srv, "GET", "/api/experiments?q=100%25")[1]["total"] == 0  # LIKE is literal
    status, cmp, _ = call(srv, "GET", f"/api/compare?a={sha(ln)}&b={sha(lr)}")
    assert status == 200 and cmp["diff"]["count"] > 0
    config = {row["key"] for row in cmp["diff"]["groups"]["config"]}
    assert any("norm" in k or "lr" in k for k in config), config

    # a replication record links to its bundle and shows as a badge
    record = json.loads(registry_bundles["record"].read_text())
    assert record["outcome"] == "replicated"
    body = json.dumps(record).encode()
    path = f"/api/experiments/{sha(ln)}/replications"
    status, err, _ = call(srv, "POST", path, body, content_type="application/json")
    assert status == 401
    status, rep, _ = call(srv, "POST", path, body, token=srv.token, content_type="application/json")
    assert status == 201 and rep["outcome"] == "replicated", rep
    assert call(srv, "POST", path, body, token=srv.token, content_type="application/json")[0] == 200
    other = f"/api/experiments/{sha(lr)}/replications"
    status, err, _ = call(
        srv, "POST", other, body, token=srv.token, content_type="application/json"
    )
    assert status == 422 and "is not experiment" in err["error"]
    badges = {
        (r["experiment"], r["badge"])
        for r in call(srv, "GET", "/api/tasks/digits/leaderboard")[1]["rows"]
    }
    assert badges == {(sha(ln), "replicated ×1"), (sha(lr), "not yet replicated")}
    history = call(srv, "GET", f"/api/experiments/{sha(ln)}/replications")[1]
    assert [h["outcome"] for h in history] == ["replicated"]
    assert stored(srv)["replications"] == 1
    by_rep = call(srv, "GET", "/api/tasks/digits/leaderboard?sort=replicated")[1]["rows"]
    assert by_rep[0]["experiment"] == sha(ln)

    # every page of the web UI renders, escaped and under the content-security policy
    for page in [
        "/",
        "/tasks/digits",
        "/tasks/digits?sort=time&device=cpu&max_time=100",
        f"/experiments/{sha(ln)}",
        f"/experiments/{sha(ln)}/predictions?index=3",
        f"/compare?a={sha(ln)[:12]}&b={sha(lr)[:12]}",
        "/search?q=digits",
    ]:
        status, html, hdrs = call(srv, "GET", page)
        assert status == 200, (page, html)
        assert "script-src" not in hdrs["content-security-policy"]
        assert "default-src 'none'" in hdrs["content-security-policy"]
        assert "<script" not in html
    html = call(srv, "GET", f"/experiments/{sha(ln)}")[1]
    assert "replicated ×1" in html and 'data-figure="paired"' in html
    assert "Replication history" in html and "Not yet replicated" not in html
    status, html, _ = call(srv, "GET", "/tasks/digits?max_time=abc")
    assert status == 422 and "max_time &#39;abc&#39;: give a number" in html


def test_writes_need_a_token(
    registry_server: RegistryServer, registry_bundles: dict[str, Path]
) -> None:
    srv = registry_server
    data = registry_bundles["layernorm"].read_bytes()
    for token in (None, "", "ft_wrong", srv.token + "x"):
        status, err, _ = call(srv, "POST", "/api/bundles", data, token=token)
        assert status == 401 and "Authorization: Bearer" in err["error"]
    req = urllib.request.Request(
        srv.url + "/api/bundles", data=data, method="POST",
        headers={"Authorization": f"Basic {srv.token}"},
    )  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=30)
    assert info.value.code == 401
    status, _, _ = call(srv, "PUT", "/api/tasks/digits/reference?experiment=abcdef12")
    assert status == 401
    assert stored(srv) == dict.fromkeys(stored(srv), 0)
    # a revoked token stops working
    reg = Registry(srv.store)
    token_id = reg.check_token(srv.token)
    assert token_id is not None and reg.revoke_token(token_id)
    reg.close()
    assert call(srv, "POST", "/api/bundles", data, token=srv.token)[0] == 401
    # tokens are stored hashed only
    reg = Registry(srv.store)
    with reg.engine.connect() as c:
        rows = c.execute(select(S.tokens)).mappings().all()
    reg.close()
    assert srv.token not in json.dumps([dict(r) for r in rows], default=str)
    assert rows[0]["token_sha256"] == hashlib.sha256(srv.token.encode()).hexdigest()


def test_bad_uploads_are_refused_and_nothing_is_stored(
    registry_server: RegistryServer, registry_bundles: dict[str, Path], tmp_path: Path
) -> None:
    srv = registry_server
    good = registry_bundles["layernorm"]

    def bump(raw: bytes) -> bytes:
        doc = json.loads(raw)
        doc["arms"]["layernorm"]["values"][0] += 0.05
        return json.dumps(doc).encode()

    def flip_predictions(raw: bytes) -> bytes:
        preds = json.loads(raw)
        first = sorted(preds)[0]
        preds[first]["predictions"][0] = (preds[first]["predictions"][0] + 1) % 10
        return json.dumps(preds).encode()

    def relabel(raw: bytes) -> bytes:
        rows = json.loads(raw)
        rows[0]["result"] = 0.999
        return json.dumps(rows).encode()

    link = tarfile.TarInfo("code/files/evil")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    cases: list[tuple[str, bytes, int, str]] = [
        ("empty", b"", 422, "empty upload"),
        ("not gzip", b"PK\x03\x04 this is a zip file", 422, "bundle refused"),
        ("truncated", good.read_bytes()[:4000], 422, "bundle refused"),
        (
            "path traversal",
            raw_tar(
                tmp_path / "t.tar.gz", [("manifest.json", b"{}"), ("../evil", b"x")]
            ).read_bytes(),
            422,
            "leaves the bundle's folder",
        ),
        (
            "symlink",
            raw_tar(tmp_path / "s.tar.gz", [("manifest.json", b"{}"), link]).read_bytes(),
            422,
            "symbolic link",
        ),
        (
            "edited analysis",
            reforge(good, tmp_path / "a.tar.gz", "results/analysis.json", bump).read_bytes(),
            422,
            "results/analysis.json: arm 'layernorm' seed",
        ),
        (
            "edited predictions",
            reforge(
                good, tmp_path / "p.tar.gz", "results/predictions.json", flip_predictions
            ).read_bytes(),
            422,
            "predictions differ from those its sealed test log entry hashed",
        ),
        (
            "edited result",
            reforge(good, tmp_path / "r.tar.gz", "results/trials.json", relabel).read_bytes(),
            422,
            "sealed test log entry",
        ),
    ]
    for what, data, code, message in cases:
        status, err, _ = call(srv, "POST", "/api/bundles", data, token=srv.token)
        assert status == code, (what, err)
        assert message in err["error"], (what, err)
    # a body over the limit (8 MiB for this server) is refused from its Content-Length alone,
    # before any of it is read
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.putrequest("POST", "/api/bundles")
    conn.putheader("Authorization", f"Bearer {srv.token}")
    conn.putheader("Content-Length", str(9 << 20))
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413 and "the limit is 8388608" in json.loads(resp.read())["error"]
    conn.close()
    assert stored(srv) == dict.fromkeys(stored(srv), 0)
    assert not Path("/etc/passwd").is_symlink()
    # malformed replication records
    for record, code, message in [
        (b"not json", 422, "not JSON"),
        (b"[]", 404, "not in this registry"),
        (json.dumps({"format": "x", "bundle": {"sha256": "0" * 64}}).encode(), 404, "not in this"),
    ]:
        path = "/api/experiments/" + "0" * 64 + "/replications"
        status, err, _ = call(
            srv, "POST", path, record, token=srv.token, content_type="application/json"
        )
        assert status == code and message in err["error"], (record, err)
    assert stored(srv) == dict.fromkeys(stored(srv), 0)


def test_text_from_a_bundle_is_escaped(
    registry_server: RegistryServer, write_spec: Any, tmp_path: Path
) -> None:
    """A claim (free text from the uploader) full of markup shows as text, never as markup."""
    from conftest import toy_spec
    from fairtrial.backends import InlineBackend
    from fairtrial.ledger import Ledger
    from fairtrial.runner import run_experiment
    from fairtrial.spec import load_spec

    srv = registry_server
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    spec = load_spec(
        write_spec(
            toy_spec(
                seeds=3,
                arms="[arms.noisy]\nnoise = 0.5\n",
                extra=f"[hypothesis]\nclaim = '{evil}'\nsmallest_effect = 0.01\n",
            )
        )
    )
    led = Ledger(tmp_path / "l.db")
    run_experiment(spec, led, InlineBackend(), show_progress=False)
    out = tmp_path / "evil.tar.gz"
    B.write_bundle(led, led.experiment(spec.experiment_id), out)
    led.close()
    status, body, _ = call(srv, "POST", "/api/bundles", out.read_bytes(), token=srv.token)
    assert status == 201, body
    for page in [f"/experiments/{body['id']}", "/search?q=alert", f"/tasks/{body['task']}", "/"]:
        status, html, _ = call(srv, "GET", page)
        assert status == 200
        assert "<script>" not in html and "<img src=x" not in html
        if page.startswith(("/experiments", "/search")):
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, page


def test_push_and_replicate_from_the_command_line(
    registry_bundles: dict[str, Path], tmp_path: Path
) -> None:
    """`fairtrial push` a bundle, then `fairtrial replicate URL --push` from another folder:
    the registry's leaderboard now counts the replication."""
    srv = RegistryServer(str(tmp_path / "registry.db"), tmp_path)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRTRIAL_")}
        bundle = registry_bundles["layernorm"]

        def ft(*args: str, token: str | None = srv.token, cwd: Path = tmp_path) -> Any:
            e = dict(env, FAIRTRIAL_TOKEN=token) if token else env
            return subprocess.run(
                [EXE, *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=e
            )

        res = ft("push", str(bundle), "--to", srv.url, token=None)
        assert res.returncode == 2 and "FAIRTRIAL_TOKEN" in res.stderr
        res = ft("push", str(bundle), "--to", srv.url, token="ft_wrong")
        assert res.returncode == 2 and "401" in res.stderr
        res = ft("push", str(bundle), "--to", srv.url)
        assert res.returncode == 0 and "(new)" in res.stdout, res.stdout + res.stderr
        url = f"{srv.url}/experiments/{sha(bundle)[:16]}"
        other = tmp_path / "elsewhere"
        other.mkdir()
        res = ft("replicate", url, "--push", "--backend", "inline", cwd=other)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "REPLICATED" in res.stdout and "pushed to" in res.stdout
        assert (other / ".fairtrial" / "downloads" / f"{sha(bundle)[:16]}.tar.gz").exists()
        board = call(srv, "GET", "/api/tasks/digits/leaderboard")[1]
        assert {r["badge"] for r in board["rows"]} == {"replicated ×1"}
        res = ft("push", str(registry_bundles["record"]), "--to", srv.url)
        assert res.returncode == 0 and "replication record (replicated)" in res.stdout
        board = call(srv, "GET", "/api/tasks/digits/leaderboard")[1]
        assert {r["badge"] for r in board["rows"]} == {"replicated ×2"}
        res = ft("replicate", srv.url + "/experiments/00000000", cwd=other)
        assert res.returncode == 2 and "404" in res.stderr
        res = ft("replicate", srv.url + "/tasks/digits", cwd=other)
        assert res.returncode == 2 and "experiment's registry URL" in res.stderr
    finally:
        srv.stop()


def test_serve_tokens_from_the_command_line(tmp_path: Path) -> None:
    store = str(tmp_path / "r.db")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRTRIAL_")}
    made = subprocess.run(
        [EXE, "serve", "--store", store, "--create-token", "ci"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0 and made.stdout.strip().startswith("ft_")
    token = made.stdout.strip()
    reg = Registry(store)
    token_id = reg.check_token(token)
    reg.close()
    assert token_id is not None
    listed = subprocess.run(
        [EXE, "serve", "--store", store, "--tokens"], capture_output=True, text=True, env=env
    )
    assert f"{token_id}  ci  live" in listed.stdout and token not in listed.stdout
    gone = subprocess.run(
        [EXE, "serve", "--store", store, "--revoke-token", token_id],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert gone.returncode == 0
    reg = Registry(store)
    assert reg.check_token(token) is None
    reg.close()
