"""``fairtrial diff``: every captured difference between two trials, experiments or bundles."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from fairtrial.cli._common import find_experiment, open_ledger, out, store_option


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
    return d.ledger_experiment_capture(ledger, find_experiment(ledger, ref))


@click.command()
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

    ledger = open_ledger(store)
    result = do_diff(_capture(ledger, a), _capture(ledger, b))
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        out.print(escape(format_diff(result)))
    if not result["identical"]:
        sys.exit(1)
