"""The ``fairtrial`` command: a thin layer over the library.

One module per job: ``run`` (run, demo), ``report``, ``analyze`` (results from elsewhere),
``export`` (to MLflow, W&B), ``plan``, ``status``, ``catalog`` (tasks, recipes), ``register``,
``diff``, ``bundles`` (bundle, verify, replicate) and ``registry`` (serve, push). Each parses
options, calls the library and prints what it returns.

User mistakes (a bad spec, an unknown experiment, a missing extra) print one line and exit 2;
Ctrl-C exits 130 after recording what was running as interrupted (a later run resumes it);
SIGTERM and SIGHUP do the same and exit 128 + the signal (143, 129).
"""

from __future__ import annotations

import logging
import os
import sys

import click
from rich.markup import escape

from fairtrial.cli import (
    analyze,
    bundles,
    catalog,
    diff,
    export,
    plan,
    register,
    registry,
    report,
    run,
    status,
)
from fairtrial.cli._common import by_signal, err, exit_status
from fairtrial.errors import FairtrialError

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fairtrial")
def cli() -> None:
    """fairtrial: a fair trial for every ML idea (paired seeds, honest verdicts, replicable)."""


for _command in (
    run.run,
    report.report,
    analyze.analyze,
    export.export,
    plan.plan,
    status.status,
    catalog.tasks,
    catalog.recipes,
    run.demo,
    # rigor guards
    register.register,
    diff.diff,
    bundles.bundle,
    bundles.verify,
    bundles.replicate,
    # the registry
    registry.serve,
    registry.push,
):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point: one line and exit 2 for user errors, never a traceback."""
    # psycopg warns of each pipeline it drops with a lost connection: the ledger's own line
    # says what happened
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    try:
        cli.main(args=argv, prog_name="fairtrial", standalone_mode=False)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except FairtrialError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt as exc:
        err.print(f"interrupted{by_signal(exc)}")
        sys.exit(exit_status(exc))
    except BrokenPipeError:
        os._exit(0)
    except Exception as exc:
        # a database fault outside the ledger's own handling (e.g. a registry store)
        from fairtrial.ledger.faults import classify, one_line

        kind = classify(exc)
        if kind is None:
            raise
        kind = "unreachable" if kind == "transient" else kind
        err.print(
            f"[red]error:[/] the database is {kind}: {escape(one_line(exc))}",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(2)
