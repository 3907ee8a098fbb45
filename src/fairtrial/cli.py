"""The ``fairtrial`` command: a thin layer over the library.

User mistakes (a bad spec, an unknown experiment, a missing extra) print one line and exit 2;
Ctrl-C exits 130 after recording what was running as interrupted (a later run resumes it);
SIGTERM and SIGHUP do the same and exit 128 + the signal (143, 129).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fairtrial.errors import ExperimentNotFound, FairtrialError

# Piped output (CI logs, `| less`) gets a fixed width instead of rich's 80-column fallback.
_out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 150)
_err = Console(
    stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 150
)

store_option = click.option(
    "--store",
    envvar="FAIRTRIAL_STORE",
    default=None,
    help="Ledger: a SQLAlchemy URL (sqlite:///..., postgresql://...) or a file path. "
    "Default ./.fairtrial/ledger.db (env FAIRTRIAL_STORE).",
)


def _ledger(store: str | None) -> Any:
    from fairtrial.ledger import Ledger

    return Ledger(store)


def _find(ledger: Any, ref: str) -> Any:
    """EXPERIMENT is an id, a name, or a spec path."""
    path = Path(ref)
    if ref.endswith(".toml") or path.is_file():
        from fairtrial.spec import load_spec

        spec = load_spec(path)
        try:
            return ledger.experiment(spec.experiment_id)
        except ExperimentNotFound:
            raise ExperimentNotFound(
                f"spec '{ref}' (experiment {spec.experiment_id}) has not been run in "
                f"this store: fairtrial run {ref}"
            ) from None
    return ledger.find_experiment(ref)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fairtrial")
def cli() -> None:
    """fairtrial: a fair trial for every ML idea (paired seeds, honest verdicts, replicable)."""


def _backend(
    name: str,
    workers: int | None,
    threads: int | None,
    group: int | None = None,
    address: str | None = None,
) -> Any:
    from fairtrial.backends import make_backend

    if address is not None and name != "ray":
        raise FairtrialError(f"--address is for --backend ray, not --backend {name}")
    if group is not None and name != "vectorized":
        raise FairtrialError(f"--group is for --backend vectorized, not --backend {name}")
    return make_backend(name, workers=workers, threads=threads, group=group, address=address)


@cli.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--backend",
    type=click.Choice(["local", "inline", "vectorized", "ray"]),
    default="local",
    show_default=True,
    help="local: persistent worker processes; inline: this process, one trial at a time; "
    "vectorized: the seeds of an arm as one batched model; ray: Ray tasks on a cluster.",
)
@click.option("--workers", type=click.IntRange(min=1), help="Trials at once (default: cores).")
@click.option("--threads", type=click.IntRange(min=1), help="Threads per worker.")
@click.option(
    "--group",
    type=click.IntRange(min=1),
    help="vectorized: at most N seeds per batched model (default: every seed of an arm).",
)
@click.option(
    "--address",
    help="ray: the cluster to join (ray://HOST:10001, HOST:6379 or 'auto'; default: "
    "RAY_ADDRESS, else a Ray instance started for this run).",
)
@click.option(
    "--max-retries",
    type=click.IntRange(min=0),
    help="Re-runs of a trial whose worker died under it (default: the spec's max_retries, 2).",
)
@store_option
@click.option("--resume", is_flag=True, help="Only continue an experiment already in the store.")
@click.option("--retry-failed", is_flag=True, help="Also re-run failed and diverged trials.")
@click.option(
    "--keep-going",
    is_flag=True,
    help="Run every trial even when the first trial of every arm failed with the same error "
    "(by default the run stops there: the same error would repeat).",
)
@click.option(
    "--report/--no-report", "show_report", default=True, help="Print the report at the end."
)
def run(
    spec_path: Path,
    backend: str,
    workers: int | None,
    threads: int | None,
    group: int | None,
    address: str | None,
    max_retries: int | None,
    store: str | None,
    resume: bool,
    retry_failed: bool,
    keep_going: bool,
    show_report: bool,
) -> None:
    """Run every trial of SPEC not yet in the store (an interrupted run resumes).

    A trial whose identity (task data, recipe code, arm config, seed) already has a result in
    the store is reused, from this experiment or any other; an edited recipe runs anew.

    Exit status: 0 when every trial of the experiment finished; 1 when any failed, diverged
    or is left unfinished (the run stopped early, or another run holds it); 2 for a user
    error (bad spec, unknown experiment, missing extra) or a store that cannot be used
    (unreachable, corrupt, read-only); 130 when interrupted (Ctrl-C), 143 on SIGTERM, 129 on
    SIGHUP.
    """
    from fairtrial.spec import load_spec

    spec = load_spec(spec_path)
    ledger = _ledger(store)
    if resume:
        try:
            ledger.experiment(spec.experiment_id)
        except ExperimentNotFound:
            raise FairtrialError(
                f"--resume: experiment '{spec.name}' ({spec.experiment_id}) was never started "
                "in this store; drop --resume to start it"
            ) from None
    _run_and_report(
        spec,
        ledger,
        _backend(backend, workers, threads, group, address),
        retry_failed,
        show_report,
        max_retries,
        keep_going,
    )


def _run_and_report(
    spec: Any,
    ledger: Any,
    backend: Any,
    retry_failed: bool,
    show_report: bool,
    max_retries: int | None = None,
    keep_going: bool = False,
) -> None:
    from fairtrial.runner import run_experiment

    _err.print(
        f"[bold]{escape(spec.name)}[/] ({spec.experiment_id}): "
        f"{len(spec.arms)} arms × "
        + (
            f"seeds auto (pilot {spec.seeds}, at most {spec.max_seeds})"
            if spec.auto_seeds
            else f"{spec.seeds} seeds"
        )
        + f" on '{spec.task}', "
        f"backend {backend.name} ({backend.workers} workers × {backend.threads or 1} threads), "
        f"store {ledger.dialect}"
    )
    try:
        summary = run_experiment(
            spec,
            ledger,
            backend,
            retry_failed=retry_failed,
            console=_err,
            max_retries=max_retries,
            keep_going=keep_going,
        )
    except KeyboardInterrupt as exc:
        _err.print(
            f"[yellow]interrupted[/]{_by_signal(exc)}: finished trials are kept; run the same "
            "command to resume"
        )
        sys.exit(_exit_status(exc))
    for line in run_summary_lines(summary):
        _err.print(line)
    if show_report:
        _print_report(ledger, ledger.experiment(spec.experiment_id), "text", None)
    if not summary.complete:
        sys.exit(1)


def run_summary_lines(summary: Any) -> list[str]:
    """What a run did and, when not every trial finished, what to do about it."""
    done = summary.already_done
    lines = [
        f"ran {summary.ran} trials in {summary.seconds:.1f} s ({summary.finished} finished, "
        f"{summary.failed} failed, {summary.diverged} diverged)"
        + (f"; {summary.retried} lost attempts retried" if summary.retried else "")
        + (f"; {done} were already in the store" if done else "")
        + (
            f" ({summary.reused} reused from other experiments with the same trial identity)"
            if summary.reused
            else ""
        )
    ]
    if summary.stopped:
        lines.append(f"[bold red]stopped early[/]: {escape(summary.stopped)}")
    if summary.kept_failures:
        lines.append(
            f"[yellow]{summary.kept_failures} failed or diverged trial(s) from earlier runs are "
            "kept as results[/]: fix the cause, then run again with --retry-failed to re-run them"
        )
    if summary.elsewhere:
        who = "; ".join(summary.elsewhere_owners) or "another run"
        lines.append(
            f"[yellow]{summary.elsewhere} trial(s) are held by another live run[/] on this "
            f"ledger ({escape(who)}): they are not run twice; run this command again when it "
            "has ended (a run that died releases them when its lease expires)"
        )
    if summary.superseded:
        lines.append(
            f"[yellow]{summary.superseded} attempt(s) of this run ended after their lease "
            "expired and another run took the trial over[/]: kept in the ledger as superseded "
            "attempts; the other run's attempt is the trial's result"
        )
    st = summary.statuses
    if not summary.complete:
        parts = [f"{n} {k}" for k, n in sorted(st.items()) if k != "finished" and n]
        lines.append(
            f"[bold red]not every trial finished[/] ({st.get('finished', 0)}/{summary.total} "
            f"finished; {', '.join(parts)}): exit status 1"
        )
    return lines


def _print_report(
    ledger: Any,
    exp: Any,
    fmt: str,
    output: Path | None,
    failures: str = "drop",
    resamples: int = 10_000,
    compute: dict[str, Any] | None = None,
) -> None:
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
            _out.print(r.render_text(doc))
        return
    if fmt == "html":
        text = r.render_html(doc, {"curves": learning_curves(ledger, exp)})
    else:
        text = {"json": r.render_json, "md": r.render_md, "tex": r.render_tex}[fmt](doc)
    if output is not None:
        output.write_text(text, encoding="utf-8")
        _err.print(f"wrote {output}")
    else:
        click.echo(text)


@cli.command()
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
    ledger = _ledger(store)
    compute = {
        "grid_intensity": grid_intensity,
        "grid_intensity_source": grid_intensity_source,
        "pue": pue,
        "price_per_hour": price_per_hour,
    }
    _print_report(ledger, _find(ledger, experiment), fmt, output, failures, resamples, compute)


@cli.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False, path_type=Path))
@store_option
def plan(spec_path: Path, store: str | None) -> None:
    """Dry run: validate SPEC and show its arms, trials and derived seeds."""
    from fairtrial.plan import plan_trials
    from fairtrial.spec import load_spec
    from fairtrial.tasks import get_task

    spec = load_spec(spec_path)
    task = get_task(spec.task, spec.base_dir)
    trials = plan_trials(spec)
    _out.print(
        f"[bold]{escape(spec.name)}[/] ({spec.experiment_id}) · task {spec.task} "
        f"(train/val/test {task.sizes['train']}/{task.sizes['val']}/{task.sizes['test']}, "
        f"checksum {task.checksum[:12]}) · metric {spec.metric} ({spec.direction})"
    )
    _out.print(f"recipe: {spec.recipe or 'command: ' + str(spec.command)}")
    t = Table(title=f"{len(spec.arms)} arms × {spec.seeds} seeds = {len(trials)} trials")
    for col in ("arm", "kind", "components (changes from baseline)"):
        t.add_column(col)
    for a in spec.arms.values():
        comps = ", ".join(f"{k}={json.dumps(v)}" for k, v in a.components.items()) or "—"
        kind = a.kind + (f" of {a.parent} without {a.removed}" if a.kind == "ablation" else "")
        t.add_row(escape(a.name), escape(kind), escape(comps))
    _out.print(t)
    from fairtrial.plan import seed_floor_warning

    warning = None
    if not spec.auto_seeds and not spec.deterministic:
        warning = seed_floor_warning(spec.seeds, spec.arm_table(), spec.hypothesis.alpha)
    if warning:
        _out.print(f"[bold yellow]warning[/]: {escape(warning)}")
    _out.print(
        f"seeds: root {spec.root_seed}; seed 0 streams "
        + ", ".join(f"{k}={v}" for k, v in trials[0].seeds.items())
        + " (identical for every arm)"
    )
    ledger = _ledger(store)
    walls = [
        r.wall_time
        for e in ledger.experiments()
        if e.task == spec.task
        for r in ledger.trials(e.id)
        if r.status == "finished" and r.wall_time
    ]
    from fairtrial.backends.local import split_cores

    workers, _ = split_cores(None, None)
    if walls:
        est = sum(walls) / len(walls) * len(trials) / workers
        _out.print(
            f"estimated time: ~{est:.0f} s on {workers} workers "
            f"(mean of {len(walls)} earlier trials on '{spec.task}' in this store)"
        )
    else:
        _out.print("estimated time: unknown (no earlier trials on this task in this store)")
    if spec.auto_seeds:
        _out.print(
            f'seeds = "auto": a pilot of {spec.seeds} seeds, then as many as detecting '
            f"smallest_effect = {spec.hypothesis.smallest_effect:g} with power "
            f"{spec.hypothesis.power} needs, at most {spec.max_seeds}"
        )
    try:
        exp = ledger.experiment(spec.experiment_id)
    except ExperimentNotFound:
        _out.print("power: known once trials have run (the sd of the paired differences)")
        return
    rows = ledger.trials(exp.id)
    done = sum(r.status in ("finished", "failed", "diverged") for r in rows)
    _out.print(f"in the store: {done}/{len(trials)} trials done; `fairtrial run` resumes")
    _print_power(spec, rows)


def _print_power(spec: Any, rows: list[Any]) -> None:
    """Minimum detectable effect at the planned seeds, from the paired sd seen so far."""
    from fairtrial import stats
    from fairtrial.plan import paired_values, seeds_needed

    sign = 1.0 if spec.direction == "max" else -1.0
    scores: dict[str, dict[int, float]] = {}
    for r in rows:
        if r.status == "finished" and r.result is not None:
            scores.setdefault(r.arm, {})[r.seed] = sign * float(r.result)
    hyp = spec.hypothesis
    for arm in (a.name for a in spec.arms.values() if a.kind == "arm"):
        _, a, b = paired_values(scores, arm, "baseline")
        if len(a) < 2:
            continue
        sd = float((b - a).std(ddof=1))
        mde = (
            0.0
            if sd == 0
            else stats.minimum_detectable_effect(sd, spec.seeds, alpha=hyp.alpha, power=hyp.power)
        )
        line = (
            f"power: {arm} vs baseline: sd of paired differences {sd:.4g} ({len(a)} seeds so "
            f"far); {spec.seeds} seeds detect an effect of {mde:.4g} with power {hyp.power} "
            f"at alpha {hyp.alpha}"
        )
        if hyp.smallest_effect is not None:
            need = seeds_needed(sd, hyp.smallest_effect, hyp.alpha, hyp.power)
            line += f"; smallest_effect {hyp.smallest_effect:g} needs {need} seeds"
        _out.print(line, highlight=False)


@cli.command()
@click.argument("experiment", required=False)
@store_option
def status(experiment: str | None, store: str | None) -> None:
    """Progress of every experiment in the store, or the trials of EXPERIMENT."""
    ledger = _ledger(store)
    if experiment is None:
        exps = ledger.experiments()
        if not exps:
            _out.print("the store is empty: fairtrial run SPEC (or fairtrial demo)")
            return
        t = Table(title=f"Experiments in {ledger.dialect} store")
        for col in (
            "id", "name", "task", "code", "finished", "failed", "diverged", "running",
            "pending", "reused",
        ):  # fmt: skip
            t.add_column(col)
        failing = 0
        for e in exps:
            rows = ledger.trials(e.id)

            def count(*st: str, rows: list[Any] = rows) -> int:
                return sum(r.status in st for r in rows)

            failing += count("failed", "diverged")
            t.add_row(
                e.id,
                escape(e.name),
                e.task,
                _code_versions(rows),
                f"{count('finished')}/{len(rows)}",
                _alarm(count("failed")),
                _alarm(count("diverged")),
                str(count("running")),
                str(count("pending", "interrupted")),
                str(sum(r.reused for r in rows)),
            )
        _out.print(t)
        if failing:
            _out.print(_RETRY_HINT)
        return
    exp = _find(ledger, experiment)
    trials = ledger.trials(exp.id)
    t = Table(title=f"{exp.name} ({exp.id}) · code {_code_versions(trials)}")
    for col in ("arm", "seed", "status", "attempt", "result", "wall s", "trial", "reason"):
        t.add_column(col)
    clock = ledger.now() if any(r.status == "running" for r in trials) else 0.0
    for r in trials:
        reason = r.error or ""
        if r.status == "running":
            reason = _lease_text(r, clock)
        t.add_row(
            escape(r.arm),
            str(r.seed),
            r.status if r.status not in ("failed", "diverged") else f"[red]{r.status}[/]",
            str(r.attempt),
            "—" if r.result is None else f"{r.result:.4f}",
            "—" if r.wall_time is None else f"{r.wall_time:.2f}",
            r.id[:12] + (f" (from {r.origin})" if r.reused else ""),
            escape(reason[:100]),
        )
    _out.print(t)
    late = [a for a in ledger.attempts([r.id for r in trials]) if a["superseded"]]
    if late:
        _out.print(
            f"[yellow]{len(late)} superseded attempt(s)[/]: they ended after their lease expired "
            "and another run took the trial over; kept in the store, not in the verdict"
        )
    from fairtrial.runner import traceback_tail

    shown: set[str] = set()
    for r in trials:
        if r.status in ("failed", "diverged") and r.error_detail:
            key = r.error or ""
            if key in shown:
                continue
            shown.add(key)
            _out.print(f"[red]{escape(r.arm)} seed {r.seed}[/]: {escape(r.error or '')}")
            _out.print("  " + escape(traceback_tail(r.error_detail)).replace("\n", "\n  "))
    if any(r.status in ("failed", "diverged") for r in trials):
        _out.print(_RETRY_HINT)


_RETRY_HINT = (
    "failed and diverged trials are kept as results: fix the cause, then "
    "`fairtrial run SPEC --retry-failed` runs them again"
)


def _lease_text(row: Any, clock: float) -> str:
    """Who holds a running trial and whether its lease is current."""
    from fairtrial.ledger.lease import describe, lease_seconds

    if row.heartbeat_at is None:
        return f"held by {describe(row.owner)}, no lease: the next run takes it over"
    ago = max(0.0, clock - row.heartbeat_at)
    state = "expired" if ago > lease_seconds() else "current"
    return f"held by {describe(row.owner)}, lease renewed {ago:.0f} s ago ({state})"


def _alarm(n: int) -> str:
    return f"[red]{n}[/]" if n else "0"


def _code_versions(rows: list[Any]) -> str:
    """The code version(s) an experiment's trials ran (first 12 hex of the code hash)."""
    codes = sorted({r.code_hash[:12] if r.code_hash else "unrecorded" for r in rows})
    return ", ".join(codes) or "—"


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def tasks(as_json: bool) -> None:
    """The built-in tasks with their sizes, metrics and checksums."""
    from fairtrial.tasks import builtin_tasks, get_task

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
                "description": task.description,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    t = Table(title='Built-in tasks (add your own: task = "module:function")')
    for col in ("name", "metric", "classes", "train/val/test", "features", "checksum", "source"):
        t.add_column(col)
    for r in rows:
        if "error" in r:
            t.add_row(r["name"], f"[red]{r['error']}[/]", "", "", "", "", "")
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
        )
    _out.print(t)


