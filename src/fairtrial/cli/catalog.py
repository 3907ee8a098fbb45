"""``fairtrial tasks`` and ``fairtrial recipes``: what is built in."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from fairtrial.cli._common import out
from fairtrial.errors import FairtrialError


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def tasks(as_json: bool) -> None:
    """The built-in tasks with their sizes, metrics, checksums, sources and licences, and the
    named task suites (JSON: one row per task, then one per suite, named "suite:NAME")."""
    from fairtrial.tasks import SUITES, builtin_tasks, get_task
    from fairtrial.tasks.suites import SUITE_PREFIX

    rows: list[dict[str, Any]] = []
    for name in builtin_tasks():
        try:
            task = get_task(name)
        except FairtrialError as exc:
            rows.append({"name": name, "error": str(exc)})
            continue
        rows.append(
            {
                "name": name,
                "kind": task.kind,
                "metric": task.metric,
                "direction": task.direction,
                "classes": task.n_classes,
                "sizes": task.sizes,
                "features": list(task.x.shape[1:]),
                "checksum": task.checksum,
                "source": task.source,
                "licence": task.licence,
                "description": task.description,
            }
        )
    suites: list[dict[str, Any]] = [
        {"name": f"{SUITE_PREFIX}{name}", "kind": "suite", "tasks": list(members)}
        for name, members in SUITES.items()
    ]
    if as_json:
        click.echo(json.dumps(rows + suites, indent=2))
        return
    t = Table(title='Built-in tasks (add your own: task = "module:function")')
    cols = (
        "name",
        "metric",
        "classes",
        "train/val/test",
        "features",
        "checksum",
        "source",
        "licence",
    )
    for col in cols:
        t.add_column(col)
    for r in rows:
        if "error" in r:
            t.add_row(r["name"], f"[red]{r['error']}[/]", *[""] * (len(cols) - 2))
            continue
        s = r["sizes"]
        t.add_row(
            r["name"],
            f"{r['metric']} ({r['direction']})",
            str(r["classes"] or "—"),
            f"{s['train']}/{s['val']}/{s['test']}",
            "×".join(map(str, r["features"])),
            r["checksum"][:12],
            r["source"],
            r["licence"],
        )
    out.print(t)
    st = Table(title='Task suites (tasks = "suite:NAME")')
    for col in ("suite", "tasks"):
        st.add_column(col)
    for suite in suites:
        st.add_row(suite["name"], ", ".join(suite["tasks"]))
    out.print(st)


@click.command()
@click.option(
    "--format", "fmt", type=click.Choice(["text", "md"]), default="text", show_default=True
)
def recipes(fmt: str) -> None:
    """The built-in recipes and every option a spec may set for them."""
    from fairtrial.recipes import (
        BUILTIN_RECIPES,
        config_class_of,
        describe_config,
        options_markdown,
        summary,
    )
    from fairtrial.tasks import import_object

    if fmt == "md":
        click.echo(options_markdown())
        return
    for name, ref in BUILTIN_RECIPES.items():
        fn = import_object(ref, None, "recipe")
        t = Table(title=f"{name}  ({ref})  {summary(fn)}", title_justify="left")
        for col in ("option", "type", "default", "meaning"):
            t.add_column(col)
        cls = config_class_of(fn)
        for row in describe_config(cls) if cls else []:
            t.add_row(row["name"], row["type"], json.dumps(row["default"]), row["help"])
        out.print(t)
