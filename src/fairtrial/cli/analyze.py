"""``fairtrial analyze``: verdicts on per-seed results a researcher already has (a CSV file,
MLflow, W&B or TensorBoard runs), by the same analysis as ``fairtrial report``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.rule import Rule

from fairtrial.cli._common import err, out


def write_documents(docs: list[Any], fmt: str, output: Path | None) -> None:
    """Print (or write to ``output``) the documents in ``fmt``, one after another (JSON: one
    document, or a list of them)."""
    from fairtrial import report as r

    if fmt == "text":
        fh = output.open("w", encoding="utf-8") if output is not None else None
        console = Console(file=fh, width=140) if fh is not None else out
        try:
            for i, doc in enumerate(docs):
                if i:
                    console.print(Rule())
                console.print(r.render_text(doc))
        finally:
            if fh is not None:
                fh.close()
                err.print(f"wrote {output}")
        return
    if fmt == "json":
        text = docs[0].to_json() if len(docs) == 1 else json.dumps([d.to_dict() for d in docs])
    elif fmt == "html":
        if len(docs) == 1:
            text = r.render_html(docs[0])
        else:
            parts = "\n<hr>\n".join(r.render_html(d, fragment=True) for d in docs)
            head = "<!doctype html>\n<html><head><meta charset='utf-8'></head><body>"
            text = f"{head}{parts}</body></html>\n"
    else:
        text = "\n".join({"md": r.render_md, "tex": r.render_tex}[fmt](d) for d in docs)
    if output is not None:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}")
    else:
        click.echo(text)


@click.command()
@click.argument("source")
@click.option("--baseline", required=True, help="the arm every other arm is compared with")
@click.option(
    "--metric",
    help="CSV: the metric column's value to analyse (needed when it holds several); "
    "MLflow, W&B: the logged metric; TensorBoard: the scalar tag",
)
@click.option("--direction", type=click.Choice(["max", "min"]), default="max", show_default=True)
@click.option(
    "--smallest-effect",
    type=click.FloatRange(min=0, min_open=True),
    help="the smallest effect that matters (metric units): equivalence by TOST, seeds needed",
)
@click.option(
    "--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05,
    show_default=True,
)  # fmt: skip
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "md", "html", "tex", "json"]),
    default="text",
    show_default=True,
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--from",
    "kind",
    type=click.Choice(["csv", "mlflow", "wandb", "tensorboard"]),
    help="what SOURCE is (default: mlflow:/wandb: prefixes, a folder is TensorBoard runs, "
    "else a CSV file)",
)
@click.option("--tracking-uri", help="MLflow's tracking URI (default: $MLFLOW_TRACKING_URI)")
@click.option("--seed-param", default="seed", show_default=True, help="the run param of the seed")
@click.option(
    "--arm-param",
    "arm_params",
    multiple=True,
    help="a run param that names the arm (repeatable; default: every param but the seed)",
)
@click.option("--task-param", help="a run param that names the task (one analysis per task)")
@click.option(
    "--value",
    type=click.Choice(["last", "best"]),
    default="last",
    show_default=True,
    help="a logged metric's last value, or its best in --direction",
)
@click.option(
    "--resamples", type=click.IntRange(min=1000), default=10_000, show_default=True,
    help="bootstrap resamples (and Monte Carlo permutations past 20 pairs)",
)  # fmt: skip
@click.option(
    "--store",
    default=None,
    help="also keep the results in this ledger (a SQLAlchemy URL or a file path), as an "
    "experiment marked imported, for report, bundle and verify",
)
def analyze(
    source: str,
    baseline: str,
    metric: str | None,
    direction: str,
    smallest_effect: float | None,
    alpha: float,
    fmt: str,
    output: Path | None,
    kind: str | None,
    tracking_uri: str | None,
    seed_param: str,
    arm_params: tuple[str, ...],
    task_param: str | None,
    value: str,
    resamples: int,
    store: str | None,
) -> None:
    """Verdicts on results you already have: SOURCE is a CSV file (columns arm, seed, value;
    optional task, metric), mlflow:EXPERIMENT, wandb:ENTITY/PROJECT or a folder of TensorBoard
    runs (ROOT/ARM/seed_N/). Arms are paired by the seed's value."""
    from fairtrial.analysis import Options
    from fairtrial.imports import analyze_imported, read_results, store_imported
    from fairtrial.record import Hypothesis

    results = read_results(
        source,
        kind=kind,
        metric=metric,
        tracking_uri=tracking_uri,
        seed_param=seed_param,
        arm_params=arm_params,
        task_param=task_param,
        value="best" if value == "best" else "last",
        direction=direction,
    )
    hyp = Hypothesis(smallest_effect=smallest_effect, alpha=alpha)
    options = Options(n_resamples=resamples)
    docs = analyze_imported(
        results,
        baseline,
        direction=direction,
        hypothesis=hyp,
        options=options,
        store_names=store is not None,
    )
    if store is not None:
        from fairtrial.ledger import Ledger

        ledger = Ledger(store)
        try:
            for exp in store_imported(
                ledger, results, baseline, direction=direction, hypothesis=hyp
            ):
                err.print(
                    f"stored as experiment {exp.id} ({exp.name}, task {exp.task}) in {ledger.url}"
                )
        finally:
            ledger.close()
    if len(docs) > 1:  # several tasks: one document, the claims across them first
        from fairtrial.imports import across_tasks

        name = Path(source).stem if Path(source).suffix else source
        combined = across_tasks(docs, name=name, direction=direction, hypothesis=hyp,
                                options=options)  # fmt: skip
        write_documents([combined], fmt, output)
        return
    write_documents(list(docs.values()), fmt, output)