@cli.command()
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
        _out.print(t)


@cli.command()
@click.option("--workers", type=click.IntRange(min=1), help="Trials at once (default: cores).")
@store_option
def demo(workers: int | None, store: str | None) -> None:
    """The flagship example, end to end: a real experiment on digits, then its report."""
    from fairtrial.spec import load_spec

    folder = Path(".fairtrial") / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    spec_path = folder / "digits-demo.toml"
    spec_path.write_text(resources.files("fairtrial").joinpath("examples/demo.toml").read_text())
    _err.print(f"spec written to {spec_path} (edit it, then: fairtrial run {spec_path})")
    spec = load_spec(spec_path)
    _run_and_report(spec, _ledger(store), _backend("local", workers, None), False, True)


# -- rigor guards: register, diff, bundle, verify, replicate ------------------------------------


@cli.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False, path_type=Path))
@store_option
def register(spec_path: Path, store: str | None) -> None:
    """Preregister SPEC before any trial runs: freeze its hypothesis, primary metric, smallest
    effect, alpha, arms, seeds and the analysis method they give under a hash in the store's
    hash-chained log.
    Reports of the experiment then say "preregistered HASH DATE" or list every deviation."""
    from fairtrial.analysis import method_labels
    from fairtrial.prereg import iso_date
    from fairtrial.prereg import register as do_register
    from fairtrial.spec import load_spec

    spec = load_spec(spec_path)
    entry = do_register(spec, _ledger(store))
    short = entry["record_hash"][:12]
    date = iso_date(entry["created_at"])
    if entry["already"]:
        _out.print(f"already preregistered {short} {date}: {escape(spec.name)} (unchanged)")
        return
    h = spec.hypothesis
    _out.print(f"preregistered {short} {date}: {escape(spec.name)} ({spec.experiment_id})")
    _out.print(
        f"  {len(spec.arms)} arms ({escape(', '.join(spec.arms))}) × seeds 0..{spec.seeds - 1} "
        f"(root {spec.root_seed}); metric {spec.metric} ({spec.direction}); "
        f"smallest effect {h.smallest_effect if h.smallest_effect is not None else 'not set'}; "
        f"alpha {h.alpha}"
    )
    if h.claim:
        _out.print(f"  claim: {escape(h.claim)}")
    labels = method_labels(json.loads(entry["record_json"])["analysis"]["method"])
    _out.print(
        "  analysis: "
        + escape(
            "; ".join(f"{k} {labels[k]}" for k in ("interval", "test", "correction", "failures"))
        )
    )
    _out.print(f"  log entry #{entry['seq']}, chain head {entry['head'][:12]}")
    if entry["supersedes"]:
        _out.print(
            f"  supersedes {entry['supersedes'][:12]} (an earlier plan of the same name, kept "
            "in the log)"
        )


