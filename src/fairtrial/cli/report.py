"""``fairtrial report``: the analysis of an experiment as text, Markdown, HTML, LaTeX or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from fairtrial.cli._common import err, find_experiment, open_ledger, out, store_option


def print_report(
    ledger: Any,
    exp: Any,
    fmt: str,
    output: Path | None,
    failures: str = "drop",
    resamples: int = 10_000,
    compute: dict[str, Any] | None = None,
) -> None:
    """Analyse ``exp`` and print (or write to ``output``) its report in ``fmt``."""
    from fairtrial import report as r
    from fairtrial.analysis import Options, learning_curves
    from fairtrial.analysis.document import analyze

    opts = Options(failures=failures, n_resamples=resamples, **(compute or {}))  # type: ignore[arg-type]
    doc = analyze(ledger, exp, opts)
    if fmt == "text":
        if output is not None:
            with output.open("w") as fh:
                Console(file=fh, width=140).print(r.render_text(doc))
        else:
            out.print(r.render_text(doc))
        return
    if fmt == "html":
        text = r.render_html(doc, {"curves": learning_curves(ledger, exp)})
    else:
        text = {"json": r.render_json, "md": r.render_md, "tex": r.render_tex}[fmt](doc)
    if output is not None:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}")
    else:
        click.echo(text)


@click.command()
@click.argument("experiment")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "md", "html", "tex", "json"]),
    default="text",
    show_default=True,
    help="text: terminal tables; md: Markdown; html: one self-contained file with figures; "
    "tex: a booktabs table; json: the stable machine-readable result",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--failures",
    type=click.Choice(["drop", "worst"]),
    default="drop",
    show_default=True,
    help="drop: compare the seeds both arms finished; worst: a failed seed scores the worst "
    "score of any trial",
)
@click.option(
    "--resamples",
    type=click.IntRange(min=1000),
    default=10_000,
    show_default=True,
    help="bootstrap resamples (and Monte Carlo permutations past 20 pairs)",
)
@click.option(
    "--grid-intensity",
    type=click.FloatRange(min=0),
    help="gCO2e per kWh for CO2e (default: the spec's [compute] grid_intensity, else the "
    "2022 world average, 436)",
)
@click.option("--grid-intensity-source", help="where --grid-intensity comes from (shown)")
@click.option("--pue", type=click.FloatRange(min=1), help="the facility's PUE (default 1.0)")
@click.option(
    "--price-per-hour", type=click.FloatRange(min=0), help="machine price per hour: a cost figure"
)
@store_option
def report(
    experiment: str,
    fmt: str,
    output: Path | None,
    failures: str,
    resamples: int,
    grid_intensity: float | None,
    grid_intensity_source: str | None,
    pue: float | None,
    price_per_hour: float | None,
    store: str | None,
) -> None:
    """Verdicts, ablations, compute and per-arm results of EXPERIMENT (name, id or spec path)."""
    ledger = open_ledger(store)
    compute = {
        "grid_intensity": grid_intensity,
        "grid_intensity_source": grid_intensity_source,
        "pue": pue,
        "price_per_hour": price_per_hour,
    }
    print_report(
        ledger, find_experiment(ledger, experiment), fmt, output, failures, resamples, compute
    )
