"""``fairtrial status``: progress of every experiment, or the trials of one."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from fairtrial.cli._common import find_experiment, open_ledger, out, store_option

RETRY_HINT = (
    "failed and diverged trials are kept as results: fix the cause, then "
    "`fairtrial run SPEC --retry-failed` runs them again"
)


@click.command()
@click.argument("experiment", required=False)
@store_option
def status(experiment: str | None, store: str | None) -> None:
    """Progress of every experiment in the store, or the trials of EXPERIMENT."""
    from fairtrial.progress import experiment_detail, experiments_progress

    ledger = open_ledger(store)
    if experiment is None:
        exps = experiments_progress(ledger)
        if not exps:
            out.print("the store is empty: fairtrial run SPEC (or fairtrial demo)")
            return
        t = Table(title=f"Experiments in {ledger.dialect} store")
        for col in (
            "id", "name", "task", "code", "finished", "failed", "diverged", "running",
            "pending", "reused",
        ):  # fmt: skip
            t.add_column(col)
        for e in exps:
            t.add_row(
                e.id,
                escape(e.name),
                e.task,
                e.code,
                f"{e.finished}/{e.total}",
                _alarm(e.failed),
                _alarm(e.diverged),
                str(e.running),
                str(e.pending),
                str(e.reused),
            )
        out.print(t)
        if any(e.failing for e in exps):
            out.print(RETRY_HINT)
        return
    detail = experiment_detail(ledger, find_experiment(ledger, experiment))
    if detail.tuning is not None:
        counts = ", ".join(f"{n} {k}" for k, n in sorted(detail.tuning.items())) or "none yet"
        out.print(
            f"tuning trials: {counts} (a configuration that fails is a result of tuning; "
            "`fairtrial report` shows each arm's tuning)",
            highlight=False,
        )
    t = Table(title=f"{detail.name} ({detail.id}) · code {detail.code}")
    for col in ("arm", "seed", "status", "attempt", "result", "wall s", "trial", "reason"):
        t.add_column(col)
    for r in detail.trials:
        t.add_row(
            escape(r.arm),
            str(r.seed),
            r.status if r.status not in ("failed", "diverged") else f"[red]{r.status}[/]",
            str(r.attempt),
            "—" if r.result is None else f"{r.result:.4f}",
            "—" if r.wall_time is None else f"{r.wall_time:.2f}",
            r.trial + (f" (from {r.reused_from})" if r.reused_from is not None else ""),
            escape(r.reason[:100]),
        )
    out.print(t)
    if detail.superseded:
        out.print(
            f"[yellow]{detail.superseded} superseded attempt(s)[/]: they ended after their lease "
            "expired and another run took the trial over; kept in the store, not in the verdict"
        )
    for f in detail.failures:
        out.print(f"[red]{escape(f.arm)} seed {f.seed}[/]: {escape(f.error)}")
        out.print("  " + escape(f.tail).replace("\n", "\n  "))
    if detail.failing:
        out.print(RETRY_HINT)


def _alarm(n: int) -> str:
    return f"[red]{n}[/]" if n else "0"