def _capture(ledger: Any, ref: str) -> Any:
    """A capture of REF: a bundle file, a trial (EXPERIMENT/ARM/SEED) or an experiment."""
    from fairtrial import diff as d

    path = Path(ref)
    if path.is_file() and not ref.endswith(".toml"):
        from fairtrial.bundle import read_bundle

        with read_bundle(path) as b:
            return b.capture()
    parts = ref.rsplit("/", 2)
    if len(parts) == 3 and parts[2].isdigit() and not path.exists():
        exp = ledger.find_experiment(parts[0])
        trial = ledger.trial_at(exp.id, parts[1], int(parts[2]))
        return d.trial_capture(ledger, trial, exp)
    return d.ledger_experiment_capture(ledger, _find(ledger, ref))


@cli.command()
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@store_option
def diff(a: str, b: str, as_json: bool, store: str | None) -> None:
    """Every captured difference between A and B: config, code (commit and diff), data
    checksum, packages, hardware, environment variables, seeds.

    A and B are each a trial (EXPERIMENT/ARM/SEED, e.g. warmup/proposed/3), an experiment
    (name, id or spec path) or a bundle file (read, never executed). Exit status 0 when
    nothing differs, 1 when something does.
    """
    from fairtrial.diff import diff as do_diff
    from fairtrial.diff import format_diff

    ledger = _ledger(store)
    result = do_diff(_capture(ledger, a), _capture(ledger, b))
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        _out.print(escape(format_diff(result)))
    if not result["identical"]:
        sys.exit(1)


