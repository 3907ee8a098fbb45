"""The registry's web UI: server-rendered pages, no scripts, no CDN, escaped by default.

Jinja2 autoescapes every value; the only markup passed through unescaped is the SVG that
:mod:`fairtrial.report.svg` draws, which escapes every text it contains. Sorting and filtering
are plain links and GET forms, so every view has a URL and works without JavaScript.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlencode

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

import fairtrial
from fairtrial.errors import RegistryError
from fairtrial.report import fmt
from fairtrial.report import html as report_html
from fairtrial.results import Analysis
from fairtrial.server.boards import MAX_PAGE, SORTS, Filters
from fairtrial.tasks.external import is_external

if TYPE_CHECKING:
    from fairtrial.server.registry import Registry

HERE = Path(__file__).parent
_ENV = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_CSS = report_html.CSS + (HERE / "static" / "registry.css").read_text()


def num(x: Any, digits: int = 4) -> str:
    """A number for a table cell: ``—`` when missing, else ``digits`` decimals."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{float(x):.{digits}f}"


def signed(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{float(x):+.{digits}f}"


def si(x: Any, unit: str = "") -> str:
    """1.23e9 -> '1.23 G' (FLOPs, joules)."""
    if x is None:
        return "—"
    v = float(x)
    for size, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= size:
            return f"{v / size:.3g} {prefix}{unit}"
    return f"{v:.3g} {unit}".rstrip()


def seconds(x: Any) -> str:
    if x is None:
        return "—"
    v = float(x)
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s" if v < 120 else f"{v / 60:.1f} min"


def date(ts: Any) -> str:
    import datetime as dt

    if ts is None:
        return "—"
    return dt.datetime.fromtimestamp(float(ts), dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


_ENV.filters.update(num=num, signed=signed, si=si, seconds=seconds, date=date)
# an external task's results were evaluated by the recipe: every page that shows them says so
_ENV.globals.update(version=fairtrial.__version__, recipe_evaluated=is_external)


def render(template: str, code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(_ENV.get_template(template).render(**context), status_code=code)


def error_page(status: int, message: str) -> HTMLResponse:
    return render("error.html", status, status=status, message=message, title=f"{status}")


def _svg(markup: str | None) -> Markup:
    """SVG drawn by fairtrial.report.svg (whose text is escaped) passed through as markup."""
    return Markup(markup or "")


@functools.lru_cache(maxsize=4096)
def _drawn(x: str, how: str) -> str:
    """A test input drawn as SVG, by its JSON: experiments on a task disagree on the same test
    examples, so one drawing serves many pages."""
    return report_html.draw_input(json.loads(x), json.loads(how))


#: stored page fragments are used while the templates and fairtrial are the ones that made them
PAGE_VERSION = hashlib.sha256(
    "\n".join(
        [fairtrial.__version__]
        + [
            (HERE / "templates" / n).read_text()
            for n in ("experiment_analysis.html", "experiment_tail.html")
        ]
    ).encode()
).hexdigest()[:16]


def render_parts(e: dict[str, Any]) -> dict[str, str]:
    """The parts of ``e``'s experiment page that change with no upload (everything but the
    replication badge and history and the reference flag), as HTML: rendered once, when the
    bundle arrives, and stored with the experiment. ``e`` is :meth:`Registry.experiment`'s
    document."""
    doc = Analysis.from_dict(e["analysis"])
    figures = {k: _svg(v) for k, v in e["figures"].items()}
    heads, rows, notes = fmt.compute_rows(doc)
    pred = doc.predictions
    disagree = None
    if pred:
        disagree = {
            "examples": pred["examples"],
            "arms": list(pred["examples"][0]["arms"]) if pred["examples"] else [],
            "drawn": {
                str(x["index"]): _svg(
                    _drawn(
                        json.dumps((pred.get("inputs") or {}).get(str(x["index"]))),
                        json.dumps(pred.get("input")),
                    )
                )
                for x in pred["examples"]
            },
            "line": fmt.disagreement_line(pred),
            "accuracy": pred.get("majority_vote_accuracy") or {},
        }
    context = dict(
        e=e,
        doc=doc,
        figures=figures,
        registry=doc.extra.get("registry") or {},
        verdicts=Markup(report_html.verdict_table(doc.comparisons, "vs"))
        if doc.comparisons
        else None,
        ablations=Markup(report_html.verdict_table(doc.ablations, "removed"))
        if doc.ablations
        else None,
        arms_table=Markup(report_html.arms_table(doc)),
        rigor=fmt.rigor_lines(doc),
        methods=fmt.methods(doc),
        compute=(heads, rows, notes),
        disagree=disagree,
    )
    return {
        "version": PAGE_VERSION,
        "analysis": _ENV.get_template("experiment_analysis.html").render(**context),
        "tail": _ENV.get_template("experiment_tail.html").render(**context),
    }


def render_experiment(e: dict[str, Any], parts: dict[str, Any] | None = None) -> str:
    """The experiment page of ``e`` as HTML, from its stored ``parts`` (:func:`render_parts`)
    when they are current, else from ``e``'s analysis and figures."""
    if not parts or parts.get("version") != PAGE_VERSION:
        parts = render_parts(e)
    return _ENV.get_template("experiment.html").render(
        e=e,
        parts={k: Markup(parts[k]) for k in ("analysis", "tail")},
        title=e["name"],
    )


def add_pages(app: FastAPI, reg: Registry) -> None:
    """Mount the web UI's routes on ``app``."""

    @app.get("/static/style.css", include_in_schema=False)
    def style() -> Response:
        return Response(
            _CSS, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"}
        )

    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    def tasks_page() -> HTMLResponse:
        tasks = reg.tasks()
        recent = reg.search(limit=10)["experiments"]
        return render("tasks.html", tasks=tasks, recent=recent, title="tasks")

    @app.get("/search", include_in_schema=False, response_class=HTMLResponse)
    def search_page(
        q: Annotated[str | None, Query(max_length=200)] = None,
        task: Annotated[str | None, Query(max_length=200)] = None,
        offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    ) -> HTMLResponse:
        found = reg.search(q or None, task=task or None, limit=50, offset=offset)
        return render("search.html", found=found, q=q or "", task=task or "", title="search")

    @app.get("/tasks/{task}", include_in_schema=False, response_class=HTMLResponse)
    def leaderboard_page(
        request: Request,
        task: str,
        sort: Annotated[str, Query(max_length=20)] = "score",
        order: Annotated[str | None, Query(pattern="^(asc|desc)$")] = None,
        metric: Annotated[str | None, Query(max_length=64)] = None,
        kind: Annotated[str, Query(pattern="^(all|arm|baseline)$")] = "all",
        device: Annotated[str | None, Query(pattern="^(|cpu|gpu)$")] = None,
        hardware: Annotated[str | None, Query(max_length=100)] = None,
        max_time: Annotated[str | None, Query(max_length=30)] = None,
        max_flops: Annotated[str | None, Query(max_length=30)] = None,
        q: Annotated[str | None, Query(max_length=200)] = None,
        offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    ) -> HTMLResponse:
        filters = Filters(
            metric=metric or None,
            kind=kind,
            device=device or None,
            hardware=hardware or None,
            max_time=_number("max_time", max_time),
            max_flops=_number("max_flops", max_flops),
            q=q or None,
        )
        board = reg.leaderboard(task, sort=sort, order=order, filters=filters, offset=offset)
        params = {
            k: v
            for k, v in dict(request.query_params).items()
            if v and k not in ("sort", "order", "offset")
        }

        def link(**change: Any) -> str:
            merged = {**params, "sort": board["sort"], "order": board["order"], **change}
            return f"/tasks/{task}?" + urlencode({k: v for k, v in merged.items() if v})

        def sort_link(key: str) -> str:
            # clicking the column already sorted flips its order
            if key == board["sort"]:
                return link(sort=key, order="asc" if board["order"] == "desc" else "desc")
            return link(sort=key, order="")

        return render(
            "leaderboard.html",
            board=board,
            filters=filters,
            sort_link=sort_link,
            link=link,
            sorts=SORTS,
            page=MAX_PAGE,
            title=f"{task} leaderboard",
        )

    @app.get("/experiments/{ref}", include_in_schema=False, response_class=HTMLResponse)
    def experiment_page(ref: str) -> HTMLResponse:
        e = reg.experiment(ref, predictions=False, documents=False)
        parts = e.pop("page", None)
        if not parts or parts.get("version") != PAGE_VERSION:  # made by another version
            e, parts = reg.experiment(ref, predictions=False), None
        return HTMLResponse(render_experiment(e, parts))

    @app.get("/experiments/{ref}/predictions", include_in_schema=False, response_class=HTMLResponse)
    def predictions_page(
        ref: str,
        index: Annotated[str | None, Query(max_length=12)] = None,
    ) -> HTMLResponse:
        info, table = reg.predictions(ref)
        e = reg.summary(info["id"])
        if table is None:
            return render(
                "predictions.html", e=e, info=info, table=None, ex=None, title="predictions"
            )
        n = int(table["n_test"])
        disagree = info.get("disagreements") or {}
        contested = [x["index"] for x in disagree.get("examples", [])]
        if index in (None, ""):
            i = contested[0] if contested else 0
        else:
            try:
                i = int(index)
            except ValueError:
                raise RegistryError(
                    f"index '{index}': give a test example number 0..{n - 1}", 422
                ) from None
        ex = example(table, i)
        drawn = _svg(report_html.draw_input(_input(info["task"], i), _how(info["task"])))
        return render(
            "predictions.html",
            e=e,
            info=info,
            table=table,
            ex=ex,
            drawn=drawn,
            n=n,
            contested=contested,
            prev=(i - 1) % n,
            next=(i + 1) % n,
            title="predictions",
        )

    @app.get("/compare", include_in_schema=False, response_class=HTMLResponse)
    def compare_page(
        a: Annotated[str | None, Query(max_length=64)] = None,
        b: Annotated[str | None, Query(max_length=64)] = None,
    ) -> HTMLResponse:
        if not a or not b:
            return render("compare.html", pair=None, a=a or "", b=b or "", title="compare")
        sa, sb = reg.resolve(a), reg.resolve(b)
        pair = {
            "a": reg.experiment(sa, predictions=False),
            "b": reg.experiment(sb, predictions=False),
        }
        found = reg.diff(sa, sb)
        return render("compare.html", pair=pair, diff=found, a=sa, b=sb, title="compare")


def _number(name: str, text: str | None) -> float | None:
    if text in (None, ""):
        return None
    try:
        v = float(str(text).replace("_", ""))
    except ValueError:
        raise RegistryError(
            f"{name} '{str(text)[:30]}': give a number, e.g. 1.5 or 2e9", 422
        ) from None
    if not math.isfinite(v) or v < 0:
        raise RegistryError(f"{name} '{str(text)[:30]}': give a number >= 0", 422)
    return v


def _task(name: str) -> Any:
    from fairtrial.tasks import get_task

    if ":" in name:  # the uploader's code: never imported here
        return None
    try:
        return get_task(name)
    except Exception:
        return None


def _input(task_name: str, index: int) -> list[Any] | None:
    task = _task(task_name)
    if task is None:
        return None
    return [float(v) for v in task.x[task.test_idx[index]].ravel().tolist()]


def _how(task_name: str) -> dict[str, Any] | None:
    from fairtrial.analysis import input_shape

    task = _task(task_name)
    return None if task is None else input_shape(task)


def example(table: dict[str, Any], index: int) -> dict[str, Any]:
    """One test example of a predictions table: truth and each arm's majority label."""
    n = int(table["n_test"])
    if not 0 <= index < n:
        raise RegistryError(f"index {index}: valid test examples are 0..{n - 1}", 404)
    truth = table["truth"][index]
    return {
        "index": index,
        "truth": truth,
        "arms": {
            arm: {
                "prediction": t["labels"][index],
                "agreement": t["agreement"][index],
                "correct": t["labels"][index] == truth,
                "seeds": t["seeds"],
            }
            for arm, t in table["arms"].items()
        },
    }
