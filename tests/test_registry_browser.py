"""The registry's web UI in a real headless Chromium (#6), driven with Playwright's sync API.

A real ``fairtrial serve`` (SQLite) gets two real bundles and a real replication record through
``fairtrial push``; the browser then walks the pages as a reader would: tasks, a leaderboard
(rows, sorting by a column, the filter form), an experiment (figures, badge, predictions with
drawn inputs), the predictions demo (picking examples with its form) and the comparison of the
two experiments. Throughout, the page must log no console error, raise no script error and
violate no content-security-policy directive, and no request may leave 127.0.0.1.

The browser is the system's Chromium (``FAIRTRIAL_TEST_CHROMIUM``, set by ``scripts/test.sh``
from ``scripts/chromium.sh``); Playwright never downloads one. Without it (or without
Playwright) the test skips, and fails under ``CI=true``. Full-page screenshots of the
leaderboard and an experiment go to the test's tmp_path, and to ``$FAIRTRIAL_SCREENSHOTS`` when
that is set (the README's pictures).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
]
# Runs before each page's own content: records CSP violations (Playwright injects it through
# the DevTools protocol, so the page's own no-script policy does not apply to it).
CSP_LISTENER = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI);
});
"""


def _unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser test: {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def chromium() -> str:
    """The system Chromium's path; skips (fails under CI) when it or Playwright is missing."""
    path = os.environ.get("FAIRTRIAL_TEST_CHROMIUM", "")
    if not path:
        _unavailable("FAIRTRIAL_TEST_CHROMIUM is not set (scripts/test.sh sets it)")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        _unavailable(f"FAIRTRIAL_TEST_CHROMIUM={path}: no such executable")
    for module in ("playwright.sync_api", "fastapi", "uvicorn"):
        try:
            __import__(module)
        except ImportError:
            _unavailable(f"{module} is not installed")
    return path


class Site:
    def __init__(self, url: str, ids: dict[str, str]) -> None:
        self.url = url
        self.ids = ids  # "layernorm" / "lr" -> bundle sha256

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as resp:
            return json.loads(resp.read())


@pytest.fixture(scope="module")
def site(
    chromium: str, registry_bundles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    """A real registry server on SQLite, filled through ``fairtrial push``."""
    from conftest import RegistryServer

    work = tmp_path_factory.mktemp("browser-registry")
    server = RegistryServer(str(work / "registry.db"), work)
    try:
        env = {**os.environ, "FAIRTRIAL_TOKEN": server.token}
        ids = {}
        for key in ("layernorm", "lr", "record"):
            res = subprocess.run(
                [sys.executable, "-m", "fairtrial.cli", "push", str(registry_bundles[key]),
                 "--to", server.url],
                env=env, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert res.returncode == 0, res.stderr
            assert "(new)" in res.stdout, res.stdout
            ids[key] = res.stdout.split("/experiments/")[1].split()[0]
        assert ids["record"] == ids["layernorm"]
        yield Site(server.url, {"layernorm": ids["layernorm"], "lr": ids["lr"]})
    finally:
        server.stop()


def _png_ok(path: Path) -> tuple[int, int]:
    """(width, height) of a real, non-blank PNG at ``path``."""
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = struct.unpack(">II", raw[16:24])
    idat, pos = b"", 8
    while pos < len(raw):
        (length,) = struct.unpack(">I", raw[pos : pos + 4])
        if raw[pos + 4 : pos + 8] == b"IDAT":
            idat += raw[pos + 8 : pos + 8 + length]
        pos += 12 + length
    pixels = zlib.decompress(idat)
    assert len(set(pixels)) > 32, f"{path}: (nearly) one colour"
    assert len(raw) > 20_000, f"{path}: only {len(raw)} bytes"
    return width, height


def _seconds(text: str) -> float:
    """'850 ms', '4.01 s' or '2.5 min' (the leaderboard's time column) in seconds."""
    value, unit = text.split()
    return float(value) * {"ms": 0.001, "s": 1.0, "min": 60.0}[unit]


def test_registry_in_a_browser(chromium: str, site: Site, tmp_path: Path) -> None:
    from playwright.sync_api import Route, sync_playwright

    problems: list[str] = []
    hosts: set[str] = set()
    shots: list[Path] = []

    def route(r: Route) -> None:
        parsed = urlparse(r.request.url)
        if parsed.scheme in ("http", "https", "ws", "wss"):
            hosts.add(parsed.hostname or "")
            if parsed.hostname != "127.0.0.1":
                r.abort()
                return
        r.continue_()

    def shot(page: Any, name: str) -> None:
        path = tmp_path / f"registry-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shots.append(path)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            context.route("**/*", route)
            context.add_init_script(CSP_LISTENER)
            page = context.new_page()
            page.set_default_timeout(30_000)
            page.on(
                "console",
                lambda m: (
                    problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

            def csp_violations() -> list[str]:
                got: list[str] = page.evaluate("window.__cspViolations || []")
                return got

            def settled(where: str) -> None:
                page.wait_for_load_state("networkidle")
                # Without an icon of its own a page makes Chromium fetch /favicon.ico: a 404 and
                # a console error for a reader, which Playwright's routing hides from this test.
                assert page.locator("link[rel=icon]").count() == 1, where
                assert not problems, (where, problems)
                assert csp_violations() == [], (where, csp_violations())

            # -- tasks ----------------------------------------------------------------------
            page.goto(site.url + "/")
            assert page.title() == "tasks · fairtrial registry"
            task_row = page.locator("tr", has=page.get_by_role("link", name="digits", exact=True))
            assert task_row.locator("td").nth(2).inner_text() == "2"  # experiments
            assert task_row.locator("td").nth(3).inner_text() == "1"  # replications confirmed
            settled("tasks")
            task_row.get_by_role("link", name="digits", exact=True).click()

            # -- leaderboard: rows ----------------------------------------------------------
            page.wait_for_url("**/tasks/digits")
            board = site.api("/api/tasks/digits/leaderboard")
            entries = page.locator("table.board tr.entry")
            assert entries.count() == board["total"] == 4
            for i, row in enumerate(board["rows"]):  # the page shows the API's ranking
                cells = entries.nth(i).locator("td")
                assert cells.nth(1).inner_text().startswith(row["name"])
                assert cells.nth(2).inner_text().startswith(row["arm"])
                mean_cell = cells.nth(4)
                assert mean_cell.inner_text().split()[0] == f"{row['mean']:.4f}"
                assert mean_cell.get_attribute("data-interval") == (
                    f"[{row['low']:.4f}, {row['high']:.4f}]"
                )
                assert f"[{row['low']:.4f}, {row['high']:.4f}]" in mean_cell.inner_text()
                assert cells.nth(5).inner_text() == "3"  # seeds
                verdict = cells.nth(6).inner_text()
                if row["kind"] == "baseline":
                    assert "baseline" in verdict
                else:
                    assert verdict.startswith(row["verdict"]), (verdict, row["verdict"])
                badge = entries.nth(i).locator("[data-badge]").inner_text()
                want = (
                    "replicated ×1"
                    if row["experiment"] == site.ids["layernorm"]
                    else ("not yet replicated")
                )
                assert badge == want, (row["name"], badge)
            settled("leaderboard")
            shot(page, "leaderboard")

            # -- leaderboard: sorting by a column header -----------------------------------
            page.locator("table.board th a", has_text="accuracy").click()
            page.wait_for_url("**sort=mean**")

            def shown_means() -> list[float]:
                cells = page.locator("table.board tr.entry td:nth-child(5)")
                return [float(t.split()[0]) for t in cells.all_inner_texts()]

            assert shown_means() == sorted(shown_means(), reverse=True)  # best first
            page.locator("table.board th a", has_text="accuracy").click()  # flips the order
            page.wait_for_url("**order=asc**")
            assert shown_means() == sorted(shown_means())
            assert len(shown_means()) == 4
            page.locator("table.board th a", has_text="time/trial").click()
            page.wait_for_url("**sort=time**")
            times = [
                _seconds(t)
                for t in page.locator("table.board tr.entry td:nth-child(9)").all_inner_texts()
            ]
            assert times == sorted(times) and len(times) == 4  # fastest first
            settled("sorting")

            # -- leaderboard: the filter form -----------------------------------------------
            page.select_option("form.filters select[name=kind]", "baseline")
            page.get_by_role("button", name="filter").click()
            page.wait_for_url("**kind=baseline**")
            assert "sort=time" in page.url  # the filter keeps the sort
            arms = page.locator("table.board tr.entry td:nth-child(3)").all_inner_texts()
            assert arms == ["baseline (baseline)"] * 2
            page.select_option("form.filters select[name=kind]", "all")
            page.fill("form.filters input[name=q]", "learning rate")
            page.get_by_role("button", name="filter").click()
            page.wait_for_url("**q=learning**")
            names = page.locator("table.board tr.entry td:nth-child(2)").all_inner_texts()
            assert names == ["digits-lr", "digits-lr"]
            assert page.locator("form.filters input[name=q]").input_value() == "learning rate"
            page.fill("form.filters input[name=q]", "")
            page.fill("form.filters input[name=max_time]", "abc")  # a user mistake
            page.get_by_role("button", name="filter").click()
            page.wait_for_load_state()
            assert "max_time 'abc': give a number" in page.locator("p.error").inner_text()
            problems[:] = [p for p in problems if "status of 422" not in p]  # the error page
            settled("filters")

            # -- follow an entry to its experiment ------------------------------------------
            page.goto(site.url + "/tasks/digits")
            page.locator("table.board tr.entry").first.get_by_role(
                "link", name="digits-layernorm"
            ).click()
            page.wait_for_url(f"**/experiments/{site.ids['layernorm']}")
            assert page.locator("h1").inner_text() == "digits-layernorm"
            figures = page.locator("[data-figure]")
            names = [figures.nth(i).get_attribute("data-figure") for i in range(figures.count())]
            assert "paired" in names and len(names) >= 3, names
            for i in range(figures.count()):
                svg = figures.nth(i).locator("svg").first
                assert svg.is_visible(), names[i]
                box = svg.bounding_box()
                assert box is not None and box["width"] > 100 and box["height"] > 50, names[i]
            assert page.locator("[data-badge]").first.inner_text() == "replicated ×1"
            pred = page.locator("table.pred tr:has(td)")
            doc = site.api(f"/api/experiments/{site.ids['layernorm']}")["analysis"]
            assert pred.count() == len(doc["predictions"]["examples"]) > 0
            first = pred.first
            assert first.locator("td.draw svg").is_visible()  # the input, drawn
            assert first.locator("td.draw svg rect").count() > 8
            assert page.locator("tr.replication").count() == 1
            assert "replicated" in page.locator("tr.replication").inner_text()
            settled("experiment")
            shot(page, "experiment")

            # -- the predictions demo: pick examples with its form --------------------------
            page.get_by_role("link", name="Open the predictions demo").click()
            page.wait_for_url(f"**/experiments/{site.ids['layernorm']}/predictions")
            contested = doc["predictions"]["examples"][0]["index"]
            assert page.locator("td.big").first.inner_text() == f"#{contested}"
            assert page.locator("tr.arm-prediction").count() == 2
            assert page.locator("[data-input] svg").is_visible()
            page.fill("input[name=index]", "7")
            page.get_by_role("button", name="show").click()
            page.wait_for_url("**index=7")
            truth = site.api(f"/api/experiments/{site.ids['layernorm']}/predictions?index=7")
            assert page.locator("td.big").first.inner_text() == "#7"
            assert page.locator("[data-truth]").inner_text() == str(truth["truth"])
            for arm, got in truth["arms"].items():
                row = page.locator("tr.arm-prediction", has_text=arm)
                assert row.locator("td").inner_text().startswith(str(got["prediction"]))
            page.get_by_role("link", name="next →").click()
            page.wait_for_url("**index=8")
            assert page.locator("td.big").first.inner_text() == "#8"
            settled("predictions")

            # -- compare the two experiments, from the experiment page's form --------------
            page.goto(site.url + f"/experiments/{site.ids['layernorm']}")
            page.fill("form[action='/compare'] input[name=b]", site.ids["lr"][:16])
            page.locator("form[action='/compare'] button").click()
            page.wait_for_url("**/compare?**")
            query = parse_qs(urlparse(page.url).query)
            assert query["a"] == [site.ids["layernorm"]] and query["b"] == [site.ids["lr"][:16]]
            headings = page.locator("h2").all_inner_texts()
            assert "A: digits-layernorm" in headings and "B: digits-lr" in headings
            assert any(h.startswith("Differences (") for h in headings), headings
            assert page.locator("table.diff td", has_text="hypothesis.claim").count() == 1
            badges = page.locator("[data-badge]").all_inner_texts()
            assert badges == ["replicated ×1", "not yet replicated"]
            settled("compare")

            # -- the checks above can fail: a disallowed load is seen and blocked -----------
            page.evaluate(
                "document.body.insertAdjacentHTML('beforeend', "
                "'<img src=\"http://203.0.113.7/x.png\">')"
            )
            page.wait_for_function("window.__cspViolations.length > 0")
            assert any("img-src" in v for v in csp_violations())
            assert "203.0.113.7" not in hosts  # the policy stopped it before any request
            problems.clear()
        finally:
            browser.close()

    assert hosts == {"127.0.0.1"}, hosts
    sizes = {path.name: _png_ok(path) for path in shots}
    assert all(w >= 1000 and h >= 600 for w, h in sizes.values()), sizes
    assert sizes["registry-experiment.png"][1] > 2000  # the whole page, figures and tables
    out = os.environ.get("FAIRTRIAL_SCREENSHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        for path in shots:
            shutil.copy(path, Path(out) / path.name)