@cli.command()
@click.argument("experiment")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Bundle file to write (default: NAME-ID.tar.gz here).",
)
@store_option
def bundle(experiment: str, output: Path | None, store: str | None) -> None:
    """Write EXPERIMENT as one portable archive: normalised spec, preregistration, code
    snapshot (recipe files, git commit and diff), environment lock, task checksums, per-trial
    results, metrics, analysis, provenance, sealed test log excerpt, and a manifest with the
    sha256 of every file. Check it with `fairtrial verify FILE`."""
    from fairtrial.bundle import write_bundle

    ledger = _ledger(store)
    exp = _find(ledger, experiment)
    out = output or Path(f"{exp.name}-{exp.id}.tar.gz")
    manifest = write_bundle(ledger, exp, out)
    size = out.stat().st_size
    _out.print(
        f"bundle {escape(str(out))}: {len(manifest['files']) + 1} files, {size / 1024:.1f} KiB, "
        f"sha256 {manifest['sha256']}"
    )


@cli.command()
@click.argument("bundle_path", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def verify(bundle_path: Path, as_json: bool) -> None:
    """Check a bundle without running any of it: safe member names and types, size limits,
    gzip checksum, every file against the manifest, and the members against each other.
    Exit status 2 with the name of each modified file when a check fails."""
    from fairtrial.bundle import verify_bundle

    result = verify_bundle(bundle_path)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    e = result["experiment"]
    _out.print(
        f"verified {escape(str(bundle_path))}: {result['files']} files match the manifest; "
        f"experiment {escape(e['name'])} ({e['id']}), {result['finished']}/{result['trials']} "
        f"trials finished; code {', '.join(c[:12] for c in result['code']) or 'unrecorded'}"
        + (" (MIXED)" if len(result["code"]) > 1 else "")
        + f"; {escape(result['preregistered'] or 'not preregistered')}"
    )
    checked = result.get("results") or {}
    if checked.get("verified"):
        _out.print(
            f"results re-scored: the stored test predictions of all {checked['rescored']} "
            "finished trials give the results they report"
        )
    elif checked:
        _out.print(
            f"[yellow]results unverifiable[/]: {escape(str(checked.get('unverifiable')))}",
            highlight=False,
        )
    _out.print(f"sha256 {result['sha256']}")


@cli.command()
@click.argument("bundle_ref", metavar="BUNDLE")
@click.option(
    "--seeds",
    type=click.Choice(["same", "fresh"]),
    default="same",
    show_default=True,
    help="same: the bundle's seeds; fresh: a new root seed and, for procedurally generated "
    "tasks (mnist1d, modular_addition), a fresh data draw.",
)
@click.option(
    "--tolerance",
    type=float,
    help="Per-arm means agree within ±X (default: the hypothesis' smallest effect).",
)
@click.option("--root-seed", type=int, help="With --seeds fresh: this root seed.")
@click.option(
    "--backend",
    type=click.Choice(["local", "inline"]),
    default="local",
    show_default=True,
)
@click.option("--workers", type=click.IntRange(min=1), help="Trials at once (default: cores).")
@click.option(
    "--folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to run (default ./.fairtrial/replications/...).",
)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Record as JSON."
)
@click.option(
    "--push",
    "push_record",
    is_flag=True,
    help="Upload the record to the registry (the one BUNDLE came from, or --to).",
)
@click.option(
    "--to",
    "registry",
    envvar="FAIRTRIAL_REGISTRY",
    help="With --push and a bundle file: the registry URL (env FAIRTRIAL_REGISTRY).",
)
@store_option
def replicate(
    bundle_ref: str,
    seeds: str,
    tolerance: float | None,
    root_seed: int | None,
    backend: str,
    workers: int | None,
    folder: Path | None,
    output: Path | None,
    push_record: bool,
    registry: str | None,
    store: str | None,
) -> None:
    """Re-run the experiment in BUNDLE and judge whether it agrees with the original.

    BUNDLE is a bundle file or an experiment's registry URL
    (http://HOST:PORT/experiments/ID), which is downloaded and checked against its sha256
    first. With --push the record goes back to the registry (token from FAIRTRIAL_TOKEN).

    This RUNS THE BUNDLED RECIPE CODE (verify the bundle and read its code/ first if you do not
    trust its author); it runs in a folder of its own that holds the code snapshot, the spec
    and the replication's ledger. Per arm, an equivalence test of the means within
    ±tolerance; per claim, the original verdict must come out again. The record (replicated,
    not replicated, inconclusive; ACM vocabulary) is stored in the ledger and written as JSON.
    Exit status: 0 replicated, 1 not replicated, 3 inconclusive.
    """
    from fairtrial.replicate import copy_record, format_record
    from fairtrial.replicate import replicate as do_replicate
    from fairtrial.server import client

    if client.is_url(bundle_ref):
        bundle_path, source = client.fetch_bundle(bundle_ref, Path(".fairtrial") / "downloads")
        _err.print(f"downloaded {escape(bundle_ref)} to {escape(str(bundle_path))}")
        registry = registry or source
    else:
        bundle_path = Path(bundle_ref)
    if push_record:
        if not registry:
            raise click.UsageError("--push needs a registry: a BUNDLE URL, or --to URL")
        client.require_token()  # fail before the run, not after it
    record = do_replicate(
        bundle_path,
        seeds="fresh" if seeds == "fresh" else "same",
        tolerance=tolerance,
        root_seed=root_seed,
        store=store,
        folder=folder,
        backend=_backend(backend, workers, None),
        console=_err,
    )
    if output is not None:
        copy_record(record, output)
    _out.print(escape(format_record(record)))
    _out.print(f"record {record['id'][:12]} stored; JSON: {record['replication']['folder']}")
    if push_record and registry:
        sent = client.push_replication(record, registry)
        _out.print(
            f"pushed to {escape(registry)}/experiments/{sent['experiment']} "
            f"({'new' if sent['created'] else 'already there'})"
        )
    sys.exit({"replicated": 0, "not replicated": 1}.get(record["outcome"], 3))


registry_store_option = click.option(
    "--store",
    envvar="FAIRTRIAL_REGISTRY_STORE",
    default=None,
    help="Registry store: a SQLAlchemy URL (sqlite:///..., postgresql://...) or a file path. "
    "Default ./.fairtrial/registry.db (env FAIRTRIAL_REGISTRY_STORE).",
)


@cli.command()
@registry_store_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--max-upload-mb",
    type=click.FloatRange(min=0.001),
    default=64,
    show_default=True,
    help="Largest bundle upload accepted (compressed).",
)
@click.option(
    "--create-token",
    metavar="NAME",
    help="Make a write token named NAME, print it once (only its hash is stored), and exit.",
)
@click.option("--tokens", "list_tokens", is_flag=True, help="List the write tokens and exit.")
@click.option("--revoke-token", metavar="ID", help="Revoke the token with this id and exit.")
def serve(
    store: str | None,
    host: str,
    port: int,
    max_upload_mb: float,
    create_token: str | None,
    list_tokens: bool,
    revoke_token: str | None,
) -> None:
    """Run the registry: JSON API (OpenAPI at /openapi.json) and web UI.

    Reads are public; uploads (bundles, replication records) need a token made with
    --create-token NAME and sent as 'Authorization: Bearer TOKEN' (fairtrial push reads it
    from FAIRTRIAL_TOKEN). Uploaded bundles are verified and analysed, never executed.
    """
    from fairtrial.errors import require
    from fairtrial.server import Registry

    if create_token or list_tokens or revoke_token:
        reg = Registry(store)
        try:
            if create_token:
                _out.print(reg.create_token(create_token), highlight=False, soft_wrap=True)
                _err.print(
                    f"token '{escape(create_token)}' created; it is shown only this once "
                    "(export FAIRTRIAL_TOKEN=...)"
                )
            if revoke_token:
                if not reg.revoke_token(revoke_token):
                    raise click.UsageError(f"no live token with id '{revoke_token}'")
                _out.print(f"token {escape(revoke_token)} revoked")
            if list_tokens:
                for t in reg.tokens():
                    state = "revoked" if t["revoked_at"] else "live"
                    _out.print(f"{t['id']}  {escape(t['name'])}  {state}", highlight=False)
        finally:
            reg.close()
        return
    require("fastapi", "server", "fairtrial serve")
    require("uvicorn", "server", "fairtrial serve")
    require("jinja2", "server", "fairtrial serve")
    import uvicorn

    from fairtrial.server.app import create_app

    app = create_app(store, max_upload=int(max_upload_mb * (1 << 20)))
    reg = app.state.registry
    _err.print(
        f"fairtrial registry on http://{host}:{port} (store {escape(reg.url.split('@')[-1])}); "
        f"{len([t for t in reg.tokens() if not t['revoked_at']])} write token(s)"
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


@cli.command()
@click.argument("path", metavar="BUNDLE_OR_RECORD", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--to",
    "registry",
    required=True,
    envvar="FAIRTRIAL_REGISTRY",
    help="Registry URL, e.g. http://127.0.0.1:8000 (env FAIRTRIAL_REGISTRY).",
)
def push(path: Path, registry: str) -> None:
    """Upload a bundle (or a replication record's JSON) to a registry.

    The token comes from FAIRTRIAL_TOKEN. The registry verifies the bundle (it never runs it),
    re-analyses its results and lists it on its task's leaderboard.
    """
    from fairtrial.server import client

    if not path.is_file():
        raise click.UsageError(f"{path}: no such file")
    if path.suffix == ".json":
        try:
            record = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise click.UsageError(f"{path}: not a JSON replication record ({exc})") from None
        sent = client.push_replication(record, registry)
        what = f"replication record ({sent['outcome']})"
    else:
        sent = client.push_bundle(path, registry)
        what = f"experiment {escape(sent['name'])} ({escape(sent['badge'])})"
        sent["experiment"] = sent["id"]
    _out.print(
        f"pushed {what}: {escape(registry.rstrip('/'))}/experiments/{sent['experiment']} "
        f"({'new' if sent['created'] else 'already there'})",
        highlight=False,
        soft_wrap=True,
    )


def _by_signal(exc: KeyboardInterrupt) -> str:
    """' by SIGTERM' for a run stopped by a signal other than Ctrl-C's, else ''."""
    signum = getattr(exc, "signum", None)
    return f" by {signal.Signals(signum).name}" if signum is not None else ""


def _exit_status(exc: KeyboardInterrupt) -> int:
    """The shell's status of a process ended by the signal behind ``exc``: 128 + signal."""
    return 128 + int(getattr(exc, "signum", signal.SIGINT))


def main(argv: list[str] | None = None) -> None:
    """Entry point: one line and exit 2 for user errors, never a traceback."""
    # psycopg warns of each pipeline it drops with a lost connection: the ledger's own line
    # says what happened
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    try:
        cli.main(args=argv, prog_name="fairtrial", standalone_mode=False)
    except click.exceptions.Abort:
        _err.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except FairtrialError as exc:
        _err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt as exc:
        _err.print(f"interrupted{_by_signal(exc)}")
        sys.exit(_exit_status(exc))
    except BrokenPipeError:
        os._exit(0)
    except Exception as exc:
        # a database fault outside the ledger's own handling (e.g. a registry store)
        from fairtrial.ledger.faults import classify, one_line

        kind = classify(exc)
        if kind is None:
            raise
        kind = "unreachable" if kind == "transient" else kind
        _err.print(
            f"[red]error:[/] the database is {kind}: {escape(one_line(exc))}",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(2)


if __name__ == "__main__":
    main()
